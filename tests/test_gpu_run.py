"""Tests of the GPU session scripts (book/params/ch08_resnet_sweep/gpu_run.sh and chapter 9's
wrapper), run end to end on the CPU with the tiny plans: the preflight first, one tar of the
new records and the session log, no absolute path in a record, the fallback to the eager path,
and values that reach Python only as arguments (a plan path with a quote, an unsafe plan
name, a budget that is not a number)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "book" / "params" / "ch08_resnet_sweep" / "gpu_run.sh"
SCRIPT_CH09 = REPO / "book" / "params" / "ch09_anisotropic_noise" / "gpu_run.sh"
PLAN_TEST = REPO / "book" / "params" / "ch08_resnet_sweep" / "plan_test.yaml"
PLAN_CH09_TEST = REPO / "book" / "params" / "ch09_anisotropic_noise" / "plan_test.yaml"


def _run(script: Path, tmp_path: Path, **env_changes: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
                "PLAN": str(PLAN_TEST), "RECORDS": str(tmp_path / "records"),
                "OUT": str(tmp_path / "out"), "BUDGET": "600", "PYTHON": sys.executable,
                "SGDNOISE_GIT_COMMIT": "abc1234"})
    env.update(env_changes)
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=900, cwd=tmp_path)


def _tar(path: Path) -> tuple[list[str], dict[str, str]]:
    """The record names in the tar and the text of every member."""
    with tarfile.open(path) as tar:
        texts = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()
                 if m.isfile()}
    return sorted(n for n in texts if n.endswith(".json")), texts


def test_session_runs_the_preflight_then_packs_new_records_and_its_log(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "README.md").write_text("kept\n")
    proc = _run(SCRIPT, tmp_path, SHARD="0/8")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "[preflight] engine path: fast" in proc.stdout
    assert "[gpu_run] engine path: fast" in proc.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["ch08_records.tar"]
    names, texts = _tar(tmp_path / "out" / "ch08_records.tar")
    # shard 0/8 of plan_test: positions 0, 8, 16 of the priority order
    assert names == ["./A_B00008_s0.json", "./A_B00008_s1.json",
                     "./C-tune_B00016_s0_x0.5.json"]
    logs = [n for n in texts if n.startswith("./sessions/session_")]
    assert len(logs) == 1 and "[preflight] case 1: A_B00008_s0" in texts[logs[0]]
    for name in names:
        rec = json.loads(texts[name])
        assert rec["engine_path"] == "fast" and rec["provenance"]["git_commit"] != "unknown"
        for path in (tmp_path, REPO, Path.home()):
            assert str(path) not in texts[name]
    assert "A_B00008_s1" in proc.stdout  # the summary
    # a second session, 3 processes sharing the device, packs only the runs not recorded
    # (arm A and D-plain of the same plan: A_B00032_s0, A_B00032_s1, D-plain_B00064_s0)
    spec = yaml.safe_load(PLAN_TEST.read_text())
    spec["arms"] = {k: spec["arms"][k] for k in ("A", "D-plain")}
    spec["priority"] = []
    small = tmp_path / "plan_small.yaml"
    small.write_text(yaml.safe_dump(spec))
    proc = _run(SCRIPT, tmp_path, PLAN=str(small), CONCURRENT="3", OUT=str(tmp_path / "out2"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    again, _ = _tar(tmp_path / "out2" / "ch08_records.tar")
    assert "[shard 2/3]" in proc.stdout and "3 new record(s)" in proc.stdout
    assert again == ["./A_B00032_s0.json", "./A_B00032_s1.json", "./D-plain_B00064_s0.json"]


def test_a_failing_fast_path_runs_the_plan_on_the_eager_path(tmp_path):
    proc = _run(SCRIPT, tmp_path, SHARD="0/23", PREFLIGHT_INJECT="error")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "fast path failed: RuntimeError: injected failure" in proc.stdout
    assert "[gpu_run] engine path: eager" in proc.stdout
    names, texts = _tar(tmp_path / "out" / "ch08_records.tar")
    assert names == ["./A_B00008_s0.json"]
    assert json.loads(texts[names[0]])["engine_path"] == "eager"


def test_a_plan_path_with_quotes_reaches_python_as_an_argument(tmp_path):
    """A quote or a command substitution in the plan path is a file name, not code."""
    folder = tmp_path / "it's $(touch PWNED) \"x\""
    folder.mkdir()
    plan = folder / "plan'; touch PWNED2; '.yaml"
    shutil.copy(PLAN_TEST, plan)
    proc = _run(SCRIPT, tmp_path, PLAN=str(plan), SHARD="0/23")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("PWNED*")) and not list(REPO.glob("PWNED*"))
    names, _ = _tar(tmp_path / "out" / "ch08_records.tar")
    assert names == ["./A_B00008_s0.json"]


def test_unsafe_plan_names_and_budgets_are_refused_before_any_work(tmp_path):
    spec = yaml.safe_load(PLAN_TEST.read_text())
    spec["name"] = "../../evil name"
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(spec))
    proc = _run(SCRIPT, tmp_path, PLAN=str(plan))
    # the plan validator refuses it first (the script's own check is a second line)
    assert proc.returncode == 2 and "'../../evil name'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    proc = _run(SCRIPT, tmp_path, BUDGET="a[$(touch PWNED)]")
    assert proc.returncode == 2 and "BUDGET must be a number" in proc.stderr
    proc = _run(SCRIPT, tmp_path, CONCURRENT="x[$(touch PWNED)]")
    assert proc.returncode == 2 and "CONCURRENT" in proc.stderr
    assert not list(tmp_path.rglob("PWNED*")) and not list(REPO.glob("PWNED*"))
    proc = _run(SCRIPT, tmp_path, PLAN=str(tmp_path / "missing.yaml"))
    assert proc.returncode != 0 and "missing.yaml" in proc.stderr


def test_ch09_wrapper_packs_its_records_into_a_ch09_tar(tmp_path):
    proc = _run(SCRIPT_CH09, tmp_path, PLAN=str(PLAN_CH09_TEST), SHARD="0/8")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["ch09_records.tar"]
    assert "ch08" not in proc.stdout and "[preflight] engine path: fast" in proc.stdout
    names, texts = _tar(tmp_path / "out" / "ch09_records.tar")
    # shard 0/8 of plan_test: positions 0, 8, 16 of the priority order
    assert names == ["./LB-diag-fisher_B00024_s1.json",
                     "./LB-subsampled-epochT_B00024_s0.json", "./SB_B00008_s0.json"]
    rec = json.loads(texts["./SB_B00008_s0.json"])
    assert "noise" not in rec and rec["provenance"]["git_commit"] != "unknown"
