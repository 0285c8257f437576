"""Chapter 9's statistics and verdicts: per-configuration summaries over seeds, the gap
verdicts from the rule of :mod:`~sgdnoise.chapters.ch09_anisotropic_noise.decision` with
their error rates, the anisotropy verdict, the sampler check (a derivation check) and the
descriptive step costs, each turned into sentences and
:class:`sgdnoise.report.Verdict` records with its threshold."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from sgdnoise.decide.harness import Scenario, error_rates, rate_of
from sgdnoise.decide.pvalues import one_sided
from sgdnoise.report import Verdict
from sgdnoise.stats import t_interval
from sgdnoise.validate import check_choice, check_positive, check_positive_int

from .costs import HessianCostParts
from .decision import CALLS, GapRates, GapTest, gap_rates, paired_spread
from .params import EQUAL_EPOCHS, EQUAL_STEPS, LARGE, LARGE_STEPS, SECTION, SMALL

__all__ = [
    "DECIDED_BUDGETS",
    "NO_DIRECTIONS",
    "anisotropy_verdict",
    "budget_records",
    "budgets_with_records",
    "anisotropy_codes",
    "anisotropy_rates",
    "COST_BOUND_CALLS",
    "cost_bound_call",
    "cost_bound_sentence",
    "cost_summary",
    "direction_summary",
    "directions_text",
    "gap_claim",
    "gap_verdict",
    "rates_for",
    "sampler_summary",
    "sampler_verdict",
    "summarize",
    "summary_lines",
    "unrecorded_gap_verdicts",
    "verdict_table",
]

#: the budget whose gap is decided: equal steps (the essay's comparison). At equal epochs
#: a large batch takes B/b times fewer steps at the same η, so its deficit is foregone; that
#: budget is shown as a control, without a verdict.
DECIDED_BUDGETS = (EQUAL_STEPS,)

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
            + ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in top.items())
            + f"; the kind closest to SGD there (ratio nearest 1 on a log scale) is "
            f"{closest.replace('_', ' ')}. For Gaussian noise each ratio carries a Monte "
            f"Carlo relative error of about $\\sqrt{{2/S}}$ = {np.sqrt(2 / draws):.2f} with "
            f"S = {draws} draws.")


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
    return (f"Largest error / sampling RMS error: **{worst['z']:.2f}** "
            f"({worst['kind'].replace('_', ' ')} kind). "
            + (f"All {len(check)} samplers match their target covariances to within "
               f"{z_max:g} sampling errors." if ok else
               f"At least one sampler misses its target by more than {z_max:g} sampling "
               "errors."))


def sampler_verdict(check: pd.DataFrame, z_max: float, scale: str) -> Verdict:
    """A derivation check (the code draws what the algebra says): supported when every
    kind's covariance error is below ``z_max`` sampling RMS errors (a correct sampler exceeds
    3 with probability below 1/9, by Markov's inequality on the squared error), else
    contradicted. Only rows where the square root is exact take part (``lanczos_steps``
    missing, None or the largest k of the table): the error of a truncated Lanczos
    approximation is an approximation error, reported beside the check, not a wrong
    derivation."""
    z_max = check_positive("z_max", z_max)
    exact = check
    if "lanczos_steps" in check.columns and check["lanczos_steps"].notna().any():
        k = check["lanczos_steps"]
        exact = check[k.isna() | (k == k.max())]
    worst = exact.loc[exact["z"].idxmax()]
    ok = bool(exact["z"].max() < z_max)
    sentence = (f"Largest covariance error {worst['z']:.2f} sampling RMS errors "
                f"({worst['kind'].replace('_', ' ')} kind), {'below' if ok else 'above'} "
                f"the threshold {z_max:g}, with exact square roots.")
    return Verdict(
        claim="Each sampler draws noise whose covariance is the one derived for its kind.",
        outcome="supported" if ok else "contradicted", sentence=sentence, scale=scale,
        section="sec-ch9-check", kind="derivation check")


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


def gap_claim(budget: str, fraction: float) -> str:
    """The claim the gap verdict of one budget decides."""
    return (f"At {budget}, large-batch SGD plus noise with SGD's covariance closes at least "
            f"{fraction:.0%} of the test-error gap between large- and small-batch SGD.")


def _family_text(test: GapTest) -> str:
    n = len(test.family)
    return ("the one noisy configuration" if n == 1 else
            f"the {n} noisy configurations (Holm's correction over the {n})")


def gap_verdict(test: GapTest, *, budget: str, scale: str,
                rates: GapRates | None = None) -> Verdict:
    """The claim of :func:`gap_claim`, decided by :func:`gap_test` (the rule of
    :mod:`~sgdnoise.chapters.ch09_anisotropic_noise.decision`): inconclusive when the gap is
    not resolved (nothing to close); supported when some configuration of the family is
    shown to close at least the fraction f (one-sided test, Holm over the family);
    contradicted when every one is shown to fall short of it; inconclusive otherwise.
    A claim about SGD; ``rates`` (:func:`gap_rates`) adds its false-positive rate and
    power."""
    check_choice("budget", budget, (EQUAL_EPOCHS, EQUAL_STEPS))
    pct = 100.0
    gap_text = (f"large- minus small-batch test error {pct * test.gap:+.1f} points over "
                f"{test.n_seeds} seeds (one-sided {1 - test.alpha:.0%} lower bound "
                f"{pct * test.gap_low:+.1f})")
    rule = (f"rule: a configuration closes {test.fraction:.0%} of the gap when its test "
            f"error minus {test.fraction:g} times small-batch SGD's and {1 - test.fraction:g} "
            f"times large-batch SGD's is below 0 by a one-sided t-test across seeds at "
            f"level {test.alpha:g}, over {_family_text(test)}")
    tab = test.table.set_index("label")
    fam = tab.loc[list(test.family)]
    if test.no_gap:
        sentence = (f"No large-batch deficit resolved at {budget}: {gap_text}; nothing for "
                    "the noise to close.")
    elif test.outcome == "supported":
        who = fam[fam["call"] == CALLS[0]]
        sentence = (f"{gap_text}. " + "; ".join(
            f"{lab} closes {r['closed']:.0%} of it (adjusted p = {r['p_closes']:.3f})"
            for lab, r in who.iterrows()) + f"; {rule}.")
    else:
        best = fam["closed"].idxmax()
        what = ("every configuration is shown to fall short" if test.outcome == "contradicted"
                else "no configuration is shown to close it, and not all are shown short")
        sentence = (f"{gap_text}: {what}; the best, {best}, closes "
                    f"{fam.loc[best, 'closed']:.0%} of it; {rule}.")
    v = Verdict(gap_claim(budget, test.fraction), test.outcome, sentence, scale, SECTION)
    if rates is None:
        return v
    return v.with_rates(rates)


def rates_for(test: GapTest, records: pd.DataFrame, *, n_sim: int,
              seed: int = 0) -> GapRates | None:
    """:func:`gap_rates` at the seeds of ``test``, with the spread measured on the records
    of its references and family (:func:`paired_spread`) and the measured gap (twice the
    spread where the measured gap is smaller); None without two complete seeds."""
    labels = [test.table["label"].iloc[0], test.table["label"].iloc[1], *test.family]
    sd, df = paired_spread(records[records["label"].isin(labels)], labels)
    if df < 1 or not sd > 0 or test.n_seeds < 2:
        return None
    gap = test.gap if test.gap > 2 * sd else 2 * sd
    source = (f"pooled over the {len(labels)} configurations of this budget, {df} degree"
              + ("s" if df != 1 else "") + " of freedom" + ("" if gap == test.gap else
                              "; the measured gap is below twice that spread, so the rates "
                              "are simulated at twice the spread"))
    return gap_rates(gap=gap, sd=sd, sd_source=f"({source})", n_seeds=test.n_seeds,
                     n_configs=len(test.family), fraction=test.fraction, alpha=test.alpha,
                     n_sim=n_sim, seed=seed)


def anisotropy_codes(d: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """The anisotropy rule on many data sets: ``d: (n_sim, n_seeds)`` paired differences
    (anisotropic − isotropic test error). Codes: 0 supported (two-sided ``1 − α`` interval
    below 0: one-sided p at ``α/2``), 1 contradicted (interval above 0, or equivalent
    within ``±margin`` by two one-sided tests at ``α``), 2 inconclusive."""
    t0 = one_sided(d, 0.0)
    lo, hi = one_sided(d, -margin), one_sided(d, margin)
    equivalent = np.maximum(lo.p_greater, hi.p_less) <= alpha
    return np.where(t0.p_less <= alpha / 2, 0,
                    np.where((t0.p_greater <= alpha / 2) | equivalent, 1, 2))


def anisotropy_rates(*, effect: float, sd: float, sd_source: str, n_seeds: int,
                     margin: float, alpha: float, n_sim: int = 2000, seed: int = 0
                     ) -> tuple[float, float, str]:
    """False-positive rate (supported when the two kinds are equally good) and power
    (supported when anisotropic noise is better by ``effect``) of :func:`anisotropy_codes`,
    with independent normal test errors of standard deviation ``sd`` per kind and seed;
    returns ``(false_positive, power, conditions)``."""
    def simulate(mean: float):
        def run(n: int, rng: np.random.Generator) -> np.ndarray:
            return mean + np.sqrt(2.0) * sd * rng.standard_normal((n, n_seeds))
        return run

    def rule(d: np.ndarray) -> np.ndarray:
        return np.asarray(OUTCOMES3, dtype=object)[anisotropy_codes(d, margin, alpha)]

    rates = error_rates(rule, [Scenario("equal", "the two kinds are equally good",
                                        simulate(0.0)),
                               Scenario("better", "anisotropic noise is better",
                                        simulate(-effect))], n_sim=n_sim, seed=seed)
    return (rate_of(rates, "equal", "supported").rate,
            rate_of(rates, "better", "supported").rate,
            f"a true advantage of {100 * effect:.1f} points, seed-to-seed spread of "
            f"{100 * sd:.2f} points of test error {sd_source}")


OUTCOMES3 = ("supported", "contradicted", "inconclusive")


def anisotropy_verdict(
    records: pd.DataFrame,
    *,
    margin: float,
    alpha: float,
    scale: str,
    anisotropic: str = "LB + subsampled",
    isotropic: str = "LB + isotropic",
    metric: str = "test_error",
    n_sim: int = 0,
) -> Verdict:
    """Zhu et al. (2019): noise with SGD's anisotropic covariance regularises better than
    isotropic noise of the same trace. Paired over seeds, d = anisotropic − isotropic test
    error, decided by :func:`anisotropy_codes` (supported when the two-sided 1 − α interval
    of d lies below 0; contradicted when it lies above 0 or when two one-sided tests show
    ``|d|`` < ``margin``; inconclusive otherwise). A claim about SGD; with ``n_sim`` > 0 its
    error rates (:func:`anisotropy_rates`, at a true advantage of twice the margin and the
    spread of the records, :func:`paired_spread`) are added."""
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
    code = int(anisotropy_codes(d[None], margin, alpha)[0])
    text = (f"{anisotropic} − {isotropic} test error {100 * iv.estimate:+.1f} points over "
            f"{int(np.isfinite(d).sum())} seeds, {100 * (1 - alpha):.0f}% interval "
            f"[{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]")
    why = ("lower with anisotropic noise" if code == 0 else
           "higher with anisotropic noise" if iv.above(0.0) else
           f"equivalent within ±{100 * margin:.1f} points (two one-sided tests at "
           f"α = {alpha:g})" if code == 1 else
           f"neither resolved nor equivalent within ±{100 * margin:.1f} points")
    v = Verdict(claim, OUTCOMES3[code], f"{text}: {why}.", scale, SECTION)
    sd, df = paired_spread(records, [anisotropic, isotropic], metric)
    if n_sim <= 0 or df < 1 or not sd > 0:
        return v
    fp, power, at = anisotropy_rates(effect=2 * margin, sd=sd,
                                     sd_source=f"({df} degree{'s' if df != 1 else ''} of "
                                     "freedom)",
                                     n_seeds=int(np.isfinite(d).sum()), margin=margin,
                                     alpha=alpha, n_sim=n_sim)
    return v.with_error_rates(false_positive_rate=fp, power=power,
                              n_seeds=int(np.isfinite(d).sum()), n_sim=n_sim, rates_at=at)


def summary_lines(table: pd.DataFrame, test: GapTest, costs: pd.DataFrame) -> str:
    """The Markdown summary of one budget, from :func:`verdict_table` and :func:`gap_test`
    output: the gap and whether it is resolved, the configurations per call, slower
    optimisation (mean train error above large-batch SGD's by more than the configuration's
    own interval), the best configuration of the family, the sharpness range and each kind's
    step time relative to a plain step (descriptive: no verdict rests on it)."""
    tab = table.set_index("label")
    small, large = test.table["label"].iloc[0], test.table["label"].iloc[1]
    noisy = table[table["label"].isin(test.family)]
    if noisy.empty:
        raise ValueError("table holds no configuration of the family")

    def named(call: str) -> str:
        labels = noisy[noisy["call"] == call]["label"].tolist()
        return ", ".join(labels) if labels else "none"

    slower = noisy[noisy["train_error"] > tab.loc[large, "train_error"]
                   + noisy["train_error_ci"].fillna(0)]["label"].tolist()
    best = noisy.loc[noisy["test_error"].idxmin()]
    f = f"{test.fraction:.0%}"
    lines = [
        f"- {large} ends at test error {100 * tab.loc[large, 'test_error']:.1f}% against "
        f"{100 * tab.loc[small, 'test_error']:.1f}% for small-batch SGD: a gap of "
        f"{100 * test.gap:+.1f} points, "
        + ("resolved" if not test.no_gap else "not resolved at this scale")
        + f" (one-sided test at level {test.alpha:g}); train errors "
        f"{100 * tab.loc[large, 'train_error']:.1f}% and "
        f"{100 * tab.loc[small, 'train_error']:.1f}%.",
        (f"- Shown to close at least {f} of the gap: {named(CALLS[0])}; shown to fall short "
         f"of {f}: {named(CALLS[1])}; undetermined: {named(CALLS[2])}."
         if not test.no_gap else
         "- There is no resolved gap to close at this scale, so no configuration is "
         "called."),
        f"- Noisy runs whose mean train error exceeds large-batch SGD's by more than their "
        f"own interval (slower optimisation): {', '.join(slower) if slower else 'none'}.",
        f"- Lowest mean test error among the noisy configurations: {best['label']}, "
        f"{100 * best['test_error']:.1f}% ± {100 * best['test_error_ci']:.1f} points"
        + (f", {best['closed']:.0%} of the gap closed." if not test.no_gap else "."),
        f"- Sharpness: small batch {tab.loc[small, 'sharpness']:.1f}, large batch "
        f"{tab.loc[large, 'sharpness']:.1f}, noisy runs from {noisy['sharpness'].min():.1f} "
        f"({noisy.loc[noisy['sharpness'].idxmin(), 'label']}) to "
        f"{noisy['sharpness'].max():.1f} ({noisy.loc[noisy['sharpness'].idxmax(), 'label']}).",
    ]
    return "\n".join(lines)


def cost_summary(costs: pd.DataFrame, goals: Mapping[str, float]) -> str:
    """One descriptive Markdown sentence on the step costs (no verdict: a time per step
    at one setting says nothing about the time to reach an accuracy): each timed kind's
    median step time relative to a plain large-batch step, with the hessian kind's Lanczos
    steps, next to the ratio the project aimed for where ``goals`` names one."""
    ratio = dict(zip(costs["kind"], costs["ratio"], strict=True))
    steps = (dict(zip(costs["kind"], costs["lanczos_steps"], strict=True))
             if "lanczos_steps" in costs.columns else {})
    parts = []
    for kind, r in ratio.items():
        if kind == "none" or not np.isfinite(r):
            continue
        k = steps.get(kind)
        extra = [f"{int(k)} Lanczos steps"] if k is not None and pd.notna(k) else []
        if kind in goals:
            extra.append(f"aim {goals[kind]:g} times")
        parts.append(f"{kind.replace('_', ' ')} {r:.2f} times"
                     + (f" ({', '.join(extra)})" if extra else ""))
    if not parts:
        return "No noisy step was timed."
    return ("Median time of one step relative to a plain large-batch step: "
            + "; ".join(parts) + ". These are costs per step on this machine, not the time "
            "to reach a given test error, and no verdict rests on them.")


#: the readings of :func:`cost_bound_call`: the k products alone cost more than the aim;
#: the bare Lanczos recurrence's bookkeeping takes it over; or the aim is within reach
COST_BOUND_CALLS = ("products over the aim", "bookkeeping over the aim", "within reach")


def cost_bound_call(parts: HessianCostParts, goal: float) -> str:
    """One of :data:`COST_BOUND_CALLS`: ``parts.floor > goal`` (the plain step, z, the
    graph and k products alone exceed it), else ``parts.bound > goal`` (a bare k-step
    recurrence's bookkeeping on top exceeds it), else within reach."""
    goal = check_positive("goal", goal)
    if parts.floor > goal:
        return COST_BOUND_CALLS[0]
    return COST_BOUND_CALLS[1] if parts.bound > goal else COST_BOUND_CALLS[2]


def cost_bound_sentence(parts: HessianCostParts, goal: float) -> str:
    """Markdown: what a hessian step of k Lanczos steps cannot cost less than on this
    machine (:class:`HessianCostParts`: its floor and the floor plus a bare recurrence, in
    plain steps) and whether the aimed-at ratio ``goal`` is within reach
    (:func:`cost_bound_call`)."""
    k, ms = parts.lanczos_steps, 1e3
    head = (f"Timed part by part on this machine, a hessian step with k = {k} Lanczos steps "
            f"costs at least **{parts.floor:.2f}** plain steps for the plain step "
            f"({parts.step * ms:.2f} ms), the Gaussian start ({parts.z * ms:.2f} ms), the "
            f"Hessian's graph on M = {parts.examples} examples ({parts.graph * ms:.2f} ms) and {k} "
            f"Hessian-vector products ({parts.product * ms:.2f} ms each), and at least "
            f"**{parts.bound:.2f}** once the bookkeeping of a bare three-term Lanczos "
            f"recurrence ({parts.recurrence * ms:.2f} ms) is added. ")
    call = cost_bound_call(parts, goal)
    if call == COST_BOUND_CALLS[0]:
        tail = (f"These parts alone exceed the aim of {goal:g} plain steps, so no draw of "
                f"{k} Lanczos steps on this model can meet it here.")
    elif call == COST_BOUND_CALLS[1]:
        tail = (f"That is above the aim of {goal:g} plain steps: on this model and machine "
                f"a draw of {k} Lanczos steps cannot meet it with bookkeeping as lean as a "
                "bare recurrence.")
    else:
        tail = (f"The aim of {goal:g} plain steps is within reach of a draw of {k} Lanczos "
                "steps here; what the measured step costs beyond the bound is this "
                "package's reorthogonalisation and checks.")
    return head + tail


def verdict_table(
    summary: pd.DataFrame, test: GapTest, costs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per configuration of ``test`` joining :func:`summarize` (test / train error
    and sharpness with interval half-widths), :func:`gap_test` (fraction of the gap closed,
    call) and, when given, :func:`measure_step_costs` (``step_cost`` = time per step /
    plain large-batch step, by kind: 1 for large-batch SGD, NaN for small-batch SGD, whose
    steps are smaller)."""
    cols = ["label", "kind", "test_error", "test_error_ci", "train_error", "train_error_ci",
            "sharpness", "sharpness_ci"]
    out = summary[cols].merge(test.table[["label", "closed", "call"]], on="label",
                              how="inner")
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


def unrecorded_gap_verdicts(records: pd.DataFrame, equal_steps: bool, *, fraction: float,
                            scale: str) -> list[Verdict]:
    """The gap verdict (the claim of :func:`gap_claim`) of the decided budget, equal steps
    (:data:`DECIDED_BUDGETS`), when :func:`budgets_with_records` leaves it out or the
    profile does not run it: inconclusive, naming what has no record. The equal-epochs
    budget is a described control and has no verdict."""
    if not equal_steps:
        return [Verdict(gap_claim(EQUAL_STEPS, fraction), "inconclusive",
                        "Not tested: this profile does not run the equal-steps budget.",
                        scale, SECTION)]
    if EQUAL_STEPS in budgets_with_records(records, equal_steps):
        return []
    labels = set(budget_records(records, EQUAL_STEPS)["label"]) if len(records) else set()
    absent = [lab for lab in (SMALL, LARGE_STEPS) if lab not in labels]
    if not labels - {SMALL, LARGE_STEPS}:
        absent.append("any noisy configuration")
    return [Verdict(gap_claim(EQUAL_STEPS, fraction), "inconclusive",
                    f"Not tested at {EQUAL_STEPS}: no record of {', '.join(absent)}.",
                    scale, SECTION)]
