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

Generated pages: toc entries that are not files of the book but are named in
``GENERATED_PAGES`` are written into the stage from the executed notebooks: ``verdicts``
(every chapter's computed verdicts, from their output metadata) and ``reproduce`` (the
commands, and the measured wall time of every chapter in every profile executed here).

Never losing the last good book: bad arguments (an unknown chapter or profile, a
combination such as ``--only`` with ``--publish``, a build folder that cannot be written)
and bad parameter files (YAML that is not plain, finite data with unique keys, keys that
disagree with the parameters cell, values refused by ``sgdnoise.chapters.<name>.Params``
where that class exists) are reported before anything is executed (exit code 2,
:data:`EXIT_REFUSED`). A chapter that fails while executing stops the build (exit code 1,
:data:`EXIT_FAILED`): its cell error is printed, the executed notebook is kept as
``<name>.failed.ipynb``, and the last good HTML stays readable with a banner on the failed
chapter's page saying which profile failed when (``html/_failures.json`` lists them; the
next successful build replaces the pages). A failing Jupyter Book build leaves the old
HTML untouched. (``make`` reports either code as its own exit code 2.)

One build at a time per build folder (a lock, ``<build>/.build.lock``); each build first
removes what an interrupted one left (``*.running.ipynb``, temporary folders) and, when a
kill fell between the two renames that swap in new HTML, restores the previous tree from
``.html-old`` instead of deleting it.

Several chapters at once: ``--jobs N`` executes N chapters side by side (``make book`` uses
2), each kernel started with ``OMP_NUM_THREADS`` = cores / N, so N one-thread kernels share a
2-core laptop instead of two two-thread kernels taking turns on it; chapters never executed
here start first, then the others longest first. Each chapter runs in a worker process, so
Ctrl-C stops all of them at once, as with one job. Each chapter's wall time is measured as
it ran, beside the others. Kernels talk to the build over Unix sockets (the ``ipc``
transport, :func:`kernel_manager_class`), so two starting at once cannot race for a TCP port.

Usage: ``python book/build.py [--profile smoke|default|full] [--only NAME ...] [--no-html]
[--jobs N] [-W] [--force] [--allow-missing] [--build-dir DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "default", "full")
EXIT_REFUSED = 2  # bad arguments or inputs, found before anything ran
EXIT_FAILED = 1  # a chapter, the HTML build or the archive failed
BOOK_DIR = Path(__file__).resolve().parent
REPO_DIR = BOOK_DIR.parent
PACKAGE_DIR = REPO_DIR / "src" / "sgdnoise"
CHAPTER_PREFIX = "chapters/"
# The "Using sgdnoise" part: how-to pages executed exactly like chapters, but kept in
# guide/<name>.py (names guide_*), with no verdicts. page_folder(name) says which folder.
GUIDE_PREFIX = "guide/"
EXECUTED_PREFIXES = (CHAPTER_PREFIX, GUIDE_PREFIX)


def page_folder(name: str) -> str:
    """The book folder of an executed page: ``guide`` for ``guide_*`` names, else
    ``chapters``."""
    return GUIDE_PREFIX.rstrip("/") if name.startswith("guide_") else CHAPTER_PREFIX.rstrip("/")
# Files and folders of the book copied into the stage when present (besides the toc pages;
# _config.yml and _toc.yml are rewritten there).
STAGE_FILES = ("references.bib",)
STAGE_DIRS = ("bib", "_static", "_ext", "images")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
WIDGET_MIME = ("application/vnd.jupyter.widget-view+json",
               "application/vnd.jupyter.widget-state+json")
VERDICTS_KEY = "sgdnoise_verdicts"  # sgdnoise.report.VERDICTS_METADATA_KEY
FAILURES_FILE = "_failures.json"
HIDDEN_TAGS = {"hide-input", "remove-input", "hide-cell", "remove-cell", "hide-output"}


class UsageError(RuntimeError):
    """Bad arguments or inputs found before anything was executed or written (exit 2)."""


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


def _load_yaml(path: Path) -> Any:
    """``sgdnoise.yamlio.load_yaml`` (plain data, unique keys, finite numbers); its one-line
    errors become :class:`BuildError`."""
    from sgdnoise.yamlio import YamlError, load_yaml

    try:
        return load_yaml(path)
    except YamlError as exc:
        raise BuildError(str(exc)) from None


def read_toc(book_dir: Path) -> dict[str, Any]:
    toc = _load_yaml(book_dir / "_toc.yml")
    if not isinstance(toc, dict) or "root" not in toc:
        raise BuildError(f"{book_dir / '_toc.yml'}: not a jupyter-book toc (no 'root')")
    return toc


def chapter_names(toc: dict[str, Any]) -> list[str]:
    """Names of the executed pages (toc entries ``chapters/<name>`` and ``guide/<name>``),
    in order."""
    names = []
    for entry in _toc_files(toc):
        entry = entry.removesuffix(".ipynb").removesuffix(".py")
        for prefix in EXECUTED_PREFIXES:
            if entry.startswith(prefix):
                names.append(entry[len(prefix):])
    return names


def filter_toc(node: Any, keep: set[str]) -> Any:
    """A copy of the toc without the chapter entries whose name is not in ``keep``."""
    if isinstance(node, list):
        kept = [filter_toc(child, keep) for child in node]
        return [child for child in kept if child is not None]
    if isinstance(node, dict):
        entry = str(node.get("file", ""))
        if entry.startswith(EXECUTED_PREFIXES):
            name = entry.split("/", 1)[1].removesuffix(".ipynb").removesuffix(".py")
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
    data = _load_yaml(path) or {}
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
    source = book_dir / page_folder(name) / f"{name}.py"
    params = book_dir / "params" / name / f"{profile}.yaml"
    parts = {"source": _sha(source.read_bytes()), "params": _sha(params.read_bytes()),
             "package": pkg_hash, "profile": profile}
    parts["hash"] = _sha(json.dumps(parts, sort_keys=True).encode())
    return parts


def params_class(name: str) -> Any:
    """``sgdnoise.chapters.<name>.Params`` when that module defines it, else None."""
    import importlib

    try:
        module = importlib.import_module(f"sgdnoise.chapters.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"sgdnoise.chapters.{name}", "sgdnoise.chapters", "sgdnoise"):
            return None
        raise
    return getattr(module, "Params", None)


def check_chapter(book_dir: Path, name: str, profile: str) -> tuple[Any, dict[str, Any]]:
    """Read the chapter and its parameters; check they agree, and validate the values with
    the chapter's ``Params`` class where it has one. Returns (notebook, params)."""
    import jupytext

    source = book_dir / page_folder(name) / f"{name}.py"
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
    try:
        cls = params_class(name)
    except Exception as exc:  # a broken chapter module must not crash the check
        raise BuildError(f"{name}: importing sgdnoise.chapters.{name} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    if cls is not None:
        try:
            cls.from_mapping(params)
        except (ValueError, TypeError) as exc:
            raise BuildError(f"{name}: {pfile}: {exc}") from None
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


@functools.cache
def kernel_manager_class() -> type | None:
    """The kernel manager every chapter's kernel starts with: on POSIX, jupyter_client's
    own manager with the ``ipc`` transport (Unix sockets, each kernel at its own path in the
    temporary folder); None elsewhere (the default TCP manager).

    Why: with TCP a kernel's five ports are chosen by binding port 0 and closing it, then
    the kernel binds them; two kernels starting at the same moment (``--jobs 2``) can be
    handed the same port, and one dies with "ZMQError: Address already in use". A socket
    path from a fresh random name cannot collide."""
    if os.name != "posix":
        return None
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalSocketKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            name = f"sgdnoise-kernel-{uuid.uuid4().hex[:16]}"
            return os.path.join(tempfile.gettempdir(), name)

    return LocalSocketKernelManager


def execute_chapter(book_dir: Path, name: str, profile: str, out_dir: Path,
                    inputs: dict[str, str], notebook: Any, params: dict[str, Any],
                    progress_bar: bool = True) -> None:
    """Execute one chapter into ``out_dir/<name>.ipynb`` (only on success); the kernel
    inherits this process's environment (:func:`kernel_environment`)."""
    import nbformat
    import papermill as pm

    final = out_dir / f"{name}.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    running = out_dir / f"{name}.running.ipynb"
    sidecar = out_dir / f"{name}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    manager_class = kernel_manager_class()
    manager = {} if manager_class is None else {"kernel_manager_class": manager_class}
    with tempfile.TemporaryDirectory(prefix=f".book-{name}-", dir=out_dir) as tmp:
        src_nb = Path(tmp) / f"{name}.ipynb"
        nbformat.write(notebook, src_nb)
        try:
            pm.execute_notebook(
                str(src_nb), str(running), parameters=params, kernel_name="python3",
                language="python", cwd=str(book_dir / page_folder(name)),
                progress_bar=progress_bar, report_mode=False, log_output=False,
                start_timeout=300, **manager,
            )
            message = None
        except Exception as exc:  # papermill's error carries the failing cell's traceback
            message = _describe_failure(exc)
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


@dataclass
class ChapterJob:
    """What every chapter execution of one build shares (the chapter itself is the
    :class:`ChapterResult` it fills in)."""

    book_dir: Path
    profile: str
    out_dir: Path
    checked: dict[str, Any]  # name -> (notebook, parameters), from :func:`preflight`
    progress_bar: bool = True


def run_chapter(job: ChapterJob, r: ChapterResult, inputs: dict[str, str]) -> None:
    """Execute one chapter in this process (:func:`chapter_worker`), recording its outcome
    in ``r`` (:func:`record_outcome`); a failure is raised as :class:`BuildError`."""
    print(f"[book] {r.name}: executing with profile {job.profile}", flush=True)
    message = record_outcome(r, chapter_worker(job, r.name, inputs),
                             announce=not job.progress_bar)
    if r.status == "FAILED":
        raise BuildError(message)


def record_outcome(r: ChapterResult, outcome: tuple[bool, float, str], announce: bool) -> str:
    """Status and wall time of a :func:`chapter_worker` outcome into ``r`` (printed when
    ``announce``, i.e. without papermill's progress bar); returns the failure's message."""
    ok, r.wall_s, message = outcome
    r.status = "executed" if ok else "FAILED"
    if announce:
        print(f"[book] {r.name}: {r.status} in {r.wall_s:.0f} s", flush=True)
    return message


def previous_wall_s(out_dir: Path, name: str) -> float | None:
    """How long the chapter's last successful execution in this folder took (papermill's
    ``duration`` in the executed notebook), or None when there is none."""
    try:
        meta = json.loads((out_dir / f"{name}.ipynb").read_text()).get("metadata", {})
        duration = (meta.get("papermill") or {}).get("duration")
    except (OSError, ValueError, AttributeError):
        return None
    return float(duration) if isinstance(duration, (int, float)) else None


def schedule(pending: list[tuple[ChapterResult, dict[str, str]]], out_dir: Path,
             ) -> list[tuple[ChapterResult, dict[str, str]]]:
    """The order chapters start in: those never executed here first (in toc order), then the
    others longest first by their last wall time, so that with several jobs the long
    chapters do not start last and leave one core idle at the end."""
    known = {r.name: previous_wall_s(out_dir, r.name) for r, _ in pending}
    fresh = [item for item in pending if known[item[0].name] is None]
    seen = sorted((item for item in pending if known[item[0].name] is not None),
                  key=lambda item: -float(known[item[0].name] or 0.0))
    return fresh + seen


def chapter_worker(job: ChapterJob, name: str, inputs: dict[str, str],
                   ) -> tuple[bool, float, str]:
    """One chapter (in this process, or in a worker process of :func:`execute_all`):
    ``(succeeded, wall seconds, the failure's message or "")``; a failure comes back as a
    value, not an exception."""
    notebook, params = job.checked[name]
    start = time.perf_counter()
    try:
        execute_chapter(job.book_dir, name, job.profile, job.out_dir, inputs, notebook,
                        params, progress_bar=job.progress_bar)
    except BuildError as exc:
        return False, time.perf_counter() - start, str(exc)
    return True, time.perf_counter() - start, ""


def _interrupt_workers() -> None:
    """Pass an interrupt on to the worker processes (a terminal's Ctrl-C reaches them
    already; a SIGINT sent to this process alone does not): each stops its chapter as one
    build does on Ctrl-C, shutting its kernel down."""
    import multiprocessing
    import signal

    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGINT)


def execute_all(job: ChapterJob, pending: list[tuple[ChapterResult, dict[str, str]]],
                jobs: int) -> None:
    """Execute ``pending`` chapters, ``jobs`` at a time, each in a worker process (forked)
    that drives one kernel; a chapter starts only when a worker is free. After a failure
    no further chapter starts (status ``not run``); the ones already running finish, then
    the failures are raised as one :class:`BuildError`. Ctrl-C stops the running chapters
    and the build at once, as with one job."""
    if jobs <= 1 or len(pending) <= 1:
        for r, inputs in pending:
            run_chapter(job, r, inputs)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue, running, errors = list(pending), {}, []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        try:
            while queue or running:
                while queue and len(running) < jobs and not errors:
                    r, inputs = queue.pop(0)
                    print(f"[book] {r.name}: executing with profile {job.profile}", flush=True)
                    running[pool.submit(chapter_worker, job, r.name, inputs)] = r
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    r = running.pop(future)
                    message = record_outcome(r, future.result(), announce=True)
                    if r.status == "FAILED":
                        errors.append(message)
        except KeyboardInterrupt:
            _interrupt_workers()
            raise
    for r, _ in queue:
        r.status = "not run"
    if errors:
        raise BuildError("\n\n".join(errors))


def kernel_threads(jobs: int, cpus: int | None = None) -> int | None:
    """Torch/BLAS threads for each kernel when ``jobs`` chapters run at once: the cores
    shared out evenly, at least one; None for one job (the kernel keeps its default)."""
    if jobs <= 1:
        return None
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


@contextlib.contextmanager
def kernel_environment(jobs: int, cpus: int | None = None):
    """The environment the chapters' kernels start in, restored afterwards: no debugger
    chatter in outputs, and with ``jobs`` > 1 ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to
    :func:`kernel_threads` so that the kernels share the cores instead of each taking all
    of them (two two-thread processes on two cores ran a training step about ten times
    slower). Yields the threads per kernel (None: unchanged)."""
    threads = kernel_threads(jobs, cpus)
    changes = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    if threads is not None:
        changes.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield threads
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    JS), the parameter cells (the chapter's and papermill's injected one) removed from the
    page (the provenance table lists every value), and every other code cell that shows its
    source folded (``hide-input``) unless it carries a hide/remove tag of its own. No path
    of the building machine stays: the paths papermill recorded and any in a text output are
    shortened (:mod:`sgdnoise.provenance`), and stderr (library warnings, which the pages
    leave out too) is dropped."""
    import nbformat

    from sgdnoise.provenance import public_path

    nb = nbformat.read(src, as_version=4)
    nb.metadata.pop("widgets", None)
    papermill = nb.metadata.get("papermill") or {}
    for key in ("input_path", "output_path", "cwd"):  # no path of the building machine
        if papermill.get(key):
            papermill[key] = public_path(str(papermill[key]))
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type == "code":
            if {"parameters", "injected-parameters"} & set(tags):
                if "remove-cell" not in tags:
                    cell.metadata["tags"] = [*tags, "remove-cell"]
            elif not HIDDEN_TAGS & set(tags) and cell.source.strip():
                cell.metadata["tags"] = [*tags, "hide-input"]
        if cell.cell_type == "code":
            cell.outputs = [_public_output(out) for out in cell.get("outputs", [])
                            if not (out.get("output_type") == "stream"
                                    and out.get("name") == "stderr")]
    nbformat.write(nb, dst)


def _public_output(out: Any) -> Any:
    """One output for the book: widget state dropped, and every absolute path in its text
    shortened (:func:`sgdnoise.provenance.public_text`)."""
    from sgdnoise.provenance import public_text

    if out.get("output_type") == "stream":
        out["text"] = public_text(out.get("text", ""))
    for mime, value in list((out.get("data") or {}).items()):
        if mime in WIDGET_MIME:
            out["data"].pop(mime)
        elif mime.startswith("text/") and isinstance(value, str):
            out["data"][mime] = public_text(value)
    return out


# ------------------------------------------------------------------ generated pages


def _read_notebook(path: Path) -> Any | None:
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None


def notebook_title(nb: Any, fallback: str) -> str:
    """The text of the notebook's first Markdown heading."""
    for cell in nb.cells if nb is not None else []:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    return fallback


def notebook_verdicts(nb: Any) -> list[dict[str, Any]]:
    """Every verdict recorded in the notebook's output metadata (``show_verdicts``)."""
    found: list[dict[str, Any]] = []
    for cell in nb.cells if nb is not None else []:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            payload = (out.get("metadata") or {}).get(VERDICTS_KEY)
            if isinstance(payload, dict):
                found.extend(v for v in payload.get("verdicts", []) if isinstance(v, dict))
    return found


def _markdown_outputs(nb: Any) -> list[str]:
    return [str((out.get("data") or {}).get("text/markdown", ""))
            for cell in (nb.cells if nb is not None else []) if cell.cell_type == "code"
            for out in cell.get("outputs", [])]


def provenance_rows(nb: Any) -> dict[str, str]:
    """The rows of the provenance table the chapter printed last (``| what | value |``):
    ``{"wall time": "17.0 s", "data: `source`": "supplied copy", ...}``."""
    rows: dict[str, str] = {}
    for text in _markdown_outputs(nb):
        if not text.startswith("| what | value |"):
            continue
        for line in text.splitlines()[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) == 2:
                rows[cells[0]] = cells[1]
    return rows


def notebook_run(nb: Any) -> dict[str, Any]:
    """Wall time (s), end time and device of an executed notebook. The wall time is the one
    the chapter's provenance table reports (so that every page gives the same number);
    papermill's record of the whole execution when the table has none."""
    meta = (nb.metadata.get("papermill") or {}) if nb is not None else {}
    rows = provenance_rows(nb)
    m = re.fullmatch(r"([0-9.]+) s", rows.get("wall time", ""))
    duration = meta.get("duration")
    wall = float(m.group(1)) if m else (
        float(duration) if isinstance(duration, (int, float)) else None)
    return {"wall_s": wall, "end_utc": str(meta.get("end_time") or "")[:19].replace("T", " "),
            "device": rows.get("device", "")}


def notebook_findings(nb: Any) -> dict[str, Any]:
    """The findings record (:func:`sgdnoise.report.findings_record`) the chapter's findings
    box holds, or an empty dict when it has none."""
    from sgdnoise.report import FINDINGS_METADATA_KEY

    for cell in nb.cells if nb is not None else []:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            record = (out.get("metadata") or {}).get(FINDINGS_METADATA_KEY)
            if isinstance(record, dict) and not record.get("pending"):
                return record
    return {}


def _cell(text: Any) -> str:
    from sgdnoise.report import markdown_cell

    return markdown_cell(text)


def _verdict_objects(nb: Any) -> list[Any]:
    from sgdnoise.report import Verdict

    return [Verdict.from_record(v) for v in notebook_verdicts(nb)]


DATA_WORDS = {"supplied copy": "the offline CIFAR-10 copy (the real images after one JPEG "
                               "round trip)",
              "official": "CIFAR-10 (the official files)",
              "synthetic": "a synthetic CIFAR-shaped stand-in"}


def data_summary(nb: Any) -> str:
    """What data a chapter used, in words, from its provenance table: the source, the
    number of training images and any preprocessing (``'2,000 images of the offline
    CIFAR-10 copy (...), average-pooled to 4x4'``); empty when the table names none."""
    rows = provenance_rows(nb)
    source = rows.get("data: `source`", "").strip("`")
    if not source:
        return ""
    words = next((w for k, w in DATA_WORDS.items() if source.startswith(k)), source)
    n = rows.get("data: `n_train`", "")
    size = f"{int(n):,} training images of " if n.isdigit() else ""
    pre = rows.get("data: `preprocessing`", "")
    pooled = re.search(r"average-pooled to (\d+)x(\d+)", pre)
    return size + words + (f", average-pooled to {pooled.group(1)}×{pooled.group(2)} pixels"
                           if pooled else "")


PROFILE_WORDS = {
    "smoke": "seconds per chapter on a synthetic stand-in for CIFAR-10 with tiny models: its "
             "numbers show that the code runs, not whether a claim holds",
    "default": "minutes per chapter on a two-core laptop: small models on subsets of the "
               "offline CIFAR-10 copy; chapter 8 also re-reads the recorded GPU runs",
    "full": "paper scale on a GPU; chapters 8 and 9 re-read the records of their GPU plans",
}


def _chapter_doc(name: str, title: str) -> str:
    return f"{{doc}}`{title} <{CHAPTER_PREFIX}{name}>`"


def _built_when(notebooks: dict[str, Path]) -> str:
    ends = sorted(notebook_run(_read_notebook(p))["end_utc"] for p in notebooks.values())
    return ends[-1][:10] if ends and ends[-1] else "?"


def repository_url(config: dict[str, Any], repo_dir: Path = REPO_DIR) -> str:
    """The repository's web address: ``repository.url`` of ``_config.yml`` when set, else
    the one GitHub Actions names (``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY``), else the git
    remote ``origin`` when it is an https address; empty when none is known."""
    url = str((config.get("repository") or {}).get("url") or "")
    if not url and os.environ.get("GITHUB_REPOSITORY"):
        url = (os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/") + "/"
               + os.environ["GITHUB_REPOSITORY"])
    if not url:
        proc = subprocess.run(["git", "remote", "get-url", "origin"], cwd=repo_dir,
                              capture_output=True, text=True, check=False)
        remote = proc.stdout.strip()
        url = remote.removesuffix(".git") if remote.startswith("https://") else ""
    return url


def landing_findings(toc: dict[str, Any], notebooks: dict[str, Path], profile: str,
                     repository: str = "") -> str:
    """The landing page's findings box: the profile that built the book, then per chapter
    its scales, data and bottom line (:func:`sgdnoise.report.bottom_line` of its verdicts,
    with the notes its own findings box carries) and a link to its verdicts."""
    from sgdnoise.report import bottom_line, join_words, markdown_cell, scales_of

    lines = [":::{admonition} What this book found", ":class: sgdnoise-findings", "",
             f"Built with the **{profile}** profile on {_built_when(notebooks)}: "
             f"{PROFILE_WORDS.get(profile, profile)}. Each line is computed from the "
             "chapter's verdicts when the book is built; the scale says what stands behind "
             "it, from toy problems and laptop runs to GPU records."
             + (f" The source: [the repository]({repository})." if repository else ""), ""]
    chapters = [n for n in chapter_names(toc)
                if n in notebooks and page_folder(n) == CHAPTER_PREFIX.rstrip("/")]
    for name in chapters:
        nb = _read_notebook(notebooks[name])
        verdicts = _verdict_objects(nb)
        record = notebook_findings(nb)
        data = data_summary(nb)
        scale = join_words(scales_of(verdicts)) or "no verdict"
        lines.append(f"- **{_chapter_doc(name, notebook_title(nb, name))}** "
                     f"({scale}{'; ' + data if data else ''}). "
                     f"{bottom_line(verdicts)} "
                     f"{_evidence_link(nb, name)}.")
        lines += [f"  - {markdown_cell(n)}" for n in record.get("notes", [])]
    return "\n".join(lines + ["", "Every claim with its verdict, reason and evidence: "
                              "{doc}`verdicts`; how the book was built and what each "
                              "profile costs: {doc}`reproduce`.", ":::"])


# The label sgdnoise.report.show_verdicts puts on a chapter's verdict table.
VERDICT_LABEL = "verdicts-{chapter}"


def _evidence_link(nb: Any, name: str) -> str:
    """A link to the chapter's verdict table (its label, when the chapter's output carries
    one), else to the chapter."""
    label = VERDICT_LABEL.format(chapter=name)
    if any(text.startswith(f"({label})=") for text in _markdown_outputs(nb)):
        return f"{{ref}}`Evidence <{label}>`"
    return f"{{doc}}`Evidence <{CHAPTER_PREFIX}{name}>`"
PARTS = (("Claims about SGD", "claim about SGD", ("supported", "contradicted", "mixed")),
         ("Could not be decided at this scale", "claim about SGD", ("inconclusive",)),
         ("Derivation checks", "derivation check", tuple()))
PART_INTROS = {
    "Claims about SGD": "Empirical statements that could have come out either way, decided "
                        "by a rule fixed before the numbers were read. Where the rule's error "
                        "rates were measured by simulation, the verdict gives its "
                        "false-positive rate and its power.",
    "Could not be decided at this scale": "Claims about SGD that the numbers at this scale "
                                          "neither support nor contradict: too few records, "
                                          "too few seeds, or an interval that straddles the "
                                          "threshold.",
    "Derivation checks": "Checks that the code computes what the algebra says (an identity, a "
                         "closed form, a Monte Carlo estimate of a proved formula). They "
                         "test the implementation, not SGD, and are not counted above.",
}


def _scale_line(verdicts: list[Any], run: dict[str, Any]) -> str:
    """``'Scale: *laptop*: smoke profile, synthetic N=200. The chapter ran in 17 s on …'``:
    each scale kind once, with the scale texts behind it (the kind's own word dropped)."""
    labels: dict[str, list[str]] = {}
    for v in verdicts:
        text = re.sub(rf"^{re.escape(v.scale_kind.split()[0])}\w*[,:]?\s+", "", v.scale,
                      flags=re.I)
        if text not in labels.setdefault(v.scale_kind, []):
            labels[v.scale_kind].append(text)
    budget = (f"{run['wall_s']:.0f} s" if run["wall_s"] is not None else "?") + (
        f" on {run['device']}" if run["device"] else "")
    scales = "; ".join(f"*{k}*, {', '.join(_cell(x) for x in v)}" for k, v in labels.items())
    return f"Scale: {scales}. The chapter ran in {budget}."


def _tally(verdicts: list[Any]) -> str:
    from sgdnoise.report import count_noun, join_words

    claims = [v for v in verdicts if v.kind == "claim about SGD"]
    checks = [v for v in verdicts if v.kind == "derivation check"]
    counts = [f"{sum(v.outcome == o for v in claims)} {o}"
              for o in ("supported", "contradicted", "mixed")
              if any(v.outcome == o for v in claims)]
    undecided = sum(v.outcome == "inconclusive" for v in claims)
    text = (f"Of the {count_noun(len(claims), 'claim about SGD', 'claims about SGD')} tested, "
            + (join_words(counts) if counts else "none was decided")
            + (f"; {undecided} could not be decided at the scale they were tested at"
               if undecided else "") + ".")
    if checks:
        held = sum(v.outcome == "supported" for v in checks)
        text += (f" {count_noun(len(checks), 'derivation check', 'derivation checks')} "
                 f"({held} holding) are listed apart and not counted.")
    return text


def verdicts_page(toc: dict[str, Any], notebooks: dict[str, Path], profile: str,
                  executed_root: Path | None = None, book_dir: Path | None = None) -> str:
    """The verdict page, computed from the executed notebooks' output metadata: a tally of
    the claims about SGD, then three parts (decided claims about SGD, claims that could not
    be decided at this scale, derivation checks), each with one compact table per chapter
    (:func:`sgdnoise.report.verdict_rows`: claim, verdict, reason, evidence; the full claim
    and sentence behind a toggle) after one line giving the chapter's scale."""
    from sgdnoise.report import verdict_rows, verdicts_list_table

    order = [n for n in chapter_names(toc)
             if n in notebooks and page_folder(n) == CHAPTER_PREFIX.rstrip("/")]
    chapters = []
    for name in order:
        nb = _read_notebook(notebooks[name])
        chapters.append((name, notebook_title(nb, name), _verdict_objects(nb),
                         notebook_run(nb)))
    everything = [v for _, _, vs, _ in chapters for v in vs]
    lines = [
        "# Verdicts: the essay's claims, checked", "",
        f"Built with the **{profile}** profile ({PROFILE_WORDS.get(profile, profile)}). "
        + _tally(everything), "",
        "Every row was computed by a chapter from its own numbers and recorded in the "
        "executed notebook; nothing here is typed by hand. A row gives the claim in a few "
        "words with the scale it was tested at, the verdict, the reason in a phrase and "
        "the section that shows the evidence; the toggle opens the claim as tested and the "
        "full computed sentence, threshold included.", ""]
    for part, kind, outcomes in PARTS:
        lines += [f"## {part}", "", PART_INTROS[part], ""]
        shown = 0
        for _name, title, verdicts, run in chapters:
            rows = [v for v in verdicts if v.kind == kind and (
                not outcomes or v.outcome in outcomes)]
            if not rows:
                continue
            shown += 1
            lines += [f"### {title}", "", _scale_line(rows, run), "",
                      verdicts_list_table(verdict_rows(rows)), ""]
        if not shown:
            lines += ["None in this build.", ""]
    silent = [_chapter_doc(n, t) for n, t, vs, _ in chapters if not vs]
    if silent:
        lines += ["Chapters that record no computed verdict: " + ", ".join(silent) + ".", ""]
    return "\n".join(lines)


# GPU and mid-scale plans whose records the chapters re-read: plan file (under params/)
# -> records folder (under the repository).
PLANS = {"ch08_resnet_sweep/plan_full.yaml": "data/results/ch08",
         "ch08_resnet_sweep/plan_midscale.yaml": "data/results/ch08_midscale",
         "ch09_anisotropic_noise/plan_full.yaml": "data/results/ch09"}


def plan_costs(book_dir: Path, repo_dir: Path) -> list[dict[str, Any]]:
    """Per plan of :data:`PLANS` that exists: its runs, how many are recorded, the device
    time the recorded runs took (their records' ``wall_time_s``) and, for a GPU plan, the
    estimated device time of the runs left (:func:`sgdnoise.sweep.block_estimates`: the
    throughput measured on one H200 by the chapter 8 pilot; injected noise not included)."""
    from sgdnoise import sweep

    rows = []
    for rel, records in PLANS.items():
        path = book_dir / "params" / rel
        if not path.is_file():
            continue
        plan = sweep.load_plan(path, check_device=False)
        out = repo_dir / records
        done = [out / f"{r.run_id}.json" for r in plan.runs
                if (out / f"{r.run_id}.json").is_file()]
        spent = sum(float(json.loads(f.read_text()).get("wall_time_s") or 0) for f in done)
        gpu = str(plan.runs[0].config.device).startswith("cuda") if plan.runs else False
        left = sweep.block_estimates(plan, out)[-1]["cumulative"] if gpu and plan.blocks \
            else None
        rows.append({"plan": rel, "records": records, "runs": len(plan.runs),
                     "recorded": len(done), "spent_s": spent, "left_s": left, "gpu": gpu})
    return rows


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:,.0f} min"


def _times_table(names: list[str], runs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    table = ["| chapter | " + " | ".join(PROFILES) + " |",
             "| --- |" + " ---: |" * len(PROFILES)]
    totals = dict.fromkeys(PROFILES, 0.0)
    for name in names:
        row = []
        for prof in PROFILES:
            wall = runs.get(prof, {}).get(name, {}).get("wall_s")
            row.append(f"{wall:.0f} s" if wall is not None else "–")
            totals[prof] += wall or 0.0
        table.append(f"| {{doc}}`{page_folder(name)}/{name}` | " + " | ".join(row) + " |")
    table.append("| **all chapters** | " + " | ".join(
        f"**{totals[p] / 60:.1f} min**" if p in runs and len(runs[p]) == len(names)
        else "incomplete" for p in PROFILES) + " |")
    return table


def _gpu_minutes(seconds: float) -> str:
    """H200 device time in minutes, with the range an H100 takes (sweep.H100_SLOWDOWN)."""
    from sgdnoise.sweep import H100_SLOWDOWN

    low, high = (seconds * f / 60 for f in H100_SLOWDOWN)
    return f"{seconds / 60:,.0f} H200-minutes (on an H100 {low:,.0f}–{high:,.0f})"


def _plans_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["No plan file was found."]
    out = ["| plan | where | runs recorded | device time so far | estimated for the rest |",
           "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        chapter, _, name = r["plan"].partition("/")
        left = r["left_s"]
        out.append(f"| chapter {int(chapter[2:4])}: `{name}` | "
                   f"{'one GPU' if r['gpu'] else 'a CPU, one thread'} | "
                   f"{r['recorded']} of {r['runs']} | {_minutes(r['spent_s'])} | "
                   + (_gpu_minutes(left).replace(" (on an H100 ", "; H100: ").rstrip(")")
                      if left is not None else "see the plan's header") + " |")
    return out


def profile_costs(names: list[str], runs: dict[str, dict[str, dict[str, Any]]],
                  plans: list[dict[str, Any]]) -> list[str]:
    """One line per profile: its measured time over the chapters executed with it in this
    build folder (all of them, some, or none), and for ``full`` the GPU plans whose records
    chapters 8 and 9 read: the GPU time recorded and the estimate for the runs left."""
    lines = []
    for prof in PROFILES:
        measured = runs.get(prof, {})
        total = sum(r["wall_s"] or 0.0 for r in measured.values()) / 60
        if len(measured) == len(names):
            text = (f"{total:,.1f} minutes of chapter time for all {len(names)} chapters, "
                    "measured")
        elif measured:
            text = (f"{total:,.1f} minutes of chapter time for the {len(measured)} of "
                    f"{len(names)} chapters executed with it here, measured")
        else:
            text = "not executed in this build folder (no measurement here)"
        if prof == "full":
            gpu = [p for p in plans if p["gpu"]]
            spent = sum(p["spent_s"] for p in gpu)
            left = sum(p["left_s"] or 0.0 for p in gpu)
            text += (f"; chapters 8 and 9 read the records of {len(gpu)} GPU plans: "
                     f"{spent / 60:,.0f} GPU-minutes recorded so far, about "
                     f"{_gpu_minutes(left)} estimated for the runs left")
        lines.append(f"- `{prof}`: {text}.")
    return lines


REPRODUCE_TEXT = """\
## The commands

From the repository root, on a machine with Python 3.11 (they create `.venv` themselves):

```bash
make book                 # every chapter (profile "default"), then the HTML
make book PROFILE=smoke   # the same in seconds, on synthetic data
make chapter NAME=ch04_stability   # one chapter only, no HTML
make test                 # unit tests, smoke chapters, book build, browser
```

Every chapter is a plain Python file, `book/chapters/<name>.py` in jupytext's *percent*
format, with its parameters in `book/params/<name>/{smoke,default,full}.yaml`. The build
executes each chapter with papermill into `book/_build/executed/<profile>/` and assembles
the executed notebooks with Jupyter Book into `book/_build/html/`. A chapter whose source,
parameters and package code did not change since its last successful run is not executed
again. `make book` executes two chapters at a time, each kernel with its share of the
cores (`make book JOBS=1` runs them one by one): the build then takes about half the
chapters' summed time below, plus the HTML. A typo in a chapter name or profile, or a bad
parameter value, is refused before
anything runs; a chapter that fails stops the build with the error of the cell that failed,
and the previous HTML stays readable, with a banner on that chapter's page saying which run
failed and when.

## The profiles

- `smoke`: every chapter in seconds on a CPU, on a seeded synthetic stand-in for CIFAR-10
  and tiny models; this is what the tests execute. Its numbers show that the code runs,
  not that the claims hold.
- `default`: minutes per chapter on a two-core laptop: small models on subsets of
  CIFAR-10 (some chapters average-pool the images to 4×4 or 16×16 pixels). The figures
  and the findings boxes say which data and scale they show.
- `full`: the paper-scale configuration for a GPU (all 50,000 images, ResNet34, every batch
  size of the sweep); chapters 8 and 9 then re-read the records of their GPU plans instead
  of training. Run it with `make book PROFILE=full`.
"""

DATA_TEXT = """\
## CIFAR-10

The `default` and `full` profiles read CIFAR-10 in torchvision's `cifar-10-batches-py`
layout. `make data` downloads the official archive
(`https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz`), checks its md5
(`c58f30108f718f92721af3b95e74349a`) and the md5 of every batch file, and unpacks it into
the repository's `data/cifar-10-batches-py/`. Without internet access, unpack the archive
there by hand (`tar -xzf cifar-10-python.tar.gz -C data`), or anywhere with the environment
variable `SGDNOISE_DATA` pointing at the folder that holds `cifar-10-batches-py/`.

The copy this book was built from is the project's offline copy: the real images after one
JPEG round trip (quality 75), recorded as a *supplied copy* in every provenance table with
the md5 of its pixels. Results on the official files may differ slightly.

## The GPU runs

Chapter 8's paper-scale sweep, and chapter 9's runs with injected noise, run outside the
book, on a GPU, from a plan of runs in priority order; each run appends one record (with
its provenance) to the plan's records folder, so runs accumulate across machines and
sessions, and the chapters re-read every record there:

```bash
# the runs in priority order, with their estimated time per block
sgdnoise-sweep book/params/ch08_resnet_sweep/plan_full.yaml \
    --out data/results/ch08 --dry-run
# the highest-priority runs that fit in 4 hours (the budget is in seconds)
sgdnoise-sweep book/params/ch08_resnet_sweep/plan_full.yaml \
    --out data/results/ch08 --budget 14400
# one short GPU lease: preflight, sweep, one tar of the records
bash book/params/ch08_resnet_sweep/gpu_run.sh
```

## The executed notebooks

Every chapter page has a download button (top right) that gives the executed notebook
(`.ipynb`, with every output) the page was built from, or its Markdown source.
`make publish` writes the whole site, the executed notebooks and their provenance records
into one archive.
"""


def reproduce_page(toc: dict[str, Any], notebooks: dict[str, Path], profile: str,
                   executed_root: Path | None = None, book_dir: Path | None = None) -> str:
    """How to reproduce the book: the commands and how the build works, the profiles, the
    wall time of every chapter executed in this build folder (the time each chapter's
    provenance table reports), the cost of the GPU and mid-scale plans (runs recorded, their
    device time, an estimate for the rest), the data and the downloads."""
    names = [n for n in chapter_names(toc) if n in notebooks]
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for prof in PROFILES:
        for name in names:
            path = (executed_root / prof / f"{name}.ipynb") if executed_root else (
                notebooks[name] if prof == profile else None)
            if path is not None and path.is_file():
                runs.setdefault(prof, {})[name] = notebook_run(_read_notebook(path))
    devices = sorted({r["device"] for prof in runs.values() for r in prof.values()
                      if r["device"]})
    plans = plan_costs(book_dir or BOOK_DIR, (book_dir or BOOK_DIR).parent)
    return "\n".join([
        "# Reproducing this book", "",
        f"This copy was built with the **{profile}** profile. Everything below, from the "
        "measured times to the cost of the GPU plans, is read from the executed notebooks "
        "and the records when the book is built.", "",
        REPRODUCE_TEXT,
        "## What each profile costs", "",
        *profile_costs(names, runs, plans), "",
        "The wall time of each chapter, as its provenance table reports it (from its first "
        "computation to its last; starting the kernel and importing the libraries add a few "
        "seconds), for every profile executed in this build folder; – marks a chapter not "
        "executed with that profile here.", "",
        *_times_table(names, runs), "",
        "Measured on: " + ("; ".join(devices) if devices else "(no device recorded)") + ".",
        "",
        "The `full` profile trains nothing in chapters 8 and 9: their cost is the cost of "
        "the plans whose records they read. Per plan: its runs, the runs recorded so far, "
        "the device time those took, and for a GPU plan an estimate for the runs left "
        "(from the throughput the chapter 8 pilot measured on one H200; injected noise is "
        "not included, so chapter 9's estimate is a lower bound).", "",
        *_plans_table(plans), "",
        DATA_TEXT,
    ])


def api_modules(package: str = "sgdnoise") -> list[str]:
    """Every public module of the package (no name part starting with ``_``), the package
    first, then in alphabetical order; the ``chapters`` subpackage included."""
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [package] + sorted(set(names) - {package})


def api_index_page(modules: list[str]) -> str:
    """The API reference's front page: one row per module, with its docstring's first line."""
    listing = "\n".join(f"   {m}" for m in modules)
    return (
        "# API reference\n\n"
        "The public modules of the `sgdnoise` package, documented from their docstrings when "
        "the book is built (the list is derived from the package itself, so a new module "
        "appears here without editing the book). The chapter modules under "
        "`sgdnoise.chapters` hold each chapter's parameters, studies and verdict functions.\n\n"
        "```{eval-rst}\n.. autosummary::\n\n" + listing + "\n```\n")


def api_module_page(module: str) -> str:
    # the package root re-exports the stable API (sgdnoise.__all__): listed there without
    # index entries, so each name's link target stays on its own module's page
    no_index = "   :no-index:\n" if module == "sgdnoise" else ""
    return (f"# `{module}`\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n"
            f"   :show-inheritance:\n{no_index}```\n")


def expand_api_toc(node: Any, modules: list[str]) -> Any:
    """A copy of the toc whose ``api`` entry lists one page per module as its sections."""
    if isinstance(node, list):
        return [expand_api_toc(child, modules) for child in node]
    if isinstance(node, dict):
        out = {k: expand_api_toc(v, modules) for k, v in node.items()}
        if node.get("file") == API_PAGE:
            out["sections"] = [{"file": f"api/{m}"} for m in modules]
        return out
    return node


API_PAGE = "api"
# A line of a page (the landing page) that the build replaces by the findings box.
FINDINGS_MARKER = "<!-- sgdnoise: findings -->"
GENERATED_PAGES = {"verdicts": verdicts_page, "reproduce": reproduce_page}


def stage_book(book_dir: Path, stage: Path, toc: dict[str, Any],
               notebooks: dict[str, Path], profile: str = "default",
               executed_root: Path | None = None) -> None:
    """Lay out a Jupyter Book source tree: config, toc, pages, bib files, executed notebooks,
    and the generated pages (:data:`GENERATED_PAGES`) written from those notebooks."""
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "chapters").mkdir(parents=True)
    (stage / "guide").mkdir()
    for fname in STAGE_FILES:
        if (book_dir / fname).is_file():
            shutil.copy2(book_dir / fname, stage / fname)
    for dname in STAGE_DIRS:
        if (book_dir / dname).is_dir():
            shutil.copytree(book_dir / dname, stage / dname)
    config = yaml.safe_load((book_dir / "_config.yml").read_text())
    config["bibtex_bibfiles"] = bib_files(book_dir)
    repository = repository_url(config, book_dir.parent)
    if repository:  # a link in the page header (nothing is fetched from it)
        config.setdefault("repository", {})["url"] = repository
        config.setdefault("html", {})["use_repository_button"] = True
        theme = config.setdefault("sphinx", {}).setdefault("config", {}).setdefault(
            "html_theme_options", {})
        theme["use_repository_button"] = True
    modules: list[str] = []
    if API_PAGE in _toc_files(toc) and not (book_dir / f"{API_PAGE}.md").exists():
        modules = api_modules()
        toc = expand_api_toc(toc, modules)
        (stage / "api").mkdir()
        (stage / f"{API_PAGE}.md").write_text(api_index_page(modules))
        for m in modules:
            (stage / "api" / f"{m}.md").write_text(api_module_page(m))
    (stage / "_config.yml").write_text(
        "# staged by book/build.py from book/_config.yml\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    (stage / "_toc.yml").write_text(
        "# staged by book/build.py from book/_toc.yml\n"
        + yaml.safe_dump(toc, sort_keys=False))
    for entry in _toc_files(toc):
        if entry.startswith(EXECUTED_PREFIXES) or (modules and (
                entry == API_PAGE or entry.startswith(f"{API_PAGE}/"))):
            continue
        for suffix in ("", ".md", ".ipynb"):
            page = book_dir / f"{entry}{suffix}"
            if page.is_file():
                (stage / page.relative_to(book_dir)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page, stage / page.relative_to(book_dir))
                break
        else:
            if entry in GENERATED_PAGES:
                text = GENERATED_PAGES[entry](toc, notebooks, profile, executed_root,
                                              book_dir=book_dir)
                (stage / f"{entry}.md").write_text(text)
            else:
                raise BuildError(f"toc page {entry!r} not found in {book_dir}")
    for page in stage.glob("*.md"):
        text = page.read_text()
        if FINDINGS_MARKER in text:
            page.write_text(text.replace(FINDINGS_MARKER, landing_findings(
                toc, notebooks, profile, repository)))
    for name, path in notebooks.items():
        clean_notebook(path, stage / page_folder(name) / f"{name}.ipynb")


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


BANNER_START = "<!-- sgdnoise-failure-banner -->"
BANNER_END = "<!-- /sgdnoise-failure-banner -->"


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def mark_failed(build_dir: Path, chapter: str | None, profile: str, reason: str) -> list[Path]:
    """Leave the last good HTML in place; put a banner on the failed chapter's page (the
    index when the chapter has no page yet) saying that re-executing it with ``profile``
    failed and when. Records the failure in ``html/_failures.json``. Returns the pages
    marked (none when there is no HTML, or the failure is not a chapter's)."""
    html = build_dir / "html"
    if chapter is None or not (html / "index.html").is_file():
        return []
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    info: dict[str, Any] = {}
    try:
        info = json.loads((html / "_build_info.json").read_text())
    except (OSError, ValueError):
        pass
    built_utc = str(info.get("built_utc", "?")).replace("T", " ").removesuffix("+00:00")
    built = f"profile {info.get('profile', '?')}, built {built_utc} UTC"
    first_line = reason.strip().splitlines()[0] if reason.strip() else ""
    error = next((line.strip() for line in reason.splitlines()
                  if re.match(r"\s*(error in cell|\w+(Error|Exception)\b)", line)), first_line)
    page = html / page_folder(chapter) / f"{chapter}.html"
    pages = [page] if page.is_file() else [html / "intro.html", html / "index.html"]
    banner = (f'{BANNER_START}<div class="sgdnoise-failure-banner" role="alert">'
              f"<strong>This page is out of date.</strong> Re-executing chapter "
              f"<code>{_html_escape(chapter)}</code> with profile "
              f"<code>{_html_escape(profile)}</code> failed at {when} UTC "
              f"({_html_escape(error)}). What you read is the last good build "
              f"({_html_escape(built)}).</div>{BANNER_END}")
    marked = []
    for path in pages:
        if not path.is_file():
            continue
        text = path.read_text()
        text = re.sub(re.escape(BANNER_START) + ".*?" + re.escape(BANNER_END), "", text,
                      flags=re.S)
        m = re.search(r"<article[^>]*>", text) or re.search(r"<body[^>]*>", text)
        if m is None:
            continue
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(text[:m.end()] + banner + text[m.end():])
        os.replace(tmp, path)
        marked.append(path)
    failures_path = html / FAILURES_FILE
    try:
        failures = json.loads(failures_path.read_text())
    except (OSError, ValueError):
        failures = {}
    failures[chapter] = {"profile": profile, "failed_utc": when, "error": error,
                         "pages": [p.relative_to(html).as_posix() for p in marked]}
    failures_path.write_text(json.dumps(failures, indent=2) + "\n")
    if marked:
        print(f"\n[book] the last good HTML stays in {html}; a banner on "
              + ", ".join(p.relative_to(html).as_posix() for p in marked)
              + " says it is out of date", file=sys.stderr, flush=True)
    return marked


def html_profile(build_dir: Path) -> str | None:
    info = build_dir / "html" / "_build_info.json"
    try:
        return json.loads(info.read_text()).get("profile")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    """argparse type of ``--jobs``: a whole number >= 1 (else argparse's exit 2 names it)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: use 1 or more")
    return value


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
    ap.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                    help="execute N chapters at once, each kernel with cores/N threads "
                         "(default 1: one at a time, the kernel's own thread count)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="skip (with a warning) chapters whose source does not exist yet")
    ap.add_argument("--publish", action="store_true",
                    help="after a successful build, write <build>/sgdnoise-book-<profile>.tar.gz: "
                         "the HTML, the executed notebooks and their provenance records")
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


def preflight(args: argparse.Namespace, book_dir: Path, profile: str,
              ) -> tuple[dict[str, Any], list[ChapterResult], list[str], dict[str, Any]]:
    """Every check that needs no kernel: the toc, the selected chapters, their sources and
    parameter files. Raises :class:`UsageError` before anything is written."""
    try:
        toc = read_toc(book_dir)
        names = chapter_names(toc)
        if args.only:
            unknown = sorted(set(args.only) - set(names))
            if unknown:
                raise UsageError(f"--only {unknown}: no such chapter in "
                                 f"{book_dir / '_toc.yml'}; allowed: {names}")
        selected = [n for n in names if not args.only or n in args.only]
        results = [ChapterResult(n) for n in selected]
        missing = [n for n in selected if not (book_dir / page_folder(n) / f"{n}.py").is_file()]
        if missing and not args.allow_missing:
            raise UsageError("chapter source(s) missing: "
                             + ", ".join(f"{page_folder(n)}/{n}.py" for n in missing)
                             + " (pass --allow-missing to build without them)")
        checked: dict[str, Any] = {}
        problems = []
        for r in results:  # check every chapter's inputs before executing anything
            if r.name in missing:
                r.status = "missing"
                continue
            try:
                checked[r.name] = check_chapter(book_dir, r.name, profile)
            except BuildError as exc:
                problems.append(str(exc))
        if problems:
            raise UsageError("parameter check failed, nothing was executed:\n  "
                             + "\n  ".join(problems))
    except BuildError as exc:
        raise UsageError(str(exc)) from None
    return toc, results, missing, checked


def check_arguments(args: argparse.Namespace) -> None:
    """Argument combinations refused before anything runs (:class:`UsageError`)."""
    if args.publish and (args.only or args.no_html):
        raise UsageError("--publish needs the whole book's HTML: it cannot be combined with "
                         "--only or --no-html (the archive would hold a partial book)")
    for flag, folder in (("--book-dir", args.book_dir), ("--package-dir", args.package_dir)):
        if not folder.is_dir():
            raise UsageError(f"{flag} {folder}: no such folder")


def check_build_dir(build_dir: Path) -> None:
    """The build folder exists (created if needed) and is writable: a temporary file is
    created and deleted in it (:func:`sgdnoise.validate.check_output_dir`)."""
    from sgdnoise.validate import check_output_dir

    try:
        check_output_dir("--build-dir", build_dir)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Hold ``<build>/.build.lock`` (an exclusive ``flock``, released when the process ends,
    even by SIGKILL) for one build; a second build into the same folder is refused with a
    :class:`UsageError` instead of removing the first one's temporary files."""
    import fcntl

    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / ".build.lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another build is running in {build_dir} (it holds "
                             f"{build_dir / '.build.lock'}); wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def restore_html(build_dir: Path) -> str | None:
    """Finish a swap of the HTML tree that a kill interrupted: with ``.html-old`` but no
    ``html`` the old tree is put back (the reader keeps a book); with both, the swap had
    completed and ``.html-old`` is removed. Returns what was done, or None."""
    html, old = build_dir / "html", build_dir / ".html-old"
    if not old.exists():
        return None
    if html.exists():
        shutil.rmtree(old, ignore_errors=True)
        return f"removed {old} (left by a completed swap)"
    os.replace(old, html)
    return f"restored {html} from {old} (an interrupted swap)"


def clean_leftovers(build_dir: Path, chapters: list[str]) -> list[str]:
    """Remove what interrupted builds left: ``executed/*/*.running.ipynb`` and
    ``executed/*/.book-*`` (notebooks being executed), ``.html-build-*`` (HTML being
    built), ``.sgdnoise-book-*`` (archives being written), the ``book-<chapter>-*`` folders
    older versions of this script left in the system's temporary folder (only those that
    hold nothing but that chapter's notebook), and a half-swapped HTML tree
    (:func:`restore_html`). Runs under :func:`build_lock`. Returns what was done."""
    found = [*build_dir.glob("executed/*/*.running.ipynb"),
             *build_dir.glob("executed/*/.book-*"), *build_dir.glob(".html-build-*"),
             *build_dir.glob(".sgdnoise-book-*")]
    tmp = Path(tempfile.gettempdir())
    for name in chapters:
        found += [d for d in tmp.glob(f"book-{name}-*") if d.is_dir() and not d.is_symlink()
                  and {p.name for p in d.iterdir()} <= {f"{name}.ipynb"}]
    for path in found:
        _remove(path)
    done = [f"removed {p}" for p in found]
    restored = restore_html(build_dir)
    return done + ([restored] if restored else [])


def _refused(exc: Exception) -> int:
    print(f"\nREFUSED (nothing was executed): {exc}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    """Run the build; returns :data:`EXIT_REFUSED` (2) for input refused before anything
    ran, :data:`EXIT_FAILED` (1) for a failure while building, else 0."""
    args = parse_args(argv)  # an unknown profile or option: argparse exits 2 here
    build_dir: Path = args.build_dir.resolve()
    try:
        check_arguments(args)
        toc, results, missing, checked = preflight(args, args.book_dir.resolve(),
                                                   args.profile)
        check_build_dir(build_dir)
    except UsageError as exc:
        return _refused(exc)
    try:
        with build_lock(build_dir):
            for line in clean_leftovers(build_dir, chapter_names(toc)):
                print(f"[book] {line}", file=sys.stderr, flush=True)
            for name in missing:
                print(f"\n{'#' * 78}\n## WARNING: {page_folder(name)}/{name}.py does not exist; "
                      f"skipping it and leaving it out of the book (--allow-missing)\n{'#' * 78}",
                      file=sys.stderr, flush=True)
            return execute_and_build(args, toc, results, missing, checked)
    except UsageError as exc:
        return _refused(exc)


def execute_and_build(args: argparse.Namespace, toc: dict[str, Any],
                      results: list[ChapterResult],
                      missing: list[str], checked: dict[str, Any]) -> int:
    """Execute the chapters that need it, build the HTML and publish (after
    :func:`preflight`); returns the exit code."""
    book_dir: Path = args.book_dir.resolve()
    build_dir: Path = args.build_dir.resolve()
    profile: str = args.profile
    out_dir = build_dir / "executed" / profile
    html_row: tuple[str, float] | None = None
    failed_chapter: str | None = None
    try:
        pkg_hash = package_hash(args.package_dir.resolve())
        pending: list[tuple[ChapterResult, dict[str, str]]] = []
        for r in results:
            if r.name in missing:
                continue
            inputs = chapter_inputs(book_dir, r.name, profile, pkg_hash)
            r.hash, r.notebook = inputs["hash"], str(out_dir / f"{r.name}.ipynb")
            if not args.force and is_cached(out_dir, r.name, inputs):
                r.status = "cached"
                print(f"[book] {r.name}: cached ({profile})", flush=True)
                continue
            pending.append((r, inputs))
        job = ChapterJob(book_dir, profile, out_dir, checked, progress_bar=args.jobs == 1)
        with kernel_environment(args.jobs) as threads:
            if args.jobs > 1 and len(pending) > 1:
                print(f"[book] {len(pending)} chapters, {args.jobs} at a time, "
                      f"{threads} thread{'s' if threads != 1 else ''} each", flush=True)
            try:
                execute_all(job, schedule(pending, out_dir), args.jobs)
            finally:
                failed_chapter = next((r.name for r in results if r.status == "FAILED"), None)

        if not args.no_html:
            html_row = ("building", 0.0)
            start = time.perf_counter()
            notebooks = {r.name: Path(r.notebook) for r in results if r.status != "missing"}
            html_row = build_html(args, book_dir, build_dir, profile, toc, results,
                                  notebooks, missing)
    except BuildError as exc:
        if html_row is not None and html_row[0] == "building":
            html_row = ("FAILED", time.perf_counter() - start)
        print_summary(results, html_row)
        print(f"\nBUILD FAILED: {exc}", file=sys.stderr, flush=True)
        mark_failed(build_dir, failed_chapter, profile, str(exc))
        if (build_dir / "html" / "index.html").is_file():
            print(f"[book] the last good HTML is still in {build_dir / 'html'}",
                  file=sys.stderr, flush=True)
        return EXIT_FAILED
    print_summary(results, html_row)
    if args.publish:
        return publish_step(build_dir, profile, [r.name for r in results
                                                 if r.status != "missing"])
    return 0


def publish_step(build_dir: Path, profile: str, chapters: list[str]) -> int:
    """:func:`publish` with its outcome printed; returns the exit code."""
    try:
        archive = publish(build_dir, profile, chapters)
    except (BuildError, OSError, ValueError) as exc:
        print(f"\nPUBLISH FAILED (any older archive was kept): {exc}", file=sys.stderr,
              flush=True)
        return EXIT_FAILED
    print(f"[book] published: {archive}", flush=True)
    return 0


def publish(build_dir: Path, profile: str, chapters: list[str]) -> Path:
    """One archive of the site: ``html/`` (pages, figures, the notebooks behind the download
    buttons), ``executed/`` (each executed notebook with its sidecar record) and
    ``PROVENANCE.json`` (the build record and every chapter's inputs and parameters).
    Written to a temporary file and renamed, so an older archive survives a failure."""
    import tarfile

    html = build_dir / "html"
    info = json.loads((html / "_build_info.json").read_text())
    if info.get("profile") != profile:
        raise BuildError(f"{html} holds profile {info.get('profile')!r}, not {profile!r}")
    executed = build_dir / "executed" / profile
    records = {n: json.loads((executed / f"{n}.json").read_text()) for n in chapters}
    provenance = {"build": info, "chapters": records}
    name = f"sgdnoise-book-{profile}"
    archive = build_dir / f"{name}.tar.gz"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".tar.gz", dir=build_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the archive from its readers
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(html, arcname=f"{name}/html")
            for n in chapters:
                for suffix in (".ipynb", ".json"):
                    tar.add(executed / f"{n}{suffix}", arcname=f"{name}/executed/{n}{suffix}")
            blob = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
            member = tarfile.TarInfo(f"{name}/PROVENANCE.json")
            member.size, member.mtime = len(blob), int(time.time())
            tar.addfile(member, io.BytesIO(blob))
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def build_html(args: argparse.Namespace, book_dir: Path, build_dir: Path, profile: str,
               toc: dict[str, Any], results: list[ChapterResult],
               notebooks: dict[str, Path], missing: list[str]) -> tuple[str, float]:
    """Stage the book and build it into a temporary folder that replaces ``html`` only on
    success. Returns the summary row."""
    start = time.perf_counter()
    staged_toc = filter_toc(toc, set(notebooks))
    stage = build_dir / "stage" / profile
    stage_book(book_dir, stage, staged_toc, notebooks, profile, build_dir / "executed")
    options = {"W": bool(args.warnings_as_errors)}
    digest = _sha((tree_hash(stage) + json.dumps(options)).encode())
    html = build_dir / "html"
    info_path = html / "_build_info.json"
    current = None
    if info_path.is_file() and not (html / FAILURES_FILE).exists():
        try:
            current = json.loads(info_path.read_text()).get("stage_hash")
        except ValueError:
            current = None
    if current == digest and not args.force and (html / "index.html").is_file():
        print(f"[book] html: up to date ({html})", flush=True)
        return ("up to date", time.perf_counter() - start)
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(tempfile.mkdtemp(prefix=".html-build-", dir=build_dir))
    try:
        code = run_jupyter_book(stage, tmp_out, args.warnings_as_errors)
        new_html = tmp_out / "_build" / "html"
        expected = [new_html / "index.html"] + [
            new_html / page_folder(n) / f"{n}.html" for n in notebooks]
        absent = [str(p) for p in expected if not p.is_file()]
        if code != 0 or absent:
            raise BuildError(
                f"jupyter-book build failed (exit code {code}; see its output above)"
                + (f"; pages not produced: {absent}" if absent else "")
                + "; the previous HTML was left as it was")
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
        (new_html / "_build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        old = build_dir / ".html-old"
        if old.exists():
            shutil.rmtree(old)
        if html.exists():
            os.replace(html, old)
        os.replace(new_html, html)
        shutil.rmtree(old, ignore_errors=True)
        stale = build_dir / "html.stale"  # left by older versions of this script
        if stale.exists():
            shutil.rmtree(stale)
    finally:
        shutil.rmtree(tmp_out, ignore_errors=True)
    print(f"[book] html: {html / 'index.html'}", flush=True)
    return ("built", time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
