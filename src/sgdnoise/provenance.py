"""Where a number came from: package and torch versions, git commit, device, wall time.

Used by the sweep records and by the provenance cell that ends every chapter."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import sgdnoise


def git_commit(path: str | Path | None = None) -> str:
    """The current git commit (with ``-dirty`` if the tree has changes), or ``"unknown"``."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def device_description(device: str | torch.device | None = None) -> str:
    """A human-readable name of the device: the GPU model (``'cuda: NVIDIA H200'``), or the
    CPU with the threads PyTorch uses (``'cpu: x86_64, 1 thread'``)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    n = torch.get_num_threads()
    return f"cpu: {platform.processor() or platform.machine()}, {n} thread{'s' * (n != 1)}"


REPOSITORY = Path(__file__).resolve().parents[2]
# An absolute POSIX path: a slash at the start of a word, then path characters.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.@+-]+/)*[\w.@+-]*")


def _roots() -> list[tuple[str, str]]:
    """(absolute folder, what to write instead), longest first: the repository (written
    relative to it), the system's temporary folder, the home folder."""
    roots = [(str(REPOSITORY), ""), (tempfile.gettempdir(), "(temporary folder)"),
             ("/tmp", "(temporary folder)"), (os.path.expanduser("~"), "~")]
    return sorted({r for r in roots if r[0] not in ("", "/")}, key=lambda r: -len(r[0]))


def public_path(path: str | os.PathLike) -> str:
    """``path`` as a reader of the book may see it, without the layout of the machine that
    ran it: inside the repository relative to its root (``data/cifar-10-batches-py``), in the
    temporary folder ``(temporary folder)/name``, in the home folder ``~/name``, anywhere else
    only its last two parts (``…/folder/name``). A relative path is returned as it is."""
    text = os.fspath(path)
    if not text.startswith("/"):
        return text
    for root, instead in _roots():
        if text == root or text.startswith(root.rstrip("/") + "/"):
            rest = text[len(root):].lstrip("/")
            if not instead:
                return rest or "."
            return f"{instead}/{rest}" if rest else instead
    parts = [p for p in text.split("/") if p]
    return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else text


def public_text(text: str) -> str:
    """``text`` with every absolute path in it rewritten by :func:`public_path`."""
    return _ABSOLUTE_PATH.sub(lambda m: public_path(m.group(0)) if len(m.group(0)) > 1
                              else m.group(0), str(text))


@dataclass
class Provenance:
    """A record of the software and machine that produced a result."""

    sgdnoise_version: str = field(default_factory=lambda: sgdnoise.__version__)
    torch_version: str = field(default_factory=lambda: torch.__version__)
    python_version: str = field(default_factory=platform.python_version)
    git_commit: str = field(default_factory=git_commit)
    device: str = field(default_factory=device_description)
    created_utc: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(device: str | torch.device | None = None) -> Provenance:
    """Provenance of the current process on ``device``."""
    return Provenance(device=device_description(device))
