"""One figure style for the whole book, and the label every figure carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def use_style() -> None:
    """Seaborn's paper-friendly theme with the book's palette."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titlesize": 11})


def source_label(profile: str, data_identity: Mapping[str, Any] | None = None) -> str:
    """A short line naming the profile and the data behind a figure, for titles."""
    if data_identity is None:
        return f"profile: {profile}"
    src = data_identity.get("source", "?")
    n = data_identity.get("n_train")
    extra = f", n_train={n}" if n is not None else ""
    return f"profile: {profile} · data: {src}{extra}"
