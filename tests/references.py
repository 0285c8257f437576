"""Dense float64 references and the case grid the tests share.

Every reference is computed the slow, independent way — ``torch.autograd.functional`` on a
flat parameter vector, Python loops over examples and labels, dense ``eigh`` — so that a
test compares the package's batched, matrix-free code against something that shares none of
its machinery. The case grid (:data:`CASES`, :func:`case`) is the set of small models and
batches the curvature, noise and gradient tests run on; :func:`tiny_problem` is the smallest
of them, used by the noise and chapter-9 tests.

Conventions: ``model`` is float64, θ ∈ R^P its parameters in ``parameters()`` order,
``x: (N, ...)``, ``y: (N,)``, ``loss_fn(outputs, targets)`` a mean-reduced criterion.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

CE = nn.CrossEntropyLoss()

#: batch size of the case grid
N = 12

LossFn = Callable[[Tensor, Tensor], Tensor]


# ------------------------------------------------------------------------------ case grid


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def _softmax() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))


#: case name -> builder of its (untyped, unseeded) network; inputs (N, 4), or (N, 1, 5, 5)
#: for "cnn"; three classes
CASES: dict[str, Callable[[], nn.Module]] = {"mlp": _mlp, "softmax": _softmax, "cnn": _cnn}


def case_model(name: str, seed: int = 0) -> nn.Module:
    """The float64 network of case ``name``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return CASES[name]().double()


def case_data(name: str, seed: int = 1, n: int = N) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of case ``name``: standard normal inputs, uniform labels in {0, 1, 2}."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, 1, 5, 5) if name == "cnn" else (n, 4)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def case(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """``(model, x, y)`` of case ``name`` with the grid's seeds."""
    return case_model(name), *case_data(name)


def tiny_problem(seed: int = 0, n: int = 12, hidden: int = 3, d_in: int = 3, classes: int = 3):
    """A float64 tanh MLP with ``x: (n, d_in)``, ``y: (n,)`` drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes))
    model = model.double()
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64) * 1.5
    y = torch.randint(0, classes, (n,), generator=gen)
    return model, x, y


# ----------------------------------------------------------------- model-level references


def nparams(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def theta_of(model: nn.Module) -> Tensor:
    """θ: (P,), the parameters flattened in order (detached)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def as_function(model: nn.Module, x: Tensor) -> Callable[[Tensor], Tensor]:
    """θ ↦ the model's outputs on ``x``, for ``torch.autograd.functional``."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [math.prod(s) for s in shapes]

    def f(theta: Tensor) -> Tensor:
        parts = torch.split(theta, sizes)
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return functional_call(model, params, (x,))

    return f


def dense_hessian(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """H: (P, P), the Hessian of ``loss_fn(model(x), y)`` by ``autograd.functional``."""
    f = as_function(model, x)
    return torch.autograd.functional.hessian(lambda t: loss_fn(f(t), y), theta_of(model))


def dense_ggn(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """G = (1/N) Σ_i J_iᵀ H_out,i J_i: (P, P), summed over examples in a Python loop (J_i
    by ``autograd.functional.jacobian``, the output Hessian by ``autograd.functional.hessian``
    of the single-example loss)."""
    theta = theta_of(model)
    G = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for i in range(x.shape[0]):
        f = as_function(model, x[i : i + 1])
        yi = y[i : i + 1]
        J = torch.autograd.functional.jacobian(lambda t, f=f: f(t)[0], theta)  # (C, P)
        out = f(theta).detach()[0]
        Hout = torch.autograd.functional.hessian(lambda o, yi=yi: loss_fn(o[None], yi), out)
        G += J.T @ Hout @ J
    return G / x.shape[0]


def per_example_grads_loop(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Tensor:
    """G: (N, P), row i the gradient of ``loss_fn`` on example i alone by one ordinary
    backward pass (a parameter the loss does not reach gets zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), params,
                                    allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                               for g, p in zip(grads, params, strict=True)]))
    return torch.stack(rows)


def true_fisher_by_enumeration(model: nn.Module, x: Tensor) -> Tensor:
    """F = (1/N) Σ_i Σ_c p_ic ∇log p_ic ∇log p_icᵀ: (P, P), every class enumerated."""
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    P = nparams(model)
    Fm = torch.zeros(P, P, dtype=torch.float64)
    for c in range(probs.shape[1]):
        G = per_example_grads_loop(model, CE, x, torch.full((x.shape[0],), c))
        Fm += (G * probs[:, c : c + 1]).T @ G
    return Fm / x.shape[0]


# ------------------------------------------------------------------- matrix references


def known_spectrum(eigs, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``A = Q diag(eigs) Qᵀ`` with a random orthogonal ``Q``; returns ``(A, Q)``."""
    eigs = torch.as_tensor(eigs, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=gen, dtype=torch.float64))
    return Q @ torch.diag(eigs) @ Q.T, Q


def dense_fn(A: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """f(A) = U f(Λ) Uᵀ for a symmetric ``A`` by dense ``eigh``."""
    lam, U = torch.linalg.eigh(A)
    return U @ torch.diag(fn(lam)) @ U.T


def psd_part(A: Tensor) -> Tensor:
    """A₊ = U max(Λ, 0) Uᵀ, the positive part of a symmetric ``A``."""
    return dense_fn(A, lambda lam: lam.clamp_min(0))
