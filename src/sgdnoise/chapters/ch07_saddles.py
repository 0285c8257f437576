"""Chapter 7, saddle points: a strict saddle with a finite-sum perturbation, vectorised
escape simulations, the escape-time law, the chapter's parameters and the functions that
turn its numbers into verdicts.

Every simulation runs many independent runs at once as numpy float64 arrays and is seeded
through ``numpy.random.default_rng(seed)``.

**Contents**

Parameters
    :class:`Params` (one declaration of every parameter of ``book/chapters/ch07_saddles``).
Strict saddle
    :class:`SaddleProblem`, :func:`saddle_escape_times`, :func:`predicted_escape_time`,
    :func:`predicted_offset_escape_time`, :func:`escape_law_fit`,
    :func:`noise_along_direction`, :func:`matched_isotropic_sigma`.
Stuck against a training budget
    :func:`budget_steps` (chapter 8's steps per batch size), :func:`minibatch_noise_sd`,
    :func:`escape_within_budget`, :class:`BudgetStudy`.
The chapter's studies (what the notebook calls)
    :func:`isotropic_study`, :func:`sgd_study`, :func:`offset_study`, :func:`budget_study`.
Verdicts (numbers in, :class:`sgdnoise.report.Verdict` out; thresholds are arguments)
    Derivation checks: :func:`escape_law_verdict`, :func:`sgd_escape_verdict`,
    :func:`offset_law_verdict`. Claims about SGD, with their rules and error rates:
    :func:`stuck_verdict` (:func:`stuck_codes`, :func:`stuck_rates`; :func:`half_pvalue`)
    and :func:`noise_verdict` (:func:`noise_codes`, :func:`noise_rates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sgdnoise.chapters.ch04_stability import (
    OUTCOME_CODES,
    RuleRates,
    difference_pvalue,
    rule_rates,
)
from sgdnoise.covariance import minibatch_means
from sgdnoise.decide.pvalues import holm
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import KINDS, Verdict
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "EULER_GAMMA",
    "BudgetStudy",
    "IsotropicStudy",
    "OffsetStudy",
    "Params",
    "SaddleProblem",
    "SGDStudy",
    "budget_steps",
    "budget_study",
    "escape_law_fit",
    "escape_law_verdict",
    "escape_within_budget",
    "half_pvalue",
    "isotropic_study",
    "matched_isotropic_faster",
    "matched_isotropic_sigma",
    "minibatch_noise_sd",
    "noise_along_direction",
    "noise_codes",
    "noise_rates",
    "noise_verdict",
    "offset_law_verdict",
    "offset_study",
    "predicted_escape_time",
    "predicted_offset_escape_time",
    "saddle_escape_times",
    "sgd_escape_verdict",
    "sgd_study",
    "stuck_codes",
    "stuck_rates",
    "stuck_verdict",
]

CHAPTER = "ch07_saddles"
EULER_GAMMA = 0.5772156649015329


# ----------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 7 (values: the notebook's parameters cell and
    ``book/params/ch07_saddles/{smoke,default,full}.yaml``)."""

    seed: int = param(low=0, doc="seed of every simulation")
    lr: float = param(low=1e-6, high=1.0, doc="learning rate η")
    gamma: float = param(low=1e-6, doc="γ = −λ_min at the saddle")
    x0: float = param(doc="start (x0, 0) on the stable manifold")
    escape_frac: float = param(low=0.01, high=0.99,
                               doc="escape when |y| >= escape_frac · sqrt(γ)")
    confidence: float = param(low=0.5, high=0.999, doc="level of every interval")
    iso_sigmas: tuple[float, ...] = param(low=1e-300, min_len=2, doc="isotropic noise σ grid")
    iso_runs: int = param(low=10, doc="runs per σ")
    gd_runs: int = param(low=1, doc="GD runs from the stable manifold")
    max_steps: int = param(low=10, doc="horizon; runs not escaped by then count as stuck")
    n_data: int = param(low=2, doc="examples N of the finite sum")
    s_x: float = param(low=0.0, doc="RMS per-example gradient offset along x")
    s_y: float = param(low=1e-12, doc="RMS per-example gradient offset along e_min")
    batch_sizes: tuple[int, ...] = param(low=1, doc="batch sizes B")
    sgd_runs: int = param(low=10, doc="SGD runs per B")
    noise_samples: int = param(low=100, doc="mini-batches per Monte Carlo noise estimate")
    n_boot: int = param(low=10, doc="bootstrap resamples of the escape-law slope")
    noise_z_max: float = param(low=0.5, doc="largest |MC − formula|/s.e. called agreement")
    median_tol: float = param(low=0.0, doc="largest |measured − predicted| median escape "
                                           "step called agreement (steps)")
    offsets: tuple[float, ...] = param(low=0.0, doc="start offsets δ off the stable manifold")
    offset_batch_sizes: tuple[int, ...] = param(low=1, doc="batch sizes of the offset study")
    offset_runs: int = param(low=10, doc="runs per (δ, B)")
    slope_tol: float = param(low=1e-3, high=0.5, doc="relative band around the predicted "
                             "slope of the escape law that counts as agreement")
    budget_epochs: int = param(low=1, doc="epochs of chapter 8's essay arm (its budget)")
    budget_n: int = param(low=2, doc="training examples N of chapter 8's full plan")
    budget_batch_sizes: tuple[int, ...] = param(low=1, min_len=2, doc="batch sizes given "
                                                "chapter 8's budget; the smallest is the "
                                                "small batch")
    budget_lr: float = param(low=1e-6, high=2.0, doc="η λ_max of the budget study "
                             "(λ_max = 1: the curvature along x)")
    budget_kappas: tuple[float, ...] = param(low=1e-6, high=1.0, doc="conditioning "
                                             "|λ_min|/λ_max of the budget study")
    budget_kappa: float = param(low=1e-6, high=1.0, doc="the conditioning the verdicts are "
                                "read at (one of budget_kappas)")
    budget_s_y: float = param(low=1e-12, doc="RMS per-example gradient along e_min in the "
                              "budget study")
    budget_runs: int = param(low=10, doc="runs per (κ, B, noise) in the budget study")
    alpha: float = param(low=1e-4, high=0.25, doc="level of every test behind a verdict")
    rate_sims: int = param(low=100, doc="simulated data sets per truth for error rates")
    count_effect: float = param(low=1e-3, high=0.4, doc="difference of fractions of runs at "
                                "which a rule's power is measured")
    noise_margin: float = param(low=1e-3, high=0.4, doc="difference of escaped fractions "
                                "that counts as the noise mattering")

    def check(self) -> None:
        self.require(max(self.batch_sizes) <= self.n_data, "batch_sizes",
                     f"must be <= n_data={self.n_data}")
        self.require(max(self.offset_batch_sizes) <= self.n_data, "offset_batch_sizes",
                     f"must be <= n_data={self.n_data}")
        y_esc = self.escape_frac * np.sqrt(self.gamma)
        self.require(max(self.offsets) < y_esc, "offsets",
                     f"must be < the escape level escape_frac·sqrt(gamma) = {y_esc:.3g}")
        self.require(max(self.budget_batch_sizes) <= self.budget_n, "budget_batch_sizes",
                     f"must be <= budget_n = {self.budget_n}")
        self.require(any(np.isclose(self.budget_kappa, k) for k in self.budget_kappas),
                     "budget_kappa", f"must be one of budget_kappas = "
                     f"{list(self.budget_kappas)}")

    @property
    def y_escape(self) -> float:
        return float(self.escape_frac * np.sqrt(self.gamma))

    @property
    def scale(self) -> str:
        return f"toy simulations on a laptop CPU, {self.profile} profile"


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
    y0: float = 0.0,
    y_escape: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """First step t with ``|y_t| >= y_escape`` (default ``sqrt(γ)/2``) from ``(x0, y0)``
    (``y0 = 0``: on the stable manifold). ``method``: "gd"; "isotropic" (gradient +
    ``N(0, σ² I)``); "sgd" (mini-batches of size B without replacement from the finite
    sum). Runs that have not
    escaped after ``steps`` steps get ``inf``. Returns ``(runs,)``."""
    check_choice("method", method, ("gd", "isotropic", "sgd"))
    y_esc = 0.5 * np.sqrt(problem.gamma) if y_escape is None else float(y_escape)
    rng = np.random.default_rng(seed)
    x = np.full(runs, float(x0))
    y = np.full(runs, float(y0))
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
    sigmas: np.ndarray,
    times: np.ndarray,
    *,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Slope of mean escape time against ``log(1/σ)`` (steps per e-fold) with a two-sided
    percentile bootstrap interval at ``level`` resampling runs. ``sigmas: (G,)``,
    ``times: (G, runs)`` finite escape times."""
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
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return slope, float(lo), float(hi)


def predicted_offset_escape_time(
    sigma_y: np.ndarray | float,
    offset: float,
    *,
    lr: float,
    gamma: float,
    y_escape: float | None = None,
) -> np.ndarray:
    """Median escape step from ``(x0, δ)``, ``δ`` = ``offset`` >= 0, with noise of standard
    deviation ``σ_y`` along e_min: in the linear phase ``y_t = a^t (δ + Y)`` with
    ``Y ~ N(0, s²)``, ``s² = η²σ_y²/(a² − 1)``, ``a = 1 + ηγ``, so the median escape step is
    ``log(y_esc / m)/log a + c_cubic`` with ``m`` the median of ``|δ + Y|`` (solved from
    ``Φ((m − δ)/s) − Φ((−m − δ)/s) = ½``; ``m = δ`` without noise, ``0.6745 s`` at
    ``δ = 0``). ``inf`` when ``δ = σ_y = 0``. ``sigma_y: (G,)`` -> ``(G,)``."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    y_esc = 0.5 * np.sqrt(gamma) if y_escape is None else float(y_escape)
    delta = check_positive("offset", offset, allow_zero=True)
    a = 1 + lr * gamma
    cubic = np.log(gamma / (gamma - y_esc**2)) / (2 * np.log(a))
    out = []
    for sy in np.atleast_1d(np.asarray(sigma_y, dtype=float)):
        s = lr * sy / np.sqrt(a**2 - 1)
        if s == 0 and delta == 0:
            out.append(np.inf)
            continue
        if s == 0:
            m = delta
        else:
            def half(m: float, s: float = s) -> float:
                return norm.cdf((m - delta) / s) - norm.cdf((-m - delta) / s) - 0.5

            m = brentq(half, 0.0, delta + 10 * s)
        out.append(np.log(y_esc / m) / np.log(a) + cubic)
    return np.asarray(out)


# ----------------------------------------------------------------------- the studies
def problem(P: Params) -> SaddleProblem:
    """The chapter's saddle with its finite-sum perturbation."""
    return SaddleProblem(gamma=P.gamma, n=P.n_data, s_x=P.s_x, s_y=P.s_y, seed=P.seed)


@dataclass
class IsotropicStudy:
    """Section 7.2. ``sigmas: (G,)``; ``times: (G, runs)`` escape steps (inf: stuck);
    ``gd_times: (gd_runs,)``; slope of mean escape step against log(1/σ) with its interval,
    and the predicted slope ``1/log(1 + ηγ)``."""

    sigmas: np.ndarray
    times: np.ndarray
    gd_times: np.ndarray
    predicted: np.ndarray
    slope: float
    slope_low: float
    slope_high: float
    predicted_slope: float

    @property
    def censored(self) -> float:
        return float(np.isinf(self.times).mean())

    def table(self) -> pd.DataFrame:
        t = self.times
        return pd.DataFrame({
            "σ": self.sigmas,
            "mean escape step": np.where(np.isinf(t).any(1), np.nan, t.mean(1)),
            "std. error": t.std(1, ddof=1) / np.sqrt(t.shape[1]),
            "predicted (eq)": self.predicted,
        })


def isotropic_study(P: Params) -> IsotropicStudy:
    """Section 7.2: GD and GD + isotropic noise from ``(x0, 0)`` for each σ of
    ``P.iso_sigmas``; the escape-law slope with a bootstrap interval (NaN when a run did
    not escape)."""
    p = problem(P)
    sig = np.asarray(P.iso_sigmas, dtype=float)
    t_iso = np.stack([
        saddle_escape_times(p, "isotropic", lr=P.lr, steps=P.max_steps, runs=P.iso_runs,
                            sigma=s, x0=P.x0, y_escape=P.y_escape, seed=P.seed + i)
        for i, s in enumerate(sig)
    ])
    t_gd = saddle_escape_times(p, "gd", lr=P.lr, steps=P.max_steps, runs=P.gd_runs, x0=P.x0,
                               y_escape=P.y_escape)
    pred = predicted_escape_time(sig, lr=P.lr, gamma=P.gamma, y_escape=P.y_escape)
    if np.isfinite(t_iso).all():
        slope, lo, hi = escape_law_fit(sig, t_iso, n_boot=P.n_boot, seed=P.seed,
                                       level=P.confidence)
    else:
        slope = lo = hi = float("nan")
    return IsotropicStudy(sig, t_iso, t_gd, pred, slope, lo, hi,
                          float(1 / np.log(1 + P.lr * P.gamma)))


@dataclass
class SGDStudy:
    """Section 7.3: per batch size the noise along e_min (Monte Carlo and formula), the
    median escape steps of SGD and of isotropic noise of matched trace, the prediction.
    ``sgd_times, iso_times: (len(B), runs)``."""

    table: pd.DataFrame
    sgd_times: np.ndarray
    iso_times: np.ndarray

    def noise_z(self) -> np.ndarray:
        """``(MC − formula)/s.e.`` at the batch sizes where the formula is positive."""
        t = self.table
        ok = t["formula (eq)"] > 0
        return ((t["E[(e_min·(g_B−ḡ))²] MC"] - t["formula (eq)"]) / t["± s.e."])[ok]\
            .to_numpy()


def sgd_study(P: Params) -> SGDStudy:
    """Section 7.3: for each B of ``P.batch_sizes``: :func:`noise_along_direction` along
    e_min, SGD escape steps, and GD + isotropic noise of the same trace."""
    p = problem(P)
    e_min = np.array([0.0, 1.0])
    rows, t_sgd, t_match = [], [], []
    for B in (int(b) for b in P.batch_sizes):
        mc, se = noise_along_direction(p, B, e_min, num_samples=P.noise_samples,
                                       seed=P.seed + B)
        var_f = p.noise_variance_along_emin(B)
        ts = saddle_escape_times(p, "sgd", lr=P.lr, steps=P.max_steps, runs=P.sgd_runs,
                                 batch_size=B, x0=P.x0, y_escape=P.y_escape,
                                 seed=P.seed + 1000 + B)
        ti = saddle_escape_times(p, "isotropic", lr=P.lr, steps=P.max_steps,
                                 runs=P.sgd_runs, sigma=matched_isotropic_sigma(p, B),
                                 x0=P.x0, y_escape=P.y_escape, seed=P.seed + 2000 + B)
        t_sgd.append(ts)
        t_match.append(ti)
        rows.append({
            "B": B,
            "E[(e_min·(g_B−ḡ))²] MC": mc,
            "± s.e.": se,
            "formula (eq)": var_f,
            "SGD median escape": np.median(ts),
            "predicted median": predicted_escape_time(np.sqrt(var_f), lr=P.lr,
                                                      gamma=P.gamma, y_escape=P.y_escape,
                                                      statistic="median"),
            "SGD not escaped": np.isinf(ts).mean(),
            "isotropic (matched trace) median": np.median(ti),
        })
    return SGDStudy(pd.DataFrame(rows), np.stack(t_sgd), np.stack(t_match))


@dataclass
class OffsetStudy:
    """Section 7.4: SGD from ``(x0, δ)``. ``times: (len(offsets), len(B), runs)``;
    ``predicted: (len(offsets), len(B))`` median escape step; ``sigma_b: (len(B),)``."""

    offsets: np.ndarray
    batch_sizes: np.ndarray
    sigma_b: np.ndarray
    times: np.ndarray
    predicted: np.ndarray
    max_steps: int
    sigmas: np.ndarray
    iso_times: np.ndarray
    iso_predicted: np.ndarray

    def iso_table(self) -> pd.DataFrame:
        """GD + isotropic noise σ from ``(x0, δ)``: median escape step and prediction."""
        rows = []
        for i, d in enumerate(self.offsets):
            for k, s in enumerate(self.sigmas):
                t = self.iso_times[i, k]
                rows.append({"δ": d, "σ": s, "median escape step": float(np.median(t)),
                             "predicted median": float(self.iso_predicted[i, k]),
                             "escaped": float(np.isfinite(t).mean())})
        return pd.DataFrame(rows)

    def table(self) -> pd.DataFrame:
        rows = []
        for i, d in enumerate(self.offsets):
            for j, B in enumerate(self.batch_sizes):
                t = self.times[i, j]
                rows.append({"δ": d, "B": int(B), "σ_B": self.sigma_b[j],
                             "median escape step": float(np.median(t)),
                             "predicted median": float(self.predicted[i, j]),
                             "escaped": float(np.isfinite(t).mean())})
        return pd.DataFrame(rows)


def offset_study(P: Params) -> OffsetStudy:
    """Section 7.4: SGD started at distance δ off the stable manifold, for every δ of
    ``P.offsets`` and B of ``P.offset_batch_sizes``, and GD + isotropic noise for every σ
    of ``P.iso_sigmas``, with the median escape step predicted by
    :func:`predicted_offset_escape_time` at ``σ_y = σ_B`` (SGD) or σ (isotropic)."""
    p = problem(P)
    offsets = np.asarray(P.offsets, dtype=float)
    Bs = np.asarray(P.offset_batch_sizes, dtype=int)
    sigma_b = np.sqrt([p.noise_variance_along_emin(int(B)) for B in Bs])
    times = np.stack([
        np.stack([saddle_escape_times(p, "sgd", lr=P.lr, steps=P.max_steps,
                                      runs=P.offset_runs, batch_size=int(B), x0=P.x0,
                                      y0=float(d), y_escape=P.y_escape,
                                      seed=P.seed + 3000 + 97 * i + int(B))
                  for B in Bs])
        for i, d in enumerate(offsets)
    ])
    pred = np.stack([predicted_offset_escape_time(sigma_b, float(d), lr=P.lr, gamma=P.gamma,
                                                  y_escape=P.y_escape) for d in offsets])
    sig = np.asarray(P.iso_sigmas, dtype=float)
    iso_times = np.stack([
        np.stack([saddle_escape_times(p, "isotropic", lr=P.lr, steps=P.max_steps,
                                      runs=P.offset_runs, sigma=float(s), x0=P.x0,
                                      y0=float(d), y_escape=P.y_escape,
                                      seed=P.seed + 5000 + 97 * i + k)
                  for k, s in enumerate(sig)])
        for i, d in enumerate(offsets)
    ])
    iso_pred = np.stack([predicted_offset_escape_time(sig, float(d), lr=P.lr, gamma=P.gamma,
                                                      y_escape=P.y_escape) for d in offsets])
    return OffsetStudy(offsets, Bs, sigma_b, times, pred, P.max_steps, sig, iso_times,
                       iso_pred)


OFFSET_CLAIM = ("Off the stable manifold, the escape step follows the linearised law with the "
                "start offset δ and the noise σ.")


def offset_law_verdict(
    measured: np.ndarray, predicted: np.ndarray, *, median_tol: float, scale: str
) -> Verdict:
    """Supported iff every finite measured median escape step is within ``median_tol``
    steps of its prediction (and the two are infinite together); inconclusive if nothing is
    finite. ``measured, predicted``: matching arrays of median escape steps."""
    m = np.asarray(measured, dtype=float).ravel()
    q = np.asarray(predicted, dtype=float).ravel()
    both = np.isfinite(m) & np.isfinite(q)
    if not both.any():
        return Verdict(OFFSET_CLAIM, "inconclusive", "No start has a finite measured and "
                       "predicted escape step.", scale, "sec-ch7-offset", kind=KINDS[1])
    worst = float(np.max(np.abs(m[both] - q[both])))
    mismatch = int((np.isfinite(m) != np.isfinite(q)).sum())
    ok = worst <= median_tol and mismatch == 0
    text = (f"Largest gap between measured and predicted median escape step over "
            f"{int(both.sum())} (δ, noise) pairs: {worst:.1f} steps (threshold "
            f"{median_tol:g})" + (f"; {mismatch} pairs escape in one and not the other"
                                  if mismatch else "") + ". ")
    return Verdict(OFFSET_CLAIM, "supported" if ok else "contradicted",
                   text + ("The law holds." if ok else "The law does not hold here."), scale,
                   "sec-ch7-offset", kind=KINDS[1])


# ------------------------------------------------------------------------- verdicts
ESCAPE_CLAIM = ("Noise lets gradient descent escape a strict saddle that it never leaves "
                "from the stable manifold; with isotropic noise σ the escape takes about "
                r"$\log(c/\sigma)/\log(1 - \eta\lambda_{\min})$ steps ($\lambda_{\min} < 0$).")
DERIVATION = KINDS[1]


def escape_law_verdict(study: IsotropicStudy, *, confidence: float, slope_tol: float,
                       scale: str) -> Verdict:
    """The law's slope within a relative tolerance: supported when every GD run stays and
    the slope's bootstrap interval lies inside ``prediction · (1 ± slope_tol)``;
    contradicted when GD escapes or the interval lies outside that band; inconclusive when
    the interval straddles an edge, or some noisy run did not escape (no slope). A
    derivation check: the law is derived on the page."""
    gd_stuck = bool(np.isinf(study.gd_times).all())
    gd = (f"GD from the stable manifold: {int(np.isinf(study.gd_times).sum())} of "
          f"{study.gd_times.size} runs never escaped. ")
    if not np.isfinite(study.slope_low):
        return Verdict(ESCAPE_CLAIM, "inconclusive", gd + f"{study.censored:.1%} of the "
                       "isotropic runs did not escape within the horizon, so no slope was "
                       "fitted.", scale, "sec-ch7-law", kind=DERIVATION)
    lo_b = study.predicted_slope * (1 - slope_tol)
    hi_b = study.predicted_slope * (1 + slope_tol)
    inside = lo_b < study.slope_low and study.slope_high < hi_b
    outside = study.slope_high < lo_b or study.slope_low > hi_b
    text = (gd + rf"Fitted slope: {study.slope:.2f} steps per e-fold of $1/\sigma$ "
            f"[{study.slope_low:.2f}, {study.slope_high:.2f}] ({confidence:.0%} bootstrap "
            rf"interval); prediction $1/\log(1+\eta\gamma) = {study.predicted_slope:.2f}$, "
            f"agreement band ±{slope_tol:.0%}: [{lo_b:.2f}, {hi_b:.2f}]. ")
    if gd_stuck and inside:
        return Verdict(ESCAPE_CLAIM, "supported", text + "The interval lies inside the band: "
                       "the law holds.", scale, "sec-ch7-law", kind=DERIVATION)
    if not gd_stuck or outside:
        why = "But GD left the stable manifold." if not gd_stuck else (
            "The interval lies outside the band: the law does not hold at this precision.")
        return Verdict(ESCAPE_CLAIM, "contradicted", text + why, scale, "sec-ch7-law",
                       kind=DERIVATION)
    return Verdict(ESCAPE_CLAIM, "inconclusive", text + "The interval straddles an edge of "
                   "the band.", scale, "sec-ch7-law", kind=DERIVATION)


SGD_CLAIM = ("Mini-batch noise escapes a strict saddle through its component along the "
             r"negative-curvature direction $e_{\min}$ (correlated negative curvature), with "
             r"the isotropic law at $\sigma = \sigma_B$, $\sigma_B^2 = s_y^2 (N-B)/(B(N-1))$.")


def sgd_escape_verdict(
    table: pd.DataFrame, noise_z: np.ndarray, *, z_max: float, median_tol: float, scale: str
) -> Verdict:
    """Supported: the Monte Carlo noise along e_min agrees with the formula (every
    ``|z| < z_max``) and the measured median escape step is within ``median_tol`` steps of
    the prediction at every B where both are finite; contradicted otherwise; inconclusive if
    no B has both. Columns as in :attr:`SGDStudy.table`."""
    med = table["SGD median escape"].to_numpy(dtype=float)
    pred = np.asarray(table["predicted median"].to_numpy(dtype=float))
    both = np.isfinite(med) & np.isfinite(pred)
    z = np.abs(np.asarray(noise_z, dtype=float))
    zmax = float(z.max()) if z.size else float("nan")
    if not both.any():
        return Verdict(SGD_CLAIM, "inconclusive", "No batch size has both a measured and a "
                       "predicted median escape step.", scale, "sec-ch7-sgd", kind=DERIVATION)
    worst = float(np.max(np.abs(med[both] - pred[both])))
    text = (f"Noise along $e_{{\\min}}$: largest absolute (MC − formula)/s.e. over B < N: "
            f"{zmax:.2f} "
            f"(threshold {z_max:g}). Largest gap between measured and predicted median SGD "
            f"escape step: {worst:.1f} steps (threshold {median_tol:g}). ")
    ok = np.isfinite(zmax) and zmax < z_max and worst <= median_tol
    return Verdict(SGD_CLAIM, "supported" if ok else "contradicted",
                   text + ("Both agree." if ok else "At least one disagrees."), scale,
                   "sec-ch7-sgd", kind=DERIVATION)


def matched_isotropic_faster(table: pd.DataFrame) -> bool:
    """True when GD + isotropic noise of matched trace escaped no later (median) than SGD at
    every B where both the SGD median and its prediction are finite. Columns as in
    :attr:`SGDStudy.table`."""
    med = table["SGD median escape"].to_numpy(dtype=float)
    pred = table["predicted median"].to_numpy(dtype=float)
    both = np.isfinite(med) & np.isfinite(pred)
    iso = table["isotropic (matched trace) median"].to_numpy(dtype=float)
    return bool(np.all(iso[both] <= med[both]))


# ------------------------------------------------------- stuck against a training budget
def budget_steps(batch_sizes: Sequence[int], *, n: int, epochs: int) -> np.ndarray:
    """Optimizer steps of a run of ``epochs`` epochs with the last partial batch dropped, as
    chapter 8's plan trains: ``epochs · ⌊N/B⌋`` per batch size. ``(len(batch_sizes),)``."""
    n = check_positive_int("n", n)
    epochs = check_positive_int("epochs", epochs)
    bs = np.asarray([check_positive_int("batch_sizes[]", int(b)) for b in batch_sizes])
    if (bs > n).any():
        raise ValueError(f"batch_sizes must be <= n = {n}, got {bs.tolist()}")
    return epochs * (n // bs)


def minibatch_noise_sd(batch_sizes: Sequence[int], *, n: int, s_y: float) -> np.ndarray:
    """Standard deviation ``σ_B = s_y √((N − B)/(B (N − 1)))`` of the mini-batch noise along
    e_min (Lemma 1, batches drawn without replacement). ``(len(batch_sizes),)``."""
    b = np.asarray(batch_sizes, dtype=float)
    return s_y * np.sqrt((n - b) / (b * (n - 1)))


def escape_within_budget(
    sigmas: np.ndarray, budgets: np.ndarray, *, gamma: float, lr: float, y_escape: float,
    runs: int, y0: float = 0.0, seed: int = 0,
) -> np.ndarray:
    """Escape from the strict saddle along e_min within a budget of steps, per group: the
    unstable coordinate ``y_{t+1} = y_t − η(−γ y_t + y_t³ + ξ_t)``, ``ξ_t ~ N(0, σ_g²)``,
    from ``y_0``, for ``budgets[g]`` steps (the stable coordinate decouples and plays no
    part). The noise is Gaussian with the mini-batch variance: section 7.3 checks that
    batch means behave so. ``sigmas, budgets: (G,)``; returns ``(G,)`` the number of runs
    (of ``runs``) with ``|y_t| >= y_escape`` for some ``t <= budgets[g]``."""
    sig = np.asarray(sigmas, dtype=float)
    steps = np.asarray(budgets, dtype=int)
    if sig.shape != steps.shape or sig.ndim != 1:
        raise ValueError(f"sigmas and budgets must be 1-D of equal length, got {sig.shape} "
                         f"and {steps.shape}")
    order = np.argsort(-steps, kind="stable")  # longest budgets first: a prefix stays active
    rng = np.random.default_rng(seed)
    y = np.full((sig.size, check_positive_int("runs", runs)), float(y0))
    hit = np.zeros(y.shape, dtype=bool)
    for t in range(int(steps.max(initial=0))):
        k = int((steps[order] > t).sum())
        g = order[:k]
        xi = sig[g, None] * rng.standard_normal((k, runs))
        y[g] = y[g] - lr * (-gamma * y[g] + y[g] ** 3 + xi)
        hit[g] |= np.abs(y[g]) >= y_escape
        y[g] = np.where(hit[g], y_escape, y[g])  # park escaped runs
        if hit[g].all():
            break
    return hit.sum(1)


@dataclass
class BudgetStudy:
    """Section 7.5: per conditioning ``κ = |λ_min|/λ_max`` and batch size, the runs (of
    ``runs``) that escaped within chapter 8's budget with the batch's own noise
    (``own: (K, len(B))``) and with the small batch's noise (``small: (K, len(B))``);
    ``budgets, sigma_b: (len(B),)``; ``efolds: (K, len(B))`` the e-folds of growth the
    linearised law needs from the noise's effective start, and ``needed: (K, len(B))`` the
    median steps it predicts (:func:`predicted_offset_escape_time`)."""

    kappas: np.ndarray
    batch_sizes: np.ndarray
    budgets: np.ndarray
    sigma_b: np.ndarray
    own: np.ndarray
    small: np.ndarray
    needed: np.ndarray
    runs: int
    small_batch: int

    def table(self) -> pd.DataFrame:
        rows = []
        for i, k in enumerate(self.kappas):
            for j, b in enumerate(self.batch_sizes):
                rows.append({"κ": k, "B": int(b), "budget (steps)": int(self.budgets[j]),
                             "σ_B": self.sigma_b[j],
                             "predicted median steps": float(self.needed[i, j]),
                             "escaped": self.own[i, j] / self.runs,
                             "escaped with the small batch's noise":
                                 self.small[i, j] / self.runs})
        return pd.DataFrame(rows)


def budget_study(P: Params) -> BudgetStudy:
    """Section 7.5: the saddle with ``γ = κ λ_max`` (``λ_max = 1``, the curvature along x)
    for every κ of ``P.budget_kappas``, learning rate ``P.budget_lr`` (so ``η λ_max`` is
    that value), escape level ``escape_frac · √γ``, noise along e_min of ``P.budget_s_y``
    per example and ``N = P.budget_n``; each batch size of ``P.budget_batch_sizes`` gets
    chapter 8's budget (:func:`budget_steps`) and starts on the stable manifold."""
    bs = np.asarray(P.budget_batch_sizes, dtype=int)
    budgets = budget_steps(bs, n=P.budget_n, epochs=P.budget_epochs)
    sig = minibatch_noise_sd(bs, n=P.budget_n, s_y=P.budget_s_y)
    j0 = int(np.argmin(bs))
    own, small, needed = [], [], []
    for i, kappa in enumerate(np.asarray(P.budget_kappas, dtype=float)):
        kw = dict(gamma=kappa, lr=P.budget_lr, y_escape=P.escape_frac * np.sqrt(kappa),
                  runs=P.budget_runs)
        sigmas = np.concatenate([sig, np.full(bs.size, sig[j0])])
        hits = escape_within_budget(sigmas, np.concatenate([budgets, budgets]),
                                    seed=P.seed + 7000 + i, **kw)
        own.append(hits[: bs.size])
        small.append(hits[bs.size:])
        needed.append(predicted_offset_escape_time(sig, 0.0, lr=P.budget_lr, gamma=kappa,
                                                   y_escape=kw["y_escape"]))
    return BudgetStudy(np.asarray(P.budget_kappas, dtype=float), bs, budgets, sig,
                       np.stack(own), np.stack(small), np.stack(needed), P.budget_runs,
                       int(bs[j0]))


def half_pvalue(k: np.ndarray | int, n: int, *, above: bool) -> np.ndarray:
    """Exact one-sided binomial p-value of a count ``k`` of ``n`` runs against one half:
    ``above`` tests H0 ``p <= ½`` (``P(K >= k)``), otherwise H0 ``p >= ½`` (``P(K <= k)``),
    ``K ~ Binomial(n, ½)``."""
    from scipy.stats import binom

    k = np.asarray(k)
    return binom.sf(k - 1, n, 0.5) if above else binom.cdf(k, n, 0.5)


def stuck_codes(k_small: np.ndarray, k_large: np.ndarray, n: int, alpha: float
                ) -> np.ndarray:
    """"Very large batches stay at the saddle the small batch escapes": ``k_small: (...)``
    and ``k_large: (..., L)`` runs (of ``n``) that escaped within each budget. Code 0
    (supported): more than half the small batch's runs escape and fewer than half of every
    large batch's, each at ``alpha`` (intersection-union); 1 (contradicted): more than
    half escape at some large batch (Holm over the ``L``); 3 (inconclusive) otherwise."""
    p_sup = np.maximum(half_pvalue(k_small, n, above=True),
                       half_pvalue(k_large, n, above=False).max(-1))
    contra = (holm(half_pvalue(k_large, n, above=True)) <= alpha).any(-1)
    return np.where(p_sup <= alpha, 0, np.where(contra, 1, 3))


def noise_codes(k_own: np.ndarray, k_small_noise: np.ndarray, n: int, *, margin: float,
                alpha: float) -> np.ndarray:
    """"The smaller noise keeps them there": per large batch, the runs (of ``n``) that
    escaped within its budget with its own noise (``k_own: (..., L)``) and with the small
    batch's noise (``k_small_noise``). Code 0 (supported): with the small batch's noise more
    runs escape by more than ``margin`` at some large batch (one-sided tests, Holm over the
    ``L``); 1 (contradicted): the two fractions are within ``±margin`` at every large batch
    (two one-sided tests each, intersection-union): the budget, not the noise, decides;
    3 (inconclusive) otherwise."""
    more = (holm(difference_pvalue(k_small_noise, n, k_own, n, margin)) <= alpha).any(-1)
    p_eq = np.maximum(difference_pvalue(k_own, n, k_small_noise, n, -margin),
                      difference_pvalue(k_small_noise, n, k_own, n, -margin)).max(-1)
    return np.where(more, 0, np.where(p_eq <= alpha, 1, 3))


STUCK_CLAIM = ("Very large batches get stuck at saddles: within the steps chapter 8's plan "
               "gives them (30 epochs of 50,000 examples), SGD at $B \\ge 4096$ stays near a "
               "strict saddle that the small batch escapes.")
NOISE_CLAIM = ("It is their smaller noise that keeps very large batches at the saddle: with "
               "the small batch's noise and the same number of steps they would escape.")


def _kappa_index(study: BudgetStudy, kappa: float) -> int:
    hit = np.nonzero(np.isclose(study.kappas, kappa))[0]
    if hit.size == 0:
        raise ValueError(f"kappa must be one of the study's {study.kappas.tolist()}, got "
                         f"{kappa!r}")
    return int(hit[0])


def _budget_listing(study: BudgetStudy, i: int) -> str:
    return "; ".join(
        f"$B$ = {int(b):,}: {int(study.budgets[j]):,} steps, {study.own[i, j] / study.runs:.0%}"
        f" escaped" + (f" ({study.small[i, j] / study.runs:.0%} with the small batch's noise)"
                       if b != study.small_batch else "")
        for j, b in enumerate(study.batch_sizes))


def stuck_verdict(study: BudgetStudy, *, kappa: float, alpha: float, scale: str,
                  rates: RuleRates | None = None) -> Verdict:
    """:func:`stuck_codes` at the conditioning ``kappa`` (one of the study's). A claim about
    SGD."""
    i = _kappa_index(study, kappa)
    large = study.batch_sizes != study.small_batch
    j0 = int(np.nonzero(~large)[0][0])
    code = int(stuck_codes(study.own[i, j0], study.own[i, large], study.runs, alpha))
    sentence = (f"At $\\lvert\\lambda_{{\\min}}\\rvert/\\lambda_{{\\max}} = {kappa:g}$, from "
                f"the stable manifold, {study.runs:,} runs per batch size: "
                f"{_budget_listing(study, i)}. Rule: one-sided tests of each fraction against "
                f"one half at level {alpha:g}; supported when the small batch escapes and "
                "every large batch does not, contradicted when some large batch escapes "
                "(Holm).")
    v = Verdict(STUCK_CLAIM, OUTCOME_CODES[code], sentence, scale, "sec-ch7-budget")
    return rates.attach(v) if rates is not None else v


def noise_verdict(study: BudgetStudy, *, kappa: float, margin: float, alpha: float,
                  scale: str, rates: RuleRates | None = None) -> Verdict:
    """:func:`noise_codes` at the conditioning ``kappa``. A claim about SGD."""
    i = _kappa_index(study, kappa)
    large = study.batch_sizes != study.small_batch
    code = int(noise_codes(study.own[i, large], study.small[i, large], study.runs,
                           margin=margin, alpha=alpha))
    diff = (study.small[i, large] - study.own[i, large]) / study.runs
    at = ", ".join(f"{int(b):,}" for b in study.batch_sizes[large])
    sentence = (f"At $\\lvert\\lambda_{{\\min}}\\rvert/\\lambda_{{\\max}} = {kappa:g}$ the "
                "small batch's noise changes the escaped fraction within each large batch's "
                "budget by " + ", ".join(f"{d * 100:+.1f}" for d in diff)
                + f" points (at $B$ = {at})."
                f" Rule: one-sided tests of two fractions at level {alpha:g}; supported when "
                f"the small batch's noise escapes more by over {margin * 100:g} points at "
                f"some large batch (Holm), contradicted when the two are within "
                f"±{margin * 100:g} points at every one (two one-sided tests each).")
    v = Verdict(NOISE_CLAIM, OUTCOME_CODES[code], sentence, scale, "sec-ch7-budget")
    return rates.attach(v) if rates is not None else v


def stuck_rates(study: BudgetStudy, P: Params) -> RuleRates:
    """Error rates of :func:`stuck_codes`: false positive with one large batch at one half
    (the others and the small batch at their measured fractions; the worst large batch
    counts); power with the small batch at ``½ + effect`` and every large batch at
    ``½ − effect``."""
    i = _kappa_index(study, P.budget_kappa)
    n, eff = study.runs, P.count_effect
    large = np.nonzero(study.batch_sizes != study.small_batch)[0]
    j0 = int(np.nonzero(study.batch_sizes == study.small_batch)[0][0])
    measured = study.own[i] / n
    order = [j0, *large]
    null = {}
    for j in large:
        p = measured.copy()
        p[j] = 0.5
        null[f"B = {int(study.batch_sizes[j])} at one half"] = p[order]
    true = np.array([0.5 + eff] + [0.5 - eff] * large.size)

    def rule(c: np.ndarray) -> np.ndarray:
        return stuck_codes(c[:, 0], c[:, 1:], n, P.alpha)

    cond = (f"{n:,} independent runs per batch size; false positive: one large batch "
            f"escaping with probability one half, the others as measured; power: the small "
            f"batch escaping with probability {0.5 + eff:g} and every large batch "
            f"{0.5 - eff:g}")
    return rule_rates(rule, null, true, n=n, n_sim=P.rate_sims, seed=P.seed, conditions=cond)


def noise_rates(study: BudgetStudy, P: Params) -> RuleRates:
    """Error rates of :func:`noise_codes`: false positive with the small batch's noise
    exactly ``margin`` above the own noise at every large batch (at the measured own
    fractions, clipped); power with it ``margin + effect`` above at one large batch."""
    i = _kappa_index(study, P.budget_kappa)
    n, m, eff = study.runs, P.noise_margin, P.count_effect
    large = study.batch_sizes != study.small_batch
    own = np.clip(study.own[i, large] / n, 0.0, 1.0 - m - eff)
    lifted = own.copy()
    lifted[0] += m + eff

    def rule(c: np.ndarray) -> np.ndarray:
        k = own.size
        return noise_codes(c[:, :k], c[:, k:], n, margin=m, alpha=P.alpha)

    cond = (f"{n:,} independent runs per batch size and noise; false positive: the small "
            f"batch's noise {m * 100:g} points above the own noise at every large batch; "
            f"power: {(m + eff) * 100:g} points above at one")
    return rule_rates(rule, {"at the margin": np.concatenate([own, own + m])},
                      np.concatenate([own, lifted]), n=n, n_sim=P.rate_sims, seed=P.seed,
                      conditions=cond)
