"""Learning-rate tuning per batch size: which factor of η the tuning records choose
(:func:`choose_lr_factor`) and the run of a tuned arm at that factor
(:func:`resolve_tuned_run`)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .plan import TUNE_RULE, Run
from .records import read_record_if_any, record_path

__all__ = ["choose_lr_factor", "expected_config", "final_validation_error",
           "resolve_tuned_run"]


def final_validation_error(record: Mapping[str, Any] | None) -> float:
    """The last evaluation's test error of a tuning record (validation error); ``+inf``
    when the run did not finish (diverged, stopped) or the number is not finite, NaN when
    there is no record."""
    if record is None:
        return math.nan
    hist = record.get("history") or []
    err = hist[-1].get("test_error") if hist else None
    if record.get("status") != "finished" or err is None or not math.isfinite(err):
        return math.inf
    return float(err)


def choose_lr_factor(candidates: Mapping[float, Mapping[str, Any] | None]
                     ) -> dict[str, Any] | None:
    """The factor of η to use from the tuning records ``{factor: record or None}``:
    :data:`sgdnoise.sweep.TUNE_RULE` (the lowest final validation error,
    :func:`final_validation_error`; ties go to the smaller factor, the more cautious step).
    None while a record is missing. Returns ``factor``, ``rule`` and ``candidates`` (per
    factor: run id, status, final validation error, None for +inf)."""
    if not candidates or any(rec is None for rec in candidates.values()):
        return None
    errors = {f: final_validation_error(rec) for f, rec in candidates.items()}
    best = min(errors, key=lambda f: (errors[f], f))
    return {
        "factor": best,
        "rule": TUNE_RULE,
        "candidates": [{"run_id": candidates[f]["run"]["run_id"], "lr_factor": f,
                        "status": candidates[f]["status"],
                        "final_validation_error": errors[f] if math.isfinite(errors[f])
                        else None} for f in sorted(candidates)],
    }


def resolve_tuned_run(run: Run, out_dir: str | os.PathLike,
                      records: Mapping[str, Mapping[str, Any]] | None = None) -> Run | None:
    """``run`` with η × the chosen factor (:func:`choose_lr_factor`) and ``lr_choice`` set,
    from its tuning records (in ``records`` by run id, else read from ``out_dir``, where
    other shards may have written them); ``run`` itself when it needs no tuning; None while
    a tuning record is missing."""
    if not run.needs_tuning:
        return run
    tune, records = run.tune, records or {}
    cands = {}
    for f in tune.lr_factors:
        rid = tune.run_id(run.batch_size, f)
        cands[f] = records.get(rid) or read_record_if_any(record_path(out_dir, rid))
    choice = choose_lr_factor(cands)
    if choice is None:
        return None
    cfg = dataclasses.replace(run.config, lr=run.config.lr * choice["factor"])
    return dataclasses.replace(run, config=cfg, lr_choice=choice)


def expected_config(run: Run, old: Mapping[str, Any], out: Path) -> dict[str, Any] | None:
    """The config a record of ``run`` must hold: the run's, or for a run of a tuned arm the
    one at the factor its tuning records choose (at the factor the record names when those
    records are elsewhere; None when that is not one of the arm's factors)."""
    if not run.needs_tuning:
        return run.config.to_dict()
    resolved = resolve_tuned_run(run, out)
    if resolved is not None:
        return resolved.config.to_dict()
    factor = (old.get("lr_choice") or {}).get("factor")
    if factor not in run.tune.lr_factors:
        return None
    return dataclasses.replace(run.config, lr=run.config.lr * factor).to_dict()
