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
from sgdnoise.report import plain_subscripts

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


def _ieq(model_slope: float, data_slope: float, data_level: float) -> pd.DataFrame:
    rows = []
    for n in (50, 100, 200, 400):
        for m in ("F_hat", "D", "H"):
            rows.append({"n": n, "labels": "model", "matrix": m,
                         "rel_dist": 2.0 * (n / 50) ** model_slope})
            rows.append({"n": n, "labels": "data", "matrix": m,
                         "rel_dist": data_level * (n / 50) ** data_slope})
    return pd.DataFrame(rows)


def test_information_equality_verdicts_flip():
    kw = dict(gap_ratio=1.5, gap_slope=-0.25, slope_tolerance=0.25, scale="s")
    rate, eq = ch02.information_equality_verdicts(_ieq(-0.5, -0.02, 2.0), **kw)
    assert rate.outcome == "supported"
    assert eq.outcome == "contradicted" and r"gap is visible for $\hat F$, $D$, $H$" in eq.sentence
    assert_typeset(rate, eq)
    rate, eq = ch02.information_equality_verdicts(_ieq(-0.1, -0.5, 2.0), **kw)
    assert rate.outcome == "contradicted"
    assert eq.outcome == "inconclusive" and "No systematic gap" in eq.sentence
    assert r"model labels $\hat F$ -0.10 ± 0.00" in rate.sentence
    assert_typeset(rate, eq)
    # a large ratio alone is not a gap while the data-label distance still shrinks
    _, eq = ch02.information_equality_verdicts(_ieq(-0.5, -0.4, 8.0), **kw)
    assert eq.outcome == "inconclusive"


def _pairs_summary(cosines: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, summ = [], []
    for i, c in enumerate(cosines):
        rows.append({"a": "D", "b": "H", "model": f"m{i}", "stage": "late", "cosine": c,
                     "rel_dist": 0.5, "scaled_dist": math.sqrt(1 - c**2), "overlap": 0.5})
        summ.append({"model": f"m{i}", "stage": "late", "matrix": "D",
                     "trace_ratio_to_H": 1.0})
    return pd.DataFrame(rows), pd.DataFrame(summ)


@pytest.mark.parametrize(("cosines", "outcome"), [
    ([0.95, 0.99], "supported"), ([0.95, 0.7], "mixed"), ([0.3, 0.5], "contradicted")])
def test_covariance_hessian_verdict(cosines, outcome):
    pairs, summ = _pairs_summary(cosines)
    lines, v = ch02.covariance_hessian_verdict(pairs, summ, top_k=3, cosine_holds=0.9,
                                               cosine_fails=0.6, scale="s")
    assert v.outcome == outcome and len(lines) == len(cosines)
    if outcome == "contradicted":
        assert all("fails" in ln for ln in lines)
    assert_typeset(v)
    assert all(r"$\cos(D, H) = " in ln and not plain_subscripts(ln) for ln in lines)


@pytest.mark.parametrize(("gammas", "outcome"), [
    ([1.2, 1.8], "supported"), ([1.2, 3.0], "mixed"), ([0.2, 3.0], "contradicted")])
def test_power_law_verdict(gammas, outcome):
    pl = pd.DataFrame({"gamma": gammas, "gamma_se": 0.05, "r2": 0.9})
    v = ch02.power_law_verdict(pl, gamma_low=1.0, gamma_high=2.0, scale="s")
    assert v.outcome == outcome
    assert r"power law $D_{ii} \propto H_{ii}^{\gamma}$" in v.claim
    assert_typeset(v)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    assert ch02.Params.from_yaml(PARAMS / f"{profile}.yaml").profile == profile


def test_params_cross_checks_name_the_parameter():
    values = ch02.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    with pytest.raises(ValueError, match="early_step"):
        ch02.Params.from_mapping(dict(values, early_step=values["train_steps"]))
    with pytest.raises(ValueError, match="cosine_fails"):
        ch02.Params.from_mapping(dict(values, cosine_fails=0.95, cosine_holds=0.9))
    with pytest.raises(ValueError, match="check_n"):
        ch02.Params.from_mapping(dict(values, check_n=values["n_train"] + 1))


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


@pytest.mark.parametrize(("sign", "outcome"), [(1, "supported"), (-1, "contradicted"),
                                               (0, "inconclusive")])
def test_fisher_rao_verdict_flips_with_the_rank_correlation(sign, outcome):
    fr = np.arange(1.0, 21.0)
    rng = np.random.default_rng(0)
    gap = sign * fr + (rng.normal(size=20) * 100 if sign == 0 else 0.0)
    fam = pd.DataFrame({"fr_norm_sq": fr, "gap_loss": gap, "gap_error": gap})
    rho, _, v = ch02.fisher_rao_verdict(fam, confidence=0.95, scale="s")
    assert v.outcome == outcome
    assert_typeset(v)
    if sign:
        assert rho.estimate == pytest.approx(sign)
