"""Chapter parameters: one YAML file per chapter and profile, validated before any work.

A chapter declares what it accepts as a dict of :class:`Param` and calls
:func:`validate` on the values papermill injected; a bad value stops the chapter with a
message that names the parameter, the value and what is allowed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "default", "full")


@dataclass(frozen=True)
class Param:
    """What one parameter may be.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``list[int]``,
    ``list[float]``, ``list[str]``. ``low``/``high`` bound numbers (and each list item),
    inclusive; ``choices`` restricts values (or list items)."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: Sequence[Any] | None = None
    min_len: int = 1

    def check(self, name: str, value: Any) -> Any:
        if self.kind.startswith("list["):
            item_kind = self.kind[5:-1]
            if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
                raise ValueError(
                    f"parameter {name!r} must be a list of {item_kind} with at least "
                    f"{self.min_len} item(s), got {value!r}"
                )
            item = Param(item_kind, self.low, self.high, self.choices)
            return [item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        value = _coerce(name, self.kind, value)
        if self.low is not None and value < self.low:
            raise ValueError(f"parameter {name!r} must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"parameter {name!r} must be <= {self.high}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"parameter {name!r} must be one of {list(self.choices)}, got {value!r}"
            )
        return value


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter {name!r} must be a number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"parameter {name!r} must be a string, got {value!r}")
        return value
    raise ValueError(f"unknown parameter kind {kind!r} for {name!r}")


def validate(values: Mapping[str, Any], spec: Mapping[str, Param]) -> dict[str, Any]:
    """Check ``values`` against ``spec``; return the checked (coerced) values.

    Unknown names and missing names are errors too."""
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; allowed: {sorted(spec)}")
    missing = sorted(set(spec) - set(values))
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")
    return {name: spec[name].check(name, values[name]) for name in spec}


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read one parameter file (a flat YAML mapping)."""
    path = Path(path)
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a parameter file must hold a mapping, got {type(data).__name__}")
    return data
