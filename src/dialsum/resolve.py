"""Resolve a config against its model's architecture and this machine: every adaptation, named.

    dialsum validate configs/experiments/*.yaml

`plan_experiment` never trains and never downloads: it reads the checkpoint's config when it is
local or cached, else the built-in architecture table, and builds the model on the meta device to
count parameters and match LoRA targets. Each adaptation is one line in the form
`key=value ...; using X` and is saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialsum import modeling, train_args
from dialsum.config import ExperimentConfig
from dialsum.device import DeviceInfo


@dataclass
class Plan:
    cfg: ExperimentConfig  # the adapted copy that will run
    hf_config: Any
    arch_source: str
    family: str
    device: str
    adaptations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    targets: modeling.TargetResolution | None = None
    parameters: int = 0
    trainable_parameters: int = 0
    four_bit: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def architecture(cfg: ExperimentConfig, init: str, vocab_size: int | None = None) -> tuple[Any, str]:
    """The HF config this run will build: checkpoint/table for pretrained and random, scaled for tiny."""
    name = cfg.model.name
    if init == "pretrained":
        return modeling.resolve_hf_config(name)
    hf_config, source = modeling.resolve_hf_config(name)
    spec = modeling.KNOWN_ARCHS.get(name) or _spec_from_config(hf_config)
    if init == "random":
        return hf_config, source
    m = cfg.model
    tiny = modeling.tiny_spec(spec, m.tiny_d_model, m.tiny_layers, vocab_size or m.tiny_vocab_size)
    return modeling.config_from_spec(tiny), f"tiny {spec.family} scaled from {source}"


def _spec_from_config(c: Any) -> modeling.ArchSpec:
    family = modeling.family_of(c)
    if family == "bart":
        return modeling.ArchSpec("bart", c.d_model, c.encoder_layers, c.encoder_attention_heads,
                                 c.encoder_ffn_dim, c.vocab_size, c.max_position_embeddings)
    return modeling.ArchSpec(family, c.d_model, c.num_layers, c.num_heads, c.d_ff, c.vocab_size, None,
                             gated=modeling.is_gated(c), tied=not modeling.wants_untied_head(c))


def plan_experiment(cfg: ExperimentConfig, init: str | None, device: DeviceInfo,
                    vocab_size: int | None = None, world_size: int = 1) -> Plan:
    """The adapted config and everything decided about it; `init` None keeps the config's model.init;
    `world_size` the number of DDP processes it trains on."""
    cfg = cfg.model_copy(deep=True)
    init = init or cfg.model.init
    cfg.model.init = init  # type: ignore[assignment]
    hf_config, source = architecture(cfg, init, vocab_size)
    plan = Plan(cfg, hf_config, source, modeling.family_of(hf_config),
                "cuda" if device.cuda_available else "cpu")
    _clamp_lengths(plan)
    _adapt_init(plan, init)
    _adapt_hardware(plan, device)
    _adapt_ddp(plan, world_size)
    _adapt_evaluation(plan)
    _adapt_generation(plan)
    _adapt_family(plan)
    _adapt_loggers(plan)
    _resolve_lora(plan)
    return plan


def plan_and_check(cfg: ExperimentConfig, init: str | None, device: DeviceInfo,
                   vocab_size: int | None = None, world_size: int = 1) -> Plan:
    """`plan_experiment` on this machine, plus what transformers would refuse at training time."""
    plan = plan_experiment(cfg, init, device, vocab_size, world_size)
    if plan.ok:
        plan.errors += train_args.problems(plan.cfg, four_bit=plan.four_bit, device=plan.device)
    return plan


def _clamp_lengths(plan: Plan) -> None:
    limit = modeling.position_limit(plan.hf_config)
    if limit is None:
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


def _adapt_init(plan: Plan, init: str) -> None:
    t, scale = plan.cfg.training, plan.cfg.model.tiny_lr_scale
    if init != "tiny" or scale == 1:
        return
    lr = t.learning_rate * scale
    plan.adaptations.append(
        f"training.learning_rate={t.learning_rate:g} is a fine-tuning rate; a tiny model trains from scratch, "
        f"so using {t.learning_rate:g} x {scale:g} (model.tiny_lr_scale) = {lr:g}"
    )
    t.learning_rate = lr


def _adapt_hardware(plan: Plan, dev: DeviceInfo) -> None:
    t, sp, lora = plan.cfg.training, plan.cfg.speed, plan.cfg.lora
    note = plan.adaptations.append
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
    """speed.fused_adamw turns adamw_torch into its fused CUDA kernel, and nothing else."""
    t, sp = plan.cfg.training, plan.cfg.speed
    if not sp.fused_adamw or t.optim == "adamw_torch_fused":
        return
    if t.optim != "adamw_torch":
        plan.adaptations.append(f"speed.fused_adamw=true applies to adamw_torch only; training.optim={t.optim} "
                                "is kept")
    elif plan.device == "cuda":
        plan.adaptations.append("training.optim=adamw_torch: using its fused CUDA kernel, adamw_torch_fused "
                                "(speed.fused_adamw)")
        t.optim = "adamw_torch_fused"
        return
    else:
        plan.adaptations.append("speed.fused_adamw=true: the fused AdamW kernel is used on CUDA only; plain "
                                "adamw_torch on the CPU")
    sp.fused_adamw = False


def _adapt_ddp(plan: Plan, world_size: int) -> None:
    """Several processes: the effective batch stays the configured one; dev is scored once, by rank 0."""
    if world_size == 1:
        return
    t = plan.cfg.training
    accum = max(1, round(t.gradient_accumulation_steps / world_size))
    before = plan.cfg.effective_batch
    after = t.per_device_train_batch_size * accum * world_size
    kept = "so the effective batch stays" if after == before else f"the effective batch {before} becomes"
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
    if plan.family != "bart" and not tok.prefix:
        tok.prefix = "summarize: "
        plan.adaptations.append(
            'tokenizer.prefix is empty for a T5-family model, which was trained with a task prefix; using "summarize: "'
        )


LOGGER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _adapt_loggers(plan: Plan) -> None:
    import importlib.util

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


def _resolve_lora(plan: Plan) -> None:
    meta = modeling.meta_model(plan.hf_config)
    plan.parameters, _ = modeling.count_parameters(meta)
    plan.trainable_parameters = plan.parameters
    lora = plan.cfg.lora
    if not lora.enabled:
        return
    res = modeling.resolve_targets(lora.target_modules, meta)
    plan.targets = res
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
    if not res.resolved:
        plan.errors.append(
            f"lora.target_modules={lora.target_modules}: no name matches a module of this {plan.family} "
            "model; use q,k,v,o (or the architecture's own names)"
        )
        return
    lora.target_modules = res.resolved
    plan.trainable_parameters = modeling.lora_trainable_count(meta, res.resolved, lora.lora_rank)


def describe_plan(path: str, plan: Plan) -> str:
    """The `dialsum validate` report of one config."""
    cfg = plan.cfg
    t = cfg.training
    lines = [
        f"{path}: {'OK' if plan.ok else 'CANNOT RUN'}",
        f"  model        {cfg.model.name} ({plan.family}, {plan.arch_source}, init={cfg.model.init})",
        f"  parameters   {plan.parameters:,} in the model"
        + (f" (4-bit base); {plan.trainable_parameters:,} trainable in LoRA adapters" if plan.four_bit else
           f"; {plan.trainable_parameters:,} trainable in LoRA adapters" if cfg.lora.enabled else
           ", all trainable (full fine-tuning)"),
        f"  batch        {t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation = "
        f"{cfg.effective_batch} effective; lr {t.learning_rate:g}, {t.num_train_epochs:g} epochs",
        f"  lengths      encoder {cfg.tokenizer.encoder_max_len}, decoder {cfg.tokenizer.decoder_max_len}, "
        f"generation {cfg.generation.max_length} ({cfg.generation.num_beams} beams)",
    ]
    if plan.targets:
        lines.append("  lora targets " + "; ".join(plan.targets.describe()))
    lines += [f"  adapted      {a}" for a in plan.adaptations]
    lines += [f"  error        {e}" for e in plan.errors]
    return "\n".join(lines)
