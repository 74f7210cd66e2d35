"""The report's matplotlib figures, saved as PNG through the Agg canvas (never pyplot: no display, no
global backend switch in the calling process)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dialsum.fileio import atomic_write_bytes
from dialsum.report.inputs import Experiment
from dialsum.report.results import TOKENIZATIONS, eval_points, loss_points, reference

PLOT_DPI = 110


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
    from matplotlib.figure import Figure  # matplotlib takes a second to import: only where a plot is drawn

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
    from matplotlib import colormaps  # matplotlib: deferred, as above

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
            text = row["status"] if row["state"] != "finished" else "no score"
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
    from matplotlib.patches import Patch  # matplotlib: deferred, as above

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
