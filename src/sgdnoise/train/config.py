"""What determines a training run: :class:`TrainConfig` (every field declared once, with
:func:`sgdnoise.params.param`), the engine path (:func:`engine_paths`) and the schedule
arithmetic of steps, evaluations and learning rates."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sgdnoise.curvature import SHARPNESS_BN_MODES
from sgdnoise.models import MODEL_NAMES, NORMS
from sgdnoise.params import ParamError, check_declared, declared, param
from sgdnoise.validate import check_choice, check_positive, check_positive_int

__all__ = [
    "ENGINE_PATHS",
    "LIMITS",
    "LR_SCALINGS",
    "SCHEDULES",
    "SHARPNESS_BN_MODES",
    "EnginePaths",
    "TrainConfig",
    "engine_paths",
    "eval_steps",
    "lr_batch_ratio",
    "lr_multiplier",
    "scaled_lr",
    "steps_per_epoch",
    "total_steps",
    "warmup_length",
]

LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("constant", "cosine")
ENGINE_PATHS = ("fast", "eager")

# Upper bounds (inclusive) of the numeric fields, stated in the errors: far beyond any run
# of the study (ResNet-34 width 64, 50,000 images, batches up to 32,768, hundreds of
# epochs), so that a typo such as ``epochs: 10**15`` is refused instead of training until
# killed. Seeds fit the 32 bits every generator accepts. ``lr`` and ``weight_decay`` need
# only be finite: divergence studies use rates as large as 1e200.
_EXAMPLES = 10**7
_STEPS = 10**9
_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """Everything that determines a training run (with the data and the seed).

    - lr: base learning rate η₀. The rate used at step t is ``η₀ · s(B) · w(t) · c(t)`` with the
      batch-size scaling ``s(B)`` = 1 (``lr_scaling="none"``), ``B / base_batch_size``
      (``"linear"``) or ``sqrt(B / base_batch_size)`` (``"sqrt"``); the linear warm-up
      ``w(t) = min(1, (t + 1) / T_w)`` over ``T_w = warmup_epochs · steps_per_epoch`` steps
      (``T_w = warmup_steps`` when that is set: the same ramp in updates for every ``B``);
      and the schedule ``c(t)`` = 1 (``"constant"``) or ``(1 + cos(π t / T)) / 2`` over the
      ``T`` total steps (``"cosine"``, decays to 0).
    - epochs / max_steps: the run's length, ``T = epochs · steps_per_epoch``, or ``max_steps``
      steps when set (it overrides ``epochs``; used for equal-step comparisons).
    - micro_batch_size: None, or the largest number of examples pushed through the network at
      once; larger batches are accumulated from micro-batches (see :mod:`sgdnoise.train`).
    - ghost_batch_size: None, or the BatchNorm batch ``g`` (``norm="batch"`` only): statistics
      over fixed groups of ``g`` examples (B <= g: the whole batch).
    - amp: bf16 autocast on CUDA (ignored on CPU unless ``train(..., cuda_paths_on_cpu=True)``).
    - channels_last: channels-last memory format for image models (on CPU only for networks
      whose convolutions all have >= 16 channels).
    - eval_points: None (evaluate after every epoch), the number ``K >= 2`` of log-spaced
      evaluation steps in ``[1, T]`` (step 0 is added when ``eval_at_start``), or 0 (never
      evaluate: no history, no checkpoints; ``eval_at_start`` is ignored).
    - eval_train_n / eval_subset_seed: the training loss/error are measured on a stratified
      subset of this many clean training examples drawn with this seed (None: all).
    - bn_recompute: recompute BatchNorm running statistics before each evaluation.
    - sharpness_every / sharpness_n / sharpness_iters: λ_max of the training-loss Hessian on
      ``sharpness_n`` fixed training examples every ``sharpness_every`` steps (None: only
      at the end, when ``sharpness_n > 0``), with ``sharpness_iters`` Lanczos steps.
    - sharpness_bn_mode: the objective whose Hessian is measured: ``"eval"`` (BatchNorm with
      its running statistics, recomputed first when ``bn_recompute``) or ``"train"`` (the
      training-mode objective: BatchNorm statistics of fixed groups of the sharpness
      examples, see :func:`sgdnoise.train.sharpness_chunking`).
    - device_rng: draw each epoch's permutation and augmentation on the device (None: on
      CUDA only; the CPU reference draws them from CPU generators).
    - divergence_check_every: check the losses kept on the device for NaN/inf every this
      many steps (and at every evaluation); 1 stops right after the first bad step.
    - warmup_steps: None (use ``warmup_epochs``) or the warm-up length in steps (0: none).

    Every field is declared with :func:`sgdnoise.params.param` (its bounds are in the
    errors); :meth:`validate` checks them without changing any value, so :meth:`to_dict`
    gives back exactly what was set. The defaults of the fields added last
    (``warmup_steps``, ``sharpness_bn_mode``) give the behaviour from before they existed,
    so older records and checkpoints stay valid.
    """

    model: str = param(default="resnet34", choices=MODEL_NAMES, doc="network")
    width: int | None = param(default=16, low=1, high=65_536, doc="network width")
    norm: str = param(default="batch", choices=NORMS, doc="normalisation layers")
    batch_size: int = param(default=128, low=1, high=_EXAMPLES, doc="batch size B")
    epochs: int = param(default=10, low=1, high=100_000, doc="epochs of the run")
    lr: float = param(default=0.1, low=0.0, low_open=True, high=math.inf,
                      doc="base learning rate")
    momentum: float = param(default=0.0, low=0.0, high=1.0, high_open=True, doc="momentum")
    weight_decay: float = param(default=0.0, low=0.0, high=math.inf, doc="weight decay")
    nesterov: bool = param(default=False, doc="Nesterov momentum")
    lr_scaling: str = param(default="none", choices=LR_SCALINGS, doc="batch-size rule of η")
    base_batch_size: int = param(default=128, low=1, high=_EXAMPLES,
                                 doc="batch size of the base rate")
    warmup_epochs: float = param(default=0.0, low=0.0, high=100_000, doc="warm-up epochs")
    schedule: str = param(default="constant", choices=SCHEDULES, doc="schedule of η")
    augment: bool = param(default=True, doc="random crop and flip of images")
    seed: int = param(default=0, low=0, high=_SEED, doc="seed of model and data order")
    device: str = param(default="cpu", doc="torch device")
    micro_batch_size: int | None = param(default=None, low=1, high=_EXAMPLES,
                                         doc="largest forward pass")
    eval_batch_size: int = param(default=1000, low=1, high=_EXAMPLES,
                                 doc="examples per evaluation pass")
    channels_last: bool = param(default=True, doc="channels-last images")
    amp: bool = param(default=True, doc="bf16 autocast on CUDA")
    drop_last: bool = param(default=False, doc="drop an epoch's last partial batch")
    eval_at_start: bool = param(default=True, doc="evaluate at step 0")
    divergence_check_every: int = param(default=50, low=1, high=_STEPS,
                                        doc="steps between checks for a non-finite loss")
    max_steps: int | None = param(default=None, low=1, high=_STEPS, doc="steps of the run")
    ghost_batch_size: int | None = param(default=None, low=1, high=_EXAMPLES,
                                         doc="BatchNorm group size")
    eval_points: int | None = param(default=None, low=0, high=100_000,
                                    doc="log-spaced evaluations (0: none)")
    eval_train_n: int | None = param(default=None, low=1, high=10**8,
                                     doc="training examples evaluated")
    eval_subset_seed: int = param(default=0, low=0, high=_SEED, doc="seed of those examples")
    bn_recompute: bool = param(default=False, doc="recompute BatchNorm statistics")
    sharpness_every: int | None = param(default=None, low=1, high=_STEPS,
                                        doc="steps between sharpness measurements")
    sharpness_n: int = param(default=0, low=0, high=_EXAMPLES, doc="examples of the sharpness")
    sharpness_iters: int = param(default=20, low=1, high=10_000,
                                 doc="Lanczos steps of the sharpness")
    device_rng: bool | None = param(default=None, doc="draw data order on the device")
    warmup_steps: int | None = param(default=None, low=0, high=_STEPS, doc="warm-up steps")
    sharpness_bn_mode: str = param(default="eval", choices=SHARPNESS_BN_MODES,
                                   doc="BatchNorm mode of the sharpness objective")

    def validate(self) -> TrainConfig:
        """Raise :class:`sgdnoise.params.ParamError` (a ValueError carrying ``field`` and
        ``value``; its message starts with the field's name and states what is allowed) for
        the first bad field, then for the first broken cross-field rule; return self."""
        check_declared(self, subject="{name}")
        self._require(self.eval_points != 1, "eval_points",
                      "must be None, 0 (no evaluation) or an integer >= 2")
        self._require(not (self.nesterov and self.momentum == 0), "nesterov",
                      "needs momentum > 0 (momentum is 0)")
        g, m = self.ghost_batch_size, self.micro_batch_size
        self._require(g is None or self.norm == "batch", "ghost_batch_size",
                      f"needs norm='batch' (norm is {self.norm!r})")
        self._require(g is None or m is None or m >= self.batch_size or m % g == 0,
                      "micro_batch_size", f"must be a multiple of ghost_batch_size={g} (else "
                      "micro-batching would change the BatchNorm groups)")
        self._require(self.sharpness_every is None or self.sharpness_n > 0,
                      "sharpness_every", "needs sharpness_n > 0 (sharpness_n is 0)")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ParamError("device", self.device, "must name a torch device",
                             f"device must name a torch device, got {self.device!r}") from None
        return self

    def _require(self, ok: bool, name: str, rule: str) -> None:
        if not ok:
            value = getattr(self, name)
            raise ParamError(name, value, rule, f"{name}={value!r} {rule}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Upper bound of every bounded numeric field of :class:`TrainConfig`, by name (from the
#: declarations; stated in the errors).
LIMITS: dict[str, float] = {name: spec.high for name, spec in declared(TrainConfig).items()
                            if spec.high is not None and math.isfinite(spec.high)
                            and spec.kind in ("int", "float") and name != "momentum"}


@dataclass(frozen=True)
class EnginePaths:
    """How a run is computed; the two paths differ in rounding and speed, not in the
    mathematics (same initialisation, batches, augmentation and update rule).

    - name: ``"fast"`` or ``"eager"`` (see :func:`engine_paths`).
    - autocast: forward passes (training, evaluation, BatchNorm recompute) under bf16
      autocast, logits upcast to float32 for the loss.
    - channels_last: images and model in channels-last memory format (on the CPU only for
      networks whose convolutions all have >= 16 channels).
    - optimizer: the default SGD's implementation: ``"fused"`` (one kernel for the update),
      ``"single"`` (one tensor at a time, ``foreach=False``) or ``"default"`` (torch's
      choice; one tensor at a time on the CPU).
    - device_rng: permutations and augmentation drawn per epoch on the device.
    """

    name: str
    autocast: bool
    channels_last: bool
    optimizer: str
    device_rng: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_paths(cfg: TrainConfig, engine: str = "fast", *,
                 cuda_paths_on_cpu: bool = False) -> EnginePaths:
    """The paths a run of ``cfg`` takes with ``engine`` (one of :data:`ENGINE_PATHS`).

    ``"fast"`` on CUDA: bf16 autocast when ``cfg.amp``, channels-last when
    ``cfg.channels_last``, fused SGD, device RNG unless ``cfg.device_rng`` is false. On the
    CPU: no autocast, channels-last as configured, torch's default SGD, CPU generators
    unless ``cfg.device_rng`` (the tested reference). With ``cuda_paths_on_cpu`` the CPU
    makes the CUDA choices (bf16 autocast on the CPU, fused SGD, device RNG), so a CPU test
    executes every line a GPU run executes. ``"eager"``: float32, contiguous tensors, SGD
    one tensor at a time, and the fast path's RNG placement, so both paths draw the same
    batches (the data order belongs to the seed, not to the path)."""
    check_choice("engine", engine, ENGINE_PATHS)
    cuda = torch.device(cfg.device).type == "cuda" or bool(cuda_paths_on_cpu)
    rng = cfg.device_rng if cfg.device_rng is not None else cuda
    if engine == "eager":
        return EnginePaths("eager", False, False, "single", rng)
    return EnginePaths("fast", cfg.amp and cuda, cfg.channels_last,
                       "fused" if cuda else "default", rng)


# --------------------------------------------------------------------------- schedule


def steps_per_epoch(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """Number of steps in one epoch over ``n`` examples: ``ceil(n/B)`` or ``floor(n/B)``."""
    n = check_positive_int("n", n)
    batch_size = check_positive_int("batch_size", batch_size)
    if drop_last:
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} > n={n} leaves no step with drop_last")
        return n // batch_size
    return -(-n // batch_size)


def total_steps(cfg: TrainConfig, n: int) -> int:
    """``T``: ``cfg.max_steps`` when set, else ``cfg.epochs · steps_per_epoch(n, B)``."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    return cfg.epochs * steps_per_epoch(n, cfg.batch_size, drop_last=cfg.drop_last)


def eval_steps(total: int, points: int | None, *, steps_per_ep: int = 1,
               at_start: bool = True) -> list[int]:
    """The evaluation steps of a run of ``total`` steps, ascending, without repeats.

    ``points = K``: ``round(total^(i/(K−1)))`` for ``i = 0..K−1`` (log-spaced from step 1 to
    step ``total``; fewer when rounding makes two equal); ``points = None``: every epoch end
    ``steps_per_ep, 2·steps_per_ep, …`` and ``total``. Step 0 comes first when ``at_start``.
    ``points = 0``: no evaluation, ``[]``.
    """
    total = check_positive_int("total", total)
    if points == 0:
        return []
    if points is None:
        steps = set(range(steps_per_ep, total + 1, check_positive_int("steps_per_ep",
                                                                      steps_per_ep)))
    else:
        k = int(points)
        if k < 2:
            raise ValueError(f"points must be None, 0 or >= 2, got {points!r}")
        steps = {min(total, max(1, round(total ** (i / (k - 1))))) for i in range(k)}
    steps.add(total)
    if at_start:
        steps.add(0)
    return sorted(steps)


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """η(B) = η₀ · s, s = 1 ("none"), B/B₀ ("linear": keeps η/B, the SDE's diffusion
    coefficient), or √(B/B₀) ("sqrt": keeps η²/B, the covariance η²D/B of one update)."""
    base_lr = check_positive("base_lr", base_lr)
    b = check_positive_int("batch_size", batch_size)
    b0 = check_positive_int("base_batch_size", base_batch_size)
    rule = check_choice("rule", rule, LR_SCALINGS)
    if rule == "linear":
        return base_lr * b / b0
    if rule == "sqrt":
        return base_lr * math.sqrt(b / b0)
    return base_lr


def lr_batch_ratio(lr: float, batch_size: int) -> float:
    """η/B: the diffusion coefficient of the SDE dθ = −∇L dt + √(η/B · D) dW (the
    "temperature" of Smith & Le and Jastrzębski et al.). Linear scaling keeps it fixed."""
    lr = check_positive("lr", lr)
    b = check_positive_int("batch_size", batch_size)
    return lr / b


def warmup_length(cfg: TrainConfig, steps_per_ep: int) -> float:
    """``T_w``: ``cfg.warmup_steps`` when set, else ``cfg.warmup_epochs · steps_per_ep``."""
    if cfg.warmup_steps is not None:
        return float(cfg.warmup_steps)
    return cfg.warmup_epochs * steps_per_ep


def lr_multiplier(cfg: TrainConfig, step: int, total_steps: int, steps_per_ep: int) -> float:
    """``s(B) · w(step) · c(step)`` of :class:`TrainConfig` (multiplies the base lr)."""
    scale = scaled_lr(1.0, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling)
    warm_steps = warmup_length(cfg, steps_per_ep)
    warm = min(1.0, (step + 1) / warm_steps) if warm_steps > 0 else 1.0
    if cfg.schedule == "cosine":
        sched = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        sched = 1.0
    return scale * warm * sched
