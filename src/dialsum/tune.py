"""Generation tuning on a finished run: an Optuna study over beams, penalties, lengths (and, for causal
LMs, the prompt's instruction and the trim of an unfinished sentence), scored with the competition ROUGE.

    dialsum tune runs/kobart_baseline/<time> --trials 20 [--dev-rows 100]
    dialsum tune runs/kobart_baseline/<time> --trials 20          # again: the same study continues
    dialsum tune runs/kobart_baseline/<time> --trials 20 --jobs 2 # two worker processes, a slot each
    dialsum predict runs/kobart_baseline/<time> --input test.csv --generation tune/best.yaml

The search space and the dev split are `tune_space`'s: the search part (`--dev-rows`, default half of dev)
scores the trials and picks the best of them; the rest is held out, and the run's own settings and the
chosen ones are both scored there (`tune_finish`). Those held-out scores are what tuning reports: a tuned
score chosen on some rows is never reported on them. The study and its Ctrl-C-safe writes are
`tune_study`'s. One `dialsum tune` works on a run at a time (`tune/tune.lock`). `--jobs N` starts N
worker processes as the suite starts its children (`dialsum.lifeline`: their own session, the parent-death
signal, stopped as a group), each on a slot of its own (`dialsum.slots`), all adding to the same study.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dialsum.errors import DialsumError
from dialsum.finished_run import FinishedRun, open_run, read_dev
from dialsum.lifeline import signal_group, start_child
from dialsum.locks import FolderLock
from dialsum.pause import pause
from dialsum.runfiles import TuneResult
from dialsum.slots import Slot, worker_slots
from dialsum.tune_finish import finish
from dialsum.tune_space import DevSplit, own_params, search_space, split_dev, suggest
from dialsum.tune_study import (
    STUDY_NAME,
    Scorer,
    check_same_split,
    open_study,
    own_trial,
    queue_own,
    run_trial,
    sigint_held,
    study_errors,
)

TUNE_DIR = "tune"


@dataclass
class TuneOptions:
    run_dir: Path
    trials: int = 20
    timeout_minutes: float | None = None
    dev_rows: int | None = None  # the search part; None: half of dev
    jobs: int = 1  # worker processes, one per GPU (or a share of the CPU)
    worker: int = 0  # >0: one of --jobs' workers (no files, no bar, no lock); set by the parent


def check_options(opts: TuneOptions, trials_option: str = "--trials", dev_rows_option: str = "--dev-rows") -> None:
    """The options as the user typed them (`train --tune N --tune-dev-rows M` names its own)."""
    if opts.trials < 1:
        raise DialsumError(f"{trials_option} {opts.trials}: must be at least 1")
    if opts.timeout_minutes is not None and opts.timeout_minutes <= 0:
        raise DialsumError(f"--timeout {opts.timeout_minutes:g}: minutes, more than 0")
    if opts.jobs < 1:
        raise DialsumError(f"--jobs {opts.jobs}: must be at least 1")
    if opts.dev_rows is not None and opts.dev_rows < 1:
        raise DialsumError(f"{dev_rows_option} {opts.dev_rows}: must be at least 1; leave it out to search on "
                           "half of dev")


def tune_run(opts: TuneOptions) -> TuneResult | None:
    """`dialsum tune`: the result, or None in a `--jobs` worker (the parent finishes)."""
    check_options(opts)
    run = open_run(opts.run_dir)
    space = search_space(run.cfg, run.info.family == "causal")
    dev = read_dev(run.cfg)
    split = split_dev(len(dev), opts.dev_rows)
    slots = worker_slots(opts.jobs) if opts.jobs > 1 else None  # checked before anything is written
    out = run.dir / TUNE_DIR
    out.mkdir(exist_ok=True)
    lock = FolderLock(out, "tune", "dialsum tune", "wait for it to finish, or stop it (Ctrl-C keeps its trials)")
    with contextlib.nullcontext() if opts.worker else lock, study_errors(out / "study.db"):
        return _tune(opts, run, space, dev, split, slots)


def _tune(opts: TuneOptions, run: FinishedRun, space: dict[str, list[Any]], dev: Any, split: DevSplit,
          slots: list[Slot] | None) -> TuneResult | None:
    import optuna  # optuna takes a second to import: only once the run and options are checked

    mine = own_params(run.cfg, space)
    with sigint_held():  # the study's first writes, like each trial's, are never cut short
        study = open_study(run.dir / TUNE_DIR / "study.db")
        # seeded, and by the trials so far (and the worker): a continued study samples new settings
        study.sampler = optuna.samplers.TPESampler(seed=run.cfg.experiment.seed + len(study.trials) + 1000 * opts.worker)
        check_same_split(study, split.search, space)
        if not opts.worker:
            queue_own(study, mine)
    if slots is not None:  # the workers run the trials; this process loads the model afterwards, to finish
        _run_workers(opts, study, slots, mine)
    tokenizer, model = run.load()
    scorer = Scorer(run.cfg, tokenizer, model, run.info.family, dev)
    if slots is None:
        _optimize(study, scorer, space, split.search, opts)
    if opts.worker:
        return None
    return finish(study, scorer, space, split, run.dir)


def completed_trials(run_dir: Path) -> int | None:
    """The finished trials of a run's study; None when it has none, or one Optuna cannot read."""
    db = run_dir / TUNE_DIR / "study.db"
    if not db.is_file():
        return None
    import optuna  # optuna: see _tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        loaded = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{db}")
    except Exception:  # a damaged study: `dialsum tune` says what is wrong with it
        return None
    return len(loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class _Bar:
    """The progress bar: trials done, the best score so far, and the score of the run's own settings."""

    def __init__(self, total: int, quiet: bool, params: dict[str, Any]):
        self.bar = tqdm(total=total, desc="tune", dynamic_ncols=True, disable=quiet)
        self.params = params

    def show(self, study: Any, done: int) -> None:
        values = [t.value for t in study.trials if t.value is not None]
        mine = own_trial(study, self.params)
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix({"trials": len(values), "best": f"{max(values, default=math.nan):.2f}",
                              "own settings": f"{mine.value if mine else math.nan:.2f}"})

    def close(self) -> None:
        self.bar.close()


def _interrupted(study: Any) -> KeyboardInterrupt:
    done = sum(t.value is not None for t in study.trials)
    print(f"tune: interrupted; {done} finished trial(s) are kept in tune/study.db, and dialsum tune continues "
          "the study", file=sys.stderr)
    return KeyboardInterrupt()


def _optimize(study: Any, scorer: Scorer, space: dict[str, list[Any]], rows: list[int], opts: TuneOptions) -> None:
    """Run the trials in this process; Ctrl-C keeps every finished trial in the study (SQLite). `--timeout`
    stops starting trials, after at least one (the run's own settings, when they are queued)."""
    bar = _Bar(opts.trials, opts.worker > 0, own_params(scorer.cfg, space))
    started = time.monotonic()

    def objective(trial: Any) -> float:
        return scorer.score(suggest(trial, space, scorer.cfg), rows)

    try:
        for done in range(1, opts.trials + 1):
            run_trial(study, objective)
            pause("tuning", scorer.cfg.experiment.name)  # the chaos benchmark's kill point (dialsum.pause)
            bar.show(study, done)
            if opts.timeout_minutes and time.monotonic() - started >= opts.timeout_minutes * 60:
                break
    except KeyboardInterrupt:
        bar.close()
        raise _interrupted(study) from None
    bar.close()


def _run_workers(opts: TuneOptions, study: Any, slots: list[Slot], mine: dict[str, Any]) -> None:
    """`--jobs N`: N worker processes, each on its slot, add their share of the trials to the same study. They
    die with this process and run in sessions of their own, so a Ctrl-C reaches them from here (lifeline)."""
    shares = [opts.trials // len(slots) + (i < opts.trials % len(slots)) for i in range(len(slots))]
    before = len(study.trials)
    workers = []
    for i, (slot, trials) in enumerate(zip(slots, shares, strict=True)):
        if not trials:
            continue
        cmd = [sys.executable, "-m", "dialsum.cli", "tune", str(opts.run_dir), "--trials", str(trials),
               "--worker", str(i + 1)] + (["--dev-rows", str(opts.dev_rows)] if opts.dev_rows else [])
        if opts.timeout_minutes:
            cmd += ["--timeout", str(opts.timeout_minutes)]
        env = {**slot.env(), **({"OMP_NUM_THREADS": str(slot.threads)} if slot.threads else {})}
        workers.append(start_child(cmd, None, env))
    bar = _Bar(opts.trials, False, mine)
    try:
        while any(w.poll() is None for w in workers):
            time.sleep(1.0)
            bar.show(study, len(study.get_trials(deepcopy=False)) - before)
    except KeyboardInterrupt:
        for w in workers:
            signal_group(w.pid, signal.SIGINT)
        for w in workers:
            w.wait()
        bar.close()
        raise _interrupted(study) from None
    bar.show(study, len(study.get_trials(deepcopy=False)) - before)
    bar.close()
    codes = [w.returncode for w in workers if w.returncode]
    if codes:
        raise DialsumError(f"--jobs: {len(codes)} worker(s) failed (exit {codes[0]}); the trials they finished are "
                           "kept; run without --jobs to see the error")
