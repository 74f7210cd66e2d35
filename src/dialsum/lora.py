"""LoRA and QLoRA: generic target names resolved per architecture, the adapter count, and the wrap.

    dialsum validate configs/experiments/*.yaml        # `lora targets q -> q_proj x48; ...`
    dialsum train configs/experiments/05_solar_10.7b_qlora.yaml --init tiny --max-steps 20

A config names targets generically (`q,k,v,o` for attention, `gate,up,down` or `wi,wo` for the MLP),
and each family maps them to its own module names; a name that is already a module name is kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dialsum.archs import family_of, is_gated

_LLAMA_STYLE = {"q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["o_proj"], "gate": ["gate_proj"],
                "up": ["up_proj"], "down": ["down_proj"], "wi": ["gate_proj", "up_proj"], "wo": ["down_proj"]}

# Generic LoRA target names (the seed's, and gate/up/down for decoder-only MLPs) -> module names per family.
GENERIC_TARGETS = {
    "bart": {"q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["out_proj"],
             "wi": ["fc1"], "wo": ["fc2"], "embed_tokens": ["shared"]},
    "t5": {"wi": ["wi"], "embed_tokens": ["shared"]},
    "t5-gated": {"wi": ["wi_0", "wi_1"], "embed_tokens": ["shared"]},
    "causal": _LLAMA_STYLE,
}


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


def _table_key(hf_config: Any) -> str:
    family = family_of(hf_config)
    if family in ("bart", "causal"):
        return family
    return "t5-gated" if is_gated(hf_config) else "t5"


def resolve_targets(requested: Iterable[str], model: Any) -> TargetResolution:
    """Map generic names (q,k,v,o,gate,up,down,wi,wo,embed_tokens) to this architecture's module names."""
    table = GENERIC_TARGETS[_table_key(model.config)]
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


def trainable_count(model: Any, targets: list[str], rank: int) -> int:
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


def apply(model: Any, *, targets: list[str], rank: int, alpha: float, dropout: float, quantized: bool,
          gradient_checkpointing: bool, new_token_ids: list[int] | None = None) -> Any:
    """The peft-wrapped model. `new_token_ids`: rows of the input embedding that train too (tokens added
    to a pretrained vocabulary, such as the mask tokens, would otherwise keep their untrained vectors)."""
    import peft  # peft imports transformers: only where it is used

    if quantized:
        model = peft.prepare_model_for_kbit_training(  # torch's recommended, non-reentrant checkpointing
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    causal = not model.config.is_encoder_decoder
    extra: dict[str, Any] = {}
    if new_token_ids:
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        rows = list(new_token_ids)  # an untied head has its own rows for these tokens, which must train too
        extra["trainable_token_indices"] = {"embed_tokens": rows} if tied else {"embed_tokens": rows, "lm_head": rows}
    lora = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                           task_type=peft.TaskType.CAUSAL_LM if causal else peft.TaskType.SEQ_2_SEQ_LM, **extra)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        return peft.get_peft_model(model, lora)
