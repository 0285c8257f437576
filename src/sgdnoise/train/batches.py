"""Where a step's batch comes from: the data held on the device, each epoch's permutation
and augmentation (:class:`Sampler`), the vectorised random crop and flip
(:func:`crop_flip`) and the conversion of stored examples to network inputs
(:class:`Batcher`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.data import CIFAR10_MEAN, CIFAR10_STD, stratified_indices
from sgdnoise.validate import check_finite

__all__ = ["Batcher", "Sampler", "TrainData", "crop_flip", "random_crop_flip_params"]


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
    ci = torch.arange(C, device=dev)
    if channels_last:
        # gather into (B, H, W, C) memory and view it as (B, C, H, W): channels-last strides
        out = xp[bi[:, None, None, None], ci[None, None, None, :], rows[:, :, None, None],
                 cols[:, None, :, None]]
        return out.permute(0, 3, 1, 2)
    return xp[bi[:, None, None, None], ci[None, :, None, None], rows[:, None, :, None],
              cols[:, None, None, :]]


class Batcher:
    """Turns stored examples (uint8 pixels or floats) into network inputs on the device:
    uint8 images are normalised with the CIFAR-10 channel statistics (``(0.5, 0.25)`` per
    channel for another number of channels) in float32 (float64 for a float64 model), then
    cast to ``dtype`` and, for images, laid out channels-last when asked."""

    def __init__(self, x: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> None:
        self.is_uint8 = x.dtype == torch.uint8
        self.image = x.ndim == 4
        self.dtype = dtype
        self.channels_last = channels_last and self.image
        if self.is_uint8:
            mean, std = tuple(CIFAR10_MEAN), tuple(CIFAR10_STD)
            c = x.shape[1]
            if len(mean) != c:
                mean, std = (0.5,) * c, (0.25,) * c
            shape = (1, c) + (1,) * (x.ndim - 2)
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


def param_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first parameter (float32 for a model without any)."""
    for p in model.parameters():
        return p.dtype
    return torch.float32


class Sampler:
    """Each epoch's permutation of ``range(n)`` and the augmentation parameters.

    ``on_device=False`` (the CPU reference): the permutation is drawn per epoch and the
    augmentation per step from CPU generators. ``on_device=True``: both are drawn per epoch
    in one call each, on ``device``, for the ``spe · B`` examples the epoch uses. The
    generators are seeded ``1_000_003·seed + 17`` (shuffle) and ``1_000_003·seed + 29``
    (augmentation)."""

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


class TrainData:
    """The run's tensors on ``device``: ``train_x: (N, ...)``, ``train_y: (N,)`` (long) and
    the optional test split (``test_x``, ``test_y``: both or neither), read from ``data``'s
    attributes or keys and checked before any work: lengths agree, labels are >= 0,
    floating inputs are finite."""

    def __init__(self, data: Any, device: torch.device) -> None:
        self.train_x = _get(data, "train_x").to(device)
        self.train_y = _get(data, "train_y").to(device=device, dtype=torch.long)
        test_x, test_y = _get(data, "test_x", optional=True), _get(data, "test_y",
                                                                   optional=True)
        if (test_x is None) != (test_y is None):
            raise ValueError("data must have both test_x and test_y or neither, got only "
                             f"{'test_x' if test_y is None else 'test_y'}")
        self.test_x = None if test_x is None else test_x.to(device)
        self.test_y = None if test_y is None else test_y.to(device=device, dtype=torch.long)
        for split in ("train", "test"):
            _check_split(split, getattr(self, f"{split}_x"), getattr(self, f"{split}_y"))

    @property
    def n(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def has_test(self) -> bool:
        return self.test_x is not None

    def num_classes(self) -> int:
        """``max label + 1`` over both splits, at least 2."""
        top = int(self.train_y.max())
        if self.has_test:
            top = max(top, int(self.test_y.max()))
        return max(top + 1, 2)

    def subset(self, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of a stratified subset of ``n`` training examples drawn with ``seed``
        (all when None or ``n >= N``)."""
        idx = subset_indices(self.train_y, n, seed)
        if idx is None:
            return self.train_x, self.train_y
        idx = idx.to(self.train_x.device)
        return self.train_x[idx], self.train_y[idx]


def subset_indices(y: torch.Tensor, n: int | None, seed: int) -> torch.Tensor | None:
    """Stratified indices of ``n`` of the labels ``y`` (None: all examples)."""
    if n is None or n >= y.shape[0]:
        return None
    return stratified_indices(y.cpu(), n, seed=seed)


def _get(data: Any, name: str, *, optional: bool = False) -> torch.Tensor | None:
    """``data[name]`` or ``data.name``; with ``optional`` a missing entry is None."""
    if isinstance(data, dict):
        return data.get(name) if optional else data[name]
    return getattr(data, name, None) if optional else getattr(data, name)


def _check_split(split: str, x: torch.Tensor | None, y: torch.Tensor | None) -> None:
    if x is None:
        return
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{split}_y must hold one label per example of {split}_x "
                         f"({x.shape[0]}), got shape {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{split}_y must hold class labels >= 0, got {int(y.min())}")
    check_finite(f"{split}_x", x)
