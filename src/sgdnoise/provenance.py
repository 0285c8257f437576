"""Where a number came from: package and torch versions, git commit, device, wall time.

Used by the sweep records and by the provenance cell that ends every chapter."""

from __future__ import annotations

import platform
import subprocess
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
    """A human-readable name of the device (GPU model, or CPU with its core count)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


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
