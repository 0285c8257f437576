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


@pytest.mark.parametrize(("small", "big", "outcome", "phrase"), [
    (0.1, 0.01, "supported", "accurate at every batch size"),
    (3.0, 0.05, "mixed", "not for small batches"),
    (30.0, 1.0, "contradicted", "still visibly violated")])
def test_gaussian_verdict(small, big, outcome, phrase):
    v = ch03.gaussian_verdict(_gauss(small, big), kurtosis_tolerance=0.5, scale="s")
    assert v.outcome == outcome and phrase in v.sentence
    assert r"Gaussian, $\mathcal{N}(0, D/B)$" in v.claim
    assert_typeset(v)


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
        assert "the tanh check agrees" in lines[-1]
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


def _tails(a_mlp: float, a_cnn: float) -> pd.DataFrame:
    rows = []
    for m, a in (("MLP", a_mlp), ("CNN", a_cnn)):
        rows.append({"model": m, "batch_size": 1, "direction": "all coordinates", "alpha": a})
        for b in (1, 64):
            rows.append({"model": m, "batch_size": b, "direction": "u1", "alpha": 1.9})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("a", "c", "outcome"), [
    (1.2, 1.5, "supported"), (1.2, 1.95, "mixed"), (1.99, 2.0, "contradicted")])
def test_tail_verdict(a, c, outcome):
    v = ch03.tail_verdict(_tails(a, c), alpha_heavy=1.8, scale="s")
    assert v.outcome == outcome
    assert r"MLP: $\hat\alpha$ =" in v.sentence and r"CNN: $\hat\alpha$ =" in v.sentence
    assert_typeset(v)


def test_gaussian_verdict_names_the_model_and_section():
    v = ch03.gaussian_verdict(_gauss(0.1, 0.01), kurtosis_tolerance=0.5, scale="s",
                              model="small CNN", section="sec-x")
    assert "small CNN" in v.claim and v.section == "sec-x"
