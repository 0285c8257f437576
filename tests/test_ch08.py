"""Chapter 8's verdicts on noisy constructed records, on both sides of every threshold.

The records come from :mod:`sgdnoise.decide.scenarios` (independent noise per run, 3 seeds):
a real generalization gap (arm B's large batch fits as well and tests 5 points worse) and
pure under-training (arm B's large batch stops early on the small batch's curve; arm C's,
at equal steps, fits and tests the same). The per-pair procedure itself is tested in
``test_decide.py``; here: the chapter's verdicts, their sentences and error rates, the
plateau and sharpness tests, steps to target, the parameters and the plans.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_typeset

from sgdnoise.chapters import ch08_resnet_sweep as ch08
from sgdnoise.decide import scenarios as ds

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "book" / "params" / "ch08_resnet_sweep"
TIGHT = ds.Spread(0.003, 0.2, float("nan"), 30, 10, "constructed")
CURVE = ds.Curve()


def _arm(arm: str, sizes: list[int], truths: list[ds.Truth], seed: int) -> pd.DataFrame:
    runs = ds.simulate_arm(CURVE, TIGHT, truths, batch_sizes=sizes, n_seeds=3, n_sim=1,
                           rng=np.random.default_rng(seed), arm=arm)
    return ds.to_records(runs, source="test")


def real_gap() -> pd.DataFrame:
    """Arm B: B = 4,096 fits as well as B = 128 and tests 5 points worse."""
    return _arm("B", [128, 4096], [ds.gap(CURVE, 0.05)], seed=0)


def under_training() -> pd.DataFrame:
    """Arm B: B = 4,096 stops at 15% train error on B = 128's curve; arm C (equal steps):
    B = 4,096 fits as well as B = 512 and tests the same."""
    return pd.concat([_arm("B", [128, 4096], [ds.under_training(CURVE, 0.15)], seed=1),
                      _arm("C", [512, 4096], [ds.no_gap(CURVE)], seed=2)],
                     ignore_index=True)


def params(**changes) -> ch08.Params:
    values = ch08.Params.from_yaml(PARAMS / "default.yaml").to_dict()
    return ch08.Params.from_mapping({**values, "n_sim": 400, **changes})


SCALE = ch08.Scale("constructed", "Constructed records", "sec-x", 0.15)


# --------------------------------------------------------------------------- the gap verdicts


def test_gap_and_under_training_flip_between_the_two_truths() -> None:
    p = params()
    gap = ch08.analyse(real_gap(), None, p, SCALE, spread=TIGHT)
    under = ch08.analyse(under_training(), None, p, SCALE, spread=TIGHT)
    assert [v.outcome for v in gap.verdicts[:2]] == ["supported", "contradicted"]
    assert [v.outcome for v in under.verdicts[:2]] == ["contradicted", "supported"]
    assert gap.decision.onset == 4096 and under.decision.onset is None
    v = gap.verdicts[0]
    assert v.claim.startswith("Constructed records: at the batch sizes the essay names")
    mean, low, high = gap.decision.table.iloc[0]["difference"]
    assert 0.03 < low < mean < high < 0.07  # 5 points, noisy
    assert (f"arm B, B = 4,096 (end points, 3 seeds): test-error difference {mean * 100:.1f} "
            f"[{low * 100:.1f}, {high * 100:.1f}] points") in v.sentence
    assert "against the essay's onset of 4,096 of 50,000" in v.sentence
    assert "margin of 1 point;" in v.sentence and "0.02 nats" in v.sentence
    # error rates measured at the seeds recorded (3), in the family recorded (1 pair)
    assert v.n_seeds == 3 and v.n_sim == 400 and "a family of 1 pre-registered pair" in v.rates_at
    assert v.false_positive_rate is not None and v.power is not None
    assert "false-positive rate" in v.sentence and "power" in v.sentence
    assert all(x.scale == "constructed" and x.section == "sec-x" for x in gap.verdicts)
    assert_typeset(*gap.verdicts, *under.verdicts)


def test_missing_planned_pairs_and_diverged_runs_are_named() -> None:
    p = params()
    scale = ch08.Scale("constructed", "Constructed", "sec-x", 0.15,
                       plan=str(PARAMS / "plan_full.yaml"))
    an = ch08.analyse(real_gap().iloc[:0], None, p, scale, spread=TIGHT)
    assert [v.outcome for v in an.verdicts[:2]] == ["inconclusive", "inconclusive"]
    assert "not recorded: arm A at B = 4,096" in an.verdicts[0].sentence
    # no pair recorded: the rates are at the plan's seeds and family
    planned = ch08.plan_family(str(PARAMS / "plan_full.yaml"), ch08.thresholds(p))
    assert an.rates.n_seeds == planned["seeds"].min()
    assert an.rates.family_size == len(planned)
    # a diverged batch size is listed with its count and keeps the verdict open
    div = _arm("B", [128, 4096, 32768], [ds.no_gap(CURVE), ds.divergence()], seed=4)
    an = ch08.analyse(div, None, p, SCALE, spread=TIGHT)
    assert an.verdicts[0].outcome == "inconclusive"
    assert "diverged at arm B at B = 32,768 (3 of 3 seeds diverged)" in an.verdicts[0].sentence


def test_plan_family_is_the_preregistered_pairs_of_the_plan() -> None:
    th = ch08.thresholds(params())
    fam = ch08.plan_family(str(PARAMS / "plan_full.yaml"), th)
    assert (fam["B"] / 50_000 >= th.onset_fraction - 1e-12).all()
    assert set(fam["arm"]) <= set(th.decisive_arms) and len(fam) >= 4
    lap = ch08.plan_family(str(PARAMS / "plan_laptop.yaml"), th)
    assert set(lap["B"]) == {256, 1024, 2048} and set(lap["arm"]) == {"A", "B", "C"}


def test_decision_as_text_and_tables() -> None:
    an = ch08.analyse(real_gap(), None, params(), SCALE, spread=TIGHT)
    shown = ch08.decision_as_text(an.decision.table)
    row = shown.iloc[0]
    assert row["pre-registered"] == "yes" and row["call"] == "gap"
    mean = an.decision.table.iloc[0]["difference"][0]
    assert row["difference"].startswith(f"{mean * 100:.1f} [")
    rates = ch08.rates_table(an.rates)
    assert len(rates) == 6 and rates["gap contradicted"].str.contains("%").all()
    seeds = ch08.seeds_table(TIGHT, ch08.thresholds(params()), gaps=[0.02, 0.05],
                             family_sizes=[4, 8], end_loss=0.005)
    assert list(seeds.columns) == ["gap (points)", "4 pairs", "8 pairs"]
    # more pairs or a smaller gap never need fewer seeds
    n = seeds[["4 pairs", "8 pairs"]].astype(int).to_numpy()
    assert (n[:, 1] >= n[:, 0]).all() and (n[0] >= n[1]).all()


# --------------------------------------------------------------------------- plateau


def _tail_runs(arm: str, b: int, slope: float, seeds: int = 3, noise: float = 0.001
               ) -> pd.DataFrame:
    rng = np.random.default_rng(b + seeds)
    steps = np.array([1, 2, 5, 10, 20, 50, 100, 200, 500])
    rows = []
    for s in range(seeds):
        err = 0.5 + slope * np.log(steps) + noise * rng.standard_normal(steps.size)
        rows.append(pd.DataFrame({"arm": arm, "batch_size": b, "seed": s,
                                  "run_id": f"{arm}-{b}-{s}", "step": steps,
                                  "epoch": steps / 10, "train_loss": 1.0,
                                  "train_error": err - 0.01, "test_error": err,
                                  "status": "finished", "n_train": 50_000}))
    return pd.concat(rows, ignore_index=True)


def test_plateau_flat_falling_and_one_seed() -> None:
    kw = dict(arms=["A"], onset_fraction=0.08, n_evals=5, margin=0.01, alpha=0.05)
    flat = pd.concat([_tail_runs("A", 4096, 0.0), _tail_runs("A", 32768, 0.001),
                      _tail_runs("A", 128, -0.05)])
    table, v = ch08.plateau_test(flat, **kw)
    assert v.outcome == "supported", v.sentence
    # the small batch (below the onset) is not tested; train and test error both are
    assert set(table["B"]) == {4096, 32768} and set(table["error"]) == {"train", "test"}
    assert "within 50 epochs" in v.sentence
    falling = pd.concat([_tail_runs("A", 4096, 0.0), _tail_runs("A", 32768, -0.05)])
    table, v = ch08.plateau_test(falling, **kw)
    assert v.outcome == "contradicted" and "falling" in set(table["call"])
    # one seed: no interval, no call, no verdict
    _, v = ch08.plateau_test(_tail_runs("A", 4096, -0.05, seeds=1), **kw)
    assert v.outcome == "inconclusive"
    # an arm not listed is not tested (a decaying schedule flattens by construction)
    _, v = ch08.plateau_test(_tail_runs("B", 4096, 0.0), **kw)
    assert v.outcome == "inconclusive" and "No records" in v.sentence


def test_plateau_rates() -> None:
    r = ch08.plateau_rates(n_seeds=3, n_items=4, n_evals=5, margin=0.01, alpha=0.05,
                           noise_sd=0.002, noise_source="constructed", n_sim=2000)
    assert r.false_positive <= 0.05 + 0.015  # the boundary scenario is sized at alpha
    assert r.power > 0.5 and r.false_contradiction <= 0.05 + 0.015
    noisy = ch08.plateau_rates(n_seeds=3, n_items=4, n_evals=5, margin=0.01, alpha=0.05,
                               noise_sd=0.04, noise_source="constructed", n_sim=500)
    assert noisy.power < r.power


# --------------------------------------------------------------------------- sharpness


def _sharp(arm: str, ratio: float, *, lr: float = 0.1, beta: float = 0.0, runs: int = 2,
           decay: bool = False) -> pd.DataFrame:
    steps = np.arange(0, 300, 50)
    rows = []
    for seed in range(runs):
        lrs = lr * (np.cos(np.pi * steps / 300) + 1) / 2 if decay else np.full(steps.size, lr)
        lam = ratio * 2 * (1 + beta) / lr * (1 + 0.01 * seed) * np.ones(steps.size)
        rows.append(pd.DataFrame({"run_id": f"{arm}-{seed}", "arm": arm, "batch_size": 32768,
                                  "seed": seed, "step": steps, "lambda_max": lam, "lr": lrs}))
    return pd.concat(rows, ignore_index=True)


def test_sharpness_edge_inside_a_constant_lr_window() -> None:
    _, v = ch08.sharpness_edge_test(_sharp("D-plain", 1.0), arms=("D-plain",))
    assert v.outcome == "supported", v.sentence
    assert "BatchNorm in eval mode" in v.sentence
    _, v = ch08.sharpness_edge_test(_sharp("D-plain", 0.1), arms=("D-plain",))
    assert v.outcome == "contradicted"
    # a cosine decay has no constant window in its second half: it cannot reach the edge
    t, v = ch08.sharpness_edge_test(_sharp("D-scaled", 1.0, lr=3.2, beta=0.9, decay=True),
                                    arms=("D-scaled",), momentum={"D-scaled": 0.9})
    assert t.iloc[0]["call"] == "no window" and v.outcome == "inconclusive"
    # one run: no interval
    _, v = ch08.sharpness_edge_test(_sharp("D-plain", 1.0, runs=1), arms=("D-plain",))
    assert v.outcome == "inconclusive"
    # momentum moves the edge: 45% of 2(1+0.9)/eta is far below it
    t, _ = ch08.sharpness_edge_test(_sharp("D-scaled", 0.45, lr=3.2, beta=0.9),
                                    arms=("D-scaled",), momentum={"D-scaled": 0.9})
    assert t.iloc[0]["call"] == "far below"
    # the BatchNorm mode is read from the records when they carry it
    _, v = ch08.sharpness_edge_test(_sharp("D-plain", 1.0).assign(sharpness_bn="train"),
                                    arms=("D-plain",))
    assert "BatchNorm in train mode" in v.sentence
    assert_typeset(v)


def _end_sharp(exponent: float, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for arm in ("A", "B"):
        for s in range(seeds):
            for b in (128, 512, 4096, 32768):
                rows.append({"run_id": f"{arm}{b}{s}", "arm": arm, "batch_size": b, "seed": s,
                             "step": 100, "lr": 0.1, "lambda_max": 10 * (b / 128) ** exponent
                             * np.exp(0.05 * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_sharpness_trend_flips() -> None:
    _, v = ch08.sharpness_trend_test(_end_sharp(0.3))
    assert v.outcome == "supported", v.sentence
    _, v = ch08.sharpness_trend_test(_end_sharp(-0.3))
    assert v.outcome == "contradicted"
    _, v = ch08.sharpness_trend_test(_end_sharp(0.3, seeds=1))
    assert v.outcome == "inconclusive"
    rates = ch08.sharpness_trend_rates(n_seeds=3, n_arms=2, n_sizes=4, effect=0.25,
                                       noise_sd=0.1, noise_source="constructed", alpha=0.05,
                                       n_sim=2000)
    assert rates.false_positive <= 0.05 and rates.power > 0.8
    _, v = ch08.sharpness_trend_test(_end_sharp(0.3), rates=rates)
    assert v.false_positive_rate == rates.false_positive and "power" in v.sentence
    assert_typeset(v)


# --------------------------------------------------------------------------- steps, records


def test_steps_to_target_names_the_budget() -> None:
    recs = pd.concat([real_gap(), _tail_runs("D-plain", 32768, -0.01).assign(max_steps=250)])
    table, lines = ch08.steps_to_target(recs, 0.10)
    assert table.set_index(["arm", "B"]).loc[("B", 128), "reached"] == 3
    assert any(line.startswith("Arm B, test error ≤ 10% within 30 epochs") for line in lines)
    assert any("within 250 steps" in line for line in lines)


def test_first_step_below_interpolates_in_log_steps() -> None:
    s = np.array([10.0, 100.0])
    e = np.array([0.3, 0.1])
    assert ch08._first_step_below(s, e, 0.2) == pytest.approx(10 ** 1.5)
    assert ch08._first_step_below(s, e, 0.3) == 10.0
    assert np.isnan(ch08._first_step_below(s, e, 0.05))


def test_protocol_table_uses_drop_last() -> None:
    t = ch08.protocol_table(50_000, [128, 32_768], epochs=30, lr=0.1)
    assert list(t["steps/epoch"]) == [390, 1]
    assert list(t["steps S"]) == [11_700, 30]
    assert t["(N-B)/(N-1)"].iloc[1] == pytest.approx(17_232 / 49_999)
    with pytest.raises(ValueError, match="batch size must be in"):
        ch08.protocol_table(100, [200], epochs=1, lr=0.1)


def test_required_columns_are_those_the_sweep_writes() -> None:
    from sgdnoise import sweep

    assert set(ch08.REQUIRED_RECORD_COLUMNS) <= set(sweep.RECORD_COLUMNS)
    assert set(ch08.REQUIRED_SHARPNESS_COLUMNS) <= set(sweep.SHARPNESS_COLUMNS)


def test_pilot_records_are_shown_not_decided() -> None:
    pilot = ch08.load_recorded([str(ROOT / "data" / "results" / "ch08_pilot")])
    assert set(ch08.REQUIRED_RECORD_COLUMNS) <= set(pilot.columns)
    assert len(ch08.final_points(pilot)) == 18  # 9 batch sizes x 2 seeds
    assert "H200" in ch08.records_scale(pilot)
    summary = ch08.pilot_summary(pilot)
    assert list(summary["B"]) == [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert (summary["seeds"] == 2).all()


def test_records_without_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        ch08.final_points(pd.DataFrame({"arm": ["A"]}))


def test_budget_text() -> None:
    assert ch08.budget_text(real_gap(), "B") == "within 30 epochs"
    recs = _tail_runs("D-plain", 32768, 0.0).assign(max_steps=250)
    assert ch08.budget_text(recs, "D-plain") == "within 250 steps"
    assert ch08.budget_text(recs, "A") == "within its budget"


# --------------------------------------------------------------------------- parameters


def _cell_values() -> dict:
    import ast

    import jupytext

    nb = jupytext.read(ROOT / "book" / "chapters" / "ch08_resnet_sweep.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}


@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_profiles_are_valid_params(profile: str) -> None:
    p = ch08.Params.from_yaml(PARAMS / f"{profile}.yaml")
    assert p.profile == profile
    # the thresholds are the same at every scale
    assert (p.loss_tolerance, p.gap_margin, p.alpha) == (0.02, 0.01, 0.05)
    assert p.onset_fraction == pytest.approx(4096 / 50_000)


def test_default_profile_equals_the_parameters_cell() -> None:
    import yaml

    default = yaml.safe_load((PARAMS / "default.yaml").read_text())
    assert _cell_values() == default


def test_bad_parameters_are_named() -> None:
    values = _cell_values()
    with pytest.raises(ValueError, match="'below_fraction'"):
        ch08.Params.from_mapping({**values, "below_fraction": 0.9})
    with pytest.raises(ValueError, match="'plan'"):
        ch08.Params.from_mapping({**values, "plan": "plan.txt"})
    with pytest.raises(ValueError, match="'gap_margin'"):
        ch08.Params.from_mapping({**values, "gap_margin": 0.0})
    with pytest.raises(ValueError, match="'gap_effect'"):
        ch08.Params.from_mapping({**values, "gap_effect": 0.005})
    with pytest.raises(ValueError, match="'alpha'"):
        ch08.Params.from_mapping({**values, "alpha": 0.5})
    with pytest.raises(ValueError, match="unknown parameter"):
        ch08.Params.from_mapping({**values, "n_train": 5})


@pytest.mark.parametrize("plan", ["plan_laptop.yaml", "plan_smoke.yaml"])
def test_miniature_plan_equal_steps_arm(plan: str) -> None:
    from sgdnoise.sweep import load_plan

    path = PARAMS / plan
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


def test_load_recorded_leaves_out_the_eta_tuning_runs(tmp_path, monkeypatch):
    """Tuning runs (arm ``X-tune``) are evaluated on a validation split: they never enter
    the chapter's record frame, whose test errors must all be test-set numbers."""
    from sgdnoise import sweep

    frame = pd.DataFrame({"arm": ["A", "B-tune", "B"], "run_id": ["a", "t", "b"]})
    monkeypatch.setattr(sweep, "load_records", lambda dirs: frame)
    got = ch08.load_recorded([str(tmp_path)])
    assert list(got["arm"]) == ["A", "B"]


def test_planning_spread_takes_the_first_measured_spread_and_refuses_none():
    """The full-scale rates use the records' own spread when it has >= 2 degrees of
    freedom, else the mid-scale one, else the pilot's; none measured is an error."""
    from sgdnoise.decide.scenarios import Spread

    def sp(sd: float, df: int, src: str) -> Spread:
        return Spread(sd_test_error=sd, sd_log_train_loss=0.1, sd_train_loss=0.01, df=df,
                      n_groups=2, source=src)

    own, mid, pilot = sp(0.002, 1, "own"), sp(0.0067, 10, "mid"), sp(0.039, 9, "pilot")
    assert ch08.planning_spread([own, mid, pilot]).source == "mid"
    assert ch08.planning_spread([sp(0.002, 4, "own"), mid, pilot]).source == "own"
    assert ch08.planning_spread([None, None, pilot]).source == "pilot"
    assert ch08.planning_spread([None, sp(float("nan"), 5, "m"), pilot]).source == "pilot"
    with pytest.raises(ValueError, match="degrees of freedom"):
        ch08.planning_spread([None, own])


def test_plan_scale_names_the_plans_model_data_and_pixels(tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text("name: m\ndata: {dataset: cifar10, n_train: 10000, image_size: 16}\n"
                    "defaults: {model: resnet20, width: 16}\narms: {A: {batch_sizes: [26]}}\n")
    s = ch08.plan_scale(str(plan), pd.DataFrame(), kind="mid-scale CPU records",
                        section="sec-x", target=0.5)
    assert s.claim_prefix == "ResNet20 width 16, 10,000 CIFAR-10 images at 16×16, CPU"
    assert s.label == "mid-scale CPU records (none)" and s.plan == str(plan)
    plan.write_text(plan.read_text().replace(", image_size: 16", ""))
    assert "at 16" not in ch08.plan_scale(str(plan), pd.DataFrame(), kind="k", section="s",
                                          target=0.5).claim_prefix


def test_midscale_records_are_read_and_decided_at_their_own_scale():
    """The committed mid-scale records load, have a measured spread, pre-register the pairs
    at the full plan's B/N, and every verdict names their scale. Arm A's large batches end
    with a higher train loss than B = 26 after 30 epochs, so they are compared with the small
    batch's curve at the same train loss, never at the end points."""
    from sgdnoise.decide import scenarios as ds

    root = PARAMS.parents[2] / "data" / "results" / "ch08_midscale"
    rec = ch08.load_recorded([str(root)])
    if len(rec) == 0:
        pytest.skip("no mid-scale records")
    spread = ds.measure_spread(rec, "mid-scale")
    assert spread.df >= 2 and 0 < spread.sd_test_error < 0.05
    p = ch08.Params.from_yaml(PARAMS / "default.yaml")
    scale = ch08.plan_scale(str(PARAMS / "plan_midscale.yaml"), rec, kind="mid-scale CPU "
                            "records", section="sec-ch8-midscale", target=p.target_midscale)
    res = ch08.analyse(rec, None, p, scale, spread=spread)
    calls = res.decision.table
    a = calls[calls["arm"] == "A"]
    assert list(a["pre-registered"]) == list(a["B"] / 10_000 >= p.onset_fraction)
    big = a[a["B"] >= 832]
    assert len(big) and set(big["fit"]) == {"worse"}
    assert set(big["compared at"]) == {"matched train loss"}
    assert all(v.scale == scale.label for v in res.verdicts)


def test_midscale_note_counts_the_recorded_runs(tmp_path):
    plan = PARAMS / "plan_midscale.yaml"
    empty = ch08.midscale_note(pd.DataFrame(), str(plan))
    assert empty.startswith("Mid scale on a CPU (ResNet20 width 16, 10,000 images): 0 of ")
    rec = ch08.load_recorded([str(PARAMS.parents[2] / "data" / "results" / "ch08_midscale")])
    if len(rec):
        n = rec["run_id"].nunique()
        assert f": {n} of the plan's" in ch08.midscale_note(rec, str(plan))


def test_records_scale_writes_old_thread_counts_in_words():
    df = pd.DataFrame({"device": ["cpu: x86_64 (1 threads)", "cpu: x86_64 (2 threads)"],
                       "git_commit": ["abc", "abc"], "created_utc": ["2026-12-07"] * 2,
                       "source": ["run", "run"]})
    label = ch08.records_scale(df, "mid-scale CPU records")
    assert "x86_64, 1 thread" in label and "x86_64, 2 threads" in label
    assert "threads)" not in label


def test_tuned_at_edge_names_runs_tuned_to_the_grids_end(tmp_path):
    import json

    def rec(name: str, factor: float, factors=(0.5, 1.0, 2.0)) -> None:
        cands = [{"lr_factor": f, "run_id": f"t{f}", "status": "finished",
                  "final_validation_error": 0.3} for f in factors]
        (tmp_path / f"{name}.json").write_text(json.dumps({
            "run": {"arm": "B", "batch_size": 4096, "seed": 1},
            "lr_choice": {"factor": factor, "candidates": cands}}))

    rec("a", 1.0)
    assert ch08.tuned_at_edge([str(tmp_path)]) == []
    rec("b", 2.0)
    rec("c", 0.5)
    assert ch08.tuned_at_edge([str(tmp_path)]) == [
        "arm B at B = 4,096, seed 1: factor 2, the largest tried",
        "arm B at B = 4,096, seed 1: factor 0.5, the smallest tried"]
    (tmp_path / "README.md").write_text("not a record")
    assert len(ch08.tuned_at_edge([str(tmp_path), str(tmp_path / "missing")])) == 2


# ----------------------------------------------------- the ghost-BatchNorm control


def _finals(rows: list[tuple[str, int, int, float, float]]) -> pd.DataFrame:
    """One evaluation per run: (arm, B, seed, train error, test error)."""
    return pd.DataFrame([dict(arm=a, batch_size=b, seed=s, run_id=f"{a}_B{b}_s{s}", step=10,
                              epoch=30.0, train_loss=0.1, train_error=tr, test_error=te,
                              status="finished") for a, b, s, tr, te in rows])


def test_control_pairs_and_its_sentence_flip_at_the_stated_threshold() -> None:
    spread = ds.Spread(0.01, 0.1, 0.01, 20, 4, "constructed")  # limit 2·√2·1 = 2.83 points
    base = [("A", 832, 0, 0.30, 0.58), ("A", 832, 1, 0.30, 0.59), ("A", 1664, 0, 0.45, 0.58),
            ("B", 832, 0, 0.0, 0.42)]
    far = ch08.control_comparison(_finals(base + [("A-ghost", 832, 0, 0.28, 0.54),
                                                  ("A-ghost", 1664, 0, 0.43, 0.55)]),
                                  "A-ghost", "A")
    assert list(far["B"]) == [832, 1664] and list(far["seed"]) == [0, 0]
    np.testing.assert_allclose(far["diff"], [-0.04, -0.03])
    text = ch08.control_sentence(far, spread, what="the BatchNorm batch")
    assert "2.8 points" in text and "all beyond it: the BatchNorm batch moves" in text
    assert "shown, not decided on" in text
    near = ch08.control_comparison(_finals(base + [("A-ghost", 832, 0, 0.3, 0.57)]),
                                   "A-ghost", "A")
    assert "all within it: no sign" in ch08.control_sentence(near, spread, what="x")
    mixed = far.assign(diff=[-0.04, 0.01])
    assert "1 of 2 beyond it: mixed" in ch08.control_sentence(mixed, spread, what="x")
    none = ch08.control_comparison(_finals(base), "A-ghost", "A")
    assert len(none) == 0 and "No run of the control" in ch08.control_sentence(
        none, spread, what="x")


def test_control_arms_are_variants_of_a_decisive_arm() -> None:
    assert ch08.control_arms(["A", "A-ghost", "B", "D-plain"], ["A", "B"]) == [("A-ghost", "A")]
    assert ch08.control_arms(["A-ghost"], ["B"]) == []
