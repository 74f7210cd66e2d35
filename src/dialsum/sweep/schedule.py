"""When a sweep's trials evaluate dev, and the step at which each evaluation is reported to the pruner.

    dialsum sweep CONFIG --init tiny --max-steps 60 --trials 8      # 4 evaluations: every 15 steps
    pytest tests/test_sweep.py -k schedule

The pruner compares trials at equal steps, so every trial evaluates after the same number of training
examples. Where the config evaluates every N steps itself (`training.eval_strategy: steps`), its interval is
kept. Otherwise (by epoch, or not at all) the sweep evaluates each trial `sweep.evaluations` times over the
shortest trial's length, at an interval in examples that every effective batch of the space divides, and saves
a checkpoint at each evaluation (what a resumed trial continues from). A step reported to the pruner is a
training step at the config's own effective batch: the trial's own step wherever the space keeps the effective
batch, as it does by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dialsum.errors import DialsumError
from dialsum.sections import ExperimentConfig
from dialsum.sweep.space import Space


@dataclass(frozen=True)
class Schedule:
    own_effective: int
    interval: int | None  # examples between evaluations, the sweep's; None: the config's own steps
    config_steps: int | None  # the config's own eval_steps
    shortest: int  # examples in the shortest and the longest trial
    longest: int

    def eval_steps(self, effective: int) -> int:
        return self.config_steps if self.interval is None else max(1, self.interval // effective)

    def step(self, global_step: int, effective: int) -> int:
        """The pruner's step of a trial's training step: steps at the config's own effective batch."""
        return round(global_step * effective / self.own_effective)

    def first_step(self) -> int:
        return self.step(self.eval_steps(self.own_effective), self.own_effective)

    def last_step(self) -> int:
        return max(self.first_step(), self.longest // self.own_effective)

    def overrides(self, effective: int) -> list[str]:
        """The `--set` values that make a trial evaluate (and checkpoint) at the sweep's interval."""
        if self.interval is None:
            return []
        every = self.eval_steps(effective)
        return ["training.eval_strategy=steps", f"training.eval_steps={every}",
                "training.save_strategy=steps", f"training.save_steps={every}"]

    def describe(self) -> str:
        if self.interval is None:
            return f"dev evaluated every {self.config_steps} steps (the config's training.eval_steps)"
        return (f"dev evaluated every {self.eval_steps(self.own_effective)} steps at the effective batch "
                f"{self.own_effective} ({self.interval} examples), with a checkpoint at each")


def trial_examples(cfg: ExperimentConfig, space: Space, train_rows: int, max_steps: int | None,
                   one_epoch: bool) -> list[int]:
    """Training examples of each trial length the space allows."""
    if max_steps:
        return [max_steps * e for e in space.effective_batches()]
    if one_epoch:
        return [train_rows]
    return [math.ceil(float(e) * train_rows) for e in _epochs(cfg, space)]


def _epochs(cfg: ExperimentConfig, space: Space) -> list[float]:
    dim = next((d for d in space.dims if d.name == "num_train_epochs"), None)
    return list(dim.choices) if dim else [cfg.training.num_train_epochs]


def plan_schedule(cfg: ExperimentConfig, space: Space, examples: list[int]) -> Schedule:
    t, own = cfg.training, space.own_effective
    shortest, longest = min(examples), max(examples)
    if t.eval_strategy == "steps":
        if t.eval_steps is None:
            raise DialsumError("training.eval_strategy=steps without training.eval_steps: give the interval, or "
                               "eval_strategy epoch and the sweep chooses one")
        return Schedule(own, None, t.eval_steps, shortest, longest)
    unit = math.lcm(*space.effective_batches())
    interval = unit * max(1, round(shortest / cfg.sweep.evaluations / unit))
    return Schedule(own, interval, None, shortest, longest)
