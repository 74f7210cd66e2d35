"""Tokenizer and model factory: tokenizers trained on the data, fresh and pretrained models, 4-bit loads.

    dialsum validate configs/experiments/*.yaml        # parameters of each config's architecture
    dialsum train CONFIG --init tiny                   # tiny tokenizer trained on the data + tiny model

Three model sources share one code path, for seq2seq and causal models alike:
- `pretrained`: `from_pretrained(hub id or local dir)`: a local dir, the hub cache, or a download
  when online (`HF_HUB_OFFLINE`, `HF_HOME` and `HF_TOKEN` honoured, as transformers does).
- `random`: the exact architecture of a known checkpoint with random weights (benchmarks, planning).
- `tiny`: the same family scaled down, with a tokenizer trained on the experiment's training text.
What a checkpoint is lives in `dialsum.archs`; LoRA in `dialsum.lora`.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from collections.abc import Iterable
from typing import Any

from dialsum.archs import specials_of, wants_untied_head
from dialsum.errors import DialsumError
from dialsum.hub import use_cache_if_unreachable
from dialsum.tokens import MASK_TOKEN_PATTERN

# ---------------------------------------------------------------- tokenizers


def train_tokenizer(texts: Iterable[str], family: str, vocab_size: int, keep_whole: list[str]) -> Any:
    """A BPE tokenizer (SentencePiece-style spaces) trained on the experiment's own text."""
    # tokenizers and transformers take seconds to import: only where a tokenizer is trained or loaded
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = specials_of(family)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(_mask_regex(), behavior="isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    # "first": no space is invented after a mask token, so `#Person1#은` decodes back unchanged.
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + keep_whole,
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if family == "causal":  # a text opens with the start token, as Llama's tokenizer does it
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    names = {"bart": {"bos_token": "<s>", "mask_token": "<mask>"}, "causal": {"bos_token": "<s>"}}.get(family, {})
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", **names)


def tokenizer_from_data(train: Any, family: str, prefix: str, vocab_size: int, keep_whole: list[str]) -> Any:
    """The tiny/random builds' tokenizer: trained on the training dialogues (as the model sees them,
    prefix included) and summaries, mask tokens kept whole."""
    texts = [prefix + d for d in train["dialogue"]] + list(train["summary"])
    tokenizer = train_tokenizer(texts, family, vocab_size, keep_whole)
    add_keep_whole_tokens(tokenizer, keep_whole)
    return tokenizer


def _mask_regex() -> Any:
    from tokenizers import Regex  # tokenizers: deferred, as above

    return Regex(MASK_TOKEN_PATTERN)


def load_tokenizer(name: str, trust_remote_code: bool = False, local_only: bool = False) -> Any:
    """The checkpoint's tokenizer; `local_only`: from a local directory or the hub cache, never downloaded."""
    from transformers import AutoTokenizer  # transformers: deferred, as above

    if not local_only:
        use_cache_if_unreachable(name)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise DialsumError(
            f"model.name={name!r}: cannot load its tokenizer ({str(err).splitlines()[0][:160]}); "
            "point model.name at a complete checkpoint directory, or use --init tiny"
        ) from None


def add_keep_whole_tokens(tokenizer: Any, tokens: list[str]) -> list[str]:
    """Add mask tokens as special tokens (never split); returns those that were new to the vocabulary."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(tokens, special_tokens=True)
    return new


# ---------------------------------------------------------------- models


def count_parameters(model: Any) -> tuple[int, int]:
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def meta_model(hf_config: Any, trust_remote_code: bool = False) -> Any:
    """The architecture on the meta device: shapes and names, no memory."""
    import torch  # torch takes seconds to import: only where it is used

    with torch.device("meta"):
        return build_fresh_model(hf_config, seed=None, trust_remote_code=trust_remote_code)  # no RNG on meta


def _auto_class(hf_config: Any) -> Any:
    import transformers as tf  # transformers: deferred, as above

    return tf.AutoModelForSeq2SeqLM if hf_config.is_encoder_decoder else tf.AutoModelForCausalLM


def _untie_lm_head(model: Any) -> None:
    """T5 v1.1 / mT5 have their own lm_head; transformers 5 ties it when built from a config."""
    import torch  # torch: deferred, as above

    head = model.lm_head
    weight = torch.empty_like(head.weight)
    if weight.device.type != "meta":
        torch.nn.init.normal_(weight, std=model.config.d_model**-0.5)
    head.weight = torch.nn.Parameter(weight)
    if hasattr(model, "all_tied_weights_keys"):
        model.all_tied_weights_keys.pop("lm_head.weight", None)


def attention_kernel(sdpa: bool) -> str:
    """`sdpa` (fused scaled-dot-product attention) or the reference `eager` implementation."""
    return "sdpa" if sdpa else "eager"


def build_fresh_model(hf_config: Any, seed: int | None, sdpa: bool = True, trust_remote_code: bool = False) -> Any:
    import torch  # torch: deferred, as above

    if seed is not None:
        torch.manual_seed(seed)
    model = _auto_class(hf_config).from_config(hf_config, attn_implementation=attention_kernel(sdpa),
                                               trust_remote_code=trust_remote_code)
    if hf_config.is_encoder_decoder and wants_untied_head(hf_config):
        _untie_lm_head(model)
    return model


def resize_embeddings(model: Any, size: int, seed: int) -> None:
    """Grow the vocabulary to `size` rows. transformers samples the new rows around the mean of the old
    ones; seeding first makes them the same in training and in every later load (`dialsum predict`)."""
    import torch  # torch: deferred, as above

    if size > model.get_input_embeddings().num_embeddings:
        torch.manual_seed(seed)
        model.resize_token_embeddings(size)


def four_bit_arguments(compute_dtype: Any, device: str) -> dict[str, Any]:
    """`from_pretrained` arguments of a 4-bit base. bitsandbytes' rules: NF4 with double quantization, stored
    in uint8 (its default; only FSDP needs the storage in the compute dtype); the compute dtype is the
    training's (bf16 under bf16 autocast, else each dequantized weight is cast again in every matmul); and
    the whole model on this process's own device, as a quantized model cannot move after loading: on CUDA
    the current device, which `distributed.init` sets to the DDP rank's GPU (LOCAL_RANK), so no two ranks
    load onto GPU 0."""
    from transformers import BitsAndBytesConfig  # transformers: deferred, as above

    if device == "cuda":
        import torch  # torch: deferred, as above

        device = f"cuda:{torch.cuda.current_device()}"
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute_dtype)
    return {"quantization_config": quantization, "device_map": {"": device}}


def load_pretrained_model(path: str, *, four_bit: bool, compute_dtype: Any, device: str, sdpa: bool = True,
                          trust_remote_code: bool = False) -> Any:
    """Weights from a checkpoint (NF4 with double quantization when `four_bit`, computing in `compute_dtype`)."""
    from transformers import AutoConfig  # transformers: deferred, as above

    kwargs: dict[str, Any] = {"attn_implementation": attention_kernel(sdpa), "trust_remote_code": trust_remote_code}
    if four_bit:
        kwargs.update(four_bit_arguments(compute_dtype, device))
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    use_cache_if_unreachable(path)
    try:
        hf_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return _auto_class(hf_config).from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise DialsumError(
            f"model.name={path!r}: cannot load its weights ({str(err).splitlines()[0][:160]}); "
            "point model.name at a complete checkpoint directory, or use --init tiny / --init random"
        ) from None


def quantized_linears(model: Any) -> list[tuple[str, Any]]:
    """The Linears 4-bit loading stores in NF4 (bitsandbytes), by name: all but the LM head and the modules
    transformers keeps in float32 (`_keep_in_fp32_modules`, T5's `wo`)."""
    from torch import nn  # torch: deferred, as above
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head and "lm_head" not in name.split(".")
            and not keep.intersection(name.split("."))]


# ---------------------------------------------------------------- liger-kernel (CUDA)


def liger_supports(model_type: str) -> bool | None:
    """Whether liger-kernel patches this model type (None: liger-kernel is not installed)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return None
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN  # optional: CUDA only

    return model_type in MODEL_TYPE_TO_APPLY_LIGER_FN


def apply_liger(model: Any) -> None:
    """Swap the causal LM's head and loss for liger-kernel's fused linear cross-entropy (no logits are
    materialised in training); its other kernels stay off, so 4-bit and LoRA layers are untouched.
    liger patches the model class, so the swap holds for every model of that type in this process."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN  # optional: CUDA only

    patch = MODEL_TYPE_TO_APPLY_LIGER_FN[model.config.model_type]
    flags = {"model": model, "fused_linear_cross_entropy": True, "cross_entropy": False, "rope": False,
             "rms_norm": False, "swiglu": False, "geglu": False, "layer_norm": False}
    accepted = inspect.signature(patch).parameters
    patch(**{k: v for k, v in flags.items() if k in accepted})
