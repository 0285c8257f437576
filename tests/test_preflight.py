"""Tests of the preflight (sgdnoise.preflight): the cases it picks from a plan, the fast
path against the eager float32 path with the CUDA choices taken on the CPU (bf16 autocast,
channels-last, fused SGD, device RNG, micro-batches, ghost BatchNorm), the choice of the
engine path in every branch, forced failures (an exception, a mismatch) leading to the
eager path, and the records of a sweep run on that path saying so."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from sgdnoise import preflight
from sgdnoise.preflight import (
    LOSS_TOLERANCE,
    PARAM_TOLERANCE,
    CaseResult,
    choose_engine,
    compare_paths,
    preflight_cases,
    run_preflight,
)
from sgdnoise.sweep import load_plan, run_plan, validate_plan

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
PLAN_FULL = REPO / "book" / "params" / "ch08_resnet_sweep" / "plan_full.yaml"
PLAN_CH09 = REPO / "book" / "params" / "ch09_anisotropic_noise" / "plan_full.yaml"

# the CUDA path's ingredients at CPU scale: width 16 (channels-last runs on the CPU only
# for convolutions of >= 16 channels), bf16 autocast, momentum, augmentation
PLAN = {
    "name": "pf",
    "data": {"dataset": "synthetic", "n_train": 64, "n_test": 16, "data_seed": 0},
    "defaults": {"model": "cnn", "width": 16, "norm": "batch", "drop_last": True,
                 "epochs": 1, "lr": 0.05, "momentum": 0.9, "augment": True, "amp": True,
                 "channels_last": True, "device": "cpu", "eval_points": 2,
                 "eval_batch_size": 64, "micro_batch_size": 8},
    "arms": {
        "A": {"batch_sizes": [8, 16], "seeds": [0], "config": {"ghost_batch_size": None}},
        "G": {"batch_sizes": [16], "seeds": [0], "config": {"ghost_batch_size": 4}},
    },
}


def _plan(**arms):
    spec = copy.deepcopy(PLAN)
    spec["arms"].update(arms)
    return validate_plan(spec)


@pytest.fixture(scope="module")
def data():
    from sgdnoise.data import load_dataset

    return load_dataset("synthetic", n_train=64, n_test=16, seed=0)


def test_cases_are_the_first_run_and_the_smallest_batch_of_each_other_kind():
    full = load_plan(PLAN_FULL, check_device=False)
    got = [r.run_id for r in preflight_cases(full.runs)]
    # plain BN without / with micro-batches, ghost BN without / with micro-batches
    assert got == ["A_B00128_s0", "A_B08192_s0", "B_B00512_s0", "B_B08192_s0"]
    noisy = load_plan(PLAN_CH09, check_device=False)
    kinds = [r.noise.kind if r.noise else None for r in preflight_cases(noisy.runs)]
    assert kinds[:2] == [None, None] and len(kinds) == preflight.MAX_CASES
    assert [r.run_id for r in preflight_cases(_plan().runs)] == [
        "A_B00008_s0", "A_B00016_s0", "G_B00016_s0"]


def test_fast_path_on_the_cpu_agrees_with_eager_within_bf16_tolerance(data):
    for run in preflight_cases(_plan().runs):
        case = compare_paths(run, data, steps=10, cuda_paths_on_cpu=True)
        assert case.ok, case.describe()
        assert 0 < case.loss_difference <= LOSS_TOLERANCE  # bf16 did round: paths differ
        assert 0 < case.param_difference <= PARAM_TOLERANCE


@pytest.mark.parametrize("inject, field", [("error", "fast_error"),
                                           ("mismatch", "param_difference")])
def test_forced_failures_are_caught(data, inject, field):
    run = _plan().runs[0]
    case = compare_paths(run, data, steps=10, inject=inject, cuda_paths_on_cpu=True)
    assert not case.ok
    if inject == "error":
        assert "injected failure" in case.fast_error and case.eager_error is None
        assert "fast path failed" in case.describe()
    else:  # η × 1.5 on the fast path: the parameters move half as far again
        assert case.param_difference > PARAM_TOLERANCE and "MISMATCH" in case.describe()


def _case(**kw):
    base = dict(run_id="r", what="w", loss_difference=1e-3, param_difference=1e-2)
    return CaseResult(**{**base, **kw})


@pytest.mark.parametrize("cases, engine, needle", [
    ([_case(), _case()], "fast", "all 2 checked cases agree"),
    ([_case(), _case(param_difference=PARAM_TOLERANCE * 2)], "eager", "disagrees"),
    ([_case(loss_difference=LOSS_TOLERANCE * 2)], "eager", "disagrees"),
    ([_case(), _case(fast_error="RuntimeError: boom")], "eager", "boom"),
    ([_case(eager_error="OutOfMemoryError: x")], "fast", "UNVERIFIED"),
    ([_case(eager_error="E: x", fast_error="F: y")], None, "neither path runs"),
    ([_case(checked=False)], "eager", "no case could be checked"),
    ([_case(), _case(checked=False)], "fast", "all 1 checked cases agree"),
])
def test_choose_engine_in_every_branch(cases, engine, needle):
    got, reason = choose_engine(cases)
    assert got == engine and needle in reason


def test_time_limit_leaves_later_cases_unchecked(data):
    lines = []
    res = run_preflight(_plan(), data, steps=2, time_limit_s=1e-9, log=lines.append)
    assert [c.checked for c in res.cases] == [True, False, False]
    assert res.engine == "fast" and "not checked (time limit)" in lines[1]
    assert lines[-1].startswith("[preflight] engine path: fast")


def test_a_forced_failure_makes_the_sweep_run_and_record_the_eager_path(data, tmp_path):
    """The fallback end to end: the preflight's fast path fails, the eager path is chosen,
    and every record of the sweep that follows says that path produced it."""
    plan = _plan(G={"batch_sizes": [16], "seeds": [0], "config": {"ghost_batch_size": 4}})
    lines = []
    res = run_preflight(plan, data, steps=3, inject="error", cuda_paths_on_cpu=True,
                        log=lines.append)
    assert res.engine == "eager" and "eager" in lines[-1]
    recs = run_plan(plan, tmp_path / "o", data=data, engine=res.engine)
    assert len(recs) == 3 and {r["engine_path"] for r in recs} == {"eager"}
    assert all(r["engine"]["autocast"] is False and r["engine"]["channels_last"] is False
               for r in recs)


def test_cli_writes_the_choice_and_exits_by_outcome(tmp_path, monkeypatch, capsys):
    path = tmp_path / "plan.yaml"
    spec = copy.deepcopy(PLAN)
    spec["arms"] = {"A": {"batch_sizes": [8], "seeds": [0]}}
    path.write_text(yaml.safe_dump(spec))
    choice = tmp_path / "engine.txt"
    assert preflight.main([str(path), "--steps", "2", "--choice-file", str(choice)]) == 0
    assert choice.read_text() == "fast\n"
    assert preflight.main([str(path), "--steps", "2", "--choice-file", str(choice),
                           "--inject", "mismatch"]) == 0
    assert choice.read_text() == "eager\n"
    assert "[preflight] engine path: eager" in capsys.readouterr().out
    assert preflight.main([str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert preflight.main([str(path), "--time-limit", "0"]) == 2
    assert "--time-limit" in capsys.readouterr().err
    choice.unlink()
    monkeypatch.setattr(preflight, "compare_paths", lambda run, data, **kw: _case(
        run_id=run.run_id, eager_error="E: x", fast_error="F: y"))
    assert preflight.main([str(path), "--choice-file", str(choice)]) == 3
    assert not choice.exists()


def test_records_of_the_default_path_say_fast(tmp_path, data):
    recs = run_plan(_plan(), tmp_path / "o", data=data)
    assert {r["engine_path"] for r in recs} == {"fast"}
    text = json.dumps(recs)
    assert str(tmp_path) not in text
