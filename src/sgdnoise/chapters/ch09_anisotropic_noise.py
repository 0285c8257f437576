"""Chapter 9's experiment: large-batch training with injected noise versus small-batch SGD.

Every configuration trains the same network from the same initialisation (per seed) with the
training engine (:func:`sgdnoise.train.train`) for the same number of epochs:

- small-batch SGD (batch b), the reference whose generalisation we want;
- large-batch SGD (batch B >> b) alone;
- large-batch SGD plus noise of each kind (:class:`sgdnoise.noise.NoisySGD`) at temperature
  ``T = 1/b − 1/B`` (:func:`sgdnoise.noise.matched_temperature`), so that the step has the
  gradient covariance of the small batch when the kind's covariance equals D.

This module runs the grid, measures the final point (train / test error, sharpness = the top
Hessian eigenvalue on a fixed training subset), the cost of a step of each kind relative to
a plain large-batch step, the variance of each kind's noise along the sharpest directions,
and summarises seeds with t-based confidence intervals.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise._validate import check_choice, check_positive, check_positive_int
from sgdnoise.noise import (
    KINDS,
    NoisySGD,
    hessian_operator,
    matched_temperature,
    sample_noise,
)

__all__ = [
    "COST_GOALS",
    "NoiseConfig",
    "NoiseExperiment",
    "build_configs",
    "classify_gap",
    "covariance_check",
    "directional_variance",
    "epoch_matched_temperature",
    "gap_analysis",
    "measure_step_costs",
    "per_example_projections",
    "pooled_inputs",
    "run_noise_experiment",
    "sharpness",
    "summarize",
    "t_interval",
    "verdict_table",
]

#: step-cost goals relative to a plain large-batch step (kind -> largest acceptable ratio)
COST_GOALS = {"subsampled": 1.5, "hessian": 3.0, "ggn": 3.0}

SMALL = "small-batch SGD"
LARGE = "large-batch SGD"


@dataclass(frozen=True)
class NoiseConfig:
    """One arm of the comparison: a batch size and a noise kind at a temperature."""

    label: str
    kind: str
    batch_size: int
    temperature: float = 0.0
    num_samples: int | None = None
    lanczos_steps: int = 10
    chunk_size: int | None = 16
    moment_probes: int | None = 4

    def optimizer_factory(
        self, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0
    ) -> Callable[[nn.Module], torch.optim.Optimizer]:
        """``model -> NoisySGD`` for :func:`sgdnoise.train.train`."""

        def factory(model: nn.Module) -> torch.optim.Optimizer:
            return NoisySGD(
                model.parameters(), lr, kind=self.kind, temperature=self.temperature,
                model=model, loss_fn=F.cross_entropy, num_samples=self.num_samples,
                momentum=momentum, weight_decay=weight_decay,
                lanczos_steps=self.lanczos_steps, chunk_size=self.chunk_size,
                moment_probes=self.moment_probes, seed=seed,
            )

        return factory


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
) -> list[NoiseConfig]:
    """Small-batch SGD, large-batch SGD, and large-batch + each kind in ``kinds``.

    ``temperature`` defaults to :func:`matched_temperature` ``(small_batch, large_batch)``
    (times N/(N−1) when ``num_examples`` is given: batches drawn without replacement).
    ``num_samples`` is M for subsampled / true_fisher, ``moment_samples`` (default
    ``num_samples``) M for isotropic / diag_fisher (whose moments come from
    ``moment_probes`` sub-sampled probes, or exact per-example gradients if None),
    ``curvature_samples`` M for hessian / ggn (each Lanczos step costs a Hessian-vector
    product on those examples). Each kind in ``epoch_matched_kinds`` is run once more at
    :func:`epoch_matched_temperature` (label suffix "(epoch T)")."""
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if temperature is None:
        temperature = matched_temperature(b, B, num_examples=num_examples)
    temperature = check_positive("temperature", temperature, allow_zero=True)
    configs = [NoiseConfig(SMALL, "none", b), NoiseConfig(LARGE, "none", B)]
    sizes = {"hessian": curvature_samples, "ggn": curvature_samples,
             "isotropic": moment_samples or num_samples,
             "diag_fisher": moment_samples or num_samples}

    for kind in kinds:
        check_choice("kinds", kind, KINDS[1:])
        m = sizes.get(kind, num_samples)
        configs.append(NoiseConfig(f"LB + {kind}", kind, B, temperature, m, lanczos_steps,
                                   moment_probes=moment_probes))
    t_epoch = epoch_matched_temperature(b, B)
    for kind in epoch_matched_kinds:
        check_choice("epoch_matched_kinds", kind, KINDS[1:])
        m = sizes.get(kind, num_samples)
        configs.append(
            NoiseConfig(f"LB + {kind} (epoch T)", kind, B, t_epoch, m, lanczos_steps,
                        moment_probes=moment_probes)
        )
    return configs


def epoch_matched_temperature(small_batch: int, large_batch: int) -> float:
    """T that matches the noise accumulated over an epoch at equal learning rate η.

    An epoch of small-batch SGD takes N/b steps, each adding noise of covariance η² D/b:
    η² N D / b² in total. An epoch at batch B with injected noise takes N/B steps of
    covariance η² (1/B + T) D. Equal totals give ``T = B/b² − 1/B`` (B/b times the per-step
    :func:`matched_temperature`, plus (B/b − 1)/B)."""
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
    Hessian-vector products."""
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
        P = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
    P = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = next(model.parameters()).dtype
    res = lanczos(lambda v: op(v.to(dtype).unsqueeze(1))[:, 0].to(v.dtype), P, k,
                  num_iters=min(num_iters, P), tol=1e-5, seed=seed,
                  device=next(model.parameters()).device)
    return res.eigenvalues, res.eigenvectors


def per_example_projections(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, U: torch.Tensor
) -> torch.Tensor:
    """``A: (n, k)`` with ``A[i, j] = u_jᵀ ∇ℓ_i`` (ℓ_i the cross-entropy of example i, u_j
    the columns of ``U: (P, k)``), without forming per-example gradients.

    With a dummy weight vector w ∈ Rⁿ, ``h(w) = ∇_θ Σ_i w_i ℓ_i`` is linear in w, so
    ``∂(h(w) · u)/∂w_i = ∇ℓ_i · u``: one backward with ``create_graph`` and one batched
    backward over the k directions (the double-vjp trick)."""
    from sgdnoise.noise import _grad_batched, _per_example_losses, _split, _trainable

    params = _trainable(model)
    k = U.shape[1]
    with torch.enable_grad():
        losses = _per_example_losses(F.cross_entropy, model(inputs), targets)
        w = torch.zeros_like(losses, requires_grad=True)
        h = torch.autograd.grad(losses, params, grad_outputs=w, create_graph=True,
                                allow_unused=True)
        pairs = [(g, i) for i, g in enumerate(h) if g is not None]
        pieces = _split(U.T.to(params[0].dtype), params)
        out = _grad_batched([g for g, _ in pairs], [w], [pieces[i] for _, i in pairs])[0]
    if out is None:
        return losses.new_zeros((inputs.shape[0], k)).detach()
    return out.detach().T


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


def pooled_inputs(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` (uint8 pixels are normalised with the CIFAR-10 statistics)
    average-pooled to ``(N, C, size, size)`` in float64: a small input for dense checks."""
    size = check_positive_int("size", size)
    return F.adaptive_avg_pool2d(_as_float(x).double(), size)


def covariance_check(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kinds: Sequence[str] = KINDS[1:],
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


# ----------------------------------------------------------------------------------------
# the training grid
# ----------------------------------------------------------------------------------------


@dataclass
class NoiseExperiment:
    """Results of :func:`run_noise_experiment`.

    records: one row per (config, seed): label, kind, batch_size, temperature, seed, status,
        steps, train_error, test_error, train_loss, test_loss, sharpness, wall_time_s,
        noise_seconds, seconds_per_step.
    curves: one row per (config, seed, epoch) with the engine's history fields.
    models: final models kept for later measurements, keyed by (label, seed).
    """

    records: pd.DataFrame
    curves: pd.DataFrame
    models: dict[tuple[str, int], nn.Module] = field(default_factory=dict, repr=False)


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
    initialised from that seed, so every config starts from the same weights. ``norm`` must
    not be "batch" (per-example quantities need independent examples); the sharpness is
    measured on the first ``sharpness_examples`` training examples (no augmentation).
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
        cfg = TrainConfig(model=model, width=width, norm=norm, batch_size=c.batch_size,
                          epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          augment=augment, seed=seed, device=device, channels_last=False,
                          amp=False, eval_at_start=False)
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
            label=c.label, kind=c.kind, batch_size=c.batch_size, temperature=c.temperature,
            seed=seed, status=res.status, steps=res.steps,
            train_error=last["train_error"], test_error=last["test_error"],
            train_loss=last["train_loss"], test_loss=last["test_loss"], sharpness=sharp,
            wall_time_s=res.wall_time_s, noise_seconds=opt.stats.noise_seconds,
            seconds_per_step=res.wall_time_s / max(res.steps, 1),
        ))
        for h in res.history:
            curve_rows.append(dict(label=c.label, kind=c.kind, seed=seed, **h))
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


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t confidence interval for the mean; half-width NaN
    for fewer than two finite values."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)


def summarize(records: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per config (in first-seen order): seeds, mean ± CI half-width of test error, train
    error, generalisation gap (test − train error) and sharpness, and the mean noise
    seconds per step."""
    out = []
    for label, grp in records.groupby("label", sort=False):
        row = dict(label=label, kind=grp["kind"].iloc[0],
                   batch_size=int(grp["batch_size"].iloc[0]), seeds=len(grp),
                   diverged=int((grp["status"] != "finished").sum()))
        gap = grp["test_error"] - grp["train_error"]
        for name, vals in (("test_error", grp["test_error"]),
                           ("train_error", grp["train_error"]),
                           ("gen_gap", gap), ("sharpness", grp["sharpness"])):
            row[name], row[f"{name}_ci"] = t_interval(vals.tolist(), confidence)
        row["noise_s_per_step"] = float((grp["noise_seconds"] / grp["steps"]).mean())
        out.append(row)
    return pd.DataFrame(out)


def gap_analysis(
    records: pd.DataFrame,
    *,
    small_label: str = SMALL,
    large_label: str = LARGE,
    metric: str = "test_error",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Paired (same seed) comparisons of every config with small- and large-batch SGD.

    Columns: label, diff_small (mean of metric − small-batch metric over seeds) and its CI
    half-width, diff_large likewise against large-batch SGD alone, and ``closed`` =
    (large − config) / (large − small) on the seed means: the fraction of the large/small gap
    the config closes (1: all of it, 0: none, < 0: worse than large-batch alone).
    """
    piv = records.pivot_table(index="seed", columns="label", values=metric, aggfunc="first")
    if small_label not in piv or large_label not in piv:
        raise ValueError(f"records must contain the labels {small_label!r} and {large_label!r}")
    small, large = piv[small_label], piv[large_label]
    gap = float(large.mean() - small.mean())
    out = []
    for label in dict.fromkeys(records["label"]):
        col = piv[label]
        ds, ds_ci = t_interval((col - small).dropna().tolist(), confidence)
        dl, dl_ci = t_interval((col - large).dropna().tolist(), confidence)
        closed = (float(large.mean() - col.mean()) / gap) if gap != 0 else float("nan")
        out.append(dict(label=label, mean=float(col.mean()), diff_small=ds, diff_small_ci=ds_ci,
                        diff_large=dl, diff_large_ci=dl_ci, closed=closed))
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------
# cost of a step
# ----------------------------------------------------------------------------------------


def measure_step_costs(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kinds: Sequence[str] = KINDS,
    *,
    num_samples: int = 64,
    curvature_samples: int = 32,
    lanczos_steps: int = 10,
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
    ``moment_probes`` probes) and ``num_samples`` otherwise. Columns: kind, num_samples,
    seconds, ratio, goal, meets_goal.
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
        opts[k] = NoisySGD(model.parameters(), 1e-12, kind=k, temperature=1e-3, model=model,
                           loss_fn=F.cross_entropy, num_samples=m,
                           lanczos_steps=lanczos_steps, moment_probes=moment_probes, seed=0)
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
        goal = COST_GOALS.get(k, float("nan"))
        rows.append(dict(
            kind=k,
            num_samples=0 if k == "none" else opts[k].num_samples,
            seconds=sec, ratio=sec / base, goal=goal,
            meets_goal=(sec / base <= goal) if np.isfinite(goal) else None,
        ))
    return pd.DataFrame(rows)


def classify_gap(gaps: pd.DataFrame, *, small_label: str = SMALL,
                 large_label: str = LARGE) -> pd.DataFrame:
    """Adds a ``verdict`` column to :func:`gap_analysis` output, from the paired intervals:

    - "closes the gap": significantly better than large-batch SGD alone
      (diff_large + ci < 0) and not significantly worse than small-batch SGD
      (diff_small − ci <= 0);
    - "narrows the gap": significantly better than large-batch alone, still significantly
      worse than small-batch SGD;
    - "worse than large-batch SGD": diff_large − ci > 0;
    - "no significant change" otherwise. The two references get "reference".

    If large-batch SGD is not significantly worse than small-batch SGD there is no gap to
    close, and a significant improvement over large-batch SGD is called "better than
    large-batch SGD (no gap)". NaN intervals (a single seed) count as not significant."""
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
        better = np.isfinite(dl_ci) and dl + dl_ci < 0
        worse = np.isfinite(dl_ci) and dl - dl_ci > 0
        not_worse_than_small = not (np.isfinite(ds_ci) and ds - ds_ci > 0)
        if better and not gap_exists:
            return "better than large-batch SGD (no gap)"
        if better and not_worse_than_small:
            return "closes the gap"
        if better:
            return "narrows the gap"
        if worse:
            return "worse than large-batch SGD"
        return "no significant change"

    out["verdict"] = [verdict(r) for _, r in out.iterrows()]
    return out


def verdict_table(
    summary: pd.DataFrame, gaps: pd.DataFrame, costs: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per config joining :func:`summarize` (test / train error and sharpness with
    CI half-widths), :func:`classify_gap` (fraction of the gap closed, verdict) and, when
    given, :func:`measure_step_costs` (``step_cost`` = time per step / plain large-batch
    step, by kind: 1 for large-batch SGD, NaN for small-batch SGD, whose steps are smaller)."""
    cols = ["label", "kind", "test_error", "test_error_ci", "train_error", "train_error_ci",
            "sharpness", "sharpness_ci"]
    out = summary[cols].merge(gaps[["label", "closed", "verdict"]], on="label", how="left")
    if costs is not None:
        ratio = dict(zip(costs["kind"], costs["ratio"], strict=True))
        out["step_cost"] = [float("nan") if lab == SMALL else ratio.get(k, float("nan"))
                            for lab, k in zip(out["label"], out["kind"], strict=True)]
    return out
