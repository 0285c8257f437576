"""The decision procedure of ``sgdnoise.decide``: p-values, Holm, the per-pair calls on noisy
simulated records (every scenario of issue 16), the headline claims' exclusivity for any
input, and the error rates the harness measures.

Unless a test says otherwise the records are simulated with ``TIGHT``, a seed-to-seed spread
of 0.3 points of test error and 0.2 in ln train loss (about what a decayed learning rate and
recomputed BatchNorm statistics give on CIFAR-10), so that the tests have power; the rate
tests also use the spread measured on the 10-epoch GPU pilot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sgdnoise.decide import calls as dc
from sgdnoise.decide import harness, power, rates
from sgdnoise.decide import scenarios as ds
from sgdnoise.decide.pvalues import holm, intersection_union, one_sided

ROOT = Path(__file__).resolve().parents[1]
TIGHT = ds.Spread(0.003, 0.2, float("nan"), 30, 10, "constructed")
CURVE = ds.Curve()
TH = dc.Thresholds()
SIZES = [128, 512, 4096, 8192, 32768]


def simulate(truths: list[ds.Truth], *, n_seeds: int = 3, n_sim: int = 1, seed: int = 0,
             spread: ds.Spread = TIGHT, sizes: list[int] | None = None,
             curve: ds.Curve = CURVE) -> dc.ArmRuns:
    sizes = sizes or SIZES[:len(truths) + 1]
    return ds.simulate_arm(curve, spread, truths, batch_sizes=sizes, n_seeds=n_seeds,
                           n_sim=n_sim, rng=np.random.default_rng(seed))


def decided(truths: list[ds.Truth], seed: int = 0, **kw) -> dc.Decision:
    """The decision on one noisy simulated record frame."""
    return dc.decide(ds.to_records(simulate(truths, seed=seed, **kw)), TH)


def calls_of(dec: dc.Decision) -> dict[int, str]:
    return dict(zip(dec.table["B"], dec.table["call"], strict=True))


# --------------------------------------------------------------------------- p-values


def test_one_sided_matches_scipy_and_its_bounds() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, size=(4, 7))
    t = one_sided(d, 0.1)
    for i in range(4):
        assert t.p_greater[i] == pytest.approx(
            sps.ttest_1samp(d[i], 0.1, alternative="greater").pvalue)
        assert t.p_less[i] == pytest.approx(
            sps.ttest_1samp(d[i], 0.1, alternative="less").pvalue)
    np.testing.assert_allclose(t.p_greater + t.p_less, 1.0)
    low, high = t.bounds(0.05)
    # the lower 95% bound is above the value exactly when H0 mu <= value is rejected
    np.testing.assert_array_equal(low > 0.1, t.p_greater < 0.05)
    np.testing.assert_array_equal(high < 0.1, t.p_less < 0.05)


def test_one_sided_missing_pairs_and_degenerate_input() -> None:
    t = one_sided(np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, np.nan], [1.0, 1.0, 1.0]]), 0.0)
    assert t.n.tolist() == [2, 1, 3]
    assert t.p_greater[0] == pytest.approx(sps.ttest_1samp([1, 3], 0,
                                                           alternative="greater").pvalue)
    # one value: no test, never a rejection
    assert t.p_greater[1] == 1.0 and t.p_less[1] == 1.0 and np.isnan(t.se[1])
    # no spread: decided by the side of the mean
    assert t.p_greater[2] == 0.0 and t.p_less[2] == 1.0


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(np.array([[0.5, np.nan]])), [[1.0, 1.0]])
    assert holm(np.zeros((3, 0))).shape == (3, 0)
    # one hypothesis: unchanged
    np.testing.assert_allclose(holm(np.array([0.02])), [0.02])


def test_intersection_union_is_the_largest_p() -> None:
    np.testing.assert_allclose(intersection_union(np.array([0.01, 0.2]), np.array([0.03, 0.1])),
                               [0.03, 0.2])
    assert intersection_union(np.array([np.nan]), np.array([0.01]))[0] == 1.0
    with pytest.raises(ValueError, match="at least one"):
        intersection_union()


# --------------------------------------------------------------------------- the reference


def _hand_runs(loss0: list[float], test0: list[float], train0: list[float]) -> dc.ArmRuns:
    k = len(loss0)
    a = np.full((1, 2, 1, k), np.nan)
    loss, test, train = a.copy(), a.copy(), a.copy()
    loss[0, 0, 0], test[0, 0, 0], train[0, 0, 0] = loss0, test0, train0
    return dc.ArmRuns("A", 50_000, np.array([128, 4096]), np.array([0]), loss, train, test,
                      np.zeros((1, 2, 1), bool))


def test_matched_reference_first_passage_and_end_point() -> None:
    # loss falls, bumps up (0.8 after 0.5), then through an interpolating phase (train 0)
    runs = _hand_runs([2.3, 1.0, 0.5, 0.8, 0.2, 0.05, 0.02],
                      [0.90, 0.40, 0.30, 0.35, 0.25, 0.20, 0.24],
                      [0.90, 0.38, 0.25, 0.30, 0.05, 0.00, 0.00])
    q = np.array([[[0.6, 0.01, 3.0, 0.03]]]).reshape(1, 4, 1)
    test, train = dc.matched_reference(runs, q)
    # 0.6: first reached between 1.0 and 0.5, w = 0.4/0.5 -> 0.40 + 0.8 (0.30 - 0.40)
    assert test[0, 0, 0] == pytest.approx(0.32)
    assert train[0, 0, 0] == pytest.approx(0.38 + 0.8 * (0.25 - 0.38))
    # below every loss: the end point (0.24), not an average over the train-error-0 phase
    assert test[0, 1, 0] == pytest.approx(0.24)
    # above the initial loss: the first evaluation
    assert test[0, 2, 0] == pytest.approx(0.90)
    # inside the interpolating phase: between 0.05 and 0.02, w = 2/3
    assert test[0, 3, 0] == pytest.approx(0.20 + (2 / 3) * 0.04)


# --------------------------------------------------------------------------- issue 16's scenarios


def test_consistent_gap_of_one_and_a_half_points_is_never_also_under_trained() -> None:
    # 1.5 points at equal fit, 3 seeds: the interval's lower end sits near the 1-point
    # margin, so the call is 'gap' or 'undetermined' -- and the under-training claim is
    # never supported beside it
    seen = set()
    for seed in range(40):
        dec = decided([ds.gap(CURVE, 0.015)], seed=seed, sizes=[128, 4096])
        call = dec.table.iloc[0]["call"]
        seen.add(call)
        assert dec.table.iloc[0]["fit"] == "as well" or call == "undetermined"
        assert not (dec.gap == "supported" and dec.under_training == "supported")
    assert seen <= {"gap", "undetermined"} and "gap" in seen


def test_four_points_worse_at_zero_train_error_is_a_gap_not_under_training() -> None:
    # both batches at 0% train error; the large one ends at a higher loss inside the
    # interpolating phase and tests 4 points worse
    calls = [decided([ds.zero_train_error(CURVE, 0.04)], seed=s, sizes=[128, 4096]).table
             .iloc[0]["call"] for s in range(30)]
    assert "under-trained" not in calls
    assert set(calls) <= {"gap", "undetermined"} and calls.count("gap") >= 10
    # ... also when it clearly fits worse: then it is compared at the same train loss with
    # the small batch's first passage there, and is still a gap
    loss = 0.04  # train error 0 on the curve (zero_error_loss = 0.05), 8x the end loss
    truth = ds.Truth("interpolating, worse", loss, 0.04)
    dec = decided([truth], seed=3, sizes=[128, 4096])
    row = dec.table.iloc[0]
    assert row["fit"] == "worse" and row["compared at"] == "matched train loss"
    assert row["call"] == "gap", row.to_dict()


@pytest.mark.parametrize("train_error", [0.48, 0.6, 0.78])
def test_severe_underfit_is_not_informative(train_error: float) -> None:
    dec = decided([ds.severe_underfit(CURVE, train_error)], sizes=[128, 4096])
    row = dec.table.iloc[0]
    assert row["call"] == "not informative" and row["small-batch gap"] < TH.margin
    assert dec.gap == "inconclusive" and dec.under_training == "inconclusive"


def test_only_the_small_large_batch_fits_cannot_contradict_the_essay() -> None:
    # B = 512 fits with no gap; 4,096 and 32,768 under-fit at 60-70% train error
    truths = [ds.no_gap(CURVE), ds.severe_underfit(CURVE, 0.6), ds.severe_underfit(CURVE, 0.7)]
    dec = decided(truths, sizes=[128, 512, 4096, 32768])
    calls = calls_of(dec)
    assert calls[512] == "no gap" and not dec.table.set_index("B").loc[512, "pre-registered"]
    assert calls[4096] == calls[32768] == "not informative"
    assert dec.gap == "inconclusive" and dec.under_training == "inconclusive"


def test_a_batch_size_diverging_in_every_seed_is_listed_and_blocks_contradiction() -> None:
    truths = [ds.no_gap(CURVE), ds.divergence()]
    dec = decided(truths, sizes=[128, 4096, 32768])
    row = dec.table.set_index("B").loc[32768]
    assert row["call"] == "diverged" and row["diverged"] == "3 of 3"
    assert calls_of(dec)[4096] == "no gap"
    assert dec.gap == "inconclusive"  # not 'contradicted' from B = 4,096 alone


def _exact_pair(diffs_points: list[float]) -> pd.DataFrame:
    """B0 and B at the same loss per seed, test errors differing by ``diffs_points``."""
    rows = []
    for s, d in enumerate(diffs_points):
        for b, err, loss in ((128, 0.07, 0.005 + 0.0001 * s), (4096, 0.07 + d / 100,
                                                               0.005 + 0.0001 * s)):
            rows.append({"arm": "B", "batch_size": b, "seed": s, "run_id": f"B{b}s{s}",
                         "step": 100, "train_loss": loss, "train_error": 0.0,
                         "test_error": err, "status": "finished", "n_train": 50_000})
    return pd.DataFrame(rows)


def test_interval_from_0_2_to_1_2_points_is_not_a_gap_at_a_1_point_margin() -> None:
    dec = dc.decide(_exact_pair([0.4, 0.7, 1.0]), TH)
    row = dec.table.iloc[0]
    mean, low, high = row["difference"]
    assert (round(low * 100, 1), round(high * 100, 1)) == (0.2, 1.2)
    assert row["call"] == "undetermined" and dec.gap == "inconclusive"
    # the same differences shifted up by a point clear the margin: a gap
    assert dc.decide(_exact_pair([1.4, 1.7, 2.0]), TH).table.iloc[0]["call"] == "gap"
    # and shifted down, the whole interval lies below the margin: no gap
    assert dc.decide(_exact_pair([-0.4, -0.1, 0.2]), TH).table.iloc[0]["call"] == "no gap"


def test_under_training_is_called_and_flips_with_a_matched_gap() -> None:
    dec = decided([ds.under_training(CURVE, 0.15)], sizes=[128, 4096])
    assert calls_of(dec)[4096] == "under-trained"
    assert dec.gap == "contradicted" and dec.under_training == "supported"
    dec = decided([ds.matched_gap(CURVE, 0.05, 0.15)], sizes=[128, 4096])
    assert calls_of(dec)[4096] == "gap"
    assert dec.gap == "supported" and dec.under_training == "contradicted"
    assert dec.onset == 4096 and dec.onset_fraction == pytest.approx(4096 / 50_000)


def test_holm_is_applied_to_the_preregistered_pairs_only() -> None:
    dec = decided([ds.gap(CURVE, 0.05), ds.gap(CURVE, 0.05), ds.gap(CURVE, 0.05)],
                  sizes=[128, 512, 4096, 8192])
    t = dec.table.set_index("B")
    assert np.isnan(t.loc[512, "p (gap, Holm)"]) and not t.loc[512, "pre-registered"]
    assert (t.loc[[4096, 8192], "p (gap, Holm)"] >= t.loc[[4096, 8192], "p (gap)"]).all()
    # the onset counts the descriptive pair too, and says so through B/N
    assert dec.onset == 512


def test_frame_and_array_paths_agree() -> None:
    truths = [ds.no_gap(CURVE), ds.gap(CURVE, 0.02), ds.under_training(CURVE),
              ds.severe_underfit(CURVE), ds.divergence()]
    runs = simulate(truths, n_sim=12, sizes=[128, 512, 4096, 8192, 16384, 32768])
    sim = dc.decide_runs([runs], TH)
    for i in range(12):
        dec = dc.decide(ds.to_records(runs, i), TH)
        assert list(dec.table["call"]) == list(sim.call_labels()[i])
        assert dec.gap == sim.gap_labels()[i]


def test_onset_and_bad_input() -> None:
    table = pd.DataFrame({"arm": ["B", "B", "C"], "B": [1024, 4096, 2048],
                          "B/N": [0.02, 0.08, 0.04], "call": ["no gap", "gap", "gap"]})
    assert dc.onset(table) == (2048, 0.04)
    assert dc.onset(table.assign(call="no gap")) == (None, None)
    with pytest.raises(ValueError, match="call"):
        dc.onset(table.drop(columns="call"))
    with pytest.raises(ValueError, match="alpha"):
        dc.Thresholds(alpha=0.5)
    with pytest.raises(ValueError, match="n_train"):
        dc.decide(_exact_pair([1.0, 2.0]).drop(columns="n_train"))
    with pytest.raises(ValueError, match="lack column"):
        dc.decide(pd.DataFrame({"arm": ["A"]}))


# --------------------------------------------------------------------------- exclusivity


def _arbitrary_runs(data) -> dc.ArmRuns:
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    n_b = data.draw(st.integers(2, 4))
    s = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, 5))
    shape = (1, n_b, s, k)
    values = st.one_of(st.floats(0.0, 3.0), st.just(np.nan), st.sampled_from([0.0, 0.01]))
    loss = data.draw(arrays(float, shape, elements=values))
    test = data.draw(arrays(float, shape, elements=st.one_of(st.floats(0, 1),
                                                             st.just(np.nan))))
    train = data.draw(arrays(float, shape, elements=st.floats(0, 1)))
    div = data.draw(arrays(bool, shape[:3]))
    sizes = np.array(sorted(data.draw(st.sets(st.sampled_from([64, 128, 512, 4096, 8192,
                                                               32768]),
                                              min_size=n_b, max_size=n_b))))
    return dc.ArmRuns("A", 50_000, sizes, np.arange(s), loss, train, test, div)


def test_no_input_supports_opposite_claims() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.data(), st.floats(0.001, 0.2), st.floats(0.001, 0.1), st.floats(0.01, 0.3))
    def check(data, tol, margin, alpha):
        th = dc.Thresholds(loss_tolerance=tol, margin=margin, alpha=alpha)
        sim = dc.decide_runs([_arbitrary_runs(data)], th)
        gap, under = sim.gap_labels()[0], sim.under_training_labels()[0]
        assert not (gap == "supported" and under == "supported")
        pre = sim.call_labels()[0][sim.preregistered]
        some_gap = (pre == "gap").any()
        all_fine = len(pre) > 0 and np.isin(pre, ["no gap", "under-trained"]).all()
        assert not (some_gap and all_fine)
        assert (gap == "supported") == some_gap and (gap == "contradicted") == (
            all_fine and not some_gap)

    check()


# --------------------------------------------------------------------------- spread


def test_measure_spread_pools_within_groups() -> None:
    rows = []
    values = {(128, 0): (0.10, 0.50), (128, 1): (0.12, 0.70), (4096, 0): (0.30, 1.0),
              (4096, 1): (0.36, 2.0), (4096, 2): (0.33, 1.5), (8192, 0): (0.5, 1.0)}
    for (b, s), (err, loss) in values.items():
        rows.append({"arm": "A", "batch_size": b, "seed": s, "run_id": f"{b}-{s}",
                     "step": 10, "train_loss": loss, "test_error": err,
                     "status": "finished"})
    rows.append({**rows[-1], "seed": 1, "run_id": "div", "status": "diverged",
                 "test_error": 0.9})
    sp = ds.measure_spread(pd.DataFrame(rows), "hand")
    # groups with two seeds or more: (0.10, 0.12) and (0.30, 0.36, 0.33); the single
    # finished run at 8,192 and the diverged one add nothing
    var = (1 * np.var([0.10, 0.12], ddof=1) + 2 * np.var([0.30, 0.36, 0.33], ddof=1)) / 3
    assert sp.sd_test_error == pytest.approx(np.sqrt(var)) and sp.df == 3
    assert sp.n_groups == 2 and sp.source == "hand"
    log_var = (np.var(np.log([0.5, 0.7]), ddof=1) + 2 * np.var(np.log([1, 2, 1.5]), ddof=1)) / 3
    assert sp.sd_log_train_loss == pytest.approx(np.sqrt(log_var))
    assert "3 degrees of freedom" in sp.describe()


def test_pilot_spread() -> None:
    from sgdnoise.sweep import load_records

    sp = ds.measure_spread(load_records(ROOT / "data" / "results" / "ch08_pilot"), "pilot")
    assert sp.df == 9 and sp.n_groups == 9  # 9 batch sizes x 2 seeds
    assert 0.01 < sp.sd_test_error < 0.1 and 0.0 < sp.sd_log_train_loss < 1.0


def test_simulated_spread_is_the_spread_asked_for() -> None:
    runs = simulate([ds.no_gap(CURVE)], n_seeds=2000, sizes=[128, 4096])
    loss, _, test = runs.finals()
    assert np.std(test[0, 0]) == pytest.approx(TIGHT.sd_test_error, rel=0.1)
    assert np.std(np.log(loss[0, 1])) == pytest.approx(TIGHT.sd_log_train_loss, rel=0.1)
    # independent noise per run: the two batch sizes of one seed are uncorrelated
    assert abs(np.corrcoef(test[0, 0], test[0, 1])[0, 1]) < 0.1


def test_fit_curve_follows_the_small_batch() -> None:
    runs = simulate([ds.no_gap(CURVE)], n_seeds=3, sizes=[128, 4096])
    c = ds.fit_curve(ds.to_records(runs), ["A"])
    assert c.end_loss == pytest.approx(CURVE.end_loss, rel=0.5)
    assert c.end_test_error == pytest.approx(CURVE.end_test_error, abs=0.01)
    assert ds.fit_curve(ds.to_records(runs), ["B"]) is None


# --------------------------------------------------------------------------- the harness


def test_harness_is_deterministic_and_order_free() -> None:
    def rule(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, "high", "low")

    def sim(mu: float):
        return lambda n, rng: rng.normal(mu, 1.0, n)

    a = harness.Scenario("a", "mean 0", sim(0.0))
    b = harness.Scenario("b", "mean 2", sim(2.0))
    r1 = harness.error_rates(rule, [a, b], n_sim=4000, seed=3)
    r2 = harness.error_rates(rule, [b, a], n_sim=4000, seed=3)
    assert harness.rate_of(r1, "a", "high") == harness.rate_of(r2, "a", "high")
    high = harness.rate_of(r1, "b", "high")
    assert high.low <= sps.norm.cdf(2.0) <= high.high
    assert harness.rate_of(r1, "a", "never").count == 0
    table = harness.rates_frame(r1)
    assert list(table["scenario"]) == ["a", "b"] and "%" in table.loc[0, "high"]
    slow = harness.per_data_set(lambda x: "high" if x > 0 else "low")
    r3 = harness.error_rates(slow, [a], n_sim=4000, seed=3)
    assert harness.rate_of(r3, "a", "high").count == harness.rate_of(r1, "a", "high").count
    with pytest.raises(ValueError, match="unique"):
        harness.error_rates(rule, [a, a], n_sim=10)
    with pytest.raises(ValueError, match="labels"):
        harness.error_rates(lambda x: ["x"], [a], n_sim=10)


PILOT = None


def pilot_spread() -> ds.Spread:
    global PILOT
    if PILOT is None:
        from sgdnoise.sweep import load_records

        PILOT = ds.measure_spread(load_records(ROOT / "data" / "results" / "ch08_pilot"),
                                  "pilot")
    return PILOT


@pytest.mark.parametrize("spread_name", ["tight", "pilot"])
def test_false_positive_rates_are_at_most_alpha(spread_name: str) -> None:
    # both headline claims, under the opposite truths (the boundary scenarios included),
    # at 3 seeds in a family of 4: the rate's Wilson interval reaches down to 5% or below
    spread = TIGHT if spread_name == "tight" else pilot_spread()
    r = rates.headline_error_rates(CURVE, spread, TH, n_seeds=3, family_size=4,
                                   gap_size=0.03, n_sim=2000, seed=1)
    for sc in ("no gap", "gap at the margin", "under-training"):
        assert harness.rate_of(r.rates, sc, "gap supported").low <= TH.alpha, sc
    for sc in ("one gap", "one gap at matched fit", "residual at the margin"):
        assert harness.rate_of(r.rates, sc, "under-training supported").low <= TH.alpha, sc
    if spread_name == "tight":
        # with the tight spread the rules have power, so the bounds above are not vacuous
        assert r.gap_power > 0.6 and r.under_power > 0.5


def test_per_pair_gap_call_rate_under_no_gap() -> None:
    # one pair, 3 seeds, true difference exactly the margin: the gap call's rate is <= alpha
    runs = simulate([ds.gap(CURVE, TH.margin)], n_seeds=3, n_sim=4000, seed=5,
                    sizes=[128, 4096])
    sim = dc.decide_runs([runs], TH)
    k = int((sim.call_labels()[:, 0] == "gap").sum())
    low, _ = ds_wilson(k, 4000)
    assert low <= TH.alpha
    # and it is not vacuous: at this tight spread the fit test passes most of the time, so
    # the rate is the error test's own size
    assert (sim.pairs[0].loss.p_less[:, 0] <= TH.alpha).mean() > 0.8


def ds_wilson(k: int, n: int) -> tuple[float, float]:
    from sgdnoise.stats import wilson_interval

    lo, hi = wilson_interval(k, n)
    return float(lo), float(hi)


@pytest.mark.parametrize("end_loss, sd_log_loss", [(0.005, 0.2), (0.07, 0.05)])
def test_power_function_matches_the_simulation(end_loss: float, sd_log_loss: float) -> None:
    # the analytic power of the gap call (one gap in a family of 4, the end-point route)
    # against the harness's rate of 'gap supported' under the 'one gap' scenario; the
    # second case has a fit test that is not sure to pass at Holm's level alpha / 4
    kw = dict(gap=0.03, margin=TH.margin, alpha=TH.alpha, family_size=4,
              loss_tolerance=TH.loss_tolerance, end_loss=end_loss)
    spread = ds.Spread(0.006, sd_log_loss, float("nan"), 30, 10, "constructed")
    n = power.seeds_for_power(spread, **kw)
    assert n is not None and n >= 3
    assert power.gap_power(spread, n_seeds=n, **kw) >= 0.8 > power.gap_power(
        spread, n_seeds=n - 1, **kw)
    curve = ds.Curve(end_loss=end_loss, zero_error_loss=max(0.05, 2 * end_loss), n_evals=6)
    truths = [ds.gap(curve, 0.03)] + [ds.no_gap(curve)] * 3
    for m in (n - 1, n):
        runs = simulate(truths, n_seeds=m, n_sim=3000, seed=7, spread=spread,
                        sizes=[128, 4096, 4097, 4098, 4099], curve=curve)
        k = int((dc.decide_runs([runs], TH).gap_labels() == "supported").sum())
        lo, hi = ds_wilson(k, 3000)
        predicted = power.gap_power(spread, n_seeds=m, **kw)
        assert lo - 0.03 <= predicted <= hi + 0.03, (m, k / 3000, predicted)


def test_pilot_spread_power_at_the_seeds_it_needs() -> None:
    # the gap size the page names (3 points) against the 1-point margin, family of 4, with
    # the spread measured on the 10-epoch GPU pilot: at the seeds power.seeds_for_power
    # asks for, the simulated power is >= 80% (within Monte Carlo error)
    spread = pilot_spread()
    kw = dict(gap=0.03, margin=TH.margin, alpha=TH.alpha, family_size=4,
              loss_tolerance=TH.loss_tolerance, end_loss=CURVE.end_loss)
    n = power.seeds_for_power(spread, **kw)
    assert n is not None
    curve = ds.Curve(n_evals=4)
    truths = [ds.gap(curve, 0.03)] + [ds.no_gap(curve)] * 3
    runs = simulate(truths, n_seeds=n, n_sim=2000, seed=11, spread=spread,
                    sizes=[128, 4096, 4097, 4098, 4099], curve=curve)
    k = int((dc.decide_runs([runs], TH).gap_labels() == "supported").sum())
    assert ds_wilson(k, 2000)[1] >= 0.8
    assert abs(k / 2000 - power.gap_power(spread, n_seeds=n, **kw)) < 0.03
    # two or three seeds, as plan_full.yaml runs today, are far from enough at this spread
    assert power.gap_power(spread, n_seeds=3, **kw) < 0.2


def test_plan_full_seeds_give_80_percent_power_at_the_midscale_spread() -> None:
    # issue 16 §2: the full plan's seeds per pre-registered pair give >= 80% power for the
    # gap the chapter names (3 points), Holm over the plan's whole family, at the spread
    # measured on the mid-scale CPU records; simulated with the decision code itself
    from sgdnoise.chapters import ch08_resnet_sweep as ch08
    from sgdnoise.sweep import load_records

    params = ROOT / "book" / "params" / "ch08_resnet_sweep"
    p = ch08.Params.from_yaml(params / "default.yaml")
    th = ch08.thresholds(p)
    family = ch08.plan_family(str(params / "plan_full.yaml"), th)
    mid = load_records(ROOT / "data" / "results" / "ch08_midscale")
    mid = mid[~mid["arm"].astype(str).str.endswith("-tune")]
    spread = ds.measure_spread(mid, "mid-scale")
    assert spread.df >= 10
    n, k = int(family["seeds"].min()), len(family)
    kw = dict(gap=p.gap_effect, margin=th.margin, alpha=th.alpha, family_size=k,
              loss_tolerance=th.loss_tolerance, end_loss=0.005)
    assert power.gap_power(spread, n_seeds=n, **kw) >= 0.8
    # the header's headroom: the plan's seeds keep 80% power up to the spread it states
    # (at the ln-loss spread it states), and not beyond
    import re

    header = " ".join(line.lstrip("#").strip() for line in
                      (params / "plan_full.yaml").read_text().splitlines()
                      if line.startswith("#"))
    stated = re.search(r"(\d+) seeds keep 80% power up to a spread of ([\d.]+) points "
                       r"\(at ([\d.]+) in ln train loss\)", header)
    assert stated is not None and int(stated.group(1)) == n
    edge, log_sd = float(stated.group(2)) / 100, float(stated.group(3))
    at = dict(sd_log_train_loss=log_sd, sd_train_loss=spread.sd_train_loss, df=spread.df,
              n_groups=spread.n_groups, source="header")
    assert power.gap_power(ds.Spread(edge, **at), n_seeds=n, **kw) >= 0.8
    assert power.gap_power(ds.Spread(edge + 0.001, **at), n_seeds=n, **kw) < 0.8
    curve = ds.Curve(end_loss=0.005, n_evals=4)
    truths = [ds.gap(curve, p.gap_effect)] + [ds.no_gap(curve)] * (k - 1)
    runs = simulate(truths, n_seeds=n, n_sim=2000, seed=5, spread=spread,
                    sizes=[128] + [4096 + i for i in range(k)], curve=curve)
    hits = int((dc.decide_runs([runs], th).gap_labels() == "supported").sum())
    assert ds_wilson(hits, 2000)[1] >= 0.8, hits / 2000
