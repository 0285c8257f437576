"""Chapter 8's decision functions on constructed records, on both sides of every threshold.

The two scenarios of the issue: a real generalization gap (the large batch fits the
training set as well as the small one but ends above the small batch's test-vs-train
curve) and pure under-training (the large batch at equal epochs stops early on that curve;
at equal steps it fits and matches the small batch). The verdicts must flip between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_typeset

from sgdnoise.chapters import ch08_resnet_sweep as ch08

ROOT = Path(__file__).resolve().parents[1]
SEED_NOISE = (0.002, -0.001, 0.0005)
STEPS = np.array([0, 1, 3, 10, 30, 100, 300, 1000, 3000])


def curve(x: np.ndarray) -> np.ndarray:
    """The small batch's test error as a function of its train error."""
    return 0.1 + 0.8 * x


def run(arm: str, b: int, seed: int, *, final_train: float, final_loss: float,
        offset: float = 0.0, steps: np.ndarray = STEPS) -> pd.DataFrame:
    """A run whose train error falls from 0.9 to ``final_train`` along log steps and whose
    test error is ``curve(train) + offset`` (plus a small seed-dependent wobble)."""
    frac = np.log1p(steps) / np.log1p(steps[-1])
    train = 0.9 + (final_train - 0.9) * frac
    loss = 2.3 + (final_loss - 2.3) * frac
    test = curve(train) + offset * frac + SEED_NOISE[seed % 3]
    return pd.DataFrame({
        "arm": arm, "batch_size": b, "seed": seed, "run_id": f"{arm}-B{b}-s{seed}",
        "step": steps, "epoch": steps / 10, "train_loss": loss, "train_error": train,
        "test_error": test, "status": "finished", "lr": 0.1, "device": "cpu",
        "git_commit": "abc1234", "created_utc": "2026-12-02T00:00:00", "source": "test"})


def records(*runs: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(runs, ignore_index=True)


def real_gap() -> pd.DataFrame:
    return records(*[run("B", 128, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                   *[run("B", 4096, s, final_train=0.0, final_loss=0.01 + 0.001 * s,
                         offset=0.05) for s in range(3)])


def under_training() -> pd.DataFrame:
    return records(*[run("B", 128, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                   *[run("B", 4096, s, final_train=0.3, final_loss=0.8) for s in range(3)],
                   *[run("C", 512, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                   *[run("C", 4096, s, final_train=0.0, final_loss=0.01 + 0.001 * s)
                     for s in range(3)])


# --------------------------------------------------------------------------- gap + matched fit


def test_real_gap_is_found_and_is_not_under_training() -> None:
    df = real_gap()
    table, v = ch08.gap_test(df, loss_tolerance=0.02, margin=0.01)
    assert v.outcome == "supported", v.sentence
    row = table[table["B"] == 4096].iloc[0]
    assert row["fit"] == "fits" and row["call"] == "gap"
    assert row["d_test_error"].estimate == pytest.approx(0.05, abs=1e-9)
    assert "5.0" in v.sentence and "0.02" in v.sentence
    _, m = ch08.matched_fit(df, arm="B", margin=0.02)
    assert m.outcome == "contradicted", m.sentence
    assert m.sentence.startswith("Above it at B = 4,096 (")


def test_pure_under_training_flips_both_verdicts() -> None:
    df = under_training()
    table, v = ch08.gap_test(df, loss_tolerance=0.02, margin=0.01)
    assert v.outcome == "contradicted", v.sentence
    assert table.set_index(["arm", "B"]).loc[("B", 4096), "fit"] == "under-fits"
    assert table.set_index(["arm", "B"]).loc[("C", 4096), "call"] == "no gap"
    mt, m = ch08.matched_fit(df, arm="B", margin=0.02)
    assert m.outcome == "supported", m.sentence
    assert mt.iloc[0]["call"] == "on the curve"
    assert abs(mt.iloc[0]["residual"].estimate) < 0.002


def test_gap_needs_the_loss_within_tolerance() -> None:
    # the same gap, but the large batch's train loss is 0.05 nats higher: with a tolerance of
    # 0.02 it does not "fit", with 0.1 it does and the gap is called
    df = records(*[run("B", 128, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                 *[run("B", 4096, s, final_train=0.0, final_loss=0.06 + 0.001 * s,
                       offset=0.05) for s in range(3)])
    assert ch08.gap_test(df, loss_tolerance=0.02)[1].outcome == "inconclusive"
    assert ch08.gap_test(df, loss_tolerance=0.1)[1].outcome == "supported"


def test_gap_below_margin_vs_undetermined() -> None:
    # a tiny but consistent difference (0.3 points): below a 1-point margin it is "no gap";
    # with a 0.1-point margin it is a gap (its interval lies above 0 and beyond the margin)
    df = records(*[run("C", 512, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                 *[run("C", 4096, s, final_train=0.0, final_loss=0.01, offset=0.003)
                   for s in range(3)])
    assert ch08.gap_test(df, margin=0.01)[1].outcome == "contradicted"
    assert ch08.gap_test(df, margin=0.001)[1].outcome == "supported"  # 0.3 ± 0 points > 0


def test_one_seed_or_missing_arms_is_inconclusive() -> None:
    df = records(run("B", 128, 0, final_train=0.0, final_loss=0.01),
                 run("B", 4096, 0, final_train=0.0, final_loss=0.01, offset=0.05))
    _, v = ch08.gap_test(df)
    assert v.outcome == "inconclusive" and "cannot be told apart" in v.sentence
    assert "1 cannot be told apart" in v.sentence
    _, v = ch08.gap_test(df.assign(arm="A"))
    assert v.outcome == "inconclusive" and "arm(s) B, C" in v.sentence
    _, m = ch08.matched_fit(df, arm="C")
    assert m.outcome == "inconclusive" and "No records of arm C" in m.sentence


def test_matched_fit_mixed_and_partial() -> None:
    base = [run("B", 128, s, final_train=0.0, final_loss=0.01) for s in range(3)]
    on = [run("B", 1024, s, final_train=0.3, final_loss=0.8) for s in range(3)]
    above = [run("B", 4096, s, final_train=0.0, final_loss=0.01, offset=0.05)
             for s in range(3)]
    t, v = ch08.matched_fit(records(*base, *on, *above), arm="B")
    assert v.outcome == "mixed" and list(t["call"]) == ["on the curve", "above the curve"]
    assert v.sentence.startswith("On the curve at B = 1,024; above it at B = 4,096 (")
    # one seed at B = 4096: no interval, so not enough to call the arm supported
    _, v = ch08.matched_fit(records(*base, *on, above[0]), arm="B")
    assert v.outcome == "inconclusive" and "undetermined at B = 4,096" in v.sentence


def test_matched_fit_refuses_to_extrapolate() -> None:
    # the small batch never got below 20% train error; a large batch ending at 5% is off the
    # range of its curve, so it cannot be called
    df = records(*[run("B", 128, s, final_train=0.2, final_loss=0.5) for s in range(3)],
                 *[run("B", 4096, s, final_train=0.05, final_loss=0.2) for s in range(3)])
    table, m = ch08.matched_fit(df, arm="B")
    assert table.iloc[0]["n_outside"] == 3 and m.outcome == "inconclusive"
    # within the range tolerance the run is compared with the small batch's end point
    table, m = ch08.matched_fit(df, arm="B", range_tolerance=0.2)
    assert table.iloc[0]["n_outside"] == 0
    # compared at the end point (train error 0.2): residual = 0.8 (0.05 - 0.2)
    assert table.iloc[0]["residual"].estimate == pytest.approx(-0.12, abs=0.002)


# --------------------------------------------------------------------------- steps to target


def test_steps_to_target_flips_with_the_largest_batch() -> None:
    good = under_training()
    # arm B: B = 4096 ends at 0.34 test error: never reaches 15%; B = 128 does
    table, v = ch08.steps_to_target(good, arm="B", targets=(0.15, 0.2))
    assert v.outcome == "supported", v.sentence
    t = table[(table["target"] == 0.15)].set_index("B")
    assert t.loc[128, "n_reached"] == 3 and t.loc[4096, "n_reached"] == 0
    # arm C: both reach it
    _, v = ch08.steps_to_target(good, arm="C", targets=(0.15,))
    assert v.outcome == "contradicted", v.sentence
    # a target nobody reaches cannot rank the batch sizes
    _, v = ch08.steps_to_target(good, arm="C", targets=(0.01,))
    assert v.outcome == "inconclusive"


def test_steps_to_target_interpolates_in_log_steps() -> None:
    s = np.array([10.0, 100.0])
    e = np.array([0.3, 0.1])
    assert ch08._first_step_below(s, e, 0.2) == pytest.approx(10 ** 1.5)
    assert ch08._first_step_below(s, e, 0.3) == 10.0
    assert np.isnan(ch08._first_step_below(s, e, 0.05))


# --------------------------------------------------------------------------- plateau


def _tail_run(seed: int, slope: float) -> pd.DataFrame:
    steps = np.array([1, 2, 5, 10, 20, 50, 100, 200, 500])
    test = 0.5 + slope * np.log(steps) + SEED_NOISE[seed] * 0.1
    return pd.DataFrame({"arm": "A", "batch_size": 32768, "seed": seed,
                         "run_id": f"A-s{seed}", "step": steps, "epoch": steps,
                         "train_loss": 1.0, "train_error": test, "test_error": test,
                         "status": "finished"})


def test_plateau_flat_vs_falling() -> None:
    flat = records(*[_tail_run(s, -0.001 * (s + 1)) for s in range(3)])
    _, v = ch08.plateau_test(flat, arm="A", margin=0.01)
    assert v.outcome == "supported", v.sentence
    falling = records(*[_tail_run(s, -0.05 - 0.001 * s) for s in range(3)])
    table, v = ch08.plateau_test(falling, arm="A", margin=0.01)
    assert v.outcome == "contradicted" and table.iloc[0]["call"] == "falling"
    # the flat runs are not flat within a margin smaller than their slopes
    _, v = ch08.plateau_test(flat, arm="A", margin=0.0005)
    assert v.outcome == "inconclusive"
    # one seed: the OLS interval of that run decides
    _, v = ch08.plateau_test(records(_tail_run(0, -0.05)), arm="A")
    assert v.outcome == "contradicted"
    assert ch08.plateau_test(flat, arm="D-plain")[1].outcome == "inconclusive"


# --------------------------------------------------------------------------- sharpness


def _sharp(arm: str, ratio: float, lr: float = 0.1, beta: float = 0.0) -> pd.DataFrame:
    steps = np.arange(0, 300, 50)
    rows = []
    for seed in range(2):
        lam = ratio * 2 * (1 + beta) / lr * (1 + 0.01 * seed) * np.ones(steps.size)
        rows.append(pd.DataFrame({"run_id": f"{arm}-{seed}", "arm": arm,
                                  "batch_size": 32768, "seed": seed, "step": steps,
                                  "lambda_max": lam, "lr": lr}))
    return pd.concat(rows, ignore_index=True)


def test_sharpness_edge_vs_far_below() -> None:
    _, v = ch08.sharpness_test(_sharp("D-plain", 1.0), arms=("D-plain",))
    assert v.outcome == "supported", v.sentence
    _, v = ch08.sharpness_test(_sharp("D-plain", 0.1), arms=("D-plain",))
    assert v.outcome == "contradicted", v.sentence
    both = pd.concat([_sharp("D-plain", 1.0), _sharp("D-scaled", 0.1, lr=3.2, beta=0.9)])
    table, v = ch08.sharpness_test(both, momentum={"D-scaled": 0.9})
    assert v.outcome == "mixed"
    assert r"($\eta\lambda_{\max}$ hovers at $2(1 + \beta)$)" in v.claim
    assert r"$\rho = \eta\lambda_{\max} / 2(1+\beta)$ over the last 50%" in v.sentence
    assert_typeset(v)
    assert table.set_index("arm").loc["D-scaled", "ratio"].estimate == pytest.approx(
        0.1005, rel=1e-3)
    # momentum moves the edge: λ at 45% of 2(1+β)/η is far below it; read with β = 0 the
    # same λ would sit at 90% of 2/η, at the edge
    sharp = _sharp("D-scaled", 0.45, lr=3.2, beta=0.9)
    t9, _ = ch08.sharpness_test(sharp, arms=("D-scaled",), momentum={"D-scaled": 0.9})
    assert t9.iloc[0]["call"] == "far below"
    t0, _ = ch08.sharpness_test(sharp, arms=("D-scaled",))
    assert t0.iloc[0]["call"] == "edge"
    _, v = ch08.sharpness_test(both.iloc[:0])
    assert v.outcome == "inconclusive" and "No sharpness records" in v.sentence


# --------------------------------------------------------------------------- records, design


def test_protocol_table_uses_drop_last() -> None:
    t = ch08.protocol_table(50_000, [128, 32_768], epochs=30, lr=0.1)
    assert list(t["steps/epoch"]) == [390, 1]
    assert list(t["steps S"]) == [11_700, 30]
    assert t["(N-B)/(N-1)"].iloc[1] == pytest.approx(17_232 / 49_999)
    with pytest.raises(ValueError, match="batch size must be in"):
        ch08.protocol_table(100, [200], epochs=1, lr=0.1)


def test_pilot_records_map_onto_the_schema() -> None:
    from sgdnoise.sweep import load_records

    pilot = ROOT / "data" / "results" / "ch08_pilot"
    old = load_records(pilot)
    df = old if "arm" in old.columns else ch08.from_legacy_records(old)
    assert set(ch08.RECORD_COLUMNS) <= set(df.columns)
    fin = ch08.final_points(df)
    assert len(fin) == 18  # 9 batch sizes × 2 seeds
    assert "H200" in ch08.records_scale(df)
    _, v = ch08.gap_test(df)
    assert v.outcome == "inconclusive"  # the pilot has no arm B or C


def test_records_without_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        ch08.final_points(pd.DataFrame({"arm": ["A"]}))


def test_steps_to_target_uses_the_strictest_reachable_target() -> None:
    # B = 128 reaches 15% but not 5%: the verdict is decided at 15%, where B = 4096 fails
    _, v = ch08.steps_to_target(under_training(), arm="B", targets=(0.15, 0.05))
    assert v.outcome == "supported" and "≤ 15%" in v.sentence


# --------------------------------------------------------------------------- parameters


def _cell_values() -> dict:
    import ast

    import jupytext

    nb = jupytext.read(ROOT / "book" / "chapters" / "ch08_resnet_sweep.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_are_valid_params(profile: str) -> None:
    p = ch08.Params.from_yaml(ROOT / "book" / "params" / "ch08_resnet_sweep" / f"{profile}.yaml")
    assert p.profile == profile


def test_default_profile_equals_the_parameters_cell() -> None:
    import yaml

    default = yaml.safe_load((ROOT / "book" / "params" / "ch08_resnet_sweep"
                              / "default.yaml").read_text())
    assert _cell_values() == default


def test_bad_parameters_are_named() -> None:
    values = _cell_values()
    with pytest.raises(ValueError, match="'below_fraction'"):
        ch08.Params.from_mapping({**values, "below_fraction": 0.9})
    with pytest.raises(ValueError, match="'plan'"):
        ch08.Params.from_mapping({**values, "plan": "plan.txt"})
    with pytest.raises(ValueError, match="'gap_margin'"):
        ch08.Params.from_mapping({**values, "gap_margin": 0.0})
    with pytest.raises(ValueError, match="unknown parameter"):
        ch08.Params.from_mapping({**values, "n_train": 5})


@pytest.mark.parametrize("plan", ["plan_laptop.yaml", "plan_smoke.yaml"])
def test_miniature_plan_equal_steps_arm(plan: str) -> None:
    from sgdnoise.sweep import load_plan

    path = ROOT / "book" / "params" / "ch08_resnet_sweep" / plan
    spec = ch08.read_plan(str(path))
    runs = load_plan(path).runs
    n = spec["data"]["n_train"]
    eq = spec["arms"]["C"]["equal_steps"]
    c = [r for r in runs if r.arm == "C"]
    assert len(c) == len(spec["arms"]["C"]["batch_sizes"]) * len(spec["arms"]["C"]["seeds"])
    assert {r.config.max_steps for r in c} == {eq["epochs"] * (n // eq["batch_size"])}
    assert {"A", "B", "C"} <= {r.arm for r in runs}
    # the laptop's ground: no normalisation, no augmentation, drop_last, B up to N
    assert all(r.config.norm == "none" and not r.config.augment and r.config.drop_last
               for r in runs)
    assert max(r.batch_size for r in runs) == n
    # the smoke plan exercises the sharpness path (arm D-plain), the laptop plan does not
    assert any(r.config.sharpness_every for r in runs) == (plan == "plan_smoke.yaml")


def test_analyse_runs_every_decision_and_flips() -> None:
    p = ch08.Params.from_mapping(_cell_values())
    gap = ch08.analyse(real_gap(), None, p, scale="constructed", section="sec-x",
                       targets=(0.15,))
    under = ch08.analyse(under_training(), None, p, scale="constructed", section="sec-x",
                         targets=(0.15,))
    assert gap.verdicts[0].outcome == "supported" and under.verdicts[0].outcome == "contradicted"
    fit_b = {v.claim: v.outcome for v in under.verdicts if v.claim.startswith("Arm B: the large")}
    assert list(fit_b.values()) == ["supported"]
    assert all(v.scale == "constructed" and v.section == "sec-x" for v in gap.verdicts)
    # the sharpness decision is made only when a frame is given
    with_sharp = ch08.analyse(real_gap(), _sharp("D-plain", 1.0), p, scale="c", section="s",
                              targets=(0.15,))
    assert len(with_sharp.verdicts) == len(gap.verdicts) + 1
    assert with_sharp.verdicts[-1].outcome == "supported"


def test_analyse_reads_each_arms_momentum_for_the_threshold() -> None:
    p = ch08.Params.from_mapping(_cell_values())
    recs = records(real_gap(), run("D-scaled", 32768, 0, final_train=0.5, final_loss=1.0)
                   .assign(momentum=0.9))
    sharp = _sharp("D-scaled", 0.45, lr=3.2, beta=0.9)  # 45% of 2(1 + 0.9)/η
    an = ch08.analyse(recs, sharp, p, scale="c", section="s", targets=(0.15,))
    assert an.tables["sharpness"].iloc[0]["call"] == "far below"
    an0 = ch08.analyse(recs.assign(momentum=0.0), sharp, p, scale="c", section="s",
                       targets=(0.15,))
    assert an0.tables["sharpness"].iloc[0]["call"] == "edge"


def test_gap_inconclusive_sentence_reports_the_fitted_differences() -> None:
    # fits, but the test-error difference (1.5 points, wide) is neither clear nor small
    df = records(*[run("C", 64, s, final_train=0.0, final_loss=0.01) for s in range(3)],
                 *[run("C", 1024, s, final_train=0.0, final_loss=0.01,
                       offset=(0.0, 0.03, 0.015)[s]) for s in range(3)])
    table, v = ch08.gap_test(df, margin=0.01)
    assert table.iloc[0]["fit"] == "fits" and table.iloc[0]["call"] == "undetermined"
    assert v.outcome == "inconclusive"
    assert "arm C, B = 1,024: test error 1.5 [" in v.sentence


def test_split_unreached_separates_targets_no_run_reached():
    t = pd.DataFrame({"arm": "A", "target": [0.15, 0.15, 0.10, 0.10], "B": [16, 64, 16, 64],
                      "n_runs": 3, "n_reached": [3, 1, 0, 0]})
    shown, unreached = ch08.split_unreached(t)
    assert unreached == [0.10]
    assert list(shown["target"]) == [0.15, 0.15] and list(shown["B"]) == [16, 64]
    none_missing, empty = ch08.split_unreached(t.assign(n_reached=1))
    assert empty == [] and len(none_missing) == 4
    with pytest.raises(ValueError, match="n_reached"):
        ch08.split_unreached(t.drop(columns="n_reached"))
