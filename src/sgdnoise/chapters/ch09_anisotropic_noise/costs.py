"""Chapter 9's step costs: the time of one optimisation step of each noise kind against a
plain large-batch step (:func:`measure_step_costs`, :func:`step_costs` for the page), and
what a hessian step cannot cost less than on the machine at hand
(:func:`hessian_cost_parts`, read by ``cost_bound_sentence`` of the verdicts module)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.curvature import HessianOperator
from sgdnoise.grads import trainable_parameters
from sgdnoise.noise import DEFAULT_LANCZOS_STEPS, KINDS, NoisySGD
from sgdnoise.spectral import sqrt_psd
from sgdnoise.validate import check_choice, check_positive_int

from .experiment import NoiseExperiment, pooled_inputs
from .params import Params

__all__ = [
    "HessianCostParts",
    "hessian_cost_parts",
    "measured_hessian_parts",
    "measure_step_costs",
    "median_times",
    "step_costs",
]


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

    def one_step(opt: NoisySGD) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        opt.observe_batch(inputs, targets)
        opt.step()

    med = median_times({k: functools.partial(one_step, opts[k]) for k in kinds}, repeats,
                        warmup, sync, shuffle=np.random.default_rng(0))
    base = med["none"]
    rows = []
    for k in kinds:
        sec = med[k]
        goal = float(goals.get(k, float("nan")))
        rows.append(dict(
            kind=k,
            num_samples=0 if k == "none" else opts[k].num_samples,
            lanczos_steps=lanczos_steps if k == "hessian" else None,
            seconds=sec, ratio=sec / base, goal=goal,
            meets_goal=(sec / base <= goal) if np.isfinite(goal) else None,
        ))
    return pd.DataFrame(rows)


def step_costs(p: Params, data, goals: Mapping[str, float],
               experiment: NoiseExperiment) -> pd.DataFrame:
    """The cost table of the page: the costs measured in training when ``experiment`` has
    them (the GPU sweep's records), else :func:`measure_step_costs` on a fresh network (seed
    0) and the first B training images pooled to 32 × 32, with the profile's settings."""
    if experiment.costs is not None:
        return experiment.costs
    model, x, y = _cost_batch(p, data)
    return measure_step_costs(
        model, x, y, ["none", *p.kinds], goals=goals,
        num_samples=p.num_samples, curvature_samples=p.curvature_samples,
        lanczos_steps=p.lanczos_steps, repeats=p.cost_repeats,
        moment_samples=p.moment_samples, moment_probes=p.moment_probes or None,
    )


def _cost_batch(p: Params, data) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A fresh network of the profile (seed 0) and the first B training images pooled to
    32 × 32, with their labels, on the profile's device."""
    from sgdnoise.models import build_model

    torch.manual_seed(0)
    model = build_model(p.model, width=p.width, norm=p.norm).to(p.device)
    x = pooled_inputs(data.train_x[: p.large_batch], 32).float().to(p.device)
    return model, x, data.train_y[: p.large_batch].to(p.device)


@dataclass(frozen=True)
class HessianCostParts:
    """Median seconds of the parts of a hessian step, each timed on its own in one
    interleaved loop on the same model and batch: the four that any k-step Lanczos draw
    pays (step, z, graph, product) and the bookkeeping of a bare recurrence:

    - step: a plain large-batch step (forward and backward on the B examples);
    - z: the Gaussian start z ~ N(0, I_P);
    - graph: forward and backward with ``create_graph`` on the M examples;
    - product: one further Hessian-vector product on that graph;
    - recurrence: the bookkeeping of k steps of a bare three-term Lanczos recurrence (no
      reorthogonalisation, no checks, buffers allocated once; the free operator's own
      time taken out): the P-vector work that a lean implementation still does;
    - lanczos_steps: k; examples: M.
    """

    step: float
    z: float
    graph: float
    product: float
    recurrence: float
    lanczos_steps: int
    examples: int

    @property
    def floor(self) -> float:
        """``1 + (t_z + t_graph + k t_HVP) / t_step``: the ratio if the Lanczos bookkeeping
        and the update were free."""
        k = self.lanczos_steps
        return 1 + (self.z + self.graph + k * self.product) / self.step

    @property
    def bound(self) -> float:
        """:attr:`floor` plus the bare recurrence: ``+ t_recurrence / t_step``."""
        return self.floor + self.recurrence / self.step


def _bare_recurrence(diag: torch.Tensor, z: torch.Tensor, rows: torch.Tensor,
                     k: int) -> torch.Tensor:
    """``‖z‖ V √T₊ e₁: (P,)`` after k steps of the three-term Lanczos recurrence for the
    operator ``v ↦ diag ⊙ v`` (``diag, z: (P,)``; ``rows: (k+1, P)`` a buffer), with no
    reorthogonalisation: per step one product, one inner product, one two-vector update,
    one norm and one scaling. A timing probe for :func:`hessian_cost_parts`."""
    norm = float(z.norm())
    torch.div(z, norm, out=rows[0])
    alpha, beta = [], []
    for j in range(k):
        w = diag * rows[j]
        alpha.append(float(rows[j] @ w))
        lo = max(j - 1, 0)
        coef = torch.tensor(([beta[-1]] if j else []) + [alpha[-1]], dtype=z.dtype)
        torch.addmv(w, rows[lo : j + 1].T, coef, alpha=-1, out=rows[j + 1])
        if j < k - 1:
            beta.append(float(rows[j + 1].norm()))
            rows[j + 1].mul_(1 / max(beta[-1], 1e-30))
    T = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(beta, dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, U = torch.linalg.eigh(T)
    coef = (U @ (sqrt_psd(evals) * U[0] * norm)).to(z.dtype)
    return rows[:k].T @ coef


def median_times(arms: Mapping[str, Callable[[], object]], repeats: int, warmup: int,
                  sync: Callable[[], None], shuffle: np.random.Generator | None = None
                  ) -> dict[str, float]:
    """Median seconds of each arm over ``repeats`` interleaved rounds after ``warmup``
    (each timed between two ``sync()`` calls), in the order given or, with ``shuffle``, in a
    new random order each round (so that load on the machine moves all arms together)."""
    repeats = check_positive_int("repeats", repeats)
    warmup = check_positive_int("warmup", warmup, allow_zero=True)
    names = list(arms)
    times: dict[str, list[float]] = {a: [] for a in names}
    for r in range(warmup + repeats):
        order = names if shuffle is None else [names[i] for i in shuffle.permutation(len(names))]
        for name in order:
            sync()
            begin = time.perf_counter()
            arms[name]()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - begin)
    return {a: float(np.median(t)) for a, t in times.items()}


def hessian_cost_parts(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    curvature_samples: int = 32,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    repeats: int = 9,
    warmup: int = 2,
) -> HessianCostParts:
    """The parts of a hessian step (:class:`HessianCostParts`) on ``model`` with the batch
    ``inputs: (B, ...)``, ``targets: (B,)`` and its first ``curvature_samples`` = M
    examples, k = ``lanczos_steps``, each the median of ``repeats`` interleaved rounds
    after ``warmup``: what no implementation of k Lanczos steps avoids (the plain step, z,
    the graph, the products), and the bookkeeping of a bare recurrence on top."""
    repeats = check_positive_int("repeats", repeats)
    k = check_positive_int("lanczos_steps", lanczos_steps)
    m = check_positive_int("curvature_samples", curvature_samples)
    gen = torch.Generator().manual_seed(0)
    params = trainable_parameters(model)
    P = sum(p.numel() for p in params)
    like = params[0].detach()
    xs, ys = inputs[:m], targets[:m]
    v = torch.randn(P, 1, generator=gen).to(like)
    op = HessianOperator(model, F.cross_entropy, xs, ys, keep_graph=True)
    op.matmat(v, block_size=None)
    diag = torch.rand(P, generator=gen).add_(0.5).to(like)
    rows = like.new_empty((k + 1, P))

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()

    arms = {
        "step": plain,
        "z": lambda: torch.randn((P, 1), generator=gen).to(like),
        "graph_and_product": lambda: HessianOperator(
            model, F.cross_entropy, xs, ys, keep_graph=True).matmat(v, block_size=None),
        "product": lambda: op.matmat(v, block_size=None),
        "recurrence_and_operator": lambda: _bare_recurrence(diag, v[:, 0], rows, k),
        "operator": lambda: diag * v[:, 0],
    }
    sync = torch.cuda.synchronize if like.is_cuda else (lambda: None)
    med = median_times(arms, repeats, warmup, sync)
    model.zero_grad(set_to_none=True)
    return HessianCostParts(
        step=med["step"], z=med["z"], product=med["product"],
        graph=max(med["graph_and_product"] - med["product"], 0.0),
        recurrence=max(med["recurrence_and_operator"] - k * med["operator"], 0.0),
        lanczos_steps=k, examples=int(xs.shape[0]))


def measured_hessian_parts(p: Params, data, experiment: NoiseExperiment
                           ) -> HessianCostParts | None:
    """:func:`hessian_cost_parts` on the network and batch of :func:`step_costs` with the
    profile's settings; None when the costs come from the records (nothing is timed in
    the notebook then) or the profile has no hessian kind."""
    if experiment.costs is not None or "hessian" not in p.kinds:
        return None
    model, x, y = _cost_batch(p, data)
    return hessian_cost_parts(model, x, y, curvature_samples=p.curvature_samples,
                              lanczos_steps=p.lanczos_steps,
                              repeats=max(p.cost_repeats, 3))
