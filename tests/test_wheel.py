"""The built wheel, installed into a fresh virtual environment, imports and runs the guide's
first example from outside the source tree (issue 20).

The wheel is built from a copy of the packaging files (pyproject.toml, README.md, src/) so
the checkout gets no build/ or egg-info folders. The fresh venv is made with
``--system-site-packages`` and sees the running environment's site-packages through a
``.pth`` path line (torch and the other dependencies are not downloaded; that folder's own
``.pth`` files, such as an editable install of sgdnoise, are not processed), so the only
sgdnoise it can import is the installed wheel's. About 30 s."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import BOOK
from test_guide import first_example

REPO = BOOK.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (f"{cmd[:4]} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
          "-w", str(dist), "--quiet"], cwd=source)
    (wheel,) = dist.glob("sgdnoise-*.whl")
    return wheel


def fresh_venv(tmp: Path) -> Path:
    """A venv without pip whose interpreter also sees this environment's site-packages."""
    env_dir = tmp / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=tmp).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "outer-environment.pth").write_text("\n".join(outer) + "\n")
    return python


@pytest.mark.slow
def test_installed_wheel_runs_the_guides_first_example(tmp_path):
    wheel = build_wheel(tmp_path)
    python = fresh_venv(tmp_path)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)], cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = outside / "first_example.py"
    script.write_text("import sgdnoise\nprint('sgdnoise from', sgdnoise.__file__)\n"
                      "print('version', sgdnoise.__version__)\n" + first_example())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = _run([str(python), str(script)], cwd=outside, env=env).stdout
    location = next(line for line in out.splitlines() if line.startswith("sgdnoise from"))
    assert str(tmp_path / "venv") in location, location  # the wheel's copy, not src/
    assert str(REPO) not in location, location
    assert "version 0.0.0+unknown" not in out, out  # installed metadata is found
    assert "G: (4, 11181642)" in out and "B_simple = " in out, out
