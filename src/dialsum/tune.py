"""Generation tuning on a finished run: an Optuna study over beams, penalties, lengths (and, for causal
LMs, the prompt's instruction and the trim of an unfinished sentence), scored with the competition ROUGE.

    dialsum tune runs/kobart_baseline/<time> --trials 20 [--dev-rows 100]
    dialsum tune runs/kobart_baseline/<time> --trials 20          # again: the same study continues
    dialsum predict runs/kobart_baseline/<time> --input test.csv --generation tune/best.yaml

Dev is split in two, by a permutation seeded with a fixed constant (not the run's seed), so every run tuned
on one dev file holds out the same rows: the search part (`--dev-rows`, default half of dev) scores the
trials and picks the best of them by those scores; the rest is held out, and the run's own settings and
the chosen ones are both scored there. Those held-out scores are what tuning reports: a tuned score chosen
on some rows is never reported on them. The run's own settings stay the recommendation when they win on
the held-out rows. The split's parts are nested (a larger search part takes rows from the held-out ones
only), so runs tuned with different `--dev-rows` still share held-out rows, which ensembles use.

The study (TPE, seeded by the run's seed) lives in `RUN_DIR/tune/study.db` (SQLite): finished trials
survive Ctrl-C and a later `dialsum tune` adds to them. The run's own settings are queued first, and again
by each call until one of their trials completes. A trial is written to the study with Ctrl-C held back,
so a Ctrl-C never lands inside Optuna's bookkeeping; it stops the command (exit 130) once the write is
done. One `dialsum tune` works on a run at a time (`tune/tune.lock`). Written to `RUN_DIR/tune/`:
`best.yaml` (the recommended generation section, and the prompt's instruction for causal LMs),
`trials.csv`, `result.json`, `dev_predictions.csv` (the recommendation's summaries of the held-out rows),
`optimization_history.png`, `param_importances.png`; and `RUN_DIR/submission_tuned.csv`, test summarized
with the recommendation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dialsum import config, data, generation, prompt
from dialsum.config import ExperimentConfig
from dialsum.csvio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.errors import DialsumError
from dialsum.locks import FolderLock
from dialsum.pause import pause

log = logging.getLogger("dialsum")
STUDY_NAME = "generation"
SPLIT_SEED = 20_417  # fixed, not the run's seed: every run tuned on one dev file holds out the same rows
CAUSAL_ONLY = ("instruction", "trim_unfinished")
RANGES = ("length_penalty", "repetition_penalty")


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


def finished_run(run_dir: Path) -> tuple[ExperimentConfig, str]:
    """The config and model family of a finished run (its model, model_info.json and metrics.json are there)."""
    from dialsum.csvio import read_json

    missing = [n for n in ("config.yaml", "model_info.json", "metrics.json", "model") if not (run_dir / n).exists()]
    if missing:
        raise DialsumError(f"{run_dir}: not a finished run ({missing[0]} is missing); train it to the end first, "
                           "or point at a run directory under runs/")
    return config.load(run_dir / "config.yaml"), read_json(run_dir / "model_info.json", "train the run again")["family"]


# ---------------------------------------------------------------- the search space


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
    out.generation = config.GenerationSection(**gen)
    if "instruction" in params:
        out.prompt.instruction = params["instruction"]
    return out


# ---------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """Generates and scores dev summaries of one loaded run under any settings."""

    cfg: ExperimentConfig
    tokenizer: Any
    model: Any
    family: str
    dev: Any

    def summaries(self, cfg: ExperimentConfig, dialogues: list[str]) -> list[str]:
        encoder = prompt.make_encoder(self.tokenizer, self.family, cfg)
        strip = generation.decoder_tokens_to_strip(self.tokenizer)
        return generation.generate(self.model, self.tokenizer, encoder.inputs(dialogues), cfg.generation, strip)

    def score(self, params: dict[str, Any], rows: list[int]) -> float:
        return self.evaluate(params, rows)[0]

    def evaluate(self, params: dict[str, Any], rows: list[int]) -> tuple[float, list[str]]:
        """The dev score of these settings on these rows, and the summaries that got it."""
        from dialsum.metrics import score

        frame = self.dev.iloc[rows]
        preds = self.summaries(apply(self.cfg, params), list(frame["dialogue"]))
        return float(score(preds, [[s] for s in frame["summary"]], tokenize="morpheme").final), preds


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


def read_dev(cfg: ExperimentConfig) -> Any:
    """The dev rows a run was scored on (its config's dev file, cut to `data.max_eval_samples`)."""
    dev = data.read_split(Path(cfg.data.dir) / cfg.data.dev_file, with_summary=True)
    return (dev.head(cfg.data.max_eval_samples) if cfg.data.max_eval_samples else dev).reset_index(drop=True)


def check_split_before_training(cfg: ExperimentConfig, dev_rows: int | None) -> None:
    """`train --tune`: the split `tune` will make after training, checked before training starts."""
    split_dev(len(read_dev(cfg)), dev_rows, "--tune-dev-rows")


# ---------------------------------------------------------------- the command


def tune_run(opts: TuneOptions) -> dict[str, Any]:
    check_options(opts)
    run_dir = Path(opts.run_dir)
    cfg, family = finished_run(run_dir)
    space = search_space(cfg, family == "causal")
    dev = read_dev(cfg)
    split = split_dev(len(dev), opts.dev_rows)
    slots = _slots(opts.jobs) if opts.jobs > 1 else None  # checked before anything is written
    out = run_dir / "tune"
    out.mkdir(exist_ok=True)
    lock = FolderLock(out, "tune", "dialsum tune", "wait for it to finish, or stop it (Ctrl-C keeps its trials)")
    with contextlib.nullcontext() if opts.worker else lock, _study_errors(out / "study.db"):
        return _tune(opts, run_dir, cfg, family, space, dev, split, slots)


def _tune(opts: TuneOptions, run_dir: Path, cfg: ExperimentConfig, family: str, space: dict[str, list[Any]],
          dev: Any, split: DevSplit, slots: list[Any] | None) -> dict[str, Any]:
    import optuna

    from dialsum.recipe import load_run_model, quiet_libraries

    quiet_libraries()
    mine = own_params(cfg, space)
    with sigint_held():  # the study's first writes, like each trial's, are never cut short
        study = _open_study(run_dir / "tune" / "study.db")
        # seeded, and by the trials so far (and the worker): a continued study samples new settings
        study.sampler = optuna.samplers.TPESampler(seed=cfg.experiment.seed + len(study.trials) + 1000 * opts.worker)
        _check_same_split(study, split.search, space)
        if not opts.worker:
            queue_own(study, mine)
    if slots is not None:  # the workers run the trials; this process loads the model afterwards, to finish
        _run_workers(opts, study, slots, mine)
    tokenizer, model, _ = load_run_model(run_dir, cfg)
    scorer = Scorer(cfg, tokenizer, model, family, dev)
    if slots is None:
        _optimize(study, scorer, space, split.search, opts)
    if opts.worker:
        return {}
    return finish(study, scorer, space, split, run_dir)


def _open_study(db: Path) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" warning repeats a Ctrl-C
    # A Ctrl-C inside a database call leaves SQLAlchemy a connection to roll back when it is collected, and it
    # logs that with a traceback; SQLite has already rolled the unfinished transaction back, so it says nothing.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    return optuna.create_study(storage=f"sqlite:///{db}", study_name=STUDY_NAME, direction="maximize",
                               load_if_exists=True)


@contextlib.contextmanager
def _study_errors(db: Path) -> Iterator[None]:
    """The study file's problems as one line each: not a database, a study Optuna cannot read, locked by
    another program. A lock is waited for as long as SQLite's busy timeout (5 s): `--jobs` workers write the
    same file in turns, each briefly; a program that keeps it locked longer is named, not waited for."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.DatabaseError as err:  # OperationalError, "database is locked", is one of them
        if "locked" in str(err.orig):
            raise DialsumError(f"{db}: locked by {_holders(db)}, not by a dialsum tune; close the study there "
                               "(or wait for it), then run dialsum tune again") from None
        raise DialsumError(f"{db}: {err.orig}; move it aside, and dialsum tune starts a new study") from None


def _holders(path: Path) -> str:
    """The other processes that have `path` open (pid and name), or "another program" when none can be seen."""
    import os

    import psutil

    target, found = path.resolve(), []
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if any(Path(f.path) == target for f in proc.open_files()):
                found.append(f"pid {proc.pid} ({proc.info['name']})")
    return ", ".join(found) or "another program"


def _check_same_split(study: Any, search: list[int], space: dict[str, list[Any]]) -> None:
    """A continued study must score on the same rows and space, or its trials do not compare."""
    stored = study.user_attrs.get("subset")
    if stored is None:
        study.set_user_attr("subset", search)
        study.set_user_attr("space", {k: [str(v) for v in vals] for k, vals in space.items()})
    elif stored != search:
        raise DialsumError(f"--dev-rows: tune/study.db scored its trials on {len(stored)} other dev rows, this run "
                           f"would search on {len(search)}; give the --dev-rows it was started with, or move "
                           "tune/study.db aside to start over")
    elif study.user_attrs.get("space") != {k: [str(v) for v in vals] for k, vals in space.items()}:
        raise DialsumError("tune: the config's tune section changed since tune/study.db started; restore it, or "
                           "move tune/study.db aside to start over")


def queue_own(study: Any, params: dict[str, Any]) -> None:
    """Queue the run's own settings until one of their trials completes: one that was interrupted (failed,
    or left running by a killed process) is queued again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING)):
        if (t.params if t.state == TrialState.COMPLETE else t.system_attrs.get("fixed_params")) == params:
            return
    study.enqueue_trial(params)


def own_trial(study: Any, params: dict[str, Any]) -> Any | None:
    """The completed trial of the run's own settings."""
    from optuna.trial import TrialState

    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params == params),
                None)


class _Bar:
    """The progress bar: trials done, the best score so far, and the score of the run's own settings."""

    def __init__(self, total: int, quiet: bool, params: dict[str, Any]):
        from tqdm.auto import tqdm

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


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Ctrl-C waits until the block is done, then stops the command as usual (KeyboardInterrupt). Around the
    study's writes: a KeyboardInterrupt inside them leaves Optuna's bookkeeping half done (a trial neither
    failed nor complete, or Optuna's own UnboundLocalError). Signal handlers belong to the main thread; in
    any other thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def run_trial(study: Any, objective: Callable[[Any], float]) -> Any:
    """One trial through Optuna's ask-and-tell interface, each write with Ctrl-C held back; a trial stopped by
    Ctrl-C or an error is stored as failed (the run's own settings are then queued again: `queue_own`)."""
    from optuna.trial import TrialState

    trial = None
    try:
        with sigint_held():
            trial = study.ask()
        value = objective(trial)
    except BaseException:
        if trial is not None:
            with sigint_held(), contextlib.suppress(Exception):  # the first error is the one to show
                study.tell(trial, state=TrialState.FAIL)
        raise
    with sigint_held():
        study.tell(trial, value)
    return trial


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


def _slots(jobs: int) -> list[Any]:
    """One slot per worker: a GPU each where there are GPUs, else a share of the CPU cores."""
    from dialsum.device import probe
    from dialsum.suite.backends.local import plan_slots

    device = probe()
    if not device.cuda_available and jobs > device.cpu_cores:
        raise DialsumError(f"--jobs {jobs}: this machine has {device.cpu_cores} CPU cores; use at most "
                           f"{device.cpu_cores}")
    pool = plan_slots(None, None if device.cuda_available else jobs, device.cpu_cores)
    if pool.total < jobs:
        raise DialsumError(f"--jobs {jobs}: this machine has {pool.total} GPU(s); use at most {pool.total}")
    return [pool.take(1) for _ in range(jobs)]


def _run_workers(opts: TuneOptions, study: Any, slots: list[Any], mine: dict[str, Any]) -> None:
    """`--jobs N`: N worker processes, each on its slot, add their share of the trials to the same study. They
    die with this process and run in sessions of their own, so a Ctrl-C reaches them from here (lifeline)."""
    import signal
    import time

    from dialsum.lifeline import signal_group, start_child

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


def finish(study: Any, scorer: Scorer, space: dict[str, list[Any]], split: DevSplit, run_dir: Path) -> dict[str, Any]:
    """Choose the best trial by its score on the search part, score it and the run's own settings on the
    held-out rows, recommend the better of the two there (the run's own on a tie), and write the files."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    mine = own_params(scorer.cfg, space)
    own_t = own_trial(study, mine)
    if own_t is None:
        raise DialsumError("tune: the run's own settings have no finished trial yet; run dialsum tune again")
    chosen = max(done, key=lambda t: (t.value, t.params == mine))  # a tie goes to the run's own settings
    own_score, own_preds = scorer.evaluate(mine, split.heldout)
    tuned_score, tuned_preds = ((own_score, own_preds) if chosen.params == mine else
                                scorer.evaluate(dict(chosen.params), split.heldout))
    better = tuned_score > own_score
    params, preds = (dict(chosen.params), tuned_preds) if better else (mine, own_preds)
    result = {
        "trials": len(done), "dev_rows": len(scorer.dev), "split_seed": SPLIT_SEED,
        "search": {"rows": len(split.search), "trials": len(done), "own": own_t.value, "chosen": chosen.value,
                   "chosen_trial": chosen.number, "chosen_is_own": chosen.params == mine,
                   "chosen_params": dict(chosen.params)},
        "heldout": {"rows": len(split.heldout), "own": own_score, "tuned": tuned_score},
        "recommended": "tuned" if better else "own", "best_params": params,
    }
    _write(study, scorer, apply(scorer.cfg, params), split, preds, run_dir, done)
    atomic_write_json(run_dir / "tune" / "result.json", result)
    return result


def _write(study: Any, scorer: Scorer, tuned: ExperimentConfig, split: DevSplit, preds: list[str], run_dir: Path,
           done: list[Any]) -> None:
    """The recommendation's files: held-out dev predictions, best.yaml, the test submission; trials and plots."""
    out = run_dir / "tune"
    held = scorer.dev.iloc[split.heldout]
    atomic_write_rows(out / "dev_predictions.csv", ["fname", "summary", "reference"],
                      zip(held["fname"], preds, held["summary"], strict=True))
    _write_best(out / "best.yaml", tuned, scorer.family)
    _write_trials(out / "trials.csv", done)
    _plots(study, out)
    test = data.read_split(Path(tuned.data.dir) / tuned.data.test_file, with_summary=False)
    generation.write_submission(run_dir / "submission_tuned.csv", list(test["fname"]),
                                scorer.summaries(tuned, list(test["dialogue"])))


def describe(result: dict[str, Any]) -> str:
    """The result in one line: what the search chose, and both settings on the held-out rows."""
    search, held = result["search"], result["heldout"]
    verdict = ("best.yaml holds the tuned settings" if result["recommended"] == "tuned" else
               "the tuned settings do not beat the run's own there, so best.yaml keeps the run's own")
    chosen = "the run's own settings" if search["chosen_is_own"] else f"trial {search['chosen_trial']}"
    return (f"{search['trials']} trials on {search['rows']} search rows chose {chosen} ({search['chosen']:.2f} "
            f"there, the run's own {search['own']:.2f}); on the {held['rows']} held-out rows the run's own "
            f"settings score {held['own']:.2f}, the tuned ones {held['tuned']:.2f}: {verdict}")


def _write_best(path: Path, cfg: ExperimentConfig, family: str) -> None:
    sections: dict[str, Any] = {"generation": cfg.generation.model_dump(mode="json")}
    if family == "causal":
        sections["prompt"] = {"instruction": cfg.prompt.instruction}
    header = "# The tuned generation settings: dialsum predict RUN_DIR --input test.csv --generation tune/best.yaml\n"
    atomic_write_text(path, header + yaml.safe_dump(sections, allow_unicode=True, sort_keys=False))


def _write_trials(path: Path, trials: list[Any]) -> None:
    names = sorted({k for t in trials for k in t.params})
    rows = ([t.number, round(t.value, 4), *(t.params.get(k) for k in names)] for t in trials)
    atomic_write_rows(path, ["trial", "dev_final", *names], rows)


def _plots(study: Any, out: Path) -> None:
    """Optuna's matplotlib plots; importances need two or more finished trials that differ."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ovm

    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # the plots are marked experimental
    for name, plot in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances)):
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as err:  # too few distinct trials for importances
            print(f"tune: no {name} plot ({str(err).splitlines()[0][:120]})", file=sys.stderr)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=110)
        plt.close(figure)


def with_generation(cfg: ExperimentConfig, path: str | Path) -> ExperimentConfig:
    """The run's config with a tuned `generation` (and `prompt`) section from `path` (`tune/best.yaml`)."""
    path = Path(path)
    delta = config.read_yaml_mapping(path, "generation", "a mapping with a generation section")
    unknown = sorted(set(delta) - {"generation", "prompt"})
    if unknown:
        raise DialsumError(f"{path}: {unknown[0]}: only generation and prompt sections are read from here")
    return config.validate_dict(config.deep_merge(cfg.model_dump(mode="json"), delta), path)
