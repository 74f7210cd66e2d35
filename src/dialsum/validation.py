"""`dialsum validate`: a config planned as `train` would plan it, and the report of that plan.

    dialsum validate configs/experiments/*.yaml
    pytest tests/test_resolve.py -k validate

`validation_plan` is `resolve.plan_and_check` with the tokenizer train would start from, where it can be had
without downloading a model: a tiny or random build's trained on the data as train does, a pretrained
checkpoint's when it is local or cached (else the plan says so). `describe_plan` is the report: the model,
its parameters, batch, lengths, LoRA targets, the memory estimate, and every adaptation and error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialsum import archs, data, memory, modeling
from dialsum.device import DeviceInfo
from dialsum.errors import DialsumError
from dialsum.resolve import Plan, experiment_tokenizer, plan_and_check
from dialsum.sections import ExperimentConfig


def validation_plan(cfg: ExperimentConfig, init: str | None, device: DeviceInfo) -> Plan:
    """`dialsum validate`'s plan: `plan_and_check` with the tokenizer train would start from, where it can be
    had without downloading a model."""
    cfg = cfg.model_copy(deep=True)
    cfg.model.init = init or cfg.model.init  # type: ignore[assignment]
    tokenizer, note = validation_tokenizer(cfg)
    plan = plan_and_check(cfg, None, device, tokenizer)
    plan.tokenizer_note = note
    return plan


def validation_tokenizer(cfg: ExperimentConfig) -> tuple[Any, str]:
    """(the tokenizer with the mask tokens, where it came from), or (None, why it cannot be had here)."""
    m = cfg.model
    if m.init == "pretrained":
        local = Path(m.name).expanduser().is_dir()
        try:
            tokenizer = experiment_tokenizer(cfg, None, local_only=not local)
        except DialsumError:
            if local:
                raise
            return None, (f"{m.name}: not local or cached, so what it decides (a causal LM's padding token and "
                          "chat template) is unknown here; train adapts to it when it loads it")
        where = "the checkpoint's"
    else:
        path = Path(cfg.data.dir) / cfg.data.train_file
        try:
            train = data.read_split(path, with_summary=True)
        except DialsumError as err:
            return None, f"a {m.init} build's is trained on the training data, which cannot be read here: {err}"
        tokenizer = experiment_tokenizer(cfg, train.head(cfg.data.max_train_samples or len(train)))
        where = f"trained on {path}"
    modeling.add_keep_whole_tokens(tokenizer, cfg.tokenizer.special_tokens)
    return tokenizer, f"{where}, {len(tokenizer):,} tokens with the mask tokens"


def _memory_line(plan: Plan) -> str:
    assert plan.memory is not None
    t = plan.cfg.training
    verdicts = [f"{'fits' if plan.memory.fits(gb * memory.GB) else 'does not fit'} {gb} GB" for gb in (24, 80)]
    if plan.gpu:
        name, size = plan.gpu
        fits = "fits" if plan.memory.fits(size) else "does not fit"
        verdicts.append(f"{fits} this {name} {size / memory.GB:.0f} GB")
    return (f"  memory       about {plan.memory.describe()} at micro-batch {t.per_device_train_batch_size} "
            f"(an estimate); {', '.join(verdicts)}")


def _lengths_line(plan: Plan) -> str:
    tok, gen = plan.cfg.tokenizer, plan.cfg.generation
    beams = f"({gen.num_beams} beams)"
    if plan.family != "causal":
        return (f"  lengths      encoder {tok.encoder_max_len}, decoder {tok.decoder_max_len}, "
                f"generation {gen.max_length} {beams}")
    positions = archs.position_limit(plan.hf_config)
    of = f" of the model's {positions:,} positions" if positions else ""
    return (f"  lengths      prompt {tok.encoder_max_len} + summary {tok.decoder_max_len} = "
            f"{tok.encoder_max_len + tok.decoder_max_len}{of}; generation {gen.max_length} new tokens {beams}")


def _parameters_line(plan: Plan) -> str:
    cfg = plan.cfg
    line = f"  parameters   {plan.parameters:,} in the model"
    if plan.four_bit:
        share = plan.quantized_parameters / max(plan.parameters, 1)
        line += (f"; {plan.quantized_parameters:,} ({share:.0%}) stored in 4 bits (NF4), the rest (embeddings, "
                 "head, norms) in 32")
    if cfg.lora.enabled:
        return line + f"; {plan.trainable_parameters:,} trainable in LoRA adapters"
    return line + ", all trainable (full fine-tuning)"


def describe_plan(path: str, plan: Plan) -> str:
    """The `dialsum validate` report of one config."""
    cfg = plan.cfg
    t = cfg.training
    lines = [
        f"{path}: {'OK' if plan.ok else 'CANNOT RUN'}",
        f"  model        {cfg.model.name} ({plan.family}, {plan.arch_source}, init={cfg.model.init})",
        *([f"  tokenizer    {plan.tokenizer_note}"] if plan.tokenizer_note else []),
        _parameters_line(plan),
        f"  batch        {t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation = "
        f"{cfg.effective_batch} effective; lr {t.learning_rate:g}, {t.num_train_epochs:g} epochs",
        _lengths_line(plan),
    ]
    if plan.targets:
        lines.append("  lora targets " + "; ".join(plan.targets.describe()))
    if plan.memory:
        lines.append(_memory_line(plan))
    lines += [f"  adapted      {a}" for a in plan.adaptations]
    lines += [f"  error        {e}" for e in plan.errors]
    return "\n".join(lines)
