"""Noise injection decoupled from the learning rate and the batch size (chapter 9).

A large-batch step sees the gradient noise ``Cov(g_B) = D/B`` of its batch of size B, where
``D(θ) = (1/N) Σ_i g_i g_iᵀ − ḡḡᵀ`` is the per-example gradient covariance. A small batch of
size b sees ``D/b``. :class:`NoisySGD` adds to the large-batch gradient a Gaussian vector with
its own knob, the injection scale s:

    θ ← θ − η (g_B + √s · ξ),      ξ ~ N(0, Σ_kind),      (P,)

where ``Σ_kind`` is the noise kind's stand-in for D, estimated on M examples of the current
batch (``num_samples``). The step direction then has covariance ``D/B + s·Σ_kind``; when
``Σ_kind = D`` this equals the small-batch covariance ``D/b`` for

    s = 1/b − 1/B                                 (:func:`matched_injection_scale`),

so s plays the role of ``1/B_eff − 1/B`` and is set independently of η and B. (It is not
the "temperature" η/B — ``lr_batch_ratio`` — nor η(N−B)/(B(N−1)) — ``step_noise_ratio``;
the argument was called ``temperature`` before and that name still works, deprecated.)

Kinds (``Σ_kind`` for a batch of M examples with per-example gradients g_j, mean ḡ_M, and
D_M = (1/M) Σ_j (g_j − ḡ_M)(g_j − ḡ_M)ᵀ):

- ``"none"``: ξ = 0.
- ``"isotropic"``: Σ = σ² I with σ² = tr(D_M)/P (same trace as D_M).
- ``"diag_fisher"``: Σ = diag(D_M), the per-coordinate variance of the per-example gradients
  (the diagonal of the centred empirical Fisher): ξ = z ⊙ sqrt(diag D_M).

  Both need only the moments d = diag(D_M). By default (``moment_probes=r``) they are
  estimated from r independent sub-sampled draws ζ_1..ζ_r ~ N(0, D_M) (below; one batched
  backward pass): d̂ = (1/r) Σ_i ζ_i ⊙ ζ_i, so E[d̂] = d, and ξ = z ⊙ sqrt(d̂) (diag_fisher)
  or ξ = z · sqrt(Σ_a d̂_a / P) (isotropic) with a fresh z ~ N(0, I_P) independent of d̂.
  Then E[ξξᵀ] = E[diag(d̂)] = diag(D_M) (resp. tr(D_M)/P · I) exactly: the covariance is the
  target, the draw is a Gaussian scale mixture rather than a Gaussian. ``moment_probes=None``
  computes d exactly from per-example gradients (much slower).
- ``"subsampled"``: ξ = Σ_j z_j (g_j − ḡ_M)/√M, z ~ N(0, I_M): Σ = D_M exactly. Computed
  without per-example gradients, as the gradient of Σ_j (z_j − z̄) ℓ_j / √M (one backward).
- ``"true_fisher"``: ξ = Σ_j z_j g̃_j /√M, with g̃_j = −∇ log p(ỹ_j | x_j, θ) at a label
  drawn from the model, ỹ_j ~ ``p(·|x_j, θ)`` (softmax of the logits). E_ỹ[g̃_j] = 0, so
  Σ = F_M = (1/M) Σ_j E_ỹ[g̃_j g̃_jᵀ], the true Fisher on the M inputs. Uses the model's
  categorical likelihood (cross-entropy on logits) whatever ``loss_fn`` is.
- ``"hessian"``: ξ ≈ H₊^{1/2} z, z ~ N(0, I_P), with H the Hessian of the mean loss on the M
  examples and H₊ its positive part (negative eigenvalues clipped to 0): Σ = H₊.
- ``"ggn"``: ξ = (1/√M) Σ_j J_jᵀ S_j w_j, w_j ~ N(0, I), with S_j S_jᵀ the output Hessian
  of example j (for cross-entropy S_j = diag √p_j − p_j √p_jᵀ) and J_j the Jacobian of its
  outputs: Σ = G = (1/M) Σ_j J_jᵀ H_j^out J_j exactly, the generalised Gauss-Newton matrix
  on the M examples (G = F for softmax cross-entropy), at the cost of one forward and one
  backward on the M examples (:meth:`sgdnoise.curvature.GGNOperator.sample`; no Lanczos).

For "hessian", H is :class:`sgdnoise.curvature.HessianOperator` on the M examples (its graph
is built once per draw and every product is a backward pass over it), and
``f(A) z`` with ``f(λ) = √max(λ, 0)`` is approximated by k Lanczos steps started at z
(:func:`sgdnoise.spectral.lanczos_matrix_function`: ``f(A) z ≈ V_k f(T_k) V_kᵀz``); it is
exact when the Krylov space is invariant (in particular for k = P). The default k is
:data:`DEFAULT_LANCZOS_STEPS`; a draw costs the Gaussian z ∈ R^P, the graph on M examples,
k Hessian-vector products and the reorthogonalisation, so its cost over a plain step is
at least ``1 + (t_z + t_graph + k·t_HVP) / t_step``. ``benchmarks/bench_noise.py`` prints
that floor and the measured cost next to the accuracy for k = 2..10. Accuracy (dense
reference, small MLP, mean of 3 problems): per-draw error ‖ξ_k − H₊^{1/2}z‖/‖H₊^{1/2}z‖
0.71 / 0.43 / 0.47 / 0.34 / 0.36 / 0.30 / 0.29 for k = 2 .. 8, covariance error of the
draws 1.17 / 0.58 / 0.72 / 0.45 / 0.53 / 0.40 / 0.41: not monotone in k (those spectra are
nearly symmetric about 0, so an odd k puts a Ritz value at ≈ 0, where √·₊ has its kink,
and beats k + 1); √·₊ has no good low-degree polynomial approximation, so the error falls
only slowly with k.

The per-example building blocks (trainable parameters, per-example losses, batched
vector-Jacobian products, flat ↔ per-parameter vectors) are those of :mod:`sgdnoise.grads`.

Per-example quantities need examples that do not interact: BatchNorm in training mode couples
the batch, so kinds other than ``"none"`` raise ValueError for such models; use GroupNorm
(``build_model(..., norm="group")``), no normalisation, or BatchNorm in eval mode.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdnoise.covariance import finite_population_factor
from sgdnoise.curvature import GGNOperator, HessianOperator
from sgdnoise.grads import (
    batched_vjp,
    check_independent_examples,
    flatten_like,
    per_example_grads,
    per_example_losses,
    split_like,
    trainable_parameters,
)
from sgdnoise.spectral import lanczos_function_factor, lanczos_matrix_function, sqrt_psd
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "DEFAULT_LANCZOS_STEPS",
    "KINDS",
    "NEEDS_BATCH",
    "NoisySGD",
    "lanczos_matrix_function",
    "matched_injection_scale",
    "matched_temperature",
    "sample_noise",
    "sqrt_psd",
    "hessian_operator",
    "ggn_operator",
    "hessian_noise_factor",
]

KINDS = ("none", "isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn")

#: k, the Lanczos steps (Hessian-vector products) per "hessian" draw unless told otherwise:
#: the study's choice (issue 11). k = 5 is close to k = 8, the previous choice, in accuracy
#: (per-draw error 0.34 against 0.29, covariance error 0.45 against 0.41; module docstring)
#: at 5/8 of its products. On the CPU benchmark (``benchmarks/bench_noise.py``, MLP with
#: P = 411,146, B = 500, M = 32) its step measured 2.6-3.1x a plain step with 1 thread
#: (≤ 3x in three of four runs) and 3.1-3.9x with 2 threads on a shared 2-core machine
#: (floor 2.4-3.0x), where only k ≤ 3 stayed under 3x
DEFAULT_LANCZOS_STEPS = 5
NEEDS_BATCH = KINDS[1:]

LossFn = Callable[[Tensor, Tensor], Tensor]
Matmat = Callable[[Tensor], Tensor]

# the names that chapter code imported before they were public in sgdnoise.grads (kept so
# that old imports work; new code imports the public names from sgdnoise.grads)
_trainable = trainable_parameters
_per_example_losses = per_example_losses
_split = split_like
_grad_batched = batched_vjp


# ----------------------------------------------------------------------------------------
# the injection scale that imitates a small batch
# ----------------------------------------------------------------------------------------


def matched_injection_scale(
    small_batch: int, large_batch: int, *, num_examples: int | None = None
) -> float:
    """The injection scale s for which a large-batch step plus injected noise of covariance
    s·D has the gradient covariance of a small-batch step.

    ``Cov(g_b) = c_b D`` with the Lemma-1 factor ``c_b`` of
    :func:`sgdnoise.covariance.finite_population_factor`, so ``c_B D + s D = c_b D`` gives
    ``s = c_b − c_B``: ``1/b − 1/B`` with replacement (``num_examples=None``) and
    ``[(N−b)/b − (N−B)/B] / (N−1) = (1/b − 1/B) · N/(N−1)`` without replacement from N
    examples (``num_examples=N``).
    """
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if b > B:
        raise ValueError(
            f"small_batch must be <= large_batch ({B}) so that noise is added, got {b}"
        )
    if num_examples is None:
        return finite_population_factor(B, b, replacement=True) - finite_population_factor(
            B, B, replacement=True)
    n = check_positive_int("num_examples", num_examples)
    if n < B:
        raise ValueError(f"num_examples must be >= large_batch ({B}), got {n}")
    return finite_population_factor(n, b, replacement=False) - finite_population_factor(
        n, B, replacement=False)


#: the name before the injection scale was renamed (same function)
matched_temperature = matched_injection_scale


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    z = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    return z.to(like.device)


def _check_batch(inputs: Tensor, targets: Tensor) -> int:
    if not isinstance(inputs, Tensor) or inputs.ndim < 1:
        raise ValueError(f"inputs must be a tensor with a batch dimension, got {type(inputs)}")
    if not isinstance(targets, Tensor) or targets.shape[:1] != inputs.shape[:1]:
        raise ValueError(
            f"targets must be a tensor with as many rows as inputs ({inputs.shape[0]}), got "
            f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets)}"
        )
    return int(inputs.shape[0])


def _choose_examples(
    inputs: Tensor,
    targets: Tensor,
    num_samples: int | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """M examples of the batch, drawn uniformly without replacement (all if M >= batch)."""
    n = _check_batch(inputs, targets)
    if num_samples is not None:
        m = check_positive_int("num_samples", num_samples)
        if m < 2:
            raise ValueError(f"num_samples must be >= 2 (a covariance needs two), got {m}")
    else:
        m = n
    if n < 2:
        raise ValueError(f"the batch must hold at least 2 examples, got {n}")
    if m >= n:
        return inputs, targets
    device = generator.device if generator is not None else torch.device("cpu")
    idx = torch.randperm(n, generator=generator, device=device)[:m].to(inputs.device)
    return inputs[idx], targets[idx]


# ----------------------------------------------------------------------------------------
# curvature operators on a batch
# ----------------------------------------------------------------------------------------


def hessian_operator(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor
) -> HessianOperator:
    """H of the mean per-example loss on the batch as a
    :class:`sgdnoise.curvature.HessianOperator` with its graph kept (``keep_graph=True``):
    one forward/backward with ``create_graph`` on the first product, then each block
    ``V: (P, S) -> H V`` is one batched double backward. Callable on (P,) or (P, S)."""
    _check_batch(inputs, targets)
    return HessianOperator(model, loss_fn, inputs, targets, keep_graph=True)


def ggn_operator(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor
) -> GGNOperator:
    """The generalised Gauss-Newton matrix G = (1/M) Σ_j J_jᵀ ∇²_f ℓ_j J_j on the batch as a
    :class:`sgdnoise.curvature.GGNOperator` with its graph kept; callable on (P,) or
    (P, S)."""
    _check_batch(inputs, targets)
    return GGNOperator(model, loss_fn, inputs, targets, keep_graph=True)


# ----------------------------------------------------------------------------------------
# the noise draws
# ----------------------------------------------------------------------------------------


def _moments(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """(mean ḡ_M, per-coordinate variance diag D_M) of the per-example gradients, (P,) each,
    accumulated chunk by chunk so memory stays O(chunk · P)."""
    m = inputs.shape[0]
    chunk = m if chunk_size is None else check_positive_int("chunk_size", chunk_size)
    total = None
    total_sq = None
    for start in range(0, m, chunk):
        G = per_example_grads(model, loss_fn, inputs[start : start + chunk],
                              targets[start : start + chunk])
        part, part_sq = G.sum(0), (G * G).sum(0)
        total = part if total is None else total + part
        total_sq = part_sq if total_sq is None else total_sq + part_sq
    mean = total / m
    var = (total_sq / m - mean * mean).clamp_min(0)
    return mean, var


def _subsampled_draws(
    model: nn.Module,
    params: list[nn.Parameter],
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    z: Tensor,
) -> Tensor:
    """ζ_s = Σ_j (z_sj − z̄_s) g_j / √M for each row of ``z: (S, M)``: (S, P), from one
    forward pass and one (batched) backward pass of the weighted loss (eq. in the module
    docstring); Cov ζ_s = D_M."""
    m = x.shape[0]
    s = z.shape[0]
    with torch.enable_grad():
        losses = per_example_losses(loss_fn, model(x), y)
        weights = ((z - z.mean(dim=1, keepdim=True)) / math.sqrt(m)).to(losses.dtype)
        if s == 1:
            g = torch.autograd.grad(losses, params, grad_outputs=weights[0], allow_unused=True)
            return flatten_like(g, params).unsqueeze(0)
        return flatten_like(batched_vjp(losses, params, weights), params, (s,))


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
    :class:`NoisySGD` reuses for ``basis_refresh`` steps, so a step costs O(Pm) instead of
    k products. It is not an approximation of H₊ as a covariance: R Rᵀ has rank <= k, and
    ``‖R Rᵀ − H₊‖_F / ‖H₊‖_F`` measured 0.999 / 0.991 / 0.982 / 0.961 for k = 2 / 5 / 8 / 16
    (exact, small MLP of ``benchmarks/bench_noise.py``), against 0.45 for the covariance of
    fresh k = 5 draws f(H)z."""
    k = check_positive_int("lanczos_steps", lanczos_steps)
    params = trainable_parameters(model)
    check_independent_examples(model)
    x, y = _choose_examples(inputs, targets, num_samples, generator)
    op = HessianOperator(model, loss_fn, x, y, keep_graph=True)
    z = _randn((sum(p.numel() for p in params), 1), generator, params[0].detach())
    R, _ = lanczos_function_factor(lambda V: op.matmat(V, block_size=None), z, k)
    return R.detach()


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
    """Draw ξ ~ N(0, Σ_kind) at the model's current parameters (see the module docstring).

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
          for "isotropic" / "diag_fisher" (unbiased; see the module docstring); ``None``:
          exact per-example gradients.

    Returns:

        - ξ: (P,) or (S, P) in the parameters' dtype and device, detached.
    """
    check_choice("kind", kind, KINDS)
    params = trainable_parameters(model)
    P = sum(p.numel() for p in params)
    s = 1 if num_draws is None else check_positive_int("num_draws", num_draws)
    lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
    if moment_probes is not None:
        moment_probes = check_positive_int("moment_probes", moment_probes)
    like = params[0].detach()
    if kind == "none":
        out = like.new_zeros((s, P))
        return out[0] if num_draws is None else out
    if kind != "true_fisher" and not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable criterion for kind {kind!r}, got {loss_fn!r}")
    check_independent_examples(model)
    x, y = _choose_examples(inputs, targets, num_samples, generator)
    m = x.shape[0]
    if kind in ("isotropic", "diag_fisher"):
        if moment_probes is None:
            _, var = _moments(model, loss_fn, x, y, chunk_size)  # type: ignore[arg-type]
            var = var.unsqueeze(0)  # (1, P), shared by the draws
        else:
            probes = _randn((s * moment_probes, m), generator, like)
            zeta = _subsampled_draws(model, params, loss_fn, x, y, probes)  # type: ignore
            var = zeta.pow(2).view(s, moment_probes, P).mean(dim=1)  # (S, P), E = diag D_M
        z = _randn((s, P), generator, like)
        if kind == "isotropic":
            out = z * var.sum(dim=1, keepdim=True).div(P).sqrt()
        else:
            out = z * var.sqrt()
    elif kind in ("subsampled", "true_fisher"):
        z = _randn((s, m), generator, like)
        if kind == "subsampled":
            # Σ_j z_j (g_j − ḡ) = ∇ Σ_j (z_j − z̄) ℓ_j
            out = _subsampled_draws(model, params, loss_fn, x, y, z)  # type: ignore[arg-type]
            out = out.detach()
            return out[0] if num_draws is None else out
        with torch.enable_grad():
            logits = model(x)
            if logits.ndim != 2:
                raise ValueError(
                    f"true_fisher needs logits of shape (M, classes), got {tuple(logits.shape)}"
                )
            probs = torch.softmax(logits.detach().to(torch.float64), dim=1)
            gen_device = generator.device if generator is not None else probs.device
            labels = torch.multinomial(
                probs.to(gen_device).repeat(s, 1), 1, generator=generator
            ).view(s, m).to(logits.device)
            nll = -torch.log_softmax(logits, dim=1)  # (M, C)
            weights = F.one_hot(labels, logits.shape[1]).to(z.dtype) * (
                z / math.sqrt(m)
            ).unsqueeze(2)  # (S, M, C)
            target = nll
            weights = weights.to(target.dtype)
            if s == 1:
                g = torch.autograd.grad(target, params, grad_outputs=weights[0],
                                        allow_unused=True)
                out = flatten_like(g, params).unsqueeze(0)
            else:
                out = flatten_like(batched_vjp(target, params, weights), params, (s,))
    else:  # hessian / ggn
        if kind == "ggn":  # exact: G = BBᵀ with B = [J_jᵀ S_j]/√M, one batched backward
            out = GGNOperator(model, loss_fn, x, y).sample(s, generator=generator)  # type: ignore
        else:
            op = HessianOperator(model, loss_fn, x, y, keep_graph=True)  # type: ignore[arg-type]
            Z = _randn((P, s), generator, like)
            out = lanczos_matrix_function(lambda V: op.matmat(V, block_size=None), Z,
                                          lanczos_steps).T
    out = out.detach()
    return out[0] if num_draws is None else out


# ----------------------------------------------------------------------------------------
# the optimizer
# ----------------------------------------------------------------------------------------


@dataclass
class NoiseStats:
    """Book-keeping of a :class:`NoisySGD`: steps taken, seconds spent drawing noise, and
    ‖√s ξ‖ of the last draw (s the injection scale)."""

    steps: int = 0
    noise_seconds: float = 0.0
    last_noise_norm: float = 0.0


class NoisySGD(torch.optim.Optimizer):
    """SGD (with optional momentum and weight decay) plus injected gradient noise:

        d = g + λ θ + √s ξ,   b ← μ b + d (b = d at the first step),   θ ← θ − η b,

    with ξ ~ N(0, Σ_kind) drawn by :func:`sample_noise` on the batch given to
    :meth:`observe_batch` (see the module docstring for Σ_kind). The injection scale s is
    independent of ``lr`` η and of the batch size; ``matched_injection_scale(b, B)`` =
    1/b − 1/B makes a batch-B step imitate the gradient covariance of a batch-b step when
    Σ_kind ≈ D. With kind="none" (or s = 0) this is plain SGD.

    Args:

        - params: the model's trainable parameters (all of them, for kinds other than "none";
          param groups may split them and carry their own lr / injection_scale).
        - lr: η > 0.
        - kind: one of ``KINDS``.
        - injection_scale: s >= 0, the variance multiplier of the injected noise.
        - temperature: deprecated name of ``injection_scale`` (a DeprecationWarning; giving
          both is an error).
        - model, loss_fn: the network and batch criterion the noise is computed from (required
          unless kind="none").
        - num_samples: M >= 2, batch examples used per draw (``None``: the whole batch).
        - momentum: μ in [0, 1); weight_decay: λ >= 0.
        - lanczos_steps: k for "hessian" (unused by the other kinds).
        - basis_refresh: r for "hessian": 1 (default) draws every step's noise by k fresh
          Lanczos steps from its own start (f(H)z); r > 1 computes a Krylov factor R
          (:func:`hessian_noise_factor`, covariance V T₊ Vᵀ) on the batch of every r-th
          step and draws ξ = R w in between: about 1/r of the cost, with a basis up to
          r − 1 steps old. Its noise is NOT H₊-shaped: R Rᵀ has rank <= k and misses H₊ by
          ``‖R Rᵀ − H₊‖_F / ‖H₊‖_F`` ≈ 0.99 at k = 5 (0.98 at k = 8; measured on the
          benchmark's small MLP), against 0.45 for fresh draws; it injects noise only
          along the top few Hessian directions. Kept for that use, not as a cheap
          "hessian" kind.
        - chunk_size: per-example gradient chunk for "isotropic" / "diag_fisher" (exact mode).
        - moment_probes: r probe draws estimating diag(D_M) for "isotropic" / "diag_fisher"
          (``None``: exact per-example gradients); see :func:`sample_noise`.
        - seed: seeds the optimizer's own generator (on the parameters' device).

    Call ``observe_batch(inputs, targets)`` before each ``step()``; the training engine does
    this automatically. The batch is consumed by the step, so a step without a fresh batch
    raises RuntimeError.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        *,
        kind: str = "none",
        injection_scale: float | None = None,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
        num_samples: int | None = 64,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
        chunk_size: int | None = None,
        moment_probes: int | None = 4,
        seed: int = 0,
        temperature: float | None = None,
        basis_refresh: int = 1,
    ) -> None:
        lr = check_positive("lr", lr)
        check_choice("kind", kind, KINDS)
        if temperature is not None:
            if injection_scale is not None:
                raise ValueError(
                    f"give injection_scale ({injection_scale!r}) or its deprecated name "
                    f"temperature ({temperature!r}), not both"
                )
            warnings.warn(
                "NoisySGD(temperature=...) is deprecated: the quantity 1/b − 1/B is now "
                "called injection_scale (pass injection_scale=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            injection_scale = check_positive("temperature", temperature, allow_zero=True)
        injection_scale = check_positive(
            "injection_scale", 1.0 if injection_scale is None else injection_scale,
            allow_zero=True)
        momentum = check_positive("momentum", momentum, allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        if num_samples is not None:
            num_samples = check_positive_int("num_samples", num_samples)
            if num_samples < 2:
                raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        self.lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
        self.basis_refresh = check_positive_int("basis_refresh", basis_refresh)
        self._factor: Tensor | None = None
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
        if moment_probes is not None:
            moment_probes = check_positive_int("moment_probes", moment_probes)
        defaults = dict(lr=lr, injection_scale=injection_scale, momentum=momentum,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:  # groups written with the deprecated key
            if "temperature" in group:
                warnings.warn("the param-group key 'temperature' is deprecated: use "
                              "'injection_scale'", DeprecationWarning, stacklevel=2)
                group["injection_scale"] = check_positive(
                    "temperature", group.pop("temperature"), allow_zero=True)
        self.kind = kind
        self.model = model
        self.loss_fn = loss_fn
        self.num_samples = num_samples
        self.chunk_size = chunk_size
        self.moment_probes = moment_probes
        self.seed = int(seed)
        self.stats = NoiseStats()
        self._batch: tuple[Tensor, Tensor] | None = None
        self._generator: torch.Generator | None = None
        self._offsets: dict[int, tuple[int, int]] = {}
        if kind != "none":
            if not isinstance(model, nn.Module):
                raise ValueError(f"model must be the nn.Module for kind {kind!r}, got {model!r}")
            if kind != "true_fisher" and not callable(loss_fn):
                raise ValueError(f"loss_fn must be callable for kind {kind!r}, got {loss_fn!r}")
            offset = 0
            for p in trainable_parameters(model):
                self._offsets[id(p)] = (offset, p.numel())
                offset += p.numel()
            mine = {id(p) for g in self.param_groups for p in g["params"]}
            if mine != set(self._offsets):
                raise ValueError(
                    "params must be exactly the model's trainable parameters for kind "
                    f"{kind!r} (the noise vector lives on all of them)"
                )

    def observe_batch(self, inputs: Tensor, targets: Tensor) -> None:
        """Remember the current batch; the next ``step()`` draws its noise from it."""
        _check_batch(inputs, targets)
        self._batch = (inputs.detach(), targets.detach())

    def state_dict(self) -> dict:
        """The optimizer's state plus what the noise needs to continue exactly: the noise
        generator's state, the step count and the reused Krylov factor (``basis_refresh``).
        A run resumed from a checkpoint then draws the noise an uninterrupted run draws."""
        state = super().state_dict()
        gen = self._generator
        state["noise"] = {
            "generator": None if gen is None else gen.get_state(),
            "generator_device": None if gen is None else str(gen.device),
            "steps": self.stats.steps,
            "noise_seconds": self.stats.noise_seconds,
            "factor": self._factor,
        }
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Inverse of :meth:`state_dict` (a plain ``torch.optim`` state dict also loads: the
        noise then restarts from ``seed``)."""
        state = dict(state_dict)
        noise = state.pop("noise", None)
        super().load_state_dict(state)
        if noise is None:
            return
        self.stats.steps = int(noise["steps"])
        self.stats.noise_seconds = float(noise["noise_seconds"])
        self._factor = noise["factor"]
        if noise["generator"] is not None:
            self._generator = torch.Generator(device=noise["generator_device"])
            self._generator.set_state(noise["generator"].cpu())

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def _draw(self) -> Tensor | None:
        if self.kind == "none" or all(g["injection_scale"] == 0 for g in self.param_groups):
            self._batch = None
            return None
        if self._batch is None:
            raise RuntimeError(
                f"NoisySGD(kind={self.kind!r}) has no batch to draw noise from: call "
                "optimizer.observe_batch(inputs, targets) before every step() (the training "
                "engine does this for you)"
            )
        inputs, targets = self._batch
        self._batch = None
        start = time.perf_counter()
        device = next(iter(self.model.parameters())).device  # type: ignore[union-attr]
        if self.kind == "hessian" and self.basis_refresh > 1:
            gen = self._gen(device)
            if self._factor is None or self.stats.steps % self.basis_refresh == 0:
                self._factor = hessian_noise_factor(
                    self.model, self.loss_fn, inputs, targets,  # type: ignore[arg-type]
                    num_samples=self.num_samples, lanczos_steps=self.lanczos_steps,
                    generator=gen)
            xi = self._factor @ _randn((self._factor.shape[1],), gen, self._factor)
            self.stats.noise_seconds += time.perf_counter() - start
            return xi
        xi = sample_noise(
            self.kind, self.model, self.loss_fn, inputs, targets,  # type: ignore[arg-type]
            num_samples=self.num_samples, generator=self._gen(device),
            lanczos_steps=self.lanczos_steps, chunk_size=self.chunk_size,
            moment_probes=self.moment_probes,
        )
        self.stats.noise_seconds += time.perf_counter() - start
        return xi

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        xi = self._draw()
        noise_sq = 0.0
        with torch.no_grad():
            for group in self.param_groups:
                lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
                amp = math.sqrt(group["injection_scale"])
                use_noise = xi is not None and amp > 0
                for p in group["params"]:
                    if p.grad is None and xi is None:
                        continue
                    d = torch.zeros_like(p) if p.grad is None else p.grad
                    if wd:
                        d = d.add(p, alpha=wd)
                    if use_noise:
                        start, n = self._offsets[id(p)]
                        noise = xi[start : start + n].view_as(p).to(p.dtype)  # type: ignore[index]
                        noise_sq += group["injection_scale"] * float(torch.dot(noise.view(-1),
                                                                           noise.view(-1)))
                        d = d.add(noise, alpha=amp)
                    if mu:
                        state = self.state[p]
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            state["momentum_buffer"] = buf = d.clone()
                        else:
                            buf.mul_(mu).add_(d)
                        d = buf
                    p.add_(d, alpha=-lr)
        self.stats.steps += 1
        self.stats.last_noise_norm = math.sqrt(noise_sq)
        return loss
