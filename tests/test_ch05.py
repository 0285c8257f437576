"""Tests for sgdnoise.chapters.ch05_overparam: spectra against dense float64 references and
constructed spectra, the random-span baseline, the parameters and the verdict functions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdnoise.chapters import ch05_overparam as L
from sgdnoise.covariance import CovarianceOperator, gradient_covariance
from sgdnoise.curvature import empirical_fisher, ggn, hessian
from sgdnoise.grads import per_example_grads
from sgdnoise.spectral import spectral_density

DT = torch.float64


def _tiny(seed=0, n=12, d=6, h=8, c=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).to(DT)
    x = torch.randn(n, d, dtype=DT)
    y = torch.arange(n) % c
    return model, x, y


def test_rank_bounds_on_tiny_overparameterised_model():
    model, x, y = _tiny()
    n, c = x.shape[0], 3
    loss = nn.functional.cross_entropy
    F = empirical_fisher(model, loss, x, y)
    p = F.shape[0]
    assert p > n * (c - 1)
    G = per_example_grads(model, loss, x, y)
    gram = L.gram_spectrum(G)
    dense = torch.linalg.eigvalsh(F).flip(0)
    torch.testing.assert_close(gram, dense[:n].clamp_min(0), atol=1e-10, rtol=1e-8)
    assert L.numerical_rank(gram, dim=p) == int(torch.linalg.matrix_rank(F)) <= n
    D = gradient_covariance(G)
    assert L.numerical_rank(L.gram_spectrum(G, centered=True), dim=p) == int(
        torch.linalg.matrix_rank(D)) <= n - 1
    # the GGN of softmax cross-entropy has rank <= N (C - 1)
    assert int(torch.linalg.matrix_rank(ggn(model, loss, x, y))) <= n * (c - 1)


def test_count_outliers_on_known_spikes():
    ev = torch.cat([torch.linspace(100, 50, 7), torch.linspace(1.0, 0.01, 50)])
    assert L.count_outliers(ev) == 7
    assert L.count_outliers(torch.linspace(2.0, 1.0, 30)) == 0  # smooth: no gap >= 1.5


def test_class_means_give_c_outliers_and_c_minus_1_after_centering():
    gen = torch.Generator().manual_seed(1)
    c, p, per = 5, 300, 20
    mu = 10 * torch.randn(c, p, generator=gen, dtype=DT) / math.sqrt(p)
    y = torch.arange(c).repeat_interleave(per)
    G = mu[y] + 0.3 * torch.randn(c * per, p, generator=gen, dtype=DT) / math.sqrt(p)
    assert L.count_outliers(L.gram_spectrum(G)) == c
    # balanced classes with zero mean class-means: the centred covariance loses one direction
    G0 = G - mu.mean(0)
    assert L.count_outliers(L.gram_spectrum(G0, centered=True)) == c - 1
    M = L.class_mean_gradients(G, y, c)
    torch.testing.assert_close(M, torch.stack([G[y == k].mean(0) for k in range(c)]))
    _, U = CovarianceOperator(torch.cat([G, -G])).eigh(c)
    assert L.subspace_capture(U, M) > 0.95
    Q, _ = torch.linalg.qr(torch.randn(p, c, generator=gen, dtype=DT))
    assert L.subspace_capture(Q, M) < 0.2


def test_noise_energy_fraction_matches_dense():
    model, x, y = _tiny(seed=2)
    loss = nn.functional.cross_entropy
    G = per_example_grads(model, loss, x, y)
    D = gradient_covariance(G)
    H = hessian(model, loss, x, y)
    _, V = torch.linalg.eigh(H)
    U = V.flip(1)[:, :5]
    frac = L.noise_energy_fraction(CovarianceOperator(G, batch_size=4), U)
    ref = torch.cumsum(torch.diagonal(U.T @ D @ U), 0) / torch.trace(D)
    torch.testing.assert_close(frac, ref, atol=1e-12, rtol=1e-10)
    full = L.noise_energy_fraction(CovarianceOperator(G), V)
    assert abs(float(full[-1]) - 1.0) < 1e-10
    assert L.random_subspace_fraction(5, V.shape[0]) == 5 / V.shape[0]


def test_near_zero_fractions_exact_and_slq():
    dim, zeros = 200, 140
    diag = torch.zeros(dim, dtype=DT)
    diag[zeros:] = torch.linspace(1.0, 10.0, 20, dtype=DT).repeat(3)
    assert L.near_zero_fraction(diag, rtol=1e-3) == zeros / dim
    assert L.near_zero_fraction(diag[zeros:], rtol=1e-3, dim=dim) == zeros / dim
    sd = spectral_density(lambda v: diag * v, dim, num_probes=2, num_iters=40, seed=0)
    # Rademacher probes on a diagonal matrix put mass exactly zeros/dim on the null space
    assert abs(L.slq_near_zero_fraction(sd, rtol=1e-6) - zeros / dim) < 1e-8
    zc = L.slq_zero_cluster(sd)
    assert abs(zc["weight"] - zeros / dim) < 1e-8 and zc["position"] < 1e-10
    # a tight cluster of small positive eigenvalues: a short Gauss rule lumps it into one
    # node just above the cluster (interlacing: >= its minimum), carrying about its share
    clustered = diag.clone()
    clustered[:zeros] = torch.linspace(1e-3, 3e-3, zeros, dtype=DT)
    sd = spectral_density(lambda v: clustered * v, dim, num_probes=2, num_iters=6, seed=0)
    zc = L.slq_zero_cluster(sd, scale=10.0)
    assert 1e-4 - 1e-12 <= zc["position"] < 1e-3  # far below the rest (>= 0.1)
    assert abs(zc["weight"] - zeros / dim) < 0.05
    assert L.slq_near_zero_fraction(sd, rtol=1e-4, scale=10.0) == 0.0  # window too narrow


def test_train_and_overparam_study_smoke():
    torch.manual_seed(0)
    n, c = 24, 3
    x = torch.randn(n, 10, dtype=DT)
    y = torch.arange(n) % c
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, c)).to(DT)
    hist = L.train_to_interpolation(model, x, y, lr=0.5, batch_size=8, max_epochs=300)
    assert hist["train_error"].iloc[-1] == 0.0
    r = L.overparam_study(model, x, y, num_classes=c, top_k=6, lanczos_iters=40,
                          slq_probes=1, slq_iters=20)
    assert r.rank_fisher <= n and r.rank_cov <= n - 1
    assert r.p == 10 * 16 + 16 + 16 * c + c
    e = r.energy
    assert (e["top-k Hessian eigenvectors"].diff().dropna() >= -1e-12).all()
    assert (e["top-k Hessian eigenvectors"] <= e["top-k eigenvectors of D (optimum)"] + 1e-9).all()
    H = hessian(model, nn.functional.cross_entropy, x, y)
    top = torch.linalg.eigvalsh(H).flip(0)[:3]
    torch.testing.assert_close(r.hessian_top[:3], top, atol=1e-6, rtol=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="max_outliers"):
        L.count_outliers(torch.ones(3), max_outliers=0)
    with pytest.raises(ValueError, match="labels"):
        L.class_mean_gradients(torch.zeros(2, 3), torch.tensor([0, 5]), 3)


def test_gradient_only_study():
    model, x, y = _tiny(seed=3, n=15)
    r = L.overparam_study(model, x, y, num_classes=3, top_k=4, slq_probes=1, slq_iters=10,
                          curvature=False)
    assert r.hessian_top.numel() == 0 and r.energy is None
    assert set(r.outliers["matrix"]) == {"empirical Fisher", "covariance D"}
    assert list(r.densities) == ["empirical Fisher"]


def test_random_span_fraction_is_k_over_rank():
    gen = torch.Generator().manual_seed(4)
    n, p, k = 12, 80, 3
    G = torch.randn(n, p, generator=gen, dtype=DT) * torch.linspace(0.1, 3.0, p, dtype=DT)
    cov = CovarianceOperator(G)
    r = L.random_span_fraction(G, cov, k, draws=400, seed=0)
    assert r["rank"] == n and r["expected"] == pytest.approx(k / n)
    assert abs(r["mc_mean"] - k / n) < 4 * r["mc_std"] / math.sqrt(400)
    # far above the ambient baseline k/P
    assert r["expected"] / L.random_subspace_fraction(k, p) == pytest.approx(p / n)
    # a rank-deficient G: the rank, not N, sets the baseline
    G2 = torch.cat([G[:5], G[:5] * 2.0])
    assert L.random_span_fraction(G2, CovarianceOperator(G2), k)["rank"] == 5
    with pytest.raises(ValueError, match="k must be <= rank G"):
        L.random_span_fraction(G2, CovarianceOperator(G2), 6)


# ------------------------------------------------------------------ parameters

def _params(**kw):
    import yaml
    from conftest import BOOK

    values = yaml.safe_load((BOOK / "params" / "ch05_overparam" / "smoke.yaml").read_text())
    values.update(kw)
    return L.Params.from_mapping(values)


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    from conftest import BOOK

    P = L.Params.from_yaml(BOOK / "params" / "ch05_overparam" / f"{profile}.yaml")
    assert P.profile == profile


@pytest.mark.parametrize("kw, pattern", [
    ({"top_k": 50}, r"parameter 'top_k' = 50: must be <= mlp_n and cnn_n"),
    ({"batch_size": 31}, r"parameter 'batch_size' = 31"),
    ({"flat_rtol": 0.05}, r"parameter 'flat_rtol' = 0.05: must be one of the windows"),
    ({"image_size": 5}, r"parameter 'image_size' must be one of"),
    ({"concentration_min": 0.5}, r"parameter 'concentration_min' must be >= 1"),
])
def test_params_errors_name_the_parameter(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        _params(**kw)


# ------------------------------------------------------------------ verdicts

S = "laptop, test"


def test_verdict_rank_flips():
    ok = L.verdict_rank([L.RankRow("a", 10, 1000, 10, 9)], scale=S)
    assert ok.outcome == "supported" and "99.0%" in ok.sentence
    bad = L.verdict_rank([L.RankRow("a", 10, 1000, 10, 10)], scale=S)
    assert bad.outcome == "contradicted"


def _flat(h, ggn=0.9, bound=0.85):
    return L.FlatRow("M", 0.5, 1e-4, h, h, ggn, bound, 0.99)


def test_verdict_flat_bulk_flips_at_threshold():
    kw = dict(flat_rtol=0.01, flat_fraction=0.5, scale=S)
    assert L.verdict_flat_bulk([_flat(0.8), _flat(0.6)], **kw).outcome == "supported"
    assert L.verdict_flat_bulk([_flat(0.4), _flat(0.3)], **kw).outcome == "contradicted"
    assert L.verdict_flat_bulk([_flat(0.8), _flat(0.3)], **kw).outcome == "mixed"
    # the quadrature missed the GGN's exact zero share: cannot decide
    unresolved = L.verdict_flat_bulk([_flat(0.8, ggn=0.5, bound=0.85)], **kw)
    assert unresolved.outcome == "inconclusive" and "not resolved" in unresolved.sentence


def test_verdict_outliers_flips():
    kw = dict(num_classes=10, outlier_share=0.5, capture_min=0.5, random_capture=1e-3,
              scale=S)
    assert L.verdict_outliers([9, 10, 9, 3], [0.9, 0.8], **kw).outcome == "supported"
    assert L.verdict_outliers([0, 1, 9, 3], [0.9, 0.8], **kw).outcome == "mixed"
    assert L.verdict_outliers([0, 1, 9, 3], [0.9, 0.2], **kw).outcome == "contradicted"
    assert L.verdict_outliers([], [], **kw).outcome == "inconclusive"


def test_verdict_noise_concentration_uses_the_span_baseline():
    # phi = 0.5 at k = 10: 2.5x a random subspace of a 50-dim span, 500x of R^10000
    high = L.EnergyRow("a", 10, 0.5, 0.7, 50, 10_000)
    low = L.EnergyRow("b", 10, 0.3, 0.7, 20, 10_000)  # 0.6x k/rank G, still 300x k/P
    assert high.ratio_span == pytest.approx(2.5) and low.ratio_ambient == pytest.approx(300)
    kw = dict(concentration_min=2.0, scale=S)
    assert L.verdict_noise_concentration([high], **kw).outcome == "supported"
    assert L.verdict_noise_concentration([low], **kw).outcome == "contradicted"
    assert L.verdict_noise_concentration([high, low], **kw).outcome == "mixed"
    assert L.verdict_noise_concentration([], **kw).outcome == "inconclusive"
