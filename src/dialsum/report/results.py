"""The numbers derived from the experiments: result rows, the reference, recommendations, results.json."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dialsum.report.inputs import Experiment, to_number
from dialsum.runfiles import RunMetrics, TuneResult

TOKENIZATIONS = ("morpheme", "whitespace")
SCORE_KEYS = ("rouge1", "rouge2", "rougeL", "final")
STABILITY_DEFINITION = (
    "coefficient of variation (standard deviation / mean) of the logged training loss over the "
    "second half of the steps run; lower is steadier"
)
MIN_STABILITY_POINTS = 3
MEMORY_KIND_TEXT = {
    "cuda": "peak CUDA memory (process)",
    "rss": "peak process RSS",
    "gpu": "peak GPU memory used (monitor)",
}

RESULT_COLUMNS = [
    "name", "label", "description", "state", "failure_kind", "failure_message", "model", "arch", "init",
    "parameters", "trainable_parameters", "micro_batch", "grad_accum", "effective_batch",
    "learning_rate", "epochs", "steps",
    *[f"{tok}_{key}" for tok in TOKENIZATIONS for key in SCORE_KEYS], "dev_n",
    *[f"baseline_{tok}_final" for tok in TOKENIZATIONS], "tuned_final", "tuned_own_final", "tuned_rows",
    "tuned_trials", "tuned_recommended",
    "train_minutes", "wall_minutes", "expected_minutes", "attempts", "slot",
    "peak_memory_mb", "memory_kind", "memory_source", "tokens_per_second", "loss_cv",
    "submission", "run_dir", "config", "adaptations", "notes",
]  # fmt: skip

INDEX_COLUMNS = [
    "name", "label", "submission", "morpheme_final", "whitespace_final", "model", "run_dir",
    "submission_mtime",
]  # fmt: skip


def log_series(log: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value of `key`) sorted by step; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[float, float] = {}
    for entry in log:
        step, value = to_number(entry.get("step")), to_number(entry.get(key))
        if step is not None and value is not None:
            by_step[step] = value
    return sorted(by_step.items())


def loss_points(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return log_series(log, "loss")


def eval_points(log: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return log_series(log, "eval_final")


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
    peak = to_number(exp.metrics.peak_memory_mb)
    if peak is not None:
        return peak, exp.metrics.memory_kind or "rss", "metrics"
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
        "description": m.description or "",
        "state": exp.state,
        "status": rec.status_text(),
        "failure_kind": rec.failure.kind if rec.failure else None,
        "failure_message": rec.failure.message if rec.failure else None,
        "model": m.model_name,
        "arch": m.arch,
        "init": m.init,
        "parameters": m.parameters,
        "trainable_parameters": m.trainable_parameters,
        "micro_batch": m.micro_batch,
        "grad_accum": m.grad_accum,
        "effective_batch": m.effective_batch,
        "learning_rate": m.learning_rate,
        "epochs": m.epochs if m.epochs is not None else last_epoch(exp.log),
        "steps": m.steps,
    }
    row.update(score_columns(m))
    row.update(tuned_columns(exp.tune))
    row.update(
        {
            "train_minutes": minutes(m.train_seconds),
            "wall_minutes": minutes(rec.wall_seconds),
            "expected_minutes": to_number(rec.expected_minutes),
            "attempts": rec.attempts,
            "slot": rec.slot,
            "peak_memory_mb": peak,
            "memory_kind": kind,
            "memory_source": source,
            "tokens_per_second": to_number(m.train_tokens_per_second),
            "loss_cv": loss_stability(loss_points(exp.log)),
            "submission": display_path(exp.submission, out_dir),
            "run_dir": str(exp.run_dir or ""),
            "config": rec.config,
            "adaptations": adaptations(exp),
            "notes": list(exp.notes),
        }
    )
    return row


def score_columns(metrics: RunMetrics) -> dict[str, Any]:
    """Dev scores on one scale, x 100 (metrics.json keeps R1/R2/RL as fractions beside final x 100)."""
    columns: dict[str, Any] = {}
    for tok in TOKENIZATIONS:
        scores = getattr(metrics.dev, tok, None)
        columns.update({f"{tok}_{key}": percent(getattr(scores, key, None)) for key in SCORE_KEYS if key != "final"})
        columns[f"{tok}_final"] = to_number(getattr(scores, "final", None))
    columns["dev_n"] = getattr(getattr(metrics.dev, "morpheme", None), "n", None)
    columns.update({f"baseline_{tok}_final": to_number(getattr(metrics.baseline, tok, None)) for tok in TOKENIZATIONS})
    return columns


def percent(fraction: Any) -> float | None:
    value = to_number(fraction)
    return None if value is None else value * 100


def tuned_columns(tune: TuneResult | None) -> dict[str, Any]:
    """The generation tuning's held-out scores (tune/result.json); a result from before held-out scoring
    chose its settings on the rows it scored them on, so it gives no tuned score."""
    held = tune.heldout if tune else None
    if tune is None or held is None:
        return dict.fromkeys(("tuned_final", "tuned_own_final", "tuned_rows", "tuned_trials", "tuned_recommended"))
    return {"tuned_final": held.tuned, "tuned_own_final": held.own, "tuned_rows": held.rows,
            "tuned_trials": tune.trials, "tuned_recommended": tune.recommended}


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
    for source in (exp.record.adaptations, exp.metrics.adaptations):
        for item in source:
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


# Here rather than with the other fmt_* in render.py: describe_memory needs it, and render imports this module.
def fmt_memory(mb: Any) -> str:
    """1840.5 -> '1.8 GB', 512 -> '512 MB' (binary units, as the GPU tools show them)."""
    value = to_number(mb)
    if value is None:
        return "-"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


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
