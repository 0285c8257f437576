"""A reference to a section whose title holds math shows that math typeset.

Sphinx writes the link text of ``{ref}`label``` from the title's plain text, so a title
"How close are $D$, $\\hat F$ ... ?" becomes the link "How close are D, \\hat F ...": raw TeX
on the page (the verdict tables link every claim to its evidence this way). After the
references are resolved, such a link gets a copy of the title's own nodes, math included.
"""

from __future__ import annotations

import re
from typing import Any

TEX = re.compile(r"\\[A-Za-z]+|[_^]\{|[_^]\w")


def section_title(env: Any, docname: str, node_id: str) -> Any | None:
    """The title node of the section of ``docname`` with the id ``node_id`` (a label
    before a heading is one of its section's ids), or None."""
    from docutils import nodes

    doctree = env.get_doctree(docname)
    for section in doctree.findall(nodes.section):
        if node_id in section["ids"] and section.children and isinstance(
                section[0], nodes.title):
            return section[0]
    return None


def mark_math(env: Any, docname: str) -> None:
    """Tell Sphinx's MathJax setup that ``docname`` holds math (it decides per page, from
    what it read; math added when references are resolved would stay untypeset)."""
    env.get_domain("math").data["has_equations"][docname] = True


def _target(env: Any, ref: Any, text: str) -> tuple[str, str] | None:
    """(docname, section id) of the label whose title text a std-ref link shows."""
    uri = ref.get("refuri", "")
    node_id = ref.get("refid") or uri.partition("#")[2]
    if not node_id:
        return None
    for docname, labelid, sectname in env.domaindata["std"]["labels"].values():
        if labelid == node_id and sectname == text:
            return docname, labelid
    return None


def typeset_section_links(app: Any, doctree: Any, fromdocname: str) -> None:
    """``doctree-resolved``: each internal link whose text is a section title with TeX in
    it gets the title's nodes (math typeset, header link left out)."""
    from docutils import nodes

    env = app.builder.env
    for ref in list(doctree.findall(nodes.reference)):
        inner = ref.children[0] if len(ref.children) == 1 else None
        if not isinstance(inner, nodes.inline) or "std-ref" not in inner["classes"]:
            continue
        text = inner.astext()
        if not TEX.search(text):
            continue
        target = _target(env, ref, text)
        title = section_title(env, *target) if target else None
        if title is None or not list(title.findall(nodes.math)):
            continue
        inner.children = []
        mark_math(env, fromdocname)
        for child in title.children:
            if not (isinstance(child, nodes.reference) and "headerlink" in child["classes"]):
                inner += child.deepcopy()


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-resolved", typeset_section_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
