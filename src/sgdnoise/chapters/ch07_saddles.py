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
The chapter's studies (what the notebook calls)
    :func:`isotropic_study`, :func:`sgd_study`, :func:`offset_study`.
Verdicts (numbers in, :class:`sgdnoise.report.Verdict` out; thresholds are arguments)
    :func:`escape_law_verdict`, :func:`sgd_escape_verdict`, :func:`offset_law_verdict`,
    :func:`large_batch_verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sgdnoise.covariance import minibatch_means
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "EULER_GAMMA",
    "IsotropicStudy",
    "OffsetStudy",
    "Params",
    "SaddleProblem",
    "SGDStudy",
    "escape_law_fit",
    "escape_law_verdict",
    "isotropic_study",
    "large_batch_verdict",
    "matched_isotropic_faster",
    "matched_isotropic_sigma",
    "noise_along_direction",
    "offset_law_verdict",
    "offset_study",
    "predicted_escape_time",
    "predicted_offset_escape_time",
    "saddle_escape_times",
    "sgd_escape_verdict",
    "sgd_study",
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

    def check(self) -> None:
        self.require(max(self.batch_sizes) <= self.n_data, "batch_sizes",
                     f"must be <= n_data={self.n_data}")
        self.require(max(self.offset_batch_sizes) <= self.n_data, "offset_batch_sizes",
                     f"must be <= n_data={self.n_data}")
        y_esc = self.escape_frac * np.sqrt(self.gamma)
        self.require(max(self.offsets) < y_esc, "offsets",
                     f"must be < the escape level escape_frac·sqrt(gamma) = {y_esc:.3g}")

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
                       "predicted escape step.", scale, "sec-ch7-offset")
    worst = float(np.max(np.abs(m[both] - q[both])))
    mismatch = int((np.isfinite(m) != np.isfinite(q)).sum())
    ok = worst <= median_tol and mismatch == 0
    text = (f"Largest gap between measured and predicted median escape step over "
            f"{int(both.sum())} (δ, noise) pairs: {worst:.1f} steps (threshold "
            f"{median_tol:g})" + (f"; {mismatch} pairs escape in one and not the other"
                                  if mismatch else "") + ". ")
    return Verdict(OFFSET_CLAIM, "supported" if ok else "contradicted",
                   text + ("The law holds." if ok else "The law does not hold here."), scale,
                   "sec-ch7-offset")


# ------------------------------------------------------------------------- verdicts
ESCAPE_CLAIM = ("Noise lets gradient descent escape a strict saddle that it never leaves "
                "from the stable manifold; with isotropic noise σ the escape takes about "
                r"$\log(c/\sigma)/\log(1 - \eta\lambda_{\min})$ steps ($\lambda_{\min} < 0$).")


def escape_law_verdict(study: IsotropicStudy, *, confidence: float, scale: str) -> Verdict:
    """Supported: every GD run stays, every noisy run escapes and the predicted slope
    ``1/log(1 + ηγ)`` lies in the slope's interval. Contradicted: GD escapes, or the
    interval excludes the prediction. Inconclusive: some noisy run did not escape (no
    slope)."""
    gd_stuck = bool(np.isinf(study.gd_times).all())
    gd = (f"GD from the stable manifold: {int(np.isinf(study.gd_times).sum())}/"
          f"{study.gd_times.size} runs never escaped. ")
    if not np.isfinite(study.slope_low):
        return Verdict(ESCAPE_CLAIM, "inconclusive", gd + f"{study.censored:.1%} of the "
                       "isotropic runs did not escape within the horizon, so no slope was "
                       "fitted.", scale, "sec-ch7-law")
    inside = study.slope_low <= study.predicted_slope <= study.slope_high
    text = (gd + f"Fitted slope: {study.slope:.2f} steps per e-fold of 1/σ ({confidence:.0%} "
            f"CI [{study.slope_low:.2f}, {study.slope_high:.2f}]); prediction "
            f"$1/\\log(1+\\eta\\gamma) = {study.predicted_slope:.2f}$. ")
    if gd_stuck and inside:
        return Verdict(ESCAPE_CLAIM, "supported", text + "The prediction lies inside the "
                       "interval: the law holds.", scale, "sec-ch7-law")
    why = ("The prediction lies outside the interval: the law does not hold at this "
           "precision." if not inside else "But GD left the stable manifold.")
    return Verdict(ESCAPE_CLAIM, "contradicted", text + why, scale, "sec-ch7-law")


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
                       "predicted median escape step.", scale, "sec-ch7-sgd")
    worst = float(np.max(np.abs(med[both] - pred[both])))
    text = (f"Noise along $e_{{\\min}}$: largest absolute (MC − formula)/s.e. over B < N: "
            f"{zmax:.2f} "
            f"(threshold {z_max:g}). Largest gap between measured and predicted median SGD "
            f"escape step: {worst:.1f} steps (threshold {median_tol:g}). ")
    ok = np.isfinite(zmax) and zmax < z_max and worst <= median_tol
    return Verdict(SGD_CLAIM, "supported" if ok else "contradicted",
                   text + ("Both agree." if ok else "At least one disagrees."), scale,
                   "sec-ch7-sgd")


STUCK_CLAIM = ("Very large batches get stuck at saddles: as B → N, SGD stays near a strict "
               "saddle indefinitely.")


def large_batch_verdict(
    offsets: np.ndarray, batch_sizes: np.ndarray, times: np.ndarray, n_data: int, *,
    max_steps: int, scale: str,
) -> Verdict:
    """Uses runs at ``B = N`` (``times: (len(offsets), len(B), runs)``, inf = stuck).
    Supported: from some start offset δ > 0 fewer than half the B = N runs escape within
    ``max_steps``. Contradicted: from every δ > 0 at least half escape (stuck only on the
    stable manifold δ = 0, a set of measure zero). Inconclusive: no δ > 0 or no B = N."""
    offsets = np.asarray(offsets, dtype=float)
    Bs = np.asarray(batch_sizes)
    if not (Bs == n_data).any() or not (offsets > 0).any():
        return Verdict(STUCK_CLAIM, "inconclusive", "The runs include no start off the stable "
                       "manifold at B = N.", scale, "sec-ch7-offset")
    j = int(np.nonzero(Bs == n_data)[0][0])
    j1 = int(np.argmin(Bs))
    parts, stuck_off = [], []
    for i, d in enumerate(offsets):
        t = times[i, j]
        esc = float(np.isfinite(t).mean())
        med = float(np.median(t))
        small = float(np.median(times[i, j1]))
        parts.append(f"δ = {d:g}: {esc:.0%} of B = N runs escaped"
                     + (f", median step {med:.0f} (B = {int(Bs[j1])}: {small:.0f})"
                        if np.isfinite(med) else ""))
        if d > 0 and esc < 0.5:
            stuck_off.append(d)
    text = (f"Within {max_steps} steps: " + "; ".join(parts) + ". ")
    if stuck_off:
        return Verdict(STUCK_CLAIM, "supported", text + f"B = N stays at the saddle even from "
                       f"δ ∈ {stuck_off}.", scale, "sec-ch7-offset")
    return Verdict(STUCK_CLAIM, "contradicted", text + "Off the stable manifold B = N "
                   "escapes too, later but within the horizon: large batches are slowed "
                   "down, not stuck.", scale, "sec-ch7-offset")


def matched_isotropic_faster(table: pd.DataFrame) -> bool:
    """True when GD + isotropic noise of matched trace escaped no later (median) than SGD at
    every B where both the SGD median and its prediction are finite. Columns as in
    :attr:`SGDStudy.table`."""
    med = table["SGD median escape"].to_numpy(dtype=float)
    pred = table["predicted median"].to_numpy(dtype=float)
    both = np.isfinite(med) & np.isfinite(pred)
    iso = table["isotropic (matched trace) median"].to_numpy(dtype=float)
    return bool(np.all(iso[both] <= med[both]))
