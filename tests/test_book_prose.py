"""The built book reads as prose for a reader, not as output of the build system (issue 19):
no parameter identifier of a chapter in its prose, and no path of the machine that built it
anywhere in the HTML. The scans run on the smoke build; each is seen failing on a planted
page."""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import BOOK, REPO, BookBuild, load_build_module

build = load_build_module()

# Identifiers a chapter's page may still write in prose (none since the chapters' issue-19
# rewrites). A listed identifier that no longer appears fails the test, so the list only
# shrinks.
PROSE_ALLOWED: dict[str, set[str]] = {}


def chapter_identifiers(name: str) -> set[str]:
    """The chapter's parameter names that cannot be mistaken for words: those with an
    underscore, from ``sgdnoise.chapters.<name>.Params`` and from the notebook's parameters
    cell."""
    import jupytext

    names = set(build.parameter_names(jupytext.read(BOOK / "chapters" / f"{name}.py")))
    cls = build.params_class(name)
    if cls is not None and dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return {n for n in names if "_" in n.strip("_")}


class _Prose(HTMLParser):
    """The text of a page's article a reader reads: its paragraphs, lists, captions,
    tables and the inline code literals in its sentences (a parameter name set in code is
    still a name where a value belongs), but not code blocks (``pre``, highlighted cells,
    the folded code of a cell), math, cross-references to the API (``code.xref``), scripts
    or styles, nor the provenance table (the table whose header starts with "what")."""

    VOID = {"br", "img", "hr", "input", "meta", "link", "source", "wbr", "col", "area"}
    SKIP_TAGS = {"pre", "script", "style", "mjx-container", "textarea"}
    SKIP_CLASSES = {"math", "highlight", "cell_input", "xref", "sig", "sgdnoise-formula"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.chunks: list[str] = []
        self.in_article = False
        self.table_text: list[str] | None = None

    def _skipping(self) -> bool:
        return any(skip for _, skip in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skip = tag in self.SKIP_TAGS or bool(classes & self.SKIP_CLASSES)
        if tag == "article":
            self.in_article = True
        if tag == "table":
            self.table_text = []
        self.stack.append((tag, skip))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag == tag:
                break
        if tag == "table" and self.table_text is not None:
            text = " ".join(" ".join(self.table_text).split())
            if not text.startswith("what value"):  # the provenance table
                self.chunks.append(text)
            self.table_text = None
        if tag == "article":
            self.in_article = False

    def handle_data(self, data: str) -> None:
        if not self.in_article or self._skipping():
            return
        if self.table_text is not None:
            self.table_text.append(data.strip())
        else:
            self.chunks.append(data)


def prose_text(html: str) -> str:
    parser = _Prose()
    parser.feed(html)
    return " ".join(parser.chunks)


def prose_identifiers(html: str, identifiers: set[str]) -> set[str]:
    """The ``identifiers`` that occur as whole words in the page's prose (:class:`_Prose`)."""
    text = prose_text(html)
    return {n for n in identifiers
            if re.search(rf"(?<![\w/.-]){re.escape(n)}(?![\w-])", text)}


def test_prose_scan_reads_text_and_skips_code_math_and_provenance():
    page = ('<article><p>The margin <code class="literal"><span class="pre">z_max</span>'
            '</code> is 0.1; see <code class="xref py">n_sim</code>, '
            '<span class="math">z_max</span></p><div class="cell_input"><pre>rates_seed = 0'
            '</pre></div><table><thead><tr><th>what</th><th>value</th></tr></thead><tr><td>'
            'parameters</td><td>bias_ratio_max</td></tr></table><table><tr><th>grid_lrs'
            '</th></tr></table></article><footer>moment_probes</footer>')
    ids = {"z_max", "bias_ratio_max", "grid_lrs", "moment_probes", "n_sim", "rates_seed"}
    assert prose_identifiers(page, ids) == {"z_max", "grid_lrs"}
    literal = '<code class="literal"><span class="pre">z_max</span></code>'
    assert prose_identifiers(page.replace(literal, "4"), ids) == {"grid_lrs"}


def test_chapter_identifiers_come_from_params_and_the_parameters_cell():
    ids = chapter_identifiers("ch08_resnet_sweep")
    assert {"gap_margin", "loss_tolerance", "records_dirs"} <= ids
    assert "alpha" not in ids and "profile" not in ids  # words, not identifiers


def identifier_problems(html: Path, chapters: list[str]) -> tuple[list[str], list[str]]:
    """(chapters whose page writes a parameter identifier in prose that
    :data:`PROSE_ALLOWED` does not list, chapters whose allowed identifiers are gone)."""
    problems, stale = [], []
    for name in chapters:
        page = (html / "chapters" / f"{name}.html").read_text()
        found = prose_identifiers(page, chapter_identifiers(name))
        allowed = PROSE_ALLOWED.get(name, set())
        if found - allowed:
            problems.append(f"{name}: {sorted(found - allowed)}")
        if allowed - found:
            stale.append(f"{name}: {sorted(allowed - found)}")
    return problems, stale


def plant(html: Path, page: str, snippet: str, out: Path) -> Path:
    """A copy of the built ``page`` with ``snippet`` at the start of its article, written
    under ``out`` at the same relative path; returns ``out``."""
    text = (html / page).read_text()
    m = re.search(r"<article[^>]*>", text)
    assert m, f"{page} has no <article>"
    (out / page).parent.mkdir(parents=True, exist_ok=True)
    (out / page).write_text(text[:m.end()] + snippet + text[m.end():])
    return out


@pytest.mark.book
def test_no_parameter_identifier_in_prose(smoke_book: BookBuild):
    """No chapter page writes one of its parameter identifiers in prose (outside code,
    math and the provenance table): values and plain words instead. PROSE_ALLOWED lists
    what chapters still have; an entry that is no longer found must be removed."""
    problems, stale = identifier_problems(smoke_book.html, smoke_book.chapters)
    assert not problems, ("parameter identifiers in prose (write the value or words):\n  "
                          + "\n  ".join(problems))
    assert not stale, ("PROSE_ALLOWED lists identifiers the pages no longer show; remove "
                       "them:\n  " + "\n  ".join(stale))


@pytest.mark.book
def test_identifier_scan_fails_on_a_planted_page(smoke_book: BookBuild, tmp_path):
    """The built chapter 8 page with one sentence naming a parameter of its Params is
    caught; the same sentence with the value passes."""
    name = "ch08_resnet_sweep"
    page = f"chapters/{name}.html"
    assert identifier_problems(smoke_book.html, [name]) == ([], [])
    bad = plant(smoke_book.html, page, "<p>A gap counts when it exceeds gap_margin.</p>",
                tmp_path / "bad")
    assert identifier_problems(bad, [name])[0] == [f"{name}: ['gap_margin']"]
    good = plant(smoke_book.html, page, "<p>A gap counts when it exceeds 0.5 points.</p>",
                 tmp_path / "good")
    assert identifier_problems(good, [name]) == ([], [])


# ------------------------------------------------------------------ no machine path

def machine_paths() -> list[str]:
    """The folders whose absolute paths must not appear in the built book: the repository,
    the home folder, the temporary folder, and /tmp, /work, /root."""
    roots = {str(REPO), os.path.expanduser("~"), tempfile.gettempdir(), "/tmp", "/work",
             "/root"}
    return sorted(r for r in roots if r not in ("", "/"))


def path_leaks(text: str, roots: list[str]) -> list[str]:
    """Every occurrence of one of ``roots`` followed by a path separator or the end of a
    word, with a little context."""
    out = []
    for root in roots:
        for m in re.finditer(rf"{re.escape(root)}(?=[/\"'<\s)]|$)", text):
            out.append(text[max(0, m.start() - 40):m.end() + 40].replace("\n", " "))
    return out


def test_path_scan_finds_a_planted_path():
    roots = ["/home/someone", "/tmp"]
    assert path_leaks('<td>data: /home/someone/data/cifar</td>', roots)
    assert path_leaks('"cwd": "/tmp"', roots)
    assert not path_leaks("<td>data/cifar-10-batches-py</td> /tmpfile", roots)


def path_problems(html: Path, roots: list[str]) -> list[str]:
    """Every machine path (:func:`path_leaks` of ``roots``) in the pages, notebook
    downloads, search index and sources of the built HTML. Left out: the theme's _static
    and _modules, the package's own source code as viewcode shows it (a literal such as
    ``"/tmp"`` there is code, not a path of the machine)."""
    problems = []
    for path in sorted(html.rglob("*")):
        if path.suffix not in (".html", ".ipynb", ".js", ".json", ".txt", ".md") or (
                {"_static", "_modules"} & set(path.relative_to(html).parts)):
            continue
        for leak in path_leaks(path.read_text(errors="replace"), roots)[:3]:
            problems.append(f"{path.relative_to(html)}: …{leak}…")
    return problems


@pytest.mark.book
def test_no_machine_path_in_the_built_book(smoke_book: BookBuild):
    """No page, notebook download or search index of the built HTML holds the path of the
    repository, the home folder or a temporary folder of the machine that built it."""
    problems = path_problems(smoke_book.html, machine_paths() + [str(smoke_book.build_dir)])
    assert not problems, "machine paths in the built book:\n  " + "\n  ".join(problems[:30])


@pytest.mark.book
def test_path_scan_fails_on_a_planted_page(smoke_book: BookBuild, tmp_path):
    """A built page with the data folder's absolute path in a table cell is caught; with
    the path relative to the repository it passes."""
    page = "chapters/ch08_resnet_sweep.html"
    roots = machine_paths()
    data = REPO / "data" / "cifar-10-batches-py"
    bad = plant(smoke_book.html, page, f"<table><tr><td>{data}</td></tr></table>",
                tmp_path / "bad")
    assert [p for p in path_problems(bad, roots) if str(REPO) in p]
    good = plant(smoke_book.html, page, "<table><tr><td>data/cifar-10-batches-py</td></tr>"
                 "</table>", tmp_path / "good")
    assert path_problems(good, roots) == []


@pytest.mark.book
def test_provenance_and_reproduce_page_give_one_wall_time(smoke_book: BookBuild):
    """The reproduce page's time of each chapter is the one its provenance table reports."""
    reproduce = re.sub(r"<[^>]+>", " ", (smoke_book.html / "reproduce.html").read_text())
    for name in smoke_book.chapters:
        nb = build._read_notebook(smoke_book.executed / f"{name}.ipynb")
        wall = build.provenance_rows(nb)["wall time"]
        assert build.notebook_run(nb)["wall_s"] == pytest.approx(float(wall.split()[0]))
        assert f"{float(wall.split()[0]):.0f} s" in reproduce, name


def test_provenance_table_shows_no_absolute_path(tmp_path):
    from sgdnoise.report import provenance_markdown

    ident = {"source": "official", "path": str(REPO / "data" / "cifar-10-batches-py"),
             "cache": str(Path(tempfile.gettempdir()) / "x" / "y.npz"),
             "home": str(Path.home() / "datasets" / "cifar")}
    table = provenance_markdown("smoke", {"plan": "../params/a.yaml"}, wall_time_s=1.0,
                                data_identity=ident)
    assert not path_leaks(table, machine_paths()), table
    assert "data/cifar-10-batches-py" in table and "../params/a.yaml" in table
