"""Decisions from seeds: one-sided tests, Holm, one call per (arm, batch size), and a
harness that measures a rule's false-positive rate and power by simulation.

- :mod:`sgdnoise.decide.pvalues`: one-sided paired t-tests, Holm's adjustment, the
  intersection-union test.
- :mod:`sgdnoise.decide.calls`: the decision procedure of chapter 8 (gap, no gap,
  under-trained, not informative, diverged, undetermined) and its headline claims.
- :mod:`sgdnoise.decide.scenarios`: simulated sweep records under stated truths, with the
  spread measured from real records.
- :mod:`sgdnoise.decide.harness`: error rates of any rule over scenarios.
- :mod:`sgdnoise.decide.power`: the power of the gap call and the seeds it needs.
- :mod:`sgdnoise.decide.rates`: the false-positive rates and powers of the two headline
  claims, measured with the harness.
"""

from .calls import CALLS, HEADLINE_OUTCOMES, Decision, Thresholds, decide, decide_runs
from .harness import Rate, Scenario, error_rates, rate_of, rates_frame
from .power import gap_power, seeds_for_power
from .pvalues import holm, intersection_union, one_sided
from .rates import HeadlineRates, headline_error_rates
from .scenarios import Curve, Spread, Truth, fit_curve, measure_spread, simulate_arm

__all__ = [
    "CALLS",
    "HEADLINE_OUTCOMES",
    "Curve",
    "Decision",
    "HeadlineRates",
    "Rate",
    "Scenario",
    "Spread",
    "Thresholds",
    "Truth",
    "decide",
    "decide_runs",
    "error_rates",
    "fit_curve",
    "gap_power",
    "headline_error_rates",
    "holm",
    "intersection_union",
    "measure_spread",
    "one_sided",
    "rate_of",
    "rates_frame",
    "seeds_for_power",
    "simulate_arm",
]
