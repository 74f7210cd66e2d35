"""Where `train`, `predict`, `suite` and `make-sample` may write, and what `--resume` may continue.

    pytest tests/test_run_dir.py

Each refusal is one line naming the option, the path and the fix, exit 2, and leaves every file
that was already there as it was.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import FAST, assert_clean_error, run_cli

from dialsum import config, rundir
from dialsum.config import RunOptions
from dialsum.recipe import run_experiment

BATCH_OPT = "configs/experiments/04_batch_optimization_rtx3090.yaml"
FAST_ARGS = ["--init", "tiny", *[a for item in FAST for a in ("--set", item)]]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> Path:
    """A finished tiny run (2 steps, a checkpoint at each) that the tests below try to damage."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = config.load(BATCH_OPT, [*FAST, f"data.dir={small_data}", "training.save_strategy=steps",
                                  "training.save_steps=1", "training.load_best_model_at_end=false"])
    run_experiment(cfg, RunOptions(init="tiny", run_dir=run, max_steps=2))
    return run


def test_resume_with_a_shape_change_is_refused_before_anything_is_written(finished, small_data):
    before = snapshot(finished)
    proc = run_cli("train", BATCH_OPT, *FAST_ARGS, "--data", str(small_data), "--run-dir", str(finished),
                   "--resume", "--max-steps", "4", "--set", "model.tiny_d_model=32")
    assert_clean_error(proc, f"--resume {finished}", "model.tiny_d_model: 64 in the run, 32 now",
                       "start a new --run-dir")
    assert snapshot(finished) == before


def test_resume_without_the_init_it_was_trained_with_is_refused(finished, small_data):
    proc = run_cli("train", BATCH_OPT, *FAST_ARGS[2:], "--data", str(small_data), "--run-dir", str(finished),
                   "--resume")
    assert_clean_error(proc, "model.init: 'tiny' in the run, 'pretrained' now")


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_resume_needs_a_run_and_names_the_runs_nearby(finished, tmp_path, where):
    target = finished.parent / "not-a-run"
    if where == "empty":
        target.mkdir(exist_ok=True)
    proc = run_cli("train", BATCH_OPT, *FAST_ARGS, "--run-dir", str(target), "--resume")
    what = "does not exist" if where == "missing" else "holds no dialsum run"
    assert_clean_error(proc, f"--resume --run-dir {target}: {what}", f"runs nearby: {finished}")


def test_a_fresh_run_never_writes_into_a_run_or_a_foreign_folder(finished, tmp_path):
    (finished / "metrics.json").rename(finished / "metrics.json.bak")
    try:
        proc = run_cli("train", BATCH_OPT, *FAST_ARGS, "--run-dir", str(finished))
        assert_clean_error(proc, "holds an unfinished run; continue it with --resume")
    finally:
        (finished / "metrics.json.bak").rename(finished / "metrics.json")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert_clean_error(run_cli("train", BATCH_OPT, *FAST_ARGS, "--run-dir", str(foreign)),
                       "not empty and holds no dialsum run")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_output_paths_that_are_files_are_refused_at_once(finished, small_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (["train", BATCH_OPT, *FAST_ARGS, "--run-dir", str(blocker)], f"--run-dir {blocker}: is a file"),
        (["train", BATCH_OPT, *FAST_ARGS, "--run-dir", str(blocker / "run")], f"lies under {blocker}"),
        (["suite", "configs/suites/main5.yaml", "--init", "tiny", "--out", str(blocker / "s")],
         f"--out {blocker / 's'}: lies under {blocker}"),
        (["make-sample", "--out", str(blocker)], f"--out {blocker}: is a file"),
        (["predict", str(finished), "--input", str(small_data / "test.csv"), "--out", str(blocker / "p.csv")],
         f"lies under {blocker}"),
        (["predict", str(finished), "--input", str(small_data / "test.csv"), "--out", f"{tmp_path}/"],
         "is a folder; give a file path"),
        (["score", "--pred", str(finished / "dev_predictions.csv"), "--gold", str(small_data / "dev.csv"),
          "--json", str(blocker / "s.json")], f"--json {blocker / 's.json'}: lies under {blocker}"),
    ]
    for args, needle in cases:
        started = time.monotonic()
        proc = run_cli(*args)
        assert_clean_error(proc, needle)
        assert time.monotonic() - started < 30, args  # refused before any model is loaded
    assert blocker.read_text() == "x"


def test_make_sample_keeps_existing_files_unless_forced(tmp_path):
    (tmp_path / "train.csv").write_text("fname,dialogue,summary\nmine,대화,요약\n", encoding="utf-8")
    args = ["make-sample", "--out", str(tmp_path), "--train", "3", "--dev", "2", "--test", "2"]
    assert_clean_error(run_cli(*args), f"--out {tmp_path}: already holds train.csv", "--force")
    assert "mine" in (tmp_path / "train.csv").read_text(encoding="utf-8")
    assert not (tmp_path / "dev.csv").exists()
    assert run_cli(*args, "--force").returncode == 0
    assert "mine" not in (tmp_path / "train.csv").read_text(encoding="utf-8")


def test_truncated_checkpoint_config_is_a_clean_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "bart", "d_model": 7', encoding="utf-8")
    proc = run_cli("train", BATCH_OPT, "--set", f"model.name={ckpt}", "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, f"{ckpt / 'config.json'}: not valid JSON (line 1", "re-download or repair")
    assert not (tmp_path / "run").exists()
    proc = run_cli("validate", BATCH_OPT, "--set", f"model.name={ckpt}")
    assert proc.returncode == 2 and "not valid JSON" in proc.stdout and "Traceback" not in proc.stderr


def test_an_incomplete_checkpoint_is_passed_over(tmp_path):
    for step, text in ((1, "{}"), (2, '{"global_step": 2, "log_hist')):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(text)
    (tmp_path / "checkpoint-3").mkdir()  # killed before its state was written
    assert rundir.last_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert json.loads((tmp_path / "checkpoint-1" / "trainer_state.json").read_text()) == {}


def test_a_lora_run_loads_after_it_moved_and_from_another_directory(tmp_path, small_data, monkeypatch):
    from dialsum.finished_run import load_model, read_model_info

    monkeypatch.chdir(tmp_path)  # trained from here, with a run directory relative to it
    cfg = config.load(Path(config.__file__).parents[2] / "configs/experiments/01_baseline_kobart_rtx3090.yaml",
                      [*FAST, f"data.dir={small_data}"])
    run_experiment(cfg, RunOptions(init="tiny", run_dir=Path("runs/lora"), max_steps=1))
    info = json.loads((tmp_path / "runs/lora/model_info.json").read_text())
    assert info["adapter"] and info["base"] == "base_model"  # named inside the run, not from the working directory
    moved = tmp_path / "elsewhere" / "lora"
    (tmp_path / "runs/lora").rename(moved.parent.mkdir() or moved)
    monkeypatch.chdir(moved.parent)
    tokenizer, model = load_model(moved, config.load(moved / "config.yaml"), read_model_info(moved))
    assert type(model).__name__.startswith("Peft") and len(tokenizer) == info["vocab_size"]
