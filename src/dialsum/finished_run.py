"""The one way back into a finished run: its config (with a tuned generation file), typed run files, dev rows
as the run scored them, and its model and tokenizer loaded as they were trained.

    dialsum predict runs/kobart_baseline/<time> --input test.csv [--generation tune/best.yaml]
    dialsum tune runs/kobart_baseline/<time>
    dialsum ensemble RUN RUN RUN --out DIR
    pytest tests/test_run_dir.py tests/test_recipe.py -k predict

`open_run` applies the "finished" rule (`rundir.check_finished`: config.yaml, adaptations.json and, written
last, metrics.json) and reads the run's files through their typed models (`dialsum.runfiles`). `load_model`
loads what `train` saved: the whole model, or the LoRA adapter over its base (a 4-bit base computing in the
dtype it trained with), on the GPU where there is one. `read_dev` reads the dev rows a run of a config scores
(its dev file, cut to `data.max_eval_samples`): the recipe scores them, `tune` splits them, `ensemble` aligns
on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dialsum import config, data, generation, modeling, paths, prompt, runfiles
from dialsum.errors import DialsumError
from dialsum.logs import quiet_libraries
from dialsum.rundir import check_finished
from dialsum.sections import ExperimentConfig

BASE_DIR = "base_model"  # a tiny or random base, saved inside its run directory
RETRAIN = "train the run again"


@dataclass
class FinishedRun:
    """A finished run's directory, its config (a tuned generation applied when asked) and its run files."""

    dir: Path
    cfg: ExperimentConfig
    metrics: runfiles.RunMetrics
    info: runfiles.ModelInfo

    @property
    def name(self) -> str:
        return self.metrics.experiment or self.dir.name

    def load(self) -> tuple[Any, Any]:
        """Tokenizer and model as trained."""
        return load_model(self.dir, self.cfg, self.info)

    def tune_result(self) -> runfiles.TuneResult:
        return runfiles.read(self.dir / runfiles.TUNE_RESULT, runfiles.TuneResult, "run dialsum tune on the run again")


def open_run(run_dir: str | Path, generation_file: str | Path | None = None) -> FinishedRun:
    """A finished run, every file it is used by checked here; `generation_file` as given, else inside the run
    directory (`--generation tune/best.yaml`)."""
    run_dir = Path(run_dir)
    check_finished(run_dir)
    cfg = config.load(run_dir / "config.yaml")
    if generation_file is not None:
        inside = run_dir / generation_file
        given = Path(generation_file)
        cfg = config.with_generation(cfg, given if given.is_file() or not inside.is_file() else inside)
    metrics = runfiles.read(run_dir / runfiles.METRICS, runfiles.RunMetrics, RETRAIN)
    return FinishedRun(run_dir, cfg, metrics, read_model_info(run_dir))


def read_model_info(run_dir: Path) -> runfiles.ModelInfo:
    return runfiles.read(run_dir / runfiles.MODEL_INFO, runfiles.ModelInfo, RETRAIN)


def read_dev(cfg: ExperimentConfig) -> pd.DataFrame:
    """The dev rows a run of `cfg` is scored on: its dev file, cut to `data.max_eval_samples`."""
    dev = data.read_split(Path(cfg.data.dir) / cfg.data.dev_file, with_summary=True)
    return (dev.head(cfg.data.max_eval_samples) if cfg.data.max_eval_samples else dev).reset_index(drop=True)


def read_test(cfg: ExperimentConfig) -> pd.DataFrame:
    """The test rows a run of `cfg` writes its submission for."""
    return data.read_split(Path(cfg.data.dir) / cfg.data.test_file, with_summary=False)


def base_reference(run_dir: Path, base: str) -> str:
    """How model_info.json names the base: the run's own base by its name inside the run (the run directory
    may move, or be read from another working directory), a local checkpoint by its absolute path, a hub
    id as it is."""
    if Path(base) == run_dir / BASE_DIR:
        return BASE_DIR
    return str(Path(base).resolve()) if Path(base).is_dir() else base


def base_location(run_dir: Path, info: runfiles.ModelInfo) -> str:
    """Where to load a run's base from; runs written before bases were named inside the run stored the path
    as seen from the directory they were trained in."""
    own = run_dir / BASE_DIR
    if info.base == BASE_DIR or (info.init != "pretrained" and own.is_dir()):
        return str(own)
    return info.base


def load_model(run_dir: Path, cfg: ExperimentConfig, info: runfiles.ModelInfo) -> tuple[Any, Any]:
    """Tokenizer and model (base + LoRA adapter where trained so) of the run in `run_dir`, trained with `cfg`; a
    4-bit base computes in the dtype it trained with. A 4-bit base is placed on its device as it loads (it
    cannot move after); any other model moves to the GPU where there is one."""
    import torch  # torch and peft take seconds to import: only where a model is loaded

    model_dir = run_dir / "model"
    if not model_dir.is_dir():
        raise DialsumError(f"{model_dir}: missing; the run's trained model is gone: {RETRAIN}")
    quiet_libraries()
    remote = cfg.model.trust_remote_code
    tokenizer = modeling.load_tokenizer(str(model_dir), remote)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load = dict(compute_dtype=getattr(torch, info.compute_dtype), device=device, trust_remote_code=remote)
    if not info.adapter:
        model = modeling.load_pretrained_model(str(model_dir), four_bit=False, **load)
    else:
        import peft  # peft imports transformers: only where it is used

        base = modeling.load_pretrained_model(base_location(run_dir, info), four_bit=info.four_bit, **load)
        modeling.resize_embeddings(base, info.vocab_size, cfg.experiment.seed)
        model = peft.PeftModel.from_pretrained(base, str(model_dir))
    return tokenizer, model if info.four_bit else model.to(device)


def predict_file(run_dir: str | Path, input_path: str | Path, out: str | Path | None,
                 generation_file: str | Path | None = None) -> Path:
    """`dialsum predict`: summarize a CSV with a finished run, with its generation settings or tuned ones."""
    target = paths.check_file(out, "--out") if out else Path(run_dir) / "predictions.csv"
    run = open_run(run_dir, generation_file)
    df = data.read_split(input_path, with_summary=False)
    tokenizer, model = run.load()
    encoder = prompt.make_encoder(tokenizer, run.info.family, run.cfg)
    preds = generation.generate(model, tokenizer, encoder.inputs(list(df["dialogue"])), run.cfg.generation,
                                generation.decoder_tokens_to_strip(tokenizer))
    return generation.write_submission(target, list(df["fname"]), preds)
