"""Chapter 5, *Over-parameterization and wide valleys*: parameters, studies and verdicts.

Notation: N examples, P parameters (P ≫ N), C classes. ``G: (N, P)`` holds the per-example
gradients g_i as rows, ḡ their mean, F̂ = GᵀG/N: (P, P) the empirical Fisher and
D = F̂ − ḡḡᵀ the gradient covariance. H is the Hessian of the mean loss and GGN the
generalised Gauss-Newton matrix (equal to the true Fisher for softmax cross-entropy).

- :class:`Params`: the chapter's parameters (the notebook's parameters cell and
  ``book/params/ch05_overparam/*.yaml``), with their checks.
- :func:`train_to_interpolation` and :func:`overparam_study`: the chapter's pipeline on a
  trained network, through the operators of :mod:`sgdnoise.curvature` (Hessian, GGN,
  empirical Fisher and covariance), in stages: :func:`top_eigenpairs`,
  :func:`outlier_table`, :func:`near_zero_table`, :func:`noise_energy_table`,
  :func:`class_capture_table`.
- Wide valleys: :func:`valley_walk` measures the training loss along straight lines from
  the trained parameters, in flat directions (:func:`flat_directions`: orthogonal to every
  per-example gradient and to the top Hessian eigenvectors) and random ones
  (:class:`ValleyWalk`).
- Seeds: :func:`seed_studies` repeats what the claims about SGD need for more training
  seeds (:class:`SeedRecord`); :func:`seed_codes` decides "every item above a threshold"
  across seeds and :func:`seed_rates` measures that rule's error rates with
  :mod:`sgdnoise.decide.harness`.
- ``verdict_*``: the chapter's conclusions, computed from the numbers with explicit
  thresholds (:class:`sgdnoise.report.Verdict`): derivation checks
  (:func:`verdict_rank`, :func:`verdict_flat_bulk`) and claims about SGD
  (:func:`verdict_capture`, :func:`verdict_concentration`, :func:`verdict_valley`).

The library functions the chapter reads its spectra with (used, not defined, here):
:func:`sgdnoise.covariance.gram_spectrum` (the non-zero spectrum of F̂ or D from the N × N
Gram matrix; hence rank F̂ ≤ N, rank D ≤ N − 1), :func:`sgdnoise.spectral.numerical_rank`,
:func:`sgdnoise.spectral.count_outliers`, :func:`sgdnoise.spectral.near_zero_fraction`,
:func:`sgdnoise.spectral.slq_near_zero_fraction`, :func:`sgdnoise.spectral.slq_zero_cluster`,
:func:`sgdnoise.covariance.class_mean_gradients` and :func:`sgdnoise.spectral.subspace_capture`
(the class structure behind the outliers), :func:`sgdnoise.covariance.noise_energy_fraction`
(Σ_{j≤k} u_jᵀ D u_j / tr D) with its baselines
:func:`sgdnoise.spectral.random_subspace_fraction` (k/P) and
:func:`sgdnoise.covariance.random_span_fraction` (k/rank G).

:func:`train_to_interpolation` trains with the training engine
(:func:`sgdnoise.chapters.small_problems.plain_sgd`, plain SGD through
:func:`sgdnoise.train.train`), an ``on_step`` hook measuring the training error at every
epoch end and stopping at the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sgdnoise.covariance import (
    class_mean_gradients,
    gram_spectrum,
    noise_energy_fraction,
    random_span_fraction,
)
from sgdnoise.curvature import CovarianceOperator
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import KINDS, Verdict
from sgdnoise.spectral import (
    count_outliers,
    near_zero_fraction,
    numerical_rank,
    slq_near_zero_fraction,
    slq_zero_cluster,
    subspace_capture,
)
from sgdnoise.validate import check_positive, check_positive_int

__all__ = [
    "EnergyRow",
    "FlatRow",
    "OverparamResult",
    "Params",
    "RankRow",
    "SeedRates",
    "SeedRecord",
    "ValleyWalk",
    "CAPTURE_MATRICES",
    "VALLEY_KINDS",
    "claim_values",
    "class_capture_table",
    "flat_directions",
    "loss_along",
    "near_zero_table",
    "noise_energy_table",
    "outlier_table",
    "overparam_study",
    "random_directions",
    "seed_codes",
    "seed_rates",
    "seed_record",
    "seed_studies",
    "top_eigenpairs",
    "train_to_interpolation",
    "valley_distances",
    "valley_values",
    "valley_walk",
    "verdict_capture",
    "verdict_concentration",
    "verdict_flat_bulk",
    "verdict_rank",
    "verdict_valley",
]

DT = torch.float64


# --------------------------------------------------------------------------- training


def train_to_interpolation(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    lr: float,
    batch_size: int,
    max_epochs: int,
    target_error: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Plain SGD on mean cross-entropy (:func:`sgdnoise.chapters.small_problems.plain_sgd`:
    the training engine, a fresh permutation per epoch, the last batch of an epoch possibly
    smaller) until the train error on all of ``x`` is ≤ ``target_error`` (checked after every
    epoch by an ``on_step`` hook, which stops the run) or a training loss is not finite, at
    most ``max_epochs`` epochs. Modifies ``model`` in place; returns one row per epoch
    (epoch, step, train_loss, train_error), epoch 0 = initialisation."""
    from sgdnoise.chapters.small_problems import loss_and_error, plain_sgd
    from sgdnoise.train import StepState, steps_per_epoch

    max_epochs = check_positive_int("max_epochs", max_epochs)
    target_error = check_positive("target_error", target_error, allow_zero=True)
    spe = steps_per_epoch(x.shape[0], check_positive_int("batch_size", batch_size))
    rows: list[dict[str, float]] = []

    def record(step: int) -> bool:
        """Append the row of the epoch ending at ``step``; True: stop (target or non-finite)."""
        loss, err = loss_and_error(model, x, y)
        rows.append({"epoch": step // spe, "step": step, "train_loss": loss,
                     "train_error": err})
        return not math.isfinite(loss) or err <= target_error

    class _EpochEnds:
        def on_step(self, state: StepState) -> bool:
            return state.step % spe == 0 and record(state.step)

    record(0)
    plain_sgd(model, x, y, lr=lr, batch_size=batch_size, hooks=[_EpochEnds()], seed=seed,
              drop_last=False, epochs=max_epochs, divergence_check_every=spe)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- pipeline


@dataclass
class OverparamResult:
    """What :func:`overparam_study` measured on one trained model.

    n, p, num_classes; gram_fisher (N,) and gram_cov (N,): Gram spectra of F̂ and D;
    rank_fisher, rank_cov (numerical ranks); hessian_top, ggn_top (k,): top Lanczos
    eigenvalues; hessian_vecs (P, k); fisher_top (k,): top of F̂ (exact, from the Gram
    matrix); densities: {"Hessian", "GGN (= Fisher)", "empirical Fisher"} -> SpectralDensity;
    outliers: DataFrame (matrix, outliers, ratio at the gap); near_zero: DataFrame (matrix,
    rtol, fraction, exact lower bound from the rank); energy: DataFrame(k, top-k Hessian,
    top-k of D (best possible), random subspace); class_capture: DataFrame(matrix,
    capture of its top-m eigenspace by the class-mean span, random baseline);
    zero_cluster: DataFrame (matrix, weight and ``|position|``/λ_max of the SLQ node nearest 0,
    see :func:`slq_zero_cluster`); span_random: the Monte Carlo check of the k/rank G
    baseline at k = min(C, top_k) (:func:`random_span_fraction`; None unless asked for);
    grad_norm_sq (‖ḡ‖²) and trace_cov (tr D); negative_ratio: the most negative Ritz value
    of the Hessian's SLQ rule over λ_max (NaN without a density), a lower bound on
    |λ_min|/λ_max; gradients: ``G: (N, P)`` (kept for the valley walk of a trained
    model; the caller may drop it)."""

    n: int
    p: int
    num_classes: int
    gram_fisher: Tensor
    gram_cov: Tensor
    rank_fisher: int
    rank_cov: int
    hessian_top: Tensor
    ggn_top: Tensor
    fisher_top: Tensor
    hessian_vecs: Tensor = field(repr=False)
    densities: dict[str, Any] = field(repr=False, default_factory=dict)
    outliers: pd.DataFrame | None = None
    near_zero: pd.DataFrame | None = None
    energy: pd.DataFrame | None = None
    class_capture: pd.DataFrame | None = None
    zero_cluster: pd.DataFrame | None = None
    span_random: dict[str, float] | None = None
    grad_norm_sq: float = float("nan")
    trace_cov: float = float("nan")
    negative_ratio: float = float("nan")
    gradients: Tensor | None = field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        """One flat row for a table."""
        out = {"N": self.n, "P": self.p, "P/N": self.p / self.n, "rank F̂": self.rank_fisher,
               "rank D": self.rank_cov, "‖ḡ‖²": self.grad_norm_sq, "tr D": self.trace_cov}
        if self.outliers is not None:
            for _, r in self.outliers.iterrows():
                out[f"outliers {r['matrix']}"] = int(r["outliers"])
        return out


def _gap_ratio(evals: Tensor, k: int) -> float:
    if k <= 0 or k >= evals.numel():
        return float("nan")
    b = float(evals[k])
    return math.inf if b <= 0 else float(evals[k - 1]) / b


LOSS = nn.functional.cross_entropy
MATRIX_NAMES = ("Hessian", "GGN (= Fisher)", "empirical Fisher", "covariance D")


def top_eigenpairs(op: Any, k: int, *, iters: int, seed: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenvalues ``(k,)`` and eigenvectors ``(P, k)`` of a curvature operator
    (:meth:`sgdnoise.curvature.CurvatureOperator.eigh`: Lanczos with ``max(iters, k)``
    products), in float64."""
    res = op.eigh(k, num_iters=max(iters, k), seed=seed)
    return res.eigenvalues.to(DT), res.eigenvectors.to(DT)


def outlier_table(spectra: list[tuple[str, Tensor]], max_outliers: int) -> pd.DataFrame:
    """Largest-gap outlier count (:func:`count_outliers`) and the ratio at that gap of each
    ``(name, top eigenvalues (k,))``."""
    rows = []
    for name, ev in spectra:
        k = count_outliers(ev, max_outliers=min(max_outliers, ev.numel() - 1))
        rows.append({"matrix": name, "outliers": k, "gap ratio": _gap_ratio(ev, k)})
    return pd.DataFrame(rows)


def near_zero_table(dens: dict[str, Any], gram_f: Tensor, *, p: int, n: int,
                    num_classes: int, h_max: float, rtols: tuple[float, ...]
                    ) -> pd.DataFrame:
    """Fraction of spectral mass with ``|λ| <= rtol · λ_max`` per density (SLQ; the
    Hessian's scale is its top Lanczos eigenvalue ``h_max``) and exactly for F̂ from its
    Gram spectrum, with the exact lower bounds ``1 − rank/P`` (F̂: rank ≤ N; GGN:
    rank ≤ N(C − 1), each ``diag p_i − p_i p_iᵀ`` killing the all-ones vector)."""
    bounds = {"Hessian": float("nan"),
              "GGN (= Fisher)": 1 - min(p, n * (num_classes - 1)) / p,
              "empirical Fisher": 1 - min(p, n) / p}
    rows = []
    for name, d in dens.items():
        scale = h_max if name == "Hessian" else None
        rows += [{"matrix": name, "rtol": rt,
                  "fraction (SLQ)": slq_near_zero_fraction(d, rtol=rt, scale=scale),
                  "exact lower bound (rank)": bounds[name]} for rt in rtols]
    rows += [{"matrix": "empirical Fisher (exact)", "rtol": rt,
              "fraction (SLQ)": near_zero_fraction(gram_f, rtol=rt, dim=p),
              "exact lower bound (rank)": bounds["empirical Fisher"]} for rt in rtols]
    return pd.DataFrame(rows)


def noise_energy_table(cov: Any, h_vecs: Tensor, gram_d: Tensor, *, rank_g: int, p: int
                       ) -> pd.DataFrame:
    """Noise share ``φ_k = Σ_{j≤k} u_jᵀ D u_j / tr D`` along the top-k Hessian eigenvectors
    ``h_vecs: (P, K)``, against D's own top-k (the optimum), a random k-subspace of R^P
    (``k/P``) and of span{g_i} (``k/rank G``), k = 1..K."""
    k = np.arange(1, h_vecs.shape[1] + 1)
    return pd.DataFrame({
        "k": k,
        "top-k Hessian eigenvectors": noise_energy_fraction(cov, h_vecs).cpu().numpy(),
        "top-k eigenvectors of D (optimum)":
            (torch.cumsum(gram_d[: k.size], 0) / cov.trace()).cpu().numpy(),
        "random k-subspace (k/P)": k / p,
        "random k-subspace of span G (k/rank G)": k / rank_g,
    })


def class_capture_table(G: Tensor, y: Tensor, bases: list[tuple[str, Tensor]], *,
                        num_classes: int) -> pd.DataFrame:
    """Share of each ``(name, U: (P, m))`` top eigenspace lying in the span of the C
    class-mean gradients (:func:`class_mean_gradients`, :func:`subspace_capture`), with the
    random baseline ``C/P``."""
    M = class_mean_gradients(G, y, num_classes)
    p = G.shape[1]
    return pd.DataFrame([{"matrix": name, "k": U.shape[1],
                          "captured by class-mean span": subspace_capture(U.to(DT), M),
                          "random k-subspace": min(num_classes, p) / p}
                         for name, U in bases])


def _densities(ops: dict[str, Any], p: int, *, probes: int, iters: int, seed: int,
               say: Callable[[str], None]) -> dict[str, Any]:
    """SLQ densities (:func:`sgdnoise.spectral.spectral_density`) of named operators."""
    from sgdnoise.spectral import spectral_density

    out = {}
    for name, op in ops.items():
        say(f"SLQ: {name}")
        out[name] = spectral_density(op.matvec, p, num_probes=probes, num_iters=iters,
                                     seed=seed + 7, dtype=op.dtype)
    return out


@dataclass
class _Curvature:
    """The Hessian and GGN operators of a model (``ops``) and their top eigenpairs; the
    GGN's are None when it was not computed, everything empty without curvature."""

    ops: dict[str, Any]
    h_top: Tensor
    h_vecs: Tensor
    g_top: Tensor
    g_vecs: Tensor | None

    def spectra(self) -> list[tuple[str, Tensor]]:
        out = [("Hessian", self.h_top)] if self.h_top.numel() else []
        return out + ([("GGN (= Fisher)", self.g_top)] if self.g_vecs is not None else [])

    def bases(self, m: int) -> list[tuple[str, Tensor]]:
        out = [("Hessian", self.h_vecs[:, :m])] if self.h_top.numel() else []
        return out + ([("GGN (= Fisher)", self.g_vecs[:, :m])] if self.g_vecs is not None
                      else [])


def _curvature(model: nn.Module, x: Tensor, y: Tensor, *, top_k: int, iters: int,
               seed: int, ggn: bool, chunk_size: int | None,
               say: Callable[[str], None]) -> _Curvature:
    """Hessian (and GGN) operators and their top-``top_k`` eigenpairs (:func:`top_eigenpairs`)."""
    from sgdnoise.curvature import GGNOperator, HessianOperator

    say("Lanczos: Hessian")
    ops = {"Hessian": HessianOperator(model, LOSS, x, y, chunk_size=chunk_size)}
    h_top, h_vecs = top_eigenpairs(ops["Hessian"], top_k, iters=iters, seed=seed)
    g_top, g_vecs = torch.zeros(0, dtype=DT), None
    if ggn:
        say("Lanczos: GGN")
        ops["GGN (= Fisher)"] = GGNOperator(model, LOSS, x, y, chunk_size=chunk_size)
        g_top, g_vecs = top_eigenpairs(ops["GGN (= Fisher)"], top_k, iters=iters,
                                       seed=seed + 1)
    return _Curvature(ops, h_top, h_vecs, g_top, g_vecs)


def overparam_study(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int = 10,
    top_k: int = 20,
    lanczos_iters: int = 80,
    slq_probes: int = 3,
    slq_iters: int = 60,
    zero_rtols: tuple[float, ...] = (1e-4, 1e-3, 1e-2),
    max_outliers: int = 15,
    chunk_size: int | None = None,
    seed: int = 0,
    curvature: bool = True,
    ggn: bool = True,
    slq: bool = True,
    span_draws: int = 0,
    progress: Callable[[str], None] | None = None,
) -> OverparamResult:
    """Spectra, ranks, outliers and noise placement of a (trained) classifier, through the
    operators of :mod:`sgdnoise.curvature`.

    1. ``G: (N, P)`` per-example gradients; Gram spectra of F̂ and D and their numerical
       ranks (≤ N and ≤ N − 1); D as a :class:`CovarianceOperator`, F̂ as an
       :class:`EmpiricalFisherOperator`.
    2. Top-``top_k`` eigenpairs of H (:class:`HessianOperator`) and of the GGN
       (:class:`GGNOperator`, unless ``ggn`` is False) by their ``eigh`` (Lanczos,
       ``lanczos_iters`` products).
    3. SLQ densities of H, GGN and F̂ (``slq_probes`` × ``slq_iters`` products each;
       skipped when ``slq`` is False).
    4. :func:`outlier_table`, :func:`near_zero_table` and the SLQ zero cluster.
    5. :func:`noise_energy_table` for the top Hessian eigenvectors (with ``span_draws`` > 0 also
       sampled random k-subspaces of span{g_i}, :func:`random_span_fraction`).
    6. :func:`class_capture_table` of the top-C eigenspaces of H, GGN, F̂ and D.

    With ``curvature=False`` only the gradient-based parts run (no Hessian or GGN
    products): hessian_top / ggn_top are empty, densities hold F̂ only, energy is None.
    ``progress`` is called with a short label before each stage."""
    from sgdnoise.curvature import EmpiricalFisherOperator
    from sgdnoise.grads import per_example_grads

    top_k = check_positive_int("top_k", top_k)
    say = progress or (lambda s: None)
    say("per-example gradients")
    G = per_example_grads(model, LOSS, x, y, chunk_size=chunk_size).to(DT)
    n, p = G.shape
    if top_k > min(n, p):
        raise ValueError(f"top_k must be <= min(N, P) = {min(n, p)}, got {top_k}")
    gram_f, gram_d = gram_spectrum(G), gram_spectrum(G, centered=True)
    cov = CovarianceOperator(G)
    fisher = EmpiricalFisherOperator(model, LOSS, x, y, chunk_size=chunk_size,
                                     materialize=True)
    curv = (_curvature(model, x, y, top_k=top_k, iters=lanczos_iters, seed=seed, ggn=ggn,
                       chunk_size=chunk_size, say=say) if curvature else
            _Curvature({}, torch.zeros(0, dtype=DT), torch.zeros(p, 0, dtype=DT),
                       torch.zeros(0, dtype=DT), None))
    dens = (_densities({**curv.ops, "empirical Fisher": fisher}, p, probes=slq_probes,
                       iters=slq_iters, seed=seed, say=say) if slq else {})
    rank_f = numerical_rank(gram_f, dim=p)
    h_max = float(curv.h_top[0]) if curv.h_top.numel() else None
    m = min(num_classes, top_k)
    say("noise energy and class structure")
    bases = curv.bases(m) + [
        ("empirical Fisher", top_eigenpairs(fisher, m, iters=lanczos_iters, seed=seed)[1]),
        ("covariance D", cov.eigh(m)[1])]
    return OverparamResult(
        n=n, p=p, num_classes=num_classes, gram_fisher=gram_f, gram_cov=gram_d,
        rank_fisher=rank_f, rank_cov=numerical_rank(gram_d, dim=p), hessian_top=curv.h_top,
        ggn_top=curv.g_top, fisher_top=gram_f[:top_k], hessian_vecs=curv.h_vecs,
        densities=dens,
        outliers=outlier_table(curv.spectra() + [("empirical Fisher", gram_f[:top_k]),
                                                 ("covariance D", gram_d[:top_k])],
                               max_outliers),
        near_zero=near_zero_table(dens, gram_f, p=p, n=n, num_classes=num_classes,
                                  h_max=h_max, rtols=zero_rtols) if slq else None,
        energy=(noise_energy_table(cov, curv.h_vecs, gram_d, rank_g=rank_f, p=p) if curvature
                else None),
        class_capture=class_capture_table(G, y, bases, num_classes=num_classes),
        zero_cluster=pd.DataFrame([{"matrix": name, **slq_zero_cluster(
            d, scale=h_max if name == "Hessian" else None)} for name, d in dens.items()]),
        span_random=(random_span_fraction(G, cov, m, draws=span_draws, seed=seed + 11)
                     if curvature and span_draws else None),
        grad_norm_sq=float(cov.mean @ cov.mean), trace_cov=cov.trace(),
        negative_ratio=_negative_ratio(dens.get("Hessian"), h_max), gradients=G)


def _negative_ratio(density: Any, h_max: float | None) -> float:
    """The most negative Ritz value of an SLQ rule over ``h_max`` (NaN without either)."""
    if density is None or not h_max:
        return float("nan")
    return float(density.nodes.min()) / h_max


# --------------------------------------------------------------------------- wide valleys


VALLEY_KINDS = ("flat", "random", "sharp")


@dataclass
class ValleyWalk:
    """Training loss along straight lines from a trained ``θ*``: ``loss[kind]: (m, D)`` at
    ``θ* + t ‖θ*‖ v`` for ``m`` unit directions ``v`` of each kind of
    :data:`VALLEY_KINDS` and the relative distances ``distances: (D,)`` (increasing), with
    ``base_loss = L(θ*)``."""

    distances: np.ndarray
    theta_norm: float
    base_loss: float
    loss: dict[str, np.ndarray]

    def widths(self, kind: str, rise: float) -> np.ndarray:
        """Per direction, the relative distance at which the loss first rises by ``rise``
        (nats) above ``L(θ*)``, interpolated linearly in ``log t`` between the two grid
        points around the crossing; the largest distance when it never does (censored).
        ``(m,)``."""
        t = np.log(self.distances)
        out = []
        for row in self.loss[kind] - self.base_loss:
            hit = np.nonzero(row >= rise)[0]
            if hit.size == 0:
                out.append(self.distances[-1])
                continue
            j = int(hit[0])
            if j == 0:
                out.append(self.distances[0])
                continue
            f = (rise - row[j - 1]) / (row[j] - row[j - 1])
            out.append(float(np.exp(t[j - 1] + f * (t[j] - t[j - 1]))))
        return np.asarray(out)

    def log_ratio(self, rise: float) -> float:
        """Mean over directions of ``ln w_flat − ln w_random`` (paired by index): how much
        farther the loss stays within ``rise`` along flat directions than along random
        ones (0: as far; ``ln 2``: twice as far)."""
        return float(np.mean(np.log(self.widths("flat", rise))
                             - np.log(self.widths("random", rise))))


def flat_directions(G: Tensor, h_vecs: Tensor, num: int, *, seed: int) -> Tensor:
    """``(P, num)`` unit directions in the null space of F̂ (orthogonal to every per-example
    gradient, the rows of ``G: (N, P)``) and orthogonal to the top Hessian eigenvectors
    ``h_vecs: (P, k)``: Gaussian draws with their projection on ``span(Gᵀ, h_vecs)`` removed
    (twice, for rounding), then normalised. Along them no example's loss changes to first
    order and the top curvature is avoided."""
    from sgdnoise.spectral import orthonormal_basis

    Q = orthonormal_basis(torch.cat([G.T.to(DT), h_vecs.to(DT)], dim=1))
    gen = torch.Generator().manual_seed(seed)
    V = torch.randn(G.shape[1], check_positive_int("num", num), generator=gen, dtype=DT)
    for _ in range(2):
        V = V - Q @ (Q.T @ V)
    return V / V.norm(dim=0, keepdim=True)


def random_directions(p: int, num: int, *, seed: int) -> Tensor:
    """``(P, num)`` uniformly random unit directions (normalised Gaussian draws)."""
    gen = torch.Generator().manual_seed(seed)
    V = torch.randn(check_positive_int("p", p), check_positive_int("num", num),
                    generator=gen, dtype=DT)
    return V / V.norm(dim=0, keepdim=True)


def loss_along(model: nn.Module, x: Tensor, y: Tensor, directions: Tensor,
               distances: np.ndarray) -> np.ndarray:
    """Mean cross-entropy on ``(x, y)`` at ``θ* + t ‖θ*‖ v`` for each column ``v`` of
    ``directions: (P, m)`` and each ``t`` of ``distances: (D,)``; ``(m, D)``. ``model``
    holds ``θ*`` and is left unchanged."""
    from torch.func import functional_call

    from sgdnoise.grads import flat_params, unflatten

    theta = flat_params(model)
    scale = float(theta.norm())
    out = np.empty((directions.shape[1], len(distances)))
    with torch.no_grad():
        for i in range(directions.shape[1]):
            for j, t in enumerate(distances):
                vec = theta + float(t) * scale * directions[:, i].to(theta.dtype)
                logits = functional_call(model, unflatten(model, vec), (x,))
                out[i, j] = float(LOSS(logits, y))
    return out


def valley_walk(model: nn.Module, x: Tensor, y: Tensor, G: Tensor, h_vecs: Tensor, *,
                num_directions: int, distances: np.ndarray, seed: int) -> ValleyWalk:
    """:func:`loss_along` for ``num_directions`` directions of each kind: flat
    (:func:`flat_directions`), random (:func:`random_directions`) and sharp (the top
    Hessian eigenvectors, as a reference; at most ``num_directions``)."""
    from sgdnoise.grads import flat_params

    d = np.asarray(distances, dtype=float)
    if d.ndim != 1 or d.size < 2 or (d <= 0).any() or (np.diff(d) <= 0).any():
        raise ValueError(f"distances must be increasing positive numbers, got {d.tolist()}")
    dirs = {"flat": flat_directions(G, h_vecs, num_directions, seed=seed),
            "random": random_directions(G.shape[1], num_directions, seed=seed + 1),
            "sharp": h_vecs[:, :num_directions].to(DT)}
    base = float(LOSS(model(x), y).detach())
    return ValleyWalk(d, float(flat_params(model).norm()), base,
                      {k: loss_along(model, x, y, v, d) for k, v in dirs.items()})


# --------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 5's parameters; values live in the notebook's parameters cell and in
    ``book/params/ch05_overparam/{smoke,default,full}.yaml``."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="image data set")
    seed: int = param(low=0, doc="seed of the subset, the initialisation and the probes")
    image_size: int = param(choices=(4, 8, 16, 32), doc="images average-pooled to this side")
    num_classes: int = param(choices=(10,), doc="C, the number of classes")
    mlp_n: int = param(low=20, doc="N, training examples of the MLP")
    mlp_width: int = param(low=1, doc="hidden units of the MLP")
    mlp_lr: float = param(low=1e-6, doc="SGD learning rate of the MLP")
    cnn_n: int = param(low=20, doc="N, training examples of the CNN")
    cnn_width: int = param(low=1, doc="channels of the CNN's first block")
    cnn_lr: float = param(low=1e-6, doc="SGD learning rate of the CNN")
    batch_size: int = param(low=1, doc="SGD batch size while training to interpolation")
    max_epochs: int = param(low=1, doc="epoch budget of the training")
    target_error: float = param(low=0.0, high=1.0, doc="train error at which training stops")
    top_k: int = param(low=11, doc="top eigenpairs computed by Lanczos (> C)")
    lanczos_iters: int = param(low=11, doc="Lanczos iterations for the top eigenpairs")
    slq_probes: int = param(low=1, doc="SLQ probe vectors per density")
    slq_iters: int = param(low=5, doc="Lanczos steps per SLQ probe")
    cnn_init_curvature: bool = param(doc="also compute Hessian/GGN of the CNN at init")
    span_draws: int = param(low=2, doc="random k-subspaces of span{g_i} sampled as a check")
    flat_rtol: float = param(low=1e-8, high=0.5,
                             doc="an eigenvalue is 'near zero' if |λ| ≤ flat_rtol·λ_max")
    flat_fraction: float = param(low=0.0, high=1.0,
                                 doc="'most directions are flat': at least this fraction")
    capture_min: float = param(low=0.0, high=1.0,
                               doc="class-mean capture of the top-C eigenspace counted as "
                                   "'organised by the classes'")
    concentration_min: float = param(low=1.0, doc="noise share along the top-k Hessian "
                                     "directions, as a multiple of a random k-subspace of "
                                     "span{g_i}, counted as 'concentrated'")
    extra_seeds: tuple[int, ...] = param(low=0, min_len=1, doc="training seeds besides "
                                         "seed behind the claims about SGD")
    valley_directions: int = param(low=1, doc="directions of each kind per valley walk")
    valley_min: float = param(low=1e-6, doc="smallest distance of a valley walk, as a "
                              "fraction of ‖θ*‖")
    valley_max: float = param(low=1e-6, doc="largest distance of a valley walk, as a "
                              "fraction of ‖θ*‖")
    valley_points: int = param(low=3, doc="distances per valley walk (log-spaced)")
    valley_rise: float = param(low=1e-6, doc="loss rise (nats) that ends a valley")
    valley_ratio_min: float = param(low=1.0, doc="a flat direction's valley counts as wider "
                                    "when at least this multiple of a random direction's")
    alpha: float = param(low=1e-4, high=0.25, doc="level of every test behind a verdict")
    rate_sims: int = param(low=100, doc="simulated data sets per truth for error rates")
    capture_effect: float = param(low=1e-3, high=1.0, doc="capture above capture_min at "
                                  "which the power of its rule is measured")
    ratio_effect: float = param(low=1e-3, doc="log-ratio above the threshold at which the "
                                "power of the concentration and valley rules is measured")

    def check(self) -> None:
        n_min = min(self.mlp_n, self.cnn_n)
        self.require(self.batch_size <= n_min, "batch_size",
                     f"must be <= mlp_n and cnn_n (= {n_min})")
        self.require(self.top_k <= n_min, "top_k", f"must be <= mlp_n and cnn_n (= {n_min})")
        self.require(self.top_k > self.num_classes, "top_k",
                     f"must exceed num_classes = {self.num_classes} (outliers are read from "
                     "the top_k eigenvalues)")
        self.require(self.flat_rtol in (1e-4, 1e-3, 1e-2), "flat_rtol",
                     "must be one of the windows the study evaluates: 1e-4, 1e-3, 1e-2")
        self.require(self.seed not in self.extra_seeds and len(set(self.extra_seeds)) ==
                     len(self.extra_seeds), "extra_seeds", f"must not repeat a seed or seed "
                     f"= {self.seed}")
        self.require(self.valley_min < self.valley_max, "valley_min",
                     f"must be < valley_max = {self.valley_max}")


# --------------------------------------------------------------------------- verdicts

SECTION_RANK = "sec-ch5-rank"
SECTION_FLAT = "sec-ch5-density"
SECTION_OUTLIERS = "sec-ch5-outliers"
SECTION_ENERGY = "sec-ch5-energy"
SECTION_VALLEY = "sec-ch5-valley"
DERIVATION = KINDS[1]


@dataclass(frozen=True)
class RankRow:
    """One model/state: N, P and the numerical ranks of F̂ and D."""

    label: str
    n: int
    p: int
    rank_fisher: int
    rank_cov: int


def verdict_rank(rows: list[RankRow], *, scale: str) -> Verdict:
    """Proposition 1 on the measured Gram spectra: supported when every rank F̂ ≤ N and
    rank D ≤ N − 1 (the numerical rank uses the eigensolver's rounding threshold, see
    :func:`numerical_rank`), contradicted otherwise (which could only be rounding). A
    derivation check: the bound holds by construction when P ≫ N."""
    if not rows:
        raise ValueError("rows must hold at least one model, got none")
    ok = all(r.rank_fisher <= r.n and r.rank_cov <= r.n - 1 for r in rows)
    ranks = ", ".join(f"{r.label}: {r.rank_fisher}" for r in rows)
    ps = sorted({(r.p, r.n) for r in rows})
    flat = ", ".join(f"{100 * (1 - n / p):.1f}% (P = {p})" for p, n in ps)
    sentence = (
        (r"Every $\hat F$ has numerical rank $\le N$ and every $D$ rank $\le N - 1$ "
         if ok else r"Some $\hat F$ has numerical rank above $N$ or some $D$ above $N - 1$ ")
        + f"(ranks of $\\hat F$: {ranks}). "
        + (f"So at least {flat} of the eigenvalues of $\\hat F$ are exactly zero." if ok else
           "A rank above its bound can only come from rounding in the eigensolver.")
    )
    return Verdict(
        claim=r"With $P \gg N$ the empirical Fisher has rank $\le N$ ($D$: $\le N - 1$), so "
              "almost all of its P eigenvalues are exactly zero.",
        outcome="supported" if ok else "contradicted", sentence=sentence, scale=scale,
        section=SECTION_RANK, kind=DERIVATION)


@dataclass(frozen=True)
class FlatRow:
    """One trained model's flatness numbers (fractions of spectral mass from SLQ).

    hessian_weight, hessian_position: the SLQ node nearest 0 (:func:`slq_zero_cluster`);
    hessian_1e3 / hessian_flat: Hessian mass within 10⁻³·λ_max / flat_rtol·λ_max;
    ggn_1e3, ggn_bound: GGN mass within 10⁻³·λ_max and its exact lower bound 1 − N(C−1)/P;
    fisher_exact_1e3: exact fraction of F̂'s eigenvalues within 10⁻³·λ_max."""

    label: str
    hessian_weight: float
    hessian_position: float
    hessian_1e3: float
    hessian_flat: float
    ggn_1e3: float
    ggn_bound: float
    fisher_exact_1e3: float


def flat_rows(trained: dict[str, OverparamResult], flat_rtol: float) -> list[FlatRow]:
    """The :class:`FlatRow` of each trained study (keys: model names)."""
    rows = []
    for m, st in trained.items():
        nz = st.near_zero
        at = nz[np.isclose(nz.rtol, 1e-3)].set_index("matrix")
        flat = nz[np.isclose(nz.rtol, flat_rtol)].set_index("matrix")
        cl = st.zero_cluster.set_index("matrix")
        rows.append(FlatRow(
            label=m.upper(), hessian_weight=float(cl.loc["Hessian", "weight"]),
            hessian_position=float(cl.loc["Hessian", "position"]),
            hessian_1e3=float(at.loc["Hessian", "fraction (SLQ)"]),
            hessian_flat=float(flat.loc["Hessian", "fraction (SLQ)"]),
            ggn_1e3=float(at.loc["GGN (= Fisher)", "fraction (SLQ)"]),
            ggn_bound=float(at.loc["GGN (= Fisher)", "exact lower bound (rank)"]),
            fisher_exact_1e3=float(at.loc["empirical Fisher (exact)", "fraction (SLQ)"])))
    return rows


def tex_number(x: float) -> str:
    """``x`` for inline math, powers of ten written out: 0.001 → ``10^{-3}``, 6.3e-04 →
    ``6.3 \\times 10^{-4}``, 0.25 → ``0.25``."""
    if x != 0 and math.isfinite(x) and not 1e-2 <= abs(x) < 1e4:
        mant, exp = f"{x:.1e}".split("e")
        power = f"10^{{{int(exp)}}}"
        return power if mant == "1.0" else f"{mant} \\times {power}"
    return f"{x:g}"


def verdict_flat_bulk(
    rows: list[FlatRow], *, flat_rtol: float, flat_fraction: float, scale: str,
    resolve_tol: float = 0.02,
) -> Verdict:
    """'Most directions are flat' for the Hessian itself.

    Inconclusive when, for some model, SLQ finds less GGN mass within 10⁻³·λ_max than the
    exact rank bound minus ``resolve_tol`` (the quadrature has not resolved the zero
    cluster, so its fractions cannot be trusted). Otherwise, with f_m the Hessian mass
    within ``flat_rtol``·λ_max: supported if min_m f_m ≥ ``flat_fraction``, contradicted
    if max_m f_m < ``flat_fraction``, mixed in between. A derivation check: with P ≫ N the
    GGN's rank bound forces most of its spectrum to zero, and H ≈ GGN near interpolation."""
    if not rows:
        raise ValueError("rows must hold at least one model, got none")
    rt = f"${tex_number(flat_rtol)}\\,\\lambda_{{\\max}}$"
    milli = r"$10^{-3}\lambda_{\max}$"
    lines = []
    for r in rows:
        lines.append(
            f"**{r.label}**: the SLQ node nearest zero carries a fraction "
            f"{r.hessian_weight:.3f} of the Hessian's spectral mass and sits at "
            f"${tex_number(r.hessian_position)}\\,\\lambda_{{\\max}}$; SLQ puts "
            f"{r.hessian_1e3:.3f} of the mass within {milli} and {r.hessian_flat:.3f} within "
            f"{rt}"
            + (" (the $10^{-3}$ window is narrower than the cluster's offset, so that number "
               "understates the flat part)" if r.hessian_position > 1e-3 else "")
            + f". For the GGN SLQ finds {r.ggn_1e3:.3f} within {milli} against the exact "
            f"rank bound {r.ggn_bound:.3f}"
            + (" (consistent)" if r.ggn_1e3 >= r.ggn_bound - resolve_tol else
               " (below the bound: the quadrature has not resolved the zero cluster)")
            + f"; $\\hat F$ has exactly {r.fisher_exact_1e3:.3f} of its eigenvalues within "
            f"{milli}.")
    fracs = [r.hessian_flat for r in rows]
    unresolved = any(r.ggn_1e3 < r.ggn_bound - resolve_tol for r in rows)
    if unresolved:
        outcome = "inconclusive"
        tail = ("The SLQ quadrature has not resolved the zero cluster at this profile, so the "
                "Hessian's fractions cannot decide.")
    elif min(fracs) >= flat_fraction:
        outcome = "supported"
        tail = (f"In every network at least {min(fracs):.0%} of the Hessian's spectrum lies "
                f"within {rt} of zero (threshold {flat_fraction:.0%}).")
    elif max(fracs) < flat_fraction:
        outcome = "contradicted"
        tail = (f"In no network does the share within {rt} reach {flat_fraction:.0%} (at most "
                f"{max(fracs):.0%}).")
    else:
        outcome = "mixed"
        tail = (f"The share within {rt} is {min(fracs):.0%} in one network, below the "
                f"threshold {flat_fraction:.0%}, and {max(fracs):.0%} in another.")
    return Verdict(
        claim="Most directions of the Hessian of an over-parameterised network are (near) "
              "flat: its spectrum is a bulk at zero.",
        outcome=outcome, sentence=" ".join(lines) + " " + tail, scale=scale,
        section=SECTION_FLAT, kind=DERIVATION)


@dataclass(frozen=True)
class EnergyRow:
    """One model/state: φ_k along the top-k Hessian eigenvectors, the optimum (D's own
    top-k), k, rank G (dimension of span{g_i}) and P."""

    label: str
    k: int
    phi: float
    optimum: float
    rank_g: int
    p: int

    @property
    def ratio_span(self) -> float:
        """φ_k / (k / rank G): against a random k-subspace of span{g_i}."""
        return self.phi / (self.k / self.rank_g)

    @property
    def ratio_ambient(self) -> float:
        """φ_k / (k / P): against a random k-subspace of R^P (inflated by ≈ P / rank G)."""
        return self.phi / (self.k / self.p)


# --------------------------------------------------------------------------- claims over seeds


def seed_codes(values: np.ndarray, threshold: float, alpha: float) -> np.ndarray:
    """"Every item lies above ``threshold``" from ``values: (..., I, n)``, ``n`` seeds per
    item (NaN: missing). Per item the one-sided t-tests of the mean against ``threshold``
    (:func:`sgdnoise.decide.pvalues.one_sided`). Code 0 (supported): every item above at
    ``alpha`` (intersection-union); 1 (contradicted): some item below (Holm over the
    ``I``); 3 (inconclusive) otherwise. Returns ``(...)`` integer codes into
    ``("supported", "contradicted", "mixed", "inconclusive")``."""
    from sgdnoise.decide.pvalues import holm, one_sided

    t = one_sided(np.asarray(values, dtype=float), threshold)
    supported = t.p_greater.max(-1) <= alpha
    contradicted = (holm(t.p_less) <= alpha).any(-1)
    return np.where(supported, 0, np.where(contradicted, 1, 3))


OUTCOME_CODES = ("supported", "contradicted", "mixed", "inconclusive")


@dataclass(frozen=True)
class SeedRates:
    """Error rates of :func:`seed_codes` measured with the harness: ``false_positive``
    (supported with one item at the threshold, the others at their measured means; the
    worst item counts) and ``power`` (supported with every item ``effect`` above the
    threshold), at ``n_seeds`` seeds, normal seed-to-seed noise of the measured standard
    deviations."""

    false_positive: float
    power: float
    n_seeds: int
    n_sim: int
    conditions: str

    def attach(self, verdict: Verdict) -> Verdict:
        return verdict.with_error_rates(false_positive_rate=self.false_positive,
                                        power=self.power, n_seeds=self.n_seeds,
                                        n_sim=self.n_sim, rates_at=self.conditions)


def seed_rates(values: np.ndarray, threshold: float, *, effect: float, alpha: float,
               n_sim: int, seed: int, unit: str) -> SeedRates:
    """Simulate :func:`seed_codes` with the spread of the measured ``values: (I, n)``:
    each item's seeds drawn ``N(μ_i, s_i²)`` with ``s_i`` its sample standard deviation
    (items without two finite values get the largest ``s`` measured)."""
    from sgdnoise.decide.harness import Scenario, error_rates, rate_of

    v = np.asarray(values, dtype=float)
    n = v.shape[-1]
    with np.errstate(invalid="ignore"):
        sd = np.nanstd(v, axis=-1, ddof=1)
        means = np.nanmean(v, axis=-1)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, np.nanmax(np.append(sd, 1e-12)))

    def draws(mu: np.ndarray):
        def simulate(k: int, rng: np.random.Generator) -> np.ndarray:
            return mu[:, None] + sd[:, None] * rng.standard_normal((k, mu.size, n))
        return simulate

    def rule(batch: np.ndarray) -> np.ndarray:
        return np.asarray(OUTCOME_CODES, dtype=object)[seed_codes(batch, threshold, alpha)]

    scen = []
    for i in range(v.shape[0]):
        mu = np.maximum(means, threshold)
        mu[i] = threshold
        scen.append(Scenario(f"item {i + 1} at the threshold", "", draws(mu)))
    scen.append(Scenario("true", "", draws(np.full(v.shape[0], threshold + effect))))
    rates = error_rates(rule, scen, n_sim=n_sim, seed=seed)
    fp = max(rate_of(rates, s.name, "supported").rate for s in scen[:-1])
    cond = (f"{v.shape[0]} items, seed-to-seed standard deviations "
            f"{', '.join(f'{s:.3g}' for s in sd)} {unit}; false positive: one item exactly "
            f"at the threshold; power: every item {effect:g} {unit} above it")
    return SeedRates(fp, rate_of(rates, "true", "supported").rate, n, n_sim, cond)


def _seed_listing(values: np.ndarray, labels: list[str], alpha: float, fmt: str) -> str:
    from sgdnoise.stats import t_interval

    parts = []
    for lab, row in zip(labels, np.asarray(values, dtype=float), strict=True):
        iv = t_interval(row, 1 - 2 * alpha)
        parts.append(f"{lab} {iv.estimate:{fmt}} [{iv.low:{fmt}}, {iv.high:{fmt}}]")
    return "; ".join(parts)


def _rule_text(threshold: str, n_seeds: int, alpha: float) -> str:
    return (f" ({1 - 2 * alpha:.0%} intervals over {n_seeds} training seeds). Rule: one-sided "
            f"t-tests across seeds at level {alpha:g}; supported when every item lies above "
            f"{threshold} (all needed), contradicted when some item lies below it (Holm).")


CAPTURE_CLAIM = ("The top of the curvature spectra is carried by the class-mean gradients (the "
                 "mechanism behind about one outlier per class): most of each matrix's "
                 "top-$C$ eigenspace lies in their span, in every trained network.")


def verdict_capture(values: np.ndarray, labels: list[str], *, capture_min: float,
                    alpha: float, scale: str, counts: str = "",
                    rates: SeedRates | None = None) -> Verdict:
    """:func:`seed_codes` on the class-mean capture of each (network, matrix) item,
    ``values: (I, n)`` over seeds, against ``capture_min``. ``counts``: the largest-gap
    outlier counts in words, for the sentence. A claim about SGD."""
    code = int(seed_codes(values, capture_min, alpha))
    sentence = ("Share of the top-$C$ eigenspace in the class-mean span: "
                + _seed_listing(values, labels, alpha, ".2f")
                + _rule_text(f"{capture_min:.2f}", np.asarray(values).shape[-1], alpha)
                + (f" {counts}" if counts else ""))
    v = Verdict(CAPTURE_CLAIM, OUTCOME_CODES[code], sentence, scale, SECTION_OUTLIERS)
    return rates.attach(v) if rates is not None else v


CONCENTRATION_CLAIM = ("The mini-batch noise concentrates in the few top Hessian directions: "
                       "far more of it lies along them than along a random subspace of the "
                       "same size within the gradients' span, in every trained network.")


def verdict_concentration(log_ratios: np.ndarray, labels: list[str], *,
                          concentration_min: float, alpha: float, scale: str,
                          rates: SeedRates | None = None) -> Verdict:
    """:func:`seed_codes` on ``ln(φ_C / (C/rank G))`` per trained network, ``log_ratios:
    (I, n)`` over seeds, against ``ln concentration_min``. A claim about SGD."""
    code = int(seed_codes(log_ratios, math.log(concentration_min), alpha))
    ratio = np.exp(np.asarray(log_ratios, dtype=float))
    sentence = (r"Noise share along the top-$C$ Hessian directions over the share of a "
                r"random $C$-subspace of $\operatorname{span}\{g_i\}$: "
                + _seed_listing(ratio, labels, alpha, ".2f")
                + _rule_text(f"{concentration_min:g} (on the log scale)",
                             ratio.shape[-1], alpha))
    v = Verdict(CONCENTRATION_CLAIM, OUTCOME_CODES[code], sentence, scale, SECTION_ENERGY)
    return rates.attach(v) if rates is not None else v


VALLEY_CLAIM = ("Wide valleys: along directions that are flat at the minimum (orthogonal to "
                "every per-example gradient and to the top Hessian eigenvectors) the training "
                "loss stays low out to a larger distance than along random directions, in "
                "every trained network.")


def verdict_valley(log_ratios: np.ndarray, labels: list[str], *, rise: float,
                   ratio_min: float, alpha: float, scale: str,
                   rates: SeedRates | None = None) -> Verdict:
    """:func:`seed_codes` on ``ln(w_flat / w_random)`` per trained network (the widths at
    a loss rise of ``rise`` nats, :meth:`ValleyWalk.log_ratio`), ``log_ratios: (I, n)``
    over seeds, against ``ln ratio_min``. A claim about SGD."""
    code = int(seed_codes(log_ratios, math.log(ratio_min), alpha))
    ratio = np.exp(np.asarray(log_ratios, dtype=float))
    sentence = (f"Distance at which the training loss has risen by {rise:g} nats, flat over "
                "random directions: " + _seed_listing(ratio, labels, alpha, ".2f")
                + _rule_text(f"{ratio_min:g} (on the log scale)", ratio.shape[-1], alpha))
    v = Verdict(VALLEY_CLAIM, OUTCOME_CODES[code], sentence, scale, SECTION_VALLEY)
    return rates.attach(v) if rates is not None else v


@dataclass
class SeedRecord:
    """One trained network at one training seed: the class-mean capture of its top-C
    eigenspaces (``capture[matrix]``), ``log_concentration = ln(φ_C/(C/rank G))`` and its
    :class:`ValleyWalk`."""

    model: str
    seed: int
    capture: dict[str, float]
    log_concentration: float
    valley: ValleyWalk


def seed_record(name: str, seed: int, study: OverparamResult, valley: ValleyWalk,
                num_classes: int) -> SeedRecord:
    """The :class:`SeedRecord` of a trained ``study`` and its ``valley``."""
    cap = study.class_capture.set_index("matrix")["captured by class-mean span"]
    e = study.energy
    phi = float(e.loc[e.k == min(num_classes, len(e)), "top-k Hessian eigenvectors"].iloc[0])
    k = min(num_classes, len(e))
    return SeedRecord(name, seed, {m: float(v) for m, v in cap.items()},
                      math.log(phi / (k / study.rank_fisher)), valley)


# --------------------------------------------------------------------------- the chapter's runs


def build_runs(P: Params) -> dict[str, dict[str, Any]]:
    """The chapter's two problems and untrained models: {"mlp" | "cnn": {"prob", "model",
    "P", "N"}} (stratified seeded subsets, float64 models seeded by ``P.seed``)."""
    from sgdnoise.chapters.small_problems import build_small_model, load_small_problem
    from sgdnoise.grads import num_params

    runs: dict[str, dict[str, Any]] = {}
    for name, n, width in (("mlp", P.mlp_n, P.mlp_width), ("cnn", P.cnn_n, P.cnn_width)):
        prob = load_small_problem(P.dataset, n, image_size=P.image_size, seed=P.seed)
        model = build_small_model(name, prob.in_shape, width=width, seed=P.seed)
        runs[name] = {"prob": prob, "model": model, "P": num_params(model), "N": n}
    return runs


def _study_kwargs(P: Params, seed: int) -> dict[str, Any]:
    return dict(num_classes=P.num_classes, top_k=P.top_k, lanczos_iters=P.lanczos_iters,
                slq_probes=P.slq_probes, slq_iters=P.slq_iters, seed=seed)


def _train(P: Params, name: str, model: nn.Module, prob: Any, seed: int) -> pd.DataFrame:
    return train_to_interpolation(model, prob.x, prob.y, lr=getattr(P, f"{name}_lr"),
                                  batch_size=P.batch_size, max_epochs=P.max_epochs,
                                  target_error=P.target_error, seed=seed)


def valley_distances(P: Params) -> np.ndarray:
    """The relative distances ``t`` of the valley walks: ``valley_points`` log-spaced
    values from ``valley_min`` to ``valley_max``."""
    return np.geomspace(P.valley_min, P.valley_max, P.valley_points)


def _valley(P: Params, model: nn.Module, prob: Any, st: OverparamResult,
            seed: int) -> ValleyWalk:
    return valley_walk(model, prob.x, prob.y, st.gradients, st.hessian_vecs,
                       num_directions=P.valley_directions, distances=valley_distances(P),
                       seed=seed)


def run_studies(
    P: Params, runs: dict[str, dict[str, Any]], progress: Callable[[Any], Any] | None = None
) -> dict[tuple[str, str], OverparamResult]:
    """For each model: :func:`overparam_study` at initialisation (the CNN's curvature only
    with ``P.cnn_init_curvature``), :func:`train_to_interpolation` (its history stored in
    ``runs[name]["history"]``; the model is trained in place), the study again, and the
    valley walk of the trained model (``runs[name]["valley"]``).
    Returns {(model, "init" | "trained"): OverparamResult}."""
    studies: dict[tuple[str, str], OverparamResult] = {}
    kw = dict(_study_kwargs(P, P.seed), span_draws=P.span_draws)
    items = list(runs.items())
    for name, r in (progress(items) if progress is not None else items):
        x, y = r["prob"].x, r["prob"].y
        curv_init = name == "mlp" or P.cnn_init_curvature
        studies[(name, "init")] = overparam_study(r["model"], x, y, curvature=curv_init, **kw)
        studies[(name, "init")].gradients = None
        r["history"] = _train(P, name, r["model"], r["prob"], P.seed)
        st = overparam_study(r["model"], x, y, **kw)
        r["valley"] = _valley(P, r["model"], r["prob"], st, P.seed)
        st.gradients = None
        studies[(name, "trained")] = st
    return studies


def seed_studies(P: Params, runs: dict[str, dict[str, Any]],
                 studies: dict[tuple[str, str], OverparamResult],
                 progress: Callable[[Any], Any] | None = None) -> list[SeedRecord]:
    """The claims' seeds: seed ``P.seed`` from :func:`run_studies` and, for every seed of
    ``P.extra_seeds``, each model initialised and trained with that seed on the same
    subset, then :func:`overparam_study` without the GGN and the densities and the valley
    walk. Returns one :class:`SeedRecord` per (model, seed)."""
    from sgdnoise.chapters.small_problems import build_small_model

    records = [seed_record(name, P.seed, studies[(name, "trained")], r["valley"],
                           P.num_classes) for name, r in runs.items()]
    jobs = [(name, s) for s in P.extra_seeds for name in runs]
    for name, s in (progress(jobs) if progress is not None else jobs):
        prob = runs[name]["prob"]
        width = P.mlp_width if name == "mlp" else P.cnn_width
        model = build_small_model(name, prob.in_shape, width=width, seed=s)
        _train(P, name, model, prob, s)
        st = overparam_study(model, prob.x, prob.y, ggn=False, slq=False,
                             **_study_kwargs(P, s))
        records.append(seed_record(name, s, st, _valley(P, model, prob, st, s),
                                   P.num_classes))
    return records


CAPTURE_MATRICES = ("Hessian", "empirical Fisher", "covariance D")


def claim_values(records: list[SeedRecord]) -> dict[str, tuple[list[str], np.ndarray]]:
    """The per-seed values of the three claims, each as ``(labels, values: (I, n))``:
    "capture" (one item per network and matrix of :data:`CAPTURE_MATRICES`),
    "concentration" and "valley" (one item per network; the valley at ``rise``
    is read by :func:`valley_values`)."""
    models = list(dict.fromkeys(r.model for r in records))
    by = {m: [r for r in records if r.model == m] for m in models}
    cap_labels = [f"{m.upper()} {mat}" for m in models for mat in CAPTURE_MATRICES]
    cap = np.array([[r.capture[mat] for r in by[m]] for m in models
                    for mat in CAPTURE_MATRICES])
    conc = np.array([[r.log_concentration for r in by[m]] for m in models])
    return {"capture": (cap_labels, cap),
            "concentration": ([m.upper() for m in models], conc)}


def valley_values(records: list[SeedRecord], rise: float) -> tuple[list[str], np.ndarray]:
    """``ln(w_flat / w_random)`` at a loss rise of ``rise`` nats per network and seed:
    ``(labels, (I, n))``."""
    models = list(dict.fromkeys(r.model for r in records))
    return ([m.upper() for m in models],
            np.array([[r.valley.log_ratio(rise) for r in records if r.model == m]
                      for m in models]))


def energy_table(
    studies: dict[tuple[str, str], OverparamResult], num_classes: int
) -> tuple[pd.DataFrame, list[EnergyRow]]:
    """Noise share at k = C along the top-k Hessian eigenvectors, per (model, state) with a
    Hessian: the optimum, the two random baselines (k/P and k/rank G), the two ratios and
    the sampled check of k/rank G. Returns (table, rows for
    :func:`verdict_noise_concentration`)."""
    table, rows = [], []
    for (m, s), st in studies.items():
        if st.energy is None:
            continue
        e = st.energy
        r = e[e.k == min(num_classes, len(e))].iloc[0]
        row = EnergyRow(label=f"{m}/{s}", k=int(r["k"]),
                        phi=float(r["top-k Hessian eigenvectors"]),
                        optimum=float(r["top-k eigenvectors of D (optimum)"]),
                        rank_g=st.rank_fisher, p=st.p)
        rows.append(row)
        sr = st.span_random or {}
        table.append({"model": m, "state": s, "k": row.k, "φ_k (Hessian)": row.phi,
                      "optimum": row.optimum, "random k/P": row.k / row.p,
                      "ratio to random k/P": row.ratio_ambient,
                      "random k/rank G": row.k / row.rank_g,
                      "sampled k-subspaces of span G": sr.get("mc_mean", math.nan),
                      "ratio to random in span G": row.ratio_span})
    return pd.DataFrame(table), rows


def outlier_evidence(
    studies: dict[tuple[str, str], OverparamResult]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(outlier counts, class-mean captures) of every measured (model, state, matrix), long
    format: columns model, state, matrix and outliers / captured by class-mean span.
    Matrices a study did not compute (no curvature) have no row."""
    out = pd.concat([st.outliers.assign(model=m, state=s) for (m, s), st in studies.items()])
    cap = pd.concat([st.class_capture.assign(model=m, state=s)
                     for (m, s), st in studies.items()])
    return out, cap
