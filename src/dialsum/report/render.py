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
from dialsum.runfiles import EnsembleResult

STATES = ("finished", "failed", "running", "pending", "skipped")
SCORE_HEADER = [
    "#", "Experiment", "Final (morph.)", "R1 / R2 / RL (morph.)", "Final (ws)", "Tuned (morph.)", "State",
]  # fmt: skip
SETUP_HEADER = ["#", "Experiment", "Model", "Params (trainable)", "Batch x accum = eff.", "LR", "Epochs"]
COST_HEADER = ["#", "Experiment", "Train time", "Expected", "Peak memory", "Tokens/s"]
INIT_TEXT = {"tiny": "tiny copy of {}", "random": "{}, random weights"}

Block = tuple[Any, ...]


def report_blocks(
    title: str,
    generated: str,
    experiments: list[Experiment],
    rows: list[dict[str, Any]],
    recs: list[dict[str, Any]],
    plots: dict[str, Path],
    out_dir: Path,
    ensemble: EnsembleResult | None = None,
    description: str = "",
) -> list[Block]:
    """The report as a list of blocks, for `render_markdown`; the suite's `description` heads it."""
    blocks: list[Block] = [("h", 1, title)]
    blocks += [("p", description[:1].upper() + description[1:] + ".")] if description else []
    blocks += [("p", f"{summary_line(rows)} Generated {generated}.")]
    blocks += [
        (
            "p",
            "Scores are on dev, all x 100: R1, R2 and RL are ROUGE-1, ROUGE-2 and ROUGE-L F1, and final is their "
            "mean, the leaderboard's number. 'Final' and the recommendations use morpheme tokenization (Kiwi), "
            "the leaderboard's; whitespace-token scores are shown too. 'Tuned' is the tuned generation's score on "
            "dev rows its search did not see, beside the run's own settings on the same rows.",
        )
    ]
    blocks += [("h", 2, "Scores"), *described(rows), score_table(rows, ensemble)]
    blocks += dialogue_page_blocks(plots)
    blocks += reference_blocks(rows)
    blocks += [("h", 2, "Setup"), setup_table(rows)]
    blocks += [("h", 2, "Cost"), cost_table(rows)]
    blocks += expected_blocks(rows)
    blocks += recommendation_blocks(rows, recs)
    blocks += failure_blocks(experiments)
    blocks += adaptation_blocks(experiments)
    blocks += plot_blocks(plots)
    blocks += tuning_blocks(experiments, out_dir, ensemble)
    notes = [(exp.label, "; ".join(exp.notes)) for exp in experiments if exp.notes]
    if notes:
        blocks += [("h", 2, "Data notes"), ("list", notes)]
    files = ["results.csv", "results.json", "experiment_index.csv", "report.html"]
    files += ["dialogues.html"] if "dialogues_html" in plots else []
    blocks += [("h", 2, "Files"), ("list", [("", f) for f in files])]
    return blocks


def dialogue_page_blocks(paths: dict[str, Path]) -> list[Block]:
    """The link to the per-dialogue page, where one was written."""
    if "dialogues_html" not in paths:
        return []
    return [("p", "Every dev dialogue with each run's summary (tuned and ensemble outputs too), its score and "
                  "the morphemes it shares with the references, sorted and filtered as you choose, with each "
                  "run's mean score per topic: [dialogues.html](dialogues.html).")]


def summary_line(rows: list[dict[str, Any]]) -> str:
    found = [row["state"] for row in rows]
    order = [*STATES, *sorted(set(found) - set(STATES))]
    states = ", ".join(f"{found.count(state)} {state}" for state in order if state in found)
    wall = sum(row["wall_minutes"] or 0 for row in rows)
    expected = sum(row["expected_minutes"] or 0 for row in rows)
    scaled = any(row["init"] in INIT_TEXT for row in rows)
    tail = ""
    if expected:
        tail = f" (the full-size models: {expected:.0f} min expected)" if scaled else f" (expected {expected:.0f} min)"
    return f"{len(rows)} experiment(s): {states}; total wall time {wall:.1f} min{tail}."


def described(rows: list[dict[str, Any]]) -> list[Block]:
    """What each experiment tries (its config's experiment.description), above the tables."""
    items = [(row["label"], row["description"]) for row in rows if row["description"]]
    return [("list", items)] if items else []


def score_table(rows: list[dict[str, Any]], ensemble: EnsembleResult | None = None) -> Block:
    body = [
        [
            str(i + 1),
            row["label"],
            fmt_float(row["morpheme_final"]),
            rouge_text(row),
            fmt_float(row["whitespace_final"]),
            tuned_text(row),
            row["status"],
        ]
        for i, row in enumerate(rows)
    ]
    ref = reference(rows)
    if ref is not None:
        body.append(["ref", "Longest turn (extractive)", fmt_float(ref["morpheme"]), "-",
                     fmt_float(ref["whitespace"]), "-", "reference"])
    if ensemble:
        final = fmt_float(ensemble.dev_final) if ensemble.score_is_honest else "-"
        body.append(["ens", ensemble_label(ensemble), final, "-", "-", "-", "ensemble"])
    return ("table", SCORE_HEADER, body)


def rouge_text(row: dict[str, Any]) -> str:
    """'61.81 / 42.19 / 58.99' (x 100, as the finals); '-' for a run without scores."""
    parts = [row[f"morpheme_{k}"] for k in ("rouge1", "rouge2", "rougeL")]
    return "-" if all(p is None for p in parts) else " / ".join(fmt_float(p) for p in parts)


def tuned_text(row: dict[str, Any]) -> str:
    """'44.90 (own 44.02; 100 held-out rows)'."""
    if row["tuned_final"] is None:
        return "-"
    return f"{row['tuned_final']:.2f} (own {fmt_float(row['tuned_own_final'])}; {row['tuned_rows']} held-out rows)"


def ensemble_label(ensemble: EnsembleResult) -> str:
    names = ", ".join(m.name for m in ensemble.members)
    rows = ensemble.dev_rows
    on = f", on the {rows} dev rows every member's tuning held out" if ensemble.tuned and rows else ""
    return f"MBR ensemble of {names}{on}"


def setup_table(rows: list[dict[str, Any]]) -> Block:
    body = [
        [
            str(i + 1),
            row["label"],
            model_text(row),
            f"{fmt_count(row['parameters'])} ({fmt_count(row['trainable_parameters'])})",
            batch_text(row),
            fmt_lr(row["learning_rate"]),
            fmt_float(row["epochs"], 1),
        ]
        for i, row in enumerate(rows)
    ]
    return ("table", SETUP_HEADER, body)


def cost_table(rows: list[dict[str, Any]]) -> Block:
    body = [
        [
            str(i + 1),
            row["label"],
            fmt_minutes(row["train_minutes"] or row["wall_minutes"]),
            expected_text(row),
            f"{fmt_memory(row['peak_memory_mb'])} ({row['memory_kind']})" if row["memory_kind"] else "-",
            fmt_float(row["tokens_per_second"], 0),
        ]
        for i, row in enumerate(rows)
    ]
    return ("table", COST_HEADER, body)


def expected_text(row: dict[str, Any]) -> str:
    """The suite file's expected minutes, which are the full-size model's: said so beside a scaled-down copy."""
    if row["expected_minutes"] is None:
        return "-"
    return fmt_minutes(row["expected_minutes"], 0) + (" (full-size model)" if row["init"] in INIT_TEXT else "")


def model_text(row: dict[str, Any]) -> str:
    """The checkpoint, and what was built from it: a tiny copy of its family, or its architecture with
    random weights (the hub id alone would claim the real model)."""
    if not row["model"]:
        return "-"
    return INIT_TEXT.get(row["init"], "{}").format(row["model"])


def expected_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    if not any(row["expected_minutes"] for row in rows):
        return []
    return [("p", "Train time is the training alone (the clock stops while dev is scored). Expected is the "
                  "suite file's estimate for each experiment's full-size model trained as configured (the "
                  "seed's, on one 24 GB RTX 3090): a tiny or random-weight copy, one epoch or a step limit "
                  "takes a fraction of it.")]


def tuning_blocks(experiments: list[Experiment], out_dir: Path, ensemble: EnsembleResult | None) -> list[Block]:
    """The generation tuning of each tuned experiment (its scores and Optuna's plots), and the ensemble."""
    tuned = [exp for exp in experiments if exp.tune and exp.run_dir is not None]
    blocks: list[Block] = []
    if tuned:
        blocks.append(("h", 2, "Generation tuning"))
        blocks.append(("list", [(exp.label, exp.tune.describe()) for exp in tuned if exp.tune]))
        for exp in tuned:
            for plot, caption in (("optimization_history", "optimization history"),
                                  ("param_importances", "parameter importances")):
                png = exp.run_dir / "tune" / f"{plot}.png"
                if png.is_file():
                    blocks.append(("img", relative(png, out_dir), f"{exp.label}: {caption}"))
    if ensemble:
        blocks += ensemble_blocks(ensemble)
    return blocks


def ensemble_blocks(ensemble: EnsembleResult) -> list[Block]:
    rows = ensemble.dev_rows
    where = (f"the {rows} dev rows every member's tuning held out" if ensemble.tuned else
             f"{'all ' + str(rows) if rows else 'all'} dev rows")
    weights = ("each member weighted by its dev score on the other half of the rows (even and odd rows)"
               if ensemble.weighted else "every member weighted equally")
    score = (f"The MBR ensemble scores {ensemble.dev_final:.2f} on {where}, beside its members' scores on the same "
             f"rows above; {weights}." if ensemble.score_is_honest else
             "ensemble/ensemble.json was written before ensembles scored only rows no choice was made on (its "
             "weights or its members' tunings were measured on the rows it was scored on), so its score is not "
             "shown; build the ensemble again.")
    return [
        ("h", 2, "Ensemble"),
        ("list", [(m.name, f"dev {m.dev_final:.2f}; picked for {m.dev_picks} dev and {m.test_picks} test dialogues")
                  for m in ensemble.members]),
        ("p", f"{score} Its submission is ensemble/submission.csv."),
    ]


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
    """What the experiments share is shown once, then each one's own."""
    blocks: list[Block] = [("h", 2, "Adaptations")]
    adapted = [(exp, items) for exp in experiments if (items := adaptations(exp))]
    if not adapted:
        return blocks + [("p", "No experiment needed an adaptation.")]
    shared = [item for item in adapted[0][1] if all(item in items for _, items in adapted)] if len(adapted) > 1 else []
    if shared:
        who = (f"All {len(adapted)} experiments" if len(adapted) == len(experiments) else
               "Shared by " + ", ".join(exp.label for exp, _ in adapted))
        blocks += [("h", 3, who), ("list", [("", item) for item in shared])]
    for exp, items in adapted:
        own = [item for item in items if item not in shared]
        if own:
            blocks += [("h", 3, both_names(exp.label, exp.name)), ("list", [("", item) for item in own])]
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


# Laid out for a laptop screen: the page never scrolls sideways at 1,366 pixels (tested in Chromium); long
# hub ids, paths and log lines wrap inside their cell or block instead of widening the page.
HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222;"
    "line-height:1.45}table{border-collapse:collapse;font-size:.9em;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:.3em .5em;overflow-wrap:anywhere;vertical-align:top}"
    "td{font-variant-numeric:tabular-nums}th{background:#f3f3f3;text-align:left}"
    "tr:nth-child(even){background:#fafafa}pre{background:#f6f6f6;padding:.8em;white-space:pre-wrap;"
    "overflow-wrap:anywhere}li{overflow-wrap:anywhere}img{max-width:100%;display:block;margin:1em 0}"
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


def fmt_minutes(value: Any, digits: int = 1) -> str:
    """'2.1 min'; '-' when unknown."""
    number = to_number(value)
    return "-" if number is None else f"{number:.{digits}f} min"


def fmt_float(value: Any, digits: int = 2) -> str:
    number = to_number(value)
    return "-" if number is None else f"{number:.{digits}f}"


def fmt_lr(value: Any) -> str:
    number = to_number(value)
    return "-" if number is None else f"{number:.1e}"


def both_names(label: str, name: str) -> str:
    """'KoBART baseline (kobart_baseline)', or just the name when there is no separate label."""
    return name if label == name else f"{label} ({name})"

