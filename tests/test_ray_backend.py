"""The Ray backend's refusals and failure paths, against a stand-in for the `ray` module (no cluster).

    pytest tests/test_ray_backend.py

tests/test_ray.py runs a real local Ray instance; these cover what a single machine cannot show: a
node that does not see the output directory, an address that cannot be reached, and how a task's
end (cancelled, crashed, failed in Ray) becomes an exit code for dialsum's own failure classes.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

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
    """Two alive nodes; `unshared` names the nodes whose probe never sees the driver's file."""

    exceptions = ray.exceptions

    def __init__(self, unshared: tuple[str, ...] = (), init_error: Exception | None = None) -> None:
        self.unshared, self.init_error = unshared, init_error
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

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        if isinstance(refs, list):  # the probes: node 0 is this host, node 1 a second machine
            hosts = []
            for i, (_, _, (path, token)) in enumerate(c for c in self.calls if c[0] == "probe_node"):
                host = socket.gethostname() if i == 0 else "node-b"
                if host not in self.unshared:
                    Path(f"{path}.{host}").write_text(token, encoding="utf-8")
                hosts.append(host)
            return hosts
        outcome = self.results[refs]
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


def test_a_shared_output_folder_passes(fake, tmp_path):
    fake()
    ray_backend.RayBackend(None).check_shared(tmp_path)
    assert not list(tmp_path.glob(".ray-probe-*"))


def test_an_address_that_cannot_be_reached_is_one_line(fake):
    fake(init_error=ConnectionError("Could not find any running Ray instance.\nmore detail"))
    with pytest.raises(DialsumError) as err:
        ray_backend.RayBackend("10.0.0.9:6379")
    assert "cannot connect to 10.0.0.9:6379 (Could not find any running Ray instance.)" in str(err.value)
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
