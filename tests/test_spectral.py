"""Tests for sgdnoise.spectral against dense eigendecompositions of matrices with known
spectra (float64; ``known_spectrum`` from ``tests/references.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from references import known_spectrum

from sgdnoise.spectral import (
    hutchinson_trace,
    lanczos,
    power_iteration_deflation,
    spectral_density,
    top_eigenspace_overlap,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Counter:
    def __init__(self, A: torch.Tensor) -> None:
        self.A = A
        self.calls = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.A @ v


def bulk(n: int, seed: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


# ---------------------------------------------------------------------------------- Lanczos


def test_lanczos_distinct_top_eigenpairs_match_eigh():
    eigs = torch.cat([torch.tensor([10.0, 7.0, 5.0, 4.0, 3.5]), bulk(115, seed=1)])
    A, _ = known_spectrum(eigs, seed=2)
    mv = Counter(A)
    res = lanczos(mv, A.shape[0], 5, tol=1e-10)
    ref_vals, ref_vecs = torch.linalg.eigh(A)
    top = ref_vals.flip(0)[:5]
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, top, rtol=1e-10, atol=1e-10)
    # descending, orthonormal, true eigenvectors (residuals) and the right subspace
    assert torch.all(res.eigenvalues[:-1] >= res.eigenvalues[1:])
    U = res.eigenvectors
    torch.testing.assert_close(U.T @ U, torch.eye(5, dtype=torch.float64), atol=1e-10, rtol=0)
    resid = (A @ U - U * res.eigenvalues).norm(dim=0)
    assert float(resid.max()) < 1e-8
    assert top_eigenspace_overlap(U, ref_vecs[:, -5:]) == pytest.approx(1.0, abs=1e-10)
    # the reported count is the number of products actually spent, and it is far below dim
    assert res.num_matvecs == mv.calls
    assert res.num_matvecs < 80
    # tuple-style unpacking
    vals, vecs = res
    assert vals is res.eigenvalues and vecs is res.eigenvectors


@pytest.mark.parametrize(
    "which, pick",
    [
        ("LA", lambda e: torch.sort(e, descending=True).values),
        ("SA", lambda e: torch.sort(e).values),
        ("LM", lambda e: e[torch.argsort(e.abs(), descending=True)]),
    ],
)
def test_lanczos_which_on_indefinite_spectrum(which, pick):
    eigs = torch.cat([torch.tensor([6.0, -9.0, 4.0, -5.0]), bulk(56, seed=3, lo=-1.0, hi=1.0)])
    A, _ = known_spectrum(eigs, seed=4)
    res = lanczos(lambda v: A @ v, 60, 3, which=which, tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, pick(eigs)[:3], rtol=1e-9, atol=1e-9)


def test_lanczos_clustered_eigenvalues():
    top = torch.tensor([5.0, 5.0 - 1e-4, 5.0 - 2e-4, 4.0])
    eigs = torch.cat([top, bulk(96, seed=5, hi=3.0)])
    A, _ = known_spectrum(eigs, seed=6)
    res = lanczos(lambda v: A @ v, 100, 4, tol=1e-12, num_iters=100)
    torch.testing.assert_close(res.eigenvalues, top.double(), rtol=0, atol=1e-9)


def test_lanczos_degenerate_eigenvalue_with_block_and_full_krylov():
    eigs = torch.cat([torch.tensor([3.0, 3.0, 3.0, 2.0]), bulk(76, seed=7)])
    A, Q = known_spectrum(eigs, seed=8)
    expected = torch.tensor([3.0, 3.0, 3.0, 2.0], dtype=torch.float64)
    blocked = lanczos(lambda v: A @ v, 80, 4, block_size=3, tol=1e-10)
    torch.testing.assert_close(blocked.eigenvalues, expected, rtol=0, atol=1e-9)
    # the three returned vectors span the whole degenerate eigenspace
    overlap = top_eigenspace_overlap(blocked.eigenvectors[:, :3], Q[:, :3])
    assert overlap == pytest.approx(1.0, abs=1e-9)
    full = lanczos(lambda v: A @ v, 80, 4, num_iters=80)
    torch.testing.assert_close(full.eigenvalues, expected, rtol=0, atol=1e-9)


def test_block_budget_that_is_not_a_multiple_of_the_block_grows_the_basis():
    """num_iters = 10 with blocks of 3: the basis buffer (10 columns) must grow while the
    next block is not yet stored; the reported residuals are the true ``‖A y − θ y‖``."""
    A, _ = known_spectrum(bulk(60, seed=12, lo=-1.0), seed=13)
    res = lanczos(lambda v: A @ v, 60, 2, block_size=3, num_iters=10)
    assert res.num_matvecs >= 10
    true = (A @ res.eigenvectors - res.eigenvectors * res.eigenvalues).norm(dim=0)
    torch.testing.assert_close(res.residuals, true, rtol=1e-6, atol=1e-12)


def test_lanczos_small_dim_recovers_whole_spectrum():
    eigs = torch.tensor([4.0, 1.0, 1.0, -2.0, 0.5, 0.0])
    A, _ = known_spectrum(eigs, seed=9)
    res = lanczos(lambda v: A @ v, 6, 6, num_iters=6)
    torch.testing.assert_close(res.eigenvalues, torch.sort(eigs.double(), descending=True).values,
                               rtol=0, atol=1e-10)


def test_lanczos_is_seeded_and_validates():
    A, _ = known_spectrum(bulk(30, seed=10), seed=11)
    a = lanczos(lambda v: A @ v, 30, 2, seed=3)
    b = lanczos(lambda v: A @ v, 30, 2, seed=3)
    assert torch.equal(a.eigenvalues, b.eigenvalues)
    with pytest.raises(ValueError, match="k must be <= dim"):
        lanczos(lambda v: A @ v, 30, 31)
    with pytest.raises(ValueError, match="which"):
        lanczos(lambda v: A @ v, 30, 2, which="BE")
    with pytest.raises(ValueError, match="matvec"):
        lanczos(lambda v: v[:3], 30, 2)


# ------------------------------------------------------------------------- power iteration


def test_power_iteration_deflation_top_eigenvalues_and_count():
    eigs = torch.cat([torch.tensor([10.0, 6.0, 3.0]), bulk(57, seed=12)])
    A, _ = known_spectrum(eigs, seed=13)
    mv = Counter(A)
    res = power_iteration_deflation(mv, 60, 3, tol=1e-8, max_iters=500)
    torch.testing.assert_close(res.eigenvalues, eigs[:3].double(), rtol=1e-6, atol=0)
    assert res.num_matvecs == mv.calls == sum(res.iterations)
    U = res.eigenvectors
    torch.testing.assert_close(U.T @ U, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


# ---------------------------------------------------------------------------------- trace


def test_hutchinson_exact_for_diagonal_and_unbiased_within_stderr():
    D = torch.diag(torch.arange(1.0, 21.0, dtype=torch.float64))
    est = hutchinson_trace(lambda v: D @ v, 20, 5)
    assert est.estimate == pytest.approx(210.0, abs=1e-10)  # zᵀDz = tr D for Rademacher z
    assert est.stderr == pytest.approx(0.0, abs=1e-10)
    for seed in range(3):
        A, _ = known_spectrum(torch.linspace(-1.0, 3.0, 50), seed=seed)
        t = hutchinson_trace(lambda v, A=A: A @ v, 50, 200, seed=seed)
        exact = float(torch.trace(A))
        assert t.stderr > 0
        assert abs(t.estimate - exact) < 4 * t.stderr
        # the sample variance agrees with the closed form 2(‖A‖_F² − Σ A_ii²)
        var = 2 * (float((A**2).sum()) - float((torch.diagonal(A) ** 2).sum()))
        assert t.samples.var().item() == pytest.approx(var, rel=0.35)
        assert float(t) == t.estimate


# --------------------------------------------------------------------------------- density


def test_slq_density_normalised_mean_and_mass():
    eigs = torch.cat([torch.full((60,), 1.0), torch.full((20,), 5.0)])
    A, _ = known_spectrum(eigs, seed=14)
    sd = spectral_density(lambda v: A @ v, 80, num_probes=8, num_iters=10, sigma=0.1, seed=1)
    grid, dens = sd
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(sd.weights.sum(dim=1), torch.ones(8, dtype=torch.float64))
    # SLQ mean equals Hutchinson (same Rademacher probes) / dim, and ≈ tr A / dim
    hut = hutchinson_trace(lambda v: A @ v, 80, 8, seed=1)
    assert sd.mean() * 80 == pytest.approx(hut.estimate, rel=1e-10)
    assert abs(sd.mean() - 2.0) < 4 * hut.stderr / 80 + 1e-12
    # two distinct eigenvalues: the Krylov space closes after 2 steps, nodes are exact
    used = sd.weights > 1e-14
    node_vals = sd.nodes[used]
    assert torch.all((node_vals - 1.0).abs().lt(1e-8) | (node_vals - 5.0).abs().lt(1e-8))
    # mass near 5 ≈ 20/80 (weights are squared projections of random probes)
    near5 = grid > 3.0
    mass5 = float(torch.trapezoid(dens * near5, grid))
    w5 = sd.weights[sd.nodes > 3.0]
    assert mass5 == pytest.approx(float(w5.sum()) / 8, abs=1e-3)
    assert abs(mass5 - 0.25) < 0.08


def test_slq_mean_tracks_trace_on_continuous_spectrum():
    eigs = bulk(200, seed=15, lo=-2.0, hi=4.0)
    A, _ = known_spectrum(eigs, seed=16)
    sd = spectral_density(lambda v: A @ v, 200, num_probes=20, num_iters=30, seed=2)
    hut = hutchinson_trace(lambda v: A @ v, 200, 20, seed=2)
    assert abs(sd.mean() - float(eigs.mean())) < 4 * hut.stderr / 200
    assert float(torch.trapezoid(sd.density, sd.grid)) == pytest.approx(1.0, abs=1e-12)
    assert float(sd.nodes.min()) >= float(eigs.min()) - 1e-9
    assert float(sd.nodes.max()) <= float(eigs.max()) + 1e-9
    # the extreme Ritz value of a 30-step run is close to the largest eigenvalue
    assert float(sd.nodes.max()) == pytest.approx(float(eigs.max()), abs=1e-2)
    assert sd.num_matvecs == 20 * 30


# --------------------------------------------------------------------------------- overlap


def test_top_eigenspace_overlap():
    gen = torch.Generator().manual_seed(0)
    dim, k = 40, 4
    U, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
    R, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    assert top_eigenspace_overlap(U, U @ R) == pytest.approx(1.0, abs=1e-12)
    Q, _ = torch.linalg.qr(torch.randn(dim, 2 * k, generator=gen, dtype=torch.float64))
    assert top_eigenspace_overlap(Q[:, :k], Q[:, k:]) == pytest.approx(0.0, abs=1e-12)
    # random subspaces: E = k/dim; per draw variance is O(1/dim²), mean of 200 draws
    vals = []
    for _ in range(200):
        V, _ = torch.linalg.qr(torch.randn(dim, k, generator=gen, dtype=torch.float64))
        vals.append(top_eigenspace_overlap(U, V))
    vals_t = torch.tensor(vals)
    se = float(vals_t.std()) / math.sqrt(len(vals))
    assert abs(float(vals_t.mean()) - k / dim) < 4 * se
    with pytest.raises(ValueError, match="same shape"):
        top_eigenspace_overlap(U, U[:, :2])


def test_one_krylov_core_serves_blocks_factors_and_matrix_functions():
    """lanczos with a block ``matmat`` equals lanczos with ``matvec``; the factor (R, Y) of
    lanczos_function_factor gives lanczos_matrix_function = R Y and R Rᵀ = V f(T)² Vᵀ, which
    is A₊ exactly once the Krylov space is the whole space."""
    from sgdnoise.spectral import lanczos_function_factor, lanczos_matrix_function

    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=torch.float64))
    lam = torch.linspace(-1.0, 3.0, 40, dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    a = lanczos(lambda v: A @ v, 40, 3, tol=1e-12, seed=1)
    b = lanczos(None, 40, 3, tol=1e-12, seed=1, matmat=lambda V: A @ V)
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-12, atol=1e-12)
    Z = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    R, Y = lanczos_function_factor(lambda V: A @ V, Z, 5)
    torch.testing.assert_close(R @ Y, lanczos_matrix_function(lambda V: A @ V, Z, 5))
    R, _ = lanczos_function_factor(lambda V: A @ V, Z[:, :1], 40)
    Ap = Q @ torch.diag(lam.clamp_min(0)) @ Q.T
    torch.testing.assert_close(R @ R.T, Ap, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="matmat must map"):
        lanczos_matrix_function(lambda V: V[:-1], Z, 2)


# ------------------------------------------------------------------ reading a spectrum (chapter 5)

from sgdnoise.spectral import (  # noqa: E402
    count_outliers,
    near_zero_fraction,
    orthonormal_basis,
    slq_near_zero_fraction,
    slq_zero_cluster,
)

DT = torch.float64


def test_count_outliers_on_known_spikes():
    ev = torch.cat([torch.linspace(100, 50, 7), torch.linspace(1.0, 0.01, 50)])
    assert count_outliers(ev) == 7
    assert count_outliers(torch.linspace(2.0, 1.0, 30)) == 0  # smooth: no gap >= 1.5


def test_near_zero_fractions_exact_and_slq():
    dim, zeros = 200, 140
    diag = torch.zeros(dim, dtype=DT)
    diag[zeros:] = torch.linspace(1.0, 10.0, 20, dtype=DT).repeat(3)
    assert near_zero_fraction(diag, rtol=1e-3) == zeros / dim
    assert near_zero_fraction(diag[zeros:], rtol=1e-3, dim=dim) == zeros / dim
    sd = spectral_density(lambda v: diag * v, dim, num_probes=2, num_iters=40, seed=0)
    # Rademacher probes on a diagonal matrix put mass exactly zeros/dim on the null space
    assert abs(slq_near_zero_fraction(sd, rtol=1e-6) - zeros / dim) < 1e-8
    zc = slq_zero_cluster(sd)
    assert abs(zc["weight"] - zeros / dim) < 1e-8 and zc["position"] < 1e-10
    # a tight cluster of small positive eigenvalues: a short Gauss rule lumps it into one
    # node just above the cluster (interlacing: >= its minimum), carrying about its share
    clustered = diag.clone()
    clustered[:zeros] = torch.linspace(1e-3, 3e-3, zeros, dtype=DT)
    sd = spectral_density(lambda v: clustered * v, dim, num_probes=2, num_iters=6, seed=0)
    zc = slq_zero_cluster(sd, scale=10.0)
    assert 1e-4 - 1e-12 <= zc["position"] < 1e-3  # far below the rest (>= 0.1)
    assert abs(zc["weight"] - zeros / dim) < 0.05
    assert slq_near_zero_fraction(sd, rtol=1e-4, scale=10.0) == 0.0  # window too narrow


def test_count_outliers_names_bad_arguments():
    with pytest.raises(ValueError, match="max_outliers"):
        count_outliers(torch.ones(3), max_outliers=0)


def test_orthonormal_basis_keeps_the_rank():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(20, 4, generator=gen, dtype=DT)
    A = torch.cat([A, A[:, :2] @ torch.randn(2, 3, generator=gen, dtype=DT)], dim=1)
    Q = orthonormal_basis(A)
    assert Q.shape == (20, 4)
    torch.testing.assert_close(Q.T @ Q, torch.eye(4, dtype=DT))
    torch.testing.assert_close(Q @ (Q.T @ A), A)  # spans the columns of A


# --------------------------------------------------- the one-column path of the Krylov core


def _dense_function(A: torch.Tensor, fn) -> torch.Tensor:
    lam, U = torch.linalg.eigh(A)
    return U @ torch.diag(fn(lam)) @ U.T


@pytest.mark.parametrize("case", ["indefinite", "clustered", "low_rank"])
def test_column_path_agrees_with_the_block_code_and_a_dense_reference(case):
    """A single start vector takes the lean path of ``_krylov`` (norms, a local pass and
    one full Gram-Schmidt pass, T in a preallocated buffer); forced through the general
    block code instead it must give the same Ritz values and f(A)z. Each path's basis is
    orthonormal with T = VᵀAV (float64, dense), f(A)z = V f(T) Vᵀz, and the answer is
    exact once the Krylov space is invariant (rank 4) or the whole space (k = dim)."""
    from sgdnoise.spectral import _krylov, lanczos_matrix_function, sqrt_psd

    n = 60
    if case == "indefinite":
        eigs = torch.linspace(-2.0, 5.0, n, dtype=torch.float64)
    elif case == "clustered":  # three outliers over a cluster of width 1e-6 at 1
        eigs = torch.cat([torch.tensor([40.0, 30.0, 20.0]), 1 + 1e-6 * bulk(n - 3, seed=4)])
    else:  # rank 4: the Krylov space of any z is invariant after 5 steps
        eigs = torch.cat([torch.tensor([3.0, 1.0, -0.5, 2.0]), torch.zeros(n - 4)])
    A, _ = known_spectrum(eigs, seed=5)
    top = float(eigs.abs().max())
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def fz(T, V):
        lam, U = torch.linalg.eigh(T)
        return V @ (U @ (sqrt_psd(lam)[:, None] * (U.T @ (V.T @ z))))

    for k in (1, 3, 8, 30):
        T1, V1, _, _ = _krylov(lambda V: A @ V, z, k)
        T2, V2, _, _ = _krylov(lambda V: A @ V, z, k, column_path=False)
        m = T1.shape[0]
        assert T2.shape[0] == m and m == (min(k, 5) if case == "low_rank" else k)
        V1, V2 = V1[:, :m], V2[:, :m]
        for T, V in ((T1, V1), (T2, V2)):
            torch.testing.assert_close(V.T @ V, torch.eye(m, dtype=torch.float64),
                                       rtol=0, atol=1e-12)
            torch.testing.assert_close(T, V.T @ A @ V, rtol=0, atol=1e-12 * top)
        torch.testing.assert_close(torch.linalg.eigvalsh(T1), torch.linalg.eigvalsh(T2),
                                   rtol=0, atol=1e-12 * top)
        # after a nearly invariant step (clustered: β ~ 1e-7 ‖A‖) the basis is fixed only
        # to ~eps ‖A‖/β, so the two paths' vectors (and f(A)z) agree to that level
        got = lanczos_matrix_function(lambda V: A @ V, z, k)
        torch.testing.assert_close(got, fz(T1, V1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got, fz(T2, V2), rtol=1e-7, atol=1e-7)
    exact = _dense_function(A, sqrt_psd) @ z
    if case != "low_rank":  # k = dim
        got = lanczos_matrix_function(lambda V: A @ V, z, n)
    # √ is not Lipschitz at 0: rounding-level eigenvalues of the null space (rank 4) become
    # ~1e-8 after the square root, in the dense reference as in the Lanczos answer
    torch.testing.assert_close(got, exact, rtol=1e-7, atol=1e-7)


def test_column_path_keeps_a_float32_basis_orthonormal():
    """float32 (the noise sampler's precision) on a spectrum with a dominant outlier, where
    plain Lanczos loses orthogonality fast: the reorthogonalised basis stays orthonormal to
    float32 rounding and f(A)z matches the float64 answer from the same number of steps."""
    from sgdnoise.spectral import _krylov, lanczos_matrix_function

    eigs = torch.cat([torch.tensor([1e3, 50.0]), bulk(198, seed=7, lo=-1.0, hi=1.0)])
    A, _ = known_spectrum(eigs, seed=8)
    z = torch.randn(200, 1, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    T, V, _, _ = _krylov(lambda V: A.float() @ V, z.float(), 40)
    m = T.shape[0]
    err = (V[:, :m].T @ V[:, :m] - torch.eye(m)).abs().max()
    assert float(err) < 50 * torch.finfo(torch.float32).eps
    got = lanczos_matrix_function(lambda V: A.float() @ V, z.float(), 12)
    want = lanczos_matrix_function(lambda V: A @ V, z, 12)
    assert float((got.double() - want).norm() / want.norm()) < 1e-4


def test_lanczos_names_an_operator_of_the_wrong_size_or_with_nan_output():
    A = torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"dim = 5") as err:
        lanczos(lambda v: A @ v, 5, 1)
    assert "matvec" in str(err.value)
    with pytest.raises(ValueError, match=r"matvec returned 5 non-finite"):
        lanczos(lambda v: v * float("nan"), 5, 1)
    with pytest.raises(ValueError, match=r"matmat returned .*non-finite"):
        lanczos(None, 4, 1, matmat=lambda Q: Q + float("inf"))
