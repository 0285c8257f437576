"""Curvature of the training loss: one family of matrix-free operators, dense references.

Notation (shapes in brackets). A model ``f(x; θ)`` with ``θ: (P,)`` the trainable
parameters flattened in ``model.parameters()`` order, outputs ``f_i = f(x_i): (C,)``
(any output shape is flattened to ``C`` entries), per-example losses
``ℓ_i = loss_fn(f_i, y_i)`` with gradients ``g_i = ∇ℓ_i`` (rows of ``G: (N, P)``), their
mean ``ḡ`` and the mean loss ``L(θ) = (1/N) Σ_i ℓ_i``. With ``J_i = ∂f_i/∂θ: (C, P)`` and
``H_i^out = ∂²ℓ_i/∂f_i²: (C, C)``:

- Hessian       ``H = ∇²L``
- GGN           ``G = (1/N) Σ_i J_iᵀ H_i^out J_i``
- empirical     ``F̂ = (1/N) Σ_i g_i g_iᵀ = (1/N) GᵀG``
  Fisher
- true Fisher   ``F = (1/N) Σ_i E_{y~p_i}[∇log p(y|x_i) ∇log p(y|x_i)ᵀ]
  (softmax)     = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i`` with ``p_i = softmax(f_i)``,
  because ``∇_f (−log p_y) = p − e_y`` and ``E_y[(p − e_y)(p − e_y)ᵀ] = diag p − p pᵀ``.
  For cross-entropy the output Hessian is the same matrix, so ``F = G`` exactly.
- centred       ``C = c · D``, ``D = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ = F̂ − ḡḡᵀ`` and ``c`` the
  covariance     Lemma-1 factor (:func:`sgdnoise.covariance.finite_population_factor`).

The operators form one family over :class:`CurvatureOperator`: each implements one
primitive, the batched product ``V: (P, k) ↦ A V``, and inherits ``matvec``, ``@``, a scipy
``LinearOperator`` view, ``to_dense``, ``diagonal``/``trace`` (cheap where a closed form
exists) and ``eigh`` (top-k by :func:`sgdnoise.spectral.lanczos`). Model-based operators
copy θ when built, linearise the model once per chunk of examples (one forward and one
backward with ``create_graph``), and answer the k columns of a block with batched backward
passes over that graph (``keep_graph=True`` keeps it between calls: the cheapest route when
many products are taken on one batch, as the noise sampler does). ``J`` and ``G`` are never
formed (unless ``EmpiricalFisherOperator(materialize=True)``).

``loss_fn(outputs, targets)`` is a batch criterion; "mean loss" means the average of the
per-example losses whatever its reduction: a ``reduction="sum"`` criterion is divided by
the batch size and a ``reduction="none"`` one is averaged. Dense ``(P, P)`` functions
(:func:`hessian`, :func:`ggn`, :func:`empirical_fisher`, :func:`true_fisher`,
:func:`kl_hessian`) are independent references for small ``P`` (tests, toy models). Models
with BatchNorm must use running statistics (``eval()``) or GroupNorm: otherwise a batch's
loss is not a sum of per-example losses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vmap

from sgdnoise.covariance import check_gradients, finite_population_factor
from sgdnoise.grads import (
    batched_vjp,
    check_independent_examples,
    flatten_like,
    per_example_grads,
    per_example_losses,
    split_like,
    trainable_named_parameters,
    trainable_parameters,
)
from sgdnoise.models import batchnorm_layers
from sgdnoise.spectral import (
    LanczosResult,
    hutchinson_trace,
    lanczos,
    spectral_density,
    standard_normal,
)
from sgdnoise.validate import check_choice, check_matrix, check_positive_int, check_vector

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "CovarianceOperator",
    "CurvatureOperator",
    "EmpiricalFisherOperator",
    "FisherRaoIdentity",
    "GGNOperator",
    "HessianOperator",
    "TrueFisherOperator",
    "empirical_fisher",
    "fisher_rao_identity",
    "fisher_rao_norm",
    "ggn",
    "hessian",
    "hutchinson_trace",
    "hvp",
    "kl_hessian",
    "lanczos",
    "spectral_density",
    "sharpness",
    "true_fisher",
]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _mean_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of the per-example losses over the batch (see module docstring)."""
    val = loss_fn(outputs, targets)
    if val.ndim > 0:
        return val.mean()
    if getattr(loss_fn, "reduction", "mean") == "sum":
        return val / outputs.shape[0]
    return val


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is None:
        return [slice(0, n)]
    chunk_size = check_positive_int("chunk_size", chunk_size)
    return [slice(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


def _check_data(inputs: torch.Tensor, targets: torch.Tensor | None) -> int:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch tensor (N, ...), got {inputs!r:.80}")
    n = inputs.shape[0]
    if targets is not None and (not isinstance(targets, torch.Tensor) or targets.shape[0] != n):
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets)
        raise ValueError(f"targets must be a tensor with N = {n} rows, got {shape}")
    return n


def _softmax_probs(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2:
        raise ValueError(
            "the true Fisher needs class logits of shape (N, C) from the model, got "
            f"{tuple(logits.shape)}"
        )
    return torch.softmax(logits, dim=1)


def _sample_labels(probs: torch.Tensor, mc_samples: int, seed: int) -> torch.Tensor:
    """``(N, S)`` labels drawn from the model's predictive distributions, seeded."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    p = probs.detach().to(device="cpu", dtype=torch.float64)
    return torch.multinomial(p, mc_samples, replacement=True, generator=gen).to(probs.device)


def _softmax_output_matvec(
    probs: torch.Tensor, u: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    """Per-example ``M_i u_i`` for the Fisher's output-space matrix; ``probs: (n, C)``,
    ``u: (..., n, C)`` (leading dimensions broadcast).

    Exact (``labels`` None): ``M_i = diag p_i − p_i p_iᵀ``. Monte Carlo (``labels: (n, S)``):
    ``M_i = (1/S) Σ_s r_is r_isᵀ`` with ``r_is = p_i − e_{y_is}``."""
    if labels is None:
        return probs * u - probs * (probs * u).sum(dim=-1, keepdim=True)
    r = probs[:, None, :] - F.one_hot(labels, probs.shape[1]).to(probs.dtype)  # (n, S, C)
    a = torch.einsum("nsc,...nc->...ns", r, u)
    return torch.einsum("...ns,nsc->...nc", a, r) / labels.shape[1]


def _softmax_output_matrix(probs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``(n, C, C)`` matrices ``M_i`` (see :func:`_softmax_output_matvec`)."""
    if labels is None:
        return torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    r = probs[:, None, :] - F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return torch.einsum("nsa,nsb->nab", r, r) / labels.shape[1]


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor
           ) -> torch.Tensor:
    """Standard normal draws from ``generator`` (on its device), in ``like``'s dtype and
    on its device (:func:`sgdnoise.spectral.standard_normal`)."""
    return standard_normal(shape, generator, dtype=like.dtype, device=like.device)


def _softmax_root(probs: torch.Tensor) -> torch.Tensor:
    """``S_i = diag √p_i − p_i √p_iᵀ: (n, C, C)`` with ``S_i S_iᵀ = diag p_i − p_i p_iᵀ``
    (because ``Σ_c p_ic = 1``)."""
    sq = probs.sqrt()
    return torch.diag_embed(sq) - probs[:, :, None] * sq[:, None, :]


def _output_hessian_root(loss_fn: LossFn, out: torch.Tensor, targets: torch.Tensor
                         ) -> torch.Tensor:
    """``S_i: (n, C, C)`` with ``S_i S_iᵀ = (H_i^out)₊``, the output Hessian of each
    example's loss with negative eigenvalues clipped (none for convex losses such as
    cross-entropy and squared error). Cross-entropy on logits: :func:`_softmax_root`."""
    flat = out.reshape(out.shape[0], -1)
    if out.ndim == 2 and (loss_fn is F.cross_entropy or isinstance(
            loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None):
        return _softmax_root(torch.softmax(flat, dim=1))
    shape = out.shape[1:]

    def ell(o, y):
        return _mean_loss(loss_fn, o.reshape(shape)[None], y[None])

    hess = vmap(torch.func.hessian(ell))(flat, targets)  # (n, C, C)
    lam, U = torch.linalg.eigh(0.5 * (hess + hess.transpose(1, 2)))
    return U * lam.clamp_min(0).sqrt()[:, None, :]


class _Model:
    """A model seen as a function of its trainable parameters (live, or a snapshot)."""

    def __init__(self, model: nn.Module, *, snapshot: bool) -> None:
        check_independent_examples(model)
        named = trainable_named_parameters(model)
        if not named:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.module = model
        self.names = [name for name, _ in named]
        self.params = [p.detach().clone() if snapshot else p.detach() for _, p in named]
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device

    def forward(self, tensors: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, dict(zip(self.names, tensors, strict=True)), (x,))

    def leaves(self) -> list[torch.Tensor]:
        """Fresh autograd leaves sharing the parameters' storage."""
        return [p.detach().requires_grad_(True) for p in self.params]

    def flat_theta(self) -> torch.Tensor:
        return flatten_like(self.params, self.params)

    def loss_of_flat(self, loss_fn: LossFn):
        def fn(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _mean_loss(loss_fn, self.forward(split_like(theta, self.params), x), y)

        return fn

    def outputs_of_flat(self):
        def fn(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = self.forward(split_like(theta, self.params), x)
            return out.reshape(out.shape[0], -1)

        return fn


def _grad_or_none(out: torch.Tensor, inputs: list[torch.Tensor], **kw) -> list:
    """``∂out/∂inputs`` (None where ``out`` does not depend on an input)."""
    if not out.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(out, inputs, allow_unused=True, **kw))


def _vjp(outputs: list, inputs: list, cotangents: list) -> list:
    """:func:`sgdnoise.grads.batched_vjp` (graph retained; per input a ``(k, *shape)``
    tensor or None), with a single column taken by a plain backward pass: the batching
    machinery of ``is_grads_batched`` costs about a third of a Hessian-vector product on
    the CPU (``benchmarks/bench_noise.py`` model: 1.9 ms against 1.4 ms). Blocks stay
    batched: a loop over the columns is faster for a few columns of a large model on the
    CPU (8 Hessian columns there: 20 ms against 30 ms) but several times slower for many
    columns of a small one (``to_dense``, ``sample`` with many draws)."""
    if cotangents[0].shape[0] > 1:
        return batched_vjp(outputs, inputs, cotangents)
    grads = torch.autograd.grad(outputs, inputs, grad_outputs=[c[0] for c in cotangents],
                                retain_graph=True, allow_unused=True)
    return [None if g is None else g.unsqueeze(0) for g in grads]


def _vjp_or_none(outputs: list, inputs: list, cotangents: list) -> list:
    """:func:`_vjp` restricted to the outputs that carry a graph."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True)
             if o is not None and o.requires_grad]
    if not pairs:
        return [None] * len(inputs)
    return _vjp([o for o, _ in pairs], inputs, [c for _, c in pairs])


# ----------------------------------------------------------------------------------------
# functions
# ----------------------------------------------------------------------------------------


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    v: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Hessian of the mean loss times a vector: ``H v: (P,)`` for ``v: (P,)``.

    One product of :class:`HessianOperator` (double backward, about two gradients' cost) at
    the model's current parameters; ``chunk_size`` bounds memory by summing chunk products
    weighted by ``n_chunk / N``."""
    return HessianOperator(model, loss_fn, inputs, targets, chunk_size=chunk_size).matvec(v)


def hessian(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense Hessian ``H = ∇²L: (P, P)`` of the mean loss (small ``P`` only).

    Forward-over-reverse (``torch.func.hessian``) on the flattened parameters."""
    n = _check_data(inputs, targets)
    fm = _Model(model, snapshot=False)
    fn = torch.func.hessian(fm.loss_of_flat(loss_fn))
    theta = fm.flat_theta()
    H = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        H += fn(theta, inputs[sl], targets[sl]).detach() * ((sl.stop - sl.start) / n)
    return 0.5 * (H + H.T)


#: the objectives :func:`sharpness` measures for a network with BatchNorm
SHARPNESS_BN_MODES = ("eval", "train")


def sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_iters: int = 20,
    chunk_size: int | None = None,
    seed: int = 0,
    bn_mode: str = "eval",
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
) -> float:
    """``λ_max`` of the Hessian of the mean cross-entropy ``L(θ) = (1/n) Σ_i ℓ_i(θ)`` over
    ``x: (n, ...)`` (network inputs), ``y: (n,)``, with respect to the trainable parameters
    ``θ: (P,)``, by ``num_iters`` Lanczos steps (:func:`sgdnoise.spectral.lanczos`, stopping
    early at relative residual ``tol``, in ``dtype``: default the parameters') on
    Hessian-vector products. The one sharpness estimate of the package (the training
    engine's, chapter 9's).

    ``bn_mode="eval"``: the model in eval mode (BatchNorm uses its running statistics), the
    products by :class:`HessianOperator` in chunks of ``chunk_size``. ``bn_mode="train"``:
    the training-mode objective on fixed groups, ``L(θ) = (1/n) Σ_c Σ_{i∈c} ℓ_i(θ; c)``,
    where each chunk ``c`` of ``chunk_size`` consecutive examples (all ``n`` when None) is
    one forward pass in train mode, so BatchNorm normalises with the chunk's own statistics
    (a ghost layer with those of its groups); the products by double backward
    (Pearlmutter) per chunk, and every BatchNorm layer's running statistics are restored
    afterwards. The model's mode is restored in both cases."""
    num_iters = check_positive_int("num_iters", num_iters)
    check_choice("bn_mode", bn_mode, SHARPNESS_BN_MODES)
    was_training = model.training
    saved = [(m, {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None})
             for m in batchnorm_layers(model)]
    try:
        params = trainable_parameters(model)
        dim = sum(p.numel() for p in params)
        model.train(bn_mode == "train")
        if bn_mode == "eval":
            op = HessianOperator(model, nn.CrossEntropyLoss(), x, y, chunk_size=chunk_size)
            matvec = op.matvec
        else:
            matvec = _train_mode_hvp(model, params, x, y, chunk_size or x.shape[0])
        work = dtype or params[0].dtype
        res = lanczos(lambda v: matvec(v.to(params[0].dtype)).to(work), dim, 1,
                      num_iters=min(num_iters, dim), tol=tol, seed=seed, dtype=work,
                      device=params[0].device)
        return float(res.eigenvalues[0])
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        model.train(was_training)


def _train_mode_hvp(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, chunk: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v: (P,) ↦ H v: (P,)`` of the train-mode objective of :func:`sharpness`: per chunk,
    ``g_c = ∇ (1/n) Σ_{i∈c} ℓ_i`` with its graph, then ``∂⟨g_c, v⟩/∂θ``."""
    n = x.shape[0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        pieces = split_like(v, params)
        out = torch.zeros_like(v)
        for lo in range(0, n, chunk):
            with torch.enable_grad():
                logits = model(x[lo:lo + chunk])
                logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                loss = F.cross_entropy(logits, y[lo:lo + chunk], reduction="sum") / n
                grads = torch.autograd.grad(loss, params, create_graph=True,
                                            allow_unused=True)
                dot = sum((g * u).sum() for g, u in zip(grads, pieces, strict=True)
                          if g is not None)
                hv = torch.autograd.grad(dot, params, allow_unused=True)
            out += flatten_like(hv, params).detach()
        return out

    return matvec


def _jacobian_chunk(fm: _Model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs (n, C), J (n, C, P))`` for a chunk, by reverse mode."""
    theta = fm.flat_theta()
    out = fm.outputs_of_flat()(theta, x).detach()
    J = torch.func.jacrev(fm.outputs_of_flat())(theta, x).detach()
    return out, J


def ggn(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense generalised Gauss-Newton ``G = (1/N) Σ_i J_iᵀ H_i^out J_i: (P, P)``.

    ``J_i: (C, P)`` by reverse-mode Jacobians, ``H_i^out = ∂²ℓ_i/∂f_i²: (C, C)`` by
    autograd on each example's loss (small ``P`` only)."""
    n = _check_data(inputs, targets)
    fm = _Model(model, snapshot=False)
    G = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        out, J = _jacobian_chunk(fm, inputs[sl])
        raw = fm.forward(fm.params, inputs[sl]).detach()
        shape = raw.shape[1:]

        def ell(o, y, shape=shape):
            return _mean_loss(loss_fn, o.reshape(shape)[None], y[None])

        Hout = vmap(torch.func.hessian(ell))(out, targets[sl])  # (n, C, C)
        G += torch.einsum("nap,nab,nbq->pq", J, Hout, J) / n
    return 0.5 * (G + G.T)


def empirical_fisher(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense empirical Fisher ``F̂ = (1/N) Σ_i g_i g_iᵀ = GᵀG/N: (P, P)`` with the
    per-example gradients ``G: (N, P)`` of :func:`sgdnoise.grads.per_example_grads`."""
    n = _check_data(inputs, targets)
    fm = _Model(model, snapshot=False)
    Fh = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        Gc = per_example_grads(model, loss_fn, inputs[sl], targets[sl]).to(fm.dtype)
        Fh += Gc.T @ Gc / n
    return Fh


def true_fisher(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    mc_samples: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense true Fisher of a softmax classifier (``model`` returns logits ``(N, C)``).

    Exact (``mc_samples`` None): ``F = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i``.
    Monte Carlo: labels ``y_is ~ p_i`` (``S = mc_samples`` per example, seeded),
    ``F_S = (1/(N S)) Σ_{i,s} ∇log p(y_is|x_i) ∇log p(y_is|x_i)ᵀ``, unbiased for ``F``;
    the same seed gives the same matrix as :class:`TrueFisherOperator`."""
    n = _check_data(inputs, None)
    fm = _Model(model, snapshot=False)
    with torch.no_grad():
        probs_all = _softmax_probs(fm.forward(fm.params, inputs))  # also checks (N, C) logits
    labels = None
    if mc_samples is not None:
        mc_samples = check_positive_int("mc_samples", mc_samples)
        labels = _sample_labels(probs_all, mc_samples, seed)
    Fm = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        out, J = _jacobian_chunk(fm, inputs[sl])
        probs = _softmax_probs(out)
        M = _softmax_output_matrix(probs, None if labels is None else labels[sl])
        Fm += torch.einsum("nap,nab,nbq->pq", J, M, J) / n
    return 0.5 * (Fm + Fm.T)


def kl_hessian(
    model: nn.Module, inputs: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """Hessian in ``θ'`` at ``θ' = θ`` of the mean KL divergence ``(1/N) Σ_i
    KL(p_θ(·|x_i) ‖ p_θ'(·|x_i))`` for a softmax classifier: ``(P, P)``.

    The KL is minimal (zero) at ``θ' = θ`` and its Hessian there is the true Fisher ``F``
    (the gradient of ``Σ_y p_y log p'_y`` vanishes at ``p' = p`` because ``Σ_y ∇p_y = 0``).
    Computed by dense autograd on the KL itself, as an independent check of
    :func:`true_fisher`."""
    n = _check_data(inputs, None)
    fm = _Model(model, snapshot=False)
    theta = fm.flat_theta()

    def kl(theta_prime, x, logp):
        logq = torch.log_softmax(fm.outputs_of_flat()(theta_prime, x), dim=1)
        return (logp.exp() * (logp - logq)).sum(dim=1).mean()

    fn = torch.func.hessian(kl)
    H = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        with torch.no_grad():
            logp = torch.log_softmax(fm.outputs_of_flat()(theta, inputs[sl]), dim=1)
        H += fn(theta, inputs[sl], logp).detach() * ((sl.stop - sl.start) / n)
    return 0.5 * (H + H.T)


# ----------------------------------------------------------------------------------------
# the operator family
# ----------------------------------------------------------------------------------------


class CurvatureOperator:
    """A symmetric ``(P, P)`` matrix ``A`` available through products: the shared base.

    A subclass implements one primitive, ``_matmat(V: (P, k)) -> A V: (P, k)`` (V already
    checked and cast to the operator's dtype/device), and may override ``diagonal`` /
    ``trace`` / ``to_dense`` with cheaper exact routes. Everything else is derived:

    - ``matmat(V)``: ``A V`` for ``V: (P, k)``, columns ``block_size`` at a time;
      ``matvec(v)``: ``A v`` for ``v: (P,)`` (one column of ``matmat``); ``A @ x`` and
      ``A(x)`` dispatch on ``x.ndim``. ``num_matvecs`` counts the columns multiplied.
    - ``to_dense()``: ``A`` from ``P`` products, symmetrised; ``diagonal()``: ``diag A``
      ``(P,)``; ``trace()``: ``tr A`` (by default from the same ``P`` products).
    - ``to_scipy()``: a ``scipy.sparse.linalg.LinearOperator``.
    - ``eigh(k, **lanczos_kwargs)``: top-``k`` eigenpairs by :func:`sgdnoise.spectral.lanczos`
      (a :class:`sgdnoise.spectral.LanczosResult`, unpacks as ``evals, evecs``).

    Operators with a cheap exact factor ``A = BBᵀ`` (GGN, true Fisher, covariance) also
    have ``sample(num_draws, generator=...)``: Gaussian draws ``B w`` of covariance ``A``.

    Cost, counted in products (columns of ``V``; ``num_matvecs`` keeps the tally):
    ``matvec`` is one product, ``matmat(V: (P, k))`` k, ``to_dense``, ``diagonal`` and
    ``trace`` P unless a subclass has a closed form, and ``eigh(k)`` what Lanczos needs
    (the result's ``num_matvecs``): it stops when the k residuals meet ``tol`` (default
    1e-8 relative) or after ``num_iters`` products (default ``min(P, max(10k, 100))``;
    pass a smaller ``num_iters`` to cap the cost, and read ``converged``). Lanczos keeps
    its whole basis for reorthogonalisation: m products hold an m × P basis, m × P ×
    itemsize bytes (87 vectors of a ResNet-18, P = 11.2 M, in float32: 3.9 GB). eigh
    runs in the operator's dtype; for a bfloat16 model pass ``dtype=torch.float32``
    (Lanczos' small eigenproblem has no bfloat16 kernel).
    """

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self._dim = int(dim)
        self._dtype = dtype
        self._device = torch.device(device)
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self._dim, self._dim)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V: (P, k)`` for a checked ``V: (P, k)``: the one primitive of a subclass."""
        raise NotImplementedError  # pragma: no cover

    def matmat(self, V: torch.Tensor, *, block_size: int | None = 16) -> torch.Tensor:
        """``A V: (P, k)`` for ``V: (P, k)`` (cast to the operator's dtype and device), in
        blocks of ``block_size`` columns (``None``: all at once). Counts ``k`` matvecs."""
        check_matrix("V", V)
        if V.shape[0] != self._dim:
            raise ValueError(f"V must have {self._dim} rows, got shape {tuple(V.shape)}")
        k = V.shape[1]
        block = k if block_size is None else check_positive_int("block_size", block_size)
        V = V.to(dtype=self.dtype, device=self.device)
        if k <= block:
            out = self._matmat(V)
        else:
            out = torch.cat([self._matmat(V[:, a : a + block]) for a in range(0, k, block)],
                            dim=1)
        self.num_matvecs += k
        return out.detach()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v: (P,)`` for ``v: (P,)``."""
        check_vector("v", v, self._dim)
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.matvec(x) if x.ndim == 1 else self.matmat(x)

    __call__ = __matmul__

    def to_dense(self) -> torch.Tensor:
        """``A: (P, P)`` from ``P`` products, symmetrised (small ``P`` only)."""
        A = self.matmat(torch.eye(self._dim, dtype=self.dtype, device=self.device))
        return 0.5 * (A + A.T)

    def diagonal(self) -> torch.Tensor:
        """``diag A: (P,)``; here from ``P`` products (subclasses with a closed form are
        cheaper)."""
        return torch.diagonal(self.to_dense()).clone()

    def trace(self) -> float:
        """``tr A`` (exact; see :meth:`diagonal` for the cost, or use
        :func:`sgdnoise.spectral.hutchinson_trace` on ``matvec`` for an estimate)."""
        return float(self.diagonal().sum())

    def to_scipy(self):
        """A symmetric ``scipy.sparse.linalg.LinearOperator`` in the operator's dtype."""
        from scipy.sparse.linalg import LinearOperator

        p = self._dim
        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mv(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(x).reshape(p)).to(self.dtype)
            return self.matvec(t).cpu().numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(X)).to(self.dtype)
            return self.matmat(t.reshape(p, -1)).cpu().numpy()

        return LinearOperator((p, p), matvec=mv, rmatvec=mv, matmat=mm, rmatmat=mm,
                              dtype=np_dtype)

    def eigh(self, k: int, **lanczos_kwargs) -> LanczosResult:
        """Top-``k`` eigenpairs by :func:`sgdnoise.spectral.lanczos` (its keyword arguments
        pass through; dtype/device default to the operator's)."""
        lanczos_kwargs.setdefault("dtype", self.dtype)
        lanczos_kwargs.setdefault("device", self.device)
        lanczos_kwargs.setdefault("matmat", lambda V: self.matmat(V, block_size=None))
        return lanczos(self.matvec, self._dim, k, **lanczos_kwargs)


class _ModelOperator(CurvatureOperator):
    """An operator defined by a model on a data set, chunk by chunk.

    θ is copied when the operator is built, so it stays one fixed matrix even if the model
    is trained further. Each chunk of examples is linearised once per ``matmat`` call
    (``_linearise``: a forward and a backward with ``create_graph``) and the block's columns
    are answered from that graph (``_chunk_product``: batched backward passes). With
    ``keep_graph=True`` the graphs are built on the first product and kept (memory: one
    graph per chunk), so later products cost only the batched backward passes."""

    def __init__(self, model: nn.Module, loss_fn: LossFn | None, inputs: torch.Tensor,
                 targets: torch.Tensor | None, chunk_size: int | None,
                 keep_graph: bool = False) -> None:
        self.num_examples = _check_data(inputs, targets)
        self._fm = _Model(model, snapshot=True)
        super().__init__(self._fm.dim, self._fm.dtype, self._fm.device)
        self.loss_fn = loss_fn
        self.inputs = inputs
        self.targets = targets
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
        self.chunk_size = chunk_size
        self._slices = _chunks(self.num_examples, chunk_size)
        self.keep_graph = bool(keep_graph)
        self._states: list | None = None

    def _linearise(self, sl: slice):
        """The autograd state of one chunk that ``_chunk_product`` differentiates."""
        raise NotImplementedError  # pragma: no cover

    def _chunk_product(self, state, pieces: list[torch.Tensor]) -> list:
        """Per-parameter ``(k, *shape)`` products (or None for zero) of the chunk."""
        raise NotImplementedError  # pragma: no cover

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        k = V.shape[1]
        params = self._fm.params
        pieces = split_like(V.T.contiguous(), params)  # (k, *shape) each
        out = None
        with torch.enable_grad():
            if self.keep_graph and self._states is None:
                self._states = [self._linearise(sl) for sl in self._slices]
            for i, sl in enumerate(self._slices):
                state = self._states[i] if self._states is not None else self._linearise(sl)
                part = flatten_like(self._chunk_product(state, pieces), params, (k,)).detach()
                out = part if out is None else out.add_(part)  # part is a fresh tensor
        return out.T


class HessianOperator(_ModelOperator):
    """``V ↦ H V`` for the Hessian of the mean loss: per chunk ``c`` one forward and one
    backward with ``create_graph`` give ``(n_c/N) ∇L_c``; each column is then one double
    backward ``∂⟨∇L_c, v⟩/∂θ`` (Pearlmutter), batched over the block's columns.

    Cost of ``matmat(V: (P, k))``: per chunk one forward and one backward with
    ``create_graph`` (skipped with ``keep_graph=True`` after the first call, which then
    holds one graph per chunk) and one batched double backward over the k columns, about
    2 + 2k backward passes of work over the N examples; memory of the graph of one chunk
    plus k × P for the block. Needs layers with second derivatives (PyTorch implements
    none for a few, e.g. ``hardsigmoid``; the product then fails naming the operation).

    Least squares ``L = (1/N) Σ (x_iᵀθ)²`` has ``H = (2/N) XᵀX`` (here ``diag(0.5, 2)``):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> model = nn.Linear(2, 1, bias=False).double()
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]],
    ...                  dtype=torch.float64)
    >>> H = HessianOperator(model, F.mse_loss, X, torch.zeros(4, 1, dtype=torch.float64))
    >>> res = H.eigh(1)
    >>> res.eigenvalues, res.num_matvecs, res.converged
    (tensor([2.], dtype=torch.float64), 2, True)
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                 targets: torch.Tensor, *, chunk_size: int | None = None,
                 keep_graph: bool = False) -> None:
        super().__init__(model, loss_fn, inputs, targets, chunk_size, keep_graph)

    def _linearise(self, sl):
        leaves = self._fm.leaves()
        x, y = self.inputs[sl], self.targets[sl]
        weight = x.shape[0] / self.num_examples
        loss = _mean_loss(self.loss_fn, self._fm.forward(leaves, x), y) * weight
        return leaves, _grad_or_none(loss, leaves, create_graph=True)

    def _chunk_product(self, state, pieces):
        leaves, grads = state
        return _vjp_or_none(grads, leaves, pieces)


class _GaussNewtonOperator(_ModelOperator):
    """``V ↦ (1/N) Σ_i J_iᵀ M_i J_i V``. Per chunk: the outputs ``f`` with their graph and
    ``Jᵀu`` (linear in a dummy ``u``, built with ``create_graph``); per block, ``J V`` by
    differentiating ``⟨Jᵀu, v⟩`` in ``u`` (double-vjp), ``M (J V)`` by ``_output_product``,
    and ``Jᵀ(·)`` by one batched backward through ``f``."""

    def _linearise(self, sl):
        leaves = self._fm.leaves()
        out = self._fm.forward(leaves, self.inputs[sl])
        u = torch.zeros_like(out, requires_grad=True)
        jtu = _grad_or_none(out, leaves, grad_outputs=u, create_graph=True)
        return leaves, out, u, jtu, self._output_state(sl, out)

    def _output_state(self, sl: slice, out: torch.Tensor):
        raise NotImplementedError  # pragma: no cover

    def _output_product(self, ostate, ju: torch.Tensor) -> torch.Tensor:
        """``(1/N) M_i (J_i v)`` for a stack ``ju: (k, *out.shape)``."""
        raise NotImplementedError  # pragma: no cover

    def _output_root(self, sl: slice, out: torch.Tensor) -> torch.Tensor:
        """``S_i: (n, C, R)`` with ``S_i S_iᵀ = M_i`` for the chunk's examples."""
        raise NotImplementedError  # pragma: no cover

    def sample(self, num_draws: int, *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """``(num_draws, P)`` Gaussian draws with covariance exactly ``A``, no Lanczos.

        ``A = (1/N) Σ_i J_iᵀ S_i S_iᵀ J_i = BBᵀ`` with ``B = [J_iᵀ S_i]_i / √N``, so
        ``ξ = B w = (1/√N) Σ_i J_iᵀ S_i w_i`` with ``w_i ~ N(0, I_R)`` has ``E ξξᵀ = A``: one
        forward and one batched backward per chunk (about a gradient's cost), exact for any
        number of draws. ``generator`` seeds ``w`` (drawn on its device)."""
        s = check_positive_int("num_draws", num_draws)
        params = self._fm.params
        total = params[0].new_zeros((s, self._dim))
        for sl in self._slices:
            with torch.enable_grad():
                leaves = self._fm.leaves()
                out = self._fm.forward(leaves, self.inputs[sl])
                root = self._output_root(sl, out.detach()).to(out.dtype)  # (n, C, R)
                w = _randn((s, root.shape[0], root.shape[2]), generator, root)
                cot = torch.einsum("ncr,snr->snc", root, w) / self.num_examples**0.5
                res = _vjp([out], leaves, [cot.reshape(s, *out.shape)])
            total += flatten_like(res, params, (s,)).detach()
        return total

    def _chunk_product(self, state, pieces):
        leaves, out, u, jtu, ostate = state
        k = pieces[0].shape[0]
        (jv,) = _vjp_or_none(jtu, [u], pieces)
        if jv is None:
            return [None] * len(leaves)
        w = self._output_product(ostate, jv.reshape(k, *out.shape))
        return _vjp([out], leaves, [w.to(out.dtype)])


class GGNOperator(_GaussNewtonOperator):
    """``V ↦ G V = (1/N) Σ_i J_iᵀ H_i^out J_i V``, the output Hessian product by a double
    backward on the outputs only; ``J`` is never formed.

    Cost of ``matmat(V: (P, k))``: per chunk one forward and one backward with
    ``create_graph`` (kept with ``keep_graph=True``), then for the k columns one batched
    backward for ``J V``, one through the outputs' loss and one for ``Jᵀ(·)``: about
    2 + 3k backward passes of work; only first derivatives of the network are needed."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                 targets: torch.Tensor, *, chunk_size: int | None = None,
                 keep_graph: bool = False) -> None:
        super().__init__(model, loss_fn, inputs, targets, chunk_size, keep_graph)

    def _output_state(self, sl, out):
        out_d = out.detach().requires_grad_(True)
        total = _mean_loss(self.loss_fn, out_d, self.targets[sl]) * (
            out.shape[0] / self.num_examples)  # (1/N) Σ_{i in chunk} ℓ_i
        return out_d, _grad_or_none(total, [out_d], create_graph=True)[0]

    def _output_root(self, sl, out):
        return _output_hessian_root(self.loss_fn, out, self.targets[sl])

    def _output_product(self, ostate, ju):
        out_d, grad_out = ostate
        if grad_out is None or not grad_out.requires_grad:
            return torch.zeros_like(ju)
        (hju,) = _vjp([grad_out], [out_d], [ju])
        return torch.zeros_like(ju) if hju is None else hju


class EmpiricalFisherOperator(_ModelOperator):
    """``V ↦ F̂ V = (1/N) Gᵀ (G V)`` with per-example gradients ``G: (N, P)``.

    Matrix-free by default: per chunk the per-example losses ``ℓ`` and ``Gᵀw`` (linear in a
    dummy ``w``, with ``create_graph``); ``G V`` by differentiating ``⟨Gᵀw, v⟩`` in ``w``,
    then ``Gᵀ(·)/N`` by one batched backward through ``ℓ``. ``materialize=True`` computes
    ``G`` once (:func:`sgdnoise.grads.per_example_grads`; fast when ``N·P`` fits) and then
    also gives ``diagonal``/``trace`` in O(NP).

    Cost of ``matmat(V: (P, k))``: matrix-free, per chunk one forward and one backward
    with ``create_graph``, then two batched backward passes over the k columns (about
    2 + 2k backward passes of work, memory of one chunk's graph); materialised, two
    ``(N, P) × (P, k)`` products after G, which takes N × P × itemsize bytes (refused
    above the memory guard of :func:`sgdnoise.grads.per_example_grads`)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                 targets: torch.Tensor, *, chunk_size: int | None = None,
                 materialize: bool = False, keep_graph: bool = False) -> None:
        super().__init__(model, loss_fn, inputs, targets, chunk_size, keep_graph)
        self._G = None
        if materialize:
            self._G = per_example_grads(model, loss_fn, inputs, targets,
                                        chunk_size=chunk_size).to(self.dtype)

    def _linearise(self, sl):
        leaves = self._fm.leaves()
        out = self._fm.forward(leaves, self.inputs[sl])
        losses = per_example_losses(self.loss_fn, out, self.targets[sl])
        w = torch.zeros_like(losses, requires_grad=True)
        return leaves, losses, w, _grad_or_none(losses, leaves, grad_outputs=w,
                                                create_graph=True)

    def _chunk_product(self, state, pieces):
        leaves, losses, w, gtw = state
        (gv,) = _vjp_or_none(gtw, [w], pieces)
        if gv is None:
            return [None] * len(leaves)
        return _vjp([losses], leaves, [gv / self.num_examples])

    def _matmat(self, V):
        if self._G is None:
            return super()._matmat(V)
        return self._G.T @ (self._G @ V) / self.num_examples

    def diagonal(self):
        if self._G is None:
            return super().diagonal()
        return (self._G * self._G).sum(dim=0) / self.num_examples


class TrueFisherOperator(_GaussNewtonOperator):
    """``V ↦ F V`` for the true Fisher of a softmax classifier (the model returns logits).

    Exact (``mc_samples`` None): ``F v = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i v``.
    Monte Carlo: labels ``y_is ~ p_i`` drawn once (seeded) when the operator is built,
    and ``F_S v = (1/(N S)) Σ_{i,s} J_iᵀ r_is (r_isᵀ J_i v)`` with ``r_is = p_i − e_{y_is}``
    (the logit gradient of ``−log p(y_is|x_i)``). ``loss_fn`` and ``targets`` are accepted
    for a uniform signature and ignored.

    Cost of ``matmat(V: (P, k))``: as :class:`GGNOperator` (about 2 + 3k backward passes
    of work over the N examples; Monte Carlo labels add no passes)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn | None, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None, *, mc_samples: int | None = None,
                 seed: int = 0, chunk_size: int | None = None,
                 keep_graph: bool = False) -> None:
        super().__init__(model, None, inputs, None, chunk_size, keep_graph)
        del loss_fn, targets
        with torch.no_grad():
            self.probs = torch.cat(
                [_softmax_probs(self._fm.forward(self._fm.params, inputs[sl]))
                 for sl in self._slices]
            )
        self.mc_samples = None
        self.labels = None
        if mc_samples is not None:
            self.mc_samples = check_positive_int("mc_samples", mc_samples)
            self.labels = _sample_labels(self.probs, self.mc_samples, seed)

    def _output_state(self, sl, out):
        return self.probs[sl], None if self.labels is None else self.labels[sl]

    def _output_root(self, sl, out):
        probs = self.probs[sl].to(out.dtype)
        if self.labels is None:
            return _softmax_root(probs)
        r = probs[:, None, :] - F.one_hot(self.labels[sl], probs.shape[1]).to(probs.dtype)
        return r.transpose(1, 2) / self.mc_samples**0.5  # (n, C, S): Σ_s r rᵀ / S

    def _output_product(self, ostate, ju):
        probs, labels = ostate
        return _softmax_output_matvec(probs.to(ju.dtype), ju, labels) / self.num_examples


class CovarianceOperator(CurvatureOperator):
    """Matrix-free ``C = c · D = (c/N) G̃ᵀG̃``: a ``(P, P)`` symmetric PSD operator.

    Args:

        - G: ``(N, P)`` per-example gradients (a centred copy ``G̃ = G − 1ḡᵀ`` is stored: O(NP)
          memory).
        - batch_size, replacement: choose the Lemma-1 factor ``c`` =
          :func:`sgdnoise.covariance.finite_population_factor` ``(N, B)``
          (``batch_size=1`` with replacement gives ``c = 1``, i.e. ``C = D``).

    Memory: the centred copy, N × P × itemsize bytes. Products cost O(NPk); ``trace``,
    ``diagonal`` O(NP); ``eigh(k)`` is exact through the
    ``N × N`` Gram matrix (see :meth:`eigh`); the rest is the shared base. Also ``mean``
    (``ḡ: (P,)``), ``factor`` (``c``) and ``gram()``.
    """

    def __init__(self, G: torch.Tensor, *, batch_size: int = 1, replacement: bool = True
                 ) -> None:
        check_gradients(G)
        self.num_examples = int(G.shape[0])
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.replacement = bool(replacement)
        self.factor = finite_population_factor(self.num_examples, self.batch_size,
                                               replacement=replacement)
        super().__init__(G.shape[1], G.dtype, G.device)
        self.mean = G.mean(dim=0)
        self._Gc = G - self.mean
        self._scale = self.factor / self.num_examples

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``C V = (c/N) G̃ᵀ(G̃ V)``."""
        return self._scale * (self._Gc.T @ (self._Gc @ V))

    def trace(self) -> float:
        """``tr C = (c/N) ‖G̃‖_F²``."""
        return float(self._scale * (self._Gc * self._Gc).sum())

    def diagonal(self) -> torch.Tensor:
        """``diag C: (P,)``, entries ``(c/N) Σ_i G̃_ij²``."""
        return self._scale * (self._Gc * self._Gc).sum(dim=0)

    def gram(self) -> torch.Tensor:
        """``K = (c/N) G̃G̃ᵀ: (N, N)``, whose non-zero eigenvalues are those of C."""
        return self._scale * (self._Gc @ self._Gc.T)

    def sample(self, num_draws: int, *, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """``(num_draws, P)`` Gaussian draws ``√(c/N) G̃ᵀw``, ``w ~ N(0, I_N)``: covariance
        exactly ``C``."""
        s = check_positive_int("num_draws", num_draws)
        w = _randn((s, self.num_examples), generator, self._Gc)
        return (w @ self._Gc) * self._scale**0.5

    def to_dense(self) -> torch.Tensor:
        """``C`` as a dense ``(P, P)`` tensor, ``(c/N) G̃ᵀG̃``."""
        return self._scale * (self._Gc.T @ self._Gc)

    def eigh(self, k: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k eigenpairs of C: (evals (k,) descending, evecs (P, k) orthonormal columns).

        Exact (no Krylov iteration): eigen-decomposes ``K₁ = (1/N) G̃G̃ᵀ = W Λ Wᵀ``
        (``N × N``, same non-zero spectrum as D) and maps ``u_j = G̃ᵀ w_j / √(N λ_j)``,
        refined by one Rayleigh-Ritz step (orthonormalise, eigh of the r × r projection) so
        the columns are orthonormal to rounding. Eigenvalues below a rounding threshold
        (10 · λ_max · max(N, √P) · eps: the eigen-solver's error on an N × N matrix, or the
        typical rounding of a P-term inner product in the Gram matrix, whichever is larger;
        P rather than √P would exceed λ_max itself in float32 once P > 840,000 and call every
        eigenvalue of a ResNet-sized G zero) count as zero; their eigenvectors cannot be mapped, so
        they are completed by an orthonormal basis of the null space of C (orthogonal to the
        mapped ones; a seeded Gaussian block, projected and orthonormalised by QR). Evals
        are scaled by c; with c = 0 (B = N without replacement) they are 0 and the vectors
        are those of D. Requires k <= min(N, P). (``CurvatureOperator.eigh`` — Lanczos —
        also works on this operator.)
        """
        n, p = self._Gc.shape
        k = check_positive_int("k", k)
        if k > min(n, p):
            raise ValueError(f"k must be <= min(N, P) = {min(n, p)}, got {k}")
        K1 = (self._Gc @ self._Gc.T) / n
        lam, W = torch.linalg.eigh(0.5 * (K1 + K1.T))
        lam, W = lam.flip(0)[:k], W.flip(1)[:, :k]
        eps = torch.finfo(self.dtype).eps
        top = float(lam[0]) if lam.numel() else 0.0
        keep = lam > max(top, 0.0) * max(n, p**0.5) * eps * 10
        r = int(keep.sum())
        lam = torch.where(keep, lam, torch.zeros_like(lam))
        U = torch.empty((p, k), dtype=self.dtype, device=self.device)
        if r:
            # map back, then one Rayleigh-Ritz step in span(Ur): restores orthogonality lost
            # for small λ (rounding in w_j is amplified by 1/√λ_j) at O(NPr) extra cost
            Q, _ = torch.linalg.qr(self._Gc.T @ W[:, :r] / torch.sqrt(n * lam[:r]))
            GQ = self._Gc @ Q
            T = GQ.T @ GQ / n
            theta, Y = torch.linalg.eigh(0.5 * (T + T.T))
            U[:, :r] = Q @ Y.flip(1)
            lam = torch.cat([theta.flip(0).clamp_min(0), lam[r:]])
        if r < k:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            Z = torch.randn((p, k - r), generator=gen, dtype=self.dtype).to(self.device)
            for _ in range(2 if r else 0):  # project off the mapped vectors, twice
                Z = Z - U[:, :r] @ (U[:, :r].T @ Z)
            Q, _ = torch.linalg.qr(Z)
            if r:
                Q, _ = torch.linalg.qr(Q - U[:, :r] @ (U[:, :r].T @ Q))
            U[:, r:] = Q
        return self.factor * lam, U

    def __repr__(self) -> str:
        return (
            f"CovarianceOperator(N={self.num_examples}, P={self.shape[0]}, "
            f"batch_size={self.batch_size}, replacement={self.replacement}, "
            f"factor={self.factor:.4g}, dtype={self.dtype})"
        )


# ----------------------------------------------------------------------------------------
# Fisher-Rao norm
# ----------------------------------------------------------------------------------------


def _directional_outputs(fm: _Model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, J θ)``: outputs (as the model shapes them) and their derivative along θ."""

    def fwd(*ps):
        return fm.forward(ps, x)

    out, u = jvp(fwd, tuple(fm.params), tuple(fm.params))
    return out.detach(), u.detach()


def fisher_rao_norm(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    loss_fn: LossFn | None = None,
    kind: str = "true",
    mc_samples: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> float:
    """Fisher-Rao norm squared ``‖θ‖²_fr = θᵀ F(θ) θ`` (Liang et al. 2019), θ all
    trainable parameters.

    ``kind="true"`` (softmax classifier, model Fisher): with ``u_i = J_i θ`` (one jvp along
    θ), ``θᵀFθ = (1/N) Σ_i u_iᵀ (diag p_i − p_i p_iᵀ) u_i`` (or the Monte Carlo version
    with ``mc_samples`` labels per example). ``kind="empirical"`` (needs ``loss_fn`` and
    ``targets``): ``θᵀF̂θ = (1/N) Σ_i (g_iᵀθ)²``, ``g_iᵀθ`` by one jvp of the per-example
    losses. No ``(P, P)`` matrix is formed."""
    kind = check_choice("kind", kind, ("true", "empirical"))
    n = _check_data(inputs, targets)
    fm = _Model(model, snapshot=False)
    total = 0.0
    if kind == "empirical":
        if loss_fn is None or targets is None:
            raise ValueError("kind='empirical' needs loss_fn and targets, got None")
        for sl in _chunks(n, chunk_size):
            x, y = inputs[sl], targets[sl]

            def losses(*ps, x=x, y=y):
                return per_example_losses(loss_fn, fm.forward(ps, x), y)

            _, d = jvp(losses, tuple(fm.params), tuple(fm.params))
            total += float((d.detach().double() ** 2).sum())
        return total / n
    labels = None
    if mc_samples is not None:
        mc_samples = check_positive_int("mc_samples", mc_samples)
        with torch.no_grad():
            labels = _sample_labels(
                _softmax_probs(fm.forward(fm.params, inputs)), mc_samples, seed
            )
    for sl in _chunks(n, chunk_size):
        out, u = _directional_outputs(fm, inputs[sl])
        probs = _softmax_probs(out)
        Mu = _softmax_output_matvec(probs, u, None if labels is None else labels[sl])
        total += float((u.double() * Mu.double()).sum())
    return total / n


@dataclass
class FisherRaoIdentity:
    """Both sides of ``θᵀFθ = (L+1)² E⟨∂ℓ/∂f, f⟩²`` for a bias-free ReLU network.

    ``lhs`` the Fisher-Rao norm (jvp along θ), ``rhs`` the output-only expression,
    ``degree = L + 1`` the homogeneity degree used, ``kind`` "true" or "empirical"."""

    lhs: float
    rhs: float
    degree: int
    kind: str

    @property
    def relative_error(self) -> float:
        return abs(self.lhs - self.rhs) / max(abs(self.lhs), abs(self.rhs), 1e-300)

    def __iter__(self) -> Iterator[float]:
        yield self.lhs
        yield self.rhs


_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _infer_degree(model: nn.Module) -> int:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]
    if not layers:
        raise ValueError("cannot infer num_hidden_layers: the model has no Linear/Conv layers")
    with_bias = [name for name, m in layers if m.bias is not None]
    if with_bias:
        raise ValueError(
            f"the identity needs a bias-free network, but layers {with_bias} have biases; "
            "build it with bias=False or pass num_hidden_layers to compute both sides anyway"
        )
    return len(layers)


def fisher_rao_identity(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    loss_fn: LossFn | None = None,
    kind: str = "true",
    num_hidden_layers: int | None = None,
    chunk_size: int | None = None,
) -> FisherRaoIdentity:
    """Both sides of the Fisher-Rao identity of Liang et al. (2019).

    For a bias-free ReLU network with ``L`` hidden layers, ``f(x; cθ) = c^{L+1} f(x; θ)``
    for ``c > 0`` (each of the ``L+1`` weight layers scales the output linearly and ReLU is
    positively homogeneous). Euler's theorem gives ``J_i θ = (L+1) f_i``, so for any loss
    of the outputs ``g_iᵀθ = ⟨∂ℓ_i/∂f_i, J_i θ⟩ = (L+1) ⟨∂ℓ_i/∂f_i, f_i⟩``, and

    ``θᵀF̂θ = (L+1)² (1/N) Σ_i ⟨∂ℓ_i/∂f_i, f_i⟩²``  (``kind="empirical"``, data labels);
    ``θᵀFθ = (L+1)² (1/N) Σ_i Σ_c p_ic ⟨p_i − e_c, f_i⟩²``  (``kind="true"``, softmax CE
    with labels from the model).

    ``lhs`` is :func:`fisher_rao_norm` (differentiates through the parameters); ``rhs``
    uses only outputs and output gradients. ``num_hidden_layers`` default: the number of
    Linear/Conv layers minus one (all must be bias-free)."""
    kind = check_choice("kind", kind, ("true", "empirical"))
    n = _check_data(inputs, targets)
    if num_hidden_layers is None:
        degree = _infer_degree(model)
    else:
        degree = check_positive_int("num_hidden_layers", num_hidden_layers,
                                    allow_zero=True) + 1
    lhs = fisher_rao_norm(
        model, inputs, targets, loss_fn=loss_fn, kind=kind, chunk_size=chunk_size
    )
    fm = _Model(model, snapshot=False)
    total = 0.0
    for sl in _chunks(n, chunk_size):
        with torch.no_grad():
            raw = fm.forward(fm.params, inputs[sl])
        out = raw.reshape(raw.shape[0], -1)
        if kind == "true":
            probs = _softmax_probs(raw)
            s = (probs * out).sum(dim=1, keepdim=True) - out  # ⟨p − e_c, f⟩: (n, C)
            total += float((probs.double() * s.double() ** 2).sum())
        else:
            with torch.enable_grad():
                o = raw.detach().requires_grad_(True)
                summed = per_example_losses(loss_fn, o, targets[sl]).sum()
                (dl,) = _grad_or_none(summed, [o])
            dl = torch.zeros_like(o) if dl is None else dl
            s = (dl * raw).reshape(raw.shape[0], -1).sum(dim=1)
            total += float((s.double() ** 2).sum())
    rhs = degree**2 * total / n
    return FisherRaoIdentity(lhs=lhs, rhs=rhs, degree=degree, kind=kind)

