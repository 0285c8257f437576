"""Per-example gradients and flat parameter vectors.

Notation: a model with trainable parameters θ ∈ R^P (every parameter with
``requires_grad=True``, flattened and concatenated in ``model.parameters()`` order), a data
set of N examples and per-example losses ℓ_i(θ) = loss_fn(f(x_i; θ), y_i), where ``loss_fn``
is an ordinary batch criterion evaluated on a batch holding example i alone. With mean or sum
reduction the two agree on a batch of one, so ℓ_i does not depend on the reduction.

- ``per_example_grads`` returns G: (N, P) with row i equal to g_i = ∇ℓ_i(θ).
- ``full_gradient`` returns ḡ = (1/N) Σ_i g_i: (P,), the gradient of the mean loss.
- ``per_example_grad_products`` returns G V: (N, k) for V: (P, k) without forming G.

Both gradient functions use :mod:`torch.func` (``functional_call`` + ``vmap``), in chunks of
``chunk_size`` examples so that memory stays O(chunk_size · P) beyond the (N, P) result.

The building blocks that every per-example computation of the package shares live here too
(one implementation each): :func:`trainable_parameters`, :func:`check_independent_examples`,
:func:`per_example_losses` (ℓ: (N,), differentiable), :func:`split_like` / :func:`flatten_like`
(flat (..., P) vectors ↔ per-parameter tensors) and :func:`batched_vjp` (vector-Jacobian
products for a stack of cotangents).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from sgdnoise.validate import check_finite, check_positive_int, check_vector

__all__ = [
    "batched_vjp",
    "check_independent_examples",
    "flatten_like",
    "per_example_grad_products",
    "per_example_losses",
    "split_like",
    "trainable_parameters",
    "per_example_grads",
    "full_gradient",
    "flat_params",
    "set_flat_params",
    "num_params",
    "unflatten",
    "trainable_named_parameters",
    "grads_nbytes",
    "available_memory_bytes",
    "DEFAULT_MEMORY_FRACTION",
]

#: :func:`per_example_grads` refuses a G that would take more than this fraction of the
#: memory its device has free (override with ``max_memory_fraction``; None: no check).
DEFAULT_MEMORY_FRACTION = 0.5

LossFn = Callable[[Tensor, Tensor], Tensor]


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every trainable parameter, in ``model.parameters()`` order.

    Shared (tied) parameters appear once, as in ``model.parameters()``.
    """
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of ``model`` (θ in order); ValueError if there are none."""
    params = [p for _, p in trainable_named_parameters(model)]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return params


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


def split_like(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Cut v: (..., P) into pieces shaped ``(..., *t.shape)`` for t in ``like`` (P = Σ t.numel()).

    Leading dimensions are kept (a stack of k directions gives pieces ``(k, *t.shape)``); the
    pieces are views of ``v`` when it is contiguous."""
    sizes = [t.numel() for t in like]
    if v.ndim < 1 or v.shape[-1] != sum(sizes):
        raise ValueError(f"v must have last dimension {sum(sizes)}, got shape {tuple(v.shape)}")
    lead = v.shape[:-1]
    pieces = torch.split(v, sizes, dim=-1)
    return [piece.reshape(*lead, *t.shape) for piece, t in zip(pieces, like, strict=True)]


def flatten_like(
    pieces: Sequence[Tensor | None], like: Sequence[Tensor], lead: tuple[int, ...] = ()
) -> Tensor:
    """Concatenate per-parameter tensors ``(lead..., *t.shape)`` into ``(lead..., P)``.

    A ``None`` piece (a parameter the output does not depend on) counts as zeros."""
    return torch.cat(
        [
            (t.new_zeros((*lead, t.numel())) if g is None else g.reshape(*lead, t.numel()))
            for g, t in zip(pieces, like, strict=True)
        ],
        dim=-1,
    )


def batched_vjp(
    outputs: Tensor | Sequence[Tensor],
    inputs: Sequence[Tensor],
    cotangents: Tensor | Sequence[Tensor],
    *,
    create_graph: bool = False,
) -> list[Tensor | None]:
    """Vector-Jacobian products Σ_o ⟨c_s, ∂o/∂x⟩ for a stack of k cotangents c_s.

    ``outputs`` o (a tensor or list), ``cotangents`` of shapes ``(k, *o.shape)`` (matching
    ``outputs``); returns, per input x, a ``(k, *x.shape)`` tensor or None if no output depends on
    x. The graph is retained, so the same graph serves many calls. Uses autograd's batched
    backward (``is_grads_batched``) and falls back to a loop over k when an operation has no
    batching rule."""
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    cots = [cotangents] if isinstance(cotangents, Tensor) else list(cotangents)
    kw = dict(retain_graph=True, create_graph=create_graph, allow_unused=True)
    try:
        return list(torch.autograd.grad(outs, list(inputs), grad_outputs=cots,
                                        is_grads_batched=True, **kw))
    except RuntimeError:
        rows = [
            torch.autograd.grad(outs, list(inputs), grad_outputs=[c[s] for c in cots], **kw)
            for s in range(cots[0].shape[0])
        ]
        return [
            None if rows[0][j] is None else torch.stack([r[j] for r in rows])
            for j in range(len(inputs))
        ]


def per_example_losses(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """ℓ: (N,) with ℓ_i = loss_fn(outputs[i:i+1], targets[i:i+1]), each example as a batch of
    one; differentiable (and composable with torch.func transforms).

    ``reduction="none"`` criteria are averaged over the example's entries; plain
    cross-entropy on (N, C) logits takes a vectorised fast path with the same values. Criteria
    that ``vmap`` cannot trace are evaluated one example at a time."""
    if outputs.ndim == 2 and (
        loss_fn is F.cross_entropy
        or isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None
    ):
        kw = {} if loss_fn is F.cross_entropy else dict(
            ignore_index=loss_fn.ignore_index, label_smoothing=loss_fn.label_smoothing)
        return F.cross_entropy(outputs, targets, reduction="none", **kw)

    def one(o: Tensor, t: Tensor) -> Tensor:
        val = loss_fn(o.unsqueeze(0), t.unsqueeze(0))
        return val.mean() if val.ndim > 0 else val

    try:
        return vmap(one)(outputs, targets)
    except Exception:  # criteria vmap cannot trace: one example at a time
        return torch.stack([one(outputs[j], targets[j]) for j in range(outputs.shape[0])])


def check_independent_examples(model: nn.Module) -> None:
    """Raise ValueError if a BatchNorm layer of ``model`` computes batch statistics.

    Per-example losses, gradients and curvature are undefined when BatchNorm (training
    mode, or no running statistics) couples the examples of a batch."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


def grads_nbytes(model: nn.Module, num_examples: int, dtype: torch.dtype | None = None) -> int:
    """Bytes of G: (N, P) = N × P × itemsize, what :func:`per_example_grads` allocates for
    ``num_examples`` = N rows (``dtype``: default the parameters' promoted dtype).

    >>> from torch import nn
    >>> grads_nbytes(nn.Linear(3, 2).double(), 16)   # 16 × 8 parameters × 8 bytes
    1024
    """
    n = check_positive_int("num_examples", num_examples)
    dtype = dtype or _result_dtype(trainable_parameters(model))
    return n * num_params(model) * torch.empty((), dtype=dtype).element_size()


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory of ``device`` in bytes: ``torch.cuda.mem_get_info`` on CUDA, psutil's
    ``available`` (else ``MemAvailable`` of /proc/meminfo) on the CPU; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        return _meminfo_available()
    return int(psutil.virtual_memory().available)


def _size_text(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:,.2f} GiB"


def _check_memory(n: int, p: int, dtype: torch.dtype, device: torch.device,
                  fraction: float | None) -> None:
    """Refuse (MemoryError) a G: (n, p) above ``fraction`` of the device's free memory."""
    if fraction is None:
        return
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not (
            0 < fraction <= 1):
        raise ValueError(f"max_memory_fraction must be a number in (0, 1] or None, got "
                         f"{fraction!r}")
    free = available_memory_bytes(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = n * p * itemsize
    if free is None or need <= fraction * free:
        return
    rows = max(1, math.floor(fraction * free / (p * itemsize)))
    raise MemoryError(
        f"per_example_grads: G of shape ({n}, {p}) in {dtype} needs {_size_text(need)}, more "
        f"than max_memory_fraction={fraction} of the {_size_text(free)} free on {device} "
        f"(limit {_size_text(fraction * free)}). Compute it in pieces of at most {rows} "
        f"examples (per_example_grads(model, loss_fn, inputs[i:i + {rows}], "
        f"targets[i:i + {rows}]) and reduce each piece before the next), use a reduction that "
        "never holds G (noise_scale_of_model, EmpiricalFisherOperator, "
        "per_example_grad_products), or pass max_memory_fraction=None to skip this check.")


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


# per model: the output shape of one example, by (example shape, dtype, device) of the inputs
_OUTPUT_SHAPES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[int, ...]]] = (
    weakref.WeakKeyDictionary())


def _example_output_shape(model: nn.Module, inputs: Tensor) -> tuple[int, ...]:
    """The output shape of one example: a forward pass of ``inputs[:1]`` without gradients
    (and without touching the global RNG), done once per model and kind of input. A failing
    pass becomes a ValueError naming ``inputs`` (its dtype when it differs from the
    parameters', else its shape)."""
    pdt = next(model.parameters()).dtype
    key = (tuple(inputs.shape[1:]), inputs.dtype, inputs.device, pdt)
    shapes = _OUTPUT_SHAPES.setdefault(model, {})
    if key not in shapes:
        devices = [inputs.device] if inputs.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                out = model(inputs[:1])
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if inputs.is_floating_point() and inputs.dtype != pdt:
                raise ValueError(f"inputs must have the model's parameter dtype {pdt}, got "
                                 f"{inputs.dtype} (convert with inputs.to({pdt}))") from None
            raise ValueError(f"inputs of shape {tuple(inputs.shape)} do not fit the model: "
                             f"one example of shape {key[0]} fails in its forward pass "
                             f"({first})") from None
        if not isinstance(out, Tensor):
            return ()
        shapes[key] = tuple(out.shape[1:])
    return shapes[key]


def _check_values(loss_fn: LossFn, inputs: Tensor, targets: Tensor,
                  classes: int | None) -> None:
    """Finite floating inputs and targets; with ``classes``, integer targets in
    ``0..classes-1`` (the loss's ignored index aside). One host synchronisation for all."""
    stats: dict[str, Tensor] = {}
    for name, t in (("inputs", inputs), ("targets", targets)):
        if t.is_floating_point():
            stats[name] = (~torch.isfinite(t)).sum()
    if classes is not None and not targets.is_floating_point() and targets.numel():
        kept = torch.where(targets == getattr(loss_fn, "ignore_index", -100), 0, targets)
        stats["min"], stats["max"] = kept.min(), kept.max()
    if not stats:
        return
    got = dict(zip(stats, torch.stack([v.reshape(()).long() for v in stats.values()])
                   .tolist(), strict=True))
    check_finite("inputs", inputs, bad=got.get("inputs", 0))
    check_finite("targets", targets, bad=got.get("targets", 0))
    if "min" in got and (got["min"] < 0 or got["max"] >= classes):
        raise ValueError(f"targets must be class indices in 0..{classes - 1} (the model "
                         f"gives {classes} classes), got values {got['min']}..{got['max']}")


def _class_count(loss_fn: LossFn, targets: Tensor, shape: tuple[int, ...]) -> int | None:
    """C for cross-entropy on ``(N, C)`` logits (None otherwise), after checking the
    targets' shape: class indices ``(N,)`` or probabilities ``(N, C)``."""
    if len(shape) != 1 or not (loss_fn is F.cross_entropy
                               or isinstance(loss_fn, nn.CrossEntropyLoss)):
        return None
    classes = shape[0]
    if targets.is_floating_point():
        if tuple(targets.shape[1:]) != (classes,):
            raise ValueError(f"targets of class probabilities must have shape (N, {classes}), "
                             f"got {tuple(targets.shape)}")
        return None
    if targets.ndim != 1:
        raise ValueError(f"targets must be class indices of shape (N,) (the model gives "
                         f"{classes} classes per example), got shape {tuple(targets.shape)}")
    return classes


def _check_inputs(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor) -> None:
    """Before any gradient: inputs the model takes (one forward pass of one example per
    model and kind of input, cached), finite inputs (and floating targets) and, for
    cross-entropy on ``(N, C)`` logits, targets that are class indices ``0..C-1`` or
    probabilities ``(N, C)``. Each failure is a ValueError naming the argument."""
    shape = _example_output_shape(model, inputs)
    _check_values(loss_fn, inputs, targets, _class_count(loss_fn, targets, shape))


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


def _prepare(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor,
             chunk_size: int | None):
    """Checked ``(N, chunk, trainable (name, param) pairs, frozen state)``."""
    n = _check_data(inputs, targets)
    chunk = n if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    check_independent_examples(model)
    named, frozen = _split_state(model)
    _check_inputs(model, loss_fn, inputs, targets)
    return n, chunk, named, frozen


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    chunk_size: int | None = None,
    max_memory_fraction: float | None = DEFAULT_MEMORY_FRACTION,
) -> Tensor:
    """Per-example gradients G: (N, P), row i = g_i = ∇_θ ℓ_i(θ).

    Args:

        - model: any ``nn.Module`` (``nn.Sequential`` or not: residual blocks, branches and
          custom ``forward`` methods work, since the model is called through
          ``torch.func.functional_call``); its trainable parameters define θ ∈ R^P
          (flattened in ``model.parameters()`` order, like :func:`flat_params`). Buffers
          and frozen parameters are passed through unchanged.
        - loss_fn: batch criterion ``loss_fn(outputs, targets) -> scalar`` (mean or sum
          reduction); it is applied to each example alone, as a batch of one.
        - inputs: (N, ...) examples; targets: (N, ...) labels. Checked before any gradient
          (ValueError naming the argument): inputs finite and of a shape and dtype the model
          takes (one example's forward pass, once per model and kind of input), and for
          cross-entropy on ``(N, C)`` logits, class indices ``(N,)`` in ``0..C-1`` or
          probabilities ``(N, C)``.
        - chunk_size: number of examples vectorised at once (``None``: all N). Peak extra
          memory is about chunk_size × (P + activations of one example).
        - max_memory_fraction: refuse (MemoryError, before any gradient) a G larger than
          this fraction of the memory free on the parameters' device
          (:func:`available_memory_bytes`; default :data:`DEFAULT_MEMORY_FRACTION` = 0.5).
          The message names the size, the limit and how many examples fit per piece;
          ``None`` skips the check.

    Returns:

        - G: (N, P) on the parameters' device, in the parameters' (promoted) dtype.
        - Layers in train mode with randomness (dropout) draw independently per example.

    Behaviour:

        - BatchNorm in train mode (or without running statistics) couples the examples of
          a batch, so a per-example gradient is not defined: the call is refused with a
          ValueError naming the layer (nothing is computed with batch statistics). In eval
          mode BatchNorm is a fixed affine map of each example (running statistics) and G
          is exact. GroupNorm, LayerNorm and models without normalisation work in either
          mode.
        - dtypes: float64 and float32 parameters give G in that dtype. bfloat16 (or
          float16) parameters work too and give G in that dtype, accurate to about two
          significant digits (6 % relative error on a small residual network, from the
          rounded parameters and arithmetic): reduce it in float64 (``G.double()``).
          Inputs must have the parameters' floating dtype (ValueError otherwise); under
          ``torch.autocast`` the forward runs in low precision and G keeps the parameters'
          dtype.
        - devices: G is computed and stored on the parameters' device (CUDA included);
          inputs and targets must be there too.

    Cost: one vectorised forward and backward per chunk, about N single-example gradients
    of work; G takes N × P × itemsize bytes (:func:`grads_nbytes`): 715 MB for a
    torchvision ResNet-18 (P = 11,181,642) at N = 16 in float32.

    Example (float64, a model of 3 × 2 weights and 2 biases, 4 examples):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> model = nn.Linear(3, 2).double()
    >>> x = torch.arange(12, dtype=torch.float64).reshape(4, 3) / 10
    >>> y = torch.tensor([0, 1, 1, 0])
    >>> G = per_example_grads(model, F.cross_entropy, x, y)
    >>> G.shape
    torch.Size([4, 8])
    >>> torch.allclose(G.mean(0), full_gradient(model, F.cross_entropy, x, y))
    True
    """
    n, chunk, named, frozen = _prepare(model, loss_fn, inputs, targets, chunk_size)
    params = {name: p.detach() for name, p in named}
    dtype = _result_dtype([p for _, p in named])
    device = named[0][1].device
    _check_memory(n, sum(p.numel() for _, p in named), dtype, device, max_memory_fraction)
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
    n, chunk, named, frozen = _prepare(model, loss_fn, inputs, targets, chunk_size)
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


def per_example_grad_products(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    V: Tensor,
) -> Tensor:
    """G V: (N, k) with G: (N, P) the per-example gradients and V: (P, k), without forming G.

    With a dummy weight vector w ∈ R^N, h(w) = ∇_θ Σ_i w_i ℓ_i = Gᵀw is linear in w, so
    ∂⟨h(w), v⟩/∂w_i = g_iᵀv: one backward with ``create_graph`` and one batched backward over
    the k columns (the double-vjp trick). Cost about two gradients plus k backward passes."""
    _check_data(inputs, targets)
    check_independent_examples(model)
    params = trainable_parameters(model)
    _check_inputs(model, loss_fn, inputs, targets)
    if not isinstance(V, Tensor) or V.ndim != 2 or V.shape[0] != sum(p.numel() for p in params):
        raise ValueError(f"V must be a (P, k) tensor with P = {num_params(model)}, got "
                         f"{tuple(V.shape) if isinstance(V, Tensor) else type(V).__name__}")
    with torch.enable_grad():
        losses = per_example_losses(loss_fn, model(inputs), targets)
        w = torch.zeros_like(losses, requires_grad=True)
        h = torch.autograd.grad(losses, params, grad_outputs=w, create_graph=True,
                                allow_unused=True)
        used = [i for i, g in enumerate(h) if g is not None]
        if not used:
            return losses.new_zeros((inputs.shape[0], V.shape[1])).detach()
        pieces = split_like(V.T.to(params[0].dtype), params)
        out = batched_vjp([h[i] for i in used], [w], [pieces[i] for i in used])[0]
    if out is None:
        return losses.new_zeros((inputs.shape[0], V.shape[1])).detach()
    return out.detach().T
