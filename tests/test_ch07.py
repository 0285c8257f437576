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
    kw = dict(confidence=0.95, slope_tol=0.05, scale=SCALE)
    v = D.escape_law_verdict(_iso(10.4, 10.3, 10.5), **kw)
    assert v.outcome == "supported" and v.kind == "derivation check"
    v = D.escape_law_verdict(_iso(9.0, 8.8, 9.2), **kw)
    assert v.outcome == "contradicted" and "outside the band" in v.sentence
    assert r"prediction $1/\log(1+\eta\gamma) = 10.49$" in v.sentence
    assert_typeset(v)
    # an interval that covers the prediction but is wider than the band is not agreement
    v = D.escape_law_verdict(_iso(10.5, 9.0, 12.0), **kw)
    assert v.outcome == "inconclusive" and "straddles" in v.sentence
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


# ------------------------------------------------------- stuck against a training budget
def test_budget_steps_are_chapter_8s():
    """30 epochs of 50,000 examples with the last partial batch dropped, as chapter 8's
    plan trains its essay arm; and the parameters agree with that plan."""
    np.testing.assert_array_equal(D.budget_steps([128, 4096, 32768], n=50000, epochs=30),
                                  [30 * 390, 30 * 12, 30])
    import yaml

    plan = yaml.safe_load((PARAMS.parent / "ch08_resnet_sweep" / "plan_full.yaml").read_text())
    arm_a = plan["arms"]["A"]
    P = D.Params.from_yaml(PARAMS / "default.yaml")
    assert arm_a["config"]["epochs"] == P.budget_epochs
    assert set(P.budget_batch_sizes) <= set(arm_a["batch_sizes"])
    assert plan["defaults"]["drop_last"] is True
    assert plan["data"]["n_train"] is None and P.budget_n == 50000  # all of CIFAR-10
    with pytest.raises(ValueError, match="batch_sizes"):
        D.budget_steps([60000], n=50000, epochs=30)


def test_escape_within_budget_follows_the_law():
    """Half the runs escape near the predicted median step: a budget just below it keeps
    most runs, one just above frees most."""
    gamma, lr, y_esc = 0.1, 1.0, 0.5 * np.sqrt(0.1)
    sig = 1e-4
    med = D.predicted_offset_escape_time(sig, 0.0, lr=lr, gamma=gamma, y_escape=y_esc)[0]
    hits = D.escape_within_budget(np.array([sig, sig]), np.array([int(med) - 8,
                                                                  int(med) + 8]),
                                  gamma=gamma, lr=lr, y_escape=y_esc, runs=2000, seed=3)
    assert hits[0] < 0.35 * 2000 and hits[1] > 0.65 * 2000
    # smaller noise needs more steps: at the same budget fewer runs escape
    lo = D.escape_within_budget(np.array([sig / 30]), np.array([int(med) + 8]), gamma=gamma,
                                lr=lr, y_escape=y_esc, runs=2000, seed=3)
    assert lo[0] < hits[1] - 500
    with pytest.raises(ValueError, match="equal length"):
        D.escape_within_budget(np.ones(2), np.ones(3, int), gamma=1, lr=1, y_escape=1, runs=2)


def test_half_pvalue_is_exact_and_one_sided():
    assert D.half_pvalue(60, 100, above=True) == pytest.approx(0.0284, abs=1e-3)
    assert D.half_pvalue(60, 100, above=False) > 0.95
    assert D.half_pvalue(0, 100, above=False) < 1e-20


def _budget(own, small, runs=1000, Bs=(128, 4096, 8192)):
    return D.BudgetStudy(np.array([0.01]), np.array(Bs), np.array([11700, 360, 180]),
                         np.ones(len(Bs)), np.array([own]), np.array([small]),
                         np.ones((1, len(Bs))), runs, Bs[0])


def test_stuck_verdict_both_sides():
    kw = dict(kappa=0.01, alpha=0.05, scale=SCALE)
    v = D.stuck_verdict(_budget([1000, 10, 0], [1000, 10, 0]), **kw)
    assert v.outcome == "supported" and v.kind == "claim about SGD"
    assert "$B$ = 4,096: 360 steps, 1% escaped" in v.sentence
    assert D.stuck_verdict(_budget([1000, 900, 0], [1000, 900, 0]), **kw).outcome == \
        "contradicted"
    # the small batch does not escape either: not the essay's contrast
    assert D.stuck_verdict(_budget([400, 10, 0], [400, 10, 0]), **kw).outcome == \
        "inconclusive"
    assert_typeset(v)
    with pytest.raises(ValueError, match="kappa"):
        D.stuck_verdict(_budget([1, 1, 1], [1, 1, 1]), kappa=0.5, alpha=0.05, scale=SCALE)


def test_noise_verdict_both_sides():
    kw = dict(kappa=0.01, margin=0.05, alpha=0.05, scale=SCALE)
    # the small batch's noise frees 30 points more runs at B = 4096: supported
    v = D.noise_verdict(_budget([1000, 100, 0], [1000, 400, 0]), **kw)
    assert v.outcome == "supported" and "+30.0" in v.sentence
    # identical fractions: the budget decides, contradicted
    v = D.noise_verdict(_budget([1000, 0, 0], [1000, 0, 0]), **kw)
    assert v.outcome == "contradicted"
    # 4 points apart on few runs: neither
    assert D.noise_verdict(_budget([100, 20, 0], [100, 24, 0], runs=100),
                           **kw).outcome == "inconclusive"
    assert_typeset(v)


def test_stuck_and_noise_rates():
    P = D.Params.from_yaml(PARAMS / "smoke.yaml")
    st = _budget([1000, 0, 0], [1000, 0, 0])
    r = D.stuck_rates(st, P)
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / P.rate_sims)
    assert r.power > 0.5
    r = D.noise_rates(st, P)
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / P.rate_sims)
    assert r.power > 0.8
    # with ten runs per group the same rules have little power
    few = _budget([10, 0, 0], [10, 0, 0], runs=10)
    assert D.noise_rates(few, P).power < 0.5
