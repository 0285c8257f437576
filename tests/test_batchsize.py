"""Tests for sgdnoise.batchsize: scaling rules, the noisy-quadratic step model, B_simple,
steps-to-target with the engine, and the S(B) fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdnoise import batchsize as bs
from sgdnoise.covariance import gradient_covariance, noise_scale

DT = torch.float64


def test_scaling_rules_and_temperature():
    assert bs.scaled_lr(0.1, 256, 64, "linear") == pytest.approx(0.4)
    assert bs.scaled_lr(0.1, 256, 64, "sqrt") == pytest.approx(0.2)
    assert bs.scaled_lr(0.1, 256, 64, "none") == 0.1
    # linear scaling keeps eta/B, sqrt keeps eta^2/B
    assert bs.noise_temperature(bs.scaled_lr(0.1, 256, 64, "linear"), 256) == pytest.approx(
        bs.noise_temperature(0.1, 64))
    assert bs.noise_temperature(0.1, 10, n=1000) == pytest.approx(0.1 * 99)
    with pytest.raises(ValueError, match="rule"):
        bs.scaled_lr(0.1, 2, 1, "cubic")


def test_quadratic_step_model_against_brute_force():
    gen = torch.Generator().manual_seed(0)
    p = 6
    A = torch.randn(p, p, generator=gen, dtype=DT)
    H = A @ A.T / p + 0.1 * torch.eye(p, dtype=DT)
    Gs = torch.randn(50, p, generator=gen, dtype=DT) + 0.5
    Sigma, gbar = gradient_covariance(Gs), Gs.mean(0)
    q = bs.quadratic_step_model(gbar, H, Sigma)
    eps = np.linspace(0, 3 * q.eps_max, 30001)
    for B in (1, 4, 64):
        # Monte Carlo expected decrease of the true quadratic for sampled mini-batches
        idx = torch.randint(50, (4000, B), generator=gen)
        gB = Gs[idx].mean(1)
        # Lemma 2 on the quadratic: decrease = e gBᵀḡ − ½e² gBᵀHgB, averaged over batches
        vals = [float((e * (gB @ gbar) - 0.5 * e**2 * ((gB @ H) * gB).sum(1)).mean())
                for e in (0.5 * q.eps_opt(B), q.eps_opt(B))]
        closed = [bs.expected_quadratic_decrease(gbar, H, Sigma, e, B)
                  for e in (0.5 * q.eps_opt(B), q.eps_opt(B))]
        assert vals == pytest.approx(closed, rel=0.1)
        grid = [bs.expected_quadratic_decrease(gbar, H, Sigma, float(e), B) for e in eps[::100]]
        best = eps[::100][int(np.argmax(grid))]
        assert best == pytest.approx(q.eps_opt(B), rel=0.02)
        assert max(grid) == pytest.approx(q.dl_opt(B), rel=1e-3)
    # H proportional to I: B_noise equals B_simple
    q2 = bs.quadratic_step_model(gbar, 3.0 * torch.eye(p, dtype=DT), Sigma)
    assert q2.b_noise == pytest.approx(q2.b_simple, rel=1e-12)
    assert q2.b_simple == pytest.approx(noise_scale(Gs), rel=1e-12)


def test_noise_scale_of_model_equals_dense_loop():
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
    got = bs.noise_scale_of_model(model, x, y, chunk_size=5)
    assert got["b_simple"] == pytest.approx(ref, rel=1e-10)
    assert got["trace_D"] == pytest.approx(float(torch.trace(D)), rel=1e-10)


def test_fit_steps_vs_batch_recovers_parameters():
    rng = np.random.default_rng(0)
    B = np.array([4, 8, 16, 32, 64, 128, 256, 512], dtype=float)
    S = 120.0 * (1 + 60.0 / B) * np.exp(0.03 * rng.standard_normal(B.size))
    fit = bs.fit_steps_vs_batch(B, S)
    assert fit["s_min"] == pytest.approx(120.0, rel=0.08)
    assert fit["b_noise"] == pytest.approx(60.0, rel=0.12)
    assert fit["e_min"] == pytest.approx(fit["s_min"] * fit["b_noise"])
    exact = bs.fit_steps_vs_batch(B, 120.0 * (1 + 60.0 / B))
    assert exact["b_noise"] == pytest.approx(60.0, rel=1e-6)
    with pytest.raises(ValueError, match=">= 3"):
        bs.fit_steps_vs_batch([1, 2], [3, 4])


def _tiny_data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = (torch.randint(0, 60, (n, 3, 4, 4), generator=g) + 120 * y.view(-1, 1, 1, 1)).to(
        torch.uint8)
    return {"train_x": x, "train_y": y, "test_x": x[:16].clone(), "test_y": y[:16].clone()}


def test_steps_to_target_and_sweeps_with_engine():
    from sgdnoise.train import TrainConfig

    data = _tiny_data()
    cfg = TrainConfig(model="mlp", width=8, norm="none", batch_size=8, epochs=20, lr=0.05,
                      augment=False, channels_last=False, amp=False, eval_batch_size=64)
    r = bs.steps_to_target(cfg, data, 0.0, eval_every_examples=8)
    assert r.reached and r.steps >= 1 and r.examples == r.steps * 8
    never = bs.steps_to_target(cfg.__class__(**{**cfg.to_dict(), "epochs": 1, "lr": 1e-6}),
                               data, -0.0, eval_every_examples=64)
    assert not never.reached and math.isnan(never.steps)
    df = bs.steps_sweep(cfg, data, [8, 32], 0.0, lr_multipliers=(1.0, 2.0),
                        eval_every_examples=16)
    assert len(df) == 4 and df["best"].sum() == df.groupby("batch_size")["reached"].any().sum()
    final, hist = bs.generalization_sweep(cfg.__class__(**{**cfg.to_dict(), "epochs": 2,
                                                          "base_batch_size": 8}),
                                          data, [8, 16])
    assert len(final) == 6
    # B = B0 runs coincide under every rule and are trained once
    b8 = final[final.batch_size == 8]
    assert b8["test_error"].nunique() == 1 and hist.groupby(["batch_size", "lr"]).ngroups == 4
    groups = bs.temperature_groups(final)
    lin = final[final.rule == "linear"]["eta_over_B"].iloc[0]
    assert int(groups.loc[np.isclose(groups.eta_over_B, lin), "runs"].iloc[0]) == 2


def test_tracker_records_b_simple():
    from sgdnoise.models import build_model
    from sgdnoise.train import TrainConfig, train

    data = _tiny_data(32)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(3, 4, 4), width=8)
    xf = (data["train_x"].float() / 255.0 - 0.5) / 0.25
    tr = bs.NoiseScaleTracker(model, xf, data["train_y"], every=1)
    cfg = TrainConfig(model="mlp", width=8, norm="none", batch_size=8, epochs=2, lr=0.05,
                      augment=False, channels_last=False, amp=False)
    train(cfg, data, model=model, on_epoch=tr, progress=False)
    df = tr.frame()
    assert list(df["epoch"]) == [0, 1, 2] and (df["b_simple"] > 0).all()


def test_b_simple_at_target_picks_first_hit_or_last():
    import pandas as pd

    track = pd.DataFrame({"epoch": [0, 1, 2, 3], "train_error": [0.9, 0.6, 0.4, 0.3],
                          "b_simple": [10.0, 20.0, 40.0, 80.0]})
    hit = bs.b_simple_at_target(track, 0.5)
    assert hit == {"b_simple": 40.0, "epoch": 2, "reached": True, "train_error": 0.4}
    miss = bs.b_simple_at_target(track, 0.1)
    assert miss["reached"] is False and miss["epoch"] == 3 and miss["b_simple"] == 80.0
    with pytest.raises(ValueError, match="target_error"):
        bs.b_simple_at_target(track, -1.0)
