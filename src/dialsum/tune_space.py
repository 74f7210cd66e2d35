"""What generation tuning searches: the space over generation settings, a trial's settings as a config, and
the fixed split of dev into search rows and held-out rows.

    dialsum tune runs/kobart_baseline/<time> --trials 20 [--dev-rows 100]
    pytest tests/test_tune.py -k "space or split or neutral"

The space comes from the config's `tune` section: a list is the choices, `[low, high]` a range (the two
penalties), and a dimension whose values are all the run's own is left out; the run's own value of each
setting is always among its choices, so the run's own settings are a trial like any other. Dev is split by a
permutation seeded with a fixed constant (not the run's seed), so every run tuned on one dev file holds out
the same rows; the parts are nested (a larger search part takes rows from the held-out ones only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from dialsum.errors import DialsumError
from dialsum.finished_run import read_dev
from dialsum.sections import ExperimentConfig, GenerationSection

SPLIT_SEED = 20_417  # fixed, not the run's seed: every run tuned on one dev file holds out the same rows
CAUSAL_ONLY = ("instruction", "trim_unfinished")
RANGES = ("length_penalty", "repetition_penalty")


def search_space(cfg: ExperimentConfig, causal: bool) -> dict[str, list[Any]]:
    """The dimensions that vary: name -> choices, or [low, high] for the two penalties."""
    space = {name: list(values) for name, values in cfg.tune.model_dump().items()
             if values and (causal or name not in CAUSAL_ONLY) and _varies(cfg, name, values)}
    if not space:
        raise DialsumError("tune: the search space is empty (every tune.* list is empty or holds only the run's "
                           "own value); give at least one setting two values, e.g. tune.num_beams=[2,4,8]")
    return space


def _varies(cfg: ExperimentConfig, name: str, values: list[Any]) -> bool:
    if name in RANGES:
        return values[0] < values[1] or values[0] != own(cfg, name)
    return any(v != own(cfg, name) for v in values)


def own(cfg: ExperimentConfig, name: str) -> Any:
    """The run's own value of a tuned setting."""
    return cfg.prompt.instruction if name == "instruction" else getattr(cfg.generation, name)


def own_params(cfg: ExperimentConfig, space: dict[str, list[Any]]) -> dict[str, Any]:
    """The run's own settings as a trial's parameters (each is among its dimension's choices: `suggest`)."""
    return {name: own(cfg, name) for name in space}


def suggest(trial: Any, space: dict[str, list[Any]], cfg: ExperimentConfig) -> dict[str, Any]:
    params = {}
    for name, values in space.items():
        if name in RANGES:
            low, high = min(values[0], own(cfg, name)), max(values[1], own(cfg, name))
            params[name] = trial.suggest_float(name, low, high)
        else:
            choices = list(dict.fromkeys([own(cfg, name), *values]))
            params[name] = trial.suggest_categorical(name, choices)
    return params


def apply(cfg: ExperimentConfig, params: dict[str, Any]) -> ExperimentConfig:
    """The run's config with these generation settings (and instruction); beam-only settings are neutral
    without beams, and the shortest summary never exceeds the longest."""
    out = cfg.model_copy(deep=True)
    gen = out.generation.model_dump()
    gen.update({k: v for k, v in params.items() if k != "instruction"})
    if gen["num_beams"] == 1:
        gen.update(length_penalty=1.0, early_stopping=False)
    gen["min_length"] = min(gen["min_length"], gen["max_length"])
    out.generation = GenerationSection(**gen)
    if "instruction" in params:
        out.prompt.instruction = params["instruction"]
    return out


@dataclass
class DevSplit:
    """Dev row positions: the search part (trials and the choice) and the held-out rest (the reported scores)."""

    search: list[int]
    heldout: list[int]


def split_dev(n_dev: int, search_rows: int | None, option: str = "--dev-rows") -> DevSplit:
    """The first `search_rows` (default half) of a permutation of dev seeded by SPLIT_SEED, and the rest."""
    if n_dev < 2:
        raise DialsumError(f"tune: dev has {n_dev} row(s); tuning needs at least 2, rows to search on and rows "
                           "held out to score the choice; give a dev file with more rows")
    rows = n_dev // 2 if search_rows is None else search_rows
    if rows >= n_dev:
        raise DialsumError(f"{option} {rows}: dev has {n_dev} rows, and the choice is scored on the rows left "
                           f"out of the search; give at most {n_dev - 1} (leave it out for half, {n_dev // 2})")
    order = list(range(n_dev))
    random.Random(SPLIT_SEED).shuffle(order)
    return DevSplit(sorted(order[:rows]), sorted(order[rows:]))


def check_split_before_training(cfg: ExperimentConfig, dev_rows: int | None) -> None:
    """`train --tune`: the split `tune` will make after training, checked before training starts."""
    split_dev(len(read_dev(cfg)), dev_rows, "--tune-dev-rows")
