"""Peak GPU memory of training one experiment at its micro-batch: an estimate from shapes, and activations counted.

    dialsum validate configs/experiments/05_solar_10.7b_qlora.yaml
    .venv/bin/python bench/memory_check.py --device cuda        # measured beside it, on a GPU
    .venv/bin/pytest tests/test_memory.py -q

`estimate(model, shape)` takes the architecture built on the meta device (no weights, no GPU) and a
`TrainingShape`. It is a planning estimate from the terms below, not a measurement: it has not yet
been checked against `torch.cuda.max_memory_reserved` on a GPU (bench/memory_check.py does that
where one is lent), and what it leaves out (listed at the end) makes the real peak higher, not
lower. GB here means GiB (2**30 bytes).

- weights: with `four_bit` every `nn.Linear` except the LM head and `model._keep_in_fp32_modules`
  (T5's `wo`) is NF4 with double quantization, 4.127 bits a parameter (4 + 0.127 of constants);
  `prepare_model_for_kbit_training` casts every other parameter to float32. Otherwise float32
  master weights. Tied parameters count once.
- bf16 weight copies: without `four_bit`, bf16 autocast casts each Linear weight to bf16 (2 bytes);
  for full fine-tuning its cache holds them all through the forward (HF's "6 bytes a parameter for
  mixed precision"), for a frozen base only the layer being recomputed holds them under checkpointing.
- trainable: LoRA weights and gradients in float32 (8 bytes each), or a float32 gradient for every
  parameter when `lora_params == 0`.
- optimizer, bytes a trainable parameter: 32-bit AdamW 8, 8-bit AdamW 2, Lion 4 (8-bit 1), SGD 4
  (momentum assumed), Adagrad/RMSprop 4, Adafactor 0.4 (factored row+column statistics,
  approximated as 0.1 x params x 4 bytes).
- activations, counted (`dialsum.activations`): the bytes one layer of each stack keeps for
  backward, from a training forward of a two-layer copy on fake tensors at the micro-batch and
  lengths (LoRA and its dropout, 4-bit layers, autocast, the model's own dropout and attention
  kernel included). Without checkpointing every layer keeps that much; with it each layer keeps its
  input (float32: autocast leaves the residual stream in the master weights' dtype), a seq2seq
  decoder also the encoder's output, and one layer's working set is rebuilt at a time. Added: the
  widest tensor a layer saves, once (its gradient exists beside the saved ones during that layer's
  backward), and with 4-bit one dequantized weight of the largest quantized Linear. Where a model's
  forward cannot run on fake tensors, the shape formula `_formula_elements` stands in (SDPA, no
  dropout: B*S*(10*H + 4*I) elements of the compute dtype a layer) and the estimate says so.
- logits: chunked, min(chunk_tokens, B*label_tokens) rows x V float32, times 3 (logits,
  log-softmax, gradient); otherwise B*S_logits*V*(dtype + 4 + 4): the logits, the float32 upcast
  and its gradient (S_logits = seq_tokens for a causal LM, label_tokens for seq2seq).
- CUDA overhead: 1.0 GB for the context and cuBLAS workspaces; fragmentation: 10% of the rest.

Left out: what CUDA's kernels keep that the CPU's do not, beyond SDPA and 4-bit Linears, which are
counted as CUDA runs them (the rest runs under the CPU's autocast), MoE routing, paged optimizer
states evicted to CPU, and data-parallel/DeepSpeed sharding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dialsum import activations
from dialsum.modeling import quantized_linears

GB = 1024**3
NF4_BITS = 4.127
CUDA_OVERHEAD = 1 * GB
FRAGMENTATION = 0.10
LAYER_H, LAYER_I, CROSS_H = 10, 4, 4


@dataclass(frozen=True)
class TrainingShape:
    micro_batch: int
    seq_tokens: int
    label_tokens: int
    encoder_decoder: bool
    four_bit: bool
    lora_params: int
    optimizer: str
    bf16: bool
    gradient_checkpointing: bool
    chunk_tokens: int | None
    lora_targets: tuple[str, ...] = ()  # resolved module names
    lora_rank: int = 0
    lora_dropout: float = 0.0
    trust_remote_code: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, int]
    note: str = ""  # how a part was had, where not as the module docstring says

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: int) -> bool:
        return self.total <= gpu_bytes

    def describe(self) -> str:
        parts = ", ".join(f"{name} {size / GB:.1f}" for name, size in self.parts.items() if size)
        return f"{self.total / GB:.1f} GB ({parts}{'; ' + self.note if self.note else ''})"


def _cfg(model: nn.Module, *names: str, default: int = 0) -> int:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def quantized_parameters(model: nn.Module) -> int:
    """Parameters that 4-bit loading stores in NF4."""
    return sum(m.weight.numel() for _, m in quantized_linears(model))


def weight_bytes(model: nn.Module, four_bit: bool) -> int:
    nf4 = {id(m.weight) for _, m in quantized_linears(model)} if four_bit else set()
    return round(sum(p.numel() * (NF4_BITS / 8 if id(p) in nf4 else 4) for p in model.parameters()))


def optimizer_bytes_per_param(name: str) -> float:
    name = name.lower()
    if "adafactor" in name:
        return 0.1 * 4
    if "lion" in name:
        return 1 if "8bit" in name else 4
    if "8bit" in name:
        return 2
    if any(key in name for key in ("sgd", "adagrad", "rmsprop")):
        return 4
    return 8


def _copy_bytes(model: nn.Module, shape: TrainingShape) -> int:
    if shape.four_bit or not shape.bf16:
        return 0
    linear = sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    if shape.lora_params and shape.gradient_checkpointing:
        linear //= max(_cfg(model, "num_hidden_layers", "num_layers", "n_layer", default=1), 1)
    return 2 * linear


def _formula_elements(model: nn.Module, shape: TrainingShape) -> int:
    b, s, t = shape.micro_batch, shape.seq_tokens, shape.label_tokens
    h = _cfg(model, "hidden_size", "d_model", "n_embd", default=1)
    ckpt = shape.gradient_checkpointing
    if not shape.encoder_decoder:
        i = _cfg(model, "intermediate_size", "n_inner", "ffn_dim", default=4 * h)
        layers = _cfg(model, "num_hidden_layers", "num_layers", "n_layer", default=1)
        work = b * s * (LAYER_H * h + LAYER_I * i)
        return layers * b * s * h + work if ckpt else layers * work
    enc_layers = _cfg(model, "encoder_layers", "num_layers", "num_hidden_layers", default=1)
    dec_layers = _cfg(model, "decoder_layers", "num_decoder_layers", default=enc_layers)
    enc_i = _cfg(model, "encoder_ffn_dim", "d_ff", "intermediate_size", default=4 * h)
    dec_i = _cfg(model, "decoder_ffn_dim", "d_ff", "intermediate_size", default=4 * h)
    enc_work = b * s * (LAYER_H * h + LAYER_I * enc_i)
    dec_work = b * t * ((LAYER_H + CROSS_H) * h + LAYER_I * dec_i) + b * s * 2 * h
    if ckpt:
        return (enc_layers * b * s + dec_layers * b * t + b * s) * h + max(enc_work, dec_work)
    return enc_layers * enc_work + dec_layers * dec_work


def activation_bytes(model: nn.Module, shape: TrainingShape) -> tuple[int, str]:
    """The activations part, and a note when the shape formula had to stand in for the count."""
    dtype_bytes = 2 if shape.bf16 else 4
    dequant = max((m.in_features * m.out_features for _, m in quantized_linears(model)), default=0)
    dequant = dequant * dtype_bytes if shape.four_bit else 0
    try:
        counted = activations.layer_bytes(model.config, _layer_shape(shape), shape.trust_remote_code)
    except Exception as err:  # a forward that fake tensors cannot run (data-dependent code): the formula
        return _formula_elements(model, shape) * dtype_bytes + dequant, f"activations by formula ({type(err).__name__})"
    return _kept_bytes(model, shape, counted) + dequant, ""


def _layer_shape(shape: TrainingShape) -> activations.LayerShape:
    return activations.LayerShape(
        micro_batch=shape.micro_batch, seq_tokens=shape.seq_tokens, label_tokens=shape.label_tokens, bf16=shape.bf16,
        four_bit=shape.four_bit, trainable_base=not shape.lora_params, lora_targets=shape.lora_targets,
        lora_rank=shape.lora_rank, lora_dropout=shape.lora_dropout)


def _kept_bytes(model: nn.Module, shape: TrainingShape, counted: activations.LayerBytes) -> int:
    """Every layer's working set, or under checkpointing every layer's input and one working set; plus the
    widest saved tensor's gradient."""
    layers = _layer_counts(model, shape.encoder_decoder)
    if shape.gradient_checkpointing:
        kept = sum(n * counted.inputs.get(stack, 0) for stack, n in layers.items())
        kept += max(counted.work.values(), default=0)
        kept += counted.inputs.get("encoder", 0)  # the encoder's output, in every decoder layer's checkpoint
    else:
        kept = sum(n * counted.work.get(stack, 0) for stack, n in layers.items())
    return kept + sum(counted.shared.values()) + max(counted.widest.values(), default=0)


def _layer_counts(model: nn.Module, encoder_decoder: bool) -> dict[str, int]:
    if not encoder_decoder:
        return {"decoder": _cfg(model, "num_hidden_layers", "num_layers", "n_layer", default=1)}
    encoder = _cfg(model, "encoder_layers", "num_layers", "num_hidden_layers", default=1)
    return {"encoder": encoder, "decoder": _cfg(model, "decoder_layers", "num_decoder_layers", default=encoder)}


def logit_bytes(model: nn.Module, shape: TrainingShape) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab = getattr(head, "out_features", None) or _cfg(model, "vocab_size", default=1)
    if shape.chunk_tokens:
        return min(shape.chunk_tokens, shape.micro_batch * shape.label_tokens) * vocab * 4 * 3
    rows = shape.micro_batch * (shape.label_tokens if shape.encoder_decoder else shape.seq_tokens)
    return rows * vocab * ((2 if shape.bf16 else 4) + 4 + 4)


def estimate(model: nn.Module, shape: TrainingShape) -> MemoryEstimate:
    """Peak training memory of `model` (built on the meta device) at `shape`, by component."""
    trainable = shape.lora_params or sum(p.numel() for p in model.parameters())
    kept, note = activation_bytes(model, shape)
    parts: dict[str, float] = {
        "weights": weight_bytes(model, shape.four_bit),
        "bf16 weight copies": _copy_bytes(model, shape),
        "adapters+grads" if shape.lora_params else "gradients": trainable * (8 if shape.lora_params else 4),
        "optimizer": round(trainable * optimizer_bytes_per_param(shape.optimizer)),
        "activations": kept,
        "logits": logit_bytes(model, shape),
    }
    parts["fragmentation"] = round(FRAGMENTATION * sum(parts.values()))
    parts["CUDA overhead"] = CUDA_OVERHEAD
    return MemoryEstimate({name: int(size) for name, size in parts.items()}, note)
