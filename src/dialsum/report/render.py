"""The report document as Markdown, and the self-contained HTML page converted from that Markdown."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from markdown_it import MarkdownIt

from dialsum.report.inputs import Experiment, to_number
from dialsum.report.results import (
    MIN_STABILITY_POINTS,
    STABILITY_DEFINITION,
    adaptations,
    fmt_memory,
    reference,
)

STATES = ("finished", "failed", "running", "pending", "skipped")
TABLE_HEADER = [
    "#", "Experiment", "Model", "Params (trainable)", "Batch x accum = eff.", "LR", "Epochs", "Final (morph.)",
    "Tuned (morph.)", "R1 / R2 / RL (morph.)", "Final (ws)", "Train / expected", "Peak memory", "Tokens/s", "State",
]  # fmt: skip

Block = tuple[Any, ...]


def report_blocks(
    title: str,
    generated: str,
    experiments: list[Experiment],
    rows: list[dict[str, Any]],
    recs: list[dict[str, Any]],
    plots: dict[str, Path],
    out_dir: Path,
    ensemble: dict[str, Any] | None = None,
) -> list[Block]:
    """The report as a list of blocks, for `render_markdown`."""
    blocks: list[Block] = [("h", 1, title), ("p", f"{summary_line(rows)} Generated {generated}.")]
    blocks += [
        (
            "p",
            "Scores are on dev; final = (ROUGE-1 + ROUGE-2 + ROUGE-L F1) / 3 x 100, the leaderboard's "
            "number. 'Final' and the recommendations use morpheme tokenization (Kiwi), the leaderboard's; "
            "whitespace-token scores are shown too.",
        )
    ]
    blocks += [("h", 2, "Comparison"), comparison_table(rows, ensemble)]
    blocks += reference_blocks(rows)
    blocks += recommendation_blocks(rows, recs)
    blocks += failure_blocks(experiments)
    blocks += adaptation_blocks(experiments)
    blocks += plot_blocks(plots)
    blocks += tuning_blocks(experiments, out_dir, ensemble)
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


def comparison_table(rows: list[dict[str, Any]], ensemble: dict[str, Any] | None = None) -> Block:
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
            fmt_float(row["tuned_final"]),
            " / ".join(fmt_float(row[f"morpheme_{k}"]) for k in ("rouge1", "rouge2", "rougeL")),
            fmt_float(row["whitespace_final"]),
            fmt_minutes(row["train_minutes"] or row["wall_minutes"], row["expected_minutes"]),
            f"{fmt_memory(row['peak_memory_mb'])} ({row['memory_kind']})" if row["memory_kind"] else "-",
            fmt_float(row["tokens_per_second"], 0),
            row["status"],
        ]
        for i, row in enumerate(rows)
    ]
    ref = reference(rows)
    if ref is not None:
        body.append(["ref", "Longest turn (extractive)", "-", "-", "-", "-", "-", fmt_float(ref["morpheme"]), "-",
                     "-", fmt_float(ref["whitespace"]), "-", "-", "-", "reference"])
    if ensemble:
        names = ", ".join(m["name"] for m in ensemble["members"])
        body.append(["ens", f"MBR ensemble of {names}", "-", "-", "-", "-", "-", fmt_float(ensemble["dev_final"]),
                     "-", "-", "-", "-", "-", "-", "ensemble"])
    return ("table", TABLE_HEADER, body)


def tuning_blocks(experiments: list[Experiment], out_dir: Path, ensemble: dict[str, Any] | None) -> list[Block]:
    """The generation tuning of each tuned experiment (its scores and Optuna's plots), and the ensemble."""
    tuned = [exp for exp in experiments if exp.tune and exp.run_dir is not None]
    blocks: list[Block] = []
    if tuned:
        blocks.append(("h", 2, "Generation tuning"))
        blocks.append(("list", [(exp.label, f"{exp.tune['trials']} trials; on all {exp.tune['dev_rows']} dev rows "
                                f"{exp.tune['own_score']:.2f} with the run's own settings, {exp.tune['best_score']:.2f} "
                                f"tuned ({exp.tune['best']})") for exp in tuned]))
        for exp in tuned:
            for plot, caption in (("optimization_history", "optimization history"),
                                  ("param_importances", "parameter importances")):
                png = exp.run_dir / "tune" / f"{plot}.png"
                if png.is_file():
                    blocks.append(("img", relative(png, out_dir), f"{exp.label}: {caption}"))
    if ensemble:
        blocks.append(("h", 2, "Ensemble"))
        blocks.append(("list", [(m["name"], f"dev {m['dev_final']:.2f}; picked for {m['dev_picks']} dev and "
                                 f"{m['test_picks']} test dialogues") for m in ensemble["members"]]))
        blocks.append(("p", f"The MBR ensemble scores {ensemble['dev_final']:.2f} on dev; its submission is "
                            "ensemble/submission.csv."))
    return blocks


def relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


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
    failed = [exp for exp in experiments if exp.state == "failed" or exp.record.failure]
    if not failed:
        return []
    blocks: list[Block] = [("h", 2, "Failures")]
    for exp in failed:
        failure = exp.record.failure
        kind = failure.kind if failure else "unknown"
        blocks += [("h", 3, f"{both_names(exp.label, exp.name)}: {kind}")]
        blocks += [("p", failure.message if failure else "No failure message was recorded.")]
        lines = list(failure.lines) if failure else []
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


def render_html(markdown_text: str, out_dir: Path) -> str:
    """A self-contained page: the Markdown converted by markdown-it, its PNG plots inlined as base64."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")  # text with "<" or "&" stays text
    tokens = md.parse(markdown_text)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                child.attrSet("src", inline_png(str(child.attrGet("src")), out_dir))
    headings = [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "heading_open"]
    title = html.escape(headings[0] if headings else "Report")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{HTML_STYLE}</style></head><body>\n"
        + md.renderer.render(tokens, md.options, {})
        + "</body></html>\n"
    )


def inline_png(src: str, out_dir: Path) -> str:
    """A relative `.png` reference as a base64 data URI of that file in `out_dir`; any other source as it is."""
    if ":" in src or not src.lower().endswith(".png"):
        return src
    data = base64.b64encode((out_dir / unquote(src)).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


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

