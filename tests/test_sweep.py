"""Tests of plans and the sweep (sgdnoise.sweep): plan validation (keys from TrainConfig,
messages naming key and value, exit code 2), expansion in priority order, records and their
schema, skip-if-recorded, shards, the time budget, resume after SIGKILL, loading records
(plan and pilot), and the summary helpers."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sgdnoise.sweep import (
    PlanError,
    estimate_run_seconds,
    load_plan,
    load_records,
    load_sharpness,
    main,
    parse_shard,
    record_path,
    run_plan,
    run_sweep,
    shard_runs,
    train_config_fields,
    validate_plan,
)
from sgdnoise.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
PLAN_TEST = REPO / "book" / "params" / "ch08_resnet_sweep" / "plan_test.yaml"
PLAN_FULL = REPO / "book" / "params" / "ch08_resnet_sweep" / "plan_full.yaml"
PLAN_MIDSCALE = REPO / "book" / "params" / "ch08_resnet_sweep" / "plan_midscale.yaml"
PILOT = REPO / "data" / "results" / "ch08_pilot"

TINY = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "n_train": 48, "n_test": 16, "data_seed": 0},
    "defaults": {"model": "cnn", "width": 4, "norm": "batch", "drop_last": True,
                 "eval_points": 3, "eval_batch_size": 64, "device": "cpu", "amp": False,
                 "channels_last": False, "epochs": 2, "lr": 0.05},
    "arms": {
        "A": {"batch_sizes": [16, 48], "seeds": [0, 1]},
        "D": {"batch_sizes": [48], "config": {"max_steps": 3, "sharpness_every": 2,
                                              "sharpness_n": 8, "sharpness_iters": 4}},
    },
    "priority": [{"arm": "A", "seeds": [0]}, {"arm": "D"}],
}


def _plan(**changes):
    p = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = p
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is _DEL:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return p


_DEL = object()


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _metrics(rec):
    return [{k: v for k, v in h.items() if k != "wall_time"} for h in rec["history"]]


# --------------------------------------------------------------------------- validation


def test_config_keys_are_the_train_config_fields():
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"batch_size", "seed"}
    assert set(train_config_fields()) == names
    plan = validate_plan(_plan(defaults__ghost_batch_size=8, defaults__eval_train_n=12))
    assert all(r.config.ghost_batch_size == 8 for r in plan.runs)


@pytest.mark.parametrize(
    "change,key,value",
    [
        ({"defaults__bogus": 1}, "defaults.bogus", "1"),
        ({"arms__A__config": {"lr": -0.1}}, "arms.A.config.lr", "-0.1"),
        ({"arms__A__batch_sizes": [16, 64]}, "arms.A.batch_sizes[1]", "64"),
        ({"arms__A__batch_sizes": [16, 16]}, "arms.A.batch_sizes", "[16, 16]"),
        ({"arms__A__seeds": [-1]}, "arms.A.seeds", "-1"),
        ({"defaults__model": "vgg"}, "defaults.model", "vgg"),
        ({"defaults__norm": "layer"}, "defaults.norm", "layer"),
        ({"defaults__device": "tpu"}, "defaults.device", "tpu"),
        ({"arms__A__config": {"epochs": 0}}, "arms.A.config.epochs", "0"),
        ({"arms__A__config": {"ghost_batch_size": 4, "norm": "group"}},
         "arms.A.config.ghost_batch_size", "group"),
        ({"data__dataset": "mnist"}, "data.dataset", "mnist"),
        ({"data__image_size": 12}, "data.image_size", "12"),
        ({"data__image_size": True}, "data.image_size", "True"),
        ({"priority": [{"arm": "Z"}]}, "priority[0].arm", "Z"),
        ({"priority": [{"arm": "A", "seeds": [7]}]}, "priority[0].seeds", "7"),
        ({"priority": [{"arm": "A", "batch_sizes": [16, 32]}]}, "priority[0].batch_sizes",
         "32"),
        ({"priority": [{"arm": "A", "batch_sizes": []}]}, "priority[0].batch_sizes", "[]"),
        ({"arms__bad name": {"batch_sizes": [16]}}, "arms.bad name", "bad name"),
        ({"arms__A__equal_steps": {"batch_size": 16, "epochs": 0}},
         "arms.A.equal_steps.epochs", "0"),
    ],
)
def test_bad_plan_names_key_and_value(change, key, value):
    with pytest.raises(PlanError) as info:
        validate_plan(_plan(**change))
    msg = str(info.value)
    assert f"'{key}'" in msg and value in msg


def test_cuda_device_is_refused_without_cuda_but_dry_run_accepts_it():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(PlanError, match="'defaults.device'"):
        validate_plan(_plan(defaults__device="cuda"))
    assert len(validate_plan(_plan(defaults__device="cuda"), check_device=False).runs) == 5


def test_expansion_follows_priority_then_arm_order():
    plan = validate_plan(_plan())
    assert [r.run_id for r in plan.runs] == [
        "A_B00016_s0", "A_B00048_s0", "D_B00048_s0", "A_B00016_s1", "A_B00048_s1"]
    d = plan.runs[2].config
    assert d.max_steps == 3 and d.sharpness_every == 2 and d.eval_subset_seed == 0


def test_priority_entry_can_take_a_subset_of_batch_sizes():
    plan = validate_plan(_plan(priority=[{"arm": "A", "seeds": [1], "batch_sizes": [48]},
                                         {"arm": "D"}, {"arm": "A", "batch_sizes": [16]}]))
    assert [r.run_id for r in plan.runs] == [
        "A_B00048_s1", "D_B00048_s0", "A_B00016_s0", "A_B00016_s1", "A_B00048_s0"]


def test_equal_steps_is_the_steps_of_the_reference_batch():
    plan = validate_plan(_plan(arms__C={"batch_sizes": [16, 24],
                                        "equal_steps": {"batch_size": 8, "epochs": 3}}))
    c = [r for r in plan.runs if r.arm == "C"]
    assert [r.config.max_steps for r in c] == [3 * (48 // 8)] * 2  # drop_last: floor
    capped = validate_plan(_plan(arms__C={"batch_sizes": [16], "equal_steps": {
        "batch_size": 8, "epochs": 3, "max_steps_cap": 10}}))
    assert [r.config.max_steps for r in capped.runs if r.arm == "C"] == [10]


def test_shipped_plans_validate():
    full = load_plan(PLAN_FULL, check_device=False)
    ids = [r.run_id for r in full.runs]
    # issue 9: A seed 0, B seed 0, D, C seed 0, then further seeds
    assert ids[0] == "A_B00128_s0" and ids[9] == "B_B00128_s0"
    assert ids[15:17] == ["D-plain_B32768_s0", "D-scaled_B32768_s0"]
    assert ids[17] == "C_B00512_s0"
    assert all(r.config.drop_last and r.config.ghost_batch_size == 128 for r in full.runs)
    assert {r.config.max_steps for r in full.runs if r.arm == "C"} == {30 * (50000 // 512)}
    assert all(r.config.sharpness_every == 50 and r.config.max_steps == 250
               for r in full.runs if r.arm.startswith("D"))
    assert all(r.config.eval_points == 25 and r.config.eval_train_n == 10000
               for r in full.runs)
    assert len(load_plan(PLAN_TEST).runs) == 9


def test_midscale_plan_keeps_the_full_plans_ratios_and_puts_the_decisive_runs_first():
    mid, full = load_plan(PLAN_MIDSCALE), load_plan(PLAN_FULL, check_device=False)
    assert mid.data["n_train"] == 10000 and mid.data["image_size"] == 16
    for arm in ("A", "B", "C", "D-plain", "D-scaled"):
        ratios = sorted({r.batch_size / 10000 for r in mid.runs if r.arm == arm})
        target = sorted({r.batch_size / 50000 for r in full.runs if r.arm == arm})
        assert len(ratios) == len(target)
        assert all(abs(m / f - 1) < 0.02 for m, f in zip(ratios, target, strict=True)), arm
    # the BN batch of arm A is the micro-batch: whole micro-batches at every B
    assert all(r.batch_size % 832 == 0 or r.batch_size < 832 for r in mid.runs)
    assert all(r.config.ghost_batch_size is None for r in mid.runs if r.arm == "A")
    first = [(r.arm, r.batch_size, r.seed) for r in mid.runs[:36]]
    assert first[:9] == [("A", b, 0) for b in (26, 52, 104, 208, 416, 832, 1664, 3328, 6656)]
    pairs_a = {("A", b, s) for b in (26, 832, 1664, 3328, 6656) for s in range(4)}
    pairs_b = {("B", b, s) for b in (104, 832, 1664) for s in range(4)}
    # 3 seeds of every decisive pair, then the 4th seeds
    assert set(first[9:28]) | set(first[:9]) >= {x for x in pairs_a | pairs_b if x[2] < 3}
    assert set(first[28:36]) == {x for x in pairs_a | pairs_b if x[2] == 3}


def test_parse_shard_and_partition():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "a/b", "1", "0/0"):
        with pytest.raises(PlanError, match="shard"):
            parse_shard(bad)
    runs = list(range(7))
    parts = [shard_runs(runs, i, 3) for i in range(3)]
    assert sorted(x for p in parts for x in p) == runs and parts[0] == [0, 3, 6]


def test_cli_bad_plan_exits_2_without_traceback(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_plan(defaults__bogus_key=1)))
    proc = subprocess.run(
        [sys.executable, "-m", "sgdnoise.sweep", str(path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2
    assert "'defaults.bogus_key'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.parametrize("args,needle", [(["--shard", "2/2"], "--shard"),
                                          (["--budget", "-5"], "--budget")])
def test_main_bad_arguments_exit_2(tmp_path, capsys, args, needle):
    assert main([str(PLAN_TEST), "--out", str(tmp_path / "o"), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_main_missing_file_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_dry_run_lists_runs_and_trains_nothing(tmp_path, capsys):
    assert main([str(PLAN_FULL), "--out", str(tmp_path / "o"), "--dry-run",
                 "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    # shard 1/2 holds the odd positions: A_B00256_s0 (1), B_B00128_s0 (9), not A_B00128_s0
    assert "A_B00128_s0" not in out and "A_B00256_s0" in out and "B_B00128_s0" in out
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- running


def test_records_schema_skip_and_no_absolute_paths(tmp_path):
    out = tmp_path / "o"
    recs = run_plan(_plan(), out)
    assert [r["run"]["run_id"] for r in recs] == [
        "A_B00016_s0", "A_B00048_s0", "D_B00048_s0", "A_B00016_s1", "A_B00048_s1"]
    rec = json.loads(record_path(out, "A_B00016_s0").read_text())
    assert rec["run"] == {"arm": "A", "batch_size": 16, "seed": 0, "run_id": "A_B00016_s0"}
    assert rec["status"] == "finished" and rec["steps"] == 2 * 3
    assert rec["source"] == "tiny" and rec["config"]["drop_last"] is True
    assert [h["step"] for h in rec["history"]] == [0, 1, 2, 6]
    assert rec["img_per_s"] > 0 and rec["wall_time_s"] > 0
    for key in ("git_commit", "device", "torch_version", "python_version", "created_utc"):
        assert rec["provenance"][key]
    assert "path" not in rec["data"] and rec["data"]["source"] == "synthetic"
    text = record_path(out, "A_B00016_s0").read_text()
    assert str(tmp_path) not in text and str(REPO) not in text and str(Path.home()) not in text
    d = json.loads(record_path(out, "D_B00048_s0").read_text())
    assert [s["step"] for s in d["sharpness"]] == [0, 2, 3]
    assert not list((out / "checkpoints").glob("*.pt"))
    mtime = record_path(out, "A_B00016_s0").stat().st_mtime_ns
    again = run_plan(_plan(), out)
    assert record_path(out, "A_B00016_s0").stat().st_mtime_ns == mtime  # never rerun
    assert [_metrics(a) for a in again] == [_metrics(r) for r in recs]
    with pytest.raises(ValueError, match="different config"):
        run_plan(_plan(defaults__lr=0.07), out)

    df = load_records(out)
    # evaluations: A at B=16 (6 steps) 0, 1, 2, 6; at B=48 (2 steps) 0, 1, 2; D 0, 1, 2, 3
    assert len(df) == 2 * 4 + 2 * 3 + 4
    assert set(df["source"]) == {"tiny"} and set(df["arm"]) == {"A", "D"}
    assert df["param_distance"].iloc[-1] > 0
    sh = load_sharpness(out)
    assert list(sh["step"]) == [0, 2, 3] and (sh["lambda_max"] > 0).all()


def test_image_size_pools_the_data_and_the_records_say_so(tmp_path):
    out = tmp_path / "o"
    plan = _plan(data__image_size=8, arms={"A": {"batch_sizes": [16]}}, priority=_DEL)
    rec = run_plan(plan, out)[0]
    assert rec["data"]["preprocessing"] == "average-pooled to 8x8"
    assert rec["data"]["n_train"] == 48 and rec["status"] == "finished"
    # the same run id trained on 32x32 images is another run: refused, not mixed
    with pytest.raises(ValueError, match="different config"):
        run_plan(_plan(arms={"A": {"batch_sizes": [16]}}, priority=_DEL), out)
    full = run_plan(_plan(arms={"A": {"batch_sizes": [16]}}, priority=_DEL), tmp_path / "f")
    assert "preprocessing" not in full[0]["data"]
    assert _metrics(full[0]) != _metrics(rec)


def test_two_shards_write_the_records_of_one_process(tmp_path):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    run_plan(_plan(), one)
    for i in range(2):
        run_plan(_plan(), sharded, shard=(i, 2))
    names = sorted(p.name for p in one.glob("*.json"))
    assert names == sorted(p.name for p in sharded.glob("*.json")) and len(names) == 5
    for name in names:
        a = json.loads((one / name).read_text())
        b = json.loads((sharded / name).read_text())
        assert _metrics(a) == _metrics(b) and a["config"] == b["config"]
        assert [s["lambda_max"] for s in a["sharpness"]] == [s["lambda_max"]
                                                             for s in b["sharpness"]]


def test_budget_runs_the_highest_priority_runs_that_fit(tmp_path):
    est = {"A_B00016_s0": 5.0, "A_B00048_s0": 1e6, "D_B00048_s0": 5.0,
           "A_B00016_s1": 1e6, "A_B00048_s1": 5.0}
    log = []
    recs = run_plan(_plan(), tmp_path / "o", budget_s=1000.0,
                    estimate=lambda r: est[r.run_id], log=log.append)
    assert [r["run"]["run_id"] for r in recs] == ["A_B00016_s0", "D_B00048_s0",
                                                   "A_B00048_s1"]
    assert sum("not started" in m for m in log) == 2


def test_budget_with_measured_throughput(tmp_path):
    out = tmp_path / "o"
    assert run_plan(_plan(), out, budget_s=1e-3) == []  # nothing fits in a millisecond
    assert not list(out.glob("*.json"))
    recs = run_plan(_plan(), out, budget_s=600.0)
    assert len(recs) == 5


def test_estimate_run_seconds_closed_form():
    cfg = TrainConfig(batch_size=10, epochs=2, drop_last=True, eval_points=None,
                      eval_train_n=20, bn_recompute=True, sharpness_n=5, sharpness_iters=4)
    probe = {"step_s": 0.5, "eval_s_per_example": 0.01, "setup_s": 3.0}
    # 100 examples: 10 steps/epoch, 20 steps; evaluations at 0, 10, 20; one sharpness
    want = 3.0 + 20 * 0.5 + 3 * (2 * 20 + 30) * 0.01 + 1 * 4 * 2 * 0.5 * 5 / 10
    assert estimate_run_seconds(cfg, 100, 30, probe) == pytest.approx(want)


def test_legacy_flat_config_still_runs(tmp_path):
    cfg = {"dataset": "synthetic", "n_train": 48, "n_test": 16, "model": "cnn", "width": 4,
           "norm": "none", "batch_sizes": [16, 48], "epochs": 1, "lr": 0.05, "seed": 0,
           "device": "cpu", "eval_batch_size": 64, "amp": False}
    recs = run_sweep(cfg, tmp_path / "o", order="largest-first")
    assert [r["run"]["batch_size"] for r in recs] == [48, 16]
    with pytest.raises(PlanError, match="'bogus'"):
        run_sweep({**cfg, "bogus": 1}, tmp_path / "o")


# --------------------------------------------------------------------------- resume


def _run_cli(plan_path, out):
    return subprocess.Popen(
        [sys.executable, "-m", "sgdnoise.sweep", str(plan_path), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())


def test_resume_after_sigkill_gives_identical_records(tmp_path):
    plan = _plan(data__n_train=64, arms={"A": {"batch_sizes": [8, 32]}},
                 defaults__epochs=4, defaults__augment=True, defaults__momentum=0.9,
                 defaults__eval_points=6, priority=_DEL)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    uninterrupted = _run_cli(path, clean)
    proc = _run_cli(path, killed)
    ckpt = killed / "checkpoints" / "A_B00008_s0.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not record_path(killed, "A_B00008_s0").exists(), "the run ended before the kill"
    resumed = _run_cli(path, killed)
    for p in (resumed, uninterrupted):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    for rid in ("A_B00008_s0", "A_B00032_s0"):
        a = json.loads(record_path(killed, rid).read_text())
        c = json.loads(record_path(clean, rid).read_text())
        assert _metrics(a) == _metrics(c) and a["steps"] == c["steps"]
        assert a["status"] == c["status"] == "finished"
    assert json.loads(record_path(killed, "A_B00008_s0").read_text())["resumed_from_step"] > 0
    assert json.loads(record_path(clean, "A_B00008_s0").read_text())["resumed_from_step"] is None


# --------------------------------------------------------------------------- reading records


def test_pilot_records_load_as_arm_pilot():
    df = load_records(PILOT)
    assert set(df["arm"]) == {"pilot"} and set(df["source"]) == {"pilot"}
    assert sorted(df["seed"].unique()) == [0, 1]
    assert df["batch_size"].nunique() == 9 and df["run_id"].nunique() == 18
    assert len(df) == 18 * 11  # epochs 0..10
    row = df[(df["batch_size"] == 128) & (df["seed"] == 0)].iloc[-1]
    assert row["epoch"] == 10 and row["examples_seen"] == 10 * 50000
    assert row["step"] == 3910 and row["lr0"] == 0.1 and row["device"] == "cuda: NVIDIA H200"
    assert len(load_sharpness(PILOT)) == 0
    for f in PILOT.rglob("*.json"):  # no absolute path of any machine
        assert "/work/" not in f.read_text() and "/home/" not in f.read_text()


def test_empty_results_load_as_empty_frames(tmp_path):
    df = load_records(tmp_path / "nothing")
    assert len(df) == 0 and "test_error" in df.columns and "arm" in df.columns
    assert len(load_sharpness(tmp_path)) == 0


# --------------------------------------------------------------------------- helpers


def test_gpu_run_script_on_cpu_packs_new_records_into_one_tar(tmp_path):
    import tarfile

    records, out = tmp_path / "records", tmp_path / "out"
    records.mkdir()
    (records / "README.md").write_text("kept\n")
    env = {**_env(), "PLAN": str(PLAN_TEST), "RECORDS": str(records), "OUT": str(out),
           "BUDGET": "900", "SHARD": "0/4", "PYTHON": sys.executable,
           "SGDNOISE_GIT_COMMIT": "abc1234"}
    script = REPO / "book" / "params" / "ch08_resnet_sweep" / "gpu_run.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert sorted(os.listdir(out)) == ["ch08_records.tar"]
    with tarfile.open(out / "ch08_records.tar") as tar:
        names = sorted(n for n in tar.getnames() if n.endswith(".json"))
        logs = [n for n in tar.getnames() if "sessions/session_" in n]
    # shard 0/4 of plan_test: positions 0, 4, 8
    assert names == ["./A_B00008_s0.json", "./A_B00032_s1.json", "./D-plain_B00064_s0.json"]
    assert len(logs) == 1 and "D-plain_B00064_s0" in proc.stdout
    rec = json.loads((records / "A_B00008_s0.json").read_text())
    assert rec["provenance"]["git_commit"] != "unknown"
    # a second session, 3 processes sharing the device, packs only the 6 runs not recorded
    env2 = {**env, "CONCURRENT": "3", "OUT": str(tmp_path / "out2")}
    env2.pop("SHARD")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env2,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "6 new record(s)" in proc.stdout and "[shard 2/3]" in proc.stdout
    with tarfile.open(tmp_path / "out2" / "ch08_records.tar") as tar:
        again = sorted(n for n in tar.getnames() if n.endswith(".json"))
    assert len(again) == 6 and not set(again) & set(names)
    assert len(list(records.glob("*.json"))) == 9


def test_git_commit_falls_back_to_the_environment(monkeypatch):
    import sgdnoise.provenance
    from sgdnoise import sweep

    monkeypatch.setattr(sgdnoise.provenance, "git_commit", lambda path=None: "unknown")
    monkeypatch.setenv("SGDNOISE_GIT_COMMIT", "deadbeef")
    assert sweep._git_commit() == "deadbeef"
    monkeypatch.delenv("SGDNOISE_GIT_COMMIT")
    assert sweep._git_commit() == "unknown" or (REPO / "GIT_COMMIT").is_file()


# --------------------------------------------------------------------------- noise arms


NOISY = {"batch_sizes": [24, 48], "seeds": [0],
         "config": {"norm": "group", "momentum": 0.9, "weight_decay": 0.001},
         "noise": {"kind": "subsampled", "matched_small_batch": 8, "num_samples": 6}}


@pytest.mark.parametrize(
    "noise,key,value",
    [
        ("subsampled", "arms.N.noise", "'subsampled'"),
        ({**NOISY["noise"], "temperature": 0.1}, "arms.N.noise.temperature", "0.1"),
        ({**NOISY["noise"], "kind": "gaussian"}, "arms.N.noise.kind", "gaussian"),
        ({**NOISY["noise"], "kind": "none"}, "arms.N.noise.kind", "none"),
        ({**NOISY["noise"], "injection_scale": 0.1}, "arms.N.noise",
         "['injection_scale', 'matched_small_batch']"),
        ({"kind": "subsampled"}, "arms.N.noise", "neither"),
        ({"kind": "ggn", "injection_scale": -1.0}, "arms.N.noise.injection_scale", "-1.0"),
        ({"kind": "ggn", "injection_scale": True}, "arms.N.noise.injection_scale", "True"),
        ({**NOISY["noise"], "matched_small_batch": 32}, "arms.N.noise.matched_small_batch",
         "32"),
        ({**NOISY["noise"], "num_samples": 1}, "arms.N.noise.num_samples", "1"),
        ({**NOISY["noise"], "lanczos_steps": 0}, "arms.N.noise.lanczos_steps", "0"),
        ({**NOISY["noise"], "moment_probes": 0}, "arms.N.noise.moment_probes", "0"),
    ],
)
def test_bad_noise_section_names_key_and_value(noise, key, value):
    with pytest.raises(PlanError) as info:
        validate_plan(_plan(arms__N={**NOISY, "noise": noise}))
    msg = str(info.value)
    assert f"'{key}'" in msg and value in msg


def test_noise_needs_independent_examples_and_no_nesterov():
    with pytest.raises(PlanError, match=r"'arms.N.noise'.*norm='batch' \(from defaults.norm\)"):
        validate_plan(_plan(arms__N={**NOISY, "config": {}}))
    with pytest.raises(PlanError, match=r"'arms.N.noise'.*nesterov.*arms.N.config.nesterov"):
        validate_plan(_plan(arms__N={**NOISY, "config": {**NOISY["config"],
                                                          "nesterov": True}}))


def test_noise_arm_expands_with_the_matched_scale_of_each_batch_size():
    from sgdnoise.noise import matched_injection_scale
    from sgdnoise.sweep import NoiseSpec

    plan = validate_plan(_plan(arms__N=NOISY))
    noisy = {r.run_id: r.noise for r in plan.runs if r.arm == "N"}
    assert noisy == {
        "N_B00024_s0": NoiseSpec("subsampled", matched_injection_scale(8, 24, num_examples=48),
                                 8, 6, 10, 4),
        "N_B00048_s0": NoiseSpec("subsampled", matched_injection_scale(8, 48, num_examples=48),
                                 8, 6, 10, 4)}
    assert all(r.noise is None for r in plan.runs if r.arm != "N")
    fixed = validate_plan(_plan(arms__N={**NOISY, "noise": {
        "kind": "hessian", "injection_scale": 0.25, "num_samples": None,
        "moment_probes": None, "lanczos_steps": 3}}))
    spec = next(r.noise for r in fixed.runs if r.arm == "N")
    assert spec == NoiseSpec("hessian", 0.25, None, None, 3, None)


def test_cli_bad_noise_plan_exits_2(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_plan(arms__N={**NOISY, "noise": {"kind": "lol"}})))
    assert main([str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert not (tmp_path / "o").exists()


PLAN_CH09_TEST = REPO / "book" / "params" / "ch09_anisotropic_noise" / "plan_test.yaml"
PLAN_CH09_FULL = REPO / "book" / "params" / "ch09_anisotropic_noise" / "plan_full.yaml"


def test_ch09_plans_validate_and_the_full_plan_puts_one_seed_of_each_arm_first():
    full = load_plan(PLAN_CH09_FULL, check_device=False)
    arms = {r.arm for r in full.runs}
    first = full.runs[:len(arms)]
    assert len(full.runs) == 36
    # the first runs: seed 0 of every equal-epochs arm (the equal-steps arms come last)
    eq_epochs = {r.arm for r in full.runs if r.config.max_steps is None}
    assert [r.seed for r in first[:len(eq_epochs)]] == [0] * len(eq_epochs)
    assert {r.arm for r in first[:len(eq_epochs)]} == eq_epochs
    assert all(r.config.max_steps is not None for r in full.runs[-6:])
    assert all(r.config.norm == "group" and r.config.model == "resnet34"
               for r in full.runs)
    kinds = {r.noise.kind for r in full.runs if r.noise is not None}
    assert kinds == {"isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian",
                     "ggn"}
    test = load_plan(PLAN_CH09_TEST)
    assert {r.noise.kind for r in test.runs if r.noise is not None} == kinds


def test_dry_run_of_a_noise_plan_shows_the_noise(tmp_path, capsys):
    assert main([str(PLAN_CH09_FULL), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan 'ch09': 36 runs" in out
    assert "LB-hessian_B12800_s0" in out and "hessian s=0.007735 M=256 k=10" in out


def test_noisy_record_holds_the_settings_and_equals_training_with_noise_config(tmp_path):
    """A noisy run of the sweep = train(...) with chapter 9's NoiseConfig optimizer factory
    (same seed, same numbers); a plain run's record has no noise section."""
    from sgdnoise.chapters.ch09_anisotropic_noise import NoiseConfig
    from sgdnoise.data import load_dataset
    from sgdnoise.train import train

    spec = _plan(arms={"N": {**NOISY, "batch_sizes": [24], "noise": {
        "kind": "hessian", "matched_small_batch": 8, "num_samples": 6, "lanczos_steps": 3}},
        "M": {**NOISY, "batch_sizes": [24], "noise": {
            "kind": "isotropic", "injection_scale": 0.05, "num_samples": 8,
            "moment_probes": 2}},
        "P": {"batch_sizes": [24], "config": {"norm": "group"}}}, priority=[])
    plan = validate_plan(spec)
    recs = {r["run"]["arm"]: r for r in run_plan(plan, tmp_path / "o")}
    assert "noise" not in recs["P"] and "noise_seconds" not in recs["P"]["timing"]
    data = load_dataset("synthetic", n_train=48, n_test=16, seed=0)
    for run in plan.runs:
        if run.noise is None:
            continue
        rec = recs[run.arm]
        assert rec["noise"] == run.noise.to_dict()
        assert rec["timing"]["noise_seconds"] > 0
        n = run.noise
        nc = NoiseConfig(run.arm, n.kind, run.batch_size, temperature=n.injection_scale,
                         num_samples=n.num_samples, lanczos_steps=n.lanczos_steps,
                         moment_probes=n.moment_probes)
        cfg = run.config
        direct = train(cfg, data, progress=False, optimizer_factory=nc.optimizer_factory(
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed))
        assert _metrics(rec) == [{k: v for k, v in h.items() if k != "wall_time"}
                                 for h in direct.history]
    df = load_records(tmp_path / "o")
    last = df.groupby("run_id").tail(1).set_index("arm")
    assert last.loc["P", "noise_kind"] == "none" and last.loc["P", "injection_scale"] == 0.0
    assert last.loc["N", "noise_kind"] == "hessian" and last.loc["N", "matched_small_batch"] == 8
    assert last.loc["N", "noise_lanczos_steps"] == 3 and last.loc["M", "noise_moment_probes"] == 2
    assert last.loc["M", "injection_scale"] == 0.05 and last.loc["N", "noise_seconds"] > 0
    assert (last["seconds_per_step"] > 0).all()
    # a record written with other noise settings is refused, like another config
    other = copy.deepcopy(spec)
    other["arms"]["M"]["noise"]["injection_scale"] = 0.07
    with pytest.raises(ValueError, match="different config"):
        run_plan(other, tmp_path / "o")


def test_cli_runs_the_ch09_test_plan_with_every_noise_kind(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "sgdnoise.sweep", str(PLAN_CH09_TEST), "--out", str(out)],
        capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    df = load_records(out)
    assert df["run_id"].nunique() == 22
    last = df.groupby("run_id").tail(1)
    assert set(last["noise_kind"]) == {"none", "isotropic", "diag_fisher", "subsampled",
                                       "true_fisher", "hessian", "ggn"}
    assert (last["status"] == "finished").all()
    assert (last.loc[last["noise_kind"] != "none", "noise_seconds"] > 0).all()


def test_noise_kinds_of_plans_are_those_of_noisy_sgd():
    from sgdnoise.noise import KINDS
    from sgdnoise.sweep import NOISE_KINDS

    assert NOISE_KINDS == KINDS[1:]


def test_ch09_gpu_run_packs_its_records_into_a_ch09_tar(tmp_path):
    import tarfile

    records, out = tmp_path / "records", tmp_path / "out"
    env = {**_env(), "RECORDS": str(records), "OUT": str(out), "BUDGET": "900",
           "SHARD": "0/8", "PYTHON": sys.executable, "SGDNOISE_GIT_COMMIT": "abc1234",
           "PLAN": str(PLAN_CH09_TEST)}
    script = REPO / "book" / "params" / "ch09_anisotropic_noise" / "gpu_run.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert sorted(os.listdir(out)) == ["ch09_records.tar"] and "ch08" not in proc.stdout
    with tarfile.open(out / "ch09_records.tar") as tar:
        names = sorted(n for n in tar.getnames() if n.endswith(".json"))
    # shard 0/8 of plan_test: positions 0, 8, 16 of the priority order
    assert names == ["./LB-diag-fisher_B00024_s1.json", "./LB-subsampled-epochT_B00024_s0.json",
                     "./SB_B00008_s0.json"]
    rec = json.loads((records / "SB_B00008_s0.json").read_text())
    assert "noise" not in rec and rec["provenance"]["git_commit"] != "unknown"
