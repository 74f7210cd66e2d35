"""Everything refused before a suite starts its first experiment, all problems at once.

    dialsum suite configs/suites/main5.yaml --data /missing       # refused at once, nothing written
    pytest tests/test_suite.py -k "refused or invalid"

First each chosen experiment's config is loaded as its `train` will load it (fast, in this
process); then `preflight` plans each one against this machine and transformers and reads its data
files, in a child process.
"""

from __future__ import annotations

from dialsum import config
from dialsum.errors import DialsumError
from dialsum.suite import preflight
from dialsum.suite.schema import SuiteFile
from dialsum.suite.state import TrainArgs


def load_configs(suite: SuiteFile, chosen: list[str], args: TrainArgs) -> dict[str, config.ExperimentConfig]:
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
    """What each chosen experiment's `train` would refuse (plan, transformers, data), all at once."""
    request = {
        "options": {"init": args.init, "one_epoch": args.one_epoch, "max_steps": args.max_steps},
        "experiments": [{"name": n, "config": suite.entry(n).config, "sets": args.overrides(suite.entry(n).set)}
                        for n in chosen],
    }
    refuse_problems(preflight.run_check(request), len(chosen), "cannot run")


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
