"""Length-sorted, token-budget generation returns exactly what plain generation returns, in order."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialsum import archs, generation, modeling
from dialsum.generation import clean_summary, decode_clean, decoder_tokens_to_strip, make_compute_metrics
from dialsum.metrics import score
from dialsum.sections import GenerationSection


@given(st.lists(st.integers(1, 300), min_size=1, max_size=80), st.integers(1, 8), st.integers(64, 5000))
def test_budget_batches_cover_every_index_once_and_fit(lengths, beams, budget):
    batches = generation.token_budget_batches(lengths, budget, beams)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or width * len(b) * beams <= budget
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_unsorted_batches_keep_input_order():
    batches = generation.token_budget_batches([3, 9, 1, 5], budget=20, beams=1, sort=False)
    assert [i for b in batches for i in b] == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def tiny_model():
    texts = [f"#Person1#: {w} 주세요. #Person2#: 네 {w} 드릴게요." for w in ("커피", "녹차", "주스", "우유")] * 20
    tok = modeling.train_tokenizer(texts, "bart", 150, ["#Person1#", "#Person2#"])
    modeling.add_keep_whole_tokens(tok, ["#Person1#", "#Person2#"])
    spec = archs.tiny_spec(archs.KNOWN_ARCHS["digit82/kobart-summarization"], 32, 1, len(tok))
    config = archs.config_from_spec(spec)
    config.init_std = 0.5  # large random weights: outputs that depend on the input
    model = modeling.build_fresh_model(config, seed=1)
    return tok, model


def test_sorted_generation_equals_plain_generation(tiny_model):
    tok, model = tiny_model
    rng = random.Random(0)
    inputs = [[tok.bos_token_id] + [rng.randrange(10, len(tok)) for _ in range(rng.randrange(3, 40))]
              + [tok.eos_token_id] for _ in range(13)]
    common = dict(num_beams=3, max_length=12, min_length=2, no_repeat_ngram_size=2)
    one_by_one = GenerationSection(**common, batch_tokens=64, sort_by_length=False)
    # batch of one: no padding at all, the reference result
    plain = [generation.generate(model, tok, [x], one_by_one, ["<s>", "</s>", "<pad>"])[0] for x in inputs]
    sorted_cfg = GenerationSection(**common, batch_tokens=600, sort_by_length=True)
    fast = generation.generate(model, tok, inputs, sorted_cfg, ["<s>", "</s>", "<pad>"])
    assert fast == plain
    assert len(set(plain)) > 1  # the inputs really differ, so order matters


def test_write_submission_is_atomic_and_ordered(tmp_path):
    path = generation.write_submission(tmp_path / "sub.csv", ["test_1", "test_0"], ["요약 하나", "두 줄\n요약"])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("fname,summary\ntest_1,요약 하나\ntest_0,")
    assert not list(tmp_path.glob(".*tmp"))


# ----------------------------------------------------------------------------- decoding for the Trainer's metric


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<usr>"])
    raw.train_from_iterator(["은 학교에 갔다 .", "는 집에 왔다 .", "은 친구를 만났다 ."], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["#Person1#", "#Person2#"]})
    return tok


def test_decoder_tokens_exclude_masks_and_include_usr(tokenizer) -> None:
    strip = decoder_tokens_to_strip(tokenizer)
    assert {"<s>", "</s>", "<pad>", "<unk>", "<usr>"} <= set(strip)
    assert "#Person1#" not in strip and "#Person2#" not in strip
    assert (
        clean_summary("<usr><s>#Person1#은  학교에\n갔다.</s><pad><pad>", strip) == "#Person1#은 학교에 갔다."
    )


def _ids(tokenizer, text: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in text.split()]


def test_compute_metrics_decodes_padding_and_strips_decoder_tokens(tokenizer) -> None:
    t = tokenizer.convert_tokens_to_ids
    labels = [
        _ids(tokenizer, "#Person1# 은 학교에 갔다 . </s>"),
        _ids(tokenizer, "#Person2# 는 집에 왔다 . </s>"),
    ]
    preds = [
        [t("<usr>"), t("<s>")] + _ids(tokenizer, "#Person1# 은 학교에 갔다 . </s>"),
        [t("<usr>"), t("<s>")] + _ids(tokenizer, "#Person2# 는 학교에 갔다 </s> <pad>"),
    ]
    width = max(map(len, labels + preds)) + 2
    label_ids = np.array([row + [-100] * (width - len(row)) for row in labels])
    pred_ids = np.array([row + [-100] * (width - len(row)) for row in preds])
    strip = decoder_tokens_to_strip(tokenizer)
    assert decode_clean(tokenizer, pred_ids, strip) == [
        "#Person1# 은 학교에 갔다 .",
        "#Person2# 는 학교에 갔다",
    ]

    from transformers import EvalPrediction

    for tokenize in ("whitespace", "morpheme"):
        got = make_compute_metrics(tokenizer, tokenize)(
            EvalPrediction(predictions=pred_ids, label_ids=label_ids)
        )
        expected = score(
            ["#Person1# 은 학교에 갔다 .", "#Person2# 는 학교에 갔다"],
            [["#Person1# 은 학교에 갔다 ."], ["#Person2# 는 집에 왔다 ."]],
            tokenize,
        )
        assert set(got) == {"rouge1", "rouge2", "rougeL", "final"}
        assert all(type(v) is float for v in got.values())
        assert got["final"] == pytest.approx(expected.final, abs=1e-9)
        assert 0 < got["rouge1"] < 1


# ----------------------------------------------------------------------------- causal LMs: generated tokens only


@pytest.fixture(scope="module")
def causal_prompts():
    """A tiny random llama-family model and left-padded prompts of random tokens."""
    import torch

    texts = [f"#Person1#: {w} 주세요. #Person2#: 네 {w} 드릴게요." for w in ("커피", "녹차", "주스", "우유")] * 20
    tok = modeling.train_tokenizer(texts, "causal", 150, ["#Person1#", "#Person2#"])
    full = archs.causal_config("llama", {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                                         "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000,
                                         "max_position_embeddings": 2048})
    cfg = archs.tiny_causal_config(full, 64, 2, len(tok))
    cfg.initializer_range = 0.5  # large random weights: outputs that depend on the prompt
    model = modeling.build_fresh_model(cfg, seed=3).eval()
    rng = random.Random(7)
    prompts = [[tok.bos_token_id] + [rng.randrange(10, len(tok)) for _ in range(rng.randrange(5, 30))]
               for _ in range(16)]
    torch.set_num_threads(1)
    return tok, model, prompts


@pytest.mark.parametrize("beams", [1, 3])
def test_a_causal_repetition_penalty_leaves_the_prompt_alone(causal_prompts, beams):
    """At the first generated step nothing has been generated, so no penalty, however high, changes the
    first token; a penalty on the prompt (transformers' processor reads the whole sequence) would."""
    tok, model, prompts = causal_prompts
    first = GenerationSection(num_beams=beams, max_length=1, min_length=1, batch_tokens=4000)
    penalised = first.model_copy(update={"repetition_penalty": 20.0})
    plain = generation.generate(model, tok, prompts, first, ["<s>", "</s>", "<pad>"])
    assert generation.generate(model, tok, prompts, penalised, ["<s>", "</s>", "<pad>"]) == plain
    # transformers' own processor, given the whole sequence, changes some of these first tokens
    import torch

    ids, mask = generation._padded(prompts, tok.pad_token_id, left=True)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=1, num_beams=beams, do_sample=False,
                  pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        theirs = model.generate(**kwargs, repetition_penalty=20.0)[:, -1]
        unpenalised = model.generate(**kwargs)[:, -1]
    assert (theirs != unpenalised).any()


def test_the_repetition_penalty_counts_generated_tokens():
    import torch

    gen = GenerationSection(repetition_penalty=2.0, no_repeat_ngram_size=2)
    kwargs = generation.penalties_on_generated(gen, skip=3)
    assert kwargs["repetition_penalty"] == 1.0 and kwargs["no_repeat_ngram_size"] == 0  # transformers' are off
    ids = torch.tensor([[5, 6, 7, 8, 9]])  # a prompt of 3, then 2 generated tokens
    scores = kwargs["logits_processor"](ids, torch.full((1, 12), 4.0))
    assert scores[0, 8] == scores[0, 9] == 2.0  # generated: penalised
    assert (scores[0, [5, 6, 7, 10]] == 4.0).all()  # the prompt's tokens and the rest: untouched
    assert generation.penalties_on_generated(GenerationSection(), skip=3) == {}


def test_a_seq2seq_repetition_penalty_leaves_the_decoder_start_alone(tiny_model):
    """The decoder start token opens every row but is not generated (facebook's BART's is its end token,
    which a penalty would push down, lengthening every summary): the first generated token is the same
    with any penalty, in generation after training and in the Trainer's generation during it. The tiny
    KoBART's start token (`<usr>`) is made the model's first choice, as an end token can be."""
    import copy

    import torch

    tok, shared = tiny_model
    model = copy.deepcopy(shared)
    start = model.generation_config.decoder_start_token_id
    with torch.no_grad():
        model.final_logits_bias[0, start] = 30.0  # the start token is the model's first choice
    inputs = [tok(f"#Person1#: {w} 주세요.")["input_ids"] for w in ("커피", "녹차", "주스")]
    first = GenerationSection(num_beams=1, max_length=3, min_length=0, batch_tokens=4000)  # start, one, forced end
    penalised = first.model_copy(update={"repetition_penalty": 20.0})
    plain = generation.generate(model, tok, inputs, first, [])
    name = tok.convert_ids_to_tokens(start)
    assert plain == [f"{name}{name}{tok.eos_token}"] * 3  # decoded with the start token
    assert generation.generate(model, tok, inputs, penalised, []) == plain
    ids, mask = generation._padded(inputs, tok.pad_token_id, left=False)
    trainer_kwargs = generation.penalties_on_generated(penalised, generation.DECODER_START_WIDTH)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_length=3, num_beams=1, **trainer_kwargs)
        theirs = model.generate(input_ids=ids, attention_mask=mask, max_length=3, num_beams=1,
                                repetition_penalty=20.0)
    assert (out[:, 1] == start).all() and (theirs[:, 1] != start).all()  # transformers' own counts the start
