"""The one YAML reader of the package: chapter parameter files, sweep plans and the book's
configuration are read with :func:`load_yaml`.

They hold plain data, and anything else is refused before a value is used: a tag other
than the plain ones and the ``<<`` of a merge (``!!python/...`` included), a key that
appears twice in one mapping (at any depth: YAML would silently keep the last), a number
that is not finite (``.nan``, ``.inf``, or ``1.0e+999``, which overflows to infinity) and a
syntax error. Each refusal is one line: the file, the line, the key (dotted path, list
items as ``[i]``), the value and what is allowed. Bounds of the values themselves are the
business of their readers (:mod:`sgdnoise.params`, :mod:`sgdnoise.sweep`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["YamlError", "load_yaml", "loads_yaml"]

_PLAIN = ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")
PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in _PLAIN)
#: the ``<<`` key of a merge (``<<: *anchor``), plain data too: the plans share recipes so
MERGE_TAG = "tag:yaml.org,2002:merge"
ALLOWED = "plain data only: numbers, strings, true/false, null, lists and mappings"


class YamlError(ValueError):
    """A YAML file that is not plain, finite data with unique keys (one-line message)."""


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:")


def _at(source: str, node: Node) -> str:
    return f"{source}, line {node.start_mark.line + 1}"


def _key_text(path: str) -> str:
    return f"key {path!r}" if path else "the document"


def _check_scalar(loader: yaml.SafeLoader, node: ScalarNode, source: str, path: str) -> None:
    if node.tag.endswith(":float"):
        value = loader.construct_yaml_float(node)
        if not math.isfinite(value):
            raise YamlError(f"{_at(source, node)}: {_key_text(path)} has value {node.value}; "
                            "numbers must be finite (NaN and ±infinity are not allowed)")


def _is_merge_key(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == MERGE_TAG and node.value == "<<"


def _check_node(loader: yaml.SafeLoader, node: Node, source: str, path: str = "",
                seen: set[int] | None = None) -> None:
    """Walk the composed document: plain tags, unique keys, finite numbers. A node reached
    again through an alias is not walked twice (``seen``), so nested aliases cost no more
    than the document's size."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if node.tag not in PLAIN_TAGS and not _is_merge_key(node):
        raise YamlError(f"{_at(source, node)}: {_key_text(path)} has tag "
                        f"{_short_tag(node.tag)!r}; {ALLOWED}")
    if isinstance(node, ScalarNode):
        _check_scalar(loader, node, source, path)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_node(loader, item, source, f"{path}[{i}]", seen)
    elif isinstance(node, MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else str(key.start_mark)
            child = f"{path}.{name}" if path else str(name)
            _check_node(loader, key, source, child, seen)
            ident = (key.tag, name)
            if ident in first_line:
                raise YamlError(f"{_at(source, key)}: key {child!r} appears twice in one "
                                f"mapping (first on line {first_line[ident]}); each key may "
                                "appear once")
            first_line[ident] = key.start_mark.line + 1
            _check_node(loader, value, source, child, seen)


def _syntax_message(source: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
    what = " ".join(str(getattr(err, "problem", None) or err).split())
    context = getattr(err, "context", None)
    return f"{where}: not valid YAML: {what}" + (f" ({' '.join(context.split())})"
                                                 if context else "")


def loads_yaml(text: str, source: str = "<string>") -> Any:
    """Parse ``text`` (named ``source`` in errors) into Python data; None for an empty
    document. Raises :class:`YamlError` as described in the module docstring."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(loader, node, source)
        return loader.construct_document(node)
    except YamlError:
        raise
    except yaml.YAMLError as err:
        raise YamlError(_syntax_message(source, err)) from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike) -> Any:
    """Read the YAML file ``path`` with :func:`loads_yaml`; an unreadable file is a
    :class:`YamlError` too."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise YamlError(f"{path}: cannot be read ({why})") from None
    return loads_yaml(text, str(path))
