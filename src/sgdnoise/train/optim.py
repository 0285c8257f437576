"""The optimizers the engine builds itself: torch's SGD as a config says
(:func:`default_optimizer`), and :class:`PlainSGD` for small dense problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from sgdnoise.validate import check_positive

from .config import TrainConfig

__all__ = ["PlainSGD", "default_optimizer"]


def default_optimizer(cfg: TrainConfig, kind: str = "default"
                      ) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """``model -> torch.optim.SGD`` with the rate, momentum, weight decay and Nesterov flag
    of ``cfg``; ``kind`` as :attr:`sgdnoise.train.EnginePaths.optimizer` (``"fused"``,
    ``"single"`` or ``"default"``)."""
    kw: dict[str, Any] = {"fused": {"fused": True}, "single": {"foreach": False}}.get(kind, {})

    def factory(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, **kw)

    return factory


class PlainSGD:
    """Plain SGD, ``θ ← θ − η ∇θ`` for every parameter with a gradient: the update of
    ``torch.optim.SGD`` without momentum or weight decay, to the bit
    (``p.add_(p.grad, alpha=-lr)``), with the part of the optimizer interface the engine
    uses (``param_groups``, ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``).

    For small dense problems, where one step takes a fraction of a millisecond: it skips
    the per-call hooks and profiler records of ``torch.optim``, a quarter to a third of such
    a step on the CPU (see ``optimizer_factory`` of :func:`sgdnoise.train.train`)."""

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
        """The groups' settings (``lr``, and ``initial_lr`` once the engine set it)."""
        return {"param_groups": [{k: v for k, v in g.items() if k != "params"}
                                 for g in self.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = state["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state has {len(groups)} parameter groups, this optimizer "
                             f"{len(self.param_groups)}")
        for group, saved in zip(self.param_groups, groups, strict=True):
            group.update(saved)
