"""One figure style for the whole book, the label every figure carries and a fixed colour per
quantity.

The style is sized for the book's text column (about 700 px wide at a 1280 px window):
figures are :data:`FIGURE_WIDTH_IN` inches wide at :data:`DPI` dots per inch, so they are
shown at (about) their natural size, and no text is smaller than :data:`MIN_FONT_PT`
points. Text of ``s`` points in an image of natural width ``w`` shown ``d`` pixels wide is
rendered ``s * DPI / 72 * d / w`` pixels high: 12.5 px for 9 pt at natural size. The
browser test reads these constants and fails a page where a figure's smallest text falls
below 9 px. Chapters should not pass font sizes below :data:`MIN_FONT_PT`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DPI",
    "FIGURE_WIDTH_IN",
    "MIN_FONT_PT",
    "QUANTITY_COLORS",
    "color_of",
    "colors_for",
    "rendered_text_px",
    "source_label",
    "style_record",
    "use_style",
]

#: Resolution of every figure (``figure.dpi`` and ``savefig.dpi``).
DPI = 100
#: Default figure width in inches: ``FIGURE_WIDTH_IN * DPI`` = 680 px, inside the column.
FIGURE_WIDTH_IN = 6.8
#: Smallest font size (points) the style uses, for tick labels and legends.
MIN_FONT_PT = 9.0
#: Font sizes (points) of the style.
FONT_SIZES_PT = {"font.size": 10.0, "axes.titlesize": 11.0, "axes.labelsize": 10.0,
                 "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT,
                 "legend.fontsize": MIN_FONT_PT, "legend.title_fontsize": MIN_FONT_PT,
                 "figure.titlesize": 11.0}

# seaborn's "colorblind" palette, spelled out so that the colours never depend on a version.
_PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
            "#949494", "#ece133", "#56b4e9")
#: A fixed colour for the quantities the chapters plot, the same in every panel and chapter.
QUANTITY_COLORS: dict[str, str] = {
    "sgd": _PALETTE[0], "measured": _PALETTE[0], "empirical": _PALETTE[0],
    "gd": _PALETTE[7], "full batch": _PALETTE[7],
    "prediction": _PALETTE[3], "theory": _PALETTE[3],
    "isotropic": _PALETTE[1], "anisotropic": _PALETTE[2],
    "covariance": _PALETTE[0], "fisher": _PALETTE[2], "hessian": _PALETTE[4],
    "gauss-newton": _PALETTE[5], "train": _PALETTE[0], "test": _PALETTE[1],
}


def style_record() -> dict[str, Any]:
    """The numbers the style fixes (dpi, figure width, font sizes), e.g. for a test or a
    notebook's metadata."""
    return {"dpi": DPI, "figure_width_in": FIGURE_WIDTH_IN, "min_font_pt": MIN_FONT_PT,
            "font_sizes_pt": dict(FONT_SIZES_PT)}


def use_style() -> None:
    """Seaborn's whitegrid theme with the colorblind palette, sized for the text column.

    Sets ``figure.dpi`` and ``savefig.dpi`` to :data:`DPI`, figures :data:`FIGURE_WIDTH_IN`
    inches wide, font sizes :data:`FONT_SIZES_PT` (none below :data:`MIN_FONT_PT`), legends
    with a frame so they stay readable over grid lines. :func:`style_record` lists them.
    Returns None, so that a notebook cell ending with this call shows nothing.
    """
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette=list(_PALETTE))
    mpl.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": DPI, "savefig.bbox": "tight",
        "figure.figsize": (FIGURE_WIDTH_IN, FIGURE_WIDTH_IN * 0.6),
        "legend.frameon": True, "legend.framealpha": 0.9, "lines.linewidth": 1.6,
        **FONT_SIZES_PT,
    })


def rendered_text_px(font_pt: float, displayed_width: float, natural_width: float,
                     dpi: float = DPI) -> float:
    """Height in screen pixels of ``font_pt`` text in an image rendered at ``dpi`` whose
    natural width ``natural_width`` px is displayed ``displayed_width`` px wide."""
    if natural_width <= 0:
        raise ValueError(f"natural_width must be > 0, got {natural_width!r}")
    return font_pt * dpi / 72.0 * displayed_width / natural_width


def color_of(quantity: str) -> str:
    """The colour of a quantity: from :data:`QUANTITY_COLORS` (case-insensitive), else a
    palette colour chosen from a hash of the name, so the same name always gets the same
    colour in every panel and every chapter."""
    key = quantity.strip().lower()
    if key in QUANTITY_COLORS:
        return QUANTITY_COLORS[key]
    digest = hashlib.md5(key.encode()).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


def colors_for(quantities: Iterable[str]) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument: :func:`color_of` per name."""
    return {q: color_of(q) for q in quantities}


def source_label(profile: str, data_identity: Mapping[str, Any] | None = None) -> str:
    """A short line naming the profile and the data behind a figure, for titles."""
    if data_identity is None:
        return f"profile: {profile}"
    src = data_identity.get("source", "?")
    n = data_identity.get("n_train")
    extra = f", n_train={n}" if n is not None else ""
    return f"profile: {profile} · data: {src}{extra}"
