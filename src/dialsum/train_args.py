"""The transformers training arguments a config trains with, and their check before any training.

    dialsum validate configs/experiments/*.yaml --set training.optim=adafactor
    pytest tests/test_train_args.py

`training_arguments` maps an adapted config onto `Seq2SeqTrainingArguments`; training uses it, and
`problems` builds the same object up front, so that what transformers would refuse after an epoch
(an unknown optimizer, one whose package is missing, settings it rejects) is refused by
`dialsum validate`, by the suite before its first experiment and by `train` before the model loads.
Building the arguments selects the device, so the suite runs this check in a child process.
"""

from __future__ import annotations

import difflib
import tempfile
from typing import Any

from dialsum.distributed import launched, world_size
from dialsum.generation import generation_kwargs
from dialsum.sections import ExperimentConfig


def device_arguments(cfg: ExperimentConfig, device: str, world: int, launched: bool = False) -> dict[str, Any]:
    """The training arguments that depend on the device and the number of processes (`launched`: under torchrun,
    where the Trainer wraps the model in DDP with one process too)."""
    out: dict[str, Any] = {"use_cpu": True} if device == "cpu" else {}
    if world > 1 or launched:  # dialsum's models use every trainable parameter: no search unless asked for
        out["ddp_find_unused_parameters"] = cfg.training.ddp_find_unused_parameters
        if device == "cpu":  # without these transformers trains each rank alone on all the data
            out["ddp_backend"] = "gloo"
    return out


def training_arguments(cfg: ExperimentConfig, *, output_dir: str, four_bit: bool, device: str) -> Any:
    from transformers import Seq2SeqTrainingArguments  # transformers takes seconds to import: only here

    t, gen = cfg.training, cfg.generation
    best = t.load_best_model_at_end and t.eval_strategy != "no"
    ddp = device_arguments(cfg, device, world_size(), launched())
    return Seq2SeqTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        # transformers 5 reads a warmup_steps below 1 as a ratio of the training steps
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing_factor,
        bf16=t.bf16, tf32=t.tf32 or None,
        dataloader_num_workers=t.dataloader_num_workers, dataloader_pin_memory=t.dataloader_pin_memory,
        dataloader_persistent_workers=t.dataloader_persistent_workers,
        gradient_checkpointing=t.gradient_checkpointing and not four_bit,
        eval_strategy=t.eval_strategy, eval_steps=t.eval_steps,
        save_strategy=t.save_strategy, save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps, logging_first_step=True,
        load_best_model_at_end=best, metric_for_best_model=t.metric_for_best_model if best else None,
        greater_is_better=t.metric_for_best_model != "loss" if best else None,
        restore_callback_states_from_checkpoint=True,  # early stopping and the training meter resume too
        predict_with_generate=True, generation_max_length=gen.max_length, generation_num_beams=gen.num_beams,
        optim=t.optim,
        report_to=[r for r in t.report_to if r != "none"] or "none",
        seed=cfg.experiment.seed, remove_unused_columns=False, disable_tqdm=True,
        torch_compile=cfg.speed.torch_compile,
        **ddp,
    )


def optimizer_names() -> list[str]:
    # transformers takes seconds to import: only where it is used
    from transformers.training_args import OptimizerNames

    return [o.value for o in OptimizerNames]


def problems(cfg: ExperimentConfig, *, four_bit: bool, device: str) -> list[str]:
    """Why transformers would refuse to train this (adapted) config here; empty when it would not."""
    optim = cfg.training.optim
    names = optimizer_names()
    if optim not in names:
        close = difflib.get_close_matches(optim, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return [f"training.optim={optim!r}: not an optimizer transformers knows; {hint}"
                "e.g. adamw_torch, adafactor, adamw_bnb_8bit, paged_adamw_8bit"]
    generation = _generation_problem(cfg)
    if generation:
        return [generation]
    with tempfile.TemporaryDirectory(prefix="dialsum-args-") as tmp:
        try:
            args = training_arguments(cfg, output_dir=tmp, four_bit=four_bit, device=device)
        except (ValueError, ImportError) as err:
            return [f"training: transformers refuses these settings ({_first_line(err)})"]
    try:
        _try_optimizer(args, device)
    except Exception as err:  # a probe: any failure here would be the same failure at the first step
        return [f"training.optim={optim}: cannot run on this {device} ({_first_line(err)}); "
                "use adamw_torch or install what it needs"]
    return []


def _generation_problem(cfg: ExperimentConfig) -> str | None:
    """transformers checks generation settings when it saves a checkpoint: check them now instead."""
    from transformers import GenerationConfig  # transformers: see training_arguments

    try:
        GenerationConfig(**generation_kwargs(cfg.generation)).validate(strict=True)
    except ValueError as err:
        lines = [ln.strip("- ") for ln in str(err).splitlines() if ln.startswith("- ")]
        return f"generation: transformers refuses these settings ({'; '.join(lines) or _first_line(err)})"
    return None


def _try_optimizer(args: Any, device: str) -> None:
    """Resolve the optimizer class (imports its package); on the CPU, also take one step with it."""
    import torch  # torch takes seconds to import: only where it is used
    from transformers import Trainer  # transformers: deferred, as above

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    if device != "cpu":  # a step would put a CUDA context in the calling process
        return
    param = torch.nn.Parameter(torch.zeros(64, 64))
    param.grad = torch.zeros_like(param)
    cls([param], **kwargs).step()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__
