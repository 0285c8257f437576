"""Curvature of the training loss: Hessian, generalised Gauss-Newton and Fisher matrices.

Notation (shapes in brackets). A model ``f(x; θ)`` with ``θ: (P,)`` the trainable
parameters flattened in ``model.parameters()`` order, outputs ``f_i = f(x_i): (C,)``
(any output shape is flattened to ``C`` entries), per-example losses
``ℓ_i = loss_fn(f_i, y_i)`` and the mean loss ``L(θ) = (1/N) Σ_i ℓ_i``. With
``J_i = ∂f_i/∂θ: (C, P)`` and ``H_i^out = ∂²ℓ_i/∂f_i²: (C, C)``:

- Hessian       ``H = ∇²L``
- GGN           ``G = (1/N) Σ_i J_iᵀ H_i^out J_i``
- empirical     ``F̂ = (1/N) Σ_i g_i g_iᵀ`` with ``g_i = ∇ℓ_i``
  Fisher
- true Fisher   ``F = (1/N) Σ_i E_{y~p_i}[∇log p(y|x_i) ∇log p(y|x_i)ᵀ]
  (softmax)     = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i`` with ``p_i = softmax(f_i)``,
  because ``∇_f (−log p_y) = p − e_y`` and ``E_y[(p − e_y)(p − e_y)ᵀ] = diag p − p pᵀ``.
  For cross-entropy the output Hessian is the same matrix, so ``F = G`` exactly.

``loss_fn(outputs, targets)`` is a batch criterion; "mean loss" means the average of the
per-example losses whatever its reduction: a ``reduction="sum"`` criterion is divided by
the batch size and a ``reduction="none"`` one is averaged. Products use the cheapest exact
route: Hessian-vector products by double backward (reverse-over-reverse); GGN and Fisher
products by one Jacobian-vector product, the output-space matrix, and one
vector-Jacobian product (``J`` is never formed). Dense ``(P, P)`` functions are for small
``P`` (tests, toy models). Models with BatchNorm must be in ``eval()`` mode (or use
GroupNorm): in training mode a batch's loss is not a sum of per-example losses and every
forward pass would change the running statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap

from sgdnoise._validate import check_choice, check_matrix, check_positive_int, check_vector
from sgdnoise.spectral import hutchinson_trace, lanczos, spectral_density

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
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
    "true_fisher",
]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            raise ValueError(
                f"model contains BatchNorm layer {name!r} in training mode; curvature is "
                "defined per example, so call model.eval() first (running statistics are "
                "then used) or build the model with GroupNorm (norm='group')"
            )


def _trainable(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    names, params = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            names.append(name)
            params.append(p)
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return names, params


def _split(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Cut ``flat: (P,)`` into views shaped like ``like``."""
    out, offset = [], 0
    for t in like:
        n = t.numel()
        out.append(flat[offset : offset + n].view_as(t))
        offset += n
    return out


def _flatten(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _mean_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of the per-example losses over the batch (see module docstring)."""
    val = loss_fn(outputs, targets)
    if val.ndim > 0:
        return val.mean()
    if getattr(loss_fn, "reduction", "mean") == "sum":
        return val / outputs.shape[0]
    return val


def _per_example_losses(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor):
    """``(n,)`` losses, each example scored alone as a batch of one."""
    return vmap(lambda o, y: _mean_loss(loss_fn, o[None], y[None]))(outputs, targets)


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
    """Per-example ``M_i u_i`` for the Fisher's output-space matrix.

    Exact (``labels`` None): ``M_i = diag p_i − p_i p_iᵀ``. Monte Carlo (``labels: (n, S)``):
    ``M_i = (1/S) Σ_s r_is r_isᵀ`` with ``r_is = p_i − e_{y_is}``."""
    if labels is None:
        return probs * u - probs * (probs * u).sum(dim=1, keepdim=True)
    r = probs[:, None, :] - F.one_hot(labels, probs.shape[1]).to(probs.dtype)  # (n, S, C)
    a = (r * u[:, None, :]).sum(dim=2, keepdim=True)  # (n, S, 1)
    return (a * r).mean(dim=1)


def _softmax_output_matrix(probs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``(n, C, C)`` matrices ``M_i`` (see :func:`_softmax_output_matvec`)."""
    if labels is None:
        return torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    r = probs[:, None, :] - F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    return torch.einsum("nsa,nsb->nab", r, r) / labels.shape[1]


class _Model:
    """A model seen as a function of named parameters (snapshot or live), with helpers."""

    def __init__(self, model: nn.Module, *, snapshot: bool) -> None:
        _check_model(model)
        self.module = model
        names, params = _trainable(model)
        self.names = names
        self.params = [p.detach().clone() if snapshot else p.detach() for p in params]
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device

    def as_dict(self, tensors) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, tensors, strict=True))

    def forward(self, tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.as_dict(tensors), (x,))

    def vector(self, name: str, v: torch.Tensor) -> list[torch.Tensor]:
        v = check_vector(name, v, self.dim)
        return _split(v.to(dtype=self.dtype, device=self.device), self.params)

    def flat_theta(self) -> torch.Tensor:
        return _flatten(self.params)

    def loss_of_flat(self, loss_fn: LossFn):
        def fn(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _mean_loss(loss_fn, self.forward(_split(theta, self.params), x), y)

        return fn

    def outputs_of_flat(self):
        def fn(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = self.forward(_split(theta, self.params), x)
            return out.reshape(out.shape[0], -1)

        return fn


def _grad_or_zeros(out: torch.Tensor, inputs: list[torch.Tensor], **kw) -> list[torch.Tensor]:
    if not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(out, inputs, allow_unused=True, **kw)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs, strict=True)]


# ----------------------------------------------------------------------------------------
# products (shared by the functions and the operators)
# ----------------------------------------------------------------------------------------


def _hvp(
    fm: _Model, loss_fn: LossFn, inputs, targets, vs, chunk_size, *, batched: bool = False
) -> list[torch.Tensor]:
    """Double backward: ``H v = ∇_θ ⟨∇_θ L, v⟩``, summed over chunks with weights n_c/N.

    ``batched``: every ``vs[j]`` has a leading dimension ``k``; the ``k`` products are
    done one after the other."""
    if batched:  # batched double backward (vmap) measured slower than a plain loop here
        cols = [_hvp(fm, loss_fn, inputs, targets, [v[j] for v in vs], chunk_size)
                for j in range(vs[0].shape[0])]
        return [torch.stack(c) for c in zip(*cols, strict=True)]
    n = inputs.shape[0]
    leaves = [p.detach().requires_grad_(True) for p in fm.params]
    acc = [torch.zeros_like(v) for v in vs]
    for sl in _chunks(n, chunk_size):
        x, y = inputs[sl], targets[sl]
        with torch.enable_grad():
            loss = _mean_loss(loss_fn, fm.forward(leaves, x), y) * (x.shape[0] / n)
            g = _grad_or_zeros(loss, leaves, create_graph=True)
            dot = sum((gi * vi).sum() for gi, vi in zip(g, vs, strict=True))
            hv = _grad_or_zeros(dot, leaves)
        for a, h in zip(acc, hv, strict=True):
            a.add_(h)
    return acc


def _gauss_newton_vp(
    fm: _Model, inputs, vs, chunk_size, output_matvec, *, batched: bool = False
) -> list[torch.Tensor]:
    """``(1/N) Σ_i J_iᵀ M_i J_i v``: jvp for ``u = J v``, then ``w = M u``, then vjp.

    ``output_matvec(sl, out, u) -> w`` returns the per-example ``M_i u_i`` for the chunk
    (without the 1/N weight); it must be written with torch.func-composable operations.
    ``batched``: ``vs`` carry a leading dimension ``k``, handled with ``vmap``."""
    n = inputs.shape[0]
    acc = [torch.zeros_like(v) for v in vs]
    primals = tuple(fm.params)
    for sl in _chunks(n, chunk_size):
        x = inputs[sl]

        def fwd(*ps, x=x):
            return fm.forward(ps, x)

        out, pullback = vjp(fwd, *primals)
        out = out.detach()

        def one(*tangents, out=out, fwd=fwd, pullback=pullback, sl=sl):
            _, u = jvp(fwd, primals, tangents)
            w = output_matvec(sl, out, u) / n
            return pullback(w.to(out.dtype))

        res = vmap(one)(*vs) if batched else one(*vs)
        for a, h in zip(acc, res, strict=True):
            a.add_(h.detach())
    return acc


def _loss_output_matvec(loss_fn: LossFn, targets):
    """Output-space Hessian of the summed per-example losses times ``u``
    (reverse-over-reverse with torch.func on the outputs only: cheap and vmappable)."""

    def mv(sl, out, u):
        y = targets[sl]

        def total(o):
            return _mean_loss(loss_fn, o, y) * o.shape[0]  # Σ_i ℓ_i

        def directional(o):
            return (torch.func.grad(total)(o) * u).sum()

        return torch.func.grad(directional)(out)

    return mv


def _empirical_fisher_vp(fm: _Model, loss_fn, inputs, targets, vs, chunk_size, *, batched=False):
    """``(1/N) Gᵀ(G v)``: ``G v`` as one jvp of the per-example losses, then one vjp."""
    n = inputs.shape[0]
    acc = [torch.zeros_like(v) for v in vs]
    primals = tuple(fm.params)
    for sl in _chunks(n, chunk_size):
        x, y = inputs[sl], targets[sl]

        def losses(*ps, x=x, y=y):
            return _per_example_losses(loss_fn, fm.forward(ps, x), y)

        _, pullback = vjp(losses, *primals)

        def one(*tangents, losses=losses, pullback=pullback):
            _, gv = jvp(losses, primals, tangents)
            return pullback(gv / n)

        res = vmap(one)(*vs) if batched else one(*vs)
        for a, h in zip(acc, res, strict=True):
            a.add_(h.detach())
    return acc


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

    Reverse-over-reverse (double backward): ``H v = ∇_θ ⟨∇_θ L(θ), v⟩``, about two
    gradients' cost. Uses the model's current parameters; ``chunk_size`` bounds memory by
    summing chunk products weighted by ``n_chunk / N``."""
    n = _check_data(inputs, targets)
    del n
    fm = _Model(model, snapshot=False)
    return _flatten(_hvp(fm, loss_fn, inputs, targets, fm.vector("v", v), chunk_size))


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


def _per_example_grads(fm: _Model, loss_fn, x, y) -> torch.Tensor:
    fn = fm.loss_of_flat(loss_fn)

    def one(theta, xi, yi):
        return fn(theta, xi[None], yi[None])

    return vmap(torch.func.grad(one), in_dims=(None, 0, 0))(fm.flat_theta(), x, y).detach()


def empirical_fisher(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense empirical Fisher ``F̂ = (1/N) Σ_i g_i g_iᵀ = GᵀG/N: (P, P)`` with the
    per-example gradients ``G: (N, P)`` (``torch.func`` ``vmap(grad)``)."""
    n = _check_data(inputs, targets)
    fm = _Model(model, snapshot=False)
    Fh = torch.zeros(fm.dim, fm.dim, dtype=fm.dtype, device=fm.device)
    for sl in _chunks(n, chunk_size):
        Gc = _per_example_grads(fm, loss_fn, inputs[sl], targets[sl])
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
# operators
# ----------------------------------------------------------------------------------------


class _CurvatureOperator:
    """A symmetric ``(P, P)`` matrix available through products only.

    The parameters are copied when the operator is built, so it stays one fixed matrix
    even if the model is trained further. ``num_matvecs`` counts products spent."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets, chunk_size) -> None:
        self.num_examples = _check_data(inputs, targets)
        self._fm = _Model(model, snapshot=True)
        self.inputs = inputs
        self.targets = targets
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
        self.chunk_size = chunk_size
        self.num_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self._fm.dim, self._fm.dim)

    @property
    def dtype(self) -> torch.dtype:
        return self._fm.dtype

    @property
    def device(self) -> torch.device:
        return self._fm.device

    def _product(self, vs: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
        """Products for parameter-shaped directions ``vs`` (with a leading ``k`` if
        ``batched``)."""
        raise NotImplementedError  # pragma: no cover

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A v: (P,)`` for ``v: (P,)`` (cast to the model's dtype and device)."""
        vs = self._fm.vector("v", v)
        self.num_matvecs += 1
        return _flatten(self._product(vs, False)).detach()

    __call__ = matvec

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def matmat(self, V: torch.Tensor, *, block_size: int = 16) -> torch.Tensor:
        """``A V: (P, k)`` for ``V: (P, k)``; columns are processed ``block_size`` at a
        time with vectorised (vmap / batched-backward) products. Counts ``k`` matvecs."""
        V = check_matrix("V", V)
        block_size = check_positive_int("block_size", block_size)
        P = self._fm.dim
        if V.shape[0] != P:
            raise ValueError(f"V must have {P} rows, got {V.shape[0]}")
        V = V.to(dtype=self.dtype, device=self.device)
        out = torch.zeros(P, V.shape[1], dtype=self.dtype, device=self.device)
        for a in range(0, V.shape[1], block_size):
            Vt = V[:, a : a + block_size].T.contiguous()  # (b, P)
            b = Vt.shape[0]
            vs, offset = [], 0
            for p in self._fm.params:
                vs.append(Vt[:, offset : offset + p.numel()].reshape(b, *p.shape))
                offset += p.numel()
            res = self._product(vs, True)
            out[:, a : a + b] = torch.cat([r.reshape(b, -1) for r in res], dim=1).T.detach()
            self.num_matvecs += b
        return out

    def to_dense(self) -> torch.Tensor:
        """The full ``(P, P)`` matrix from ``P`` products, symmetrised (small P only)."""
        A = self.matmat(torch.eye(self._fm.dim, dtype=self.dtype, device=self.device))
        return 0.5 * (A + A.T)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (NumPy float64 in and out)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).to(device="cpu", dtype=torch.float64).numpy()

        def mm(X):
            M = torch.as_tensor(np.asarray(X, dtype=np.float64))
            return self.matmat(M).to(device="cpu", dtype=torch.float64).numpy()

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)

    def eigh(self, k: int, **lanczos_kwargs):
        """Top-``k`` eigenpairs by :func:`sgdnoise.spectral.lanczos` (its keyword
        arguments pass through; dtype/device default to the operator's)."""
        lanczos_kwargs.setdefault("dtype", self.dtype)
        lanczos_kwargs.setdefault("device", self.device)
        return lanczos(self.matvec, self._fm.dim, k, **lanczos_kwargs)


class HessianOperator(_CurvatureOperator):
    """``v ↦ H v`` for the mean-loss Hessian, by double backward (one HVP ≈ 2 gradients)."""

    def __init__(self, model, loss_fn: LossFn, inputs, targets, *, chunk_size=None) -> None:
        super().__init__(model, inputs, targets, chunk_size)
        self.loss_fn = loss_fn

    def _product(self, vs, batched):
        return _hvp(
            self._fm, self.loss_fn, self.inputs, self.targets, vs, self.chunk_size,
            batched=batched,
        )


class GGNOperator(_CurvatureOperator):
    """``v ↦ G v = (1/N) Σ_i J_iᵀ H_i^out (J_i v)``: one jvp, the output-space Hessian
    product (double backward on the outputs only), one vjp; ``J`` is never formed."""

    def __init__(self, model, loss_fn: LossFn, inputs, targets, *, chunk_size=None) -> None:
        super().__init__(model, inputs, targets, chunk_size)
        self.loss_fn = loss_fn
        self._out_mv = _loss_output_matvec(loss_fn, targets)

    def _product(self, vs, batched):
        return _gauss_newton_vp(
            self._fm, self.inputs, vs, self.chunk_size, self._out_mv, batched=batched
        )


class EmpiricalFisherOperator(_CurvatureOperator):
    """``v ↦ F̂ v = (1/N) Gᵀ (G v)`` with per-example gradients ``G: (N, P)``.

    Matrix-free by default (``G v`` as one jvp of the per-example losses, ``Gᵀw`` as one
    vjp); ``materialize=True`` computes ``G`` once instead (fast when ``N·P`` fits)."""

    def __init__(
        self, model, loss_fn: LossFn, inputs, targets, *, chunk_size=None, materialize=False
    ) -> None:
        super().__init__(model, inputs, targets, chunk_size)
        self.loss_fn = loss_fn
        self._G = None
        if materialize:
            self._G = torch.cat(
                [
                    _per_example_grads(self._fm, loss_fn, inputs[sl], targets[sl])
                    for sl in _chunks(self.num_examples, chunk_size)
                ]
            )

    def _product(self, vs, batched):
        if self._G is not None:
            if batched:
                k = vs[0].shape[0]
                Vt = torch.cat([v.reshape(k, -1) for v in vs], dim=1)  # (k, P)
                W = (Vt @ self._G.T) @ self._G / self.num_examples
                return [W]  # flattened per row; matmat reshapes
            v = _flatten(vs)
            return _split(self._G.T @ (self._G @ v) / self.num_examples, self._fm.params)
        return _empirical_fisher_vp(
            self._fm, self.loss_fn, self.inputs, self.targets, vs, self.chunk_size,
            batched=batched,
        )


class TrueFisherOperator(_CurvatureOperator):
    """``v ↦ F v`` for the true Fisher of a softmax classifier (the model returns logits).

    Exact (``mc_samples`` None): ``F v = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i v``.
    Monte Carlo: labels ``y_is ~ p_i`` drawn once (seeded) when the operator is built,
    and ``F_S v = (1/(N S)) Σ_{i,s} J_iᵀ r_is (r_isᵀ J_i v)`` with ``r_is = p_i − e_{y_is}``
    (the logit gradient of ``−log p(y_is|x_i)``). ``loss_fn`` and ``targets`` are accepted
    for a uniform signature and ignored."""

    def __init__(
        self,
        model,
        loss_fn: LossFn | None,
        inputs,
        targets=None,
        *,
        mc_samples: int | None = None,
        seed: int = 0,
        chunk_size=None,
    ) -> None:
        super().__init__(model, inputs, None, chunk_size)
        del loss_fn, targets
        with torch.no_grad():
            probs = torch.cat(
                [
                    _softmax_probs(self._fm.forward(self._fm.params, inputs[sl]))
                    for sl in _chunks(self.num_examples, self.chunk_size)
                ]
            )
        self.probs = probs
        self.mc_samples = None
        self.labels = None
        if mc_samples is not None:
            self.mc_samples = check_positive_int("mc_samples", mc_samples)
            self.labels = _sample_labels(probs, self.mc_samples, seed)

    def _product(self, vs, batched):
        labels = self.labels

        def mv(sl, out, u):
            return _softmax_output_matvec(
                self.probs[sl].to(u.dtype), u, None if labels is None else labels[sl]
            )

        return _gauss_newton_vp(self._fm, self.inputs, vs, self.chunk_size, mv, batched=batched)


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
                return _per_example_losses(loss_fn, fm.forward(ps, x), y)

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
        if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) or (
            num_hidden_layers < 0
        ):
            raise ValueError(
                f"num_hidden_layers must be an integer >= 0, got {num_hidden_layers!r}"
            )
        degree = num_hidden_layers + 1
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
                summed = _per_example_losses(loss_fn, o, targets[sl]).sum()
                (dl,) = _grad_or_zeros(summed, [o])
            s = (dl * raw).reshape(raw.shape[0], -1).sum(dim=1)
            total += float((s.double() ** 2).sum())
    rhs = degree**2 * total / n
    return FisherRaoIdentity(lhs=lhs, rhs=rhs, degree=degree, kind=kind)

