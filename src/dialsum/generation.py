"""Batched beam-search generation in length order, post-processing, submission files, and the
Trainer's metric glue (decode generated ids, strip decoder tokens, score).

    dialsum predict RUN_DIR --input data/sample/test.csv --out submission.csv

Inputs are sorted by length (longest first, so memory peaks at once), cut into batches by a token
budget (tokens x beams: the input for seq2seq; prompt plus `max_length` new tokens for a causal LM,
whose cache holds both), and the outputs are put back in input order. Seq2seq inputs are padded on
the right; causal prompts on the left, so that every row continues from its last prompt token, and
the prompt is cut from the output. Decoded summaries lose the model's own tokens (`<s>`, `</s>`,
`<pad>`, `<usr>`, ...) and keep the mask tokens; `generation.trim_unfinished` also cuts a last
sentence that the length limit left unfinished.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dialsum.fileio import atomic_write_rows
from dialsum.metrics import DEFAULT_DECODER_TOKENS, MASK_TOKEN_RE, TOKENIZATIONS, score
from dialsum.sections import GenerationSection

# Rows per generation batch at most, whatever the budget: the budget counts a seq2seq batch's inputs only, and
# this bounds what it leaves out (each row's beams x max_length decoder states), which short inputs would let grow.
MAX_BATCH_ROWS = 256


def token_budget_batches(lengths: list[int], budget: int, beams: int, sort: bool = True,
                         max_batch: int = MAX_BATCH_ROWS) -> list[list[int]]:
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


def generation_kwargs(gen: GenerationSection, causal: bool = False) -> dict[str, Any]:
    """transformers' generate() arguments; lengths count new tokens (a causal LM's prompt is not counted)."""
    lengths = ({"max_new_tokens": gen.max_length, "min_new_tokens": gen.min_length} if causal else
               {"max_length": gen.max_length, "min_length": gen.min_length})
    return {
        "num_beams": gen.num_beams,
        **lengths,
        "length_penalty": gen.length_penalty,
        "no_repeat_ngram_size": gen.no_repeat_ngram_size,
        "repetition_penalty": gen.repetition_penalty,
        "early_stopping": gen.early_stopping,
        "do_sample": False,  # an instruct checkpoint's generation_config may sample; summaries are searched
    }


def is_causal(model: Any) -> bool:
    return not model.config.is_encoder_decoder


def stop_kwargs(model: Any, tokenizer: Any) -> dict[str, Any]:
    """A causal LM stops at any end token of its generation config or its tokenizer, and pads with the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    eos = sorted({int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None})
    return {"eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}


# A seq2seq decoder's rows open with one token before what it generates: its decoder start.
DECODER_START_WIDTH = 1


class NewTokensNoRepeatNGram:
    """`no_repeat_ngram_size` over the generated tokens only. transformers' own processor reads a decoder-only
    model's whole sequence, so it would also forbid every n-gram of the dialogue in the prompt (names,
    `#Person1#은 ...`). A transformers LogitsProcessor."""

    def __init__(self, size: int, prompt_len: int):
        self.size, self.prompt_len = size, prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        n = self.size
        for row, ids in enumerate(input_ids[:, self.prompt_len:].tolist()):
            if len(ids) < n - 1:
                continue
            prefix = ids[len(ids) - n + 1:]
            banned = {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i:i + n - 1] == prefix}
            scores[row, list(banned)] = float("-inf")
        return scores


def penalties_on_generated(gen: GenerationSection, skip: int) -> dict[str, Any]:
    """generate() arguments that make n-gram blocking and the repetition penalty act on the generated tokens
    only, as the config says ("tokens already generated"); `skip` is the width of what precedes them.
    transformers' processors read the whole sequence: a causal LM's prompt, whose repetition penalty would
    discourage every token of the dialogue (names, `#Person1#`, key nouns) from the first step, and a
    seq2seq decoder's start token, which for facebook's BART is the end token: penalised, it would lengthen
    every summary (KoBART's is `<usr>`, T5's its padding token). The penalty is transformers' own processor,
    told to skip `skip` tokens (every row of a left-padded batch has the same prompt width, so one length
    skips it, and the processor holds no per-row state: the beam loop keeps running it when inputs leave
    the batch)."""
    # transformers takes seconds to import: only where it is used
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    processors: list[Any] = []
    if gen.no_repeat_ngram_size:
        processors.append(NewTokensNoRepeatNGram(gen.no_repeat_ngram_size, skip))
    if gen.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(gen.repetition_penalty, prompt_ignore_length=skip))
    if not processors:
        return {}
    return {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "logits_processor": LogitsProcessorList(processors)}


def _padded(rows: list[list[int]], pad: int, left: bool) -> tuple[Any, Any]:
    import torch  # torch takes seconds to import: only where it is used

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def generate(model: Any, tokenizer: Any, inputs: list[list[int]], gen: GenerationSection,
             strip_tokens: list[str], progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Summaries for encoded inputs (seq2seq inputs or causal prompts), in the order of `inputs`."""
    return [c[0] for c in generate_candidates(model, tokenizer, inputs, gen, strip_tokens, 1, progress)]


def generate_candidates(model: Any, tokenizer: Any, inputs: list[list[int]], gen: GenerationSection,
                        strip_tokens: list[str], k: int,
                        progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
    """The `k` best beams of each input, best first (beams raised to `k` where fewer), in input order."""
    import torch  # torch: deferred, as above

    device = next(model.parameters()).device
    causal = is_causal(model)
    if k > gen.num_beams:
        gen = gen.model_copy(update={"num_beams": k})
    kwargs = generation_kwargs(gen, causal) | (stop_kwargs(model, tokenizer) if causal else {})
    if k > 1:
        kwargs["num_return_sequences"] = k
    if gen.drop_finished and gen.num_beams > 1:
        # beam imports torch at once; commands that only read runs import this module without it
        from dialsum.beam import drop_finished_beam_search

        kwargs["custom_generate"] = drop_finished_beam_search
    end_ids = torch.tensor(kwargs.get("eos_token_id") or [tokenizer.eos_token_id])
    new_tokens = gen.max_length if causal else 0
    lengths = [len(x) + new_tokens for x in inputs]
    batches = token_budget_batches(lengths, gen.batch_tokens, gen.num_beams, sort=gen.sort_by_length)
    out: list[list[str]] = [[] for _ in inputs]
    model.eval()
    done = 0
    for idx in batches:
        ids, mask = _padded([inputs[i] for i in idx], tokenizer.pad_token_id, left=causal)
        batch_kwargs = kwargs | penalties_on_generated(gen, ids.shape[1] if causal else DECODER_START_WIDTH)
        with torch.inference_mode():
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **batch_kwargs)
        if causal:
            seqs = seqs[:, ids.shape[1]:]  # the continuation only
        body = seqs if causal else seqs[:, DECODER_START_WIDTH:]  # a seq2seq row opens with its decoder start
        ended = torch.isin(body.cpu(), end_ids).any(dim=1).tolist()  # false: cut by the length limit
        texts = tokenizer.batch_decode(seqs, skip_special_tokens=False)
        for row, (text, done_row) in enumerate(zip(texts, ended, strict=True)):  # k rows per input, in order
            out[idx[row // k]].append(finish_summary(text, strip_tokens, gen.trim_unfinished and not done_row))
        done += len(idx)
        if progress:
            progress(done, len(inputs))
    return out


_SENTENCE_END = re.compile(r"[.!?。](?=\s|$)")


def trim_unfinished(text: str) -> str:
    """Cut what follows the last sentence end (. ! ? followed by a space or the end), when anything does;
    a text with no sentence end is kept whole. `3.5` is not a sentence end."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] < len(text) else text


def finish_summary(text: str, strip_tokens: Sequence[str], trim: bool = False) -> str:
    """A decoded summary as submitted: model tokens removed, whitespace collapsed, optionally trimmed."""
    text = clean_summary(text, strip_tokens)
    return trim_unfinished(text) if trim else text


def write_submission(path: str | Path, fnames: list[str], summaries: list[str]) -> Path:
    """`fname,summary` in the given order; decoder tokens never reach the file (the leaderboard would score them)."""
    clean = [clean_summary(s, DEFAULT_DECODER_TOKENS) for s in summaries]
    return atomic_write_rows(path, ["fname", "summary"], zip(fnames, clean, strict=True))


# ---------------------------------------------------------------- decoding and the Trainer's metric


def decoder_tokens_to_strip(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens minus mask tokens, plus `<usr>` and the usual BART tokens.

    Longest first, so that a token containing another is removed whole.
    """
    declared = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values():
        if getattr(added, "special", False):
            declared.add(str(added.content))
    tokens = {t for t in declared | set(DEFAULT_DECODER_TOKENS) if t and not MASK_TOKEN_RE.fullmatch(t)}
    return sorted(tokens, key=lambda t: (-len(t), t))


def clean_summary(text: str, strip_tokens: Sequence[str]) -> str:
    """Replace each strip token by a space, collapse whitespace, strip (mask tokens are kept)."""
    pattern = _strip_pattern(tuple(strip_tokens))
    if pattern is not None:
        text = pattern.sub(" ", text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=64)  # one pattern per tokenizer's set of special tokens: a handful in a process
def _strip_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    ordered = sorted((t for t in tokens if t), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in ordered)) if ordered else None


def make_compute_metrics(tokenizer: Any, tokenize: str = "morpheme") -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`.

    Decodes generated ids and labels (negative ids such as IGNORE_INDEX padding dropped) without skipping
    special tokens, removes the decoder tokens, keeps mask tokens, and scores.
    """
    if tokenize not in TOKENIZATIONS:
        raise ValueError(f"tokenize={tokenize!r}; use one of {', '.join(TOKENIZATIONS)}")
    strip = decoder_tokens_to_strip(tokenizer)

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        pred_texts = decode_clean(tokenizer, preds, strip)
        label_texts = decode_clean(tokenizer, labels, strip)
        result = score(pred_texts, [[t] for t in label_texts], tokenize)
        return {k: float(getattr(result, k)) for k in ("rouge1", "rouge2", "rougeL", "final")}

    return compute_metrics


def decode_clean(tokenizer: Any, ids: Any, strip_tokens: Sequence[str]) -> list[str]:
    """Decode a batch of id rows (logits are arg-maxed; negative ids dropped) into clean summaries."""
    import numpy as np  # numpy: only where predictions are decoded

    array = np.asarray(ids)
    if array.ndim == 3:
        array = array.argmax(-1)
    rows = [[int(t) for t in row if t >= 0] for row in array.reshape(len(array), -1)]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return [clean_summary(t, strip_tokens) for t in texts]
