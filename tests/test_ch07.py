"""Chapter 7 (sgdnoise.chapters.ch07_saddles): escape simulations against the linearised
law, the chapter's parameters, and every verdict on both sides of its thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_typeset

from sgdnoise.chapters import ch07_saddles as D

PARAMS = Path(__file__).resolve().parents[1] / "book" / "params" / "ch07_saddles"
SCALE = "test"

def test_saddle_gd_on_stable_manifold_never_leaves():
    p = D.SaddleProblem()
    t = D.saddle_escape_times(p, "gd", lr=0.1, steps=500, runs=10)
    assert np.isinf(t).all()
    t = D.saddle_escape_times(p, "sgd", lr=0.1, steps=500, runs=10, batch_size=p.n)
    assert np.isinf(t).all()  # B = N without replacement is GD


def test_escape_time_law_isotropic():
    p = D.SaddleProblem(gamma=1.0)
    sigmas = np.array([1e-7, 1e-5, 1e-3])
    times = np.stack(
        [
            D.saddle_escape_times(p, "isotropic", lr=0.1, steps=1000, runs=800, sigma=s, seed=i)
            for i, s in enumerate(sigmas)
        ]
    )
    pred = D.predicted_escape_time(sigmas, lr=0.1, gamma=1.0)
    se = times.std(1, ddof=1) / np.sqrt(times.shape[1])
    assert np.all(np.abs(times.mean(1) - pred) < 4 * se + 1.0)  # +1: integer step rounding
    slope, lo, hi = D.escape_law_fit(sigmas, times, n_boot=200)
    assert lo <= 1 / np.log(1.1) <= hi


def test_noise_along_emin_matches_formula():
    p = D.SaddleProblem(n=40, s_x=0.3, s_y=0.2)
    e = np.array([0.0, 1.0])
    for B in (1, 7, 39):
        mc, se = D.noise_along_direction(p, B, e, num_samples=20000, seed=B)
        assert abs(mc - p.noise_variance_along_emin(B)) < 4.5 * se
    mc, _ = D.noise_along_direction(p, 5, e, num_samples=20000, replacement=True)
    assert mc == pytest.approx(p.noise_variance_along_emin(5, replacement=True), rel=0.05)
    assert D.noise_along_direction(p, 40, e, num_samples=100)[0] == pytest.approx(0.0, abs=1e-20)



def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="method"):
        D.saddle_escape_times(D.SaddleProblem(), "adam", lr=0.1, steps=2, runs=2)
    with pytest.raises(ValueError, match="offset"):
        D.predicted_offset_escape_time(0.1, -1.0, lr=0.1, gamma=1.0)


def test_matched_sigma():
    p = D.SaddleProblem(n=10, s_x=0.3, s_y=0.4)
    assert D.matched_isotropic_sigma(p, 1) ** 2 * 2 == pytest.approx(0.25)


# ------------------------------------------------------------- off the manifold
def test_offset_prediction_limits():
    kw = dict(lr=0.1, gamma=1.0)
    a = 1.1
    cubic = np.log(1 / 0.75) / (2 * np.log(a))
    # no noise: deterministic growth from δ
    assert D.predicted_offset_escape_time(0.0, 1e-4, **kw)[0] == pytest.approx(
        np.log(0.5 / 1e-4) / np.log(a) + cubic)
    # δ = 0 reduces to the median law on the manifold
    for s in (1e-6, 1e-2):
        assert D.predicted_offset_escape_time(s, 0.0, **kw)[0] == pytest.approx(
            D.predicted_escape_time(s, statistic="median", **kw), rel=1e-6)
    assert np.isinf(D.predicted_offset_escape_time(0.0, 0.0, **kw)[0])


def test_gd_off_the_manifold_escapes_when_predicted():
    p = D.SaddleProblem()
    t = D.saddle_escape_times(p, "gd", lr=0.1, steps=500, runs=3, y0=1e-4)
    pred = D.predicted_offset_escape_time(0.0, 1e-4, lr=0.1, gamma=1.0)[0]
    assert np.isfinite(t).all() and abs(t[0] - pred) <= 1.5
    # SGD at B = N from the same offset is the same deterministic run
    t_n = D.saddle_escape_times(p, "sgd", lr=0.1, steps=500, runs=3, batch_size=p.n, y0=1e-4)
    np.testing.assert_array_equal(t, t_n)


def test_sgd_median_off_the_manifold_matches_prediction():
    p = D.SaddleProblem()
    sb = np.sqrt(p.noise_variance_along_emin(32))
    for delta in (1e-5, 1e-3):
        t = D.saddle_escape_times(p, "sgd", lr=0.1, steps=600, runs=600, batch_size=32,
                                  y0=delta, seed=4)
        pred = D.predicted_offset_escape_time(sb, delta, lr=0.1, gamma=1.0)[0]
        assert abs(np.median(t) - pred) < 2.5


# ------------------------------------------------------------------- parameters
@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    P = D.Params.from_yaml(PARAMS / f"{profile}.yaml")
    assert P.profile == profile and P.y_escape == pytest.approx(0.5 * np.sqrt(P.gamma))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (dict(batch_sizes=[1, 65]), r"'batch_sizes' = \(1, 65\): must be <= n_data=64"),
        (dict(offset_batch_sizes=[128]), r"'offset_batch_sizes' = \(128,\): must be <= n_data"),
        (dict(offsets=[0.0, 0.6]), r"'offsets' = \(0.0, 0.6\): must be < the escape level"),
        (dict(lr=2.0), r"'lr' must be <= 1.0, got 2.0"),
        (dict(iso_sigmas=[1e-3]), r"'iso_sigmas' must be a list of float with at least 2"),
    ],
)
def test_params_refuse_bad_values_naming_them(change, pattern):
    values = D.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    values.update(change)
    with pytest.raises(ValueError, match=pattern):
        D.Params.from_mapping(values)


# ------------------------------------------------------------------- verdicts
def _iso(slope, lo, hi, gd=np.inf, censored=False):
    times = np.full((2, 3), 10.0)
    if censored:
        times[0, 0] = np.inf
    return D.IsotropicStudy(np.array([1e-4, 1e-2]), times, np.full(4, gd), np.zeros(2),
                            slope, lo, hi, 10.49)


def test_escape_law_verdict_both_sides():
    kw = dict(confidence=0.95, scale=SCALE)
    assert D.escape_law_verdict(_iso(10.4, 10.3, 10.5), **kw).outcome == "supported"
    v = D.escape_law_verdict(_iso(9.0, 8.8, 9.2), **kw)
    assert v.outcome == "contradicted" and "outside the interval" in v.sentence
    assert r"prediction $1/\log(1+\eta\gamma) = 10.49$" in v.sentence
    assert_typeset(v)
    v = D.escape_law_verdict(_iso(10.4, 10.3, 10.5, gd=5.0), **kw)
    assert v.outcome == "contradicted" and "GD left" in v.sentence
    assert D.escape_law_verdict(_iso(np.nan, np.nan, np.nan, censored=True),
                                **kw).outcome == "inconclusive"


def _sgd_table(med, pred):
    return pd.DataFrame({"SGD median escape": med, "predicted median": pred})


def test_sgd_escape_verdict_both_sides():
    kw = dict(z_max=4.0, median_tol=3.0, scale=SCALE)
    good = _sgd_table([39.0, 51.0, np.inf], [38.5, 50.0, np.inf])
    assert D.sgd_escape_verdict(good, np.array([1.0, -2.4]), **kw).outcome == "supported"
    # the noise formula fails
    assert D.sgd_escape_verdict(good, np.array([1.0, -4.4]), **kw).outcome == "contradicted"
    # the escape law fails by more than the tolerance
    bad = _sgd_table([39.0, 55.0], [38.5, 50.0])
    v = D.sgd_escape_verdict(bad, np.array([1.0]), **kw)
    assert v.outcome == "contradicted" and "5.0 steps" in v.sentence
    assert v.sentence.startswith(r"Noise along $e_{\min}$: largest absolute")
    assert r"$\sigma_B^2 = s_y^2 (N-B)/(B(N-1))$" in v.claim
    assert_typeset(v)
    assert D.sgd_escape_verdict(_sgd_table([np.inf], [np.inf]), np.array([1.0]),
                                **kw).outcome == "inconclusive"


def test_large_batch_verdict_both_sides():
    offsets = np.array([0.0, 1e-6, 1e-2])
    Bs = np.array([1, 64])
    times = np.full((3, 2, 4), 40.0)
    times[0, 1] = np.inf  # B = N on the manifold: stuck
    kw = dict(max_steps=600, scale=SCALE)
    v = D.large_batch_verdict(offsets, Bs, times, 64, **kw)
    assert v.outcome == "contradicted" and "slowed down, not stuck" in v.sentence
    times[1, 1, :3] = np.inf  # from δ = 1e-6 three of four stay
    v = D.large_batch_verdict(offsets, Bs, times, 64, **kw)
    assert v.outcome == "supported" and "1e-06" in v.sentence
    assert_typeset(v)
    assert D.large_batch_verdict(offsets[:1], Bs, times[:1], 64, **kw).outcome == \
        "inconclusive"
    assert D.large_batch_verdict(offsets, Bs, times, 128, **kw).outcome == "inconclusive"


def test_matched_isotropic_faster_flips():
    t = pd.DataFrame({"SGD median escape": [39.0, 51.0], "predicted median": [38.0, 50.0],
                      "isotropic (matched trace) median": [30.0, 42.0]})
    assert D.matched_isotropic_faster(t)
    t.loc[1, "isotropic (matched trace) median"] = 60.0
    assert not D.matched_isotropic_faster(t)


def test_offset_law_verdict_both_sides():
    kw = dict(median_tol=3.0, scale=SCALE)
    m = np.array([[38.0, np.inf], [139.0, 91.0]])
    q = np.array([[38.5, np.inf], [139.2, 90.9]])
    assert D.offset_law_verdict(m, q, **kw).outcome == "supported"
    v = D.offset_law_verdict(m + np.array([[0.0, 0.0], [5.0, 0.0]]), q, **kw)
    assert v.outcome == "contradicted" and "4.8 steps" in v.sentence
    # escaping where the law says never is a contradiction too
    v = D.offset_law_verdict(np.array([38.0, 120.0]), np.array([38.5, np.inf]), **kw)
    assert v.outcome == "contradicted" and "1 pairs escape" in v.sentence
    assert_typeset(v)
    assert D.offset_law_verdict(np.array([np.inf]), np.array([np.inf]),
                                **kw).outcome == "inconclusive"
