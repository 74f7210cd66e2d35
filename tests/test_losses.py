"""Chunked LM loss equals the plain full-logits loss, in value and in every gradient (seq2seq and causal LMs).

    .venv/bin/pytest tests/test_losses.py -q
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import nn

from dialsum import losses
from dialsum.errors import DialsumError
from dialsum.losses import causal_loss, chunked_lm_loss, chunked_loss, seq2seq_loss, supports_chunked_loss

D_MODEL, VOCAB = 32, 500


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, params=["recomputed", "kept"])
def logits_in_backward(request, monkeypatch) -> str:
    """Every case runs both ways: chunk logits recomputed in backward (the big-vocabulary path) and kept."""
    limit = 0 if request.param == "recomputed" else 1 << 40
    monkeypatch.setattr(losses, "KEEP_LOGITS_ELEMENTS", limit)
    return request.param


def _random_labels(gen: torch.Generator, shape: tuple[int, int], vocab: int, ignored: float = 0.3) -> torch.Tensor:
    labels = torch.randint(0, vocab, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < ignored] = -100
    return labels


def _head_case(seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 11, D_MODEL, generator=gen)
    head = nn.Linear(D_MODEL, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, D_MODEL, generator=gen) * 0.2)
    return hidden, head, _random_labels(gen, (3, 11), VOCAB)


def _grads_of(loss_fn, hidden: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Run `loss_fn(h, head)` on fresh leaves and return loss, hidden's grad and the head's grads."""
    head.zero_grad(set_to_none=True)
    leaf = hidden.detach().clone().requires_grad_(True)
    loss = loss_fn(leaf, head)
    loss.backward()
    return loss.detach(), leaf.grad, [p.grad.clone() for p in head.parameters() if p.requires_grad]


def _plain_head_loss(scale: float | None = None, bias: torch.Tensor | None = None):
    def run(h: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
        logits = head(h * scale if scale is not None else h)
        if bias is not None:
            logits = logits + bias
        return nn.CrossEntropyLoss(ignore_index=-100)(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    return run


def _assert_same(expected: tuple, actual: tuple, atol: float = 1e-6) -> None:
    loss_e, hgrad_e, pgrads_e = expected
    loss_a, hgrad_a, pgrads_a = actual
    assert torch.allclose(loss_a, loss_e, atol=atol, rtol=1e-5), (loss_a, loss_e)
    assert torch.allclose(hgrad_a, hgrad_e, atol=atol, rtol=1e-4)
    assert len(pgrads_a) == len(pgrads_e) > 0
    for grad_a, grad_e in zip(pgrads_a, pgrads_e, strict=True):
        assert torch.allclose(grad_a, grad_e, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("chunk_tokens", [1, 7, 10_000])
def test_chunked_matches_plain_loss_and_grads(chunk_tokens: int) -> None:
    hidden, head, labels = _head_case()
    plain = _plain_head_loss()
    expected = _grads_of(lambda h, m: plain(h, m, labels), hidden, head)
    actual = _grads_of(lambda h, m: chunked_lm_loss(h, m, labels, chunk_tokens=chunk_tokens), hidden, head)
    _assert_same(expected, actual)
    assert not torch.equal(actual[1], torch.zeros_like(actual[1]))


@pytest.mark.parametrize("chunk_tokens", [1, 7, 10_000])
def test_chunked_matches_plain_with_scale_and_bias(chunk_tokens: int) -> None:
    hidden, head, labels = _head_case(seed=1)
    bias = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(5))
    scale = D_MODEL**-0.5
    plain = _plain_head_loss(scale=scale, bias=bias)
    expected = _grads_of(lambda h, m: plain(h, m, labels), hidden, head)
    actual = _grads_of(
        lambda h, m: chunked_lm_loss(h, m, labels, chunk_tokens=chunk_tokens, logit_scale=scale, logit_bias=bias),
        hidden,
        head,
    )
    _assert_same(expected, actual)
    unscaled = chunked_lm_loss(hidden, head, labels, chunk_tokens=chunk_tokens).detach()
    assert not torch.allclose(unscaled, actual[0])


def test_ignored_positions_get_zero_grad_and_custom_ignore_index() -> None:
    hidden, head, labels = _head_case(seed=2)
    labels_other = labels.masked_fill(labels == -100, -1)
    _, hgrad, _ = _grads_of(lambda h, m: chunked_lm_loss(h, m, labels_other, chunk_tokens=5, ignore_index=-1),
                            hidden, head)
    ignored = labels_other == -1
    assert ignored.any() and (~ignored).any()
    assert torch.equal(hgrad[ignored], torch.zeros_like(hgrad[ignored]))
    assert (hgrad[~ignored].abs().sum(-1) > 0).all()


def test_only_valid_rows_are_projected() -> None:
    hidden, head, labels = _head_case(seed=3)
    seen_rows: list[int] = []
    head.register_forward_hook(lambda _m, inputs, _o: seen_rows.append(inputs[0].shape[0]))
    with torch.no_grad():
        chunked_lm_loss(hidden, head, labels, chunk_tokens=4)
    n_valid = int((labels != -100).sum())
    assert sum(seen_rows) == n_valid
    assert max(seen_rows) <= 4


def test_logits_recomputed_in_backward_only_above_the_limit(logits_in_backward: str) -> None:
    hidden, head, labels = _head_case(seed=4)
    calls: list[int] = []
    head.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    leaf = hidden.clone().requires_grad_(True)
    loss = chunked_lm_loss(leaf, head, labels, chunk_tokens=8)
    forward_calls = len(calls)
    loss.backward()
    assert len(calls) == (2 if logits_in_backward == "recomputed" else 1) * forward_calls


def test_default_limit_keeps_small_logits_and_recomputes_big_ones(monkeypatch) -> None:
    monkeypatch.undo()  # the module's own limit
    hidden, head, labels = _head_case(seed=4)  # 500-token vocabulary: its logits are kept
    calls: list[int] = []
    head.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    chunked_lm_loss(hidden.clone().requires_grad_(True), head, labels, chunk_tokens=8).backward()
    assert len(calls) == -(-int((labels != -100).sum()) // 8)  # one head pass per chunk: none again in backward
    calls.clear()
    n = 2048
    big = nn.Linear(D_MODEL, losses.KEEP_LOGITS_ELEMENTS // n + 1, bias=False)  # n labelled rows pass the limit
    big.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    rows = torch.randn(n, D_MODEL, requires_grad=True)
    chunked_lm_loss(rows, big, torch.arange(n), chunk_tokens=n).backward()
    assert calls == [n, n]  # the big vocabulary's chunk is projected again in backward


def test_all_ignored_labels_give_connected_zero() -> None:
    hidden, head, labels = _head_case(seed=5)
    leaf = hidden.clone().requires_grad_(True)
    loss = chunked_lm_loss(leaf, head, torch.full_like(labels, -100))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(leaf.grad))
    assert head.weight.grad is not None and not head.weight.grad.any()


def test_bf16_hidden_and_head_loss_is_float32_and_close() -> None:
    hidden, head, labels = _head_case(seed=6)
    expected = _plain_head_loss()(hidden, head, labels)
    head_bf16 = head.to(torch.bfloat16)
    leaf = hidden.to(torch.bfloat16).requires_grad_(True)
    loss = chunked_lm_loss(leaf, head_bf16, labels, chunk_tokens=7)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - expected.item()) < 0.05
    assert leaf.grad.dtype == torch.bfloat16 and head_bf16.weight.grad.dtype == torch.bfloat16


def test_bitsandbytes_4bit_head_matches_plain() -> None:
    import bitsandbytes as bnb

    hidden, head, labels = _head_case(seed=7)
    quantized = bnb.nn.Linear4bit(D_MODEL, VOCAB, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    quantized.weight = bnb.nn.Params4bit(head.weight.detach().clone(), requires_grad=False, quant_type="nf4")
    quantized = quantized.to("cpu")
    assert quantized.weight.dtype == torch.uint8
    plain = _plain_head_loss()
    leaf_e = hidden.clone().requires_grad_(True)
    expected = plain(leaf_e, quantized, labels)
    expected.backward()
    leaf_a = hidden.clone().requires_grad_(True)
    actual = chunked_lm_loss(leaf_a, quantized, labels, chunk_tokens=6)
    actual.backward()
    assert torch.allclose(actual, expected, atol=1e-6)
    assert torch.allclose(leaf_a.grad, leaf_e.grad, atol=1e-6)
    assert leaf_a.grad.abs().sum() > 0


def test_bad_arguments_raise_dialsum_error() -> None:
    hidden, head, labels = _head_case()
    with pytest.raises(DialsumError, match="chunk_tokens"):
        chunked_lm_loss(hidden, head, labels, chunk_tokens=0)
    with pytest.raises(DialsumError, match="labels shape"):
        chunked_lm_loss(hidden, head, labels[:, :-1])


# ---- whole models -------------------------------------------------------------------------------


def _tiny_bart() -> nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        vocab_size=VOCAB, d_model=D_MODEL, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=3, bos_token_id=0, eos_token_id=1, decoder_start_token_id=2,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(cfg)
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.5)
    return model.eval()


def _tiny_t5(kind: str) -> nn.Module:
    """t5_tied (rescaled), t5_noscale (tie_word_embeddings=False kwarg: no rescale, weights still tied),
    t5_untied / mt5_untied (attribute set after the config: nothing tied), mt5, mt5_ownhead (embeddings
    tied, lm_head its own weight, as mT5-base)."""
    from transformers import MT5Config, MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration

    mt5 = kind.startswith("mt5")
    config_cls, model_cls = (MT5Config, MT5ForConditionalGeneration) if mt5 else (T5Config, T5ForConditionalGeneration)
    extra = {"tie_word_embeddings": False} if kind == "t5_noscale" else {}
    cfg = config_cls(vocab_size=VOCAB, d_model=D_MODEL, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                     feed_forward_proj="gated-gelu" if mt5 else "relu", pad_token_id=0,
                     decoder_start_token_id=0, **extra)
    if kind.endswith("untied"):
        cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    model = model_cls(cfg)
    if kind == "mt5_ownhead":
        model.lm_head.weight = nn.Parameter(torch.randn(VOCAB, D_MODEL))
    return model.eval()


def _batch(seed: int, ignored: float = 0.3) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (3, 9), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 4:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": _random_labels(gen, (3, 7), VOCAB, ignored)}


def _model_grads(model: nn.Module, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_model_equal(model: nn.Module, batch: dict[str, torch.Tensor], chunk_tokens: int,
                        loss_fn=seq2seq_loss) -> dict[str, torch.Tensor]:
    """Loss and every parameter's grad of `loss_fn` equal the model's own; returns the grads."""
    loss_e, grads_e = _model_grads(model, lambda: model(**batch).loss)
    loss_a, grads_a = _model_grads(model, lambda: loss_fn(model, batch, chunk_tokens=chunk_tokens))
    assert abs(loss_a.item() - loss_e.item()) <= 1e-5, (loss_a.item(), loss_e.item())
    assert set(grads_e) == set(grads_a) and grads_a
    for name, grad in grads_e.items():
        assert torch.allclose(grads_a[name], grad, atol=1e-6, rtol=1e-4), name
    return grads_a


@pytest.mark.parametrize("chunk_tokens", [1, 5, 1024])
def test_bart_matches_model_loss(chunk_tokens: int) -> None:
    model = _tiny_bart()
    assert supports_chunked_loss(model)
    _assert_model_equal(model, _batch(seed=10), chunk_tokens)


def test_bart_with_explicit_decoder_inputs() -> None:
    model = _tiny_bart()
    batch = _batch(seed=11)
    batch["decoder_input_ids"] = torch.randint(4, VOCAB, batch["labels"].shape, generator=torch.Generator().manual_seed(1))
    _assert_model_equal(model, batch, chunk_tokens=4)


@pytest.mark.parametrize("kind", ["t5_tied", "t5_noscale", "t5_untied", "mt5", "mt5_untied", "mt5_ownhead"])
def test_t5_family_matches_model_loss(kind: str) -> None:
    model = _tiny_t5(kind)
    assert supports_chunked_loss(model)
    _assert_model_equal(model, _batch(seed=12), chunk_tokens=4)


def test_t5_rescale_follows_config() -> None:
    """A wrong rescale decision would change the loss: the two T5 variants must differ from each other."""
    batch = _batch(seed=13)
    with torch.no_grad():
        scaled = seq2seq_loss(_tiny_t5("t5_tied"), batch).item()
        unscaled = seq2seq_loss(_tiny_t5("t5_noscale"), batch).item()
    assert abs(scaled - unscaled) > 1e-3


def test_lora_wrapped_bart_with_lora_head_matches_model_loss() -> None:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "lm_head"],
                      init_lora_weights=False, task_type="SEQ_2_SEQ_LM")
    model = get_peft_model(_tiny_bart(), lora).eval()
    head = model.get_base_model().lm_head
    assert type(head).__module__.startswith("peft"), type(head)
    assert supports_chunked_loss(model)
    _assert_model_equal(model, _batch(seed=14), chunk_tokens=3)


def test_prompt_tuned_model_is_not_supported() -> None:
    from peft import PrefixTuningConfig, get_peft_model

    model = get_peft_model(_tiny_bart(), PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4))
    assert not supports_chunked_loss(model)
    with pytest.raises(DialsumError, match="prompt tuning"):
        seq2seq_loss(model, _batch(seed=17))


def test_all_ignored_labels_on_model_give_zero_with_grads() -> None:
    model = _tiny_bart()
    batch = _batch(seed=15, ignored=1.0)
    assert (batch["labels"] == -100).all()
    loss = seq2seq_loss(model, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert model.lm_head.weight.grad is not None and not model.lm_head.weight.grad.any()


def test_unsupported_model_and_bad_batch_raise() -> None:
    assert not supports_chunked_loss(nn.Linear(2, 2))
    with pytest.raises(DialsumError, match="Linear"):
        seq2seq_loss(nn.Linear(2, 2), _batch(seed=16))
    model = _tiny_bart()
    with pytest.raises(DialsumError, match="labels"):
        seq2seq_loss(model, {"input_ids": _batch(seed=16)["input_ids"]})
    with pytest.raises(DialsumError, match="token_type_ids"):
        seq2seq_loss(model, {**_batch(seed=16), "token_type_ids": torch.zeros(3, 9, dtype=torch.long)})


def test_label_smoothing_matches_transformers_label_smoother() -> None:
    """`training.label_smoothing_factor` acts in the chunked loss exactly as the Trainer applies it."""
    from transformers.trainer_pt_utils import LabelSmoother

    model, batch = _tiny_bart(), _batch(seed=15)
    smoother = LabelSmoother(epsilon=0.1)
    expected, grads_e = _model_grads(model, lambda: smoother(model(**batch), batch["labels"]))
    actual, grads_a = _model_grads(model, lambda: seq2seq_loss(model, batch, chunk_tokens=3, label_smoothing=0.1))
    plain = seq2seq_loss(model, batch, chunk_tokens=3).item()
    assert abs(actual.item() - expected.item()) <= 1e-5 and abs(actual.item() - plain) > 1e-3
    for name, grad in grads_e.items():
        assert torch.allclose(grads_a[name], grad, atol=1e-6, rtol=1e-4), name


# ---- causal LMs ---------------------------------------------------------------------------------

CAUSAL_VOCAB = 300
CAUSAL_TYPES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "exaone", "exaone4"]


def _tiny_causal(model_type: str) -> nn.Module:
    """A float32 eager-attention *ForCausalLM of `model_type` ("exaone" builds a LlamaForCausalLM)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        model_type, vocab_size=CAUSAL_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64, pad_token_id=0,
        eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()


def _causal_batch(seed: int, ignored: float = 0.0, left_padded: bool = False) -> dict[str, torch.Tensor]:
    """Right-padded rows of 12, 9 and 6 tokens; labels are the ids on the summary part, -100 on the prompt
    (the first 7, 5 and 2 tokens) and on padding, plus a random `ignored` share of the summary.
    `left_padded` moves each row's padding to its start."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, CAUSAL_VOCAB, (3, 12), generator=gen)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (length, prompt) in enumerate([(12, 7), (9, 5), (6, 2)]):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = 0
        labels[row, prompt:length] = input_ids[row, prompt:length]
    labels[torch.rand(labels.shape, generator=gen) < ignored] = -100
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if left_padded:
        batch = {key: torch.stack([row.roll(12 - length) for row, length in zip(value, (12, 9, 6), strict=True)])
                 for key, value in batch.items()}
    return batch


@pytest.mark.parametrize("model_type", CAUSAL_TYPES)
def test_causal_lm_matches_model_loss_and_projects_only_labelled_rows(model_type: str) -> None:
    model = _tiny_causal(model_type)
    assert supports_chunked_loss(model)
    batch = _causal_batch(seed=20)
    grads = _assert_model_equal(model, batch, chunk_tokens=3, loss_fn=causal_loss)
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"):
        if name in grads:  # gemma ties lm_head to the embedding: one parameter, one grad
            assert grads[name].abs().sum() > 0, name
    assert "model.embed_tokens.weight" in grads
    seen_rows: list[int] = []
    model.lm_head.register_forward_hook(lambda _m, inputs, _o: seen_rows.append(inputs[0].shape[0]))
    with torch.no_grad():
        chunked_loss(model, batch, chunk_tokens=3)
    assert sum(seen_rows) == int((batch["labels"][:, 1:] != -100).sum()) == 5 + 4 + 4
    assert len(seen_rows) > 1 and max(seen_rows) <= 3


def test_left_padded_causal_batch_matches_model_loss() -> None:
    """Left padding makes the attention mask matter (right padding never reaches a labelled position)."""
    batch = _causal_batch(seed=27, left_padded=True)
    assert (batch["attention_mask"][:, 0] == torch.tensor([1, 0, 0])).all() and (batch["labels"][:, -1] != -100).all()
    _assert_model_equal(_tiny_causal("llama"), batch, chunk_tokens=3, loss_fn=causal_loss)


def test_causal_label_smoothing_matches_transformers_label_smoother() -> None:
    """The Trainer smooths causal LMs with LabelSmoother(shift_labels=True); the chunked loss must agree."""
    from transformers.trainer_pt_utils import LabelSmoother

    model, batch = _tiny_causal("qwen3"), _causal_batch(seed=21)
    smoother = LabelSmoother(epsilon=0.1)
    labels = batch["labels"]
    expected, grads_e = _model_grads(model, lambda: smoother(model(**batch), labels, shift_labels=True))
    actual, grads_a = _model_grads(model, lambda: causal_loss(model, batch, chunk_tokens=3, label_smoothing=0.1))
    plain = causal_loss(model, batch, chunk_tokens=3).item()
    assert abs(actual.item() - expected.item()) <= 1e-5 and abs(actual.item() - plain) > 1e-3
    assert set(grads_a) == set(grads_e)
    for name, grad in grads_e.items():
        assert torch.allclose(grads_a[name], grad, atol=1e-6, rtol=1e-4), name


def test_lora_wrapped_causal_lm_matches_model_loss() -> None:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(_tiny_causal("llama"), lora).eval()
    assert supports_chunked_loss(model)
    batch = _causal_batch(seed=22, ignored=0.2)
    grads = _assert_model_equal(model, batch, chunk_tokens=3, loss_fn=chunked_loss)
    assert grads and all("lora_" in name for name in grads)
    with torch.no_grad():
        with model.disable_adapter():
            bare = causal_loss(model, batch).item()
        assert abs(causal_loss(model, batch).item() - bare) > 1e-4


def test_softcapped_headless_and_prompt_tuned_causal_models_are_not_supported() -> None:
    from peft import PromptTuningConfig, get_peft_model
    from transformers import LlamaForSequenceClassification

    gemma2 = _tiny_causal("gemma2")
    assert gemma2.config.final_logit_softcapping is not None
    assert not supports_chunked_loss(gemma2)
    batch = _causal_batch(seed=23)
    for loss_fn in (chunked_loss, causal_loss):
        with pytest.raises(DialsumError, match="Gemma2ForCausalLM"):
            loss_fn(gemma2, batch)
    classifier = LlamaForSequenceClassification(_tiny_causal("llama").config)
    assert not supports_chunked_loss(classifier)
    with pytest.raises(DialsumError, match="LlamaForSequenceClassification"):
        chunked_loss(classifier, batch)
    capped = _tiny_causal("llama")
    capped.config.final_logit_softcapping = 30.0  # a listed type carrying a soft-cap is refused as well
    assert not supports_chunked_loss(capped)
    prompt_tuning = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    prompted = get_peft_model(_tiny_causal("llama"), prompt_tuning)
    assert not supports_chunked_loss(prompted)
    with pytest.raises(DialsumError, match="prompt tuning"):
        chunked_loss(prompted, batch)


def test_all_ignored_labels_on_causal_lm_give_zero_with_grads() -> None:
    model = _tiny_causal("llama")
    batch = _causal_batch(seed=24, ignored=1.0)
    assert (batch["labels"] == -100).all()
    loss = causal_loss(model, batch)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert model.lm_head.weight.grad is not None and not model.lm_head.weight.grad.any()


def test_chunked_loss_dispatches_by_architecture() -> None:
    bart, llama = _tiny_bart(), _tiny_causal("llama")
    bart_batch, llama_batch = _batch(seed=25), _causal_batch(seed=25)
    with torch.no_grad():
        for model, batch, loss_fn in ((bart, bart_batch, seq2seq_loss), (llama, llama_batch, causal_loss)):
            assert torch.equal(chunked_loss(model, batch, chunk_tokens=4), loss_fn(model, batch, chunk_tokens=4))
    with pytest.raises(DialsumError, match="LlamaForCausalLM"):
        seq2seq_loss(llama, llama_batch)
    with pytest.raises(DialsumError, match="BartForConditionalGeneration"):
        causal_loss(bart, bart_batch)


def test_causal_batch_keys_are_checked() -> None:
    model, batch = _tiny_causal("llama"), _causal_batch(seed=26)
    with pytest.raises(DialsumError, match="batch lacks labels; causal_loss needs"):
        causal_loss(model, {"input_ids": batch["input_ids"]})
    with pytest.raises(DialsumError, match="decoder_input_ids not supported by causal_loss"):
        chunked_loss(model, {**batch, "decoder_input_ids": batch["input_ids"]})
