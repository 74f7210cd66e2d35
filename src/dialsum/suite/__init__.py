"""The experiment suite: many experiments, each in its own process, on this machine's slots or a Ray cluster.

    dialsum suite configs/suites/main5.yaml [--gpus 0,1 | --slots 2] [--resume]
    pytest tests/test_suite.py

Modules: `schema` (the suite file), `state` (typed records, shared with the report), `checks` and
`preflight` (everything refused up front), `failures` (classification, OOM retry), `process` (command
lines, orphans; processes start and stop through `dialsum.lifeline`), `lock`, `monitor` (memory, the smart
wait), `display`, `opening` (the options, arguments, state and backend a run starts from), `runner` (the
scheduler, `run_suite`), `sweep_entry` (an entry that sweeps, then trains the best), `ensemble_step` (the
step after the experiments) and `backends` (local slots, Ray). This package imports none of them:
`import dialsum.suite.state` loads the state alone.
"""
