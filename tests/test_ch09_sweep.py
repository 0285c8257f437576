"""Chapter 9's full profile: the GPU sweep's records instead of training in the notebook.

The adapter from sweep records to the chapter's table (:func:`experiment_from_sweep`), the
step costs measured in training, the plan checked against the profile and against chapter
8's gap batch size (the sentence flips with chapter 8's records), and the full-profile
entry point on a complete and on a partial set of records (missing runs named, their
verdicts inconclusive). Records come from the tiny CPU plan plan_test.yaml, run once."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
from conftest import profile_params
from test_ch08 import real_gap, under_training

from sgdnoise import sweep
from sgdnoise.chapters import ch09_anisotropic_noise as ch09
from sgdnoise.noise import KINDS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "book" / "params" / "ch09_anisotropic_noise"
PLAN_TEST = PARAMS / "plan_test.yaml"
PLAN_FULL = PARAMS / "plan_full.yaml"
GOALS = ch09.cost_goals(1.5, 3.0)


def plan_test_params(records_dir: Path, **changes) -> ch09.Params:
    """The profile that plan_test.yaml runs (the smoke profile at the plan's scale)."""
    values = dict(dataset="synthetic", n_train=48, n_test=32, model="cnn", width=4,
                  norm="group", small_batch=8, large_batch=24, epochs=2, lr=0.05,
                  momentum=0.9, seeds=[0, 1], epoch_matched_kinds=["subsampled"],
                  equal_steps=True, step_matched_kinds=["subsampled"], num_samples=8,
                  moment_samples=8, moment_probes=2, curvature_samples=6, lanczos_steps=3,
                  sharpness_examples=16, sharpness_iters=4, plan=str(PLAN_TEST),
                  records_dir=str(records_dir), ch08_records_dirs=[],
                  ch08_params=str(ROOT / "book" / "params" / "ch08_resnet_sweep" / "full.yaml"))
    values.update(changes)
    return profile_params(ch09.Params, "ch09_anisotropic_noise", **values)




def notebook_configs(p: ch09.Params) -> list[ch09.NoiseConfig]:
    """The notebook's configs cell."""
    step_epochs = (ch09.step_matched_epochs(p.n_train, p.small_batch, p.large_batch, p.epochs)
                   if p.equal_steps else None)
    return ch09.build_configs(
        p.small_batch, p.large_batch, p.kinds, num_samples=p.num_samples,
        moment_samples=p.moment_samples, curvature_samples=p.curvature_samples,
        lanczos_steps=p.lanczos_steps, num_examples=p.n_train,
        epoch_matched_kinds=p.epoch_matched_kinds, moment_probes=p.moment_probes or None,
        step_matched_epochs=step_epochs, step_matched_kinds=p.step_matched_kinds)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ch09_records")
    sweep.run_plan(PLAN_TEST, out, log=lambda msg: None)
    return out


# --------------------------------------------------------------------------- the adapter


def test_adapter_builds_the_records_frame_of_the_notebook(recorded):
    runs, sharp = sweep.load_records(recorded), sweep.load_sharpness(recorded)
    p = plan_test_params(recorded)
    configs = notebook_configs(p)
    exp = ch09.experiment_from_sweep(runs, sharp, small_batch=8, large_batch=24,
                                     order=[c.label for c in configs])
    rec = exp.records
    assert tuple(rec.columns) == ch09.EXPERIMENT_COLUMNS and exp.models == {}
    # every configuration of the notebook, in its order, two seeds each
    assert list(dict.fromkeys(rec["label"])) == [c.label for c in configs]
    assert rec.groupby("label").size().eq(2).all()
    by = {(r.label, r.seed): r for r in rec.itertuples()}
    for c in configs:
        row = by[(c.label, 0)]
        assert (row.kind, row.budget, row.batch_size) == (c.kind, c.budget, c.batch_size)
        assert row.injection_scale == pytest.approx(c.injection_scale)
        assert row.epochs == (c.epochs or p.epochs)
    # the numbers are the records' last evaluation and final sharpness
    one = runs[runs["run_id"] == "LB-hessian_B00024_s1"].sort_values("step").iloc[-1]
    row = by[("LB + hessian", 1)]
    assert (row.test_error, row.train_error, row.steps) == (
        one["test_error"], one["train_error"], one["steps_total"])
    lam = sharp[sharp["run_id"] == "LB-hessian_B00024_s1"].sort_values("step").iloc[-1]
    assert row.sharpness == lam["lambda_max"] and row.noise_seconds > 0
    assert by[(ch09.SMALL, 0)].noise_seconds == 0 and by[(ch09.LARGE_STEPS, 0)].steps == 12
    # the curves hold every evaluation with the label
    assert len(exp.curves) == len(runs) and set(exp.curves["label"]) == set(rec["label"])
    # and the chapter's statistics run on it unchanged
    for budget, large in ((ch09.EQUAL_EPOCHS, ch09.LARGE), (ch09.EQUAL_STEPS,
                                                           ch09.LARGE_STEPS)):
        controls = tuple(lab for lab in set(rec["label"]) if lab.endswith("(epoch T)"))
        test = ch09.gap_test(ch09.budget_records(rec, budget), fraction=0.5, alpha=0.05,
                             small_label=ch09.SMALL, large_label=large, controls=controls)
        v = ch09.gap_verdict(test, budget=budget, scale="t")
        assert v.outcome in ("inconclusive", "supported", "contradicted")
        assert v.kind == "claim about SGD"
    summary = ch09.summarize(rec)
    assert list(summary["label"]) == [c.label for c in configs]


def test_adapter_labels_and_empty_records():
    assert ch09.sweep_label("none", 8, equal_steps=False, matched_small_batch=None,
                            injection_scale=0.0, small_batch=8, large_batch=24) == ch09.SMALL
    assert ch09.sweep_label("ggn", 24, equal_steps=True, matched_small_batch=8,
                            injection_scale=0.1, small_batch=8, large_batch=24) == \
        "LB + ggn (equal steps)"
    assert ch09.sweep_label("ggn", 24, equal_steps=False, matched_small_batch=None,
                            injection_scale=ch09.epoch_matched_injection_scale(8, 24),
                            small_batch=8, large_batch=24) == "LB + ggn (epoch T)"
    assert ch09.sweep_label("ggn", 24, equal_steps=False, matched_small_batch=None,
                            injection_scale=ch09.epoch_matched_injection_scale(8, 24, 48),
                            small_batch=8, large_batch=24, num_examples=48) == \
        "LB + ggn (epoch T)"
    assert ch09.sweep_label("ggn", 24, equal_steps=False, matched_small_batch=None,
                            injection_scale=0.5, small_batch=8, large_batch=24) == \
        "LB + ggn (T = 0.5)"
    empty = ch09.experiment_from_sweep(sweep.load_records([]), None, small_batch=8,
                                       large_batch=24)
    assert empty.records.empty and tuple(empty.records.columns) == ch09.EXPERIMENT_COLUMNS
    assert empty.curves.empty and "step" in empty.curves.columns
    assert list(ch09.summarize(empty.records).columns)[:2] == ["label", "kind"]


def test_recorded_step_costs_are_relative_to_plain_large_batch(recorded):
    runs = sweep.load_records(recorded)
    costs = ch09.recorded_step_costs(runs, GOALS, large_batch=24)
    assert list(costs.columns) == ["kind", "num_samples", "seconds", "ratio", "goal",
                                   "meets_goal"]
    assert list(costs["kind"]) == list(KINDS)
    base = runs[(runs["arm"] == "LB")].groupby("run_id")["seconds_per_step"].first().median()
    assert costs.set_index("kind").loc["none", "ratio"] == 1.0
    hess = runs[runs["arm"] == "LB-hessian"].groupby("run_id")["seconds_per_step"].first()
    assert costs.set_index("kind").loc["hessian", "ratio"] == pytest.approx(
        hess.median() / base)
    assert costs.set_index("kind").loc["hessian", "num_samples"] == 6
    # without plain large-batch SGD no ratio exists, and the cost text says so
    no_base = ch09.recorded_step_costs(runs[runs["arm"] != "LB"], GOALS, large_batch=24)
    assert no_base.empty
    assert ch09.cost_summary(no_base, GOALS) == "No noisy step was timed."


# --------------------------------------------------------------------------- plan checks


def test_full_plan_is_the_full_profile():
    p = ch09.Params.from_yaml(PARAMS / "full.yaml")
    plan = sweep.load_plan(PLAN_FULL, check_device=False)
    assert ch09.plan_mismatches(plan, p, notebook_configs(p)) == []
    assert ch09.plan_large_batch(plan) == p.large_batch
    assert (PARAMS / p.plan.removeprefix("../params/ch09_anisotropic_noise/")).exists()


def test_test_plan_is_its_profile_and_mismatches_are_named(recorded):
    p = plan_test_params(recorded)
    plan = sweep.load_plan(PLAN_TEST)
    assert ch09.plan_mismatches(plan, p, notebook_configs(p)) == []
    other = plan_test_params(recorded, lr=0.1, num_samples=16, kinds=["subsampled", "ggn"],
                        seeds=[0, 1, 2], epoch_matched_kinds=[])
    found = " | ".join(ch09.plan_mismatches(plan, other, notebook_configs(other)))
    assert "lr = 0.05 (profile: 0.1)" in found
    assert "LB + subsampled: s = " in found and "M = 16" in found
    assert "seeds [0, 1] (profile: [0, 1, 2])" in found
    assert "arm for 'LB + hessian', which the profile does not run" in found


def test_chapter_8_gap_batch_size_flips_the_plan_sentence():
    # chapter 8's thresholds come from chapter 8's parameter file, not from copies
    from sgdnoise.chapters import ch08_resnet_sweep as ch08

    path = ROOT / "book" / "params" / "ch08_resnet_sweep" / "full.yaml"
    th = ch09.ch08_thresholds(str(path))
    p8 = ch08.Params.from_yaml(path)
    assert (th.loss_tolerance, th.margin, th.alpha) == (p8.loss_tolerance, p8.gap_margin,
                                                        p8.alpha)
    assert ch09.Params.from_yaml(PARAMS / "full.yaml").ch08_params.endswith(
        "ch08_resnet_sweep/full.yaml")
    found = ch09.ch08_gap_batch_size(real_gap(), th)
    assert found == 4096
    assert ch09.ch08_gap_batch_size(under_training(), th) is None
    assert ch09.ch08_gap_batch_size(sweep.load_records([]), th) is None
    # a margin above the gap's size finds no gap: the thresholds are used
    wide = dataclasses.replace(th, margin=0.5)
    assert ch09.ch08_gap_batch_size(real_gap(), wide) is None
    assert ch09.plan_batch_sentence(4096, found).startswith(
        "Plan B = 4,096 agrees with chapter 8's gap batch size")
    none = ch09.plan_batch_sentence(12800, ch09.ch08_gap_batch_size(under_training(), th))
    assert none.startswith("Chapter 8's records do not yet locate a gap; plan B = 12,800 is "
                           "provisional") and "nothing on this page says" in none
    assert "`" not in ch09.plan_batch_sentence(12800, found)
    assert "locate the gap at B = 4,096; plan B = 12,800 does not agree" in \
        ch09.plan_batch_sentence(12800, found)


# --------------------------------------------------------------------------- the full profile


def test_recorded_experiment_on_complete_records(recorded):
    p = plan_test_params(recorded)
    exp = ch09.recorded_experiment(p, notebook_configs(p), GOALS)
    assert exp.records["label"].nunique() == len(notebook_configs(p))
    assert "runs exactly the configurations" in exp.notes
    assert "22 of the 22 runs of plan `ch09-test`" in exp.notes and "None is missing" in exp.notes
    assert "plan B = 24 is provisional" in exp.notes  # no chapter 8 records given
    # figures and verdicts name the records (device, commit, date), not the laptop
    assert exp.source.startswith("recorded GPU runs (") and exp.source in exp.notes
    assert ch09.budgets_with_records(exp.records, True) == [ch09.EQUAL_EPOCHS,
                                                             ch09.EQUAL_STEPS]
    assert ch09.unrecorded_gap_verdicts(exp.records, True, fraction=0.5, scale="t") == []
    assert ch09.step_costs(p, None, GOALS, exp) is exp.costs


def test_recorded_experiment_names_missing_runs_and_stale_records(recorded, tmp_path):
    part = tmp_path / "records"
    shutil.copytree(recorded, part)
    for run_id in ("SB_B00008_s1", "LB-steps_B00024_s0", "LB-steps_B00024_s1"):
        (part / f"{run_id}.json").unlink()
    stale = (part / "LB_B00024_s0.json").read_text().replace('"lr": 0.05', '"lr": 0.07')
    (part / "LB_B00024_s0.json").write_text(stale)
    p = plan_test_params(part)
    exp = ch09.recorded_experiment(p, notebook_configs(p), GOALS)
    assert "18 of the 22 runs" in exp.notes
    assert "Missing: LB (B = 24) seed 0; SB (B = 8) seed 1; LB-steps (B = 24) seeds 0, 1." in \
        exp.notes  # plan order; the stale record counts as missing
    assert "1 record(s) of other runs or configs" in exp.notes
    rec = exp.records
    assert ch09.LARGE_STEPS not in set(rec["label"])
    assert ch09.budgets_with_records(rec, True) == [ch09.EQUAL_EPOCHS]
    (v,) = ch09.unrecorded_gap_verdicts(rec, True, fraction=0.5, scale="t")
    assert v.outcome == "inconclusive" and "equal steps" in v.claim
    assert v.sentence == "Not tested at equal steps: no record of large-batch SGD (equal steps)."
    # one seed of small-batch SGD: the equal-epochs analysis runs, nothing is significant
    test = ch09.gap_test(ch09.budget_records(rec, ch09.EQUAL_EPOCHS), fraction=0.5,
                         alpha=0.05, small_label=ch09.SMALL, large_label=ch09.LARGE,
                         controls=("LB + subsampled (epoch T)",))
    verdict = ch09.gap_verdict(test, budget=ch09.EQUAL_EPOCHS, scale="t")
    assert verdict.outcome == "inconclusive" and test.n_seeds == 0  # no seed has both
    assert ch09.rates_for(test, rec, n_sim=100) is None  # one seed: no error rates


def test_recorded_experiment_without_records_is_empty_and_inconclusive(tmp_path):
    p = plan_test_params(tmp_path / "nothing")
    exp = ch09.recorded_experiment(p, notebook_configs(p), GOALS)
    assert exp.records.empty and exp.costs.empty
    assert exp.source.startswith("recorded GPU runs: none yet")
    assert "0 of the 22 runs" in exp.notes and "has not run yet" in exp.notes
    assert ch09.budgets_with_records(exp.records, True) == []
    verdicts = ch09.unrecorded_gap_verdicts(exp.records, True, fraction=0.5, scale="t")
    assert [v.outcome for v in verdicts] == ["inconclusive"]  # equal steps only: decided
    assert "equal steps" in verdicts[0].claim
    assert "no record of small-batch SGD, large-batch SGD (equal steps), any noisy " \
        "configuration" in verdicts[0].sentence
    (off,) = ch09.unrecorded_gap_verdicts(exp.records, False, fraction=0.5, scale="t")
    assert off.outcome == "inconclusive" and "does not run the equal-steps" in off.sentence
    d = ch09.unmeasured_directions(p.kinds, 2)
    assert ch09.directions_text(d, 8) == ch09.NO_DIRECTIONS
    assert all(math.isnan(x) for x in d["ratio"])
    assert dataclasses.fields(exp)  # a NoiseExperiment
