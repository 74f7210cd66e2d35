"""Tests of `dialsum suite`: real tiny models trained a few steps in subprocesses, and unit tests.

    pytest tests/test_suite.py

The scenario fixtures run the suite CLI once each (module scope) and several tests read what it left:
a suite with a failing experiment in the middle whose next experiment is SIGKILLed (then the suite
too) and resumed, and an injected out-of-memory failure that the retry fixes; Ctrl-C and time-outs
have their own short runs. Data: the first rows of the embedded sample (conftest `small_data`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FAST as FAST_SETS
from conftest import assert_clean_error, run_cli

from dialsum import config, rundir
from dialsum.errors import DialsumError
from dialsum.suite import checks, display, ensemble_step, failures, lock, process, runner, schema
from dialsum.suite import state as suite_state
from dialsum.suite.state import ExperimentRecord

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs" / "experiments"
BATCH_OPT = str(EXPERIMENTS / "04_batch_optimization_rtx3090.yaml")
HIGH_LR = str(EXPERIMENTS / "03_high_learning_rate_rtx3090.yaml")
MAIN5 = REPO / "configs" / "suites" / "main5.yaml"
SMALL_BATCH = ["training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1"]
FAST = ["--init", "tiny", *[arg for item in [*FAST_SETS, *SMALL_BATCH] for arg in ("--set", item)]]
QUICK_SETTINGS = {"gpu_wait_timeout_minutes": 0.2, "monitor_interval_seconds": 0.5, "stop_grace_seconds": 20}
SAVE_EVERY_STEP = ["training.save_strategy=steps", "training.save_steps=1", "training.save_total_limit=10"]


# ---------------------------------------------------------------- helpers


def write_suite(path: Path, experiments: list[dict[str, Any]], **settings: Any) -> Path:
    doc = {"name": path.stem, "settings": {**QUICK_SETTINGS, **settings}, "experiments": experiments}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def entry(name: str, config: str, *sets: str, minutes: float = 1) -> dict[str, Any]:
    return {"name": name, "label": name.replace("_", " ").title(), "config": config,
            "expected_minutes": minutes, "set": list(sets)}  # fmt: skip


def suite_args(suite_file: Path, out: Path, data: Path, *extra: str) -> list[str]:
    return ["suite", str(suite_file), "--out", str(out), "--data", str(data), *FAST, *extra]


def start_suite(args: list[str], **env: str) -> subprocess.Popen:
    """The suite CLI in the background, for the tests that signal it."""
    cmd = [sys.executable, "-m", "dialsum.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(**env), cwd=REPO)


def paused_before_second_checkpoint(marks: Path, *names: str) -> dict[str, str]:
    """The environment that holds each named experiment (its config's `experiment.name`) before its second
    checkpoint (`dialsum.pause`): it has one, and it keeps running until it is killed, however fast the
    machine trains."""
    marks.mkdir(exist_ok=True)
    return {"DIALSUM_PAUSE_AT": ",".join(f"before-save@{n}" for n in names), "DIALSUM_PAUSE_DIR": str(marks)}


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DIALSUM_FAULT_OOM_ABOVE_BATCH"}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def read_state(out: Path) -> dict[str, Any]:
    return json.loads((out / "suite_state.json").read_text(encoding="utf-8"))


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {rec["name"]: rec for rec in read_state(out)["records"]}


def wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"suite exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def state_if_readable(out: Path) -> dict[str, Any] | None:
    try:
        return read_state(out)
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------- scenario: failure in the middle, SIGKILL, --resume


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> dict[str, Any]:
    """done finishes; broken fails (its train CSV disappears after the up-front check); killed is
    SIGKILLed after its first checkpoint, then the suite is SIGKILLed too; `--resume --skip broken`
    continues."""
    base = tmp_path_factory.mktemp("resume")
    data = base / "data"
    shutil.copytree(small_data, data)
    shutil.copy(data / "train.csv", data / "train_broken.csv")
    suite_file = write_suite(base / "resume.yaml", [
        entry("done", BATCH_OPT, "training.save_strategy=no"),
        entry("broken", HIGH_LR, "data.train_file=train_broken.csv"),
        entry("killed", BATCH_OPT, *SAVE_EVERY_STEP, "experiment.name=killed"),  # the name its pause point names
    ])  # fmt: skip
    out, marks = base / "out", base / "marks"
    cmd = suite_args(suite_file, out, data, "--max-steps", "4")
    suite = start_suite(cmd, **paused_before_second_checkpoint(marks, "killed"))
    try:
        wait_for(lambda: (s := state_if_readable(out)) and s["records"][0].get("pid"), 120, "the first child", suite)
        (data / "train_broken.csv").unlink()  # gone after the check: fails when its turn comes
        wait_for(lambda: (marks / "before-save@killed").is_file(), 300, "a checkpoint", suite)
        child = records(out)["killed"]["pid"]
        os.kill(child, signal.SIGKILL)
    finally:
        suite.kill()
        first_output = suite.communicate(timeout=60)[0].decode("utf-8", errors="replace")
    before = {
        "done_mtime": (out / "done" / "run" / "metrics.json").stat().st_mtime_ns,
        "records": records(out), "child": child, "report": (out / "report.md").read_text(encoding="utf-8"),
    }  # fmt: skip
    result = run_cli(*cmd, "--resume", "--skip", "broken")
    return {"result": result, "out": out, "before": before, "first_output": first_output}


@pytest.mark.slow
def test_suite_runs_each_experiment_in_its_own_process(resumed: dict[str, Any]) -> None:
    out, before = resumed["out"], resumed["before"]
    assert [r["name"] for r in read_state(out)["records"]] == ["done", "broken", "killed"]
    rec = before["records"]["done"]
    assert rec["state"] == "finished" and rec["attempts"] == 1 and rec["failure"] is None
    assert rec["wall_seconds"] > 0 and rec["exit_code"] == 0
    assert rec["run_dir"] == "done/run" and rec["memory_csv"] == "done/memory.csv"
    metrics = json.loads((out / "done" / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 4 and (out / "done" / "run" / "submission.csv").is_file()
    memory = list(csv.DictReader((out / "done" / "memory.csv").open(encoding="utf-8")))
    assert len(memory) >= 2 and {row["kind"] for row in memory} <= {"gpu", "rss"}
    assert rec["memory"]["peak_mb"] == max(float(row["used_mb"]) for row in memory)
    log = (out / "done" / "suite.log").read_text(encoding="utf-8")
    assert "-m dialsum.cli train" in log and f"--run-dir {out.resolve() / 'done' / 'run'}" in log
    assert rec["pid"] is None and rec["slot"] == "cpu0"  # the pid is kept only while it runs


@pytest.mark.slow
def test_failure_in_the_middle_is_classified_and_the_next_one_runs(resumed: dict[str, Any]) -> None:
    before = resumed["before"]
    failure = before["records"]["broken"]["failure"]
    assert before["records"]["broken"]["state"] == "failed" and failure["kind"] == "data"
    assert "train_broken.csv" in failure["message"]
    assert any(line.startswith("error: ") and "train_broken.csv" in line for line in failure["lines"])
    assert before["records"]["killed"]["attempts"] == 1  # the suite went on after the failure
    assert "## Failures" in before["report"] and "Broken (broken): data" in before["report"]
    assert "train_broken.csv" in before["report"]
    lines = resumed["first_output"].splitlines()
    assert any(re.search(r"done: finished on cpu0 in [\d.]+ min \(expected 1\), 4 steps", ln) for ln in lines)
    assert any("broken: FAILED (data) on cpu0" in ln for ln in lines)


@pytest.mark.slow
def test_resume_skips_finished_and_continues_killed_from_checkpoint(resumed: dict[str, Any]) -> None:
    result, out, before = resumed["result"], resumed["out"], resumed["before"]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]  # broken still failed
    killed_before = before["records"]["killed"]
    assert killed_before["state"] in ("running", "failed")  # the suite may or may not have noticed
    if killed_before["state"] == "failed":
        assert killed_before["failure"]["kind"] == "killed"
    assert not process.pid_alive(before["child"])
    recs = records(out)
    assert recs["done"]["state"] == "finished" and recs["done"]["attempts"] == 1
    assert (out / "done" / "run" / "metrics.json").stat().st_mtime_ns == before["done_mtime"]
    assert "done: already finished; skipped" in result.stdout
    assert recs["broken"] == before["records"]["broken"]  # --skip: left as it was
    killed = recs["killed"]
    assert killed["state"] == "finished" and killed["attempts"] == 2 and killed["failure"] is None
    train_log = (out / "killed" / "run" / "train.log").read_text(encoding="utf-8")
    found = re.search(r"resuming from \S*checkpoint-(\d+)", train_log)
    assert found and int(found.group(1)) >= 1, train_log[-1500:]
    metrics = json.loads((out / "killed" / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 4


@pytest.mark.slow
def test_resume_after_a_kill_finds_the_lock_free_and_rewrites_the_report(resumed: dict[str, Any]) -> None:
    result, out = resumed["result"], resumed["out"]
    assert "stale" not in result.stdout  # the OS released the killed suite's lock
    assert not (out / "suite.pid").exists()
    index = list(csv.DictReader((out / "experiment_index.csv").open(encoding="utf-8")))
    assert [row["name"] for row in index] == ["done", "killed"]
    assert "2 finished, 1 failed" in (out / "report.md").read_text(encoding="utf-8")
    rows = {row["name"]: row for row in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert rows["broken"]["failure_kind"] == "data" and rows["killed"]["state"] == "finished"
    lines = result.stdout.splitlines()
    assert any(ln.split()[:2] == ["broken", "failed"] for ln in lines)  # the closing table
    assert lines[-1] == f"report: {out / 'report.md'}"
    assert "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- scenario: out of memory, retried


@pytest.fixture(scope="module")
def oom(
    tmp_path_factory: pytest.TempPathFactory, small_data: Path
) -> tuple[subprocess.CompletedProcess, Path]:
    base = tmp_path_factory.mktemp("oom")
    suite_file = write_suite(base / "oom.yaml", [
        entry("oomy", BATCH_OPT, "training.per_device_train_batch_size=4",
              "training.gradient_accumulation_steps=1", "training.save_strategy=no"),
    ])  # fmt: skip
    out = base / "out"
    env = {"DIALSUM_FAULT_OOM_ABOVE_BATCH": "2"}
    return run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "2"), env=env), out


@pytest.mark.slow
def test_oom_is_retried_with_half_the_micro_batch(oom: tuple[Any, Path]) -> None:
    result, out = oom
    assert result.returncode == 0, result.stdout[-3000:]
    rec = records(out)["oomy"]
    assert rec["state"] == "finished" and rec["attempts"] == 2
    text = "suite: out of memory at micro-batch 4 x 1; retried with 2 x 2 (effective 4 kept)"
    assert rec["adaptations"] == [text]
    assert rec["overrides"][-2:] == [
        "training.per_device_train_batch_size=2", "training.gradient_accumulation_steps=2",
    ]  # fmt: skip
    metrics = json.loads((out / "oomy" / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["micro_batch"], metrics["grad_accum"], metrics["effective_batch"]) == (2, 2, 4)
    log = (out / "oomy" / "suite.log").read_text(encoding="utf-8")
    assert "OutOfMemoryError" in log and log.count("suite: ") == 2  # two attempts, the first one failed
    assert text in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_suite_that_finishes_everything_exits_0_with_its_report(oom: tuple[Any, Path]) -> None:
    result, out = oom
    assert result.returncode == 0
    state = read_state(out)
    assert state["suite"] == "oom" and [r["state"] for r in state["records"]] == ["finished"]
    assert state["train_args"]["init"] == "tiny" and state["train_args"]["max_steps"] == 2
    for report_file in ("report.md", "report.html", "results.csv", "results.json", "experiment_index.csv"):
        assert (out / report_file).is_file(), report_file
    index = list(csv.DictReader((out / "experiment_index.csv").open(encoding="utf-8")))
    assert [row["name"] for row in index] == ["oomy"]
    assert not (out / "suite.pid").exists()  # the lock was released


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_sigint_stops_the_child_and_marks_it_interrupted(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "int.yaml", [entry("one", BATCH_OPT), entry("two", BATCH_OPT)])
    out = tmp_path / "out"
    cmd = suite_args(suite_file, out, small_data, "--max-steps", "100000")  # never finishes before the signal
    suite = start_suite(cmd)
    try:
        state = wait_for(lambda: (s := state_if_readable(out)) and s["records"][0].get("pid") and s, 60,
                         "the first child", suite)  # fmt: skip
        child = state["records"][0]["pid"]
        wait_for(lambda: (out / "one" / "run" / "train.log").is_file(), 60, "the child's log", suite)
        suite.send_signal(signal.SIGINT)
        output = suite.communicate(timeout=90)[0].decode("utf-8", errors="replace")
    finally:
        suite.kill()
    assert suite.returncode == 130, output[-2000:]
    recs = records(out)
    assert recs["one"]["state"] == "interrupted" and "--resume" in recs["one"]["message"]
    assert recs["two"]["state"] == "pending"
    assert not process.pid_alive(child)
    assert (out / "report.md").is_file() and not (out / "suite.pid").exists()
    assert suite_state.next_action(ExperimentRecord.model_validate(recs["one"]), out) == "resume"


# ---------------------------------------------------------------- time-outs


@pytest.mark.slow
def test_experiment_time_out_stops_it_and_the_suite_goes_on(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(
        tmp_path / "slow.yaml", [entry("slow", BATCH_OPT)], experiment_timeout_minutes=0.3
    )
    out = tmp_path / "out"
    result = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "100000"))  # cannot finish in 0.3 min
    assert result.returncode == 1, result.stdout[-2000:]
    rec = records(out)["slow"]
    assert rec["state"] == "failed" and rec["failure"]["kind"] == "timeout"
    assert "time-out of 0.3 min" in rec["failure"]["message"] and 18 <= rec["wall_seconds"] < 80
    assert rundir.is_run(out / "slow" / "run")  # it had started training: --resume continues it
    assert suite_state.next_action(ExperimentRecord.model_validate(rec), out) == "resume"
    assert "slow: stopping (time-out)" in result.stdout


def test_gpu_wait_time_out_fails_each_experiment_without_starting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dialsum import slots
    from dialsum.suite import monitor

    class BusyGpus:  # NVML as a machine whose two GPUs stay full
        reason = ""

        def available(self) -> bool:
            return True


        def sample(self, index: int = 0) -> monitor.GpuSample:
            return monitor.GpuSample(20000.0, 24000.0)

    monkeypatch.setattr(monitor, "NvmlReader", BusyGpus)
    monkeypatch.setattr(slots, "visible_gpus", lambda reader=None: 2)
    suite_file = write_suite(tmp_path / "busy.yaml", [entry("a", BATCH_OPT), entry("b", HIGH_LR)],
                             gpu_wait_timeout_minutes=0.01, gpu_wait_poll_seconds=0.1)
    opts = runner.SuiteOptions(str(suite_file), init="tiny", out=str(tmp_path / "out"), gpus="0,1", live=False)
    assert runner.run_suite(opts) == 1
    recs = records(tmp_path / "out")
    for name in ("a", "b"):
        assert recs[name]["state"] == "failed" and recs[name]["attempts"] == 0
        assert recs[name]["failure"]["kind"] == "timeout" and "still busy" in recs[name]["failure"]["message"]
        assert "20000 MB of 24000 MB used" in recs[name]["failure"]["message"]
        assert not (tmp_path / "out" / name / "run").exists()
    assert "a: FAILED (timeout)" in capsys.readouterr().out
    assert "timeout" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- lock


def test_second_suite_on_the_same_out_refuses(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "lock.yaml", [entry("one", BATCH_OPT)])
    out = tmp_path / "out"
    out.mkdir()
    with lock.SuiteLock(out):  # this test process holds the OS lock, as a running suite would
        result = run_cli(*suite_args(suite_file, out, small_data))
    assert_clean_error(result, f"another suite (pid {os.getpid()}) is running", str(out / "suite.lock"))
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "suite_state.json").exists()


def test_a_killed_suite_leaves_no_lock_held(tmp_path: Path) -> None:
    """The OS releases the lock with its holder: no stale-lock file to take over."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from dialsum.suite.lock import SuiteLock\n"
         f"with SuiteLock(Path({str(tmp_path)!r})):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DialsumError, match=f"another suite \\(pid {holder.pid}\\) is running"):
            lock.SuiteLock(tmp_path).refuse_if_held()
    finally:
        holder.kill()
        holder.wait()
    with lock.SuiteLock(tmp_path):
        assert (tmp_path / "suite.pid").read_text().strip() == str(os.getpid())
    assert not (tmp_path / "suite.pid").exists()


# ---------------------------------------------------------------- failure classifier

TRACEBACK = [
    "train:  50%|█████     | 1/2 [00:11<00:11, 11.09s/it]",
    "Traceback (most recent call last):",
    '  File "trainer.py", line 88, in compute_loss',
    "    raise torch.OutOfMemoryError(",
]


@pytest.mark.parametrize(
    ("code", "tail", "kind", "message"),
    [
        (1, [*TRACEBACK, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"], "oom",
         "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
        (1, ["RuntimeError: CUDA error: device-side assert triggered", "Compile with TORCH_USE_CUDA_DSA"],
         "cuda", "RuntimeError: CUDA error: device-side assert triggered"),
        (1, ["torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970"], "cuda",
         "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970"),
        (2, ["12:00:01 INFO run directory: x", "error: configs/x.yaml: training.lr: unknown key"], "config",
         "configs/x.yaml: training.lr: unknown key"),
        (2, ["error: /d/train.csv: missing column(s) summary; found fname, dialogue"], "data",
         "/d/train.csv: missing column(s) summary; found fname, dialogue"),
        (2, ["error: --set training.x=1: unknown key x"], "config", "--set training.x=1: unknown key x"),
        (-9, ["12:00:01 INFO model: ...", "train:  10%|█ | 1/10"], "killed", "killed by SIGKILL (exit code -9)"),
        (137, [], "killed", "killed by SIGKILL (exit code 137)"),
        (-15, [], "killed", "killed by SIGTERM (exit code -15)"),
        (1, ["  File 'x.py', line 3", "ValueError: label ids out of range"], "other", "ValueError: label ids out of range"),
        (1, ["something odd"], "other", "exited with code 1"),
    ],
)  # fmt: skip
def test_classify_failure(code: int, tail: list[str], kind: str, message: str) -> None:
    failure = failures.classify_failure(code, tail)
    assert failure is not None
    assert failure.kind == kind
    assert failure.message.startswith(message)
    assert not any("%|" in line for line in failure.lines)  # progress bars are noise


def test_classify_failure_keeps_the_error_line_and_a_few_before() -> None:
    before = [f"12:00:0{i} INFO line {i}" for i in range(8)]
    failure = failures.classify_failure(1, [*before, *TRACEBACK, "torch.OutOfMemoryError: CUDA out of memory"])
    assert failure is not None
    assert failure.lines[-1] == "torch.OutOfMemoryError: CUDA out of memory"
    assert failure.lines[:-1] == [*before[-1:], *TRACEBACK[1:]]  # CONTEXT_LINES before, bar dropped
    assert len(failure.lines) == failures.CONTEXT_LINES + 1


def test_classify_config_error_keeps_every_problem_line() -> None:
    tail = ["error: x.yaml: 2 problems:", "  - training.lr: unknown key", "  - model.name: required", "done"]
    failure = failures.classify_failure(2, tail)
    assert failure is not None and failure.kind == "config"
    assert failure.lines == tail[:3]


def test_success_is_no_failure() -> None:
    assert failures.classify_failure(0, ["error: something printed but it exited 0"]) is None


def test_read_log_tail_reads_from_the_attempt_start(tmp_path: Path) -> None:
    log = tmp_path / "suite.log"
    log.write_text("old attempt\nerror: old\n", encoding="utf-8")
    start = log.stat().st_size
    with log.open("a", encoding="utf-8") as fh:
        fh.write("new attempt\r50%|bar\nValueError: new\n")
    assert failures.read_log_tail(log, start) == ["new attempt", "50%|bar", "ValueError: new"]
    assert failures.read_log_tail(tmp_path / "missing.log") == []


# ---------------------------------------------------------------- suite file validation


def suite_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "s", "settings": {"gpu_wait_max_used_mb": 1000},
        "experiments": [{"name": "a", "config": BATCH_OPT, "expected_minutes": 40}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def load_doc(tmp_path: Path, doc: Any) -> schema.SuiteFile:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return schema.load_suite(path)


def test_valid_suite_file_loads_with_defaults(tmp_path: Path) -> None:
    suite = load_doc(tmp_path, suite_doc())
    assert suite.settings.gpu_wait_max_used_mb == 1000 and suite.settings.oom_retry is True
    assert suite.experiments[0].config == BATCH_OPT and suite.experiments[0].set == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (suite_doc(settings={"gpu_wait_max_used": 10}), "settings.gpu_wait_max_used: unknown key; did you mean gpu_wait_max_used_mb?"),
        (suite_doc(experiments=[{"name": "a", "config": "x.yaml", "expected_minuts": 4}]),
         "experiments.0.expected_minuts: unknown key; did you mean expected_minutes?"),
        (suite_doc(experiments=[{"name": "a", "expected_minutes": 4}]), "experiments.0.config: required"),
        (suite_doc(experiments=[{"name": "a b", "config": "x", "expected_minutes": 4}]), "experiments.0.name='a b'"),
        (suite_doc(experiments=[{"name": "a", "config": "x", "expected_minutes": -1}]), "experiments.0.expected_minutes=-1"),
        (suite_doc(experiments=[]), "experiments=[]"),
        (suite_doc(extra=1), "extra: unknown key"),
        (suite_doc(experiments=[{"name": "a", "config": "x", "expected_minutes": 1}] * 2), "duplicate name(s) a"),
        (["a"], "expected a mapping"),
    ],
)  # fmt: skip
def test_suite_file_errors_name_the_key(tmp_path: Path, doc: Any, expected: str) -> None:
    with pytest.raises(DialsumError) as err:
        load_doc(tmp_path, doc)
    assert expected in str(err.value) and str(tmp_path / "s.yaml") in str(err.value)


def test_suite_file_reports_every_problem_at_once(tmp_path: Path) -> None:
    doc = suite_doc(colour="x", settings={"oom_retry": "maybe"}, experiments=[{"name": "a"}])
    with pytest.raises(DialsumError, match="4 problems") as err:
        load_doc(tmp_path, doc)
    for key in ("colour", "settings.oom_retry", "experiments.0.config", "experiments.0.expected_minutes"):
        assert key in str(err.value)


def test_missing_or_broken_suite_file(tmp_path: Path) -> None:
    with pytest.raises(DialsumError, match="suite file not found"):
        schema.load_suite(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(DialsumError, match="not valid YAML"):
        schema.load_suite(tmp_path / "bad.yaml")


def test_config_paths_resolve_beside_the_suite_file(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x.yaml").write_text("model: {name: m}\n", encoding="utf-8")
    suite = load_doc(
        tmp_path, suite_doc(experiments=[{"name": "a", "config": "exp/x.yaml", "expected_minutes": 1}])
    )
    assert suite.experiments[0].config == str(tmp_path / "exp" / "x.yaml")


def test_every_bad_config_is_reported_before_anything_runs(tmp_path: Path, small_data: Path) -> None:
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text(f"inherit: {BATCH_OPT}\ntraining:\n  learning_rte: 1.0e-4\n", encoding="utf-8")
    suite_file = write_suite(tmp_path / "bad.yaml", [
        entry("good", BATCH_OPT), entry("typo", str(bad_key)), entry("gone", str(tmp_path / "gone.yaml")),
    ])  # fmt: skip
    out = tmp_path / "out"
    result = run_cli(*suite_args(suite_file, out, small_data))
    assert_clean_error(result, "2 of 3 experiment(s) have an invalid config", "gone:", "config file not found")
    assert (
        "typo:" in result.stderr and "learning_rte: unknown key; did you mean learning_rate?" in result.stderr
    )
    assert "good:" not in result.stderr
    assert not out.exists()


def test_data_and_settings_that_would_fail_are_refused_before_the_first_experiment(
    tmp_path: Path, small_data: Path
) -> None:
    suite_file = write_suite(tmp_path / "pre.yaml", [
        entry("one", BATCH_OPT), entry("two", HIGH_LR, "training.optim=adamw_bogus"),
    ])  # fmt: skip
    out = tmp_path / "out"
    result = run_cli(*suite_args(suite_file, out, tmp_path / "missing"))
    assert_clean_error(result, "2 of 2 experiment(s) cannot run; nothing was run",
                       f"one, two: {tmp_path / 'missing' / 'train.csv'}: data file not found",
                       "two: training.optim='adamw_bogus'")
    assert result.stderr.count("train.csv: data file not found") == 1  # a shared file is named once
    assert not out.exists()


@pytest.mark.slow
def test_resume_with_a_corrected_data_folder_is_taken_and_recorded(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "fix.yaml", [entry("one", BATCH_OPT, "training.save_strategy=no")])
    out = tmp_path / "out"
    wrong = tmp_path / "wrong"
    shutil.copytree(small_data, wrong)
    (wrong / "train.csv").write_text("fname,dialogue,summary\nt0,대화,요약\n", encoding="utf-8")
    first = run_cli(*suite_args(suite_file, out, wrong, "--max-steps", "1"))
    assert first.returncode == 0, first.stdout[-2000:]  # trained on the wrong data; now fix the option
    (out / "one" / "run" / "metrics.json").unlink()
    state = read_state(out)
    state["records"][0]["state"] = "interrupted"
    (out / "suite_state.json").write_text(json.dumps(state), encoding="utf-8")
    result = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "1", "--resume"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    state = read_state(out)
    assert state["train_args"]["data"] == str(small_data.resolve())
    assert any(f"--data: '{wrong.resolve()}' at the start, '{small_data.resolve()}' now" in c
               for c in state["option_changes"])
    assert any("suite: resumed with --data" in a for a in state["records"][0]["adaptations"])
    assert "--data" in result.stdout and "taken, and recorded" in result.stdout


def test_existing_state_needs_resume(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "again.yaml", [entry("one", BATCH_OPT)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "suite_state.json").write_text('{"suite": "again", "records": []}', encoding="utf-8")
    result = run_cli(*suite_args(suite_file, out, small_data))
    assert_clean_error(result, "a suite already ran", "--resume", "another --out")


def test_shipped_main5_suite_is_the_seed_order_and_its_configs_validate() -> None:
    suite = schema.load_suite(MAIN5)
    names = [Path(e.config).name for e in suite.experiments]
    assert names == [
        "01_mt5_xlsum_ultimate_korean_qlora.yaml", "02_eenzeenee_t5_rtx3090.yaml",
        "01_baseline_kobart_rtx3090.yaml", "03_high_learning_rate_rtx3090.yaml",
        "04_batch_optimization_rtx3090.yaml",
    ]  # fmt: skip
    assert [e.expected_minutes for e in suite.experiments] == [60, 40, 45, 35, 40]
    configs = checks.load_configs(suite, [e.name for e in suite.experiments], suite_state.TrainArgs())
    assert [configs[e.name].experiment.name for e in suite.experiments] == [e.name for e in suite.experiments]


def test_shipped_main7_suite_is_main5_and_the_two_llms() -> None:
    main5, main7 = schema.load_suite(MAIN5), schema.load_suite(MAIN5.with_name("main7.yaml"))
    assert [e.model_dump() for e in main7.experiments[:5]] == [e.model_dump() for e in main5.experiments]
    assert main7.settings == main5.settings
    assert [Path(e.config).name for e in main7.experiments[5:]] == [
        "05_solar_10.7b_qlora.yaml", "06_exaone3.5_2.4b_qlora.yaml"]
    configs = checks.load_configs(main7, [e.name for e in main7.experiments], suite_state.TrainArgs())
    assert [configs[e.name].experiment.name for e in main7.experiments] == [e.name for e in main7.experiments]


def test_wrapper_script_maps_dash_one_to_one_epoch(tmp_path: Path) -> None:
    script = REPO / "scripts" / "run_main_5_experiments.sh"
    result = subprocess.run([str(script), "-1", "--max-steps", "2", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env=child_env(), timeout=120)  # fmt: skip
    assert_clean_error(result, "--one-epoch and --max-steps: choose one of them")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- selection, retry, resume logic

NAMES = ["mt5", "t5", "kobart", "high_lr", "batch"]


@pytest.mark.parametrize(
    ("only", "skip", "expected"),
    [
        ([], [], NAMES),
        (["kobart", "t5"], [], ["t5", "kobart"]),
        (["kobart,t5"], [], ["t5", "kobart"]),
        ([], ["mt5"], ["t5", "kobart", "high_lr", "batch"]),
        (["t5", "batch"], ["batch"], ["t5"]),
    ],
)
def test_only_and_skip_select_in_suite_order(only: list[str], skip: list[str], expected: list[str]) -> None:
    assert schema.select_names(NAMES, only, skip) == expected


def test_selection_errors() -> None:
    with pytest.raises(DialsumError, match="unknown experiment.*kobert.*the suite has mt5"):
        schema.select_names(NAMES, ["kobert"], [])
    with pytest.raises(DialsumError, match="leave no experiment"):
        schema.select_names(NAMES, ["t5"], ["t5"])


def test_halving_keeps_the_effective_batch() -> None:
    retry = failures.halve_micro_batch(16, 3)
    assert retry is not None and (retry.micro_batch, retry.grad_accum) == (8, 6)
    assert retry.text == "suite: out of memory at micro-batch 16 x 3; retried with 8 x 6 (effective 48 kept)"
    odd = failures.halve_micro_batch(5, 2)
    assert odd is not None and (odd.micro_batch, odd.grad_accum) == (2, 4) and "10 -> 8" in odd.text
    assert failures.halve_micro_batch(1, 8) is None


@pytest.mark.parametrize(
    ("rec", "action"),
    [
        ({"state": "finished", "run_dir": "a/run"}, "skip"),
        ({"state": "running", "run_dir": "a/run"}, "resume"),
        ({"state": "interrupted", "run_dir": "a/run"}, "resume"),
        ({"state": "failed", "run_dir": "a/run", "failure": {"kind": "killed", "message": "-9"}}, "resume"),
        ({"state": "waiting", "run_dir": "a/run"}, "resume"),
        ({"state": "failed", "run_dir": "a/run", "failure": {"kind": "other", "message": "RayError"}}, "resume"),
        ({"state": "failed", "run_dir": "a/run", "failure": {"kind": "data", "message": "x.csv"}}, "resume"),
        ({"state": "failed", "run_dir": "a/run", "failure": {"kind": "oom", "message": "twice"}}, "fresh"),
        ({"state": "failed", "run_dir": None, "failure": {"kind": "timeout", "message": "wait"}}, "fresh"),
        ({"state": "pending", "run_dir": None}, "fresh"),
        ({"state": "skipped", "run_dir": None}, "fresh"),
    ],
)
def test_next_action(rec: dict[str, Any], action: str, tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    run.mkdir(parents=True)
    for name in ("config.yaml", "adaptations.json"):  # what every run writes first
        (run / name).write_text("{}")
    assert suite_state.next_action(ExperimentRecord.model_validate({"name": "a", **rec}), tmp_path) == action


def test_a_run_killed_before_it_wrote_its_config_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "a" / "run").mkdir(parents=True)
    rec = ExperimentRecord(name="a", state="interrupted", run_dir="a/run")
    assert suite_state.next_action(rec, tmp_path) == "fresh"


def test_resume_reuses_the_stored_options_and_takes_new_ones() -> None:
    TrainArgs = suite_state.TrainArgs
    stored = TrainArgs(init="tiny", one_epoch=False, max_steps=5, sets=["a.b=1"], data="/d")
    none_given = {"init": None, "one_epoch": None, "max_steps": None, "sets": [], "data": None}
    assert suite_state.resume_args(stored, none_given) == (stored, [])
    assert suite_state.resume_args(stored, {**none_given, "init": "tiny", "max_steps": 5}) == (stored, [])
    args, changes = suite_state.resume_args(stored, {**none_given, "data": "/fixed"})
    assert args.data == "/fixed" and changes == ["--data: '/d' at the start, '/fixed' now"]
    args, _ = suite_state.resume_args(stored, {**none_given, "one_epoch": True})  # replaces the stored --max-steps
    assert checks.check_train_args(args) == TrainArgs(init="tiny", one_epoch=True, sets=["a.b=1"], data="/d")
    assert stored.max_steps == 5  # the stored options are not changed in place


def test_train_command_orders_overrides_by_precedence(tmp_path: Path) -> None:
    args = suite_state.TrainArgs(init="tiny", max_steps=3, sets=["training.x=cli"], data="/d")
    cmd = process.train_command("c.yaml", ["training.x=entry"], args, tmp_path / "run", ["training.x=retry"],
                                resume=True)
    assert cmd[:5] == [sys.executable, "-m", "dialsum.cli", "train", "c.yaml"]
    assert cmd[cmd.index("--run-dir") + 1] == str(tmp_path / "run") and "--resume" in cmd
    assert cmd[cmd.index("--max-steps") + 1] == "3" and "--one-epoch" not in cmd
    sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
    assert sets == ["training.x=entry", "training.x=cli", "data.dir=/d", "training.x=retry"]


def test_merge_records_keeps_old_state_and_follows_the_suite_order(tmp_path: Path) -> None:
    suite = load_doc(tmp_path, suite_doc(experiments=[
        {"name": "a", "config": BATCH_OPT, "expected_minutes": 1, "label": "A"},
        {"name": "b", "config": BATCH_OPT, "expected_minutes": 2},
    ]))  # fmt: skip
    old = [ExperimentRecord(name="b", state="finished", attempts=1), ExperimentRecord(name="gone", state="failed")]
    merged = suite_state.merge_records(suite, old)
    assert [r.name for r in merged] == ["a", "b", "gone"]
    assert merged[0].state == "pending" and merged[0].label == "A"
    assert merged[1].state == "finished" and merged[1].expected_minutes == 2 and merged[1].attempts == 1


# ---------------------------------------------------------------- progress and checkpoints


def test_train_progress_follows_the_growing_log(tmp_path: Path) -> None:
    jsonl, log = tmp_path / "train_log.jsonl", tmp_path / "suite.log"
    log.write_text("train:  25%|██▌       | 1/4 [00:01<00:03]\r", encoding="utf-8")
    jsonl.write_text(json.dumps({"step": 1, "loss": 5.5}) + "\n" + '{"step": 2, "lo', encoding="utf-8")
    progress = display.TrainProgress(jsonl, log, 0)
    progress.poll()
    assert (progress.step, progress.max_steps, progress.loss) == (1, 4, 5.5)
    with jsonl.open("a", encoding="utf-8") as fh:
        fh.write('ss": 4.25}\n')
    progress.poll()
    assert (progress.step, progress.loss) == (2, 4.25) and progress.steps_text() == "2/4"


# ---------------------------------------------------------------- parallel slots


def overlaps(recs: dict[str, dict[str, Any]]) -> int:
    """The most experiments that ran at the same moment, from their recorded start and finish times."""
    from datetime import datetime

    events = []
    for rec in recs.values():
        events += [(datetime.fromisoformat(rec["started_at"]), 1), (datetime.fromisoformat(rec["finished_at"]), -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # a finish before a start at the same instant
        running += step
        most = max(most, running)
    return most


def environment(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / name / "run" / "environment.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> dict[str, Any]:
    """Three experiments on two CPU slots; two experiments on two GPU ids that this driver is told exist."""
    from dialsum import slots

    base = tmp_path_factory.mktemp("parallel")
    cpu_file = write_suite(base / "cpu.yaml", [entry(n, BATCH_OPT, "training.save_strategy=no") for n in "abc"])
    cpu = run_cli(*suite_args(cpu_file, base / "cpu", small_data, "--max-steps", "4", "--slots", "2"))
    gpu_file = write_suite(base / "gpu.yaml", [entry(n, BATCH_OPT, "training.save_strategy=no") for n in "de"])
    with pytest.MonkeyPatch.context() as patch:  # --gpus is refused where none is counted
        patch.setattr(slots, "visible_gpus", lambda reader=None: 2)
        gpu = runner.run_suite(runner.SuiteOptions(
            str(gpu_file), init="tiny", max_steps=2, out=str(base / "gpu"), sets=[*FAST_SETS, *SMALL_BATCH],
            data=str(small_data), gpus="0,1", live=False))  # fmt: skip
    return {"cpu": cpu, "gpu": gpu, "cpu_out": base / "cpu", "gpu_out": base / "gpu"}


@pytest.mark.slow
def test_cpu_slots_run_side_by_side_and_never_more(parallel: dict[str, Any]) -> None:
    result, out = parallel["cpu"], parallel["cpu_out"]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    recs = records(out)
    assert [recs[n]["state"] for n in "abc"] == ["finished"] * 3
    assert {recs[n]["slot"] for n in "abc"} == {"cpu0", "cpu1"} and overlaps(recs) == 2
    for name in "abc":
        assert environment(out, name)["cuda_visible_devices"] == ""  # no GPU for a CPU slot
        assert "suite: CPU slot shared by 2 experiments: speed.cpu_threads=1" in recs[name]["adaptations"]
        assert config.load(out / name / "run" / "config.yaml").speed.cpu_threads == 1
    assert "2 CPU slot(s), 1 torch thread(s) each" in result.stdout
    finals = {n: json.loads((out / n / "run" / "metrics.json").read_text())["dev"] for n in "abc"}
    assert finals["a"] == finals["b"] == finals["c"]  # the same experiment gives the same result on any slot


@pytest.mark.slow
def test_each_child_sees_only_its_own_gpu(parallel: dict[str, Any]) -> None:
    out = parallel["gpu_out"]
    assert parallel["gpu"] == 0
    recs = records(out)
    assert {recs["d"]["slot"], recs["e"]["slot"]} == {"gpu0", "gpu1"} and overlaps(recs) == 2
    seen = {environment(out, n)["cuda_visible_devices"] for n in "de"}
    assert seen == {"0", "1"} and {tuple(recs[n]["gpus"]) for n in "de"} == {("0",), ("1",)}


@pytest.mark.slow
def test_kill_with_two_running_then_resume_continues_both(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "two.yaml",
                             [entry(n, BATCH_OPT, *SAVE_EVERY_STEP, f"experiment.name={n}") for n in ("x", "y")])
    out = tmp_path / "out"
    cmd = suite_args(suite_file, out, small_data, "--max-steps", "6", "--slots", "2")
    suite = start_suite(cmd, **paused_before_second_checkpoint(tmp_path / "marks", "x", "y"))
    try:
        for name in ("x", "y"):
            wait_for(lambda n=name: (tmp_path / "marks" / f"before-save@{n}").is_file(), 300, f"{name}'s checkpoint",
                     suite)
        running = records(out)
        assert [running[n]["state"] for n in ("x", "y")] == ["running", "running"]
    finally:
        suite.kill()  # SIGKILL: no clean-up; the children die with it (parent-death signal)
        suite.communicate(timeout=60)
    wait_for(lambda: not any(process.pid_alive(running[n]["pid"]) for n in ("x", "y")), 30, "the children to die")
    result = run_cli(*cmd, "--resume")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recs = records(out)
    for name in ("x", "y"):
        assert recs[name]["state"] == "finished" and recs[name]["attempts"] == 2
        log = (out / name / "run" / "train.log").read_text(encoding="utf-8")
        assert re.search(r"resuming from \S*checkpoint-[1-9]", log), log[-1000:]
        assert json.loads((out / name / "run" / "metrics.json").read_text())["steps"] == 6


@pytest.mark.slow
def test_a_two_process_entry_holds_two_slots_and_nothing_overtakes_it(tmp_path: Path, small_data: Path) -> None:
    both = entry("ddp", BATCH_OPT, "training.save_strategy=no")
    both["gpus"] = 2
    suite_file = write_suite(tmp_path / "ddp.yaml", [both, entry("after", BATCH_OPT, "training.save_strategy=no")])
    out = tmp_path / "out"
    result = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "2", "--slots", "2"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    recs = records(out)
    assert recs["ddp"]["slot"] == "cpu0+cpu1" and recs["after"]["slot"] == "cpu0" and overlaps(recs) == 1
    metrics = json.loads((out / "ddp" / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["world_size"] == 2 and metrics["replicas_identical"] is True
    assert "--nproc 2" in (out / "ddp" / "suite.log").read_text(encoding="utf-8")


def test_an_entry_that_needs_more_slots_than_there_are_is_refused(tmp_path: Path, small_data: Path) -> None:
    big = entry("big", BATCH_OPT)
    big["gpus"] = 3
    suite_file = write_suite(tmp_path / "big.yaml", [big])
    result = run_cli(*suite_args(suite_file, tmp_path / "out", small_data, "--slots", "2"))
    assert_clean_error(result, "big: needs 3 cpu slot(s); this run has 2")
    assert not (tmp_path / "out").exists()


def test_a_missing_ray_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from dialsum.suite.backends import ray as ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DialsumError, match=r"Ray is not installed; `pip install -e '\.\[ray\]'`"):
        ray_backend.import_ray()


def test_a_state_file_from_the_earlier_untyped_suite_resumes(tmp_path: Path) -> None:
    old = {  # the shape dialsum wrote before the state was typed (no version, no slot, no pid when idle)
        "suite": "main5", "suite_file": "/x/main5.yaml", "updated": "2026-11-28T10:00:00+00:00",
        "train_args": {"init": "pretrained", "one_epoch": True, "max_steps": None, "sets": [], "data": None},
        "records": [
            {"name": "a", "label": "A", "config": "a.yaml", "state": "finished", "failure": None,
             "expected_minutes": 60, "wall_seconds": 12.5, "attempts": 1, "run_dir": "a/run",
             "memory_csv": "a/memory.csv", "log": "a/suite.log", "adaptations": [], "overrides": [],
             "exit_code": 0, "started_at": "2026-11-28T10:00:00+00:00", "finished_at": "2026-11-28T10:01:00+00:00",
             "memory": {"kind": "rss", "peak_mb": 900.0, "samples": 5, "warnings": 0, "note": "", "csv": "a/memory.csv"},
             "wait": {"waited_s": 0.0, "message": "no GPU"}},
            {"name": "b", "label": "B", "config": "b.yaml", "state": "failed",
             "failure": {"kind": "oom", "message": "CUDA out of memory", "lines": ["x"]},
             "expected_minutes": 40, "wall_seconds": 3.0, "attempts": 2, "run_dir": "b/run"},
        ],
    }  # fmt: skip
    path = tmp_path / "suite_state.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    state = suite_state.read_state(path)
    assert state.version == 2 and state.train_args.one_epoch is True
    assert state.record("a").memory.peak_mb == 900.0 and state.record("b").status_text() == "failed (oom)"
    path.write_text(json.dumps({**old, "records": [{"name": "a", "state": "exploded"}]}), encoding="utf-8")
    with pytest.raises(DialsumError, match=r"not a suite state this dialsum can read \(records\.0\.state"):
        suite_state.read_state(path)


# ---------------------------------------------------------------- tuning and the ensemble


@pytest.mark.slow
def test_entries_tune_after_training_and_the_suite_ends_with_their_ensemble(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "tuned.yaml", [
        {**entry("batch", BATCH_OPT), "tune": {"trials": 2, "dev_rows": 6}},
        {**entry("high_lr", HIGH_LR), "tune": {"trials": 2}},
    ])
    doc = yaml.safe_load(suite_file.read_text(encoding="utf-8"))
    doc["ensemble"] = {"runs": ["batch", "high_lr"], "tuned": True, "candidates": 2}
    suite_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "2"), env=child_env(), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("batch", "high_lr"):
        tuned = json.loads((out / name / "run" / "tune" / "result.json").read_text())
        assert tuned["trials"] == 2 and (out / name / "run" / "submission_tuned.csv").is_file()
    assert (out / "ensemble" / "submission.csv").is_file()
    ensemble = json.loads((out / "ensemble" / "ensemble.json").read_text())
    assert ensemble["tuned"] and [m["name"] for m in ensemble["members"]] == ["kobart_batch_opt", "kobart_high_lr"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Tuned (morph.)" in report and "| ens | MBR ensemble of" in report
    assert "## Generation tuning" in report and "batch/run/tune/optimization_history.png" in report
    assert f"{ensemble['dev_final']:.2f}" in report


def test_an_ensemble_of_unknown_or_untuned_experiments_is_refused(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "bad.yaml", [entry("batch", BATCH_OPT), entry("high_lr", HIGH_LR)])
    doc = yaml.safe_load(suite_file.read_text(encoding="utf-8"))
    doc["ensemble"] = {"runs": ["batch", "nope"]}
    suite_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert_clean_error(run_cli(*suite_args(suite_file, tmp_path / "o", small_data)), "ensemble.runs: unknown experiment(s) nope")
    doc["ensemble"] = {"runs": ["batch", "high_lr"], "tuned": True}
    suite_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert_clean_error(run_cli(*suite_args(suite_file, tmp_path / "o", small_data)), "ensemble.tuned: batch, high_lr has no tune")
    doc["ensemble"] = {"runs": ["batch", "high_lr"]}  # two single candidates: MBR cannot pick
    suite_file.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert_clean_error(run_cli(*suite_args(suite_file, tmp_path / "o", small_data)),
                       "2 runs x ensemble.candidates 1 = 2 candidates", "add ensemble.candidates 2")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- nothing lost, whatever dies


class DoneHandle:
    """A stand-in for an experiment's process that has already exited with `code`."""

    pid, node, gpus, failure = None, "here", "", None

    def __init__(self, code: int) -> None:
        self.code = code

    def started(self) -> bool:
        return True

    def poll(self) -> int:
        return self.code

    def stop(self, grace_s: float) -> None:
        return None

    def wait(self) -> int:
        return self.code

    def log_tail(self, log_path: Path, start: int) -> list[str]:
        return []


class RecordingBackend:
    """Slots without processes: records each command; every attempt ends at once with `code`."""

    local, total, kind = False, 1, "cpu"

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.commands: list[list[str]] = []

    def describe(self) -> str:
        return "recording"

    def take(self, n: int) -> Any:
        from dialsum.slots import Slot

        return Slot(["cpu0"])

    def release(self, slot: Any) -> None:
        return None

    def start(self, cmd: list[str], log_path: Path, log_start: int, slot: Any, need: int, settings: Any) -> DoneHandle:
        self.commands.append(cmd)
        return DoneHandle(self.code)


def fake_run(run: Path, *checkpoints: int) -> Path:
    """A run directory as `train` leaves it: its first files, and complete checkpoints."""
    run.mkdir(parents=True, exist_ok=True)
    for name in rundir.MARKERS:
        (run / name).write_text("{}", encoding="utf-8")
    for step in checkpoints:
        ckpt = run / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return run


def run_recorded(tmp_path: Path, rec: ExperimentRecord, backend: RecordingBackend, **opts: Any) -> Any:
    """The scheduler on one experiment whose record is `rec`, with a backend that runs nothing."""
    suite = load_doc(tmp_path, suite_doc(experiments=[{"name": rec.name, "config": BATCH_OPT, "expected_minutes": 1}]))
    state = suite_state.SuiteState(suite="s", records=[rec])
    suite_runner = runner.SuiteRunner(suite, state, tmp_path, {}, backend, display.LineDisplay(), **opts)
    suite_runner.run([rec.name])
    return suite_runner


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_waiting_experiment_with_checkpoints_resumes_and_nothing_is_deleted(tmp_path: Path) -> None:
    """Saved as `waiting` (the smart wait, or a queued Ray task) when the suite was killed: --resume
    continues it from its checkpoint; it never starts it over in a cleared directory."""
    fake_run(tmp_path / "a" / "run", 100, 500)
    before = all_files(tmp_path / "a")
    rec = ExperimentRecord(name="a", state="waiting", run_dir="a/run", attempts=1)
    assert suite_state.next_action(rec, tmp_path) == "resume"
    backend = RecordingBackend()
    run_recorded(tmp_path, rec, backend)
    assert "--resume" in backend.commands[0]
    assert before <= all_files(tmp_path / "a")  # checkpoint-500 and all


def test_a_fresh_start_over_a_run_moves_it_aside_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(tmp_path / "a" / "run", 3)
    (tmp_path / "a" / "run.1").mkdir()  # an earlier one, already aside
    rec = ExperimentRecord(name="a", state="failed", run_dir="a/run", attempts=2,
                           failure={"kind": "oom", "message": "out of memory twice"})
    assert suite_state.next_action(rec, tmp_path) == "fresh"
    backend = RecordingBackend()
    run_recorded(tmp_path, rec, backend)
    assert "--resume" not in backend.commands[0]
    assert (tmp_path / "a" / "run.2" / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    assert (tmp_path / "a" / "run.1").is_dir() and not (tmp_path / "a" / "run").exists()
    assert "a: a/run moved aside to a/run.2" in capsys.readouterr().out
    assert [(m.source, m.moved_to) for m in rec.moved_aside] == [("a/run", "a/run.2")]


def test_an_incomplete_checkpoint_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", 1)
    (run / "checkpoints" / "checkpoint-2").mkdir()
    (run / "checkpoints" / "checkpoint-2" / "model.safetensors").write_text("half")
    assert suite_state.clear_partial_checkpoints(run) == ["checkpoint-2"]
    assert (run / "checkpoints" / "checkpoint-1").is_dir() and not (run / "checkpoints" / "checkpoint-2").exists()
    assert (run / "incomplete-checkpoints" / "checkpoint-2" / "model.safetensors").read_text() == "half"


def test_the_orphan_check_finds_every_process_of_the_experiment(tmp_path: Path) -> None:
    """A DDP rank of the previous suite names the run directory but was never recorded: refused."""
    run_dir = (tmp_path / "a" / "run").resolve()
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dialsum.cli", "train",
                             "--run-dir", str(run_dir)])
    rec = ExperimentRecord(name="a", state="running", run_dir="a/run", pid=None)
    try:
        wait_for(lambda: str(run_dir) in " ".join(psutil_cmdline(rank.pid)), 10, "the stand-in rank")
        with pytest.raises(DialsumError, match=rf"a: .*still running \(pid {rank.pid}\)"):
            process.check_no_orphan(rec, tmp_path, wait_s=0)
    finally:
        rank.kill()
        rank.wait()
    process.check_no_orphan(rec, tmp_path, wait_s=0)  # gone: nothing to refuse


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def dialsum_tree(run_dir: Path) -> list[int]:
    """Every live process whose command line names `run_dir`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(run_dir) in (proc.info["cmdline"] or []) and process.pid_alive(proc.info["pid"]):
            found.append(proc.info["pid"])
    return found


@pytest.mark.slow
def test_killing_the_suite_takes_every_process_of_a_ddp_entry_with_it(tmp_path: Path, small_data: Path) -> None:
    """SIGKILL the driver while a `gpus: 2` entry trains on two CPU slots (gloo): the launcher, torchrun
    and both ranks are gone within seconds."""
    both = entry("ddp", BATCH_OPT, "training.save_strategy=no")
    both["gpus"] = 2
    suite_file = write_suite(tmp_path / "ddp.yaml", [both])
    out = tmp_path / "out"
    suite = start_suite(suite_args(suite_file, out, small_data, "--max-steps", "2000", "--slots", "2"))
    run_dir, log = (out / "ddp" / "run").resolve(), out / "ddp" / "suite.log"
    try:
        wait_for(lambda: log.is_file() and re.search(r"train:\s+\d+%", log.read_text(errors="replace")), 300,
                 "the ranks to train", suite)
        tree = dialsum_tree(run_dir)
        assert len(tree) == 4, tree  # launcher, torchrun, two ranks
    finally:
        suite.kill()
        suite.communicate(timeout=60)
    try:
        wait_for(lambda: not dialsum_tree(run_dir), 20, "every process of the entry to end")
    finally:
        for pid in dialsum_tree(run_dir):
            os.kill(pid, signal.SIGKILL)


def test_gpus_where_no_gpu_is_visible_is_refused_pointing_to_slots(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "g.yaml", [entry("one", BATCH_OPT)])
    env = {k: v for k, v in child_env().items() if k != "CUDA_VISIBLE_DEVICES"}
    result = subprocess.run([sys.executable, "-m", "dialsum.cli", *suite_args(suite_file, tmp_path / "out", small_data,
                                                                              "--gpus", "0")],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    if "this machine shows" in result.stderr and "no GPU" not in result.stderr:
        pytest.skip("this machine has a GPU")
    assert_clean_error(result, "--gpus 0: this machine shows no GPU", "--slots N")
    assert not (tmp_path / "out").exists()


def test_plan_slots_refuses_gpus_that_nothing_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from dialsum import slots

    class NoGpu:
        def visible_count(self) -> int:
            return 0

    monkeypatch.setattr(slots, "_cuda_count", lambda: 0)
    with pytest.raises(DialsumError, match=r"--gpus 0,1: this machine shows no GPU .*--slots N"):
        slots.plan_slots("0,1", None, cpu_cores=2, reader=NoGpu())


def test_restart_starts_a_named_experiment_afresh_its_old_run_moved_aside(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "a" / "run", 7)
    (run / "metrics.json").write_text("{}", encoding="utf-8")
    rec = ExperimentRecord(name="a", state="finished", run_dir="a/run", attempts=1)
    backend = RecordingBackend()
    run_recorded(tmp_path, rec, backend, restart={"a"})
    assert len(backend.commands) == 1 and "--resume" not in backend.commands[0]
    assert (tmp_path / "a" / "run.1" / "checkpoints" / "checkpoint-7").is_dir()
    assert (tmp_path / "a" / "run.1" / "metrics.json").is_file()
    assert [(m.moved_to, m.reason) for m in rec.moved_aside] == [("a/run.1", "--restart")]


def test_restart_names_are_checked_before_anything_runs(tmp_path: Path, small_data: Path) -> None:
    from dialsum.suite.opening import restart_names

    suite_file = write_suite(tmp_path / "r.yaml", [entry("one", BATCH_OPT), entry("two", BATCH_OPT)])
    result = run_cli(*suite_args(suite_file, tmp_path / "out", small_data, "--resume", "--restart", "one,nope"))
    assert_clean_error(result, "--restart: unknown experiment(s) nope; the suite has one, two")
    assert not (tmp_path / "out").exists()
    opts = runner.SuiteOptions(str(suite_file), restart=["one"])
    with pytest.raises(DialsumError, match="--restart goes with --resume"):
        restart_names(opts, ["one", "two"], ["one", "two"])
    opts.resume = True
    with pytest.raises(DialsumError, match="--restart one: left out of this run by --only/--skip"):
        restart_names(opts, ["one", "two"], ["two"])
    assert restart_names(opts, ["one", "two"], ["one", "two"]) == {"one"}


LIFELINE_PARENT = """
import sys, time
from dialsum import lifeline
child = lifeline.start_child([sys.executable, "-c", {child!r}])
print(child.pid, flush=True)
{then}
"""
SLEEPER = "import time; time.sleep(120)"
ON_SIGINT = ("import signal, sys, time\n"
             "def stop(signum, frame):\n"
             "    print('child got', signal.Signals(signum).name, flush=True); sys.exit(7)\n"
             "signal.signal(signal.SIGINT, stop)\n"
             "time.sleep(120)")


def test_lifeline_a_child_dies_with_its_killed_parent() -> None:
    """What the tune workers, the ensemble step and every experiment get: SIGKILL the parent, the child ends."""
    script = LIFELINE_PARENT.format(child=SLEEPER, then="time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=child_env())
    child = int(parent.stdout.readline())
    assert process.pid_alive(child) and os.getpgid(child) == child  # a session of its own
    parent.kill()
    parent.wait()
    wait_for(lambda: not process.pid_alive(child), 10, "the child to die with its parent")


def test_lifeline_passes_sigint_on_and_waits_for_the_child() -> None:
    """The `--nproc` launcher: a Ctrl-C reaches torchrun through it, and it waits for torchrun to stop."""
    script = LIFELINE_PARENT.format(child=ON_SIGINT, then="with lifeline.forwarding(child):\n    sys.exit(child.wait())")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=child_env())
    int(parent.stdout.readline())
    time.sleep(1.0)  # the child's handler is installed
    parent.send_signal(signal.SIGINT)
    out, _ = parent.communicate(timeout=30)
    assert "child got SIGINT" in out and parent.returncode == 7


@pytest.mark.slow
def test_chaos_a_kill_mid_checkpoint_resumes_to_the_uninterrupted_result() -> None:
    """bench/chaos_suite.py at one kill point: the suite SIGKILLed while a checkpoint is half-written."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "chaos_suite.py"), "--points", "mid-save"],
                          capture_output=True, text=True, env=child_env(), timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kill_points"] == result["survived"] == 1, proc.stdout
    assert (result["lost_checkpoints"], result["duplicate_runs"], result["orphans"]) == (0, 0, 0), proc.stdout
    assert result["results_equal"] is True, proc.stdout
    out = Path(result["out"]) / "mid-save" / "a" / "run"
    assert list((out / "incomplete-checkpoints").glob("checkpoint-*")), "no checkpoint was caught half-written"
    shutil.rmtree(result["out"], ignore_errors=True)


def test_lifeline_a_child_can_be_stopped_gently_even_when_its_parent_ignores_sigint() -> None:
    """A Ray worker blocks SIGINT (a shell's background job ignores it), and both pass through exec: not to
    the children dialsum starts."""
    python_default = ("import sys, time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n"
                      "    print('child got SIGINT', flush=True)\n    sys.exit(7)")
    script = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
              + LIFELINE_PARENT.format(child=python_default, then="sys.exit(child.wait(timeout=20))"))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=child_env())
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    os.killpg(child, signal.SIGINT)
    try:
        out, _ = parent.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)
    assert "child got SIGINT" in out and parent.returncode == 7


def test_an_ensemble_is_rebuilt_only_when_a_run_changed_after_it(tmp_path: Path) -> None:
    runs = [tmp_path / n / "run" for n in ("a", "b")]
    for run in runs:
        run.mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
    target = tmp_path / "ensemble"
    assert not ensemble_step.up_to_date(target, runs, tuned=False)  # never finished
    target.mkdir()
    (target / "ensemble.json").write_text("{}")
    assert ensemble_step.up_to_date(target, runs, tuned=False)
    assert not ensemble_step.up_to_date(target, runs, tuned=True)  # no tune results to be built from
    later = (target / "ensemble.json").stat().st_mtime + 5
    os.utime(runs[1] / "metrics.json", (later, later))  # b trained again (--restart) after the ensemble
    assert not ensemble_step.up_to_date(target, runs, tuned=False)
