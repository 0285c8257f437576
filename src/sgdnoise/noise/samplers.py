"""The noise samplers, one function per kind in one registry (:data:`SAMPLERS`), and
:func:`sample_noise`, which draws ξ ~ N(0, Σ_kind) for any kind (the covariances are
derived in :mod:`sgdnoise.noise`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdnoise.curvature import GGNOperator, HessianOperator
from sgdnoise.grads import (
    batched_vjp,
    check_independent_examples,
    flatten_like,
    per_example_grads,
    per_example_losses,
    trainable_parameters,
)
from sgdnoise.spectral import lanczos_function_factor, lanczos_matrix_function, standard_normal
from sgdnoise.validate import check_choice, check_positive_int

__all__ = [
    "DEFAULT_LANCZOS_STEPS",
    "KINDS",
    "NOISE_KINDS",
    "SAMPLERS",
    "Draw",
    "hessian_noise_factor",
    "sample_noise",
]

#: k, the Lanczos steps (Hessian-vector products) per "hessian" draw unless told otherwise:
#: the study's choice (issue 11). k = 5 is close to k = 8 in accuracy (per-draw error 0.34
#: against 0.29, covariance error 0.45 against 0.41; see :mod:`sgdnoise.noise`) at 5/8 of
#: its products; ``benchmarks/bench_noise.py`` prints the cost of every k.
DEFAULT_LANCZOS_STEPS = 5

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Draw:
    """What a sampler draws from: the model and its trainable parameters ``params`` (P
    entries in all), the criterion, the M chosen examples ``x, y``, the number of draws S,
    the generator (every random number comes from it; its device is where they are drawn)
    and the kind's settings."""

    model: nn.Module
    params: list[nn.Parameter]
    loss_fn: LossFn | None
    x: Tensor
    y: Tensor
    num_draws: int
    generator: torch.Generator | None
    lanczos_steps: int
    chunk_size: int | None
    moment_probes: int | None

    @property
    def P(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def M(self) -> int:
        return int(self.x.shape[0])

    def randn(self, *shape: int) -> Tensor:
        """Standard normal draws of ``shape`` in the parameters' dtype and device."""
        like = self.params[0]
        return standard_normal(shape, self.generator, dtype=like.dtype, device=like.device)


#: kind -> sampler ``Draw -> ξ: (S, P)``, in the order of :data:`KINDS`
SAMPLERS: dict[str, Callable[[Draw], Tensor]] = {}


def _sampler(kind: str) -> Callable[[Callable[[Draw], Tensor]], Callable[[Draw], Tensor]]:
    def register(fn: Callable[[Draw], Tensor]) -> Callable[[Draw], Tensor]:
        SAMPLERS[kind] = fn
        return fn

    return register


@_sampler("none")
def _none(d: Draw) -> Tensor:
    """ξ = 0."""
    return d.params[0].new_zeros((d.num_draws, d.P))


def _variance(d: Draw) -> Tensor:
    """d = diag(D_M): ``(1, P)`` exactly from per-example gradients (``moment_probes``
    None), else ``(S, P)``, one unbiased estimate per draw, ``d̂ = (1/r) Σ_i ζ_i ⊙ ζ_i``
    from r sub-sampled probes ζ_i ~ N(0, D_M) (one batched backward pass)."""
    if d.moment_probes is None:
        return _moments(d.model, d.loss_fn, d.x, d.y, d.chunk_size)[1].unsqueeze(0)
    probes = d.randn(d.num_draws * d.moment_probes, d.M)
    zeta = _subsampled_draws(d, probes)
    return zeta.pow(2).view(d.num_draws, d.moment_probes, d.P).mean(dim=1)


@_sampler("isotropic")
def _isotropic(d: Draw) -> Tensor:
    """ξ = z · sqrt(Σ_a d_a / P): covariance tr(D_M)/P · I."""
    var = _variance(d)
    return d.randn(d.num_draws, d.P) * var.sum(dim=1, keepdim=True).div(d.P).sqrt()


@_sampler("diag_fisher")
def _diag_fisher(d: Draw) -> Tensor:
    """ξ = z ⊙ sqrt(d): covariance diag(D_M)."""
    var = _variance(d)
    return d.randn(d.num_draws, d.P) * var.sqrt()


@_sampler("subsampled")
def _subsampled(d: Draw) -> Tensor:
    """ξ = Σ_j z_j (g_j − ḡ_M)/√M = ∇ Σ_j (z_j − z̄) ℓ_j / √M: covariance D_M."""
    return _subsampled_draws(d, d.randn(d.num_draws, d.M))


@_sampler("true_fisher")
def _true_fisher(d: Draw) -> Tensor:
    """ξ = Σ_j z_j g̃_j /√M with g̃_j = −∇ log p(ỹ_j | x_j) at labels drawn from the model:
    covariance F_M, the true Fisher on the M inputs."""
    s, m = d.num_draws, d.M
    z = d.randn(s, m)
    with torch.enable_grad():
        logits = d.model(d.x)
        if logits.ndim != 2:
            raise ValueError(
                f"true_fisher needs logits of shape (M, classes), got {tuple(logits.shape)}")
        probs = torch.softmax(logits.detach().to(torch.float64), dim=1)
        where = d.generator.device if d.generator is not None else probs.device
        labels = torch.multinomial(probs.to(where).repeat(s, 1), 1,
                                   generator=d.generator).view(s, m).to(logits.device)
        nll = -torch.log_softmax(logits, dim=1)  # (M, C)
        weights = F.one_hot(labels, logits.shape[1]).to(z.dtype) * (
            z / math.sqrt(m)).unsqueeze(2)  # (S, M, C)
        return _weighted_gradients(nll, d.params, weights.to(nll.dtype))


@_sampler("hessian")
def _hessian(d: Draw) -> Tensor:
    """ξ ≈ H₊^{1/2} z by k Lanczos steps started at z (H the Hessian on the M examples,
    one graph built per draw, each step a double backward over it)."""
    op = HessianOperator(d.model, d.loss_fn, d.x, d.y, keep_graph=True)
    Z = d.randn(d.P, d.num_draws)
    return lanczos_matrix_function(lambda V: op.matmat(V, block_size=None), Z,
                                   d.lanczos_steps).T


@_sampler("ggn")
def _ggn(d: Draw) -> Tensor:
    """ξ = (1/√M) Σ_j J_jᵀ S_j w_j exactly (G = BBᵀ with B = [J_jᵀ S_j]/√M): one forward and
    one batched backward pass, no Lanczos."""
    return GGNOperator(d.model, d.loss_fn, d.x, d.y).sample(d.num_draws,
                                                           generator=d.generator)


#: every kind, "none" first; :data:`NOISE_KINDS`: the kinds that inject noise
KINDS = tuple(SAMPLERS)
NOISE_KINDS = KINDS[1:]


def _weighted_gradients(losses: Tensor, params: list[nn.Parameter], weights: Tensor) -> Tensor:
    """``(S, P)``: row s is ``∇_θ Σ weights[s] ⊙ losses`` (one backward for S = 1, a
    batched one otherwise)."""
    s = weights.shape[0]
    if s == 1:
        g = torch.autograd.grad(losses, params, grad_outputs=weights[0], allow_unused=True)
        return flatten_like(g, params).unsqueeze(0)
    return flatten_like(batched_vjp(losses, params, weights), params, (s,))


def _subsampled_draws(d: Draw, z: Tensor) -> Tensor:
    """ζ_s = Σ_j (z_sj − z̄_s) g_j / √M for each row of ``z: (S, M)``: (S, P), from one
    forward pass and one (batched) backward pass of the weighted loss; Cov ζ_s = D_M."""
    with torch.enable_grad():
        losses = per_example_losses(d.loss_fn, d.model(d.x), d.y)
        weights = ((z - z.mean(dim=1, keepdim=True)) / math.sqrt(d.M)).to(losses.dtype)
        return _weighted_gradients(losses, d.params, weights)


def _moments(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """(mean ḡ_M, per-coordinate variance diag D_M) of the per-example gradients, (P,) each,
    accumulated chunk by chunk so memory stays O(chunk · P)."""
    m = inputs.shape[0]
    chunk = m if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    total = total_sq = None
    for start in range(0, m, chunk):
        G = per_example_grads(model, loss_fn, inputs[start : start + chunk],
                              targets[start : start + chunk])
        part, part_sq = G.sum(0), (G * G).sum(0)
        total = part if total is None else total + part
        total_sq = part_sq if total_sq is None else total_sq + part_sq
    mean = total / m
    return mean, (total_sq / m - mean * mean).clamp_min(0)


def check_batch(inputs: Tensor, targets: Tensor) -> int:
    """The batch size of ``inputs: (n, ...)`` with ``targets: (n, ...)``; ValueError when
    they are not tensors with a common first dimension."""
    if not isinstance(inputs, Tensor) or inputs.ndim < 1:
        raise ValueError(f"inputs must be a tensor with a batch dimension, got {type(inputs)}")
    if not isinstance(targets, Tensor) or targets.shape[:1] != inputs.shape[:1]:
        raise ValueError(
            f"targets must be a tensor with as many rows as inputs ({inputs.shape[0]}), got "
            f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets)}")
    return int(inputs.shape[0])


def choose_examples(inputs: Tensor, targets: Tensor, num_samples: int | None,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """M examples of the batch, drawn uniformly without replacement (all if M >= batch)."""
    n = check_batch(inputs, targets)
    m = n if num_samples is None else check_positive_int("num_samples", num_samples)
    if num_samples is not None and m < 2:
        raise ValueError(f"num_samples must be >= 2 (a covariance needs two), got {m}")
    if n < 2:
        raise ValueError(f"the batch must hold at least 2 examples, got {n}")
    if m >= n:
        return inputs, targets
    device = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randperm(n, generator=generator, device=device)[:m].to(inputs.device)
    return inputs[idx], targets[idx]


def sample_noise(
    kind: str,
    model: nn.Module,
    loss_fn: LossFn | None,
    inputs: Tensor,
    targets: Tensor,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    num_draws: int | None = None,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    chunk_size: int | None = None,
    moment_probes: int | None = 4,
) -> Tensor:
    """Draw ξ ~ N(0, Σ_kind) at the model's current parameters (the kinds are derived in
    :mod:`sgdnoise.noise`; each is one function of :data:`SAMPLERS`).

    Args:

        - kind: one of ``KINDS``.
        - model: the network; θ ∈ R^P are its trainable parameters in ``parameters()`` order.
        - loss_fn: batch criterion ``loss_fn(outputs, targets)`` (mean or sum reduction); each
          example's loss ℓ_j is the criterion on that example alone. Unused by "none" and
          "true_fisher" (which uses the categorical likelihood of the logits).
        - inputs, targets: the batch, (n, ...) and (n, ...).
        - num_samples: M, the number of batch examples that define Σ_kind (a uniform subset
          without replacement, drawn from ``generator``; ``None`` or M >= n: all n). M >= 2.
        - generator: source of every random number (Gaussians, subset, sampled labels); its
          device is used to draw, then values move to the parameters' device.
        - num_draws: S independent draws sharing one subset (result (S, P)); ``None``: one
          draw, result (P,).
        - lanczos_steps: k, Lanczos steps for "hessian" (k Hessian-vector products per draw;
          default :data:`DEFAULT_LANCZOS_STEPS`; ``benchmarks/bench_noise.py`` prints the
          accuracy / cost trade-off).
        - chunk_size: examples per vectorised chunk for the per-example gradients of
          "isotropic" / "diag_fisher" when ``moment_probes`` is None.
        - moment_probes: r, sub-sampled probe draws per noise draw that estimate diag(D_M)
          for "isotropic" / "diag_fisher" (unbiased); ``None``: exact per-example gradients.

    Returns:

        - ξ: (P,) or (S, P) in the parameters' dtype and device, detached.
    """
    check_choice("kind", kind, KINDS)
    params = trainable_parameters(model)
    s = 1 if num_draws is None else check_positive_int("num_draws", num_draws)
    lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
    if moment_probes is not None:
        moment_probes = check_positive_int("moment_probes", moment_probes)
    x, y = inputs, targets
    if kind != "none":
        if kind != "true_fisher" and not callable(loss_fn):
            raise ValueError(f"loss_fn must be a callable criterion for kind {kind!r}, got "
                             f"{loss_fn!r}")
        check_independent_examples(model)
        x, y = choose_examples(inputs, targets, num_samples, generator)
    draw = Draw(model, params, loss_fn, x, y, s, generator, lanczos_steps, chunk_size,
                moment_probes)
    out = SAMPLERS[kind](draw).detach()
    return out[0] if num_draws is None else out


def hessian_noise_factor(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Tensor,
    *,
    num_samples: int | None = None,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """R: (P, m), m <= k, with R Rᵀ = V T₊ Vᵀ: the Hessian of the mean loss on M examples
    of the batch (as in :func:`sample_noise`) compressed onto the Krylov space of k Lanczos
    steps from a Gaussian start (:func:`sgdnoise.spectral.lanczos_function_factor`).

    ξ = R w with w ~ N(0, I_m) then has covariance V T₊ Vᵀ, the Rayleigh-Ritz approximation
    of H₊ on a k-dimensional space (its top eigen-directions are found first): a basis that
    :class:`sgdnoise.noise.NoisySGD` reuses for ``basis_refresh`` steps, so a step costs
    O(Pm) instead of k products. It is not an approximation of H₊ as a covariance: R Rᵀ has
    rank <= k, and ``‖R Rᵀ − H₊‖_F / ‖H₊‖_F`` measured 0.999 / 0.991 / 0.982 / 0.961 for
    k = 2 / 5 / 8 / 16 (exact, small MLP of ``benchmarks/bench_noise.py``), against 0.45 for
    the covariance of fresh k = 5 draws f(H)z."""
    k = check_positive_int("lanczos_steps", lanczos_steps)
    params = trainable_parameters(model)
    check_independent_examples(model)
    x, y = choose_examples(inputs, targets, num_samples, generator)
    op = HessianOperator(model, loss_fn, x, y, keep_graph=True)
    like = params[0].detach()
    z = standard_normal((sum(p.numel() for p in params), 1), generator, dtype=like.dtype,
                        device=like.device)
    R, _ = lanczos_function_factor(lambda V: op.matmat(V, block_size=None), z, k)
    return R.detach()
