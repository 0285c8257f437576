"""Tests for sgdnoise.stability against exact enumeration, closed forms and Monte Carlo."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sgdnoise import stability as st

DT = torch.float64


def _spd(P: int, seed: int, low: float = 0.1, high: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, dtype=DT, generator=g))
    lam = torch.linspace(low, high, P, dtype=DT)
    return Q @ torch.diag(lam) @ Q.T


def _least_squares(N: int = 7, P: int = 3, seed: int = 0):
    """A finite-sum quadratic: ℓ_i = ½ (x_iᵀθ − y_i)², with exact per-example gradients."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, P, dtype=DT, generator=g)
    y = torch.randn(N, dtype=DT, generator=g)
    theta = torch.randn(P, dtype=DT, generator=g)
    H = X.T @ X / N
    theta_star = torch.linalg.solve(H, X.T @ y / N)
    resid_min = 0.5 * ((X @ theta_star - y) ** 2).mean()

    def loss(t: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((X @ t - y) ** 2).mean() - resid_min  # = ½(t−θ*)ᵀH(t−θ*)

    G = X * (X @ theta - y)[:, None]  # (N, P) per-example gradients at theta
    gbar = G.mean(0)
    D = G.T @ G / N - torch.outer(gbar, gbar)
    return X, y, theta, theta_star, H, G, D, loss


# --------------------------------------------------------------------------- Lemma 2


def test_expected_quadratic_form_exact_on_discrete_distribution():
    # x uniform over a finite set: the expectation is an exact finite average.
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(9, 4, dtype=DT, generator=g) + 0.7
    A = torch.randn(4, 4, dtype=DT, generator=g)  # not symmetric: Lemma 2 still holds
    mu = pts.mean(0)
    cov = (pts - mu).T @ (pts - mu) / pts.shape[0]
    exact = torch.einsum("sp,pq,sq->s", pts, A, pts).mean()
    got = st.expected_quadratic_form(A, mu, cov)
    assert got.ndim == 0
    assert torch.allclose(got, exact, rtol=1e-12, atol=1e-12)


def test_expected_quadratic_form_monte_carlo_non_gaussian():
    # x = μ + L(e − 1) with e ~ Exp(1): mean μ, covariance LLᵀ, strongly skewed.
    g = torch.Generator().manual_seed(2)
    P, S = 3, 200_000
    L = torch.randn(P, P, dtype=DT, generator=g)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    A = _spd(P, 3)
    e = -torch.log(torch.rand(S, P, dtype=DT, generator=g))
    x = mu + (e - 1.0) @ L.T
    q = torch.einsum("sp,pq,sq->s", x, A, x)
    se = q.std() / math.sqrt(S)
    want = st.expected_quadratic_form(A, mu, L @ L.T)
    assert abs(q.mean() - want) < 5 * se


def test_quadratic_form_variance_gaussian_monte_carlo():
    g = torch.Generator().manual_seed(4)
    P, S = 3, 200_000
    A = _spd(P, 5)
    L = torch.randn(P, P, dtype=DT, generator=g)
    mu = torch.tensor([1.0, 0.0, -0.5], dtype=DT)
    x = mu + torch.randn(S, P, dtype=DT, generator=g) @ L.T
    q = torch.einsum("sp,pq,sq->s", x, A, x)
    var = st.quadratic_form_variance_gaussian(A, mu, L @ L.T)
    # Sampling error of a variance estimate: sd ≈ var·sqrt((κ − 1)/S); κ ≤ ~15 here.
    assert abs(q.var() / var - 1.0) < 5 * math.sqrt(14.0 / S)


# --------------------------------------------------------------------------- one step of SGD


@pytest.mark.parametrize("replacement", [True, False])
def test_one_step_expected_loss_exact_enumeration(replacement):
    X, y, theta, theta_star, H, G, D, loss = _least_squares()
    N, B, lr = G.shape[0], 3, 0.3
    if replacement:
        batches = list(itertools.product(range(N), repeat=B))  # ordered, equally likely
    else:
        batches = list(itertools.combinations(range(N), B))  # equally likely subsets
    idx = torch.tensor(batches)
    gB = G[idx].mean(1)  # (num_batches, P)
    exact = torch.stack([loss(theta - lr * g) for g in gB]).mean()
    res = st.sgd_one_step_expected_loss(
        H, theta, D, lr, B, theta_star=theta_star, replacement=replacement, num_examples=N
    )
    assert math.isclose(res.expected, float(exact), rel_tol=1e-10)
    assert math.isclose(res.current, float(loss(theta)), rel_tol=1e-10)
    gbar = G.mean(0)
    assert math.isclose(res.deterministic, float(loss(theta - lr * gbar)), rel_tol=1e-10)
    assert res.noise > 0
    assert math.isclose(res.expected_change, res.expected - res.current)


def test_second_order_change_matches_quadratic():
    X, y, theta, theta_star, H, G, D, loss = _least_squares(seed=3)
    lr, B = 0.2, 2
    full = st.sgd_one_step_expected_loss(H, theta, D, lr, B, theta_star=theta_star)
    terms = st.expected_loss_change_second_order(H, G.mean(0), D, lr, B)
    assert math.isclose(terms["expected"], full.expected - full.current, rel_tol=1e-10)
    assert math.isclose(terms["deterministic"], full.deterministic - full.current, rel_tol=1e-10)
    assert math.isclose(terms["noise"], full.noise, rel_tol=1e-12)
    assert math.isclose(
        terms["expected"], terms["first_order"] + terms["curvature"] + terms["noise"]
    )


def test_noise_term_scales_like_lr_squared_over_batch():
    _, _, theta, theta_star, H, _, D, _ = _least_squares(seed=5)
    a = st.sgd_one_step_expected_loss(H, theta, D, 0.1, 1, theta_star=theta_star).noise
    b = st.sgd_one_step_expected_loss(H, theta, D, 0.2, 4, theta_star=theta_star).noise
    assert math.isclose(b, a * 4 / 4, rel_tol=1e-12)
    assert math.isclose(a, 0.5 * 0.01 * float(torch.trace(H @ D)), rel_tol=1e-12)


def test_covariance_of_minibatch_finite_population():
    D = _spd(3, 7)
    assert torch.allclose(st.covariance_of_minibatch(D, 4), D / 4)
    wo = st.covariance_of_minibatch(D, 4, replacement=False, num_examples=10)
    assert torch.allclose(wo, D / 4 * 6 / 9)
    assert torch.count_nonzero(
        st.covariance_of_minibatch(D, 10, replacement=False, num_examples=10)
    ) == 0
    with pytest.raises(ValueError, match="num_examples"):
        st.covariance_of_minibatch(D, 4, replacement=False)
    with pytest.raises(ValueError, match="batch_size"):
        st.covariance_of_minibatch(D, 11, replacement=False, num_examples=10)


# --------------------------------------------------------------------------- Markov


def test_markov_bound_values():
    assert st.markov_bound(1.0, 4.0) == 0.25
    assert st.markov_bound(5.0, 1.0) == 1.0
    with pytest.raises(ValueError, match="threshold"):
        st.markov_bound(1.0, 0.0)
    with pytest.raises(ValueError, match="expected_value"):
        st.markov_bound(-1.0, 1.0)
    assert st.markov_loss_increase_bound(2.0, 1.0, 3.0) == 0.5


def test_markov_loss_increase_bound_holds_in_simulation():
    X, y, theta, theta_star, H, G, D, loss = _least_squares(N=12, P=3, seed=6)
    lr, B = 0.8, 1
    res = st.sgd_one_step_expected_loss(H, theta, D, lr, B, theta_star=theta_star)
    # exact distribution of the next loss with B=1: N equally likely outcomes
    nxt = torch.stack([loss(theta - lr * g) for g in G])
    for a in (0.01, 0.1, 0.5, 1.0):
        freq = float((nxt - res.current >= a).double().mean())
        bound = st.markov_loss_increase_bound(res.expected, res.current, a)
        assert freq <= bound + 1e-12


# --------------------------------------------------------------------------- stationary covariance


def test_stationary_covariance_methods_agree_and_solve_equation():
    P, lr = 5, 0.4
    H = _spd(P, 8, 0.2, 3.0)
    C = _spd(P, 9, 0.05, 1.0)  # does not commute with H
    sols = {m: st.stationary_covariance(H, C, lr, method=m) for m in ("eigen", "scipy", "kron")}
    A = torch.eye(P, dtype=DT) - lr * H
    for m, S in sols.items():
        resid = S - A @ S @ A.T - lr**2 * C
        assert resid.abs().max() < 1e-12, m
        assert torch.allclose(S, sols["eigen"], rtol=1e-9, atol=1e-12), m
    assert torch.linalg.eigvalsh(sols["eigen"]).min() > 0


def test_stationary_covariance_commuting_closed_form():
    P, lr = 4, 0.5
    g = torch.Generator().manual_seed(10)
    Q, _ = torch.linalg.qr(torch.randn(P, P, dtype=DT, generator=g))
    lam = torch.tensor([0.1, 0.5, 1.5, 3.5], dtype=DT)
    c = torch.tensor([0.2, 1.0, 0.3, 2.0], dtype=DT)
    H = Q @ torch.diag(lam) @ Q.T
    C = Q @ torch.diag(c) @ Q.T
    S = st.stationary_covariance(H, C, lr)
    diag = st.stationary_covariance_commuting(lam, c, lr)
    assert torch.allclose(Q.T @ S @ Q, torch.diag(diag), atol=1e-12)
    # noise ∝ H gives Σ_ii = η/(2 − ηλ_i) · const: nearly isotropic for small ηλ
    iso = st.stationary_covariance_commuting(lam, 2.0 * lam, lr)
    assert torch.allclose(iso, 2.0 * lr / (2.0 - lr * lam))


def test_stationary_covariance_monte_carlo():
    P, lr = 3, 0.5
    H = _spd(P, 11, 0.3, 2.5)
    C = _spd(P, 12, 0.2, 1.0)
    S = st.stationary_covariance(H, C, lr)
    n = 4_000
    x = st.simulate_linear_sgd(H, C, lr, 60, n, generator=torch.Generator().manual_seed(13))
    emp = x.T @ x / n  # mean is exactly 0 in the model
    # sd of a Gaussian sample second moment: sqrt((Σ_ii Σ_jj + Σ_ij²)/n)
    sd = ((torch.outer(S.diag(), S.diag()) + S**2) / n).sqrt()
    assert ((emp - S).abs() < 5 * sd).all()


def test_stationary_covariance_rejects_unstable_lr():
    H = torch.diag(torch.tensor([1.0, 4.0], dtype=DT))
    C = torch.eye(2, dtype=DT)
    with pytest.raises(ValueError, match="lr"):
        st.stationary_covariance(H, C, 0.6)  # 0.6 * 4 = 2.4 > 2
    with pytest.raises(ValueError, match="lr"):
        st.stationary_covariance_commuting(torch.tensor([1.0, 4.0]), torch.ones(2), 0.6)
    with pytest.raises(ValueError, match="kron"):
        st.stationary_covariance(torch.eye(61, dtype=DT), torch.eye(61, dtype=DT), 0.1,
                                 method="kron")


def test_linear_stability_threshold():
    H = torch.diag(torch.tensor([0.5, 2.0], dtype=DT))
    assert math.isclose(st.max_stable_lr(H), 1.0)
    s = st.linear_stability(H, 0.99)
    assert s.stable and math.isclose(s.threshold, 2 / 0.99) and s.lambda_max == 2.0
    assert math.isclose(s.spectral_radius, max(abs(1 - 0.99 * 0.5), abs(1 - 0.99 * 2.0)))
    assert not st.linear_stability(H, 1.01).stable
    # Deterministic GD check: |1 − ηλ|^t decides growth.
    x = torch.ones(2, dtype=DT)
    for _ in range(200):
        x = x - 1.01 * H @ x
    assert x.abs().max() > 1.0
    assert not st.linear_stability(torch.diag(torch.tensor([0.0, 1.0], dtype=DT)), 0.5).stable


# --------------------------------------------------------------------------- argument errors


def test_shape_errors():
    A = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="A must be square"):
        st.expected_quadratic_form(torch.ones(3, 2, dtype=DT), torch.zeros(3, dtype=DT), A)
    with pytest.raises(ValueError, match="mean must have length 3"):
        st.expected_quadratic_form(A, torch.zeros(2, dtype=DT), A)
    with pytest.raises(ValueError, match="cov must match"):
        st.expected_quadratic_form(A, torch.zeros(3, dtype=DT), torch.eye(2, dtype=DT))
    with pytest.raises(ValueError, match="C must match"):
        st.stationary_covariance(A, torch.eye(2, dtype=DT), 0.1)
    with pytest.raises(ValueError, match="symmetric"):
        st.stationary_covariance(torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=DT),
                                 torch.eye(2, dtype=DT), 0.1)
    with pytest.raises(ValueError, match="lr"):
        st.sgd_one_step_expected_loss(A, torch.zeros(3, dtype=DT), A, -0.1)
    with pytest.raises(ValueError, match="theta"):
        st.quadratic_loss(A, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="method"):
        st.stationary_covariance(A, A, 0.1, method="bogus")
