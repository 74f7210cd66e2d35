"""Generation throughput: fixed unsorted batches vs dialsum's length-sorted token-budget batches.

    .venv/bin/python bench/generation_throughput.py --quick            # 96 dev dialogues, 4 beams, max_length 60
    .venv/bin/python bench/generation_throughput.py                    # 120 dev dialogues, 4 and 12 beams
    .venv/bin/python bench/generation_throughput.py --device cuda --size full

Beam search over the first `--n` dialogues of the embedded dev set (data/sample/dev.csv) with the
generation settings of configs/experiments/04_batch_optimization_rtx3090.yaml (KoBART: 4 beams; 12
is the mT5 experiment's, tried too in full mode), two ways:

- `baseline`: batches of `per_device_eval_batch_size` in input order, every row padded to the longest
  input of the whole set (the competition baseline tokenizes the whole file with `padding=True`).
- `fixed`: the same batches, each padded to its own longest input (a plain `Seq2SeqTrainer.predict`
  loop with dynamic padding). `speedup` is measured against this, the stricter of the two.
- `dialsum`: `dialsum.generation.generate`: inputs sorted by length, cut into batches by a token
  budget (`generation.batch_tokens`, input tokens x beams), outputs put back in input order.

All decode and clean the outputs the same way, and `identical` says whether they gave the same
summaries in the same order; rows that differ are generated once more alone (batch of one, no
padding) to show which variant matches the unbatched result (padding changes float rounding, which
can flip a near-tie between beams late in a long random-weight output). The model is KoBART-shaped with random weights (`init_std` raised so
that each dialogue gets its own output; ids the tokenizer lacks are barred, see `forbid_unknown_ids`);
the tokenizer is trained on the training text (offline), as in bench/train_throughput.py.
Each round times the variants back to back; medians over rounds are reported because the
machine may be shared (`--threads 1` on CPU keeps timings stable there). Prints a table, then the
JSON as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "04_batch_optimization_rtx3090.yaml"
KOBART = "digit82/kobart-summarization"
TARGET_SPEEDUP = 2.0
TINY_ENCODER_MAX = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG), help="experiment YAML (generation, eval batch)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="tiny KoBART-family model (config's tiny_d_model/tiny_layers) or full KoBART (124M)")
    parser.add_argument("--quick", action="store_true", help="96 dialogues, 4 beams, max_length 60, 3 rounds")
    parser.add_argument("--n", type=int, default=120, help="dev dialogues to summarize")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 12], help="beam settings to compare")
    parser.add_argument("--max-length", type=int, default=None, help="default: the config's generation.max_length")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per variant (interleaved)")
    parser.add_argument("--init-std", type=float, default=0.5, help="weight init std of the random model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.beams, args.max_length, args.rounds = 96, [4], 60, 3
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda but torch sees no CUDA device; use --device cpu")
    return args


@dataclass
class Setup:
    cfg: Any
    tokenizer: Any
    model: Any
    inputs: list[list[int]]
    strip_tokens: list[str]


def load_setup(args: argparse.Namespace) -> Setup:
    """Config, tokenizer trained on the training text, random KoBART-shaped model, encoded dev inputs."""
    from dialsum import archs, config, data, modeling
    from dialsum.generation import decoder_tokens_to_strip

    cfg = config.load(args.config)
    train = data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True)
    tokenizer = modeling.tokenizer_from_data(train, "bart", cfg.tokenizer.prefix, cfg.model.tiny_vocab_size,
                                             cfg.tokenizer.special_tokens)
    spec = archs.KNOWN_ARCHS[KOBART]
    encoder_max = min(cfg.tokenizer.encoder_max_len, spec.max_positions - 2)
    if args.size == "tiny":
        spec = archs.tiny_spec(spec, cfg.model.tiny_d_model, cfg.model.tiny_layers, len(tokenizer))
        encoder_max = TINY_ENCODER_MAX
    hf_config = archs.config_from_spec(spec, vocab_size=max(spec.vocab, len(tokenizer)))
    hf_config.init_std = args.init_std
    model = modeling.build_fresh_model(hf_config, args.seed)
    forbid_unknown_ids(model, len(tokenizer))
    model = model.to(args.device).eval()
    dev = data.read_split(Path(cfg.data.dir) / cfg.data.dev_file, with_summary=True).head(args.n)
    encoder = data.Encoder(tokenizer, "bart", cfg.tokenizer.prefix, encoder_max, cfg.tokenizer.decoder_max_len)
    return Setup(cfg, tokenizer, model, encoder.inputs(list(dev["dialogue"])), decoder_tokens_to_strip(tokenizer))


def forbid_unknown_ids(model: Any, known: int) -> None:
    """Full KoBART has 30,000 ids, the offline tokenizer far fewer: the random model must not emit
    ids it cannot decode (they would come out as empty summaries). The head's cost is unchanged."""
    import torch

    with torch.no_grad():
        model.final_logits_bias[:, known:] = -1e9


def fixed_batch_generate(setup: Setup, gen: Any, batch_size: int, pad_to: int | None = None) -> list[str]:
    """Batches of `batch_size` in input order, padded to `pad_to` or else to each batch's longest input."""
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


def batch_counts(setup: Setup, gen: Any, batch_size: int) -> dict[str, int]:
    from dialsum.generation import token_budget_batches

    lengths = [len(x) for x in setup.inputs]
    budget = token_budget_batches(lengths, gen.batch_tokens, gen.num_beams, sort=gen.sort_by_length)
    fixed = -(-len(lengths) // batch_size)
    return {"baseline": fixed, "fixed": fixed, "dialsum": len(budget)}


def compare(setup: Setup, beams: int, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds of the variants at one beam setting; medians, speedups, identical outputs."""
    gen = setup.cfg.generation.model_copy(update={"num_beams": beams,
                                                  "max_length": args.max_length or setup.cfg.generation.max_length})
    batch_size = setup.cfg.training.per_device_eval_batch_size
    longest = max(len(x) for x in setup.inputs)
    variants = (("baseline", fixed_batch_generate, (setup, gen, batch_size, longest)),
                ("fixed", fixed_batch_generate, (setup, gen, batch_size)),
                ("dialsum", dialsum_generate, (setup, gen)))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    outputs: dict[str, list[list[str]]] = {name: [] for name, _, _ in variants}
    fixed_batch_generate(replace(setup, inputs=setup.inputs[:2]), gen, batch_size)  # warm-up, untimed
    for r in range(args.rounds):
        for name, fn, fn_args in variants:
            took, texts = timed(fn, *fn_args, device=args.device)
            seconds[name].append(took)
            outputs[name].append(texts)
        print(f"beams {beams} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{name} {s[-1]:.2f}s" for name, s in seconds.items()), file=sys.stderr)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "num_beams": beams, "max_length": gen.max_length, "batch_tokens": gen.batch_tokens,
        "eval_batch_size": batch_size, "batches": batch_counts(setup, gen, batch_size),
        "padded_to": longest, **{f"{name}_s": round(m, 3) for name, m in med.items()},
        **{f"{name}_s_all": [round(x, 3) for x in s] for name, s in seconds.items()},
        "speedup": round(med["fixed"] / med["dialsum"], 3),
        "speedup_vs_baseline": round(med["baseline"] / med["dialsum"], 3),
        "distinct_outputs": len(set(outputs["fixed"][0])), **agreement(setup, gen, outputs),
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
    print(f"generation: KoBART {summary['size']} ({summary['parameters'] / 1e6:.1f}M params, random weights), "
          f"{summary['device']}, {summary['dialogues']} dev dialogues, {summary['rounds']} interleaved rounds, "
          f"load {summary['load_avg_1m']}")
    print(f"{'beams':>5}{'max_len':>8}{'batches fixed/dialsum':>23}{'baseline s':>11}{'fixed s':>9}"
          f"{'dialsum s':>11}{'vs fixed':>10}{'vs baseline':>13}{'identical':>11}")
    for row in summary["runs"]:
        batches = f"{row['batches']['fixed']}/{row['batches']['dialsum']}"
        print(f"{row['num_beams']:>5}{row['max_length']:>8}{batches:>23}{row['baseline_s']:>11.2f}"
              f"{row['fixed_s']:>9.2f}{row['dialsum_s']:>11.2f}{row['speedup']:>9.2f}x"
              f"{row['speedup_vs_baseline']:>12.2f}x{str(row['identical']):>11}")
    for row in summary["runs"]:
        if not row["identical"]:
            print(f"{row['num_beams']} beams: rows differing from fixed {row['differing_rows_vs_fixed']}, "
                  f"repeatable {row['repeatable']}; generated alone, the row matches "
                  f"{row['unbatched_agrees_with']}")
    verdict = "met" if summary["speedup"] >= TARGET_SPEEDUP else "MISSED"
    print(f"speedup {summary['speedup']} vs fixed batches at {summary['runs'][0]['num_beams']} beams "
          f"(>= {TARGET_SPEEDUP}: {verdict}), {summary['speedup_vs_baseline']} vs baseline padding; "
          f"identical {summary['identical']}")


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
        "parameters": sum(p.numel() for p in setup.model.parameters()), "dialogues": len(setup.inputs),
        "rounds": args.rounds, "init_std": args.init_std, "torch_threads": torch.get_num_threads(),
        "load_avg_1m": load, "runs": runs, "speedup": runs[0]["speedup"],
        "speedup_vs_baseline": runs[0]["speedup_vs_baseline"],
        "identical": all(r["identical"] for r in runs),
    }
    summary["target_met"] = summary["speedup"] >= TARGET_SPEEDUP
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
