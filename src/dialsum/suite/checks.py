"""Everything refused before a suite starts its first experiment, all problems at once.

    dialsum suite configs/suites/main5.yaml --data /missing       # refused at once, nothing written
    pytest tests/test_suite.py -k "refused or invalid"

First each chosen experiment's config is loaded as its `train` will load it (fast, in this
process); then `preflight` plans each one against this machine and transformers and reads its data
files, in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.sections import ExperimentConfig
from dialsum.suite.schema import SuiteFile
from dialsum.suite.state import TrainArgs


def load_configs(suite: SuiteFile, chosen: list[str], args: TrainArgs) -> dict[str, ExperimentConfig]:
    """Load every chosen experiment's config as its run will; all bad configs reported at once."""
    loaded, problems = {}, {}
    for name in chosen:
        entry = suite.entry(name)
        try:
            loaded[name] = config.load(entry.config, args.overrides(entry.set))
        except DialsumError as err:
            problems[name] = [str(err)]
    refuse_problems(problems, len(chosen), "have an invalid config")
    return loaded


def check_experiments(suite: SuiteFile, chosen: list[str], args: TrainArgs) -> None:
    """What each chosen experiment's `train` (and a sweep entry's `sweep`) would refuse, all at once."""
    request = {
        "options": {"init": args.init, "one_epoch": args.one_epoch, "max_steps": args.max_steps},
        "experiments": [{"name": n, "config": suite.entry(n).config, "sets": args.overrides(suite.entry(n).set),
                         "sweep": (s := suite.entry(n).sweep) and s.model_dump()} for n in chosen],
    }
    refuse_problems(run_preflight(request), len(chosen), "cannot run")


def run_preflight(request: dict[str, Any]) -> dict[str, list[str]]:
    """`dialsum.suite.preflight.check` in a child process; its crash is a one-line error with the last line it printed."""
    proc = subprocess.run([sys.executable, "-m", "dialsum.suite.preflight"], input=json.dumps(request),
                          capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    try:
        answer = json.loads(last)
    except json.JSONDecodeError:
        answer = None
    if proc.returncode != 0 or not isinstance(answer, dict):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DialsumError(f"the suite's up-front check failed (exit {proc.returncode}: {tail}); "
                           "run `dialsum validate` on the configs to see why")
    return answer


def refuse_problems(problems: dict[str, list[str]], total: int, what: str) -> None:
    """One error listing every problem once, with the experiments it concerns (a shared data file once)."""
    if not problems:
        return
    by_text: dict[str, list[str]] = {}
    for name, items in problems.items():
        for item in items:
            by_text.setdefault(item.replace("\n", "\n    "), []).append(name)
    lines = [f"{', '.join(names)}: {text}" for text, names in by_text.items()]
    raise DialsumError(
        f"{len(problems)} of {total} experiment(s) {what}; nothing was run. Fix them first:\n"
        + "\n".join(f"  - {line}" for line in lines)
    )


def check_train_args(args: TrainArgs) -> TrainArgs:
    config.check_init(args.init)
    config.check_max_steps(args.max_steps, args.one_epoch)
    return args
