"""`dialsum tune`: an Optuna study over generation settings on a finished run, continued across calls."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import FAST, assert_clean_error, run_cli

from dialsum import config, tune
from dialsum.errors import DialsumError
from dialsum.recipe import RunOptions, run_experiment

BATCH_OPT = Path("configs/experiments/04_batch_optimization_rtx3090.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_data) -> Path:
    run = tmp_path_factory.mktemp("tune") / "run"
    cfg = config.load(BATCH_OPT, [*FAST, f"data.dir={small_data}", "tune.max_length=[8, 16, 32]"])
    run_experiment(cfg, RunOptions(init="tiny", run_dir=run, max_steps=3))
    return run


@pytest.mark.slow
def test_tune_writes_every_file_and_never_loses_to_the_run_s_own_settings(finished, small_data, tmp_path):
    proc = run_cli("tune", str(finished), "--trials", "4", "--dev-rows", "6")
    assert proc.returncode == 0, proc.stderr
    out = finished / "tune"
    for name in ("study.db", "best.yaml", "trials.csv", "result.json", "optimization_history.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert result["trials"] == 4 and result["dev_rows_tuned"] == 6 and result["dev_rows"] == 12
    assert result["best_score"] >= result["own_score"]  # the run's own settings are rescored beside the best
    trials = pd.read_csv(out / "trials.csv")
    cfg = config.load(finished / "config.yaml")
    first = trials.iloc[0]
    assert first["trial"] == 0 and first["num_beams"] == cfg.generation.num_beams  # trial 0: the run's own
    assert first["max_length"] == cfg.generation.max_length
    own_metrics = json.loads((finished / "metrics.json").read_text())["dev"]["morpheme"]["final"]
    assert result["own_score"] == pytest.approx(own_metrics, abs=0.01)  # the same model, settings and rows
    assert "own settings score" in proc.stdout
    # predict with the tuned settings reproduces the tuned submission
    again = run_cli("predict", str(finished), "--input", str(small_data / "test.csv"), "--out",
                    str(tmp_path / "p.csv"), "--generation", "tune/best.yaml")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "p.csv").read_text() == (finished / "submission_tuned.csv").read_text()
    # a second call continues the same study
    more = run_cli("tune", str(finished), "--trials", "2", "--dev-rows", "6")
    assert more.returncode == 0, more.stderr
    assert json.loads((out / "result.json").read_text())["trials"] == 6
    other = run_cli("tune", str(finished), "--trials", "1", "--dev-rows", "5")
    assert_clean_error(other, "tune/study.db scored its trials on 6 dev rows")


@pytest.mark.parametrize(("args", "needle"), [
    (["--trials", "0"], "--trials 0: must be at least 1"),
    (["--dev-rows", "0"], "--dev-rows 0: must be at least 1"),
])
def test_bad_options_are_one_line(finished, args, needle):
    assert_clean_error(run_cli("tune", str(finished), *args), needle)


def test_a_directory_that_is_not_a_finished_run_is_refused(tmp_path):
    assert_clean_error(run_cli("tune", str(tmp_path), "--trials", "1"), "not a finished run (config.yaml is missing)")


def test_an_empty_search_space_is_refused():
    cfg = config.validate_dict({"model": {"name": "x"}, "tune": {
        "num_beams": [], "length_penalty": [], "no_repeat_ngram_size": [], "repetition_penalty": [],
        "max_length": [128], "min_length": [], "early_stopping": [True]}})
    with pytest.raises(DialsumError, match="the search space is empty"):
        tune.search_space(cfg, causal=False)
    assert "instruction" in tune.search_space(cfg.model_copy(update={"tune": config.TuneSection()}), causal=True)
    assert "instruction" not in tune.search_space(cfg.model_copy(update={"tune": config.TuneSection()}), causal=False)


def test_beam_settings_are_neutral_without_beams():
    cfg = config.validate_dict({"model": {"name": "x"}})
    tuned = tune.apply(cfg, {"num_beams": 1, "length_penalty": 0.7, "early_stopping": True, "min_length": 50,
                             "max_length": 20})
    assert tuned.generation.length_penalty == 1.0 and tuned.generation.early_stopping is False
    assert tuned.generation.min_length == 20


def test_the_dev_subset_is_fixed_by_the_seed():
    assert tune.dev_subset(100, 10, 42) == tune.dev_subset(100, 10, 42) != tune.dev_subset(100, 10, 7)
    assert tune.dev_subset(5, 10, 42) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_jobs_run_trials_in_parallel_processes_on_one_study(finished):
    proc = run_cli("tune", str(finished), "--trials", "4", "--dev-rows", "6", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
    import optuna

    study = optuna.load_study(study_name="generation", storage=f"sqlite:///{finished / 'tune' / 'study.db'}")
    assert sum(t.value is not None for t in study.trials) >= 4
    assert_clean_error(run_cli("tune", str(finished), "--jobs", "64"), "--jobs 64: this machine has")


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_trials_and_tune_continues(finished):
    import signal
    import subprocess
    import sys
    import time

    import optuna
    from conftest import ROOT

    db = finished / "tune" / "study.db"

    def complete() -> int:
        if not db.is_file():
            return 0
        try:
            study = optuna.load_study(study_name="generation", storage=f"sqlite:///{db}")
        except KeyError:
            return 0
        return sum(t.value is not None for t in study.trials)

    before = complete()
    proc = subprocess.Popen([sys.executable, "-m", "dialsum.cli", "tune", str(finished), "--trials", "200",
                             "--dev-rows", "6"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while complete() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "finished trial(s) are kept in tune/study.db" in err and "Traceback" not in err
    kept = complete()
    assert kept >= before + 2
    again = run_cli("tune", str(finished), "--trials", "1", "--dev-rows", "6")
    assert again.returncode == 0, again.stderr
    assert complete() == kept + 1


def test_every_value_of_the_search_space_is_checked_up_front():
    with pytest.raises(DialsumError, match=r"tune: num_beams: 0 is not a valid generation.num_beams"):
        config.validate_dict({"model": {"name": "x"}, "tune": {"num_beams": [0, 2]}})
    with pytest.raises(DialsumError, match=r"tune.length_penalty: \[2.0, 1.0\]: give \[low, high\]"):
        config.validate_dict({"model": {"name": "x"}, "tune": {"length_penalty": [2, 1]}})
    assert config.validate_dict({"model": {"name": "x"}, "tune": {"min_length": [300]}}).tune.min_length == [300]


@pytest.mark.slow
def test_a_causal_run_tunes_its_instruction_and_predict_reads_it_back(small_data, tmp_path):
    run = tmp_path / "run"
    cfg = config.load(Path("configs/experiments/05_solar_10.7b_qlora.yaml"), [
        *FAST, f"data.dir={small_data}", "training.per_device_train_batch_size=4",
        "training.gradient_accumulation_steps=1", "tune.num_beams=[]", "tune.length_penalty=[]",
        "tune.no_repeat_ngram_size=[]", "tune.repetition_penalty=[]", "tune.max_length=[]", "tune.min_length=[]",
        "tune.early_stopping=[]", "tune.trim_unfinished=[]", "tune.instruction=[요약해., 짧게 요약해.]"])
    run_experiment(cfg, RunOptions(init="tiny", run_dir=run, max_steps=2))
    result = tune.tune_run(tune.TuneOptions(run, trials=3))
    assert set(result["best_params"]) == {"instruction"}
    best = yaml.safe_load((run / "tune" / "best.yaml").read_text(encoding="utf-8"))
    assert best["prompt"]["instruction"] == result["best_params"]["instruction"]
    trials = pd.read_csv(run / "tune" / "trials.csv", dtype=str)
    assert trials["instruction"][0] == "다음 대화를 요약해줘."  # trial 0: the run's own prompt
    again = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"),
                    "--generation", "tune/best.yaml")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "p.csv").read_text() == (run / "submission_tuned.csv").read_text()
