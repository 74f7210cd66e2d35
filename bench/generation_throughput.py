"""Generation throughput of a trained model: fixed batches vs dialsum's sorted token-budget batches whose
finished inputs leave the batch.

    .venv/bin/python bench/generation_throughput.py --quick     # 96 dev dialogues, 4 beams (+ ~3 min to train once)
    .venv/bin/python bench/generation_throughput.py             # 200 dev dialogues, 4 and 12 beams
    .venv/bin/python bench/generation_throughput.py --device cuda --size full

A random-weight model never emits its end token, so every summary would run to `max_length` and no
batch would ever wait on one long summary. This benchmark generates with a trained model instead: a
finished dialsum run (`--run-dir`), or by default the KoBART baseline experiment
(configs/experiments/01_baseline_kobart_rtx3090.yaml) trained once on the embedded sample and kept
under bench/.cache/ (tiny: `--init tiny`, 3 epochs, as `make demo` trains it, about 3 minutes on one
CPU thread; full: the 124M architecture from random weights, `--init random`, all weights, 2 epochs at
learning rate 5e-4, meant for the GPU; smoke: a smaller tiny copy trained 40 steps on the first 256
rows, for `gpu.sh --dry-run`, which checks the plumbing only). Its summaries end where the model ends
them, at different lengths.

Beam search over the first `--n` dev dialogues with the run's generation settings, four ways:

- `baseline`: batches of `per_device_eval_batch_size` in input order, every row padded to the longest
  input of the whole set (the competition baseline tokenizes the whole file with `padding=True`).
- `fixed`: the same batches, each padded to its own longest input (a plain `Seq2SeqTrainer.predict`
  loop with dynamic padding). `speedup` is measured against this, the stricter of the two.
- `sorted`: `dialsum.generation.generate` with `generation.drop_finished: false`: inputs sorted by
  length and cut into batches by a token budget (`generation.batch_tokens`), transformers' own beam
  search, outputs back in input order.
- `dialsum`: the same batches with `dialsum.beam` (the default): an input leaves the batch once its
  beams are final, and the cross-attention cache is not reordered with the beams.

All decode and clean the outputs the same way, and `identical` says whether they gave the same
summaries in the same order; rows that differ are generated once more alone (batch of one, no
padding) to show which variant matches the unbatched result. Each round times the variants back to
back; medians over rounds are reported because the machine may be shared (`--threads 1` on the CPU
keeps timings stable there). Prints a table, then the JSON as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "01_baseline_kobart_rtx3090.yaml"
CACHE = ROOT / "bench" / ".cache"
TARGET_SPEEDUP = {"cpu": 1.5, "cuda": 2.0}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import require_cuda  # noqa: E402

# How the cached model is trained: the demo's tiny KoBART, or the full architecture from random weights;
# `smoke` (gpu.sh --dry-run): a smaller tiny copy, 40 steps on the first rows of the sample, seconds on a CPU.
TRAIN_ARGS = {
    "tiny": ["--init", "tiny", "--set", "training.num_train_epochs=3", "--set", "speed.cpu_threads=1"],
    "smoke": ["--init", "tiny", "--max-steps", "40", "--set", "model.tiny_d_model=64", "--set", "model.tiny_layers=1",
              "--set", "model.tiny_vocab_size=600", "--set", "training.eval_strategy=no",
              "--set", "speed.cpu_threads=1"],
    "full": ["--init", "random", "--set", "lora.use_lora=false", "--set", "training.learning_rate=5e-4",
             "--set", "training.num_train_epochs=2", "--set", "training.eval_strategy=no",
             "--set", "training.save_strategy=no", "--set", "training.load_best_model_at_end=false"],
}
VARIANTS = ("baseline", "fixed", "sorted", "dialsum")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="a finished dialsum run to generate with (default: train one, cached)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["tiny", "full", "smoke"], default="tiny",
                        help="the cached model: tiny KoBART-family or the full KoBART architecture (124M); smoke: "
                             "a smaller tiny copy trained 40 steps on the first rows (checks the plumbing only)")
    parser.add_argument("--quick", action="store_true", help="96 dialogues, 4 beams, 3 rounds")
    parser.add_argument("--n", type=int, default=200, help="dev dialogues to summarize")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 12], help="beam settings to compare")
    parser.add_argument("--max-length", type=int, default=100, help="longest summary (the seed's 100)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per variant (interleaved)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.beams, args.rounds = 96, [4], 3
    require_cuda(args.device)
    return args


def cached_run(size: str) -> Path:
    """The trained run for `size` under bench/.cache/, trained once with `dialsum train`."""
    run = CACHE / f"kobart-{size}"
    if (run / "model_info.json").is_file():
        return run
    if run.exists():  # an interrupted training: start again
        import shutil

        shutil.rmtree(run)
    print(f"training the {size} model once into {run} ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "dialsum.cli", "train", str(CONFIG), *TRAIN_ARGS[size], "--set",
           "generation.max_length=64", "--run-dir", str(run)]
    if size == "smoke":
        cmd += ["--data", str(sample_head(CACHE / "sample-head"))]
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
    return run


def sample_head(folder: Path) -> Path:
    """The first rows of the embedded sample (256 train, 32 dev, 8 test), kept beside the cached runs."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 256), ("dev", 32), ("test", 8)):
        pd.read_csv(ROOT / "data" / "sample" / f"{name}.csv", dtype=str).head(n).to_csv(folder / f"{name}.csv",
                                                                                        index=False)
    return folder


@dataclass
class Setup:
    cfg: Any
    tokenizer: Any
    model: Any
    inputs: list[list[int]]
    strip_tokens: list[str]
    run_dir: Path


def load_setup(args: argparse.Namespace) -> Setup:
    """The trained run's config, tokenizer and model, and its encoded dev inputs."""
    from dialsum import prompt
    from dialsum.finished_run import open_run, read_dev
    from dialsum.generation import decoder_tokens_to_strip

    run = open_run(Path(args.run_dir) if args.run_dir else cached_run(args.size))
    tokenizer, model = run.load()
    model = model.to(args.device).eval()
    dev = read_dev(run.cfg).head(args.n)
    inputs = prompt.make_encoder(tokenizer, run.info.family, run.cfg).inputs(list(dev["dialogue"]))
    return Setup(run.cfg, tokenizer, model, inputs, decoder_tokens_to_strip(tokenizer), run.dir)


def fixed_batch_generate(setup: Setup, gen: Any, batch_size: int, pad_to: int | None = None) -> list[str]:
    """Batches of `batch_size` in input order, padded to `pad_to` or else to each batch's longest input,
    transformers' own beam search."""
    import torch

    from dialsum.generation import clean_summary, generation_kwargs

    tok, model = setup.tokenizer, setup.model
    device = next(model.parameters()).device
    out: list[str] = []
    for start in range(0, len(setup.inputs), batch_size):
        rows = setup.inputs[start : start + batch_size]
        width = pad_to or max(len(r) for r in rows)
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        with torch.inference_mode():
            seqs = model.generate(input_ids=ids, attention_mask=mask, **generation_kwargs(gen))
        out.extend(clean_summary(t, setup.strip_tokens) for t in tok.batch_decode(seqs, skip_special_tokens=False))
    return out


def dialsum_generate(setup: Setup, gen: Any) -> list[str]:
    from dialsum.generation import generate

    return generate(setup.model, setup.tokenizer, setup.inputs, gen, setup.strip_tokens)


def timed(fn: Any, *fn_args: Any, device: str) -> tuple[float, list[str]]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*fn_args)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def summary_lengths(setup: Setup, texts: list[str]) -> dict[str, float]:
    """Tokens of the generated summaries: how much they differ is what a batch can waste."""
    counts = [len(ids) for ids in setup.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return {"mean": round(statistics.mean(counts), 1), "min": min(counts), "max": max(counts),
            "stdev": round(statistics.pstdev(counts), 1)}


def compare(setup: Setup, beams: int, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds of the variants at one beam setting; medians, speedups, identical outputs."""
    from dialsum.generation import token_budget_batches

    gen = setup.cfg.generation.model_copy(update={"num_beams": beams, "max_length": args.max_length})
    batch_size = setup.cfg.training.per_device_eval_batch_size
    longest = max(len(x) for x in setup.inputs)
    runs = {
        "baseline": (fixed_batch_generate, (setup, gen, batch_size, longest)),
        "fixed": (fixed_batch_generate, (setup, gen, batch_size)),
        "sorted": (dialsum_generate, (setup, gen.model_copy(update={"drop_finished": False}))),
        "dialsum": (dialsum_generate, (setup, gen.model_copy(update={"drop_finished": True}))),
    }
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    outputs: dict[str, list[list[str]]] = {name: [] for name in VARIANTS}
    fixed_batch_generate(replace(setup, inputs=setup.inputs[:2]), gen, batch_size)  # warm-up, untimed
    for r in range(args.rounds):
        for name in VARIANTS:
            fn, fn_args = runs[name]
            took, texts = timed(fn, *fn_args, device=args.device)
            seconds[name].append(took)
            outputs[name].append(texts)
        print(f"beams {beams} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{name} {s[-1]:.2f}s" for name, s in seconds.items()), file=sys.stderr)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    lengths = [len(x) for x in setup.inputs]
    return {
        "num_beams": beams, "max_length": gen.max_length, "batch_tokens": gen.batch_tokens,
        "eval_batch_size": batch_size,
        "batches": {"fixed": -(-len(lengths) // batch_size),
                    "dialsum": len(token_budget_batches(lengths, gen.batch_tokens, beams))},
        "summary_tokens": summary_lengths(setup, outputs["fixed"][0]),
        **{f"{name}_s": round(m, 3) for name, m in med.items()},
        **{f"{name}_s_all": [round(x, 3) for x in s] for name, s in seconds.items()},
        "speedup": round(med["fixed"] / med["dialsum"], 3),
        "speedup_sorting_only": round(med["fixed"] / med["sorted"], 3),
        "speedup_drop_finished": round(med["sorted"] / med["dialsum"], 3),
        "speedup_vs_baseline": round(med["baseline"] / med["dialsum"], 3),
        **agreement(setup, gen, outputs),
    }


def agreement(setup: Setup, gen: Any, outputs: dict[str, list[list[str]]]) -> dict[str, Any]:
    """Whether all variants gave the same summaries; where not, which rows, and which variants agree
    with the row generated alone (batch of one, no padding), the arbiter for rounding near-ties."""
    reference = outputs["fixed"][0]
    rows = {name: [i for i, (a, b) in enumerate(zip(reference, runs[0], strict=True)) if a != b]
            for name, runs in outputs.items() if name != "fixed"}
    repeatable = all(o == runs[0] for runs in outputs.values() for o in runs)
    unbatched = {}
    for i in sorted({i for found in rows.values() for i in found})[:10]:
        alone = fixed_batch_generate(replace(setup, inputs=[setup.inputs[i]]), gen, 1)[0]
        unbatched[str(i)] = sorted(name for name, runs in outputs.items() if runs[0][i] == alone)
    return {"identical": repeatable and not any(rows.values()), "repeatable": repeatable,
            "differing_rows_vs_fixed": rows, "unbatched_agrees_with": unbatched}


def print_table(summary: dict) -> None:
    print(f"generation: {summary['run_dir']} ({summary['parameters'] / 1e6:.1f}M params, trained), "
          f"{summary['device']}, {summary['dialogues']} dev dialogues, {summary['rounds']} interleaved rounds, "
          f"load {summary['load_avg_1m']}")
    print(f"{'beams':>5}{'summary tokens':>16}{'batches':>9}{'baseline s':>11}{'fixed s':>9}{'sorted s':>10}"
          f"{'dialsum s':>11}{'vs fixed':>10}{'sort / drop':>13}{'identical':>11}")
    for row in summary["runs"]:
        lengths = f"{row['summary_tokens']['mean']:.0f} ({row['summary_tokens']['min']}-{row['summary_tokens']['max']})"
        batches = f"{row['batches']['fixed']}/{row['batches']['dialsum']}"
        parts = f"{row['speedup_sorting_only']:.2f}/{row['speedup_drop_finished']:.2f}"
        print(f"{row['num_beams']:>5}{lengths:>16}{batches:>9}{row['baseline_s']:>11.2f}{row['fixed_s']:>9.2f}"
              f"{row['sorted_s']:>10.2f}{row['dialsum_s']:>11.2f}{row['speedup']:>9.2f}x{parts:>13}"
              f"{str(row['identical']):>11}")
    for row in summary["runs"]:
        if not row["identical"]:
            print(f"{row['num_beams']} beams: rows differing from fixed {row['differing_rows_vs_fixed']}, "
                  f"repeatable {row['repeatable']}; generated alone, the row matches "
                  f"{row['unbatched_agrees_with']}")
    verdict = "met" if summary["target_met"] else "MISSED"
    print(f"speedup {summary['speedup']} vs fixed batches at {summary['runs'][0]['num_beams']} beams "
          f"(>= {summary['target']} on {summary['device']}: {verdict}), {summary['speedup_vs_baseline']} vs "
          f"baseline padding; identical {summary['identical']}")


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(args.threads)
    load = [round(os.getloadavg()[0], 2)]
    setup = load_setup(args)
    runs = [compare(setup, beams, args) for beams in args.beams]
    load.append(round(os.getloadavg()[0], 2))
    summary = {
        "benchmark": "generation_throughput", "device": args.device, "size": args.size,
        "run_dir": str(setup.run_dir.relative_to(ROOT) if setup.run_dir.is_relative_to(ROOT) else setup.run_dir),
        "parameters": sum(p.numel() for p in setup.model.parameters()), "dialogues": len(setup.inputs),
        "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "load_avg_1m": load, "runs": runs,
        "speedup": runs[0]["speedup"], "speedup_vs_baseline": runs[0]["speedup_vs_baseline"],
        "identical": all(r["identical"] for r in runs), "target": TARGET_SPEEDUP[args.device],
    }
    summary["target_met"] = summary["speedup"] >= summary["target"]
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
