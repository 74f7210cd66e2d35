"""The device probe and memory clean-up a training process uses.

    pytest tests/test_device.py
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from dialsum import device

# --------------------------------------------------------------------------- probe and clean-up


def test_probe_on_this_machine() -> None:
    info = device.probe()
    assert info.cpu_cores >= 1
    assert info.cpu_cores == len(os.sched_getaffinity(0))
    data = json.loads(json.dumps(info.to_dict()))
    assert set(data) >= {
        "cuda_available",
        "device_name",
        "device_count",
        "total_memory_mb",
        "compute_capability",
        "bf16_supported",
        "tf32_supported",
        "cpu_cores",
        "bitsandbytes_available",
    }
    import torch

    assert info.cuda_available == torch.cuda.is_available()
    if not info.cuda_available:
        assert info.device_count == 0 and not info.bf16_supported and not info.tf32_supported
        assert "no CUDA GPU" in info.summary()


def _fake_torch(major: int, minor: int, bf16: bool) -> SimpleNamespace:
    props = SimpleNamespace(name="Fake GPU", total_memory=24 * 2**30, major=major, minor=minor)
    cuda = SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        get_device_properties=lambda i: props,
        is_bf16_supported=lambda: bf16,
    )
    return SimpleNamespace(cuda=cuda, __version__="9.9", version=SimpleNamespace(cuda="12.8"))


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and skip) the real bitsandbytes import that a CUDA probe makes."""
    seen: list[str] = []

    def fake_import(name: str) -> object:
        seen.append(name)
        if name == "bitsandbytes" and os.environ.get("FAKE_BNB_BROKEN"):
            raise OSError("libcudart.so.12: cannot open shared object file")
        return SimpleNamespace()

    monkeypatch.setattr(device.importlib, "import_module", fake_import)
    return seen


@pytest.mark.parametrize(("major", "minor", "tf32"), [(8, 6, True), (9, 0, True), (7, 5, False), (7, 0, False)])
def test_probe_reads_capabilities_from_cuda(major: int, minor: int, tf32: bool, imports: list[str]) -> None:
    """bf16 and TF32 need compute capability 8.0; torch says bf16 works on a T4 (7.5) or V100 (7.0) too,
    where it is emulated."""
    info = device._probe_from(_fake_torch(major, minor, bf16=True))
    assert imports == ["bitsandbytes"] and info.bitsandbytes_available and info.notes == []
    assert info.cuda_available and info.device_name == "Fake GPU" and info.device_count == 1
    assert info.total_memory_mb == 24576.0 and info.compute_capability == f"{major}.{minor}"
    assert info.tf32_supported is tf32 and info.bf16_supported is (major >= 8)
    assert info.cuda_version == "12.8" and "Fake GPU x1" in info.summary()


def test_probe_reports_an_unimportable_bitsandbytes(
    imports: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BNB_BROKEN", "1")
    info = device._probe_from(_fake_torch(8, 6, bf16=True))
    assert info.bitsandbytes_available is False
    assert any("bitsandbytes" in n and "libcudart" in n for n in info.notes)


def test_probe_survives_a_broken_cuda() -> None:
    fake = _fake_torch(8, 0, True)
    fake.cuda.get_device_properties = lambda i: (_ for _ in ()).throw(RuntimeError("driver mismatch"))
    info = device._probe_from(fake)
    assert info.cuda_available is False and any("driver mismatch" in n for n in info.notes)


def test_free_memory_collects_garbage_and_returns_none_without_cuda() -> None:
    import gc
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector frees
    ref = weakref.ref(a)
    gc.disable()
    try:
        del a, b
        assert ref() is not None
        freed = device.free_memory()
    finally:
        gc.enable()
    assert ref() is None
    import torch

    if not torch.cuda.is_available():
        assert freed is None


# --------------------------------------------------------------------------- GPU rules, checked on the CPU


@pytest.mark.parametrize(("device_name", "current", "placed"), [("cuda", 1, "cuda:1"), ("cpu", 1, "cpu")])
def test_a_4bit_base_loads_on_its_own_rank_computing_in_the_training_dtype(monkeypatch, device_name, current, placed):
    import torch

    from dialsum import modeling

    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)  # DDP rank 1: distributed.init set GPU 1
    kwargs = modeling.four_bit_arguments(torch.bfloat16, device_name)
    assert kwargs["device_map"] == {"": placed}
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and q.bnb_4bit_quant_storage == torch.uint8


def test_openmp_threads_spin_briefly_unless_the_user_chose_how_they_wait():
    from dialsum.device import OPENMP_SPIN_COUNT, share_cores

    env: dict[str, str] = {}
    share_cores(env)
    assert env == {"GOMP_SPINCOUNT": OPENMP_SPIN_COUNT}
    for chosen in ({"GOMP_SPINCOUNT": "INFINITY"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = dict(chosen)
        share_cores(env)
        assert env == chosen
