"""Fine-tuning on several processes or machines: torchrun launches, DDP trains.

When ``train.nproc_per_node`` or ``train.nnodes`` asks for more than one process,
the train stage calls :func:`launch`: ``torchrun`` runs ``python -m transferpilot
stage train`` once per rank. Each rank finds itself :func:`inside` a launch, joins
the process group (:func:`process_group`: gloo on the CPU, nccl on CUDA) and trains
on its share of every batch (:class:`~torch.nn.parallel.DistributedDataParallel`, a
``DistributedSampler`` reshuffled each epoch). Rank 0 alone writes checkpoints,
curves, the model and its export; the others only compute.

A rank that dies ends the launch: torchrun stops the others (no restarts) and
:func:`launch` raises :class:`DistributedFailed` with the rank, its exit code and the
first error line it printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import torch

from transferpilot.errors import ConfigError, TransferpilotError

if TYPE_CHECKING:
    from transferpilot.config import TrainParams

log = logging.getLogger(__name__)

#: How long a rank waits for the others in one collective before it gives up.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
#: torchrun's summary of a failed rank: ``rank : 1 (local_rank: 1)``, ``exitcode : -9``.
_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


class DistributedFailed(TransferpilotError):
    """A rank of a distributed fine-tuning failed (torchrun stopped the others)."""


def requested(settings: TrainParams) -> bool:
    """Whether the settings ask for more than one training process."""
    return settings.nproc_per_node > 1 or settings.nnodes > 1


def inside() -> bool:
    """Whether this process is a rank that torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: ``(0, 1)`` outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes."""
    return rank_world()[0] == 0


def command(settings: TrainParams, argv: Sequence[str]) -> list[str]:
    """The torchrun command running ``python -m transferpilot ARGV`` on every rank."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={settings.nproc_per_node}",
        "--max-restarts=0",  # a failed rank fails the stage; a re-run resumes from the checkpoint
        "--rdzv-backend=c10d",
    ]
    if settings.nnodes > 1:
        cmd += [
            f"--nnodes={settings.nnodes}",
            f"--rdzv-endpoint={settings.rdzv_endpoint}",
            "--rdzv-id=transferpilot-train",
        ]
    else:
        cmd += ["--nnodes=1", "--rdzv-endpoint=127.0.0.1:0"]  # loopback, a free port
    return [*cmd, "-m", "transferpilot", *argv]


def launch(settings: TrainParams, argv: Sequence[str]) -> None:
    """Run ``transferpilot ARGV`` on every rank through torchrun; their output streams to
    this process's stderr. A failure raises :class:`DistributedFailed` saying which rank
    failed and why."""
    cmd = command(settings, argv)
    log.info(
        "fine-tuning on %d process(es) x %d machine(s) with torchrun",
        settings.nproc_per_node,
        settings.nnodes,
    )
    lines: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            lines.append(line.rstrip("\n"))
    if proc.returncode:
        raise DistributedFailed(_failure(lines, proc.returncode))


def _failure(lines: Sequence[str], returncode: int) -> str:
    """One line: the failed rank (torchrun's root cause, not the ranks it then stopped),
    its exit code, the first error it printed."""
    cause = [i for i, ln in enumerate(lines) if ln.startswith("Root Cause")]
    summary = lines[cause[-1] :] if cause else lines
    rank = next((m[1] for m in map(_RANK.match, summary) if m), None)
    code = next((m[1] for m in map(_EXIT.match, summary) if m), None)
    errors = [ln.split("error: ", 1)[1] for ln in lines if ln.startswith("error: ")]
    errors += [ln for ln in lines if re.match(r"^\w+(Error|Exception):", ln)]
    where = f"rank {rank} exited with code {code}" if rank else f"torchrun exited {returncode}"
    signal = f" (signal {-int(code)})" if code and int(code) < 0 else ""
    why = f": {errors[0]}" if errors else ""
    return f"distributed fine-tuning failed: {where}{signal}{why}"


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the block; yields this rank's device
    (``cuda:LOCAL_RANK`` on CUDA)."""
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"distributed fine-tuning needs CPU (gloo) or CUDA (nccl), not {device}")
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (as they are, outside a process group)."""
    import torch.distributed as dist

    if rank_world()[1] == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    import torch.distributed as dist

    if rank_world()[1] > 1:
        dist.barrier()
