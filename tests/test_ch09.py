"""Tests of chapter 9's module (sgdnoise.chapters.ch09_anisotropic_noise): its parameters,
the experiment's pieces against independent references, and every verdict function on both
sides of its threshold."""

from __future__ import annotations

import math
from pathlib import Path

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


def classified(errors: dict[str, list[float]], margin: float = 0.02, **kw) -> pd.DataFrame:
    return ch09.classify_gap(ch09.gap_analysis(records(errors), margin=margin, **kw), **kw)


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


def test_epoch_matched_injection_scale_matches_noise_per_epoch():
    b, B, N = 10, 100, 1000
    s = ch09.epoch_matched_injection_scale(b, B)
    assert (N / B) * (1 / B + s) == pytest.approx((N / b) * (1 / b))
    with pytest.raises(ValueError, match="small_batch"):
        ch09.epoch_matched_injection_scale(200, 100)


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
    assert "`subsampled`" in text and "S = 2000" in text


# ----------------------------------------------------------------------------------------
# paired statistics and the per-config classification
# ----------------------------------------------------------------------------------------


def test_gap_statistics_and_t_interval_from_stats():
    rec = records({ch09.SMALL: [0.30, 0.31, 0.29], ch09.LARGE: [0.40, 0.41, 0.39],
                   "half": [0.35, 0.36, 0.34]})
    gaps = ch09.gap_analysis(rec, margin=0.02).set_index("label")
    assert gaps.loc["half", "closed"] == pytest.approx(0.5)
    assert gaps.loc["half", "diff_small"] == pytest.approx(0.05)
    assert gaps.loc["half", "diff_small_ci"] == pytest.approx(0.0, abs=1e-12)  # exact pairs
    summ = ch09.summarize(rec).set_index("label")
    assert summ.loc["half", "test_error"] == pytest.approx(0.35)
    assert summ.loc["half", "test_error_ci"] == pytest.approx(4.302652729911275 * 0.01
                                                              / math.sqrt(3))
    with pytest.raises(ValueError, match="labels"):
        ch09.gap_analysis(rec[rec["label"] != ch09.LARGE], margin=0.02)
    with pytest.raises(ValueError, match="margin"):
        ch09.gap_analysis(rec, margin=0.0)


def test_closes_the_gap_needs_equivalence_not_just_no_difference():
    small, large = arm(0.30), arm(0.40)
    # tight and within the margin of small-batch SGD: equivalent, so it closes the gap
    tight = classified({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.002)})
    assert tight.set_index("label").loc["k", "verdict"] == "closes the gap"
    # same mean, but noisy seeds: not significantly different, not equivalent either
    loose = classified({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.04)})
    assert loose.set_index("label").loc["k", "verdict"] == "narrows, equivalence inconclusive"
    # the same tight arm with a margin smaller than its distance: significantly worse
    strict = classified({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.33, 0.002)})
    assert strict.set_index("label").loc["k", "verdict"] == "narrows the gap"
    worse = classified({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.45, 0.002)})
    assert worse.set_index("label").loc["k", "verdict"] == "worse than large-batch SGD"
    same = classified({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.40, 0.05)})
    assert same.set_index("label").loc["k", "verdict"] == "inconclusive"
    flat = classified({ch09.SMALL: small, ch09.LARGE: arm(0.30, 0.05), "k": arm(0.20, 0.002)})
    assert flat.set_index("label").loc["k", "verdict"] == "better than large-batch SGD (no gap)"
    assert set(flat.set_index("label").loc[[ch09.SMALL, ch09.LARGE], "verdict"]) == {
        "reference"}


def test_verdict_table_joins_summary_gaps_and_costs():
    rec = records({ch09.SMALL: arm(0.30), ch09.LARGE: arm(0.40),
                   "LB + hessian": arm(0.30, 0.001)},
                  kinds={ch09.SMALL: "none", ch09.LARGE: "none", "LB + hessian": "hessian"})
    costs = pd.DataFrame(dict(kind=["none", "hessian"], ratio=[1.0, 2.5]))
    gaps = ch09.classify_gap(ch09.gap_analysis(rec, margin=0.02))
    table = ch09.verdict_table(ch09.summarize(rec), gaps, costs)
    t = table.set_index("label")
    assert t.loc["LB + hessian", "verdict"] == "closes the gap"
    assert t.loc["LB + hessian", "step_cost"] == 2.5 and t.loc[ch09.LARGE, "step_cost"] == 1.0
    assert math.isnan(t.loc[ch09.SMALL, "step_cost"])
    assert t.loc["LB + hessian", "closed"] == pytest.approx(1.0, abs=0.02)
    text = ch09.summary_lines(table, gaps, costs, ch09.cost_goals(1.5, 3.0))
    assert "Kinds that close the gap (TOST-equivalent to small-batch SGD): LB + hessian" in text
    assert "Cost of `hessian`: 2.50x a plain step (goal <= 3.0x, met)" in text
    costs_high = pd.DataFrame(dict(kind=["none", "hessian"], ratio=[1.0, 3.5]))
    assert "3.50x a plain step (goal <= 3.0x, missed)" in ch09.summary_lines(
        table, gaps, costs_high, ch09.cost_goals(1.5, 3.0))


# ----------------------------------------------------------------------------------------
# verdict functions, each on both sides of its threshold
# ----------------------------------------------------------------------------------------


def test_gap_verdict_flips_with_the_numbers():
    small, large = arm(0.30), arm(0.40)

    def verdict(errors, margin=0.02):
        gaps = classified(errors, margin=margin)
        return ch09.gap_verdict(gaps, budget=ch09.EQUAL_EPOCHS, margin=margin, alpha=0.05,
                                scale=SCALE)

    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.002)})
    assert v.outcome == "supported" and "k closes the gap" in v.sentence
    assert "±2.0 points" in v.sentence and v.section == "sec-ch9-gap"
    # the same arm fails once the margin is tighter than its distance from small batch
    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.002)}, margin=0.002)
    assert v.outcome == "contradicted"
    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.36, 0.002),
                 "j": arm(0.45, 0.002)})
    assert v.outcome == "contradicted" and "the closest, k" in v.sentence
    v = verdict({ch09.SMALL: small, ch09.LARGE: large, "k": arm(0.305, 0.05)})
    assert v.outcome == "inconclusive" and "no noisy configuration" in v.sentence
    v = verdict({ch09.SMALL: small, ch09.LARGE: arm(0.30, 0.05), "k": arm(0.30, 0.002)})
    assert v.outcome == "inconclusive" and v.sentence.startswith("No large-batch deficit resolved")
    with pytest.raises(ValueError, match="budget"):
        ch09.gap_verdict(classified({ch09.SMALL: small, ch09.LARGE: large}),
                         budget="later", margin=0.02, alpha=0.05, scale=SCALE)


def test_anisotropy_verdict_flips_with_the_numbers():
    def verdict(aniso, iso, margin=0.02):
        rec = records({"LB + subsampled": aniso, "LB + isotropic": iso})
        return ch09.anisotropy_verdict(rec, margin=margin, alpha=0.05, scale=SCALE)

    assert verdict(arm(0.30, 0.002), arm(0.35)).outcome == "supported"
    assert verdict(arm(0.35, 0.002), arm(0.30)).outcome == "contradicted"
    v = verdict(arm(0.300, 0.001), arm(0.3005))
    assert v.outcome == "contradicted" and "equivalent within ±2.0" in v.sentence
    v = verdict(arm(0.30, 0.08), arm(0.30))
    assert v.outcome == "inconclusive"
    missing = ch09.anisotropy_verdict(records({"LB + isotropic": arm(0.3)}), margin=0.02,
                                      alpha=0.05, scale=SCALE)
    assert missing.outcome == "inconclusive" and "Not tested" in missing.sentence


def test_sampler_verdict_and_summary_flip_at_the_threshold():
    check = pd.DataFrame(dict(kind=["subsampled", "ggn"], rel_error=[0.1, 0.3],
                              expected=[0.1, 0.1], z=[1.0, 2.9]))
    assert ch09.sampler_verdict(check, 3.0, SCALE).outcome == "supported"
    assert ch09.sampler_verdict(check, 2.5, SCALE).outcome == "contradicted"
    assert "All 2 samplers match" in ch09.sampler_summary(check, 3.0)
    assert "At least one sampler misses" in ch09.sampler_summary(check, 2.5)
    assert "`ggn`" in ch09.sampler_verdict(check, 3.0, SCALE).sentence


def test_cost_verdict_flips_with_the_goals():
    costs = pd.DataFrame(dict(kind=["none", "subsampled", "hessian"], ratio=[1.0, 1.4, 4.0]))
    assert ch09.cost_verdict(costs, ch09.cost_goals(1.5, 5.0), SCALE).outcome == "supported"
    assert ch09.cost_verdict(costs, ch09.cost_goals(1.5, 3.0), SCALE).outcome == "mixed"
    assert ch09.cost_verdict(costs, ch09.cost_goals(1.2, 3.0), SCALE).outcome == "contradicted"
    none = ch09.cost_verdict(costs[costs["kind"] == "none"], ch09.cost_goals(1.5, 3.0), SCALE)
    assert none.outcome == "inconclusive"


def test_cost_table_and_verdict_name_the_lanczos_steps():
    """The hessian kind's cost depends on k: measure_step_costs records it (default: the
    library's DEFAULT_LANCZOS_STEPS) and cost_verdict names it; tables without the column
    still work."""
    from sgdnoise.noise import DEFAULT_LANCZOS_STEPS

    model, x, y = tiny_problem(0, n=16)
    goals = ch09.cost_goals(1.5, 3.0)
    table = ch09.measure_step_costs(model, x, y, ["hessian", "ggn"], goals=goals,
                                    curvature_samples=4, repeats=1, warmup=0)
    steps = dict(zip(table["kind"], table["lanczos_steps"], strict=True))
    assert steps["hessian"] == DEFAULT_LANCZOS_STEPS
    assert pd.isna(steps["none"]) and pd.isna(steps["ggn"])
    costs = pd.DataFrame(dict(kind=["none", "hessian", "ggn"], ratio=[1.0, 2.5, 1.3],
                              lanczos_steps=[None, 7, None]))
    verdict = ch09.cost_verdict(costs, goals, SCALE)
    assert verdict.outcome == "supported"
    assert "`hessian` 2.50x (goal ≤ 3x, k = 7 Lanczos steps)" in verdict.sentence
    assert "`ggn` 1.30x (goal ≤ 3x)" in verdict.sentence


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
    assert table["T_step = (1/b - 1/B) N/(N-1)"] == pytest.approx(0.09 * 1000 / 999)
    assert table["T_epoch = B/b² - 1/B"] == pytest.approx(1.0 - 0.01)
    p = ch09.Params.from_yaml(PARAMS / "default.yaml")
    text = ch09.run_scale_markdown(p, "cifar10", 1234)
    assert "800 small-batch steps or 80 large-batch steps" in text
    assert "Equal-steps arm: 200 epochs at batch 500 = 800 large-batch steps" in text
    off = ch09.Params.from_mapping({**p.to_dict(), "equal_steps": False,
                                    "step_matched_kinds": []})
    assert "Equal-steps arm" not in ch09.run_scale_markdown(off, "cifar10", 1234)
