"""Lemma 2, the one-step expected loss of SGD on a quadratic, Markov bounds on a loss
increase, the stationary covariance of SGD on a quadratic and linear stability.

Everything here is dense linear algebra on small matrices; use float64.

Setting. A quadratic loss ``L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*)`` with symmetric ``H: (P, P)``.
One SGD step with learning rate η and a stochastic gradient ``g`` of mean ``ḡ`` and
covariance ``Σ_g`` moves ``θ -> θ − η g``. Lemma 2 (``E[xᵀAx] = tr(AΣ) + μᵀAμ``) gives the
expected loss after the step in closed form; with mini-batches of size B drawn with
replacement from N examples of per-example gradient covariance D, ``Σ_g = D / B``
(Lemma 1), and ``Σ_g = D/B · (N − B)/(N − 1)`` without replacement (the one factor is
:func:`sgdnoise.covariance.finite_population_factor`; 0 at B = N).

Near a minimum, the linearised SGD recursion ``δ_{t+1} = (I − ηH) δ_t − η ξ_t`` with noise
``ξ_t`` of covariance C has the stationary covariance Σ solving the discrete Lyapunov
equation ``Σ = (I − ηH) Σ (I − ηH)ᵀ + η² C``, which exists iff every eigenvalue of
``I − ηH`` lies strictly inside the unit circle: ``0 < ηλ_i < 2`` for all eigenvalues λ_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .covariance import finite_population_factor
from .validate import check_choice, check_matrix, check_positive, check_positive_int, check_vector

__all__ = [
    "LinearStability",
    "OneStepExpectation",
    "covariance_of_minibatch",
    "expected_quadratic_form",
    "expected_loss_change_second_order",
    "linear_stability",
    "markov_bound",
    "markov_loss_increase_bound",
    "max_stable_lr",
    "quadratic_form_variance_gaussian",
    "quadratic_loss",
    "sgd_one_step_expected_loss",
    "stationary_covariance",
    "stationary_covariance_commuting",
    "simulate_linear_sgd",
]


# --------------------------------------------------------------------------- helpers


def _check_same_size(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_b} must match {name_a} in size {a.shape[0]}, got shape {tuple(b.shape)}"
        )


def _symmetric(name: str, A: torch.Tensor, *, rtol: float = 1e-8) -> torch.Tensor:
    """Raise unless ``A`` is symmetric up to ``rtol`` (relative to its largest entry)."""
    scale = A.abs().max().clamp_min(torch.finfo(A.dtype).tiny)
    if (A - A.T).abs().max() > rtol * scale:
        raise ValueError(f"{name} must be symmetric, got max |A - Aᵀ| = "
                         f"{(A - A.T).abs().max().item():.3g}")
    return 0.5 * (A + A.T)


def quadratic_loss(
    H: torch.Tensor, theta: torch.Tensor, theta_star: torch.Tensor | None = None
) -> torch.Tensor:
    """``L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*)``; ``H: (P, P)``, ``theta: (P,)`` or a batch
    ``(S, P)`` (then the result has shape ``(S,)``); ``theta_star`` defaults to 0."""
    check_matrix("H", H, square=True)
    if not isinstance(theta, torch.Tensor) or theta.ndim not in (1, 2):
        got = getattr(theta, "shape", theta)
        raise ValueError(f"theta must be a (P,) or (S, P) tensor, got {got}")
    if theta.shape[-1] != H.shape[0]:
        raise ValueError(f"theta must have last dimension {H.shape[0]}, got {tuple(theta.shape)}")
    d = theta if theta_star is None else theta - check_vector("theta_star", theta_star, H.shape[0])
    if d.ndim == 1:
        return 0.5 * d @ H @ d
    return 0.5 * torch.einsum("sp,pq,sq->s", d, H, d)


def covariance_of_minibatch(
    D: torch.Tensor,
    batch_size: int,
    *,
    replacement: bool = True,
    num_examples: int | None = None,
) -> torch.Tensor:
    """Lemma 1: covariance of a mini-batch mean gradient from the per-example covariance.

    ``D: (P, P)``. ``c · D`` with ``c`` = :func:`sgdnoise.covariance.finite_population_factor`:
    ``1/B`` with replacement, ``(N − B)/(B(N − 1))`` without (needs ``num_examples`` = N >= B;
    0 at B = N, N = 1 included)."""
    check_matrix("D", D, square=True)
    B = check_positive_int("batch_size", batch_size)
    if not replacement and num_examples is None:
        raise ValueError("num_examples (N) is required when replacement=False, got None")
    n = B if num_examples is None else num_examples
    return D * finite_population_factor(n, B, replacement=replacement)


# --------------------------------------------------------------------------- Lemma 2


def expected_quadratic_form(
    A: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """Lemma 2: ``E[xᵀ A x] = tr(A Σ) + μᵀ A μ`` for any random ``x`` with mean ``μ`` and
    covariance ``Σ`` (no Gaussianity needed).

    ``A: (P, P)`` (any square matrix), ``mean: (P,)``, ``cov: (P, P)``; returns a 0-d tensor.
    """
    check_matrix("A", A, square=True)
    check_vector("mean", mean, A.shape[0])
    check_matrix("cov", cov, square=True)
    _check_same_size("A", A, "cov", cov)
    # tr(AΣ) = Σ_ij A_ij Σ_ji, computed without forming the product.
    return (A * cov.T).sum() + mean @ A @ mean


def quadratic_form_variance_gaussian(
    A: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """``Var[xᵀ A x]`` for Gaussian ``x ~ N(μ, Σ)`` and symmetric ``A``:
    ``2 tr(AΣAΣ) + 4 μᵀ A Σ A μ``. No chapter calls it; it is kept for the reader who sizes
    the tolerance of a Monte Carlo check of a quadratic form (the tests do so)."""
    check_matrix("A", A, square=True)
    check_vector("mean", mean, A.shape[0])
    check_matrix("cov", cov, square=True)
    _check_same_size("A", A, "cov", cov)
    A = _symmetric("A", A)
    AS = A @ cov
    return 2.0 * (AS * AS.T).sum() + 4.0 * mean @ A @ cov @ A @ mean


# --------------------------------------------------------------------------- one SGD step


def _step_inputs(H, vec_name, vec, grad_cov, lr, batch_size, replacement, num_examples):
    """Checked ``(H symmetrised, P, η, Cov(g_B))`` for the one-step formulas."""
    check_matrix("H", H, square=True)
    P = H.shape[0]
    check_vector(vec_name, vec, P)
    check_matrix("grad_cov", grad_cov, square=True)
    _check_same_size("H", H, "grad_cov", grad_cov)
    eta = check_positive("lr", lr)
    cov_b = covariance_of_minibatch(
        grad_cov, batch_size, replacement=replacement, num_examples=num_examples
    )
    return _symmetric("H", H), P, eta, cov_b


@dataclass(frozen=True)
class OneStepExpectation:
    """Expected loss after one SGD step on a quadratic.

    ``current``: L(θ); ``deterministic``: L(θ − ηḡ) (the full-batch step);
    ``noise``: ``(η²/2) tr(H Σ_g)`` (the price of the noise); ``expected`` =
    deterministic + noise = E[L(θ − η g)]; ``grad_cov``: the Σ_g that was used."""

    current: float
    deterministic: float
    noise: float
    expected: float
    grad_cov: torch.Tensor

    @property
    def expected_change(self) -> float:
        """E[L(θ − η g)] − L(θ)."""
        return self.expected - self.current


def sgd_one_step_expected_loss(
    H: torch.Tensor,
    theta: torch.Tensor,
    grad_cov: torch.Tensor,
    lr: float,
    batch_size: int = 1,
    *,
    theta_star: torch.Tensor | None = None,
    replacement: bool = True,
    num_examples: int | None = None,
) -> OneStepExpectation:
    """``E[L(θ − η g_B)] = L(θ − ηḡ) + (η²/2) tr(H Cov(g_B))`` on ``L = ½(θ−θ*)ᵀH(θ−θ*)``.

    ``H: (P, P)`` symmetric, ``theta: (P,)``, ``grad_cov: (P, P)`` the per-example gradient
    covariance D; the mini-batch covariance is ``D/B`` (with replacement) or
    ``D/B·(N−B)/(N−1)`` (without, needs ``num_examples``). The mean gradient of the quadratic
    is ``ḡ = H(θ − θ*)``. Pass ``batch_size=1`` and the mini-batch covariance itself as
    ``grad_cov`` to use any other noise.

    Derivation: ``θ − ηg − θ* = (θ − ηḡ − θ*) − ηξ`` with ``E ξ = 0``, ``Cov ξ = Σ_g``;
    Lemma 2 with ``A = H/2`` gives the two terms (the cross term has zero mean)."""
    H, P, eta, cov_b = _step_inputs(H, "theta", theta, grad_cov, lr, batch_size,
                                    replacement, num_examples)
    d = theta if theta_star is None else theta - check_vector("theta_star", theta_star, P)
    gbar = H @ d
    current = 0.5 * d @ H @ d
    d_next = d - eta * gbar
    deterministic = 0.5 * d_next @ H @ d_next
    noise = 0.5 * eta**2 * (H * cov_b.T).sum()
    return OneStepExpectation(
        current=float(current),
        deterministic=float(deterministic),
        noise=float(noise),
        expected=float(deterministic + noise),
        grad_cov=cov_b,
    )


def expected_loss_change_second_order(
    H: torch.Tensor,
    grad_mean: torch.Tensor,
    grad_cov: torch.Tensor,
    lr: float,
    batch_size: int = 1,
    *,
    replacement: bool = True,
    num_examples: int | None = None,
) -> dict[str, float]:
    """Expected loss change of one SGD step under the second-order Taylor model of any loss:

    ``L(θ − ηg) − L(θ) ≈ −η ḡᵀg + (η²/2) gᵀHg``, so (Lemma 2)
    ``E[ΔL] ≈ −η‖ḡ‖² + (η²/2)(ḡᵀHḡ + tr(H Σ_g))`` with ``Σ_g`` from Lemma 1.

    ``H: (P, P)`` Hessian at θ, ``grad_mean: (P,)`` the full gradient ḡ, ``grad_cov: (P, P)``
    the per-example covariance D. Returns the terms ``first_order`` (−η‖ḡ‖²),
    ``curvature`` ((η²/2) ḡᵀHḡ), ``noise`` ((η²/2) tr(HΣ_g)), ``deterministic``
    (first_order + curvature: the full-batch step) and ``expected`` (all three). Exact when
    the loss is quadratic."""
    H, P, eta, cov_b = _step_inputs(H, "grad_mean", grad_mean, grad_cov, lr, batch_size,
                                    replacement, num_examples)
    first = float(-eta * grad_mean @ grad_mean)
    curv = float(0.5 * eta**2 * grad_mean @ H @ grad_mean)
    noise = float(0.5 * eta**2 * (H * cov_b.T).sum())
    return {
        "first_order": first,
        "curvature": curv,
        "noise": noise,
        "deterministic": first + curv,
        "expected": first + curv + noise,
    }


# --------------------------------------------------------------------------- Markov


def markov_bound(expected_value: float, threshold: float) -> float:
    """Markov's inequality ``P(X >= a) <= E[X] / a`` for a NONNEGATIVE random X and a > 0;
    returns ``min(1, E[X]/a)``."""
    a = check_positive("threshold", threshold)
    m = check_positive("expected_value", expected_value, allow_zero=True)
    return min(1.0, m / a)


def markov_loss_increase_bound(
    expected_next_loss: float, current_loss: float, increase: float
) -> float:
    """Bound on the probability that one SGD step raises a NONNEGATIVE loss by at least ``a``.

    The loss change ``L_{t+1} − L_t`` can be negative, so Markov's inequality is applied to
    the nonnegative next loss ``L_{t+1} >= 0`` (true for a quadratic with PSD H measured from
    its minimum, and for cross-entropy):
    ``P(L_{t+1} − L_t >= a) = P(L_{t+1} >= L_t + a) <= E[L_{t+1}] / (L_t + a)``,
    with ``E[L_{t+1}]`` from Lemma 2 (:func:`sgd_one_step_expected_loss`). Returns the bound
    clipped to 1."""
    cur = check_positive("current_loss", current_loss, allow_zero=True)
    a = check_positive("increase", increase)
    return markov_bound(expected_next_loss, cur + a)


# --------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class LinearStability:
    """Linear stability of GD/SGD at a minimum with Hessian H and learning rate η:
    ``lambda_max`` (largest eigenvalue of H), ``lambda_min``, ``threshold`` = 2/η,
    ``stable`` iff ``0 < ηλ_i < 2`` for every i (strict minimum and no blow-up; a zero
    eigenvalue gives a marginal, not asymptotically stable, direction), ``spectral_radius``
    of ``I − ηH`` (the contraction factor per step)."""

    lambda_max: float
    lambda_min: float
    lr: float
    threshold: float
    spectral_radius: float
    stable: bool


def linear_stability(H: torch.Tensor, lr: float) -> LinearStability:
    """Check ``ηλ_max < 2`` (and ``λ_min > 0``) for symmetric ``H: (P, P)``."""
    check_matrix("H", H, square=True)
    eta = check_positive("lr", lr)
    H = _symmetric("H", H)
    evals = torch.linalg.eigvalsh(H)
    lmin, lmax = float(evals[0]), float(evals[-1])
    rho = float((1.0 - eta * evals).abs().max())
    return LinearStability(
        lambda_max=lmax,
        lambda_min=lmin,
        lr=eta,
        threshold=2.0 / eta,
        spectral_radius=rho,
        stable=bool(rho < 1.0),
    )


def max_stable_lr(H: torch.Tensor) -> float:
    """Largest stable learning rate ``2 / λ_max(H)`` (``inf`` if λ_max <= 0). No chapter
    calls it (they read λ_max from Lanczos); it is kept as the dense one-line answer."""
    check_matrix("H", H, square=True)
    lmax = float(torch.linalg.eigvalsh(_symmetric("H", H))[-1])
    return float("inf") if lmax <= 0 else 2.0 / lmax


def stationary_covariance_commuting(
    eigenvalues: torch.Tensor, noise_eigenvalues: torch.Tensor, lr: float
) -> torch.Tensor:
    """Closed form when the noise covariance C commutes with H (shared eigenbasis):
    ``Σ_ii = η c_i / (λ_i (2 − ηλ_i))`` in that basis. ``eigenvalues: (P,)`` λ_i of H,
    ``noise_eigenvalues: (P,)`` c_i of C (same order); returns ``(P,)``. Needs
    ``0 < ηλ_i < 2``. No chapter calls it; it is kept as the closed form a reader checks
    the general Lyapunov solution against (the tests do)."""
    lam = check_vector("eigenvalues", eigenvalues)
    c = check_vector("noise_eigenvalues", noise_eigenvalues, lam.shape[0])
    eta = check_positive("lr", lr)
    x = eta * lam
    if bool(((x <= 0) | (x >= 2)).any()):
        raise ValueError(
            f"lr * eigenvalues must lie in (0, 2) for a stationary covariance, got range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return eta * c / (lam * (2.0 - x))


def stationary_covariance(
    H: torch.Tensor, C: torch.Tensor, lr: float, *, method: str = "eigen"
) -> torch.Tensor:
    """Stationary covariance of ``δ_{t+1} = (I − ηH) δ_t − η ξ_t``, ``Cov ξ = C``:
    the solution Σ: (P, P) of ``Σ = A Σ Aᵀ + η² C`` with ``A = I − ηH``.

    ``method``: "eigen" (in H's eigenbasis ``H = U diag(λ) Uᵀ`` the equation decouples
    entrywise: ``Σ'_ij = η² C'_ij / (1 − (1 − ηλ_i)(1 − ηλ_j))`` with ``C' = UᵀCU``; exact for
    any symmetric C), "scipy" (``scipy.linalg.solve_discrete_lyapunov``) or "kron" (the
    vectorised linear system ``(I − A⊗A) vec Σ = η² vec C``, P <= 60). Raises ValueError unless
    the iteration is linearly stable (``0 < ηλ_i < 2`` for all i)."""
    check_matrix("H", H, square=True)
    check_matrix("C", C, square=True)
    _check_same_size("H", H, "C", C)
    eta = check_positive("lr", lr)
    check_choice("method", method, ("eigen", "scipy", "kron"))
    H = _symmetric("H", H)
    C = _symmetric("C", C)
    stab = linear_stability(H, eta)
    if not stab.stable:
        raise ValueError(
            f"lr={eta} gives no stationary covariance: need 0 < lr*λ < 2 for every eigenvalue "
            f"of H, got λ in [{stab.lambda_min:.4g}, {stab.lambda_max:.4g}] "
            f"(spectral radius of I - lr*H = {stab.spectral_radius:.4g})"
        )
    P = H.shape[0]
    if method == "eigen":
        lam, U = torch.linalg.eigh(H)
        a = 1.0 - eta * lam
        Cp = U.T @ C @ U
        Sp = eta**2 * Cp / (1.0 - a[:, None] * a[None, :])
        S = U @ Sp @ U.T
    elif method == "scipy":
        from scipy.linalg import solve_discrete_lyapunov

        A = torch.eye(P, dtype=H.dtype) - eta * H
        S = torch.as_tensor(
            solve_discrete_lyapunov(A.cpu().numpy(), (eta**2 * C).cpu().numpy()),
            dtype=H.dtype,
        )
    else:
        if P > 60:
            raise ValueError(f"method='kron' builds a P²×P² system; needs P <= 60, got P={P}")
        A = torch.eye(P, dtype=H.dtype) - eta * H
        M = torch.eye(P * P, dtype=H.dtype) - torch.kron(A, A)
        # Row-major vec: vec(AΣAᵀ) = (A ⊗ A) vec(Σ).
        S = torch.linalg.solve(M, (eta**2 * C).reshape(-1)).reshape(P, P)
    return 0.5 * (S + S.T)


def simulate_linear_sgd(
    H: torch.Tensor,
    C: torch.Tensor,
    lr: float,
    num_steps: int,
    num_chains: int,
    *,
    start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run ``num_chains`` independent copies of ``δ_{t+1} = (I − ηH) δ_t − η ξ_t`` with
    Gaussian ``ξ_t ~ N(0, C)`` for ``num_steps`` steps from ``start`` (default 0); returns the
    final states ``(num_chains, P)``. ``C`` may be singular (PSD square root via eigh).
    No chapter calls it; it is kept as the simulation a reader checks a stationary
    covariance with (the tests do)."""
    check_matrix("H", H, square=True)
    check_matrix("C", C, square=True)
    _check_same_size("H", H, "C", C)
    eta = check_positive("lr", lr)
    T = check_positive_int("num_steps", num_steps)
    S = check_positive_int("num_chains", num_chains)
    H = _symmetric("H", H)
    C = _symmetric("C", C)
    P = H.shape[0]
    w, V = torch.linalg.eigh(C)
    root = V * w.clamp_min(0).sqrt()  # root @ rootᵀ = C
    A = torch.eye(P, dtype=H.dtype) - eta * H
    if start is None:
        x = torch.zeros(S, P, dtype=H.dtype)
    else:
        x = check_vector("start", start, P).to(H.dtype).expand(S, P).clone()
    for _ in range(T):
        z = torch.randn(S, P, dtype=H.dtype, generator=generator)
        x = x @ A.T - eta * (z @ root.T)
    return x
