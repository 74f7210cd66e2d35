"""The sweep's tables and pages: `trials.csv`, Optuna's plots, `report.md` and `report.html`.

    dialsum sweep CONFIG --trials 20          # OUT/trials.csv after every trial; the report at the end
    pytest tests/test_sweep.py -k report

`trials.csv` has a row per trial: number, state, value (its dev score on the search rows), each parameter,
the training steps it ran, its wall time, the last dev score it reported and, for a failed one, why. The plots
are Optuna's (matplotlib): the optimization history, the parameters' importances, the intermediate values
(the pruned trials' lines end where they were stopped) and the parallel coordinates. The report's page is
the suite report's (Markdown, and the same HTML with its plots inlined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dialsum.fileio import atomic_write_rows, atomic_write_text
from dialsum.report.render import render_html, render_markdown
from dialsum.sweep.options import TRIALS_CSV
from dialsum.tune_finish import write_plots

PLOTS = {  # Optuna's plot_<name>, and its caption
    "optimization_history": "Dev score of each trial, and the best so far",
    "param_importances": "How much each setting mattered (fANOVA)",
    "intermediate_values": "Dev score at each evaluation; pruned trials stop early",
    "parallel_coordinate": "Each finished trial's settings and score",
}


def state_name(trial: Any) -> str:
    return trial.state.name


def trial_rows(study: Any) -> tuple[list[str], list[list[Any]]]:
    """trials.csv's header and rows."""
    names = list(dict.fromkeys(k for t in study.trials for k in t.params))
    header = ["number", "state", "value", *names, "steps", "wall_seconds", "last_dev", "note"]
    rows = []
    for t in study.trials:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        value = t.value if t.state.name == "COMPLETE" else None  # Optuna gives a pruned trial its last score
        rows.append([t.number, state_name(t), _round(value), *(_round(t.params.get(k)) for k in names),
                     t.user_attrs.get("steps", ""), t.user_attrs.get("wall_seconds", ""), _round(last),
                     t.user_attrs.get("failure", "; ".join(t.user_attrs.get("adaptations", [])))])
    return header, rows


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return "" if value is None else value


def write_trials(out: Path, study: Any) -> Path:
    header, rows = trial_rows(study)
    return atomic_write_rows(out / TRIALS_CSV, header, rows)


def write_report(out: Path, title: str, blocks: list[Any], study: Any) -> Path:
    """report.md and report.html: the given blocks, the trials table, the plots."""
    header, rows = trial_rows(study)
    table = [[str(c) for c in row] for row in rows]
    plots = write_plots(study, out, tuple(PLOTS), "sweep")
    doc = [("h", 1, title), *blocks, ("h", 2, "Trials"),
           ("p", "Value: the trial's dev score (morpheme final) on the search rows, which the trials are compared "
                 "on; last_dev: its last evaluation during training; steps: optimizer steps it trained."),
           ("table", header, table)]
    if plots:
        doc.append(("h", 2, "Plots"))
        doc += [("img", path.name, PLOTS[name]) for name, path in plots.items()]
    doc += [("h", 2, "Files"), ("list", [("", f) for f in ("best.yaml", TRIALS_CSV, "report.html", "trials/NNN/run")])]
    markdown = render_markdown(doc)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", render_html(markdown, out))
    return out / "report.md"
