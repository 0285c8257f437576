"""Data-parallel training over ``torch.distributed`` (torchrun; gloo on CPU, NCCL on GPU).

Every rank holds the whole data set and draws the same global batch (shared shuffling and
augmentation generators); rank ``r`` of ``K`` keeps part ``r`` of
``torch.tensor_split(range(B), K)``. Each rank back-propagates ``(1/B) Σ_{i∈its part} ℓ_i``
and the gradients are summed over ranks with one all-reduce of a flat buffer, so every rank
ends the step with ``∇ (1/B) Σ_{i∈batch} ℓ_i``, the single-process gradient (up to the order
of floating-point sums), whatever the split sizes. This is the arithmetic of
``DistributedDataParallel`` done explicitly, which also makes micro-batch accumulation and
uneven splits exact. BatchNorm statistics are per rank (each rank's share is a ghost batch);
running statistics are taken from rank 0 before every evaluation.
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

    def all_reduce_gradients(self, model: nn.Module) -> None:
        """Sum every parameter's gradient over ranks (missing gradients count as zero)."""
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p) for p in params
        ]
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        offset = 0
        for p in params:
            k = p.numel()
            chunk = flat[offset:offset + k].view_as(p)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += k

    def broadcast_module(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                tdist.broadcast(t.data, src=0)

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
