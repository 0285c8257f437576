"""One figure style for the whole book, the label every figure carries, a fixed colour per
quantity, and the checks a figure passes before it is shown.

The style is sized for the book's text column (about 700 px wide at a 1280 px window):
figures are :data:`FIGURE_WIDTH_IN` inches wide at :data:`DPI` dots per inch of the page, so
they are shown at (about) their natural size, and no text is smaller than
:data:`MIN_FONT_PT` points. They are rendered at :data:`RETINA` times that resolution
(:data:`PNG_DPI`) and shown at half their pixel width, so that text stays sharp on a
high-density screen. Text of ``s`` points in an image rendered at ``PNG_DPI`` whose natural
width ``w`` px is shown ``d`` pixels wide is ``s * PNG_DPI / 72 * d / w`` pixels high: 12.5 px
for 9 pt at its intended size. The browser test reads these constants and fails a page where
a figure's smallest text falls below 11 px.

Colours: :data:`PALETTE` is the Okabe–Ito palette, distinguishable with the common forms of
colour blindness; it has 8 colours, and :func:`check_series` (called by :func:`show`) refuses
an axis with more than :data:`MAX_SERIES` series.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DPI",
    "FIGURE_WIDTH_IN",
    "MAX_SERIES",
    "MIN_FONT_PT",
    "PALETTE",
    "PNG_DPI",
    "QUANTITY_COLORS",
    "RETINA",
    "check_series",
    "color_of",
    "colors_for",
    "rendered_text_px",
    "series_per_axis",
    "show",
    "source_label",
    "style_record",
    "use_style",
]

#: Dots per inch of the page: a figure ``w`` inches wide is shown ``w * DPI`` CSS pixels wide.
DPI = 100
#: The figures' pixel density relative to the page: PNGs carry ``RETINA`` pixels per CSS px.
RETINA = 2
#: Resolution of the PNG files (``savefig.dpi``): ``DPI * RETINA``.
PNG_DPI = DPI * RETINA
#: Default figure width in inches: ``FIGURE_WIDTH_IN * DPI`` = 680 CSS px, inside the column.
FIGURE_WIDTH_IN = 6.8
#: Smallest font size (points) the style uses, for tick labels and legends.
MIN_FONT_PT = 9.0
#: Font sizes (points) of the style.
FONT_SIZES_PT = {"font.size": 10.0, "axes.titlesize": 11.0, "axes.labelsize": 10.0,
                 "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT,
                 "legend.fontsize": MIN_FONT_PT, "legend.title_fontsize": MIN_FONT_PT,
                 "figure.titlesize": 11.0}
#: The most series (lines, marker sets, bar groups) one axis may hold: the palette's size.
MAX_SERIES = 8

#: Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, vermillion, reddish
#: purple, sky blue, black, yellow), spelled out so that colours never depend on a version.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
           "#F0E442")
#: A fixed colour for the quantities the chapters plot, the same in every panel and chapter.
QUANTITY_COLORS: dict[str, str] = {
    "sgd": PALETTE[0], "measured": PALETTE[0], "empirical": PALETTE[0],
    "gd": PALETTE[6], "full batch": PALETTE[6],
    "prediction": PALETTE[3], "theory": PALETTE[3],
    "isotropic": PALETTE[1], "anisotropic": PALETTE[2],
    "covariance": PALETTE[0], "fisher": PALETTE[2], "hessian": PALETTE[4],
    "gauss-newton": PALETTE[5], "train": PALETTE[0], "test": PALETTE[1],
}


def style_record() -> dict[str, Any]:
    """The numbers the style fixes (page and PNG dpi, figure width, font sizes, series per
    axis), e.g. for a test or a notebook's metadata."""
    return {"dpi": DPI, "png_dpi": PNG_DPI, "figure_width_in": FIGURE_WIDTH_IN,
            "min_font_pt": MIN_FONT_PT, "max_series": MAX_SERIES,
            "font_sizes_pt": dict(FONT_SIZES_PT)}


def use_style() -> None:
    """Seaborn's whitegrid theme with the Okabe–Ito palette, sized for the text column and
    rendered at twice the page's resolution.

    Sets ``figure.dpi`` to :data:`DPI` and ``savefig.dpi`` to :data:`PNG_DPI`, figures
    :data:`FIGURE_WIDTH_IN` inches wide, font sizes :data:`FONT_SIZES_PT` (none below
    :data:`MIN_FONT_PT`), legends with a frame so they stay readable over grid lines; in a
    notebook, the inline backend writes PNGs at :data:`RETINA` times the resolution with
    their display size in the output's metadata. :func:`style_record` lists the numbers.
    Returns None, so that a notebook cell ending with this call shows nothing.
    """
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette=list(PALETTE))
    mpl.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": PNG_DPI, "savefig.bbox": "tight",
        "figure.figsize": (FIGURE_WIDTH_IN, FIGURE_WIDTH_IN * 0.6),
        "legend.frameon": True, "legend.framealpha": 0.9, "lines.linewidth": 1.6,
        "axes.prop_cycle": mpl.cycler(color=list(PALETTE)),
        **FONT_SIZES_PT,
    })
    _inline_retina()


def _inline_retina() -> None:
    """In an IPython kernel with the inline backend: PNGs at twice the resolution."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


def rendered_text_px(font_pt: float, displayed_width: float, natural_width: float,
                     dpi: float = PNG_DPI) -> float:
    """Height in screen pixels of ``font_pt`` text in an image rendered at ``dpi`` whose
    natural width ``natural_width`` px is displayed ``displayed_width`` px wide."""
    if natural_width <= 0:
        raise ValueError(f"natural_width must be > 0, got {natural_width!r}")
    return font_pt * dpi / 72.0 * displayed_width / natural_width


def series_per_axis(fig: Any) -> list[tuple[str, int]]:
    """``(axis title, number of series)`` for every axis of ``fig``. A series is one legend
    entry when the axis has labelled artists (lines, marker sets, bars), else one drawn line
    or marker collection: what a reader has to tell apart by colour."""
    out = []
    for ax in fig.get_axes():
        labels = {lab for lab in ax.get_legend_handles_labels()[1] if not lab.startswith("_")}
        n = len(labels) if labels else len(ax.get_lines()) + len(ax.collections)
        out.append((ax.get_title() or ax.get_ylabel() or "an axis", n))
    return out


def check_series(fig: Any, max_series: int = MAX_SERIES) -> Any:
    """``fig`` unchanged, or ValueError naming the axis and its count when an axis has more
    than ``max_series`` series (:func:`series_per_axis`): beyond the palette's 8 colours
    series can no longer be told apart; split them over panels instead."""
    crowded = [(title, n) for title, n in series_per_axis(fig) if n > max_series]
    if crowded:
        listing = "; ".join(f"{title!r}: {n}" for title, n in crowded)
        raise ValueError(f"a figure axis holds more than max_series={max_series} series "
                         f"({listing}); split them over panels or fewer colours")
    return fig


def show(fig: Any) -> None:
    """Show ``fig`` in the notebook after :func:`check_series`, then close it (so that it is
    shown once). Returns None, so that a cell ending with this call shows nothing else."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    check_series(fig)
    display(fig)
    plt.close(fig)


def color_of(quantity: str) -> str:
    """The colour of a quantity: from :data:`QUANTITY_COLORS` (case-insensitive), else a
    palette colour chosen from a hash of the name, so the same name always gets the same
    colour in every panel and every chapter."""
    key = quantity.strip().lower()
    if key in QUANTITY_COLORS:
        return QUANTITY_COLORS[key]
    digest = hashlib.md5(key.encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def colors_for(quantities: Iterable[str]) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument: :func:`color_of` per name."""
    return {q: color_of(q) for q in quantities}


def source_label(profile: str, data_identity: Mapping[str, Any] | None = None) -> str:
    """A short line naming the profile and the data behind a figure, for titles:
    ``'profile: default · data: supplied copy, 2,000 training images'``."""
    if data_identity is None:
        return f"profile: {profile}"
    src = data_identity.get("source", "?")
    n = data_identity.get("n_train")
    extra = f", {n:,} training images" if isinstance(n, int) else ""
    return f"profile: {profile} · data: {src}{extra}"
