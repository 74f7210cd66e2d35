"""The sweep's driver: trials started on free slots, their dev scores reported to the study as they appear,
the pruner's decisions carried out, each ending told to the study (ask and tell).

    dialsum sweep CONFIG --trials 20 --slots 2
    dialsum sweep CONFIG --trials 20 --resume          # after Ctrl-C, a kill, or to add trials
    pytest tests/test_sweep.py -k "driver or resume or ctrl_c"

Each trial is one `dialsum train` process with the trial's settings as `--set` values, on a slot of the
suite's backends (this machine's GPUs or CPU shares, or Ray), watched, classified and retried as a suite
experiment is: its own session and the parent-death signal (`dialsum.lifeline`), the failure classes and the
out-of-memory retry at half the micro-batch (`dialsum.suite.failures`), the check for processes a killed
driver left (`dialsum.suite.process`). A trial the pruner stops gets SIGINT (then SIGTERM, SIGKILL, as a suite
stops an experiment) and is recorded PRUNED.

Ctrl-C (or SIGTERM) stops the running trials and leaves them RUNNING in the study, their checkpoints kept;
every finished trial is already in the study (exit 130). After a SIGKILL of the driver its trials die with it
(the parent-death signal), and the study still holds them as RUNNING: `--resume` runs each again, from its last
checkpoint where it has one, before it starts new trials, and never repeats a finished one. The sweep counts
every trial it asked (finished or running) toward `--trials`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError
from dialsum.lifeline import on_stop_signals
from dialsum.rundir import is_finished, is_run, last_checkpoint
from dialsum.sections import ExperimentConfig
from dialsum.suite import failures, process
from dialsum.suite.monitor import SmartWait
from dialsum.suite.schema import SuiteSettings
from dialsum.suite.state import ExperimentRecord, Failure, TrainArgs, clear_partial_checkpoints, move_aside
from dialsum.sweep.outcomes import Outcomes
from dialsum.sweep.report import write_trials
from dialsum.sweep.schedule import Schedule
from dialsum.sweep.space import Space, describe
from dialsum.sweep.study import prune_now
from dialsum.sweep.trials import LOG, EvalReader, TrialJob, result, trial_folder

POLL_S = 0.5


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the driver."""


@dataclass
class SweepPlan:
    """What every trial shares: the config and its options, the space, the schedule, the target count."""

    out: Path
    config_path: str
    cfg: ExperimentConfig
    args: TrainArgs
    space: Space
    schedule: Schedule
    trials: int
    split_sets: list[str]  # the trials score the dev search rows
    search_rows: int  # the dev rows the trials are scored on
    heldout_rows: int  # the dev rows held out to score the best trial against trial 0
    keep_checkpoints: bool = False
    timeout_minutes: float | None = None
    settings: SuiteSettings = field(default_factory=SuiteSettings)


def say(text: str) -> None:
    print(f"[sweep {datetime.now():%H:%M:%S}] {text}", flush=True)


class SweepDriver:
    def __init__(self, plan: SweepPlan, study: Any, backend: Any, event: Callable[[str], None] = say) -> None:
        self.plan, self.study, self.backend, self.event = plan, study, backend, event
        self.jobs: dict[int, TrialJob] = {}
        self.outcomes = Outcomes(study, plan.out, plan.keep_checkpoints, event)
        self.again: list[int] = []  # trials a kill left running: run again first
        self.stop_signal: str | None = None
        self.gpu_busy: str | None = None  # the smart wait timed out on a GPU
        self.started = time.monotonic()
        s = plan.settings
        self.wait = SmartWait(s.gpu_wait_max_used_mb, s.gpu_wait_timeout_minutes * 60, s.gpu_wait_poll_seconds)

    # -- the loop

    def run(self) -> int:
        """Run trials until `plan.trials` were asked and every one ended; 130 on Ctrl-C or SIGTERM."""
        with on_stop_signals(self._on_signal):
            try:
                self._settle_left_running()
                while self._more() or self.jobs:
                    if self.stop_signal:
                        raise Interrupted
                    self._watch()
                    self._launch()
                    time.sleep(POLL_S)
                return 0
            except Interrupted:
                self._stop_all()
                return 130

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name

    def asked(self) -> int:
        """Trials that count toward --trials: every one asked, finished or running."""
        from optuna.trial import TrialState  # optuna takes a second to import: only where the study is used

        return sum(t.state != TrialState.WAITING for t in self.study.get_trials(deepcopy=False))

    def timed_out(self) -> bool:
        limit = self.plan.timeout_minutes
        return bool(limit) and time.monotonic() - self.started >= limit * 60

    def _more(self) -> bool:
        """More trials to start (or to run again), unless --timeout has passed or a GPU stayed busy."""
        if self.timed_out() or self.gpu_busy:
            return False
        return bool(self.again) or self.asked() < self.plan.trials

    # -- starting

    def _launch(self) -> None:
        while self._more() and len(self.jobs) < self.backend.total:
            slot = self.backend.take(1)
            if slot is None:
                return
            if not self._gpu_free(slot):
                self.backend.release(slot)
                return
            if self.again:
                self._run_again(self.again.pop(0), slot)
            else:
                self._start_new(slot)

    def _gpu_free(self, slot: Any) -> bool:
        """The suite's smart wait, without blocking: the slot's GPU under the threshold (Ray waits on its node)."""
        if not slot.gpu_indices or not self.backend.local:
            return True
        status = self.wait.check(slot.name, slot.gpu_indices)
        if status.outcome == "timeout":  # no new trial starts; the running ones end, and the sweep finishes
            self.gpu_busy = f"{slot.name}: {status.message}"
            self.event(f"no more trials start: {self.gpu_busy}")
        return status.outcome in ("free", "no-gpu")

    def _start_new(self, slot: Any) -> None:
        trial = self.study.ask()
        params = self.plan.space.suggest(trial)
        self._start(trial, params, slot, resume=False)

    def _run_again(self, number: int, slot: Any) -> None:
        """A trial a kill or Ctrl-C left running: from its last checkpoint where its run holds one."""
        import optuna  # optuna: see asked

        frozen = self.study.trials[number]
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        folder = trial_folder(self.plan.out, number)
        rec = ExperimentRecord(name=f"trial {number}", run_dir=str(folder.relative_to(self.plan.out) / "run"),
                               pid=frozen.user_attrs.get("pid"), node=frozen.user_attrs.get("node"))
        try:
            process.check_no_orphan(rec, self.plan.out)
        except DialsumError as err:
            self.backend.release(slot)
            self.outcomes.failed(trial, Failure(kind="other", message=str(err)))
            return
        run = folder / "run"
        clear_partial_checkpoints(run)
        resume = is_run(run)
        if not resume:
            move_aside(run)
        self._start(trial, dict(frozen.params), slot, resume=resume, reported=set(frozen.intermediate_values))

    def _start(self, trial: Any, params: dict[str, Any], slot: Any, resume: bool,
               reported: set[int] | None = None, retried: bool = False) -> None:
        plan, number = self.plan, trial.number
        folder = trial_folder(plan.out, number)
        folder.mkdir(parents=True, exist_ok=True)
        _, effective = plan.space.batch(params)
        sets = [*plan.space.overrides(params), *plan.schedule.overrides(effective), *plan.split_sets,
                *trial.user_attrs.get("retry", []), *slot.overrides()]
        cmd = [*process.train_command(plan.config_path, [], plan.args, (folder / "run").resolve(), sets, resume),
               "--no-submission"]  # a trial is scored on dev; the chosen settings are trained again
        log_path = folder / LOG
        with log_path.open("ab") as log:
            log.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} sweep: {' '.join(cmd)}\n".encode())
            log_start = log.tell()
        handle = self.backend.start(cmd, log_path, log_start, slot, 1, plan.settings)
        trial.set_user_attr("attempts", trial.user_attrs.get("attempts", 0) + 1)
        job = TrialJob(number, trial, params, effective, folder, slot, handle, log_start,
                       EvalReader(folder / "run" / "train_log.jsonl"), reported=set(reported or ()), retried=retried)
        self.jobs[number] = job
        last = last_checkpoint(folder / "run" / "checkpoints") if resume else None
        how = f"resuming from {last.name}" if last else "running again from the start" if resume else "starting"
        self.event(f"trial {number}: {how} on {slot.name}: {describe(params)}")

    # -- watching

    def _watch(self) -> None:
        for number, job in list(self.jobs.items()):
            self._note_placed(job)
            self._report(job)
            code = job.handle.poll()
            if code is None:
                continue
            del self.jobs[number]
            self._report(job)
            self._end(job, code)

    def _note_placed(self, job: TrialJob) -> None:
        """Where its process runs (for the orphan check after a kill), once the backend has started it."""
        if not job.placed and job.handle.started():
            job.placed = True
            job.trial.set_user_attr("pid", job.handle.pid)
            job.trial.set_user_attr("node", job.handle.node)
            job.trial.set_user_attr("slot", job.slot.name)

    def _report(self, job: TrialJob) -> None:
        """Each new dev score to the study; the pruner's decision carried out at once."""
        for step, value in job.evals.new():
            at = self.plan.schedule.step(step, job.effective)
            if job.pruned_at is not None or at in job.reported:
                continue
            job.trial.report(value, at)
            job.reported.add(at)
            if prune_now(job.trial, job.number):
                job.pruned_at = at
                job.handle.stop(self.plan.settings.stop_grace_seconds)
                self.event(f"trial {job.number}: pruned at step {at} (dev {value:.2f}); stopping it")

    # -- ending

    def _end(self, job: TrialJob, code: int) -> None:
        trial = job.trial
        trial.set_user_attr("wall_seconds", round(trial.user_attrs.get("wall_seconds", 0.0)
                                                  + time.monotonic() - job.started, 1))
        trial.set_user_attr("steps", max(job.evals.last_step, trial.user_attrs.get("steps", 0)))
        value = result(job.run_dir) if is_finished(job.run_dir) else None
        if job.pruned_at is not None and value is None:
            self.outcomes.pruned(trial)
        else:
            failure = None if value is not None else self._failure(job, code)
            if failure is not None and failure.kind == "oom" and self._retry(job, failure):
                return
            if failure is None:
                self.outcomes.complete(trial, value)  # type: ignore[arg-type]
            else:
                self.outcomes.failed(trial, failure)
        self.backend.release(job.slot)

    def _failure(self, job: TrialJob, code: int) -> Failure:
        tail = job.handle.log_tail(job.folder / LOG, job.log_start)
        found = job.handle.failure or failures.classify_failure(code, tail)
        return found or Failure(kind="other", message="exited with code 0 but wrote no dev score (metrics.json)")

    def _retry(self, job: TrialJob, failure: Failure) -> bool:
        """Out of memory: once more from the start at half the micro-batch, the effective batch kept."""
        if job.retried or not self.plan.settings.oom_retry:
            return False
        micro, effective = self.plan.space.batch(job.params)
        retry = failures.halve_micro_batch(micro, effective // micro)
        if retry is None:
            return False
        job.trial.set_user_attr("retry", retry.overrides)
        job.trial.set_user_attr("adaptations", [*job.trial.user_attrs.get("adaptations", []),
                                                retry.text.replace("suite:", "sweep:")])
        moved = move_aside(job.run_dir)
        self.event(f"trial {job.number}: {retry.text.removeprefix('suite: ')}"
                   + (f"; its first run moved aside to {moved.name}" if moved else ""))
        self._start(job.trial, job.params, job.slot, resume=False, retried=True)
        return True

    # -- resume and stop

    def _settle_left_running(self) -> None:
        self.again = self.outcomes.settle()
        if self.again:
            self.event(f"{len(self.again)} trial(s) left running by an earlier stop run again first: "
                       f"{', '.join(map(str, self.again))}")

    def _stop_all(self) -> None:
        """Ctrl-C: every running trial stops with its checkpoints kept, and stays RUNNING for --resume (one the
        pruner was stopping is recorded PRUNED)."""
        for number, job in self.jobs.items():
            self.event(f"trial {number}: stopping ({self.stop_signal})")
            job.handle.stop(self.plan.settings.stop_grace_seconds)
        for job in list(self.jobs.values()):
            job.handle.wait()
            job.trial.set_user_attr("wall_seconds", round(job.trial.user_attrs.get("wall_seconds", 0.0)
                                                          + time.monotonic() - job.started, 1))
            if job.pruned_at is not None:
                self.outcomes.pruned(job.trial)
            self.backend.release(job.slot)
        self.jobs.clear()
        write_trials(self.plan.out, self.study)
