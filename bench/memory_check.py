"""Peak GPU memory of every shipped experiment, measured, beside the estimate `dialsum validate` prints.

    .venv/bin/python bench/memory_check.py --device cuda --layers 05_solar_10.7b_qlora=12
    .venv/bin/python bench/memory_check.py --quick        # tiny copies on the CPU: the plumbing only

For each config in configs/experiments/ (or those named with --only), the plan `dialsum validate
--init random` makes on this machine gives the estimate (dialsum.resolve, dialsum.memory). The same
architecture is then built on the device with random weights; nothing is written to disk. A 4-bit
base is built in bf16 and each Linear that transformers' 4-bit loading would quantize (all but the
output head, tied weights and `_keep_in_fp32_modules`) is replaced by a bitsandbytes NF4 Linear4bit
with double quantization, one at a time; LoRA, liger-kernel and gradient checkpointing as `train`
applies them. dialsum's own Trainer then takes `--steps` optimizer steps at the config's micro-batch
(accumulation 1: it does not change the peak) on rows as long as the config allows, the estimate's
assumption, with the config's optimizer, precision and loss. Recorded: `torch.cuda.max_memory_allocated`,
`torch.cuda.max_memory_reserved`, and the device memory in use before the first config (the CUDA
context, which the allocator does not count). `device` = reserved peak + context is what the
estimate claims to bound; `ratio` = device / estimate (above 1: the estimate is low). Rows are fed in
order, the first of each micro-batch a token shorter, so every batch is padded as real ones are. A
config that does not fit this GPU is recorded as out of memory (`OOM`), and the next one runs.

`--layers NAME=N` measures a config at N decoder layers (and encoder layers for seq2seq), for a
model too large for the time or the GPU; its estimate is then the plan of the same architecture at N
layers (a config.json with N layers in a temporary folder, planned as validate plans any local
checkpoint), and the table says so. On the CPU (`--quick`) the tiny copies (2 layers, or --layers)
run the same steps at short lengths and micro-batch 2, built the same way, to check the plumbing;
nothing is measured there. Prints a table,
then the JSON as the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiments"
GB = 1024**3
QUICK_SETS = ["training.per_device_train_batch_size=2", "tokenizer.encoder_max_len=64", "tokenizer.decoder_max_len=32",
              "model.tiny_d_model=64", "model.tiny_layers=2", "model.tiny_vocab_size=600"]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import require_cuda  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny copies, short rows, 1 step (CPU plumbing)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per config")
    parser.add_argument("--only", nargs="*", default=None, help="config file stems (default: all)")
    parser.add_argument("--layers", nargs="*", default=[], help="STEM=N: measure that config at N layers")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 1
    args.layers = dict(_layer_cap(item) for item in args.layers)
    require_cuda(args.device)
    return args


def _layer_cap(item: str) -> tuple[str, int]:
    stem, _, count = item.partition("=")
    if not count.isdigit() or int(count) < 1:
        sys.exit(f"error: --layers {item}: expected STEM=N with N at least 1, e.g. 05_solar_10.7b_qlora=12")
    return stem, int(count)


# ---------------------------------------------------------------- the plan and its estimate


def with_layers(hf_config: Any, layers: int, folder: Path) -> str:
    """A checkpoint folder holding only config.json: the architecture at `layers` layers."""
    small = hf_config.__class__.from_dict(hf_config.to_dict())
    for key in ("num_hidden_layers", "num_layers", "encoder_layers", "decoder_layers", "num_decoder_layers"):
        if isinstance(getattr(small, key, None), int):
            setattr(small, key, layers)
    if isinstance(getattr(small, "layer_types", None), list):
        small.layer_types = small.layer_types[:layers]
    small.save_pretrained(folder)
    return str(folder)


def make_plan(path: Path, args: argparse.Namespace, folder: Path) -> tuple[Any, int, int]:
    """The plan `validate` makes (random weights at full width; tiny under --quick), at the measured depth;
    its layer count and the full model's."""
    from dialsum import config
    from dialsum.device import probe
    from dialsum.resolve import plan_experiment

    sets = [*(QUICK_SETS if args.quick else []), "training.report_to=[none]"]
    device = probe()
    plan = plan_experiment(config.load(path, sets), "tiny" if args.quick else "random", device)
    full = _depth(plan.hf_config)
    cap = min(args.layers.get(path.stem, full), full)
    if args.quick or cap < full:  # the tiny copy's architecture, as a checkpoint with random weights
        local = with_layers(plan.hf_config, cap, folder / path.stem)
        plan = plan_experiment(config.load(path, [*sets, f"model.name={local}"]), "random", device)
    return plan, _depth(plan.hf_config), full


def _depth(hf_config: Any) -> int:
    return next(getattr(hf_config, k) for k in ("num_hidden_layers", "num_layers", "encoder_layers")
                if isinstance(getattr(hf_config, k, None), int))


# ---------------------------------------------------------------- the model, as train builds it


def build_model(plan: Any, device: str) -> Any:
    """Random weights on the device: a 4-bit base built in bf16 and quantized Linear by Linear."""
    import torch

    from dialsum import modeling

    dtype = torch.bfloat16 if plan.four_bit and device == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = modeling.build_fresh_model(plan.hf_config, seed=0, sdpa=plan.cfg.speed.sdpa)
    finally:
        torch.set_default_dtype(previous)
    if plan.four_bit:
        quantize(model, torch.bfloat16 if plan.cfg.training.bf16 else torch.float32, device)
    return model


def quantize(model: Any, compute_dtype: Any, device: str) -> None:
    """Each Linear that transformers' bitsandbytes loading stores in NF4, replaced in place."""
    import bitsandbytes as bnb
    import torch
    from transformers.integrations.bitsandbytes import should_convert_module
    from transformers.quantizers.base import get_keys_to_not_convert

    keep = get_keys_to_not_convert(model) + list(getattr(model, "_keep_in_fp32_modules", None) or [])
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and should_convert_module(n, keep)]
    for name in names:
        linear = model.get_submodule(name)
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                              quant_storage=torch.uint8, device="meta")
        q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=True,
                                     quant_type="nf4", quant_storage=torch.uint8)
        if linear.bias is not None:
            q.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        model.set_submodule(name, q.to(device))  # quantized here; the bf16 weight is dropped with `linear`
        del linear
    model.is_loaded_in_4bit = True  # as transformers marks it: peft then wraps the 4-bit layers


def adapted(model: Any, plan: Any) -> Any:
    from dialsum import lora, modeling

    if plan.liger:
        modeling.apply_liger(model)
    c = plan.cfg.lora
    if not c.enabled:
        return model
    return lora.apply(model, targets=c.target_modules, rank=c.lora_rank, alpha=c.lora_alpha, dropout=c.lora_dropout,
                      quantized=plan.four_bit, gradient_checkpointing=plan.cfg.training.gradient_checkpointing)


def full_rows(plan: Any, n: int) -> list[dict[str, list[int]]]:
    """Rows as long as the config allows (seq2seq dialogue -> summary, or a causal prompt + its summary), the
    first of each micro-batch a token shorter: padded batches, as real ones are (and as the estimate counts)."""
    import random

    rng = random.Random(0)
    tok, vocab, micro = plan.cfg.tokenizer, plan.hf_config.vocab_size, plan.cfg.training.per_device_train_batch_size
    ids = lambda k: [rng.randrange(8, vocab) for _ in range(k)]  # noqa: E731
    prompts = [tok.encoder_max_len - (i % micro == 0) for i in range(n)]
    if plan.family == "causal":
        return [{"input_ids": ids(p) + (s := ids(tok.decoder_max_len)), "labels": [-100] * p + s} for p in prompts]
    return [{"input_ids": ids(p), "labels": ids(tok.decoder_max_len)} for p in prompts]


def trainer_for(plan: Any, model: Any, rows: list[dict], steps: int, output_dir: str) -> Any:
    """dialsum's Trainer of this family, as the recipe builds it, without evaluation, saving or logging."""
    from torch.utils.data import SequentialSampler
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dialsum import data, train_args
    from dialsum.hf_trainer import CausalDialsumTrainer, Seq2SeqDialsumTrainer
    from dialsum.losses import supports_chunked_loss

    cfg = plan.cfg.model_copy(deep=True)
    t = cfg.training
    t.gradient_accumulation_steps, t.max_steps, t.eval_strategy, t.save_strategy = 1, steps, "no", "no"
    t.dataloader_num_workers, t.dataloader_persistent_workers, t.logging_steps = 0, False, steps
    t.load_best_model_at_end, t.early_stopping_patience = False, None
    args = train_args.training_arguments(cfg, output_dir=output_dir, four_bit=plan.four_bit, device=plan.device)
    chunked = cfg.speed.chunked_loss and supports_chunked_loss(model) and not plan.liger
    kind = CausalDialsumTrainer if plan.family == "causal" else Seq2SeqDialsumTrainer
    trainer = kind(model=model, args=args, train_dataset=rows, data_collator=data.Seq2SeqCollator(0),
                   chunk_tokens=cfg.speed.chunk_tokens if chunked else None, length_buckets=False)
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer._get_train_sampler = lambda *_: SequentialSampler(rows)  # in order: each micro-batch padded
    return trainer


# ---------------------------------------------------------------- one measurement


def measure(path: Path, args: argparse.Namespace, context: int) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        plan, layers, full = make_plan(path, args, Path(tmp))
        assert plan.memory is not None and plan.ok, plan.errors
        model = adapted(build_model(plan, args.device), plan)
        rows = full_rows(plan, plan.cfg.training.per_device_train_batch_size * args.steps)
        trainer = trainer_for(plan, model, rows, args.steps, str(Path(tmp) / "out"))
        if args.device == "cuda":
            torch.cuda.empty_cache()  # the build's freed bf16 weights are not part of training
            torch.cuda.reset_peak_memory_stats()
        loss, oom = _train(trainer)
        peaks = _peaks(args.device)
    del trainer, model
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    estimate = plan.memory.total
    device_peak = peaks["reserved"] + context if peaks["reserved"] is not None and not oom else None
    return {"config": path.stem, "layers": layers, "full_layers": full, "micro_batch":
            plan.cfg.training.per_device_train_batch_size, "estimate_gb": round(estimate / GB, 2),
            "allocated_gb": _gb(peaks["allocated"]), "reserved_gb": _gb(peaks["reserved"]),
            "device_gb": _gb(device_peak), "ratio": round(device_peak / estimate, 3) if device_peak else None,
            "out_of_memory": oom, "estimate_parts_gb": {k: round(v / GB, 2) for k, v in plan.memory.parts.items()},
            "four_bit": plan.four_bit, "liger": plan.liger, "loss": loss,
            "seconds": round(time.perf_counter() - started, 1)}


def _train(trainer: Any) -> tuple[float | None, bool]:
    """The training loss, or None and True where this GPU ran out of memory (then the peaks say how far it
    got, and the estimate should not fit this GPU either)."""
    import torch

    try:
        return round(float(trainer.train().training_loss), 4), False
    except torch.OutOfMemoryError:
        return None, True


def _peaks(device: str) -> dict[str, int | None]:
    import torch

    if device != "cuda":
        return {"allocated": None, "reserved": None}
    torch.cuda.synchronize()
    return {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}


def _gb(value: int | None) -> float | None:
    return None if value is None else round(value / GB, 2)


def cuda_context(device: str) -> int:
    """Device memory in use before any tensor: the CUDA context (and whatever else holds this GPU)."""
    import torch

    if device != "cuda":
        return 0
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'config':38} {'layers':>7} {'batch':>5} {'estimate':>9} {'allocated':>9} {'reserved':>9} "
          f"{'device':>7} {'ratio':>6}")
    for r in rows:
        depth = f"{r['layers']}/{r['full_layers']}"
        cells = [_cell(r[k]) for k in ("estimate_gb", "allocated_gb", "reserved_gb", "device_gb")]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else ("OOM" if r["out_of_memory"] else "n/a")
        print(f"{r['config']:38} {depth:>7} {r['micro_batch']:>5} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} "
              f"{cells[3]:>7} {ratio:>6}")
    print("GB = GiB; device = reserved peak + CUDA context; ratio = device / estimate (above 1: the estimate is low)")


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    args = parse_args()
    from dialsum.logs import quiet_libraries

    quiet_libraries()
    paths = sorted(EXPERIMENTS.glob("*.yaml"))
    if args.only is not None:
        paths = [p for p in paths if p.stem in args.only]
    context = cuda_context(args.device)
    rows = [measure(path, args, context) for path in paths]
    print_table(rows)
    print(json.dumps({"benchmark": "memory_check", "device": args.device, "quick": args.quick, "steps": args.steps,
                      "context_gb": round(context / GB, 2), "rows": rows}))


if __name__ == "__main__":
    main()
