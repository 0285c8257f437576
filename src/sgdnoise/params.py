"""The one way to declare and validate a parameter: chapter parameters, training configs
and sweep plans.

A parameter is declared once, as a dataclass field made by :func:`param` (its bounds,
allowed values, minimum list length, default and a one-line doc); its kind comes from the
field's annotation. :func:`check_declared` checks every declared field of an object, and
a refused value raises :class:`ParamError`, a ValueError that carries the parameter's name
(``field``), the value and the rule it broke (``rule``) as attributes, so that a caller
(a plan's validator naming the plan key, say) rewords it without reading the message.

Users: every chapter's frozen ``Params`` (a :class:`ChapterParams` subclass: one YAML file
per chapter and profile, checked before any work), :class:`sgdnoise.train.TrainConfig`
and the sections of a sweep plan (:mod:`sgdnoise.sweep.plan`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .yamlio import load_yaml

__all__ = [
    "CEILING",
    "PROFILES",
    "ChapterParams",
    "Param",
    "ParamError",
    "check_declared",
    "check_names",
    "declared",
    "load_profile",
    "param",
    "validate",
]

PROFILES = ("smoke", "default", "full")
#: Bounds of numeric parameters that declare none (inclusive, by kind): a typo such as
#: ``runs: 10**15`` is refused instead of running until killed. The largest value of any
#: shipped profile is 200,000. A parameter that may be larger says so (``high=math.inf``).
CEILING = {"int": 10**7, "float": 1e9}
_SCALARS = ("int", "float", "str", "bool")


class ParamError(ValueError):
    """A value its declaration refuses. ``field``: the parameter's name (``name[i]`` for an
    item of a list); ``value``: what was given; ``rule``: what is allowed, as a phrase
    (``"must be >= 1"``). The message is ``"<subject> <rule>, got <value>"``."""

    def __init__(self, field: str, value: Any, rule: str, message: str | None = None) -> None:
        self.field, self.value, self.rule = field, value, rule
        super().__init__(message or f"parameter {field!r} {rule}, got {value!r}")


@dataclass(frozen=True)
class Param:
    """What one parameter may be.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``list[int]``,
    ``list[float]``, ``list[str]``; ``optional`` also allows None. ``low``/``high`` bound
    numbers (and each list item), inclusive unless ``low_open``/``high_open``; a number
    without a declared bound lies within ``±CEILING[kind]`` and every float must be finite.
    ``choices`` restricts values (or list items)."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: Sequence[Any] | None = None
    min_len: int = 1
    optional: bool = False
    low_open: bool = False
    high_open: bool = False

    def check(self, name: str, value: Any, *, subject: str | None = None) -> Any:
        """``value`` checked and coerced (a float kind turns an int into a float, a list
        kind checks every item); raise :class:`ParamError` naming ``name``. ``subject``:
        how the message names the parameter (default ``"parameter '<name>'"``)."""
        try:
            return self._check(name, value)
        except ParamError as err:
            if subject is None:
                raise
            raise ParamError(err.field, err.value, err.rule,
                             f"{subject} {err.rule}, got {err.value!r}") from None

    def _check(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if self.kind.startswith("list["):
            item_kind = self.kind[5:-1]
            if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
                raise ParamError(name, value, f"must be a list of {item_kind} with at least "
                                              f"{self.min_len} item(s)")
            item = Param(item_kind, self.low, self.high, self.choices,
                         low_open=self.low_open, high_open=self.high_open)
            return [item._check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        value = _coerce(name, self.kind, value, self.optional)
        if self.kind in CEILING:
            self._check_bounds(name, value)
        if self.choices is not None and value not in self.choices:
            raise ParamError(name, value, f"must be one of {list(self.choices)}")
        return value

    def _check_bounds(self, name: str, value: float) -> None:
        cap = CEILING[self.kind]
        note = f" (the ceiling of {self.kind} parameters without a declared bound)"
        low = self.low if self.low is not None else -cap
        high = self.high if self.high is not None else cap
        if value < low or (self.low_open and value == low):
            rule = f"must be {'>' if self.low_open else '>='} {low}"
            raise ParamError(name, value, rule + (note if self.low is None else ""))
        if value > high or (self.high_open and value == high):
            rule = f"must be {'<' if self.high_open else '<='} {high}"
            raise ParamError(name, value, rule + (note if self.high is None else ""))


def _coerce(name: str, kind: str, value: Any, optional: bool = False) -> Any:
    null = "null or " if optional else ""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(name, value, f"must be {null}true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(name, value, f"must be {null}an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(name, value, f"must be {null}a number")
        if not math.isfinite(value):
            raise ParamError(name, value, f"must be {null}a finite number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ParamError(name, value, f"must be {null}a string")
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


# --------------------------------------------------------------------------- declarations

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
    return name.replace(" ", "").replace(",...", ", ...").replace("|", " | ")


def param(
    *,
    default: Any = MISSING,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
    min_len: int = 1,
    low_open: bool = False,
    high_open: bool = False,
    doc: str = "",
) -> Any:
    """Declare one field of a dataclass checked by :func:`check_declared` (a
    :class:`ChapterParams` subclass, :class:`sgdnoise.train.TrainConfig`, a plan section):
    its bounds (inclusive unless ``low_open``/``high_open``; for numbers and each list
    item), allowed values, minimum list length, ``default`` (none: the field is required)
    and a one-line ``doc``.

    The kind comes from the field's annotation: ``int``, ``float``, ``str``, ``bool`` or
    ``tuple[int | float | str, ...]`` (YAML lists are accepted and stored as tuples);
    ``X | None`` also allows None."""
    meta = {"param": dict(low=low, high=high, choices=choices, min_len=min_len,
                          low_open=low_open, high_open=high_open, doc=doc)}
    return field(default=default, metadata=meta)


def declared(cls: Any) -> dict[str, Param]:
    """The :class:`Param` of every field of the dataclass ``cls`` declared with
    :func:`param`, by name, in field order."""
    out = {}
    for f in fields(cls):
        spec = f.metadata.get("param")
        if spec is None:
            continue
        name = _annotation_name(f.type)
        optional = name.endswith(" | None")
        kind = _KINDS.get(name.removesuffix(" | None"))
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported annotation {f.type!r}")
        out[f.name] = Param(kind, spec["low"], spec["high"], spec["choices"],
                            spec["min_len"], optional, spec["low_open"], spec["high_open"])
    return out


def check_declared(obj: Any, *, subject: str = "parameter {name!r}") -> dict[str, Any]:
    """Check every declared field of the dataclass instance ``obj`` (:func:`declared`);
    return the checked values by name (coerced: floats for float kinds, lists for list
    kinds). A refused value raises :class:`ParamError` whose message names the field as
    ``subject`` (formatted with ``name``)."""
    return {name: spec.check(name, getattr(obj, name), subject=subject.format(name=name))
            for name, spec in declared(type(obj)).items()}


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
        for name, value in check_declared(self).items():
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
        self.check()

    def check(self) -> None:
        """Cross-field checks of a subclass (raise ValueError naming the parameters)."""

    def require(self, condition: bool, name: str, message: str) -> None:
        """Raise :class:`ParamError` (``"parameter 'name' = value: message"``) unless
        ``condition``."""
        if not condition:
            value = getattr(self, name)
            raise ParamError(name, value, message, f"parameter {name!r} = {value!r}: {message}")

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
