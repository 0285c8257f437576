"""Per-example gradients and flat parameter vectors.

Notation: a model with trainable parameters θ ∈ R^P (every parameter with
``requires_grad=True``, flattened and concatenated in ``model.parameters()`` order), a data
set of N examples and per-example losses ℓ_i(θ) = loss_fn(f(x_i; θ), y_i), where ``loss_fn``
is an ordinary batch criterion evaluated on a batch holding example i alone. With mean or sum
reduction the two agree on a batch of one, so ℓ_i does not depend on the reduction.

- ``per_example_grads`` returns G: (N, P) with row i equal to g_i = ∇ℓ_i(θ).
- ``full_gradient`` returns ḡ = (1/N) Σ_i g_i: (P,), the gradient of the mean loss.

Both use :mod:`torch.func` (``functional_call`` + ``vmap``), in chunks of ``chunk_size``
examples so that memory stays O(chunk_size · P) beyond the (N, P) result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from sgdnoise._validate import check_positive_int, check_vector

__all__ = [
    "per_example_grads",
    "full_gradient",
    "flat_params",
    "set_flat_params",
    "num_params",
    "unflatten",
    "trainable_named_parameters",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every trainable parameter, in ``model.parameters()`` order.

    Shared (tied) parameters appear once, as in ``model.parameters()``.
    """
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def num_params(model: nn.Module) -> int:
    """P, the number of trainable scalars of ``model``."""
    return sum(p.numel() for _, p in trainable_named_parameters(model))


def _result_dtype(params: list[Tensor]) -> torch.dtype:
    if not params:
        return torch.get_default_dtype()
    return functools.reduce(torch.promote_types, (p.dtype for p in params))


def flat_params(model: nn.Module) -> Tensor:
    """θ: (P,), a detached copy of the trainable parameters, flattened in order."""
    params = [p for _, p in trainable_named_parameters(model)]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    dtype = _result_dtype(params)
    return torch.cat([p.detach().reshape(-1).to(dtype) for p in params])


@torch.no_grad()
def set_flat_params(model: nn.Module, theta: Tensor) -> None:
    """Write θ: (P,) into the trainable parameters of ``model`` (in place, no autograd)."""
    named = trainable_named_parameters(model)
    check_vector("theta", theta, sum(p.numel() for _, p in named))
    offset = 0
    for _, p in named:
        n = p.numel()
        p.copy_(theta[offset : offset + n].reshape(p.shape).to(device=p.device, dtype=p.dtype))
        offset += n


def unflatten(model: nn.Module, v: Tensor) -> dict[str, Tensor]:
    """Split v: (P,) into ``{name: tensor shaped like that parameter}`` (trainable params only).

    The tensors are views of ``v`` (no copy), in ``model.parameters()`` order.
    """
    named = trainable_named_parameters(model)
    check_vector("v", v, sum(p.numel() for _, p in named))
    pieces = torch.split(v, [p.numel() for _, p in named])
    return {name: piece.view(p.shape) for (name, p), piece in zip(named, pieces, strict=True)}


def _check_no_batch_statistics(model: nn.Module) -> None:
    """Per-example gradients are undefined for layers that mix examples through batch stats."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            uses_batch_stats = module.training or module.running_mean is None
            if uses_batch_stats:
                label = name or type(module).__name__
                raise ValueError(
                    f"model contains the BatchNorm layer {label!r} computing batch statistics "
                    f"(training={module.training}, "
                    f"track_running_stats={module.track_running_stats}); per-example gradients "
                    "are not defined when the examples of a batch are coupled. Either call "
                    "model.eval() so BatchNorm uses its running statistics, or build the model "
                    "with GroupNorm (e.g. build_model(..., norm='group'))."
                )


def _check_data(inputs: Tensor, targets: Tensor) -> int:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1:
        raise ValueError(f"inputs must be a tensor with a batch dimension, got {inputs!r:.80}")
    if not isinstance(targets, torch.Tensor) or targets.ndim < 1:
        raise ValueError(f"targets must be a tensor with a batch dimension, got {targets!r:.80}")
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(
            f"targets must have as many rows as inputs ({n}), got {targets.shape[0]}"
        )
    if n < 1:
        raise ValueError("inputs must hold at least one example, got 0")
    return n


def _example_loss_fn(model: nn.Module, loss_fn: LossFn, frozen: dict[str, Tensor]):
    """ℓ(params, x, y): the loss of one example (x, y without batch dim) as a batch of one."""

    def loss_one(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (params, frozen), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    return loss_one


def _split_state(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], dict[str, Tensor]]:
    named = trainable_named_parameters(model)
    if not named:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    trainable = {name for name, _ in named}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    frozen.update(dict(model.named_buffers()))
    return named, frozen


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Per-example gradients G: (N, P), row i = g_i = ∇_θ ℓ_i(θ).

    Args:
        model: any ``nn.Module``; its trainable parameters define θ ∈ R^P (flattened in
            ``model.parameters()`` order, like :func:`flat_params`). Buffers and frozen
            parameters are passed through unchanged. BatchNorm must use running statistics
            (``model.eval()``); otherwise a ValueError explains the choices.
        loss_fn: batch criterion ``loss_fn(outputs, targets) -> scalar`` (mean or sum
            reduction); it is applied to each example alone, as a batch of one.
        inputs: (N, ...) examples; targets: (N, ...) labels.
        chunk_size: number of examples vectorised at once (``None``: all N). Peak extra
            memory is about chunk_size × (P + activations of one example).

    Returns:
        G: (N, P) on the parameters' device, in the parameters' (promoted) dtype.
        Layers in train mode with randomness (dropout) draw independently per example.
    """
    n = _check_data(inputs, targets)
    chunk = n if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    _check_no_batch_statistics(model)
    named, frozen = _split_state(model)
    params = {name: p.detach() for name, p in named}
    dtype = _result_dtype([p for _, p in named])
    device = named[0][1].device
    grad_fn = vmap(
        grad(_example_loss_fn(model, loss_fn, frozen)),
        in_dims=(None, 0, 0),
        randomness="different",
    )
    out = torch.empty((n, sum(p.numel() for _, p in named)), dtype=dtype, device=device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        grads = grad_fn(params, inputs[start:stop], targets[start:stop])
        offset = 0
        for name, p in named:
            k = p.numel()
            out[start:stop, offset : offset + k] = grads[name].reshape(stop - start, k)
            offset += k
    return out


def full_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """ḡ = (1/N) Σ_i ∇ℓ_i(θ): (P,), the gradient of the mean per-example loss.

    Each ℓ_i is ``loss_fn`` on example i alone (as in :func:`per_example_grads`), so the
    result equals ``per_example_grads(...).mean(0)`` whatever the criterion's reduction,
    but it costs one vectorised forward/backward per chunk and O(P) memory for the result.
    """
    n = _check_data(inputs, targets)
    chunk = n if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    _check_no_batch_statistics(model)
    named, frozen = _split_state(model)
    leaves = [p.detach().requires_grad_(True) for _, p in named]
    params = {name: leaf for (name, _), leaf in zip(named, leaves, strict=True)}
    losses_fn = vmap(
        _example_loss_fn(model, loss_fn, frozen), in_dims=(None, 0, 0), randomness="different"
    )
    dtype = _result_dtype(leaves)
    total = torch.zeros(sum(p.numel() for p in leaves), dtype=dtype, device=leaves[0].device)
    with torch.enable_grad():
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            losses = losses_fn(params, inputs[start:stop], targets[start:stop])
            grads = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
            total += torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1).to(dtype)
                    for g, p in zip(grads, leaves, strict=True)
                ]
            )
    return total / n
