"""Wall time of `make demo`: the five experiments with tiny models on the embedded sample.

    .venv/bin/python bench/suite_walltime.py            # the demo exactly as `make demo` runs it
    .venv/bin/python bench/suite_walltime.py --quick    # 20 steps each, 50 dev rows

Runs the suite once in a fresh output directory, then prints a table of the report's numbers and
the JSON (`wall_seconds`, `target_seconds`, `experiments`) as the last line. The targets: all five
within 10 minutes on a 2-core CPU, each above the longest-turn baseline on the same dev rows, and
reading the dialogue (`distinct`: the share of dev dialogues with a summary of their own; a model
that writes one summary for every dialogue has not learned the task, whatever its score).
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
DEMO = ["--init", "tiny", "--set", "training.num_train_epochs=3", "--set", "generation.max_length=64"]
QUICK = ["--init", "tiny", "--max-steps", "20", "--set", "generation.max_length=64",
         "--set", "data.max_eval_samples=50"]
TARGET_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps per experiment, 50 dev rows")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="dialsum-suite-bench-"))
    cmd = [sys.executable, "-m", "dialsum.cli", "suite", "configs/suites/main5.yaml",
           *(QUICK if args.quick else DEMO), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - started
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))["experiments"] \
        if (out / "results.json").is_file() else []
    keep = ("name", "state", "wall_minutes", "train_minutes", "morpheme_final", "whitespace_final",
            "baseline_morpheme_final", "peak_memory_mb", "tokens_per_second")
    experiments = [{k: r.get(k) for k in keep} | {"distinct": distinct_share(out / r["name"] / "run")}
                   for r in rows]
    print(f"{'experiment':<20} {'state':<9} {'wall min':>8} {'final (morph)':>13} {'baseline':>8} "
          f"{'final (ws)':>10} {'distinct':>8}")
    for r in experiments:
        print(f"{r['name']:<20} {str(r['state']):<9} {r['wall_minutes'] or 0:>8.2f} "
              f"{r['morpheme_final'] or 0:>13.2f} {r['baseline_morpheme_final'] or 0:>8.2f} "
              f"{r['whitespace_final'] or 0:>10.2f} {r['distinct']:>8.2f}")
    above = all((r["morpheme_final"] or 0) > (r["baseline_morpheme_final"] or 100) for r in experiments)
    print(f"total wall time {wall / 60:.1f} min (target {TARGET_S / 60:.0f} min); all above the baseline: "
          f"{above}; exit code {proc.returncode}")
    print(json.dumps({"mode": "quick" if args.quick else "demo", "wall_seconds": round(wall, 1),
                      "target_seconds": TARGET_S, "within_target": wall <= TARGET_S,
                      "all_above_baseline": above, "exit_code": proc.returncode, "out": str(out),
                      "experiments": experiments}))


def distinct_share(run_dir: Path) -> float:
    """Distinct dev summaries / dev dialogues (1.0: every dialogue got its own summary)."""
    path = run_dir / "dev_predictions.csv"
    if not path.is_file():
        return 0.0
    with path.open(encoding="utf-8", newline="") as fh:
        summaries = [row["summary"] for row in csv.DictReader(fh)]
    return round(len(set(summaries)) / len(summaries), 3) if summaries else 0.0


if __name__ == "__main__":
    main()
