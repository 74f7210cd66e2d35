"""The typed run files: written and read through their models, older shapes still read, a bad file one line.

    pytest tests/test_runfiles.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialsum import runfiles
from dialsum.errors import DialsumError
from dialsum.runfiles import EnsembleResult, ModelInfo, RunMetrics, TuneResult

# The shapes earlier versions wrote (from git history), each read as it was written.
FIRST_METRICS = {  # the first recipe (d3ad1d7): no baseline, tokens, world size or replicas
    "parameters": 123, "trainable_parameters": 12, "added_tokens": 15, "train_seconds": 1.5, "steps": 2,
    "epochs": 0.25, "train_loss": 7.1, "train_tokens_per_second": 80.0, "best_checkpoint": None,
    "peak_memory_mb": 900.0, "memory_kind": "rss",
    "dev": {"morpheme": {"rouge1": 0.1, "rouge2": 0.05, "rougeL": 0.09, "final": 8.0, "sum": 0.24, "n": 12,
                         "tokenize": "morpheme"},
            "whitespace": {"rouge1": 0.05, "rouge2": 0.01, "rougeL": 0.05, "final": 3.67, "sum": 0.11, "n": 12,
                           "tokenize": "whitespace"}},
    "submission": "submission.csv", "experiment": "kobart", "label": "", "model_name": "digit82/kobart-summarization",
    "arch": "bart", "init": "tiny", "micro_batch": 16, "grad_accum": 3, "effective_batch": 48,
    "learning_rate": 6e-5, "adaptations": ["tokenizer.encoder_max_len=1280 exceeds ..."], "lora_targets": None,
    "wall_seconds": 9.5,
}
FIRST_MODEL_INFO = {"base": "/old/cwd/runs/x/base_model", "family": "bart", "vocab_size": 615, "adapter": True,
                    "four_bit": False, "init": "tiny", "model_name": "digit82/kobart-summarization"}
FIRST_TUNE_RESULT = {"trials": 20, "dev_rows_tuned": 100, "dev_rows": 200, "own_score_subset": 41.0,
                     "own_score": 41.3, "best_score": 45.0, "best": "trial 3", "best_params": {"num_beams": 2},
                     "rescored": [{"name": "trial 3", "score": 45.0}]}
FIRST_ENSEMBLE = {"dev_final": 47.5, "candidates": 1, "weighted": True, "tuned": False,
                  "members": [{"name": n, "run_dir": "x", "dev_final": 44.0, "dev_picks": 4, "test_picks": 4}
                              for n in ("a", "b", "c")]}


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_files_of_the_first_version_still_read(tmp_path):
    metrics = runfiles.read(write(tmp_path / "metrics.json", FIRST_METRICS), RunMetrics, "fix")
    assert metrics.dev_final == 8.0 and metrics.baseline is None and metrics.world_size is None
    assert metrics.dev.whitespace.final == 3.67 and metrics.adaptations == FIRST_METRICS["adaptations"]
    info = runfiles.read(write(tmp_path / "model_info.json", FIRST_MODEL_INFO), ModelInfo, "fix")
    assert (info.world_size, info.compute_dtype, info.adapter) == (1, "float32", True)
    tune = runfiles.read(write(tmp_path / "tune" / "result.json", FIRST_TUNE_RESULT), TuneResult, "fix")
    assert tune.heldout is None and tune.best_params == {"num_beams": 2}
    assert "written before tuning held dev rows out" in tune.describe()
    ensemble = runfiles.read(write(tmp_path / "ensemble.json", FIRST_ENSEMBLE), EnsembleResult, "fix")
    assert ensemble.weights is None and not ensemble.score_is_honest  # its weights saw the rows it scored
    assert EnsembleResult.model_validate({**FIRST_ENSEMBLE, "weighted": False}).score_is_honest


def test_a_run_file_is_written_as_set_and_reads_back_equal(tmp_path):
    metrics = RunMetrics(experiment="a", steps=3)
    metrics.dev = {"morpheme": {"final": 12.5, "n": 4}}  # validated on assignment: a DevScores
    metrics.write(tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "experiment": "a", "steps": 3, "dev": {"morpheme": {"final": 12.5, "n": 4}}}  # only what was set
    assert runfiles.read(tmp_path / "metrics.json", RunMetrics, "fix") == metrics
    with pytest.raises(ValueError, match="steps"):
        metrics.steps = "many"  # type: ignore[assignment]


@pytest.mark.parametrize(("content", "needles"), [
    ('{"dev": {"morpheme": {"final": "high"}}', ["not valid JSON (line 1"]),
    ('{"dev": {"morpheme": {"final": "high"}}}', ["dev.morpheme.final: Input should be a valid number", "'high'"]),
    ('[1, 2]', ["holds list, not an object"]),
])
def test_a_file_that_does_not_match_is_one_line_naming_it_and_the_field(tmp_path, content, needles):
    path = tmp_path / "metrics.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DialsumError) as err:
        runfiles.read(path, RunMetrics, "train the run again")
    message = str(err.value)
    assert message.startswith(f"{path}: ") and message.endswith("; train the run again") and "\n" not in message
    for needle in needles:
        assert needle in message


def test_load_gives_the_reason_in_a_few_words_for_a_report_note(tmp_path):
    assert runfiles.load(tmp_path / "metrics.json", RunMetrics) == (None, "metrics.json missing")
    write(tmp_path / "metrics.json", {"steps": "x"})
    found, why = runfiles.load(tmp_path / "metrics.json", RunMetrics)
    assert found is None and why.startswith("metrics.json does not match (steps: Input should be a valid integer")
