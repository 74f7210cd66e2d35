"""Shared fixtures: offline environment, small slices of the embedded sample, device stand-ins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
CONFIGS = ROOT / "configs" / "experiments"
EXPERIMENTS = sorted(CONFIGS.glob("*.yaml"))

# Settings that make a tiny experiment take seconds on 2 CPU cores; one torch thread each, so that
# `make test-fast`'s two test processes do not compete for the cores.
FAST = [
    "speed.cpu_threads=1",
    "model.tiny_vocab_size=600",
    "model.tiny_d_model=64",
    "model.tiny_layers=1",
    "training.eval_strategy=no",
    "training.report_to=[none]",
    "generation.num_beams=2",
    "generation.max_length=32",
    "generation.min_length=1",
]


def device(cuda: bool = False, bf16: bool = False, tf32: bool = False, cores: int = 2, bnb: bool = True):
    """A machine as `dialsum.device.probe` would describe it, without probing this one."""
    from dialsum.device import DeviceInfo

    return DeviceInfo(cuda_available=cuda, device_name="test", device_count=int(cuda), total_memory_mb=None,
                      compute_capability=None, bf16_supported=bf16, tf32_supported=tf32, cpu_cores=cores,
                      bitsandbytes_available=bnb)


GPU = device(cuda=True, bf16=True, tf32=True, cores=64)


def plan(name: str, init: str = "pretrained", dev=GPU, sets: list[str] | None = None):
    """A shipped experiment config (`configs/experiments/<name>`) planned for `dev`."""
    from dialsum import config
    from dialsum.resolve import plan_experiment

    return plan_experiment(config.load(CONFIGS / name, sets), init, dev)


def make_data_dir(path: Path, train: int, dev: int, test: int) -> Path:
    """The first rows of the embedded sample, in the competition format."""
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("dev", dev), ("test", test)):
        pd.read_csv(SAMPLE / f"{name}.csv", dtype=str).head(n).to_csv(path / f"{name}.csv", index=False)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: a second intra-op thread only adds contention (100x slower on a busy 2-core box)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("data"), 64, 12, 12)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real `dialsum` command in a subprocess (exit codes and stderr as a user sees them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "dialsum.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


def chromium() -> str:
    """Debian's Chromium (make browser installs it); the browser tests are skipped, saying why, without it."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    path = os.environ.get("DIALSUM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium not found: `make browser` installs Debian's chromium (apt-get, as root)")
    return path


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one `error:` line naming what is wrong, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
