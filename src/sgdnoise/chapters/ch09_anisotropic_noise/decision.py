"""Does injected noise close the large-batch gap? The decision rule of chapter 9 and its
error rates, measured with chapter 8's simulation harness (:mod:`sgdnoise.decide`).

The claim, at one budget: *some noisy large-batch configuration closes at least a fraction
f of the measured gap between large- and small-batch SGD*. Per seed s (paired: the same
initialisation in every configuration) write ``e_S``, ``e_L`` and ``e_c`` for the test
errors of small-batch SGD, large-batch SGD and noisy configuration c, and

    gap_s = e_L − e_S,      w_s = e_c − f·e_S − (1 − f)·e_L.

Closing at least the fraction f of the gap means ``e_c ≤ e_L − f·(e_L − e_S)``, i.e.
``μ_w ≤ 0``; the contrast ``w`` is linear in the errors, so no ratio of noisy means is
estimated. Large-batch SGD itself (``e_c = e_L``) has ``w_s = f·gap_s``: it can pass only
where the gap is negative, and then the rule has already stopped (below). The rule, at
level α (arrays of :func:`sgdnoise.decide.pvalues.one_sided`):

1. *the gap*: one-sided t-test of H0 ``μ_gap ≤ 0``; not rejected: **inconclusive**
   (nothing to close);
2. *closes*: for every configuration of the family, the one-sided test of H0 ``μ_w ≥ 0``;
   Holm's adjustment over the family (:func:`sgdnoise.decide.pvalues.holm`); **supported**
   when some adjusted p-value is at most α;
3. *falls short*: the one-sided test of H0 ``μ_w ≤ 0``; **contradicted** when every
   configuration of the family rejects it at α (an intersection-union test,
   :func:`sgdnoise.decide.pvalues.intersection_union`: "no configuration closes f of the
   gap" needs every configuration shown short);
4. **inconclusive** otherwise.

Both outcomes are level-α tests of their own claim, and they exclude each other: a
configuration's two one-sided p-values add up to 1, so at α < 1/2 no configuration is both
shown to close and shown to fall short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sgdnoise.decide.harness import Scenario, error_rates, rate_of
from sgdnoise.decide.pvalues import holm, intersection_union, one_sided
from sgdnoise.validate import check_positive_int

__all__ = ["CALLS", "GAP_OUTCOMES", "GapRates", "GapTest", "closing_calls", "gap_rates",
           "gap_test", "paired_spread"]

#: the outcome of the rule, by code (code 3: no gap resolved, inconclusive)
GAP_OUTCOMES = ("supported", "contradicted", "inconclusive", "inconclusive")
#: the call of one configuration, by code
CALLS = ("closes the stated fraction", "falls short of it", "undetermined")
REFERENCE = "reference"
CONTROL = "control (not in the decision)"


def _check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return f


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    return a


def closing_calls(errors: np.ndarray, fraction: float, alpha: float
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The rule of the module docstring on many data sets at once.

    ``errors: (n_sim, 2 + k, n_seeds)`` holds test errors: index 0 small-batch SGD, 1
    large-batch SGD, ``2 …`` the k configurations of the family (NaN: no record of that
    seed). Returns ``head: (n_sim,)`` (codes of :data:`GAP_OUTCOMES`), ``calls: (n_sim, k)``
    (codes of :data:`CALLS`; every call is "undetermined" where no gap is resolved) and the
    p-values: ``gap (n_sim,)``, ``closes (n_sim, k)`` (Holm-adjusted), ``short (n_sim, k)``."""
    f, a = _check_fraction(fraction), _check_alpha(alpha)
    e = np.asarray(errors, dtype=float)
    if e.ndim != 3 or e.shape[1] < 3:
        raise ValueError(f"errors must have shape (n_sim, 2 + k, n_seeds) with k >= 1, got "
                         f"{e.shape}")
    small, large, noisy = e[:, 0], e[:, 1], e[:, 2:]
    gap = one_sided(large - small, 0.0).p_greater
    w = one_sided(noisy - f * small[:, None] - (1.0 - f) * large[:, None], 0.0)
    closes, short = holm(w.p_less), w.p_greater
    resolved = gap <= a
    calls = np.where(resolved[:, None] & (closes <= a), 0,
                     np.where(resolved[:, None] & (short <= a), 1, 2))
    all_short = intersection_union(*np.moveaxis(short, -1, 0)) <= a
    head = np.where(~resolved, 3, np.where((calls == 0).any(-1), 0,
                                           np.where(all_short, 1, 2)))
    return head, calls, {"gap": gap, "closes": closes, "short": short}


def _pivot(records: pd.DataFrame, labels: list[str], metric: str) -> pd.DataFrame:
    piv = records.pivot_table(index="seed", columns="label", values=metric, aggfunc="first")
    missing = [lab for lab in labels if lab not in piv]
    if missing:
        raise ValueError(f"records lack the labels {missing}")
    return piv[labels]


def paired_spread(records: pd.DataFrame, labels: list[str] | None = None,
                  metric: str = "test_error") -> tuple[float, int]:
    """The seed-to-seed spread that paired comparisons see, from the records themselves.

    With ``e_cs`` the metric of configuration c (of ``labels``, default all) at seed s, over
    the seeds every one of them has, fit the additive model ``e_cs = a_c + b_s + r_cs`` (a
    configuration effect and a seed effect shared by all configurations, which cancels in
    every paired contrast); returns the residual standard deviation
    ``sqrt(Σ r² / ((C − 1)(S − 1)))`` and its degrees of freedom ``(C − 1)(S − 1)``
    (``(NaN, 0)`` without two configurations and two complete seeds)."""
    labels = list(dict.fromkeys(records["label"])) if labels is None else labels
    piv = _pivot(records, labels, metric).dropna()
    c, s = piv.shape[1], piv.shape[0]
    df = (c - 1) * (s - 1)
    if df < 1:
        return float("nan"), 0
    x = piv.to_numpy(float)
    r = x - x.mean(0, keepdims=True) - x.mean(1, keepdims=True) + x.mean()
    return float(np.sqrt((r**2).sum() / df)), int(df)


@dataclass(frozen=True)
class GapTest:
    """The rule applied to one budget's records.

    - table: one row per configuration: label, mean (test error over seeds), diff_small
      and diff_large (mean paired differences with small- and large-batch SGD),
      closed (the fraction of the gap closed on the seed means, ``(ē_L − ē_c)/(ē_L − ē_S)``;
      NaN unless the gap is resolved), shortfall (mean of ``w``), p_closes (Holm-adjusted),
      p_short, call (:data:`CALLS`, or "reference" / "control (not in the decision)").
    - gap, gap_low: the mean paired gap ``e_L − e_S`` and its one-sided ``1 − α`` lower
      bound; p_gap its one-sided p-value.
    - outcome: one of :data:`GAP_OUTCOMES`; no_gap: True when step 1 stopped the rule.
    - fraction, alpha, n_seeds (seeds with a record of small- and large-batch SGD),
      family (the configurations decided on), controls (shown, not decided on).
    """

    table: pd.DataFrame
    gap: float
    gap_low: float
    p_gap: float
    outcome: str
    no_gap: bool
    fraction: float
    alpha: float
    n_seeds: int
    family: tuple[str, ...]
    controls: tuple[str, ...]


def gap_test(records: pd.DataFrame, *, fraction: float, alpha: float, small_label: str,
             large_label: str, controls: tuple[str, ...] = (),
             metric: str = "test_error") -> GapTest:
    """:func:`closing_calls` on ``records`` (one budget: small- and large-batch SGD and the
    noisy configurations; labels in ``controls`` are shown with their numbers but left out of
    the family and of every decision)."""
    f, a = _check_fraction(fraction), _check_alpha(alpha)
    labels = list(dict.fromkeys(records["label"]))
    for ref in (small_label, large_label):
        if ref not in labels:
            raise ValueError(f"records must contain the label {ref!r}")
    family = [lab for lab in labels if lab not in (small_label, large_label, *controls)]
    if not family:
        raise ValueError("records hold no noisy configuration outside the controls")
    shown = [lab for lab in labels if lab not in (small_label, large_label)]
    piv = _pivot(records, [small_label, large_label, *shown], metric)
    x = piv.to_numpy(float).T  # (arms, seeds): small, large, then the others
    decided = piv[[small_label, large_label, *family]].to_numpy(float).T
    head, calls, p = closing_calls(decided[None], f, a)
    gaps = one_sided((x[1] - x[0])[None], 0.0)
    low, _ = gaps.bounds(a)
    means = np.nanmean(x, axis=1)
    resolved = bool(head[0] != 3)
    rows = []
    for i, lab in enumerate([small_label, large_label, *shown]):
        j = family.index(lab) if lab in family else None
        row = dict(label=lab, mean=float(means[i]),
                   diff_small=float(np.nanmean(x[i] - x[0])),
                   diff_large=float(np.nanmean(x[i] - x[1])),
                   closed=(float((means[1] - means[i]) / (means[1] - means[0]))
                           if resolved else float("nan")),
                   shortfall=float(np.nanmean(x[i] - f * x[0] - (1 - f) * x[1])),
                   p_closes=float(p["closes"][0, j]) if j is not None else float("nan"),
                   p_short=float(p["short"][0, j]) if j is not None else float("nan"),
                   call=(CALLS[int(calls[0, j])] if j is not None else
                         REFERENCE if i < 2 else CONTROL))
        rows.append(row)
    n_seeds = int(np.isfinite(x[1] - x[0]).sum())
    return GapTest(pd.DataFrame(rows), float(gaps.mean[0]), float(low[0]),
                   float(p["gap"][0]), GAP_OUTCOMES[int(head[0])], not resolved, f, a,
                   n_seeds, tuple(family), tuple(c for c in controls if c in labels))


@dataclass(frozen=True)
class GapRates:
    """Error rates of the rule (:func:`gap_rates`): ``false_positive`` (supported when no
    configuration closes any of the gap), ``power`` (supported when every configuration
    closes all of it), ``boundary`` (supported when every configuration closes exactly the
    fraction f: at most α by construction) and ``false_contradiction`` (contradicted when
    every configuration closes all of it), at the stated gap, spread and seeds."""

    false_positive: float
    power: float
    boundary: float
    false_contradiction: float
    n_seeds: int
    n_configs: int
    n_sim: int
    gap: float
    sd: float
    sd_source: str

    def conditions(self) -> str:
        """One phrase for :meth:`sgdnoise.report.Verdict.with_error_rates`."""
        n = f"{self.n_configs} noisy configuration" + ("s" if self.n_configs != 1 else "")
        return (f"{n}, a true gap of {100 * self.gap:.1f} points, seed-to-seed spread of "
                f"{100 * self.sd:.2f} points of test error {self.sd_source}; supported when "
                f"every configuration closes exactly the stated fraction in "
                f"{self.boundary:.1%}, contradicted when every one closes all of the gap in "
                f"{self.false_contradiction:.1%} of the simulated data sets")


def gap_rates(*, gap: float, sd: float, sd_source: str, n_seeds: int, n_configs: int,
              fraction: float, alpha: float, n_sim: int = 2000, seed: int = 0) -> GapRates:
    """Simulate the rule with :func:`sgdnoise.decide.harness.error_rates`: test errors
    ``μ_c + sd·ε`` (independent normal ``ε`` per configuration and seed; a seed effect shared
    by all configurations would cancel in every contrast), small-batch SGD at 0,
    large-batch SGD at ``gap``, and every one of ``n_configs`` noisy configurations at
    ``gap`` (closes none: the truth under which "supported" is a false positive), at 0
    (closes all: power) or at ``(1 − f)·gap`` (closes exactly f: the boundary)."""
    f, a = _check_fraction(fraction), _check_alpha(alpha)
    n_seeds = check_positive_int("n_seeds", n_seeds)
    n_configs = check_positive_int("n_configs", n_configs)
    if not (np.isfinite(gap) and gap > 0 and np.isfinite(sd) and sd > 0):
        raise ValueError(f"gap and sd must be positive and finite, got {gap!r}, {sd!r}")

    def simulate(noisy_mean: float):
        mu = np.array([0.0, gap] + [noisy_mean] * n_configs)

        def run(n: int, rng: np.random.Generator) -> np.ndarray:
            return mu[None, :, None] + sd * rng.standard_normal((n, mu.size, n_seeds))
        return run

    def rule(errors: np.ndarray) -> np.ndarray:
        head, _, _ = closing_calls(errors, f, a)
        return np.asarray(GAP_OUTCOMES, dtype=object)[head]

    scen = [Scenario("none", "noise closes none of the gap", simulate(gap)),
            Scenario("all", "noise closes all of the gap", simulate(0.0)),
            Scenario("boundary", "noise closes exactly the stated fraction",
                     simulate((1.0 - f) * gap))]
    rates = error_rates(rule, scen, n_sim=n_sim, seed=seed)
    return GapRates(rate_of(rates, "none", "supported").rate,
                    rate_of(rates, "all", "supported").rate,
                    rate_of(rates, "boundary", "supported").rate,
                    rate_of(rates, "all", "contradicted").rate,
                    n_seeds, n_configs, n_sim, float(gap), float(sd), sd_source)
