"""Named pause points, for the chaos benchmark: the process that reaches a named point first stops there
until it is killed, so a kill lands at that exact moment instead of after a guessed delay.

    DIALSUM_PAUSE_AT=before-save@a DIALSUM_PAUSE_DIR=/tmp/marks dialsum suite SUITE --slots 2
    python bench/chaos_suite.py --quick
    pytest tests/test_suite.py -k pause

`DIALSUM_PAUSE_AT` names points, comma-separated, each either `POINT` or `POINT@EXPERIMENT` (the
config's `experiment.name`); `DIALSUM_PAUSE_DIR` is a folder for markers. The first process to reach a
named point creates `<dir>/<POINT@EXPERIMENT>` exclusively and writes its pid into it, then sleeps
until it is killed; every later arrival passes (the marker stays). Without both variables, `pause`
returns at once. The points: `slot-wait` (the suite's driver, the next experiment waiting for a slot),
`started` (a run directory written, no checkpoint yet), `before-save` and `mid-save` (a checkpoint
after the first: about to be saved, and written but for its `trainer_state.json`), `scoring-dev`,
`writing-submission`, `tuning` (after a finished tune trial) and `ensemble` (its picks made, nothing
written yet).
"""

from __future__ import annotations

import os
import time
from typing import Any

AT_ENV, DIR_ENV = "DIALSUM_PAUSE_AT", "DIALSUM_PAUSE_DIR"


def pause(point: str, experiment: str | None = None) -> None:
    """Stop here until killed if `point` (or `point@experiment`) is named and no process stopped here yet."""
    names, folder = os.environ.get(AT_ENV, ""), os.environ.get(DIR_ENV)
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    key = f"{point}@{experiment}" if experiment and f"{point}@{experiment}" in wanted else point
    if not folder or key not in wanted:
        return
    try:
        fd = os.open(os.path.join(folder, key), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    while True:
        time.sleep(1.0)


def attach(trainer: Any, experiment: str) -> None:
    """The checkpoint points on a transformers Trainer, when any point is named (else nothing)."""
    if os.environ.get(AT_ENV):
        trainer.add_callback(_checkpoint_pauses(experiment))


def _checkpoint_pauses(experiment: str) -> Any:
    from transformers import TrainerCallback  # transformers takes seconds to import: only where it is used
    from transformers.trainer_callback import ExportableState  # transformers: deferred, as above

    class CheckpointPauses(TrainerCallback, ExportableState):
        """`before-save` as a checkpoint is due; `mid-save` when the Trainer collects the callbacks' states,
        after the weights and optimizer are written and before `trainer_state.json` (written last)."""

        def __init__(self) -> None:
            self.step, self.first_save = 0, None

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step = state.global_step
            if control.should_save:
                self.first_save = self.first_save or self.step
                if self.step > self.first_save:
                    pause("before-save", experiment)

        def state(self) -> dict[str, Any]:
            if self.first_save is not None and self.step > self.first_save:
                pause("mid-save", experiment)
            return {"args": {}, "attributes": {}}

    return CheckpointPauses()
