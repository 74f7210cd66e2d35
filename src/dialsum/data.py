"""Competition data: read and check the CSVs, normalize dialogues, tokenize, pad batches.

    dialsum train configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny
    dialsum predict RUN_DIR --input data/sample/test.csv
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dialsum.csvio import preview, read_table
from dialsum.errors import DialsumError
from dialsum.tokens import IGNORE_INDEX

SEED_STRIDE = 100_003  # a prime above any epoch count: each (seed, epoch) pair gets a shuffle of its own
_SPACES = re.compile(r"[ \t\u00a0]+")
_BREAKS = re.compile(r"\\n|<br\s*/?>|\r\n?")


def normalize_dialogue(text: str) -> str:
    """Literal `\\n` and `<br>` become newlines; spaces collapse; blank lines go."""
    text = _BREAKS.sub("\n", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def normalize_summary(text: str) -> str:
    return _SPACES.sub(" ", _BREAKS.sub(" ", text)).strip()


def read_split(path: str | Path, *, with_summary: bool) -> pd.DataFrame:
    """Read one competition CSV; empty dialogues or summaries are errors that name the rows."""
    columns = ["fname", "dialogue"] + (["summary"] if with_summary else [])
    df = read_table(path, columns, what="data")
    df["fname"] = df["fname"].str.strip()
    for col in columns[1:]:
        empty = [i + 1 for i, v in enumerate(df[col]) if not str(v).strip()]
        if empty:
            raise DialsumError(
                f"{path}: empty {col} in row(s) {preview(empty)} (fname {preview(list(df['fname'].iloc[[e - 1 for e in empty]]))}); "
                f"fill or remove those rows"
            )
    df["dialogue"] = df["dialogue"].map(normalize_dialogue)
    if with_summary:
        df["summary"] = df["summary"].map(normalize_summary)
    return df


@dataclass
class Encoder:
    """Turns dialogues and summaries into model ids the same way for training and generation."""

    tokenizer: Any
    family: str
    prefix: str
    encoder_max_len: int
    decoder_max_len: int

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def inputs(self, dialogues: list[str]) -> list[list[int]]:
        tok = self.tokenizer
        out = []
        for ids in self._ids([self.prefix + d for d in dialogues]):
            if self.family == "bart":
                out.append([tok.bos_token_id] + ids[: self.encoder_max_len - 2] + [tok.eos_token_id])
            else:
                out.append(ids[: self.encoder_max_len - 1] + [tok.eos_token_id])
        return out

    def labels(self, summaries: list[str]) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        return [ids[: self.decoder_max_len - 1] + [eos] for ids in self._ids(summaries)]

    def examples(self, df: pd.DataFrame) -> list[dict[str, list[int]]]:
        inputs = self.inputs(list(df["dialogue"]))
        if "summary" not in df.columns:
            return [{"input_ids": x} for x in inputs]
        return [{"input_ids": x, "labels": y} for x, y in zip(inputs, self.labels(list(df["summary"])), strict=True)]


class Seq2SeqCollator:
    """Dynamic padding: each batch is padded to its own longest input and label, no further."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch  # torch takes seconds to import; data.py is read by commands that never train

        inputs = [f["input_ids"] for f in features]
        width = max(len(r) for r in inputs)
        batch = {
            "input_ids": torch.tensor([r + [self.pad_id] * (width - len(r)) for r in inputs]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in inputs]),
        }
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            lw = max(len(r) for r in labels)
            batch["labels"] = torch.tensor([r + [IGNORE_INDEX] * (lw - len(r)) for r in labels])
        return batch


def padding_efficiency(batches: list[list[int]]) -> float:
    """Real tokens / padded tokens over batches given as lists of sequence lengths."""
    real = sum(sum(b) for b in batches)
    padded = sum(max(b) * len(b) for b in batches if b)
    return real / padded if padded else 1.0


class LengthBucketSampler:
    """Index order for length-aware batches: examples of similar length share a micro-batch.

    Examples are sorted by input length (equal lengths in random order, a new one each epoch). With
    `label_lengths` (seq2seq: the summaries are a separate, shorter sequence), each window of a few
    consecutive micro-batches is then sorted by label length, so the labels pad little too; the window
    (1, 2, 4 or 8 micro-batches) is the one that pads least over the epoch, inputs and labels counted
    together. The order is cut into micro-batches of `batch_size`, and the batches are shuffled. A
    DataLoader reading this order with the same `batch_size` gets exactly these batches, in random
    order: the micro-batch and the effective batch stay what the config says. Unlike a sampler that
    walks each group from long to short, every stretch of training sees all lengths.
    """

    WINDOWS = (1, 2, 4, 8)

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0,
                 label_lengths: list[int] | None = None):
        if label_lengths is not None and len(label_lengths) != len(lengths):
            raise ValueError(f"{len(label_lengths)} label lengths for {len(lengths)} examples")
        self.lengths = lengths
        self.label_lengths = label_lengths
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _cut(self, order: list[int]) -> list[list[int]]:
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _windowed(self, order: list[int], window: int, ties: list[float]) -> list[list[int]]:
        """`order` with each run of `window` micro-batches re-sorted by label length, cut into batches."""
        labels, span = self.label_lengths, window * self.batch_size
        out: list[int] = []
        for start in range(0, len(order), span):
            out += sorted(order[start : start + span], key=lambda i: labels[i] + ties[i])
        return self._cut(out)

    def _padded(self, batches: list[list[int]]) -> int:
        labels = self.label_lengths or [0] * len(self.lengths)
        return sum(len(b) * (max(self.lengths[i] for i in b) + max(labels[i] for i in b)) for b in batches)

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * SEED_STRIDE + self.epoch)
        ties = [rng.random() for _ in self.lengths]
        order = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i] + ties[i])
        if self.label_lengths is None:
            batches = self._cut(order)
        else:
            batches = min((self._windowed(order, w, ties) for w in self.WINDOWS), key=self._padded)
        # The short batch stays last: the DataLoader cuts this flat order into batch_size pieces.
        tail = batches.pop() if len(batches[-1]) < self.batch_size else None
        rng.shuffle(batches)
        return batches + [tail] if tail else batches

    def __iter__(self):
        batches = self.batches()
        self.epoch += 1
        return (i for batch in batches for i in batch)

    def __len__(self) -> int:
        return len(self.lengths)
