"""Chapter parameters: one YAML file per chapter and profile, validated before any work.

A chapter declares what it accepts as a dict of :class:`Param` and calls
:func:`validate` on the values papermill injected; a bad value stops the chapter with a
message that names the parameter, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .yamlio import load_yaml

PROFILES = ("smoke", "default", "full")
#: Bounds of numeric parameters that declare none (inclusive, by kind): a typo such as
#: ``runs: 10**15`` is refused instead of running until killed. The largest value of any
#: shipped profile is 200,000.
CEILING = {"int": 10**7, "float": 1e9}


@dataclass(frozen=True)
class Param:
    """What one parameter may be.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``list[int]``,
    ``list[float]``, ``list[str]``. ``low``/``high`` bound numbers (and each list item),
    inclusive; a number without a declared bound lies within ``±CEILING[kind]`` and every
    float must be finite. ``choices`` restricts values (or list items)."""

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
        if self.kind in CEILING:
            self._check_bounds(name, value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"parameter {name!r} must be one of {list(self.choices)}, got {value!r}"
            )
        return value

    def _check_bounds(self, name: str, value: float) -> None:
        cap = CEILING[self.kind]
        note = f" (the ceiling of {self.kind} parameters without a declared bound)"
        low = self.low if self.low is not None else -cap
        high = self.high if self.high is not None else cap
        if value < low:
            raise ValueError(f"parameter {name!r} must be >= {low}"
                             f"{note if self.low is None else ''}, got {value!r}")
        if value > high:
            raise ValueError(f"parameter {name!r} must be <= {high}"
                             f"{note if self.high is None else ''}, got {value!r}")


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
        if not math.isfinite(value):
            raise ValueError(f"parameter {name!r} must be a finite number, got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"parameter {name!r} must be a string, got {value!r}")
        return value
    raise ValueError(f"unknown parameter kind {kind!r} for {name!r}")


def validate(values: Mapping[str, Any], spec: Mapping[str, Param]) -> dict[str, Any]:
    """Check ``values`` against ``spec``; return the checked (coerced) values.

    Unknown names and missing names are errors too."""
    check_names(values, spec)
    return {name: spec[name].check(name, values[name]) for name in spec}


def check_names(values: Mapping[str, Any], names: Iterable[str]) -> None:
    """Raise ValueError naming the unknown parameters of ``values`` (with the allowed
    ``names``) or the missing ones."""
    allowed = set(names)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(allowed - set(values))
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read one parameter file (a flat YAML mapping) with :func:`sgdnoise.yamlio.load_yaml`:
    plain data, unique keys and finite numbers, else a one-line ValueError naming the file
    and the line."""
    path = Path(path)
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a parameter file must hold a mapping, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- chapter params

_KINDS = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "tuple[int, ...]": "list[int]",
    "tuple[float, ...]": "list[float]",
    "tuple[str, ...]": "list[str]",
}


def _annotation_name(t: Any) -> str:
    name = t.__name__ if isinstance(t, type) else str(t)
    return name.replace(" ", "").replace(",...", ", ...")


def param(
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
    min_len: int = 1,
    doc: str = "",
) -> Any:
    """Declare one field of a :class:`ChapterParams` subclass: its bounds (inclusive, for
    numbers and each list item), allowed values, minimum list length and a one-line ``doc``.

    The kind comes from the field's annotation: ``int``, ``float``, ``str``, ``bool`` or
    ``tuple[int | float | str, ...]`` (YAML lists are accepted and stored as tuples)."""
    return field(metadata={"param": dict(low=low, high=high, choices=choices,
                                         min_len=min_len, doc=doc)})


@dataclass(frozen=True)
class ChapterParams:
    """Base of every chapter's frozen ``Params``: the one declaration of its parameters.

    A subclass lists its fields with :func:`param`; construction checks every field (the
    message names the parameter, the value and what is allowed) and then calls
    :meth:`check` for cross-field rules. Values come from the notebook's parameters cell
    (:meth:`from_namespace`), a profile file (:meth:`from_yaml`) or a mapping
    (:meth:`from_mapping`); unknown and missing names are errors."""

    profile: str = param(choices=PROFILES, doc="which profile produced these values")

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = f.metadata.get("param")
            if spec is None:
                continue
            kind = _KINDS.get(_annotation_name(f.type))
            if kind is None:
                raise TypeError(
                    f"{type(self).__name__}.{f.name}: unsupported annotation {f.type!r}"
                )
            checked = Param(kind, spec["low"], spec["high"], spec["choices"],
                            spec["min_len"]).check(f.name, getattr(self, f.name))
            if kind.startswith("list["):
                checked = tuple(checked)
            object.__setattr__(self, f.name, checked)
        self.check()

    def check(self) -> None:
        """Cross-field checks of a subclass (raise ValueError naming the parameters)."""

    def require(self, condition: bool, name: str, message: str) -> None:
        """Raise ``ValueError("parameter 'name' ...: message")`` unless ``condition``."""
        if not condition:
            raise ValueError(f"parameter {name!r} = {getattr(self, name)!r}: {message}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def docs(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("param", {}).get("doc", "") for f in fields(cls)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Any:
        names = cls.names()
        check_names(values, names)
        return cls(**{n: values[n] for n in names})

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Any:
        """Pick this class's fields out of a namespace (a notebook's ``globals()``)."""
        missing = [n for n in cls.names() if n not in namespace]
        if missing:
            raise ValueError(f"missing parameter(s) {missing}")
        return cls(**{n: namespace[n] for n in cls.names()})

    @classmethod
    def from_yaml(cls, path: str | Path) -> Any:
        values = load_profile(path)  # its errors name the file already
        try:
            return cls.from_mapping(values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}
