"""The recipe: one experiment from config to trained model, dev score and submission; it assembles its
own trainer from the parts in `dialsum.hf_trainer`.

    dialsum train configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny --one-epoch
    dialsum train CONFIG --run-dir runs/x/1 --resume        # continue from the last checkpoint

`run_experiment` reads top to bottom: set up the run directory, data, model; train; evaluate on dev;
predict test; clean up. Everything lands in the run directory (see README "Run directory").
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dialsum import (
    baselines,
    config,
    data,
    distributed,
    generation,
    lora,
    modeling,
    paths,
    pause,
    prompt,
    rundir,
    train_args,
)
from dialsum.config import ExperimentConfig, to_yaml
from dialsum.csvio import atomic_write_json, atomic_write_rows, atomic_write_text, read_json
from dialsum.device import DeviceInfo, free_memory, probe
from dialsum.errors import DialsumError
from dialsum.resolve import Plan, experiment_tokenizer, plan_and_check

log = logging.getLogger("dialsum")
LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")


@dataclass
class RunOptions:
    init: str | None = None  # None: the config's model.init
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
    encoder: Any = None  # data.Encoder (seq2seq) or prompt.CausalEncoder
    model: Any = None
    strip_tokens: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    log_buffer: Any = None
    trained_world_size: int | None = None  # on --resume: how many processes trained the run so far
    added_tokens: list[str] = field(default_factory=list)  # keep-whole tokens new to the tokenizer


def run_experiment(cfg: ExperimentConfig, opts: RunOptions) -> dict[str, Any]:
    """One experiment; under torchrun every rank trains, and rank 0 alone writes, scores and predicts."""
    run = _setup_run(cfg, opts)
    try:
        _setup_data(run)  # first, before the heavy imports: bad data fails within a second
        _setup_plan(run)  # every check that can fail before training; nothing is written before it
        _open_run_dir(run)
        pause.pause("started", cfg.experiment.name)  # the chaos benchmark's kill points (dialsum.pause)
        _setup_model(run)
        train(run)
        if not distributed.is_main():
            return run.metrics
        reload_saved_model(run)
        evaluate(run)
        predict(run)
        _write_metrics(run)
        return run.metrics
    finally:
        cleanup(run)


# ---------------------------------------------------------------- set-up


def _setup_run(cfg: ExperimentConfig, opts: RunOptions) -> Run:
    """Apply the command-line options and check the run directory; nothing is written yet."""
    if opts.resume and opts.run_dir is None:
        raise DialsumError("--resume needs --run-dir: the run directory to continue")
    apply_options(cfg, opts)
    run = Run(cfg, opts, target_dir(cfg, opts))
    _setup_logging(run)
    return run


def check_nproc(nproc: int) -> None:
    """--nproc: one process per GPU, or at most one per core on a CPU-only machine."""
    device = probe()
    limit, what = (device.device_count, "GPU(s)") if device.cuda_available else (device.cpu_cores, "CPU cores")
    if nproc < 1 or nproc > limit:
        raise DialsumError(f"--nproc {nproc}: must be 1 to {limit}, the {what} of this machine")


def target_dir(cfg: ExperimentConfig, opts: RunOptions) -> Path:
    """--run-dir, or runs/<experiment>/<time>, checked for what `train` will do with it."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = opts.run_dir or Path(cfg.experiment.output_dir) / cfg.experiment.name / stamp
    rundir.check_target(run_dir, opts.resume)
    return run_dir


def apply_options(cfg: ExperimentConfig, opts: RunOptions) -> None:
    """--init, --one-epoch and --max-steps, checked, onto the config."""
    config.check_init(opts.init)
    config.check_max_steps(opts.max_steps, opts.one_epoch)
    if opts.one_epoch:
        cfg.training.num_train_epochs = 1
    if opts.max_steps:
        cfg.training.max_steps = opts.max_steps
    if opts.init:
        cfg.model.init = opts.init  # type: ignore[assignment]


def _setup_logging(run: Run) -> None:
    """The log goes to stderr at once, and to train.log from the moment the run directory exists.
    Under DDP only rank 0 logs; the other ranks say warnings and errors only."""
    log.setLevel(logging.INFO if distributed.is_main() else logging.WARNING)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    run.log_buffer = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    stderr = logging.StreamHandler(sys.stderr)
    for handler in (stderr, run.log_buffer) if distributed.is_main() else (stderr,):
        handler.setFormatter(LOG_FORMAT)
        log.addHandler(handler)
    log.propagate = False
    quiet_libraries()


def _log_to_file(run: Run) -> None:
    """train.log gets the lines logged so far, then every later one."""
    file = logging.FileHandler(run.dir / "train.log", encoding="utf-8")
    file.setFormatter(LOG_FORMAT)
    run.log_buffer.setTarget(file)
    run.log_buffer.flush()
    log.removeHandler(run.log_buffer)
    log.addHandler(file)


def quiet_libraries() -> None:
    """Library chatter (deprecation notices, shard progress bars) stays out of the user's log."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # configures the library's logger first, so the level holds
    for noisy in ("peft", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    warnings.filterwarnings("ignore", category=UserWarning, module="bitsandbytes")  # "paged ... on CPU": adapted


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
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
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


TINY_CPU_THREADS = 2


def _set_cpu_threads(run: Run) -> None:
    """Tiny models gain little beyond two intra-op threads (1.5x over one, measured on 2 cores), and lose
    much when more threads than free cores compete; larger models keep torch's default."""
    import torch

    assert run.device is not None
    threads = run.cfg.speed.cpu_threads
    cores = max(1, run.device.cpu_cores // distributed.world_size())  # DDP ranks share the CPU
    if threads is None and not run.device.cuda_available:
        if run.cfg.model.init == "tiny":
            threads = min(TINY_CPU_THREADS, cores)
        elif distributed.world_size() > 1:
            threads = cores
    if threads:
        torch.set_num_threads(threads)
        log.info("torch CPU threads: %d (speed.cpu_threads)", threads)


BASE_DIR = "base_model"  # a tiny or random base, saved inside its run directory


def _tokenizer(run: Run) -> Any:
    """The hub tokenizer; for tiny and random builds the one saved with the run, else one trained on the data."""
    saved = run.dir / BASE_DIR
    if run.cfg.model.init != "pretrained" and run.opts.resume and (saved / "tokenizer_config.json").is_file():
        return modeling.load_tokenizer(str(saved))
    return experiment_tokenizer(run.cfg, run.frames["train"])


def _setup_plan(run: Run) -> None:
    """Tokenizer, adaptations and every check against this machine and transformers; on --resume, the
    check that the settings still describe the model in the run's checkpoints."""
    import torch

    run.device = probe()
    distributed.init(cuda=run.device.cuda_available)
    _set_cpu_threads(run)
    torch.manual_seed(run.cfg.experiment.seed)
    if run.opts.resume:  # the model source first: a different one cannot even load the run's tokenizer
        _check_same_model(run.dir, run.cfg, ("model.init", "model.name"))
    tokenizer = _tokenizer(run)
    run.added_tokens = modeling.add_keep_whole_tokens(tokenizer, run.cfg.tokenizer.special_tokens)
    run.metrics["added_tokens"] = len(run.added_tokens)
    plan = plan_and_check(run.cfg, None, run.device, tokenizer=tokenizer, world_size=distributed.world_size(),
                          ddp=distributed.launched())
    if not plan.ok:  # a prompt that leaves the dialogue no room among them: before anything is written
        raise DialsumError("; ".join(plan.errors))
    run.encoder = prompt.make_encoder(tokenizer, plan.family, plan.cfg)
    if plan.family == "causal":
        head, _ = run.encoder.pieces()
        opens = "the start token, then " if head[:1] == [tokenizer.bos_token_id] else ""
        log.info("prompt: %s%r", opens, run.encoder.prompt_text("<dialogue>"))
    if run.opts.resume:
        info = _check_same_model(run.dir, plan.cfg, FIXED_ON_RESUME, len(tokenizer))
        run.trained_world_size = (info.get("world_size") or 1) if info else None
    run.plan, run.cfg, run.tokenizer = plan, plan.cfg, tokenizer


# Settings that must not change on --resume: they shape the model, its tokens, or the data position
# stored in the checkpoint.
FIXED_ON_RESUME = ("model", "tokenizer", "prompt", "lora", "training.per_device_train_batch_size")


def _check_same_model(run_dir: Path, cfg: ExperimentConfig, keys: tuple[str, ...],
                      vocab_size: int | None = None) -> dict[str, Any] | None:
    """Refuse differences under `keys` (and, given the vocabulary, in it and the effective batch);
    the run's model_info.json when that was read."""
    saved = config.load(run_dir / "config.yaml")
    diffs = config.differences(saved, cfg, keys)
    info_path, info = run_dir / "model_info.json", None
    if vocab_size is not None and info_path.is_file():
        info = read_json(info_path, "delete the run directory to start over")
        if info.get("vocab_size") not in (None, vocab_size):
            diffs.append(f"vocabulary size: {info['vocab_size']} in the run, {vocab_size} now")
        before = saved.effective_batch * int(info.get("world_size") or 1)
        if before != cfg.effective_batch * distributed.world_size():
            diffs.append(f"effective batch: {before} in the run, {cfg.effective_batch * distributed.world_size()} now")
    if diffs:
        raise DialsumError(
            f"--resume {run_dir}: the settings differ from the run's where they shape the model it continues "
            f"({'; '.join(diffs)}); resume with the run's settings, or start a new --run-dir"
        )
    return info


def _open_run_dir(run: Run) -> None:
    """The run directory, its log and its resolved config: written only once every check has passed
    (on every rank), by rank 0."""
    assert run.plan is not None and run.device is not None
    distributed.barrier()
    if distributed.is_main():
        _write_run_dir(run)
    distributed.barrier()


def _write_run_dir(run: Run) -> None:
    assert run.plan is not None and run.device is not None
    run.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.dir / "config.yaml", to_yaml(run.cfg))
    atomic_write_json(run.dir / "adaptations.json", run.plan.adaptations)
    _log_to_file(run)
    log.info("run directory: %s", run.dir)
    atomic_write_json(run.dir / "environment.json", _environment(run.device))
    for line in run.plan.adaptations:
        log.warning("adapted: %s", line)


def _setup_model(run: Run) -> None:
    cfg, plan, tokenizer = run.cfg, run.plan, run.tokenizer
    assert plan is not None
    model, base = _base_model(run, tokenizer)
    modeling.resize_embeddings(model, len(tokenizer), cfg.experiment.seed)
    if plan.liger:
        modeling.apply_liger(model)
    if cfg.lora.enabled:
        model = lora.apply(
            model, targets=cfg.lora.target_modules, rank=cfg.lora.lora_rank, alpha=cfg.lora.lora_alpha,
            dropout=cfg.lora.lora_dropout, quantized=plan.four_bit,
            gradient_checkpointing=cfg.training.gradient_checkpointing,
            new_token_ids=_new_token_ids(run),
        )
    run.model = model
    run.strip_tokens = generation.decoder_tokens_to_strip(tokenizer)
    total, trainable = modeling.count_parameters(model)
    run.metrics.update(parameters=total, trainable_parameters=trainable)
    if distributed.is_main():
        atomic_write_json(run.dir / "model_info.json", {
            "base": _base_reference(run.dir, base), "family": plan.family, "vocab_size": len(tokenizer), "adapter": cfg.lora.enabled,
            "four_bit": plan.four_bit, "compute_dtype": "bfloat16" if cfg.training.bf16 else "float32",
            "init": cfg.model.init, "model_name": cfg.model.name,
            "world_size": distributed.world_size(),
        })
    log.info("model: %s (%s, init=%s): %s parameters, %s trainable%s", cfg.model.name, plan.family,
             cfg.model.init, f"{total:,}", f"{trainable:,}",
             f"; LoRA on {', '.join(plan.targets.describe())}" if plan.targets else "")


def _new_token_ids(run: Run) -> list[int]:
    """A pretrained causal LM's tokens added to its vocabulary (the mask tokens): their embedding and head
    rows train beside the LoRA adapters, else they would keep untrained vectors (new rows, or the unused
    padding rows of a vocabulary rounded up, as Qwen's is)."""
    if run.plan is None or run.plan.family != "causal" or not run.added_tokens:
        return []
    log.info("LoRA: the rows of %d added token(s) train too (peft trainable_token_indices)", len(run.added_tokens))
    return run.tokenizer.convert_tokens_to_ids(run.added_tokens)


def _base_reference(run_dir: Path, base: str) -> str:
    """How model_info.json names the base: the run's own base by its name inside the run (the run directory
    may move, or be read from another working directory), a local checkpoint by its absolute path, a hub
    id as it is."""
    if Path(base) == run_dir / BASE_DIR:
        return BASE_DIR
    return str(Path(base).resolve()) if Path(base).is_dir() else base


def _base_location(run_dir: Path, info: dict[str, Any]) -> str:
    """Where to load a finished run's base from; runs written before bases were named inside the run
    stored the path as seen from the directory they were trained in."""
    own = run_dir / BASE_DIR
    if info["base"] == BASE_DIR or (info.get("init") != "pretrained" and own.is_dir()):
        return str(own)
    return info["base"]


def _base_model(run: Run, tokenizer: Any) -> tuple[Any, str]:
    """The model before LoRA, and where to load it from again (hub id or run-local directory)."""
    import torch

    cfg, plan = run.cfg, run.plan
    assert plan is not None
    dtype = torch.bfloat16 if cfg.training.bf16 else torch.float32
    if cfg.model.init == "pretrained":
        base = cfg.model.name
    else:
        fresh = modeling.build_fresh_model(plan.hf_config, cfg.experiment.seed, sdpa=cfg.speed.sdpa,
                                           trust_remote_code=cfg.model.trust_remote_code)
        modeling.resize_embeddings(fresh, len(tokenizer), cfg.experiment.seed)
        base = str(run.dir / BASE_DIR)
        if distributed.is_main() and not (Path(base) / "config.json").exists():
            fresh.save_pretrained(base)
            tokenizer.save_pretrained(base)  # a resumed run tokenizes exactly as this one
        distributed.barrier()  # the other ranks load a 4-bit base from it
        if not plan.four_bit:
            return fresh, base
    return modeling.load_pretrained_model(base, four_bit=plan.four_bit, compute_dtype=dtype, device=plan.device,
                                          sdpa=cfg.speed.sdpa, trust_remote_code=cfg.model.trust_remote_code), base


# ---------------------------------------------------------------- train


def train(run: Run) -> None:
    from dialsum.meter import TrainingMeter

    cfg, plan = run.cfg, run.plan
    assert run.encoder is not None and plan is not None
    train_set = run.encoder.examples(run.frames["train"])
    eval_df = run.frames["dev"]
    if cfg.training.eval_max_samples:
        eval_df = eval_df.head(cfg.training.eval_max_samples)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.dir / "tensorboard")  # read when the trainer is built
    args = train_args.training_arguments(cfg, output_dir=str(run.dir / "checkpoints"), four_bit=plan.four_bit,
                                         device=plan.device)
    trainer = _build_trainer(run, args, train_set, eval_df)
    resume = rundir.last_checkpoint(run.dir / "checkpoints") if run.opts.resume else None
    if run.opts.resume:
        log.info("resuming from %s", resume or "the start (no checkpoint yet)")
        _warn_other_world_size(run)
    measured = resume is None or _meter_state(resume) is not None
    if resume and _training_done(resume, cfg):
        # transformers would still take one more step from a checkpoint saved at the last one
        log.info("%s already reached the end of training; evaluating it", resume.name)
        _load_checkpoint(trainer, resume)
        result, meter = None, TrainingMeter(**(_meter_state(resume) or {}))
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        meter = trainer.meter
    meter.close()
    run.model = trainer.model
    final_dir = run.dir / "model"
    trainer.save_model(str(final_dir))
    run.metrics.update(
        steps=trainer.state.global_step, epochs=round(trainer.state.epoch or 0.0, 3),
        train_loss=result.training_loss if result else None, best_checkpoint=trainer.state.best_model_checkpoint,
    )
    run.metrics.update(_measurements(meter) if measured else _unmeasured(resume))
    if distributed.world_size() > 1:
        _ddp_results(run, trainer)
    if distributed.is_main():
        run.tokenizer.save_pretrained(str(final_dir))


def reload_saved_model(run: Run) -> None:
    """On the CPU a 4-bit run generates with the model as `dialsum predict` loads it, base and saved adapter.
    bitsandbytes (0.50) repacks 4-bit weights for its CPU inference kernel at an evaluation and back at each
    checkpoint save, and the round trip changes the quantization constants a little: after training with
    evaluations and checkpoints, the model in memory computes slightly differently from the saved one.
    The training model is dropped first, so that two never share the memory."""
    if not (run.plan and run.plan.four_bit and run.plan.device == "cpu"):
        return
    run.model = None
    free_memory()
    _, run.model, _ = load_run_model(run.dir, run.cfg)


def _ddp_results(run: Run, trainer: Any) -> None:
    """Every rank: the highest peak over the ranks, and whether the replicas ended with the same weights."""
    if run.metrics.get("peak_memory_mb") is not None:
        run.metrics["peak_memory_mb"] = distributed.reduce(run.metrics["peak_memory_mb"], "max")
    identical = distributed.replicas_identical(trainer.model)
    run.metrics.update(world_size=distributed.world_size(), replicas_identical=identical)
    if not identical:
        log.warning("DDP: the %d processes ended with different weights; the model of rank 0 is kept",
                    distributed.world_size())


def _warn_other_world_size(run: Run) -> None:
    trained = run.trained_world_size
    if trained and trained != distributed.world_size():
        log.warning("resuming with %d process(es), but the run trained with %d: the steps after the checkpoint "
                    "see the data in another order than an uninterrupted run would", distributed.world_size(), trained)


def _build_trainer(run: Run, args: Any, train_set: list[dict], eval_df: Any) -> Any:
    """The family's Trainer with dialsum's loss, sampler and callbacks; transformers' console printers removed."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dialsum.hf_trainer import CausalDialsumTrainer, JsonlLog, Progress, Seq2SeqDialsumTrainer
    from dialsum.losses import supports_chunked_loss

    cfg, causal = run.cfg, run.plan is not None and run.plan.family == "causal"
    chunked = cfg.speed.chunked_loss and supports_chunked_loss(run.model) and not (run.plan and run.plan.liger)
    common: dict[str, Any] = dict(
        model=run.model, args=args, train_dataset=train_set,
        eval_dataset=run.encoder.examples(eval_df) if args.eval_strategy != "no" else None,
        data_collator=data.Seq2SeqCollator(run.tokenizer.pad_token_id), processing_class=run.tokenizer,
        chunk_tokens=cfg.speed.chunk_tokens if chunked else None, length_buckets=cfg.training.group_by_length,
        bucket_summaries=cfg.speed.bucket_summaries,
    )
    if causal:
        trainer = CausalDialsumTrainer(**common, dev_scorer=_dev_scorer(run, eval_df))
    else:
        run.model.generation_config.update(**generation.generation_kwargs(cfg.generation))
        trainer = Seq2SeqDialsumTrainer(
            **common, compute_metrics=generation.make_compute_metrics(run.tokenizer, tokenize="morpheme"))
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer.add_callback(JsonlLog(run.dir / "train_log.jsonl", trainer))
    trainer.add_callback(Progress(trainer))
    pause.attach(trainer, cfg.experiment.name)
    if cfg.training.early_stopping_patience and args.load_best_model_at_end:
        trainer.add_callback(EarlyStoppingCallback(cfg.training.early_stopping_patience))
    return trainer


def _dev_scorer(run: Run, eval_df: Any) -> Any:
    """Dev ROUGE during a causal LM's training: its summaries generated as `evaluate` will generate them."""
    from dialsum.metrics import score

    inputs = run.encoder.inputs(list(eval_df["dialogue"]))
    refs = [[s] for s in eval_df["summary"]]

    def scorer(model: Any) -> dict[str, float]:
        preds = generation.generate(model, run.tokenizer, inputs, run.cfg.generation, run.strip_tokens)
        result = score(preds, refs, tokenize="morpheme")
        return {k: float(getattr(result, k)) for k in ("rouge1", "rouge2", "rougeL", "final")}

    return scorer


def _measurements(meter: Any) -> dict[str, Any]:
    peak, kind = meter.peak()
    return {"train_seconds": round(meter.seconds, 2), "train_tokens": meter.total_tokens,
            "train_tokens_per_second": meter.tokens_per_second(), "peak_memory_mb": peak, "memory_kind": kind}


def _unmeasured(checkpoint: Path | None) -> dict[str, Any]:
    log.warning("%s holds no training measurements (saved by an older dialsum): training time, tokens per "
                "second and peak memory are not reported for this run", checkpoint)
    return dict.fromkeys(("train_seconds", "train_tokens", "train_tokens_per_second", "peak_memory_mb",
                          "memory_kind"))


def _meter_state(checkpoint: Path) -> dict[str, Any] | None:
    state = _trainer_state(checkpoint).get("stateful_callbacks") or {}
    stored = state.get("TrainingMeter")
    return stored.get("args") if isinstance(stored, dict) else None


def _trainer_state(checkpoint: Path) -> dict[str, Any]:
    return read_json(checkpoint / "trainer_state.json", f"delete {checkpoint} to resume from the one before")


def _training_done(checkpoint: Path, cfg: ExperimentConfig) -> bool:
    state = _trainer_state(checkpoint)
    t = cfg.training
    if t.max_steps > 0:
        return state.get("global_step", 0) >= t.max_steps
    return (state.get("epoch") or 0.0) >= t.num_train_epochs - 1e-6


def _load_checkpoint(trainer: Any, checkpoint: Path) -> None:
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


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

    pause.pause("scoring-dev", run.cfg.experiment.name)
    dev = run.frames["dev"]
    preds = _generate(run, dev, "dev")
    refs = [[s] for s in dev["summary"]]
    scores = {tok: score(preds, refs, tokenize=tok) for tok in ("morpheme", "whitespace")}
    atomic_write_rows(run.dir / "dev_predictions.csv", ["fname", "summary", "reference", "final_morpheme"],
                      zip(dev["fname"], preds, dev["summary"],
                          [round(sum(t) / 3 * 100, 2) for t in scores["morpheme"].per_dialogue], strict=True))
    run.metrics["dev"] = {tok: s.to_dict() for tok, s in scores.items()}
    run.metrics["baseline"] = baseline = baselines.longest_turn_scores(list(dev["dialogue"]), list(dev["summary"]))
    m = scores["morpheme"]
    log.info("dev (morpheme, the leaderboard's tokenization): R1 %.4f R2 %.4f RL %.4f final %.2f "
             "(the longest turn as the summary: %.2f)", m.rouge1, m.rouge2, m.rougeL, m.final, baseline["morpheme"])


def predict(run: Run) -> None:
    test = run.frames["test"]
    preds = _generate(run, test, "test")
    pause.pause("writing-submission", run.cfg.experiment.name)
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
        grad_accum=cfg.training.gradient_accumulation_steps, world_size=distributed.world_size(),
        effective_batch=cfg.effective_batch * distributed.world_size(),
        learning_rate=cfg.training.learning_rate, adaptations=plan.adaptations,
        lora_targets=plan.targets.describe() if plan.targets else None,
        wall_seconds=round(time.time() - run.started, 2),
    )
    atomic_write_json(run.dir / "metrics.json", run.metrics)


def cleanup(run: Run) -> None:
    run.model = None
    distributed.finish()
    free_memory()
    for handler in list(log.handlers):
        handler.flush()
        if isinstance(handler, (logging.FileHandler, logging.handlers.MemoryHandler)):
            log.removeHandler(handler)  # a second run in this process logs into its own train.log
            handler.close()


def summarize_metrics(metrics: dict[str, Any]) -> str:
    dev = metrics.get("dev", {}).get("morpheme", {})
    return json.dumps({k: dev.get(k) for k in ("rouge1", "rouge2", "rougeL", "final")})


# ---------------------------------------------------------------- reuse a finished run


def load_run_model(run_dir: Path, cfg: ExperimentConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, model (base + LoRA adapter where trained so) and model_info of a finished run whose
    config is `cfg`; a 4-bit base computes in the dtype it trained with."""
    import torch

    info_path, model_dir = run_dir / "model_info.json", run_dir / "model"
    if not info_path.is_file() or not model_dir.is_dir():
        raise DialsumError(f"{run_dir}: not a finished run (no model_info.json or model/); train it first")
    info = read_json(info_path, "train the run again")
    remote = cfg.model.trust_remote_code
    tokenizer = modeling.load_tokenizer(str(model_dir), remote)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load = dict(compute_dtype=getattr(torch, info.get("compute_dtype", "float32")), device=device,
                trust_remote_code=remote)
    if not info["adapter"]:
        return tokenizer, modeling.load_pretrained_model(str(model_dir), four_bit=False, **load), info
    import peft

    base = modeling.load_pretrained_model(_base_location(run_dir, info), four_bit=info["four_bit"], **load)
    modeling.resize_embeddings(base, info["vocab_size"], cfg.experiment.seed)
    return tokenizer, peft.PeftModel.from_pretrained(base, str(model_dir)), info


def predict_file(run_dir: str | Path, input_path: str | Path, out: str | Path | None,
                 generation_file: str | Path | None = None) -> Path:
    from dialsum.tune import with_generation

    run_dir = Path(run_dir)
    target = paths.check_file(out, "--out") if out else run_dir / "predictions.csv"
    cfg = config.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if cfg is None:
        raise DialsumError(f"{run_dir}: no config.yaml; is this a dialsum run directory?")
    if generation_file:  # as given, else inside the run directory (`--generation tune/best.yaml`)
        inside = run_dir / generation_file
        cfg = with_generation(cfg, generation_file if Path(generation_file).is_file() or not inside.is_file() else inside)
    df = data.read_split(input_path, with_summary=False)
    quiet_libraries()
    tokenizer, model, info = load_run_model(run_dir, cfg)
    model = model.to("cuda") if _cuda() and not info["four_bit"] else model
    encoder = prompt.make_encoder(tokenizer, info["family"], cfg)
    preds = generation.generate(model, tokenizer, encoder.inputs(list(df["dialogue"])), cfg.generation,
                                generation.decoder_tokens_to_strip(tokenizer))
    return generation.write_submission(target, list(df["fname"]), preds)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
