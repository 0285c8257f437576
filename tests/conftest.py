"""Shared fixtures for the book tests: the book built once per session with the smoke profile.

Set ``SGDNOISE_BOOK_TEST_BUILD=<dir>`` to keep that build between test runs (the chapter cache
then makes a repeated ``make test`` fast); by default it goes to a fresh temporary folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
BUILD_SCRIPT = BOOK / "build.py"


def load_build_module() -> ModuleType:
    """book/build.py imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("book_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("book_build", module)
    spec.loader.exec_module(module)
    return module


def run_build(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run book/build.py with ``args``; output captured as text."""
    return subprocess.run([sys.executable, str(BUILD_SCRIPT), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def output_of(proc: subprocess.CompletedProcess[str], tail: int = 6000) -> str:
    return f"--- stdout ---\n{proc.stdout[-tail:]}\n--- stderr ---\n{proc.stderr[-tail:]}"


@dataclass
class BookBuild:
    """A finished smoke-profile build of the real book."""

    build_dir: Path
    html: Path
    executed: Path
    chapters: list[str]
    args: tuple[str, ...]
    proc: subprocess.CompletedProcess[str]
    guide: list[str] = field(default_factory=list)  # the guide's pages (book/guide/)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (small dense products and tiny models run
    fastest single-threaded on a shared CPU); the previous count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    build = load_build_module()
    pages = build.chapter_names(build.read_toc(BOOK))
    missing = [n for n in pages if not (BOOK / build.page_folder(n) / f"{n}.py").is_file()]
    if missing:
        pytest.skip("the book's toc lists chapters whose source is not written yet: "
                    + ", ".join(f"book/{build.page_folder(n)}/{n}.py" for n in missing))
    chapters = [n for n in pages if build.page_folder(n) == "chapters"]
    guide = [n for n in pages if build.page_folder(n) != "chapters"]
    keep = os.environ.get("SGDNOISE_BOOK_TEST_BUILD")
    build_dir = Path(keep).resolve() if keep else tmp_path_factory.mktemp("smoke-book")
    # two chapters at a time, as make book runs them, so CI exercises that path
    args = ("--profile", "smoke", "--build-dir", str(build_dir), "--warnings-as-errors",
            "--jobs", "2")
    proc = run_build(*args)
    if proc.returncode != 0:
        pytest.fail("book/build.py failed on the smoke profile:\n" + output_of(proc),
                    pytrace=False)
    return BookBuild(build_dir=build_dir, html=build_dir / "html",
                     executed=build_dir / "executed" / "smoke", chapters=chapters, args=args,
                     proc=proc, guide=guide)


# ------------------------------------------------------------------ parameters (the chapters)


def profile_params(params_cls, chapter: str, *, yaml_profile: str = "smoke", **changes):
    """``params_cls`` (a chapter's ``Params``) built from ``book/params/<chapter>/
    <yaml_profile>.yaml`` with ``changes`` (field values, ``profile`` included) applied: the
    checks run, so a bad change raises ValueError."""
    import yaml

    values = yaml.safe_load((BOOK / "params" / chapter / f"{yaml_profile}.yaml").read_text())
    values.update(changes)
    return params_cls.from_mapping(values)


# ------------------------------------------------------------------ verdicts (the chapters)


def assert_typeset(*verdicts) -> None:
    """Each verdict's claim and sentence write their math in ``$...$`` (issue 12): no
    subscript as plain text (``g_B``, ``λ_max``) and every ``$`` closed."""
    from sgdnoise.report import plain_subscripts

    for v in verdicts:
        for text in (v.claim, v.sentence):
            assert not plain_subscripts(text), f"{plain_subscripts(text)} in {text!r}"
            assert text.count("$") % 2 == 0, f"unbalanced $ in {text!r}"


# ------------------------------------------------------------------ tiny problems (noise, ch09)


# The references live in references.py (imported when called: this file stays free of torch
# for the book and browser tests); these names stay importable from here.


def tiny_problem(seed: int = 0, n: int = 12, hidden: int = 3, d_in: int = 3, classes: int = 3):
    """:func:`references.tiny_problem`."""
    from references import tiny_problem as build

    return build(seed, n, hidden, d_in, classes)


def nparams(model) -> int:
    return sum(p.numel() for p in model.parameters())


def loop_grads(model, x, y):
    """Per-example cross-entropy gradients by a plain loop of autograd calls: (n, P)."""
    import torch.nn.functional as F
    from references import per_example_grads_loop

    return per_example_grads_loop(model, F.cross_entropy, x, y)
