"""Tests for sgdnoise.chapters.ch01_lemma1: the Lemma-1 Monte Carlo studies, the chapter's
Params and its verdict functions (each fed constructed numbers on both sides)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_typeset

from sgdnoise.chapters import ch01_lemma1 as ch01
from sgdnoise.stats import loglog_fit

DT = torch.float64
PARAMS = Path(__file__).resolve().parents[1] / "book" / "params" / "ch01_lemma1"


def _G(N: int = 60, P: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # heavy-ish tails so fourth moments matter
    return torch.randn(N, P, dtype=DT, generator=g) ** 3 + 0.5


def test_lemma1_error_study_matches_prediction_and_shrinks():
    G = _G()
    df = ch01.lemma1_error_study(G, 4, [50, 200, 800], num_repeats=6, seed=1)
    assert set(df.scheme) == {"with replacement", "without replacement"}
    w = df[df.scheme == "with replacement"].groupby("samples")
    mean_err = w.rel_error.mean()
    pred = w.predicted.first()
    # RMS error matches the leading-order prediction within sampling noise (6 repeats).
    rms = w.rel_error.apply(lambda e: float(np.sqrt((e**2).mean())))
    assert np.all(np.abs(rms / pred - 1) < 0.35)
    assert mean_err.iloc[0] > mean_err.iloc[-1] * 2.5  # 16x more samples: ~4x smaller
    assert df[df.scheme == "without replacement"].predicted.isna().all()


def test_predicted_covariance_error_brute_force():
    # Exact E‖Ĉ − C‖² for the known-mean estimator with S = 1 equals E‖ξ‖⁴ − ‖C‖²;
    # enumerate all batches of size 2 drawn with replacement from N = 5 examples.
    G = _G(N=5, P=3, seed=2)
    Gc = G - G.mean(0)
    B = 2
    xis = torch.stack([(Gc[i] + Gc[j]) / B for i in range(5) for j in range(5)])
    e4 = float(((xis * xis).sum(1) ** 2).mean())
    C = Gc.T @ Gc / 5 / B
    want = math.sqrt(e4 - float((C * C).sum())) / float(torch.linalg.matrix_norm(C))
    assert math.isclose(ch01.predicted_covariance_error(G, B), want, rel_tol=1e-10)


def test_trace_vs_batch_study():
    G = _G(N=40, P=5, seed=3)
    df = ch01.trace_vs_batch_study(G, [1, 4, 16, 40], num_samples=3000, seed=4)
    ok = df.dropna(subset=["z"])
    assert (ok.z.abs() < 5).all()
    last = df[(df.scheme == "without replacement") & (df.batch_size == 40)].iloc[0]
    assert last.formula == 0 and last.mc_trace < 1e-20 and last.fpc == 0
    assert (df.dropna(subset=["bias_ratio"]).bias_ratio < 6).all()
    w = df[df.scheme == "with replacement"]
    fit = loglog_fit(w.batch_size, w.formula)
    assert math.isclose(fit["slope"], -1.0, abs_tol=1e-12)


def test_minibatch_noise_sq_norms_errors():
    with pytest.raises(ValueError, match="batch_size"):
        ch01.minibatch_noise_sq_norms(_G(N=10), 11, 5, replacement=False)


# --------------------------------------------------------------------------- verdicts


def _tv(z: float, bias: float, zero: float = 0.0) -> pd.DataFrame:
    rows = [{"scheme": "with replacement", "batch_size": b, "mc_trace": 8.0 / b,
             "formula": 8.0 / b, "z": z, "bias_ratio": bias} for b in (1, 4, 16)]
    rows.append({"scheme": "without replacement", "batch_size": 16, "mc_trace": zero,
                 "formula": 0.0, "z": float("nan"), "bias_ratio": float("nan")})
    return pd.DataFrame(rows)


def test_unbiasedness_verdict_flips_at_threshold():
    good = ch01.unbiasedness_verdict(_tv(0.5, 1.1), bias_ratio_max=2.0, scale="s")
    bad = ch01.unbiasedness_verdict(_tv(0.5, 2.5), bias_ratio_max=2.0, scale="s")
    assert good.outcome == "supported" and "consistent with an unbiased" in good.sentence
    assert bad.outcome == "contradicted" and "too large" in bad.sentence
    nan = ch01.unbiasedness_verdict(_tv(0.5, float("nan")), bias_ratio_max=2.0, scale="s")
    assert nan.outcome == "inconclusive"
    assert_typeset(good, bad, nan)


def test_trace_verdict_flips_on_z_slope_and_zero():
    ok_slope = {"slope": -1.02, "slope_se": 0.01}
    bad_slope = {"slope": -0.7, "slope_se": 0.01}
    kw = dict(z_max=4.0, slope_tolerance=0.1, scale="s")
    v = ch01.trace_verdict(_tv(1.0, 1.0), ok_slope, **kw)
    assert v.outcome == "supported" and "consistent with sampling noise" in v.sentence
    assert "the noise vanishes" in v.sentence
    v = ch01.trace_verdict(_tv(5.0, 1.0), ok_slope, **kw)
    assert v.outcome == "mixed" and "larger than sampling noise" in v.sentence
    assert ch01.trace_verdict(_tv(1.0, 1.0), bad_slope, **kw).outcome == "mixed"
    assert ch01.trace_verdict(_tv(5.0, 1.0), bad_slope, **kw).outcome == "contradicted"
    v = ch01.trace_verdict(_tv(1.0, 1.0, zero=0.5), ok_slope, **kw)
    assert v.outcome == "mixed" and "does not vanish" in v.sentence
    assert v.claim.startswith(r"Lemma 1: $\operatorname{tr}\operatorname{Cov}(g_{\mathcal{B}})")
    assert r"Largest $\lvert z \rvert$ over 4 batch sizes" in v.sentence
    assert_typeset(v)


def test_convergence_verdict_flips():
    good = {"with replacement": {"slope": -0.51, "slope_se": 0.01},
            "without replacement": {"slope": -0.49, "slope_se": 0.01}}
    floor = {"with replacement": {"slope": -0.2, "slope_se": 0.01},
             "without replacement": {"slope": -0.49, "slope_se": 0.01}}
    kw = dict(slope_tolerance=0.1, error_ratio_tolerance=0.3, scale="s")
    v = ch01.convergence_verdict(good, [1.0, 1.1], **kw)
    assert v.outcome == "supported" and "agree with Monte Carlo" in v.sentence
    assert ch01.convergence_verdict(good, [1.0, 1.5], **kw).outcome == "mixed"
    v = ch01.convergence_verdict(floor, [2.0, 3.0], **kw)
    assert v.outcome == "contradicted" and "do not follow pure sampling noise" in v.sentence
    assert_typeset(v)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_validate(profile):
    p = ch01.Params.from_yaml(PARAMS / f"{profile}.yaml")
    assert p.profile == profile


def test_params_cross_checks_name_the_parameter():
    values = ch01.Params.from_yaml(PARAMS / "smoke.yaml").to_dict()
    with pytest.raises(ValueError, match="mc_batch_size"):
        ch01.Params.from_mapping(dict(values, mc_batch_size=values["n_train"] + 1))
    with pytest.raises(ValueError, match="trace_batch_sizes"):
        ch01.Params.from_mapping(dict(values, trace_batch_sizes=[1, 2, values["n_train"] + 1]))
    with pytest.raises(ValueError, match="z_max"):
        ch01.Params.from_mapping(dict(values, z_max=0.5))


# --------------------------------------------------------------------------- small problems


def _tiny_problem(n: int = 40, seed: int = 0):
    from sgdnoise.chapters.small_problems import SmallProblem

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 2, 2, dtype=DT, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return SmallProblem(x=x, y=y, identity={"source": "synthetic"}, classes=list("abcdefghij"))


def test_train_small_and_errors():
    from sgdnoise.chapters.small_problems import (
        build_small_model,
        loss_and_error,
        plain_sgd,
        train_small,
    )

    pb = _tiny_problem(50, seed=3)
    model = build_small_model("cnn", pb.in_shape, width=2, seed=0)
    twin = build_small_model("cnn", pb.in_shape, width=2, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    tr = train_small(model, pb.x, pb.y, steps=30, lr=0.1, batch_size=10, checkpoints=[0, 10])
    assert list(tr.history.step) == [0, 10, 30] and set(tr.snapshots) == {0, 10, 30}
    assert tr.status == "finished"
    assert tr.history.train_loss.iloc[-1] < tr.history.train_loss.iloc[0]
    for k, v in init.items():
        assert torch.equal(tr.snapshots[0][k], v)
    # each row is the full-data loss and error of its snapshot; the last is the final model
    for row in tr.history.itertuples():
        twin.load_state_dict(tr.snapshots[row.step])
        assert (row.train_loss, row.train_error) == loss_and_error(twin, pb.x, pb.y)
    for k, v in model.state_dict().items():
        assert torch.equal(tr.snapshots[30][k], v)
    # the snapshot at step 10 is where 10 steps of the same plain SGD (drop_last) end
    twin.load_state_dict(init)
    res = plain_sgd(twin, pb.x, pb.y, lr=0.1, batch_size=10, max_steps=10)
    assert res.steps == 10 and res.history == []
    for k, v in twin.state_dict().items():
        assert torch.equal(tr.snapshots[10][k], v)
    with pytest.raises(ValueError, match="name"):
        build_small_model("resnet", pb.in_shape)
    for kw, field in (({"batch_size": 51}, "batch_size"), ({"steps": 0}, "steps"),
                      ({"lr": 0.0}, "lr")):
        with pytest.raises(ValueError, match=field):
            train_small(model, pb.x, pb.y, **{"steps": 1, "lr": 0.1, "batch_size": 10, **kw})


def test_train_small_reports_divergence():
    from sgdnoise.chapters.small_problems import build_small_model, train_small

    pb = _tiny_problem(20, seed=1)
    model = build_small_model("mlp", pb.in_shape, width=4, seed=0)
    tr = train_small(model, pb.x, pb.y, steps=12, lr=1e200, batch_size=5, checkpoints=[4])
    # every step still runs (snapshots exist); the run says it diverged
    assert tr.status == "diverged" and set(tr.snapshots) == {4, 12}
    assert not np.isfinite(tr.history.train_loss.iloc[-1])


def test_load_small_problem_synthetic():
    from sgdnoise.chapters.small_problems import load_small_problem

    pb = load_small_problem("synthetic", 30, image_size=4, seed=0)
    assert pb.x.shape == (30, 3, 4, 4) and pb.x.dtype == DT and pb.n == 30
    assert pb.identity["source"] == "synthetic" and "preprocessing" in pb.identity
    with pytest.raises(ValueError, match="image_size"):
        load_small_problem("synthetic", 30, image_size=5)


def test_models_are_float64():
    from sgdnoise.chapters.small_problems import build_small_model

    m = build_small_model("mlp", (3, 2, 2), width=4)
    assert all(p.dtype == DT for p in m.parameters())
    assert isinstance(m, torch.nn.Module)


def test_batch_indices_shapes_and_without_replacement_distinct():
    from sgdnoise.chapters.small_problems import batch_indices

    gen = torch.Generator().manual_seed(0)
    idx = batch_indices(10, 10, 5, False, gen)
    assert idx.shape == (5, 10)
    assert all(sorted(r.tolist()) == list(range(10)) for r in idx)
    assert batch_indices(10, 3, 4, True, gen).shape == (4, 3)


def test_error_summary_ratio():
    err = pd.DataFrame({"scheme": ["with replacement"] * 2 + ["without replacement"] * 2,
                        "samples": [16, 16, 16, 16], "repeat": [0, 1, 0, 1],
                        "rel_error": [1.0, 3.0, 2.0, 2.0],
                        "predicted": [1.0, 1.0, float("nan"), float("nan")]})
    s = ch01.error_summary(err).set_index("scheme")
    assert s.loc["with replacement", "ratio"] == pytest.approx(2.0)
    assert np.isnan(s.loc["without replacement", "ratio"])


@pytest.mark.parametrize("drop_last", [True, False])
def test_engine_on_a_small_dense_problem_matches_an_explicit_epoch_loop(drop_last):
    """train.train on flat (N, D) float64 features, no test set, no evaluation, equals plain
    SGD written out in float64 with the engine's documented batch order: per epoch one
    torch.randperm(N) from a CPU generator seeded 1_000_003·seed + 17, cut into slices of B."""
    from torch import nn

    from sgdnoise.chapters.small_problems import plain_sgd
    from sgdnoise.train import TrainConfig, train

    n, b, lr, seed, epochs = 7, 3, 0.2, 11, 3
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 4, generator=g, dtype=DT)
    y = torch.randint(2, (n,), generator=g)
    torch.manual_seed(0)
    model = nn.Linear(4, 2).to(DT)
    ref = nn.Linear(4, 2).to(DT)
    ref.load_state_dict(model.state_dict())
    twin = nn.Linear(4, 2).to(DT)
    twin.load_state_dict(model.state_dict())
    # reference: batches (3, 3) per permutation with drop_last, else (3, 3, 1)
    gen = torch.Generator().manual_seed(1_000_003 * seed + 17)
    starts = range(0, n - b + 1, b) if drop_last else range(0, n, b)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in starts:
            idx = perm[s : s + b]
            ref.zero_grad()
            nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
            with torch.no_grad():
                for p in ref.parameters():
                    p -= lr * p.grad
    cfg = TrainConfig(batch_size=b, epochs=epochs, lr=lr, augment=False, seed=seed,
                      channels_last=False, amp=False, drop_last=drop_last, eval_points=0)
    res = train(cfg, {"train_x": x, "train_y": y}, model=model, progress=False)
    assert res.status == "finished" and res.steps == epochs * len(starts)
    assert res.history == []
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    # the small problems' wrapper is this same call
    plain_sgd(twin, x, y, lr=lr, batch_size=b, seed=seed, drop_last=drop_last, epochs=epochs)
    for p, q in zip(twin.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- the essay's factor


def test_essay_factor_check_enumerates_every_batch():
    G = _G(N=9, P=4, seed=7)
    chk = ch01.essay_factor_check(G, 7, 3)
    assert chk["batches"] == math.comb(7, 3)
    assert chk["rel_err_ours"] < 1e-12 and chk["rel_err_essay_unbiased"] < 1e-12
    assert chk["trace_ratio"] == pytest.approx(7 / 6, rel=1e-12)
    # the essay's form with divisor N is off by exactly 1/N of the exact covariance
    assert chk["rel_err_essay"] == pytest.approx(1 / 7, rel=1e-10)
    with pytest.raises(ValueError, match="batch_size"):
        ch01.essay_factor_check(G, 7, 7)


def test_essay_factor_verdict_flips():
    chk = {"n": 8, "batch_size": 3, "batches": 56, "rel_err_ours": 1e-16,
           "rel_err_essay": 0.125, "rel_err_essay_unbiased": 1e-16, "trace_ratio": 8 / 7,
           "predicted_ratio": 8 / 7}
    v = ch01.essay_factor_verdict(chk, n_train=1000, mc_rel_se=[0.01, 0.04], scale="s")
    assert v.outcome == "supported" and v.kind == "derivation check"
    assert "0.10% at every B" in v.sentence and "1.0% to 4.0%" in v.sentence
    bad = ch01.essay_factor_verdict(dict(chk, trace_ratio=1.0), n_train=1000, mc_rel_se=[],
                                    scale="s")
    assert bad.outcome == "contradicted"
    assert_typeset(v, bad)


# --------------------------------------------------------------------------- one epoch


def test_epoch_noise_study_matches_the_closed_forms():
    G = _G(N=40, P=5, seed=3)
    corr, cum = ch01.epoch_noise_study(G, [4, 10, 15], 4000, seed=1)
    assert list(corr.predicted) == pytest.approx([-4 / 36, -10 / 30, -15 / 25])
    assert (corr.z.abs() < 5).all()
    assert (cum.z.dropna().abs() < 5).all()
    # B divides N: the epoch's noise sums to zero; 40 = 2·15 + 10 does not
    ends = cum.sort_values("m").groupby("batch_size").tail(1).set_index("batch_size")
    assert ends.loc[4, "mc"] < 1e-20 and ends.loc[10, "mc"] < 1e-20
    assert ends.loc[15, "mc"] > 0.1 * ends.loc[15, "independent"]
    assert ends.loc[15, "predicted"] == pytest.approx(2 * (40 - 30) / 39)
    with pytest.raises(ValueError, match="fewer than two"):
        ch01.epoch_noise_study(G, [21], 10)


def _epoch_frames(z: float, end: float):
    corr = pd.DataFrame({"batch_size": [10], "steps": [4], "mc": [-0.33], "se": [0.01],
                         "predicted": [-1 / 3], "z": [z]})
    cum = pd.DataFrame({"batch_size": [10, 10], "m": [1, 4], "fraction": [0.25, 1.0],
                        "mc": [0.97, end], "se": [0.01, 0.0], "predicted": [0.97, 0.0],
                        "independent": [0.97, 3.9], "z": [0.1, float("nan")]})
    return corr, cum


def test_epoch_verdict_flips_on_z_and_on_the_epoch_sum():
    v = ch01.epoch_verdict(*_epoch_frames(0.5, 1e-30), z_max=4.0, scale="s")
    assert v.outcome == "supported" and "zero to rounding" in v.sentence
    assert v.kind == "derivation check"
    assert ch01.epoch_verdict(*_epoch_frames(6.0, 1e-30), z_max=4.0,
                              scale="s").outcome == "contradicted"
    v = ch01.epoch_verdict(*_epoch_frames(0.5, 0.3), z_max=4.0, scale="s")
    assert v.outcome == "contradicted" and "not zero" in v.sentence
    assert_typeset(v)


# --------------------------------------------------------------------------- SGD runs


def test_trajectory_noise_study_at_a_tiny_step_is_the_fixed_theta_case():
    from sgdnoise.chapters.small_problems import build_small_model
    from sgdnoise.grads import per_example_grads

    pb = _tiny_problem(40, seed=2)
    traj = ch01.trajectory_noise_study(pb, seeds=2, epochs=60, lr=1e-9, batch_size=10)
    assert list(traj.seed) == [0, 1] and (traj.steps == 240).all()
    assert list(traj.predicted) == pytest.approx([-10 / 30] * 2)
    assert (traj.status == "finished").all()
    # θ barely moves: the within-epoch correlation is the fixed-θ value, across epochs 0
    assert (traj.within - traj.predicted).abs().max() < 0.08
    assert traj.across.abs().max() < 0.2
    # each recorded noise is g_B − ḡ at θ: the noises of one epoch sum to zero (B | N)
    xi, status, _ = ch01._recorded_run(pb, "softmax", 0, lr=1e-9, batch_size=10, epochs=2)
    G = per_example_grads(build_small_model("softmax", pb.in_shape, seed=0),
                          torch.nn.functional.cross_entropy, pb.x, pb.y)
    scale = float((G - G.mean(0)).norm(dim=1).mean())
    assert status == "finished" and xi.shape == (8, G.shape[1])
    assert float(xi[:4].sum(0).norm()) < 1e-6 * scale
    assert float(xi[4:].sum(0).norm()) < 1e-6 * scale


def _traj(within, across=0.0):
    return pd.DataFrame({"seed": range(len(within)), "steps": 100, "within": within,
                         "across": across, "predicted": -0.1, "final_loss": 1.0,
                         "status": "finished"})


@pytest.mark.parametrize(("within", "outcome"), [
    ([-0.11, -0.10, -0.12, -0.105], "supported"),
    ([0.0, 0.01, -0.01, 0.005], "contradicted"),
    ([-0.2, 0.1, -0.15, 0.05], "inconclusive")])
def test_reshuffling_verdict_flips(within, outcome):
    # N = 1100, B = 100: the fixed-θ correlation is −0.1, the threshold −0.05
    v = ch01.reshuffling_verdict(_traj(within), batch_size=100, n_train=1100, alpha=0.05,
                                 scale="s")
    assert v.outcome == outcome and v.kind == "claim about SGD"
    assert v.false_positive_rate is None
    assert_typeset(v)


def test_reshuffling_rates_hold_the_level_and_travel_with_the_verdict():
    traj = _traj([-0.11, -0.09, -0.12, -0.10])
    rates = ch01.reshuffling_rates(traj, batch_size=100, n_train=1100, alpha=0.05,
                                   n_sim=4000, seed=3)
    mc = 3 * math.sqrt(0.05 * 0.95 / 4000)
    assert rates.false_positive <= 0.05 + mc
    assert rates.false_positive >= 0.05 - mc  # the boundary truth gives about alpha
    assert rates.power > 0.9 and rates.n_seeds == 4 and rates.df == 3
    v = ch01.reshuffling_verdict(traj, batch_size=100, n_train=1100, alpha=0.05, scale="s",
                                 rates=rates)
    assert v.false_positive_rate == rates.false_positive and "false-positive rate" in v.sentence
    assert ch01.reshuffling_rates(_traj([-0.1]), batch_size=100, n_train=1100, alpha=0.05,
                                  n_sim=100) is None
    assert_typeset(v)


# --------------------------------------------------------------------------- claims across seeds


def test_claim_outcomes_flip_and_never_both():
    from sgdnoise.chapters.small_problems import Condition, claim_outcomes

    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal((2, 5))
    in_range = [Condition(0, "above", 1.0), Condition(0, "below", 2.0),
                Condition(1, "above", 0.9)]
    x = np.stack([1.5 + noise[0], 0.95 + noise[1]])
    assert claim_outcomes(x, in_range, 0.05)[0] == "supported"
    assert claim_outcomes(x + np.array([[1.0], [0.0]]), in_range, 0.05)[0] == "contradicted"
    assert claim_outcomes(x - np.array([[0.0], [0.1]]), in_range, 0.05)[0] == "contradicted"
    wide = x.copy()
    wide[0] = 2.0 + 0.5 * rng.standard_normal(5)  # item 0 straddles its upper threshold
    assert claim_outcomes(wide, in_range, 0.05)[0] == "inconclusive"
    # one seed: no test, never a decision
    assert claim_outcomes(x[:, :1], in_range, 0.05)[0] == "inconclusive"
    with pytest.raises(ValueError, match="side"):
        Condition(0, "over", 1.0)
    with pytest.raises(ValueError, match="alpha"):
        claim_outcomes(x, in_range, 0.6)


def test_claim_rates_false_positive_within_monte_carlo_error_of_alpha():
    from sgdnoise.chapters.small_problems import Condition, claim_rates

    conds = [Condition(0, "above", 1.0), Condition(0, "below", 2.0), Condition(1, "above", 0.9)]
    n_sim = 4000
    r = claim_rates(conds, effect=[1.5, 0.95], sd=[0.2, 0.02], n_seeds=4, alpha=0.05,
                    opposite=[0.5, 0.8], n_sim=n_sim, seed=1, describe="x", df=6)
    assert r.false_positive <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / n_sim)
    assert 0.3 < r.power <= 1.0 and r.df == 6 and "6 degrees of freedom" in r.conditions()
    with pytest.raises(ValueError, match="sd"):
        claim_rates(conds, effect=[1.5, 0.95], sd=0.0, n_seeds=3, alpha=0.05, describe="x")


def test_table_cells():
    from sgdnoise.chapters.small_problems import fixed, interval, number

    assert number(float("nan")) == "–" and number(-0.0) == "0" and number(1234.5) == "1.23e+03"
    assert fixed(-0.001) == "0.00" and fixed(float("inf")) == "–" and fixed(-1.2) == "-1.20"
    assert interval(1.0, 0.5, 1.5, unit="nats") == "1.00 [0.50, 1.50] nats"
    # one number of decimals for the three values, set by the estimate's size
    assert interval(8.79, 8.38, 9.2) == "8.79 [8.38, 9.20]"
    assert interval(2.0, 1.7, 3.09) == "2.00 [1.70, 3.09]"
    assert interval(-0.0519, -0.0581, -0.0458) == "-0.0519 [-0.0581, -0.0458]"
    assert interval(220.028, 191.667, 252.586) == "220 [192, 253]"
    assert interval(0.0, -0.0001, 0.01) == "0 [-0.0001, 0.01]"
