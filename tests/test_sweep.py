"""`dialsum sweep`: the space, its up-front checks, the schedule, the pruner's decisions, the driver (with a
scripted backend), kill safety, and one real sweep shared by the end-to-end tests."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from conftest import FAST, assert_clean_error, run_cli

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.suite.state import TrainArgs
from dialsum.sweep import checks, driver, options, study
from dialsum.sweep.driver import SweepDriver, SweepPlan
from dialsum.sweep.schedule import plan_schedule, trial_examples
from dialsum.sweep.space import build_space, trial_config
from dialsum.sweep.trials import EvalReader

CONFIGS = Path("configs/experiments")
KOBART = CONFIGS / "01_baseline_kobart_rtx3090.yaml"  # LoRA, 16 x 3 = 48
BATCH_OPT = CONFIGS / "04_batch_optimization_rtx3090.yaml"  # full fine-tuning, 16 x 4 = 64
def device(cuda: bool = False, memory_mb: int | None = None) -> Any:
    """This machine, or a GPU of `memory_mb` without bf16 (so that transformers builds its arguments here)."""
    from dialsum.device import DeviceInfo

    return DeviceInfo(cuda_available=cuda, device_name="test GPU" if cuda else None, device_count=int(cuda),
                      total_memory_mb=memory_mb, compute_capability=None, bf16_supported=False, tf32_supported=False,
                      cpu_cores=64 if cuda else 2, bitsandbytes_available=True)


ONLY_LR = ["sweep.warmup_ratio=[]", "sweep.weight_decay=[]", "sweep.label_smoothing_factor=[]",
           "sweep.num_train_epochs=[]", "sweep.per_device_train_batch_size=[]"]


def load(path: Path, *sets: str) -> config.ExperimentConfig:
    return config.load(path, list(sets))


# ---------------------------------------------------------------- the space


def test_the_default_space_holds_the_config_s_own_settings_and_lora_only_where_it_trains_lora():
    space = build_space(load(KOBART))
    names = space.names
    assert {"learning_rate", "warmup_ratio", "num_train_epochs", "lora_rank", "lora_alpha", "lora_dropout"} <= set(names)
    assert space.own["lora_rank"] == 192 and 192 in next(d for d in space.dims if d.name == "lora_rank").choices
    lr = next(d for d in space.dims if d.name == "learning_rate")
    assert lr.log and lr.low <= 6e-5 <= lr.high
    assert not {"lora_rank", "lora_alpha", "lora_dropout"} & set(build_space(load(BATCH_OPT)).names)


def test_lora_values_for_a_config_without_lora_are_refused():
    with pytest.raises(DialsumError, match=r"sweep.lora_rank: the config trains no LoRA"):
        build_space(load(BATCH_OPT, "sweep.lora_rank=[8,16]"))


def test_a_range_is_widened_to_the_config_s_own_value_and_a_log_range_cannot_hold_zero():
    space = build_space(load(KOBART, "sweep.learning_rate=[1e-4, 2e-4]"))
    lr = next(d for d in space.dims if d.name == "learning_rate")
    assert (lr.low, lr.high, lr.log) == (6e-5, 2e-4, False)
    with pytest.raises(DialsumError, match=r"sweep.weight_decay: a log range cannot hold the config's own value 0"):
        build_space(load(KOBART, "sweep.weight_decay={low: 1e-4, high: 0.1, log: true}"))


@pytest.mark.parametrize(("setting", "needle"), [
    ("sweep.learning_rate=[1e-5]", "give [low, high]"),
    ("sweep.learning_rate={low: 1e-3, high: 1e-5}", "low must not exceed high"),
    ("sweep.warmup_ratio=[0, 1.5]", "is not a valid training.warmup_ratio"),
    ("sweep.lora_rank=[0, 8]", "is not a valid lora.lora_rank"),
    ("sweep.effective_batch=[0]", "each must be at least 1"),
])
def test_a_value_its_section_refuses_is_refused_when_the_config_loads(setting, needle):
    with pytest.raises(DialsumError, match=re.escape(needle)):
        load(KOBART, setting)


def test_flat_training_keys_still_go_to_training_beside_the_sweep_section():
    cfg = config.validate_dict({"model": {"name": "digit82/kobart-summarization"}, "learning_rate": 1e-4,
                                "lora_rank": 8})
    assert cfg.training.learning_rate == 1e-4 and cfg.lora.lora_rank == 8
    assert cfg.sweep.learning_rate is not None and cfg.sweep.learning_rate.low == 1e-5  # untouched


def test_config_help_shows_each_range_s_default_values():
    from dialsum.confighelp import explain

    assert "default:  {low: 1e-05, high: 0.0003, log: true}" in explain("sweep.learning_rate")
    assert "default:  {low: 0.0, high: 0.1, log: false}" in explain("sweep.warmup_ratio")
    assert "type:     range: [low, high] or {low, high, log} or null" in explain("sweep.lora_dropout")


def test_the_epochs_are_left_out_where_the_trial_length_is_fixed():
    space = build_space(load(BATCH_OPT), "--max-steps 60")
    assert "num_train_epochs" not in space.names
    assert any("--max-steps 60" in why for why in space.left_out)


def test_the_micro_batch_moves_with_the_accumulation_at_the_config_s_effective_batch():
    cfg = load(BATCH_OPT)  # 16 x 4 = 64
    space = build_space(cfg)
    assert space.micro_batches() == [16, 8, 32] and space.effective_batches() == [64]
    for micro in space.micro_batches():
        trial = trial_config(cfg, space, {**space.own, "per_device_train_batch_size": micro})
        assert trial.effective_batch == 64 and trial.training.per_device_train_batch_size == micro
    wider = build_space(load(BATCH_OPT, "sweep.effective_batch=[32, 128]", "sweep.per_device_train_batch_size=[8]"))
    assert wider.effective_batches() == [64, 32, 128]
    trial = trial_config(cfg, wider, {**wider.own, "per_device_train_batch_size": 8, "effective_batch": 128})
    assert (trial.training.per_device_train_batch_size, trial.training.gradient_accumulation_steps) == (8, 16)


def test_a_micro_batch_that_does_not_divide_the_effective_batch_is_refused():
    with pytest.raises(DialsumError, match=r"micro-batch 24 does not divide the effective batch 64"):
        build_space(load(BATCH_OPT, "sweep.per_device_train_batch_size=[24]"))
    with pytest.raises(DialsumError, match=r"micro-batch 16 \(the config's own.*does not divide the effective batch 40"):
        build_space(load(BATCH_OPT, "sweep.effective_batch=[40]"))


def test_an_empty_space_is_refused():
    empty = ["sweep.learning_rate=[]", *ONLY_LR]
    with pytest.raises(DialsumError, match="the search space is empty"):
        build_space(load(BATCH_OPT, *empty))


# ---------------------------------------------------------------- up-front checks


def test_every_value_passes_validate_s_rules_and_the_cpu_says_memory_is_not_checked():
    cfg = load(BATCH_OPT, *FAST)
    notes = checks.check_space(cfg, build_space(cfg), "tiny", device())
    assert any("not checked" in note and "no GPU" in note for note in notes)


def test_a_micro_batch_over_the_gpu_s_memory_estimate_is_refused_before_any_trial(tmp_path):
    small_gpu = device(cuda=True, memory_mb=6000)
    cfg = load(BATCH_OPT)  # full-size KoBART: micro-batch 32 does not fit 6 GB by the estimate
    space = build_space(cfg)
    with pytest.raises(DialsumError, match=r"the highest corner.*per_device_train_batch_size=32.*more than this "
                                           r"test GPU's 6 GB"):
        checks.check_space(cfg, space, "random", small_gpu)
    fits = checks.check_space(cfg, build_space(load(BATCH_OPT, "sweep.per_device_train_batch_size=[]")), "random",
                              dataclasses.replace(small_gpu, total_memory_mb=80_000))
    assert any("within this test GPU's" in note for note in fits)


def test_the_corners_are_the_lowest_and_highest_value_of_each_dimension():
    space = build_space(load(KOBART))
    corners = checks.corners(space)
    assert corners["highest"]["lora_rank"] == 256 and corners["lowest"]["lora_rank"] == 16
    assert corners["highest"]["per_device_train_batch_size"] == 16  # 32 does not divide 48
    assert corners["lowest"]["learning_rate"] == pytest.approx(1e-5)
    singles = checks.single_values(space)
    assert {"lora_rank": 256} in singles and {"per_device_train_batch_size": 8, "effective_batch": 48} in singles


# ---------------------------------------------------------------- the schedule


def test_the_sweep_evaluates_every_trial_four_times_at_steps_every_effective_batch_shares():
    cfg = load(KOBART)  # 48
    space = build_space(cfg, "--max-steps 60")
    schedule = plan_schedule(cfg, space, trial_examples(cfg, space, 2000, 60, False))
    assert schedule.eval_steps(48) == 15
    assert "training.eval_steps=15" in schedule.overrides(48) and "training.save_steps=15" in schedule.overrides(48)
    wider = build_space(load(KOBART, "sweep.effective_batch=[96]"), "--max-steps 60")
    schedule = plan_schedule(cfg, wider, trial_examples(cfg, wider, 2000, 60, False))
    # both batches evaluate after the same examples, and report them at the same step
    assert schedule.eval_steps(48) * 48 == schedule.eval_steps(96) * 96
    assert schedule.step(schedule.eval_steps(96), 96) == schedule.step(schedule.eval_steps(48), 48)


def test_a_config_that_evaluates_every_n_steps_keeps_its_interval():
    cfg = load(KOBART, "training.eval_strategy=steps", "training.eval_steps=25", "training.save_strategy=steps",
               "training.save_steps=25")
    space = build_space(cfg)
    schedule = plan_schedule(cfg, space, trial_examples(cfg, space, 2000, None, False))
    assert schedule.overrides(48) == [] and schedule.eval_steps(48) == 25


# ---------------------------------------------------------------- the study and the pruner


def scripted_study(pruner: str = "median") -> Any:
    import optuna

    cfg = load(KOBART)
    space = build_space(cfg, "--max-steps 60")
    schedule = plan_schedule(cfg, space, trial_examples(cfg, space, 2000, 60, False))
    return study.open_study(optuna.storages.InMemoryStorage(), Path("/tmp/x"), 42, 10,
                            study.make_pruner(pruner, schedule))


def finished_trial(s: Any, scores: list[float]) -> None:
    trial = s.ask()
    for step, value in zip((15, 30, 45, 60), scores, strict=False):
        trial.report(value, step)
    s.tell(trial, scores[-1])


def test_the_median_pruner_stops_a_trial_below_the_finished_trials_median_never_trial_0():
    s = scripted_study()
    zero = s.ask()  # trial 0: the reference, never pruned
    zero.report(0.0, 15)
    finished_trial(s, [10, 20, 30, 40])
    alone = s.ask()
    alone.report(1.0, 15)
    assert not study.prune_now(alone, alone.number)  # one finished trial: too few to compare with
    finished_trial(s, [14, 24, 34, 44])
    low, high = s.ask(), s.ask()
    low.report(11.0, 15)  # below the median 12 at step 15
    high.report(13.0, 15)
    assert study.prune_now(low, low.number) and not study.prune_now(high, high.number)
    assert not study.prune_now(zero, 0)


def test_no_pruner_prunes_nothing_and_hyperband_spans_the_trial():
    s = scripted_study("none")
    finished_trial(s, [10, 20])
    finished_trial(s, [14, 24])
    low = s.ask()
    low.report(0.0, 15)
    assert not study.prune_now(low, low.number)
    cfg = load(KOBART)
    space = build_space(cfg, "--max-steps 60")
    band = study.make_pruner("hyperband", plan_schedule(cfg, space, trial_examples(cfg, space, 2000, 60, False)))
    assert (band._min_resource, band._max_resource) == (15, 60)


def test_a_continued_study_must_search_the_same_space():
    s = scripted_study()
    study.check_same_space(s, ["learning_rate [1e-05, 0.0003] log"], "study.journal")
    study.check_same_space(s, ["learning_rate [1e-05, 0.0003] log"], "study.journal")
    with pytest.raises(DialsumError, match="searched another space"):
        study.check_same_space(s, ["learning_rate [1e-05, 0.001] log"], "study.journal")


def test_the_eval_reader_reads_complete_lines_as_they_appear(tmp_path):
    log = tmp_path / "train_log.jsonl"
    reader = EvalReader(log)
    assert reader.new() == []
    log.write_text('{"step": 10, "loss": 3.0}\n{"step": 15, "eval_final": 12.5}\n{"step": 2')
    assert reader.new() == [(15, 12.5)] and reader.last_step == 15
    with log.open("a") as fh:
        fh.write('0, "eval_final": 14.0}\n')
    assert reader.new() == [(20, 14.0)] and reader.new() == []


# ---------------------------------------------------------------- options


def test_resume_takes_the_stored_options_and_refuses_a_change_that_shapes_the_trials(tmp_path):
    opts = options.SweepOptions(str(KOBART), trials=8, init="tiny", max_steps=60)
    record = options.settle_record(tmp_path, opts)
    options.write_record(tmp_path, record)
    with pytest.raises(DialsumError, match="continue it with --resume"):
        options.settle_record(tmp_path, opts)
    again = options.settle_record(tmp_path, options.SweepOptions(str(KOBART), resume=True, trials=12))
    assert (again.trials, again.init, again.max_steps) == (12, "tiny", 60)
    assert options.settle_record(tmp_path, options.SweepOptions(str(KOBART), resume=True)).trials == 8
    with pytest.raises(DialsumError, match=r"--max-steps: 60 at the start, 30 now"):
        options.settle_record(tmp_path, options.SweepOptions(str(KOBART), resume=True, max_steps=30))


@pytest.mark.parametrize(("args", "needle"), [
    (["--trials", "0"], "--trials 0: must be at least 1"),
    ([], "--trials N"),
    (["--trials", "4", "--pruner", "asha"], "--pruner asha: choose median, hyperband or none"),
    (["--trials", "4", "--set", "sweep.lora_rank=[8]", "--set", "lora.use_lora=false"], "trains no LoRA"),
    (["--trials", "4", "--set", "sweep.per_device_train_batch_size=[5]"], "does not divide"),
])
def test_bad_options_and_spaces_are_one_line_before_anything_is_written(tmp_path, args, needle):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", str(KOBART), "--out", str(out), "--init", "tiny", *args)
    assert_clean_error(proc, needle)
    assert not out.exists()


# ---------------------------------------------------------------- the driver, with a scripted backend


class ScriptedHandle:
    """A trial's process, scripted: an evaluation per poll, its score `score(params)`, then metrics.json."""

    def __init__(self, cmd: list[str], score: Any, evals: int, hang: bool) -> None:
        self.run = Path(cmd[cmd.index("--run-dir") + 1])
        sets = dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "--set")
        self.value, self.evals, self.hang = score(sets), evals, hang
        self.every = int(sets["training.eval_steps"])
        self.pid, self.node, self.failure, self.stopped = 1, "scripted", None, False
        self.run.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "adaptations.json"):
            (self.run / name).write_text("{}")
        self.done = len([ln for ln in self._log().read_text().splitlines() if "eval_final" in ln]) \
            if self._log().exists() else 0

    def _log(self) -> Path:
        return self.run / "train_log.jsonl"

    def started(self) -> bool:
        return True

    def poll(self) -> int | None:
        if self.stopped:
            return 130
        if self.done < self.evals:
            self.done += 1
            step = self.done * self.every
            checkpoint = self.run / "checkpoints" / f"checkpoint-{step}"
            checkpoint.mkdir(parents=True, exist_ok=True)
            (checkpoint / "trainer_state.json").write_text("{}")
            with self._log().open("a") as fh:
                fh.write(json.dumps({"step": step, "eval_final": self.value}) + "\n")
            return None
        if self.hang:
            return None
        (self.run / "metrics.json").write_text(json.dumps({"dev": {"morpheme": {"final": self.value}}}))
        return 0

    def stop(self, grace_s: float) -> None:
        self.stopped = True

    def wait(self) -> int:
        return 130 if self.stopped else 0

    def log_tail(self, log_path: Path, start: int) -> list[str]:
        return []


class ScriptedBackend:
    local, kind = True, "cpu"

    def __init__(self, slots: int, score: Any, evals: int = 4, hang: set[int] | None = None) -> None:
        self.total, self.free, self.score, self.evals = slots, slots, score, evals
        self.hang = hang or set()
        self.started: list[tuple[int, bool]] = []  # (trial, resumed)

    def take(self, n: int) -> Any:
        if self.free < n:
            return None
        self.free -= n
        from dialsum.suite.backends.local import Slot

        return Slot([f"cpu{self.free}"])

    def release(self, slot: Any) -> None:
        self.free += 1

    def start(self, cmd, log_path, log_start, slot, need, settings) -> ScriptedHandle:
        number = int(Path(log_path).parent.name)
        self.started.append((number, "--resume" in cmd))
        return ScriptedHandle(cmd, self.score, self.evals, number in self.hang)


def lr_score(sets: dict[str, str]) -> float:
    return float(sets.get("training.learning_rate", 6e-5)) * 1e6  # 1e-5 -> 10, 3e-4 -> 300


def scripted_plan(out: Path, trials: int) -> tuple[SweepPlan, Any]:
    import optuna

    cfg = load(KOBART, *ONLY_LR, "sweep.lora_rank=[]", "sweep.lora_alpha=[]", "sweep.lora_dropout=[]")
    space = build_space(cfg, "--max-steps 60")
    schedule = plan_schedule(cfg, space, trial_examples(cfg, space, 2000, 60, False))
    the_study = study.open_study(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "study.journal"))), out, 42, 10, study.make_pruner("median", schedule))
    study.queue_own(the_study, space.own)
    plan = SweepPlan(out, str(KOBART), cfg, TrainArgs(init="tiny", max_steps=60), space, schedule, trials, [], 0, 0)
    return plan, the_study


@pytest.fixture
def fast_polls(monkeypatch):
    monkeypatch.setattr(driver, "POLL_S", 0.001)


def states(s: Any) -> list[str]:
    return [t.state.name for t in s.trials]


def test_the_driver_prunes_below_the_median_tells_every_end_and_keeps_only_the_best_s_checkpoints(tmp_path,
                                                                                                  fast_polls):
    plan, s = scripted_plan(tmp_path, 8)
    backend = ScriptedBackend(1, lr_score)  # one slot: each trial sees every earlier one finished
    assert SweepDriver(plan, s, backend, event=lambda text: None).run() == 0
    assert len(s.trials) == 8 and s.trials[0].params["learning_rate"] == 6e-5  # trial 0: the config's own
    finished: list[float] = []
    for t in s.trials:  # the median pruner's rule, worked out here from the scripted scores
        value = t.params["learning_rate"] * 1e6
        expect = "PRUNED" if len(finished) >= 2 and t.number and value < statistics.median(finished) else "COMPLETE"
        assert t.state.name == expect, (t.number, value, finished)
        if expect == "COMPLETE":
            finished.append(value)
            assert t.value == pytest.approx(value)
        else:
            assert t.user_attrs["steps"] == 15  # stopped at its first evaluation
    assert "PRUNED" in states(s)
    best = max((t for t in s.trials if t.state.name == "COMPLETE"), key=lambda t: t.value).number
    for t in s.trials:
        kept = (tmp_path / "trials" / f"{t.number:03d}" / "run" / "checkpoints").exists()
        assert kept == (t.number == best), t.number
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value,learning_rate") and len(rows) == 9


def test_keep_checkpoints_keeps_every_trial_s(tmp_path, fast_polls):
    plan, s = scripted_plan(tmp_path, 3)
    plan.keep_checkpoints = True
    SweepDriver(plan, s, ScriptedBackend(1, lr_score), event=lambda text: None).run()
    assert all((tmp_path / "trials" / f"{n:03d}" / "run" / "checkpoints").is_dir() for n in range(3))


def test_ctrl_c_leaves_running_trials_for_resume_which_runs_them_again_and_never_a_finished_one(tmp_path,
                                                                                             fast_polls):
    plan, s = scripted_plan(tmp_path, 5)
    backend = ScriptedBackend(2, lr_score, hang={2})
    run = SweepDriver(plan, s, backend, event=lambda text: None)
    original = run._watch

    def watch_then_stop() -> None:  # Ctrl-C once trial 2 has reported an evaluation
        original()
        if 2 in run.jobs and run.jobs[2].reported:
            run.stop_signal = "SIGINT"

    run._watch = watch_then_stop
    assert run.run() == 130
    assert s.trials[2].state.name == "RUNNING" and s.trials[2].intermediate_values
    done_before = {t.number for t in s.trials if t.state.is_finished()}
    # a trial whose run finished after the driver last saw it (killed meanwhile) is told, not run again
    left = next(t for t in s.trials if t.state.name == "RUNNING" and t.number != 2)
    (tmp_path / "trials" / f"{left.number:03d}" / "run" / "metrics.json").write_text(
        json.dumps({"dev": {"morpheme": {"final": 77.0}}}))
    again, said = ScriptedBackend(2, lr_score), []
    assert SweepDriver(plan, s, again, event=said.append).run() == 0
    assert any(re.match(r"trial 2: resuming from checkpoint-\d+ on ", line) for line in said), said
    assert len(s.trials) == 5 and all(t.state.is_finished() for t in s.trials)
    restarted = [n for n, resumed in again.started if resumed]
    assert restarted == [2]  # from its checkpoint
    assert not done_before & {n for n, _ in again.started}  # nothing finished runs again
    assert s.trials[left.number].value == 77.0 and left.number not in {n for n, _ in again.started}


# ---------------------------------------------------------------- end to end: one real sweep, killed and resumed

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 4


def sweep_args(out: Path, data: Path, *extra: str) -> list[str]:
    sets = [*FAST, "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=1"]
    return ["sweep", str(BATCH_OPT), "--init", "tiny", "--max-steps", "6", "--trials", str(TRIALS), "--slots", "2",
            "--data", str(data), "--out", str(out), *(a for s in sets for a in ("--set", s)), *extra]


def start(args: list[str], **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dialsum.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def wait_for(check: Any, timeout: float, what: str, proc: subprocess.Popen) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}: {proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def processes_naming(path: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(str(path) in c for c in p.info["cmdline"] or [])]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, small_data) -> SimpleNamespace:
    """A sweep SIGKILLed while a trial is about to save its second checkpoint, then resumed to the end."""
    base = tmp_path_factory.mktemp("sweep")
    out, marks = base / "out", base / "marks"
    marks.mkdir()
    proc = start(sweep_args(out, small_data), DIALSUM_PAUSE_AT="before-save", DIALSUM_PAUSE_DIR=str(marks))
    wait_for(lambda: (marks / "before-save").exists(), 300, "a trial paused before its second checkpoint", proc)
    paused_pid = int((marks / "before-save").read_text())
    paused = next(p for p in out.glob("trials/*/run") if str(p) in " ".join(psutil.Process(paused_pid).cmdline()))
    finished = {p.parent.name: p.stat().st_mtime for p in out.glob("trials/*/run/metrics.json")}
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while processes_naming(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    orphans = processes_naming(out)
    resumed = run_cli("sweep", str(BATCH_OPT), "--resume", "--out", str(out), "--slots", "2", timeout=600)
    return SimpleNamespace(out=out, paused=paused, finished=finished, orphans=orphans, resumed=resumed)


def trial_table(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_its_trials_without_repeating_one(swept):
    assert swept.orphans == []  # the trials died with the driver
    assert swept.resumed.returncode == 0, swept.resumed.stdout + swept.resumed.stderr
    rows = trial_table(swept.out)
    assert [int(r["number"]) for r in rows] == list(range(TRIALS))
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    train_log = (swept.paused / "train.log").read_text()
    assert "resuming from" in train_log and "checkpoint-2" in train_log  # the running trial ran again, resumed
    for name, mtime in swept.finished.items():  # a trial finished before the kill never ran again
        assert (swept.out / "trials" / name / "run" / "metrics.json").stat().st_mtime == mtime
        assert (swept.out / "trials" / name / "trial.log").read_text().count("=== ") == 1


@pytest.mark.slow
def test_only_the_best_trial_keeps_its_checkpoints_the_others_their_results(swept):
    rows = [r for r in trial_table(swept.out) if r["state"] == "COMPLETE"]
    best = max(rows, key=lambda r: (float(r["value"]), r["number"] == "0"))["number"]
    for row in trial_table(swept.out):
        run = swept.out / "trials" / f"{int(row['number']):03d}" / "run"
        assert (run / "checkpoints").is_dir() == (row["number"] == best), row
        assert (run / "config.yaml").is_file() and (run / "train_log.jsonl").is_file()
        assert (run / "metrics.json").is_file() == (row["state"] == "COMPLETE")
        assert not (run / "submission.csv").exists()  # a trial is scored on dev: test.csv is not summarized


@pytest.mark.slow
def test_the_report_sets_the_best_trial_against_trial_0_on_the_held_out_rows(swept):
    from dialsum.metrics import score_files

    report = (swept.out / "report.md").read_text()
    for name in ("report.html", "optimization_history.png", "intermediate_values.png", "best.yaml"):
        assert (swept.out / name).is_file(), name
    line = next(ln for ln in report.splitlines() if ln.startswith("- **Best trial**"))
    assert "held-out dev rows" in line
    for pred in (swept.out / "heldout").glob("*.csv"):  # the numbers said are the held-out predictions' scores
        assert f"{score_files(pred, swept.out / 'dev_heldout.csv').final:.2f}" in line
    assert (swept.out / "heldout" / "000.csv").is_file()


@pytest.mark.slow
def test_best_yaml_is_an_experiment_config_that_validates_trains_and_a_suite_lists(swept, tmp_path):
    from dialsum.suite.schema import load_suite

    best = swept.out / "best.yaml"
    cfg = config.load(best)
    chosen = next(r for r in trial_table(swept.out) if f"trial {r['number']}," in best.read_text().splitlines()[0])
    assert cfg.training.learning_rate == pytest.approx(float(chosen["learning_rate"]), rel=1e-5)  # not scaled x30
    assert cfg.training.eval_strategy == "no" and cfg.data.dev_file == "dev.csv"  # the config's own, not the trials'
    assert cfg.experiment.description.endswith(f". Training settings from dialsum sweep (trial {chosen['number']}).")
    proc = run_cli("validate", str(best), "--init", "tiny")
    assert proc.returncode == 0, proc.stdout
    proc = run_cli("train", str(best), "--init", "tiny", "--max-steps", "2", "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: swept\nexperiments:\n  - {{name: best, config: {best}, expected_minutes: 1}}\n")
    assert load_suite(suite).experiments[0].config == str(best)


@pytest.mark.slow
def test_ctrl_c_stops_the_trials_and_exits_130_without_a_traceback(tmp_path, small_data):
    out = tmp_path / "out"
    proc = start(sweep_args(out, small_data))
    wait_for(lambda: list(out.glob("trials/*/run/train_log.jsonl")), 300, "a trial training", proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "continue with --resume" in output
    assert processes_naming(out) == []
