"""Tests for sgdnoise.curvature against independent float64 references: dense autograd
Hessians/Jacobians (torch.autograd.functional), per-example loops, label enumeration for the
true Fisher (all in ``tests/references.py``, with the case grid) and Monte Carlo error bands
derived from the exact MC variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from references import (
    CE,
    N,
    case,
    case_data,
    dense_ggn,
    dense_hessian,
    per_example_grads_loop,
    theta_of,
    true_fisher_by_enumeration,
)
from torch import nn

from sgdnoise import curvature as cv

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ fixtures


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))


# --------------------------------------------------------------------------- Hessian


@pytest.mark.parametrize("kind", ["mlp", "softmax", "cnn"])
def test_hessian_and_hvp_match_autograd_reference(kind):
    model, x, y = case(kind)
    H_ref = dense_hessian(model, CE, x, y)
    close(cv.hessian(model, CE, x, y), H_ref)
    close(cv.hessian(model, CE, x, y, chunk_size=5), H_ref)
    v = torch.randn(H_ref.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    close(cv.hvp(model, CE, x, y, v), H_ref @ v)
    close(cv.hvp(model, CE, x, y, v, chunk_size=5), H_ref @ v)
    # hvp leaves the model's gradients untouched
    assert all(p.grad is None for p in model.parameters())


def test_hvp_loss_reductions_mean_the_per_example_losses():
    model, x, y = case("mlp")
    H_ref = dense_hessian(model, CE, x, y)
    v = torch.randn(H_ref.shape[0], dtype=torch.float64)
    for loss in (nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(reduction="none")):
        close(cv.hvp(model, loss, x, y, v, chunk_size=7), H_ref @ v)


def test_hvp_on_regression_with_mse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(N, 4, dtype=torch.float64)
    y = torch.randn(N, 2, dtype=torch.float64)
    mse = nn.MSELoss()
    H_ref = dense_hessian(model, mse, x, y)
    close(cv.hessian(model, mse, x, y), H_ref)
    close(cv.ggn(model, mse, x, y), dense_ggn(model, mse, x, y))
    close(cv.GGNOperator(model, mse, x, y).to_dense(), dense_ggn(model, mse, x, y))


# --------------------------------------------------------------------------- GGN / Fisher


@pytest.mark.parametrize("kind", ["mlp", "softmax", "cnn"])
def test_ggn_matches_loop_reference_and_equals_true_fisher(kind):
    model, x, y = case(kind)
    G_ref = dense_ggn(model, CE, x, y)
    G = cv.ggn(model, CE, x, y, chunk_size=5)
    close(G, G_ref)
    # canonical link: the true Fisher of softmax cross-entropy is the GGN
    close(cv.true_fisher(model, x), G_ref)


def test_ggn_equals_hessian_for_softmax_regression():
    model, x, y = case("softmax")
    close(cv.ggn(model, CE, x, y), dense_hessian(model, CE, x, y))


def test_ggn_differs_from_hessian_for_nonlinear_model():
    model, x, y = case("mlp")
    diff = (cv.ggn(model, CE, x, y) - dense_hessian(model, CE, x, y)).norm()
    assert float(diff) > 1e-3


def test_true_fisher_matches_label_enumeration_and_kl_hessian():
    model, x, y = case("mlp")
    F_ref = true_fisher_by_enumeration(model, x)
    close(cv.true_fisher(model, x), F_ref)
    close(cv.kl_hessian(model, x), F_ref)
    close(cv.kl_hessian(model, x, chunk_size=5), F_ref)


def test_empirical_fisher_matches_per_example_loop():
    model, x, y = case("cnn")
    G = per_example_grads_loop(model, CE, x, y)
    F_ref = G.T @ G / N
    close(cv.empirical_fisher(model, CE, x, y), F_ref)
    close(cv.empirical_fisher(model, CE, x, y, chunk_size=5), F_ref)


def test_monte_carlo_true_fisher_error_matches_its_variance():
    """F_S = (1/(N S)) Σ g gᵀ over sampled labels is unbiased with
    E‖F_S − F‖_F² = (1/(N² S)) Σ_i (Σ_c p_ic ‖g_ic‖⁴ − ‖F_i‖_F²)."""
    model, x, _ = case("softmax")
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    grads = [per_example_grads_loop(model, CE, x, torch.full((N,), c)) for c in range(3)]
    F_i = [sum(probs[i, c] * torch.outer(grads[c][i], grads[c][i]) for c in range(3))
           for i in range(N)]
    var_sum = sum(
        float(sum(probs[i, c] * grads[c][i].norm() ** 4 for c in range(3)) - F_i[i].norm() ** 2)
        for i in range(N)
    )
    F_exact = sum(F_i) / N
    reps = 40
    mean_sq = {}
    for S in (1, 16):
        expected = var_sum / (N**2 * S)
        errs = torch.tensor(
            [float((cv.true_fisher(model, x, mc_samples=S, seed=r) - F_exact).norm() ** 2)
             for r in range(reps)]
        )
        mean_sq[S] = float(errs.mean())
        # mean of 40 squared errors: its standard error is estimated from the draws
        se = float(errs.std()) / math.sqrt(reps)
        assert abs(mean_sq[S] - expected) < 4 * se, (S, mean_sq[S], expected, se)
    assert mean_sq[16] < mean_sq[1] / 5


def test_monte_carlo_fisher_operator_matches_dense_with_same_seed():
    model, x, _ = case("mlp")
    op = cv.TrueFisherOperator(model, None, x, mc_samples=7, seed=11, chunk_size=5)
    close(op.to_dense(), cv.true_fisher(model, x, mc_samples=7, seed=11))
    other = cv.true_fisher(model, x, mc_samples=7, seed=12)
    assert float((op.to_dense() - other).norm()) > 1e-6


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_operators_to_dense_equal_dense_functions(kind):
    model, x, y = case(kind)
    P = theta_of(model).numel()
    pairs = [
        (cv.HessianOperator(model, CE, x, y), dense_hessian(model, CE, x, y)),
        (cv.GGNOperator(model, CE, x, y, chunk_size=5), cv.ggn(model, CE, x, y)),
        (cv.EmpiricalFisherOperator(model, CE, x, y, chunk_size=5),
         cv.empirical_fisher(model, CE, x, y)),
        (cv.EmpiricalFisherOperator(model, CE, x, y, materialize=True),
         cv.empirical_fisher(model, CE, x, y)),
        (cv.TrueFisherOperator(model, CE, x, y), cv.true_fisher(model, x)),
    ]
    for op, dense in pairs:
        assert op.shape == (P, P) and op.dtype == torch.float64
        close(op.to_dense(), dense)
    # matmat, @, scipy view and the matvec counter on one operator
    op, dense = pairs[1]
    V = torch.randn(P, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = op.num_matvecs
    close(op.matmat(V), dense @ V)
    assert op.num_matvecs == before + 3
    close(op @ V[:, 0], dense @ V[:, 0])
    lin = op.to_scipy()
    assert lin.shape == (P, P)
    np.testing.assert_allclose(lin.matvec(V[:, 0].numpy()), (dense @ V[:, 0]).numpy(),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lin.matmat(V.numpy()), (dense @ V).numpy(), rtol=1e-10,
                               atol=1e-12)


def test_operator_snapshot_and_eigh():
    model, x, y = case("mlp")
    op = cv.HessianOperator(model, CE, x, y)
    H = dense_hessian(model, CE, x, y)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    close(op.to_dense(), H)  # built from a copy of the parameters
    vals, vecs = op.eigh(3, tol=1e-12)
    ref = torch.linalg.eigvalsh(H).flip(0)[:3]
    close(vals, ref, tol=1e-9)
    assert vecs.shape == (H.shape[0], 3)


def test_curvature_reexports_spectral_tools():
    from sgdnoise import spectral

    assert cv.lanczos is spectral.lanczos
    assert cv.hutchinson_trace is spectral.hutchinson_trace
    assert cv.spectral_density is spectral.spectral_density


# --------------------------------------------------------------------------- Fisher-Rao


def test_fisher_rao_norm_equals_quadratic_form():
    model, x, y = case("cnn")
    theta = theta_of(model)
    assert cv.fisher_rao_norm(model, x) == pytest.approx(
        float(theta @ cv.true_fisher(model, x) @ theta), rel=1e-10)
    assert cv.fisher_rao_norm(model, x, y, loss_fn=CE, kind="empirical", chunk_size=5) == (
        pytest.approx(float(theta @ cv.empirical_fisher(model, CE, x, y) @ theta), rel=1e-10))
    mc = cv.true_fisher(model, x, mc_samples=4, seed=2)
    assert cv.fisher_rao_norm(model, x, mc_samples=4, seed=2) == pytest.approx(
        float(theta @ mc @ theta), rel=1e-10)


def bias_free_relu_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(4, 6, bias=False), nn.ReLU(),
        nn.Linear(6, 5, bias=False), nn.ReLU(),
        nn.Linear(5, 3, bias=False),
    ).double()


@pytest.mark.parametrize("kind", ["true", "empirical"])
def test_fisher_rao_identity_bias_free_relu(kind):
    model = bias_free_relu_mlp()
    x, y = case_data("mlp", n=30)
    res = cv.fisher_rao_identity(model, x, y, loss_fn=CE, kind=kind, chunk_size=7)
    assert res.degree == 3  # L = 2 hidden layers
    assert res.lhs > 0
    assert res.relative_error < 1e-12
    # the left side is the quadratic form with the dense Fisher
    theta = theta_of(model)
    F = cv.true_fisher(model, x) if kind == "true" else cv.empirical_fisher(model, CE, x, y)
    assert res.lhs == pytest.approx(float(theta @ F @ theta), rel=1e-10)
    # a wrong degree breaks it (the identity is not a tautology of the code)
    wrong = cv.fisher_rao_identity(model, x, y, loss_fn=CE, kind=kind, num_hidden_layers=1)
    assert wrong.rhs == pytest.approx(res.rhs * 4 / 9, rel=1e-12)


def test_fisher_rao_identity_fails_with_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    x, y = case_data("mlp", n=30)
    with pytest.raises(ValueError, match="bias-free"):
        cv.fisher_rao_identity(model, x, y)
    res = cv.fisher_rao_identity(model, x, num_hidden_layers=1)
    assert res.relative_error > 1e-3
    with pytest.raises(ValueError, match="num_hidden_layers must be a non-negative integer"):
        cv.fisher_rao_identity(model, x, num_hidden_layers=-1)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    model, x, y = case("mlp")
    with pytest.raises(ValueError, match="v must have length"):
        cv.hvp(model, CE, x, y, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="targets"):
        cv.hessian(model, CE, x, y[:3])
    with pytest.raises(ValueError, match="chunk_size"):
        cv.HessianOperator(model, CE, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="kind"):
        cv.fisher_rao_norm(model, x, kind="model")
    with pytest.raises(ValueError, match="loss_fn and targets"):
        cv.fisher_rao_norm(model, x, kind="empirical")
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    with pytest.raises(ValueError, match="eval"):
        cv.HessianOperator(bn, CE, x, y)
    bn.eval()
    assert cv.hessian(bn, CE, x, y).shape == (21, 21)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        cv.true_fisher(nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)).double(), x)


# ------------------------------------------------------------------- the operator family


def test_every_operator_shares_the_base_and_its_derived_methods():
    """One family: every operator (covariance included) is a CurvatureOperator whose
    diagonal, trace, matvec, keep_graph products and Lanczos eigh agree with a dense float64
    reference built independently (autograd Hessian, loop GGN, loop per-example gradients)."""
    model, x, y = case("mlp")
    G = per_example_grads_loop(model, CE, x, y)
    Gc = G - G.mean(0)
    refs = {
        "hessian": dense_hessian(model, CE, x, y),
        "ggn": dense_ggn(model, CE, x, y),
        "empirical": G.T @ G / N,
        "true": true_fisher_by_enumeration(model, x),
        "covariance": Gc.T @ Gc / N * (N - 4) / (4 * (N - 1)),
    }
    ops = {
        "hessian": lambda kg: cv.HessianOperator(model, CE, x, y, chunk_size=5, keep_graph=kg),
        "ggn": lambda kg: cv.GGNOperator(model, CE, x, y, keep_graph=kg),
        "empirical": lambda kg: cv.EmpiricalFisherOperator(model, CE, x, y, keep_graph=kg),
        "true": lambda kg: cv.TrueFisherOperator(model, None, x, keep_graph=kg),
        "covariance": lambda kg: cv.CovarianceOperator(G, batch_size=4, replacement=False),
    }
    V = torch.randn(theta_of(model).numel(), 4, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    for name, build in ops.items():
        ref = refs[name]
        op = build(False)
        assert isinstance(op, cv.CurvatureOperator), name
        close(op.to_dense(), ref)
        close(op.diagonal(), torch.diagonal(ref))
        assert op.trace() == pytest.approx(float(torch.trace(ref)), rel=1e-10, abs=1e-12)
        kept = build(True)
        close(kept.matmat(V), ref @ V)
        close(kept(V[:, 1]), ref @ V[:, 1])  # second call reuses the kept graph
        close(kept.matmat(V, block_size=3), ref @ V)
        evals, _ = cv.CurvatureOperator.eigh(op, 2, tol=1e-12)
        close(evals, torch.linalg.eigvalsh(ref).flip(0)[:2], tol=1e-8)
    with pytest.raises(ValueError, match="V must have"):
        ops["ggn"](False).matmat(V[:-1])
    with pytest.raises(ValueError, match="block_size"):
        ops["ggn"](False).matmat(V, block_size=0)


def test_per_example_grad_products_and_shared_helpers():
    from sgdnoise import grads

    model, x, y = case("cnn")
    G = per_example_grads_loop(model, CE, x, y)
    V = torch.randn(G.shape[1], 3, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    close(grads.per_example_grad_products(model, CE, x, y, V), G @ V)
    params = grads.trainable_parameters(model)
    pieces = grads.split_like(V.T, params)
    assert [tuple(p.shape) for p in pieces] == [(3, *q.shape) for q in params]
    close(grads.flatten_like(pieces, params, (3,)), V.T)
    losses = grads.per_example_losses(CE, model(x), y)
    with torch.no_grad():
        loop = torch.stack([CE(model(x[i : i + 1]), y[i : i + 1]) for i in range(N)])
        close(losses.detach(), loop)
    mse = nn.MSELoss(reduction="none")
    out = torch.randn(4, 2, dtype=torch.float64)
    close(grads.per_example_losses(mse, out, torch.zeros(4, 2, dtype=torch.float64)),
          (out**2).mean(1))


def test_sample_draws_have_the_operator_as_covariance():
    """B w with A = BBᵀ: the empirical covariance of many draws matches the dense float64
    reference within Monte Carlo error, and rejects a plausible wrong target (2A); MSE
    exercises the general output-Hessian root, cross-entropy the softmax one."""
    model, x, y = case("softmax")
    G = per_example_grads_loop(model, CE, x, y)
    Gc = G - G.mean(0)
    mse = nn.MSELoss()
    yr = torch.randn(N, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cases = [
        (cv.GGNOperator(model, CE, x, y, chunk_size=5), dense_ggn(model, CE, x, y)),
        (cv.GGNOperator(model, mse, x, yr), dense_ggn(model, mse, x, yr)),
        (cv.TrueFisherOperator(model, None, x), true_fisher_by_enumeration(model, x)),
        (cv.TrueFisherOperator(model, None, x, mc_samples=3, seed=4),
         cv.true_fisher(model, x, mc_samples=3, seed=4)),
        (cv.CovarianceOperator(G, batch_size=3), Gc.T @ Gc / N / 3),
    ]
    S = 20000
    for i, (op, ref) in enumerate(cases):
        xi = op.sample(S, generator=torch.Generator().manual_seed(i))
        assert xi.shape == (S, ref.shape[0])
        C = xi.T @ xi / S
        err = float((C - ref).norm() / ref.norm())
        assert err < 0.06, (i, err)
        assert float((C - 2 * ref).norm() / ref.norm()) > 0.5
