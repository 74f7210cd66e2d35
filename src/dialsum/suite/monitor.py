"""GPU memory as the suite watches it: the memory monitor and the wait for free memory, on NVML readings.

    pytest tests/test_monitor.py

GPUs are read through `dialsum.nvml` (a `reader=` lets tests script it). Every NVML failure means "no
GPU" with a reason, never a crash: the monitor then records the RSS of the watched process tree instead,
and the wait returns at once. The suite's process imports no torch for any of this.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dialsum.errors import DialsumError
from dialsum.nvml import MB, GpuReader, GpuSample, NvmlReader, safe_available, safe_sample

CSV_HEADER = ("time_s", "kind", "used_mb", "total_mb", "util_pct", "temp_c")
RSS_NOTE = "no GPU: recording process RSS instead"
# Warn at 92% of the card: near full, yet the last ~2 GB of a 24 GB card are still free for the allocator's
# fragmentation and a final evaluation's activations, so the warning comes before an out-of-memory error.
WARN_FRACTION = 0.92

# --------------------------------------------------------------------------- process memory


def process_rss_mb(pid: int, include_children: bool = True) -> float:
    """Resident memory (MB) of `pid`, plus all its descendants; 0.0 once the process has gone."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        kids = proc.children(recursive=True) if include_children else []
    except psutil.NoSuchProcess:  # includes zombies: an exited process holds no memory
        return 0.0
    for kid in kids:
        try:
            total += kid.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return round(total / MB, 1)


def machine_memory_mb() -> float:
    return round(psutil.virtual_memory().total / MB, 1)


# --------------------------------------------------------------------------- monitor


class MemoryMonitor:
    """Samples GPU memory (or process RSS without a GPU) on a background thread into a CSV.

        with MemoryMonitor(run_dir / "memory.csv", pid=child.pid, on_warn=log) as mon:
            child.wait()
        print(mon.kind, mon.peak_mb, mon.samples)

    With several GPUs (`indices`, a DDP experiment's), each row is the fullest of them. Each row is
    flushed at once, so a killed suite keeps the rows so far. Rows are appended to an
    existing file (the header is written once). `stop()` takes a final sample and is idempotent.
    """

    def __init__(
        self,
        csv_path: str | Path,
        *,
        interval_s: float = 2.0,
        pid: int | None = None,
        warn_fraction: float = WARN_FRACTION,
        on_warn: Callable[[str], Any] | None = None,
        reader: GpuReader | None = None,
        indices: Sequence[int] = (0,),
    ) -> None:
        if interval_s <= 0:
            raise DialsumError(f"MemoryMonitor interval_s={interval_s}: must be > 0 seconds")
        if not 0 < warn_fraction <= 1:
            raise DialsumError(f"MemoryMonitor warn_fraction={warn_fraction}: must be in (0, 1]")
        self.pid = os.getpid() if pid is None else int(pid)
        if not psutil.pid_exists(self.pid):
            raise DialsumError(f"MemoryMonitor pid={self.pid}: no such process; pass a running pid")
        self.csv_path = Path(csv_path)
        self.interval_s, self.warn_fraction, self.on_warn = interval_s, warn_fraction, on_warn
        self.reader: GpuReader = reader if reader is not None else NvmlReader()
        if not indices:
            raise DialsumError("MemoryMonitor indices=(): name at least one GPU index to watch")
        self.indices = list(indices)
        self.kind, self.note = "rss", RSS_NOTE
        self.peak_mb = 0.0
        self.samples = 0
        self.warnings = 0
        self.last: GpuSample | None = None
        self._above = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fh: Any = None
        self._writer: Any = None
        self._started = time.monotonic()
        self._stopped = False

    # context manager
    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> MemoryMonitor:
        """Choose GPU or RSS, open the CSV, take the first sample, start the thread."""
        if self._thread is not None or self._stopped:
            raise DialsumError("MemoryMonitor: start() called twice; create a new monitor per run")
        ok, reason = safe_available(self.reader)
        if ok:
            self.kind, self.note = "gpu", ""
        else:
            self.note = f"{RSS_NOTE}; {reason}" if reason else RSS_NOTE
        self._open_csv()
        self._started = time.monotonic()
        self.tick()
        self._thread = threading.Thread(target=self._run, name="dialsum-memory-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, record a final sample, close the file. Safe to call more than once."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fh is not None:
            self.tick()
            self._fh.close()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "peak_mb": self.peak_mb,
            "samples": self.samples,
            "warnings": self.warnings,
            "note": self.note,
            "csv": str(self.csv_path),
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        """Take one sample and append its row; never raises (a dead monitor must not kill a run)."""
        if self._fh is None or self._fh.closed:
            return
        try:
            with self._lock:
                sample = self._measure()
                self._write(sample)
            self._check_warn(sample)
        except Exception as err:  # noted once: a failing disk must not grow the note every tick
            if "monitor error" not in self.note:
                self.note = f"{self.note}; monitor error: {type(err).__name__}: {err}".lstrip("; ")

    def _measure(self) -> GpuSample:
        """The fullest of the watched GPUs (a DDP run fails when any one of them is full), else the RSS."""
        if self.kind == "gpu":
            samples = [safe_sample(self.reader, index) for index in self.indices]
            failed = next((reason for sample, reason in samples if sample is None), None)
            if failed is None:
                return max((sample for sample, _ in samples), key=lambda s: s.used_mb / max(s.total_mb, 1e-9))
            self.kind, self.note = "rss", f"{RSS_NOTE}; {failed}"
        return GpuSample(process_rss_mb(self.pid), machine_memory_mb())

    def _open_csv(self) -> None:
        try:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self._fh = self.csv_path.open("a", encoding="utf-8", newline="")
        except OSError as err:
            raise DialsumError(
                f"{self.csv_path}: cannot write the memory log ({err.strerror}); "
                "choose a writable run directory"
            ) from None
        self._writer = csv.writer(self._fh, lineterminator="\n")
        if fresh:
            self._writer.writerow(CSV_HEADER)
            self._fh.flush()

    def _write(self, s: GpuSample) -> None:
        elapsed = round(time.monotonic() - self._started, 3)
        self._writer.writerow([elapsed, self.kind, s.used_mb, s.total_mb, _cell(s.util_pct), _cell(s.temp_c)])
        self._fh.flush()
        self.samples += 1
        self.peak_mb = max(self.peak_mb, s.used_mb)
        self.last = s

    def _check_warn(self, s: GpuSample) -> None:
        """Fire `on_warn` once each time usage rises to `warn_fraction` of total; re-arm below it."""
        above = s.total_mb > 0 and s.used_mb / s.total_mb >= self.warn_fraction
        if above and not self._above:
            self.warnings += 1
            if self.on_warn is not None:
                what = "GPU memory" if self.kind == "gpu" else "process RSS"
                self.on_warn(
                    f"{what} at {s.used_mb:.0f}/{s.total_mb:.0f} MB "
                    f"({s.used_mb / s.total_mb:.1%} >= {self.warn_fraction:.1%})"
                )
        self._above = above


def _cell(value: float | None) -> str | float:
    return "" if value is None else value


# --------------------------------------------------------------------------- smart wait


@dataclass(frozen=True)
class WaitStatus:
    outcome: str  # free | busy | timeout | no-gpu
    waited_s: float
    message: str


class SmartWait:
    """Start an experiment only once each of its GPUs uses at most `max_used_mb`; fail it after `timeout_s`.

    `check(name, indices)` never blocks: the scheduler calls it on each pass and keeps watching its
    other experiments meanwhile. Without a GPU (or on any NVML error) it answers `no-gpu` at once:
    there is nothing to wait for.
    """

    def __init__(self, max_used_mb: float, timeout_s: float, poll_s: float = 0.0, reader: GpuReader | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s < 0 or max_used_mb < 0 or poll_s < 0:
            raise DialsumError(f"smart wait: max_used_mb={max_used_mb}, timeout_s={timeout_s} and poll_s={poll_s} "
                               "must be >= 0")
        self.max_used_mb, self.timeout_s, self.poll_s = max_used_mb, timeout_s, poll_s
        self.reader = reader if reader is not None else NvmlReader()
        self.clock = clock
        self.since: dict[str, float] = {}
        self.last: dict[str, tuple[float, WaitStatus]] = {}

    def check(self, name: str, indices: list[int]) -> WaitStatus:
        """Free, busy, timeout or no-gpu; while busy, the GPUs are sampled at most every `poll_s`."""
        sampled_at, status = self.last.get(name, (-1e18, None))
        if status is not None and self.clock() - sampled_at < self.poll_s:
            return status
        status = self._sample(name, indices)
        if status.outcome == "busy":
            self.last[name] = (self.clock(), status)
        else:
            self.last.pop(name, None)
        return status

    def _sample(self, name: str, indices: list[int]) -> WaitStatus:
        busy = []
        for index in indices:
            sample, reason = safe_sample(self.reader, index)
            if sample is None:
                self.since.pop(name, None)
                return WaitStatus("no-gpu", 0.0, f"no GPU to wait for, continuing ({reason})")
            if sample.used_mb > self.max_used_mb:
                busy.append(f"GPU {index}: {sample.used_mb:.0f} MB of {sample.total_mb:.0f} MB used")
        waited = round(self.clock() - self.since.setdefault(name, self.clock()), 1)
        if not busy:
            self.since.pop(name, None)
            after = f" after {waited:.0f}s" if waited > 0 else ""
            return WaitStatus("free", waited, f"GPU free{after}: at most {self.max_used_mb:.0f} MB used")
        detail = f"{'; '.join(busy)}, more than the {self.max_used_mb:.0f} MB allowed"
        if waited >= self.timeout_s:
            self.since.pop(name, None)
            return WaitStatus("timeout", waited, (
                f"GPU still busy after {waited:.0f}s: {detail}; stop the other GPU processes, or raise the "
                "suite's gpu_wait_max_used_mb or gpu_wait_timeout_minutes"))
        return WaitStatus("busy", waited, f"waiting: {detail} ({waited:.0f}s of {self.timeout_s:.0f}s)")
