"""This machine as a training process sees it: the device probe, and memory clean-up.

    .venv/bin/python -c "from dialsum.device import probe; print(probe().summary())"
    pytest tests/test_device.py

`probe()` describes the CUDA device (if any), the CPU cores this process may use and whether
bitsandbytes can load; every run saves it in `environment.json`, and `resolve` plans against it.
`free_memory()` collects garbage and empties the CUDA cache between experiments or at the end of a
run, without ever creating a CUDA context itself.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1024 * 1024
# How long an OpenMP thread that reaches a barrier first spins before it sleeps, in GNU OpenMP's loop turns.
# Its default (300,000) suits a process that has its cores to itself; two trainings that share them (two
# dialsum commands at once on a CPU) then spin on the cores the other one needs. bench/cpu_contention.py on
# 2 cores, a tiny KoBART, 2 threads each: two at once trained in 82 s each with the default, 29 s with 3,000;
# one alone in 13.1 s against 14.0 s (tried too: 1,000, 26 s and 17 s; OMP_WAIT_POLICY=PASSIVE, 25 s and 21 s).
OPENMP_SPIN_COUNT = "3000"
OPENMP_WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # how the user may choose instead; a run records both


@dataclass
class DeviceInfo:
    """What this machine offers a training run; saved with every run as JSON."""

    cuda_available: bool
    device_name: str | None
    device_count: int
    total_memory_mb: float | None
    compute_capability: str | None
    bf16_supported: bool
    tf32_supported: bool
    cpu_cores: int
    bitsandbytes_available: bool
    torch_version: str | None = None
    cuda_version: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs, e.g. `NVIDIA H200 x1 (143771 MB, cc 9.0, bf16, tf32); 16 CPU cores`."""
        if self.cuda_available:
            flags = ", ".join(
                f for f, on in (("bf16", self.bf16_supported), ("tf32", self.tf32_supported)) if on
            )
            gpu = (
                f"{self.device_name} x{self.device_count} ({self.total_memory_mb:.0f} MB, "
                f"cc {self.compute_capability}{', ' + flags if flags else ''})"
            )
        else:
            gpu = "no CUDA GPU"
        bnb = "bitsandbytes" if self.bitsandbytes_available else "no bitsandbytes"
        return f"{gpu}; {self.cpu_cores} CPU cores; {bnb}"


def share_cores(environ: Any = os.environ) -> None:
    """Spin briefly at OpenMP barriers (`OPENMP_SPIN_COUNT`), unless the user chose how threads wait
    (GOMP_SPINCOUNT or OMP_WAIT_POLICY). Read once, when torch loads OpenMP: the command line calls it before
    any import of torch, and its child processes inherit it."""
    if not any(name in environ for name in OPENMP_WAITING):
        environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT


def cpu_core_count() -> int:
    """Cores this process may run on (affinity-aware where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def probe() -> DeviceInfo:
    """Describe the CUDA device (if any), CPU cores and bitsandbytes. Imports torch only here."""
    try:
        import torch  # torch takes seconds to import: only where it is used
    except ImportError as err:  # the package depends on torch; still never crash a probe
        info = _probe_from(None)
        info.notes.append(f"torch not importable ({err})")
        return info
    return _probe_from(torch)


def _probe_from(torch: Any) -> DeviceInfo:
    """Build a DeviceInfo from a torch module (or a stand-in with the same `cuda` API)."""
    notes: list[str] = []
    cuda = bool(torch is not None and torch.cuda.is_available())
    name = total = cc = None
    count, bf16, tf32 = 0, False, False
    if cuda:
        try:
            count = int(torch.cuda.device_count())
            props = torch.cuda.get_device_properties(0)
            name, total = str(props.name), round(props.total_memory / MB, 1)
            cc = f"{props.major}.{props.minor}"
            # bf16 and TF32 run natively from compute capability 8.0 (Ampere) on; torch's is_bf16_supported()
            # also says yes on older GPUs, where bf16 is emulated and many times slower than float32
            bf16 = tf32 = int(props.major) >= 8
        except Exception as err:  # a broken driver can report CUDA and then fail to describe it
            notes.append(f"CUDA reported available but unusable ({type(err).__name__}: {err})")
            cuda, count, name, total, cc, bf16, tf32 = False, 0, None, None, None, False, False
    bnb_ok = _bitsandbytes_available(cuda, notes)
    return DeviceInfo(
        cuda_available=cuda,
        device_name=name,
        device_count=count,
        total_memory_mb=total,
        compute_capability=cc,
        bf16_supported=bf16,
        tf32_supported=tf32,
        cpu_cores=cpu_core_count(),
        bitsandbytes_available=bnb_ok,
        torch_version=getattr(torch, "__version__", None),
        cuda_version=getattr(getattr(torch, "version", None), "cuda", None),
        notes=notes,
    )


def _bitsandbytes_available(cuda: bool, notes: list[str]) -> bool:
    """Installed, and (on a CUDA machine, where 4-bit loading would use it) actually importable.

    Without CUDA the import is skipped: it takes seconds, prints warnings, and 4-bit loading is
    not possible there anyway.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return False
    if not cuda:
        return True
    try:
        importlib.import_module("bitsandbytes")
    except Exception as err:  # any import-time failure (missing CUDA libs, ABI) means unusable
        notes.append(f"bitsandbytes installed but not importable: {type(err).__name__}: {err}")
        return False
    return True


def free_memory() -> float | None:
    """Collect garbage and release cached CUDA memory; MB released by the CUDA cache, else None.

    Touches CUDA only if torch is already imported and CUDA already initialised in this process, so
    a suite's parent process never creates a CUDA context (and its memory) just by cleaning up.
    """
    torch = sys.modules.get("torch")
    gc.collect()
    if not _cuda_in_use(torch):
        return None
    try:
        before = torch.cuda.memory_reserved()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
        return round(max(0, before - torch.cuda.memory_reserved()) / MB, 1)
    except Exception:  # a CUDA context poisoned by an earlier error: nothing more to release here
        return None


def _cuda_in_use(torch: Any) -> bool:
    try:
        return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:
        return False
