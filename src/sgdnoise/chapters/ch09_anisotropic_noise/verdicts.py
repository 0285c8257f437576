"""Chapter 9's statistics and verdicts: per-configuration summaries over seeds, the paired
gap analysis with equivalence tests, and the functions that turn them (and the sampler
check and the step costs) into sentences and :class:`sgdnoise.report.Verdict` records, each
with its threshold."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sgdnoise.report import Verdict
from sgdnoise.stats import paired_difference, t_interval, tost
from sgdnoise.validate import check_choice, check_positive, check_positive_int

from .params import EQUAL_EPOCHS, EQUAL_STEPS, LARGE, LARGE_STEPS, SECTION, SMALL

__all__ = [
    "NO_DIRECTIONS",
    "anisotropy_verdict",
    "budget_records",
    "budgets_with_records",
    "classify_gap",
    "cost_verdict",
    "direction_summary",
    "directions_text",
    "gap_analysis",
    "gap_verdict",
    "sampler_summary",
    "sampler_verdict",
    "summarize",
    "summary_lines",
    "unrecorded_gap_verdicts",
    "verdict_table",
]

NO_DIRECTIONS = ("Not measured at this profile: the GPU sweep keeps no trained network, so "
                 "the noise along the sharpest directions is measured only where the "
                 "notebook trains (the smoke and default profiles).")


def direction_summary(directions: pd.DataFrame, draws: int) -> str:
    """One Markdown sentence from :func:`directional_variance`: each kind's variance ratio
    along the sharpest direction, the kind closest to SGD there (smallest ``|log ratio|``) and
    the Monte Carlo relative error sqrt(2/S) of a Gaussian ratio from S = ``draws`` draws."""
    draws = check_positive_int("draws", draws)
    top = directions[directions["direction"] == 1].set_index("kind")["ratio"]
    if top.empty:
        raise ValueError("directions holds no row for direction 1")
    closest = top.apply(lambda r: abs(np.log(r))).idxmin()
    return ("Along the sharpest direction the noise variance relative to SGD's is "
            + ", ".join(f"`{k}` {v:.3g}" for k, v in top.items())
            + f"; the kind closest to SGD there (ratio nearest 1 on a log scale) is "
            f"`{closest}`. For Gaussian noise each ratio carries a Monte Carlo relative "
            f"error of about $\\sqrt{{2/S}}$ = {np.sqrt(2 / draws):.2f} with S = {draws} draws.")


def directions_text(directions: pd.DataFrame, draws: int) -> str:
    """:func:`direction_summary`, or :data:`NO_DIRECTIONS` when nothing was measured."""
    if directions.empty or directions["ratio"].isna().all():
        return NO_DIRECTIONS
    return direction_summary(directions, draws)


def sampler_summary(check: pd.DataFrame, z_max: float) -> str:
    """One Markdown sentence from :func:`covariance_check`: the largest z (error in sampling
    RMS errors), its kind, and whether every sampler is below ``z_max``."""
    z_max = check_positive("z_max", z_max)
    worst = check.loc[check["z"].idxmax()]
    ok = bool(check["z"].max() < z_max)
    return (f"Largest error / sampling RMS error: **{worst['z']:.2f}** (kind `{worst['kind']}`). "
            + (f"All {len(check)} samplers match their target covariances to within "
               f"{z_max:g} sampling errors." if ok else
               f"At least one sampler misses its target by more than {z_max:g} sampling "
               "errors."))


def sampler_verdict(check: pd.DataFrame, z_max: float, scale: str) -> Verdict:
    """Supported when every kind's covariance error is below ``z_max`` sampling RMS errors
    (a correct sampler exceeds 3 with probability below 1/9, by Markov's
    inequality on the squared error), else
    contradicted."""
    z_max = check_positive("z_max", z_max)
    worst = check.loc[check["z"].idxmax()]
    ok = bool(check["z"].max() < z_max)
    sentence = (f"Largest covariance error {worst['z']:.2f} sampling RMS errors "
                f"(`{worst['kind']}`), {'below' if ok else 'above'} the threshold {z_max:g}.")
    return Verdict(
        claim="Each sampler draws noise whose covariance is the one derived for its kind.",
        outcome="supported" if ok else "contradicted", sentence=sentence, scale=scale,
        section="sec-ch9-check")


def summarize(records: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per config (in first-seen order): seeds, mean ± CI half-width (Student t over seeds,
    :func:`sgdnoise.stats.t_interval`) of test error, train error, generalisation gap
    (test − train error) and sharpness, and the mean noise seconds per step (no row, but
    these columns, when there is no record)."""
    if records.empty:
        stats = [c for n in ("test_error", "train_error", "gen_gap", "sharpness")
                 for c in (n, f"{n}_ci")]
        return pd.DataFrame(columns=["label", "kind", "batch_size", "seeds", "diverged",
                                     *stats, "noise_s_per_step"])
    out = []
    for label, grp in records.groupby("label", sort=False):
        row = dict(label=label, kind=grp["kind"].iloc[0],
                   batch_size=int(grp["batch_size"].iloc[0]), seeds=len(grp),
                   diverged=int((grp["status"] != "finished").sum()))
        gap = grp["test_error"] - grp["train_error"]
        for name, vals in (("test_error", grp["test_error"]),
                           ("train_error", grp["train_error"]),
                           ("gen_gap", gap), ("sharpness", grp["sharpness"])):
            iv = t_interval(vals.tolist(), confidence)
            row[name], row[f"{name}_ci"] = iv.estimate, iv.half_width
        row["noise_s_per_step"] = float((grp["noise_seconds"] / grp["steps"]).mean())
        out.append(row)
    return pd.DataFrame(out)


def budget_records(records: pd.DataFrame, budget: str) -> pd.DataFrame:
    """The rows of one budget plus small-batch SGD (the reference of both budgets: at its
    own epochs it defines the step count the equal-steps arm matches)."""
    check_choice("budget", budget, (EQUAL_EPOCHS, EQUAL_STEPS))
    keep = (records["budget"] == budget) | (records["label"] == SMALL)
    return records[keep]


def gap_analysis(
    records: pd.DataFrame,
    *,
    margin: float,
    small_label: str = SMALL,
    large_label: str = LARGE,
    metric: str = "test_error",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Paired (same seed) comparisons of every config with small- and large-batch SGD.

    For config c and seed s let ``d_s = c_s − small_s`` (``metric``, e.g. test error).
    Columns: label, mean, diff_small = mean_s d_s and its two-sided ``confidence`` t-interval
    half-width diff_small_ci, diff_large likewise against large-batch SGD alone; the TOST
    equivalence test (:func:`sgdnoise.stats.tost`) of d against ``±margin`` at level
    α = 1 − confidence: equiv_low / equiv_high (its 1 − 2α interval) and ``equivalent``
    (that interval inside (−margin, margin)); and ``closed`` = (large − config) /
    (large − small) on the seed means: the fraction of the gap the config closes (1: all,
    0: none, < 0: worse than large-batch alone)."""
    margin = check_positive("margin", margin)
    alpha = 1.0 - confidence
    piv = records.pivot_table(index="seed", columns="label", values=metric, aggfunc="first")
    if small_label not in piv or large_label not in piv:
        raise ValueError(f"records must contain the labels {small_label!r} and {large_label!r}")
    small, large = piv[small_label], piv[large_label]
    gap = float(large.mean() - small.mean())
    out = []
    for label in dict.fromkeys(records["label"]):
        col = piv[label]
        ds = paired_difference(col, small, confidence)
        dl = paired_difference(col, large, confidence)
        eq = tost((col - small).to_numpy(), margin, alpha)
        closed = (float(large.mean() - col.mean()) / gap) if gap != 0 else float("nan")
        out.append(dict(label=label, mean=float(col.mean()), diff_small=ds.estimate,
                        diff_small_ci=ds.half_width, diff_large=dl.estimate,
                        diff_large_ci=dl.half_width, closed=closed,
                        equiv_low=eq.interval.low, equiv_high=eq.interval.high,
                        equivalent=bool(eq.equivalent) and label != small_label))
    return pd.DataFrame(out)


def classify_gap(gaps: pd.DataFrame, *, small_label: str = SMALL,
                 large_label: str = LARGE) -> pd.DataFrame:
    """Adds a ``verdict`` column to :func:`gap_analysis` output, from the paired intervals
    and the equivalence test:

    - "closes the gap": significantly better than large-batch SGD alone (the diff_large
      interval lies below 0) and *equivalent* to small-batch SGD (TOST within ±margin);
    - "narrows the gap": significantly better than large-batch SGD alone and significantly
      worse than small-batch SGD (the diff_small interval lies above 0);
    - "narrows, equivalence inconclusive": better than large-batch SGD alone, neither
      equivalent to nor significantly worse than small-batch SGD;
    - "worse than large-batch SGD": the diff_large interval lies above 0;
    - "inconclusive" otherwise. The two references get "reference".

    If large-batch SGD is not significantly worse than small-batch SGD there is no resolved
    gap to close, and a significant improvement over large-batch SGD is called "better than
    large-batch SGD (no gap)". NaN intervals (a single seed) never count as significant."""
    out = gaps.copy()
    ref = out.set_index("label")
    if large_label not in ref.index:
        raise ValueError(f"gaps must contain the label {large_label!r}")
    g, g_ci = ref.loc[large_label, "diff_small"], ref.loc[large_label, "diff_small_ci"]
    gap_exists = bool(np.isfinite(g_ci) and g - g_ci > 0)

    def verdict(row) -> str:
        if row["label"] in (small_label, large_label):
            return "reference"
        dl, dl_ci = row["diff_large"], row["diff_large_ci"]
        ds, ds_ci = row["diff_small"], row["diff_small_ci"]
        better = bool(np.isfinite(dl_ci) and dl + dl_ci < 0)
        worse = bool(np.isfinite(dl_ci) and dl - dl_ci > 0)
        worse_than_small = bool(np.isfinite(ds_ci) and ds - ds_ci > 0)
        if better and not gap_exists:
            return "better than large-batch SGD (no gap)"
        if better and bool(row["equivalent"]):
            return "closes the gap"
        if better and worse_than_small:
            return "narrows the gap"
        if better:
            return "narrows, equivalence inconclusive"
        if worse:
            return "worse than large-batch SGD"
        return "inconclusive"

    out["verdict"] = [verdict(r) for _, r in out.iterrows()]
    return out


def gap_verdict(
    gaps: pd.DataFrame,
    *,
    budget: str,
    margin: float,
    alpha: float,
    scale: str,
    small_label: str = SMALL,
    large_label: str = LARGE,
) -> Verdict:
    """The chapter's answer, at one budget, to "large-batch SGD plus injected noise matches
    small-batch SGD's test error", from :func:`classify_gap` output.

    - inconclusive when no gap is resolved (the 1 − α interval of large − small does not lie
      above 0): there is nothing for the noise to close;
    - supported when at least one noisy config "closes the gap" (better than large-batch
      alone and TOST-equivalent to small-batch SGD within ±``margin`` at level α);
    - contradicted when every noisy config is significantly worse than small-batch SGD;
    - inconclusive otherwise (no config shown equivalent, not all shown worse)."""
    check_choice("budget", budget, (EQUAL_EPOCHS, EQUAL_STEPS))
    margin = check_positive("margin", margin)
    ref = gaps.set_index("label")
    if large_label not in ref.index or "verdict" not in gaps:
        raise ValueError(f"gaps must be classify_gap output with the label {large_label!r}")
    g, g_ci = ref.loc[large_label, "diff_small"], ref.loc[large_label, "diff_small_ci"]
    claim = (f"At {budget}, large-batch SGD plus noise with SGD's covariance matches the test "
             "error of small-batch SGD.")
    pct = 100.0
    gap_text = (f"large − small batch test error {pct * g:+.1f} ± {pct * g_ci:.1f} points "
                f"({100 * (1 - alpha):.0f}% paired interval)")
    noisy = gaps[~gaps["label"].isin([small_label, large_label])]
    if not (np.isfinite(g_ci) and g - g_ci > 0):
        return Verdict(claim, "inconclusive",
                       f"No large-batch deficit resolved at {budget}: {gap_text}; nothing "
                       "for the noise to close.", scale, SECTION)
    closers = noisy[noisy["verdict"] == "closes the gap"]["label"].tolist()
    worse = noisy[(noisy["diff_small"] - noisy["diff_small_ci"]) > 0]["label"].tolist()
    rule = f"equivalence margin ±{pct * margin:.1f} points, TOST at α = {alpha:g}"
    if closers:
        return Verdict(claim, "supported",
                       f"{', '.join(closers)} closes the gap ({gap_text}): better than "
                       f"large-batch SGD alone and equivalent to small-batch SGD ({rule}).",
                       scale, SECTION)
    if len(noisy) and len(worse) == len(noisy):
        best = noisy.loc[noisy["diff_small"].idxmin()]
        return Verdict(claim, "contradicted",
                       f"Every noisy configuration stays significantly worse than small-batch "
                       f"SGD ({gap_text}); the closest, {best['label']}, by "
                       f"{pct * best['diff_small']:+.1f} ± {pct * best['diff_small_ci']:.1f} "
                       "points.", scale, SECTION)
    return Verdict(claim, "inconclusive",
                   f"A gap is resolved ({gap_text}) but no noisy configuration is shown "
                   f"equivalent to small-batch SGD ({rule}) and not all are shown worse.",
                   scale, SECTION)


def anisotropy_verdict(
    records: pd.DataFrame,
    *,
    margin: float,
    alpha: float,
    scale: str,
    anisotropic: str = "LB + subsampled",
    isotropic: str = "LB + isotropic",
    metric: str = "test_error",
) -> Verdict:
    """Zhu et al. (2019): noise with SGD's anisotropic covariance regularises better than
    isotropic noise of the same trace. Paired over seeds, d = anisotropic − isotropic test
    error; supported when the 1 − α interval of d lies below 0; contradicted when it lies
    above 0 or when TOST shows ``|d|`` < ``margin`` (no difference of practical size);
    inconclusive otherwise."""
    margin = check_positive("margin", margin)
    piv = records.pivot_table(index="seed", columns="label", values=metric, aggfunc="first")
    claim = ("Noise with SGD's anisotropic covariance generalises better than isotropic noise "
             "of the same trace (Zhu et al. 2019).")
    if anisotropic not in piv or isotropic not in piv:
        return Verdict(claim, "inconclusive",
                       f"Not tested: the run lacks {anisotropic!r} or {isotropic!r}.",
                       scale, SECTION)
    d = (piv[anisotropic] - piv[isotropic]).to_numpy()
    iv = t_interval(d, 1 - alpha)
    eq = tost(d, margin, alpha)
    text = (f"{anisotropic} − {isotropic} test error {100 * iv.estimate:+.1f} points, "
            f"{100 * (1 - alpha):.0f}% interval [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]")
    if iv.below(0.0):
        return Verdict(claim, "supported", f"{text}: lower with anisotropic noise.",
                       scale, SECTION)
    if iv.above(0.0):
        return Verdict(claim, "contradicted", f"{text}: higher with anisotropic noise.",
                       scale, SECTION)
    if eq.equivalent:
        return Verdict(claim, "contradicted",
                       f"{text}: equivalent within ±{100 * margin:.1f} points (TOST at "
                       f"α = {alpha:g}).", scale, SECTION)
    return Verdict(claim, "inconclusive",
                   f"{text}: neither resolved nor equivalent within ±{100 * margin:.1f} "
                   "points.", scale, SECTION)


def summary_lines(
    table: pd.DataFrame,
    gaps: pd.DataFrame,
    costs: pd.DataFrame,
    goals: Mapping[str, float],
    *,
    small_label: str = SMALL,
    large_label: str = LARGE,
    confidence: float = 0.95,
) -> str:
    """The Markdown summary of one budget, computed from :func:`verdict_table`,
    :func:`classify_gap` and :func:`measure_step_costs` output: the gap and whether its
    interval excludes 0, the kinds per verdict, slower optimisation (mean train error above
    large-batch SGD's by more than the config's own interval), the best noisy config,
    sharpness range and each cost against its goal in ``goals``. ``confidence`` is the
    level of the intervals in ``gaps`` (only named in the text)."""
    ref = gaps.set_index("label")
    tab = table.set_index("label")
    gap_size = ref.loc[large_label, "mean"] - ref.loc[small_label, "mean"]
    gap_ci = ref.loc[large_label, "diff_small_ci"]
    gap_significant = bool(pd.notna(gap_ci) and abs(gap_size) > gap_ci)
    noisy = table[~table["label"].isin([small_label, large_label])]
    if noisy.empty:
        raise ValueError("table holds no noisy configuration")

    def named(verdict: str) -> str:
        labels = noisy[noisy["verdict"] == verdict]["label"].tolist()
        return ", ".join(labels) if labels else "none"

    worse = named("worse than large-batch SGD")
    slower = noisy[noisy["train_error"] > tab.loc[large_label, "train_error"]
                   + noisy["train_error_ci"].fillna(0)]["label"].tolist()
    best = noisy.loc[noisy["test_error"].idxmin()]
    lines = [
        f"- {large_label} ends at test error {tab.loc[large_label, 'test_error']:.3f} "
        f"against {tab.loc[small_label, 'test_error']:.3f} for small-batch SGD: a gap of "
        f"{gap_size:+.3f} (paired {100 * confidence:.0f}% interval ±{gap_ci:.3f}; "
        f"{'significant' if gap_significant else 'not significant at this scale'}), with "
        f"train errors {tab.loc[large_label, 'train_error']:.3f} and "
        f"{tab.loc[small_label, 'train_error']:.3f}.",
        (f"- Kinds that close the gap (TOST-equivalent to small-batch SGD): "
         f"{named('closes the gap')}; that narrow it: {named('narrows the gap')}; better "
         f"than large-batch SGD with equivalence inconclusive: "
         f"{named('narrows, equivalence inconclusive')}."
         if gap_significant else
         f"- There is no gap to close at this scale; kinds significantly better than "
         f"large-batch SGD alone: {named('better than large-batch SGD (no gap)')}."),
        f"- Significantly worse than large-batch SGD alone: {worse}. Noisy runs whose mean "
        f"train error exceeds large-batch SGD's by more than their own interval (slower "
        f"optimisation): {', '.join(slower) if slower else 'none'}.",
        f"- Best noisy configuration: {best['label']} at test error "
        f"{best['test_error']:.3f} ± {best['test_error_ci']:.3f} (verdict: {best['verdict']}"
        + (f"; closes {100 * best['closed']:.0f}% of the gap" if gap_significant else "")
        + (f"; step cost {best['step_cost']:.2f}x a plain large-batch step)."
           if "step_cost" in best and pd.notna(best["step_cost"]) else ")."),
        f"- Sharpness: small batch {tab.loc[small_label, 'sharpness']:.1f}, large batch "
        f"{tab.loc[large_label, 'sharpness']:.1f}, noisy runs from {noisy['sharpness'].min():.1f} "
        f"({noisy.loc[noisy['sharpness'].idxmin(), 'label']}) to "
        f"{noisy['sharpness'].max():.1f} ({noisy.loc[noisy['sharpness'].idxmax(), 'label']}).",
    ]
    cost_of = dict(zip(costs["kind"], costs["ratio"], strict=True))
    for kind, goal in goals.items():
        if kind in cost_of:
            lines.append(f"- Cost of `{kind}`: {cost_of[kind]:.2f}x a plain step (goal <= "
                         f"{goal}x, {'met' if cost_of[kind] <= goal else 'missed'}).")
    return "\n".join(lines)


def cost_verdict(costs: pd.DataFrame, goals: Mapping[str, float], scale: str) -> Verdict:
    """The project's cost goal (issue 11): a noisy step costs at most ``goals[kind]`` plain
    large-batch steps. Supported when every measured kind with a goal meets it, contradicted
    when none does, mixed otherwise; inconclusive when no kind with a goal was timed. The
    hessian kind's cost depends on its Lanczos steps k: the sentence names the k that was
    timed (column ``lanczos_steps`` of :func:`measure_step_costs`, when present)."""
    ratio = dict(zip(costs["kind"], costs["ratio"], strict=True))
    steps = (dict(zip(costs["kind"], costs["lanczos_steps"], strict=True))
             if "lanczos_steps" in costs.columns else {})
    timed = [(k, g) for k, g in goals.items() if k in ratio]
    claim = ("A step with sub-sampled or curvature-shaped noise costs at most its stated "
             "multiple of a plain large-batch step.")
    if not timed:
        return Verdict(claim, "inconclusive", "No kind with a cost goal was timed.", scale,
                       "sec-ch9-cost")
    met = [k for k, g in timed if ratio[k] <= g]

    def with_k(kind: str) -> str:
        k = steps.get(kind)
        return f", k = {int(k)} Lanczos steps" if k is not None and pd.notna(k) else ""

    text = "; ".join(f"`{k}` {ratio[k]:.2f}x (goal ≤ {g:g}x{with_k(k)})" for k, g in timed)
    outcome = ("supported" if len(met) == len(timed) else
               "contradicted" if not met else "mixed")
    return Verdict(claim, outcome, f"Median step time over a plain step: {text}.", scale,
                   "sec-ch9-cost")


def verdict_table(
    summary: pd.DataFrame, gaps: pd.DataFrame, costs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per config of ``gaps`` joining :func:`summarize` (test / train error and
    sharpness with CI half-widths), :func:`classify_gap` (fraction of the gap closed,
    verdict) and, when given, :func:`measure_step_costs` (``step_cost`` = time per step /
    plain large-batch step, by kind: 1 for large-batch SGD, NaN for small-batch SGD, whose
    steps are smaller)."""
    cols = ["label", "kind", "test_error", "test_error_ci", "train_error", "train_error_ci",
            "sharpness", "sharpness_ci"]
    out = summary[cols].merge(gaps[["label", "closed", "verdict"]], on="label", how="inner")
    if costs is not None:
        ratio = dict(zip(costs["kind"], costs["ratio"], strict=True))
        out["step_cost"] = [float("nan") if lab == SMALL else ratio.get(k, float("nan"))
                            for lab, k in zip(out["label"], out["kind"], strict=True)]
    return out


def budgets_with_records(records: pd.DataFrame, equal_steps: bool) -> list[str]:
    """The budgets (:data:`EQUAL_EPOCHS`, and :data:`EQUAL_STEPS` when ``equal_steps``) whose
    gap can be analysed from ``records``: small-batch SGD, that budget's large-batch SGD and
    at least one noisy configuration have records. Where the notebook trains, every budget."""
    out = []
    for budget in [EQUAL_EPOCHS] + ([EQUAL_STEPS] if equal_steps else []):
        large = LARGE if budget == EQUAL_EPOCHS else LARGE_STEPS
        labels = set(budget_records(records, budget)["label"]) if len(records) else set()
        if {SMALL, large} <= labels and labels - {SMALL, large}:
            out.append(budget)
    return out


def unrecorded_gap_verdicts(records: pd.DataFrame, equal_steps: bool, *, margin: float,
                            alpha: float, scale: str) -> list[Verdict]:
    """The gap verdict (the claim of :func:`gap_verdict`) of each budget that
    :func:`budgets_with_records` leaves out: inconclusive, naming what has no record."""
    out = []
    for budget in [EQUAL_EPOCHS] + ([EQUAL_STEPS] if equal_steps else []):
        if budget in budgets_with_records(records, equal_steps):
            continue
        large = LARGE if budget == EQUAL_EPOCHS else LARGE_STEPS
        labels = set(budget_records(records, budget)["label"]) if len(records) else set()
        absent = [lab for lab in (SMALL, large) if lab not in labels]
        if not labels - {SMALL, large}:
            absent.append("any noisy configuration")
        stub = pd.DataFrame({"label": [SMALL, large], "diff_small": [0.0, math.nan],
                             "diff_small_ci": [math.nan, math.nan],
                             "verdict": ["reference", "reference"]})
        claim = gap_verdict(stub, budget=budget, margin=margin, alpha=alpha, scale=scale,
                            large_label=large)
        out.append(dataclasses.replace(
            claim, outcome="inconclusive",
            sentence=f"Not tested at {budget}: no record of {', '.join(absent)}."))
    return out
