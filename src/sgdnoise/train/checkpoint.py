"""Checkpoints of a run: what they hold (:data:`CHECKPOINT_FORMAT`), the config fields that
must match for a resume (:func:`config_key`), and reading one with torch's weights-only
loader (tensors and plain containers only, never code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sgdnoise.atomic import atomic_write

from .config import TrainConfig

__all__ = ["CHECKPOINT_FORMAT", "config_key", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "sgdnoise.train.checkpoint/2"

# TrainConfig fields added after records and checkpoints were first written, with the
# defaults that reproduce the behaviour from before them
LATE_FIELD_DEFAULTS: dict[str, Any] = {"warmup_steps": None, "sharpness_bn_mode": "eval"}


def config_key(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must match for a checkpoint to be resumed: all of them but
    ``divergence_check_every``, and the fields added last only when they differ from their
    defaults (so checkpoints written before them still match)."""
    d = cfg.to_dict()
    d.pop("divergence_check_every", None)
    for name, default in LATE_FIELD_DEFAULTS.items():
        if d.get(name) == default:
            d.pop(name)
    return d


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``state`` (the run's model, optimizer and sampler states, history, step, …) with its
    format tag, written atomically to ``path``."""
    atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint at ``path`` read with ``weights_only=True``: tensors and plain
    containers only, so a crafted file cannot run code (it is refused with a ValueError
    naming the file); a checkpoint of another config (:func:`config_key`) is refused,
    naming the fields that differ."""
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
    mine = config_key(cfg)
    if state["config"] != mine:
        diff = sorted(k for k in set(state["config"]) | set(mine)
                      if state["config"].get(k) != mine.get(k))
        raise ValueError(f"checkpoint {path} was written by a different config (fields "
                         f"{diff}); delete it or use another path")
    return state
