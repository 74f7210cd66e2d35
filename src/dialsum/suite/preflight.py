"""Everything a suite checks before its first experiment starts, run in a child process.

    dialsum suite configs/suites/main5.yaml --data /path/to/competition   # refused at once if a CSV is bad
    pytest tests/test_suite.py -k preflight

For each chosen experiment, as its `dialsum train` would see it: the config plan against this machine
and transformers (`dialsum validate`'s checks: optimizer, training arguments, generation settings,
LoRA targets), and its three data files (read and checked once per distinct file). The check builds
transformers' training arguments, which select a device, so it runs in its own process
(`python -m dialsum.suite.preflight`, a JSON request on stdin, a JSON answer on stdout): the suite itself
never holds GPU memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dialsum.errors import DialsumError


def check(request: dict[str, Any]) -> dict[str, list[str]]:
    """{experiment name: problems} for a request {"options": {...}, "experiments": [{name, config, sets}]}."""
    from dialsum import config, data
    from dialsum.device import probe
    from dialsum.recipe import RunOptions, apply_options
    from dialsum.resolve import plan_and_check

    options = request["options"]
    opts = RunOptions(init=options.get("init"), max_steps=options.get("max_steps"),
                      one_epoch=bool(options.get("one_epoch")))
    device, read = probe(), {}
    problems: dict[str, list[str]] = {}
    for item in request["experiments"]:
        found: list[str] = []
        try:
            cfg = config.load(item["config"], item["sets"])
            apply_options(cfg, opts)
            plan = plan_and_check(cfg, None, device)
            found += plan.errors
            for name, with_summary in ((cfg.data.train_file, True), (cfg.data.dev_file, True),
                                       (cfg.data.test_file, False)):
                path = str(Path(cfg.data.dir) / name)
                if path not in read:
                    read[path] = _data_problem(data, path, with_summary)
                found += [read[path]] if read[path] else []
        except DialsumError as err:
            found.append(str(err))
        if found:
            problems[item["name"]] = found
    return problems


def _data_problem(data: Any, path: str, with_summary: bool) -> str | None:
    try:
        data.read_split(path, with_summary=with_summary)
    except DialsumError as err:
        return str(err)
    return None


def run_check(request: dict[str, Any]) -> dict[str, list[str]]:
    """`check` in a child process; its crash is a one-line error with the last line it printed."""
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


def main() -> None:
    from dialsum.recipe import quiet_libraries

    quiet_libraries()
    print(json.dumps(check(json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
