"""`dialsum sweep`: everything checked up front, then the trials under the sweep's lock, then its outputs.

    dialsum sweep configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny --max-steps 60 --trials 8 --slots 2
    dialsum sweep CONFIG --trials 20 --gpus 0,1,2,3 | --backend ray --address auto --out /shared/sweeps/kobart
    dialsum sweep CONFIG --resume --out runs/sweeps/kobart
    pytest tests/test_sweep.py

Before anything is written: the options, the config and its data, the dev split, the space (every value, with
`dialsum validate`'s rules: `checks`), the slots or the Ray cluster. Then, holding `OUT/sweep.lock`, the sweep
writes its record (`sweep.json`), the config as it started (`sweep_config.yaml`), dev's two parts
(`dev_search.csv`, which the trials score and the pruner sees, and `dev_heldout.csv`, which only scores the
choice at the end, as `dialsum tune` splits dev), opens the study, runs the trials (`driver`) and writes
best.yaml, trials.csv and the report (`finish`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialsum import config, data
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text
from dialsum.locks import FolderLock
from dialsum.logs import quiet_libraries
from dialsum.paths import check_folder
from dialsum.sections import ExperimentConfig
from dialsum.suite.opening import SuiteOptions, open_backend
from dialsum.suite.state import TrainArgs
from dialsum.sweep import checks, options, study
from dialsum.sweep.driver import SweepDriver, SweepPlan, say
from dialsum.sweep.finish import finish
from dialsum.sweep.options import CONFIG_SNAPSHOT, HELDOUT, SEARCH
from dialsum.sweep.schedule import plan_schedule, trial_examples
from dialsum.sweep.space import build_space
from dialsum.tune import read_dev, split_dev


def run_sweep(opts: options.SweepOptions) -> int:
    """The whole command; its exit code (0, 1 when no trial finished, 130 on Ctrl-C)."""
    options.check_options(opts)
    cfg = _load(opts.config, opts.sets, opts.data)
    out = check_folder(opts.out or options.default_out(cfg), "--out")
    record = options.settle_record(out, opts)
    cfg = _load(record.config, record.sets, record.data)  # as the sweep started (the same on a new sweep)
    _check_snapshot(out, cfg)
    space = build_space(cfg, options.length_option(record.max_steps, record.one_epoch))
    dev = read_dev(cfg)
    split = split_dev(len(dev), record.dev_rows)
    rows = len(data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True))
    train_rows = min(rows, cfg.data.max_train_samples or rows)
    schedule = plan_schedule(cfg, space, trial_examples(cfg, space, train_rows, record.max_steps, record.one_epoch))
    pruner = study.make_pruner(record.pruner, schedule)
    backend = _open_backend(opts)
    try:
        quiet_libraries()
        notes = checks.check_space(cfg, space, record.init, _device(), gpu_here=backend.local)
        out.mkdir(parents=True, exist_ok=True)
        with FolderLock(out, "sweep", "dialsum sweep", "wait for it to finish, or stop it (Ctrl-C keeps its trials)"):
            _write_inputs(out, cfg, record, dev, split)
            args = TrainArgs(init=record.init, one_epoch=record.one_epoch, max_steps=record.max_steps,
                             sets=record.sets, data=record.data)
            plan = SweepPlan(out, record.config, cfg, args, space, schedule, record.trials,
                             [f"data.dev_file={(out / SEARCH).resolve()}", "data.max_eval_samples=null"],
                             len(split.search), len(split.heldout),
                             opts.keep_checkpoints, opts.timeout_minutes)
            return _run(plan, record, opts, backend, pruner, notes)
    finally:
        backend.close()


def _load(path: str, sets: list[str], data_dir: str | None) -> ExperimentConfig:
    return config.load(path, list(sets) + ([f"data.dir={data_dir}"] if data_dir else []))


def _check_snapshot(out: Path, cfg: ExperimentConfig) -> None:
    """A continued sweep trains the config it started with: a config file edited since is refused."""
    path = out / CONFIG_SNAPSHOT
    if not path.is_file():
        return
    changed = config.differences(config.load(path), cfg, tuple(config.SECTIONS))
    if changed:
        listed = "; ".join(c.replace(" in the run, ", " at the start, ") for c in changed[:4])
        raise DialsumError(f"{out}: the config changed since the sweep started ({listed}); restore it, or start a "
                           "new sweep in another --out")


def _device() -> Any:
    from dialsum.device import probe  # torch takes seconds to import: only once the options are checked

    return probe()


def _open_backend(opts: options.SweepOptions) -> Any:
    """The slots the trials run on. `--cpu-threads N` (a suite's sweep entry on a CPU slot) gives each trial N torch
    threads, the slot's share of the cores, as the suite gives its training children."""
    backend = open_backend(SuiteOptions("", gpus=opts.gpus, slots=opts.slots, backend=opts.backend,
                                        address=opts.address))
    if opts.cpu_threads is not None:
        if not backend.local or backend.kind != "cpu":
            backend.close()
            raise DialsumError(f"--cpu-threads {opts.cpu_threads}: for trials on CPU slots; this sweep runs on "
                               f"{backend.describe()}")
        backend.pool.threads = opts.cpu_threads
    return backend


def _write_inputs(out: Path, cfg: ExperimentConfig, record: options.SweepRecord, dev: Any, split: Any) -> None:
    """The record, the config as it started and dev's two parts; a continued sweep's dev must split the same."""
    parts = {SEARCH: dev.iloc[split.search], HELDOUT: dev.iloc[split.heldout]}
    for name, rows in parts.items():
        text = rows.to_csv(index=False)
        if (out / name).is_file() and (out / name).read_text(encoding="utf-8") != text:
            raise DialsumError(f"{out / name}: dev changed since the sweep started (its rows differ now); restore "
                               f"{Path(cfg.data.dir) / cfg.data.dev_file}, or start a new sweep in another --out")
        atomic_write_text(out / name, text)
    options.write_record(out, record)
    if not (out / CONFIG_SNAPSHOT).is_file():
        atomic_write_text(out / CONFIG_SNAPSHOT, config.to_yaml(cfg))


def _run(plan: SweepPlan, record: options.SweepRecord, opts: options.SweepOptions, backend: Any, pruner: Any,
         notes: list[str]) -> int:
    storage = study.open_storage(plan.out, record.storage)
    label = study.storage_label(plan.out, record.storage)
    if study.has_study(storage, plan.out) and not opts.resume:
        raise DialsumError(f"{label}: already holds this sweep's study; continue it with --resume")
    the_study = study.open_study(storage, plan.out, plan.cfg.experiment.seed, plan.cfg.sweep.random_trials, pruner)
    study.check_same_space(the_study, plan.space.signature(), label)
    study.queue_own(the_study, plan.space.own)
    _describe(plan, record, backend, label, notes)
    code = SweepDriver(plan, the_study, backend).run()
    if code == 130:
        done = sum(t.state.is_finished() for t in the_study.trials)
        say(f"interrupted: {done} finished trial(s) kept in {label}; continue with --resume --out {plan.out}")
        return 130
    return finish(plan, the_study, backend)


def _describe(plan: SweepPlan, record: options.SweepRecord, backend: Any, label: str, notes: list[str]) -> None:
    say(f"sweep of {plan.config_path}: {record.trials} trial(s), pruner {record.pruner}, {backend.describe()}; "
        f"study {label}")
    say("space: " + "; ".join(plan.space.signature()))
    for line in [*plan.space.left_out, plan.schedule.describe(), *notes]:
        say(line)
