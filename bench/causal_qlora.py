"""QLoRA training of a decoder-only LM, real tokens per second and step memory: plain Hugging Face vs dialsum.

    .venv/bin/python bench/causal_qlora.py --quick                  # tiny Llama-shaped model on the CPU, ~1 minute
    .venv/bin/python bench/causal_qlora.py --device cuda --size 1b  # 1.1B Llama-shaped model (TinyLlama's shape)

The recipe of configs/experiments/06_exaone3.5_2.4b_qlora.yaml (prompt, lengths, micro-batch 8, LoRA r16
on q,k,v,o,gate,up,down, gradient checkpointing) on a Llama-architecture model with random weights,
loaded in 4-bit NF4 (bf16 compute on CUDA) through `dialsum.modeling` and wrapped by `dialsum.lora`,
the same way for both sides. The prompts are the dialogues of data/sample/train.csv in the plain
template, the summary and end token after them; labels are -100 over the prompt. Two ways to take
training steps (forward + backward + AdamW over the adapters):

- `hf`: `DataCollatorForSeq2Seq` dynamic padding, random order, `model(**batch).loss` (logits of every
  position, prompt and padding included);
- `dialsum`: `LengthBucketSampler` order, `Seq2SeqCollator`, `dialsum.losses.causal_loss` (only the
  summary positions reach the head).

Each measurement is `--steps` micro-batches evenly spaced over the variant's epoch; rounds interleave
the variants. Throughput = real tokens (prompt and summary, counted once) over step time. On CUDA, the
step memory is the peak allocated during a variant's steps above what was allocated before them.
Generation is not measured here: a random-weight LM never ends its output (bench/generation_throughput.py
measures generation with a trained model). Prints a table, then the JSON as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "06_exaone3.5_2.4b_qlora.yaml"
SIZES = {  # Llama shapes: 1b is TinyLlama-1.1B's
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 4000},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "vocab_size": 32000},
}
TARGETS = {"speedup_vs_hf": 1.5}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import measurement_plan, random_batches, require_cuda, train_step  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--quick", action="store_true", help="2 steps x 3 rounds")
    parser.add_argument("--steps", type=int, default=4, help="micro-batches per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per variant (interleaved)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 2, 3
    require_cuda(args.device)
    return args


@dataclass
class Variant:
    name: str
    batches: list[list[int]]
    collate: Any
    loss: Any
    model: Any
    optimizer: Any
    bf16: bool = False  # autocast on CUDA, both sides
    measured: list[tuple[int, float]] = field(default_factory=list)  # real tokens, seconds
    step_memory: int = 0

    def throughput(self) -> float:
        return sum(t for t, _ in self.measured) / sum(s for _, s in self.measured)


def load(args: argparse.Namespace) -> tuple[Any, Any, list[dict], Any]:
    """Config, tokenizer trained on the training text, encoded examples, and the saved random checkpoint."""
    from dialsum import archs, config, data, modeling, prompt

    cfg = config.load(CONFIG)
    train = data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True)
    tok = modeling.tokenizer_from_data(train, "causal", "", cfg.model.tiny_vocab_size, cfg.tokenizer.special_tokens)
    prompt.adapt_chat_template(cfg, tok, [])  # a tokenizer trained here has no chat template: the plain one
    examples = prompt.make_encoder(tok, "causal", cfg).examples(train)
    dims = SIZES[args.size]
    hf_config = archs.causal_config("llama", {**dims, "vocab_size": max(dims["vocab_size"], len(tok)),
                                              "max_position_embeddings": 2048})
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(hf_config, key, getattr(tok, key))
    return cfg, tok, examples, hf_config


def qlora_model(checkpoint: str, cfg: Any, args: argparse.Namespace) -> Any:
    import torch

    from dialsum import lora, modeling

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = modeling.load_pretrained_model(checkpoint, four_bit=True, compute_dtype=dtype, device=args.device)
    c = cfg.lora
    targets = lora.resolve_targets(c.target_modules, model).resolved  # q -> q_proj, gate -> gate_proj, ...
    return lora.apply(model, targets=targets, rank=c.lora_rank, alpha=c.lora_alpha, dropout=0.0,
                      quantized=True, gradient_checkpointing=cfg.training.gradient_checkpointing).train()


def build_variants(cfg: Any, tok: Any, examples: list[dict], checkpoint: str, args: argparse.Namespace) -> list[Variant]:
    import torch
    from transformers import DataCollatorForSeq2Seq

    from dialsum.data import LengthBucketSampler, Seq2SeqCollator
    from dialsum.losses import causal_loss

    micro = cfg.training.per_device_train_batch_size
    out = []
    for name in ("hf", "dialsum"):
        model = qlora_model(checkpoint, cfg, args)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.training.learning_rate, fused=True)
        if name == "hf":
            hf = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
            out.append(Variant(name, random_batches(len(examples), micro, args.seed),
                               lambda f, hf=hf: dict(hf([dict(x) for x in f])), lambda m, b: m(**b).loss,
                               model, optimizer, bf16=args.device == "cuda"))
        else:
            lengths = [len(e["input_ids"]) for e in examples]
            out.append(Variant(name, LengthBucketSampler(lengths, micro, seed=args.seed).batches(),
                               Seq2SeqCollator(tok.pad_token_id),
                               lambda m, b: causal_loss(m, b, chunk_tokens=cfg.speed.chunk_tokens), model, optimizer,
                               bf16=args.device == "cuda"))
    return out


def measure(v: Variant, positions: list[int], examples: list[dict], device: str) -> None:
    import torch

    batches = [{k: t.to(device) for k, t in v.collate([examples[i] for i in v.batches[p]]).items()}
               for p in positions]
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    seconds = sum(train_step(v, b, device) for b in batches)
    if device == "cuda":
        v.step_memory = max(v.step_memory, torch.cuda.max_memory_allocated() - before)
    v.measured.append((sum(int(b["attention_mask"].sum()) for b in batches), seconds))


def main() -> None:
    import torch

    from dialsum import modeling

    args = parse_args()
    if args.device == "cpu":  # on CUDA the host builds the 1.1B checkpoint with all its cores
        torch.set_num_threads(args.threads)
    load_avg = [round(os.getloadavg()[0], 2)]
    cfg, tok, examples, hf_config = load(args)
    with tempfile.TemporaryDirectory() as tmp:
        modeling.build_fresh_model(hf_config, args.seed).save_pretrained(tmp)  # random weights, quantized on load
        variants = build_variants(cfg, tok, examples, tmp, args)
    parameters = sum(p.numel() for p in variants[0].model.parameters())
    for v in variants:  # warm-up, untimed
        train_step(v, {k: t.to(args.device) for k, t in v.collate([examples[i] for i in v.batches[0]]).items()},
                   args.device)
    plans = {v.name: measurement_plan(len(v.batches), args.steps, args.rounds) for v in variants}
    for r in range(args.rounds):
        for v in variants:
            measure(v, plans[v.name][r], examples, args.device)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v.name} {v.measured[-1][0] / v.measured[-1][1]:,.0f}" for v in variants) + " tok/s", file=sys.stderr)
    load_avg.append(round(os.getloadavg()[0], 2))
    hf, ours = variants
    summary: dict[str, Any] = {
        "benchmark": "causal_qlora", "device": args.device, "size": args.size, "parameters_4bit_model": parameters,
        "micro_batch": cfg.training.per_device_train_batch_size, "steps_per_measurement": args.steps,
        "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "load_avg_1m": load_avg,
        "variants": {v.name: {"tokens_per_s": round(v.throughput(), 1),
                              "step_memory_mb": round(v.step_memory / 2**20, 1) if args.device == "cuda" else None}
                     for v in variants},
        "speedup_vs_hf": round(ours.throughput() / hf.throughput(), 3),
        "step_memory_ratio": round(ours.step_memory / hf.step_memory, 3) if args.device == "cuda" else None,
    }
    summary["targets_met"] = {k: summary[k] >= goal for k, goal in TARGETS.items()}
    print(f"causal QLoRA: Llama {args.size} ({parameters / 1e6:.1f}M params as loaded), {args.device}, "
          f"micro-batch {summary['micro_batch']}, {args.steps} steps x {args.rounds} rounds, load {load_avg}")
    print(f"{'variant':<10}{'tok/s':>10}{'step memory MB':>16}")
    for name, row in summary["variants"].items():
        memory = "-" if row["step_memory_mb"] is None else f"{row['step_memory_mb']:,.0f}"
        print(f"{name:<10}{row['tokens_per_s']:>10,.0f}{memory:>16}")
    print(f"speedup_vs_hf {summary['speedup_vs_hf']} (>= {TARGETS['speedup_vs_hf']} on a GPU), "
          f"step_memory_ratio {summary['step_memory_ratio']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
