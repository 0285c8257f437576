"""Chapter 9: large-batch training with injected noise versus small-batch SGD.

Every configuration trains the same network from the same initialisation (per seed) with the
training engine (:func:`sgdnoise.train.train`):

- small-batch SGD (batch b), the reference whose generalisation we want;
- large-batch SGD (batch B >> b) alone;
- large-batch SGD plus noise of each kind (:class:`sgdnoise.noise.NoisySGD`) at the injection
  scale ``s = (1/b − 1/B) N/(N−1)`` (:func:`sgdnoise.noise.matched_injection_scale`; the page
  writes it T), so that the step has the gradient covariance of the small batch when the
  kind's covariance is D.

Two budgets are compared. At **equal epochs** every run sees each example ``epochs`` times,
so a large-batch run takes B/b times fewer steps; at **equal steps** the large-batch runs
are trained for ``ceil(epochs · ceil(N/b) / ceil(N/B))`` epochs, at least as many steps as
small-batch SGD (exactly as many when the step counts divide). Injected noise can only
replace missing *noise*, not missing steps: the equal-steps arm separates the two, and only
its gap is decided (:data:`DECIDED_BUDGETS`); the equal-epochs runs, where the large batch
takes B/b times fewer steps at the same η, are a described control.

The package holds the chapter's :class:`Params`
(:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.params`), the experiment
(:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.experiment`: configs, training grid,
measurements of the final point, the variance of each kind along the sharpest
directions, a dense covariance check of the samplers), the step costs and what a hessian
step cannot cost less than (:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.costs`), the
gap decision and its error
rates (:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.decision`) and the functions that
turn the numbers into sentences and :class:`sgdnoise.report.Verdict` records, each with
its threshold
(:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.verdicts`), the reconciliation of the GPU
sweep's records (:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.records`) and the figure
and table style (:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.presentation`).

At the ``full`` profile nothing is trained in the notebook: the GPU sweep
(:mod:`sgdnoise.sweep`, plan ``book/params/ch09_anisotropic_noise/plan_full.yaml``, arms with
a ``noise`` section) writes one record per run into ``data/results/ch09/``, and
:func:`recorded_experiment` reads them (:func:`experiment_from_sweep` turns sweep records
into the frame :func:`run_noise_experiment` returns), checks the plan against the profile
and against chapter 8's gap batch size (:func:`ch08_gap_batch_size`, with the thresholds of
chapter 8's parameter file) and names the runs that are missing;
:func:`budgets_with_records` and :func:`unrecorded_gap_verdicts` keep the analysis to what is
recorded and make the rest inconclusive.

The gap verdicts are decided by the rule of
:mod:`~sgdnoise.chapters.ch09_anisotropic_noise.decision` (a stated fraction of the measured
gap, one-sided tests across seeds, Holm over the noisy configurations) and carry its
false-positive rate and power, simulated with chapter 8's harness
(:mod:`sgdnoise.decide.harness`). The epoch-matched configurations are shown as controls
and take no part in any decision.
"""

from sgdnoise.noise import NOISE_KINDS

from .costs import (
    HessianCostParts,
    hessian_cost_parts,
    measure_step_costs,
    measured_hessian_parts,
    median_times,
    step_costs,
)
from .decision import (
    CALLS,
    GAP_OUTCOMES,
    GapRates,
    GapTest,
    closing_calls,
    gap_rates,
    gap_test,
    paired_spread,
)
from .experiment import (
    CURVE_FIELDS,
    EXPERIMENT_COLUMNS,
    SHARPNESS,
    NoiseConfig,
    NoiseExperiment,
    build_configs,
    covariance_check,
    directional_variance,
    draws_as_in_training,
    epoch_matched_injection_scale,
    injection_scales,
    per_example_projections,
    pooled_inputs,
    run_noise_experiment,
    step_matched_epochs,
    top_hessian_directions,
    truncated_hessian_draws,
    unmeasured_directions,
)
from .params import EQUAL_EPOCHS, EQUAL_STEPS, LARGE, LARGE_STEPS, SMALL, Params, cost_goals
from .presentation import config_style, kind_palette, run_scale_markdown, styled_table
from .records import (
    ch08_gap_batch_size,
    ch08_thresholds,
    experiment_from_sweep,
    missing_runs_markdown,
    plan_batch_sentence,
    plan_large_batch,
    plan_mismatches,
    recorded_experiment,
    recorded_step_costs,
    sweep_label,
)
from .verdicts import (
    COST_BOUND_CALLS,
    DECIDED_BUDGETS,
    NO_DIRECTIONS,
    anisotropy_codes,
    anisotropy_rates,
    anisotropy_verdict,
    budget_records,
    budgets_with_records,
    cost_bound_call,
    cost_bound_sentence,
    cost_summary,
    direction_summary,
    directions_text,
    gap_claim,
    gap_verdict,
    rates_for,
    sampler_summary,
    sampler_verdict,
    summarize,
    summary_lines,
    unrecorded_gap_verdicts,
    verdict_table,
)

__all__ = [
    "CALLS",
    "COST_BOUND_CALLS",
    "CURVE_FIELDS",
    "DECIDED_BUDGETS",
    "EQUAL_EPOCHS",
    "EQUAL_STEPS",
    "EXPERIMENT_COLUMNS",
    "GAP_OUTCOMES",
    "LARGE",
    "LARGE_STEPS",
    "NOISE_KINDS",
    "NO_DIRECTIONS",
    "SHARPNESS",
    "SMALL",
    "GapRates",
    "GapTest",
    "HessianCostParts",
    "NoiseConfig",
    "NoiseExperiment",
    "Params",
    "anisotropy_codes",
    "anisotropy_rates",
    "anisotropy_verdict",
    "budget_records",
    "budgets_with_records",
    "build_configs",
    "ch08_gap_batch_size",
    "ch08_thresholds",
    "closing_calls",
    "config_style",
    "cost_bound_call",
    "cost_bound_sentence",
    "cost_goals",
    "cost_summary",
    "covariance_check",
    "direction_summary",
    "directional_variance",
    "draws_as_in_training",
    "directions_text",
    "epoch_matched_injection_scale",
    "experiment_from_sweep",
    "gap_claim",
    "gap_rates",
    "gap_test",
    "gap_verdict",
    "hessian_cost_parts",
    "injection_scales",
    "kind_palette",
    "measure_step_costs",
    "measured_hessian_parts",
    "median_times",
    "missing_runs_markdown",
    "paired_spread",
    "per_example_projections",
    "plan_batch_sentence",
    "plan_large_batch",
    "plan_mismatches",
    "pooled_inputs",
    "rates_for",
    "recorded_experiment",
    "recorded_step_costs",
    "run_noise_experiment",
    "run_scale_markdown",
    "sampler_summary",
    "sampler_verdict",
    "step_costs",
    "step_matched_epochs",
    "styled_table",
    "summarize",
    "summary_lines",
    "sweep_label",
    "top_hessian_directions",
    "truncated_hessian_draws",
    "unmeasured_directions",
    "unrecorded_gap_verdicts",
    "verdict_table",
]
