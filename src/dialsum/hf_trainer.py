"""The transformers Trainers as dialsum runs them, and their callbacks: chunked loss, training meter,
JSONL log, progress bar. A leaf module: the recipe (`dialsum.recipe`) assembles a trainer from these parts.

    dialsum train configs/experiments/04_batch_optimization_rtx3090.yaml --init tiny --max-steps 20
    dialsum train configs/experiments/05_solar_10.7b_qlora.yaml --init tiny --max-steps 20

`Seq2SeqDialsumTrainer` (a `Seq2SeqTrainer`) scores dev during training by generating through the
Trainer; `CausalDialsumTrainer` (a `Trainer`) takes the dev loss over the summary tokens, then scores
dev with dialsum's own generation (prompts left-padded, the prompt cut from the output), through a
`dev_scorer` the recipe hands it. Both share the length-bucketed batches, the per-micro-batch loss
(chunked over the vocabulary when enabled) and the meter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback

from dialsum.data import LengthBucketSampler
from dialsum.distributed import reduce
from dialsum.losses import chunked_loss
from dialsum.meter import TrainingMeter
from dialsum.tokens import IGNORE_INDEX

# Fault injection for the suite's recovery tests: micro-batches larger than this raise out-of-memory.
OOM_ABOVE_BATCH_ENV = "DIALSUM_FAULT_OOM_ABOVE_BATCH"


class _DialsumParts:
    """Length-bucketed batches, loss per micro-batch (chunked over the vocabulary when enabled), and a
    `TrainingMeter` that counts real tokens and stops its clock while evaluating. Mixed into a Trainer."""

    # The tokens a micro-batch trains on: seq2seq reads its inputs and predicts separate labels; a causal
    # LM's labels are positions of its inputs, counted once.
    count_labels = True

    def __init__(self, *args: Any, chunk_tokens: int | None, length_buckets: bool, bucket_summaries: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.length_buckets = length_buckets
        self.bucket_summaries = bucket_summaries
        self.chunk_tokens = chunk_tokens
        oom = os.environ.get(OOM_ABOVE_BATCH_ENV)
        self.oom_above_batch = int(oom) if oom else None
        self.add_callback(TrainingMeter())
        # Each micro-batch loss is a mean; the Trainer divides by the accumulation steps.
        self.model_accepts_loss_kwargs = False

    @property
    def meter(self) -> TrainingMeter:
        """The meter now in use: on --resume transformers replaces it by one rebuilt from the checkpoint."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, TrainingMeter))

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self.meter.paused():
            return super().evaluate(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if not self.length_buckets:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(f["input_ids"]) for f in dataset]
        # seq2seq summaries are a second sequence to pad (sorted too on request); a causal LM's labels are
        # positions of its inputs
        labels = [len(f["labels"]) for f in dataset] if self.count_labels and self.bucket_summaries else None
        return LengthBucketSampler(lengths, self.args.train_batch_size, seed=self.args.seed, label_lengths=labels)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if model.training:
            self._count(inputs)
        if self.chunk_tokens and not return_outputs:
            return chunked_loss(model, inputs, chunk_tokens=self.chunk_tokens,
                                label_smoothing=self.args.label_smoothing_factor)
        return super().compute_loss(model, inputs, return_outputs=return_outputs)

    def _count(self, inputs: dict[str, Any]) -> None:
        batch = inputs["input_ids"].shape[0]
        if self.oom_above_batch is not None and batch > self.oom_above_batch:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (injected: micro-batch {batch} > {self.oom_above_batch})"
            )
        tokens = int(inputs["attention_mask"].sum())
        if self.count_labels:
            tokens += int((inputs["labels"] != IGNORE_INDEX).sum())
        self.meter.tokens += int(reduce(tokens, "sum"))  # under DDP: every rank's share of this step


class Seq2SeqDialsumTrainer(_DialsumParts, Seq2SeqTrainer):
    """BART, T5 and mT5: dev is scored during training by generating through the Trainer, with `penalties`
    (generate() arguments: `generation.penalties_on_generated`) so that it generates as it does after training."""

    def __init__(self, *args: Any, penalties: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.penalties = penalties or {}

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None, **gen_kwargs: Any) -> tuple[Any, Any, Any]:
        if not gen_kwargs:  # the Trainer's own: those evaluate() was given, over the model's generation config
            gen_kwargs = {**getattr(self, "_gen_kwargs", {}), **self.penalties}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)


class CausalDialsumTrainer(_DialsumParts, Trainer):
    """Decoder-only LMs: the dev loss over the summary tokens, then `dev_scorer(model)` (ROUGE of generated
    summaries, keys without the `eval_` prefix) joins the evaluation's metrics before they are logged."""

    count_labels = False

    def __init__(self, *args: Any, dev_scorer: Callable[[Any], dict[str, float]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dev_scorer = dev_scorer

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        if not (prediction_loss_only and self.chunk_tokens):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():  # the chunked loss: no full logits for the dev rows either
            loss = chunked_loss(model, inputs, chunk_tokens=self.chunk_tokens,
                                label_smoothing=self.args.label_smoothing_factor)
        return loss.detach(), None, None

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
        if self.dev_scorer is not None:
            scores = self.dev_scorer(self.model)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return output


class JsonlLog(TrainerCallback):
    """Every log event as one JSON line (flushed), for the suite's live table and the report."""

    def __init__(self, path: Path, trainer: _DialsumParts):
        self.path = path
        self.trainer = trainer

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        meter = self.trainer.meter
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
               "train_seconds": round(meter.seconds, 2), "real_tokens": meter.total_tokens}
        row.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class Progress(TrainerCallback):
    """One progress bar: step, loss, learning rate, tokens per second."""

    def __init__(self, trainer: _DialsumParts):
        self.trainer = trainer
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        if self.bar is None:
            return
        meter = self.trainer.meter
        post = {"tok/s": f"{meter.tokens / max(meter.process_seconds(), 1e-9):,.0f}"}
        if "loss" in logs:
            post["loss"] = f"{logs['loss']:.3f}"
        if "learning_rate" in logs:
            post["lr"] = f"{logs['learning_rate']:.2e}"
        if "eval_final" in logs:
            post["dev"] = f"{logs['eval_final']:.2f}"
        self.bar.set_postfix(post, refresh=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
