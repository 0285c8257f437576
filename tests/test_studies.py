"""Tests for sgdnoise.studies (chapter 1-3 computations) on tiny problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdnoise import studies as S

DT = torch.float64


def _G(N: int = 60, P: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # heavy-ish tails so fourth moments matter
    return torch.randn(N, P, dtype=DT, generator=g) ** 3 + 0.5


def test_loglog_fit_recovers_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    fit = S.loglog_fit(x, 3.0 * x**-0.5)
    assert math.isclose(fit["slope"], -0.5, abs_tol=1e-12)
    assert math.isclose(fit["intercept"], math.log(3.0), abs_tol=1e-12)
    assert fit["r2"] > 0.999999
    with pytest.raises(ValueError):
        S.loglog_fit([1.0, 2.0], [1.0, 2.0])


def test_lemma1_error_study_matches_prediction_and_shrinks():
    G = _G()
    df = S.lemma1_error_study(G, 4, [50, 200, 800], num_repeats=6, seed=1)
    assert set(df.scheme) == {"with replacement", "without replacement"}
    w = df[df.scheme == "with replacement"].groupby("samples")
    mean_err = w.rel_error.mean()
    pred = w.predicted.first()
    # RMS error matches the leading-order prediction within sampling noise (6 repeats).
    rms = w.rel_error.apply(lambda e: float(np.sqrt((e**2).mean())))
    assert np.all(np.abs(rms / pred - 1) < 0.35)
    assert mean_err.iloc[0] > mean_err.iloc[-1] * 2.5  # 16x more samples: ~4x smaller
    assert df[df.scheme == "without replacement"].predicted.isna().all()


def test_predicted_covariance_error_brute_force():
    # Exact E‖Ĉ − C‖² for known-mean estimator with S = 1 equals E‖ξ‖⁴ − ‖C‖²; enumerate all
    # batches of size 2 drawn with replacement from N = 5 examples.
    G = _G(N=5, P=3, seed=2)
    Gc = G - G.mean(0)
    B = 2
    xis = torch.stack([(Gc[i] + Gc[j]) / B for i in range(5) for j in range(5)])
    e4 = float(((xis * xis).sum(1) ** 2).mean())
    C = Gc.T @ Gc / 5 / B
    want = math.sqrt(e4 - float((C * C).sum())) / float(torch.linalg.matrix_norm(C))
    assert math.isclose(S.predicted_covariance_error(G, B), want, rel_tol=1e-10)


def test_trace_vs_batch_study():
    G = _G(N=40, P=5, seed=3)
    df = S.trace_vs_batch_study(G, [1, 4, 16, 40], num_samples=3000, seed=4)
    ok = df.dropna(subset=["z"])
    assert (ok.z.abs() < 5).all()
    last = df[(df.scheme == "without replacement") & (df.batch_size == 40)].iloc[0]
    assert last.formula == 0 and last.mc_trace < 1e-20 and last.fpc == 0
    assert (df.dropna(subset=["bias_ratio"]).bias_ratio < 6).all()
    w = df[df.scheme == "with replacement"]
    fit = S.loglog_fit(w.batch_size, w.formula)
    assert math.isclose(fit["slope"], -1.0, abs_tol=1e-12)


def test_compare_matrices_and_power_law():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(8, 8, dtype=DT, generator=g)
    A = A @ A.T
    out = S.compare_matrices({"A": A, "A2": 2 * A, "I": torch.eye(8, dtype=DT)}, k=3,
                             reference="A")
    pairs = out["pairs"].set_index(["a", "b"])
    assert math.isclose(pairs.loc[("A", "A2"), "rel_dist"], 0.5, rel_tol=1e-12)
    assert math.isclose(pairs.loc[("A", "A2"), "cosine"], 1.0, rel_tol=1e-12)
    assert pairs.loc[("A", "A2"), "scaled_dist"] < 1e-6
    assert math.isclose(pairs.loc[("A", "A2"), "overlap"], 1.0, rel_tol=1e-10)
    evals = out["eigs"][out["eigs"].matrix == "A"].eigenvalue.to_numpy()
    assert np.allclose(evals, np.sort(np.linalg.eigvalsh(A.numpy()))[::-1][:3])
    h = torch.rand(200, dtype=DT, generator=g) + 0.01
    c = 0.3 * h**1.5 * torch.exp(0.01 * torch.randn(200, dtype=DT, generator=g))
    fit = S.diagonal_power_law(c, h)
    assert abs(fit["gamma"] - 1.5) < 0.02 and fit["n_used"] == 200


def test_projected_noise_and_gaussianity_predictions():
    G = _G(N=80, P=4, seed=6)
    U = torch.linalg.qr(torch.randn(4, 2, dtype=DT))[0]
    z = S.projected_noise(G, U, 1, 20000, seed=7)
    # B = 1: z is drawn from the N per-example projections: compare the second moment.
    Z1 = (G - G.mean(0)) @ U
    assert torch.allclose(z.var(0), (Z1**2).mean(0), rtol=0.06)
    tab = S.gaussianity_table(G, U, [1, 16], 10000, seed=8)
    assert np.allclose(tab.var_mc, tab.var_formula, rtol=0.08)
    b1 = tab[tab.batch_size == 1]
    assert np.allclose(b1.exkurt_mc, b1.exkurt_pred, rtol=0.3, atol=0.3)
    b16 = tab[tab.batch_size == 16]
    assert (b16.exkurt_mc.abs().to_numpy() < b1.exkurt_mc.abs().to_numpy()).all()
    qq = S.qq_points(z[:, 0], max_points=50)
    assert len(qq) == 50 and np.all(np.diff(qq.sample_quantile) >= 0)


def _tiny_problem(n: int = 40, seed: int = 0) -> S.SmallProblem:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 2, 2, dtype=DT, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return S.SmallProblem(x=x, y=y, identity={"source": "synthetic"}, classes=list("abcdefghij"))


def test_least_squares_one_step_and_markov():
    pb = _tiny_problem(60)
    ls = S.least_squares_problem(pb)
    theta = ls.theta_star + 0.3 * torch.ones_like(ls.theta_star)
    # excess loss identity
    direct = 0.5 * ((ls.X @ theta - ls.y) ** 2).mean() - ls.min_loss
    assert math.isclose(float(ls.excess_loss(theta)), float(direct), rel_tol=1e-9)
    lam = float(torch.linalg.eigvalsh(ls.H)[-1])
    df = S.one_step_quadratic_study(ls, theta, [0.2 / lam, 1.0 / lam], [1, 8], 20000, seed=1)
    assert (df.z.abs() < 5).all()
    mk = S.markov_study(ls, theta, 1.0 / lam, 1, [0.01, 0.1, 1.0], 5000, seed=2)
    assert (mk.frequency <= mk.bound + 3 * mk.frequency_se).all()


def test_curvature_matrices_softmax_regression():
    pb = _tiny_problem(12, seed=1)
    model = S.build_small_model("softmax", pb.in_shape, seed=0)
    mats = S.curvature_matrices(model, pb.x, pb.y, chunk_size=None)
    gbar = mats["gbar"]
    assert torch.allclose(mats["D"], mats["F_hat"] - torch.outer(gbar, gbar), atol=1e-12)
    assert torch.allclose(mats["F"], mats["GGN"], atol=1e-10)
    assert torch.allclose(mats["H"], mats["GGN"], atol=1e-10)  # linear model: no residual
    # independent closed form of the softmax-regression Fisher (parameters: W row-major, b)
    x = pb.x.reshape(pb.n, -1)
    xa = torch.cat([x, torch.ones(pb.n, 1, dtype=DT)], 1)
    with torch.no_grad():
        p = torch.softmax(model(pb.x), 1)
    P = mats["F"].shape[0]
    F = torch.zeros(P, P, dtype=DT)
    d = x.shape[1]
    for i in range(pb.n):
        M = torch.diag(p[i]) - torch.outer(p[i], p[i])
        Fw = torch.kron(M, torch.outer(x[i], x[i]))
        J = torch.zeros(10, P, dtype=DT)  # output Jacobian of logits
        for c in range(10):
            J[c, c * d : (c + 1) * d] = x[i]
            J[c, 10 * d + c] = 1.0
        F += J.T @ M @ J
        assert torch.allclose((J.T @ M @ J)[: 10 * d, : 10 * d], Fw)
    del xa
    assert torch.allclose(mats["F"], F / pb.n, atol=1e-12)


def test_network_one_step_matches_second_order_and_lemma2():
    pb = _tiny_problem(40, seed=2)
    model = S.build_small_model("mlp", pb.in_shape, width=5, seed=1)
    mats = S.curvature_matrices(model, pb.x, pb.y, chunk_size=None)
    lam = float(torch.linalg.eigvalsh(mats["H"])[-1])
    lr = 0.05 / lam
    df = S.network_one_step_study(model, pb.x, pb.y, [lr], 2, 2000, mats=mats, seed=3)
    row = df.iloc[0]
    # GD part: Taylor error is O(lr³); the noise part by Monte Carlo with control variate
    assert math.isclose(row.gd_change, row.pred_deterministic, rel_tol=0.05)
    assert abs(row.mc_noise_part - row.pred_noise) < 5 * row.se_cv + 0.1 * row.pred_noise
    chk = S.lemma2_network_check(mats["G"], mats["H"], 4, 5000, seed=4)
    assert abs(chk["z"]) < 5


def test_train_small_and_errors():
    pb = _tiny_problem(50, seed=3)
    model = S.build_small_model("cnn", pb.in_shape, width=2, seed=0)
    tr = S.train_small(model, pb.x, pb.y, steps=30, lr=0.1, batch_size=10, checkpoints=[0, 10])
    assert list(tr.history.step) == [0, 10, 30] and set(tr.snapshots) == {0, 10, 30}
    assert tr.history.train_loss.iloc[-1] < tr.history.train_loss.iloc[0]
    with pytest.raises(ValueError, match="name"):
        S.build_small_model("resnet", pb.in_shape)
    with pytest.raises(ValueError, match="batch_size"):
        S.train_small(model, pb.x, pb.y, steps=1, lr=0.1, batch_size=51)
    with pytest.raises(ValueError, match="U must have"):
        S.projected_noise(_G(), torch.eye(3, dtype=DT), 2, 10)


def test_load_small_problem_synthetic():
    pb = S.load_small_problem("synthetic", 30, image_size=4, seed=0)
    assert pb.x.shape == (30, 3, 4, 4) and pb.x.dtype == DT and pb.n == 30
    assert pb.identity["source"] == "synthetic" and "preprocessing" in pb.identity
    with pytest.raises(ValueError, match="image_size"):
        S.load_small_problem("synthetic", 30, image_size=5)


def test_models_are_float64():
    m = S.build_small_model("mlp", (3, 2, 2), width=4)
    assert all(p.dtype == DT for p in m.parameters())
    assert isinstance(m, nn.Module)


def test_information_equality_study_model_labels_converge_data_labels_do_not():
    g = torch.Generator().manual_seed(5)
    N, d, C = 800, 3, 3
    x = torch.randn(N, d, dtype=DT, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, 4, bias=False), nn.Tanh(), nn.Linear(4, C, bias=False))
    model = model.to(DT)
    with torch.no_grad():
        model[2].weight.mul_(3.0)  # confident predictions
        y_bad = model(x).argmin(1)  # labels the model considers least likely: misspecified
    df = S.information_equality_study(model, x, y_bad, [50, 800], seed=1)
    assert len(df) == 2 * 2 * 3 and set(df.labels) == {"data", "model"}
    m = df[df.labels == "model"].set_index(["matrix", "n"]).rel_dist
    dd = df[df.labels == "data"].set_index(["matrix", "n"]).rel_dist
    for name in ("F_hat", "D", "H"):
        # model labels: pure sampling error, shrinking about like n^(-1/2) (factor 4 here)
        assert m[(name, 800)] < 0.6 * m[(name, 50)]
        assert m[(name, 800)] < 0.3
        # misspecified data labels: a gap that does not shrink with n
        assert dd[(name, 800)] > 0.8 * dd[(name, 50)]
        assert dd[(name, 800)] > 3 * m[(name, 800)]
    with pytest.raises(ValueError, match="sizes"):
        S.information_equality_study(model, x, y_bad, [N + 1])
