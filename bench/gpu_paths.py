"""The paths only a GPU takes, run through the real commands and checked: DDP on NCCL, the suite on a GPU, QLoRA.

    .venv/bin/python bench/gpu_paths.py nccl --device cuda     # torchrun, one rank, NCCL: train finishes
    .venv/bin/python bench/gpu_paths.py suite --device cuda    # dialsum suite --gpus 0, two tiny experiments
    .venv/bin/python bench/gpu_paths.py qlora --device cuda    # 4-bit mT5 and a Llama-shaped LM, paged 8-bit AdamW
    .venv/bin/python bench/gpu_paths.py nccl                   # the same on the CPU (gloo, RSS, unpaged): plumbing

Each step trains tiny copies (`--init tiny`) on the first rows of the embedded sample, in a temporary
folder, through `python -m dialsum.cli`, then reads what the run wrote and checks the rule of its
path; a failed check names the file and what it held. On the CPU the same commands run and the checks
expect the CPU's side of each rule (gloo, RSS, no smart wait, unpaged optimizer).

- `nccl`: `python -m torch.distributed.run --standalone --nproc_per_node 1 -m dialsum.cli train`: the
  rank joins NCCL (train.log), dialsum's own collectives (the meter's token sums every micro-batch,
  barriers) run beside it on gloo, the run ends with its metrics; one rank is planned as DDP.
- `suite`: `dialsum suite --gpus 0` with two tiny experiments one after the other on GPU 0: each
  memory.csv holds NVML rows (kind `gpu`, not the RSS fallback); the smart wait let each start
  ("GPU free"), and the second found GPU 0 back under the wait's threshold: the first one's memory was
  released before it began. (On the CPU: `--slots 1`, RSS rows, no wait.)
- `qlora`: `dialsum train` for configs/experiments/01_mt5_xlsum_ultimate_korean_qlora.yaml (seq2seq,
  with `training.optim=paged_adamw_8bit`) and 05_solar_10.7b_qlora.yaml (Llama-shaped, paged 8-bit
  AdamW as configured): NF4 base computing in bf16, the optimizer kept paged, liger-kernel's loss
  where installed; finite training loss, peak memory measured by CUDA.

Prints a table of checks, then the JSON as the last line; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiments"
SAMPLE = ROOT / "data" / "sample"
TINY = ["model.tiny_vocab_size=600", "model.tiny_d_model=64", "model.tiny_layers=1", "training.eval_strategy=no",
        "training.report_to=[none]", "generation.num_beams=1", "generation.max_length=16", "speed.cpu_threads=1"]
STEPS = 4

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import require_cuda  # noqa: E402


@dataclass
class Checks:
    step: str
    device: str
    rows: list[tuple[str, bool, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: Any) -> None:
        self.rows.append((name, bool(ok), str(detail)))

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["nccl", "suite", "qlora"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    require_cuda(args.device)
    return args


def data_dir(folder: Path, rows: tuple[int, int, int] = (64, 8, 8)) -> Path:
    """The first rows of the embedded sample, in the competition format."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(("train", "dev", "test"), rows, strict=True):
        pd.read_csv(SAMPLE / f"{name}.csv", dtype=str).head(n).to_csv(folder / f"{name}.csv", index=False)
    return folder


def sets(*items: str) -> list[str]:
    return [arg for item in (*TINY, *items) for arg in ("--set", item)]


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    """The command's exit status and seconds; its output into `log`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    return code, round(time.perf_counter() - started, 1)


def read_json(path: Path, default: Any = None) -> Any:
    """The file's JSON, or `default` ({}) where it was not written."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else ({} if default is None else default)


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if path.is_file() else ""


# ---------------------------------------------------------------- nccl


def nccl(c: Checks, tmp: Path) -> None:
    """One rank under torchrun: NCCL on CUDA (gloo on a CPU), dialsum's collectives on gloo beside it."""
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "dialsum.cli",
           "train", str(EXPERIMENTS / "04_batch_optimization_rtx3090.yaml"), "--init", "tiny", "--max-steps", str(STEPS),
           "--data", str(data_dir(tmp / "data")), "--run-dir", str(run_dir), *sets()]
    code, seconds = run(cmd, tmp / "torchrun.log")
    c.facts.update(seconds=seconds, exit_code=code)
    c.check("torchrun exit 0", code == 0, code if code == 0 else tail(tmp / "torchrun.log"))
    backend = "nccl" if c.device == "cuda" else "gloo"
    log = (run_dir / "train.log").read_text(encoding="utf-8") if (run_dir / "train.log").is_file() else ""
    c.check(f"joined the {backend} group", f"joined the {backend} process group" in log, run_dir / "train.log")
    metrics = read_json(run_dir / "metrics.json")
    c.facts.update(steps=metrics.get("steps"), train_tokens=metrics.get("train_tokens"),
                   memory_kind=metrics.get("memory_kind"), peak_memory_mb=metrics.get("peak_memory_mb"))
    c.check(f"{STEPS} steps, metrics written", metrics.get("steps") == STEPS, metrics.get("steps"))
    c.check("tokens summed by dialsum's collective", (metrics.get("train_tokens") or 0) > 0, metrics.get("train_tokens"))
    kind = "cuda" if c.device == "cuda" else "rss"
    c.check(f"peak memory kind {kind}", metrics.get("memory_kind") == kind, metrics.get("memory_kind"))
    adapted = read_json(run_dir / "adaptations.json", [])
    c.check("one rank planned as DDP (chunked loss off)", any("outside DDP's forward" in a for a in adapted), adapted[-3:])


# ---------------------------------------------------------------- suite


SUITE = """name: gpu_paths
settings:
  gpu_wait_max_used_mb: {wait_mb}
  gpu_wait_timeout_minutes: 2
  gpu_wait_poll_seconds: 1
  monitor_interval_seconds: 0.5
experiments:
  - name: first
    config: {first}
    expected_minutes: 1
  - name: second
    config: {second}
    expected_minutes: 1
"""
WAIT_MB = 2048


def suite(c: Checks, tmp: Path) -> None:
    """Two tiny experiments on GPU 0, one after the other: NVML memory rows, the smart wait between them."""
    suite_file = tmp / "suite.yaml"
    suite_file.write_text(SUITE.format(wait_mb=WAIT_MB, first=EXPERIMENTS / "04_batch_optimization_rtx3090.yaml",
                                       second=EXPERIMENTS / "02_eenzeenee_t5_rtx3090.yaml"), encoding="utf-8")
    out = tmp / "suite"
    where = ["--gpus", "0"] if c.device == "cuda" else ["--slots", "1"]
    cmd = [sys.executable, "-m", "dialsum.cli", "suite", str(suite_file), "--init", "tiny", "--max-steps", str(STEPS),
           "--data", str(data_dir(tmp / "data")), "--out", str(out), *where, *sets()]
    code, seconds = run(cmd, tmp / "suite.log")
    c.facts.update(seconds=seconds, exit_code=code)
    c.check("suite exit 0", code == 0, code if code == 0 else tail(tmp / "suite.log"))
    state = read_json(out / "suite_state.json")
    records = {r["name"]: r for r in state.get("records", [])}
    for name in ("first", "second"):
        suite_record(c, out, name, records.get(name, {}))


def suite_record(c: Checks, out: Path, name: str, record: dict[str, Any]) -> None:
    c.check(f"{name} finished", record.get("state") == "finished", record.get("state"))
    rows = memory_rows(out / name / "memory.csv")
    kinds = sorted({r["kind"] for r in rows})
    kind = "gpu" if c.device == "cuda" else "rss"
    c.check(f"{name}: memory.csv rows of kind {kind}", bool(rows) and kinds == [kind], f"{len(rows)} rows, {kinds}")
    wait = (record.get("wait") or {}).get("message", "")
    if c.device == "cuda":
        c.check(f"{name}: the smart wait found the GPU free", wait.startswith("GPU free"), wait or "no wait recorded")
    else:  # a CPU slot has no GPU to wait for
        c.check(f"{name}: no smart wait on a CPU slot", not wait, wait)
    used = [float(r["used_mb"]) for r in rows]
    c.facts[name] = {"rows": len(rows), "kind": kinds, "first_used_mb": used[0] if used else None,
                     "peak_mb": max(used) if used else None, "wait": wait}
    if c.device == "cuda" and used:  # the first one's memory was released before this one began
        c.check(f"{name}: GPU at most {WAIT_MB} MB used at its start", used[0] <= WAIT_MB, used[0])


def memory_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- qlora


QLORA = {"mt5": ("01_mt5_xlsum_ultimate_korean_qlora.yaml", ["training.optim=paged_adamw_8bit"]),
         "llama": ("05_solar_10.7b_qlora.yaml", [])}


def qlora(c: Checks, tmp: Path) -> None:
    """4-bit NF4 bases with LoRA and paged 8-bit AdamW: a seq2seq mT5 and a Llama-shaped causal LM."""
    data = data_dir(tmp / "data")
    for name, (config, extra) in QLORA.items():
        run_dir = tmp / name
        cmd = [sys.executable, "-m", "dialsum.cli", "train", str(EXPERIMENTS / config), "--init", "tiny",
               "--max-steps", str(STEPS), "--data", str(data), "--run-dir", str(run_dir),
               *sets("training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1", *extra)]
        code, seconds = run(cmd, tmp / f"{name}.log")
        c.check(f"{name}: train exit 0", code == 0, code if code == 0 else tail(tmp / f"{name}.log"))
        qlora_run(c, name, run_dir, seconds)


def qlora_run(c: Checks, name: str, run_dir: Path, seconds: float) -> None:
    info, metrics = read_json(run_dir / "model_info.json"), read_json(run_dir / "metrics.json")
    adapted = read_json(run_dir / "adaptations.json", [])
    cuda = c.device == "cuda"
    dtype = "bfloat16" if cuda else "float32"
    c.check(f"{name}: 4-bit base computing in {dtype}", info.get("four_bit") is True and info.get("compute_dtype") == dtype,
            {k: info.get(k) for k in ("four_bit", "compute_dtype")})
    unpaged = any("runs it unpaged" in a for a in adapted)
    c.check(f"{name}: paged_adamw_8bit {'kept' if cuda else 'unpaged on the CPU'}", unpaged is not cuda,
            [a for a in adapted if "optim" in a])
    loss = metrics.get("train_loss")
    c.check(f"{name}: finite training loss", isinstance(loss, float) and math.isfinite(loss), loss)
    kind = "cuda" if cuda else "rss"
    c.check(f"{name}: peak memory kind {kind}", metrics.get("memory_kind") == kind, metrics.get("memory_kind"))
    liger = [a for a in adapted if a.startswith("speed.liger_kernel")]
    c.facts[name] = {"seconds": seconds, "train_loss": loss, "peak_memory_mb": metrics.get("peak_memory_mb"),
                     "liger": liger[0] if liger else "not on this device"}
    if cuda and name == "llama":  # liger where installed, else the chunked loss: said either way
        c.check("llama: liger-kernel used or its absence said", bool(liger), liger)


# ---------------------------------------------------------------- main


def print_table(c: Checks) -> None:
    print(f"gpu_paths {c.step} on {c.device}")
    for name, ok, detail in c.rows:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))


def main() -> None:
    args = parse_args()
    c = Checks(args.step, args.device)
    with tempfile.TemporaryDirectory(prefix=f"gpu_paths_{args.step}_") as tmp:
        {"nccl": nccl, "suite": suite, "qlora": qlora}[args.step](c, Path(tmp))
    print_table(c)
    print(json.dumps({"benchmark": "gpu_paths", "step": c.step, "device": c.device, "ok": c.ok,
                      "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in c.rows], **c.facts}))
    sys.exit(0 if c.ok else 1)


if __name__ == "__main__":
    main()
