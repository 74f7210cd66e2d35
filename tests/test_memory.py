"""The training-memory estimate on meta-device models: known fits, monotonicity, logits, tying, seq2seq."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import transformers as tf
from torch import nn

from dialsum.memory import GB, TrainingShape, estimate

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def meta_causal(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(**kwargs))


def meta_seq2seq(config: tf.PretrainedConfig) -> nn.Module:
    with torch.device("meta"):
        return tf.AutoModelForSeq2SeqLM.from_config(config)


def lora_params(model: nn.Module, rank: int = 16, targets: tuple[str, ...] = PROJECTIONS) -> int:
    return sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.split(".")[-1] in targets)


@pytest.fixture(scope="module")
def solar() -> nn.Module:
    return meta_causal(hidden_size=4096, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=32000, max_position_embeddings=4096,
                       tie_word_embeddings=False)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return meta_causal(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, vocab_size=1000, tie_word_embeddings=False)


def qlora(model: nn.Module, **changes: object) -> TrainingShape:
    shape = TrainingShape(micro_batch=2, seq_tokens=1024, label_tokens=128, encoder_decoder=False,
                          four_bit=True, lora_params=lora_params(model), optimizer="paged_adamw_8bit",
                          bf16=True, gradient_checkpointing=True, chunk_tokens=1024)
    return replace(shape, **changes)


def test_solar_qlora_fits_24_gb(solar: nn.Module) -> None:
    result = estimate(solar, qlora(solar))
    assert 5.5 * GB < result.parts["weights"] < 7 * GB
    assert result.fits(24 * GB), result.describe()
    assert result.describe().startswith(f"{result.total / GB:.1f} GB (weights ")


def test_solar_full_fine_tuning_needs_more_than_80_gb(solar: nn.Module) -> None:
    shape = qlora(solar, four_bit=False, lora_params=0, optimizer="adamw_torch")
    result = estimate(solar, shape)
    assert not result.fits(80 * GB), result.describe()
    assert result.parts["weights"] == 4 * sum(p.numel() for p in solar.parameters())


def test_grows_with_micro_batch_and_shrinks_with_checkpointing(solar: nn.Module) -> None:
    totals = [estimate(solar, qlora(solar, micro_batch=b)).total for b in (1, 2, 4, 8)]
    assert totals == sorted(totals) and len(set(totals)) == 4
    with_ckpt = estimate(solar, qlora(solar)).parts["activations"]
    without = estimate(solar, qlora(solar, gradient_checkpointing=False)).parts["activations"]
    assert with_ckpt < without
    assert estimate(solar, qlora(solar)).total < estimate(solar, qlora(solar, gradient_checkpointing=False)).total


def test_chunked_logits_stay_small_at_qwen_vocab() -> None:
    model = meta_causal(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=512, vocab_size=151936, tie_word_embeddings=True)
    shape = qlora(model, micro_batch=8, seq_tokens=1024, label_tokens=128)
    assert estimate(model, replace(shape, chunk_tokens=None)).parts["logits"] > 10 * GB
    assert estimate(model, shape).parts["logits"] < 2 * GB


@pytest.mark.parametrize("four_bit", [False, True])
def test_tied_embeddings_count_once(four_bit: bool) -> None:
    dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=1000)
    tied, untied = meta_causal(**dims, tie_word_embeddings=True), meta_causal(**dims, tie_word_embeddings=False)
    shape = qlora(tied, four_bit=four_bit)
    difference = estimate(untied, shape).parts["weights"] - estimate(tied, shape).parts["weights"]
    assert difference == 4 * 1000 * 64  # the untied head's float32 copy, nothing more


def test_four_bit_keeps_head_norms_and_fp32_modules_in_float32(tiny: nn.Module) -> None:
    full = estimate(tiny, qlora(tiny, four_bit=False)).parts["weights"]
    four = estimate(tiny, qlora(tiny)).parts["weights"]
    projections = sum(m.weight.numel() for name, m in tiny.named_modules() if name.endswith(PROJECTIONS))
    assert full - four == pytest.approx(projections * (4 - 4.127 / 8), abs=1)
    t5 = meta_seq2seq(tf.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=500))
    wo = sum(m.weight.numel() for name, m in t5.named_modules() if name.endswith(".wo"))
    t5_shape = qlora(t5, encoder_decoder=True, lora_params=1000)
    quantized = sum(p.numel() for p in t5.parameters()) * 4 - estimate(t5, t5_shape).parts["weights"]
    linear = sum(m.weight.numel() for name, m in t5.named_modules() if isinstance(m, nn.Linear) and name != "lm_head")
    assert quantized == pytest.approx((linear - wo) * (4 - 4.127 / 8), abs=1)


@pytest.mark.parametrize("config", [
    tf.BartConfig(d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_layers=2, decoder_layers=3,
                  encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=800),
    tf.T5Config(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=3, num_heads=4, d_kv=16, vocab_size=800),
], ids=["bart", "t5"])
def test_seq2seq_estimate(config: tf.PretrainedConfig) -> None:
    model = meta_seq2seq(config)
    shape = TrainingShape(micro_batch=4, seq_tokens=512, label_tokens=64, encoder_decoder=True, four_bit=False,
                          lora_params=0, optimizer="adafactor", bf16=False, gradient_checkpointing=False,
                          chunk_tokens=None)
    result = estimate(model, shape)
    assert 0 < result.total < float("inf")
    assert result.parts["weights"] == 4 * sum(p.numel() for p in model.parameters())
    assert result.parts["logits"] == 4 * 64 * 800 * 12
    longer = estimate(model, replace(shape, seq_tokens=1024)).parts["activations"]
    assert longer > result.parts["activations"]
    longer_labels = estimate(model, replace(shape, label_tokens=128)).parts["activations"]
    assert longer_labels > result.parts["activations"]  # the decoder runs over the label positions
