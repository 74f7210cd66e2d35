"""The transformers training arguments of a config, and what transformers would refuse, found up front.

    pytest tests/test_train_args.py
"""

from __future__ import annotations

import pytest

from dialsum import config, train_args
from dialsum.device import probe
from dialsum.resolve import plan_experiment

BATCH_OPT = "configs/experiments/04_batch_optimization_rtx3090.yaml"


def planned(*sets: str):
    return plan_experiment(config.load(BATCH_OPT, list(sets)), "tiny", probe()).cfg


@pytest.mark.parametrize(("metric", "greater"), [("final", True), ("rouge2", True), ("loss", False)])
def test_the_best_checkpoint_is_the_right_end_of_its_metric(metric, greater, tmp_path):
    args = train_args.training_arguments(planned(f"training.metric_for_best_model={metric}"),
                                         output_dir=str(tmp_path), four_bit=False, device="cpu")
    assert args.metric_for_best_model == metric and args.greater_is_better is greater
    assert args.restore_callback_states_from_checkpoint  # early stopping and the meter resume with the run


@pytest.mark.parametrize(("sets", "needle"), [
    (["training.optim=adamw_bogus"], "not an optimizer transformers knows; did you mean"),
    (["training.optim=lomo"], "lomo_optim"),
])
def test_problems_name_the_setting(sets, needle):
    cfg = planned(*sets)
    found = train_args.problems(cfg, four_bit=False, device="cpu")
    assert len(found) == 1 and needle in found[0], found


@pytest.mark.parametrize("optim", ["adamw_torch", "adafactor", "sgd"])
def test_runnable_optimizers_pass(optim):
    assert train_args.problems(planned(f"training.optim={optim}"), four_bit=False, device="cpu") == []


def test_generation_settings_transformers_would_refuse_at_the_first_checkpoint():
    """Unadapted, greedy decoding with early_stopping crashes when a checkpoint is saved; the plan
    switches it off, and the check catches any such setting that reaches it."""
    raw = config.load(BATCH_OPT, ["generation.num_beams=1"])
    found = train_args.problems(raw, four_bit=False, device="cpu")
    assert len(found) == 1 and found[0].startswith("generation: transformers refuses") and "early_stopping" in found[0]
    assert train_args.problems(planned("generation.num_beams=1"), four_bit=False, device="cpu") == []


@pytest.mark.parametrize("find", [False, True])
def test_ddp_searches_for_unused_parameters_only_when_asked(find):
    cfg = planned(f"training.ddp_find_unused_parameters={str(find).lower()}")
    assert train_args.device_arguments(cfg, "cpu", 2) == {
        "use_cpu": True, "ddp_find_unused_parameters": find, "ddp_backend": "gloo"}
    assert train_args.device_arguments(cfg, "cuda", 4) == {"ddp_find_unused_parameters": find}
    assert train_args.device_arguments(cfg, "cuda", 1) == {}  # one process: no DDP settings at all
    assert train_args.device_arguments(cfg, "cuda", 1, launched=True) == {"ddp_find_unused_parameters": find}
