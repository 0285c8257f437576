"""Atomic file writes: a file is either its old or its new content, never a torn mix (the
new content goes to a temporary file in the same folder, is flushed to disk and then
renamed over the target). Used for training checkpoints, sweep records and the data
copy's checksum manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path`` (its folder is
    created), flush it to disk and rename it to ``path`` (``os.replace``: atomic on POSIX);
    return ``path``. The temporary file is removed when ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON with sorted keys (NaN and ±inf allowed), written atomically
    (:func:`atomic_write`)."""
    def write(tmp: Path) -> None:
        with tmp.open("w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=True)

    return atomic_write(path, write)
