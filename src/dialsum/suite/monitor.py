"""GPU memory as the suite watches it: NVML readings, the memory monitor, the wait for free memory.

    pytest tests/test_monitor.py

NVML (`pynvml`, from nvidia-ml-py) is read through one small class, `NvmlReader`; anything that
samples takes a `reader=` so tests can script it. Every NVML failure means "no GPU" with a reason,
never a crash: the monitor then records the RSS of the watched process tree instead, and the wait
returns at once. The suite's process imports no torch for any of this.
"""

from __future__ import annotations

import csv
import importlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from dialsum.errors import DialsumError

MB = 1024 * 1024
CSV_HEADER = ("time_s", "kind", "used_mb", "total_mb", "util_pct", "temp_c")
RSS_NOTE = "no GPU: recording process RSS instead"

# --------------------------------------------------------------------------- NVML


@dataclass(frozen=True)
class GpuSample:
    used_mb: float
    total_mb: float
    util_pct: float | None = None
    temp_c: float | None = None


class GpuReader(Protocol):
    """What the monitor and the wait need from NVML; `NvmlReader` is the real one."""

    reason: str

    def available(self) -> bool: ...

    def sample(self, index: int = 0) -> GpuSample: ...


class NvmlReader:
    """Reads memory, utilization and temperature through NVML.

    `available()` never raises: on any NVML error it returns False and `reason` says why.
    `sample()` raises `RuntimeError` on failure; callers use `safe_sample` to turn that into "no GPU".
    Indices are CUDA indices: with CUDA_VISIBLE_DEVICES set they are mapped to the NVML device (a UUID
    entry exactly, a number as an NVML index). NVML numbers GPUs in PCI bus order and CUDA does so only
    under CUDA_DEVICE_ORDER=PCI_BUS_ID, which the suite gives every child (`Slot.env`).
    """

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None
        self.reason = ""
        self.count = 0

    def available(self) -> bool:
        if self._ready is None:
            self._ready = self._init()
        return self._ready

    def _init(self) -> bool:
        try:
            if self._nvml is None:
                self._nvml = importlib.import_module("pynvml")
            self._nvml.nvmlInit()
            count = int(self._nvml.nvmlDeviceGetCount())
        except Exception as err:  # NVMLError, missing library, missing module: all mean "no GPU"
            self.reason = f"NVML unavailable: {err or type(err).__name__}"
            return False
        if count < 1:
            self.reason = "NVML reports no GPU devices"
            return False
        self.count = count
        return True

    def visible_count(self) -> int:
        """GPUs this process may use: CUDA_VISIBLE_DEVICES' entries when set, else every NVML device."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return len([v for v in visible.split(",") if v.strip()])
        return self.count if self.available() else 0

    def sample(self, index: int = 0) -> GpuSample:
        if not self.available():
            raise RuntimeError(self.reason)
        nvml = self._nvml
        try:
            handle = self._handle(index)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as err:
            raise RuntimeError(f"NVML memory query failed for GPU {index}: {err}") from err
        util = _optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        temp = _optional(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        return GpuSample(round(mem.used / MB, 1), round(mem.total / MB, 1), util, temp)

    def used_by_pids(self, pids: set[int], index: int = 0) -> float | None:
        """GPU memory (MB) held by the given processes, or None where NVML cannot tell."""
        if not self.available():
            return None
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle(index))
        except Exception:
            return None
        held = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory is not None]
        return round(sum(held) / MB, 1)

    def _handle(self, index: int) -> Any:
        ident = _visible_device(index)
        if ident is None or ident.isdigit():
            return self._nvml.nvmlDeviceGetHandleByIndex(int(ident) if ident else index)
        return self._nvml.nvmlDeviceGetHandleByUUID(ident)


def child_visible_devices(indices: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES for a child that gets these CUDA indices of this process ("" for none)."""
    return ",".join(_visible_device(i) or str(i) for i in indices)


def _visible_device(index: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES entry (physical index or UUID) behind CUDA index `index`, if set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    return ids[index] if index < len(ids) else None


def _optional(read: Callable[[], Any]) -> float | None:
    """Utilization and temperature are unsupported on some devices: missing, not fatal."""
    try:
        return float(read())
    except Exception:
        return None


def safe_available(reader: GpuReader) -> tuple[bool, str]:
    """(available, reason), never raising, whatever the reader does."""
    try:
        ok = bool(reader.available())
    except Exception as err:
        return False, f"GPU reader failed: {type(err).__name__}: {err}"
    return ok, "" if ok else (getattr(reader, "reason", "") or "no GPU")


def safe_sample(reader: GpuReader, index: int = 0) -> tuple[GpuSample | None, str]:
    """(sample, "") or (None, reason), never raising."""
    try:
        return reader.sample(index), ""
    except Exception as err:
        return None, f"GPU sample failed: {type(err).__name__}: {err}"


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
        warn_fraction: float = 0.92,
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
