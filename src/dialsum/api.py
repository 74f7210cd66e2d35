"""dialsum from Python, for a notebook or a script: the functions the commands call, with the same errors.

    import dialsum
    help(dialsum.train)
    pytest tests/test_api.py tests/test_notebook.py

`dialsum validate` calls `validate` here, and `dialsum train` calls `load_config`, `check_training` and
`run_training`; `predict`, `tune_run`, `ensemble_runs`, `run_suite`, `run_sweep`, `compare` and `make_sample` call what
their commands call; `score` scores lists as `dialsum score` scores files; `results` reads a suite's results
as its report does. Bad input raises the `DialsumError` whose message the command prints. Progress shows as in
a terminal: training and tuning draw tqdm.auto bars (widgets in Jupyter where ipywidgets is installed), a
suite prints a line per event.

Each function imports what it calls in its own body, so that `import dialsum` loads no torch, transformers or
pandas. Tuning, ensembling and sweeping are `tune_run`, `ensemble_runs` and `run_sweep`: `dialsum.tune`,
`dialsum.ensemble` and `dialsum.sweep` are the package's modules, and importing a module sets its name on the
package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from dialsum.config import RunOptions
    from dialsum.metrics import Scores
    from dialsum.runfiles import EnsembleResult, RunMetrics, SweepResult, TuneResult
    from dialsum.sections import ExperimentConfig
    from dialsum.tune import TuneOptions

Overrides = Sequence[str] | Mapping[str, Any]
PathLike = str | Path


@dataclass(frozen=True)
class Run:
    """A finished run of `train`: its directory, dev score and submission.

    Attributes:
        dir: the run directory (config.yaml, metrics.json, dev_predictions.csv, submission.csv, model/).
        metrics: what metrics.json holds, typed (`dialsum.runfiles.RunMetrics`).
        tuned: the result of tuning its generation (`tune_run`, or `train(..., tune_trials=N)`), if tuned.
    """

    dir: Path
    metrics: RunMetrics
    tuned: TuneResult | None = None

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.metrics.experiment or self.dir.name

    @property
    def dev_score(self) -> float | None:
        """The dev score: morpheme final (mean of ROUGE-1, -2 and -L F1, x 100), the leaderboard's number."""
        return self.metrics.dev_final

    @property
    def submission(self) -> Path | None:
        """The test submission (fname,summary), if one was written."""
        return self.dir / self.metrics.submission if self.metrics.submission else None

    def dev_predictions(self) -> pd.DataFrame:
        """Its dev summaries beside their references, with each one's morpheme final score (an empty summary is
        an empty string)."""
        # pandas takes a second to import: only when asked
        from dialsum.csvio import read_table

        table = read_table(self.dir / "dev_predictions.csv", ["fname", "summary", "reference"], what="dev predictions")
        if "final_morpheme" in table.columns:
            table["final_morpheme"] = table["final_morpheme"].astype(float)
        return table

    def __repr__(self) -> str:
        score = f"{self.dev_score:.2f}" if self.dev_score is not None else "none"
        return f"Run({self.name!r}, dev_score={score}, dir={str(self.dir)!r})"


@dataclass(frozen=True)
class SuiteRun:
    """A suite's directory and the exit code `dialsum suite` would end with (0: every experiment finished;
    1: one failed; 130: interrupted)."""

    dir: Path
    exit_code: int

    @property
    def report(self) -> Path:
        """The comparison report (report.html; report.md beside it)."""
        return self.dir / "report.html"

    @property
    def dialogues(self) -> Path:
        """The per-dialogue page: every dev dialogue with each run's summary and score."""
        return self.dir / "dialogues.html"

    def results(self) -> pd.DataFrame:
        """`results(self.dir)`: one row per experiment."""
        return results(self.dir)


@dataclass(frozen=True)
class SweepRun:
    """A sweep's directory, the exit code `dialsum sweep` would end with (0: done; 1: no trial finished; 130:
    interrupted, continue with `resume=True`) and its result (None unless it finished)."""

    dir: Path
    exit_code: int
    result: SweepResult | None

    @property
    def best_config(self) -> Path | None:
        """best.yaml: the experiment config with the recommended settings (train it, or list it in a suite)."""
        return self.dir / "best.yaml" if self.result is not None else None

    @property
    def report(self) -> Path:
        """The sweep's report (report.html; report.md, trials.csv and the plots beside it)."""
        return self.dir / "report.html"


def set_options(overrides: Overrides = ()) -> list[str]:
    """`--set` strings from a list of them (`["training.learning_rate=1e-4"]`) or a mapping
    (`{"training.learning_rate": 1e-4}`, each value written as YAML reads it)."""
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value, ensure_ascii=False, default=str)}" for key, value in overrides.items()]
    return [str(item) for item in overrides]


def load_config(config: PathLike, overrides: Overrides = (), *, data: PathLike | None = None) -> ExperimentConfig:
    """Read an experiment YAML (with its `inherit` chain), apply overrides, and validate it.

    Args:
        config: an experiment YAML, such as `configs/experiments/01_baseline_kobart_rtx3090.yaml`.
        overrides: `--set`-style changes: `["training.learning_rate=1e-4"]` or `{"training.learning_rate": 1e-4}`.
        data: a folder with train.csv, dev.csv and test.csv (`--data`; the config's `data.dir` otherwise).

    Returns:
        The validated config (`dialsum.sections.ExperimentConfig`, a pydantic model).

    Raises:
        DialsumError: a missing file, a YAML error, an unknown key or a bad value, every problem named.
    """
    # dialsum's modules load pydantic, torch and pandas: only when called
    from dialsum import config as configs

    data_set = [f"data.dir={data}"] if data is not None else []
    return configs.load(config, set_options(overrides) + data_set)


@dataclass(frozen=True)
class Validation:
    """What `dialsum validate` prints for one config: whether it can run here, and its plan."""

    config: str
    ok: bool
    text: str

    def __str__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython shows the plan as the CLI prints it
        printer.text(self.text)


def validate(config: PathLike, overrides: Overrides = (), *, init: str | None = None) -> Validation:
    """Resolve a config against its architecture, this machine and transformers, without training.

    Args:
        config: an experiment YAML.
        overrides: `--set`-style changes (see `load_config`).
        init: `pretrained`, `random` or `tiny` (`--init`; the config's `model.init` otherwise).

    Returns:
        A `Validation`: `ok`, and `text`, the plan `dialsum validate` prints (or why the config cannot run).
    """
    # dialsum's modules load torch and pandas: only when called
    from dialsum.config import check_init
    from dialsum.device import probe
    from dialsum.errors import DialsumError
    from dialsum.logs import quiet_libraries
    from dialsum.validation import describe_plan, validation_plan

    check_init(init)
    quiet_libraries()
    try:
        plan = validation_plan(load_config(config, overrides), init, probe())
    except DialsumError as err:
        return Validation(str(config), False, f"{config}: CANNOT RUN\n  error        {err}")
    return Validation(str(config), plan.ok, describe_plan(str(config), plan))


def check_training(cfg: ExperimentConfig, opts: RunOptions, tune_trials: int | None,
                   tune_dev_rows: int | None) -> TuneOptions | None:
    """`train`'s options, checked before anything starts; the tuning to run after training, if asked."""
    # dialsum's modules load torch and pandas: only when called
    from dialsum import tune
    from dialsum.config import check_options
    from dialsum.errors import DialsumError
    from dialsum.tune_space import check_split_before_training

    check_options(opts)
    if tune_trials is None:
        return None
    if not opts.submission:
        raise DialsumError("--no-submission with --tune: tuning writes the tuned test submission "
                           "(submission_tuned.csv); drop one of the two")
    tuning = tune.TuneOptions(Path("."), tune_trials, None, tune_dev_rows)
    tune.check_options(tuning, "--tune", "--tune-dev-rows")
    check_split_before_training(cfg, tune_dev_rows)
    return tuning


def run_training(cfg: ExperimentConfig, opts: RunOptions, tuning: TuneOptions | None) -> Run:
    """Train (every DDP rank), then tune on the main process where asked; the run."""
    # dialsum's modules load torch and pandas: only when called
    from dialsum import distributed
    from dialsum.recipe import run_experiment, target_dir
    from dialsum.runfiles import RunMetrics
    from dialsum.tune import tune_run

    if opts.run_dir is None:
        opts.run_dir = target_dir(cfg, opts)  # named here, so that the run (and tune) know where it is
    metrics = RunMetrics.model_validate(run_experiment(cfg, opts))
    tuned = None
    if tuning is not None and distributed.is_main():
        tuning.run_dir = opts.run_dir
        tuned = tune_run(tuning)
    return Run(opts.run_dir, metrics, tuned)


def train(config: PathLike, overrides: Overrides = (), *, data: PathLike | None = None, init: str | None = None,
          run_dir: PathLike | None = None, max_steps: int | None = None, one_epoch: bool = False,
          resume: bool = False, submission: bool = True, tune_trials: int | None = None,
          tune_dev_rows: int | None = None) -> Run:
    """Train one experiment, score it on dev and write its submission: `dialsum train`, in this process.

    Args:
        config: an experiment YAML.
        overrides: `--set`-style changes (see `load_config`).
        data: a folder with train.csv, dev.csv and test.csv (`--data`).
        init: `pretrained`, `random` or `tiny` (`--init`).
        run_dir: where to write the run (`--run-dir`; default `runs/<experiment>/<time>`).
        max_steps: stop after this many optimizer steps (`--max-steps`).
        one_epoch: train a single epoch (`--one-epoch`).
        resume: continue `run_dir` from its last checkpoint (`--resume`).
        submission: False scores dev but writes no test submission (`--no-submission`).
        tune_trials: then tune its generation with this many trials (`--tune`).
        tune_dev_rows: dev rows the tuning searches on (`--tune-dev-rows`; default half).

    Returns:
        The finished `Run`: `run.dev_score`, `run.submission`, `run.dir`, `run.metrics`, `run.tuned`.

    Raises:
        DialsumError: bad config, data or options, before anything is written (the message `dialsum train`
            prints). Several GPUs for one experiment (DDP) need the command: `dialsum train CONFIG --nproc N`.
    """
    # dialsum's modules load torch and pandas: only when called
    from dialsum.config import RunOptions

    cfg = load_config(config, overrides, data=data)
    opts = RunOptions(init, Path(run_dir) if run_dir is not None else None, max_steps, one_epoch, resume, submission)
    return run_training(cfg, opts, check_training(cfg, opts, tune_trials, tune_dev_rows))


def open_run(run_dir: PathLike) -> Run:
    """A finished run directory (written by `train`, `dialsum train` or a suite) as a `Run`."""
    # dialsum's modules load torch and pandas: only when called
    from dialsum import finished_run, runfiles

    run = finished_run.open_run(run_dir)
    tuned = run.tune_result() if (run.dir / runfiles.TUNE_RESULT).is_file() else None
    return Run(run.dir, run.metrics, tuned)


def _run_dir(run: Run | PathLike) -> Path:
    return run.dir if isinstance(run, Run) else Path(run)


def predict(run: Run | PathLike, input_csv: PathLike, out: PathLike | None = None, *,
            generation: PathLike | None = None) -> Path:
    """Summarize a CSV (fname,dialogue) with a finished run: `dialsum predict`.

    Args:
        run: a `Run` or its directory.
        input_csv: the dialogues to summarize, such as test.csv.
        out: the submission to write (default `RUN_DIR/predictions.csv`).
        generation: generation settings instead of the run's own, such as `tune/best.yaml`.

    Returns:
        The path of the written submission (fname,summary).
    """
    # dialsum's modules load torch and pandas: only when called
    from dialsum.finished_run import predict_file

    return predict_file(_run_dir(run), input_csv, out, generation)


def score(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
          tokenize: str = "morpheme") -> Scores:
    """Score summaries with the competition's ROUGE, as `dialsum score` scores a file.

    Args:
        predictions: one summary per dialogue.
        references: one reference per dialogue, or a list of references per dialogue.
        tokenize: `morpheme` (Kiwi, the leaderboard's) or `whitespace` (the rouge==1.0.1 package's).

    Returns:
        `Scores`: `final` (mean of R1, R2 and RL F1, x 100), `rouge1`, `rouge2`, `rougeL` (0..1), and
        `per_dialogue_rows()`.
    """
    # dialsum's modules load torch and pandas: only when called
    from dialsum.errors import DialsumError
    from dialsum.metrics import score as competition_score

    try:
        return competition_score(predictions, references, tokenize)
    except ValueError as err:
        raise DialsumError(str(err)) from None


def tune_run(run: Run | PathLike, trials: int = 20, *, dev_rows: int | None = None, timeout: float | None = None,
         jobs: int = 1) -> TuneResult:
    """Tune a finished run's generation settings on dev (Optuna): `dialsum tune`.

    The search scores trials on `dev_rows` dev rows (default half); the choice and the run's own settings are
    then scored on the rest, and those held-out scores are what the result reports.

    Args:
        run: a `Run` or its directory.
        trials: trials to add to the study (`--trials`).
        dev_rows: dev rows to search on (`--dev-rows`).
        timeout: stop starting trials after this many minutes (`--timeout`).
        jobs: trials in parallel processes (`--jobs`).

    Returns:
        The `TuneResult` (`tune/result.json`): `heldout.own`, `heldout.tuned`, `recommended`, `describe()`.
    """
    # dialsum's modules load torch and pandas: only when called
    from dialsum.tune import TuneOptions
    from dialsum.tune import tune_run as tune

    result = tune(TuneOptions(_run_dir(run), trials, timeout, dev_rows, jobs))
    assert result is not None  # None only in a --jobs worker process
    return result


def ensemble_runs(runs: Sequence[Run | PathLike], out: PathLike, *, candidates: int = 1, weighted: bool = False,
             tuned: bool = False) -> EnsembleResult:
    """A minimum-Bayes-risk ensemble of finished runs: `dialsum ensemble`.

    Args:
        runs: two or more `Run`s or run directories, each once.
        out: the folder for its submission.csv, dev_predictions.csv and ensemble.json.
        candidates: candidates per run and dialogue (1: each run's own outputs; K: its K best beams).
        weighted: weight each run's candidates by its dev score (cross-fitted on dev).
        tuned: use each run's tuned outputs (scored on the dev rows every tuning held out).

    Returns:
        The `EnsembleResult` (`ensemble.json`): `dev_final`, `members`, `weights`.
    """
    # dialsum's modules load torch: only when called
    from dialsum.ensemble import EnsembleOptions
    from dialsum.ensemble import ensemble_runs as ensemble

    return ensemble(EnsembleOptions([_run_dir(r) for r in runs], Path(out), candidates, weighted, tuned))


def run_suite(suite: PathLike, out: PathLike, overrides: Overrides = (), *, data: PathLike | None = None,
              init: str | None = None, one_epoch: bool | None = None, max_steps: int | None = None,
              only: Sequence[str] = (), skip: Sequence[str] = (), resume: bool = False, restart: Sequence[str] = (),
              slots: int | None = None, gpus: str | None = None, backend: str = "local",
              address: str | None = None) -> SuiteRun:
    """Run a suite of experiments, each in its own `dialsum train` process: `dialsum suite`.

    Args:
        suite: a suite YAML, such as `configs/suites/main5.yaml`.
        overrides: `--set`-style changes for every experiment (see `load_config`).
        out: the suite directory (`--out`): its state, each experiment's run, the report.
        data, init, one_epoch, max_steps: as for `train`, for every experiment.
        only, skip: experiment names to run, or to leave out.
        resume: skip finished experiments and continue killed ones; `restart` names ones to start afresh.
        slots, gpus, backend, address: where experiments run (`--slots`, `--gpus`, `--backend`, `--address`).

    Returns:
        A `SuiteRun`: its `dir`, `exit_code`, `report`, `dialogues` page and `results()`.
    """
    # the suite's modules load pandas: only when called
    from dialsum.suite.opening import SuiteOptions
    from dialsum.suite.runner import run_suite as run

    opts = SuiteOptions(str(suite), init, one_epoch, max_steps, resume, list(only), list(skip), str(out),
                        set_options(overrides), str(data) if data is not None else None, gpus, slots, backend,
                        address, live=False, restart=list(restart))
    return SuiteRun(Path(out), run(opts))


def run_sweep(config: PathLike, trials: int | None = None, overrides: Overrides = (), *, out: PathLike | None = None,
              data: PathLike | None = None, init: str | None = None, max_steps: int | None = None,
              one_epoch: bool = False, pruner: str | None = None, timeout: float | None = None, resume: bool = False,
              storage: str | None = None, keep_checkpoints: bool = False, dev_rows: int | None = None,
              slots: int | None = None, gpus: str | None = None, backend: str = "local",
              address: str | None = None) -> SweepRun:
    """Search a config's training settings (Optuna), each trial a `dialsum train` process: `dialsum sweep`.

    Args:
        config: an experiment YAML; its `sweep` section is the search space.
        trials: trials in all, trial 0 the config's own settings (with `resume`: default the stored count).
        overrides: `--set`-style changes (see `load_config`).
        out: the sweep folder (`--out`; default runs/sweeps/<experiment name>).
        data, init, max_steps, one_epoch: as for `train`, for every trial.
        pruner: median (default), hyperband or none. timeout: stop starting trials after this many minutes.
        resume: continue the sweep in `out`. storage: a journal file or database URL for the study.
        keep_checkpoints: keep every trial's checkpoints. dev_rows: dev rows the trials are scored on.
        slots, gpus, backend, address: where trials run (`--slots`, `--gpus`, `--backend`, `--address`).

    Returns:
        A `SweepRun`: its `dir`, `exit_code`, `result` (`result.json`: `heldout`, `verdict`), `best_config`.
    """
    # the sweep's modules load optuna and pandas: only when called
    from dialsum import runfiles
    from dialsum.sweep.command import run_sweep as sweep
    from dialsum.sweep.options import SweepOptions, default_out

    opts = SweepOptions(str(config), trials, init, max_steps, one_epoch, str(data) if data is not None else None,
                        str(out) if out is not None else None, set_options(overrides), pruner, timeout, resume,
                        storage, keep_checkpoints, dev_rows, gpus, slots, backend, address)
    code = sweep(opts)
    folder = Path(opts.out) if opts.out else default_out(load_config(config, overrides, data=data))
    found, _ = runfiles.load(folder / runfiles.SWEEP_RESULT, runfiles.SweepResult)
    return SweepRun(folder, code, found if code == 0 else None)


def results(suite_dir: PathLike) -> pd.DataFrame:
    """A suite's results, one row per experiment, as its report computes them (`results.csv`'s columns:
    scores, tuned scores, setup, time, memory, run directory).

    Raises:
        DialsumError: no suite state in `suite_dir`, or a run file that cannot be read.
    """
    # pandas takes a second to import: only when called
    import pandas as pd

    from dialsum.report.build import result_rows
    from dialsum.report.results import RESULT_COLUMNS

    return pd.DataFrame(result_rows(suite_dir), columns=RESULT_COLUMNS)


def compare(runs: Sequence[Run | PathLike], out: PathLike) -> Path:
    """The per-dialogue page for runs (and ensemble folders) scored on the same dev file: `dialsum compare`.

    Returns:
        The path of `OUT/dialogues.html`.
    """
    # loads pandas: only when called
    from dialsum.report.dialogue_sources import compare_runs

    return compare_runs([_run_dir(r) for r in runs], Path(out))


def make_sample(out: PathLike, *, seed: int | None = None, train: int | None = None, dev: int | None = None,
                test: int | None = None, force: bool = False) -> Path:
    """Write synthetic Korean dialogues in the competition format (train, dev, test, test_gold CSV) to `out`:
    `dialsum make-sample`. Existing CSV files are kept unless `force`."""
    # the generator's word lists: only when called
    from dialsum.samplegen import make_sample as write

    for line in write(str(out), seed=seed, train=train, dev=dev, test=test, force=force):
        print(line)
    return Path(out)
