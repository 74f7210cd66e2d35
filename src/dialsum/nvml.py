"""GPUs read through NVML (`pynvml`, from nvidia-ml-py), never through torch: memory, utilization, temperature,
and how many GPUs this process may use.

    pytest tests/test_monitor.py tests/test_slots.py

Everything that samples or counts GPUs without training on them (the suite's memory monitor and smart wait,
slot planning for the suite, `tune --jobs` and `train --nproc`) reads them here, so none of those imports
torch. NVML is read through one small class, `NvmlReader`; callers take a `reader=` so tests can script it.
Every NVML failure means "no GPU" with a reason, never a crash.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

MB = 1024 * 1024


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
