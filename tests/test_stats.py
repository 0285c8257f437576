"""sgdnoise.stats against closed forms, scipy and constructed data on both sides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sgdnoise import stats


def test_t_interval_matches_scipy():
    rng = np.random.default_rng(0)
    v = rng.normal(2.0, 1.5, size=12)
    iv = stats.t_interval(v, 0.9)
    lo, hi = sps.t.interval(0.9, df=11, loc=v.mean(), scale=sps.sem(v))
    assert iv.estimate == pytest.approx(v.mean())
    assert (iv.low, iv.high) == pytest.approx((lo, hi))
    assert iv.n == 12 and iv.defined


def test_t_interval_degenerate_is_nan_not_error():
    one = stats.t_interval([1.0, float("nan")])
    assert one.estimate == 1.0 and one.n == 1 and not one.defined
    assert not one.above(0.0) and not one.below(2.0)
    assert math.isnan(stats.t_interval([]).estimate)
    assert stats.t_interval([]).format() == "–"
    assert one.format(1) == "1.0 (n=1, no interval)"
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1, 2], confidence=1.5)


def test_paired_difference_flips_with_sign():
    base = np.array([0.30, 0.32, 0.29, 0.31])
    worse = stats.paired_difference(base + 0.05, base)
    assert worse.above(0.0) and worse.excludes(0.0)
    better = stats.paired_difference(base - 0.05 + np.array([0, 1e-3, -1e-3, 0]), base)
    assert better.below(0.0)
    noise = stats.paired_difference(base + np.array([0.05, -0.05, 0.04, -0.04]), base)
    assert not noise.excludes(0.0)
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_difference([1, 2], [1])


def test_tost_three_outcomes():
    rng = np.random.default_rng(1)
    tight = rng.normal(0.0, 0.002, size=10)
    assert stats.tost(tight, margin=0.01).verdict == "equivalent"
    shifted = rng.normal(0.05, 0.002, size=10)
    assert stats.tost(shifted, margin=0.01).verdict == "different"
    wide = np.array([0.03, -0.03, 0.02, -0.025])
    assert stats.tost(wide, margin=0.01).verdict == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        stats.tost(tight, margin=0)


def test_tost_uses_the_one_minus_two_alpha_interval():
    d = np.array([0.004, 0.006, 0.005, 0.007, 0.003])
    res = stats.tost(d, margin=0.008, alpha=0.05)
    ref = stats.t_interval(d, 0.90)
    assert (res.interval.low, res.interval.high) == pytest.approx((ref.low, ref.high))


def test_bootstrap_ci_covers_mean_and_shrinks():
    rng = np.random.default_rng(2)
    small = stats.bootstrap_ci(rng.normal(1, 1, 20), seed=0)
    large = stats.bootstrap_ci(rng.normal(1, 1, 2000), seed=0, n_boot=300)
    assert small.low < 1.0 < small.high or abs(small.estimate - 1) < 0.6
    assert large.half_width < small.half_width / 4
    assert not stats.bootstrap_ci([3.0]).defined


def test_spearman_ci_sign_and_width():
    x = np.arange(30.0)
    pos = stats.spearman_ci(x, x + np.sin(x))
    assert pos.estimate > 0.9 and pos.above(0.0)
    neg = stats.spearman_ci(x, -x + 3 * np.cos(x))
    assert neg.below(0.0)
    rng = np.random.default_rng(3)
    none = stats.spearman_ci(rng.normal(size=8), rng.normal(size=8))
    assert none.low < none.estimate < none.high


def test_wilson_interval_contains_proportion():
    lo, hi = stats.wilson_interval(np.array([0, 5, 10]), 10)
    assert lo[0] == 0 and hi[2] == 1 and lo[1] < 0.5 < hi[1]


def test_power_law_fits_recover_exponent():
    x = np.array([1.0, 2, 4, 8, 16])
    y = 3.0 * x**-1.5
    assert stats.power_law_fit(x, y)[0] == pytest.approx(1.5)
    fit = stats.loglog_fit(x, y)
    assert fit["slope"] == pytest.approx(-1.5) and fit["r2"] == pytest.approx(1.0)
    runs = np.stack([y * (1 + 0.01 * k) for k in range(5)])
    ef = stats.bootstrap_power_law(x, lambda idx: runs.mean(0) if idx is None
                                   else runs[idx].mean(0), 5, n_boot=50)
    assert ef.covers(1.5)
