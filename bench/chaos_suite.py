"""Chaos: the suite killed at every kind of moment, resumed to the end, and compared with an uninterrupted run.

    .venv/bin/python bench/chaos_suite.py --quick              # 8 kill points
    .venv/bin/python bench/chaos_suite.py                      # all 11
    .venv/bin/python bench/chaos_suite.py --points mid-save,child   # what tests/test_suite.py runs

The suite, written here: tiny models on the first rows of the embedded sample, `--slots 2`, six
steps each with a checkpoint every two: `a` and `b` (two plain runs), `oomy` (its first attempt runs
out of memory, injected with DIALSUM_FAULT_OOM_ABOVE_BATCH; the suite retries it with half the
micro-batch), `ddp` (`gpus: 2`, torchrun with gloo), `tuned` (a tune step of 3 trials) and an
ensemble of `a` and `b` (two beams of each: MBR needs three candidates). It runs once uninterrupted
(the experiments the chosen kill points reach).
Then, for each kill point, a fresh run of the
experiments that reach that moment (`--only`) is stopped at it by a named pause point
(`dialsum.pause`: the process that gets there first writes a marker and sleeps), the driver (or, for
`child`, the paused training process) gets SIGKILL, and `--resume` runs to the end.

Measured per kill point, and summed in the last line (JSON):
- `survived`: the resume exits 0 with every chosen experiment finished (and the ensemble built);
- `lost_checkpoints`: complete checkpoints present at the kill that are gone after the resume. Nothing
  supersedes a checkpoint here (`save_total_limit` 100), and one moved aside still counts as kept (it
  is looked for by name and `trainer_state.json` anywhere under its experiment's folder);
- `duplicate_runs`: kill points at which, sampled every 0.2 s from the kill to the end of the resume,
  more training processes named one experiment's run directory than it has ranks;
- `results_equal`: every experiment's dev scores (`metrics.json`), `submission.csv` and trained weights
  (`model/*.safetensors`) bitwise equal to the uninterrupted run's, and the ensemble's dev score and
  submission. A tune study killed between
  trials cannot give the same trials after a resume (its sampler is seeded afresh from the trials
  already in the study), so tuned outputs are compared by their trial count, not their settings;
- `orphans` (beside the four): processes of a SIGKILLed suite (any command line naming its output
  folder: training, DDP launcher, torchrun, ranks, the ensemble) still alive 10 s after the kill.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "experiments"
BATCH_OPT, HIGH_LR = str(CONFIGS / "04_batch_optimization_rtx3090.yaml"), str(CONFIGS / "03_high_learning_rate_rtx3090.yaml")
# After 6 steps a tiny model's likeliest token is a space: summaries of at least 8 tokens, none twice, are
# text that depends on the weights.
STEPS = 6
SETS = ["speed.cpu_threads=1", "model.tiny_vocab_size=600", "model.tiny_d_model=64", "model.tiny_layers=1",
        "training.eval_strategy=no", "training.report_to=[none]", "generation.num_beams=2",
        "generation.max_length=24", "generation.min_length=8", "generation.no_repeat_ngram_size=1",
        "training.gradient_accumulation_steps=1",
        "training.save_strategy=steps", "training.save_steps=2",
        "training.save_total_limit=100", "training.load_best_model_at_end=false"]
OOM_ABOVE = "4"  # oomy asks for 8 and gets 4 on its retry; the others ask for 4
MARKER_TIMEOUT_S, RUN_TIMEOUT_S = 600, 900


@dataclass
class Point:
    name: str
    pause: str  # DIALSUM_PAUSE_AT
    only: list[str]
    victim: str = "driver"  # or "child": the paused process itself
    quick: bool = True


POINTS = [
    Point("slot-wait", "slot-wait", ["a", "b", "oomy"], quick=False),
    Point("starting", "started@a", ["a"]),
    Point("before-save", "before-save@a", ["a"]),
    Point("mid-save", "mid-save@a", ["a"]),
    Point("scoring-dev", "scoring-dev@a", ["a"], quick=False),
    Point("writing-submission", "writing-submission@a", ["a"], quick=False),
    Point("oom-retry", "before-save@oomy", ["oomy"]),
    Point("ddp", "before-save@ddp", ["ddp"]),
    Point("tuning", "tuning@tuned", ["tuned"]),
    Point("ensemble", "ensemble", ["a", "b"]),
    Point("child", "before-save@b", ["b"], victim="child"),
]


def write_suite(base: Path) -> Path:
    def entry(name: str, config: str, batch: int = 4, **more: object) -> dict:
        return {"name": name, "config": config, "expected_minutes": 1,
                "set": [f"experiment.name={name}", f"training.per_device_train_batch_size={batch}"], **more}

    doc = {"name": "chaos", "settings": {"monitor_interval_seconds": 1, "stop_grace_seconds": 5},
           "experiments": [entry("a", BATCH_OPT), entry("b", HIGH_LR), entry("oomy", BATCH_OPT, batch=8),
                           entry("ddp", BATCH_OPT, gpus=2),
                           entry("tuned", BATCH_OPT, tune={"trials": 3, "dev_rows": 6})],
           "ensemble": {"runs": ["a", "b"], "candidates": 2}}  # MBR needs 3 candidates a dialogue at least
    path = base / "chaos.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def make_data(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 64), ("dev", 12), ("test", 12)):
        pd.read_csv(ROOT / "data" / "sample" / f"{name}.csv", dtype=str).head(n).to_csv(path / f"{name}.csv", index=False)
    return path


def suite_cmd(suite: Path, out: Path, data: Path, only: list[str] | None) -> list[str]:
    cmd = [sys.executable, "-m", "dialsum.cli", "suite", str(suite), "--out", str(out), "--data", str(data),
           "--init", "tiny", "--max-steps", str(STEPS), "--slots", "2", *[a for s in SETS for a in ("--set", s)]]
    return cmd + (["--only", ",".join(only)] if only else [])


def env(pause: str | None = None, marks: Path | None = None) -> dict[str, str]:
    extra = {"DIALSUM_PAUSE_AT": pause, "DIALSUM_PAUSE_DIR": str(marks)} if pause and marks else {}
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
            "DIALSUM_FAULT_OOM_ABOVE_BATCH": OOM_ABOVE, **extra}


def run(cmd: list[str], environ: dict[str, str], log: Path) -> int:
    with log.open("ab") as fh:
        return subprocess.run(cmd, cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=RUN_TIMEOUT_S).returncode


# ---------------------------------------------------------------- what is compared


def outcome(out: Path, names: list[str]) -> dict[str, dict]:
    """Per experiment: its dev scores, a digest of its submission, its tune trials; and the ensemble's."""
    found = {}
    for name in names:
        run_dir = out / name / "run"
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        tune = run_dir / "tune" / "result.json"
        found[name] = {"dev": metrics["dev"], "submission": digest(run_dir / "submission.csv"),
                       "weights": sorted(digest(f) for f in (run_dir / "model").glob("*.safetensors")),
                       "tune_trials": json.loads(tune.read_text())["trials"] if tune.is_file() else None}
    ensemble = out / "ensemble" / "ensemble.json"
    if ensemble.is_file():
        found["ensemble"] = {"dev": json.loads(ensemble.read_text())["dev_final"],
                             "submission": digest(out / "ensemble" / "submission.csv")}
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def checkpoints(out: Path, names: list[str]) -> set[tuple[str, str, str]]:
    """(experiment, checkpoint name, trainer_state digest) of every complete checkpoint under each experiment."""
    found = set()
    for name in names:
        for state in (out / name).glob("**/checkpoint-*/trainer_state.json"):
            try:
                json.loads(state.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            found.add((name, state.parent.name, digest(state)))
    return found


def survivors(out: Path, within_s: float) -> list[int]:
    """Processes whose command line names `out` (the suite's children, at any depth) still alive after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        alive = [p.pid for p in psutil.process_iter(["cmdline", "status"])
                 if any(str(out) in part for part in p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


class DuplicateWatch(threading.Thread):
    """Samples the training processes of each experiment's run directory; more than its ranks is a duplicate."""

    def __init__(self, out: Path, allowed: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.runs = {name: str((out / name / "run").resolve()) for name in allowed}
        self.allowed, self.most = allowed, dict.fromkeys(allowed, 0)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            counts = dict.fromkeys(self.runs, 0)
            for proc in psutil.process_iter(["cmdline"]):
                cmd = proc.info["cmdline"] or []
                if "train" not in cmd or "--nproc" in cmd or any("torch.distributed.run" in c for c in cmd):
                    continue  # the DDP launcher and torchrun train nothing themselves
                for name, run_dir in self.runs.items():
                    counts[name] += run_dir in cmd
            for name, n in counts.items():
                self.most[name] = max(self.most[name], n)
            time.sleep(0.2)

    def duplicated(self) -> bool:
        self.stopped.set()
        self.join()
        return any(self.most[n] > self.allowed[n] for n in self.runs)


# ---------------------------------------------------------------- one kill point


@dataclass
class Result:
    point: str
    survived: bool = False
    lost: int = 0
    duplicate: bool = False
    orphans: int = 0  # processes of the killed suite still alive 10 s after the kill
    equal: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def kill_point(point: Point, suite: Path, data: Path, base: Path, baseline: dict[str, dict],
               ranks: dict[str, int]) -> Result:
    started, result = time.monotonic(), Result(point.name)
    out, marks, log = base / point.name, base / f"{point.name}.marks", base / f"{point.name}.log"
    marks.mkdir()
    cmd, environ = suite_cmd(suite, out, data, point.only), env(point.pause, marks)
    with log.open("ab") as fh:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT)
    marker = marks / point.pause
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not marker.is_file() or not marker.read_text().strip():
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            result.notes.append(f"never reached {point.pause} (suite exit {driver.poll()}); see {log}")
            return result
        time.sleep(0.2)
    before = checkpoints(out, point.only)
    watch = DuplicateWatch(out, {n: ranks[n] for n in point.only})
    watch.start()
    if point.victim == "driver":
        driver.kill()
        driver.wait()
        result.orphans = len(survivors(out, within_s=10.0))
    else:
        os.kill(int(marker.read_text()), signal.SIGKILL)
        driver.wait(timeout=RUN_TIMEOUT_S)  # the suite goes on, and records it killed
    code = run([*cmd, "--resume"], environ, log)
    result.duplicate = watch.duplicated()
    after = checkpoints(out, point.only)
    result.lost = len(before - after)
    state = {r["name"]: r for r in json.loads((out / "suite_state.json").read_text())["records"]}
    finished = all(state[n]["state"] == "finished" for n in point.only)
    ensemble_due = set(point.only) >= {"a", "b"}
    result.survived = code == 0 and finished and (not ensemble_due or (out / "ensemble" / "ensemble.json").is_file())
    if not result.survived:
        result.notes.append(f"resume exit {code}; states {[state[n]['state'] for n in point.only]}; see {log}")
        return _timed(result, started)
    got = outcome(out, point.only)
    result.equal, diffs = compare(got, baseline)
    result.notes += diffs
    return _timed(result, started)


def _timed(result: Result, started: float) -> Result:
    result.seconds = round(time.monotonic() - started, 1)
    return result


def compare(got: dict[str, dict], baseline: dict[str, dict]) -> tuple[bool, list[str]]:
    diffs = []
    for name, mine in got.items():
        theirs = baseline[name]
        for key in ("dev", "submission", "weights", "tune_trials"):
            if mine.get(key) != theirs.get(key):
                diffs.append(f"{name}: {key} differs ({str(mine.get(key))[:80]} vs {str(theirs.get(key))[:80]})")
    return not diffs, diffs


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 8 quick kill points instead of all 11")
    parser.add_argument("--points", help="only these kill points, comma-separated")
    args = parser.parse_args()
    chosen = [p for p in POINTS if (not args.quick or p.quick)]
    if args.points:
        wanted = args.points.split(",")
        chosen = [p for p in POINTS if p.name in wanted]
    base = Path(tempfile.mkdtemp(prefix="dialsum-chaos-"))
    data, suite = make_data(base / "data"), write_suite(base)
    ranks = {e["name"]: e.get("gpus", 1) for e in yaml.safe_load(suite.read_text())["experiments"]}
    names = [n for n in ranks if any(n in p.only for p in chosen)]  # the uninterrupted run: what they compare
    started = time.monotonic()
    code = run(suite_cmd(suite, base / "baseline", data, names), env(), base / "baseline.log")
    if code != 0:
        sys.exit(f"the uninterrupted suite failed (exit {code}); see {base / 'baseline.log'}")
    baseline = outcome(base / "baseline", names)
    print(f"uninterrupted suite: {time.monotonic() - started:.0f}s, {base / 'baseline'}", flush=True)
    print(f"{'kill point':<20} {'survived':>8} {'lost':>5} {'dup':>4} {'orphans':>7} {'equal':>6} {'seconds':>8}  notes",
          flush=True)
    results = []
    for point in chosen:
        res = kill_point(point, suite, data, base, baseline, ranks)
        results.append(res)
        print(f"{res.point:<20} {str(res.survived):>8} {res.lost:>5} {int(res.duplicate):>4} {res.orphans:>7} {str(res.equal):>6} "
              f"{res.seconds:>8.0f}  {'; '.join(res.notes)[:300]}", flush=True)
    print(json.dumps({"kill_points": len(results), "survived": sum(r.survived for r in results),
                      "lost_checkpoints": sum(r.lost for r in results),
                      "duplicate_runs": sum(r.duplicate for r in results),
                      "results_equal": all(r.equal for r in results), "orphans": sum(r.orphans for r in results),
                      "minutes": round((time.monotonic() - started) / 60, 1), "out": str(base)}))


if __name__ == "__main__":
    main()
