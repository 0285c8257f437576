"""Tests of chapter 9's module (sgdnoise.chapters.ch09_anisotropic_noise): its parameters,
the experiment's pieces against independent references, and every verdict function on both
sides of its threshold."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import loop_grads, nparams, tiny_problem
from torch.func import functional_call

from sgdnoise.chapters import ch09_anisotropic_noise as ch09
from sgdnoise.noise import KINDS

torch.set_num_threads(1)
BOOK = Path(__file__).resolve().parents[1] / "book"
PARAMS = BOOK / "params" / "ch09_anisotropic_noise"
SCALE = "laptop, test"


# ----------------------------------------------------------------------------------------
# fixtures and independent references
# ----------------------------------------------------------------------------------------


def dense_hessian(model, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):
        pieces = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, theta0)


def records(errors: dict[str, list[float]], kinds: dict[str, str] | None = None,
            budget: dict[str, str] | None = None) -> pd.DataFrame:
    """A record table with the given test errors per label (one entry per seed)."""
    rows = []
    for label, errs in errors.items():
        for seed, err in enumerate(errs):
            rows.append(dict(label=label, kind=(kinds or {}).get(label, "x"),
                             budget=(budget or {}).get(label, ch09.EQUAL_EPOCHS),
                             batch_size=1, seed=seed, status="finished", steps=1,
                             train_error=0.0, test_error=err, sharpness=1.0,
                             noise_seconds=0.0))
    return pd.DataFrame(rows)


JIT = [0.0, 0.004, -0.004, 0.002, -0.002]  # seed-to-seed variation shared by all arms


def arm(mean: float, noise: float = 0.0) -> list[float]:
    """Five seeds around ``mean``: the shared variation plus an arm-specific wobble."""
    wob = [0.0, noise, -noise, noise / 2, -noise / 2]
    return [mean + j + w for j, w in zip(JIT, wob, strict=True)]


# ----------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_every_profile_builds_params(profile):
    p = ch09.Params.from_yaml(PARAMS / f"{profile}.yaml")
    assert p.profile == profile and p.confidence == pytest.approx(1 - p.alpha)
    assert isinstance(p.seeds, tuple)


def _default_values() -> dict:
    return yaml.safe_load((PARAMS / "default.yaml").read_text())


@pytest.mark.parametrize("change, name", [
    (dict(small_batch=600), "small_batch"),
    (dict(large_batch=100), "large_batch"),
    (dict(large_batch=3000), "large_batch"),
    (dict(seeds=[0, 0]), "seeds"),
    (dict(epoch_matched_kinds=["ggn"], kinds=["isotropic"]), "epoch_matched_kinds"),
    (dict(step_matched_kinds=["hessian"], kinds=["subsampled"],
          epoch_matched_kinds=[]), "step_matched_kinds"),
    (dict(equal_steps=False), "step_matched_kinds"),
    (dict(equivalence_margin=0.0), "equivalence_margin"),
    (dict(gap_fraction=0.0), "gap_fraction"),
    (dict(rate_simulations=10), "rate_simulations"),
    (dict(alpha=0.5), "alpha"),
    (dict(kinds=["nonsense"]), "kinds"),
])
def test_params_refuse_bad_values_naming_the_parameter(change, name):
    values = {**_default_values(), **change}
    with pytest.raises(ValueError, match=name):
        ch09.Params.from_mapping(values)


# ----------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------


def _without_replacement_variance(g: list[float], b: int) -> float:
    """Variance of the mean of b of the values g drawn without replacement, by enumerating
    every batch (all equally likely)."""
    import itertools

    means = [sum(c) / b for c in itertools.combinations(g, b)]
    mu = sum(means) / len(means)
    return sum((m - mu) ** 2 for m in means) / len(means)


def test_epoch_matched_injection_scale_matches_noise_per_epoch():
    g = [0.3, -1.2, 2.0, 0.7, -0.4, 1.1, -2.2, 0.05, 0.9, -0.6, 1.7, -0.1]  # N = 12 gradients
    n, b, B = len(g), 2, 6
    mean = sum(g) / n
    D = sum((x - mean) ** 2 for x in g) / n
    small_epoch = (n / b) * _without_replacement_variance(g, b)  # noise of one small epoch
    s = ch09.epoch_matched_injection_scale(b, B, n)
    large_epoch = (n / B) * (_without_replacement_variance(g, B) + s * D)
    assert large_epoch == pytest.approx(small_epoch, rel=1e-12)
    # the large-N form misses the without-replacement factor by a visible amount here
    s_inf = ch09.epoch_matched_injection_scale(b, B)
    assert s_inf == pytest.approx(B / b**2 - 1 / B)
    assert abs((n / B) * (_without_replacement_variance(g, B) + s_inf * D)
               - small_epoch) > 0.02 * small_epoch
    # and the per-step scale, the same way
    t = ch09.injection_scales(b, B, n).set_index("quantity")["value"]
    step = _without_replacement_variance(g, B) + t["injection scale matched per step"] * D
    assert step == pytest.approx(_without_replacement_variance(g, b), rel=1e-12)
    assert t["injection scale matched per epoch"] == pytest.approx(s)
    with pytest.raises(ValueError, match="small_batch"):
        ch09.epoch_matched_injection_scale(200, 100)
    with pytest.raises(ValueError, match="num_examples"):
        ch09.epoch_matched_injection_scale(10, 100, 50)


def test_step_matched_epochs_gives_at_least_the_small_batch_steps():
    assert ch09.step_matched_epochs(2000, 50, 500, 20) == 200  # 800 steps each, exact
    e = ch09.step_matched_epochs(120, 12, 40, 1)  # 10 small steps, 3 large steps per epoch
    assert e == 4 and e * 3 >= 10 and (e - 1) * 3 < 10
    from sgdnoise.train import steps_per_epoch

    for n, b, B, E in [(1000, 32, 256, 3), (500, 7, 100, 2), (64, 8, 64, 5)]:
        e = ch09.step_matched_epochs(n, b, B, E)
        small, large = E * steps_per_epoch(n, b), e * steps_per_epoch(n, B)
        assert small <= large < small + steps_per_epoch(n, B)
    with pytest.raises(ValueError, match="small_batch"):
        ch09.step_matched_epochs(100, 50, 10, 1)
    with pytest.raises(ValueError, match="epochs"):
        ch09.step_matched_epochs(100, 5, 10, 0)


def test_build_configs_and_the_equal_steps_arm():
    cfgs = ch09.build_configs(10, 100, ["subsampled", "hessian"], num_samples=8,
                              curvature_samples=4, epoch_matched_kinds=["subsampled"])
    assert [c.label for c in cfgs][:2] == [ch09.SMALL, ch09.LARGE]
    assert cfgs[2].injection_scale == pytest.approx(1 / 10 - 1 / 100)
    assert cfgs[2].noise.matched_small_batch == 10 and cfgs[4].noise.matched_small_batch is None
    assert cfgs[3].num_samples == 4 and cfgs[4].injection_scale == pytest.approx(100 / 100 - 0.01)
    assert cfgs[0].kind == "none" and cfgs[0].noise is None and cfgs[0].injection_scale == 0
    assert all(c.budget == ch09.EQUAL_EPOCHS and c.epochs is None for c in cfgs)
    with pytest.raises(ValueError, match="kinds"):
        ch09.build_configs(10, 100, ["nonsense"])
    with pytest.raises(ValueError, match="step_matched_epochs"):
        ch09.build_configs(10, 100, ["subsampled"], step_matched_kinds=["subsampled"])
    arm_cfgs = ch09.build_configs(10, 100, ["subsampled"], step_matched_epochs=7,
                                  step_matched_kinds=["subsampled"])
    steps = [c for c in arm_cfgs if c.budget == ch09.EQUAL_STEPS]
    assert [c.label for c in steps] == [ch09.LARGE_STEPS, "LB + subsampled (equal steps)"]
    assert all(c.epochs == 7 and c.batch_size == 100 for c in steps)
    assert steps[0].injection_scale == 0 and steps[1].injection_scale == pytest.approx(0.09)


def test_engine_trains_the_equal_steps_arm_for_its_own_epochs():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (24,), generator=g)
    x = torch.randn(24, 3, 4, 4, generator=g) + y.view(-1, 1, 1, 1).float()

    class Data:
        train_x, train_y, test_x, test_y = x, y, x[:8], y[:8]

    e = ch09.step_matched_epochs(24, 4, 12, 1)
    cfgs = ch09.build_configs(4, 12, ["subsampled"], num_samples=4, num_examples=24,
                              step_matched_epochs=e, step_matched_kinds=["subsampled"])
    exp = ch09.run_noise_experiment(Data(), cfgs, seeds=[0], width=4, epochs=1, lr=0.05,
                                    sharpness_examples=10, sharpness_iters=3, progress=False)
    rec = exp.records.set_index("label")
    assert rec.loc[ch09.SMALL, "steps"] == 6 and rec.loc[ch09.LARGE, "steps"] == 2
    assert rec.loc[ch09.LARGE_STEPS, "steps"] == 6
    assert rec.loc["LB + subsampled (equal steps)", "budget"] == ch09.EQUAL_STEPS
    sub = ch09.budget_records(exp.records, ch09.EQUAL_STEPS)
    assert set(sub["label"]) == {ch09.SMALL, ch09.LARGE_STEPS, "LB + subsampled (equal steps)"}


# ----------------------------------------------------------------------------------------
# measurements against independent references
# ----------------------------------------------------------------------------------------


def test_covariance_check_reports_small_errors_for_every_kind():
    model, x, y = tiny_problem(0, n=8, hidden=2)
    table = ch09.covariance_check(model, x, y, draws=1500)
    assert set(table["kind"]) == set(KINDS[1:])
    assert (table["z"] < 4).all(), table
    assert (table["expected"] > 0).all()
    assert ((table["trace_ratio"] - 1).abs() < 0.2).all(), table
    exact_k = table.set_index("kind").loc["hessian", "lanczos_steps"]
    assert exact_k == nparams(model)
    # at a training-sized k the same check measures the truncation error, and sees it
    short = ch09.covariance_check(model, x, y, ["hessian"], draws=400, lanczos_steps=1)
    assert short.loc[0, "lanczos_steps"] == 1 and short.loc[0, "z"] > 4, short
    assert short.loc[0, "draw_error"] > 0.3 and table["draw_error"].isna().all()
    # one step short of P the Krylov space is (numerically) invariant: the draws are exact
    near = ch09.covariance_check(model, x, y, ["hessian"], draws=20,
                                 lanczos_steps=nparams(model) - 1)
    assert near.loc[0, "draw_error"] < 1e-6, near


def test_the_chapter_s_sharpness_matches_dense_top_eigenvalue():
    from sgdnoise.curvature import sharpness

    model, x, y = tiny_problem(4, n=10)
    lam = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    got = sharpness(model, x, y, num_iters=nparams(model), **{**ch09.SHARPNESS, "chunk_size": 4})
    assert got == pytest.approx(float(lam.max()), rel=1e-6)


def test_measure_step_costs_table():
    model, x, y = tiny_problem(0, n=16)
    goals = ch09.cost_goals(1.5, 3.0)
    table = ch09.measure_step_costs(model, x, y, ["subsampled", "hessian"], goals=goals,
                                    num_samples=4, curvature_samples=4, lanczos_steps=2,
                                    repeats=1, warmup=0)
    assert list(table["kind"]) == ["none", "subsampled", "hessian"]
    assert table.loc[0, "ratio"] == pytest.approx(1.0)
    assert (table["seconds"] > 0).all()
    assert list(table["goal"].iloc[1:]) == [1.5, 3.0] and math.isnan(table["goal"].iloc[0])


def test_hessian_cost_parts_on_a_small_model():
    model, x, y = tiny_problem(0, n=16)
    parts = ch09.hessian_cost_parts(model, x, y, curvature_samples=4, lanczos_steps=3,
                                    repeats=1, warmup=0)
    assert parts.lanczos_steps == 3 and parts.examples == 4
    assert min(parts.step, parts.z, parts.product) > 0 and parts.graph >= 0
    assert parts.floor == pytest.approx(
        1 + (parts.z + parts.graph + 3 * parts.product) / parts.step)
    assert parts.bound == pytest.approx(parts.floor + parts.recurrence / parts.step)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="lanczos_steps"):
        ch09.hessian_cost_parts(model, x, y, lanczos_steps=0)


def test_median_times_rounds_and_order():
    calls = []
    arms = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    med = ch09.median_times(arms, 3, 1, lambda: None)
    assert calls == list("abc") * 4 and set(med) == set("abc")
    assert all(v >= 0 for v in med.values())
    calls.clear()
    ch09.median_times(arms, 5, 0, lambda: None, shuffle=np.random.default_rng(0))
    rounds = [calls[i : i + 3] for i in range(0, 15, 3)]
    assert all(sorted(r) == list("abc") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    with pytest.raises(ValueError, match="repeats"):
        ch09.median_times(arms, 0, 1, lambda: None)
    with pytest.raises(ValueError, match=r"warmup must be a non-negative integer \(>= 0\), got -1"):
        ch09.median_times(arms, 1, -1, lambda: None)


def test_measured_hessian_parts_only_where_the_notebook_times_costs():
    from types import SimpleNamespace

    recorded = SimpleNamespace(costs=pd.DataFrame(dict(kind=["none"], ratio=[1.0])))
    live = SimpleNamespace(costs=None)
    no_hessian = SimpleNamespace(kinds=("subsampled", "ggn"))
    with_hessian = SimpleNamespace(kinds=("hessian",))
    assert ch09.measured_hessian_parts(with_hessian, None, recorded) is None
    assert ch09.measured_hessian_parts(no_hessian, None, live) is None


@pytest.mark.parametrize("k", [1, 2, 5])
def test_bare_recurrence_is_the_lanczos_square_root(k):
    from sgdnoise.chapters.ch09_anisotropic_noise.costs import _bare_recurrence
    from sgdnoise.spectral import lanczos_matrix_function

    gen = torch.Generator().manual_seed(k)
    diag = torch.rand(40, generator=gen, dtype=torch.float64) * 3 - 0.5
    z = torch.randn(40, generator=gen, dtype=torch.float64)
    got = _bare_recurrence(diag, z, torch.empty(k + 1, 40, dtype=torch.float64), k)
    want = lanczos_matrix_function(lambda V: diag[:, None] * V, z[:, None], k)[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_per_example_projections_match_loop_gradients():
    model, x, y = tiny_problem(5, n=9)
    G = loop_grads(model, x, y)
    U = torch.randn(G.shape[1], 3, generator=torch.Generator().manual_seed(13),
                    dtype=torch.float64)
    torch.testing.assert_close(ch09.per_example_projections(model, x, y, U), G @ U)
    with pytest.raises(ValueError, match=r"V must be a \(P, k\) tensor"):
        ch09.per_example_projections(model, x, y, U[:-1])


def test_directional_variance_of_subsampled_noise_matches_D():
    """Along each top Hessian eigenvector u, uᵀΣu of the sub-sampled kind (all examples)
    estimates uᵀDu: its ratio is 1 within the Monte Carlo error of a χ²-type average."""
    model, x, y = tiny_problem(0)
    draws = 2000
    table = ch09.directional_variance(model, x, y, ["subsampled"], num_directions=2,
                                      draws=draws)
    # (uᵀξ)² / uᵀDu is χ²₁ for Gaussian ξ: mean 1, sd √2; allow 4 standard errors
    assert (table["ratio"] - 1).abs().max() < 4 * math.sqrt(2 / draws), table
    lam = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    assert table["eigenvalue"].iloc[0] == pytest.approx(float(lam.max()), rel=1e-4)
    text = ch09.direction_summary(table, draws)
    assert "is subsampled" in text and "S = 2000" in text and "`" not in text
    # at matched trace the sub-sampled kind is its own reference, and the ratio splits into
    # size and shape
    assert (table["shape_ratio"] == table["ratio"]).all()
    assert table["trace_vs_d"].iloc[0] == pytest.approx(1.0)
    more = ch09.directional_variance(model, x, y, ["isotropic", "hessian"], num_directions=2,
                                     draws=400, lanczos_steps=nparams(model))
    assert (more["shape_ratio"] * more["trace_vs_d"]).tolist() == pytest.approx(
        more["ratio"].tolist())
    iso = more[more["kind"] == "isotropic"]["trace_vs_d"].iloc[0]
    assert iso == pytest.approx(1.0, abs=0.25)  # isotropic noise has the trace of D


# ----------------------------------------------------------------------------------------
# paired statistics and the per-config classification
# ----------------------------------------------------------------------------------------


def gap(errors: dict[str, list[float]], fraction: float = 0.5, controls=(), **kw):
    return ch09.gap_test(records(errors), fraction=fraction, alpha=0.05,
                         small_label=ch09.SMALL, large_label=ch09.LARGE, controls=controls,
                         **kw)


def test_gap_statistics_and_t_interval_from_stats():
    rec = records({ch09.SMALL: [0.30, 0.31, 0.29], ch09.LARGE: [0.40, 0.41, 0.39],
                   "half": [0.35, 0.36, 0.34]})
    test = ch09.gap_test(rec, fraction=0.5, alpha=0.05, small_label=ch09.SMALL,
                         large_label=ch09.LARGE)
    t = test.table.set_index("label")
    assert t.loc["half", "closed"] == pytest.approx(0.5)
    assert t.loc["half", "diff_small"] == pytest.approx(0.05)
    assert t.loc["half", "shortfall"] == pytest.approx(0.0, abs=1e-12)
    assert test.gap == pytest.approx(0.10) and test.n_seeds == 3 and not test.no_gap
    summ = ch09.summarize(rec).set_index("label")
    assert summ.loc["half", "test_error"] == pytest.approx(0.35)
    assert summ.loc["half", "test_error_ci"] == pytest.approx(4.302652729911275 * 0.01
                                                              / math.sqrt(3))
    with pytest.raises(ValueError, match="label"):
        ch09.gap_test(rec[rec["label"] != ch09.LARGE], fraction=0.5, alpha=0.05,
                      small_label=ch09.SMALL, large_label=ch09.LARGE)
    with pytest.raises(ValueError, match="fraction"):
        ch09.gap_test(rec, fraction=0.0, alpha=0.05, small_label=ch09.SMALL,
                      large_label=ch09.LARGE)


def test_closing_a_fraction_of_the_gap_flips_with_the_numbers():
    small, large = arm(0.30), arm(0.40, 0.002)
    calls = {}
    for name, mean in [("most", 0.32), ("a little", 0.38), ("half", 0.35)]:
        t = gap({ch09.SMALL: small, ch09.LARGE: large, "k": arm(mean, 0.002)})
        calls[name] = (t.outcome, t.table.set_index("label").loc["k", "call"])
    assert calls["most"] == ("supported", ch09.CALLS[0])
    assert calls["a little"] == ("contradicted", ch09.CALLS[1])
    assert calls["half"] == ("inconclusive", ch09.CALLS[2])  # exactly at the fraction
    # the same configuration passes at a lower stated fraction and fails at a higher one
    k = arm(0.36, 0.002)
    assert gap({ch09.SMALL: small, ch09.LARGE: large, "k": k}, 0.25).outcome == "supported"
    assert gap({ch09.SMALL: small, ch09.LARGE: large, "k": k}, 0.75).outcome == "contradicted"


def test_the_issue_s_example_does_not_close_the_gap():
    """Small 30.0%, large 31.5%, noisy 31.2%: 20% of a 1.5-point gap is not 'closes'."""
    t = gap({ch09.SMALL: arm(0.300), ch09.LARGE: arm(0.315, 0.001),
             "k": arm(0.312, 0.001)})
    assert not t.no_gap and t.outcome == "contradicted"
    assert t.table.set_index("label").loc["k", "closed"] == pytest.approx(0.2, abs=0.01)


def test_large_batch_sgd_alone_never_closes_the_gap():
    """The control arm fed to the rule as if it were noisy: 'falls short', never 'closes',
    whatever the numbers."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        s_err = 0.3 + 0.01 * rng.standard_normal(4)
        l_err = s_err + rng.uniform(-0.02, 0.05) + 0.01 * rng.standard_normal(4)
        t = gap({ch09.SMALL: list(s_err), ch09.LARGE: list(l_err), "copy": list(l_err)})
        call = t.table.set_index("label").loc["copy", "call"]
        assert t.outcome != "supported" and call != ch09.CALLS[0]
        if not t.no_gap:
            assert call == ch09.CALLS[1] and t.outcome == "contradicted"


def test_no_resolved_gap_is_inconclusive_whatever_the_noise_does():
    t = gap({ch09.SMALL: arm(0.30), ch09.LARGE: arm(0.30, 0.05), "k": arm(0.20, 0.002)})
    assert t.no_gap and t.outcome == "inconclusive"
    assert set(t.table["call"]) == {"reference", ch09.CALLS[2]}
    assert t.table["closed"].isna().all()  # no fraction of a gap that is not there
    v = ch09.gap_verdict(t, budget=ch09.EQUAL_EPOCHS, scale=SCALE)
    assert v.outcome == "inconclusive" and v.sentence.startswith("No large-batch deficit")


def test_holm_over_the_configurations_and_controls_outside_the_family():
    small, large = arm(0.30), arm(0.40, 0.002)
    borderline = {f"k{i}": arm(0.33, 0.02) for i in range(6)}  # p about 0.02 alone
    alone = gap({ch09.SMALL: small, ch09.LARGE: large, "k0": borderline["k0"]})
    many = gap({ch09.SMALL: small, ch09.LARGE: large, **borderline})
    p_alone = alone.table.set_index("label").loc["k0", "p_closes"]
    p_many = many.table.set_index("label").loc["k0", "p_closes"]
    assert p_many == pytest.approx(min(1.0, 6 * p_alone))  # equal p values: factor k
    assert alone.outcome == "supported" and many.outcome == "inconclusive"
    # a control closes the whole gap but is shown, not decided on
    ctl = gap({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.38, 0.002),
               "epoch": arm(0.30, 0.002)}, controls=("epoch",))
    assert ctl.family == ("k",) and ctl.controls == ("epoch",)
    assert ctl.outcome == "contradicted"
    assert ctl.table.set_index("label").loc["epoch", "call"] == "control (not in the decision)"
    with pytest.raises(ValueError, match="no noisy configuration"):
        gap({ch09.SMALL: small, ch09.LARGE: large, "epoch": small}, controls=("epoch",))


def test_supported_and_contradicted_never_both():
    rng = np.random.default_rng(0)
    errors = 0.3 + 0.02 * rng.standard_normal((4000, 5, 3))
    errors[:, 1] += 0.05
    head, calls, p = ch09.closing_calls(errors, 0.5, 0.05)
    assert set(np.unique(head)) <= {0, 1, 2, 3}
    assert np.isin(head, [0, 1]).sum() > 0  # both outcomes occur in this simulation
    # the two claims' tests, before the gap gate: never both rejected
    both = (p["closes"] <= 0.05).any(-1) & (p["short"] <= 0.05).all(-1)
    assert not both.any()
    assert not ((calls == 0) & (calls == 1)).any()


def test_error_rates_of_the_gap_rule_hold_their_level():
    """At the boundary (every configuration closes exactly half) Holm keeps 'supported' at
    most α; closing none gives fewer; closing all with a large gap is found."""
    rates = ch09.gap_rates(gap=0.05, sd=0.01, sd_source="(test)", n_seeds=4, n_configs=5,
                           fraction=0.5, alpha=0.05, n_sim=4000, seed=1)
    slack = 3 * math.sqrt(0.05 * 0.95 / 4000)
    assert rates.boundary <= 0.05 + slack
    assert rates.false_positive <= 0.05 + slack
    assert rates.power > 0.8
    assert rates.false_contradiction <= 0.05 + slack
    # a rule without Holm would exceed its level at the boundary: the check can fail
    rng = np.random.default_rng(2)
    mu = np.array([0.0, 0.05] + [0.025] * 5)
    errors = mu[None, :, None] + 0.01 * rng.standard_normal((4000, 7, 4))
    w = errors[:, 2:] - 0.5 * errors[:, :1] - 0.5 * errors[:, 1:2]
    from sgdnoise.decide.pvalues import one_sided

    uncorrected = (one_sided(w).p_less <= 0.05).any(-1).mean()
    assert uncorrected > 0.05 + slack
    text = rates.conditions()
    assert "5 noisy configurations" in text and "5.0 points" in text
    with pytest.raises(ValueError, match="gap and sd"):
        ch09.gap_rates(gap=0.0, sd=0.01, sd_source="", n_seeds=3, n_configs=1,
                       fraction=0.5, alpha=0.05)


def test_paired_spread_removes_the_shared_seed_effect():
    rec = records({"a": arm(0.30), "b": arm(0.40), "c": arm(0.35)})  # shared JIT only
    sd, df = ch09.paired_spread(rec)
    assert sd == pytest.approx(0.0, abs=1e-12) and df == 8
    rec = records({"a": arm(0.30, 0.01), "b": arm(0.40)})
    sd, df = ch09.paired_spread(rec)
    assert sd > 0 and df == 4
    assert ch09.paired_spread(records({"a": [0.3], "b": [0.4]})) == (pytest.approx(
        float("nan"), nan_ok=True), 0)


def test_verdict_table_joins_summary_gaps_and_costs():
    rec = records({ch09.SMALL: arm(0.30), ch09.LARGE: arm(0.40),
                   "LB + hessian": arm(0.30, 0.001)},
                  kinds={ch09.SMALL: "none", ch09.LARGE: "none", "LB + hessian": "hessian"})
    costs = pd.DataFrame(dict(kind=["none", "hessian"], ratio=[1.0, 2.5]))
    test = ch09.gap_test(rec, fraction=0.5, alpha=0.05, small_label=ch09.SMALL,
                         large_label=ch09.LARGE)
    table = ch09.verdict_table(ch09.summarize(rec), test, costs)
    t = table.set_index("label")
    assert t.loc["LB + hessian", "call"] == ch09.CALLS[0]
    assert t.loc["LB + hessian", "step_cost"] == 2.5 and t.loc[ch09.LARGE, "step_cost"] == 1.0
    assert math.isnan(t.loc[ch09.SMALL, "step_cost"])
    assert t.loc["LB + hessian", "closed"] == pytest.approx(1.0, abs=0.02)
    text = ch09.summary_lines(table, test, costs)
    assert "Shown to close at least 50% of the gap: LB + hessian" in text
    assert "_" not in text and "nan" not in text


def test_cost_summary_is_descriptive():
    costs = pd.DataFrame(dict(kind=["none", "subsampled", "hessian"], ratio=[1.0, 1.4, 4.0],
                              lanczos_steps=[None, None, 7]))
    text = ch09.cost_summary(costs, ch09.cost_goals(1.5, 3.0))
    assert "subsampled 1.40 times (aim 1.5 times)" in text
    assert "hessian 4.00 times (7 Lanczos steps, aim 3 times)" in text
    assert "no verdict" in text


def cost_parts(floor_extra: float, recurrence: float) -> ch09.HessianCostParts:
    """Parts with ``floor = 1 + floor_extra`` and ``bound = floor + recurrence`` (plain
    step of 1 s, k = 5)."""
    return ch09.HessianCostParts(step=1.0, z=0.2, graph=floor_extra - 0.2 - 5 * 0.1,
                                 product=0.1, recurrence=recurrence, lanczos_steps=5,
                                 examples=32)


@pytest.mark.parametrize("floor_extra, recurrence, call", [
    (2.5, 0.8, "products over the aim"),
    (1.5, 0.8, "bookkeeping over the aim"),
    (1.5, 0.3, "within reach"),
])
def test_cost_bound_call_flips_with_the_parts(floor_extra, recurrence, call):
    parts = cost_parts(floor_extra, recurrence)
    assert ch09.cost_bound_call(parts, 3.0) == call
    text = ch09.cost_bound_sentence(parts, 3.0)
    assert f"**{parts.floor:.2f}**" in text and f"**{parts.bound:.2f}**" in text
    assert "M = 32 examples" in text
    reach = {"products over the aim": "parts alone exceed the aim of 3 plain steps",
             "bookkeeping over the aim": "cannot meet it with bookkeeping as lean",
             "within reach": "within reach of a draw of 5 Lanczos steps"}
    assert reach[call] in text
    assert sum(phrase in text for phrase in reach.values()) == 1
    with pytest.raises(ValueError, match="goal"):
        ch09.cost_bound_call(parts, 0.0)


# ----------------------------------------------------------------------------------------
# verdict functions, each on both sides of its threshold
# ----------------------------------------------------------------------------------------


def test_gap_verdict_flips_with_the_numbers():
    small, large = arm(0.30), arm(0.40, 0.002)

    def verdict(errors, fraction=0.5):
        return ch09.gap_verdict(gap(errors, fraction), budget=ch09.EQUAL_EPOCHS, scale=SCALE)

    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.002)})
    assert v.outcome == "supported" and "k closes 95% of it" in v.sentence
    assert v.kind == "claim about SGD" and v.section == "sec-ch9-gap"
    assert "50% of the test-error gap" in v.claim
    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.36, 0.002),
                 "j": arm(0.45, 0.002)})
    assert v.outcome == "contradicted" and "the best, k, closes 40%" in v.sentence
    assert "Holm's correction over the 2" in v.sentence
    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.08)})
    assert v.outcome == "inconclusive" and "no configuration is shown" in v.sentence
    with pytest.raises(ValueError, match="budget"):
        ch09.gap_verdict(gap({ch09.SMALL: small, ch09.LARGE: large, "k": small}),
                         budget="later", scale=SCALE)


def test_gap_verdict_carries_its_error_rates():
    rec = records({ch09.SMALL: arm(0.30), ch09.LARGE: arm(0.40, 0.004),
                   "k": arm(0.31, 0.003)})
    test = ch09.gap_test(rec, fraction=0.5, alpha=0.05, small_label=ch09.SMALL,
                         large_label=ch09.LARGE)
    rates = ch09.rates_for(test, rec, n_sim=500)
    v = ch09.gap_verdict(test, budget=ch09.EQUAL_EPOCHS, scale=SCALE, rates=rates)
    assert v.false_positive_rate == rates.false_positive and v.power == rates.power
    assert v.n_seeds == 5 and v.n_sim == 500 and "false-positive rate" in v.sentence
    assert rates.gap == pytest.approx(test.gap)  # simulated at the measured gap


def test_anisotropy_verdict_flips_with_the_numbers():
    def verdict(aniso, iso, margin=0.02, n_sim=0):
        rec = records({"LB + subsampled": aniso, "LB + isotropic": iso})
        return ch09.anisotropy_verdict(rec, margin=margin, alpha=0.05, scale=SCALE,
                                       n_sim=n_sim)

    assert verdict(arm(0.30, 0.002), arm(0.35)).outcome == "supported"
    assert verdict(arm(0.35, 0.002), arm(0.30)).outcome == "contradicted"
    v = verdict(arm(0.300, 0.001), arm(0.3005))
    assert v.outcome == "contradicted" and "equivalent within ±2.0" in v.sentence
    v = verdict(arm(0.30, 0.08), arm(0.30))
    assert v.outcome == "inconclusive" and v.kind == "claim about SGD"
    missing = ch09.anisotropy_verdict(records({"LB + isotropic": arm(0.3)}), margin=0.02,
                                      alpha=0.05, scale=SCALE)
    assert missing.outcome == "inconclusive" and "Not tested" in missing.sentence
    rated = verdict(arm(0.30, 0.01), arm(0.35), n_sim=2000)
    assert rated.false_positive_rate <= 0.025 + 3 * math.sqrt(0.025 / 2000)
    assert rated.power is not None and rated.n_seeds == 5


def test_sampler_verdict_and_summary_flip_at_the_threshold():
    check = pd.DataFrame(dict(kind=["subsampled", "ggn"], rel_error=[0.1, 0.3],
                              expected=[0.1, 0.1], z=[1.0, 2.9]))
    assert ch09.sampler_verdict(check, 3.0, SCALE).outcome == "supported"
    assert ch09.sampler_verdict(check, 3.0, SCALE).kind == "derivation check"
    # a truncated Lanczos row (k below the exact one) is reported, not judged
    trunc = pd.DataFrame(dict(kind=["hessian", "hessian"], lanczos_steps=[38, 5],
                              rel_error=[0.1, 0.45], expected=[0.1, 0.1], z=[1.0, 4.5]))
    assert ch09.sampler_verdict(trunc, 3.0, SCALE).outcome == "supported"
    assert ch09.sampler_verdict(trunc.iloc[:1].assign(z=4.0), 3.0, SCALE).outcome == \
        "contradicted"
    assert ch09.sampler_verdict(check, 2.5, SCALE).outcome == "contradicted"
    assert "All 2 samplers match" in ch09.sampler_summary(check, 3.0)
    assert "At least one sampler misses" in ch09.sampler_summary(check, 2.5)
    assert "ggn kind" in ch09.sampler_verdict(check, 3.0, SCALE).sentence


def test_cost_table_names_the_lanczos_steps():
    """The hessian kind's cost depends on k: measure_step_costs records it (default: the
    library's DEFAULT_LANCZOS_STEPS)."""
    from sgdnoise.noise import DEFAULT_LANCZOS_STEPS

    model, x, y = tiny_problem(0, n=16)
    goals = ch09.cost_goals(1.5, 3.0)
    table = ch09.measure_step_costs(model, x, y, ["hessian", "ggn"], goals=goals,
                                    curvature_samples=4, repeats=1, warmup=0)
    steps = dict(zip(table["kind"], table["lanczos_steps"], strict=True))
    assert steps["hessian"] == DEFAULT_LANCZOS_STEPS
    assert pd.isna(steps["none"]) and pd.isna(steps["ggn"])


def test_styled_table_keeps_the_verdict_readable():
    df = pd.DataFrame(dict(label=["a"], verdict=["closes the gap"], x=[0.123456]))
    html = ch09.styled_table(df, {"x": "{:.3f}"}, rename={"x": "x (units)"}).to_html()
    assert "0.123" in html and "0.123456" not in html and "x (units)" in html
    assert "min-width: 13em" in html and "white-space: normal" in html


def test_each_kind_has_its_own_colour_and_each_config_a_style():
    pal = ch09.kind_palette()
    assert set(pal) == set(KINDS) and len(set(pal.values())) == len(KINDS)
    assert ch09.config_style(ch09.SMALL, "none")[0] == (0.0, 0.0, 0.0)
    assert ch09.config_style(ch09.LARGE, "none") == (pal["none"], "-")
    assert ch09.config_style("LB + subsampled (epoch T)", "subsampled") == (
        pal["subsampled"], "--")
    assert ch09.config_style("LB + ggn (equal steps)", "ggn") == (pal["ggn"], ":")


def test_injection_scales_and_run_scale_text():
    table = ch09.injection_scales(10, 100, 1000).set_index("quantity")["value"]
    assert table["injection scale matched per step"] == pytest.approx(0.09 * 1000 / 999)
    assert table["injection scale matched per epoch"] == pytest.approx(
        (100 * 990 / 100 - 900 / 100) / 999)
    p = ch09.Params.from_yaml(PARAMS / "default.yaml")
    text = ch09.run_scale_markdown(p, "cifar10", 1234)
    assert "800 small-batch steps or 80 large-batch steps" in text
    assert "Equal-steps arm: 200 epochs at batch 500 = 800 large-batch steps" in text
    off = ch09.Params.from_mapping({**p.to_dict(), "equal_steps": False,
                                    "step_matched_kinds": []})
    assert "Equal-steps arm" not in ch09.run_scale_markdown(off, "cifar10", 1234)


def _markdown_cells(source: str) -> list[str]:
    """The Markdown cells of a jupytext percent notebook, without the comment marks."""
    cells, current = [], None
    for line in source.splitlines():
        if line.startswith("# %%"):
            if current is not None:
                cells.append("\n".join(current))
            current = [] if "[markdown]" in line else None
        elif current is not None:
            current.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
    if current is not None:
        cells.append("\n".join(current))
    return cells


def test_the_page_prose_names_values_not_parameter_identifiers():
    """No parameter of the chapter appears in the page's Markdown as an identifier: in code
    spans, or bare where the name has an underscore (issue 19: prose in words)."""
    import dataclasses
    import re

    names = [f.name for f in dataclasses.fields(ch09.Params)]
    text = "\n".join(_markdown_cells((BOOK / "chapters" / "ch09_anisotropic_noise.py")
                                     .read_text()))
    assert "## Does the noise close the gap?" in text  # the parser found the prose
    spans = set(re.findall(r"`([^`]+)`", text))
    assert not spans & set(names), spans & set(names)
    bare = [n for n in names if "_" in n and re.search(rf"(?<![\w/.]){n}(?!\w)", text)]
    assert not bare, bare
    assert "first version" not in text and "(s)" not in text
    planted = text + "\nthe kinds in `epoch_matched_kinds`"
    assert set(re.findall(r"`([^`]+)`", planted)) & set(names)  # the check can fail


def test_styled_table_keeps_numbers_on_one_line_and_lets_names_wrap():
    """Numbers never break; a configuration's name may wrap at its spaces, so that a wide
    table fits the column at 1280 px (the browser test fails a sideways scroll)."""
    df = pd.DataFrame(dict(label=["large-batch SGD (equal steps)"], x=[-8.25]))
    html = ch09.styled_table(df, {"x": "{:.1f}"}, wrap=()).to_html()
    rules = re.findall(r"#T_\w+_(row\d+_col\d+)\s*\{([^}]*)\}", html)
    nowrap = {cell for cell, props in rules if "nowrap" in props}
    assert nowrap == {"row0_col1"}, rules
