"""`train --resume`: what a continued run must keep from the run it continues, and its last checkpoint.

    dialsum train CONFIG --run-dir runs/x/1 --resume        # continue from the last checkpoint
    pytest tests/test_recipe.py -k resume

The settings that shape the model, its tokens or the data position stored in a checkpoint must not change
(`FIXED_ON_RESUME`, the vocabulary and the effective batch): `check_same_model` refuses a difference before
anything is written. A tiny or random build tokenizes with the tokenizer saved in its run (`saved_tokenizer`).
A checkpoint saved at the last step has trained to the end (`training_done`): it is loaded and evaluated,
never trained a step further. The training measurements (time, tokens, peak memory) continue from those the
checkpoint stored; a checkpoint saved by an older dialsum has none, and the run then reports none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dialsum import config, distributed, modeling, runfiles
from dialsum.errors import DialsumError
from dialsum.fileio import read_json
from dialsum.finished_run import BASE_DIR
from dialsum.sections import ExperimentConfig

log = logging.getLogger("dialsum")

# Settings that must not change on --resume: they shape the model, its tokens, or the data position
# stored in the checkpoint.
FIXED_ON_RESUME = ("model", "tokenizer", "prompt", "lora", "training.per_device_train_batch_size")
# trainer_state.json's epoch is a sum of step fractions: 2.9999999 after three epochs
EPOCH_TOLERANCE = 1e-6
UNMEASURED = ("train_seconds", "train_tokens", "train_tokens_per_second", "peak_memory_mb", "memory_kind")


def saved_tokenizer(run_dir: Path, cfg: ExperimentConfig) -> Any | None:
    """A tiny or random build's tokenizer as its run saved it (with its base), so the run tokenizes as before."""
    saved = run_dir / BASE_DIR
    if cfg.model.init == "pretrained" or not (saved / "tokenizer_config.json").is_file():
        return None
    return modeling.load_tokenizer(str(saved))


def check_same_model(run_dir: Path, cfg: ExperimentConfig, keys: tuple[str, ...],
                     vocab_size: int | None = None) -> runfiles.ModelInfo | None:
    """Refuse differences under `keys` (and, given the vocabulary, in it and the effective batch);
    the run's model_info.json when that was read."""
    saved = config.load(run_dir / "config.yaml")
    diffs = config.differences(saved, cfg, keys)
    info_path, info = run_dir / runfiles.MODEL_INFO, None
    if vocab_size is not None and info_path.is_file():
        info = runfiles.read(info_path, runfiles.ModelInfo, "delete the run directory to start over")
        if info.vocab_size != vocab_size:
            diffs.append(f"vocabulary size: {info.vocab_size} in the run, {vocab_size} now")
        before, now = saved.effective_batch * info.world_size, cfg.effective_batch * distributed.world_size()
        if before != now:
            diffs.append(f"effective batch: {before} in the run, {now} now")
    if diffs:
        raise DialsumError(
            f"--resume {run_dir}: the settings differ from the run's where they shape the model it continues "
            f"({'; '.join(diffs)}); resume with the run's settings, or start a new --run-dir"
        )
    return info


def warn_other_world_size(trained: int) -> None:
    if trained != distributed.world_size():
        log.warning("resuming with %d process(es), but the run trained with %d: the steps after the checkpoint "
                    "see the data in another order than an uninterrupted run would", distributed.world_size(), trained)


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    return read_json(checkpoint / "trainer_state.json", f"delete {checkpoint} to resume from the one before")


def meter_state(checkpoint: Path) -> dict[str, Any] | None:
    """The training measurements the checkpoint stored (`dialsum.meter.TrainingMeter`); None from an older one."""
    state = trainer_state(checkpoint).get("stateful_callbacks") or {}
    stored = state.get("TrainingMeter")
    return stored.get("args") if isinstance(stored, dict) else None


def training_done(checkpoint: Path, cfg: ExperimentConfig) -> bool:
    state = trainer_state(checkpoint)
    t = cfg.training
    if t.max_steps > 0:
        return state.get("global_step", 0) >= t.max_steps
    return (state.get("epoch") or 0.0) >= t.num_train_epochs - EPOCH_TOLERANCE


def load_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """The checkpoint's weights and state, without a training step (transformers would take one more)."""
    from transformers import TrainerState  # transformers takes seconds to import: only where a trainer runs

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def unmeasured(checkpoint: Path | None) -> dict[str, Any]:
    log.warning("%s holds no training measurements (saved by an older dialsum): training time, tokens per "
                "second and peak memory are not reported for this run", checkpoint)
    return dict.fromkeys(UNMEASURED)
