"""A Sphinx extension for the book's figure numbers (staged by book/build.py).

The study part of the toc is not numbered (``numbered: false``: each chapter's title
carries its own number, "# 8. ..."), so Sphinx numbers figures through the whole book:
the third figure of chapter 8 would be "Fig. 32". This extension renumbers, after Sphinx
has assigned its numbers, every numbered figure (and table or code block) of a chapter page
``chapters/chNN_*`` as (NN, k), k counting from 1 in page order: "Fig. 8.3", in captions
and in ``{numref}`` references alike. Pages outside ``chapters/`` keep Sphinx's numbers.
"""

from __future__ import annotations

import re
from typing import Any

CHAPTER = re.compile(r"chapters/ch(\d+)_\w+")


def chapter_fignumbers(app: Any, env: Any) -> list[str]:
    """Rewrite ``env.toc_fignumbers`` of chapter pages to (chapter, k). Returns no extra
    documents to rewrite: the numbers are final before any page is written."""
    for docname, by_type in env.toc_fignumbers.items():
        m = CHAPTER.fullmatch(docname)
        if not m:
            continue
        chapter = int(m.group(1))
        for numbers in by_type.values():
            for k, figure_id in enumerate(sorted(numbers, key=numbers.get), start=1):
                numbers[figure_id] = (chapter, k)
    return []


def setup(app: Any) -> dict[str, Any]:
    # after the toctree collector (priority 500) has assigned the book-wide numbers
    app.connect("env-get-updated", chapter_fignumbers, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
