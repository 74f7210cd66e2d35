"""A Ray cluster as the suite's slots: each experiment is a Ray task that runs the same `dialsum train`.

    ray start --head --num-gpus 4                       # on the head node; `ray start --address HEAD:6379` on others
    dialsum suite configs/suites/main5.yaml --backend ray --address auto --out /shared/runs/main5
    pytest tests/test_ray.py

The driver (the `dialsum suite` process) alone holds the lock and writes the state. Each experiment
is a task asking for its `gpus:` GPUs (CPUs on a cluster without GPUs); Ray starts it on a node with
room and gives it exactly those devices (CUDA_VISIBLE_DEVICES). The task starts the training
process with its output in `<out>/<name>/suite.log`, notes where it runs in `placement.json`, and
returns the exit code, the metrics path and the log's tail. Failure classes and the out-of-memory
retry stay dialsum's (`max_retries=0`). The output directory must be on a filesystem every node
mounts: a probe task per node checks that first. Ctrl-C cancels the running tasks, and with them
their training processes (the parent-death signal), so no GPU memory is left held.

Ray is an optional extra (`pip install -e '.[ray]'`), imported only here.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError
from dialsum.suite.backends.local import Slot
from dialsum.suite.failures import read_log_tail
from dialsum.suite.process import start_child

PLACEMENT = "placement.json"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DialsumError("--backend ray: Ray is not installed; `pip install -e '.[ray]'` (ray 2.60)") from None
    return ray


def run_task(cmd: list[str], log_path: str, log_start: int, placement: str, cpu_only: bool) -> dict[str, Any]:
    """The body of an experiment's Ray task, on whichever node Ray chose."""
    gpus = "" if cpu_only else os.environ.get("CUDA_VISIBLE_DEVICES", "")
    with open(log_path, "ab") as log_file:
        proc = start_child(cmd, log_file, {"CUDA_VISIBLE_DEVICES": gpus})
    where = {"node": socket.gethostname(), "gpus": gpus, "pid": proc.pid}
    Path(placement).write_text(json.dumps(where), encoding="utf-8")
    code = proc.wait()
    run_dir = Path(cmd[cmd.index("--run-dir") + 1])
    return {**where, "exit_code": code, "metrics": str(run_dir / "metrics.json"),
            "log_tail": read_log_tail(Path(log_path), log_start)}


def probe_node(path: str, token: str) -> str:
    """On one node: read the driver's probe file and answer beside it."""
    try:
        seen = Path(path).read_text(encoding="utf-8")
    except OSError:
        seen = ""
    if seen == token:
        Path(f"{path}.{socket.gethostname()}").write_text(token, encoding="utf-8")
    return socket.gethostname()


class RayHandle:
    """One experiment's task: finished when its result is ready; stopped by cancelling it."""

    def __init__(self, ray: Any, ref: Any, placement: Path) -> None:
        self.ray, self.ref, self.placement_file = ray, ref, placement
        self.pid: int | None = None
        self.node: str | None = None
        self.gpus: str | None = None
        self.result: dict[str, Any] | None = None
        self.cancelled = False

    def started(self) -> bool:
        if self.node is None and self.placement_file.is_file():
            try:
                where = json.loads(self.placement_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return False
            self.node, self.gpus, self.pid = where["node"], where["gpus"], where["pid"]
        return self.node is not None

    def poll(self) -> int | None:
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            self.result = self.ray.get(self.ref)
        except (self.ray.exceptions.TaskCancelledError, self.ray.exceptions.WorkerCrashedError):
            return 130 if self.cancelled else -9
        except self.ray.exceptions.RayError as err:
            self.result = {"exit_code": 1, "log_tail": [f"RayError: {str(err).splitlines()[0][:300]}"]}
        self.started()
        return int(self.result["exit_code"])

    def stop(self, grace_s: float) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.ray.cancel(self.ref, force=True)  # the worker dies, and its training process with it

    def wait(self) -> int:
        while (code := self.poll()) is None:
            self.ray.wait([self.ref], timeout=1.0)
        return code

    def log_tail(self, log_path: Path, start: int) -> list[str]:
        if self.result and "log_tail" in self.result:
            return list(self.result["log_tail"])
        return read_log_tail(log_path, start)


class RayBackend:
    """Every experiment goes to Ray at once, in suite order; Ray starts each when a node has room."""

    local = False

    def __init__(self, address: str | None) -> None:
        self.ray = import_ray()
        self.started_here = not self.ray.is_initialized()
        if self.started_here:
            try:
                self.ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = address or "a new local instance"
                raise DialsumError(f"--backend ray: cannot connect to {where} ({str(err).splitlines()[0][:160]}); "
                                   "start the cluster with `ray start --head`, or check --address") from None
        resources = self.ray.cluster_resources()
        self.gpus, self.cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        self.total = self.gpus or self.cpus
        self.kind = "gpu" if self.gpus else "cpu"
        self.task = self.ray.remote(max_retries=0)(run_task)
        self.count = 0

    def describe(self) -> str:
        nodes = len([n for n in self.ray.nodes() if n.get("Alive")])
        return f"Ray: {nodes} node(s), {self.gpus} GPU(s), {self.cpus} CPU(s)"

    def check_shared(self, out: Path) -> None:
        """Every alive node must read what the driver writes under `out` (a probe task per node)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out.mkdir(parents=True, exist_ok=True)
        token, probe = uuid.uuid4().hex, out / f".ray-probe-{uuid.uuid4().hex[:8]}"
        probe.write_text(token, encoding="utf-8")
        remote = self.ray.remote(num_cpus=0, max_retries=0)(probe_node)
        try:
            refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token) for n in self.ray.nodes() if n.get("Alive")]
            hosts = self.ray.get(refs, timeout=120)
            missing = [h for h in hosts if not Path(f"{probe}.{h}").is_file()]
        finally:
            for path in out.glob(f"{probe.name}*"):
                path.unlink(missing_ok=True)
        if missing:
            raise DialsumError(f"--backend ray: {out} is not shared with node(s) {', '.join(sorted(set(missing)))} "
                               "(they could not read the driver's file there); put --out on a filesystem every "
                               "node mounts")

    def take(self, n: int) -> Slot | None:
        self.count += 1
        return Slot([f"ray{self.count}"] if n == 1 else [f"ray{self.count}x{n}"])

    def release(self, slot: Slot) -> None:
        return None

    def start(self, cmd: list[str], log_path: Path, log_start: int, slot: Slot, need: int) -> RayHandle:
        placement = log_path.parent / PLACEMENT
        placement.unlink(missing_ok=True)
        resources = {"num_gpus": need} if self.gpus else {"num_cpus": need}
        ref = self.task.options(**resources).remote(cmd, str(log_path), log_start, str(placement), not self.gpus)
        return RayHandle(self.ray, ref, placement)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
