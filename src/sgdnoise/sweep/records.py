"""Run records: writing one (atomically), reading one back strictly, matching it to the run
of a plan that would write it, and reading a folder of them (plan records and the
2026-11-26 pilot's) into pandas frames."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sgdnoise.atomic import atomic_write_json
from sgdnoise.train import TrainConfig

from .plan import (
    CIFAR10_TEST_SIZE,
    CIFAR10_TRAIN_SIZE,
    SYNTHETIC_TEST_SIZE,
    TUNE_SUFFIX,
    DataSection,
    Plan,
    Run,
    preprocessing_note,
)

__all__ = [
    "PLAN_RECORD_FORMAT",
    "RECORD_COLUMNS",
    "RECORD_FORMAT",
    "SHARPNESS_COLUMNS",
    "load_records",
    "load_sharpness",
    "read_records",
    "record_path",
    "records_frame",
    "sharpness_frame",
]

PLAN_RECORD_FORMAT = "sgdnoise.sweep.run/2"
RECORD_FORMAT = "sgdnoise.sweep.run/1"  # the pilot records of 2026-11-26

#: the columns of :func:`load_records` (one row per run × evaluation)
RECORD_COLUMNS = [
    "arm", "batch_size", "seed", "run_id", "step", "epoch", "examples_seen", "lr",
    "train_loss", "train_error", "test_loss", "test_error", "gap", "param_distance",
    "running_loss", "wall_time", "status", "steps_total", "source", "n_train", "b_over_n",
    "model", "width", "norm", "lr0", "momentum", "weight_decay", "ghost_batch_size",
    "max_steps", "dataset", "data_source", "device", "git_commit", "created_utc",
    "torch_version", "seconds_per_step", "noise_kind", "injection_scale",
    "matched_small_batch", "noise_num_samples", "noise_lanczos_steps", "noise_moment_probes",
    "noise_seconds",
]
#: the columns of :func:`load_sharpness` (one row per measurement)
SHARPNESS_COLUMNS = ["run_id", "arm", "batch_size", "seed", "step", "lambda_max", "lr",
                     "two_over_lr", "source", "bn_mode", "bn_batch"]
_HISTORY_FIELDS = ("step", "epoch", "examples_seen", "lr", "train_loss", "train_error",
                   "test_loss", "test_error", "param_distance", "running_loss", "wall_time")
# the noise settings a kind uses: another value of a setting it does not use changes no
# number of the run, so a record is matched whatever it says there
_USED_BY = {"lanczos_steps": ("hessian",), "moment_probes": ("isotropic", "diag_fisher")}


# --------------------------------------------------------------------------- writing


def record_path(out_dir: str | os.PathLike, run_id: str) -> Path:
    """``out_dir/<run_id>.json``."""
    return Path(out_dir) / f"{run_id}.json"


def checkpoint_path(out_dir: str | os.PathLike, run_id: str) -> Path:
    """``out_dir/checkpoints/<run_id>.pt``."""
    return Path(out_dir) / "checkpoints" / f"{run_id}.pt"


def write_record(rec: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """``rec`` written atomically to :func:`record_path` of its run id."""
    return atomic_write_json(rec, record_path(out_dir, rec["run"]["run_id"]))


def git_commit() -> str:
    """The git commit, else ``$SGDNOISE_GIT_COMMIT``, else the first line of a
    ``GIT_COMMIT`` file at the repository root, else ``"unknown"``."""
    from sgdnoise.provenance import git_commit as from_git

    sha = from_git()
    if sha != "unknown":
        return sha
    env = os.environ.get("SGDNOISE_GIT_COMMIT", "").strip()
    if env:
        return env
    f = Path(__file__).resolve().parents[3] / "GIT_COMMIT"
    if f.is_file():
        first = f.read_text().strip().splitlines()
        if first:
            return first[0].strip()
    return "unknown"


def plan_section(plan: Plan) -> dict[str, Any]:
    """What a record keeps of its plan: the name and the data section (without
    ``data_dir``, a path of one machine)."""
    return {"name": plan.name,
            "data": {k: v for k, v in plan.data.items() if k != "data_dir"}}


def run_record(plan: Plan, run: Run, result: Any, data: Any, world: int) -> dict[str, Any]:
    """The record of ``run`` from its :class:`sgdnoise.train.TrainResult`: the run, the
    config, the evaluation history, the sharpness measurements, status, steps, wall time,
    img/s, timings, the engine path, the noise settings and seconds of a noisy run, the
    tuning section of a tuning run and the choice of a tuned one, the data identity
    (without the folder it was read from) and provenance."""
    from sgdnoise.provenance import collect

    step_s = result.extra.get("step_seconds", 0.0)
    trained = result.extra.get("examples_trained", 0)
    rec = {
        "format": PLAN_RECORD_FORMAT, "source": plan.name, "plan": plan_section(plan),
        "run": run.describe(), "config": run.config.to_dict(), "status": result.status,
        "steps": result.steps, "diverged_at_step": result.diverged_at_step,
        "wall_time_s": result.wall_time_s,
        "img_per_s": trained / step_s if step_s > 0 else None,
        "timing": {k: result.extra[k] for k in ("step_seconds", "eval_seconds",
                                                 "sharpness_seconds", "peak_memory_gib")
                   if k in result.extra},
        "resumed_from_step": result.resumed_from_step, "world_size": world,
        "history": result.history, "sharpness": result.sharpness,
    }
    if run.noise is not None:  # a plain run's record is exactly as before noise arms
        rec["noise"] = run.noise.to_dict()
        rec["timing"]["noise_seconds"] = result.optimizer.stats.noise_seconds
    engine = result.extra.get("engine")
    if engine is not None:
        rec["engine_path"] = engine["name"]  # "fast" or "eager" (sgdnoise.train.engine_paths)
        rec["engine"] = engine
    if run.lr_factor is not None:
        rec["tuning"] = {"of_arm": run.arm[:-len(TUNE_SUFFIX)], "lr_factor": run.lr_factor,
                         "n_val": run.tune.n_val, "evaluated_on": "validation",
                         "note": "test_loss and test_error in the history are measured on "
                                 "the validation set held out of the training split"}
    if run.lr_choice is not None:
        rec["lr_choice"] = run.lr_choice
    ident = data.identity.to_dict() if hasattr(data, "identity") else {}
    ident.pop("path", None)
    rec["data"] = ident
    rec["provenance"] = {**collect(run.config.device).to_dict(), "git_commit": git_commit()}
    return rec


# --------------------------------------------------------------------------- reading one


def read_record(path: Path) -> dict[str, Any]:
    """The run record at ``path``; a one-line ValueError naming the file and what to do when
    it is unreadable, empty, not JSON, not a JSON object or not a plan record."""
    todo = "delete it or move it away (its run is then redone), or use another --out folder"
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: the record cannot be read ({err.strerror}); {todo}") from None
    if not raw.strip():
        raise ValueError(f"{path}: the record is empty (a write that was cut short?); {todo}")
    try:
        rec = json.loads(raw)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not a JSON run record ({err}); {todo}") from None
    if not isinstance(rec, dict):
        raise ValueError(f"{path}: holds a JSON {type(rec).__name__}, not a run record; {todo}")
    if rec.get("format") != PLAN_RECORD_FORMAT or not isinstance(rec.get("config"), dict):
        raise ValueError(f"{path}: not a run record of format {PLAN_RECORD_FORMAT!r} (format "
                         f"{rec.get('format')!r}); {todo}")
    return rec


def read_record_if_any(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, None while it is missing or unreadable (a torn record
    is reported by the strict :func:`read_record` when the sweep reaches its run)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


# --------------------------------------------------------------------------- matching


def _first_difference(label: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """``"<label> (<key>: record <old>, plan <new>)"`` for the first key whose values
    differ (in the order of ``new``, then the keys only ``old`` has), with the number of
    further differences; None when equal."""
    keys = [k for k in [*new, *(k for k in old if k not in new)]
            if old.get(k, "<absent>") != new.get(k, "<absent>")]
    if not keys:
        return None
    k = keys[0]
    more = f"; {len(keys) - 1} more" if len(keys) > 1 else ""
    return (f"{label} ({k}: record {old.get(k, '<absent>')!r}, plan "
            f"{new.get(k, '<absent>')!r}{more})")


def _identity_section(ident: Mapping[str, Any]) -> dict[str, Any]:
    """The data section as a data identity shows it (records without a plan section)."""
    return {"dataset": "synthetic" if ident.get("source") == "synthetic" else (
                "cifar10" if ident.get("source") else None),
            "n_train": ident.get("n_train"), "n_test": ident.get("n_test"),
            "data_seed": ident.get("subset_seed"), "preprocessing": ident.get("preprocessing")}


def _expected_identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields :meth:`Plan.load_data` gives for the data section ``data``
    (``data_seed`` stands for the identity's ``subset_seed``: the seed of a CIFAR-10 subset;
    a synthetic set's seed is not in its identity)."""
    synthetic = data["dataset"] == "synthetic"
    subset = not synthetic and (data["n_train"] is not None or data["n_test"] is not None)
    return {"dataset": data["dataset"],
            "n_train": data["n_train"] or CIFAR10_TRAIN_SIZE,
            "n_test": data["n_test"] or (SYNTHETIC_TEST_SIZE if synthetic
                                         else CIFAR10_TEST_SIZE),
            "data_seed": data["data_seed"] if subset else None,
            "preprocessing": preprocessing_note(data)}


def _noise_fields(noise: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's noise settings as config entries ``noise.<key>`` (``noise: None`` for plain
    SGD), compared with the config; a setting its kind does not use is left out."""
    if not isinstance(noise, Mapping):
        return {"noise": noise}
    kind = noise.get("kind")
    return {f"noise.{k}": v for k, v in noise.items() if kind in _USED_BY.get(k, (kind,))}


def _data_mismatch(rec: Mapping[str, Any], plan: Plan) -> str | None:
    """What of the plan name and data section the record disagrees on (None: nothing)."""
    mine = plan_section(plan)
    section = rec.get("plan")
    if isinstance(section, Mapping):
        name = section.get("name")
        defaults = {f.name: f.default for f in dataclasses.fields(DataSection)
                    if f.name != "data_dir"}
        data = _first_difference("data section", {**defaults, **(section.get("data") or {})},
                                 mine["data"])
    else:
        name = rec.get("source")
        data = _first_difference("data section", _identity_section(rec.get("data") or {}),
                                 _expected_identity(plan.data))
    if name != plan.name:
        return f"plan name (record {name!r}, plan {plan.name!r})"
    return data


def record_mismatch(rec: Mapping[str, Any], plan: Plan, run: Run,
                    expected: Mapping[str, Any] | None = None) -> str | None:
    """What of ``run`` of ``plan`` the record ``rec`` disagrees on, as "<what> (<key>:
    record <value>, plan <value>)" (None: it is that run's record): the plan name, the data
    section (a key the record lacks counts as its default), the config (a field the record
    lacks counts as TrainConfig's default, so records written before a field existed still
    match when the run keeps the default) or the noise settings (``noise.<key>`` entries of
    the config; a setting the kind does not use is not compared). Records written before
    records carried their plan section are matched on their ``source`` and data identity.
    ``expected``: the config the record must hold when it is not ``run.config`` (a tuned
    run at the factor its tuning records chose)."""
    data = _data_mismatch(rec, plan)
    if data:
        return data
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    noise = run.noise.to_dict() if run.noise is not None else None
    want = dict(expected) if expected is not None else run.config.to_dict()
    return _first_difference("config", {**defaults, **rec["config"],
                                        **_noise_fields(rec.get("noise"))},
                             {**want, **_noise_fields(noise)})


# --------------------------------------------------------------------------- reading many


def record_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The ``*.json`` files under ``paths`` (files, or folders searched recursively;
    hidden files skipped), sorted per folder."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*.json")) if not f.name.startswith("."))
        elif p.exists():
            files.append(p)
    return files


def read_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every run record under ``paths`` (both formats), normalised to the plan format; the
    pilot records (format 1) get arm ``"pilot"`` and source ``"pilot"``
    (:func:`pilot_as_plan_record`). Other JSON files are skipped; a ``*.json`` file that
    cannot be read as JSON is skipped with a warning naming it."""
    out = []
    for f in record_files(paths):
        try:
            rec = json.loads(f.read_bytes())
        except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
            warnings.warn(f"{f}: skipped, not a readable JSON record ({err}); delete or "
                          "replace it", stacklevel=2)
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("format") == PLAN_RECORD_FORMAT:
            out.append(rec)
        elif rec.get("format") == RECORD_FORMAT:
            out.append(pilot_as_plan_record(rec))
    return out


def pilot_as_plan_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A pilot record (format ``sgdnoise.sweep.run/1``, the 2026-11-26 GPU pilot) in the
    plan format: arm and source ``"pilot"``, run id ``pilot_B<B>_s<seed>``, the history
    with ``examples_seen`` from the epochs and no ``param_distance``."""
    sc, tc, data = rec["sweep_config"], rec.get("train_config", {}), rec.get("data", {})
    b, seed = int(rec["batch_size"]), int(sc.get("seed", 0))
    n_train = data.get("n_train") or sc.get("n_train") or CIFAR10_TRAIN_SIZE
    history = [{**h, "examples_seen": None if h.get("epoch") is None
                else int(h["epoch"]) * n_train, "param_distance": None}
               for h in rec["history"]]
    cfg = {**tc, "batch_size": b, "seed": seed, "max_steps": None, "ghost_batch_size": None}
    return {
        "format": PLAN_RECORD_FORMAT, "source": "pilot",
        "run": {"arm": "pilot", "batch_size": b, "seed": seed,
                "run_id": f"pilot_B{b:05d}_s{seed}"},
        "config": cfg, "status": rec["status"], "steps": rec["steps"],
        "history": history, "sharpness": [], "data": data,
        "provenance": rec.get("provenance", {}),
    }


def _noise_columns(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level timing and noise columns of :func:`load_records` for one record."""
    timing = rec.get("timing") or {}
    segment = rec["steps"] - (rec.get("resumed_from_step") or 0)
    step_s = timing.get("step_seconds")
    noise = rec.get("noise") or {}
    return {
        "seconds_per_step": step_s / segment if step_s is not None and segment > 0
        else math.nan,
        "noise_kind": noise.get("kind", "none"),
        "injection_scale": float(noise.get("injection_scale", 0.0)),
        "matched_small_batch": noise.get("matched_small_batch"),
        "noise_num_samples": noise.get("num_samples"),
        "noise_lanczos_steps": noise.get("lanczos_steps"),
        "noise_moment_probes": noise.get("moment_probes"),
        "noise_seconds": timing.get("noise_seconds", 0.0 if not noise else None),
    }


def _run_columns(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level columns of :func:`load_records` for one record."""
    run, cfg, prov, data = rec["run"], rec["config"], rec.get("provenance", {}), \
        rec.get("data", {})
    n_train = data.get("n_train") or CIFAR10_TRAIN_SIZE
    return {
        **run, "status": rec["status"], "steps_total": rec["steps"],
        "source": rec.get("source"), "n_train": n_train,
        "b_over_n": run["batch_size"] / n_train, "model": cfg.get("model"),
        "width": cfg.get("width"), "norm": cfg.get("norm"), "lr0": cfg.get("lr"),
        "momentum": cfg.get("momentum"), "weight_decay": cfg.get("weight_decay"),
        "ghost_batch_size": cfg.get("ghost_batch_size"),
        "max_steps": cfg.get("max_steps"), "dataset": data.get("source") and (
            "synthetic" if data.get("source") == "synthetic" else "cifar10"),
        "data_source": data.get("source"), "device": prov.get("device"),
        "git_commit": prov.get("git_commit"), "created_utc": prov.get("created_utc"),
        "torch_version": prov.get("torch_version"),
        **_noise_columns(rec),
    }


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Run records (files, or folders searched recursively for ``*.json``) as a long pandas
    DataFrame: one row per run × evaluation with the columns of :data:`RECORD_COLUMNS`:
    ``arm, batch_size, seed, run_id, step, epoch, examples_seen, lr, train_loss, train_error,
    test_loss, test_error, gap (= test − train error), param_distance, running_loss,
    wall_time, status, steps_total, source`` ("pilot" or the plan name), ``n_train,
    b_over_n`` and the run-level ``model, width, norm, lr0, momentum, weight_decay,
    ghost_batch_size, max_steps, dataset, data_source, device, git_commit, created_utc,
    torch_version``, ``seconds_per_step`` (training-step seconds per step of the last
    segment; NaN without timing) and the noise settings ``noise_kind`` ("none" for plain
    SGD), ``injection_scale`` (s; 0 for plain SGD), ``matched_small_batch``,
    ``noise_num_samples``, ``noise_lanczos_steps``, ``noise_moment_probes`` (None for plain
    SGD) and ``noise_seconds`` (seconds drawing noise in the last segment). Reads the plan
    records and the 2026-11-26 pilot records (arm "pilot"). An empty frame with these columns
    when there is none."""
    return records_frame(read_records(paths))


def records_frame(records: Iterable[Mapping[str, Any]]):
    """The frame of :func:`load_records` for records already read (:func:`read_records`)."""
    import pandas as pd

    rows = []
    for rec in records:
        base = _run_columns(rec)
        for h in rec["history"]:
            row = {**base, **{k: h.get(k) for k in _HISTORY_FIELDS}}
            row["gap"] = h["test_error"] - h["train_error"]
            rows.append(row)
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for col in ("matched_small_batch", "noise_num_samples", "noise_lanczos_steps",
                "noise_moment_probes"):
        df[col] = df[col].astype("Int64")  # integers or <NA> (plain SGD, null settings)
    return df.sort_values(["source", "arm", "batch_size", "seed", "step"]).reset_index(
        drop=True)


def load_sharpness(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """The sharpness measurements of the records under ``paths``: one row per measurement
    with ``run_id, arm, batch_size, seed, step, lambda_max, lr, two_over_lr, source`` and the
    objective measured, ``bn_mode`` ("eval": BatchNorm running statistics, also for records
    written before the mode was recorded; "train": statistics of fixed groups of
    ``bn_batch`` examples)."""
    return sharpness_frame(read_records(paths))


def sharpness_frame(records: Iterable[Mapping[str, Any]]):
    """The frame of :func:`load_sharpness` for records already read (:func:`read_records`)."""
    import pandas as pd

    rows = []
    for rec in records:
        run = rec["run"]
        for s in rec.get("sharpness", []):
            rows.append({**run, "step": s["step"], "lambda_max": s["lambda_max"],
                         "lr": s["lr"], "two_over_lr": s.get("two_over_lr"),
                         "source": rec.get("source"), "bn_mode": s.get("bn_mode", "eval"),
                         "bn_batch": s.get("bn_batch")})
    df = pd.DataFrame(rows, columns=SHARPNESS_COLUMNS)
    return df.sort_values(["arm", "batch_size", "seed", "step"]).reset_index(drop=True)
