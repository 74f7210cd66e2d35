"""`dialsum tune`: an Optuna study over generation settings on a finished run, continued across calls."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import FAST, assert_clean_error, run_cli

from dialsum import config, tune, tune_finish, tune_space, tune_study
from dialsum.config import RunOptions
from dialsum.errors import DialsumError
from dialsum.finished_run import read_dev
from dialsum.metrics import score
from dialsum.recipe import run_experiment
from dialsum.sections import TuneSection

BATCH_OPT = Path("configs/experiments/04_batch_optimization_rtx3090.yaml")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_data) -> Path:
    run = tmp_path_factory.mktemp("tune") / "run"
    cfg = config.load(BATCH_OPT, [*FAST, f"data.dir={small_data}", "tune.max_length=[8, 16, 32]"])
    run_experiment(cfg, RunOptions(init="tiny", run_dir=run, max_steps=3))
    return run


def fresh_copy(run: Path, tmp_path: Path) -> Path:
    """The finished run without any tuning of it (other tests tune the shared one)."""
    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("tune", "submission_tuned.csv")))


def completed(run: Path) -> list[Any]:
    import optuna

    study = optuna.load_study(study_name="generation", storage=f"sqlite:///{run / 'tune' / 'study.db'}")
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@pytest.mark.slow
def test_tune_chooses_on_the_search_rows_and_reports_the_held_out_ones(finished, small_data, tmp_path):
    proc = run_cli("tune", str(finished), "--trials", "4", "--dev-rows", "5")
    assert proc.returncode == 0, proc.stderr
    out = finished / "tune"
    for name in ("study.db", "best.yaml", "trials.csv", "result.json", "optimization_history.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    split = tune_space.split_dev(12, 5)
    assert result["search"]["rows"] == 5 and result["heldout"]["rows"] == 7 and result["dev_rows"] == 12
    trials = pd.read_csv(out / "trials.csv")
    cfg = config.load(finished / "config.yaml")
    first = trials.iloc[0]
    assert first["trial"] == 0 and first["num_beams"] == cfg.generation.num_beams  # trial 0: the run's own
    assert first["max_length"] == cfg.generation.max_length
    assert result["search"]["own"] == pytest.approx(first["dev_final"], abs=1e-4)
    assert result["search"]["chosen"] == pytest.approx(trials["dev_final"].max(), abs=1e-4)  # no rescoring
    # the run's own settings on the held-out rows: the run's own dev summaries of those rows, scored
    own = pd.read_csv(finished / "dev_predictions.csv", dtype=str, keep_default_na=False).iloc[split.heldout]
    expected = score(list(own["summary"]), [[r] for r in own["reference"]]).final
    assert result["heldout"]["own"] == pytest.approx(expected, abs=0.01)
    held = pd.read_csv(out / "dev_predictions.csv", dtype=str, keep_default_na=False)
    assert list(held["fname"]) == list(own["fname"])  # the recommendation's summaries of the held-out rows
    recommended = result["heldout"]["tuned" if result["recommended"] == "tuned" else "own"]
    assert score(list(held["summary"]), [[r] for r in held["reference"]]).final == pytest.approx(recommended)
    assert (result["recommended"] == "tuned") == (result["heldout"]["tuned"] > result["heldout"]["own"])
    assert "held-out rows the run's own settings score" in proc.stdout
    # predict with the recommended settings reproduces the tuned submission
    again = run_cli("predict", str(finished), "--input", str(small_data / "test.csv"), "--out",
                    str(tmp_path / "p.csv"), "--generation", "tune/best.yaml")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "p.csv").read_text() == (finished / "submission_tuned.csv").read_text()
    # a second call continues the same study
    more = run_cli("tune", str(finished), "--trials", "2", "--dev-rows", "5")
    assert more.returncode == 0, more.stderr
    assert json.loads((out / "result.json").read_text())["trials"] == 6
    other = run_cli("tune", str(finished), "--trials", "1", "--dev-rows", "4")
    assert_clean_error(other, "tune/study.db scored its trials on 5 other dev rows")


@pytest.mark.parametrize(("args", "needle"), [
    (["--trials", "0"], "--trials 0: must be at least 1"),
    (["--dev-rows", "0"], "--dev-rows 0: must be at least 1"),
    (["--dev-rows", "12"], "--dev-rows 12: dev has 12 rows, and the choice is scored on the rows left out"),
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
        tune_space.search_space(cfg, causal=False)
    assert "instruction" in tune_space.search_space(cfg.model_copy(update={"tune": TuneSection()}), causal=True)
    assert "instruction" not in tune_space.search_space(cfg.model_copy(update={"tune": TuneSection()}), causal=False)


def test_beam_settings_are_neutral_without_beams():
    cfg = config.validate_dict({"model": {"name": "x"}})
    tuned = tune_space.apply(cfg, {"num_beams": 1, "length_penalty": 0.7, "early_stopping": True, "min_length": 50,
                             "max_length": 20})
    assert tuned.generation.length_penalty == 1.0 and tuned.generation.early_stopping is False
    assert tuned.generation.min_length == 20


def test_the_split_is_fixed_nested_and_leaves_rows_out():
    half = tune_space.split_dev(100, None)
    assert half == tune_space.split_dev(100, None) and len(half.search) == len(half.heldout) == 50
    assert sorted(half.search + half.heldout) == list(range(100))
    assert half.search != list(range(50))  # a permutation, not the first rows
    small, large = tune_space.split_dev(100, 10), tune_space.split_dev(100, 80)
    assert set(small.search) < set(half.search) < set(large.search)  # nested: held-out rows stay shared
    assert set(large.heldout) < set(half.heldout) < set(small.heldout)
    with pytest.raises(DialsumError, match="--tune-dev-rows 5: dev has 5 rows"):
        tune_space.split_dev(5, 5, "--tune-dev-rows")
    with pytest.raises(DialsumError, match="dev has 1 row"):
        tune_space.split_dev(1, None)


@pytest.mark.slow
def test_jobs_run_trials_in_parallel_processes_on_one_study(finished):
    proc = run_cli("tune", str(finished), "--trials", "4", "--dev-rows", "5", "--jobs", "2")
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
                             "--dev-rows", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while complete() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "finished trial(s) are kept in tune/study.db" in err and "Traceback" not in err
    kept = complete()
    assert kept >= before + 2
    again = run_cli("tune", str(finished), "--trials", "1", "--dev-rows", "5")
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
    assert set(result.best_params) == {"instruction"}
    best = yaml.safe_load((run / "tune" / "best.yaml").read_text(encoding="utf-8"))
    assert best["prompt"]["instruction"] == result.best_params["instruction"]
    trials = pd.read_csv(run / "tune" / "trials.csv", dtype=str)
    assert trials["instruction"][0] == "다음 대화를 요약해줘."  # trial 0: the run's own prompt
    again = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"),
                    "--generation", "tune/best.yaml")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "p.csv").read_text() == (run / "submission_tuned.csv").read_text()


# ---------------------------------------------------------------- bad input, locks and Ctrl-C (one line each)


def test_train_names_its_own_tune_options_before_training(small_data, tmp_path):
    run = tmp_path / "run"
    common = ["train", str(BATCH_OPT), "--init", "tiny", "--data", str(small_data), "--run-dir", str(run)]
    assert_clean_error(run_cli(*common, "--tune", "0"), "--tune 0: must be at least 1")
    assert_clean_error(run_cli(*common, "--tune", "2", "--tune-dev-rows", "0"), "--tune-dev-rows 0: must be at least 1")
    assert_clean_error(run_cli(*common, "--tune", "2", "--tune-dev-rows", "12"), "--tune-dev-rows 12: dev has 12 rows")
    assert not run.exists()  # refused before any work


def test_a_study_file_that_is_not_a_database_is_one_line(finished, tmp_path):
    run = fresh_copy(finished, tmp_path)
    (run / "tune").mkdir()
    garbage = bytes(range(256)) * 40
    (run / "tune" / "study.db").write_bytes(garbage)
    proc = run_cli("tune", str(run), "--trials", "1")
    assert_clean_error(proc, "tune/study.db: file is not a database; move it aside")
    assert (run / "tune" / "study.db").read_bytes() == garbage and not (run / "submission_tuned.csv").exists()


def test_a_second_tune_on_the_same_run_is_refused_naming_the_first(finished, tmp_path):
    from dialsum.locks import FolderLock

    run = fresh_copy(finished, tmp_path)
    (run / "tune").mkdir()
    with FolderLock(run / "tune", "tune", "dialsum tune", "wait"):
        proc = run_cli("tune", str(run), "--trials", "1")
    import os

    assert_clean_error(proc, f"tune/tune.lock: another dialsum tune (pid {os.getpid()}) is working here")
    assert not (run / "tune" / "study.db").exists()


def test_a_study_locked_by_another_program_names_it(finished, tmp_path):
    import subprocess
    import sys

    run = fresh_copy(finished, tmp_path)
    (run / "tune").mkdir()
    db = run / "tune" / "study.db"
    holder = subprocess.Popen([sys.executable, "-c", "import optuna, sqlite3, time\n"
                               f"optuna.create_study(storage='sqlite:///{db}', study_name='generation')\n"
                               f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                               "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_cli("tune", str(run), "--trials", "1", timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert_clean_error(proc, f"tune/study.db: locked by pid {holder.pid} (python", "not by a dialsum tune")


def test_ctrl_c_while_a_trial_is_written_stops_cleanly_and_keeps_it(finished, tmp_path, monkeypatch):
    """A Ctrl-C that lands while Optuna stores a trial's result (once in six tries by hand) is held back until
    the trial is stored, then stops tuning as any Ctrl-C does: KeyboardInterrupt, exit 130 from the CLI."""
    import os
    import signal

    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    run = fresh_copy(finished, tmp_path)
    original = RDBStorage.set_trial_state_values

    def storing(self, trial_id, state, values=None):
        if state == TrialState.COMPLETE:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once, inside the write
        return original(self, trial_id, state, values)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", storing)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_run(tune.TuneOptions(run, trials=3, dev_rows=6))
    assert len(completed(run)) == 1  # the trial being written when Ctrl-C came is complete


def test_an_interrupted_trial_of_the_run_s_own_settings_is_queued_again(finished, tmp_path, monkeypatch):
    run = fresh_copy(finished, tmp_path)
    calls = []
    original = tune_study.Scorer.score

    def interrupted_first(self, params, rows):
        calls.append(params)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C during trial 0, the run's own settings
        return original(self, params, rows)

    monkeypatch.setattr(tune_study.Scorer, "score", interrupted_first)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_run(tune.TuneOptions(run, trials=3, dev_rows=6))
    cfg = config.load(run / "config.yaml")
    own = tune_space.own_params(cfg, tune_space.search_space(cfg, causal=False))
    assert calls == [own]
    tune.tune_run(tune.TuneOptions(run, trials=1, dev_rows=6))
    assert calls[1] == own  # queued again, and run first
    assert [t.params for t in completed(run)] == [own]


def test_a_held_out_loss_is_reported_and_the_run_s_own_settings_stay_recommended(small_data, tmp_path):
    """The search's choice wins on the search rows but loses on the held-out ones: both scores are reported,
    and best.yaml, the held-out predictions and submission_tuned.csv keep the run's own settings."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    cfg = config.validate_dict({"model": {"name": "x"}, "data": {"dir": str(small_data)},
                                "generation": {"num_beams": 4},
                                "tune": {"num_beams": [2, 4], "length_penalty": [], "no_repeat_ngram_size": [],
                                         "repetition_penalty": [], "max_length": [], "min_length": [],
                                         "early_stopping": []}})
    space = tune_space.search_space(cfg, causal=False)
    assert list(space) == ["num_beams"]
    own, other = tune_space.own_params(cfg, space), {**tune_space.own_params(cfg, space), "num_beams": 2}
    study = optuna.create_study(direction="maximize")
    for params, value in ((own, 40.0), (other, 45.0)):
        study.add_trial(optuna.trial.create_trial(
            params=params, value=value, distributions={k: CategoricalDistribution([4, 2]) for k in params}))

    class Scores(tune_study.Scorer):
        def summaries(self, cfg, dialogues):
            return [f"{cfg.generation.num_beams} beams"] * len(dialogues)

        def evaluate(self, params, rows):
            return (50.0 if params["num_beams"] == 4 else 48.0), self.summaries(tune_space.apply(self.cfg, params), rows)

    dev = read_dev(cfg)
    (tmp_path / "tune").mkdir()
    result = tune_finish.finish(study, Scores(cfg, None, None, "bart", dev), space, tune_space.split_dev(len(dev), None), tmp_path)
    assert result.search.chosen == 45.0 and result.search.own == 40.0  # the trials' own scores
    assert result.heldout.model_dump() == {"rows": 6, "own": 50.0, "tuned": 48.0} and result.recommended == "own"
    assert yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())["generation"]["num_beams"] == 4
    assert set(pd.read_csv(tmp_path / "tune" / "dev_predictions.csv")["summary"]) == {"4 beams"}
    assert set(pd.read_csv(tmp_path / "submission_tuned.csv")["summary"]) == {"4 beams"}
    assert "the tuned settings do not beat the run's own there, so best.yaml keeps the run's own" in result.describe()
