"""Everything a suite checks before its first experiment starts, run in a child process.

    dialsum suite configs/suites/main5.yaml --data /path/to/competition   # refused at once if a CSV is bad
    pytest tests/test_suite.py -k preflight

For each chosen experiment, as its `dialsum train` would see it: the config plan against this machine
and transformers (`dialsum validate`'s checks: optimizer, training arguments, generation settings,
LoRA targets), and its three data files (read and checked once per distinct file); for a sweep entry,
its space as `dialsum sweep` checks it before any trial (every value, the corners' plans, the memory
estimate on a GPU) and its dev split. The check builds transformers' training arguments, which select
a device, so it runs in its own process (`python -m dialsum.suite.preflight`, a JSON request on stdin,
a JSON answer on stdout, started by `checks.check_experiments`): the suite itself never holds GPU
memory, and never imports torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dialsum import config, data
from dialsum.config import RunOptions, apply_options
from dialsum.device import probe
from dialsum.errors import DialsumError
from dialsum.finished_run import read_dev
from dialsum.logs import quiet_libraries
from dialsum.resolve import plan_and_check
from dialsum.sections import ExperimentConfig
from dialsum.sweep.checks import check_space
from dialsum.sweep.options import length_option
from dialsum.sweep.space import build_space
from dialsum.tune_space import split_dev


def check(request: dict[str, Any]) -> dict[str, list[str]]:
    """{experiment name: problems} for a request {"options": {...}, "experiments": [{name, config, sets}]}."""
    options = request["options"]
    opts = RunOptions(init=options.get("init"), max_steps=options.get("max_steps"),
                      one_epoch=bool(options.get("one_epoch")))
    device, read = probe(), {}
    problems: dict[str, list[str]] = {}
    for item in request["experiments"]:
        found: list[str] = []
        try:
            loaded = config.load(item["config"], item["sets"])
            cfg = apply_options(loaded, opts)
            plan = plan_and_check(cfg, None, device)
            found += plan.errors
            if item.get("sweep"):
                _check_sweep(loaded, opts, device, item["sweep"])
            for name, with_summary in ((cfg.data.train_file, True), (cfg.data.dev_file, True),
                                       (cfg.data.test_file, False)):
                path = str(Path(cfg.data.dir) / name)
                if path not in read:
                    read[path] = _data_problem(path, with_summary)
                found += [read[path]] if read[path] else []
        except DialsumError as err:
            found.append(str(err))
        if found:
            problems[item["name"]] = found
    return problems


def _check_sweep(cfg: ExperimentConfig, opts: RunOptions, device: Any, sweep: dict[str, Any]) -> None:
    """A sweep entry's space, as `dialsum sweep` checks it before its first trial, and its dev split."""
    space = build_space(cfg, length_option(opts.max_steps, opts.one_epoch))
    check_space(cfg, space, opts.init, device)
    split_dev(len(read_dev(cfg)), sweep.get("dev_rows"), "sweep.dev_rows")


def _data_problem(path: str, with_summary: bool) -> str | None:
    try:
        data.read_split(path, with_summary=with_summary)
    except DialsumError as err:
        return str(err)
    return None


def main() -> None:
    quiet_libraries()
    print(json.dumps(check(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
