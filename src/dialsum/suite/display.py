"""What the suite shows while it runs and when it ends: a live table (rich), event lines, the closing table.

    dialsum suite configs/suites/main5.yaml          # on a terminal: the live table
    dialsum suite configs/suites/main5.yaml | cat    # elsewhere: one line per event

The live table has a row per experiment: state, slot, elapsed against expected minutes, step, loss
and memory. A running experiment's step and loss come from its `train_log.jsonl` and progress bar; a sweep
entry shows its trials ended and best score until its best settings train.
"""

from __future__ import annotations

import csv
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live as RichLive
from rich.table import Table

from dialsum.fileio import JsonlFollower
from dialsum.runfiles import METRICS, RunMetrics, load
from dialsum.suite.failures import read_log_tail
from dialsum.suite.state import ExperimentRecord

STATUS_HEADER = ["experiment", "state", "slot", "elapsed / expected", "step", "loss", "memory"]
CLOSING_HEADER = ["experiment", "state", "slot", "minutes / expected", "dev final", "attempts"]


class TrainProgress:
    """Step, total steps and last loss of a running experiment, from its train_log.jsonl and output."""

    BAR = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
    BAR_TAIL_BYTES = 8192  # the log's end, where the progress bar's last redraws are: dozens of them

    def __init__(self, jsonl: Path, log: Path, log_start: int) -> None:
        self.jsonl, self.log, self.log_start = jsonl, log, log_start
        self.step: int | None = None
        self.max_steps: int | None = None
        self.loss: float | None = None
        self._rows = JsonlFollower(jsonl)

    def poll(self) -> None:
        self._read_jsonl()
        for line in reversed(read_log_tail(self.log, self.log_start, self.BAR_TAIL_BYTES)):
            found = self.BAR.findall(line)
            if found:
                self.max_steps = int(found[-1][1])
                self.step = max(self.step or 0, int(found[-1][0]))
                break

    def _read_jsonl(self) -> None:
        for entry in self._rows.new_rows():
            self.step = int(entry.get("step") or self.step or 0)
            if isinstance(entry.get("loss"), (int, float)):
                self.loss = float(entry["loss"])

    def steps_text(self) -> str:
        if self.step is None:
            return "-"
        return f"{self.step}/{self.max_steps}" if self.max_steps else str(self.step)


class SweepProgress:
    """A sweep entry: while it sweeps, the trials ended of its total and the best score so far, from the
    sweep's trials.csv (rewritten after every trial); once its best settings train, that training's progress."""

    ENDED = ("COMPLETE", "PRUNED", "FAIL")

    def __init__(self, trials_csv: Path, total: int, training: TrainProgress) -> None:
        self.trials_csv, self.total, self.training = trials_csv, total, training
        self.ended = 0
        self.best: float | None = None
        self._seen: tuple[int, int] | None = None  # trials.csv's mtime (ns) and size when last read

    @property
    def loss(self) -> float | None:
        return self.training.loss

    def poll(self) -> None:
        self.training.poll()
        try:
            stat = self.trials_csv.stat()
        except OSError:
            return
        if (stat.st_mtime_ns, stat.st_size) == self._seen:
            return
        self._seen = (stat.st_mtime_ns, stat.st_size)
        try:
            with self.trials_csv.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            values = [float(r["value"]) for r in rows if r.get("state") == "COMPLETE" and r.get("value")]
        except (OSError, UnicodeDecodeError, csv.Error, ValueError):  # being replaced, or edited: read it again
            self._seen = None
            return
        self.ended = sum(r.get("state") in self.ENDED for r in rows)
        self.best = max(values) if values else None

    def steps_text(self) -> str:
        if self.training.step is not None:
            return self.training.steps_text()
        best = f", best {self.best:.2f}" if self.best is not None else ""
        return f"sweep {self.ended}/{self.total}{best}"


def memory_text(monitor: Any) -> str:
    if monitor is None or monitor.last is None:
        return "-"
    return f"{monitor.last.used_mb:.0f} MB {monitor.kind} (peak {monitor.peak_mb:.0f})"


@dataclass
class Live:
    """A running experiment, as the table shows it."""

    started: float
    progress: TrainProgress | SweepProgress
    monitor: Any = None


def status_rows(records: list[ExperimentRecord], live: dict[str, Live]) -> list[list[str]]:
    rows = []
    for rec in records:
        seconds, steps, loss, memory = rec.wall_seconds, "-", "-", "-"
        running = live.get(rec.name)
        if running is not None:
            seconds += time.monotonic() - running.started
            steps, memory = running.progress.steps_text(), memory_text(running.monitor)
            loss = f"{running.progress.loss:.3f}" if running.progress.loss is not None else "-"
        rows.append([rec.name, rec.status_text(), rec.slot or "-",
                     f"{seconds / 60:.1f} / {rec.expected_minutes:.0f} min", steps, loss, memory])
    return rows


class LineDisplay:
    """Without a terminal: one line per state change or notice."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def event(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"[suite {stamp}] {text}", file=self.stream or sys.stdout, flush=True)

    def update(self, rows: list[list[str]]) -> None:
        return None

    def close(self) -> None:
        return None


class LiveDisplay:
    """On a terminal: a rich table refreshed every couple of seconds, notices printed above it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.live = RichLive(console=Console(), auto_refresh=False, transient=False)
        self.live.start()

    def event(self, text: str) -> None:
        self.live.console.print(f"[dim]{datetime.now():%H:%M:%S}[/dim] {text}", markup=True, highlight=False)

    def update(self, rows: list[list[str]]) -> None:
        self.live.update(table(STATUS_HEADER, rows, self.title), refresh=True)

    def close(self) -> None:
        self.live.stop()


def table(header: list[str], rows: list[list[str]], title: str | None = None) -> Table:
    out = Table(*header, title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for row in rows:
        out.add_row(*row)
    return out


def outcome_text(rec: ExperimentRecord, run_dir: Path) -> str:
    minutes = f"{rec.wall_seconds / 60:.1f} min (expected {rec.expected_minutes:g})"
    where = f" on {rec.slot}" if rec.slot else ""
    if rec.failure:
        return f"FAILED ({rec.failure.kind}){where} after {minutes}: {rec.failure.message}"
    metrics = load(run_dir / METRICS, RunMetrics)[0] or RunMetrics()
    final = metrics.dev_final
    score = f", dev final {final:.2f}" if final is not None else ""
    peak = rec.memory.peak_mb if rec.memory else None
    memory = f", peak {peak:.0f} MB {rec.memory.kind}" if peak and rec.memory else ""
    return f"finished{where} in {minutes}, {metrics.steps if metrics.steps is not None else '?'} steps{score}{memory}"


def print_closing_table(records: list[ExperimentRecord], out: Path) -> None:
    """The end-of-suite table, plain text (no colours) wherever stdout goes."""
    rows = []
    for rec in records:
        metrics = load(out / rec.name / "run" / METRICS, RunMetrics)[0] if rec.state == "finished" else None
        final = metrics.dev_final if metrics else None
        rows.append([rec.name, rec.status_text(), rec.slot or "-",
                     f"{rec.wall_seconds / 60:.1f} / {rec.expected_minutes:g}",
                     f"{final:.2f}" if final is not None else "-", str(rec.attempts)])
    Console(file=sys.stdout, color_system=None, width=120).print(table(CLOSING_HEADER, rows))
