"""What one layer of a model keeps for backward during training, counted on fake tensors: no memory, no compute.

    dialsum validate configs/experiments/05_solar_10.7b_qlora.yaml     # the `activations` part of the estimate
    pytest tests/test_memory.py -k saved

`layer_bytes(config, shape)` builds a two-layer copy of the architecture (two encoder and two decoder
layers for seq2seq), applies what training applies (4-bit bases, LoRA with its dropout, frozen or
trainable weights), moves it onto torch's fake tensors (shapes and dtypes, no storage) and runs one
training forward at the micro-batch and lengths of `shape` under bf16 autocast when training in bf16,
with a padded row as real batches have. A saved-tensors hook records every tensor autograd keeps
inside the second layer of each stack (the first sees inputs that need no gradient when the base is
frozen); parameters and their autocast copies are left to the estimate's weight terms. So the count
follows the model's own code: attention kernels (eager attention's S x S scores, SDPA's none),
grouped-query K/V expanded for a padding mask, the models' dropout masks, LoRA's dropped-out input
copies, norms kept in float32, and the float32 residual stream that autocast leaves between layers.

Two kernels are counted as they run on CUDA, where training runs, not as the CPU runs them:
- A 4-bit Linear as bitsandbytes (0.50) runs it: its input cast to the compute dtype, a product that
  saves nothing for backward (the frozen NF4 weight gives the input's gradient), and the output cast
  back to the input's dtype.
- SDPA as CUDA's fused kernels (flash, memory-efficient) run it: under autocast q, k, v and a float
  mask in bf16, and saved for backward q, k, v, the output, a float32 log-sum-exp per query and the
  mask (a boolean one converted to q's dtype, as torch does); never the S x S probabilities, with
  dropout too (they keep the random seed). The CPU's SDPA keeps those, so counting it as the CPU
  runs it would make a T5 layer several times larger than on a GPU.
Everything else runs as the CPU runs it under CPU autocast, whose op lists match CUDA's for these
models' ops (matmuls and SDPA in bf16, norms, softmax and losses in float32). On fake tensors the
count matches a real CPU forward byte for byte where the kernels agree (tests/test_memory.py), but
for one mask: transformers skips an unpadded decoder's causal mask when it can see that no row is
padded, which fake tensors do not show, so the count keeps that (B x T x T) mask, a few MB at most.
bench/memory_check.py measures the whole estimate on a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode

from dialsum import lora, modeling
from dialsum.modeling import quantized_linears

LAYER_KEYS = ("num_hidden_layers", "num_layers", "encoder_layers", "decoder_layers", "num_decoder_layers", "n_layer")


@dataclass(frozen=True)
class LayerShape:
    """What decides a layer's saved activations (hashable: counts are cached per architecture and shape)."""

    micro_batch: int
    seq_tokens: int  # the encoder's positions, or a causal LM's whole row
    label_tokens: int  # the decoder's positions (seq2seq)
    bf16: bool
    four_bit: bool
    trainable_base: bool  # full fine-tuning: every weight trains
    lora_targets: tuple[str, ...] = ()
    lora_rank: int = 0
    lora_dropout: float = 0.0


@dataclass(frozen=True)
class LayerBytes:
    """Per layer of each stack ("encoder"/"decoder", or "decoder" alone for a causal LM): bytes saved for
    backward (`work`), bytes of the layer's input (what checkpointing keeps) and of its widest saved tensor;
    per stack, once: what its layers save of the tensors they all share (`shared`)."""

    work: dict[str, int]
    inputs: dict[str, int]
    widest: dict[str, int]
    shared: dict[str, int]


class _FrozenNF4(nn.Linear):
    """A bitsandbytes 4-bit Linear as autograd sees it (see the module docstring)."""

    compute_dtype = torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return _NoSavedInput.apply(x.to(self.compute_dtype), self.weight).to(x.dtype)


class _NoSavedInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return x @ weight.to(x.dtype).t()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # pragma: no cover - never run
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None


class _FusedAttention(torch.autograd.Function):
    """What CUDA's flash and memory-efficient SDPA kernels keep for backward (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, *([] if mask is None else [mask]))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # pragma: no cover - counting never runs backward
        raise NotImplementedError


def _fused_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
                dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                enable_gqa: bool = False) -> torch.Tensor:
    if torch.is_autocast_enabled("cpu"):
        low = torch.get_autocast_dtype("cpu")
        query, key, value = query.to(low), key.to(low), value.to(low)
    if attn_mask is not None:
        attn_mask = attn_mask.to(query.dtype)  # a float mask in autocast's dtype; a boolean one converted
    return _FusedAttention.apply(query, key, value, attn_mask)


class _CudaAttention:
    """Within it, torch's SDPA is counted as CUDA's fused kernels run it."""

    def __enter__(self) -> None:
        self.original = torch.nn.functional.scaled_dot_product_attention
        torch.nn.functional.scaled_dot_product_attention = _fused_sdpa

    def __exit__(self, *exc: object) -> None:
        torch.nn.functional.scaled_dot_product_attention = self.original


class _ParameterCasts(TorchDispatchMode):
    """Remembers the storages autocast makes from parameters (weight copies, counted apart). It keeps each copy
    alive (fake tensors cost nothing), so that no later tensor reuses a freed copy's storage and is taken for it."""

    def __init__(self, parameters: set[int]) -> None:
        super().__init__()
        self.parameters, self.casts, self.kept = parameters, set(), []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and _storage(args[0]) in self.parameters:
            self.casts.add(_storage(out))
            self.kept.append(out)
        return out


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def layer_bytes(hf_config: Any, shape: LayerShape, trust_remote_code: bool = False) -> LayerBytes:
    """Bytes one layer of each stack saves for backward at `shape` (see the module docstring)."""
    return _cached(hf_config.to_json_string(use_diff=False), type(hf_config), shape, trust_remote_code)


@lru_cache(maxsize=64)  # architectures x shapes counted in one process: a validate of every config, a few dozen
def _cached(config_json: str, config_class: type, shape: LayerShape, trust_remote_code: bool) -> LayerBytes:
    hf_config = config_class.from_dict(json.loads(config_json))
    model = modeling.meta_model(_two_layers(hf_config), trust_remote_code)
    if shape.four_bit:
        _stand_in_4bit(model, torch.bfloat16 if shape.bf16 else torch.float32)
    if shape.lora_targets:
        model = lora.apply(model, targets=list(shape.lora_targets), rank=shape.lora_rank, alpha=shape.lora_rank,
                           dropout=shape.lora_dropout, quantized=False, gradient_checkpointing=False)
    else:
        model.requires_grad_(shape.trainable_base)
    return count(model.train(), hf_config, shape)


def _two_layers(hf_config: Any) -> Any:
    small = copy.deepcopy(hf_config)
    for key in LAYER_KEYS:
        if isinstance(getattr(small, key, None), int):
            setattr(small, key, 2)
    if isinstance(getattr(small, "layer_types", None), list):
        small.layer_types = small.layer_types[:2]
    return small


def _stand_in_4bit(model: nn.Module, compute_dtype: torch.dtype) -> None:
    for name, linear in quantized_linears(model):
        frozen = _FrozenNF4(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        frozen.compute_dtype = compute_dtype
        frozen.requires_grad_(False)
        model.set_submodule(name, frozen)


def _stacks(model: nn.Module) -> dict[str, nn.Module]:
    """The second layer of each stack: "encoder" and "decoder" (a causal LM's one stack is its "decoder")."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layers", "block", "h") and len(module) > 1:
            found["encoder" if "encoder" in name.split(".") else "decoder"] = module[1]
    return found


def count(model: nn.Module, hf_config: Any, shape: LayerShape, fake: bool = True) -> LayerBytes:
    """Run the count on `model` as built (on fake tensors, or with `fake=False` on the real ones it holds, which
    the tests compare with)."""
    mode: Any = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    if fake:
        _to_fake(model, mode)
    recorder = _Recorder({_storage(p) for p in model.parameters()})
    for stack, layer in _stacks(model).items():
        layer.register_forward_pre_hook(recorder.enter(stack), with_kwargs=True)
        layer.register_forward_hook(recorder.leave)
    with mode:
        batch = _batch(hf_config, shape)
        casts = _ParameterCasts(recorder.parameters)
        with casts, _CudaAttention(), saved_tensors_hooks(recorder.pack, lambda t: t), \
                torch.autocast("cpu", torch.bfloat16, enabled=shape.bf16):
            model(**batch)
    return recorder.result(casts.casts)


@dataclass
class _Recorder:
    """Sorts what autograd saves inside the measured layers: made by the layer, or handed to it by the stack
    (masks, position bias, RoPE tables, the encoder's output), which every layer shares."""

    parameters: set[int]
    current: list[str] = field(default_factory=list)
    handed: dict[str, set[int]] = field(default_factory=dict)
    saved: dict[str, dict[int, int]] = field(default_factory=dict)
    shared: dict[str, dict[int, int]] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)

    def enter(self, stack: str) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            self.inputs[stack] = hidden.untyped_storage().nbytes()
            others = [*args[1:], *(v for k, v in kwargs.items() if k != "hidden_states")]
            self.handed[stack] = {_storage(t) for t in _tensors(others)}
            self.current.append(stack)

        return hook

    def leave(self, *_: Any) -> None:  # returns nothing: a forward hook's return value would replace the output
        self.current.pop()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage(t)
        if self.current and key not in self.parameters:
            stack = self.current[-1]
            into = self.shared if key in self.handed[stack] else self.saved
            into.setdefault(stack, {})[key] = t.untyped_storage().nbytes()
        return t

    def result(self, casts: set[int]) -> LayerBytes:
        kept = {stack: [n for key, n in tensors.items() if key not in casts] for stack, tensors in self.saved.items()}
        return LayerBytes({s: sum(v) for s, v in kept.items()}, dict(self.inputs),
                          {s: max(v, default=0) for s, v in kept.items()},
                          {s: sum(v.values()) for s, v in self.shared.items()})


def _tensors(values: list[Any]) -> list[torch.Tensor]:
    """The tensors among a layer's arguments, inside tuples too (RoPE's cos and sin)."""
    out: list[torch.Tensor] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, (tuple, list)):
            out += _tensors(list(value))
    return out


def _to_fake(model: nn.Module, mode: Any) -> None:
    """Every parameter and buffer as a fake CPU tensor of the same shape, dtype and trainability."""
    with mode:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                            requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)


def _batch(hf_config: Any, shape: LayerShape) -> dict[str, torch.Tensor]:
    """Full-length rows, the first one a token shorter: a padded batch, as real ones are."""
    b = shape.micro_batch
    ids = torch.randint(8, hf_config.vocab_size, (b, shape.seq_tokens))
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if hf_config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.randint(8, hf_config.vocab_size, (b, shape.label_tokens))
    return batch
