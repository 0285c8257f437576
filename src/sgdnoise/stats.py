"""Small statistics used across the study: intervals, paired differences, equivalence tests,
rank correlations and power-law fits.

Every function takes plain sequences or arrays and returns floats or a small dataclass, so a
chapter's verdict functions can be tested with constructed numbers. Conventions:

* ``confidence`` is two-sided (0.95 gives a 95% interval).
* A statistic that cannot be estimated (too few finite values) is NaN, never an exception:
  verdict code treats a NaN interval as "cannot decide".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .validate import check_positive_int

__all__ = [
    "Equivalence",
    "ExponentFit",
    "Interval",
    "bootstrap_ci",
    "bootstrap_power_law",
    "loglog_fit",
    "paired_difference",
    "power_law_fit",
    "spearman_ci",
    "t_interval",
    "tost",
    "wilson_interval",
]


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval ``[low, high]`` from ``n`` values.

    ``low``/``high`` are NaN when the interval cannot be estimated (n < 2)."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def above(self, value: float = 0.0) -> bool:
        """True when the whole interval lies above ``value`` (False if undefined)."""
        return self.defined and self.low > value

    def below(self, value: float = 0.0) -> bool:
        """True when the whole interval lies below ``value`` (False if undefined)."""
        return self.defined and self.high < value

    def excludes(self, value: float = 0.0) -> bool:
        return self.above(value) or self.below(value)

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """``'0.123 [0.100, 0.146]'`` (values times ``scale``); ``'0.123 (n=1, no interval)'``
        without an interval; ``'–'`` when there is no value at all (n = 0)."""
        if self.n == 0:
            return "–"
        e = self.estimate * scale
        if not self.defined:
            return f"{e:.{digits}f} (n={self.n}, no interval)"
        return f"{e:.{digits}f} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of ``values`` (non-finite values are dropped).

    ``mean ± t_{(1+c)/2, n-1} · s / √n`` with ``s`` the sample standard deviation."""
    from scipy import stats as sps

    confidence = _check_confidence(confidence)
    v = _finite(values)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, confidence)
    mean = float(v.mean())
    if v.size < 2:
        return Interval(mean, float("nan"), float("nan"), 1, confidence)
    half = float(sps.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(mean, mean - half, mean + half, int(v.size), confidence)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> Interval:
    """Interval for the mean of ``a_i − b_i`` over pairs (e.g. the same seed in two arms).

    ``a, b: (n,)``; pairs with a non-finite member are dropped."""
    a_arr = np.asarray(a, dtype=float).ravel()
    b_arr = np.asarray(b, dtype=float).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must pair up, got lengths {a_arr.size} and {b_arr.size}")
    return t_interval(a_arr - b_arr, confidence)


@dataclass(frozen=True)
class Equivalence:
    """Result of a two one-sided tests (TOST) equivalence test of a mean difference.

    ``equivalent`` is True when the ``1 − 2α`` interval of the mean difference lies inside
    ``(−margin, margin)``; ``different`` is True when the two-sided ``1 − α`` interval
    excludes 0. Neither: "inconclusive"."""

    interval: Interval  # the (1 - 2 alpha) interval used by TOST
    margin: float
    equivalent: bool
    different: bool

    @property
    def verdict(self) -> str:
        """"equivalent", "different" or "inconclusive"."""
        if self.equivalent:
            return "equivalent"
        if self.different:
            return "different"
        return "inconclusive"


def tost(diffs: Sequence[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t-tests for ``|mean(diffs)| < margin`` at level ``alpha``.

    Equivalence is declared when the ``(1 − 2α)`` t-interval of the mean lies inside
    ``(−margin, margin)`` (Schuirmann 1987). ``different`` is True when the ``(1 − α)``
    two-sided interval excludes 0. Both are False for fewer than two finite values."""
    if not (isinstance(margin, (int, float)) and margin > 0):
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    if not (0 < alpha < 0.5):
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    inner = t_interval(diffs, 1 - 2 * alpha)
    outer = t_interval(diffs, 1 - alpha)
    equivalent = inner.defined and inner.low > -margin and inner.high < margin
    return Equivalence(inner, float(margin), bool(equivalent), outer.excludes(0.0))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the rows of ``values`` ((n,) or
    (n, k): rows are resampled together). No chapter calls it (they use t intervals over
    seeds); it is kept for statistics without a t interval."""
    confidence = _check_confidence(confidence)
    n_boot = check_positive_int("n_boot", n_boot)
    arr = np.asarray(values, dtype=float)
    n = arr.shape[0]
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, confidence)
    est = float(statistic(arr))
    if n < 2:
        return Interval(est, float("nan"), float("nan"), n, confidence)
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(arr[rng.integers(0, n, size=n)]) for _ in range(n_boot)],
                    dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Interval(est, float("nan"), float("nan"), n, confidence)
    lo, hi = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(est, float(lo), float(hi), n, confidence)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], confidence: float = 0.95
) -> Interval:
    """Spearman rank correlation with a Fisher-z interval (standard error
    ``sqrt((1 + ρ²/2) / (n − 3))``, Bonett & Wright 2000). Needs n >= 4 for an interval."""
    from scipy import stats as sps

    confidence = _check_confidence(confidence)
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    if n < 3:
        return Interval(float("nan"), float("nan"), float("nan"), n, confidence)
    rho = float(sps.spearmanr(xa, ya).statistic)
    if n < 4 or not np.isfinite(rho):
        return Interval(rho, float("nan"), float("nan"), n, confidence)
    se = math.sqrt((1 + rho**2 / 2) / (n - 3))
    z = math.atanh(float(np.clip(rho, -1 + 1e-12, 1 - 1e-12)))
    q = float(sps.norm.ppf(0.5 + confidence / 2))
    return Interval(rho, math.tanh(z - q * se), math.tanh(z + q * se), n, confidence)


def wilson_interval(
    k: np.ndarray | int, n: int, z: float = 1.96
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``k / n`` (``z`` = normal quantile).
    Returns ``(low, high)`` with the shape of ``k``."""
    n = check_positive_int("n", n)
    k = np.asarray(k, dtype=float)
    p = k / n
    den = 1.0 + z**2 / n
    centre = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def loglog_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line through ``(log x, log y)``: ``slope``, ``intercept`` (natural log),
    ``slope_se`` (standard error) and ``r2``. Needs >= 3 positive points."""
    lx = np.log(np.asarray(x, dtype=np.float64))
    ly = np.log(np.asarray(y, dtype=np.float64))
    if lx.shape != ly.shape or lx.size < 3 or not np.all(np.isfinite(lx + ly)):
        raise ValueError(f"need >= 3 matching positive points, got x={list(x)}, y={list(y)}")
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = max(lx.size - 2, 1)
    s2 = float(resid @ resid) / dof
    sxx = float(((lx - lx.mean()) ** 2).sum())
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    return {
        "slope": float(coef[0]),
        "intercept": float(coef[1]),
        "slope_se": math.sqrt(s2 / sxx) if sxx > 0 else float("nan"),
        "r2": 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan"),
    }


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
    """``y ∝ x^(−α)``: point estimate, bootstrap percentile interval, the points used."""

    alpha: float
    intercept: float
    ci_low: float
    ci_high: float
    used: np.ndarray  # (G,) bool: grid points with a positive value, entering the fit
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
