"""Chapter 4 (sgdnoise.chapters.ch04_stability): simulations against closed forms and
independent simulations, the chapter's parameters, and every verdict on both sides of its
thresholds."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_typeset

from sgdnoise.chapters import ch04_stability as D
from sgdnoise.stats import ExponentFit

PARAMS = Path(__file__).resolve().parents[1] / "book" / "params" / "ch04_stability"
SCALE = "test"

def test_lyapunov_stationary_covariance_matches_long_simulation():
    pytest.importorskip("sgdnoise.stability")
    H = np.array([[2.0, 0.6], [0.6, 0.8]])
    C = 0.5 * H  # noise ∝ H
    chk = D.stationary_check(H, C, 0.2, steps=300, runs=20000, seed=1)
    # entries agree within ~4 standard errors of the Monte Carlo estimate
    assert np.abs(chk.z).max() < 4.5
    # independent closed form for the commuting case: Σ = η σ² / (2 − ηλ) in H's eigenbasis
    lam, U = np.linalg.eigh(H)
    closed = U @ np.diag(0.2 * 0.5 / (2 - 0.2 * lam)) @ U.T
    np.testing.assert_allclose(chk.theory, closed, rtol=1e-10)


def test_stationary_std_formula():
    s = D.stationary_std(np.array([1.0, 10.0, 25.0]), 0.1, 0.5, 2)
    expect = np.sqrt(0.1 * 0.25 / (2 * (2 - 0.1 * np.array([1.0, 10.0]))))
    np.testing.assert_allclose(s[:2], expect)
    assert np.isnan(s[2])  # ηλ = 2.5: no stationary law


def test_linear_stability_boundary():
    frac = D.gd_divergence_sweep(np.array([1.9, 1.98, 2.02, 2.1]), steps=600, runs=50)
    np.testing.assert_array_equal(frac, [0, 0, 1, 1])
    noisy = D.gd_divergence_sweep(np.array([1.9, 2.1]), steps=600, runs=200, sigma=0.1, seed=3)
    assert noisy[0] == 0 and noisy[1] == 1


def _survival_fraction(rho, r, u, *, lr, sigma, eps, steps, runs, seed):
    """Direct simulation of the quadratic, H = rho diag(1, 0.25), start r u."""
    lam = rho * np.array([1.0, 0.25])
    rng = np.random.default_rng(seed)
    x = np.tile(r * u, (runs, 1))
    ok = np.ones(runs, dtype=bool)
    for _ in range(steps):
        z = rng.standard_normal((2, runs)).T
        x = x - lr * (lam * x + sigma * np.sqrt(lam) * z)
        ok &= (x**2).sum(1) < eps**2
    return ok.mean()


def test_exact_radius_agrees_with_direct_simulation_and_bisection():
    rho = np.array([1.0, 4.0])
    kw = dict(lr=0.1, sigma=1.0, eps=1.0, steps=100)
    crit = D.quadratic_critical_radii(rho, runs=400, seed=5, **kw)
    # per-run radius from the closed form equals bisection on a quadratic-like (very deep) well
    well = D.GaussianWell(depth=1e9)
    crit_b = D.bisection_critical_radii(rho, well, runs=400, iters=18, seed=5, **kw)
    assert np.abs(crit - crit_b).max() < 1e-4
    # survival fraction just inside / outside the radius, simulated independently
    delta = 0.2
    r = D.radius_from_critical(crit, delta)
    assert 0 < r[1] < 0.95
    j = int(delta * 400)
    k = int(np.argmin(np.partition(crit[1], j, axis=-1)[:, j]))  # binding start direction
    u = np.eye(2)[k] if k < 2 else np.ones(2) / np.sqrt(2)
    inside = _survival_fraction(rho[1], 0.97 * r[1], u, runs=400, seed=5, **kw)
    outside = _survival_fraction(rho[1], 1.03 * r[1], u, runs=400, seed=5, **kw)
    assert inside >= 1 - delta
    assert outside < 1 - delta


def test_radius_quantile_definition():
    crit = np.arange(1, 11, dtype=float)[None, None, :]  # ten runs, radii 1..10
    # with δ = 0.1 one run may fail: largest r leaving at least 9 of 10 alive is 2
    assert D.radius_from_critical(crit, 0.1)[0] == 2.0
    assert D.radius_from_critical(crit, 0.05)[0] == 1.0


def test_mean_square_factor_exact_enumeration():
    a = np.array([0.0, 0.5, 1.0, 2.5, 4.0])
    for B, lr in [(1, 0.3), (2, 0.5), (3, 0.2)]:
        subsets = list(itertools.combinations(range(a.size), B))
        h = np.array([a[list(s)].mean() for s in subsets])
        exact = np.mean((1 - lr * h) ** 2)
        assert D.mean_square_factor(a, lr, B) == pytest.approx(exact, rel=1e-12)
    # B = N is GD
    assert D.mean_square_factor(a, 0.3, a.size) == pytest.approx((1 - 0.3 * a.mean()) ** 2)
    assert D.almost_sure_rate(a, np.array([0.3]), a.size)[0] == pytest.approx(
        np.log(abs(1 - 0.3 * a.mean()))
    )


def test_interpolating_simulation_growth_rate():
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, 32)
    lrs = np.array([0.5, 1.5])
    logx = D.simulate_interpolating(a, lrs, [4], steps=400, runs=300, seed=2)
    rate = D.almost_sure_rate(a, lrs, 4, num_batches=50000, seed=9)
    # law of large numbers: (1/T) log|x_T| -> E log|1 − η h_B|
    np.testing.assert_allclose(logx[0].mean(1) / 400, rate, atol=0.01)


def test_two_wells_minima_where_stated():
    w = D.TwoWells(lam_sharp=8.0, lam_flat=1.0, c_sharp=-1.0, c_flat=1.0, sigma=0.8, n=50)
    xs = np.linspace(-3, 3, 60001)
    L = w.loss(xs)
    left, right = xs < w.ridge, xs >= w.ridge
    assert xs[left][np.argmin(L[left])] == pytest.approx(-1.0, abs=1e-4)
    assert xs[right][np.argmin(L[right])] == pytest.approx(1.0, abs=1e-4)
    # equal depth σ²/2, curvatures by finite differences, barrier from the ridge
    h = 1e-3
    for c, lam in [(-1.0, 8.0), (1.0, 1.0)]:
        assert w.loss(c) == pytest.approx(0.32)
        fd = (w.loss(c + h) - 2 * w.loss(c) + w.loss(c - h)) / h**2
        assert fd == pytest.approx(lam, rel=1e-6)
    assert w.loss(w.ridge) - w.loss(-1.0) == pytest.approx(w.barrier)
    # the finite sum averages to L, and the per-example gradient variance is σ² λ_w
    for x in (-1.3, 0.2):
        assert w.example_losses(x).mean() == pytest.approx(float(w.loss(x)))
    idx = np.arange(w.n)[:, None]
    g = w.minibatch_grad(np.full(w.n, -1.0), idx)
    assert g.var() == pytest.approx(0.64 * 8.0)
    assert w.noise_variance(-1.0, 1) == pytest.approx(0.64 * 8.0)


def test_basin_selection_gd_splits_and_sgd_prefers_flat():
    w = D.TwoWells(sigma=1.0)
    out = D.basin_selection(w, lr=0.1, batch_size=1, steps=400, runs=1000, seed=0)
    assert out["gd"]["low"] <= 0.5 <= out["gd"]["high"]
    assert out["sgd"]["low"] > out["gd"]["high"]



def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="noise"):
        D.quadratic_critical_radii(np.array([1.0]), lr=0.1, sigma=1, noise="pink", steps=2, runs=2)


def test_boundaries():
    a = np.array([0.0, 0.5, 1.0, 2.5, 4.0])
    lr = D.mean_square_lr_max(a, 2)
    assert D.mean_square_factor(a, lr, 2) == pytest.approx(1.0)
    assert D.mean_square_lr_max(a, a.size) == pytest.approx(2 / a.mean())
    grid = np.linspace(0.05, 3, 60)
    assert D.almost_sure_lr_max(a, a.size, grid) == pytest.approx(grid[grid < 2 / a.mean()].max())


# ------------------------------------------------------------------- parameters
@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    P = D.Params.from_yaml(PARAMS / f"{profile}.yaml")
    assert P.profile == profile and P.lr * P.sharpness_max < 2


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (dict(sharpness_max=25.0), r"'sharpness_max' = 25.0: must satisfy lr \* sharpness_max"),
        (dict(wme_batch_sizes=[1, 64]), r"'wme_batch_sizes' = \(1, 64\): must be <= wme_n=32"),
        (dict(lyap_hessian=[1.0, 2.0, 1.0]), r"'lyap_hessian'.*positive definite"),
        (dict(div_q_max=1.9), r"'div_q_min'.*straddle 2"),
        (dict(spectrum=[0.5, 0.25]), r"'spectrum'.*must start with 1"),
        (dict(aniso_bulk=20.0), r"'aniso_bulk' = 20.0: must be < aniso_top"),
        (dict(radius_delta=0.9), r"'radius_delta' must be <= 0.5, got 0.9"),
        (dict(confidence=1.5), r"'confidence' must be <= 0.999"),
    ],
)
def test_params_refuse_bad_values_naming_them(change, pattern):
    values = D.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    values.update(change)
    with pytest.raises(ValueError, match=pattern):
        D.Params.from_mapping(values)


# ------------------------------------------------------------------- verdicts
def _fit(alpha, se):
    boot = alpha + se * np.array([-1.0, 1.0])  # two replicates: standard deviation √2·se
    return ExponentFit(alpha, 0.0, alpha - se, alpha + se, np.ones(3, bool), boot / 1.0)


def _fits(*pairs):
    return {k: _fit(a, se / np.sqrt(2)) for k, (a, se) in zip(D.SETTINGS, pairs, strict=False)}


def test_radius_verdict_flips_with_the_exponent():
    kw = dict(margin=0.25, alpha=0.05, scale=SCALE)
    ok = D.radius_verdict(_fits((0.98, 0.02), (1.02, 0.05), (1.0, 0.03)), **kw)
    assert ok.outcome == "supported" and "inside the band [0.75, 1.25]" in ok.sentence
    assert ok.kind == "claim about SGD"
    bad = D.radius_verdict(_fits((0.98, 0.02), (0.4, 0.05), (1.0, 0.03)), **kw)
    assert bad.outcome == "contradicted" and "below the band" in bad.sentence
    # an exponent that merely "covers 1" with a wide interval is not support
    wide = D.radius_verdict(_fits((1.0, 0.3), (1.0, 0.02), (1.0, 0.02)), **kw)
    assert wide.outcome == "inconclusive" and "across the edge of" in wide.sentence
    none = D.radius_verdict({}, **kw)
    assert none.outcome == "inconclusive" and "No setting" in none.sentence
    assert_typeset(ok, bad, wide)
    # an exponent near zero: its interval prints "0.00", never "-0.00"
    flat = D.radius_verdict(_fits((-0.001, 0.002), (1.0, 0.02), (1.0, 0.02)), **kw)
    assert "-0.00" not in flat.sentence and "0.00" in flat.sentence


def test_exponent_codes_band_and_holm():
    se = np.array([0.05, 0.05, 0.05])
    codes = D.exponent_codes(np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.3], [1.0, 1.0, 1.6],
                                       [1.0, np.nan, 1.0]]), np.broadcast_to(se, (4, 3)),
                             margin=0.25, level=0.05)
    # all inside; one at the edge (undecided); one far outside; a missing setting ignored
    np.testing.assert_array_equal(codes, [0, 3, 1, 0])
    # Holm: a p-value that passes alone at 0.05 does not pass as one of three
    one_of_three = D.exponent_codes(np.array([1.0, 1.0, 1.25 + 0.05 * 2.2]), se,
                                    margin=0.25, level=0.05)
    assert int(one_of_three) == 3
    assert int(D.exponent_codes(np.array([1.25 + 0.05 * 2.2]), np.array([0.05]),
                                margin=0.25, level=0.05)) == 1


def test_exponent_rates_control_the_false_positive_rate():
    r = D.exponent_rates(np.array([0.05, 0.06, 0.02]), margin=0.25, level=0.05, n_runs=100,
                         n_sim=4000, seed=1)
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert r.power > 0.9
    # a noisier estimate loses power (the rule is not a tautology)
    weak = D.exponent_rates(np.array([0.3]), margin=0.25, level=0.05, n_runs=100,
                            n_sim=2000, seed=1)
    assert weak.power < 0.2


def test_lyapunov_verdict_threshold():
    z = np.array([[0.5, -3.9], [-3.9, 1.0]])
    assert D.lyapunov_verdict(z, 100, z_max=4.0, scale=SCALE).outcome == "supported"
    v = D.lyapunov_verdict(z, 100, z_max=3.0, scale=SCALE)
    assert v.outcome == "contradicted" and "beyond 3 standard errors" in v.sentence
    assert v.kind == "derivation check"
    assert_typeset(v)


def test_linear_boundary_verdict_both_sides():
    q = np.array([1.9, 1.98, 2.0, 2.02, 2.1])
    gd = np.array([0, 0, 0.5, 1, 1.0])
    kw = dict(margin=0.01, below_max=0.05, above_min=0.5, scale=SCALE)
    assert D.linear_boundary_verdict(q, gd, np.array([0, 0.04, 0.5, 0.6, 1]),
                                     **kw).outcome == "supported"
    assert D.linear_boundary_verdict(q, gd, np.array([0, 0.2, 0.5, 0.6, 1]),
                                     **kw).outcome == "contradicted"  # diverges below 2
    assert D.linear_boundary_verdict(q, gd, np.array([0, 0, 0.5, 0.4, 1]),
                                     **kw).outcome == "contradicted"  # survives above 2
    assert D.linear_boundary_verdict(q[:3], gd[:3], gd[:3], **kw).outcome == "inconclusive"
    v = D.linear_boundary_verdict(q, gd, gd, **kw)
    assert r"diverge exactly when $\eta\lambda_{\max} > 2$" in v.claim
    assert_typeset(v)


def _wme_table(sim, ms, asb):
    return pd.DataFrame({"B": range(len(sim)), "mean-square η_max (eq)": ms,
                         "almost-sure η_max": asb, "simulated edge η": sim})


def test_wme_verdict_each_outcome():
    sim = [2.5, 2.25]
    kw = dict(tol_steps=0.5, scale=SCALE)
    # almost-sure boundary inside the bracket [edge − 0.25, edge] at every B: the derivation
    v = D.wme_verdict(_wme_table(sim, [0.914, 2.0], [2.416, 1.997]), 0.25, **kw)
    assert v.outcome == "supported" and "up to 1.59" in v.sentence
    assert v.kind == "derivation check"
    assert_typeset(v)
    # the mean-square boundary agrees instead
    v = D.wme_verdict(_wme_table(sim, [2.4, 2.1], [3.0, 3.0]), 0.25, **kw)
    assert v.outcome == "contradicted"
    # neither
    assert D.wme_verdict(_wme_table(sim, [0.9, 2.0], [1.5, 2.0]), 0.25,
                         **kw).outcome == "mixed"
    # one step more tolerance turns "neither" into "almost-sure agrees"
    assert D.wme_verdict(_wme_table(sim, [0.9, 2.0], [1.9, 2.0]), 0.25, tol_steps=1.5,
                         scale=SCALE).outcome == "supported"
    assert D.wme_verdict(_wme_table([np.nan, np.nan], [1, 2], [1, 2]), 0.25,
                         **kw).outcome == "inconclusive"


def _sel(sgd, iso, gd, n=1000):
    return {m: {"flat": k / n, "low": 0.0, "high": 1.0, "count": k, "runs": n}
            for m, k in (("sgd", sgd), ("isotropic", iso), ("gd", gd))}


def test_difference_pvalue_is_one_sided_and_valid_at_the_edges():
    assert D.difference_pvalue(600, 1000, 500, 1000) < 1e-5
    assert D.difference_pvalue(500, 1000, 600, 1000) > 1 - 1e-5
    # 0 against 0 and n against n: no evidence either way
    assert 0.4 < D.difference_pvalue(0, 100, 0, 100) <= 0.5
    assert 0.4 < D.difference_pvalue(100, 100, 100, 100) <= 0.5
    # a margin shifts the null: 60% against 50% is not 15 points more
    assert D.difference_pvalue(600, 1000, 500, 1000, margin=0.15) > 0.95


def test_basin_verdict_both_sides_and_its_rates():
    kw = dict(alpha=0.05, scale=SCALE)
    assert D.basin_verdict(_sel(950, 850, 500), **kw).outcome == "supported"
    assert D.basin_verdict(_sel(600, 850, 500), **kw).outcome == "contradicted"
    assert D.basin_verdict(_sel(860, 850, 500), **kw).outcome == "inconclusive"
    # SGD above isotropic noise but not above GD: the intersection-union rule refuses
    assert D.basin_verdict(_sel(950, 850, 940), **kw).outcome == "inconclusive"
    r = D.basin_rates(_sel(950, 850, 500), n=1000, alpha=0.05, effect=0.05, n_sim=4000,
                      seed=0)
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert r.power > 0.8
    v = D.basin_verdict(_sel(950, 850, 500), rates=r, **kw)
    assert v.false_positive_rate == r.false_positive and "false-positive rate" in v.sentence


def _study(counts, n=1000, traces=(0.5, 1.0)):
    """An AnisotropyStudy whose kinds left ``counts[kind]`` times per trace (wall) and the
    same through the ball."""
    times = {}
    for kind, ks in counts.items():
        t = np.full((len(traces), n), np.inf)
        for j, k in enumerate(ks):
            t[j, :k] = 5.0
        for ex in D.EXITS:
            times[(kind, ex)] = t
    eigs = np.array([10.0, 0.5, 0.5])
    eff = {k: np.array([D.escape_efficiency(eigs, v) for v in
                        (D.noise_shapes(eigs, tr)[k] for tr in traces)]) for k in counts}
    en = {k: np.array([D.stationary_energy(eigs, D.noise_shapes(eigs, tr)[k], 0.1)
                       for tr in traces]) for k in counts}
    return D.AnisotropyStudy(eigs, np.asarray(traces), times, eff, en, 0.95)


def test_anisotropy_and_mechanism_verdicts_each_outcome():
    a, i, f = D.NOISE_KINDS
    kw = dict(alpha=0.05, scale=SCALE)
    up = _study({a: [600, 900], i: [400, 900], f: [100, 500]})
    assert D.anisotropy_verdict(up, **kw).outcome == "supported"
    assert D.mechanism_verdict(up, **kw).outcome == "supported"  # flat leaves least
    down = _study({a: [400, 900], i: [600, 900], f: [800, 950]})
    assert D.anisotropy_verdict(down, **kw).outcome == "contradicted"
    v = D.mechanism_verdict(down, **kw)
    assert v.outcome == "contradicted" and "Euclidean exit" in v.sentence
    both = _study({a: [600, 400], i: [400, 600], f: [400, 600]})
    assert D.anisotropy_verdict(both, **kw).outcome == "mixed"
    same = _study({a: [500, 900], i: [505, 900], f: [500, 900]})
    assert D.anisotropy_verdict(same, **kw).outcome == "inconclusive"
    assert_typeset(v, D.anisotropy_verdict(up, **kw))


def test_comparison_rates_false_positive_and_power():
    base = np.array([0.0, 0.2, 0.9])
    r = D.comparison_rates(base, n=1000, alpha=0.05, effect=0.05, n_sim=4000, seed=0,
                           names=("A", "B"))
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert r.power > 0.9
    small = D.comparison_rates(base, n=50, alpha=0.05, effect=0.05, n_sim=2000, seed=0,
                               names=("A", "B"))
    assert small.power < r.power


# ------------------------------------------------------------ anisotropic escape
def test_escape_efficiency_and_a_deterministic_exit():
    lam = np.array([4.0, 1.0])
    assert D.escape_efficiency(lam, np.array([0.5, 0.5])) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="equal length"):
        D.escape_efficiency(lam, np.ones(3))
    with pytest.raises(ValueError, match="exit"):
        D.anisotropic_escape(lam, np.ones(2), depth=0.1, wall=4, lr=0.1, steps=2, runs=2,
                             exit="square")
    # without noise a run at the minimum never leaves
    t = D.anisotropic_escape(lam, np.zeros(2), depth=0.1, wall=4, lr=0.1, steps=50, runs=5)
    assert np.isinf(t).all()
    # huge noise leaves at the first step
    t = D.anisotropic_escape(lam, np.full(2, 1e6), depth=0.1, wall=4, lr=0.1, steps=5, runs=5)
    assert (t == 1).all()


def test_aligned_noise_escapes_more_than_isotropic_in_a_sharp_basin():
    eigs = np.array([10.0] + [0.5] * 9)
    kw = dict(depth=0.1, wall=4.0, lr=0.1, steps=200, runs=400, seed=3)
    aligned = D.anisotropic_escape(eigs, 0.5 * eigs / eigs.sum(), **kw)
    iso = D.anisotropic_escape(eigs, np.full(10, 0.05), **kw)
    assert np.isfinite(aligned).mean() > np.isfinite(iso).mean() + 0.3


def test_stationary_energy_is_the_same_for_every_shape_at_small_steps():
    eigs = np.array([10.0] + [0.5] * 9)
    shapes = D.noise_shapes(eigs, 1.0)
    for var in shapes.values():
        assert var.sum() == pytest.approx(1.0)  # the same trace
    # exact Lyapunov value against the closed form, and ≈ η tr Σ / 2 when ηλ ≪ 1
    e = {k: D.stationary_energy(eigs, v, 0.001) for k, v in shapes.items()}
    for v in e.values():
        assert v == pytest.approx(0.001 / 2, rel=0.01)
    # the efficiency differs by large factors at the same trace
    eff = {k: D.escape_efficiency(eigs, v) for k, v in shapes.items()}
    assert eff["aligned with H"] > 4 * eff["isotropic"] > 4 * eff["one flat direction"]
    with pytest.raises(ValueError, match=r"lr \* eigenvalue"):
        D.stationary_energy(eigs, shapes["isotropic"], 0.3)


def test_stationary_energy_matches_simulation():
    eigs = np.array([4.0, 0.5])
    var = np.array([0.3, 0.7])
    d = D.simulate_stationary(np.diag(eigs), np.diag(var), 0.1, steps=400, runs=20000,
                              seed=4)
    sim = float(((d**2) * eigs).sum(1).mean())
    assert sim == pytest.approx(D.stationary_energy(eigs, var, 0.1), rel=0.03)


def test_flat_direction_noise_leaves_the_wall_more_than_isotropic_noise():
    """The tail-shape reading of section 4.6: at equal trace, rank-one noise along a flat
    direction (the smallest tr(HΣ)) leaves the Hessian wall more often than isotropic
    noise, and the Euclidean ball reverses aligned against isotropic."""
    eigs = np.array([10.0] + [0.5] * 9)
    sh = D.noise_shapes(eigs, 0.5)
    kw = dict(depth=0.1, wall=4.0, lr=0.1, steps=300, runs=400, seed=2)
    flat = np.isfinite(D.anisotropic_escape(eigs, sh["one flat direction"], **kw)).mean()
    iso = np.isfinite(D.anisotropic_escape(eigs, sh["isotropic"], **kw)).mean()
    assert flat > iso + 0.1
    ball = dict(kw, exit="Euclidean ball", radius=0.3)
    iso_b = np.isfinite(D.anisotropic_escape(eigs, sh["isotropic"], **ball)).mean()
    al_b = np.isfinite(D.anisotropic_escape(eigs, sh["aligned with H"], **ball)).mean()
    assert iso_b > al_b + 0.2


def test_isotropic_noise_has_the_trace_of_hessian_noise_at_the_mid_sharpness():
    spectrum, rho_mid, sigma = (1.0, 0.25), 3.0, 0.7
    c = D.matched_iso_scale(spectrum, rho_mid)
    lam = rho_mid * np.array(spectrum)
    tr_h = (D._noise_factor(lam, "hessian", sigma, 1) ** 2).sum()
    tr_i = (D._noise_factor(lam, "isotropic", sigma, 1, c) ** 2).sum()
    assert tr_i == pytest.approx(tr_h)


def test_radius_fit_leaves_out_censored_points_and_the_range_beyond():
    rho = np.array([1.0, 2.0, 4.0, 8.0])
    # critical radii whose δ-quantile is exactly 1/ρ (α = 1), except the cap ε = 1 at ρ = 1
    crit = np.stack([np.full((1, 50), min(1.0, 1.2 / r)) for r in rho])
    fit = D.radius_exponent(rho, crit, 0.1, n_boot=20, keep=np.array([1, 1, 1, 0], bool),
                            cap=1.0)
    np.testing.assert_array_equal(fit.used, [False, True, True, False])
    assert fit.alpha == pytest.approx(1.0)
