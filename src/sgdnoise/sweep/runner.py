"""Running a plan: the shard of runs a process owns, the time budget that decides which
runs start, and the loop that trains each unfinished run and writes its record."""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdnoise import distributed
from sgdnoise.train import train
from sgdnoise.validate import check_output_dir

from .budget import estimate_run_seconds, probe_key, probe_throughput
from .plan import Plan, PlanError, Run, load_plan, validate_plan
from .records import (
    checkpoint_path,
    read_record,
    record_mismatch,
    record_path,
    run_record,
    write_record,
)
from .tuning import expected_config, resolve_tuned_run

__all__ = ["optimizer_factory", "parse_shard", "run_plan", "shard_runs"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise PlanError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_runs(runs: Sequence[Run], index: int, count: int) -> list[Run]:
    """The runs at positions ``index, index + count, …`` of the priority order: the shards
    ``0..count−1`` partition the runs, and each gets its share of the high priorities."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    return [r for k, r in enumerate(runs) if k % count == index]


def optimizer_factory(run: Run) -> Callable[[Any], Any] | None:
    """The run's optimizer factory: :class:`sgdnoise.noise.NoisySGD` with the run's noise
    (rate, momentum and weight decay of its config, noise seeded with the run's seed), or
    None (the engine's SGD) for plain SGD."""
    if run.noise is None:
        return None
    cfg = run.config
    return run.noise.optimizer_factory(lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay, seed=run.seed)


@dataclass
class Budget:
    """Which runs start under a time budget of ``seconds`` (None: all) counted from
    ``start``. A run starts when its estimated time fits in what is left: ``estimate``
    (given), or throughput measured in this process (:func:`probe_throughput`, cached per
    :func:`probe_key`) with :func:`estimate_run_seconds`; a run whose throughput is not
    measured yet is not probed when less than ``probe_reserve_s`` seconds are left."""

    seconds: float | None
    say: Callable[[str], None]
    data: Any = None
    engine: str = "fast"
    estimate: Callable[[Run], float] | None = None
    probe_reserve_s: float = 30.0
    start: float = field(default_factory=time.perf_counter)
    probes: dict[tuple, dict[str, float]] = field(default_factory=dict)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def admits(self, run: Run) -> bool:
        """Whether ``run`` starts now (the reason is said when it does not)."""
        if self.seconds is None:
            return True
        probing = self.estimate is None  # throughput measured here, not given
        if probing and probe_key(run) not in self.probes and self.left() < self.probe_reserve_s:
            self.say(f"[sweep] {run.run_id}: {self.left():.0f} s left, too little to measure: "
                     "not started")
            return False
        est = (self.estimate or self._measured_estimate)(run)
        if est > self.left():
            self.say(f"[sweep] {run.run_id}: needs ~{est:.0f} s, {self.left():.0f} s left: "
                     "not started")
            return False
        return True

    def _measured_estimate(self, run: Run) -> float:
        key = probe_key(run)
        if key not in self.probes:
            self.probes[key] = probe_throughput(run.config, self.data,
                                                optimizer_factory=optimizer_factory(run),
                                                engine=self.engine)
            self.say(f"[sweep] probe B={run.batch_size}: "
                     f"{self.probes[key]['step_s'] * 1e3:.1f} ms/step")
        return estimate_run_seconds(run.config, int(self.data.train_y.shape[0]),
                                    int(self.data.test_y.shape[0]), self.probes[key])


def _existing_records(plan: Plan, runs: Sequence[Run], out: Path) -> dict[str, dict]:
    """The records in ``out`` of ``runs``, read strictly; one written by another plan, data
    section, config or noise raises a one-line ValueError naming the file and both values."""
    existing: dict[str, dict[str, Any]] = {}
    for r in runs:
        p = record_path(out, r.run_id)
        if p.exists():
            old = read_record(p)
            why = record_mismatch(old, plan, r, expected_config(r, old, out))
            if why is not None:
                raise ValueError(f"{p} was written with a different {why} for run "
                                 f"{r.run_id}; use another --out folder")
            existing[r.run_id] = old
    return existing


@dataclass
class _Runner:
    """Trains the runs of one process and writes their records (rank 0 only)."""

    plan: Plan
    out: Path
    data: Any
    dist: distributed.SingleProcess
    say: Callable[[str], None]
    progress: bool
    checkpoints: bool
    keep_checkpoints: bool
    engine: str
    tuning_data: dict[int, Any] = field(default_factory=dict)

    def data_of(self, run: Run) -> Any:
        """The data ``run`` trains on: the plan's, or for a tuning run the split that holds
        out its validation set (cached by ``n_val``)."""
        if run.lr_factor is None:
            return self.data
        n_val = run.tune.n_val
        if n_val not in self.tuning_data:
            self.tuning_data[n_val] = self.plan.load_data(n_val)
        return self.tuning_data[n_val]

    def train(self, run: Run) -> dict[str, Any]:
        """Train ``run`` (resuming its checkpoint), write its record, return it."""
        ckpt = checkpoint_path(self.out, run.run_id) if self.checkpoints else None
        resuming = ckpt is not None and ckpt.exists()
        self.say(f"[sweep] {run.run_id}: training ({'resuming' if resuming else 'new run'})")
        data = self.data_of(run)
        result = train(run.config, data, checkpoint_path=ckpt, progress=self.progress,
                       desc=run.run_id, optimizer_factory=optimizer_factory(run),
                       engine=self.engine)
        rec = run_record(self.plan, run, result, data, self.dist.world_size)
        if self.dist.is_main:
            write_record(rec, self.out)
            if ckpt is not None and not self.keep_checkpoints and ckpt.exists():
                ckpt.unlink()
        self.dist.barrier()
        last = result.history[-1] if result.history else {}
        self.say(f"[sweep] {run.run_id}: {result.status}, {result.steps} steps, "
                 f"{result.wall_time_s:.1f} s, train err "
                 f"{last.get('train_error', math.nan):.3f}, test err "
                 f"{last.get('test_error', math.nan):.3f}")
        return rec


def _startable(run: Run, existing: Mapping[str, Any], out: Path,
               records: Mapping[str, Any], say: Callable[[str], None]) -> Run | None:
    """``run`` ready to train (a tuned run at its chosen η), or None: it has a record, or
    its η waits for a tuning record."""
    if run.run_id in existing:
        say(f"[sweep] {run.run_id}: record exists, skipped")
        return None
    resolved = resolve_tuned_run(run, out, records)
    if resolved is None:
        say(f"[sweep] {run.run_id}: η pending tuning (a tuning record of B={run.batch_size} "
            "is missing): not started")
    return resolved


def run_plan(
    plan: Plan | Mapping[str, Any] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    budget_s: float | None = None,
    shard: tuple[int, int] = (0, 1),
    data: Any = None,
    progress: bool = False,
    keep_checkpoints: bool = False,
    checkpoints: bool = True,
    estimate: Callable[[Run], float] | None = None,
    probe_reserve_s: float = 30.0,
    log: Callable[[str], None] | None = None,
    engine: str = "fast",
) -> list[dict[str, Any]]:
    """Run the plan's unfinished runs of this shard in priority order; return the records
    of the shard's runs that have one (read back or new), in priority order.

    - budget_s: None runs everything; else a run starts only if its estimated time
      (``estimate``, default: :func:`probe_throughput` cached per batch size +
      :func:`estimate_run_seconds`) fits in what is left of ``budget_s`` seconds since this
      call began; a batch size not measured yet is not probed when less than
      ``probe_reserve_s`` seconds are left (see :class:`Budget`).
    - data: an already loaded :class:`sgdnoise.data.ImageData` matching ``plan.data``.
    - checkpoints: save a checkpoint after every evaluation (``DIR/checkpoints/<run_id>.pt``,
      deleted with the record unless ``keep_checkpoints``) so a killed process resumes
      the run; off on a machine whose disk does not outlive the session.
    - engine: ``"fast"`` or ``"eager"`` (:func:`sgdnoise.train.engine_paths`; the
      preflight, :mod:`sgdnoise.preflight`, chooses it on a GPU); each record says which
      path produced it (``engine_path``).

    Tuning runs (an arm's ``tune`` section) train on the training split less the validation
    set and are evaluated on it; a run of a tuned arm takes the η factor its tuning records
    choose (:func:`sgdnoise.sweep.resolve_tuned_run`) when its turn comes, and waits ("η
    pending tuning") while one is missing.

    A record written by another plan, data section, config or noise (same run id) raises a
    one-line ValueError naming the file and both values rather than mixing results; so does
    an unreadable record. The output folder (and its ``checkpoints`` folder) is created and
    probed writable before any data are loaded."""
    start = time.perf_counter()
    if not isinstance(plan, Plan):
        plan = (load_plan(plan) if isinstance(plan, (str, os.PathLike))
                else validate_plan(plan))
    runs = shard_runs(plan.runs, *shard)
    out = Path(out_dir)
    distributed.init_from_env(runs[0].config.device if runs else "cpu")
    dist = distributed.strategy()
    say = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not dist.is_main:
        say = lambda msg: None  # noqa: E731
    existing = _existing_records(plan, runs, out)
    pending = [r for r in runs if r.run_id not in existing]
    noisy = [r.run_id for r in pending if r.noise is not None]
    if dist.world_size > 1 and noisy:
        raise ValueError(f"runs {noisy[:3]} inject noise, which each data-parallel process "
                         "would draw from its own share of the batch: run them in one "
                         "process (no torchrun)")
    if dist.is_main and pending:
        check_output_dir("--out", out)
        if checkpoints:
            check_output_dir("--out's checkpoints folder", checkpoint_path(out, "x").parent)
    if pending and data is None:
        data = plan.load_data()
    budget = Budget(budget_s, say, data, engine, estimate, probe_reserve_s, start)
    runner = _Runner(plan, out, data, dist, say, progress, checkpoints, keep_checkpoints,
                     engine)
    records: dict[str, dict[str, Any]] = dict(existing)
    for r in runs:
        ready = _startable(r, existing, out, records, say)
        if ready is not None and budget.admits(ready):
            records[r.run_id] = runner.train(ready)
    return [records[r.run_id] for r in runs if r.run_id in records]
