"""Plans of training runs, the budgeted and sharded sweep that runs them, and their records.

Command line::

    sgdnoise-sweep PLAN.yaml --out DIR [--budget SECONDS] [--shard i/n] [--dry-run]
                   [--engine fast|eager]
    python -m sgdnoise.sweep PLAN.yaml --out DIR ...
    torchrun --nproc_per_node=K -m sgdnoise.sweep PLAN.yaml --out DIR   # data parallel

**A plan** (YAML) has four sections::

    name: ch08                      # also the records' "source"
    data: {dataset: cifar10, n_train: null, n_test: null, data_seed: 0, image_size: null}
    defaults: {model: resnet34, width: 64, drop_last: true, ...}   # TrainConfig fields
    arms:
      A: {batch_sizes: [128, 256], seeds: [0, 1], config: {lr: 0.1}}
      C: {batch_sizes: [512, 2048], seeds: [0], config: {...},
          equal_steps: {batch_size: 512, epochs: 30, max_steps_cap: null}}
      N: {batch_sizes: [2048], seeds: [0], config: {norm: group},
          noise: {kind: subsampled, matched_small_batch: 128, num_samples: 512}}
      T: {batch_sizes: [512, 4096], seeds: [0, 1], config: {...},
          tune: {lr_factors: [0.5, 1.0, 2.0], seed: 0, n_val: 5000}}
    priority:                       # optional; runs not listed follow in arm order
      - {arm: A, seeds: [0], batch_sizes: [128]}
      - {arm: C}

``defaults`` and each arm's ``config`` take the fields of
:class:`sgdnoise.train.TrainConfig` (the allowed keys are ``dataclasses.fields(TrainConfig)``
less ``batch_size`` and ``seed``, which come from the arm's lists). A ``priority`` entry
takes the arm's runs of the listed ``seeds`` and ``batch_sizes`` (each: default all of the
arm's) not taken by an earlier entry. ``equal_steps`` sets
``max_steps`` to the number of steps ``batch_size`` takes in ``epochs`` epochs (capped at
``max_steps_cap``). ``data.image_size`` (null: the 32×32 images; else 1, 2, 4, 8 or 16)
average-pools every image to that side after the subsets are drawn
(:func:`sgdnoise.data.pool_dataset`; the records' ``data.preprocessing`` says so).
``eval_subset_seed`` defaults to the data seed, so every run is
evaluated on the same training subset. The plan expands to runs ``(arm, batch_size, seed,
run_id)`` in priority order; the whole plan is validated before any work, and a bad key stops
the command with a message naming the key, the value and what is allowed (exit code 2).
Each priority entry (an arm, optionally some of its seeds and batch sizes) is a *block*;
``--dry-run`` prints every run and each block's estimated device time
(:func:`block_estimates`, from the throughput the chapter 8 pilot measured on an H200,
:data:`PILOT_H200_IMG_PER_S`), so a short GPU session knows what it can finish.

``tune`` chooses η per batch size on a validation split: for each batch size ``B`` of the
arm, one *tuning run* per factor ``f`` (arm ``<arm>-tune``, id
``<arm>-tune_B<B>_s<seed>_x<f>``: the arm's config at η·f with seed ``seed``, the arm's
schedule in steps, no sharpness), trained on the training split less ``n_val`` held-out
examples and evaluated on those (the record's test fields are validation numbers; its
``tuning`` section says so). They come right before the arm's first run of that size in the
priority order. When an arm's run is reached, its factor is chosen from the tuning records
(:func:`choose_lr_factor`: the lowest final validation error, a run that did not finish
counting as +inf, ties to the smaller factor); until all of them exist the run waits ("η
pending tuning"). Its record's ``lr_choice`` names the factor and the tuning runs.

``noise`` (chapter 9) trains the arm with :class:`sgdnoise.noise.NoisySGD` instead of plain
SGD: ``kind`` (one of :data:`NOISE_KINDS`), the injection scale s as either
``injection_scale: s`` or ``matched_small_batch: b`` (s =
:func:`sgdnoise.noise.matched_injection_scale` ``(b, B, num_examples=N)``, the engine drawing
batches without replacement from the N training examples), ``num_samples`` (M, default 64;
null: the whole batch), ``lanczos_steps`` (default 10) and ``moment_probes`` (default 4;
null: exact per-example moments). Momentum and weight decay come from the config, the
noise seed is the run's seed; the model must not use BatchNorm and ``nesterov`` must be
off. The record stores the settings (with the resolved s) under ``noise`` and the seconds
spent drawing noise under ``timing.noise_seconds``; a run without ``noise`` is unchanged.
Noisy runs need one process (no ``torchrun``): each data-parallel process would draw its
own noise.

**Running.** Each run writes ``DIR/<run_id>.json`` atomically when it ends; a run whose
record exists is never rerun. ``--budget S``: before each run its time is estimated from the
throughput measured in this process (a short timed probe per batch size, cached) plus its
evaluations and sharpness measurements; the highest-priority unfinished runs that fit in
what is left of ``S`` are run, the others skipped, and the command stops cleanly.
``--shard i/n`` keeps the runs at positions ``i, i + n, i + 2n, …`` of the priority order,
so ``n`` processes (or machines) together write exactly the records of one.

**Records** hold the run, the config, the evaluation history, the sharpness measurements,
status, steps, wall time, img/s, the engine path that produced them (``engine_path``:
"fast" or "eager", chosen by :mod:`sgdnoise.preflight` on a GPU), provenance (git commit
— from ``git``, else the ``SGDNOISE_GIT_COMMIT`` variable or a ``GIT_COMMIT`` file at the
repository root —, device, torch, python, date UTC) and the data identity, with no absolute
path of any machine. :func:`load_records` and :func:`load_sharpness` read them (and the older
pilot records) into pandas frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sgdnoise.validate import check_output_dir

__all__ = [
    "NOISE_KEYS",
    "NOISE_KINDS",
    "PILOT_H200_EVAL_S_PER_EXAMPLE",
    "PILOT_H200_IMG_PER_S",
    "PLAN_RECORD_FORMAT",
    "RECORD_FORMAT",
    "NoiseSpec",
    "Plan",
    "PlanError",
    "Run",
    "SweepConfigError",
    "TuneSpec",
    "block_estimates",
    "choose_lr_factor",
    "device_seconds",
    "estimate_run_seconds",
    "final_validation_error",
    "interpolated_rate",
    "load_plan",
    "load_records",
    "load_sharpness",
    "load_sweep_config",
    "main",
    "parse_shard",
    "probe_throughput",
    "read_records",
    "record_path",
    "records_frame",
    "resolve_tuned_run",
    "run_plan",
    "run_sweep",
    "sharpness_frame",
    "shard_runs",
    "throughput_table",
    "train_config_fields",
    "validate_plan",
    "validate_sweep_config",
]

PLAN_RECORD_FORMAT = "sgdnoise.sweep.run/2"
RECORD_FORMAT = "sgdnoise.sweep.run/1"  # the pilot records of 2026-11-26
CIFAR10_TRAIN_SIZE = 50_000
CIFAR10_TEST_SIZE = 10_000
SYNTHETIC_TEST_SIZE = 1000  # sgdnoise.data.load_dataset's default
DATA_KEYS = ("dataset", "data_dir", "data_seed", "n_train", "n_test", "image_size")
IMAGE_SIZES = (1, 2, 4, 8, 16, 32)  # the sides that divide CIFAR-10's 32 pixels
PLAN_KEYS = ("name", "data", "defaults", "arms", "priority")
ARM_KEYS = ("batch_sizes", "seeds", "config", "equal_steps", "noise", "tune")
TUNE_KEYS = ("lr_factors", "seed", "n_val")
PRIORITY_KEYS = ("arm", "seeds", "batch_sizes")
TUNE_SUFFIX = "-tune"  # tuning runs of arm X are recorded as arm "X-tune"
TUNE_RULE = ("lowest final validation error; a run that did not finish (diverged) counts as "
             "+inf; ties go to the smaller factor")
NOISE_KEYS = ("kind", "injection_scale", "matched_small_batch", "num_samples",
              "lanczos_steps", "moment_probes")
NOISE_KINDS = ("isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn")
NOISE_DEFAULTS = {"num_samples": 64, "lanczos_steps": 10, "moment_probes": 4}
NOISE_CHUNK_SIZE = 16  # per-example chunk of exact moments, as chapter 9's NoiseConfig
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# a plan's name becomes part of file names (records' source, gpu_run.sh's tar): one path
# component of letters, digits, '_', '.', '-', not starting with '.' or '-', no '..'
_PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
DATA_DEFAULTS = {"dataset": "cifar10", "data_dir": None, "data_seed": 0, "n_train": None,
                 "n_test": None, "image_size": None}
# upper bounds (inclusive) of the plan's own numbers, stated in the errors; TrainConfig
# fields are bounded by sgdnoise.train.LIMITS
SIZE_LIMIT = 10**7  # examples of a synthetic data set
SEED_LIMIT = 2**32 - 1
NOISE_LIMITS = {"num_samples": 10**6, "lanczos_steps": 10_000, "moment_probes": 10_000,
                "injection_scale": 1e6}


class PlanError(ValueError):
    """A plan (or legacy sweep config) is invalid; the message names the key and value."""


SweepConfigError = PlanError  # the older name


def train_config_fields() -> tuple[str, ...]:
    """The keys a plan's ``defaults`` / arm ``config`` may set: the fields of
    :class:`sgdnoise.train.TrainConfig` less ``batch_size`` and ``seed``."""
    from sgdnoise.train import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in ("batch_size", "seed"))


def _fail(key: str, message: str) -> PlanError:
    return PlanError(f"plan key {key!r}: {message}")


@dataclass(frozen=True)
class NoiseSpec:
    """The injected noise of a run (an arm's ``noise`` section, with s resolved for the
    run's batch size B): :class:`sgdnoise.noise.NoisySGD` with these settings."""

    kind: str
    injection_scale: float
    matched_small_batch: int | None = None
    num_samples: int | None = NOISE_DEFAULTS["num_samples"]
    lanczos_steps: int = NOISE_DEFAULTS["lanczos_steps"]
    moment_probes: int | None = NOISE_DEFAULTS["moment_probes"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def optimizer_factory(self, cfg: Any, seed: int) -> Callable[[Any], torch.optim.Optimizer]:
        """``model -> NoisySGD`` for :func:`sgdnoise.train.train`: learning rate, momentum
        and weight decay of ``cfg``, cross-entropy, noise generator seeded with ``seed``
        (the arguments of chapter 9's ``NoiseConfig.optimizer_factory``)."""
        import torch.nn.functional as F

        from sgdnoise.noise import NoisySGD

        def factory(model):
            return NoisySGD(
                model.parameters(), cfg.lr, kind=self.kind, model=model,
                loss_fn=F.cross_entropy, num_samples=self.num_samples,
                momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                lanczos_steps=self.lanczos_steps, chunk_size=NOISE_CHUNK_SIZE,
                moment_probes=self.moment_probes, seed=seed,
                injection_scale=self.injection_scale)

        return factory


@dataclass(frozen=True)
class TuneSpec:
    """An arm's learning-rate tuning (its ``tune`` section): for each batch size, one run
    per factor ``f`` of ``lr_factors`` with η = f · (the arm's η), seed ``seed``, trained
    on the training split less ``n_val`` held-out examples and evaluated on those; the
    arm's runs then use the factor :func:`choose_lr_factor` picks."""

    arm: str
    lr_factors: tuple[float, ...]
    seed: int
    n_val: int

    def run_id(self, batch_size: int, factor: float) -> str:
        """``<arm>-tune_B<batch size, 5 digits>_s<seed>_x<factor>``."""
        return f"{self.arm}{TUNE_SUFFIX}_B{batch_size:05d}_s{self.seed}_x{factor:g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Run:
    """One training run of a plan: ``run_id = <arm>_B<batch size, 5 digits>_s<seed>``;
    ``noise`` is None for plain SGD.

    - tune: the arm's :class:`TuneSpec` when the arm is tuned. For the arm's own runs
      ``config.lr`` is the arm's η until :func:`resolve_tuned_run` multiplies it by the
      chosen factor (then ``lr_choice`` says which and why).
    - lr_factor: for a tuning run (arm ``<arm>-tune``, id :meth:`TuneSpec.run_id`), its
      factor; it trains on the training split less the validation set and its records'
      test fields are validation numbers.
    - block: the number of the priority entry that placed the run (1, 2, …; the runs no
      entry names form the last block)."""

    arm: str
    batch_size: int
    seed: int
    run_id: str
    config: Any  # sgdnoise.train.TrainConfig
    noise: NoiseSpec | None = None
    tune: TuneSpec | None = None
    lr_factor: float | None = None
    block: int = 1
    lr_choice: dict[str, Any] | None = None

    @property
    def needs_tuning(self) -> bool:
        """A run of a tuned arm whose η factor is not chosen yet."""
        return self.tune is not None and self.lr_factor is None and self.lr_choice is None

    def describe(self) -> dict[str, Any]:
        out = {"arm": self.arm, "batch_size": self.batch_size, "seed": self.seed,
               "run_id": self.run_id}
        if self.lr_factor is not None:
            out.update(tunes=self.arm[:-len(TUNE_SUFFIX)], lr_factor=self.lr_factor)
        return out


@dataclass(frozen=True)
class Plan:
    """A validated plan: its name, data section and runs in priority order; ``blocks[k]``
    describes priority block ``k + 1``."""

    name: str
    data: dict[str, Any]
    runs: tuple[Run, ...]
    source: dict[str, Any]
    blocks: tuple[str, ...] = ()


def _check_int_list(key: str, value: Any, *, low: int) -> list[int]:
    if (not isinstance(value, list) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value)):
        raise _fail(key, f"must be a non-empty list of integers >= {low}, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(key, f"must not repeat a value, got {value!r}")
    return list(value)


def _check_mapping(key: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping, got {type(value).__name__} {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise _fail(f"{key}.{unknown[0]}", f"unknown key (value {value[unknown[0]]!r}); "
                                           f"allowed: {sorted(allowed)}")
    return dict(value)


def _check_data(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {**DATA_DEFAULTS, **data}
    if out["dataset"] not in ("cifar10", "synthetic"):
        raise _fail("data.dataset", f"must be one of ['cifar10', 'synthetic'], "
                                    f"got {out['dataset']!r}")
    for k in ("n_train", "n_test"):
        v = out[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                              or not 1 <= v <= SIZE_LIMIT):
            raise _fail(f"data.{k}", f"must be null or an integer >= 1 and <= {SIZE_LIMIT}, "
                                     f"got {v!r}")
    side = out["image_size"]
    if side is not None and (isinstance(side, bool) or not isinstance(side, int)
                             or side not in IMAGE_SIZES):
        raise _fail("data.image_size", f"must be null (32x32) or one of {list(IMAGE_SIZES)}, "
                                       f"got {out['image_size']!r}")
    ds = out["data_seed"]
    if isinstance(ds, bool) or not isinstance(ds, int) or not 0 <= ds <= SEED_LIMIT:
        raise _fail("data.data_seed", f"must be an integer >= 0 and <= {SEED_LIMIT}, "
                                      f"got {ds!r}")
    if out["data_dir"] is not None and not isinstance(out["data_dir"], str):
        raise _fail("data.data_dir", f"must be null or a string, got {out['data_dir']!r}")
    if out["dataset"] == "synthetic" and out["n_train"] is None:
        raise _fail("data.n_train", "must be set for dataset 'synthetic', got null")
    if out["dataset"] == "cifar10" and (out["n_train"] or 0) > CIFAR10_TRAIN_SIZE:
        raise _fail("data.n_train", f"must be <= {CIFAR10_TRAIN_SIZE} (the CIFAR-10 training "
                                    f"images), got {out['n_train']}")
    if out["dataset"] == "cifar10" and (out["n_test"] or 0) > CIFAR10_TEST_SIZE:
        raise _fail("data.n_test", f"must be <= {CIFAR10_TEST_SIZE} (the CIFAR-10 test "
                                   f"images), got {out['n_test']}")
    return out


def _check_noise(arm: str, value: Any, sizes: Sequence[int]) -> dict[str, Any]:
    """The validated ``noise`` section of an arm (defaults filled in, s not yet resolved)."""
    key = f"arms.{arm}.noise"
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping with keys {list(NOISE_KEYS)}, got {value!r}")
    spec = _check_mapping(key, value, NOISE_KEYS)
    kind = spec.get("kind")
    if kind not in NOISE_KINDS:
        raise _fail(f"{key}.kind", f"must be one of {list(NOISE_KINDS)}, got {kind!r}")
    given = [k for k in ("injection_scale", "matched_small_batch") if k in spec]
    if len(given) != 1:
        raise _fail(key, "must set exactly one of 'injection_scale' and "
                         f"'matched_small_batch', got {given or 'neither'}")
    if "injection_scale" in spec:
        s = spec["injection_scale"]
        cap = NOISE_LIMITS["injection_scale"]
        if (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)
                or not 0 <= s <= cap):
            raise _fail(f"{key}.injection_scale", f"must be a number >= 0 and <= {cap}, "
                                                  f"got {s!r}")
    else:
        b = spec["matched_small_batch"]
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise _fail(f"{key}.matched_small_batch", f"must be an integer >= 1, got {b!r}")
        if b > min(sizes):
            raise _fail(f"{key}.matched_small_batch",
                        f"must be <= every batch size of the arm ({sorted(sizes)}: noise is "
                        f"added to a larger batch), got {b}")
    out = {**NOISE_DEFAULTS, **spec}
    for name, low, null in (("num_samples", 2, "the whole batch"),
                            ("lanczos_steps", 1, None),
                            ("moment_probes", 1, "exact per-example moments")):
        v, cap = out[name], NOISE_LIMITS[name]
        if (v is None and null) or (not isinstance(v, bool) and isinstance(v, int)
                                    and low <= v <= cap):
            continue
        allowed = f"an integer >= {low} and <= {cap}"
        raise _fail(f"{key}.{name}", f"must be {f'null ({null}) or ' if null else ''}"
                                     f"{allowed}, got {v!r}")
    return out


def _noise_spec(arm: str, noise: Mapping[str, Any], cfg: Any, n_train: int,
                arm_config: Mapping[str, Any]) -> NoiseSpec:
    """The noise of one run: s resolved for its batch size; the config must allow it."""
    from sgdnoise.noise import matched_injection_scale

    if cfg.norm == "batch":
        raise _fail(f"arms.{arm}.noise", "needs examples that do not interact: norm 'group' "
                    f"or 'none', got norm='batch' (from {_origin(arm, 'norm', arm_config)})")
    if cfg.nesterov:
        raise _fail(f"arms.{arm}.noise", "NoisySGD has no Nesterov momentum: nesterov must "
                    f"be false, got true (from {_origin(arm, 'nesterov', arm_config)})")
    b = noise.get("matched_small_batch")
    if b is not None:
        s = matched_injection_scale(b, cfg.batch_size, num_examples=n_train)
    else:
        s = float(noise["injection_scale"])
    return NoiseSpec(kind=noise["kind"], injection_scale=s, matched_small_batch=b,
                     num_samples=noise["num_samples"], lanczos_steps=noise["lanczos_steps"],
                     moment_probes=noise["moment_probes"])


def _origin(arm: str, field: str | None, arm_config: Mapping[str, Any]) -> str:
    """The plan key a TrainConfig field came from: the arm's config, else the defaults."""
    if field is None:
        return f"arms.{arm}.config"
    return f"arms.{arm}.config.{field}" if field in arm_config else f"defaults.{field}"


def _train_config(arm: str, fields: Mapping[str, Any], arm_config: Mapping[str, Any],
                  batch_size: int, seed: int, check_device: bool):
    from sgdnoise.models import MODEL_NAMES
    from sgdnoise.train import TrainConfig

    model = fields.get("model", TrainConfig.model)
    if model not in MODEL_NAMES:
        raise _fail(_origin(arm, "model", arm_config),
                    f"unknown model {model!r}; allowed: {list(MODEL_NAMES)}")
    try:
        cfg = TrainConfig(batch_size=batch_size, seed=seed, **fields).validate()
    except (ValueError, TypeError) as err:
        msg = str(err)
        named = [f for f in train_config_fields() if re.match(rf"{f}\b", msg)]
        raise _fail(_origin(arm, named[0] if named else None, arm_config), msg) from None
    if check_device:
        dev = torch.device(cfg.device)
        key = _origin(arm, "device", arm_config)
        if dev.type not in ("cpu", "cuda"):
            raise _fail(key, f"must be cpu, cuda or cuda:N, got {cfg.device!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise _fail(key, f"{cfg.device!r} requested but CUDA is not available here")
    return cfg


def _check_equal_steps(arm: str, spec: Mapping[str, Any], fields: dict[str, Any],
                       n_train: int) -> None:
    """Set ``fields["max_steps"]`` from the arm's ``equal_steps`` section (validated)."""
    from sgdnoise.train import steps_per_epoch

    eq = _check_mapping(f"arms.{arm}.equal_steps", spec["equal_steps"],
                        ("batch_size", "epochs", "max_steps_cap"))
    for k in ("batch_size", "epochs"):
        v = eq.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(f"arms.{arm}.equal_steps.{k}", f"must be an integer >= 1, got {v!r}")
    cap = eq.get("max_steps_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise _fail(f"arms.{arm}.equal_steps.max_steps_cap",
                    f"must be null or an integer >= 1, got {cap!r}")
    if "max_steps" in (spec.get("config") or {}):
        raise _fail(f"arms.{arm}.config.max_steps", "must not be set together with equal_steps")
    steps = eq["epochs"] * steps_per_epoch(
        n_train, eq["batch_size"], drop_last=bool(fields.get("drop_last", False)))
    fields["max_steps"] = min(steps, cap) if cap is not None else steps


def _check_tune(arm: str, value: Any, sizes: Sequence[int], n_train: int,
                arm_names: Iterable[str]) -> TuneSpec:
    """The validated ``tune`` section of an arm."""
    key = f"arms.{arm}.tune"
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping with keys {list(TUNE_KEYS)}, got {value!r}")
    spec = _check_mapping(key, value, TUNE_KEYS)
    factors = spec.get("lr_factors")
    if (not isinstance(factors, list) or not factors
            or any(isinstance(f, bool) or not isinstance(f, (int, float))
                   or not math.isfinite(f) or f <= 0 for f in factors)):
        raise _fail(f"{key}.lr_factors", f"must be a non-empty list of numbers > 0, got "
                                         f"{factors!r}")
    if len(set(factors)) != len(factors):
        raise _fail(f"{key}.lr_factors", f"must not repeat a value, got {factors!r}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(f"{key}.seed", f"must be an integer >= 0, got {seed!r}")
    n_val = spec.get("n_val")
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 1 <= n_val < n_train:
        raise _fail(f"{key}.n_val", f"must be an integer in [1, {n_train - 1}] (examples "
                                    f"held out of the {n_train} training examples), got "
                                    f"{n_val!r}")
    for i, b in enumerate(sizes):
        if b > n_train - n_val:
            raise _fail(f"arms.{arm}.batch_sizes[{i}]",
                        f"must be <= n_train - tune.n_val = {n_train - n_val} (the tuning "
                        f"runs' training examples), got {b}")
    if f"{arm}{TUNE_SUFFIX}" in arm_names:
        raise _fail(f"arms.{arm}{TUNE_SUFFIX}", f"is the name of arm {arm!r}'s tuning runs; "
                                                "rename the arm")
    return TuneSpec(arm, tuple(float(f) for f in factors), seed, n_val)


def _tuning_runs(tune: TuneSpec, main: Run, n_train: int) -> list[Run]:
    """The tuning runs of one batch size, built from the arm's run ``main`` of that size:
    its config at η · f with seed ``tune.seed``, no sharpness, and the main run's schedule
    in steps (``max_steps`` = its ``T``, warm-up in steps), so that a factor is judged on
    the schedule it will be used with."""
    from sgdnoise.train import steps_per_epoch, total_steps, warmup_length

    cfg = main.config
    spe = steps_per_epoch(n_train, cfg.batch_size, drop_last=cfg.drop_last)
    base = dataclasses.replace(
        cfg, seed=tune.seed, max_steps=total_steps(cfg, n_train), sharpness_n=0,
        sharpness_every=None, warmup_steps=round(warmup_length(cfg, spe)))
    return [Run(f"{tune.arm}{TUNE_SUFFIX}", main.batch_size, tune.seed,
                tune.run_id(main.batch_size, f), dataclasses.replace(base, lr=cfg.lr * f),
                main.noise, tune=tune, lr_factor=f) for f in tune.lr_factors]


def _arm_runs(arm: str, spec: Mapping[str, Any], defaults: Mapping[str, Any],
              data: Mapping[str, Any], arm_names: Sequence[str], check_device: bool
              ) -> tuple[list[Run], dict[int, list[Run]]]:
    """One arm's runs (seed-major) and, for a tuned arm, its tuning runs per batch size."""
    n_train = data["n_train"] if data["n_train"] is not None else CIFAR10_TRAIN_SIZE
    spec = _check_mapping(f"arms.{arm}", spec, ARM_KEYS)
    sizes = _check_int_list(f"arms.{arm}.batch_sizes", spec.get("batch_sizes"), low=1)
    seeds = _check_int_list(f"arms.{arm}.seeds", spec.get("seeds", [0]), low=0)
    arm_config = _check_mapping(f"arms.{arm}.config", spec.get("config"),
                                train_config_fields())
    fields = {**defaults, **arm_config}
    for i, b in enumerate(sizes):
        if b > n_train:
            raise _fail(f"arms.{arm}.batch_sizes[{i}]", f"must be <= n_train = {n_train}, "
                                                       f"got {b}")
    if "equal_steps" in spec:
        _check_equal_steps(arm, spec, fields, n_train)
    noise = _check_noise(arm, spec["noise"], sizes) if "noise" in spec else None
    tune = (_check_tune(arm, spec["tune"], sizes, n_train, arm_names) if "tune" in spec
            else None)

    def make(b: int, s: int) -> Run:
        cfg = _train_config(arm, fields, arm_config, b, s, check_device)
        if cfg.sharpness_n > n_train:
            raise _fail(f"arms.{arm}.config.sharpness_n",
                        f"must be <= n_train = {n_train}, got {cfg.sharpness_n}")
        spec_b = (_noise_spec(arm, noise, cfg, n_train, arm_config)
                  if noise is not None else None)
        return Run(arm, b, s, f"{arm}_B{b:05d}_s{s}", cfg, spec_b, tune=tune)

    runs = [make(b, s) for s in seeds for b in sizes]
    tuning = ({b: _tuning_runs(tune, make(b, tune.seed), n_train) for b in sizes}
              if tune is not None else {})
    return runs, tuning


def _priority_entry(i: int, entry: Any, by_arm: Mapping[str, list[Run]]
                    ) -> tuple[list[Run], str]:
    """The runs of priority entry ``i`` (validated) and its description."""
    entry = _check_mapping(f"priority[{i}]", entry, PRIORITY_KEYS)
    arm = entry.get("arm")
    if arm not in by_arm:
        raise _fail(f"priority[{i}].arm", f"unknown arm {arm!r}; arms: {list(by_arm)}")
    label = [f"arm {arm}"]
    picked = by_arm[arm]
    for key, attr in (("seeds", "seed"), ("batch_sizes", "batch_size")):
        wanted = entry.get(key)
        if wanted is None:
            continue
        wanted = _check_int_list(f"priority[{i}].{key}", wanted, low=0)
        known = {getattr(r, attr) for r in by_arm[arm]}
        bad = [v for v in wanted if v not in known]
        if bad:
            raise _fail(f"priority[{i}].{key}", f"{bad} are not {key} of arm {arm!r} "
                                                f"({sorted(known)})")
        picked = [r for r in picked if getattr(r, attr) in wanted]
        label.append(f"{'seeds' if key == 'seeds' else 'B'} "
                     f"{', '.join(str(v) for v in wanted)}")
    return picked, " ".join(label)


def _order_runs(priority: Any, by_arm: Mapping[str, list[Run]],
                tuning: Mapping[str, dict[int, list[Run]]]) -> tuple[list[Run], list[str]]:
    """The runs in priority order, each with its block number, and the blocks' labels. A
    tuned arm's tuning runs of a batch size come right before its first run of that size."""
    if priority is None:
        priority = []
    if not isinstance(priority, list):
        raise _fail("priority", f"must be a list of {{arm, seeds, batch_sizes}} entries, "
                                f"got {priority!r}")
    groups = [_priority_entry(i, entry, by_arm) for i, entry in enumerate(priority)]
    groups.append(([r for runs in by_arm.values() for r in runs], "the remaining runs"))
    ordered: list[Run] = []
    seen: set[str] = set()
    labels: list[str] = []
    for block, (runs, label) in enumerate(groups, start=1):
        before = len(ordered)
        for r in runs:
            extra = tuning.get(r.arm, {}).get(r.batch_size, [])
            for t in [*extra, r]:
                if t.run_id not in seen:
                    ordered.append(dataclasses.replace(t, block=block))
                    seen.add(t.run_id)
        if len(ordered) > before or block < len(groups):
            labels.append(label)
    return ordered, labels


def validate_plan(plan: Mapping[str, Any], *, check_device: bool = True) -> Plan:
    """Check a whole plan and expand it into runs in priority order (see the module
    docstring). Raises :class:`PlanError` naming the first bad key, its value and what is
    allowed; nothing else happens before that."""
    if not isinstance(plan, Mapping):
        raise PlanError(f"a plan must be a mapping, got {type(plan).__name__}")
    top = _check_mapping("<plan>", plan, PLAN_KEYS)
    name = top.get("name", "plan")
    if not isinstance(name, str) or not _PLAN_NAME.match(name) or ".." in name:
        raise _fail("name", "must be one file-name part: letters, digits, '_', '.' and '-', "
                            f"starting with a letter or digit, without '..'; got {name!r}")
    data = _check_data(_check_mapping("data", top.get("data"), DATA_KEYS))
    defaults = _check_mapping("defaults", top.get("defaults"), train_config_fields())
    defaults.setdefault("eval_subset_seed", data["data_seed"])
    arms = top.get("arms")
    if not isinstance(arms, Mapping) or not arms:
        raise _fail("arms", f"must be a non-empty mapping of arm name -> arm, got {arms!r}")
    by_arm: dict[str, list[Run]] = {}
    tuning: dict[str, dict[int, list[Run]]] = {}
    for arm, spec in arms.items():
        if not isinstance(arm, str) or not _ARM_NAME.match(arm):
            raise _fail(f"arms.{arm}", "arm names must be letters, digits and '-', "
                                       f"got {arm!r}")
        by_arm[arm], tuning[arm] = _arm_runs(arm, spec, defaults, data, list(arms),
                                             check_device)
    ordered, labels = _order_runs(top.get("priority"), by_arm, tuning)
    return Plan(name=name, data=data, runs=tuple(ordered), source=dict(plan),
                blocks=tuple(labels))


def load_plan(path: str | os.PathLike, *, check_device: bool = True) -> Plan:
    """Read and validate a YAML plan (a legacy flat sweep config, recognised by its
    top-level ``batch_sizes``, is converted first). The file is read with
    :func:`sgdnoise.yamlio.load_yaml` (plain data, unique keys, finite numbers); every error
    is a one-line :class:`PlanError` that starts with the file's path."""
    from sgdnoise.yamlio import YamlError, load_yaml

    path = Path(path)
    try:
        raw = load_yaml(path)
    except YamlError as err:
        raise PlanError(str(err)) from None
    if raw is None or raw == {}:
        raise PlanError(f"{path}: the plan is empty; a plan needs 'arms' (and optionally "
                        f"{', '.join(repr(k) for k in PLAN_KEYS if k != 'arms')})")
    try:
        if isinstance(raw, Mapping) and "arms" not in raw:
            if "batch_sizes" not in raw:
                raise PlanError(f"the plan has no 'arms' section (top-level keys: "
                                f"{sorted(map(str, raw))}); allowed: {list(PLAN_KEYS)}")
            raw = legacy_to_plan(raw)
        return validate_plan(raw, check_device=check_device)
    except PlanError as err:
        raise PlanError(f"{path}: {err}") from None


# --------------------------------------------------------------------------- legacy configs


LEGACY_REQUIRED = ("model", "batch_sizes", "epochs", "lr", "seed")


def legacy_to_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """A flat sweep config (``name``, the data keys, ``batch_sizes``, ``seed`` and
    TrainConfig fields) as a one-arm plan (arm ``sweep``)."""
    if not isinstance(config, Mapping):
        raise PlanError(f"a sweep config must be a mapping, got {type(config).__name__}")
    allowed = set(train_config_fields()) | set(DATA_KEYS) | {"name", "batch_sizes", "seed"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise PlanError(f"config key {unknown[0]!r}: unknown key (value "
                        f"{config[unknown[0]]!r}); allowed keys: {sorted(allowed)}")
    for k in LEGACY_REQUIRED:
        if k not in config:
            raise PlanError(f"config key {k!r}: missing (required keys: "
                            f"{', '.join(LEGACY_REQUIRED)})")
    seed = config["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PlanError(f"config key 'seed': must be an integer >= 0, got {seed!r}")
    data = {k: config[k] for k in DATA_KEYS if k in config}
    defaults = {k: v for k, v in config.items()
                if k not in DATA_KEYS and k not in ("name", "batch_sizes", "seed")}
    return {"name": config.get("name", "sweep"), "data": data, "defaults": defaults,
            "arms": {"sweep": {"batch_sizes": config["batch_sizes"], "seeds": [seed]}}}


def validate_sweep_config(config: Mapping[str, Any]) -> Plan:
    """Validate a legacy flat sweep config (see :func:`legacy_to_plan`); returns the plan."""
    return validate_plan(legacy_to_plan(config))


def load_sweep_config(path: str | os.PathLike) -> Plan:
    """Read and validate a plan or legacy sweep config (YAML)."""
    return load_plan(path)


# --------------------------------------------------------------------------- shards


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


# --------------------------------------------------------------------------- budget


def _probe_key(cfg, noise: NoiseSpec | None = None) -> tuple:
    key = (cfg.model, cfg.width, cfg.norm, cfg.ghost_batch_size, cfg.micro_batch_size,
           cfg.amp, cfg.channels_last, cfg.device, cfg.batch_size, cfg.eval_batch_size,
           cfg.augment)
    if noise is None:
        return key
    return (*key, noise.kind, noise.num_samples, noise.lanczos_steps, noise.moment_probes)


def _run_probe_key(run: Run) -> tuple:
    return _probe_key(run.config, run.noise)


def probe_throughput(cfg, data: Any, *, steps: int = 5, warmup: int = 2,
                     optimizer_factory: Callable[[Any], Any] | None = None,
                     engine: str = "fast") -> dict[str, float]:
    """Time ``steps`` training steps of ``cfg`` (after ``warmup`` untimed ones) and one
    evaluation of ``eval_batch_size`` clean examples, in this process on this device;
    ``optimizer_factory`` as in :func:`sgdnoise.train.train` (a noisy run's steps include
    drawing its noise); ``engine`` as in :func:`sgdnoise.train.train`.

    Returns ``step_s`` (seconds per step), ``eval_s_per_example`` (evaluation seconds per
    example, BatchNorm recompute included when configured) and ``setup_s`` (model build and
    first steps)."""
    from sgdnoise.train import train

    n_eval = min(cfg.eval_batch_size, int(data.test_y.shape[0]), int(data.train_y.shape[0]))
    small = {"train_x": data.train_x, "train_y": data.train_y,
             "test_x": data.test_x[:n_eval], "test_y": data.test_y[:n_eval]}
    marks: dict[int, float] = {}
    dev = torch.device(cfg.device)

    class _Clock:
        def on_step(self, state) -> bool:
            if state.step in (warmup, warmup + steps):
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                marks[state.step] = time.perf_counter()
            return state.step >= warmup + steps

    # evaluations at step 1 (before the clock starts) and at the stop, warmup + steps
    probe_cfg = dataclasses.replace(
        cfg, max_steps=warmup + steps + 1, eval_points=2, eval_at_start=False,
        eval_train_n=n_eval, sharpness_n=0, sharpness_every=None)
    t0 = time.perf_counter()
    res = train(probe_cfg, small, progress=False, hooks=[_Clock()],
                optimizer_factory=optimizer_factory, engine=engine)
    total = time.perf_counter() - t0
    step_s = (marks[warmup + steps] - marks[warmup]) / steps
    per_eval = n_eval * (3 if cfg.bn_recompute else 2)
    eval_s = res.extra["eval_seconds"] / (max(len(res.history), 1) * per_eval)
    setup = max(0.0, total - res.extra["eval_seconds"] - steps * step_s)
    return {"step_s": step_s, "eval_s_per_example": eval_s, "setup_s": setup}


def estimate_run_seconds(cfg, n_train: int, n_test: int, probe: Mapping[str, float]) -> float:
    """Predicted wall time of one run: ``setup + T·step_s + E·(n_eval_train + n_test +
    n_recompute)·eval_s_per_example + S·sharpness_cost``, with ``T`` steps, ``E``
    evaluations and ``S`` sharpness measurements of ``sharpness_iters`` Hessian-vector
    products, each costed at about two training steps' work per example
    (``2 · step_s · sharpness_n / B``)."""
    from sgdnoise.train import eval_steps, steps_per_epoch, total_steps

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


# --------------------------------------------------------------------------- device time

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
    import statistics

    rates: dict[int, list[float]] = {}
    evals: list[float] = []
    for f in _record_files(paths):
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        got = _throughput_of(rec) if isinstance(rec, dict) else None
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
                    n_test: int = 10_000, **rates: Any) -> list[dict[str, Any]]:
    """Per priority block: ``block, label, runs, left`` (runs without a record in
    ``out_dir``), ``seconds`` (:func:`device_seconds` of those, summed; ``rates`` go to it)
    and ``cumulative`` seconds up to and including the block."""
    n_train = plan.data["n_train"] or CIFAR10_TRAIN_SIZE
    n_test = plan.data["n_test"] or n_test
    rows: list[dict[str, Any]] = []
    total = 0.0
    for k, label in enumerate(plan.blocks, start=1):
        runs = [r for r in plan.runs if r.block == k]
        left = [r for r in runs
                if out_dir is None or not record_path(out_dir, r.run_id).exists()]
        sec = sum(device_seconds(r, n_train, n_test, **rates) for r in left)
        total += sec
        rows.append({"block": k, "label": label, "runs": len(runs), "left": len(left),
                     "seconds": sec, "cumulative": total})
    return rows


# --------------------------------------------------------------------------- records


def record_path(out_dir: str | os.PathLike, run_id: str) -> Path:
    """``out_dir/<run_id>.json``."""
    return Path(out_dir) / f"{run_id}.json"


def _checkpoint_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / "checkpoints" / f"{run_id}.pt"


def _probe_output(out: Path, checkpoints: bool) -> None:
    """Create ``out`` (and its checkpoints folder) and prove them writable, before any data
    are loaded: a ValueError naming the folder otherwise."""
    check_output_dir("--out", out)
    if checkpoints:
        check_output_dir("--out's checkpoints folder", _checkpoint_path(out, "x").parent)


def _atomic_write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, allow_nan=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _git_commit() -> str:
    """The git commit, else ``$SGDNOISE_GIT_COMMIT``, else the first line of a
    ``GIT_COMMIT`` file at the repository root, else ``"unknown"``."""
    from sgdnoise.provenance import git_commit

    sha = git_commit()
    if sha != "unknown":
        return sha
    env = os.environ.get("SGDNOISE_GIT_COMMIT", "").strip()
    if env:
        return env
    f = Path(__file__).resolve().parents[2] / "GIT_COMMIT"
    if f.is_file():
        first = f.read_text().strip().splitlines()
        if first:
            return first[0].strip()
    return "unknown"


def _provenance(device: str) -> dict[str, Any]:
    from sgdnoise.provenance import collect

    prov = collect(device).to_dict()
    prov["git_commit"] = _git_commit()
    return prov


def _identity(data: Any) -> dict[str, Any]:
    """The data identity without the folder it was read from (no machine's path)."""
    ident = data.identity.to_dict() if hasattr(data, "identity") else {}
    ident.pop("path", None)
    return ident


def _plan_section(plan: Plan) -> dict[str, Any]:
    """What a record keeps of its plan: the name and the data section (without
    ``data_dir``, a path of one machine)."""
    return {"name": plan.name,
            "data": {k: v for k, v in plan.data.items() if k != "data_dir"}}


def _read_record(path: Path) -> dict[str, Any]:
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
    """The identity fields :func:`_load_data` gives for the data section ``data``
    (``data_seed`` stands for the identity's ``subset_seed``: the seed of a CIFAR-10 subset;
    a synthetic set's seed is not in its identity)."""
    synthetic = data["dataset"] == "synthetic"
    subset = not synthetic and (data["n_train"] is not None or data["n_test"] is not None)
    return {"dataset": data["dataset"],
            "n_train": data["n_train"] or CIFAR10_TRAIN_SIZE,
            "n_test": data["n_test"] or (SYNTHETIC_TEST_SIZE if synthetic
                                         else CIFAR10_TEST_SIZE),
            "data_seed": data["data_seed"] if subset else None,
            "preprocessing": _preprocessing(data)}


def _record_mismatch(rec: Mapping[str, Any], plan: Plan, run: Run,
                     expected: Mapping[str, Any] | None = None) -> str | None:
    """What of ``run`` of ``plan`` the record ``rec`` disagrees on, as "<what> (<key>:
    record <value>, plan <value>)" (None: it is that run's record): the plan name, the data
    section (a key the record lacks counts as its default), the config (a field the record
    lacks counts as TrainConfig's default, so records written before a field existed still
    match when the run keeps the default) or the noise settings (``noise.<key>`` entries of
    the config). Records written before
    records carried their plan section are matched on their ``source`` and data identity.
    ``expected``: the config the record must hold when it is not ``run.config`` (a tuned
    run at the factor its tuning records chose, :func:`_expected_config`)."""
    from sgdnoise.train import TrainConfig

    mine = _plan_section(plan)
    section = rec.get("plan")
    if isinstance(section, Mapping):
        name = section.get("name")
        defaults = {k: v for k, v in DATA_DEFAULTS.items() if k != "data_dir"}
        data = _first_difference("data section", {**defaults, **(section.get("data") or {})},
                                 mine["data"])
    else:
        name = rec.get("source")
        data = _first_difference("data section", _identity_section(rec.get("data") or {}),
                                 _expected_identity(plan.data))
    if name != plan.name:
        return f"plan name (record {name!r}, plan {plan.name!r})"
    if data:
        return data
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    noise = run.noise.to_dict() if run.noise is not None else None
    want = dict(expected) if expected is not None else run.config.to_dict()
    return _first_difference("config", {**defaults, **rec["config"],
                                        **_noise_fields(rec.get("noise"))},
                             {**want, **_noise_fields(noise)})


def _noise_fields(noise: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's noise settings as config entries ``noise.<key>`` (``noise: None`` for plain
    SGD), compared with the config."""
    if not isinstance(noise, Mapping):
        return {"noise": noise}
    return {f"noise.{k}": v for k, v in noise.items()}


def _preprocessing(data: Mapping[str, Any]) -> str | None:
    """The ``data.preprocessing`` note the records of a plan with data section ``data``
    carry (None: the 32×32 images)."""
    from sgdnoise.data import pooling_note

    side = data.get("image_size")
    return None if side in (None, 32) else pooling_note(side)


def _load_data(plan: Plan):
    from sgdnoise.data import load_dataset, pool_dataset

    d = plan.data
    data = load_dataset(d["dataset"], n_train=d["n_train"], n_test=d["n_test"],
                        seed=d["data_seed"], data_dir=d["data_dir"])
    return data if d.get("image_size") in (None, 32) else pool_dataset(data, d["image_size"])


def _run_record(plan: Plan, run: Run, result: Any, world: int,
                optimizer: Any = None) -> dict[str, Any]:
    step_s = result.extra.get("step_seconds", 0.0)
    trained = result.extra.get("examples_trained", 0)
    rec = {
        "format": PLAN_RECORD_FORMAT,
        "source": plan.name,
        "plan": _plan_section(plan),
        "run": run.describe(),
        "config": run.config.to_dict(),
        "status": result.status,
        "steps": result.steps,
        "diverged_at_step": result.diverged_at_step,
        "wall_time_s": result.wall_time_s,
        "img_per_s": trained / step_s if step_s > 0 else None,
        "timing": {k: result.extra[k] for k in ("step_seconds", "eval_seconds",
                                                 "sharpness_seconds", "peak_memory_gib")
                   if k in result.extra},
        "resumed_from_step": result.resumed_from_step,
        "world_size": world,
        "history": result.history,
        "sharpness": result.sharpness,
    }
    if run.noise is not None:  # a plain run's record is exactly as before noise arms
        rec["noise"] = run.noise.to_dict()
        stats = getattr(optimizer, "stats", None)
        rec["timing"]["noise_seconds"] = stats.noise_seconds if stats is not None else None
    engine = result.extra.get("engine")
    if engine is not None:
        rec["engine_path"] = engine["name"]  # "fast" or "eager" (sgdnoise.train.engine_paths)
        rec["engine"] = engine
    if run.lr_factor is not None:
        rec["tuning"] = {"of_arm": run.arm[:-len(TUNE_SUFFIX)], "lr_factor": run.lr_factor,
                         "n_val": run.tune.n_val,
                         "evaluated_on": "validation",
                         "note": "test_loss and test_error in the history are measured on "
                                 "the validation set held out of the training split"}
    if run.lr_choice is not None:
        rec["lr_choice"] = run.lr_choice
    return rec


def _optimizer_factory(run: Run, holder: dict[str, Any] | None = None):
    """The run's optimizer factory (None: the engine's SGD); the optimizer it builds is
    kept in ``holder["opt"]`` (for its noise statistics)."""
    if run.noise is None:
        return None
    base = run.noise.optimizer_factory(run.config, run.seed)

    def factory(model):
        opt = base(model)
        if holder is not None:
            holder["opt"] = opt
        return opt

    return factory


# --------------------------------------------------------------------------- tuning


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
    :data:`TUNE_RULE` (the lowest final validation error, :func:`final_validation_error`;
    ties go to the smaller factor, the more cautious step). None while a record is
    missing. Returns ``factor``, ``rule`` and ``candidates`` (per factor: run id, status,
    final validation error, None for +inf)."""
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


def _tuning_record(out: Path, run_id: str) -> dict[str, Any] | None:
    """The record of tuning run ``run_id`` in ``out``, None while it is missing (a torn
    record is reported by the strict :func:`_read_record` when the sweep reaches that run)."""
    p = record_path(out, run_id)
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


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
        cands[f] = records.get(rid) or _tuning_record(Path(out_dir), rid)
    choice = choose_lr_factor(cands)
    if choice is None:
        return None
    cfg = dataclasses.replace(run.config, lr=run.config.lr * choice["factor"])
    return dataclasses.replace(run, config=cfg, lr_choice=choice)


def _expected_config(run: Run, old: Mapping[str, Any], out: Path) -> dict[str, Any] | None:
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


def _data_of(run: Run, plan: Plan, data: Any, cache: dict[int, Any]) -> Any:
    """The data ``run`` trains on: ``data``, or for a tuning run the split of
    :func:`_tuning_data` (kept in ``cache`` by ``n_val``)."""
    if run.lr_factor is None:
        return data
    if run.tune.n_val not in cache:
        cache[run.tune.n_val] = _tuning_data(plan, run.tune.n_val)
    return cache[run.tune.n_val]


def _tuning_data(plan: Plan, n_val: int):
    """The data of a tuning run: the training split less ``n_val`` held-out examples, and
    those as the "test" set (:func:`sgdnoise.data.load_dataset` with ``n_val``), pooled
    like the plan's other runs when its data section sets ``image_size``."""
    from sgdnoise.data import load_dataset, pool_dataset

    d = plan.data
    n_train = (d["n_train"] if d["n_train"] is not None else CIFAR10_TRAIN_SIZE) - n_val
    full = load_dataset(d["dataset"], n_train=n_train, n_test=d["n_test"], n_val=n_val,
                        seed=d["data_seed"], data_dir=d["data_dir"])
    if d.get("image_size") not in (None, 32):
        full = pool_dataset(full, d["image_size"])
    return dataclasses.replace(full, test_x=full.val_x, test_y=full.val_y)


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

    - budget_s: None runs everything; else a run starts only if its estimated time (``estimate``,
      default: :func:`probe_throughput` cached per batch size + :func:`estimate_run_seconds`)
      fits in what is left of ``budget_s`` seconds since this call began; a batch size
      not measured yet is not probed when less than ``probe_reserve_s`` seconds are left.
    - data: an already loaded :class:`sgdnoise.data.ImageData` matching ``plan.data``.
    - checkpoints: save a checkpoint after every evaluation (``DIR/checkpoints/<run_id>.pt``,
      deleted with the record unless ``keep_checkpoints``) so a killed process resumes
      the run; off on a machine whose disk does not outlive the session.
    - engine: ``"fast"`` or ``"eager"`` (:func:`sgdnoise.train.engine_paths`; the
      preflight, :mod:`sgdnoise.preflight`, chooses it on a GPU); each record says which
      path produced it (``engine_path``).

    Tuning runs (an arm's ``tune`` section) train on the training split less the validation
    set and are evaluated on it; a run of a tuned arm takes the η factor its tuning records
    choose (:func:`resolve_tuned_run`) when its turn comes, and waits ("η pending tuning")
    while one is missing.

    A record written by another plan, data section, config or noise (same run id) raises a
    one-line ValueError naming the file and both values rather than mixing results; so does
    an unreadable record. The output folder (and its ``checkpoints`` folder) is created and
    probed writable before any data are loaded."""
    from sgdnoise import distributed as dist_mod
    from sgdnoise.train import train

    t_start = time.perf_counter()
    if not isinstance(plan, Plan):
        plan = (load_plan(plan) if isinstance(plan, (str, os.PathLike))
                else validate_plan(plan))
    runs = shard_runs(plan.runs, *shard)
    out = Path(out_dir)
    say = log if log is not None else (lambda msg: print(msg, file=sys.stderr, flush=True))
    dist = dist_mod.init_from_env(runs[0].config.device if runs else "cpu")
    is_main = dist is None or dist.rank == 0
    if not is_main:
        say = lambda msg: None  # noqa: E731
    existing: dict[str, dict[str, Any]] = {}
    for r in runs:
        p = record_path(out, r.run_id)
        if p.exists():
            old = _read_record(p)
            why = _record_mismatch(old, plan, r, _expected_config(r, old, out))
            if why is not None:
                raise ValueError(f"{p} was written with a different {why} for run "
                                 f"{r.run_id}; use another --out folder")
            existing[r.run_id] = old
    pending = [r for r in runs if r.run_id not in existing]
    noisy = [r.run_id for r in pending if r.noise is not None]
    if dist is not None and dist.world_size > 1 and noisy:
        raise ValueError(f"runs {noisy[:3]} inject noise, which each data-parallel process "
                         "would draw from its own share of the batch: run them in one "
                         "process (no torchrun)")
    if is_main and pending:
        _probe_output(out, checkpoints)
    if pending and data is None:
        data = _load_data(plan)
    probes: dict[tuple, dict[str, float]] = {}

    def default_estimate(run: Run) -> float:
        key = _run_probe_key(run)
        if key not in probes:
            probes[key] = probe_throughput(run.config, data,
                                           optimizer_factory=_optimizer_factory(run),
                                           engine=engine)
            say(f"[sweep] probe B={run.batch_size}: {probes[key]['step_s'] * 1e3:.1f} ms/step")
        return estimate_run_seconds(run.config, int(data.train_y.shape[0]),
                                    int(data.test_y.shape[0]), probes[key])

    est_fn = estimate or default_estimate
    measured = estimate is not None
    records: dict[str, dict[str, Any]] = dict(existing)
    tuning_data: dict[int, Any] = {}
    for r in runs:
        if r.run_id in existing:
            say(f"[sweep] {r.run_id}: record exists, skipped")
            continue
        resolved = resolve_tuned_run(r, out, records)
        if resolved is None:
            say(f"[sweep] {r.run_id}: η pending tuning (a tuning record of B={r.batch_size} "
                "is missing): not started")
            continue
        r = resolved
        if budget_s is not None:
            left = budget_s - (time.perf_counter() - t_start)
            if not measured and _run_probe_key(r) not in probes and left < probe_reserve_s:
                say(f"[sweep] {r.run_id}: {left:.0f} s left, too little to measure: "
                    "not started")
                continue
            est = est_fn(r)
            left = budget_s - (time.perf_counter() - t_start)
            if est > left:
                say(f"[sweep] {r.run_id}: needs ~{est:.0f} s, {left:.0f} s left: not started")
                continue
        ckpt = _checkpoint_path(out, r.run_id) if checkpoints else None
        resuming = ckpt is not None and ckpt.exists()
        say(f"[sweep] {r.run_id}: training ({'resuming' if resuming else 'new run'})")
        holder: dict[str, Any] = {}
        run_data = _data_of(r, plan, data, tuning_data)
        result = train(r.config, run_data, checkpoint_path=ckpt, progress=progress,
                       desc=r.run_id, optimizer_factory=_optimizer_factory(r, holder),
                       engine=engine)
        rec = _run_record(plan, r, result, 1 if dist is None else dist.world_size,
                          holder.get("opt"))
        rec["data"] = _identity(run_data)
        rec["provenance"] = _provenance(r.config.device)
        if is_main:
            _atomic_write_json(rec, record_path(out, r.run_id))
            if ckpt is not None and not keep_checkpoints and ckpt.exists():
                ckpt.unlink()
        if dist is not None:
            dist.barrier()
        last = result.history[-1] if result.history else {}
        say(f"[sweep] {r.run_id}: {result.status}, {result.steps} steps, "
            f"{result.wall_time_s:.1f} s, train err {last.get('train_error', math.nan):.3f}, "
            f"test err {last.get('test_error', math.nan):.3f}")
        records[r.run_id] = rec
    return [records[r.run_id] for r in runs if r.run_id in records]


def run_sweep(
    config: Mapping[str, Any] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: bool = False,
    keep_checkpoints: bool = False,
    data: Any = None,
    log: Any = None,
    order: str = "as-given",
) -> list[dict[str, Any]]:
    """Run a legacy flat sweep config (one arm ``sweep``) or a plan, without a budget; the
    records in run order. ``order``: "as-given", "largest-first" or "smallest-first"."""
    if order not in ("as-given", "largest-first", "smallest-first"):
        raise ValueError(f"order must be one of ['as-given', 'largest-first', "
                         f"'smallest-first'], got {order!r}")
    if isinstance(config, (str, os.PathLike)):
        plan = load_plan(config)
    elif "arms" in config:
        plan = validate_plan(config)
    else:
        plan = validate_sweep_config(config)
    if order != "as-given":
        runs = sorted(plan.runs, key=lambda r: r.batch_size, reverse=order == "largest-first")
        plan = dataclasses.replace(plan, runs=tuple(runs))
    return run_plan(plan, out_dir, progress=progress, keep_checkpoints=keep_checkpoints,
                    data=data, log=log)


# --------------------------------------------------------------------------- reading records

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
SHARPNESS_COLUMNS = ["run_id", "arm", "batch_size", "seed", "step", "lambda_max", "lr",
                     "two_over_lr", "source", "bn_mode", "bn_batch"]


def _record_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
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
    pilot records (format 1) get arm ``"pilot"`` and source ``"pilot"``. Other JSON files
    are skipped; a ``*.json`` file that cannot be read as JSON is skipped with a warning
    naming it."""
    import warnings

    out = []
    for f in _record_files(paths):
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
            out.append(_pilot_as_plan_record(rec))
    return out


def _pilot_as_plan_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    sc, tc, data = rec["sweep_config"], rec.get("train_config", {}), rec.get("data", {})
    b, seed = int(rec["batch_size"]), int(sc.get("seed", 0))
    n_train = data.get("n_train") or sc.get("n_train") or CIFAR10_TRAIN_SIZE
    history = []
    for h in rec["history"]:
        e = h.get("epoch")
        history.append({**h, "examples_seen": None if e is None else int(e) * n_train,
                        "param_distance": None})
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


def load_records(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """Run records (files, or folders searched recursively for ``*.json``) as a long pandas
    DataFrame: one row per run × evaluation with the columns of ``RECORD_COLUMNS``:
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
        run, cfg, prov, data = rec["run"], rec["config"], rec.get("provenance", {}), \
            rec.get("data", {})
        n_train = data.get("n_train") or CIFAR10_TRAIN_SIZE
        base = {
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
        for h in rec["history"]:
            row = dict(base)
            for k in ("step", "epoch", "examples_seen", "lr", "train_loss", "train_error",
                      "test_loss", "test_error", "param_distance", "running_loss",
                      "wall_time"):
                row[k] = h.get(k)
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


# --------------------------------------------------------------------------- CLI


def _eta_text(run: Run, out: Path) -> tuple[Run, str]:
    """The run with its η resolved where possible, and the η column of the dry run."""
    if run.lr_factor is not None:
        return run, f"x{run.lr_factor:g} tuning"
    if run.tune is None:
        return run, "-"
    resolved = resolve_tuned_run(run, out)
    if resolved is None:
        return run, "pending tuning"
    return resolved, f"x{resolved.lr_choice['factor']:g} chosen"


def _noise_text(n: NoiseSpec | None) -> str:
    if n is None:
        return ""
    return (f"  {n.kind} s={n.injection_scale:.4g} M={n.num_samples}"
            + (f" k={n.lanczos_steps}" if n.kind == "hessian" else "")
            + (f" r={n.moment_probes}" if n.kind in ("isotropic", "diag_fisher") else ""))


def _print_blocks(plan: Plan, out: Path) -> None:
    print("\nDevice time per priority block, runs without a record, estimated from the chapter "
          "8 pilot's\nmeasured throughput on one NVIDIA H200 (sweep.PILOT_H200_IMG_PER_S; "
          f"an H100 takes ~{H100_SLOWDOWN[0]:g}-{H100_SLOWDOWN[1]:g}x as long):")
    print(f"{'block':>5} {'runs':>5} {'left':>5} {'H200 min':>9} {'cumul. min':>10} "
          f"{'H100 min':>11}  what")
    for row in block_estimates(plan, out):
        m = row["seconds"] / 60
        h100 = f"{m * H100_SLOWDOWN[0]:.0f}-{m * H100_SLOWDOWN[1]:.0f}"
        print(f"{row['block']:>5} {row['runs']:>5} {row['left']:>5} {m:>9.1f} "
              f"{row['cumulative'] / 60:>10.1f} {h100:>11}  {row['label']}")


def _dry_run(plan: Plan, runs: Sequence[Run], out: Path) -> None:
    from sgdnoise.train import lr_multiplier, steps_per_epoch, total_steps

    n_full = plan.data["n_train"] or CIFAR10_TRAIN_SIZE
    n_test = plan.data["n_test"] or 10_000
    n_tune = sum(r.lr_factor is not None for r in plan.runs)
    print(f"plan {plan.name!r}: {len(plan.runs)} runs ({n_tune} tuning η), {len(runs)} in "
          "this shard")
    w = max([22, *(len(r.run_id) for r in runs)])
    print(f"{'#':>3} {'blk':>3} {'run_id':<{w}} {'steps':>7} {'epochs':>8} {'images':>11} "
          f"{'peak lr':>8} {'η factor':>15} {'H200 s':>7} {'record':>7}"
          + ("  noise" if any(r.noise for r in runs) else ""))
    total = 0
    for k, r in enumerate(runs):
        r, eta = _eta_text(r, out)
        n_train = n_full - (r.tune.n_val if r.lr_factor is not None else 0)
        T = total_steps(r.config, n_train)
        spe = steps_per_epoch(n_train, r.batch_size, drop_last=r.config.drop_last)
        flat = dataclasses.replace(r.config, warmup_epochs=0.0, warmup_steps=None,
                                   schedule="constant")
        peak = ("" if eta == "pending tuning"
                else f"{r.config.lr * lr_multiplier(flat, 0, T, spe):.4g}")
        done = record_path(out, r.run_id).exists()
        total += 0 if done else T * r.batch_size
        est = device_seconds(r, n_full, n_test)
        print(f"{k:>3} {r.block:>3} {r.run_id:<{w}} {T:>7} {T / spe:>8.1f} "
              f"{T * r.batch_size:>11,} {peak:>8} {eta:>15} {est:>7.0f} "
              f"{'yes' if done else '-':>7}{_noise_text(r.noise)}")
    print(f"training images of the runs without a record: {total:,}")
    _print_blocks(plan, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sgdnoise-sweep``; returns the exit code (2 for a bad plan or
    argument, with a one-line message and no traceback)."""
    parser = argparse.ArgumentParser(
        prog="sgdnoise-sweep",
        description="Run the unfinished runs of a plan (one JSON record per run).")
    parser.add_argument("plan", help="YAML plan (or a legacy flat sweep config)")
    parser.add_argument("--out", required=True, help="folder for the records")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: run only the highest-priority runs that fit")
    parser.add_argument("--shard", default="0/1", help="i/n: this process's share of runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs (this shard, priority order) and stop")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's last checkpoint after its record is written")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="no checkpoints (for a machine whose disk ends with the session)")
    parser.add_argument("--engine", choices=("fast", "eager"), default="fast",
                        help="fast (bf16 autocast, channels-last, fused SGD on CUDA) or eager "
                             "(float32): what the preflight chose (python -m "
                             "sgdnoise.preflight PLAN)")
    parser.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        shard = parse_shard(args.shard)
        if args.keep_checkpoints and args.no_checkpoints:
            raise PlanError("--keep-checkpoints and --no-checkpoints contradict each other: "
                            "give one of them")
        if args.budget is not None and not (args.budget > 0 and math.isfinite(args.budget)):
            raise PlanError(f"--budget must be a number of seconds > 0, got {args.budget!r}")
        plan = load_plan(args.plan, check_device=not args.dry_run)
    except PlanError as err:
        print(f"sgdnoise-sweep: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.dry_run:
        _dry_run(plan, shard_runs(plan.runs, *shard), out)
        return 0
    try:
        recs = run_plan(plan, out, budget_s=args.budget, shard=shard,
                        progress=args.progress and not args.no_progress,
                        keep_checkpoints=args.keep_checkpoints,
                        checkpoints=not args.no_checkpoints, engine=args.engine)
    except (ValueError, FileNotFoundError) as err:
        print(f"sgdnoise-sweep: error: {err}", file=sys.stderr)
        return 2
    finally:
        from sgdnoise import distributed as dist_mod

        dist_mod.shutdown()
    n_runs = len(shard_runs(plan.runs, *shard))
    print(f"[sweep] {len(recs)} of {n_runs} runs of this shard have records in {out.name}/",
          file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
