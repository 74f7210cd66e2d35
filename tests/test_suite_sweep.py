"""A suite entry that sweeps its training settings, then trains the best (`sweep:` in a suite file).

    pytest tests/test_suite_sweep.py

The schema and the up-front checks, the child's command (fresh, resumed, after a finished sweep), its program
(the sweep, then exec of the training), the out-of-memory retry and `--restart` of such an entry, and one real
suite whose sweep entry sweeps two tiny trials and trains the best.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import assert_clean_error, run_cli
from test_suite import BATCH_OPT, child_env, entry, suite_args, wait_for, write_suite

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.suite import process, schema, sweep_entry
from dialsum.suite.runner import Job, SuiteRunner
from dialsum.suite.state import ExperimentRecord, Failure, SuiteState, TrainArgs

PY = sys.executable


def sweep_doc(tmp_path: Path, **item: Any) -> Path:
    path = tmp_path / "s.yaml"
    doc = {"name": "s", "experiments": [{"name": "a", "config": BATCH_OPT, "expected_minutes": 1, **item}]}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the schema and the up-front checks


@pytest.mark.parametrize(("item", "expected"), [
    ({"sweep": {"trials": 0}}, "experiments.0.sweep.trials=0: Input should be greater than or equal to 1"),
    ({"sweep": {"trials": 2, "pruner": "asha"}}, "experiments.0.sweep.pruner='asha': Input should be 'median', "
                                                 "'hyperband' or 'none'"),
    ({"sweep": {"trials": 2, "dev_rows": 0}}, "experiments.0.sweep.dev_rows=0"),
    ({"sweep": {"trials": 2, "trialz": 3}}, "experiments.0.sweep.trialz: unknown key"),
    ({"sweep": {"pruner": "none"}}, "experiments.0.sweep.trials: required"),
    ({"sweep": 20}, "experiments.0.sweep=20"),
    ({"sweep": {"trials": 2}, "gpus": 2}, "experiments.0: gpus: 2 with sweep: a sweep entry runs its trials one at "
                                          "a time on one slot"),
])  # fmt: skip
def test_a_bad_sweep_value_names_its_key(tmp_path: Path, item: dict[str, Any], expected: str) -> None:
    with pytest.raises(DialsumError) as err:
        schema.load_suite(sweep_doc(tmp_path, **item))
    assert expected in str(err.value) and str(tmp_path / "s.yaml") in str(err.value)


def test_a_sweep_entry_loads_with_the_sweep_s_defaults(tmp_path: Path) -> None:
    swept = schema.load_suite(sweep_doc(tmp_path, sweep={"trials": 20})).experiments[0].sweep
    assert swept is not None and (swept.trials, swept.dev_rows, swept.pruner) == (20, None, "median")


def test_a_bad_sweep_is_one_line_exit_2_before_anything_is_written(tmp_path: Path, small_data: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("suite", str(sweep_doc(tmp_path, sweep={"trials": 0})), "--out", str(out), "--init", "tiny")
    assert_clean_error(proc, "experiments.0.sweep.trials=0")
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_sweep_that_cannot_run_is_refused_before_the_first_experiment(tmp_path: Path, small_data: Path) -> None:
    """The sweep's own up-front checks (its space, its dev split) for sweep entries only."""
    not_dividing = "sweep.per_device_train_batch_size=[3]"  # the effective batch is 4 x 1
    suite_file = write_suite(tmp_path / "pre.yaml", [
        entry("plain", BATCH_OPT, not_dividing),  # no sweep: its sweep section is not used
        {**entry("space", BATCH_OPT, not_dividing), "sweep": {"trials": 2}},
        {**entry("rows", BATCH_OPT), "sweep": {"trials": 2, "dev_rows": 50}},
    ])  # fmt: skip
    out = tmp_path / "out"
    proc = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "2"))
    assert_clean_error(proc, "2 of 3 experiment(s) cannot run; nothing was run",
                       "space: sweep.per_device_train_batch_size: the micro-batch 3 does not divide the effective batch 4",
                       "rows: sweep.dev_rows 50: dev has 12 rows")
    assert "plain:" not in proc.stderr and not out.exists()


def test_the_shipped_sweep_then_five_suite_sweeps_kobart_then_lists_main5() -> None:
    suites = Path(__file__).resolve().parents[1] / "configs" / "suites"
    swept, main5 = schema.load_suite(suites / "sweep_then_five.yaml"), schema.load_suite(suites / "main5.yaml")
    first = swept.experiments[0]
    assert first.sweep is not None and first.sweep.trials == 20 and first.config.endswith("01_baseline_kobart_rtx3090.yaml")
    assert [e.model_dump() for e in swept.experiments[1:]] == [e.model_dump() for e in main5.experiments]
    assert swept.settings == main5.settings
    from dialsum.suite import checks

    configs = checks.load_configs(swept, [e.name for e in swept.experiments], TrainArgs())
    assert configs[first.name].sweep is not None
    checks.check_experiments(swept, [first.name], TrainArgs(init="tiny", max_steps=20))  # its space, up front


def test_config_help_of_the_suite_file_shows_the_sweep_section() -> None:
    from dialsum.confighelp import explain

    text = explain("experiments.sweep", suite=True)
    assert text.startswith("[experiments.sweep]") and "experiments.sweep.trials" in text
    assert "allowed:  one of median, hyperband, none" in explain("experiments.sweep.pruner", suite=True)


# ---------------------------------------------------------------- the child's command


def split_chain(cmd: list[str]) -> tuple[list[str], list[str]]:
    assert cmd[:3] == [PY, "-m", "dialsum.suite.sweep_entry"], cmd
    at = cmd.index(sweep_entry.THEN)
    return cmd[3:at], cmd[at + 1:]


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def sets(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]


def test_a_sweep_entry_sweeps_then_trains_best_yaml_and_resumes_the_sweep_it_started(tmp_path: Path) -> None:
    item = schema.SuiteEntry(name="swept", config="c.yaml", expected_minutes=1, set=["training.x=entry"],
                             sweep={"trials": 3, "dev_rows": 6, "pruner": "hyperband"})
    args = TrainArgs(init="tiny", max_steps=4, sets=["training.y=cli"], data="/d")
    exp = tmp_path / "swept"
    extra = ["speed.cpu_threads=1", "training.per_device_train_batch_size=2"]  # the slot's, the OOM retry's
    sweep, train = split_chain(sweep_entry.entry_command(item, args, exp, extra, resume=False, threads=1))
    assert sweep[:5] == [PY, "-m", "dialsum.cli", "sweep", "c.yaml"]
    assert [option(sweep, o) for o in ("--trials", "--out", "--pruner", "--dev-rows", "--init", "--max-steps",
                                       "--data", "--cpu-threads")] == \
        ["3", str(exp / "sweep"), "hyperband", "6", "tiny", "4", "/d", "1"]
    assert sets(sweep) == ["training.x=entry", "training.y=cli"] and "--resume" not in sweep
    assert train[:5] == [PY, "-m", "dialsum.cli", "train", str(exp / "sweep" / "best.yaml")]
    assert option(train, "--run-dir") == str(exp / "run") and "--resume" not in train
    assert (option(train, "--init"), option(train, "--max-steps")) == ("tiny", "4")
    assert sets(train) == ["data.dir=/d", *extra]  # best.yaml holds the sets: its swept values stay

    (exp / "sweep").mkdir(parents=True)
    (exp / "sweep" / "sweep.json").write_text("{}")  # a started sweep: continued, its finished trials kept
    sweep, _ = split_chain(sweep_entry.entry_command(item, args, exp, extra, resume=False, threads=None))
    assert "--resume" in sweep and "--cpu-threads" not in sweep

    (exp / "sweep" / "result.json").write_text("{}")  # a finished sweep: not run again, its best.yaml trained
    train = sweep_entry.entry_command(item, args, exp, extra, resume=True, threads=1)
    assert train[:5] == [PY, "-m", "dialsum.cli", "train", str(exp / "sweep" / "best.yaml")] and "--resume" in train
    plain = item.model_copy(update={"sweep": None})
    assert sweep_entry.entry_command(plain, args, exp, extra, resume=False, threads=1) == \
        process.train_command("c.yaml", ["training.x=entry"], args, exp / "run", extra, False)


def test_the_child_runs_the_sweep_then_becomes_the_training_in_the_same_process() -> None:
    """exec keeps the pid (and with it the group, the session and the parent-death signal) that the suite
    recorded, watches and stops."""
    cmd = [PY, "-m", "dialsum.suite.sweep_entry", PY, "-c", "print('swept', flush=True)", sweep_entry.THEN,
           PY, "-c", "import os; print('trained in', os.getpid())"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert out.splitlines() == ["swept", f"suite: the sweep finished; training its best settings: {' '.join(cmd[-3:])}",
                                f"trained in {child.pid}"]


def test_a_failed_or_stopped_sweep_never_trains() -> None:
    failed = [PY, "-m", "dialsum.suite.sweep_entry", PY, "-c", "import sys; sys.exit(3)", sweep_entry.THEN,
              PY, "-c", "print('trained')"]
    proc = subprocess.run(failed, capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 3 and "trained" not in proc.stdout
    on_sigint = ("import signal, sys, time\nsignal.signal(signal.SIGINT, lambda s, f: sys.exit(130))\n"
                 "print('ready', flush=True)\ntime.sleep(60)")
    stopped = [PY, "-m", "dialsum.suite.sweep_entry", PY, "-c", on_sigint, sweep_entry.THEN, PY, "-c", "print('trained')"]
    child = subprocess.Popen(stopped, stdout=subprocess.PIPE, text=True, env=child_env(), start_new_session=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    os.killpg(child.pid, signal.SIGINT)  # as the suite stops an entry: its group; the sweep has a session of its own
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 130 and "trained" not in out


# ---------------------------------------------------------------- the runner: out-of-memory retry, --restart, orphans


def runner_for(tmp_path: Path, events: list[str]) -> tuple[SuiteRunner, schema.SuiteEntry, ExperimentRecord]:
    item = schema.SuiteEntry(name="swept", config=BATCH_OPT, expected_minutes=1, sweep={"trials": 2})
    suite = schema.SuiteFile(name="s", experiments=[item])
    rec = ExperimentRecord(name="swept", run_dir="swept/run")
    state = SuiteState(suite="s", records=[rec])
    display = SimpleNamespace(event=events.append)
    return SuiteRunner(suite, state, tmp_path, {"swept": config.load(BATCH_OPT)}, None, display), item, rec


def test_the_out_of_memory_retry_of_a_sweep_entry_halves_best_yaml_s_micro_batch(tmp_path: Path) -> None:
    best = tmp_path / "swept" / "sweep" / "best.yaml"
    best.parent.mkdir(parents=True)
    best.write_text(f"inherit: {BATCH_OPT}\ntraining:\n  per_device_train_batch_size: 8\n"
                    "  gradient_accumulation_steps: 2\n", encoding="utf-8")  # the config itself: 16 x 4
    runner, item, rec = runner_for(tmp_path, events := [])
    job = Job(rec, item, None, None, None, 0, None)  # type: ignore[arg-type]
    assert runner._oom_retry(job, Failure(kind="oom", message="CUDA out of memory"))
    assert rec.overrides == ["training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=4"]
    assert "micro-batch 8 x 2; retried with 4 x 4" in events[-1]


def test_restart_moves_a_sweep_entry_s_sweep_aside_and_a_fresh_start_keeps_it(tmp_path: Path) -> None:
    runner, _, rec = runner_for(tmp_path, events := [])
    sweep = tmp_path / "swept" / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "trials.csv").write_text("number\n0\n")
    run_dir, memory = tmp_path / "swept" / "run", tmp_path / "swept" / "memory.csv"
    runner._prepare_dirs(rec, run_dir, memory, resume=False, fresh_reason="a fresh start: no run to continue")
    assert sweep.is_dir()  # killed while sweeping: the sweep continues
    runner._prepare_dirs(rec, run_dir, memory, resume=False, fresh_reason="--restart")
    assert not sweep.exists() and (tmp_path / "swept" / "sweep.1" / "trials.csv").is_file()
    assert [a.moved_to for a in rec.moved_aside] == ["swept/sweep.1"]
    assert "swept: swept/sweep moved aside to swept/sweep.1 (--restart)" in events


def test_the_orphan_check_finds_a_sweep_entry_s_sweep(tmp_path: Path) -> None:
    """The sweep runs in a session of its own and never names the run directory: it names the entry's folder."""
    out = (tmp_path / "swept" / "sweep").resolve()
    stand_in = subprocess.Popen([PY, "-c", "import time; time.sleep(60)", "dialsum.cli", "sweep", "--out", str(out)],
                                start_new_session=True)
    rec = ExperimentRecord(name="swept", state="running", run_dir="swept/run")
    try:
        wait_for(lambda: stand_in.pid in process.experiment_processes(rec, tmp_path), 10, "the stand-in sweep")
        with pytest.raises(DialsumError, match=rf"swept: .*still running \(pid {stand_in.pid}\)"):
            process.check_no_orphan(rec, tmp_path, wait_s=0)
        other = ExperimentRecord(name="swept2", state="running", run_dir="swept2/run")  # a name it begins with
        assert stand_in.pid not in process.experiment_processes(other, tmp_path)
    finally:
        stand_in.kill()
        stand_in.wait()


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_suite_sweeps_an_entry_then_trains_its_best_yaml_as_its_run(tmp_path: Path, small_data: Path) -> None:
    suite_file = write_suite(tmp_path / "swept.yaml", [
        {**entry("swept", BATCH_OPT, "training.save_strategy=no"), "sweep": {"trials": 2, "pruner": "none"}},
    ])  # fmt: skip
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_cli(*suite_args(suite_file, out, small_data, "--max-steps", "2"), env=child_env(), timeout=600)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep = out / "swept" / "sweep"
    assert (sweep / "best.yaml").is_file() and (sweep / "report.md").is_file()
    rows = (sweep / "trials.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and all(",COMPLETE," in row for row in rows[1:])
    run = out / "swept" / "run"
    assert (run / "metrics.json").is_file()
    best = config.load(sweep / "best.yaml")
    trained = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    for section, key in [("training", "per_device_train_batch_size"), ("training", "gradient_accumulation_steps"),
                         ("training", "warmup_ratio"), ("training", "weight_decay"),
                         ("training", "label_smoothing_factor"), ("experiment", "name")]:
        assert trained[section][key] == getattr(getattr(best, section), key), (section, key)
    log = (out / "swept" / "suite.log").read_text(encoding="utf-8")
    assert log.count("dialsum.cli sweep") == 1 and "training its best settings" in log
    assert "--cpu-threads" not in log  # one CPU slot: the whole machine, as a training child
    state = json.loads((out / "suite_state.json").read_text(encoding="utf-8"))
    assert state["records"][0]["state"] == "finished"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| 1 | Swept | " in report and "Training settings from dialsum sweep (trial " in report  # best.yaml's run
    print(f"suite with a 2-trial sweep entry: {took:.1f} s")


def test_the_live_table_shows_a_sweep_entry_s_trials_then_its_training(tmp_path: Path) -> None:
    from dialsum.suite.display import TrainProgress

    def training() -> TrainProgress:
        return TrainProgress(tmp_path / "run" / "train_log.jsonl", tmp_path / "suite.log", 0)

    plain = schema.SuiteEntry(name="p", config=BATCH_OPT, expected_minutes=1)
    assert isinstance(sweep_entry.progress(plain, tmp_path, training()), TrainProgress)
    swept = schema.SuiteEntry(name="s", config=BATCH_OPT, expected_minutes=1, sweep={"trials": 4})
    progress = sweep_entry.progress(swept, tmp_path, training())
    progress.poll()
    assert progress.steps_text() == "sweep 0/4"
    trials = tmp_path / "sweep" / "trials.csv"
    trials.parent.mkdir()
    trials.write_text("number,state,value,learning_rate\n0,COMPLETE,21.5,1e-4\n1,PRUNED,,3e-4\n"
                      "2,COMPLETE,23.25,5e-5\n3,RUNNING,,2e-4\n", encoding="utf-8")
    progress.poll()
    assert progress.steps_text() == "sweep 3/4, best 23.25"
    trials.write_text("number,state,value\n0,COMPLETE,not a number\n", encoding="utf-8")  # edited by hand
    progress.poll()
    assert progress.steps_text() == "sweep 3/4, best 23.25"  # kept, and read again at the next change
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_log.jsonl").write_text(json.dumps({"step": 5, "loss": 3.5}) + "\n", encoding="utf-8")
    progress.poll()
    assert progress.steps_text() == "5" and progress.loss == 3.5  # its best settings train
