"""Lemma 1 and the covariance operator against independent references: exact enumeration of
all mini-batches, Monte Carlo with sample-size-derived bands, numpy linear algebra."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdnoise.covariance import (
    finite_population_factor,
    gradient_covariance,
    minibatch_covariance,
    minibatch_trace,
    monte_carlo_covariance_error,
    noise_scale,
    sample_covariance,
    sample_minibatch_gradients,
)
from sgdnoise.curvature import CovarianceOperator

torch.set_num_threads(1)


def random_G(n: int, p: int, seed: int = 0, *, offset: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 2.0, p, dtype=torch.float64)
    return offset + torch.randn((n, p), generator=g, dtype=torch.float64) * scales


# ---------------------------------------------------------------- dense definitions


def test_gradient_covariance_matches_numpy_population_covariance():
    G = random_G(13, 5)
    D = gradient_covariance(G)
    ref = np.cov(G.numpy().T, bias=True)
    np.testing.assert_allclose(D.numpy(), ref, rtol=1e-12, atol=1e-14)
    gbar = G.mean(0)
    alt = G.T @ G / G.shape[0] - torch.outer(gbar, gbar)  # the book's formula
    torch.testing.assert_close(D, alt, rtol=1e-10, atol=1e-12)


def test_noise_scale_and_trace_against_direct_formulas():
    G = random_G(20, 4, seed=3)
    gbar = G.mean(0)
    tr_D = sum(float((G[i] - gbar) @ (G[i] - gbar)) for i in range(20)) / 20
    assert noise_scale(G) == pytest.approx(tr_D / float(gbar @ gbar), rel=1e-12)
    assert minibatch_trace(G, 4) == pytest.approx(tr_D / 4, rel=1e-12)
    assert minibatch_trace(G, 4, replacement=False) == pytest.approx(
        tr_D / 4 * 16 / 19, rel=1e-12
    )
    assert noise_scale(torch.zeros(3, 2, dtype=torch.float64) + 1.0) == 0.0
    centred = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert noise_scale(centred) == math.inf


# ---------------------------------------------------------------- exact enumeration


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 5])
def test_lemma1_without_replacement_by_enumerating_every_subset(batch_size):
    n = 5
    G = random_G(n, 3, seed=7)
    batches = torch.stack(
        [G[list(s)].mean(0) for s in itertools.combinations(range(n), batch_size)]
    )
    mean = batches.mean(0)  # every subset equally likely
    exact = (batches - mean).T @ (batches - mean) / batches.shape[0]
    torch.testing.assert_close(mean, G.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        minibatch_covariance(G, batch_size, replacement=False), exact, rtol=1e-10, atol=1e-13
    )


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_lemma1_with_replacement_by_enumerating_every_tuple(batch_size):
    n = 4
    G = random_G(n, 3, seed=8)
    batches = torch.stack(
        [G[list(t)].mean(0) for t in itertools.product(range(n), repeat=batch_size)]
    )
    mean = batches.mean(0)
    exact = (batches - mean).T @ (batches - mean) / batches.shape[0]
    torch.testing.assert_close(mean, G.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(minibatch_covariance(G, batch_size), exact, rtol=1e-10, atol=1e-13)


def test_full_batch_without_replacement_has_zero_covariance():
    G = random_G(9, 4)
    assert torch.count_nonzero(minibatch_covariance(G, 9, replacement=False)) == 0
    assert minibatch_trace(G, 9, replacement=False) == 0.0
    op = CovarianceOperator(G, batch_size=9, replacement=False)
    assert op.trace() == 0.0
    evals, evecs = op.eigh(3)
    assert torch.count_nonzero(evals) == 0
    torch.testing.assert_close(evecs.T @ evecs, torch.eye(3, dtype=torch.float64))
    samples = sample_minibatch_gradients(G, 9, 5, replacement=False)
    torch.testing.assert_close(samples, G.mean(0).expand(5, -1), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- Monte Carlo


def _mc_band_check(samples: torch.Tensor, mean: torch.Tensor, C: torch.Tensor, sigmas=5.0):
    """Entries of the known-mean MC covariance vs C, within `sigmas` standard errors."""
    Xc = samples - mean
    S = samples.shape[0]
    prods = Xc[:, :, None] * Xc[:, None, :]  # (S, P, P) per-sample outer products
    est = prods.mean(0)
    se = prods.std(0) / math.sqrt(S)
    z = (est - C).abs() / se
    tr = (Xc * Xc).sum(1)
    z_tr = abs(float(tr.mean()) - float(torch.trace(C))) / (float(tr.std()) / math.sqrt(S))
    z_mean = ((samples.mean(0) - mean).abs() / (samples.std(0) / math.sqrt(S))).max()
    return float(z.max()), z_tr, float(z_mean)


@pytest.mark.parametrize("replacement", [True, False])
def test_lemma1_monte_carlo_within_five_standard_errors(replacement):
    G = random_G(30, 4, seed=11)
    B, S = 12, 40_000
    gen = torch.Generator().manual_seed(123)
    X = sample_minibatch_gradients(G, B, S, replacement=replacement, generator=gen)
    C = minibatch_covariance(G, B, replacement=replacement)
    z_entries, z_trace, z_mean = _mc_band_check(X, G.mean(0), C)
    assert z_entries < 5.0 and z_trace < 5.0 and z_mean < 5.0
    # the check has power: the other scheme's formula is far outside the band
    wrong = minibatch_covariance(G, B, replacement=not replacement)
    _, z_wrong, _ = _mc_band_check(X, G.mean(0), wrong)
    assert z_wrong > 20.0


def test_samples_are_reproducible_and_respect_the_scheme():
    n, B = 8, 5
    G = n * torch.eye(n, dtype=torch.float64)  # row i of W @ G is (counts of i) * n / B
    a = sample_minibatch_gradients(
        G, B, 200, replacement=False, generator=torch.Generator().manual_seed(5)
    )
    b = sample_minibatch_gradients(
        G, B, 200, replacement=False, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(a, b)
    counts = a * B / n
    torch.testing.assert_close(counts, counts.round())
    assert counts.max() == 1.0  # distinct indices without replacement
    torch.testing.assert_close(counts.sum(1), torch.full((200,), float(B), dtype=torch.float64))
    c = sample_minibatch_gradients(
        G, B, 500, replacement=True, generator=torch.Generator().manual_seed(5)
    )
    c_counts = c * B / n
    torch.testing.assert_close(c_counts.sum(1), torch.full((500,), float(B), dtype=torch.float64))
    assert c_counts.max() > 1.0  # repeats happen with replacement (P(no repeat) ~ 0.2^500)


@pytest.mark.parametrize("replacement", [True, False])
def test_monte_carlo_error_is_exact_and_shrinks_like_inverse_sqrt(replacement):
    G = random_G(12, 3, seed=2)
    res = monte_carlo_covariance_error(
        G, 3, [50, 800], replacement=replacement, num_repeats=30,
        generator=torch.Generator().manual_seed(0), return_estimates=True,
    )
    C = minibatch_covariance(G, 3, replacement=replacement)
    assert res.relative_errors.shape == (30, 2)
    assert res.closed_form_trace == pytest.approx(float(torch.trace(C)), rel=1e-12)
    # reported error equals the dense computation for the returned (first-repeat) estimates
    for k, est in enumerate(res.estimates):
        dense = float(torch.linalg.matrix_norm(est - C) / torch.linalg.matrix_norm(C))
        assert res.relative_errors[0, k] == pytest.approx(dense, rel=1e-9)
    ratio = float(res.mean_errors()[0] / res.mean_errors()[1])
    assert 2.5 < ratio < 6.5  # sqrt(800/50) = 4


def test_monte_carlo_error_gram_route_matches_dense_route():
    """P larger than S + N uses the O((S+N)^2 P) expansion; compare against dense."""
    G = random_G(6, 40, seed=4)
    res = monte_carlo_covariance_error(
        G, 2, [5], generator=torch.Generator().manual_seed(1), return_estimates=True
    )
    C = minibatch_covariance(G, 2)
    dense = float(torch.linalg.matrix_norm(res.estimates[0] - C) / torch.linalg.matrix_norm(C))
    assert float(res.relative_errors[0, 0]) == pytest.approx(dense, rel=1e-9)
    torch.testing.assert_close(
        res.estimates[0],
        sample_covariance(
            sample_minibatch_gradients(G, 2, 5, generator=torch.Generator().manual_seed(1))
        ),
    )


# ---------------------------------------------------------------- operator


def test_operator_rank_deficient_eigh_completes_an_orthonormal_basis():
    G = random_G(4, 10, seed=9)  # rank(D) <= N - 1 = 3
    op = CovarianceOperator(G, batch_size=2)
    evals, U = op.eigh(4)
    C = op.to_dense()
    ref = np.linalg.eigvalsh(C.numpy())[::-1][:4]
    np.testing.assert_allclose(evals.numpy(), np.clip(ref, 0, None), atol=1e-12)
    assert float(evals[3]) == 0.0 and float(evals[2]) > 0.0
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(C @ U, U * evals, atol=1e-12, rtol=0)


def test_operator_to_scipy_eigsh():
    from scipy.sparse.linalg import eigsh

    G = random_G(30, 25, seed=5)
    op = CovarianceOperator(G, batch_size=4, replacement=False)
    lin = op.to_scipy()
    assert lin.shape == (25, 25)
    top = eigsh(lin, k=3, which="LA", return_eigenvectors=False)
    evals, _ = op.eigh(3)
    np.testing.assert_allclose(np.sort(top)[::-1], evals.numpy(), rtol=1e-9)
    X = np.random.default_rng(0).standard_normal((25, 2))
    np.testing.assert_allclose(lin @ X, op.to_dense().numpy() @ X, rtol=1e-12, atol=1e-12)


def test_validation_errors_name_the_argument():
    G = random_G(5, 3)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_covariance(G, 0)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_covariance(G, -2, replacement=False)
    with pytest.raises(ValueError, match="batch_size must be <= "):
        CovarianceOperator(G, batch_size=6, replacement=False)
    with pytest.raises(ValueError, match="batch_size must be <= "):
        sample_minibatch_gradients(G, 6, 3, replacement=False)
    assert finite_population_factor(5, 6, replacement=True) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="G must be a 2-D tensor"):
        gradient_covariance(G[0])
    assert minibatch_trace(G[:1], 1, replacement=False) == 0.0  # B = N = 1: no noise
    with pytest.raises(ValueError, match="G must have at least 2 rows"):
        monte_carlo_covariance_error(G[:1], 1, [10])
    with pytest.raises(ValueError, match="sample_counts"):
        monte_carlo_covariance_error(G, 1, [1])
    op = CovarianceOperator(G)
    with pytest.raises(ValueError, match="v must have length 3"):
        op.matvec(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="V must have 3 rows"):
        op.matmat(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be"):
        op.eigh(4)


# ---------------------------------------------------------------- properties


@st.composite
def covariance_cases(draw):
    n = draw(st.integers(2, 9))
    p = draw(st.integers(1, 7))
    replacement = draw(st.booleans())
    b = draw(st.integers(1, n if not replacement else n + 3))
    seed = draw(st.integers(0, 10_000))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return random_G(n, p, seed) * scale, b, replacement


@settings(max_examples=60, deadline=None)
@given(covariance_cases())
def test_properties_of_the_minibatch_covariance(case):
    G, b, replacement = case
    n, p = G.shape
    C = minibatch_covariance(G, b, replacement=replacement)
    D = gradient_covariance(G)
    size = float(torch.linalg.matrix_norm(D)) + 1e-300
    tol = 1e-10 * size
    assert torch.equal(C, C.T) or float((C - C.T).abs().max()) <= tol
    assert float(np.linalg.eigvalsh(C.numpy()).min()) >= -tol
    c = (1 / b) if replacement else (n - b) / (b * (n - 1))
    torch.testing.assert_close(C, c * D, rtol=1e-12, atol=tol)
    if replacement:  # 1/B scaling
        torch.testing.assert_close(minibatch_covariance(G, 2 * b), C / 2, rtol=1e-12, atol=tol)
    op = CovarianceOperator(G, batch_size=b, replacement=replacement)
    tr = float(torch.trace(C))
    traces = (minibatch_trace(G, b, replacement=replacement), op.trace(), op.diagonal().sum())
    for t in traces:
        assert float(t) == pytest.approx(tr, rel=1e-10, abs=tol)
    torch.testing.assert_close(op.diagonal(), torch.diagonal(C), rtol=1e-10, atol=tol)
    torch.testing.assert_close(op.to_dense(), C, rtol=1e-10, atol=tol)
    v = torch.linspace(-1, 1, p, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), C @ v, rtol=1e-10, atol=tol)
    V = torch.stack([v, v.flip(0) ** 2], dim=1)
    torch.testing.assert_close(op @ V, C @ V, rtol=1e-10, atol=tol)


@settings(max_examples=60, deadline=None)
@given(covariance_cases(), st.integers(1, 7))
def test_operator_eigh_matches_numpy(case, k):
    G, b, replacement = case
    n, p = G.shape
    k = min(k, n, p)
    op = CovarianceOperator(G, batch_size=b, replacement=replacement)
    evals, U = op.eigh(k)
    C = op.to_dense().numpy()
    ref = np.linalg.eigvalsh(C)[::-1][:k]
    scale = float(np.abs(gradient_covariance(G).numpy()).max()) + 1e-300
    assert evals.shape == (k,) and U.shape == (p, k)
    assert bool((evals[:-1] >= evals[1:]).all())
    np.testing.assert_allclose(evals.numpy(), np.clip(ref, 0, None), atol=1e-9 * scale, rtol=1e-8)
    np.testing.assert_allclose((U.T @ U).numpy(), np.eye(k), atol=1e-8)
    np.testing.assert_allclose(C @ U.numpy(), U.numpy() * evals.numpy(), atol=1e-8 * scale)


def test_finite_population_factor_convention():
    """(N−B)/(B(N−1)) without replacement, 1/B with; 0 at B = N for every N, N = 1 included
    (the batch is the population, g_B = ḡ); the same function serves every module."""
    from sgdnoise import stability
    from sgdnoise.covariance import finite_population_factor

    assert finite_population_factor(10, 4, replacement=False) == pytest.approx(6 / 36)
    assert finite_population_factor(10, 4, replacement=True) == pytest.approx(1 / 4)
    assert finite_population_factor(7, 7, replacement=False) == 0.0
    assert finite_population_factor(1, 1, replacement=False) == 0.0
    assert finite_population_factor(1, 1, replacement=True) == 1.0
    with pytest.raises(ValueError, match="batch_size must be <= "):
        finite_population_factor(3, 4, replacement=False)
    with pytest.raises(ValueError, match="num_examples"):
        finite_population_factor(0, 1, replacement=True)
    D = torch.eye(2, dtype=torch.float64)
    for n, b in ((1, 1), (5, 5), (9, 2)):
        c = finite_population_factor(n, b, replacement=False)
        torch.testing.assert_close(
            stability.covariance_of_minibatch(D, b, replacement=False, num_examples=n), c * D
        )


def test_minibatch_means_shapes_exact_cases_and_lemma1_variance():
    import numpy as np

    from sgdnoise.covariance import finite_population_factor, minibatch_means

    rng = np.random.default_rng(0)
    v = np.arange(10.0)
    m = minibatch_means(v, 4, (3, 5), rng)
    assert m.shape == (3, 5)
    # B = N without replacement is the whole population: every mean is the exact mean
    assert np.array_equal(minibatch_means(v, 10, (7,), rng), np.full(7, v.mean()))
    # (N, d) values give (shape, d); each column is the mean of its own column
    two = minibatch_means(np.stack([v, 2 * v], 1), 10, (2,), rng)
    assert two.shape == (2, 2) and np.allclose(two[:, 1], 2 * two[:, 0])
    # Var of the batch mean = c · population variance (Lemma 1), both schemes
    pop = v.var()
    for replacement in (True, False):
        draws = minibatch_means(v, 3, (40000,), rng, replacement=replacement)
        c = finite_population_factor(10, 3, replacement=replacement)
        assert draws.var() == pytest.approx(c * pop, rel=0.05)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_means(np.ones(4), 5, (3,), np.random.default_rng(0))


# ------------------------------------------------------------------ spectra of F̂ and D (chapter 5)


from torch import nn  # noqa: E402

from sgdnoise.covariance import (  # noqa: E402
    class_mean_gradients,
    gram_spectrum,
    noise_energy_fraction,
    random_span_fraction,
)
from sgdnoise.curvature import empirical_fisher, ggn, hessian  # noqa: E402
from sgdnoise.grads import per_example_grads  # noqa: E402
from sgdnoise.spectral import (  # noqa: E402
    count_outliers,
    numerical_rank,
    random_subspace_fraction,
    subspace_capture,
)

DT = torch.float64


def _tiny_classifier(seed=0, n=12, d=6, h=8, c=3):
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).to(torch.float64)
    x = torch.randn(n, d, dtype=torch.float64)
    y = torch.arange(n) % c
    return model, x, y


def test_rank_bounds_on_tiny_overparameterised_model():
    model, x, y = _tiny_classifier()
    n, c = x.shape[0], 3
    loss = nn.functional.cross_entropy
    F = empirical_fisher(model, loss, x, y)
    p = F.shape[0]
    assert p > n * (c - 1)
    G = per_example_grads(model, loss, x, y)
    gram = gram_spectrum(G)
    dense = torch.linalg.eigvalsh(F).flip(0)
    torch.testing.assert_close(gram, dense[:n].clamp_min(0), atol=1e-10, rtol=1e-8)
    assert numerical_rank(gram, dim=p) == int(torch.linalg.matrix_rank(F)) <= n
    D = gradient_covariance(G)
    assert numerical_rank(gram_spectrum(G, centered=True), dim=p) == int(
        torch.linalg.matrix_rank(D)) <= n - 1
    # the GGN of softmax cross-entropy has rank <= N (C - 1)
    assert int(torch.linalg.matrix_rank(ggn(model, loss, x, y))) <= n * (c - 1)


def test_class_means_give_c_outliers_and_c_minus_1_after_centering():
    gen = torch.Generator().manual_seed(1)
    c, p, per = 5, 300, 20
    mu = 10 * torch.randn(c, p, generator=gen, dtype=DT) / math.sqrt(p)
    y = torch.arange(c).repeat_interleave(per)
    G = mu[y] + 0.3 * torch.randn(c * per, p, generator=gen, dtype=DT) / math.sqrt(p)
    assert count_outliers(gram_spectrum(G)) == c
    # balanced classes with zero mean class-means: the centred covariance loses one direction
    G0 = G - mu.mean(0)
    assert count_outliers(gram_spectrum(G0, centered=True)) == c - 1
    M = class_mean_gradients(G, y, c)
    torch.testing.assert_close(M, torch.stack([G[y == k].mean(0) for k in range(c)]))
    _, U = CovarianceOperator(torch.cat([G, -G])).eigh(c)
    assert subspace_capture(U, M) > 0.95
    Q, _ = torch.linalg.qr(torch.randn(p, c, generator=gen, dtype=DT))
    assert subspace_capture(Q, M) < 0.2


def test_noise_energy_fraction_matches_dense():
    model, x, y = _tiny_classifier(seed=2)
    loss = nn.functional.cross_entropy
    G = per_example_grads(model, loss, x, y)
    D = gradient_covariance(G)
    H = hessian(model, loss, x, y)
    _, V = torch.linalg.eigh(H)
    U = V.flip(1)[:, :5]
    frac = noise_energy_fraction(CovarianceOperator(G, batch_size=4), U)
    ref = torch.cumsum(torch.diagonal(U.T @ D @ U), 0) / torch.trace(D)
    torch.testing.assert_close(frac, ref, atol=1e-12, rtol=1e-10)
    full = noise_energy_fraction(CovarianceOperator(G), V)
    assert abs(float(full[-1]) - 1.0) < 1e-10
    assert random_subspace_fraction(5, V.shape[0]) == 5 / V.shape[0]


def test_random_span_fraction_is_k_over_rank():
    gen = torch.Generator().manual_seed(4)
    n, p, k = 12, 80, 3
    G = torch.randn(n, p, generator=gen, dtype=DT) * torch.linspace(0.1, 3.0, p, dtype=DT)
    cov = CovarianceOperator(G)
    r = random_span_fraction(G, cov, k, draws=400, seed=0)
    assert r["rank"] == n and r["expected"] == pytest.approx(k / n)
    assert abs(r["mc_mean"] - k / n) < 4 * r["mc_std"] / math.sqrt(400)
    # far above the ambient baseline k/P
    assert r["expected"] / random_subspace_fraction(k, p) == pytest.approx(p / n)
    # a rank-deficient G: the rank, not N, sets the baseline
    G2 = torch.cat([G[:5], G[:5] * 2.0])
    assert random_span_fraction(G2, CovarianceOperator(G2), k)["rank"] == 5
    with pytest.raises(ValueError, match="k must be <= rank G"):
        random_span_fraction(G2, CovarianceOperator(G2), 6)


def test_class_mean_gradients_names_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        class_mean_gradients(torch.zeros(2, 3), torch.tensor([0, 5]), 3)


def test_noise_scale_of_model_equals_dense_loop():
    from sgdnoise.train.noise_scale import noise_scale_of_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(DT)
    x = torch.randn(23, 5, dtype=DT)
    y = torch.randint(3, (23,))
    rows = []
    for i in range(23):  # independent reference: one autograd call per example
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    G = torch.stack(rows)
    D = gradient_covariance(G)
    gbar = G.mean(0)
    ref = float(torch.trace(D) / (gbar @ gbar))
    got = noise_scale_of_model(model, x, y, chunk_size=5)
    assert got["b_simple"] == pytest.approx(ref, rel=1e-10)
    assert got["trace_D"] == pytest.approx(float(torch.trace(D)), rel=1e-10)


def test_non_finite_gradients_are_refused_not_turned_into_nan():
    from sgdnoise.covariance import noise_scale

    G = torch.randn(6, 4, dtype=torch.float64)
    G[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"G holds 1 non-finite"):
        noise_scale(G)
    G[3, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        noise_scale(G)


def test_operator_eigh_float32_with_a_million_parameters_keeps_its_spectrum():
    """A ResNet-sized float32 G (P > 1/(10 eps) = 838,861): the rounding threshold must stay
    below λ_max (with max(N, P) · eps it was 12 λ_max and every eigenvalue came out 0)."""
    gen = torch.Generator().manual_seed(3)
    G = torch.randn((6, 1_000_000), generator=gen) * torch.linspace(0.5, 3.0, 6)[:, None]
    evals, U = CovarianceOperator(G).eigh(3)
    Gc = (G - G.mean(dim=0)).double()
    ref = torch.linalg.eigvalsh(Gc @ Gc.T / 6).flip(0)[:3]
    torch.testing.assert_close(evals.double(), ref, rtol=1e-4, atol=0)
    assert float(evals[2]) > 0.1 * float(evals[0])
    Ud = U.double()
    # orthonormal to float32 rounding of P-term inner products, about √P · eps = 1.2e-4
    torch.testing.assert_close(Ud.T @ Ud, torch.eye(3, dtype=torch.float64), atol=2e-4, rtol=0)
