"""The recipe: one experiment from config to trained model, dev score and submission.

    dialsum train configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny --one-epoch
    dialsum train CONFIG --run-dir runs/x/1 --resume        # continue from the last checkpoint

`run_experiment` reads top to bottom: set up the run directory, data, model; train; evaluate on dev;
predict test; clean up. Everything lands in the run directory (see README "Run directory").
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dialsum import data, generation, modeling
from dialsum.config import ExperimentConfig, to_yaml
from dialsum.csvio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.errors import DialsumError
from dialsum.gpu import DeviceInfo, free_memory, probe
from dialsum.resolve import Plan, plan_experiment

log = logging.getLogger("dialsum")


@dataclass
class RunOptions:
    init: str = "pretrained"
    run_dir: Path | None = None
    max_steps: int | None = None
    one_epoch: bool = False
    resume: bool = False


@dataclass
class Run:
    """State handed from one recipe step to the next."""

    cfg: ExperimentConfig
    opts: RunOptions
    dir: Path
    device: DeviceInfo | None = None
    plan: Plan | None = None
    frames: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    encoder: data.Encoder | None = None
    model: Any = None
    strip_tokens: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def run_experiment(cfg: ExperimentConfig, opts: RunOptions) -> dict[str, Any]:
    run = _setup_run(cfg, opts)
    try:
        _setup_data(run)  # first, before the heavy imports: bad data fails within a second
        _setup_model(run)
        train(run)
        evaluate(run)
        predict(run)
        _write_metrics(run)
        return run.metrics
    finally:
        cleanup(run)


# ---------------------------------------------------------------- set-up


def _setup_run(cfg: ExperimentConfig, opts: RunOptions) -> Run:
    if opts.one_epoch:
        cfg.training.num_train_epochs = 1
    if opts.max_steps:
        cfg.training.max_steps = opts.max_steps
    cfg.model.init = opts.init  # type: ignore[assignment]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = opts.run_dir or Path(cfg.experiment.output_dir) / cfg.experiment.name / stamp
    if (run_dir / "metrics.json").exists() and not opts.resume:
        raise DialsumError(f"{run_dir}: already holds a finished run; choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir)
    log.info("run directory: %s", run_dir)
    return Run(cfg, opts, run_dir)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.FileHandler(run_dir / "train.log", encoding="utf-8"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False
    quiet_libraries()


def quiet_libraries() -> None:
    """Library chatter (deprecation notices, shard progress bars) stays out of the user's log."""
    for noisy in ("transformers", "peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def _environment(device: DeviceInfo) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device.to_dict(),
        "argv": sys.argv,
    }


def _data_path(cfg: ExperimentConfig, name: str) -> Path:
    return Path(cfg.data.dir) / name


def _setup_data(run: Run) -> None:
    cfg = run.cfg
    train_df = data.read_split(_data_path(cfg, cfg.data.train_file), with_summary=True)
    dev_df = data.read_split(_data_path(cfg, cfg.data.dev_file), with_summary=True)
    test_df = data.read_split(_data_path(cfg, cfg.data.test_file), with_summary=False)
    if cfg.data.max_train_samples:
        train_df = train_df.head(cfg.data.max_train_samples)
    if cfg.data.max_eval_samples:
        dev_df = dev_df.head(cfg.data.max_eval_samples)
    run.frames = {"train": train_df, "dev": dev_df, "test": test_df}
    log.info("data: %d train, %d dev, %d test rows from %s", len(train_df), len(dev_df), len(test_df), cfg.data.dir)


def _set_cpu_threads(run: Run) -> None:
    """Tiny models gain nothing from intra-op threads, and lose much when another process shares the cores."""
    import torch

    threads = run.cfg.speed.cpu_threads
    if threads is None and run.cfg.model.init == "tiny" and not run.device.cuda_available:
        threads = 1
    if threads:
        torch.set_num_threads(threads)
        log.info("torch CPU threads: %d (speed.cpu_threads)", threads)


def _tokenizer(run: Run) -> Any:
    cfg = run.cfg
    if cfg.model.init == "pretrained":
        return modeling.load_tokenizer(cfg.model.name)
    hf_config, _ = modeling.resolve_hf_config(cfg.model.name)
    return modeling.tokenizer_from_data(run.frames["train"], modeling.family_of(hf_config), cfg.tokenizer.prefix,
                                        cfg.model.tiny_vocab_size, cfg.tokenizer.special_tokens)


def _setup_model(run: Run) -> None:
    import torch

    cfg = run.cfg
    run.device = probe()
    _set_cpu_threads(run)
    atomic_write_json(run.dir / "environment.json", _environment(run.device))
    torch.manual_seed(cfg.experiment.seed)
    tokenizer = _tokenizer(run)
    added = modeling.add_keep_whole_tokens(tokenizer, cfg.tokenizer.special_tokens)
    run.plan = plan = plan_experiment(cfg, cfg.model.init, run.device, vocab_size=len(tokenizer))
    if not plan.ok:
        raise DialsumError("; ".join(plan.errors))
    run.cfg = cfg = plan.cfg
    for line in plan.adaptations:
        log.warning("adapted: %s", line)
    atomic_write_text(run.dir / "config.yaml", to_yaml(cfg))
    atomic_write_json(run.dir / "adaptations.json", plan.adaptations)
    model, base = _base_model(run, tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if cfg.lora.enabled:
        model = modeling.apply_lora(
            model, targets=cfg.lora.target_modules, rank=cfg.lora.lora_rank, alpha=cfg.lora.lora_alpha,
            dropout=cfg.lora.lora_dropout, quantized=plan.four_bit,
            gradient_checkpointing=cfg.training.gradient_checkpointing,
        )
    run.tokenizer, run.model = tokenizer, model
    from dialsum.metrics import decoder_tokens_to_strip

    run.strip_tokens = decoder_tokens_to_strip(tokenizer)
    run.encoder = data.Encoder(tokenizer, plan.family, cfg.tokenizer.prefix, cfg.tokenizer.encoder_max_len,
                               cfg.tokenizer.decoder_max_len)
    total, trainable = modeling.count_parameters(model)
    run.metrics.update(parameters=total, trainable_parameters=trainable, added_tokens=added)
    atomic_write_json(run.dir / "model_info.json", {
        "base": base, "family": plan.family, "vocab_size": len(tokenizer), "adapter": cfg.lora.enabled,
        "four_bit": plan.four_bit, "init": cfg.model.init, "model_name": cfg.model.name,
    })
    log.info("model: %s (%s, init=%s): %s parameters, %s trainable%s", cfg.model.name, plan.family,
             cfg.model.init, f"{total:,}", f"{trainable:,}",
             f"; LoRA on {', '.join(plan.targets.describe())}" if plan.targets else "")


def _base_model(run: Run, tokenizer: Any) -> tuple[Any, str]:
    """The model before LoRA, and where to load it from again (hub id or run-local directory)."""
    import torch

    cfg, plan = run.cfg, run.plan
    assert plan is not None
    dtype = torch.bfloat16 if cfg.training.bf16 else torch.float32
    if cfg.model.init == "pretrained":
        base = cfg.model.name
    else:
        fresh = modeling.build_fresh_model(plan.hf_config, cfg.experiment.seed, sdpa=cfg.speed.sdpa)
        if len(tokenizer) > fresh.get_input_embeddings().num_embeddings:
            fresh.resize_token_embeddings(len(tokenizer))
        base = str(run.dir / "base_model")
        if not (Path(base) / "config.json").exists():
            fresh.save_pretrained(base)
        if not plan.four_bit:
            return fresh, base
    return modeling.load_pretrained_model(base, four_bit=plan.four_bit, compute_dtype=dtype,
                                          device=plan.device, sdpa=cfg.speed.sdpa), base


# ---------------------------------------------------------------- train


def _training_args(run: Run) -> Any:
    from transformers import Seq2SeqTrainingArguments

    t, cfg = run.cfg.training, run.cfg
    best = t.load_best_model_at_end and t.eval_strategy != "no"
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run.dir / "tensorboard"))
    return Seq2SeqTrainingArguments(
        output_dir=str(run.dir / "checkpoints"),
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing_factor,
        bf16=t.bf16, tf32=t.tf32 or None,
        dataloader_num_workers=t.dataloader_num_workers, dataloader_pin_memory=t.dataloader_pin_memory,
        dataloader_persistent_workers=t.dataloader_persistent_workers,
        gradient_checkpointing=t.gradient_checkpointing and not run.plan.four_bit,
        eval_strategy=t.eval_strategy, eval_steps=t.eval_steps,
        save_strategy=t.save_strategy, save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps, logging_first_step=True,
        load_best_model_at_end=best, metric_for_best_model=t.metric_for_best_model if best else None,
        greater_is_better=True if best else None,
        predict_with_generate=True, generation_max_length=cfg.generation.max_length,
        generation_num_beams=cfg.generation.num_beams,
        optim="adamw_torch_fused" if run.cfg.speed.fused_adamw else t.optim,
        report_to=[r for r in t.report_to if r != "none"] or "none",
        seed=cfg.experiment.seed, remove_unused_columns=False, disable_tqdm=True,
        torch_compile=cfg.speed.torch_compile,
    )


def train(run: Run) -> None:
    from dialsum.trainer import build_trainer

    cfg = run.cfg
    assert run.encoder is not None
    train_set = run.encoder.examples(run.frames["train"])
    eval_df = run.frames["dev"]
    if cfg.training.eval_max_samples:
        eval_df = eval_df.head(cfg.training.eval_max_samples)
    trainer = build_trainer(run, _training_args(run), train_set, run.encoder.examples(eval_df))
    resume = _last_checkpoint(run.dir / "checkpoints") if run.opts.resume else None
    if run.opts.resume:
        log.info("resuming from %s", resume or "the start (no checkpoint yet)")
    _reset_peak_memory()
    started = time.time()
    if resume and _training_done(resume, cfg):
        # transformers would still take one more step from a checkpoint saved at the last one
        log.info("%s already reached the end of training; evaluating it", resume.name)
        _load_checkpoint(trainer, resume)
        result = None
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - started
    tokens = trainer.real_tokens
    run.model = trainer.model
    final_dir = run.dir / "model"
    trainer.save_model(str(final_dir))
    run.tokenizer.save_pretrained(str(final_dir))
    run.metrics.update(
        train_seconds=round(seconds, 2), steps=trainer.state.global_step,
        epochs=round(trainer.state.epoch or 0.0, 3), train_loss=result.training_loss if result else None,
        train_tokens_per_second=round(tokens / seconds, 1) if seconds else None,
        best_checkpoint=trainer.state.best_model_checkpoint,
    )
    run.metrics.update(_peak_memory(run))


def _training_done(checkpoint: Path, cfg: ExperimentConfig) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    t = cfg.training
    if t.max_steps > 0:
        return state.get("global_step", 0) >= t.max_steps
    return (state.get("epoch") or 0.0) >= t.num_train_epochs - 1e-6


def _load_checkpoint(trainer: Any, checkpoint: Path) -> None:
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def _last_checkpoint(path: Path) -> Path | None:
    """Newest complete checkpoint: one killed mid-save has no trainer_state.json and is passed over."""
    done = [p for p in path.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(run: Run) -> dict[str, Any]:
    import torch

    if run.plan and run.plan.device == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1), "memory_kind": "cuda"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mb": round(rss_kb / 1024, 1), "memory_kind": "rss"}


# ---------------------------------------------------------------- evaluate and predict


def _generate(run: Run, df: Any, what: str) -> list[str]:
    assert run.encoder is not None
    inputs = run.encoder.inputs(list(df["dialogue"]))
    started = time.time()

    def progress(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} generated", end="", file=sys.stderr, flush=True)

    out = generation.generate(run.model, run.tokenizer, inputs, run.cfg.generation, run.strip_tokens, progress)
    print(file=sys.stderr)
    log.info("%s: %d summaries in %.1fs", what, len(out), time.time() - started)
    return out


def evaluate(run: Run) -> None:
    from dialsum.metrics import score

    dev = run.frames["dev"]
    preds = _generate(run, dev, "dev")
    refs = [[s] for s in dev["summary"]]
    scores = {tok: score(preds, refs, tokenize=tok) for tok in ("morpheme", "whitespace")}
    atomic_write_rows(run.dir / "dev_predictions.csv", ["fname", "summary", "reference", "final_morpheme"],
                      zip(dev["fname"], preds, dev["summary"],
                          [round(sum(t) / 3 * 100, 2) for t in scores["morpheme"].per_dialogue], strict=True))
    run.metrics["dev"] = {tok: s.to_dict() for tok, s in scores.items()}
    m = scores["morpheme"]
    log.info("dev (morpheme, the leaderboard's tokenization): R1 %.4f R2 %.4f RL %.4f final %.2f",
             m.rouge1, m.rouge2, m.rougeL, m.final)


def predict(run: Run) -> None:
    test = run.frames["test"]
    preds = _generate(run, test, "test")
    path = generation.write_submission(run.dir / "submission.csv", list(test["fname"]), preds)
    run.metrics["submission"] = path.name
    log.info("submission: %s", path)


def _write_metrics(run: Run) -> None:
    cfg, plan = run.cfg, run.plan
    assert plan is not None
    run.metrics.update(
        experiment=cfg.experiment.name, label=cfg.experiment.label, model_name=cfg.model.name,
        arch=plan.family, init=cfg.model.init,
        micro_batch=cfg.training.per_device_train_batch_size,
        grad_accum=cfg.training.gradient_accumulation_steps, effective_batch=cfg.effective_batch,
        learning_rate=cfg.training.learning_rate, adaptations=plan.adaptations,
        lora_targets=plan.targets.describe() if plan.targets else None,
        wall_seconds=round(time.time() - run.started, 2),
    )
    atomic_write_json(run.dir / "metrics.json", run.metrics)


def cleanup(run: Run) -> None:
    run.model = None
    free_memory()
    for handler in list(log.handlers):
        handler.flush()


def summarize_metrics(metrics: dict[str, Any]) -> str:
    dev = metrics.get("dev", {}).get("morpheme", {})
    return json.dumps({k: dev.get(k) for k in ("rouge1", "rouge2", "rougeL", "final")})


# ---------------------------------------------------------------- reuse a finished run


def load_run_model(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model (base + LoRA adapter where trained so) and model_info of a finished run."""
    import torch

    info_path, model_dir = run_dir / "model_info.json", run_dir / "model"
    if not info_path.is_file() or not model_dir.is_dir():
        raise DialsumError(f"{run_dir}: not a finished run (no model_info.json or model/); train it first")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    tokenizer = modeling.load_tokenizer(str(model_dir))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not info["adapter"]:
        return tokenizer, modeling.load_pretrained_model(str(model_dir), four_bit=False,
                                                         compute_dtype=torch.float32, device=device), info
    import peft

    base = modeling.load_pretrained_model(info["base"], four_bit=info["four_bit"],
                                          compute_dtype=torch.float32, device=device)
    if info["vocab_size"] > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(info["vocab_size"])
    return tokenizer, peft.PeftModel.from_pretrained(base, str(model_dir)), info


def predict_file(run_dir: str | Path, input_path: str | Path, out: str | Path | None) -> Path:
    from dialsum import config
    from dialsum.metrics import decoder_tokens_to_strip

    run_dir = Path(run_dir)
    cfg = config.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if cfg is None:
        raise DialsumError(f"{run_dir}: no config.yaml; is this a dialsum run directory?")
    df = data.read_split(input_path, with_summary=False)
    quiet_libraries()
    tokenizer, model, info = load_run_model(run_dir)
    model = model.to("cuda") if _cuda() and not info["four_bit"] else model
    encoder = data.Encoder(tokenizer, info["family"], cfg.tokenizer.prefix, cfg.tokenizer.encoder_max_len,
                           cfg.tokenizer.decoder_max_len)
    preds = generation.generate(model, tokenizer, encoder.inputs(list(df["dialogue"])), cfg.generation,
                                decoder_tokens_to_strip(tokenizer))
    return generation.write_submission(Path(out) if out else run_dir / "predictions.csv", list(df["fname"]), preds)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
