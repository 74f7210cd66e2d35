"""Prompts for decoder-only (causal) models: instruction + dialogue, the summary as the completion.

    dialsum train configs/experiments/05_solar_10.7b_qlora.yaml --init tiny --max-steps 20
    pytest tests/test_prompt.py

A causal LM reads `prompt.template` (the instruction and the dialogue), wrapped as a user turn in the
tokenizer's chat template when it has one and `prompt.chat_template` is true, and learns to continue
with the summary and its end token. Training rows are `prompt ids + summary ids + [eos]`, with the
loss on the summary and the end token only (labels `IGNORE_INDEX` over the prompt). A dialogue longer than
`tokenizer.encoder_max_len` (the whole prompt's budget) is cut, never the instruction, the template's
tail or the summary. The prompt is tokenized in three pieces, the template's head, the dialogue and
its tail, the same way for training and generation, so both see identical ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dialsum.data import Encoder
from dialsum.errors import DialsumError
from dialsum.sections import DIALOGUE_SLOT, INSTRUCTION_SLOT, ExperimentConfig, PromptSection
from dialsum.tokens import IGNORE_INDEX

_SENTINEL = "\u2063DIALOGUE\u2063"  # invisible separators: no chat template alters them


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def adapt_chat_template(cfg: ExperimentConfig, tokenizer: Any, adaptations: list[str]) -> None:
    """prompt.chat_template asks for a template the tokenizer may not have: then the plain one, noted."""
    if cfg.prompt.chat_template and not has_chat_template(tokenizer):
        adaptations.append("prompt.chat_template=true: the tokenizer has no chat template; using prompt.template "
                           "as plain text")
        cfg.prompt.chat_template = False


def adapt_padding(tokenizer: Any, adaptations: list[str]) -> None:
    """Many causal tokenizers have no padding token; batches need one (padded positions are masked)."""
    if tokenizer.pad_token is not None:
        return
    pad = tokenizer.unk_token or tokenizer.eos_token
    if pad is None:
        raise DialsumError("the tokenizer has no padding, unknown or end token; set one in its tokenizer_config.json")
    tokenizer.pad_token = pad
    adaptations.append(f"tokenizer: no padding token; padding with {pad} (padded positions are masked out)")


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer opens a text with its start token when left to itself."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("요약", add_special_tokens=True)["input_ids"][:1] == [bos]


@dataclass
class CausalEncoder:
    """Prompt and completion ids for a causal LM, the same for training and generation."""

    tokenizer: Any
    prompt: PromptSection
    prompt_max_len: int
    summary_max_len: int
    _pieces: tuple[list[int], list[int]] | None = field(default=None, repr=False)

    def prompt_text(self, dialogue: str) -> str:
        """The prompt as text (chat template applied when configured)."""
        head, tail = self._split()
        return head + dialogue + tail

    def _split(self) -> tuple[str, str]:
        p = self.prompt
        user = p.template.replace(INSTRUCTION_SLOT, p.instruction).replace(DIALOGUE_SLOT, _SENTINEL)
        if p.chat_template:
            messages = ([{"role": "system", "content": p.system}] if p.system else []) + [
                {"role": "user", "content": user}]
            try:
                user = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                          enable_thinking=False)
            except Exception as err:  # jinja2 errors, raised by the template itself (e.g. "no system role")
                hint = "leave prompt.system empty or " if p.system else ""
                raise DialsumError(f"prompt.chat_template=true: the tokenizer's chat template refuses this prompt "
                                   f"({str(err).splitlines()[0][:160]}); {hint}set prompt.chat_template=false") from None
        head, _, tail = user.partition(_SENTINEL)
        return head, tail

    def pieces(self) -> tuple[list[int], list[int]]:
        """Ids before and after the dialogue. The prompt opens with the start token exactly when the
        tokenizer itself would put one there (Llama's and SOLAR's do, Qwen's and EXAONE's do not), unless
        the chat template already wrote it."""
        if self._pieces is None:
            head, tail = self._split()
            tok = self.tokenizer
            head_ids = tok(head, add_special_tokens=False)["input_ids"] if head else []
            bos = tok.bos_token_id
            if _adds_bos(tok) and head_ids[:1] != [bos]:
                head_ids = [bos] + head_ids
            tail_ids = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
            self._pieces = head_ids, tail_ids
        return self._pieces

    def dialogue_budget(self) -> int:
        """Tokens left for the dialogue; checked, so that a bad prompt fails before any training."""
        head, tail = self.pieces()
        budget = self.prompt_max_len - len(head) - len(tail)
        if budget < 1:
            raise DialsumError(
                f"tokenizer.encoder_max_len={self.prompt_max_len}: the prompt's instruction and template take "
                f"{len(head) + len(tail)} tokens, leaving none for the dialogue; raise it or shorten prompt.template"
            )
        return budget

    def inputs(self, dialogues: list[str]) -> list[list[int]]:
        head, tail = self.pieces()
        budget = self.dialogue_budget()
        ids = self.tokenizer(dialogues, add_special_tokens=False)["input_ids"]
        return [head + d[:budget] + tail for d in ids]

    def labels(self, summaries: list[str]) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(summaries, add_special_tokens=False)["input_ids"]
        return [s[: self.summary_max_len - 1] + [eos] for s in ids]

    def examples(self, df: pd.DataFrame) -> list[dict[str, list[int]]]:
        prompts = self.inputs(list(df["dialogue"]))
        if "summary" not in df.columns:
            return [{"input_ids": p} for p in prompts]
        out = []
        for p, s in zip(prompts, self.labels(list(df["summary"])), strict=True):
            out.append({"input_ids": p + s, "labels": [IGNORE_INDEX] * len(p) + s})
        return out


def make_encoder(tokenizer: Any, family: str, cfg: ExperimentConfig) -> Any:
    """The encoder of this family: prompt + completion for causal LMs, dialogue -> summary pairs otherwise."""
    tok = cfg.tokenizer
    if family == "causal":
        return CausalEncoder(tokenizer, cfg.prompt, tok.encoder_max_len, tok.decoder_max_len)
    return Encoder(tokenizer, family, tok.prefix, tok.encoder_max_len, tok.decoder_max_len)
