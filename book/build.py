#!/usr/bin/env python3
"""Execute the book's chapters with papermill, then build the HTML with Jupyter Book.

For every chapter listed in ``_toc.yml`` (entries ``chapters/<name>``):

1. ``chapters/<name>.py`` (jupytext percent format) becomes a notebook;
2. papermill executes it with ``params/<name>/<profile>.yaml`` (plus ``profile``) injected,
   cwd ``chapters/``, into ``<build>/executed/<profile>/<name>.ipynb``; a sidecar
   ``<name>.json`` keeps the hash of the chapter source, its parameter file and the
   ``sgdnoise`` package code, so an unchanged chapter is not executed again;
3. a source tree is staged in ``<build>/stage/<profile>`` (config, toc, intro, bibliography,
   executed notebooks) and Jupyter Book builds it; the result replaces ``<build>/html``
   only when the build succeeded.

A failing chapter stops the build: its cell error is printed, the executed notebook is kept
as ``<name>.failed.ipynb`` and the old HTML is moved to ``<build>/html.stale`` (with a
``STALE.txt`` saying why) so it cannot be mistaken for the current book. Exit code 1.

Usage: ``python book/build.py [--profile smoke|default|full] [--only NAME ...] [--no-html]
[-W] [--force] [--allow-missing] [--build-dir DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "default", "full")
BOOK_DIR = Path(__file__).resolve().parent
REPO_DIR = BOOK_DIR.parent
PACKAGE_DIR = REPO_DIR / "src" / "sgdnoise"
CHAPTER_PREFIX = "chapters/"
# Files and folders of the book copied into the stage when present (besides the toc pages;
# _config.yml and _toc.yml are rewritten there).
STAGE_FILES = ("references.bib",)
STAGE_DIRS = ("bib", "_static", "images")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
WIDGET_MIME = ("application/vnd.jupyter.widget-view+json",
               "application/vnd.jupyter.widget-state+json")


class BuildError(RuntimeError):
    """A failure that stops the build; its message is printed as is."""


@dataclass
class ChapterResult:
    name: str
    status: str = "pending"  # executed | cached | FAILED | missing | not selected
    wall_s: float = 0.0
    hash: str = ""
    notebook: str = ""


# --------------------------------------------------------------------------- the toc


def _toc_files(node: Any) -> list[str]:
    """Every ``file:`` entry of a (nested) jupyter-book toc, in reading order."""
    out: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(str(node["file"]))
        if "root" in node:
            out.append(str(node["root"]))
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                out.extend(_toc_files(child))
    elif isinstance(node, list):
        for child in node:
            out.extend(_toc_files(child))
    return out


def read_toc(book_dir: Path) -> dict[str, Any]:
    with (book_dir / "_toc.yml").open() as fh:
        toc = yaml.safe_load(fh)
    if not isinstance(toc, dict) or "root" not in toc:
        raise BuildError(f"{book_dir / '_toc.yml'}: not a jupyter-book toc (no 'root')")
    return toc


def chapter_names(toc: dict[str, Any]) -> list[str]:
    """Names of the executed chapters (toc entries ``chapters/<name>``), in order."""
    names = []
    for entry in _toc_files(toc):
        entry = entry.removesuffix(".ipynb").removesuffix(".py")
        if entry.startswith(CHAPTER_PREFIX):
            names.append(entry[len(CHAPTER_PREFIX):])
    return names


def filter_toc(node: Any, keep: set[str]) -> Any:
    """A copy of the toc without the chapter entries whose name is not in ``keep``."""
    if isinstance(node, list):
        kept = [filter_toc(child, keep) for child in node]
        return [child for child in kept if child is not None]
    if isinstance(node, dict):
        entry = str(node.get("file", ""))
        if entry.startswith(CHAPTER_PREFIX):
            name = entry[len(CHAPTER_PREFIX):].removesuffix(".ipynb").removesuffix(".py")
            if name not in keep:
                return None
        out = dict(node)
        for key in ("parts", "chapters", "sections"):
            if key in out:
                out[key] = filter_toc(out[key], keep)
        if "parts" in node and not out["parts"]:
            del out["parts"]
        if "chapters" in node and not out["chapters"] and "file" not in node:
            return None  # an emptied part
        if "sections" in node and not out["sections"]:
            del out["sections"]
        return out
    return node


# ------------------------------------------------------------------ chapter inputs


def parameter_names(notebook: Any) -> list[str]:
    """Names assigned in the notebook's single cell tagged ``parameters``."""
    cells = [c for c in notebook.cells
             if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise BuildError(f"expected exactly one code cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(cells[0].source)
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if isinstance(target, ast.Name):
                names.append(target.id)
    return names


def load_params(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise BuildError(f"{path}: a parameter file must hold a mapping, "
                         f"got {type(data).__name__}")
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_hash(package_dir: Path) -> str:
    """One hash over every ``*.py`` of the package (relative path and content)."""
    h = hashlib.sha256()
    if package_dir.is_dir():
        for path in sorted(package_dir.rglob("*.py")):
            h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def chapter_inputs(book_dir: Path, name: str, profile: str, pkg_hash: str) -> dict[str, str]:
    source = book_dir / "chapters" / f"{name}.py"
    params = book_dir / "params" / name / f"{profile}.yaml"
    parts = {"source": _sha(source.read_bytes()), "params": _sha(params.read_bytes()),
             "package": pkg_hash, "profile": profile}
    parts["hash"] = _sha(json.dumps(parts, sort_keys=True).encode())
    return parts


def check_chapter(book_dir: Path, name: str, profile: str) -> tuple[Any, dict[str, Any]]:
    """Read the chapter and its parameters; check they agree. Returns (notebook, params)."""
    import jupytext

    source = book_dir / "chapters" / f"{name}.py"
    pfile = book_dir / "params" / name / f"{profile}.yaml"
    if not pfile.is_file():
        raise BuildError(f"{name}: parameter file {pfile} does not exist")
    notebook = jupytext.read(source)
    try:
        names = set(parameter_names(notebook))
    except (BuildError, SyntaxError) as exc:
        raise BuildError(f"{name}: {source}: {exc}") from exc
    params = load_params(pfile)
    if params.get("profile", profile) != profile:
        raise BuildError(f"{name}: {pfile} sets profile={params['profile']!r}, "
                         f"expected {profile!r}")
    params["profile"] = profile
    extra = sorted(set(params) - names)
    missing = sorted(names - set(params))
    if extra or missing:
        raise BuildError(
            f"{name}: {pfile} does not match the chapter's parameters cell: "
            + (f"unknown parameter(s) {extra}" if extra else "")
            + ("; " if extra and missing else "")
            + (f"missing parameter(s) {missing}" if missing else "")
            + f" (the parameters cell defines {sorted(names)})")
    return notebook, params


# ----------------------------------------------------------------------- execution


def error_outputs(notebook: Any) -> list[str]:
    """'ename: evalue' of every error output in the notebook."""
    errors = []
    for index, cell in enumerate(notebook.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                errors.append(f"cell {index}: {out.get('ename')}: {out.get('evalue')}")
    return errors


def execute_chapter(book_dir: Path, name: str, profile: str, out_dir: Path,
                    inputs: dict[str, str], notebook: Any, params: dict[str, Any]) -> None:
    """Execute one chapter into ``out_dir/<name>.ipynb`` (only on success)."""
    import nbformat
    import papermill as pm

    final = out_dir / f"{name}.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    running = out_dir / f"{name}.running.ipynb"
    sidecar = out_dir / f"{name}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"book-{name}-") as tmp:
        src_nb = Path(tmp) / f"{name}.ipynb"
        nbformat.write(notebook, src_nb)
        env_before = os.environ.get("PYDEVD_DISABLE_FILE_VALIDATION")
        os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # no debugger chatter in outputs
        try:
            pm.execute_notebook(
                str(src_nb), str(running), parameters=params, kernel_name="python3",
                language="python", cwd=str(book_dir / "chapters"), progress_bar=True,
                report_mode=False, log_output=False, start_timeout=300,
            )
            message = None
        except Exception as exc:  # papermill's error carries the failing cell's traceback
            message = _describe_failure(exc)
        finally:
            if env_before is None:
                os.environ.pop("PYDEVD_DISABLE_FILE_VALIDATION", None)
            else:
                os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = env_before
    if message is None:
        errors = error_outputs(nbformat.read(running, as_version=4))
        if errors:
            message = "the executed notebook holds error outputs:\n  " + "\n  ".join(errors)
    if message is not None:
        if running.exists():
            os.replace(running, failed)
        else:
            failed.unlink(missing_ok=True)
        final.unlink(missing_ok=True)  # an older good run must not pass for the current one
        sidecar.unlink(missing_ok=True)
        where = f"failed notebook: {failed}" if failed.exists() else "no notebook was written"
        raise BuildError(f"chapter {name} (profile {profile}) failed:\n{message}\n{where}")
    os.replace(running, final)
    failed.unlink(missing_ok=True)
    record = dict(inputs, chapter=name, parameters=params,
                  executed_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    sidecar.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def _describe_failure(exc: Exception) -> str:
    ename = getattr(exc, "ename", None)
    if ename is not None:  # papermill.PapermillExecutionError
        tb = "\n".join(ANSI.sub("", line) for line in getattr(exc, "traceback", []) or [])
        cell = getattr(exc, "exec_count", None)
        head = f"{ename}: {getattr(exc, 'evalue', '')}"
        return (f"error in cell [{cell}]: {head}\n{tb}" if cell is not None
                else f"{head}\n{tb}")
    return f"{type(exc).__name__}: {ANSI.sub('', str(exc))}"


def is_cached(out_dir: Path, name: str, inputs: dict[str, str]) -> bool:
    final, sidecar = out_dir / f"{name}.ipynb", out_dir / f"{name}.json"
    if not (final.is_file() and sidecar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text()).get("hash") == inputs["hash"]
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------- html


def bib_files(book_dir: Path) -> list[str]:
    files = ["references.bib"] if (book_dir / "references.bib").is_file() else []
    return files + sorted(p.relative_to(book_dir).as_posix()
                          for p in (book_dir / "bib").glob("*.bib"))


def clean_notebook(src: Path, dst: Path) -> None:
    """Copy an executed notebook for the book: widget state dropped (it would pull remote
    JS), the parameter cells folded away (the provenance table lists every value)."""
    import nbformat

    nb = nbformat.read(src, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and not {
                "hide-input", "remove-input", "hide-cell", "remove-cell"} & set(tags):
            cell.metadata["tags"] = [*tags, "hide-input"]  # the provenance table lists them
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data")
            if data:
                for mime in WIDGET_MIME:
                    data.pop(mime, None)
    nbformat.write(nb, dst)


def stage_book(book_dir: Path, stage: Path, toc: dict[str, Any],
               notebooks: dict[str, Path]) -> None:
    """Lay out a Jupyter Book source tree: config, toc, pages, bib files, executed notebooks."""
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "chapters").mkdir(parents=True)
    for fname in STAGE_FILES:
        if (book_dir / fname).is_file():
            shutil.copy2(book_dir / fname, stage / fname)
    for dname in STAGE_DIRS:
        if (book_dir / dname).is_dir():
            shutil.copytree(book_dir / dname, stage / dname)
    config = yaml.safe_load((book_dir / "_config.yml").read_text())
    config["bibtex_bibfiles"] = bib_files(book_dir)
    (stage / "_config.yml").write_text(
        "# staged by book/build.py from book/_config.yml\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (stage / "_toc.yml").write_text(
        "# staged by book/build.py from book/_toc.yml\n"
        + yaml.safe_dump(toc, sort_keys=False))
    for entry in _toc_files(toc):
        if entry.startswith(CHAPTER_PREFIX):
            continue
        for suffix in ("", ".md", ".ipynb"):
            page = book_dir / f"{entry}{suffix}"
            if page.is_file():
                (stage / page.relative_to(book_dir)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page, stage / page.relative_to(book_dir))
                break
        else:
            raise BuildError(f"toc page {entry!r} not found in {book_dir}")
    for name, path in notebooks.items():
        clean_notebook(path, stage / "chapters" / f"{name}.ipynb")


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_jupyter_book(stage: Path, out: Path, warnings_as_errors: bool) -> int:
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(stage), "--path-output", str(out), "--builder", "html"]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    print("$ jupyter-book " + " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, check=False).returncode


def mark_stale(build_dir: Path, reason: str) -> None:
    """Move ``html`` aside to ``html.stale`` with a STALE.txt saying why."""
    html, stale = build_dir / "html", build_dir / "html.stale"
    if html.is_dir():
        if stale.exists():
            shutil.rmtree(stale)
        os.replace(html, stale)
    if stale.is_dir():
        (stale / "STALE.txt").write_text(
            "THIS HTML IS STALE: the last build failed, so these pages do not reflect the "
            f"current sources.\nfailed at {datetime.now(timezone.utc).isoformat()}\n{reason}\n")
        banner = "!" * 78
        print(f"\n{banner}\n!! The previous HTML was moved to {stale} and marked STALE.\n"
              f"!! {build_dir / 'html'} no longer exists until a build succeeds.\n{banner}",
              file=sys.stderr, flush=True)


def html_profile(build_dir: Path) -> str | None:
    info = build_dir / "html" / "_build_info.json"
    try:
        return json.loads(info.read_text()).get("profile")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="default",
                    help="parameter profile injected into every chapter (default: default)")
    ap.add_argument("--only", action="append", metavar="NAME", default=None,
                    help="execute only this chapter (repeatable); the HTML then holds only "
                         "the selected chapters")
    ap.add_argument("--no-html", action="store_true", help="execute chapters, skip the HTML")
    ap.add_argument("--build-dir", type=Path, default=BOOK_DIR / "_build",
                    help="where executed notebooks, the stage and html go (default book/_build)")
    ap.add_argument("--book-dir", type=Path, default=BOOK_DIR,
                    help="the book source folder (default: the folder of this script)")
    ap.add_argument("--package-dir", type=Path, default=PACKAGE_DIR,
                    help="package code hashed for the cache: a change to any *.py under it "
                         "re-executes every chapter (default src/sgdnoise)")
    ap.add_argument("-W", "--warnings-as-errors", action="store_true",
                    help="fail the HTML build on any Sphinx warning (reports all of them)")
    ap.add_argument("--force", action="store_true",
                    help="execute every selected chapter and rebuild the HTML regardless of "
                         "the cache")
    ap.add_argument("--allow-missing", action="store_true",
                    help="skip (with a warning) chapters whose source does not exist yet")
    return ap.parse_args(argv)


def print_summary(results: list[ChapterResult], html_row: tuple[str, float] | None) -> None:
    width = max([len("chapter")] + [len(r.name) for r in results] + [4])
    print(f"\n{'chapter':<{width}}  {'status':<12}  {'wall time':>10}")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 10}")
    for r in results:
        wall = f"{r.wall_s:.1f} s" if r.status in ("executed", "FAILED") else "-"
        print(f"{r.name:<{width}}  {r.status:<12}  {wall:>10}")
    if html_row is not None:
        status, wall = html_row
        print(f"{'html':<{width}}  {status:<12}  {wall:>9.1f} s")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    book_dir: Path = args.book_dir.resolve()
    build_dir: Path = args.build_dir.resolve()
    profile: str = args.profile
    out_dir = build_dir / "executed" / profile
    results: list[ChapterResult] = []
    html_row: tuple[str, float] | None = None
    try:
        toc = read_toc(book_dir)
        names = chapter_names(toc)
        if args.only:
            unknown = sorted(set(args.only) - set(names))
            if unknown:
                raise BuildError(f"--only {unknown}: not in {book_dir / '_toc.yml'}; "
                                 f"chapters: {names}")
        selected = [n for n in names if not args.only or n in args.only]
        results = [ChapterResult(n) for n in selected]
        missing = [n for n in selected if not (book_dir / "chapters" / f"{n}.py").is_file()]
        if missing and not args.allow_missing:
            raise BuildError("chapter source(s) missing: "
                             + ", ".join(f"chapters/{n}.py" for n in missing)
                             + " (pass --allow-missing to build without them)")
        for name in missing:
            print(f"\n{'#' * 78}\n## WARNING: chapters/{name}.py does not exist; "
                  f"skipping it and leaving it out of the book (--allow-missing)\n{'#' * 78}",
                  file=sys.stderr, flush=True)
        pkg_hash = package_hash(args.package_dir.resolve())
        checked = {}
        for r in results:  # check every chapter's inputs before executing anything
            if r.name in missing:
                r.status = "missing"
                continue
            checked[r.name] = check_chapter(book_dir, r.name, profile)
        for r in results:
            if r.name in missing:
                continue
            inputs = chapter_inputs(book_dir, r.name, profile, pkg_hash)
            r.hash, r.notebook = inputs["hash"], str(out_dir / f"{r.name}.ipynb")
            if not args.force and is_cached(out_dir, r.name, inputs):
                r.status = "cached"
                print(f"[book] {r.name}: cached ({profile})", flush=True)
                continue
            print(f"[book] {r.name}: executing with profile {profile}", flush=True)
            notebook, params = checked[r.name]
            start = time.perf_counter()
            try:
                execute_chapter(book_dir, r.name, profile, out_dir, inputs, notebook, params)
            except BuildError:
                r.status, r.wall_s = "FAILED", time.perf_counter() - start
                raise
            r.status, r.wall_s = "executed", time.perf_counter() - start

        if not args.no_html:
            html_row = ("building", 0.0)
            start = time.perf_counter()
            notebooks = {r.name: Path(r.notebook) for r in results if r.status != "missing"}
            keep = set(notebooks)
            staged_toc = filter_toc(toc, keep)
            stage = build_dir / "stage" / profile
            stage_book(book_dir, stage, staged_toc, notebooks)
            options = {"W": bool(args.warnings_as_errors)}
            digest = _sha((tree_hash(stage) + json.dumps(options)).encode())
            html = build_dir / "html"
            info_path = html / "_build_info.json"
            current = None
            if info_path.is_file() and not (html / "STALE.txt").exists():
                try:
                    current = json.loads(info_path.read_text()).get("stage_hash")
                except ValueError:
                    current = None
            if current == digest and not args.force and (html / "index.html").is_file():
                html_row = ("up to date", time.perf_counter() - start)
                print(f"[book] html: up to date ({html})", flush=True)
            else:
                build_dir.mkdir(parents=True, exist_ok=True)
                tmp_out = Path(tempfile.mkdtemp(prefix=".html-build-", dir=build_dir))
                try:
                    code = run_jupyter_book(stage, tmp_out, args.warnings_as_errors)
                    new_html = tmp_out / "_build" / "html"
                    expected = [new_html / "index.html"] + [
                        new_html / "chapters" / f"{n}.html" for n in notebooks]
                    absent = [str(p) for p in expected if not p.is_file()]
                    if code != 0 or absent:
                        html_row = ("FAILED", time.perf_counter() - start)
                        raise BuildError(
                            f"jupyter-book build failed (exit code {code}; see its output "
                            "above)" + (f"; pages not produced: {absent}" if absent else ""))
                    info = {
                        "profile": profile,
                        "built_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "warnings_as_errors": bool(args.warnings_as_errors),
                        "stage_hash": digest,
                        "only": args.only,
                        "missing_chapters": missing,
                        "chapters": {r.name: {"hash": r.hash, "status": r.status,
                                              "wall_s": round(r.wall_s, 2)}
                                     for r in results if r.status != "missing"},
                    }
                    (new_html / "_build_info.json").write_text(
                        json.dumps(info, indent=2) + "\n")
                    old = build_dir / ".html-old"
                    if old.exists():
                        shutil.rmtree(old)
                    if html.exists():
                        os.replace(html, old)
                    os.replace(new_html, html)
                    shutil.rmtree(old, ignore_errors=True)
                    stale = build_dir / "html.stale"
                    if stale.exists():
                        shutil.rmtree(stale)
                finally:
                    shutil.rmtree(tmp_out, ignore_errors=True)
                html_row = ("built", time.perf_counter() - start)
                print(f"[book] html: {html / 'index.html'}", flush=True)
    except BuildError as exc:
        print_summary(results, html_row)
        print(f"\nBUILD FAILED: {exc}", file=sys.stderr, flush=True)
        if not args.no_html or html_profile(build_dir) == profile:
            mark_stale(build_dir, str(exc))
        return 1
    print_summary(results, html_row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
