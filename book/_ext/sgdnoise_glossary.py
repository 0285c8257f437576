"""A Sphinx extension that links the first use of every glossary term on a page to its
definition (staged by book/build.py).

The book's glossary (``glossary.md``, a ``{glossary}`` directive) defines the terms the
chapters use without stopping to explain them (TOST, GGN, SLQ, Holm, arm, ...). Rather than
asking every chapter to write ``{term}`TOST``` by hand, this extension finds, once the
references are resolved, the first occurrence of each term in the prose of every page of
the book (chapters, front and back matter; not the API pages, the glossary itself,
headings, captions' numbers, code, math or existing links) and makes it a link to the
term's entry. Acronyms match case-sensitively, other terms in any case, with an optional
plural ``s``. Terms in :data:`EXPLICIT_ONLY` are common words in other senses and are linked
only where a page writes ``{term}`...``` itself.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes

#: Terms whose plain-word use mostly means something else ("power iteration", "data
#: points"): linked only by an explicit {term} role.
EXPLICIT_ONLY = {"points", "power", "profile", "reach ηS", "sharpness", "nats"}
GLOSSARY_DOC = "glossary"
#: Nodes whose text is never linked.
SKIP = (nodes.literal, nodes.literal_block, nodes.math, nodes.math_block, nodes.reference,
        nodes.title, nodes.term, nodes.raw, nodes.target, nodes.FixedTextElement,
        nodes.caption, nodes.label, nodes.citation_reference, nodes.footnote_reference)
CLASS = "sgdnoise-term"


def term_pattern(term: str) -> re.Pattern[str]:
    """Whole-word matches of ``term`` (an optional plural ``s``): case-sensitive for an
    acronym or a name (a capital letter in it), case-insensitive otherwise."""
    body = re.escape(term).replace(r"\ ", r"[\s\u00a0]+").replace(r"\-", r"[-\u2010\u2011]")
    flags = 0 if any(c.isupper() for c in term) else re.IGNORECASE
    return re.compile(rf"(?<![\w-]){body}s?(?![\w-])", flags)


def glossary_terms(env: Any) -> dict[str, tuple[str, str]]:
    """term -> (docname, anchor) of every term of the glossary page."""
    std = env.get_domain("std")
    return {name: (doc, anchor) for (objtype, name), (doc, anchor) in std.objects.items()
            if objtype == "term" and doc == GLOSSARY_DOC}


def _eligible(node: nodes.Text) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, SKIP) or "pre" in parent.get("classes", []) or (
                parent.tagname.startswith("desc")):
            return False
        parent = parent.parent
    return True


def link_first(doctree: nodes.document, pattern: re.Pattern[str], refuri: str) -> bool:
    """Make the first eligible match of ``pattern`` in ``doctree`` a link to ``refuri``."""
    for text in doctree.findall(nodes.Text):
        m = pattern.search(str(text))
        if m is None or not _eligible(text):
            continue
        value = str(text)
        link = nodes.reference("", "", nodes.Text(m.group(0)), refuri=refuri,
                               internal=True, classes=[CLASS])
        parts = [nodes.Text(value[:m.start()]), link, nodes.Text(value[m.end():])]
        parent = text.parent
        index = parent.index(text)
        parent.remove(text)
        for offset, part in enumerate(p for p in parts if not isinstance(p, nodes.Text)
                                      or str(p)):
            parent.insert(index + offset, part)
        return True
    return False


def link_terms(app: Any, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved``: link the first use of every glossary term on the page."""
    if docname == GLOSSARY_DOC or docname.startswith("api") or not hasattr(
            app.builder, "get_relative_uri"):
        return
    terms = glossary_terms(app.env)
    for term in sorted(terms, key=len, reverse=True):  # "true Fisher" before "Fisher"
        if term in EXPLICIT_ONLY:
            continue
        doc, anchor = terms[term]
        uri = app.builder.get_relative_uri(docname, doc) + "#" + anchor
        link_first(doctree, term_pattern(term), uri)


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-resolved", link_terms)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
