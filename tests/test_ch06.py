"""Tests for sgdnoise.chapters.ch06_batch_size: Smith & Le's noise scale, the noisy-quadratic
step model, B_simple along a run, steps-to-target with the engine, the S(B) fit, the batch × lr
grid, the parameters and the verdict functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_typeset, profile_params

from sgdnoise.chapters import ch06_batch_size as bs
from sgdnoise.covariance import gradient_covariance, noise_scale
from sgdnoise.train.noise_scale import NoiseScaleTracker

DT = torch.float64


def test_smith_le_noise_scale():
    assert bs.smith_le_noise_scale(0.1, 10, 1000) == pytest.approx(0.1 * 99)
    # (N - 1) times the step noise ratio eta (N - B) / (B (N - 1))
    assert bs.smith_le_noise_scale(0.1, 10, 1000) == pytest.approx(
        999 * 0.1 * (1000 - 10) / (10 * 999))
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        bs.smith_le_noise_scale(0.1, 20, 10)


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
    groups = bs.lr_batch_ratio_groups(final)
    lin = final[final.rule == "linear"]["lr_batch_ratio"].iloc[0]
    assert int(groups.loc[np.isclose(groups.lr_batch_ratio, lin), "runs"].iloc[0]) == 2


def test_tracker_records_b_simple():
    from sgdnoise.models import build_model
    from sgdnoise.train import TrainConfig, train

    data = _tiny_data(32)
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=2, in_shape=(3, 4, 4), width=8)
    xf = (data["train_x"].float() / 255.0 - 0.5) / 0.25
    tr = NoiseScaleTracker(model, xf, data["train_y"], every=1)
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


def test_train_for_budget_and_grid():
    from sgdnoise.train import TrainConfig

    data = _tiny_data()
    cfg = TrainConfig(model="mlp", width=8, norm="none", batch_size=8, epochs=2, lr=0.05,
                      augment=False, channels_last=False, amp=False, eval_batch_size=64)
    r = bs.train_for_budget(cfg, data, steps=5)
    assert r["steps"] == 5 and r["epochs"] == pytest.approx(5 * 8 / 64)
    full = bs.train_for_budget(cfg, data)
    assert full["steps"] == 16 and full["status"] == "finished"
    grid = bs.batch_lr_grid(cfg, data, [8, 16], [0.01, 0.1], [0, 1], epochs=1)
    assert len(grid) == 2 * 2 * 2 * 2
    ee = grid[grid.budget == "equal epochs"]
    assert set(zip(ee.batch_size, ee.steps, strict=True)) == {(8, 8), (16, 4)}
    # equal steps: the smallest batch's steps at equal epochs, at every B
    assert (grid[grid.budget == "equal steps"].steps == 8).all()
    assert bs.equal_steps_budget(64, [16, 8], 3) == 24
    # the smallest B's equal-steps run is its equal-epochs run (trained once, same numbers)
    a = grid[(grid.batch_size == 8)].sort_values(["lr", "seed", "budget"])
    assert (a.groupby(["lr", "seed"]).test_error.nunique() == 1).all()
    best = bs.best_lr_per_batch(grid)
    assert len(best) == 4 and best["at_edge"].all()  # two lrs: either one is an edge
    d = bs.batch_gap(grid, "equal epochs", 8, 16, 0.1, 0.1)
    assert d.shape == (2,)
    with pytest.raises(ValueError, match="no seed"):
        bs.batch_gap(grid, "equal epochs", 8, 16, 0.3, 0.1)


def test_best_lr_is_chosen_on_validation_error_when_there_is_one():
    import pandas as pd

    # validation prefers lr 0.1, test would prefer lr 0.2: the choice must follow validation
    rows = [{"budget": "equal epochs", "batch_size": 16, "lr": lr, "seed": sd,
             "status": "finished", "val_error": {0.1: 0.30, 0.2: 0.35}[lr],
             "test_error": {0.1: 0.40, 0.2: 0.33}[lr]} for lr in (0.1, 0.2) for sd in (0, 1)]
    grid = pd.DataFrame(rows)
    best = bs.best_lr_per_batch(grid)
    assert best.best_lr.iloc[0] == 0.1 and best.selected_on.iloc[0] == "val_error"
    assert best["mean"].iloc[0] == pytest.approx(0.30)
    assert best["test_error"].iloc[0] == pytest.approx(0.40)  # test error at the chosen lr
    no_val = bs.best_lr_per_batch(grid.drop(columns="val_error"))
    assert no_val.best_lr.iloc[0] == 0.2 and no_val.selected_on.iloc[0] == "test_error"
    with pytest.raises(ValueError, match="metric"):
        bs.best_lr_per_batch(grid, metric="nope")


def test_train_for_budget_evaluates_the_validation_set():
    import pandas as pd

    from sgdnoise.data import load_dataset, pool_image_data
    from sgdnoise.train import TrainConfig

    data = pool_image_data(load_dataset("synthetic", n_train=64, n_test=32, n_val=24), 8)
    assert data["val_x"].shape == (24, 3, 8, 8)
    cfg = TrainConfig(model="mlp", width=8, norm="none", batch_size=16, epochs=1, lr=0.05,
                      augment=False, channels_last=False, amp=False, eval_batch_size=64)
    r = bs.train_for_budget(cfg, data, steps=2)
    assert 0.0 <= r["val_error"] <= 1.0 and math.isfinite(r["val_loss"])
    grid = bs.batch_lr_grid(cfg, data, [16], [0.01, 0.1], [0], epochs=1)
    assert "val_error" in grid.columns
    two = pd.concat([grid, grid.assign(batch_size=32)], ignore_index=True)  # two B to compare
    more = pd.concat([two, two[two.lr == 0.01].assign(lr=0.02)], ignore_index=True)
    ev = bs.grid_evidence(two, more, 0.01)
    assert ev["selected_on"] == "validation error" and ev["lr_ratio"] == pytest.approx(0.02)
    assert set(ev["fit_ratio"]) == {"$B = 16$ at $\\eta = 0.01$", "$B = 32$ at $\\eta = 0.02$"}


def test_evaluation_jobs_cover_the_compared_runs_once():
    import pandas as pd

    best = pd.DataFrame([
        {"budget": bud, "batch_size": b, "best_lr": lr, "at_edge": False}
        for bud, b, lr in (("equal epochs", 16, 0.05), ("equal epochs", 32, 0.1),
                           ("equal epochs", 64, 0.2), ("equal steps", 16, 0.05),
                           ("equal steps", 64, 0.1))])
    jobs = bs.evaluation_jobs(best, lr_fixed=0.05)
    assert jobs == [("equal epochs", 16, 0.05), ("equal epochs", 64, 0.2),
                    ("equal steps", 16, 0.05), ("equal steps", 64, 0.1),
                    ("equal epochs", 64, 0.05)]  # (64, 0.2) is also the same-η/B run


def test_selection_seeds_must_differ_from_evaluation_seeds_and_grid_must_pass_linear():
    d = profile_params(bs.Params, "ch06_batch_size", yaml_profile="default")
    with pytest.raises(ValueError, match="select_seeds"):
        profile_params(bs.Params, "ch06_batch_size", yaml_profile="default",
                       select_seeds=[d.grid_seeds[0]])
    linear = d.gen_base_lr * max(d.grid_batch_sizes) / min(d.grid_batch_sizes)
    with pytest.raises(ValueError, match="grid_lrs"):  # grid stops at the linear value
        profile_params(bs.Params, "ch06_batch_size", yaml_profile="default",
                       grid_lrs=[v for v in d.grid_lrs if v <= linear])


def test_best_lr_per_batch_and_slope_on_constructed_grid():
    import pandas as pd

    rows = []
    for b in (16, 32, 64, 128):
        for lr in (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8):
            best = 0.05 * b / 32  # linear scaling: best lr proportional to B
            for sd in (0, 1, 2):
                err = 0.3 + abs(math.log(lr / best)) / 10 + 0.001 * sd
                rows.append({"budget": "equal epochs", "batch_size": b, "lr": lr,
                             "seed": sd, "status": "finished", "test_error": err})
    grid = pd.DataFrame(rows)
    best = bs.best_lr_per_batch(grid)
    assert list(best.best_lr) == [0.025, 0.05, 0.1, 0.2]
    assert not best.at_edge.any()
    assert bs.best_lr_slope(best)["slope"] == pytest.approx(1.0)
    # a diverged run never wins
    grid.loc[(grid.batch_size == 16) & (grid.lr == 0.025), "status"] = "diverged"
    assert bs.best_lr_per_batch(grid).best_lr.iloc[0] != 0.025
    edge = best.assign(at_edge=[True, True, True, False])
    assert math.isnan(bs.best_lr_slope(edge)["slope"])


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    from conftest import BOOK

    P = bs.Params.from_yaml(BOOK / "params" / "ch06_batch_size" / f"{profile}.yaml")
    assert P.profile == profile
    if profile != "smoke":
        assert len(P.grid_seeds) >= 3 and len(P.grid_batch_sizes) >= 3
        assert not set(P.select_seeds) & set(P.grid_seeds)


@pytest.mark.parametrize("kw, pattern", [
    ({"trace_batch_sizes": [1, 4, 99]}, r"parameter 'trace_batch_sizes' = \(1, 4, 99\)"),
    ({"grid_batch_sizes": [16, 999]}, r"parameter 'grid_batch_sizes'.*n_train = 256"),
    ({"gen_base_lr": 0.3}, r"parameter 'gen_base_lr' = 0.3: must be one of grid_lrs"),
    ({"grid_seeds": [1, 1]}, r"parameter 'grid_seeds'.*repeat"),
    ({"profile": "default"}, r"parameter 'grid_seeds'.*>= 3 seeds"),
    ({"alpha": 0.5}, r"parameter 'alpha' must be <= 0.25"),
])
def test_params_errors_name_the_parameter(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        profile_params(bs.Params, "ch06_batch_size", **kw)


# ------------------------------------------------------------------ verdicts

S = "laptop, test"


def test_verdict_trace_flips_at_z_max():
    kw = dict(z_max=3.0, samples=100, scale=S)
    assert bs.verdict_trace([0.5, -2.9], -1.0, 0.01, **kw).outcome == "supported"
    assert bs.verdict_trace([0.5, -3.1], -1.0, 0.01, **kw).outcome == "contradicted"
    assert bs.verdict_trace([float("nan")], -1.0, 0.01, **kw).outcome == "inconclusive"
    v = bs.verdict_trace([0.5, -3.1], -1.0, 0.01, **kw)
    assert r"is $\operatorname{tr} D/B$ (times $(N - B)/(N - 1)$" in v.claim
    assert_typeset(v)


def _seeds(b_noise, b_simple, reached=True):
    import pandas as pd

    return pd.DataFrame({"b_noise": b_noise, "b_simple": b_simple,
                         "reached": [reached] * len(b_noise)})


def test_verdict_noise_scale_flips():
    kw = dict(factor=2.0, alpha=0.05, scale=S)
    agree = _seeds([100.0, 104.0, 98.0, 101.0], [90.0, 95.0, 92.0, 88.0])
    far = _seeds([400.0, 410.0, 395.0, 420.0], [90.0, 95.0, 92.0, 88.0])
    loose = _seeds([300.0, 40.0, 120.0], [90.0, 95.0, 92.0])
    assert bs.verdict_noise_scale(agree, 0.5, **kw).outcome == "supported"
    assert bs.verdict_noise_scale(far, 0.5, **kw).outcome == "contradicted"
    assert bs.verdict_noise_scale(loose, 0.5, **kw).outcome == "inconclusive"
    assert bs.verdict_noise_scale(_seeds([100.0, 104.0, 98.0], [90.0, 95.0, 92.0], False),
                                  0.5, **kw).outcome == "inconclusive"
    assert bs.verdict_noise_scale(_seeds([float("nan"), 100.0], [90.0, 95.0]), 0.5,
                                  **kw).outcome == "inconclusive"
    assert_typeset(bs.verdict_noise_scale(agree, 0.5, **kw))


def test_classify_difference():
    assert bs.classify_difference([0.10, 0.11, 0.12], 0.02, 0.05) == "higher"
    assert bs.classify_difference([-0.10, -0.11, -0.12], 0.02, 0.05) == "lower"
    assert bs.classify_difference([0.001, -0.001, 0.0], 0.02, 0.05) == "equivalent"
    assert bs.classify_difference([0.1, -0.1, 0.05], 0.02, 0.05) == "undecided"
    assert bs.classify_difference([0.1], 0.02, 0.05) == "undecided"  # one seed: no interval


FIT = {"$B = 16$": 0.01, "$B = 64$": 0.02}


def test_verdict_epoch_budget_flips():
    hi, eq, lo, und = [0.10, 0.11, 0.12], [0.001, -0.001, 0.0], [-0.1, -0.11, -0.12], [
        0.1, -0.1, 0.05]
    kw = dict(small=16, large=256, lr_fixed=0.05, best_small=0.05, best_large=0.4, edges=[],
              train_errors=FIT, fit_error=0.05, margin=0.02, alpha=0.05, scale=S)
    assert bs.verdict_epoch_budget(hi, eq, **kw).outcome == "supported"
    assert bs.verdict_epoch_budget(hi, lo, **kw).outcome == "supported"
    assert bs.verdict_epoch_budget(hi, hi, **kw).outcome == "mixed"
    assert bs.verdict_epoch_budget(eq, eq, **kw).outcome == "contradicted"
    assert bs.verdict_epoch_budget(und, eq, **kw).outcome == "inconclusive"
    # a best learning rate at the grid's edge, or a run that has not converged: not decided
    edge = bs.verdict_epoch_budget(hi, eq, **{**kw, "edges": ["$B = 256$"]})
    assert edge.outcome == "inconclusive" and "edge of the grid" in edge.sentence
    slow = bs.verdict_epoch_budget(hi, eq, **{**kw, "train_errors": {**FIT, "$B = 64$": 0.3}})
    assert slow.outcome == "inconclusive" and "not converged" in slow.sentence
    assert "Training error reached" in slow.sentence
    # the same-η runs are reported, not gated: a large batch short of steps is the effect
    fixed = bs.verdict_epoch_budget(hi, eq, **{**kw, "fixed_train_errors": {"$B = 256$": 0.4}})
    assert fixed.outcome == "supported" and "$B = 256$: 0.400" in fixed.sentence
    assert_typeset(bs.verdict_epoch_budget(hi, eq, **kw), edge)


def test_verdict_equal_steps_flips():
    kw = dict(small=16, large=256, edges=[], train_errors=FIT, fit_error=0.05, margin=0.02,
              alpha=0.05, scale=S)
    assert bs.verdict_equal_steps([0.001, -0.001, 0.0], **kw).outcome == "supported"
    assert bs.verdict_equal_steps([0.1, 0.11, 0.12], **kw).outcome == "contradicted"
    assert bs.verdict_equal_steps([0.1, -0.1, 0.05], **kw).outcome == "inconclusive"
    assert bs.verdict_equal_steps([0.001, -0.001, 0.0], **{**kw, "edges": ["$B = 16$"]}
                                  ).outcome == "inconclusive"
    assert_typeset(bs.verdict_equal_steps([0.1, -0.1, 0.05], **kw))


def test_verdict_lr_batch_ratio_flips():
    kw = dict(small=16, large=64, lr_small=0.05, lr_large=0.2, train_errors=FIT,
              fit_error=0.05, margin=0.02, alpha=0.05, scale=S)
    assert bs.verdict_lr_batch_ratio([0.001, -0.001, 0.0], **kw).outcome == "supported"
    assert bs.verdict_lr_batch_ratio([0.1, 0.11, 0.12], **kw).outcome == "contradicted"
    assert bs.verdict_lr_batch_ratio([-0.1, -0.11, -0.12], **kw).outcome == "contradicted"
    assert bs.verdict_lr_batch_ratio([0.1, -0.1, 0.05], **kw).outcome == "inconclusive"
    assert bs.verdict_lr_batch_ratio([0.001, -0.001, 0.0], **{
        **kw, "train_errors": {"$B = 64$": 0.5}}).outcome == "inconclusive"
    assert_typeset(bs.verdict_lr_batch_ratio([0.001, -0.001, 0.0], **kw))


def test_rule_rates_false_positive_and_power():
    # no-worse rule: under a true difference at the margin "supported" is rare (<= alpha
    # up to simulation error); with no difference and a small spread it is common
    diffs = [0.005, -0.004, 0.002, -0.001, 0.003, 0.0]
    r = bs.boundary_rates(lambda b: bs.no_worse_rule(b, 0.02, 0.05), diffs, margin=0.02,
                          n_sim=2000, seed=0, unit="in error")
    assert r.false_positive <= 0.08 and r.power >= 0.8 and r.n_seeds == 6
    # a wide spread: power collapses
    wide = bs.boundary_rates(lambda b: bs.alike_rule(b, 0.02, 0.05), [0.05, -0.05, 0.04],
                             margin=0.02, n_sim=1000, seed=0, unit="in error")
    assert wide.power < 0.2 and wide.false_positive <= 0.08
    ep = bs.epoch_rates([0.06, 0.07, 0.05, 0.065], [0.001, -0.002, 0.0, 0.002], margin=0.02,
                        alpha=0.05, n_sim=1000, seed=0)
    assert ep.false_positive <= 0.08 and ep.power > 0.5
    v = r.attach(bs.verdict_equal_steps(diffs, small=16, large=64, edges=[],
                                         train_errors=FIT, fit_error=0.05, margin=0.02,
                                         alpha=0.05, scale=S))
    assert v.false_positive_rate == r.false_positive and "false-positive rate" in v.sentence
