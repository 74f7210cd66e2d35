"""The Ray backend's refusals and failure paths, against a stand-in for the `ray` module (no cluster).

    pytest tests/test_ray_backend.py

tests/test_ray.py runs a real local Ray instance; these cover what a single machine cannot show: a
node that does not see the output directory, an address that cannot be reached, and how a task's
end (cancelled, crashed, failed in Ray) becomes an exit code for dialsum's own failure classes.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from unittest import mock

import pytest

ray = pytest.importorskip("ray")  # the real exception classes and scheduling strategy

from dialsum.errors import DialsumError  # noqa: E402
from dialsum.suite.backends import ray as ray_backend  # noqa: E402


class Remote:
    def __init__(self, fn: Any, calls: list, options: dict) -> None:
        self.fn, self.calls, self.opts = fn, calls, options

    def options(self, **kw: Any) -> Remote:
        return Remote(self.fn, self.calls, {**self.opts, **kw})

    def remote(self, *args: Any) -> Any:
        self.calls.append((self.fn.__name__, self.opts, args))
        return ("ref", len(self.calls))


class FakeRay:
    """Two alive nodes; `unshared` names the nodes whose probe never sees the driver's file, `vanished` those
    gone between the node list and their probe."""

    exceptions = ray.exceptions

    def __init__(self, unshared: tuple[str, ...] = (), init_error: Exception | None = None,
                 vanished: tuple[str, ...] = ()) -> None:
        self.unshared, self.init_error, self.vanished = unshared, init_error, vanished
        self.calls: list = []
        self.remote_options: list[dict] = []
        self.results: dict[Any, Any] = {}

    def is_initialized(self) -> bool:
        return False

    def init(self, **kw: Any) -> None:
        if self.init_error is not None:
            raise self.init_error

    def cluster_resources(self) -> dict[str, float]:
        return {"GPU": 2.0, "CPU": 8.0}

    def nodes(self) -> list[dict]:
        return [{"NodeID": "a" * 56, "Alive": True}, {"NodeID": "b" * 56, "Alive": True},
                {"NodeID": "c" * 56, "Alive": False}]

    def remote(self, **options: Any) -> Any:
        self.remote_options.append(options)
        return lambda fn: Remote(fn, self.calls, options)

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        probes = [c for c in self.calls if c[0] == "probe_node"]
        call = self.calls[ref[1] - 1] if isinstance(ref, tuple) else None
        if call is not None and call[0] == "probe_node":  # the real probe, as its node runs it: node 0 is this
            host = socket.gethostname() if probes.index(call) == 0 else "node-b"  # host, node 1 another
            if host in self.vanished:
                raise ray.exceptions.TaskUnschedulableError("the node specified via NodeAffinitySchedulingStrategy "
                                                            "doesn't exist any more")
            path, token = call[2]
            seen = f"{path}.not-mounted-there" if host in self.unshared else path  # that node's filesystem
            with mock.patch.object(ray_backend.socket, "gethostname", return_value=host):
                return ray_backend.probe_node(seen, token)
        outcome = self.results[ref]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def wait(self, refs: list, timeout: float | None = None) -> tuple[list, list]:
        return [r for r in refs if r in self.results], [r for r in refs if r not in self.results]

    def cancel(self, ref: Any, force: bool = False) -> None:
        self.results[ref] = ray.exceptions.TaskCancelledError()

    def shutdown(self) -> None:
        return None


@pytest.fixture
def fake(monkeypatch):
    def use(**kw: Any) -> FakeRay:
        stand_in = FakeRay(**kw)
        monkeypatch.setattr(ray_backend, "import_ray", lambda: stand_in)
        return stand_in

    return use


def test_tasks_are_never_retried_by_ray(fake):
    stand_in = fake()
    backend = ray_backend.RayBackend(None)
    assert stand_in.remote_options == [{"max_retries": 0}]  # dialsum classifies and retries, Ray does not
    assert (backend.kind, backend.total) == ("gpu", 2)


def test_an_output_folder_a_node_cannot_see_is_refused_and_the_probe_is_removed(fake, tmp_path):
    fake(unshared=("node-b",))
    backend = ray_backend.RayBackend(None)
    with pytest.raises(DialsumError, match=r"is not shared with node\(s\) node-b .* every node mounts"):
        backend.check_shared(tmp_path)
    assert not list(tmp_path.glob(".ray-probe-*"))  # nothing left behind in the user's --out


def test_a_node_gone_between_the_node_list_and_its_probe_is_left_out(fake, tmp_path):
    """Ray lists a lost node as alive until its heartbeats time out: its probe is unschedulable, not an error."""
    fake(vanished=("node-b",))
    ray_backend.RayBackend(None).check_shared(tmp_path)
    assert not list(tmp_path.glob(".ray-probe-*"))
    fake(vanished=("node-b",), unshared=(socket.gethostname(),))  # the nodes that answer are still checked
    with pytest.raises(DialsumError, match="is not shared with node"):
        ray_backend.RayBackend(None).check_shared(tmp_path)


def test_a_shared_output_folder_passes(fake, tmp_path):
    fake()
    ray_backend.RayBackend(None).check_shared(tmp_path)
    assert not list(tmp_path.glob(".ray-probe-*"))


def test_an_address_that_answers_but_is_no_ray_cluster_is_one_line(fake):
    fake(init_error=ConnectionError("Could not find any running Ray instance.\nmore detail"))
    with socket.socket() as listener, pytest.raises(DialsumError) as err:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        ray_backend.RayBackend(address)
    assert f"cannot connect to {address} (Could not find any running Ray instance.)" in str(err.value)
    assert "\n" not in str(err.value) and "ray start --head" in str(err.value)


@pytest.mark.parametrize(("outcome", "cancelled", "code"), [
    ({"exit_code": 0, "node": "n", "gpus": "0", "pid": 1}, False, 0),
    ({"exit_code": 3, "node": "n", "gpus": "0", "pid": 1}, False, 3),
    (ray.exceptions.TaskCancelledError(), True, 130),   # Ctrl-C: stopped on purpose
    (ray.exceptions.WorkerCrashedError(), False, -9),   # the node killed the worker: a crash, as SIGKILL
])
def test_a_task_end_becomes_the_exit_code_the_failure_classes_read(fake, tmp_path, outcome, cancelled, code):
    stand_in = fake()
    handle = ray_backend.RayHandle(stand_in, "ref", tmp_path / "placement.json")
    assert handle.poll() is None  # still running
    stand_in.results["ref"] = outcome
    handle.cancelled = cancelled
    assert handle.poll() == code


def test_a_ray_error_keeps_its_first_line_as_the_log_tail(fake, tmp_path):
    stand_in = fake()
    handle = ray_backend.RayHandle(stand_in, "ref", tmp_path / "placement.json")
    stand_in.results["ref"] = ray.exceptions.RaySystemError("object store full\ntraceback ...")
    assert handle.poll() == 1
    assert handle.log_tail(tmp_path / "suite.log", 0) == ["RayError: System error: object store full"]


@pytest.mark.parametrize("error", [
    ray.exceptions.NodeDiedError("node 1a2b died"),
    ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory."),
    ray.exceptions.LocalRayletDiedError(),
    ray.exceptions.OwnerDiedError("ab" * 14, None, ""),
    ray.exceptions.WorkerCrashedError(),
    ray.exceptions.TaskCancelledError(),  # not by the suite: someone else's cancel
])
def test_a_task_lost_to_ray_is_killed_and_resumable(fake, tmp_path, error):
    from dialsum.suite import failures, state

    stand_in = fake()
    handle = ray_backend.RayHandle(stand_in, "ref", tmp_path / "placement.json")
    stand_in.results["ref"] = error
    code = handle.poll()
    failure = getattr(handle, "failure", None) or failures.classify_failure(code, handle.log_tail(tmp_path / "suite.log", 0))
    assert failure.kind == "killed" and "--resume continues it" in failure.message
    assert type(error).__name__ in failure.message
    run = tmp_path / "a" / "run"
    run.mkdir(parents=True)
    for name in ("config.yaml", "adaptations.json"):
        (run / name).write_text("{}")
    rec = state.ExperimentRecord(name="a", state="failed", run_dir="a/run", failure=failure)
    assert state.next_action(rec, tmp_path) == "resume"


def test_an_address_where_nothing_listens_is_refused_at_once(fake):
    """Ray would retry it for minutes; the suite probes it first, in seconds."""
    stand_in = fake(init_error=AssertionError("ray.init must not be reached"))
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DialsumError, match=rf"--address 127\.0\.0\.1:{port}: nothing answers there") as err:
        ray_backend.RayBackend(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10 and "\n" not in str(err.value)
    assert stand_in.calls == []


def test_the_task_waits_for_its_gpu_on_its_node_and_times_out(monkeypatch, tmp_path):
    """The smart wait under Ray: on the node, before the training process starts."""
    from dialsum.suite import monitor

    class BusyGpu:
        reason = ""

        def available(self) -> bool:
            return True

        def sample(self, index: int = 0) -> monitor.GpuSample:
            return monitor.GpuSample(9000.0, 24000.0)

    monkeypatch.setattr(monitor, "NvmlReader", BusyGpu)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    wait = {"name": "a", "max_used_mb": 2048, "timeout_s": 0.3, "poll_s": 0.1}
    log = tmp_path / "suite.log"
    result = ray_backend.run_task(["never-started"], str(log), 0, str(tmp_path / "placement.json"), False, 1.0, wait)
    assert "GPU 0: 9000 MB of 24000 MB used" in result["wait_timeout"] and result["exit_code"] == 1
    assert not (tmp_path / "placement.json").exists()  # nothing ran
    stand_in = FakeRay()
    handle = ray_backend.RayHandle(stand_in, "ref", tmp_path / "placement.json")
    stand_in.results["ref"] = result
    assert handle.poll() == 1
    assert handle.failure.kind == "timeout" and handle.failure.message.startswith("smart wait: GPU still busy")


def test_a_stop_cancels_gently_first_and_by_force_only_later(fake, tmp_path, monkeypatch):
    stand_in = fake()
    cancels = []
    monkeypatch.setattr(stand_in, "cancel", lambda ref, force=False: cancels.append(force))
    handle = ray_backend.RayHandle(stand_in, "ref", tmp_path / "placement.json")
    handle.stop(grace_s=0.0)
    assert cancels == [False] and handle.poll() is None  # the task stops its own process first
    handle.force_at = time.monotonic() - 1  # ... and has not ended in time
    assert handle.poll() is None and cancels == [False, True]
