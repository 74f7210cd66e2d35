"""The end of a tuning: choose on the search rows, score on the held-out rows, write what was chosen.

    dialsum tune runs/kobart_baseline/<time> --trials 20
    pytest tests/test_tune.py -k held_out

The best trial by its score on the search part is scored with the run's own settings on the held-out rows;
the better of the two there is recommended (the run's own on a tie), and those held-out scores are what the
tuning reports (`tune/result.json`, typed as `runfiles.TuneResult`). Written to `RUN_DIR/tune/`: `best.yaml`,
`trials.csv`, `result.json`, `dev_predictions.csv` (the recommendation's summaries of the held-out rows), and
Optuna's plots; and `RUN_DIR/submission_tuned.csv`, test summarized with the recommendation.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from dialsum import generation
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_rows, atomic_write_text
from dialsum.finished_run import read_test
from dialsum.runfiles import TUNE_RESULT, TuneHeldout, TuneResult, TuneSearch
from dialsum.sections import ExperimentConfig
from dialsum.tune_space import SPLIT_SEED, DevSplit, apply, own_params
from dialsum.tune_study import Scorer, own_trial


def finish(study: Any, scorer: Scorer, space: dict[str, list[Any]], split: DevSplit, run_dir: Path) -> TuneResult:
    """Choose the best trial by its score on the search part, score it and the run's own settings on the
    held-out rows, recommend the better of the two there (the run's own on a tie), and write the files."""
    from optuna.trial import TrialState  # optuna takes a second to import: only where a study is read

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
    result = TuneResult(
        trials=len(done), dev_rows=len(scorer.dev), split_seed=SPLIT_SEED,
        search=TuneSearch(rows=len(split.search), trials=len(done), own=own_t.value, chosen=chosen.value,
                          chosen_trial=chosen.number, chosen_is_own=chosen.params == mine,
                          chosen_params=dict(chosen.params)),
        heldout=TuneHeldout(rows=len(split.heldout), own=own_score, tuned=tuned_score),
        recommended="tuned" if better else "own", best_params=params,
    )
    _write(study, scorer, apply(scorer.cfg, params), split, preds, run_dir, done)
    result.write(run_dir / TUNE_RESULT)
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
    write_plots(study, out, ("optimization_history", "param_importances"), "tune")
    test = read_test(tuned)
    generation.write_submission(run_dir / "submission_tuned.csv", list(test["fname"]),
                                scorer.summaries(tuned, list(test["dialogue"])))


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


def write_plots(study: Any, out: Path, names: tuple[str, ...], who: str) -> dict[str, Path]:
    """Optuna's matplotlib plots (`plot_<name>` for each name) as `out/<name>.png`; one Optuna cannot draw yet
    (importances need two or more finished trials that differ) is left out with a line on stderr. `dialsum tune`
    and `dialsum sweep` draw theirs here."""
    import matplotlib  # matplotlib and optuna's plots take seconds to import: only where plots are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: deferred, as above
    from optuna.exceptions import ExperimentalWarning  # optuna: deferred, as above
    from optuna.visualization import matplotlib as ovm  # optuna: deferred, as above

    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # the plots are marked experimental
    warnings.filterwarnings("ignore", message="Attempting to set identical")  # one value on an axis: drawn flat
    written = {}
    for name in names:
        try:
            axes = getattr(ovm, f"plot_{name}")(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few finished or distinct trials
            print(f"{who}: no {name} plot ({str(err).splitlines()[0][:120]})", file=sys.stderr)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=110)
        plt.close(figure)
        written[name] = out / f"{name}.png"
    return written
