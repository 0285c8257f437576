"""Noise injection decoupled from the learning rate and the batch size (chapter 9).

A large-batch step sees the gradient noise ``Cov(g_B) = D/B`` of its batch of size B, where
``D(θ) = (1/N) Σ_i g_i g_iᵀ − ḡḡᵀ`` is the per-example gradient covariance. A small batch of
size b sees ``D/b``. :class:`NoisySGD` adds to the large-batch gradient a Gaussian vector with
its own knob, the ``temperature`` T:

    θ ← θ − η (g_B + √T · ξ),      ξ ~ N(0, Σ_kind),      (P,)

where ``Σ_kind`` is the noise kind's stand-in for D, estimated on M examples of the current
batch (``num_samples``). The step direction then has covariance ``D/B + T·Σ_kind``; when
``Σ_kind = D`` this equals the small-batch covariance ``D/b`` for

    T = 1/b − 1/B                                 (:func:`matched_temperature`),

so T plays the role of ``1/B_eff − 1/B`` and is set independently of η and B.

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
  drawn from the model, ỹ_j ~ p(·|x_j, θ) (softmax of the logits). E_ỹ[g̃_j] = 0, so
  Σ = F_M = (1/M) Σ_j E_ỹ[g̃_j g̃_jᵀ], the true Fisher on the M inputs. Uses the model's
  categorical likelihood (cross-entropy on logits) whatever ``loss_fn`` is.
- ``"hessian"``: ξ ≈ H₊^{1/2} z, z ~ N(0, I_P), with H the Hessian of the mean loss on the M
  examples and H₊ its positive part (negative eigenvalues clipped to 0): Σ = H₊.
- ``"ggn"``: ξ ≈ G^{1/2} z with G the generalised Gauss-Newton matrix on the M examples
  (G = F for softmax cross-entropy): Σ = G.

For the last two, ``f(A) z`` with ``f(λ) = √max(λ, 0)`` is approximated by k steps of
Lanczos started at z (:func:`lanczos_matrix_function`): ``f(A) z ≈ ‖z‖ V_k f(T_k) e₁``; it is
exact when the Krylov space is invariant (in particular for k = P).

Per-example quantities need examples that do not interact: BatchNorm in training mode couples
the batch, so kinds other than ``"none"`` raise ValueError for such models; use GroupNorm
(``build_model(..., norm="group")``), no normalisation, or BatchNorm in eval mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdnoise._validate import check_choice, check_positive, check_positive_int

__all__ = [
    "KINDS",
    "NEEDS_BATCH",
    "NoisySGD",
    "lanczos_matrix_function",
    "matched_temperature",
    "sample_noise",
    "hessian_operator",
    "ggn_operator",
]

KINDS = ("none", "isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn")
NEEDS_BATCH = KINDS[1:]

LossFn = Callable[[Tensor, Tensor], Tensor]
Matmat = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------
# the temperature that imitates a small batch
# ----------------------------------------------------------------------------------------


def matched_temperature(
    small_batch: int, large_batch: int, *, num_examples: int | None = None
) -> float:
    """The temperature T for which a large-batch step plus injected noise of covariance T·D
    has the gradient covariance of a small-batch step.

    With replacement, ``Cov(g_b) = D/b`` and ``Cov(g_B) = D/B``, so
    ``D/B + T D = D/b`` gives ``T = 1/b − 1/B``. Without replacement from N examples
    (``num_examples=N``) the covariances carry the finite-population factor (N−B)/(N−1):
    ``T = [(N−b)/b − (N−B)/B] / (N−1) = (1/b − 1/B) · N/(N−1)``.
    """
    b = check_positive_int("small_batch", small_batch)
    B = check_positive_int("large_batch", large_batch)
    if b > B:
        raise ValueError(
            f"small_batch must be <= large_batch ({B}) so that noise is added, got {b}"
        )
    t = 1.0 / b - 1.0 / B
    if num_examples is not None:
        n = check_positive_int("num_examples", num_examples)
        if n < B or n < 2:
            raise ValueError(f"num_examples must be >= large_batch ({B}) and >= 2, got {n}")
        t *= n / (n - 1)
    return t


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    return params


def _check_independent_examples(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
            module.training or module.running_mean is None
        ):
            raise ValueError(
                f"model has the BatchNorm layer {name or type(module).__name__!r} using batch "
                "statistics; the noise kinds need per-example losses, which BatchNorm in "
                "training mode couples. Build the model with norm='group' or norm='none', or "
                "put BatchNorm in eval mode."
            )


def _flat(grads: Iterable[Tensor | None], params: list[Tensor]) -> Tensor:
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def _flat_batched(grads: Iterable[Tensor | None], params: list[Tensor], s: int) -> Tensor:
    """(S, P) from per-parameter (S, *shape) pieces."""
    return torch.cat(
        [
            (p.new_zeros((s, p.numel())) if g is None else g.reshape(s, -1))
            for g, p in zip(grads, params, strict=True)
        ],
        dim=1,
    )


def _split(v: Tensor, params: list[Tensor]) -> list[Tensor]:
    """Per-parameter views of ``v: (..., P)`` shaped ``(..., *p.shape)``."""
    lead = v.shape[:-1]
    pieces = torch.split(v, [p.numel() for p in params], dim=-1)
    return [piece.reshape(*lead, *p.shape) for piece, p in zip(pieces, params, strict=True)]


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    z = torch.randn(shape, generator=generator, device=device, dtype=like.dtype)
    return z.to(like.device)


def _per_example_losses(loss_fn: LossFn, outputs: Tensor, targets: Tensor) -> Tensor:
    """ℓ_j = loss_fn(outputs[j:j+1], targets[j:j+1]): (M,), differentiable."""
    if loss_fn is F.cross_entropy:  # fast path for the usual criterion
        return F.cross_entropy(outputs, targets, reduction="none")
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None:
        return F.cross_entropy(outputs, targets, reduction="none",
                               ignore_index=loss_fn.ignore_index,
                               label_smoothing=loss_fn.label_smoothing)

    def one(o: Tensor, t: Tensor) -> Tensor:
        return loss_fn(o.unsqueeze(0), t.unsqueeze(0))

    try:
        return torch.vmap(one)(outputs, targets)
    except Exception:  # criteria vmap cannot trace: evaluate one example at a time
        return torch.stack([one(outputs[j], targets[j]) for j in range(outputs.shape[0])])


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
# Lanczos approximation of f(A) z
# ----------------------------------------------------------------------------------------


def sqrt_psd(eigenvalues: Tensor) -> Tensor:
    """f(λ) = √max(λ, 0): the square root of the positive part."""
    return eigenvalues.clamp_min(0).sqrt()


def lanczos_matrix_function(
    matmat: Matmat,
    Z: Tensor,
    num_steps: int,
    fn: Callable[[Tensor], Tensor] = sqrt_psd,
) -> Tensor:
    """f(A) z for every column z of ``Z: (P, S)`` by k Lanczos steps started at z.

    For a symmetric ``A: (P, P)`` given by ``matmat(V: (P, S)) -> A V``, the Lanczos process
    started at q₁ = z/‖z‖ builds an orthonormal basis ``V_k = [q₁ … q_k]`` of the Krylov space
    span{z, Az, …, A^{k−1}z} and the tridiagonal ``T_k = V_kᵀ A V_k``; then

        f(A) z ≈ ‖z‖ V_k f(T_k) e₁,

    which is exact for every polynomial f of degree < k, and exact for any f once the Krylov
    space is invariant (at the latest k = P). The basis is fully reorthogonalised (twice), and
    a column whose Krylov space becomes invariant (β below 100·eps·‖T‖) stops growing; its
    answer is then exact. The S columns run side by side, each with its own recurrence.

    Returns (P, S), the dtype/device of Z. Costs k calls of ``matmat`` on (P, S) blocks.
    """
    if not isinstance(Z, Tensor) or Z.ndim != 2:
        raise ValueError(f"Z must be a (P, S) tensor, got {getattr(Z, 'shape', type(Z))}")
    k = check_positive_int("num_steps", num_steps)
    dim, s = Z.shape
    k = min(k, dim)
    eps = torch.finfo(Z.dtype).eps
    norms = Z.norm(dim=0)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    basis = Z.new_zeros((s, k, dim))  # row j of basis[c] is q_{j+1} of column c
    basis[:, 0] = (Z / safe).T
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    scale = torch.zeros(s, dtype=Z.dtype, device=Z.device)
    for j in range(k):
        Q = basis[:, j]  # (S, P)
        W = matmat(Q.T)
        if W.shape != (dim, s):
            raise ValueError(f"matmat must map a {(dim, s)} block to the same shape")
        W = W.T.to(Z.dtype).contiguous()  # (S, P)
        alpha = (Q * W).sum(dim=1)
        V = basis[:, : j + 1]  # (S, j+1, P)
        for _ in range(2):  # full reorthogonalisation, twice: W ← W − Vᵀ(V W)
            coef = torch.bmm(V, W.unsqueeze(2))  # (S, j+1, 1)
            W = W - torch.bmm(coef.transpose(1, 2), V)[:, 0]
        beta = W.norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(alpha.abs(), beta))
        alphas.append(alpha)
        if j == k - 1:
            break
        active = beta > 100 * eps * scale
        beta = torch.where(active, beta, torch.zeros_like(beta))
        betas.append(beta)
        inv = torch.where(active, 1.0 / torch.where(active, beta, 1.0), 0.0)
        basis[:, j + 1] = W * inv.unsqueeze(1)
    m = len(alphas)
    T = torch.zeros(s, m, m, dtype=Z.dtype, device=Z.device)
    idx = torch.arange(m, device=Z.device)
    T[:, idx, idx] = torch.stack(alphas, dim=1)
    if m > 1:
        b = torch.stack(betas, dim=1)  # (S, m-1)
        T[:, idx[:-1], idx[1:]] = b
        T[:, idx[1:], idx[:-1]] = b
    evals, U = torch.linalg.eigh(T)  # (S, m), (S, m, m)
    coeff = torch.einsum("sij,sj,sj->si", U, fn(evals), U[:, 0, :])  # f(T) e₁: (S, m)
    out = torch.bmm(coeff.unsqueeze(1), basis[:, :m])[:, 0]  # (S, P)
    return out.T * norms


# ----------------------------------------------------------------------------------------
# curvature operators on a batch (the graph is built once, each product reuses it)
# ----------------------------------------------------------------------------------------


def _grad_batched(
    outputs: Tensor | list[Tensor],
    inputs: list[Tensor],
    grad_outputs: Tensor | list[Tensor],
    *,
    create_graph: bool = False,
) -> list[Tensor | None]:
    """Vector-Jacobian products for a stack of cotangents (leading dim S); falls back to a
    loop over S when the batched rule of some operation is missing."""
    outs = outputs if isinstance(outputs, list) else [outputs]
    gos = grad_outputs if isinstance(grad_outputs, list) else [grad_outputs]
    try:
        return list(
            torch.autograd.grad(
                outs,
                inputs,
                grad_outputs=gos,
                retain_graph=True,
                create_graph=create_graph,
                allow_unused=True,
                is_grads_batched=True,
            )
        )
    except RuntimeError:
        s = gos[0].shape[0]
        rows = [
            torch.autograd.grad(
                outs,
                inputs,
                grad_outputs=[g[i] for g in gos],
                retain_graph=True,
                create_graph=create_graph,
                allow_unused=True,
            )
            for i in range(s)
        ]
        return [
            None if rows[0][j] is None else torch.stack([r[j] for r in rows])
            for j in range(len(inputs))
        ]


def hessian_operator(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor
) -> Matmat:
    """``V: (P, S) -> H V`` with H the Hessian of the mean per-example loss on the batch.

    One forward/backward with ``create_graph`` builds ∇L; each product is then a double
    backward ∂(∇L · v)/∂θ (Pearlmutter's trick)."""
    _check_batch(inputs, targets)
    _check_independent_examples(model)
    params = _trainable(model)
    with torch.enable_grad():
        loss = _per_example_losses(loss_fn, model(inputs), targets).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        used = [i for i, g in enumerate(grads) if g is not None]
    if not used:
        raise ValueError("the loss does not depend on any trainable parameter")
    g_list = [grads[i] for i in used]

    def matmat(V: Tensor) -> Tensor:
        s = V.shape[1]
        pieces = _split(V.T.to(params[0].dtype), params)
        with torch.enable_grad():
            hv = _grad_batched(g_list, params, [pieces[i] for i in used])
        return _flat_batched(hv, params, s).T

    return matmat


def ggn_operator(model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor) -> Matmat:
    """``V: (P, S) -> G V`` with G = (1/M) Σ_j J_jᵀ ∇²_f ℓ_j J_j the generalised Gauss-Newton
    matrix of the mean per-example loss on the batch (J_j: Jacobian of the outputs f(x_j)).

    Jv comes from the double-vjp trick (Jᵀu is linear in u, so ∂(Jᵀu · v)/∂u = Jv), the
    output Hessian product ∇²_f ℓ w by differentiating ∇_f ℓ, and Jᵀ(·) by one more vjp."""
    _check_batch(inputs, targets)
    _check_independent_examples(model)
    params = _trainable(model)
    with torch.enable_grad():
        out = model(inputs)
        out_d = out.detach().requires_grad_(True)
        loss_out = _per_example_losses(loss_fn, out_d, targets).mean()
        grad_out = torch.autograd.grad(loss_out, out_d, create_graph=True)[0]
        u = torch.zeros_like(out, requires_grad=True)
        jtu = torch.autograd.grad(out, params, grad_outputs=u, create_graph=True,
                                  allow_unused=True)
        pairs = [(g, i) for i, g in enumerate(jtu) if g is not None]

    def matmat(V: Tensor) -> Tensor:
        s = V.shape[1]
        pieces = _split(V.T.to(params[0].dtype), params)
        with torch.enable_grad():
            jv = _grad_batched([g for g, _ in pairs], [u], [pieces[i] for _, i in pairs])[0]
            if jv is None:
                jv = out.new_zeros((s, *out.shape))
            hjv = _grad_batched(grad_out, [out_d], jv)[0]
            if hjv is None:
                hjv = torch.zeros_like(jv)
            res = _grad_batched(out, params, hjv)
        return _flat_batched(res, params, s).T

    return matmat


# ----------------------------------------------------------------------------------------
# the noise draws
# ----------------------------------------------------------------------------------------


def _moments(
    model: nn.Module, loss_fn: LossFn, inputs: Tensor, targets: Tensor, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """(mean ḡ_M, per-coordinate variance diag D_M) of the per-example gradients, (P,) each,
    accumulated chunk by chunk so memory stays O(chunk · P)."""
    from sgdnoise.grads import per_example_grads

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
        losses = _per_example_losses(loss_fn, model(x), y)
        weights = ((z - z.mean(dim=1, keepdim=True)) / math.sqrt(m)).to(losses.dtype)
        if s == 1:
            g = torch.autograd.grad(losses, params, grad_outputs=weights[0], allow_unused=True)
            return _flat(g, params).unsqueeze(0)
        return _flat_batched(_grad_batched(losses, params, weights), params, s)


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
    lanczos_steps: int = 10,
    chunk_size: int | None = None,
    moment_probes: int | None = 4,
) -> Tensor:
    """Draw ξ ~ N(0, Σ_kind) at the model's current parameters (see the module docstring).

    Args:
        kind: one of ``KINDS``.
        model: the network; θ ∈ R^P are its trainable parameters in ``parameters()`` order.
        loss_fn: batch criterion ``loss_fn(outputs, targets)`` (mean or sum reduction); each
            example's loss ℓ_j is the criterion on that example alone. Unused by "none" and
            "true_fisher" (which uses the categorical likelihood of the logits).
        inputs, targets: the batch, (n, ...) and (n, ...).
        num_samples: M, the number of batch examples that define Σ_kind (a uniform subset
            without replacement, drawn from ``generator``; ``None`` or M >= n: all n). M >= 2.
        generator: source of every random number (Gaussians, subset, sampled labels); its
            device is used to draw, then values move to the parameters' device.
        num_draws: S independent draws sharing one subset (result (S, P)); ``None``: one
            draw, result (P,).
        lanczos_steps: k, Lanczos steps for "hessian" / "ggn" (k matrix products per step).
        chunk_size: examples per vectorised chunk for the per-example gradients of
            "isotropic" / "diag_fisher" when ``moment_probes`` is None.
        moment_probes: r, sub-sampled probe draws per noise draw that estimate diag(D_M)
            for "isotropic" / "diag_fisher" (unbiased; see the module docstring); ``None``:
            exact per-example gradients.

    Returns:
        ξ: (P,) or (S, P) in the parameters' dtype and device, detached.
    """
    check_choice("kind", kind, KINDS)
    params = _trainable(model)
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
    _check_independent_examples(model)
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
                out = _flat(g, params).unsqueeze(0)
            else:
                out = _flat_batched(_grad_batched(target, params, weights), params, s)
    else:  # hessian / ggn
        build = hessian_operator if kind == "hessian" else ggn_operator
        op = build(model, loss_fn, x, y)  # type: ignore[arg-type]
        Z = _randn((P, s), generator, like)
        out = lanczos_matrix_function(op, Z, lanczos_steps).T
    out = out.detach()
    return out[0] if num_draws is None else out


# ----------------------------------------------------------------------------------------
# the optimizer
# ----------------------------------------------------------------------------------------


@dataclass
class NoiseStats:
    """Book-keeping of a :class:`NoisySGD`: steps taken, seconds spent drawing noise, and
    ‖√T ξ‖ of the last draw."""

    steps: int = 0
    noise_seconds: float = 0.0
    last_noise_norm: float = 0.0


class NoisySGD(torch.optim.Optimizer):
    """SGD (with optional momentum and weight decay) plus injected gradient noise:

        d = g + λ θ + √T ξ,   b ← μ b + d (b = d at the first step),   θ ← θ − η b,

    with ξ ~ N(0, Σ_kind) drawn by :func:`sample_noise` on the batch given to
    :meth:`observe_batch` (see the module docstring for Σ_kind). ``temperature`` T is
    independent of ``lr`` η and of the batch size; ``matched_temperature(b, B)`` = 1/b − 1/B
    makes a batch-B step imitate the gradient covariance of a batch-b step when Σ_kind ≈ D.
    With kind="none" (or T = 0) this is plain SGD.

    Args:
        params: the model's trainable parameters (all of them, for kinds other than "none";
            param groups may split them and carry their own lr / temperature).
        lr: η > 0.
        kind: one of ``KINDS``.
        temperature: T >= 0.
        model, loss_fn: the network and batch criterion the noise is computed from (required
            unless kind="none").
        num_samples: M >= 2, batch examples used per draw (``None``: the whole batch).
        momentum: μ in [0, 1); weight_decay: λ >= 0.
        lanczos_steps: k for "hessian" / "ggn".
        chunk_size: per-example gradient chunk for "isotropic" / "diag_fisher" (exact mode).
        moment_probes: r probe draws estimating diag(D_M) for "isotropic" / "diag_fisher"
            (``None``: exact per-example gradients); see :func:`sample_noise`.
        seed: seeds the optimizer's own generator (on the parameters' device).

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
        temperature: float = 1.0,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
        num_samples: int | None = 64,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lanczos_steps: int = 10,
        chunk_size: int | None = None,
        moment_probes: int | None = 4,
        seed: int = 0,
    ) -> None:
        lr = check_positive("lr", lr)
        check_choice("kind", kind, KINDS)
        temperature = check_positive("temperature", temperature, allow_zero=True)
        momentum = check_positive("momentum", momentum, allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
        if num_samples is not None:
            num_samples = check_positive_int("num_samples", num_samples)
            if num_samples < 2:
                raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        self.lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
        if moment_probes is not None:
            moment_probes = check_positive_int("moment_probes", moment_probes)
        defaults = dict(lr=lr, temperature=temperature, momentum=momentum,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
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
            for p in _trainable(model):
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

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def _draw(self) -> Tensor | None:
        if self.kind == "none" or all(g["temperature"] == 0 for g in self.param_groups):
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
                amp = math.sqrt(group["temperature"])
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
                        noise_sq += group["temperature"] * float(torch.dot(noise.view(-1),
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
