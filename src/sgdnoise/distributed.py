"""Data-parallel training over ``torch.distributed`` (torchrun; gloo on CPU, NCCL on GPU).

Every rank holds the whole data set and draws the same global batch (shared shuffling and
augmentation generators); rank ``r`` of ``K`` keeps part ``r`` of
``torch.tensor_split(range(B), K)``. The model runs inside
``torch.nn.parallel.DistributedDataParallel`` (:meth:`DistContext.wrap`); each rank
back-propagates ``(K/B) Σ_{i∈its part} ℓ_i`` and DDP averages the gradients over the ``K``
ranks, so every rank ends the step with ``∇ (1/B) Σ_{i∈batch} ℓ_i``, the single-process
gradient (up to the order of floating-point sums), whatever the split sizes. Micro-batches
accumulate under ``no_sync()``: one all-reduce per step. BatchNorm statistics are per rank
(each rank's share is a ghost batch; ``broadcast_buffers=False``); running statistics are
taken from rank 0 before every evaluation.

The training engine talks to a *strategy*: :class:`SingleProcess` (one process, every
method a no-op or the identity) or :class:`DistContext` (data parallel), with the same
methods, so that its loop has no branch on whether it is distributed
(:func:`strategy` picks the one that applies).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

__all__ = ["DistContext", "SingleProcess", "current", "init_from_env", "shutdown",
           "strategy"]


class SingleProcess:
    """The strategy of a run in one process: rank 0 of 1; the whole batch is this
    process's share, sums are already global, nothing is wrapped or broadcast."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and records and calls the hooks."""
        return self.rank == 0

    @property
    def grad_scale(self) -> float:
        """``K``: each process back-propagates ``(K/B) Σ_{i∈its share} ℓ_i`` so that the
        gradient average over the ``K`` processes is ``∇ (1/B) Σ_{i∈batch} ℓ_i``."""
        return float(self.world_size)

    def shard_slice(self, n: int) -> slice:
        return slice(0, n)

    def shard_range(self, n: int) -> tuple[int, int]:
        sl = self.shard_slice(n)
        return sl.start, sl.stop

    def shard_batch(self, idx: Any, aug: tuple | None) -> tuple[Any, tuple | None]:
        """This process's part of a global batch: indices ``(b,)`` and augmentation."""
        return idx, aug

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def accumulating(self, net: nn.Module, last: bool) -> Any:
        """The context of one micro-batch's backward pass: under DDP only the last
        micro-batch of a step all-reduces the gradients."""
        return contextlib.nullcontext()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers to every process (nothing to do in one process)."""

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for in one process)."""


@dataclass(frozen=True)
class DistContext(SingleProcess):
    """The rank and world size of an initialised process group: the data-parallel
    strategy."""

    rank: int
    world_size: int

    # ---- work split
    def shard_slice(self, n: int) -> slice:
        """This rank's contiguous slice of ``range(n)`` (``tensor_split`` sizes)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        size = base + (1 if self.rank < extra else 0)
        return slice(start, start + size)

    def shard_batch(self, idx: Any, aug: tuple | None) -> tuple[Any, tuple | None]:
        part = self.shard_slice(idx.shape[0])
        return idx[part], None if aug is None else tuple(a[part] for a in aug)

    # ---- communication
    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        return out

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (rank 0's parameters and buffers are
        broadcast now; running BatchNorm statistics then stay per rank, see
        :meth:`broadcast_buffers`)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False,
                                       gradient_as_bucket_view=True)

    def accumulating(self, net: nn.Module, last: bool) -> Any:
        return contextlib.nullcontext() if last else net.no_sync()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
        with torch.no_grad():
            for b in model.buffers():
                tdist.broadcast(b.data, src=0)

    def barrier(self) -> None:
        tdist.barrier()


def current() -> DistContext | None:
    """The active process group's context, or None when not distributed (or world size 1)."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return None
    world = tdist.get_world_size()
    if world == 1:
        return None
    return DistContext(rank=tdist.get_rank(), world_size=world)


def strategy() -> SingleProcess:
    """The strategy of this process: :func:`current`'s :class:`DistContext`, or
    :class:`SingleProcess` when not distributed."""
    return current() or SingleProcess()


def init_from_env(device: str = "cpu") -> DistContext | None:
    """Initialise the process group from torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); NCCL for CUDA devices, gloo otherwise.

    Returns None (and does nothing) when ``WORLD_SIZE`` is unset or 1. On CUDA each rank uses
    ``cuda:LOCAL_RANK``; returns the context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not tdist.is_initialized():
        use_cuda = torch.device(device).type == "cuda"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def shutdown() -> None:
    """Destroy the process group if one is initialised."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
