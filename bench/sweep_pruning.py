"""Pruning and slots: the same sweep with the median pruner and without, and without on two CPU slots.

    .venv/bin/python bench/sweep_pruning.py                 # 16 trials x 60 steps, three sweeps
    .venv/bin/python bench/sweep_pruning.py --quick         # 6 trials x 12 steps of a smaller tiny model
    .venv/bin/python bench/sweep_pruning.py --no-slots      # the pruning comparison only

The sweep: tiny KoBART (the LoRA baseline's config, `--init tiny`) on the embedded sample, `--max-steps` per
trial, dev evaluated four times per trial (on the first 60 dev rows; the other 140 are held out), the default
search space. Every trial is sampled at random
(`sweep.random_trials` = the trial count): the sampler's draws then do not depend on the scores, so the
sweep with the pruner and the one without train exactly the same trials (same seed, same settings, the same
first steps), and what differs is only what the pruner stops. Both run on one slot, so the pruner sees the
trials finish in the same order each time. Tiny models trained from scratch for a few dozen steps give noisy
scores: 16 trials leave the pruner 14 trials to judge after its 2 start-up ones.

Printed: steps trained, wall time, the best trial's dev score on the search rows, and its score and trial
0's on the held-out rows, for each sweep; then JSON as the last line. Targets: the pruned sweep trains at
most 60% of the steps, for a best score within 1 point of the unpruned one's; two slots (half the cores
each) against one slot (every core) in wall time, as bench/suite_parallel.py measures the suite.
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

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "experiments" / "01_baseline_kobart_rtx3090.yaml"
SETS = ["training.report_to=[none]", "generation.max_length=48"]
QUICK = ["model.tiny_d_model=64", "model.tiny_layers=1", "model.tiny_vocab_size=600"]
STEP_TARGET, SCORE_TARGET = 0.6, 1.0


def sweep(out: Path, trials: int, steps: int, pruner: str, slots: int, quick: bool) -> float:
    sets = [*SETS, *(QUICK if quick else []), f"sweep.random_trials={trials}"]
    cmd = [sys.executable, "-m", "dialsum.cli", "sweep", str(CONFIG), "--init", "tiny", "--max-steps", str(steps),
           "--trials", str(trials), "--slots", str(slots), "--pruner", pruner, "--out", str(out),
           "--dev-rows", "20" if quick else "60", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
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
    params = [{k: v for k, v in r.items() if k not in ("number", "state", "value", "steps", "wall_seconds",
                                                      "last_dev", "note")} for r in rows]
    return {"wall_seconds": round(wall, 1), "steps": result["steps"], "states": result["states"],
            "best_trial": result["best_trial"], "best_search": round(result["best_search"], 2),
            "heldout": {str(k): round(v, 2) for k, v in result["heldout"].items()}, "params": params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 trials x 12 steps of a smaller tiny model")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--no-slots", action="store_true", help="leave out the two-slot sweep")
    args = parser.parse_args()
    trials, steps = (6, 12) if args.quick else (args.trials, args.steps)
    base = Path(tempfile.mkdtemp(prefix="dialsum-sweep-bench-"))
    runs = {"none": ("none", 1), "median": ("median", 1), **({} if args.no_slots else {"none_2_slots": ("none", 2)})}
    found = {name: summary(base / name, sweep(base / name, trials, steps, pruner, slots, args.quick))
             for name, (pruner, slots) in runs.items()}
    full, pruned = found["none"], found["median"]
    ratio = pruned["steps"] / full["steps"]
    gap = full["best_search"] - pruned["best_search"]
    print(f"{'sweep':>13} {'steps':>6} {'wall s':>7} {'best (search)':>14} {'held-out: best / trial 0':>26}  states")
    for name, got in found.items():
        best, held = got["heldout"][str(got["best_trial"])], got["heldout"].get("0")
        held = f"{best:.2f} / {held:.2f}" if held is not None else f"{best:.2f} / -"
        print(f"{name:>13} {got['steps']:>6} {got['wall_seconds']:>7.1f} {got['best_search']:>14.2f} {held:>26}  "
              f"{got['states']}")
    met = ratio <= STEP_TARGET and gap <= SCORE_TARGET
    print(f"pruning trained {ratio:.0%} of the steps (target <= {STEP_TARGET:.0%}) for a best score {gap:+.2f} below "
          f"the unpruned sweep's (target <= {SCORE_TARGET}): {'met' if met else 'missed'}; same trials: "
          f"{full['params'] == pruned['params']}")
    doc = {"trials": trials, "steps_per_trial": steps, "step_ratio": round(ratio, 3), "best_gap": round(gap, 2),
           "target_met": met, "same_trials": full["params"] == pruned["params"],
           **{name: {k: v for k, v in got.items() if k != "params"} for name, got in found.items()}, "out": str(base)}
    if "none_2_slots" in found:
        speedup = full["wall_seconds"] / found["none_2_slots"]["wall_seconds"]
        print(f"two slots: {speedup:.2f}x one slot's wall time")
        doc["slots_speedup"] = round(speedup, 3)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
