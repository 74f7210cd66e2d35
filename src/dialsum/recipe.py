"""The recipe: one experiment from config to trained model, dev score and submission; it assembles its
own trainer from the parts in `dialsum.hf_trainer`.

    dialsum train configs/experiments/01_baseline_kobart_rtx3090.yaml --init tiny --one-epoch
    dialsum train CONFIG --run-dir runs/x/1 --resume        # continue from the last checkpoint

`run_experiment` reads top to bottom: set up the run directory, data, model; train; evaluate on dev;
predict test; clean up. Everything lands in the run directory (see README "Run directory"). A run is
built in stages, each a dataclass whose fields are all set: `Run` (options, directory, log, metrics),
`Planned` (data, device, plan, tokenizer: everything decided before the model is built) and `Trained`
(the model). What `--resume` must keep is `dialsum.resume`'s; loading a run's saved model is
`dialsum.finished_run`'s.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dialsum import (
    baselines,
    data,
    distributed,
    finished_run,
    generation,
    lora,
    modeling,
    pause,
    prompt,
    resume,
    rundir,
    train_args,
)
from dialsum.config import RunOptions, apply_options, to_yaml
from dialsum.device import OPENMP_WAITING, DeviceInfo, free_memory, probe
from dialsum.errors import DialsumError
from dialsum.fileio import atomic_write_json, atomic_write_rows, atomic_write_text
from dialsum.logs import RunLog, log
from dialsum.metrics import score
from dialsum.resolve import Plan, experiment_tokenizer, plan_and_check
from dialsum.runfiles import METRICS, MODEL_INFO, DevScores, ModelInfo, RunMetrics
from dialsum.sections import ExperimentConfig

TINY_CPU_THREADS = 2


@dataclass
class Run:
    """Stage 1, before anything is read: the options applied, the run directory chosen, the log open."""

    cfg: ExperimentConfig
    opts: RunOptions
    dir: Path
    log: RunLog
    metrics: RunMetrics = field(default_factory=RunMetrics)
    started: float = field(default_factory=time.time)


@dataclass
class Splits:
    train: pd.DataFrame
    dev: pd.DataFrame  # the rows the run is scored on (`finished_run.read_dev`)
    test: pd.DataFrame


@dataclass
class Planned:
    """Stage 2, before the model is built: the data, this machine, the adapted config and its tokenizer."""

    run: Run
    splits: Splits
    device: DeviceInfo
    plan: Plan
    tokenizer: Any
    encoder: Any  # data.Encoder (seq2seq) or prompt.CausalEncoder
    added_tokens: list[str]  # keep-whole tokens new to the tokenizer
    trained_world_size: int  # processes that trained the run so far (on --resume; else this run's)

    @property
    def cfg(self) -> ExperimentConfig:
        return self.plan.cfg

    @property
    def strip_tokens(self) -> list[str]:
        return generation.decoder_tokens_to_strip(self.tokenizer)


@dataclass
class Trained:
    """Stage 3: the model, as it trained or as reloaded from the run's files."""

    model: Any


def run_experiment(cfg: ExperimentConfig, opts: RunOptions) -> dict[str, Any]:
    """One experiment; under torchrun every rank trains, and rank 0 alone writes, scores and predicts. Returns
    what metrics.json holds."""
    run = _setup_run(cfg, opts)
    try:
        splits = _setup_data(run)  # first, before the heavy imports: bad data fails within a second
        planned = _setup_plan(run, splits)  # every check that can fail before training; nothing is written before it
        _open_run_dir(planned)
        pause.pause("started", run.cfg.experiment.name)  # the chaos benchmark's kill points (dialsum.pause)
        _train_and_score(planned)
        return run.metrics.model_dump(mode="json", exclude_unset=True)
    finally:
        cleanup(run)


def _train_and_score(p: Planned) -> None:
    trained = Trained(_setup_model(p))
    try:
        train(p, trained)
        if not distributed.is_main():
            return
        reload_saved_model(p, trained)
        evaluate(p, trained)
        if p.run.opts.submission:
            predict(p, trained)
        _write_metrics(p)
    finally:
        trained.model = None  # before cleanup frees the memory, also when a step failed


# ---------------------------------------------------------------- set-up


def _setup_run(cfg: ExperimentConfig, opts: RunOptions) -> Run:
    """Apply the command-line options and check the run directory; nothing is written yet."""
    cfg = apply_options(cfg, opts)
    return Run(cfg, opts, target_dir(cfg, opts), RunLog(distributed.is_main()))


def target_dir(cfg: ExperimentConfig, opts: RunOptions) -> Path:
    """--run-dir, or runs/<experiment>/<time>, checked for what `train` will do with it."""
    if opts.resume and opts.run_dir is None:
        raise DialsumError("--resume needs --run-dir: the run directory to continue")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = opts.run_dir or Path(cfg.experiment.output_dir) / cfg.experiment.name / stamp
    rundir.check_target(run_dir, opts.resume)
    return run_dir


def _environment(device: DeviceInfo) -> dict[str, Any]:
    import peft  # torch, transformers and peft take seconds to import: only once a run is set up
    import torch  # torch takes seconds to import: only where it is used
    import transformers  # transformers takes seconds to import: only where it is used

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device.to_dict(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "openmp_waiting": {k: os.environ.get(k) for k in OPENMP_WAITING},
        "argv": sys.argv,
    }


def _setup_data(run: Run) -> Splits:
    cfg = run.cfg
    train_df = data.read_split(Path(cfg.data.dir) / cfg.data.train_file, with_summary=True)
    dev_df = finished_run.read_dev(cfg)
    test_df = finished_run.read_test(cfg)
    if cfg.data.max_train_samples:
        train_df = train_df.head(cfg.data.max_train_samples)
    log.info("data: %d train, %d dev, %d test rows from %s", len(train_df), len(dev_df), len(test_df), cfg.data.dir)
    return Splits(train_df, dev_df, test_df)


def _set_cpu_threads(cfg: ExperimentConfig, device: DeviceInfo) -> None:
    """Tiny models gain little beyond two intra-op threads (1.5x over one, measured on 2 cores), and lose
    much when more threads than free cores compete; larger models keep torch's default."""
    import torch  # torch: deferred, as above

    threads = cfg.speed.cpu_threads
    cores = max(1, device.cpu_cores // distributed.world_size())  # DDP ranks share the CPU
    if threads is None and not device.cuda_available:
        if cfg.model.init == "tiny":
            threads = min(TINY_CPU_THREADS, cores)
        elif distributed.world_size() > 1:
            threads = cores
    if threads:
        torch.set_num_threads(threads)
        log.info("torch CPU threads: %d (speed.cpu_threads)", threads)


def _setup_plan(run: Run, splits: Splits) -> Planned:
    """Tokenizer, adaptations and every check against this machine and transformers; on --resume, the
    check that the settings still describe the model in the run's checkpoints."""
    import torch  # torch: deferred, as above

    device = probe()
    distributed.init(cuda=device.cuda_available)
    _set_cpu_threads(run.cfg, device)
    torch.manual_seed(run.cfg.experiment.seed)
    if run.opts.resume:  # the model source first: a different one cannot even load the run's tokenizer
        resume.check_same_model(run.dir, run.cfg, ("model.init", "model.name"))
    saved = resume.saved_tokenizer(run.dir, run.cfg) if run.opts.resume else None
    tokenizer = saved if saved is not None else experiment_tokenizer(run.cfg, splits.train)
    added = modeling.add_keep_whole_tokens(tokenizer, run.cfg.tokenizer.special_tokens)
    run.metrics.added_tokens = len(added)
    plan = plan_and_check(run.cfg, None, device, tokenizer=tokenizer, world_size=distributed.world_size(),
                          ddp=distributed.launched())
    if not plan.ok:  # a prompt that leaves the dialogue no room among them: before anything is written
        raise DialsumError("; ".join(plan.errors))
    encoder = prompt.make_encoder(tokenizer, plan.family, plan.cfg)
    if plan.family == "causal":
        head, _ = encoder.pieces()
        opens = "the start token, then " if head[:1] == [tokenizer.bos_token_id] else ""
        log.info("prompt: %s%r", opens, encoder.prompt_text("<dialogue>"))
    trained = distributed.world_size()
    if run.opts.resume:
        info = resume.check_same_model(run.dir, plan.cfg, resume.FIXED_ON_RESUME, len(tokenizer))
        trained = info.world_size if info else trained
    return Planned(run, splits, device, plan, tokenizer, encoder, added, trained)


def _open_run_dir(p: Planned) -> None:
    """The run directory, its log and its resolved config: written only once every check has passed
    (on every rank), by rank 0."""
    distributed.barrier()
    if distributed.is_main():
        _write_run_dir(p)
    distributed.barrier()


def _write_run_dir(p: Planned) -> None:
    run = p.run
    run.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.dir / "config.yaml", to_yaml(p.cfg))
    atomic_write_json(run.dir / "adaptations.json", p.plan.adaptations)
    run.log.to_file(run.dir / "train.log")
    log.info("run directory: %s", run.dir)
    atomic_write_json(run.dir / "environment.json", _environment(p.device))
    for line in p.plan.adaptations:
        log.warning("adapted: %s", line)


def _setup_model(p: Planned) -> Any:
    cfg, plan, tokenizer = p.cfg, p.plan, p.tokenizer
    model, base = _base_model(p)
    modeling.resize_embeddings(model, len(tokenizer), cfg.experiment.seed)
    if plan.liger:
        modeling.apply_liger(model)
    if cfg.lora.enabled:
        model = lora.apply(
            model, targets=cfg.lora.target_modules, rank=cfg.lora.lora_rank, alpha=cfg.lora.lora_alpha,
            dropout=cfg.lora.lora_dropout, quantized=plan.four_bit,
            gradient_checkpointing=cfg.training.gradient_checkpointing,
            new_token_ids=_new_token_ids(p),
        )
    total, trainable = modeling.count_parameters(model)
    p.run.metrics.parameters, p.run.metrics.trainable_parameters = total, trainable
    if distributed.is_main():
        ModelInfo(base=finished_run.base_reference(p.run.dir, base), family=plan.family, vocab_size=len(tokenizer),
                  adapter=cfg.lora.enabled, four_bit=plan.four_bit,
                  compute_dtype="bfloat16" if cfg.training.bf16 else "float32", init=cfg.model.init,
                  model_name=cfg.model.name, world_size=distributed.world_size()).write(p.run.dir / MODEL_INFO)
    log.info("model: %s (%s, init=%s): %s parameters, %s trainable%s", cfg.model.name, plan.family,
             cfg.model.init, f"{total:,}", f"{trainable:,}",
             f"; LoRA on {', '.join(plan.targets.describe())}" if plan.targets else "")
    return model


def _new_token_ids(p: Planned) -> list[int]:
    """A pretrained causal LM's tokens added to its vocabulary (the mask tokens): their embedding and head
    rows train beside the LoRA adapters, else they would keep untrained vectors (new rows, or the unused
    padding rows of a vocabulary rounded up, as Qwen's is)."""
    if p.plan.family != "causal" or not p.added_tokens:
        return []
    log.info("LoRA: the rows of %d added token(s) train too (peft trainable_token_indices)", len(p.added_tokens))
    return p.tokenizer.convert_tokens_to_ids(p.added_tokens)


def _base_model(p: Planned) -> tuple[Any, str]:
    """The model before LoRA, and where to load it from again (hub id or run-local directory)."""
    import torch  # torch: deferred, as above

    cfg, plan, tokenizer = p.cfg, p.plan, p.tokenizer
    dtype = torch.bfloat16 if cfg.training.bf16 else torch.float32
    if cfg.model.init == "pretrained":
        base = cfg.model.name
    else:
        fresh = modeling.build_fresh_model(plan.hf_config, cfg.experiment.seed, sdpa=cfg.speed.sdpa,
                                           trust_remote_code=cfg.model.trust_remote_code)
        modeling.resize_embeddings(fresh, len(tokenizer), cfg.experiment.seed)
        base = str(p.run.dir / finished_run.BASE_DIR)
        if distributed.is_main() and not (Path(base) / "config.json").exists():
            fresh.save_pretrained(base)
            tokenizer.save_pretrained(base)  # a resumed run tokenizes exactly as this one
        distributed.barrier()  # the other ranks load a 4-bit base from it
        if not plan.four_bit:
            return fresh, base
    return modeling.load_pretrained_model(base, four_bit=plan.four_bit, compute_dtype=dtype, device=plan.device,
                                          sdpa=cfg.speed.sdpa, trust_remote_code=cfg.model.trust_remote_code), base


# ---------------------------------------------------------------- train


def train(p: Planned, trained: Trained) -> None:
    from dialsum.meter import TrainingMeter  # transformers, imported by the meter, takes seconds: only here

    cfg, run = p.cfg, p.run
    train_set = p.encoder.examples(p.splits.train)
    eval_df = p.splits.dev.head(cfg.training.eval_max_samples) if cfg.training.eval_max_samples else p.splits.dev
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.dir / "tensorboard")  # read when the trainer is built
    args = train_args.training_arguments(cfg, output_dir=str(run.dir / "checkpoints"), four_bit=p.plan.four_bit,
                                         device=p.plan.device)
    trainer = _build_trainer(p, trained, args, train_set, eval_df)
    checkpoint = rundir.last_checkpoint(run.dir / "checkpoints") if run.opts.resume else None
    if run.opts.resume:
        log.info("resuming from %s", checkpoint or "the start (no checkpoint yet)")
        resume.warn_other_world_size(p.trained_world_size)
    measured = checkpoint is None or resume.meter_state(checkpoint) is not None
    if checkpoint and resume.training_done(checkpoint, cfg):
        log.info("%s already reached the end of training; evaluating it", checkpoint.name)
        resume.load_checkpoint(trainer, checkpoint)
        result, meter = None, TrainingMeter(**(resume.meter_state(checkpoint) or {}))
    else:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        meter = trainer.meter
    meter.close()
    trained.model = trainer.model
    final_dir = run.dir / "model"
    trainer.save_model(str(final_dir))
    state = trainer.state
    m = run.metrics
    m.steps, m.epochs, m.best_checkpoint = state.global_step, round(state.epoch or 0.0, 3), state.best_model_checkpoint
    m.train_loss = result.training_loss if result else None
    for key, value in (_measurements(meter) if measured else resume.unmeasured(checkpoint)).items():
        setattr(m, key, value)
    if distributed.world_size() > 1:
        _ddp_results(p, trainer)
    if distributed.is_main():
        p.tokenizer.save_pretrained(str(final_dir))


def reload_saved_model(p: Planned, trained: Trained) -> None:
    """On the CPU a 4-bit run generates with the model as `dialsum predict` loads it, base and saved adapter.
    bitsandbytes (0.50) repacks 4-bit weights for its CPU inference kernel at an evaluation and back at each
    checkpoint save, and the round trip changes the quantization constants a little: after training with
    evaluations and checkpoints, the model in memory computes slightly differently from the saved one.
    The training model is dropped first, so that two never share the memory."""
    if not (p.plan.four_bit and p.plan.device == "cpu"):
        return
    trained.model = None
    free_memory()
    _, trained.model = finished_run.load_model(p.run.dir, p.cfg, finished_run.read_model_info(p.run.dir))


def _ddp_results(p: Planned, trainer: Any) -> None:
    """Every rank: the highest peak over the ranks, and whether the replicas ended with the same weights."""
    m = p.run.metrics
    if m.peak_memory_mb is not None:
        m.peak_memory_mb = distributed.reduce(m.peak_memory_mb, "max")
    m.world_size, m.replicas_identical = distributed.world_size(), distributed.replicas_identical(trainer.model)
    if not m.replicas_identical:
        log.warning("DDP: the %d processes ended with different weights; the model of rank 0 is kept",
                    distributed.world_size())


def _build_trainer(p: Planned, trained: Trained, args: Any, train_set: list[dict], eval_df: Any) -> Any:
    """The family's Trainer with dialsum's loss, sampler and callbacks; transformers' console printers removed."""
    # transformers (imported by these dialsum modules too) takes seconds to import: only once a run trains
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dialsum.hf_trainer import CausalDialsumTrainer, JsonlLog, Progress, Seq2SeqDialsumTrainer
    from dialsum.losses import supports_chunked_loss

    cfg, causal = p.cfg, p.plan.family == "causal"
    chunked = cfg.speed.chunked_loss and supports_chunked_loss(trained.model) and not p.plan.liger
    common: dict[str, Any] = dict(
        model=trained.model, args=args, train_dataset=train_set,
        eval_dataset=p.encoder.examples(eval_df) if args.eval_strategy != "no" else None,
        data_collator=data.Seq2SeqCollator(p.tokenizer.pad_token_id), processing_class=p.tokenizer,
        chunk_tokens=cfg.speed.chunk_tokens if chunked else None, length_buckets=cfg.training.group_by_length,
        bucket_summaries=cfg.speed.bucket_summaries,
    )
    if causal:
        trainer = CausalDialsumTrainer(**common, dev_scorer=_dev_scorer(p, eval_df))
    else:
        trained.model.generation_config.update(**generation.generation_kwargs(cfg.generation))
        trainer = Seq2SeqDialsumTrainer(
            **common, compute_metrics=generation.make_compute_metrics(p.tokenizer, tokenize="morpheme"),
            penalties=generation.penalties_on_generated(cfg.generation, generation.DECODER_START_WIDTH))
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer.add_callback(JsonlLog(p.run.dir / "train_log.jsonl", trainer))
    trainer.add_callback(Progress(trainer))
    pause.attach(trainer, cfg.experiment.name)
    if cfg.training.early_stopping_patience and args.load_best_model_at_end:
        trainer.add_callback(EarlyStoppingCallback(cfg.training.early_stopping_patience))
    return trainer


def _dev_scorer(p: Planned, eval_df: Any) -> Any:
    """Dev ROUGE during a causal LM's training: its summaries generated as `evaluate` will generate them."""
    inputs = p.encoder.inputs(list(eval_df["dialogue"]))
    refs = [[s] for s in eval_df["summary"]]

    def scorer(model: Any) -> dict[str, float]:
        preds = generation.generate(model, p.tokenizer, inputs, p.cfg.generation, p.strip_tokens)
        result = score(preds, refs, tokenize="morpheme")
        return {k: float(getattr(result, k)) for k in ("rouge1", "rouge2", "rougeL", "final")}

    return scorer


def _measurements(meter: Any) -> dict[str, Any]:
    peak, kind = meter.peak()
    return {"train_seconds": round(meter.seconds, 2), "train_tokens": meter.total_tokens,
            "train_tokens_per_second": meter.tokens_per_second(), "peak_memory_mb": peak, "memory_kind": kind}


# ---------------------------------------------------------------- evaluate and predict


def _generate(p: Planned, trained: Trained, df: Any, what: str) -> list[str]:
    inputs = p.encoder.inputs(list(df["dialogue"]))
    started = time.time()

    def progress(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} generated", end="", file=sys.stderr, flush=True)

    out = generation.generate(trained.model, p.tokenizer, inputs, p.cfg.generation, p.strip_tokens, progress)
    print(file=sys.stderr)
    log.info("%s: %d summaries in %.1fs", what, len(out), time.time() - started)
    return out


def evaluate(p: Planned, trained: Trained) -> None:
    pause.pause("scoring-dev", p.cfg.experiment.name)
    dev = p.splits.dev
    preds = _generate(p, trained, dev, "dev")
    refs = [[s] for s in dev["summary"]]
    scores = {tok: score(preds, refs, tokenize=tok) for tok in ("morpheme", "whitespace")}
    atomic_write_rows(p.run.dir / "dev_predictions.csv", ["fname", "summary", "reference", "final_morpheme"],
                      zip(dev["fname"], preds, dev["summary"],
                          [round(sum(t) / 3 * 100, 2) for t in scores["morpheme"].per_dialogue], strict=True))
    m = p.run.metrics
    m.dev = DevScores.model_validate({tok: s.to_dict() for tok, s in scores.items()})
    m.baseline = baselines.longest_turn_scores(list(dev["dialogue"]), list(dev["summary"]))
    s = scores["morpheme"]
    log.info("dev (morpheme, the leaderboard's tokenization): R1 %.4f R2 %.4f RL %.4f final %.2f "
             "(the longest turn as the summary: %.2f)", s.rouge1, s.rouge2, s.rougeL, s.final, m.baseline.morpheme)


def predict(p: Planned, trained: Trained) -> None:
    test = p.splits.test
    preds = _generate(p, trained, test, "test")
    pause.pause("writing-submission", p.cfg.experiment.name)
    path = generation.write_submission(p.run.dir / "submission.csv", list(test["fname"]), preds)
    p.run.metrics.submission = path.name
    log.info("submission: %s", path)


def _write_metrics(p: Planned) -> None:
    cfg, plan, m = p.cfg, p.plan, p.run.metrics
    e, t = cfg.experiment, cfg.training
    m.experiment, m.label, m.description = e.name, e.label, e.description
    m.model_name, m.arch, m.init = cfg.model.name, plan.family, cfg.model.init
    m.micro_batch, m.grad_accum = t.per_device_train_batch_size, t.gradient_accumulation_steps
    m.world_size, m.effective_batch = distributed.world_size(), cfg.effective_batch * distributed.world_size()
    m.learning_rate, m.adaptations = t.learning_rate, plan.adaptations
    m.lora_targets = plan.targets.describe() if plan.targets else None
    m.wall_seconds = round(time.time() - p.run.started, 2)
    m.write(p.run.dir / METRICS)


def cleanup(run: Run) -> None:
    distributed.finish()
    free_memory()
    run.log.close()
