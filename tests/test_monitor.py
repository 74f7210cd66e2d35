"""The suite's memory monitor and wait: NVML is faked through the `reader=` seam (or a fake `pynvml`).

.venv/bin/pytest tests/test_monitor.py
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dialsum.errors import DialsumError
from dialsum.nvml import GpuSample, NvmlReader
from dialsum.suite import monitor
from dialsum.suite.monitor import MemoryMonitor, SmartWait

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

    def __call__(self) -> float:
        return self.now


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
    assert list(rows[0].keys()) == list(monitor.CSV_HEADER)
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
    assert lines[0] == ",".join(monitor.CSV_HEADER)
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
        alone = monitor.process_rss_mb(os.getpid(), include_children=False)
        tree = monitor.process_rss_mb(os.getpid())
        assert alone > 1
        assert tree - alone > 80  # the child's 80 MB buffer plus its interpreter
        assert monitor.process_rss_mb(child.pid) == pytest.approx(tree - alone, abs=5)
    finally:
        child.kill()
        child.wait()
    assert monitor.process_rss_mb(child.pid) == 0.0  # reaped: no such process


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


# --------------------------------------------------------------------------- smart wait


class PerGpuReader:
    """A scripted used-MB sequence per GPU index (the last value repeats)."""

    reason = ""

    def __init__(self, used: dict[int, list[float]]) -> None:
        self.used = {i: list(v) for i, v in used.items()}

    def available(self) -> bool:
        return True

    def sample(self, index: int = 0) -> GpuSample:
        seq = self.used[index]
        return mb(seq.pop(0) if len(seq) > 1 else seq[0], 24000)


def test_wait_answers_free_at_once_when_every_gpu_is_free() -> None:
    wait = SmartWait(500, 60, reader=PerGpuReader({0: [200], 1: [100]}), clock=FakeClock())
    status = wait.check("a", [0, 1])
    assert (status.outcome, status.waited_s) == ("free", 0.0) and "500 MB" in status.message


def test_wait_holds_while_any_gpu_is_busy_and_never_blocks() -> None:
    clock = FakeClock()
    wait = SmartWait(500, 600, reader=PerGpuReader({0: [100], 1: [900, 900, 100]}), clock=clock)
    first = wait.check("a", [0, 1])
    assert first.outcome == "busy" and "GPU 1: 900 MB of 24000 MB used" in first.message and "GPU 0" not in first.message
    clock.now += 40
    assert wait.check("a", [0, 1]).outcome == "busy"
    clock.now += 20
    free = wait.check("a", [0, 1])
    assert (free.outcome, free.waited_s) == ("free", 60.0)


def test_wait_samples_at_most_every_poll_interval() -> None:
    clock, reader = FakeClock(), PerGpuReader({0: [900, 100]})
    wait = SmartWait(500, 600, poll_s=10, reader=reader, clock=clock)
    assert wait.check("a", [0]).outcome == "busy"
    clock.now += 5
    assert wait.check("a", [0]).outcome == "busy"  # not sampled again yet: the GPU is free by now
    clock.now += 5
    assert wait.check("a", [0]).outcome == "free"


def test_wait_times_out_per_experiment_with_usage_and_threshold() -> None:
    clock = FakeClock()
    wait = SmartWait(2000, 12, reader=PerGpuReader({0: [7500]}), clock=clock)
    assert wait.check("a", [0]).outcome == "busy"
    clock.now += 5
    assert wait.check("b", [0]).outcome == "busy"  # b's wait starts now, not with a's
    clock.now += 7
    timeout = wait.check("a", [0])
    assert timeout.outcome == "timeout" and timeout.waited_s == 12.0
    assert "7500 MB" in timeout.message and "2000 MB allowed" in timeout.message
    assert wait.check("b", [0]).outcome == "busy"


@pytest.mark.parametrize("fail_available", [True, False])
def test_wait_without_gpu_or_with_nvml_errors_continues(fail_available: bool) -> None:
    status = SmartWait(10, 60, reader=BrokenReader(fail_available), clock=FakeClock()).check("a", [0])
    assert status.outcome == "no-gpu" and "no GPU" in status.message


def test_wait_on_this_machine_with_real_reader_does_not_block() -> None:
    assert SmartWait(10**9, 1).check("a", [0]).outcome in ("no-gpu", "free")


def test_wait_rejects_bad_arguments() -> None:
    with pytest.raises(DialsumError, match="timeout_s"):
        SmartWait(1, -1, reader=ScriptedReader([mb(0)]))




def test_a_multi_gpu_slot_is_watched_on_every_gpu_and_warns_for_the_fullest(tmp_path: Path) -> None:
    reader = PerGpuReader({2: [3000], 3: [23000]})  # the second GPU of a DDP slot is nearly full
    warnings: list[str] = []
    with MemoryMonitor(tmp_path / "m.csv", interval_s=NO_THREAD, reader=reader, indices=[2, 3],
                       on_warn=warnings.append) as mon:
        pass
    assert mon.peak_mb == 23000 and len(warnings) == 1 and "23000/24000" in warnings[0]
    assert {float(row["used_mb"]) for row in read_rows(tmp_path / "m.csv")} == {23000.0}
