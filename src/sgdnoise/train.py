"""The training engine: mini-batch SGD on a data set held as one tensor on the device.

One call of :func:`train` runs ``T`` steps of mini-batch SGD on the cross-entropy loss
(``T = cfg.max_steps``, or ``cfg.epochs`` epochs of steps) and evaluates the model on a
schedule of steps. Design points:

* **Data on the device.** ``train_x: (N, C, H, W)`` images (uint8 pixels, or floats already
  on the network's scale) or ``(N, D)`` float features is moved to ``cfg.device`` once. Each
  step gathers its batch by index, augments images there with one vectorised gather (random
  crop of the 4-pixel zero-padded image and a horizontal flip, see :func:`crop_flip`; feature
  vectors are never augmented), converts uint8 to normalised floats and switches images to
  ``channels_last``. No per-example Python loop, no DataLoader workers.
* **Exact batch semantics.** An epoch is ``ceil(N / B)`` steps over a fresh permutation
  (``floor(N / B)`` with ``drop_last``: every step then has exactly ``B`` examples). The loss
  of a step is the mean cross entropy over its ``B`` examples,
  ``L_B(θ) = (1/B) Σ_{i∈batch} ℓ_i(θ)``, and the step is ``θ ← θ − η_t ∇L_B(θ)`` (plus
  momentum / weight decay when configured). ``epoch = step / steps_per_epoch`` is recorded
  as a (fractional) progress measure.
* **Micro-batches.** With ``micro_batch_size = m < B`` the batch is cut into ``ceil(B / m)``
  chunks; chunk ``k`` contributes ``∇ (1/B) Σ_{i∈chunk k} ℓ_i`` and the gradients add up, so
  the accumulated gradient is exactly ``∇L_B`` for any network whose forward pass treats
  examples independently (``norm="none"`` or ``"group"``). **BatchNorm** normalises with the
  statistics of what it is given: with ``ghost_batch_size = g`` the BatchNorm layers
  (:class:`sgdnoise.models.GhostBatchNorm2d`) normalise fixed groups of ``g`` examples, and
  a micro-batch size that is a multiple of ``g`` (checked) leaves those groups unchanged: the
  BN batch is ``g`` for every ``B >= g`` whatever the micro-batching. Without a ghost size a
  micro-batched BatchNorm network sees micro-batch statistics.
* **Evaluation schedule.** ``eval_points = None``: after every epoch (and at step 0 with
  ``eval_at_start``); ``eval_points = K``: at ``K`` log-spaced steps in ``[1, T]`` (see
  :func:`eval_steps`) plus step 0; ``eval_points = 0``: never (the history stays empty and
  nothing is evaluated; hooks measure what they need). The training loss/error are measured
  on a fixed, clean (un-augmented), class-stratified subset of ``eval_train_n`` examples (all
  when None), the test loss/error on the whole test set (None in the records when the data
  has no test set). With ``bn_recompute`` the BatchNorm running statistics are recomputed
  before every evaluation (reset, then the cumulative average over clean training batches
  in train mode, see :func:`recompute_bn_stats`).
* **Sharpness.** Every ``sharpness_every`` steps (from step 0) and at the end when
  ``sharpness_n > 0``: ``λ_max`` of the Hessian of the mean training loss on ``sharpness_n``
  fixed clean training examples, by Lanczos on Hessian-vector products (:func:`sharpness`),
  recorded with ``η_t``, ``2/η_t`` and the objective measured: BatchNorm in eval mode after
  the recompute (``sharpness_bn_mode="eval"``), or the training-mode objective with
  BatchNorm statistics of fixed groups of those examples (``"train"``, see
  :func:`sharpness_chunking`).
* **Engine paths.** ``engine="fast"`` (default) takes the fast implementation where the
  device has one (bf16 autocast, channels-last, fused SGD, device RNG on CUDA);
  ``"eager"`` computes the same run in float32 with contiguous tensors and SGD one tensor
  at a time (:func:`engine_paths`). ``cuda_paths_on_cpu`` makes the CPU take the CUDA
  choices, so that the tests execute every line a GPU run executes.
* **No per-step host synchronisation.** Each step's loss sum stays on the device: it is
  kept for the divergence check (and added to the running loss when evaluations read it).
  The kept losses are checked every ``divergence_check_every`` steps, at every evaluation and
  at the end (a NaN/inf loss stops the run with status ``"diverged"`` and the first bad
  step). With ``device_rng`` (default on CUDA) each epoch's permutation and augmentation
  parameters are drawn on the device in one call; the CPU path (the tested reference)
  draws them from CPU generators, the augmentation per step.
* **Repeatable.** The model is initialised from ``cfg.seed`` (without touching the global
  generator's state afterwards); shuffling and augmentation draw from two explicit
  generators, seeded ``1_000_003·seed + 17`` (shuffle: one ``torch.randperm(N)`` per epoch,
  whose consecutive slices of ``B`` are the epoch's batches) and ``1_000_003·seed + 29``
  (augmentation), on the CPU unless ``device_rng``. Their states, with the current epoch's
  permutation, are part of the checkpoint (written after every evaluation), so the same
  config and seed give the same numbers on CPU, and a resumed run ends with exactly the
  numbers of an uninterrupted one.
* **Hooks.** ``hooks``: objects with ``on_step(state: StepState) -> bool | None`` (after
  every step; a true return stops the run with status ``"stopped"`` after a last
  evaluation, unless ``eval_points = 0``) and/or ``on_eval(record)``. If the optimizer has
  ``observe_batch(inputs, targets)``, it is called with the current (augmented, local)
  batch right before ``optimizer.step()``.
* **Data parallel.** Under ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU)
  the model is wrapped in ``DistributedDataParallel``; every rank draws the same global
  batch, takes its share (``tensor_split`` into ``world_size = K`` parts) and back-propagates
  ``(K/B) Σ_{i∈its share} ℓ_i``, so DDP's gradient average is ``∇ (1/B) Σ_{i∈batch} ℓ_i``,
  the single-process gradient; micro-batches accumulate under ``no_sync`` with one
  all-reduce per step (see :mod:`sgdnoise.distributed`). Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .grads import flat_params, flatten_like, split_like, trainable_parameters
from .validate import (
    check_choice,
    check_finite,
    check_output_dir,
    check_positive,
    check_positive_int,
)

__all__ = [
    "ENGINE_PATHS",
    "LR_SCALINGS",
    "SCHEDULES",
    "SHARPNESS_BN_MODES",
    "EnginePaths",
    "PlainSGD",
    "StepBudget",
    "StepState",
    "TrainConfig",
    "TrainHook",
    "TrainResult",
    "crop_flip",
    "engine_paths",
    "eval_steps",
    "evaluate",
    "lr_batch_ratio",
    "lr_multiplier",
    "random_crop_flip_params",
    "recompute_bn_stats",
    "scaled_lr",
    "sharpness",
    "sharpness_chunking",
    "steps_per_epoch",
    "total_steps",
    "train",
    "warmup_length",
]

LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("constant", "cosine")
SHARPNESS_BN_MODES = ("eval", "train")
ENGINE_PATHS = ("fast", "eager")
# the largest BatchNorm group of a train-mode sharpness estimate: one chunk of a
# float32 double backward, as the eval-mode estimate's chunks
SHARPNESS_MAX_BN_BATCH = 512

# CIFAR-10 training-set channel statistics on the [0, 1] scale (the official values); used to
# normalise uint8 pixels when sgdnoise.data is not importable.
_FALLBACK_MEAN = (0.4914, 0.4822, 0.4465)
_FALLBACK_STD = (0.2470, 0.2435, 0.2616)

CHECKPOINT_FORMAT = "sgdnoise.train.checkpoint/2"

#: Upper bounds (inclusive) of TrainConfig's numeric fields, stated in the errors: far
#: beyond any run of the study (ResNet-34 width 64, 50,000 images, batches up to 32,768,
#: hundreds of epochs), so that a typo such as ``epochs: 10**15`` is refused instead of
#: training until killed. Seeds fit the 32 bits every generator accepts. ``lr`` and
#: ``weight_decay`` need only be finite: divergence studies use rates as large as 1e200.
LIMITS: dict[str, float] = {
    "batch_size": 10**7, "base_batch_size": 10**7, "micro_batch_size": 10**7,
    "ghost_batch_size": 10**7, "eval_batch_size": 10**7, "epochs": 100_000,
    "max_steps": 10**9, "width": 65_536, "eval_points": 100_000, "eval_train_n": 10**8,
    "sharpness_every": 10**9, "sharpness_n": 10**7, "sharpness_iters": 10_000,
    "divergence_check_every": 10**9, "seed": 2**32 - 1, "eval_subset_seed": 2**32 - 1,
    "warmup_epochs": 100_000,
}


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
      once; larger batches are accumulated from micro-batches (see the module docstring).
    - ghost_batch_size: None, or the BatchNorm batch ``g`` (``norm="batch"`` only): statistics
      over fixed groups of ``g`` examples (B <= g: the whole batch).
    - amp: bf16 autocast on CUDA (ignored on CPU unless ``train(..., cuda_paths_on_cpu=True)``).
    - channels_last: channels-last memory format for image models (on CPU only for networks
      whose convolutions all have >= 16 channels, see ``_channels_last_ok``).
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
      examples, see :func:`sharpness_chunking`).
    - device_rng: draw each epoch's permutation and augmentation on the device (None: on
      CUDA only; the CPU reference draws them from CPU generators).
    - divergence_check_every: check the losses kept on the device for NaN/inf every this
      many steps (and at every evaluation); 1 stops right after the first bad step.
    - warmup_steps: None (use ``warmup_epochs``) or the warm-up length in steps (0: none).

    The defaults of the fields added last (``warmup_steps``, ``sharpness_bn_mode``) give the
    behaviour from before they existed, so older records and checkpoints stay valid.
    """

    model: str = "resnet34"
    width: int | None = 16
    norm: str = "batch"
    batch_size: int = 128
    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    lr_scaling: str = "none"
    base_batch_size: int = 128
    warmup_epochs: float = 0.0
    schedule: str = "constant"
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    micro_batch_size: int | None = None
    eval_batch_size: int = 1000
    channels_last: bool = True
    amp: bool = True
    drop_last: bool = False
    eval_at_start: bool = True
    divergence_check_every: int = 50
    max_steps: int | None = None
    ghost_batch_size: int | None = None
    eval_points: int | None = None
    eval_train_n: int | None = None
    eval_subset_seed: int = 0
    bn_recompute: bool = False
    sharpness_every: int | None = None
    sharpness_n: int = 0
    sharpness_iters: int = 20
    device_rng: bool | None = None
    warmup_steps: int | None = None
    sharpness_bn_mode: str = "eval"

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad field, its value and what is allowed;
        return self."""
        check_positive_int("batch_size", self.batch_size, high=LIMITS["batch_size"])
        check_positive_int("epochs", self.epochs, high=LIMITS["epochs"])
        check_positive("lr", self.lr)
        check_positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        check_positive_int("base_batch_size", self.base_batch_size,
                           high=LIMITS["base_batch_size"])
        check_positive("warmup_epochs", self.warmup_epochs, allow_zero=True,
                       high=LIMITS["warmup_epochs"])
        ws = self.warmup_steps
        if ws is not None and (isinstance(ws, bool) or not isinstance(ws, int) or ws < 0
                               or ws > LIMITS["max_steps"]):
            raise ValueError(f"warmup_steps must be null or an integer in [0, "
                             f"{LIMITS['max_steps']}], got {ws!r}")
        check_choice("sharpness_bn_mode", self.sharpness_bn_mode, SHARPNESS_BN_MODES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("norm", self.norm, ("batch", "group", "none"))
        for name in ("width", "micro_batch_size", "max_steps", "ghost_batch_size",
                     "eval_train_n", "sharpness_every"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name), high=LIMITS[name])
        for name in ("eval_batch_size", "divergence_check_every", "sharpness_iters"):
            check_positive_int(name, getattr(self, name), high=LIMITS[name])
        for name in ("seed", "eval_subset_seed", "sharpness_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= LIMITS[name]:
                raise ValueError(f"{name} must be an integer >= 0 and <= {LIMITS[name]}, "
                                 f"got {v!r}")
        if self.eval_points is not None:
            ep = self.eval_points
            if (isinstance(ep, bool) or not isinstance(ep, int) or ep < 0 or ep == 1
                    or ep > LIMITS["eval_points"]):
                raise ValueError(f"eval_points must be None, 0 (no evaluation) or an integer "
                                 f">= 2 and <= {LIMITS['eval_points']}, got {ep!r}")
        for name in ("nesterov", "augment", "channels_last", "amp", "drop_last",
                     "eval_at_start", "bn_recompute"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.device_rng is not None and not isinstance(self.device_rng, bool):
            raise ValueError(f"device_rng must be true, false or null, got {self.device_rng!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        if self.ghost_batch_size is not None:
            if self.norm != "batch":
                raise ValueError(f"ghost_batch_size={self.ghost_batch_size} needs "
                                 f"norm='batch', got norm={self.norm!r}")
            m, g = self.micro_batch_size, self.ghost_batch_size
            if m is not None and m < self.batch_size and m % g != 0:
                raise ValueError(
                    f"micro_batch_size={m} must be a multiple of ghost_batch_size={g} (else "
                    "micro-batching would change the BatchNorm groups)")
        if self.sharpness_every is not None and self.sharpness_n == 0:
            raise ValueError(f"sharpness_every={self.sharpness_every} needs sharpness_n > 0, "
                             "got sharpness_n=0")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {self.device!r}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepState:
    """What a hook's ``on_step`` sees after a step. ``loss``: the step's mean training loss
    as a 0-dim tensor on the device (reading it forces a host synchronisation)."""

    step: int
    epoch: float
    lr: float
    batch_size: int
    loss: torch.Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer | PlainSGD


class TrainHook(Protocol):
    """A hook of :func:`train`; both methods are optional (looked up with ``getattr``)."""

    def on_step(self, state: StepState) -> bool | None:  # pragma: no cover - protocol
        """After every step; return True to stop the run."""

    def on_eval(self, record: dict[str, Any]) -> None:  # pragma: no cover - protocol
        """After every evaluation, with its record."""


class PlainSGD:
    """Plain SGD, ``θ ← θ − η ∇θ`` for every parameter with a gradient: the update of
    ``torch.optim.SGD`` without momentum or weight decay, to the bit
    (``p.add_(p.grad, alpha=-lr)``), with the part of the optimizer interface :func:`train`
    uses (``param_groups``, ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``).

    For small dense problems, where one step takes a fraction of a millisecond: it skips
    the per-call hooks and profiler records of ``torch.optim``, a quarter to a third of such
    a step on the CPU (see ``optimizer_factory`` of :func:`train`)."""

    def __init__(self, params: Any, lr: float) -> None:
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError("params must hold at least one tensor that requires grad, got none")
        self.param_groups: list[dict[str, Any]] = [{"params": params,
                                                    "lr": check_positive("lr", lr)}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self) -> None:
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The groups' settings (``lr``, and ``initial_lr`` once :func:`train` set it)."""
        return {"param_groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in self.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = state["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for group, saved in zip(self.param_groups, groups, strict=True):
            group.update(saved)


class StepBudget:
    """A :class:`TrainHook` that stops a run after ``steps`` optimizer steps (the run ends
    with status ``"stopped"``, or ``"finished"`` if it reaches its own end first)."""

    def __init__(self, steps: int) -> None:
        self.steps = check_positive_int("steps", steps)

    def on_step(self, state: StepState) -> bool:
        return state.step >= self.steps


@dataclass
class TrainResult:
    """What :func:`train` returns.

    - history: one dict per evaluation with ``step, epoch`` (= step / steps_per_epoch),
      ``examples_seen`` (= step · B), ``lr`` (η of the last step taken), ``train_loss,
      train_error`` (clean training subset), ``test_loss, test_error`` (None without a test
      set), ``param_distance`` (‖θ_t − θ_0‖₂ over the trainable parameters),
      ``running_loss`` (mean mini-batch loss on augmented data since the previous
      evaluation; None at step 0) and ``wall_time`` (seconds since the run started, summed
      over resumed segments).
    - sharpness: one dict per sharpness measurement: ``step, lr, lambda_max, two_over_lr``,
      ``bn_mode`` and ``bn_batch`` (the objective measured, see :func:`sharpness_chunking`).
    - status: "finished", "diverged" or "stopped" (a hook asked to stop).
    - extra: ``step_seconds`` (time in training steps, this segment), ``eval_seconds``,
      ``sharpness_seconds``, ``examples_trained`` (this segment), ``engine`` (the
      :class:`EnginePaths` taken, as a dict) and on CUDA ``peak_memory_gib``.
    """

    history: list[dict[str, Any]]
    status: str
    steps: int
    wall_time_s: float
    model: nn.Module
    diverged_at_step: int | None = None
    resumed_from_epoch: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sharpness: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int | None = None


@dataclass(frozen=True)
class EnginePaths:
    """How a run is computed; the two paths differ in rounding and speed, not in the
    mathematics (same initialisation, batches, augmentation and update rule).

    - name: ``"fast"`` or ``"eager"`` (see :func:`engine_paths`).
    - autocast: forward passes (training, evaluation, BatchNorm recompute) under bf16
      autocast, logits upcast to float32 for the loss.
    - channels_last: images and model in channels-last memory format (on the CPU only for
      networks whose convolutions all have >= 16 channels, see ``_channels_last_ok``).
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
    """η/B: the diffusion coefficient of the SDE dθ = −∇L dt + √(η/B · D) dW (the "temperature" of
    Smith & Le and Jastrzębski et al.). Linear scaling keeps it fixed."""
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


# --------------------------------------------------------------------------- augmentation


def random_crop_flip_params(
    n: int, generator: torch.Generator, *, padding: int = 4, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw crop offsets ``dy, dx ∈ {0..2·padding}`` (each ``(n,)`` int64) and flip flags
    ``(n,)`` bool for ``n`` images from ``generator``, on the generator's device."""
    dev = generator.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    if flip:
        fl = torch.randint(0, 2, (n,), generator=generator, device=dev).bool()
    else:
        fl = torch.zeros(n, dtype=torch.bool, device=dev)
    return dy, dx, fl


def crop_flip(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor,
    *,
    padding: int = 4,
    channels_last: bool = False,
) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a whole batch in one gather.

    ``x: (B, C, H, W)`` is zero-padded by ``padding`` pixels on each side; image b is the
    ``H×W`` window whose top-left corner is ``(dy[b], dx[b])`` in the padded image, mirrored
    left-right where ``flip[b]``:
    ``out[b, c, i, j] = pad(x)[b, c, dy[b] + i, dx[b] + j']`` with ``j' = W − 1 − j`` if
    flipped else ``j``. With ``channels_last`` the result has channels-last strides.
    """
    B, C, H, W = x.shape
    dev = x.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    xp = F.pad(x, (padding, padding, padding, padding))
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = dy[:, None] + ar_h[None, :]  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], (W - 1 - ar_w)[None, :], ar_w[None, :])
    bi = torch.arange(B, device=dev)
    if channels_last:
        # gather into (B, H, W, C) memory and view it as (B, C, H, W): channels-last strides
        ci = torch.arange(C, device=dev)
        out = xp[bi[:, None, None, None], ci[None, None, None, :], rows[:, :, None, None],
                 cols[:, None, :, None]]
        return out.permute(0, 3, 1, 2)
    ci = torch.arange(C, device=dev)
    return xp[bi[:, None, None, None], ci[None, :, None, None], rows[:, None, :, None],
              cols[:, None, None, :]]


class _Batcher:
    """Turns stored examples (uint8 pixels or floats) into network inputs on the device."""

    def __init__(self, x: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> None:
        self.is_uint8 = x.dtype == torch.uint8
        self.image = x.ndim == 4
        self.dtype = dtype
        self.channels_last = channels_last and self.image
        if self.is_uint8:
            try:
                from sgdnoise.data import CIFAR10_MEAN, CIFAR10_STD

                mean, std = tuple(CIFAR10_MEAN), tuple(CIFAR10_STD)
            except (ImportError, AttributeError):
                mean, std = _FALLBACK_MEAN, _FALLBACK_STD
            c = x.shape[1]
            if len(mean) != c:
                mean, std = (0.5,) * c, (0.25,) * c
            shape = (1, c) + (1,) * (x.ndim - 2)
            # normalise in float32, or in float64 for a float64 model
            work = torch.promote_types(dtype, torch.float32)
            self.work = work
            self.mean = torch.tensor(mean, dtype=work, device=x.device).view(shape)
            self.inv_std = 1.0 / torch.tensor(std, dtype=work, device=x.device).view(shape)

    def convert(self, xb: torch.Tensor) -> torch.Tensor:
        if self.is_uint8:
            xb = (xb.to(self.work) / 255.0 - self.mean) * self.inv_std
        xb = xb.to(self.dtype)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def train_batch(self, x: torch.Tensor, idx: torch.Tensor, aug: tuple | None) -> torch.Tensor:
        xb = x[idx]
        if aug is not None and self.image:
            dy, dx, fl = aug
            xb = crop_flip(xb, dy, dx, fl, channels_last=self.channels_last)
        return self.convert(xb)


# --------------------------------------------------------------------------- evaluation


def _autocast(device: torch.device, amp: bool, *, any_device: bool = False):
    """bf16 autocast when ``amp`` on CUDA (on any device with ``any_device``: the CPU then
    runs the CUDA path's dtypes), else a disabled autocast region."""
    if amp and (device.type == "cuda" or any_device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits -> float32 for the loss; float32/float64 stay as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.float32


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    amp: bool = True,
    channels_last: bool = True,
    _batcher: _Batcher | None = None,
    _dist: Any = None,
    _amp_any_device: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy loss and error rate of ``model`` (in eval mode, no augmentation)
    over ``x: (N, ...)``, ``y: (N,)``, in chunks of ``batch_size``.

    ``x`` may hold uint8 pixels (normalised with the CIFAR-10 statistics) or floats. The
    model's train/eval mode is restored afterwards."""
    batch_size = check_positive_int("batch_size", batch_size)
    device = x.device
    batcher = _batcher or _Batcher(x, _param_dtype(model), channels_last)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    n = x.shape[0]
    lo, hi = 0, n
    if _dist is not None:
        lo, hi = _dist.shard_range(n)
    try:
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            xb = batcher.convert(x[start:stop])
            yb = y[start:stop]
            with _autocast(device, amp, any_device=_amp_any_device):
                out = model(xb)
            out = _upcast(out)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
            wrong += (out.argmax(dim=1) != yb).sum().double()
    finally:
        model.train(was_training)
    if _dist is not None:
        loss_sum, wrong = _dist.all_reduce_sum(torch.stack([loss_sum, wrong]))
    return float(loss_sum) / n, float(wrong) / n


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int,
    amp: bool = True,
    channels_last: bool = True,
    _batcher: _Batcher | None = None,
    _amp_any_device: bool = False,
) -> int:
    """Recompute every BatchNorm layer's running statistics on clean data.

    The running mean/variance are reset, then set to the cumulative average (momentum None)
    of the per-call statistics over ``floor(n / batch_size)`` chunks of ``batch_size``
    examples of ``x: (n, ...)`` (one chunk of all ``n`` when ``n < batch_size``), run in
    train mode without gradients or augmentation. Each layer's momentum and the model's mode
    are restored. Returns the number of chunks used (0 for a network without BatchNorm)."""
    batch_size = check_positive_int("batch_size", batch_size)
    layers = _bn_layers(model)
    if not layers:
        return 0
    batcher = _batcher or _Batcher(x, _param_dtype(model), channels_last)
    momenta = [m.momentum for m in layers]
    was_training = model.training
    n = x.shape[0]
    chunks = [(lo, lo + batch_size) for lo in range(0, n - batch_size + 1, batch_size)]
    if not chunks:
        chunks = [(0, n)]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for lo, hi in chunks:
            with _autocast(x.device, amp, any_device=_amp_any_device):
                model(batcher.convert(x[lo:hi]))
    finally:
        for m, mom in zip(layers, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return len(chunks)


def sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_iters: int = 20,
    chunk_size: int | None = None,
    seed: int = 0,
    bn_mode: str = "eval",
) -> float:
    """``λ_max`` of the Hessian of the mean cross-entropy ``L(θ) = (1/n) Σ_i ℓ_i(θ)`` over
    ``x: (n, ...)`` (network inputs), ``y: (n,)``, with respect to the trainable parameters
    ``θ: (P,)``, by ``num_iters`` Lanczos steps (:func:`sgdnoise.spectral.lanczos`) on
    Hessian-vector products.

    ``bn_mode="eval"``: the model in eval mode (BatchNorm uses its running statistics), the
    products by :func:`sgdnoise.curvature.hvp`. ``bn_mode="train"``: the training-mode
    objective on fixed groups, ``L(θ) = (1/n) Σ_c Σ_{i∈c} ℓ_i(θ; c)``, where each chunk
    ``c`` of ``chunk_size`` consecutive examples (all ``n`` when None) is one forward pass
    in train mode, so BatchNorm normalises with the chunk's own statistics (a ghost layer
    with those of its groups); the products by double backward (Pearlmutter) per chunk, and
    every BatchNorm layer's running statistics are restored afterwards. The model's mode is
    restored in both cases."""
    from sgdnoise.spectral import lanczos

    num_iters = check_positive_int("num_iters", num_iters)
    check_choice("bn_mode", bn_mode, SHARPNESS_BN_MODES)
    was_training = model.training
    saved = [(m, {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None})
             for m in _bn_layers(model)]
    try:
        params = trainable_parameters(model)
        dim = sum(p.numel() for p in params)
        if bn_mode == "eval":
            model.eval()
            matvec = _eval_mode_hvp(model, x, y, chunk_size)
        else:
            model.train()
            matvec = _train_mode_hvp(model, params, x, y, chunk_size or x.shape[0])
        res = lanczos(matvec, dim, 1, num_iters=min(num_iters, dim), tol=1e-6, seed=seed,
                      dtype=params[0].dtype, device=params[0].device)
        return float(res.eigenvalues[0])
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
        model.train(was_training)


def _eval_mode_hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   chunk_size: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    from sgdnoise.curvature import hvp

    loss_fn = nn.CrossEntropyLoss()
    return lambda v: hvp(model, loss_fn, x, y, v, chunk_size=chunk_size)


def _train_mode_hvp(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, chunk: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v: (P,) ↦ H v: (P,)`` of the train-mode objective of :func:`sharpness`: per chunk,
    ``g_c = ∇ (1/n) Σ_{i∈c} ℓ_i`` with its graph, then ``∂⟨g_c, v⟩/∂θ``."""
    n = x.shape[0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        pieces = split_like(v, params)
        out = torch.zeros_like(v)
        for lo in range(0, n, chunk):
            with torch.enable_grad():
                loss = F.cross_entropy(_upcast(model(x[lo:lo + chunk])), y[lo:lo + chunk],
                                       reduction="sum") / n
                grads = torch.autograd.grad(loss, params, create_graph=True,
                                            allow_unused=True)
                dot = sum((g * u).sum() for g, u in zip(grads, pieces, strict=True)
                          if g is not None)
                hv = torch.autograd.grad(dot, params, allow_unused=True)
            out += flatten_like(hv, params).detach()
        return out

    return matvec


def sharpness_chunking(cfg: TrainConfig) -> tuple[int, int | None]:
    """``(chunk, bn_batch)`` of the sharpness estimates of ``cfg``: the examples per forward
    pass and the BatchNorm batch of the measured objective (None: no batch statistics).

    Eval mode, or a network without BatchNorm: chunks of ``min(sharpness_n,
    eval_batch_size, 512)`` (they bound memory only), ``bn_batch`` None. Train mode with
    BatchNorm: the training BN batch — the ghost size ``g``, else ``min(B,
    micro_batch_size)`` — capped at ``SHARPNESS_MAX_BN_BATCH`` (512) and at ``sharpness_n``;
    with ghost BatchNorm a chunk holds as many whole groups as fit in 512 examples."""
    n = max(cfg.sharpness_n, 1)
    if cfg.sharpness_bn_mode == "eval" or cfg.norm != "batch":
        return min(n, cfg.eval_batch_size, SHARPNESS_MAX_BN_BATCH), None
    g = cfg.ghost_batch_size
    if g is not None and g < min(cfg.batch_size, n):
        bn = min(g, SHARPNESS_MAX_BN_BATCH)
        return min(n, bn * max(1, SHARPNESS_MAX_BN_BATCH // bn)), bn
    bn = min(cfg.batch_size, cfg.micro_batch_size or cfg.batch_size, SHARPNESS_MAX_BN_BATCH, n)
    return bn, bn


# --------------------------------------------------------------------------- sampling


class _Sampler:
    """Each epoch's permutation of ``range(n)`` and the augmentation parameters.

    ``on_device=False`` (the CPU reference): the permutation is drawn per epoch and the
    augmentation per step from CPU generators. ``on_device=True``: both are drawn per epoch
    in one call each, on ``device``, for the ``spe · B`` examples the epoch uses."""

    def __init__(self, n: int, batch_size: int, spe: int, seed: int, device: torch.device,
                 *, on_device: bool, augment: bool) -> None:
        self.n, self.b, self.spe = n, batch_size, spe
        self.on_device, self.augment = on_device, augment
        gdev = device if on_device else torch.device("cpu")
        self.shuffle = torch.Generator(device=gdev).manual_seed(seed * 1_000_003 + 17)
        self.aug = torch.Generator(device=gdev).manual_seed(seed * 1_000_003 + 29)
        self.device = device
        self.perm: torch.Tensor | None = None
        self.epoch_aug: tuple[torch.Tensor, ...] | None = None

    def new_epoch(self) -> None:
        gdev = self.shuffle.device
        self.perm = torch.randperm(self.n, generator=self.shuffle, device=gdev)
        if self.on_device and self.augment:
            self.epoch_aug = random_crop_flip_params(min(self.n, self.spe * self.b), self.aug)

    def batch(self, s: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Global indices ``(b,)`` of step ``s`` of the epoch and their augmentation."""
        lo, hi = s * self.b, min((s + 1) * self.b, self.n)
        idx = self.perm[lo:hi]
        aug = None
        if self.augment:
            if self.on_device:
                aug = tuple(a[lo:hi] for a in self.epoch_aug)
            else:
                aug = random_crop_flip_params(hi - lo, self.aug)
        return idx, aug

    def state_dict(self) -> dict[str, Any]:
        return {"shuffle": self.shuffle.get_state(), "aug": self.aug.get_state(),
                "perm": self.perm, "epoch_aug": self.epoch_aug}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shuffle.set_state(state["shuffle"].cpu())
        self.aug.set_state(state["aug"].cpu())
        gdev = self.shuffle.device
        self.perm = None if state["perm"] is None else state["perm"].to(gdev)
        self.epoch_aug = (None if state["epoch_aug"] is None
                          else tuple(a.to(gdev) for a in state["epoch_aug"]))


# --------------------------------------------------------------------------- checkpoints

# TrainConfig fields added after records and checkpoints were first written, with the
# defaults that reproduce the behaviour from before them
_LATE_FIELD_DEFAULTS: dict[str, Any] = {"warmup_steps": None, "sharpness_bn_mode": "eval"}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` read with ``weights_only=True``: tensors and plain
    containers only, so a crafted file cannot run code (it is refused with a ValueError
    naming the file)."""
    try:
        # on the CPU first: generator states must stay CPU byte tensors
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types for a refused or torn file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint {path} was refused: it is not a checkpoint of tensors "
                         f"and plain containers that loads with weights_only=True ({first}); "
                         "delete it to start the run afresh") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"checkpoint {path} has an unknown format {got!r}")
    return state


def _check_data(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor | None,
                test_y: torch.Tensor | None) -> None:
    """Inputs and labels of each split agree in length; labels are >= 0; floating inputs
    are finite (one pass over each tensor, before any training)."""
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x is None:
            continue
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{split}_y must hold one label per example of {split}_x "
                             f"({x.shape[0]}), got shape {tuple(y.shape)}")
        if y.numel() and int(y.min()) < 0:
            raise ValueError(f"{split}_y must hold class labels >= 0, got {int(y.min())}")
        check_finite(f"{split}_x", x)


def _cfg_key(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must match for a checkpoint to be resumed (the fields added
    last are left out at their defaults, so checkpoints written before them still match)."""
    d = cfg.to_dict()
    d.pop("divergence_check_every", None)
    for name, default in _LATE_FIELD_DEFAULTS.items():
        if d.get(name) == default:
            d.pop(name)
    return d


# --------------------------------------------------------------------------- training


def _default_optimizer(cfg: TrainConfig, kind: str = "default"
                       ) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """SGD of ``cfg``; ``kind`` as :attr:`EnginePaths.optimizer`."""
    kw: dict[str, Any] = {"fused": {"fused": True}, "single": {"foreach": False}}.get(kind, {})

    def factory(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, **kw)

    return factory


def _build_default_model(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int):
    from sgdnoise.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, num_classes=num_classes, in_shape=in_shape,
                           width=cfg.width, norm=cfg.norm,
                           ghost_batch_size=cfg.ghost_batch_size)


def _channels_last_ok(model: nn.Module, device: torch.device) -> bool:
    """Whether to run ``model`` in channels_last: always on CUDA; on CPU only when every
    convolution has at least 16 output channels. (With torch 2.14.1 on CPU, channels_last
    ResNets with 2-8 channels per stage corrupted the heap for some batch sizes, e.g. 5 or
    7; contiguous tensors are used for such narrow networks instead.)"""
    if device.type != "cpu":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return all(m.out_channels >= 16 for m in convs)


def _get(data: Any, name: str, *, optional: bool = False) -> torch.Tensor | None:
    """``data[name]`` or ``data.name``; with ``optional`` a missing entry is None."""
    if isinstance(data, dict):
        return data.get(name) if optional else data[name]
    return getattr(data, name, None) if optional else getattr(data, name)


def _param_distance(model: nn.Module, theta0: torch.Tensor) -> float:
    """``‖θ − θ₀‖₂`` accumulated in float64."""
    d = flat_params(model).double() - theta0.double()
    return float(torch.linalg.vector_norm(d))


def _subset(y: torch.Tensor, n: int | None, seed: int) -> torch.Tensor | None:
    """Stratified indices of ``n`` of the labels ``y`` (None: all examples)."""
    if n is None or n >= y.shape[0]:
        return None
    from sgdnoise.data import stratified_indices

    return stratified_indices(y.cpu(), n, seed=seed)


class _DivergenceWatch:
    """The loss sums of the steps since the last divergence check, kept on the device
    (keeping one launches no kernel and does not synchronise with the host);
    :meth:`first_bad` reads them at a check. Every 256 kept losses are concatenated into
    one tensor, so a long interval between checks holds one number per step."""

    def __init__(self, step: int) -> None:
        self.start = step  # the step index of the first kept loss
        self.chunks: list[torch.Tensor] = []
        self.recent: list[torch.Tensor] = []

    def add(self, loss_sum: torch.Tensor) -> None:
        self.recent.append(loss_sum.reshape(1))
        if len(self.recent) == 256:
            self.chunks.append(torch.cat(self.recent))
            self.recent = []

    def first_bad(self) -> int | None:
        """The first step index (0-based) since the last check whose loss is not finite,
        or None; forgets the kept losses."""
        kept = self.chunks + self.recent
        if not kept:
            return None
        losses = torch.cat(kept)
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        first = self.start + int(bad[0]) if bad.numel() else None
        self.start += losses.numel()
        self.chunks, self.recent = [], []
        return first


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bn_chunk(cfg: TrainConfig) -> int:
    """Chunk size of the BatchNorm recompute: the BN batch (ghost size, else B) when it fits
    in ``eval_batch_size``; else the largest multiple of the ghost size that fits (the
    layers split it into ghost groups) or ``eval_batch_size``."""
    g = cfg.ghost_batch_size
    bn_batch = min(g, cfg.batch_size) if g is not None else cfg.batch_size
    if bn_batch <= cfg.eval_batch_size:
        return bn_batch if g is None or cfg.batch_size <= g else g * max(
            1, cfg.eval_batch_size // g)
    return cfg.eval_batch_size


def train(
    cfg: TrainConfig,
    data: Any,
    *,
    model: nn.Module | None = None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer | PlainSGD] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    hooks: Sequence[Any] = (),
    desc: str | None = None,
    engine: str = "fast",
    cuda_paths_on_cpu: bool = False,
) -> TrainResult:
    """Train with mini-batch SGD as configured by ``cfg`` (see the module docstring).

    - data: anything with ``train_x`` (images ``(N, C, H, W)`` or features ``(N, D)``),
      ``train_y (N,)`` and optionally ``test_x``, ``test_y`` (attributes or dict keys; both
      absent or None: no test set, the records' test fields are None), e.g.
      :class:`sgdnoise.data.ImageData`.
    - model: a model to train in place (its initialisation is the caller's; with
      ``cfg.ghost_batch_size`` its BatchNorm layers are made ghost layers); default
      ``build_model(cfg.model, width=cfg.width, norm=cfg.norm)`` initialised from
      ``cfg.seed``.
    - optimizer_factory: ``model -> Optimizer`` (a ``torch.optim`` optimizer, or one with the
      same ``param_groups``, ``zero_grad``, ``step`` and state dicts, e.g. :class:`PlainSGD`);
      default SGD (fused on CUDA). The engine owns the learning rate: at every step each
      parameter group's ``lr`` is set to its initial value times :func:`lr_multiplier`.
    - checkpoint_path: where to save a checkpoint after every evaluation (atomically). If the
      file exists, training resumes from it (the config must match); it is read with
      ``torch.load(..., weights_only=True)``, so a file holding anything but tensors and
      plain containers is refused. Its folder is created and probed writable before any
      work. Needs evaluations (``cfg.eval_points != 0``).
    - on_epoch: called with each new evaluation record (same as a hook's ``on_eval``).
    - hooks: :class:`TrainHook` objects (``on_step`` / ``on_eval``, both optional).
    - engine / cuda_paths_on_cpu: the implementation, ``"fast"`` or ``"eager"``, and whether
      the CPU takes the CUDA path's choices (see :func:`engine_paths`; recorded in
      ``extra["engine"]``).
    """
    cfg.validate()
    paths = engine_paths(cfg, engine, cuda_paths_on_cpu=cuda_paths_on_cpu)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available")
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    from sgdnoise import distributed as dist_mod

    dist = dist_mod.current()

    evaluating = cfg.eval_points != 0
    if checkpoint_path is not None and not evaluating:
        raise ValueError(f"checkpoint_path={str(checkpoint_path)!r} needs evaluations (a "
                         "checkpoint is written after each), got eval_points=0")
    if checkpoint_path is not None and (dist is None or dist.rank == 0):
        check_output_dir("checkpoint_path's folder", Path(checkpoint_path).parent)
    train_x = _get(data, "train_x").to(device)
    train_y = _get(data, "train_y").to(device=device, dtype=torch.long)
    test_x, test_y = _get(data, "test_x", optional=True), _get(data, "test_y", optional=True)
    if (test_x is None) != (test_y is None):
        raise ValueError("data must have both test_x and test_y or neither, got only "
                         f"{'test_x' if test_y is None else 'test_y'}")
    has_test = test_x is not None
    if has_test:
        test_x = test_x.to(device)
        test_y = test_y.to(device=device, dtype=torch.long)
    _check_data(train_x, train_y, test_x, test_y)
    n = train_x.shape[0]
    if cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {n} training examples")
    if dist is not None and cfg.batch_size < dist.world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} is smaller than world_size={dist.world_size}"
        )
    if cfg.sharpness_n > n:
        raise ValueError(f"sharpness_n={cfg.sharpness_n} exceeds the {n} training examples")
    spe = steps_per_epoch(n, cfg.batch_size, drop_last=cfg.drop_last)
    T = total_steps(cfg, n)
    schedule = eval_steps(T, cfg.eval_points, steps_per_ep=spe, at_start=cfg.eval_at_start)
    eval_set = set(schedule)
    sharp_set: set[int] = set()
    if cfg.sharpness_n > 0:
        sharp_set.add(T)
        if cfg.sharpness_every is not None:
            sharp_set.update(range(0, T + 1, cfg.sharpness_every))

    if model is None:
        num_classes = int(max(int(train_y.max()),
                              int(test_y.max()) if has_test else 0)) + 1
        model = _build_default_model(cfg, tuple(train_x.shape[1:]), max(num_classes, 2))
    elif cfg.ghost_batch_size is not None:
        from sgdnoise.models import set_ghost_batch_size

        set_ghost_batch_size(model, cfg.ghost_batch_size)
    model = model.to(device)
    use_cl = paths.channels_last and train_x.ndim == 4 and _channels_last_ok(model, device)
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = (optimizer_factory or _default_optimizer(cfg, paths.optimizer))(model)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    net: nn.Module = model  # what the training forward runs: the model, or its DDP wrapper
    if dist is not None:
        net = dist.wrap(model, device)  # broadcasts rank 0's parameters and buffers

    dtype = _param_dtype(model)
    batcher = _Batcher(train_x, dtype, use_cl)
    test_batcher = _Batcher(test_x, dtype, use_cl) if has_test else None
    sub = _subset(train_y, cfg.eval_train_n, cfg.eval_subset_seed)
    sub_dev = sub.to(device) if sub is not None else None
    eval_x = train_x if sub is None else train_x[sub_dev]
    eval_y = train_y if sub is None else train_y[sub_dev]
    sharp_x = sharp_y = None
    if cfg.sharpness_n > 0:
        sidx = _subset(train_y, cfg.sharpness_n, cfg.eval_subset_seed + 1)
        sidx = torch.arange(n) if sidx is None else sidx
        sharp_x = batcher.convert(train_x[sidx.to(device)])
        sharp_y = train_y[sidx.to(device)]
    sampler = _Sampler(n, cfg.batch_size, spe, cfg.seed, device, on_device=paths.device_rng,
                       augment=cfg.augment)
    theta0 = flat_params(model).clone()
    history: list[dict[str, Any]] = []
    sharp_hist: list[dict[str, float]] = []
    step, elapsed, lr_now = 0, 0.0, cfg.lr * lr_multiplier(cfg, 0, T, spe)
    resumed_from = None
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.exists():
        state = _load_checkpoint(ckpt)
        if state["config"] != _cfg_key(cfg):
            diff = sorted(k for k in set(state["config"]) | set(_cfg_key(cfg))
                          if state["config"].get(k) != _cfg_key(cfg).get(k))
            raise ValueError(
                f"checkpoint {ckpt} was written by a different config (fields {diff}); "
                "delete it or use another path"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        sampler.load_state_dict(state["sampler"])
        history, sharp_hist = list(state["history"]), list(state["sharpness"])
        step, elapsed, lr_now = state["step"], state["wall_time_s"], state["lr_now"]
        theta0 = state["theta0"].to(device)
        resumed_from = step

    is_main = dist is None or dist.rank == 0
    listeners_eval = [h.on_eval for h in hooks if hasattr(h, "on_eval")]
    if on_epoch is not None:
        listeners_eval.append(on_epoch)
    listeners_step = [h.on_step for h in hooks if hasattr(h, "on_step")]
    timers = {"step_seconds": 0.0, "eval_seconds": 0.0, "sharpness_seconds": 0.0}
    examples_trained = 0
    t0 = time.perf_counter()

    def _recompute() -> None:
        if cfg.bn_recompute:
            recompute_bn_stats(model, eval_x, batch_size=_bn_chunk(cfg), amp=paths.autocast,
                               _batcher=batcher, _amp_any_device=True)

    def _eval_record(running: float | None) -> dict[str, Any]:
        t_start = time.perf_counter()
        _recompute()
        if dist is not None and not cfg.bn_recompute:
            dist.broadcast_buffers(model)
        tr_loss, tr_err = evaluate(model, eval_x, eval_y, batch_size=cfg.eval_batch_size,
                                   amp=paths.autocast, _batcher=batcher, _dist=dist,
                                   _amp_any_device=True)
        te_loss = te_err = None
        if has_test:
            te_loss, te_err = evaluate(model, test_x, test_y, batch_size=cfg.eval_batch_size,
                                       amp=paths.autocast, _batcher=test_batcher,
                                       _dist=dist, _amp_any_device=True)
        timers["eval_seconds"] += time.perf_counter() - t_start
        return {
            "step": step,
            "epoch": step / spe,
            "examples_seen": step * cfg.batch_size,
            "lr": lr_now,
            "train_loss": tr_loss,
            "train_error": tr_err,
            "test_loss": te_loss,
            "test_error": te_err,
            "param_distance": _param_distance(model, theta0),
            "running_loss": running,
            "wall_time": elapsed + (time.perf_counter() - t0),
        }

    def _sharpness() -> None:
        t_start = time.perf_counter()
        mode = cfg.sharpness_bn_mode
        if mode == "eval" and not (history and history[-1]["step"] == step
                                   and cfg.bn_recompute):
            _recompute()
        chunk, bn_batch = sharpness_chunking(cfg)
        lam = sharpness(model, sharp_x, sharp_y, num_iters=cfg.sharpness_iters,
                        chunk_size=chunk, seed=cfg.seed, bn_mode=mode)
        sharp_hist.append({"step": step, "lr": lr_now, "lambda_max": lam,
                           "two_over_lr": 2.0 / lr_now if lr_now > 0 else math.inf,
                           "bn_mode": mode, "bn_batch": bn_batch})
        timers["sharpness_seconds"] += time.perf_counter() - t_start

    def _save() -> None:
        if ckpt is None:
            return
        if is_main:
            _atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "config": _cfg_key(cfg),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(), "history": history,
                "sharpness": sharp_hist, "step": step, "lr_now": lr_now,
                "theta0": theta0, "wall_time_s": elapsed + (time.perf_counter() - t0),
            }, ckpt)
        if dist is not None:
            dist.barrier()

    def _emit(rec: dict[str, Any]) -> None:
        history.append(rec)
        if is_main:
            for fn in listeners_eval:
                fn(rec)

    if progress and is_main:
        from tqdm.auto import tqdm
    else:  # a disabled bar; tqdm.auto would probe (and warn about) notebook widgets
        from tqdm import tqdm

    bar = tqdm(total=T, initial=step, desc=desc or f"B={cfg.batch_size}",
               disable=not (progress and is_main), leave=False)
    status, diverged_at = "finished", None
    # no autocast region where it would be disabled: entering one costs microseconds a step
    autocast = (_autocast(device, True, any_device=True) if paths.autocast
                else contextlib.nullcontext())
    micro = cfg.micro_batch_size or cfg.batch_size
    # DDP averages gradients over the K ranks; scaling each rank's loss by K makes the
    # average the sum, ∇ (1/B) Σ_{i∈batch} ℓ_i, whatever the split sizes
    grad_scale = 1.0 if dist is None else float(dist.world_size)
    observe = getattr(optimizer, "observe_batch", None)
    # without warm-up or decay the multiplier is the same at every step: computed once
    const_mult = (lr_multiplier(cfg, 0, T, spe)
                  if cfg.schedule == "constant" and warmup_length(cfg, spe) == 0 else None)

    if step == 0 and not history:
        if 0 in eval_set:
            _emit(_eval_record(None))
        if 0 in sharp_set:
            _sharpness()
    model.train()
    running = torch.zeros((), dtype=torch.float64, device=device)
    running_n = 0
    watch = _DivergenceWatch(step)
    t_seg = time.perf_counter()
    while step < T:
        pos = step % spe
        if pos == 0 or sampler.perm is None:
            sampler.new_epoch()
        gidx, aug = sampler.batch(pos)
        bsz = gidx.shape[0]
        if dist is not None:
            part = dist.shard_slice(bsz)
            gidx = gidx[part]
            if aug is not None:
                aug = tuple(a[part] for a in aug)
        idx = gidx.to(device, non_blocking=True)
        mult = const_mult if const_mult is not None else lr_multiplier(cfg, step, T, spe)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * mult
        lr_now = cfg.lr * mult
        optimizer.zero_grad(set_to_none=True)
        xb = batcher.train_batch(train_x, idx, aug)
        yb = train_y[idx]
        loss_sum = None
        starts = range(0, xb.shape[0], micro)
        for lo in starts:
            xm, ym = xb[lo:lo + micro], yb[lo:lo + micro]
            # under DDP only the last micro-batch's backward all-reduces the gradients
            sync = dist is None or lo == starts[-1]
            with (contextlib.nullcontext() if sync else net.no_sync()), autocast:
                out = net(xm)
            loss = F.cross_entropy(_upcast(out), ym, reduction="sum")
            (loss * (grad_scale / bsz)).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if dist is not None:
            loss_sum = dist.all_reduce_sum(loss_sum)
        watch.add(loss_sum)
        if evaluating:  # the running loss is only read by evaluations
            running += loss_sum.double()
            running_n += bsz
        if observe is not None:
            observe(xb, yb)
        optimizer.step()
        step += 1
        examples_trained += bsz
        bar.update(1)
        stop = False
        if listeners_step:
            st = StepState(step=step, epoch=step / spe, lr=lr_now, batch_size=bsz,
                           loss=loss_sum / bsz, model=model, optimizer=optimizer)
            for fn in listeners_step:
                stop = bool(fn(st)) or stop
        boundary = step in eval_set or step in sharp_set or stop or step == T
        if boundary or step % cfg.divergence_check_every == 0:
            bad_step = watch.first_bad()  # the one host synchronisation, every k steps
            if bad_step is not None:
                status, diverged_at = "diverged", bad_step
        if not (boundary or status == "diverged"):
            continue
        _sync(device)
        timers["step_seconds"] += time.perf_counter() - t_seg
        if status == "diverged":
            break
        evaluated = step in eval_set or (stop and evaluating)
        if evaluated:
            rec = _eval_record(float(running) / max(running_n, 1))
            running.zero_()
            running_n = 0
            bar.set_postfix({f"{k}_err": f"{rec[f'{k}_error']:.3f}"
                             for k in ("train", "test") if rec[f"{k}_error"] is not None})
            if not all(math.isfinite(rec[k]) for k in ("train_loss", "test_loss")
                       if rec[k] is not None):
                status, diverged_at = "diverged", step
            _emit(rec)
            if status == "diverged":
                break
        if step in sharp_set:
            _sharpness()
        model.train()
        if evaluated:
            _save()
        if stop:
            status = "stopped"
            break
        t_seg = time.perf_counter()
    bar.close()
    extra: dict[str, Any] = {**timers, "examples_trained": examples_trained,
                             "engine": paths.to_dict()}
    if device.type == "cuda":
        extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return TrainResult(
        history=history,
        status=status,
        steps=step,
        wall_time_s=elapsed + (time.perf_counter() - t0),
        model=model,
        diverged_at_step=diverged_at,
        resumed_from_epoch=None if resumed_from is None else resumed_from / spe,
        extra=extra,
        sharpness=sharp_hist,
        resumed_from_step=resumed_from,
    )
