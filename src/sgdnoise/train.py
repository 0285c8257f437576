"""The training engine: mini-batch SGD on an image data set held as one tensor on the device.

One call of :func:`train` runs ``cfg.epochs`` epochs of mini-batch SGD on the cross-entropy
loss and evaluates the full train and test sets after every epoch. Design points:

* **Data on the device.** ``train_x: (N, C, H, W)`` (uint8 pixels, or floats already on the
  network's scale) is moved to ``cfg.device`` once. Each step gathers its batch by index,
  augments it there with one vectorised gather (random crop of the 4-pixel zero-padded image
  and a horizontal flip, see :func:`crop_flip`), converts uint8 to normalised floats and
  switches to ``channels_last``. No per-image Python loop, no DataLoader workers.
* **Exact batch semantics.** An epoch is ``ceil(N / B)`` steps over a fresh permutation
  (``floor(N / B)`` with ``drop_last``). The loss of a step is the mean cross entropy over
  its ``B`` examples, ``L_B(θ) = (1/B) Σ_{i∈batch} ℓ_i(θ)``, and the step is
  ``θ ← θ − η_t ∇L_B(θ)`` (plus momentum / weight decay when configured).
* **Micro-batches.** With ``micro_batch_size = m < B`` the batch is cut into ``ceil(B / m)``
  chunks; chunk ``k`` contributes ``∇ (1/B) Σ_{i∈chunk k} ℓ_i`` and the gradients add up, so
  the accumulated gradient is exactly ``∇L_B`` for any network whose forward pass treats
  examples independently (``norm="none"`` or ``"group"``): the step equals the full-batch
  step up to floating-point summation order. **BatchNorm is different:** in train mode each
  micro-batch is normalised with its *own* mean and variance ("ghost batch norm"), so a
  network with ``norm="batch"`` sees micro-batch statistics rather than those of the global
  batch of ``B``, and its running statistics are updated once per micro-batch. The gradient
  is then that of a ghost-batch-norm network, not of the same network run on all ``B``
  examples at once.
* **Repeatable.** The model is initialised from ``cfg.seed`` (without touching the global
  generator's state afterwards); shuffling and augmentation draw from two explicit CPU
  ``torch.Generator`` objects whose states are part of the checkpoint, so the same config and
  seed give the same numbers on CPU, and a run resumed from a checkpoint ends with exactly
  the numbers of an uninterrupted one.
* **Divergence.** A NaN or infinite training loss (or evaluation loss) stops the run with
  status ``"diverged"``.
* **Optimizer hook.** If the optimizer has ``observe_batch(inputs, targets)``, it is called
  with the current (augmented, local) batch right before ``optimizer.step()``.
* **Data parallel.** Under ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU)
  every rank draws the same global batch, takes its share (``tensor_split`` into
  ``world_size`` parts) and the summed gradients are all-reduced, so the step equals the
  single-process step; only rank 0 writes checkpoints. See :mod:`sgdnoise.distributed`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_choice, check_positive, check_positive_int

__all__ = [
    "LR_SCALINGS",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "crop_flip",
    "evaluate",
    "lr_multiplier",
    "random_crop_flip_params",
    "steps_per_epoch",
    "train",
]

LR_SCALINGS = ("none", "linear", "sqrt")
SCHEDULES = ("constant", "cosine")

# CIFAR-10 training-set channel statistics on the [0, 1] scale (the official values); used to
# normalise uint8 pixels when sgdnoise.data is not importable.
_FALLBACK_MEAN = (0.4914, 0.4822, 0.4465)
_FALLBACK_STD = (0.2470, 0.2435, 0.2616)

CHECKPOINT_FORMAT = "sgdnoise.train.checkpoint/1"


@dataclass
class TrainConfig:
    """Everything that determines a training run (with the data and the seed).

    lr: base learning rate η₀. The rate used at step t is ``η₀ · s(B) · w(t) · c(t)`` with the
        batch-size scaling ``s(B)`` = 1 (``lr_scaling="none"``), ``B / base_batch_size``
        (``"linear"``) or ``sqrt(B / base_batch_size)`` (``"sqrt"``); the linear warm-up
        ``w(t) = min(1, (t + 1) / T_w)`` over ``T_w = warmup_epochs · steps_per_epoch`` steps;
        and the schedule ``c(t)`` = 1 (``"constant"``) or ``(1 + cos(π t / T)) / 2`` over the
        ``T`` total steps (``"cosine"``).
    micro_batch_size: None, or the largest number of examples pushed through the network at
        once; larger batches are accumulated from micro-batches (see the module docstring for
        what this means with BatchNorm).
    amp: bf16 autocast on CUDA (ignored on CPU).
    channels_last: channels-last memory format for image models (on CPU only for networks
        whose convolutions all have >= 16 channels, see ``_channels_last_ok``).
    divergence_check_every: check the training loss for NaN/inf every this many steps (and at
        every epoch end); 1 stops at the first bad step.
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
    divergence_check_every: int = 1

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first bad field; return self."""
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("epochs", self.epochs)
        check_positive("lr", self.lr)
        check_positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        check_positive_int("base_batch_size", self.base_batch_size)
        check_positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("norm", self.norm, ("batch", "group", "none"))
        if self.width is not None:
            check_positive_int("width", self.width)
        if self.micro_batch_size is not None:
            check_positive_int("micro_batch_size", self.micro_batch_size)
        check_positive_int("eval_batch_size", self.eval_batch_size)
        check_positive_int("divergence_check_every", self.divergence_check_every)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("nesterov", "augment", "channels_last", "amp", "drop_last",
                     "eval_at_start"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {self.device!r}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    history: one dict per evaluation (epoch 0 = before training when ``eval_at_start``) with
        ``epoch, step, lr, train_loss, train_error, test_loss, test_error, running_loss``
        (mean mini-batch loss over the epoch, augmented data; None for epoch 0) and
        ``wall_time`` (seconds since the run started, summed over resumed segments).
    status: "finished" or "diverged".
    """

    history: list[dict[str, float]]
    status: str
    steps: int
    wall_time_s: float
    model: nn.Module
    diverged_at_step: int | None = None
    resumed_from_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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


def lr_multiplier(cfg: TrainConfig, step: int, total_steps: int, steps_per_ep: int) -> float:
    """``s(B) · w(step) · c(step)`` of :class:`TrainConfig` (multiplies the base lr)."""
    if cfg.lr_scaling == "linear":
        scale = cfg.batch_size / cfg.base_batch_size
    elif cfg.lr_scaling == "sqrt":
        scale = math.sqrt(cfg.batch_size / cfg.base_batch_size)
    else:
        scale = 1.0
    warm_steps = cfg.warmup_epochs * steps_per_ep
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
    ``(n,)`` bool for ``n`` images from ``generator`` (a CPU generator)."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    if flip:
        fl = torch.randint(0, 2, (n,), generator=generator).bool()
    else:
        fl = torch.zeros(n, dtype=torch.bool)
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


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
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
            with _autocast(device, amp):
                out = model(xb)
            out = _upcast(out)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
            wrong += (out.argmax(dim=1) != yb).sum().double()
    finally:
        model.train(was_training)
    if _dist is not None:
        loss_sum, wrong = _dist.all_reduce_sum(torch.stack([loss_sum, wrong]))
    return float(loss_sum) / n, float(wrong) / n


# --------------------------------------------------------------------------- checkpoints


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cfg_key(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must match for a checkpoint to be resumed."""
    d = cfg.to_dict()
    d.pop("divergence_check_every", None)
    return d


# --------------------------------------------------------------------------- training


def _default_optimizer(cfg: TrainConfig) -> Callable[[nn.Module], torch.optim.Optimizer]:
    def factory(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )

    return factory


def _build_default_model(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int):
    from sgdnoise.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(
            cfg.model, num_classes=num_classes, in_shape=in_shape, width=cfg.width, norm=cfg.norm
        )


def _channels_last_ok(model: nn.Module, device: torch.device) -> bool:
    """Whether to run ``model`` in channels_last: always on CUDA; on CPU only when every
    convolution has at least 16 output channels. (With torch 2.14.1 on CPU, channels_last
    ResNets with 2-8 channels per stage corrupted the heap for some batch sizes, e.g. 5 or
    7; contiguous tensors are used for such narrow networks instead.)"""
    if device.type != "cpu":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return all(m.out_channels >= 16 for m in convs)


def _get(data: Any, name: str) -> torch.Tensor:
    if isinstance(data, dict):
        return data[name]
    return getattr(data, name)


def train(
    cfg: TrainConfig,
    data: Any,
    *,
    model: nn.Module | None = None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    desc: str | None = None,
) -> TrainResult:
    """Train with mini-batch SGD as configured by ``cfg`` (see the module docstring).

    data: anything with ``train_x (N, C, H, W)``, ``train_y (N,)``, ``test_x``, ``test_y``
        (attributes or dict keys), e.g. :class:`sgdnoise.data.ImageData`.
    model: a model to train in place (its initialisation is the caller's); default
        ``build_model(cfg.model, width=cfg.width, norm=cfg.norm)`` initialised from
        ``cfg.seed``.
    optimizer_factory: ``model -> Optimizer``; default ``SGD(lr, momentum, weight_decay)``.
        The engine owns the learning rate: at every step each parameter group's ``lr`` is set
        to its initial value times :func:`lr_multiplier`.
    checkpoint_path: where to save a checkpoint after every epoch (atomically). If the file
        exists, training resumes from it (the config must match).
    on_epoch: called with each new history entry.
    """
    cfg.validate()
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available")
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    from sgdnoise import distributed as dist_mod

    dist = dist_mod.current()

    train_x = _get(data, "train_x").to(device)
    train_y = _get(data, "train_y").to(device=device, dtype=torch.long)
    test_x = _get(data, "test_x").to(device)
    test_y = _get(data, "test_y").to(device=device, dtype=torch.long)
    n = train_x.shape[0]
    if cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {n} training examples")
    if dist is not None and cfg.batch_size < dist.world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} is smaller than world_size={dist.world_size}"
        )
    spe = steps_per_epoch(n, cfg.batch_size, drop_last=cfg.drop_last)
    total_steps = spe * cfg.epochs

    if model is None:
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
        model = _build_default_model(cfg, tuple(train_x.shape[1:]), max(num_classes, 2))
    model = model.to(device)
    use_cl = cfg.channels_last and train_x.ndim == 4 and _channels_last_ok(model, device)
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = (optimizer_factory or _default_optimizer(cfg))(model)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if dist is not None:
        dist.broadcast_module(model)

    dtype = _param_dtype(model)
    batcher = _Batcher(train_x, dtype, use_cl)
    test_batcher = _Batcher(test_x, dtype, use_cl)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17)
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 29)
    history: list[dict[str, float]] = []
    epoch0, step, elapsed = 0, 0, 0.0
    resumed_from = None
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {ckpt} has an unknown format {state.get('format')!r}")
        if state["config"] != _cfg_key(cfg):
            diff = sorted(k for k in state["config"]
                          if state["config"].get(k) != _cfg_key(cfg).get(k))
            raise ValueError(
                f"checkpoint {ckpt} was written by a different config (fields {diff}); "
                "delete it or use another path"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        shuffle_gen.set_state(state["shuffle_rng"])
        aug_gen.set_state(state["augment_rng"])
        history = list(state["history"])
        epoch0, step, elapsed = state["epoch"], state["step"], state["wall_time_s"]
        resumed_from = epoch0

    def _eval_record(epoch: int, running: float | None, lr_now: float) -> dict[str, float]:
        if dist is not None:
            dist.broadcast_buffers(model)
        tr_loss, tr_err = evaluate(model, train_x, train_y, batch_size=cfg.eval_batch_size,
                                   amp=cfg.amp, _batcher=batcher, _dist=dist)
        te_loss, te_err = evaluate(model, test_x, test_y, batch_size=cfg.eval_batch_size,
                                   amp=cfg.amp, _batcher=test_batcher, _dist=dist)
        return {
            "epoch": epoch,
            "step": step,
            "lr": lr_now,
            "train_loss": tr_loss,
            "train_error": tr_err,
            "test_loss": te_loss,
            "test_error": te_err,
            "running_loss": running,
            "wall_time": elapsed + (time.perf_counter() - t0),
        }

    is_main = dist is None or dist.rank == 0
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=desc or f"B={cfg.batch_size}",
        disable=not (progress and is_main),
        leave=False,
    )
    t0 = time.perf_counter()
    status, diverged_at = "finished", None
    autocast = _autocast(device, cfg.amp)
    micro = cfg.micro_batch_size or cfg.batch_size
    observe = getattr(optimizer, "observe_batch", None)
    loss_dtype = torch.promote_types(dtype, torch.float32)

    if epoch0 == 0 and not history and cfg.eval_at_start:
        rec = _eval_record(0, None, cfg.lr * lr_multiplier(cfg, 0, total_steps, spe))
        history.append(rec)
        if on_epoch is not None and is_main:
            on_epoch(rec)

    model.train()
    lr_now = float("nan")
    step_seconds = 0.0  # time spent in training steps (no evaluation), this segment
    for epoch in range(epoch0 + 1, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle_gen)
        running = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        bad = torch.zeros((), dtype=torch.bool, device=device)
        for s in range(spe):
            gidx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            bsz = gidx.shape[0]
            aug = random_crop_flip_params(bsz, aug_gen) if cfg.augment else None
            if dist is not None:
                part = dist.shard_slice(bsz)
                gidx = gidx[part]
                if aug is not None:
                    aug = tuple(a[part] for a in aug)
            idx = gidx.to(device, non_blocking=True)
            mult = lr_multiplier(cfg, step, total_steps, spe)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * mult
            lr_now = cfg.lr * mult
            optimizer.zero_grad(set_to_none=True)
            xb = batcher.train_batch(train_x, idx, aug)
            yb = train_y[idx]
            loss_sum = torch.zeros((), dtype=loss_dtype, device=device)
            for lo in range(0, xb.shape[0], micro):
                xm, ym = xb[lo:lo + micro], yb[lo:lo + micro]
                with autocast:
                    out = model(xm)
                loss = F.cross_entropy(_upcast(out), ym, reduction="sum")
                (loss / bsz).backward()
                loss_sum = loss_sum + loss.detach()
            if dist is not None:
                dist.all_reduce_gradients(model)
                loss_sum = dist.all_reduce_sum(loss_sum)
            bad = bad | ~torch.isfinite(loss_sum)
            running += loss_sum.double()
            seen += bsz
            check_now = (s + 1) % cfg.divergence_check_every == 0 or s == spe - 1
            if check_now and bool(bad):
                status, diverged_at = "diverged", step
                break
            if observe is not None:
                observe(xb, yb)
            optimizer.step()
            step += 1
            bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds += time.perf_counter() - t_epoch
        if status == "diverged":
            break
        rec = _eval_record(epoch, float(running) / max(seen, 1), lr_now)
        history.append(rec)
        bar.set_postfix(train_err=f"{rec['train_error']:.3f}", test_err=f"{rec['test_error']:.3f}")
        if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["test_loss"])):
            status, diverged_at = "diverged", step
        if on_epoch is not None and is_main:
            on_epoch(rec)
        if status == "diverged":
            break
        if ckpt is not None:
            if is_main:
                _atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "config": _cfg_key(cfg),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "shuffle_rng": shuffle_gen.get_state(),
                        "augment_rng": aug_gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "history": history,
                        "epoch": epoch,
                        "step": step,
                        "wall_time_s": elapsed + (time.perf_counter() - t0),
                    },
                    ckpt,
                )
            if dist is not None:
                dist.barrier()
    bar.close()
    extra: dict[str, Any] = {"step_seconds": step_seconds}
    if device.type == "cuda":
        extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return TrainResult(
        history=history,
        status=status,
        steps=step,
        wall_time_s=elapsed + (time.perf_counter() - t0),
        model=model,
        diverged_at_step=diverged_at,
        resumed_from_epoch=resumed_from,
        extra=extra,
    )
