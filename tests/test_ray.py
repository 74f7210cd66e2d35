"""The suite on a Ray cluster: a local Ray with two fake GPUs, inside a private network namespace.

    pytest tests/test_ray.py

`ray start` and `ray.init` bind every interface; the tests start Ray only inside `unshare -n` (with
`lo` up), so nothing listens outside this machine, and give it a home of its own for the token
that Ray 2.60's authentication writes. The driver script in the namespace initializes Ray with
`num_cpus=2, num_gpus=2` and runs the suite with `--backend ray`; every Ray process it starts
ends with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
REPO = Path(__file__).resolve().parents[1]
BATCH_OPT = str(REPO / "configs" / "experiments" / "04_batch_optimization_rtx3090.yaml")


def namespaces_work() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(), reason="no private network namespace (unshare -n) here")

DRIVER = """
import sys, ray
ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
from dialsum.suite import SuiteOptions, run_suite
opts = SuiteOptions({suite!r}, init="tiny", max_steps={steps}, out={out!r}, data={data!r}, sets={sets!r},
                    backend="ray", live=False)
code = run_suite(opts)
ray.shutdown()
sys.exit(code)
"""


def start_driver(tmp: Path, suite: Path, out: Path, data: Path, steps: int) -> subprocess.Popen:
    script = tmp / "driver.py"
    script.write_text(DRIVER.format(suite=str(suite), steps=steps, out=str(out), data=str(data),
                                    sets=[*FAST, "training.save_strategy=steps", "training.save_steps=1",
                                          "training.load_best_model_at_end=false"]), encoding="utf-8")
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("DIALSUM_FAULT_OOM_ABOVE_BATCH", None)
    cmd = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {sys.executable} {script}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write_suite(path: Path, names: list[str]) -> Path:
    import yaml

    doc = {"name": "ray", "settings": {"stop_grace_seconds": 5},
           "experiments": [{"name": n, "config": BATCH_OPT, "expected_minutes": 1} for n in names]}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads((out / "suite_state.json").read_text())["records"]}


@pytest.mark.slow
def test_each_experiment_is_a_ray_task_on_its_own_gpu(tmp_path: Path, small_data: Path) -> None:
    out = tmp_path / "out"
    driver = start_driver(tmp_path, write_suite(tmp_path / "s.yaml", ["a", "b"]), out, small_data, steps=2)
    output = driver.communicate(timeout=600)[0]
    assert driver.returncode == 0, output[-4000:]
    assert "Ray: 1 node(s), 2 GPU(s), 2 CPU(s)" in output
    recs = records(out)
    gpus = set()
    for name in ("a", "b"):
        assert recs[name]["state"] == "finished" and recs[name]["attempts"] == 1, recs[name]
        placement = json.loads((out / name / "placement.json").read_text())
        env = json.loads((out / name / "run" / "environment.json").read_text())
        assert env["cuda_visible_devices"] == placement["gpus"] and recs[name]["gpus"] == [placement["gpus"]]
        assert recs[name]["slot"].endswith(f"gpu{placement['gpus']}")
        gpus.add(placement["gpus"])
        assert json.loads((out / name / "run" / "metrics.json").read_text())["steps"] == 2
    assert gpus == {"0", "1"}  # Ray gave each task its own device
    assert (out / "report.md").is_file()


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks_and_their_training(tmp_path: Path, small_data: Path) -> None:
    out = tmp_path / "out"
    driver = start_driver(tmp_path, write_suite(tmp_path / "s.yaml", ["a", "b"]), out, small_data, steps=400)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            placed = [out / n / "placement.json" for n in ("a", "b")]
            if all(p.is_file() for p in placed) and all((out / n / "run" / "train_log.jsonl").is_file() for n in "ab"):
                break
            assert driver.poll() is None, driver.communicate()[0][-3000:]
            time.sleep(0.5)
        pids = [json.loads((out / n / "placement.json").read_text())["pid"] for n in ("a", "b")]
        driver.send_signal(signal.SIGINT)
        output = driver.communicate(timeout=120)[0]
    finally:
        driver.kill()
    assert driver.returncode == 130, output[-3000:]
    recs = records(out)
    assert [recs[n]["state"] for n in ("a", "b")] == ["interrupted", "interrupted"]
    time.sleep(2)
    import psutil

    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
