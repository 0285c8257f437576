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

Math in code notation (issue 12). The docstrings state math in plain unicode, e.g.
``θ ← θ − η (g_B + √s · ξ)`` or ``Σ_{j≤k} u_jᵀ D u_j / tr D``: readable in ``help()`` and in
an editor, but in proportional prose on a page it reads like TeX that failed to typeset.
Without changing the docstrings, :func:`math_as_code` shows it as code:

- an indented formula block (a block quote whose lines are formulas, such as the update
  rule of :mod:`sgdnoise.noise`) becomes a literal block of class ``sgdnoise-formula``, its
  alignment kept (a line too long for the column wraps, see
  ``sgdnoise_apidoc_static/sgdnoise_apidoc.css``); a formula line that also holds a
  cross-reference keeps the reference and has its formula part made an inline literal;
- in prose, a maximal run of whitespace-separated tokens that holds a plain subscript or
  superscript (``g_B``, ``Σ_{j≤k}``, ``H₊^{1/2}``, an identifier such as ``n_train``) and
  otherwise only symbols, operators and short math names (``λ_k / λ_{k+1}``,
  ``ξ ~ N(0, Σ_kind)``) becomes an inline literal.

Existing markup (literals, roles, emphasis, links), list markers, field markers, literal
blocks, directives and doctests are left as they are. The result is checked: when it does
not parse cleanly, or its text or its number of literals is not what the rewrite intended,
the docstring is rendered as written (and that is logged). Parameter names in the
``Parameters`` lists that ``autodoc_typehints = "description"`` writes are set in code as
well (:func:`code_parameter_names`).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from sphinx.util import logging

logger = logging.getLogger(__name__)
ROLE = re.compile(r":(?:[a-zA-Z]+:)+`([^`]*)`")
VERBATIM: list[tuple[str, str]] = []
UNCHANGED: list[tuple[str, str]] = []  # docstrings whose math rewrite was refused


def _doctree(text: str) -> tuple[Any, str]:
    """The docutils doctree of ``text`` (Sphinx roles read as literals) and its warnings."""
    from docutils.core import publish_doctree

    stream = io.StringIO()
    tree = publish_doctree(ROLE.sub(r"``\1``", text), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": stream,
        "file_insertion_enabled": False, "raw_enabled": False})
    return tree, stream.getvalue().strip()


def first_problem(text: str) -> str | None:
    """The first docutils warning (or worse) that ``text`` produces, None when it is clean.
    Sphinx roles (``:func:`x```) are read as literals for the check."""
    out = _doctree(text)[1]
    return out.splitlines()[0] if out else None


# ------------------------------------------------------------------ math as code notation

# short lower-case words of prose: never part of a formula run
STOPWORDS = {"a", "an", "as", "at", "be", "by", "do", "if", "in", "is", "it", "no", "of",
             "on", "or", "so", "to", "up", "we", "vs", "vs.", "e.g.", "i.e.", "cf.", "et",
             "al.", "etc.", "i.i.d.", "i.i.d", "s.e."}
# words of three or more letters that belong to formulas (functions, operators); a
# formula line (an indented block) may also say "mean" and "loss"
MATH_WORDS = {"tr", "diag", "log", "exp", "sqrt", "max", "min", "argmax", "argmin", "Cov",
              "Var", "cov", "var", "std", "det", "rank", "span", "dim", "sign", "softmax",
              "sup", "inf", "mod", "abs", "erf", "sin", "cos", "tanh"}
FORMULA_WORDS = MATH_WORDS | {"mean", "loss"}
# a plain subscript or superscript (g_B, Σ_{j≤k}, H^{1/2}, A^t), or an identifier (n_train)
TRIGGER = re.compile(r"[^\W_][_^][\w{(]|[_^]\{")
OPERATORS = set("=+−-·/×~≈≤≥<>→←↦⊙∈∝≪≫|*")
BREAKERS = ("`", "\\", "—", "–")  # a token holding one of these ends a run
OPEN, CLOSE = "([{⟨⌈⌊", ")]}⟩⌉⌋"
# inline markup to leave alone: literals, roles, interpreted text, emphasis, footnotes, URLs
PROTECT = re.compile(
    r"``(?=\S)[\s\S]*?\S``"
    r"|:[\w.+-]+:`[^`]*`"
    r"|`[^`]*`_{0,2}"
    r"|(?<![\w*])\*\*?(?=\S)[^*]*?\S\*\*?(?![\w*])"
    r"|\[[^\]\s]+\]_"
    r"|\b(?:https?|ftp)://\S+")
# what starts a line and is structure, not text: indentation, a list or field marker
PREFIX = re.compile(r"^\s*(?:[-*+•]\s+|\d+[.)]\s+|\(\w\)\s+|#\.\s+|:[^:\s][^:]*:(?:\s+|$))?")
BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|\(\w\)|#\.)\s+")
ADORNMENT = re.compile(r"^\s*([=\-~^\"'`#*+:.])\1{3,}\s*$")
FORMULA_OPERATOR = re.compile(r"[=←→≈≤≥∝↦~]")
FORMULA_CLASS = "sgdnoise-formula"  # a formula block's class, styled by STATIC/*.css
STATIC = Path(__file__).with_name("sgdnoise_apidoc_static")
TRAILING_REMARK = re.compile(r"\s{2,}\([^()]*(?:\([^()]*\)[^()]*)*\)[,.;]?\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _content_indent(line: str) -> int:
    """Where the text of ``line`` starts: after its list marker, if it has one."""
    m = BULLET.match(line)
    return m.end() if m else _indent(line)


def _prose_words(text: str, math_words: set[str] = MATH_WORDS) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z]{3,}", text) if w not in math_words]


def is_formula_line(line: str) -> bool:
    """A line that states a formula: it has a relation or an arrow and, once aligned
    trailing remarks such as ``(with replacement)`` and parenthetical phrases of two or
    more words are set aside, at most one word of prose."""
    text = TRAILING_REMARK.sub("", line.strip())
    while True:  # innermost groups: phrases dropped, formulas kept (marked as done)
        new = re.sub(r"\(([^()]*)\)", lambda m: "" if len(_prose_words(
            m.group(1), FORMULA_WORDS)) >= 2 else f"\0{m.group(1)}\1", text)
        if new == text:
            break
        text = new
    return bool(FORMULA_OPERATOR.search(text)) and len(
        _prose_words(text, FORMULA_WORDS)) <= 1


def _symbolic(core: str) -> bool:
    """A token (punctuation stripped) that can sit inside a formula: symbols, numbers,
    single letters and math names, no word of prose."""
    if not core or core.lower() in STOPWORDS:
        return False
    return not _prose_words(core)


def _strip_punct(token: str) -> str:
    return token.strip("([{“‘\"'").rstrip(",.;:!?)]}”’\"'")


def _unbalanced(s: str, c: str) -> bool:
    """Whether the bracket or quote ``c`` has no partner in ``s``."""
    pairs = dict(zip(OPEN + "“‘", CLOSE + "”’", strict=True))
    if c in pairs:
        return s.count(c) > s.count(pairs[c])
    closing = {v: k for k, v in pairs.items()}
    if c in closing:
        return s.count(c) > s.count(closing[c])
    return c in "\"'" and s.count(c) % 2 == 1


def _trim(text: str) -> tuple[int, int]:
    """(left, right) offsets into ``text`` that leave out what is prose at its ends:
    whitespace, sentence punctuation, operators, unbalanced brackets and quotes."""
    lo, hi = 0, len(text)
    while lo < hi:
        s = text[lo:hi]
        if s[-1].isspace() or s[-1] in ",.;:!?" or s[-1] in OPERATORS or s[-1] in OPEN or (
                _unbalanced(s, s[-1])):
            hi -= 1
        elif s[0].isspace() or s[0] in OPERATORS or s[0] in CLOSE or _unbalanced(s, s[0]):
            lo += 1
        else:
            break
    return lo, hi


def _depth(text: str) -> int:
    return sum(text.count(c) for c in OPEN) - sum(text.count(c) for c in CLOSE)


LITERAL_THEN = re.compile(r"(?<![`\w])``(?=\S)([^`\n]*?\S)``([^\s`\\*]+)")
THEN_LITERAL = re.compile(r"(?<![\S])([^\s`\\*:]+)``(?=\S)([^`\n]*?\S)``(?![`\w])")


def _merge_into_literals(text: str) -> str:
    """A subscript written against an inline literal (``flat_rtol``·λ_max) joins it:
    ``flat_rtol·λ_max`` (the same text, no new literal)."""
    def right(m: re.Match[str]) -> str:
        tail = m.group(2)
        hi = _trim("x" + tail)[1] - 1  # its end trimmed, its start joined to the literal
        if not TRIGGER.search(tail[:hi]) or _depth(tail[:hi]) or not _symbolic(
                _strip_punct(tail[:hi])):
            return m.group(0)
        return f"``{m.group(1)}{tail[:hi]}``{tail[hi:]}"

    def left(m: re.Match[str]) -> str:
        head = m.group(1)
        lo = _trim(head + "x")[0]
        if not TRIGGER.search(head[lo:]) or _depth(head[lo:]) or not (
                _symbolic(_strip_punct(head[lo:]))):
            return m.group(0)
        return f"{head[:lo]}``{head[lo:]}{m.group(2)}``"

    return THEN_LITERAL.sub(left, LITERAL_THEN.sub(right, text))


def _wrap_runs(lines: list[str]) -> tuple[list[str], int]:
    """The inline rewrite of one paragraph-like group of prose lines: every formula run
    made an inline literal. Returns the new lines and the number of literals added."""
    text = _merge_into_literals("\n".join(lines))
    protected = [m.span() for m in PROTECT.finditer(text)]
    offset = 0
    for line in lines:  # list markers, field markers and indentation
        protected.append((offset, offset + PREFIX.match(line).end()))
        offset += len(line) + 1

    def touches(a: int, b: int) -> bool:
        """Whether the token text[a:b] overlaps or abuts protected markup."""
        return any(s < b and a < e or (e == a and not text[e - 1].isspace()) or s == b
                   for s, e in protected if e > s)

    tokens = []  # (start, end, kind): kind "t" trigger, "s" symbolic, "x" breaker
    for m in re.finditer(r"\S+", text):
        a, b = m.span()
        tok = m.group(0)
        core = _strip_punct(tok)
        if touches(a, b) or any(c in tok for c in BREAKERS):
            kind = "x"
        elif not core:  # a bare operator or bracket
            kind = "s" if all(c in OPERATORS or c in OPEN + CLOSE for c in tok) else "x"
        elif TRIGGER.search(core) and not core.endswith("_"):
            kind = "t"
        elif _symbolic(core):
            kind = "s"
        else:
            kind = "x"
        tokens.append((a, b, kind))

    runs: list[list[tuple[int, int, str]]] = []
    run: list[tuple[int, int, str]] = []

    def close() -> None:
        if any(k == "t" for _, _, k in run):
            runs.append(list(run))
        run.clear()

    for a, b, kind in tokens:
        if run and "\n" in text[run[-1][1]:a]:
            close()
        if kind == "x":
            close()
            continue
        run.append((a, b, kind))
        tok = text[a:b]
        # brackets opened before the run's first symbol are the prose's, not the formula's
        span = text[run[0][0]:b].lstrip(OPEN).rstrip(",;:.")
        if tok[-1] in ",;:." and _depth(span) <= 0:
            close()  # sentence punctuation outside brackets ends the formula
    close()

    spans = [sp for r in runs for sp in _formulas(text, r)]
    for a, b in reversed(spans):
        text = f"{text[:a]}``{text[a:b]}``{text[b:]}"
    return text.split("\n"), len(spans)


def _formulas(text: str, run: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """The spans of ``text`` to set in code within one run of tokens: from the left, the
    longest stretch of whole tokens that holds a trigger and has balanced brackets once
    its ends are trimmed (:func:`_trim`)."""
    out = []
    i = 0
    while i < len(run):
        for j in range(len(run) - 1, i - 1, -1):
            a, b = run[i][0], run[j][1]
            lo, hi = _trim(text[a:b])
            inner = text[a + lo:a + hi]
            if inner and TRIGGER.search(inner) and _depth(inner) == 0 and not any(
                    _unbalanced(inner, c) for c in "“”‘’\"'") and not _stops(text, run[i:j]):
                out.append((a + lo, a + hi))
                i = j + 1
                break
        else:
            i += 1
    return out


def _stops(text: str, tokens: list[tuple[int, int, str]]) -> bool:
    """Whether one of ``tokens`` ends with sentence punctuation outside the brackets opened
    since the first one (``mc_trace / (tr D/B): 1``: the colon ends the formula)."""
    a = tokens[0][0] if tokens else 0
    return any(text[b - 1] in ",;:." and _depth(text[a:b].lstrip(OPEN).rstrip(",;:.")) <= 0
               for _, b, _ in tokens)


def _skip_indented(lines: list[str], start: int, indent: int) -> int:
    """The index after the lines from ``start`` that are blank or indented past ``indent``
    (trailing blank lines excluded)."""
    j = start
    last = start
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        j += 1
        if lines[j - 1].strip():
            last = j
    return last


def math_as_code(lines: list[str]) -> tuple[list[str], int]:
    """``lines`` of a docstring with its math in code notation (see the module docstring);
    returns the new lines and the number of literals (inline or block) added."""
    out: list[str] = []
    added = 0
    ctx = 0  # the indent of the text that an indented block would be quoted from
    prev_blank = True
    i, n = 0, len(lines)
    para: list[str] = []

    def flush() -> None:
        nonlocal added
        if para:
            new, k = _wrap_runs(para)
            out.extend(new)
            added += k
            para.clear()

    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            out.append(line)
            prev_blank = True
            i += 1
            continue
        ind = _indent(line)
        if stripped.startswith(".. ") or stripped == ".." or stripped.startswith("|") or (
                stripped.startswith("+-")):
            flush()  # directives, comments, targets, line blocks, tables: as written
            j = _skip_indented(lines, i + 1, ind)
            out.extend(lines[i:j])
            ctx, prev_blank, i = ind, False, j
            continue
        if stripped.startswith(">>>") or ADORNMENT.match(line) or (
                i + 1 < n and ADORNMENT.match(lines[i + 1])):
            flush()  # doctests, section titles and their underlines: as written
            j = i
            while j < n and lines[j].strip():
                j += 1
            out.extend(lines[i:j])
            prev_blank, i = False, j
            continue
        if prev_blank and i > 0 and ind > ctx:  # a block quote: formulas?
            flush()
            j = i
            while j < n and lines[j].strip() and _indent(lines[j]) >= ind:
                j += 1
            block = lines[i:j]
            if block and not BULLET.match(block[0]) and all(
                    is_formula_line(PROTECT.split(b)[0]) for b in block):
                if any(PROTECT.search(b) for b in block):
                    for b in block:  # keep the cross-reference, code the formula before it
                        m = PROTECT.search(b)
                        head = b[:m.start()] if m else b
                        lo, hi = _trim(head[ind:])
                        if hi > lo and _depth(head[ind + lo:ind + hi]) == 0:
                            b = (f"{head[:ind + lo]}``{head[ind + lo:ind + hi]}``"
                                 f"{b[ind + hi:]}")
                            added += 1
                        out.append(b)
                else:
                    out.extend([" " * ctx + ".. code:: text",
                                " " * ind + f":class: {FORMULA_CLASS}", ""] + block)
                    added += 1
                prev_blank, i = False, j
                continue
        prev_blank = False
        para.append(line)
        i += 1
        if stripped.endswith("::"):  # a literal block follows: as written
            flush()
            ctx = _content_indent(line)
            j = _skip_indented(lines, i, ctx)
            out.extend(lines[i:j])
            i = j
            continue
        ctx = _content_indent(line) if BULLET.match(line) else ind
    flush()
    return out, added


def _signature(text: str) -> tuple[str, int]:
    """The doctree's text without whitespace, and its number of literals (inline and
    block): what the rewrite must keep, and what it must add to."""
    from docutils import nodes

    tree = _doctree(text)[0]
    count = sum(1 for _ in tree.findall(lambda n: isinstance(
        n, (nodes.literal, nodes.literal_block))))
    return re.sub(r"\s+", "", tree.astext()), count


def rewrite_math(lines: list[str]) -> tuple[list[str], str | None]:
    """:func:`math_as_code` checked: the new lines and None, or ``lines`` and the reason the
    rewrite was refused (it does not parse cleanly, changes the text, or adds other than
    the intended literals)."""
    new, added = math_as_code(lines)
    if new == lines:
        return lines, None
    problem = first_problem("\n".join(new))
    if problem:
        return lines, problem
    (text0, n0), (text1, n1) = _signature("\n".join(lines)), _signature("\n".join(new))
    if text0 != text1:
        return lines, "the rewrite changed the text"
    if n1 != n0 + added:
        return lines, f"the rewrite made {n1 - n0} literal(s), not {added}"
    return new, None


# ------------------------------------------------------------ one parameter list

ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Keyword arguments):\s*$")
PARAM_ITEM = re.compile(r"^(\s*)[-*] (?:``)?([A-Za-z_]\w*)(?:``)?: (.*)$")
# The Google style of a docstring inherited from a library (torch's ``Optimizer.step``):
# ``closure (Callable): text``; the type is dropped, the signature's type hints give it.
GOOGLE_ITEM = re.compile(r"^(\s*)([A-Za-z_]\w*) \([^)]*\): (.*)$")


def _param_item(line: str) -> re.Match[str] | None:
    """A parameter item, ``- name: text`` or ``name (type): text``: groups indent, name,
    text."""
    return PARAM_ITEM.match(line) or GOOGLE_ITEM.match(line)


def parameter_names(obj: Any) -> set[str]:
    """The names a call of ``obj`` takes (a class: its constructor's), without ``self``."""
    import inspect

    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return set()
    return {n for n in sig.parameters if n not in ("self", "cls")}


def params_as_fields(lines: list[str], params: set[str]) -> list[str]:
    """``lines`` with every item ``- name: text`` (or ``name (type): text``, see
    :data:`GOOGLE_ITEM`) whose ``name`` is a parameter in
    ``params`` turned into a field ``:param name: text`` (continuation lines kept, indented
    under it), and an ``Args:`` (``Parameters:``, ...) line before such items dropped, so
    that Sphinx shows one parameter list with the descriptions and the types of the
    signature (``autodoc_typehints = "description"``). Items that name no parameter, and
    everything else, stay as written."""
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        m = _param_item(line)
        if ARGS_HEADER.match(line) and _next_item_is_param(lines, i + 1, params):
            i += 1
            continue
        if m is None or m.group(2) not in params:
            out.append(line)
            i += 1
            continue
        indent = len(m.group(1))
        if out and out[-1].strip() and not out[-1].lstrip().startswith(":param "):
            out.append("")
        out.append(f":param {m.group(2)}: {m.group(3)}")
        i += 1
        while i < n and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent \
                and not _param_item(lines[i]):
            out.append("   " + lines[i].strip())
            i += 1
        if i < n and lines[i].strip() and not _param_item(lines[i]):
            out.append("")
    return out


def _next_item_is_param(lines: list[str], start: int, params: set[str]) -> bool:
    for line in lines[start:]:
        if line.strip():
            m = _param_item(line)
            return bool(m and m.group(2) in params)
    return False


def process_docstring(app: Any, what: str, name: str, obj: Any, options: Any,
                      lines: list[str]) -> None:
    if not lines:
        return
    if what in ("function", "method", "class") and obj is not None:
        fields = params_as_fields(lines, parameter_names(obj))
        if fields != lines and first_problem("\n".join(fields)) is None:
            lines[:] = fields
    problem = first_problem("\n".join(lines))
    if problem is None:
        new, refused = rewrite_math(lines)
        if refused:
            UNCHANGED.append((name, refused))
            logger.info(f"[sgdnoise_apidoc] {name}: math left as written ({refused})")
        lines[:] = new
        return
    VERBATIM.append((name, problem))
    logger.info(f"[sgdnoise_apidoc] {name}: docstring shown verbatim ({problem})")
    lines[:] = [".. code-block:: text", ""] + [
        f"    {line}" if line else "" for line in lines] + [""]


def public_bases(bases: list[Any]) -> list[Any]:
    """The bases a reader should see for a class: a private base (``_ModelOperator``)
    replaced by its own bases, recursively, so that the public classes it builds on show;
    ``object`` left out; each class once, in order."""
    out: list[Any] = []
    for base in bases:
        name = getattr(base, "__name__", "")
        if base is object:
            continue
        shown = public_bases(list(base.__bases__)) if name.startswith("_") else [base]
        out += [b for b in shown if b not in out]
    return out


def process_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """``autodoc-process-bases``: :func:`public_bases` in place. A class left with none
    (its only base was ``object``) shows no "Bases:" line (:func:`remove_empty_bases`)."""
    bases[:] = public_bases(bases)


def remove_empty_bases(app: Any, doctree: Any) -> None:
    """A paragraph that reads just "Bases:" (a class whose only base was ``object``) is
    removed."""
    from docutils import nodes

    for para in list(doctree.findall(nodes.paragraph)):
        if para.astext().strip() == "Bases:":
            para.parent.remove(para)


def code_parameter_names(app: Any, doctree: Any) -> None:
    """Parameter names in the field lists that Sphinx writes (``Parameters: n_train
    (int)``) are identifiers: set them in code, as the signature sets them."""
    from docutils import nodes
    from sphinx import addnodes

    for node in list(doctree.findall(addnodes.literal_strong)):
        if node.children and all(isinstance(c, nodes.Text) for c in node.children):
            text = node.astext()
            for child in list(node.children):
                node.remove(child)
            node += nodes.literal(text, text)


def report(app: Any, exception: Exception | None) -> None:
    if VERBATIM:
        logger.info(f"[sgdnoise_apidoc] {len(VERBATIM)} docstring(s) shown verbatim; "
                    "fix them to have them rendered")
    if UNCHANGED:
        logger.info(f"[sgdnoise_apidoc] {len(UNCHANGED)} docstring(s) with math left as "
                    "written (the rewrite to code notation was refused)")


def add_static_path(app: Any, config: Any) -> None:
    """The extension's stylesheet (formula blocks wrap rather than overflow the column)."""
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", add_static_path)
    app.add_css_file("sgdnoise_apidoc.css")
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("doctree-read", code_parameter_names)
    app.connect("autodoc-process-bases", process_bases)
    app.connect("doctree-read", remove_empty_bases)
    app.connect("build-finished", report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
