"""The error rates of the two headline claims of :mod:`sgdnoise.decide.calls`, measured with
the harness on simulated families of pre-registered pairs.

A family is one arm with a small batch and ``k`` pre-registered large batch sizes (every one
at or above the onset), ``n`` seeds each, simulated on a :class:`~.scenarios.Curve` with a
:class:`~.scenarios.Spread`. The scenarios and what they measure:

========================  =====================================================  ===========
scenario                  truth at the ``k`` pairs                               measures
========================  =====================================================  ===========
no gap                    all fit as well, same test error                       FPR of (1)
gap at the margin         all fit as well, test error exactly ``m`` worse        FPR of (1)
under-training            all stop early on the small batch's curve              FPR of (1),
                                                                                 power of (2)
one gap                   one fits as well and tests ``g`` worse, others no gap  power of (1),
                                                                                 FPR of (2)
one gap at matched fit    one stops early and tests ``g`` worse at the same      power of (1),
                          loss, the others are under-trained                     FPR of (2)
residual at the margin    all stop early, ``m`` above the curve                  FPR of (2)
========================  =====================================================  ===========

(1) is "a generalization gap at the pre-registered batch sizes", (2) "the shortfall is
under-training". A false-positive rate is the largest rate of "supported" over the
scenarios where the claim is false (the boundary scenarios are the worst cases the tests
are sized for); the power of (1) is the smaller of its two one-gap rates (one gap in the
family is the hardest case for Holm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgdnoise.stats import wilson_interval

from .calls import Thresholds, decide_runs
from .harness import Rate, Scenario, error_rates, rate_of
from .scenarios import (
    Curve,
    Spread,
    Truth,
    gap,
    matched_gap,
    no_gap,
    points,
    simulate_arm,
    under_training,
)

__all__ = ["HeadlineRates", "headline_error_rates", "headline_scenarios"]

UNDER_TRAIN_ERROR = 0.15  # where the under-trained runs of the simulations stop
B0_SIMULATED = 128
N_SIMULATED = 50_000


@dataclass(frozen=True)
class HeadlineRates:
    """False-positive rates and powers of the two headline claims (fractions), the rate at
    which the gap claim is contradicted although one pair has a gap (the larger of the two
    one-gap scenarios), every scenario's rates, the conditions they were measured at, and a
    phrase saying so."""

    gap_false_positive: float
    gap_power: float
    gap_false_contradiction: float
    under_false_positive: float
    under_power: float
    rates: list[Rate]
    n_seeds: int
    family_size: int
    gap_size: float
    n_sim: int
    spread: Spread

    def conditions(self) -> str:
        """``'a family of 7 pre-registered pairs, a gap of 3 points, spread …'``."""
        return (f"a family of {self.family_size} pre-registered "
                f"pair{'s' if self.family_size != 1 else ''}, a gap of "
                f"{points(self.gap_size)}, spread {self.spread.describe()}")


def _family(curve: Curve, spread: Spread, truths: list[Truth], n_seeds: int,
            th: Thresholds):
    """A scenario's simulator: one decisive arm, ``B₀`` and one pre-registered batch size
    per truth."""
    start = int(np.ceil(th.onset_fraction * N_SIMULATED))
    sizes = [B0_SIMULATED, *range(start, start + len(truths))]
    arm = th.decisive_arms[0] if th.decisive_arms else "A"

    def simulate(n_sim: int, rng: np.random.Generator):
        return [simulate_arm(curve, spread, truths, batch_sizes=sizes, n_seeds=n_seeds,
                             n_sim=n_sim, rng=rng, n_train=N_SIMULATED, arm=arm)]
    return simulate


def headline_scenarios(curve: Curve, spread: Spread, th: Thresholds, *, n_seeds: int,
                       family_size: int, gap_size: float) -> list[Scenario]:
    """The six scenarios of the module docstring."""
    k, m = family_size, th.margin
    under = under_training(curve, UNDER_TRAIN_ERROR)
    spec = [
        ("no gap", "every pair fits as well and tests the same", [no_gap(curve)] * k),
        ("gap at the margin", f"every pair fits as well and tests {points(m)} worse",
         [gap(curve, m)] * k),
        ("under-training", "every pair stops early on the small batch's curve", [under] * k),
        ("one gap", f"one pair fits as well and tests {points(gap_size)} worse",
         [gap(curve, gap_size)] + [no_gap(curve)] * (k - 1)),
        ("one gap at matched fit", f"one pair tests {points(gap_size)} worse at the "
         "same train loss, the others are under-trained",
         [matched_gap(curve, gap_size, UNDER_TRAIN_ERROR)] + [under] * (k - 1)),
        ("residual at the margin", f"every pair stops early, {points(m)} above the "
         "curve", [matched_gap(curve, m, UNDER_TRAIN_ERROR)] * k),
    ]
    return [Scenario(name, truth, _family(curve, spread, truths, n_seeds, th))
            for name, truth, truths in spec]


def headline_error_rates(curve: Curve, spread: Spread, th: Thresholds, *, n_seeds: int,
                         family_size: int, gap_size: float, n_sim: int = 2000,
                         seed: int = 0) -> HeadlineRates:
    """Measure both headline claims' false-positive rates and powers (module docstring) at
    ``n_seeds`` seeds in a family of ``family_size`` pre-registered pairs."""
    if family_size < 1 or n_seeds < 1:
        raise ValueError(f"family_size and n_seeds must be >= 1, got {family_size}, {n_seeds}")
    if not 0 < gap_size < 1:
        raise ValueError(f"gap_size must be in (0, 1), got {gap_size!r}")
    scenarios = headline_scenarios(curve, spread, th, n_seeds=n_seeds,
                                   family_size=family_size, gap_size=gap_size)

    def rule(arms):
        sim = decide_runs(arms, th)
        return np.char.add(np.asarray(sim.gap_labels(), dtype=str),
                           np.char.add("|", np.asarray(sim.under_training_labels(),
                                                       dtype=str)))

    joint = error_rates(rule, scenarios, n_sim=n_sim, seed=seed)
    rates = _marginals(joint)

    def r(scenario: str, outcome: str) -> float:
        return rate_of(rates, scenario, outcome).rate

    return HeadlineRates(
        gap_false_positive=max(r(s, "gap supported") for s in
                               ("no gap", "gap at the margin", "under-training")),
        gap_power=min(r("one gap", "gap supported"),
                      r("one gap at matched fit", "gap supported")),
        gap_false_contradiction=max(r("one gap", "gap contradicted"),
                                    r("one gap at matched fit", "gap contradicted")),
        under_false_positive=max(r(s, "under-training supported") for s in
                                 ("one gap", "one gap at matched fit",
                                  "residual at the margin")),
        under_power=r("under-training", "under-training supported"),
        rates=rates, n_seeds=n_seeds, family_size=family_size, gap_size=gap_size,
        n_sim=n_sim, spread=spread)


def _marginals(joint: list[Rate]) -> list[Rate]:
    """Split joint labels ``'gap outcome|under-training outcome'`` into the rates of
    ``'gap <outcome>'`` and ``'under-training <outcome>'`` per scenario."""
    counts: dict[tuple[str, str], int] = {}
    n_sim: dict[str, int] = {}
    for r in joint:
        g, u = r.outcome.split("|")
        n_sim[r.scenario] = r.n_sim
        for key in ((r.scenario, f"gap {g}"), (r.scenario, f"under-training {u}")):
            counts[key] = counts.get(key, 0) + r.count
    out = []
    for (scenario, outcome), count in counts.items():
        low, high = wilson_interval(count, n_sim[scenario])
        out.append(Rate(scenario, outcome, count, n_sim[scenario], float(low), float(high)))
    return out
