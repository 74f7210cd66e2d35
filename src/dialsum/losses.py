"""Memory-lean LM loss for big vocabularies (seq2seq and causal LMs): chunked, checkpointed cross-entropy.

    .venv/bin/pytest tests/test_losses.py -q
    .venv/bin/python bench/vocab_memory.py --quick

mT5's 250,112-token vocabulary makes the float32 logits of one batch (32 x 200 x 250k) larger than
the model itself. `chunked_lm_loss` projects only the positions that carry a label, a chunk of rows
at a time, and checkpoints each chunk so its logits are recomputed in backward instead of kept (once
all the labelled rows' logits would pass 64 MiB; below that, keeping them is faster and costs little).
`seq2seq_loss` runs a BART/T5/mT5 body (plain or peft-wrapped) without its head and applies it;
`causal_loss` does the same for decoder-only LMs whose head is a plain `lm_head` (Llama, Mistral,
Qwen2/3, Gemma, EXAONE 3/4), where the prompt positions (labels `IGNORE_INDEX`) never reach the head.
`chunked_loss` picks the one for the model. Loss and gradients equal `model(**batch).loss` in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dialsum.errors import DialsumError
from dialsum.tokens import IGNORE_INDEX

LmHead = Callable[[Tensor], Tensor]

_BART = "BartForConditionalGeneration"
_T5 = "T5ForConditionalGeneration"
_MT5 = "MT5ForConditionalGeneration"
_CAUSAL = "causal"
_SEQ2SEQ = (_MT5, _T5, _BART)
# transformers 5.24 model types whose *ForCausalLM computes `logits = self.lm_head(hidden)` on the body
# `self.model`, nothing applied after the head (no soft-capping, scaling or bias). "exaone" (EXAONE 3.x)
# loads as LlamaForCausalLM. Gemma2/Gemma3 soft-cap their logits, so they stay out.
_CAUSAL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "exaone", "exaone4"})
# Below this many logits (labelled rows x vocabulary: 64 MiB in float32, about twice that held with the
# log-softmax kept for backward) a chunk's logits are kept instead of recomputed: tiny and
# small-vocabulary models train faster at no real memory cost.
KEEP_LOGITS_ELEMENTS = 1 << 24
_CAUSAL_KEYS = frozenset({"input_ids", "attention_mask", "labels"})
_SEQ2SEQ_KEYS = _CAUSAL_KEYS | {"decoder_input_ids", "decoder_attention_mask"}


def _chunk_loss_sum(
    hidden_rows: Tensor,
    label_rows: Tensor,
    lm_head: LmHead,
    logit_scale: float | None,
    logit_bias: Tensor | None,
    label_smoothing: float,
) -> Tensor:
    """Summed float32 cross-entropy of a few labelled rows: head, upcast, optional bias, log-softmax."""
    if logit_scale is not None:
        hidden_rows = hidden_rows * logit_scale
    logits = lm_head(hidden_rows).float()
    if logit_bias is not None:
        logits = logits + logit_bias.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits, label_rows, reduction="sum", label_smoothing=label_smoothing)


def _vocab_size(lm_head: LmHead) -> int | None:
    """Output width of a Linear-like head (plain, LoRA-wrapped or 4-bit: all keep `out_features`)."""
    width = getattr(lm_head, "out_features", None)
    return width if isinstance(width, int) else None


def _empty_loss(hidden: Tensor, lm_head: LmHead) -> Tensor:
    """A float32 zero whose graph reaches `hidden` and the head's parameters (all their grads zero)."""
    no_rows = hidden.reshape(-1, hidden.shape[-1])[:0]
    return lm_head(no_rows).float().sum()


def chunked_lm_loss(
    hidden: Tensor,
    lm_head: LmHead,
    labels: Tensor,
    *,
    chunk_tokens: int = 1024,
    logit_scale: float | None = None,
    logit_bias: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Mean cross-entropy over non-ignored tokens, never holding more than `chunk_tokens` rows of logits.

    `hidden` is (..., d_model) and `labels` has the same leading shape. `lm_head` is called on chunks of
    hidden rows (plain, LoRA-wrapped or 4-bit Linear alike). `logit_scale` multiplies hidden before the
    head (tied-embedding T5); `logit_bias` is added to the logits (BART's `final_logits_bias`).
    `label_smoothing` mixes the uniform distribution into the targets exactly as transformers'
    `label_smoothing_factor` does.
    Returns a float32 scalar; with no valid token, a zero still connected to `hidden`.
    """
    if chunk_tokens < 1:
        raise DialsumError(f"chunk_tokens={chunk_tokens} must be at least 1; use e.g. 1024")
    if hidden.shape[:-1] != labels.shape:
        raise DialsumError(
            f"labels shape {tuple(labels.shape)} does not match hidden {tuple(hidden.shape)} "
            "without its last dimension; pass labels aligned with the decoder positions"
        )
    flat_labels = labels.reshape(-1).to(hidden.device)
    valid = flat_labels != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return _empty_loss(hidden, lm_head)
    rows = hidden.reshape(-1, hidden.shape[-1])[valid]
    targets = flat_labels[valid]
    # Recomputing a chunk's logits in backward saves their memory at the price of a second head
    # projection; when every labelled row's logits together are small, keeping them is the better deal.
    vocab = _vocab_size(lm_head)
    use_checkpoint = torch.is_grad_enabled() and (vocab is None or n_valid * vocab > KEEP_LOGITS_ELEMENTS)
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, n_valid, chunk_tokens):
        args = (rows[start : start + chunk_tokens], targets[start : start + chunk_tokens])
        if use_checkpoint:
            part = checkpoint(_chunk_loss_sum, *args, lm_head, logit_scale, logit_bias, label_smoothing,
                              use_reentrant=False)
        else:
            part = _chunk_loss_sum(*args, lm_head, logit_scale, logit_bias, label_smoothing)
        total = total + part
    return total / n_valid


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside any peft wrapper (LoRA layers stay injected in it)."""
    seen = 0
    while callable(getattr(model, "get_base_model", None)) and seen < 4:
        inner = model.get_base_model()
        if inner is model:
            break
        model, seen = inner, seen + 1
    return model


def _is_plain_causal_lm(model: nn.Module, class_names: set[str]) -> bool:
    """A *ForCausalLM of a listed model type whose logits are exactly `lm_head(hidden)`."""
    cfg = getattr(model, "config", None)
    return (
        any(name.endswith("ForCausalLM") for name in class_names)
        and getattr(cfg, "model_type", None) in _CAUSAL_TYPES
        and getattr(cfg, "final_logit_softcapping", None) is None
    )


def _architecture(model: nn.Module) -> str | None:
    """Which handled transformers class the model is (MT5 checked first: it is not a T5 subclass)."""
    names = {cls.__name__ for cls in type(model).__mro__ if cls.__module__.startswith("transformers.")}
    for name in _SEQ2SEQ:
        if name in names:
            return name
    return _CAUSAL if _is_plain_causal_lm(model, names) else None


def _is_prompt_learning(model: nn.Module) -> bool:
    """peft prompt/prefix tuning adds virtual tokens in the wrapper's forward, which this path skips."""
    peft_config = getattr(model, "active_peft_config", None)
    return bool(getattr(peft_config, "is_prompt_learning", False))


def supports_chunked_loss(model: nn.Module) -> bool:
    """True for BART, T5, mT5 and the plain-head causal LMs, bare or wrapped by peft (not prompt tuning)."""
    return not _is_prompt_learning(model) and _architecture(_unwrap(model)) is not None


def _supported_base(model: nn.Module, archs: tuple[str, ...]) -> tuple[nn.Module, str]:
    """The unwrapped model and its architecture; DialsumError unless one of `archs` (and no prompt tuning)."""
    base = _unwrap(model)
    arch = _architecture(base)
    if arch not in archs or _is_prompt_learning(model):
        what = f"{type(base).__name__}{' with peft prompt tuning' if _is_prompt_learning(model) else ''}"
        raise DialsumError(f"chunked loss does not handle {what}; use model(**batch).loss for it instead")
    return base, arch


def _check_batch(batch: Mapping[str, Tensor], allowed: frozenset[str], loss_name: str) -> None:
    """Reject batches that lack the needed keys or carry keys this path would silently drop."""
    missing = [key for key in ("input_ids", "labels") if key not in batch]
    if missing:
        raise DialsumError(f"batch lacks {', '.join(missing)}; {loss_name} needs input_ids and labels")
    unknown = sorted(set(batch) - allowed)
    if unknown:
        raise DialsumError(
            f"batch key(s) {', '.join(unknown)} not supported by {loss_name}; "
            f"pass only {', '.join(sorted(allowed))}"
        )


def _bart_hidden(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """BART decoder output; decoder inputs are the labels shifted right, as the model's forward does."""
    # transformers takes seconds to import: only where it is used
    from transformers.models.bart.modeling_bart import shift_tokens_right

    decoder_input_ids = batch.get("decoder_input_ids")
    if decoder_input_ids is None:
        cfg = model.config
        decoder_input_ids = shift_tokens_right(batch["labels"], cfg.pad_token_id, cfg.decoder_start_token_id)
    out = model.model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=batch.get("decoder_attention_mask"),
        use_cache=False,
    )
    return out.last_hidden_state


def _t5_hidden(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """T5/mT5 encoder then decoder stack output, decoder inputs shifted right as the model does."""
    decoder_input_ids = batch.get("decoder_input_ids")
    if decoder_input_ids is None:
        decoder_input_ids = model._shift_right(batch["labels"])
    attention_mask = batch.get("attention_mask")
    encoded = model.encoder(input_ids=batch["input_ids"], attention_mask=attention_mask)
    decoded = model.decoder(
        input_ids=decoder_input_ids,
        attention_mask=batch.get("decoder_attention_mask"),
        encoder_hidden_states=encoded.last_hidden_state,
        encoder_attention_mask=attention_mask,
        use_cache=False,
    )
    return decoded.last_hidden_state


def _t5_logit_scale(model: nn.Module, arch: str) -> float | None:
    """d_model**-0.5 where the model rescales before its head.

    transformers 5.x: T5 rescales when `config.scale_decoder_outputs` (set from the
    `tie_word_embeddings` the config was built with); mT5's forward never rescales.
    """
    if arch == _MT5:
        return None
    cfg = model.config
    scale = getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", True))
    return model.model_dim**-0.5 if scale else None


def seq2seq_loss(model: nn.Module, batch: Mapping[str, Tensor], *, chunk_tokens: int = 1024,
                 label_smoothing: float = 0.0) -> Tensor:
    """`model(**batch).loss` for BART/T5/mT5 (bare or peft), computed with `chunked_lm_loss`."""
    base, arch = _supported_base(model, _SEQ2SEQ)
    _check_batch(batch, _SEQ2SEQ_KEYS, "seq2seq_loss")
    if arch == _BART:
        hidden = _bart_hidden(base, batch)
        scale, bias = None, base.final_logits_bias
    else:
        hidden = _t5_hidden(base, batch)
        scale, bias = _t5_logit_scale(base, arch), None
    return chunked_lm_loss(
        hidden, base.lm_head, batch["labels"], chunk_tokens=chunk_tokens, logit_scale=scale, logit_bias=bias,
        label_smoothing=label_smoothing,
    )


def causal_loss(model: nn.Module, batch: Mapping[str, Tensor], *, chunk_tokens: int = 1024,
                label_smoothing: float = 0.0) -> Tensor:
    """`model(**batch).loss` for a plain-head causal LM (bare or peft), computed with `chunked_lm_loss`.

    Position t predicts labels[t + 1], as transformers' ForCausalLMLoss shifts: the labels move left
    and the last position gets IGNORE_INDEX, so the hidden states are used unsliced (no copy).
    """
    base, _ = _supported_base(model, (_CAUSAL,))
    _check_batch(batch, _CAUSAL_KEYS, "causal_loss")
    hidden = base.model(
        input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
    ).last_hidden_state
    next_labels = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    return chunked_lm_loss(hidden, base.lm_head, next_labels, chunk_tokens=chunk_tokens,
                           label_smoothing=label_smoothing)


def chunked_loss(model: nn.Module, batch: Mapping[str, Tensor], *, chunk_tokens: int = 1024,
                 label_smoothing: float = 0.0) -> Tensor:
    """`seq2seq_loss` or `causal_loss`, whichever fits the model; DialsumError where neither does."""
    _, arch = _supported_base(model, (*_SEQ2SEQ, _CAUSAL))
    loss_fn = causal_loss if arch == _CAUSAL else seq2seq_loss
    return loss_fn(model, batch, chunk_tokens=chunk_tokens, label_smoothing=label_smoothing)
