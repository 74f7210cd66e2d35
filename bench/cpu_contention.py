"""Two dialsum trainings sharing a CPU: OpenMP's own spin-waiting against dialsum's brief spin.

    .venv/bin/python bench/cpu_contention.py            # 60 steps per run
    .venv/bin/python bench/cpu_contention.py --quick    # 25 steps per run

A tiny model takes a step in many small torch operations, each ending at a barrier of torch's OpenMP
threads. A thread that reaches the barrier first spins before it sleeps: GNU OpenMP's default is 300,000
turns, which suits a process that has its cores to itself. Two processes that each run as many threads
as there are cores then spin on the cores the other one needs. dialsum's command line sets
GOMP_SPINCOUNT to 3,000 (`dialsum.device.share_cores`). This runs the same tiny KoBART training, two
torch threads, four ways: alone and two at once, with OpenMP's default (GOMP_SPINCOUNT=300000, as a
plain torch script runs) and with dialsum's, and compares training seconds (metrics.json's
`train_seconds`, which leave out start-up and dev scoring). Prints a table, then JSON as the last line:
`contention_speedup` (OpenMP's / dialsum's training seconds, two at once), `alone_cost` (dialsum's /
OpenMP's, alone), and whether the dev scores are the same (how threads wait changes when they compute,
not what).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "04_batch_optimization_rtx3090.yaml"
SETS = ["training.eval_strategy=no", "training.save_strategy=no", "data.max_eval_samples=30",
        "generation.max_length=32", "speed.cpu_threads=2"]


def start(run_dir: Path, steps: int, policy: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **policy})
    cmd = [sys.executable, "-m", "dialsum.cli", "train", str(CONFIG), "--init", "tiny", "--max-steps", str(steps),
           "--run-dir", str(run_dir), *[a for s in SETS for a in ("--set", s)]]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, run_dir: Path) -> tuple[float, float]:
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"training into {run_dir} failed ({proc.returncode}): {err[-800:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return float(metrics["train_seconds"]), float(metrics["dev"]["morpheme"]["final"])


def trial(base: Path, name: str, steps: int, policy: dict[str, str], together: int) -> tuple[float, list[float]]:
    """Mean training seconds of `together` runs started at once, and their dev scores."""
    dirs = [base / f"{name}-{i}" for i in range(together)]
    procs = [start(d, steps, policy) for d in dirs]
    results = [finish(p, d) for p, d in zip(procs, dirs, strict=True)]
    return sum(r[0] for r in results) / together, [r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25 steps per run instead of 60")
    args = parser.parse_args()
    steps = 25 if args.quick else 60
    base = Path(tempfile.mkdtemp(prefix="dialsum-contention-bench-"))
    rows = {}
    openmp, dialsum = {"GOMP_SPINCOUNT": "300000"}, {}  # dialsum's command line sets its own when unset
    for name, policy, together in (("alone, OpenMP's", openmp, 1), ("alone, dialsum's", dialsum, 1),
                                   ("two at once, OpenMP's", openmp, 2), ("two at once, dialsum's", dialsum, 2)):
        rows[name] = trial(base, name.replace(", ", "-").replace(" ", "_").replace("'", ""), steps, policy, together)
    print(f"{'runs, spin':<26} {'train s (mean)':>15}  dev finals")
    for name, (seconds, scores) in rows.items():
        print(f"{name:<26} {seconds:>15.1f}  {', '.join(f'{s:.2f}' for s in scores)}")
    finals = {round(s, 4) for _, scores in rows.values() for s in scores}
    print(json.dumps({
        "steps": steps, "cores": os.cpu_count(),
        "contention_speedup": round(rows["two at once, OpenMP's"][0] / rows["two at once, dialsum's"][0], 2),
        "alone_cost": round(rows["alone, dialsum's"][0] / rows["alone, OpenMP's"][0], 2),
        "same_scores": len(finals) == 1,
        "train_seconds": {name: round(seconds, 2) for name, (seconds, _) in rows.items()},
    }))


if __name__ == "__main__":
    main()
