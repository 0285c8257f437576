"""Chapter-level computations for chapters 1-3: small problems on (downsampled) CIFAR-10,
Monte Carlo studies of Lemma 1, comparisons of D / F̂ / F / GGN / H, Gaussianity of projected
mini-batch noise, and one-step expected-loss checks (Lemma 2).

Every function takes tensors or models and returns tensors, floats, small dataclasses or
pandas DataFrames; the chapters only call these and plot. Dense linear algebra is float64.

Notation: ``G: (N, P)`` per-example gradients (rows g_i), ``ḡ`` their mean, centred rows
``G̃ = G − 1ḡᵀ``, ``D = G̃ᵀG̃/N``; a mini-batch of size B gives ``g_B`` with covariance
``c·D``, ``c = 1/B`` (with replacement) or ``(N − B)/(B(N − 1))`` (without).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._validate import check_choice, check_matrix, check_positive, check_positive_int

__all__ = [
    "SmallProblem",
    "TrainTrace",
    "build_small_model",
    "compare_matrices",
    "curvature_matrices",
    "diagonal_power_law",
    "fisher_hessian_study",
    "gaussianity_table",
    "lemma1_error_study",
    "lemma2_network_check",
    "least_squares_problem",
    "load_small_problem",
    "loglog_fit",
    "markov_study",
    "minibatch_noise_sq_norms",
    "network_one_step_study",
    "one_step_quadratic_study",
    "predicted_covariance_error",
    "projected_noise",
    "qq_points",
    "top_eigenpairs",
    "trace_vs_batch_study",
    "train_small",
]

DT = torch.float64
VEHICLE_CLASSES = (0, 1, 8, 9)  # airplane, automobile, ship, truck in CIFAR-10 order


# --------------------------------------------------------------------------- data and models


@dataclass
class SmallProblem:
    """A small classification problem: ``x: (N, 3, s, s)`` float64 (normalised, average
    pooled to s×s), ``y: (N,)`` int64, ``identity``: the data identity record as a dict."""

    x: torch.Tensor
    y: torch.Tensor
    identity: dict[str, Any]
    classes: list[str]

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


def load_small_problem(
    dataset: str,
    n_train: int,
    *,
    image_size: int = 8,
    seed: int = 0,
    data_dir: str | None = None,
) -> SmallProblem:
    """A stratified seeded subset of ``n_train`` training images of ``dataset``
    ("cifar10" | "synthetic"), normalised and average-pooled to ``image_size``² pixels so
    that dense (P, P) matrices stay small. The identity records the pooling."""
    from sgdnoise.data import load_dataset, to_float

    n_train = check_positive_int("n_train", n_train)
    image_size = check_positive_int("image_size", image_size)
    if 32 % image_size:
        raise ValueError(f"image_size must divide 32, got {image_size}")
    kw = {"n_test": 10} if dataset == "synthetic" else {}
    data = load_dataset(dataset, n_train=n_train, seed=seed, data_dir=data_dir, **kw)
    x = to_float(data.train_x)
    x = torch.nn.functional.avg_pool2d(x, 32 // image_size).to(DT)
    identity = dict(data.identity.to_dict())
    identity["preprocessing"] = f"normalised, average-pooled to {image_size}x{image_size}"
    return SmallProblem(x=x, y=data.train_y.clone(), identity=identity, classes=list(data.classes))


def build_small_model(
    name: str,
    in_shape: Sequence[int],
    *,
    width: int = 8,
    num_classes: int = 10,
    bias: bool = True,
    activation: str = "relu",
    seed: int = 0,
) -> nn.Module:
    """A float64 model for dense-matrix studies: "softmax" (softmax regression), "mlp"
    (one hidden layer of ``width`` units, ``activation`` "relu" | "tanh"), "cnn" (3-block
    small CNN, first block ``width`` channels, no normalisation). Seeded."""
    from sgdnoise.models import build_model

    check_choice("name", name, ("softmax", "mlp", "cnn"))
    torch.manual_seed(seed)
    if name == "softmax":
        model = build_model("softmax", num_classes=num_classes, in_shape=in_shape, bias=bias)
    elif name == "mlp":
        model = build_model(
            "mlp", num_classes=num_classes, in_shape=in_shape, hidden=[width], bias=bias,
            activation=activation,
        )
    else:
        model = build_model(
            "cnn", num_classes=num_classes, in_shape=in_shape, width=width, norm="none",
            bias=bias,
        )
    return model.to(DT)


@dataclass
class TrainTrace:
    """Result of :func:`train_small`: ``history`` (step, train_loss, train_error) at each
    checkpoint, ``snapshots`` {step: state_dict copy}."""

    history: pd.DataFrame
    snapshots: dict[int, dict[str, torch.Tensor]] = field(repr=False)


def _loss_and_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        loss = float(nn.functional.cross_entropy(out, y))
        err = float((out.argmax(1) != y).double().mean())
    return loss, err


def train_small(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    checkpoints: Sequence[int] = (),
    seed: int = 0,
) -> TrainTrace:
    """Plain SGD on mean cross-entropy (batches drawn without replacement, reshuffled each
    epoch), ``steps`` updates; snapshots the parameters at every step in ``checkpoints``
    (0 = initialisation) and at the end. Modifies ``model`` in place."""
    steps = check_positive_int("steps", steps)
    lr = check_positive("lr", lr)
    batch_size = check_positive_int("batch_size", batch_size)
    n = x.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size must be <= N={n}, got {batch_size}")
    marks = sorted({int(c) for c in checkpoints if 0 <= int(c) <= steps} | {steps})
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    rows, snaps = [], {}

    def mark(t: int) -> None:
        loss, err = _loss_and_error(model, x, y)
        rows.append({"step": t, "train_loss": loss, "train_error": err})
        snaps[t] = copy.deepcopy(model.state_dict())

    if 0 in marks:
        mark(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    for t in range(1, steps + 1):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[idx]), y[idx]), params)
        with torch.no_grad():  # plain SGD (torch.optim would import torch._dynamo: seconds)
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-lr)
        if t in marks:
            mark(t)
    return TrainTrace(history=pd.DataFrame(rows), snapshots=snaps)


# --------------------------------------------------------------------------- small statistics


def loglog_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line through ``(log x, log y)``: ``slope``, ``intercept`` (natural log),
    ``slope_se`` (standard error) and ``r2``. Needs >= 3 positive points."""
    lx = np.log(np.asarray(x, dtype=np.float64))
    ly = np.log(np.asarray(y, dtype=np.float64))
    if lx.shape != ly.shape or lx.size < 3 or not np.all(np.isfinite(lx + ly)):
        raise ValueError(f"need >= 3 matching positive points, got x={list(x)}, y={list(y)}")
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = max(lx.size - 2, 1)
    s2 = float(resid @ resid) / dof
    sxx = float(((lx - lx.mean()) ** 2).sum())
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    return {
        "slope": float(coef[0]),
        "intercept": float(coef[1]),
        "slope_se": math.sqrt(s2 / sxx) if sxx > 0 else float("nan"),
        "r2": 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan"),
    }


def _batch_indices(n: int, b: int, s: int, replacement: bool, gen: torch.Generator):
    if replacement:
        return torch.randint(n, (s, b), generator=gen)
    return torch.rand((s, n), generator=gen).argsort(dim=1)[:, :b]


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
        idx = _batch_indices(n, b, stop - start, replacement, gen)
        xi = Gc[idx].mean(1)  # (chunk, P)
        norms[start:stop] = (xi * xi).sum(1)
        total += xi.sum(0)
    return norms, total


# --------------------------------------------------------------------------- chapter 1


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
            idx = _batch_indices(n, b, counts[-1], replacement, gen)
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


# --------------------------------------------------------------------------- chapter 2


def curvature_matrices(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int | None = 250
) -> dict[str, torch.Tensor]:
    """Dense float64 ``(P, P)`` matrices at the model's current parameters, for mean
    cross-entropy: "D" (gradient covariance), "F_hat" (empirical Fisher), "F" (true Fisher),
    "GGN", "H" (Hessian); plus "gbar" (P,) and "G" (N, P) per-example gradients."""
    from sgdnoise.curvature import ggn, hessian, true_fisher
    from sgdnoise.grads import per_example_grads

    loss = nn.functional.cross_entropy
    G = per_example_grads(model, loss, x, y, chunk_size=chunk_size).to(DT)
    n = G.shape[0]
    gbar = G.mean(0)
    F_hat = G.T @ G / n
    D = F_hat - torch.outer(gbar, gbar)
    return {
        "D": 0.5 * (D + D.T),
        "F_hat": F_hat,
        "F": true_fisher(model, x, chunk_size=chunk_size).to(DT),
        "GGN": ggn(model, loss, x, y, chunk_size=chunk_size).to(DT),
        "H": hessian(model, loss, x, y, chunk_size=chunk_size).to(DT),
        "gbar": gbar,
        "G": G,
    }


def top_eigenpairs(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (largest algebraic) eigenpairs of a dense symmetric ``A: (P, P)``:
    ``(evals (k,) descending, evecs (P, k))``."""
    check_matrix("A", A, square=True)
    k = check_positive_int("k", k)
    P = A.shape[0]
    if k > P:
        raise ValueError(f"k must be <= P={P}, got {k}")
    evals, evecs = torch.linalg.eigh(0.5 * (A + A.T))
    return evals.flip(0)[:k], evecs.flip(1)[:, :k]


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


# --------------------------------------------------------------------------- chapter 3


def projected_noise(
    G: torch.Tensor,
    U: torch.Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Projections ``(g_B − ḡ)ᵀU: (S, k)`` of mini-batch noise on the columns of
    ``U: (P, k)``; computed as mini-batch means of the rows of ``G̃U: (N, k)`` (cost O(NPk +
    SBk))."""
    check_matrix("G", G)
    check_matrix("U", U)
    if U.shape[0] != G.shape[1]:
        raise ValueError(f"U must have {G.shape[1]} rows, got shape {tuple(U.shape)}")
    b = check_positive_int("batch_size", batch_size)
    s = check_positive_int("num_samples", num_samples)
    n = G.shape[0]
    if not replacement and b > n:
        raise ValueError(f"batch_size must be <= N={n} without replacement, got {b}")
    Z = (G - G.mean(0, keepdim=True)) @ U.to(G.dtype)  # (N, k)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(s, 2**24 // max(b * Z.shape[1], 1)))
    out = torch.empty(s, Z.shape[1], dtype=Z.dtype)
    for start in range(0, s, chunk):
        stop = min(start + chunk, s)
        out[start:stop] = Z[_batch_indices(n, b, stop - start, replacement, gen)].mean(1)
    return out


def _std_moments(z: torch.Tensor, var: torch.Tensor | None = None):
    """Skewness and excess kurtosis of the columns of z: (S, k) about mean 0."""
    m2 = (z**2).mean(0) if var is None else var
    return (z**3).mean(0) / m2**1.5, (z**4).mean(0) / m2**2 - 3.0


def gaussianity_table(
    G: torch.Tensor,
    U: torch.Tensor,
    batch_sizes: Sequence[int],
    num_samples: int,
    *,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """How Gaussian is mini-batch noise along the columns of ``U: (P, k)`` (unit vectors)?

    For each B (with replacement) and direction u: variance (MC vs Lemma 1 ``uᵀDu/B``),
    skewness and excess kurtosis (MC vs the exact prediction for a mean of B i.i.d. draws:
    ``skew_1/√B`` and ``kurt_1/B`` from the N per-example projections), the
    Kolmogorov-Smirnov distance to N(0, uᵀDu/B) with its p-value, and the frequency of
    ``|z| > 3σ`` (Gaussian: 0.0027)."""
    from scipy import stats

    s = check_positive_int("num_samples", num_samples)
    Z1 = (G - G.mean(0, keepdim=True)) @ U.to(G.dtype)  # per-example projections (N, k)
    var1 = (Z1**2).mean(0)
    skew1, kurt1 = _std_moments(Z1)
    labels = list(labels) if labels is not None else [f"u{j + 1}" for j in range(U.shape[1])]
    rows = []
    for i, b in enumerate(batch_sizes):
        z = projected_noise(G, U, b, s, replacement=True, seed=seed + 101 * i)
        var_f = var1 / b
        skew, kurt = _std_moments(z)
        for j in range(U.shape[1]):
            sd = math.sqrt(float(var_f[j]))
            zj = z[:, j].numpy()
            ks = stats.kstest(zj, "norm", args=(0.0, sd)) if sd > 0 else None
            rows.append({
                "batch_size": int(b),
                "direction": labels[j],
                "var_mc": float(z[:, j].var()),
                "var_formula": float(var_f[j]),
                "skew_mc": float(skew[j]),
                "skew_pred": float(skew1[j]) / math.sqrt(b),
                "exkurt_mc": float(kurt[j]),
                "exkurt_pred": float(kurt1[j]) / b,
                "ks_stat": float(ks.statistic) if ks else float("nan"),
                "ks_pvalue": float(ks.pvalue) if ks else float("nan"),
                "tail3_mc": float((np.abs(zj) > 3 * sd).mean()) if sd > 0 else float("nan"),
                "tail3_gauss": 2 * float(stats.norm.sf(3.0)),
            })
    return pd.DataFrame(rows)


def qq_points(z: torch.Tensor | np.ndarray, *, max_points: int = 400) -> pd.DataFrame:
    """Normal QQ plot data for a 1-D sample: standardised order statistics (about the
    sample mean and sd) against N(0, 1) quantiles at plotting positions (i − ½)/n, thinned
    evenly to ``max_points`` (always keeping both extremes)."""
    from scipy import stats

    v = np.sort(np.asarray(z, dtype=np.float64).reshape(-1))
    n = v.size
    if n < 3:
        raise ValueError(f"z must hold at least 3 values, got {n}")
    q = stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    sd = v.std()
    keep = np.unique(np.linspace(0, n - 1, min(max_points, n)).round().astype(int))
    return pd.DataFrame({"normal_quantile": q[keep], "sample_quantile": (v[keep] - v.mean()) / sd})


def lemma2_network_check(
    G: torch.Tensor,
    A: torch.Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Monte Carlo check of Lemma 2 on real mini-batch gradients: the average of
    ``g_Bᵀ A g_B`` over S batches vs ``tr(A·Cov g_B) + ḡᵀAḡ`` (Lemma 1 covariance). Returns
    mc, se, formula, z, trace_term, mean_term."""
    from sgdnoise.covariance import minibatch_covariance, sample_minibatch_gradients
    from sgdnoise.stability import expected_quadratic_form

    check_matrix("A", A, square=True)
    gen = torch.Generator().manual_seed(seed)
    X = sample_minibatch_gradients(G, batch_size, num_samples, replacement=replacement,
                                   generator=gen)
    q = ((X @ A) * X).sum(1)
    gbar = G.mean(0)
    C = minibatch_covariance(G, batch_size, replacement=replacement)
    formula = float(expected_quadratic_form(A, gbar, C))
    se = float(q.std() / math.sqrt(num_samples))
    return {
        "mc": float(q.mean()),
        "se": se,
        "formula": formula,
        "z": (float(q.mean()) - formula) / se,
        "trace_term": float((A * C.T).sum()),
        "mean_term": float(gbar @ A @ gbar),
    }


@dataclass
class LeastSquares:
    """Least squares ``L(θ) = ½ mean_i (x_iᵀθ − y_i)²``: ``X: (N, d)``, ``y: (N,)``,
    ``H = XᵀX/N``, minimiser ``theta_star``, ``min_loss`` = L(θ*). Excess loss
    ``L(θ) − L(θ*) = ½(θ − θ*)ᵀH(θ − θ*)`` is the quadratic of chapter 3."""

    X: torch.Tensor
    y: torch.Tensor
    H: torch.Tensor
    theta_star: torch.Tensor
    min_loss: float

    def per_example_grads(self, theta: torch.Tensor) -> torch.Tensor:
        """``G: (N, d)``, ``g_i = x_i (x_iᵀθ − y_i)``."""
        return self.X * (self.X @ theta - self.y)[:, None]

    def excess_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``½(θ − θ*)ᵀH(θ − θ*)`` for ``θ: (d,)`` or ``(S, d)``."""
        from sgdnoise.stability import quadratic_loss

        return quadratic_loss(self.H, theta, self.theta_star)

    def point_near_minimum(self, excess: float, *, seed: int = 0) -> torch.Tensor:
        """``θ = θ* + r·v`` with ``v`` a seeded random direction and ``r`` chosen so that the
        excess loss ``½ r² vᵀHv`` equals ``excess``."""
        excess = check_positive("excess", excess)
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.theta_star.shape[0], dtype=DT, generator=gen)
        r = math.sqrt(2 * excess / float(v @ self.H @ v))
        return self.theta_star + r * v


def least_squares_problem(problem: SmallProblem) -> LeastSquares:
    """Linear regression of ±1 targets (vehicle vs animal) on the flattened pooled pixels
    plus a constant feature, ``X: (N, d)``; θ* is the (minimum-norm) least-squares
    solution, so ``L(θ) − L(θ*) = ½(θ − θ*)ᵀH(θ − θ*)`` exactly."""
    X = torch.cat([problem.x.reshape(problem.n, -1), torch.ones(problem.n, 1, dtype=DT)], 1)
    vehicle = torch.zeros(problem.n, dtype=torch.bool)
    for c in VEHICLE_CLASSES:
        vehicle |= problem.y == c
    y = torch.where(vehicle, 1.0, -1.0).to(DT)
    n = X.shape[0]
    H = X.T @ X / n
    theta_star = torch.linalg.pinv(X) @ y
    min_loss = float(0.5 * ((X @ theta_star - y) ** 2).mean())
    return LeastSquares(X=X, y=y, H=0.5 * (H + H.T), theta_star=theta_star, min_loss=min_loss)


def one_step_quadratic_study(
    ls: LeastSquares,
    theta: torch.Tensor,
    lrs: Sequence[float],
    batch_sizes: Sequence[int],
    num_samples: int,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Monte Carlo ``E[L(θ − η g_B)]`` (excess loss, batches with replacement) against
    ``L(θ − ηḡ) + (η²/2B) tr(HD)`` (:func:`sgdnoise.stability.sgd_one_step_expected_loss`)
    for each η and B. Columns: lr, batch_size, current, deterministic, noise, formula,
    mc, se, z."""
    from sgdnoise.stability import sgd_one_step_expected_loss

    G = ls.per_example_grads(theta)
    n = G.shape[0]
    Gc = G - G.mean(0, keepdim=True)
    D = Gc.T @ Gc / n
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b in batch_sizes:
        idx = torch.randint(n, (num_samples, int(b)), generator=gen)
        gB = G[idx].mean(1)
        for lr in lrs:
            f = sgd_one_step_expected_loss(ls.H, theta, D, lr, int(b), theta_star=ls.theta_star)
            nxt = ls.excess_loss(theta - lr * gB)
            se = float(nxt.std() / math.sqrt(num_samples))
            rows.append({
                "lr": float(lr), "batch_size": int(b), "current": f.current,
                "deterministic": f.deterministic, "noise": f.noise, "formula": f.expected,
                "mc": float(nxt.mean()), "se": se, "z": (float(nxt.mean()) - f.expected) / se,
            })
    return pd.DataFrame(rows)


def markov_study(
    ls: LeastSquares,
    theta: torch.Tensor,
    lr: float,
    batch_size: int,
    increases: Sequence[float],
    num_samples: int,
    *,
    relative: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Empirical ``P(L_{t+1} − L_t >= a)`` of one SGD step (excess loss, which is >= 0)
    against Markov's bound ``E[L_{t+1}]/(L_t + a)`` with E from Lemma 2. With ``relative``
    the ``increases`` are multiples of ``E[L_{t+1}]``. Columns: increase, frequency,
    frequency_se, bound, expected_next, current."""
    from sgdnoise.stability import markov_loss_increase_bound, sgd_one_step_expected_loss

    G = ls.per_example_grads(theta)
    n = G.shape[0]
    Gc = G - G.mean(0, keepdim=True)
    D = Gc.T @ Gc / n
    f = sgd_one_step_expected_loss(ls.H, theta, D, lr, batch_size, theta_star=ls.theta_star)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num_samples, int(batch_size)), generator=gen)
    change = ls.excess_loss(theta - lr * G[idx].mean(1)) - f.current
    rows = []
    for a in increases:
        a = float(a) * (f.expected if relative else 1.0)
        p = float((change >= a).double().mean())
        rows.append({
            "increase": float(a),
            "frequency": p,
            "frequency_se": math.sqrt(max(p * (1 - p), 1.0 / num_samples) / num_samples),
            "bound": markov_loss_increase_bound(f.expected, f.current, a),
            "expected_next": f.expected,
            "current": f.current,
        })
    return pd.DataFrame(rows)


def _losses_at(
    model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
    thetas: torch.Tensor, chunk: int = 32,
) -> torch.Tensor:
    """Mean loss over (x, y) at each parameter vector in ``thetas: (S, P)``."""
    from torch.func import functional_call, vmap

    from sgdnoise.grads import trainable_named_parameters

    named = trainable_named_parameters(model)
    shapes = [(name, p.shape, p.numel()) for name, p in named]

    def loss_at(theta):
        params, off = {}, 0
        for name, shape, k in shapes:
            params[name] = theta[off : off + k].reshape(shape)
            off += k
        return loss_fn(functional_call(model, params, (x,)), y)

    f = vmap(loss_at)
    with torch.no_grad():
        return torch.cat([f(thetas[i : i + chunk]) for i in range(0, thetas.shape[0], chunk)])


def network_one_step_study(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    batch_size: int,
    num_samples: int,
    *,
    mats: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One SGD step on a real network: the Monte Carlo mean of ``L(θ − η g_B) − L(θ)``
    (full-data mean cross-entropy, batches with replacement) against the second-order
    prediction ``−η‖ḡ‖² + (η²/2)(ḡᵀHḡ + tr(HD)/B)``
    (:func:`sgdnoise.stability.expected_loss_change_second_order`).

    The linear term ``−ηḡᵀ(g_B − ḡ)`` has mean zero and dominates the spread, so it is
    also reported subtracted (an exact control variate: ``mc_cv``, ``se_cv``). Also
    reports the actual full-batch change (``gd_change``) to separate the Taylor error from
    the noise term; ``noise_ratio`` = (Monte Carlo noise part)/(predicted noise term) with
    its standard error ``noise_ratio_se`` and ``noise_z``, and ``gd_ratio`` = actual /
    predicted full-batch change. ``mats`` may pass precomputed {"H", "G"} (from
    :func:`curvature_matrices`)."""
    from sgdnoise.curvature import hessian
    from sgdnoise.grads import flat_params, per_example_grads
    from sgdnoise.stability import expected_loss_change_second_order

    loss = nn.functional.cross_entropy
    if mats is None:
        G = per_example_grads(model, loss, x, y).to(DT)
        H = hessian(model, loss, x, y).to(DT)
    else:
        G, H = mats["G"], mats["H"]
    n = G.shape[0]
    gbar = G.mean(0)
    Gc = G - gbar
    D = Gc.T @ Gc / n
    theta = flat_params(model).detach().to(DT)
    L0 = float(_losses_at(model, loss, x, y, theta[None])[0])
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num_samples, int(batch_size)), generator=gen)
    xi = Gc[idx].mean(1)  # (S, P) noise samples
    rows = []
    for lr in lrs:
        pred = expected_loss_change_second_order(H, gbar, D, lr, int(batch_size))
        gd = float(_losses_at(model, loss, x, y, (theta - lr * gbar)[None])[0]) - L0
        dL = _losses_at(model, loss, x, y, theta - lr * (gbar + xi)) - L0
        cv = dL + lr * (xi @ gbar)
        rows.append({
            "lr": float(lr),
            "batch_size": int(batch_size),
            "mc": float(dL.mean()),
            "se": float(dL.std() / math.sqrt(num_samples)),
            "mc_cv": float(cv.mean()),
            "se_cv": float(cv.std() / math.sqrt(num_samples)),
            "predicted": pred["expected"],
            "pred_deterministic": pred["deterministic"],
            "pred_noise": pred["noise"],
            "gd_change": gd,
            "mc_noise_part": float(cv.mean()) - gd,
            "noise_ratio": (float(cv.mean()) - gd) / pred["noise"],
            "noise_ratio_se": float(cv.std() / math.sqrt(num_samples)) / pred["noise"],
            "noise_z": (float(cv.mean()) - gd - pred["noise"])
            / float(cv.std() / math.sqrt(num_samples)),
            "gd_ratio": gd / pred["deterministic"],
        })
    return pd.DataFrame(rows)


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
