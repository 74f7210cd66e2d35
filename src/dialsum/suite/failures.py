"""Why an experiment's process failed, told from its exit code and log, and the out-of-memory retry.

    pytest tests/test_suite.py -k "classify or halving"

A failure is one of: out of memory, CUDA error, bad config, bad data (both from `dialsum train`'s
one-line `error:` and exit code 2), killed (by a signal or the kernel's out-of-memory killer),
time-out, other. Its message and the few log lines that show it go into the state and the report.
The retry after out of memory halves the micro-batch and doubles the accumulation: hand-written,
because it must keep the effective batch the experiment was configured with.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from dialsum.suite.state import Failure

LOG_TAIL_BYTES = 64 * 1024

OOM_PATTERN = re.compile(r"OutOfMemoryError|out of memory|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)
CUDA_PATTERN = re.compile(
    r"CUDA error|cudaError|NCCL|device-side assert|CUBLAS_STATUS|CUDNN_STATUS|illegal memory access",
    re.IGNORECASE,
)
ERROR_LINE = re.compile(r"^error: ")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")
PROGRESS_LINE = re.compile(r"\d+%\|")
SIGNAL_EXIT_CODES = {130: signal.SIGINT, 137: signal.SIGKILL, 143: signal.SIGTERM}
CONTEXT_LINES = 4
MAX_LINES = 16


def classify_failure(returncode: int, log_lines: list[str]) -> Failure | None:
    """Kind, message and telling log lines of a finished child; None when it succeeded."""
    if returncode == 0:
        return None
    lines = [ln.rstrip() for ln in log_lines if ln.strip() and not PROGRESS_LINE.search(ln)]
    if returncode < 0 or returncode in SIGNAL_EXIT_CODES:
        return killed_failure(returncode, lines)
    at = last_match(lines, ERROR_LINE)
    if returncode == 2 and at is not None:
        return user_error_failure(lines, at)
    for kind, pattern in (("oom", OOM_PATTERN), ("cuda", CUDA_PATTERN)):
        at = last_match(lines, pattern)
        if at is not None:
            return Failure(kind=kind, message=lines[at].strip(), lines=excerpt(lines, at))
    at = last_match(lines, EXCEPTION_LINE)
    if at is not None:
        return Failure(kind="other", message=lines[at].strip(), lines=excerpt(lines, at))
    return Failure(kind="other", message=f"exited with code {returncode}", lines=lines[-MAX_LINES:])


def killed_failure(returncode: int, lines: list[str]) -> Failure:
    sig = signal.Signals(-returncode) if returncode < 0 else SIGNAL_EXIT_CODES[returncode]
    why = " (the kernel's out-of-memory killer sends it too)" if sig == signal.SIGKILL else ""
    message = (
        f"killed by {sig.name} (exit code {returncode}){why}; its checkpoints are kept: --resume continues it"
    )
    return Failure(kind="killed", message=message, lines=lines[-CONTEXT_LINES:])


def user_error_failure(lines: list[str], at: int) -> Failure:
    """Exit 2 with `error: ...`: data when it names a .csv (and no .yaml), else config."""
    end = at + 1
    while end < len(lines) and lines[end][:1].isspace():
        end += 1
    text = " ".join(lines[at:end]).lower()
    kind = "data" if ".csv" in text and ".yaml" not in text and ".yml" not in text else "config"
    return Failure(kind=kind, message=lines[at].removeprefix("error: ").strip(), lines=excerpt(lines, at, end))


def timeout_failure(limit_minutes: float, lines: list[str]) -> Failure:
    message = (
        f"ran past the per-experiment time-out of {limit_minutes:g} min and was stopped; "
        "its checkpoints are kept: --resume continues it"
    )
    return Failure(kind="timeout", message=message, lines=[ln for ln in lines if ln.strip()][-CONTEXT_LINES:])


def last_match(lines: list[str], pattern: re.Pattern[str]) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        if pattern.search(lines[i].strip()):
            return i
    return None


def excerpt(lines: list[str], at: int, end: int | None = None) -> list[str]:
    """The error line(s) and a few lines before, at most MAX_LINES (the last ones)."""
    return lines[max(0, at - CONTEXT_LINES) : end or at + 1][-MAX_LINES:]


def read_log_tail(path: Path, start: int = 0, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """Lines of `path` from byte `start` on (at most the last `limit` bytes)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - limit))
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


@dataclass(frozen=True)
class BatchRetry:
    micro_batch: int
    grad_accum: int
    text: str

    @property
    def overrides(self) -> list[str]:
        return [
            f"training.per_device_train_batch_size={self.micro_batch}",
            f"training.gradient_accumulation_steps={self.grad_accum}",
        ]


def halve_micro_batch(micro: int, accum: int) -> BatchRetry | None:
    """Half the micro-batch, twice the accumulation (effective batch kept when the micro-batch is even)."""
    if micro < 2:
        return None
    new_micro, new_accum = micro // 2, accum * 2
    before, after = micro * accum, new_micro * new_accum
    kept = f"effective {after} kept" if after == before else f"effective {before} -> {after}: odd micro-batch"
    text = (
        f"suite: out of memory at micro-batch {micro} x {accum}; "
        f"retried with {new_micro} x {new_accum} ({kept})"
    )
    return BatchRetry(new_micro, new_accum, text)
