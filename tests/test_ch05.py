"""Tests for sgdnoise.chapters.ch05_overparam: spectra against dense float64 references and
constructed spectra, the random-span baseline, the parameters and the verdict functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_typeset, profile_params
from torch import nn

from sgdnoise.chapters import ch05_overparam as L
from sgdnoise.curvature import hessian

DT = torch.float64


def _tiny(seed=0, n=12, d=6, h=8, c=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).to(DT)
    x = torch.randn(n, d, dtype=DT)
    y = torch.arange(n) % c
    return model, x, y


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


def test_train_to_interpolation_stops_at_the_target_epoch():
    """One row per epoch end (epoch 0 = initialisation), each the full-data loss and error
    of the model then; training stops at the first epoch whose error is <= the target, and
    runs max_epochs epochs when the target is not reached."""
    from sgdnoise.chapters.small_problems import loss_and_error

    torch.manual_seed(0)
    n, c, b = 30, 3, 8  # ceil(30 / 8) = 4 steps per epoch, the last of 6 examples
    x = torch.randn(n, 10, dtype=DT)
    y = torch.arange(n) % c
    init = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, c)).to(DT)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, c)).to(DT)
    model.load_state_dict(init.state_dict())
    target = 0.2
    hist = L.train_to_interpolation(model, x, y, lr=0.5, batch_size=b, max_epochs=300,
                                    target_error=target)
    last = len(hist) - 1
    assert list(hist.epoch) == list(range(last + 1)) and list(hist.step) == [4 * e for e in
                                                                          hist.epoch]
    assert hist.train_error.iloc[-1] <= target < hist.train_error.iloc[1:-1].min()
    assert (hist.train_loss.iloc[-1], hist.train_error.iloc[-1]) == loss_and_error(model, x, y)
    # the same run capped one epoch before the target: exactly max_epochs epochs
    capped = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, c)).to(DT)
    capped.load_state_dict(init.state_dict())
    short = L.train_to_interpolation(capped, x, y, lr=0.5, batch_size=b,
                                     max_epochs=last - 1, target_error=target)
    assert list(short.epoch) == list(range(last))
    assert short.equals(hist.iloc[:last])
    with pytest.raises(ValueError, match="max_epochs"):
        L.train_to_interpolation(model, x, y, lr=0.5, batch_size=b, max_epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        L.train_to_interpolation(model, x, y, lr=0.5, batch_size=n + 1, max_epochs=1)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="top_k"):
        L.overparam_study(nn.Linear(2, 2).double(), torch.zeros(3, 2, dtype=DT),
                          torch.zeros(3, dtype=torch.long), num_classes=2, top_k=0)


def test_gradient_only_study():
    model, x, y = _tiny(seed=3, n=15)
    r = L.overparam_study(model, x, y, num_classes=3, top_k=4, slq_probes=1, slq_iters=10,
                          curvature=False)
    assert r.hessian_top.numel() == 0 and r.energy is None
    assert set(r.outliers["matrix"]) == {"empirical Fisher", "covariance D"}
    assert list(r.densities) == ["empirical Fisher"]


# ------------------------------------------------------------------ parameters

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
    ({"extra_seeds": [0, 1]}, r"parameter 'extra_seeds' = \(0, 1\): must not repeat"),
    ({"valley_min": 5.0}, r"parameter 'valley_min' = 5.0: must be < valley_max"),
])
def test_params_errors_name_the_parameter(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        profile_params(L.Params, "ch05_overparam", **kw)


# ------------------------------------------------------------------ verdicts

S = "laptop, test"


def test_verdict_rank_flips():
    ok = L.verdict_rank([L.RankRow("a", 10, 1000, 10, 9)], scale=S)
    assert ok.outcome == "supported" and "99.0%" in ok.sentence
    bad = L.verdict_rank([L.RankRow("a", 10, 1000, 10, 10)], scale=S)
    assert bad.outcome == "contradicted"
    assert_typeset(ok, bad)


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
    v = L.verdict_flat_bulk([_flat(0.8), _flat(0.3)], **kw)
    assert r"sits at $10^{-4}\,\lambda_{\max}$" in v.sentence
    assert r"within $0.01\,\lambda_{\max}$" in v.sentence
    assert_typeset(v, unresolved)


@pytest.mark.parametrize(("x", "tex"), [(0.001, "10^{-3}"), (6.3e-4, r"6.3 \times 10^{-4}"),
                                        (0.25, "0.25"), (0.01, "0.01"), (0.0, "0")])
def test_tex_number_writes_powers_of_ten(x, tex):
    assert L.tex_number(x) == tex


def test_seed_codes_flip_and_use_holm():
    rng = np.random.default_rng(0)
    noise = 0.02 * rng.standard_normal((2, 5))
    above = np.array([[0.8], [0.7]]) + noise
    assert int(L.seed_codes(above, 0.5, 0.05)) == 0
    below = np.array([[0.8], [0.3]]) + noise
    assert int(L.seed_codes(below, 0.5, 0.05)) == 1
    # one item straddling the threshold: neither
    straddle = np.array([[0.8], [0.5]]) + noise
    assert int(L.seed_codes(straddle, 0.5, 0.05)) == 3
    # a single seed gives no test: never supported
    assert int(L.seed_codes(np.array([[0.9]]), 0.5, 0.05)) == 3


def test_seed_rates_false_positive_and_power():
    rng = np.random.default_rng(1)
    values = np.array([[0.8], [0.75]]) + 0.05 * rng.standard_normal((2, 5))
    r = L.seed_rates(values, 0.5, effect=0.2, alpha=0.05, n_sim=4000, seed=0, unit="x")
    assert r.false_positive <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert r.power > 0.8 and r.n_seeds == 5
    noisy = np.array([[0.8], [0.75]]) + 0.4 * rng.standard_normal((2, 5))
    weak = L.seed_rates(noisy, 0.5, effect=0.2, alpha=0.05, n_sim=2000, seed=0, unit="x")
    assert weak.power < r.power


def test_claim_verdicts_flip_and_carry_their_kind():
    rng = np.random.default_rng(2)
    good = np.log(np.array([[3.0], [4.0]])) + 0.05 * rng.standard_normal((2, 5))
    bad = np.log(np.array([[3.0], [1.1]])) + 0.05 * rng.standard_normal((2, 5))
    kw = dict(alpha=0.05, scale=S)
    labels = ["MLP", "CNN"]
    v = L.verdict_concentration(good, labels, concentration_min=2.0, **kw)
    assert v.outcome == "supported" and v.kind == "claim about SGD"
    assert L.verdict_concentration(bad, labels, concentration_min=2.0,
                                   **kw).outcome == "contradicted"
    w = L.verdict_valley(good, labels, rise=0.1, ratio_min=1.25, **kw)
    assert w.outcome == "supported" and "0.1 nats" in w.sentence
    assert L.verdict_valley(bad, labels, rise=0.1, ratio_min=1.25,
                            **kw).outcome == "contradicted"
    c = L.verdict_capture(np.exp(good) / 5, labels, capture_min=0.5, counts="x", **kw)
    assert c.outcome == "supported"
    r = L.seed_rates(good, np.log(2.0), effect=0.25, alpha=0.05, n_sim=500, seed=0,
                     unit="in log ratio")
    v = L.verdict_concentration(good, labels, concentration_min=2.0, rates=r, **kw)
    assert v.false_positive_rate == r.false_positive and "at 5 seeds" in v.sentence
    assert_typeset(v, w, c)
    for d in (L.verdict_rank([L.RankRow("a", 10, 1000, 10, 9)], scale=S),
              L.verdict_flat_bulk([_flat(0.8)], flat_rtol=0.01, flat_fraction=0.5, scale=S)):
        assert d.kind == "derivation check"


def test_study_through_the_operator_api_matches_dense_references():
    """The top eigenvectors of F̂ from its operator span the same space as the exact ones
    from the Gram matrix, and the class-mean capture of F̂ matches the exact basis."""
    from sgdnoise.grads import per_example_grads

    model, x, y = _tiny(seed=1, n=20)
    r = L.overparam_study(model, x, y, num_classes=3, top_k=5, lanczos_iters=60,
                          slq_probes=1, slq_iters=10)
    G = per_example_grads(model, nn.functional.cross_entropy, x, y).to(DT)
    torch.testing.assert_close(r.gradients, G)
    F = G.T @ G / G.shape[0]
    evals, evecs = torch.linalg.eigh(F)
    U = evecs[:, -3:]
    M = L.class_mean_gradients(G, y, 3)
    cap = r.class_capture.set_index("matrix")["captured by class-mean span"]
    assert cap["empirical Fisher"] == pytest.approx(L.subspace_capture(U, M), abs=1e-6)
    H = hessian(model, nn.functional.cross_entropy, x, y)
    np.testing.assert_allclose(r.hessian_top[:3].numpy(),
                               torch.linalg.eigvalsh(H).flip(0)[:3].numpy(), atol=1e-6)
    assert r.negative_ratio <= 0 or np.isnan(r.negative_ratio)
    # no GGN and no densities when asked
    q = L.overparam_study(model, x, y, num_classes=3, top_k=5, lanczos_iters=30,
                          ggn=False, slq=False)
    assert q.ggn_top.numel() == 0 and q.densities == {} and q.near_zero is None
    assert set(q.class_capture.matrix) == {"Hessian", "empirical Fisher", "covariance D"}


def test_flat_directions_are_flat_to_first_order():
    model, x, y = _tiny(seed=2, n=10)
    from sgdnoise.grads import per_example_grads

    G = per_example_grads(model, nn.functional.cross_entropy, x, y).to(DT)
    H = hessian(model, nn.functional.cross_entropy, x, y)
    _, vecs = torch.linalg.eigh(H)
    top = vecs[:, -2:]
    V = L.flat_directions(G, top, 4, seed=0)
    torch.testing.assert_close(V.norm(dim=0), torch.ones(4, dtype=DT))
    assert float((G @ V).abs().max()) < 1e-10 and float((top.T @ V).abs().max()) < 1e-10
    R = L.random_directions(G.shape[1], 4, seed=0)
    assert float((G @ R).abs().max()) > 1e-3


def test_valley_walk_losses_and_widths():
    model, x, y = _tiny(seed=3, n=12)
    from sgdnoise.chapters.small_problems import loss_and_error
    from sgdnoise.grads import per_example_grads

    G = per_example_grads(model, nn.functional.cross_entropy, x, y).to(DT)
    H = hessian(model, nn.functional.cross_entropy, x, y)
    vecs = torch.linalg.eigh(H)[1][:, -2:].flip(1)
    d = np.array([1e-4, 0.1, 1.0])
    vw = L.valley_walk(model, x, y, G, vecs, num_directions=2, distances=d, seed=0)
    assert vw.base_loss == pytest.approx(loss_and_error(model, x, y)[0])
    # at a tiny distance the loss has not moved; along the top eigenvector at 1e-4 ‖θ‖ the
    # rise matches the quadratic ½ t² λ_max
    assert abs(vw.loss["flat"][0, 0] - vw.base_loss) < 1e-6
    t = 1e-4 * vw.theta_norm
    lam = float(torch.linalg.eigvalsh(H)[-1])
    g_top = float(G.mean(0) @ vecs[:, 0])
    expected = g_top * t + 0.5 * t**2 * lam
    assert vw.loss["sharp"][0, 0] - vw.base_loss == pytest.approx(expected, rel=0.05, abs=1e-9)
    with pytest.raises(ValueError, match="distances"):
        L.valley_walk(model, x, y, G, vecs, num_directions=1, distances=np.array([1.0, 0.5]),
                      seed=0)


def test_valley_widths_interpolate_and_censor():
    vw = L.ValleyWalk(np.array([0.1, 1.0, 10.0]), 1.0, 0.0,
                      {"flat": np.array([[0.0, 0.05, 0.2]]), "random": np.array([[0.0, 0.1,
                                                                                     0.3]]),
                       "sharp": np.array([[1.0, 2.0, 3.0]])})
    # flat crosses 0.1 a third of the way from 1 to 10 in log t; random exactly at 1
    assert vw.widths("flat", 0.1)[0] == pytest.approx(10 ** (1 / 3))
    assert vw.widths("random", 0.1)[0] == pytest.approx(1.0)
    assert vw.widths("flat", 5.0)[0] == 10.0  # never: censored at the largest distance
    assert vw.widths("sharp", 0.1)[0] == 0.1
    assert vw.log_ratio(0.1) == pytest.approx(np.log(10 ** (1 / 3)))
