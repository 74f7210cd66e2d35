"""One experiment on several processes: torchrun (DDP) launch, ranks, and the few collectives dialsum needs.

    dialsum train CONFIG --nproc 2                      # torchrun --standalone, two processes (gloo on a CPU)
    pytest tests/test_distributed.py

`launch` re-runs the same `dialsum train` command under `torch.distributed.run --standalone`; each
rank then trains its share of every batch. Rank 0 alone writes the run directory, generates dev and
test, scores and writes the submission: under DDP transformers' evaluation gathers padded
duplicates (10 dev rows on 2 ranks gave 16 predictions with transformers 5.24), so no score comes
from gathered predictions. The other ranks wait at barriers and leave once training is over.

NCCL's rule: an NCCL group moves CUDA tensors only; a CPU tensor, an object gather staged on the CPU
or a barrier on it fails with "No backend type associated with device type cpu". The Trainer's
gradient collectives run on the default group (NCCL on CUDA, gloo on a CPU). Every collective
dialsum issues itself (the training meter's token sums, the end-of-run maxima, the replica digests,
the barriers around the run directory) is on a second group, gloo, which serves CPU values whatever
the default group's backend: created once, by every rank, at its first collective. Those values are
host numbers and file hand-overs, so gloo is their natural home; putting them on the current CUDA
device instead would add a device copy and a stream sync to every micro-batch and tie the barrier to
NCCL's stream. `tests/test_distributed.py` reproduces the rule on a CPU machine with a default group
bound to CUDA alone (`backend="cuda:gloo"`).

Under torchrun dialsum joins the group even with one rank: accelerate would otherwise join NCCL on
its own, and dialsum's collectives would then meet the rule above.

The launcher, torchrun and the ranks end together (the rule is in `dialsum.lifeline`): torchrun dies
with the launcher, each rank with torchrun (`dialsum.rank`), and a SIGINT or SIGTERM sent to the
launcher is passed on to torchrun, which stops its ranks before it exits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import Any

from dialsum import lifeline
from dialsum.device import cpu_core_count
from dialsum.errors import DialsumError
from dialsum.slots import visible_gpus


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True inside a process that torchrun started."""
    return "LOCAL_RANK" in os.environ


def check_nproc(nproc: int) -> None:
    """--nproc: one process per GPU, or at most one per core on a CPU-only machine (GPUs counted through NVML:
    the launcher loads no torch)."""
    gpus = visible_gpus()
    limit, what = (gpus, "GPU(s)") if gpus else (cpu_core_count(), "CPU cores")
    if nproc < 1 or nproc > limit:
        raise DialsumError(f"--nproc {nproc}: must be 1 to {limit}, the {what} of this machine")


def launch(argv: list[str], nproc: int) -> int:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m dialsum.rank ARGV`, which dies with
    this process and gets the SIGINT/SIGTERM it receives (this process waits while torchrun stops its
    ranks); its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dialsum.rank", *argv]
    return lifeline.run_forwarding(cmd)


def without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `--option VALUE` / `--option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


_side_group: Any = None  # the gloo group of dialsum's own collectives (see the module docstring)


def init(cuda: bool) -> None:
    """Join the process group torchrun set up (gloo on a CPU, NCCL on CUDA), with one rank too; nothing for a
    process torchrun did not start."""
    import torch  # torch takes seconds to import: only where it is used
    import torch.distributed as dist  # torch: deferred, as above

    if not launched() or dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as err:
        raise DialsumError(f"DDP: cannot join the process group ({str(err).splitlines()[0][:160]})") from None
    logging.getLogger("dialsum").info("DDP: rank %d of %d joined the %s process group (dialsum's own collectives: "
                                      "gloo)", rank(), world_size(), dist.get_backend())


def _group() -> Any:
    """dialsum's gloo group, or None outside a process group. Creating it is itself a collective: every rank
    reaches it at the same call, its first collective here, as every collective needs all ranks anyway."""
    global _side_group
    import torch.distributed as dist  # torch: deferred, as above

    if not (dist.is_available() and dist.is_initialized()):
        return None
    if _side_group is None:
        _side_group = dist.new_group(backend="gloo")
    return _side_group


def barrier() -> None:
    import torch.distributed as dist  # torch: deferred, as above

    group = _group()
    if group is not None:
        dist.barrier(group=group)


def reduce(value: float, op: str) -> float:
    """The sum or max of `value` over every rank (the value itself for one process)."""
    import torch  # torch: deferred, as above
    import torch.distributed as dist  # torch: deferred, as above

    group = _group()
    if group is None:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)  # on the CPU: the gloo group's device
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=group)
    return float(tensor.item())


def replicas_identical(model: Any) -> bool:
    """Whether every rank holds the same weights after training (a digest of the parameters compared)."""
    import torch.distributed as dist  # torch: deferred, as above

    group = _group()
    if group is None:
        return True
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digest.hexdigest(), group=group)  # staged on the CPU: gloo's
    return len(set(gathered)) == 1


def finish() -> None:
    """Leave the process group (every group, dialsum's own too)."""
    global _side_group
    import torch.distributed as dist  # torch: deferred, as above

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _side_group = None
