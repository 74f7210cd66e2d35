"""The experiment config's schema: one pydantic model per section, each field typed, bounded and described.

    dialsum config training.optim          # a field's help, type, default and bounds, from this file
    dialsum validate configs/experiments/*.yaml

Choices are `Literal`, bounds `ge`/`le`, and every field has a default and a one-line `description`;
unknown keys are refused (`extra="forbid"`). Reading YAML files into these models is `dialsum.config`'s job.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dialsum.tokens import MASK_TOKENS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


class ExperimentSection(Section):
    """The experiment's name, label, seed and where its runs go."""

    name: str = Field("experiment", description="Short name; runs go to <output_dir>/<name>/<timestamp>/")
    label: str = Field("", description="Human label shown in reports")
    description: str = Field("", description="One line: what this experiment tries")
    seed: int = Field(42, description="Random seed for data order, initialisation and dropout")
    output_dir: str = Field("runs", description="Root directory of run directories")


class DataSection(Section):
    """The competition CSVs the experiment reads."""

    dir: str = Field("data/sample", description="Directory holding the competition CSVs")
    train_file: str = Field("train.csv", description="Training CSV (fname,dialogue,summary,topic)")
    dev_file: str = Field("dev.csv", description="Dev CSV, scored after training")
    test_file: str = Field("test.csv", description="Test CSV (fname,dialogue) for the submission")
    max_train_samples: int | None = Field(None, ge=1, description="Use only the first N training rows")
    max_eval_samples: int | None = Field(None, ge=1, description="Score only the first N dev rows")


class ModelSection(Section):
    """The checkpoint, and how the model is built from it."""

    name: str = Field(..., description="Hub id or local directory of the checkpoint")
    init: Literal["pretrained", "random", "tiny"] = Field(
        "pretrained", description="pretrained weights, the same architecture random, or a tiny scaled copy"
    )
    tiny_vocab_size: int = Field(4000, ge=300, le=64000, description="Vocabulary of the tiny tokenizer")
    tiny_d_model: int = Field(128, ge=16, le=1024, description="Hidden size of tiny models")
    tiny_layers: int = Field(2, ge=1, le=12, description="Encoder and decoder layers of tiny models")
    tiny_lr_scale: float = Field(
        30.0, gt=0, description="Learning-rate multiplier for tiny models, which train from scratch"
    )
    trust_remote_code: bool = Field(
        False, description="Run the checkpoint's own Python code (only for model types transformers lacks)"
    )


class TokenizerSection(Section):
    """Token lengths, the seq2seq input prefix, and the tokens kept whole."""

    encoder_max_len: int = Field(
        512, ge=8, description="Longest dialogue in tokens (causal LMs: the whole prompt); longer dialogues are cut"
    )
    decoder_max_len: int = Field(128, ge=4, description="Longest summary in tokens for training, end token included")
    prefix: str = Field("", description="Text put before every dialogue (T5-family task prefix)")
    special_tokens: list[str] = Field(
        default_factory=lambda: list(MASK_TOKENS), description="Tokens kept whole by the tokenizer"
    )


DEFAULT_INSTRUCTION = "다음 대화를 요약해줘."
DIALOGUE_SLOT, INSTRUCTION_SLOT = "{dialogue}", "{instruction}"


class PromptSection(Section):
    """How a decoder-only (causal) model reads a dialogue; seq2seq models use tokenizer.prefix instead."""

    instruction: str = Field(DEFAULT_INSTRUCTION, description="The instruction, put where the template says")
    template: str = Field(
        "{instruction}\n\n{dialogue}\n\n요약:",
        description="The prompt: {instruction} and {dialogue} are filled in; the summary follows it",
    )
    chat_template: bool = Field(
        True, description="Wrap the prompt as a user turn in the tokenizer's chat template, when it has one"
    )
    system: str = Field("", description="System message for chat templates (empty: none)")

    @field_validator("template")
    @classmethod
    def _slots(cls, value: str) -> str:
        if value.count(DIALOGUE_SLOT) != 1:
            raise ValueError(f"must hold {DIALOGUE_SLOT} exactly once (it holds it {value.count(DIALOGUE_SLOT)} "
                             "times); e.g. '{instruction}\\n\\n{dialogue}\\n\\n요약:'")
        rest = value.replace(DIALOGUE_SLOT, "").replace(INSTRUCTION_SLOT, "")
        stray = re.findall(r"\{[^{}]*\}", rest)
        if stray:
            raise ValueError(f"unknown placeholder {stray[0]}; use {INSTRUCTION_SLOT} and {DIALOGUE_SLOT}")
        return value


BestMetric = Literal["final", "rouge1", "rouge2", "rougeL", "loss"]
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]


class TrainingSection(Section):
    """The Trainer's settings: batches, schedule, precision, evaluation and checkpoints."""

    per_device_train_batch_size: int = Field(8, ge=1, description="Micro-batch for training")
    per_device_eval_batch_size: int = Field(16, ge=1, description="Batch for evaluation")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step")
    num_train_epochs: float = Field(3.0, gt=0, description="Epochs to train")
    max_steps: int = Field(-1, ge=-1, description="Stop after N optimizer steps (-1: use epochs)")
    learning_rate: float = Field(5e-5, gt=0, le=1.0, description="Peak learning rate")
    lr_scheduler_type: Scheduler = Field("linear", description="Learning-rate schedule")
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of steps used for warm-up (below 1: the peak rate must be reached)"
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm")
    label_smoothing_factor: float = Field(0.0, ge=0, lt=1, description="Label smoothing")
    bf16: bool = Field(False, description="bfloat16 mixed precision (dropped where unsupported)")
    tf32: bool = Field(False, description="TF32 matmuls on Ampere+ GPUs (dropped elsewhere)")
    dataloader_num_workers: int = Field(0, ge=0, description="Data-loading processes (capped at cores)")
    dataloader_pin_memory: bool = Field(True, description="Pin host memory (CUDA only)")
    dataloader_persistent_workers: bool = Field(False, description="Keep workers between epochs")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory")
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding)")
    ddp_find_unused_parameters: bool = Field(
        False, description="DDP (--nproc): search each step for parameters without a gradient; only for a model "
                           "that leaves some unused (DDP then says so), as it costs a pass over the graph"
    )
    eval_strategy: Literal["no", "steps", "epoch"] = Field(
        "epoch",
        validation_alias=AliasChoices("eval_strategy", "evaluation_strategy"),
        description="When to score dev during training",
    )
    eval_steps: int | None = Field(None, ge=1, description="Steps between evaluations (eval_strategy=steps)")
    save_strategy: Literal["no", "steps", "epoch"] = Field("epoch", description="When to checkpoint")
    save_steps: int = Field(500, ge=1, description="Steps between checkpoints (save_strategy=steps)")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept")
    logging_steps: int = Field(10, ge=1, description="Steps between log lines")
    early_stopping_patience: int | None = Field(None, ge=1, description="Evaluations without gain before stop")
    load_best_model_at_end: bool = Field(True, description="Keep the checkpoint with the best dev score")
    metric_for_best_model: BestMetric = Field(
        "final", description="Dev metric that picks the best checkpoint (loss: lowest wins; others: highest)"
    )
    eval_max_samples: int | None = Field(
        200, ge=1, description="Dev rows scored during training (all rows are scored at the end)"
    )
    optim: str = Field("adamw_torch", description="Optimizer name as transformers knows it (checked by validate)")
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"], description="Loggers")

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @field_validator("metric_for_best_model", mode="before")
    @classmethod
    def _metric_name(cls, value: Any) -> Any:
        return value.removeprefix("eval_") if isinstance(value, str) else value  # transformers' spelling

    @model_validator(mode="after")
    def _steps(self) -> TrainingSection:
        if self.max_steps == 0:
            raise ValueError("training.max_steps=0 trains nothing; use -1 (train num_train_epochs) or a step count")
        return self

    @model_validator(mode="after")
    def _strategies(self) -> TrainingSection:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("training.eval_strategy=steps needs training.eval_steps; set eval_steps")
        if self.load_best_model_at_end and self.eval_strategy != "no":
            if self.save_strategy != self.eval_strategy:
                raise ValueError(
                    f"training.save_strategy={self.save_strategy} must equal eval_strategy="
                    f"{self.eval_strategy} when load_best_model_at_end is true"
                )
            if self.eval_strategy == "steps" and self.save_steps % (self.eval_steps or 1):
                raise ValueError(
                    f"training.save_steps={self.save_steps} must be a multiple of eval_steps={self.eval_steps}"
                )
        return self


class LoraSection(Section):
    """LoRA and QLoRA adapters."""

    use_lora: bool = Field(False, description="Train LoRA adapters instead of all weights")
    use_qlora: bool = Field(False, description="LoRA over a 4-bit quantized model (implies use_lora)")
    load_in_4bit: bool = Field(False, description="Load the base model in 4-bit NF4 (bitsandbytes)")
    lora_rank: int = Field(16, ge=1, validation_alias=AliasChoices("lora_rank", "r"), description="Rank")
    lora_alpha: float = Field(32, gt=0, description="Scaling numerator (scale = alpha / rank)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q", "k", "v", "o"],
        description="Generic (q,k,v,o,wi,wo) or architecture names; resolved per architecture",
    )

    @model_validator(mode="after")
    def _qlora(self) -> LoraSection:
        if self.load_in_4bit and not (self.use_qlora or self.use_lora):
            raise ValueError("lora.load_in_4bit=true needs lora.use_qlora=true (4-bit weights cannot train)")
        if self.use_qlora and not self.load_in_4bit:
            if "load_in_4bit" in self.model_fields_set:
                raise ValueError("lora.use_qlora=true means LoRA over a 4-bit model, but load_in_4bit=false; "
                                 "set load_in_4bit=true, or use_lora=true for LoRA without 4-bit")
            self.load_in_4bit = True
        return self

    @property
    def enabled(self) -> bool:
        return self.use_lora or self.use_qlora


class GenerationSection(Section):
    """How summaries are generated for dev, test and `dialsum predict`."""

    num_beams: int = Field(
        4, ge=1, validation_alias=AliasChoices("num_beams", "generation_num_beams"), description="Beams"
    )
    max_length: int = Field(
        128, ge=1, validation_alias=AliasChoices("max_length", "generation_max_length"),
        description="Longest generated summary (new tokens)",
    )
    min_length: int = Field(
        1, ge=0, validation_alias=AliasChoices("min_length", "generation_min_length"),
        description="Shortest generated summary (new tokens)",
    )
    length_penalty: float = Field(
        1.0, validation_alias=AliasChoices("length_penalty", "generation_length_penalty"),
        description="Beam score length exponent (<1 favours short summaries)",
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, validation_alias=AliasChoices("no_repeat_ngram_size", "generation_no_repeat_ngram_size"),
        description="Forbid repeating n-grams of this size (0: off)",
    )
    repetition_penalty: float = Field(
        1.0, gt=0, description="Divide the scores of tokens already generated by this (1.0: off)"
    )
    early_stopping: bool = Field(True, description="Stop beam search when all beams finished")
    batch_tokens: int = Field(
        16384, ge=64,
        description="Token budget of one generation batch: tokens x beams (causal: prompt + max_length new tokens)"
    )
    sort_by_length: bool = Field(True, description="Generate in length order, restore input order after")
    drop_finished: bool = Field(
        True, description="Beam search: an input leaves the batch once its beams are final (same summaries, "
                          "less compute); false runs transformers' own loop"
    )
    trim_unfinished: bool = Field(
        False, description="Cut an unfinished last sentence (text after the last . ! or ?) from each summary"
    )

    @model_validator(mode="after")
    def _lengths(self) -> GenerationSection:
        if self.min_length > self.max_length:
            raise ValueError(
                f"generation.min_length={self.min_length} exceeds max_length={self.max_length}; lower it"
            )
        return self


class TuneSection(Section):
    """`dialsum tune`'s search space over generation settings. A list is the choices, [low, high] a range;
    an empty list keeps the run's own value. The run's own settings are always trial 0."""

    num_beams: list[int] = Field(default_factory=lambda: [1, 2, 4, 6, 8], description="Beam counts to try")
    length_penalty: list[float] = Field(default_factory=lambda: [0.6, 1.6], description="[low, high] (beams only)")
    no_repeat_ngram_size: list[int] = Field(default_factory=lambda: [0, 2, 3, 4], description="n-gram sizes to try")
    repetition_penalty: list[float] = Field(default_factory=lambda: [1.0, 1.3], description="[low, high]")
    max_length: list[int] = Field(default_factory=lambda: [48, 64, 100, 128], description="Longest summaries to try")
    min_length: list[int] = Field(default_factory=lambda: [1, 5, 10], description="Shortest summaries to try")
    early_stopping: list[bool] = Field(default_factory=lambda: [True, False], description="Beam early stopping")
    instruction: list[str] = Field(
        default_factory=lambda: ["다음 대화를 요약해줘.", "다음 대화를 한두 문장으로 요약해줘.",
                                 "다음 대화의 핵심 내용을 간결하게 요약하세요."],
        description="Causal LMs: prompt instructions to try",
    )
    trim_unfinished: list[bool] = Field(default_factory=lambda: [False, True], description="Causal LMs only")

    @field_validator("length_penalty", "repetition_penalty")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if value and (len(value) != 2 or value[0] > value[1]):
            raise ValueError(f"{value}: give [low, high] with low <= high, or [] to keep the run's value")
        return value

    @model_validator(mode="after")
    def _each_value_is_a_setting(self) -> TuneSection:
        """Every value tried must be one the generation section accepts, so no trial fails on it."""
        for name in GenerationSection.model_fields.keys() & type(self).model_fields.keys():
            for value in getattr(self, name):
                longest = {"max_length": 10**9} if name == "min_length" else {}  # tune keeps min <= max itself
                try:
                    GenerationSection.model_validate({name: value, **longest})
                except ValidationError as err:
                    raise ValueError(f"{name}: {value!r} is not a valid generation.{name} "
                                     f"({err.errors()[0]['msg']})") from None
        return self


class SweepRange(Section):
    """A range `dialsum sweep` samples from: `[low, high]`, or `{low: ..., high: ..., log: true}`."""

    help_type: ClassVar[str] = "range: [low, high] or {low, high, log}"  # how `dialsum config` names it

    low: float = Field(..., description="Lowest value")
    high: float = Field(..., description="Highest value")
    log: bool = Field(False, description="Sample on a log scale (low above 0)")

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"{list(value)}: give [low, high], {{low: ..., high: ..., log: true}}, or [] to keep "
                                 "the config's value")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SweepRange:
        if self.low > self.high:
            raise ValueError(f"[{self.low:g}, {self.high:g}]: low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError(f"[{self.low:g}, {self.high:g}] with log: true: a log scale needs low above 0")
        return self


SWEEP_RANGES = ("learning_rate", "warmup_ratio", "weight_decay", "label_smoothing_factor", "lora_dropout")


class SweepSection(Section):
    """`dialsum sweep`'s search space over training settings. A range is [low, high] (or {low, high, log: true});
    a list is the choices; [] keeps the config's own value. Each dimension holds the config's own value, and the
    config's own settings are trial 0. LoRA dimensions apply only where the config trains LoRA."""

    learning_rate: SweepRange | None = Field(
        default_factory=lambda: SweepRange(low=1e-5, high=3e-4, log=True), description="Peak learning rate range")
    warmup_ratio: SweepRange | None = Field(default_factory=lambda: SweepRange(low=0.0, high=0.1),
                                            description="Warm-up fraction range")
    weight_decay: SweepRange | None = Field(default_factory=lambda: SweepRange(low=0.0, high=0.1),
                                            description="Weight decay range")
    label_smoothing_factor: SweepRange | None = Field(default_factory=lambda: SweepRange(low=0.0, high=0.1),
                                                      description="Label smoothing range")
    num_train_epochs: list[float] = Field(default_factory=lambda: [3, 4, 5, 6],
                                          description="Epochs to try (left out with --max-steps or --one-epoch)")
    lora_rank: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256], description="LoRA ranks to try")
    lora_alpha: list[float] = Field(default_factory=lambda: [32, 64, 128, 256, 512], description="LoRA alphas to try")
    lora_dropout: SweepRange | None = Field(default_factory=lambda: SweepRange(low=0.0, high=0.1),
                                            description="LoRA dropout range")
    per_device_train_batch_size: list[int] | None = Field(
        None, description="Micro-batches to try, each dividing every effective batch (null: the config's, its half "
                          "and its double where they divide the effective batch)")
    effective_batch: list[int] = Field(
        default_factory=list, description="Effective batches to try ([]: the config's own); the accumulation is "
                                          "the effective batch over the micro-batch")
    evaluations: int = Field(4, ge=1, description="Dev evaluations in the shortest trial, where the config does not "
                                                  "evaluate every N steps itself (the pruner decides at each)")
    random_trials: int = Field(10, ge=0, description="Trials sampled at random before TPE learns from the scores")

    @field_validator(*SWEEP_RANGES, mode="before")
    @classmethod
    def _empty_keeps(cls, value: Any) -> Any:
        return None if isinstance(value, (list, tuple)) and not value else value

    @model_validator(mode="after")
    def _each_value_is_a_setting(self) -> SweepSection:
        """Every value tried must be one its section accepts, so no trial fails on it."""
        for name in self.dimensions():
            section = TrainingSection if name in TrainingSection.model_fields else LoraSection
            for value in self.values(name):
                try:
                    section.model_validate({name: value})
                except ValidationError as err:
                    where = "training" if section is TrainingSection else "lora"
                    raise ValueError(f"{name}: {value!r} is not a valid {where}.{name} "
                                     f"({err.errors()[0]['msg']})") from None
        if any(b < 1 for b in self.effective_batch):
            raise ValueError(f"effective_batch: {self.effective_batch}: each must be at least 1")
        return self

    @staticmethod
    def dimensions() -> list[str]:
        """The settings a sweep can vary (besides the effective batch)."""
        return [n for n in SweepSection.model_fields if n not in ("effective_batch", "evaluations", "random_trials")]

    def values(self, name: str) -> list[Any]:
        """The values given for a dimension: a range's two ends, or the choices ([] when it keeps the config's)."""
        value = getattr(self, name)
        if isinstance(value, SweepRange):
            return [value.low, value.high]
        return list(value or [])


class SpeedSection(Section):
    """dialsum's own speed settings (chunked loss, fused optimizer, kernels, threads)."""

    chunked_loss: bool = Field(True, description="Loss in vocabulary chunks, no full float32 logits")
    chunk_tokens: int = Field(1024, ge=1, description="Target tokens per loss chunk")
    fused_adamw: bool = Field(True, description="adamw_torch runs as its fused kernel (CUDA and CPU)")
    sdpa: bool = Field(True, description="Scaled-dot-product attention kernels where supported")
    torch_compile: bool = Field(False, description="torch.compile the model (CUDA)")
    liger_kernel: bool = Field(
        True, description="Causal LMs on CUDA: liger-kernel's fused linear cross-entropy when it is installed"
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: 2 for tiny models on a CPU, else torch's)"
    )
    bucket_summaries: bool = Field(
        False, description="Seq2seq with group_by_length: also sort each window of micro-batches by summary "
                           "length (less label padding, faster steps; lower dev scores measured, see README)"
    )


class ExperimentConfig(Section):
    experiment: ExperimentSection = Field(default_factory=ExperimentSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection)
    prompt: PromptSection = Field(default_factory=PromptSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    speed: SpeedSection = Field(default_factory=SpeedSection)
    tune: TuneSection = Field(default_factory=TuneSection)
    sweep: SweepSection = Field(default_factory=SweepSection)

    @property
    def effective_batch(self) -> int:
        return self.training.per_device_train_batch_size * self.training.gradient_accumulation_steps


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in ExperimentConfig.model_fields.items()
}


INITS: tuple[str, ...] = ModelSection.model_fields["init"].annotation.__args__  # type: ignore[union-attr]
