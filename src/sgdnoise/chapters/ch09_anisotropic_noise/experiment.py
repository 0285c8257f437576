"""Chapter 9's experiment: the configurations (:func:`build_configs`), training them with
the engine (:func:`run_noise_experiment`), and the measurements of the samplers and of a
trained point (covariance check, noise along the sharpest directions, step costs)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.curvature import HessianOperator, sharpness
from sgdnoise.grads import per_example_grad_products
from sgdnoise.noise import (
    DEFAULT_LANCZOS_STEPS,
    NOISE_KINDS,
    NoiseSpec,
    NoisySGD,
    matched_injection_scale,
    noisy_sgd_factory,
    sample_noise,
)
from sgdnoise.validate import check_choice, check_positive_int

from .params import EQUAL_EPOCHS, EQUAL_STEPS, LARGE, LARGE_STEPS, SMALL, STEPS_SUFFIX

__all__ = [
    "CURVE_FIELDS",
    "EXPERIMENT_COLUMNS",
    "SHARPNESS",
    "NoiseConfig",
    "NoiseExperiment",
    "build_configs",
    "covariance_check",
    "directional_variance",
    "draws_as_in_training",
    "epoch_matched_injection_scale",
    "injection_scales",
    "per_example_projections",
    "pooled_inputs",
    "run_noise_experiment",
    "step_matched_epochs",
    "top_hessian_directions",
    "truncated_hessian_draws",
    "unmeasured_directions",
]

#: how the chapter measures the sharpness of a trained point with
#: :func:`sgdnoise.curvature.sharpness`: Lanczos in float64 stopping at relative residual
#: 1e-4, Hessian products in chunks of 1,000 examples
SHARPNESS = {"tol": 1e-4, "dtype": torch.float64, "chunk_size": 1000}

@dataclass(frozen=True)
class NoiseConfig:
    """One arm of the comparison: a batch size, and the injected noise (None: plain SGD).

    ``noise`` is the :class:`sgdnoise.noise.NoiseSpec` of the arm (its injection scale s is
    1/b − 1/B times N/(N−1) when matched per step); ``epochs`` None means the experiment's
    epochs; ``budget`` is :data:`EQUAL_EPOCHS` or :data:`EQUAL_STEPS`."""

    label: str
    batch_size: int
    noise: NoiseSpec | None = None
    epochs: int | None = None
    budget: str = EQUAL_EPOCHS

    @property
    def kind(self) -> str:
        """The noise kind ("none": plain SGD)."""
        return "none" if self.noise is None else self.noise.kind

    @property
    def injection_scale(self) -> float:
        """s of :class:`sgdnoise.noise.NoisySGD` (0 for plain SGD)."""
        return 0.0 if self.noise is None else self.noise.injection_scale

    @property
    def num_samples(self) -> int | None:
        """M, the batch examples of each draw (None for plain SGD)."""
        return None if self.noise is None else self.noise.num_samples

    def optimizer_factory(self, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                          seed: int = 0) -> Callable[[nn.Module], NoisySGD]:
        """``model -> NoisySGD`` for :func:`sgdnoise.train.train`
        (:func:`sgdnoise.noise.noisy_sgd_factory`)."""
        return noisy_sgd_factory(self.noise, lr=lr, momentum=momentum,
                                 weight_decay=weight_decay, seed=seed)


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
    injection_scale: float | None = None,
    num_samples: int = 64,
    moment_samples: int | None = None,
    curvature_samples: int = 32,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    num_examples: int | None = None,
    epoch_matched_kinds: Sequence[str] = (),
    moment_probes: int | None = 4,
    step_matched_epochs: int | None = None,
    step_matched_kinds: Sequence[str] = (),
) -> list[NoiseConfig]:
    """Small-batch SGD, large-batch SGD, and large-batch + each kind in ``kinds``.

    ``injection_scale`` (s) defaults to :func:`sgdnoise.noise.matched_injection_scale`
    ``(small_batch, large_batch)`` (times N/(N−1) when ``num_examples`` is given: batches
    drawn without replacement). ``num_samples`` is M for subsampled / true_fisher,
    ``moment_samples`` (default ``num_samples``) M for isotropic / diag_fisher (whose moments
    come from ``moment_probes`` sub-sampled probes, or exact per-example gradients if None),
    ``curvature_samples`` M for hessian / ggn (each Lanczos step costs a Hessian-vector
    product on those examples). Each kind in ``epoch_matched_kinds`` is run once more at
    :func:`epoch_matched_injection_scale` (label suffix "(epoch T)"). With
    ``step_matched_epochs`` (see :func:`step_matched_epochs`) the equal-steps arm follows:
    large-batch SGD and large-batch + each kind in ``step_matched_kinds`` at the step-matched
    s, trained that many epochs (label suffix "(equal steps)")."""
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    matched = injection_scale is None
    s_step = (matched_injection_scale(b, B, num_examples=num_examples) if matched
              else injection_scale)
    sizes = {"hessian": curvature_samples, "ggn": curvature_samples,
             "isotropic": moment_samples or num_samples,
             "diag_fisher": moment_samples or num_samples}

    def spec(kind: str, name: str, s: float, small: int | None) -> NoiseSpec:
        check_choice(name, kind, NOISE_KINDS)
        return NoiseSpec(kind, s, small, sizes.get(kind, num_samples), lanczos_steps,
                         moment_probes)

    small = b if matched else None
    s_epoch = epoch_matched_injection_scale(b, B, num_examples)
    configs = [NoiseConfig(SMALL, b), NoiseConfig(LARGE, B)]
    configs += [NoiseConfig(f"LB + {k}", B, spec(k, "kinds", s_step, small)) for k in kinds]
    configs += [NoiseConfig(f"LB + {k} (epoch T)", B, spec(k, "epoch_matched_kinds", s_epoch,
                                                          None)) for k in epoch_matched_kinds]
    if step_matched_epochs is None:
        if step_matched_kinds:
            raise ValueError("step_matched_kinds needs step_matched_epochs (the equal-steps "
                             f"arm), got step_matched_kinds={list(step_matched_kinds)}")
        return configs
    e = check_positive_int("step_matched_epochs", step_matched_epochs)
    configs.append(NoiseConfig(LARGE_STEPS, B, epochs=e, budget=EQUAL_STEPS))
    configs += [NoiseConfig(f"LB + {k}{STEPS_SUFFIX}", B,
                            spec(k, "step_matched_kinds", s_step, small), epochs=e,
                            budget=EQUAL_STEPS) for k in step_matched_kinds]
    return configs


def epoch_matched_injection_scale(small_batch: int, large_batch: int,
                                  num_examples: int | None = None) -> float:
    """Injection scale s that matches the noise accumulated over an epoch at equal η.

    Batches drawn without replacement from N examples have mean-gradient covariance
    ``c(b) D`` with ``c(b) = (N − b) / (b (N − 1))`` (chapter 1; ``c(b) → 1/b`` as N grows).
    An epoch of small-batch SGD takes N/b steps of covariance η² c(b) D; an epoch at batch B
    with injected noise N/B steps of covariance η² (c(B) + s) D. Equal totals give

        s = (B/b) c(b) − c(B) = (B (N − b)/b² − (N − B)/B) / (N − 1),

    the same without-replacement factor as the per-step scale
    (:func:`sgdnoise.noise.matched_injection_scale` with ``num_examples``). Without
    ``num_examples`` (N → ∞): ``s = B/b² − 1/B``."""
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if b > B:
        raise ValueError(f"small_batch must be <= large_batch ({B}), got {b}")
    if num_examples is None:
        return B / b**2 - 1 / B
    n = check_positive_int("num_examples", num_examples)
    if B > n or n < 2:
        raise ValueError(f"num_examples must be >= 2 and >= large_batch ({B}), got {n}")
    return (B * (n - b) / b**2 - (n - B) / B) / (n - 1)


def injection_scales(small_batch: int, large_batch: int, num_examples: int) -> pd.DataFrame:
    """The two injection scales of the chapter, both with the without-replacement factor:
    per step (1/b − 1/B) N/(N−1) (:func:`sgdnoise.noise.matched_injection_scale`) and per
    epoch (B (N−b)/b² − (N−B)/B)/(N−1) (:func:`epoch_matched_injection_scale`), with b, B
    and B/N. Columns: quantity (words), symbol (TeX), value."""
    t_step = matched_injection_scale(small_batch, large_batch, num_examples=num_examples)
    t_epoch = epoch_matched_injection_scale(small_batch, large_batch, num_examples)
    return pd.DataFrame({
        "quantity": ["small batch", "large batch", "large batch / training examples",
                     "injection scale matched per step", "injection scale matched per epoch"],
        "symbol": ["b", "B", "B/N", r"T_\text{step} = (1/b - 1/B)\,N/(N-1)",
                   r"T_\text{epoch} = \bigl(B(N-b)/b^2 - (N-B)/B\bigr)/(N-1)"],
        "value": [small_batch, large_batch, large_batch / num_examples, t_step, t_epoch],
    })


def top_hessian_directions(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, k: int, *,
    num_iters: int = 40, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest Hessian eigenpairs on ``(inputs, targets)``: ``(evals (k,), U (P, k))``,
    by :meth:`sgdnoise.curvature.HessianOperator.eigh` (Lanczos in float64, tolerance
    1e-5)."""
    op = HessianOperator(model, F.cross_entropy, inputs, targets, keep_graph=True)
    res = op.eigh(k, num_iters=min(num_iters, op.shape[0]), tol=1e-5, seed=seed,
                  dtype=torch.float64)
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
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    seed: int = 0,
) -> pd.DataFrame:
    """How much of each kind's noise lies along the sharpest directions.

    With u_1..u_k the top Hessian eigenvectors on the examples, the table holds, per kind and
    direction, the Monte Carlo variance uᵀΣ_kind u from ``draws`` draws (all drawn on the
    same examples), next to the exact uᵀDu of the per-example gradient covariance D and the
    eigenvalue λ = uᵀHu. A ratio uᵀΣu / uᵀDu of 1 means the kind puts SGD's amount of noise in
    that direction. The draws are made as in training (:func:`draws_as_in_training`: a
    hessian draw runs its own ``lanczos_steps``). The kinds differ in size as well as
    shape, so each is also compared at matched trace: with ``t_kind`` = mean ‖ξ‖² over its
    draws (unbiased for tr Σ_kind) and ``t_D`` the same for sub-sampled draws on all the
    examples (unbiased for tr D), ``trace_vs_d = t_kind / t_D`` and ``shape_ratio =
    ratio · t_D / t_kind``: the ratio the kind would have if it were rescaled to the trace
    of D. Columns: kind, direction, eigenvalue, variance, sgd_variance, ratio, trace_vs_d,
    shape_ratio.
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
    draws_of = {kind: draws_as_in_training(kind, model, inputs, targets, draws=draws,
                                           generator=gen, lanczos_steps=lanczos_steps,
                                           num_samples=num_samples) for kind in kinds}
    sub = draws_of.get("subsampled")
    if sub is None:
        sub = draws_as_in_training("subsampled", model, inputs, targets, draws=draws,
                                   generator=gen, lanczos_steps=lanczos_steps,
                                   num_samples=num_samples)
    trace_d = float(sub.pow(2).sum(1).mean())
    for kind, xi in draws_of.items():
        var = (xi @ U).pow(2).mean(0)
        trace = float(xi.pow(2).sum(1).mean())
        for j in range(U.shape[1]):
            ratio = float(var[j] / sgd_var[j])
            rows.append(dict(kind=kind, direction=j + 1, eigenvalue=float(evals[j]),
                             variance=float(var[j]), sgd_variance=float(sgd_var[j]),
                             ratio=ratio, trace_vs_d=trace / trace_d,
                             shape_ratio=ratio * (trace_d / trace)))
    model.train(was_training)
    return pd.DataFrame(rows)


def draws_as_in_training(kind: str, model: nn.Module, inputs: torch.Tensor,
                         targets: torch.Tensor, *, draws: int, generator: torch.Generator,
                         lanczos_steps: int, num_samples: int | None = None,
                         moment_probes: int | None = 4) -> torch.Tensor:
    """``draws`` draws ``(S, P)`` of one kind, made as the optimizer makes them. Training
    draws one ξ per step, and a hessian draw runs its own k Lanczos steps from its own z;
    :func:`sgdnoise.noise.sample_noise` with ``num_draws = S`` runs one *block* Lanczos
    over all S starting vectors, whose Krylov space is S times larger (exact once kS ≥ P),
    so for the hessian kind the draws are made one at a time. Other kinds use no Lanczos
    and are drawn together."""
    if kind != "hessian":
        return sample_noise(kind, model, F.cross_entropy, inputs, targets,
                            num_samples=num_samples, generator=generator, num_draws=draws,
                            lanczos_steps=lanczos_steps, moment_probes=moment_probes)
    return torch.stack([sample_noise(kind, model, F.cross_entropy, inputs, targets,
                                     num_samples=num_samples, generator=generator,
                                     lanczos_steps=lanczos_steps)
                        for _ in range(check_positive_int("draws", draws))])


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
    lanczos_steps: int | None = None,
) -> pd.DataFrame:
    """Empirical covariance of ``draws`` draws of each kind against its target, built densely
    and independently of :mod:`sgdnoise.noise` (small P only; all examples). The hessian
    kind takes ``lanczos_steps`` = k Lanczos steps (None: k = P, where its square root is
    exact; a smaller k, as in training, adds the error of the polynomial approximation,
    which this check then measures, drawing one ξ at a time as the optimizer does:
    :func:`truncated_hessian_draws`; the other kinds use no Lanczos).

    Targets: isotropic tr(D)/P·I, diag_fisher diag(D), subsampled D (per-example gradients
    from :func:`sgdnoise.grads.per_example_grads`), true_fisher F
    (:func:`sgdnoise.curvature.true_fisher`), hessian H₊ (eigenvalues of
    :func:`sgdnoise.curvature.hessian` clipped at 0), ggn :func:`sgdnoise.curvature.ggn`.
    isotropic / diag_fisher use ``moment_probes`` probes (None: exact per-example gradients).
    Columns: kind, lanczos_steps (k for hessian, None otherwise), trace_vs_d = tr Σ / tr D
    (the kind's size against SGD's covariance: 1 for isotropic, diag_fisher and subsampled
    by construction, whatever it is for the curvature kinds), trace_ratio = tr Ĉ / tr Σ,
    rel_error = ‖Ĉ − Σ‖_F / ‖Σ‖_F, expected = the root-mean-square error a
    correct sampler has with this many draws (estimated from the draws:
    sqrt((mean_s ‖ξ_s‖⁴ − ‖Ĉ‖_F²) / S) / ‖Σ‖_F), z = rel_error / expected, and
    draw_error (truncated hessian rows only, :func:`truncated_hessian_draws`: the RMS
    error of each draw against the exact square root applied to the same z)."""
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
    k = P if lanczos_steps is None else min(check_positive_int("lanczos_steps",
                                                               lanczos_steps), P)
    root = U @ torch.diag(lam.clamp_min(0).sqrt()) @ U.T
    rows = []
    for kind in kinds:
        draw_error = math.nan
        if kind == "hessian" and k < P:
            xi, draw_error = truncated_hessian_draws(model, inputs, targets, k, draws, gen,
                                                     root)
        else:
            xi = sample_noise(kind, model, F.cross_entropy, inputs, targets, generator=gen,
                              num_draws=draws, lanczos_steps=k, moment_probes=moment_probes)
        C = xi.T @ xi / draws
        sig = target[kind].to(C.dtype)
        norm = float(torch.linalg.norm(sig))
        rel = float(torch.linalg.norm(C - sig)) / norm
        var_sum = float(xi.pow(2).sum(1).pow(2).mean()) - float(torch.linalg.norm(C)) ** 2
        expected = math.sqrt(max(var_sum, 0.0) / draws) / norm
        rows.append(dict(kind=kind, lanczos_steps=k if kind == "hessian" else None,
                         trace_vs_d=float(torch.trace(sig) / torch.trace(D)),
                         trace_ratio=float(torch.trace(C) / torch.trace(sig)),
                         rel_error=rel, expected=expected, z=rel / expected,
                         draw_error=draw_error))
    return pd.DataFrame(rows)


def truncated_hessian_draws(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                            k: int, draws: int, generator: torch.Generator,
                            root: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``draws`` hessian draws ``(S, P)`` made as the optimizer makes one per step: for each
    z of its own, k Lanczos steps (:func:`sgdnoise.spectral.lanczos_matrix_function` on the
    :class:`sgdnoise.curvature.HessianOperator` of all examples, the computation of the
    hessian sampler), and the relative RMS error of those draws against the exact
    ``root @ z`` for the same z (``root: (P, P)`` = H₊^{1/2}, built densely):
    ``sqrt(Σ_s ‖ξ_s − H₊^{1/2} z_s‖² / Σ_s ‖H₊^{1/2} z_s‖²)``. Paired on the same z, this
    error has no sampling noise of its own worth the name."""
    from sgdnoise.spectral import lanczos_matrix_function

    op = HessianOperator(model, F.cross_entropy, inputs, targets, keep_graph=True)
    Z = torch.randn(root.shape[0], check_positive_int("draws", draws), generator=generator,
                    dtype=root.dtype)
    xi = torch.cat([lanczos_matrix_function(lambda V: op.matmat(V, block_size=None),
                                            Z[:, j:j + 1], k) for j in range(draws)], dim=1)
    exact = root @ Z
    err = float(torch.linalg.norm(xi - exact) / torch.linalg.norm(exact))
    return xi.T.detach(), err


@dataclass
class NoiseExperiment:
    """Results of :func:`run_noise_experiment` (or, at the full profile, of the GPU sweep's
    records: :func:`recorded_experiment`).

    - records: one row per (config, seed): label, kind, budget, batch_size, epochs,
      injection_scale (s), seed, status, steps, train_error, test_error,
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


#: the columns of :attr:`NoiseExperiment.records` (what :func:`run_noise_experiment` writes)
EXPERIMENT_COLUMNS = ("label", "kind", "budget", "batch_size", "epochs", "injection_scale",
                      "seed", "status", "steps", "train_error", "test_error", "train_loss",
                      "test_loss", "sharpness", "wall_time_s", "noise_seconds",
                      "seconds_per_step")
#: the history fields of :attr:`NoiseExperiment.curves` after label, kind, budget, seed
CURVE_FIELDS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_error",
                "test_loss", "test_error", "param_distance", "running_loss", "wall_time")


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
    first ``sharpness_examples`` training examples (no augmentation), by
    :func:`sgdnoise.curvature.sharpness` with the chapter's settings (:data:`SHARPNESS`).
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
        res = train(cfg, data, progress=False, desc=f"{c.label} seed {seed}",
                    optimizer_factory=c.optimizer_factory(lr=lr, momentum=momentum,
                                                          weight_decay=weight_decay, seed=seed))
        last = res.history[-1]
        sharp = (sharpness(res.model, x_sharp, y_sharp, num_iters=sharpness_iters, seed=seed,
                           **SHARPNESS)
                 if res.status == "finished" else float("nan"))
        rows.append(dict(
            label=c.label, kind=c.kind, budget=c.budget, batch_size=c.batch_size,
            epochs=run_epochs, injection_scale=c.injection_scale,
            seed=seed, status=res.status, steps=res.steps,
            train_error=last["train_error"], test_error=last["test_error"],
            train_loss=last["train_loss"], test_loss=last["test_loss"], sharpness=sharp,
            wall_time_s=res.wall_time_s, noise_seconds=res.optimizer.stats.noise_seconds,
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


def unmeasured_directions(kinds: Sequence[str], count: int) -> pd.DataFrame:
    """A :func:`directional_variance` table with every value NaN (nothing measured)."""
    return pd.DataFrame([dict(kind=k, direction=j, eigenvalue=math.nan, variance=math.nan,
                              sgd_variance=math.nan, ratio=math.nan, trace_vs_d=math.nan,
                              shape_ratio=math.nan)
                         for k in kinds for j in range(1, count + 1)])
