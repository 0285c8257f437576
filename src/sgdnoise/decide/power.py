"""The power of the ``gap`` call at equal fit, and the seeds it needs.

A pre-registered pair with a true generalization gap ``g`` at equal fit is called ``gap``
when two one-sided paired t-tests on ``n`` seeds both reject
(:mod:`sgdnoise.decide.calls`):

* the fit: H0 ``μ_Δℓ ≥ τ``; with a true ``μ_Δℓ = 0`` and a final loss ``ℓ₀ e^{σ_ℓ ε}``
  (log-normal: its log has seed-to-seed standard deviation ``σ_ℓ``), the difference of two
  independent runs has standard deviation ``√2 · ℓ₀ e^{σ_ℓ²/2} √(e^{σ_ℓ²} − 1)`` (the
  log-normal's own; the delta method's ``√2 · ℓ₀ σ_ℓ`` is half of it at ``σ_ℓ`` = 0.94, the
  mid-scale records' spread, and overstated the power there: 0.91 against 0.72 simulated
  at 8 seeds);
* the gap: H0 ``μ_Δe ≤ m``, with ``σ_Δe = √2 · σ_e``.

The pair's gap p-value is the larger of the two (an intersection-union test), and Holm's
first step in a family of ``k`` pairs compares it with ``α / k``, so *both* tests must reject
at level ``α / k``. This is the power of the one pair with a gap; with more gaps in the
family Holm's later steps are easier, so it is a lower bound.

With the two noises independent the power is the product of the two one-sided powers,
each a noncentral-t probability:

    P(T_{n−1, δ} > t_{1−a, n−1}),   δ = (μ − v) √n / σ_Δ.

The harness (:mod:`sgdnoise.decide.harness`) checks this against simulation.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats as sps

from .scenarios import Spread

__all__ = ["gap_power", "seeds_for_power"]


def _one_sided_power(effect: float, sd: float, n: int, level: float) -> float:
    """``P(reject)`` of the one-sided t-test of H0 ``μ ≤ v`` when ``μ − v = effect``, with
    ``n`` differences of standard deviation ``sd``."""
    if n < 2 or not sd > 0:
        return 0.0 if n < 2 else float(effect > 0)
    df = n - 1
    crit = float(sps.t.ppf(1.0 - level, df))
    return float(sps.nct.sf(crit, df, effect * math.sqrt(n) / sd))


def gap_power(spread: Spread, *, n_seeds: int, gap: float, margin: float, alpha: float,
              family_size: int, loss_tolerance: float, end_loss: float) -> float:
    """The power of one pre-registered pair's ``gap`` call at equal fit (see the module
    docstring): a true gap ``gap`` (error units) against the margin ``margin``, ``n_seeds``
    paired seeds, level ``alpha`` with Holm over ``family_size`` pairs, the fit tolerance
    ``loss_tolerance`` (nats) and the small batch's final train loss ``end_loss``."""
    if family_size < 1 or n_seeds < 1:
        raise ValueError(f"family_size and n_seeds must be >= 1, got {family_size}, "
                         f"{n_seeds}")
    s2 = spread.sd_log_train_loss ** 2
    sd_loss = math.sqrt(2.0) * end_loss * math.exp(s2 / 2) * math.sqrt(math.expm1(s2))
    sd_err = math.sqrt(2.0) * spread.sd_test_error
    level = alpha / family_size
    fit = _one_sided_power(loss_tolerance, sd_loss, n_seeds, level)
    err = _one_sided_power(gap - margin, sd_err, n_seeds, level)
    return fit * err


def seeds_for_power(spread: Spread, *, target: float = 0.8, n_max: int = 500,
                    **kwargs: Any) -> int | None:
    """The smallest number of seeds (2 … ``n_max``) at which :func:`gap_power` reaches
    ``target``; None when even ``n_max`` does not. ``kwargs`` are those of
    :func:`gap_power` other than ``n_seeds``."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target!r}")
    for n in range(2, n_max + 1):
        if gap_power(spread, n_seeds=n, **kwargs) >= target:
            return n
    return None
