"""The end of a sweep: the best trial against trial 0 on held-out dev rows, best.yaml, the report.

    dialsum sweep CONFIG --trials 20          # after the last trial
    pytest tests/test_sweep.py -k "best or heldout"

The trials are compared on dev's search rows, so the best trial's score there was chosen on those rows and is
not reported as its score. Both the best trial and trial 0 (the config's own settings) summarize the held-out
rows (`dialsum predict` on a slot, as a trial runs) and are scored there: that line is what the sweep reports,
and best.yaml holds the best trial's settings only where they beat the config's own on the held-out rows (as
`dialsum tune` recommends). best.yaml is an experiment config, the config the sweep started from with those
settings: no adaptation of this machine's (a tiny model's learning-rate scale, the trials' evaluation interval)
is written into it, so it validates, trains and can be listed in a suite file as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_text
from dialsum.metrics import score_files
from dialsum.runfiles import SWEEP_RESULT, SweepResult
from dialsum.suite.state import move_aside
from dialsum.sweep.driver import SweepPlan, say
from dialsum.sweep.options import BEST, HELDOUT
from dialsum.sweep.report import write_report, write_trials
from dialsum.sweep.space import describe, trial_config
from dialsum.sweep.trials import folder_bytes, trial_folder

HELD = "heldout"


def finish(plan: SweepPlan, study: Any, backend: Any) -> int:
    """The outputs; 1 when no trial finished (nothing to recommend)."""
    from optuna.trial import TrialState  # optuna takes a second to import: only where the study is used

    write_trials(plan.out, study)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        write_report(plan.out, _title(plan), [("p", "No trial finished: nothing to recommend.")], study)
        say(f"no trial finished; see {plan.out / 'report.md'} and each trial's trials/NNN/trial.log")
        return 1
    best = max(done, key=lambda t: (t.value, t.number == 0))
    own = next((t for t in done if t.number == 0), None)
    scores = {n: heldout_score(plan, backend, n) for n in sorted({best.number, *([own.number] if own else [])})}
    chosen = best if own is None or best.number == 0 or scores[best.number] > scores[own.number] else own
    write_best(plan, chosen, best, scores)
    line = verdict(best, own, scores, chosen, plan.heldout_rows)
    write_result(plan, study, best.number, chosen.number, scores, line)
    write_report(plan.out, _title(plan), [("h", 2, "Best trial against trial 0"), ("list", [("Best trial", line)]),
                                          ("p", _counts(study)), ("p", _disk(plan, best.number))], study)
    say(line)
    say(f"wrote {plan.out / BEST}, {plan.out / 'trials.csv'} and {plan.out / 'report.md'}")
    return 0


def write_result(plan: SweepPlan, study: Any, best: int, chosen: int, scores: dict[int, float], line: str) -> None:
    states = [t.state.name for t in study.trials]
    SweepResult(trials=len(states), states={s: states.count(s) for s in dict.fromkeys(states)},
                steps=sum(int(t.user_attrs.get("steps", 0)) for t in study.trials), best_trial=best,
                best_search=study.trials[best].value, search_rows=plan.search_rows, heldout_rows=plan.heldout_rows,
                heldout=scores, recommended=chosen, verdict=line).write(plan.out / SWEEP_RESULT)


def _title(plan: SweepPlan) -> str:
    return f"Sweep: {plan.cfg.experiment.label or plan.cfg.experiment.name}"


def heldout_score(plan: SweepPlan, backend: Any, number: int) -> float:
    """The trial's model summarizes the held-out rows (`dialsum predict`, on a slot), scored there."""
    folder, run = plan.out / HELD, trial_folder(plan.out, number) / "run"
    target = folder / f"{number:03d}.csv"
    if not target.is_file() or target.stat().st_mtime < (run / "metrics.json").stat().st_mtime:
        _predict(plan, backend, run, target)
    return score_files(target, plan.out / HELDOUT, "morpheme").final


def _predict(plan: SweepPlan, backend: Any, run: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dialsum.cli", "predict", str(run.resolve()), "--input",
           str((plan.out / HELDOUT).resolve()), "--out", str(target.resolve())]
    log = target.with_suffix(".log")
    with log.open("ab") as fh:
        start = fh.tell()
    slot = backend.take(1)
    if slot is None:
        raise DialsumError("sweep: no free slot for the held-out predictions")
    handle = backend.start(cmd, log, start, slot, 1, plan.settings)
    try:
        code = handle.wait()
    except KeyboardInterrupt:
        handle.stop(plan.settings.stop_grace_seconds)
        handle.wait()
        raise
    finally:
        backend.release(slot)
    if code != 0:
        raise DialsumError(f"sweep: the held-out predictions of {run} failed (exit {code}); see {log}, then "
                           "dialsum sweep --resume finishes")


def verdict(best: Any, own: Any, scores: dict[int, float], chosen: Any, rows: int) -> str:
    """The best trial against trial 0, in the suite report's style, on the held-out rows."""
    where = f"on the {rows} held-out dev rows"
    if own is None:
        return (f"trial {best.number} ({describe(best.params)}): {scores[best.number]:.2f} {where}; trial 0 (the "
                "config's own settings) did not finish, so nothing compares with it. best.yaml holds its settings.")
    if best.number == 0:
        return (f"trial 0, the config's own settings, scored best on the search rows ({scores[0]:.2f} {where}); "
                "best.yaml keeps them.")
    gain = scores[best.number] - scores[0]
    keep = (f"best.yaml holds trial {best.number}'s settings" if chosen is best else
            "they do not beat the config's own there, so best.yaml keeps the config's own settings")
    return (f"trial {best.number} ({describe(best.params)}): {scores[best.number]:.2f} {where}, against "
            f"{scores[0]:.2f} for trial 0, the config's own settings ({gain:+.2f}); {keep}.")


def write_best(plan: SweepPlan, chosen: Any, best: Any, scores: dict[int, float]) -> Path:
    """best.yaml: the config the sweep started from with the chosen settings; an earlier one that differs is
    moved aside (best.1.yaml, ...)."""
    cfg = trial_config(plan.cfg, plan.space, dict(chosen.params))
    cfg.experiment.name = f"{plan.cfg.experiment.name}_swept"
    if plan.cfg.experiment.label:
        cfg.experiment.label = f"{plan.cfg.experiment.label} (swept)"
    own = plan.cfg.experiment.description.strip()
    cfg.experiment.description = (f"{own}{' ' if own.endswith('.') else '. ' if own else ''}Training settings "
                                  f"from dialsum sweep (trial {chosen.number}).")
    changed = [f"#   {d.key or d.name}: {_v(plan.space.own[d.name])} -> {_v(chosen.params[d.name])}"
               for d in plan.space.dims if chosen.params[d.name] != plan.space.own[d.name]]
    how = " ".join(a for a in (f"--init {plan.args.init}" if plan.args.init else "",
                               f"--max-steps {plan.args.max_steps}" if plan.args.max_steps else "",
                               "--one-epoch" if plan.args.one_epoch else "") if a)
    which = "the best on the search rows" if chosen is best else "the config's own settings"
    held = ", ".join(f"trial {n} {v:.2f}" for n, v in sorted(scores.items()))
    header = [f"# dialsum sweep of {plan.config_path}: trial {chosen.number}, {which} (held-out dev: {held})",
              *(["# Settings changed from the config:", *changed] if changed else ["# The config's own settings."]),
              f"# Train it: dialsum train {plan.out / BEST}" + (f" {how}" if how else ""),
              "# or list it in a suite file: {name: ..., config: <this file>, expected_minutes: ...}"]
    text = "\n".join(header) + "\n" + yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
    path = plan.out / BEST
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        moved = move_aside(path)
        say(f"an earlier {BEST} moved aside to {moved.name if moved else '?'}")
    return atomic_write_text(path, text)


def _v(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _counts(study: Any) -> str:
    states = [t.state.name for t in study.trials]
    parts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
                      if s in states)
    steps = sum(int(t.user_attrs.get("steps", 0)) for t in study.trials)
    minutes = sum(float(t.user_attrs.get("wall_seconds", 0)) for t in study.trials) / 60
    return f"{len(states)} trial(s): {parts}; {steps} training steps in all, {minutes:.1f} trial-minutes."


def _disk(plan: SweepPlan, best: int) -> str:
    total, kept = folder_bytes(plan.out / "trials"), folder_bytes(trial_folder(plan.out, best))
    return (f"Disk: {total / 2**20:.0f} MB under trials/, of which {kept / 2**20:.0f} MB is the best trial's run "
            "(kept whole, checkpoints included); the other trials keep their model, metrics, logs and config.")
