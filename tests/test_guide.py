"""The "Using sgdnoise" part of the book (book/guide/): registered in the toc as its own part
after the chapters, executed like a chapter at every profile, rendered under guide/."""

from __future__ import annotations

import json

import jupytext
import nbformat
import pytest
from conftest import BOOK, BookBuild, load_build_module

build = load_build_module()
GUIDE = sorted(p.stem for p in (BOOK / "guide").glob("guide_*.py"))


def guide_part() -> dict:
    parts = [p for p in build.read_toc(BOOK)["parts"] if p.get("caption") == "Using sgdnoise"]
    assert len(parts) == 1, "the toc needs one part captioned 'Using sgdnoise'"
    return parts[0]


def test_guide_is_its_own_part_after_the_chapters():
    toc = build.read_toc(BOOK)
    captions = [p.get("caption") for p in toc["parts"]]
    assert captions.index("Using sgdnoise") == captions.index("The study") + 1
    files = [c["file"] for c in guide_part()["chapters"]]
    assert files == [f"guide/{name}" for name in GUIDE], "every guide source, in order"
    assert all(build.page_folder(name) == "guide" for name in GUIDE)
    assert build.page_folder("ch01_lemma1") == "chapters"


def test_guide_pages_are_executed_pages_without_verdicts(tmp_path):
    assert set(GUIDE) <= set(build.chapter_names(build.read_toc(BOOK)))
    nb = nbformat.v4.new_notebook()
    path = tmp_path / "guide_9_x.ipynb"
    nbformat.write(nb, path)
    toc = {"root": "intro", "chapters": [{"file": "chapters/ch01_x"},
                                         {"file": "guide/guide_9_x"}]}
    page = build.verdicts_page(toc, {"ch01_x": path, "guide_9_x": path}, "smoke")
    assert "chapters/ch01_x" in page and "guide_9_x" not in page
    assert "{doc}`guide/guide_9_x`" in build.reproduce_page(toc, {"guide_9_x": path}, "smoke")


@pytest.mark.parametrize("name", GUIDE)
def test_guide_page_follows_the_chapter_conventions(name):
    nb = jupytext.read(BOOK / "guide" / f"{name}.py")
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), name
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, name
    assert "provenance_markdown" in nb.cells[-1].source, f"{name}: provenance last"
    for profile in build.PROFILES:
        assert (BOOK / "params" / name / f"{profile}.yaml").is_file(), (name, profile)


def first_example() -> str:
    """The source of the guide's first example (the cell tagged ``first-example``)."""
    nb = jupytext.read(BOOK / "guide" / f"{GUIDE[0]}.py")
    cells = [c for c in nb.cells if "first-example" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the first guide page holds one cell tagged 'first-example'"
    return cells[0].source


def test_first_example_is_self_contained():
    source = first_example()
    assert "from sgdnoise import" in source and "P[" not in source


@pytest.mark.book
def test_smoke_book_renders_the_guide(smoke_book: BookBuild):
    assert smoke_book.guide == GUIDE
    for name in smoke_book.guide:
        nb = nbformat.read(smoke_book.executed / f"{name}.ipynb", as_version=4)
        assert build.error_outputs(nb) == [], name
        record = json.loads((smoke_book.executed / f"{name}.json").read_text())
        assert record["profile"] == "smoke"
        page = (smoke_book.html / "guide" / f"{name}.html").read_text()
        assert "git commit" in page and "wall time" in page, f"{name}: no provenance"
        assert 'profile = "smoke"' not in page, f"{name}: injected parameters shown"


# ------------------------------------------------------------------ the stable API


def test_every_stable_name_resolves_to_its_modules_object():
    import importlib

    import sgdnoise

    assert sgdnoise.__all__[0] == "__version__"
    assert sgdnoise.__all__[1:] == list(sgdnoise.STABLE_API)
    for name, module in sgdnoise.STABLE_API.items():
        assert getattr(sgdnoise, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        sgdnoise.not_a_name  # noqa: B018


def test_importing_the_package_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, sgdnoise; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "False"
