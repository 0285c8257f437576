"""Chapter 9 at the full profile: the GPU sweep's records instead of training in the
notebook. Sweep records become the chapter's frames (:func:`experiment_from_sweep`), the
plan is reconciled with the profile and with chapter 8's gap batch size, and the runs
that are missing are named (:func:`recorded_experiment`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sgdnoise import sweep
from sgdnoise.chapters import ch08_resnet_sweep as ch08
from sgdnoise.decide import calls as dc
from sgdnoise.noise import KINDS, NoiseSpec
from sgdnoise.sweep.records import record_mismatch
from sgdnoise.train import steps_per_epoch, total_steps

from .experiment import (
    CURVE_FIELDS,
    EXPERIMENT_COLUMNS,
    NoiseConfig,
    NoiseExperiment,
    epoch_matched_injection_scale,
)
from .params import EQUAL_EPOCHS, EQUAL_STEPS, LARGE, LARGE_STEPS, SMALL, STEPS_SUFFIX, Params

__all__ = [
    "ch08_gap_batch_size",
    "ch08_thresholds",
    "experiment_from_sweep",
    "missing_runs_markdown",
    "plan_batch_sentence",
    "plan_large_batch",
    "plan_mismatches",
    "recorded_experiment",
    "recorded_step_costs",
    "sweep_label",
]

def sweep_label(kind: str, batch_size: int, *, equal_steps: bool,
                matched_small_batch: int | None, injection_scale: float, small_batch: int,
                large_batch: int, num_examples: int | None = None) -> str:
    """The chapter's label of one sweep run (the labels of :func:`build_configs`): plain SGD
    at b is :data:`SMALL`, at B :data:`LARGE` (or :data:`LARGE_STEPS` with ``equal_steps``);
    noise at B is ``"LB + <kind>"``, suffixed " (epoch T)" at the epoch-matched scale
    (:func:`epoch_matched_injection_scale` with N = ``num_examples``, or its large-N form),
    " (T = s)" at any scale other than the step-matched
    one of ``matched_small_batch = b``, and " (equal steps)" with ``equal_steps``. Other
    batch sizes are named by their size."""
    steps = STEPS_SUFFIX if equal_steps else ""
    if kind == "none":
        if batch_size == small_batch and not equal_steps:
            return SMALL
        if batch_size == large_batch:
            return LARGE_STEPS if equal_steps else LARGE
        return f"SGD, B = {batch_size}{steps}"
    base = f"LB + {kind}" if batch_size == large_batch else f"B = {batch_size} + {kind}"
    if matched_small_batch is not None and int(matched_small_batch) == small_batch:
        scale = ""
    elif _is_epoch_scale(injection_scale, small_batch, batch_size, num_examples):
        scale = " (epoch T)"
    else:
        scale = f" (T = {injection_scale:.3g})"
    return base + scale + steps


def _is_epoch_scale(s: float, small_batch: int, batch_size: int,
                    num_examples: int | None) -> bool:
    """Whether ``s`` is the epoch-matched scale of b and B (with N, or in its large-N form)."""
    if small_batch > batch_size:
        return False
    forms = [epoch_matched_injection_scale(small_batch, batch_size)]
    if num_examples is not None and num_examples >= max(batch_size, 2):
        forms.append(epoch_matched_injection_scale(small_batch, batch_size, num_examples))
    return any(math.isclose(s, t, rel_tol=1e-9) for t in forms)


def _na(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def experiment_from_sweep(
    runs: pd.DataFrame,
    sharpness: pd.DataFrame | None = None,
    *,
    small_batch: int,
    large_batch: int,
    order: Sequence[str] = (),
) -> NoiseExperiment:
    """The adapter from sweep records to the chapter's frames: ``runs`` as read by
    :func:`sgdnoise.sweep.load_records` (one row per run × evaluation, with the noise
    columns) and ``sharpness`` by :func:`sgdnoise.sweep.load_sharpness`, to a
    :class:`NoiseExperiment` whose ``records`` have :data:`EXPERIMENT_COLUMNS` (what
    :func:`run_noise_experiment` writes, so :func:`summarize`, :func:`gap_test`,
    :func:`verdict_table`, … apply unchanged) and whose ``curves`` hold every evaluation.

    Per run: ``label`` by :func:`sweep_label` (b, B = ``small_batch``, ``large_batch``;
    equal steps = the run has ``max_steps``), ``kind`` its noise kind ("none": plain SGD),
    ``budget`` :data:`EQUAL_STEPS` for runs with ``max_steps`` else :data:`EQUAL_EPOCHS`,
    ``epochs`` and the errors and losses of its last evaluation (the train numbers are on
    the plan's evaluation subset), ``injection_scale`` s, ``sharpness`` the
    λ_max measured at its last step (NaN when none, or when the run did not finish),
    ``wall_time_s`` the wall time at its last evaluation, ``noise_seconds`` and
    ``seconds_per_step = wall_time_s / steps``. Rows follow ``order`` (labels; others after
    them), then the seed. ``models`` is empty: the sweep keeps no network."""
    curve_cols = ["label", "kind", "budget", "seed", *CURVE_FIELDS]
    if runs.empty:
        return NoiseExperiment(pd.DataFrame(columns=list(EXPERIMENT_COLUMNS)),
                               pd.DataFrame(columns=curve_cols))
    lam: dict[str, float] = {}
    if sharpness is not None and len(sharpness):
        last_sharp = sharpness.sort_values("step").groupby("run_id").tail(1)
        lam = dict(zip(last_sharp["run_id"], last_sharp["lambda_max"], strict=True))
    rows, labels = [], {}
    for run_id, g in runs.sort_values("step").groupby("run_id", sort=False):
        last = g.iloc[-1]
        equal_steps = not _na(last["max_steps"])
        label = sweep_label(
            str(last["noise_kind"]), int(last["batch_size"]), equal_steps=equal_steps,
            matched_small_batch=None if _na(last["matched_small_batch"])
            else int(last["matched_small_batch"]),
            injection_scale=float(last["injection_scale"]), small_batch=small_batch,
            large_batch=large_batch, num_examples=None if _na(last.get("n_train"))
            else int(last["n_train"]))
        labels[run_id] = (label, str(last["noise_kind"]),
                          EQUAL_STEPS if equal_steps else EQUAL_EPOCHS)
        steps = int(last["steps_total"])
        wall = float(last["wall_time"])
        rows.append(dict(
            label=label, kind=str(last["noise_kind"]), budget=labels[run_id][2],
            batch_size=int(last["batch_size"]), epochs=float(last["epoch"]),
            injection_scale=float(last["injection_scale"]), seed=int(last["seed"]),
            status=str(last["status"]), steps=steps, train_error=last["train_error"],
            test_error=last["test_error"], train_loss=last["train_loss"],
            test_loss=last["test_loss"],
            sharpness=float(lam.get(run_id, math.nan)) if last["status"] == "finished"
            else math.nan,
            wall_time_s=wall, noise_seconds=float(last["noise_seconds"]),
            seconds_per_step=wall / max(steps, 1)))
    rank = {lab: i for i, lab in enumerate(order)}
    records = pd.DataFrame(rows, columns=list(EXPERIMENT_COLUMNS))
    records = records.assign(_r=[rank.get(lab, len(rank)) for lab in records["label"]])
    records = records.sort_values(["_r", "label", "seed"], kind="stable").drop(columns="_r")
    curves = runs.assign(label=[labels[r][0] for r in runs["run_id"]],
                         kind=[labels[r][1] for r in runs["run_id"]],
                         budget=[labels[r][2] for r in runs["run_id"]])[curve_cols]
    curves = curves.assign(_r=[rank.get(lab, len(rank)) for lab in curves["label"]])
    curves = curves.sort_values(["_r", "label", "seed", "step"], kind="stable").drop(
        columns="_r")
    return NoiseExperiment(records.reset_index(drop=True), curves.reset_index(drop=True))


def recorded_step_costs(runs: pd.DataFrame, goals: Mapping[str, float], *,
                        large_batch: int) -> pd.DataFrame:
    """Step costs measured in training (the GPU sweep's records, :func:`sgdnoise.sweep.
    load_records`): per noise kind, the median over its equal-epochs runs at batch
    ``large_batch`` of the training seconds per step (``seconds_per_step``: forward,
    backward, noise and update), over that of plain large-batch SGD. The columns of
    :func:`measure_step_costs` (kind, num_samples, seconds, ratio, goal, meets_goal); only
    kinds with a finite ratio appear (none at all without a timed plain large-batch run)."""
    cols = ["kind", "num_samples", "seconds", "ratio", "goal", "meets_goal"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    last = runs.sort_values("step").groupby("run_id", sort=False).tail(1)
    last = last[(last["batch_size"] == large_batch) & last["max_steps"].isna()]
    sec = last.groupby("noise_kind")["seconds_per_step"].median()
    base = sec.get("none", math.nan)
    rows = []
    for kind in KINDS:
        if kind not in sec or not (np.isfinite(sec[kind]) and np.isfinite(base) and base > 0):
            continue
        m = last.loc[last["noise_kind"] == kind, "noise_num_samples"]
        goal = float(goals.get(kind, math.nan))
        ratio = float(sec[kind] / base)
        rows.append(dict(kind=kind, num_samples=0 if kind == "none" or m.isna().all()
                         else int(m.dropna().iloc[0]),
                         seconds=float(sec[kind]), ratio=ratio, goal=goal,
                         meets_goal=(ratio <= goal) if np.isfinite(goal) else None))
    return pd.DataFrame(rows, columns=cols)


def ch08_gap_batch_size(records: pd.DataFrame, thresholds: dc.Thresholds) -> int | None:
    """The batch size at which chapter 8's decision procedure finds a generalization gap:
    :func:`sgdnoise.decide.calls.decide` on chapter 8's records (loaded with
    :func:`sgdnoise.sweep.load_records`; ``N`` from their ``n_train`` column) with chapter
    8's ``thresholds`` (:func:`ch08_thresholds`), then the smallest batch size whose call
    is ``gap`` (:attr:`sgdnoise.decide.calls.Decision.onset`). None when there is no record
    or no gap."""
    if records.empty:
        return None
    return dc.decide(records, thresholds).onset


def ch08_thresholds(path: str) -> dc.Thresholds:
    """Chapter 8's decision thresholds, from its parameter file at ``path``
    (:func:`sgdnoise.chapters.ch08_resnet_sweep.thresholds` of its ``Params``)."""
    return ch08.thresholds(ch08.Params.from_yaml(path))


def plan_batch_sentence(plan_batch: int, gap_batch: int | None) -> str:
    """Whether the plan's large batch B is chapter 8's gap batch size
    (:func:`ch08_gap_batch_size`), as one sentence."""
    if gap_batch is None:
        return (f"Chapter 8's records do not yet locate a gap; plan B = {plan_batch:,} is "
                "provisional (the value of the full profile), and nothing on this page says "
                "that chapter 8 finds a gap there.")
    if int(gap_batch) == int(plan_batch):
        return (f"Plan B = {plan_batch:,} agrees with chapter 8's gap batch size (found with "
                "chapter 8's own recipe, which differs from this one).")
    return (f"Chapter 8's records locate the gap at B = {int(gap_batch):,}; plan B = "
            f"{plan_batch:,} does not agree: the plan's large batch and the full profile's "
            f"large batch should become {int(gap_batch):,} (new run ids, so the records "
            "of the old B are not mixed in).")


def plan_large_batch(plan) -> int:
    """The large batch B of a ch09 sweep plan (:class:`sgdnoise.sweep.Plan`): the batch size
    of its noisy runs (the largest batch size when it has none)."""
    noisy = {r.batch_size for r in plan.runs if r.noise is not None}
    if len(noisy) > 1:
        raise ValueError(f"the plan's noisy runs must share one batch size, got {sorted(noisy)}")
    return noisy.pop() if noisy else max(r.batch_size for r in plan.runs)


def _plan_label(run, p: Params) -> str:
    n = run.noise
    return sweep_label("none" if n is None else n.kind, run.batch_size,
                       equal_steps=run.config.max_steps is not None,
                       matched_small_batch=None if n is None else n.matched_small_batch,
                       injection_scale=0.0 if n is None else n.injection_scale,
                       small_batch=p.small_batch, large_batch=p.large_batch,
                       num_examples=p.n_train)


def _used_settings(spec: NoiseSpec) -> tuple[float, int | None, int | None, int | None]:
    """``(s, M, k, r)`` of a noise spec, k and r None where its kind does not use them."""
    k = spec.lanczos_steps if spec.kind == "hessian" else None
    r = spec.moment_probes if spec.kind in ("isotropic", "diag_fisher") else None
    return spec.injection_scale, spec.num_samples, k, r


def _run_mismatches(plan, p: Params) -> list[str]:
    """Where the plan's data and each run's network, η, momentum, augmentation, sharpness
    examples and schedule differ from the profile."""
    out = []
    n = plan.n_train
    if plan.data["dataset"] != p.dataset or n != p.n_train:
        out.append(f"data {plan.data['dataset']} N = {n} (profile: {p.dataset} "
                   f"N = {p.n_train})")
    want = dict(model=p.model, width=p.width, norm=p.norm, lr=p.lr, momentum=p.momentum,
                augment=p.augment, sharpness_n=p.sharpness_examples,
                sharpness_iters=p.sharpness_iters)
    for r in plan.runs:
        out += [f"{r.run_id}: {k} = {getattr(r.config, k)!r} (profile: {v!r})"
                for k, v in want.items() if getattr(r.config, k) != v]
        if r.config.lr_scaling != "none" or r.config.schedule != "constant":
            out.append(f"{r.run_id}: lr_scaling {r.config.lr_scaling!r}, schedule "
                       f"{r.config.schedule!r} (the chapter: one constant η)")
    return out


def _config_mismatches(c: NoiseConfig, runs: list, p: Params, n: int) -> list[str]:
    """Where the plan's runs of configuration ``c`` differ from it: seeds, batch size and
    steps, and the noise settings its kind uses."""
    if not runs:
        return [f"no arm for {c.label!r}"]
    out = []
    seeds = sorted(r.seed for r in runs)
    if seeds != sorted(p.seeds):
        out.append(f"{c.label}: seeds {seeds} (profile: {sorted(p.seeds)})")
    r = runs[0]
    want_steps = (c.epochs or p.epochs) * steps_per_epoch(n, c.batch_size,
                                                          drop_last=r.config.drop_last)
    if r.batch_size != c.batch_size or total_steps(r.config, n) != want_steps:
        out.append(f"{c.label}: B = {r.batch_size}, {total_steps(r.config, n)} steps "
                   f"(notebook: B = {c.batch_size}, {want_steps} steps)")
    if c.noise is not None:
        (s, m, k, probes), want = _used_settings(r.noise), _used_settings(c.noise)
        if not math.isclose(s, want[0], rel_tol=1e-6) or (m, k, probes) != want[1:]:
            out.append(f"{c.label}: s = {s:.6g}, M = {m}, k = {k}, probes = {probes} "
                       f"(notebook: s = {want[0]:.6g}, M = {want[1]}, k = {want[2]}, "
                       f"probes = {want[3]})")
    return out


def plan_mismatches(plan, p: Params, configs: Sequence[NoiseConfig]) -> list[str]:
    """Where a sweep plan (:class:`sgdnoise.sweep.Plan`) differs from the profile ``p`` and
    the configurations the notebook would train (:func:`build_configs`): data, network,
    learning rate, momentum, augmentation, seeds, sharpness examples; per configuration its
    presence, kind, batch size, injection scale, M, Lanczos steps, probes and step count.
    Empty when they agree."""
    by_label: dict[str, list] = {}
    for r in plan.runs:
        by_label.setdefault(_plan_label(r, p), []).append(r)
    out = _run_mismatches(plan, p)
    for c in configs:
        out += _config_mismatches(c, by_label.pop(c.label, []), p, plan.n_train)
    out.extend(f"arm for {lab!r}, which the profile does not run" for lab in by_label)
    return out


def missing_runs_markdown(plan, found: set[str], records_dir: str) -> str:
    """Which of the plan's runs have a record in ``found`` (run ids), as Markdown: a count,
    then the missing ones by arm (their seeds)."""
    missing: dict[tuple[str, int], list[int]] = {}
    for r in plan.runs:
        if r.run_id not in found:
            missing.setdefault((r.arm, r.batch_size), []).append(r.seed)
    have = len(plan.runs) - sum(len(v) for v in missing.values())
    where = re.sub(r"^(\.\./)+", "", str(records_dir))  # relative to the notebook
    text = (f"**Records:** {have} of the {len(plan.runs)} runs of plan `{plan.name}` have a "
            f"record in `{where}`.")
    if not missing:
        return text + " None is missing."
    if not have:
        return (text + " The plan has not run yet: every table and figure of the training "
                "below is empty and every verdict that needs a run is inconclusive.")
    listing = "; ".join(f"{arm} (B = {b:,}) seed{'s' if len(s) > 1 else ''} "
                        f"{', '.join(map(str, sorted(s)))}" for (arm, b), s in missing.items())
    return (text + f" Missing: {listing}. Every comparison that needs a missing run is "
            "left out below, and its verdict is inconclusive.")


def recorded_experiment(p: Params, configs: Sequence[NoiseConfig],
                        goals: Mapping[str, float]) -> NoiseExperiment:
    """The full profile's experiment, read from the GPU sweep's records instead of trained:
    the records of ``p.plan``'s runs in ``p.records_dir`` through
    :func:`experiment_from_sweep` (labels in the order of ``configs``), the step costs
    measured in training (:func:`recorded_step_costs`) and as ``notes`` (Markdown, computed):
    whether the plan's B is chapter 8's gap batch size (:func:`ch08_gap_batch_size` on
    ``p.ch08_records_dirs``, :func:`plan_batch_sentence`), whether the plan agrees with the
    profile (:func:`plan_mismatches`), where the records come from and which are missing
    (:func:`missing_runs_markdown`). Records of run ids the plan does not have, or that
    :func:`sgdnoise.sweep.records.record_mismatch` finds written by another plan, data
    section, config or noise, are left out (and counted)."""
    plan = sweep.load_plan(p.plan, check_device=False)
    expected = {r.run_id: r for r in plan.runs}

    def current(rec: dict) -> bool:  # a record of a run of this plan, as the plan has it
        r = expected.get(rec["run"]["run_id"])
        return r is not None and record_mismatch(rec, plan, r) is None

    records = sweep.read_records(p.records_dir)  # read once, for both frames
    stale = {rec["run"]["run_id"] for rec in records if not current(rec)}
    kept = [rec for rec in records if rec["run"]["run_id"] not in stale]
    runs, sharp = sweep.records_frame(kept), sweep.sharpness_frame(kept)
    exp = experiment_from_sweep(runs, sharp, small_batch=p.small_batch,
                                large_batch=p.large_batch, order=[c.label for c in configs])
    exp.costs = recorded_step_costs(runs, goals, large_batch=p.large_batch)
    gap_b = ch08_gap_batch_size(ch08.load_recorded(list(p.ch08_records_dirs)),
                                ch08_thresholds(p.ch08_params))
    mismatches = plan_mismatches(plan, p, configs)
    notes = [f"**Large batch:** {plan_batch_sentence(plan_large_batch(plan), gap_b)}",
             f"**Plan and profile:** plan `{plan.name}` "
             + ("runs exactly the configurations listed above (same network, data, η, "
                "momentum, seeds, injection scales and M)." if not mismatches else
                "differs from this profile: " + "; ".join(mismatches) + "."),
             missing_runs_markdown(plan, set(runs["run_id"]) if len(runs) else set(),
                                   p.records_dir)
             + (f" {len(stale)} record(s) of other runs or configs in that folder are left "
                "out." if stale else "")]
    exp.source = (ch08.records_scale(runs, "recorded GPU runs") if len(runs)
                  else f"recorded GPU runs: none yet in {p.records_dir}")
    if len(runs):
        notes.append(f"**Source:** {exp.source}; the train error of a record is measured on "
                     "the plan's fixed training subset.")
    exp.notes = "\n\n".join(notes)
    return exp
