"""Chapter 5, *Over-parameterization and wide valleys*: parameters, studies and verdicts.

Notation: N examples, P parameters (P ≫ N), C classes. ``G: (N, P)`` holds the per-example
gradients g_i as rows, ḡ their mean, F̂ = GᵀG/N: (P, P) the empirical Fisher and
D = F̂ − ḡḡᵀ the gradient covariance. H is the Hessian of the mean loss and GGN the
generalised Gauss-Newton matrix (equal to the true Fisher for softmax cross-entropy).

- :class:`Params`: the chapter's parameters (the notebook's parameters cell and
  ``book/params/ch05_overparam/*.yaml``), with their checks.
- :func:`train_to_interpolation` and :func:`overparam_study`: the chapter's pipeline on a
  trained network.
- ``verdict_*``: the chapter's conclusions, computed from the numbers with explicit
  thresholds (:class:`sgdnoise.report.Verdict`).

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
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
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
    "overparam_study",
    "train_to_interpolation",
    "verdict_flat_bulk",
    "verdict_noise_concentration",
    "verdict_outliers",
    "verdict_rank",
]

DT = torch.float64


# --------------------------------------------------------------------------- rank


# --------------------------------------------------------------------------- outliers


# --------------------------------------------------------------------------- class structure


# --------------------------------------------------------------------------- noise energy


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
    grad_norm_sq (‖ḡ‖²) and trace_cov (tr D)."""

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
    span_draws: int = 0,
    progress: Callable[[str], None] | None = None,
) -> OverparamResult:
    """Spectra, ranks, outliers and noise placement of a (trained) classifier.

    1. G: (N, P) per-example gradients of the cross-entropy; Gram spectra of F̂ and D and
       their numerical ranks (≤ N and ≤ N − 1).
    2. Top-``top_k`` eigenpairs of H and of the GGN by Lanczos (``lanczos_iters`` products).
    3. SLQ densities of H, GGN and F̂ (``slq_probes`` × ``slq_iters`` products each).
    4. Outlier counts (largest gap, :func:`count_outliers`) of H, GGN, F̂ and D; near-zero
       fractions from the SLQ rules; exact lower bounds 1 − rank/P (F̂: rank ≤ N; GGN:
       rank ≤ N(C − 1), since each diag p_i − p_i p_iᵀ kills the all-ones vector).
    5. Noise energy Σ_{j≤k} u_jᵀ D u_j / tr D for the top Hessian eigenvectors u_j, against
       D's own top-k (the optimum), a random k-subspace of R^P (k/P) and a random
       k-subspace of span{g_i} (k/rank G; with ``span_draws`` > 0 also sampled,
       :func:`random_span_fraction`).
    6. Capture of the top-(C) eigenspaces of H, GGN, F̂ and D by the span of the C
       class-mean gradients.

    With ``curvature=False`` only the gradient-based parts run (steps 1, 4 and 6 for F̂ and
    D; no Hessian/GGN products): hessian_top / ggn_top are empty, densities and energy
    hold F̂ only / nothing.

    ``progress`` is called with a short label before each stage (e.g. tqdm's ``write``).
    """
    from sgdnoise.covariance import CovarianceOperator
    from sgdnoise.curvature import GGNOperator, HessianOperator
    from sgdnoise.grads import per_example_grads
    from sgdnoise.spectral import lanczos, spectral_density

    top_k = check_positive_int("top_k", top_k)
    loss = nn.functional.cross_entropy
    say = progress or (lambda s: None)
    say("per-example gradients")
    G = per_example_grads(model, loss, x, y, chunk_size=chunk_size).to(DT)
    n, p = G.shape
    if top_k > min(n, p):
        raise ValueError(f"top_k must be <= min(N, P) = {min(n, p)}, got {top_k}")
    gram_f = gram_spectrum(G)
    gram_d = gram_spectrum(G, centered=True)
    cov = CovarianceOperator(G)
    gbar = G.mean(0)

    def fisher_mv(v: Tensor) -> Tensor:
        v = v.to(DT)
        return G.T @ (G @ v) / n

    empty = torch.zeros(0, dtype=DT)
    h_top, h_vecs, g_top, g_vecs = empty, torch.zeros(p, 0, dtype=DT), empty, None
    mats: list[tuple[str, Any, Any]] = []
    if curvature:
        say("Lanczos: Hessian")
        Hop = HessianOperator(model, loss, x, y, chunk_size=chunk_size)
        hres = lanczos(Hop.matvec, p, top_k, num_iters=max(lanczos_iters, top_k), seed=seed,
                       dtype=Hop.dtype)
        h_top, h_vecs = hres.eigenvalues.to(DT), hres.eigenvectors.to(DT)
        say("Lanczos: GGN")
        Gop = GGNOperator(model, loss, x, y, chunk_size=chunk_size)
        gres = lanczos(Gop.matvec, p, top_k, num_iters=max(lanczos_iters, top_k),
                       seed=seed + 1, dtype=Gop.dtype)
        g_top, g_vecs = gres.eigenvalues.to(DT), gres.eigenvectors.to(DT)
        mats = [("Hessian", Hop.matvec, Hop.dtype), ("GGN (= Fisher)", Gop.matvec, Gop.dtype)]
    mats.append(("empirical Fisher", fisher_mv, DT))
    dens = {}
    for name, mv, dt in mats:
        say(f"SLQ: {name}")
        dens[name] = spectral_density(mv, p, num_probes=slq_probes, num_iters=slq_iters,
                                      seed=seed + 7, dtype=dt)

    out_rows = []
    spectra = [("empirical Fisher", gram_f[:top_k]), ("covariance D", gram_d[:top_k])]
    if curvature:
        spectra = [("Hessian", h_top), ("GGN (= Fisher)", g_top), *spectra]
    for name, ev in spectra:
        k = count_outliers(ev, max_outliers=min(max_outliers, ev.numel() - 1))
        out_rows.append({"matrix": name, "outliers": k, "gap ratio": _gap_ratio(ev, k)})
    outliers = pd.DataFrame(out_rows)

    rank_f = numerical_rank(gram_f, dim=p)
    rank_d = numerical_rank(gram_d, dim=p)
    bounds = {"Hessian": float("nan"), "GGN (= Fisher)": 1 - min(p, n * (num_classes - 1)) / p,
              "empirical Fisher": 1 - min(p, n) / p}
    nz_rows = []
    for name, d in dens.items():
        scale = float(h_top[0]) if name == "Hessian" else None
        for rt in zero_rtols:
            nz_rows.append({"matrix": name, "rtol": rt,
                            "fraction (SLQ)": slq_near_zero_fraction(d, rtol=rt, scale=scale),
                            "exact lower bound (rank)": bounds[name]})
    for rt in zero_rtols:  # F̂ exactly, from its Gram spectrum
        nz_rows.append({"matrix": "empirical Fisher (exact)", "rtol": rt,
                        "fraction (SLQ)": near_zero_fraction(gram_f, rtol=rt, dim=p),
                        "exact lower bound (rank)": bounds["empirical Fisher"]})
    near_zero = pd.DataFrame(nz_rows)
    zero_cluster = pd.DataFrame([
        {"matrix": name, **slq_zero_cluster(d, scale=float(h_top[0]) if name == "Hessian"
                                            else None)}
        for name, d in dens.items()])

    energy = None
    span_mc: dict[str, float] | None = None
    rank_g = numerical_rank(gram_f, dim=p)  # rank G = rank F̂: the dimension of span{g_i}
    if curvature:
        say("noise energy")
        frac_h = noise_energy_fraction(cov, h_vecs)
        d_best = torch.cumsum(gram_d[:top_k], 0) / cov.trace()
        energy = pd.DataFrame({
            "k": np.arange(1, top_k + 1),
            "top-k Hessian eigenvectors": frac_h.cpu().numpy(),
            "top-k eigenvectors of D (optimum)": d_best.cpu().numpy(),
            "random k-subspace (k/P)": np.arange(1, top_k + 1) / p,
            "random k-subspace of span G (k/rank G)": np.arange(1, top_k + 1) / rank_g,
        })
        if span_draws:
            span_mc = random_span_fraction(G, cov, min(num_classes, top_k), draws=span_draws,
                                           seed=seed + 11)

    M = class_mean_gradients(G, y, num_classes)
    m = min(num_classes, top_k)
    cap_rows = []
    Fop = CovarianceOperator(torch.cat([G, -G], 0))  # rows ±g_i: mean 0, covariance F̂
    bases = [("empirical Fisher", Fop.eigh(m)[1]), ("covariance D", cov.eigh(m)[1])]
    if curvature:
        bases = [("Hessian", h_vecs[:, :m]), ("GGN (= Fisher)", g_vecs[:, :m]), *bases]
    for name, U in bases:
        cap_rows.append({"matrix": name, "k": m,
                         "captured by class-mean span": subspace_capture(U.to(DT), M),
                         "random k-subspace": min(num_classes, p) / p})
    class_capture = pd.DataFrame(cap_rows)

    return OverparamResult(
        n=n, p=p, num_classes=num_classes, gram_fisher=gram_f, gram_cov=gram_d,
        rank_fisher=rank_f, rank_cov=rank_d, hessian_top=h_top, ggn_top=g_top,
        fisher_top=gram_f[:top_k], hessian_vecs=h_vecs, densities=dens, outliers=outliers,
        near_zero=near_zero, energy=energy, class_capture=class_capture,
        zero_cluster=zero_cluster, span_random=span_mc,
        grad_norm_sq=float(gbar @ gbar), trace_cov=cov.trace(),
    )


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
    outlier_share: float = param(low=0.0, high=1.0,
                                 doc="share of spectra with C−1 or C outliers to support "
                                     "'about one outlier per class'")
    capture_min: float = param(low=0.0, high=1.0,
                               doc="class-mean capture of the top-C eigenspace counted as "
                                   "'organised by the classes'")
    concentration_min: float = param(low=1.0, doc="noise share along the top-k Hessian "
                                     "directions, as a multiple of a random k-subspace of "
                                     "span{g_i}, counted as 'concentrated'")

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


# --------------------------------------------------------------------------- verdicts

SECTION_RANK = "sec-ch5-rank"
SECTION_FLAT = "sec-ch5-density"
SECTION_OUTLIERS = "sec-ch5-outliers"
SECTION_ENERGY = "sec-ch5-energy"


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
    :func:`numerical_rank`), contradicted otherwise (which could only be rounding)."""
    if not rows:
        raise ValueError("rows must hold at least one model, got none")
    ok = all(r.rank_fisher <= r.n and r.rank_cov <= r.n - 1 for r in rows)
    ranks = ", ".join(f"{r.label}: {r.rank_fisher}" for r in rows)
    ps = sorted({(r.p, r.n) for r in rows})
    flat = ", ".join(f"{100 * (1 - n / p):.1f}% (P = {p})" for p, n in ps)
    sentence = (
        r"Every $\hat F$ has numerical rank $\le N$ and every $D$ rank $\le N - 1$: "
        f"**{ok}** (ranks {ranks}). "
        + (f"So at least {flat} of the eigenvalues of $\\hat F$ are exactly zero." if ok else
           "A rank above its bound can only come from rounding in the eigensolver.")
    )
    return Verdict(
        claim=r"With $P \gg N$ the empirical Fisher has rank $\le N$ ($D$: $\le N - 1$), so "
              "almost all of its P eigenvalues are exactly zero.",
        outcome="supported" if ok else "contradicted", sentence=sentence, scale=scale,
        section=SECTION_RANK)


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
    if max_m f_m < ``flat_fraction``, mixed in between."""
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
        section=SECTION_FLAT)


def verdict_outliers(
    counts: list[int], captures: list[float], *, num_classes: int, outlier_share: float,
    capture_min: float, random_capture: float, scale: str,
) -> Verdict:
    """'About one outlier per class' from the largest-gap counts of several spectra and the
    class-mean capture of their top-C eigenspaces (:func:`subspace_capture`).

    share = fraction of spectra whose count is C − 1 or C. Supported if share ≥
    ``outlier_share``; otherwise mixed if every capture ≥ ``capture_min`` (the classes
    organise the top of the spectrum, but ~C outliers do not separate by a gap), else
    contradicted. Inconclusive without any spectrum."""
    C = check_positive_int("num_classes", num_classes)
    if not counts or not captures:
        return Verdict(claim=_OUTLIER_CLAIM, outcome="inconclusive",
                       sentence="No spectrum was measured.", scale=scale,
                       section=SECTION_OUTLIERS)
    arr = np.asarray(counts, dtype=int)
    n_c, n_c1 = int((arr == C).sum()), int((arr == C - 1).sum())
    n_other = arr.size - n_c - n_c1
    share = (n_c + n_c1) / arr.size
    others = ", ".join(sorted({str(int(c)) for c in arr if c not in (C, C - 1)})) or "none"
    cap_lo, cap_hi = float(min(captures)), float(max(captures))
    sentence = (
        f"Of {arr.size} (model, state, matrix) spectra, {n_c1} show exactly C − 1 = {C - 1} "
        f"outliers, {n_c} show C = {C}, and {n_other} show another count ({others}): a share "
        f"{share:.2f} against the threshold {outlier_share:.2f}. The class-mean span captures "
        f"between {cap_lo:.2f} and {cap_hi:.2f} of the top-C eigenspaces (threshold "
        f"{capture_min:.2f}), against ≈{random_capture:.0e} for a random subspace.")
    if share >= outlier_share:
        outcome = "supported"
    elif cap_lo >= capture_min:
        outcome = "mixed"
        sentence += (" The top of every spectrum is organised by the classes, but a gap "
                     "separating about C outliers is not the rule here.")
    else:
        outcome = "contradicted"
    return Verdict(claim=_OUTLIER_CLAIM, outcome=outcome, sentence=sentence, scale=scale,
                   section=SECTION_OUTLIERS)


_OUTLIER_CLAIM = ("The top of the curvature spectra holds about one outlier per class, "
                  "carried by the class-mean gradients.")


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


def verdict_noise_concentration(
    rows: list[EnergyRow], *, concentration_min: float, scale: str
) -> Verdict:
    """'The mini-batch noise lives in the top Hessian eigenspace', judged against a random
    k-subspace of span{g_i} (which holds the range of D), not of R^P.

    With ρ = φ_k / (k / rank G) per model/state: supported if min ρ ≥
    ``concentration_min``, contradicted if max ρ < ``concentration_min``, mixed otherwise;
    inconclusive without rows."""
    claim = ("The mini-batch noise concentrates in the few top Hessian directions (far more "
             "than in a random subspace of the same size).")
    if not rows:
        return Verdict(claim=claim, outcome="inconclusive", sentence="No Hessian was "
                       "measured.", scale=scale, section=SECTION_ENERGY)
    span = [r.ratio_span for r in rows]
    amb = [r.ratio_ambient for r in rows]
    k = rows[0].k
    sentence = (
        f"The top-{k} Hessian directions carry between {min(r.phi for r in rows):.1%} and "
        f"{max(r.phi for r in rows):.1%} of $\\operatorname{{tr}} D$, "
        f"{min(r.phi / r.optimum for r in rows):.0%}–{max(r.phi / r.optimum for r in rows):.0%}"
        f" of the best any {k}-dimensional subspace could capture. Against a random "
        f"{k}-subspace of $\\operatorname{{span}}\\{{g_i\\}}$ ($k/\\operatorname{{rank}} G$) "
        f"that is {min(span):.2f}×–{max(span):.2f}× (threshold {concentration_min:g}×); "
        f"against a random {k}-subspace of $\\mathbb{{R}}^P$ ($k/P$) it would read "
        f"{min(amb):.0f}×–{max(amb):.0f}×, a factor $P/\\operatorname{{rank}} G$ too "
        "generous.")
    if min(span) >= concentration_min:
        outcome = "supported"
    elif max(span) < concentration_min:
        outcome = "contradicted"
    else:
        outcome = "mixed"
    return Verdict(claim=claim, outcome=outcome, sentence=sentence, scale=scale,
                   section=SECTION_ENERGY)


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


def run_studies(
    P: Params, runs: dict[str, dict[str, Any]], progress: Callable[[Any], Any] | None = None
) -> dict[tuple[str, str], OverparamResult]:
    """For each model: :func:`overparam_study` at initialisation (the CNN's curvature only
    with ``P.cnn_init_curvature``), :func:`train_to_interpolation` (its history stored in
    ``runs[name]["history"]``; the model is trained in place), and the study again.
    Returns {(model, "init" | "trained"): OverparamResult}."""
    studies: dict[tuple[str, str], OverparamResult] = {}
    kw = dict(num_classes=P.num_classes, top_k=P.top_k, lanczos_iters=P.lanczos_iters,
              slq_probes=P.slq_probes, slq_iters=P.slq_iters, seed=P.seed,
              span_draws=P.span_draws)
    items = list(runs.items())
    for name, r in (progress(items) if progress is not None else items):
        x, y = r["prob"].x, r["prob"].y
        curv_init = name == "mlp" or P.cnn_init_curvature
        studies[(name, "init")] = overparam_study(r["model"], x, y, curvature=curv_init, **kw)
        r["history"] = train_to_interpolation(
            r["model"], x, y, lr=getattr(P, f"{name}_lr"), batch_size=P.batch_size,
            max_epochs=P.max_epochs, target_error=P.target_error, seed=P.seed)
        studies[(name, "trained")] = overparam_study(r["model"], x, y, **kw)
    return studies


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
