"""Tests for sgdnoise.chapters.ch05_overparam: spectra against dense float64 references and
constructed spectra, the random-span baseline, the parameters and the verdict functions."""

from __future__ import annotations

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


def test_verdict_outliers_flips():
    kw = dict(num_classes=10, outlier_share=0.5, capture_min=0.5, random_capture=1e-3,
              scale=S)
    assert L.verdict_outliers([9, 10, 9, 3], [0.9, 0.8], **kw).outcome == "supported"
    assert L.verdict_outliers([0, 1, 9, 3], [0.9, 0.8], **kw).outcome == "mixed"
    assert L.verdict_outliers([0, 1, 9, 3], [0.9, 0.2], **kw).outcome == "contradicted"
    assert L.verdict_outliers([], [], **kw).outcome == "inconclusive"
    assert_typeset(L.verdict_outliers([0, 1, 9, 3], [0.9, 0.8], **kw))


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
    v = L.verdict_noise_concentration([high, low], **kw)
    assert r"of $\operatorname{span}\{g_i\}$ ($k/\operatorname{rank} G$)" in v.sentence
    assert_typeset(v)
