"""How chapter 9 shows its numbers: one colour per noise kind and one line style per kind
of configuration in every figure, tables that keep a verdict readable, and the paragraph
that states the scale of a run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from sgdnoise.noise import KINDS

from .experiment import step_matched_epochs
from .params import SMALL, STEPS_SUFFIX, Params

__all__ = ["config_style", "kind_palette", "run_scale_markdown", "styled_table"]

def kind_palette() -> dict[str, tuple[float, float, float]]:
    """One colour per noise kind ("none", i.e. large-batch SGD, in grey), the same in every
    figure of the chapter, picked from seaborn's colour-blind palette so that no two kinds
    share a hue family (no two oranges, no two pinks)."""
    import seaborn as sns

    cb = sns.color_palette("colorblind", 10)
    pick = {"none": 7, "isotropic": 1, "diag_fisher": 2, "subsampled": 0, "true_fisher": 4,
            "hessian": 5, "ggn": 9}
    return {kind: tuple(cb[pick[kind]]) for kind in KINDS}


def config_style(label: str, kind: str) -> tuple[tuple[float, float, float], str]:
    """``(colour, linestyle)`` of one configuration in every figure: the colour of its noise
    kind (:func:`kind_palette`; small-batch SGD black, large-batch SGD the colour of "none"),
    solid at the step-matched scale, dashed at the epoch-matched scale, dotted at equal
    steps."""
    colour = (0.0, 0.0, 0.0) if label == SMALL else kind_palette()[kind]
    style = ":" if label.endswith(STEPS_SUFFIX) else "--" if "(epoch T)" in label else "-"
    return colour, style


def styled_table(df: pd.DataFrame, formats: Mapping[str, str], *,
                 wrap: Sequence[str] = ("verdict",), rename: Mapping[str, str] | None = None):
    """A pandas Styler of ``df`` for the page: ``formats`` (column -> format string, e.g.
    ``"{:.3f}"``; NaN shown as "–"), no index, columns in ``wrap`` wrapping at word
    boundaries with a minimum width (so a verdict never wraps letter by letter), numeric
    columns kept on one line and text columns (names of configurations) wrapping at spaces,
    so that the table fits the text column; ``rename`` relabels columns (units in the
    names)."""
    shown = df.rename(columns=dict(rename or {}))
    fmts = {(rename or {}).get(k, k): v for k, v in formats.items()}
    wrapped = [c for c in ((rename or {}).get(w, w) for w in wrap) if c in shown.columns]
    numeric = [c for c in shown.columns if pd.api.types.is_numeric_dtype(shown[c])]
    sty = shown.style.format(fmts, na_rep="–").hide(axis="index")
    if numeric:
        sty = sty.set_properties(subset=numeric, **{"white-space": "nowrap"})
    if wrapped:
        sty = sty.set_properties(subset=wrapped, **{"white-space": "normal", "min-width": "13em"})
    return sty


def run_scale_markdown(p: Params, source: str, n_params: int) -> str:
    """The scale of this run in one Markdown paragraph: data, model, epochs and steps of
    each budget, seeds and the sizes of the noise estimates."""
    spe_b = math.ceil(p.n_train / p.small_batch)
    spe_B = math.ceil(p.n_train / p.large_batch)
    text = (f"**Scale of this run** (profile `{p.profile}`): {p.n_train} training and "
            f"{p.n_test} test images ({p.dataset}, {source}), model `{p.model}` of width "
            f"{p.width} ({n_params:,} parameters, normalisation: {p.norm}), {p.epochs} "
            f"epoch{'s' if p.epochs != 1 else ''} at "
            f"learning rate {p.lr} = {p.epochs * spe_b} small-batch steps or "
            f"{p.epochs * spe_B} large-batch steps, B/N = {p.large_batch / p.n_train:.2f}, "
            f"{len(p.seeds)} seeds, M = {p.num_samples} (gradient kinds), "
            f"{p.curvature_samples} (curvature kinds, {p.lanczos_steps} Lanczos steps).")
    if p.equal_steps:
        e = step_matched_epochs(p.n_train, p.small_batch, p.large_batch, p.epochs)
        text += (f" Equal-steps arm: {e} epochs at batch {p.large_batch} = {e * spe_B} "
                 f"large-batch steps against {p.epochs * spe_b} small-batch steps.")
    return text
