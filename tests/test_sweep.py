"""Tests of the batch-size sweep (sgdnoise.sweep): config validation, the CLI, records,
divergence handling, resume after SIGKILL with identical numbers, result loading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgdnoise.sweep import (
    SweepConfigError,
    load_records,
    main,
    plateau_epoch,
    record_path,
    records_provenance,
    run_sweep,
    scaled_batch_sizes,
    summarize,
    validate_sweep_config,
)

REPO = Path(__file__).resolve().parents[1]

BASE = dict(dataset="synthetic", n_train=48, n_test=16, model="cnn", width=4, norm="batch",
            batch_sizes=[16, 48], epochs=2, lr=0.05, seed=0, device="cpu", eval_batch_size=64)


def _cfg(**kw):
    c = dict(BASE)
    c.update(kw)
    return c


def _write(tmp_path, cfg, name="sweep.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _metrics(rec):
    return [{k: v for k, v in h.items() if k != "wall_time"} for h in rec["history"]]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change,key",
    [
        ({"bogus_key": 1}, "bogus_key"),
        ({"batch_sizes": [16, 64]}, "batch_sizes"),  # 64 > n_train = 48
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"model": "resnet1000"}, "model"),
        ({"epochs": 0}, "epochs"),
        ({"norm": "layer"}, "norm"),
        ({"batch_sizes": [16, 16]}, "batch_sizes"),
        ({"device": "tpu"}, "device"),
        ({"micro_batch_size": 0}, "micro_batch_size"),
    ],
)
def test_bad_config_names_the_key(change, key):
    with pytest.raises(SweepConfigError, match=f"'{key}'"):
        validate_sweep_config(_cfg(**change))


def test_missing_required_key_and_defaults():
    cfg = _cfg()
    del cfg["lr"]
    with pytest.raises(SweepConfigError, match="'lr'"):
        validate_sweep_config(cfg)
    ok = validate_sweep_config(_cfg())
    assert ok["momentum"] == 0.0 and ok["lr_scaling"] == "none" and ok["augment"] is True


def test_cifar_batch_size_bound_is_50000():
    cfg = _cfg(dataset="cifar10", n_train=None, batch_sizes=[128, 65536])
    with pytest.raises(SweepConfigError, match="batch_sizes.*50000"):
        validate_sweep_config(cfg)


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    path = _write(tmp_path, _cfg(bogus_key=1))
    proc = subprocess.run(
        [sys.executable, "-m", "sgdnoise.sweep", str(path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert proc.returncode == 2
    assert "'bogus_key'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.parametrize("change,key", [({"batch_sizes": [100]}, "batch_sizes"),
                                        ({"lr": 0}, "lr"), ({"model": "vgg"}, "model"),
                                        ({"bogus": True}, "bogus")])
def test_main_returns_2_naming_the_key(tmp_path, capsys, change, key):
    path = _write(tmp_path, _cfg(**change))
    assert main([str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_main_missing_file_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


# --------------------------------------------------------------------------- running


def test_sweep_records_and_skip(tmp_path):
    out = tmp_path / "o"
    recs = run_sweep(_cfg(), out, progress=False, order="largest-first")
    assert [r["batch_size"] for r in recs] == [48, 16]
    for b, steps in ((16, 6), (48, 2)):
        rec = json.loads(record_path(out, b).read_text())
        assert rec["status"] == "finished" and rec["steps"] == steps
        assert [h["epoch"] for h in rec["history"]] == [0, 1, 2]
        assert rec["data"]["source"] == "synthetic" and rec["data"]["train_md5"]
        for key in ("git_commit", "torch_version", "sgdnoise_version", "device"):
            assert rec["provenance"][key]
        assert rec["sweep_config"]["lr"] == 0.05
    assert not list((out / "checkpoints").glob("*.pt"))  # removed after each record
    mtime = record_path(out, 16).stat().st_mtime_ns
    again = run_sweep(_cfg(), out, progress=False)
    assert record_path(out, 16).stat().st_mtime_ns == mtime  # skipped, not rerun
    assert _metrics(again[0]) == _metrics(recs[1])
    with pytest.raises(ValueError, match="different sweep config"):
        run_sweep(_cfg(lr=0.07), out, progress=False)

    df = load_records(out)
    assert len(df) == 6 and set(df["batch_size"]) == {16, 48}
    s = summarize(df)
    assert list(s["batch_size"]) == [16, 48] and list(s["steps"]) == [6, 2]
    row = s.iloc[0]
    assert row["final_gap"] == pytest.approx(row["final_test_error"] - row["final_train_error"])
    prov = records_provenance(df)
    assert len(prov) == 1 and prov[0]["batch_sizes"] == [16, 48]


def test_diverged_run_is_recorded_and_sweep_goes_on(tmp_path):
    out = tmp_path / "o"
    recs = run_sweep(_cfg(batch_sizes=[48, 16], lr=1e12, norm="none"), out, progress=False)
    assert [r["batch_size"] for r in recs] == [48, 16]  # the second ran after the first
    assert [r["status"] for r in recs] == ["diverged", "diverged"]
    for b in (16, 48):
        rec = json.loads(record_path(out, b).read_text())
        assert rec["status"] == "diverged" and rec["diverged_at_step"] is not None
    # a rerun does not retry recorded (diverged) runs
    again = run_sweep(_cfg(batch_sizes=[48, 16], lr=1e12, norm="none"), out, progress=False)
    assert [r["status"] for r in again] == ["diverged", "diverged"]


def test_empty_results_load_as_empty_frame(tmp_path):
    df = load_records(tmp_path / "nothing")
    assert len(df) == 0 and "test_error" in df.columns
    assert len(summarize(df)) == 0 and records_provenance(df) == []


# --------------------------------------------------------------------------- resume


def _run_cli(cfg_path, out, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "sgdnoise.sweep", str(cfg_path), "--out", str(out),
         "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), **kw,
    )


def test_resume_after_sigkill_gives_identical_records(tmp_path):
    cfg = _cfg(n_train=64, batch_sizes=[8, 32], epochs=4, augment=True, momentum=0.9)
    path = _write(tmp_path, cfg)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    uninterrupted = _run_cli(path, clean)  # runs beside the one that gets killed
    proc = _run_cli(path, killed)
    ckpt = killed / "checkpoints" / "run_B00008.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not record_path(killed, 8).exists(), "the run ended before it was killed"

    resumed = _run_cli(path, killed)
    for p in (resumed, uninterrupted):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    for b in (8, 32):
        a = json.loads(record_path(killed, b).read_text())
        c = json.loads(record_path(clean, b).read_text())
        assert _metrics(a) == _metrics(c)
        assert a["steps"] == c["steps"] and a["status"] == c["status"] == "finished"
    assert json.loads(record_path(killed, 8).read_text())["resumed_from_epoch"] >= 1
    assert json.loads(record_path(clean, 8).read_text())["resumed_from_epoch"] is None


# --------------------------------------------------------------------------- helpers


def test_scaled_batch_sizes_keep_b_over_n():
    full = [128 * 2**k for k in range(9)]
    got = scaled_batch_sizes(full, 1024)
    assert got == [3, 5, 10, 21, 42, 84, 168, 336, 671]
    for b, s in zip(full, got, strict=True):
        assert abs(s / 1024 - b / 50000) <= 0.5 / 1024
    assert scaled_batch_sizes([128, 32768], 50000) == [128, 32768]
    with pytest.raises(ValueError, match="n_train"):
        scaled_batch_sizes([128, 256], 100)


def test_plateau_epoch():
    assert plateau_epoch([0.9, 0.5, 0.3, 0.29, 0.295], tol=0.02) == 2
    assert plateau_epoch([0.9, 0.9, 0.9]) == 0
    assert plateau_epoch([0.9, 0.8, 0.7, 0.6]) == 3
    with pytest.raises(ValueError):
        plateau_epoch([])


def test_design_table_closed_forms():
    from sgdnoise.sweep import design_table

    t = design_table([128, 32768], 50000, lr=0.1, epochs=10,
                     reference_batch_sizes=[128, 32768])
    assert list(t["steps_per_epoch"]) == [391, 2]
    assert list(t["total_steps"]) == [3910, 20]
    assert t["sde_time"].iloc[0] == pytest.approx(0.1 * 3910)
    assert t["fpc"].iloc[1] == pytest.approx((50000 - 32768) / 49999)
    assert t["temperature"].iloc[0] == pytest.approx(0.1 * (50000 - 128) / (128 * 49999))


def test_sweep_findings_follow_the_numbers():
    import pandas as pd

    from sgdnoise.sweep import sweep_findings

    s = pd.DataFrame({
        "batch_size": [4, 16, 64], "status": ["finished"] * 3, "epochs": [5] * 3,
        "final_train_error": [0.05, 0.08, 0.60], "final_test_error": [0.30, 0.40, 0.65],
        "train_plateau_epoch": [5, 4, 1], "test_plateau_epoch": [5, 3, 1],
    })
    s["final_gap"] = s["final_test_error"] - s["final_train_error"]
    f = sweep_findings(s, delta=0.05)
    assert f["best_b"] == 4 and f["test_degrades_from_b"] == 16
    assert f["train_fails_from_b"] == 64 and f["max_gap_b"] == 16
    assert f["largest_b_train_plateau_epoch"] == 1 and f["n_diverged"] == 0
    with pytest.raises(ValueError):
        sweep_findings(s.iloc[:0])


def test_summarize_averages_over_seeds():
    import pandas as pd

    from sgdnoise.sweep import summarize

    rows = []
    for seed, final_test in ((0, 0.30), (1, 0.40)):
        for epoch, (tr, te) in enumerate([(0.9, 0.9), (0.5, 0.6), (0.2, final_test)]):
            rows.append({"batch_size": 64, "epoch": epoch, "step": 10 * epoch, "b_over_n": 0.1,
                         "train_error": tr, "test_error": te, "wall_time": 1.0 + epoch,
                         "status": "finished", "seed": seed})
    summary = summarize(pd.DataFrame(rows))
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["n_seeds"] == 2
    assert row["final_test_error"] == pytest.approx(0.35)
    assert row["final_gap"] == pytest.approx(0.15)
    assert row["final_test_error_sd"] == pytest.approx(np.std([0.30, 0.40], ddof=1))
    assert row["steps"] == 20
