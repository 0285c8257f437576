"""A Monte-Carlo harness for the error rates of a decision rule.

A *rule* maps a batch of simulated data sets to one outcome label per data set; a
:class:`Scenario` simulates such a batch under a stated truth. :func:`error_rates` runs
every scenario ``n_sim`` times and reports how often each outcome came out, with a Wilson
interval for the rate. The scenarios draw from independent random streams keyed by the
harness seed and the scenario's name, so a scenario's rates do not depend on which other
scenarios run, and the same seed gives the same numbers.

A rule that works on one data set at a time (a record frame, say) is turned into a batch
rule by :func:`per_data_set`; a vectorised rule (such as
:func:`sgdnoise.decide.calls.decide_runs` on simulated arrays) is much faster.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sgdnoise.stats import wilson_interval

__all__ = ["Rate", "Scenario", "error_rates", "per_data_set", "rate_of", "rates_frame"]


@dataclass(frozen=True)
class Scenario:
    """A stated truth and how to simulate data under it.

    - name: short and unique (it also keys the random stream).
    - truth: one sentence saying what is true in the simulated data.
    - simulate: ``(n_sim, rng) -> batch`` of ``n_sim`` data sets, in whatever form the rule
      reads.
    """

    name: str
    truth: str
    simulate: Callable[[int, np.random.Generator], Any]


@dataclass(frozen=True)
class Rate:
    """How often ``outcome`` came out under ``scenario``: ``count`` of ``n_sim``, with a 95%
    Wilson interval ``[low, high]``."""

    scenario: str
    outcome: str
    count: int
    n_sim: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.count / self.n_sim

    def format(self) -> str:
        """``'3.1% [2.4%, 4.0%]'``."""
        return f"{self.rate:.1%} [{self.low:.1%}, {self.high:.1%}]"


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def error_rates(rule: Callable[[Any], Sequence[str] | np.ndarray],
                scenarios: Sequence[Scenario], *, n_sim: int, seed: int = 0,
                outcomes: Sequence[str] | None = None) -> list[Rate]:
    """Run ``rule`` on ``n_sim`` simulated data sets of every scenario and count its
    outcomes.

    Returns one :class:`Rate` per scenario and outcome: for every label in ``outcomes``
    when given (zero counts included), else for every label that came out. The rule must
    return exactly ``n_sim`` labels; names must be unique."""
    if not isinstance(n_sim, int) or n_sim < 1:
        raise ValueError(f"n_sim must be a positive integer, got {n_sim!r}")
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names must be unique, got {names}")
    rates = []
    for sc in scenarios:
        labels = np.asarray(rule(sc.simulate(n_sim, _rng(seed, sc.name))), dtype=object)
        if labels.shape != (n_sim,):
            raise ValueError(f"rule returned {labels.shape} labels for scenario {sc.name!r}, "
                             f"expected ({n_sim},)")
        found = sorted(set(labels.tolist()))
        for outcome in outcomes if outcomes is not None else found:
            count = int((labels == outcome).sum())
            low, high = wilson_interval(count, n_sim)
            rates.append(Rate(sc.name, str(outcome), count, n_sim, float(low), float(high)))
    return rates


def rate_of(rates: Sequence[Rate], scenario: str, outcome: str) -> Rate:
    """The rate of ``outcome`` under ``scenario`` (a zero count when it never came out)."""
    n = {r.scenario: r.n_sim for r in rates}
    if scenario not in n:
        raise ValueError(f"no scenario {scenario!r}; have {sorted(n)}")
    for r in rates:
        if r.scenario == scenario and r.outcome == outcome:
            return r
    low, high = wilson_interval(0, n[scenario])
    return Rate(scenario, outcome, 0, n[scenario], float(low), float(high))


def rates_frame(rates: Sequence[Rate]) -> pd.DataFrame:
    """One row per scenario, one column per outcome: ``'rate [low, high]'`` strings."""
    outcomes = list(dict.fromkeys(r.outcome for r in rates))
    scenarios = list(dict.fromkeys(r.scenario for r in rates))
    table = pd.DataFrame(index=scenarios, columns=outcomes, dtype=object)
    for sc in scenarios:
        for oc in outcomes:
            table.loc[sc, oc] = rate_of(rates, sc, oc).format()
    table.index.name = "scenario"
    return table.reset_index()


def per_data_set(rule: Callable[[Any], str]) -> Callable[[Sequence[Any]], list[str]]:
    """A batch rule from a rule on one data set: ``batch`` is a sequence of data sets."""
    def batch_rule(batch: Sequence[Any]) -> list[str]:
        return [rule(item) for item in batch]

    return batch_rule
