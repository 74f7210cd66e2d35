"""The per-dialogue page: every dev dialogue with its references and each output's summary and score.

    dialsum report runs/suites/main5                           # rewrites dialogues.html beside report.html
    dialsum compare runs/a/<time> runs/b/<time> --out runs/compare/ab
    pytest tests/test_dialogue_page.py

`build_document` turns the dev rows and the outputs (each run's summaries; tuned and ensemble outputs where
they exist) into one JSON document: the dialogues split into turns, each output's summary, morpheme final
score and the character spans of the morphemes it shares with the references (`metrics.shared_morpheme_spans`,
the score's own Kiwi analysis), and each output's mean score per topic. `write_page` embeds it in
`dialogues.html` with the page's style and plain JavaScript (this package's `dialogues.css` and
`dialogues.js`), so that the page is one file that loads nothing: no network, no build step.

An output's score on a row is shown only where no choice was made on that row: the rows a tuning searched
(its settings were chosen by their scores) are marked, and neither a summary's score there nor the mean over
them is reported. The page renders a page of dialogues at a time, so 500 dialogues and 7 runs stay fast.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from dialsum.fileio import atomic_write_text
from dialsum.metrics import MASK_TOKEN_RE, Span, score, shared_morpheme_spans

PAGE = "dialogues.html"
NO_TOPIC = "(no topic)"
TURN_RE = re.compile(rf"^\s*({MASK_TOKEN_RE.pattern})\s*:\s?(.*)$")
OutputKind = Literal["run", "tuned", "ensemble"]


@dataclass
class DevRow:
    """One dev dialogue as the runs were scored on it."""

    fname: str
    dialogue: str
    references: list[str]
    topic: str = ""


@dataclass
class PageOutput:
    """One column of the page: a run's own summaries, its tuned ones, or an ensemble's picks.

    `summaries` maps dev fnames to summaries; a row it lacks shows no summary. `chosen_on` names the rows
    whose summaries were chosen by their own scores (a tuning's search part): marked, never scored.
    `sources` says which run an ensemble's pick came from.
    """

    name: str
    kind: OutputKind
    summaries: dict[str, str]
    label: str = ""
    chosen_on: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict)
    note: str = ""


def build_document(title: str, dev: list[DevRow], outputs: list[PageOutput]) -> dict[str, Any]:
    """The page's data: dialogues, outputs (summaries, scores, shared-morpheme spans) and topic means. A summary
    of a row that is not in `dev` is not shown (`dialogue_sources.check_outputs` refuses such a file)."""
    rows = [[i for i, row in enumerate(dev) if row.fname in out.summaries] for out in outputs]
    spans = iter(shared_morpheme_spans(  # one analysis of every distinct text
        [out.summaries[dev[i].fname] for out, kept in zip(outputs, rows, strict=True) for i in kept],
        [dev[i].references for kept in rows for i in kept]))
    columns = [_output_column(out, dev, kept, [next(spans) for _ in kept])
               for out, kept in zip(outputs, rows, strict=True)]
    topics = [row.topic or NO_TOPIC for row in dev]
    return {
        "title": title,
        "dialogues": [{"fname": row.fname, "topic": topic, "turns": split_turns(row.dialogue),
                       "references": row.references} for row, topic in zip(dev, topics, strict=True)],
        "outputs": columns,
        "topics": topic_means(topics, [c["score"] for c in columns]),
    }


def split_turns(dialogue: str) -> list[list[str]]:
    """`#Person1#: 안녕` lines as [speaker, text]; a line without a speaker is [\"\", line]."""
    turns = []
    for line in dialogue.splitlines():
        if not line.strip():
            continue
        match = TURN_RE.match(line)
        turns.append([match.group(1), match.group(2)] if match else ["", line.strip()])
    return turns


def _output_column(out: PageOutput, dev: list[DevRow], rows: list[int], spans: list[list[Span]]) -> dict[str, Any]:
    """One output's values per dev row (None where it has none): summary, score, spans, source, chosen."""
    texts = [out.summaries[dev[i].fname] for i in rows]
    refs = [dev[i].references for i in rows]
    scored = [k for k, i in enumerate(rows) if dev[i].fname not in out.chosen_on]
    per_row = score([texts[k] for k in scored], [refs[k] for k in scored], "morpheme").per_dialogue
    column: dict[str, list[Any]] = {key: [None] * len(dev) for key in ("summary", "score", "spans", "source")}
    for k, i in enumerate(rows):
        column["summary"][i] = texts[k]
        column["spans"][i] = [edge for span in spans[k] for edge in span]
        column["source"][i] = out.sources.get(dev[i].fname)
    for k, triple in zip(scored, per_row, strict=True):
        column["score"][rows[k]] = round(sum(triple) / 3 * 100, 2)
    finals = [sum(triple) / 3 * 100 for triple in per_row]
    return {
        "name": out.name, "label": out.label or out.name, "kind": out.kind, "note": out.note,
        "mean": round(fmean(finals), 2) if finals else None, "scored_rows": len(finals),
        "chosen": [i for i, row in enumerate(dev) if row.fname in out.chosen_on],
        **column,
    }


def topic_means(topics: list[str], scores: list[list[float | None]]) -> list[dict[str, Any]]:
    """Per topic (most dialogues first), its dialogue count and each output's mean score and scored rows."""
    order = sorted(set(topics), key=lambda t: (-topics.count(t), t))
    table = []
    for topic in order:
        rows = [i for i, t in enumerate(topics) if t == topic]
        cells = []
        for column in scores:
            values = [column[i] for i in rows if column[i] is not None]
            cells.append({"mean": round(fmean(values), 2) if values else None, "n": len(values)})
        table.append({"topic": topic, "dialogues": len(rows), "outputs": cells})
    return table


def render_page(document: dict[str, Any]) -> str:
    """The page as one HTML file: style, script and data inline."""
    assets = resources.files("dialsum.report")
    template = (assets / "dialogues.html").read_text(encoding="utf-8")
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # JSON's own escape: nothing in the data can close its <script>
    parts = {
        "TITLE": html.escape(document["title"]),
        "STYLE": (assets / "dialogues.css").read_text(encoding="utf-8"),
        "SCRIPT": (assets / "dialogues.js").read_text(encoding="utf-8"),
        "DATA": data,
    }
    return re.sub(r"/\*@(TITLE|STYLE|SCRIPT|DATA)@\*/", lambda m: parts[m.group(1)], template)


def write_page(out_dir: str | Path, title: str, dev: list[DevRow], outputs: list[PageOutput]) -> Path:
    """Write `out_dir/dialogues.html` atomically; return its path."""
    return atomic_write_text(Path(out_dir) / PAGE, render_page(build_document(title, dev, outputs)))
