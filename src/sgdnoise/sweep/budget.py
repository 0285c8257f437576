"""How long runs take: throughput measured in this process (:func:`probe_throughput`), the
predicted time of one run (:func:`estimate_run_seconds`), and the device time of a plan's
priority blocks from the throughput the chapter 8 pilot measured on an H200
(:func:`block_estimates`)."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from sgdnoise.train import TrainConfig, eval_steps, steps_per_epoch, total_steps, train

from .plan import CIFAR10_TEST_SIZE, Plan, Run
from .records import (
    PLAN_RECORD_FORMAT,
    RECORD_FORMAT,
    read_record_if_any,
    record_files,
    record_path,
)

__all__ = [
    "H100_SLOWDOWN",
    "PILOT_H200_EVAL_S_PER_EXAMPLE",
    "PILOT_H200_IMG_PER_S",
    "block_estimates",
    "device_seconds",
    "estimate_run_seconds",
    "interpolated_rate",
    "probe_key",
    "probe_throughput",
    "throughput_table",
]

# Training throughput in images per second of training steps, by batch size: the chapter 8
# pilot (data/results/ch08_pilot: ResNet34 width 64, BatchNorm over min(B, 4096), bf16
# autocast, channels-last, micro-batches of 4,096) on one NVIDIA H200, the mean of its two
# seeds rounded to 100 img/s; :func:`throughput_table` recomputes it from the records.
PILOT_H200_IMG_PER_S: dict[int, float] = {
    128: 10_100, 256: 16_900, 512: 26_600, 1024: 33_000, 2048: 35_000, 4096: 40_600,
    8192: 40_800, 16384: 40_900, 32768: 30_500}
# evaluation seconds per example (clean forward passes, setup included), the pilot's median
PILOT_H200_EVAL_S_PER_EXAMPLE = 9.2e-6
H100_SLOWDOWN = (1.5, 2.0)  # an H100 takes about this many times as long as an H200


def probe_key(run: Run) -> tuple:
    """What a throughput probe depends on: the network, its batch and micro-batch, the
    device and precision, the evaluation batch, augmentation and the noise settings."""
    cfg = run.config
    key = (cfg.model, cfg.width, cfg.norm, cfg.ghost_batch_size, cfg.micro_batch_size,
           cfg.amp, cfg.channels_last, cfg.device, cfg.batch_size, cfg.eval_batch_size,
           cfg.augment)
    if run.noise is None:
        return key
    n = run.noise
    return (*key, n.kind, n.num_samples, n.lanczos_steps, n.moment_probes)


class _Clock:
    """An ``on_step`` hook timing steps ``warmup`` to ``warmup + steps`` (synchronised on
    CUDA), then stopping the run."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.marks: dict[int, float] = {}

    def on_step(self, state: Any) -> bool:
        if state.step in (self.warmup, self.warmup + self.steps):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.marks[state.step] = time.perf_counter()
        return state.step >= self.warmup + self.steps

    def step_seconds(self) -> float:
        return (self.marks[self.warmup + self.steps] - self.marks[self.warmup]) / self.steps


def probe_throughput(cfg: TrainConfig, data: Any, *, steps: int = 5, warmup: int = 2,
                     optimizer_factory: Callable[[Any], Any] | None = None,
                     engine: str = "fast") -> dict[str, float]:
    """Time ``steps`` training steps of ``cfg`` (after ``warmup`` untimed ones) and one
    evaluation of ``eval_batch_size`` clean examples, in this process on this device;
    ``optimizer_factory`` as in :func:`sgdnoise.train.train` (a noisy run's steps include
    drawing its noise); ``engine`` as in :func:`sgdnoise.train.train`.

    Returns ``step_s`` (seconds per step), ``eval_s_per_example`` (evaluation seconds per
    example, BatchNorm recompute included when configured) and ``setup_s`` (model build and
    first steps)."""
    n_eval = min(cfg.eval_batch_size, int(data.test_y.shape[0]), int(data.train_y.shape[0]))
    small = {"train_x": data.train_x, "train_y": data.train_y,
             "test_x": data.test_x[:n_eval], "test_y": data.test_y[:n_eval]}
    clock = _Clock(warmup, steps, torch.device(cfg.device))
    # evaluations at step 1 (before the clock starts) and at the stop, warmup + steps
    probe_cfg = dataclasses.replace(
        cfg, max_steps=warmup + steps + 1, eval_points=2, eval_at_start=False,
        eval_train_n=n_eval, sharpness_n=0, sharpness_every=None)
    t0 = time.perf_counter()
    res = train(probe_cfg, small, progress=False, hooks=[clock],
                optimizer_factory=optimizer_factory, engine=engine)
    total = time.perf_counter() - t0
    step_s = clock.step_seconds()
    per_eval = n_eval * (3 if cfg.bn_recompute else 2)
    eval_s = res.extra["eval_seconds"] / (max(len(res.history), 1) * per_eval)
    setup = max(0.0, total - res.extra["eval_seconds"] - steps * step_s)
    return {"step_s": step_s, "eval_s_per_example": eval_s, "setup_s": setup}


def estimate_run_seconds(cfg: TrainConfig, n_train: int, n_test: int,
                         probe: Mapping[str, float]) -> float:
    """Predicted wall time of one run: ``setup + T·step_s + E·(n_eval_train + n_test +
    n_recompute)·eval_s_per_example + S·sharpness_cost``, with ``T`` steps, ``E``
    evaluations and ``S`` sharpness measurements of ``sharpness_iters`` Hessian-vector
    products, each costed at about two training steps' work per example
    (``2 · step_s · sharpness_n / B``)."""
    T = total_steps(cfg, n_train)
    spe = steps_per_epoch(n_train, cfg.batch_size, drop_last=cfg.drop_last)
    n_evals = len(eval_steps(T, cfg.eval_points, steps_per_ep=spe, at_start=cfg.eval_at_start))
    n_eval_train = min(cfg.eval_train_n or n_train, n_train)
    per_eval = (n_eval_train * (2 if cfg.bn_recompute else 1) + n_test)
    n_sharp = 0
    if cfg.sharpness_n > 0:
        n_sharp = 1 + (T // cfg.sharpness_every + 1 if cfg.sharpness_every else 0)
    sharp = cfg.sharpness_iters * 2.0 * probe["step_s"] * cfg.sharpness_n / cfg.batch_size
    return (probe["setup_s"] + T * probe["step_s"]
            + n_evals * per_eval * probe["eval_s_per_example"] + n_sharp * sharp)


def _throughput_of(rec: Mapping[str, Any]) -> tuple[int, float, float] | None:
    """``(B, img/s, eval s per example)`` of one raw record (pilot or plan format)."""
    hist = rec.get("history") or []
    if rec.get("format") == RECORD_FORMAT:
        n = rec["data"]["n_train"]
        step_s = rec["step_seconds"]
        images = rec["epochs_completed"] * n
        evals = len(hist) * (n + rec["data"]["n_test"])
        return rec["batch_size"], images / step_s, (rec["wall_time_s"] - step_s) / evals
    if rec.get("format") != PLAN_RECORD_FORMAT or not rec.get("img_per_s") or not hist:
        return None
    cfg, data = rec["config"], rec.get("data", {})
    n_eval = (cfg.get("eval_train_n") or data.get("n_train", 0)) * (
        2 if cfg.get("bn_recompute") else 1) + data.get("n_test", 0)
    eval_s = rec.get("timing", {}).get("eval_seconds", math.nan) / (len(hist) * n_eval)
    return rec["run"]["batch_size"], rec["img_per_s"], eval_s


def throughput_table(paths: str | os.PathLike | Iterable[str | os.PathLike]
                     ) -> tuple[dict[int, float], float]:
    """Measured throughput from the records under ``paths`` (one device's records):
    ``({B: mean img/s of training steps}, median evaluation seconds per example)``. Pilot
    records: ``epochs · N / step_seconds`` and ``(wall − step seconds) / (evaluations ·
    (N + n_test))``; plan records: their ``img_per_s`` and evaluation seconds."""
    rates: dict[int, list[float]] = {}
    evals: list[float] = []
    for f in record_files(paths):
        rec = read_record_if_any(f)
        got = _throughput_of(rec) if rec is not None else None
        if got is not None:
            rates.setdefault(got[0], []).append(got[1])
            if math.isfinite(got[2]):
                evals.append(got[2])
    table = {b: statistics.fmean(v) for b, v in sorted(rates.items())}
    return table, statistics.median(evals) if evals else math.nan


def interpolated_rate(table: Mapping[int, float], batch_size: int) -> float:
    """img/s at ``batch_size`` from ``table``: linear in ``log B`` between the measured
    batch sizes, the nearest measurement outside them."""
    sizes = sorted(table)
    if batch_size <= sizes[0]:
        return float(table[sizes[0]])
    for lo, hi in zip(sizes, sizes[1:], strict=False):
        if batch_size <= hi:
            w = math.log(batch_size / lo) / math.log(hi / lo)
            return float(table[lo] + w * (table[hi] - table[lo]))
    return float(table[sizes[-1]])


def device_seconds(run: Run, n_train: int, n_test: int, *,
                   table: Mapping[int, float] = PILOT_H200_IMG_PER_S,
                   eval_s_per_example: float = PILOT_H200_EVAL_S_PER_EXAMPLE) -> float:
    """Estimated device seconds of ``run``: :func:`estimate_run_seconds` with a step of
    ``B / rate(B)`` seconds (:func:`interpolated_rate` of ``table``) and the evaluation cost
    per example given; a tuning run trains on ``n_train − n_val`` and evaluates on
    ``n_val`` examples. Injected noise is not included."""
    if run.lr_factor is not None:
        n_train, n_test = n_train - run.tune.n_val, run.tune.n_val
    probe = {"step_s": run.batch_size / interpolated_rate(table, run.batch_size),
             "eval_s_per_example": eval_s_per_example, "setup_s": 0.0}
    return estimate_run_seconds(run.config, n_train, n_test, probe)


def block_estimates(plan: Plan, out_dir: str | os.PathLike | None = None, *,
                    n_test: int = CIFAR10_TEST_SIZE, **rates: Any) -> list[dict[str, Any]]:
    """Per priority block: ``block, label, runs, left`` (runs without a record in
    ``out_dir``), ``seconds`` (:func:`device_seconds` of those, summed; ``rates`` go to it)
    and ``cumulative`` seconds up to and including the block."""
    n_test = plan.data["n_test"] or n_test
    rows: list[dict[str, Any]] = []
    total = 0.0
    for k, label in enumerate(plan.blocks, start=1):
        runs = [r for r in plan.runs if r.block == k]
        left = [r for r in runs
                if out_dir is None or not record_path(out_dir, r.run_id).exists()]
        sec = sum(device_seconds(r, plan.n_train, n_test, **rates) for r in left)
        total += sec
        rows.append({"block": k, "label": label, "runs": len(runs), "left": len(left),
                     "seconds": sec, "cumulative": total})
    return rows
