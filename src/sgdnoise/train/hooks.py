"""What a hook of the training loop sees (:class:`StepState`), the hook protocol
(:class:`TrainHook`) and the hook that ends a run after a number of steps
(:class:`StepBudget`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from sgdnoise.validate import check_positive_int

__all__ = ["StepBudget", "StepState", "TrainHook"]


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
    optimizer: Any


class TrainHook(Protocol):
    """A hook of :func:`sgdnoise.train.train`; both methods are optional (looked up with
    ``getattr``)."""

    def on_step(self, state: StepState) -> bool | None:  # pragma: no cover - protocol
        """After every step; return True to stop the run."""

    def on_eval(self, record: dict[str, Any]) -> None:  # pragma: no cover - protocol
        """After every evaluation, with its record."""


class StepBudget:
    """A :class:`TrainHook` that stops a run after ``steps`` optimizer steps (the run ends
    with status ``"stopped"``, or ``"finished"`` if it reaches its own end first)."""

    def __init__(self, steps: int) -> None:
        self.steps = check_positive_int("steps", steps)

    def on_step(self, state: StepState) -> bool:
        return state.step >= self.steps
