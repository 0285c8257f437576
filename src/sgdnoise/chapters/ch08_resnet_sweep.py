"""Chapter 8: does a large batch generalize worse, or is it under-trained?

The chapter's decisions are pure functions of two record frames (the schema of
:func:`sgdnoise.sweep.load_records` and :func:`sgdnoise.sweep.load_sharpness`):

* ``records``: one row per run × evaluation with at least the columns of
  :data:`REQUIRED_RECORD_COLUMNS` (``arm, batch_size, seed, run_id, step, epoch, train_loss,
  train_error, test_error, status``) and ``n_train``;
* ``sharpness``: one row per run × Lanczos estimate with :data:`REQUIRED_SHARPNESS_COLUMNS`
  (``run_id, arm, batch_size, seed, step, lambda_max, lr``; a column ``sharpness_bn`` or
  ``bn_mode``, when present, says whether BatchNorm was in train or eval mode).

:func:`analyse` applies every decision to one scale's records (a :class:`Scale`: the
full-scale plan's records, the laptop miniature, later a mid-scale sweep) and returns the
tables and :class:`sgdnoise.report.Verdict` objects whose sentences are generated from the
numbers and the thresholds:

* the generalization gap and under-training (:func:`gap_verdicts`): one call per (arm,
  batch size) by :func:`sgdnoise.decide.calls.decide`, two headline verdicts decided on the
  pre-registered pairs only, with their false-positive rates and powers measured by
  simulation (:func:`sgdnoise.decide.rates.headline_error_rates`);
* the plateau (:func:`plateau_test`): per-run slopes of train and test error against
  ``ln(step)`` over the last evaluations, an interval across seeds;
* sharpness (:func:`sharpness_edge_test`, :func:`sharpness_trend_test`): ``η λ_max`` against
  the stability edge ``2(1 + β)`` inside a constant-``η`` window, and whether the end-of-run
  ``λ_max`` grows with the batch size;
* steps to a pre-registered test-error target (:func:`steps_to_target`), descriptive.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from sgdnoise.decide import calls as dc
from sgdnoise.decide import rates as dr
from sgdnoise.decide import scenarios as ds
from sgdnoise.decide.harness import Scenario, error_rates, rate_of
from sgdnoise.decide.pvalues import holm, intersection_union, one_sided
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict, count_noun, fmt_number, join_words
from sgdnoise.stats import Interval, t_interval

__all__ = [
    "REQUIRED_RECORD_COLUMNS",
    "REQUIRED_SHARPNESS_COLUMNS",
    "Analysis",
    "Params",
    "Scale",
    "analyse",
    "batch_colors",
    "budget_text",
    "control_arms",
    "control_comparison",
    "control_sentence",
    "curve_residuals",
    "decision_as_text",
    "decision_display",
    "final_points",
    "gap_verdicts",
    "has_records",
    "intervals_as_text",
    "load_recorded",
    "load_sharpness_records",
    "midscale_note",
    "tuned_at_edge",
    "pilot_summary",
    "plan_scale",
    "planning_spread",
    "plan_family",
    "plan_runs",
    "present_verdicts",
    "plateau_rates",
    "plateau_test",
    "plot_error_vs_step",
    "plot_matched_fit",
    "plot_sharpness",
    "protocol_table",
    "rates_table",
    "read_plan",
    "records_words",
    "record_notes",
    "residual_sentence",
    "records_scale",
    "run_miniature",
    "seeds_table",
    "sharpness_edge_test",
    "sharpness_trend_rates",
    "sharpness_trend_test",
    "steps_to_target",
    "thresholds",
]

#: the columns the decisions read: a subset of :data:`sgdnoise.sweep.RECORD_COLUMNS`
#: (and of :data:`sgdnoise.sweep.SHARPNESS_COLUMNS`), so hand-built frames need only these
REQUIRED_RECORD_COLUMNS = ("arm", "batch_size", "seed", "run_id", "step", "epoch",
                           "train_loss", "train_error", "test_error", "status")
REQUIRED_SHARPNESS_COLUMNS = ("run_id", "arm", "batch_size", "seed", "step", "lambda_max", "lr")
BN_MODE_COLUMNS = ("sharpness_bn", "bn_mode")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 8 (values live in the notebook's parameters cell and in
    ``book/params/ch08_resnet_sweep/{smoke,default,full}.yaml``). The targets, margins,
    pre-registered arms and onset are fixed here before any record is read."""

    records_dirs: tuple[str, ...] = param(min_len=0, doc="folders of the full-scale plan's "
                                          "records")
    pilot_dirs: tuple[str, ...] = param(min_len=0, doc="folders of the 10-epoch GPU pilot "
                                        "(shown descriptively, never decided on)")
    sharpness_dirs: tuple[str, ...] = param(min_len=0, doc="folders holding sharpness records")
    gpu_plan: str = param(doc="the full-scale plan (its seeds size the rates when no record "
                          "exists)")
    run_miniature: bool = param(doc="train the laptop miniature in this execution")
    plan: str = param(doc="the miniature's plan file (arms, batch sizes, seeds, recipes)")
    target: float = param(low=0.0, high=1.0, doc="the test-error target of steps-to-target "
                          "at full scale")
    target_laptop: float = param(low=0.0, high=1.0, doc="the test-error target of the "
                                 "miniature")
    midscale_dirs: tuple[str, ...] = param(min_len=0, doc="folders of the mid-scale CPU "
                                           "records (ResNet-20 on 10,000 pooled images)")
    midscale_plan: str = param(doc="the mid-scale plan file (its seeds size the rates)")
    target_midscale: float = param(low=0.0, high=1.0, doc="the test-error target of the "
                                   "mid-scale records")
    loss_tolerance: float = param(low=1e-9, doc="τ: 'fits as well' when the excess final "
                                  "train loss is below this many nats")
    gap_margin: float = param(low=1e-6, high=0.5, doc="m: the smallest test-error "
                              "difference that counts as a gap")
    alpha: float = param(low=1e-6, high=0.2, doc="level of every test (family-wise for gaps)")
    onset_fraction: float = param(low=1e-6, high=1.0, doc="pairs with B/N at or above this "
                                  "are pre-registered (the essay's 4,096/50,000)")
    decisive_arms: tuple[str, ...] = param(min_len=1, doc="arms whose pairs are "
                                           "pre-registered")
    gap_effect: float = param(low=1e-6, high=0.5, doc="the gap size at which power is "
                              "reported")
    n_sim: int = param(low=100, doc="simulated data sets per scenario")
    rates_seed: int = param(low=0, doc="seed of the simulations")
    plateau_arms: tuple[str, ...] = param(min_len=1, doc="constant-η arms of the plateau test")
    plateau_evals: int = param(low=3, doc="plateau: the last evaluations of each run")
    plateau_margin: float = param(low=1e-6, high=1.0, doc="plateau: |slope| per e-fold of "
                                  "steps below which a curve is flat")
    eos_low: float = param(low=0.0, high=1.0, doc="η λ_max / 2(1+β) at or above this: edge "
                           "of stability")
    below_fraction: float = param(low=0.0, high=1.0, doc="η λ_max / 2(1+β) below this: far "
                                  "below the edge")
    out_dir: str = param(doc="miniature records ('' = a fresh temporary folder)")

    def check(self) -> None:
        self.require(self.below_fraction < self.eos_low, "below_fraction",
                     f"must be below eos_low={self.eos_low}")
        self.require(self.plan.endswith((".yaml", ".yml")), "plan", "must be a YAML file")
        for name in ("gpu_plan", "midscale_plan"):
            self.require(getattr(self, name).endswith((".yaml", ".yml")), name,
                         "must be a YAML file")
        self.require(self.gap_effect > self.gap_margin, "gap_effect",
                     f"must exceed gap_margin={self.gap_margin}")


def thresholds(p: Params) -> dc.Thresholds:
    """The decision thresholds of :mod:`sgdnoise.decide.calls` from the parameters."""
    return dc.Thresholds(loss_tolerance=p.loss_tolerance, margin=p.gap_margin, alpha=p.alpha,
                         onset_fraction=p.onset_fraction, decisive_arms=p.decisive_arms)


@dataclass(frozen=True)
class Scale:
    """What stands behind one section's verdicts.

    - label: the verdicts' ``scale`` (devices, commits, dates, or the laptop profile).
    - claim_prefix: what the claims are about, first words of every claim ("ResNet34,
      CIFAR-10, 50,000 images", "MLP miniature, 2,048 images").
    - section: the MyST label of the section with the evidence.
    - target: the pre-registered test-error target of steps-to-target.
    - plan: the plan whose runs this scale's records come from ('' for none): the
      pre-registered pairs it lists are named when missing, and its seeds size the rates
      when no pair is recorded.
    """

    label: str
    claim_prefix: str
    section: str
    target: float
    plan: str = ""


# --------------------------------------------------------------------------- design


def protocol_table(n_train: int, batch_sizes: Sequence[int], epochs: int, lr: float
                   ) -> pd.DataFrame:
    """What an equal-epoch run does at each batch size, before training (``drop_last``).

    One row per ``B``: steps per epoch ``⌊N/B⌋``, total steps ``S = E ⌊N/B⌋``, examples
    seen ``S·B``, the finite-population factor ``(N − B)/(N − 1)`` of Lemma 1 and the reach
    ``η S`` (the bound ``‖θ_S − θ_0‖ ≤ η S G`` divided by the gradient bound ``G``)."""
    if n_train < 2:
        raise ValueError(f"n_train must be >= 2, got {n_train!r}")
    rows = []
    for b in batch_sizes:
        if not 1 <= b <= n_train:
            raise ValueError(f"batch size must be in [1, n_train={n_train}], got {b!r}")
        spe = n_train // b
        rows.append({"B": int(b), "steps/epoch": spe, "steps S": epochs * spe,
                     "examples seen": epochs * spe * b,
                     "(N-B)/(N-1)": (n_train - b) / (n_train - 1),
                     "reach ηS": lr * epochs * spe})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- records


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {sorted(df.columns)}")


def _device_words(device: Any) -> str:
    """A record's device in words: ``'cuda: NVIDIA H200'`` → ``'NVIDIA H200'``; records
    written before provenance said '1 thread' read ``'cpu: x86_64 (1 threads)'``, shown as
    ``'cpu: x86_64, 1 thread'``."""
    text = str(device).removeprefix("cuda: ")
    return re.sub(r" \((\d+) threads?\)$",
                  lambda m: f", {m.group(1)} thread{'s' * (m.group(1) != '1')}", text)


def records_scale(df: pd.DataFrame, kind: str = "recorded GPU runs") -> str:
    """``'recorded GPU runs (ResNet34 width 64; NVIDIA H200; commit not recorded;
    2026-11-26)'``: ``kind`` and :func:`records_words`."""
    return f"{kind} ({records_words(df, '; ')})" if len(df) else f"{kind} (none)"


def records_words(df: pd.DataFrame, sep: str = ", ") -> str:
    """The models, devices, commits and dates behind a record frame (distinct values,
    sorted): ``'ResNet34 width 64, NVIDIA H200, commit not recorded, 2026-11-26'``."""
    def distinct(col: str, f: Any = str) -> str:
        if col not in df.columns:
            return "?"
        vals = sorted({f(v) for v in df[col].dropna()})
        return ", ".join(vals) if vals else "?"

    models = distinct("model", _model_name) if "model" in df.columns else "?"
    if "width" in df.columns and models != "?":
        pairs = df[["model", "width"]].dropna().drop_duplicates()
        models = ", ".join(sorted(f"{_model_name(m)} width {int(w)}"
                                  for m, w in pairs.itertuples(index=False)))
    dev = distinct("device", _device_words)
    commit = distinct("git_commit", lambda c: str(c)[:10])
    commit = "commit not recorded" if commit in ("unknown", "?") else f"commit {commit}"
    dates = distinct("created_utc", lambda c: str(c)[:10])
    return sep.join([models, dev, commit, dates])


def _model_name(model: Any) -> str:
    """``'resnet34'`` → ``'ResNet34'``, ``'mlp'`` → ``'MLP'``: a model's name in words."""
    names = {"resnet": "ResNet", "mlp": "MLP", "cnn": "CNN", "linear": "softmax regression"}
    text = str(model)
    for key, word in names.items():
        if text.lower().startswith(key):
            return word + text[len(key):]
    return text


def final_points(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run: one row per ``run_id``."""
    _require_columns(df, REQUIRED_RECORD_COLUMNS, "records")
    last = df.sort_values("step").groupby("run_id", sort=False).tail(1)
    return last.sort_values(["arm", "batch_size", "seed"]).reset_index(drop=True)


def load_recorded(dirs: Sequence[str]) -> pd.DataFrame:
    """Every run record under ``dirs`` (folders that do not exist are skipped) as one frame
    (:func:`sgdnoise.sweep.load_records`: the pilot's records come as arm ``"pilot"``),
    without the η-tuning runs (arms ``<arm>-tune``): they are evaluated on a validation
    split, not the test set, and only choose the η of their arm's runs."""
    from pathlib import Path

    from sgdnoise import sweep

    df = sweep.load_records([d for d in dirs if Path(d).exists()])
    if len(df) == 0:
        return df
    tuning = df["arm"].astype(str).str.endswith(sweep.TUNE_SUFFIX)
    return df[~tuning].reset_index(drop=True)


def load_sharpness_records(dirs: Sequence[str]) -> pd.DataFrame:
    """Sharpness estimates under ``dirs`` (:func:`sgdnoise.sweep.load_sharpness`)."""
    from pathlib import Path

    from sgdnoise import sweep

    return sweep.load_sharpness([d for d in dirs if Path(d).exists()])


def budget_text(records: pd.DataFrame, arm: str) -> str:
    """``'within 30 epochs'`` for an arm run for a number of epochs, ``'within 250 steps'``
    for one run for a number of steps (``max_steps`` set), ``'within 20–30 epochs'`` when
    its runs differ."""
    g = records[records["arm"] == arm]
    if len(g) == 0:
        return "within its budget"
    if "max_steps" in g.columns and pd.to_numeric(g["max_steps"], errors="coerce").notna().any():
        steps = sorted({int(s) for s in pd.to_numeric(g["max_steps"], errors="coerce")
                        .dropna()})
        return f"within {steps[0]:,} steps" if len(steps) == 1 else (
            f"within {steps[0]:,}–{steps[-1]:,} steps")
    epochs = sorted({int(round(float(e))) for e in
                     g.sort_values("step").groupby("run_id")["epoch"].last().dropna()})
    if not epochs:
        return "within its budget"
    return f"within {epochs[0]} epochs" if len(epochs) == 1 else (
        f"within {epochs[0]}–{epochs[-1]} epochs")


def intervals_as_text(table: pd.DataFrame, *, percent: Sequence[str] = (),
                      whole: Sequence[str] = (), digits: int = 1) -> pd.DataFrame:
    """A copy of ``table`` whose :class:`~sgdnoise.stats.Interval` cells are strings
    ``'est [low, high]'``: columns in ``percent`` times 100 (in points) with ``digits``
    decimals, columns in ``whole`` as whole numbers, others with 3 decimals."""
    out = table.copy()
    for col in out.columns:
        if len(out) and isinstance(out[col].iloc[0], Interval):
            scale = 100.0 if col in percent else 1.0
            d = digits if col in percent else 0 if col in whole else 3
            out[col] = [i.format(d, scale) for i in out[col]]
    return out


# --------------------------------------------------------------------------- the gap


def read_plan(path: str) -> dict[str, Any]:
    """The plan file as a mapping (``name, data, defaults, arms[, priority]``; the format of
    ``sgdnoise-sweep``). Raises ValueError naming the file when it lacks a section."""
    from sgdnoise.yamlio import load_yaml

    raw = load_yaml(path)
    if not isinstance(raw, dict) or not {"data", "arms"} <= set(raw):
        raise ValueError(f"plan {path!r} must be a mapping with 'data' and 'arms' sections")
    return raw


def plan_family(plan_path: str, th: dc.Thresholds) -> pd.DataFrame:
    """The pre-registered pairs a plan runs: one row per (arm, ``B``) of the decisive arms
    with ``B > B₀`` and ``B / N ≥`` the onset fraction (``N`` from the plan, 50,000 when it
    says null): ``arm, B0, B, seeds``."""
    plan = read_plan(plan_path)
    n = plan["data"].get("n_train") or 50_000
    rows = []
    for arm, spec in plan["arms"].items():
        sizes = sorted(int(b) for b in spec.get("batch_sizes", []))
        if str(arm) not in th.decisive_arms or len(sizes) < 2:
            continue
        for b in sizes[1:]:
            if b / n >= th.onset_fraction - 1e-12:
                rows.append({"arm": str(arm), "B0": sizes[0], "B": b,
                             "seeds": len(spec.get("seeds", []))})
    return pd.DataFrame(rows, columns=["arm", "B0", "B", "seeds"])


def _pct(x: float) -> str:
    return f"{x * 100:.1f}"


_points = ds.points


def _pairs(rows: pd.DataFrame) -> str:
    return ", ".join(f"arm {r['arm']} at B = {int(r['B']):,}" for _, r in rows.iterrows())


def _pair_detail(r: pd.Series) -> str:
    mean, lo, hi = r["difference"]
    what = "test-error difference" if r["compared at"] == "end points" else (
        "residual from the small batch's curve")
    holm_p = r["p (gap, Holm)"]
    p = f"p = {r['p (gap)']:.3g}" + (f", Holm p = {holm_p:.3g}" if np.isfinite(holm_p) else "")
    return (f"arm {r['arm']}, B = {int(r['B']):,} ({r['compared at']}, {r['seeds']} seeds): "
            f"{what} {_pct(mean)} [{_pct(lo)}, {_pct(hi)}] points, {p}")


def _rule_text(th: dc.Thresholds) -> str:
    return (f"each call at level {th.alpha:g} from one-sided paired t-tests (bounds at "
            f"{1 - th.alpha:.0%}); 'fits as well' means the excess final train loss is below "
            f"{th.loss_tolerance:g} nats, a gap needs the difference above the margin of "
            f"{_points(th.margin)}; the gap calls are "
            "Holm-adjusted over the pre-registered pairs, and 'no gap' and 'under-trained' "
            "must hold at every pre-registered pair (an intersection-union test, valid "
            "without a correction)")


def _onset_text(dec: dc.Decision) -> str:
    essay = dc.ESSAY_ONSET[0] / dc.ESSAY_ONSET[1]
    if dec.onset is None:
        return "No pair shows a gap, so there is no onset to compare with the essay's."
    return (f"The smallest batch size with a gap call is B = {dec.onset:,} "
            f"($B/N$ = {dec.onset_fraction:.3f}), against the essay's onset of 4,096 of 50,000 "
            f"($B/N$ = {essay:.3f}).")


def _missing_pairs(dec: dc.Decision, planned: pd.DataFrame | None) -> pd.DataFrame:
    if planned is None or len(planned) == 0:
        return planned.iloc[:0] if planned is not None else pd.DataFrame(columns=["arm", "B"])
    have = {(r["arm"], int(r["B"])) for _, r in dec.preregistered().iterrows()}
    keep = [(r["arm"], int(r["B"])) not in have for _, r in planned.iterrows()]
    return planned[keep]


def _why_undecided(pre: pd.DataFrame, missing: pd.DataFrame) -> str:
    parts = []
    for call in ("undetermined", "not informative", "diverged"):
        rows = pre[pre["call"] == call]
        if len(rows) == 0:
            continue
        extra = (" (" + "; ".join(f"{r['diverged']} seeds diverged" for _, r in
                                  rows.iterrows()) + ")") if call == "diverged" else ""
        parts.append(f"{call} at {_pairs(rows)}{extra}")
    if len(missing):
        parts.append(f"not recorded: {_pairs(missing)}")
    return "; ".join(parts) if parts else "no pre-registered pair is recorded"


def _gap_sentence(dec: dc.Decision, missing: pd.DataFrame) -> str:
    pre = dec.preregistered()
    k = len(pre)
    if dec.gap == "supported":
        gaps = pre[pre["call"] == "gap"]
        head = (f"A gap at {len(gaps)} of {k} pre-registered pairs after Holm: "
                + "; ".join(_pair_detail(r) for _, r in gaps.iterrows()) + ".")
    elif dec.gap == "contradicted":
        head = (f"Every one of the {k} pre-registered pairs is 'no gap' or 'under-trained': "
                + "; ".join(_pair_detail(r) for _, r in pre.iterrows()) + ".")
    else:
        head = f"Cannot decide: {_why_undecided(pre, missing)}."
    return f"{head} {_onset_text(dec)}"


def _under_sentence(dec: dc.Decision, missing: pd.DataFrame) -> str:
    pre = dec.preregistered()
    counts = pre["call"].value_counts().to_dict() if len(pre) else {}
    listing = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
    if dec.under_training == "supported":
        return (f"Every pre-registered pair is 'under-trained' or 'no gap' ({listing}), and "
                "the under-trained ones lie on or below the small batch's curve within the "
                "margin.")
    if dec.under_training == "contradicted":
        return (f"A pre-registered pair shows a gap, which under-training cannot explain "
                f"({listing}).")
    if len(pre) and set(counts) <= {"no gap"}:
        return (f"Every pre-registered pair fits as well and shows no gap ({listing}): there "
                "is no shortfall for under-training to explain.")
    return f"Cannot decide: {_why_undecided(pre, missing)}."


def gap_claims(prefix: str, th: dc.Thresholds) -> tuple[str, str]:
    """The two headline claims, as tested, for the records of one scale."""
    where = (f"at the batch sizes the essay names ($B/N \\ge$ {th.onset_fraction:.3f}, its "
             "4,096 of 50,000 images)")
    return (f"{prefix}: {where}, a large batch tests worse than the small batch by more than "
            f"{_points(th.margin)} when it fits the "
            "training set as well, or when compared at the same train loss: a generalization "
            "gap.",
            f"{prefix}: {where}, the large batches' shortfall is under-training: each either "
            "fits as well and tests no worse, or fits worse and lies on or below the small "
            "batch's test-error-against-train-loss curve.")


def gap_verdicts(dec: dc.Decision, scale: Scale, rates: dr.HeadlineRates | None,
                 planned: pd.DataFrame | None = None) -> list[Verdict]:
    """The two headline verdicts of one scale from its :class:`~sgdnoise.decide.calls.
    Decision`, each with its rule and, when ``rates`` is given, its false-positive rate and
    power. ``planned`` (:func:`plan_family`) names the pre-registered pairs not yet
    recorded."""
    th = dec.thresholds
    missing = _missing_pairs(dec, planned)
    claims = gap_claims(scale.claim_prefix, th)
    rule = _rule_text(th)
    out = [Verdict(claims[0], dec.gap, f"{_gap_sentence(dec, missing)} Rule: {rule}.",
                   scale.label, scale.section),
           Verdict(claims[1], dec.under_training,
                   f"{_under_sentence(dec, missing)} Rule: {rule}.", scale.label,
                   scale.section)]
    if rates is None:
        return out
    at = rates.conditions()
    contra = (f"{at}; contradicted although one pair has the gap in "
              f"{rates.gap_false_contradiction:.1%} of the simulated data sets")
    return [out[0].with_error_rates(false_positive_rate=rates.gap_false_positive,
                                    power=rates.gap_power, n_seeds=rates.n_seeds,
                                    n_sim=rates.n_sim, rates_at=contra),
            out[1].with_error_rates(false_positive_rate=rates.under_false_positive,
                                    power=rates.under_power, n_seeds=rates.n_seeds,
                                    n_sim=rates.n_sim, rates_at=at)]


def decision_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`sgdnoise.decide.calls.decide` table for display: loss bounds in nats and
    error differences in points as ``'est [low, high]'``, p-values to 3 digits."""
    out = table.copy()

    def fmt(t: tuple[float, float, float], scale: float, digits: int) -> str:
        mean, lo, hi = (v * scale for v in t)
        if not np.isfinite(mean):
            return "–"
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return f"{mean:.{digits}f} (no interval)"
        return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    out["d_train_loss"] = [fmt(t, 1.0, 3) for t in out["d_train_loss"]]
    out["difference"] = [fmt(t, 100.0, 1) for t in out["difference"]]
    out["small-batch gap"] = [f"{v * 100:.1f}" if np.isfinite(v) else "–"
                              for v in out["small-batch gap"]]
    out["pre-registered"] = ["yes" if v else "descriptive" for v in out["pre-registered"]]
    return out


def _rates_family(dec: dc.Decision, planned: pd.DataFrame | None) -> tuple[int, int]:
    """``(n_seeds, family_size)`` for the rates: the recorded pre-registered pairs (the
    fewest paired seeds among those with any), else the plan's."""
    pre = dec.preregistered()
    paired = pre[pre["seeds"] >= 1]
    if len(paired):
        return int(paired["seeds"].min()), len(pre)
    if planned is not None and len(planned):
        return int(planned["seeds"].min()), len(planned)
    return 0, 0


# --------------------------------------------------------------------------- plateau


def _run_slopes(records: pd.DataFrame, column: str, n_evals: int) -> pd.DataFrame:
    """Per run: the least-squares slope of ``column`` on ``ln(step)`` over its last
    ``n_evals`` evaluations with ``step > 0`` (NaN with fewer than 3)."""
    rows = []
    for run_id, r in records[records["step"] > 0].groupby("run_id"):
        r = r.sort_values("step").tail(n_evals)
        x, y = np.log(r["step"].to_numpy(float)), r[column].to_numpy(float)
        ok = np.isfinite(y)
        slope = (float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 3 and np.ptp(x[ok]) > 0
                 else math.nan)
        rows.append({"run_id": run_id, "arm": r["arm"].iloc[0],
                     "batch_size": int(r["batch_size"].iloc[0]), "slope": slope,
                     "final": float(r[column].iloc[-1]), "last_step": int(r["step"].iloc[-1])})
    return pd.DataFrame(rows, columns=["run_id", "arm", "batch_size", "slope", "final",
                                       "last_step"])


PLATEAU_CALLS = ("flat", "falling", "rising", "undetermined")


def _plateau_calls(slopes: np.ndarray, margin: float, alpha: float, prereg: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Calls for per-run slopes ``(n_sim, P, S)`` (NaN = none): ``flat`` when both
    ``μ ≤ −margin`` and ``μ ≥ margin`` are rejected (an intersection-union test),
    ``falling`` when ``μ ≥ −margin`` is rejected (Holm over the pre-registered items),
    ``rising`` when ``μ ≤ margin`` is; and the headline codes (0 supported: every
    pre-registered item flat; 1 contradicted: some falling; 2 inconclusive)."""
    low, high = one_sided(slopes, -margin), one_sided(slopes, margin)
    p_fall = low.p_less.copy()
    if prereg.any():
        p_fall[:, prereg] = holm(p_fall[:, prereg])
    code = np.full(p_fall.shape, 3, dtype=np.int8)
    code[high.p_greater <= alpha] = 2
    code[intersection_union(low.p_greater, high.p_less) <= alpha] = 0
    code[p_fall <= alpha] = 1
    head = np.full(code.shape[0], 2, dtype=np.int8)
    if prereg.any():
        c = code[:, prereg]
        head[(c == 0).all(axis=1)] = 0
        head[(c == 1).any(axis=1)] = 1
    return code, head


def _plateau_items(records: pd.DataFrame, arms: Sequence[str], onset_fraction: float,
                   n_evals: int) -> list[tuple[str, int, str, np.ndarray, pd.DataFrame]]:
    """(arm, B, metric, per-seed slopes, runs) for every constant-η arm and ``B ≥ onset``."""
    items = []
    for arm in arms:
        g = records[records["arm"] == arm]
        if len(g) == 0:
            continue
        n = float(g["n_train"].iloc[0]) if "n_train" in g.columns else math.nan
        for b, gb in g.groupby("batch_size", sort=True):
            if not (np.isfinite(n) and b / n >= onset_fraction - 1e-12):
                continue
            for metric in ("train_error", "test_error"):
                runs = _run_slopes(gb, metric, n_evals)
                items.append((str(arm), int(b), metric, runs["slope"].to_numpy(float), runs))
    return items


def plateau_test(records: pd.DataFrame, *, arms: Sequence[str], onset_fraction: float,
                 n_evals: int = 5, margin: float = 0.01, alpha: float = 0.05,
                 prefix: str = "", scale: str = "", section: str = "",
                 rates: PlateauRates | None = None) -> tuple[pd.DataFrame, Verdict]:
    """Have train and test error stopped falling at the batch sizes the essay names?

    For every arm of ``arms`` (constant-``η`` arms: with a decaying ``η`` every curve
    flattens at the end by construction), every ``B`` with ``B/N ≥ onset_fraction`` and both
    train and test error: per run the least-squares slope ``b`` of the error on
    ``ln(step)`` over its last ``n_evals`` evaluations (error change per e-fold of steps);
    across seeds the one-sided t-tests of :func:`_plateau_calls`. Successive evaluations of
    one run are autocorrelated, so no run's points are treated as independent: each run
    gives one slope and the interval is across seeds (one seed: no interval, no call).

    Verdict (claim: the errors plateau): supported when every item is ``flat``
    (intersection-union test at ``alpha``), contradicted when some item is ``falling``
    (Holm at ``alpha``), else inconclusive; ``rates`` (:func:`plateau_rates`) adds its
    error rates."""
    claim = (f"{prefix}: in the essay's setting (constant learning rate) at the batch sizes "
             "it names, train and test error both plateau: their slope against ln(step) over "
             f"the last {n_evals} evaluations lies within ±{_points(margin)} per "
             "e-fold of steps.")
    cols = ["arm", "B", "error", "seeds", "slope", "final", "last step", "budget", "call"]
    items = _plateau_items(records, arms, onset_fraction, n_evals)
    if not items:
        return (pd.DataFrame(columns=cols), Verdict(
            claim, "inconclusive", f"No records of arm {', '.join(arms)} at $B/N \\ge$ "
            f"{onset_fraction:.3f}.", scale, section))
    s_max = max(len(it[3]) for it in items)
    slopes = np.full((1, len(items), s_max), np.nan)
    for i, it in enumerate(items):
        slopes[0, i, :len(it[3])] = it[3]
    code, head = _plateau_calls(slopes, margin, alpha, np.ones(len(items), bool))
    rows = []
    for i, (arm, b, metric, s, runs) in enumerate(items):
        rows.append({"arm": arm, "B": b, "error": metric.replace("_error", ""),
                     "seeds": int(np.isfinite(s).sum()),
                     "slope": t_interval(s, 1 - 2 * alpha),
                     "final": float(runs["final"].mean()), "last step": int(runs[
                         "last_step"].max()), "budget": budget_text(records, arm),
                     "call": PLATEAU_CALLS[int(code[0, i])]})
    table = pd.DataFrame(rows, columns=cols)
    outcome = ("supported", "contradicted", "inconclusive")[int(head[0])]
    listing = "; ".join(
        f"arm {r['arm']} B = {r['B']:,} {r['error']} error ({r['budget']}): "
        f"{r['slope'].format(2, 100)} points per e-fold, {r['call']}" for _, r in
        table.iterrows())
    sentence = (f"{listing}. Rule: per-run slopes, an interval across seeds "
                f"({1 - 2 * alpha:.0%}); 'flat' when both one-sided tests put the mean slope "
                f"inside ±{_points(margin)} at level {alpha:g} (needed for every item), "
                f"'falling' when it is below −{_points(margin)} (Holm over the "
                f"{len(items)} items); one seed gives no interval and no call.")
    v = Verdict(claim, outcome, sentence, scale, section)
    if rates is not None:
        v = v.with_rates(rates)
    return table, v


@dataclass(frozen=True)
class PlateauRates:
    """Error rates of the plateau verdict: ``false_positive`` (supported when the worst item
    falls at twice the margin, or at the margin itself), ``power`` (supported when every item
    is flat), and the rate of ``contradicted`` when every item is flat."""

    false_positive: float
    power: float
    false_contradiction: float
    n_seeds: int
    n_items: int
    n_evals: int
    n_sim: int
    noise_sd: float
    noise_source: str

    def conditions(self) -> str:
        return (f"{self.n_items} items; evaluation noise of {self.noise_sd * 100:.2f} points "
                f"with lag-one correlation 0.5 across {self.n_evals} log-spaced evaluations, "
                f"{self.noise_source}; contradicted although every item is flat in "
                f"{self.false_contradiction:.1%} of the simulated data sets")


def plateau_rates(*, n_seeds: int, n_items: int, n_evals: int, margin: float, alpha: float,
                  noise_sd: float, noise_source: str, n_sim: int = 2000, seed: int = 0
                  ) -> PlateauRates:
    """Simulate the plateau rule: ``n_items`` (arm, B, metric) items of ``n_seeds`` runs,
    each with ``n_evals`` evaluations at steps ``e^{k/2}`` and errors ``c + b ln(step) +
    ε_k``, ``ε`` an AR(1) series of standard deviation ``noise_sd`` and lag-one correlation
    0.5. Truths: all flat (``b = 0``); one item falling at ``b = −2·margin``; all at the
    boundary ``b = −margin``."""
    x = np.arange(n_evals) / 2.0

    def simulate(slopes: np.ndarray):
        def run(n: int, rng: np.random.Generator) -> np.ndarray:
            e = rng.standard_normal((n, n_items, n_seeds, n_evals))
            for k in range(1, n_evals):
                e[..., k] = 0.5 * e[..., k - 1] + math.sqrt(0.75) * e[..., k]
            y = slopes[None, :, None, None] * x + noise_sd * e
            xc = x - x.mean()
            return (y * xc).sum(-1) / (xc @ xc)
        return run

    def rule(per_run_slopes: np.ndarray) -> np.ndarray:
        _, head = _plateau_calls(per_run_slopes, margin, alpha, np.ones(n_items, bool))
        return np.asarray(["supported", "contradicted", "inconclusive"], dtype=object)[head]

    one = np.zeros(n_items)
    one[0] = -2 * margin
    scen = [Scenario("flat", "every item flat", simulate(np.zeros(n_items))),
            Scenario("one falling", "one item falls at twice the margin", simulate(one)),
            Scenario("boundary", "every item falls at the margin",
                     simulate(np.full(n_items, -margin)))]
    rates = error_rates(rule, scen, n_sim=n_sim, seed=seed)
    fp = max(rate_of(rates, s, "supported").rate for s in ("one falling", "boundary"))
    return PlateauRates(fp, rate_of(rates, "flat", "supported").rate,
                        rate_of(rates, "flat", "contradicted").rate, n_seeds, n_items, n_evals,
                        n_sim, noise_sd, noise_source)


# --------------------------------------------------------------------------- sharpness


def bn_mode(sharpness: pd.DataFrame) -> str:
    """In which BatchNorm mode ``λ_max`` was taken: the records' ``sharpness_bn`` (or
    ``bn_mode``) column when present, else ``"eval"`` (the engine's mode before it recorded
    one: statistics recomputed, then eval mode)."""
    for col in BN_MODE_COLUMNS:
        if col in sharpness.columns and sharpness[col].notna().any():
            return ", ".join(sorted({str(v) for v in sharpness[col].dropna()}))
    return "eval"


def _constant_lr_window(run: pd.DataFrame, rel_tol: float = 1e-3) -> pd.DataFrame:
    """The estimates of one run taken at the run's peak learning rate (within ``rel_tol``):
    a window where ``η`` does not move, so that ``η λ_max`` can settle at the edge."""
    peak = float(run["lr"].max())
    return run[(run["lr"] - peak).abs() <= rel_tol * peak]


def sharpness_edge_test(sharpness: pd.DataFrame, *, arms: Sequence[str] = ("D-plain",
                                                                           "D-scaled"),
                        momentum: dict[str, float] | None = None, eos_low: float = 0.8,
                        below_fraction: float = 0.5, alpha: float = 0.05, prefix: str = "",
                        scale: str = "", section: str = "") -> tuple[pd.DataFrame, Verdict]:
    """Edge of stability or far below it, inside a constant-``η`` window?

    Heavy-ball gradient descent on a quadratic of curvature ``λ`` is stable iff
    ``η λ < 2(1 + β)`` (Cohen et al. 2021 find full-batch training rising to this edge). Per
    run, over the estimates of its second half that lie in its constant-``η`` window (the
    run's peak ``η``), the mean ratio ``ρ = η λ_max / 2(1 + β)``; per arm a
    ``1 − 2α`` interval across runs: ``edge`` above ``eos_low``, ``far below`` below
    ``below_fraction``, else ``between``. A run without such estimates (a schedule that decays
    ``η`` all through its second half) cannot reach the edge and gives no value; one run
    gives no interval.

    Verdict: supported when every arm with an interval is at the edge, contradicted when
    every one is far below, mixed when they differ, inconclusive otherwise."""
    mode = bn_mode(sharpness)
    claim = (f"{prefix}: at the largest batch the plateau is an edge-of-stability effect "
             r"($\eta\lambda_{\max}$ hovers at $2(1 + \beta)$), not a region of low curvature "
             "such as a saddle.")
    cols = ["arm", "runs", "in window", "ratio", "call"]
    if len(sharpness) == 0:
        return (pd.DataFrame(columns=cols), Verdict(
            claim, "inconclusive", f"No sharpness records of arm {', '.join(arms)}.", scale,
            section))
    _require_columns(sharpness, REQUIRED_SHARPNESS_COLUMNS, "sharpness records")
    momentum = momentum or {}
    rows = []
    for arm in arms:
        g = sharpness[sharpness["arm"] == arm]
        if len(g) == 0:
            continue
        beta = float(momentum.get(arm, 0.0))
        per_run = []
        for _, r in g.groupby("run_id"):
            late = r[r["step"] >= 0.5 * float(r["step"].max())]
            w = _constant_lr_window(r).merge(late[["step"]], on="step")
            if len(w):
                per_run.append(float(np.mean(w["lr"] * w["lambda_max"] / (2 * (1 + beta)))))
        ci = t_interval(per_run, 1 - 2 * alpha)
        call = ("edge" if ci.above(eos_low) else "far below" if ci.below(below_fraction)
                else "no window" if not per_run else "between")
        rows.append({"arm": arm, "runs": int(g["run_id"].nunique()), "in window": len(per_run),
                     "ratio": ci, "call": call})
    table = pd.DataFrame(rows, columns=cols)
    if len(table) == 0:
        return table, Verdict(claim, "inconclusive", f"No sharpness records of arm "
                              f"{', '.join(arms)}.", scale, section)
    calls = set(table["call"])
    outcome = ("supported" if calls == {"edge"} else "contradicted" if calls == {"far below"}
               else "mixed" if {"edge", "far below"} <= calls else "inconclusive")
    listing = "; ".join(
        f"arm {r['arm']}: $\\rho$ = {r['ratio'].format(2)} ({r['in window']} of {r['runs']} "
        f"runs with a constant-$\\eta$ window; {r['call']})"
        for _, r in table.iterrows())
    sentence = (f"{listing}. $\\lambda_{{\\max}}$ taken with BatchNorm in {mode} mode. Rule: "
                r"$\rho = \eta\lambda_{\max} / 2(1+\beta)$ averaged over the estimates of "
                f"each run's second half at its peak learning rate, a {1 - 2 * alpha:.0%} "
                f"interval across runs; 'edge' above {eos_low:g}, 'far below' under "
                f"{below_fraction:g}; a run whose learning rate decays all through its second "
                "half has no such window and cannot reach the edge.")
    return table, Verdict(claim, outcome, sentence, scale, section)


def _end_sharpness(sharpness: pd.DataFrame, arms: Sequence[str]) -> pd.DataFrame:
    """The last ``λ_max`` estimate of every run of ``arms``: ``arm, seed, batch_size,
    lambda_max``."""
    g = sharpness[sharpness["arm"].isin(arms) & (sharpness["lambda_max"] > 0)]
    last = g.sort_values("step").groupby("run_id", sort=False).tail(1)
    return last[["arm", "seed", "batch_size", "lambda_max"]]


def _seed_slopes(end: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, seed) with at least two batch sizes: the least-squares slope of
    ``ln λ_max`` on ``ln B``."""
    rows = []
    for (arm, seed), r in end.groupby(["arm", "seed"]):
        if r["batch_size"].nunique() < 2:
            continue
        slope = float(np.polyfit(np.log(r["batch_size"].to_numpy(float)),
                                 np.log(r["lambda_max"].to_numpy(float)), 1)[0])
        rows.append({"arm": arm, "seed": int(seed), "slope": slope, "sizes": len(r)})
    return pd.DataFrame(rows, columns=["arm", "seed", "slope", "sizes"])


def _trend_codes(slopes: np.ndarray, alpha: float) -> np.ndarray:
    """Headline codes for per-seed slopes ``(n_sim, A, S)`` of ``A`` arms: 0 supported when
    every arm's mean slope is above 0 (one-sided, intersection-union), 1 contradicted when
    every arm's is below 0, 2 inconclusive."""
    t = one_sided(slopes, 0.0)
    head = np.full(slopes.shape[0], 2, dtype=np.int8)
    head[(t.p_greater <= alpha).all(axis=1)] = 0
    head[(t.p_less <= alpha).all(axis=1)] = 1
    return head


def sharpness_trend_test(sharpness: pd.DataFrame, *, arms: Sequence[str] = ("A", "B", "C"),
                         alpha: float = 0.05, prefix: str = "", scale: str = "",
                         section: str = "", rates: TrendRates | None = None
                         ) -> tuple[pd.DataFrame, Verdict]:
    """Does a larger batch end at a sharper minimum (the essay's mechanism)?

    Per arm and seed: the slope of ``ln λ_max`` (each run's last estimate) on ``ln B``
    across the batch sizes of that seed; per arm a one-sided t-test across seeds. Supported
    when every arm's mean slope is above 0 at level ``alpha`` (intersection-union),
    contradicted when every arm's is below 0, inconclusive otherwise (an arm with one seed
    gives no test)."""
    mode = bn_mode(sharpness)
    claim = (f"{prefix}: a larger batch ends at a sharper minimum: the end-of-run "
             r"$\lambda_{\max}$ grows with $B$ in every arm.")
    cols = ["arm", "seeds", "slope", "call"]
    end = (_end_sharpness(sharpness, arms) if len(sharpness)
           else pd.DataFrame(columns=["arm", "seed", "batch_size", "lambda_max"]))
    slopes = _seed_slopes(end)
    if len(slopes) == 0:
        return (pd.DataFrame(columns=cols), Verdict(
            claim, "inconclusive", f"No end-of-run sharpness of arm {', '.join(arms)} at two "
            "batch sizes or more.", scale, section))
    rows = []
    for arm, r in slopes.groupby("arm"):
        t = one_sided(r["slope"].to_numpy(float)[None, :], 0.0)
        call = ("sharper" if t.p_greater[0] <= alpha else "flatter" if t.p_less[0] <= alpha
                else "undetermined")
        rows.append({"arm": arm, "seeds": len(r), "slope": t_interval(r["slope"],
                                                                      1 - 2 * alpha),
                     "call": call})
    table = pd.DataFrame(rows, columns=cols)
    calls = set(table["call"])
    outcome = ("supported" if calls == {"sharper"} else "contradicted"
               if calls == {"flatter"} else "inconclusive")
    listing = "; ".join(f"arm {r['arm']}: slope {r['slope'].format(2)} ({r['seeds']} seeds, "
                        f"{r['call']})" for _, r in table.iterrows())
    sentence = (f"{listing}. $\\lambda_{{\\max}}$ taken with BatchNorm in {mode} mode. Rule: "
                r"per seed the slope of $\ln\lambda_{\max}$ on $\ln B$, a one-sided t-test "
                f"across seeds at level {alpha:g} in every arm.")
    v = Verdict(claim, outcome, sentence, scale, section)
    if rates is not None:
        v = v.with_rates(rates)
    return table, v


@dataclass(frozen=True)
class TrendRates:
    """Error rates of the sharpness-trend verdict: supported when no arm's ``λ_max`` depends
    on ``B`` (false positive), and when every arm's grows like ``B^slope`` (power)."""

    false_positive: float
    power: float
    n_seeds: int
    n_arms: int
    effect: float
    n_sim: int
    noise_sd: float
    noise_source: str

    def conditions(self) -> str:
        arms = f"{self.n_arms} arm" + ("s" if self.n_arms != 1 else "")
        return (f"{arms}, a true slope of {self.effect:g} of $\\ln\\lambda_{{\\max}}$ "
                f"against $\\ln B$, noise of {self.noise_sd:.2f} in "
                f"$\\ln\\lambda_{{\\max}}$, {self.noise_source}")


def sharpness_trend_rates(*, n_seeds: int, n_arms: int, n_sizes: int, effect: float,
                          noise_sd: float, noise_source: str, alpha: float,
                          n_sim: int = 2000, seed: int = 0) -> TrendRates:
    """Simulate the trend rule with ``ln λ = c + b ln B + ε`` at ``n_sizes`` batch sizes a
    factor 2 apart (``ε`` independent, standard deviation ``noise_sd``), ``b = 0`` and
    ``b = effect``."""
    ln_b = np.log(2.0) * np.arange(n_sizes)
    xc = ln_b - ln_b.mean()

    def simulate(b: float):
        def run(n: int, rng: np.random.Generator) -> np.ndarray:
            y = b * ln_b + noise_sd * rng.standard_normal((n, n_arms, n_seeds, n_sizes))
            return (y * xc).sum(-1) / (xc @ xc)
        return run

    def rule(slopes: np.ndarray) -> np.ndarray:
        return np.asarray(["supported", "contradicted", "inconclusive"],
                          dtype=object)[_trend_codes(slopes, alpha)]

    rates = error_rates(rule, [Scenario("no trend", "the sharpness does not depend on B",
                                        simulate(0.0)),
                               Scenario("trend", f"the sharpness grows like B^{effect:g}",
                                        simulate(effect))],
                        n_sim=n_sim, seed=seed)
    return TrendRates(rate_of(rates, "no trend", "supported").rate,
                      rate_of(rates, "trend", "supported").rate, n_seeds, n_arms, effect,
                      n_sim, noise_sd, noise_source)


# --------------------------------------------------------------------------- steps to target


def _first_step_below(steps: np.ndarray, errors: np.ndarray, target: float) -> float:
    """First step with ``error ≤ target``, interpolated linearly in ``ln(step)`` between the
    two evaluations that bracket the crossing; NaN if never reached."""
    order = np.argsort(steps)
    s, e = steps[order].astype(float), errors[order].astype(float)
    hit = np.nonzero(e <= target)[0]
    if hit.size == 0:
        return float("nan")
    k = int(hit[0])
    if k == 0 or s[k - 1] <= 0 or e[k - 1] == e[k]:
        return float(s[k])
    frac = (e[k - 1] - target) / (e[k - 1] - e[k])
    return float(math.exp(math.log(s[k - 1]) + frac * (math.log(s[k]) - math.log(s[k - 1]))))


def steps_to_target(records: pd.DataFrame, target: float, *, confidence: float = 0.95
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Steps needed to reach the pre-registered test-error ``target``, per arm and batch
    size (Shallue et al. 2019; Golmant et al. 2018), descriptive.

    Per run: the first step with test error ≤ ``target`` (:func:`_first_step_below`). Per
    ``(arm, B)``: how many seeds reached it within the arm's budget (:func:`budget_text`)
    and a ``confidence`` t-interval of the mean of ``ln(steps)`` shown on the step scale (a
    geometric mean); ``steps slope``: the change of ``ln(steps)`` per ``ln B`` from the previous
    batch size (−1 is perfect scaling). Returns the table and one sentence per arm."""
    cols = ["arm", "B", "budget", "runs", "reached", "steps", "examples", "steps slope"]
    rows, sentences = [], []
    for arm, g in records.groupby("arm", sort=True):
        budget, prev, parts = budget_text(records, str(arm)), None, []
        for b, gb in g.groupby("batch_size", sort=True):
            hits = [_first_step_below(r["step"].to_numpy(), r["test_error"].to_numpy(), target)
                    for _, r in gb.groupby("run_id")]
            logs = [math.log(h) for h in hits if np.isfinite(h) and h > 0]
            ci = t_interval(logs, confidence)
            steps = (Interval(math.exp(ci.estimate), math.exp(ci.low), math.exp(ci.high), ci.n,
                              confidence) if logs else Interval(math.nan, math.nan, math.nan, 0,
                                                                confidence))
            slope = ((ci.estimate - prev[1]) / (math.log(b) - math.log(prev[0]))
                     if prev is not None and logs and np.isfinite(prev[1]) else math.nan)
            rows.append({"arm": arm, "B": int(b), "budget": budget, "runs": len(hits),
                         "reached": len(logs), "steps": steps,
                         "examples": steps.estimate * b if logs else math.nan,
                         "steps slope": slope})
            prev = (b, ci.estimate if logs else math.nan)
            parts.append(f"B = {int(b):,}: {len(logs)} of {len(hits)}")
        sentences.append(f"Arm {arm}, test error ≤ {target:.0%} {budget}: "
                         + "; ".join(parts) + ".")
    return pd.DataFrame(rows, columns=cols), sentences


# --------------------------------------------------------------------------- the chapter


@dataclass
class Analysis:
    """Every decision of one scale: the tables (by name), the verdicts in page order, the
    gap decision and the rates and spread behind the verdicts."""

    tables: dict[str, pd.DataFrame]
    verdicts: list[Verdict]
    decision: dc.Decision
    rates: dr.HeadlineRates | None = None
    spread: ds.Spread | None = None
    notes: list[str] = field(default_factory=list)


def _momentum(records: pd.DataFrame) -> dict[str, float]:
    if "momentum" not in records.columns or len(records) == 0:
        return {}
    m = records.assign(m=pd.to_numeric(records["momentum"], errors="coerce"))
    return {str(a): float(v) for a, v in m.groupby("arm")["m"].first().items()
            if np.isfinite(v)}


def _gap_rates(dec: dc.Decision, records: pd.DataFrame, p: Params, scale: Scale,
               spread: ds.Spread, planned: pd.DataFrame | None) -> dr.HeadlineRates | None:
    n_seeds, k = _rates_family(dec, planned)
    if n_seeds < 1 or k < 1 or not np.isfinite(spread.sd_test_error):
        return None
    curve = ds.fit_curve(records, p.decisive_arms) if len(records) else None
    return dr.headline_error_rates(curve or ds.Curve(), spread, thresholds(p),
                                   n_seeds=n_seeds, family_size=k, gap_size=p.gap_effect,
                                   n_sim=p.n_sim, seed=p.rates_seed)


def _plateau(records: pd.DataFrame, p: Params, scale: Scale, spread: ds.Spread
             ) -> tuple[pd.DataFrame, Verdict]:
    kw = dict(arms=p.plateau_arms, onset_fraction=p.onset_fraction, n_evals=p.plateau_evals,
              margin=p.plateau_margin, alpha=p.alpha, prefix=scale.claim_prefix,
              scale=scale.label, section=scale.section)
    table, v = plateau_test(records, **kw)
    if len(table) and table["seeds"].min() >= 1 and np.isfinite(spread.sd_test_error):
        rates = plateau_rates(n_seeds=int(table["seeds"].min()), n_items=len(table),
                              n_evals=p.plateau_evals, margin=p.plateau_margin,
                              alpha=p.alpha, noise_sd=spread.sd_test_error,
                              noise_source=f"spread {spread.source}",
                              n_sim=p.n_sim, seed=p.rates_seed)
        table, v = plateau_test(records, rates=rates, **kw)
    return table, v


def _sharpness(sharpness: pd.DataFrame, records: pd.DataFrame, p: Params, scale: Scale
               ) -> tuple[dict[str, pd.DataFrame], list[Verdict]]:
    kw = dict(prefix=scale.claim_prefix, scale=scale.label, section=scale.section)
    edge_t, edge_v = sharpness_edge_test(sharpness, momentum=_momentum(records),
                                         eos_low=p.eos_low, below_fraction=p.below_fraction,
                                         alpha=p.alpha, **kw)
    trend_t, trend_v = sharpness_trend_test(sharpness, alpha=p.alpha, **kw)
    if len(trend_t):
        end = _end_sharpness(sharpness, ("A", "B", "C"))
        noise, _ = ds.pooled_sd(np.log(end["lambda_max"].astype(float)),
                                 end["arm"].astype(str) + "/" + end["batch_size"].astype(str))
        src = "measured on these records" if np.isfinite(noise) else "assumed (no repeat)"
        rates = sharpness_trend_rates(
            n_seeds=int(trend_t["seeds"].min()), n_arms=len(trend_t),
            n_sizes=int(end.groupby(["arm", "seed"])["batch_size"].nunique().min()),
            effect=0.25, noise_sd=noise if np.isfinite(noise) else 0.2, noise_source=src,
            alpha=p.alpha, n_sim=p.n_sim, seed=p.rates_seed)
        trend_t, trend_v = sharpness_trend_test(sharpness, alpha=p.alpha, rates=rates, **kw)
    return {"sharpness_edge": edge_t, "sharpness_trend": trend_t}, [edge_v, trend_v]


def analyse(records: pd.DataFrame, sharpness: pd.DataFrame | None, p: Params, scale: Scale,
            *, spread: ds.Spread) -> Analysis:
    """Apply every decision to one scale's records with the chapter's thresholds: the gap
    decision and its two headline verdicts (with error rates at the seeds recorded, or the
    plan's seeds when none is, simulated with ``spread``), the plateau verdict, steps to
    the scale's pre-registered target (descriptive) and, when ``sharpness`` is given, the
    two sharpness verdicts."""
    th = thresholds(p)
    planned = plan_family(scale.plan, th) if scale.plan else None
    dec = dc.decide(records, th) if len(records) else dc.decide(
        pd.DataFrame(columns=list(REQUIRED_RECORD_COLUMNS)), th)
    rates = _gap_rates(dec, records, p, scale, spread, planned)
    verdicts = gap_verdicts(dec, scale, rates, planned)
    tables = {"decision": dec.table}
    tables["plateau"], v = _plateau(records, p, scale, spread)
    verdicts.append(v)
    tables["steps"], notes = (steps_to_target(records, scale.target) if len(records)
                              else (pd.DataFrame(), []))
    if sharpness is not None:
        t, vs = _sharpness(sharpness, records, p, scale)
        tables.update(t)
        verdicts += vs
    return Analysis(tables, verdicts, dec, rates, spread, notes)


def rates_table(rates: dr.HeadlineRates) -> pd.DataFrame:
    """The harness's scenarios for the two headline claims: what is true, and how often
    each claim came out supported, and the gap claim contradicted (rates with their 95%
    Wilson intervals)."""
    from sgdnoise.decide.harness import rate_of

    truths = {"no gap": "every pair fits as well and tests the same",
              "gap at the margin": "every pair fits as well and tests worse by the margin",
              "under-training": "every pair stops early on the small batch's curve",
              "one gap": "one pair fits as well and tests worse by the gap size",
              "one gap at matched fit": "one pair tests worse by the gap size at the same "
                                        "train loss, the others are under-trained",
              "residual at the margin": "every pair stops early, the margin above the curve"}
    rows = [{"scenario": name, "truth": truth,
             "gap supported": rate_of(rates.rates, name, "gap supported").format(),
             "gap contradicted": rate_of(rates.rates, name, "gap contradicted").format(),
             "under-training supported": rate_of(rates.rates, name,
                                                 "under-training supported").format()}
            for name, truth in truths.items()]
    return pd.DataFrame(rows)


def seeds_table(spread: ds.Spread, th: dc.Thresholds, *, gaps: Sequence[float],
                family_sizes: Sequence[int], end_loss: float, target: float = 0.8
                ) -> pd.DataFrame:
    """Seeds per pair that give the ``gap`` call ``target`` power
    (:func:`sgdnoise.decide.power.seeds_for_power`), one row per gap size and one column per
    family size ('> 500' when 500 seeds do not)."""
    from sgdnoise.decide.power import seeds_for_power

    rows = []
    for g in gaps:
        row: dict[str, Any] = {"gap (points)": g * 100}
        for k in family_sizes:
            n = seeds_for_power(spread, target=target, gap=g, margin=th.margin,
                                alpha=th.alpha, family_size=k,
                                loss_tolerance=th.loss_tolerance, end_loss=end_loss)
            row[f"{k} pairs"] = f"{n}" if n is not None else "> 500"
        rows.append(row)
    return pd.DataFrame(rows)


def planning_spread(candidates: Sequence[ds.Spread | None]) -> ds.Spread:
    """The first of ``candidates`` that can size error rates: a measured spread with at
    least 2 degrees of freedom and a finite test-error standard deviation. Chapter 8 passes
    (the full-scale records' own, the mid-scale CPU records', the GPU pilot's), so the
    full-scale rates use the nearest real spread that exists. Raises ValueError when none
    qualifies."""
    for sp in candidates:
        if sp is not None and sp.df >= 2 and np.isfinite(sp.sd_test_error):
            return sp
    raise ValueError("no candidate spread has >= 2 degrees of freedom: "
                     f"{[None if c is None else (c.source, c.df) for c in candidates]}")


def plan_scale(plan_path: str, records: pd.DataFrame, *, kind: str, section: str,
               target: float) -> Scale:
    """The :class:`Scale` of a CPU plan's records: the label names the records' devices,
    commits and dates (:func:`records_scale`) and the claims start with the plan's model
    and data, e.g. 'ResNet20 width 16, 10,000 CIFAR-10 images at 16×16, CPU'."""
    plan = read_plan(plan_path)
    d, m = plan["data"], plan.get("defaults", {})
    data = "CIFAR-10" if d.get("dataset") == "cifar10" else str(d.get("dataset"))
    size = d.get("image_size")
    pixels = f" at {size}×{size}" if size else ""
    n = d.get("n_train") or 50_000
    prefix = (f"{_model_name(m.get('model'))} width {m.get('width')}, {n:,} {data} "
              f"images{pixels}, CPU")
    return Scale(records_scale(records, kind), prefix, section, target, plan=plan_path)


def pilot_summary(pilot: pd.DataFrame) -> pd.DataFrame:
    """The pilot's final points, descriptive: per batch size the mean over seeds of the
    final train loss, train error and test error, and the seeds."""
    if len(pilot) == 0:
        return pd.DataFrame(columns=["B", "seeds", "train loss", "train error", "test error"])
    fin = final_points(pilot)
    g = fin.groupby("batch_size")
    return pd.DataFrame({"B": g.size().index.astype(int), "seeds": g.size().to_numpy(),
                         "train loss": g["train_loss"].mean().to_numpy(),
                         "train error": g["train_error"].mean().to_numpy(),
                         "test error": g["test_error"].mean().to_numpy()})


def run_miniature(plan_path: str, out_dir: str, *, progress: bool = False) -> pd.DataFrame:
    """Train (or resume) every run of the plan into ``out_dir`` with
    :func:`sgdnoise.sweep.run_plan` — exactly what ``sgdnoise-sweep PLAN --out DIR`` does on
    a GPU — and return the records."""
    from sgdnoise import sweep

    sweep.run_plan(plan_path, out_dir, progress=progress, log=lambda msg: None)
    return load_recorded([out_dir])


# --------------------------------------------------------------------------- presentation

#: The headline claims in a few words, in the order :func:`analyse` returns the verdicts.
TOPICS = ("a generalization gap at large batches", "the shortfall is under-training",
          "train and test error plateau", "the plateau is an edge of stability",
          "larger batches end sharper")


def _count_calls(pre: pd.DataFrame, calls: Sequence[str]) -> str:
    counts = pre["call"].value_counts()
    return join_words([f"{int(counts[c])} {c}" for c in calls if c in counts])


def _gap_reason(dec: dc.Decision, planned: pd.DataFrame | None) -> str:
    """The gap and under-training verdicts' reason in a phrase, from the decision."""
    pre = dec.preregistered()
    k = len(pre)
    missing = len(_missing_pairs(dec, planned)) if planned is not None else 0
    if k == 0:
        return (f"none of the {missing} pre-registered pairs is recorded" if missing
                else "no pre-registered pair")
    calls = _count_calls(pre, dc.CALLS)
    return f"pre-registered pairs: {calls}" + (f"; {missing} not recorded" if missing else "")


def _table_reason(table: pd.DataFrame, what: str, empty: str) -> str:
    if len(table) == 0:
        return empty
    counts = table["call"].value_counts()
    return f"{what}: " + join_words([f"{int(n)} {c}" for c, n in counts.items()])


def present_verdicts(an: Analysis, planned: pd.DataFrame | None = None) -> list[Verdict]:
    """The verdicts of :func:`analyse` with their topic (:data:`TOPICS`) and a reason in a
    phrase computed from the tables behind them (counts of the calls), for the findings
    boxes and the verdicts page; the verdicts themselves are unchanged."""
    gap_reason = _gap_reason(an.decision, planned)
    reasons = [gap_reason, gap_reason,
               _table_reason(an.tables.get("plateau", pd.DataFrame()), "error curves",
                             "no record of a constant-learning-rate arm at these batch sizes"),
               _table_reason(an.tables.get("sharpness_edge", pd.DataFrame()), "arms",
                             "no sharpness record"),
               _table_reason(an.tables.get("sharpness_trend", pd.DataFrame()), "arms",
                             "no end-of-run sharpness at two batch sizes or more")]
    return [replace(v, topic=t, reason=r)
            for v, t, r in zip(an.verdicts, TOPICS, reasons, strict=False)]


def plan_runs(plan_path: str) -> tuple[int, int, str]:
    """``(runs, tuning runs, model)`` of a plan: its training runs, the learning-rate tuning
    runs beside them, and the model in words (``'ResNet34 width 64'``)."""
    from sgdnoise import sweep

    plan = sweep.load_plan(plan_path, check_device=False)
    main = [r for r in plan.runs if r.lr_factor is None]
    models = sorted({f"{_model_name(r.config.model)} width {r.config.width}" for r in main})
    return len(main), len(plan.runs) - len(main), join_words(models)


def tuned_at_edge(dirs: Sequence[str]) -> list[str]:
    """Runs whose learning rate was tuned to the largest or smallest factor tried (the
    ``lr_choice`` their records carry): one phrase per run, e.g. ``'arm B at B = 104, seed 0:
    factor 2, the largest tried'``. A choice at the grid's edge means a factor beyond it
    was not tried and might have done better, so such runs may be tuned short of their
    best."""
    from pathlib import Path

    from sgdnoise.sweep.records import read_record_if_any

    out = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.json")) if Path(d).is_dir() else []:
            rec = read_record_if_any(path) or {}
            choice, run = rec.get("lr_choice"), rec.get("run") or {}
            if not isinstance(choice, dict) or not choice.get("candidates"):
                continue
            tried = sorted(float(c["lr_factor"]) for c in choice["candidates"])
            f = float(choice["factor"])
            side = "largest" if f == tried[-1] else "smallest" if f == tried[0] else ""
            if side and len(tried) > 1:
                out.append(f"arm {run.get('arm')} at B = {int(run.get('batch_size', 0)):,}, "
                           f"seed {run.get('seed')}: factor {f:g}, the {side} tried")
    return out


def midscale_note(midscale: pd.DataFrame, plan_path: str) -> str:
    """What the mid-scale CPU records hold, in one sentence for the findings box: the runs
    recorded out of those the plan lists, and that their verdicts speak about that scale,
    not about ResNet34 at full scale."""
    n_plan, _, model = plan_runs(plan_path)
    n_rec = len(final_points(midscale)) if len(midscale) else 0
    plan = read_plan(plan_path)
    n = plan["data"].get("n_train") or 50_000
    return (f"Mid scale on a CPU ({model}, {n:,} images): {n_rec} of the plan's {n_plan} runs "
            "recorded; its verdicts speak about that scale, and ResNet34 at full scale is "
            "still to come.")


def record_notes(recorded: pd.DataFrame, pilot: pd.DataFrame, plan_path: str,
                 miniature: pd.DataFrame | None, miniature_words: str) -> list[str]:
    """What is and is not recorded, in three sentences: the full-scale plan's runs recorded
    out of those planned, the pilot's runs (shown, not decided on) and the laptop
    miniature's runs trained in this execution (or that it was not run)."""
    n_plan, n_tune, model = plan_runs(plan_path)
    n_rec = len(final_points(recorded)) if len(recorded) else 0
    notes = [f"Full scale ({model}, all 50,000 images): {n_rec} of the plan's {n_plan} runs "
             f"recorded (and {n_tune} learning-rate tuning runs beside them)"
             + ("; its claims wait for them." if n_rec == 0 else ".")]
    if len(pilot):
        notes.append(f"GPU pilot: {len(final_points(pilot))} runs of 10 epochs "
                     f"({records_words(pilot)}): shown, not decided on.")
    else:
        notes.append("GPU pilot: no record found.")
    notes.append(f"Laptop miniature: {len(final_points(miniature))} runs of {miniature_words} "
                 "trained in this execution." if miniature is not None and len(miniature)
                 else "Laptop miniature: not run in this profile.")
    return notes


def curve_residuals(records: pd.DataFrame, arm: str) -> pd.DataFrame:
    """How far each run's end point lies from the smallest batch's test-error curve at the
    same train loss (the reference of the matched-fit comparison,
    :func:`sgdnoise.decide.calls.matched_reference`), descriptive: one row per run of
    ``B > B₀`` with ``B, seed, train loss, test error, residual`` (test error minus the
    reference, in test-error units) and ``measured``: whether the small batch of the same
    seed has an evaluation after step 0 at a loss at least as high, so that the reference
    lies on its measured curve rather than on the straight segment from initialisation."""
    runs = dc.arm_runs(records, arm)
    loss, _, test = runs.finals()
    ref, _ = dc.matched_reference(runs, loss[:, 1:])
    b0 = records[(records["arm"] == arm) & (records["batch_size"] == int(runs.batch_sizes[0]))
                 & (records["step"] > 0)]
    top = b0.groupby("seed")["train_loss"].max().to_dict()
    rows = [{"B": int(b), "seed": int(seed), "train loss": float(loss[0, j + 1, k]),
             "test error": float(test[0, j + 1, k]),
             "residual": float(test[0, j + 1, k] - ref[0, j, k]),
             "measured": bool(loss[0, j + 1, k] <= top.get(seed, -np.inf))}
            for j, b in enumerate(runs.batch_sizes[1:]) for k, seed in enumerate(runs.seeds)
            if np.isfinite(loss[0, j + 1, k])]
    return pd.DataFrame(rows, columns=["B", "seed", "train loss", "test error", "residual",
                                       "measured"])


def residual_sentence(residuals: pd.DataFrame, spread: ds.Spread) -> str:
    """What the matched-fit figure shows, in numbers: of the end points of
    :func:`curve_residuals` that lie on the small batch's measured curve, the range and
    mean of their residuals in points and the farthest one's batch size, against the
    seed-to-seed spread of the test error; and how many lie above every measured loss."""
    if len(residuals) == 0:
        return "No run beside the smallest batch has an end point to compare."
    on = residuals[residuals["measured"]]
    off = residuals[~residuals["measured"]]
    sizes = ", ".join(_thousands(b) for b in sorted(set(off["B"])))
    beyond = (f" {count_noun(len(off), 'end point', 'end points')} (at $B$ = {sizes}) "
              f"{'lies' if len(off) == 1 else 'lie'} at a higher train loss than any "
              "evaluation of the smallest batch after step 0, where its line is only the "
              "straight segment from initialisation." if len(off) else "")
    if len(on) == 0:
        return beyond.strip()
    r = on["residual"].to_numpy(float) * 100
    worst = on.iloc[int(np.argmax(np.abs(r)))]
    return (f"Measured from the line at each run's own train loss, "
            f"{count_noun(len(r), 'end point', 'end points')} on the measured curve lie "
            f"between {fmt_number(r.min(), 1)} and {fmt_number(r.max(), 1)} points of test "
            f"error from it (mean {fmt_number(r.mean(), 1)}; the farthest at "
            f"$B$ = {_thousands(int(worst['B']))}), against a seed-to-seed spread of "
            f"{spread.sd_test_error * 100:.1f} points." + beyond)


def control_arms(arms: Sequence[str], decisive: Sequence[str]) -> list[tuple[str, str]]:
    """``(control, reference)`` for every arm named ``<reference>-<variant>`` (e.g. the
    ghost-BatchNorm control ``A-ghost``) whose reference is one of ``decisive``; a control
    is read against its reference (:func:`control_comparison`), not decided on."""
    return [(a, a.split("-")[0]) for a in arms
            if a not in decisive and a.split("-")[0] in decisive]


def control_comparison(records: pd.DataFrame, control: str, reference: str
                       ) -> pd.DataFrame:
    """Each run of the ``control`` arm (e.g. arm A with ghost BatchNorm) beside the
    ``reference`` arm's run of the same batch size and seed: one row per such pair with
    ``B``, ``seed``, the final train error and test error of both (``*_ref``, ``*_ctl``)
    and ``diff`` = control − reference test error (error units). Empty when no pair
    exists."""
    cols = ["B", "seed", "train_error_ref", "train_error_ctl", "test_error_ref",
            "test_error_ctl", "diff"]
    if len(records) == 0:
        return pd.DataFrame(columns=cols)
    last = final_points(records)
    keep = ["batch_size", "seed", "train_error", "test_error"]
    ref = last[last["arm"].astype(str) == reference][keep]
    ctl = last[last["arm"].astype(str) == control][keep]
    pairs = ref.merge(ctl, on=["batch_size", "seed"], suffixes=("_ref", "_ctl"))
    pairs = pairs.rename(columns={"batch_size": "B"})
    pairs["diff"] = pairs["test_error_ctl"].astype(float) - pairs["test_error_ref"].astype(
        float)
    return pairs[cols].sort_values(["B", "seed"]).reset_index(drop=True)


def control_sentence(pairs: pd.DataFrame, spread: ds.Spread, *, what: str,
                     factor: float = 2.0) -> str:
    """What the control shows, computed: each pair's test-error difference in points,
    against ``factor`` standard deviations of a difference of two independent runs,
    ``factor · √2 · σ_e`` (``σ_e`` the seed-to-seed spread). All differences beyond it:
    ``what`` moves the test error; all within it: no sign that it does; otherwise mixed.
    One seed per pair, so it is shown, not decided on (no claim counts it)."""
    if len(pairs) == 0:
        return "No run of the control has a run of the same batch size and seed to compare."
    limit = factor * math.sqrt(2.0) * spread.sd_test_error
    d = pairs["diff"].to_numpy(float)
    parts = [f"$B$ = {_thousands(int(b))} (seed {int(s)}): {fmt_number(x * 100, 1)} points"
             for b, s, x in zip(pairs["B"], pairs["seed"], d, strict=True)]
    beyond = np.abs(d) > limit
    if beyond.all():
        reading = f"all beyond it: {what} moves the test error at this scale"
    elif not beyond.any():
        reading = f"all within it: no sign that {what} moves the test error"
    else:
        reading = f"{int(beyond.sum())} of {len(d)} beyond it: mixed"
    return (f"Control minus reference, test error: {'; '.join(parts)}. Threshold: "
            f"{fmt_number(factor, 1)} standard deviations of the difference of two runs, "
            f"{fmt_number(factor, 1)} · √2 · {spread.sd_test_error * 100:.2f} = "
            f"{limit * 100:.1f} points; {reading}. One seed per pair: shown, not decided on.")


def _thousands(b: int) -> str:
    return f"{int(b):,}"


def decision_display(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`sgdnoise.decide.calls.decide` table in the columns a reader needs, in one
    unit per quantity: arm, batch size with ``B/N``, paired seeds, the excess final train
    loss (nats) and the test-error difference or residual (points) as ``est [low, high]``
    (90% intervals), where the pair was compared, the Holm-adjusted p-value (the raw one for
    a descriptive pair) and the call."""
    shown = decision_as_text(table)
    p_holm = [h if np.isfinite(h) else p for p, h in zip(table["p (gap)"],
                                                         table["p (gap, Holm)"], strict=True)]
    return pd.DataFrame({
        "arm": shown["arm"], "B": [f"{int(b):,} ({f:.3f})" for b, f in
                                   zip(table["B"], table["B/N"], strict=True)],
        "seeds": shown["seeds"], "Δ train loss": shown["d_train_loss"].str.replace("-", "−"),
        "compared at": shown["compared at"],
        "Δ test error": shown["difference"].str.replace("-", "−"),
        "p": p_holm, "call": shown["call"]})


# --------------------------------------------------------------------------- figures


def batch_colors(batch_sizes: Iterable[int]) -> dict[int, Any]:
    """One colour per batch size on one continuous scale (viridis over ``log B``, smallest
    dark), the same in every panel: batch sizes are an ordered quantity, shown with a colour
    bar rather than a legend of as many colours."""
    norm, cmap = _batch_scale(batch_sizes)
    return {b: cmap(norm(b)) for b in sorted({int(b) for b in batch_sizes})}


def _batch_scale(batch_sizes: Iterable[int]) -> tuple[Any, Any]:
    """The log-scale norm over the batch sizes and the colour map of :func:`batch_colors`."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    sizes = sorted({int(b) for b in batch_sizes}) or [1]
    return LogNorm(vmin=sizes[0], vmax=max(sizes[-1], sizes[0] * 2)), mpl.colormaps["viridis"]


def _figsize(n_panels: int, height: float) -> tuple[float, float]:
    """At most 6.8 in wide (the text column), one panel 5.2 in."""
    return (min(2.6 * max(n_panels, 1) + 2.6, 6.8), height)


def _batch_colorbar(fig: Any, axes: Sequence[Any], batch_sizes: Iterable[int]) -> None:
    """One colour bar for all panels, labelled at the batch sizes present."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    sizes = sorted({int(b) for b in batch_sizes})
    norm, cmap = _batch_scale(sizes)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes),
                       pad=0.02, fraction=0.05, aspect=30)
    bar.set_label("batch size B")
    shown = sizes if len(sizes) <= 9 else sizes[::2]
    bar.ax.yaxis.set_major_locator(FixedLocator(shown))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.set_yticklabels([f"{b:,}" for b in shown])


def has_records(records: pd.DataFrame, arms: Sequence[str]) -> bool:
    """Whether ``records`` hold any evaluation of one of ``arms`` (a figure has data)."""
    return bool(len(records)) and bool(set(arms) & set(records["arm"].astype(str)))


def _arm_panels(records: pd.DataFrame, arms: Sequence[str], title: str, *,
                height: float) -> tuple[Any, Any, list[str]]:
    """One panel per arm present in ``records`` (shared y axis): ``(fig, axes, arms)``;
    ValueError without records of these arms (no figure is drawn without data)."""
    import matplotlib.pyplot as plt

    present = [a for a in arms if len(records) and a in set(records["arm"])]
    if not present:
        raise ValueError(f"no records of arms {list(arms)}: nothing to plot")
    arms = present
    fig, axes = plt.subplots(1, len(arms), figsize=_figsize(len(arms), height),
                             squeeze=False, sharey=True, layout="constrained")
    size = plt.rcParams["font.size"]
    # wrapped to the figure's width: a longer line (records from several commits) widens the
    # tightly cropped PNG, which the page then shrinks below 11 px text
    chars = int(fig.get_figwidth() * 72 / (0.6 * size))
    fig.suptitle(textwrap.fill(title, chars), fontsize=size)
    return fig, axes, arms


def _log_axis(ax: Any) -> None:
    """A log x axis labelled in plain numbers at the powers of ten, and at 2 and 5 times
    them too when the panel spans two decades or less (never crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    decades = math.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if 0.7 < decades <= 2 else (1.0,) if decades > 2 else (
        1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _percent_axis(ax: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def plot_matched_fit(records: pd.DataFrame, arms: Sequence[str], title: str) -> Any:
    """Test error against train loss (log axis), one panel per arm: every evaluation of the
    smallest batch as a line (one per seed), every other run's last evaluation as a marker
    coloured by its batch size (:func:`batch_colors`, one colour bar). A marker on or below
    the line at its own train loss is a run that generalizes like the small batch at the
    same fit (the ``matched train loss`` comparison of :mod:`sgdnoise.decide.calls`).
    Returns the figure; ValueError without records of ``arms``."""
    fig, axes, arms = _arm_panels(records, arms, title, height=3.6)
    norm, cmap = _batch_scale(records["batch_size"])
    for ax, arm in zip(axes[0], arms, strict=True):
        g = records[(records["arm"] == arm) & (records["train_loss"] > 0)]
        b0 = int(g["batch_size"].min())
        for _, r in g[g["batch_size"] == b0].groupby("seed"):
            r = r.sort_values("step")
            ax.plot(r["train_loss"], r["test_error"], color=cmap(norm(b0)), lw=1.2, alpha=0.8)
        fin = final_points(g)
        ax.scatter(fin["train_loss"], fin["test_error"], c=fin["batch_size"], cmap=cmap,
                   norm=norm, s=30, edgecolor="black", linewidth=0.4, zorder=3)
        _log_axis(ax)
        _percent_axis(ax)
        ax.set_title(f"arm {arm}")
        ax.set_xlabel("train loss (nats)")
    axes[0][0].set_ylabel("test error")
    _batch_colorbar(fig, axes[0], records["batch_size"])
    return fig


def plot_error_vs_step(records: pd.DataFrame, arms: Sequence[str], title: str,
                       column: str = "test_error") -> Any:
    """``column`` against the optimizer step (log axis), one panel per arm, every run one
    line coloured by its batch size (drawn as one collection per panel, one colour bar).
    Returns the figure; ValueError without records of ``arms``."""
    from matplotlib.collections import LineCollection

    fig, axes, arms = _arm_panels(records, arms, title, height=3.4)
    norm, cmap = _batch_scale(records["batch_size"])
    for ax, arm in zip(axes[0], arms, strict=True):
        g = records[(records["arm"] == arm) & (records["step"] > 0)]
        lines, sizes = [], []
        for (b, _), r in g.groupby(["batch_size", "seed"]):
            r = r.sort_values("step")
            lines.append(np.column_stack([r["step"], r[column]]))
            sizes.append(int(b))
        ax.add_collection(LineCollection(lines, colors=[cmap(norm(b)) for b in sizes],
                                         linewidths=1.1, alpha=0.85))
        ax.autoscale_view()
        _log_axis(ax)
        _percent_axis(ax)
        ax.set_xlabel("step")
        ax.set_title(f"arm {arm}")
    axes[0][0].set_ylabel(column.replace("_", " "))
    _batch_colorbar(fig, axes[0], records["batch_size"])
    return fig


def plot_sharpness(sharpness: pd.DataFrame, momentum: dict[str, float], title: str, *,
                   eos_low: float = 0.8, below_fraction: float = 0.5) -> Any:
    """``η λ_max / 2(1 + β)`` against the step, one line per run, one colour per arm; the
    stability edge at 1 (solid) and the thresholds ``eos_low`` and ``below_fraction``
    (dashed) of :func:`sharpness_edge_test`. Returns the figure; ValueError without
    sharpness records (no figure is drawn without data)."""
    import matplotlib.pyplot as plt

    from sgdnoise.plotting import PALETTE

    if len(sharpness) == 0:
        raise ValueError("no sharpness records: nothing to plot")
    fig, ax = plt.subplots(figsize=(5.2, 3.4), layout="constrained")
    arms = sorted(set(sharpness["arm"]))
    colors = {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arms)}
    for (arm, _), r in sharpness.groupby(["arm", "run_id"]):
        r = r.sort_values("step")
        ratio = r["lr"] * r["lambda_max"] / (2 * (1 + momentum.get(arm, 0.0)))
        ax.plot(r["step"], ratio, marker="o", ms=3, color=colors[arm], label=arm)
    ax.axhline(1.0, color="black", lw=1)
    for y in (eos_low, below_fraction):
        ax.axhline(y, color="grey", lw=1, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\eta\,\lambda_{\max}\,/\,2(1+\beta)$")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    fig.legend(list(uniq.values()), list(uniq), title="arm", loc="outside right center",
               frameon=False)
    fig.suptitle(title, fontsize=plt.rcParams["font.size"])
    return fig
