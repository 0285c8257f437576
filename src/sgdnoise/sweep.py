"""Plans of training runs, the budgeted and sharded sweep that runs them, and their records.

Command line::

    sgdnoise-sweep PLAN.yaml --out DIR [--budget SECONDS] [--shard i/n] [--dry-run]
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
    priority:                       # optional; runs not listed follow in arm order
      - {arm: A, seeds: [0]}
      - {arm: A, seeds: [1, 2], batch_sizes: [128]}   # a subset of the arm's batch sizes
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
status, steps, wall time, img/s, provenance (git commit — from ``git``, else the
``SGDNOISE_GIT_COMMIT`` variable or a ``GIT_COMMIT`` file at the repository root —, device,
torch, python, date UTC) and the data identity, with no absolute path of any machine.
:func:`load_records` and :func:`load_sharpness` read them (and the older pilot records) into
pandas frames.
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

__all__ = [
    "NOISE_KEYS",
    "NOISE_KINDS",
    "PLAN_RECORD_FORMAT",
    "RECORD_FORMAT",
    "NoiseSpec",
    "Plan",
    "PlanError",
    "Run",
    "SweepConfigError",
    "estimate_run_seconds",
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
    "run_plan",
    "run_sweep",
    "sharpness_frame",
    "shard_runs",
    "train_config_fields",
    "validate_plan",
    "validate_sweep_config",
]

PLAN_RECORD_FORMAT = "sgdnoise.sweep.run/2"
RECORD_FORMAT = "sgdnoise.sweep.run/1"  # the pilot records of 2026-11-26
CIFAR10_TRAIN_SIZE = 50_000
DATA_KEYS = ("dataset", "data_dir", "data_seed", "n_train", "n_test", "image_size")
IMAGE_SIZES = (1, 2, 4, 8, 16, 32)  # the sides that divide CIFAR-10's 32 pixels
PLAN_KEYS = ("name", "data", "defaults", "arms", "priority")
ARM_KEYS = ("batch_sizes", "seeds", "config", "equal_steps", "noise")
NOISE_KEYS = ("kind", "injection_scale", "matched_small_batch", "num_samples",
              "lanczos_steps", "moment_probes")
NOISE_KINDS = ("isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn")
NOISE_DEFAULTS = {"num_samples": 64, "lanczos_steps": 10, "moment_probes": 4}
NOISE_CHUNK_SIZE = 16  # per-example chunk of exact moments, as chapter 9's NoiseConfig
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


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
class Run:
    """One training run of a plan: ``run_id = <arm>_B<batch size, 5 digits>_s<seed>``;
    ``noise`` is None for plain SGD."""

    arm: str
    batch_size: int
    seed: int
    run_id: str
    config: Any  # sgdnoise.train.TrainConfig
    noise: NoiseSpec | None = None

    def describe(self) -> dict[str, Any]:
        return {"arm": self.arm, "batch_size": self.batch_size, "seed": self.seed,
                "run_id": self.run_id}


@dataclass(frozen=True)
class Plan:
    """A validated plan: its name, data section and runs in priority order."""

    name: str
    data: dict[str, Any]
    runs: tuple[Run, ...]
    source: dict[str, Any]


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
    out = {"dataset": "cifar10", "data_dir": None, "data_seed": 0, "n_train": None,
           "n_test": None, "image_size": None, **data}
    if out["dataset"] not in ("cifar10", "synthetic"):
        raise _fail("data.dataset", f"must be one of ['cifar10', 'synthetic'], "
                                    f"got {out['dataset']!r}")
    for k in ("n_train", "n_test"):
        v = out[k]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise _fail(f"data.{k}", f"must be null or an integer >= 1, got {v!r}")
    side = out["image_size"]
    if side is not None and (isinstance(side, bool) or not isinstance(side, int)
                             or side not in IMAGE_SIZES):
        raise _fail("data.image_size", f"must be null (32x32) or one of {list(IMAGE_SIZES)}, "
                                       f"got {out['image_size']!r}")
    ds = out["data_seed"]
    if isinstance(ds, bool) or not isinstance(ds, int) or ds < 0:
        raise _fail("data.data_seed", f"must be an integer >= 0, got {ds!r}")
    if out["data_dir"] is not None and not isinstance(out["data_dir"], str):
        raise _fail("data.data_dir", f"must be null or a string, got {out['data_dir']!r}")
    if out["dataset"] == "synthetic" and out["n_train"] is None:
        raise _fail("data.n_train", "must be set for dataset 'synthetic', got null")
    if out["dataset"] == "cifar10" and (out["n_train"] or 0) > CIFAR10_TRAIN_SIZE:
        raise _fail("data.n_train", f"must be <= {CIFAR10_TRAIN_SIZE} (the CIFAR-10 training "
                                    f"images), got {out['n_train']}")
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
        if (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)
                or s < 0):
            raise _fail(f"{key}.injection_scale", f"must be a number >= 0, got {s!r}")
    else:
        b = spec["matched_small_batch"]
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise _fail(f"{key}.matched_small_batch", f"must be an integer >= 1, got {b!r}")
        if b > min(sizes):
            raise _fail(f"{key}.matched_small_batch",
                        f"must be <= every batch size of the arm ({sorted(sizes)}: noise is "
                        f"added to a larger batch), got {b}")
    out = {**NOISE_DEFAULTS, **spec}
    m = out["num_samples"]
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 2):
        raise _fail(f"{key}.num_samples", f"must be null (the whole batch) or an integer >= 2, "
                                          f"got {m!r}")
    k = out["lanczos_steps"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise _fail(f"{key}.lanczos_steps", f"must be an integer >= 1, got {k!r}")
    r = out["moment_probes"]
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise _fail(f"{key}.moment_probes", f"must be null (exact per-example moments) or an "
                                            f"integer >= 1, got {r!r}")
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


def validate_plan(plan: Mapping[str, Any], *, check_device: bool = True) -> Plan:
    """Check a whole plan and expand it into runs in priority order (see the module
    docstring). Raises :class:`PlanError` naming the first bad key, its value and what is
    allowed; nothing else happens before that."""
    from sgdnoise.train import steps_per_epoch

    if not isinstance(plan, Mapping):
        raise PlanError(f"a plan must be a mapping, got {type(plan).__name__}")
    top = _check_mapping("<plan>", plan, PLAN_KEYS)
    name = top.get("name", "plan")
    if not isinstance(name, str) or not name:
        raise _fail("name", f"must be a non-empty string, got {name!r}")
    data = _check_data(_check_mapping("data", top.get("data"), DATA_KEYS))
    allowed = train_config_fields()
    defaults = _check_mapping("defaults", top.get("defaults"), allowed)
    defaults.setdefault("eval_subset_seed", data["data_seed"])
    arms = top.get("arms")
    if not isinstance(arms, Mapping) or not arms:
        raise _fail("arms", f"must be a non-empty mapping of arm name -> arm, got {arms!r}")
    n_train = data["n_train"] if data["n_train"] is not None else CIFAR10_TRAIN_SIZE
    by_arm: dict[str, list[Run]] = {}
    for arm, spec in arms.items():
        if not isinstance(arm, str) or not _ARM_NAME.match(arm):
            raise _fail(f"arms.{arm}", "arm names must be letters, digits and '-', "
                                       f"got {arm!r}")
        spec = _check_mapping(f"arms.{arm}", spec, ARM_KEYS)
        sizes = _check_int_list(f"arms.{arm}.batch_sizes", spec.get("batch_sizes"), low=1)
        seeds = _check_int_list(f"arms.{arm}.seeds", spec.get("seeds", [0]), low=0)
        arm_config = _check_mapping(f"arms.{arm}.config", spec.get("config"), allowed)
        fields = {**defaults, **arm_config}
        for i, b in enumerate(sizes):
            if b > n_train:
                raise _fail(f"arms.{arm}.batch_sizes[{i}]",
                            f"must be <= n_train = {n_train}, got {b}")
        if "equal_steps" in spec:
            eq = _check_mapping(f"arms.{arm}.equal_steps", spec["equal_steps"],
                                ("batch_size", "epochs", "max_steps_cap"))
            for k in ("batch_size", "epochs"):
                v = eq.get(k)
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise _fail(f"arms.{arm}.equal_steps.{k}",
                                f"must be an integer >= 1, got {v!r}")
            cap = eq.get("max_steps_cap")
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int)
                                    or cap < 1):
                raise _fail(f"arms.{arm}.equal_steps.max_steps_cap",
                            f"must be null or an integer >= 1, got {cap!r}")
            if "max_steps" in (spec.get("config") or {}):
                raise _fail(f"arms.{arm}.config.max_steps",
                            "must not be set together with equal_steps")
            steps = eq["epochs"] * steps_per_epoch(
                n_train, eq["batch_size"], drop_last=bool(fields.get("drop_last", False)))
            fields["max_steps"] = min(steps, cap) if cap is not None else steps
        noise = _check_noise(arm, spec["noise"], sizes) if "noise" in spec else None
        runs = []
        for s in seeds:
            for b in sizes:
                cfg = _train_config(arm, fields, arm_config, b, s, check_device)
                if cfg.sharpness_n > n_train:
                    raise _fail(f"arms.{arm}.config.sharpness_n",
                                f"must be <= n_train = {n_train}, got {cfg.sharpness_n}")
                spec_b = (_noise_spec(arm, noise, cfg, n_train, arm_config)
                          if noise is not None else None)
                runs.append(Run(arm, b, s, f"{arm}_B{b:05d}_s{s}", cfg, spec_b))
        by_arm[arm] = runs
    ordered: list[Run] = []
    seen: set[str] = set()
    priority = top.get("priority") or []
    if not isinstance(priority, list):
        raise _fail("priority", f"must be a list of {{arm, seeds, batch_sizes}} entries, "
                                f"got {priority!r}")
    for i, entry in enumerate(priority):
        entry = _check_mapping(f"priority[{i}]", entry, ("arm", "seeds", "batch_sizes"))
        arm = entry.get("arm")
        if arm not in by_arm:
            raise _fail(f"priority[{i}].arm", f"unknown arm {arm!r}; arms: {list(by_arm)}")
        seeds = _priority_subset(i, "seeds", entry, {r.seed for r in by_arm[arm]}, arm)
        sizes = _priority_subset(i, "batch_sizes", entry,
                                 {r.batch_size for r in by_arm[arm]}, arm)
        for r in by_arm[arm]:
            if ((seeds is None or r.seed in seeds) and (sizes is None or r.batch_size in sizes)
                    and r.run_id not in seen):
                ordered.append(r)
                seen.add(r.run_id)
    for runs in by_arm.values():
        for r in runs:
            if r.run_id not in seen:
                ordered.append(r)
                seen.add(r.run_id)
    return Plan(name=name, data=data, runs=tuple(ordered), source=dict(plan))


def _priority_subset(i: int, key: str, entry: Mapping[str, Any], known: set[int],
                     arm: str) -> list[int] | None:
    """The seeds or batch sizes (``key``) a priority entry selects (None: all of the arm's),
    each one of the arm's (``known``)."""
    values = entry.get(key)
    if values is None:
        return None
    values = _check_int_list(f"priority[{i}].{key}", values, low=0 if key == "seeds" else 1)
    bad = [v for v in values if v not in known]
    if bad:
        raise _fail(f"priority[{i}].{key}", f"{key.replace('_', ' ')} {bad} are not "
                                            f"{key.replace('_', ' ')} of arm {arm!r} "
                                            f"({sorted(known)})")
    return values


def load_plan(path: str | os.PathLike, *, check_device: bool = True) -> Plan:
    """Read and validate a YAML plan (a legacy flat sweep config is converted first)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PlanError(f"cannot read plan {str(path)!r}: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PlanError(f"plan {str(path)!r} is not valid YAML: {err}") from None
    raw = raw if raw is not None else {}
    if isinstance(raw, Mapping) and "arms" not in raw:
        raw = legacy_to_plan(raw)
    return validate_plan(raw, check_device=check_device)


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
                     optimizer_factory: Callable[[Any], Any] | None = None
                     ) -> dict[str, float]:
    """Time ``steps`` training steps of ``cfg`` (after ``warmup`` untimed ones) and one
    evaluation of ``eval_batch_size`` clean examples, in this process on this device;
    ``optimizer_factory`` as in :func:`sgdnoise.train.train` (a noisy run's steps include
    drawing its noise).

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
                optimizer_factory=optimizer_factory)
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


# --------------------------------------------------------------------------- records


def record_path(out_dir: str | os.PathLike, run_id: str) -> Path:
    """``out_dir/<run_id>.json``."""
    return Path(out_dir) / f"{run_id}.json"


def _checkpoint_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / "checkpoints" / f"{run_id}.pt"


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


def _preprocessing(plan: Plan) -> str | None:
    """The ``data.preprocessing`` note the plan's records carry (None: 32×32 images)."""
    from sgdnoise.data import pooling_note

    side = plan.data.get("image_size")
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

    A record written by a different config (same run id) raises ValueError rather than mixing
    results."""
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
            old = json.loads(p.read_text())
            noise = r.noise.to_dict() if r.noise is not None else None
            if (old.get("config") != r.config.to_dict() or old.get("noise") != noise
                    or old.get("data", {}).get("preprocessing") != _preprocessing(plan)):
                raise ValueError(f"{p} was written by a different config for run {r.run_id}; "
                                 "use another --out folder")
            existing[r.run_id] = old
    pending = [r for r in runs if r.run_id not in existing]
    noisy = [r.run_id for r in pending if r.noise is not None]
    if dist is not None and dist.world_size > 1 and noisy:
        raise ValueError(f"runs {noisy[:3]} inject noise, which each data-parallel process "
                         "would draw from its own share of the batch: run them in one "
                         "process (no torchrun)")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if pending and data is None:
        data = _load_data(plan)
    probes: dict[tuple, dict[str, float]] = {}

    def default_estimate(run: Run) -> float:
        key = _run_probe_key(run)
        if key not in probes:
            probes[key] = probe_throughput(run.config, data,
                                           optimizer_factory=_optimizer_factory(run))
            say(f"[sweep] probe B={run.batch_size}: {probes[key]['step_s'] * 1e3:.1f} ms/step")
        return estimate_run_seconds(run.config, int(data.train_y.shape[0]),
                                    int(data.test_y.shape[0]), probes[key])

    est_fn = estimate or default_estimate
    measured = estimate is not None
    records: dict[str, dict[str, Any]] = dict(existing)
    for r in runs:
        if r.run_id in existing:
            say(f"[sweep] {r.run_id}: record exists, skipped")
            continue
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
        result = train(r.config, data, checkpoint_path=ckpt, progress=progress,
                       desc=r.run_id, optimizer_factory=_optimizer_factory(r, holder))
        rec = _run_record(plan, r, result, 1 if dist is None else dist.world_size,
                          holder.get("opt"))
        rec["data"] = _identity(data)
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
                     "two_over_lr", "source"]


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
    pilot records (format 1) get arm ``"pilot"`` and source ``"pilot"``."""
    out = []
    for f in _record_files(paths):
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
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
    with ``run_id, arm, batch_size, seed, step, lambda_max, lr, two_over_lr, source``."""
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
                         "source": rec.get("source")})
    df = pd.DataFrame(rows, columns=SHARPNESS_COLUMNS)
    return df.sort_values(["arm", "batch_size", "seed", "step"]).reset_index(drop=True)


# --------------------------------------------------------------------------- CLI


def _dry_run(plan: Plan, runs: Sequence[Run], out: Path) -> None:
    from sgdnoise.train import lr_multiplier, steps_per_epoch, total_steps

    n_train = plan.data["n_train"] or CIFAR10_TRAIN_SIZE
    print(f"plan {plan.name!r}: {len(plan.runs)} runs, {len(runs)} in this shard")
    w = max([22, *(len(r.run_id) for r in runs)])
    print(f"{'#':>3} {'run_id':<{w}} {'steps':>7} {'epochs':>8} {'images':>11} "
          f"{'peak lr':>8} {'record':>7}" + ("  noise" if any(r.noise for r in runs) else ""))
    total = 0
    for k, r in enumerate(runs):
        T = total_steps(r.config, n_train)
        spe = steps_per_epoch(n_train, r.batch_size, drop_last=r.config.drop_last)
        flat = dataclasses.replace(r.config, warmup_epochs=0.0, schedule="constant")
        peak = r.config.lr * lr_multiplier(flat, 0, T, spe)
        done = record_path(out, r.run_id).exists()
        total += 0 if done else T * r.batch_size
        noise = ""
        if r.noise is not None:
            n = r.noise
            noise = (f"  {n.kind} s={n.injection_scale:.4g} M={n.num_samples}"
                     + (f" k={n.lanczos_steps}" if n.kind == "hessian" else "")
                     + (f" r={n.moment_probes}" if n.kind in ("isotropic", "diag_fisher")
                        else ""))
        print(f"{k:>3} {r.run_id:<{w}} {T:>7} {T / spe:>8.1f} {T * r.batch_size:>11,} "
              f"{peak:>8.4g} {'yes' if done else '-':>7}{noise}")
    print(f"training images of the runs without a record: {total:,}")


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
    parser.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        shard = parse_shard(args.shard)
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
                        checkpoints=not args.no_checkpoints)
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
