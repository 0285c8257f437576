"""The API reference's docstring math shown as code (book/_ext/sgdnoise_apidoc.py, issue 12):
formula blocks become literal blocks, formula runs in prose inline literals, and everything
else (prose, existing markup, lists, literal blocks, directives) stays as written."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from collections.abc import Iterator

import pytest
from conftest import BOOK

from sgdnoise.report import PLAIN_SUBSCRIPT

spec = importlib.util.spec_from_file_location("sgdnoise_apidoc",
                                              BOOK / "_ext" / "sgdnoise_apidoc.py")
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)

TEX = re.compile(r"\$|\\[a-zA-Z]+|[_^]\{")  # what the browser check reads as raw TeX


def code(text: str) -> list[str]:
    """``text``'s lines after :func:`rewrite_math`, asserting it was not refused."""
    new, refused = ext.rewrite_math(text.split("\n"))
    assert refused is None, refused
    return new


def prose_problems(lines: list[str]) -> list[str]:
    """Plain subscripts and TeX left in the doctree's text outside literals: what the
    browser check would flag on the page."""
    from docutils import nodes

    tree = ext._doctree("\n".join(lines))[0]
    out = []
    for node in tree.findall(nodes.Text):
        if any(isinstance(a, (nodes.literal, nodes.literal_block, nodes.doctest_block))
               for a in _ancestors(node)):
            continue
        out += re.findall(PLAIN_SUBSCRIPT, str(node)) + TEX.findall(str(node))
    return out


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


# ---------------------------------------------------------------------- formula blocks


def test_an_indented_formula_becomes_a_literal_block_with_its_alignment():
    lines = code("Noise with its own knob, the injection scale s:\n\n"
                 "    θ ← θ − η (g_B + √s · ξ),      ξ ~ N(0, Σ_kind),      (P,)\n\n"
                 "where Σ_kind stands in for D.")
    assert lines[:7] == ["Noise with its own knob, the injection scale s:", "",
                         ".. code:: text", "    :class: sgdnoise-formula", "",
                         "    θ ← θ − η (g_B + √s · ξ),      ξ ~ N(0, Σ_kind),      (P,)", ""]
    assert lines[7] == "where ``Σ_kind`` stands in for D."
    assert not prose_problems(lines)


def test_a_formula_block_keeps_its_lines_exactly():
    from docutils import nodes

    block = ["    Cov(g_𝓑) = c · D,   c = 1/B        (with replacement)",
             "                        c = (N − B) / (B (N − 1))"]
    tree = ext._doctree("\n".join(code("\n".join(["with (Lemma 1)", ""] + block))))[0]
    (literal,) = tree.findall(nodes.literal_block)
    assert literal.astext().split("\n") == [line[4:] for line in block]
    assert "sgdnoise-formula" in literal["classes"]


def test_a_two_line_formula_block_with_remarks_stays_one_literal_block():
    block = ["    Cov(g_𝓑) = c · D,   c = 1/B                      (with replacement)",
             "                        c = (N − B) / (B (N − 1))    (without replacement)."]
    lines = code("\n".join(["with (Lemma 1)", ""] + block + ["", "Next."]))
    assert lines == ["with (Lemma 1)", "", ".. code:: text", "    :class: sgdnoise-formula",
                     ""] + block + ["", "Next."]


def test_a_formula_block_in_a_list_item_stays_in_the_item():
    lines = code("- a kind: text\n\n      d = diag(D_M)\n\n- another kind")
    assert lines == ["- a kind: text", "", "  .. code:: text", "      :class: sgdnoise-formula",
                     "", "      d = diag(D_M)", "", "- another kind"]


def test_a_formula_line_with_a_reference_keeps_the_reference():
    lines = code("this equals D/b for\n\n"
                 "    s = 1/b − 1/B                 (:func:`matched_injection_scale`),\n\n"
                 "so s is set independently.")
    assert lines[2] == "    ``s = 1/b − 1/B``                 (:func:`matched_injection_scale`),"


def test_indented_prose_lists_and_literal_blocks_are_not_formulas():
    text = ("Args:\n\n    - model: the network; its loss is computed here.\n\n"
            "A quote:\n\n    the step is taken where the loss is lowest\n\n"
            "Command line::\n\n    sgdnoise-sweep PLAN.yaml --out DIR   # n_runs = 4\n")
    new, added = ext.math_as_code(text.split("\n"))
    assert new == text.split("\n") and added == 0


# ------------------------------------------------------------------------ inline math


@pytest.mark.parametrize(("prose", "expected"), [
    ("per-example gradients g_i as rows", "per-example gradients ``g_i`` as rows"),
    ("Noise energy Σ_{j≤k} u_jᵀ D u_j / tr D for the top eigenvectors",
     "Noise energy ``Σ_{j≤k} u_jᵀ D u_j / tr D`` for the top eigenvectors"),
    ("the k maximising λ_k / λ_{k+1}, provided", "the k maximising ``λ_k / λ_{k+1}``, provided"),
    ("Draw ξ ~ N(0, Σ_kind) at the model's parameters.",
     "Draw ``ξ ~ N(0, Σ_kind)`` at the model's parameters."),
    ("- ``\"hessian\"``: ξ ≈ H₊^{1/2} z, z ~ N(0, I_P), with H the Hessian",
     "- ``\"hessian\"``: ``ξ ≈ H₊^{1/2} z``, ``z ~ N(0, I_P)``, with H the Hessian"),
    ("Columns: batch_size, mc_trace (mean of ‖g_B − ḡ‖²), ratio (mc_trace / (tr D/B): 1 with",
     "Columns: ``batch_size``, ``mc_trace`` (mean of ``‖g_B − ḡ‖²``), ratio "
     "(``mc_trace / (tr D/B)``: 1 with"),
    ("(η_j i.i.d. centred gradients)", "(``η_j`` i.i.d. centred gradients)"),
    ("F̂, D, H approach F like N^{-1/2}.", "F̂, D, H approach F like ``N^{-1/2}``."),
    ("mass within ``flat_rtol``·λ_max: supported", "mass within ``flat_rtol·λ_max``: supported"),
    ("(the covariance of g_B)", "(the covariance of ``g_B``)"),
])
def test_formula_runs_in_prose_become_inline_literals(prose, expected):
    assert code(prose) == [expected]


@pytest.mark.parametrize("prose", [
    "Plain prose, with a comma; a colon: and (a parenthesis) stays as it is.",
    "Existing markup: ``g_B`` and :func:`sgdnoise.noise.sample_noise` and *emphasis* and "
    "**strong**, and a link https://example.org/a_b stays.",
    "An em dash — between words — and shapes like (N, P) and ḡ or x² stay prose.",
    "A role with a subscript :class:`sgdnoise.curvature.GGNOperator` stays a role.",
])
def test_prose_and_existing_markup_are_unchanged(prose):
    new, added = ext.math_as_code([prose])
    assert new == [prose] and added == 0


def test_structure_is_unchanged_around_the_literals():
    text = ("Summary line with g_B.\n\n"
            "- n_train: the number of training examples.\n"
            "- lr: η, with η·λ_max < 2\n"
            "  on a continuation line with D_M.\n\n"
            ":param x_min: the smallest x\n\n"
            ".. note::\n\n   A directive's g_B is left alone.\n\n"
            ">>> f(x_min)\n1\n")
    assert code(text) == [
        "Summary line with ``g_B``.", "",
        "- ``n_train``: the number of training examples.",
        "- lr: η, with ``η·λ_max < 2``",
        "  on a continuation line with ``D_M``.", "",
        ":param x_min: the smallest x", "",
        ".. note::", "", "   A directive's g_B is left alone.", "",
        ">>> f(x_min)", "1", ""]


def test_a_rewrite_that_breaks_the_docstring_is_refused(monkeypatch):
    lines = ["The gradient g_B of the batch."]
    monkeypatch.setattr(ext, "math_as_code", lambda ls: (["The gradient ``g_B of the batch."], 1))
    new, refused = ext.rewrite_math(lines)
    assert new == lines and refused
    monkeypatch.setattr(ext, "math_as_code", lambda ls: (["The gradient ``g_C`` of the batch."], 1))
    assert ext.rewrite_math(lines) == (lines, "the rewrite changed the text")


def test_process_docstring_rewrites_clean_docstrings_and_quotes_broken_ones():
    lines = ["The mean ḡ = (1/N) Σ_i g_i: (P,)."]
    ext.process_docstring(None, "function", "m.f", None, None, lines)
    assert lines == ["The mean ``ḡ = (1/N) Σ_i g_i``: (P,)."]
    broken = ["Norm |θ| of g_B.", "", "More."]
    ext.process_docstring(None, "function", "m.g", None, None, broken)
    assert broken[:3] == [".. code-block:: text", "", "    Norm |θ| of g_B."]


def test_parameter_names_of_field_lists_are_set_in_code():
    from docutils import nodes
    from sphinx import addnodes

    para = nodes.paragraph("", "", addnodes.literal_strong("n_train", "n_train"),
                           nodes.Text(" (int)"))
    ext.code_parameter_names(None, _doc(para))
    strong = para[0]
    assert isinstance(strong, addnodes.literal_strong)
    assert isinstance(strong[0], nodes.literal) and strong.astext() == "n_train"


def _doc(child):
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    document = new_document("<test>", get_default_settings(Parser))
    document += nodes.section("", child)
    return document


# ------------------------------------------------------------- the package's docstrings


def package_docstrings() -> Iterator[tuple[str, list[str]]]:
    """(name, lines) of the docstrings autodoc renders: every public module of the package
    and its classes, functions, methods and properties, prepared as autodoc prepares them."""
    from sphinx.util.docstrings import prepare_docstring

    import sgdnoise

    modules = ["sgdnoise"] + sorted(
        m.name for m in pkgutil.walk_packages(sgdnoise.__path__, "sgdnoise.")
        if not any(part.startswith("_") for part in m.name.split(".")))
    seen: set[int] = set()
    for module in modules:
        todo = [(module, importlib.import_module(module))]
        while todo:
            name, obj = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and doc.strip():
                yield name, prepare_docstring(doc)
            if inspect.ismodule(obj) or isinstance(obj, type):
                todo.extend(_public_members(name, obj, module))


def _public_members(name: str, obj: object, module: str) -> Iterator[tuple[str, object]]:
    """(qualified name, object) of the public functions, classes, methods and properties
    that ``obj`` (a module or class) defines in ``module``."""
    for key, value in vars(obj).items():
        if key.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if getattr(value, "__module__", None) == module and (
                inspect.isfunction(value) or isinstance(value, type)):
            yield f"{name}.{key}", value


def test_every_package_docstring_shows_its_math_as_code():
    """Each docstring of the package that is valid reST is rewritten without refusal and
    leaves no plain subscript or TeX in its prose: the API pages pass the browser check."""
    checked, problems = 0, []
    for name, lines in package_docstrings():
        if ext.first_problem("\n".join(lines)):
            continue  # shown verbatim, as a literal block
        new, refused = ext.rewrite_math(lines)
        checked += 1
        if refused:
            problems.append(f"{name}: rewrite refused ({refused})")
        elif prose_problems(new):
            problems.append(f"{name}: {prose_problems(new)} left in prose")
    assert checked > 300
    assert not problems, "\n".join(problems)
