"""CIFAR-10 (read from torchvision's ``cifar-10-batches-py`` layout) and a synthetic stand-in.

Images are kept as uint8 tensors ``x: (N, 3, 32, 32)`` with int64 labels ``y: (N,)``; call
:func:`to_float` to get normalised float32 inputs. Every data set carries a
:class:`DataIdentity` recording where it came from (md5 of the pixel arrays, whether the
files are the official ones), so that results can say which data produced them.

Nothing is cached between calls: each call reads the files again (about a second).

The batch files are Python pickles, read by a restricted unpickler
(:func:`restricted_loads`): numpy arrays, dtypes and builtin containers, strings and numbers
only; a file that references any other global is refused, so a crafted file cannot run
code. A copy is checked against what it is known to be: the official md5 of every file, the
pixel md5 of the project's offline copy (:data:`KNOWN_COPIES`), and the manifest
(:data:`MANIFEST_FILE`: sha256 of every file) that ``python -m sgdnoise.data`` (``make data``)
records the first time it verifies a copy and every later load compares, so one changed byte
is found.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import pickle
import re
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .atomic import atomic_write
from .validate import check_choice, check_positive_int

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "DATASETS",
    "KNOWN_COPIES",
    "MANIFEST_FILE",
    "OFFICIAL_MD5",
    "DataCorruptError",
    "DataIdentity",
    "DataNotFoundError",
    "fetch_cifar10",
    "ImageData",
    "load_cifar10",
    "load_dataset",
    "pool_dataset",
    "pool_image_data",
    "pool_images",
    "pooling_note",
    "resolve_data_dir",
    "restricted_loads",
    "stratified_indices",
    "synthetic_cifar10",
    "to_float",
    "write_manifest",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_DIRNAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
#: md5 of the official files, as torchvision lists them.
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
#: Per-channel mean and std of the official training images on the [0, 1] scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DATASETS = ("cifar10", "synthetic")
ENV_VAR = "SGDNOISE_DATA"
_ROW = 3 * 32 * 32
#: The checksum manifest a verified copy carries in its folder (sha256 of every file).
MANIFEST_FILE = "sgdnoise-manifest.json"
MANIFEST_FORMAT = "sgdnoise.data.manifest/1"
#: Copies known by the md5 of their decoded pixel rows (see :class:`DataIdentity`) and
#: recognised by their file names (a regular expression matched against the first entry
#: of every batch's ``filenames``): such a copy whose pixels differ is refused.
KNOWN_COPIES: tuple[dict[str, str], ...] = (
    {"name": "the project's offline copy (real images after one JPEG round trip, "
             "written by shared/data/cifar10/expand.py)",
     "filename": r"(train|test)/[a-z]+/[0-9]+[.]jpg$",
     "train_md5": "4c06f62ccc623a7dc22ed0db7db7f19e",
     "test_md5": "ae6fdc2fd3c60de94941326530317809"},
)


class DataNotFoundError(FileNotFoundError):
    """The CIFAR-10 files are missing (and could not be downloaded)."""


class DataCorruptError(ValueError):
    """A CIFAR-10 file exists but cannot be read or has the wrong contents."""


@dataclass
class DataIdentity:
    """Where a data set came from.

    - ``source``: "official" (every file's md5 equals the official one), "supplied copy"
      (files in the official layout with other bytes, e.g. a re-encoded copy) or
      "synthetic".
    - ``path``: directory the files were read from ("" for synthetic data).
    - ``train_md5`` / ``test_md5``: md5 of the uint8 pixel rows, (N, 3072) C-order, of the
      full split that was read (before any subset was taken).
    - ``official_checksums``: whether all six batch files match the official md5 values.
    - ``n_train`` / ``n_test``: number of examples held (after subsetting).
    - ``subset_seed``: seed of the stratified subset, None when the full split is held.
    - ``n_val``: examples of the validation set held out of the training split (disjoint
      from the training examples), None when there is none.
    - ``preprocessing``: what was done to the pixels after reading (e.g. "average-pooled
      to 16x16", see :func:`pool_dataset`), None when nothing was.
    """

    source: str
    path: str
    train_md5: str
    test_md5: str
    official_checksums: bool
    n_train: int
    n_test: int
    subset_seed: int | None = None
    n_val: int | None = None
    preprocessing: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (``n_val`` only when there is a validation set,
        ``preprocessing`` only when the pixels were changed)."""
        out = asdict(self)
        for key in ("n_val", "preprocessing"):
            if out[key] is None:
                del out[key]
        return out


@dataclass
class ImageData:
    """Images and labels. ``train_x: (N, 3, 32, 32) uint8``, ``train_y: (N,) int64``, the
    same for the test split; ``classes[k]`` names label k. ``val_x`` / ``val_y``: an optional
    validation set held out of the training split (disjoint from ``train_x``), for choosing
    hyperparameters without looking at the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    identity: DataIdentity = field(repr=False)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"ImageData(train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"source={self.identity.source!r})"
        )


# --------------------------------------------------------------------------- locating files


def _repo_data_dir() -> Path:
    """``<repo>/data`` for a source checkout (src/sgdnoise/data.py -> repo root)."""
    return Path(__file__).resolve().parents[2] / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory that holds (or will hold) ``cifar-10-batches-py/``.

    Order: the ``data_dir`` argument; else ``$SGDNOISE_DATA``; else ``data/`` under the
    current directory when it holds the CIFAR-10 folder; else the repository's own
    ``data/`` (found from this file's location; notebooks run in book/chapters) when this
    is a source checkout, so that a missing folder is reported, and downloaded, there.
    A path that itself is a ``cifar-10-batches-py`` folder is accepted and its parent used.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
    elif os.environ.get(ENV_VAR):
        root = Path(os.environ[ENV_VAR]).expanduser()
    else:
        root = Path("data")
        repo = _repo_data_dir()
        if not (root / CIFAR10_DIRNAME).is_dir() and (
            (repo / CIFAR10_DIRNAME).is_dir() or (repo.parent / "pyproject.toml").is_file()
        ):
            root = repo
    if root.name == CIFAR10_DIRNAME and (root / TRAIN_FILES[0]).exists():
        root = root.parent
    return root


def _missing_message(folder: Path, why: str) -> str:
    return (
        f"CIFAR-10 not found: {why}\n"
        f"Expected the folder {folder.resolve()} with the files "
        f"{', '.join(TRAIN_FILES)}, {TEST_FILE} and {META_FILE} "
        "(torchvision's 'cifar-10-batches-py' layout, the python version of CIFAR-10).\n"
        "To supply it:\n"
        f"  1. download {CIFAR10_URL} (about 170 MB) on a machine with internet access;\n"
        f"  2. unpack it into the data directory: tar -xzf cifar-10-python.tar.gz -C "
        f"{folder.parent.resolve()}\n"
        f"     (this creates {CIFAR10_DIRNAME}/ there);\n"
        f"  3. or put it anywhere and point the environment variable {ENV_VAR} at the folder "
        f"that contains {CIFAR10_DIRNAME}/, or pass data_dir=... .\n"
        f"{_offline_hint(folder.parent)}"
        "data/README.md in the repository describes this, and offline copies, in more detail. "
        "Without any data, use dataset='synthetic' (a seeded CIFAR-shaped stand-in)."
    )


def _offline_hint(root: Path) -> str:
    """How to fill ``root`` from this checkout: ``make data``, and the offline copy where the
    project's shared folder has one."""
    repo = _repo_data_dir()
    if root.resolve() != repo.resolve():
        return ""
    hint = (f"  From the repository root {repo.parent}: `make data` downloads and verifies the "
            "official archive where the internet is reachable.\n")
    expand = repo.parent.parent / "shared" / "data" / "cifar10" / "expand.py"
    if expand.is_file():
        hint += (f"  Without internet: .venv/bin/python ../shared/data/cifar10/expand.py data/ "
                 f"writes the offline copy ({expand.parent}) into {repo}.\n")
    return hint


def _try_download(root: Path, timeout: float) -> str | None:
    """Fetch the official archive with torchvision into ``root``; None on success, else the
    reason it failed. A quick connection probe with ``timeout`` seconds comes first."""
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=timeout).close()
    except OSError as err:
        return f"the download site is unreachable ({err})"
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as err:
        return f"torchvision is not importable ({err})"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(max(timeout, 30.0))
    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # any failure means "not downloaded"
        return f"the download failed ({type(err).__name__}: {err})"
    finally:
        socket.setdefaulttimeout(old)
    return None


# --------------------------------------------------------------------------- reading files


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickle of numpy arrays references (this numpy's, under both its
    module names ``numpy._core`` and ``numpy.core``), and ``_codecs.encode`` (bytes in
    protocols 0-2)."""
    import numpy as np

    a = np.zeros(1, dtype=np.uint8)
    found = [np.ndarray, np.dtype, a.__reduce__()[0], a.__reduce_ex__(5)[0],
             np.uint8(0).__reduce__()[0]]
    out: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
    for obj in found:
        module = getattr(obj, "__module__", None) or "numpy"
        for name in (module, module.replace("numpy._core", "numpy.core")):
            out[(name, obj.__name__)] = obj
    return out


_ALLOWED_GLOBALS = _numpy_globals()


class _Refused(pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`_ALLOWED_GLOBALS`."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def restricted_loads(raw: bytes, *, source: str) -> Any:
    """Unpickle ``raw`` (the bytes of the file ``source``, named in errors) allowing only
    numpy arrays, dtypes and scalars, builtin containers, strings, bytes and numbers
    (``encoding="latin1"``, as for the official Python 2 files). A pickle that references
    any other global (a function to call, a class to build) is refused with a
    :class:`DataCorruptError` before anything runs; so is a truncated or garbled one."""
    try:
        return _DataUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as err:
        raise DataCorruptError(
            f"{source}: refused: the pickle references {err}, which a CIFAR-10 file never "
            "holds (only numpy arrays, dtypes, builtin containers, strings and numbers are "
            "read); it was not loaded: replace the file with a trusted copy") from None
    except Exception as err:  # truncated/garbled pickles raise many types
        raise DataCorruptError(
            f"{source}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err}); "
            "the file is truncated or corrupted: replace it with a fresh copy"
        ) from err


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataCorruptError(f"{path}: missing from the CIFAR-10 folder")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataNotFoundError(f"{path}: cannot be read ({err.strerror or err}); check the "
                                "permissions of the file and its folder") from None


def _read_pickle(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = _read_bytes(path)
    obj = restricted_loads(raw, source=str(path))
    if not isinstance(obj, dict):
        raise DataCorruptError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj, raw


class _Batch(NamedTuple):
    rows: np.ndarray  # (n, 3072) uint8
    labels: np.ndarray  # (n,) int64
    md5: str  # of the file
    sha256: str  # of the file
    first_name: str  # the first entry of 'filenames' ("" when there is none)


def _first_name(obj: dict[str, Any]) -> str:
    names = obj.get("filenames")
    if not isinstance(names, (list, tuple)) or not names:
        return ""
    first = names[0]
    return first.decode("latin1") if isinstance(first, bytes) else str(first)


def _read_batch(path: Path, num_classes: int) -> _Batch:
    """One batch file: rows, labels, the file's md5 and sha256 and its first file name."""
    obj, raw = _read_pickle(path)
    if "data" not in obj or "labels" not in obj:
        raise DataCorruptError(
            f"{path}: expected keys 'data' and 'labels', found {sorted(map(str, obj))}"
        )
    data = obj["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataCorruptError(f"{path}: 'data' must be a uint8 (n, 3072) array, got {desc}")
    if data.shape[1] != _ROW or data.shape[0] == 0:
        raise DataCorruptError(
            f"{path}: 'data' must have shape (n, 3072) with n >= 1 (10000 in the official "
            f"files), got {data.shape}"
        )
    try:
        labels = np.asarray(obj["labels"], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataCorruptError(f"{path}: 'labels' is not a list of integers ({err})") from err
    if labels.shape != (data.shape[0],):
        raise DataCorruptError(
            f"{path}: {labels.shape} labels for {data.shape[0]} images; they must match"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataCorruptError(f"{path}: labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")
    return _Batch(np.ascontiguousarray(data), labels, hashlib.md5(raw).hexdigest(),
                  hashlib.sha256(raw).hexdigest(), _first_name(obj))


def _read_classes(folder: Path) -> tuple[list[str], str]:
    """The class names of ``batches.meta`` (which must exist) and the file's sha256."""
    meta = folder / META_FILE
    obj, raw = _read_pickle(meta)
    names = obj.get("label_names")
    if not isinstance(names, list) or not names:
        raise DataCorruptError(f"{meta}: expected a non-empty list under 'label_names'")
    if not all(isinstance(n, (str, bytes)) for n in names):
        raise DataCorruptError(f"{meta}: 'label_names' must hold strings")
    classes = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    return classes, hashlib.sha256(raw).hexdigest()


def _check_manifest(folder: Path, sha256: dict[str, str]) -> None:
    """Compare every file's sha256 with the folder's manifest, when it has one."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text())["files"]
        assert isinstance(recorded, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise DataCorruptError(f"{path}: not a readable manifest; delete it and run "
                               "`python -m sgdnoise.data` to verify the copy again") from None
    for name, digest in sha256.items():
        if recorded.get(name) != digest:
            raise DataCorruptError(
                f"{folder / name}: its sha256 {digest} differs from the one {MANIFEST_FILE} "
                f"recorded when this copy was verified ({recorded.get(name)}): the file "
                f"changed since; replace the copy and delete {MANIFEST_FILE}, then verify it "
                "again with `python -m sgdnoise.data`")


def _known_copy(folder: Path, first_names: list[str], train_md5: str,
                test_md5: str) -> dict[str, str] | None:
    """The entry of :data:`KNOWN_COPIES` whose file names these batches carry (None if
    none); a DataCorruptError when its pixel md5 values differ from the ones it is known
    by."""
    for copy in KNOWN_COPIES:
        if first_names and all(re.match(copy["filename"], n) for n in first_names):
            if (train_md5, test_md5) != (copy["train_md5"], copy["test_md5"]):
                raise DataCorruptError(
                    f"{folder}: its file names mark it as {copy['name']}, whose decoded "
                    f"pixel rows have md5 {copy['train_md5']} (training) and "
                    f"{copy['test_md5']} (test), but these files give {train_md5} and "
                    f"{test_md5}: bytes changed since the copy was written; write it again")
            return copy
    return None


def _md5(rows: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(rows).data).hexdigest()


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    timeout: float = 5.0,
) -> ImageData:
    """Read CIFAR-10 from ``<data_dir>/cifar-10-batches-py`` (see :func:`resolve_data_dir`).

    Returns ``train_x: (50000, 3, 32, 32) uint8`` in the official order of data_batch_1..5,
    ``test_x: (10000, 3, 32, 32)``, labels int64 and the class names from batches.meta.
    When the folder is missing and ``download`` is true, torchvision fetches the official
    archive (after a connection probe of ``timeout`` seconds); when that is impossible a
    :class:`DataNotFoundError` explains how to supply the files. Files that exist but are
    truncated or malformed raise :class:`DataCorruptError` naming the file.

    The batch files are Python pickles, read with :func:`restricted_loads` (nothing but
    arrays, containers, strings and numbers). A folder with a manifest
    (:data:`MANIFEST_FILE`) must match it file by file, and a copy named in
    :data:`KNOWN_COPIES` must have its pixel md5 values; otherwise :class:`DataCorruptError`
    names the file that changed.
    """
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR10_DIRNAME
    if not folder.is_dir():
        if not download:
            raise DataNotFoundError(
                _missing_message(folder, "the folder does not exist and download=False")
            )
        why = _try_download(root, timeout)
        if why is not None or not folder.is_dir():
            raise DataNotFoundError(_missing_message(folder, why or "download left no folder"))
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataNotFoundError(f"{folder}: the folder cannot be read (permission denied); "
                                "check its permissions")
    classes, meta_sha = _read_classes(folder)
    batches = {name: _read_batch(folder / name, len(classes))
               for name in (*TRAIN_FILES, TEST_FILE)}
    _check_manifest(folder, {META_FILE: meta_sha,
                             **{n: b.sha256 for n, b in batches.items()}})
    train_rows = np.concatenate([batches[n].rows for n in TRAIN_FILES])
    train_y = np.concatenate([batches[n].labels for n in TRAIN_FILES])
    test_rows, test_y = batches[TEST_FILE].rows, batches[TEST_FILE].labels
    official = all(batches[k].md5 == v for k, v in OFFICIAL_MD5.items())
    first_names = [b.first_name for b in batches.values()]
    del batches
    identity = DataIdentity(
        source="official" if official else "supplied copy",
        path=str(folder.resolve()),
        train_md5=_md5(train_rows),
        test_md5=_md5(test_rows),
        official_checksums=official,
        n_train=int(train_rows.shape[0]),
        n_test=int(test_rows.shape[0]),
    )
    if not official:
        _known_copy(folder, first_names, identity.train_md5, identity.test_md5)
    return ImageData(
        train_x=torch.from_numpy(train_rows.reshape(-1, 3, 32, 32)),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_rows.reshape(-1, 3, 32, 32)),
        test_y=torch.from_numpy(test_y),
        classes=classes,
        identity=identity,
    )


# --------------------------------------------------------------------------- synthetic data


def _upsample_matrix(low: int, size: int = 32) -> np.ndarray:
    """``(size, low)`` matrix of linear interpolation weights from ``low`` equally spaced
    grid points (end points aligned) to ``size`` points; each row sums to one."""
    pos = np.linspace(0.0, low - 1.0, size)
    left = np.minimum(np.floor(pos).astype(np.int64), low - 2)
    frac = (pos - left).astype(np.float32)
    U = np.zeros((size, low), dtype=np.float32)
    U[np.arange(size), left] = 1.0 - frac
    U[np.arange(size), left + 1] = frac
    return U


def _smooth_fields(rng: np.random.Generator, n: int, low: int) -> np.ndarray:
    """``n`` smooth random images ``(n, 3, 32, 32)`` float32: standard normal values on a
    ``low x low`` grid, bilinearly interpolated to 32 x 32 (``U G Uᵀ`` per channel)."""
    coarse = rng.standard_normal((n, 3, low, low), dtype=np.float32)
    U = _upsample_matrix(low)
    return U @ coarse @ U.T


def synthetic_cifar10(n_train: int, n_test: int, *, seed: int = 0,
                      n_val: int | None = None) -> ImageData:
    """A seeded CIFAR-shaped stand-in that small models can learn, but not trivially.

    Each class c has a smooth random template ``T_c: (3, 32, 32)`` (unit pixel std). Example
    i of class c is ``clip(128 + 20 (a_i shift_i(T_c) + b_i T_o) + 48 S_i + 24 Z_i, 0, 255)``
    rounded to uint8: contrast ``a_i ~ U(0.6, 1.4)``, a random circular shift of up to 8
    pixels in each direction, a distractor template ``T_o`` of another class with weight
    ``b_i ~ U(0, 0.8)``, a smooth per-example random field ``S_i`` and white pixel noise
    ``Z_i`` (both standard normal per pixel). Softmax regression on 2000 examples reaches
    about 85 % training and 65 % test accuracy. Labels are balanced (``n // 10`` per
    class, the remainder on the first classes) and shuffled. The same seed gives the same
    arrays; train and test share the templates but not the per-example draws. ``n_val``
    examples of a validation set are drawn after the test set, so asking for one leaves the
    training and test arrays unchanged.
    """
    n_train = check_positive_int("n_train", n_train)
    n_test = check_positive_int("n_test", n_test)
    if n_val is not None:
        n_val = check_positive_int("n_val", n_val)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 10]))
    templates = _smooth_fields(rng, 10, 4)
    templates /= templates.std(axis=(1, 2, 3), keepdims=True)
    grid = np.arange(32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n, dtype=np.int64) % 10)
        out = np.empty((n, 3, 32, 32), dtype=np.uint8)
        for lo in range(0, n, 4096):
            y = labels[lo : min(n, lo + 4096)]
            m = y.shape[0]
            a = rng.uniform(0.6, 1.4, size=(m, 1, 1, 1)).astype(np.float32)
            dy, dx = rng.integers(-8, 9, size=(2, m))
            rows = (grid[None, :] - dy[:, None]) % 32
            cols = (grid[None, :] - dx[:, None]) % 32
            shifted = templates[
                y[:, None, None, None],
                np.arange(3)[None, :, None, None],
                rows[:, None, :, None],
                cols[:, None, None, :],
            ]
            other = (y + rng.integers(1, 10, size=m)) % 10
            b = rng.uniform(0.0, 0.8, size=(m, 1, 1, 1)).astype(np.float32)
            img = 128.0 + 20.0 * (a * shifted + b * templates[other])
            img += 48.0 * _smooth_fields(rng, m, 8)
            img += 24.0 * rng.standard_normal((m, 3, 32, 32), dtype=np.float32)
            out[lo : lo + m] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return out, labels

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    val = make(n_val) if n_val is not None else None
    identity = DataIdentity(
        source="synthetic",
        path="",
        train_md5=_md5(train_x),
        test_md5=_md5(test_x),
        official_checksums=False,
        n_train=n_train,
        n_test=n_test,
        subset_seed=None,
        n_val=n_val,
    )
    return ImageData(
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=[f"class {k}" for k in range(10)],
        identity=identity,
        val_x=None if val is None else torch.from_numpy(val[0]),
        val_y=None if val is None else torch.from_numpy(val[1]),
    )


# --------------------------------------------------------------------------- subsets


def stratified_indices(labels: torch.Tensor | np.ndarray, n: int, *, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded class-stratified subset of size ``n``, sorted ascending.

    Each class k gets ``floor(n * n_k / N)`` examples (its share of ``labels``), and the
    ``n - sum`` left over go one each to the classes with the largest remainders (ties to the
    lower label). Within a class the examples are drawn uniformly without replacement.
    ``labels: (N,)`` integers; returns a LongTensor ``(n,)``.
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    n = check_positive_int("n", n)
    if n > y.shape[0]:
        raise ValueError(f"n must be at most the number of examples {y.shape[0]}, got {n}")
    classes, counts = np.unique(y, return_counts=True)
    exact = n * counts / y.shape[0]
    take = np.floor(exact).astype(np.int64)
    extra = n - int(take.sum())
    order = np.lexsort((classes, -(exact - take)))  # largest remainder first, then label
    take[order[:extra]] += 1
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20]))
    chosen = [
        rng.choice(np.flatnonzero(y == c), size=int(k), replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def load_dataset(
    name: str,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    n_val: int | None = None,
) -> ImageData:
    """``"cifar10"`` (:func:`load_cifar10`) or ``"synthetic"`` (:func:`synthetic_cifar10`),
    optionally cut to stratified seeded subsets of ``n_train`` / ``n_test`` examples.

    For synthetic data ``n_train`` / ``n_test`` are the sizes generated (defaults 5000 /
    1000) and ``seed`` seeds the generator. For CIFAR-10 ``None`` keeps the whole split;
    the identity's md5 values still describe the full files, ``subset_seed`` the subset.

    ``n_val``: also hold out a validation set of that many training-split examples,
    disjoint from the training examples (CIFAR-10: a stratified subset, seeded by
    ``seed + 2``, of the training-split examples not in the training subset, which is the
    same subset as without ``n_val``; synthetic: drawn after the test set). Raises
    ValueError when the training split cannot hold both.
    """
    check_choice("name", name, DATASETS)
    if n_val is not None:
        n_val = check_positive_int("n_val", n_val)
    if name == "synthetic":
        return synthetic_cifar10(
            5000 if n_train is None else n_train, 1000 if n_test is None else n_test,
            seed=seed, n_val=n_val,
        )
    data = load_cifar10(data_dir, download=download)
    out: dict[str, torch.Tensor] = {}
    full_train = int(data.train_y.shape[0])
    if n_val is not None and (n_train if n_train is not None else full_train) + n_val > full_train:
        raise ValueError(
            f"n_train + n_val must be at most the {full_train} training-split examples, got "
            f"n_train={n_train} and n_val={n_val}"
        )
    train_idx = torch.arange(full_train)
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if n is not None and n != y.shape[0]:
            idx = stratified_indices(y, n, seed=seed + (0 if split == "train" else 1))
            x, y = x[idx].contiguous(), y[idx].contiguous()
            if split == "train":
                train_idx = idx
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    if n_val is not None:
        rest = torch.ones(full_train, dtype=torch.bool)
        rest[train_idx] = False
        pool = torch.nonzero(rest).view(-1)
        pick = pool[stratified_indices(data.train_y[pool], n_val, seed=seed + 2)]
        out["val_x"] = data.train_x[pick].contiguous()
        out["val_y"] = data.train_y[pick].contiguous()
    subset = n_train is not None or n_test is not None
    identity = replace(
        data.identity,
        n_train=int(out["train_y"].shape[0]),
        n_test=int(out["test_y"].shape[0]),
        subset_seed=int(seed) if subset or n_val is not None else None,
        n_val=n_val,
    )
    return ImageData(classes=data.classes, identity=identity, **out)


# --------------------------------------------------------------------------- preprocessing


def to_float(x_uint8: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 -> float32 on [0, 1], then ``(x - mean) / std`` per channel
    with :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD` when ``normalize``."""
    if not isinstance(x_uint8, torch.Tensor) or x_uint8.dtype != torch.uint8:
        what = x_uint8.dtype if isinstance(x_uint8, torch.Tensor) else type(x_uint8).__name__
        raise ValueError(f"x_uint8 must be a uint8 tensor, got {what}")
    if x_uint8.ndim != 4 or x_uint8.shape[1] != 3:
        raise ValueError(f"x_uint8 must have shape (N, 3, H, W), got {tuple(x_uint8.shape)}")
    x = x_uint8.to(torch.float32) / 255.0
    if normalize:
        mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def pool_images(x: torch.Tensor, size: int, *, name: str = "size") -> torch.Tensor:
    """Average-pool images ``x: (N, C, H, W)`` over non-overlapping ``H/size × H/size``
    windows to ``(N, C, size, size)`` (``size`` must divide H = W).

    uint8 images stay uint8: each window mean is taken in float32 and rounded (clamped to
    [0, 255]); floating images are pooled in their own dtype. ``size = H`` returns a copy.
    ``name`` is the parameter named in errors (the caller's name for ``size``)."""
    size = check_positive_int(name, size)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be square images (N, C, H, H), got {got}")
    side = int(x.shape[-1])
    if side % size:
        raise ValueError(f"{name} must divide {side}, got {size}")
    if size == side:
        return x.clone()
    if x.dtype == torch.uint8:
        f = torch.nn.functional.avg_pool2d(x.to(torch.float32), side // size)
        return f.round().clamp(0, 255).to(torch.uint8)
    return torch.nn.functional.avg_pool2d(x, side // size)


def pooling_note(image_size: int) -> str:
    """The identity's ``preprocessing`` note of images pooled to ``image_size``."""
    return f"average-pooled to {image_size}x{image_size}"


def pool_dataset(data: ImageData, image_size: int) -> ImageData:
    """``data`` with every image average-pooled to ``image_size × image_size`` uint8 pixels
    (:func:`pool_images`; ``train_x: (N, 3, 32, 32)`` becomes ``(N, 3, image_size,
    image_size)``, the same for the test and validation images), labels copied, and the
    identity's ``preprocessing`` set to "average-pooled to SxS" (its md5 values still
    describe the files read)."""
    def pool(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else pool_images(x, image_size, name="image_size")

    return replace(
        data, train_x=pool(data.train_x), train_y=data.train_y.clone(),
        test_x=pool(data.test_x), test_y=data.test_y.clone(), val_x=pool(data.val_x),
        val_y=None if data.val_y is None else data.val_y.clone(),
        identity=replace(data.identity, preprocessing=pooling_note(image_size)))


def pool_image_data(data: ImageData, image_size: int) -> dict[str, Any]:
    """:func:`pool_dataset` as a dict that :func:`sgdnoise.train.train` accepts (train_x,
    train_y, test_x, test_y; val_x, val_y when ``data`` has a validation set) plus
    "identity": the pooled data's identity as a dict (with its "preprocessing" note)."""
    small = pool_dataset(data, image_size)
    out = {"train_x": small.train_x, "train_y": small.train_y, "test_x": small.test_x,
           "test_y": small.test_y, "identity": small.identity.to_dict()}
    if small.val_x is not None:
        out["val_x"], out["val_y"] = small.val_x, small.val_y
    return out


# --------------------------------------------------------------------------- make data

#: md5 of the official archive ``cifar-10-python.tar.gz``.
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"


def _urlretrieve(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` (the default fetcher of :func:`fetch_cifar10`)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as fh:
        while chunk := response.read(1 << 20):
            fh.write(chunk)


def fetch_cifar10(
    data_dir: str | os.PathLike | None = None,
    *,
    fetch: Any = None,
    timeout: float = 30.0,
    url: str = CIFAR10_URL,
) -> Path:
    """Download the official archive into ``data_dir`` (default: :func:`resolve_data_dir`),
    check its md5 against :data:`ARCHIVE_MD5`, unpack it and check the six batch files
    against :data:`OFFICIAL_MD5`. Returns the ``cifar-10-batches-py`` folder.

    ``fetch(url, dest, timeout)`` does the download (tests pass a fake). Nothing is left
    half-written: the archive is downloaded to a ``.part`` file and unpacked into a
    temporary folder that replaces nothing until every check passed. An existing folder
    whose files match the official md5 values is kept as is. Raises
    :class:`DataNotFoundError` (download failed, with what to do instead) or
    :class:`DataCorruptError` (a wrong checksum).
    """
    import shutil
    import tarfile
    import tempfile

    fetch = _urlretrieve if fetch is None else fetch
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR10_DIRNAME
    if folder.is_dir() and _official_files(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    part = root / (ARCHIVE_NAME + ".part")
    try:
        fetch(url, part, timeout)
    except Exception as err:  # any failure means "not downloaded"
        part.unlink(missing_ok=True)
        raise DataNotFoundError(_missing_message(
            folder, f"downloading {url} failed ({type(err).__name__}: {err})")) from err
    digest = hashlib.md5(part.read_bytes()).hexdigest()
    if digest != ARCHIVE_MD5:
        part.unlink(missing_ok=True)
        raise DataCorruptError(f"{url}: the downloaded archive has md5 {digest}, expected "
                               f"{ARCHIVE_MD5}; nothing was unpacked")
    with tempfile.TemporaryDirectory(prefix=".cifar-", dir=root) as tmp:
        with tarfile.open(part, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(CIFAR10_DIRNAME + "/") and m.isfile()]
            tar.extractall(tmp, members=members, filter="data")
        unpacked = Path(tmp) / CIFAR10_DIRNAME
        if not _official_files(unpacked):
            raise DataCorruptError(f"{part}: the unpacked files do not match the official md5 "
                                   "values; nothing was installed")
        write_manifest(unpacked, "the official md5 of every batch file")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(unpacked, folder)
    os.replace(part, root / ARCHIVE_NAME)
    return folder


def _official_files(folder: Path) -> bool:
    """Whether all six batch files exist and match :data:`OFFICIAL_MD5`."""
    for name, md5 in OFFICIAL_MD5.items():
        path = folder / name
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            return False
    return True


def write_manifest(folder: Path, verified_against: str) -> Path:
    """Write ``folder/MANIFEST_FILE``: the sha256 of every file of the copy and what it was
    verified against, atomically; :func:`load_cifar10` then checks every later load
    against it. Returns the manifest's path."""
    files = {name: hashlib.sha256(_read_bytes(folder / name)).hexdigest()
             for name in (*TRAIN_FILES, TEST_FILE, META_FILE)}
    text = json.dumps({"format": MANIFEST_FORMAT, "verified_against": verified_against,
                       "files": files}, indent=1, sort_keys=True) + "\n"
    return atomic_write(folder / MANIFEST_FILE, lambda tmp: tmp.write_text(text))


def _what_it_is(identity: DataIdentity) -> str:
    """What a loaded copy was verified against, in words."""
    if identity.official_checksums:
        return "the official md5 of every batch file"
    for copy in KNOWN_COPIES:
        if (identity.train_md5, identity.test_md5) == (copy["train_md5"], copy["test_md5"]):
            return f"the pixel md5 values of {copy['name']}"
    return ("nothing (a supplied copy not known to this package: the manifest records it as "
            "found, so later changes are caught)")


def _verify_in_place(folder: Path) -> int:
    """``make data`` on an existing folder: load it (every check of :func:`load_cifar10`)
    and record its manifest when it has none. Exit code 0, or 1 naming what is wrong."""
    import sys

    try:
        data = load_cifar10(folder.parent, download=False)
    except (DataNotFoundError, DataCorruptError) as err:
        print(f"CIFAR-10 in {folder} is not usable: {err}", file=sys.stderr)
        return 1
    against = _what_it_is(data.identity)
    kind = "the official files" if data.identity.official_checksums else "a supplied copy"
    if (folder / MANIFEST_FILE).exists():
        note = f"every file matches its {MANIFEST_FILE}"
    else:
        try:
            note = f"wrote the manifest {write_manifest(folder, against)}"
        except OSError as err:
            note = f"the manifest could not be written ({err.strerror or err})"
    print(f"CIFAR-10 is in place and verified: {folder.resolve()} holds {kind}, checked "
          f"against {against}; {note}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sgdnoise.data [DATA_DIR]`` (``make data``): verify the CIFAR-10 copy in
    place (every check of :func:`load_cifar10`; its manifest is written the first time),
    else fetch and verify the official archive, or say what to do when that is impossible.
    Exit code 0 when verified data are in place, 1 otherwise, 2 for bad arguments."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print("usage: python -m sgdnoise.data [DATA_DIR]", file=sys.stderr)
        return 2
    root = resolve_data_dir(args[0] if args else None)
    folder = root / CIFAR10_DIRNAME
    if folder.is_dir():
        return _verify_in_place(folder)
    try:
        path = fetch_cifar10(root)
    except (DataNotFoundError, DataCorruptError) as err:
        print(str(err), file=sys.stderr)
        return 1
    print(f"CIFAR-10 downloaded, verified (md5 {ARCHIVE_MD5}) and unpacked into "
          f"{path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
