"""Run directories: which folders hold a dialsum run, and where `train` may write one.

    dialsum train CONFIG --run-dir runs/x/1            # a new or empty folder
    dialsum train CONFIG --run-dir runs/x/1 --resume   # a folder that holds a run

A folder holds a run when `train` has written its `config.yaml` and `adaptations.json` there (the
first files of every run); it is finished when it also holds `metrics.json` (the last). That is the one
"finished" rule: `train` refuses to write over a finished run, the suite skips one, and `predict`, `tune`,
`ensemble` and the suite's steps after training use only finished runs (through `dialsum.finished_run`).
A checkpoint is complete when its `trainer_state.json`, which transformers writes last, exists and parses.
"""

from __future__ import annotations

import json
from pathlib import Path

from dialsum.errors import DialsumError
from dialsum.paths import check_folder
from dialsum.runfiles import METRICS

MARKERS = ("config.yaml", "adaptations.json")
FINISHED = METRICS  # the last file a run writes


def is_run(path: Path) -> bool:
    return all((path / name).is_file() for name in MARKERS)


def missing_for_finished(path: Path) -> str | None:
    """The first file a finished run holds that `path` lacks; None for a finished run."""
    return next((name for name in (*MARKERS, FINISHED) if not (path / name).is_file()), None)


def is_finished(path: Path) -> bool:
    return missing_for_finished(path) is None


def check_finished(path: Path) -> None:
    """Refuse anything but a finished run, naming the file it lacks."""
    missing = missing_for_finished(path)
    if missing:
        raise DialsumError(f"{path}: not a finished run ({missing} is missing); train it to the end first, or point "
                           "at a run directory under runs/")


def nearby_runs(path: Path, limit: int = 5) -> list[Path]:
    """Runs in or beside `path` (two levels down, as in runs/<experiment>/<time>), newest first."""
    found: set[Path] = set()
    for root in (path, path.parent):
        if not root.is_dir():
            continue
        for child in _folders(root):
            found.update(p for p in (child, *_folders(child)) if p != path and is_run(p))
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]


def _folders(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def check_target(run_dir: Path, resume: bool) -> None:
    """Refuse, before any work, a run directory that `train` could not use as asked."""
    check_folder(run_dir, "--run-dir")
    if resume:
        if not is_run(run_dir):
            what = "does not exist" if not run_dir.exists() else "holds no dialsum run (no config.yaml)"
            near = nearby_runs(run_dir)
            hint = f"runs nearby: {', '.join(map(str, near))}" if near else "no run found nearby"
            raise DialsumError(f"--resume --run-dir {run_dir}: {what}; {hint}")
        return
    if is_finished(run_dir):
        raise DialsumError(f"{run_dir}: already holds a finished run; choose another --run-dir "
                           "(or --resume to train it further)")
    if is_run(run_dir):
        raise DialsumError(f"{run_dir}: holds an unfinished run; continue it with --resume, or choose "
                           "another --run-dir")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise DialsumError(f"--run-dir {run_dir}: not empty and holds no dialsum run; choose a new or empty "
                           "folder")


def checkpoint_complete(checkpoint: Path) -> bool:
    try:
        return isinstance(json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint-N; one killed mid-save is passed over."""
    done = [p for p in checkpoints.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and checkpoint_complete(p)]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)
