""":class:`NoisySGD`: ``torch.optim.SGD`` whose gradients get injected noise before each
step (the way Opacus' optimizer wraps one: the noise is added to ``p.grad``, the update is
SGD's own)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdnoise.grads import trainable_parameters
from sgdnoise.spectral import standard_normal
from sgdnoise.validate import check_choice, check_positive, check_positive_int

from .samplers import DEFAULT_LANCZOS_STEPS, KINDS, check_batch, hessian_noise_factor, sample_noise

__all__ = ["NoiseStats", "NoisySGD"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class NoiseStats:
    """Book-keeping of a :class:`NoisySGD`: steps taken, seconds spent drawing noise (host
    time: on a GPU the draw's kernels may still run after it), and the last draw, whose
    injected norm ‖√s ξ‖ :attr:`last_noise_norm` reads on demand (the one host transfer)."""

    steps: int = 0
    noise_seconds: float = 0.0
    last_draw: Tensor | None = None
    last_amplitudes: tuple[tuple[int, int, float], ...] = ()

    @property
    def last_noise_norm(self) -> float:
        """‖√s ξ‖ of the last step's noise (0 when it injected none)."""
        if self.last_draw is None:
            return 0.0
        sq = sum(amp**2 * self.last_draw[lo:lo + n].pow(2).sum()
                 for lo, n, amp in self.last_amplitudes)
        return math.sqrt(float(sq))


class NoisySGD(torch.optim.SGD):
    """SGD (with optional momentum and weight decay) on gradients with injected noise:

        g ← g + √s ξ,   then torch.optim.SGD's step on g
                        (d = g + λ θ, b ← μ b + d (b = d at the first step), θ ← θ − η b),

    with ξ ~ N(0, Σ_kind) drawn by :func:`sgdnoise.noise.sample_noise` on the batch given to
    :meth:`observe_batch` (see :mod:`sgdnoise.noise` for Σ_kind). The injection scale s is
    independent of ``lr`` η and of the batch size; ``matched_injection_scale(b, B)`` =
    1/b − 1/B makes a batch-B step imitate the gradient covariance of a batch-b step when
    Σ_kind ≈ D. With kind="none" (or s = 0) this is ``torch.optim.SGD``. The step reads
    nothing back from the device: the noise is added to each ``p.grad`` in place.

    Args:

        - params: the model's trainable parameters (all of them, for kinds other than "none";
          param groups may split them and carry their own lr / injection_scale).
        - lr: η > 0.
        - kind: one of ``KINDS``.
        - injection_scale: s >= 0, the variance multiplier of the injected noise (default 1).
        - model, loss_fn: the network and batch criterion the noise is computed from (required
          unless kind="none").
        - num_samples: M >= 2, batch examples used per draw (``None``: the whole batch).
        - momentum: μ in [0, 1); weight_decay: λ >= 0.
        - lanczos_steps: k for "hessian" (unused by the other kinds).
        - basis_refresh: r for "hessian": 1 (default) draws every step's noise by k fresh
          Lanczos steps from its own start (f(H)z); r > 1 computes a Krylov factor R
          (:func:`sgdnoise.noise.hessian_noise_factor`, covariance V T₊ Vᵀ) on the batch of
          every r-th step and draws ξ = R w in between: about 1/r of the cost, with a basis
          up to r − 1 steps old. Its noise is NOT H₊-shaped: R Rᵀ has rank <= k and misses H₊
          by ``‖R Rᵀ − H₊‖_F / ‖H₊‖_F`` ≈ 0.99 at k = 5 (0.98 at k = 8; measured on the
          benchmark's small MLP), against 0.45 for fresh draws; it injects noise only along
          the top few Hessian directions. Kept for that use, not as a cheap "hessian" kind.
        - chunk_size: per-example gradient chunk for "isotropic" / "diag_fisher" (exact mode).
        - moment_probes: r probe draws estimating diag(D_M) for "isotropic" / "diag_fisher"
          (``None``: exact per-example gradients).
        - seed: seeds the optimizer's own generator (on the parameters' device).

    Call ``observe_batch(inputs, targets)`` before each ``step()``; the training engine does
    this automatically. The batch is consumed by the step, so a step without a fresh batch
    raises RuntimeError. The model must keep the examples of a batch independent: BatchNorm
    in train mode is refused at the first noisy step (ValueError naming the layer).

    In an ordinary loop (float64, 8 examples, noise from M = 4 of them):

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(3, 2).double()
    >>> opt = NoisySGD(model.parameters(), lr=0.1, kind="subsampled", injection_scale=0.5,
    ...                model=model, loss_fn=F.cross_entropy, num_samples=4, seed=0)
    >>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 2
    >>> opt.zero_grad()
    >>> F.cross_entropy(model(x), y).backward()
    >>> opt.observe_batch(x, y)
    >>> opt.step()
    >>> opt.stats.steps, opt.stats.last_noise_norm > 0
    (1, True)
    >>> NoisySGD(model.parameters(), lr=0.1, kind="subsampled")
    Traceback (most recent call last):
    ...
    ValueError: model must be the nn.Module for kind 'subsampled', got None
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        *,
        kind: str = "none",
        injection_scale: float = 1.0,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
        num_samples: int | None = 64,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
        chunk_size: int | None = None,
        moment_probes: int | None = 4,
        seed: int = 0,
        basis_refresh: int = 1,
    ) -> None:
        self.kind = check_choice("kind", kind, KINDS)
        injection_scale = check_positive("injection_scale", injection_scale, allow_zero=True)
        if check_positive("momentum", momentum, allow_zero=True) >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if num_samples is not None and check_positive_int("num_samples", num_samples) < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        self.lanczos_steps = check_positive_int("lanczos_steps", lanczos_steps)
        self.basis_refresh = check_positive_int("basis_refresh", basis_refresh)
        self.chunk_size = None if chunk_size is None else check_positive_int("chunk_size",
                                                                             chunk_size)
        self.moment_probes = (None if moment_probes is None
                              else check_positive_int("moment_probes", moment_probes))
        super().__init__(params, lr=check_positive("lr", lr), momentum=momentum,
                         weight_decay=check_positive("weight_decay", weight_decay,
                                                     allow_zero=True))
        self.defaults["injection_scale"] = injection_scale
        for group in self.param_groups:
            group.setdefault("injection_scale", injection_scale)
        self.model, self.loss_fn, self.num_samples = model, loss_fn, num_samples
        self.seed = int(seed)
        self.stats = NoiseStats()
        self._batch: tuple[Tensor, Tensor] | None = None
        self._generator: torch.Generator | None = None
        self._factor: Tensor | None = None
        self._offsets = self._parameter_offsets() if kind != "none" else {}

    def _parameter_offsets(self) -> dict[int, tuple[int, int]]:
        """``id(p) -> (offset, numel)`` of each parameter in the flat noise vector (the
        model's trainable parameters in order); they must be exactly this optimizer's."""
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model must be the nn.Module for kind {self.kind!r}, got "
                             f"{self.model!r}")
        if self.kind != "true_fisher" and not callable(self.loss_fn):
            raise ValueError(f"loss_fn must be callable for kind {self.kind!r}, got "
                             f"{self.loss_fn!r}")
        offsets, offset = {}, 0
        for p in trainable_parameters(self.model):
            offsets[id(p)] = (offset, p.numel())
            offset += p.numel()
        if {id(p) for g in self.param_groups for p in g["params"]} != set(offsets):
            raise ValueError("params must be exactly the model's trainable parameters for kind "
                             f"{self.kind!r} (the noise vector lives on all of them)")
        return offsets

    def observe_batch(self, inputs: Tensor, targets: Tensor) -> None:
        """Remember the current batch; the next ``step()`` draws its noise from it."""
        check_batch(inputs, targets)
        self._batch = (inputs.detach(), targets.detach())

    def state_dict(self) -> dict:
        """SGD's state plus what the noise needs to continue exactly: the noise generator's
        state, the step count and the reused Krylov factor (``basis_refresh``). A run resumed
        from a checkpoint then draws the noise an uninterrupted run draws."""
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
        """Inverse of :meth:`state_dict`. A plain ``torch.optim`` state dict also loads (the
        noise then restarts from ``seed``), and so does one whose groups lack some of SGD's
        settings (written before NoisySGD was built on ``torch.optim.SGD``: they take this
        optimizer's defaults, e.g. ``dampening`` 0)."""
        state = dict(state_dict)
        noise = state.pop("noise", None)
        super().load_state_dict(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
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
        """ξ: (P,) for this step from the observed batch (None when nothing is injected)."""
        if self.kind == "none" or all(g["injection_scale"] == 0 for g in self.param_groups):
            self._batch = None
            return None
        if self._batch is None:
            raise RuntimeError(
                f"NoisySGD(kind={self.kind!r}) has no batch to draw noise from: call "
                "optimizer.observe_batch(inputs, targets) before every step() (the training "
                "engine does this for you)")
        (inputs, targets), self._batch = self._batch, None
        start = time.perf_counter()
        gen = self._gen(next(iter(self.model.parameters())).device)
        if self.kind == "hessian" and self.basis_refresh > 1:
            xi = self._from_factor(inputs, targets, gen)
        else:
            xi = sample_noise(self.kind, self.model, self.loss_fn, inputs, targets,
                              num_samples=self.num_samples, generator=gen,
                              lanczos_steps=self.lanczos_steps, chunk_size=self.chunk_size,
                              moment_probes=self.moment_probes)
        self.stats.noise_seconds += time.perf_counter() - start
        return xi

    def _from_factor(self, inputs: Tensor, targets: Tensor, gen: torch.Generator) -> Tensor:
        """ξ = R w with the Krylov factor R of the last refresh (recomputed every
        ``basis_refresh`` steps)."""
        if self._factor is None or self.stats.steps % self.basis_refresh == 0:
            self._factor = hessian_noise_factor(
                self.model, self.loss_fn, inputs, targets, num_samples=self.num_samples,
                lanczos_steps=self.lanczos_steps, generator=gen)
        w = standard_normal((self._factor.shape[1],), gen, dtype=self._factor.dtype,
                            device=self._factor.device)
        return self._factor @ w

    @torch.no_grad()
    def _perturb(self, xi: Tensor) -> None:
        """``p.grad += √s ξ_p`` for every parameter of a group with s > 0 (a parameter
        without a gradient gets the noise alone)."""
        amplitudes = []
        for group in self.param_groups:
            amp = math.sqrt(group["injection_scale"])
            if amp == 0:
                continue
            for p in group["params"]:
                lo, n = self._offsets[id(p)]
                noise = xi[lo:lo + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.add_(noise, alpha=amp)
                amplitudes.append((lo, n, amp))
        self.stats.last_draw, self.stats.last_amplitudes = xi, tuple(amplitudes)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Draw this step's noise, add it to the gradients, take SGD's step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        xi = self._draw()
        if xi is not None:
            self._perturb(xi)
        else:
            self.stats.last_draw = None
        super().step()
        self.stats.steps += 1
        return loss
