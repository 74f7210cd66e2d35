"""Peak GPU memory of training one experiment at its micro-batch: an estimate from shapes alone.

    dialsum validate configs/experiments/05_solar_10.7b_qlora.yaml
    .venv/bin/pytest tests/test_memory.py -q

`estimate(model, shape)` takes the architecture built on the meta device (no weights, no GPU) and a
`TrainingShape`. It is a planning estimate from the terms below, not a measurement: it has not yet
been checked against `torch.cuda.max_memory_reserved` on a GPU, and what it leaves out (listed at
the end) makes the real peak higher, not lower. GB here means GiB (2**30 bytes).

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
- activations, elements of the compute dtype (2 bytes with bf16, else 4), B = micro-batch,
  S = positions, H = hidden, I = intermediate: a layer's working set with SDPA (no S^2 scores) is
  B*S*(10*H + 4*I): q/k/v/o and their RoPE'd copies, two RMS norms (each saves a float32 upcast),
  and four I-wide MLP tensors (gate, act(gate), up, and the product act*up that `down_proj` saves). Checkpointing keeps each layer's input (B*S*H) plus one layer's working set;
  without it every layer keeps its working set. Seq2seq: encoder layers over `seq_tokens`, decoder
  layers over `label_tokens` with 4*H more per position for cross-attention (q, context, o input,
  norm) and its k/v over the encoder states, B*seq_tokens*2*H per decoder layer. QLoRA adds one
  dequantized weight of the largest quantized Linear.
- logits: chunked, min(chunk_tokens, B*label_tokens) rows x V float32, times 3 (logits,
  log-softmax, gradient); otherwise B*S_logits*V*(dtype + 4 + 4): the logits, the float32 upcast
  and its gradient (S_logits = seq_tokens for a causal LM, label_tokens for seq2seq).
- CUDA overhead: 1.0 GB for the context and cuBLAS workspaces; fragmentation: 10% of the rest.

Left out: LoRA dropout copies of each adapted Linear's input (up to ~40% more activations when
dropout > 0), eager attention's S^2 scores, MoE layers, the gradient of a backward step's widest
tensor, paged optimizer states evicted to CPU, and data-parallel/DeepSpeed sharding.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

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


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: int) -> bool:
        return self.total <= gpu_bytes

    def describe(self) -> str:
        parts = ", ".join(f"{name} {size / GB:.1f}" for name, size in self.parts.items() if size)
        return f"{self.total / GB:.1f} GB ({parts})"


def _cfg(model: nn.Module, *names: str, default: int = 0) -> int:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def _quantized_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linears bitsandbytes stores in NF4: all but the LM head and the fp32-kept modules."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m is not head and "lm_head" not in name.split(".")
            and not keep.intersection(name.split("."))]


def quantized_parameters(model: nn.Module) -> int:
    """Parameters that 4-bit loading stores in NF4."""
    return sum(m.weight.numel() for m in _quantized_linears(model))


def weight_bytes(model: nn.Module, four_bit: bool) -> int:
    nf4 = {id(m.weight) for m in _quantized_linears(model)} if four_bit else set()
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


def _activation_elements(model: nn.Module, shape: TrainingShape) -> int:
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


def activation_bytes(model: nn.Module, shape: TrainingShape) -> int:
    dtype_bytes = 2 if shape.bf16 else 4
    dequant = max((m.in_features * m.out_features for m in _quantized_linears(model)), default=0)
    return (_activation_elements(model, shape) + (dequant if shape.four_bit else 0)) * dtype_bytes


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
    parts: dict[str, float] = {
        "weights": weight_bytes(model, shape.four_bit),
        "bf16 weight copies": _copy_bytes(model, shape),
        "adapters+grads" if shape.lora_params else "gradients": trainable * (8 if shape.lora_params else 4),
        "optimizer": round(trainable * optimizer_bytes_per_param(shape.optimizer)),
        "activations": activation_bytes(model, shape),
        "logits": logit_bytes(model, shape),
    }
    parts["fragmentation"] = round(FRAGMENTATION * sum(parts.values()))
    parts["CUDA overhead"] = CUDA_OVERHEAD
    return MemoryEstimate({name: int(size) for name, size in parts.items()})
