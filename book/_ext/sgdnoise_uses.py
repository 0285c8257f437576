"""A Sphinx extension that links the API reference back to where the book uses each object
(staged by book/build.py).

The chapters name the functions behind their figures, tables and verdicts with
``{py:func}`...``` (a figure caption's "Computed by ...", a verdict section's rule). While
each chapter page is read, this extension records every such Python reference with its
place: the figure that holds it (shown as "Fig. 8.1"), else the section (shown by its title).
On the API pages, each documented object that the book uses gets a last paragraph "Used in
the book: Fig. 8.1, The full-scale records (chapter 8), ..." whose entries link there. The
index is rebuilt on every build, so it can never disagree with the chapters.
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx import addnodes

CHAPTER = re.compile(r"chapters/ch(\d+)_\w+")
KEY = "sgdnoise_uses"
PY_ROLES = {"func", "class", "meth", "mod", "obj", "attr", "data", "exc"}


def _place(node: nodes.Node) -> tuple[str, str, str] | None:
    """(kind, anchor, title) of the figure or section that holds ``node``."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, nodes.figure) and parent.get("ids"):
            return ("figure", parent["ids"][0], "")
        if isinstance(parent, nodes.section) and parent.get("ids"):
            title = parent.next_node(nodes.title)
            return ("section", parent["ids"][0], title.astext() if title else "")
        parent = parent.parent
    return None


def collect_uses(app: Any, doctree: nodes.document) -> None:
    """``doctree-read``: record the Python references of a chapter page with their place."""
    docname = app.env.docname
    if not CHAPTER.fullmatch(docname):
        return
    uses = getattr(app.env, KEY, {})
    for ref in doctree.findall(addnodes.pending_xref):
        if ref.get("refdomain") != "py" or ref.get("reftype") not in PY_ROLES:
            continue
        place = _place(ref)
        if place is None:
            continue
        entry = (docname, *place)
        targets = uses.setdefault(str(ref["reftarget"]), [])
        if entry not in targets:
            targets.append(entry)
    setattr(app.env, KEY, uses)


def purge_uses(app: Any, env: Any, docname: str) -> None:
    uses = getattr(env, KEY, {})
    for target in list(uses):
        uses[target] = [u for u in uses[target] if u[0] != docname]
        if not uses[target]:
            del uses[target]


def merge_uses(app: Any, env: Any, docnames: Any, other: Any) -> None:
    uses = getattr(env, KEY, {})
    for target, entries in getattr(other, KEY, {}).items():
        mine = uses.setdefault(target, [])
        mine += [e for e in entries if e not in mine]
    setattr(env, KEY, uses)


def _label(env: Any, docname: str, kind: str, anchor: str, title: str) -> str:
    m = CHAPTER.fullmatch(docname)
    chapter = int(m.group(1)) if m else 0
    if kind == "figure":
        number = env.toc_fignumbers.get(docname, {}).get("figure", {}).get(anchor)
        if number:
            return "Fig. " + ".".join(str(n) for n in number)
    return f"{title} (chapter {chapter})" if title else f"chapter {chapter}"


def _link(env: Any, docname: str, uri: str, doc: str, kind: str, anchor: str,
          title: str) -> nodes.Node:
    """A link on page ``docname`` to a place: its label as text, or for a section whose
    title holds math the title's own nodes, math typeset (``sgdnoise_refs``)."""
    text = _label(env, doc, kind, anchor, title)
    ref = nodes.reference(text, text, refuri=uri, internal=True)
    if kind != "section" or not title:
        return ref
    from sgdnoise_refs import TEX, mark_math, section_title  # book/_ext, on Sphinx's path

    node = section_title(env, doc, anchor) if TEX.search(title) else None
    if node is None or not list(node.findall(nodes.math)):
        return ref
    ref.children = []
    mark_math(env, docname)
    ref += [c.deepcopy() for c in node.children
            if not (isinstance(c, nodes.reference) and "headerlink" in c["classes"])]
    ref += nodes.Text(text[len(title):])  # " (chapter n)"
    return ref


def add_back_links(app: Any, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved`` on an API page: a "Used in the book" paragraph for every
    documented object that a chapter refers to."""
    uses = getattr(app.env, KEY, {})
    if not docname.startswith("api/") or not uses:
        return
    for desc in doctree.findall(addnodes.desc):
        if desc.get("domain") != "py":
            continue
        signature = desc.next_node(addnodes.desc_signature)
        names = [i for i in (signature or {}).get("ids", [])] if signature else []
        places = [u for name in names for u in uses.get(name, [])]
        content = desc.next_node(addnodes.desc_content)
        if not places or content is None:
            continue
        para = nodes.paragraph(classes=["sgdnoise-used-in"])
        para += nodes.strong("Used in the book: ", "Used in the book: ")
        for k, (doc, kind, anchor, title) in enumerate(places):
            if k:
                para += nodes.Text(", ")
            uri = app.builder.get_relative_uri(docname, doc) + "#" + anchor
            para += _link(app.env, docname, uri, doc, kind, anchor, title)
        content += para


def setup(app: Any) -> dict[str, Any]:
    app.connect("doctree-read", collect_uses)
    app.connect("env-purge-doc", purge_uses)
    app.connect("env-merge-info", merge_uses)
    app.connect("doctree-resolved", add_back_links)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True,
            "env_version": 1}
