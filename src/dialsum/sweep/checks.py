"""Every value a sweep can try, checked before any trial starts, with `dialsum validate`'s rules.

    dialsum sweep CONFIG --trials 20          # refused at once when one value of the space cannot run
    pytest tests/test_sweep.py -k check

Each value of each dimension (a range's two ends, each choice) and each micro-batch with each effective
batch goes through the config schema alone, beside the config's other settings; then the config itself,
and the space's two corners (every dimension at its lowest, then at its highest), go through `validate`'s
plan: the architecture, LoRA targets, the optimizer and training arguments transformers would refuse. On a
machine with a GPU the highest corner (the largest micro-batch, LoRA rank and dropout of the space) must fit
the GPU by the plan's memory estimate: a space that holds a micro-batch over it is refused. On a CPU-only
machine, or where Ray places the trials on other nodes, there is no GPU here to check against, and the sweep
says so.
"""

from __future__ import annotations

from typing import Any

from dialsum.device import DeviceInfo
from dialsum.errors import DialsumError
from dialsum.memory import GB
from dialsum.resolve import plan_and_check
from dialsum.sections import ExperimentConfig
from dialsum.sweep.space import EFFECTIVE, MICRO, TRIAL_SOURCE, Dim, Space, trial_config
from dialsum.validation import validation_tokenizer


def check_space(cfg: ExperimentConfig, space: Space, init: str | None, device: DeviceInfo,
                gpu_here: bool = True) -> list[str]:
    """Refuse (one error listing every problem) a space that can make a config that cannot run; the notes."""
    problems = [p for params in single_values(space) if (p := _schema_problem(cfg, space, params))]
    if problems:
        raise DialsumError(_listed(problems))
    return _plan_corners(cfg, space, init, device, gpu_here)


def single_values(space: Space) -> list[dict[str, Any]]:
    """Each value of each dimension alone, and each micro-batch with each effective batch."""
    out = [{d.name: v} for d in space.dims if d.name not in (MICRO, EFFECTIVE) for v in _ends(d)]
    return out + [{MICRO: m, EFFECTIVE: e} for m in space.micro_batches() for e in space.effective_batches()]


def corners(space: Space) -> dict[str, dict[str, Any]]:
    """The space at its lowest and at its highest (each dimension's smallest and largest value)."""
    return {"lowest": {d.name: min(_ends(d)) for d in space.dims},
            "highest": {d.name: max(_ends(d)) for d in space.dims}}


def _ends(dim: Dim) -> list[Any]:
    return [dim.low, dim.high] if dim.is_range else list(dim.choices)


def _schema_problem(cfg: ExperimentConfig, space: Space, params: dict[str, Any]) -> str | None:
    try:
        trial_config(cfg, space, params)
    except DialsumError as err:
        return f"{_values(params)}: {str(err).removeprefix(TRIAL_SOURCE + ': ')}"
    return None


def _plan_corners(cfg: ExperimentConfig, space: Space, init: str | None, device: DeviceInfo,
                  gpu_here: bool) -> list[str]:
    """The config and the two corners through validate's plan; the highest against this machine's GPU."""
    configured = cfg.model_copy(deep=True)
    configured.model.init = init or cfg.model.init  # type: ignore[assignment]
    tokenizer, _ = validation_tokenizer(configured)
    problems, notes = [], []
    plans = {"the config's own settings": configured}
    plans.update({f"the {name} corner ({_values(params)})": trial_config(configured, space, params)
                  for name, params in corners(space).items()})
    for what, trial in plans.items():
        plan = plan_and_check(trial, init, device, tokenizer)
        problems += [f"{what}: {error}" for error in plan.errors]
        if what.startswith("the highest") and plan.ok:
            notes.append(_memory_verdict(plan, what, gpu_here, problems))
    if problems:
        raise DialsumError(_listed(problems))
    return notes


def _memory_verdict(plan: Any, what: str, gpu_here: bool, problems: list[str]) -> str:
    """The highest corner's memory estimate against this machine's GPU; a problem when it does not fit."""
    estimate = plan.memory
    if estimate is None:
        return "memory: no estimate for this model"
    if plan.gpu is None or not gpu_here:
        where = "the trials run on Ray's nodes" if plan.gpu and not gpu_here else "this machine has no GPU"
        return f"memory: {what} needs about {estimate.total / GB:.1f} GB of GPU memory (an estimate); {where}, so " \
               "it is not checked against one"
    name, size = plan.gpu
    if not estimate.fits(size):
        problems.append(f"{what} needs about {estimate.describe()} of GPU memory, more than this {name}'s "
                        f"{size / GB:.0f} GB (an estimate); drop the largest micro-batch or LoRA rank from the space")
    return f"memory: {what} needs about {estimate.total / GB:.1f} GB, within this {name}'s {size / GB:.0f} GB"


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _listed(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"sweep: {problems[0]}"
    return f"sweep: {len(problems)} values of the space cannot run:\n" + "\n".join(f"  - {p}" for p in problems)
