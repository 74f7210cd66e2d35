"""Slots: the units one process may run on, a GPU each or a share of the CPU cores, planned for this machine.

    dialsum suite configs/suites/main5.yaml --gpus 0,1,2,3     # one slot per GPU (default: every visible GPU)
    dialsum suite configs/suites/main5.yaml --slots 2          # CPU only: two processes, half the cores each
    dialsum tune RUN_DIR --jobs 2                              # two workers, a slot each
    pytest tests/test_slots.py

An experiment (or a tune worker) takes units from a `SlotPool`, which never gives a unit to two of them.
Each child sees exactly its units through CUDA_VISIBLE_DEVICES (an empty string on the CPU, so no GPU is
touched by accident), and a CPU slot sets the child's torch threads to its share of the cores. GPUs are
counted through NVML (`dialsum.nvml`), and through CUDA only where NVML cannot answer.

GPU numbers are nvidia-smi's, in PCI bus order. CUDA numbers GPUs fastest first unless
CUDA_DEVICE_ORDER says otherwise, while NVML (the monitor and the smart wait) numbers them by PCI
bus: on a machine with two kinds of GPU, `CUDA_VISIBLE_DEVICES=1` and NVML's GPU 1 can be different
cards. So every child also gets `CUDA_DEVICE_ORDER=PCI_BUS_ID`, and the GPU it trains on is the one
NVML reads for its slot (tests/test_slots.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dialsum.device import cpu_core_count
from dialsum.errors import DialsumError
from dialsum.nvml import NvmlReader, child_visible_devices


@dataclass
class Slot:
    """The units one process (an experiment, a tune worker) holds while it runs."""

    units: list[str]
    gpu_indices: list[int] = field(default_factory=list)  # CUDA indices in this process
    threads: int | None = None  # torch threads of the child, on a shared CPU

    @property
    def name(self) -> str:
        return "+".join(self.units)

    def env(self) -> dict[str, str]:
        """The child's GPUs, numbered as NVML numbers them (see the module docstring)."""
        return {"CUDA_VISIBLE_DEVICES": child_visible_devices(self.gpu_indices), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def overrides(self) -> list[str]:
        return [f"speed.cpu_threads={self.threads}"] if self.threads else []


class SlotPool:
    """Free and taken units; `take(n)` hands out the first n free ones in order, or None."""

    def __init__(self, gpus: list[int], cpu_slots: int, cpu_cores: int) -> None:
        self.gpus = gpus
        if gpus:
            self.units = [f"gpu{i}" for i in gpus]
            self.threads = None
        else:
            self.units = [f"cpu{i}" for i in range(cpu_slots)]
            self.threads = max(1, cpu_cores // cpu_slots) if cpu_slots > 1 else None
        self.free = list(self.units)
        self.kind = "gpu" if gpus else "cpu"

    @property
    def total(self) -> int:
        return len(self.units)

    def describe(self) -> str:
        if self.gpus:
            return f"{self.total} GPU slot(s): {', '.join(self.units)}"
        share = f", {self.threads} torch thread(s) each" if self.threads else ""
        return f"{self.total} CPU slot(s){share}"

    def take(self, n: int) -> Slot | None:
        if len(self.free) < n:
            return None
        units, self.free = self.free[:n], self.free[n:]
        indices = [self.gpus[self.units.index(u)] for u in units] if self.gpus else []
        return Slot(units, indices, self.threads)

    def release(self, slot: Slot) -> None:
        self.free = [u for u in self.units if u in self.free or u in slot.units]


def plan_slots(gpus: str | None, slots: int | None, cpu_cores: int, reader: Any = None) -> SlotPool:
    """--gpus 0,1 (default: every visible GPU) or, on the CPU, --slots N (default 1)."""
    if gpus is not None and slots is not None:
        raise DialsumError("--gpus and --slots: choose one (--slots shares the CPU, --gpus names GPUs)")
    if slots is not None:
        if slots < 1:
            raise DialsumError(f"--slots {slots}: must be at least 1")
        if slots > cpu_cores:
            raise DialsumError(f"--slots {slots}: this machine has {cpu_cores} CPU cores; use at most {cpu_cores}")
        return SlotPool([], slots, cpu_cores)
    if gpus is not None:
        visible = visible_gpus(reader)
        if not visible:
            raise DialsumError(f"--gpus {gpus}: this machine shows no GPU (neither NVML nor CUDA sees one); on the "
                               "CPU, --slots N runs N experiments side by side")
        return SlotPool(parse_gpus(gpus, visible), 1, cpu_cores)
    return SlotPool(list(range(visible_gpus(reader))), 1, cpu_cores)


def parse_gpus(text: str, visible: int) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DialsumError(f"--gpus {text}: expected GPU indices such as 0,1,2,3") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise DialsumError(f"--gpus {text}: expected distinct GPU indices such as 0,1,2,3")
    missing = [i for i in ids if i >= visible]
    if missing and visible:
        raise DialsumError(f"--gpus {text}: this machine shows {visible} GPU(s) (0..{visible - 1})")
    return ids


def visible_gpus(reader: Any = None) -> int:
    """How many GPUs this process may use, read through NVML; where NVML fails or is missing, as CUDA
    counts them (a machine whose GPUs work without NVML still gets one slot per GPU)."""
    try:
        count = (reader or NvmlReader()).visible_count()
    except Exception:  # NVML trouble of any kind: ask CUDA instead
        count = 0
    return count or _cuda_count()


def _cuda_count() -> int:
    import torch  # only where NVML could not count: torch takes seconds to import

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_slots(jobs: int, option: str = "--jobs") -> list[Slot]:
    """One slot per worker process: a GPU each where there are GPUs, else a share of the CPU cores."""
    cores, gpus = cpu_core_count(), visible_gpus()
    if not gpus and jobs > cores:
        raise DialsumError(f"{option} {jobs}: this machine has {cores} CPU cores; use at most {cores}")
    pool = SlotPool(list(range(gpus)), 1, cores) if gpus else SlotPool([], jobs, cores)
    if pool.total < jobs:
        raise DialsumError(f"{option} {jobs}: this machine has {pool.total} GPU(s); use at most {pool.total}")
    return [slot for _ in range(jobs) if (slot := pool.take(1)) is not None]
