"""Mini-batch gradient covariance (Lemma 1), dense and matrix-free.

Notation: G: (N, P) holds the per-example gradients g_i as rows, ḡ = (1/N) Σ_i g_i: (P,),
G̃ = G − 1ḡᵀ: (N, P) the centred rows, and

    D = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ = (1/N) G̃ᵀG̃ = (1/N) GᵀG − ḡḡᵀ : (P, P).

A mini-batch 𝓑 of B indices drawn uniformly gives g_𝓑 = (1/B) Σ_{i∈𝓑} g_i, unbiased for ḡ,
with (Lemma 1)

    Cov(g_𝓑) = c · D,   c = 1/B                      (with replacement)
                        c = (N − B) / (B (N − 1))    (without replacement; 0 at B = N).

Dense functions form P × P matrices; :class:`CovarianceOperator` never does (except
``to_dense``): products, trace and diagonal cost O(NP), top-k eigenpairs O(N²P + N³)
through the N × N Gram matrix (1/N) G̃G̃ᵀ, which has the same non-zero eigenvalues as D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdnoise._validate import check_matrix, check_positive_int, check_vector

__all__ = [
    "gradient_covariance",
    "minibatch_factor",
    "minibatch_covariance",
    "minibatch_trace",
    "noise_scale",
    "sample_minibatch_gradients",
    "sample_covariance",
    "monte_carlo_covariance_error",
    "MonteCarloCovarianceResult",
    "CovarianceOperator",
]


def _check_G(G: Tensor, *, min_rows: int = 1) -> Tensor:
    check_matrix("G", G)
    if not G.is_floating_point():
        raise ValueError(f"G must have a floating dtype, got {G.dtype}")
    if G.shape[0] < min_rows:
        raise ValueError(
            f"G must have at least {min_rows} rows (examples) here, got shape {tuple(G.shape)}"
        )
    return G


def minibatch_factor(num_examples: int, batch_size: int, *, replacement: bool = True) -> float:
    """The Lemma-1 factor c with Cov(g_𝓑) = c · D.

    c = 1/B with replacement, c = (N − B)/(B(N − 1)) without (needs 1 <= B <= N, N >= 2).
    """
    n = check_positive_int("num_examples", num_examples)
    b = check_positive_int("batch_size", batch_size)
    if replacement:
        return 1.0 / b
    if b > n:
        raise ValueError(
            f"batch_size must be <= the number of examples N={n} when sampling without "
            f"replacement, got {b}"
        )
    if n < 2:
        raise ValueError(
            f"sampling without replacement needs N >= 2 examples (factor (N-B)/(B(N-1))), got N={n}"
        )
    return (n - b) / (b * (n - 1))


def gradient_covariance(G: Tensor) -> Tensor:
    """D = GᵀG/N − ḡḡᵀ: (P, P), computed as (1/N) G̃ᵀG̃ for accuracy. G: (N, P)."""
    _check_G(G)
    Gc = G - G.mean(dim=0, keepdim=True)
    return Gc.T @ Gc / G.shape[0]


def minibatch_covariance(G: Tensor, batch_size: int, *, replacement: bool = True) -> Tensor:
    """Cov(g_𝓑) = c · D: (P, P) (Lemma 1; c from :func:`minibatch_factor`). G: (N, P)."""
    _check_G(G)
    c = minibatch_factor(G.shape[0], batch_size, replacement=replacement)
    return c * gradient_covariance(G)


def _trace_D(G: Tensor) -> Tensor:
    Gc = G - G.mean(dim=0, keepdim=True)
    return (Gc * Gc).sum() / G.shape[0]


def minibatch_trace(G: Tensor, batch_size: int, *, replacement: bool = True) -> float:
    """tr Cov(g_𝓑) = c · (1/N) Σ_i ‖g_i − ḡ‖², in O(NP). G: (N, P)."""
    _check_G(G)
    c = minibatch_factor(G.shape[0], batch_size, replacement=replacement)
    return float(c * _trace_D(G))


def noise_scale(G: Tensor) -> float:
    """B_simple = tr(D) / ‖ḡ‖² (the simple noise scale). G: (N, P).

    Returns ``inf`` when ḡ = 0 and tr(D) > 0, and ``nan`` when both vanish.
    """
    _check_G(G)
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
    _check_G(G)
    n = G.shape[0]
    b = check_positive_int("batch_size", batch_size)
    s = check_positive_int("num_samples", num_samples)
    if not replacement:
        minibatch_factor(n, b, replacement=False)  # validates B <= N, N >= 2
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
    with a known ``mean`` (P,) it is subtracted and the sum divided by S.
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
    dense difference is formed instead; both routes are exact.)
    """
    _check_G(G, min_rows=2)
    n = G.shape[0]
    c = minibatch_factor(n, batch_size, replacement=replacement)
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


class CovarianceOperator:
    """Matrix-free C = c · D = (c/N) G̃ᵀG̃: a (P, P) symmetric PSD operator.

    Args:
        G: (N, P) per-example gradients (a centred copy G̃ is stored: O(NP) memory).
        batch_size, replacement: choose the Lemma-1 factor c (batch_size=1 with replacement
            gives c = 1, i.e. C = D).

    Methods: ``matvec`` (P,) -> (P,) and ``matmat`` (P, k) -> (P, k) in O(NPk); ``trace``,
    ``diagonal`` in O(NP); ``eigh(k)`` top-k eigenpairs via the N × N Gram matrix; dense
    ``to_dense``; ``to_scipy`` for ``scipy.sparse.linalg``. ``shape``, ``dtype``, ``device``.
    """

    def __init__(self, G: Tensor, *, batch_size: int = 1, replacement: bool = True) -> None:
        _check_G(G)
        self.num_examples = int(G.shape[0])
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.replacement = bool(replacement)
        self.factor = minibatch_factor(self.num_examples, self.batch_size, replacement=replacement)
        self.mean = G.mean(dim=0)
        self._Gc = G - self.mean
        self._scale = self.factor / self.num_examples

    @property
    def shape(self) -> tuple[int, int]:
        p = int(self._Gc.shape[1])
        return (p, p)

    @property
    def dtype(self) -> torch.dtype:
        return self._Gc.dtype

    @property
    def device(self) -> torch.device:
        return self._Gc.device

    def matvec(self, v: Tensor) -> Tensor:
        """C v: (P,) for v: (P,), as (c/N) G̃ᵀ(G̃ v)."""
        check_vector("v", v, self.shape[0])
        v = v.to(device=self.device, dtype=self.dtype)
        return self._scale * (self._Gc.T @ (self._Gc @ v))

    def matmat(self, V: Tensor) -> Tensor:
        """C V: (P, k) for V: (P, k)."""
        check_matrix("V", V)
        if V.shape[0] != self.shape[0]:
            raise ValueError(f"V must have {self.shape[0]} rows, got shape {tuple(V.shape)}")
        V = V.to(device=self.device, dtype=self.dtype)
        return self._scale * (self._Gc.T @ (self._Gc @ V))

    def __matmul__(self, x: Tensor) -> Tensor:
        return self.matvec(x) if x.ndim == 1 else self.matmat(x)

    def trace(self) -> float:
        """tr C = (c/N) ‖G̃‖_F²."""
        return float(self._scale * (self._Gc * self._Gc).sum())

    def diagonal(self) -> Tensor:
        """diag C: (P,), entries (c/N) Σ_i G̃_ij²."""
        return self._scale * (self._Gc * self._Gc).sum(dim=0)

    def gram(self) -> Tensor:
        """K = (c/N) G̃G̃ᵀ: (N, N), whose non-zero eigenvalues are those of C."""
        return self._scale * (self._Gc @ self._Gc.T)

    def eigh(self, k: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Top-k eigenpairs of C: (evals (k,) descending, evecs (P, k) orthonormal columns).

        Eigen-decomposes K₁ = (1/N) G̃G̃ᵀ = W Λ Wᵀ (N × N, same non-zero spectrum as D) and
        maps u_j = G̃ᵀ w_j / √(N λ_j), refined by one Rayleigh-Ritz step (orthonormalise,
        eigh of the r × r projection) so the columns are orthonormal to rounding.
        Eigenvalues below a rounding threshold (10 · λ_max · max(N, P) · eps) count as
        zero; their eigenvectors cannot be mapped, so they are completed by an orthonormal
        basis of the null space of C (orthogonal to the mapped ones; a seeded Gaussian
        block, projected and orthonormalised by QR). Evals are
        scaled by c; with c = 0 (B = N without replacement) they are 0 and the vectors are
        those of D. Requires k <= min(N, P).
        """
        n, p = self._Gc.shape
        k = check_positive_int("k", k)
        if k > min(n, p):
            raise ValueError(f"k must be <= min(N, P) = {min(n, p)}, got {k}")
        K1 = (self._Gc @ self._Gc.T) / n
        K1 = 0.5 * (K1 + K1.T)
        lam, W = torch.linalg.eigh(K1)
        lam, W = lam.flip(0)[:k], W.flip(1)[:, :k]
        eps = torch.finfo(self.dtype).eps
        top = float(lam[0]) if lam.numel() else 0.0
        tol = max(top, 0.0) * max(n, p) * eps * 10
        keep = lam > tol
        r = int(keep.sum())
        lam = torch.where(keep, lam, torch.zeros_like(lam))
        U = torch.empty((p, k), dtype=self.dtype, device=self.device)
        if r:
            # map back, then one Rayleigh-Ritz step in span(Ur): restores orthogonality lost
            # for small λ (rounding in w_j is amplified by 1/√λ_j) at O(NPr) extra cost
            Ur = self._Gc.T @ W[:, :r] / torch.sqrt(n * lam[:r])
            Q, _ = torch.linalg.qr(Ur)
            GQ = self._Gc @ Q
            T = GQ.T @ GQ / n
            theta, Y = torch.linalg.eigh(0.5 * (T + T.T))
            U[:, :r] = Q @ Y.flip(1)
            lam = torch.cat([theta.flip(0).clamp_min(0), lam[r:]])
        if r < k:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            Z = torch.randn((p, k - r), generator=gen, dtype=self.dtype).to(self.device)
            if r:
                Ur = U[:, :r]
                for _ in range(2):  # re-orthogonalise twice for stability
                    Z = Z - Ur @ (Ur.T @ Z)
            Q, _ = torch.linalg.qr(Z)
            if r:
                Q = Q - U[:, :r] @ (U[:, :r].T @ Q)
                Q, _ = torch.linalg.qr(Q)
            U[:, r:] = Q
        return self.factor * lam, U

    def to_dense(self) -> Tensor:
        """C as a dense (P, P) tensor (the only method that forms it)."""
        return self._scale * (self._Gc.T @ self._Gc)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (symmetric) wrapping this operator."""
        from scipy.sparse.linalg import LinearOperator

        p = self.shape[0]
        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mv(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(x).reshape(p), dtype=self.dtype, device=self.device)
            return self.matvec(t).cpu().numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
            return self.matmat(t.reshape(p, -1)).cpu().numpy()

        return LinearOperator((p, p), matvec=mv, rmatvec=mv, matmat=mm, rmatmat=mm, dtype=np_dtype)

    def __repr__(self) -> str:
        return (
            f"CovarianceOperator(N={self.num_examples}, P={self.shape[0]}, "
            f"batch_size={self.batch_size}, replacement={self.replacement}, "
            f"factor={self.factor:.4g}, dtype={self.dtype})"
        )
