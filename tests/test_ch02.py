"""Tests for sgdnoise.chapters.ch02_fisher_hessian: matrix comparison, the diagonal power
law, the information-equality study, the exact identities, Params and the verdict
functions (each fed constructed numbers on both sides of its thresholds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_typeset
from torch import nn

from sgdnoise.chapters import ch02_fisher_hessian as ch02
from sgdnoise.chapters.small_problems import SmallProblem, build_small_model, curvature_matrices

DT = torch.float64
PARAMS = Path(__file__).resolve().parents[1] / "book" / "params" / "ch02_fisher_hessian"


def test_compare_matrices_and_power_law():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(8, 8, dtype=DT, generator=g)
    A = A @ A.T
    out = ch02.compare_matrices({"A": A, "A2": 2 * A, "I": torch.eye(8, dtype=DT)}, k=3,
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
    fit = ch02.diagonal_power_law(c, h)
    assert abs(fit["gamma"] - 1.5) < 0.02 and fit["n_used"] == 200


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
    df = ch02.information_equality_study(model, x, y_bad, [50, 800], seed=1)
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
        ch02.information_equality_study(model, x, y_bad, [N + 1])


def test_exact_identities_hold_on_bias_free_relu_mlp():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, 2, 2, dtype=DT, generator=g)
    y = torch.randint(10, (20,), generator=g)
    model = build_small_model("mlp", (3, 2, 2), width=4, bias=False, seed=0)
    c = ch02.exact_identities(model, x, y)
    assert c["kl_error"] < 1e-10 and c["fr_error"] < 1e-10 and c["fr_emp_error"] < 1e-10
    assert c["degree"] == 2 and c["P"] == 12 * 4 + 4 * 10


def test_information_sizes_and_key_pairs():
    assert ch02.information_sizes(400) == [50, 100, 200, 400]
    assert ch02.information_sizes(20) == [8, 10, 20]
    pairs = pd.DataFrame({"a": ["D", "D", "F"], "b": ["H", "F", "GGN"], "model": "m",
                          "stage": "late"})
    key = ch02.key_pairs(pairs)
    assert list(key.pair) == ["D vs H", "F vs GGN"] and set(key["where"]) == {"m · late"}


# --------------------------------------------------------------------------- verdicts


def test_identities_verdict_flips_at_tolerance():
    c = {"kl_error": 1e-15, "fr_lhs": 1.0, "fr_rhs": 1.0, "fr_error": 1e-15, "degree": 2,
         "fr_emp_lhs": 1.0, "fr_emp_rhs": 1.0, "fr_emp_error": 1e-15}
    v = ch02.identities_verdict(c, tolerance=1e-8, scale="s")
    assert v.outcome == "supported" and "hold to rounding error" in v.sentence
    v = ch02.identities_verdict(dict(c, fr_emp_error=1e-3), tolerance=1e-8, scale="s")
    assert v.outcome == "contradicted" and "violated" in v.sentence
    assert r"$(L+1)^2\, \mathbb{E} \langle p - e_y, f \rangle^2$ = 1" in v.sentence
    assert_typeset(v)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    assert ch02.Params.from_yaml(PARAMS / f"{profile}.yaml").profile == profile


def test_params_cross_checks_name_the_parameter():
    values = ch02.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    with pytest.raises(ValueError, match="early_step"):
        ch02.Params.from_mapping(dict(values, early_step=values["train_steps"]))
    with pytest.raises(ValueError, match="gamma_low"):
        ch02.Params.from_mapping(dict(values, gamma_low=3.0))
    with pytest.raises(ValueError, match="check_n"):
        ch02.Params.from_mapping(dict(values, check_n=values["n_train"] + 1))
    with pytest.raises(ValueError, match="shuffled_seeds"):
        ch02.Params.from_mapping(dict(values, shuffled_seeds=values["seeds"] + 1))


# --------------------------------------------------------------------------- dense matrices


def test_curvature_matrices_softmax_regression():
    g = torch.Generator().manual_seed(1)
    pb = SmallProblem(x=torch.randn(12, 3, 2, 2, dtype=DT, generator=g),
                      y=torch.randint(10, (12,), generator=g), identity={},
                      classes=list("abcdefghij"))
    model = build_small_model("softmax", pb.in_shape, seed=0)
    mats = curvature_matrices(model, pb.x, pb.y, chunk_size=None)
    gbar = mats["gbar"]
    assert torch.allclose(mats["D"], mats["F_hat"] - torch.outer(gbar, gbar), atol=1e-12)
    assert torch.allclose(mats["F"], mats["GGN"], atol=1e-10)
    assert torch.allclose(mats["H"], mats["GGN"], atol=1e-10)  # linear model: no residual
    # independent closed form of the softmax-regression Fisher (parameters: W row-major, b)
    x = pb.x.reshape(pb.n, -1)
    with torch.no_grad():
        p = torch.softmax(model(pb.x), 1)
    P = mats["F"].shape[0]
    F = torch.zeros(P, P, dtype=DT)
    d = x.shape[1]
    for i in range(pb.n):
        M = torch.diag(p[i]) - torch.outer(p[i], p[i])
        J = torch.zeros(10, P, dtype=DT)  # output Jacobian of the logits
        for c in range(10):
            J[c, c * d : (c + 1) * d] = x[i]
            J[c, 10 * d + c] = 1.0
        F += J.T @ M @ J
    assert torch.allclose(mats["F"], F / pb.n, atol=1e-12)


# ------------------------------------------------------------------ the information equality


def _ieq_seeds(ratio: float, spread: float = 0.02, seeds: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for s in range(seeds):
        for n in (50, 100, 200, 400):
            for m in ("F_hat", "D", "H"):
                model = 2.0 * (n / 50) ** -0.5
                rows.append({"n": n, "labels": "model", "matrix": m, "rel_dist": model,
                             "seed": s})
                rows.append({"n": n, "labels": "data", "matrix": m, "seed": s,
                             "rel_dist": model * ratio * math.exp(spread * rng.normal())})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("ratio", "spread", "outcome"), [
    (1.0, 0.02, "supported"), (3.0, 0.02, "contradicted"), (1.5, 0.5, "inconclusive")])
def test_information_equality_verdict_flips(ratio, spread, outcome):
    v = ch02.information_equality_verdict(_ieq_seeds(ratio, spread), gap_ratio=1.5,
                                          alpha=0.05, scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert r"$\hat F$" in v.sentence and "At N = 400" in v.sentence
    assert_typeset(v)


def test_information_rate_verdict_and_rates():
    ok = ch02.information_rate_verdict(_ieq_seeds(1.0), slope_tolerance=0.25, scale="s")
    assert ok.outcome == "supported" and ok.kind == "derivation check"
    flat = _ieq_seeds(1.0).assign(rel_dist=1.0)
    assert ch02.information_rate_verdict(flat, slope_tolerance=0.25,
                                         scale="s").outcome == "contradicted"
    rates = ch02.information_equality_rates(_ieq_seeds(1.0, 0.05), gap_ratio=1.5, alpha=0.05,
                                            n_sim=3000, seed=2)
    assert rates.false_positive <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 3000)
    assert rates.power > 0.9 and "log distance ratio" in rates.conditions()
    assert_typeset(ok)


# --------------------------------------------------------------------------- late, over seeds


def test_weight_layers_slice_the_flat_parameters():
    model = build_small_model("mlp", (3, 2, 2), width=4, seed=0)
    layers = ch02.weight_layers(model)
    assert [name for name, _ in layers] == ["layer 1 (linear)", "layer 2 (linear)"]
    assert layers[0][1] == slice(0, 48) and layers[1][1] == slice(52, 92)
    cnn = ch02.weight_layers(build_small_model("cnn", (3, 4, 4), width=1, seed=0))
    assert [name for name, _ in cnn][0] == "layer 1 (convolution)"
    assert [name for name, _ in cnn][-1] == f"layer {len(cnn)} (linear)"


def test_page_names_of_models_matrices_and_ranges():
    assert [ch02.model_name(m) for m in ("softmax", "mlp", "cnn", "other")] == [
        "softmax regression", "MLP", "CNN", "other"]
    assert ch02.matrix_math("GGN") == "$G$" and ch02.matrix_math("F_hat") == r"$\hat F$"
    assert ch02.value_range(0.0281, 0.0279) == "0.028"
    assert ch02.value_range(0.017, 0.021) == "from 0.017 to 0.021"


def test_cosine_null_baselines():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(30, 30, dtype=DT, generator=g))[0]
    spectrum = torch.tensor([10.0, 1.0, 0.5] + [0.01] * 27, dtype=DT)
    D = Q @ torch.diag(spectrum) @ Q.T
    # D against itself: keeping every direction reproduces the cosine 1; one shared top
    # direction gives most of it; random directions give about tr² / (P ‖D‖²)
    full = ch02.cosine_null(D, D, keep=30, draws=3, energy=1.0, max_rank=30)
    assert full == pytest.approx(np.ones(3), abs=1e-9)
    spike = ch02.cosine_null(D, D, keep=1, draws=50, seed=1)
    chance = ch02.cosine_null(D, D, keep=0, draws=50, seed=2)
    assert 0.9 < spike.mean() < 1.0
    assert chance.mean() < 0.3 and chance.mean() < spike.mean()


def test_late_seed_study_reports_cases_and_layers():
    pb = SmallProblem(x=torch.randn(30, 3, 2, 2, dtype=DT), y=torch.randint(10, (30,)),
                      identity={}, classes=list("abcdefghij"))
    late = ch02.late_matrices(pb, [("softmax", 0), ("mlp", 3)], [0, 1], steps=3, lr=0.1,
                              batch_size=10)
    cases, layers = ch02.late_seed_study(late, batch_size=10, draws=5)
    assert len(cases) == 4 and set(cases.model) == {"softmax", "mlp"}
    assert (cases.near_minimum == (cases.ratio < 0.1)).all()
    assert ((cases.cosine > 0) & (cases.cosine <= 1)).all()
    assert set(layers.layer) == {"layer 1 (linear)", "layer 2 (linear)"}
    assert len(layers) == 2 + 4
    assert len(ch02.cases_table(cases, 10).columns) == 8


def _cases(cos_a, cos_b, *, near=True, spike=0.3):
    rows = []
    for m, cs in (("a", cos_a), ("b", cos_b)):
        for s, c in enumerate(cs):
            rows.append({"model": m, "seed": s, "cosine": c, "chance": 0.05,
                         "spike_mean": spike - 0.01, "spike_q95": spike, "ratio": 1e-3,
                         "near_minimum": near})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("kw", "outcome"), [
    ({}, "supported"),
    ({"cos_b": [0.70, 0.72, 0.71]}, "contradicted"),
    ({"spike": 0.95}, "inconclusive"),
    ({"near": False}, "inconclusive")])
def test_covariance_hessian_verdict_flips(kw, outcome):
    args = {"cos_a": [0.95, 0.96, 0.955], "cos_b": [0.97, 0.965, 0.96], **kw}
    cases = _cases(args["cos_a"], args["cos_b"], near=kw.get("near", True),
                   spike=kw.get("spike", 0.3))
    v = ch02.covariance_hessian_verdict(cases, cosine_holds=0.9, batch_size=50, alpha=0.05,
                                        scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    if outcome == "inconclusive":
        assert "not a test" in v.sentence
    assert_typeset(v)


def test_covariance_hessian_rates_hold_the_level():
    cases = _cases([0.95, 0.96, 0.955], [0.97, 0.965, 0.96])
    r = ch02.covariance_hessian_rates(cases, cosine_holds=0.9, alpha=0.05, n_sim=3000, seed=1)
    assert r.false_positive <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 3000)
    assert r.power > 0.9 and r.n_seeds == 3
    assert ch02.covariance_hessian_rates(_cases([0.95] * 3, [0.96] * 3, spike=0.95),
                                         cosine_holds=0.9, alpha=0.05, n_sim=100) is None


def _layers(gammas, spread=0.02):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"model": "m", "layer": f"{i}.weight", "seed": s,
                          "gamma": g + spread * rng.normal(), "r2": 0.9, "n_used": 10,
                          "n_total": 10}
                         for i, g in enumerate(gammas) for s in range(4)])


@pytest.mark.parametrize(("gammas", "spread", "outcome"), [
    ([1.4, 1.6], 0.02, "supported"), ([1.4, 0.7], 0.02, "contradicted"),
    ([1.4, 2.4], 0.02, "contradicted"), ([1.02, 1.5], 0.2, "inconclusive")])
def test_power_law_verdict_flips(gammas, spread, outcome):
    v = ch02.power_law_verdict(_layers(gammas, spread), gamma_low=1.0, gamma_high=2.0,
                               alpha=0.05, scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert r"power law $D_{ii} \propto H_{ii}^{\gamma}$" in v.claim and "Zhang" in v.claim
    assert_typeset(v)


def test_power_law_rates_hold_the_level():
    r = ch02.power_law_rates(_layers([1.4, 1.6, 1.5], 0.1), gamma_low=1.0, gamma_high=2.0,
                             alpha=0.05, n_sim=3000, seed=4)
    assert r.false_positive <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 3000)
    assert r.power > 0.5


# --------------------------------------------------------------------------- Fisher-Rao norm


def test_fisher_rao_generalization_study_rows_and_gap():
    g = torch.Generator().manual_seed(2)

    def pb(n):
        return SmallProblem(x=torch.randn(n, 3, 2, 2, dtype=DT, generator=g),
                            y=torch.randint(10, (n,), generator=g), identity={},
                            classes=list("abcdefghij"))

    fam = ch02.fisher_rao_generalization_study(pb(30), pb(20), widths=[2, 3],
                                               batch_sizes=[5], seeds=2, steps=5, lr=0.1)
    assert len(fam) == 4 and set(fam.width) == {2, 3} and set(fam.seed) == {0, 1}
    assert np.allclose(fam.gap_loss, fam.test_loss - fam.train_loss)
    assert (fam.fr_norm_sq > 0).all()


def _family(sign: float, config_noise: float = 0.0, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for i, (w, b) in enumerate((w, b) for w in (4, 12, 32) for b in (10, 50, 200)):
        level = sign * i + config_noise * rng.normal()
        for s in range(seeds):
            fr = float(np.exp(0.1 * i + 0.01 * rng.normal()))
            gap = level + 0.05 * rng.normal()
            rows.append({"width": w, "batch_size": b, "seed": s, "fr_norm_sq": fr,
                         "gap_loss": gap, "gap_error": gap})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("sign", "noise", "outcome"), [
    (1.0, 0.0, "supported"), (-1.0, 0.0, "contradicted"), (0.0, 1.0, "inconclusive")])
def test_fisher_rao_verdict_flips_with_the_rank_correlation(sign, noise, outcome):
    rho, _, v = ch02.fisher_rao_verdict(_family(sign, noise), confidence=0.95, n_boot=400,
                                        scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert "bootstrap over configurations" in v.sentence and "9 configurations" in v.sentence
    assert_typeset(v)
    if sign:
        assert rho.estimate == pytest.approx(sign, abs=0.05)


def test_cluster_bootstrap_is_wider_than_treating_seeds_as_independent():
    fam = _family(0.0, 1.0, seeds=3)
    x, y = fam.fr_norm_sq.to_numpy()[None], fam.gap_loss.to_numpy()[None]
    groups = np.arange(27).reshape(9, 3)
    rng = np.random.default_rng(0)
    _, lo_c, hi_c = ch02.cluster_spearman(x, y, groups, n_boot=500, confidence=0.95, rng=rng)
    _, lo_i, hi_i = ch02.cluster_spearman(x, y, np.arange(27)[:, None], n_boot=500,
                                          confidence=0.95, rng=rng)
    assert (hi_c - lo_c)[0] > (hi_i - lo_i)[0]


def test_fisher_rao_rates_measure_the_rule():
    r = ch02.fisher_rao_rates(_family(1.0, 0.5), confidence=0.95, n_boot=200, n_sim=400,
                              seed=1)
    # a percentile bootstrap over 9 configurations is not exact: its level is measured,
    # here within a few points of the nominal 2.5% per side
    assert r.false_positive <= 0.10
    assert r.power > r.false_positive and r.n_seeds == 3
    assert ch02.fisher_rao_rates(_family(1.0, seeds=1), confidence=0.95, n_boot=50,
                                 n_sim=100) is None


# --------------------------------------------------------------------------- shuffled labels


def test_shuffled_labels_are_a_permutation_that_moves_labels():
    y = torch.arange(10).repeat_interleave(torch.arange(1, 11))  # class c appears c + 1 times
    for seed in (0, 1):
        ys = ch02.shuffled_labels(y, seed)
        assert torch.equal(torch.bincount(ys, minlength=10), torch.bincount(y, minlength=10))
        assert (ys != y).double().mean() > 0.5
        assert torch.equal(ys, ch02.shuffled_labels(y, seed))
    assert not torch.equal(ch02.shuffled_labels(y, 0), ch02.shuffled_labels(y, 1))


def test_shuffled_label_baseline_runs_on_a_tiny_problem():
    g = torch.Generator().manual_seed(3)
    pb = SmallProblem(x=torch.randn(30, 3, 2, 2, dtype=DT, generator=g),
                      y=torch.randint(10, (30,), generator=g), identity={},
                      classes=list("abcdefghij"))
    kw = {"steps": 4, "lr": 0.1, "batch_size": 10}
    base = ch02.shuffled_label_baseline(pb, ("mlp", 3), [0, 1], draws=5, **kw)
    assert base.model == "mlp" and list(base.cases.seed) == [0, 1]
    assert ((base.cases.cosine > 0) & (base.cases.cosine <= 1)).all()
    assert ((base.cases.moved > 0.5) & (base.cases.moved <= 1)).all()
    assert base.cases.train_error.between(0, 1).all()
    # same seeds, same training: only the labels differ, and so do the matrices
    true, _ = ch02.late_seed_study(ch02.late_matrices(pb, [("mlp", 3)], [0, 1], **kw),
                                   batch_size=10, draws=5)
    assert not np.allclose(true.cosine, base.cases.cosine)
    table = ch02.shuffled_table(true, base, alpha=0.05)
    assert len(table) == 3 and table.iloc[1, 0] == "MLP, shuffled labels"
    assert math.isclose(base.cosine(0.9).estimate, base.cases.cosine.mean())
    with pytest.raises(ValueError, match="'mlp'"):
        ch02.shuffled_table(true[true.seed == 0], base, alpha=0.05)


def _baseline(cosines, *, near=True):
    cases = pd.DataFrame({"model": "a", "seed": range(len(cosines)), "cosine": cosines,
                          "ratio": 1e-3, "near_minimum": near, "train_error": 0.7,
                          "moved": 0.9})
    return ch02.ShuffledBaseline("a", cases)


@pytest.mark.parametrize(("shuffled", "near", "reading"), [
    ([0.80, 0.81, 0.79], True, "The true labels align $D$ and $H$ more"),
    ([0.955, 0.95, 0.96], True, "No difference between true and shuffled labels"),
    ([0.99, 0.995, 0.99], True, "Shuffled labels align $D$ and $H$ more"),
    ([0.80, 0.81, 0.79], False, "not near a minimum in every seed")])
def test_shuffled_reading_flips(shuffled, near, reading):
    cases = _cases([0.95, 0.96, 0.955], [0.97, 0.965, 0.96])
    base = _baseline(shuffled, near=near)
    text = ch02.shuffled_reading(cases, base, cosine_holds=0.9, alpha=0.05)
    assert reading in text
    # shuffled labels alone pass the threshold only where their interval lies above it
    assert ("With shuffled labels alone" in text) == (near and min(shuffled) > 0.9)
    v = ch02.covariance_hessian_verdict(cases, cosine_holds=0.9, batch_size=50, alpha=0.05,
                                        scale="s")
    w = ch02.with_shuffled_baseline(v, cases, base, cosine_holds=0.9, alpha=0.05)
    assert w.outcome == v.outcome == "supported"
    assert w.sentence.startswith(v.sentence) and w.sentence.endswith(text)
    assert_typeset(w)
