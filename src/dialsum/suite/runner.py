"""The suite's scheduler: experiments in suite order on the first slot that fits, each in its own process.

    dialsum suite configs/suites/main5.yaml                          # every visible GPU, one experiment each
    dialsum suite configs/suites/main5.yaml --init tiny --slots 2    # two at a time on the CPU
    dialsum suite configs/suites/main5.yaml --resume                 # after a crash, a kill or Ctrl-C
    pytest tests/test_suite.py

Every check runs before anything is written (`checks`). Then, under the suite's lock, the loop
starts the next experiment in suite order as soon as enough units are free (it never overtakes: a
2-GPU experiment holds back the ones after it until two GPUs are free) and, on a GPU, once the
GPU's used memory is under the smart wait's threshold; it watches each child (memory monitor,
progress, time-out), classifies a failure, retries an out-of-memory one with half the micro-batch,
and rewrites the state and the report after every change. One failure never stops the others.
Ctrl-C (or SIGTERM) stops every running child with its checkpoints kept, and exits 130.

The suite deletes no run directory, checkpoint or ensemble: where it must start an experiment fresh
over an earlier run (the out-of-memory retry, a run that holds no checkpoint yet, `--restart NAME`,
which moves a sweep entry's sweep aside too) or rebuild an ensemble, it moves the old folder aside
(`run.1`, `sweep.1`, `ensemble.1`, ...), says so, and records it in the state.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError
from dialsum.lifeline import on_stop_signals
from dialsum.paths import check_folder
from dialsum.pause import pause
from dialsum.report.build import write_report
from dialsum.rundir import missing_for_finished
from dialsum.slots import Slot
from dialsum.suite import checks, failures, process, sweep_entry
from dialsum.suite.display import (
    LineDisplay,
    Live,
    LiveDisplay,
    TrainProgress,
    outcome_text,
    print_closing_table,
    status_rows,
)
from dialsum.suite.ensemble_step import EnsembleStep
from dialsum.suite.lock import SuiteLock
from dialsum.suite.monitor import MemoryMonitor, SmartWait
from dialsum.suite.opening import (
    SuiteOptions,
    check_units,
    given_args,
    open_backend,
    open_state,
    restart_names,
    suite_args,
)
from dialsum.suite.schema import SuiteEntry, SuiteFile, load_suite, select_names
from dialsum.suite.state import (
    FRESH_KINDS,
    INCOMPLETE,
    STATE_FILE,
    Aside,
    ExperimentRecord,
    Failure,
    MemorySummary,
    SuiteState,
    TrainArgs,
    WaitInfo,
    clear_partial_checkpoints,
    move_aside,
    next_action,
    now,
    resume_args,
)

POLL_S = 0.5
REFRESH_S = 2.0
WAIT_LOG_S = 30.0


@dataclass
class Job:
    """One experiment's current attempt."""

    rec: ExperimentRecord
    entry: SuiteEntry
    slot: Slot
    handle: Any
    live: Live
    log_start: int
    deadline: float | None
    retried: bool = False
    timed_out: bool = False
    limit_s: float | None = None


class SuiteRunner:
    def __init__(self, suite: SuiteFile, state: SuiteState, out: Path, configs: dict[str, Any],
                 backend: Any, display: Any, restart: set[str] | None = None) -> None:
        self.suite, self.state, self.out, self.configs = suite, state, out, configs
        self.backend, self.display = backend, display
        self.restart = set(restart or ())  # --restart: these start fresh once, their old runs moved aside
        self.settings = suite.settings
        self.jobs: dict[str, Job] = {}
        s = self.settings
        self.wait = SmartWait(s.gpu_wait_max_used_mb, s.gpu_wait_timeout_minutes * 60, s.gpu_wait_poll_seconds)
        self.stop_signal: str | None = None
        self.said: set[str] = set()
        self.last_refresh = 0.0

    # -- the loop

    def run(self, chosen: list[str]) -> int:
        queue = [rec for rec in self.state.records if rec.name in chosen]
        with on_stop_signals(self._on_signal):
            try:
                while queue or self.jobs:
                    if self.stop_signal:
                        raise process.SuiteInterrupted(self.stop_signal)
                    self._reap()
                    self._launch(queue)
                    self._refresh()
                    time.sleep(POLL_S)
                failed = any(r.state == "failed" for r in self.state.records)
                return 1 if self._ensemble() or failed else 0
            except process.SuiteInterrupted:
                self._stop_all()
                self.display.event(f"interrupted by {self.stop_signal}: state saved; continue with --resume")
                return 130

    def _ensemble(self) -> bool:
        """The suite's ensemble, once every experiment in it has finished; True when it failed."""
        if self.suite.ensemble is None:
            return False
        step = EnsembleStep(self.suite.ensemble, self.out, self.display.event, self.settings.stop_grace_seconds,
                            lambda: self.stop_signal, lambda path, why: self._set_aside(None, path, why))
        return step.run(self.state.records)

    def _set_aside(self, rec: ExperimentRecord | None, path: Path, reason: str) -> None:
        """Move `path` aside (never delete it), say so, and record it: in the experiment's record, or the
        suite's (the ensemble)."""
        moved = move_aside(path)
        if moved is None:
            return
        source, target = (str(p.relative_to(self.out)) for p in (path, moved))
        self.display.event(f"{rec.name if rec else 'suite'}: {source} moved aside to {target} ({reason})")
        (rec or self.state).moved_aside.append(Aside(source=source, moved_to=target, reason=reason, at=now()))
        self.save()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name

    def save(self) -> None:
        self.state.save(self.out / STATE_FILE)

    def say_once(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            self.display.event(text)

    def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_refresh < REFRESH_S:
            return
        self.last_refresh = time.monotonic()
        for job in self.jobs.values():
            job.live.progress.poll()
        self.display.update(status_rows(self.state.records, {n: j.live for n, j in self.jobs.items()}))

    # -- starting

    def _launch(self, queue: list[ExperimentRecord]) -> None:
        """Start queued experiments in order while the next one fits; it never overtakes."""
        while queue:
            rec = queue[0]
            action = "fresh" if rec.name in self.restart else next_action(rec, self.out)
            if action == "skip":
                self.display.event(f"{rec.name}: already finished; skipped (its run is kept)")
                queue.pop(0)
                continue
            entry = self.suite.entry(rec.name)
            slot = self.backend.take(entry.gpus)
            if slot is None:
                pause("slot-wait")  # the chaos benchmark's kill point (dialsum.pause)
                return
            if not self._gpus_free(rec, slot):
                self.backend.release(slot)
                if rec.state == "failed":  # the wait timed out
                    queue.pop(0)
                    continue
                return
            queue.pop(0)
            if rec.run_dir:
                try:
                    process.check_no_orphan(rec, self.out)
                except DialsumError as err:  # that experiment cannot go on; the others can
                    self._finish(rec, Failure(kind="other", message=str(err)), slot)
                    continue
            why = "--restart" if rec.name in self.restart else _fresh_reason(rec)
            self.restart.discard(rec.name)
            self._start(rec, entry, slot, resume=action == "resume", fresh_reason=why)

    def _gpus_free(self, rec: ExperimentRecord, slot: Slot) -> bool:
        """The smart wait, without blocking: every GPU of the slot under the threshold, or a time-out.
        On Ray the cluster hands out whole GPUs itself, and the driver samples no remote node."""
        if not slot.gpu_indices or not self.backend.local:
            return True
        status = self.wait.check(rec.name, slot.gpu_indices)
        if status.outcome == "no-gpu":
            self.say_once("no-gpu-wait", f"smart wait: {status.message}")
            return True
        rec.wait = WaitInfo(waited_s=status.waited_s, message=status.message)
        if status.outcome == "free":
            if status.waited_s:
                self.display.event(f"{rec.name}: {status.message}")
            return True
        if status.outcome == "timeout":
            self._finish(rec, Failure(kind="timeout", message=f"smart wait: {status.message}"))
            return False
        if rec.state != "waiting":
            rec.state = "waiting"
            self.save()
        self.say_once(f"wait-{rec.name}-{int(status.waited_s // WAIT_LOG_S)}", f"{rec.name}: {status.message}")
        return False

    def _start(self, rec: ExperimentRecord, entry: SuiteEntry, slot: Slot, *, resume: bool,
               retried: bool = False, fresh_reason: str = "") -> None:
        exp_dir = self.out / rec.name
        run_dir, log_path, memory_csv = exp_dir / "run", exp_dir / "suite.log", exp_dir / "memory.csv"
        self._prepare_dirs(rec, run_dir, memory_csv, resume, fresh_reason)
        if slot.threads and not any(a.startswith("suite: CPU slot") for a in rec.adaptations):
            rec.adaptations.append(f"suite: CPU slot shared by {self.backend.total} experiments: "
                                   f"speed.cpu_threads={slot.threads}")
        tune = entry.tune
        if resume and tune is not None:  # trials finished before a kill count
            tune = tune.model_copy(update={"trials": process.tune_trials_left(run_dir, tune.trials)})
        cmd = sweep_entry.entry_command(entry, self.state.train_args, exp_dir, [*slot.overrides(), *rec.overrides],
                                        resume, slot.threads, tune)
        with log_path.open("ab") as log_file:
            log_file.write(f"\n=== {datetime.now():%Y-%m-%d %H:%M:%S} suite: {' '.join(cmd)}\n".encode())
            log_start = log_file.tell()
        handle = self.backend.start(cmd, log_path, log_start, slot, entry.gpus, self.settings)
        rec.message, rec.failure, rec.exit_code, rec.pid = None, None, None, None
        rec.state, rec.attempts, rec.slot = "waiting", rec.attempts + 1, slot.name
        rec.run_dir, rec.memory_csv, rec.log = f"{rec.name}/run", f"{rec.name}/memory.csv", f"{rec.name}/suite.log"
        how = "resuming from its last checkpoint" if resume else "starting"
        self.display.event(f"{rec.name}: {how} on {slot.name} (attempt {rec.attempts}), log {log_path}")
        limit = self.settings.experiment_timeout_minutes
        live = Live(time.monotonic(), sweep_entry.progress(entry, exp_dir,
                                                           TrainProgress(run_dir / "train_log.jsonl", log_path, log_start)))
        job = Job(rec, entry, slot, handle, live, log_start, None, retried=retried)
        job.limit_s = limit * 60 if limit else None
        self.jobs[rec.name] = job
        self._mark_running(job, memory_csv)

    def _mark_running(self, job: Job, memory_csv: Path | None = None) -> None:
        """Once its process runs (at once here; when Ray places its task there): state, place, clocks."""
        rec, handle = job.rec, job.handle
        if rec.state == "running" or not handle.started():
            return
        rec.state, rec.pid, rec.node, rec.started_at = "running", handle.pid, handle.node, now()
        rec.gpus = [g for g in (handle.gpus or "").split(",") if g]
        if not self.backend.local:
            rec.slot = f"{handle.node}:{'gpu' + '+'.join(rec.gpus) if rec.gpus else 'cpu'}"
        job.live.started = time.monotonic()
        job.deadline = job.live.started + job.limit_s if job.limit_s else None
        if self.backend.local:
            job.live.monitor = self._start_monitor(rec.name, memory_csv or self.out / rec.name / "memory.csv",
                                                   handle.pid, job.slot)
        else:
            self.say_once("remote-monitor", "memory monitor: runs on Ray nodes record their own peak memory "
                          "(metrics.json); the suite samples no remote process")
        self.save()

    def _prepare_dirs(self, rec: ExperimentRecord, run_dir: Path, memory_csv: Path, resume: bool,
                      fresh_reason: str) -> None:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            moved = clear_partial_checkpoints(run_dir)
            if moved:
                self.display.event(f"{rec.name}: incomplete {', '.join(moved)} (killed while saving) moved aside "
                                   f"to {rec.name}/run/{INCOMPLETE}/")
            return
        self._set_aside(rec, run_dir, fresh_reason)
        self._set_aside(rec, memory_csv, fresh_reason)
        if fresh_reason == "--restart":  # a sweep entry sweeps afresh too
            self._set_aside(rec, run_dir.parent / sweep_entry.SWEEP, fresh_reason)

    def _start_monitor(self, name: str, memory_csv: Path, pid: int, slot: Slot) -> Any:
        try:
            monitor = MemoryMonitor(
                memory_csv, interval_s=self.settings.monitor_interval_seconds, pid=pid,
                indices=slot.gpu_indices or [0],
                on_warn=lambda text: self.display.event(f"{name}: warning: {text}"),
            ).start()  # fmt: skip
        except DialsumError as err:  # the child exited before the monitor could attach
            self.display.event(f"{name}: memory monitor not started ({err})")
            return None
        if monitor.kind == "rss":
            self.say_once("rss", f"memory monitor: {monitor.note}")
        return monitor

    # -- watching and finishing

    def _reap(self) -> None:
        for name, job in list(self.jobs.items()):
            self._mark_running(job)
            if job.deadline is not None and not job.timed_out and time.monotonic() > job.deadline:
                job.timed_out = True
                self.display.event(f"{name}: stopping (time-out)")
                job.handle.stop(self.settings.stop_grace_seconds)
            code = job.handle.poll()
            if code is None:
                continue
            del self.jobs[name]
            failure = self._end_attempt(job, code)
            retry = self._oom_retry(job, failure)
            if retry:
                self._start(job.rec, job.entry, job.slot, resume=False, retried=True,
                            fresh_reason="the out-of-memory retry starts over with a smaller micro-batch")
                continue
            self._finish(job.rec, failure, job.slot)

    def _end_attempt(self, job: Job, code: int) -> Failure | None:
        rec = job.rec
        if job.live.monitor is not None:
            job.live.monitor.stop()
            rec.memory = MemorySummary(**job.live.monitor.to_dict())
        job.live.progress.poll()
        rec.wall_seconds = round(rec.wall_seconds + time.monotonic() - job.live.started, 2)
        rec.pid, rec.exit_code = None, code
        tail = job.handle.log_tail(self.out / rec.name / "suite.log", job.log_start)
        if job.timed_out:
            return failures.timeout_failure(self.settings.experiment_timeout_minutes or 0, tail)
        if job.handle.failure is not None:  # the backend knows better than the exit code (a Ray node lost)
            return job.handle.failure
        return failures.classify_failure(code, tail)

    def _oom_retry(self, job: Job, failure: Failure | None) -> bool:
        rec = job.rec
        if failure is None or failure.kind != "oom" or not self.settings.oom_retry:
            return False
        if job.retried:
            rec.adaptations.append("suite: the retry ran out of memory too; lower the batch in the config")
            return False
        cfg = sweep_entry.batch_config(job.entry, self.out / rec.name, self.configs[rec.name])
        micro, accum = cfg.training.per_device_train_batch_size, cfg.training.gradient_accumulation_steps
        for item in rec.overrides:  # a retry already taken (e.g. before a --resume)
            key, _, value = item.partition("=")
            micro = int(value) if key.endswith("per_device_train_batch_size") else micro
            accum = int(value) if key.endswith("gradient_accumulation_steps") else accum
        retry = failures.halve_micro_batch(int(micro), int(accum))
        if retry is None:
            rec.adaptations.append(f"suite: out of memory at micro-batch {micro}; nothing to halve")
            return False
        rec.adaptations.append(retry.text)
        rec.overrides = [*rec.overrides, *retry.overrides]
        self.display.event(f"{rec.name}: {retry.text}")
        return True

    def _finish(self, rec: ExperimentRecord, failure: Failure | None, slot: Slot | None = None) -> None:
        run_dir = self.out / rec.name / "run"
        missing = missing_for_finished(run_dir)
        if failure is None and missing:
            failure = Failure(kind="other", message=f"exited with code 0 but wrote no {missing}")
        rec.state, rec.failure, rec.finished_at = ("failed" if failure else "finished"), failure, now()
        if slot is not None:
            self.backend.release(slot)
        self.save()
        self.display.event(f"{rec.name}: {outcome_text(rec, run_dir)}")
        self.write_report()
        self._refresh(force=True)

    def _stop_all(self) -> None:
        """Ctrl-C: every child stops with its checkpoints kept; each is marked interrupted (and so is one
        that was waiting for its GPU)."""
        for rec in self.state.records:
            if rec.state == "waiting" and rec.name not in self.jobs:
                rec.state, rec.message = "interrupted", f"stopped by {self.stop_signal} while waiting for its GPU"
        for name, job in self.jobs.items():
            self.display.event(f"{name}: stopping ({self.stop_signal})")
            job.handle.stop(self.settings.stop_grace_seconds)
        for job in list(self.jobs.values()):
            code = job.handle.wait()
            self._end_attempt(job, code)
            job.rec.state, job.rec.failure = "interrupted", None
            job.rec.message = f"stopped by {self.stop_signal}; its checkpoints are kept: --resume continues it"
            self.backend.release(job.slot)
        self.jobs.clear()
        self.save()
        self.write_report()

    def write_report(self) -> Path | None:
        try:
            paths = write_report(self.out, self.state.records, title=f"Experiment comparison: {self.suite.name}",
                                 description=self.suite.description)
        except Exception as err:  # a report problem must never stop the experiments
            self.display.event(f"warning: report not written ({type(err).__name__}: {err})")
            return None
        return paths["report_md"]


def _fresh_reason(rec: ExperimentRecord) -> str:
    if rec.failure and rec.failure.kind in FRESH_KINDS:
        return "a fresh start: it ran out of memory even at the retry's micro-batch"
    return f"a fresh start: its last attempt ({rec.status_text()}) left no run to continue"


# ---------------------------------------------------------------- entry point


def run_suite(opts: SuiteOptions) -> int:
    """Check everything up front, take the lock, run the selected experiments; the exit code."""
    suite = load_suite(opts.suite_file)
    chosen = select_names([e.name for e in suite.experiments], opts.only, opts.skip)
    restart = restart_names(opts, [e.name for e in suite.experiments], chosen)
    given = given_args(opts)
    checks.check_train_args(resume_args(None, given)[0])  # bad flags fail before anything is written
    out = check_folder(opts.out or Path("runs") / "suites" / suite.name, "--out")
    SuiteLock(out).refuse_if_held()
    args, changes = suite_args(opts, suite, out, given)
    configs = checks.load_configs(suite, chosen, args)
    backend = open_backend(opts)
    try:
        check_units(suite, chosen, backend)
        checks.check_experiments(suite, chosen, args)  # nothing is written before every experiment could run
        if not backend.local:
            backend.check_shared(out)
        return _run_locked(opts, suite, chosen, out, args, changes, configs, backend, restart)
    finally:
        backend.close()


def _run_locked(opts: SuiteOptions, suite: SuiteFile, chosen: list[str], out: Path, args: TrainArgs,
                changes: list[str], configs: dict[str, Any], backend: Any, restart: set[str]) -> int:
    live = sys.stdout.isatty() if opts.live is None else opts.live
    display: Any = LineDisplay()
    out.mkdir(parents=True, exist_ok=True)
    with SuiteLock(out):
        state = open_state(opts, suite, out, args, changes)
        for change in changes:
            display.event(f"--resume {change}: taken, and recorded in {STATE_FILE}")
        for rec in state.records:
            if rec.name not in chosen and rec.state == "pending":
                rec.state = "skipped"
        state.save(out / STATE_FILE)
        display.event(f"suite {suite.name}: {len(chosen)} experiment(s) -> {out}; {backend.describe()}")
        if live:
            display = LiveDisplay(f"suite {suite.name} ({out})")
        runner = SuiteRunner(suite, state, out, configs, backend, display, restart)
        try:
            code = runner.run(chosen)
        finally:
            report = runner.write_report()
            display.close()
        print_closing_table(state.records, out)
        if report is not None:
            print(f"report: {report}")
        return code
