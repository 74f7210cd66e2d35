"""Parallel CPU slots: four tiny experiments with `--slots 1` against `--slots 2`, the same results.

    .venv/bin/python bench/suite_parallel.py            # 4 experiments x 40 steps each way
    .venv/bin/python bench/suite_parallel.py --quick    # 4 x 15 steps

Runs the same four-experiment suite twice, one slot then two (each slot with its share of the
cores: one slot gets every core's torch threads, two get half each), and compares wall time and
each experiment's dev scores. Prints a table, then JSON as the last line: `speedup` (slots-1 wall
time / slots-2 wall time), `same_results`, and the per-experiment finals. Target: speedup >= 1.6 on
a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "experiments"
EXPERIMENTS = [
    ("kobart_batch_opt", "04_batch_optimization_rtx3090.yaml"),
    ("kobart_high_lr", "03_high_learning_rate_rtx3090.yaml"),
    ("eenzeenee_t5", "02_eenzeenee_t5_rtx3090.yaml"),
    ("kobart_batch_opt_2", "04_batch_optimization_rtx3090.yaml"),
]
SETS = ["training.eval_strategy=no", "training.save_strategy=no", "data.max_eval_samples=50",
        "generation.max_length=48", "training.report_to=[none]"]
TARGET = 1.6


def run(suite: Path, out: Path, steps: int, slots: int) -> float:
    cmd = [sys.executable, "-m", "dialsum.cli", "suite", str(suite), "--init", "tiny", "--max-steps", str(steps),
           "--slots", str(slots), "--out", str(out), *[a for s in SETS for a in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"suite with --slots {slots} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return time.perf_counter() - started


def finals(out: Path) -> dict[str, float]:
    return {name: json.loads((out / name / "run" / "metrics.json").read_text())["dev"]["morpheme"]["final"]
            for name, _ in EXPERIMENTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 steps per experiment instead of 40")
    args = parser.parse_args()
    steps = 15 if args.quick else 40
    base = Path(tempfile.mkdtemp(prefix="dialsum-parallel-bench-"))
    suite = base / "four.yaml"
    doc = {"name": "four", "settings": {"monitor_interval_seconds": 1},
           "experiments": [{"name": n, "config": str(CONFIGS / c), "expected_minutes": 1} for n, c in EXPERIMENTS]}
    suite.write_text(yaml.safe_dump(doc), encoding="utf-8")
    walls = {slots: run(suite, base / f"slots{slots}", steps, slots) for slots in (1, 2)}
    scores = {slots: finals(base / f"slots{slots}") for slots in (1, 2)}
    same = all(abs(scores[1][n] - scores[2][n]) < 1e-6 for n in scores[1])
    speedup = walls[1] / walls[2]
    print(f"{'slots':>5} {'wall s':>8}  " + "  ".join(f"{n:>18}" for n, _ in EXPERIMENTS))
    for slots in (1, 2):
        print(f"{slots:>5} {walls[slots]:>8.1f}  " + "  ".join(f"{scores[slots][n]:>18.2f}" for n, _ in EXPERIMENTS))
    print(f"speedup {speedup:.2f}x (target {TARGET}x: {'met' if speedup >= TARGET else 'missed'}); "
          f"same results: {same}")
    print(json.dumps({"steps": steps, "wall_seconds": {str(k): round(v, 1) for k, v in walls.items()},
                      "speedup": round(speedup, 3), "target": TARGET, "same_results": same,
                      "finals": {str(k): v for k, v in scores.items()}, "out": str(base)}))


if __name__ == "__main__":
    main()
