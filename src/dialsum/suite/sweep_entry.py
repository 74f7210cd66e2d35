"""A suite entry that sweeps its training settings, then trains the best: its one child command, and that
command's program.

    dialsum suite configs/suites/sweep_then_five.yaml --init tiny --max-steps 20 --slots 2
    pytest tests/test_suite_sweep.py

An entry with `sweep: {trials: N}` is one child process of the suite, as any entry is:
`python -m dialsum.suite.sweep_entry SWEEP_COMMAND --then TRAIN_COMMAND`. It runs `dialsum sweep` over the
entry's config (with the suite's --init, --max-steps or --one-epoch, --data and --set, and the entry's `set`)
into `<out>/<name>/sweep/`, then trains that sweep's `best.yaml` into `<out>/<name>/run/`, the run every
entry has (the report, the per-dialogue page, `tune:` and the ensemble read it as any other).

The slot: the sweep sees the entry's slot as a training child does, through CUDA_VISIBLE_DEVICES (its one GPU,
or none on a CPU slot, where `--cpu-threads` gives each trial the slot's torch threads); the sweep's one slot
is that slot, so its trials run one at a time on it.

The processes, on Linux: the sweep is a child of this process through `dialsum.lifeline` (its own session, the
parent-death signal; the SIGINT or SIGTERM the suite sends here is passed on to it, and it stops its trials with
their checkpoints kept). When the sweep ends well, this process replaces itself (exec) with the training
command: exec keeps the pid, the process group, the session and the parent-death signal, so the suite watches,
stops, classifies, retries and resumes that training exactly as any entry's. The sweep names the entry's folder
(`--out <name>/sweep`), so the suite's orphan check finds it and its trials after a kill.

Resume: a sweep started in `<name>/sweep/` (its `sweep.json`) continues with `--resume`: its finished trials
are kept, a trial left running runs again. A finished sweep (its `result.json`) is not run again: the child is
the training of its best.yaml alone (with `--resume` when the run holds one). `--restart NAME` moves the sweep
aside with the run (`sweep.1`), and sweeps afresh.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from dialsum import config
from dialsum.lifeline import run_forwarding
from dialsum.runfiles import SWEEP_RESULT
from dialsum.suite.display import SweepProgress, TrainProgress
from dialsum.suite.process import run_flags, train_command
from dialsum.suite.schema import SuiteEntry, SuiteSweep
from dialsum.suite.state import TrainArgs
from dialsum.sweep.options import BEST, RECORD, TRIALS_CSV

SWEEP = "sweep"  # <out>/<name>/sweep/
THEN = "--then"


def entry_command(entry: SuiteEntry, args: TrainArgs, exp_dir: Path, extra: list[str], resume: bool,
                  threads: int | None, tune: Any = None) -> list[str]:
    """The entry's child: `dialsum train` of its config, or for a sweep entry its sweep (unless finished), then
    the training of the sweep's best.yaml. `extra` (the slot's threads, the out-of-memory retry) reaches the
    training, and the trials only through the slot (`--cpu-threads`): it never changes what the sweep searches."""
    run_dir = (exp_dir / "run").resolve()
    if entry.sweep is None:
        return train_command(entry.config, entry.set, args, run_dir, extra, resume, nproc=entry.gpus, tune=tune)
    sweep_dir = (exp_dir / SWEEP).resolve()
    no_sets = args.model_copy(update={"sets": []})  # best.yaml holds them, and the swept values they set
    train = train_command(str(sweep_dir / BEST), [], no_sets, run_dir, extra, resume, tune=tune)
    if (sweep_dir / SWEEP_RESULT).is_file():
        return train
    sweep = sweep_command(entry, entry.sweep, args, sweep_dir, threads)
    return [sys.executable, "-m", "dialsum.suite.sweep_entry", *sweep, THEN, *train]


def sweep_command(entry: SuiteEntry, spec: SuiteSweep, args: TrainArgs, sweep_dir: Path,
                  threads: int | None) -> list[str]:
    """`python -m dialsum.cli sweep CONFIG --trials N --out SWEEP_DIR ...`, with `--resume` once it started."""
    cmd = [sys.executable, "-m", "dialsum.cli", "sweep", entry.config, "--trials", str(spec.trials),
           "--out", str(sweep_dir), "--pruner", spec.pruner, *run_flags(args)]
    cmd += ["--dev-rows", str(spec.dev_rows)] if spec.dev_rows else []
    cmd += ["--data", args.data] if args.data else []
    cmd += ["--cpu-threads", str(threads)] if threads else []
    cmd += ["--resume"] if (sweep_dir / RECORD).is_file() else []
    for item in [*entry.set, *args.sets]:
        cmd += ["--set", item]
    return cmd


def progress(entry: SuiteEntry, exp_dir: Path, training: TrainProgress) -> TrainProgress | SweepProgress:
    """What the live table shows of an entry: its training, after a sweep entry's trials."""
    if entry.sweep is None:
        return training
    return SweepProgress(exp_dir / SWEEP / TRIALS_CSV, entry.sweep.trials, training)


def batch_config(entry: SuiteEntry, exp_dir: Path, cfg: Any) -> Any:
    """The config whose micro-batch the out-of-memory retry halves: a sweep entry trains its best.yaml."""
    best = exp_dir / SWEEP / BEST
    return config.load(best) if entry.sweep is not None and best.is_file() else cfg


def main(argv: list[str]) -> int:
    """Run the sweep (SIGINT and SIGTERM passed on to it); when it ends well, become the training."""
    at = argv.index(THEN)
    sweep, train = argv[:at], argv[at + 1:]
    code = run_forwarding(sweep)
    if code != 0:
        return code
    print(f"suite: the sweep finished; training its best settings: {' '.join(train)}", flush=True)
    os.execv(train[0], train)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # a stop that came between the sweep and the training
        sys.exit(130)
