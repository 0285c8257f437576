"""Tests for sgdnoise.data on tiny CIFAR-10 copies written in the official layout by the
tests themselves, plus one test of the real copy when it is present."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdnoise import data as D
from sgdnoise.data import (
    DataCorruptError,
    DataNotFoundError,
    load_cifar10,
    load_dataset,
    resolve_data_dir,
    stratified_indices,
    synthetic_cifar10,
    to_float,
)

ROWS_TRAIN = 20  # rows per training batch in the tiny copy (2 per class)
ROWS_TEST = 30
NAMES = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]


def _batch(rng: np.random.Generator, n: int, *, bytes_keys: bool = False) -> dict:
    labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
    d = {
        "batch_label": "tiny batch",
        "labels": labels,
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    return d


def write_copy(root: Path, *, seed: int = 0, bytes_keys: bool = False) -> dict:
    """Write ``root/cifar-10-batches-py`` with tiny batches; return what was written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for i in range(1, 6):
        written[f"data_batch_{i}"] = _batch(rng, ROWS_TRAIN, bytes_keys=bytes_keys)
    written["test_batch"] = _batch(rng, ROWS_TEST, bytes_keys=bytes_keys)
    for name, obj in written.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": NAMES, "num_cases_per_batch": ROWS_TRAIN}, f, protocol=2)
    if bytes_keys:
        written = {n: {k.decode(): v for k, v in d.items()} for n, d in written.items()}
    return written


@pytest.fixture
def tiny(tmp_path):
    written = write_copy(tmp_path)
    return tmp_path, written


# ----------------------------------------------------------------- reading


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_load_tiny_copy(tmp_path, bytes_keys):
    written = write_copy(tmp_path, bytes_keys=bytes_keys)
    d = load_cifar10(tmp_path, download=False)
    rows = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}"]["labels"] for i in range(1, 6)])
    assert d.train_x.shape == (5 * ROWS_TRAIN, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (ROWS_TEST, 3, 32, 32)
    assert d.train_y.dtype == torch.int64 and d.test_y.dtype == torch.int64
    assert np.array_equal(d.train_y.numpy(), labels)
    assert np.array_equal(d.test_y.numpy(), written["test_batch"]["labels"])
    # row layout: 1024 red values (row-major 32x32), then green, then blue
    k = 37
    assert np.array_equal(d.train_x[k, 0].numpy().ravel(), rows[k, :1024])
    assert np.array_equal(d.train_x[k, 2, 5].numpy(), rows[k, 2048 + 5 * 32 : 2048 + 6 * 32])
    assert d.classes == NAMES


def test_identity_fields(tiny):
    root, written = tiny
    d = load_cifar10(root, download=False)
    ident = d.identity
    rows = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    assert ident.source == "supplied copy" and ident.official_checksums is False
    assert ident.train_md5 == hashlib.md5(rows.tobytes()).hexdigest()
    assert ident.test_md5 == hashlib.md5(written["test_batch"]["data"].tobytes()).hexdigest()
    assert ident.n_train == 5 * ROWS_TRAIN and ident.n_test == ROWS_TEST
    assert Path(ident.path) == (root / "cifar-10-batches-py").resolve()
    assert ident.subset_seed is None
    as_dict = ident.to_dict()
    assert as_dict["source"] == "supplied copy" and as_dict["n_train"] == 100


def test_official_checksums_detected(tiny, monkeypatch):
    root, _ = tiny
    folder = root / "cifar-10-batches-py"
    sums = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in D.OFFICIAL_MD5}
    monkeypatch.setattr(D, "OFFICIAL_MD5", sums)
    ident = load_cifar10(root, download=False).identity
    assert ident.source == "official" and ident.official_checksums is True
    sums["test_batch"] = "0" * 32
    assert load_cifar10(root, download=False).identity.source == "supplied copy"


def test_official_md5_table():
    assert D.OFFICIAL_MD5["data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert D.OFFICIAL_MD5["test_batch"] == "40351d587109b95175f43aff81a1287e"
    assert len(D.OFFICIAL_MD5) == 6


def test_missing_meta_file_is_an_error_not_default_names(tiny):
    root, _ = tiny
    (root / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataCorruptError, match="batches.meta"):
        load_cifar10(root, download=False)


# ----------------------------------------------------------------- locating the folder


def test_env_var_override(tiny, monkeypatch, tmp_path_factory):
    root, _ = tiny
    monkeypatch.setenv("SGDNOISE_DATA", str(root))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert resolve_data_dir() == root
    assert load_cifar10(download=False).identity.n_train == 100
    # an explicit argument beats the variable
    other = tmp_path_factory.mktemp("other")
    assert resolve_data_dir(other) == other
    with pytest.raises(DataNotFoundError):
        load_cifar10(other, download=False)


def test_cwd_and_repo_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("SGDNOISE_DATA", raising=False)
    work = tmp_path / "work"
    write_copy(work / "data")
    monkeypatch.chdir(work)
    assert resolve_data_dir() == Path("data")
    assert load_cifar10(download=False).identity.n_test == ROWS_TEST
    # a cwd without data/cifar-10-batches-py falls back to the repository's data/
    repo_data = tmp_path / "repo" / "data"
    write_copy(repo_data, seed=1)
    monkeypatch.setattr(D, "_repo_data_dir", lambda: repo_data)
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == repo_data
    monkeypatch.chdir(work)  # the cwd copy still wins where it exists
    assert resolve_data_dir() == Path("data")


def test_folder_itself_accepted(tiny):
    root, _ = tiny
    assert resolve_data_dir(root / "cifar-10-batches-py") == root
    assert load_cifar10(root / "cifar-10-batches-py", download=False).identity.n_train == 100


def test_missing_without_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("download attempted with download=False")

    monkeypatch.setattr(D, "_try_download", no_network)
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "SGDNOISE_DATA" in msg
    assert "tar -xzf" in msg
    assert str((tmp_path / "nowhere" / "cifar-10-batches-py").resolve()) in msg
    assert "data_batch_1" in msg and "test_batch" in msg


def test_failed_download_explains(tmp_path, monkeypatch):
    calls = []

    def offline(root, timeout):
        calls.append((root, timeout))
        return "the download site is unreachable (test)"

    monkeypatch.setattr(D, "_try_download", offline)
    with pytest.raises(DataNotFoundError, match="unreachable") as err:
        load_cifar10(tmp_path, download=True, timeout=0.5)
    assert calls == [(tmp_path, 0.5)]
    assert "cifar-10-python.tar.gz" in str(err.value)


# ----------------------------------------------------------------- corrupted files


def test_truncated_pickle(tiny):
    root, _ = tiny
    path = root / "cifar-10-batches-py" / "data_batch_3"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataCorruptError, match="data_batch_3") as err:
        load_cifar10(root, download=False)
    assert "truncated" in str(err.value)
    assert isinstance(err.value, ValueError)


def _rewrite(root: Path, name: str, **changes) -> None:
    path = root / "cifar-10-batches-py" / name
    with open(path, "rb") as f:
        obj = pickle.load(f, encoding="latin1")
    obj.update(changes)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(data=np.zeros((ROWS_TEST, 3071), np.uint8)), "3071"),
        (dict(data=np.zeros((ROWS_TEST, 3072), np.float32)), "float32"),
        (dict(data=[[0] * 3072] * ROWS_TEST), "uint8"),
        (dict(labels=[0] * (ROWS_TEST - 1)), "labels"),
        (dict(labels=[10] * ROWS_TEST), "0..9"),
    ],
)
def test_malformed_test_batch(tiny, changes, match):
    root, _ = tiny
    _rewrite(root, "test_batch", **changes)
    with pytest.raises(DataCorruptError, match=match) as err:
        load_cifar10(root, download=False)
    assert "test_batch" in str(err.value)


def test_missing_batch_file(tiny):
    root, _ = tiny
    (root / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataCorruptError, match="data_batch_5"):
        load_cifar10(root, download=False)


def test_not_a_dict(tiny):
    root, _ = tiny
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(DataCorruptError, match="data_batch_1"):
        load_cifar10(root, download=False)


# ----------------------------------------------------------------- subsets


def test_stratified_proportions_and_remainders():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_indices(labels, 10, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 2]
    # 7 of 100: exact shares 3.5, 2.1, 1.4 -> floors 3, 2, 1; one extra to class 0
    idx = stratified_indices(labels, 7, seed=0)
    assert torch.bincount(labels[idx], minlength=3).tolist() == [4, 2, 1]
    assert idx.dtype == torch.int64
    assert torch.equal(idx, torch.sort(idx).values)
    assert len(set(idx.tolist())) == 7


def test_stratified_balanced_and_seeded():
    labels = torch.arange(1000) % 10
    a = stratified_indices(labels, 200, seed=3)
    b = stratified_indices(labels, 200, seed=3)
    c = stratified_indices(labels, 200, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [20] * 10
    assert torch.equal(stratified_indices(labels, 1000), torch.arange(1000))
    with pytest.raises(ValueError, match="at most"):
        stratified_indices(labels, 1001)
    with pytest.raises(ValueError, match="n"):
        stratified_indices(labels, 0)


def test_stratified_subset_is_uniform_within_class():
    # Each of the 10 examples of class 0 should be picked with probability 1/2 when half
    # the data is taken; over 400 seeds the count per example is Binomial(400, 1/2)
    # (std 10), so every count lies within 200 +- 50 except with negligible probability.
    labels = torch.tensor([0] * 10 + [1] * 10)
    hits = torch.zeros(20)
    for seed in range(400):
        hits[stratified_indices(labels, 10, seed=seed)] += 1
    assert torch.all((hits - 200).abs() < 50)


def test_load_dataset_cifar_subset(tiny):
    root, written = tiny
    d = load_dataset("cifar10", n_train=50, n_test=10, seed=1, data_dir=root)
    assert d.train_x.shape == (50, 3, 32, 32) and d.test_x.shape == (10, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [5] * 10
    assert torch.bincount(d.test_y).tolist() == [1] * 10
    assert d.identity.n_train == 50 and d.identity.n_test == 10 and d.identity.subset_seed == 1
    full = load_cifar10(root, download=False)
    assert d.identity.train_md5 == full.identity.train_md5
    # the subset rows are rows of the full data with their labels
    idx = stratified_indices(full.train_y, 50, seed=1)
    assert torch.equal(d.train_x, full.train_x[idx]) and torch.equal(d.train_y, full.train_y[idx])
    again = load_dataset("cifar10", n_train=50, n_test=10, seed=1, data_dir=root)
    assert torch.equal(again.train_x, d.train_x)
    whole = load_dataset("cifar10", data_dir=root)
    assert whole.identity.subset_seed is None and whole.identity.n_train == 100


def test_load_dataset_validation_split(tiny):
    root, _ = tiny
    plain = load_dataset("cifar10", n_train=50, n_test=10, seed=1, data_dir=root)
    d = load_dataset("cifar10", n_train=50, n_test=10, seed=1, data_dir=root, n_val=30)
    # the training subset is the one without a validation set
    assert torch.equal(d.train_x, plain.train_x) and torch.equal(d.test_x, plain.test_x)
    assert d.val_x.shape == (30, 3, 32, 32) and torch.bincount(d.val_y).tolist() == [3] * 10
    full = load_cifar10(root, download=False)
    rows = {bytes(r.numpy().tobytes()): i for i, r in enumerate(full.train_x)}
    train_rows = {rows[bytes(r.numpy().tobytes())] for r in d.train_x}
    val_rows = {rows[bytes(r.numpy().tobytes())] for r in d.val_x}
    assert len(val_rows) == 30 and not train_rows & val_rows  # disjoint from training
    assert d.identity.n_val == 30 and "n_val" not in plain.identity.to_dict()
    with pytest.raises(ValueError, match="n_train \\+ n_val"):
        load_dataset("cifar10", n_train=80, n_val=30, data_dir=root)
    with pytest.raises(ValueError, match="n_val"):
        load_dataset("cifar10", n_train=50, n_val=0, data_dir=root)


def test_synthetic_validation_set_leaves_train_and_test_unchanged():
    a = synthetic_cifar10(40, 20, seed=3)
    b = synthetic_cifar10(40, 20, seed=3, n_val=15)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert a.val_x is None and b.val_x.shape == (15, 3, 32, 32)
    assert not torch.equal(b.val_x, b.test_x[:15])


def test_load_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="name"):
        load_dataset("imagenet")
    with pytest.raises(DataNotFoundError):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------- synthetic data


def test_synthetic_shapes_and_seeds():
    a = synthetic_cifar10(53, 21, seed=0)
    b = synthetic_cifar10(53, 21, seed=0)
    c = synthetic_cifar10(53, 21, seed=1)
    assert a.train_x.shape == (53, 3, 32, 32) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (21, 3, 32, 32)
    assert a.train_y.dtype == torch.int64
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    counts = torch.bincount(a.train_y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53
    ident = a.identity
    assert ident.source == "synthetic" and not ident.official_checksums
    assert ident.n_train == 53 and ident.n_test == 21
    assert ident.train_md5 == hashlib.md5(a.train_x.numpy().tobytes()).hexdigest()
    assert len(a.classes) == 10 and a.num_classes == 10


def test_synthetic_has_class_signal():
    # class means of the training images should be closer to the test images of their own
    # class than to other classes more often than chance (0.1)
    d = synthetic_cifar10(500, 200, seed=2)
    x = to_float(d.train_x).flatten(1)
    xt = to_float(d.test_x).flatten(1)
    means = torch.stack([x[d.train_y == k].mean(0) for k in range(10)])
    acc = (torch.cdist(xt, means).argmin(1) == d.test_y).float().mean().item()
    assert acc > 0.3


def test_load_dataset_synthetic():
    d = load_dataset("synthetic", n_train=40, n_test=20, seed=5)
    assert torch.equal(d.train_x, synthetic_cifar10(40, 20, seed=5).train_x)
    assert d.identity.source == "synthetic"


# ----------------------------------------------------------------- normalisation


def test_to_float():
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    raw = to_float(x, normalize=False)
    torch.testing.assert_close(raw, x.double().div(255).float())
    norm = to_float(x)
    for c in range(3):
        expected = (x[:, c].double() / 255 - D.CIFAR10_MEAN[c]) / D.CIFAR10_STD[c]
        torch.testing.assert_close(norm[:, c], expected.float())
    assert norm.dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        to_float(x.float())
    with pytest.raises(ValueError, match="shape"):
        to_float(x[:, :2])


# ----------------------------------------------------------------- the real copy


REAL = resolve_data_dir() / "cifar-10-batches-py"


@pytest.mark.skipif(not REAL.is_dir(), reason=f"no CIFAR-10 copy at {REAL}")
def test_real_copy():
    d = load_cifar10(download=False)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [5000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert d.classes == D.CIFAR10_CLASSES
    ident = d.identity
    assert ident.official_checksums == (ident.source == "official")
    if ident.train_md5 == "4c06f62ccc623a7dc22ed0db7db7f19e":  # the JPEG-derived offline copy
        assert ident.source == "supplied copy"
        assert ident.test_md5 == "ae6fdc2fd3c60de94941326530317809"
    # the per-channel training mean is close to the published CIFAR-10 statistics
    mean = d.train_x[:5000].double().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(D.CIFAR10_MEAN, dtype=torch.float64), atol=0.02)


# ------------------------------------------------- the repository's data/ and make data


def test_missing_message_names_the_repository_data_folder(tmp_path, monkeypatch):
    """A notebook runs in book/chapters; the message must name <repo>/data, not ./data."""
    monkeypatch.delenv("SGDNOISE_DATA", raising=False)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    chapters = repo / "book" / "chapters"
    chapters.mkdir(parents=True)
    monkeypatch.setattr(D, "_repo_data_dir", lambda: repo / "data")
    monkeypatch.chdir(chapters)
    assert resolve_data_dir() == repo / "data"
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(download=False)
    msg = str(err.value)
    assert str((repo / "data" / "cifar-10-batches-py").resolve()) in msg
    assert "book/chapters/data" not in msg
    assert "make data" in msg
    assert "expand.py" not in msg  # no offline copy next to this repository
    (tmp_path / "shared" / "data" / "cifar10").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "cifar10" / "expand.py").write_text("")
    with pytest.raises(DataNotFoundError, match=r"\.\./shared/data/cifar10/expand\.py data/"):
        load_cifar10(download=False)


def _fake_archive(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    """A tar.gz in the official layout (tiny batches) and the md5 of its batch files."""
    import io
    import tarfile

    src = tmp_path / "src"
    write_copy(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5s = {name: hashlib.md5((src / "cifar-10-batches-py" / name).read_bytes()).hexdigest()
            for name in D.OFFICIAL_MD5}
    return buf.getvalue(), md5s


def test_fetch_verifies_and_unpacks(tmp_path, monkeypatch):
    archive, md5s = _fake_archive(tmp_path)
    monkeypatch.setattr(D, "ARCHIVE_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(D, "OFFICIAL_MD5", md5s)
    calls = []

    def fake_fetch(url, dest, timeout):
        calls.append(url)
        Path(dest).write_bytes(archive)

    root = tmp_path / "data"
    folder = D.fetch_cifar10(root, fetch=fake_fetch)
    assert calls == [D.CIFAR10_URL] and folder == root / "cifar-10-batches-py"
    ident = load_cifar10(root, download=False).identity
    assert ident.official_checksums and ident.source == "official"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py",
                                                       "cifar-10-python.tar.gz"]
    D.fetch_cifar10(root, fetch=fake_fetch)  # already in place: no second download
    assert len(calls) == 1


def test_fetch_rejects_a_wrong_archive_and_leaves_nothing(tmp_path):
    def fake_fetch(url, dest, timeout):
        Path(dest).write_bytes(b"not the archive")

    root = tmp_path / "data"
    with pytest.raises(DataCorruptError, match="c58f30108f718f92721af3b95e74349a"):
        D.fetch_cifar10(root, fetch=fake_fetch)
    assert list(root.iterdir()) == []


def test_fetch_without_network_says_what_to_do(tmp_path, capsys, monkeypatch):
    def offline(url, dest, timeout):
        raise OSError("network is unreachable (test)")

    root = tmp_path / "data"
    with pytest.raises(DataNotFoundError, match="unreachable") as err:
        D.fetch_cifar10(root, fetch=offline)
    assert "tar -xzf" in str(err.value) and list(root.iterdir()) == []
    monkeypatch.setattr(D, "_urlretrieve", offline)
    assert D.main([str(root)]) == 1
    assert "network is unreachable" in capsys.readouterr().err
    write_copy(root)
    assert D.main([str(root)]) == 0
    assert "supplied copy" in capsys.readouterr().out


def test_pool_images_uint8_rounds_window_means_and_float_keeps_dtype():
    import torch.nn.functional as F

    from sgdnoise.data import pool_images, to_float

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8)
    p = pool_images(x, 2)
    assert p.dtype == torch.uint8 and p.shape == (5, 3, 2, 2)
    window = x[0, 1, 4:8, 0:4].double().mean()
    assert int(p[0, 1, 1, 0]) == int(torch.round(window))
    xf = to_float(x).double()
    pf = pool_images(xf, 1)
    assert pf.dtype == torch.float64
    assert torch.equal(pf, F.adaptive_avg_pool2d(xf, 1))
    same = pool_images(x, 8)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="image_size must divide 8, got 3"):
        pool_images(x, 3, name="image_size")
    with pytest.raises(ValueError, match="square images"):
        pool_images(x[:, :, :4], 2)


def test_pool_dataset_pools_every_split_and_notes_it():
    from sgdnoise.data import load_dataset, pool_dataset, pool_images

    d = load_dataset("synthetic", n_train=20, n_test=10, n_val=6)
    small = pool_dataset(d, 4)
    assert small.train_x.shape == (20, 3, 4, 4) and small.val_x.shape == (6, 3, 4, 4)
    assert torch.equal(small.test_x, pool_images(d.test_x, 4))
    assert torch.equal(small.val_y, d.val_y) and small.classes == d.classes
    assert small.identity.preprocessing == "average-pooled to 4x4"
    assert small.identity.to_dict()["preprocessing"] == "average-pooled to 4x4"
    assert "preprocessing" not in d.identity.to_dict()  # the input is unchanged
    assert d.train_x.shape == (20, 3, 32, 32)
    no_val = pool_dataset(load_dataset("synthetic", n_train=20, n_test=10), 16)
    assert no_val.val_x is None and no_val.val_y is None


def test_pool_image_data_notes_the_pooling():
    from sgdnoise.data import pool_image_data, synthetic_cifar10

    d = synthetic_cifar10(20, 10, seed=0)
    small = pool_image_data(d, 8)
    assert small["train_x"].shape == (20, 3, 8, 8) and small["test_x"].dtype == torch.uint8
    assert small["identity"]["preprocessing"] == "average-pooled to 8x8"
    assert torch.equal(small["train_y"], d.train_y)


# ------------------------------------------------- issue 17: unreadable files, manifests


def test_an_unreadable_file_is_reported_in_one_line(tiny, monkeypatch):
    root, _ = tiny
    real = Path.read_bytes

    def denied(self):
        if self.name == "data_batch_4":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataNotFoundError) as err:
        load_cifar10(root, download=False)
    msg = str(err.value)
    assert "data_batch_4" in msg and "Permission denied" in msg and "\n" not in msg


def _flip_one_pixel(root: Path, name: str) -> None:
    path = root / "cifar-10-batches-py" / name
    obj = pickle.loads(path.read_bytes(), encoding="latin1")
    obj["data"] = obj["data"].copy()
    obj["data"][3, 100] ^= 1
    path.write_bytes(pickle.dumps(obj, protocol=2))


def test_make_data_records_a_manifest_and_a_changed_byte_is_found(tiny, capsys):
    root, _ = tiny
    assert D.main([str(root)]) == 0
    out = capsys.readouterr().out
    manifest = root / "cifar-10-batches-py" / D.MANIFEST_FILE
    assert manifest.is_file() and "manifest" in out
    load_cifar10(root, download=False)  # unchanged files pass the manifest
    _flip_one_pixel(root, "data_batch_2")
    with pytest.raises(DataCorruptError, match="data_batch_2") as err:
        load_cifar10(root, download=False)
    assert D.MANIFEST_FILE in str(err.value)
    assert D.main([str(root)]) == 1
    assert "data_batch_2" in capsys.readouterr().err


def test_a_known_copy_with_a_changed_pixel_is_refused_without_a_manifest(tiny, monkeypatch):
    root, written = tiny
    rows = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    known = {"name": "tiny test copy", "filename": "img_",
             "train_md5": hashlib.md5(rows.tobytes()).hexdigest(),
             "test_md5": hashlib.md5(written["test_batch"]["data"].tobytes()).hexdigest()}
    monkeypatch.setattr(D, "KNOWN_COPIES", (known,))
    assert load_cifar10(root, download=False).identity.source == "supplied copy"
    _flip_one_pixel(root, "test_batch")
    with pytest.raises(DataCorruptError, match="tiny test copy") as err:
        load_cifar10(root, download=False)
    assert known["test_md5"] in str(err.value)


def test_make_data_does_not_call_a_corrupt_copy_in_place(tiny, capsys):
    root, _ = tiny
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    assert D.main([str(root)]) == 1
    captured = capsys.readouterr()
    assert "in place" not in captured.out and "data_batch_3" in captured.err
