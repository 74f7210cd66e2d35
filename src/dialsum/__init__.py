"""dialsum: fine-tune, evaluate and compare seq2seq models and LLMs for Korean dialogue summarization.

    import dialsum
    run = dialsum.train("configs/experiments/01_baseline_kobart_rtx3090.yaml", init="tiny")
    help(dialsum.train)

The public Python API (`dialsum.api`), on the same functions as the `dialsum` command. Importing the package
loads no torch, transformers or pandas.
"""

from dialsum.api import (
    Run,
    SuiteRun,
    SweepRun,
    Validation,
    compare,
    ensemble_runs,
    load_config,
    make_sample,
    open_run,
    predict,
    results,
    run_suite,
    run_sweep,
    score,
    train,
    tune_run,
    validate,
)
from dialsum.errors import DialsumError

__version__ = "0.1.0"
__all__ = [
    "DialsumError", "Run", "SuiteRun", "SweepRun", "Validation", "compare", "ensemble_runs", "load_config",
    "make_sample", "open_run", "predict", "results", "run_suite", "run_sweep", "score", "train", "tune_run", "validate",
]  # fmt: skip
