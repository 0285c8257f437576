"""Tests for sgdnoise.noise: every noise kind against an independent dense reference.

Covariance checks: with S draws ξ_s of a zero-mean vector of covariance Σ, the estimate
Ĉ = (1/S) Σ_s ξ_s ξ_sᵀ has E‖Ĉ − Σ‖_F² = (1/S) Σ_ab Var(ξ_a ξ_b). We estimate that variance
from the draws themselves and require ‖Ĉ − Σ‖_F <= 4 · sqrt(that / S) (Markov: a correct
sampler fails with probability <= 1/16; the seeds are fixed, so the outcome is repeatable).
Each check also shows a plausible wrong target is rejected, so the assertion can fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import loop_grads
from references import (
    dense_fn,
    dense_ggn,
    dense_hessian,
    nparams,
    psd_part,
    tiny_problem,
    true_fisher_by_enumeration,
)
from torch import nn

from sgdnoise import noise
from sgdnoise.curvature import GGNOperator, HessianOperator
from sgdnoise.noise import KINDS, NoisySGD, matched_injection_scale, sample_noise
from sgdnoise.spectral import lanczos_matrix_function, sqrt_psd

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------
# fixtures and independent references
# ----------------------------------------------------------------------------------------


def centred_cov(G: torch.Tensor) -> torch.Tensor:
    Gc = G - G.mean(0)
    return Gc.T @ Gc / G.shape[0]


def check_covariance(draws: torch.Tensor, target: torch.Tensor, wrong: torch.Tensor) -> None:
    S = draws.shape[0]
    C = draws.T @ draws / S
    prods = draws.unsqueeze(2) * draws.unsqueeze(1)  # (S, P, P)
    tol = 4 * math.sqrt(float(prods.var(dim=0).sum()) / S)
    err = float(torch.linalg.norm(C - target))
    assert err <= tol, f"‖Ĉ − Σ‖_F = {err:.4g} exceeds the {S}-draw bound {tol:.4g}"
    err_wrong = float(torch.linalg.norm(C - wrong))
    assert err_wrong > tol, f"a wrong target was not rejected ({err_wrong:.4g} <= {tol:.4g})"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------
# Lanczos matrix function
# ----------------------------------------------------------------------------------------


def random_symmetric(P: int, seed: int, *, rank: int | None = None, shift: float = 0.0):
    g = gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.randn(P, generator=g, dtype=torch.float64) * 2 + shift
    if rank is not None:
        lam[rank:] = 0
    return Q @ torch.diag(lam) @ Q.T


def test_lanczos_function_exact_with_full_krylov_space():
    A = random_symmetric(25, 0)  # indefinite
    Z = torch.randn(25, 6, generator=gen(1), dtype=torch.float64)
    got = lanczos_matrix_function(lambda V: A @ V, Z, 25)
    want = dense_fn(A, sqrt_psd) @ Z
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_lanczos_function_exact_for_low_degree_polynomials():
    A = random_symmetric(30, 2)
    Z = torch.randn(30, 3, generator=gen(3), dtype=torch.float64)
    got = lanczos_matrix_function(lambda V: A @ V, Z, 4, fn=lambda t: t**3 - 2 * t)
    torch.testing.assert_close(got, A @ A @ A @ Z - 2 * A @ Z, rtol=1e-9, atol=1e-9)


def test_lanczos_function_handles_invariant_krylov_space():
    A = random_symmetric(30, 4, rank=3)  # Krylov space of z has dimension <= 4
    Z = torch.randn(30, 4, generator=gen(5), dtype=torch.float64)
    got = lanczos_matrix_function(lambda V: A @ V, Z, 12)
    assert torch.isfinite(got).all()
    # √ is not Lipschitz at 0: rounding-level eigenvalues (~1e-16) of the null space become
    # ~1e-8 after the square root, in the dense reference as in the Lanczos answer
    torch.testing.assert_close(got, dense_fn(A, sqrt_psd) @ Z, rtol=1e-6, atol=1e-6)


def test_lanczos_function_converges_on_well_conditioned_matrix():
    A = random_symmetric(60, 6, shift=8.0)  # eigenvalues around 8 ± 2: positive definite
    assert torch.linalg.eigvalsh(A).min() > 0
    Z = torch.randn(60, 2, generator=gen(7), dtype=torch.float64)
    want = dense_fn(A, torch.sqrt) @ Z
    errs = [
        float((lanczos_matrix_function(lambda V: A @ V, Z, k) - want).norm() / want.norm())
        for k in (2, 5, 10)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-6


def test_lanczos_function_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        lanczos_matrix_function(lambda V: V, torch.ones(3, 1), 0)
    with pytest.raises(ValueError, match="Z"):
        lanczos_matrix_function(lambda V: V, torch.ones(3), 2)


# ----------------------------------------------------------------------------------------
# curvature operators against dense references
# ----------------------------------------------------------------------------------------


def test_hessian_and_ggn_operators_of_the_samplers_match_dense_references():
    """The samplers' operators keep their graph between products (``keep_graph=True``)."""
    model, x, y = tiny_problem(1)
    P = nparams(model)
    V = torch.randn(P, 5, generator=gen(2), dtype=torch.float64)
    H = dense_hessian(model, F.cross_entropy, x, y)
    G = dense_ggn(model, F.cross_entropy, x, y)
    hess = HessianOperator(model, F.cross_entropy, x, y, keep_graph=True)
    ggn = GGNOperator(model, F.cross_entropy, x, y, keep_graph=True)
    for _ in range(2):  # the second product reuses the graph of the first
        torch.testing.assert_close(hess(V), H @ V)
        torch.testing.assert_close(ggn(V), G @ V)
    # for softmax cross-entropy the GGN is the true Fisher (an independent enumeration)
    torch.testing.assert_close(G, true_fisher_by_enumeration(model, x))
    assert torch.linalg.eigvalsh(H).min() < -1e-6  # indefinite: the clipping matters


# ----------------------------------------------------------------------------------------
# covariance of every kind
# ----------------------------------------------------------------------------------------

DRAWS = 6000


def test_none_is_zero():
    model, x, y = tiny_problem()
    xi = sample_noise("none", model, F.cross_entropy, x, y, generator=gen(0))
    assert xi.shape == (nparams(model),) and bool((xi == 0).all())


@pytest.mark.parametrize("probes", [None, 4])
def test_isotropic_covariance_matches_trace_of_D(probes):
    model, x, y = tiny_problem(0)
    D = centred_cov(loop_grads(model, x, y))
    P = D.shape[0]
    target = torch.eye(P, dtype=torch.float64) * torch.trace(D) / P
    draws = sample_noise("isotropic", model, F.cross_entropy, x, y, generator=gen(1),
                         num_draws=DRAWS, moment_probes=probes)
    check_covariance(draws, target, wrong=torch.diag(torch.diagonal(D)))


@pytest.mark.parametrize("probes", [None, 4])
def test_diag_fisher_covariance_is_diagonal_of_D(probes):
    model, x, y = tiny_problem(0)
    D = centred_cov(loop_grads(model, x, y))
    P = D.shape[0]
    draws = sample_noise("diag_fisher", model, F.cross_entropy, x, y, generator=gen(2),
                         num_draws=DRAWS, moment_probes=probes)
    iso = torch.eye(P, dtype=torch.float64) * torch.trace(D) / P
    check_covariance(draws, torch.diag(torch.diagonal(D)), wrong=iso)


@pytest.mark.parametrize("kind", ["isotropic", "diag_fisher"])
def test_moment_probe_draw_rebuilt_from_per_example_gradients(kind):
    """A probe-mode draw: r probes ζ_i = Σ_j (z_ij − z̄_i) g_j/√M give d̂ = mean_i ζ_i²,
    then ξ = z ⊙ sqrt(d̂) (or z·sqrt(Σd̂/P)); rebuild it from the same random stream."""
    model, x, y = tiny_problem(1)
    G = loop_grads(model, x, y)
    n, P, r = x.shape[0], G.shape[1], 3
    xi = sample_noise(kind, model, F.cross_entropy, x, y, generator=gen(12), moment_probes=r)
    g = gen(12)
    probes = torch.randn((r, n), generator=g, dtype=torch.float64)
    z = torch.randn((1, P), generator=g, dtype=torch.float64)[0]
    zeta = (probes - probes.mean(1, keepdim=True)) @ G / math.sqrt(n)
    d_hat = zeta.pow(2).mean(0)
    want = z * (d_hat.sum() / P).sqrt() if kind == "isotropic" else z * d_hat.sqrt()
    torch.testing.assert_close(xi, want)


def test_subsampled_covariance_is_D_of_the_batch():
    model, x, y = tiny_problem(0)
    D = centred_cov(loop_grads(model, x, y))
    draws = sample_noise("subsampled", model, F.cross_entropy, x, y, generator=gen(3),
                         num_draws=DRAWS)
    check_covariance(draws, D, wrong=torch.diag(torch.diagonal(D)))


def test_subsampled_single_draw_path_agrees_with_per_example_formula():
    """One draw uses the weighted backward ∇Σ(z_j − z̄)ℓ_j/√M; rebuild it from the same z."""
    model, x, y = tiny_problem(2)
    G = loop_grads(model, x, y)
    xi = sample_noise("subsampled", model, F.cross_entropy, x, y, generator=gen(11))
    z = torch.randn((1, x.shape[0]), generator=gen(11), dtype=torch.float64)[0]
    want = (z @ (G - G.mean(0))) / math.sqrt(x.shape[0])
    torch.testing.assert_close(xi, want)


def test_subsampled_over_random_subsets_has_finite_population_covariance():
    """Fresh M-subsets each draw: E[D_M] = (M−1)/M · n/(n−1) · D_n (sampling without
    replacement), a closed form that differs from D_n."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 2)).double()  # softmax regression, P = 8
    g = gen(4)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    D = centred_cov(loop_grads(model, x, y))
    n, M = 10, 2
    target = (M - 1) / M * n / (n - 1) * D
    g = gen(5)
    draws = torch.stack(
        [sample_noise("subsampled", model, F.cross_entropy, x, y, num_samples=M, generator=g)
         for _ in range(1500)]
    )
    check_covariance(draws, target, wrong=D)


def test_true_fisher_covariance_is_the_true_fisher():
    model, x, y = tiny_problem(0)
    Fi = true_fisher_by_enumeration(model, x)
    D = centred_cov(loop_grads(model, x, y))
    draws = sample_noise("true_fisher", model, None, x, y, generator=gen(6), num_draws=DRAWS)
    check_covariance(draws, Fi, wrong=D)


def test_true_fisher_single_draw_has_the_right_covariance_too():
    model, x, y = tiny_problem(0)
    Fi = true_fisher_by_enumeration(model, x)
    g = gen(7)
    draws = torch.stack(
        [sample_noise("true_fisher", model, None, x, y, generator=g) for _ in range(800)]
    )
    check_covariance(draws, Fi, wrong=2 * Fi)


def test_hessian_noise_covariance_is_positive_part_of_hessian():
    model, x, y = tiny_problem(0, hidden=2)
    P = nparams(model)
    H = dense_hessian(model, F.cross_entropy, x, y)
    Hp = psd_part(H)
    draws = sample_noise("hessian", model, F.cross_entropy, x, y, generator=gen(8),
                         num_draws=2000, lanczos_steps=P)
    check_covariance(draws, Hp, wrong=dense_ggn(model, F.cross_entropy, x, y))
    # with k = P each draw is exactly H₊^{1/2} z: the draws span only H₊'s range
    lam, U = torch.linalg.eigh(H)
    null = U[:, lam <= 1e-10]
    # (√ turns rounding-level eigenvalues ~1e-17 into ~1e-8, hence the loose bound)
    assert float((draws @ null).abs().max()) < 1e-6 * float(draws.abs().max())


def test_ggn_noise_covariance_is_the_ggn():
    model, x, y = tiny_problem(0, hidden=2)
    P = nparams(model)
    G = dense_ggn(model, F.cross_entropy, x, y)
    draws = sample_noise("ggn", model, F.cross_entropy, x, y, generator=gen(9),
                         num_draws=2000, lanczos_steps=P)
    check_covariance(draws, G, wrong=psd_part(dense_hessian(model, F.cross_entropy, x, y)))


def test_kinds_use_only_the_chosen_subset():
    model, x, y = tiny_problem(0, n=12)
    for kind in ("isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn"):
        a = sample_noise(kind, model, F.cross_entropy, x, y, num_samples=5, generator=gen(3))
        # corrupting examples outside the chosen subset must not change the draw
        idx = torch.randperm(12, generator=gen(3))[:5]
        mask = torch.ones(12, dtype=torch.bool)
        mask[idx] = False
        x2 = x.clone()
        x2[mask] = 100.0
        b = sample_noise(kind, model, F.cross_entropy, x2, y, num_samples=5, generator=gen(3))
        torch.testing.assert_close(a, b, msg=f"kind {kind}")


# ----------------------------------------------------------------------------------------
# injection scale
# ----------------------------------------------------------------------------------------


def test_matched_injection_scale_reproduces_small_batch_covariance():
    from sgdnoise.covariance import minibatch_covariance

    model, x, y = tiny_problem(0, n=40)
    G = loop_grads(model, x, y)
    D = centred_cov(G)
    b, B = 4, 20
    for replacement in (True, False):
        T = matched_injection_scale(b, B, num_examples=None if replacement else 40)
        small = minibatch_covariance(G, b, replacement=replacement)
        large = minibatch_covariance(G, B, replacement=replacement)
        torch.testing.assert_close(large + T * D, small)
    assert matched_injection_scale(32, 512) == pytest.approx(1 / 32 - 1 / 512)


def test_matched_injection_scale_rejects_bad_arguments():
    with pytest.raises(ValueError, match="small_batch"):
        matched_injection_scale(64, 32)
    with pytest.raises(ValueError, match="large_batch"):
        matched_injection_scale(4, 0)
    with pytest.raises(ValueError, match="num_examples"):
        matched_injection_scale(4, 32, num_examples=16)


# ----------------------------------------------------------------------------------------
# the optimizer
# ----------------------------------------------------------------------------------------


def _grad_step_setup(seed=0):
    model, x, y = tiny_problem(seed)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return model, x, y


def test_none_equals_torch_sgd_with_momentum_and_weight_decay():
    model_a, x, y = tiny_problem(0)
    model_b, _, _ = tiny_problem(0)
    opt_a = NoisySGD(model_a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(4):
        for m, o in ((model_a, opt_a), (model_b, opt_b)):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("kind", ["isotropic", "subsampled", "true_fisher", "ggn"])
def test_noisy_step_is_gradient_plus_scaled_noise(kind):
    model, x, y = _grad_step_setup(1)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    xi = sample_noise(kind, model, F.cross_entropy, x, y, num_samples=6, generator=gen(5),
                      lanczos_steps=4)
    opt = NoisySGD(model.parameters(), lr=0.05, kind=kind, injection_scale=0.3, model=model,
                   loss_fn=F.cross_entropy, num_samples=6, lanczos_steps=4, seed=5)
    opt.observe_batch(x, y)
    opt.step()
    theta1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(theta1, theta0 - 0.05 * (g + math.sqrt(0.3) * xi))
    assert opt.stats.last_noise_norm == pytest.approx(math.sqrt(0.3) * float(xi.norm()))


def test_step_without_batch_raises_and_batch_is_consumed():
    model, x, y = _grad_step_setup()
    opt = NoisySGD(model.parameters(), lr=0.1, kind="subsampled", model=model,
                   loss_fn=F.cross_entropy)
    with pytest.raises(RuntimeError, match="observe_batch"):
        opt.step()
    opt.observe_batch(x, y)
    opt.step()
    with pytest.raises(RuntimeError, match="observe_batch"):
        opt.step()


def test_zero_injection_scale_needs_no_batch_and_is_plain_sgd():
    model, x, y = _grad_step_setup()
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    opt = NoisySGD(model.parameters(), lr=0.1, kind="hessian", injection_scale=0.0,
                   model=model,
                   loss_fn=F.cross_entropy)
    opt.step()
    theta1 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(theta1, theta0 - 0.1 * g)


def test_noise_displacement_covariance_over_many_steps():
    """With zero gradient, lr η and injection scale s, one step moves θ by −η√s ξ: the
    displacement covariance is η² s D (kind subsampled, full batch)."""
    model, x, y = tiny_problem(3)
    D = centred_cov(loop_grads(model, x, y))
    theta0 = [p.detach().clone() for p in model.parameters()]
    opt = NoisySGD(model.parameters(), lr=0.5, kind="subsampled", injection_scale=0.2,
                   model=model, loss_fn=F.cross_entropy, num_samples=None, seed=1)
    moves = []
    for _ in range(600):
        for p, p0 in zip(model.parameters(), theta0, strict=True):
            p.data.copy_(p0)
            p.grad = torch.zeros_like(p)
        opt.observe_batch(x, y)
        opt.step()
        moves.append(torch.cat([(p.detach() - p0).reshape(-1)
                                for p, p0 in zip(model.parameters(), theta0, strict=True)]))
    check_covariance(torch.stack(moves), 0.25 * 0.2 * D, wrong=0.25 * 0.6 * D)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kind="gaussian"), "kind"),
        (dict(kind="isotropic", injection_scale=-1.0), "injection_scale"),
        (dict(kind="isotropic", num_samples=1), "num_samples"),
        (dict(kind="isotropic", lr=0.0), "lr"),
        (dict(kind="isotropic", lr=-0.1), "lr"),
        (dict(kind="isotropic", momentum=1.0), "momentum"),
        (dict(kind="hessian", lanczos_steps=0), "lanczos_steps"),
        (dict(kind="diag_fisher", moment_probes=0), "moment_probes"),
        (dict(kind="subsampled", loss_fn=None), "loss_fn"),
        (dict(kind="subsampled", model=None), "model"),
    ],
)
def test_optimizer_rejects_bad_arguments(kwargs, name):
    model, _, _ = tiny_problem()
    args = dict(lr=0.1, model=model, loss_fn=F.cross_entropy)
    args.update(kwargs)
    lr = args.pop("lr")
    with pytest.raises(ValueError, match=name):
        NoisySGD(model.parameters(), lr, **args)


def test_optimizer_requires_all_model_parameters():
    model, _, _ = tiny_problem()
    with pytest.raises(ValueError, match="params"):
        NoisySGD(list(model.parameters())[:2], 0.1, kind="isotropic", model=model,
                 loss_fn=F.cross_entropy)


def test_sample_noise_rejects_bad_arguments():
    model, x, y = tiny_problem()
    with pytest.raises(ValueError, match="kind"):
        sample_noise("full", model, F.cross_entropy, x, y)
    with pytest.raises(ValueError, match="num_samples"):
        sample_noise("subsampled", model, F.cross_entropy, x, y, num_samples=1)
    with pytest.raises(ValueError, match="num_draws"):
        sample_noise("subsampled", model, F.cross_entropy, x, y, num_draws=0)
    with pytest.raises(ValueError, match="moment_probes"):
        sample_noise("isotropic", model, F.cross_entropy, x, y, moment_probes=0)
    with pytest.raises(ValueError, match="targets"):
        sample_noise("subsampled", model, F.cross_entropy, x, y[:3])


def test_train_mode_batchnorm_is_rejected_with_advice():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="group"):
        sample_noise("subsampled", model, F.cross_entropy, x, y)
    model.eval()  # running statistics: examples are independent again
    assert sample_noise("subsampled", model, F.cross_entropy, x, y, generator=gen(0)).shape == (
        nparams(model),
    )


def test_all_kinds_listed():
    assert set(KINDS) == {"none", "isotropic", "diag_fisher", "subsampled", "true_fisher",
                          "hessian", "ggn"}


# ----------------------------------------------------------------------------------------
# engine integration and the chapter's experiment helpers
# ----------------------------------------------------------------------------------------


def _tiny_images(n: int, seed: int = 0):
    g = gen(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, 4, 4, generator=g) + y.view(-1, 1, 1, 1).float()
    return x, y


def test_engine_calls_observe_batch_and_none_matches_plain_sgd():
    from sgdnoise.train import TrainConfig, train

    x, y = _tiny_images(32)
    data = dict(train_x=x, train_y=y, test_x=x[:8], test_y=y[:8])
    cfg = TrainConfig(model="mlp", width=8, norm="none", batch_size=16, epochs=2, lr=0.1,
                      augment=False, channels_last=False, amp=False, seed=3)
    plain = train(cfg, data, progress=False)
    made = {}

    def factory(model, kind="none"):
        made["opt"] = NoisySGD(model.parameters(), 0.1, kind=kind, model=model,
                               loss_fn=F.cross_entropy, num_samples=4, injection_scale=0.01)
        return made["opt"]

    same = train(cfg, data, progress=False, optimizer_factory=factory)
    assert [h["train_loss"] for h in same.history] == [h["train_loss"] for h in plain.history]
    noisy = train(cfg, data, progress=False,
                  optimizer_factory=lambda m: factory(m, "subsampled"))
    assert noisy.status == "finished" and made["opt"].stats.steps == 4
    assert made["opt"].stats.last_noise_norm > 0
    assert noisy.history[-1]["train_loss"] != plain.history[-1]["train_loss"]


def test_matched_injection_scale_is_the_difference_of_lemma_1_factors():
    from sgdnoise.covariance import finite_population_factor

    assert matched_injection_scale(4, 16, num_examples=40) == pytest.approx(
        finite_population_factor(40, 4, replacement=False)
        - finite_population_factor(40, 16, replacement=False))
    assert matched_injection_scale(4, 16) == pytest.approx(1 / 4 - 1 / 16)
    assert matched_injection_scale(5, 5, num_examples=5) == 0.0


def test_hessian_noise_factor_is_exact_with_a_full_krylov_space():
    """k = P: R Rᵀ = V T₊ Vᵀ = H₊ (V spans R^P); k < P: R Rᵀ is H₊ compressed to the Krylov
    space, PSD and no larger than H₊ along it."""
    model, x, y = tiny_problem(0, hidden=2)
    P = nparams(model)
    Hp = psd_part(dense_hessian(model, F.cross_entropy, x, y))
    R = noise.hessian_noise_factor(model, F.cross_entropy, x, y, lanczos_steps=P,
                                   generator=gen(3))
    torch.testing.assert_close(R @ R.T, Hp, rtol=1e-8, atol=1e-10)
    R3 = noise.hessian_noise_factor(model, F.cross_entropy, x, y, lanczos_steps=3,
                                    generator=gen(3))
    assert R3.shape == (P, 3)
    assert float((R3 @ R3.T - Hp).norm()) < float(Hp.norm())


def test_basis_refresh_reuses_the_factor_between_refreshes(monkeypatch):
    model, x, y = tiny_problem(0, hidden=2)
    calls = []
    real = noise.hessian_noise_factor

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(noise.optimizer, "hessian_noise_factor", counting)
    opt = NoisySGD(model.parameters(), lr=1e-3, kind="hessian", injection_scale=0.1,
                   model=model, loss_fn=F.cross_entropy, basis_refresh=3, lanczos_steps=4)
    norms = []
    for _ in range(7):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.observe_batch(x, y)
        opt.step()
        norms.append(opt.stats.last_noise_norm)
    assert len(calls) == 3  # steps 0, 3 and 6
    assert len(set(norms)) == 7 and min(norms) > 0  # a fresh w every step
    with pytest.raises(ValueError, match="basis_refresh"):
        NoisySGD(model.parameters(), lr=0.1, kind="hessian", model=model,
                 loss_fn=F.cross_entropy, basis_refresh=0)


# ------------------------------------------------------------- no read-back from the device

#: the Tensor methods that copy a value to the host (a device sync on a GPU)
READ_BACKS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist")


class ReadBacks:
    """Counts (or, with ``forbid``, refuses) every host read-back of a tensor value while it
    is active, by wrapping the :data:`READ_BACKS` methods of ``torch.Tensor``."""

    def __init__(self, monkeypatch, *, forbid: bool = False) -> None:
        self.count = 0
        self.forbid = forbid
        for name in READ_BACKS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))

    def _wrap(self, name, real):
        def read_back(tensor, *args, **kwargs):
            if self.forbid:
                raise AssertionError(f"host read-back Tensor.{name} during the step")
            self.count += 1
            return real(tensor, *args, **kwargs)

        return read_back


def _deep_problem(depth: int):
    """A float64 tanh MLP with 2 (depth + 2) parameter tensors and a batch of 12."""
    gen = torch.Generator().manual_seed(depth)
    torch.manual_seed(depth)
    layers = [nn.Linear(3, 4), nn.Tanh()]
    for _ in range(depth):
        layers += [nn.Linear(4, 4), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(4, 3)).double()
    return model, torch.randn(12, 3, generator=gen, dtype=torch.float64), torch.randint(
        0, 3, (12,), generator=gen)


def _prepared_step(kind: str, model, x, y, **kwargs) -> NoisySGD:
    opt = NoisySGD([{"params": list(model.parameters())[:2], "injection_scale": 0.5},
                    {"params": list(model.parameters())[2:]}], lr=0.1, kind=kind,
                   model=model, loss_fn=F.cross_entropy, num_samples=6, momentum=0.9,
                   weight_decay=1e-3, **kwargs)
    for step in range(2):  # one step taken: the next one also updates momentum buffers
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.observe_batch(x, y)
        if step == 0:
            opt.step()
    return opt


def test_read_back_guard_sees_every_kind_of_read_back(monkeypatch):
    """The guard the tests below rely on refuses each read-back form."""
    ReadBacks(monkeypatch, forbid=True)
    t = torch.ones(())
    for read in (lambda: t.item(), lambda: float(t), lambda: int(t), lambda: bool(t),
                 lambda: [0, 1][t.long()], lambda: t.tolist()):
        with pytest.raises(AssertionError, match="host read-back"):
            read()


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "hessian"])
def test_noisy_step_reads_nothing_back_from_the_device(kind, monkeypatch):
    """Drawing, injecting (two parameter groups, two scales) and SGD's momentum and weight
    decay happen on the device: no ``.item()`` / ``float()`` / ``bool()`` of a tensor in the
    step (on a GPU each would be a sync)."""
    model, x, y = tiny_problem(0)
    opt = _prepared_step(kind, model, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    ReadBacks(monkeypatch, forbid=True)
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_hessian_step_reads_back_per_lanczos_step_not_per_parameter_tensor(monkeypatch):
    """The "hessian" kind reads a few scalars per Lanczos step (its breakdown and
    re-orthogonalisation tests), never one per parameter tensor: the count is the same for
    6 and 14 parameter tensors, grows with k and stays within 5 per step."""
    counts = {}
    for depth in (1, 5):
        for k in (3, 6):
            model, x, y = _deep_problem(depth)
            opt = _prepared_step("hessian", model, x, y, lanczos_steps=k)
            with monkeypatch.context() as patch:
                guard = ReadBacks(patch)
                opt.step()
            counts[depth, k] = guard.count
    assert counts[1, 3] == counts[5, 3] and counts[1, 6] == counts[5, 6]
    assert counts[1, 3] < counts[1, 6] <= 5 * 6
