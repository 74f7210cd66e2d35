"""The training-memory estimate on meta-device models: known fits, monotonicity, logits, tying, seq2seq."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import transformers as tf
from torch import nn

from dialsum import activations, archs, lora, modeling
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
                          bf16=True, gradient_checkpointing=True, chunk_tokens=1024, lora_targets=PROJECTIONS,
                          lora_rank=16, lora_dropout=0.05)
    return replace(shape, **changes)


def test_solar_qlora_fits_24_gb(solar: nn.Module) -> None:
    result = estimate(solar, qlora(solar))
    assert 5.5 * GB < result.parts["weights"] < 7 * GB
    assert result.fits(24 * GB), result.describe()
    assert result.describe().startswith(f"{result.total / GB:.1f} GB (weights ")


def test_solar_full_fine_tuning_needs_more_than_80_gb(solar: nn.Module) -> None:
    shape = qlora(solar, four_bit=False, lora_params=0, lora_targets=(), optimizer="adamw_torch")
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


# ---------------------------------------------------------------- activations counted on fake tensors

SMALL_LLAMA = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=300, max_position_embeddings=512)
FAMILIES = {  # config, LoRA targets, 4-bit, LoRA dropout
    "llama qlora": (lambda: archs.causal_config("llama", dict(SMALL_LLAMA)), PROJECTIONS, True, 0.05),
    "mt5 qlora": (lambda: archs.config_from_spec(archs.tiny_spec(
        archs.KNOWN_ARCHS["csebuetnlp/mT5_multilingual_XLSum"], 128, 2, 300)), ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
        True, 0.01),
    "bart lora": (lambda: archs.config_from_spec(archs.tiny_spec(
        archs.KNOWN_ARCHS["digit82/kobart-summarization"], 128, 2, 300)), ("q_proj", "v_proj", "fc1", "fc2"), False, 0.05),
    "t5 full": (lambda: archs.config_from_spec(archs.tiny_spec(
        archs.KNOWN_ARCHS["eenzeenee/t5-base-korean-summarization"], 128, 2, 300)), (), False, 0.0),
}


def real_model(hf_config: tf.PretrainedConfig, targets: tuple[str, ...], four_bit: bool, dropout: float,
               folder) -> nn.Module:
    """The model as `train` builds it: a 4-bit base loaded through bitsandbytes from a checkpoint, LoRA."""
    model = modeling.build_fresh_model(hf_config, seed=0)
    if four_bit:
        model.save_pretrained(folder)
        model = modeling.load_pretrained_model(str(folder), four_bit=True, compute_dtype=torch.bfloat16, device="cpu")
    if targets:
        model = lora.apply(model, targets=list(targets), rank=8, alpha=8, dropout=dropout, quantized=four_bit,
                           gradient_checkpointing=False)
    return model.train()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_saved_activations_on_fake_tensors_equal_a_real_forward(family: str, tmp_path, one_torch_thread) -> None:
    """Byte for byte what a real CPU forward keeps (bitsandbytes 4-bit, peft LoRA with dropout, bf16 autocast),
    attention counted the same way on both sides; only an unpadded decoder's causal mask, which transformers
    skips when it can see the padding and keeps on fake tensors, may be counted beyond it."""
    make, targets, four_bit, dropout = FAMILIES[family]
    hf_config = make()
    causal = not hf_config.is_encoder_decoder
    shape = activations.LayerShape(micro_batch=2, seq_tokens=48, label_tokens=0 if causal else 16, bf16=True,
                                   four_bit=four_bit, trainable_base=not targets, lora_targets=targets, lora_rank=8,
                                   lora_dropout=dropout)
    counted = activations.layer_bytes(hf_config, shape)
    real = activations.count(real_model(hf_config, targets, four_bit, dropout, tmp_path / "ckpt"), hf_config, shape,
                             fake=False)
    assert (counted.inputs, counted.widest, counted.shared) == (real.inputs, real.widest, real.shared)
    for stack, work in counted.work.items():
        assert 0 <= work - real.work[stack] <= (0 if causal else 2 * 16 * 16 * 2), (stack, work, real.work[stack])
    stacks = {"decoder"} if causal else {"encoder", "decoder"}
    assert set(counted.work) == stacks and all(counted.work[s] > 0 for s in stacks)


def test_checkpointing_keeps_each_layer_input_in_float32() -> None:
    """Under bf16 autocast the residual stream stays in the float32 of the master weights (4-bit QLoRA too)."""
    shape = activations.LayerShape(micro_batch=2, seq_tokens=64, label_tokens=0, bf16=True, four_bit=True,
                                   trainable_base=False, lora_targets=PROJECTIONS, lora_rank=8, lora_dropout=0.05)
    counted = activations.layer_bytes(archs.causal_config("llama", dict(SMALL_LLAMA)), shape)
    assert counted.inputs == {"decoder": 2 * 64 * 128 * 4}
    undropped = activations.layer_bytes(archs.causal_config("llama", dict(SMALL_LLAMA)),
                                        replace(shape, lora_dropout=0.0))
    assert counted.work["decoder"] > 1.3 * undropped.work["decoder"]  # each adapted Linear's dropped-out copy


def test_attention_keeps_no_probabilities_as_on_cuda() -> None:
    """CUDA's fused SDPA keeps q, k, v, the output, the log-sum-exp and the mask, with dropout too; never S x S."""
    from torch.autograd.graph import saved_tensors_hooks

    saved = []
    q = torch.randn(2, 4, 64, 16, requires_grad=True)
    mask = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    with saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t), activations._CudaAttention():
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=0.1)
    assert torch.nn.functional.scaled_dot_product_attention is not activations._fused_sdpa  # restored
    assert sorted(saved) == sorted([q.shape] * 4 + [torch.Size([2, 4, 64]), mask.shape])


def test_the_estimate_counts_the_solar_recipe_above_the_old_formula(solar: nn.Module) -> None:
    """SOLAR's QLoRA at micro-batch 2 x 1024: float32 checkpointed inputs (48 x 32 MiB), one layer's working set
    with LoRA's dropout copies, and its widest tensor's gradient."""
    result = estimate(solar, qlora(solar))
    assert 2.2 * GB < result.parts["activations"] < 3.0 * GB and result.note == ""
    assert 10.5 * GB < result.total < 12 * GB


def test_a_forward_fake_tensors_cannot_run_falls_back_to_the_formula_and_says_so(tiny: nn.Module, monkeypatch) -> None:
    def data_dependent(*_: object, **__: object) -> None:
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(activations, "layer_bytes", data_dependent)
    result = estimate(tiny, qlora(tiny))
    assert result.note == "activations by formula (RuntimeError)" and result.parts["activations"] > 0
    assert result.describe().endswith("; activations by formula (RuntimeError))")
