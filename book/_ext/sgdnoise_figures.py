"""A Sphinx extension that gives every figure an alt text saying what it shows (staged by
book/build.py).

Notebook figures carry a caption (``mystnb={"figure": {"caption": ...}}``) but their image
has no alt text of its own (a screen reader would read the file name). Once the references
are resolved, this extension sets the alt text of each image inside a figure to the
figure's caption without its closing "Computed by ..." sentence, which names code rather
than content, prefixed with "Figure: ". An image that already has an alt text keeps it.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes


def alt_text(caption: str) -> str:
    """``'Figure: '`` and ``caption`` without its last sentence when that sentence starts
    with "Computed by" (it names the code, not what is shown), on one line."""
    text = " ".join(caption.split())
    cut = text.rfind("Computed by ")
    if cut >= 0 and not re.search(r"\.\s+[A-Z]", text[cut:]):
        text = text[:cut].strip()
    return f"Figure: {text}" if text else "Figure"


def figure_alt_texts(app: Any, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved``: set the alt text of every image of a captioned figure."""
    for figure in doctree.findall(nodes.figure):
        captions = [c for c in figure.findall(nodes.caption)]
        if not captions:
            continue
        alt = alt_text(captions[0].astext())
        for image in figure.findall(nodes.image):
            if not image.get("alt") or image["alt"] == image.get("uri"):
                image["alt"] = alt


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-resolved", figure_alt_texts)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
