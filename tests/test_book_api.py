"""The API reference reads as one document (issue 19): one parameter list per function with
the descriptions (no "Args:" box beside Sphinx's "Parameters:"), and no private class under
"Bases:" (book/_ext/sgdnoise_apidoc.py)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re

import pytest
from conftest import BOOK, BookBuild, load_build_module

spec = importlib.util.spec_from_file_location("sgdnoise_apidoc_fields",
                                              BOOK / "_ext" / "sgdnoise_apidoc.py")
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)


def test_a_dash_list_of_parameters_becomes_fields_without_its_header():
    lines = ["Draw the noise.", "", "Args:", "", "    - kind: one of ``KINDS``.",
             "    - model: the network;", "      its parameters in order.",
             "    - note: not a parameter.", "", "Returns the draw."]
    out = ext.params_as_fields(lines, {"kind", "model"})
    assert "Args:" not in out
    assert ":param kind: one of ``KINDS``." in out
    assert out[out.index(":param model: the network;") + 1] == "   its parameters in order."
    assert "    - note: not a parameter." in out and out[-1] == "Returns the draw."


def test_an_inherited_google_style_list_becomes_fields():
    """torch's Optimizer.step docstring, which NoisySGD.step inherits."""
    lines = ["Perform a single optimization step.", "", "Args:",
             "    closure (Callable): A closure that reevaluates the model",
             "        and returns the loss. Optional for most optimizers."]
    out = ext.params_as_fields(lines, {"closure"})
    assert "Args:" not in out
    assert out[-2:] == [":param closure: A closure that reevaluates the model",
                        "   and returns the loss. Optional for most optimizers."]


def test_a_list_that_names_no_parameter_stays():
    lines = ["Args:", "    closure (Callable): text", "    - kind: text"]
    assert ext.params_as_fields(lines, {"other"}) == lines


class _Private:
    pass


class _PrivateChild(_Private, ValueError):
    pass


class Public(_PrivateChild):
    pass


def test_private_bases_are_replaced_by_the_public_ones_they_build_on():
    assert ext.public_bases([_PrivateChild]) == [ValueError]
    assert ext.public_bases([object]) == []
    assert ext.public_bases([_Private, ValueError, Public]) == [ValueError, Public]


def test_no_public_class_of_the_package_shows_a_private_base():
    """Every class on the API pages, after :func:`public_bases`: no name with a leading
    underscore, and the private bases the package has are seen (the check is not empty)."""
    seen_private = []
    for module in load_build_module().api_modules():
        mod = importlib.import_module(module)
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if name.startswith("_") or cls.__module__ != module:
                continue
            seen_private += [b.__name__ for b in cls.__bases__ if b.__name__.startswith("_")]
            shown = [b.__name__ for b in ext.public_bases(list(cls.__bases__))]
            assert not [b for b in shown if b.startswith("_")], (module, name, shown)
    assert seen_private, "no class of the package has a private base: drop this test"


def test_a_bases_line_left_empty_is_removed():
    from docutils import nodes

    doc = nodes.section()
    doc += nodes.paragraph(text="Bases: ")
    doc += nodes.paragraph(text="Bases: Module")
    ext.remove_empty_bases(None, doc)
    assert [p.astext() for p in doc.findall(nodes.paragraph)] == ["Bases: Module"]


@pytest.mark.book
def test_api_pages_show_one_parameter_list_and_public_bases(smoke_book: BookBuild):
    """On the built API pages: no "Args:" heading in the text, no private class and no
    bare ``object`` after "Bases:"."""
    problems = []
    for page in sorted((smoke_book.html / "api").glob("*.html")):
        text = re.sub(r"<[^>]+>", "", page.read_text())
        problems += [f"{page.name}: Args:" for _ in re.finditer(r"^\s*Args:\s*$", text, re.M)]
        problems += [f"{page.name}: {m.group(0)}"
                     for m in re.finditer(r"Bases: [^\n]*?\b(_\w+|object)\b", text)]
    assert not problems, "\n".join(problems[:20])


def test_a_link_to_a_section_with_math_in_its_title_shows_the_math():
    """book/_ext/sgdnoise_refs.py: Sphinx's link text "the noise along e_{\\min}" becomes
    the title's own nodes (text and math); a link to a title without math is left alone."""
    from types import SimpleNamespace

    from docutils import nodes

    spec = importlib.util.spec_from_file_location("sgdnoise_refs",
                                                  BOOK / "_ext" / "sgdnoise_refs.py")
    refs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refs)

    title = nodes.title("", "", nodes.Text("the noise along "),
                        nodes.math("e_{\\min}", "e_{\\min}"))
    target = nodes.section("", title, ids=["sec-ch7-sgd"])
    math_domain = SimpleNamespace(data={"has_equations": {}})
    env = SimpleNamespace(
        domaindata={"std": {"labels": {
            "sec-ch7-sgd": ("chapters/ch07", "sec-ch7-sgd", "the noise along e_{\\min}"),
            "sec-plain": ("chapters/ch07", "sec-plain", "plain words")}}},
        get_doctree=lambda docname: target,
        get_domain=lambda name: math_domain)
    app = SimpleNamespace(builder=SimpleNamespace(env=env))

    def link(text: str, uri: str) -> nodes.reference:
        return nodes.reference("", "", nodes.inline(text, text, classes=["std", "std-ref"]),
                               refuri=uri, internal=True)

    page = nodes.paragraph("", "", link("the noise along e_{\\min}", "ch07.html#sec-ch7-sgd"),
                           link("plain words", "ch07.html#sec-plain"))
    refs.typeset_section_links(app, page, "verdicts")
    first, second = page.children
    assert [type(c).__name__ for c in first[0].children] == ["Text", "math"]
    assert first[0].children[1].astext() == "e_{\\min}"
    assert second.astext() == "plain words" and not list(second.findall(nodes.math))
    assert math_domain.data["has_equations"] == {"verdicts": True}  # MathJax on that page
