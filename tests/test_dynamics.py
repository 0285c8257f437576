"""Tests for sgdnoise.dynamics against closed forms and independent simulations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sgdnoise import dynamics as D


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


def test_power_law_fit_and_bootstrap():
    x = np.geomspace(1, 100, 6)
    assert D.power_law_fit(x, 3 * x**-0.7)[0] == pytest.approx(0.7)
    rng = np.random.default_rng(0)
    noisy = 2 * x[:, None] ** -1.0 * np.exp(0.05 * rng.standard_normal((6, 400)))
    fit = D.bootstrap_power_law(
        x, lambda idx: noisy.mean(1) if idx is None else noisy[:, idx].mean(1), 400, n_boot=200
    )
    assert fit.covers(1.0) and fit.ci_high - fit.ci_low < 0.05
    with pytest.raises(ValueError, match="positive"):
        D.power_law_fit(x, -x)


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
    with pytest.raises(ValueError, match="noise"):
        D.quadratic_critical_radii(np.array([1.0]), lr=0.1, sigma=1, noise="pink", steps=2, runs=2)
    with pytest.raises(ValueError, match="batch_size"):
        D.minibatch_means(np.ones(4), 5, (3,), np.random.default_rng(0))
    with pytest.raises(ValueError, match="method"):
        D.saddle_escape_times(D.SaddleProblem(), "adam", lr=0.1, steps=2, runs=2)


def test_boundaries_and_matched_sigma():
    a = np.array([0.0, 0.5, 1.0, 2.5, 4.0])
    lr = D.mean_square_lr_max(a, 2)
    assert D.mean_square_factor(a, lr, 2) == pytest.approx(1.0)
    assert D.mean_square_lr_max(a, a.size) == pytest.approx(2 / a.mean())
    grid = np.linspace(0.05, 3, 60)
    assert D.almost_sure_lr_max(a, a.size, grid) == pytest.approx(grid[grid < 2 / a.mean()].max())
    p = D.SaddleProblem(n=10, s_x=0.3, s_y=0.4)
    assert D.matched_isotropic_sigma(p, 1) ** 2 * 2 == pytest.approx(0.25)
