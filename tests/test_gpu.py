"""Tests for dialsum.gpu: NVML is faked through the `reader=` seam (or a fake `pynvml` module).

.venv/bin/pytest tests/test_gpu.py
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dialsum import gpu
from dialsum.errors import DialsumError
from dialsum.gpu import GpuSample, MemoryMonitor, NvmlReader, wait_for_free_gpu

NO_THREAD = 3600.0  # interval long enough that the background thread never samples; tests call tick()


class ScriptedReader:
    """Returns the scripted samples in order, then repeats the last one."""

    reason = ""

    def __init__(self, samples: list[GpuSample]) -> None:
        self.samples = list(samples)
        self.calls = 0

    def available(self) -> bool:
        return True

    def sample(self, index: int = 0) -> GpuSample:
        self.calls += 1
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


class BrokenReader:
    reason = ""

    def __init__(self, fail_available: bool) -> None:
        self.fail_available = fail_available

    def available(self) -> bool:
        if self.fail_available:
            raise RuntimeError("driver gone")
        return True

    def sample(self, index: int = 0) -> GpuSample:
        raise RuntimeError("NVML_ERROR_GPU_IS_LOST")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def mb(used: float, total: float = 1000.0) -> GpuSample:
    return GpuSample(used_mb=used, total_mb=total, util_pct=50.0, temp_c=60.0)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- monitor with fake NVML


def test_monitor_writes_gpu_rows_tracks_peak_and_warns_once_per_crossing(tmp_path: Path) -> None:
    used = [100, 950, 960, 500, 930, 200]  # crosses 92% of 1000 twice
    warnings: list[str] = []
    path = tmp_path / "mem" / "memory.csv"
    reader = ScriptedReader([mb(u) for u in used])
    with MemoryMonitor(path, interval_s=NO_THREAD, reader=reader, on_warn=warnings.append) as mon:
        for _ in used[1:-1]:
            mon.tick()
    rows = read_rows(path)
    assert list(rows[0].keys()) == list(gpu.CSV_HEADER)
    assert [float(r["used_mb"]) for r in rows] == used
    assert {r["kind"] for r in rows} == {"gpu"} and mon.kind == "gpu" and mon.note == ""
    assert rows[0]["util_pct"] == "50.0" and rows[0]["temp_c"] == "60.0"
    assert mon.peak_mb == max(used) and mon.samples == len(used)
    assert len(warnings) == 2 and mon.warnings == 2
    assert "950/1000 MB" in warnings[0] and "930/1000 MB" in warnings[1]
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times) and times[0] >= 0


def test_monitor_thread_samples_and_stop_is_idempotent(tmp_path: Path) -> None:
    reader = ScriptedReader([mb(10)])
    mon = MemoryMonitor(tmp_path / "m.csv", interval_s=0.01, reader=reader).start()
    deadline = 200
    while reader.calls < 4 and deadline:  # wait for the thread itself to sample a few times
        deadline -= 1
        mon._stop.wait(0.005)
    mon.stop()
    count = mon.samples
    mon.stop()
    assert reader.calls >= 4, "background thread did not sample"
    assert mon.samples == count == len(read_rows(tmp_path / "m.csv"))
    with pytest.raises(DialsumError, match="start"):
        mon.start()


def test_monitor_appends_to_existing_file_without_second_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    for _ in range(2):
        with MemoryMonitor(path, interval_s=NO_THREAD, reader=ScriptedReader([mb(5)])):
            pass
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(gpu.CSV_HEADER)
    assert len(lines) == 1 + 4 and lines.count(lines[0]) == 1


def test_monitor_flushes_each_row_before_stop(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with MemoryMonitor(path, interval_s=NO_THREAD, reader=ScriptedReader([mb(7), mb(8)])) as mon:
        mon.tick()
        # read while the file is still open, as after a kill: both rows are already on disk
        assert [r["used_mb"] for r in read_rows(path)] == ["7", "8"]


# --------------------------------------------------------------------------- RSS fallback


def test_rss_fallback_on_this_machine_records_positive_rss(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with MemoryMonitor(path, interval_s=NO_THREAD, reader=NvmlReader(nvml=_nvml_without_gpu())) as mon:
        pass
    rows = read_rows(path)
    assert mon.kind == "rss" and "no GPU" in mon.note and "RSS" in mon.note
    assert len(rows) >= 2 and {r["kind"] for r in rows} == {"rss"}
    assert all(float(r["used_mb"]) > 1 for r in rows)
    assert float(rows[0]["total_mb"]) > float(rows[0]["used_mb"])
    assert rows[0]["util_pct"] == "" and rows[0]["temp_c"] == ""
    assert mon.peak_mb == max(float(r["used_mb"]) for r in rows)


def test_default_reader_on_this_machine_falls_back_to_rss(tmp_path: Path) -> None:
    with MemoryMonitor(tmp_path / "m.csv", interval_s=NO_THREAD) as mon:
        pass
    if NvmlReader().available():  # a machine with a GPU driver records the GPU instead
        assert mon.kind == "gpu"
    else:
        assert mon.kind == "rss" and mon.peak_mb > 0 and mon.samples == 2


def test_process_rss_counts_children() -> None:
    code = "import sys, time; b = b'x' * (80 * 2**20); print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        alone = gpu.process_rss_mb(os.getpid(), include_children=False)
        tree = gpu.process_rss_mb(os.getpid())
        assert alone > 1
        assert tree - alone > 80  # the child's 80 MB buffer plus its interpreter
        assert gpu.process_rss_mb(child.pid) == pytest.approx(tree - alone, abs=5)
    finally:
        child.kill()
        child.wait()
    assert gpu.process_rss_mb(child.pid) == 0.0  # reaped: no such process


def test_monitor_rejects_missing_pid_and_bad_settings(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(DialsumError, match=f"pid={gone.pid}"):
        MemoryMonitor(tmp_path / "m.csv", pid=gone.pid)
    with pytest.raises(DialsumError, match="interval_s"):
        MemoryMonitor(tmp_path / "m.csv", interval_s=0)
    with pytest.raises(DialsumError, match="warn_fraction"):
        MemoryMonitor(tmp_path / "m.csv", warn_fraction=1.5)


def test_monitor_unwritable_path_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DialsumError, match="memory log"):
        MemoryMonitor(blocker / "m.csv", interval_s=NO_THREAD, reader=ScriptedReader([mb(1)])).start()


# --------------------------------------------------------------------------- NVML failures


@pytest.mark.parametrize("fail_available", [True, False])
def test_monitor_survives_a_failing_reader(tmp_path: Path, fail_available: bool) -> None:
    path = tmp_path / "m.csv"
    with MemoryMonitor(path, interval_s=NO_THREAD, reader=BrokenReader(fail_available)) as mon:
        mon.tick()
    rows = read_rows(path)
    assert mon.kind == "rss" and len(rows) == 3 and {r["kind"] for r in rows} == {"rss"}
    assert ("driver gone" if fail_available else "GPU_IS_LOST") in mon.note


def test_monitor_switches_to_rss_when_gpu_is_lost_mid_run(tmp_path: Path) -> None:
    reader = ScriptedReader([mb(300)])
    path = tmp_path / "m.csv"
    with MemoryMonitor(path, interval_s=NO_THREAD, reader=reader) as mon:
        reader.sample = BrokenReader(False).sample  # type: ignore[method-assign]
        mon.tick()
    assert [r["kind"] for r in read_rows(path)] == ["gpu", "rss", "rss"]
    assert mon.kind == "rss" and "GPU_IS_LOST" in mon.note


def test_monitor_survives_a_raising_warn_callback(tmp_path: Path) -> None:
    def explode(message: str) -> None:
        raise ValueError("callback bug")

    with MemoryMonitor(
        tmp_path / "m.csv", interval_s=NO_THREAD, reader=ScriptedReader([mb(999)]), on_warn=explode
    ) as mon:
        mon.tick()
    assert mon.samples == 3 and "callback bug" in mon.note


def _nvml_without_gpu() -> SimpleNamespace:
    class NVMLError(Exception):
        pass

    def init() -> None:
        raise NVMLError("NVML Shared Library Not Found")

    return SimpleNamespace(nvmlInit=init, NVMLError=NVMLError)


def _fake_nvml(used: int = 3 * 2**30, total: int = 24 * 2**30, util_fails: bool = False) -> SimpleNamespace:
    opened: list[object] = []

    def handle_by_index(i: int) -> tuple[str, int]:
        opened.append(i)
        return ("idx", i)

    def handle_by_uuid(u: str) -> tuple[str, str]:
        opened.append(u)
        return ("uuid", u)

    def util(handle: object) -> SimpleNamespace:
        if util_fails:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return SimpleNamespace(gpu=87)

    procs = [
        SimpleNamespace(pid=11, usedGpuMemory=2**30),
        SimpleNamespace(pid=12, usedGpuMemory=None),
        SimpleNamespace(pid=99, usedGpuMemory=5 * 2**30),
    ]
    return SimpleNamespace(
        opened=opened,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=handle_by_index,
        nvmlDeviceGetHandleByUUID=handle_by_uuid,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=used, total=total),
        nvmlDeviceGetUtilizationRates=util,
        nvmlDeviceGetTemperature=lambda h, kind: 71,
        nvmlDeviceGetComputeRunningProcesses=lambda h: procs,
    )


def test_nvml_reader_converts_units_and_tolerates_missing_utilization(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    reader = NvmlReader(nvml=_fake_nvml())
    assert reader.available()
    assert reader.sample(0) == GpuSample(3072.0, 24576.0, 87.0, 71.0)
    assert reader.used_by_pids({11, 12}) == 1024.0
    no_util = NvmlReader(nvml=_fake_nvml(util_fails=True)).sample(0)
    assert no_util.util_pct is None and no_util.temp_c == 71.0


def test_nvml_reader_maps_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_nvml()
    reader = NvmlReader(nvml=fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-abc")
    reader.sample(0)
    reader.sample(1)
    assert fake.opened == [3, "GPU-abc"]


def test_real_nvml_reader_on_this_machine_never_raises_from_available() -> None:
    reader = NvmlReader()
    if not reader.available():
        assert "NVML" in reader.reason
        with pytest.raises(RuntimeError):
            reader.sample()


def test_nvml_reader_without_gpu_reports_reason() -> None:
    reader = NvmlReader(nvml=_nvml_without_gpu())
    assert reader.available() is False
    assert "Shared Library Not Found" in reader.reason
    assert reader.used_by_pids({os.getpid()}) is None


# --------------------------------------------------------------------------- smart wait


def test_wait_returns_at_once_when_free() -> None:
    clock, logs = FakeClock(), []
    res = wait_for_free_gpu(
        500, timeout_s=60, reader=ScriptedReader([mb(200)]), log=logs.append, sleep=clock.sleep, clock=clock
    )
    assert res.ok and res.used_mb == 200 and res.waited_s == 0
    assert clock.sleeps == [] and logs == []
    assert "200 MB" in res.message and "500 MB" in res.message


def test_wait_polls_through_busy_samples_and_logs_sparingly() -> None:
    busy = [mb(900)] * 20 + [mb(100)]  # free at the 21st poll: 100 s later with 5 s polls
    clock, logs = FakeClock(), []
    reader = ScriptedReader(busy)
    res = wait_for_free_gpu(
        500, timeout_s=600, poll_s=5, reader=reader, log=logs.append, sleep=clock.sleep, clock=clock
    )
    assert res.ok and res.used_mb == 100 and res.waited_s == pytest.approx(100)
    assert reader.calls == 21 and clock.sleeps == [5] * 20
    assert len(logs) == 4  # at 0, 30, 60, 90 s: not every poll
    assert "900 MB used > 500 MB" in logs[0]


def test_wait_times_out_with_threshold_and_usage_in_message() -> None:
    clock, logs = FakeClock(), []
    res = wait_for_free_gpu(
        2000,
        timeout_s=12,
        poll_s=5,
        reader=ScriptedReader([mb(7500, 24000)]),
        log=logs.append,
        sleep=clock.sleep,
        clock=clock,
    )
    assert res.ok is False and res.used_mb == 7500
    assert res.waited_s == pytest.approx(12)
    assert clock.sleeps == [5, 5, 2]  # never sleeps past the timeout
    assert "2000 MB" in res.message and "7500 MB" in res.message and "12s" in res.message


def test_wait_zero_timeout_fails_at_once_when_busy() -> None:
    clock = FakeClock()
    res = wait_for_free_gpu(
        10, timeout_s=0, reader=ScriptedReader([mb(50)]), log=lambda m: None, sleep=clock.sleep, clock=clock
    )
    assert res.ok is False and clock.sleeps == []


@pytest.mark.parametrize("fail_available", [True, False])
def test_wait_without_gpu_or_with_nvml_errors_continues(fail_available: bool) -> None:
    clock = FakeClock()
    res = wait_for_free_gpu(
        10,
        timeout_s=60,
        reader=BrokenReader(fail_available),
        log=lambda m: None,
        sleep=clock.sleep,
        clock=clock,
    )
    assert res.ok and res.used_mb is None and "no GPU" in res.message and clock.sleeps == []


def test_wait_on_this_machine_with_real_reader_does_not_block() -> None:
    clock = FakeClock()
    res = wait_for_free_gpu(10**9, timeout_s=1, sleep=clock.sleep, clock=clock, log=lambda m: None)
    assert res.ok and clock.sleeps == []


def test_wait_rejects_bad_arguments() -> None:
    with pytest.raises(DialsumError, match="poll_s"):
        wait_for_free_gpu(1, timeout_s=1, poll_s=0, reader=ScriptedReader([mb(0)]))


# --------------------------------------------------------------------------- probe and clean-up


def test_probe_on_this_machine() -> None:
    info = gpu.probe()
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

    monkeypatch.setattr(gpu.importlib, "import_module", fake_import)
    return seen


@pytest.mark.parametrize(("major", "minor", "tf32"), [(8, 6, True), (9, 0, True), (7, 5, False)])
def test_probe_reads_capabilities_from_cuda(major: int, minor: int, tf32: bool, imports: list[str]) -> None:
    info = gpu._probe_from(_fake_torch(major, minor, bf16=major >= 8))
    assert imports == ["bitsandbytes"] and info.bitsandbytes_available and info.notes == []
    assert info.cuda_available and info.device_name == "Fake GPU" and info.device_count == 1
    assert info.total_memory_mb == 24576.0 and info.compute_capability == f"{major}.{minor}"
    assert info.tf32_supported is tf32 and info.bf16_supported is (major >= 8)
    assert info.cuda_version == "12.8" and "Fake GPU x1" in info.summary()


def test_probe_reports_an_unimportable_bitsandbytes(
    imports: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BNB_BROKEN", "1")
    info = gpu._probe_from(_fake_torch(8, 6, bf16=True))
    assert info.bitsandbytes_available is False
    assert any("bitsandbytes" in n and "libcudart" in n for n in info.notes)


def test_probe_survives_a_broken_cuda() -> None:
    fake = _fake_torch(8, 0, True)
    fake.cuda.get_device_properties = lambda i: (_ for _ in ()).throw(RuntimeError("driver mismatch"))
    info = gpu._probe_from(fake)
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
        freed = gpu.free_memory()
    finally:
        gc.enable()
    assert ref() is None
    import torch

    if not torch.cuda.is_available():
        assert freed is None
