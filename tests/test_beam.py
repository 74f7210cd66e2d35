"""Beam search whose finished inputs leave the batch gives exactly transformers' beam search, token for token.

    pytest tests/test_beam.py
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import GenerationMixin, LogitsProcessor, LogitsProcessorList

from dialsum import archs, beam, generation, modeling
from dialsum.sections import GenerationSection

TEXTS = [f"#Person1#: {w} 주세요. #Person2#: 네 {w} 드릴게요." for w in ("커피", "녹차", "주스", "우유")] * 20
STRIP = ["<s>", "</s>", "<pad>"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bart():
    """A random tiny BART whose end token is likely enough that summaries end after 1 to 30 tokens."""
    tok = modeling.train_tokenizer(TEXTS, "bart", 150, ["#Person1#", "#Person2#"])
    spec = archs.tiny_spec(archs.KNOWN_ARCHS["digit82/kobart-summarization"], 32, 1, len(tok))
    config = archs.config_from_spec(spec)
    config.init_std = 0.5  # large random weights: outputs that depend on the input
    model = modeling.build_fresh_model(config, seed=1).eval()
    with torch.no_grad():
        model.final_logits_bias[:, tok.eos_token_id] = 4.5
    rng = random.Random(0)
    inputs = [[tok.bos_token_id] + [rng.randrange(10, len(tok)) for _ in range(rng.randrange(3, 40))]
              + [tok.eos_token_id] for _ in range(12)]
    return tok, model, inputs


@pytest.fixture(scope="module")
def llama():
    tok = modeling.train_tokenizer(TEXTS, "causal", 150, ["#Person1#", "#Person2#"])
    full = archs.causal_config("llama", {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                                         "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
                                         "max_position_embeddings": 2048})
    cfg = archs.tiny_causal_config(full, 64, 2, len(tok))
    cfg.initializer_range = 0.5
    model = modeling.build_fresh_model(cfg, seed=3).eval()
    with torch.no_grad():  # an end token likely enough that continuations end after 2 to 12 tokens
        model.lm_head.weight[tok.eos_token_id] = model.lm_head.weight.max(dim=0).values
    rng = random.Random(5)
    prompts = [[tok.bos_token_id] + [rng.randrange(10, len(tok)) for _ in range(rng.randrange(3, 30))]
               for _ in range(10)]
    return tok, model, prompts


def _padded(tok, rows, left=False):
    width = max(len(r) for r in rows)
    pad = [[tok.pad_token_id] * (width - len(r)) for r in rows]
    ids = torch.tensor([p + r if left else r + p for r, p in zip(rows, pad, strict=True)])
    mask = torch.tensor([[0] * len(p) + [1] * len(r) if left else [1] * len(r) + [0] * len(p)
                         for r, p in zip(rows, pad, strict=True)])
    return ids, mask


def _row_counts(model):
    """Rows the decoder is fed at each step, recorded by a forward hook."""
    counts: list[int] = []
    handle = model.register_forward_hook(lambda _m, _a, kw, _o: counts.append(
        (kw.get("decoder_input_ids") if kw.get("decoder_input_ids") is not None else kw["input_ids"]).shape[0]),
        with_kwargs=True)
    return counts, handle


SETTINGS = [
    dict(num_beams=4),
    dict(num_beams=2, length_penalty=0.6, no_repeat_ngram_size=2),
    dict(num_beams=3, length_penalty=1.5, repetition_penalty=1.3, min_length=3),
    dict(num_beams=4, early_stopping=False),
    dict(num_beams=3, early_stopping="never", length_penalty=0.0),
    dict(num_beams=4, num_return_sequences=3),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_seq2seq_tokens_equal_transformers_beam_search(bart, settings):
    tok, model, inputs = bart
    ids, mask = _padded(tok, inputs)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_length=30, do_sample=False, **settings)
    expected = model.generate(**kwargs)
    counts, handle = _row_counts(model)
    try:
        actual = model.generate(**kwargs, custom_generate=beam.drop_finished_beam_search)
    finally:
        handle.remove()
    assert torch.equal(actual, expected)
    ends = [int((row[1:] == tok.eos_token_id).nonzero()[0]) if (row[1:] == tok.eos_token_id).any() else None
            for row in expected[:: settings.get("num_return_sequences", 1)]]
    assert len(set(ends)) > 3  # summaries of many lengths: inputs left the batch at different steps
    rows = len(inputs) * settings["num_beams"]
    assert counts[0] == rows and counts[-1] < rows and counts == sorted(counts, reverse=True)


@pytest.mark.parametrize(("beams", "penalty"), [(2, 1.0), (4, 1.0), (3, 1.3)])
def test_causal_candidates_equal_transformers_beam_search(llama, beams, penalty):
    tok, model, prompts = llama
    # left-padded prompts; the penalty and n-gram blocking count the generated tokens only (one prompt width)
    gen = GenerationSection(num_beams=beams, max_length=12, no_repeat_ngram_size=2, repetition_penalty=penalty,
                            batch_tokens=4000)
    counts, handle = _row_counts(model)
    try:
        ours = generation.generate_candidates(model, tok, prompts, gen, STRIP, k=2)
    finally:
        handle.remove()
    theirs = generation.generate_candidates(model, tok, prompts, gen.model_copy(update={"drop_finished": False}),
                                            STRIP, k=2)
    assert ours == theirs
    assert len({len(c[0]) for c in ours}) > 3  # continuations of many lengths
    assert counts[0] == len(prompts) * beams and min(counts) < counts[0]  # finished prompts left the batch


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_transformers_own_causal_processors_keep_their_rows_as_inputs_leave(llama, penalty):
    """Called directly, generate builds its own repetition penalty, which skips each row's left padding (a
    length per row, kept for the rows that stay in the batch)."""
    tok, model, prompts = llama
    ids, mask = _padded(tok, prompts, left=True)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, num_beams=3, do_sample=False,
                  repetition_penalty=penalty, no_repeat_ngram_size=2, pad_token_id=tok.pad_token_id)
    counts, handle = _row_counts(model)
    try:
        ours = model.generate(**kwargs, custom_generate=beam.drop_finished_beam_search)
    finally:
        handle.remove()
    assert torch.equal(ours, model.generate(**kwargs))
    assert min(counts) < counts[0]  # finished prompts left the batch


def test_trained_settings_through_generate_leave_the_batch(bart):
    tok, model, inputs = bart
    gen = GenerationSection(num_beams=4, max_length=30, batch_tokens=100_000)
    counts, handle = _row_counts(model)
    try:
        fast = generation.generate(model, tok, inputs, gen, STRIP)
    finally:
        handle.remove()
    assert fast == generation.generate(model, tok, inputs, gen.model_copy(update={"drop_finished": False}), STRIP)
    assert counts[0] == 48 and min(counts) < 48


class _Stateful(LogitsProcessor):
    """A processor dialsum does not know: it could hold state across steps or rows."""

    def __call__(self, input_ids, scores):
        return scores


def test_unknown_processors_hand_over_to_transformers(bart, monkeypatch):
    tok, model, inputs = bart
    ids, mask = _padded(tok, inputs[:3])
    calls = []
    original = GenerationMixin._beam_search
    monkeypatch.setattr(GenerationMixin, "_beam_search",
                        lambda *a, **kw: calls.append(1) or original(*a, **kw))
    kwargs = dict(input_ids=ids, attention_mask=mask, max_length=20, num_beams=3, do_sample=False)
    plain = model.generate(**kwargs)
    assert calls == [1]
    handed = model.generate(**kwargs, logits_processor=LogitsProcessorList([_Stateful()]),
                            custom_generate=beam.drop_finished_beam_search)
    assert calls == [1, 1] and torch.equal(handed, plain)
    model.generate(**kwargs, custom_generate=beam.drop_finished_beam_search)
    assert calls == [1, 1]  # known processors: dialsum's own loop


def test_caches_and_searches_it_cannot_vouch_for_hand_over(bart):
    from transformers import GenerationConfig
    from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache, StaticCache

    class Quantized(DynamicLayer):  # a layer with state beyond keys and values
        pass

    plain = {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())}
    config = GenerationConfig(num_beams=3)
    _, model, _ = bart
    assert beam.supported(model, [], [], config, plain)
    odd = DynamicCache()
    odd.layers.append(Quantized())
    assert not beam.supported(model, [], [], config, {"cache": odd})
    assert not beam.supported(model, [], [], config, {"cache": StaticCache(config=model.config, max_cache_len=8)})
    assert not beam.supported(model, [], [], config, {"mems": (torch.zeros(1),)})  # a cache that is no Cache
    for setting in ({"num_beam_groups": 3, "diversity_penalty": 0.5}, {"force_words_ids": [[5]]},
                    {"low_memory": True}):
        assert not beam.supported(model, [], [], GenerationConfig(num_beams=3, **setting), plain), setting
