"""One-sided paired t-tests, Holm's step-down adjustment and the intersection-union test.

Every function works along the last axis of an array so that a simulation can test many
data sets at once: ``d: (..., n)`` holds ``n`` paired differences (NaN marks a missing
pair) and the result has shape ``(...)``. A test that cannot be made (fewer than two
finite differences) has p-value 1: it never rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["OneSided", "holm", "intersection_union", "one_sided"]


@dataclass(frozen=True)
class OneSided:
    """Both one-sided t-tests of the mean of paired differences against one value ``v``.

    With ``n`` finite differences of mean ``d̄`` and sample standard deviation ``s``, the
    statistic is ``t = (d̄ − v) / (s / √n)`` on ``n − 1`` degrees of freedom, and

    * ``p_greater = P(T ≥ t)``: the p-value of H0 ``μ ≤ v`` against ``μ > v``;
    * ``p_less = P(T ≤ t)``: the p-value of H0 ``μ ≥ v`` against ``μ < v``.

    ``p_greater + p_less = 1`` wherever a test is made, so at a level ``α < 1/2`` at most
    one of the two can reject. All fields have the shape of the input without its last
    axis; ``mean`` is NaN where there is no finite difference, ``se`` where there are
    fewer than two, and both p-values are 1 there."""

    mean: np.ndarray
    se: np.ndarray
    n: np.ndarray
    value: float
    p_greater: np.ndarray
    p_less: np.ndarray

    def bounds(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """The one-sided ``1 − α`` lower and upper confidence bounds of the mean,
        ``d̄ ∓ t_{1−α, n−1} · s/√n`` (together a two-sided ``1 − 2α`` interval); NaN
        where ``n < 2``. The lower bound exceeds ``v`` exactly when ``p_greater < α``."""
        df = np.where(self.n >= 2, self.n - 1, np.nan)
        q = sps.t.ppf(1.0 - alpha, df)
        return self.mean - q * self.se, self.mean + q * self.se


def one_sided(d: np.ndarray, value: float = 0.0) -> OneSided:
    """One-sided t-tests of ``mean(d) = value`` along the last axis (``d: (..., n)``, NaN =
    missing pair); see :class:`OneSided`. Where all finite differences are equal (``s =
    0``) the p-value is 0 on the side of the mean and 1 on the other (both 1 when the mean
    equals ``value``)."""
    d = np.asarray(d, dtype=float)
    finite = np.isfinite(d)
    n = finite.sum(axis=-1)
    total = np.where(finite, d, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(finite, d - mean[..., None], 0.0)
        var = (dev**2).sum(axis=-1) / np.maximum(n - 1, 1)
        se = np.where(n >= 2, np.sqrt(var / np.maximum(n, 1)), np.nan)
        t = (mean - value) / se
    df = np.maximum(n - 1, 1)
    p_greater = np.where(np.isfinite(t), sps.t.sf(np.where(np.isfinite(t), t, 0.0), df), 1.0)
    p_less = np.where(np.isfinite(t), sps.t.cdf(np.where(np.isfinite(t), t, 0.0), df), 1.0)
    exact = (n >= 2) & (se == 0)
    p_greater = np.where(exact, np.where(mean > value, 0.0, 1.0), p_greater)
    p_less = np.where(exact, np.where(mean < value, 0.0, 1.0), p_less)
    return OneSided(mean, se, n, float(value), p_greater, p_less)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis (``p: (..., k)``).

    Sort the ``k`` p-values, ``p_(1) ≤ … ≤ p_(k)``; the adjusted value of the ``i``-th is

        p̃_(i) = max_{j ≤ i} min(1, (k − j + 1) · p_(j)),

    returned in the original order. Rejecting every hypothesis with ``p̃ ≤ α`` controls the
    family-wise error rate at ``α`` for any dependence between the tests (Holm 1979). NaN
    counts as 1.

    >>> holm(np.array([0.01, 0.04, 0.03])).round(6).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.where(np.isfinite(p), np.asarray(p, dtype=float), 1.0)
    k = p.shape[-1]
    if k == 0:
        return p
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    factors = k - np.arange(k)
    stepped = np.maximum.accumulate(np.minimum(1.0, factors * ranked), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, stepped, axis=-1)
    return out


def intersection_union(*p: np.ndarray) -> np.ndarray:
    """The p-value of an intersection-union test: the alternative is that *every*
    component alternative holds (H0 is the union of the component nulls), and

        p = max_i p_i

    is a valid p-value at any level without a multiplicity correction (Berger 1982): to
    reject, every component must reject at that level. Arrays broadcast; NaN counts as
    1."""
    if not p:
        raise ValueError("intersection_union needs at least one p-value array")
    arrays = [np.where(np.isfinite(a), np.asarray(a, dtype=float), 1.0) for a in p]
    return np.maximum.reduce(np.broadcast_arrays(*arrays))
