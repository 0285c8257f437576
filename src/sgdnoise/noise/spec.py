"""The one description of a run's injected noise (:class:`NoiseSpec`: what a sweep plan's
``noise`` section becomes and what chapter 9's configurations hold), the injection scale
that imitates a small batch (:func:`matched_injection_scale`) and the one factory of the
optimizer that injects it (:meth:`NoiseSpec.optimizer_factory`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch.nn.functional as F
from torch import nn

from sgdnoise.covariance import finite_population_factor
from sgdnoise.params import check_declared, param
from sgdnoise.validate import check_positive_int

from .optimizer import NoisySGD
from .samplers import DEFAULT_LANCZOS_STEPS, NOISE_KINDS

__all__ = ["DEFAULT_CHUNK_SIZE", "NoiseSpec", "matched_injection_scale", "noisy_sgd_factory"]

#: examples per vectorised chunk of exact per-example moments (``moment_probes`` None)
DEFAULT_CHUNK_SIZE = 16


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
            f"small_batch must be <= large_batch ({B}) so that noise is added, got {b}")
    if num_examples is None:
        return finite_population_factor(B, b, replacement=True) - finite_population_factor(
            B, B, replacement=True)
    n = check_positive_int("num_examples", num_examples)
    if n < B:
        raise ValueError(f"num_examples must be >= large_batch ({B}), got {n}")
    return finite_population_factor(n, b, replacement=False) - finite_population_factor(
        n, B, replacement=False)


@dataclass(frozen=True)
class NoiseSpec:
    """The injected noise of a run, trained with :class:`NoisySGD`: its kind, the injection
    scale s, the small batch b it was matched to (None: s was given), M (``num_samples``,
    None: the whole batch), k (``lanczos_steps``, the hessian kind's) and r
    (``moment_probes``, the isotropic and diagonal kinds'; None: exact per-example moments).
    Its :meth:`to_dict` is the ``noise`` section of a sweep record."""

    kind: str = param(choices=NOISE_KINDS, doc="noise kind")
    injection_scale: float = param(low=0.0, high=1e6, doc="injection scale s")
    matched_small_batch: int | None = param(default=None, low=1, high=10**7,
                                            doc="small batch b that s imitates")
    num_samples: int | None = param(default=64, low=2, high=10**6,
                                    doc="batch examples M per draw")
    lanczos_steps: int = param(default=DEFAULT_LANCZOS_STEPS, low=1, high=10_000,
                               doc="Lanczos steps k of a hessian draw")
    moment_probes: int | None = param(default=4, low=1, high=10_000,
                                      doc="probes r of the diagonal moments")

    def __post_init__(self) -> None:
        check_declared(self)

    @classmethod
    def matched(cls, kind: str, small_batch: int, large_batch: int, *,
                num_examples: int | None = None, **settings: Any) -> NoiseSpec:
        """The spec whose s is :func:`matched_injection_scale` ``(b, B, num_examples=N)``."""
        s = matched_injection_scale(small_batch, large_batch, num_examples=num_examples)
        return cls(kind, s, matched_small_batch=small_batch, **settings)

    def at_scale(self, injection_scale: float) -> NoiseSpec:
        """This spec at another scale (no longer matched to a small batch)."""
        return replace(self, injection_scale=injection_scale, matched_small_batch=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def optimizer_factory(self, *, lr: float, momentum: float = 0.0,
                          weight_decay: float = 0.0, seed: int = 0
                          ) -> Callable[[nn.Module], NoisySGD]:
        """``model -> NoisySGD`` with this noise (:func:`noisy_sgd_factory`)."""
        return noisy_sgd_factory(self, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                 seed=seed)


def noisy_sgd_factory(spec: NoiseSpec | None, *, lr: float, momentum: float = 0.0,
                      weight_decay: float = 0.0, seed: int = 0
                      ) -> Callable[[nn.Module], NoisySGD]:
    """``model -> NoisySGD`` for :func:`sgdnoise.train.train`: learning rate, momentum and
    weight decay as given, the cross-entropy criterion, chunks of
    :data:`DEFAULT_CHUNK_SIZE` for exact moments, the noise generator seeded with ``seed``
    and the noise of ``spec`` (None: kind "none", i.e. ``torch.optim.SGD``). The one
    factory of the sweep and chapter 9."""

    def factory(model: nn.Module) -> NoisySGD:
        if spec is None:
            return NoisySGD(model.parameters(), lr, momentum=momentum,
                            weight_decay=weight_decay, seed=seed)
        return NoisySGD(
            model.parameters(), lr, kind=spec.kind, model=model, loss_fn=F.cross_entropy,
            num_samples=spec.num_samples, momentum=momentum, weight_decay=weight_decay,
            lanczos_steps=spec.lanczos_steps, chunk_size=DEFAULT_CHUNK_SIZE,
            moment_probes=spec.moment_probes, seed=seed, injection_scale=spec.injection_scale)

    return factory
