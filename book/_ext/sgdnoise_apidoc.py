"""A Sphinx extension for the book's API reference (staged by book/build.py).

The package's docstrings are written for readers of the source: many use unicode math,
``|...|`` for norms and indented continuation lines that reStructuredText reads as
substitutions, block quotes or broken definition lists. Rendered as reST they would produce
docutils warnings, and the book is built with warnings as errors.

This extension checks each docstring before autodoc renders it: a docstring that parses
without a docutils warning is rendered as usual; one that does not is shown verbatim (as a
literal block, every character kept), and its name and the first warning are logged (not
as a warning) so that the docstring can be fixed. Nothing else is relaxed: warnings from
the book's own pages, from autodoc itself (an import failure) or from cross-references
still fail the build.
"""

from __future__ import annotations

import io
import re
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)
ROLE = re.compile(r":(?:[a-zA-Z]+:)+`([^`]*)`")
VERBATIM: list[tuple[str, str]] = []


def first_problem(text: str) -> str | None:
    """The first docutils warning (or worse) that ``text`` produces, None when it is clean.
    Sphinx roles (``:func:`x```) are read as literals for the check."""
    from docutils.core import publish_doctree

    stream = io.StringIO()
    publish_doctree(ROLE.sub(r"``\1``", text), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": stream,
        "file_insertion_enabled": False, "raw_enabled": False})
    out = stream.getvalue().strip()
    return out.splitlines()[0] if out else None


def process_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                      lines: list[str]) -> None:
    if not lines:
        return
    problem = first_problem("\n".join(lines))
    if problem is None:
        return
    VERBATIM.append((name, problem))
    logger.info(f"[sgdnoise_apidoc] {name}: docstring shown verbatim ({problem})")
    lines[:] = [".. code-block:: text", ""] + [
        f"    {line}" if line else "" for line in lines] + [""]


def report(app: Any, exception: Exception | None) -> None:
    if VERBATIM:
        logger.info(f"[sgdnoise_apidoc] {len(VERBATIM)} docstring(s) shown verbatim; "
                    "fix them to have them rendered")


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("build-finished", report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
