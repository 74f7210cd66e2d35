"""Resolve a config against its model's architecture and this machine: every adaptation, named.

    dialsum validate configs/experiments/*.yaml
    dialsum train CONFIG --init tiny          # plans the same way before anything is written

`plan_experiment` never trains and never downloads: it reads the checkpoint's config when it is
local or cached, else the built-in architecture table, and builds the model on the meta device to
count parameters and match LoRA targets. Each adaptation is one line in the form
`key=value ...; using X` and is saved with the run. Given the run's tokenizer (`plan_and_check`),
the plan also takes what the tokenizer decides: a causal LM's padding token and chat template, and
whether its prompt leaves room for the dialogue. `train` and `validate` make the same calls, so
validate shows every adaptation train records: it trains a tiny or random build's tokenizer on the
data as train does, and reads a pretrained checkpoint's when it is local or cached (else it says so);
that, and the report `validate` prints, is `dialsum.validation`'s.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from dialsum import archs, memory, modeling, prompt, train_args
from dialsum import lora as lora_mod
from dialsum.device import DeviceInfo
from dialsum.errors import DialsumError
from dialsum.sections import ExperimentConfig

MIN_PROMPT_TOKENS = 64  # an instruction and a turn or two: a causal LM given fewer cannot read a dialogue
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@dataclass
class Plan:
    cfg: ExperimentConfig  # the adapted copy that will run
    hf_config: Any
    arch_source: str
    family: str
    device: str
    adaptations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    targets: lora_mod.TargetResolution | None = None
    parameters: int = 0
    trainable_parameters: int = 0
    four_bit: bool = False
    liger: bool = False  # liger-kernel's fused linear cross-entropy replaces the chunked loss (CUDA, causal)
    tiny_targets: list[str] = field(default_factory=list)  # LoRA targets a tiny copy adds to the user's own
    quantized_parameters: int = 0  # of `parameters`, those stored in NF4 when the base loads in 4 bits
    memory: memory.MemoryEstimate | None = None  # peak GPU memory of training (see _estimate_memory)
    gpu: tuple[str, int] | None = None  # this machine's GPU (name, bytes), for the comparison
    tokenizer_note: str = ""  # validate: which tokenizer the plan saw, or why it saw none

    @property
    def ok(self) -> bool:
        return not self.errors


def architecture(cfg: ExperimentConfig, init: str, vocab_size: int | None = None) -> tuple[Any, str]:
    """The HF config this run will build: checkpoint/table for pretrained and random, scaled for tiny.
    The causal tiny and random builds take the special-token ids of the tokenizer trained for them."""
    m = cfg.model
    hf_config, source = archs.resolve_hf_config(m.name, m.trust_remote_code)
    if init == "pretrained":
        return hf_config, source
    causal = archs.family_of(hf_config) == "causal"
    if init == "random":
        return (archs.with_tokenizer_ids(hf_config) if causal else hf_config), source
    vocab = vocab_size or m.tiny_vocab_size
    if causal:
        tiny = archs.tiny_causal_config(hf_config, m.tiny_d_model, m.tiny_layers, vocab)
        return tiny, f"tiny {hf_config.model_type} scaled from {source}"
    spec = archs.KNOWN_ARCHS.get(m.name) or archs.spec_from_config(hf_config)
    tiny_spec = archs.tiny_spec(spec, m.tiny_d_model, m.tiny_layers, vocab)
    return archs.config_from_spec(tiny_spec), f"tiny {spec.family} scaled from {source}"


def plan_experiment(cfg: ExperimentConfig, init: str | None, device: DeviceInfo,
                    vocab_size: int | None = None, world_size: int = 1, ddp: bool = False) -> Plan:
    """The adapted config and everything decided about it; `init` None keeps the config's model.init;
    `world_size` the number of DDP processes it trains on; `ddp` whether torchrun started it (the Trainer then
    wraps the model in DDP even on one process)."""
    configured = cfg
    cfg = cfg.model_copy(deep=True)
    init = init or cfg.model.init
    cfg.model.init = init  # type: ignore[assignment]
    hf_config, source = architecture(cfg, init, vocab_size)
    plan = Plan(cfg, hf_config, source, archs.family_of(hf_config),
                "cuda" if device.cuda_available else "cpu")
    _clamp_lengths(plan)
    _adapt_init(plan, init)
    _adapt_hardware(plan, device, world_size)
    _adapt_ddp(plan, world_size, ddp)
    _adapt_evaluation(plan)
    _adapt_generation(plan)
    _adapt_family(plan)
    _adapt_liger(plan)
    _adapt_loggers(plan)
    meta = modeling.meta_model(plan.hf_config, cfg.model.trust_remote_code)
    _resolve_lora(plan, meta)
    _estimate_memory(plan, configured, meta, device)
    return plan


def plan_and_check(cfg: ExperimentConfig, init: str | None, device: DeviceInfo,
                   tokenizer: Any = None, world_size: int = 1, ddp: bool = False) -> Plan:
    """`plan_experiment` on this machine; given the run's tokenizer (mask tokens added), what it decides; then
    what transformers would refuse at training time."""
    plan = plan_experiment(cfg, init, device, len(tokenizer) if tokenizer is not None else None, world_size, ddp)
    if tokenizer is not None and plan.ok:
        _adapt_tokenizer(plan, tokenizer)
    if plan.ok:
        plan.errors += train_args.problems(plan.cfg, four_bit=plan.four_bit, device=plan.device)
    return plan


def _adapt_tokenizer(plan: Plan, tokenizer: Any) -> None:
    """A causal LM's padding token and chat template come from its tokenizer, and so does the room its prompt
    leaves for the dialogue."""
    if plan.family != "causal":
        return
    prompt.adapt_padding(tokenizer, plan.adaptations)
    prompt.adapt_chat_template(plan.cfg, tokenizer, plan.adaptations)
    try:
        prompt.make_encoder(tokenizer, plan.family, plan.cfg).dialogue_budget()
    except DialsumError as err:
        plan.errors.append(str(err))


def experiment_tokenizer(cfg: ExperimentConfig, train: Any, local_only: bool = False) -> Any:
    """The tokenizer a run of `cfg` starts from: a pretrained checkpoint's (`local_only`: never downloaded), else
    one trained on the training rows `train` (tiny and random builds)."""
    m = cfg.model
    hf_config, _ = archs.resolve_hf_config(m.name, m.trust_remote_code)  # a missing or broken checkpoint, said plainly
    if m.init == "pretrained":
        return modeling.load_tokenizer(m.name, m.trust_remote_code, local_only)
    return modeling.tokenizer_from_data(train, archs.family_of(hf_config), cfg.tokenizer.prefix, m.tiny_vocab_size,
                                        cfg.tokenizer.special_tokens)


def _clamp_lengths(plan: Plan) -> None:
    limit = archs.position_limit(plan.hf_config)
    if limit is None:
        return
    if plan.family == "causal":
        _clamp_causal(plan, limit)
        return
    name, tok, gen = plan.cfg.model.name, plan.cfg.tokenizer, plan.cfg.generation
    positions = limit + 2
    for owner, key in ((tok, "encoder_max_len"), (tok, "decoder_max_len"), (gen, "max_length")):
        value = getattr(owner, key)
        if value > limit:
            section = "tokenizer" if owner is tok else "generation"
            plan.adaptations.append(
                f"{section}.{key}={value} exceeds the {positions} positions of {name} "
                f"({plan.arch_source}); using {limit}"
            )
            setattr(owner, key, limit)


def _clamp_causal(plan: Plan, positions: int) -> None:
    """A causal LM's prompt and summary share its positions: the prompt budget gives way, in training
    (prompt + summary) and in generation (prompt + new tokens)."""
    name, tok, gen = plan.cfg.model.name, plan.cfg.tokenizer, plan.cfg.generation
    longest = max(tok.decoder_max_len, gen.max_length)
    if tok.encoder_max_len + longest <= positions:
        return
    room = positions - longest
    if room < MIN_PROMPT_TOKENS:
        plan.errors.append(f"tokenizer.decoder_max_len={tok.decoder_max_len} and generation.max_length="
                           f"{gen.max_length} leave {room} of the {positions} positions of {name} for the prompt; "
                           "lower them")
        return
    plan.adaptations.append(
        f"tokenizer.encoder_max_len={tok.encoder_max_len} + {longest} summary tokens exceed the {positions} "
        f"positions of {name} ({plan.arch_source}); using a prompt of {room}")
    tok.encoder_max_len = room


def _adapt_init(plan: Plan, init: str) -> None:
    """A tiny model trains from scratch: a fine-tuning learning rate, LoRA over a random frozen base and
    activation checkpointing all serve a pretrained model, not this one."""
    if init != "tiny":
        return
    t, scale, note = plan.cfg.training, plan.cfg.model.tiny_lr_scale, plan.adaptations.append
    if scale != 1:
        lr = t.learning_rate * scale
        note(f"training.learning_rate={t.learning_rate:g} is a fine-tuning rate; a tiny model trains from scratch, "
             f"so using {t.learning_rate:g} x {scale:g} (model.tiny_lr_scale) = {lr:g}")
        t.learning_rate = lr
    if t.gradient_checkpointing:
        note("training.gradient_checkpointing=true saves activation memory of large models; a tiny model's is "
             "small, and recomputing it slows CPU training several times over; off")
        t.gradient_checkpointing = False
    _adapt_tiny_lora(plan)


def _adapt_tiny_lora(plan: Plan) -> None:
    """A causal LM's LoRA at rank 16 over random frozen embeddings and head barely learns (training loss 7.4
    after an epoch of the sample, against 1.8 with these): the tiny copy adapts them too, at its full width.
    (The seq2seq configs' LoRA settings are the seed's and stay as they are.)"""
    lora, width = plan.cfg.lora, plan.cfg.model.tiny_d_model
    if not lora.enabled or plan.family != "causal":
        return
    missing = [t for t in ("embed_tokens", "lm_head") if t not in lora.target_modules]
    if missing:
        plan.adaptations.append(f"lora.target_modules: a tiny model's embeddings and head are random, so LoRA "
                                f"adapts {' and '.join(missing)} too")
        lora.target_modules = [*lora.target_modules, *missing]
        plan.tiny_targets = missing
    if lora.lora_rank < width:
        alpha = lora.lora_alpha * width / lora.lora_rank
        plan.adaptations.append(f"lora.lora_rank={lora.lora_rank} over a random base learns little; using the tiny "
                                f"model's width, {width}, and lora_alpha {alpha:g} (the same alpha / rank)")
        lora.lora_rank, lora.lora_alpha = width, alpha


def _adapt_hardware(plan: Plan, dev: DeviceInfo, world_size: int = 1) -> None:
    """What this machine cannot do as configured. Rules kept on CUDA: bf16 and TF32 from compute capability 8.0
    (`device.probe`); pinned memory; data-loading workers, each DDP process with its own, at most the cores."""
    t, sp, lora = plan.cfg.training, plan.cfg.speed, plan.cfg.lora
    note = plan.adaptations.append
    share = max(1, dev.cpu_cores // world_size)
    if t.bf16 and not dev.bf16_supported:
        note("training.bf16=true: this device has no bfloat16 support; training in float32")
        t.bf16 = False
    if t.tf32 and not dev.tf32_supported:
        note("training.tf32=true: TF32 needs an Ampere or newer NVIDIA GPU; using full float32 matmuls")
        t.tf32 = False
    if t.dataloader_num_workers and plan.device == "cpu":
        note(f"training.dataloader_num_workers={t.dataloader_num_workers}: on a CPU-only run worker "
             "processes compete with training for the same cores; using 0")
        t.dataloader_num_workers = 0
    elif t.dataloader_num_workers > share and world_size > 1:
        note(f"training.dataloader_num_workers={t.dataloader_num_workers}: {world_size} DDP processes share the "
             f"{dev.cpu_cores} CPU cores, each with its own workers; using {share}")
        t.dataloader_num_workers = share
    elif t.dataloader_num_workers > dev.cpu_cores:
        note(f"training.dataloader_num_workers={t.dataloader_num_workers} exceeds the {dev.cpu_cores} CPU "
             f"cores; using {dev.cpu_cores}")
        t.dataloader_num_workers = dev.cpu_cores
    if t.dataloader_persistent_workers and t.dataloader_num_workers == 0:
        note("training.dataloader_persistent_workers=true: with dataloader_num_workers=0 there is no worker "
             "to keep; off")
        t.dataloader_persistent_workers = False
    if t.dataloader_pin_memory and plan.device == "cpu":
        note("training.dataloader_pin_memory=true: pinned memory speeds copies to a GPU only; off on the CPU")
        t.dataloader_pin_memory = False
    if lora.load_in_4bit and not dev.bitsandbytes_available:
        note("lora.load_in_4bit=true: bitsandbytes is not installed; loading the base model unquantized "
             "(LoRA only); `pip install bitsandbytes` for QLoRA")
        lora.use_lora, lora.use_qlora, lora.load_in_4bit = True, False, False
    plan.four_bit = lora.load_in_4bit
    _adapt_optimizer(plan)
    if sp.cpu_threads and sp.cpu_threads > dev.cpu_cores:
        note(f"speed.cpu_threads={sp.cpu_threads} exceeds the {dev.cpu_cores} CPU cores; using {dev.cpu_cores}")
        sp.cpu_threads = dev.cpu_cores
    if sp.torch_compile and plan.device == "cpu":
        note("speed.torch_compile=true: compiling pays off on CUDA only; running eagerly")
        sp.torch_compile = False


def _adapt_optimizer(plan: Plan) -> None:
    """speed.fused_adamw turns adamw_torch into its fused kernel (torch has one for CUDA and the CPU), and
    nothing else. A paged optimizer (paged_adamw_8bit) pages its states through CUDA unified memory: kept
    on CUDA; on the CPU bitsandbytes runs the same update unpaged, which is said."""
    t, sp = plan.cfg.training, plan.cfg.speed
    if t.optim.startswith("paged_") and plan.device == "cpu":
        plan.adaptations.append(f"training.optim={t.optim}: paging moves optimizer states out of GPU memory; "
                                "on the CPU bitsandbytes runs it unpaged")
    if not sp.fused_adamw or t.optim == "adamw_torch_fused":
        return
    if t.optim == "adamw_torch":
        plan.adaptations.append(f"training.optim=adamw_torch: using its fused {plan.device.upper()} kernel, "
                                "adamw_torch_fused (speed.fused_adamw)")
        t.optim = "adamw_torch_fused"
        return
    plan.adaptations.append(f"speed.fused_adamw=true applies to adamw_torch only; training.optim={t.optim} "
                            "is kept")
    sp.fused_adamw = False


def _adapt_ddp(plan: Plan, world_size: int, ddp: bool) -> None:
    """Several processes: the effective batch stays the configured one; dev is scored once, by rank 0. Under
    torchrun the Trainer wraps the model in DDP with one process too, so the rest holds there as well."""
    if world_size == 1 and not ddp:
        return
    t = plan.cfg.training
    accum = max(1, round(t.gradient_accumulation_steps / world_size))
    before = plan.cfg.effective_batch
    after = t.per_device_train_batch_size * accum * world_size
    kept = "so the effective batch stays" if after == before else f"the effective batch {before} becomes"
    if world_size > 1:
        plan.adaptations.append(
            f"training.gradient_accumulation_steps={t.gradient_accumulation_steps} on {world_size} DDP processes: "
            f"using {accum}, {kept} {t.per_device_train_batch_size} x {accum} x {world_size} = {after}")
    t.gradient_accumulation_steps = accum
    if t.eval_strategy != "no":
        plan.adaptations.append(
            f"training.eval_strategy={t.eval_strategy}: under DDP transformers gathers padded duplicates into the "
            "dev predictions, so no dev score is taken during training; rank 0 scores all of dev at the end")
        t.eval_strategy = "no"
    if plan.cfg.speed.chunked_loss:
        plan.adaptations.append(
            "speed.chunked_loss=true: the chunked loss runs the model's parts outside DDP's forward, which "
            "synchronizes the gradients; under DDP the model's own loss is used")
        plan.cfg.speed.chunked_loss = False


def _adapt_evaluation(plan: Plan) -> None:
    """Settings that only act with dev evaluations during training are switched off, with a notice."""
    t = plan.cfg.training
    if t.eval_steps is not None and t.eval_strategy != "steps":
        plan.adaptations.append(f"training.eval_steps={t.eval_steps} acts with eval_strategy=steps only "
                                f"(eval_strategy={t.eval_strategy}); unused")
        t.eval_steps = None
    evaluating = t.eval_strategy != "no" and t.load_best_model_at_end
    if t.early_stopping_patience and not evaluating:
        why = "no dev evaluation during training" if t.eval_strategy == "no" else "load_best_model_at_end=false"
        plan.adaptations.append(f"training.early_stopping_patience={t.early_stopping_patience}: {why}, so no "
                                "early stopping")
        t.early_stopping_patience = None
    if t.load_best_model_at_end and t.eval_strategy == "no":
        plan.adaptations.append("training.load_best_model_at_end=true: no dev evaluation during training, so "
                                "the last step's model is kept")
        t.load_best_model_at_end = False


def _adapt_generation(plan: Plan) -> None:
    """Beam-search settings mean nothing to greedy decoding, and transformers refuses to save them."""
    gen = plan.cfg.generation
    if gen.num_beams > 1:
        return
    if gen.early_stopping:
        plan.adaptations.append("generation.early_stopping=true acts in beam search only; off with num_beams=1")
        gen.early_stopping = False
    if gen.length_penalty != 1.0:
        plan.adaptations.append(f"generation.length_penalty={gen.length_penalty:g} acts in beam search only; "
                                "unused with num_beams=1 (1.0)")
        gen.length_penalty = 1.0


def _adapt_family(plan: Plan) -> None:
    tok = plan.cfg.tokenizer
    if plan.family in ("t5", "mt5") and not tok.prefix:
        tok.prefix = "summarize: "
        plan.adaptations.append(
            'tokenizer.prefix is empty for a T5-family model, which was trained with a task prefix; using "summarize: "'
        )
    if plan.family == "causal" and tok.prefix:
        plan.adaptations.append(f"tokenizer.prefix={tok.prefix!r} acts for seq2seq models; a causal LM reads "
                                "prompt.template and prompt.instruction; unused")
        tok.prefix = ""
    sp = plan.cfg.speed
    if sp.bucket_summaries and (plan.family == "causal" or not plan.cfg.training.group_by_length):
        why = ("a causal LM's summary is part of its one sequence" if plan.family == "causal"
               else "training.group_by_length=false")
        plan.adaptations.append(f"speed.bucket_summaries=true sorts seq2seq summaries in length-grouped batches; "
                                f"{why}, so off")
        sp.bucket_summaries = False


def _adapt_liger(plan: Plan) -> None:
    """On CUDA, liger-kernel's fused linear cross-entropy for the causal architectures it patches: its Triton
    kernels run on CUDA only, and it replaces the chunked loss (the recipe then uses the model's own loss,
    which liger has swapped); `modeling.apply_liger` patches the model class for the whole process."""
    sp = plan.cfg.speed
    if plan.family != "causal" or plan.device != "cuda" or not sp.liger_kernel:
        return
    model_type = plan.hf_config.model_type
    supported = modeling.liger_supports(model_type)
    if supported is None:
        plan.adaptations.append("speed.liger_kernel=true: liger-kernel is not installed; using the chunked loss "
                                "(`pip install liger-kernel`)")
    elif not supported:
        plan.adaptations.append(f"speed.liger_kernel=true: liger-kernel does not patch {model_type}; using the "
                                "chunked loss")
    else:
        plan.liger = True
        plan.adaptations.append(f"speed.liger_kernel=true: liger-kernel's fused linear cross-entropy for "
                                f"{model_type} replaces the chunked loss (no logits are kept in training)")


def _adapt_loggers(plan: Plan) -> None:
    t = plan.cfg.training
    kept = []
    for name in t.report_to:
        package = LOGGER_PACKAGES.get(name)
        if name == "none":
            continue
        if package is None:
            plan.errors.append(f"training.report_to: {name!r} is not a logger dialsum knows; use "
                               f"{', '.join(LOGGER_PACKAGES)} or none")
        elif importlib.util.find_spec(package) is None:
            plan.adaptations.append(f"training.report_to: {name} is not installed; not logging to it "
                                    f"(`pip install {package}`)")
        else:
            kept.append(name)
    t.report_to = kept or ["none"]


def _resolve_lora(plan: Plan, meta: Any) -> None:
    plan.parameters, _ = modeling.count_parameters(meta)
    plan.trainable_parameters = plan.parameters
    lora = plan.cfg.lora
    if not lora.enabled:
        return
    res = lora_mod.resolve_targets(lora.target_modules, meta)
    plan.targets = res
    own = [t for t in res.requested if t not in plan.tiny_targets]  # the real model has only these
    generic = [r for r in res.requested if res.mapping[r] != [r]]
    if generic:
        plan.adaptations.append(
            f"lora.target_modules: {', '.join(generic)} named generically; for {plan.family} they are "
            + "; ".join(f"{r} -> {'+'.join(res.mapping[r])}" for r in generic)
        )
    if res.unmatched:
        plan.adaptations.append(
            f"lora.target_modules: {', '.join(res.unmatched)} match(es) no module of this {plan.family} model; "
            "skipped (no adapter there)"
        )
    if not set(own) - set(res.unmatched):
        plan.errors.append(
            f"lora.target_modules={own}: no name matches a module of this {plan.family} "
            "model; use q,k,v,o (or the architecture's own names)"
        )
        return
    lora.target_modules = res.resolved
    plan.trainable_parameters = lora_mod.trainable_count(meta, res.resolved, lora.lora_rank)


def _estimate_memory(plan: Plan, configured: ExperimentConfig, meta: Any, device: DeviceInfo) -> None:
    """Peak GPU memory of training the planned architecture at the adapted lengths. On a GPU machine, with the
    settings as adapted to it (what will run there); on a CPU-only one, with the config's own precision,
    4-bit, optimizer and loss settings, which a GPU would keep and this machine adapts away."""
    settings = plan.cfg if device.cuda_available else configured
    t, tok, sp, lora = settings.training, plan.cfg.tokenizer, settings.speed, plan.cfg.lora
    causal = plan.family == "causal"
    plan.quantized_parameters = memory.quantized_parameters(meta)
    shape = memory.TrainingShape(
        micro_batch=t.per_device_train_batch_size,
        seq_tokens=tok.encoder_max_len + (tok.decoder_max_len if causal else 0), label_tokens=tok.decoder_max_len,
        encoder_decoder=not causal, four_bit=settings.lora.load_in_4bit,
        lora_params=plan.trainable_parameters if plan.cfg.lora.enabled else 0, optimizer=t.optim, bf16=t.bf16,
        gradient_checkpointing=t.gradient_checkpointing, chunk_tokens=sp.chunk_tokens if sp.chunked_loss else None,
        lora_targets=tuple(lora.target_modules) if lora.enabled else (), lora_rank=lora.lora_rank,
        lora_dropout=lora.lora_dropout, trust_remote_code=plan.cfg.model.trust_remote_code,
    )
    plan.memory = memory.estimate(meta, shape)
    if device.cuda_available and device.total_memory_mb:
        plan.gpu = (str(device.device_name), int(device.total_memory_mb * 2**20))


