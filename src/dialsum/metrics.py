"""The competition score: ROUGE-1/2/L F1, multi-reference, on morphemes or on whitespace words.

    dialsum score --pred submission.csv --gold dev.csv
    dialsum score --pred submission.csv --gold dev.csv --tokenize whitespace --json scores.json
    .venv/bin/pytest tests/test_metrics.py
    .venv/bin/python bench/metric_speed.py --quick

Each prediction is scored against each of its references; the F1 values are averaged over the
references of a dialogue, then over dialogues. `final = (R1 + R2 + RL) / 3 * 100` is the number the
leaderboard shows; `sum = R1 + R2 + RL`.

Two tokenizations:
- `whitespace`: the semantics of the `rouge==1.0.1` package (the baseline's dev scorer), quirks
  included: text split into sentences on '.', words on whitespace, n-grams counted as sets and
  running across sentence boundaries, summary-level union-LCS for ROUGE-L with that package's LCS
  tie-breaking. Computed with set overlaps and a bit-parallel LCS, many times faster.
- `morpheme` (default, as the leaderboard): Korean morphemes from Kiwi, with mask tokens such as
  `#Person1#` kept whole, joined by spaces and then scored like `whitespace`.

A prediction or reference that is empty (or only whitespace, or without any sentence) scores 0.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dialsum.csvio import read_table
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_json, atomic_write_rows
from dialsum.tokens import MASK_TOKEN_PATTERN

TOKENIZATIONS = ("morpheme", "whitespace")
MASK_TOKEN_RE = re.compile(MASK_TOKEN_PATTERN)
DEFAULT_DECODER_TOKENS = ("<s>", "</s>", "<pad>", "<usr>", "<unk>")
_EPS = 1e-8  # the smoothing term of rouge==1.0.1's F1
_MORPH_CACHE_MAX = 200_000

Triple = tuple[float, float, float]


# ----------------------------------------------------------------------------- result type


@dataclass(frozen=True)
class Scores:
    """Averaged F1 scores (0..1), `final` (0..100), `sum` (0..3) and the per-dialogue triples."""

    rouge1: float
    rouge2: float
    rougeL: float
    final: float
    sum: float
    n: int
    tokenize: str
    per_dialogue: list[Triple] = field(default_factory=list, repr=False)
    names: list[str] | None = field(default=None, repr=False)
    decoder_token_rows: int = field(default=0, repr=False)  # predictions that hold <s>, </s>, <pad>, ...

    @classmethod
    def from_per_dialogue(cls, rows: list[Triple], tokenize: str) -> Scores:
        r1, r2, rl = (_mean([row[k] for row in rows]) for k in range(3))
        total = r1 + r2 + rl
        return cls(r1, r2, rl, total / 3 * 100, total, len(rows), tokenize, rows)

    def to_dict(self) -> dict[str, Any]:
        """The summary numbers for JSON (no per-dialogue list)."""
        keys = ("rouge1", "rouge2", "rougeL", "final", "sum", "n", "tokenize")
        return {k: getattr(self, k) for k in keys}

    def per_dialogue_rows(self) -> list[dict[str, Any]]:
        """One dict per dialogue (fname when known, else its index) for error analysis."""
        names = self.names or [str(i) for i in range(len(self.per_dialogue))]
        return [
            {"fname": name, "rouge1": r1, "rouge2": r2, "rougeL": rl, "final": (r1 + r2 + rl) / 3 * 100}
            for name, (r1, r2, rl) in zip(names, self.per_dialogue, strict=True)
        ]


def _mean(values: list[float]) -> float:
    total = 0.0
    for v in values:  # plain left-to-right sum, as rouge==1.0.1 averages
        total += v
    return total / len(values) if values else 0.0


# ----------------------------------------------------------------------------- public API


def score(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str], tokenize: str = "morpheme"
) -> Scores:
    """Score predictions against their references (a list of references per prediction)."""
    _check_tokenize(tokenize)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    for i, group in enumerate(refs):
        if not group:
            raise ValueError(f"dialogue {i} has no reference")
    preds = list(predictions)
    if tokenize == "morpheme":
        spaced = morpheme_texts([*preds, *(r for group in refs for r in group)])
        preds = [spaced[p] for p in preds]
        refs = [[spaced[r] for r in group] for group in refs]
    prepared = _Preparer()
    with _gc_paused():
        rows = [
            _dialogue_scores(prepared(p), [prepared(r) for r in group])
            for p, group in zip(preds, refs, strict=True)
        ]
    return Scores.from_per_dialogue(rows, tokenize)


def pairwise(texts: Sequence[str], tokenize: str = "morpheme") -> list[list[float]]:
    """`final` (mean F1 x 100) of each text scored against each other one: row i, column j is text i as the
    prediction and text j as the reference. Each distinct text is analysed and prepared once (and its
    morphemes come from the cache when they were analysed before)."""
    _check_tokenize(tokenize)
    spaced = morpheme_texts(texts) if tokenize == "morpheme" else {t: t for t in texts}
    prepared = _Preparer()
    items = [prepared(spaced[t]) for t in texts]
    with _gc_paused():
        return [[sum(_pair_scores(a, b)) / 3 * 100 for b in items] for a in items]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Scoring allocates many short-lived, acyclic tuples and sets; cycle collection only slows it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def rouge_pair(prediction: str, reference: str, tokenize: str = "whitespace") -> Triple:
    """ROUGE-1, ROUGE-2, ROUGE-L F1 of one prediction against one reference."""
    result = score([prediction], [[reference]], tokenize)
    return result.per_dialogue[0]


# ----------------------------------------------------------------------------- rouge==1.0.1 semantics


@dataclass(frozen=True)
class _Text:
    """A text split the way rouge==1.0.1 splits it, with its n-gram sets."""

    sentences: tuple[tuple[str, ...], ...]
    sentence_positions: tuple[dict[str, int], ...]  # word -> bitmask of its positions
    unigrams: frozenset[str]
    bigrams: frozenset[tuple[str, str]]


class _Preparer:
    """Prepares each distinct text once per scoring call."""

    def __init__(self) -> None:
        self._seen: dict[str, _Text | None] = {}

    def __call__(self, text: str) -> _Text | None:
        if text not in self._seen:
            self._seen[text] = _prepare(text)
        return self._seen[text]


def _prepare(text: str) -> _Text | None:
    """Sentences on '.', words on whitespace; a whitespace-only sentence is one empty word.

    None when the text is empty, whitespace only, or has no sentence (e.g. '...').
    """
    if not text.strip():
        return None
    sentences = tuple(tuple(piece.split()) or ("",) for piece in text.split(".") if piece)
    if not sentences:
        return None
    words = [w for sentence in sentences for w in sentence]
    return _Text(
        sentences=sentences,
        sentence_positions=tuple(_positions(s) for s in sentences),
        unigrams=frozenset(words),
        bigrams=frozenset(zip(words, words[1:], strict=False)),
    )


def _dialogue_scores(pred: _Text | None, refs: list[_Text | None]) -> Triple:
    triples = [_pair_scores(pred, ref) for ref in refs]
    return (
        _mean([t[0] for t in triples]),
        _mean([t[1] for t in triples]),
        _mean([t[2] for t in triples]),
    )


def _pair_scores(pred: _Text | None, ref: _Text | None) -> Triple:
    if pred is None or ref is None:
        return (0.0, 0.0, 0.0)
    r1 = _f1(len(pred.unigrams & ref.unigrams), len(pred.unigrams), len(ref.unigrams))
    r2 = _f1(len(pred.bigrams & ref.bigrams), len(pred.bigrams), len(ref.bigrams))
    return (r1, r2, _rouge_l(pred, ref))


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    """F1 exactly as rouge==1.0.1 computes it (same operations, same order)."""
    precision = overlap / n_pred if n_pred else 0.0
    recall = overlap / n_ref if n_ref else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + _EPS))


def _rouge_l(pred: _Text, ref: _Text) -> float:
    """Summary-level ROUGE-L: distinct words in the union of the sentence-pair LCSs."""
    union: set[str] = set()
    for ref_words, ref_positions in zip(ref.sentences, ref.sentence_positions, strict=True):
        for pred_words, pred_positions in zip(pred.sentences, pred.sentence_positions, strict=True):
            if pred_positions.keys().isdisjoint(ref_positions):
                continue
            union |= _lcs_words(ref_words, pred_words, pred_positions)
    llcs = len(union)
    recall = llcs / len(ref.unigrams)
    precision = llcs / len(pred.unigrams)
    return 2.0 * ((precision * recall) / (precision + recall + _EPS))


def lcs_words(x: Sequence[str], y: Sequence[str]) -> set[str]:
    """The words of the one longest common subsequence that rouge==1.0.1 reconstructs.

    Bit-parallel LCS rows (Hyyro): bit j-1 of row i is 0 exactly where T[i][j] = T[i][j-1] + 1.
    The package's traceback from (i, j): diagonal on a match; else up when T[i-1][j] > T[i][j-1],
    else left. Off a match T[i][j] = max(up, left), so it moves left exactly when bit j-1 of row i
    is 1 (left == T[i][j]) and up otherwise. A run of left moves ends at the highest bit below j
    that is a match or a 0 in the row, found in one step with `bit_length`.
    """
    return _lcs_words(x, y, _positions(y))


def _positions(words: Sequence[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for j, word in enumerate(words):
        positions[word] = positions.get(word, 0) | (1 << j)
    return positions


def _lcs_words(x: Sequence[str], y: Sequence[str], positions: dict[str, int]) -> set[str]:
    full = (1 << len(y)) - 1
    rows = [full]
    row = full
    for word in x:
        matched = row & positions.get(word, 0)
        row = ((row + matched) | (row - matched)) & full
        rows.append(row)
    remaining = len(y) - row.bit_count()
    found: set[str] = set()
    i, j = len(x), len(y)
    while remaining:
        match_bits = positions.get(x[i - 1], 0)
        stops = (match_bits | (full ^ rows[i])) & ((1 << j) - 1)
        j = stops.bit_length()  # the left run ends at column j (bit j-1 is the stop)
        if (match_bits >> (j - 1)) & 1:
            found.add(x[i - 1])
            remaining -= 1
            j -= 1
        i -= 1
    return found


# ----------------------------------------------------------------------------- morphemes


@functools.lru_cache(maxsize=1)
def _analyzer() -> Any:
    """The Kiwi analyzer, loaded once on first use, with mask tokens kept as single tokens."""
    from kiwipiepy import Kiwi  # Kiwi loads its model in seconds: only when morphemes are scored

    kiwi = Kiwi(num_workers=-1)
    kiwi.add_re_word(MASK_TOKEN_RE.pattern, "NNP")
    return kiwi


_MORPH_CACHE: OrderedDict[str, str] = OrderedDict()


def morpheme_texts(texts: Iterable[str]) -> dict[str, str]:
    """Map each text to its morphemes joined by single spaces (batched analysis, cached per text)."""
    wanted = dict.fromkeys(texts)
    missing = [t for t in wanted if t not in _MORPH_CACHE and t.strip()]
    if missing:
        _remember(zip(missing, _analyzer().tokenize(missing), strict=True))
    return {t: _cached_morphemes(t) for t in wanted}


def _remember(analysed: Iterable[tuple[str, Any]]) -> None:
    """Cache each text's morphemes joined by spaces, dropping the oldest beyond the cache's size."""
    for text, tokens in analysed:
        _MORPH_CACHE[text] = " ".join(token.form for token in tokens)
    while len(_MORPH_CACHE) > _MORPH_CACHE_MAX:
        _MORPH_CACHE.popitem(last=False)


def _cached_morphemes(text: str) -> str:
    if not text.strip():
        return ""
    if text not in _MORPH_CACHE:  # only when evicted within the same call
        _MORPH_CACHE[text] = " ".join(token.form for token in _analyzer().tokenize(text))
    return _MORPH_CACHE[text]


def morphemes(text: str) -> list[str]:
    """The morpheme forms of one text (mask tokens whole)."""
    return morpheme_texts([text])[text].split()


def clear_morpheme_cache() -> None:
    _MORPH_CACHE.clear()


Span = tuple[int, int]


def shared_morpheme_spans(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[Span]]:
    """For each prediction, the character spans `[start, end)` of its morphemes that are words of one of its
    references as the morpheme score counts them (what ROUGE-1 rewards), merged where they overlap or touch.

    The same Kiwi analysis as `score` (mask tokens whole); a contracted syllable such as 했 (하 + 었) is one
    span, highlighted when either of its morphemes is shared. The analyses are cached for scoring.
    """
    texts = [*predictions, *(r for group in references for r in group)]
    located = _located_morphemes(texts)
    out = []
    for prediction, group in zip(predictions, references, strict=True):
        words = {w for ref in group for form, _, _ in located[ref] for w in _scored_words(form)}
        spans = [(start, end) for form, start, end in located[prediction]
                 if any(w in words for w in _scored_words(form))]
        out.append(_merged(spans))
    return out


def _located_morphemes(texts: Sequence[str]) -> dict[str, list[tuple[str, int, int]]]:
    """Each distinct text's morphemes as (form, start, end) in its characters; the joined forms are cached."""
    wanted = [t for t in dict.fromkeys(texts) if t.strip()]
    analysed = list(zip(wanted, (list(tokens) for tokens in _analyzer().tokenize(wanted)), strict=True))
    _remember(analysed)
    located = {text: [(t.form, t.start, t.start + t.len) for t in tokens] for text, tokens in analysed}
    return {text: located.get(text, []) for text in texts}


def _scored_words(form: str) -> list[str]:
    """The words a morpheme becomes in the score (forms joined by spaces, split on '.' and whitespace)."""
    return [word for piece in form.split(".") for word in piece.split()]


def _merged(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# ----------------------------------------------------------------------------- files


def score_files(
    pred_path: str | Path,
    gold_path: str | Path,
    tokenize: str = "morpheme",
    json_out: str | Path | None = None,
    rows_out: str | Path | None = None,
) -> Scores:
    """Score a `fname,summary` prediction CSV against a gold CSV, matching rows by fname.

    Predictions are scored exactly as written, as the leaderboard scores a submission; the rows
    that hold decoder tokens (`<s>`, `</s>`, `<pad>`, ...) are counted for a warning. Gold holds one
    reference per row (`summary`) or several (`summary1` .. `summaryN`). `rows_out` gets one row per
    dialogue (scores, prediction, references) for error analysis.
    """
    if tokenize not in TOKENIZATIONS:
        raise DialsumError(f"--tokenize {tokenize!r} is not known; use one of {', '.join(TOKENIZATIONS)}")
    pred = read_table(pred_path, ["fname", "summary"], what="prediction")
    gold = read_table(gold_path, ["fname"], what="gold")
    columns = reference_columns(gold.columns, gold_path)
    names = [str(n).strip() for n in gold["fname"]]
    pred_by_name = {str(n).strip(): str(s) for n, s in zip(pred["fname"], pred["summary"], strict=True)}
    _check_same_names(names, list(pred_by_name), pred_path, gold_path)
    references = _gold_references(gold, columns, names, gold_path)
    predictions = [pred_by_name[n] for n in names]
    flagged = sum(any(t in p for t in DEFAULT_DECODER_TOKENS) for p in predictions)
    result = replace(score(predictions, references, tokenize), names=names, decoder_token_rows=flagged)
    if json_out is not None:
        extra = {"references_per_dialogue": len(columns), "pred": str(pred_path), "gold": str(gold_path),
                 "decoder_token_rows": flagged}
        atomic_write_json(json_out, {**result.to_dict(), **extra})
    if rows_out is not None:
        header = ["fname", "final", "rouge1", "rouge2", "rougeL", "prediction", "references"]
        rows = [[r["fname"], round(r["final"], 4), round(r["rouge1"], 6), round(r["rouge2"], 6),
                 round(r["rougeL"], 6), p, " || ".join(refs)]
                for r, p, refs in zip(result.per_dialogue_rows(), predictions, references, strict=True)]
        atomic_write_rows(rows_out, header, rows)
    return result


def reference_columns(columns: Iterable[str], gold_path: str | Path) -> list[str]:
    """`summary1..summaryN` in numeric order when present, else `summary`."""
    numbered = [c for c in columns if re.fullmatch(r"summary\d+", c)]
    if numbered:
        return sorted(numbered, key=lambda c: int(c[len("summary") :]))
    if "summary" in columns:
        return ["summary"]
    raise DialsumError(
        f"{gold_path}: no reference column; expected `summary` or `summary1`..`summaryN`"
        f" (found {', '.join(columns)})"
    )


def _check_same_names(gold: list[str], pred: list[str], pred_path: str | Path, gold_path: str | Path) -> None:
    gold_set, pred_set = set(gold), set(pred)
    missing = [n for n in gold if n not in pred_set]
    extra = [n for n in pred if n not in gold_set]
    if not missing and not extra:
        return
    raise DialsumError(
        f"{pred_path} and {gold_path} hold different fnames: {len(missing)} gold fname(s) missing from"
        f" the predictions ({_names(missing)}), {len(extra)} prediction fname(s) not in gold"
        f" ({_names(extra)}); predict exactly the gold fnames"
    )


def _names(items: list[str], limit: int = 10) -> str:
    if not items:
        return "none"
    return ", ".join(items[:limit]) + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _gold_references(
    gold: Any, columns: list[str], names: list[str], gold_path: str | Path
) -> list[list[str]]:
    references = [[str(v) for v in row] for row in gold[columns].itertuples(index=False)]
    for name, group in zip(names, references, strict=True):
        for column, text in zip(columns, group, strict=True):
            if not text.strip():
                raise DialsumError(
                    f"{gold_path}: empty reference in column {column} for fname {name}; fill it or drop the row"
                )
    return references


def special_token_warning(result: Scores, pred_path: str | Path) -> str | None:
    """A warning when predictions hold decoder tokens, which the leaderboard scores as text."""
    if not result.decoder_token_rows:
        return None
    return (f"{pred_path}: {result.decoder_token_rows} of {result.n} predictions hold decoder tokens "
            f"({', '.join(DEFAULT_DECODER_TOKENS)}); they are scored as written, as the leaderboard would; "
            "remove them before submitting")


def format_scores(result: Scores) -> str:
    """A small table for the terminal that says which tokenization was used."""
    if result.tokenize == "morpheme":
        how = "morpheme (Kiwi morphemes, mask tokens whole): the leaderboard's tokenization"
    else:
        how = "whitespace (rouge==1.0.1, the baseline's dev scorer); the leaderboard tokenizes by morpheme"
    lines = [
        f"tokenization: {how}",
        f"{'metric':<8} {'score':>8}",
        f"{'ROUGE-1':<8} {result.rouge1:>8.4f}",
        f"{'ROUGE-2':<8} {result.rouge2:>8.4f}",
        f"{'ROUGE-L':<8} {result.rougeL:>8.4f}",
        f"{'final':<8} {result.final:>8.2f}   (R1 + R2 + RL) / 3 * 100",
        f"{'n':<8} {result.n:>8d}",
    ]
    return "\n".join(lines)


def _check_tokenize(tokenize: str) -> None:
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize={tokenize!r}; use one of {', '.join(TOKENIZATIONS)}")
