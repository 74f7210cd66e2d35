"""One experiment end to end with tiny models: every seed config trains, scores dev, writes a submission."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import EXPERIMENTS, FAST, assert_clean_error, run_cli

from dialsum import config
from dialsum.config import RunOptions
from dialsum.recipe import run_experiment

DECODER_TOKENS = ("<s>", "</s>", "<pad>", "<usr>", "<unk>")
# A tiny model learns from scratch: its encoder comes into use only after several hundred steps, so
# it needs many small steps and a learning rate that stays up after a long warm-up (with the
# config's decaying schedule it settles on one summary for every dialogue).
LEARNING = [
    "training.per_device_train_batch_size=16", "training.gradient_accumulation_steps=1",
    "training.num_train_epochs=10", "training.lr_scheduler_type=constant_with_warmup",
    "training.warmup_ratio=0.3", "generation.max_length=64", "model.tiny_lr_scale=10",
    "speed.cpu_threads=1",  # `make test` runs two tests at once on 2 cores: a second thread each would contend
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
    assert saved["steps"] == 2 and saved["train_seconds"] > 0
    # a Python process with torch resident holds well over 100 MB; a unit error (KB vs bytes) is 1024x off
    assert saved["memory_kind"] == "rss" and 100 < saved["peak_memory_mb"] < psutil.virtual_memory().total / 2**20
    seconds = saved["train_seconds"]  # rounded to 10 ms in metrics.json
    assert saved["train_tokens"] / (seconds + 0.006) < saved["train_tokens_per_second"] < saved["train_tokens"] / (seconds - 0.006)
    rows = pd.read_csv(run / "dev_predictions.csv", dtype={"summary": str}, keep_default_na=False)
    assert len(rows) == saved["dev"]["morpheme"]["n"] == saved["dev"]["whitespace"]["n"] == 12
    assert saved["dev"]["morpheme"]["final"] == pytest.approx(rows["final_morpheme"].mean(), abs=0.01)
    assert saved["baseline"]["name"] == "longest turn" and saved["baseline"]["n"] == 12
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
    if "lm_head" in cfg.lora.target_modules:
        assert "lm_head" in resolved.lora.target_modules
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


@pytest.mark.slow
def test_predict_reuses_a_lora_run(small_data, tmp_path):
    run = tmp_path / "run"
    train_tiny(Path("configs/experiments/01_baseline_kobart_rtx3090.yaml"), small_data, run, steps=2)
    proc = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.csv").read_text(encoding="utf-8") == (run / "submission.csv").read_text(encoding="utf-8")
    missing = run_cli("predict", str(tmp_path), "--input", str(small_data / "test.csv"))
    assert_clean_error(missing, "not a finished run (config.yaml is missing)")


@pytest.mark.slow
def test_no_submission_scores_dev_and_leaves_a_finished_run_predict_can_use(small_data, tmp_path):
    """Also: the command's run records how its OpenMP threads waited (dialsum.device.share_cores)."""
    run = tmp_path / "run"
    proc = run_cli("train", "configs/experiments/04_batch_optimization_rtx3090.yaml", "--init", "tiny",
                   "--max-steps", "1", "--data", str(small_data), "--run-dir", str(run), "--no-submission",
                   *[arg for item in FAST for arg in ("--set", item)])
    assert proc.returncode == 0, proc.stderr
    assert not (run / "submission.csv").exists() and (run / "dev_predictions.csv").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics.get("submission") is None and metrics["dev"]["morpheme"]["final"] >= 0
    from dialsum.device import share_cores

    expected = dict(os.environ)  # GOMP_SPINCOUNT=3000, unless this shell chose how OpenMP threads wait
    share_cores(expected)
    waiting = json.loads((run / "environment.json").read_text())["openmp_waiting"]
    assert waiting == {k: expected.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = tmp_path / "p.csv"
    proc = run_cli("predict", str(run), "--input", str(small_data / "test.csv"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == len(pd.read_csv(small_data / "test.csv"))


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
    assert not (tmp_path / "run").exists()  # bad data leaves no half-made run behind


@pytest.mark.parametrize(("args", "needles"), [
    (["--max-steps", "0"], ["--max-steps 0: must be at least 1"]),
    (["--max-steps", "-3"], ["--max-steps -3: must be at least 1"]),
    (["--set", "training.optim=adamw_bogus"], ["training.optim='adamw_bogus'", "did you mean"]),
    (["--set", "training.metric_for_best_model=bleu"], ["training.metric_for_best_model='bleu'", "'loss'"]),
    (["--set", "training.warmup_ratio=1.0"], ["training.warmup_ratio=1.0", "less than 1"]),
    (["--set", "training.learning_rat=1"], ["training.learning_rat", "did you mean learning_rate"]),
    (["--set", "training.per_device_train_batch_size=0"], ["per_device_train_batch_size", "greater than or equal to 1"]),
    (["--set", "lora.load_in_4bit=true"], ["needs lora.use_qlora=true"]),
    (["--init", "huge"], ["--init huge"]),
    (["--resume"], ["--resume needs --run-dir"]),
    (["--no-submission", "--tune", "5"], ["--no-submission with --tune", "drop one of the two"]),
    (["--data", "/nonexistent/dir"], ["train.csv: data file not found"]),
])
def test_bad_config_catalog(args, needles):
    proc = run_cli("train", "configs/experiments/04_batch_optimization_rtx3090.yaml", "--init", "tiny", *args)
    assert_clean_error(proc, *needles)


@pytest.mark.slow
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
    baseline = metrics["baseline"]["morpheme"]  # the longest turn of each dialogue as its summary
    assert 10 < baseline < 30
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
    stored = meter_state(run / "checkpoints" / "checkpoint-3")
    assert metrics["train_seconds"] == pytest.approx(stored["seconds"], abs=0.01)  # no training in this process
    assert metrics["train_tokens"] == stored["tokens"] > 0 and metrics["train_tokens_per_second"] > 0


def meter_state(checkpoint: Path) -> dict:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return state["stateful_callbacks"]["TrainingMeter"]["args"]


SAVING = ["training.save_strategy=steps", "training.save_steps=2", "training.load_best_model_at_end=false",
          "training.logging_steps=1"]
BATCH_OPT = Path("configs/experiments/04_batch_optimization_rtx3090.yaml")


def test_a_resumed_run_reports_the_time_and_tokens_of_every_process(small_data, tmp_path):
    run = tmp_path / "run"
    first = train_tiny(BATCH_OPT, small_data, run, *SAVING, steps=2)
    (run / "metrics.json").unlink()  # killed after its checkpoint
    stored = meter_state(run / "checkpoints" / "checkpoint-2")
    assert stored["tokens"] == first["train_tokens"] and stored["seconds"] > 0
    resumed = train_tiny(BATCH_OPT, small_data, run, *SAVING, steps=4, resume=True)
    second = meter_state(run / "checkpoints" / "checkpoint-4")
    assert resumed["train_tokens"] == second["tokens"] > stored["tokens"]
    assert resumed["train_seconds"] >= second["seconds"] - 0.01 and second["seconds"] > stored["seconds"]
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["real_tokens"] for e in logged if "loss" in e] == sorted(e["real_tokens"] for e in logged if "loss" in e)


def test_tokens_per_second_count_training_only(small_data, tmp_path, monkeypatch):
    """Evaluation with generation during training is not training time."""
    import time

    from dialsum import generation as generation_module

    real = generation_module.make_compute_metrics

    def slow(tokenizer, tokenize="morpheme"):
        compute = real(tokenizer, tokenize)

        def compute_slowly(eval_pred):
            time.sleep(2.0)
            return compute(eval_pred)
        return compute_slowly

    monkeypatch.setattr(generation_module, "make_compute_metrics", slow)
    metrics = train_tiny(BATCH_OPT, small_data, tmp_path / "run", "training.eval_strategy=steps",
                         "training.eval_steps=1", "training.save_strategy=steps", "training.save_steps=1",
                         "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=1")
    assert metrics["steps"] == 2 and metrics["train_seconds"] < 2.0  # two evaluations took 4 s


def test_each_run_in_a_process_logs_into_its_own_directories(small_data, tmp_path):
    for name in ("a", "b"):
        train_tiny(BATCH_OPT, small_data, tmp_path / name, "training.report_to=[tensorboard]", steps=1)
    for name in ("a", "b"):
        events = list((tmp_path / name / "tensorboard").rglob("events.out.tfevents.*"))
        assert len(events) == 1, (name, events)
        assert str(tmp_path / name) in (tmp_path / name / "train.log").read_text(encoding="utf-8")
    assert str(tmp_path / "a") not in (tmp_path / "b" / "train.log").read_text(encoding="utf-8")


def test_model_init_in_the_config_is_used_without_init(small_data, tmp_path):
    cfg = config.load(BATCH_OPT, [*FAST, f"data.dir={small_data}", "model.init=tiny"])
    run_experiment(cfg, RunOptions(run_dir=tmp_path / "run", max_steps=1))
    assert json.loads((tmp_path / "run" / "model_info.json").read_text())["init"] == "tiny"
