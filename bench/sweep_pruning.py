"""Pruning and slots: the same sweep with the median pruner and without, and without it on two CPU slots.

    .venv/bin/python bench/sweep_pruning.py                 # 10 trials x 40 steps, three sweeps (~10 minutes)
    .venv/bin/python bench/sweep_pruning.py --quick         # 6 trials x 16 steps (~4 minutes)
    .venv/bin/python bench/sweep_pruning.py --no-slots      # the pruning comparison only

The sweep: the KoBART LoRA baseline's config (`configs/experiments/01_baseline_kobart_rtx3090.yaml`) as a
small tiny model (`--init tiny`, d_model 64, one layer, a 600-token vocabulary), micro-batch 8 without
accumulation, `--max-steps` per trial, the default search space (learning rate, warm-up, weight decay, label
smoothing, LoRA rank, alpha and dropout, micro-batch 8 or 4 at the effective batch 8). Data: the sample's
2,000 training dialogues, its first 48 dev rows (24 scored by the trials and seen by the pruner, 24 held out
to score the best trial against trial 0) and 8 test rows (every trial writes a submission; the sweep does not
read it). Each trial evaluates dev four times.

Every trial is sampled at random (`sweep.random_trials` = the trial count): the sampler's draws then do not
depend on the scores, so the sweeps train exactly the same trials (same seed, same settings, the same first
steps), and what differs is only what the pruner stops (the JSON says `same_trials`). The two compared sweeps
run on one slot, so the pruner sees the trials finish in the same order each time; every trial uses one
torch thread (`speed.cpu_threads=1`: on a shared 2-core machine two threads per process ran 15x slower).

Printed: steps trained, wall time, the best trial's dev score on the search rows, and its score and trial 0's
on the held-out rows, for each sweep; then JSON as the last line. Targets: the pruned sweep trains at most 60%
of the steps, for a best score (the best trial's, on the held-out rows: the score the sweep reports) within 1
point of the unpruned one's; two slots (one thread each) against one slot in wall time, the same trials.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "01_baseline_kobart_rtx3090.yaml"
SAMPLE = ROOT / "data" / "sample"
SETS = ["training.report_to=[none]", "generation.max_length=48", "speed.cpu_threads=1", "model.tiny_d_model=64",
        "model.tiny_layers=1", "model.tiny_vocab_size=600", "training.per_device_train_batch_size=8",
        "training.gradient_accumulation_steps=1"]
DEV_ROWS, SEARCH_ROWS, TEST_ROWS = 48, 24, 8
STEP_TARGET, SCORE_TARGET = 0.6, 1.0


def make_data(folder: Path) -> Path:
    """The sample's training rows, its first dev rows and a few test rows."""
    folder.mkdir(parents=True)
    for name, rows in (("train", None), ("dev", DEV_ROWS), ("test", TEST_ROWS)):
        table = pd.read_csv(SAMPLE / f"{name}.csv", dtype=str)
        (table if rows is None else table.head(rows)).to_csv(folder / f"{name}.csv", index=False)
    return folder


def sweep(out: Path, data: Path, trials: int, steps: int, pruner: str, slots: int) -> float:
    sets = [*SETS, f"sweep.random_trials={trials}"]
    cmd = [sys.executable, "-m", "dialsum.cli", "sweep", str(CONFIG), "--init", "tiny", "--max-steps", str(steps),
           "--trials", str(trials), "--slots", str(slots), "--pruner", pruner, "--out", str(out), "--data", str(data),
           "--dev-rows", str(SEARCH_ROWS), *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    with (out.parent / f"{out.name}.log").open("w") as log:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"the sweep with --pruner {pruner} --slots {slots} failed ({code}); see {out.parent / out.name}.log")
    return time.perf_counter() - started


def summary(out: Path, wall: float) -> dict:
    result = json.loads((out / "result.json").read_text())
    with (out / "trials.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    params = [{k: v for k, v in r.items() if k not in ("state", "value", "steps", "wall_seconds", "last_dev", "note")}
              for r in rows]
    held = {int(k): v for k, v in result["heldout"].items()}
    return {"wall_seconds": round(wall, 1), "steps": result["steps"], "states": result["states"],
            "best_trial": result["best_trial"], "best_search": round(result["best_search"], 2),
            "best_heldout": round(held[result["best_trial"]], 2),
            "trial0_heldout": round(held[0], 2) if 0 in held else None, "params": params}


def table(found: dict[str, dict]) -> None:
    print(f"{'sweep':>13} {'steps':>6} {'wall s':>7} {'best trial':>10} {'best (search)':>14} "
          f"{'held-out: best / trial 0':>25}  states")
    for name, got in found.items():
        own = f"{got['trial0_heldout']:.2f}" if got["trial0_heldout"] is not None else "-"
        print(f"{name:>13} {got['steps']:>6} {got['wall_seconds']:>7.1f} {got['best_trial']:>10} "
              f"{got['best_search']:>14.2f} {got['best_heldout']:>16.2f} / {own:>6}  {got['states']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 trials x 16 steps")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--no-slots", action="store_true", help="leave out the two-slot sweep")
    args = parser.parse_args()
    trials, steps = (6, 16) if args.quick else (args.trials, args.steps)
    base = Path(tempfile.mkdtemp(prefix="dialsum-sweep-bench-"))
    data = make_data(base / "data")
    runs = {"none": ("none", 1), "median": ("median", 1), **({} if args.no_slots else {"none_2_slots": ("none", 2)})}
    found = {name: summary(base / name, sweep(base / name, data, trials, steps, pruner, slots))
             for name, (pruner, slots) in runs.items()}
    table(found)
    full, pruned = found["none"], found["median"]
    ratio = pruned["steps"] / full["steps"]
    gap = full["best_heldout"] - pruned["best_heldout"]
    same = all(got["params"] == full["params"] for got in found.values())
    met = ratio <= STEP_TARGET and gap <= SCORE_TARGET
    print(f"pruning trained {ratio:.0%} of the steps (target <= {STEP_TARGET:.0%}) in "
          f"{pruned['wall_seconds'] / full['wall_seconds']:.0%} of the wall time, for a best held-out score "
          f"{gap:+.2f} below the unpruned sweep's (target <= {SCORE_TARGET}): {'met' if met else 'missed'}; "
          f"same trials: {same}")
    doc = {"trials": trials, "steps_per_trial": steps, "step_ratio": round(ratio, 3),
           "wall_ratio": round(pruned["wall_seconds"] / full["wall_seconds"], 3), "best_gap": round(gap, 2),
           "target_met": met, "same_trials": same,
           **{name: {k: v for k, v in got.items() if k != "params"} for name, got in found.items()}, "out": str(base)}
    if "none_2_slots" in found:
        speedup = full["wall_seconds"] / found["none_2_slots"]["wall_seconds"]
        print(f"two slots: {speedup:.2f}x one slot's speed ({full['wall_seconds']:.0f} s against "
              f"{found['none_2_slots']['wall_seconds']:.0f} s)")
        doc["slots_speedup"] = round(speedup, 3)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
