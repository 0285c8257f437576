"""Chapter-5 computations: the loss landscape of over-parameterised classifiers.

Notation: N examples, P parameters (P ≫ N), C classes. ``G: (N, P)`` holds the per-example
gradients g_i as rows, ḡ their mean, F̂ = GᵀG/N: (P, P) the empirical Fisher and
D = F̂ − ḡḡᵀ the gradient covariance. H is the Hessian of the mean loss and GGN the
generalised Gauss-Newton matrix (equal to the true Fisher for softmax cross-entropy).

- :func:`gram_spectrum`: the non-zero spectrum of F̂ (or D) from the N × N Gram matrix
  GGᵀ/N, which shares its non-zero eigenvalues with GᵀG/N; hence rank F̂ ≤ N, rank D ≤ N − 1.
- :func:`numerical_rank`, :func:`count_outliers`, :func:`near_zero_fraction`: reading a
  spectrum (eigenvalues or an SLQ quadrature rule).
- :func:`class_mean_gradients`, :func:`subspace_capture`: the class structure behind the
  outliers (the span of the C class-mean gradients).
- :func:`noise_energy_fraction`: Σ_{j≤k} u_jᵀ D u_j / tr D for an orthonormal basis U.
- :func:`train_to_interpolation` and :func:`overparam_study`: the chapter's pipeline on a
  trained network.
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

from sgdnoise._validate import check_matrix, check_positive, check_positive_int

__all__ = [
    "OverparamResult",
    "class_mean_gradients",
    "count_outliers",
    "gram_spectrum",
    "near_zero_fraction",
    "noise_energy_fraction",
    "numerical_rank",
    "overparam_study",
    "random_subspace_fraction",
    "slq_near_zero_fraction",
    "slq_zero_cluster",
    "subspace_capture",
    "train_to_interpolation",
]

DT = torch.float64


# --------------------------------------------------------------------------- rank


def gram_spectrum(G: Tensor, *, centered: bool = False) -> Tensor:
    """Eigenvalues (N,), descending, of K = G̃G̃ᵀ/N: the non-zero spectrum of F̂ (or of D).

    G: (N, P). With ``centered=False`` G̃ = G and the non-zero eigenvalues of K are those of
    F̂ = GᵀG/N; with ``centered=True`` G̃ = G − 1ḡᵀ and they are those of D. (If K w = λ w
    with λ > 0, then u = G̃ᵀw satisfies (G̃ᵀG̃/N) u = λ u, and conversely, so the two
    matrices share their non-zero spectrum; K is N × N, hence at most N non-zero values.)
    Computed in float64; tiny negative rounding values are clipped to 0.
    """
    check_matrix("G", G)
    A = G.to(DT)
    if centered:
        A = A - A.mean(dim=0, keepdim=True)
    K = A @ A.T / A.shape[0]
    evals = torch.linalg.eigvalsh(0.5 * (K + K.T)).flip(0)
    return evals.clamp_min(0.0)


def numerical_rank(evals: Tensor, *, rtol: float | None = None, dim: int | None = None) -> int:
    """Number of eigenvalues above ``rtol · max|λ|``.

    Default ``rtol = 10 · max(len(evals), dim or 0) · eps(float64)``, the usual rounding
    threshold for a symmetric eigensolver on a matrix of that size."""
    ev = torch.as_tensor(evals, dtype=DT).reshape(-1)
    if ev.numel() == 0:
        return 0
    top = float(ev.abs().max())
    if top == 0.0:
        return 0
    if rtol is None:
        rtol = 10 * max(ev.numel(), dim or 0) * torch.finfo(DT).eps
    rtol = check_positive("rtol", rtol)
    return int((ev.abs() > rtol * top).sum())


# --------------------------------------------------------------------------- outliers


def count_outliers(evals: Tensor, *, max_outliers: int = 30, min_gap: float = 1.5) -> int:
    """Number of outliers at the top of a spectrum, by the largest multiplicative gap.

    With positive eigenvalues λ_1 ≥ λ_2 ≥ ... (only the first ``max_outliers + 1`` are
    looked at), the count is the k ∈ {1..max_outliers} maximising λ_k / λ_{k+1}, provided
    that ratio is at least ``min_gap``; otherwise 0 (no clear separation). Non-positive
    values end the list (a ratio to 0 counts as an infinite gap).
    """
    max_outliers = check_positive_int("max_outliers", max_outliers)
    min_gap = check_positive("min_gap", min_gap)
    ev = torch.as_tensor(evals, dtype=DT).reshape(-1).sort(descending=True).values
    ev = ev[: max_outliers + 1]
    if ev.numel() < 2 or float(ev[0]) <= 0:
        return 0
    ratios = []
    for k in range(ev.numel() - 1):
        a, b = float(ev[k]), float(ev[k + 1])
        if a <= 0:
            break
        ratios.append(math.inf if b <= 0 else a / b)
        if b <= 0:
            break
    if not ratios:
        return 0
    best = int(np.argmax(ratios))
    return best + 1 if ratios[best] >= min_gap else 0


def near_zero_fraction(evals: Tensor, *, rtol: float = 1e-3, dim: int | None = None) -> float:
    """Fraction of a spectrum with |λ| ≤ rtol · max|λ|.

    ``evals`` may list only the non-zero part of a (dim × dim) spectrum (e.g. a Gram
    spectrum of length N for a P × P matrix); the missing dim − len(evals) eigenvalues are
    then exact zeros and count as near zero."""
    ev = torch.as_tensor(evals, dtype=DT).reshape(-1)
    rtol = check_positive("rtol", rtol, allow_zero=True)
    dim = ev.numel() if dim is None else check_positive_int("dim", dim)
    if dim < ev.numel():
        raise ValueError(f"dim must be >= len(evals) = {ev.numel()}, got {dim}")
    top = float(ev.abs().max()) if ev.numel() else 0.0
    small = int((ev.abs() <= rtol * top).sum())
    return (small + dim - ev.numel()) / dim


def slq_near_zero_fraction(
    density: Any, *, rtol: float = 1e-3, scale: float | None = None
) -> float:
    """Fraction of the spectral mass with |λ| ≤ rtol · scale from an SLQ quadrature rule.

    ``density`` is a :class:`sgdnoise.spectral.SpectralDensity` (its ``nodes`` and
    ``weights``, each probe's weights summing to 1); ``scale`` defaults to the largest
    |node|. The estimate averages over probes Σ_j w_j 1{|θ_j| ≤ rtol·scale}, an unbiased
    estimate of the eigenvalue fraction in that window when the quadrature has resolved it.
    """
    nodes, weights = density.nodes.to(DT), density.weights.to(DT)
    used = weights > 0
    if scale is None:
        scale = float(nodes[used].abs().max())
    scale = check_positive("scale", scale)
    rtol = check_positive("rtol", rtol, allow_zero=True)
    inside = (nodes.abs() <= rtol * scale) & used
    return float((weights * inside).sum() / nodes.shape[0])


def slq_zero_cluster(density: Any, *, scale: float | None = None) -> dict[str, float]:
    """The Gauss node nearest 0 of each SLQ probe: its weight and |position| / ``scale``.

    An m-node Gauss rule cannot split mass finer than its node spacing: a large cluster of
    near-zero eigenvalues shows up as one node (or a few) near 0 whose weight is the
    cluster's share of the spectrum and whose position is the cluster's centre of mass.
    Returns {"weight": mean over probes of that node's weight, "position": mean of its
    |θ| / scale} (``scale`` defaults to the largest |node|), so a caller can tell whether a
    window rtol · scale is wider than the quadrature's resolution (position ≪ rtol) or not.
    """
    nodes, weights = density.nodes.to(DT), density.weights.to(DT)
    used = weights > 1e-10  # nodes with numerically no weight (spurious Ritz values) skipped
    if scale is None:
        scale = float(nodes[used].abs().max())
    scale = check_positive("scale", scale)
    dist = torch.where(used, nodes.abs(), torch.full_like(nodes, math.inf))
    j = dist.argmin(dim=1)
    rows = torch.arange(nodes.shape[0])
    return {"weight": float(weights[rows, j].mean()),
            "position": float((dist[rows, j] / scale).mean())}


# --------------------------------------------------------------------------- class structure


def class_mean_gradients(G: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """M: (C, P), row c the mean gradient δ_c of the examples of class c (0 if none).

    F̂ = Σ_c π_c δ_c δ_cᵀ + Σ_c π_c W_c with π_c the class proportions and W_c the
    within-class second moment about δ_c; the first (between-class) term has rank ≤ C."""
    check_matrix("G", G)
    c = check_positive_int("num_classes", num_classes)
    y = torch.as_tensor(y).reshape(-1).long()
    if y.numel() != G.shape[0]:
        raise ValueError(f"y must have N = {G.shape[0]} labels, got {y.numel()}")
    if int(y.min()) < 0 or int(y.max()) >= c:
        raise ValueError(f"labels must lie in [0, {c - 1}], got range [{int(y.min())}, "
                         f"{int(y.max())}]")
    M = torch.zeros(c, G.shape[1], dtype=DT, device=G.device)
    M.index_add_(0, y.to(G.device), G.to(DT))
    counts = torch.bincount(y, minlength=c).to(DT).clamp_min(1).to(G.device)
    return M / counts[:, None]


def subspace_capture(U: Tensor, M: Tensor, *, rtol: float = 1e-8) -> float:
    """Mean squared norm of the projections of the orthonormal columns of U: (P, k) onto
    span(rows of M: (m, P)): ‖Q_Mᵀ U‖_F² / k ∈ [0, 1] (1: span U ⊂ span M).

    A random k-subspace gives on average r/P with r = rank M."""
    check_matrix("U", U)
    check_matrix("M", M)
    if M.shape[1] != U.shape[0]:
        raise ValueError(f"M must have P = {U.shape[0]} columns, got shape {tuple(M.shape)}")
    Q, R = torch.linalg.qr(M.T.to(DT))
    d = R.diagonal().abs()
    keep = d > rtol * float(d.max()) if d.numel() and float(d.max()) > 0 else d > 0
    Q = Q[:, keep]
    proj = Q.T @ U.to(DT)
    return float((proj**2).sum() / U.shape[1])


# --------------------------------------------------------------------------- noise energy


def noise_energy_fraction(cov: Any, U: Tensor) -> Tensor:
    """Cumulative fractions f_k = Σ_{j≤k} u_jᵀ C u_j / tr C, k = 1..K: (K,).

    cov: anything with ``matmat(V: (P, K)) -> (P, K)`` and ``trace()`` (e.g.
    :class:`sgdnoise.covariance.CovarianceOperator`, whose C is D/B up to a factor that
    cancels here). U: (P, K) with orthonormal columns (e.g. top Hessian eigenvectors).
    Cost: K products with C. For a uniformly random K-dimensional subspace the expected
    fraction is K/P (:func:`random_subspace_fraction`); the best possible is the sum of
    the top K eigenvalues of C over its trace."""
    check_matrix("U", U)
    tr = float(cov.trace())
    if tr <= 0:
        raise ValueError(f"the covariance has trace {tr}; the fraction is undefined")
    CU = cov.matmat(U)
    q = (U.to(DT) * CU.to(DT)).sum(dim=0)
    return torch.cumsum(q, dim=0) / tr


def random_subspace_fraction(k: int, dim: int) -> float:
    """E[Σ_{j≤k} u_jᵀ C u_j] / tr C = k / dim for a uniformly random k-subspace of R^dim
    (E[u uᵀ] = I/dim for a uniform unit vector u)."""
    k = check_positive_int("k", k)
    dim = check_positive_int("dim", dim)
    if k > dim:
        raise ValueError(f"k must be <= dim = {dim}, got {k}")
    return k / dim


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
    """Plain SGD on mean cross-entropy until the train error is ≤ ``target_error`` (checked
    after every epoch) or ``max_epochs`` epochs. Batches: a fresh permutation per epoch.
    Modifies ``model`` in place; returns one row per epoch (epoch, step, train_loss,
    train_error), epoch 0 = initialisation."""
    lr = check_positive("lr", lr)
    batch_size = check_positive_int("batch_size", batch_size)
    max_epochs = check_positive_int("max_epochs", max_epochs)
    target_error = check_positive("target_error", target_error, allow_zero=True)
    n = x.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size must be <= N = {n}, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.functional.cross_entropy

    def record(epoch: int, step: int) -> dict[str, float]:
        with torch.no_grad():
            out = model(x)
            return {"epoch": epoch, "step": step, "train_loss": float(loss_fn(out, y)),
                    "train_error": float((out.argmax(1) != y).double().mean())}

    rows = [record(0, 0)]
    step = 0
    for epoch in range(1, max_epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
        rows.append(record(epoch, step))
        if not math.isfinite(rows[-1]["train_loss"]):
            break
        if rows[-1]["train_error"] <= target_error:
            break
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
    zero_cluster: DataFrame (matrix, weight and |position|/λ_max of the SLQ node nearest 0,
    see :func:`slq_zero_cluster`); grad_norm_sq (‖ḡ‖²) and trace_cov (tr D)."""

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
       k/P and against D's own top-k (the optimum).
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
    if curvature:
        say("noise energy")
        frac_h = noise_energy_fraction(cov, h_vecs)
        d_best = torch.cumsum(gram_d[:top_k], 0) / cov.trace()
        energy = pd.DataFrame({
            "k": np.arange(1, top_k + 1),
            "top-k Hessian eigenvectors": frac_h.cpu().numpy(),
            "top-k eigenvectors of D (optimum)": d_best.cpu().numpy(),
            "random k-subspace (k/P)": np.arange(1, top_k + 1) / p,
        })

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
        zero_cluster=zero_cluster,
        grad_norm_sq=float(gbar @ gbar), trace_cov=cov.trace(),
    )
