"""Records and checkpoints written by the code before the experiment layer was restructured
(main at commit 51aec79, ``tests/fixtures/main_51aec79``, see its ``make_fixture.py``) are
read, matched and resumed by today's code: the same configs, the same records, the same
numbers after a resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from sgdnoise.sweep import load_plan, run_plan

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "main_51aec79"
# what differs between two trainings of one run: timing and where and when it ran
VOLATILE = {"timing", "wall_time_s", "img_per_s", "provenance", "resumed_from_step"}


def _numbers(rec: dict) -> dict:
    """A record without its timings and provenance (the evaluations' wall times too). The
    Lanczos steps of a kind other than "hessian" are left out: their default changed from
    10 to :data:`sgdnoise.noise.DEFAULT_LANCZOS_STEPS` and no other kind uses them."""
    out = {k: v for k, v in rec.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in h.items() if k != "wall_time"} for h in rec["history"]]
    if "noise" in rec and rec["noise"]["kind"] != "hessian":
        out["noise"] = {k: v for k, v in rec["noise"].items() if k != "lanczos_steps"}
    return out


# The fixture was written on another machine. Training there and here runs the same float32
# operations, but another CPU's kernels may round differently: on 2026-12-07 a machine with
# the same torch gave the records bit for bit on one CPU and up to 8.3e-6 relative apart
# (losses, parameter distances, a Lanczos lambda_max) on another. Integers, strings and
# error rates must match exactly; floats within FLOAT_REL.
FLOAT_REL = 1e-4


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON-like values differ: floats beyond FLOAT_REL (relative), anything
    else (keys, lengths, integers, strings) when not equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))} in one only"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=FLOAT_REL, abs_tol=1e-12) else [
            f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_differences_flag_a_float_beyond_round_off_and_any_other_change():
    rec = {"history": [{"step": 4, "train_loss": 2.3, "train_error": 0.5}], "status": "done"}
    near = {"history": [{"step": 4, "train_loss": 2.3 * (1 + 1e-5), "train_error": 0.5}],
            "status": "done"}
    assert _differences(rec, near) == []
    far = {"history": [{"step": 4, "train_loss": 2.3 * (1 + 1e-3), "train_error": 0.5}],
           "status": "done"}
    assert [d.split(":")[0] for d in _differences(rec, far)] == [".history[0].train_loss"]
    assert _differences(rec, {**rec, "status": "diverged"}) == [
        ".status: 'done' vs 'diverged'"]
    assert _differences(rec, {"history": [], "status": "done"}) == [".history: 1 vs 0 items"]


def _records(folder: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))}


def test_configs_are_the_dicts_main_wrote():
    """``TrainConfig.to_dict()`` of every run of the plan (defaults filled in, a tuned arm
    at its base η, tuning runs with their schedule in steps) is the dict main wrote."""
    plan = load_plan(FIXTURE / "plan.yaml")
    want = json.loads((FIXTURE / "configs.json").read_text())
    got = {r.run_id: r.config.to_dict() for r in plan.runs}
    assert got == want
    assert all(list(got[k]) == list(want[k]) for k in want)  # the same keys in the same order


def test_complete_records_of_main_are_matched_and_nothing_reruns(tmp_path):
    out = tmp_path / "out"
    shutil.copytree(FIXTURE / "complete", out)
    said: list[str] = []
    recs = run_plan(load_plan(FIXTURE / "plan.yaml"), out, log=said.append)
    assert {r["run"]["run_id"] for r in recs} == set(_records(FIXTURE / "complete"))
    assert all(line.endswith("record exists, skipped") for line in said), said
    assert _records(out) == _records(FIXTURE / "complete")  # read, not rewritten


def test_checkpoints_of_main_resume_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    """The checkpoints a killed sweep of main left (a BatchNorm network with ghost groups and
    train-mode sharpness, a NoisySGD run whose optimizer state predates NoisySGD on
    torch.optim.SGD) resume to records equal to main's uninterrupted ones (floats to
    another CPU's round-off, :data:`FLOAT_REL`); the tuned run takes the factor main's
    tuning records choose."""
    torch.set_num_threads(1)
    out = tmp_path / "out"
    shutil.copytree(FIXTURE / "partial", out)
    said: list[str] = []
    run_plan(load_plan(FIXTURE / "plan.yaml"), out, log=said.append)
    assert any(line.endswith("A_B00016_s0: training (resuming)") for line in said), said
    assert any(line.endswith("N_B00016_s0: training (resuming)") for line in said), said
    mine, main = _records(out), _records(FIXTURE / "complete")
    assert set(mine) == set(main)
    for rid in main:
        assert _differences(_numbers(mine[rid]), _numbers(main[rid])) == [], rid
    assert mine["A_B00016_s0"]["resumed_from_step"] > 0
    assert mine["N_B00016_s0"]["resumed_from_step"] > 0
    assert mine["T_B00016_s1"]["lr_choice"] == main["T_B00016_s1"]["lr_choice"]


def test_a_changed_config_still_refuses_main_s_checkpoint(tmp_path):
    """The checkpoint key is the one main wrote: another learning rate is refused."""
    from sgdnoise.train import train

    plan = load_plan(FIXTURE / "plan.yaml")
    run = next(r for r in plan.runs if r.run_id == "A_B00016_s0")
    ckpt = tmp_path / "run.pt"
    shutil.copy(FIXTURE / "partial" / "checkpoints" / "A_B00016_s0.pt", ckpt)
    other = type(run.config)(**{**run.config.to_dict(), "lr": 0.07})
    with pytest.raises(ValueError, match=r"different config \(fields \['lr'\]\)"):
        train(other, plan.load_data(), checkpoint_path=ckpt, progress=False)
