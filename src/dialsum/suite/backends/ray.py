"""A Ray cluster as the suite's slots: each experiment is a Ray task that runs the same `dialsum train`.

    ray start --head --num-gpus 4                       # on the head node; `ray start --address HEAD:6379` on others
    dialsum suite configs/suites/main5.yaml --backend ray --address auto --out /shared/runs/main5
    pytest tests/test_ray.py

The driver (the `dialsum suite` process) alone holds the lock and writes the state. Each experiment
is a task asking for its `gpus:` GPUs (CPUs on a cluster without GPUs); Ray starts it on a node with
room and gives it exactly those devices (CUDA_VISIBLE_DEVICES). The task waits, on its node, until
those GPUs use at most the suite's `gpu_wait_max_used_mb` (the smart wait, with its time-out), starts
the training process with its output in `<out>/<name>/suite.log`, notes where it runs in
`placement.json`, and returns the exit code, the metrics path and the log's tail. Failure classes and
the out-of-memory retry stay dialsum's (`max_retries=0`). The output directory must be on a
filesystem every node mounts: a probe task per node checks that first.

A cluster's rules, obeyed here: a node can vanish, and Ray's memory monitor kills tasks on a node
low on memory. A task lost that way (node or raylet died, worker crashed, killed for memory, result
lost with its owner) is recorded `killed`, which `--resume` continues from its last checkpoint on
whichever node has room; its training process died with its worker (the parent-death signal).
Ctrl-C and the per-experiment time-out cancel a task gently: the task stops its process as a local
slot does (SIGINT, then SIGTERM after `stop_grace_seconds`, then SIGKILL), and only a task that has
not ended some seconds after that is cancelled by force (its worker killed).

Ray is an optional extra (`pip install -e '.[ray]'`), imported only here.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError
from dialsum.lifeline import ESCALATION_S, Stopper, start_child
from dialsum.slots import Slot
from dialsum.suite.failures import read_log_tail
from dialsum.suite.monitor import SmartWait
from dialsum.suite.state import Failure

PLACEMENT = "placement.json"
PROBE_TIMEOUT_S = 3.0
SHARED_PROBE_TIMEOUT_S = 120.0  # every node's shared-folder probe together: a busy node may take a while to start a task
FORCE_MARGIN_S = 10.0  # after the task's own SIGINT, SIGTERM and SIGKILL, before its worker is killed
# Ray's ends of a task that lost its process, not its own failures: resumable, as a SIGKILL is.
LOST = {
    "OutOfMemoryError": "Ray's memory monitor killed it (its node ran low on memory)",
    "NodeDiedError": "its Ray node died",
    "LocalRayletDiedError": "its Ray node's raylet died",
    "WorkerCrashedError": "its Ray worker died",
    "ObjectLostError": "its result was lost with the Ray process that held it",
    "TaskCancelledError": "its Ray task was cancelled outside the suite",
}


def import_ray() -> Any:
    try:
        import ray  # Ray is an optional extra
    except ImportError:
        raise DialsumError("--backend ray: Ray is not installed; `pip install -e '.[ray]'` (ray 2.60)") from None
    return ray


def run_task(cmd: list[str], log_path: str, log_start: int, placement: str, cpu_only: bool,
             grace_s: float = 10.0, wait: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of an experiment's Ray task, on whichever node Ray chose: the smart wait on its GPUs, then
    the training process. A gentle cancel from the driver (a KeyboardInterrupt here) stops that process as a
    local slot's stop does: SIGINT, SIGTERM after `grace_s`, then SIGKILL."""
    gpus = "" if cpu_only else os.environ.get("CUDA_VISIBLE_DEVICES", "")
    busy = smart_wait(gpus, wait) if wait else None
    if busy is not None:
        return {"exit_code": 1, "wait_timeout": busy, "log_tail": [f"smart wait: {busy}"]}
    with open(log_path, "ab") as log_file:
        proc = start_child(cmd, log_file, {"CUDA_VISIBLE_DEVICES": gpus})
    where = {"node": socket.gethostname(), "gpus": gpus, "pid": proc.pid}
    Path(placement).write_text(json.dumps(where), encoding="utf-8")
    try:  # polled, not proc.wait(): Ray's gentle cancel is an exception it raises between two bytecodes
        while (code := proc.poll()) is None:
            time.sleep(0.2)
    except KeyboardInterrupt:  # ray.cancel(force=False): stop the process with its checkpoints kept
        code = Stopper(proc, grace_s).wait()
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n=== suite: task cancelled; its training process stopped with exit code {code}\n".encode())
        raise
    run_dir = Path(cmd[cmd.index("--run-dir") + 1])
    return {**where, "exit_code": code, "metrics": str(run_dir / "metrics.json"),
            "log_tail": read_log_tail(Path(log_path), log_start)}


def smart_wait(gpus: str, wait: dict[str, Any]) -> str | None:
    """The suite's smart wait, on this node: None once each GPU of the task uses at most the threshold (or
    there is no GPU to read), the time-out's message otherwise."""
    indices = list(range(len([g for g in gpus.split(",") if g.strip()])))
    if not indices:
        return None
    smart = SmartWait(wait["max_used_mb"], wait["timeout_s"], wait["poll_s"])
    while (status := smart.check(wait["name"], indices)).outcome == "busy":
        time.sleep(wait["poll_s"])
    return status.message if status.outcome == "timeout" else None


def probe_address(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """HOST:PORT must answer within a few seconds: Ray itself retries an address where nothing listens for
    minutes, repeating its warnings."""
    if address in (None, "auto", "local"):
        return
    host, sep, port = str(address).split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DialsumError(f"--address {address}: expected auto or HOST:PORT (the head node's address, port 6379 "
                           "unless `ray start --head --port` chose another)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__).lower()
    raise DialsumError(f"--address {address}: nothing answers there ({why} within {timeout_s:g}s); start the "
                       "cluster with `ray start --head` on that host, or check the host and port")


def lost_failure(err: Exception) -> Failure | None:
    """A task that Ray lost (its node, raylet or worker gone, or killed for memory) as a resumable failure."""
    words = next((LOST[c.__name__] for c in type(err).__mro__ if c.__name__ in LOST), None)
    if words is None:
        return None
    detail = (str(err).strip().splitlines() or [""])[0][:160]
    return Failure(kind="killed", message=f"{words} ({type(err).__name__}{': ' + detail if detail else ''}); "
                   "its checkpoints are kept: --resume continues it", lines=[detail] if detail else [])


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
        self.failure: Failure | None = None  # a loss that Ray reported, or the smart wait's time-out
        self.cancelled = False
        self.force_at: float | None = None

    def started(self) -> bool:
        if self.node is None and self.placement_file.is_file():
            try:
                where = json.loads(self.placement_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return False
            self.node, self.gpus, self.pid = where["node"], where["gpus"], where["pid"]
        return self.node is not None

    def poll(self) -> int | None:
        if self.force_at is not None and time.monotonic() > self.force_at:
            self.force_at = None
            self.ray.cancel(self.ref, force=True)  # not ended in time: its worker dies, and its process with it
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            self.result = self.ray.get(self.ref)
        except self.ray.exceptions.RayError as err:
            return self._ended_in_ray(err)
        self.started()
        if "wait_timeout" in self.result:
            self.failure = Failure(kind="timeout", message=f"smart wait: {self.result['wait_timeout']}")
        return int(self.result["exit_code"])

    def _ended_in_ray(self, err: Exception) -> int:
        first = (str(err).splitlines() or [type(err).__name__])[0][:300]
        if self.cancelled:  # the suite stopped it (Ctrl-C, time-out): however Ray ended it
            return 130
        self.failure = lost_failure(err)
        self.result = {"exit_code": -9 if self.failure else 1, "log_tail": [f"RayError: {first}"]}
        return int(self.result["exit_code"])

    def stop(self, grace_s: float) -> None:
        """A gentle cancel: the task stops its process (SIGINT, SIGTERM, SIGKILL); by force if it has not
        ended some seconds after that."""
        if not self.cancelled:
            self.cancelled = True
            self.force_at = time.monotonic() + grace_s + 2 * ESCALATION_S + FORCE_MARGIN_S
            self.ray.cancel(self.ref, force=False)

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
        probe_address(address)
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
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # Ray is an optional extra

        out.mkdir(parents=True, exist_ok=True)
        token, probe = uuid.uuid4().hex, out / f".ray-probe-{uuid.uuid4().hex[:8]}"
        probe.write_text(token, encoding="utf-8")
        remote = self.ray.remote(num_cpus=0, max_retries=0)(probe_node)
        try:
            refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe), token) for n in self.ray.nodes() if n.get("Alive")]
            hosts = self._probed_hosts(refs, time.monotonic() + SHARED_PROBE_TIMEOUT_S)
            missing = [h for h in hosts if not Path(f"{probe}.{h}").is_file()]
        finally:
            for path in out.glob(f"{probe.name}*"):
                path.unlink(missing_ok=True)
        if missing:
            raise DialsumError(f"--backend ray: {out} is not shared with node(s) {', '.join(sorted(set(missing)))} "
                               "(they could not read the driver's file there); put --out on a filesystem every "
                               "node mounts")

    def _probed_hosts(self, refs: list[Any], deadline: float) -> list[str]:
        """The hosts the probes ran on. A node can vanish between the node list and its probe (Ray still lists a
        lost node as alive until its heartbeats time out): its probe is unschedulable, and that node, which can
        take no experiment either, is left out."""
        hosts = []
        for ref in refs:
            try:
                hosts.append(self.ray.get(ref, timeout=max(1.0, deadline - time.monotonic())))
            except self.ray.exceptions.TaskUnschedulableError:
                continue
        return hosts

    def take(self, n: int) -> Slot | None:
        self.count += 1
        return Slot([f"ray{self.count}"] if n == 1 else [f"ray{self.count}x{n}"])

    def release(self, slot: Slot) -> None:
        return None

    def start(self, cmd: list[str], log_path: Path, log_start: int, slot: Slot, need: int, settings: Any) -> RayHandle:
        placement = log_path.parent / PLACEMENT
        placement.unlink(missing_ok=True)
        resources = {"num_gpus": need} if self.gpus else {"num_cpus": need}
        wait = {"name": log_path.parent.name, "max_used_mb": settings.gpu_wait_max_used_mb,
                "timeout_s": settings.gpu_wait_timeout_minutes * 60, "poll_s": settings.gpu_wait_poll_seconds}
        ref = self.task.options(**resources).remote(cmd, str(log_path), log_start, str(placement), not self.gpus,
                                                    settings.stop_grace_seconds, wait)
        return RayHandle(self.ray, ref, placement)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
