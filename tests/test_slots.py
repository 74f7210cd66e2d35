"""The suite's slots on one machine: which GPUs or CPU shares there are, and how they are handed out.

    pytest tests/test_slots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_monitor import _fake_nvml

from dialsum import slots
from dialsum.errors import DialsumError
from dialsum.nvml import NvmlReader
from dialsum.slots import SlotPool, parse_gpus, plan_slots
from dialsum.suite.backends.local import LocalHandle

PCI = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


class Reader:
    def __init__(self, count: int | Exception) -> None:
        self.count = count

    def visible_count(self) -> int:
        if isinstance(self.count, Exception):
            raise self.count
        return self.count


def test_default_is_every_visible_gpu_and_each_child_sees_only_its_own():
    pool = plan_slots(None, None, cpu_cores=16, reader=Reader(4))
    assert pool.kind == "gpu" and pool.units == ["gpu0", "gpu1", "gpu2", "gpu3"]
    pair = pool.take(2)
    assert pair.units == ["gpu0", "gpu1"] and pair.env() == {"CUDA_VISIBLE_DEVICES": "0,1", **PCI}
    one = pool.take(1)
    assert one.gpu_indices == [2] and one.overrides() == []


def test_named_gpus_keep_their_indices():
    pool = plan_slots("3,1", None, cpu_cores=16, reader=Reader(4))
    assert pool.take(1).env() == {"CUDA_VISIBLE_DEVICES": "3", **PCI}
    assert pool.take(1).env() == {"CUDA_VISIBLE_DEVICES": "1", **PCI}
    assert pool.take(1) is None


def test_cpu_slots_share_the_cores_and_hide_every_gpu(monkeypatch):
    monkeypatch.setattr(slots, "_cuda_count", lambda: 0)  # whatever this machine has
    pool = plan_slots(None, 2, cpu_cores=8, reader=Reader(0))
    assert pool.kind == "cpu" and pool.describe() == "2 CPU slot(s), 4 torch thread(s) each"
    slot = pool.take(1)
    assert slot.env() == {"CUDA_VISIBLE_DEVICES": "", **PCI} and slot.overrides() == ["speed.cpu_threads=4"]
    assert plan_slots(None, None, cpu_cores=8, reader=Reader(0)).total == 1


def test_a_unit_is_never_given_twice_and_comes_back_in_order():
    pool = SlotPool([0, 1, 2], 1, 16)
    first, second = pool.take(2), pool.take(1)
    assert pool.take(1) is None and not set(first.units) & set(second.units)
    pool.release(first)
    assert pool.free == ["gpu0", "gpu1"]
    assert pool.take(3) is None  # gpu2 is still taken: two cannot become three
    pool.release(second)
    assert pool.take(3).units == ["gpu0", "gpu1", "gpu2"]


@pytest.mark.parametrize(("gpus", "slots", "needle"), [
    ("0,1", 2, "--gpus and --slots: choose one"),
    (None, 0, "--slots 0: must be at least 1"),
    (None, 9, "--slots 9: this machine has 8 CPU cores; use at most 8"),
    ("0,x", None, "--gpus 0,x: expected GPU indices such as 0,1,2,3"),
    ("1,1", None, "--gpus 1,1: expected distinct GPU indices"),
    ("0,5", None, "--gpus 0,5: this machine shows 4 GPU(s) (0..3)"),
])
def test_bad_slot_options_are_refused_in_their_own_words(gpus, slots, needle):
    with pytest.raises(DialsumError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        plan_slots(gpus, slots, cpu_cores=8, reader=Reader(4))


def test_without_nvml_the_gpus_are_counted_by_cuda(monkeypatch):
    monkeypatch.setattr(slots, "_cuda_count", lambda: 2)
    assert slots.visible_gpus(Reader(RuntimeError("NVML Shared Library Not Found"))) == 2
    assert plan_slots(None, None, cpu_cores=8, reader=Reader(RuntimeError("no nvml"))).units == ["gpu0", "gpu1"]
    monkeypatch.setattr(slots, "_cuda_count", lambda: 0)
    assert slots.visible_gpus(Reader(RuntimeError("no nvml"))) == 0


def test_gpu_ids_parse_even_when_none_are_visible_yet():
    assert parse_gpus("0,2", visible=0) == [0, 2]  # counted by nothing here: trusted as given


@pytest.mark.parametrize(("visible", "gpu"), [(None, "1"), ("2,3", "3"), ("GPU-a,GPU-b", "GPU-b")])
def test_a_child_trains_on_the_gpu_the_monitor_and_the_wait_read(tmp_path: Path, monkeypatch, visible, gpu):
    """CUDA numbers GPUs fastest first unless told otherwise, NVML in PCI bus order: on a machine with two kinds
    of GPU, CUDA_VISIBLE_DEVICES=1 and NVML's GPU 1 can be different cards. Every child is told PCI bus order,
    so the GPU it trains on is the one NVML reads for its slot (as nvidia-smi numbers them)."""
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    slot = plan_slots("1", None, cpu_cores=4, reader=Reader(2)).take(1)
    log = tmp_path / "child.log"
    show = "import os; print(os.environ['CUDA_DEVICE_ORDER'], os.environ['CUDA_VISIBLE_DEVICES'])"
    assert LocalHandle([sys.executable, "-c", show], log, slot).wait() == 0
    assert log.read_text().split() == ["PCI_BUS_ID", gpu]
    nvml = _fake_nvml()
    NvmlReader(nvml=nvml).sample(slot.gpu_indices[0])
    assert nvml.opened == [int(gpu) if gpu.isdigit() else gpu]
