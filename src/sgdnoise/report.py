"""What ends every chapter: a provenance table (profile, parameters, versions, commit,
device, wall time, data identity)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from sgdnoise.provenance import collect


class Stopwatch:
    """Wall time since construction; ``str()`` gives e.g. ``'12.3 s'``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s"


def provenance_markdown(
    profile: str,
    params: Mapping[str, Any],
    *,
    wall_time_s: float,
    data_identity: Mapping[str, Any] | None = None,
    device: str | None = None,
) -> str:
    """A Markdown table recording how the chapter's outputs were produced."""
    prov = collect(device).to_dict()
    rows = [
        ("profile", profile),
        ("parameters", "`" + json.dumps(dict(params), sort_keys=True, default=str) + "`"),
        ("sgdnoise", prov["sgdnoise_version"]),
        ("torch", prov["torch_version"]),
        ("python", prov["python_version"]),
        ("git commit", f"`{prov['git_commit']}`"),
        ("device", prov["device"]),
        ("wall time", f"{wall_time_s:.1f} s"),
        ("executed (UTC)", prov["created_utc"]),
    ]
    if data_identity is not None:
        for key, value in data_identity.items():
            rows.append((f"data: {key}", f"`{value}`" if "md5" in key else str(value)))
    lines = ["| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)
