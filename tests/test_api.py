"""The public Python API (`import dialsum`): the commands' functions, their errors and messages, from Python.

    pytest tests/test_api.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import CONFIGS, FAST, make_data_dir, run_cli

import dialsum
from dialsum import api, runfiles
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_rows

KOBART = CONFIGS / "01_baseline_kobart_rtx3090.yaml"
HIGH_LR = CONFIGS / "03_high_learning_rate_rtx3090.yaml"
BATCH_OPT = CONFIGS / "04_batch_optimization_rtx3090.yaml"


def error_line(proc: Any) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0][len("error: "):]


def test_every_public_name_stays_the_api_s_after_every_module_is_imported() -> None:
    """Importing a module sets its name on the package (`dialsum.tune` becomes the module tune.py once anything
    imports it): no public name may be a module's."""
    for info in pkgutil.walk_packages(dialsum.__path__, "dialsum."):
        if info.name not in ("dialsum.__main__",):
            importlib.import_module(info.name)
    replaced = [name for name in dialsum.__all__ if inspect.ismodule(getattr(dialsum, name))]
    assert replaced == []
    assert all(getattr(dialsum, name) is getattr(api, name) for name in dialsum.__all__ if hasattr(api, name))


def test_every_public_function_documents_itself() -> None:
    for name in dialsum.__all__:
        assert inspect.getdoc(getattr(dialsum, name)), name
    text = pydoc_text(dialsum.train)
    assert "tune_trials" in text and "Returns:" in text and "Raises:" in text


def pydoc_text(obj: Any) -> str:
    import pydoc

    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def test_overrides_as_a_mapping_or_as_set_strings_give_the_same_config(tmp_path: Path) -> None:
    mapping = {"training.learning_rate": 1e-4, "generation.num_beams": 3, "training.report_to": ["none"],
               "prompt.instruction": "대화를 요약해: 짧게"}
    strings = ["training.learning_rate=1e-4", "generation.num_beams=3", "training.report_to=[none]",
               'prompt.instruction="대화를 요약해: 짧게"']  # quoted, as YAML reads a colon
    from_mapping = dialsum.load_config(KOBART, mapping, data=tmp_path)
    assert from_mapping == dialsum.load_config(KOBART, strings, data=tmp_path)
    assert from_mapping.training.learning_rate == 1e-4 and from_mapping.prompt.instruction == "대화를 요약해: 짧게"
    assert from_mapping.data.dir == str(tmp_path)


@pytest.mark.parametrize(("call", "args"), [
    (lambda d: dialsum.train(KOBART, {"training.bogus": 1}, data=d), ["train", str(KOBART), "--set",
                                                                     "training.bogus=1"]),
    (lambda d: dialsum.train(KOBART, data=d, init="huge"), ["train", str(KOBART), "--init", "huge"]),
    (lambda d: dialsum.train(KOBART, data=d, max_steps=0), ["train", str(KOBART), "--max-steps", "0"]),
    (lambda d: dialsum.train(KOBART, data=d / "missing", init="tiny"), ["train", str(KOBART), "--init", "tiny",
                                                                         "--data", "{d}/missing"]),
    (lambda d: dialsum.open_run(d), ["predict", "{d}", "--input", "x.csv"]),
    (lambda d: dialsum.tune_run(d, trials=0), ["tune", "{d}", "--trials", "0"]),
    (lambda d: dialsum.compare([d / "a", d / "a"], d / "page"), ["compare", "{d}/a", "{d}/a", "--out", "{d}/page"]),
    (lambda d: dialsum.run_sweep(KOBART, 0, data=d, out=d / "sw"), ["sweep", str(KOBART), "--trials", "0", "--data",
                                                                    "{d}", "--out", "{d}/sw"]),
    (lambda d: dialsum.run_sweep(KOBART, 2, {"sweep.lora_rank": [8]}, data=d, out=d / "sw"),
     ["sweep", str(KOBART), "--trials", "2", "--set", "sweep.lora_rank=[8]", "--data", "{d}", "--out", "{d}/sw"]),
], ids=["unknown key", "bad init", "no steps", "missing data", "not a run", "no trials", "same run twice",
        "no sweep trials", "lora space without lora"])
def test_bad_input_raises_the_command_s_error_with_its_message(call: Any, args: list[str], tmp_path: Path) -> None:
    """Each call fails as its command does: the same DialsumError text, before anything is written."""
    (tmp_path / "a").mkdir()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DialsumError) as raised:
        call(tmp_path)
    assert str(raised.value) == error_line(run_cli(*(a.replace("{d}", str(tmp_path)) for a in args)))
    assert sorted(tmp_path.rglob("*")) == before


def test_score_lists_as_the_command_scores_files(tmp_path: Path) -> None:
    dev = pd.read_csv(make_data_dir(tmp_path / "data", 1, 8, 1) / "dev.csv", dtype=str)
    preds = [s.split(". ")[0] for s in dev["summary"]]
    atomic_write_rows(tmp_path / "pred.csv", ["fname", "summary"], zip(dev["fname"], preds, strict=True))
    proc = run_cli("score", "--pred", str(tmp_path / "pred.csv"), "--gold", str(tmp_path / "data" / "dev.csv"),
                   "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    command = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    scores = dialsum.score(preds, list(dev["summary"]))
    assert scores.final == pytest.approx(command["final"], abs=1e-9) and 0 < scores.final < 100
    with pytest.raises(DialsumError, match="2 predictions but 1 reference"):
        dialsum.score(["a", "b"], ["a"])


def test_validate_returns_the_plan_the_command_prints() -> None:
    check = dialsum.validate(HIGH_LR, ["training.num_train_epochs=2"], init="tiny")
    proc = run_cli("validate", str(HIGH_LR), "--set", "training.num_train_epochs=2", "--init", "tiny")
    assert check.ok and proc.returncode == 0
    assert str(check).strip() == proc.stdout.strip()
    broken = dialsum.validate(HIGH_LR, ["training.learning_rate=-1"])
    assert not broken.ok and "CANNOT RUN" in broken.text and "training.learning_rate" in broken.text


# ---------------------------------------------------------------- tiny runs, trained in this process


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> dict[str, Any]:
    """Three tiny runs trained through the API in this process, the first of them twice."""
    root = tmp_path_factory.mktemp("api")
    runs = {name: dialsum.train(config, FAST, data=small_data, init="tiny", run_dir=root / name, max_steps=3)
            for name, config in (("a", KOBART), ("a_again", KOBART), ("b", HIGH_LR), ("c", BATCH_OPT))}
    return {"root": root, "runs": runs, "data": small_data}


@pytest.mark.slow
def test_a_trained_run_reports_what_its_files_hold(trained: dict[str, Any]) -> None:
    run = trained["runs"]["a"]
    metrics = json.loads((run.dir / "metrics.json").read_text(encoding="utf-8"))
    assert run.dev_score == metrics["dev"]["morpheme"]["final"] and run.name == "kobart_baseline"
    assert run.submission == run.dir / "submission.csv" and run.submission.is_file()
    assert dialsum.open_run(run.dir) == run
    preds = run.dev_predictions()
    assert dialsum.score(list(preds["summary"]), list(preds["reference"])).final == pytest.approx(run.dev_score)
    assert re.fullmatch(r"Run\('kobart_baseline', dev_score=\d+\.\d\d, dir='.+'\)", repr(run))


@pytest.mark.slow
def test_two_runs_of_one_config_in_one_process_report_the_same_numbers(trained: dict[str, Any]) -> None:
    """Nothing of a first run leaks into a second in the same process: same tokens, steps and scores."""
    first, again = trained["runs"]["a"].metrics, trained["runs"]["a_again"].metrics
    for key in ("train_tokens", "steps", "dev_final", "parameters"):
        assert getattr(first, key) == getattr(again, key), key
    assert first.peak_memory_mb and again.peak_memory_mb and first.train_seconds and again.train_seconds


@pytest.mark.slow
def test_predict_tune_ensemble_and_compare_from_python(trained: dict[str, Any], tmp_path: Path) -> None:
    a, b, c = (trained["runs"][k] for k in ("a", "b", "c"))
    test = pd.read_csv(trained["data"] / "test.csv", dtype=str)
    written = pd.read_csv(dialsum.predict(a, trained["data"] / "test.csv", tmp_path / "sub.csv"), dtype=str)
    assert list(written["fname"]) == list(test["fname"])
    tuned = dialsum.tune_run(a, trials=2)
    assert tuned.heldout is not None and tuned.heldout.rows == 6 and dialsum.open_run(a.dir).tuned == tuned
    ens = dialsum.ensemble_runs([a, b, c.dir], tmp_path / "ens")
    assert [m.name for m in ens.members] == ["kobart_baseline", "kobart_high_lr", "kobart_batch_opt"]
    page = page_data(dialsum.compare([a, b, c, tmp_path / "ens"], tmp_path / "page"))
    kinds = [(o["name"], o["kind"]) for o in page["outputs"]]
    assert kinds == [("kobart_baseline", "run"), ("kobart_baseline", "tuned"), ("kobart_high_lr", "run"),
                     ("kobart_batch_opt", "run"), ("ens", "ensemble")]
    means = [o["mean"] for o in page["outputs"]]
    assert means == pytest.approx([a.dev_score, tuned.heldout.tuned, b.dev_score, c.dev_score, ens.dev_final],
                                  abs=0.006)  # each rounded to 2 decimals on the page
    assert page["outputs"][1]["scored_rows"] == 6 and len(page["outputs"][1]["chosen"]) == 6


def page_data(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="dialsum-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(data)


@pytest.mark.slow
def test_results_reads_a_suite_s_runs_as_its_report_does(trained: dict[str, Any], tmp_path: Path) -> None:
    records = [{"name": name, "state": "finished", "run_dir": str(trained["runs"][name].dir)} for name in ("b", "c")]
    records.append({"name": "d", "state": "failed"})
    (tmp_path / "suite_state.json").write_text(json.dumps({"suite": "mine", "records": records}), encoding="utf-8")
    table = dialsum.results(tmp_path)
    assert list(table["name"]) == ["b", "c", "d"] and list(table["state"]) == ["finished", "finished", "failed"]
    assert list(table["morpheme_final"][:2]) == pytest.approx([trained["runs"][k].dev_score for k in ("b", "c")])
    assert not (tmp_path / "report.md").exists()  # reading writes nothing


@pytest.mark.slow
def test_a_sweep_from_python_returns_what_its_result_file_and_report_hold(small_data: Path, tmp_path: Path) -> None:
    sets = [*FAST, "training.per_device_train_batch_size=8", "training.gradient_accumulation_steps=1"]
    swept = dialsum.run_sweep(BATCH_OPT, 2, sets, out=tmp_path / "sweep", data=small_data, init="tiny", max_steps=4,
                              slots=2, pruner="none")
    assert swept.exit_code == 0 and swept.result is not None
    assert swept.result == runfiles.read(tmp_path / "sweep" / "result.json", runfiles.SweepResult, "")
    assert swept.result.trials == 2 and swept.result.states == {"COMPLETE": 2} and swept.result.steps == 8
    assert 0 in swept.result.heldout and swept.result.heldout_rows + swept.result.search_rows == 12
    assert swept.result.verdict in (tmp_path / "sweep" / "report.md").read_text(encoding="utf-8")
    assert swept.report.is_file() and dialsum.validate(swept.best_config, init="tiny").ok
