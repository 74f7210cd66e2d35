"""Training time, tokens and peak memory: per run, across resumes, on every platform's method.

    pytest tests/test_meter.py
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from dialsum import meter as M

CPU_ARGS = SimpleNamespace(device=SimpleNamespace(type="cpu"))


def allocate_and_release(mb: int) -> None:
    block = np.ones(mb * 2**20 // 8)
    block[::4096] += 1  # touch every page
    del block


@pytest.mark.parametrize("kernel", [True, False], ids=["linux-vmhwm", "sampled"])
def test_a_second_window_in_the_same_process_reports_its_own_peak(kernel, monkeypatch):
    if not kernel:  # as on macOS and Windows: no resettable kernel peak
        monkeypatch.setattr(M, "_reset_kernel_peak", lambda: False)
    elif not M._reset_kernel_peak():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    first = M.PeakMemory(cuda=False, interval_s=0.005).start()
    allocate_and_release(300)
    time.sleep(0.05)
    big = first.stop()
    second = M.PeakMemory(cuda=False, interval_s=0.005).start()
    allocate_and_release(20)
    time.sleep(0.05)
    small = second.stop()
    assert ("VmHWM" in first.method) == kernel
    assert big - small > 200, (big, small)  # the first window's 300 MB are not the second's


def test_the_clock_stops_while_evaluating():
    meter = M.TrainingMeter()
    meter.on_train_begin(CPU_ARGS, None, None)
    time.sleep(0.1)
    with meter.paused():
        time.sleep(0.3)
    meter.on_train_end(CPU_ARGS, None, None)
    assert 0.08 < meter.seconds < 0.25
    meter.close()


def test_totals_survive_a_resume_through_the_checkpoint_state():
    first = M.TrainingMeter()
    first.on_train_begin(CPU_ARGS, None, None)
    first.tokens += 1000
    time.sleep(0.05)
    saved = first.state()  # what transformers writes into trainer_state.json
    first.close()
    resumed = M.TrainingMeter(**saved["args"])  # what transformers rebuilds on --resume
    resumed.on_train_begin(CPU_ARGS, None, None)
    resumed.tokens += 500
    time.sleep(0.05)
    resumed.on_train_end(CPU_ARGS, None, None)
    assert resumed.total_tokens == 1500
    assert resumed.seconds > saved["args"]["seconds"] >= 0.04
    peak, kind = resumed.peak()
    assert kind == "rss" and peak >= saved["args"]["peak_memory_mb"]
    assert resumed.tokens_per_second() == pytest.approx(1500 / resumed.seconds, rel=0.01)
    resumed.close()


def test_a_peak_from_another_kind_of_device_is_not_mixed_in():
    resumed = M.TrainingMeter(seconds=1.0, tokens=10, peak_memory_mb=99_999.0, memory_kind="cuda")
    resumed.on_train_begin(CPU_ARGS, None, None)
    peak, kind = resumed.peak()
    assert kind == "rss" and peak < 99_999.0
    resumed.close()
