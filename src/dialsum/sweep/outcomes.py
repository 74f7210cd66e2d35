"""Each trial's end, told to the study: finished with its dev score, pruned, or failed with its failure class;
then the checkpoints tidied and `trials.csv` rewritten.

    dialsum sweep CONFIG --trials 20
    pytest tests/test_sweep.py -k "outcome or tidy or settle"

The study holds every trial's state; the trial's attributes hold its folder, where its process ran, its
attempts, wall time, steps and failure. A trial the driver could not tell about (a SIGKILL of the driver) is
still RUNNING there: `settle` tells it when its run finished meanwhile or the pruner stops it on the scores
it reported, and otherwise returns it to run again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dialsum.rundir import is_finished
from dialsum.suite.state import Failure
from dialsum.sweep.report import write_trials
from dialsum.sweep.study import prune_now
from dialsum.sweep.trials import EvalReader, remove_checkpoints, result, trial_folder


class Outcomes:
    def __init__(self, study: Any, out: Path, keep_checkpoints: bool, event: Callable[[str], None]) -> None:
        self.study, self.out, self.keep_checkpoints, self.event = study, out, keep_checkpoints, event

    def complete(self, trial: Any, value: float) -> None:
        before = self.best_number()
        self.study.tell(trial, value)
        lead = " (the best so far)" if self.best_number() == trial.number != before else ""
        self.event(f"trial {trial.number}: finished, dev {value:.2f}{lead}")
        self._after()

    def pruned(self, trial: Any) -> None:
        from optuna.trial import TrialState  # optuna takes a second to import: only where the study is used

        self.study.tell(trial, state=TrialState.PRUNED)
        self.event(f"trial {trial.number}: recorded PRUNED")
        self._after()

    def failed(self, trial: Any, failure: Failure) -> None:
        from optuna.trial import TrialState  # optuna: see pruned

        trial.set_user_attr("failure", f"{failure.kind}: {failure.message}")
        self.study.tell(trial, state=TrialState.FAIL)
        self.event(f"trial {trial.number}: failed ({failure.kind}): {failure.message}")
        self._after()

    def _after(self) -> None:
        self.tidy()
        write_trials(self.out, self.study)

    def best_number(self) -> int | None:
        """The finished trial with the highest dev score on the search rows (trial 0 on a tie)."""
        from optuna.trial import TrialState  # optuna: see pruned

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return max(done, key=lambda t: (t.value, t.number == 0)).number if done else None

    def tidy(self) -> None:
        """Every ended trial but the best loses its checkpoints (the sweep's documented removal)."""
        if self.keep_checkpoints:
            return
        from optuna.trial import TrialState  # optuna: see pruned

        best = self.best_number()
        ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        for t in self.study.get_trials(deepcopy=False, states=ended):
            if t.number != best:
                remove_checkpoints(trial_folder(self.out, t.number) / "run")

    def settle(self) -> list[int]:
        """Trials left RUNNING by a kill or Ctrl-C: told when their run finished meanwhile or the pruner stops
        them on the scores they reported; the numbers of the others, to run again."""
        import optuna  # optuna: see pruned
        from optuna.trial import TrialState  # optuna: see pruned

        again = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # the same trial, continued
            run = trial_folder(self.out, frozen.number) / "run"
            if is_finished(run) and (value := result(run)) is not None:
                steps = EvalReader(run / "train_log.jsonl")
                steps.new()
                trial.set_user_attr("steps", max(steps.last_step, frozen.user_attrs.get("steps", 0)))
                self.complete(trial, value)
            elif prune_now(trial, frozen.number):
                self.pruned(trial)
            else:
                again.append(frozen.number)
        return again
