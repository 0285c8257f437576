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

so s plays the role of ``1/B_eff − 1/B`` and is set independently of η and B. (It is
neither η/B, :func:`sgdnoise.train.lr_batch_ratio`, nor η(N−B)/(B(N−1)), the step noise
ratio.)

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

The package: :mod:`~sgdnoise.noise.samplers` (one sampler per kind in one registry,
:func:`sample_noise`), :mod:`~sgdnoise.noise.optimizer` (:class:`NoisySGD`: the noise added
to the gradients of ``torch.optim.SGD``) and :mod:`~sgdnoise.noise.spec` (:class:`NoiseSpec`,
the one description of a run's noise, and :func:`matched_injection_scale`).

Per-example quantities need examples that do not interact: BatchNorm in training mode couples
the batch, so kinds other than ``"none"`` raise ValueError for such models; use GroupNorm
(``build_model(..., norm="group")``), no normalisation, or BatchNorm in eval mode.
"""

from .optimizer import NoiseStats, NoisySGD
from .samplers import (
    DEFAULT_LANCZOS_STEPS,
    KINDS,
    NOISE_KINDS,
    SAMPLERS,
    hessian_noise_factor,
    sample_noise,
)
from .spec import DEFAULT_CHUNK_SIZE, NoiseSpec, matched_injection_scale, noisy_sgd_factory

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LANCZOS_STEPS",
    "KINDS",
    "NOISE_KINDS",
    "SAMPLERS",
    "NoiseSpec",
    "NoiseStats",
    "NoisySGD",
    "hessian_noise_factor",
    "matched_injection_scale",
    "noisy_sgd_factory",
    "sample_noise",
]
