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


TUNE = {"lr_factors": [0.5, 1.0, 2.0], "seed": 0, "n_val": 16}


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
        ({"arms__A__seeds": [-1]}, "arms.A.seeds[0]", "-1"),
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
        ({"priority": [{"arm": "A", "batch_sizes": [32]}]}, "priority[0].batch_sizes",
         "32"),
        ({"priority": [{"arm": "A", "order": 1}]}, "priority[0].order", "1"),
        ({"arms__A__config": {"warmup_steps": -2}}, "arms.A.config.warmup_steps", "-2"),
        ({"defaults__sharpness_bn_mode": "both"}, "defaults.sharpness_bn_mode", "both"),
        ({"arms__A__tune": [0.5, 1.0]}, "arms.A.tune", "[0.5, 1.0]"),
        ({"arms__A__tune": {**TUNE, "lr_factors": [1.0, 0]}}, "arms.A.tune.lr_factors[1]",
         "0"),
        ({"arms__A__tune": {**TUNE, "lr_factors": [1, 1]}}, "arms.A.tune.lr_factors",
         "[1, 1]"),
        ({"arms__A__tune": {**TUNE, "n_val": 48}}, "arms.A.tune.n_val", "48"),
        ({"arms__A__tune": {**TUNE, "seed": -1}}, "arms.A.tune.seed", "-1"),
        ({"arms__A__tune": {**TUNE, "grid": 3}}, "arms.A.tune.grid", "3"),
        ({"arms__A__tune": {**TUNE, "n_val": 40}}, "arms.A.batch_sizes[0]", "16"),
        ({"arms__A__tune": TUNE, "arms__A__batch_sizes": [16],
          "arms__A-tune": {"batch_sizes": [16]}}, "arms.A-tune", "A"),
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
    runs = full.runs
    # the pre-registered pairs first (Holm's family of 9: A 128 against 4,096-32,768, B 512
    # against 4,096 / 8,192 / 32,768, C 512 against 4,096 / 8,192), two seeds at a time
    # for A, B and C; then D, the ghost control and the batch sizes outside the family
    assert [(r.arm, r.batch_size, r.seed) for r in runs[:6]] == [
        ("A", b, s) for s in (0, 1) for b in (128, 4096, 8192)]
    first_d = min(r.block for r in runs if r.arm.startswith("D"))
    decisive = {(r.arm, r.batch_size) for r in runs
                if r.block < first_d and not r.arm.endswith("-tune")}
    family = ({("A", b) for b in (128, 4096, 8192, 16384, 32768)}
              | {("B", b) for b in (512, 4096, 8192, 32768)}
              | {("C", b) for b in (512, 4096, 8192)})
    assert decisive == family
    # 10 seeds: 80% power for a 3-point gap at the mid-scale spread (the header's numbers;
    # tests/test_decide.py checks the power at the committed records' spread)
    for arm, b in family:
        assert {r.seed for r in runs if (r.arm, r.batch_size) == (arm, b)} == set(range(10))
    # arm A: plain BatchNorm over the micro-batch of min(B, 4096); the control: ghost 128
    a = [r.config for r in runs if r.arm == "A"]
    assert all(c.ghost_batch_size is None and c.micro_batch_size == 4096 and c.lr == 0.1
               and c.momentum == 0 and c.schedule == "constant" for c in a)
    assert {(r.batch_size, r.config.ghost_batch_size) for r in runs
            if r.arm == "A-ghost128"} == {(4096, 128), (8192, 128)}
    # B and C: tuned η (tuning runs right before their batch size's first run), warm-up in
    # steps; C: the steps of B = 512 in 30 epochs
    for r in (r for r in runs if r.arm in ("B", "C")):
        assert r.needs_tuning and r.tune.lr_factors == (0.5, 1.0, 2.0) and r.tune.n_val == 5000
        assert r.config.warmup_steps == 50 and r.config.ghost_batch_size == 128
    ids = [r.run_id for r in runs]
    for r in (r for r in runs if r.arm in ("B", "C")):
        for f in (0.5, 1.0, 2.0):
            assert ids.index(r.tune.run_id(r.batch_size, f)) < ids.index(r.run_id)
    assert {r.config.max_steps for r in runs if r.arm == "C"} == {30 * (50000 // 512)}
    # D: λ_max every 25 steps; D-scaled holds η constant after a 50-step warm-up
    d = {r.arm: r.config for r in runs if r.arm.startswith("D")}
    assert d["D-plain"].max_steps == 250 and d["D-scaled"].max_steps == 300
    assert d["D-scaled"].schedule == "constant" and d["D-scaled"].warmup_steps == 50
    assert all(c.sharpness_every == 25 for c in d.values())
    assert all(r.config.sharpness_bn_mode == "train" and r.config.drop_last
               and r.config.eval_points == 25 and r.config.eval_train_n == 10000
               for r in runs)
    assert len(load_plan(PLAN_TEST).runs) == 23


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
    main = [(r.arm, r.batch_size, r.seed) for r in mid.runs if not r.arm.endswith("-tune")]
    assert main[:9] == [("A", b, 0) for b in (26, 52, 104, 208, 416, 832, 1664, 3328, 6656)]
    pairs_a = {("A", b, s) for b in (26, 832, 1664, 3328, 6656) for s in range(4)}
    pairs_b = {("B", b, s) for b in (104, 832, 1664) for s in range(4)}
    # 3 seeds of every decisive pair, then the 4th seeds
    assert set(main[:28]) >= {x for x in pairs_a | pairs_b if x[2] < 3}
    assert set(main[28:36]) == {x for x in pairs_a | pairs_b if x[2] == 3}
    # arm B's decisive pairs are tuned first (seed 0, three factors each)
    tune = [(r.batch_size, r.lr_factor) for r in mid.runs[:37] if r.arm == "B-tune"]
    assert sorted(tune) == [(b, f) for b in (104, 832, 1664) for f in (0.5, 1.0, 2.0)]


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
    # shard 1/2 holds the odd positions: A_B04096_s0 (1), A_B00128_s1 (3), not A_B00128_s0
    assert "A_B00128_s0" not in out and "A_B04096_s0" in out and "A_B00128_s1" in out
    assert "to be tuned" in out and "x0.5 tuning" in out
    assert "Device time per priority block" in out
    assert max(len(line) for line in out.splitlines()) <= 80
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
    assert set(sh["bn_mode"]) == {"eval"}  # the default objective: running statistics


def test_image_size_pools_the_data_and_the_records_say_so(tmp_path):
    out = tmp_path / "o"
    plan = _plan(data__image_size=8, arms={"A": {"batch_sizes": [16]}}, priority=_DEL)
    rec = run_plan(plan, out)[0]
    assert rec["data"]["preprocessing"] == "average-pooled to 8x8"
    assert rec["data"]["n_train"] == 48 and rec["status"] == "finished"
    # the same run id trained on 32x32 images is another run: refused, not mixed
    refused = r"different data section \(image_size: record 8, plan None\)"
    with pytest.raises(ValueError, match=refused):
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


def test_git_commit_falls_back_to_the_environment(monkeypatch):
    import sgdnoise.provenance
    from sgdnoise.sweep import records

    monkeypatch.setattr(sgdnoise.provenance, "git_commit", lambda path=None: "unknown")
    monkeypatch.setenv("SGDNOISE_GIT_COMMIT", "deadbeef")
    assert records.git_commit() == "deadbeef"
    monkeypatch.delenv("SGDNOISE_GIT_COMMIT")
    assert records.git_commit() == "unknown" or (REPO / "GIT_COMMIT").is_file()


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
    from sgdnoise.noise import DEFAULT_LANCZOS_STEPS, NoiseSpec, matched_injection_scale

    plan = validate_plan(_plan(arms__N=NOISY))
    noisy = {r.run_id: r.noise for r in plan.runs if r.arm == "N"}
    assert noisy == {
        f"N_B000{b}_s0": NoiseSpec("subsampled", matched_injection_scale(8, b, num_examples=48),
                                   8, 6, DEFAULT_LANCZOS_STEPS, 4) for b in (24, 48)}
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
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80  # the longest run names included
    row = next(k for k, line in enumerate(lines) if "LB-hessian_B12800_s0" in line)
    assert lines[row + 1].strip() == "noise hessian s=0.007735 M=256 k=10"


def test_text_table_aligns_columns_to_their_widest_cell():
    from sgdnoise.sweep.cli import text_table

    lines = text_table(["a", "name", "n"], [["1", "x", "10"], ["22", "longer", "3"]],
                       left=(1,))
    assert lines == [" a name    n", " 1 x      10", "22 longer  3"]


def test_noisy_record_holds_the_settings_and_equals_training_with_noise_config(tmp_path):
    """A noisy run of the sweep = train(...) with the NoisySGD factory of its noise spec
    (the one chapter 9 uses; same seed, same numbers); a plain run's record has no noise
    section."""
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
        cfg = run.config
        direct = train(cfg, data, progress=False, optimizer_factory=run.noise.optimizer_factory(
            lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed))
        assert rec["timing"]["noise_seconds"] <= rec["timing"]["step_seconds"]
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
    from sgdnoise.noise import KINDS, NoiseSpec
    from sgdnoise.params import declared

    assert tuple(declared(NoiseSpec)["kind"].choices) == KINDS[1:]


# --------------------------------------------------------------------------- η tuning


def _tuned(a=None, **changes):
    """TINY with arm A tuned (factors 0.5, 1, 2 on 16 held-out examples; ``a`` changes the
    arm), a 1-epoch warm-up (so the tuning runs' warm-up in steps is tested) and arm D."""
    arm = {"batch_sizes": [16, 32], "seeds": [0, 1], "tune": TUNE,
           "config": {"warmup_epochs": 1.0, "momentum": 0.9, "schedule": "cosine"}}
    return _plan(arms__A={**arm, **(a or {})}, **changes)


def _rec(run_id, status="finished", err=0.5):
    return {"run": {"run_id": run_id}, "status": status,
            "history": [{"test_error": 0.9}, {"test_error": err}]}


def test_choose_lr_factor_lowest_validation_error_ties_to_the_smaller_factor():
    from sgdnoise.sweep import choose_lr_factor

    recs = {0.5: _rec("a", err=0.30), 1.0: _rec("b", err=0.20), 2.0: _rec("c", err=0.25)}
    assert choose_lr_factor(recs)["factor"] == 1.0
    recs[2.0] = _rec("c", err=0.10)  # flips with the data
    assert choose_lr_factor(recs)["factor"] == 2.0
    recs[0.5] = _rec("a", err=0.10)  # a tie: the smaller, more cautious factor
    choice = choose_lr_factor(recs)
    assert choice["factor"] == 0.5 and "ties go to the smaller factor" in choice["rule"]
    # a diverged run counts as +inf, even with a small last error
    recs = {0.5: _rec("a", err=0.3), 1.0: _rec("b", "diverged", err=0.01)}
    choice = choose_lr_factor(recs)
    assert choice["factor"] == 0.5
    assert [c["final_validation_error"] for c in choice["candidates"]] == [0.3, None]
    assert choose_lr_factor({0.5: _rec("a"), 1.0: None}) is None  # a record is missing
    nan = {0.5: _rec("a", err=float("nan")), 1.0: _rec("b", err=0.7)}
    assert choose_lr_factor(nan)["factor"] == 1.0


def test_tuning_runs_take_the_main_runs_schedule_on_the_training_split():
    plan = validate_plan(_tuned(priority=[{"arm": "A", "batch_sizes": [32]}]))
    ids = [r.run_id for r in plan.runs]
    # the tuning runs of B = 32 first, then the two seeds at 32 (block 1), then B = 16
    assert ids[:5] == ["A-tune_B00032_s0_x0.5", "A-tune_B00032_s0_x1", "A-tune_B00032_s0_x2",
                       "A_B00032_s0", "A_B00032_s1"]
    assert ids[5:9] == ["A-tune_B00016_s0_x0.5", "A-tune_B00016_s0_x1",
                        "A-tune_B00016_s0_x2", "A_B00016_s0"]
    assert [r.block for r in plan.runs[:6]] == [1] * 5 + [2]
    assert plan.blocks == ("arm A B 32", "the remaining runs")
    main_run = plan.runs[3]
    for r, f in zip(plan.runs[:3], (0.5, 1.0, 2.0), strict=True):
        assert r.lr_factor == f and r.arm == "A-tune" and r.seed == 0
        c = r.config
        # 48 examples, B = 32, drop_last: 1 step per epoch, 2 epochs; warm-up 1 epoch = 1 step
        assert c.lr == pytest.approx(0.05 * f) and c.max_steps == 2 and c.warmup_steps == 1
        assert c.sharpness_n == 0 and c.sharpness_every is None
        assert dataclasses.replace(c, lr=0.05, max_steps=None, warmup_steps=None,
                                   sharpness_n=0) == dataclasses.replace(
            main_run.config, sharpness_n=0)
        assert r.describe() == {"arm": "A-tune", "batch_size": 32, "seed": 0,
                                "run_id": r.run_id, "tunes": "A", "lr_factor": f}
    assert main_run.needs_tuning and main_run.describe() == {
        "arm": "A", "batch_size": 32, "seed": 0, "run_id": "A_B00032_s0"}


def test_tuned_runs_wait_for_their_tuning_records_then_take_the_chosen_factor(tmp_path):
    out, log = tmp_path / "o", []
    plan = validate_plan(_tuned({"batch_sizes": [32]}, priority=[]))
    assert [r.run_id for r in plan.runs] == [
        "A-tune_B00032_s0_x0.5", "A-tune_B00032_s0_x1", "A-tune_B00032_s0_x2", "A_B00032_s0",
        "A_B00032_s1", "D_B00048_s0"]
    # the tuning runs do not fit the budget: the seeds wait, D runs
    recs = run_plan(plan, out, budget_s=1000.0, log=log.append,
                    estimate=lambda r: 1e6 if r.lr_factor is not None else 1.0)
    assert [r["run"]["run_id"] for r in recs] == ["D_B00048_s0"]
    assert sum("η pending tuning" in m for m in log) == 2
    # shards: shard 0 (x0.5, x2, seed 1) waits for x1 of shard 1, which then resolves seed 0
    # from the records shard 0 left on disk; shard 0 again resolves seed 1
    first = {r["run"]["run_id"] for r in run_plan(plan, out, shard=(0, 2))}
    assert first == {"A-tune_B00032_s0_x0.5", "A-tune_B00032_s0_x2"}
    second = {r["run"]["run_id"] for r in run_plan(plan, out, shard=(1, 2))}
    assert second == {"A-tune_B00032_s0_x1", "A_B00032_s0", "D_B00048_s0"}
    recs = {r["run"]["run_id"]: r for r in run_plan(plan, out)}
    tuning = [r for r in recs.values() if r["run"]["arm"] == "A-tune"]
    main_rec = recs["A_B00032_s1"]
    tune = {r["run"]["lr_factor"]: r for r in tuning}
    errors = {f: r["history"][-1]["test_error"] for f, r in tune.items()}
    best = min(errors, key=lambda f: (errors[f], f))
    choice = main_rec["lr_choice"]
    assert choice["factor"] == best and main_rec["config"]["lr"] == pytest.approx(0.05 * best)
    assert [c["run_id"] for c in choice["candidates"]] == [
        f"A-tune_B00032_s0_x{f:g}" for f in (0.5, 1.0, 2.0)]
    # tuning records: trained on 48 - 16 examples, evaluated on the 16 held out
    t = tune[1.0]
    assert t["tuning"]["evaluated_on"] == "validation" and t["tuning"]["of_arm"] == "A"
    assert t["data"]["n_train"] == 32 and t["data"]["n_val"] == 16
    assert "lr_choice" not in t and "tuning" not in main_rec
    # everything recorded matches on a second pass, also with the tuning records elsewhere
    assert len(run_plan(plan, out)) == len(plan.runs)
    for f in (0.5, 1.0, 2.0):
        record_path(out, f"A-tune_B00032_s0_x{f:g}").unlink()
    assert len(run_plan(plan, out, budget_s=1e-9)) == 3  # A seeds 0, 1 and D
    bad = json.loads(record_path(out, "A_B00032_s0").read_text())
    bad["lr_choice"]["factor"] = 3.0
    record_path(out, "A_B00032_s0").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="different config"):
        run_plan(plan, out, budget_s=1e-9)


def test_dry_run_shows_pending_then_chosen_factors(tmp_path, capsys):
    spec = _tuned({"batch_sizes": [32], "seeds": [0]}, priority=[])
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "o"
    assert main([str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "A_B00032_s0" in text and "to be tuned" in text and "x0.5 tuning" in text
    run_plan(validate_plan(spec), out)
    assert main([str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    factor = json.loads(record_path(out, "A_B00032_s0").read_text())["lr_choice"]["factor"]
    assert f"x{factor:g} chosen" in text and "to be tuned" not in text


def test_records_written_before_the_late_fields_still_match(tmp_path):
    """A record whose config lacks ``warmup_steps`` / ``sharpness_bn_mode`` (written before
    they existed) matches a plan that leaves them at their defaults."""
    out = tmp_path / "o"
    run_plan(_plan(), out)
    for p in out.glob("*.json"):
        rec = json.loads(p.read_text())
        for k in ("warmup_steps", "sharpness_bn_mode"):
            del rec["config"][k]
        p.write_text(json.dumps(rec))
    assert len(run_plan(_plan(), out)) == 5
    with pytest.raises(ValueError, match="different config"):
        run_plan(_plan(defaults__warmup_steps=1), out)


def test_every_record_says_which_engine_path_produced_it(tmp_path):
    fast = run_plan(_plan(), tmp_path / "f")
    assert {r["engine_path"] for r in fast} == {"fast"}
    assert main([str(PLAN_TEST), "--out", str(tmp_path / "e"), "--engine", "eager",
                 "--shard", "0/12"]) == 0
    recs = [json.loads(p.read_text()) for p in (tmp_path / "e").glob("*.json")]
    assert recs and {r["engine_path"] for r in recs} == {"eager"}
    assert all(r["engine"]["autocast"] is False and r["engine"]["optimizer"] == "single"
               for r in recs)


# --------------------------------------------------------------------------- device time


def test_throughput_table_reproduces_the_pilot_constants():
    from sgdnoise.sweep import (
        PILOT_H200_EVAL_S_PER_EXAMPLE,
        PILOT_H200_IMG_PER_S,
        throughput_table,
    )

    table, eval_s = throughput_table(PILOT)
    assert {b: round(v, -2) for b, v in table.items()} == PILOT_H200_IMG_PER_S
    assert round(eval_s, 7) == PILOT_H200_EVAL_S_PER_EXAMPLE


def test_throughput_table_reads_plan_records(tmp_path):
    from sgdnoise.sweep import throughput_table

    recs = run_plan(_plan(), tmp_path / "o")
    table, eval_s = throughput_table(tmp_path / "o")
    by_b = {}
    for r in recs:
        by_b.setdefault(r["run"]["batch_size"], []).append(r["img_per_s"])
    assert table == pytest.approx({b: sum(v) / len(v) for b, v in by_b.items()})
    assert eval_s > 0


def test_device_seconds_interpolates_the_table_and_sums_per_block(tmp_path):
    from sgdnoise.sweep import block_estimates, device_seconds, interpolated_rate

    table = {100: 1000.0, 400: 3000.0}
    assert interpolated_rate(table, 50) == 1000.0 and interpolated_rate(table, 800) == 3000.0
    assert interpolated_rate(table, 200) == pytest.approx(2000.0)  # halfway in log B
    plan = validate_plan(_tuned(priority=[{"arm": "A", "batch_sizes": [32]}]))
    main_run = next(r for r in plan.runs if r.run_id == "A_B00032_s0")
    tune_run = plan.runs[0]
    kw = dict(table=table, eval_s_per_example=1e-3)
    got = device_seconds(main_run, 48, 16, **kw)
    want = estimate_run_seconds(main_run.config, 48, 16, {
        "step_s": 32 / 1000.0, "eval_s_per_example": 1e-3, "setup_s": 0.0})
    assert got == pytest.approx(want)
    # a tuning run: 48 - 16 training examples, the 16 held out as its test set
    assert device_seconds(tune_run, 48, 16, **kw) == pytest.approx(estimate_run_seconds(
        tune_run.config, 32, 16, {"step_s": 0.032, "eval_s_per_example": 1e-3,
                                  "setup_s": 0.0}))
    rows = block_estimates(plan, **kw)
    assert [r["runs"] for r in rows] == [5, len(plan.runs) - 5]
    assert rows[0]["seconds"] == pytest.approx(sum(
        device_seconds(r, 48, 16, **kw) for r in plan.runs[:5]))
    assert rows[-1]["cumulative"] == pytest.approx(sum(r["seconds"] for r in rows))
    out = tmp_path / "o"
    out.mkdir()
    record_path(out, "A_B00032_s0").write_text("{}")
    done = block_estimates(plan, out, **kw)[0]
    assert done["left"] == 4 and done["seconds"] == pytest.approx(
        rows[0]["seconds"] - got)


def test_plan_full_header_states_the_estimated_minutes_of_each_block():
    """The GPU-minutes written in plan_full.yaml's header are the estimator's."""
    import re

    from sgdnoise.sweep import block_estimates

    plan = load_plan(PLAN_FULL, check_device=False)
    rows = block_estimates(plan)
    stated = {int(k): float(v) for k, v in re.findall(
        r"^#\s+block\s+(\d+):\s+([\d.]+) min", PLAN_FULL.read_text(), flags=re.M)}
    assert stated == {r["block"]: round(r["seconds"] / 60, 1) for r in rows}
    total = re.search(r"^#\s+all:\s+([\d.]+) min", PLAN_FULL.read_text(), flags=re.M)
    assert float(total.group(1)) == round(rows[-1]["cumulative"] / 60, 1)


def test_train_mode_sharpness_is_in_the_records_and_the_frame(tmp_path):
    plan = _plan(arms__D={"batch_sizes": [48], "config": {
        "max_steps": 2, "sharpness_every": 2, "sharpness_n": 8, "sharpness_iters": 4,
        "sharpness_bn_mode": "train", "ghost_batch_size": 4}}, priority=[{"arm": "D"}])
    run_plan(plan, tmp_path / "o", shard=(0, 5))
    sh = load_sharpness(tmp_path / "o")
    assert list(sh["step"]) == [0, 2] and set(sh["bn_mode"]) == {"train"}
    assert set(sh["bn_batch"]) == {4}


# --------------------------------------------------------------------------- issue 17: records


ONE = {"arms": {"A": {"batch_sizes": [48]}}, "priority": []}
ONE_ID = "A_B00048_s0"


def _one(**changes):
    return _plan(**{**ONE, **changes})


@pytest.fixture(scope="module")
def one_record(tmp_path_factory):
    """The record of a one-run plan, written by this code."""
    out = tmp_path_factory.mktemp("one")
    run_plan(_one(), out)
    return json.loads(record_path(out, ONE_ID).read_text())


def _legacy(rec, **data):
    """``rec`` as the sweep wrote it before records carried their plan section."""
    old = copy.deepcopy(rec)
    old.pop("plan", None)
    old["data"].update(data)
    return old


def _out_with(tmp_path, rec, name="o"):
    out = tmp_path / name
    out.mkdir()
    text = rec if isinstance(rec, (str, bytes)) else json.dumps(rec)
    path = record_path(out, ONE_ID)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return out


def test_new_records_carry_the_plan_name_and_data_section(one_record):
    assert one_record["plan"] == {"name": "tiny", "data": {
        "dataset": "synthetic", "n_train": 48, "n_test": 16, "data_seed": 0, "image_size": None}}


@pytest.mark.parametrize("change, old, new", [
    ({"name": "other"}, "'tiny'", "'other'"),
    ({"data__n_test": 8}, "16", "8"),
    ({"data__data_seed": 3}, "0", "3"),
    ({"data__dataset": "cifar10"}, "synthetic", "cifar10"),
])
def test_a_record_of_another_plan_or_data_is_refused(tmp_path, one_record, change, old, new):
    out = _out_with(tmp_path, one_record)
    with pytest.raises(ValueError) as err:
        run_plan(_one(**change), out)
    msg = str(err.value)
    assert "\n" not in msg and str(record_path(out, ONE_ID)) in msg
    assert old in msg and new in msg, msg


@pytest.mark.parametrize("change, data, old, new", [
    ({"name": "other"}, {}, "'tiny'", "'other'"),
    ({"data__n_test": 8}, {}, "16", "8"),
    ({"data__dataset": "cifar10"}, {}, "synthetic", "cifar10"),
    ({"data__dataset": "cifar10", "data__data_seed": 1},
     {"source": "supplied copy", "subset_seed": 0}, "0", "1"),
])
def test_a_record_written_before_plan_sections_is_matched_on_its_data(
        tmp_path, one_record, change, data, old, new):
    out = _out_with(tmp_path, _legacy(one_record, **data))
    with pytest.raises(ValueError) as err:
        run_plan(_one(**change), out)
    msg = str(err.value)
    assert "\n" not in msg and ONE_ID in msg and old in msg and new in msg, msg


def test_a_record_written_before_plan_sections_still_counts_when_it_agrees(
        tmp_path, one_record):
    for i, (changes, data) in enumerate([
            ({}, {}),
            ({"data__dataset": "cifar10"}, {"source": "supplied copy", "subset_seed": 0}),
            ({"data__dataset": "cifar10"}, {"source": "official", "subset_seed": 0})]):
        out = _out_with(tmp_path, _legacy(one_record, **data), name=f"o{i}")
        mtime = record_path(out, ONE_ID).stat().st_mtime_ns
        recs = run_plan(_one(**changes), out)  # nothing to train: no data is loaded
        assert [r["run"]["run_id"] for r in recs] == [ONE_ID]
        assert record_path(out, ONE_ID).stat().st_mtime_ns == mtime


def test_config_without_a_newer_field_matches_when_the_field_has_its_default(
        tmp_path, one_record):
    old = _legacy(one_record)
    del old["config"]["device_rng"], old["config"]["sharpness_iters"]
    out = _out_with(tmp_path, old)
    assert [r["run"]["run_id"] for r in run_plan(_one(), out)] == [ONE_ID]
    with pytest.raises(ValueError, match="sharpness_iters") as err:
        run_plan(_one(defaults__sharpness_iters=5), out)
    assert "20" in str(err.value) and "5" in str(err.value)


def test_cli_refuses_a_mismatched_record_with_exit_2_and_one_line(tmp_path, one_record, capsys):
    out = _out_with(tmp_path, one_record)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_one(data__n_test=8)))
    assert main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ONE_ID in err[0] and "n_test" in err[0], err


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b'{"format": "sgdnoise.sweep.run/2", "conf', "JSON"),
    (b"[1, 2, 3]", "list"),
    (b"\x00\xff\xfe garbage", "JSON"),
    (b'{"some": "dict"}', "run record"),
])
def test_an_unreadable_record_names_the_file_and_what_to_do(tmp_path, capsys, content, words):
    out = _out_with(tmp_path, content)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_one()))
    assert main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(record_path(out, ONE_ID)) in err and words in err, err
    assert "delete" in err or "move" in err, err


# --------------------------------------------------------------------------- issue 17: output


def _never_load(monkeypatch):
    from sgdnoise.sweep import Plan

    def refuse(plan, n_val=None):
        raise AssertionError("data were loaded before the output folder was checked")

    monkeypatch.setattr(Plan, "load_data", refuse)


@pytest.mark.parametrize("where", ["file", "under a file", "checkpoints is a file"])
def test_a_bad_out_folder_is_refused_before_any_data_is_loaded(tmp_path, capsys, monkeypatch,
                                                                where):
    _never_load(monkeypatch)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_one()))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = {"file": blocker, "under a file": blocker / "o"}.get(where, tmp_path / "o")
    if where == "checkpoints is a file":
        out.mkdir()
        (out / "checkpoints").write_text("a file")
    assert main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(blocker if where != "checkpoints is a file" else out) in err


def test_an_unwritable_out_folder_is_refused_before_any_data_is_loaded(tmp_path, capsys,
                                                                       monkeypatch):
    import tempfile

    _never_load(monkeypatch)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(_one()))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main([str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and "not writable" in err, err


# --------------------------------------------------------------------------- issue 17: plans


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("name: x\ndata: {dataset: synthetic, n_train: 48}\ndefaults: {epochs: 1}\n", "'arms'"),
    ("name: x\nmodel: cnn\n", "'arms'"),
])
def test_an_empty_plan_or_one_without_arms_says_so(tmp_path, text, words):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    msg = str(err.value)
    assert words in msg and "unknown key" not in msg and "missing (required" not in msg, msg
    assert str(path) in msg


def test_loading_records_warns_about_a_torn_file_and_keeps_the_others(tmp_path, one_record):
    good = tmp_path / "r"
    good.mkdir()
    (good / "A.json").write_text(json.dumps(one_record))
    (good / "torn.json").write_bytes(b'{"format": "sgdnoise.sweep.run/2", "ru')
    (good / "binary.json").write_bytes(b"\x00\xff\xfe")
    with pytest.warns(UserWarning) as caught:
        df = load_records(good)
    assert sorted(Path(str(w.message).split(":")[0]).name for w in caught) == [
        "binary.json", "torn.json"]
    assert set(df["run_id"]) == {ONE_ID}


@pytest.mark.parametrize("change, key, bound", [
    ({"arms__N": {**NOISY, "noise": {**NOISY["noise"], "num_samples": 10**9}}},
     "arms.N.noise.num_samples", "<= 1000000"),
    ({"arms__N": {**NOISY, "noise": {**NOISY["noise"], "lanczos_steps": 10**6}}},
     "arms.N.noise.lanczos_steps", "<= 10000"),
    ({"arms__N": {**NOISY, "noise": {**NOISY["noise"], "moment_probes": 10**6}}},
     "arms.N.noise.moment_probes", "<= 10000"),
    ({"arms__N": {**NOISY, "noise": {"kind": "ggn", "injection_scale": 1e300}}},
     "arms.N.noise.injection_scale", "<= 1000000.0"),
    ({"data__n_train": 10**9}, "data.n_train", "<= 10000000"),
    ({"data__n_test": 10**9}, "data.n_test", "<= 10000000"),
    ({"data__data_seed": 2**40}, "data.data_seed", "<= 4294967295"),
    ({"data__dataset": "cifar10", "data__n_test": 20_000}, "data.n_test", "<= 10000"),
])
def test_plan_numbers_have_stated_upper_bounds(change, key, bound):
    with pytest.raises(PlanError) as err:
        validate_plan(_plan(**change))
    assert f"'{key}'" in str(err.value) and bound in str(err.value), str(err.value)


def test_contradicting_checkpoint_flags_are_refused(tmp_path, capsys):
    assert main([str(PLAN_TEST), "--out", str(tmp_path / "o"), "--keep-checkpoints",
                 "--no-checkpoints"]) == 2
    assert "--keep-checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
