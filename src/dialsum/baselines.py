"""Extractive reference summaries: the score a model must beat to show that it reads the dialogue.

    dialsum train CONFIG --init tiny          # metrics.json: "baseline", the longest turn on the same dev rows
    dialsum report runs/suites/demo           # the reference row and the line on the score plot

The longest turn of a dialogue, without its speaker tag, copied as its summary: the stronger of the
two plain extractive baselines on the competition data (the first turn is the other).
"""

from __future__ import annotations

from collections.abc import Sequence

from dialsum.metrics import TOKENIZATIONS, score
from dialsum.runfiles import Baseline

LONGEST_TURN = "longest turn"


def turn_text(turn: str) -> str:
    """`#Person1#: 안녕하세요` -> `안녕하세요`."""
    return turn.split(":", 1)[-1].strip()


def longest_turn(dialogue: str) -> str:
    return turn_text(max(dialogue.split("\n"), key=len))


def longest_turn_scores(dialogues: Sequence[str], references: Sequence[str]) -> Baseline:
    """The longest-turn baseline's final score on these dev rows, in both tokenizations."""
    preds = [longest_turn(d) for d in dialogues]
    refs = [[r] for r in references]
    finals = {tok: round(score(preds, refs, tokenize=tok).final, 4) for tok in TOKENIZATIONS}
    return Baseline(name=LONGEST_TURN, n=len(preds), **finals)
