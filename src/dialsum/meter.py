"""What a training run measures about itself: training seconds, real tokens, peak memory.

    dialsum train CONFIG --init tiny --max-steps 20         # metrics.json: train_seconds, train_tokens_per_second, ...
    dialsum train CONFIG --run-dir RUN --resume             # the same numbers, summed over both processes
    pytest tests/test_meter.py

`TrainingMeter` is a Trainer callback. Its clock runs while the Trainer trains and stops while it
evaluates (`paused()`), so tokens per second are over training alone. Its totals are saved in every
checkpoint (transformers' `stateful_callbacks` in `trainer_state.json`, written with the checkpoint)
and restored on `--resume`, so a resumed run reports the time and tokens of every process that
trained the steps in its final model (work lost after a kill is not counted; the suite's wall time
shows it). Peak memory is the highest of those processes, when they ran on the same kind of device.

`PeakMemory` measures the peak of one stretch of this process, so a second run in the same process
reports its own: the CUDA allocator's peak on a GPU; on a CPU the resident set size, from the
kernel's high-water mark where Linux lets it be reset (`/proc/self/clear_refs`), else sampled every
20 ms with psutil (macOS, Windows).
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

MB = 2**20
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)


class PeakMemory:
    """Peak memory (MB) since `start()`: `kind` is `cuda` (allocator) or `rss` (process resident set)."""

    def __init__(self, cuda: bool, interval_s: float = 0.02) -> None:
        self.kind = "cuda" if cuda else "rss"
        self.interval_s = interval_s
        self.method = ""
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeakMemory:
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
        elif _reset_kernel_peak():
            self.method = "VmHWM (Linux, reset at start)"
        else:
            self.method = f"psutil RSS sampled every {self.interval_s * 1000:.0f} ms"
            self._sampled = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, name="dialsum-peak-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval_s):
            self._sampled = max(self._sampled, process.memory_info().rss)

    def peak_mb(self) -> float:
        """The peak so far (the thread keeps sampling until `stop()`)."""
        if self.kind == "cuda":
            return round(torch.cuda.max_memory_allocated() / MB, 1)
        if self._thread is None:
            return round(_kernel_peak_bytes() / MB, 1)
        self._sampled = max(self._sampled, psutil.Process().memory_info().rss)
        return round(self._sampled / MB, 1)

    def stop(self) -> float:
        peak = self.peak_mb()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return peak


def _reset_kernel_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux 4.0+); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _kernel_peak_bytes() > 0
    except OSError:
        return False


def _kernel_peak_bytes() -> int:
    found = _HWM.search(Path("/proc/self/status").read_text())
    return int(found.group(1)) * 1024 if found else 0


class TrainingMeter(TrainerCallback, ExportableState):
    """Training seconds (evaluation excluded), real tokens and peak memory, over every process of a run.

    The constructor's arguments are the totals of earlier processes: transformers rebuilds the
    callback from them when it resumes from a checkpoint (`restore_callback_states_from_checkpoint`).
    """

    def __init__(self, seconds: float = 0.0, tokens: int = 0, peak_memory_mb: float | None = None,
                 memory_kind: str | None = None) -> None:
        self.earlier_seconds = float(seconds)
        self.earlier_tokens = int(tokens)
        self.earlier_peak = peak_memory_mb
        self.earlier_kind = memory_kind
        self.tokens = 0  # counted in this process
        self.memory: PeakMemory | None = None
        self._began: float | None = None
        self._ended: float | None = None
        self._paused = 0.0

    # -- the Trainer's events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.memory = PeakMemory(cuda=args.device.type == "cuda").start()
        self._began, self._ended, self._paused = time.perf_counter(), None, 0.0

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._ended = time.perf_counter()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count as training (evaluation with generation)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._began is not None and self._ended is None:
                self._paused += time.perf_counter() - started

    # -- totals

    def process_seconds(self) -> float:
        if self._began is None:
            return 0.0
        end = self._ended if self._ended is not None else time.perf_counter()
        return max(0.0, end - self._began - self._paused)

    @property
    def seconds(self) -> float:
        return self.earlier_seconds + self.process_seconds()

    @property
    def total_tokens(self) -> int:
        return self.earlier_tokens + self.tokens

    def peak(self) -> tuple[float | None, str | None]:
        """(peak MB, kind) over the processes that ran on this process's kind of device."""
        if self.memory is None:
            return self.earlier_peak, self.earlier_kind
        now = self.memory.peak_mb()
        if self.earlier_peak is not None and self.earlier_kind == self.memory.kind:
            now = max(now, self.earlier_peak)
        return now, self.memory.kind

    def tokens_per_second(self) -> float | None:
        seconds = self.seconds
        return round(self.total_tokens / seconds, 1) if seconds > 0 and self.total_tokens else None

    def state(self) -> dict[str, Any]:
        peak, kind = self.peak()
        return {"args": {"seconds": round(self.seconds, 3), "tokens": self.total_tokens,
                         "peak_memory_mb": peak, "memory_kind": kind}, "attributes": {}}

    def close(self) -> None:
        if self.memory is not None:
            self.memory.stop()
