"""What a checkpoint is: its family, the built-in architecture table, and the tiny scaled copies.

    dialsum validate configs/experiments/*.yaml        # family, positions, parameters per config
    dialsum train CONFIG --init tiny                   # the same family scaled down

Two families train here: the seq2seq encoder-decoders (`bart`, `t5`, `mt5`) and `causal`, every
decoder-only model that transformers runs as a causal LM natively (Llama/SOLAR, Qwen2/3, Gemma,
EXAONE, Mistral, ...). The family is read from the checkpoint's config. A checkpoint whose code is
not part of transformers loads only when the experiment sets `model.trust_remote_code: true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialsum import hub
from dialsum.errors import DialsumError

SEQ2SEQ = ("bart", "t5", "mt5")


@dataclass(frozen=True)
class ArchSpec:
    """Architecture facts of a seq2seq seed checkpoint, enough to build it offline and to validate configs."""

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

# The shipped decoder-only checkpoints: model type and config values, as in their config.json.
KNOWN_CAUSAL: dict[str, tuple[str, dict[str, Any]]] = {
    "upstage/SOLAR-10.7B-Instruct-v1.0": ("llama", {
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
    }),
    "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct": ("exaone", {
        "hidden_size": 2560, "intermediate_size": 7168, "num_hidden_layers": 30, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 80, "vocab_size": 102400, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 361,
        "pad_token_id": 0,
    }),
}

# Special tokens of the tiny/random tokenizers, in the id order of the real checkpoints (causal: the
# tiny and random builds' config is given these ids).
FAMILY_SPECIALS = {
    "bart": ["<s>", "</s>", "<usr>", "<pad>", "<sys>", "<unk>", "<mask>"],
    "t5": ["<pad>", "</s>", "<unk>"],
    "causal": ["<pad>", "<s>", "</s>", "<unk>"],
}


def specials_of(family: str) -> list[str]:
    return FAMILY_SPECIALS["t5" if family == "mt5" else family]


def family_of(hf_config: Any) -> str:
    """bart, t5, mt5 or causal; anything else is refused in one line. Encoders that transformers can also
    run with a causal head (BERT, RoBERTa, ...: the types with a masked-LM class) are not decoder-only LMs."""
    # transformers takes seconds to import: only where it is used
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(hf_config, "model_type", "")
    if kind in SEQ2SEQ:
        return kind
    native = kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    remote = "AutoModelForCausalLM" in (getattr(hf_config, "auto_map", None) or {})
    if not getattr(hf_config, "is_encoder_decoder", False) and (native or remote):
        if hf_config.get_text_config() is not hf_config:
            raise DialsumError(f"model type {kind!r} is a multimodal model; point model.name at a text-only "
                               "decoder checkpoint of its family")
        return "causal"
    raise DialsumError(
        f"model type {kind!r} is not supported; dialsum trains BART, T5 and mT5 encoder-decoders and "
        "decoder-only causal LMs"
    )


def is_gated(hf_config: Any) -> bool:
    return bool(getattr(hf_config, "is_gated_act", False))


def position_limit(hf_config: Any) -> int | None:
    """Longest sequence the model takes: BART's learned positions, a causal LM's context; None for T5."""
    family = family_of(hf_config)
    if family == "bart":
        return int(hf_config.max_position_embeddings) - 2
    if family == "causal":  # None where the config does not say (state-space and other unbounded models)
        positions = getattr(hf_config, "max_position_embeddings", None)
        return int(positions) if positions else None
    return None


def wants_untied_head(hf_config: Any) -> bool:
    return getattr(hf_config, "scale_decoder_outputs", None) is False or hf_config.model_type == "mt5"


# ---------------------------------------------------------------- configs


def config_from_spec(spec: ArchSpec, vocab_size: int | None = None) -> Any:
    import transformers as tf  # transformers: deferred, as above

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


def causal_config(model_type: str, values: dict[str, Any]) -> Any:
    from transformers import AutoConfig  # transformers: deferred, as above

    return AutoConfig.for_model(model_type, **values)


def spec_from_config(c: Any) -> ArchSpec:
    family = family_of(c)
    if family == "bart":
        return ArchSpec("bart", c.d_model, c.encoder_layers, c.encoder_attention_heads,
                        c.encoder_ffn_dim, c.vocab_size, c.max_position_embeddings)
    return ArchSpec(family, c.d_model, c.num_layers, c.num_heads, c.d_ff, c.vocab_size, None,
                    gated=is_gated(c), tied=not wants_untied_head(c))


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
    ffn = _multiple_of_64(d_model * spec.ffn / spec.d_model)
    extra = dict(spec.extra)
    if spec.family == "bart":
        extra["init_std"] = round(BART_INIT_STD * (spec.d_model / d_model) ** 0.5, 6)
    return ArchSpec(spec.family, d_model, layers, heads, ffn, vocab,
                    512 + 2 if spec.max_positions else None, spec.gated, spec.tied, extra)


def _multiple_of_64(width: float) -> int:
    return max(64, round(width / 64) * 64)


def with_tokenizer_ids(hf_config: Any) -> Any:
    """A causal config whose bos/eos/pad ids are those of the tiny and random builds' tokenizers."""
    specials = FAMILY_SPECIALS["causal"]
    values = {k: v for k, v in hf_config.to_dict().items() if k not in ("dtype", "torch_dtype", "_name_or_path")}
    values.update(pad_token_id=specials.index("<pad>"), bos_token_id=specials.index("<s>"),
                  eos_token_id=specials.index("</s>"))
    return type(hf_config).from_dict(values)


def tiny_causal_config(hf_config: Any, d_model: int, layers: int, vocab: int) -> Any:
    """The decoder-only model scaled down: width, depth, heads (keeping the key-value grouping), MLP and
    vocabulary shrink; module names, activation, norms and positions stay those of the family."""
    missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads") if not hasattr(hf_config, k)]
    if missing:
        raise DialsumError(f"--init tiny: {hf_config.model_type} has no {missing[0]}; tiny copies are built for "
                           "attention decoders (Llama, Qwen, Gemma, EXAONE, Mistral, ...); use --init pretrained")
    heads = max(2, d_model // 32)
    group = max(1, int(hf_config.num_attention_heads) // int(getattr(hf_config, "num_key_value_heads", None)
                                                             or hf_config.num_attention_heads))
    kv_heads = max(1, heads // group)
    if heads % kv_heads:
        kv_heads = heads
    values = with_tokenizer_ids(hf_config).to_dict()
    values.update(hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, head_dim=d_model // heads, vocab_size=vocab,
                  intermediate_size=_multiple_of_64(d_model * hf_config.intermediate_size / hf_config.hidden_size))
    if isinstance(values.get("layer_types"), list):  # per-layer attention kinds (sliding or full)
        values["layer_types"] = values["layer_types"][:layers]
    return type(hf_config).from_dict(values)


def resolve_hf_config(name: str, trust_remote_code: bool = False) -> tuple[Any, str]:
    """The checkpoint's config (local dir, hub cache, or a download when online), else the built-in table."""
    hf_config = hub.checkpoint_config(name, trust_remote_code)
    if hf_config is not None:
        return hf_config, "checkpoint config"
    if name in KNOWN_ARCHS:
        return config_from_spec(KNOWN_ARCHS[name]), "built-in architecture table"
    if name in KNOWN_CAUSAL:
        return causal_config(*KNOWN_CAUSAL[name]), "built-in architecture table"
    raise DialsumError(hub.not_found_message(name))
