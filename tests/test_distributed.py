"""One experiment on two processes (torchrun DDP, gloo on the CPU): same weights, one writer, resumable.

    pytest tests/test_distributed.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import FAST, ROOT, assert_clean_error, run_cli

from dialsum import config, distributed
from dialsum.device import DeviceInfo
from dialsum.resolve import plan_experiment

BATCH_OPT = "configs/experiments/04_batch_optimization_rtx3090.yaml"
GPU_DEVICE = DeviceInfo(cuda_available=True, device_name="test", device_count=1, total_memory_mb=None,
                        compute_capability="9.0", bf16_supported=True, tf32_supported=True, cpu_cores=16,
                        bitsandbytes_available=True)
SAVING = ["training.save_strategy=steps", "training.save_steps=1", "training.load_best_model_at_end=false",
          "training.logging_steps=1"]


def train_args(run: Path, data: Path, *extra: str) -> list[str]:
    sets = [a for item in [*FAST, *SAVING] for a in ("--set", item)]
    return ["train", BATCH_OPT, "--init", "tiny", *sets, "--data", str(data), "--run-dir", str(run), *extra]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("ddp") / "run"
    first = run_cli(*train_args(run, small_data, "--nproc", "2", "--max-steps", "3"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8")) if first.returncode == 0 else {}
    log_lines = (run / "train_log.jsonl").read_text(encoding="utf-8").splitlines() if first.returncode == 0 else []
    return {"run": run, "first": first, "metrics": metrics, "log_lines": log_lines, "data": small_data}


@pytest.mark.slow
def test_two_processes_train_the_same_weights_and_rank_0_alone_writes(ddp: dict[str, Any]) -> None:
    first, metrics, run = ddp["first"], ddp["metrics"], ddp["run"]
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert metrics["world_size"] == 2 and metrics["replicas_identical"] is True and metrics["steps"] == 3
    assert metrics["effective_batch"] == 64 and metrics["grad_accum"] == 2  # 16 x 2 x 2, as configured
    assert first.stdout.count('{"rouge1"') == 1  # one summary line: rank 0's
    steps = [json.loads(line)["step"] for line in ddp["log_lines"] if "loss" in json.loads(line)]
    assert steps == sorted(set(steps))  # one writer: no step logged twice
    submission = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(ddp["data"] / "test.csv", dtype=str)
    assert list(submission["fname"]) == list(test["fname"])  # exactly the test rows, once each
    dev = pd.read_csv(run / "dev_predictions.csv", dtype=str, keep_default_na=False)
    assert len(dev) == metrics["dev"]["morpheme"]["n"] == len(pd.read_csv(ddp["data"] / "dev.csv"))
    adaptations = json.loads((run / "adaptations.json").read_text(encoding="utf-8"))
    assert any("on 2 DDP processes: using 2, so the effective batch stays 16 x 2 x 2 = 64" in a for a in adaptations)
    assert json.loads((run / "model_info.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_ddp_run_resumes_at_its_saved_step_and_warns_on_another_world_size(ddp: dict[str, Any]) -> None:
    run = ddp["run"]
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint
    again = run_cli(*train_args(run, ddp["data"], "--nproc", "2", "--max-steps", "5", "--resume"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["steps"] == 5
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "resuming from" in log and "checkpoint-3" in log
    (run / "metrics.json").unlink()
    single = run_cli(*train_args(run, ddp["data"], "--max-steps", "6", "--resume"))
    assert single.returncode == 0, single.stderr[-3000:]
    assert "resuming with 1 process(es), but the run trained with 2" in (run / "train.log").read_text(encoding="utf-8")


def test_nproc_beyond_the_machine_is_refused(tmp_path: Path, small_data: Path) -> None:
    proc = run_cli(*train_args(tmp_path / "run", small_data, "--nproc", "999"))
    assert_clean_error(proc, "--nproc 999: must be 1 to")
    assert not (tmp_path / "run").exists()


def test_ddp_keeps_the_effective_batch_and_scores_dev_once() -> None:
    cpu = DeviceInfo(cuda_available=False, device_name=None, device_count=0, total_memory_mb=None,
                     compute_capability=None, bf16_supported=False, tf32_supported=False, cpu_cores=4,
                     bitsandbytes_available=True)
    plan = plan_experiment(config.load(BATCH_OPT), "tiny", cpu, world_size=4)
    t = plan.cfg.training
    assert t.gradient_accumulation_steps == 1 and t.eval_strategy == "no" and not t.load_best_model_at_end
    odd = plan_experiment(config.load("configs/experiments/01_baseline_kobart_rtx3090.yaml"), "tiny", cpu,
                          world_size=2)  # 16 x 3: 3 does not split over 2 processes
    assert any("the effective batch 48 becomes 16 x 2 x 2 = 64" in a for a in odd.adaptations)


def test_the_launch_command_drops_the_option() -> None:
    argv = ["train", "c.yaml", "--nproc", "2", "--run-dir=/x", "--set", "a=1"]
    assert distributed.without_option(distributed.without_option(argv, "--nproc"), "--run-dir") == [
        "train", "c.yaml", "--set", "a=1"]


# Each rank: a default group bound to CUDA alone (as NCCL is), then dialsum's own collectives on CPU values.
COLLECTIVES = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from dialsum import distributed
    if sys.argv[1] == "cuda-bound":
        dist.init_process_group(backend="cuda:gloo")  # rejects CPU tensors: "No backend type associated ..."
    distributed.init(cuda=False)
    total = distributed.reduce(distributed.rank() + 1, "sum")
    top = distributed.reduce(10.0 * (distributed.rank() + 1), "max")
    distributed.barrier()
    torch.manual_seed(0)
    same = distributed.replicas_identical(torch.nn.Linear(3, 2))
    torch.manual_seed(distributed.rank())
    differ = distributed.replicas_identical(torch.nn.Linear(3, 2))
    joined = dist.is_initialized()
    distributed.finish()
    # one write per line (a pipe keeps a short write whole): print() writes the newline apart when unbuffered
    sys.stdout.write(json.dumps({"joined": joined, "sum": total, "max": top, "same": same, "differ": differ}) + "\\n")
    sys.stdout.flush()
""")


def torchrun_ranks(tmp_path: Path, nproc: int, mode: str) -> list[dict[str, Any]]:
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(script), mode], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_collectives_run_beside_a_default_group_that_takes_device_tensors_only(tmp_path: Path) -> None:
    """NCCL's rule on a CPU machine: the default group bound to CUDA refuses CPU tensors, as NCCL does;
    dialsum's sums, maxima, replica digests and barriers run on their own gloo group beside it."""
    ranks = torchrun_ranks(tmp_path, 2, "cuda-bound")
    assert ranks == [{"joined": True, "sum": 3.0, "max": 20.0, "same": True, "differ": False}] * 2


def test_one_process_under_torchrun_joins_the_group(tmp_path: Path) -> None:
    """With one rank accelerate would still join NCCL on CUDA; dialsum joins whenever torchrun started it."""
    assert torchrun_ranks(tmp_path, 1, "plain") == [
        {"joined": True, "sum": 1.0, "max": 10.0, "same": True, "differ": True}]


def test_one_torchrun_process_is_planned_as_ddp() -> None:
    """torchrun with one process: the Trainer still wraps the model in DDP, so the chunked loss (which runs the
    model's parts outside DDP's forward) gives way there too; the batch is untouched."""
    cfg = config.load(BATCH_OPT)
    plan = plan_experiment(cfg, "tiny", GPU_DEVICE, world_size=1, ddp=True)
    assert not plan.cfg.speed.chunked_loss and plan.cfg.training.eval_strategy == "no"
    assert plan.cfg.training.gradient_accumulation_steps == cfg.training.gradient_accumulation_steps
    assert not any("DDP processes" in a for a in plan.adaptations)
    assert plan_experiment(cfg, "tiny", GPU_DEVICE).cfg.speed.chunked_loss  # a plain process keeps it
