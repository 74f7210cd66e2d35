"""Tokenizer and model factory: architecture table, tiny/random builds, LoRA target resolution, LoRA/QLoRA.

    dialsum validate configs/experiments/*.yaml        # architecture, parameters, LoRA targets
    dialsum train CONFIG --init tiny                   # tiny tokenizer trained on the data + tiny model

Three model sources share one code path:
- `pretrained`: `from_pretrained(hub id or local dir)`: a local dir, the hub cache, or a download
  when online (`HF_HUB_OFFLINE`, `HF_HOME` and `HF_TOKEN` honoured, as transformers does).
- `random`: the exact architecture of a known checkpoint with random weights (benchmarks, planning).
- `tiny`: the same family scaled down, with a tokenizer trained on the experiment's training text.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dialsum import hub
from dialsum.errors import DialsumError


@dataclass(frozen=True)
class ArchSpec:
    """Architecture facts of a seed checkpoint, enough to build it offline and to validate configs."""

    family: str  # bart | t5 | mt5
    d_model: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int | None  # learned positions (BART); None for relative attention
    gated: bool = False
    tied: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


KNOWN_ARCHS: dict[str, ArchSpec] = {
    "digit82/kobart-summarization": ArchSpec(
        "bart", 768, 6, 16, 3072, 30000, 1026,
        extra={"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 3, "decoder_start_token_id": 2},
    ),
    "eenzeenee/t5-base-korean-summarization": ArchSpec(
        "t5", 768, 12, 12, 2048, 50358, None, gated=True, tied=False
    ),
    "csebuetnlp/mT5_multilingual_XLSum": ArchSpec(
        "mt5", 768, 12, 12, 2048, 250112, None, gated=True, tied=False
    ),
}

# Generic LoRA target names (the seed's) -> module names per family.
GENERIC_TARGETS = {
    "bart": {"q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["out_proj"],
             "wi": ["fc1"], "wo": ["fc2"], "embed_tokens": ["shared"]},
    "t5": {"wi": ["wi"], "embed_tokens": ["shared"]},
    "t5-gated": {"wi": ["wi_0", "wi_1"], "embed_tokens": ["shared"]},
}

# Special tokens of the tiny/random tokenizers, in the id order of the real checkpoints.
FAMILY_SPECIALS = {
    "bart": ["<s>", "</s>", "<usr>", "<pad>", "<sys>", "<unk>", "<mask>"],
    "t5": ["<pad>", "</s>", "<unk>"],
}


def family_of(hf_config: Any) -> str:
    kind = getattr(hf_config, "model_type", "")
    if kind in ("bart", "t5", "mt5"):
        return kind
    raise DialsumError(
        f"model type {kind!r} is not supported; dialsum trains BART, T5 and mT5 encoder-decoders"
    )


def is_gated(hf_config: Any) -> bool:
    return bool(getattr(hf_config, "is_gated_act", False))


def position_limit(hf_config: Any) -> int | None:
    """Longest sequence the model can take (BART learned positions), None when unbounded."""
    if family_of(hf_config) == "bart":
        return int(hf_config.max_position_embeddings) - 2
    return None


# ---------------------------------------------------------------- configs


def config_from_spec(spec: ArchSpec, vocab_size: int | None = None) -> Any:
    import transformers as tf

    vocab = vocab_size or spec.vocab
    if spec.family == "bart":
        return tf.BartConfig(
            vocab_size=vocab, d_model=spec.d_model, encoder_layers=spec.layers, decoder_layers=spec.layers,
            encoder_attention_heads=spec.heads, decoder_attention_heads=spec.heads,
            encoder_ffn_dim=spec.ffn, decoder_ffn_dim=spec.ffn,
            max_position_embeddings=spec.max_positions or 1026, forced_eos_token_id=1, **spec.extra,
        )
    cls = tf.MT5Config if spec.family == "mt5" else tf.T5Config
    return cls(
        vocab_size=vocab, d_model=spec.d_model, d_kv=spec.d_model // spec.heads, d_ff=spec.ffn,
        num_layers=spec.layers, num_heads=spec.heads, feed_forward_proj="gated-gelu" if spec.gated else "relu",
        tie_word_embeddings=spec.tied, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )


BART_INIT_STD = 0.02  # transformers' BartConfig default, set for 768-wide and larger models


def tiny_spec(spec: ArchSpec, d_model: int, layers: int, vocab: int) -> ArchSpec:
    """The same family scaled down: width, depth, heads and FFN shrink, module names stay.

    BART initializes every weight with one fixed std (0.02) whatever the width; the tiny copy keeps
    the full model's std relative to its width (0.02 x sqrt(768 / d_model)), as T5's width-aware
    init does by itself. With the fixed 0.02 a 128-wide BART trained from scratch settles on one
    summary for every dialogue within the demo's steps; with the scaled std it learns to read them.
    """
    heads = max(2, d_model // 32)
    # Widths stay multiples of 64: bitsandbytes' packed CPU 4-bit kernels need rows in blocks of 32.
    ffn = max(64, round(d_model * spec.ffn / spec.d_model / 64) * 64)
    extra = dict(spec.extra)
    if spec.family == "bart":
        extra["init_std"] = round(BART_INIT_STD * (spec.d_model / d_model) ** 0.5, 6)
    return ArchSpec(spec.family, d_model, layers, heads, ffn, vocab,
                    512 + 2 if spec.max_positions else None, spec.gated, spec.tied, extra)


def resolve_hf_config(name: str) -> tuple[Any, str]:
    """The checkpoint's config (local dir, hub cache, or a download when online), else the built-in table."""
    hf_config = hub.checkpoint_config(name)
    if hf_config is not None:
        return hf_config, "checkpoint config"
    if name in KNOWN_ARCHS:
        return config_from_spec(KNOWN_ARCHS[name]), "built-in architecture table"
    raise DialsumError(hub.not_found_message(name))


# ---------------------------------------------------------------- LoRA targets


@dataclass
class TargetResolution:
    requested: list[str]
    resolved: list[str]
    mapping: dict[str, list[str]]  # requested name -> names it became
    matched: dict[str, int]  # resolved name -> number of modules matched
    unmatched: list[str]

    def describe(self) -> list[str]:
        lines = []
        for req in self.requested:
            names = self.mapping[req]
            counts = ", ".join(f"{n} x{self.matched.get(n, 0)}" for n in names)
            arrow = f"{req} -> {counts}" if names != [req] else counts
            lines.append(arrow)
        return lines


def _module_table(model: Any) -> dict[str, str]:
    """name -> class name of every module LoRA can wrap (Linear, Embedding, 4-bit Linear)."""
    out = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear", "Linear4bit", "Linear8bitLt", "Embedding") or kind.endswith("ScaledWordEmbedding"):
            out[name] = kind
    return out


def resolve_targets(requested: Iterable[str], model: Any) -> TargetResolution:
    """Map generic names (q,k,v,o,wi,wo,embed_tokens) to this architecture's module names."""
    family = family_of(model.config)
    key = "bart" if family == "bart" else ("t5-gated" if is_gated(model.config) else "t5")
    table = GENERIC_TARGETS[key]
    modules = _module_table(model)
    requested = list(dict.fromkeys(requested))
    mapping: dict[str, list[str]] = {}
    matched: dict[str, int] = {}
    for name in requested:
        direct = sum(1 for m in modules if m == name or m.endswith("." + name))
        names = [name] if direct else table.get(name, [name])
        mapping[name] = names
        for n in names:
            matched[n] = sum(1 for m in modules if m == n or m.endswith("." + n))
    resolved = [n for names in mapping.values() for n in names if matched[n]]
    unmatched = [req for req, names in mapping.items() if not any(matched[n] for n in names)]
    return TargetResolution(requested, list(dict.fromkeys(resolved)), mapping, matched, unmatched)


def lora_trainable_count(model: Any, targets: list[str], rank: int) -> int:
    """Parameters LoRA adds for these targets (computed from shapes, works on a meta model)."""
    total = 0
    for name, module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if hasattr(module, "in_features"):
            total += rank * (module.in_features + module.out_features)
        elif hasattr(module, "num_embeddings"):
            total += rank * (module.num_embeddings + module.embedding_dim)
    return total


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


def meta_model(hf_config: Any) -> Any:
    """The architecture on the meta device: shapes and names, no memory."""
    import torch

    with torch.device("meta"):
        return build_fresh_model(hf_config, seed=None)  # meta tensors: no RNG, no seeding


# ---------------------------------------------------------------- tokenizers


def train_tokenizer(texts: Iterable[str], family: str, vocab_size: int, keep_whole: list[str]) -> Any:
    """A BPE tokenizer (SentencePiece-style spaces) trained on the experiment's own text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = FAMILY_SPECIALS["bart" if family == "bart" else "t5"]
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
    names = {"bos_token": "<s>", "mask_token": "<mask>"} if family == "bart" else {}
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
    from tokenizers import Regex

    return Regex(r"#[A-Za-z]+\d*#")


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise DialsumError(
            f"model.name={name!r}: cannot load its tokenizer ({str(err).splitlines()[0][:160]}); "
            "point model.name at a complete checkpoint directory, or use --init tiny"
        ) from None


def add_keep_whole_tokens(tokenizer: Any, tokens: list[str]) -> int:
    """Add mask tokens as special tokens (never split); returns how many were new."""
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(tokens, special_tokens=True)
    return len(new)


# ---------------------------------------------------------------- models


def wants_untied_head(hf_config: Any) -> bool:
    return getattr(hf_config, "scale_decoder_outputs", None) is False or hf_config.model_type == "mt5"


def _untie_lm_head(model: Any) -> None:
    """T5 v1.1 / mT5 have their own lm_head; transformers 5 ties it when built from a config."""
    import torch

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


def build_fresh_model(hf_config: Any, seed: int | None, sdpa: bool = True) -> Any:
    import torch
    import transformers as tf

    if seed is not None:
        torch.manual_seed(seed)
    model = tf.AutoModelForSeq2SeqLM.from_config(hf_config, attn_implementation=attention_kernel(sdpa))
    if wants_untied_head(hf_config):
        _untie_lm_head(model)
    return model


def quantization_config(compute_dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_pretrained_model(path: str, *, four_bit: bool, compute_dtype: Any, device: str, sdpa: bool = True) -> Any:
    import transformers as tf

    kwargs: dict[str, Any] = {"attn_implementation": attention_kernel(sdpa)}
    if four_bit:
        kwargs["quantization_config"] = quantization_config(compute_dtype)
        kwargs["device_map"] = {"": device}
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    try:
        return tf.AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise DialsumError(
            f"model.name={path!r}: cannot load its weights ({str(err).splitlines()[0][:160]}); "
            "point model.name at a complete checkpoint directory, or use --init tiny / --init random"
        ) from None


def apply_lora(model: Any, *, targets: list[str], rank: int, alpha: float, dropout: float,
               quantized: bool, gradient_checkpointing: bool) -> Any:
    import peft

    if quantized:
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    lora = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                           task_type=peft.TaskType.SEQ_2_SEQ_LM)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        return peft.get_peft_model(model, lora)
