"""Chapter 1 (Mini-batch gradients and Lemma 1): Monte Carlo checks of the unbiasedness of
``g_B`` and of Lemma 1, ``Cov(g_B) = c·D`` with ``c = 1/B`` (with replacement) or
``(N − B)/(B(N − 1))`` (without), and the verdicts the chapter draws from them.

Notation: ``G: (N, P)`` per-example gradients (rows g_i), ``ḡ`` their mean, centred rows
``G̃ = G − 1ḡᵀ``, ``D = G̃ᵀG̃/N``; ``ξ = g_B − ḡ`` the mini-batch noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sgdnoise.chapters.small_problems import batch_indices
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.validate import check_matrix, check_positive_int

__all__ = [
    "Params",
    "convergence_verdict",
    "error_summary",
    "lemma1_error_study",
    "minibatch_noise_sq_norms",
    "predicted_covariance_error",
    "trace_vs_batch_study",
    "trace_verdict",
    "unbiasedness_verdict",
]

SECTION_TRACE = "sec-ch1-trace"
SECTION_MATRIX = "sec-ch1-matrix"


@dataclass(frozen=True)
class Params(ChapterParams):
    """Parameters of chapter 1 (values: the notebook's parameters cell and
    ``book/params/ch01_lemma1/{smoke,default,full}.yaml``)."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="image source")
    n_train: int = param(low=20, high=50000, doc="training examples N")
    image_size: int = param(choices=(1, 2, 4, 8, 16, 32), doc="pooled image side (pixels)")
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

    def check(self) -> None:
        for name in ("train_batch_size", "mc_batch_size"):
            self.require(getattr(self, name) <= self.n_train, name,
                         f"must be <= n_train={self.n_train}")
        self.require(max(self.trace_batch_sizes) <= self.n_train, "trace_batch_sizes",
                     f"every batch size must be <= n_train={self.n_train}")


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


def unbiasedness_verdict(tv: pd.DataFrame, *, bias_ratio_max: float, scale: str) -> Verdict:
    """Is ``g_B`` unbiased? ``tv`` from :func:`trace_vs_batch_study`. The bias ratio
    ``S‖mean(g_B) − ḡ‖²/tr C`` has expectation 1 for an unbiased estimate and grows like S
    for a biased one: "supported" when its mean over batch sizes and schemes is at most
    ``bias_ratio_max``, else "contradicted" (NaN: "inconclusive")."""
    mean_bias = float(tv.bias_ratio.mean())
    claim = "The mini-batch gradient is an unbiased estimate of the full gradient."
    if not math.isfinite(mean_bias):
        return Verdict(claim, "inconclusive", "No bias ratio could be computed.", scale,
                       SECTION_TRACE)
    ok = mean_bias <= bias_ratio_max
    sentence = (f"Mean bias ratio {mean_bias:.2f} over {int(tv.bias_ratio.notna().sum())} "
                f"batch sizes and schemes (expectation 1 if unbiased; threshold "
                f"{bias_ratio_max:g}): "
                + ("consistent with an unbiased estimate." if ok else
                   "too large for an unbiased estimate."))
    return Verdict(claim, "supported" if ok else "contradicted", sentence, scale, SECTION_TRACE)


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
                f"**{slope['slope']:.3f} ± {slope['slope_se']:.3f}** (Lemma 1: −1; tolerance "
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
                   outcome, sentence, scale, SECTION_TRACE)


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
    sentence = (f"Fitted slopes of the log error against $\\log S$: **{w['slope']:.3f} ± "
                f"{w['slope_se']:.3f}** (with replacement), **{wo['slope']:.3f} ± "
                f"{wo['slope_se']:.3f}** (without); theory −0.5 (tolerance "
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
                   outcome, sentence, scale, SECTION_MATRIX)
