"""Writing the report files of a suite: the entry points `write_report` and `report_suite_dir`; `result_rows`
reads a suite's results without writing anything (`dialsum.results`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dialsum.fileio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.report.dialogue_sources import suite_inputs
from dialsum.report.dialogues import write_page
from dialsum.report.inputs import Experiment, load_experiment, load_suite_state, read_ensemble
from dialsum.report.plots import write_plots
from dialsum.report.render import render_html, render_markdown, report_blocks
from dialsum.report.results import (
    INDEX_COLUMNS,
    RESULT_COLUMNS,
    csv_cell,
    index_rows,
    recommend,
    result_row,
    results_document,
)
from dialsum.suite.state import STATE_FILE, ExperimentRecord


def report_suite_dir(suite_dir: str | Path) -> dict[str, Path]:
    """`dialsum report`: rewrite the report of `suite_dir` from its `suite_state.json`. A run file that exists
    but cannot be used is an error here, before anything is written (the suite's own report notes it)."""
    suite_dir = Path(suite_dir)
    state = load_suite_state(suite_dir / STATE_FILE)
    return write_report(suite_dir, state.records, title=f"Experiment comparison: {state.suite}",
                        description=state.description, strict=True)


def result_rows(suite_dir: str | Path) -> list[dict[str, Any]]:
    """A suite's results, one row per experiment, as its report computes them; nothing is written. A run file
    that exists but cannot be used is an error, as for `dialsum report`."""
    suite_dir = Path(suite_dir)
    state = load_suite_state(suite_dir / STATE_FILE)
    return [result_row(load_experiment(i, rec, suite_dir, strict=True), suite_dir)
            for i, rec in enumerate(state.records)]


def write_report(
    out_dir: str | Path, records: Sequence[ExperimentRecord], *, title: str | None = None, description: str = "",
    strict: bool = False,
) -> dict[str, Path]:
    """Write every report file to `out_dir`; return {kind: path} of what was written."""
    out_dir = Path(out_dir)
    experiments = [load_experiment(i, rec, out_dir, strict) for i, rec in enumerate(records)]
    ensemble = read_ensemble(out_dir, strict)
    rows = [result_row(exp, out_dir) for exp in experiments]
    recommendations = recommend(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_plots(out_dir, experiments, rows)
    paths.update(write_dialogues(out_dir, experiments, title or "Experiment comparison"))
    generated = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    blocks = report_blocks(
        title or "Experiment comparison", generated, experiments, rows, recommendations, paths, out_dir, ensemble,
        description,
    )
    markdown = render_markdown(blocks)
    paths["report_md"] = atomic_write_text(out_dir / "report.md", markdown)
    paths["report_html"] = atomic_write_text(out_dir / "report.html", render_html(markdown, out_dir))
    paths["results_json"] = atomic_write_json(
        out_dir / "results.json", results_document(title, generated, rows, recommendations)
    )
    paths["results_csv"] = atomic_write_rows(
        out_dir / "results.csv", RESULT_COLUMNS, [[csv_cell(row[c]) for c in RESULT_COLUMNS] for row in rows]
    )
    paths["experiment_index"] = atomic_write_rows(
        out_dir / "experiment_index.csv", INDEX_COLUMNS, index_rows(experiments, rows)
    )
    return paths


def write_dialogues(out_dir: Path, experiments: list[Experiment], title: str) -> dict[str, Path]:
    """The per-dialogue page of the finished runs and the suite's ensemble (none without a finished run); why a
    run is left off it goes into that experiment's notes."""
    finished = [(exp.run_dir, exp.label, exp.notes) for exp in experiments
                if exp.state == "finished" and exp.run_dir is not None]
    page = suite_inputs(finished, out_dir / "ensemble")
    if experiments:
        experiments[0].notes.extend(page.notes)
    if not page.outputs:
        return {}
    return {"dialogues_html": write_page(out_dir, f"{title}: every dev dialogue", page.dev, page.outputs)}
