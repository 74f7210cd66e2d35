"""`dialsum sweep`: an Optuna search over training settings, each trial a `dialsum train` process on the
suite's slots (GPUs, CPU shares or Ray), pruned on its dev score as it trains, ending in a config a suite can
list.

    dialsum sweep configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny --max-steps 60 --trials 8 --slots 2
    pytest tests/test_sweep.py

Modules: `space` (the dimensions of the config's `sweep` section, a trial's settings as `--set` values),
`schedule` (when trials evaluate dev, the steps the pruner compares), `checks` (every value validated up
front), `study` (storage, sampler, pruner), `trials` (a trial's folder, process, scores and checkpoints),
`driver` (the loop: ask, start, report, prune, tell; Ctrl-C and resume), `options` (the options and
`sweep.json`), `command` (the command, in order), `finish` (held-out scores, best.yaml) and `report`
(trials.csv, plots, report.md and .html). This package imports none of them.
"""
