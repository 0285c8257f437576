"""Chapter 2 (From covariance to Fisher to Hessian): the exact identities D = F̂ − ḡḡᵀ,
F = GGN (softmax cross-entropy), ∇²KL = F and the Fisher-Rao identity; the information
equality with model labels and data labels; the pairwise comparison of D, F̂, F, GGN and H
on trained models; and the verdicts the chapter draws from them.

Matrices are dense float64 ``(P, P)``; ``G: (N, P)`` per-example gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from sgdnoise.chapters.small_problems import (
    DT,
    SmallProblem,
    build_small_model,
    curvature_matrices,
    top_eigenpairs,
    train_small,
)
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.stats import Interval, loglog_fit, spearman_ci
from sgdnoise.validate import check_positive_int

__all__ = [
    "KEY_PAIRS",
    "Params",
    "compare_matrices",
    "covariance_hessian_verdict",
    "diagonal_power_law",
    "exact_identities",
    "fisher_rao_generalization_study",
    "fisher_rao_verdict",
    "fisher_hessian_study",
    "identities_verdict",
    "information_equality_study",
    "information_equality_verdicts",
    "information_sizes",
    "key_pairs",
    "power_law_verdict",
]

SECTION_IDENTITIES = "sec-ch2-identities"
SECTION_INFOEQ = "sec-ch2-infoeq"
SECTION_COMPARE = "sec-ch2-compare"
SECTION_DIAGONAL = "sec-ch2-diagonal"
SECTION_FR = "sec-ch2-fisher-rao"

#: The pairs the chapter discusses, in this order: (a, b) of :func:`compare_matrices`.
KEY_PAIRS = (("D", "F_hat"), ("F_hat", "F"), ("F", "GGN"), ("D", "H"), ("GGN", "H"))
# How a matrix named in the studies' tables is written in math; others (GGN) as named.
MATRIX_TEX = {"F_hat": r"\hat F", "D": "D", "F": "F", "H": "H"}


def matrix_math(name: str) -> str:
    r"""A matrix of the studies' tables in MyST inline math: ``"F_hat"`` → ``$\hat F$``,
    ``"D"`` → ``$D$``; a name without math (the GGN) stays as it is."""
    return f"${MATRIX_TEX[name]}$" if name in MATRIX_TEX else name


@dataclass(frozen=True)
class Params(ChapterParams):
    """Parameters of chapter 2 (values: the notebook's parameters cell and
    ``book/params/ch02_fisher_hessian/{smoke,default,full}.yaml``)."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="image source")
    n_train: int = param(low=20, high=50000, doc="training examples N")
    image_size: int = param(choices=(1, 2, 4, 8, 16, 32), doc="pooled image side (pixels)")
    seed: int = param(low=0, doc="seed of data subset, models, training and label draws")
    mlp_width: int = param(low=1, doc="hidden units of the MLP")
    cnn_width: int = param(low=1, doc="channels of the CNN's first block")
    train_steps: int = param(low=2, doc="SGD steps (the 'late' stage)")
    early_step: int = param(low=0, doc="the 'early' stage step")
    train_lr: float = param(low=1e-6, high=10.0, doc="SGD learning rate")
    train_batch_size: int = param(low=1, doc="SGD batch size")
    top_k: int = param(low=1, doc="eigenpairs compared")
    check_n: int = param(low=16, doc="examples used by the exact-identity checks")
    identity_tolerance: float = param(low=0.0, high=1e-2,
                                      doc="largest relative error read as rounding")
    gap_ratio: float = param(low=1.0, high=100.0,
                             doc="data/model distance ratio at the largest N read as a gap")
    gap_slope: float = param(low=-1.0, high=0.0,
                             doc="a data-label slope above this has stopped shrinking")
    slope_tolerance: float = param(low=0.0, high=1.0,
                                   doc="allowed |model-label slope + 1/2|")
    cosine_holds: float = param(low=0.0, high=1.0,
                                doc="cos(D, H) at or above which D ∝ H holds")
    cosine_fails: float = param(low=0.0, high=1.0,
                                doc="cos(D, H) below which D ∝ H fails")
    gamma_low: float = param(low=-10.0, high=10.0, doc="low end of the reported γ range")
    gamma_high: float = param(low=-10.0, high=10.0, doc="high end of the reported γ range")
    fr_n_test: int = param(low=10, high=10000, doc="test examples for the generalization gap")
    fr_widths: tuple[int, ...] = param(low=1, doc="MLP widths of the Fisher-Rao family")
    fr_batch_sizes: tuple[int, ...] = param(low=1, doc="SGD batch sizes of the family")
    fr_seeds: int = param(low=1, high=20, doc="seeds per (width, batch size)")
    fr_confidence: float = param(low=0.5, high=0.999,
                                 doc="confidence of the Spearman interval")

    def check(self) -> None:
        self.require(self.early_step < self.train_steps, "early_step",
                     f"must be < train_steps={self.train_steps}")
        self.require(self.check_n <= self.n_train, "check_n",
                     f"must be <= n_train={self.n_train}")
        self.require(self.train_batch_size <= self.n_train, "train_batch_size",
                     f"must be <= n_train={self.n_train}")
        self.require(self.cosine_fails <= self.cosine_holds, "cosine_fails",
                     f"must be <= cosine_holds={self.cosine_holds}")
        self.require(max(self.fr_batch_sizes) <= self.n_train, "fr_batch_sizes",
                     f"every batch size must be <= n_train={self.n_train}")
        self.require(len(self.fr_widths) * len(self.fr_batch_sizes) * self.fr_seeds >= 4,
                     "fr_seeds", "the family needs >= 4 models for a rank-correlation interval")
        self.require(self.gamma_low <= self.gamma_high, "gamma_low",
                     f"must be <= gamma_high={self.gamma_high}")


def exact_identities(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The exact identities on ``model`` at ``(x: (n, ...), y: (n,))``: ``kl_error`` =
    ‖∇²K − F‖_F/‖F‖_F (Hessian of the mean KL divergence against the true Fisher), the
    Fisher-Rao identity θᵀFθ = (L+1)² E⟨p − e_y, f⟩² with model labels (``fr_lhs``,
    ``fr_rhs``, ``fr_error``) and with the data labels, θᵀF̂θ (``fr_emp_lhs``,
    ``fr_emp_rhs``, ``fr_emp_error``), and the degree L + 1."""
    from sgdnoise.curvature import fisher_rao_identity, kl_hessian, true_fisher

    K = kl_hessian(model, x)
    F = true_fisher(model, x)
    kl_err = float(torch.linalg.matrix_norm(K - F) / torch.linalg.matrix_norm(F))
    fr = fisher_rao_identity(model, x)
    fr_emp = fisher_rao_identity(model, x, y, loss_fn=nn.functional.cross_entropy,
                                 kind="empirical")
    return {"kl_error": kl_err, "fr_lhs": fr.lhs, "fr_rhs": fr.rhs,
            "fr_error": fr.relative_error, "degree": fr.degree, "fr_emp_lhs": fr_emp.lhs,
            "fr_emp_rhs": fr_emp.rhs, "fr_emp_error": fr_emp.relative_error,
            "P": int(F.shape[0])}


def information_sizes(n_train: int) -> list[int]:
    """Nested subset sizes of the information-equality study: ``n_train/2^j``, j = 0..3,
    at least 8, ascending and distinct."""
    n_train = check_positive_int("n_train", n_train)
    return sorted({max(8, n_train // 2**j) for j in range(4)})


def key_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`compare_matrices`'s ``pairs`` that are in :data:`KEY_PAIRS`,
    with a column ``pair`` ("A vs B") and ``where`` ("model · stage") added."""
    keep = pairs.apply(lambda r: (r.a, r.b) in set(KEY_PAIRS), axis=1)
    key = pairs[keep]
    return key.assign(pair=key.a + " vs " + key.b, where=key.model + " · " + key.stage)


def compare_matrices(
    mats: dict[str, torch.Tensor], *, k: int = 10, reference: str = "H"
) -> dict[str, pd.DataFrame]:
    """Pairwise comparison of dense symmetric matrices.

    Returns {"pairs": DataFrame(a, b, rel_dist = ‖A − B‖_F/‖B‖_F, cosine =
    ⟨A, B⟩_F/(‖A‖_F‖B‖_F), scaled_dist = min_c ‖cA − B‖_F/‖B‖_F = √(1 − cos²) if cos > 0,
    overlap = top-k eigenspace overlap), "eigs": DataFrame(matrix, rank, eigenvalue),
    "summary": DataFrame(matrix, trace, fro, lambda_max, ratio_to_reference_trace)}."""
    from sgdnoise.spectral import top_eigenspace_overlap

    names = list(mats)
    eig = {m: top_eigenpairs(mats[m], k) for m in names}
    fro = {m: float(torch.linalg.matrix_norm(mats[m])) for m in names}
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            A, B = mats[a], mats[b]
            cos = float((A * B).sum()) / (fro[a] * fro[b]) if fro[a] * fro[b] > 0 else float("nan")
            pairs.append({
                "a": a,
                "b": b,
                "rel_dist": float(torch.linalg.matrix_norm(A - B)) / fro[b],
                "cosine": cos,
                "scaled_dist": math.sqrt(max(1 - cos**2, 0.0)) if cos > 0 else 1.0,
                "overlap": top_eigenspace_overlap(eig[a][1], eig[b][1]),
            })
    eigs = [
        {"matrix": m, "rank": r + 1, "eigenvalue": float(v)}
        for m in names
        for r, v in enumerate(eig[m][0])
    ]
    ref_tr = float(torch.trace(mats[reference])) if reference in mats else float("nan")
    summary = [
        {
            "matrix": m,
            "trace": float(torch.trace(mats[m])),
            "fro": fro[m],
            "lambda_max": float(eig[m][0][0]),
            "trace_ratio_to_" + reference: float(torch.trace(mats[m])) / ref_tr,
        }
        for m in names
    ]
    return {"pairs": pd.DataFrame(pairs), "eigs": pd.DataFrame(eigs),
            "summary": pd.DataFrame(summary)}


def diagonal_power_law(
    C_diag: torch.Tensor, H_diag: torch.Tensor, *, min_quantile: float = 0.0
) -> dict[str, float]:
    """Fit ``C_ii ∝ H_ii^γ`` by least squares on ``log C_ii = γ log H_ii + c`` over the
    entries where both are positive (and H_ii above its ``min_quantile`` quantile among the
    positive ones). Returns gamma, gamma_se, intercept, r2, n_used, n_total."""
    c = C_diag.detach().to(DT).reshape(-1)
    h = H_diag.detach().to(DT).reshape(-1)
    if c.shape != h.shape:
        raise ValueError(f"C_diag and H_diag must have the same length, got {c.shape}, {h.shape}")
    ok = (c > 0) & (h > 0)
    if min_quantile > 0 and bool(ok.any()):
        ok &= h >= torch.quantile(h[ok], min_quantile)
    if int(ok.sum()) < 3:
        raise ValueError(f"need >= 3 entries with C_ii, H_ii > 0, got {int(ok.sum())}")
    fit = loglog_fit(h[ok].numpy(), c[ok].numpy())
    return {
        "gamma": fit["slope"],
        "gamma_se": fit["slope_se"],
        "intercept": fit["intercept"],
        "r2": fit["r2"],
        "n_used": int(ok.sum()),
        "n_total": int(c.numel()),
    }


def fisher_hessian_study(
    problem: SmallProblem,
    models: Sequence[tuple[str, int]],
    *,
    steps: int,
    early_step: int,
    lr: float,
    batch_size: int,
    k: int = 10,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Train each ``(name, width)`` model of ``models`` (see :func:`build_small_model`) and,
    early (step ``early_step``) and late (step ``steps``), compare D, F̂, F, GGN and H with
    :func:`compare_matrices` and fit the diagonal power law ``D_ii ∝ H_ii^γ``.

    Returns DataFrames "pairs", "eigs", "summary", "power_law", "training" and
    "diagonals" (index, D_ii, H_ii), each with columns model, P and stage ("early" |
    "late") added."""
    out: dict[str, list[pd.DataFrame]] = {
        "pairs": [], "eigs": [], "summary": [], "power_law": [], "training": [],
        "diagonals": [],
    }
    for name, width in models:
        model = build_small_model(name, problem.in_shape, width=width, seed=seed)
        P = sum(p.numel() for p in model.parameters())
        tr = train_small(model, problem.x, problem.y, steps=steps, lr=lr, batch_size=batch_size,
                         checkpoints=[early_step], seed=seed)
        out["training"].append(tr.history.assign(model=name, P=P))
        for stage, step in (("early", early_step), ("late", steps)):
            model.load_state_dict(tr.snapshots[step])
            mats = curvature_matrices(model, problem.x, problem.y)
            cmp = compare_matrices({m: mats[m] for m in ("D", "F_hat", "F", "GGN", "H")}, k=k)
            for key in ("pairs", "eigs", "summary"):
                out[key].append(cmp[key].assign(model=name, P=P, stage=stage, step=step))
            d_diag, h_diag = torch.diagonal(mats["D"]), torch.diagonal(mats["H"])
            fit = diagonal_power_law(d_diag, h_diag)
            out["diagonals"].append(pd.DataFrame({
                "index": np.arange(P), "D_ii": d_diag.numpy(), "H_ii": h_diag.numpy(),
            }).assign(model=name, P=P, stage=stage, step=step))
            out["power_law"].append(pd.DataFrame([fit]).assign(model=name, P=P, stage=stage,
                                                               step=step))
    return {key: pd.concat(v, ignore_index=True) for key, v in out.items()}


def information_equality_study(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sizes: Sequence[int],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """The information-matrix equality, tested with two label sources.

    For each ``n`` in ``sizes`` (prefixes ``x[:n]``) compare, in relative Frobenius
    distance ``‖M − F‖_F/‖F‖_F`` to the true Fisher ``F`` (label-free), the matrices
    ``M`` = "F_hat" (empirical Fisher), "D" (gradient covariance) and "H" (Hessian of the
    mean cross-entropy), each formed with (a) the data labels ``y`` ("data") and (b) labels
    drawn once from the model's own predictive distribution ``y_i ~ p_θ(·|x_i)`` ("model":
    a well-specified problem whose true parameter is the current θ). Under (b)
    ``E[F_hat] = E[H] = F`` exactly, so the distances are pure sampling error,
    ``O(n^{-1/2})``; under (a) they level off at the misspecification gap.

    Returns a DataFrame with columns n, labels, matrix, rel_dist."""
    from sgdnoise.curvature import hessian, true_fisher
    from sgdnoise.grads import per_example_grads

    loss = nn.functional.cross_entropy
    N = int(x.shape[0])
    if y.shape[0] != N:
        raise ValueError(f"x and y must have the same length, got {N} and {y.shape[0]}")
    sizes = sorted({check_positive_int("sizes", int(v)) for v in sizes})
    if not sizes or sizes[-1] > N:
        raise ValueError(f"sizes must be non-empty and <= N={N}, got {sizes}")
    with torch.no_grad():
        probs = torch.softmax(model(x).to(DT), dim=1)
    gen = torch.Generator().manual_seed(seed)
    y_model = torch.multinomial(probs, 1, generator=gen)[:, 0]
    rows = []
    for n in sizes:
        xs = x[:n]
        F = true_fisher(model, xs).to(DT)
        fro = float(torch.linalg.matrix_norm(F))
        for source, labels in (("data", y[:n]), ("model", y_model[:n])):
            G = per_example_grads(model, loss, xs, labels).to(DT)
            F_hat = G.T @ G / n
            gbar = G.mean(0)
            mats = {
                "F_hat": F_hat,
                "D": F_hat - torch.outer(gbar, gbar),
                "H": hessian(model, loss, xs, labels).to(DT),
            }
            for name, M in mats.items():
                rows.append({
                    "n": n, "labels": source, "matrix": name,
                    "rel_dist": float(torch.linalg.matrix_norm(M - F)) / fro,
                })
    return pd.DataFrame(rows)


def fisher_rao_generalization_study(
    train: SmallProblem,
    test: SmallProblem,
    *,
    widths: Sequence[int],
    batch_sizes: Sequence[int],
    seeds: int,
    steps: int,
    lr: float,
) -> pd.DataFrame:
    """A family of bias-free one-hidden-layer ReLU MLPs (every ``width`` × ``batch_size`` ×
    seed 0..``seeds``−1), each trained by :func:`train_small` for ``steps`` SGD steps at
    ``lr``; for each, the Fisher-Rao norm ``‖θ‖²_fr = θᵀFθ`` on the training inputs
    (:func:`sgdnoise.curvature.fisher_rao_norm`, true Fisher) and the measured
    generalization gap (test minus train mean cross-entropy, and test minus train error).

    Returns one row per model: width, batch_size, seed, P, train_loss, test_loss,
    train_error, test_error, gap_loss, gap_error, fr_norm_sq."""
    from sgdnoise.curvature import fisher_rao_norm

    seeds = check_positive_int("seeds", seeds)
    rows = []
    for width in widths:
        for b in batch_sizes:
            for sd in range(seeds):
                model = build_small_model("mlp", train.in_shape, width=int(width), bias=False,
                                          seed=sd)
                train_small(model, train.x, train.y, steps=steps, lr=lr, batch_size=int(b),
                            seed=sd)
                with torch.no_grad():
                    tr_out, te_out = model(train.x), model(test.x)
                    tr_loss = float(nn.functional.cross_entropy(tr_out, train.y))
                    te_loss = float(nn.functional.cross_entropy(te_out, test.y))
                    tr_err = float((tr_out.argmax(1) != train.y).double().mean())
                    te_err = float((te_out.argmax(1) != test.y).double().mean())
                rows.append({
                    "width": int(width), "batch_size": int(b), "seed": sd,
                    "P": sum(p.numel() for p in model.parameters()),
                    "train_loss": tr_loss, "test_loss": te_loss, "train_error": tr_err,
                    "test_error": te_err, "gap_loss": te_loss - tr_loss,
                    "gap_error": te_err - tr_err,
                    "fr_norm_sq": fisher_rao_norm(model, train.x),
                })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdicts


def identities_verdict(checks: dict[str, float], *, tolerance: float, scale: str) -> Verdict:
    """The exact identities (∇²KL = F; the Fisher-Rao identity with model and with data
    labels), ``checks`` from :func:`exact_identities`: "supported" when every relative
    error is at most ``tolerance`` (rounding), else "contradicted"."""
    worst = max(checks["kl_error"], checks["fr_error"], checks["fr_emp_error"])
    ok = worst <= tolerance
    sentence = (r"$\lVert \nabla^2 K - F \rVert / \lVert F \rVert$ = "
                f"**{checks['kl_error']:.2e}**. Fisher-Rao norm $\\theta^\\top F \\theta$ = "
                f"{checks['fr_lhs']:.6g}; $(L+1)^2\\, \\mathbb{{E}} \\langle p - e_y, f "
                f"\\rangle^2$ = {checks['fr_rhs']:.6g} (relative difference "
                f"{checks['fr_error']:.1e}, degree $L+1$ = {checks['degree']}). With the data "
                f"labels ($\\theta^\\top \\hat F \\theta$): "
                f"{checks['fr_emp_lhs']:.6g} vs {checks['fr_emp_rhs']:.6g} (relative "
                f"difference {checks['fr_emp_error']:.1e}). "
                + (f"All identities hold to rounding error (tolerance {tolerance:g})."
                   if ok else
                   f"At least one identity is violated beyond rounding error (tolerance "
                   f"{tolerance:g}): see the numbers."))
    return Verdict("The Fisher is the Hessian of the KL divergence, and the Fisher-Rao norm "
                   "of a bias-free ReLU network is computable from its outputs.",
                   "supported" if ok else "contradicted", sentence, scale, SECTION_IDENTITIES)


def information_equality_verdicts(
    ieq: pd.DataFrame, *, gap_ratio: float, gap_slope: float, slope_tolerance: float,
    scale: str,
) -> tuple[Verdict, Verdict]:
    """Two verdicts from :func:`information_equality_study` output ``ieq`` (n, labels,
    matrix, rel_dist).

    1. Model labels (a well-specified problem): F̂, D, H approach F like N^{-1/2}.
       "supported" when every fitted log-log slope is within ``slope_tolerance`` of −1/2,
       "contradicted" when none is, else "mixed".
    2. Real labels: F̂, D, H equal F (the information equality applied to real data).
       A matrix shows a systematic gap when, at the largest N, its data-label distance is
       more than ``gap_ratio`` times its model-label distance *and* its data-label slope is
       above ``gap_slope`` (it has stopped shrinking). Any gap: "contradicted"; none:
       "inconclusive" (no gap resolved at these N is not evidence of equality).

    The first verdict's sentence reports the slopes and distance ratios; the second's
    says which gap, if any, is resolved."""
    fits = {(lab, m): loglog_fit(d.n, d.rel_dist)
            for (lab, m), d in ieq.groupby(["labels", "matrix"])}
    n_max = int(ieq.n.max())
    data_last = ieq[(ieq.labels == "data") & (ieq.n == n_max)].set_index("matrix").rel_dist
    model_last = ieq[(ieq.labels == "model") & (ieq.n == n_max)].set_index("matrix").rel_dist
    ratio = data_last / model_last
    mats = list(model_last.index)

    def slopes(lab: str) -> str:
        return ", ".join(f"{matrix_math(m)} {fits[(lab, m)]['slope']:.2f} ± "
                         f"{fits[(lab, m)]['slope_se']:.2f}" for m in mats)

    near = [abs(fits[("model", m)]["slope"] + 0.5) <= slope_tolerance for m in mats]
    outcome1 = "supported" if all(near) else "contradicted" if not any(near) else "mixed"
    s1 = (f"Fitted slopes of the log distance against $\\log N$ (theory −0.5 for model "
          f"labels, tolerance ±{slope_tolerance:g}): model labels {slopes('model')}; data labels "
          f"{slopes('data')}. At N = {n_max} the distance with data labels is "
          + ", ".join(f"{ratio[m]:.2f}× ({matrix_math(m)})" for m in mats)
          + " the distance with model labels.")
    v1 = Verdict(r"With labels drawn from the model (well specified), $\hat F$, $D$ and $H$ "
                 r"converge to the Fisher $F$ at the rate $N^{-1/2}$.", outcome1, s1, scale,
                 SECTION_INFOEQ)
    gap = [m for m in mats if ratio[m] > gap_ratio and fits[("data", m)]["slope"] > gap_slope]
    if gap:
        s2 = (f"A systematic misspecification gap is visible for "
              f"{', '.join(matrix_math(m) for m in gap)}: with real "
              f"labels the distance has stopped shrinking (slope above {gap_slope:g}) and is "
              f"more than {gap_ratio:g}× the sampling noise of a well-specified model.")
    else:
        s2 = (f"No systematic gap is resolved at these sample sizes (criterion: data/model "
              f"ratio above {gap_ratio:g} with a data-label slope above {gap_slope:g}): "
              f"with real labels the distances to $F$ are no larger than the sampling noise "
              f"of a well-specified model, so the data cannot yet tell $\\hat F$, $D$, $H$ "
              f"from $F$ better than model samples would.")
    v2 = Verdict("On real data the covariance, empirical Fisher and Hessian equal the Fisher "
                 "(the information equality).", "contradicted" if gap else "inconclusive",
                 s2, scale, SECTION_INFOEQ)
    return v1, v2


def covariance_hessian_verdict(
    pairs: pd.DataFrame, summary: pd.DataFrame, *, top_k: int, cosine_holds: float,
    cosine_fails: float, scale: str,
) -> tuple[list[str], Verdict]:
    """Is the covariance a scaled Hessian, D ∝ H? From :func:`fisher_hessian_study`'s
    "pairs" and "summary". Each model/stage case holds when cos(D, H) ≥ ``cosine_holds``,
    holds roughly when ≥ ``cosine_fails``, fails below. Returns one Markdown line per case
    and the overall verdict: "supported" if every case holds, "contradicted" if every case
    fails, else "mixed"."""
    summ = summary.set_index(["model", "stage", "matrix"])
    dh = pairs[(pairs.a == "D") & (pairs.b == "H")].set_index(["model", "stage"])
    lines = []
    for (m, st), r in dh.iterrows():
        verdict = (f"holds up to a scale (cosine ≥ {cosine_holds:g}), with a "
                   f"{r.scaled_dist:.0%} residual" if r.cosine >= cosine_holds else
                   f"holds only roughly ({cosine_fails:g} ≤ cosine < {cosine_holds:g})"
                   if r.cosine >= cosine_fails else f"fails (cosine < {cosine_fails:g})")
        tr_ratio = float(summ.loc[(m, st, "D"), "trace_ratio_to_H"])
        lines.append(f"- **{m}, {st}**: $\\cos(D, H) = {r.cosine:.3f}$; "
                     f"$\\lVert D - H \\rVert / \\lVert H \\rVert = {r.rel_dist:.2f}$, or "
                     f"{r.scaled_dist:.2f} after the best rescaling of $D$; "
                     f"$\\operatorname{{tr}} D / \\operatorname{{tr}} H = {tr_ratio:.2f}$; "
                     f"top-{top_k} overlap {r.overlap:.2f}: \"covariance ≈ scaled Hessian\" "
                     f"{verdict}.")
    n_hold = int((dh.cosine >= cosine_holds).sum())
    n_fail = int((dh.cosine < cosine_fails).sum())
    worst = dh.cosine.idxmin()
    sentence = (f"The proportionality holds (cosine ≥ {cosine_holds:g}) in {n_hold} of "
                f"{len(dh)} model/stage cases and fails (cosine < {cosine_fails:g}) in "
                f"{n_fail}; the worst cosine is {dh.cosine.min():.2f} ({worst[0]}, "
                f"{worst[1]}).")
    outcome = ("supported" if n_hold == len(dh) else
               "contradicted" if n_fail == len(dh) else "mixed")
    return lines, Verdict("The covariance of the gradient noise is (proportional to) the "
                          "Hessian.", outcome, sentence, scale, SECTION_COMPARE)


POWER_LAW = r"$D_{ii} \propto H_{ii}^{\gamma}$"


def power_law_verdict(
    power_law: pd.DataFrame, *, gamma_low: float, gamma_high: float, scale: str,
) -> Verdict:
    """Diagonal power law D_ii ∝ H_ii^γ with γ in [``gamma_low``, ``gamma_high``] (the range
    reported in the literature). A fit agrees when its γ ± 2 standard errors reaches the
    range. "supported" if every fit agrees, "contradicted" if none does, else "mixed"."""
    pl = power_law
    inside = (pl.gamma + 2 * pl.gamma_se >= gamma_low) & (pl.gamma - 2 * pl.gamma_se <= gamma_high)
    k = int(inside.sum())
    sentence = (f"Diagonal power law {POWER_LAW}: γ ranges over [{pl.gamma.min():.2f}, "
                f"{pl.gamma.max():.2f}]; {k} of {len(pl)} fits are within two standard "
                f"errors of the range {gamma_low:g} ≤ γ ≤ {gamma_high:g} reported in the "
                f"literature; $R^2$ between {pl.r2.min():.2f} and {pl.r2.max():.2f}.")
    outcome = "supported" if k == len(pl) else "contradicted" if k == 0 else "mixed"
    return Verdict(f"Per parameter, the noise variance follows the curvature as a power law "
                   f"{POWER_LAW} with {gamma_low:g} ≤ γ ≤ {gamma_high:g}.", outcome,
                   sentence, scale, SECTION_DIAGONAL)


def fisher_rao_verdict(
    family: pd.DataFrame, *, confidence: float, scale: str
) -> tuple[Interval, Interval, Verdict]:
    """Does the Fisher-Rao norm bound generalization? ``family`` from
    :func:`fisher_rao_generalization_study`. A bound that matters predicts that models with
    a larger norm have a larger generalization gap: the Spearman rank correlation between
    ``fr_norm_sq`` and ``gap_loss``, with its ``confidence`` interval
    (:func:`sgdnoise.stats.spearman_ci`). "supported" when the interval lies above 0,
    "contradicted" when it lies below 0, "inconclusive" when it contains 0 (or is
    undefined). Also returns the interval for the error gap (reported, not decisive)."""
    rho = spearman_ci(family.fr_norm_sq, family.gap_loss, confidence)
    rho_err = spearman_ci(family.fr_norm_sq, family.gap_error, confidence)
    pct = f"{confidence:.0%}"
    sentence = (f"Over {len(family)} trained models, Spearman ρ between the Fisher-Rao norm and "
                f"the loss gap (test − train cross-entropy) is {rho.estimate:.2f}, {pct} "
                f"interval [{rho.low:.2f}, {rho.high:.2f}]; with the error gap ρ = "
                f"{rho_err.estimate:.2f} [{rho_err.low:.2f}, {rho_err.high:.2f}]. ")
    if rho.above(0.0):
        outcome, tail = ("supported",
                         "Models with a larger norm generalize worse, as a bound predicts.")
    elif rho.below(0.0):
        outcome, tail = ("contradicted", "Models with a larger norm generalize *better*: the "
                         "ordering a bound would predict is reversed.")
    else:
        outcome, tail = ("inconclusive", f"The {pct} interval contains 0: this family cannot "
                         "tell whether the norm orders the gaps.")
    return rho, rho_err, Verdict(
        "The Fisher-Rao norm bounds generalization: a larger norm goes with a larger "
        "generalization gap.", outcome, sentence + tail, scale, SECTION_FR)
