"""The book pipeline: book/build.py executes chapters with papermill, caches them, and builds
the HTML with Jupyter Book; failures stop the build and leave no current-looking HTML."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import BOOK, BookBuild, load_build_module, output_of, run_build

from sgdnoise.report import plain_subscripts

build = load_build_module()

# Every chapter source, in the order of its number, then the guide's pages (the "Using
# sgdnoise" part, book/guide/guide_<n>_*.py): the toc must list exactly these.
EXPECTED_CHAPTERS = (sorted(p.stem for p in (BOOK / "chapters").glob("ch[0-9]*.py"))
                     + sorted(p.stem for p in (BOOK / "guide").glob("guide_[0-9]*.py")))

# A throwaway chapter that follows book/README.md: parameters cell, validation, a numbered
# equation with a reference, a citation, a seaborn figure and the provenance table.
SAMPLE_CHAPTER = '''\
# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 1. A sample chapter
#
# The mean of $B$ independent draws has variance
#
# $$
# \\operatorname{Var}\\Big(\\frac1B\\sum_{j=1}^B x_j\\Big) = \\frac{\\sigma^2}{B}
# $$ (eq-sample-var)
#
# Equation {eq}`eq-sample-var` is the scalar case of Lemma 1 {cite}`chaudhari2018sgd`.

# %% tags=["parameters"]
profile = "default"
num_draws = 200
seed = 0

# %%
import numpy as np
import pandas as pd
import seaborn as sns
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown

SPEC = {"profile": Param("str", choices=["smoke", "default", "full"]),
        "num_draws": Param("int", low=10), "seed": Param("int", low=0)}
P = validate(dict(profile=profile, num_draws=num_draws, seed=seed), SPEC)
clock = Stopwatch()
use_style()

# %%
rng = np.random.default_rng(P["seed"])
sizes = (1, 2, 4, 8)
df = pd.DataFrame({"B": sizes,
                   "var": [rng.normal(size=(P["num_draws"], b)).mean(1).var() for b in sizes]})
ax = sns.lineplot(data=df, x="B", y="var", marker="o")
ax.set(xscale="log", yscale="log", title=source_label(profile))
plt.show()

# %% [markdown]
# The points fall on a line of slope $-1$, as {eq}`eq-sample-var` says.
#
# (sec-sample-verdicts)=
# ## Verdict

# %%
from sgdnoise.report import Verdict, show_verdicts
show_verdicts("ch01_sample", [Verdict(
    claim="The variance of a mean of B draws is sigma^2/B (planted claim 5150).",
    outcome="supported", sentence=f"measured with {P['num_draws']} draws per size",
    scale="laptop, planted", section="sec-sample-verdicts")])
#FAILING_CELL

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds)))
'''

FAILING_CELL = '''
# %%
raise RuntimeError("deliberate failure 4711")
'''


def make_sample_book(root: Path, *, failing: bool = False, num_draws: int = 20) -> Path:
    """A copy of the real book's config, intro and bibliography with one sample chapter."""
    book = root / "book"
    (book / "chapters").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "references.bib", "intro.md", "bibliography.md", "glossary.md"):
        shutil.copy2(BOOK / name, book / name)
    for folder in ("bib", "_static", "_ext"):
        if (BOOK / folder).is_dir():
            shutil.copytree(BOOK / folder, book / folder, dirs_exist_ok=True)
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": "verdicts"}, {"file": "reproduce"},
                        {"file": "chapters/ch01_sample"}, {"file": "glossary"},
                        {"file": "bibliography"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    source = SAMPLE_CHAPTER.replace("#FAILING_CELL\n", FAILING_CELL if failing else "")
    (book / "chapters" / "ch01_sample.py").write_text(source)
    params = book / "params" / "ch01_sample"
    params.mkdir(parents=True, exist_ok=True)
    for profile, n in (("smoke", num_draws), ("default", 200), ("full", 5000)):
        (params / f"{profile}.yaml").write_text(
            yaml.safe_dump({"profile": profile, "num_draws": n, "seed": 0}, sort_keys=False))
    return book


def summary_rows(stdout: str) -> dict[str, str]:
    """chapter -> status from the table build.py prints last."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\S+)\s{2,}(executed|cached|FAILED|missing|built|up to date|"
                     r"building)\b", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


# ----------------------------------------------------------- fast checks of build.py itself


def test_toc_lists_every_chapter_in_order():
    assert build.chapter_names(build.read_toc(BOOK)) == EXPECTED_CHAPTERS


def test_toc_starts_with_intro_and_ends_with_bibliography():
    files = build._toc_files(build.read_toc(BOOK))
    assert files[0] == "intro" and files[-2:] == ["bibliography", "api"]
    assert (BOOK / "intro.md").is_file() and (BOOK / "bibliography.md").is_file()


def test_filter_toc_keeps_pages_and_selected_chapters():
    toc = build.read_toc(BOOK)
    files = build._toc_files(build.filter_toc(toc, {"ch04_stability"}))
    assert files == ["intro", "verdicts", "reproduce", "chapters/ch04_stability",
                     "glossary", "bibliography", "api"]
    assert build.chapter_names(toc) == EXPECTED_CHAPTERS  # the original is untouched


def test_config_keeps_the_book_offline_and_unexecuted():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert {"dollarmath", "amsmath"} <= set(config["parse"]["myst_enable_extensions"])
    assert config["sphinx"]["config"]["nb_ipywidgets_js"] == {}
    assert not config["launch_buttons"]["thebe"]
    assert not any(v for k, v in config["launch_buttons"].items() if k.endswith("_url"))
    assert config["bibtex_bibfiles"] == ["references.bib"]


def test_generated_pages_are_in_the_toc_near_the_front():
    files = build._toc_files(build.read_toc(BOOK))
    for page in build.GENERATED_PAGES:
        assert page in files, page
        assert files.index(page) < files.index("chapters/" + EXPECTED_CHAPTERS[0])
        assert not (BOOK / f"{page}.md").exists(), f"{page} is generated, not typed"


def _planted_notebook(path: Path, verdicts: list[dict], *, duration: float = 12.5) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"duration": duration, "end_time": "2026-12-01T10:00:00.5"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 3. A planted chapter\n\ntext"),
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/markdown": "| table |"},
            metadata={build.VERDICTS_KEY: {"chapter": "ch03_x", "verdicts": verdicts}})]),
        nbformat.v4.new_code_cell("prov", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/markdown": "| what | value |\n| --- | --- |\n"
                                                   "| device | cpu: planted (2 threads) |"})]),
    ]
    nbformat.write(nb, path)
    return path


def test_verdict_page_is_computed_from_the_notebooks_output_metadata(tmp_path):
    from sgdnoise.report import VERDICTS_METADATA_KEY

    assert build.VERDICTS_KEY == VERDICTS_METADATA_KEY
    verdict = {"claim": "Planted claim 6021 | with a pipe", "outcome": "contradicted",
               "sentence": "the gap is 0.31 (threshold 0.1)", "scale": "recorded GPU runs",
               "section": "sec-ch3-verdicts"}
    nbs = {"ch03_x": _planted_notebook(tmp_path / "a.ipynb", [verdict]),
           "ch04_y": _planted_notebook(tmp_path / "b.ipynb", [])}
    toc = {"root": "intro", "chapters": [{"file": "verdicts"}, {"file": "chapters/ch03_x"},
                                         {"file": "chapters/ch04_y"}]}
    page = build.verdicts_page(toc, nbs, "default")
    assert page.startswith("# Verdicts")
    assert "Of the 1 claim about SGD tested, 1 contradicted." in page
    assert "(s)" not in page
    parts = [line for line in page.splitlines() if line.startswith("## ")]
    assert parts == ["## Claims about SGD", "## Could not be decided at this scale",
                     "## Derivation checks"]
    claims = page.split("## Could not be decided")[0]
    assert "### 3. A planted chapter" in claims and "Scale: *GPU records*" in claims
    assert "* - *GPU records:* Planted claim 6021 | with a pipe" in claims
    assert "  - {bdg-danger}`contradicted`" in claims
    assert "  - the gap is 0.31 (threshold 0.1)" in claims
    assert "  - {ref}`sec-ch3-verdicts`" in claims
    assert "12 s" in claims and "planted" in claims
    assert page.count("None in this build.") == 2
    assert page.rstrip().endswith(
        "Chapters that record no computed verdict: {doc}`3. A planted chapter "
        "<chapters/ch04_y>`.")


def test_reproduce_page_reads_the_measured_times(tmp_path):
    for profile, duration in (("smoke", 4.0), ("default", 300.0)):
        (tmp_path / profile).mkdir()
        _planted_notebook(tmp_path / profile / "ch03_x.ipynb", [], duration=duration)
    toc = {"root": "intro", "chapters": [{"file": "chapters/ch03_x"}]}
    page = build.reproduce_page(toc, {"ch03_x": tmp_path / "smoke" / "ch03_x.ipynb"},
                                "smoke", tmp_path)
    assert "| {doc}`chapters/ch03_x` | 4 s | 300 s | – |" in page
    assert "| **all chapters** | **0.1 min** | **5.0 min** | incomplete |" in page
    assert "make book" in page and "make test" in page and "plan_full.yaml" in page
    assert "cpu: planted (2 threads)" in page
    assert "- `smoke`: 0.1 minutes of chapter time for all 1 chapters, measured." in page
    assert "H200-minutes (on an H100" in page  # the GPU plans' estimate, full profile


def test_profile_costs_give_measured_minutes_and_the_gpu_plans():
    runs = {"smoke": {"a": {"wall_s": 60.0}, "b": {"wall_s": 30.0}},
            "default": {"a": {"wall_s": 600.0}}}
    plans = [{"gpu": True, "spent_s": 1200.0, "left_s": 6000.0},
             {"gpu": False, "spent_s": 50.0, "left_s": None},
             {"gpu": True, "spent_s": 0.0, "left_s": 600.0}]
    lines = build.profile_costs(["a", "b"], runs, plans)
    assert lines[0] == ("- `smoke`: 1.5 minutes of chapter time for all 2 chapters, "
                        "measured.")
    assert lines[1] == ("- `default`: 10.0 minutes of chapter time for the 1 of 2 chapters "
                        "executed with it here, measured.")
    assert lines[2].startswith("- `full`: not executed in this build folder")
    assert ("2 GPU plans: 20 GPU-minutes recorded so far, about 110 H200-minutes (on an "
            "H100 165–220) estimated for the runs left.") in lines[2]


def test_clean_notebook_removes_parameter_cells_and_folds_code(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("profile = 'default'",
                                  metadata={"tags": ["parameters", "remove-cell"]}),
        nbformat.v4.new_code_cell("profile = 'smoke'",
                                  metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("import numpy", metadata={"tags": ["remove-cell"]}),
        nbformat.v4.new_code_cell("plot()", metadata={"tags": ["remove-input"]}),
        nbformat.v4.new_code_cell("table()"),
    ]
    nbformat.write(nb, tmp_path / "in.ipynb")
    build.clean_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb")
    tags = [c.metadata.get("tags", []) for c in nbformat.read(tmp_path / "out.ipynb", 4).cells]
    assert tags == [["parameters", "remove-cell"], ["injected-parameters", "remove-cell"],
                    ["remove-cell"], ["remove-input"], ["hide-input"]]


def test_clean_notebook_keeps_no_machine_path_and_no_stderr(tmp_path):
    from sgdnoise.provenance import REPOSITORY

    data = f"{REPOSITORY}/data/cifar-10-batches-py"
    cell = nbformat.v4.new_code_cell("load()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"read {data}\n"),
        nbformat.v4.new_output("stream", name="stderr", text=f"UserWarning in {data}\n"),
        nbformat.v4.new_output("display_data", data={
            "text/markdown": f"| data | {data} |",
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"}}),
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "in.ipynb")
    build.clean_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb")
    text = (tmp_path / "out.ipynb").read_text()
    assert str(REPOSITORY) not in text and "UserWarning" not in text and "widget" not in text
    outputs = nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream", "display_data"]
    assert outputs[0].text == "read data/cifar-10-batches-py\n"
    assert outputs[1].data["text/markdown"] == "| data | data/cifar-10-batches-py |"


def test_api_reference_lists_every_public_module_from_the_package():
    import pkgutil

    import sgdnoise

    modules = build.api_modules()
    assert modules[0] == "sgdnoise" and "sgdnoise.chapters" in modules
    expected = {f"sgdnoise.{m.name}" for m in pkgutil.iter_modules(sgdnoise.__path__)
                if not m.name.startswith("_")}
    assert expected <= set(modules)
    assert not [m for m in modules if "._" in m]
    toc = build.expand_api_toc({"root": "intro", "chapters": [{"file": "api"}]}, modules)
    assert toc["chapters"][0]["sections"] == [{"file": f"api/{m}"} for m in modules]
    assert ".. automodule:: sgdnoise.data" in build.api_module_page("sgdnoise.data")


def test_docstrings_that_are_not_valid_rest_are_shown_verbatim():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sgdnoise_apidoc",
                                                  BOOK / "_ext" / "sgdnoise_apidoc.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    assert ext.first_problem("Fine, with :func:`x` and ``code``.") is None
    assert "substitution" in ext.first_problem("the norm |θ| of theta")
    lines = ["Norm |θ|.", "", "More."]
    ext.process_docstring(None, "function", "m.f", None, None, lines)
    assert lines[:3] == [".. code-block:: text", "", "    Norm |θ|."]
    clean = ["A clean docstring."]
    ext.process_docstring(None, "function", "m.g", None, None, clean)
    assert clean == ["A clean docstring."]


def test_figures_are_numbered_per_chapter():
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("sgdnoise_fignum",
                                                  BOOK / "_ext" / "sgdnoise_fignum.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    env = SimpleNamespace(toc_fignumbers={
        "intro": {"figure": {"fig-a": (1,)}},
        "chapters/ch07_saddles": {"figure": {"fig-x": (29,), "fig-w": (28,)}},
        "chapters/ch08_resnet_sweep": {"figure": {"f1": (30,), "f2": (31,), "f3": (32,)},
                                       "table": {"t1": (4,)}},
    })
    assert ext.chapter_fignumbers(None, env) == []
    assert env.toc_fignumbers["chapters/ch08_resnet_sweep"] == {
        "figure": {"f1": (8, 1), "f2": (8, 2), "f3": (8, 3)}, "table": {"t1": (8, 1)}}
    assert env.toc_fignumbers["chapters/ch07_saddles"]["figure"] == {"fig-w": (7, 1),
                                                                     "fig-x": (7, 2)}
    assert env.toc_fignumbers["intro"] == {"figure": {"fig-a": (1,)}}
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert "sgdnoise_fignum" in config["sphinx"]["local_extensions"]


def test_bib_files_add_every_chapter_bib(tmp_path):
    (tmp_path / "references.bib").write_text("")
    (tmp_path / "bib").mkdir()
    for name in ("ch02.bib", "ch01.bib"):
        (tmp_path / "bib" / name).write_text("")
    assert build.bib_files(tmp_path) == ["references.bib", "bib/ch01.bib", "bib/ch02.bib"]


# Works the bibliography cites without a link: no DOI and no stable address is known.
UNLINKED_WORKS = {
    "cochran1977sampling": "a textbook (no DOI)",
    "golmant2018noise": "the essay: its web address is not recorded in the repository",
}


def bib_links(path: Path) -> dict[str, str]:
    """Each entry of a .bib file -> its ``doi`` (as https://doi.org/...) or ``url``, or ""."""
    from pybtex.database import parse_file

    out = {}
    for key, entry in parse_file(str(path)).entries.items():
        doi, url = entry.fields.get("doi", ""), entry.fields.get("url", "")
        out[key] = f"https://doi.org/{doi}" if doi else url
    return out


def test_every_bibliography_entry_links_to_the_work():
    """Every cited work has a DOI or a web address (arXiv, proceedings, JSTOR), apart from
    :data:`UNLINKED_WORKS`; a link is an https address or a DOI."""
    links: dict[str, str] = {}
    for name in build.bib_files(BOOK):
        links |= bib_links(BOOK / name)
    missing = sorted(k for k, v in links.items() if not v and k not in UNLINKED_WORKS)
    assert not missing, f"bibliography entries without doi or url: {missing}"
    assert all(v.startswith("https://") for v in links.values() if v)
    assert set(UNLINKED_WORKS) <= set(links), "UNLINKED_WORKS names a work no longer cited"


def test_bib_links_reads_doi_and_url(tmp_path):
    (tmp_path / "a.bib").write_text(
        "@article{a, title={A}, doi={10.1/x}}\n@misc{b, title={B}, url={https://b.org}}\n"
        "@book{c, title={C}}\n")
    assert bib_links(tmp_path / "a.bib") == {"a": "https://doi.org/10.1/x",
                                             "b": "https://b.org", "c": ""}


def test_check_chapter_accepts_matching_parameters(tmp_path):
    book = make_sample_book(tmp_path)
    _, params = build.check_chapter(book, "ch01_sample", "smoke")
    assert params == {"profile": "smoke", "num_draws": 20, "seed": 0}


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"extra": 1}, r"unknown parameter\(s\) \['extra'\]"),
     ({"seed": None}, r"missing parameter\(s\) \['seed'\]"),
     ({"profile": "full"}, r"sets profile='full', expected 'smoke'")],
)
def test_check_chapter_rejects_parameter_files_that_disagree(tmp_path, change, expected):
    book = make_sample_book(tmp_path)
    pfile = book / "params" / "ch01_sample" / "smoke.yaml"
    values = yaml.safe_load(pfile.read_text())
    for key, value in change.items():
        if value is None:
            values.pop(key)
        else:
            values[key] = value
    pfile.write_text(yaml.safe_dump(values))
    with pytest.raises(build.BuildError, match=expected):
        build.check_chapter(book, "ch01_sample", "smoke")


def test_check_chapter_needs_exactly_one_parameters_cell(tmp_path):
    book = make_sample_book(tmp_path)
    src = book / "chapters" / "ch01_sample.py"
    src.write_text(src.read_text().replace('# %% tags=["parameters"]', "# %%"))
    with pytest.raises(build.BuildError, match="exactly one code cell tagged 'parameters'"):
        build.check_chapter(book, "ch01_sample", "smoke")


def test_package_hash_follows_code_changes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not code")
    first = build.package_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("changed, still not code")
    assert build.package_hash(tmp_path) == first
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert build.package_hash(tmp_path) != first


# ------------------------------------------------------------- the pipeline, run for real


@pytest.mark.book
def test_missing_chapter_is_an_error_unless_allowed(tmp_path):
    book = make_sample_book(tmp_path)
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["chapters"].insert(1, {"file": "chapters/ch02_absent"})
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    common = ("--book-dir", str(book), "--build-dir", str(tmp_path / "out"), "--profile",
              "smoke", "--no-html", "--only", "ch02_absent")
    proc = run_build(*common)
    assert proc.returncode == 2, output_of(proc)
    assert "chapters/ch02_absent.py" in proc.stderr and "--allow-missing" in proc.stderr
    proc = run_build(*common, "--allow-missing")
    assert proc.returncode == 0, output_of(proc)
    assert "WARNING: chapters/ch02_absent.py does not exist" in proc.stderr
    assert summary_rows(proc.stdout)["ch02_absent"] == "missing"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.book
def test_bad_input_is_refused_and_a_failure_keeps_the_last_good_html(tmp_path, monkeypatch,
                                                                     capsys):
    book = make_sample_book(tmp_path)
    out = tmp_path / "out"
    common = ("--book-dir", str(book), "--build-dir", str(out), "--profile", "smoke")
    executed = out / "executed" / "smoke"
    html = out / "html"
    page = html / "chapters" / "ch01_sample.html"

    proc = run_build(*common, "-W")  # a good build first, so there is HTML to protect
    assert proc.returncode == 0, output_of(proc)
    good, good_executed = snapshot(html), snapshot(executed)
    assert "sgdnoise-failure-banner" not in page.read_text()

    # bad arguments and bad parameter files: refused before anything is touched (exit 2)
    pfile = book / "params" / "ch01_sample" / "smoke.yaml"
    good_params = pfile.read_text()
    refusals = [
        (("--only", "bogus"), (), "--only ['bogus']: no such chapter"),
        (("--profile", "huge"), (), "invalid choice: 'huge'"),
        ((), ("num_draws: 20", "num_draws: 20\nnum_draw: 3"), "unknown parameter(s) ['num_draw']"),
        ((), ("seed: 0", ""), "missing parameter(s) ['seed']"),
    ]
    for extra, (old, new_text), expected in [(a, c or ("", ""), e) for a, c, e in refusals]:
        pfile.write_text(good_params.replace(old, new_text) if old else good_params)
        proc = run_build(*common, *extra, "-W")
        assert proc.returncode == 2, output_of(proc)
        assert expected in proc.stderr, output_of(proc)
        assert snapshot(html) == good and snapshot(executed) == good_executed, expected
    pfile.write_text(good_params)

    # a value the chapter's Params class refuses: checked before any kernel starts
    from sgdnoise.params import ChapterParams, param

    @dataclass(frozen=True)
    class SampleParams(ChapterParams):
        num_draws: int = param(low=10)
        seed: int = param(low=0)

    monkeypatch.setattr(build, "params_class", lambda name: SampleParams)
    monkeypatch.setattr(build, "execute_chapter", lambda *a, **k: pytest.fail("executed"))
    pfile.write_text(good_params.replace("num_draws: 20", "num_draws: -5"))
    assert build.main([*common, "-W"]) == 2
    err = capsys.readouterr().err
    assert "'num_draws'" in err and ">= 10" in err and "-5" in err and str(pfile) in err
    assert snapshot(html) == good and snapshot(executed) == good_executed
    monkeypatch.undo()

    # a chapter that fails while executing: the old HTML stays, with a banner on its page
    proc = run_build(*common, "-W")
    text = proc.stdout + proc.stderr
    failed = executed / "ch01_sample.failed.ipynb"
    assert proc.returncode == 1, output_of(proc)
    assert "ParamError" in text and "'num_draws'" in text and ">= 10" in text and "-5" in text
    assert str(failed) in text and failed.is_file()
    assert not (executed / "ch01_sample.ipynb").exists()
    assert summary_rows(proc.stdout)["ch01_sample"] == "FAILED"
    assert not (out / "html.stale").exists()
    now = snapshot(html)
    changed = sorted(k for k in now if now[k] != good.get(k))
    assert changed == ["_failures.json", "chapters/ch01_sample.html"], changed
    banner = re.search(r'<div class="sgdnoise-failure-banner".*?</div>', page.read_text(),
                       flags=re.S)
    assert banner, "no banner on the failed chapter's page"
    assert "profile <code>smoke</code> failed at" in banner.group(0)
    assert "ParamError" in banner.group(0) and "last good build" in banner.group(0)
    failures = json.loads((html / "_failures.json").read_text())
    assert failures["ch01_sample"]["profile"] == "smoke"

    # a cell that raises: papermill's error names it; one banner, now naming that error
    pfile.write_text(good_params)
    make_sample_book(tmp_path, failing=True)
    proc = run_build(*common, "-W")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, output_of(proc)
    assert "RuntimeError" in text and "deliberate failure 4711" in text
    nb = nbformat.read(failed, as_version=4)
    assert build.error_outputs(nb), "the failed notebook keeps the error output"
    source = page.read_text()
    assert source.count('class="sgdnoise-failure-banner"') == 1
    assert "deliberate failure 4711" in source
    assert (html / "intro.html").read_bytes() == good["intro.html"]

    # the next good build replaces the pages: no banner left
    make_sample_book(tmp_path)
    proc = run_build(*common, "-W")
    assert proc.returncode == 0, output_of(proc)
    assert "sgdnoise-failure-banner" not in page.read_text()
    assert not (html / "_failures.json").exists() and not failed.exists()
    good = snapshot(html)

    # a Sphinx warning (an unknown citation key) fails the HTML build; the old HTML stays
    intro = book / "intro.md"
    intro.write_text(intro.read_text() + "\nSee {cite}`no_such_key_4711`.\n")
    proc = run_build(*common, "-W")
    assert proc.returncode == 1, output_of(proc)
    assert "no_such_key_4711" in proc.stdout + proc.stderr
    assert "jupyter-book build failed" in proc.stderr
    assert summary_rows(proc.stdout)["ch01_sample"] == "cached"
    assert snapshot(html) == good


# -------------------------------------------------------- the real book, smoke profile


@pytest.mark.book
def test_smoke_book_executes_every_chapter(smoke_book: BookBuild):
    for name in smoke_book.chapters:
        path = smoke_book.executed / f"{name}.ipynb"
        assert path.is_file(), f"{name}: no executed notebook"
        assert not (smoke_book.executed / f"{name}.failed.ipynb").exists()
        nb = nbformat.read(path, as_version=4)
        assert build.error_outputs(nb) == [], name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "smoke"' in injected[0].source, name
        record = json.loads((smoke_book.executed / f"{name}.json").read_text())
        assert record["profile"] == "smoke" and record["parameters"]["profile"] == "smoke"


def empty_outputs(nb) -> list[int]:
    """Indices of code cells with a printed output box that holds no text (a ``print`` of
    an empty string renders as an empty grey box on the page; stderr, progress bars
    included, is left out of the pages by the build)."""
    out = []
    for k, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            shown = o.get("output_type") == "stream" and o.get("name") == "stdout"
            text = o.get("text") if shown else None
            if text is not None and not "".join(text).strip():
                out.append(k)
    return out


def test_empty_outputs_finds_an_empty_printed_box():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('x')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="x\n")]),
        nbformat.v4.new_code_cell("print('')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="\n")]),
        nbformat.v4.new_code_cell("bar()", outputs=[
            nbformat.v4.new_output("stream", name="stderr", text="\r\n")])])
    assert empty_outputs(nb) == [1]


@pytest.mark.book
def test_no_executed_page_prints_an_empty_box(smoke_book: BookBuild):
    for name in [*smoke_book.chapters, *smoke_book.guide]:
        nb = nbformat.read(smoke_book.executed / f"{name}.ipynb", as_version=4)
        assert empty_outputs(nb) == [], name


@pytest.mark.book
def test_smoke_book_html_has_rendered_pages(smoke_book: BookBuild):
    html = smoke_book.html
    assert (html / "index.html").is_file()
    intro = (html / "intro.html").read_text()
    assert "structure of SGD" in intro and 'class="math' in intro
    assert 'id="equation-eq-intro-cov"' in intro
    info = json.loads((html / "_build_info.json").read_text())
    assert info["profile"] == "smoke"
    assert set(info["chapters"]) == set(smoke_book.chapters) | set(smoke_book.guide)
    assert not (smoke_book.build_dir / "html.stale").exists()
    for name in smoke_book.chapters:
        page = (html / "chapters" / f"{name}.html").read_text()
        images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+)"', page)
        assert images, f"{name}: no figure"
        assert all((html / src).is_file() for src in images), name
        assert 'class="math' in page, f"{name}: no math"
        table = re.search(r"<table.*?</table>", page, flags=re.S)
        assert table and "git commit" in page and "wall time" in page, f"{name}: no provenance"
        assert re.search(r"<td[^>]*>\s*(<p>)?\s*smoke", page), f"{name}: profile not shown"
    bibliography = (html / "bibliography.html").read_text()
    assert bibliography.count('role="doc-biblioentry"') + bibliography.count(
        'class="citation"') >= 1


@pytest.mark.book
def test_rebuild_with_nothing_changed_executes_nothing(smoke_book: BookBuild):
    mtimes = {p: p.stat().st_mtime_ns for p in smoke_book.executed.glob("*.ipynb")}
    proc = run_build(*smoke_book.args)
    assert proc.returncode == 0, output_of(proc)
    rows = summary_rows(proc.stdout)
    assert all(rows[name] == "cached" for name in smoke_book.chapters), rows
    assert rows["html"] == "up to date", rows
    assert {p: p.stat().st_mtime_ns for p in smoke_book.executed.glob("*.ipynb")} == mtimes


@pytest.mark.book
def test_smoke_book_has_generated_pages_api_and_downloads(smoke_book: BookBuild):
    html = smoke_book.html
    verdicts = (html / "verdicts.html").read_text()
    assert re.search(r"Of the \d+ claims? about SGD tested", verdicts), "no tally"
    linked = set(re.findall(r'href="chapters/(\w+)\.html', verdicts))
    assert linked == set(smoke_book.chapters), linked ^ set(smoke_book.chapters)
    reproduce = (html / "reproduce.html").read_text()
    text = re.sub(r"<[^>]+>", "", reproduce)
    assert "make book" in text and "make test" in text and "plan_full.yaml" in text
    assert re.search(r"<td[^>]*>\s*(<p>)?\s*\d+ s", reproduce), "no measured time"
    api = (html / "api.html").read_text()
    assert "sgdnoise.data" in api and "sgdnoise.chapters" in api
    data_page = (html / "api" / "sgdnoise.data.html").read_text()
    assert 'id="sgdnoise.data.load_cifar10"' in data_page
    for name in smoke_book.chapters:
        page = (html / "chapters" / f"{name}.html").read_text()
        assert "download-source-button" in page, f"{name}: no download button"
        assert 'profile = "smoke"' not in page, f"{name}: injected parameters shown"
        source = nbformat.read(html / "_sources" / "chapters" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in source.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs, f"{name}: the downloadable notebook is not the executed one"


@pytest.mark.book
def test_smoke_book_verdicts_typeset_their_math(smoke_book: BookBuild):
    """Every verdict the chapters recorded writes its math in $...$ (issue 12): no subscript
    as plain text (g_B, λ_max) in a claim or sentence, and every $ closed."""
    build = load_build_module()
    problems, total = [], 0
    for name in smoke_book.chapters:
        nb = nbformat.read(smoke_book.executed / f"{name}.ipynb", as_version=4)
        for v in build.notebook_verdicts(nb):
            total += 1
            for key in ("claim", "sentence"):
                text = str(v.get(key, ""))
                if plain_subscripts(text) or text.count("$") % 2:
                    problems.append(f"{name} {key}: {plain_subscripts(text)} {text[:160]!r}")
    assert total > 0, "no verdict recorded"
    assert not problems, "\n".join(problems)


@pytest.mark.book
def test_publish_writes_one_archive_of_site_notebooks_and_provenance(smoke_book: BookBuild):
    import tarfile

    proc = run_build(*smoke_book.args, "--publish")
    assert proc.returncode == 0, output_of(proc)
    archive = smoke_book.build_dir / "sgdnoise-book-smoke.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        prov = json.loads(tar.extractfile("sgdnoise-book-smoke/PROVENANCE.json").read())
    assert "sgdnoise-book-smoke/html/index.html" in names
    for name in smoke_book.chapters:
        assert f"sgdnoise-book-smoke/executed/{name}.ipynb" in names
        assert prov["chapters"][name]["profile"] == "smoke"
    assert prov["build"]["profile"] == "smoke"
    assert not list(smoke_book.build_dir.glob(".sgdnoise-book-*"))


# ------------------------------------------------ issue 17: refused up front, leftovers


def _no_execution(monkeypatch):
    monkeypatch.setattr(build, "execute_chapter",
                        lambda *a, **k: pytest.fail("a chapter was executed"))
    monkeypatch.setattr(build, "build_html", lambda *a, **k: pytest.fail("html was built"))


@pytest.mark.parametrize("extra", [("--only", "ch01_sample", "--publish"),
                                   ("--no-html", "--publish")])
def test_argument_combinations_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys,
                                                                extra):
    book = make_sample_book(tmp_path)
    _no_execution(monkeypatch)
    out = tmp_path / "out"
    assert build.main(["--book-dir", str(book), "--build-dir", str(out), "--profile", "smoke",
                       *extra]) == 2
    assert "--publish" in capsys.readouterr().err
    assert not out.exists()


def test_a_build_folder_that_is_a_file_is_refused_before_anything_runs(tmp_path, monkeypatch,
                                                                       capsys):
    book = make_sample_book(tmp_path)
    _no_execution(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    for out in (blocker, blocker / "build"):
        assert build.main(["--book-dir", str(book), "--build-dir", str(out), "--profile",
                           "smoke"]) == 2
        err = capsys.readouterr().err
        assert str(blocker) in err and "Traceback" not in err


@pytest.mark.parametrize("text, words", [
    ("profile: smoke\nnum_draws: 20\nseed: [0\n", ["line 4"]),
    ("profile: smoke\nnum_draws: !!python/object/apply:os.system ['true']\nseed: 0\n",
     ["line 2", "python/object"]),
    ("profile: smoke\nnum_draws: 20\nnum_draws: 30\nseed: 0\n", ["line 3", "'num_draws'"]),
    ("profile: smoke\nnum_draws: 20\nseed: .nan\n", ["line 3", "'seed'", "finite"]),
])
def test_a_broken_parameter_file_is_refused_in_one_line(tmp_path, monkeypatch, capsys, text,
                                                        words):
    book = make_sample_book(tmp_path)
    _no_execution(monkeypatch)
    pfile = book / "params" / "ch01_sample" / "smoke.yaml"
    pfile.write_text(text)
    assert build.main(["--book-dir", str(book), "--build-dir", str(tmp_path / "out"),
                       "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if str(pfile) in x)
    for w in words:
        assert w in line, (w, line)
    assert "Traceback" not in err


def _fake_html(folder: Path, text: str) -> None:
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(text)


def test_leftovers_of_interrupted_builds_are_cleaned_and_a_half_swapped_html_restored(
        tmp_path, monkeypatch):
    import tempfile

    book = make_sample_book(tmp_path)
    out = tmp_path / "out"
    executed = out / "executed" / "smoke"
    executed.mkdir(parents=True)
    (executed / "ch01_sample.running.ipynb").write_text("{}")
    (out / ".html-build-x1y2").mkdir()
    (out / ".html-build-x1y2" / "big.bin").write_bytes(b"0" * 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp" / "book-ch01_sample-abc").mkdir(parents=True)
    (tmp_path / "tmp" / "book-ch01_sample-abc" / "ch01_sample.ipynb").write_text("{}")
    (tmp_path / "tmp" / "book-other-keep").mkdir()  # not a chapter of this book
    _fake_html(out / ".html-old", "the last good book")  # killed between the two renames
    monkeypatch.setattr(build, "execute_chapter", lambda *a, **k: None)
    assert build.main(["--book-dir", str(book), "--build-dir", str(out), "--profile", "smoke",
                       "--no-html"]) == 0
    assert (out / "html" / "index.html").read_text() == "the last good book"
    assert not (out / ".html-old").exists()
    assert not (executed / "ch01_sample.running.ipynb").exists()
    assert not list(out.glob(".html-build-*"))
    assert not (tmp_path / "tmp" / "book-ch01_sample-abc").exists()
    assert (tmp_path / "tmp" / "book-other-keep").is_dir()


def test_after_a_completed_swap_the_old_tree_is_dropped_and_the_new_kept(tmp_path, monkeypatch):
    book = make_sample_book(tmp_path)
    out = tmp_path / "out"
    _fake_html(out / "html", "new book")
    _fake_html(out / ".html-old", "old book")  # killed before the old tree was removed
    monkeypatch.setattr(build, "execute_chapter", lambda *a, **k: None)
    assert build.main(["--book-dir", str(book), "--build-dir", str(out), "--profile", "smoke",
                       "--no-html"]) == 0
    assert (out / "html" / "index.html").read_text() == "new book"
    assert not (out / ".html-old").exists()


def test_a_second_build_into_the_same_folder_is_refused(tmp_path, monkeypatch, capsys):
    book = make_sample_book(tmp_path)
    out = tmp_path / "out"
    _no_execution(monkeypatch)
    with build.build_lock(out):
        assert build.main(["--book-dir", str(book), "--build-dir", str(out), "--profile",
                           "smoke", "--no-html"]) == 2
    assert "another build" in capsys.readouterr().err


def test_published_archive_is_world_readable(tmp_path):
    out = tmp_path / "out"
    _fake_html(out / "html", "book")
    (out / "html" / "_build_info.json").write_text(json.dumps({"profile": "smoke"}))
    executed = out / "executed" / "smoke"
    executed.mkdir(parents=True)
    (executed / "ch01_sample.ipynb").write_text("{}")
    (executed / "ch01_sample.json").write_text("{}")
    archive = build.publish(out, "smoke", ["ch01_sample"])
    assert archive.stat().st_mode & 0o777 == 0o644


def test_readme_states_the_exit_codes_that_make_gives():
    text = " ".join((BOOK.parent / "README.md").read_text().split())
    assert build.EXIT_REFUSED == 2 and build.EXIT_FAILED == 1
    assert "`book/build.py` exits with code 2" in text
    assert "exits with code 1" in text
    assert "`make` reports both as its own exit code 2" in text


# ------------------------------------------------ several chapters at once (--jobs)


def test_kernel_threads_share_the_cores_out_evenly():
    assert build.kernel_threads(1, cpus=16) is None  # one job: the kernel's own default
    assert build.kernel_threads(2, cpus=2) == 1
    assert build.kernel_threads(2, cpus=16) == 8
    assert build.kernel_threads(3, cpus=2) == 1  # never zero


def test_kernel_environment_sets_threads_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with build.kernel_environment(2, cpus=4) as threads:
        assert threads == 2
        assert build.os.environ["OMP_NUM_THREADS"] == "2"
        assert build.os.environ["MKL_NUM_THREADS"] == "2"
    assert build.os.environ["OMP_NUM_THREADS"] == "7"
    assert "MKL_NUM_THREADS" not in build.os.environ
    with build.kernel_environment(1) as threads:  # one job: threads untouched
        assert threads is None and build.os.environ["OMP_NUM_THREADS"] == "7"


@pytest.mark.parametrize("value, words", [("0", "use 1 or more"), ("two", "not a whole")])
def test_jobs_must_be_a_positive_whole_number(tmp_path, monkeypatch, capsys, value, words):
    book = make_sample_book(tmp_path)
    _no_execution(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--book-dir", str(book), "--build-dir", str(tmp_path / "out"),
                    "--jobs", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and words in err


def _chapters(*names: str) -> list[tuple[object, dict[str, str]]]:
    return [(build.ChapterResult(n), {"hash": n}) for n in names]


def test_schedule_starts_new_chapters_first_then_the_longest(tmp_path):
    for name, seconds in (("a", 5.0), ("b", 50.0), ("c", 20.0)):
        nb = {"metadata": {"papermill": {"duration": seconds}}, "cells": []}
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    order = [r.name for r, _ in build.schedule(_chapters("a", "new1", "b", "c", "new2"),
                                               tmp_path)]
    assert order == ["new1", "new2", "b", "c", "a"]


def test_a_failure_with_two_jobs_stops_later_chapters_and_names_the_failure(tmp_path,
                                                                           monkeypatch):
    import time

    def fake_execute(book_dir, name, *args, **kwargs):  # runs in a forked worker
        (tmp_path / f"started-{name}").touch()
        if name == "bad":
            raise build.BuildError("chapter bad failed: deliberate 9182")
        time.sleep(1.0)  # 'slow' is still running when 'bad' fails

    monkeypatch.setattr(build, "execute_chapter", fake_execute)
    job = build.ChapterJob(tmp_path, "smoke", tmp_path,
                           {n: (None, {}) for n in ("slow", "bad", "later")},
                           progress_bar=False)
    pending = _chapters("slow", "bad", "later")
    start = time.perf_counter()
    with pytest.raises(build.BuildError, match="deliberate 9182"):
        build.execute_all(job, pending, jobs=2)
    status = {r.name: r.status for r, _ in pending}
    assert status == {"slow": "executed", "bad": "FAILED", "later": "not run"}
    assert not (tmp_path / "started-later").exists()
    assert (tmp_path / "started-slow").exists()
    assert time.perf_counter() - start >= 0.9  # the running chapter was waited for
    assert {r.name: r.wall_s >= 0.9 for r, _ in pending if r.name != "later"} == {
        "slow": True, "bad": False}


TWO_CHAPTER_THREADS = '''\
# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 2. Threads

# %% tags=["parameters"]
profile = "default"
num_draws = 200
seed = 0

# %%
import os
import time
import torch
time.sleep(1.0)
print("threads", torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
from ipykernel.kernelapp import IPKernelApp
print("transport", IPKernelApp.instance().transport)
'''


@pytest.mark.book
def test_two_jobs_execute_two_chapters_side_by_side_with_their_own_threads(tmp_path):
    book = make_sample_book(tmp_path)
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["chapters"].insert(3, {"file": "chapters/ch02_threads"})
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (book / "chapters" / "ch02_threads.py").write_text(TWO_CHAPTER_THREADS)
    shutil.copytree(book / "params" / "ch01_sample", book / "params" / "ch02_threads")
    out = tmp_path / "out"
    proc = run_build("--book-dir", str(book), "--build-dir", str(out), "--profile", "smoke",
                     "--no-html", "--jobs", "2")
    assert proc.returncode == 0, output_of(proc)
    assert "2 chapters, 2 at a time" in proc.stdout
    rows = summary_rows(proc.stdout)
    assert rows["ch01_sample"] == rows["ch02_threads"] == "executed"
    nb = nbformat.read(out / "executed" / "smoke" / "ch02_threads.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    threads = build.kernel_threads(2)
    assert f"threads {threads} {threads}" in text
    # the kernels talk over Unix sockets at their own paths: two starting at once cannot
    # be handed the same TCP port (the race that killed a kernel in a clean-clone build)
    assert "transport ipc" in text


SLEEPING_CHAPTER = TWO_CHAPTER_THREADS.replace("time.sleep(1.0)", "time.sleep(120)")


@pytest.mark.book
def test_an_interrupt_stops_two_jobs_at_once_and_writes_no_chapter(tmp_path):
    """SIGINT to the build (what Ctrl-C sends) with two chapters running: both stop within
    seconds, as with one job, and neither leaves a finished notebook."""
    import os
    import signal
    import subprocess
    import sys
    import time

    book = make_sample_book(tmp_path)
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["chapters"][2:3] = [{"file": "chapters/ch01_sleep"}, {"file": "chapters/ch02_sleep"}]
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for name in ("ch01_sleep", "ch02_sleep"):
        (book / "chapters" / f"{name}.py").write_text(SLEEPING_CHAPTER)
        shutil.copytree(book / "params" / "ch01_sample", book / "params" / name)
    out = tmp_path / "out"
    cmd = [sys.executable, str(BOOK / "build.py"), "--book-dir", str(book), "--build-dir",
           str(out), "--profile", "smoke", "--no-html", "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    executed = out / "executed" / "smoke"
    deadline = time.monotonic() + 120
    while len(list(executed.glob("*.running.ipynb"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(5)  # the kernels reach the sleeping cell
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=90)
    assert time.monotonic() - start < 45, output
    assert proc.returncode != 0, output
    assert not list(executed.glob("ch0*_sleep.ipynb")), output
