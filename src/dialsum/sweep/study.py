"""The sweep's Optuna study: its storage, sampler and pruner, trial 0 queued, and the checks that a continued
study is this sweep's.

    dialsum sweep CONFIG --trials 20                          # OUT/study.journal
    dialsum sweep CONFIG --trials 20 --storage /shared/sweeps/kobart.journal      # a path every node sees
    dialsum sweep CONFIG --trials 20 --storage postgresql://user@db/optuna        # a database
    pytest tests/test_sweep.py -k "study or prune"

By default the study is Optuna's journal file (`OUT/study.journal`): appends under a lock file that works
across processes, also on NFS, so the study survives a kill at any moment and a `--resume` reads every
trial back. `--storage` takes another journal path (on a cluster: storage every node mounts) or a database
URL (Optuna's RDB storage). The driver alone talks to the study (ask and tell); the trials' processes never
open it. The study's name is the sweep's output folder, and the study keeps the space it searches: a
continued sweep must search the same one.

The sampler is TPE, seeded by the config's seed and the number of trials so far (a continued sweep samples
new settings), random for its first `sweep.random_trials`, and with the constant liar so that trials running
side by side are not sampled alike. The pruners are Optuna's: the median pruner (a trial stops when its dev
score at a step is below the median of the finished trials' at that step, once two trials have finished),
Hyperband (from the first evaluation to the longest trial, a third kept at each rung), or none. Trial 0, the
config's own settings, is never pruned: it is what every other trial is compared with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError
from dialsum.sweep.schedule import Schedule

STUDY_FILE = "study.journal"
PRUNERS = ("median", "hyperband", "none")
MEDIAN_STARTUP = 2  # finished trials before the median pruner compares


def storage_label(out: Path, storage: str | None) -> str:
    return storage or str(out / STUDY_FILE)


def open_storage(out: Path, storage: str | None) -> Any:
    """The journal file (OUT/study.journal, or a path given) or a database URL."""
    import optuna  # optuna takes a second to import: only where the study is opened

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    if storage and "://" in storage:
        try:
            return optuna.storages.RDBStorage(storage)
        except Exception as err:  # a bad URL, a missing driver, a database that does not answer
            raise DialsumError(f"--storage {storage}: {str(err).splitlines()[0][:200]}; give a database URL Optuna "
                               "can open (sqlite:///path.db, postgresql://...) or a journal file path") from None
    path = Path(storage) if storage else out / STUDY_FILE
    if path.is_dir():
        raise DialsumError(f"--storage {path}: a folder; give a file path for the study's journal")
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend  # optuna: see above

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def study_name(out: Path) -> str:
    return f"dialsum-sweep:{out.resolve()}"


def has_study(storage: Any, out: Path) -> bool:
    import optuna  # optuna: see open_storage

    return study_name(out) in optuna.study.get_all_study_names(storage)


def open_study(storage: Any, out: Path, seed: int, random_trials: int, pruner: Any) -> Any:
    """This sweep's study, created or continued, sampling with TPE seeded by `seed` and the trials so far."""
    import optuna  # optuna: see open_storage

    study = optuna.create_study(storage=storage, study_name=study_name(out), direction="maximize",
                                load_if_exists=True, pruner=pruner)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=random_trials,
                                               constant_liar=True)
    return study


def make_pruner(kind: str, schedule: Schedule) -> Any:
    import optuna  # optuna: see open_storage

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_min_trials=MEDIAN_STARTUP)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=schedule.first_step(), max_resource=schedule.last_step(),
                                              reduction_factor=3)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise DialsumError(f"--pruner {kind}: choose {', '.join(PRUNERS[:-1])} or {PRUNERS[-1]}")


def check_same_space(study: Any, signature: list[str], label: str) -> None:
    """A new study keeps its space; a continued one must search the same."""
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", signature)
    elif stored != signature:
        changed = sorted(set(stored) ^ set(signature))
        raise DialsumError(f"{label}: the study searched another space ({'; '.join(changed[:4])}); restore the "
                           "config's sweep section (and the options that shape it), or start a new sweep in "
                           "another --out")


def queue_own(study: Any, own: dict[str, Any]) -> None:
    """Trial 0 is the config's own settings: queued when the study is new."""
    if not study.trials:
        study.enqueue_trial(own)


def prune_now(trial: Any, number: int) -> bool:
    """The pruner's decision on a trial's reported scores; never for trial 0, the reference."""
    return number != 0 and trial.should_prune()
