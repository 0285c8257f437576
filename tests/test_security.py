"""Probes of what the package and its scripts trust (see SECURITY.md): files they read are
data, never code; names that become paths stay inside their folder; configuration files
hold plain, finite, bounded values. Each probe here ran code, wrote outside its folder or
was accepted before the fix.

Crafted pickles use ``open(marker, "w")`` as their payload: harmless, and it leaves a file
behind exactly when the payload ran."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_data import write_copy
from test_sweep import TINY, _env, _plan

from sgdnoise import data as D
from sgdnoise.sweep import PlanError, load_plan, main, validate_plan
from sgdnoise.train import TrainConfig, train

torch.set_num_threads(1)


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny_data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randint(0, 255, (40, 3, 8, 8), generator=g, dtype=torch.int64).to(torch.uint8)
    return {"train_x": x[:32], "train_y": y[:32], "test_x": x[32:], "test_y": y[32:]}


def _cfg(**kw):
    base = dict(model="cnn", width=4, norm="none", batch_size=8, epochs=1, lr=0.1,
                augment=False, seed=0, eval_batch_size=16, amp=False, channels_last=False)
    return TrainConfig(**{**base, **kw})


# --------------------------------------------------------------------------- checkpoints


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run.pt"
    torch.save({"format": "sgdnoise.train.checkpoint/2", "config": _Payload(marker)}, ckpt)
    with pytest.raises(ValueError, match="run.pt") as err:
        train(_cfg(), _tiny_data(), checkpoint_path=ckpt, progress=False)
    assert not marker.exists(), "loading the checkpoint ran code"
    assert "weights_only" in str(err.value) or "refused" in str(err.value)


def test_real_checkpoints_still_load_with_weights_only(tmp_path):
    ckpt = tmp_path / "run.pt"
    train(_cfg(momentum=0.5, augment=True), _tiny_data(), checkpoint_path=ckpt,
          progress=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["step"] == 4 and state["format"].startswith("sgdnoise.train.checkpoint")


def test_sweep_refuses_a_crafted_checkpoint_in_out(tmp_path, capsys):
    plan = _plan(arms={"A": {"batch_sizes": [16]}}, priority=[])
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    out = tmp_path / "out"
    marker = tmp_path / "pwned"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": "sgdnoise.train.checkpoint/2", "x": _Payload(marker)},
               out / "checkpoints" / "A_B00016_s0.pt")
    assert main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), "resuming ran code from the checkpoint"
    assert "A_B00016_s0.pt" in err and "Traceback" not in err


# --------------------------------------------------------------------------- CIFAR-10 pickles


def test_crafted_batches_meta_is_refused_without_running_its_code(tmp_path):
    write_copy(tmp_path)
    marker = tmp_path / "pwned"
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": _Payload(marker)}, protocol=2))
    with pytest.raises(D.DataCorruptError, match="batches.meta") as err:
        D.load_cifar10(tmp_path, download=False)
    assert not marker.exists(), "reading batches.meta ran code"
    assert "io.open" in str(err.value) and "refused" in str(err.value)


def test_crafted_batch_file_is_refused_without_running_its_code(tmp_path):
    write_copy(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    with pytest.raises(D.DataCorruptError, match="data_batch_2"):
        D.load_cifar10(tmp_path, download=False)
    assert not marker.exists(), "reading a batch file ran code"


def test_restricted_unpickler_reads_numpy_arrays_of_every_protocol(tmp_path):
    import numpy as np

    obj = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2],
           "names": ("a", b"b"), "x": 1.5}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        got = D.restricted_loads(pickle.dumps(obj, protocol=protocol), source="probe")
        assert np.array_equal(got[b"data"], obj[b"data"]) and got["labels"] == [1, 2]


# --------------------------------------------------------------------------- plan names


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".hidden", "x y", "a..b",
                                  "", "-dash", "name\n"])
def test_plan_names_are_path_safe(name):
    with pytest.raises(PlanError, match="'name'"):
        validate_plan(_plan(name=name))


def test_shipped_style_plan_names_are_accepted():
    for name in ("ch08", "ch08-laptop", "ch09_test", "v1.2"):
        assert validate_plan(_plan(name=name)).name == name


# --------------------------------------------------------------------------- YAML files


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


def test_python_tag_in_a_plan_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, yaml.safe_dump(TINY) + f"extra: !!python/object/apply:os.system "
                                                   f"['touch {marker}']\n")
    with pytest.raises(PlanError) as err:
        load_plan(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "line" in msg and "python/object" in msg
    assert not marker.exists()


def test_duplicate_keys_are_refused_at_any_depth(tmp_path):
    text = yaml.safe_dump(TINY, sort_keys=False)
    twice = text.replace("arms:\n", "arms:\n  A:\n    batch_sizes: [48]\n", 1)
    path = _write(tmp_path, twice)
    assert twice.count("  A:\n") == 2
    with pytest.raises(PlanError, match="'arms.A'") as err:
        load_plan(path)
    assert "twice" in str(err.value) or "more than once" in str(err.value)
    nested = text.replace("lr: 0.05", "lr: 0.05\n  lr: 0.5")
    with pytest.raises(PlanError, match="'defaults.lr'"):
        load_plan(_write(tmp_path, nested))


@pytest.mark.parametrize("literal", [".inf", "-.inf", ".nan", "1.0e+999"])
def test_non_finite_numbers_are_refused_in_plans(tmp_path, literal):
    path = _write(tmp_path, yaml.safe_dump(TINY, sort_keys=False).replace(
        "lr: 0.05", f"lr: {literal}"))
    with pytest.raises(PlanError, match="'defaults.lr'") as err:
        load_plan(path)
    assert "finite" in str(err.value) and str(path) in str(err.value)


def test_cli_reports_a_yaml_syntax_error_in_one_line(tmp_path):
    path = _write(tmp_path, "name: x\narms: {A: [\n")
    proc = subprocess.run([sys.executable, "-m", "sgdnoise.sweep", str(path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "line" in lines[0], proc.stderr


def test_security_md_names_what_the_code_does():
    text = (Path(__file__).resolve().parents[1] / "SECURITY.md").read_text()
    for needle in ("weights_only=True", "restricted_loads", "sgdnoise.yamlio.load_yaml",
                   D.MANIFEST_FILE, "tests/test_security.py", "Report a vulnerability"):
        assert needle in text, needle
    from sgdnoise import yamlio

    assert callable(D.restricted_loads) and callable(yamlio.load_yaml)
