"""Peak memory of one mT5 training step with the real 250,112-token vocabulary: plain loss vs chunked.

    .venv/bin/python bench/vocab_memory.py --quick
    .venv/bin/python bench/vocab_memory.py                      # d_model 128, 8 x 128 inputs, 8 x 64 labels
    .venv/bin/python bench/vocab_memory.py --device cuda

A scaled-down mT5 (small d_model, 1 layer each side) keeps the full vocabulary and, as mT5-base, an
lm_head with its own weight (embeddings shared by encoder and decoder). One step = forward, backward
and an AdamW step. Each variant runs in a fresh subprocess that takes two steps on the same batch:
the first (it also allocates AdamW's states, a cost the loss cannot change) and a steady one (states
already there, as for every later step of a training run); `memory_ratio` is the steady step's.
Peak = on CPU the process's peak RSS during the step (high-water mark reset before it through
/proc/self/clear_refs) minus its RSS right before it; on CUDA torch.cuda.max_memory_allocated minus
the memory allocated right before it. Prints a table, then the JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MT5_VOCAB = 250_112
VARIANTS = ("plain", "chunked")
STEPS = ("first", "steady")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="d_model 32, 4 x 64 inputs, 4 x 64 labels")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--src-len", type=int, default=128)
    parser.add_argument("--tgt-len", type=int, default=64)
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.d_model, args.batch, args.src_len, args.tgt_len, args.chunk_tokens = 32, 4, 64, 64, 64
    return args


def build_model(args: argparse.Namespace):
    """Tiny-bodied mT5 with the full vocabulary; lm_head gets its own weight like mT5-base's.

    (transformers 5.24's MT5Config ignores a `tie_word_embeddings=False` argument and always ties.)
    """
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    cfg = MT5Config(
        vocab_size=MT5_VOCAB, d_model=args.d_model, d_kv=args.d_model // 4, d_ff=2 * args.d_model,
        num_layers=args.layers, num_heads=4, dropout_rate=0.0, pad_token_id=0, decoder_start_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(args.seed)
    model = MT5ForConditionalGeneration(cfg)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(MT5_VOCAB, args.d_model) * args.d_model**-0.5)
    return model.to(args.device).train()


def build_batch(args: argparse.Namespace) -> dict:
    """Random ids; label rows have random lengths (at least half of tgt_len), padded with -100."""
    import torch

    gen = torch.Generator().manual_seed(args.seed + 1)
    input_ids = torch.randint(2, MT5_VOCAB, (args.batch, args.src_len), generator=gen)
    labels = torch.randint(2, MT5_VOCAB, (args.batch, args.tgt_len), generator=gen)
    lengths = torch.randint(args.tgt_len // 2, args.tgt_len + 1, (args.batch,), generator=gen)
    labels[torch.arange(args.tgt_len)[None, :] >= lengths[:, None]] = -100
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    return {key: value.to(args.device) for key, value in batch.items()}


class MemoryMeter:
    """Current and peak memory of this process, with the peak reset before each measured step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak_reset = True

    def reset(self) -> int:
        """Reset the peak; return the memory in use now (the step's baseline)."""
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.peak_reset = False
        return self._rss_status("VmRSS")

    def peak(self) -> int:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return max(self._rss_status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    @staticmethod
    def _rss_status(field: str) -> int:
        with open("/proc/self/status") as handle:
            return int(re.search(rf"{field}:\s+(\d+) kB", handle.read()).group(1)) * 1024


def timed_step(args: argparse.Namespace, model, batch: dict, optimizer, meter: MemoryMeter) -> dict:
    """One forward + backward + AdamW step; its peaks above the level right before it, and its time."""
    from dialsum.losses import seq2seq_loss

    optimizer.zero_grad(set_to_none=True)
    before = meter.reset()
    start = time.perf_counter()
    if args.child == "plain":
        loss = model(**batch).loss
    else:
        loss = seq2seq_loss(model, batch, chunk_tokens=args.chunk_tokens)
    loss.backward()
    fwd_bwd_peak = meter.peak() - before
    optimizer.step()
    peak = meter.peak() - before
    return {"loss": loss.item(), "step_s": time.perf_counter() - start, "peak_bytes": peak,
            "fwd_bwd_peak_bytes": fwd_bwd_peak, "before_bytes": before}


def run_variant(args: argparse.Namespace) -> dict:
    """Child process: build the model and batch, take the first and a steady step, report both."""
    import torch

    model, batch = build_model(args), build_batch(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    meter = MemoryMeter(cuda=args.device == "cuda")
    steps = {name: timed_step(args, model, batch, optimizer, meter) for name in STEPS}
    return {"variant": args.child, "steps": steps, "peak_reset": meter.peak_reset,
            "valid_label_tokens": int((batch["labels"] != -100).sum())}


def run_child(variant: str) -> dict:
    """Run one variant in a fresh interpreter and parse the JSON it prints last."""
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--child", variant]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{variant} step failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(args: argparse.Namespace, runs: dict[str, dict]) -> dict:
    mib = 2**20
    summary = {
        "device": args.device, "vocab_size": MT5_VOCAB, "d_model": args.d_model, "layers": args.layers,
        "batch": args.batch, "src_len": args.src_len, "tgt_len": args.tgt_len,
        "valid_label_tokens": runs["plain"]["valid_label_tokens"], "chunk_tokens": args.chunk_tokens,
    }
    for step in STEPS:
        for variant in VARIANTS:
            measured = runs[variant]["steps"][step]
            summary[f"{step}_{variant}_peak_mib"] = round(measured["peak_bytes"] / mib, 1)
            summary[f"{step}_{variant}_fwd_bwd_peak_mib"] = round(measured["fwd_bwd_peak_bytes"] / mib, 1)
            summary[f"{step}_{variant}_step_s"] = round(measured["step_s"], 3)
    plain, chunked = (runs[variant]["steps"] for variant in VARIANTS)
    summary["memory_ratio"] = round(chunked["steady"]["peak_bytes"] / plain["steady"]["peak_bytes"], 3)
    summary["first_step_memory_ratio"] = round(chunked["first"]["peak_bytes"] / plain["first"]["peak_bytes"], 3)
    for variant in VARIANTS:
        steps = runs[variant]["steps"].values()
        summary[f"process_{variant}_peak_mib"] = round(max(s["before_bytes"] + s["peak_bytes"] for s in steps) / mib, 1)
    summary["process_peak_ratio"] = round(summary["process_chunked_peak_mib"] / summary["process_plain_peak_mib"], 3)
    summary["max_loss_diff"] = max(abs(plain[step]["loss"] - chunked[step]["loss"]) for step in STEPS)
    summary["loss"] = plain["first"]["loss"]
    summary["peak_reset"] = all(runs[variant]["peak_reset"] for variant in VARIANTS)
    return summary


def print_table(summary: dict) -> None:
    print(f"mT5 train step, vocab {summary['vocab_size']}, d_model {summary['d_model']}, batch {summary['batch']}"
          f" x {summary['src_len']} -> {summary['tgt_len']} ({summary['valid_label_tokens']} label tokens), "
          f"{summary['device']}, chunk_tokens {summary['chunk_tokens']}")
    print(f"{'step':<8}{'variant':<9}{'peak MiB':>10}{'fwd+bwd MiB':>13}{'seconds':>9}")
    for step in STEPS:
        for variant in VARIANTS:
            key = f"{step}_{variant}"
            print(f"{step:<8}{variant:<9}{summary[key + '_peak_mib']:>10.1f}"
                  f"{summary[key + '_fwd_bwd_peak_mib']:>13.1f}{summary[key + '_step_s']:>9.2f}")
    print(f"memory_ratio {summary['memory_ratio']:.3f} steady step (target <= 0.6), "
          f"{summary['first_step_memory_ratio']:.3f} first step, "
          f"{summary['process_peak_ratio']:.3f} whole process (interpreter, params, AdamW states included); "
          f"max_loss_diff {summary['max_loss_diff']:.2e} (target <= 1e-5)")


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(run_variant(args)))
        return
    summary = summarize(args, {variant: run_child(variant) for variant in VARIANTS})
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
