"""The `dialsum` command line. Each command is a few lines that call the modules.

    dialsum --help

Every command imports what it calls inside its own body: `dialsum --help` and a command that fails on its
options start in a fraction of a second, without torch, transformers or pandas.
"""

from __future__ import annotations

import sys

import typer
from typer._click.exceptions import ClickException  # typer bundles its own click

from dialsum.errors import DialsumError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Fine-tune, evaluate and compare seq2seq models for Korean dialogue summarization.",
)


@app.command()
def report(suite_dir: str = typer.Argument(..., help="Suite directory holding suite_state.json.")) -> None:
    """Rewrite a suite's comparison report (tables, recommendations, plots) from its state file."""
    from dialsum.report.build import report_suite_dir

    paths = report_suite_dir(suite_dir)
    typer.echo(f"report: {paths['report_md']} ({len(paths)} files written)")


@app.command()
def score(
    pred: str = typer.Option(..., "--pred", help="Prediction CSV: fname,summary."),
    gold: str = typer.Option(..., "--gold", help="Gold CSV: fname,...,summary or fname,summary1..summaryN."),
    tokenize: str = typer.Option("morpheme", help="morpheme (the leaderboard's) or whitespace (rouge==1.0.1)."),
    json_out: str | None = typer.Option(None, "--json", help="Also write the scores to this JSON file."),
    rows: str | None = typer.Option(None, "--rows", help="Also write per-dialogue scores to this CSV."),
) -> None:
    """Score predictions with the competition ROUGE (R1, R2, RL F1; final = mean * 100), as submitted."""
    from dialsum.metrics import format_scores, score_files, special_token_warning
    from dialsum.paths import check_file

    for path, option in ((json_out, "--json"), (rows, "--rows")):
        if path:
            check_file(path, option)
    result = score_files(pred, gold, tokenize, json_out, rows)
    warning = special_token_warning(result, pred)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(format_scores(result))
    for path in (json_out, rows):
        if path:
            typer.echo(f"wrote {path}")

Init = typer.Option(
    None, "--init", help="pretrained (hub id or local dir), random, or tiny (default: the config's model.init)."
)
Sets = typer.Option([], "--set", help="Override a config key: section.key=value (repeatable).")
Data = typer.Option(None, "--data", help="Directory with train.csv, dev.csv, test.csv (overrides data.dir).")


@app.command()
def validate(
    configs: list[str] = typer.Argument(..., help="Experiment YAML files."),
    init: str | None = Init,
    sets: list[str] = Sets,
) -> None:
    """Resolve configs against their architecture, this machine and transformers, without training."""
    from dialsum.api import validate as check

    failed = 0
    for path in configs:
        result = check(path, sets, init=init)
        typer.echo(result.text)
        failed += not result.ok
    raise typer.Exit(2 if failed else 0)


@app.command()
def train(
    config_path: str = typer.Argument(..., metavar="CONFIG", help="Experiment YAML file."),
    init: str | None = Init,
    sets: list[str] = Sets,
    data_dir: str | None = Data,
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    one_epoch: bool = typer.Option(False, "--one-epoch", help="Train a single epoch (quick mode)."),
    run_dir: str | None = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>/<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --run-dir from its last checkpoint."),
    no_submission: bool = typer.Option(False, "--no-submission", help="Score dev, but write no test submission."),
    nproc: int = typer.Option(1, "--nproc", help="Processes for one experiment (DDP through torchrun: one per "
                              "GPU, or gloo on the CPU); 1 is a plain process."),
    tune_trials: int | None = typer.Option(None, "--tune", help="Then tune its generation: this many trials "
                                           "(as dialsum tune RUN_DIR --trials N)."),
    tune_dev_rows: int | None = typer.Option(None, "--tune-dev-rows", help="With --tune: dev rows to search on "
                                             "(default half; the rest are held out to score the choice)."),
) -> None:
    """Train one experiment, score it on dev and write its submission (then tune its generation, with --tune)."""
    from pathlib import Path

    from dialsum import distributed
    from dialsum.api import check_training, load_config, run_training
    from dialsum.config import RunOptions
    from dialsum.recipe import target_dir

    cfg = load_config(config_path, sets, data=data_dir)
    opts = RunOptions(init, Path(run_dir) if run_dir else None, max_steps, one_epoch, resume, not no_submission)
    tuning = check_training(cfg, opts, tune_trials, tune_dev_rows)  # before any process starts
    if nproc != 1 and not distributed.launched():
        distributed.check_nproc(nproc)
        argv = distributed.without_option(distributed.without_option(sys.argv[1:], "--nproc"), "--run-dir")
        argv += ["--run-dir", str(target_dir(cfg, opts))]  # one directory for every rank, checked here
        raise typer.Exit(distributed.launch(argv, nproc))
    run = run_training(cfg, opts, tuning)
    if distributed.is_main():
        typer.echo(run.metrics.summary())
        if run.tuned is not None:
            typer.echo(f"tune: {run.tuned.describe()}")


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="A finished run directory (from dialsum train)."),
    input_path: str = typer.Option(..., "--input", help="CSV with fname,dialogue."),
    out: str | None = typer.Option(None, "--out", help="Submission path (default RUN_DIR/predictions.csv)."),
    generation: str | None = typer.Option(None, "--generation", help="Generation settings to use instead of the "
                                          "run's: a YAML with a generation section (RUN_DIR/tune/best.yaml)."),
) -> None:
    """Summarize a CSV with a trained run (LoRA adapters included), with its generation settings or tuned ones."""
    from dialsum.finished_run import predict_file

    typer.echo(f"wrote {predict_file(run_dir, input_path, out, generation)}")


@app.command()
def tune(
    run_dir: str = typer.Argument(..., help="A finished run directory (from dialsum train)."),
    trials: int = typer.Option(20, "--trials", help="Trials to add to the study."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop starting trials after this many minutes."),
    dev_rows: int | None = typer.Option(None, "--dev-rows", help="Dev rows to search on (default half of dev); "
                                        "the rest are held out, and the choice is scored there."),
    jobs: int = typer.Option(1, "--jobs", help="Trials in parallel processes: one per GPU, or CPU processes "
                             "sharing the cores."),
    worker: int = typer.Option(0, "--worker", hidden=True, help="Set by --jobs for its worker processes."),
) -> None:
    """Tune generation settings on dev (Optuna); writes tune/best.yaml and submission_tuned.csv."""
    from pathlib import Path

    from dialsum.tune import TuneOptions, tune_run

    result = tune_run(TuneOptions(Path(run_dir), trials, timeout, dev_rows, jobs, worker))
    if result is None:  # a --jobs worker: the parent reports
        return
    typer.echo(f"tune: {result.describe()}; wrote {run_dir}/tune/best.yaml and {run_dir}/submission_tuned.csv")


@app.command()
def ensemble(
    runs: list[str] = typer.Argument(..., help="Two or more finished run directories, each once."),
    out: str = typer.Option(..., "--out", help="Folder for the ensemble's submission and scores."),
    candidates: int = typer.Option(1, "--candidates", help="Candidates per run and dialogue: 1 reads each run's "
                                   "own outputs; K generates its K best beams again. Runs x K: 3 to 128."),
    weighted: bool = typer.Option(False, "--weighted", help="Weight each run's candidates by its dev score "
                                  "(measured on the other half of the dev rows for each dev pick)."),
    tuned: bool = typer.Option(False, "--tuned", help="Use each run's tuned outputs (dialsum tune) instead; "
                               "scored on the dev rows every run's tuning held out."),
) -> None:
    """Minimum-Bayes-risk ensemble: per dialogue, the candidate that agrees most with the others."""
    from pathlib import Path

    from dialsum.ensemble import EnsembleOptions, ensemble_runs

    result = ensemble_runs(EnsembleOptions([Path(r) for r in runs], Path(out), candidates, weighted, tuned))
    for m in result.members:
        typer.echo(f"  {m.name}: dev {m.dev_final:.2f}, picked for {m.dev_picks} dev and {m.test_picks} test dialogues")
    typer.echo(f"ensemble: dev {result.dev_final:.2f} on {result.dev_rows} dev rows ({result.dev_rows_scored}); "
               f"wrote {out}/submission.csv")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Finished run directories scored on the same dev file (and "
                                     "ensemble folders of them)."),
    out: str = typer.Option(..., "--out", help="Folder for the page (dialogues.html)."),
) -> None:
    """One page of every dev dialogue with each run's summary and score: sort, filter, compare by topic."""
    from pathlib import Path

    from dialsum.report.dialogue_sources import compare_runs

    typer.echo(f"wrote {compare_runs([Path(r) for r in runs], Path(out))}")


@app.command("make-sample")
def make_sample(
    out: str | None = typer.Option(None, "--out", help="Output folder (default data/sample)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (default: the shipped sample's)."),
    train: int | None = typer.Option(None, "--train", help="Train rows (default: the shipped sample's)."),
    dev: int | None = typer.Option(None, "--dev", help="Dev rows (default: the shipped sample's)."),
    test: int | None = typer.Option(None, "--test", help="Test rows (default: the shipped sample's)."),
    force: bool = typer.Option(False, "--force", help="Replace CSV files that already exist in the folder."),
) -> None:
    """Write synthetic Korean dialogues in the competition format: train, dev, test, test_gold CSV."""
    from dialsum.samplegen import make_sample as write

    for line in write(out, seed=seed, train=train, dev=dev, test=test, force=force):
        typer.echo(line)


@app.command()
def suite(
    suite_file: str = typer.Argument(..., metavar="SUITE", help="Suite YAML (configs/suites/main5.yaml)."),
    init: str | None = typer.Option(None, "--init", help="pretrained, random or tiny for every experiment "
                                    "(default: each config's own model.init)."),
    one_epoch: bool | None = typer.Option(None, "--one-epoch", help="Train each experiment one epoch."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop each experiment after N steps."),
    resume: bool = typer.Option(False, "--resume", help="Skip finished experiments, continue killed ones."),
    only: list[str] = typer.Option([], "--only", help="Run only these experiments (repeatable or a,b)."),
    skip: list[str] = typer.Option([], "--skip", help="Leave these experiments out (repeatable or a,b)."),
    out: str | None = typer.Option(None, "--out", help="Suite directory (default runs/suites/<suite name>)."),
    sets: list[str] = Sets,
    data_dir: str | None = Data,
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs to run on, one experiment each: 0,1,2,3 "
                                    "(default: every visible GPU)."),
    slots: int | None = typer.Option(None, "--slots", help="CPU only: experiments side by side, each with "
                                     "its share of the cores (default 1)."),
    backend: str = typer.Option("local", "--backend", help="local (this machine's slots) or ray (a Ray cluster)."),
    address: str | None = typer.Option(None, "--address", help="Ray: auto or HOST:PORT of the cluster "
                                       "(default: a new local Ray instance)."),
    restart: list[str] = typer.Option([], "--restart", help="With --resume: start these experiments afresh, their "
                                      "old runs moved aside to run.1, run.2, ... (repeatable or a,b)."),
) -> None:
    """Run a suite of experiments, each in its own process: slots, GPU wait, monitor, retry, resume, report."""
    from dialsum.suite.opening import SuiteOptions
    from dialsum.suite.runner import run_suite

    opts = SuiteOptions(suite_file, init, one_epoch, max_steps, resume, only, skip, out, list(sets), data_dir,
                        gpus, slots, backend, address, restart=list(restart))
    raise typer.Exit(run_suite(opts))


@app.command()
def sweep(
    config_path: str = typer.Argument(..., metavar="CONFIG", help="Experiment YAML file; its sweep section is the "
                                      "search space."),
    trials: int | None = typer.Option(None, "--trials", help="Trials in all, trial 0 the config's own settings "
                                      "(with --resume: default the stored count)."),
    init: str | None = Init,
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop each trial after N optimizer steps."),
    one_epoch: bool = typer.Option(False, "--one-epoch", help="Train each trial one epoch."),
    data_dir: str | None = Data,
    sets: list[str] = Sets,
    out: str | None = typer.Option(None, "--out", help="Sweep folder (default runs/sweeps/<experiment name>)."),
    pruner: str | None = typer.Option(None, "--pruner", help="median (default), hyperband or none."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop starting trials after this many minutes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep in --out: finished trials are kept, "
                                "trials a stop left running run again."),
    storage: str | None = typer.Option(None, "--storage", help="The study: a journal file path (default "
                                       "OUT/study.journal) or a database URL."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep every trial's checkpoints (by "
                                          "default only the best trial keeps them)."),
    dev_rows: int | None = typer.Option(None, "--dev-rows", help="Dev rows the trials are scored on (default half); "
                                        "the rest are held out to score the best trial against trial 0."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs to run trials on, one each: 0,1,2,3 (default: every "
                                    "visible GPU)."),
    slots: int | None = typer.Option(None, "--slots", help="CPU only: trials side by side, each with its share of "
                                     "the cores (default 1)."),
    backend: str = typer.Option("local", "--backend", help="local (this machine's slots) or ray (a Ray cluster)."),
    address: str | None = typer.Option(None, "--address", help="Ray: auto or HOST:PORT of the cluster."),
    cpu_threads: int | None = typer.Option(None, "--cpu-threads", hidden=True, help="A suite's sweep entry: torch "
                                           "threads of each trial, the suite's CPU slot's share."),
) -> None:
    """Search training settings (Optuna): trials as dialsum train processes, pruned on their dev score; best.yaml."""
    from dialsum.sweep.command import run_sweep
    from dialsum.sweep.options import SweepOptions

    raise typer.Exit(run_sweep(SweepOptions(config_path, trials, init, max_steps, one_epoch, data_dir, out,
                                            list(sets), pruner, timeout, resume, storage, keep_checkpoints, dev_rows,
                                            gpus, slots, backend, address, cpu_threads)))


@app.command("config")
def config_help(
    key: str | None = typer.Argument(None, metavar="[SECTION or SECTION.KEY]",
                                     help="A section (training) or a field (training.optim); none: every field."),
    suite_file: bool = typer.Option(False, "--suite", help="The suite file's fields instead of a config's."),
) -> None:
    """Show config fields with their help, type, default and allowed values, from the schema itself."""
    from dialsum.confighelp import explain

    typer.echo(explain(key, suite_file))


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    from dialsum.device import share_cores

    share_cores()  # before torch loads OpenMP, here and in every child process
    try:
        code = app(standalone_mode=False)
    except DialsumError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
