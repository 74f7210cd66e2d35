"""What a sweep searches: the dimensions of the config's `sweep` section, the config's own value of each, a
trial's settings as `--set` overrides, and the config those settings make.

    dialsum sweep configs/experiments/01_baseline_kobart_rtx3090.yaml --trials 20
    pytest tests/test_sweep.py -k space

Each dimension holds the config's own value (a range is widened to it, a list of choices gets it), so the
config's own settings are a trial like any other: trial 0. A dimension whose only value is the config's own is
left out. LoRA dimensions exist only where the config trains LoRA; given for a config without LoRA they are
refused. The number of epochs is left out when `--max-steps` or `--one-epoch` decides a trial's length.
The micro-batch and the accumulation move as a pair: the accumulation is the effective batch over the
micro-batch, the effective batch stays the config's unless `sweep.effective_batch` gives others, and a
micro-batch that does not divide every effective batch is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.sections import SWEEP_RANGES, ExperimentConfig, SweepRange

LORA_DIMS = ("lora_rank", "lora_alpha", "lora_dropout")
TRIAL_SOURCE = "a sweep trial"
MICRO, EFFECTIVE = "per_device_train_batch_size", "effective_batch"


@dataclass(frozen=True)
class Dim:
    """One dimension: a range (low, high, log) or choices; `key` is the config key it sets."""

    name: str
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        if self.is_range:
            return f"{self.name} [{self.low:g}, {self.high:g}]{' log' if self.log else ''}"
        return f"{self.name} {list(self.choices)}"


@dataclass
class Space:
    """The dimensions a sweep varies, the config's own value of each, and what was left out (and why)."""

    dims: list[Dim]
    own: dict[str, Any]
    own_micro: int
    own_effective: int
    left_out: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def effective_batches(self) -> list[int]:
        return list(self._dim(EFFECTIVE).choices) if EFFECTIVE in self.names else [self.own_effective]

    def micro_batches(self) -> list[int]:
        return list(self._dim(MICRO).choices) if MICRO in self.names else [self.own_micro]

    def _dim(self, name: str) -> Dim:
        return next(d for d in self.dims if d.name == name)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A trial's settings, sampled by Optuna (or the queued ones, for trial 0)."""
        return {d.name: trial.suggest_float(d.name, d.low, d.high, log=d.log) if d.is_range
                else trial.suggest_categorical(d.name, list(d.choices)) for d in self.dims}

    def batch(self, params: dict[str, Any]) -> tuple[int, int]:
        """(micro-batch, effective batch) of a trial."""
        return int(params.get(MICRO, self.own_micro)), int(params.get(EFFECTIVE, self.own_effective))

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The trial's settings as `--set` values, the accumulation derived from the pair."""
        sets = [f"{d.key}={_text(params[d.name])}" for d in self.dims if d.name in params and d.key]
        if MICRO in self.names or EFFECTIVE in self.names:
            micro, effective = self.batch(params)
            sets.append(f"training.gradient_accumulation_steps={effective // micro}")
        return sets

    def signature(self) -> list[str]:
        """The space in words, stored with the study: a continued sweep must search the same space."""
        return [d.describe() for d in self.dims]


def _text(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def build_space(cfg: ExperimentConfig, length_option: str | None = None) -> Space:
    """The space of `cfg.sweep` around `cfg`'s own settings; `length_option` names the option that fixes the
    trial length (`--max-steps 60`), which leaves the epochs out."""
    sweep, t = cfg.sweep, cfg.training
    given = sweep.model_fields_set
    left_out, dims, own = [], [], {}
    for name in sweep.dimensions():
        if name == MICRO:
            continue
        if name in LORA_DIMS and not cfg.lora.enabled:
            if name in given:
                raise DialsumError(f"sweep.{name}: the config trains no LoRA (lora.use_lora and lora.use_qlora are "
                                   f"false); remove sweep.{name}, or train LoRA")
            continue
        if name == "num_train_epochs" and length_option:
            left_out.append(f"num_train_epochs: {length_option} decides the length of every trial")
            continue
        section = "lora" if name in LORA_DIMS else "training"
        mine = getattr(getattr(cfg, section), name)
        dim = _dimension(name, f"{section}.{name}", getattr(sweep, name), mine)
        if dim is not None:
            dims.append(dim)
            own[name] = mine
    batch_dims = _batch_dims(cfg)
    dims += batch_dims
    own.update({d.name: (t.per_device_train_batch_size if d.name == MICRO else cfg.effective_batch) for d in batch_dims})
    if not dims:
        raise DialsumError("sweep: the search space is empty (every sweep.* dimension is empty or holds only the "
                           "config's own value); give one at least two values, e.g. sweep.learning_rate=[1e-5,1e-4]")
    return Space(dims, own, t.per_device_train_batch_size, cfg.effective_batch, left_out)


def _dimension(name: str, key: str, given: Any, mine: Any) -> Dim | None:
    """The dimension with the config's own value in it, or None when that is its only value."""
    if given is None or given == []:
        return None
    if name in SWEEP_RANGES:
        rng: SweepRange = given
        if rng.log and mine <= 0:
            raise DialsumError(f"sweep.{name}: a log range cannot hold the config's own value {mine:g}; give a "
                               f"linear range ([low, high]), or a {key} above 0")
        low, high = min(rng.low, mine), max(rng.high, mine)
        return Dim(name, key, low=low, high=high, log=rng.log) if low < high else None
    choices = tuple(dict.fromkeys([mine, *given]))
    return Dim(name, key, choices=choices) if len(choices) > 1 else None


def _batch_dims(cfg: ExperimentConfig) -> list[Dim]:
    """The micro-batch and effective-batch dimensions; every micro-batch must divide every effective batch."""
    sweep, micro = cfg.sweep, cfg.training.per_device_train_batch_size
    effective = list(dict.fromkeys([cfg.effective_batch, *sweep.effective_batch]))
    if sweep.per_device_train_batch_size is None:  # derived: the config's, its half and its double, where they divide
        wanted = [m for m in (micro // 2, micro * 2) if m >= 1 and all(e % m == 0 for e in effective)]
        micros = list(dict.fromkeys([micro, *wanted]))
    else:
        micros = list(dict.fromkeys([micro, *sweep.per_device_train_batch_size]))
    bad = [(m, e) for m in micros for e in effective if e % m]
    if bad:
        m, e = bad[0]
        own = " (the config's own, training.per_device_train_batch_size)" if m == micro else ""
        raise DialsumError(f"sweep.per_device_train_batch_size: the micro-batch {m}{own} does not divide the effective "
                           f"batch {e}; give micro-batches that divide every effective batch "
                           f"({', '.join(map(str, effective))})")
    dims = []
    if len(micros) > 1:
        dims.append(Dim(MICRO, f"training.{MICRO}", choices=tuple(micros)))
    if len(effective) > 1:
        dims.append(Dim(EFFECTIVE, "", choices=tuple(effective)))
    return dims


def trial_config(cfg: ExperimentConfig, space: Space, params: dict[str, Any]) -> ExperimentConfig:
    """`cfg` with a trial's settings, validated as `--set` values are."""
    data = config.apply_overrides(cfg.model_dump(mode="json"), space.overrides(params))
    return config.validate_dict(data, TRIAL_SOURCE)


def describe(params: dict[str, Any]) -> str:
    """A trial's settings in one line: `learning_rate 6e-05, lora_rank 192`."""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items())
