"""Batch-size sweeps: one training run per batch size, each recorded as one JSON file.

Command line::

    sgdnoise-sweep CONFIG.yaml --out DIR [--order as-given|largest-first|smallest-first]
    python -m sgdnoise.sweep CONFIG.yaml --out DIR
    torchrun --nproc_per_node=K -m sgdnoise.sweep CONFIG.yaml --out DIR   # data parallel

The YAML file is a flat mapping of the keys in :data:`SWEEP_KEYS`. The whole config is
validated before any training starts; a bad key stops the command with a message naming it
(exit code 2). For each batch size the sweep writes ``DIR/run_B<B>.json`` (atomically, as soon
as the run ends) holding the config, the per-epoch metrics, steps, wall time, status
("finished" or "diverged"), the data identity and the provenance (device, torch and sgdnoise
versions, git commit). A checkpoint is saved after every epoch under ``DIR/checkpoints/``;
running the same command again skips runs that have a record and resumes an interrupted one
from its last checkpoint, ending with exactly the numbers of an uninterrupted run (CPU, same
seed). Checkpoints are deleted once a run's record is written (``--keep-checkpoints`` keeps
them).

Reading results back: :func:`load_records` (JSON records -> long pandas DataFrame, one row per
run and epoch), :func:`summarize` (one row per batch size), :func:`scaled_batch_sizes`
(batch sizes for a subset with the same ``B/N``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .params import Param

__all__ = [
    "RECORD_FORMAT",
    "SWEEP_KEYS",
    "SweepConfigError",
    "design_table",
    "sweep_findings",
    "load_records",
    "load_sweep_config",
    "main",
    "plateau_epoch",
    "record_path",
    "records_provenance",
    "run_sweep",
    "scaled_batch_sizes",
    "summarize",
    "train_config_for",
    "validate_sweep_config",
]

RECORD_FORMAT = "sgdnoise.sweep.run/1"
CIFAR10_TRAIN_SIZE = 50_000
_MODEL_NAMES_FALLBACK = ("softmax", "mlp", "cnn", "resnet20", "resnet18", "resnet34")


class SweepConfigError(ValueError):
    """A sweep config is invalid; the message names the key."""


def _model_names() -> tuple[str, ...]:
    try:
        from sgdnoise.models import MODEL_NAMES

        return tuple(MODEL_NAMES)
    except ImportError:  # pragma: no cover - models is part of the package
        return _MODEL_NAMES_FALLBACK


# key -> (Param for a non-null value, default, nullable). ``None`` as Param: free-form.
SWEEP_KEYS: dict[str, tuple[Param | None, Any, bool]] = {
    "name": (Param("str"), "sweep", False),
    "dataset": (Param("str", choices=("cifar10", "synthetic")), "cifar10", False),
    "data_dir": (Param("str"), None, True),
    "data_seed": (Param("int", low=0), 0, False),
    "n_train": (Param("int", low=1), None, True),
    "n_test": (Param("int", low=1), None, True),
    "model": (Param("str"), None, False),
    "width": (Param("int", low=1), None, True),
    "norm": (Param("str", choices=("batch", "group", "none")), "batch", False),
    "batch_sizes": (Param("list[int]", low=1), None, False),
    "epochs": (Param("int", low=1), None, False),
    "lr": (Param("float"), None, False),
    "lr_scaling": (Param("str", choices=("none", "linear", "sqrt")), "none", False),
    "base_batch_size": (Param("int", low=1), 128, False),
    "momentum": (Param("float", low=0.0, high=0.999999), 0.0, False),
    "nesterov": (Param("bool"), False, False),
    "weight_decay": (Param("float", low=0.0), 0.0, False),
    "warmup_epochs": (Param("float", low=0.0), 0.0, False),
    "schedule": (Param("str", choices=("constant", "cosine")), "constant", False),
    "seed": (Param("int", low=0), None, False),
    "device": (Param("str"), "cpu", False),
    "micro_batch_size": (Param("int", low=1), None, True),
    "eval_batch_size": (Param("int", low=1), 1000, False),
    "augment": (Param("bool"), True, False),
    "channels_last": (Param("bool"), True, False),
    "amp": (Param("bool"), True, False),
    "drop_last": (Param("bool"), False, False),
    "eval_at_start": (Param("bool"), True, False),
    "divergence_check_every": (Param("int", low=1), 1, False),
}
REQUIRED = ("model", "batch_sizes", "epochs", "lr", "seed")


def _fail(key: str, message: str) -> SweepConfigError:
    return SweepConfigError(f"config key {key!r}: {message}")


def validate_sweep_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a sweep config and fill in defaults; return the validated dict.

    Raises :class:`SweepConfigError` (a ValueError) naming the key for: an unknown key, a
    missing required key (``model, batch_sizes, epochs, lr, seed``), a value of the wrong
    type or outside its range, ``lr <= 0``, an unknown model, a batch size above ``n_train``
    (50,000 for the whole CIFAR-10 training set), a repeated batch size, or a CUDA device
    when none is available."""
    if not isinstance(config, Mapping):
        raise SweepConfigError(f"a sweep config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(SWEEP_KEYS))
    if unknown:
        raise _fail(unknown[0], f"unknown key (unknown: {unknown}); allowed keys: "
                                f"{sorted(SWEEP_KEYS)}")
    out: dict[str, Any] = {}
    for key, (param, default, nullable) in SWEEP_KEYS.items():
        if key not in config:
            if key in REQUIRED:
                raise _fail(key, "missing (required keys: " + ", ".join(REQUIRED) + ")")
            out[key] = default
            continue
        value = config[key]
        if value is None:
            if not nullable:
                raise _fail(key, "must not be null")
            out[key] = None
            continue
        try:
            out[key] = param.check(key, value) if param is not None else value
        except ValueError as err:
            raise _fail(key, str(err)) from None
    if out["model"] not in _model_names():
        raise _fail("model", f"unknown model {out['model']!r}; allowed: {list(_model_names())}")
    if not (out["lr"] > 0 and math.isfinite(out["lr"])):
        raise _fail("lr", f"must be a finite number > 0, got {out['lr']!r}")
    if out["dataset"] == "synthetic" and out["n_train"] is None:
        raise _fail("n_train", "must be set for dataset 'synthetic'")
    n_train = out["n_train"] if out["n_train"] is not None else CIFAR10_TRAIN_SIZE
    if out["dataset"] == "cifar10" and n_train > CIFAR10_TRAIN_SIZE:
        raise _fail("n_train", f"{n_train} exceeds the {CIFAR10_TRAIN_SIZE} CIFAR-10 images")
    seen: set[int] = set()
    for i, b in enumerate(out["batch_sizes"]):
        if b > n_train:
            raise _fail("batch_sizes", f"batch_sizes[{i}]={b} exceeds n_train={n_train}")
        if b in seen:
            raise _fail("batch_sizes", f"batch size {b} appears twice")
        seen.add(b)
    dev = out["device"]
    if dev == "auto":
        pass
    else:
        try:
            tdev = torch.device(dev)
        except (RuntimeError, TypeError):
            raise _fail("device", f"not a torch device: {dev!r} (use cpu, cuda, cuda:N or "
                                  "auto)") from None
        if tdev.type not in ("cpu", "cuda"):
            raise _fail("device", f"must be cpu, cuda, cuda:N or auto, got {dev!r}")
        if tdev.type == "cuda" and not torch.cuda.is_available():
            raise _fail("device", f"{dev!r} requested but CUDA is not available here")
    return out


def load_sweep_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a YAML sweep config."""
    import yaml

    path = Path(path)
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        raise SweepConfigError(f"cannot read config {str(path)!r}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SweepConfigError(f"config {str(path)!r} is not valid YAML: {err}") from None
    return validate_sweep_config(data if data is not None else {})


def _resolve_device(dev: str) -> str:
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def train_config_for(config: Mapping[str, Any], batch_size: int):
    """The :class:`sgdnoise.train.TrainConfig` of one run of a validated sweep config."""
    from sgdnoise.train import TrainConfig

    fields = {k: config[k] for k in (
        "model", "width", "norm", "epochs", "lr", "momentum", "weight_decay", "nesterov",
        "lr_scaling", "base_batch_size", "warmup_epochs", "schedule", "augment", "seed",
        "micro_batch_size", "eval_batch_size", "channels_last", "amp", "drop_last",
        "eval_at_start", "divergence_check_every",
    )}
    return TrainConfig(batch_size=int(batch_size), device=_resolve_device(config["device"]),
                       **fields)


def record_path(out_dir: str | os.PathLike, batch_size: int) -> Path:
    """``out_dir/run_B<batch size, 5 digits>.json``."""
    return Path(out_dir) / f"run_B{int(batch_size):05d}.json"


def _checkpoint_path(out_dir: Path, batch_size: int) -> Path:
    return out_dir / "checkpoints" / f"run_B{int(batch_size):05d}.pt"


def _atomic_write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _order(batch_sizes: Sequence[int], order: str) -> list[int]:
    if order == "largest-first":
        return sorted(batch_sizes, reverse=True)
    if order == "smallest-first":
        return sorted(batch_sizes)
    if order == "as-given":
        return list(batch_sizes)
    raise ValueError(f"order must be one of ['as-given', 'largest-first', 'smallest-first'], "
                     f"got {order!r}")


def _same_sweep(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two validated configs describe the same runs (the list of batch sizes may differ)."""
    ignore = {"batch_sizes", "name"}
    return {k: v for k, v in a.items() if k not in ignore} == {
        k: v for k, v in b.items() if k not in ignore
    }


def run_sweep(
    config: Mapping[str, Any] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    order: str = "as-given",
    progress: bool = True,
    keep_checkpoints: bool = False,
    data: Any = None,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a batch-size sweep and return its records, one per batch size, in
    the order run.

    config: a mapping or the path of a YAML file (validated before anything runs).
    data: an already loaded :class:`sgdnoise.data.ImageData` matching the config (optional).
    A run whose record exists is not rerun (its record is read back); a record written by a
    different config raises ValueError rather than mixing results.
    """
    from sgdnoise import distributed as dist_mod
    from sgdnoise.provenance import collect
    from sgdnoise.train import train

    if isinstance(config, (str, os.PathLike)):
        cfg = load_sweep_config(config)
    else:
        cfg = validate_sweep_config(config)
    sizes = _order(cfg["batch_sizes"], order)
    out = Path(out_dir)
    dist = dist_mod.init_from_env(_resolve_device(cfg["device"]))
    is_main = dist is None or dist.rank == 0
    say = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not is_main:
        say = lambda msg: None  # noqa: E731
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    # refuse to mix results of different configs in one folder
    for b in sizes:
        p = record_path(out, b)
        if p.exists():
            old = json.loads(p.read_text())
            if not _same_sweep(old.get("sweep_config", {}), cfg):
                raise ValueError(
                    f"{p} was written by a different sweep config; use another --out folder"
                )
    if data is None:
        from sgdnoise.data import load_dataset

        data = load_dataset(cfg["dataset"], n_train=cfg["n_train"], n_test=cfg["n_test"],
                            seed=cfg["data_seed"], data_dir=cfg["data_dir"])
    identity = data.identity.to_dict() if hasattr(data, "identity") else {}
    records: list[dict[str, Any]] = []
    for b in sizes:
        path = record_path(out, b)
        if path.exists():
            say(f"[sweep] B={b}: record exists ({path.name}), skipped")
            records.append(json.loads(path.read_text()))
            continue
        tcfg = train_config_for(cfg, b)
        ckpt = _checkpoint_path(out, b)
        say(f"[sweep] B={b}: training ({'resuming' if ckpt.exists() else 'new run'})")
        result = train(tcfg, data, checkpoint_path=ckpt, progress=progress,
                       desc=f"{cfg['name']} B={b}")
        prov = collect(tcfg.device).to_dict()
        record = {
            "format": RECORD_FORMAT,
            "name": cfg["name"],
            "batch_size": b,
            "status": result.status,
            "steps": result.steps,
            "epochs_completed": sum(1 for h in result.history if h["epoch"] > 0),
            "diverged_at_step": result.diverged_at_step,
            "wall_time_s": result.wall_time_s,
            "resumed_from_epoch": result.resumed_from_epoch,
            "world_size": 1 if dist is None else dist.world_size,
            **result.extra,
            "history": result.history,
            "train_config": tcfg.to_dict(),
            "sweep_config": cfg,
            "data": identity,
            "provenance": prov,
        }
        if is_main:
            _atomic_write_json(record, path)
            if not keep_checkpoints and ckpt.exists():
                ckpt.unlink()
        if dist is not None:
            dist.barrier()
        last = result.history[-1] if result.history else {}
        say(f"[sweep] B={b}: {result.status}, {result.steps} steps, "
            f"{result.wall_time_s:.1f} s, train err {last.get('train_error', float('nan')):.3f}"
            f", test err {last.get('test_error', float('nan')):.3f}")
        records.append(record)
    return records


# --------------------------------------------------------------------------- reading results


def _iter_record_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("run_B*.json")))  # seed sub-folders included
        elif p.exists():
            files.append(p)
    return files


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Read sweep JSON records (files, or folders holding ``run_B*.json``) into a long
    pandas DataFrame: one row per run and evaluation, with columns ``batch_size, epoch, step,
    lr, train_loss, train_error, test_loss, test_error, gap (= test − train error),
    running_loss, wall_time, status, steps_total, n_train, b_over_n, model, width, norm,
    dataset, data_source, device, git_commit, created_utc, torch_version, sgdnoise_version,
    name, seed``. Folders are searched recursively, so runs of several seeds can live in
    sub-folders. An empty frame (with these columns) when there is no record."""
    import pandas as pd

    cols = ["batch_size", "epoch", "step", "lr", "train_loss", "train_error", "test_loss",
            "test_error", "gap", "running_loss", "wall_time", "status", "steps_total",
            "n_train", "b_over_n", "model", "width", "norm", "dataset", "data_source",
            "device", "git_commit", "created_utc", "torch_version", "sgdnoise_version", "name",
            "seed"]
    rows = []
    for f in _iter_record_files(paths):
        rec = json.loads(f.read_text())
        if rec.get("format") != RECORD_FORMAT:
            continue
        sc, prov, data = rec["sweep_config"], rec["provenance"], rec.get("data", {})
        n_train = data.get("n_train") or sc.get("n_train") or CIFAR10_TRAIN_SIZE
        for h in rec["history"]:
            rows.append({
                **{k: h.get(k) for k in ("epoch", "step", "lr", "train_loss", "train_error",
                                         "test_loss", "test_error", "running_loss",
                                         "wall_time")},
                "gap": h["test_error"] - h["train_error"],
                "batch_size": rec["batch_size"],
                "status": rec["status"],
                "steps_total": rec["steps"],
                "n_train": n_train,
                "b_over_n": rec["batch_size"] / n_train,
                "model": sc["model"],
                "width": rec["train_config"].get("width"),
                "norm": sc["norm"],
                "dataset": sc["dataset"],
                "data_source": data.get("source"),
                "device": prov.get("device"),
                "git_commit": prov.get("git_commit"),
                "created_utc": prov.get("created_utc"),
                "torch_version": prov.get("torch_version"),
                "sgdnoise_version": prov.get("sgdnoise_version"),
                "name": rec.get("name"),
                "seed": sc.get("seed"),
            })
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["batch_size", "seed", "epoch"]).reset_index(drop=True)


def plateau_epoch(errors: Sequence[float], *, tol: float = 0.01) -> int:
    """Index of the first evaluation after which the error never improves by more than
    ``tol`` again: the smallest ``k`` with ``min(errors[k:]) >= errors[k] − tol``."""
    errs = list(errors)
    if not errs:
        raise ValueError("errors must not be empty")
    for k in range(len(errs)):
        if min(errs[k:]) >= errs[k] - tol:
            return k
    return len(errs) - 1  # pragma: no cover - the last index always qualifies


def summarize(df, *, plateau_tol: float = 0.01):
    """One row per batch size from :func:`load_records`'s frame: ``batch_size, b_over_n,
    status, epochs, steps, final_train_error, final_test_error, final_gap, best_test_error,
    train_plateau_epoch, test_plateau_epoch`` (see :func:`plateau_epoch`), ``wall_time``,
    ``n_seeds`` and ``final_test_error_sd`` (standard deviation over seeds; NaN for one seed).

    With several seeds per batch size, the per-epoch curves are first averaged over seeds
    (only over seeds that reached that epoch) and the summary is taken on the mean curve; a
    batch size counts as ``diverged`` if any of its seeds diverged."""
    import pandas as pd

    cols = ["batch_size", "b_over_n", "status", "epochs", "steps", "final_train_error",
            "final_test_error", "final_gap", "best_test_error", "train_plateau_epoch",
            "test_plateau_epoch", "wall_time", "n_seeds", "final_test_error_sd"]
    if "seed" not in df.columns:
        df = df.assign(seed=0)
    df = df.assign(seed=df["seed"].fillna(-1))
    rows = []
    for b, g in df.groupby("batch_size", sort=True):
        finals = g.sort_values("epoch").groupby("seed").tail(1)
        mean = (g.groupby("epoch", sort=True)[["step", "train_error", "test_error", "b_over_n",
                                                "wall_time"]].mean().reset_index())
        last = mean.iloc[-1]
        status = "diverged" if (g["status"] == "diverged").any() else g["status"].iloc[-1]
        rows.append({
            "batch_size": int(b),
            "b_over_n": float(last["b_over_n"]),
            "status": status,
            "epochs": int(mean["epoch"].max()),
            "steps": int(round(last["step"])),
            "final_train_error": float(last["train_error"]),
            "final_test_error": float(last["test_error"]),
            "final_gap": float(last["test_error"] - last["train_error"]),
            "best_test_error": float(mean["test_error"].min()),
            "train_plateau_epoch": int(mean["epoch"].iloc[
                plateau_epoch(mean["train_error"].tolist(), tol=plateau_tol)]),
            "test_plateau_epoch": int(mean["epoch"].iloc[
                plateau_epoch(mean["test_error"].tolist(), tol=plateau_tol)]),
            "wall_time": float(last["wall_time"]),
            "n_seeds": int(finals["seed"].nunique()),
            "final_test_error_sd": float(finals["test_error"].std(ddof=1))
            if len(finals) > 1 else float("nan"),
        })
    return pd.DataFrame(rows, columns=cols)


def records_provenance(df) -> list[dict[str, Any]]:
    """The distinct (device, git commit, torch version, date range, data source) behind a
    :func:`load_records` frame, one dict each."""
    if len(df) == 0:
        return []
    out = []
    keys = ["device", "git_commit", "torch_version", "data_source"]
    for vals, g in df.groupby(keys, dropna=False, sort=True):
        d = dict(zip(keys, vals, strict=True))
        d["first_created_utc"] = str(g["created_utc"].min())
        d["last_created_utc"] = str(g["created_utc"].max())
        d["batch_sizes"] = sorted(int(b) for b in g["batch_size"].unique())
        out.append(d)
    return out


def scaled_batch_sizes(
    batch_sizes: Sequence[int], n_train: int, *, reference_n: int = CIFAR10_TRAIN_SIZE
) -> list[int]:
    """Batch sizes for a training set of ``n_train`` examples with the same ratios ``B/N`` as
    ``batch_sizes`` on ``reference_n`` examples: ``max(1, round(B · n_train / reference_n))``,
    capped at ``n_train``. Raises ValueError if two of them coincide after rounding."""
    out = [min(n_train, max(1, round(b * n_train / reference_n))) for b in batch_sizes]
    if len(set(out)) != len(out):
        raise ValueError(
            f"n_train={n_train} is too small: the scaled batch sizes {out} are not distinct"
        )
    return out


def design_table(
    batch_sizes: Sequence[int],
    n_train: int,
    *,
    lr: float,
    epochs: int,
    drop_last: bool = False,
    reference_batch_sizes: Sequence[int] | None = None,
    reference_n: int = CIFAR10_TRAIN_SIZE,
):
    """What a fixed-epoch sweep does at each batch size, before any training: one row per
    ``B`` with ``B/N``, steps per epoch ``ceil(N/B)`` (``floor`` with ``drop_last``), total
    steps ``S = E · steps_per_epoch``, the finite-population factor ``(N − B)/(N − 1)`` of the
    mini-batch covariance when sampling without replacement (an epoch's permutation), the
    diffusion time ``η S`` (``sde_time``) and the temperature ``T = η (N − B) / (B (N − 1))``
    (SGD read as a diffusion whose noise covariance per unit time is ``T · D``). With
    ``reference_batch_sizes`` the matching full-scale batch size (on ``reference_n``
    examples) is listed beside each row."""
    import pandas as pd

    from sgdnoise.train import steps_per_epoch

    rows = []
    for i, b in enumerate(batch_sizes):
        spe = steps_per_epoch(n_train, b, drop_last=drop_last)
        row = {
            "batch_size": int(b),
            "b_over_n": b / n_train,
            "steps_per_epoch": spe,
            "total_steps": epochs * spe,
            "fpc": (n_train - b) / (n_train - 1) if n_train > 1 else 0.0,
            "sde_time": lr * epochs * spe,
            "temperature": lr * (n_train - b) / (b * (n_train - 1)) if n_train > 1 else 0.0,
        }
        if reference_batch_sizes is not None:
            row = {"full_scale_batch_size": int(reference_batch_sizes[i]),
                   "full_scale_b_over_n": reference_batch_sizes[i] / reference_n, **row}
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_findings(summary, *, delta: float = 0.05) -> dict[str, Any]:
    """Facts about a :func:`summarize` table, for sentences that must follow the numbers.

    Returns ``smallest_b``, ``largest_b``, ``test_error_smallest_b``,
    ``test_error_largest_b``, ``train_error_smallest_b``, ``train_error_largest_b``,
    ``gap_smallest_b``, ``best_b`` (lowest final test error), ``max_gap_b`` and ``max_gap``,
    ``test_degrades_from_b`` (the smallest B whose final test error exceeds the smallest B's
    by more than ``delta``; None if none), ``train_fails_from_b`` (the same for the final
    train error: the runs that no longer fit the training set), ``n_diverged`` and the
    ``plateau`` epochs of the largest batch (train and test)."""
    if len(summary) == 0:
        raise ValueError("summary is empty: no runs to describe")
    s = summary.sort_values("batch_size").reset_index(drop=True)
    first, last = s.iloc[0], s.iloc[-1]
    ok = s[s["status"] == "finished"]
    worse_test = ok[ok["final_test_error"] > first["final_test_error"] + delta]
    worse_train = ok[ok["final_train_error"] > first["final_train_error"] + delta]
    gi = int(ok["final_gap"].idxmax()) if len(ok) else 0
    return {
        "smallest_b": int(first["batch_size"]),
        "largest_b": int(last["batch_size"]),
        "test_error_smallest_b": float(first["final_test_error"]),
        "test_error_largest_b": float(last["final_test_error"]),
        "train_error_smallest_b": float(first["final_train_error"]),
        "train_error_largest_b": float(last["final_train_error"]),
        "gap_smallest_b": float(first["final_gap"]),
        "best_b": int(ok.loc[ok["final_test_error"].idxmin(), "batch_size"]) if len(ok)
        else None,
        "max_gap_b": int(s.loc[gi, "batch_size"]),
        "max_gap": float(s.loc[gi, "final_gap"]),
        "test_degrades_from_b": int(worse_test["batch_size"].min()) if len(worse_test)
        else None,
        "train_fails_from_b": int(worse_train["batch_size"].min()) if len(worse_train)
        else None,
        "n_diverged": int((s["status"] == "diverged").sum()),
        "largest_b_train_plateau_epoch": int(last["train_plateau_epoch"]),
        "largest_b_test_plateau_epoch": int(last["test_plateau_epoch"]),
        "epochs": int(last["epochs"]),
        "delta": delta,
    }


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sgdnoise-sweep``; returns the exit code (2 for a bad config)."""
    parser = argparse.ArgumentParser(
        prog="sgdnoise-sweep",
        description="Run (or resume) a batch-size sweep; one JSON record per batch size.",
    )
    parser.add_argument("config", help="YAML sweep config")
    parser.add_argument("--out", required=True, help="folder for the records and checkpoints")
    parser.add_argument("--order", default="as-given",
                        choices=["as-given", "largest-first", "smallest-first"],
                        help="order of the runs (largest-first suits short GPU leases)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last checkpoint after its record is written")
    args = parser.parse_args(argv)
    try:
        cfg = load_sweep_config(args.config)
    except SweepConfigError as err:
        print(f"sgdnoise-sweep: error: {err}", file=sys.stderr)
        return 2
    try:
        run_sweep(cfg, args.out, order=args.order, progress=not args.no_progress,
                  keep_checkpoints=args.keep_checkpoints)
    except (ValueError, FileNotFoundError) as err:
        print(f"sgdnoise-sweep: error: {err}", file=sys.stderr)
        return 2
    finally:
        from sgdnoise import distributed as dist_mod

        dist_mod.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
