"""A plan of training runs: its sections (each a dataclass whose fields are declared with
:func:`sgdnoise.params.param`, the one way parameters are validated), their checks and the
expansion into :class:`Run` objects in priority order (see :mod:`sgdnoise.sweep` for the
plan format)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sgdnoise.noise import NoiseSpec
from sgdnoise.params import ParamError, check_declared, declared, param
from sgdnoise.train import TrainConfig, steps_per_epoch, total_steps, warmup_length

__all__ = [
    "CIFAR10_TEST_SIZE",
    "CIFAR10_TRAIN_SIZE",
    "TUNE_RULE",
    "TUNE_SUFFIX",
    "Plan",
    "PlanError",
    "Run",
    "TuneSpec",
    "load_plan",
    "preprocessing_note",
    "train_config_fields",
    "validate_plan",
]

CIFAR10_TRAIN_SIZE = 50_000
CIFAR10_TEST_SIZE = 10_000
SYNTHETIC_TEST_SIZE = 1000  # sgdnoise.data.load_dataset's default
IMAGE_SIZES = (1, 2, 4, 8, 16, 32)  # the sides that divide CIFAR-10's 32 pixels
PLAN_KEYS = ("name", "data", "defaults", "arms", "priority")
TUNE_SUFFIX = "-tune"  # tuning runs of arm X are recorded as arm "X-tune"
TUNE_RULE = ("lowest final validation error; a run that did not finish (diverged) counts as "
             "+inf; ties go to the smaller factor")
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# a plan's name becomes part of file names (records' source, gpu_run.sh's tar): one path
# component of letters, digits, '_', '.', '-', not starting with '.' or '-', no '..'
_PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# upper bounds (inclusive) of the plan's own numbers, stated in the errors; TrainConfig's
# and NoiseSpec's fields are bounded by their declarations
SIZE_LIMIT = 10**7  # examples of a synthetic data set
SEED_LIMIT = 2**32 - 1


class PlanError(ValueError):
    """A plan is invalid; the message names the plan key and the value."""


def _fail(key: str, message: str) -> PlanError:
    return PlanError(f"plan key {key!r}: {message}")


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataSection:
    """The ``data`` section: which data set, the subset sizes (null: all), the seed of the
    subsets and of the evaluation subset, and the side the images are pooled to (null:
    32 × 32)."""

    dataset: str = param(default="cifar10", choices=("cifar10", "synthetic"),
                         doc="data set")
    data_dir: str | None = param(default=None, doc="folder of CIFAR-10 (null: the default)")
    data_seed: int = param(default=0, low=0, high=SEED_LIMIT, doc="seed of the subsets")
    n_train: int | None = param(default=None, low=1, high=SIZE_LIMIT,
                                doc="training examples (null: all)")
    n_test: int | None = param(default=None, low=1, high=SIZE_LIMIT,
                               doc="test examples (null: all)")
    image_size: int | None = param(default=None, choices=IMAGE_SIZES,
                                   doc="side of the pooled images (null: 32)")

    def __post_init__(self) -> None:
        check_declared(self)
        if self.dataset == "synthetic" and self.n_train is None:
            raise ParamError("n_train", None, "must be set for dataset 'synthetic'")
        limits = {"n_train": (CIFAR10_TRAIN_SIZE, "training"),
                  "n_test": (CIFAR10_TEST_SIZE, "test")}
        for name, (limit, split) in limits.items():
            value = getattr(self, name)
            if self.dataset == "cifar10" and (value or 0) > limit:
                raise ParamError(name, value, f"must be <= {limit} (the CIFAR-10 {split} "
                                              "images)")


@dataclass(frozen=True)
class EqualSteps:
    """An arm's ``equal_steps`` section: ``max_steps`` is the number of steps
    ``batch_size`` takes in ``epochs`` epochs, capped at ``max_steps_cap``."""

    batch_size: int = param(low=1, high=SIZE_LIMIT, doc="reference batch size")
    epochs: int = param(low=1, high=100_000, doc="its epochs")
    max_steps_cap: int | None = param(default=None, low=1, high=10**9, doc="cap of the steps")

    def __post_init__(self) -> None:
        check_declared(self)


@dataclass(frozen=True)
class TuneSpec:
    """An arm's learning-rate tuning (its ``tune`` section): for each batch size, one run
    per factor ``f`` of ``lr_factors`` with η = f · (the arm's η), seed ``seed``, trained
    on the training split less ``n_val`` held-out examples and evaluated on those; the
    arm's runs then use the factor :func:`sgdnoise.sweep.choose_lr_factor` picks."""

    arm: str
    lr_factors: tuple[float, ...] = param(low=0.0, low_open=True, high=math.inf,
                                          doc="factors of η tried")
    n_val: int = param(low=1, high=SIZE_LIMIT, doc="validation examples")
    seed: int = param(default=0, low=0, high=SEED_LIMIT, doc="seed of the tuning runs")

    def __post_init__(self) -> None:
        given = self.lr_factors
        for name, value in check_declared(self).items():
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
        if len(set(self.lr_factors)) != len(self.lr_factors):
            raise ParamError("lr_factors", given, "must not repeat a value")

    def run_id(self, batch_size: int, factor: float) -> str:
        """``<arm>-tune_B<batch size, 5 digits>_s<seed>_x<factor>``."""
        return f"{self.arm}{TUNE_SUFFIX}_B{batch_size:05d}_s{self.seed}_x{factor:g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ArmLists:
    """An arm's batch sizes and seeds (each run is one pair)."""

    batch_sizes: tuple[int, ...] = param(low=1, high=SIZE_LIMIT, doc="batch sizes")
    seeds: tuple[int, ...] = param(default=(0,), low=0, high=SEED_LIMIT, doc="seeds")

    def __post_init__(self) -> None:
        check_declared(self)
        for name in ("batch_sizes", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ParamError(name, list(values), "must not repeat a value")


@dataclass(frozen=True)
class PriorityEntry:
    """A ``priority`` entry: the arm's runs of these seeds and batch sizes (null: all)."""

    arm: str = param(doc="arm")
    seeds: tuple[int, ...] | None = param(default=None, low=0, high=SEED_LIMIT, doc="seeds")
    batch_sizes: tuple[int, ...] | None = param(default=None, low=1, high=SIZE_LIMIT,
                                                doc="batch sizes")

    def __post_init__(self) -> None:
        check_declared(self)


def train_config_fields() -> tuple[str, ...]:
    """The keys a plan's ``defaults`` / arm ``config`` may set: the fields of
    :class:`sgdnoise.train.TrainConfig` less ``batch_size`` and ``seed``."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in ("batch_size", "seed"))


def _mapping(key: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
    """``value`` as a dict whose keys are all ``allowed`` (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping, got {type(value).__name__} {value!r}")
    unknown = sorted(set(value) - set(allowed), key=str)
    if unknown:
        raise _fail(f"{key}.{unknown[0]}", f"unknown key (value {value[unknown[0]]!r}); "
                                           f"allowed: {sorted(allowed)}")
    return dict(value)


def _section(cls: type, key: str, value: Any, **fixed: Any) -> Any:
    """The section ``key`` as an instance of the dataclass ``cls`` (its declared fields
    are the allowed keys; ``fixed``: values not taken from the plan). A refused value is a
    :class:`PlanError` naming ``key.<field>``, a missing required key one naming it."""
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping with keys {list(declared(cls))}, got {value!r}")
    given = _mapping(key, value, list(declared(cls)))
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in given | fixed
               and f.default is dataclasses.MISSING]
    if missing:
        raise _fail(f"{key}.{missing[0]}", "missing (required)")
    try:
        return cls(**fixed, **given)
    except ParamError as err:
        raise _fail(f"{key}.{err.field}", f"{err.rule}, got {err.value!r}") from None


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One training run of a plan: ``run_id = <arm>_B<batch size, 5 digits>_s<seed>``;
    ``noise`` is None for plain SGD.

    - tune: the arm's :class:`TuneSpec` when the arm is tuned. For the arm's own runs
      ``config.lr`` is the arm's η until :func:`sgdnoise.sweep.resolve_tuned_run`
      multiplies it by the chosen factor (then ``lr_choice`` says which and why).
    - lr_factor: for a tuning run (arm ``<arm>-tune``, id :meth:`TuneSpec.run_id`), its
      factor; it trains on the training split less the validation set and its records'
      test fields are validation numbers.
    - block: the number of the priority entry that placed the run (1, 2, …; the runs no
      entry names form the last block)."""

    arm: str
    batch_size: int
    seed: int
    run_id: str
    config: TrainConfig
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


def preprocessing_note(data: Mapping[str, Any]) -> str | None:
    """The ``data.preprocessing`` note the records of a plan with data section ``data``
    carry (None: the 32×32 images)."""
    from sgdnoise.data import pooling_note

    side = data.get("image_size")
    return None if side in (None, 32) else pooling_note(side)


@dataclass(frozen=True)
class Plan:
    """A validated plan: its name, data section and runs in priority order; ``blocks[k]``
    describes priority block ``k + 1``."""

    name: str
    data: dict[str, Any]
    runs: tuple[Run, ...]
    source: dict[str, Any]
    blocks: tuple[str, ...] = ()

    @property
    def n_train(self) -> int:
        """Training examples of the plan's runs (its tuning runs hold out ``n_val``)."""
        return self.data["n_train"] if self.data["n_train"] is not None else CIFAR10_TRAIN_SIZE

    def load_data(self, n_val: int | None = None) -> Any:
        """The plan's data (:func:`sgdnoise.data.load_dataset`, pooled when the data
        section sets ``image_size``); with ``n_val``, the data of a tuning run: the
        training split less ``n_val`` held-out examples, and those as the "test" set."""
        from sgdnoise.data import load_dataset, pool_dataset

        d = self.data
        n_train = d["n_train"] if n_val is None else self.n_train - n_val
        data = load_dataset(d["dataset"], n_train=n_train, n_test=d["n_test"], n_val=n_val,
                            seed=d["data_seed"], data_dir=d["data_dir"])
        if d.get("image_size") not in (None, 32):
            data = pool_dataset(data, d["image_size"])
        if n_val is None:
            return data
        return dataclasses.replace(data, test_x=data.val_x, test_y=data.val_y)


def _origin(arm: str, field: str | None, arm_config: Mapping[str, Any]) -> str:
    """The plan key a TrainConfig field came from: the arm's config, else the defaults."""
    if field is None:
        return f"arms.{arm}.config"
    return f"arms.{arm}.config.{field}" if field in arm_config else f"defaults.{field}"


def _train_config(arm: str, fields: Mapping[str, Any], arm_config: Mapping[str, Any],
                  batch_size: int, seed: int, check_device: bool) -> TrainConfig:
    """The validated config of one run; a refused field names the plan key it came from."""
    try:
        cfg = TrainConfig(batch_size=batch_size, seed=seed, **fields).validate()
    except ParamError as err:
        raise _fail(_origin(arm, err.field, arm_config), f"{err.rule}, got {err.value!r}"
                    ) from None
    if check_device:
        dev = torch.device(cfg.device)
        key = _origin(arm, "device", arm_config)
        if dev.type not in ("cpu", "cuda"):
            raise _fail(key, f"must be cpu, cuda or cuda:N, got {cfg.device!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise _fail(key, f"{cfg.device!r} requested but CUDA is not available here")
    return cfg


def _noise_section(arm: str, value: Any, sizes: Sequence[int]) -> dict[str, Any]:
    """The validated ``noise`` section of an arm: the keys of :class:`NoiseSpec` checked
    by its declarations, exactly one of ``injection_scale`` and ``matched_small_batch``
    (the small batch at most the arm's smallest batch size), defaults filled in."""
    key = f"arms.{arm}.noise"
    specs = declared(NoiseSpec)
    if not isinstance(value, Mapping):
        raise _fail(key, f"must be a mapping with keys {list(specs)}, got {value!r}")
    section = _mapping(key, value, list(specs))
    try:
        for name, v in section.items():
            specs[name].check(name, v)
    except ParamError as err:
        raise _fail(f"{key}.{err.field}", f"{err.rule}, got {err.value!r}") from None
    if "kind" not in section:
        raise _fail(f"{key}.kind", "missing (required)")
    given = [k for k in ("injection_scale", "matched_small_batch") if k in section]
    if len(given) != 1:
        raise _fail(key, "must set exactly one of 'injection_scale' and "
                         f"'matched_small_batch', got {given or 'neither'}")
    b = section.get("matched_small_batch")
    if b is not None and b > min(sizes):
        raise _fail(f"{key}.matched_small_batch",
                    f"must be <= every batch size of the arm ({sorted(sizes)}: noise is "
                    f"added to a larger batch), got {b}")
    defaults = {f.name: f.default for f in dataclasses.fields(NoiseSpec)
                if f.name in ("num_samples", "lanczos_steps", "moment_probes")}
    return {**defaults, **section}


def _noise_spec(arm: str, noise: Mapping[str, Any], cfg: TrainConfig, n_train: int,
                arm_config: Mapping[str, Any]) -> NoiseSpec:
    """The noise of one run: s resolved for its batch size; the config must allow it."""
    if cfg.norm == "batch":
        raise _fail(f"arms.{arm}.noise", "needs examples that do not interact: norm 'group' "
                    f"or 'none', got norm='batch' (from {_origin(arm, 'norm', arm_config)})")
    if cfg.nesterov:
        raise _fail(f"arms.{arm}.noise", "NoisySGD takes no Nesterov momentum: nesterov must "
                    f"be false, got true (from {_origin(arm, 'nesterov', arm_config)})")
    settings = {k: noise[k] for k in ("num_samples", "lanczos_steps", "moment_probes")}
    if noise.get("matched_small_batch") is not None:
        return NoiseSpec.matched(noise["kind"], noise["matched_small_batch"], cfg.batch_size,
                                 num_examples=n_train, **settings)
    return NoiseSpec(noise["kind"], float(noise["injection_scale"]), **settings)


def _equal_steps(arm: str, spec: Mapping[str, Any], fields: dict[str, Any],
                 n_train: int) -> None:
    """Set ``fields["max_steps"]`` from the arm's ``equal_steps`` section (validated)."""
    eq = _section(EqualSteps, f"arms.{arm}.equal_steps", spec["equal_steps"])
    if "max_steps" in (spec.get("config") or {}):
        raise _fail(f"arms.{arm}.config.max_steps", "must not be set together with equal_steps")
    steps = eq.epochs * steps_per_epoch(n_train, eq.batch_size,
                                        drop_last=bool(fields.get("drop_last", False)))
    fields["max_steps"] = min(steps, eq.max_steps_cap) if eq.max_steps_cap else steps


def _tune_spec(arm: str, value: Any, sizes: Sequence[int], n_train: int,
               arm_names: Iterable[str]) -> TuneSpec:
    """The validated ``tune`` section of an arm."""
    key = f"arms.{arm}.tune"
    tune = _section(TuneSpec, key, value, arm=arm)
    if tune.n_val >= n_train:
        raise _fail(f"{key}.n_val", f"must be an integer in [1, {n_train - 1}] (examples held "
                                    f"out of the {n_train} training examples), got "
                                    f"{tune.n_val!r}")
    for i, b in enumerate(sizes):
        if b > n_train - tune.n_val:
            raise _fail(f"arms.{arm}.batch_sizes[{i}]",
                        f"must be <= n_train - tune.n_val = {n_train - tune.n_val} (the "
                        f"tuning runs' training examples), got {b}")
    if f"{arm}{TUNE_SUFFIX}" in arm_names:
        raise _fail(f"arms.{arm}{TUNE_SUFFIX}", f"is the name of arm {arm!r}'s tuning runs; "
                                                "rename the arm")
    return tune


def _tuning_runs(tune: TuneSpec, main: Run, n_train: int) -> list[Run]:
    """The tuning runs of one batch size, built from the arm's run ``main`` of that size:
    its config at η · f with seed ``tune.seed``, no sharpness, and the main run's schedule
    in steps (``max_steps`` = its ``T``, warm-up in steps), so that a factor is judged on
    the schedule it will be used with."""
    cfg = main.config
    spe = steps_per_epoch(n_train, cfg.batch_size, drop_last=cfg.drop_last)
    base = dataclasses.replace(
        cfg, seed=tune.seed, max_steps=total_steps(cfg, n_train), sharpness_n=0,
        sharpness_every=None, warmup_steps=round(warmup_length(cfg, spe)))
    return [Run(f"{tune.arm}{TUNE_SUFFIX}", main.batch_size, tune.seed,
                tune.run_id(main.batch_size, f), dataclasses.replace(base, lr=cfg.lr * f),
                main.noise, tune=tune, lr_factor=f) for f in tune.lr_factors]


@dataclass
class _Arm:
    """One arm being expanded: its name, lists, the TrainConfig fields of its runs (the
    plan's defaults overridden by its config), and its noise and tuning sections."""

    name: str
    lists: ArmLists
    arm_config: dict[str, Any]
    fields: dict[str, Any]
    noise: dict[str, Any] | None
    tune: TuneSpec | None

    def run(self, b: int, s: int, n_train: int, check_device: bool) -> Run:
        cfg = _train_config(self.name, self.fields, self.arm_config, b, s, check_device)
        if cfg.sharpness_n > n_train:
            raise _fail(f"arms.{self.name}.config.sharpness_n",
                        f"must be <= n_train = {n_train}, got {cfg.sharpness_n}")
        noise = (_noise_spec(self.name, self.noise, cfg, n_train, self.arm_config)
                 if self.noise is not None else None)
        return Run(self.name, b, s, f"{self.name}_B{b:05d}_s{s}", cfg, noise, tune=self.tune)


def _arm(name: str, spec: Any, defaults: Mapping[str, Any], n_train: int,
         arm_names: Sequence[str]) -> _Arm:
    """One arm's sections, validated."""
    key = f"arms.{name}"
    spec = _mapping(key, spec, ("batch_sizes", "seeds", "config", "equal_steps", "noise",
                                "tune"))
    lists = _section(ArmLists, key, {k: spec[k] for k in ("batch_sizes", "seeds")
                                     if k in spec})
    arm_config = _mapping(f"{key}.config", spec.get("config"), train_config_fields())
    fields = {**defaults, **arm_config}
    for i, b in enumerate(lists.batch_sizes):
        if b > n_train:
            raise _fail(f"{key}.batch_sizes[{i}]", f"must be <= n_train = {n_train}, got {b}")
    if "equal_steps" in spec:
        _equal_steps(name, spec, fields, n_train)
    noise = (_noise_section(name, spec["noise"], lists.batch_sizes) if "noise" in spec
             else None)
    tune = (_tune_spec(name, spec["tune"], lists.batch_sizes, n_train, arm_names)
            if "tune" in spec else None)
    return _Arm(name, lists, arm_config, fields, noise, tune)


def _arm_runs(arm: _Arm, n_train: int, check_device: bool
              ) -> tuple[list[Run], dict[int, list[Run]]]:
    """One arm's runs (seed-major) and, for a tuned arm, its tuning runs per batch size."""
    runs = [arm.run(b, s, n_train, check_device) for s in arm.lists.seeds
            for b in arm.lists.batch_sizes]
    if arm.tune is None:
        return runs, {}
    return runs, {b: _tuning_runs(arm.tune, arm.run(b, arm.tune.seed, n_train, check_device),
                                  n_train) for b in arm.lists.batch_sizes}


def _priority_entry(i: int, entry: Any, by_arm: Mapping[str, list[Run]]
                    ) -> tuple[list[Run], str]:
    """The runs of priority entry ``i`` (validated) and its description."""
    entry = _section(PriorityEntry, f"priority[{i}]", entry)
    if entry.arm not in by_arm:
        raise _fail(f"priority[{i}].arm", f"unknown arm {entry.arm!r}; arms: {list(by_arm)}")
    label = [f"arm {entry.arm}"]
    picked = by_arm[entry.arm]
    for key, attr in (("seeds", "seed"), ("batch_sizes", "batch_size")):
        wanted = getattr(entry, key)
        if wanted is None:
            continue
        known = {getattr(r, attr) for r in by_arm[entry.arm]}
        bad = [v for v in wanted if v not in known]
        if bad:
            raise _fail(f"priority[{i}].{key}", f"{bad} are not {key} of arm {entry.arm!r} "
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
            for t in [*tuning.get(r.arm, {}).get(r.batch_size, []), r]:
                if t.run_id not in seen:
                    ordered.append(dataclasses.replace(t, block=block))
                    seen.add(t.run_id)
        if len(ordered) > before or block < len(groups):
            labels.append(label)
    return ordered, labels


def _plan_name(top: Mapping[str, Any]) -> str:
    name = top.get("name", "plan")
    if not isinstance(name, str) or not _PLAN_NAME.match(name) or ".." in name:
        raise _fail("name", "must be one file-name part: letters, digits, '_', '.' and '-', "
                            f"starting with a letter or digit, without '..'; got {name!r}")
    return name


def validate_plan(plan: Mapping[str, Any], *, check_device: bool = True) -> Plan:
    """Check a whole plan and expand it into runs in priority order (see
    :mod:`sgdnoise.sweep`). Raises :class:`PlanError` naming the first bad key, its value
    and what is allowed; nothing else happens before that."""
    if not isinstance(plan, Mapping):
        raise PlanError(f"a plan must be a mapping, got {type(plan).__name__}")
    top = _mapping("<plan>", plan, PLAN_KEYS)
    name = _plan_name(top)
    given = top.get("data")
    data = dataclasses.asdict(_section(DataSection, "data", {} if given is None else given))
    n_train = data["n_train"] if data["n_train"] is not None else CIFAR10_TRAIN_SIZE
    defaults = _mapping("defaults", top.get("defaults"), train_config_fields())
    defaults.setdefault("eval_subset_seed", data["data_seed"])
    arms = top.get("arms")
    if not isinstance(arms, Mapping) or not arms:
        raise _fail("arms", f"must be a non-empty mapping of arm name -> arm, got {arms!r}")
    by_arm: dict[str, list[Run]] = {}
    tuning: dict[str, dict[int, list[Run]]] = {}
    for arm, spec in arms.items():
        if not isinstance(arm, str) or not _ARM_NAME.match(arm):
            raise _fail(f"arms.{arm}", f"arm names must be letters, digits and '-', got {arm!r}")
        expanded = _arm(arm, spec, defaults, n_train, list(arms))
        by_arm[arm], tuning[arm] = _arm_runs(expanded, n_train, check_device)
    ordered, labels = _order_runs(top.get("priority"), by_arm, tuning)
    return Plan(name=name, data=data, runs=tuple(ordered), source=dict(plan),
                blocks=tuple(labels))


def load_plan(path: str | os.PathLike, *, check_device: bool = True) -> Plan:
    """Read and validate a YAML plan. The file is read with
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
            raise PlanError(f"the plan has no 'arms' section (top-level keys: "
                            f"{sorted(map(str, raw))}); allowed: {list(PLAN_KEYS)}")
        return validate_plan(raw, check_device=check_device)
    except PlanError as err:
        raise PlanError(f"{path}: {err}") from None
