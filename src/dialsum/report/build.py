"""Writing the report files of a suite: the entry points `write_report` and `report_suite_dir`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from dialsum.fileio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.report.inputs import load_experiment, load_suite_state, read_ensemble
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
