"""Chapter 2 (From covariance to Fisher to Hessian): the exact identities D = F̂ − ḡḡᵀ,
F = GGN (softmax cross-entropy), ∇²KL = F and the Fisher-Rao identity; the information
equality with model labels and data labels; the pairwise comparison of D, F̂, F, GGN and H
on trained models; near the end of training, over several seeds: how close to stationary
the models are, the cosine of D and H against random matrices with D's spectrum and
against one model retrained on randomly permuted labels, and the per-layer diagonal power
law; the Fisher-Rao norm against the generalization gap with a
bootstrap over configurations; and the verdicts the chapter draws from them, with the
error rates of the rules behind the claims about SGD.

Matrices are dense float64 ``(P, P)``; ``G: (N, P)`` per-example gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from sgdnoise.chapters.small_problems import (
    DT,
    ClaimRates,
    Condition,
    SmallProblem,
    SmallProblemParams,
    build_small_model,
    claim_outcomes,
    claim_rates,
    curvature_matrices,
    fixed,
    interval,
    loss_and_error,
    number,
    pooled_seed_sd,
    top_eigenpairs,
    train_small,
)
from sgdnoise.params import param
from sgdnoise.report import Verdict, tex_html
from sgdnoise.stats import Interval, loglog_fit, paired_difference, t_interval
from sgdnoise.validate import check_positive_int

__all__ = [
    "KEY_PAIRS",
    "MODEL_NAMES",
    "Params",
    "ShuffledBaseline",
    "cases_table",
    "cluster_spearman",
    "compare_matrices",
    "cosine_null",
    "covariance_hessian_lines",
    "covariance_hessian_rates",
    "covariance_hessian_verdict",
    "diagonal_power_law",
    "exact_identities",
    "fisher_rao_generalization_study",
    "fisher_rao_rates",
    "fisher_rao_verdict",
    "fisher_hessian_study",
    "identities_verdict",
    "information_equality_rates",
    "information_equality_seeds",
    "information_equality_study",
    "information_equality_verdict",
    "information_rate_verdict",
    "information_sizes",
    "key_pairs",
    "late_matrices",
    "late_seed_study",
    "layer_power_law",
    "model_name",
    "power_law_rates",
    "power_law_verdict",
    "shuffled_label_baseline",
    "shuffled_labels",
    "shuffled_reading",
    "shuffled_table",
    "value_range",
    "weight_layers",
    "with_shuffled_baseline",
]

SECTION_IDENTITIES = "sec-ch2-identities"
SECTION_INFOEQ = "sec-ch2-infoeq"
SECTION_COMPARE = "sec-ch2-compare"
SECTION_DIAGONAL = "sec-ch2-diagonal"
SECTION_FR = "sec-ch2-fisher-rao"
SECTION_LATE = "sec-ch2-late"
DERIVATION, CLAIM = "derivation check", "claim about SGD"

#: The pairs the chapter discusses, in this order: (a, b) of :func:`compare_matrices`.
KEY_PAIRS = (("D", "F_hat"), ("F_hat", "F"), ("F", "GGN"), ("D", "H"), ("GGN", "H"))
# How a matrix named in the studies' tables is written in math (the generalised
# Gauss-Newton matrix, "GGN" in the tables, is the chapter's G).
MATRIX_TEX = {"F_hat": r"\hat F", "D": "D", "F": "F", "GGN": "G", "H": "H"}
#: The models' names on the page, for the keys the studies use.
MODEL_NAMES = {"softmax": "softmax regression", "mlp": "MLP", "cnn": "CNN"}


def matrix_math(name: str) -> str:
    r"""A matrix of the studies' tables in MyST inline math: ``"F_hat"`` → ``$\hat F$``,
    ``"GGN"`` → ``$G$``; a name without math stays as it is."""
    return f"${MATRIX_TEX[name]}$" if name in MATRIX_TEX else name


def model_name(key: str) -> str:
    """A model's name on the page (:data:`MODEL_NAMES`): ``"mlp"`` → ``"MLP"``; other keys
    as they are."""
    return MODEL_NAMES.get(key, key)


def value_range(low: float, high: float, digits: int = 2) -> str:
    """``'from 0.017 to 0.021'``, or the one value when both ends print alike."""
    lo, hi = number(low, digits), number(high, digits)
    return lo if lo == hi else f"from {lo} to {hi}"


@dataclass(frozen=True)
class Params(SmallProblemParams):
    """Parameters of chapter 2 (values: the notebook's parameters cell and
    ``book/params/ch02_fisher_hessian/{smoke,default,full}.yaml``)."""

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
    slope_tolerance: float = param(low=0.0, high=1.0,
                                   doc="allowed |model-label slope + 1/2|")
    cosine_holds: float = param(low=0.0, high=1.0,
                                doc="cos(D, H) above which D ∝ H holds")
    gamma_low: float = param(low=-10.0, high=10.0,
                             doc="low end of the γ range of Zhang, Yang & Tu (2026)")
    gamma_high: float = param(low=-10.0, high=10.0,
                              doc="high end of the γ range of Zhang, Yang & Tu (2026)")
    fr_n_test: int = param(low=10, high=10000, doc="test examples for the generalization gap")
    fr_widths: tuple[int, ...] = param(low=1, doc="MLP widths of the Fisher-Rao family")
    fr_batch_sizes: tuple[int, ...] = param(low=1, doc="SGD batch sizes of the family")
    fr_seeds: int = param(low=1, high=20, doc="seeds per (width, batch size)")
    fr_confidence: float = param(low=0.5, high=0.999,
                                 doc="confidence of the Spearman interval")
    fr_boot: int = param(low=50, high=100000,
                         doc="bootstrap draws over configurations (Spearman interval)")
    seeds: int = param(low=2, high=20, doc="training seeds of the claims about SGD")
    null_draws: int = param(low=5, high=10000,
                            doc="random matrices per case of the cosine baseline")
    alpha: float = param(low=0.001, high=0.2, doc="level of the tests of claims about SGD")
    rate_sims: int = param(low=100, high=100000,
                           doc="simulated data sets per truth for the error rates")
    shuffled_model: str = param(choices=("softmax", "mlp", "cnn"),
                                doc="model retrained on randomly permuted labels (the "
                                    "shuffled-label baseline of cos(D, H))")
    shuffled_seeds: int = param(low=2, high=20,
                                doc="seeds of the shuffled-label baseline (the study's "
                                    "first seeds, paired with them)")

    def check(self) -> None:
        self.require(self.early_step < self.train_steps, "early_step",
                     f"must be < train_steps={self.train_steps}")
        self.require(self.check_n <= self.n_train, "check_n",
                     f"must be <= n_train={self.n_train}")
        self.require(self.train_batch_size <= self.n_train, "train_batch_size",
                     f"must be <= n_train={self.n_train}")
        self.require(max(self.fr_batch_sizes) <= self.n_train, "fr_batch_sizes",
                     f"every batch size must be <= n_train={self.n_train}")
        self.require(len(self.fr_widths) * len(self.fr_batch_sizes) * self.fr_seeds >= 4,
                     "fr_seeds", "the family needs >= 4 models for a rank-correlation interval")
        self.require(self.gamma_low <= self.gamma_high, "gamma_low",
                     f"must be <= gamma_high={self.gamma_high}")
        self.require(self.shuffled_seeds <= self.seeds, "shuffled_seeds",
                     f"must be <= seeds={self.seeds} (paired with the study's seeds)")


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
) -> dict[str, Any]:
    """Train each ``(name, width)`` model of ``models`` (see :func:`build_small_model`) and,
    early (step ``early_step``) and late (step ``steps``), compare D, F̂, F, GGN and H with
    :func:`compare_matrices` and fit the diagonal power law ``D_ii ∝ H_ii^γ``.

    Returns DataFrames "pairs", "eigs", "summary", "power_law", "training", "diagonals"
    (index, D_ii, H_ii) and "stationarity" (gbar_sq = ``‖ḡ‖²``, trace_D, ratio =
    ``‖ḡ‖²/tr D``), each with columns model, P and stage ("early" | "late") added; and
    "late": ``{(name, seed): {"D", "H", "gbar", "layers", "train_error"}}``, the late
    matrices with the model's weight layers (:func:`weight_layers`) and its final training
    error, for :func:`late_seed_study`."""
    out: dict[str, list[pd.DataFrame]] = {
        "pairs": [], "eigs": [], "summary": [], "power_law": [], "training": [],
        "diagonals": [], "stationarity": [],
    }
    late: dict[tuple[str, int], dict[str, Any]] = {}
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
            out["stationarity"].append(pd.DataFrame([_stationarity(mats)]).assign(
                model=name, P=P, stage=stage, step=step))
        late[(name, seed)] = {"D": mats["D"], "H": mats["H"], "gbar": mats["gbar"],
                              "layers": weight_layers(model),
                              "train_error": float(tr.history.train_error.iloc[-1])}
    frames: dict[str, Any] = {key: pd.concat(v, ignore_index=True) for key, v in out.items()}
    frames["late"] = late
    return frames


def _stationarity(mats: dict[str, torch.Tensor]) -> dict[str, float]:
    """``‖ḡ‖²``, ``tr D`` and their ratio from :func:`curvature_matrices`-like ``mats``."""
    g2 = float(mats["gbar"] @ mats["gbar"])
    tr = float(torch.trace(mats["D"]))
    return {"gbar_sq": g2, "trace_D": tr, "ratio": g2 / tr if tr > 0 else math.nan}


def weight_layers(model: nn.Module) -> list[tuple[str, slice]]:
    """The weight tensors of ``model`` (trainable parameters with two or more dimensions:
    linear and convolution weights, not biases) as ``(label, slice of θ)``, θ flattened in
    ``model.parameters()`` order (the order of the dense matrices); the label counts the
    layers from the input and names their kind: ``"layer 1 (convolution)"``,
    ``"layer 2 (linear)"``."""
    from sgdnoise.grads import trainable_named_parameters

    out, start = [], 0
    for _, p in trainable_named_parameters(model):
        if p.dim() >= 2:
            kind = "linear" if p.dim() == 2 else "convolution"
            out.append((f"layer {len(out) + 1} ({kind})", slice(start, start + p.numel())))
        start += p.numel()
    return out


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


def information_equality_seeds(problem: SmallProblem, seeds: Sequence[int], *, width: int,
                                steps: int, lr: float, batch_size: int,
                                trained: dict[int, nn.Module] | None = None) -> pd.DataFrame:
    """:func:`information_equality_study` on the whole of ``problem`` (nested sizes of
    :func:`information_sizes`) for one bias-free one-hidden-layer ReLU MLP of ``width`` per
    seed, trained by :func:`train_small` (``steps``, ``lr``, ``batch_size``) from that seed;
    the labels drawn from the model use the same seed. ``trained`` maps a seed to an
    already trained model. Adds a column ``seed``."""
    sizes = information_sizes(problem.n)
    parts = []
    for sd in seeds:
        model = (trained or {}).get(int(sd))
        if model is None:
            model = build_small_model("mlp", problem.in_shape, width=width, bias=False,
                                      seed=int(sd))
            train_small(model, problem.x, problem.y, steps=steps, lr=lr,
                        batch_size=batch_size, seed=int(sd))
        parts.append(information_equality_study(model, problem.x, problem.y, sizes,
                                                seed=int(sd)).assign(seed=int(sd)))
    return pd.concat(parts, ignore_index=True)


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


# --------------------------------------------------------------------------- late, over seeds


def late_matrices(problem: SmallProblem, models: Sequence[tuple[str, int]],
                  seeds: Sequence[int], *, steps: int, lr: float, batch_size: int
                  ) -> dict[tuple[str, int], dict[str, Any]]:
    """For every seed in ``seeds`` and ``(name, width)`` in ``models``: the model trained
    by :func:`train_small` for ``steps`` steps from initialisation and batch order ``seed``,
    and at its final θ the dense ``D``, ``H`` ``(P, P)``, ``ḡ`` ``(P,)``, its
    :func:`weight_layers` and its training error on ``problem``. Keys ``(name, seed)``: the
    "late" entry of :func:`fisher_hessian_study` for more seeds."""
    from sgdnoise.curvature import hessian
    from sgdnoise.grads import per_example_grads

    loss = nn.functional.cross_entropy
    out = {}
    for sd in seeds:
        for name, width in models:
            model = build_small_model(name, problem.in_shape, width=width, seed=int(sd))
            train_small(model, problem.x, problem.y, steps=steps, lr=lr,
                        batch_size=batch_size, seed=int(sd))
            G = per_example_grads(model, loss, problem.x, problem.y).to(DT)
            gbar = G.mean(0)
            Gc = G - gbar
            out[(name, int(sd))] = {
                "D": Gc.T @ Gc / G.shape[0], "gbar": gbar,
                "H": hessian(model, loss, problem.x, problem.y).to(DT),
                "layers": weight_layers(model),
                "train_error": loss_and_error(model, problem.x, problem.y)[1]}
    return out


def cosine_null(D: torch.Tensor, H: torch.Tensor, *, keep: int, draws: int, seed: int = 0,
                energy: float = 0.999, max_rank: int = 100) -> np.ndarray:
    """Cosines ``⟨M, H⟩_F / (‖M‖_F ‖H‖_F)`` of ``H: (P, P)`` with random PSD matrices ``M``
    that have ``D``'s spectrum: ``M = Σ_{i≤r} λ_i v_i v_iᵀ`` with ``D``'s largest eigenvalues
    ``λ_i`` (the fewest that hold ``energy`` of ``Σ λ_i²``, at most ``max_rank``), its own
    top ``keep`` eigenvectors as ``v_1 … v_keep`` and the other ``v_i`` a uniformly random
    orthonormal set orthogonal to them. ``keep = 0``: the chance level of the cosine;
    ``keep = 1``: what a shared top direction alone gives. Returns ``(draws,)``."""
    check_positive_int("draws", draws)
    evals, evecs = torch.linalg.eigh(0.5 * (D + D.T))
    lam, vec = evals.flip(0).clamp(min=0.0), evecs.flip(1)
    share = torch.cumsum(lam**2, 0) / (lam**2).sum()
    r = min(int((share < energy).sum()) + 1, max_rank, lam.numel())
    keep = min(keep, r)
    lam = lam[:r]
    scale = float(torch.linalg.vector_norm(lam) * torch.linalg.matrix_norm(H))
    kept = vec[:, :keep]
    gen = torch.Generator().manual_seed(seed)
    out = np.empty(draws)
    for d in range(draws):
        Z = torch.randn(D.shape[0], r - keep, dtype=D.dtype, generator=gen)
        Z = Z - kept @ (kept.T @ Z)
        V = torch.cat([kept, torch.linalg.qr(Z)[0]], 1)
        out[d] = float((lam * (V * (H @ V)).sum(0)).sum()) / scale
    return out


def layer_power_law(D: torch.Tensor, H: torch.Tensor, layers: Sequence[tuple[str, slice]]
                    ) -> pd.DataFrame:
    """:func:`diagonal_power_law` of ``D_ii`` on ``H_ii`` within each weight layer (one
    intercept per layer, as in Zhang, Yang & Tu 2026). Rows: layer, gamma, r2, n_used,
    n_total; a layer with fewer than 3 usable entries is left out."""
    dd, hd = torch.diagonal(D), torch.diagonal(H)
    rows = []
    for name, sl in layers:
        try:
            fit = diagonal_power_law(dd[sl], hd[sl])
        except ValueError:
            continue
        rows.append({"layer": name, "gamma": fit["gamma"], "r2": fit["r2"],
                     "n_used": fit["n_used"], "n_total": fit["n_total"]})
    return pd.DataFrame(rows)


def late_seed_study(late: dict[tuple[str, int], dict[str, Any]], *, batch_size: int,
                    draws: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per ``(model, seed)`` of ``late`` (:func:`late_matrices`, or the "late" entry of
    :func:`fisher_hessian_study`): ``cosine`` = cos(D, H); the random-spectrum baselines of
    :func:`cosine_null` (``chance`` = mean with ``keep = 0``; ``spike_mean``, ``spike_q95``
    = mean and 95th percentile with ``keep = 1``); ``ratio`` = ``‖ḡ‖²/tr D`` and
    ``near_minimum`` = ``ratio < 1/B`` (the mean gradient is smaller than the noise of one
    batch of ``batch_size``); ``train_error`` where ``late`` has it (else NaN). Returns
    ``(cases, layers)``, the second with the per-layer fits of :func:`layer_power_law`."""
    b = check_positive_int("batch_size", batch_size)
    cases, layers = [], []
    for i, ((model, sd), m) in enumerate(late.items()):
        D, H = m["D"], m["H"]
        cos = float((D * H).sum() / (torch.linalg.matrix_norm(D) * torch.linalg.matrix_norm(H)))
        spike = cosine_null(D, H, keep=1, draws=draws, seed=seed + 2 * i)
        chance = cosine_null(D, H, keep=0, draws=draws, seed=seed + 2 * i + 1)
        stat = _stationarity(m)
        cases.append({"model": model, "seed": sd, "cosine": cos,
                      "chance": float(chance.mean()), "spike_mean": float(spike.mean()),
                      "spike_q95": float(np.quantile(spike, 0.95)), "ratio": stat["ratio"],
                      "near_minimum": bool(stat["ratio"] < 1.0 / b),
                      "train_error": float(m.get("train_error", math.nan))})
        layers.append(layer_power_law(D, H, m["layers"]).assign(model=model, seed=sd))
    return pd.DataFrame(cases), pd.concat(layers, ignore_index=True)


def cases_table(cases: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """:func:`late_seed_study`'s cases as text cells."""
    return pd.DataFrame([{
        "model": model_name(r.model), "seed": str(int(r.seed)),
        f"cosine of {tex_html('D')} and {tex_html('H')}": fixed(r.cosine, 3),
        "random spectrum: mean": fixed(r.chance, 3),
        "shared top direction: mean": fixed(r.spike_mean, 3),
        "shared top direction: 95th percentile": fixed(r.spike_q95, 3),
        tex_html(r"\lVert \bar g \rVert^2 / \operatorname{tr} D"): number(r.ratio, 2),
        f"near a minimum (below 1/{tex_html('B')} = {1 / batch_size:.3g})":
            "yes" if r.near_minimum else "no",
    } for r in cases.itertuples()])


# --------------------------------------------------------------------------- shuffled labels


def shuffled_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """``y: (N,)`` randomly permuted by a generator seeded with ``seed``: every class keeps
    its count, but which example carries which label no longer depends on the inputs."""
    gen = torch.Generator().manual_seed(int(seed))
    return y[torch.randperm(y.shape[0], generator=gen)]


@dataclass(frozen=True)
class ShuffledBaseline:
    """The cosine of ``D`` and ``H`` on randomly permuted labels
    (:func:`shuffled_label_baseline`). ``model``: the key of :data:`MODEL_NAMES`;
    ``cases``: one row per seed with the columns of :func:`late_seed_study`'s cases
    (``cosine``, ``ratio`` = ``‖ḡ‖²/tr D``, ``near_minimum``, ``train_error`` on the
    shuffled labels, …) and ``moved``, the fraction of examples whose label the
    permutation changed."""

    model: str
    cases: pd.DataFrame

    def cosine(self, confidence: float) -> Interval:
        """t interval of the mean cosine across the seeds."""
        return t_interval(self.cases.cosine, confidence)


def shuffled_label_baseline(problem: SmallProblem, model: tuple[str, int],
                            seeds: Sequence[int], *, steps: int, lr: float, batch_size: int,
                            draws: int, seed: int = 0) -> ShuffledBaseline:
    """The late-stage study of :func:`late_matrices` and :func:`late_seed_study` for one
    ``model = (name, width)``, trained on ``problem``'s inputs with the labels of
    :func:`shuffled_labels` (permutation seeded with the training seed): per seed in
    ``seeds``, the same initialisation, batch order, ``steps``, ``lr`` and ``batch_size``
    as the true-label model of that seed, then cos(D, H), its random-spectrum baselines
    (``draws`` each) and ``‖ḡ‖²/tr D`` with the shuffled labels."""
    late: dict[tuple[str, int], dict[str, Any]] = {}
    moved = {}
    for sd in seeds:
        y = shuffled_labels(problem.y, int(sd))
        moved[int(sd)] = float((y != problem.y).double().mean())
        late.update(late_matrices(replace(problem, y=y), [model], [int(sd)], steps=steps,
                                  lr=lr, batch_size=batch_size))
    cases, _ = late_seed_study(late, batch_size=batch_size, draws=draws, seed=seed)
    return ShuffledBaseline(model[0], cases.assign(moved=cases.seed.map(moved)))


def _percent_range(fractions: pd.Series) -> str:
    """``'from 12.5 to 20%'``: the range of fractions in percent."""
    return value_range(100 * fractions.min(), 100 * fractions.max(), 3) + "%"


def _paired_cosines(cases: pd.DataFrame, baseline: ShuffledBaseline
                    ) -> tuple[pd.DataFrame, list[int]]:
    """The true-label cases of the baseline's model and the seeds both have."""
    true = cases[cases.model == baseline.model].set_index("seed")
    seeds = [int(s) for s in baseline.cases.seed if s in true.index]
    if len(seeds) < 2:
        raise ValueError(f"cases must hold model {baseline.model!r} at >= 2 of the baseline's "
                         f"seeds {list(baseline.cases.seed)}, found {seeds}")
    return true, seeds


def shuffled_table(cases: pd.DataFrame, baseline: ShuffledBaseline, *, alpha: float
                   ) -> pd.DataFrame:
    """True against shuffled labels for the baseline's model, as text cells: per label
    source the ``1 − 2·alpha`` t interval of cos(D, H) across the shared seeds, the range
    of ``‖ḡ‖²/tr D``, the seeds near a minimum and the range of the training error; a last
    row with the paired difference (true − shuffled, same seed)."""
    true, seeds = _paired_cosines(cases, baseline)
    shuf = baseline.cases.set_index("seed")
    conf = 1 - 2 * alpha
    cos_head = f"cosine of {tex_html('D')} and {tex_html('H')}, {conf:.0%} interval"
    ratio_head = tex_html(r"\lVert \bar g \rVert^2 / \operatorname{tr} D")
    rows = []
    name = model_name(baseline.model)
    for label, d in (("true labels", true.loc[seeds]), ("shuffled labels", shuf.loc[seeds])):
        rows.append({"model and labels": f"{name}, {label}", "seeds": str(len(seeds)),
                     cos_head: t_interval(d.cosine, conf).format(3),
                     ratio_head: value_range(d.ratio.min(), d.ratio.max()),
                     "seeds near a minimum": f"{int(d.near_minimum.sum())} of {len(seeds)}",
                     "training error": _percent_range(d.train_error)})
    diff = paired_difference(true.cosine.loc[seeds], shuf.cosine.loc[seeds], conf)
    rows.append({"model and labels": f"{name}, true minus shuffled (paired by seed)",
                 "seeds": str(len(seeds)), cos_head: diff.format(3), ratio_head: "",
                 "seeds near a minimum": "", "training error": ""})
    return pd.DataFrame(rows)


def _shuffled_conclusion(shuf: pd.DataFrame, diff: Interval, sh: Interval,
                         cosine_holds: float) -> str:
    """The reading of :func:`shuffled_reading` from the baseline's cases, the paired
    difference interval and the shuffled-label interval."""
    if not shuf.near_minimum.all():
        return ("The shuffled-label models are not near a minimum in every seed, so this "
                "baseline does not compare minima.")
    if diff.above(0):
        out = ("The true labels align $D$ and $H$ more than shuffled ones: part of the "
               "alignment comes from learning the labels.")
    elif diff.below(0):
        out = ("Shuffled labels align $D$ and $H$ more than the true ones: the alignment "
               "does not come from learning the labels.")
    else:
        out = "No difference between true and shuffled labels is resolved at these seeds."
    if sh.above(cosine_holds):
        out += (f" With shuffled labels alone the cosine lies above {cosine_holds:g}: the "
                f"alignment the claim tests comes with cross-entropy near a stationary "
                f"point, whether or not the labels can be learned.")
    return out


def shuffled_reading(cases: pd.DataFrame, baseline: ShuffledBaseline, *, cosine_holds: float,
                     alpha: float) -> str:
    """The shuffled-label baseline in words: its cosine (``1 − 2·alpha`` t interval across
    seeds), ``‖ḡ‖²/tr D`` and training error, the paired difference of the cosines (true −
    shuffled, same seed), and what they say. Rule: shuffled-label models not near a
    minimum in every seed → no comparison of minima; else the difference interval above 0
    → the true labels align D and H more, below 0 → less, else no difference resolved;
    and, when the shuffled-label interval lies above ``cosine_holds``, that shuffled labels
    alone pass the claim's threshold."""
    true, seeds = _paired_cosines(cases, baseline)
    shuf = baseline.cases.set_index("seed").loc[seeds]
    conf = 1 - 2 * alpha
    sh = t_interval(shuf.cosine, conf)
    diff = paired_difference(true.cosine.loc[seeds], shuf.cosine, conf)
    head = (f"Shuffled-label baseline ({model_name(baseline.model)} trained the same way on "
            f"randomly permuted labels, {len(seeds)} seeds): cosine of $D$ and $H$ "
            f"{sh.format(3)} ({conf:.0%} interval), $\\lVert \\bar g \\rVert^2 / "
            f"\\operatorname{{tr}} D$ {value_range(shuf.ratio.min(), shuf.ratio.max())}, "
            f"training error {_percent_range(shuf.train_error)}; "
            f"true minus shuffled, paired by seed: {diff.format(3)}. ")
    return head + _shuffled_conclusion(shuf, diff, sh, cosine_holds)


def with_shuffled_baseline(v: Verdict, cases: pd.DataFrame, baseline: ShuffledBaseline, *,
                           cosine_holds: float, alpha: float) -> Verdict:
    """:func:`covariance_hessian_verdict`'s ``v`` with :func:`shuffled_reading` appended to
    its sentence; the outcome and its rule are unchanged."""
    reading = shuffled_reading(cases, baseline, cosine_holds=cosine_holds, alpha=alpha)
    return replace(v, sentence=f"{v.sentence} {reading}")


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
                   "supported" if ok else "contradicted", sentence, scale, SECTION_IDENTITIES,
                   kind=DERIVATION)




def _with_rates(v: Verdict, rates: ClaimRates | None) -> Verdict:
    if rates is None:
        return v
    return v.with_rates(rates)


def _matrix_items(ieq: pd.DataFrame) -> tuple[list[str], np.ndarray, int]:
    """The matrices, ``x: (3, S)`` = ``ln(data-label distance / model-label distance)`` at
    the largest N per seed, and that N."""
    n_max = int(ieq.n.max())
    last = ieq[ieq.n == n_max].pivot_table(index=["matrix", "seed"], columns="labels",
                                           values="rel_dist")
    mats = [m for m in ("F_hat", "D", "H") if m in last.index.get_level_values(0)]
    seeds = sorted(set(ieq.seed))
    x = np.array([[math.log(last.loc[(m, s), "data"] / last.loc[(m, s), "model"])
                   for s in seeds] for m in mats])
    return mats, x, n_max


def information_rate_verdict(ieq: pd.DataFrame, *, slope_tolerance: float, scale: str
                             ) -> Verdict:
    """Derivation check, ``ieq`` from :func:`information_equality_study` (with a ``seed``
    column): with model labels F̂, D and H approach F like ``N^{-1/2}``. The log distance
    averaged over seeds is fitted against ``log N`` per matrix: "supported" when every
    slope is within ``slope_tolerance`` of −1/2, "contradicted" when none is, else
    "mixed"."""
    mean = ieq.groupby(["labels", "matrix", "n"]).rel_dist.mean().reset_index()
    fits = {(lab, m): loglog_fit(d.n, d.rel_dist)
            for (lab, m), d in mean.groupby(["labels", "matrix"])}
    mats = [m for m in ("F_hat", "D", "H") if ("model", m) in fits]

    def slopes(lab: str) -> str:
        return ", ".join(f"{matrix_math(m)} {fixed(fits[(lab, m)]['slope'])}" for m in mats)

    near = [abs(fits[("model", m)]["slope"] + 0.5) <= slope_tolerance for m in mats]
    outcome = "supported" if all(near) else "contradicted" if not any(near) else "mixed"
    sentence = (f"Slopes of the log distance (mean over {ieq.seed.nunique()} seeds) against "
                f"$\\log N$: model labels {slopes('model')} (theory −0.5, tolerance "
                f"±{slope_tolerance:g}); data labels {slopes('data')}.")
    return Verdict(r"With labels drawn from the model (well specified), $\hat F$, $D$ and $H$ "
                   r"converge to the Fisher $F$ at the rate $N^{-1/2}$.", outcome, sentence,
                   scale, SECTION_INFOEQ, kind=DERIVATION)


def information_equality_rates(ieq: pd.DataFrame, *, gap_ratio: float, alpha: float,
                               n_sim: int, seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`information_equality_verdict` with the pooled seed-to-seed
    standard deviation of the log distance ratios: power when every ratio is 1 (no
    misspecification), false positives at ``gap_ratio`` and at ``gap_ratio²``."""
    mats, x, _ = _matrix_items(ieq)
    sd, df = pooled_seed_sd(x)
    if not (math.isfinite(sd) and sd > 0):
        return None
    t = math.log(gap_ratio)
    return claim_rates([Condition(i, "below", t) for i in range(len(mats))],
                       effect=[0.0] * len(mats), sd=sd, n_seeds=x.shape[1], alpha=alpha,
                       opposite=[2 * t] * len(mats), df=df, n_sim=n_sim, seed=seed,
                       quantity="log distance ratio",
                       describe=f"data labels as close to $F$ as model labels (ratio 1), "
                                f"false positives at ratios {gap_ratio:g} and "
                                f"{gap_ratio**2:g}")


def information_equality_verdict(ieq: pd.DataFrame, *, gap_ratio: float, alpha: float,
                                 scale: str, rates: ClaimRates | None = None) -> Verdict:
    """Claim about SGD's models on real data, ``ieq`` from
    :func:`information_equality_study` with a ``seed`` column (one trained model per seed):
    with the data labels, F̂, D and H are as close to F as sampling alone would leave them,
    within a factor ``gap_ratio`` of their distance with labels drawn from the model, at
    the largest N. Per matrix and seed the statistic is the log of that ratio;
    :func:`claim_outcomes` decides (all three below ``ln gap_ratio``: "supported"; some
    above after Holm: "contradicted")."""
    mats, x, n_max = _matrix_items(ieq)
    conds = [Condition(i, "below", math.log(gap_ratio)) for i in range(len(mats))]
    outcome = str(claim_outcomes(x, conds, alpha)[0])
    last = ieq[(ieq.n == n_max) & (ieq.labels == "data")].groupby("matrix").rel_dist.mean()
    parts = []
    for i, m in enumerate(mats):
        ci = t_interval(x[i], 1 - 2 * alpha)
        ratio = interval(*(math.exp(v) for v in (ci.estimate, ci.low, ci.high)), 3)
        parts.append(f"{matrix_math(m)} {ratio} (distance to $F$ with the data labels "
                     f"{last[m]:.2f})")
    sentence = (f"At N = {n_max:,}, distance to $F$ with the data labels divided by the "
                f"distance with labels drawn from the model, {1 - 2 * alpha:.0%} interval "
                f"across {x.shape[1]} seeds: " + "; ".join(parts) + f". Rule: one-sided "
                f"t-tests of the log ratio across seeds at level {alpha:g} against "
                f"$\\ln {gap_ratio:g}$ for every matrix: "
                + {"supported": "the real labels leave no gap beyond sampling at this N.",
                   "contradicted": "a systematic gap: the real labels are not samples from "
                                   "the model.",
                   "inconclusive": "the seeds cannot tell."}[outcome])
    v = Verdict(f"On real data at N = {n_max:,}, the covariance, the empirical Fisher and "
                f"the Hessian are as close to the Fisher as for a well-specified model: "
                f"within {gap_ratio:g} times their distance with labels drawn from the "
                f"model (the information equality up to sampling).", outcome, sentence,
                scale, SECTION_INFOEQ, kind=CLAIM)
    return _with_rates(v, rates)


def covariance_hessian_lines(pairs: pd.DataFrame, summary: pd.DataFrame, *, top_k: int,
                             cosine_holds: float) -> list[str]:
    """One Markdown line per model and stage of :func:`fisher_hessian_study`'s "pairs" and
    "summary" (one seed): cos(D, H), the relative distance before and after the best
    rescaling, the trace ratio and the top-``top_k`` overlap. Descriptive."""
    summ = summary.set_index(["model", "stage", "matrix"])
    dh = pairs[(pairs.a == "D") & (pairs.b == "H")]
    lines = []
    for r in dh.itertuples():
        tr_ratio = float(summ.loc[(r.model, r.stage, "D"), "trace_ratio_to_H"])
        reach = ("above" if r.cosine > cosine_holds else "not above")
        lines.append(f"- **{model_name(r.model)}, {r.stage}**: $\\cos(D, H) = "
                     f"{r.cosine:.3f}$ ({reach} {cosine_holds:g}); "
                     f"$\\lVert D - H \\rVert / \\lVert H \\rVert = {r.rel_dist:.2f}$, or "
                     f"{r.scaled_dist:.2f} after the best rescaling of $D$; "
                     f"$\\operatorname{{tr}} D / \\operatorname{{tr}} H = {tr_ratio:.2f}$; "
                     f"top-{top_k} overlap {r.overlap:.2f}.")
    return lines


def _eligible(cases: pd.DataFrame, cosine_holds: float) -> pd.Series:
    """Per model: every seed near a minimum and the shared-direction baseline's 95th
    percentile below the threshold in every seed."""
    g = cases.groupby("model", sort=False)
    return g.near_minimum.all() & (g.spike_q95.max() < cosine_holds)


def _cosine_items(cases: pd.DataFrame, models: Sequence[str]) -> np.ndarray:
    seeds = sorted(set(cases.seed))
    piv = cases.pivot_table(index="model", columns="seed", values="cosine")
    return np.array([[piv.loc[m, s] if s in piv.columns else np.nan for s in seeds]
                     for m in models], dtype=float).reshape(len(models), len(seeds))


def covariance_hessian_rates(cases: pd.DataFrame, *, cosine_holds: float, alpha: float,
                             n_sim: int, seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`covariance_hessian_verdict` over the eligible models, with
    their pooled seed-to-seed standard deviation of cos(D, H): power at a cosine halfway
    between the threshold and 1, false positives at the threshold and as far below it."""
    ok = _eligible(cases, cosine_holds)
    models = list(ok[ok].index)
    if not models:
        return None
    x = _cosine_items(cases, models)
    sd, df = pooled_seed_sd(x)
    if not (math.isfinite(sd) and sd > 0):
        return None
    effect, low = (1 + cosine_holds) / 2, 2 * cosine_holds - 1
    return claim_rates([Condition(i, "above", cosine_holds) for i in range(len(models))],
                       effect=[effect] * len(models), sd=sd, n_seeds=x.shape[1],
                       alpha=alpha, opposite=[low] * len(models), df=df, n_sim=n_sim,
                       seed=seed, quantity="cosine",
                       describe=f"a cosine of {effect:g} in every eligible model, false "
                                f"positives at {cosine_holds:g} and {low:g}")


def covariance_hessian_verdict(cases: pd.DataFrame, *, cosine_holds: float, batch_size: int,
                               alpha: float, scale: str, rates: ClaimRates | None = None
                               ) -> Verdict:
    """Claim about SGD (the essay: near a minimum the noise covariance approaches a scaled
    Hessian), ``cases`` from :func:`late_seed_study`: at the end of training, cos(D, H) is
    above ``cosine_holds`` in every model. A model is *eligible* when every seed is near a
    minimum (``‖ḡ‖²/tr D < 1/B``) and the cosine can say more than a shared top direction
    (the 95th percentile of that baseline is below ``cosine_holds``). Over the eligible
    models :func:`claim_outcomes` decides; with a model not eligible the claim cannot be
    "supported" (at most "inconclusive")."""
    ok = _eligible(cases, cosine_holds)
    models = list(ok[ok].index)
    x = _cosine_items(cases, models) if models else np.empty((0, 0))
    outcome = (str(claim_outcomes(x, [Condition(i, "above", cosine_holds)
                                      for i in range(len(models))], alpha)[0])
               if models else "inconclusive")
    if outcome == "supported" and not ok.all():
        outcome = "inconclusive"
    parts = []
    for m, d in cases.groupby("model", sort=False):
        ci = t_interval(d.cosine, 1 - 2 * alpha)
        why = ("" if ok[m] else
               " — not a test: " + ("not near a minimum in every seed"
                                    if not d.near_minimum.all() else
                                    "a shared top direction alone reaches the threshold"))
        parts.append(f"{model_name(m)} {ci.format(3)} (shared top direction alone: up to "
                     f"{d.spike_q95.max():.2f}; random spectrum: {d.chance.mean():.2f}; "
                     f"$\\lVert \\bar g \\rVert^2 / \\operatorname{{tr}} D$ "
                     f"{value_range(d.ratio.min(), d.ratio.max())}){why}")
    sentence = (f"Cosine of $D$ and $H$ at the end of training, {1 - 2 * alpha:.0%} interval "
                f"across {cases.seed.nunique()} seeds: " + "; ".join(parts) + f". Rule: "
                f"one-sided t-tests across seeds at level {alpha:g} against {cosine_holds:g} "
                f"for every eligible model (near a minimum: $\\lVert \\bar g \\rVert^2 / "
                f"\\operatorname{{tr}} D < 1/B$ = {1 / batch_size:.3g}): "
                + {"supported": "proportional up to a residual below "
                                f"{math.sqrt(1 - cosine_holds**2):.0%} in every model.",
                   "contradicted": "at least one model is further from proportional.",
                   "inconclusive": "not decided at this scale."}[outcome])
    v = Verdict(f"Near a minimum the covariance of the gradient noise is proportional to the "
                f"Hessian: at the end of training $\\cos(D, H) > {cosine_holds:g}$ (after the "
                f"best rescaling, $D$ differs from $H$ by less than "
                f"{math.sqrt(1 - cosine_holds**2):.0%} of $\\lVert H \\rVert_F$), beyond what "
                f"a shared top direction alone gives.", outcome, sentence, scale,
                SECTION_LATE, kind=CLAIM)
    return _with_rates(v, rates)


POWER_LAW = r"$D_{ii} \propto H_{ii}^{\gamma}$"


def _layer_items(layers: pd.DataFrame) -> tuple[list[tuple[str, str]], np.ndarray]:
    keys = list(dict.fromkeys(zip(layers.model, layers.layer, strict=True)))
    seeds = sorted(set(layers.seed))
    x = np.full((len(keys), len(seeds)), np.nan)
    for r in layers.itertuples():
        x[keys.index((r.model, r.layer)), seeds.index(r.seed)] = r.gamma
    return keys, x


def _range_conditions(n: int, low: float, high: float) -> list[Condition]:
    return [c for i in range(n) for c in (Condition(i, "above", low),
                                          Condition(i, "below", high))]


def power_law_rates(layers: pd.DataFrame, *, gamma_low: float, gamma_high: float,
                    alpha: float, n_sim: int, seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`power_law_verdict` with the pooled seed-to-seed standard
    deviation of the per-layer exponents: power with every exponent at the middle of the
    range, false positives with one exponent at either end."""
    keys, x = _layer_items(layers)
    sd, df = pooled_seed_sd(x)
    if not (math.isfinite(sd) and sd > 0):
        return None
    mid = (gamma_low + gamma_high) / 2
    return claim_rates(_range_conditions(len(keys), gamma_low, gamma_high),
                       effect=[mid] * len(keys), sd=sd, n_seeds=x.shape[1], alpha=alpha,
                       df=df, n_sim=n_sim, seed=seed, quantity="exponent",
                       describe=f"every layer's exponent at {mid:g}, false positives with one "
                                f"at {gamma_low:g} or {gamma_high:g}")


def power_law_verdict(layers: pd.DataFrame, *, gamma_low: float, gamma_high: float,
                      alpha: float, scale: str, rates: ClaimRates | None = None) -> Verdict:
    """Claim about SGD (Zhang, Yang & Tu 2026: per-layer ``D_ii ∝ H_ii^γ`` with
    ``1 ≤ γ ≤ 2``), ``layers`` from :func:`late_seed_study`: every weight layer's exponent
    lies in ``[gamma_low, gamma_high]``. Each (model, layer) gives two conditions, above the
    low end and below the high end, tested across seeds (:func:`claim_outcomes`: all hold,
    "supported"; some fails after Holm, "contradicted"). The exponents come from one
    least-squares fit per layer and seed; their spread across seeds, not the fit's own
    standard error (its points are correlated), measures their uncertainty."""
    keys, x = _layer_items(layers)
    outcome = str(claim_outcomes(x, _range_conditions(len(keys), gamma_low, gamma_high),
                                 alpha)[0])
    listing = "; ".join(f"{model_name(m)} {lay}: {t_interval(x[i], 1 - 2 * alpha).format(2)}"
                        for i, (m, lay) in enumerate(keys))
    sentence = (f"Exponent $\\gamma$ of {POWER_LAW} per weight layer at the end of training, "
                f"{1 - 2 * alpha:.0%} interval across {x.shape[1]} seeds: {listing}; $R^2$ "
                f"{value_range(layers.r2.min(), layers.r2.max())}. Rule: one-sided "
                f"t-tests across seeds at level {alpha:g} against {gamma_low:g} and "
                f"{gamma_high:g} for every layer: "
                + {"supported": "every exponent lies inside the range.",
                   "contradicted": "at least one exponent lies outside the range.",
                   "inconclusive": "not decided at this scale."}[outcome])
    v = Verdict(f"Per weight layer, the noise variance follows the curvature as a power law "
                f"{POWER_LAW} with {gamma_low:g} ≤ γ ≤ {gamma_high:g} (the range of Zhang, "
                f"Yang & Tu 2026).", outcome, sentence, scale, SECTION_DIAGONAL, kind=CLAIM)
    return _with_rates(v, rates)


# --------------------------------------------------------------------------- Fisher-Rao


def _rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ along the last axis of ``x, y: (..., n)``."""
    rx, ry = _rank_rows(x), _rank_rows(y)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / den


def cluster_spearman(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_boot: int,
                     confidence: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spearman's ρ of ``x, y: (n_sim, n)`` with a percentile bootstrap interval that
    resamples whole groups: ``groups: (C, S)`` holds the row indices of each of the ``C``
    groups (configurations); each bootstrap draw takes ``C`` groups with replacement and all
    their rows. Returns ``(rho, low, high)``, ``(n_sim,)`` each."""
    n_sim = x.shape[0]
    c = groups.shape[0]
    rho = _spearman_rows(x, y)
    pick = groups[rng.integers(0, c, (n_sim, n_boot, c))].reshape(n_sim, n_boot, -1)
    rows = np.arange(n_sim)[:, None, None]
    reps = _spearman_rows(x[rows, pick], y[rows, pick])
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    low, high = np.nanquantile(reps, q, axis=1)
    return rho, low, high


def _family_groups(family: pd.DataFrame) -> np.ndarray:
    """``(C, S)`` row indices of each (width, batch size) configuration (equal seeds)."""
    groups = [np.flatnonzero((family.width == w) & (family.batch_size == b))
              for w, b in dict.fromkeys(zip(family.width, family.batch_size, strict=True))]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"every configuration needs the same number of seeds, got {sizes}")
    return np.stack(groups)


def _rho_outcomes(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.where(low > 0, "supported", np.where(high < 0, "contradicted", "inconclusive"))


def fisher_rao_rates(family: pd.DataFrame, *, confidence: float, n_boot: int, n_sim: int,
                     effect: float = 0.6, seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`fisher_rao_verdict`'s rule by simulation: families with the
    data's configurations and seeds, configuration means of ``ln θᵀFθ`` and of the loss
    gap drawn from a bivariate normal with the measured spreads of the configuration means
    and correlation 0 (false positives) or ``effect`` (power), plus seed noise with the
    measured pooled within-configuration spreads. None with fewer than two seeds or two
    configurations."""
    groups = _family_groups(family)
    lf, gap = np.log(family.fr_norm_sq.to_numpy(float)), family.gap_loss.to_numpy(float)
    if groups.shape[0] < 2 or groups.shape[1] < 2:
        return None
    sd_w = [pooled_seed_sd(v[groups])[0] for v in (lf, gap)]
    sd_b = [float(np.std(v[groups].mean(1), ddof=1)) for v in (lf, gap)]
    df = pooled_seed_sd(gap[groups])[1]
    c, s = groups.shape

    def simulate(rho: float):
        def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            z1, z2, e1, e2 = (rng.standard_normal((n, c)), rng.standard_normal((n, c)),
                              rng.standard_normal((n, c, s)), rng.standard_normal((n, c, s)))
            a = sd_b[0] * z1
            b = sd_b[1] * (rho * z1 + math.sqrt(1 - rho**2) * z2)
            xs = (a[..., None] + sd_w[0] * e1).reshape(n, -1)
            ys = (b[..., None] + sd_w[1] * e2).reshape(n, -1)
            return xs, ys
        return draw

    from sgdnoise.decide.harness import Scenario, error_rates, rate_of

    flat = np.arange(c * s).reshape(c, s)

    def rule(batch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        rng = np.random.default_rng(seed)
        _, low, high = cluster_spearman(*batch, flat, n_boot=n_boot, confidence=confidence,
                                        rng=rng)
        return _rho_outcomes(low, high)

    rates = error_rates(rule, [Scenario("none", "no ordering", simulate(0.0)),
                               Scenario("effect", f"correlation {effect:g}",
                                        simulate(effect))],
                        n_sim=n_sim, seed=seed, outcomes=("supported", "contradicted",
                                                          "inconclusive"))
    return ClaimRates(rate_of(rates, "none", "supported").rate,
                      rate_of(rates, "effect", "supported").rate,
                      rate_of(rates, "effect", "contradicted").rate, s, n_sim,
                      float(sd_w[1]), int(df),
                      f"{c} configurations of {s} seeds, a correlation of {effect:g} between "
                      f"the configurations' mean log norm and mean loss gap, false positives at "
                      f"0", "loss gap within a configuration")


def fisher_rao_verdict(family: pd.DataFrame, *, confidence: float, n_boot: int, scale: str,
                       seed: int = 0, rates: ClaimRates | None = None
                       ) -> tuple[Interval, Interval, Verdict]:
    """Claim about SGD's models, ``family`` from :func:`fisher_rao_generalization_study`:
    a larger Fisher-Rao norm goes with a larger generalization gap. Spearman's ρ between
    ``fr_norm_sq`` and ``gap_loss`` over all models, with a ``confidence`` percentile
    interval from a bootstrap over configurations (:func:`cluster_spearman`: the seeds of
    one width and batch size are not independent evidence). "supported" when the interval
    lies above 0, "contradicted" below, else "inconclusive". Also returns the interval for
    the error gap (reported, not decisive)."""
    groups = _family_groups(family)
    out = []
    for col in ("gap_loss", "gap_error"):
        rho, low, high = cluster_spearman(
            family.fr_norm_sq.to_numpy(float)[None], family[col].to_numpy(float)[None],
            groups, n_boot=n_boot, confidence=confidence, rng=np.random.default_rng(seed))
        out.append(Interval(float(rho[0]), float(low[0]), float(high[0]), len(family),
                            confidence))
    rho, rho_err = out
    outcome = str(_rho_outcomes(np.array([rho.low]), np.array([rho.high]))[0])
    pct = f"{confidence:.0%}"
    sentence = (f"Over {len(family)} trained models ({groups.shape[0]} configurations of "
                f"{groups.shape[1]} seeds), Spearman's ρ between the Fisher-Rao norm and the "
                f"loss gap (test − train cross-entropy) is {rho.format(2)} ({pct} interval, "
                f"bootstrap over configurations); with the error gap {rho_err.format(2)}. "
                + {"supported": "Models with a larger norm generalize worse, as a bound "
                                "predicts.",
                   "contradicted": "Models with a larger norm generalize *better*: the "
                                   "ordering a bound would predict is reversed.",
                   "inconclusive": f"The {pct} interval contains 0: this family cannot tell "
                                   "whether the norm orders the gaps."}[outcome])
    v = Verdict("The Fisher-Rao norm bounds generalization: a larger norm goes with a larger "
                "generalization gap.", outcome, sentence, scale, SECTION_FR, kind=CLAIM)
    return rho, rho_err, _with_rates(v, rates)
