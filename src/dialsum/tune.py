"""Generation tuning on a finished run: an Optuna study over beams, penalties, lengths (and, for causal
LMs, the prompt's instruction and the trim of an unfinished sentence), scored with the competition ROUGE.

    dialsum tune runs/kobart_baseline/<time> --trials 20 --dev-rows 100
    dialsum tune runs/kobart_baseline/<time> --trials 20          # again: the same study continues
    dialsum predict runs/kobart_baseline/<time> --input test.csv --generation tune/best.yaml

The study (TPE, seeded by the run's seed) lives in `RUN_DIR/tune/study.db` (SQLite), so finished trials
survive Ctrl-C and a later `dialsum tune` adds to them. Trial 0 is the run's own settings. Trials are
scored on a fixed, seeded subset of dev (`--dev-rows`); the best few, and the run's own settings, are
then scored on all of dev and the winner is chosen there, so the result is never worse than the run's
own settings on dev. Written to `RUN_DIR/tune/`: `best.yaml` (the generation section, and the prompt's
instruction for causal LMs), `trials.csv`, `result.json`, `dev_predictions.csv` (the winner's),
`optimization_history.png`, `param_importances.png`; and `RUN_DIR/submission_tuned.csv`, test
summarized with the winner.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dialsum import config, data, generation, prompt
from dialsum.config import ExperimentConfig
from dialsum.csvio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.errors import DialsumError
from dialsum.pause import pause

log = logging.getLogger("dialsum")
STUDY_NAME = "generation"
RESCORED = 3  # the best trials on the subset that are scored again on all of dev
CAUSAL_ONLY = ("instruction", "trim_unfinished")
RANGES = ("length_penalty", "repetition_penalty")


@dataclass
class TuneOptions:
    run_dir: Path
    trials: int = 20
    timeout_minutes: float | None = None
    dev_rows: int | None = None  # None: all of dev
    jobs: int = 1  # worker processes, one per GPU (or a share of the CPU)
    worker: int = 0  # >0: one of --jobs' workers (no files, no bar); set by the parent


def check_options(opts: TuneOptions) -> None:
    if opts.trials < 1:
        raise DialsumError(f"--trials {opts.trials}: must be at least 1")
    if opts.timeout_minutes is not None and opts.timeout_minutes <= 0:
        raise DialsumError(f"--timeout {opts.timeout_minutes:g}: minutes, more than 0")
    if opts.jobs < 1:
        raise DialsumError(f"--jobs {opts.jobs}: must be at least 1")
    if opts.dev_rows is not None and opts.dev_rows < 1:
        raise DialsumError(f"--dev-rows {opts.dev_rows}: must be at least 1; leave it out to use all of dev")


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
    """Trial 0: the run's settings, each added to its choices (Optuna only enqueues values in the space)."""
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


def dev_subset(n_dev: int, rows: int | None, seed: int) -> list[int]:
    """A fixed, seeded subset of dev row positions (all of dev when `rows` is None or not smaller)."""
    if rows is None or rows >= n_dev:
        return list(range(n_dev))
    return sorted(random.Random(seed).sample(range(n_dev), rows))


# ---------------------------------------------------------------- the command


def tune_run(opts: TuneOptions) -> dict[str, Any]:
    import optuna

    check_options(opts)
    run_dir = Path(opts.run_dir)
    cfg, family = finished_run(run_dir)
    space = search_space(cfg, family == "causal")
    dev = data.read_split(Path(cfg.data.dir) / cfg.data.dev_file, with_summary=True)
    if cfg.data.max_eval_samples:
        dev = dev.head(cfg.data.max_eval_samples)
    subset = dev_subset(len(dev), opts.dev_rows, cfg.experiment.seed)
    slots = _slots(opts.jobs) if opts.jobs > 1 else None  # checked before anything is written
    from dialsum.recipe import load_run_model, quiet_libraries

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" warning repeats a Ctrl-C
    # A Ctrl-C inside a database call leaves SQLAlchemy a connection to roll back when it is collected, and it
    # logs that with a traceback; SQLite has already rolled the unfinished transaction back, so it says nothing.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    out = run_dir / "tune"
    out.mkdir(exist_ok=True)
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=STUDY_NAME, direction="maximize",
                                load_if_exists=True)
    # seeded, and by the trials so far (and the worker): a continued study samples new settings
    study.sampler = optuna.samplers.TPESampler(seed=cfg.experiment.seed + len(study.trials) + 1000 * opts.worker)
    _check_same_subset(study, subset, space)
    if not study.trials and not opts.worker:
        study.enqueue_trial(own_params(cfg, space))
    if slots is not None:  # the workers run the trials; this process loads the model afterwards, to finish
        _run_workers(opts, study, slots)
    tokenizer, model, _ = load_run_model(run_dir, cfg)
    scorer = Scorer(cfg, tokenizer, model, family, dev.reset_index(drop=True))
    if slots is None:
        _optimize(study, scorer, space, subset, opts)
    if opts.worker:
        return {}
    return finish(study, scorer, space, out, run_dir, _own_value(study))


def _check_same_subset(study: Any, subset: list[int], space: dict[str, list[Any]]) -> None:
    """A continued study must score on the same rows and space, or its trials do not compare."""
    stored = study.user_attrs.get("subset")
    if stored is None:
        study.set_user_attr("subset", subset)
        study.set_user_attr("space", {k: [str(v) for v in vals] for k, vals in space.items()})
    elif stored != subset:
        raise DialsumError(f"--dev-rows: tune/study.db scored its trials on {len(stored)} dev rows, this run would use "
                           f"{len(subset)}; give the same --dev-rows, or delete tune/study.db to start over")
    elif study.user_attrs.get("space") != {k: [str(v) for v in vals] for k, vals in space.items()}:
        raise DialsumError("tune: the config's tune section changed since tune/study.db started; restore it, or "
                           "delete tune/study.db to start over")


class _Bar:
    """The progress bar: trials done, the best score so far, and the score of the run's own settings."""

    def __init__(self, total: int, quiet: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="tune", dynamic_ncols=True, disable=quiet)

    def show(self, study: Any, done: int) -> None:
        values = [t.value for t in study.trials if t.value is not None]
        own = _own_value(study)
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix({"trials": len(values), "best": f"{max(values, default=math.nan):.2f}",
                              "own settings": f"{own if own is not None else math.nan:.2f}"})

    def close(self) -> None:
        self.bar.close()


def _interrupted(study: Any) -> KeyboardInterrupt:
    done = sum(t.value is not None for t in study.trials)
    print(f"tune: interrupted; {done} finished trial(s) are kept in tune/study.db, and dialsum tune continues "
          "the study", file=sys.stderr)
    return KeyboardInterrupt()


def _optimize(study: Any, scorer: Scorer, space: dict[str, list[Any]], subset: list[int], opts: TuneOptions) -> None:
    """Run the trials in this process; Ctrl-C keeps every finished trial in the study (SQLite)."""
    bar = _Bar(opts.trials, quiet=opts.worker > 0)
    counted = {"done": 0}

    def objective(trial: Any) -> float:
        return scorer.score(suggest(trial, space, scorer.cfg), subset)

    def report(study_: Any, trial: Any) -> None:
        pause("tuning", scorer.cfg.experiment.name)  # the chaos benchmark's kill point (dialsum.pause)
        counted["done"] += 1
        bar.show(study_, counted["done"])

    try:
        study.optimize(objective, n_trials=opts.trials, timeout=opts.timeout_minutes and opts.timeout_minutes * 60,
                       callbacks=[report], catch=())
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


def _run_workers(opts: TuneOptions, study: Any, slots: list[Any]) -> None:
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
    bar = _Bar(opts.trials, quiet=False)
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


def _own_value(study: Any) -> float | None:
    return study.trials[0].value if study.trials else None


def finish(study: Any, scorer: Scorer, space: dict[str, list[Any]], out: Path, run_dir: Path,
           own_subset: float | None) -> dict[str, Any]:
    """Score the best trials and the run's own settings on all of dev, keep the winner, write the files."""
    done = [t for t in study.trials if t.value is not None]
    own = own_params(scorer.cfg, space)
    top: list[Any] = []
    for t in sorted(done, key=lambda t: -t.value):  # the best distinct settings other than the run's own
        if len(top) < RESCORED and t.params != own and all(t.params != o.params for o in top):
            top.append(t)
    everything = list(range(len(scorer.dev)))
    rescored = [(*scorer.evaluate(own, everything), "own", own)]
    rescored += [(*scorer.evaluate(t.params, everything), f"trial {t.number}", dict(t.params)) for t in top]
    best_score, best_preds, best_name, best_params = max(rescored, key=lambda r: r[0])
    tuned = apply(scorer.cfg, best_params)
    atomic_write_rows(out / "dev_predictions.csv", ["fname", "summary", "reference"],
                      zip(scorer.dev["fname"], best_preds, scorer.dev["summary"], strict=True))
    _write_best(out / "best.yaml", tuned, scorer.family)
    _write_trials(out / "trials.csv", done)
    _plots(study, out)
    test = data.read_split(Path(tuned.data.dir) / tuned.data.test_file, with_summary=False)
    generation.write_submission(run_dir / "submission_tuned.csv", list(test["fname"]),
                                scorer.summaries(tuned, list(test["dialogue"])))
    result = {"trials": len(done), "dev_rows_tuned": len(study.user_attrs["subset"]), "dev_rows": len(everything),
              "own_score_subset": own_subset, "own_score": rescored[0][0], "best_score": best_score,
              "best": best_name, "best_params": best_params,
              "rescored": [{"name": n, "score": s} for s, _, n, _ in rescored]}
    atomic_write_json(out / "result.json", result)
    return result


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
