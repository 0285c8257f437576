"""Toy landscapes and vectorised simulations for the stability (ch. 4) and saddle (ch. 7)
chapters.

Every simulation runs many independent runs at once as numpy float64 arrays (runs on the
leading axes) and is seeded through ``numpy.random.default_rng(seed)``.

Contents
--------
Statistics
    :func:`wilson_interval`, :func:`power_law_fit`, :func:`bootstrap_power_law`.
Quadratic with noise ∝ H (chapter 4)
    The Gaussian noise model: a stochastic gradient ``g = H δ + ξ`` with
    ``ξ ~ N(0, C)``, ``C = σ² H / B`` ("hessian") or ``C = σ_iso² I / B`` ("isotropic").
    :func:`simulate_stationary`, :func:`stationary_check`, :func:`gd_divergence_sweep`,
    :func:`stationary_std`, :func:`quadratic_critical_radii` (exact per-run radius),
    :class:`GaussianWell` and :func:`bisection_critical_radii` (non-quadratic basin),
    :func:`radius_from_critical`, :func:`radius_exponent`.
Over-parameterised finite sum (Wu, Ma & E 2018)
    ``ℓ_i(x) = ½ a_i x²`` with ``a_i >= 0``; :func:`mean_square_factor`,
    :func:`almost_sure_rate`, :func:`simulate_interpolating`, :func:`minibatch_means`.
Sharp and flat minimum
    :class:`TwoWells`, :func:`basin_selection`.
Strict saddle (chapter 7)
    :class:`SaddleProblem`, :func:`saddle_escape_times`, :func:`predicted_escape_time`,
    :func:`escape_law_fit`, :func:`noise_along_direction`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ._validate import check_choice, check_positive, check_positive_int

__all__ = [
    "EULER_GAMMA",
    "ExponentFit",
    "GaussianWell",
    "SaddleProblem",
    "StationaryCheck",
    "TwoWells",
    "almost_sure_rate",
    "basin_selection",
    "bisection_critical_radii",
    "bootstrap_power_law",
    "escape_law_fit",
    "gd_divergence_sweep",
    "almost_sure_lr_max",
    "matched_isotropic_sigma",
    "mean_square_factor",
    "mean_square_lr_max",
    "minibatch_means",
    "noise_along_direction",
    "power_law_fit",
    "predicted_escape_time",
    "quadratic_critical_radii",
    "radius_exponent",
    "radius_from_critical",
    "saddle_escape_times",
    "simulate_interpolating",
    "simulate_stationary",
    "stationary_check",
    "stationary_std",
    "wilson_interval",
]

EULER_GAMMA = 0.5772156649015329


# ----------------------------------------------------------------------------- statistics
def wilson_interval(k: np.ndarray | int, n: int, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``k / n`` (``z`` = normal quantile).
    Returns ``(low, high)`` with the shape of ``k``."""
    n = check_positive_int("n", n)
    k = np.asarray(k, dtype=float)
    p = k / n
    den = 1.0 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def power_law_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares fit of ``log y = c − α log x``; returns ``(α, c)``.
    ``x, y: (G,)`` positive."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {x.shape}, {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("x and y must be positive for a log-log fit")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(-slope), float(intercept)


@dataclass
class ExponentFit:
    """``r ∝ ρ^(−α)``: point estimate, bootstrap percentile interval, the points used."""

    alpha: float
    intercept: float
    ci_low: float
    ci_high: float
    used: np.ndarray  # (G,) bool: grid points with a positive radius, entering the fit
    boot: np.ndarray  # (n_boot,) bootstrap replicates of α

    def covers(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)


def bootstrap_power_law(
    x: np.ndarray,
    statistic: Callable[[np.ndarray | None], np.ndarray],
    num_runs: int,
    *,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> ExponentFit:
    """Fit ``statistic(None) ∝ x^(−α)`` and a percentile bootstrap interval for α that
    resamples the independent runs: ``statistic(idx)`` recomputes the (G,) curve from the
    runs ``idx: (num_runs,)`` (indices drawn with replacement). Grid points whose point
    estimate is not positive are left out of every fit."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(statistic(None), dtype=float)
    used = y > 0
    if used.sum() < 2:
        raise ValueError(f"need at least two positive values to fit an exponent, got {y}")
    alpha, c = power_law_fit(x[used], y[used])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(check_positive_int("n_boot", n_boot)):
        idx = rng.integers(0, num_runs, size=num_runs)
        yb = np.asarray(statistic(idx), dtype=float)[used]
        if (yb > 0).all():
            boots.append(power_law_fit(x[used], yb)[0])
    boots_a = np.asarray(boots)
    if boots_a.size == 0:
        lo = hi = float("nan")
    else:
        lo, hi = np.quantile(boots_a, [(1 - level) / 2, (1 + level) / 2])
    return ExponentFit(alpha, c, float(lo), float(hi), used, boots_a)


# ------------------------------------------------------------ quadratic, noise model
def _noise_factor(
    eigenvalues: np.ndarray, noise: str, sigma: float, batch_size: int, iso_scale: float = 1.0
) -> np.ndarray:
    """Standard deviations of ξ along H's eigenvectors: ``σ sqrt(λ_i / B)`` for noise ∝ H,
    ``σ sqrt(iso_scale / B)`` for isotropic noise."""
    check_choice("noise", noise, ("hessian", "isotropic", "none"))
    lam = np.asarray(eigenvalues, dtype=float)
    if noise == "hessian":
        return sigma * np.sqrt(lam / batch_size)
    if noise == "isotropic":
        return np.full_like(lam, sigma * np.sqrt(iso_scale / batch_size))
    return np.zeros_like(lam)


def stationary_std(
    eigenvalue: np.ndarray | float,
    lr: float,
    sigma: float,
    batch_size: int,
    noise: str = "hessian",
    iso_scale: float = 1.0,
) -> np.ndarray:
    """Stationary standard deviation along an eigenvector of eigenvalue λ of
    ``δ_{t+1} = (1 − ηλ) δ_t − η ξ_t`` with ``Var ξ = c``: ``sqrt(η c / (λ (2 − ηλ)))``.
    Noise ∝ H (``c = σ²λ/B``) gives ``sqrt(ησ² / (B (2 − ηλ)))``; isotropic
    (``c = σ² iso_scale / B``) gives ``sqrt(ησ² iso_scale / (Bλ(2 − ηλ)))``. NaN where
    ``ηλ`` is outside (0, 2)."""
    lam = np.asarray(eigenvalue, dtype=float)
    sd = _noise_factor(np.atleast_1d(lam), noise, sigma, batch_size, iso_scale)
    c = sd.reshape(lam.shape) ** 2
    x = lr * lam
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(lr * c / (lam * (2.0 - x)))
    return np.where((x > 0) & (x < 2), out, np.nan)


def simulate_stationary(
    H: np.ndarray, C: np.ndarray, lr: float, *, steps: int, runs: int, seed: int = 0
) -> np.ndarray:
    """Run ``δ_{t+1} = (I − ηH) δ_t − η ξ_t``, ``ξ_t ~ N(0, C)``, from ``δ_0 = 0`` for
    ``steps`` steps in ``runs`` independent copies; return the final iterates ``(runs, P)``.
    """
    H = np.asarray(H, dtype=float)
    C = np.asarray(C, dtype=float)
    P = H.shape[0]
    rng = np.random.default_rng(seed)
    Lc = np.linalg.cholesky(C + 1e-300 * np.eye(P))
    A = np.eye(P) - lr * H
    d = np.zeros((runs, P))
    for _ in range(check_positive_int("steps", steps)):
        xi = rng.standard_normal((runs, P)) @ Lc.T
        d = d @ A.T - lr * xi
    return d


@dataclass
class StationaryCheck:
    """Lyapunov stationary covariance against the empirical covariance of final iterates.
    ``z: (P, P)`` = (empirical − theory) / standard error of each entry."""

    theory: np.ndarray
    empirical: np.ndarray
    stderr: np.ndarray
    z: np.ndarray
    runs: int


def stationary_check(
    H: np.ndarray, C: np.ndarray, lr: float, *, steps: int, runs: int, seed: int = 0
) -> StationaryCheck:
    """Compare ``sgdnoise.stability.stationary_covariance(H, C, η)`` with the covariance of
    ``runs`` independent simulated chains after ``steps`` steps (chains start at the minimum,
    so the covariance at step t is Σ − A^t Σ A^tᵀ; choose steps ≫ 1/(ηλ_min)). The standard
    error of entry (i, j) is ``sd(δ_i δ_j) / sqrt(runs)`` (mean is zero by symmetry)."""
    import torch

    from .stability import stationary_covariance

    theory = stationary_covariance(
        torch.as_tensor(H, dtype=torch.float64), torch.as_tensor(C, dtype=torch.float64), lr
    ).numpy()
    d = simulate_stationary(H, C, lr, steps=steps, runs=runs, seed=seed)
    prods = d[:, :, None] * d[:, None, :]
    emp = prods.mean(0)
    se = prods.std(0, ddof=1) / np.sqrt(runs)
    return StationaryCheck(theory, emp, se, (emp - theory) / se, runs)


def gd_divergence_sweep(
    lr_times_lambda: np.ndarray,
    *,
    lr: float = 0.1,
    steps: int = 200,
    runs: int = 200,
    sigma: float = 0.0,
    x0: float = 1.0,
    threshold: float = 1e3,
    seed: int = 0,
) -> np.ndarray:
    """Fraction of runs of 1-D (S)GD ``x_{t+1} = (1 − ηλ) x_t − η ξ_t`` (``ξ ~ N(0, σ²λ)``,
    noise ∝ curvature) with ``|x_t| > threshold`` at some ``t <= steps``, for each value of
    ``ηλ``; ``lr_times_lambda: (G,)`` -> ``(G,)``."""
    q = np.asarray(lr_times_lambda, dtype=float)
    lam = q / lr
    rng = np.random.default_rng(seed)
    x = np.full((q.size, runs), float(x0))
    bad = np.zeros((q.size, runs), dtype=bool)
    sd = sigma * np.sqrt(lam)[:, None]
    for _ in range(check_positive_int("steps", steps)):
        x = (1 - q)[:, None] * x - lr * sd * rng.standard_normal((q.size, runs))
        bad |= np.abs(x) > threshold
        x = np.where(bad, threshold, x)  # freeze diverged runs (avoids overflow)
    return bad.mean(1)


# --------------------------------------------------------------- radius of stability
def _start_directions(dim: int) -> np.ndarray:
    """Start directions ``(K, dim)``: each eigenvector of a diagonal H and their normalised
    sum (the diagonal)."""
    E = np.eye(dim)
    diag = np.ones(dim) / np.sqrt(dim)
    return np.vstack([E, diag[None, :]]) if dim > 1 else E


def quadratic_critical_radii(
    sharpness: np.ndarray,
    *,
    spectrum: Sequence[float] = (1.0, 0.25),
    lr: float,
    sigma: float,
    batch_size: int = 1,
    noise: str = "hessian",
    iso_scale: float = 1.0,
    eps: float = 1.0,
    steps: int,
    runs: int,
    seed: int = 0,
) -> np.ndarray:
    """Per-run critical radius on the quadratic ``L = ½ δᵀHδ``, ``H = ρ diag(spectrum)``
    (``spectrum[0] = 1`` so ρ(H) = ρ), SGD in the Gaussian noise model
    ``δ_{t+1} = (I − ηH) δ_t − η ξ_t``.

    The iterate is affine in the start: ``δ_t = r A^t u + n_t`` with ``n_t`` the noise part
    (independent of r). Run k survives from ``r u`` iff ``‖r a_t + n_t‖ < ε`` for all
    ``1 <= t <= T``; each condition holds on an interval of r, so the surviving set is an
    interval and its right end ``r_k = min_t r_t^+``, with ``r_t^+`` the positive root of
    ``‖a_t‖² r² + 2 (a_t·n_t) r + ‖n_t‖² − ε² = 0`` (``r_k = 0`` if the run leaves the ball
    even from the minimum; capped at ε). The noise is shared across sharpness values and
    start directions (common random numbers).

    Returns ``(G, K, runs)``: G sharpness values, K start directions (eigenvectors, diagonal).
    """
    rho = np.asarray(sharpness, dtype=float)
    spec = np.asarray(spectrum, dtype=float)
    d = spec.size
    U = _start_directions(d)  # (K, d)
    K = U.shape[0]
    lam = rho[:, None] * spec[None, :]  # (G, d)
    sd = _noise_factor(lam.ravel(), noise, sigma, batch_size, iso_scale).reshape(lam.shape)
    fac = 1.0 - lr * lam  # (G, d): A = diag(fac)
    rng = np.random.default_rng(seed)
    # coordinate-first layout (tiny axes last are slow in numpy reductions)
    n = [np.zeros((rho.size, runs)) for _ in range(d)]  # noise part, per coordinate (G, M)
    a = [np.broadcast_to(U[None, :, j], (rho.size, K)).copy() for j in range(d)]  # (G, K)
    crit = np.full((rho.size, K, runs), float(eps))
    for _ in range(check_positive_int("steps", steps)):
        z = rng.standard_normal((d, runs))
        nn = np.zeros((rho.size, runs))
        aa = np.zeros((rho.size, K))
        an = np.zeros((rho.size, K, runs))
        for j in range(d):
            n[j] = fac[:, j, None] * n[j] - lr * sd[:, j, None] * z[j][None, :]
            a[j] = fac[:, j, None] * a[j]
            nn += n[j] ** 2
            aa += a[j] ** 2
            an += a[j][:, :, None] * n[j][:, None, :]
        c = (nn - eps**2)[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            disc = an**2 - aa[:, :, None] * c
            root = (-an + np.sqrt(np.maximum(disc, 0))) / aa[:, :, None]
        root = np.where(aa[:, :, None] > 1e-300, root, np.inf)
        root = np.where(c >= 0, 0.0, root)
        np.minimum(crit, np.maximum(root, 0.0), out=crit)
    return crit


@dataclass
class GaussianWell:
    """Non-quadratic basin ``L(δ) = h (1 − exp(−δᵀHδ / (2h)))``, ``H = ρ diag(spectrum)``:
    curvature H at the minimum, depth h, flat beyond a few widths ``sqrt(h/λ)``.
    ``∇L = exp(−δᵀHδ/(2h)) H δ``. The basin is left when ``δᵀHδ >= wall · h`` (default
    ``wall = 4``: the loss has reached ``h(1 − e^{−2})`` ≈ 0.86 h and along the top direction
    ‖δ‖ = 2 sqrt(h/ρ), twice the inflection point)."""

    depth: float
    spectrum: tuple[float, ...] = (1.0, 0.25)
    wall: float = 4.0

    def loss(self, delta: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """``delta: (..., d)``, ``rho`` broadcastable to ``delta.shape[:-1]``."""
        q = self._q(delta, rho)
        return self.depth * (1 - np.exp(-q / (2 * self.depth)))

    def _q(self, delta: np.ndarray, rho: np.ndarray) -> np.ndarray:
        spec = np.asarray(self.spectrum)
        return (np.asarray(rho)[..., None] * spec * delta**2).sum(-1)

    def grad(self, delta: np.ndarray, rho: np.ndarray) -> np.ndarray:
        spec = np.asarray(self.spectrum)
        Hd = np.asarray(rho)[..., None] * spec * delta
        q = (Hd * delta).sum(-1)
        return np.exp(-q / (2 * self.depth))[..., None] * Hd

    def outside(self, delta: np.ndarray, rho: np.ndarray) -> np.ndarray:
        return self._q(delta, rho) >= self.wall * self.depth

    def wall_radius(self, rho: np.ndarray) -> np.ndarray:
        """Distance from the minimum to the wall along the sharpest direction."""
        return np.sqrt(self.wall * self.depth / (np.asarray(rho) * self.spectrum[0]))


def bisection_critical_radii(
    sharpness: np.ndarray,
    well: GaussianWell,
    *,
    lr: float,
    sigma: float,
    batch_size: int = 1,
    noise: str = "hessian",
    iso_scale: float = 1.0,
    eps: float = 1.0,
    steps: int,
    runs: int,
    iters: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Per-run critical radius on a :class:`GaussianWell` by bisection on r, all runs,
    sharpness values and start directions at once. Escape = ``‖δ_t‖ >= ε`` or leaving the
    basin (``well.outside``) for some ``1 <= t <= T``. Each run keeps its own bracket; the
    noise sequence of run k is the same at every bisection step (common random numbers), so
    the bracket closes on the start radius where run k's outcome switches. Noise as in
    :func:`quadratic_critical_radii` with H the Hessian at the minimum.

    Returns ``(G, K, runs)``; 0 where the run escapes even from the minimum."""
    rho = np.asarray(sharpness, dtype=float)
    spec = np.asarray(well.spectrum, dtype=float)
    d = spec.size
    U = _start_directions(d)
    K = U.shape[0]
    lam = rho[:, None] * spec[None, :]
    sd = _noise_factor(lam.ravel(), noise, sigma, batch_size, iso_scale).reshape(lam.shape)
    steps = check_positive_int("steps", steps)

    scale = [rho[:, None, None] * spec[j] for j in range(d)]  # curvature per coordinate
    noise_sd = [sd[:, j, None, None] for j in range(d)]

    def survives(r: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x = [r * U[None, :, j, None] for j in range(d)]  # per coordinate (G, K, M)
        ok = np.ones(r.shape, dtype=bool)
        for _ in range(steps):
            z = rng.standard_normal((d, runs))
            q = sum(scale[j] * x[j] ** 2 for j in range(d))
            damp = np.exp(-q / (2 * well.depth))
            x = [x[j] - lr * (damp * scale[j] * x[j] + noise_sd[j] * z[j]) for j in range(d)]
            q = sum(scale[j] * x[j] ** 2 for j in range(d))
            ok &= (sum(x[j] ** 2 for j in range(d)) < eps**2) & (q < well.wall * well.depth)
        return ok

    shape = (rho.size, K, runs)
    ok0 = survives(np.zeros(shape))
    hi_ok = survives(np.full(shape, float(eps)))
    lo = np.zeros(shape)
    hi = np.full(shape, float(eps))
    for _ in range(check_positive_int("iters", iters)):
        mid = 0.5 * (lo + hi)
        s = survives(mid)
        lo = np.where(s, mid, lo)
        hi = np.where(s, hi, mid)
    out = np.where(ok0, lo, 0.0)
    return np.where(ok0 & hi_ok, float(eps), out)


def radius_from_critical(
    crit: np.ndarray, delta: float, idx: np.ndarray | None = None
) -> np.ndarray:
    """Radius of stochastic stability from per-run critical radii ``crit: (G, K, M)``.

    From start ``r u_k`` a fraction ``#{m : crit[g,k,m] > r} / M`` of runs stays; it is
    ``>= 1 − δ`` iff r is at most the δ-quantile of ``crit[g, k]`` (lower order statistic);
    the radius is the smallest such quantile over the start directions k. ``idx``: optional
    resampled run indices (bootstrap). Returns ``(G,)``."""
    delta = check_positive("delta", delta)
    c = crit if idx is None else crit[..., idx]
    M = c.shape[-1]
    j = int(np.floor(delta * M))  # largest r with #{crit <= r} <= δM is the (j+1)-th smallest
    j = min(j, M - 1)
    q = np.partition(c, j, axis=-1)[..., j]
    return q.min(-1)


def radius_exponent(
    sharpness: np.ndarray, crit: np.ndarray, delta: float, *, n_boot: int = 500, seed: int = 0
) -> ExponentFit:
    """Fit ``radius ∝ ρ^(−α)`` over the grid points with a positive radius, with a
    percentile bootstrap interval from resampling runs (same resample for every ρ)."""
    return bootstrap_power_law(
        sharpness,
        lambda idx: radius_from_critical(crit, delta, idx),
        crit.shape[-1],
        n_boot=n_boot,
        seed=seed,
    )


# ------------------------------------------------ over-parameterised finite sum (WME)
def mean_square_factor(
    a: np.ndarray,
    lr: float | np.ndarray,
    batch_size: int | np.ndarray,
    *,
    replacement: bool = False,
) -> np.ndarray:
    """One-step second-moment factor of SGD on ``ℓ_i(x) = ½ a_i x²`` (all minimisers at 0):
    ``E[x_{t+1}²] = m E[x_t²]`` with
    ``m = (1 − ηH)² + η² s² / B · f``, ``H = mean a_i``, ``s² = mean a_i² − H²``,
    ``f = (N − B)/(N − 1)`` without replacement, 1 with. Mean-square stable iff ``m <= 1``.
    ``lr`` and ``batch_size`` broadcast."""
    a = np.asarray(a, dtype=float)
    N = a.size
    H = a.mean()
    s2 = (a**2).mean() - H**2
    lr = np.asarray(lr, dtype=float)
    B = np.asarray(batch_size, dtype=float)
    f = np.ones_like(B) if replacement else (N - B) / (N - 1)
    return (1 - lr * H) ** 2 + lr**2 * s2 / B * f


def mean_square_lr_max(a: np.ndarray, batch_size: int, *, replacement: bool = False) -> float:
    """Largest η with :func:`mean_square_factor` ``<= 1``: solving
    ``1 − 2ηH + η²(H² + s² f / B) <= 1`` gives ``η <= 2H / (H² + s² f / B)``
    (``2/H`` for GD, smaller with non-uniformity s)."""
    a = np.asarray(a, dtype=float)
    N, H = a.size, a.mean()
    s2 = (a**2).mean() - H**2
    f = 1.0 if replacement else (N - batch_size) / (N - 1)
    return float(2 * H / (H**2 + s2 * f / batch_size))


def almost_sure_lr_max(
    a: np.ndarray, batch_size: int, lr_grid: np.ndarray, *, num_batches: int = 20000, seed: int = 0
) -> float:
    """Largest η on ``lr_grid`` (sorted) before :func:`almost_sure_rate` first turns positive."""
    grid = np.asarray(lr_grid, dtype=float)
    rate = almost_sure_rate(a, grid, batch_size, num_batches=num_batches, seed=seed)
    bad = np.nonzero(rate >= 0)[0]
    return float(grid[-1] if bad.size == 0 else grid[max(bad[0] - 1, 0)])


def minibatch_means(
    values: np.ndarray,
    batch_size: int,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    replacement: bool = False,
) -> np.ndarray:
    """Means of ``values`` over mini-batches of size B drawn uniformly, one batch per entry of
    ``shape`` (each batch drawn without replacement unless ``replacement``). ``values: (N,)``
    or ``(N, d)`` -> ``shape`` or ``shape + (d,)``."""
    v = np.asarray(values, dtype=float)
    N = v.shape[0]
    B = check_positive_int("batch_size", batch_size)
    if B > N:
        raise ValueError(f"batch_size must be <= N={N}, got {B}")
    count = int(np.prod(shape))
    if replacement:
        idx = rng.integers(0, N, size=(count, B))
    elif B == N:
        idx = np.broadcast_to(np.arange(N), (count, N))
    else:
        idx = np.argpartition(rng.random((count, N)), B - 1, axis=1)[:, :B]
    m = v[idx].mean(1)
    return m.reshape(shape + v.shape[1:])


def almost_sure_rate(
    a: np.ndarray,
    lr: np.ndarray,
    batch_size: int,
    *,
    num_batches: int = 20000,
    replacement: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Lyapunov exponent ``E log|1 − η h_B|`` of ``x_{t+1} = (1 − η h_B) x_t`` with
    ``h_B`` the mini-batch mean of the ``a_i`` (exact for B = 1 and B = N, Monte Carlo over
    ``num_batches`` fresh batches otherwise). Runs converge almost surely iff it is < 0.
    ``lr: (G,)`` -> ``(G,)``."""
    a = np.asarray(a, dtype=float)
    lr = np.atleast_1d(np.asarray(lr, dtype=float))
    N = a.size
    if batch_size == 1:
        h = a
    elif batch_size == N:
        h = np.array([a.mean()])
    else:
        rng = np.random.default_rng(seed)
        h = minibatch_means(a, batch_size, (num_batches,), rng, replacement=replacement)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(1 - lr[:, None] * h[None, :])).mean(1)


def simulate_interpolating(
    a: np.ndarray,
    lrs: np.ndarray,
    batch_sizes: Sequence[int],
    *,
    steps: int,
    runs: int,
    replacement: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """SGD on ``L(x) = (1/N) Σ ½ a_i x²`` from ``x_0 = 1``: ``x_{t+1} = (1 − η h_{B,t}) x_t``.
    Returns ``log|x_T|`` of shape ``(len(batch_sizes), len(lrs), runs)``; the same batches
    are used for every learning rate (common random numbers)."""
    a = np.asarray(a, dtype=float)
    lrs = np.asarray(lrs, dtype=float)
    rng = np.random.default_rng(seed)
    steps = check_positive_int("steps", steps)
    out = np.zeros((len(batch_sizes), lrs.size, runs))
    for i, B in enumerate(batch_sizes):
        h = minibatch_means(a, int(B), (steps, runs), rng, replacement=replacement)
        with np.errstate(divide="ignore"):
            out[i] = np.log(np.abs(1 - lrs[:, None, None] * h[None])).sum(1)
    return out


# ------------------------------------------------------------- sharp and flat minimum
@dataclass
class TwoWells:
    """1-D finite sum with one sharp and one flat minimum of equal depth.

    Per-example loss ``ℓ_i(x) = ½ λ_w (x − c_w − u_i^w)²`` on side w of the ridge
    ``x_r`` (w = sharp for x < x_r, flat otherwise), with per-example offsets
    ``u_i^w = σ z_i^w / sqrt(λ_w)`` and ``z^w`` standardised data (mean 0, mean square 1).
    Then ``L(x) = ½ λ_w (x − c_w)² + σ²/2`` on side w: minima exactly at ``c_s``, ``c_f``
    with curvatures ``λ_s``, ``λ_f`` and the same depth σ²/2; ``x_r`` is where the two
    parabolas meet, so L is continuous. The per-example gradient noise on side w has variance
    ``λ_w² Var(u^w) = σ² λ_w``: proportional to the local Hessian."""

    lam_sharp: float = 8.0
    lam_flat: float = 1.0
    c_sharp: float = -1.0
    c_flat: float = 1.0
    sigma: float = 1.0
    n: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("lam_sharp", self.lam_sharp)
        check_positive("lam_flat", self.lam_flat)
        if not self.c_sharp < self.c_flat:
            raise ValueError(f"c_sharp must be < c_flat, got {self.c_sharp}, {self.c_flat}")
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal((2, check_positive_int("n", self.n)))
        z = z - z.mean(1, keepdims=True)
        z = z / np.sqrt((z**2).mean(1, keepdims=True))
        self.u_sharp = self.sigma * z[0] / np.sqrt(self.lam_sharp)
        self.u_flat = self.sigma * z[1] / np.sqrt(self.lam_flat)

    @property
    def ridge(self) -> float:
        ss, sf = np.sqrt(self.lam_sharp), np.sqrt(self.lam_flat)
        return float((ss * self.c_sharp + sf * self.c_flat) / (ss + sf))

    @property
    def barrier(self) -> float:
        """Height of the ridge above either minimum."""
        return float(0.5 * self.lam_sharp * (self.ridge - self.c_sharp) ** 2)

    def loss(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        sharp = x < self.ridge
        q = np.where(
            sharp, self.lam_sharp * (x - self.c_sharp) ** 2, self.lam_flat * (x - self.c_flat) ** 2
        )
        return 0.5 * q + 0.5 * self.sigma**2

    def example_losses(self, x: float) -> np.ndarray:
        """``(N,)`` per-example losses at the scalar x (their mean is ``loss(x)``)."""
        if x < self.ridge:
            return 0.5 * self.lam_sharp * (x - self.c_sharp - self.u_sharp) ** 2
        return 0.5 * self.lam_flat * (x - self.c_flat - self.u_flat) ** 2

    def grad(self, x: np.ndarray) -> np.ndarray:
        sharp = x < self.ridge
        return np.where(
            sharp, self.lam_sharp * (x - self.c_sharp), self.lam_flat * (x - self.c_flat)
        )

    def minibatch_grad(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``x: (M,)``, ``idx: (M, B)`` example indices -> ``(M,)`` mini-batch gradients."""
        sharp = x < self.ridge
        us = self.u_sharp[idx].mean(1)
        uf = self.u_flat[idx].mean(1)
        return np.where(
            sharp,
            self.lam_sharp * (x - self.c_sharp - us),
            self.lam_flat * (x - self.c_flat - uf),
        )

    def noise_variance(self, x: float, batch_size: int) -> float:
        """Variance of the mini-batch gradient (with replacement) at x: ``σ² λ_w / B``."""
        lam = self.lam_sharp if x < self.ridge else self.lam_flat
        return float(self.sigma**2 * lam / batch_size)


def basin_selection(
    wells: TwoWells,
    *,
    lr: float,
    batch_size: int,
    steps: int,
    runs: int,
    start_halfwidth: float | None = None,
    methods: Sequence[str] = ("gd", "isotropic", "sgd"),
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Where runs end: starts uniform on ``[x_r − w, x_r + w]`` (``w`` = distance from the
    ridge to the sharp minimum unless given; GD then splits the starts 50/50), ``steps``
    steps of each method, final iterate classified by the side of the ridge.

    Methods: "gd" (full gradient), "isotropic" (full gradient + ``N(0, v)`` with
    ``v = σ² (λ_s + λ_f) / (2B)``: the SGD noise variance averaged over the two minima, i.e.
    matched trace), "sgd" (mini-batches of size B drawn with replacement from the finite
    sum). Returns per method: fraction in the flat minimum, its Wilson 95% interval, count."""
    w = wells.ridge - wells.c_sharp if start_halfwidth is None else float(start_halfwidth)
    rng0 = np.random.default_rng(seed)
    x_start = wells.ridge + rng0.uniform(-w, w, size=runs)
    iso_sd = np.sqrt(wells.sigma**2 * (wells.lam_sharp + wells.lam_flat) / (2 * batch_size))
    out: dict[str, dict[str, float]] = {}
    for j, method in enumerate(methods):
        check_choice("method", method, ("gd", "isotropic", "sgd"))
        rng = np.random.default_rng([seed, j + 1])
        x = x_start.copy()
        for _ in range(check_positive_int("steps", steps)):
            if method == "gd":
                g = wells.grad(x)
            elif method == "isotropic":
                g = wells.grad(x) + iso_sd * rng.standard_normal(runs)
            else:
                g = wells.minibatch_grad(x, rng.integers(0, wells.n, size=(runs, batch_size)))
            x = x - lr * g
        k = int((x >= wells.ridge).sum())
        lo, hi = wilson_interval(k, runs)
        out[method] = {"flat": k / runs, "low": float(lo), "high": float(hi), "count": k}
    return out


# ------------------------------------------------------------------- strict saddle (ch. 7)
@dataclass
class SaddleProblem:
    """``L(x, y) = ½ x² − ½ γ y² + y⁴/4``: a strict saddle at 0 (Hessian diag(1, −γ),
    negative-curvature direction ``e_min = e_y``), minima at ``(0, ±sqrt γ)``, stable
    manifold ``y = 0``.

    Finite sum: ``ℓ_i(x, y) = L(x, y) + b_i x + a_i y`` with centred data
    (``Σ a_i = Σ b_i = 0``, ``mean a_i² = s_y²``, ``mean b_i² = s_x²``), so the mean loss is L
    exactly and the per-example gradient along e_min at the saddle is ``a_i``:
    ``E[(e_minᵀ ∇ℓ_i)²] = s_y² > 0`` (correlated negative curvature with γ_CNC = s_y²)."""

    gamma: float = 1.0
    n: int = 64
    s_x: float = 0.3
    s_y: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("gamma", self.gamma)
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal((2, check_positive_int("n", self.n)))
        z = z - z.mean(1, keepdims=True)
        z = z / np.sqrt((z**2).mean(1, keepdims=True))
        self.b = self.s_x * z[0]
        self.a = self.s_y * z[1]

    def loss(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * x**2 - 0.5 * self.gamma * y**2 + 0.25 * y**4

    def grad(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, -self.gamma * y + y**3

    def example_grads(self, x: float, y: float) -> np.ndarray:
        """``(N, 2)`` per-example gradients at one point."""
        gx, gy = self.grad(np.asarray(x), np.asarray(y))
        return np.stack([gx + self.b, gy + self.a], axis=1)

    def noise_variance_along_emin(self, batch_size: int, *, replacement: bool = False) -> float:
        """``E[(e_minᵀ(g_B − ḡ))²] = s_y² / B · (N − B)/(N − 1)`` (without replacement) or
        ``s_y² / B`` (with); the same at every point since the perturbation is linear."""
        B = check_positive_int("batch_size", batch_size)
        f = 1.0 if replacement else (self.n - B) / (self.n - 1)
        return float(self.s_y**2 / B * f)


def matched_isotropic_sigma(problem: SaddleProblem, batch_size: int) -> float:
    """Per-coordinate std of isotropic noise with the trace of the mini-batch covariance:
    ``σ² = (s_x² + s_y²) f / (2B)``, ``f = (N − B)/(N − 1)``."""
    B = check_positive_int("batch_size", batch_size)
    f = (problem.n - B) / (problem.n - 1)
    return float(np.sqrt((problem.s_x**2 + problem.s_y**2) * f / (2 * B)))


def noise_along_direction(
    problem: SaddleProblem,
    batch_size: int,
    direction: np.ndarray,
    *,
    point: tuple[float, float] = (0.0, 0.0),
    num_samples: int = 20000,
    replacement: bool = False,
    seed: int = 0,
) -> tuple[float, float]:
    """Monte Carlo ``E[(vᵀ(g_B − ḡ))²]`` over ``num_samples`` mini-batches at ``point`` and
    its standard error. ``direction: (2,)`` unit vector."""
    G = problem.example_grads(*point)
    gbar = G.mean(0)
    rng = np.random.default_rng(seed)
    gb = minibatch_means(G, batch_size, (num_samples,), rng, replacement=replacement)
    p = ((gb - gbar) @ np.asarray(direction, dtype=float)) ** 2
    return float(p.mean()), float(p.std(ddof=1) / np.sqrt(num_samples))


def saddle_escape_times(
    problem: SaddleProblem,
    method: str,
    *,
    lr: float,
    steps: int,
    runs: int,
    sigma: float = 0.0,
    batch_size: int = 1,
    x0: float = 1.0,
    y_escape: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """First step t with ``|y_t| >= y_escape`` (default ``sqrt(γ)/2``) from ``(x0, 0)``, on
    the stable manifold. ``method``: "gd"; "isotropic" (gradient + ``N(0, σ² I)``); "sgd"
    (mini-batches of size B without replacement from the finite sum). Runs that have not
    escaped after ``steps`` steps get ``inf``. Returns ``(runs,)``."""
    check_choice("method", method, ("gd", "isotropic", "sgd"))
    y_esc = 0.5 * np.sqrt(problem.gamma) if y_escape is None else float(y_escape)
    rng = np.random.default_rng(seed)
    x = np.full(runs, float(x0))
    y = np.zeros(runs)
    t_esc = np.full(runs, np.inf)
    ab = np.stack([problem.b, problem.a], axis=1)
    for t in range(1, check_positive_int("steps", steps) + 1):
        gx, gy = problem.grad(x, y)
        if method == "isotropic":
            xi = sigma * rng.standard_normal((runs, 2))
            gx, gy = gx + xi[:, 0], gy + xi[:, 1]
        elif method == "sgd" and batch_size < problem.n:
            m = minibatch_means(ab, batch_size, (runs,), rng)
            gx, gy = gx + m[:, 0], gy + m[:, 1]
        x = x - lr * gx
        y = y - lr * gy
        hit = (np.abs(y) >= y_esc) & np.isinf(t_esc)
        t_esc[hit] = t
        if not np.isinf(t_esc).any():
            break
    return t_esc


def predicted_escape_time(
    sigma_y: np.ndarray | float,
    *,
    lr: float,
    gamma: float,
    y_escape: float | None = None,
    statistic: str = "mean",
) -> np.ndarray:
    """Escape time from the linearised growth ``y_{t+1} = a y_t − η ξ_t``, ``a = 1 + ηγ``,
    ``Var ξ = σ_y²``: ``y_t ≈ a^t Y`` with ``Y ~ N(0, η²σ_y²/(a² − 1))``, so
    ``t = log(y_esc sqrt(a² − 1) / (η σ_y |Z|)) / log a + c_cubic``, ``Z ~ N(0, 1)``, with
    ``c_cubic = log(γ/(γ − y_esc²)) / (2 log a)`` from the cubic term on the last stretch.
    ``statistic``: "mean" uses ``E log|Z| = −(γ_E + log 2)/2``, "median" ``|Z| = 0.6745``.
    Each e-fold of σ_y costs ``1/log a ≈ 1/(ηγ)`` steps."""
    check_choice("statistic", statistic, ("mean", "median"))
    y_esc = 0.5 * np.sqrt(gamma) if y_escape is None else float(y_escape)
    a = 1 + lr * gamma
    s = np.asarray(sigma_y, dtype=float)
    log_z = -(EULER_GAMMA + np.log(2)) / 2 if statistic == "mean" else np.log(0.6744897501960817)
    with np.errstate(divide="ignore"):
        base = (np.log(y_esc * np.sqrt(a**2 - 1) / (lr * s)) - log_z) / np.log(a)
    cubic = np.log(gamma / (gamma - y_esc**2)) / (2 * np.log(a))
    return base + cubic


def escape_law_fit(
    sigmas: np.ndarray, times: np.ndarray, *, n_boot: int = 500, seed: int = 0
) -> tuple[float, float, float]:
    """Slope of mean escape time against ``log(1/σ)`` (steps per e-fold) with a percentile
    bootstrap 95% interval resampling runs. ``times: (G, runs)`` finite escape times."""
    s = np.asarray(sigmas, dtype=float)
    t = np.asarray(times, dtype=float)
    if not np.isfinite(t).all():
        raise ValueError("escape_law_fit needs every run to escape (no inf times)")
    xs = np.log(1 / s)
    slope = float(np.polyfit(xs, t.mean(1), 1)[0])
    rng = np.random.default_rng(seed)
    boots = [
        np.polyfit(xs, t[:, rng.integers(0, t.shape[1], t.shape[1])].mean(1), 1)[0]
        for _ in range(check_positive_int("n_boot", n_boot))
    ]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return slope, float(lo), float(hi)
