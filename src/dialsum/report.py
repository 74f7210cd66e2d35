"""The suite comparison report: results tables, recommendations and plots, from the run directories.

    dialsum report runs/main5            # rewrite the report from runs/main5/suite_state.json
    pytest tests/test_report.py

`write_report(out_dir, records)` (called by the suite after each experiment) reads each record's run
directory (`metrics.json`, `train_log.jsonl`, the submission) and memory CSV, and writes to `out_dir`:
`results.json`, `results.csv`, `experiment_index.csv`, `report.md`, `report.html` and the plots
`plot_loss.png`, `plot_dev_score.png`, `plot_final_scores.png`, `plot_memory.png` (a plot without
data is left out). Missing or broken inputs never stop the report: they show as failures or notes.
Figures are `matplotlib.figure.Figure` objects saved through the Agg canvas, never pyplot: no
display, no global backend switch in the calling process.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dialsum.csvio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_rows,
    atomic_write_text,
    read_json,
)
from dialsum.errors import DialsumError

TOKENIZATIONS = ("morpheme", "whitespace")
SCORE_KEYS = ("rouge1", "rouge2", "rougeL", "final")
STABILITY_DEFINITION = (
    "coefficient of variation (standard deviation / mean) of the logged training loss over the "
    "second half of the steps run; lower is steadier"
)
MIN_STABILITY_POINTS = 3
PLOT_DPI = 110
STATE_FILE = "suite_state.json"
STATES = ("finished", "failed", "running", "pending", "skipped")
MEMORY_KIND_TEXT = {
    "cuda": "peak CUDA memory (process)",
    "rss": "peak process RSS",
    "gpu": "peak GPU memory used (monitor)",
}

RESULT_COLUMNS = [
    "name", "label", "state", "failure_kind", "failure_message", "model", "arch", "init",
    "parameters", "trainable_parameters", "micro_batch", "grad_accum", "effective_batch",
    "learning_rate", "epochs", "steps",
    *[f"{tok}_{key}" for tok in TOKENIZATIONS for key in SCORE_KEYS], "dev_n",
    *[f"baseline_{tok}_final" for tok in TOKENIZATIONS],
    "train_minutes", "wall_minutes", "expected_minutes", "attempts",
    "peak_memory_mb", "memory_kind", "memory_source", "tokens_per_second", "loss_cv",
    "submission", "run_dir", "config", "adaptations", "notes",
]  # fmt: skip
INDEX_COLUMNS = [
    "name", "label", "submission", "morpheme_final", "whitespace_final", "model", "run_dir",
    "submission_mtime",
]  # fmt: skip

TABLE_HEADER = [
    "#", "Experiment", "Model", "Params (trainable)", "Batch x accum = eff.", "LR", "Epochs", "Final (morph.)",
    "R1 / R2 / RL (morph.)", "Final (ws)", "Train / expected", "Peak memory", "Tokens/s", "State",
]  # fmt: skip


@dataclass
class Experiment:
    """One suite record with what could be read from its run directory and memory log."""

    index: int
    record: dict[str, Any]
    run_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    submission: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def label(self) -> str:
        return str(self.record.get("label") or self.name)

    @property
    def state(self) -> str:
        return str(self.record.get("state") or "pending")

    @property
    def failure(self) -> dict[str, Any]:
        failure = self.record.get("failure")
        return failure if isinstance(failure, dict) else {}


# ---------------------------------------------------------------- entry points


def report_suite_dir(suite_dir: str | Path) -> dict[str, Path]:
    """Rewrite the report of `suite_dir` from its `suite_state.json`."""
    suite_dir = Path(suite_dir)
    state = load_suite_state(suite_dir / STATE_FILE)
    title = f"Experiment comparison: {state['suite']}" if state.get("suite") else None
    return write_report(suite_dir, state["records"], title=title)


def write_report(
    out_dir: str | Path, records: Sequence[dict[str, Any]], *, title: str | None = None
) -> dict[str, Path]:
    """Write every report file to `out_dir`; return {kind: path} of what was written."""
    out_dir = Path(out_dir)
    check_records(records)
    experiments = [load_experiment(i, rec, out_dir) for i, rec in enumerate(records)]
    rows = [result_row(exp, out_dir) for exp in experiments]
    recommendations = recommend(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_plots(out_dir, experiments, rows)
    generated = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    blocks = report_blocks(
        title or "Experiment comparison", generated, experiments, rows, recommendations, paths
    )
    paths["report_md"] = atomic_write_text(out_dir / "report.md", render_markdown(blocks))
    paths["report_html"] = atomic_write_text(out_dir / "report.html", render_html(blocks, out_dir))
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


def load_suite_state(path: Path) -> dict[str, Any]:
    """Read and check a suite state file; every problem is a one-line DialsumError."""
    if not path.is_file():
        raise DialsumError(f"{path}: suite state file not found; pass the directory a suite run wrote")
    state = read_json(path, "rerun the suite to rewrite it")
    if not isinstance(state, dict) or not isinstance(state.get("records"), list):
        raise DialsumError(f'{path}: expected an object with a "records" list; rerun the suite to rewrite it')
    check_records(state["records"], where=str(path))
    return state


def check_records(records: Any, where: str = "records") -> None:
    """Each record must be an object with a non-empty string `name`."""
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) or not rec["name"].strip():
            raise DialsumError(f'{where}: record {i} has no "name"; every suite record needs one')


# ---------------------------------------------------------------- reading the inputs


def load_experiment(index: int, record: dict[str, Any], out_dir: Path) -> Experiment:
    """Read what exists of one experiment's files; problems become notes, never errors."""
    exp = Experiment(index, record, resolve_path(record.get("run_dir"), out_dir))
    if exp.run_dir is not None:
        exp.metrics = read_metrics(exp.run_dir / "metrics.json", exp.notes, expected=exp.state == "finished")
        exp.log = read_train_log(exp.run_dir / "train_log.jsonl", exp.notes)
        exp.submission = find_submission(exp.run_dir, exp.metrics, exp.notes)
    elif exp.state == "finished":
        exp.notes.append("no run directory recorded")
    memory_csv = resolve_path(record.get("memory_csv"), out_dir)
    if memory_csv is not None:
        exp.memory = read_memory_csv(memory_csv, exp.notes)
    return exp


def resolve_path(value: Any, base: Path) -> Path | None:
    """A recorded path; a relative one is taken relative to the report directory."""
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else base / path


def read_metrics(path: Path, notes: list[str], *, expected: bool) -> dict[str, Any]:
    if not path.is_file():
        if expected:
            notes.append(f"{path.name} missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        notes.append(f"{path.name} unreadable ({type(err).__name__})")
        return {}
    return data if isinstance(data, dict) else {}


def read_train_log(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Parse a JSON-lines log, skipping blank and unparseable lines (a killed run's last line)."""
    if not path.is_file():
        return []
    entries, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            skipped += 1
    if skipped:
        notes.append(f"{path.name}: {skipped} unparseable line(s) skipped")
    return entries


def read_memory_csv(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Samples of `time_s,kind,used_mb,total_mb,...`; rows without time or usage are skipped."""
    if not path.is_file():
        notes.append(f"memory log {path.name} missing")
        return []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        notes.append(f"memory log {path.name} unreadable ({type(err).__name__})")
        return []
    samples = []
    for row in rows:
        time_s, used = to_number(row.get("time_s")), to_number(row.get("used_mb"))
        if time_s is not None and used is not None:
            kind = (row.get("kind") or "").strip() or "gpu"
            samples.append(
                {"time_s": time_s, "kind": kind, "used_mb": used, "total_mb": to_number(row.get("total_mb"))}
            )
    return samples


def find_submission(run_dir: Path, metrics: dict[str, Any], notes: list[str]) -> Path | None:
    name = metrics.get("submission")
    if not name:
        return None
    path = resolve_path(name, run_dir)
    if path is None or not path.is_file():
        notes.append(f"submission {name} listed in metrics.json but not found")
        return None
    return path


def to_number(value: Any) -> float | None:
    """A finite float from a number or numeric string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------- derived numbers


def loss_points(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(step, training loss) sorted by step; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[float, float] = {}
    for entry in log:
        step, loss = to_number(entry.get("step")), to_number(entry.get("loss"))
        if step is not None and loss is not None:
            by_step[step] = loss
    return sorted(by_step.items())


def eval_points(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    by_step: dict[float, float] = {}
    for entry in log:
        step, score = to_number(entry.get("step")), to_number(entry.get("eval_final"))
        if step is not None and score is not None:
            by_step[step] = score
    return sorted(by_step.items())


def loss_stability(points: list[tuple[float, float]]) -> float | None:
    """Coefficient of variation of the loss over steps past half of the last step (see STABILITY_DEFINITION)."""
    if not points:
        return None
    half = points[-1][0] / 2
    tail = [loss for step, loss in points if step > half]
    if len(tail) < MIN_STABILITY_POINTS:
        return None
    mean = statistics.fmean(tail)
    return statistics.pstdev(tail) / mean if mean > 0 else None


def last_epoch(log: list[dict[str, Any]]) -> float | None:
    epochs = [e for e in (to_number(entry.get("epoch")) for entry in log) if e is not None]
    return max(epochs) if epochs else None


def peak_memory(exp: Experiment) -> tuple[float | None, str, str]:
    """(peak MB, kind, source): the run's own measurement, else the suite monitor's maximum."""
    peak = to_number(exp.metrics.get("peak_memory_mb"))
    if peak is not None:
        return peak, str(exp.metrics.get("memory_kind") or "rss"), "metrics"
    if exp.memory:
        top = max(exp.memory, key=lambda s: s["used_mb"])
        return top["used_mb"], top["kind"], "monitor"
    return None, "", ""


def minutes(seconds: Any) -> float | None:
    value = to_number(seconds)
    return round(value / 60, 2) if value is not None else None


def result_row(exp: Experiment, out_dir: Path) -> dict[str, Any]:
    """One flat row of results.csv / results.json for an experiment."""
    m, rec = exp.metrics, exp.record
    peak, kind, source = peak_memory(exp)
    row: dict[str, Any] = {
        "name": exp.name,
        "label": exp.label,
        "state": exp.state,
        "failure_kind": exp.failure.get("kind"),
        "failure_message": exp.failure.get("message"),
        "model": m.get("model_name"),
        "arch": m.get("arch"),
        "init": m.get("init"),
        "parameters": m.get("parameters"),
        "trainable_parameters": m.get("trainable_parameters"),
        "micro_batch": m.get("micro_batch"),
        "grad_accum": m.get("grad_accum"),
        "effective_batch": m.get("effective_batch"),
        "learning_rate": m.get("learning_rate"),
        "epochs": m.get("epochs", last_epoch(exp.log)),
        "steps": m.get("steps"),
    }
    row.update(score_columns(m))
    row.update(
        {
            "train_minutes": minutes(m.get("train_seconds")),
            "wall_minutes": minutes(rec.get("wall_seconds")),
            "expected_minutes": to_number(rec.get("expected_minutes")),
            "attempts": rec.get("attempts"),
            "peak_memory_mb": peak,
            "memory_kind": kind,
            "memory_source": source,
            "tokens_per_second": to_number(m.get("train_tokens_per_second")),
            "loss_cv": loss_stability(loss_points(exp.log)),
            "submission": display_path(exp.submission, out_dir),
            "run_dir": str(exp.run_dir or ""),
            "config": rec.get("config"),
            "adaptations": adaptations(exp),
            "notes": list(exp.notes),
        }
    )
    return row


def score_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    dev = metrics.get("dev") if isinstance(metrics.get("dev"), dict) else {}
    columns: dict[str, Any] = {}
    for tok in TOKENIZATIONS:
        scores = dev.get(tok) if isinstance(dev.get(tok), dict) else {}
        columns.update({f"{tok}_{key}": to_number(scores.get(key)) for key in SCORE_KEYS})
    morpheme = dev.get("morpheme") if isinstance(dev.get("morpheme"), dict) else {}
    columns["dev_n"] = morpheme.get("n")
    baseline = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else {}
    columns.update({f"baseline_{tok}_final": to_number(baseline.get(tok)) for tok in TOKENIZATIONS})
    return columns


def reference(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """The longest-turn baseline's finals when every experiment that has one scored the same dev rows."""
    found = {tuple(row[f"baseline_{tok}_final"] for tok in TOKENIZATIONS) for row in rows
             if row["baseline_morpheme_final"] is not None}
    if len(found) != 1:
        return None
    return dict(zip(TOKENIZATIONS, found.pop(), strict=True))


def adaptations(exp: Experiment) -> list[str]:
    """The suite's adaptations, then the run's own, without repeats."""
    items: list[str] = []
    for source in (exp.record.get("adaptations"), exp.metrics.get("adaptations")):
        for item in source or []:
            if str(item) not in items:
                items.append(str(item))
    return items


def display_path(path: Path | None, out_dir: Path) -> str:
    """Relative to the report directory when inside it, else absolute; empty when there is none."""
    if path is None:
        return ""
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def csv_cell(value: Any) -> Any:
    """Lists joined with ' | ', None empty, floats without binary noise (8.264000000000001 -> 8.264)."""
    if isinstance(value, list):
        return " | ".join(str(v) for v in value)
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return "" if value is None else value


def index_rows(experiments: list[Experiment], rows: list[dict[str, Any]]) -> list[list[Any]]:
    """experiment_index.csv: one row per submission file that exists."""
    out = []
    for exp, row in zip(experiments, rows, strict=True):
        if exp.submission is None:
            continue
        mtime = datetime.fromtimestamp(exp.submission.stat().st_mtime, timezone.utc).astimezone()
        out.append(
            [
                exp.name,
                exp.label,
                row["submission"],
                csv_cell(row["morpheme_final"]),
                csv_cell(row["whitespace_final"]),
                csv_cell(row["model"]),
                row["run_dir"],
                mtime.isoformat(timespec="seconds"),
            ]
        )
    return out


# ---------------------------------------------------------------- recommendations


def recommend(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best score, fastest, least memory (per memory kind) and most stable loss, among finished runs."""
    done = [row for row in rows if row["state"] == "finished"]
    recs = [
        titled("best_score", "Best score", pick(done, "morpheme_final", max, describe_score)),
        titled("fastest", "Fastest", pick(done, "train_minutes", min, describe_time)),
    ]
    kinds = sorted({row["memory_kind"] for row in done if row["peak_memory_mb"] is not None})
    for kind in kinds:
        title = "Least memory" if len(kinds) == 1 else f"Least memory ({kind})"
        same = [row for row in done if row["memory_kind"] == kind]
        recs.append(titled(f"least_memory_{kind}", title, pick(same, "peak_memory_mb", min, describe_memory)))
    recs.append(titled("most_stable", "Most stable loss", pick(done, "loss_cv", min, describe_stability)))
    return [rec for rec in recs if rec is not None]


def pick(
    rows: list[dict[str, Any]], column: str, choose: Callable[..., Any], describe: Callable[..., str]
) -> dict[str, Any] | None:
    """The row that `choose` (min/max) selects on `column`, ignoring missing values; first wins ties."""
    candidates = [row for row in rows if row[column] is not None]
    if not candidates:
        return None
    best = choose(candidates, key=lambda r: r[column])
    found = {"name": best["name"], "label": best["label"], "value": best[column]}
    return found | {"text": describe(best), "compared": len(candidates)}


def titled(key: str, title: str, found: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if found is None else {"key": key, "title": title, **found}


def describe_score(row: dict[str, Any]) -> str:
    size = f" (n={row['dev_n']})" if row.get("dev_n") else ""
    return f"morpheme final {row['morpheme_final']:.2f} on dev{size}"


def describe_time(row: dict[str, Any]) -> str:
    return f"{row['train_minutes']:.1f} min of training"


def describe_memory(row: dict[str, Any]) -> str:
    kind = MEMORY_KIND_TEXT.get(row["memory_kind"], row["memory_kind"])
    return f"{fmt_memory(row['peak_memory_mb'])} {kind}"


def describe_stability(row: dict[str, Any]) -> str:
    return f"loss coefficient of variation {row['loss_cv']:.3f} over the second half"


# ---------------------------------------------------------------- formatting


def fmt_count(value: Any) -> str:
    """123859968 -> '124M', 2359296 -> '2.4M', 1.2e9 -> '1.2B'."""
    n = to_number(value)
    if n is None:
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            scaled = n / size
            return f"{scaled:.0f}{unit}" if abs(scaled) >= 100 else f"{scaled:.1f}{unit}"
    return f"{n:.0f}"


def fmt_memory(mb: Any) -> str:
    """1840.5 -> '1.8 GB', 512 -> '512 MB' (binary units, as the GPU tools show them)."""
    value = to_number(mb)
    if value is None:
        return "-"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


def fmt_minutes(actual: Any, expected: Any) -> str:
    """'2.1 / 45 min': measured minutes against the expected ones."""
    a, e = to_number(actual), to_number(expected)
    if e is None:
        return f"{a:.1f} min" if a is not None else "-"
    return f"{a:.1f} / {e:.0f} min" if a is not None else f"- / {e:.0f} min"


def fmt_float(value: Any, digits: int = 2) -> str:
    number = to_number(value)
    return "-" if number is None else f"{number:.{digits}f}"


def fmt_lr(value: Any) -> str:
    number = to_number(value)
    return "-" if number is None else f"{number:.1e}"


def both_names(label: str, name: str) -> str:
    """'KoBART baseline (kobart_baseline)', or just the name when there is no separate label."""
    return name if label == name else f"{label} ({name})"


def state_text(row: dict[str, Any]) -> str:
    return f"{row['state']} ({row['failure_kind']})" if row.get("failure_kind") else str(row["state"])


# ---------------------------------------------------------------- report document (markdown + html)

Block = tuple[Any, ...]


def report_blocks(
    title: str,
    generated: str,
    experiments: list[Experiment],
    rows: list[dict[str, Any]],
    recs: list[dict[str, Any]],
    plots: dict[str, Path],
) -> list[Block]:
    """The report as a list of blocks that both renderers understand."""
    blocks: list[Block] = [("h", 1, title), ("p", f"{summary_line(rows)} Generated {generated}.")]
    blocks += [
        (
            "p",
            "Scores are on dev; final = (ROUGE-1 + ROUGE-2 + ROUGE-L F1) / 3 x 100, the leaderboard's "
            "number. 'Final' and the recommendations use morpheme tokenization (Kiwi), the leaderboard's; "
            "whitespace-token scores are shown too.",
        )
    ]
    blocks += [("h", 2, "Comparison"), comparison_table(rows)]
    blocks += reference_blocks(rows)
    blocks += recommendation_blocks(rows, recs)
    blocks += failure_blocks(experiments)
    blocks += adaptation_blocks(experiments)
    blocks += plot_blocks(plots)
    notes = [(exp.label, "; ".join(exp.notes)) for exp in experiments if exp.notes]
    if notes:
        blocks += [("h", 2, "Data notes"), ("list", notes)]
    files = ["results.csv", "results.json", "experiment_index.csv", "report.html"]
    blocks += [("h", 2, "Files"), ("list", [("", f) for f in files])]
    return blocks


def summary_line(rows: list[dict[str, Any]]) -> str:
    found = [row["state"] for row in rows]
    order = [*STATES, *sorted(set(found) - set(STATES))]
    states = ", ".join(f"{found.count(state)} {state}" for state in order if state in found)
    wall = sum(row["wall_minutes"] or 0 for row in rows)
    expected = sum(row["expected_minutes"] or 0 for row in rows)
    tail = f" (expected {expected:.0f} min)" if expected else ""
    return f"{len(rows)} experiment(s): {states}; total wall time {wall:.1f} min{tail}."


def comparison_table(rows: list[dict[str, Any]]) -> Block:
    body = [
        [
            str(i + 1),
            row["label"],
            row["model"] or "-",
            f"{fmt_count(row['parameters'])} ({fmt_count(row['trainable_parameters'])})",
            batch_text(row),
            fmt_lr(row["learning_rate"]),
            fmt_float(row["epochs"], 1),
            fmt_float(row["morpheme_final"]),
            " / ".join(fmt_float(row[f"morpheme_{k}"]) for k in ("rouge1", "rouge2", "rougeL")),
            fmt_float(row["whitespace_final"]),
            fmt_minutes(row["train_minutes"] or row["wall_minutes"], row["expected_minutes"]),
            f"{fmt_memory(row['peak_memory_mb'])} ({row['memory_kind']})" if row["memory_kind"] else "-",
            fmt_float(row["tokens_per_second"], 0),
            state_text(row),
        ]
        for i, row in enumerate(rows)
    ]
    ref = reference(rows)
    if ref is not None:
        body.append(["ref", "Longest turn (extractive)", "-", "-", "-", "-", "-", fmt_float(ref["morpheme"]), "-",
                     fmt_float(ref["whitespace"]), "-", "-", "-", "reference"])
    return ("table", TABLE_HEADER, body)


def reference_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    ref = reference(rows)
    if ref is not None:
        return [("p", f"Reference: the longest turn of each dialogue copied as its summary scores "
                      f"{ref['morpheme']:.2f} (morpheme) / {ref['whitespace']:.2f} (whitespace) on the same dev rows; "
                      "a model below it has not learned to read the dialogue.")]
    if any(row["baseline_morpheme_final"] is not None for row in rows):
        return [("p", "Reference: the experiments scored different dev rows; each one's longest-turn baseline "
                      "is in results.csv (baseline_morpheme_final).")]
    return []


def batch_text(row: dict[str, Any]) -> str:
    if row["micro_batch"] is None:
        return "-"
    return f"{row['micro_batch']} x {row['grad_accum'] or 1} = {row['effective_batch'] or '-'}"


def recommendation_blocks(rows: list[dict[str, Any]], recs: list[dict[str, Any]]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Recommendations")]
    if not recs:
        return blocks + [("p", "No finished experiment with measurements yet: nothing to recommend.")]
    finished = sum(row["state"] == "finished" for row in rows)
    if finished == 1:
        blocks.append(
            ("p", "Only one experiment finished, so each line below describes it rather than compares.")
        )
    blocks.append(
        ("list", [(rec["title"], f"{both_names(rec['label'], rec['name'])}: {rec['text']}.") for rec in recs])
    )
    blocks.append(
        (
            "p",
            f"Drawn from the measured results of finished experiments only. Loss stability is the "
            f"{STABILITY_DEFINITION} (needs {MIN_STABILITY_POINTS}+ logged losses there).",
        )
    )
    return blocks


def failure_blocks(experiments: list[Experiment]) -> list[Block]:
    failed = [exp for exp in experiments if exp.state == "failed" or exp.failure]
    if not failed:
        return []
    blocks: list[Block] = [("h", 2, "Failures")]
    for exp in failed:
        kind = exp.failure.get("kind") or "unknown"
        blocks += [("h", 3, f"{both_names(exp.label, exp.name)}: {kind}")]
        blocks += [("p", str(exp.failure.get("message") or "No failure message was recorded."))]
        lines = [str(line) for line in exp.failure.get("lines") or []]
        if lines:
            blocks += [("p", "Last relevant log lines:"), ("code", lines)]
    return blocks


def adaptation_blocks(experiments: list[Experiment]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Adaptations")]
    adapted = [(exp, adaptations(exp)) for exp in experiments]
    if not any(items for _, items in adapted):
        return blocks + [("p", "No experiment needed an adaptation.")]
    for exp, items in adapted:
        if items:
            blocks += [("h", 3, both_names(exp.label, exp.name)), ("list", [("", item) for item in items])]
    return blocks


PLOT_CAPTIONS = {
    "plot_final_scores": "Final dev score by experiment",
    "plot_loss": "Training loss",
    "plot_dev_score": "Dev score during training",
    "plot_memory": "Memory used over time",
}


def plot_blocks(plots: dict[str, Path]) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Plots")]
    for key, caption in PLOT_CAPTIONS.items():
        if key in plots:
            blocks.append(("img", plots[key].name, caption))
        else:
            blocks.append(("p", f"{caption}: no data recorded, no plot."))
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append(markdown_table(block[1], block[2]))
        elif kind == "list":
            out.append("\n".join(f"- **{lead}**: {text}" if lead else f"- {text}" for lead, text in block[1]))
        elif kind == "code":
            fence = code_fence(block[1])
            out.append("\n".join([fence, *block[1], fence]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(out) + "\n"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in body)])


def code_fence(lines: list[str]) -> str:
    """Three backticks, or more than the longest backtick run in the content."""
    longest = max((len(run) for line in lines for run in _backtick_runs(line)), default=0)
    return "`" * max(3, longest + 1)


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for ch in line:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .5em}"
    "th{background:#f3f3f3}tr:nth-child(even){background:#fafafa}pre{background:#f6f6f6;padding:.8em;"
    "overflow-x:auto}img{max-width:100%;display:block;margin:1em 0}"
)


def render_html(blocks: list[Block], out_dir: Path) -> str:
    """A self-contained page: the same blocks, plots inlined as base64 PNG."""
    esc = html.escape
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{esc(c)}</th>" for c in block[1])
            body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "list":
            items = "".join(
                f"<li><b>{esc(lead)}</b>: {esc(t)}</li>" if lead else f"<li>{esc(t)}</li>"
                for lead, t in block[1]
            )
            parts.append(f"<ul>{items}</ul>")
        elif kind == "code":
            parts.append(f"<pre>{esc(chr(10).join(block[1]))}</pre>")
        elif kind == "img":
            data = base64.b64encode((out_dir / block[1]).read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(block[2])}" src="data:image/png;base64,{data}">')
    title = esc(next((b[2] for b in blocks if b[0] == "h"), "Report"))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def results_document(
    title: str | None, generated: str, rows: list[dict[str, Any]], recs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "title": title,
        "generated": generated,
        "final_tokenization": "morpheme",
        "stability_definition": STABILITY_DEFINITION,
        "reference": {"name": "longest turn", "final": reference(rows)},
        "experiments": rows,
        "recommendations": recs,
    }


# ---------------------------------------------------------------- plots


def write_plots(out_dir: Path, experiments: list[Experiment], rows: list[dict[str, Any]]) -> dict[str, Path]:
    """Write each plot that has data (removing a stale one that now has none); return {name: path}."""
    makers: dict[str, Callable[..., Any]] = {
        "plot_loss": loss_figure,
        "plot_dev_score": dev_score_figure,
        "plot_final_scores": final_scores_figure,
        "plot_memory": memory_figure,
    }
    written = {}
    for name, make in makers.items():
        fig, path = make(experiments, rows), out_dir / f"{name}.png"
        if fig is not None:
            written[name] = save_png(fig, path)
        else:
            path.unlink(missing_ok=True)  # a plot from an earlier report would contradict this one
    return written


def save_png(fig: Any, path: Path) -> Path:
    """Render in memory, then write atomically (temp file beside `path`, rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def new_axes(nrows: int = 1, height: float = 4.6) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, height * nrows), dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(nrows, 1, squeeze=False)
    return fig, [ax for (ax,) in axes]


def plot_label(exp: Experiment) -> str:
    """An ASCII label (the default font lacks Hangul): the label, else the name, else a number."""
    for text in (exp.label, exp.name):
        if text.isascii():
            return text
    return f"experiment {exp.index + 1}"


def color(exp: Experiment) -> Any:
    from matplotlib import colormaps

    return colormaps["tab10"](exp.index % 10)


def finish_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average; weight 0 returns the values unchanged."""
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def loss_figure(experiments: list[Experiment], rows: list[dict[str, Any]]) -> Any:
    series = [(exp, loss_points(exp.log)) for exp in experiments]
    series = [(exp, pts) for exp, pts in series if pts]
    if not series:
        return None
    fig, (ax,) = new_axes()
    for exp, pts in series:
        steps, losses = [p[0] for p in pts], [p[1] for p in pts]
        weight = 0.6 if len(pts) >= 10 else 0.0
        if weight:
            ax.plot(steps, losses, color=color(exp), alpha=0.25, linewidth=1)
        ax.plot(steps, smooth(losses, weight), color=color(exp), linewidth=1.8, label=plot_label(exp))
    note = " (EMA-smoothed; faint lines raw)" if any(len(p) >= 10 for _, p in series) else ""
    finish_axes(ax, f"Training loss{note}", "optimizer step", "training loss")
    return fig


def dev_score_figure(experiments: list[Experiment], rows: list[dict[str, Any]]) -> Any:
    series = [(exp, eval_points(exp.log)) for exp in experiments]
    series = [(exp, pts) for exp, pts in series if pts]
    if not series:
        return None
    fig, (ax,) = new_axes()
    for exp, pts in series:
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            markersize=4,
            color=color(exp),
            linewidth=1.6,
            label=plot_label(exp),
        )
    finish_axes(ax, "Dev score during training (eval_final, morpheme ROUGE, mean x 100)", "optimizer step", "eval_final")
    return fig


def final_scores_figure(experiments: list[Experiment], rows: list[dict[str, Any]]) -> Any:
    fig, (ax,) = new_axes(height=5.0)
    width, xs = 0.38, list(range(len(rows)))
    scores = [v for row in rows for tok in TOKENIZATIONS if (v := row[f"{tok}_final"]) is not None]
    top = max(scores, default=1.0)
    for offset, tok, hatch in ((-width / 2, "morpheme", ""), (width / 2, "whitespace", "//")):
        values = [row[f"{tok}_final"] for row in rows]
        bars = ax.bar(
            [x + offset for x in xs],
            [v or 0 for v in values],
            width,
            color=[color(exp) for exp in experiments],
            hatch=hatch,
            edgecolor="white",
            alpha=1.0 if tok == "morpheme" else 0.55,
            label=f"{tok} final",
        )
        ax.bar_label(bars, labels=["" if v is None else f"{v:.1f}" for v in values], padding=2, fontsize=8)
    for x, row in zip(xs, rows, strict=True):
        if row["morpheme_final"] is None and row["whitespace_final"] is None:
            text = state_text(row) if row["state"] != "finished" else "no score"
            ax.text(
                x,
                top * 0.04,
                text,
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=9,
                color="firebrick" if row["state"] == "failed" else "dimgray",
            )
    ax.set_xticks(
        xs,
        [plot_label(exp) for exp in experiments],
        rotation=20 if len(rows) > 3 else 0,
        ha="right" if len(rows) > 3 else "center",
    )
    ref = reference(rows)
    handles = [legend_patch("morpheme final (leaderboard)", ""), legend_patch("whitespace final", "//")]
    if ref is not None:
        for tok, style in (("morpheme", "--"), ("whitespace", ":")):
            handles.append(ax.axhline(ref[tok], color="black", linestyle=style, linewidth=1.2,
                                      label=f"longest turn, {tok} ({ref[tok]:.1f})"))
        top = max(top, ref["morpheme"])
    ax.set_ylim(0, top * 1.15)
    finish_axes(ax, "Final dev score by experiment (mean of R1, R2, RL x 100)", "", "final score")
    ax.grid(axis="x", visible=False)
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize="small",
        frameon=False,
    )
    return fig


def legend_patch(label: str, hatch: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(
        facecolor="gray", alpha=1.0 if not hatch else 0.55, hatch=hatch, edgecolor="white", label=label
    )


MEMORY_AXIS = {"gpu": "GPU memory used (GB)", "cuda": "GPU memory used (GB)", "rss": "process RSS (GB)"}


def memory_figure(experiments: list[Experiment], rows: list[dict[str, Any]]) -> Any:
    kinds = sorted({sample["kind"] for exp in experiments for sample in exp.memory})
    if not kinds:
        return None
    fig, axes = new_axes(len(kinds), height=4.2)
    for ax, kind in zip(axes, kinds, strict=True):
        capacity = 0.0
        for exp in experiments:
            samples = [s for s in exp.memory if s["kind"] == kind]
            if not samples:
                continue
            start = min(s["time_s"] for s in samples)
            ax.plot(
                [(s["time_s"] - start) / 60 for s in samples],
                [s["used_mb"] / 1024 for s in samples],
                color=color(exp),
                linewidth=1.6,
                label=plot_label(exp),
            )
            capacity = max([capacity, *(s["total_mb"] or 0 for s in samples)])
        if capacity and kind == "gpu":
            ax.axhline(
                capacity / 1024,
                color="gray",
                linestyle="--",
                linewidth=1,
                label=f"GPU capacity ({capacity / 1024:.1f} GB)",
            )
        ax.set_ylim(bottom=0)
        axis = MEMORY_AXIS.get(kind, f"{kind} memory used (GB)")
        title = axis.split(" (")[0]
        finish_axes(
            ax,
            f"{title[0].upper()}{title[1:]} during each experiment",
            "minutes since the experiment started",
            axis,
        )
    return fig
