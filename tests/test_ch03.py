"""Tests for sgdnoise.chapters.ch03_gaussian_lemma2: projected noise and its Gaussianity,
Lemma 2 on mini-batch gradients, one-step studies (quadratic and network), Markov's bound,
Params and the verdict functions (each fed constructed numbers on both sides)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_typeset

from sgdnoise.chapters import ch03_gaussian_lemma2 as ch03
from sgdnoise.chapters.small_problems import SmallProblem, build_small_model, curvature_matrices
from sgdnoise.report import plain_subscripts

DT = torch.float64
PARAMS = Path(__file__).resolve().parents[1] / "book" / "params" / "ch03_gaussian_lemma2"


def _G(N: int = 60, P: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, P, dtype=DT, generator=g) ** 3 + 0.5


def _tiny_problem(n: int = 40, seed: int = 0) -> SmallProblem:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 2, 2, dtype=DT, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return SmallProblem(x=x, y=y, identity={"source": "synthetic"}, classes=list("abcdefghij"))


def test_projected_noise_and_gaussianity_predictions():
    G = _G(N=80, P=4, seed=6)
    U = torch.linalg.qr(torch.randn(4, 2, dtype=DT))[0]
    z = ch03.projected_noise(G, U, 1, 20000, seed=7)
    # B = 1: z is drawn from the N per-example projections: compare the second moment.
    Z1 = (G - G.mean(0)) @ U
    assert torch.allclose(z.var(0), (Z1**2).mean(0), rtol=0.06)
    tab = ch03.gaussianity_table(G, U, [1, 16], 10000, seed=8)
    assert np.allclose(tab.var_mc, tab.var_formula, rtol=0.08)
    b1 = tab[tab.batch_size == 1]
    assert np.allclose(b1.exkurt_mc, b1.exkurt_pred, rtol=0.3, atol=0.3)
    b16 = tab[tab.batch_size == 16]
    assert (b16.exkurt_mc.abs().to_numpy() < b1.exkurt_mc.abs().to_numpy()).all()
    qq = ch03.qq_points(z[:, 0], max_points=50)
    assert len(qq) == 50 and np.all(np.diff(qq.sample_quantile) >= 0)
    with pytest.raises(ValueError, match="U must have"):
        ch03.projected_noise(_G(), torch.eye(3, dtype=DT), 2, 10)


def test_noise_directions_are_unit_and_labelled():
    A = torch.diag(torch.arange(1.0, 6.0, dtype=DT))
    U, labels = ch03.noise_directions(A, A)
    assert U.shape == (5, 4) and len(labels) == 4
    assert torch.allclose(U.norm(dim=0), torch.ones(4, dtype=DT))
    assert abs(float(U[4, 0])) == pytest.approx(1.0)  # top eigenvector of diag(1..5)


def test_least_squares_one_step_and_markov():
    pb = _tiny_problem(60)
    ls = ch03.least_squares_problem(pb)
    theta = ls.theta_star + 0.3 * torch.ones_like(ls.theta_star)
    direct = 0.5 * ((ls.X @ theta - ls.y) ** 2).mean() - ls.min_loss
    assert math.isclose(float(ls.excess_loss(theta)), float(direct), rel_tol=1e-9)
    lam = float(torch.linalg.eigvalsh(ls.H)[-1])
    assert ls.stability_limit == pytest.approx(2.0 / lam, rel=1e-10)
    df = ch03.one_step_quadratic_study(ls, theta, [0.2 / lam, 1.0 / lam], [1, 8], 20000,
                                       seed=1)
    assert (df.z.abs() < 5).all()
    mk = ch03.markov_study(ls, theta, 1.0 / lam, 1, [0.01, 0.1, 1.0], 5000, seed=2)
    assert (mk.frequency <= mk.bound + 3 * mk.frequency_se).all()


def test_network_one_step_matches_second_order_and_lemma2():
    pb = _tiny_problem(40, seed=2)
    model = build_small_model("mlp", pb.in_shape, width=5, seed=1)
    mats = curvature_matrices(model, pb.x, pb.y, chunk_size=None)
    lam = float(torch.linalg.eigvalsh(mats["H"])[-1])
    lr = 0.05 / lam
    df = ch03.network_one_step_study(model, pb.x, pb.y, [lr], 2, 2000, mats=mats, seed=3)
    row = df.iloc[0]
    # GD part: Taylor error is O(lr³); the noise part by Monte Carlo with control variate
    assert math.isclose(row.gd_change, row.pred_deterministic, rel_tol=0.05)
    assert abs(row.mc_noise_part - row.pred_noise) < 5 * row.se_cv + 0.1 * row.pred_noise
    chk = ch03.lemma2_network_check(mats["G"], mats["H"], 4, 5000, seed=4)
    assert abs(chk["z"]) < 5


def test_network_one_step_by_activation_trains_missing_activation():
    pb = _tiny_problem(30, seed=4)
    model = build_small_model("mlp", pb.in_shape, width=3, seed=0)
    mats = curvature_matrices(model, pb.x, pb.y, chunk_size=None)
    net = ch03.network_one_step_by_activation(
        pb, {"relu": (model, mats)}, ["relu", "tanh"], width=3, train_steps=5, train_lr=0.1,
        train_batch_size=10, lr_fractions=[0.05], batch_size=2, num_samples=50, seed=0)
    assert list(net.activation) == ["relu", "tanh"]
    assert np.allclose(net.eta_lam, 0.05)


# --------------------------------------------------------------------------- verdicts


def _gauss(kurt_small: float, kurt_big: float) -> pd.DataFrame:
    rows = []
    for b, k in ((1, kurt_small), (64, kurt_big)):
        for d in ("u1", "u2"):
            rows.append({"batch_size": b, "direction": d, "exkurt_mc": k, "exkurt_pred": k,
                         "tail3_mc": 0.003, "ks_stat": 0.02, "ks_pvalue": 0.5})
    return pd.DataFrame(rows)


def test_gaussian_reading_names_the_batch_size_needed():
    text = ch03.gaussian_reading(_gauss(3.0, 0.05), kurtosis_tolerance=0.5)
    assert "per-example excess kurtosis 3.0" in text and "B ≈ 6" in text
    assert not plain_subscripts(text)


def test_lemma2_verdict_flips():
    chk = {"mc": 1.0, "se": 0.01, "formula": 1.0, "trace_term": 0.9, "mean_term": 0.1}
    kw = dict(z_max=4.0, batch_size=8, num_samples=100, scale="s")
    assert ch03.lemma2_verdict(dict(chk, z=1.0), **kw).outcome == "supported"
    v = ch03.lemma2_verdict(dict(chk, z=-6.0), **kw)
    assert v.outcome == "contradicted" and "disagreement" in v.sentence
    assert r"$z = -6.00$ — disagreement beyond sampling error ($\lvert z \rvert \ge 4$)" in (
        v.sentence)
    assert_typeset(v, ch03.lemma2_verdict(dict(chk, z=1.0), **kw))


def test_one_step_verdict_flips():
    quad = pd.DataFrame({"batch_size": [1, 1, 8], "z": [0.5, -1.0, 2.0],
                         "noise": [0.1, 0.2, 0.01], "deterministic": [1.0, 0.5, 0.5]})
    assert ch03.one_step_verdict(quad, z_max=4.0, scale="s").outcome == "supported"
    v = ch03.one_step_verdict(quad.assign(z=[0.5, 9.0, 0.0]), z_max=4.0, scale="s")
    assert v.outcome == "contradicted" and "larger than sampling error" in v.sentence
    assert_typeset(v)


def test_markov_verdict_flips_and_says_raises_or_lowers():
    mk = pd.DataFrame({"increase": [0.1, 1.0], "frequency": [0.3, 0.05],
                       "frequency_se": [0.01, 0.005], "bound": [0.5, 0.1],
                       "expected_next": 0.2, "current": 0.01})
    v = ch03.markov_verdict(mk, current=0.01, scale="s")
    assert v.outcome == "supported" and "*raises*" in v.sentence
    v = ch03.markov_verdict(mk.assign(frequency=[0.9, 0.05]), current=0.5, scale="s")
    assert v.outcome == "contradicted" and "*lowers*" in v.sentence
    assert_typeset(v)


def _net(z_relu: float, z_tanh: float) -> pd.DataFrame:
    rows = []
    for act, z in (("relu", z_relu), ("tanh", z_tanh)):
        for e in (0.05, 0.2):
            rows.append({"activation": act, "eta_lam": e, "noise_ratio": 1 + 0.02 * z,
                         "noise_z": z, "gd_ratio": 1.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("zr", "zt", "outcome"), [
    (1.0, 0.5, "supported"), (6.0, 1.0, "mixed"), (6.0, 7.0, "contradicted")])
def test_network_verdict(zr, zt, outcome):
    lines, v = ch03.network_verdict(_net(zr, zt), z_max=3.0, scale="s")
    assert v.outcome == outcome and len(lines) == 3
    if outcome == "mixed":
        assert "the tanh check agrees" in lines[-1] and "the ReLU one does not" in lines[-1]
    assert lines[0].startswith("- **ReLU**") and "relu" not in v.sentence
    assert_typeset(v)
    assert all(not plain_subscripts(ln) and ln.count("$") % 2 == 0 for ln in lines)
    assert r"at $\eta\lambda_{\max}$ = " in lines[0]


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    assert ch03.Params.from_yaml(PARAMS / f"{profile}.yaml").profile == profile


def test_params_name_the_parameter():
    values = ch03.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    with pytest.raises(ValueError, match="train_batch_size"):
        ch03.Params.from_mapping(dict(values, train_batch_size=values["n_train"] + 1))
    with pytest.raises(ValueError, match="net_activations"):
        ch03.Params.from_mapping(dict(values, net_activations=["gelu"]))


# --------------------------------------------------------------------------- tail index


def test_tail_index_recovers_gaussian_and_cauchy():
    rng = np.random.default_rng(0)
    assert ch03.tail_index(rng.normal(size=40000)) == pytest.approx(2.0, abs=0.1)
    assert ch03.tail_index(rng.standard_cauchy(40000)) == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="k1"):
        ch03.tail_index(np.arange(3.0))


def test_tail_index_table_rows():
    G = _G(N=50, P=4, seed=1)
    U = torch.linalg.qr(torch.randn(4, 2, dtype=DT))[0]
    tab = ch03.tail_index_table(G, U, [1, 8], 400, labels=["a", "b"], seed=0)
    assert len(tab) == 1 + 2 * 2
    assert tab.iloc[0].direction == "all coordinates" and tab.iloc[0].samples == 200
    assert np.isfinite(tab.alpha).all()


# --------------------------------------------------------------------------- across seeds


def test_tail_index_interval_brackets_gaussian_and_cauchy():
    rng = np.random.default_rng(1)
    a, lo, hi = ch03.tail_index_interval(rng.normal(size=4000), n_boot=200, seed=0)
    assert lo < a < hi and lo < 2.0 < hi and a == pytest.approx(2.0, abs=0.15)
    a, lo, hi = ch03.tail_index_interval(rng.standard_cauchy(4000), n_boot=200, seed=0)
    assert lo < 1.0 < hi and hi < 1.5
    with pytest.raises(ValueError, match="at least 4"):
        ch03.tail_index_interval(np.arange(3.0), n_boot=10)


def test_noise_shape_study_rows_and_exact_kurtosis():
    from scipy import stats

    G = _G(N=80, P=5, seed=2)
    shape = ch03.noise_shape_study({("MLP", 0): G, ("small CNN", 0): G * 2}, 8, 400, n_boot=30)
    assert len(shape) == 2 * 3 and list(shape.direction[:3]) == list(ch03.SHAPE_DIRECTIONS)
    assert np.allclose(shape.exkurt_B, shape.exkurt_1 / 8)
    # the per-example kurtosis is that of the projections on the top eigenvector of D
    Gc = G - G.mean(0)
    u = torch.linalg.eigh(Gc.T @ Gc / 80)[1][:, -1]
    z = (Gc @ u).numpy()
    want = stats.kurtosis(z, fisher=True, bias=True)
    assert shape.exkurt_1.iloc[0] == pytest.approx(want, rel=1e-6)
    assert (shape.alpha_low <= shape.alpha_high).all()
    assert len(ch03.shape_table(shape).columns) == 6


def test_seed_gradients_trains_both_models_per_seed():
    pb = _tiny_problem(20, seed=3)
    grads = ch03.seed_gradients(pb, [0, 1], width=3, activation="relu", cnn_width=1, steps=2,
                                lr=0.1, batch_size=5)
    assert set(grads) == {("MLP", 0), ("small CNN", 0), ("MLP", 1), ("small CNN", 1)}
    assert all(g.shape[0] == 20 and g.dtype == DT for g in grads.values())
    assert not torch.equal(grads[("MLP", 0)], grads[("MLP", 1)])


def _shape(kurt: tuple[float, float], alpha: tuple[float, float], spread: float = 0.01,
           seeds: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for (m, k), a in zip(zip(ch03.SHAPE_MODELS, kurt, strict=True), alpha, strict=True):
        for s in range(seeds):
            for d in ch03.SHAPE_DIRECTIONS:
                kb = k + spread * rng.normal()
                al = a + spread * rng.normal()
                rows.append({"model": m, "seed": s, "direction": d, "batch_size": 50,
                             "exkurt_1": 50 * kb, "exkurt_B": kb, "alpha": al,
                             "alpha_low": al - 0.2, "alpha_high": al + 0.2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kurt", "spread", "outcome"), [
    ((0.1, 0.2), 0.01, "supported"), ((0.1, 1.2), 0.01, "contradicted"),
    ((0.1, 0.45), 0.3, "inconclusive")])
def test_gaussian_claim_verdict_flips(kurt, spread, outcome):
    v = ch03.gaussian_claim_verdict(_shape(kurt, (1.9, 1.9), spread), tolerance=0.5,
                                    alpha=0.05, scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert "B = 50" in v.claim and "small CNN" in v.sentence
    assert_typeset(v)


@pytest.mark.parametrize(("alpha", "outcome"), [
    ((1.3, 1.4), "supported"), ((1.3, 2.0), "contradicted")])
def test_tail_claim_verdict_flips(alpha, outcome):
    v = ch03.tail_claim_verdict(_shape((0.1, 0.1), alpha), alpha_heavy=1.8, alpha=0.05,
                                scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert "Simsekli" in v.claim and "bootstrap intervals" in v.sentence
    assert_typeset(v)
    noisy = _shape((0.1, 0.1), (1.75, 1.75), spread=0.3)
    assert ch03.tail_claim_verdict(noisy, alpha_heavy=1.8, alpha=0.05,
                                   scale="s").outcome == "inconclusive"


def test_shape_rates_hold_the_level_and_travel_with_the_verdicts():
    shape = _shape((0.1, 0.2), (1.5, 1.6), spread=0.05)
    mc = 3 * math.sqrt(0.05 * 0.95 / 3000)
    g = ch03.gaussian_claim_rates(shape, tolerance=0.5, alpha=0.05, n_sim=3000, seed=1)
    t = ch03.tail_claim_rates(shape, alpha_heavy=1.8, alpha=0.05, n_sim=3000, seed=1)
    assert g.false_positive <= 0.05 + mc and t.false_positive <= 0.05 + mc
    assert g.power > 0.9 and t.power > 0.9
    v = ch03.tail_claim_verdict(shape, alpha_heavy=1.8, alpha=0.05, scale="s", rates=t)
    assert v.power == t.power and "tail index" in v.sentence.split("Error rates")[1]
    assert ch03.gaussian_claim_rates(_shape((0.1, 0.2), (1.5, 1.6), seeds=1), tolerance=0.5,
                                     alpha=0.05, n_sim=100) is None


def test_derivation_checks_say_so():
    chk = {"mc": 1.0, "se": 0.01, "formula": 1.0, "trace_term": 0.9, "mean_term": 0.1, "z": 0.5}
    v = ch03.lemma2_verdict(chk, z_max=4.0, batch_size=8, num_samples=100, scale="s")
    assert v.kind == "derivation check" and "1.000 [0.980, 1.020]" in v.sentence
    assert len(ch03.lemma2_cells(chk).columns) == 5
