"""Chapter 4, stochastic stability and sharpness: toy landscapes, vectorised simulations,
the chapter's parameters and the functions that turn its numbers into verdicts.

Every simulation runs many independent runs at once as numpy float64 arrays (runs on the
leading axes) and is seeded through ``numpy.random.default_rng(seed)``.

**Contents**

Parameters
    :class:`Params` (one declaration of every parameter of ``book/chapters/ch04_stability``).
Quadratic with noise ∝ H
    The Gaussian noise model: a stochastic gradient ``g = H δ + ξ`` with ``ξ ~ N(0, C)``,
    ``C = σ² H / B`` ("hessian") or ``C = σ_iso² I / B`` ("isotropic").
    :func:`simulate_stationary`, :func:`stationary_check`, :func:`gd_divergence_sweep`,
    :func:`stationary_std`, :func:`quadratic_critical_radii` (exact per-run radius),
    :class:`GaussianWell` and :func:`bisection_critical_radii` (non-quadratic basin),
    :func:`radius_from_critical`, :func:`radius_exponent`.
Over-parameterised finite sum (Wu, Ma & E 2018)
    ``ℓ_i(x) = ½ a_i x²`` with ``a_i >= 0``; :func:`mean_square_factor`,
    :func:`almost_sure_rate`, :func:`simulate_interpolating` (mini-batch means from
    :func:`sgdnoise.covariance.minibatch_means`).
Sharp and flat minimum
    :class:`TwoWells`, :func:`basin_selection`.
Anisotropic against isotropic noise (Zhu et al. 2019)
    :func:`escape_efficiency`, :func:`stationary_energy`, :func:`noise_shapes`,
    :func:`anisotropic_escape` (through the Hessian wall or a Euclidean ball).
The chapter's studies (what the notebook calls)
    :func:`lyapunov_study`, :func:`divergence_study`, :func:`radius_study`,
    :func:`wme_study`, :func:`wells_study`, :func:`anisotropy_study`.
Decision rules and their error rates
    :func:`difference_pvalue` (two fractions of runs), :func:`comparison_codes`,
    :func:`basin_codes`, :func:`exponent_codes` (an exponent against a band around 1), and
    :func:`comparison_rates`, :func:`basin_rates`, :func:`exponent_rates`, which measure a
    rule's false-positive rate and power with :func:`sgdnoise.decide.harness.error_rates`
    (:class:`RuleRates`).
Verdicts (numbers in, :class:`sgdnoise.report.Verdict` out; thresholds are arguments)
    Derivation checks: :func:`lyapunov_verdict`, :func:`linear_boundary_verdict`,
    :func:`wme_verdict`. Claims about SGD: :func:`radius_verdict`, :func:`basin_verdict`,
    :func:`anisotropy_verdict`, :func:`mechanism_verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sgdnoise.covariance import minibatch_means
from sgdnoise.decide.harness import Scenario, error_rates, rate_of
from sgdnoise.decide.pvalues import holm
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import KINDS, Verdict
from sgdnoise.stats import ExponentFit, bootstrap_power_law, wilson_interval
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "AnisotropyStudy",
    "DivergenceStudy",
    "GaussianWell",
    "OUTCOME_CODES",
    "Params",
    "RadiusStudy",
    "RuleRates",
    "StationaryCheck",
    "TwoWells",
    "WMEStudy",
    "WellsStudy",
    "almost_sure_lr_max",
    "almost_sure_rate",
    "anisotropic_escape",
    "anisotropy_study",
    "anisotropy_verdict",
    "basin_codes",
    "basin_rates",
    "basin_selection",
    "basin_verdict",
    "bisection_critical_radii",
    "comparison_codes",
    "comparison_rates",
    "difference_pvalue",
    "divergence_study",
    "escape_efficiency",
    "exponent_codes",
    "exponent_rates",
    "gd_divergence_sweep",
    "linear_boundary_verdict",
    "lyapunov_study",
    "lyapunov_verdict",
    "matched_iso_scale",
    "mean_square_factor",
    "mean_square_lr_max",
    "mechanism_verdict",
    "noise_shapes",
    "quadratic_critical_radii",
    "radius_exponent",
    "radius_from_critical",
    "radius_lines",
    "radius_study",
    "radius_verdict",
    "rule_rates",
    "simulate_interpolating",
    "simulate_stationary",
    "stationary_check",
    "stationary_energy",
    "stationary_std",
    "wells_study",
    "wme_curvatures",
    "wme_study",
    "wme_verdict",
]

CHAPTER = "ch04_stability"


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 4 (values: the notebook's parameters cell and
    ``book/params/ch04_stability/{smoke,default,full}.yaml``)."""

    seed: int = param(low=0, doc="seed of every simulation")
    lr: float = param(low=1e-6, doc="learning rate η of every toy problem")
    confidence: float = param(low=0.5, high=0.999, doc="level of the intervals in tables "
                              "and figures")
    alpha: float = param(low=1e-4, high=0.25, doc="level of every test behind a verdict")
    rate_sims: int = param(low=100, doc="simulated data sets per truth when a rule's error "
                           "rates are measured")
    count_effect: float = param(low=1e-3, high=0.5, doc="difference of two fractions of runs "
                                "at which a comparison's power is measured")
    # 4.2 Lyapunov check
    lyap_hessian: tuple[float, ...] = param(min_len=3, doc="H11, H12, H22 of the 2x2 check")
    lyap_sigma: float = param(low=1e-9, doc="σ of the noise C = σ²H in the Lyapunov check")
    lyap_runs: int = param(low=100, doc="independent chains of the Lyapunov check")
    lyap_steps: int = param(low=10, doc="steps of each chain")
    lyap_z_max: float = param(low=0.5, doc="largest |z| (standard errors) called agreement")
    # 4.2 linear-stability limit
    div_q_min: float = param(low=0.0, doc="smallest ηλ of the divergence sweep")
    div_q_max: float = param(low=0.0, doc="largest ηλ of the divergence sweep")
    div_num: int = param(low=3, doc="grid points of the divergence sweep")
    div_steps: int = param(low=1, doc="steps of each divergence run")
    div_runs: int = param(low=1, doc="runs per ηλ")
    div_x0: float = param(low=1e-9, doc="start x₀ of the divergence runs")
    div_threshold: float = param(low=1.0, doc="|x_t| above which a run counts as diverged")
    div_margin: float = param(low=0.0, high=0.5, doc="band |ηλ − 2| left out of the verdict")
    div_below_max: float = param(low=0.0, high=1.0,
                                 doc="largest diverged fraction allowed below the band")
    div_above_min: float = param(low=0.0, high=1.0,
                                 doc="smallest diverged fraction required above the band")
    # 4.3 radius of stability
    spectrum: tuple[float, ...] = param(low=1e-6, high=1.0, doc="H = ρ diag(spectrum)")
    radius_eps: float = param(low=1e-9, doc="tolerance ε of the definition")
    radius_delta: float = param(low=1e-4, high=0.5, doc="failure probability δ")
    radius_sigma: float = param(low=1e-9, doc="σ of the noise ∝ H")
    iso_sigma: float = param(low=1e-9, doc="σ_iso of the isotropic noise")
    radius_steps: int = param(low=1, doc="horizon T of the quadratic")
    radius_runs: int = param(low=20, doc="runs per sharpness (quadratic)")
    sharpness_min: float = param(low=1e-9, doc="smallest ρ(H)")
    sharpness_max: float = param(low=1e-9, doc="largest ρ(H)")
    num_sharpness: int = param(low=3, doc="ρ grid points (log-spaced)")
    well_depth: float = param(low=1e-9, doc="depth h of the Gaussian well")
    well_wall: float = param(low=1e-3, doc="basin left when δᵀHδ >= wall · h")
    well_sigma: float = param(low=1e-9, doc="σ of the noise ∝ H in the well")
    well_runs: int = param(low=20, doc="runs per sharpness (well)")
    well_steps: int = param(low=1, doc="horizon T of the well")
    bisection_iters: int = param(low=4, high=60, doc="bisection steps per run")
    n_boot: int = param(low=10, doc="bootstrap resamples of the exponent")
    radius_fit_max: float = param(low=0.01, high=1.99, doc="largest ηρ in the exponent fit "
                                  "(the small-step range the claim is about)")
    radius_margin: float = param(low=0.01, high=0.99, doc="half-width of the band around "
                                 "α = 1 that counts as inversely proportional")
    # 4.4 Wu, Ma & E
    wme_n: int = param(low=2, doc="examples N of the interpolating finite sum")
    wme_runs: int = param(low=10, doc="runs per (B, η)")
    wme_steps: int = param(low=10, doc="steps T per run")
    wme_lr_max: float = param(low=1e-6, doc="largest η of the phase diagram")
    wme_num_lrs: int = param(low=3, doc="η grid points")
    wme_batch_sizes: tuple[int, ...] = param(low=1, doc="batch sizes B")
    wme_as_grid: int = param(low=10, doc="η grid points for the almost-sure boundary")
    wme_as_batches: int = param(low=100, doc="Monte Carlo batches per almost-sure rate")
    wme_edge_fraction: float = param(low=0.01, high=0.99,
                                     doc="diverged fraction that defines the simulated edge")
    wme_tol_steps: float = param(low=0.0, doc="agreement tolerance in η-grid steps")
    # 4.5 sharp and flat minimum
    wells_n: int = param(low=2, doc="examples N of the two-well finite sum")
    wells_lam_sharp: float = param(low=1e-6, doc="curvature of the sharp minimum")
    wells_lam_flat: float = param(low=1e-6, doc="curvature of the flat minimum")
    wells_c_sharp: float = param(doc="position of the sharp minimum")
    wells_c_flat: float = param(doc="position of the flat minimum")
    wells_sigma: float = param(low=1e-9, doc="σ: per-example gradient variance σ²λ")
    wells_batch_size: int = param(low=1, doc="SGD batch size B")
    wells_runs: int = param(low=20, doc="runs per method")
    wells_steps: int = param(low=1, doc="steps T per run")
    # 4.6 anisotropic vs isotropic noise
    aniso_dim: int = param(low=2, doc="dimension d of the sharp basin")
    aniso_top: float = param(low=1e-6, doc="largest Hessian eigenvalue λ_1 of the basin")
    aniso_bulk: float = param(low=1e-6, doc="the other d − 1 eigenvalues")
    aniso_depth: float = param(low=1e-9, doc="depth h of the basin")
    aniso_wall: float = param(low=1e-3, doc="basin left when δᵀHδ >= wall · h")
    aniso_traces: tuple[float, ...] = param(low=1e-12, doc="noise traces tr Σ compared")
    aniso_runs: int = param(low=20, doc="runs per (noise, trace)")
    aniso_radius: float = param(low=1e-6, doc="radius of the Euclidean exit ‖δ‖ >= radius")
    aniso_steps: int = param(low=1, doc="horizon T of each run")

    def check(self) -> None:
        self.require(self.sharpness_min < self.sharpness_max, "sharpness_min",
                     f"must be < sharpness_max={self.sharpness_max}")
        self.require(self.sharpness_max * self.lr < 2, "sharpness_max",
                     f"must satisfy lr * sharpness_max < 2 (linear stability), lr={self.lr}")
        self.require(self.lr * self.sharpness_min <= self.radius_fit_max, "radius_fit_max",
                     f"must be >= lr * sharpness_min = {self.lr * self.sharpness_min:g} (the "
                     "fit range must hold grid points)")
        self.require(max(self.wme_batch_sizes) <= self.wme_n, "wme_batch_sizes",
                     f"must be <= wme_n={self.wme_n}")
        self.require(len(self.lyap_hessian) == 3, "lyap_hessian",
                     "must hold exactly three numbers H11, H12, H22")
        h11, h12, h22 = (self.lyap_hessian + (0.0, 0.0, 0.0))[:3]
        self.require(h11 > 0 and h11 * h22 > h12**2, "lyap_hessian",
                     "must be positive definite (H11 > 0, H11 H22 > H12²)")
        self.require(self.lr * max(np.linalg.eigvalsh([[h11, h12], [h12, h22]])) < 2,
                     "lyap_hessian", f"must satisfy lr * λ_max < 2, lr={self.lr}")
        self.require(self.div_q_min < 2 - self.div_margin < 2 + self.div_margin < self.div_q_max,
                     "div_q_min", f"the sweep [div_q_min, div_q_max={self.div_q_max}] must "
                     f"straddle 2 ± div_margin={self.div_margin}")
        self.require(self.spectrum[0] == 1.0, "spectrum",
                     "must start with 1 (so that ρ(H) = ρ) and hold values in (0, 1]")
        self.require(self.wells_c_sharp < self.wells_c_flat, "wells_c_sharp",
                     f"must be < wells_c_flat={self.wells_c_flat}")
        self.require(self.lr * self.wells_lam_sharp < 2, "wells_lam_sharp",
                     f"must satisfy lr * wells_lam_sharp < 2 (GD keeps both minima), "
                     f"lr={self.lr}")
        self.require(self.wells_batch_size <= self.wells_n, "wells_batch_size",
                     f"must be <= wells_n={self.wells_n}")
        self.require(self.aniso_bulk < self.aniso_top, "aniso_bulk",
                     f"must be < aniso_top={self.aniso_top} (one sharp direction)")
        self.require(self.lr * self.aniso_top < 2, "aniso_top",
                     f"must satisfy lr * aniso_top < 2, lr={self.lr}")

    @property
    def scale(self) -> str:
        """What stands behind every number of the chapter."""
        return f"toy simulations on a laptop CPU, {self.profile} profile"


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

    def table(self) -> pd.DataFrame:
        """The three distinct entries of a 2 × 2 check: theory, simulation, s.e., z."""
        ij = [(0, 0), (0, 1), (1, 1)]
        return pd.DataFrame({
            "entry": ["Σ11", "Σ12", "Σ22"],
            "Lyapunov": [self.theory[i, j] for i, j in ij],
            "simulated": [self.empirical[i, j] for i, j in ij],
            "std. error": [self.stderr[i, j] for i, j in ij],
            "z": [self.z[i, j] for i, j in ij],
        })


def stationary_check(
    H: np.ndarray, C: np.ndarray, lr: float, *, steps: int, runs: int, seed: int = 0
) -> StationaryCheck:
    """Compare ``sgdnoise.stability.stationary_covariance(H, C, η)`` with the covariance of
    ``runs`` independent simulated chains after ``steps`` steps (chains start at the minimum,
    so the covariance at step t is Σ − A^t Σ A^tᵀ; choose steps ≫ 1/(ηλ_min)). The standard
    error of entry (i, j) is ``sd(δ_i δ_j) / sqrt(runs)`` (mean is zero by symmetry)."""
    import torch

    from sgdnoise.stability import stationary_covariance

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
    sharpness: np.ndarray,
    crit: np.ndarray,
    delta: float,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
    keep: np.ndarray | None = None,
    cap: float | None = None,
) -> ExponentFit:
    """Fit ``radius ∝ ρ^(−α)`` over the grid points ``keep`` (all when None) whose radius is
    positive and, with ``cap``, below it (a radius equal to ε says every start of the ball
    survives: it is censored, not measured), with a percentile bootstrap interval
    (two-sided, ``level``) from resampling runs (same resample for every ρ).
    ``sharpness: (G,)``, ``crit: (G, K, M)``, ``keep: (G,)`` bool."""
    r0 = radius_from_critical(crit, delta)
    use = np.ones(r0.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if cap is not None:
        use &= r0 < cap * (1 - 1e-9)

    def curve(idx: np.ndarray | None) -> np.ndarray:
        return np.where(use, radius_from_critical(crit, delta, idx), 0.0)

    return bootstrap_power_law(sharpness, curve, crit.shape[-1], n_boot=n_boot,
                               level=level, seed=seed)


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
    z: float = 1.96,
) -> dict[str, dict[str, float]]:
    """Where runs end: starts uniform on ``[x_r − w, x_r + w]`` (``w`` = distance from the
    ridge to the sharp minimum unless given; GD then splits the starts 50/50), ``steps``
    steps of each method, final iterate classified by the side of the ridge.

    Methods: "gd" (full gradient), "isotropic" (full gradient + ``N(0, v)`` with
    ``v = σ² (λ_s + λ_f) / (2B)``: the SGD noise variance averaged over the two minima, i.e.
    matched trace), "sgd" (mini-batches of size B drawn with replacement from the finite
    sum). Returns per method: fraction in the flat minimum, its Wilson interval (normal
    quantile ``z``; 1.96 gives 95%), count and runs."""
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
        lo, hi = wilson_interval(k, runs, z)
        out[method] = {"flat": k / runs, "low": float(lo), "high": float(hi), "count": k,
                       "runs": runs}
    return out


# ------------------------------------------------- anisotropic vs isotropic (Zhu et al.)
def escape_efficiency(hessian_eigs: np.ndarray, noise_variances: np.ndarray) -> float:
    """Zhu et al. (2019)'s escape efficiency at a minimum, ``tr(HΣ) = Σ_i λ_i Σ_ii`` for a
    diagonal H and Σ in the same eigenbasis: to second order the expected loss increase of
    one noise kick ``−ηξ`` is ``(η²/2) tr(HΣ)``. ``hessian_eigs, noise_variances: (d,)``."""
    lam, var = _same_length(hessian_eigs, noise_variances)
    return float((lam * var).sum())


def stationary_energy(hessian_eigs: np.ndarray, noise_variances: np.ndarray,
                      lr: float) -> float:
    """``E[δᵀHδ]`` of the stationary law of ``δ_{t+1} = (I − ηH) δ_t − η ξ_t`` with
    ``Cov ξ = diag(v)`` in H's eigenbasis: per direction the Lyapunov equation gives
    ``Var δ_i = η v_i / (λ_i (2 − ηλ_i))``, so

        E[δᵀHδ] = Σ_i η v_i / (2 − ηλ_i) ≈ η tr Σ / 2   (ηλ_i ≪ 1),

    the same for every shape of Σ of a given trace. ``hessian_eigs, noise_variances:
    (d,)``; needs ``0 < ηλ_i < 2``."""
    lam, var = _same_length(hessian_eigs, noise_variances)
    q = lr * lam
    if not ((q > 0) & (q < 2)).all():
        raise ValueError(f"every lr * eigenvalue must be in (0, 2), got {q.tolist()}")
    return float((lr * var / (2 - q)).sum())


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(a, dtype=float)
    var = np.asarray(b, dtype=float)
    if lam.shape != var.shape or lam.ndim != 1:
        raise ValueError(f"hessian_eigs and noise_variances must be 1-D of equal length, "
                         f"got {lam.shape} and {var.shape}")
    return lam, var


EXITS = ("Hessian wall", "Euclidean ball")


def anisotropic_escape(
    hessian_eigs: np.ndarray,
    noise_variances: np.ndarray,
    *,
    depth: float,
    wall: float,
    lr: float,
    steps: int,
    runs: int,
    seed: int = 0,
    exit: str = "Hessian wall",
    radius: float = 1.0,
) -> np.ndarray:
    """First exit step from the basin ``L(δ) = h (1 − exp(−δᵀHδ / 2h))``, ``H = diag(λ)``,
    of GD + Gaussian noise ``δ_{t+1} = δ_t − η (∇L(δ_t) + ξ_t)``, ``ξ_t ~ N(0, diag(v))``,
    started at the minimum. ``exit``: "Hessian wall" (``δᵀHδ >= wall · h``, the basin's
    own level set) or "Euclidean ball" (``‖δ‖ >= radius``, a distance in parameter space).
    ``hessian_eigs, noise_variances: (d,)``. Returns ``(runs,)`` exit steps, ``inf`` for
    runs still inside after ``steps``."""
    lam = np.asarray(hessian_eigs, dtype=float)
    sd = np.sqrt(np.asarray(noise_variances, dtype=float))
    depth = check_positive("depth", depth)
    check_choice("exit", exit, EXITS)
    weight = lam if exit == EXITS[0] else np.ones_like(lam)
    level = wall * depth if exit == EXITS[0] else check_positive("radius", radius) ** 2
    rng = np.random.default_rng(seed)
    d = np.zeros((runs, lam.size))
    t_exit = np.full(runs, np.inf)
    for t in range(1, check_positive_int("steps", steps) + 1):
        q = (lam * d**2).sum(1)
        grad = np.exp(-q / (2 * depth))[:, None] * lam * d
        d = d - lr * (grad + sd * rng.standard_normal(d.shape))
        out = ((weight * d**2).sum(1) >= level) & np.isinf(t_exit)
        t_exit[out] = t
        d[~np.isinf(t_exit)] = 0.0  # park exited runs (their time is recorded)
    return t_exit


#: The noise shapes of section 4.6, all of the same trace: along H (``Σ ∝ H``), isotropic
#: (``Σ ∝ I``) and rank one along one flat eigen-direction (the control).
NOISE_KINDS = ("aligned with H", "isotropic", "one flat direction")
NOISE_NAMES = {NOISE_KINDS[0]: "aligned noise", NOISE_KINDS[1]: "isotropic noise",
               NOISE_KINDS[2]: "noise along one flat direction"}


def noise_shapes(eigs: np.ndarray, trace: float) -> dict[str, np.ndarray]:
    """The variances ``diag Σ: (d,)`` of every kind of :data:`NOISE_KINDS` with
    ``tr Σ = trace``: ``trace · λ/Σλ``, ``trace/d`` each, and ``trace`` on the last (a flat)
    eigen-direction."""
    eigs = np.asarray(eigs, dtype=float)
    flat = np.zeros_like(eigs)
    flat[-1] = trace
    return {NOISE_KINDS[0]: trace * eigs / eigs.sum(),
            NOISE_KINDS[1]: np.full(eigs.size, trace / eigs.size), NOISE_KINDS[2]: flat}


@dataclass
class AnisotropyStudy:
    """Escape from a sharp basin with noise of one trace in three shapes and through two
    exits. ``traces: (K,)``; ``times[(kind, exit)]: (K, runs)`` exit steps (inf: stayed);
    ``efficiency[kind]``, ``energy[kind]: (K,)``: tr(HΣ) and the stationary E[δᵀHδ]."""

    eigs: np.ndarray
    traces: np.ndarray
    times: dict[tuple[str, str], np.ndarray]
    efficiency: dict[str, np.ndarray]
    energy: dict[str, np.ndarray]
    confidence: float

    @property
    def runs(self) -> int:
        return int(next(iter(self.times.values())).shape[1])

    def escaped(self, kind: str, exit: str = EXITS[0]) -> np.ndarray:
        """Number of runs that left, per trace: ``(K,)`` integers."""
        return np.isfinite(self.times[(kind, exit)]).sum(1)

    def table(self) -> pd.DataFrame:
        """One row per (trace, kind): tr(HΣ), stationary E[δᵀHδ], the escaped fraction
        through each exit with its Wilson interval (``low``, ``high``: Hessian wall) and the
        median exit step through the Hessian wall (inf: most runs stayed)."""
        rows = []
        z = _z(self.confidence)
        for k, tr in enumerate(self.traces):
            for kind in NOISE_KINDS:
                esc = self.escaped(kind)[k]
                lo, hi = wilson_interval(esc, self.runs, z)
                rows.append({"tr Σ": tr, "noise": kind, "tr(HΣ)": self.efficiency[kind][k],
                             "E[δᵀHδ]": self.energy[kind][k], "escaped": esc / self.runs,
                             "low": float(lo), "high": float(hi),
                             "escaped (Euclidean)": self.escaped(kind, EXITS[1])[k] / self.runs,
                             "median exit step": float(np.median(self.times[(kind,
                                                                            EXITS[0])][k]))})
        return pd.DataFrame(rows)


def anisotropy_study(P: Params) -> AnisotropyStudy:
    """Section 4.6: for each trace T in ``P.aniso_traces`` the three shapes of
    :func:`noise_shapes` on the basin ``H = diag(aniso_top, aniso_bulk, …)``,
    ``aniso_runs`` runs of :func:`anisotropic_escape` through each exit (the Hessian wall
    and the Euclidean ball of radius ``aniso_radius``; common seeds across kinds)."""
    eigs = np.full(P.aniso_dim, P.aniso_bulk)
    eigs[0] = P.aniso_top
    traces = np.asarray(P.aniso_traces, dtype=float)
    times: dict[tuple[str, str], list[np.ndarray]] = {}
    eff: dict[str, list[float]] = {k: [] for k in NOISE_KINDS}
    energy: dict[str, list[float]] = {k: [] for k in NOISE_KINDS}
    for k, tr in enumerate(traces):
        for kind, var in noise_shapes(eigs, tr).items():
            eff[kind].append(escape_efficiency(eigs, var))
            energy[kind].append(stationary_energy(eigs, var, P.lr))
            for ex in EXITS:
                times.setdefault((kind, ex), []).append(anisotropic_escape(
                    eigs, var, depth=P.aniso_depth, wall=P.aniso_wall, lr=P.lr,
                    steps=P.aniso_steps, runs=P.aniso_runs, seed=P.seed + 7 * k, exit=ex,
                    radius=P.aniso_radius))
    return AnisotropyStudy(eigs, traces, {k: np.stack(v) for k, v in times.items()},
                           {k: np.asarray(v) for k, v in eff.items()},
                           {k: np.asarray(v) for k, v in energy.items()}, P.confidence)


# ----------------------------------------------------------------------- the studies
def _z(confidence: float) -> float:
    """Two-sided normal quantile of ``confidence``; exactly 1.96 at 0.95 (the value every
    earlier run of the chapter used)."""
    from statistics import NormalDist

    if confidence == 0.95:
        return 1.96
    return float(NormalDist().inv_cdf(0.5 + confidence / 2))


def lyapunov_study(P: Params) -> StationaryCheck:
    """Section 4.2: :func:`stationary_check` on ``H = [[H11, H12], [H12, H22]]`` from
    ``P.lyap_hessian`` with noise ``C = σ² H`` (σ = ``P.lyap_sigma``)."""
    h11, h12, h22 = P.lyap_hessian
    H = np.array([[h11, h12], [h12, h22]])
    return stationary_check(H, P.lyap_sigma**2 * H, P.lr, steps=P.lyap_steps,
                            runs=P.lyap_runs, seed=P.seed)


@dataclass
class DivergenceStudy:
    """Diverged fractions of GD and of SGD with noise ∝ curvature. ``q, gd, sgd: (G,)``."""

    q: np.ndarray
    gd: np.ndarray
    sgd: np.ndarray


def divergence_study(P: Params) -> DivergenceStudy:
    """Section 4.2: :func:`gd_divergence_sweep` on ``ηλ ∈ linspace(div_q_min, div_q_max,
    div_num)`` for GD (σ = 0) and SGD (σ = ``radius_sigma``)."""
    q = np.linspace(P.div_q_min, P.div_q_max, P.div_num)
    kw = dict(lr=P.lr, steps=P.div_steps, runs=P.div_runs, x0=P.div_x0,
              threshold=P.div_threshold)
    gd = gd_divergence_sweep(q, seed=P.seed, **kw)
    sgd = gd_divergence_sweep(q, sigma=P.radius_sigma, seed=P.seed + 1, **kw)
    return DivergenceStudy(q, gd, sgd)


@dataclass
class RadiusStudy:
    """Section 4.3. ``rho: (G,)``; ``crit[setting]: (G, K, runs)`` per-run critical radii;
    ``radius[setting]: (G,)``; ``fits[setting]``: the exponent fit over the grid points with
    ``ηρ <= fit_max`` and a radius strictly between 0 and ε (absent when fewer than two such
    points); ``stationary_sd: (G,)`` s(ρ) for noise ∝ H; ``iso_scale``: the isotropic
    noise's ``c`` in ``C = σ_iso² c I / B``, chosen so that both quadratic noises have the
    same trace at the geometric middle ``rho_mid`` of the grid."""

    rho: np.ndarray
    rho_mid: float
    crit: dict[str, np.ndarray]
    radius: dict[str, np.ndarray]
    fits: dict[str, ExponentFit]
    no_fit: dict[str, str]
    well: GaussianWell
    stationary_sd: np.ndarray
    eps: float
    lr: float
    fit_max: float
    iso_scale: float

    @property
    def in_range(self) -> np.ndarray:
        """``(G,)`` bool: the grid points inside the fit range ``ηρ <= fit_max``."""
        return self.lr * self.rho <= self.fit_max * (1 + 1e-9)

    def table(self) -> pd.DataFrame:
        """Per sharpness: ηρ, the radius of each setting, s(ρ), the margin (ε − r)/s and the
        wall distance of the well."""
        t = pd.DataFrame({"sharpness ρ": self.rho, "ηρ": self.lr * self.rho})
        for k, r in self.radius.items():
            t[f"radius, {k}"] = r
        t["s(ρ), noise ∝ H"] = self.stationary_sd
        t["(ε − r)/s, noise ∝ H"] = (self.eps - self.radius[SETTINGS[0]]) / self.stationary_sd
        t["R_wall (well)"] = self.well.wall_radius(self.rho)
        return t

    def fit_table(self, alpha: float) -> pd.DataFrame:
        """Per setting: the exponent with its bootstrap standard error and ``1 − 2α``
        interval (``'0.64 [0.62, 0.66]'``), the points fitted and the points left out."""
        rows = []
        for k in SETTINGS:
            f = self.fits.get(k)
            if f is None:
                rows.append({"setting": k, "exponent α [interval]": "no fit",
                             "standard error": "–", "points fitted": 0,
                             "points left out": int(self.rho.size)})
                continue
            lo, hi = _normal_interval(f.alpha, _boot_se(f), alpha)
            rows.append({"setting": k, "exponent α [interval]":
                         f"{_fixed(f.alpha, 3)} [{_fixed(lo, 3)}, {_fixed(hi, 3)}]",
                         "standard error": _fixed(_boot_se(f), 3),
                         "points fitted": int(f.used.sum()),
                         "points left out": int((~f.used).sum())})
        return pd.DataFrame(rows)


def _fixed(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, without the sign of a value that rounds to zero
    (no "−0.00" on the page)."""
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


SETTINGS = ("quadratic, noise ∝ H", "quadratic, isotropic noise", "Gaussian well, noise ∝ H")


def matched_iso_scale(spectrum: Sequence[float], rho_mid: float) -> float:
    """``c`` with ``tr(σ² c I) = tr(σ² ρ̄ diag(spectrum))``: ``c = ρ̄ · mean(spectrum)``, so
    isotropic noise ``C = σ² c I / B`` and noise ∝ H, ``C = σ² H / B``, inject the same
    trace at ``ρ = ρ̄`` (for equal σ)."""
    return float(rho_mid * np.mean(np.asarray(spectrum, dtype=float)))


def radius_study(P: Params) -> RadiusStudy:
    """Section 4.3: per-run critical radii on the quadratic (noise ∝ H, and isotropic noise
    with the same trace at the geometric mid sharpness ρ̄) and on the Gaussian well, the
    radius at failure probability δ, and the exponent fits with bootstrap intervals over
    the fit range ``ηρ <= radius_fit_max``."""
    rho = np.geomspace(P.sharpness_min, P.sharpness_max, P.num_sharpness)
    rho_mid = float(np.sqrt(P.sharpness_min * P.sharpness_max))
    iso_scale = matched_iso_scale(P.spectrum, rho_mid)
    common = dict(lr=P.lr, eps=P.radius_eps, seed=P.seed, spectrum=P.spectrum)
    crit = {
        SETTINGS[0]: quadratic_critical_radii(
            rho, sigma=P.radius_sigma, noise="hessian", steps=P.radius_steps,
            runs=P.radius_runs, **common),
        SETTINGS[1]: quadratic_critical_radii(
            rho, sigma=P.iso_sigma, noise="isotropic", iso_scale=iso_scale,
            steps=P.radius_steps, runs=P.radius_runs, **common),
    }
    well = GaussianWell(depth=P.well_depth, spectrum=tuple(P.spectrum), wall=P.well_wall)
    common.pop("spectrum")
    crit[SETTINGS[2]] = bisection_critical_radii(
        rho, well, sigma=P.well_sigma, noise="hessian", steps=P.well_steps,
        runs=P.well_runs, iters=P.bisection_iters, **common)
    radius = {k: radius_from_critical(c, P.radius_delta) for k, c in crit.items()}
    keep = P.lr * rho <= P.radius_fit_max * (1 + 1e-9)
    fits: dict[str, ExponentFit] = {}
    no_fit: dict[str, str] = {}
    for k, c in crit.items():
        try:
            fits[k] = radius_exponent(rho, c, P.radius_delta, n_boot=P.n_boot, seed=P.seed,
                                      level=1 - 2 * P.alpha, keep=keep, cap=P.radius_eps)
        except ValueError:  # fewer than two radii inside (0, ε) in the fit range
            no_fit[k] = "fewer than two radii strictly between 0 and ε in the fit range"
    sd = stationary_std(rho, P.lr, P.radius_sigma, 1)
    return RadiusStudy(rho, rho_mid, crit, radius, fits, no_fit, well, sd, P.radius_eps,
                       P.lr, P.radius_fit_max, iso_scale)


def wme_curvatures(n: int, seed: int) -> np.ndarray:
    """The per-example curvatures ``a_i`` of section 4.4: exponential draws normalised to
    mean 1 (so H = 1 and the non-uniformity s ≈ 1). ``(n,)``."""
    a = np.random.default_rng(seed).exponential(1.0, check_positive_int("n", n))
    return a / a.mean()


@dataclass
class WMEStudy:
    """Section 4.4. ``a: (N,)``; ``lrs: (L,)``; ``div_frac: (len(B), L)`` fraction of runs
    with ``|x_T| > 1``; ``table``: per B the two boundaries and the simulated edge."""

    a: np.ndarray
    lrs: np.ndarray
    batch_sizes: tuple[int, ...]
    div_frac: np.ndarray
    table: pd.DataFrame

    @property
    def grid_step(self) -> float:
        return float(self.lrs[1] - self.lrs[0])


def wme_study(P: Params) -> WMEStudy:
    """Section 4.4: simulate the interpolating finite sum on an η × B grid, locate the
    simulated edge (first η with diverged fraction >= ``wme_edge_fraction``) and compute the
    mean-square and almost-sure boundaries."""
    a = wme_curvatures(P.wme_n, P.seed)
    lrs = np.linspace(P.wme_lr_max / P.wme_num_lrs, P.wme_lr_max, P.wme_num_lrs)
    logx = simulate_interpolating(a, lrs, P.wme_batch_sizes, steps=P.wme_steps,
                                  runs=P.wme_runs, seed=P.seed)
    div_frac = (logx > 0).mean(-1)
    fine = np.linspace(0.01, P.wme_lr_max, P.wme_as_grid)
    rows = []
    for i, B in enumerate(P.wme_batch_sizes):
        bad = np.nonzero(div_frac[i] >= P.wme_edge_fraction)[0]
        rows.append({
            "B": B,
            "mean-square η_max (eq)": mean_square_lr_max(a, B),
            "almost-sure η_max": almost_sure_lr_max(a, B, fine, seed=P.seed,
                                                    num_batches=P.wme_as_batches),
            "simulated edge η": lrs[bad[0]] if bad.size else np.nan,
        })
    return WMEStudy(a, lrs, tuple(P.wme_batch_sizes), div_frac, pd.DataFrame(rows))


@dataclass
class WellsStudy:
    """Section 4.5: the landscape and, per method, the fraction of runs ending in the flat
    minimum with its Wilson interval."""

    wells: TwoWells
    selection: dict[str, dict[str, float]]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"method": METHOD_NAMES[m], "fraction in flat minimum": v["flat"],
             "low": v["low"], "high": v["high"]} for m, v in self.selection.items()
        ])


METHOD_NAMES = {"gd": "GD", "isotropic": "GD + isotropic (matched trace)",
                "sgd": "SGD (noise ∝ H)"}


def wells_study(P: Params) -> WellsStudy:
    """Section 4.5: :func:`basin_selection` on the :class:`TwoWells` of the parameters."""
    wells = TwoWells(lam_sharp=P.wells_lam_sharp, lam_flat=P.wells_lam_flat,
                     c_sharp=P.wells_c_sharp, c_flat=P.wells_c_flat, sigma=P.wells_sigma,
                     n=P.wells_n, seed=P.seed)
    sel = basin_selection(wells, lr=P.lr, batch_size=P.wells_batch_size,
                          steps=P.wells_steps, runs=P.wells_runs, seed=P.seed,
                          z=_z(P.confidence))
    return WellsStudy(wells, sel)


# ------------------------------------------------------- decisions and their error rates
def difference_pvalue(k1: np.ndarray | int, n1: np.ndarray | int, k2: np.ndarray | int,
                      n2: np.ndarray | int, margin: float = 0.0) -> np.ndarray:
    """One-sided p-value of H0 ``p₁ − p₂ <= m`` against ``p₁ − p₂ > m`` for two fractions
    ``k₁/n₁``, ``k₂/n₂`` of independent runs, with the Agresti–Caffo adjustment (one success
    and one failure added to each group, which keeps the test valid at 0 and 1):

        p̃ = (k + 1)/(n + 2),
        z = (p̃₁ − p̃₂ − m) / √(p̃₁(1 − p̃₁)/(n₁ + 2) + p̃₂(1 − p̃₂)/(n₂ + 2)),

    ``p = 1 − Φ(z)``. Arrays broadcast; the test of ``p₁ < p₂`` is
    ``difference_pvalue(k₂, n₂, k₁, n₁)``."""
    from scipy.stats import norm

    a1 = np.asarray(n1, dtype=float) + 2
    a2 = np.asarray(n2, dtype=float) + 2
    p1 = (np.asarray(k1, dtype=float) + 1) / a1
    p2 = (np.asarray(k2, dtype=float) + 1) / a2
    se = np.sqrt(p1 * (1 - p1) / a1 + p2 * (1 - p2) / a2)
    return norm.sf((p1 - p2 - margin) / se)


OUTCOME_CODES = ("supported", "contradicted", "mixed", "inconclusive")


def comparison_codes(k_a: np.ndarray, k_b: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """"A leaves more often than B" over ``G`` groups (traces): ``k_a, k_b: (..., G)``
    counts of ``n`` runs each. Per group the one-sided tests of :func:`difference_pvalue`
    in both directions; Holm's adjustment over the groups in each direction. Code 0
    (supported): A more at some group and B more at none; 1 (contradicted): the reverse;
    2 (mixed): both; 3 (inconclusive): neither. Returns ``(...)`` integer codes into
    :data:`OUTCOME_CODES`."""
    more = (holm(difference_pvalue(k_a, n, k_b, n)) <= alpha).any(-1)
    less = (holm(difference_pvalue(k_b, n, k_a, n)) <= alpha).any(-1)
    return np.where(more & ~less, 0, np.where(less & ~more, 1, np.where(more, 2, 3)))


@dataclass(frozen=True)
class RuleRates:
    """A rule's error rates measured with :func:`sgdnoise.decide.harness.error_rates`:
    ``false_positive`` (supported where the claim is false, at its boundary), ``power``
    (supported where it is true with the stated effect), at ``n_units`` independent runs
    per group, ``n_sim`` simulated data sets per truth; ``conditions`` says which truths
    and spreads (and the number of runs: toy simulations have runs, not seeds)."""

    false_positive: float
    power: float
    n_units: int
    n_sim: int
    conditions: str

    def attach(self, verdict: Verdict) -> Verdict:
        """``verdict`` with these rates appended (:meth:`Verdict.with_error_rates`; the
        runs are named in the conditions, so no seed count is given)."""
        return verdict.with_error_rates(false_positive_rate=self.false_positive,
                                        power=self.power, n_seeds=None,  # type: ignore[arg-type]
                                        n_sim=self.n_sim, rates_at=self.conditions)


def _binomial(probs: np.ndarray, n: int):
    """A scenario simulator: ``n_sim`` data sets of counts ``Binomial(n, probs)``, shape
    ``(n_sim, *probs.shape)``."""
    p = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)

    def simulate(n_sim: int, rng: np.random.Generator) -> np.ndarray:
        return rng.binomial(n, p, size=(n_sim, *p.shape))
    return simulate


def rule_rates(rule, null: dict[str, np.ndarray], true: np.ndarray, *, n: int, n_sim: int,
               seed: int, conditions: str, simulate=None) -> RuleRates:
    """Run ``rule`` (a batch of data sets -> codes into :data:`OUTCOME_CODES`) on every
    truth of ``null`` (the claim false: the largest rate of code 0, "supported", is the
    false-positive rate) and on ``true`` (the claim true: its rate of code 0 is the power).
    A truth is an array of parameters that ``simulate(truth, n)`` turns into a scenario
    simulator (default: counts ``Binomial(n, truth)``)."""
    simulate = simulate or _binomial

    def labels(batch):
        return np.asarray(OUTCOME_CODES, dtype=object)[rule(batch)]

    scen = [Scenario(name, name, simulate(p, n)) for name, p in null.items()]
    scen.append(Scenario("claim true", "claim true", simulate(true, n)))
    rates = error_rates(labels, scen, n_sim=n_sim, seed=seed)
    fp = max(rate_of(rates, name, "supported").rate for name in null)
    return RuleRates(fp, rate_of(rates, "claim true", "supported").rate, n, n_sim,
                     conditions)


def comparison_rates(base: np.ndarray, *, n: int, alpha: float, effect: float,
                     n_sim: int, seed: int, names: tuple[str, str]) -> RuleRates:
    """Error rates of :func:`comparison_codes` ("A more than B") over ``G`` groups:
    false positive with A and B equal at B's measured fractions ``base: (G,)``; power with A
    ``effect`` above B at every group (clipped at 1)."""
    base = np.asarray(base, dtype=float)

    def rule(counts: np.ndarray) -> np.ndarray:
        return comparison_codes(counts[:, 0], counts[:, 1], n, alpha)

    cond = (f"each fraction from {n:,} independent runs; false positive: {names[0]} and "
            f"{names[1]} equally likely to leave, at the measured rates of {names[1]}; "
            f"power: {names[0]} {effect * 100:g} points more likely at every trace")
    return rule_rates(rule, {"equal": np.stack([base, base])},
                  np.stack([np.minimum(base + effect, 1.0), base]), n=n, n_sim=n_sim,
                  seed=seed, conditions=cond)


def _boot_se(fit: ExponentFit) -> float:
    """Standard deviation of the bootstrap replicates of α (NaN without two)."""
    return float(np.std(fit.boot, ddof=1)) if fit.boot.size > 1 else float("nan")


def _normal_interval(est: float, se: float, alpha: float) -> tuple[float, float]:
    from scipy.stats import norm

    q = float(norm.ppf(1 - alpha))
    return est - q * se, est + q * se


def exponent_codes(alpha_hat: np.ndarray, se: np.ndarray, *, margin: float,
                   level: float) -> np.ndarray:
    """"α = 1 in every setting" from estimates ``alpha_hat: (..., S)`` with standard errors
    ``se: (..., S)`` (NaN: no fit), normal tests against the band ``[1 − m, 1 + m]``:

    * equivalence (TOST): ``p_eq = max(1 − Φ((α̂ − 1 + m)/se), Φ((α̂ − 1 − m)/se))``;
    * outside the band: ``p_out = min(1, 2 min(Φ((α̂ − 1 + m)/se), 1 − Φ((α̂ − 1 − m)/se)))``.

    Code 0 (supported) when every setting with an estimate is equivalent
    (intersection-union, ``max p_eq <= level``; a setting without one is not counted, and
    none at all is inconclusive); 1 (contradicted) when some setting is outside the band
    (Holm over the settings); 3 (inconclusive) otherwise. Returns ``(...)``."""
    from scipy.stats import norm

    a = np.asarray(alpha_hat, dtype=float)
    s = np.asarray(se, dtype=float)
    ok = np.isfinite(a) & np.isfinite(s) & (s > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(ok, (a - 1 + margin) / s, 0.0)
        hi = np.where(ok, (a - 1 - margin) / s, 0.0)
    p_eq = np.where(ok, np.maximum(norm.sf(lo), norm.cdf(hi)), 0.0)
    p_out = np.where(ok, np.minimum(1.0, 2 * np.minimum(norm.cdf(lo), norm.sf(hi))), 1.0)
    supported = ok.any(-1) & (p_eq.max(-1) <= level)
    contradicted = (holm(p_out) <= level).any(-1)
    return np.where(supported, 0, np.where(contradicted, 1, 3))


def exponent_rates(se: np.ndarray, *, margin: float, level: float, n_runs: int,
                   n_sim: int, seed: int) -> RuleRates:
    """Error rates of :func:`exponent_codes` with ``α̂ ~ N(α, se²)`` per setting (``se:
    (S,)`` the measured bootstrap standard errors): false positive with one setting at the
    band's edge ``1 − m`` (the others at 1; the worst setting counts), power with every
    setting at α = 1."""
    se = np.asarray(se, dtype=float)

    def normal(mean: np.ndarray, _n: int):
        def simulate(n_sim: int, rng: np.random.Generator) -> np.ndarray:
            return mean + se * rng.standard_normal((n_sim, se.size))
        return simulate

    def rule(draws: np.ndarray) -> np.ndarray:
        return exponent_codes(draws, np.broadcast_to(se, draws.shape), margin=margin,
                              level=level)

    null = {}
    for k in range(se.size):
        mean = np.ones(se.size)
        mean[k] = 1 - margin
        null[f"setting {k + 1} at the edge"] = mean
    cond = (f"each estimate from {n_runs:,} independent runs, drawn around the truth with "
            "the measured bootstrap standard errors; false positive: one setting at "
            f"$\\alpha = {1 - margin:g}$, the edge of the band; power: every setting at "
            "$\\alpha = 1$")
    return rule_rates(rule, null, np.ones(se.size), n=n_runs, n_sim=n_sim, seed=seed,
                  conditions=cond, simulate=normal)


# ------------------------------------------------------------------------- verdicts
DERIVATION = KINDS[1]


def lyapunov_verdict(z: np.ndarray, runs: int, *, z_max: float, scale: str) -> Verdict:
    """Agreement of simulation and the Lyapunov solution: supported iff every entry's
    ``|z| = |empirical − theory| / s.e.`` is below ``z_max``. ``z: (P, P)``. A derivation
    check."""
    zmax = float(np.abs(np.asarray(z)).max())
    ok = zmax < z_max
    return Verdict(
        claim=r"The discrete Lyapunov equation $\Sigma = (I - \eta H)\Sigma(I - \eta H)^\top + "
              r"\eta^2 C$ gives the stationary covariance of SGD with noise $\propto H$ near a "
              "minimum.",
        outcome="supported" if ok else "contradicted",
        sentence=f"The largest absolute z-score over the entries is {zmax:.2f} from "
                 f"{runs:,} runs (agreement: below {z_max:g} standard errors): "
                 + ("the simulation agrees within Monte Carlo error." if ok
                    else f"they disagree beyond {z_max:g} standard errors."),
        scale=scale, section="sec-ch4-quadratic", kind=DERIVATION)


def linear_boundary_verdict(
    q: np.ndarray, frac_gd: np.ndarray, frac_sgd: np.ndarray, *, margin: float,
    below_max: float, above_min: float, scale: str,
) -> Verdict:
    """Does the switch sit at ηλ = 2 for GD and noisy SGD alike? Supported iff, for both,
    the diverged fraction is <= ``below_max`` at every ηλ < 2 − margin and >= ``above_min``
    at every ηλ > 2 + margin; inconclusive without grid points on both sides. A derivation
    check."""
    q = np.asarray(q, dtype=float)
    lo, hi = q < 2 - margin, q > 2 + margin
    if not lo.any() or not hi.any():
        return Verdict(_LINEAR_CLAIM, "inconclusive",
                       f"No grid point of $\\eta\\lambda$ lies on both sides of 2 ± {margin:g}.",
                       scale, "sec-ch4-quadratic", kind=DERIVATION)
    parts, ok = [], True
    for name, f in (("SGD, noise ∝ H", np.asarray(frac_sgd)), ("GD", np.asarray(frac_gd))):
        below, above = float(f[lo].max()), float(f[hi].min())
        ok &= below <= below_max and above >= above_min
        parts.append(f"{name}: at most {below:.0%} of runs diverge below "
                     f"$\\eta\\lambda = {2 - margin:.2f}$ and at least {above:.0%} above "
                     f"${2 + margin:.2f}$")
    rule = (f"(agreement: at most {below_max:.0%} below and at least {above_min:.0%} above)")
    return Verdict(_LINEAR_CLAIM, "supported" if ok else "contradicted",
                   "; ".join(parts) + f" {rule}: the switch "
                   + ("sits at $\\eta\\lambda = 2$ for both." if ok
                      else "is not at $\\eta\\lambda = 2$ for both."),
                   scale, "sec-ch4-quadratic", kind=DERIVATION)


_LINEAR_CLAIM = (r"GD and SGD at a minimum diverge exactly when $\eta\lambda_{\max} > 2$; "
                 "additive noise does not move this boundary.")
RADIUS_CLAIM = ("The radius of stability of a strict minimum is inversely proportional to "
                r"the spectral radius of the Hessian: $r \propto \rho(H)^{-\alpha}$ with "
                r"$\alpha = 1$, in the small-step range $\eta\rho \le 1$.")


def radius_lines(fits: dict[str, ExponentFit], *, margin: float, alpha: float) -> list[str]:
    """One sentence per setting: the exponent, its ``1 − 2α`` interval and where it lies
    against the band ``[1 − m, 1 + m]``."""
    out = []
    for name, f in fits.items():
        se = _boot_se(f)
        if not np.isfinite(se) or se == 0:
            out.append(f"{name}: $\\alpha = {f.alpha:.2f}$ has no bootstrap spread, so it "
                       "cannot be compared with the band.")
            continue
        lo, hi = _normal_interval(f.alpha, se, alpha)
        where = ("inside" if lo > 1 - margin and hi < 1 + margin else "below" if
                 hi < 1 - margin else "above" if lo > 1 + margin else "across the edge of")
        out.append(f"{name}: $\\alpha = {_fixed(f.alpha)}$ [{_fixed(lo)}, {_fixed(hi)}], "
                   f"{where} the band [{1 - margin:g}, {1 + margin:g}]")
    return out


def radius_verdict(fits: dict[str, ExponentFit], *, margin: float, alpha: float,
                   scale: str, rates: RuleRates | None = None) -> Verdict:
    """α = 1 within ``±margin`` in every setting (:func:`exponent_codes` on the bootstrap
    estimates and standard errors; a setting without a fit counts as undecided). The
    margin is the claim's tolerance on the exponent: half the distance to the nearest
    competing law, α = 1/2 (a basin whose width shrinks like ρ^(−1/2)) when it is 0.25. A
    claim about SGD; ``rates`` (:func:`exponent_rates`) adds its error rates."""
    names = list(SETTINGS)
    a = np.array([fits[k].alpha if k in fits else np.nan for k in names])
    se = np.array([_boot_se(fits[k]) if k in fits else np.nan for k in names])
    code = int(exponent_codes(a, se, margin=margin, level=alpha))
    text = "; ".join(radius_lines(fits, margin=margin, alpha=alpha)) or ("No setting has two "
                                                                         "radii to fit.")
    rule = (f" Rule: normal tests on the bootstrap standard errors at level {alpha:g}; "
            f"supported when every setting lies inside the band (two one-sided tests, all "
            f"needed), contradicted when some setting lies outside it (Holm over the "
            f"{len(names)} settings); intervals {1 - 2 * alpha:.0%}.")
    v = Verdict(RADIUS_CLAIM, OUTCOME_CODES[code], text + "." + rule, scale, "sec-ch4-radius")
    return rates.attach(v) if rates is not None else v


WME_CLAIM = (r"A typical SGD run on the interpolating finite sum diverges where the "
             r"almost-sure boundary $\mathrm{E}\log\lvert 1-\eta h_{\mathcal{B}}\rvert = 0$ "
             "lies, beyond the mean-square boundary of Wu, Ma & E "
             r"$\eta \le 2H / \bigl(H^2 + s^2 (N-B)/(B(N-1))\bigr)$: that condition is "
             "sufficient for stability, not necessary.")


def _bracket_distance(edge: np.ndarray, boundary: np.ndarray, step: float) -> np.ndarray:
    """Distance from each boundary value to the bracket ``[edge − step, edge]`` that holds
    the true edge (the grid point before ``edge`` had fewer diverged runs)."""
    return np.maximum(np.maximum(edge - step - boundary, boundary - edge), 0.0)


def wme_verdict(
    table: pd.DataFrame, grid_step: float, *, tol_steps: float, scale: str
) -> Verdict:
    """Compare the simulated edge with the two boundaries. The simulated edge ``e`` is the
    first grid η with enough diverged runs, so the true edge lies in ``[e − step, e]``; a
    boundary agrees at one B when it lies within ``tol_steps`` grid steps of that bracket.
    Supported: the almost-sure boundary agrees at every B. Contradicted: it does not and
    the mean-square boundary does. Mixed: neither agrees everywhere. Inconclusive: no B
    reached the edge on the η grid. A derivation check (both boundaries are derived on the
    page; the law of large numbers says which one a single run follows). Columns as in
    :attr:`WMEStudy.table`."""
    sim = table["simulated edge η"].to_numpy(dtype=float)
    ms = table["mean-square η_max (eq)"].to_numpy(dtype=float)
    asb = table["almost-sure η_max"].to_numpy(dtype=float)
    have = np.isfinite(sim)
    if not have.any():
        return Verdict(WME_CLAIM, "inconclusive", "No batch size reached the divergence "
                       "edge on the learning-rate grid.", scale, "sec-ch4-wme",
                       kind=DERIVATION)
    tol = tol_steps * grid_step
    gap = float(np.max(sim[have] - ms[have]))
    off_ms = float(_bracket_distance(sim[have], ms[have], grid_step).max())
    off_as = float(_bracket_distance(sim[have], asb[have], grid_step).max())
    head = (f"The simulated divergence edge lies up to {gap:.2f} above the mean-square "
            f"boundary; outside the bracket of the edge (one grid step, {grid_step:.2f}) the "
            f"mean-square boundary lies by up to {off_ms:.2f} and the almost-sure boundary "
            f"by up to {off_as:.2f} (agreement: within {tol:.2f}). ")
    if off_as <= tol:
        outcome, tail = "supported", ("Runs diverge at the almost-sure boundary: typical runs "
                                      "stay at minima the mean-square condition calls "
                                      "unstable.")
    elif off_ms <= tol:
        outcome, tail = "contradicted", "Runs diverge at the mean-square boundary."
    else:
        outcome, tail = "mixed", "Neither boundary matches the edge at every batch size."
    return Verdict(WME_CLAIM, outcome, head + tail, scale, "sec-ch4-wme", kind=DERIVATION)


BASIN_CLAIM = ("SGD's Hessian-shaped noise sends runs to the flat minimum more often than "
               "isotropic noise of the same size and more often than GD.")


def basin_codes(k_sgd: np.ndarray, k_iso: np.ndarray, k_gd: np.ndarray, n: int,
                alpha: float) -> np.ndarray:
    """Counts of runs ending in the flat minimum, ``(...)`` each out of ``n``. Code 0
    (supported): SGD more than isotropic noise and more than GD, both one-sided tests
    (:func:`difference_pvalue`) at ``alpha`` (intersection-union); 1 (contradicted):
    isotropic noise more than SGD at ``alpha``; 3 (inconclusive) otherwise."""
    p_sup = np.maximum(difference_pvalue(k_sgd, n, k_iso, n),
                       difference_pvalue(k_sgd, n, k_gd, n))
    contra = difference_pvalue(k_iso, n, k_sgd, n) <= alpha
    return np.where(p_sup <= alpha, 0, np.where(contra, 1, 3))


def basin_rates(selection: dict[str, dict[str, float]], *, n: int, alpha: float,
                effect: float, n_sim: int, seed: int) -> RuleRates:
    """Error rates of :func:`basin_codes`: false positive with SGD as likely as isotropic
    noise to end flat (both at the measured isotropic fraction, GD at its own); power with
    SGD ``effect`` above it (clipped at 1)."""
    iso, gd = selection["isotropic"]["flat"], selection["gd"]["flat"]

    def rule(c: np.ndarray) -> np.ndarray:
        return basin_codes(c[:, 0], c[:, 1], c[:, 2], n, alpha)

    cond = (f"{n:,} independent runs per method; false positive: SGD as likely to end flat "
            f"as isotropic noise ({iso:.1%}); power: SGD {effect * 100:g} points more likely")
    return rule_rates(rule, {"equal": np.array([iso, iso, gd])},
                  np.array([min(iso + effect, 1.0), iso, gd]), n=n, n_sim=n_sim, seed=seed,
                  conditions=cond)


def basin_verdict(selection: dict[str, dict[str, float]], *, alpha: float, scale: str,
                  rates: RuleRates | None = None) -> Verdict:
    """:func:`basin_codes` on the measured counts (``selection[m]["count"]`` of ``n`` runs
    each, ``n`` from the fraction). A claim about SGD."""
    s, i, g = (selection[m] for m in ("sgd", "isotropic", "gd"))
    n = int(s["runs"])
    code = int(basin_codes(s["count"], i["count"], g["count"], n, alpha))
    sentence = (f"SGD ends in the flat minimum in {s['flat']:.1%} of runs, GD with isotropic "
                f"noise of the same trace in {i['flat']:.1%}, GD in {g['flat']:.1%}. Rule: "
                f"one-sided tests of two fractions at level {alpha:g}; supported when SGD "
                "exceeds both others, contradicted when isotropic noise exceeds SGD.")
    v = Verdict(BASIN_CLAIM, OUTCOME_CODES[code], sentence, scale, "sec-ch4-wells")
    return rates.attach(v) if rates is not None else v


ANISO_CLAIM = ("Noise aligned with the Hessian leaves a sharp basin more often than "
               "isotropic noise of the same trace (Zhu et al. 2019).")
MECHANISM_CLAIM = (r"The escape efficiency $\operatorname{tr}(H\Sigma)$ orders the escape: "
                   "noise along one flat direction, whose efficiency is the smallest, leaves "
                   "the basin less often than isotropic noise of the same trace.")
TR_SIGMA = r"$\operatorname{tr}\Sigma$"


def _fractions(study: AnisotropyStudy, kind: str, exit: str = EXITS[0]) -> str:
    return ", ".join(f"{v / study.runs:.1%}" for v in study.escaped(kind, exit))


def anisotropy_verdict(study: AnisotropyStudy, *, alpha: float, scale: str,
                       rates: RuleRates | None = None) -> Verdict:
    """:func:`comparison_codes` of aligned against isotropic noise over the traces
    (Hessian wall). A claim about SGD."""
    code = int(comparison_codes(study.escaped(NOISE_KINDS[0]), study.escaped(NOISE_KINDS[1]),
                                study.runs, alpha))
    traces = ", ".join(f"{t:g}" for t in study.traces)
    sentence = (f"At {TR_SIGMA} = {traces}, aligned noise leaves in "
                f"{_fractions(study, NOISE_KINDS[0])} of runs, isotropic noise in "
                f"{_fractions(study, NOISE_KINDS[1])}. Rule: per trace one-sided tests of two "
                f"fractions, Holm over the {len(study.traces)} traces at level {alpha:g}; "
                "supported when aligned noise leaves more often at some trace and less "
                "often at none.")
    v = Verdict(ANISO_CLAIM, OUTCOME_CODES[code], sentence, scale, "sec-ch4-aniso")
    return rates.attach(v) if rates is not None else v


def mechanism_verdict(study: AnisotropyStudy, *, alpha: float, scale: str,
                      rates: RuleRates | None = None) -> Verdict:
    """:func:`comparison_codes` of isotropic noise against noise along one flat direction
    (Hessian wall): what ``tr(HΣ)`` predicts. The sentence adds the stationary
    ``E[δᵀHδ]`` of every kind (equal at equal trace to first order) and the Euclidean exit
    (aligned against isotropic), the two controls that locate the cause. A claim about
    SGD."""
    flat, iso, aligned = NOISE_KINDS[2], NOISE_KINDS[1], NOISE_KINDS[0]
    code = int(comparison_codes(study.escaped(iso), study.escaped(flat), study.runs, alpha))
    k = int(np.argmax(study.traces))
    energy = ", ".join(f"{NOISE_NAMES[kind]} {study.energy[kind][k]:.3f}"
                       for kind in NOISE_KINDS)
    eff = ", ".join(f"{NOISE_NAMES[kind]} {study.efficiency[kind][k]:.2f}"
                    for kind in NOISE_KINDS)
    sentence = (f"Noise along one flat direction leaves in {_fractions(study, flat)} of runs, "
                f"isotropic noise in {_fractions(study, iso)}. At {TR_SIGMA} = "
                f"{study.traces[k]:g} the efficiencies $\\operatorname{{tr}}(H\\Sigma)$ are "
                f"{eff}, while the stationary $\\mathrm{{E}}[\\delta^\\top H\\delta]$ are "
                f"{energy}. Through a Euclidean exit instead of the Hessian wall aligned noise "
                f"leaves in {_fractions(study, aligned, EXITS[1])} of runs and isotropic noise "
                f"in {_fractions(study, iso, EXITS[1])}. Rule: as for the previous claim, with "
                "isotropic noise in place of aligned noise and the flat direction in place of "
                "isotropic noise.")
    v = Verdict(MECHANISM_CLAIM, OUTCOME_CODES[code], sentence, scale, "sec-ch4-aniso")
    return rates.attach(v) if rates is not None else v


# ------------------------------------------------------- the rates of the chapter's rules
def radius_rates(study: RadiusStudy, P: Params) -> RuleRates:
    """:func:`exponent_rates` at the bootstrap standard errors of ``study``'s fits (a
    setting without a fit has no estimate: it can never be called equivalent)."""
    se = np.array([_boot_se(study.fits[k]) if k in study.fits else np.nan
                   for k in SETTINGS])
    return exponent_rates(se, margin=P.radius_margin, level=P.alpha, n_runs=P.radius_runs,
                          n_sim=P.rate_sims, seed=P.seed)


def wells_rates(study: WellsStudy, P: Params) -> RuleRates:
    """:func:`basin_rates` at the measured fractions of ``study``."""
    return basin_rates(study.selection, n=P.wells_runs, alpha=P.alpha,
                       effect=P.count_effect, n_sim=P.rate_sims, seed=P.seed)


def anisotropy_rates(study: AnisotropyStudy, P: Params, *, mechanism: bool = False
                     ) -> RuleRates:
    """:func:`comparison_rates` of :func:`anisotropy_verdict` (aligned against isotropic
    noise) or, with ``mechanism``, of :func:`mechanism_verdict` (isotropic noise against
    the flat direction), at the measured fractions of the second kind."""
    a, b = (NOISE_KINDS[1], NOISE_KINDS[2]) if mechanism else NOISE_KINDS[:2]
    return comparison_rates(study.escaped(b) / study.runs, n=study.runs, alpha=P.alpha,
                            effect=P.count_effect, n_sim=P.rate_sims, seed=P.seed,
                            names=(NOISE_NAMES[a], NOISE_NAMES[b]))
