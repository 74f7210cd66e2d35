"""Training throughput, real tokens per second: competition baseline vs plain Hugging Face (random order and
its own group_by_length) vs dialsum.

    .venv/bin/python bench/train_throughput.py --quick            # tiny KoBART, one epoch each, ~1.5 min on CPU
    .venv/bin/python bench/train_throughput.py                    # two epochs each, ~3 minutes
    .venv/bin/python bench/train_throughput.py --device cuda --size full

Five ways to take training steps (forward + backward + AdamW step) on the embedded training data
(data/sample/train.csv), with the KoBART architecture and micro-batch of
configs/experiments/04_batch_optimization_rtx3090.yaml:

- `baseline` (the competition baseline's way): every example padded to the maximum lengths (encoder
  512 for the tiny model, the config's 1024 for the full one; decoder to its 200), fixed batches in
  random order, float32, `model(**batch).loss`.
- `hf` (plain Hugging Face, what a user writes with the Trainer and its defaults):
  `transformers.DataCollatorForSeq2Seq` dynamic padding, random order, the Trainer's default
  optimizer (fused AdamW with torch >= 2.8), `model(**batch).loss`; float32 on the CPU, bf16 autocast
  on CUDA (what a user turns on there).
- `hf_grouped`: the same with transformers' own `group_by_length` (`LengthGroupedSampler`: random
  mega-batches of 50 micro-batches, each sorted by input length, longest first).
- `dialsum`: `dialsum.data.LengthBucketSampler` as training uses it for `group_by_length` (sorted by
  input length, ties in random order, batches shuffled), `dialsum.data.Seq2SeqCollator` dynamic
  padding, `dialsum.losses.seq2seq_loss` (only labelled positions reach the head), fused AdamW as
  `speed.fused_adamw` makes it; on CUDA also bf16 autocast.
- `dialsum_summaries`: the same with `speed.bucket_summaries: true` (each window of a few
  micro-batches re-sorted by summary length), which is off by default.

Labels are padded with -100 everywhere. The tokenizer is trained offline on the training text
(`model.tiny_vocab_size` ids); the full model keeps KoBART's 30,000-id embedding and head.
Each variant has its own model (same seed) and optimizer, and takes every micro-batch of its own epoch
order (`--epochs` times), so all of them train on exactly the same tokens and throughput is total real
tokens over total step time: no sample of batches decides the ratio. The epoch is cut into `--rounds`
slices of evenly spaced batches, and the rounds run the variants interleaved (hf, hf_grouped, dialsum,
hf, ...), because the machine may be shared. The baseline, ten times slower, takes `--baseline-steps`
evenly spaced batches per round. Batches are collated and moved to the device before the clock
starts; `--threads 1` (the default) keeps CPU timings stable on a busy machine.
Padding efficiency = real tokens / padded tokens (inputs + labels) over every batch of the epoch,
counted on the collated tensors. Prints a table, then the JSON as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
VARIANTS = ("baseline", "hf", "hf_grouped", "dialsum", "dialsum_summaries")
TARGETS = {"speedup_vs_baseline": 4.0, "speedup_vs_hf": 1.3, "speedup_vs_hf_grouped": 1.1,
           "padding_efficiency": 0.9}
TINY_ENCODER_MAX = 512

Batch = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="experiment YAML (micro-batch, lengths, lr)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="tiny KoBART-family model (config's tiny_d_model/tiny_layers) or full KoBART (124M)")
    parser.add_argument("--quick", action="store_true", help="one epoch per variant in 5 rounds")
    parser.add_argument("--epochs", type=int, default=2, help="epochs each variant takes (all its batches)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved slices of each epoch")
    parser.add_argument("--baseline-steps", type=int, default=2, help="the baseline's micro-batches per round")
    parser.add_argument("--rows", type=int, default=None, help="only the first N training rows (gpu.sh --dry-run)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1: stable timings on a shared machine)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds, args.baseline_steps = 1, 5, 2
    require_cuda(args.device)
    return args


def require_cuda(device: str) -> None:
    """`--device cuda` where torch sees no CUDA device: one line, exit status 1."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch sees no CUDA device; use --device cpu")


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
    train = data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True).head(args.rows)
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


def hf_grouped_batches(lengths: list[int], micro: int, seed: int) -> list[list[int]]:
    """transformers' `group_by_length` epoch: `LengthGroupedSampler` order, cut by the loader."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    sampler = LengthGroupedSampler(micro, lengths=lengths, generator=torch.Generator().manual_seed(seed))
    return chunk(list(sampler), micro)


def dialsum_batches(setup: Setup, micro: int, seed: int, summaries: bool) -> list[list[int]]:
    """dialsum's `group_by_length` epoch: `LengthBucketSampler` order (over summary lengths too, on request)."""
    from dialsum.data import LengthBucketSampler

    labels = [len(e["labels"]) for e in setup.examples] if summaries else None
    return LengthBucketSampler([len(e["input_ids"]) for e in setup.examples], micro, seed=seed,
                               label_lengths=labels).batches()


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
    measured: list[tuple[int, float, int]] = field(default_factory=list)  # per round: real tokens, s, steps

    def throughput(self, rounds: slice = slice(None)) -> float:
        """Real tokens per second over the measured rounds (all by default)."""
        part = self.measured[rounds]
        return sum(t for t, _, _ in part) / sum(s for _, s, _ in part)


def plain_loss(model: Any, batch: Batch) -> Any:
    return model(**batch).loss


def dialsum_loss(chunk_tokens: int) -> Callable[[Any, Batch], Any]:
    from dialsum.losses import seq2seq_loss

    return lambda model, batch: seq2seq_loss(model, batch, chunk_tokens=chunk_tokens)


def adamw(model: Any, lr: float, fused: bool) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, fused=True if fused else None)


def build_variants(setup: Setup, args: argparse.Namespace) -> list[Variant]:
    from transformers import TrainingArguments

    from dialsum.data import Seq2SeqCollator

    t, cuda = setup.cfg.training, args.device == "cuda"
    micro, lr, n = t.per_device_train_batch_size, t.learning_rate, len(setup.examples)
    lengths = [len(e["input_ids"]) for e in setup.examples]
    shuffled = random_batches(n, micro, args.seed)
    pad = setup.tokenizer.pad_token_id
    hf_fused = TrainingArguments.optim == "adamw_torch_fused"  # the Trainer's default optimizer
    models = dict(zip(VARIANTS, (fresh_model(setup, args) for _ in VARIANTS), strict=True))

    def hf(name: str, batches: list[list[int]]) -> Variant:
        model = models[name]
        return Variant(name, batches, hf_collator(setup.tokenizer, model), plain_loss, model,
                       adamw(model, lr, fused=hf_fused), bf16=cuda)  # on a GPU a user turns bf16 on

    return [
        Variant("baseline", shuffled, pad_to_max_collator(pad, setup.encoder_max, setup.decoder_max),
                plain_loss, models["baseline"], adamw(models["baseline"], lr, fused=False)),
        hf("hf", shuffled),
        hf("hf_grouped", hf_grouped_batches(lengths, micro, args.seed)),
        *(Variant(name, dialsum_batches(setup, micro, args.seed, name == "dialsum_summaries"),
                  Seq2SeqCollator(pad), dialsum_loss(setup.cfg.speed.chunk_tokens), models[name],
                  adamw(models[name], lr, fused=setup.cfg.speed.fused_adamw), bf16=cuda)
          for name in ("dialsum", "dialsum_summaries")),
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


def measurement_plan(n_batches: int, steps: int | None, rounds: int) -> list[list[int]]:
    """Batch positions per round: `steps` evenly spaced over the epoch (None: every batch), each round
    its own interleaved share."""
    total = n_batches if steps is None else min(steps * rounds, n_batches)
    grid = [round(i * (n_batches - 1) / max(total - 1, 1)) for i in range(total)]
    return [grid[r::rounds] for r in range(rounds) if grid[r::rounds]]


def prepared(variant: Variant, positions: list[int], examples: list[dict], device: str) -> list[Batch]:
    batches = [variant.collate([examples[i] for i in variant.batches[p]]) for p in positions]
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


def measure(variant: Variant, positions: list[int], examples: list[dict], device: str) -> None:
    batches = prepared(variant, positions, examples, device)
    seconds = sum(train_step(variant, b, device) for b in batches)
    variant.measured.append((sum(token_counts(b)[0] for b in batches), seconds, len(batches)))


def run_rounds(variants: list[Variant], examples: list[dict], args: argparse.Namespace) -> None:
    for v in variants:  # warm-up: first-step allocations and optimizer states, untimed
        train_step(v, prepared(v, [0], examples, args.device)[0], args.device)
    plans = {v.name: measurement_plan(len(v.batches), args.baseline_steps if v.name == "baseline" else None,
                                      args.rounds) for v in variants}
    for epoch in range(args.epochs):
        for r in range(args.rounds):
            for v in variants:
                if r < len(plans[v.name]):
                    measure(v, plans[v.name][r], examples, args.device)
            print(f"epoch {epoch + 1}/{args.epochs} round {r + 1}/{args.rounds}: "
                  + ", ".join(f"{v.name} {v.throughput(slice(-1, None)):,.0f}" for v in variants) + " tok/s",
                  file=sys.stderr)


# ---------------------------------------------------------------- report


def summarize(variants: list[Variant], setup: Setup, args: argparse.Namespace, load: list[float]) -> dict:
    by = {v.name: v for v in variants}
    speed = {v.name: v.throughput() for v in variants}
    per_epoch = len(by["dialsum"].measured) // args.epochs
    epochs = [slice(e * per_epoch, (e + 1) * per_epoch) for e in range(args.epochs)]
    t = setup.cfg.training
    summary: dict[str, Any] = {
        "benchmark": "train_throughput", "device": args.device, "size": args.size,
        "parameters": sum(p.numel() for p in variants[0].model.parameters()),
        "micro_batch": t.per_device_train_batch_size, "grad_accum": t.gradient_accumulation_steps,
        "encoder_max": setup.encoder_max, "decoder_max": setup.decoder_max,
        "epochs": args.epochs, "rounds": args.rounds, "torch_threads": _torch_threads(), "load_avg_1m": load,
        "variants": {v.name: {"tokens_per_s": round(speed[v.name], 1),
                              "steps": sum(n for _, _, n in v.measured),
                              "ms_per_step": round(1000 * sum(s for _, s, _ in v.measured)
                                                   / sum(n for _, _, n in v.measured), 1),
                              "padding_efficiency": round(v.padding["total"], 4),
                              "input_padding_efficiency": round(v.padding["inputs"], 4),
                              "label_padding_efficiency": round(v.padding["labels"], 4)} for v in variants},
    }
    for other in ("baseline", "hf", "hf_grouped"):
        summary[f"speedup_vs_{other}"] = round(speed["dialsum"] / speed[other], 3)
        if other != "baseline":  # the same tokens in each epoch: a ratio per epoch shows the spread
            summary[f"speedup_vs_{other}_per_epoch"] = [
                round(by["dialsum"].throughput(e) / by[other].throughput(e), 3) for e in epochs]
    summary["padding_efficiency"] = round(by["dialsum"].padding["total"], 4)
    summary["bucket_summaries"] = {  # the opt-in: faster, and lower dev scores measured (README)
        f"speedup_vs_{other}": round(by["dialsum_summaries"].throughput() / speed[other], 3)
        for other in ("hf", "hf_grouped", "dialsum")}
    summary["targets_met"] = {key: summary[key] >= goal for key, goal in TARGETS.items()}
    return summary


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def print_table(summary: dict) -> None:
    print(f"training throughput: KoBART {summary['size']} ({summary['parameters'] / 1e6:.1f}M params), "
          f"{summary['device']}, micro-batch {summary['micro_batch']}, {summary['epochs']} epoch(s) in "
          f"{summary['rounds']} interleaved rounds, load {summary['load_avg_1m']}")
    print(f"{'variant':<18}{'tok/s':>10}{'steps':>7}{'ms/step':>10}{'pad. eff.':>11}{'(in/labels)':>13}"
          f"{'dialsum is':>12}")
    dialsum = summary["variants"]["dialsum"]["tokens_per_s"]
    for name, row in summary["variants"].items():
        print(f"{name:<18}{row['tokens_per_s']:>10,.0f}{row['steps']:>7}{row['ms_per_step']:>10.1f}"
              f"{row['padding_efficiency']:>11.3f}"
              f"{row['input_padding_efficiency']:>7.3f}/{row['label_padding_efficiency']:.3f}"
              f"{dialsum / row['tokens_per_s']:>11.2f}x")
    met = ", ".join(f"{k} {summary[k]} (>= {TARGETS[k]}: {'met' if ok else 'MISSED'})"
                    for k, ok in summary["targets_met"].items())
    print(met)
    opt_in = summary["bucket_summaries"]
    print("speed.bucket_summaries (off by default): " + ", ".join(f"{k} {v}" for k, v in opt_in.items()))


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
