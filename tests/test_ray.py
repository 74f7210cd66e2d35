"""The suite on a Ray cluster: a local Ray with two fake GPUs, inside a private network namespace.

    pytest tests/test_ray.py

`ray start` and `ray.init` bind every interface; the tests start Ray only inside `unshare -n` (with
`lo` up), so nothing listens outside this machine, and give it a home of its own for the token
that Ray 2.60's authentication writes. The driver script in the namespace initializes Ray with
`num_cpus=2, num_gpus=2` and runs the suite with `--backend ray`; every Ray process it starts
ends with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
from dialsum.suite.opening import SuiteOptions
from dialsum.suite.runner import run_suite
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
    driver = start_driver(tmp_path, write_suite(tmp_path / "s.yaml", ["a", "b"]), out, small_data, steps=100000)  # never finishes before the signal
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
    for name in ("a", "b"):  # a gentle cancel: the task passed SIGINT on, and the run ended on it (130)
        log = (out / name / "suite.log").read_text(encoding="utf-8")
        assert "task cancelled; its training process stopped with exit code 130" in log, log[-500:]
    time.sleep(2)
    import psutil

    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


# ---------------------------------------------------------------- two nodes: a lost node, a memory-monitor kill


def netns_ok() -> bool:
    probe = f"dsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return made


HOLD = """
import sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False)
head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
@ray.remote(num_cpus=1)
class Hold:
    def ready(self):
        return True
hold = Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
ray.get(hold.ready.remote())
print("held", flush=True)
time.sleep(3600)
"""


class TwoNodes:
    """Two network namespaces joined by a veth pair (a link of their own), a Ray node in each: the head
    and one worker, one CPU each, on the same filesystem. Every process started in them is stopped by its
    pid (each process whose network namespace is one of the two), then the namespaces are deleted."""

    HEAD_IP, WORKER_IP = "10.213.0.1", "10.213.0.2"

    def __init__(self, tmp: Path, worker_env: dict[str, str]) -> None:
        tag = os.getpid()
        self.head, self.worker, self.veth = f"dsh{tag}", f"dsw{tag}", (f"dvh{tag}", f"dvw{tag}")
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
        home = tmp / "home"
        home.mkdir(exist_ok=True)  # one home: one Ray token for both nodes
        src = str(REPO / "src")
        pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**{k: v for k, v in os.environ.items() if k != "DIALSUM_FAULT_OOM_ABOVE_BATCH"},
                    "HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, "RAY_USAGE_STATS_ENABLED": "0"}
        self.worker_env = worker_env
        self.address = f"{self.HEAD_IP}:6379"
        self.ray = str(Path(sys.executable).parent / "ray")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def start(self) -> TwoNodes:
        (head_end, worker_end) = self.veth
        self.ip("netns", "add", self.head)
        self.ip("netns", "add", self.worker)
        self.ip("link", "add", head_end, "type", "veth", "peer", "name", worker_end)
        for ns, end, addr in ((self.head, head_end, self.HEAD_IP), (self.worker, worker_end, self.WORKER_IP)):
            self.ip("link", "set", end, "netns", ns)
            self.ip("-n", ns, "addr", "add", f"{addr}/24", "dev", end)
            self.ip("-n", ns, "link", "set", end, "up")
            self.ip("-n", ns, "link", "set", "lo", "up")
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        self.run_in(self.head, [self.ray, "start", "--head", "--node-ip-address", self.HEAD_IP, "--port", "6379",
                                "--include-dashboard", "false", "--temp-dir", str(self.temp / "head"), *common])
        self.start_worker()
        return self

    def start_worker(self) -> None:
        self.run_in(self.worker, [self.ray, "start", "--address", self.address, "--node-ip-address", self.WORKER_IP,
                                  "--temp-dir", str(self.temp / "worker"), "--num-cpus", "1", "--num-gpus", "0",
                                  "--disable-usage-stats"], self.worker_env)

    def run_in(self, ns: str, cmd: list[str], extra: dict[str, str] | None = None) -> None:
        proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], env={**self.env, **(extra or {})},
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def popen(self, cmd: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as fh:
            return subprocess.Popen(["ip", "netns", "exec", self.head, *cmd], env=self.env, cwd=REPO,
                                    stdout=fh, stderr=subprocess.STDOUT)

    def hold_head(self, tmp: Path) -> subprocess.Popen:
        """A Ray actor holding the head's one CPU, so that the next experiment goes to the worker."""
        script = tmp / "hold.py"
        script.write_text(HOLD, encoding="utf-8")
        holder = subprocess.Popen(["ip", "netns", "exec", self.head, sys.executable, str(script), self.address,
                                   self.HEAD_IP], env=self.env, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        return holder

    def pids(self, ns: str) -> list[int]:
        try:
            inode = os.stat(f"/run/netns/{ns}").st_ino
        except OSError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.stat(entry / "ns" / "net").st_ino == inode:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def worker_raylet(self) -> int:
        import psutil

        for pid in self.pids(self.worker):
            try:
                if psutil.Process(pid).name() == "raylet":
                    return pid
            except psutil.Error:
                continue
        raise AssertionError("the worker node has no raylet")

    def on_worker(self, pid: int) -> bool:
        return pid in self.pids(self.worker)

    def stop(self) -> None:
        for ns in (self.head, self.worker):
            for _ in range(3):
                for pid in self.pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.veth[0]], capture_output=True)  # if never moved into one
        shutil.rmtree(self.temp, ignore_errors=True)


def memory_threshold(margin_bytes: float) -> float:
    """A memory-monitor threshold this machine stays under until `margin_bytes` more are taken."""
    import psutil

    mem = psutil.virtual_memory()
    return round((mem.total - mem.available + margin_bytes) / mem.total, 4)


def cluster_suite(tmp: Path, name: str) -> Path:
    import yaml

    doc = {"name": name, "settings": {"stop_grace_seconds": 5},
           "experiments": [{"name": name, "config": BATCH_OPT, "expected_minutes": 1,
                            "set": [f"experiment.name={name}"]}]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def suite_cmd(suite: Path, out: Path, data: Path, address: str) -> list[str]:
    sets = [*FAST, "training.save_strategy=steps", "training.save_steps=2", "training.save_total_limit=100",
            "training.load_best_model_at_end=false", "training.per_device_train_batch_size=4",
            "training.gradient_accumulation_steps=1"]
    return [sys.executable, "-m", "dialsum.cli", "suite", str(suite), "--out", str(out), "--data", str(data),
            "--init", "tiny", "--max-steps", "12", "--backend", "ray", "--address", address,
            *[a for s in sets for a in ("--set", s)]]


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def lose_then_resume(nodes: TwoNodes, tmp: Path, data: Path, name: str, marks: Path, lose: Any) -> dict[str, Any]:
    """Hold the head, run a one-experiment suite (it goes to the worker), wait until it has a checkpoint and
    pauses before its next, `lose` it, let the suite end; free the head and --resume. The record after the
    loss, the resume's output, and the checkpoint the paused run had."""
    out, log = tmp / f"out-{name}", tmp / f"{name}.log"
    holder = nodes.hold_head(tmp)
    try:
        driver = nodes.popen(suite_cmd(cluster_suite(tmp, name), out, data, nodes.address), log)
        marker = marks / f"before-save@{name}"
        wait_until(lambda: driver.poll() is not None or (marker.is_file() and marker.read_text().strip()), 300,
                   f"{name} to pause before its second checkpoint")
        paused = int(marker.read_text()) if marker.is_file() else None
        assert paused is None or nodes.on_worker(paused), "the experiment ran on the head"
        lose(paused)
        assert driver.wait(timeout=240) == 1, log.read_text()[-3000:]
    finally:
        holder.kill()
        holder.wait()
    lost = records(out)[name]
    if paused is not None:
        wait_until(lambda: not psutil_alive(paused), 30, "the lost training process to end")
    time.sleep(3)  # the holder's CPU goes back to the head
    resumed = nodes.popen([*suite_cmd(cluster_suite(tmp, name), out, data, nodes.address), "--resume"], log)
    code = resumed.wait(timeout=400)
    return {"lost": lost, "code": code, "out": out, "log": log.read_text(), "paused": paused}


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not netns_ok(),
                    reason="needs root and `ip netns` (two network namespaces)")
def test_a_lost_ray_node_or_a_memory_kill_is_resumed_from_its_checkpoint(tmp_path: Path, small_data: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    margin = 3.0e9
    worker_env = {"RAY_memory_usage_threshold": str(memory_threshold(margin)),
                  "DIALSUM_PAUSE_AT": "before-save@memkill,before-save@nodeloss", "DIALSUM_PAUSE_DIR": str(marks)}
    nodes = TwoNodes(tmp_path, worker_env)
    try:
        nodes.start()

        def ballast(paused: int | None) -> None:  # the node runs low on memory: Ray's monitor kills the task
            hog = subprocess.Popen([sys.executable, "-c", f"import numpy, time; b = numpy.ones({int(margin * 1.6) // 8}); "
                                    "print('taken', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
            try:
                if paused is not None:
                    wait_until(lambda: not psutil_alive(paused), 120, "the memory monitor to kill the task")
            finally:
                hog.kill()
                hog.wait()

        memkill = lose_then_resume(nodes, tmp_path, small_data, "memkill", marks, ballast)
        nodeloss = lose_then_resume(nodes, tmp_path, small_data, "nodeloss", marks,
                                    lambda paused: os.kill(nodes.worker_raylet(), signal.SIGKILL))
    finally:
        nodes.stop()
    assert not nodes.pids(nodes.head) and not nodes.pids(nodes.worker)
    for name, run, why in (("memkill", memkill, "memory monitor"), ("nodeloss", nodeloss, "")):
        lost = run["lost"]
        assert lost["state"] == "failed" and lost["failure"]["kind"] == "killed", lost
        assert "--resume continues it" in lost["failure"]["message"] and why in lost["failure"]["message"]
        assert run["code"] == 0, run["log"][-4000:]
        rec = records(run["out"])[name]
        assert rec["state"] == "finished" and rec["attempts"] == 2, rec
        train_log = (run["out"] / name / "run" / "train.log").read_text(encoding="utf-8")
        if run["paused"] is not None:  # it had a checkpoint when it was lost: it went on from there
            assert "resuming from" in train_log and "checkpoint-2" in train_log, train_log[-2000:]
        assert json.loads((run["out"] / name / "run" / "metrics.json").read_text())["steps"] == 12
    assert nodeloss["paused"] is not None  # the raylet was killed while the run held a checkpoint
    message = nodeloss["lost"]["failure"]["message"]
    assert any(error in message for error in ("NodeDiedError", "LocalRayletDiedError", "WorkerCrashedError")), message
