"""The `dialsum` logger as a run sets it up, and the libraries' chatter kept out of it.

    dialsum train configs/experiments/04_batch_optimization_rtx3090.yaml --init tiny --max-steps 5
    pytest tests/test_recipe.py -k log

A run logs to stderr at once, and to its `train.log` from the moment its run directory exists: the lines
logged before that are held in memory and written first (`RunLog.to_file`). Under DDP only rank 0 logs in
full; the other ranks say warnings and errors only. `quiet_libraries` silences transformers' and peft's
deprecation notices and progress bars for every command that loads a model.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import warnings
from pathlib import Path

log = logging.getLogger("dialsum")
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
BUFFERED_LINES = 10_000  # lines held before the run directory exists: a few seconds of set-up log at most


class RunLog:
    """The handlers of one run: stderr, and a buffer that becomes train.log; `close()` removes them again, so
    a second run in the same process logs into its own train.log."""

    def __init__(self, main: bool) -> None:
        log.setLevel(logging.INFO if main else logging.WARNING)
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()
        self.buffer = logging.handlers.MemoryHandler(BUFFERED_LINES, flushLevel=logging.CRITICAL + 1)
        stderr = logging.StreamHandler(sys.stderr)
        for handler in (stderr, self.buffer) if main else (stderr,):
            handler.setFormatter(FORMAT)
            log.addHandler(handler)
        log.propagate = False
        quiet_libraries()

    def to_file(self, path: Path) -> None:
        """`path` gets the lines logged so far, then every later one."""
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(FORMAT)
        self.buffer.setTarget(file)
        self.buffer.flush()
        log.removeHandler(self.buffer)
        log.addHandler(file)

    def close(self) -> None:
        for handler in list(log.handlers):
            handler.flush()
            if isinstance(handler, (logging.FileHandler, logging.handlers.MemoryHandler)):
                log.removeHandler(handler)
                handler.close()


def quiet_libraries() -> None:
    """Library chatter (deprecation notices, shard progress bars) stays out of the user's log."""
    from transformers.utils import logging as hf_logging  # transformers takes seconds to import: only here

    hf_logging.set_verbosity_error()  # configures the library's logger first, so the level holds
    for noisy in ("peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    warnings.filterwarnings("ignore", category=UserWarning, module="bitsandbytes")  # "paged ... on CPU": adapted
