"""Chapter 1 (Mini-batch gradients and Lemma 1): Monte Carlo checks of the unbiasedness of
``g_B`` and of Lemma 1, ``Cov(g_B) = c·D`` with ``c = 1/B`` (with replacement) or
``(N − B)/(B(N − 1))`` (without); the essay's factor ``1/B − 1/N`` reconciled with the
latter by exact enumeration; the correlation of the noises of the batches of one epoch
(``−D/(N − 1)`` between any two, correlation ``−B/(N − B)``), at a fixed θ and along SGD
runs; and the verdicts the chapter draws from them.

Notation: ``G: (N, P)`` per-example gradients (rows g_i), ``ḡ`` their mean, centred rows
``G̃ = G − 1ḡᵀ``, ``D = G̃ᵀG̃/N``; ``ξ = g_B − ḡ`` the mini-batch noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sgdnoise.chapters.small_problems import (
    ClaimRates,
    Condition,
    SmallProblem,
    SmallProblemParams,
    batch_indices,
    build_small_model,
    claim_outcomes,
    claim_rates,
    condition_pvalues,
    fixed,
    interval,
    number,
    plain_sgd,
    pooled_seed_sd,
)
from sgdnoise.params import param
from sgdnoise.report import Verdict
from sgdnoise.stats import t_interval
from sgdnoise.train import PlainSGD
from sgdnoise.validate import check_matrix, check_positive_int

__all__ = [
    "Params",
    "convergence_verdict",
    "epoch_noise_study",
    "epoch_verdict",
    "epoch_table",
    "error_summary",
    "error_table",
    "essay_factor_check",
    "essay_factor_verdict",
    "lemma1_error_study",
    "minibatch_noise_sq_norms",
    "predicted_covariance_error",
    "reshuffling_claim",
    "reshuffling_rates",
    "reshuffling_verdict",
    "trace_table",
    "trace_vs_batch_study",
    "trace_verdict",
    "trajectory_noise_study",
    "trajectory_table",
    "unbiasedness_verdict",
]

SECTION_TRACE = "sec-ch1-trace"
SECTION_MATRIX = "sec-ch1-matrix"
SECTION_ESSAY = "sec-ch1-essay"
SECTION_EPOCH = "sec-ch1-epoch"
DERIVATION, CLAIM = "derivation check", "claim about SGD"


@dataclass(frozen=True)
class Params(SmallProblemParams):
    """Parameters of chapter 1 (values: the notebook's parameters cell and
    ``book/params/ch01_lemma1/{smoke,default,full}.yaml``)."""

    seed: int = param(low=0, doc="seed of data subset, model, training and sampling")
    train_steps: int = param(low=1, doc="SGD steps before θ is frozen")
    train_lr: float = param(low=1e-6, high=10.0, doc="SGD learning rate")
    train_batch_size: int = param(low=1, doc="SGD batch size")
    mc_batch_size: int = param(low=1, doc="B of the full-covariance check")
    sample_counts: tuple[int, ...] = param(low=2, min_len=3, doc="Monte Carlo sample sizes S")
    num_repeats: int = param(low=2, doc="independent repeats per S")
    trace_batch_sizes: tuple[int, ...] = param(low=1, min_len=3, doc="B of the trace check")
    trace_samples: int = param(low=10, doc="sampled batches per B in the trace check")
    z_max: float = param(low=1.0, high=10.0,
                         doc="largest |z| (Monte Carlo vs formula) read as sampling noise")
    bias_ratio_max: float = param(low=1.0, high=100.0,
                                  doc="largest mean bias ratio read as unbiased (expect 1)")
    slope_tolerance: float = param(low=0.0, high=1.0,
                                   doc="allowed |fitted slope − predicted slope|")
    error_ratio_tolerance: float = param(
        low=0.0, high=1.0, doc="allowed |measured/predicted covariance error − 1|")
    exact_n: int = param(low=3, high=14, doc="examples of the exact enumeration")
    exact_batch_size: int = param(low=2, high=12, doc="B of the exact enumeration")
    epoch_batch_sizes: tuple[int, ...] = param(
        low=1, min_len=2, doc="B of the within-epoch correlation check (fixed θ)")
    epoch_samples: int = param(low=10, doc="reshuffled epochs per B (fixed θ)")
    traj_seeds: int = param(low=2, high=50, doc="SGD runs (seeds) of the trajectory study")
    traj_epochs: int = param(low=2, doc="epochs of each SGD run of the trajectory study")
    alpha: float = param(low=0.001, high=0.2, doc="level of the tests of claims about SGD")
    rate_sims: int = param(low=100, high=100000,
                           doc="simulated data sets per truth for the error rates")

    def check(self) -> None:
        for name in ("train_batch_size", "mc_batch_size"):
            self.require(getattr(self, name) <= self.n_train, name,
                         f"must be <= n_train={self.n_train}")
        self.require(max(self.trace_batch_sizes) <= self.n_train, "trace_batch_sizes",
                     f"every batch size must be <= n_train={self.n_train}")
        self.require(self.exact_batch_size < self.exact_n <= self.n_train, "exact_n",
                     f"must exceed exact_batch_size={self.exact_batch_size} and be <= "
                     f"n_train={self.n_train}")
        self.require(all(2 * b <= self.n_train for b in self.epoch_batch_sizes),
                     "epoch_batch_sizes", f"every batch size must be <= n_train/2 = "
                     f"{self.n_train // 2} (two batches per epoch)")
        self.require(2 * self.train_batch_size <= self.n_train, "train_batch_size",
                     f"must be <= n_train/2 = {self.n_train // 2} (two batches per epoch "
                     "for the trajectory study)")


def minibatch_noise_sq_norms(
    G: torch.Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo ``‖g_B − ḡ‖²: (S,)`` and ``g_B − ḡ`` summed over samples ``(P,)`` (for the
    unbiasedness check), by gathering rows (cost O(S·B·P), no (P, P) matrix)."""
    check_matrix("G", G)
    n = G.shape[0]
    b = check_positive_int("batch_size", batch_size)
    s = check_positive_int("num_samples", num_samples)
    if not replacement and b > n:
        raise ValueError(f"batch_size must be <= N={n} without replacement, got {b}")
    Gc = G - G.mean(0, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(s, 2**24 // max(b * G.shape[1], 1)))
    norms = torch.empty(s, dtype=G.dtype)
    total = torch.zeros(G.shape[1], dtype=G.dtype)
    for start in range(0, s, chunk):
        stop = min(start + chunk, s)
        idx = batch_indices(n, b, stop - start, replacement, gen)
        xi = Gc[idx].mean(1)  # (chunk, P)
        norms[start:stop] = (xi * xi).sum(1)
        total += xi.sum(0)
    return norms, total


def predicted_covariance_error(G: torch.Tensor, batch_size: int) -> float:
    """Leading-order relative Frobenius error of a Monte Carlo covariance from S samples
    (with replacement), times √S:  ``√((E‖ξ‖⁴ − ‖C‖_F²)) / ‖C‖_F`` with ``ξ = g_B − ḡ``,
    ``C = D/B`` and (η_j i.i.d. centred per-example gradients)
    ``E‖ξ‖⁴ = (E‖η‖⁴ + (B−1)(tr(D)² + 2‖D‖_F²)) / B³``.

    Derivation: for i.i.d. ξ_s, ``E‖Ĉ − C‖_F² = (E‖ξ‖⁴ − ‖C‖_F²)/S`` (known mean). Expanding
    ``‖Σ_j η_j‖⁴`` over B i.i.d. terms, only index patterns (jjjj) and pairs survive:
    B·E‖η‖⁴ + B(B−1)(E‖η‖²² + 2E(ηᵀη')²), and E(ηᵀη')² = tr(D²)."""
    check_matrix("G", G)
    b = check_positive_int("batch_size", batch_size)
    n = G.shape[0]
    Gc = G - G.mean(0, keepdim=True)
    sq = (Gc * Gc).sum(1)  # ‖η_i‖²
    m4 = float((sq**2).mean())
    trD = float(sq.mean())
    if G.shape[1] <= n:
        D = Gc.T @ Gc / n
        frob2 = float((D * D).sum())
    else:
        K = Gc @ Gc.T / n
        frob2 = float((K * K).sum())
    e4 = (m4 + (b - 1) * (trD**2 + 2 * frob2)) / b**3
    c2 = frob2 / b**2
    return math.sqrt(max(e4 - c2, 0.0) / c2)


def lemma1_error_study(
    G: torch.Tensor,
    batch_size: int,
    sample_counts: Sequence[int],
    *,
    num_repeats: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Relative Frobenius error ‖Ĉ_S − C‖_F/‖C‖_F of the Monte Carlo covariance of g_B
    against Lemma 1 (``C`` from :func:`sgdnoise.covariance.minibatch_covariance`), for
    both sampling schemes, each S and each repeat.

    Each repeat draws ``max(sample_counts)`` batches once (row gathers, O(S·B·P)) and
    evaluates the unbiased sample covariance (sample mean, divisor S − 1) on the nested
    prefixes of length S, accumulating first and second moments (O(S·P²) per repeat).
    Long format: scheme, samples, repeat, rel_error, predicted (the leading-order error
    :func:`predicted_covariance_error`/√S, with replacement only; NaN otherwise)."""
    from sgdnoise.covariance import minibatch_covariance

    check_matrix("G", G)
    n, P = G.shape
    b = check_positive_int("batch_size", batch_size)
    counts = sorted({check_positive_int("sample_counts[]", s) for s in sample_counts})
    if counts[0] < 2:
        raise ValueError(f"sample_counts must all be >= 2, got {list(sample_counts)}")
    reps = check_positive_int("num_repeats", num_repeats)
    pred = predicted_covariance_error(G, b)
    Gc = G - G.mean(0, keepdim=True)
    rows = []
    for k, replacement in enumerate((True, False)):
        C = minibatch_covariance(G, b, replacement=replacement)
        c_fro = float(torch.linalg.matrix_norm(C))
        if c_fro == 0:
            raise ValueError("the closed-form covariance is zero; a relative error is undefined")
        scheme = "with replacement" if replacement else "without replacement"
        gen = torch.Generator().manual_seed(seed + 1000 * k)
        for r in range(reps):
            idx = batch_indices(n, b, counts[-1], replacement, gen)
            M2 = torch.zeros(P, P, dtype=G.dtype)
            M1 = torch.zeros(P, dtype=G.dtype)
            done = 0
            for s in counts:
                xi = Gc[idx[done:s]].mean(1)  # (s - done, P) noise samples
                M2 += xi.T @ xi
                M1 += xi.sum(0)
                done = s
                m = M1 / s
                est = (M2 - s * torch.outer(m, m)) / (s - 1)
                rows.append({
                    "scheme": scheme,
                    "samples": s,
                    "repeat": r,
                    "rel_error": float(torch.linalg.matrix_norm(est - C)) / c_fro,
                    "predicted": pred / math.sqrt(s) if replacement else float("nan"),
                })
    return pd.DataFrame(rows)


def error_summary(err: pd.DataFrame) -> pd.DataFrame:
    """Per scheme and S, from :func:`lemma1_error_study` output ``err``: the mean relative
    error over repeats (``mean_rel_error``), the leading-order prediction (``predicted``,
    with replacement only) and their ratio (``ratio``; NaN without replacement)."""
    out = (err.groupby(["scheme", "samples"])
           .agg(mean_rel_error=("rel_error", "mean"), predicted=("predicted", "first"))
           .reset_index())
    return out.assign(ratio=out.mean_rel_error / out.predicted)


def trace_vs_batch_study(
    G: torch.Tensor,
    batch_sizes: Sequence[int],
    *,
    num_samples: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Monte Carlo ``tr Cov(g_B) = E‖g_B − ḡ‖²`` against Lemma 1 for each B and both schemes.

    Columns: scheme, batch_size, mc_trace (mean of ‖g_B − ḡ‖²), mc_se (its standard error),
    formula (Lemma 1 trace), fpc ((N−B)/(N−1) for "without", 1 for "with"), z
    ((mc − formula)/se, NaN when se = 0), bias_ratio (S‖mean(g_B) − ḡ‖²/tr C, expectation 1
    if g_B is unbiased; NaN when tr C = 0), ratio_to_iid (mc_trace / (tr D/B): 1 with
    replacement, the finite-population correction without)."""
    from sgdnoise.covariance import minibatch_trace

    check_matrix("G", G)
    n = G.shape[0]
    s = check_positive_int("num_samples", num_samples)
    trD = minibatch_trace(G, 1)
    rows = []
    for k, replacement in enumerate((True, False)):
        for j, b in enumerate(batch_sizes):
            b = check_positive_int("batch_sizes[]", b)
            if not replacement and b > n:
                continue
            norms, total = minibatch_noise_sq_norms(
                G, b, s, replacement=replacement, seed=seed + 7919 * k + 31 * j
            )
            formula = minibatch_trace(G, b, replacement=replacement)
            mc = float(norms.mean())
            se = float(norms.std() / math.sqrt(s))
            mean_err2 = float((total / s) @ (total / s))
            rows.append({
                "scheme": "with replacement" if replacement else "without replacement",
                "batch_size": b,
                "mc_trace": mc,
                "mc_se": se,
                "formula": formula,
                "fpc": 1.0 if replacement else (n - b) / (n - 1),
                "z": (mc - formula) / se if formula > 0 and se > 0 else float("nan"),
                "bias_ratio": s * mean_err2 / formula if formula > 0 else float("nan"),
                "ratio_to_iid": mc / (trD / b) if trD > 0 else float("nan"),
            })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdicts


def _slope_text(fit: dict[str, float]) -> str:
    """A fitted slope with its 95% interval (± 1.96 standard errors), ``'−1.004 [−1.010,
    −0.998]'``."""
    half = 1.96 * fit["slope_se"]
    return interval(fit["slope"], fit["slope"] - half, fit["slope"] + half, 4)


def unbiasedness_verdict(tv: pd.DataFrame, *, bias_ratio_max: float, scale: str) -> Verdict:
    """Is ``g_B`` unbiased? ``tv`` from :func:`trace_vs_batch_study`. The bias ratio
    ``S‖mean(g_B) − ḡ‖²/tr C`` has expectation 1 for an unbiased estimate and grows like S
    for a biased one: "supported" when its mean over batch sizes and schemes is at most
    ``bias_ratio_max``, else "contradicted" (NaN: "inconclusive")."""
    mean_bias = float(tv.bias_ratio.mean())
    claim = "The mini-batch gradient is an unbiased estimate of the full gradient."
    if not math.isfinite(mean_bias):
        return Verdict(claim, "inconclusive", "No bias ratio could be computed.", scale,
                       SECTION_TRACE, kind=DERIVATION)
    ok = mean_bias <= bias_ratio_max
    sentence = (f"Mean bias ratio {mean_bias:.2f} over {int(tv.bias_ratio.notna().sum())} "
                f"batch sizes and schemes (expectation 1 if unbiased; threshold "
                f"{bias_ratio_max:g}): "
                + ("consistent with an unbiased estimate." if ok else
                   "too large for an unbiased estimate."))
    return Verdict(claim, "supported" if ok else "contradicted", sentence, scale, SECTION_TRACE,
                   kind=DERIVATION)


def trace_verdict(
    tv: pd.DataFrame, slope: dict[str, float], *, z_max: float, slope_tolerance: float,
    scale: str,
) -> Verdict:
    """Lemma 1 in trace form. ``tv`` from :func:`trace_vs_batch_study`, ``slope`` the
    :func:`sgdnoise.stats.loglog_fit` of the with-replacement Monte Carlo trace against B.
    "supported" when every finite ``|z| < z_max`` and ``|slope + 1| <= slope_tolerance``;
    "contradicted" when both fail; "mixed" otherwise. The sentence also reports the Monte
    Carlo trace at B = N without replacement (Lemma 1: exactly 0) if that row exists."""
    z = tv.z.abs()
    max_z = float(z.max())
    z_ok = bool(z.dropna().lt(z_max).all()) and z.notna().any()
    s_ok = abs(slope["slope"] + 1.0) <= slope_tolerance
    at_N = tv[(tv.scheme == "without replacement") & (tv.formula == 0)]
    sentence = (f"Fitted log-log slope of the Monte Carlo trace (with replacement): "
                f"**{_slope_text(slope)}** (Lemma 1: −1; tolerance "
                f"±{slope_tolerance:g}). Largest $\\lvert z \\rvert$ over {len(tv)} batch "
                f"sizes and schemes: **{max_z:.2f}** ("
                + ("consistent with sampling noise" if z_ok else
                   "larger than sampling noise explains")
                + f", threshold {z_max:g}).")
    if len(at_N):
        zero = float(at_N.mc_trace.iloc[0])
        vanish = zero <= 1e-12 * max(float(tv.formula.max()), 1e-300)
        sentence += (f" At B = N = {int(at_N.batch_size.iloc[0])} without replacement the "
                     f"Monte Carlo trace is {zero:.1e}: "
                     + ("the noise vanishes, as the correction predicts." if vanish
                        else "the noise does not vanish."))
        z_ok = z_ok and vanish
    outcome = ("supported" if z_ok and s_ok else "contradicted" if not (z_ok or s_ok)
               else "mixed")
    return Verdict(r"Lemma 1: $\operatorname{tr}\operatorname{Cov}(g_{\mathcal{B}}) = "
                   r"\operatorname{tr} D / B$ with replacement, times $(N-B)/(N-1)$ without.",
                   outcome, sentence, scale, SECTION_TRACE, kind=DERIVATION)


def convergence_verdict(
    fits: dict[str, dict[str, float]], error_ratio: Sequence[float], *,
    slope_tolerance: float, error_ratio_tolerance: float, scale: str,
) -> Verdict:
    """Lemma 1 as a matrix: does the Monte Carlo covariance converge to the closed form as
    pure sampling error? ``fits``: {"with replacement", "without replacement"} →
    :func:`sgdnoise.stats.loglog_fit` of the relative error against S; ``error_ratio``:
    mean error / predicted error (with replacement) at each S. "supported" when both
    slopes are within ``slope_tolerance`` of −1/2 and every ratio within
    ``error_ratio_tolerance`` of 1; "contradicted" when neither holds; else "mixed"."""
    w, wo = fits["with replacement"], fits["without replacement"]
    ratio = np.asarray(error_ratio, dtype=float)
    slopes_ok = all(abs(f["slope"] + 0.5) <= slope_tolerance for f in (w, wo))
    ratio_ok = bool(np.all(np.abs(ratio - 1) <= error_ratio_tolerance))
    sentence = (f"Fitted slopes of the log error against $\\log S$: **{_slope_text(w)}** "
                f"(with replacement), **{_slope_text(wo)}** (without); theory −0.5 (tolerance "
                f"±{slope_tolerance:g}). Mean error / predicted error (with replacement) "
                f"ranges over [{ratio.min():.2f}, {ratio.max():.2f}] (tolerance "
                f"±{error_ratio_tolerance:g} around 1)"
                + (" — the closed forms agree with Monte Carlo to within sampling error."
                   if slopes_ok and ratio_ok else
                   " — the errors do not follow pure sampling noise; see the table above."))
    outcome = ("supported" if slopes_ok and ratio_ok else
               "contradicted" if not (slopes_ok or ratio_ok) else "mixed")
    return Verdict(r"Lemma 1: $\operatorname{Cov}(g_{\mathcal{B}}) = D/B$ (with replacement) "
                   r"and $D/B \cdot (N-B)/(N-1)$ (without), as full matrices.",
                   outcome, sentence, scale, SECTION_MATRIX, kind=DERIVATION)


# --------------------------------------------------------------------------- the essay's factor


def essay_factor_check(G: torch.Tensor, n: int, batch_size: int) -> dict[str, float]:
    """The covariance of ``g_B`` without replacement by exact enumeration of all
    ``C(n, B)`` batches of the first ``n`` rows of ``G: (N, P)`` (a data set of ``n``
    examples, its own mean ``ḡ`` and ``D = G̃ᵀG̃/n``), against three closed forms:

    - ``ours = D (n − B) / (B (n − 1))`` (Lemma 1 without replacement);
    - ``essay = (1/B − 1/n) D`` (the essay's factor with this ``D``), smaller than ``ours``
      by ``(n − 1)/n``;
    - ``essay_unbiased = (1/B − 1/n) D'`` with ``D' = G̃ᵀG̃/(n − 1)``, the sample covariance
      with divisor ``n − 1``, which equals ``ours``.

    Returns n, batch_size, batches (``C(n, B)``), rel_err_ours, rel_err_essay,
    rel_err_essay_unbiased (``‖C − form‖_F / ‖C‖_F``), trace_ratio (``tr C / tr essay``)
    and predicted_ratio (``n / (n − 1)``)."""
    check_matrix("G", G)
    n = check_positive_int("n", n)
    b = check_positive_int("batch_size", batch_size)
    if not 1 < b < n <= G.shape[0] or math.comb(n, b) > 200_000:
        raise ValueError(f"need 1 < batch_size < n <= N={G.shape[0]} and C(n, B) <= "
                         f"200,000, got n={n}, batch_size={b}")
    Gc = G[:n] - G[:n].mean(0, keepdim=True)
    idx = torch.tensor(list(itertools.combinations(range(n), b)))
    xi = Gc[idx].mean(1)  # (C(n, B), P): every batch's noise
    C = xi.T @ xi / idx.shape[0]
    S = Gc.T @ Gc
    forms = {"ours": S / n * (n - b) / (b * (n - 1)), "essay": S / n * (1 / b - 1 / n),
             "essay_unbiased": S / (n - 1) * (1 / b - 1 / n)}
    fro = float(torch.linalg.matrix_norm(C))
    out: dict[str, float] = {"n": n, "batch_size": b, "batches": int(idx.shape[0])}
    for name, M in forms.items():
        out[f"rel_err_{name}"] = float(torch.linalg.matrix_norm(C - M)) / fro
    out["trace_ratio"] = float(torch.trace(C) / torch.trace(forms["essay"]))
    out["predicted_ratio"] = n / (n - 1)
    return out


def essay_factor_verdict(chk: dict[str, float], *, n_train: int, mc_rel_se: Sequence[float],
                         tolerance: float = 1e-9, scale: str) -> Verdict:
    """Derivation check of the reconciliation, ``chk`` from :func:`essay_factor_check`:
    "supported" when the enumeration matches ``ours`` and ``essay_unbiased`` within
    ``tolerance`` (rounding) and ``tr C / tr essay`` equals ``n/(n − 1)`` within it, else
    "contradicted". The sentence also puts the difference at the book's ``N``,
    ``1/(N − 1)``, next to the relative standard errors ``mc_rel_se`` of the Monte Carlo
    traces."""
    n, b = int(chk["n"]), int(chk["batch_size"])
    ok = (chk["rel_err_ours"] <= tolerance and chk["rel_err_essay_unbiased"] <= tolerance
          and abs(chk["trace_ratio"] / chk["predicted_ratio"] - 1) <= tolerance)
    se = np.asarray(mc_rel_se, dtype=float)
    se = se[np.isfinite(se) & (se > 0)]
    diff = 1 / (n_train - 1)
    sentence = (f"All {int(chk['batches'])} batches of {b} out of the first {n} examples: the "
                f"exact covariance differs from $\\frac{{D}}{{B}}\\frac{{N-B}}{{N-1}}$ by "
                f"{chk['rel_err_ours']:.1e} and from the essay's $(\\frac1B - \\frac1N) D$ by "
                f"{chk['rel_err_essay']:.3f} (relative Frobenius norm); its trace is "
                f"{chk['trace_ratio']:.4f} times the essay's, and $N/(N-1)$ = "
                f"{chk['predicted_ratio']:.4f}. With $D$ normalised by $N - 1$ the essay's "
                f"form is off by {chk['rel_err_essay_unbiased']:.1e}. "
                + ("Both forms agree with the enumeration once $D$ is defined consistently "
                   f"(tolerance {tolerance:g}). " if ok else
                   f"The enumeration does not match (tolerance {tolerance:g}). ")
                + f"At N = {n_train:,} the two factors differ by {diff:.2%} at every B")
    if se.size:
        sentence += (f", while the Monte Carlo traces of check 1 have relative standard "
                     f"errors of {se.min():.1%} to {se.max():.1%}: sampling at this size "
                     f"cannot tell them apart, exact enumeration can.")
    else:
        sentence += "."
    return Verdict("The essay's factor $1/B - 1/N$ is the exact covariance without "
                   "replacement when $D$ is the sample covariance with divisor $N - 1$; "
                   "with divisor $N$ (as here) the exact factor is $N/(N-1)$ times larger.",
                   "supported" if ok else "contradicted", sentence, scale, SECTION_ESSAY,
                   kind=DERIVATION)


# --------------------------------------------------------------------------- one epoch


def _epoch_noise(Gc: torch.Tensor, b: int, epochs: int, gen: torch.Generator
                 ) -> torch.Tensor:
    """``(epochs, K, P)``: the noises of the ``K = ⌊N/B⌋`` consecutive batches of a fresh
    random permutation per epoch (the last ``N mod B`` examples dropped)."""
    n = Gc.shape[0]
    k = n // b
    perm = torch.rand((epochs, n), generator=gen).argsort(dim=1)[:, : k * b]
    return Gc[perm].reshape(epochs, k, b, -1).mean(2)


def epoch_noise_study(G: torch.Tensor, batch_sizes: Sequence[int], num_epochs: int, *,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The noises ``ξ_k = g_{B_k} − ḡ`` of the batches of one epoch of epoch-wise
    reshuffling at a fixed θ (``G: (N, P)``), over ``num_epochs`` random permutations.

    Any two distinct batches of one permutation satisfy ``E[ξ_k ξ_jᵀ] = −D/(N − 1)``,
    so ``corr = E[ξ_kᵀ ξ_{k+1}] / E‖ξ_k‖² = −B/(N − B)``, and the sum of the first ``m``
    noises has ``E‖Σ_{k≤m} ξ_k‖² = m tr D (N − mB) / (B (N − 1))`` (``m`` independent
    batches: ``m tr D (N − B) / (B (N − 1))``).

    Returns ``(corr, cumulative)``: corr has one row per B (batch_size, steps = ⌊N/B⌋,
    mc = mean of ``ξ_kᵀξ_{k+1}`` over successive pairs divided by the exact ``E‖ξ‖²``, se,
    predicted, z); cumulative one row per (B, m) (batch_size, m, fraction = mB/N, mc =
    mean ``‖Σ_{k≤m} ξ_k‖²`` divided by ``tr D / B``, se, predicted = ``m (N − mB)/(N −
    1)``, independent = ``m (N − B)/(N − 1)``, z; NaN where the prediction is exactly 0,
    at ``mB = N``, which :func:`epoch_verdict` checks against rounding instead)."""
    check_matrix("G", G)
    n = G.shape[0]
    epochs = check_positive_int("num_epochs", num_epochs)
    Gc = G - G.mean(0, keepdim=True)
    tr_d = float((Gc * Gc).sum()) / n
    if tr_d == 0:
        raise ValueError("G has no spread (tr D = 0): the noise is zero")
    gen = torch.Generator().manual_seed(seed)
    corr_rows, cum_rows = [], []
    for b in batch_sizes:
        b = check_positive_int("batch_sizes[]", b)
        if 2 * b > n:
            raise ValueError(f"batch size {b} leaves fewer than two batches of N={n}")
        chunk = max(1, min(epochs, 2**24 // (n * G.shape[1])))
        pairs, cums = [], []
        for start in range(0, epochs, chunk):
            xi = _epoch_noise(Gc, b, min(chunk, epochs - start), gen)
            pairs.append((xi[:, :-1] * xi[:, 1:]).sum(-1).mean(1))
            cums.append((xi.cumsum(1) ** 2).sum(-1))
        var = tr_d * (n - b) / (b * (n - 1))
        c = torch.cat(pairs) / var
        mc, se = float(c.mean()), float(c.std() / math.sqrt(epochs))
        pred = -b / (n - b)
        corr_rows.append({"batch_size": b, "steps": n // b, "mc": mc, "se": se,
                          "predicted": pred, "z": (mc - pred) / se if se > 0 else math.nan})
        cum = torch.cat(cums) / (tr_d / b)  # (epochs, K)
        for m in range(1, n // b + 1):
            v = cum[:, m - 1]
            pred_m = m * (n - m * b) / (n - 1)
            se_m = float(v.std() / math.sqrt(epochs))
            cum_rows.append({"batch_size": b, "m": m, "fraction": m * b / n,
                             "mc": float(v.mean()), "se": se_m, "predicted": pred_m,
                             "independent": m * (n - b) / (n - 1),
                             "z": (float(v.mean()) - pred_m) / se_m
                             if se_m > 0 and pred_m > 0 else math.nan})
    return pd.DataFrame(corr_rows), pd.DataFrame(cum_rows)


def epoch_verdict(corr: pd.DataFrame, cumulative: pd.DataFrame, *, z_max: float,
                  scale: str, rounding: float = 1e-9) -> Verdict:
    """Derivation check of the within-epoch closed forms, ``corr`` and ``cumulative`` from
    :func:`epoch_noise_study`: "supported" when every finite ``|z|`` is below ``z_max`` and
    every epoch sum predicted to be 0 is below ``rounding`` times the independent-batches
    value, else "contradicted"."""
    z = pd.concat([corr.z, cumulative.z]).abs().dropna()
    zero = cumulative[cumulative.predicted == 0]
    vanish = bool((zero.mc <= rounding * zero.independent).all())
    ok = bool(len(z)) and bool((z < z_max).all()) and vanish
    listing = ", ".join(f"{interval(r.mc, r.mc - 1.96 * r.se, r.mc + 1.96 * r.se)} at B = "
                        f"{int(r.batch_size)} (closed form {number(r.predicted)})"
                        for r in corr.itertuples())
    sentence = (f"Correlation of the noises of successive batches of one epoch, Monte Carlo "
                f"over reshuffled epochs (95% intervals): {listing}. Largest "
                f"$\\lvert z \\rvert$ over {len(z)} correlations and partial sums: "
                f"{z.max():.2f} (threshold {z_max:g}).")
    if len(zero):
        sentence += (" Where $B$ divides $N$, the noise summed over the whole epoch is "
                     + (f"zero to rounding (at most {(zero.mc / zero.independent).max():.0e} "
                        "of what independent batches add up to)." if vanish else
                        "not zero."))
    sentence += (" The closed forms hold." if ok else " The closed forms do not hold.")
    return Verdict(r"Within one epoch of reshuffling, the noises of two batches have "
                   r"covariance $-D/(N-1)$ (correlation $-B/(N-B)$), and their sum over an "
                   r"epoch of $N/B$ batches is zero.",
                   "supported" if ok else "contradicted", sentence, scale, SECTION_EPOCH,
                   kind=DERIVATION)


# --------------------------------------------------------------------------- SGD runs


class _NoiseRecorder(PlainSGD):
    """Plain SGD that records, before each step, the mini-batch noise
    ``ξ_k = g_B(θ_k) − ḡ(θ_k)``: the batch gradient the engine left in ``.grad`` minus the
    full-data gradient at the same θ (:func:`torch.autograd.grad`, leaving ``.grad``
    untouched). The engine calls ``observe_batch`` between the backward pass and
    ``step``."""

    def __init__(self, model: torch.nn.Module, lr: float, x: torch.Tensor,
                 y: torch.Tensor) -> None:
        super().__init__(model.parameters(), lr)
        self.model, self.x, self.y = model, x, y
        self.noise: list[torch.Tensor] = []

    def observe_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        params = self.param_groups[0]["params"]
        g_batch = torch.cat([p.grad.reshape(-1) for p in params])
        loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        g_full = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        self.noise.append((g_batch - g_full).detach().clone())


def _pair_correlation(xi: torch.Tensor, first: torch.Tensor) -> float:
    """``Σ ξ_kᵀξ_{k+1} / Σ (‖ξ_k‖² + ‖ξ_{k+1}‖²)/2`` over the pairs ``k`` where ``first``
    is True (``xi: (T, P)``, ``first: (T − 1,)`` bool); NaN without a pair."""
    inner = (xi[:-1] * xi[1:]).sum(1)
    sq = (xi * xi).sum(1)
    norm = (sq[:-1] + sq[1:]) / 2
    if not bool(first.any()):
        return math.nan
    return float(inner[first].sum() / norm[first].sum())


def _recorded_run(problem: SmallProblem, model: str, seed: int, *, lr: float, batch_size: int,
                  epochs: int) -> tuple[torch.Tensor, str, float]:
    """One SGD run of :func:`trajectory_noise_study`: the noises ``(T, P)``, the run's
    status and its final train loss."""
    net = build_small_model(model, problem.in_shape, seed=seed)
    recorder: list[_NoiseRecorder] = []

    def make(m: torch.nn.Module, rate: float) -> _NoiseRecorder:
        recorder.append(_NoiseRecorder(m, rate, problem.x, problem.y))
        return recorder[-1]

    res = plain_sgd(net, problem.x, problem.y, lr=lr, batch_size=batch_size, seed=seed,
                    epochs=epochs, optimizer=make)
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(net(problem.x), problem.y))
    return torch.stack(recorder[0].noise), res.status, loss


def trajectory_noise_study(problem: SmallProblem, *, seeds: int, epochs: int, lr: float,
                           batch_size: int, model: str = "softmax") -> pd.DataFrame:
    """SGD runs with epoch-wise reshuffling (:func:`plain_sgd`, the remainder of each
    permutation dropped), one per seed ``0 … seeds − 1`` (initialisation and batch order),
    ``epochs`` epochs each, recording the noise ``ξ_k`` of every step at its own θ_k.

    Per seed: ``within`` = the correlation of successive noises inside an epoch,
    ``Σ ξ_kᵀξ_{k+1} / Σ (‖ξ_k‖² + ‖ξ_{k+1}‖²)/2`` over those pairs; ``across`` = the same
    over the pairs that straddle two epochs (independent permutations: 0 at a fixed θ);
    ``predicted = −B/(N − B)``; steps; final train loss. One row per seed."""
    b = check_positive_int("batch_size", batch_size)
    n = problem.n
    k = n // b
    if k < 2:
        raise ValueError(f"batch_size={b} leaves fewer than two batches of N={n}")
    epochs = check_positive_int("epochs", epochs)
    rows = []
    for sd in range(check_positive_int("seeds", seeds)):
        xi, status, loss = _recorded_run(problem, model, sd, lr=lr, batch_size=b,
                                         epochs=epochs)
        same = (torch.arange(xi.shape[0] - 1) % k) != k - 1
        rows.append({"seed": sd, "steps": int(xi.shape[0]),
                     "within": _pair_correlation(xi, same),
                     "across": _pair_correlation(xi, ~same), "predicted": -b / (n - b),
                     "final_loss": loss, "status": status})
    return pd.DataFrame(rows)


def reshuffling_claim(batch_size: int, n_train: int) -> list[Condition]:
    """The claim's condition: the mean within-epoch correlation is below half the fixed-θ
    value ``−B/(N − B)`` (at least half as strong)."""
    return [Condition(0, "below", -0.5 * batch_size / (n_train - batch_size))]


def reshuffling_rates(traj: pd.DataFrame, *, batch_size: int, n_train: int, alpha: float,
                      n_sim: int, seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`reshuffling_verdict`'s rule (:func:`claim_rates`) with the
    seed-to-seed standard deviation of ``traj.within``: power at the fixed-θ correlation
    ``−B/(N − B)``, false positives at half of it and at 0 (independent noises, the SDE's
    picture). None with fewer than two finite seeds or no spread."""
    sd, df = pooled_seed_sd(traj.within.to_numpy(float)[None, :])
    if not (math.isfinite(sd) and sd > 0):
        return None
    pred = -batch_size / (n_train - batch_size)
    return claim_rates(reshuffling_claim(batch_size, n_train), effect=[pred], sd=sd,
                       n_seeds=int(traj.within.notna().sum()), alpha=alpha, opposite=[0.0],
                       df=df, n_sim=n_sim, seed=seed, quantity="correlation",
                       describe=f"a true correlation of {pred:.3f} (the fixed-$\\theta$ value), "
                                "false positives at half of it and at 0")


def reshuffling_verdict(traj: pd.DataFrame, *, batch_size: int, n_train: int, alpha: float,
                        scale: str, rates: ClaimRates | None = None) -> Verdict:
    """Claim about SGD, ``traj`` from :func:`trajectory_noise_study`: along SGD runs with
    reshuffling, successive noises within an epoch are negatively correlated at least
    half as strongly as the fixed-θ value ``ρ* = −B/(N − B)``. Rule
    (:func:`claim_outcomes`): a one-sided t-test across seeds of the mean ``within``
    against ``ρ*/2`` at level ``alpha``: "supported" when it is below, "contradicted" when
    above, else "inconclusive". ``rates`` (:func:`reshuffling_rates`) adds the error
    rates."""
    conds = reshuffling_claim(batch_size, n_train)
    x = traj.within.to_numpy(float)[None, :]
    outcome = str(claim_outcomes(x, conds, alpha)[0])
    p_hold, p_fail = condition_pvalues(x, conds)
    v = traj.within.dropna()
    pred = -batch_size / (n_train - batch_size)
    ci = t_interval(v, 1 - 2 * alpha)
    across = t_interval(traj.across.dropna(), 1 - 2 * alpha)
    sentence = (f"Over {len(v)} SGD runs of {int(traj.steps.iloc[0])} steps (B = "
                f"{batch_size}, N = {n_train:,}) the correlation of successive noises "
                f"within an epoch is {ci.format(3)} ({1 - 2 * alpha:.0%} interval across "
                f"runs), against {pred:.3f} at a fixed $\\theta$; across the boundary "
                f"between two epochs it is {across.format(3)} (0 at a fixed $\\theta$). "
                f"Rule: one-sided t-tests across runs at level {alpha:g} against half the "
                f"fixed-$\\theta$ value, "
                f"{pred / 2:.3f} (p = {p_hold[0, 0]:.2g} for stronger, {p_fail[0, 0]:.2g} for "
                f"weaker): "
                + {"supported": "SGD's successive noises are negatively correlated, as at a "
                                "fixed $\\theta$.",
                   "contradicted": "the correlation along SGD runs is weaker than half the "
                                   "fixed-θ value.",
                   "inconclusive": "the runs cannot tell."}[outcome])
    verdict = Verdict(r"Along SGD runs that reshuffle the data every epoch, the noises of "
                      r"successive mini-batches are negatively correlated, at least half as "
                      r"strongly as the fixed-$\theta$ value $-B/(N-B)$, not independent as "
                      r"the stochastic differential equation of chapter 6 assumes.",
                      outcome, sentence, scale, SECTION_EPOCH, kind=CLAIM)
    if rates is not None:
        verdict = verdict.with_rates(rates)
    return verdict


# --------------------------------------------------------------------------- tables


def trace_table(tv: pd.DataFrame, *, confidence_z: float = 1.96) -> pd.DataFrame:
    """:func:`trace_vs_batch_study` output as a table of text cells with headers in words:
    the Monte Carlo trace as ``'est [low, high]'`` (± ``confidence_z`` standard errors; a
    trace below 1e-12 of the largest closed-form trace reads ``'0 (rounding)'``), the
    closed form, the finite-population correction, ``z``, the bias ratio and the ratio to
    ``tr D / B`` (``'–'`` where undefined)."""
    scale = max(float(tv.formula.max()), 1e-300)
    rows = []
    for r in tv.itertuples():
        zero = r.mc_trace <= 1e-12 * scale
        half = confidence_z * r.mc_se
        rows.append({
            "sampling": r.scheme, "B": f"{int(r.batch_size):,}",
            "trace, Monte Carlo (95% interval)": "0 (rounding)" if zero else
            interval(r.mc_trace, r.mc_trace - half, r.mc_trace + half),
            "trace, Lemma 1": number(r.formula),
            "correction (N − B)/(N − 1)": number(r.fpc, 4),
            "z": fixed(r.z), "bias ratio": fixed(r.bias_ratio),
            "Monte Carlo / (tr D / B)": "0 (rounding)" if zero else number(r.ratio_to_iid, 4),
        })
    return pd.DataFrame(rows)


def epoch_table(corr: pd.DataFrame) -> pd.DataFrame:
    """:func:`epoch_noise_study`'s correlations as text cells: B, batches per epoch, the
    Monte Carlo correlation ``'est [low, high]'`` (± 1.96 standard errors), the closed form
    ``−B/(N − B)`` and ``z``."""
    return pd.DataFrame([{
        "B": f"{int(r.batch_size):,}", "batches per epoch": f"{int(r.steps):,}",
        "correlation, Monte Carlo (95% interval)": interval(r.mc, r.mc - 1.96 * r.se,
                                                            r.mc + 1.96 * r.se),
        "closed form −B/(N − B)": number(r.predicted), "z": fixed(r.z),
    } for r in corr.itertuples()])


def trajectory_table(traj: pd.DataFrame) -> pd.DataFrame:
    """:func:`trajectory_noise_study` as text cells, one row per SGD run."""
    return pd.DataFrame([{
        "run (seed)": str(int(r.seed)), "steps": f"{int(r.steps):,}",
        "correlation within an epoch": number(r.within),
        "correlation across two epochs": number(r.across),
        "fixed-θ value −B/(N − B)": number(r.predicted),
        "final train loss (nats)": number(r.final_loss, 4),
    } for r in traj.itertuples()])


def error_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`error_summary` as text cells, one row per number of samples ``S``: the mean
    relative error of each scheme and the prediction with replacement."""
    wide = summary.pivot(index="samples", columns="scheme", values="mean_rel_error")
    pred = summary[summary.scheme == "with replacement"].set_index("samples").predicted
    return pd.DataFrame([{
        "samples S": f"{int(s):,}",
        "mean relative error, with replacement": number(wide.loc[s, "with replacement"]),
        "predicted, with replacement": number(pred.loc[s]),
        "mean relative error, without replacement": number(wide.loc[s,
                                                                "without replacement"]),
    } for s in wide.index])
