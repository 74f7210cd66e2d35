"""Training throughput, real tokens per second: competition baseline vs plain Hugging Face vs dialsum.

    .venv/bin/python bench/train_throughput.py --quick                  # tiny KoBART, under ~2 minutes on CPU
    .venv/bin/python bench/train_throughput.py                          # 4 steps x 7 rounds
    .venv/bin/python bench/train_throughput.py --device cuda --size full --steps 8 --rounds 9

Three ways to take training steps (forward + backward + AdamW step) on the embedded training data
(data/sample/train.csv), with the KoBART architecture and micro-batch of
configs/experiments/04_batch_optimization_rtx3090.yaml:

- `baseline` (the competition baseline's way): every example padded to the maximum lengths (encoder
  512 for the tiny model, the config's 1024 for the full one; decoder to its 200), fixed batches in
  random order, float32, `model(**batch).loss`.
- `hf` (plain Hugging Face): `transformers.DataCollatorForSeq2Seq` dynamic padding, random order,
  float32 (the Trainer's default), `model(**batch).loss`.
- `dialsum`: `dialsum.data.LengthBucketSampler`, what training uses for `group_by_length` (sorted
  by input length, ties in random order, cut into micro-batches, batches shuffled),
  `dialsum.data.Seq2SeqCollator` dynamic padding, `dialsum.losses.seq2seq_loss`; on CUDA also bf16
  autocast and fused AdamW.

Labels are padded with -100 everywhere. The tokenizer is trained offline on the training text
(`model.tiny_vocab_size` ids); the full model keeps KoBART's 30,000-id embedding and head.
Each variant has its own model (same seed) and optimizer. A measurement is `--steps` micro-batches
taken at evenly spaced positions of that variant's epoch order, so every measurement sees the whole
length range; batches are collated and moved to the device before the clock starts. Rounds run the
variants interleaved (baseline, hf, dialsum, baseline, ...) and the medians are reported, because the
machine may be shared; `--threads 1` (the default) keeps CPU timings stable on a busy machine.
Padding efficiency = real tokens / padded tokens (inputs + labels) over every batch of the epoch,
counted on the collated tensors. Prints a table, then the JSON as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "04_batch_optimization_rtx3090.yaml"
KOBART = "digit82/kobart-summarization"
VARIANTS = ("baseline", "hf", "dialsum")
TARGETS = {"speedup_vs_baseline": 4.0, "speedup_vs_hf": 1.3, "padding_efficiency": 0.9}
TINY_ENCODER_MAX = 512

Batch = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="experiment YAML (micro-batch, lengths, lr)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="tiny KoBART-family model (config's tiny_d_model/tiny_layers) or full KoBART (124M)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (2 steps x 7 rounds)")
    parser.add_argument("--steps", type=int, default=4, help="micro-batches per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="measurements per variant (interleaved)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1: stable timings on a shared machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 2, 7
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch sees no CUDA device; use --device cpu")
    return args


# ---------------------------------------------------------------- data and models


@dataclass
class Setup:
    cfg: Any
    tokenizer: Any
    examples: list[dict[str, list[int]]]
    hf_config: Any
    encoder_max: int
    decoder_max: int


def load_setup(args: argparse.Namespace) -> Setup:
    """Config, a tokenizer trained on the training text (offline), encoded examples, model config."""
    from dialsum import archs, config, data, modeling

    cfg = config.load(args.config)
    train = data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True)
    tokenizer = modeling.tokenizer_from_data(train, "bart", cfg.tokenizer.prefix, cfg.model.tiny_vocab_size,
                                             cfg.tokenizer.special_tokens)
    spec = archs.KNOWN_ARCHS[KOBART]
    if args.size == "tiny":
        spec = archs.tiny_spec(spec, cfg.model.tiny_d_model, cfg.model.tiny_layers, len(tokenizer))
        encoder_max = TINY_ENCODER_MAX
    else:
        encoder_max = min(cfg.tokenizer.encoder_max_len, spec.max_positions - 2)
    hf_config = archs.config_from_spec(spec, vocab_size=max(spec.vocab, len(tokenizer)))
    encoder = data.Encoder(tokenizer, "bart", cfg.tokenizer.prefix, encoder_max, cfg.tokenizer.decoder_max_len)
    return Setup(cfg, tokenizer, encoder.examples(train), hf_config, encoder_max, cfg.tokenizer.decoder_max_len)


def fresh_model(setup: Setup, args: argparse.Namespace) -> Any:
    from dialsum.modeling import build_fresh_model

    return build_fresh_model(setup.hf_config, args.seed).to(args.device).train()


# ---------------------------------------------------------------- batch orders and collators


def chunk(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def random_batches(n: int, micro: int, seed: int) -> list[list[int]]:
    """A RandomSampler epoch cut into fixed micro-batches (baseline and plain HF share it)."""
    import torch

    return chunk(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist(), micro)


def grouped_batches(lengths: list[int], micro: int, seed: int) -> list[list[int]]:
    """dialsum's `group_by_length` epoch: `LengthBucketSampler` order, cut by the loader."""
    from dialsum.data import LengthBucketSampler

    return LengthBucketSampler(lengths, micro, seed=seed).batches()


def pad_to_max_collator(pad_id: int, encoder_max: int, decoder_max: int) -> Callable[[list[dict]], Batch]:
    """The baseline's padding: every row to the maximum lengths, whatever the batch holds."""
    import torch

    def collate(features: list[dict]) -> Batch:
        ids = [f["input_ids"] for f in features]
        labels = [f["labels"] for f in features]
        return {
            "input_ids": torch.tensor([r + [pad_id] * (encoder_max - len(r)) for r in ids]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (encoder_max - len(r)) for r in ids]),
            "labels": torch.tensor([r + [-100] * (decoder_max - len(r)) for r in labels]),
        }

    return collate


def hf_collator(tokenizer: Any, model: Any) -> Callable[[list[dict]], Batch]:
    from transformers import DataCollatorForSeq2Seq

    hf = DataCollatorForSeq2Seq(tokenizer, model=model, padding=True, label_pad_token_id=-100)
    return lambda features: dict(hf([dict(f) for f in features]))


def token_counts(batch: Batch) -> tuple[int, int]:
    """(real, padded) tokens of a collated batch, inputs and labels together."""
    parts = side_counts(batch)
    return parts["inputs"][0] + parts["labels"][0], parts["inputs"][1] + parts["labels"][1]


def side_counts(batch: Batch) -> dict[str, tuple[int, int]]:
    """(real, padded) tokens of the encoder inputs and of the labels of a collated batch."""
    return {"inputs": (int(batch["attention_mask"].sum()), batch["input_ids"].numel()),
            "labels": (int((batch["labels"] != -100).sum()), batch["labels"].numel())}


# ---------------------------------------------------------------- variants


@dataclass
class Variant:
    name: str
    batches: list[list[int]]
    collate: Callable[[list[dict]], Batch]
    loss: Callable[[Any, Batch], Any]
    model: Any
    optimizer: Any
    bf16: bool = False
    padding: dict[str, float] = field(default_factory=dict)
    tokens_per_s: list[float] = field(default_factory=list)
    ms_per_step: list[float] = field(default_factory=list)


def plain_loss(model: Any, batch: Batch) -> Any:
    return model(**batch).loss


def dialsum_loss(chunk_tokens: int) -> Callable[[Any, Batch], Any]:
    from dialsum.losses import seq2seq_loss

    return lambda model, batch: seq2seq_loss(model, batch, chunk_tokens=chunk_tokens)


def adamw(model: Any, lr: float, fused: bool) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, fused=True if fused else None)


def build_variants(setup: Setup, args: argparse.Namespace) -> list[Variant]:
    from dialsum.data import Seq2SeqCollator

    t, cuda = setup.cfg.training, args.device == "cuda"
    micro, lr, n = t.per_device_train_batch_size, t.learning_rate, len(setup.examples)
    lengths = [len(e["input_ids"]) for e in setup.examples]
    shuffled = random_batches(n, micro, args.seed)
    pad = setup.tokenizer.pad_token_id
    models = [fresh_model(setup, args) for _ in VARIANTS]
    return [
        Variant("baseline", shuffled, pad_to_max_collator(pad, setup.encoder_max, setup.decoder_max),
                plain_loss, models[0], adamw(models[0], lr, fused=False)),
        Variant("hf", shuffled, hf_collator(setup.tokenizer, models[1]), plain_loss, models[1],
                adamw(models[1], lr, fused=False)),
        Variant("dialsum", grouped_batches(lengths, micro, args.seed),
                Seq2SeqCollator(pad), dialsum_loss(setup.cfg.speed.chunk_tokens), models[2],
                adamw(models[2], lr, fused=cuda and setup.cfg.speed.fused_adamw), bf16=cuda),
    ]


def epoch_padding_efficiency(variant: Variant, examples: list[dict]) -> dict[str, float]:
    """Real / padded tokens over every batch of the variant's epoch, on the collated tensors."""
    totals = {"inputs": [0, 0], "labels": [0, 0]}
    for idx in variant.batches:
        for side, (real, padded) in side_counts(variant.collate([examples[i] for i in idx])).items():
            totals[side][0] += real
            totals[side][1] += padded
    out = {side: real / padded for side, (real, padded) in totals.items()}
    out["total"] = sum(r for r, _ in totals.values()) / sum(p for _, p in totals.values())
    return out


# ---------------------------------------------------------------- timing


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def train_step(variant: Variant, batch: Batch, device: str) -> float:
    """Seconds of one forward + backward + optimizer step."""
    import torch

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if variant.bf16 else contextlib.nullcontext()
    synchronize(device)
    start = time.perf_counter()
    with autocast:
        loss = variant.loss(variant.model, batch)
    loss.backward()
    variant.optimizer.step()
    variant.optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


def measurement_plan(n_batches: int, steps: int, rounds: int) -> list[list[int]]:
    """Batch positions per round: evenly spaced over the epoch, each round its own offsets."""
    total = min(steps * rounds, n_batches)
    grid = [round(i * (n_batches - 1) / max(total - 1, 1)) for i in range(total)]
    return [grid[r::rounds] for r in range(rounds) if grid[r::rounds]]


def prepared(variant: Variant, positions: list[int], examples: list[dict], device: str) -> list[Batch]:
    batches = [variant.collate([examples[i] for i in variant.batches[p]]) for p in positions]
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def measure(variant: Variant, positions: list[int], examples: list[dict], device: str) -> None:
    batches = prepared(variant, positions, examples, device)
    seconds = [train_step(variant, b, device) for b in batches]
    real = sum(token_counts(b)[0] for b in batches)
    variant.tokens_per_s.append(real / sum(seconds))
    variant.ms_per_step.append(1000 * sum(seconds) / len(seconds))


def run_rounds(variants: list[Variant], examples: list[dict], args: argparse.Namespace) -> None:
    for v in variants:  # warm-up: first-step allocations and optimizer states, untimed
        train_step(v, prepared(v, [0], examples, args.device)[0], args.device)
    plan = measurement_plan(len(variants[0].batches), args.steps, args.rounds)
    for r, positions in enumerate(plan):
        for v in variants:
            measure(v, positions, examples, args.device)
        print(f"round {r + 1}/{len(plan)}: " + ", ".join(f"{v.name} {v.tokens_per_s[-1]:,.0f}"
                                                         for v in variants) + " tok/s", file=sys.stderr)


# ---------------------------------------------------------------- report


def summarize(variants: list[Variant], setup: Setup, args: argparse.Namespace, load: list[float]) -> dict:
    by = {v.name: v for v in variants}
    med = {v.name: statistics.median(v.tokens_per_s) for v in variants}
    paired = {other: statistics.median(c / o for c, o in zip(by["dialsum"].tokens_per_s,
                                                                by[other].tokens_per_s, strict=True))
              for other in ("baseline", "hf")}
    t = setup.cfg.training
    summary: dict[str, Any] = {
        "benchmark": "train_throughput", "device": args.device, "size": args.size,
        "parameters": sum(p.numel() for p in variants[0].model.parameters()),
        "micro_batch": t.per_device_train_batch_size, "grad_accum": t.gradient_accumulation_steps,
        "encoder_max": setup.encoder_max, "decoder_max": setup.decoder_max,
        "steps_per_measurement": args.steps, "rounds": len(by["dialsum"].tokens_per_s),
        "examples_per_measurement": args.steps * t.per_device_train_batch_size,
        "torch_threads": _torch_threads(), "load_avg_1m": load,
        "variants": {v.name: {"tokens_per_s": round(med[v.name], 1),
                              "ms_per_step": round(statistics.median(v.ms_per_step), 1),
                              "padding_efficiency": round(v.padding["total"], 4),
                              "input_padding_efficiency": round(v.padding["inputs"], 4),
                              "label_padding_efficiency": round(v.padding["labels"], 4),
                              "tokens_per_s_all": [round(x, 1) for x in v.tokens_per_s]} for v in variants},
        "speedup_vs_baseline": round(med["dialsum"] / med["baseline"], 3),
        "speedup_vs_hf": round(med["dialsum"] / med["hf"], 3),
        "paired_speedup_vs_baseline": round(paired["baseline"], 3),
        "paired_speedup_vs_hf": round(paired["hf"], 3),
        "padding_efficiency": round(by["dialsum"].padding["total"], 4),
    }
    summary["targets_met"] = {key: summary[key] >= goal for key, goal in TARGETS.items()}
    return summary


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_table(summary: dict) -> None:
    print(f"training throughput: KoBART {summary['size']} ({summary['parameters'] / 1e6:.1f}M params), "
          f"{summary['device']}, micro-batch {summary['micro_batch']}, {summary['steps_per_measurement']} steps"
          f" x {summary['rounds']} interleaved rounds, load {summary['load_avg_1m']}")
    print(f"{'variant':<10}{'tok/s (median)':>16}{'ms/step':>10}{'pad. eff.':>11}{'(in/labels)':>13}"
          f"{'dialsum is':>12}")
    dialsum = summary["variants"]["dialsum"]["tokens_per_s"]
    for name, row in summary["variants"].items():
        print(f"{name:<10}{row['tokens_per_s']:>16,.0f}{row['ms_per_step']:>10.1f}"
              f"{row['padding_efficiency']:>11.3f}"
              f"{row['input_padding_efficiency']:>7.3f}/{row['label_padding_efficiency']:.3f}"
              f"{dialsum / row['tokens_per_s']:>11.2f}x")
    met = ", ".join(f"{k} {summary[k]} (>= {TARGETS[k]}: {'met' if ok else 'MISSED'})"
                    for k, ok in summary["targets_met"].items())
    print(met)


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(args.threads)
    load = [round(os.getloadavg()[0], 2)]
    setup = load_setup(args)
    variants = build_variants(setup, args)
    for v in variants:
        v.padding = epoch_padding_efficiency(v, setup.examples)
    run_rounds(variants, setup.examples, args)
    load.append(round(os.getloadavg()[0], 2))
    summary = summarize(variants, setup, args, load)
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
