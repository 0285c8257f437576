"""Mini-batch gradient covariance (Lemma 1), dense and matrix-free.

Notation: G: (N, P) holds the per-example gradients g_i as rows, ḡ = (1/N) Σ_i g_i: (P,),
G̃ = G − 1ḡᵀ: (N, P) the centred rows, and

    D = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ = (1/N) G̃ᵀG̃ = (1/N) GᵀG − ḡḡᵀ : (P, P).

A mini-batch 𝓑 of B indices drawn uniformly gives g_𝓑 = (1/B) Σ_{i∈𝓑} g_i, unbiased for ḡ,
with (Lemma 1)

    Cov(g_𝓑) = c · D,   c = 1/B                      (with replacement)
                        c = (N − B) / (B (N − 1))    (without replacement; 0 at B = N).

The one Lemma-1 factor c of the package is :func:`finite_population_factor`. At B = N
without replacement the batch is the whole population, so g_𝓑 = ḡ and c = 0 — including
N = 1, where the formula reads 0/0 (and D = 0 anyway).

This module holds the dense P × P functions (D, c·D, its trace, the noise scale), the
Monte Carlo check of Lemma 1, and :func:`minibatch_means` (seeded mini-batch means of
per-example values, with or without replacement). The matrix-free c · D is
:class:`sgdnoise.curvature.CovarianceOperator` (one of the curvature-operator family, which
imports this module; nothing here imports it back).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgdnoise.spectral import orthonormal_basis
from sgdnoise.validate import check_finite, check_matrix, check_positive_int, check_vector

__all__ = [
    "gradient_covariance",
    "minibatch_covariance",
    "minibatch_trace",
    "noise_scale",
    "sample_minibatch_gradients",
    "sample_covariance",
    "monte_carlo_covariance_error",
    "MonteCarloCovarianceResult",
    "check_gradients",
    "finite_population_factor",
    "minibatch_means",
    "gram_spectrum",
    "class_mean_gradients",
    "noise_energy_fraction",
    "random_span_fraction",
]


def check_gradients(G: Tensor, *, min_rows: int = 1) -> Tensor:
    """Return ``G`` if it is a finite, floating (N, P) matrix of per-example gradients with
    at least ``min_rows`` rows; else raise ValueError naming the problem (a NaN would
    otherwise come back as a NaN result)."""
    check_matrix("G", G)
    if not G.is_floating_point():
        raise ValueError(f"G must have a floating dtype, got {G.dtype}")
    check_finite("G", G)
    if G.shape[0] < min_rows:
        raise ValueError(
            f"G must have at least {min_rows} rows (examples) here, got shape {tuple(G.shape)}"
        )
    return G


def finite_population_factor(n: int, b: int, *, replacement: bool) -> float:
    """The Lemma-1 factor c with Cov(g_𝓑) = c · D for a batch of b out of n examples.

    c = 1/b with replacement (any b >= 1); c = (n − b)/(b(n − 1)) without (needs b <= n),
    with c = 0 at b = n for every n >= 1: the batch is then the whole population and
    g_𝓑 = ḡ is not random (at n = 1 the formula is 0/0; D = 0 there too).
    """
    n = check_positive_int("num_examples", n)
    b = check_positive_int("batch_size", b)
    if replacement:
        return 1.0 / b
    if b > n:
        raise ValueError(
            f"batch_size must be <= the number of examples N={n} when sampling without "
            f"replacement, got {b}"
        )
    if b == n:
        return 0.0
    return (n - b) / (b * (n - 1))


def gradient_covariance(G: Tensor) -> Tensor:
    """D = GᵀG/N − ḡḡᵀ: (P, P), computed as (1/N) G̃ᵀG̃ for accuracy. G: (N, P)."""
    check_gradients(G)
    Gc = G - G.mean(dim=0, keepdim=True)
    return Gc.T @ Gc / G.shape[0]


def minibatch_covariance(G: Tensor, batch_size: int, *, replacement: bool = True) -> Tensor:
    """Cov(g_𝓑) = c · D: (P, P) (Lemma 1; c from :func:`finite_population_factor`). G: (N, P).

    Dense: P × P entries (P² × itemsize bytes); for a network use
    :class:`sgdnoise.curvature.CovarianceOperator` (matrix-free, O(NP)).

    Four one-parameter gradients 0, 1, 2, 3 have D = 1.25; a batch of two gives c = 1/2
    with replacement and c = (4 − 2)/(2 · 3) = 1/3 without:

    >>> import torch
    >>> G = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    >>> minibatch_covariance(G, 2)
    tensor([[0.6250]], dtype=torch.float64)
    >>> minibatch_covariance(G, 2, replacement=False)
    tensor([[0.4167]], dtype=torch.float64)
    """
    check_gradients(G)
    c = finite_population_factor(G.shape[0], batch_size, replacement=replacement)
    return c * gradient_covariance(G)


def _trace_D(G: Tensor) -> Tensor:
    Gc = G - G.mean(dim=0, keepdim=True)
    return (Gc * Gc).sum() / G.shape[0]


def minibatch_trace(G: Tensor, batch_size: int, *, replacement: bool = True) -> float:
    """tr Cov(g_𝓑) = c · (1/N) Σ_i ‖g_i − ḡ‖², in O(NP). G: (N, P)."""
    check_gradients(G)
    c = finite_population_factor(G.shape[0], batch_size, replacement=replacement)
    return float(c * _trace_D(G))


def noise_scale(G: Tensor) -> float:
    """B_simple = tr(D) / ‖ḡ‖² (the simple noise scale). G: (N, P).

    Returns ``inf`` when ḡ = 0 and tr(D) > 0, and ``nan`` when both vanish. Cost O(NP).

    Rows (1, 0), (3, 0), (2, 2), (2, −2): ḡ = (2, 0), tr D = (1 + 1 + 4 + 4)/4 = 2.5 and
    ‖ḡ‖² = 4:

    >>> import torch
    >>> G = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0], [2.0, -2.0]],
    ...                  dtype=torch.float64)
    >>> noise_scale(G)
    0.625
    """
    check_gradients(G)
    gbar = G.mean(dim=0)
    num = float(_trace_D(G))
    den = float(gbar @ gbar)
    if den == 0.0:
        return math.inf if num > 0 else math.nan
    return num / den


def _sampling_weights(
    n: int,
    batch_size: int,
    count: int,
    *,
    replacement: bool,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """W: (count, n) with W[s, i] = (times i is in batch s) / B, so g_𝓑 = W @ G."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if replacement:
        idx = torch.randint(n, (count, batch_size), generator=generator, device=gen_device)
    else:
        keys = torch.rand((count, n), generator=generator, device=gen_device)
        idx = keys.argsort(dim=1)[:, :batch_size]
    idx = idx.to(device)
    W = torch.zeros((count, n), dtype=dtype, device=device)
    W.scatter_add_(1, idx, torch.full(idx.shape, 1.0 / batch_size, dtype=dtype, device=device))
    return W


def sample_minibatch_gradients(
    G: Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """S independent mini-batch gradients g_𝓑 = (1/B) Σ_{i∈𝓑} g_i: (S, P).

    Each batch draws B indices uniformly from {0..N−1}, with replacement (i.i.d. draws) or
    without (a uniformly random B-subset). Randomness comes from ``generator`` (a seeded
    ``torch.Generator``; indices are drawn on its device) or the global RNG. Cost O(SNP),
    memory O(S·N) for the weights, in blocks.
    """
    check_gradients(G)
    n = G.shape[0]
    b = check_positive_int("batch_size", batch_size)
    s = check_positive_int("num_samples", num_samples)
    if not replacement:
        finite_population_factor(n, b, replacement=False)  # validates B <= N
    block = max(1, min(s, 2**22 // max(n, 1)))
    out = torch.empty((s, G.shape[1]), dtype=G.dtype, device=G.device)
    for start in range(0, s, block):
        stop = min(start + block, s)
        W = _sampling_weights(
            n, b, stop - start, replacement=replacement, generator=generator,
            dtype=G.dtype, device=G.device,
        )
        out[start:stop] = W @ G
    return out


def sample_covariance(samples: Tensor, *, mean: Tensor | None = None) -> Tensor:
    """Monte Carlo covariance of samples X: (S, P) -> (P, P).

    With ``mean=None`` the sample mean is subtracted and the sum divided by S − 1 (unbiased);
    with a known ``mean`` (P,) it is subtracted and the sum divided by S. No chapter calls
    it; it is kept for a reader's own Monte Carlo checks of Lemma 1.
    """
    check_matrix("samples", samples)
    s = samples.shape[0]
    if mean is None:
        if s < 2:
            raise ValueError(f"samples must hold at least 2 rows, got {s}")
        Xc = samples - samples.mean(dim=0, keepdim=True)
        return Xc.T @ Xc / (s - 1)
    check_vector("mean", mean, samples.shape[1])
    Xc = samples - mean
    return Xc.T @ Xc / s


def _gram_fro2(A: Tensor, B: Tensor) -> Tensor:
    """tr(AᵀA BᵀB) = ‖A Bᵀ‖_F² for A: (m, P), B: (n, P), without a P × P matrix."""
    M = A @ B.T
    return (M * M).sum()


def _diff_fro(U: Tensor, a: float, V: Tensor, b: float) -> float:
    """‖a UᵀU − b VᵀV‖_F for U: (S, P), V: (N, P), by the cheaper of two exact routes.

    Dense route O((S + N) P²) when P is small; otherwise the expansion
    a²‖UUᵀ‖_F² − 2ab‖UVᵀ‖_F² + b²‖VVᵀ‖_F², O((S + N)² P), never forming P × P.
    """
    s, p = U.shape
    n = V.shape[0]
    if p * p <= s * s + s * n + n * n:
        return float(torch.linalg.matrix_norm(a * (U.T @ U) - b * (V.T @ V)))
    fro2 = a * a * _gram_fro2(U, U) - 2 * a * b * _gram_fro2(U, V) + b * b * _gram_fro2(V, V)
    return math.sqrt(max(float(fro2), 0.0))


@dataclass
class MonteCarloCovarianceResult:
    """Monte Carlo estimates of Cov(g_𝓑) against Lemma 1.

    sample_counts: the K sample counts S; relative_errors: (R, K) tensor with entries
    ‖Ĉ_S − C‖_F / ‖C‖_F for R independent repeats; closed_form_fro: ‖C‖_F;
    estimates: list of K (P, P) estimates from the first repeat, or None unless asked;
    trace_estimates: (R, K) MC traces tr Ĉ_S; closed_form_trace: tr C.
    """

    batch_size: int
    replacement: bool
    sample_counts: list[int]
    relative_errors: Tensor
    trace_estimates: Tensor
    closed_form_trace: float
    closed_form_fro: float
    estimates: list[Tensor] | None = None

    def mean_errors(self) -> Tensor:
        """(K,) mean relative error over repeats."""
        return self.relative_errors.mean(dim=0)


def monte_carlo_covariance_error(
    G: Tensor,
    batch_size: int,
    sample_counts: Sequence[int],
    *,
    replacement: bool = True,
    num_repeats: int = 1,
    generator: torch.Generator | None = None,
    return_estimates: bool = False,
) -> MonteCarloCovarianceResult:
    """Relative Frobenius error of the Monte Carlo covariance of g_𝓑 vs Lemma 1.

    For each S in ``sample_counts`` and each repeat, draw S fresh mini-batch gradients
    X: (S, P), form the unbiased sample covariance Ĉ = X̃ᵀX̃/(S − 1) implicitly, and
    compute ‖Ĉ − C‖_F / ‖C‖_F with C = c·G̃ᵀG̃/N — without forming P × P matrices:
    ‖aUᵀU − bVᵀV‖_F² = a²‖UUᵀ‖_F² − 2ab‖UVᵀ‖_F² + b²‖VVᵀ‖_F² (U = X̃, V = G̃), cost
    O((S + N)² P). The error shrinks like 1/√S. ``return_estimates`` also returns the
    dense (P, P) estimates of the first repeat. (When P² is smaller than (S + N)², the
    dense difference is formed instead; both routes are exact.) No chapter calls it; it is
    kept as the Monte Carlo check of Lemma 1 a reader can run at any P.
    """
    check_gradients(G, min_rows=2)
    n = G.shape[0]
    c = finite_population_factor(n, batch_size, replacement=replacement)
    counts = [check_positive_int("sample_counts[]", s) for s in sample_counts]
    if not counts:
        raise ValueError("sample_counts must be a non-empty list of integers >= 2, got []")
    if min(counts) < 2:
        raise ValueError(f"sample_counts must all be >= 2, got {list(sample_counts)}")
    reps = check_positive_int("num_repeats", num_repeats)
    V = G - G.mean(dim=0, keepdim=True)
    b_coef = c / n
    ref_fro = _diff_fro(V[:0], 0.0, V, b_coef)
    ref_trace = float(b_coef * (V * V).sum())
    if ref_fro == 0.0:
        raise ValueError(
            "the closed-form covariance is zero (all rows of G equal, or B = N without "
            "replacement), so a relative error is undefined"
        )
    errors = torch.empty((reps, len(counts)), dtype=torch.float64)
    traces = torch.empty((reps, len(counts)), dtype=torch.float64)
    estimates: list[Tensor] | None = [] if return_estimates else None
    for r in range(reps):
        for k, s in enumerate(counts):
            X = sample_minibatch_gradients(
                G, batch_size, s, replacement=replacement, generator=generator
            )
            U = X - X.mean(dim=0, keepdim=True)
            a_coef = 1.0 / (s - 1)
            errors[r, k] = _diff_fro(U, a_coef, V, b_coef) / ref_fro
            traces[r, k] = float(a_coef * (U * U).sum())
            if estimates is not None and r == 0:
                estimates.append(U.T @ U * a_coef)
    return MonteCarloCovarianceResult(
        batch_size=int(batch_size),
        replacement=bool(replacement),
        sample_counts=counts,
        relative_errors=errors,
        trace_estimates=traces,
        closed_form_trace=ref_trace,
        closed_form_fro=ref_fro,
        estimates=estimates,
    )


def minibatch_means(
    values: np.ndarray,
    batch_size: int,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    replacement: bool = False,
) -> np.ndarray:
    """Means of ``values`` over mini-batches of size B drawn uniformly, one batch per entry of
    ``shape`` (each batch drawn without replacement unless ``replacement``). ``values: (N,)``
    or ``(N, d)`` -> ``shape`` or ``shape + (d,)``."""
    v = np.asarray(values, dtype=float)
    N = v.shape[0]
    B = check_positive_int("batch_size", batch_size)
    if B > N:
        raise ValueError(f"batch_size must be <= N={N}, got {B}")
    count = int(np.prod(shape))
    if replacement:
        idx = rng.integers(0, N, size=(count, B))
    elif B == N:
        idx = np.broadcast_to(np.arange(N), (count, N))
    else:
        idx = np.argpartition(rng.random((count, N)), B - 1, axis=1)[:, :B]
    m = v[idx].mean(1)
    return m.reshape(shape + v.shape[1:])



def gram_spectrum(G: Tensor, *, centered: bool = False) -> Tensor:
    """Eigenvalues (N,), descending, of K = G̃G̃ᵀ/N: the non-zero spectrum of F̂ (or of D).

    G: (N, P). With ``centered=False`` G̃ = G and the non-zero eigenvalues of K are those of
    F̂ = GᵀG/N; with ``centered=True`` G̃ = G − 1ḡᵀ and they are those of D. (If K w = λ w
    with λ > 0, then u = G̃ᵀw satisfies (G̃ᵀG̃/N) u = λ u, and conversely, so the two
    matrices share their non-zero spectrum; K is N × N, hence at most N non-zero values.)
    Computed in float64; tiny negative rounding values are clipped to 0.
    """
    check_matrix("G", G)
    A = G.to(torch.float64)
    if centered:
        A = A - A.mean(dim=0, keepdim=True)
    K = A @ A.T / A.shape[0]
    evals = torch.linalg.eigvalsh(0.5 * (K + K.T)).flip(0)
    return evals.clamp_min(0.0)


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
    M = torch.zeros(c, G.shape[1], dtype=torch.float64, device=G.device)
    M.index_add_(0, y.to(G.device), G.to(torch.float64))
    counts = torch.bincount(y, minlength=c).to(torch.float64).clamp_min(1).to(G.device)
    return M / counts[:, None]


def noise_energy_fraction(cov: Any, U: Tensor) -> Tensor:
    """Cumulative fractions f_k = Σ_{j≤k} u_jᵀ C u_j / tr C, k = 1..K: (K,).

    cov: anything with ``matmat(V: (P, K)) -> (P, K)`` and ``trace()`` (e.g.
    :class:`sgdnoise.curvature.CovarianceOperator`, whose C is D/B up to a factor that
    cancels here). U: (P, K) with orthonormal columns (e.g. top Hessian eigenvectors).
    Cost: K products with C. For a uniformly random K-dimensional subspace the expected
    fraction is K/P (:func:`sgdnoise.spectral.random_subspace_fraction`); the best possible
    is the sum of the top K eigenvalues of C over its trace."""
    check_matrix("U", U)
    tr = float(cov.trace())
    if tr <= 0:
        raise ValueError(f"the covariance has trace {tr}; the fraction is undefined")
    CU = cov.matmat(U)
    q = (U.to(torch.float64) * CU.to(torch.float64)).sum(dim=0)
    return torch.cumsum(q, dim=0) / tr


def random_span_fraction(
    G: Tensor, cov: Any, k: int, *, draws: int = 0, seed: int = 0, rtol: float = 1e-10
) -> dict[str, float]:
    """Noise share of a uniformly random k-subspace of span{g_1, …, g_N}, the row space of
    G: (N, P), which contains the range of D (D = G̃ᵀG̃/N with G̃ = G − 1ḡᵀ, and the rows of
    G̃ lie in the row space of G).

    With Q: (P, r) an orthonormal basis of that span (r = rank G ≤ N) and U = Q R for R a
    uniformly random r × k matrix with orthonormal columns, E[UUᵀ] = (k/r) QQᵀ, so

        E[φ_k] = (k/r) · tr(QᵀDQ) / tr D = k / r,

    against k/P for a random k-subspace of R^P
    (:func:`sgdnoise.spectral.random_subspace_fraction`): the R^P baseline is smaller by the
    factor r/P ≤ N/P. ``draws`` > 0 also samples that many subspaces (with ``cov.matmat``,
    as in :func:`noise_energy_fraction`) and reports their mean and standard deviation.
    Returns {"rank", "expected" (k/r), "mc_mean", "mc_std"} (NaN when ``draws`` = 0)."""
    check_matrix("G", G)
    k = check_positive_int("k", k)
    Q = orthonormal_basis(G.T, rtol=rtol)
    r = int(Q.shape[1])
    if k > r:
        raise ValueError(f"k must be <= rank G = {r}, got {k}")
    out = {"rank": float(r), "expected": k / r, "mc_mean": math.nan, "mc_std": math.nan}
    if draws:
        draws = check_positive_int("draws", draws)
        gen = torch.Generator().manual_seed(seed)
        tr = float(cov.trace())
        vals = []
        for _ in range(draws):
            Rk, _ = torch.linalg.qr(torch.randn(r, k, generator=gen, dtype=torch.float64))
            U = (Q @ Rk).to(G.device)
            vals.append(float((U * cov.matmat(U).to(torch.float64)).sum()) / tr)
        out["mc_mean"] = float(np.mean(vals))
        out["mc_std"] = float(np.std(vals, ddof=1)) if draws > 1 else math.nan
    return out
