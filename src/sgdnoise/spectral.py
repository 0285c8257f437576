"""Matrix-free spectral tools for symmetric operators given only through products.

Every function here sees a symmetric matrix ``A: (dim, dim)`` only through a callable
``matvec(v: (dim,)) -> (dim,)`` or ``matmat(V: (dim, b)) -> (dim, b)`` (a Hessian-vector
product, a Fisher-vector product, a curvature operator of :mod:`sgdnoise.curvature`, ...),
and counts how many products it spends.

One Lanczos process (``_krylov``: block Lanczos with full reorthogonalisation, the block's
products taken by one ``matmat`` call) builds an orthonormal Krylov basis ``V`` and
``T = VᵀAV``, and serves three uses:

- :func:`lanczos`: extreme eigenpairs by Rayleigh-Ritz on ``T`` (``A V ≈ V T``).
- :func:`lanczos_matrix_function`: ``f(A) Z ≈ V f(T) VᵀZ`` from the block Krylov space of
  ``Z`` (e.g. ``f = √·₊`` for Gaussian draws of covariance ``A₊``).
- :func:`spectral_density`: stochastic Lanczos quadrature (SLQ), a Gaussian-smoothed
  estimate of the eigenvalue density ``φ(t) = (1/dim) Σ_j δ(t − λ_j)``.

Also:

- :func:`power_iteration_deflation`: the baseline used by PyHessian: power iteration for
  one eigenpair at a time, each new start vector projected off the pairs already found.
- :func:`hutchinson_trace`: ``tr A = E[zᵀAz]`` for Rademacher ``z``.
- :func:`top_eigenspace_overlap`: ``‖UᵀV‖_F² / k`` for two orthonormal ``(dim, k)`` bases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgdnoise.validate import (
    check_choice,
    check_matrix,
    check_positive,
    check_positive_int,
    count_nonfinite,
)

Matvec = Callable[[torch.Tensor], torch.Tensor]
Matmat = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "LanczosResult",
    "PowerIterationResult",
    "SpectralDensity",
    "TraceEstimate",
    "count_outliers",
    "hutchinson_trace",
    "lanczos",
    "lanczos_function_factor",
    "lanczos_matrix_function",
    "near_zero_fraction",
    "numerical_rank",
    "orthonormal_basis",
    "sqrt_psd",
    "power_iteration_deflation",
    "random_subspace_fraction",
    "slq_near_zero_fraction",
    "slq_zero_cluster",
    "spectral_density",
    "standard_normal",
    "subspace_capture",
    "top_eigenspace_overlap",
]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def standard_normal(shape: tuple[int, ...], generator: torch.Generator | None, *,
                    dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Standard normal draws of ``shape`` in ``dtype`` from ``generator`` (on the generator's
    device; on ``device`` without one), moved to ``device``: the one Gaussian source of the
    package's samplers."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def _randn(dim: int, cols: int, gen: torch.Generator, dtype, device) -> torch.Tensor:
    """``(dim, cols)`` draws made in float64 on the CPU generator ``gen``, then cast."""
    return standard_normal((dim, cols), gen, dtype=torch.float64, device=gen.device).to(
        dtype=dtype, device=device)


def _call_operator(name: str, op: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
    """``op(x)``; an error inside it (typically a shape that does not fit) becomes a
    ValueError naming ``name`` and the size it was given."""
    try:
        return op(x)
    except (RuntimeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{name} failed on a {tuple(x.shape)} tensor ({first}); is dim = "
                         f"{x.shape[0]} the size of the operator?") from None


def _checked_output(name: str, out: Any, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must map a {shape} tensor to the same shape, got {got}")
    bad = count_nonfinite(out)
    if bad:
        raise ValueError(f"{name} returned {bad} non-finite value{'s' if bad > 1 else ''} "
                         f"(NaN or ±inf) for a finite {shape} input")
    return out


def _apply(matvec: Matvec, v: torch.Tensor, dim: int) -> torch.Tensor:
    """``matvec(v)`` cast back to ``v``'s dtype/device, with its shape and finiteness
    checked."""
    out = _checked_output("matvec", _call_operator("matvec", matvec, v), (dim,))
    return out.to(dtype=v.dtype, device=v.device)


def _columnwise(matvec: Matvec, dim: int) -> Matmat:
    """A ``matmat`` from a ``matvec``: one product per column."""

    def matmat(Q: torch.Tensor) -> torch.Tensor:
        return torch.stack([_apply(matvec, Q[:, j], dim) for j in range(Q.shape[1])], dim=1)

    return matmat


def _apply_block(matmat: Matmat, Q: torch.Tensor) -> torch.Tensor:
    """``matmat(Q)`` cast back to ``Q``'s dtype/device, with its shape and finiteness
    checked."""
    out = _checked_output("matmat", _call_operator("matmat", matmat, Q), tuple(Q.shape))
    return out.to(dtype=Q.dtype, device=Q.device)


def _orthogonalize(W: torch.Tensor, V: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``W: (dim, b)`` off the orthonormal columns of ``V: (dim, m)``.

    Classical Gram-Schmidt applied twice ("twice is enough"); returns the projected block
    and the total coefficients ``C = VᵀW`` (m, b)."""
    if V is None or V.shape[1] == 0:
        return W, W.new_zeros(0, W.shape[1])
    C = V.T @ W
    W = W - V @ C
    C2 = V.T @ W
    W = W - V @ C2
    return W, C + C2


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the ``k`` wanted Ritz values, most extreme first."""
    if which == "LA":
        order = torch.argsort(theta, descending=True)
    elif which == "SA":
        order = torch.argsort(theta, descending=False)
    else:  # "LM"
        order = torch.argsort(theta.abs(), descending=True)
    return order[:k]


# ----------------------------------------------------------------------------------------
# Lanczos
# ----------------------------------------------------------------------------------------


@dataclass
class LanczosResult:
    """Output of :func:`lanczos`.

    ``eigenvalues: (k,)``, most extreme first (``"LA"``: descending, ``"SA"``: ascending,
    ``"LM"``: descending magnitude); ``eigenvectors: (dim, k)`` orthonormal Ritz vectors;
    ``residuals: (k,)`` the residual norms ``‖A y − θ y‖`` (computed from the recurrence);
    ``num_matvecs`` products spent; ``converged`` whether every residual met the tolerance;
    ``ritz_history`` (if recorded) the wanted Ritz values after every block step, paired
    with the matvec count at that point.

    Unpacks like a pair: ``evals, evecs = lanczos(...)``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    num_matvecs: int
    converged: bool
    ritz_history: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.eigenvalues
        yield self.eigenvectors


class _KrylovBasis:
    """The orthonormal basis ``V: (dim, m)`` of a (block) Krylov space and ``T = VᵀAV``,
    built one block at a time by :meth:`column_step` (a block of one column) or
    :meth:`block_step`, then :meth:`extend`.

    ``V`` is stored as the rows of a buffer that grows by doubling (no copy per step), with
    one spare row where a single column's residual is formed in place, and ``T`` in a
    square buffer grown alongside, so a step allocates no ``(dim, m)`` temporaries. Every
    entry of ``T`` is the computed inner product (block tridiagonal up to rounding). With
    ``Q`` the last block, ``A Q = V C + W`` where ``W ⊥ V`` is split as ``W = Q_next R``
    (dropping directions at rounding level), so ``A V s − V T s = Q_next R s_last``."""

    def __init__(self, start: torch.Tensor, max_size: int, column_path: bool) -> None:
        self.dim = start.shape[0]
        self.eps = torch.finfo(start.dtype).eps
        self.tiny = torch.finfo(start.dtype).tiny
        cap = max(start.shape[1], min(max_size, self.dim))
        self.rows = torch.empty((cap + 1, self.dim), dtype=start.dtype, device=start.device)
        self.Tbuf = torch.zeros((cap, cap), dtype=start.dtype, device=start.device)
        self.scale = 0.0  # running estimate of ‖A‖ for the breakdown test
        self.lo = 0  # first column of the previous block (the reach of the block recurrence)
        self.beta: float | None = None  # ‖r‖ of the last column (T[m-1, m-2]) when one came last
        self.norm_next = 0.0  # ‖r‖ of the residual that a column step placed as next vector
        self.num_matvecs = 0
        norm = float(start.norm()) if start.shape[1] == 1 and column_path else 0.0
        if norm > 0:  # a single start vector, normalised straight into the buffer
            torch.div(start[:, 0], norm, out=self.rows[0])
            self.Q = self.rows[:1].T
        else:
            self.Q, _ = torch.linalg.qr(start)
            _set_rows(self.rows, 0, self.Q)
        self.m = self.Q.shape[1]

    @property
    def V(self) -> torch.Tensor:
        return self.rows[:self.m].T

    @property
    def T(self) -> torch.Tensor:
        return self.Tbuf[:self.m, :self.m]

    def _set_column(self, C: torch.Tensor, b: int) -> None:
        """T's new block column and row ``C = VᵀAQ`` (symmetric: the diagonal block is
        averaged)."""
        m, m_prev = self.m, self.m - b
        self.Tbuf[:m, m_prev:m] = C
        self.Tbuf[m_prev:m, :m_prev] = C[:m_prev].T
        if b > 1:
            D = self.Tbuf[m_prev:m, m_prev:m]
            self.Tbuf[m_prev:m, m_prev:m] = 0.5 * (D + D.T)

    def column_step(self, w: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, bool]:
        """The step of a one-column block ``q`` from ``w = A q: (dim,)``: the three-term
        recurrence's two vectors removed, then one classical Gram-Schmidt pass against all
        of ``V`` (a second only when it cancelled most of the vector,
        :func:`_orthogonalize_column`); the residual becomes the next vector in place.
        Returns ``(R (1, 1) or None at breakdown, Q_next (dim, 0 or 1), placed)``."""
        m = self.m
        C, norm_aq, norm_w = _orthogonalize_column(
            w, self.rows, m, self.lo, self.beta if self.lo == m - 2 else None)
        self.scale = max(self.scale, norm_aq)
        self._set_column(C, 1)
        if norm_w > 100 * self.eps * max(self.scale, self.tiny):
            self.norm_next = norm_w
            return self.Tbuf.new_full((1, 1), norm_w), self.rows[m : m + 1].T, True
        return None, self.rows[m : m + 1].T[:, :0], False

    def block_step(self, W: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, bool]:
        """The step of a block ``Q`` from ``W = A Q: (dim, b)``: two full passes of classical
        Gram-Schmidt against ``V``, then the residual's thin SVD without the directions at
        rounding level. Returns ``(R (b', b) or None, Q_next (dim, b'), False)``."""
        self.scale = max(self.scale, _spectral_norm(W))
        W, C = _orthogonalize(W, self.V)  # C = VᵀAQ: the new block column of T
        self._set_column(C, W.shape[1])
        U, sv, Wh = _thin_svd(W)
        keep = sv > 100 * self.eps * max(self.scale, self.tiny)
        if bool(keep.all()):  # the usual case: no (slow) boolean indexing of a tall block
            return sv[:, None] * Wh, U, False
        return (sv[keep, None] * Wh[keep] if bool(keep.any()) else None), U[:, keep], False

    def extend(self, Qn: torch.Tensor, placed: bool, b: int, max_size: int,
               restart_gen: torch.Generator | None) -> bool:
        """Append the next block ``Qn`` (``placed``: already in the buffer), cut to the room
        left and topped up with random directions orthogonal to ``V`` from ``restart_gen``
        after a breakdown; False when the basis is complete (``dim`` or ``max_size``
        columns, or nothing to add)."""
        room = self.dim - self.m
        if room <= 0 or self.m >= max_size:
            return False
        Qn = Qn[:, :room]
        missing = min(b, room) - Qn.shape[1]
        if missing > 0 and restart_gen is not None:
            Qn, placed = torch.cat([Qn, self._fresh(Qn, missing, restart_gen)], dim=1), False
        if Qn.shape[1] == 0:
            return False
        if self.m + Qn.shape[1] + 1 > self.rows.shape[0]:
            self._grow(Qn.shape[1], placed)
            if placed:
                Qn = self.rows[self.m : self.m + 1].T
        if not placed:
            _set_rows(self.rows, self.m, Qn)
        self.beta = self.norm_next if placed else None
        self.lo = self.m - b
        self.m += Qn.shape[1]
        self.Q = Qn
        return True

    def _fresh(self, Qn: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
        """``count`` random orthonormal directions orthogonal to ``V`` and ``Qn``."""
        extra = _randn(self.dim, count, gen, self.rows.dtype, self.rows.device)
        basis = torch.cat([self.V, Qn], dim=1)
        for _ in range(2):
            extra, _ = _orthogonalize(extra, basis)
            extra, _ = torch.linalg.qr(extra)
        return extra

    def _grow(self, width: int, placed: bool) -> None:
        """Double the buffers (at least to ``m + width`` columns), keeping the basis (and
        the next vector when it is ``placed`` in the spare row)."""
        m = self.m
        size = max(2 * (self.rows.shape[0] - 1), m + width)
        grown = self.rows.new_empty((size + 1, self.dim))
        keep = m + width if placed else m
        grown[:keep] = self.rows[:keep]
        self.rows = grown
        grown_T = self.Tbuf.new_zeros((size, size))
        grown_T[:m, :m] = self.Tbuf[:m, :m]
        self.Tbuf = grown_T


def _krylov(
    matmat: Matmat,
    start: torch.Tensor,
    max_size: int,
    *,
    stop: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, int], bool] | None = None,
    restart_gen: torch.Generator | None = None,
    column_path: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Block Lanczos with full reorthogonalisation on one :class:`_KrylovBasis`.

    Builds an orthonormal basis ``V: (dim, m)`` of the block Krylov space of ``start:
    (dim, b)`` and ``T = VᵀAV: (m, m)``, one block product ``matmat(Q)`` per step.
    ``stop(T, V, R, num_matvecs)`` is called after every block and ends the iteration when
    it returns True. On breakdown (invariant Krylov space, ``R`` None) fresh random
    directions orthogonal to ``V`` are drawn from ``restart_gen``, or the iteration ends
    if it is None. Returns ``(T, V, R, num_matvecs)``.

    A block of one column (a single start vector, or a block shrunk to one column) takes
    the lean :meth:`_KrylovBasis.column_step` (norms instead of the QR/SVD and spectral-norm
    estimate, a local pass and one Gram-Schmidt pass instead of two full passes), any other
    block :meth:`_KrylovBasis.block_step`. ``column_path=False`` sends one-column blocks
    through the block step instead (for tests: both must agree)."""
    kb = _KrylovBasis(start, max_size, column_path)
    while True:
        b = kb.Q.shape[1]
        W = _apply_block(matmat, kb.Q)
        kb.num_matvecs += b
        if b == 1 and column_path:
            R, Qn, placed = kb.column_step(W[:, 0])
        else:
            R, Qn, placed = kb.block_step(W)
        V = kb.V
        if stop is not None and stop(kb.T, V, R, kb.num_matvecs):
            break
        if not kb.extend(Qn, placed, b, max_size, restart_gen):
            break
    return kb.Tbuf[:V.shape[1], :V.shape[1]].clone(), V, R, kb.num_matvecs


def _orthogonalize_column(
    w: torch.Tensor, rows: torch.Tensor, m: int, lo: int, beta: float | None = None
) -> tuple[torch.Tensor, float, float]:
    """Project ``w = A q: (dim,)`` off the orthonormal rows ``rows[:m]`` (the basis ``V``,
    whose last vector is q) and write the result, normalised, into ``rows[m]``.

    In exact arithmetic ``A q`` has components only along ``rows[lo:m]`` (the previous and
    the current block: the Lanczos recurrence), so pass 1 removes those, and pass 2,
    classical Gram-Schmidt against the whole basis, removes what rounding left anywhere
    (full reorthogonalisation: two passes, the first restricted to the vectors where
    ``w`` has weight). When pass 2 takes away more than half of the squared norm the
    result is not yet orthogonal to working precision and pass 2 is repeated (the
    Kahan–Parlett "twice is enough" criterion, ``‖r‖ < ‖r_before‖/√2``).

    Pass 1's coefficient along the previous vector is ``beta`` when given (``rows[m-1]``
    was ``r/β`` of the step before, so ``rows[m-2]ᵀAq = β`` up to rounding, which pass 2
    takes care of), otherwise it is computed. Pass 2's coefficients and ``‖r_before‖²``
    come from one product with ``rows[:m+1]`` (the residual is its last row); then
    ``‖r‖² = ‖r_before‖² − ‖C₂‖²`` (Pythagoras, accurate to a few ulps when no repeat is
    needed) is known before the update, which therefore also normalises. So a step reads
    the basis twice, and ``w`` and the residual a few times, with no temporaries of size
    ``dim``. Returns ``C = VᵀAq: (m, 1)`` (the total coefficients: T's new column),
    ``‖Aq‖`` and ``‖r‖`` (``rows[m]`` holds ``r/‖r‖``, or rounding noise when ``‖r‖`` is
    0)."""
    r = rows[m]
    if beta is not None and lo == m - 2:
        alpha = rows[m - 1] @ w
        c_loc = torch.stack([alpha.new_tensor(beta), alpha])
    else:
        c_loc = rows[lo:m] @ w
    torch.addmv(w, rows[lo:m].T, c_loc, alpha=-1, out=r)  # w itself is left untouched
    g = rows[: m + 1] @ r  # (Vᵀr, ‖r‖²)
    C, before = g[:m], float(g[m])
    after = before - float(C @ C)
    norm_aq = math.sqrt(max(before, 0.0) + float(c_loc @ c_loc))
    if after >= 0.5 * before and after > 0:
        norm = math.sqrt(after)
        r.addmv_(rows[:m].T, C, beta=1 / norm, alpha=-1 / norm)
    else:
        r.addmv_(rows[:m].T, C, alpha=-1)
        C2 = rows[:m] @ r
        r.addmv_(rows[:m].T, C2, alpha=-1)
        C = C + C2
        norm = float(r.norm())
        if norm > 0:
            r.mul_(1 / norm)
    C[lo:] += c_loc
    return C[:, None], norm_aq, norm


def _set_rows(rows: torch.Tensor, start: int, Q: torch.Tensor) -> None:
    """``rows[start:start+b] = Qᵀ`` for ``Q: (dim, b)`` (column by column: a transposed
    (dim, 1) block would take a slow strided copy)."""
    for j in range(Q.shape[1]):
        rows[start + j] = Q[:, j]


def _spectral_norm(W: torch.Tensor) -> float:
    """‖W‖₂ for a tall ``W: (dim, b)`` from the b × b Gram matrix (a scale estimate)."""
    if W.shape[1] == 1:
        return float(W.norm())
    return float(torch.linalg.eigvalsh(W.T @ W)[-1].clamp_min(0).sqrt())


def _thin_svd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``W = U diag(s) Wh`` of a tall ``W: (dim, b)`` by Householder QR and the SVD
    of the b × b factor (cheaper than a direct SVD of the tall matrix; b = 1 is a norm)."""
    if W.shape[1] == 1:
        norm = W.norm()
        u = W / norm if bool(norm > 0) else W
        return u, norm.reshape(1), torch.ones((1, 1), dtype=W.dtype, device=W.device)
    Qw, Rw = torch.linalg.qr(W)
    Ur, sv, Wh = torch.linalg.svd(Rw)
    return Qw @ Ur, sv, Wh


def _lanczos_args(
    dim: int, k: int, which: str, block_size: int, tol: float, num_iters: int | None
) -> tuple[int, int, str, int, float, int]:
    """:func:`lanczos`'s arguments checked, with the default ``num_iters`` filled in."""
    dim = check_positive_int("dim", dim)
    k = check_positive_int("k", k)
    if k > dim:
        raise ValueError(f"k must be <= dim = {dim}, got {k}")
    which = check_choice("which", which, ("LA", "SA", "LM"))
    block_size = check_positive_int("block_size", block_size)
    if block_size > dim:
        raise ValueError(f"block_size must be <= dim = {dim}, got {block_size}")
    tol = check_positive("tol", tol, allow_zero=True)
    if num_iters is None:
        num_iters = min(dim, max(10 * k, 100))
    return dim, k, which, block_size, tol, check_positive_int("num_iters", num_iters)


def lanczos(
    matvec: Matvec | None,
    dim: int,
    k: int,
    *,
    num_iters: int | None = None,
    tol: float = 1e-8,
    seed: int = 0,
    which: str = "LA",
    block_size: int = 1,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    record_history: bool = False,
    matmat: Matmat | None = None,
) -> LanczosResult:
    """The ``k`` extreme eigenpairs of a symmetric ``A: (dim, dim)`` given by ``matvec``.

    Block Lanczos with full reorthogonalisation against the whole basis ``V`` (classical
    Gram-Schmidt twice for blocks; for ``block_size=1`` the recurrence's two vectors, then
    one pass against all of ``V``, repeated when it cancels: see :func:`_krylov`), and
    Rayleigh-Ritz on ``T = VᵀAV``: if ``T s = θ s`` then ``y = V s``
    has residual ``‖A y − θ y‖ = ‖R s_last‖`` (for ``block_size=1``: ``|β_m s_m|``), and
    the eigenvalue error is at most that residual (and about residual²/gap). Iteration
    stops when each of the ``k`` wanted residuals is ``≤ tol · max|θ|``, or after
    ``num_iters`` matvecs (default ``min(dim, max(10k, 100))``).

    ``which``: ``"LA"`` largest algebraic (returned in descending order), ``"SA"``
    smallest algebraic (ascending), ``"LM"`` largest magnitude (descending ``|λ|``).

    A single start vector finds one copy of each repeated eigenvalue (the Krylov space
    holds one direction per eigenspace); use ``block_size >= multiplicity`` when exactly
    repeated eigenvalues matter. When the Krylov space becomes invariant before ``k``
    pairs are found, fresh random directions are added, so ``num_iters = dim`` always
    recovers the full spectrum.

    ``matmat`` (optional): the same operator as a block product ``(dim, b) -> (dim, b)``,
    used for each block in one call (``matvec`` may then be None).

    Returns a :class:`LanczosResult` (unpacks as ``evals, evecs``), with the number of
    matvecs spent in ``num_matvecs``.
    """
    dim, k, which, block_size, tol, num_iters = _lanczos_args(
        dim, k, which, block_size, tol, num_iters)
    max_size = max(num_iters, k)
    gen = _generator(seed)
    start = _randn(dim, block_size, gen, dtype, device)
    history: list[tuple[int, torch.Tensor]] = []
    state: dict[str, object] = {}

    def stop(T: torch.Tensor, V: torch.Tensor, R: torch.Tensor | None, nmv: int) -> bool:
        m = T.shape[0]
        theta, S = torch.linalg.eigh(T)
        if record_history:
            history.append((nmv, theta[_select(theta, min(k, m), which)].clone()))
        if m < k:
            return False
        idx = _select(theta, k, which)
        if R is None:
            res = torch.zeros(k, dtype=T.dtype, device=T.device)
        else:
            last = S[m - R.shape[1] :, idx]  # (b, k): rows of the last block
            res = (R @ last).norm(dim=0)
        state.update(theta=theta, S=S, idx=idx, res=res)
        bound = tol * max(float(theta.abs().max()), torch.finfo(T.dtype).tiny)
        return bool((res <= bound).all()) or nmv >= num_iters or R is None and m >= dim

    if matmat is None:
        if not callable(matvec):
            raise ValueError(f"matvec must be callable when matmat is None, got {matvec!r}")
        matmat = _columnwise(matvec, dim)
    T, V, R, nmv = _krylov(matmat, start, max_size, stop=stop, restart_gen=gen)
    m = T.shape[0]
    if "theta" not in state or state["theta"].shape[0] != m:  # type: ignore[union-attr]
        stop(T, V, R, nmv)
    theta, S, idx, res = (state[key] for key in ("theta", "S", "idx", "res"))
    evals = theta[idx]  # type: ignore[index]
    evecs = V[:, : S.shape[0]] @ S[:, idx]  # type: ignore[union-attr, index]
    bound = tol * max(float(theta.abs().max()), torch.finfo(T.dtype).tiny)  # type: ignore[union-attr]
    return LanczosResult(
        eigenvalues=evals,
        eigenvectors=evecs,
        residuals=res,  # type: ignore[arg-type]
        num_matvecs=nmv,
        converged=bool((res <= bound).all()),  # type: ignore[operator]
        ritz_history=history,
    )


def sqrt_psd(eigenvalues: torch.Tensor) -> torch.Tensor:
    """f(λ) = √max(λ, 0): the square root of the positive part."""
    return eigenvalues.clamp_min(0).sqrt()


def _krylov_function(
    matmat: Matmat, Z: torch.Tensor, num_steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(V: (P, m), θ: (m,), U: (m, m), Y: (m, S))`` with ``T = VᵀAV = U diag(θ) Uᵀ`` on the
    block Krylov space of ``Z`` (k = ``num_steps`` block steps) and ``Y = Uᵀ VᵀZ``; None
    when Z is zero.

    ``VᵀZ`` is read off the first block only: ``Z = Q₀R₀`` with ``Q₀ = V[:, :b]`` and every
    later column orthogonal to ``Q₀`` to working precision, so ``VᵀZ = [Q₀ᵀZ; 0]`` (for a
    single column ``‖z‖ e₁``)."""
    if not isinstance(Z, torch.Tensor) or Z.ndim != 2:
        raise ValueError(f"Z must be a (P, S) tensor, got {getattr(Z, 'shape', type(Z))}")
    k = check_positive_int("num_steps", num_steps)
    norm = float(Z.norm())
    if not norm > 0:
        return None
    T, V, _, _ = _krylov(matmat, Z, k * Z.shape[1], restart_gen=None)
    m = T.shape[0]
    evals, U = torch.linalg.eigh(T)
    if Z.shape[1] == 1:  # V[:, 0] = z/‖z‖: VᵀZ = ‖z‖ e₁
        Y = U[:1].T * norm
    else:
        b = min(Z.shape[1], Z.shape[0], m)
        Y = U[:b].T @ (V[:, :b].T @ Z)
    return V[:, :m], evals, U, Y


def lanczos_function_factor(
    matmat: Matmat,
    Z: torch.Tensor,
    num_steps: int,
    fn: Callable[[torch.Tensor], torch.Tensor] = sqrt_psd,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R: (P, m), Y: (m, S))`` with ``f(A) Z ≈ R Y`` (see :func:`lanczos_matrix_function`).

    With the block Krylov basis ``V: (P, m)`` of Z, ``T = VᵀAV = U diag(θ) Uᵀ``:
    ``R = V U diag(f(θ))`` and ``Y = Uᵀ VᵀZ``. For ``f = √·₊``, ``R Rᵀ = V T₊ Vᵀ`` is the
    Rayleigh-Ritz approximation of ``A₊`` on the Krylov space, so ``R w`` with
    ``w ~ N(0, I_m)`` draws noise of that covariance at O(Pm) per draw (a basis reused
    across draws)."""
    parts = _krylov_function(matmat, Z, num_steps)
    if parts is None:
        return Z.new_zeros((Z.shape[0], 1)), Z.new_zeros((1, Z.shape[1]))
    V, evals, U, Y = parts
    return (V @ U) * fn(evals), Y


def lanczos_matrix_function(
    matmat: Matmat,
    Z: torch.Tensor,
    num_steps: int,
    fn: Callable[[torch.Tensor], torch.Tensor] = sqrt_psd,
) -> torch.Tensor:
    """``f(A) Z: (P, S)`` for ``Z: (P, S)`` by ``k = num_steps`` block Lanczos steps from Z.

    For a symmetric ``A: (P, P)`` given by ``matmat(V: (P, S)) -> A V``, the Lanczos process
    started at the block Z builds an orthonormal basis ``V`` of the block Krylov space
    ``span{Z, AZ, …, A^{k−1}Z}`` (at most ``kS`` columns) and ``T = VᵀAV``; then

        f(A) Z ≈ V f(T) VᵀZ,

    which is exact for every polynomial f of degree < k (``A^j Z = V T^j VᵀZ`` for j < k),
    and exact for any f once the Krylov space is invariant (at the latest when it spans
    R^P). Each column's answer is at least as accurate as ``k`` single-vector steps from that
    column (its Krylov space is contained in the block's). Directions that become
    linearly dependent at rounding level are dropped, so an invariant space ends early.
    With S = 1 this is ``‖z‖ V f(T) e₁``, the classical Lanczos approximation.

    Returns ``(P, S)`` in Z's dtype/device. Costs at most ``k`` calls of ``matmat`` on
    ``(P, S)`` blocks plus O(P (kS)²) for the reorthogonalisation (for S = 1, step j reads
    the j basis vectors twice and a P-vector about six times: see :func:`_krylov`) and
    one product ``V · (m, S)`` at the end.
    """
    parts = _krylov_function(matmat, Z, num_steps)
    if parts is None:
        return torch.zeros_like(Z)
    V, evals, U, Y = parts
    return V @ (U @ (fn(evals)[:, None] * Y))


# ----------------------------------------------------------------------------------------
# power iteration with deflation (baseline)
# ----------------------------------------------------------------------------------------


@dataclass
class PowerIterationResult:
    """Output of :func:`power_iteration_deflation`: ``eigenvalues (k,)`` in the order found
    (descending magnitude), ``eigenvectors (dim, k)``, ``num_matvecs`` in total and
    ``iterations`` (matvecs per eigenpair). Unpacks as ``evals, evecs``."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    num_matvecs: int
    iterations: list[int]

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.eigenvalues
        yield self.eigenvectors


def power_iteration_deflation(
    matvec: Matvec,
    dim: int,
    k: int,
    *,
    tol: float = 1e-3,
    max_iters: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> PowerIterationResult:
    """Top-``k`` (largest magnitude) eigenpairs by power iteration with deflation.

    The scheme of PyHessian (Yao et al. 2020): for each pair, start from a random unit
    vector; repeat ``v ← v − U(Uᵀv)``, ``v ← v/‖v‖``, ``w = A v``, ``μ = vᵀw``,
    ``v ← w/‖w‖``, with ``U`` the eigenvectors found so far, until the relative change of
    ``μ`` is below ``tol`` (``|μ − μ_prev| / (|μ_prev| + 1e-6) < tol``) or ``max_iters``
    products. Kept as the baseline that :func:`lanczos` is benchmarked against.
    """
    dim = check_positive_int("dim", dim)
    k = check_positive_int("k", k)
    if k > dim:
        raise ValueError(f"k must be <= dim = {dim}, got {k}")
    tol = check_positive("tol", tol)
    max_iters = check_positive_int("max_iters", max_iters)
    gen = _generator(seed)
    vecs: list[torch.Tensor] = []
    vals: list[float] = []
    iters: list[int] = []
    total = 0
    for _ in range(k):
        v = _randn(dim, 1, gen, dtype, device)[:, 0]
        mu_prev: float | None = None
        mu = 0.0
        used = 0
        for _ in range(max_iters):
            for u in vecs:
                v = v - (u @ v) * u
            v = v / v.norm()
            w = _apply(matvec, v, dim)
            used += 1
            mu = float(v @ w)
            v = w / w.norm().clamp_min(torch.finfo(dtype).tiny)
            if mu_prev is not None and abs(mu - mu_prev) / (abs(mu_prev) + 1e-6) < tol:
                break
            mu_prev = mu
        for u in vecs:  # store an exactly orthonormal basis
            v = v - (u @ v) * u
        vecs.append(v / v.norm())
        vals.append(mu)
        iters.append(used)
        total += used
    return PowerIterationResult(
        eigenvalues=torch.tensor(vals, dtype=dtype, device=device),
        eigenvectors=torch.stack(vecs, dim=1),
        num_matvecs=total,
        iterations=iters,
    )


# ----------------------------------------------------------------------------------------
# trace and density
# ----------------------------------------------------------------------------------------


@dataclass
class TraceEstimate:
    """Hutchinson estimate of ``tr A``: ``estimate`` (mean of ``zᵀAz``), ``stderr``
    (sample standard deviation / √num_samples), ``num_samples`` and the raw ``samples``.
    ``float(result)`` gives the estimate."""

    estimate: float
    stderr: float
    num_samples: int
    samples: torch.Tensor

    def __float__(self) -> float:
        return float(self.estimate)


def hutchinson_trace(
    matvec: Matvec,
    dim: int,
    num_samples: int,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> TraceEstimate:
    """Hutchinson's estimator ``tr A ≈ (1/S) Σ_s z_sᵀ A z_s`` with Rademacher ``z_s: (dim,)``.

    Unbiased; its variance per sample is ``2 (‖A‖_F² − Σ_i A_ii²)``. ``stderr`` uses the
    sample standard deviation (0 when ``num_samples == 1``)."""
    dim = check_positive_int("dim", dim)
    num_samples = check_positive_int("num_samples", num_samples)
    gen = _generator(seed)
    vals = torch.empty(num_samples, dtype=torch.float64)
    for s in range(num_samples):
        z = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(dtype=dtype, device=device)
        vals[s] = float(z @ _apply(matvec, z, dim))
    est = float(vals.mean())
    se = float(vals.std(unbiased=True) / math.sqrt(num_samples)) if num_samples > 1 else 0.0
    return TraceEstimate(estimate=est, stderr=se, num_samples=num_samples, samples=vals)


@dataclass
class SpectralDensity:
    """Output of :func:`spectral_density`.

    ``grid: (G,)`` and ``density: (G,)`` (trapezoid-normalised to integrate to 1 on the
    grid); ``nodes: (num_probes, m)`` and ``weights: (num_probes, m)`` the Gauss quadrature
    rule of every probe (Ritz values and squared first components, each row of weights sums
    to 1; rows are zero-padded if a probe's Krylov space closed early); ``sigma`` the kernel
    width; ``num_matvecs``. Unpacks as ``grid, density``."""

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    num_matvecs: int

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.grid
        yield self.density

    def mean(self) -> float:
        """``(1/num_probes) Σ_p Σ_j w_pj θ_pj``: the SLQ estimate of ``tr A / dim``."""
        return float((self.weights * self.nodes).sum() / self.nodes.shape[0])


def spectral_density(
    matvec: Matvec,
    dim: int,
    *,
    num_probes: int = 4,
    num_iters: int = 60,
    grid: torch.Tensor | None = None,
    num_points: int = 1000,
    sigma: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SpectralDensity:
    """Eigenvalue density of ``A: (dim, dim)`` by stochastic Lanczos quadrature.

    For each probe ``v`` (Rademacher, normalised), ``m = num_iters`` Lanczos steps give
    ``T_m = S diag(θ) Sᵀ``; the Gauss rule ``{θ_j, w_j = S_1j²}`` satisfies
    ``Σ_j w_j f(θ_j) ≈ vᵀ f(A) v``, and ``E_v[vᵀ f(A) v] = (1/dim) tr f(A)``. With
    ``f = g_σ(t − ·)`` (Gaussian kernel of width ``sigma``):
    ``φ(t) ≈ (1/num_probes) Σ_probes Σ_j w_j g_σ(t − θ_j)``.

    ``grid`` default: ``num_points`` points spanning the nodes ± 5σ; ``sigma`` default:
    1% of the node range (or ``1e-3 · max(1, |θ|)`` if all nodes coincide). The density is
    renormalised so its trapezoid integral over the grid is 1.
    """
    dim = check_positive_int("dim", dim)
    num_probes = check_positive_int("num_probes", num_probes)
    num_iters = check_positive_int("num_iters", num_iters)
    num_points = check_positive_int("num_points", num_points)
    m_max = min(num_iters, dim)
    gen = _generator(seed)
    matmat = _columnwise(matvec, dim)
    nodes = torch.zeros(num_probes, m_max, dtype=torch.float64)
    weights = torch.zeros(num_probes, m_max, dtype=torch.float64)
    total = 0
    for p in range(num_probes):
        z = (torch.randint(0, 2, (dim, 1), generator=gen) * 2 - 1).to(dtype=dtype, device=device)
        z = z / math.sqrt(dim)

        def stop(T, V, R, nmv):  # noqa: ANN001, ARG001
            return T.shape[0] >= m_max

        T, _, _, nmv = _krylov(matmat, z, m_max, stop=stop, restart_gen=None)
        total += nmv
        theta, S = torch.linalg.eigh(T.to(torch.float64).cpu())
        m = theta.shape[0]
        nodes[p, :m] = theta
        weights[p, :m] = S[0, :] ** 2
    used = weights > 0
    lo = float(nodes[used].min())
    hi = float(nodes[used].max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(1.0, abs(hi))
    sigma = check_positive("sigma", sigma)
    if grid is None:
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
    else:
        if not isinstance(grid, torch.Tensor) or grid.ndim != 1 or grid.numel() < 2:
            raise ValueError(f"grid must be a 1-D tensor with >= 2 points, got {grid!r}")
        grid = grid.to(torch.float64).cpu()
    diff = (grid[:, None, None] - nodes[None]) / sigma  # (G, probes, m)
    kern = torch.exp(-0.5 * diff**2) / (sigma * math.sqrt(2 * math.pi))
    density = (kern * weights[None]).sum(dim=(1, 2)) / num_probes
    area = float(torch.trapezoid(density, grid))
    if area <= 0:
        raise ValueError(
            f"grid [{float(grid[0])}, {float(grid[-1])}] does not cover the spectrum "
            f"[{lo}, {hi}] (sigma={sigma}); widen it"
        )
    return SpectralDensity(
        grid=grid,
        density=density / area,
        nodes=nodes,
        weights=weights,
        sigma=float(sigma),
        num_matvecs=total,
    )


def top_eigenspace_overlap(U: torch.Tensor, V: torch.Tensor) -> float:
    """Overlap ``‖UᵀV‖_F² / k`` of the subspaces spanned by orthonormal ``U, V: (dim, k)``.

    1 when they coincide, 0 when orthogonal; ``k/dim`` on average for random subspaces.
    It is the mean squared cosine of the principal angles."""
    U = check_matrix("U", U)
    V = check_matrix("V", V)
    if U.shape != V.shape:
        raise ValueError(f"U and V must have the same shape, got {tuple(U.shape)} and "
                         f"{tuple(V.shape)}")
    k = U.shape[1]
    M = U.T.to(torch.float64) @ V.to(torch.float64)
    return float((M**2).sum() / k)


# ----------------------------------------------------------------------------------------
# reading a spectrum (eigenvalues, an SLQ rule) and comparing subspaces
# ----------------------------------------------------------------------------------------


def numerical_rank(evals: Tensor, *, rtol: float | None = None, dim: int | None = None) -> int:
    """Number of eigenvalues above ``rtol · max|λ|``.

    Default ``rtol = 10 · max(len(evals), dim or 0) · eps(float64)``, the usual rounding
    threshold for a symmetric eigensolver on a matrix of that size."""
    ev = torch.as_tensor(evals, dtype=torch.float64).reshape(-1)
    if ev.numel() == 0:
        return 0
    top = float(ev.abs().max())
    if top == 0.0:
        return 0
    if rtol is None:
        rtol = 10 * max(ev.numel(), dim or 0) * torch.finfo(torch.float64).eps
    rtol = check_positive("rtol", rtol)
    return int((ev.abs() > rtol * top).sum())


def count_outliers(evals: Tensor, *, max_outliers: int = 30, min_gap: float = 1.5) -> int:
    """Number of outliers at the top of a spectrum, by the largest multiplicative gap.

    With positive eigenvalues λ_1 ≥ λ_2 ≥ ... (only the first ``max_outliers + 1`` are
    looked at), the count is the k ∈ {1..max_outliers} maximising λ_k / λ_{k+1}, provided
    that ratio is at least ``min_gap``; otherwise 0 (no clear separation). Non-positive
    values end the list (a ratio to 0 counts as an infinite gap).
    """
    max_outliers = check_positive_int("max_outliers", max_outliers)
    min_gap = check_positive("min_gap", min_gap)
    ev = torch.as_tensor(evals, dtype=torch.float64).reshape(-1).sort(descending=True).values
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
    """Fraction of a spectrum with ``|λ| ≤ rtol · max|λ|``.

    ``evals`` may list only the non-zero part of a (dim × dim) spectrum (e.g. a Gram
    spectrum of length N for a P × P matrix); the missing dim − len(evals) eigenvalues are
    then exact zeros and count as near zero."""
    ev = torch.as_tensor(evals, dtype=torch.float64).reshape(-1)
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
    """Fraction of the spectral mass with ``|λ| ≤ rtol · scale`` from an SLQ quadrature rule.

    ``density`` is a :class:`sgdnoise.spectral.SpectralDensity` (its ``nodes`` and
    ``weights``, each probe's weights summing to 1); ``scale`` defaults to the largest
    ``|node|``. The estimate averages over probes ``Σ_j w_j 1{|θ_j| ≤ rtol·scale}``, an unbiased
    estimate of the eigenvalue fraction in that window when the quadrature has resolved it.
    """
    nodes, weights = density.nodes.to(torch.float64), density.weights.to(torch.float64)
    used = weights > 0
    if scale is None:
        scale = float(nodes[used].abs().max())
    scale = check_positive("scale", scale)
    rtol = check_positive("rtol", rtol, allow_zero=True)
    inside = (nodes.abs() <= rtol * scale) & used
    return float((weights * inside).sum() / nodes.shape[0])


def slq_zero_cluster(density: Any, *, scale: float | None = None) -> dict[str, float]:
    """The Gauss node nearest 0 of each SLQ probe: its weight and ``|position| / scale``.

    An m-node Gauss rule cannot split mass finer than its node spacing: a large cluster of
    near-zero eigenvalues shows up as one node (or a few) near 0 whose weight is the
    cluster's share of the spectrum and whose position is the cluster's centre of mass.
    Returns {"weight": mean over probes of that node's weight, "position": mean of its
    ``|θ| / scale``} (``scale`` defaults to the largest ``|node|``), so a caller can tell whether a
    window rtol · scale is wider than the quadrature's resolution (position ≪ rtol) or not.
    """
    nodes, weights = density.nodes.to(torch.float64), density.weights.to(torch.float64)
    used = weights > 1e-10  # nodes with numerically no weight (spurious Ritz values) skipped
    if scale is None:
        scale = float(nodes[used].abs().max())
    scale = check_positive("scale", scale)
    dist = torch.where(used, nodes.abs(), torch.full_like(nodes, math.inf))
    j = dist.argmin(dim=1)
    rows = torch.arange(nodes.shape[0])
    return {"weight": float(weights[rows, j].mean()),
            "position": float((dist[rows, j] / scale).mean())}


def subspace_capture(U: Tensor, M: Tensor, *, rtol: float = 1e-8) -> float:
    """Mean squared norm of the projections of the orthonormal columns of U: (P, k) onto
    span(rows of M: (m, P)): ‖Q_Mᵀ U‖_F² / k ∈ [0, 1] (1: span U ⊂ span M).

    A random k-subspace gives on average r/P with r = rank M."""
    check_matrix("U", U)
    check_matrix("M", M)
    if M.shape[1] != U.shape[0]:
        raise ValueError(f"M must have P = {U.shape[0]} columns, got shape {tuple(M.shape)}")
    Q = orthonormal_basis(M.T, rtol=rtol)
    proj = Q.T @ U.to(torch.float64)
    return float((proj**2).sum() / U.shape[1])


def random_subspace_fraction(k: int, dim: int) -> float:
    """E[Σ_{j≤k} u_jᵀ C u_j] / tr C = k / dim for a uniformly random k-subspace of R^dim
    (E[u uᵀ] = I/dim for a uniform unit vector u)."""
    k = check_positive_int("k", k)
    dim = check_positive_int("dim", dim)
    if k > dim:
        raise ValueError(f"k must be <= dim = {dim}, got {k}")
    return k / dim


def orthonormal_basis(A: torch.Tensor, *, rtol: float = 1e-10) -> torch.Tensor:
    """``Q: (P, r)``, an orthonormal basis of the column space of ``A: (P, m)`` in float64.

    From the QR factorisation ``A = QR`` (no pivoting): the columns of Q whose
    ``|R_jj| > rtol · max_j |R_jj|`` are kept, so r is the numerical rank when the columns
    of A are in general position (a column in the span of the earlier ones gets
    ``R_jj ≈ 0``)."""
    check_matrix("A", A)
    Q, R = torch.linalg.qr(A.to(torch.float64))
    d = R.diagonal().abs()
    keep = d > rtol * float(d.max()) if d.numel() and float(d.max()) > 0 else d > 0
    Q = Q[:, keep]
    return Q
