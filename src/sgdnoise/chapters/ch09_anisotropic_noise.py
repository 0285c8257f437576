"""Chapter 9: large-batch training with injected noise versus small-batch SGD.

Every configuration trains the same network from the same initialisation (per seed) with the
training engine (:func:`sgdnoise.train.train`):

- small-batch SGD (batch b), the reference whose generalisation we want;
- large-batch SGD (batch B >> b) alone;
- large-batch SGD plus noise of each kind (:class:`sgdnoise.noise.NoisySGD`) at the injection
  scale ``T = (1/b − 1/B) N/(N−1)`` (:func:`sgdnoise.noise.matched_injection_scale`), so that
  the step has the gradient covariance of the small batch when the kind's covariance is D.

Two budgets are compared. At **equal epochs** every run sees each example ``epochs`` times,
so a large-batch run takes B/b times fewer steps; at **equal steps** the large-batch runs
are trained for ``ceil(epochs · ceil(N/b) / ceil(N/B))`` epochs, at least as many steps as
small-batch SGD (exactly as many when the step counts divide). Injected noise can only
replace missing *noise*, not missing steps: the equal-steps arm separates the two.

The module holds the chapter's :class:`Params`, the experiment (configs, training grid,
measurements of the final point, step costs, the variance of each kind along the sharpest
directions, a dense covariance check of the samplers), paired statistics over seeds with
equivalence tests (:func:`sgdnoise.stats.tost`) and the functions that turn the numbers into
sentences and :class:`sgdnoise.report.Verdict` records, each with its threshold.

At the ``full`` profile nothing is trained in the notebook: the GPU sweep
(:mod:`sgdnoise.sweep`, plan ``book/params/ch09_anisotropic_noise/plan_full.yaml``, arms with
a ``noise`` section) writes one record per run into ``data/results/ch09/``, and
:func:`recorded_experiment` reads them (:func:`experiment_from_sweep` turns sweep records
into the frame :func:`run_noise_experiment` returns), checks the plan against the profile
and against chapter 8's gap batch size (:func:`ch08_gap_batch_size`) and names the runs that
are missing; :func:`budgets_with_records` and :func:`unrecorded_gap_verdicts` keep the
analysis to what is recorded and make the rest inconclusive.
"""

from __future__ import annotations

import copy
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.grads import num_params, per_example_grad_products
from sgdnoise.noise import (
    DEFAULT_LANCZOS_STEPS,
    KINDS,
    NoisySGD,
    hessian_operator,
    matched_injection_scale,
    sample_noise,
)
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.stats import paired_difference, t_interval, tost
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "CURVE_FIELDS",
    "EQUAL_EPOCHS",
    "EXPERIMENT_COLUMNS",
    "EQUAL_STEPS",
    "LARGE",
    "LARGE_STEPS",
    "NOISE_KINDS",
    "NO_DIRECTIONS",
    "SMALL",
    "NoiseConfig",
    "NoiseExperiment",
    "Params",
    "anisotropy_verdict",
    "budgets_with_records",
    "ch08_gap_batch_size",
    "build_configs",
    "budget_records",
    "classify_gap",
    "config_style",
    "cost_goals",
    "cost_verdict",
    "covariance_check",
    "direction_summary",
    "directional_variance",
    "directions_text",
    "epoch_matched_temperature",
    "experiment_from_sweep",
    "gap_analysis",
    "gap_verdict",
    "injection_scales",
    "kind_palette",
    "measure_step_costs",
    "missing_runs_markdown",
    "per_example_projections",
    "plan_batch_sentence",
    "plan_large_batch",
    "plan_mismatches",
    "pooled_inputs",
    "recorded_experiment",
    "recorded_step_costs",
    "run_noise_experiment",
    "run_scale_markdown",
    "sampler_summary",
    "sampler_verdict",
    "scale_label",
    "sharpness",
    "step_costs",
    "step_matched_epochs",
    "styled_table",
    "summarize",
    "summary_lines",
    "sweep_label",
    "unmeasured_directions",
    "unrecorded_gap_verdicts",
    "verdict_table",
]

NOISE_KINDS = KINDS[1:]
SMALL = "small-batch SGD"
LARGE = "large-batch SGD"
LARGE_STEPS = "large-batch SGD (equal steps)"
EQUAL_EPOCHS = "equal epochs"
EQUAL_STEPS = "equal steps"
STEPS_SUFFIX = " (equal steps)"
SECTION = "sec-ch9-gap"  # where the evidence of the gap verdicts is shown

# ----------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 9 (values: the notebook's parameters cell and
    ``book/params/ch09_anisotropic_noise/<profile>.yaml``)."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="training data")
    n_train: int = param(low=20, high=50000, doc="training examples N")
    n_test: int = param(low=10, high=10000, doc="test examples")
    model: str = param(choices=("mlp", "cnn", "resnet20", "resnet18", "resnet34"),
                       doc="network")
    width: int = param(low=1, doc="network width")
    norm: str = param(choices=("group", "none"),
                      doc="normalisation (no BatchNorm: per-example quantities)")
    small_batch: int = param(low=1, doc="small batch b")
    large_batch: int = param(low=2, doc="large batch B")
    epochs: int = param(low=1, doc="epochs of every equal-epochs run (and of small-batch SGD)")
    lr: float = param(low=1e-6, high=10.0, doc="learning rate η, the same in every run")
    momentum: float = param(low=0.0, high=0.99, doc="momentum μ")
    seeds: tuple[int, ...] = param(low=0, min_len=2, doc="seeds (one initialisation each)")
    kinds: tuple[str, ...] = param(choices=NOISE_KINDS, doc="noise kinds at equal epochs")
    epoch_matched_kinds: tuple[str, ...] = param(
        choices=NOISE_KINDS, min_len=0, doc="kinds also run at the epoch-matched scale")
    equal_steps: bool = param(doc="run the equal-steps arm (large batch for B/b more epochs)")
    step_matched_kinds: tuple[str, ...] = param(
        choices=NOISE_KINDS, min_len=0, doc="noise kinds in the equal-steps arm")
    num_samples: int = param(low=2, doc="M for subsampled / true_fisher")
    moment_samples: int = param(low=2, doc="M for isotropic / diag_fisher")
    moment_probes: int = param(low=0, high=64,
                               doc="probes estimating diag(D_M) (0: exact per-example)")
    curvature_samples: int = param(low=2, doc="M for hessian / ggn")
    lanczos_steps: int = param(low=1, high=200, doc="Lanczos steps of the curvature kinds")
    sharpness_examples: int = param(low=10, doc="training examples of the sharpness")
    sharpness_iters: int = param(low=2, doc="Lanczos steps of the sharpness")
    cost_repeats: int = param(low=1, doc="timed repeats of each step kind")
    direction_count: int = param(low=1, high=20, doc="top Hessian directions examined")
    direction_draws: int = param(low=8, doc="noise draws per kind along those directions")
    check_examples: int = param(low=4, high=200, doc="examples of the dense covariance check")
    check_draws: int = param(low=100, doc="draws per kind in the covariance check")
    check_z_max: float = param(low=1.0, high=10.0,
                               doc="largest error of a correct sampler, in sampling RMS errors")
    equivalence_margin: float = param(
        low=1e-4, high=0.5, doc="TOST margin m on test error (absolute, as a fraction)")
    alpha: float = param(low=0.001, high=0.2,
                         doc="test level: two-sided 1−α intervals, TOST at α")
    cost_goal_subsampled: float = param(low=1.0, doc="goal for a subsampled step / plain step")
    cost_goal_curvature: float = param(low=1.0, doc="goal for a hessian or ggn step / plain")
    augment: bool = param(doc="data augmentation")
    device: str = param(choices=("cpu", "cuda"), doc="device")
    records_dir: str = param(doc="full profile: the GPU sweep's records, read instead of "
                             "training (relative to the notebook)")
    plan: str = param(doc="full profile: the sweep plan that writes those records")
    ch08_records_dirs: tuple[str, ...] = param(
        min_len=0, doc="chapter 8's records, where its gap test locates the large batch")

    def check(self) -> None:
        self.require(self.plan.endswith((".yaml", ".yml")), "plan", "must be a YAML file")
        self.require(self.small_batch < self.large_batch, "small_batch",
                     f"must be below large_batch = {self.large_batch}")
        self.require(self.large_batch <= self.n_train, "large_batch",
                     f"must be at most n_train = {self.n_train}")
        self.require(self.large_batch >= 0.2 * self.n_train, "large_batch",
                     f"must be at least 0.2 n_train = {0.2 * self.n_train:.0f} (a large batch)")
        self.require(len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
        self.require(set(self.epoch_matched_kinds) <= set(self.kinds), "epoch_matched_kinds",
                     f"must be a subset of kinds = {list(self.kinds)}")
        self.require(set(self.step_matched_kinds) <= set(self.kinds), "step_matched_kinds",
                     f"must be a subset of kinds = {list(self.kinds)}")
        self.require(self.equal_steps or not self.step_matched_kinds, "step_matched_kinds",
                     "must be empty when equal_steps is false")

    @property
    def confidence(self) -> float:
        """Two-sided confidence ``1 − α`` of every interval on the page."""
        return 1.0 - self.alpha


def scale_label(profile: str, device: str = "cpu") -> str:
    """``'laptop, smoke profile (cpu)'``: what stands behind a verdict."""
    where = "laptop" if device == "cpu" else "GPU run"
    return f"{where}, {profile} profile ({device})"


def cost_goals(subsampled: float, curvature: float) -> dict[str, float]:
    """Step-cost goals relative to a plain large-batch step: kind -> largest acceptable ratio."""
    return {"subsampled": float(subsampled), "hessian": float(curvature),
            "ggn": float(curvature)}


def kind_palette() -> dict[str, tuple[float, float, float]]:
    """One colour per noise kind ("none", i.e. large-batch SGD, in grey), the same in every
    figure of the chapter, picked from seaborn's colour-blind palette so that no two kinds
    share a hue family (no two oranges, no two pinks)."""
    import seaborn as sns

    cb = sns.color_palette("colorblind", 10)
    pick = {"none": 7, "isotropic": 1, "diag_fisher": 2, "subsampled": 0, "true_fisher": 4,
            "hessian": 5, "ggn": 9}
    return {kind: tuple(cb[pick[kind]]) for kind in KINDS}


def config_style(label: str, kind: str) -> tuple[tuple[float, float, float], str]:
    """``(colour, linestyle)`` of one configuration in every figure: the colour of its noise
    kind (:func:`kind_palette`; small-batch SGD black, large-batch SGD the colour of "none"),
    solid at the step-matched scale, dashed at the epoch-matched scale, dotted at equal
    steps."""
    colour = (0.0, 0.0, 0.0) if label == SMALL else kind_palette()[kind]
    style = ":" if label.endswith(STEPS_SUFFIX) else "--" if "(epoch T)" in label else "-"
    return colour, style


def styled_table(df: pd.DataFrame, formats: Mapping[str, str], *,
                 wrap: Sequence[str] = ("verdict",), rename: Mapping[str, str] | None = None):
    """A pandas Styler of ``df`` for the page: ``formats`` (column -> format string, e.g.
    ``"{:.3f}"``; NaN shown as "–"), no index, columns in ``wrap`` wrapping at word
    boundaries with a minimum width (so a verdict never wraps letter by letter) and the
    other columns kept on one line; ``rename`` relabels columns (units in the names)."""
    shown = df.rename(columns=dict(rename or {}))
    fmts = {(rename or {}).get(k, k): v for k, v in formats.items()}
    wrapped = [c for c in ((rename or {}).get(w, w) for w in wrap) if c in shown.columns]
    sty = shown.style.format(fmts, na_rep="–").hide(axis="index")
    sty = sty.set_properties(**{"white-space": "nowrap"})
    if wrapped:
        sty = sty.set_properties(subset=wrapped, **{"white-space": "normal", "min-width": "13em"})
    return sty


def injection_scales(small_batch: int, large_batch: int, num_examples: int) -> pd.DataFrame:
    """The two injection scales of the chapter: T_step = (1/b − 1/B) N/(N−1)
    (:func:`sgdnoise.noise.matched_injection_scale`) and T_epoch = B/b² − 1/B
    (:func:`epoch_matched_temperature`), with b, B and B/N. Columns: quantity, value."""
    t_step = matched_injection_scale(small_batch, large_batch, num_examples=num_examples)
    t_epoch = epoch_matched_temperature(small_batch, large_batch)
    return pd.DataFrame({
        "quantity": ["b", "B", "B / N", "T_step = (1/b - 1/B) N/(N-1)", "T_epoch = B/b² - 1/B"],
        "value": [small_batch, large_batch, large_batch / num_examples, t_step, t_epoch],
    })


def run_scale_markdown(p: Params, source: str, n_params: int) -> str:
    """The scale of this run in one Markdown paragraph: data, model, epochs and steps of
    each budget, seeds and the sizes of the noise estimates."""
    spe_b = math.ceil(p.n_train / p.small_batch)
    spe_B = math.ceil(p.n_train / p.large_batch)
    text = (f"**Scale of this run** (profile `{p.profile}`): {p.n_train} training and "
            f"{p.n_test} test images ({p.dataset}, {source}), model `{p.model}` of width "
            f"{p.width} ({n_params:,} parameters, norm `{p.norm}`), {p.epochs} epochs at "
            f"learning rate {p.lr} = {p.epochs * spe_b} small-batch steps or "
            f"{p.epochs * spe_B} large-batch steps, B/N = {p.large_batch / p.n_train:.2f}, "
            f"{len(p.seeds)} seeds, M = {p.num_samples} (gradient kinds), "
            f"{p.curvature_samples} (curvature kinds, {p.lanczos_steps} Lanczos steps).")
    if p.equal_steps:
        e = step_matched_epochs(p.n_train, p.small_batch, p.large_batch, p.epochs)
        text += (f" Equal-steps arm: {e} epochs at batch {p.large_batch} = {e * spe_B} "
                 f"large-batch steps against {p.epochs * spe_b} small-batch steps.")
    return text


# ----------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseConfig:
    """One arm of the comparison: a batch size and a noise kind at an injection scale.

    ``temperature`` is the injection scale T of :class:`sgdnoise.noise.NoisySGD` (the
    quantity 1/b − 1/B when matched per step); ``epochs`` None means the experiment's
    epochs; ``budget`` is :data:`EQUAL_EPOCHS` or :data:`EQUAL_STEPS`."""

    label: str
    kind: str
    batch_size: int
    temperature: float = 0.0
    num_samples: int | None = None
    lanczos_steps: int = 10
    chunk_size: int | None = 16
    moment_probes: int | None = 4
    epochs: int | None = None
    budget: str = EQUAL_EPOCHS

    def optimizer_factory(
        self, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0
    ) -> Callable[[nn.Module], torch.optim.Optimizer]:
        """``model -> NoisySGD`` for :func:`sgdnoise.train.train`."""

        def factory(model: nn.Module) -> torch.optim.Optimizer:
            return NoisySGD(
                model.parameters(), lr, kind=self.kind, model=model,
                loss_fn=F.cross_entropy, num_samples=self.num_samples,
                momentum=momentum, weight_decay=weight_decay,
                lanczos_steps=self.lanczos_steps, chunk_size=self.chunk_size,
                moment_probes=self.moment_probes, seed=seed,
                injection_scale=self.temperature,
            )

        return factory


def step_matched_epochs(num_examples: int, small_batch: int, large_batch: int,
                        epochs: int) -> int:
    """Epochs at batch B that take at least as many steps as ``epochs`` epochs at batch b.

    An epoch is ``ceil(N/B)`` steps (the engine keeps the last, smaller batch), so the answer
    is ``ceil(epochs · ceil(N/b) / ceil(N/B))``; the step counts are equal when the division
    is exact (e.g. N = 2000, b = 50, B = 500: 20 epochs -> 200 epochs, 800 steps each)."""
    n = check_positive_int("num_examples", num_examples)
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    e = check_positive_int("epochs", epochs)
    if b > B:
        raise ValueError(f"small_batch must be <= large_batch ({B}), got {b}")
    return math.ceil(e * math.ceil(n / b) / math.ceil(n / B))


def build_configs(
    small_batch: int,
    large_batch: int,
    kinds: Sequence[str],
    *,
    temperature: float | None = None,
    num_samples: int = 64,
    moment_samples: int | None = None,
    curvature_samples: int = 32,
    lanczos_steps: int = 10,
    num_examples: int | None = None,
    epoch_matched_kinds: Sequence[str] = (),
    moment_probes: int | None = 4,
    step_matched_epochs: int | None = None,
    step_matched_kinds: Sequence[str] = (),
) -> list[NoiseConfig]:
    """Small-batch SGD, large-batch SGD, and large-batch + each kind in ``kinds``.

    ``temperature`` (the injection scale T) defaults to
    :func:`sgdnoise.noise.matched_injection_scale`
    ``(small_batch, large_batch)`` (times N/(N−1) when ``num_examples`` is given: batches
    drawn without replacement). ``num_samples`` is M for subsampled / true_fisher,
    ``moment_samples`` (default ``num_samples``) M for isotropic / diag_fisher (whose moments
    come from ``moment_probes`` sub-sampled probes, or exact per-example gradients if None),
    ``curvature_samples`` M for hessian / ggn (each Lanczos step costs a Hessian-vector
    product on those examples). Each kind in ``epoch_matched_kinds`` is run once more at
    :func:`epoch_matched_temperature` (label suffix "(epoch T)"). With
    ``step_matched_epochs`` (see :func:`step_matched_epochs`) the equal-steps arm follows:
    large-batch SGD and large-batch + each kind in ``step_matched_kinds`` at the step-matched
    T, trained that many epochs (label suffix "(equal steps)")."""
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if temperature is None:
        temperature = matched_injection_scale(b, B, num_examples=num_examples)
    temperature = check_positive("temperature", temperature, allow_zero=True)
    configs = [NoiseConfig(SMALL, "none", b), NoiseConfig(LARGE, "none", B)]
    sizes = {"hessian": curvature_samples, "ggn": curvature_samples,
             "isotropic": moment_samples or num_samples,
             "diag_fisher": moment_samples or num_samples}

    for kind in kinds:
        check_choice("kinds", kind, NOISE_KINDS)
        m = sizes.get(kind, num_samples)
        configs.append(NoiseConfig(f"LB + {kind}", kind, B, temperature, m, lanczos_steps,
                                   moment_probes=moment_probes))
    t_epoch = epoch_matched_temperature(b, B)
    for kind in epoch_matched_kinds:
        check_choice("epoch_matched_kinds", kind, NOISE_KINDS)
        m = sizes.get(kind, num_samples)
        configs.append(
            NoiseConfig(f"LB + {kind} (epoch T)", kind, B, t_epoch, m, lanczos_steps,
                        moment_probes=moment_probes)
        )
    if step_matched_epochs is None:
        if step_matched_kinds:
            raise ValueError("step_matched_kinds needs step_matched_epochs (the equal-steps "
                             f"arm), got step_matched_kinds={list(step_matched_kinds)}")
        return configs
    e = check_positive_int("step_matched_epochs", step_matched_epochs)
    configs.append(NoiseConfig(LARGE_STEPS, "none", B, epochs=e, budget=EQUAL_STEPS))
    for kind in step_matched_kinds:
        check_choice("step_matched_kinds", kind, NOISE_KINDS)
        m = sizes.get(kind, num_samples)
        configs.append(NoiseConfig(f"LB + {kind}{STEPS_SUFFIX}", kind, B, temperature, m,
                                   lanczos_steps, moment_probes=moment_probes, epochs=e,
                                   budget=EQUAL_STEPS))
    return configs


def epoch_matched_temperature(small_batch: int, large_batch: int) -> float:
    """Injection scale T that matches the noise accumulated over an epoch at equal η.

    An epoch of small-batch SGD takes N/b steps, each adding noise of covariance η² D/b:
    η² N D / b² in total. An epoch at batch B with injected noise takes N/B steps of
    covariance η² (1/B + T) D. Equal totals give ``T = B/b² − 1/B`` (B/b times the per-step
    :func:`sgdnoise.noise.matched_injection_scale`, plus (B/b − 1)/B)."""
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if b > B:
        raise ValueError(f"small_batch must be <= large_batch ({B}), got {b}")
    return B / b**2 - 1 / B


# ----------------------------------------------------------------------------------------
# measurements of a trained point
# ----------------------------------------------------------------------------------------


def sharpness(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_iters: int = 20,
    seed: int = 0,
    chunk_size: int = 1000,
) -> float:
    """λ_max of the Hessian of the mean cross-entropy on ``(inputs, targets)`` (the model is
    put in eval mode), by Lanczos (:func:`sgdnoise.spectral.lanczos`) with ``num_iters``
    Hessian-vector products. ``inputs: (n, ...)``, ``targets: (n,)``; the Hessian of the
    mean is the example-weighted mean of the Hessians of ``chunk_size`` chunks."""
    from sgdnoise.spectral import lanczos

    was_training = model.training
    model.eval()
    try:
        n = inputs.shape[0]
        ops = [
            (hessian_operator(model, F.cross_entropy, inputs[s : s + chunk_size],
                              targets[s : s + chunk_size]), min(chunk_size, n - s))
            for s in range(0, n, chunk_size)
        ]
        P = num_params(model)
        dtype = next(model.parameters()).dtype

        def matvec(v: torch.Tensor) -> torch.Tensor:
            col = v.to(dtype).unsqueeze(1)
            total = sum(op(col)[:, 0] * (w / n) for op, w in ops)
            return total.to(v.dtype)

        res = lanczos(matvec, P, 1, num_iters=min(num_iters, P), tol=1e-4, seed=seed,
                      device=next(model.parameters()).device)
        return float(res.eigenvalues[0])
    finally:
        model.train(was_training)


def top_hessian_directions(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, k: int, *,
    num_iters: int = 40, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest Hessian eigenpairs on ``(inputs, targets)``: ``(evals (k,), U (P, k))``."""
    from sgdnoise.spectral import lanczos

    op = hessian_operator(model, F.cross_entropy, inputs, targets)
    P = num_params(model)
    dtype = next(model.parameters()).dtype
    res = lanczos(lambda v: op(v.to(dtype).unsqueeze(1))[:, 0].to(v.dtype), P, k,
                  num_iters=min(num_iters, P), tol=1e-5, seed=seed,
                  device=next(model.parameters()).device)
    return res.eigenvalues, res.eigenvectors


def per_example_projections(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, U: torch.Tensor
) -> torch.Tensor:
    """``A: (n, k)`` with ``A[i, j] = u_jᵀ ∇ℓ_i`` (ℓ_i the cross-entropy of example i, u_j
    the columns of ``U: (P, k)``, P the number of trainable parameters in
    ``model.parameters()`` order), without forming per-example gradients: the cross-entropy
    case of :func:`sgdnoise.grads.per_example_grad_products` (the double-vjp trick)."""
    return per_example_grad_products(model, F.cross_entropy, inputs, targets, U)


def directional_variance(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kinds: Sequence[str],
    *,
    num_directions: int = 5,
    draws: int = 64,
    num_samples: int | None = None,
    lanczos_steps: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """How much of each kind's noise lies along the sharpest directions.

    With u_1..u_k the top Hessian eigenvectors on the examples, the table holds, per kind and
    direction, the Monte Carlo variance uᵀΣ_kind u from ``draws`` draws (all drawn on the
    same examples), next to the exact uᵀDu of the per-example gradient covariance D and the
    eigenvalue λ = uᵀHu. A ratio uᵀΣu / uᵀDu of 1 means the kind puts SGD's amount of noise in
    that direction. Columns: kind, direction, eigenvalue, variance, sgd_variance, ratio.
    """
    was_training = model.training
    model.eval()
    evals, U = top_hessian_directions(model, inputs, targets, num_directions, seed=seed)
    dtype = next(model.parameters()).dtype
    U = U.to(dtype)
    A = per_example_projections(model, inputs, targets, U)
    proj = A - A.mean(0)  # (n, k)
    sgd_var = proj.pow(2).mean(0)
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for kind in kinds:
        xi = sample_noise(kind, model, F.cross_entropy, inputs, targets, num_samples=num_samples,
                          generator=gen, num_draws=draws, lanczos_steps=lanczos_steps)
        var = (xi @ U).pow(2).mean(0)
        for j in range(U.shape[1]):
            rows.append(dict(kind=kind, direction=j + 1, eigenvalue=float(evals[j]),
                             variance=float(var[j]), sgd_variance=float(sgd_var[j]),
                             ratio=float(var[j] / sgd_var[j])))
    model.train(was_training)
    return pd.DataFrame(rows)


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


def pooled_inputs(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` (uint8 pixels are normalised with the CIFAR-10 statistics)
    average-pooled to ``(N, C, size, size)`` in float64 (:func:`sgdnoise.data.pool_images`;
    ``size`` divides H): a small input for dense checks."""
    from sgdnoise.data import pool_images

    return pool_images(_as_float(x).double(), size)


def covariance_check(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kinds: Sequence[str] = NOISE_KINDS,
    *,
    draws: int = 2000,
    seed: int = 0,
    moment_probes: int | None = 4,
) -> pd.DataFrame:
    """Empirical covariance of ``draws`` draws of each kind against its target, built densely
    and independently of :mod:`sgdnoise.noise` (small P only; all examples, k = P Lanczos
    steps so that the matrix square roots are exact).

    Targets: isotropic tr(D)/P·I, diag_fisher diag(D), subsampled D (per-example gradients
    from :func:`sgdnoise.grads.per_example_grads`), true_fisher F
    (:func:`sgdnoise.curvature.true_fisher`), hessian H₊ (eigenvalues of
    :func:`sgdnoise.curvature.hessian` clipped at 0), ggn :func:`sgdnoise.curvature.ggn`.
    isotropic / diag_fisher use ``moment_probes`` probes (None: exact per-example gradients).
    Columns: kind, rel_error = ‖Ĉ − Σ‖_F / ‖Σ‖_F, expected = the root-mean-square error a
    correct sampler has with this many draws (estimated from the draws:
    sqrt((mean_s ‖ξ_s‖⁴ − ‖Ĉ‖_F²) / S) / ‖Σ‖_F), and z = rel_error / expected."""
    from sgdnoise import curvature
    from sgdnoise.grads import per_example_grads

    G = per_example_grads(model, F.cross_entropy, inputs, targets)
    Gc = G - G.mean(0)
    D = Gc.T @ Gc / G.shape[0]
    P = D.shape[0]
    lam, U = torch.linalg.eigh(curvature.hessian(model, F.cross_entropy, inputs, targets))
    target = {
        "isotropic": torch.eye(P, dtype=D.dtype) * torch.trace(D) / P,
        "diag_fisher": torch.diag(torch.diagonal(D)),
        "subsampled": D,
        "true_fisher": curvature.true_fisher(model, inputs),
        "hessian": U @ torch.diag(lam.clamp_min(0)) @ U.T,
        "ggn": curvature.ggn(model, F.cross_entropy, inputs, targets),
    }
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for kind in kinds:
        xi = sample_noise(kind, model, F.cross_entropy, inputs, targets, generator=gen,
                          num_draws=draws, lanczos_steps=P, moment_probes=moment_probes)
        C = xi.T @ xi / draws
        sig = target[kind].to(C.dtype)
        norm = float(torch.linalg.norm(sig))
        rel = float(torch.linalg.norm(C - sig)) / norm
        var_sum = float(xi.pow(2).sum(1).pow(2).mean()) - float(torch.linalg.norm(C)) ** 2
        expected = math.sqrt(max(var_sum, 0.0) / draws) / norm
        rows.append(dict(kind=kind, rel_error=rel, expected=expected, z=rel / expected))
    return pd.DataFrame(rows)


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


# ----------------------------------------------------------------------------------------
# the training grid
# ----------------------------------------------------------------------------------------


@dataclass
class NoiseExperiment:
    """Results of :func:`run_noise_experiment` (or, at the full profile, of the GPU sweep's
    records: :func:`recorded_experiment`).

    - records: one row per (config, seed): label, kind, budget, batch_size, epochs,
      temperature (the injection scale T), seed, status, steps, train_error, test_error,
      train_loss, test_loss, sharpness, wall_time_s, noise_seconds, seconds_per_step.
    - curves: one row per (config, seed, epoch) with the engine's history fields.
    - models: final models kept for later measurements, keyed by (label, seed).
    - costs: step costs measured in training (:func:`recorded_step_costs`), or None when
      they are measured separately (:func:`measure_step_costs`).
    - notes: Markdown about where the numbers come from (the recorded runs, what is missing).
    - source: what stands behind the numbers, for figure titles and verdict scales: empty for
      a laptop run (the caller's label applies), the records' provenance (commit, device,
      date) for recorded runs.
    """

    records: pd.DataFrame
    curves: pd.DataFrame
    models: dict[tuple[str, int], nn.Module] = field(default_factory=dict, repr=False)
    costs: pd.DataFrame | None = None
    notes: str = ""
    source: str = ""


def run_noise_experiment(
    data,
    configs: Sequence[NoiseConfig],
    *,
    seeds: Sequence[int],
    model: str = "mlp",
    width: int | None = 128,
    norm: str = "none",
    epochs: int = 10,
    lr: float = 0.05,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    augment: bool = False,
    device: str = "cpu",
    sharpness_examples: int = 500,
    sharpness_iters: int = 20,
    keep_models: Sequence[tuple[str, int]] = (),
    progress: bool = True,
) -> NoiseExperiment:
    """Train every config for every seed with the engine, measure the final point.

    The model of a seed is the engine's default ``build_model(model, width, norm)``
    initialised from that seed, so every config starts from the same weights; a config's
    own ``epochs`` (the equal-steps arm) overrides ``epochs``. ``norm`` must not be "batch"
    (per-example quantities need independent examples); the sharpness is measured on the
    first ``sharpness_examples`` training examples (no augmentation).
    """
    from tqdm.auto import tqdm

    from sgdnoise.train import TrainConfig, train

    check_choice("norm", norm, ("group", "none"))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    epochs = check_positive_int("epochs", epochs)
    n_sharp = min(check_positive_int("sharpness_examples", sharpness_examples),
                  int(data.train_y.shape[0]))
    x_sharp = _as_float(data.train_x[:n_sharp]).to(device)
    y_sharp = data.train_y[:n_sharp].to(device)
    rows, curve_rows, kept = [], [], {}
    keep = {(str(a), int(b)) for a, b in keep_models}
    jobs = [(seed, c) for seed in seeds for c in configs]
    for seed, c in tqdm(jobs, desc="runs", disable=not progress):
        run_epochs = c.epochs or epochs
        cfg = TrainConfig(model=model, width=width, norm=norm, batch_size=c.batch_size,
                          epochs=run_epochs, lr=lr, momentum=momentum,
                          weight_decay=weight_decay, augment=augment, seed=seed,
                          device=device, channels_last=False, amp=False, eval_at_start=False)
        holder: dict[str, NoisySGD] = {}
        base_factory = c.optimizer_factory(lr=lr, momentum=momentum,
                                           weight_decay=weight_decay, seed=seed)

        def factory(m: nn.Module, base_factory=base_factory, holder=holder):
            holder["opt"] = opt = base_factory(m)
            return opt

        res = train(cfg, data, optimizer_factory=factory, progress=False,
                    desc=f"{c.label} seed {seed}")
        opt = holder["opt"]
        last = res.history[-1]
        sharp = (sharpness(res.model, x_sharp, y_sharp, num_iters=sharpness_iters, seed=seed)
                 if res.status == "finished" else float("nan"))
        rows.append(dict(
            label=c.label, kind=c.kind, budget=c.budget, batch_size=c.batch_size,
            epochs=run_epochs, temperature=c.temperature,
            seed=seed, status=res.status, steps=res.steps,
            train_error=last["train_error"], test_error=last["test_error"],
            train_loss=last["train_loss"], test_loss=last["test_loss"], sharpness=sharp,
            wall_time_s=res.wall_time_s, noise_seconds=opt.stats.noise_seconds,
            seconds_per_step=res.wall_time_s / max(res.steps, 1),
        ))
        for h in res.history:
            curve_rows.append(dict(label=c.label, kind=c.kind, budget=c.budget, seed=seed, **h))
        if (c.label, seed) in keep:
            kept[(c.label, seed)] = copy.deepcopy(res.model).cpu()
    return NoiseExperiment(pd.DataFrame(rows), pd.DataFrame(curve_rows), kept)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        from sgdnoise.data import to_float

        return to_float(x)
    return x.float()


# ----------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# cost of a step
# ----------------------------------------------------------------------------------------


def measure_step_costs(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kinds: Sequence[str] = KINDS,
    *,
    goals: Mapping[str, float],
    num_samples: int = 64,
    curvature_samples: int = 32,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    repeats: int = 7,
    warmup: int = 2,
    moment_samples: int | None = None,
    moment_probes: int | None = 4,
) -> pd.DataFrame:
    """Seconds per optimisation step of each kind on one batch, relative to kind "none".

    A step is what the engine does: zero the gradients, forward and backward on the whole
    batch (mean cross-entropy), ``observe_batch``, ``step()``. Kinds are timed in a shuffled
    interleaved order, ``repeats`` times each after ``warmup`` untimed rounds; the median
    is reported (robust to other load on the machine). The learning rate is tiny so the
    parameters barely move. M is ``curvature_samples`` for hessian / ggn,
    ``moment_samples`` (default ``num_samples``) for isotropic / diag_fisher (with
    ``moment_probes`` probes) and ``num_samples`` otherwise; a hessian draw takes
    ``lanczos_steps`` = k Lanczos steps (k Hessian-vector products on M examples; default
    :data:`sgdnoise.noise.DEFAULT_LANCZOS_STEPS`, the study's choice, see
    ``benchmarks/bench_noise.py``). ``goals`` (see :func:`cost_goals`) maps a kind to its
    largest acceptable ratio. Columns: kind, num_samples, lanczos_steps (k for hessian,
    None otherwise), seconds, ratio, goal, meets_goal.
    """
    repeats = check_positive_int("repeats", repeats)
    kinds = list(dict.fromkeys(["none", *kinds]))
    for k in kinds:
        check_choice("kinds", k, KINDS)
    opts = {}
    for k in kinds:
        if k in ("hessian", "ggn"):
            m = curvature_samples
        elif k in ("isotropic", "diag_fisher"):
            m = moment_samples or num_samples
        else:
            m = num_samples
        opts[k] = NoisySGD(model.parameters(), 1e-12, kind=k, model=model,
                           loss_fn=F.cross_entropy, num_samples=m,
                           lanczos_steps=lanczos_steps, moment_probes=moment_probes, seed=0,
                           injection_scale=1e-3)
    sync = torch.cuda.synchronize if inputs.is_cuda else (lambda: None)

    def one_step(opt: NoisySGD) -> float:
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        opt.observe_batch(inputs, targets)
        opt.step()
        sync()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {k: [] for k in kinds}
    rng = np.random.default_rng(0)
    for r in range(warmup + repeats):
        for k in rng.permutation(kinds):
            dt = one_step(opts[str(k)])
            if r >= warmup:
                times[str(k)].append(dt)
    base = float(np.median(times["none"]))
    rows = []
    for k in kinds:
        sec = float(np.median(times[k]))
        goal = float(goals.get(k, float("nan")))
        rows.append(dict(
            kind=k,
            num_samples=0 if k == "none" else opts[k].num_samples,
            lanczos_steps=lanczos_steps if k == "hessian" else None,
            seconds=sec, ratio=sec / base, goal=goal,
            meets_goal=(sec / base <= goal) if np.isfinite(goal) else None,
        ))
    return pd.DataFrame(rows)


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


# ----------------------------------------------------------------------------------------
# the full profile: records of the GPU sweep instead of training in the notebook
# ----------------------------------------------------------------------------------------

#: the columns of :attr:`NoiseExperiment.records` (what :func:`run_noise_experiment` writes)
EXPERIMENT_COLUMNS = ("label", "kind", "budget", "batch_size", "epochs", "temperature", "seed",
                      "status", "steps", "train_error", "test_error", "train_loss",
                      "test_loss", "sharpness", "wall_time_s", "noise_seconds",
                      "seconds_per_step")
#: the history fields of :attr:`NoiseExperiment.curves` after label, kind, budget, seed
CURVE_FIELDS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_error",
                "test_loss", "test_error", "param_distance", "running_loss", "wall_time")
NO_DIRECTIONS = ("Not measured at this profile: the GPU sweep keeps no trained network, so "
                 "the noise along the sharpest directions is measured only where the "
                 "notebook trains (the smoke and default profiles).")


def sweep_label(kind: str, batch_size: int, *, equal_steps: bool,
                matched_small_batch: int | None, injection_scale: float, small_batch: int,
                large_batch: int) -> str:
    """The chapter's label of one sweep run (the labels of :func:`build_configs`): plain SGD
    at b is :data:`SMALL`, at B :data:`LARGE` (or :data:`LARGE_STEPS` with ``equal_steps``);
    noise at B is ``"LB + <kind>"``, suffixed " (epoch T)" at the epoch-matched scale
    (:func:`epoch_matched_temperature`), " (T = s)" at any scale other than the step-matched
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
    elif small_batch <= batch_size and math.isclose(
            injection_scale, epoch_matched_temperature(small_batch, batch_size),
            rel_tol=1e-9):
        scale = " (epoch T)"
    else:
        scale = f" (T = {injection_scale:.3g})"
    return base + scale + steps


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
    :func:`run_noise_experiment` writes, so :func:`summarize`, :func:`gap_analysis`,
    :func:`classify_gap`, … apply unchanged) and whose ``curves`` hold every evaluation.

    Per run: ``label`` by :func:`sweep_label` (b, B = ``small_batch``, ``large_batch``;
    equal steps = the run has ``max_steps``), ``kind`` its noise kind ("none": plain SGD),
    ``budget`` :data:`EQUAL_STEPS` for runs with ``max_steps`` else :data:`EQUAL_EPOCHS`,
    ``epochs`` and the errors and losses of its last evaluation (the train numbers are on
    the plan's evaluation subset), ``temperature`` the injection scale s, ``sharpness`` the
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
            large_batch=large_batch)
        labels[run_id] = (label, str(last["noise_kind"]),
                          EQUAL_STEPS if equal_steps else EQUAL_EPOCHS)
        steps = int(last["steps_total"])
        wall = float(last["wall_time"])
        rows.append(dict(
            label=label, kind=str(last["noise_kind"]), budget=labels[run_id][2],
            batch_size=int(last["batch_size"]), epochs=float(last["epoch"]),
            temperature=float(last["injection_scale"]), seed=int(last["seed"]),
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


def ch08_gap_batch_size(records: pd.DataFrame, *, loss_tolerance: float = 0.02,
                        margin: float = 0.01) -> int | None:
    """The batch size at which chapter 8's decision procedure finds a generalization gap:
    :func:`sgdnoise.decide.calls.decide` on chapter 8's records (loaded with
    :func:`sgdnoise.sweep.load_records`; ``N`` from their ``n_train`` column) with chapter
    8's thresholds (the defaults are the values of its profiles), then the smallest batch
    size whose call is ``gap`` (:func:`sgdnoise.decide.calls.onset`). None when there is no
    record or no gap."""
    from sgdnoise.decide import calls as dc

    if records.empty:
        return None
    th = dc.Thresholds(loss_tolerance=loss_tolerance, margin=margin)
    return dc.decide(records, th).onset


def plan_batch_sentence(plan_batch: int, gap_batch: int | None) -> str:
    """Whether the plan's large batch B is chapter 8's gap batch size
    (:func:`ch08_gap_batch_size`), as one sentence."""
    if gap_batch is None:
        return (f"Chapter 8's records do not yet locate a gap; plan B = {plan_batch:,} is "
                "provisional (the value of the full profile).")
    if int(gap_batch) == int(plan_batch):
        return f"Plan B = {plan_batch:,} agrees with chapter 8's gap batch size."
    return (f"Chapter 8's records locate the gap at B = {int(gap_batch):,}; plan B = "
            f"{plan_batch:,} does not agree: the plan's large batch and the full profile's "
            f"`large_batch` should become {int(gap_batch):,} (new run ids, so the records "
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
                       small_batch=p.small_batch, large_batch=p.large_batch)


def plan_mismatches(plan, p: Params, configs: Sequence[NoiseConfig]) -> list[str]:
    """Where a sweep plan (:class:`sgdnoise.sweep.Plan`) differs from the profile ``p`` and
    the configurations the notebook would train (:func:`build_configs`): data, network,
    learning rate, momentum, augmentation, seeds, sharpness examples; per configuration its
    presence, kind, batch size, injection scale, M, Lanczos steps, probes and step count.
    Empty when they agree."""
    from sgdnoise.train import steps_per_epoch, total_steps

    out = []
    n = plan.data["n_train"] or 50_000
    if plan.data["dataset"] != p.dataset or n != p.n_train:
        out.append(f"data {plan.data['dataset']} N = {n} (profile: {p.dataset} "
                   f"N = {p.n_train})")
    want = dict(model=p.model, width=p.width, norm=p.norm, lr=p.lr, momentum=p.momentum,
                augment=p.augment, sharpness_n=p.sharpness_examples,
                sharpness_iters=p.sharpness_iters)
    by_label: dict[str, list] = {}
    for r in plan.runs:
        by_label.setdefault(_plan_label(r, p), []).append(r)
        for k, v in want.items():
            got = getattr(r.config, k)
            if got != v:
                out.append(f"{r.run_id}: {k} = {got!r} (profile: {v!r})")
        if r.config.lr_scaling != "none" or r.config.schedule != "constant":
            out.append(f"{r.run_id}: lr_scaling {r.config.lr_scaling!r}, schedule "
                       f"{r.config.schedule!r} (the chapter: one constant η)")
    for c in configs:
        runs = by_label.pop(c.label, [])
        if not runs:
            out.append(f"no arm for {c.label!r}")
            continue
        seeds = sorted(r.seed for r in runs)
        if seeds != sorted(p.seeds):
            out.append(f"{c.label}: seeds {seeds} (profile: {sorted(p.seeds)})")
        r = runs[0]
        spe = steps_per_epoch(n, c.batch_size, drop_last=r.config.drop_last)
        want_steps = (c.epochs or p.epochs) * spe
        if r.batch_size != c.batch_size or total_steps(r.config, n) != want_steps:
            out.append(f"{c.label}: B = {r.batch_size}, {total_steps(r.config, n)} steps "
                       f"(notebook: B = {c.batch_size}, {want_steps} steps)")
        if c.kind != "none":
            nz = r.noise
            probes = nz.moment_probes if c.kind in ("isotropic", "diag_fisher") else None
            want_probes = c.moment_probes if c.kind in ("isotropic", "diag_fisher") else None
            k = nz.lanczos_steps if c.kind == "hessian" else None
            want_k = c.lanczos_steps if c.kind == "hessian" else None
            if (not math.isclose(nz.injection_scale, c.temperature, rel_tol=1e-6)
                    or nz.num_samples != c.num_samples or probes != want_probes
                    or k != want_k):
                out.append(f"{c.label}: s = {nz.injection_scale:.6g}, M = {nz.num_samples}, "
                           f"k = {k}, probes = {probes} (notebook: s = {c.temperature:.6g}, "
                           f"M = {c.num_samples}, k = {want_k}, probes = {want_probes})")
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
    import dataclasses

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


def unmeasured_directions(kinds: Sequence[str], count: int) -> pd.DataFrame:
    """A :func:`directional_variance` table with every value NaN (nothing measured)."""
    return pd.DataFrame([dict(kind=k, direction=j, eigenvalue=math.nan, variance=math.nan,
                              sgd_variance=math.nan, ratio=math.nan)
                         for k in kinds for j in range(1, count + 1)])


def directions_text(directions: pd.DataFrame, draws: int) -> str:
    """:func:`direction_summary`, or :data:`NO_DIRECTIONS` when nothing was measured."""
    if directions.empty or directions["ratio"].isna().all():
        return NO_DIRECTIONS
    return direction_summary(directions, draws)


def step_costs(p: Params, data, goals: Mapping[str, float],
               experiment: NoiseExperiment) -> pd.DataFrame:
    """The cost table of the page: the costs measured in training when ``experiment`` has
    them (the GPU sweep's records), else :func:`measure_step_costs` on a fresh network (seed
    0) and the first B training images pooled to 32 × 32, with the profile's settings."""
    if experiment.costs is not None:
        return experiment.costs
    from sgdnoise.models import build_model

    torch.manual_seed(0)
    cost_model = build_model(p.model, width=p.width, norm=p.norm).to(p.device)
    x_cost = pooled_inputs(data.train_x[: p.large_batch], 32).float().to(p.device)
    y_cost = data.train_y[: p.large_batch].to(p.device)
    return measure_step_costs(
        cost_model, x_cost, y_cost, ["none", *p.kinds], goals=goals,
        num_samples=p.num_samples, curvature_samples=p.curvature_samples,
        lanczos_steps=p.lanczos_steps, repeats=p.cost_repeats,
        moment_samples=p.moment_samples, moment_probes=p.moment_probes or None,
    )


def recorded_experiment(p: Params, configs: Sequence[NoiseConfig],
                        goals: Mapping[str, float]) -> NoiseExperiment:
    """The full profile's experiment, read from the GPU sweep's records instead of trained:
    the records of ``p.plan``'s runs in ``p.records_dir`` through
    :func:`experiment_from_sweep` (labels in the order of ``configs``), the step costs
    measured in training (:func:`recorded_step_costs`) and as ``notes`` (Markdown, computed):
    whether the plan's B is chapter 8's gap batch size (:func:`ch08_gap_batch_size` on
    ``p.ch08_records_dirs``, :func:`plan_batch_sentence`), whether the plan agrees with the
    profile (:func:`plan_mismatches`), where the records come from and which are missing
    (:func:`missing_runs_markdown`). Records of run ids the plan does not have, or written
    by another config, are left out (and counted)."""
    from sgdnoise import sweep
    from sgdnoise.chapters import ch08_resnet_sweep as ch08

    plan = sweep.load_plan(p.plan, check_device=False)
    expected = {r.run_id: r for r in plan.runs}

    def current(rec: dict) -> bool:  # a run of this plan, with its config
        r = expected.get(rec["run"]["run_id"])
        noise = r.noise.to_dict() if r is not None and r.noise is not None else None
        return (r is not None and rec.get("config") == r.config.to_dict()
                and rec.get("noise") == noise)

    records = sweep.read_records(p.records_dir)  # read once, for both frames
    stale = {rec["run"]["run_id"] for rec in records if not current(rec)}
    kept = [rec for rec in records if rec["run"]["run_id"] not in stale]
    runs, sharp = sweep.records_frame(kept), sweep.sharpness_frame(kept)
    exp = experiment_from_sweep(runs, sharp, small_batch=p.small_batch,
                                large_batch=p.large_batch, order=[c.label for c in configs])
    exp.costs = recorded_step_costs(runs, goals, large_batch=p.large_batch)
    gap_b = ch08_gap_batch_size(ch08.load_recorded(list(p.ch08_records_dirs)))
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
