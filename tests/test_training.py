"""One experiment end to end with tiny models: every seed config trains, scores dev, writes a submission."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import EXPERIMENTS, FAST, assert_clean_error, run_cli

from dialsum import config
from dialsum.training import RunOptions, run_experiment

DECODER_TOKENS = ("<s>", "</s>", "<pad>", "<usr>", "<unk>")
# A tiny model learns from scratch: its encoder comes into use only after several hundred steps, so
# it needs many small steps and a learning rate that stays up after a long warm-up (with the
# config's decaying schedule it settles on one summary for every dialogue).
LEARNING = [
    "training.per_device_train_batch_size=16", "training.gradient_accumulation_steps=1",
    "training.num_train_epochs=10", "training.lr_scheduler_type=constant_with_warmup",
    "training.warmup_ratio=0.3", "generation.max_length=64",
]


def train_tiny(cfg_path: Path, data_dir: Path, run_dir: Path, *extra: str, steps: int = 2, **opts) -> dict:
    cfg = config.load(cfg_path, [*FAST, f"data.dir={data_dir}", *extra])
    return run_experiment(cfg, RunOptions(init="tiny", run_dir=run_dir, max_steps=steps, **opts))


@pytest.mark.parametrize("cfg_path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_seed_config_trains_tiny_and_writes_a_valid_submission(cfg_path, small_data, tmp_path):
    metrics = train_tiny(cfg_path, small_data, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "environment.json", "adaptations.json", "train.log", "train_log.jsonl",
                 "model_info.json", "metrics.json", "dev_predictions.csv", "submission.csv"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(metrics, default=str))
    assert saved["steps"] == 2 and saved["train_seconds"] > 0 and saved["peak_memory_mb"] > 0
    for tok in ("morpheme", "whitespace"):
        assert saved["dev"][tok]["n"] == 12 and 0 <= saved["dev"][tok]["final"] <= 100
    cfg = config.load(cfg_path)
    assert saved["effective_batch"] == cfg.effective_batch
    submission = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(small_data / "test.csv", dtype=str)
    assert list(submission.columns) == ["fname", "summary"]
    assert list(submission["fname"]) == list(test["fname"])
    assert not any(t in s for s in submission["summary"] for t in DECODER_TOKENS)
    resolved = config.load(run / "config.yaml")
    assert resolved.model.init == "tiny"
    if cfg.lora.enabled:
        assert saved["trainable_parameters"] < saved["parameters"]
        assert all(t in resolved.lora.target_modules for t in ("lm_head",)) or "lm_head" not in cfg.lora.target_modules
    if cfg.lora.load_in_4bit:
        assert json.loads((run / "model_info.json").read_text())["four_bit"] is True


def test_kobart_clamp_and_lora_mapping_are_recorded(small_data, tmp_path):
    train_tiny(Path("configs/experiments/01_baseline_kobart_rtx3090.yaml"), small_data, tmp_path / "run", steps=1)
    adaptations = json.loads((tmp_path / "run" / "adaptations.json").read_text(encoding="utf-8"))
    assert any(a.startswith("tokenizer.encoder_max_len=1280 exceeds") for a in adaptations)
    assert any("q -> q_proj" in a for a in adaptations)
    resolved = config.load(tmp_path / "run" / "config.yaml")
    assert resolved.tokenizer.encoder_max_len == 512
    assert resolved.lora.target_modules[:4] == ["q_proj", "k_proj", "v_proj", "out_proj"]


def test_predict_reuses_a_lora_run(small_data, tmp_path):
    run = tmp_path / "run"
    train_tiny(Path("configs/experiments/01_baseline_kobart_rtx3090.yaml"), small_data, run, steps=2)
    proc = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.csv").read_text(encoding="utf-8") == (run / "submission.csv").read_text(encoding="utf-8")
    missing = run_cli("predict", str(tmp_path), "--input", str(small_data / "test.csv"))
    assert_clean_error(missing, "no config.yaml")


def test_resume_continues_from_the_last_checkpoint(small_data, tmp_path):
    run = tmp_path / "run"
    cfg_path = Path("configs/experiments/04_batch_optimization_rtx3090.yaml")
    saving = ["training.save_strategy=steps", "training.save_steps=2", "training.load_best_model_at_end=false",
              "training.logging_steps=1"]
    train_tiny(cfg_path, small_data, run, *saving, steps=2)
    assert (run / "checkpoints" / "checkpoint-2").is_dir()
    (run / "metrics.json").unlink()  # as if the run had been killed after its checkpoint
    metrics = train_tiny(cfg_path, small_data, run, *saving, steps=4, resume=True)
    assert metrics["steps"] == 4
    assert "resuming from" in (run / "train.log").read_text(encoding="utf-8")
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert 3 in steps and steps.count(1) == 1  # steps 1-2 were not trained again


def test_finished_run_dir_is_not_overwritten(small_data, tmp_path):
    run = tmp_path / "run"
    train_tiny(Path("configs/experiments/04_batch_optimization_rtx3090.yaml"), small_data, run, steps=1)
    before = (run / "metrics.json").read_bytes()
    proc = run_cli("train", "configs/experiments/04_batch_optimization_rtx3090.yaml", "--init", "tiny",
                   "--data", str(small_data), "--run-dir", str(run))
    assert_clean_error(proc, "already holds a finished run")
    assert (run / "metrics.json").read_bytes() == before


def _broken(tmp_path: Path, small_data: Path, name: str, text: str | bytes) -> Path:
    target = tmp_path / "data"
    shutil.copytree(small_data, target)
    path = target / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return target


@pytest.mark.parametrize(("name", "content", "needles"), [
    ("train.csv", "fname,dialogue,topic\nt0,대화,주제\n", ["train.csv", "missing column(s) summary"]),
    ("train.csv", "fname,dialogue,summary\nt0,대화,요약\nt1,,요약\n", ["train.csv", "empty dialogue in row(s) 2"]),
    ("dev.csv", "fname,dialogue,summary\nd0,대화,\n", ["dev.csv", "empty summary in row(s) 1"]),
    ("test.csv", "fname,dialogue\nx,대화\nx,대화\n", ["test.csv", "duplicate fname x"]),
    ("train.csv", "fname,dialogue,summary\nt0,대화,요약\n".encode("cp949"), ["train.csv", "not UTF-8"]),
    ("dev.csv", "", ["dev.csv", "the file is empty"]),
])
def test_bad_data_catalog(tmp_path, small_data, name, content, needles):
    data_dir = _broken(tmp_path, small_data, name, content)
    proc = run_cli("train", "configs/experiments/04_batch_optimization_rtx3090.yaml", "--init", "tiny",
                   "--data", str(data_dir), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, *needles)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(("args", "needles"), [
    (["--set", "training.learning_rat=1"], ["training.learning_rat", "did you mean learning_rate"]),
    (["--set", "training.per_device_train_batch_size=0"], ["per_device_train_batch_size", "greater than or equal to 1"]),
    (["--set", "lora.load_in_4bit=true"], ["needs lora.use_qlora=true"]),
    (["--init", "huge"], ["--init huge"]),
    (["--resume"], ["--resume needs --run-dir"]),
    (["--data", "/nonexistent/dir"], ["train.csv: data file not found"]),
])
def test_bad_config_catalog(args, needles):
    proc = run_cli("train", "configs/experiments/04_batch_optimization_rtx3090.yaml", "--init", "tiny", *args)
    assert_clean_error(proc, *needles)


def _extractive_baseline(dev: pd.DataFrame) -> float:
    """The longest turn of each dialogue (speaker removed) as its summary: the stronger plain baseline."""
    from dialsum.metrics import score

    longest = [max(d.split("\n"), key=len).split(":", 1)[-1].strip() for d in dev["dialogue"]]
    return score(longest, [[s] for s in dev["summary"]], tokenize="morpheme").final


def test_training_learns_far_beyond_the_extractive_baseline(tmp_path):
    """A tiny KoBART-family model, a few minutes on the CPU, reads the dialogue instead of guessing."""
    from conftest import make_data_dir

    data_dir = make_data_dir(tmp_path / "data", 2000, 100, 10)
    cfg = config.load("configs/experiments/04_batch_optimization_rtx3090.yaml", [
        f"data.dir={data_dir}", "training.eval_strategy=no", "training.report_to=[none]",
        *LEARNING,
    ])
    metrics = run_experiment(cfg, RunOptions(init="tiny", run_dir=tmp_path / "run"))
    trained = metrics["dev"]["morpheme"]["final"]
    baseline = _extractive_baseline(pd.read_csv(data_dir / "dev.csv", dtype=str))
    assert baseline < 30
    assert trained > baseline + 20, (trained, baseline)
    preds = pd.read_csv(tmp_path / "run" / "dev_predictions.csv", dtype=str)
    assert preds["summary"].nunique() > len(preds) * 0.8  # one summary per dialogue, not one for all


def test_resume_from_the_final_checkpoint_trains_no_further(small_data, tmp_path):
    run = tmp_path / "run"
    cfg_path = Path("configs/experiments/04_batch_optimization_rtx3090.yaml")
    saving = ["training.save_strategy=steps", "training.save_steps=1", "training.load_best_model_at_end=false",
              "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1"]
    train_tiny(cfg_path, small_data, run, *saving, steps=3)
    submission = (run / "submission.csv").read_bytes()
    (run / "metrics.json").unlink()  # killed after its last checkpoint, before the results
    metrics = train_tiny(cfg_path, small_data, run, *saving, steps=3, resume=True)
    assert metrics["steps"] == 3  # transformers alone would take a 4th step here
    assert "already reached the end of training" in (run / "train.log").read_text(encoding="utf-8")
    assert (run / "submission.csv").read_bytes() == submission  # the checkpoint's weights, reloaded
