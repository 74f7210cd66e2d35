"""Batched beam-search generation in length order, post-processing, and submission files.

    dialsum predict RUN_DIR --input data/sample/test.csv --out submission.csv

Inputs are sorted by length (longest first, so memory peaks at once), cut into batches by a token
budget (input tokens x beams), and the outputs are put back in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dialsum.config import GenerationSection
from dialsum.csvio import atomic_write_rows
from dialsum.metrics import DEFAULT_DECODER_TOKENS, clean_summary


def token_budget_batches(lengths: list[int], budget: int, beams: int, sort: bool = True,
                         max_batch: int = 256) -> list[list[int]]:
    """Index batches whose padded size (longest x count x beams) stays within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if current and (width * (len(current) + 1) * beams > budget or len(current) >= max_batch):
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


def generation_kwargs(gen: GenerationSection) -> dict[str, Any]:
    return {
        "num_beams": gen.num_beams,
        "max_length": gen.max_length,
        "min_length": gen.min_length,
        "length_penalty": gen.length_penalty,
        "no_repeat_ngram_size": gen.no_repeat_ngram_size,
        "early_stopping": gen.early_stopping,
    }


def generate(model: Any, tokenizer: Any, inputs: list[list[int]], gen: GenerationSection,
             strip_tokens: list[str], progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Summaries for encoded inputs, in the order of `inputs`."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    lengths = [len(x) for x in inputs]
    batches = token_budget_batches(lengths, gen.batch_tokens, gen.num_beams, sort=gen.sort_by_length)
    out: list[str] = [""] * len(inputs)
    model.eval()
    done = 0
    for idx in batches:
        width = max(lengths[i] for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : lengths[i]] = torch.tensor(inputs[i])
            mask[row, : lengths[i]] = 1
        with torch.inference_mode():
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  **generation_kwargs(gen))
        texts = tokenizer.batch_decode(seqs, skip_special_tokens=False)
        for i, text in zip(idx, texts, strict=True):
            out[i] = clean_summary(text, strip_tokens)
        done += len(idx)
        if progress:
            progress(done, len(inputs))
    return out


def write_submission(path: str | Path, fnames: list[str], summaries: list[str]) -> Path:
    """`fname,summary` in the given order; decoder tokens never reach the file (the leaderboard would score them)."""
    clean = [clean_summary(s, DEFAULT_DECODER_TOKENS) for s in summaries]
    return atomic_write_rows(path, ["fname", "summary"], zip(fnames, clean, strict=True))
