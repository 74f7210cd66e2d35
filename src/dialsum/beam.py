"""Beam search whose finished inputs leave the batch: the same summaries as transformers' beam search, with
no compute spent on an input once its beams are final.

    dialsum predict RUN_DIR --input data/sample/test.csv      # generation.drop_finished: true (the default)
    .venv/bin/python bench/generation_throughput.py --quick

transformers runs a batch until its last input is done, feeding every row to the model at every step, and
reorders the cross-attention cache of an encoder-decoder with the beams although it is the same for every
beam of an input. `drop_finished_beam_search` is a decoding loop for `model.generate(custom_generate=...)`
(transformers' public hook: generate prepares the inputs, processors and stopping criteria, the callable
decodes). Each step is transformers' own beam step (its top-k, running-beam and finished-beam helpers, so
scores, length penalty and early stopping are exactly its rules); between steps, the inputs whose result
can no longer change leave every tensor and the cache. Only the self-attention cache follows the beams.

The summaries are transformers' own token for token where the kernels compute each row the same
whatever the batch holds (tested on the CPU; `bench/generation_throughput.py` reports `identical` on
other hardware). Where a setting could make a row's state matter beyond its own row, the loop hands over
to transformers' beam search unchanged: a logits processor or stopping criterion outside the known
ones, a cache other than the plain dynamic one, a model with its own cache reorder, scores returned,
grouped, constrained or contrastive search, or ranks kept in step (ZeRO-3, FSDP).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.utils import ModelOutput

# Processors and criteria that read only the rows they are given (no state across steps or rows).
_STATELESS_PROCESSORS = frozenset({
    "NoRepeatNGramLogitsProcessor", "RepetitionPenaltyLogitsProcessor", "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor", "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor",
    "SuppressTokensLogitsProcessor", "NoBadWordsLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "NewTokensNoRepeatNGram",
})
_STATELESS_CRITERIA = frozenset({"MaxLengthCriteria", "EosTokenCriteria"})
_PER_STEP_KEYS = frozenset({"cache_position", "use_cache"})  # not one entry per row
# Cache layers whose rows `batch_select_indices` selects completely (keys and values, nothing else per row).
_PLAIN_LAYERS = frozenset({"DynamicLayer", "DynamicSlidingWindowLayer"})
_CACHE_NAMES = ("cache", "past_key_values", "cache_params", "state", "mems", "past_buckets_states")
# transformers' beam-step helpers this loop calls (transformers 5); without them its own loop runs.
_HELPERS = ("_prefill", "_update_model_kwargs_for_generation", "_get_top_k_continuations",
            "_get_running_beams_for_next_iteration", "_update_finished_beams", "_check_early_stop_heuristic")


def supported(model: Any, logits_processor: Any, stopping_criteria: Any, generation_config: Any,
              model_kwargs: dict[str, Any]) -> bool:
    """Whether dropping finished inputs is known to leave every output unchanged for these settings."""
    g = generation_config
    return (
        all(hasattr(GenerationMixin, name) for name in _HELPERS)
        and not _synced_gpus(model)
        and not g.do_sample
        and not g.return_dict_in_generate
        and not g.low_memory
        and (g.num_beam_groups or 1) <= 1
        and g.constraints is None and g.force_words_ids is None
        and not g.penalty_alpha and g.dola_layers is None
        and not hasattr(model, "_reorder_cache")
        and all(type(p).__name__ in _STATELESS_PROCESSORS for p in logits_processor)
        and all(type(c).__name__ in _STATELESS_CRITERIA for c in stopping_criteria)
        and all(_plain_cache(model_kwargs[k]) for k in _CACHE_NAMES if model_kwargs.get(k) is not None)
    )


def _plain_cache(cache: Any) -> bool:
    """A DynamicCache of plain layers, or an EncoderDecoderCache of two (no recurrent, quantized or static
    state that selecting rows would leave behind)."""
    if type(cache) is EncoderDecoderCache:
        return _plain_cache(cache.self_attention_cache) and _plain_cache(cache.cross_attention_cache)
    return type(cache) is DynamicCache and all(type(layer).__name__ in _PLAIN_LAYERS for layer in cache.layers)


def _synced_gpus(model: Any) -> bool:
    """transformers' rule for keeping ranks in step: ZeRO-3 or FSDP across several processes (a callable
    `custom_generate` is not told, so it is asked here)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    try:
        # in the transformers releases that have them (they moved between releases)
        from transformers.distributed.fsdp import is_fsdp_managed_module
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    except ImportError:  # cannot tell: transformers' loop keeps them in step
        return True
    return bool(is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model))


def _cache_key(model_kwargs: dict[str, Any]) -> str | None:
    return next((k for k in _CACHE_NAMES if isinstance(model_kwargs.get(k), Cache)), None)


def _keep_rows(model_kwargs: dict[str, Any], logits_processor: Any, rows: Tensor, n_rows: int) -> None:
    """Keep `rows` (flat batch x beam rows) of every per-row model input, of the cache and of a processor's
    per-row state, in place. The one such state: transformers' repetition penalty, built by `generate`,
    skips each row's left padding (a length per row). dialsum's generation passes its own penalty, which skips
    what precedes the generated tokens (a causal prompt, a decoder start) with one length
    (generation.penalties_on_generated) and needs nothing here."""
    for processor in logits_processor:
        ignore = getattr(processor, "prompt_ignore_length", None)
        if isinstance(ignore, Tensor) and ignore.dim() and ignore.shape[0] == n_rows:
            processor.prompt_ignore_length = ignore.index_select(0, rows.to(ignore.device))
    for key, value in model_kwargs.items():
        if key in _PER_STEP_KEYS:
            continue
        if isinstance(value, Cache):
            value.batch_select_indices(rows)
        elif isinstance(value, Tensor) and value.dim() and value.shape[0] == n_rows:
            model_kwargs[key] = value.index_select(0, rows)
        elif isinstance(value, ModelOutput):  # encoder outputs
            for name, field in value.items():
                if isinstance(field, Tensor) and field.dim() and field.shape[0] == n_rows:
                    value[name] = field.index_select(0, rows)


def _reorder(cache: Cache, beam_idx: Tensor) -> None:
    """Beams follow their parents in the self-attention cache; the cross-attention cache of an input is the
    same for all its beams (computed from the encoder output repeated per beam), so it stays."""
    if isinstance(cache, EncoderDecoderCache):
        cache.self_attention_cache.reorder_cache(beam_idx)
    else:
        cache.reorder_cache(beam_idx)


def drop_finished_beam_search(
    model: Any,
    input_ids: Tensor,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    **model_kwargs: Any,
) -> Tensor:
    """transformers' beam search, with each input leaving the batch once its finished beams are final.

    Called by `model.generate(..., custom_generate=drop_finished_beam_search)`; returns the sequences
    `generate` returns (num_return_sequences rows per input, in input order).
    """
    if synced_gpus or not supported(model, logits_processor, stopping_criteria, generation_config, model_kwargs):
        return GenerationMixin._beam_search(model, input_ids, logits_processor, stopping_criteria,
                                            generation_config, synced_gpus, **model_kwargs)
    num_beams, max_length = generation_config.num_beams, generation_config.max_length
    early_stopping, length_penalty = generation_config.early_stopping, generation_config.length_penalty
    num_return = generation_config.num_return_sequences
    pad_id, eos = generation_config._pad_token_tensor, generation_config._eos_token_tensor
    device = input_ids.device

    n_inputs, cur_len = input_ids.shape[0] // num_beams, input_ids.shape[1]
    prompt_len = cur_len
    beams_to_keep = max(2, 1 + (eos.shape[0] if eos is not None else 0)) * num_beams
    top_beams = torch.arange(beams_to_keep, device=device) < num_beams
    fill = pad_id or eos[0] if eos is not None else -1

    running = torch.full((n_inputs, num_beams, max_length), fill, dtype=torch.int64, device=device)
    running[:, :, :cur_len] = input_ids.view(n_inputs, num_beams, cur_len)
    sequences = running.clone()
    running_scores = torch.zeros((n_inputs, num_beams), dtype=torch.float, device=device)
    running_scores[:, 1:] = -1e9
    scores = torch.full((n_inputs, num_beams), -1e9, dtype=torch.float, device=device)
    finished = torch.zeros((n_inputs, num_beams), dtype=torch.bool, device=device)
    improvable = torch.ones((n_inputs, 1), dtype=torch.bool, device=device)
    running_indices = torch.full((n_inputs, num_beams, max_length - cur_len), -1, dtype=torch.int32, device=device)
    indices = running_indices.clone()

    ids = torch.arange(n_inputs, device=device)  # the original input of each row of the state
    results: dict[int, tuple[Tensor, Tensor]] = {}  # input -> (its returned sequences, their beam indices)
    outputs = model._prefill(input_ids, generation_config, model_kwargs, is_first_iteration=True)
    first = True
    while True:
        batch = ids.shape[0]
        if not first:
            flat = running[:, :, :cur_len].reshape(batch * num_beams, cur_len)
            step = 1 if model_kwargs.get("use_cache") else None
            inputs = model.prepare_inputs_for_generation(flat, next_sequence_length=step, **model_kwargs)
            outputs = model(**inputs, return_dict=True)
        first = False
        model_kwargs = model._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder)
        logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=device)
        del outputs
        flat = running[:, :, :cur_len].reshape(batch * num_beams, cur_len)
        log_probs = logits_processor(flat, nn.functional.log_softmax(logits, dim=-1))
        log_probs = (log_probs.view(batch, num_beams, -1) + running_scores[:, :, None]).reshape(batch, -1)

        topk_scores, topk_seqs, topk_indices = model._get_top_k_continuations(
            accumulated_log_probs=log_probs, running_sequences=running, running_beam_indices=running_indices,
            cur_len=cur_len, decoder_prompt_len=prompt_len, do_sample=False, beams_to_keep=beams_to_keep,
            num_beams=num_beams, batch_size=batch)
        hits = stopping_criteria(topk_seqs[:, :, : cur_len + 1].reshape(batch * beams_to_keep, -1), None)
        hits = hits.view(batch, beams_to_keep)
        running, running_scores, running_indices = model._get_running_beams_for_next_iteration(
            topk_log_probs=topk_scores, topk_running_sequences=topk_seqs, topk_running_beam_indices=topk_indices,
            next_token_hits_stopping_criteria=hits, num_beams=num_beams)
        sequences, scores, indices, finished = model._update_finished_beams(
            sequences=sequences, topk_running_sequences=topk_seqs, beam_scores=scores, topk_log_probs=topk_scores,
            beam_indices=indices, topk_running_beam_indices=topk_indices, is_early_stop_heuristic_unsatisfied=improvable,
            is_sent_finished=finished, next_token_hits_stopping_criteria=hits, top_num_beam_mask=top_beams,
            num_beams=num_beams, cur_len=cur_len, decoder_prompt_len=prompt_len, length_penalty=length_penalty,
            early_stopping=early_stopping)
        cache_key = _cache_key(model_kwargs)
        if cache_key is not None:
            _reorder(model_kwargs[cache_key], running_indices[..., cur_len - prompt_len].reshape(-1))
        cur_len += 1
        improvable = model._check_early_stop_heuristic(
            is_early_stop_heuristic_unsatisfied=improvable, running_beam_scores=running_scores, beam_scores=scores,
            is_sent_finished=finished, cur_len=cur_len, max_length=max_length, decoder_prompt_len=prompt_len,
            early_stopping=early_stopping, length_penalty=length_penalty)

        # An input is final once no finished beam can be replaced: all its beams finished under early
        # stopping, or no running beam can beat them (transformers masks both cases out from here on).
        done = ~improvable[:, 0] | (finished.all(dim=1) & (early_stopping is True))
        if bool(hits.all()) or cur_len >= max_length:
            done = torch.ones_like(done)
        if not bool(done.any()):
            continue
        for row in done.nonzero()[:, 0].tolist():
            results[int(ids[row])] = (sequences[row, :num_return], indices[row, :num_return])
        if bool(done.all()):
            break
        keep = (~done).nonzero()[:, 0]
        rows = (keep[:, None] * num_beams + torch.arange(num_beams, device=device)).reshape(-1)
        _keep_rows(model_kwargs, logits_processor, rows, batch * num_beams)
        ids, running, running_scores, running_indices = ids[keep], running[keep], running_scores[keep], running_indices[keep]
        sequences, scores, indices, finished, improvable = (
            sequences[keep], scores[keep], indices[keep], finished[keep], improvable[keep])

    out = torch.cat([results[i][0] for i in range(n_inputs)])
    generated = ((torch.cat([results[i][1] for i in range(n_inputs)]) + 1).bool()).sum(dim=1).max()
    return out[:, : prompt_len + int(generated)]
