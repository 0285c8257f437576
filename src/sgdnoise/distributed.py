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
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

__all__ = ["DistContext", "current", "init_from_env", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """The rank and world size of an initialised process group."""

    rank: int
    world_size: int

    # ---- work split
    def shard_slice(self, n: int) -> slice:
        """This rank's contiguous slice of ``range(n)`` (``tensor_split`` sizes)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        size = base + (1 if self.rank < extra else 0)
        return slice(start, start + size)

    def shard_range(self, n: int) -> tuple[int, int]:
        sl = self.shard_slice(n)
        return sl.start, sl.stop

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
