"""What a run measures besides its steps: loss and error on clean data (:func:`evaluate`),
BatchNorm statistics recomputed on clean data (:func:`recompute_bn_stats`), and the
chunking of the sharpness estimate (:func:`sharpness_chunking`; the estimate itself is
:func:`sgdnoise.curvature.sharpness`)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.models import batchnorm_layers
from sgdnoise.validate import check_positive_int

from .batches import Batcher, param_dtype
from .config import TrainConfig

__all__ = ["SHARPNESS_MAX_BN_BATCH", "evaluate", "recompute_bn_stats", "sharpness_chunking"]

# the largest BatchNorm group of a train-mode sharpness estimate: one chunk of a
# float32 double backward, as the eval-mode estimate's chunks
SHARPNESS_MAX_BN_BATCH = 512


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on ``device`` when ``enabled`` (on the CPU too: the CUDA path's
    dtypes), else a disabled autocast region."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def fast_autocast(device: torch.device, enabled: bool) -> Any:
    """:func:`autocast` for the training step: no region at all when disabled (entering
    one costs microseconds a step)."""
    return autocast(device, True) if enabled else contextlib.nullcontext()


def upcast(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits -> float32 for the loss; float32/float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@torch.no_grad()
def loss_error_sums(model: nn.Module, batcher: Batcher, x: torch.Tensor, y: torch.Tensor, *,
                    batch_size: int, use_autocast: bool, lo: int = 0, hi: int | None = None
                    ) -> torch.Tensor:
    """``[Σ ℓ_i, Σ 1(wrong_i)]: (2,)`` in float64 on the device over examples ``lo..hi`` of
    ``x: (N, ...)``, ``y: (N,)`` in chunks of ``batch_size`` (the model in eval mode, its
    mode restored afterwards)."""
    device = x.device
    hi = x.shape[0] if hi is None else hi
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            with autocast(device, use_autocast):
                out = model(batcher.convert(x[start:stop]))
            out = upcast(out)
            loss_sum += F.cross_entropy(out, y[start:stop], reduction="sum").double()
            wrong += (out.argmax(dim=1) != y[start:stop]).sum().double()
    finally:
        model.train(was_training)
    return torch.stack([loss_sum, wrong])


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    amp: bool = True,
    channels_last: bool = True,
) -> tuple[float, float]:
    """Mean cross-entropy loss and error rate of ``model`` (in eval mode, no augmentation)
    over ``x: (N, ...)``, ``y: (N,)``, in chunks of ``batch_size``; bf16 autocast on CUDA
    when ``amp``.

    ``x`` may hold uint8 pixels (normalised with the CIFAR-10 statistics) or floats. The
    model's train/eval mode is restored afterwards."""
    batch_size = check_positive_int("batch_size", batch_size)
    batcher = Batcher(x, param_dtype(model), channels_last)
    sums = loss_error_sums(model, batcher, x, y, batch_size=batch_size,
                           use_autocast=amp and x.device.type == "cuda")
    n = x.shape[0]
    return float(sums[0]) / n, float(sums[1]) / n


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int,
    amp: bool = True,
    channels_last: bool = True,
    batcher: Batcher | None = None,
    use_autocast: bool | None = None,
) -> int:
    """Recompute every BatchNorm layer's running statistics on clean data.

    The running mean/variance are reset, then set to the cumulative average (momentum None)
    of the per-call statistics over ``floor(n / batch_size)`` chunks of ``batch_size``
    examples of ``x: (n, ...)`` (one chunk of all ``n`` when ``n < batch_size``), run in
    train mode without gradients or augmentation (bf16 autocast on CUDA when ``amp``). Each
    layer's momentum and the model's mode are restored. Returns the number of chunks used
    (0 for a network without BatchNorm). ``batcher`` / ``use_autocast``: the training
    engine's input conversion and autocast choice (default: from ``x``, ``amp`` and
    ``channels_last``)."""
    batch_size = check_positive_int("batch_size", batch_size)
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    batcher = batcher or Batcher(x, param_dtype(model), channels_last)
    if use_autocast is None:
        use_autocast = amp and x.device.type == "cuda"
    momenta = [m.momentum for m in layers]
    was_training = model.training
    n = x.shape[0]
    chunks = [(lo, lo + batch_size) for lo in range(0, n - batch_size + 1, batch_size)]
    if not chunks:
        chunks = [(0, n)]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for lo, hi in chunks:
            with autocast(x.device, use_autocast):
                model(batcher.convert(x[lo:hi]))
    finally:
        for m, mom in zip(layers, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(chunks)


def sharpness_chunking(cfg: TrainConfig) -> tuple[int, int | None]:
    """``(chunk, bn_batch)`` of the sharpness estimates of ``cfg``: the examples per forward
    pass and the BatchNorm batch of the measured objective (None: no batch statistics).

    Eval mode, or a network without BatchNorm: chunks of ``min(sharpness_n,
    eval_batch_size, 512)`` (they bound memory only), ``bn_batch`` None. Train mode with
    BatchNorm: the training BN batch — the ghost size ``g``, else ``min(B,
    micro_batch_size)`` — capped at ``SHARPNESS_MAX_BN_BATCH`` (512) and at ``sharpness_n``;
    with ghost BatchNorm a chunk holds as many whole groups as fit in 512 examples."""
    n = max(cfg.sharpness_n, 1)
    if cfg.sharpness_bn_mode == "eval" or cfg.norm != "batch":
        return min(n, cfg.eval_batch_size, SHARPNESS_MAX_BN_BATCH), None
    g = cfg.ghost_batch_size
    if g is not None and g < min(cfg.batch_size, n):
        bn = min(g, SHARPNESS_MAX_BN_BATCH)
        return min(n, bn * max(1, SHARPNESS_MAX_BN_BATCH // bn)), bn
    bn = min(cfg.batch_size, cfg.micro_batch_size or cfg.batch_size, SHARPNESS_MAX_BN_BATCH, n)
    return bn, bn


def bn_recompute_chunk(cfg: TrainConfig) -> int:
    """Chunk size of the BatchNorm recompute: the BN batch (ghost size, else B) when it fits
    in ``eval_batch_size``; else the largest multiple of the ghost size that fits (the
    layers split it into ghost groups) or ``eval_batch_size``."""
    g = cfg.ghost_batch_size
    bn_batch = min(g, cfg.batch_size) if g is not None else cfg.batch_size
    if bn_batch <= cfg.eval_batch_size:
        return bn_batch if g is None or cfg.batch_size <= g else g * max(
            1, cfg.eval_batch_size // g)
    return cfg.eval_batch_size
