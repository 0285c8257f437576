"""Argument checks shared by every module (public, for chapter modules and researchers'
own code): each check returns the value (converted where it says so) or raises ValueError
naming the argument, its value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_matrix",
    "check_positive",
    "check_positive_int",
    "check_vector",
]


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as int if it is an integer >= 1, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is > 0 (or >= 0 with ``allow_zero``)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (x >= 0 if allow_zero else x > 0) or x != x:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return x


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_matrix(name: str, A: torch.Tensor, *, square: bool = False) -> torch.Tensor:
    """Raise ValueError unless ``A`` is a 2-D tensor (square if asked)."""
    if not isinstance(A, torch.Tensor) or A.ndim != 2:
        shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"{name} must be a 2-D tensor, got {shape}")
    if square and A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(A.shape)}")
    return A


def check_vector(name: str, v: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Raise ValueError unless ``v`` is a 1-D tensor (of length ``dim`` if given)."""
    if not isinstance(v, torch.Tensor) or v.ndim != 1:
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"{name} must be a 1-D tensor, got {shape}")
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"{name} must have length {dim}, got {v.shape[0]}")
    return v
