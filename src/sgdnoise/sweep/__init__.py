"""Plans of training runs, the budgeted and sharded sweep that runs them, and their records.

Command line::

    sgdnoise-sweep PLAN.yaml --out DIR [--budget SECONDS] [--shard i/n] [--dry-run]
                   [--engine fast|eager]
    python -m sgdnoise.sweep PLAN.yaml --out DIR ...
    torchrun --nproc_per_node=K -m sgdnoise.sweep PLAN.yaml --out DIR   # data parallel

**A plan** (YAML) has five sections::

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
SGD: the fields of :class:`sgdnoise.noise.NoiseSpec` (checked by its declarations), with
the injection scale s as either ``injection_scale: s`` or ``matched_small_batch: b`` (s =
:func:`sgdnoise.noise.matched_injection_scale` ``(b, B, num_examples=N)``, the engine drawing
batches without replacement from the N training examples): ``kind`` (one of
:data:`sgdnoise.noise.NOISE_KINDS`), ``num_samples`` (M, default 64; null: the whole batch),
``lanczos_steps`` (default :data:`sgdnoise.noise.DEFAULT_LANCZOS_STEPS`) and
``moment_probes`` (default 4; null: exact per-example moments). Momentum and weight decay
come from the config, the noise seed is the run's seed; the model must not use BatchNorm
and ``nesterov`` must be off. The record stores the settings (with the resolved s) under
``noise`` and the seconds spent drawing noise under ``timing.noise_seconds``; a run without
``noise`` is unchanged. A record matches a run whatever it says about a setting the kind
does not use (``lanczos_steps`` outside the hessian kind, ``moment_probes`` outside the
isotropic and diagonal kinds).
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

The package: :mod:`~sgdnoise.sweep.plan` (the plan's sections, declared and validated with
:func:`sgdnoise.params.param`, and their expansion into runs), :mod:`~sgdnoise.sweep.runner`
(shards, the budget, the training loop over runs), :mod:`~sgdnoise.sweep.budget` (throughput
and device-time estimates), :mod:`~sgdnoise.sweep.tuning` (the η factor per batch size),
:mod:`~sgdnoise.sweep.records` (writing, reading and matching records) and
:mod:`~sgdnoise.sweep.cli` (the command line).
"""

from .budget import (
    H100_SLOWDOWN,
    PILOT_H200_EVAL_S_PER_EXAMPLE,
    PILOT_H200_IMG_PER_S,
    block_estimates,
    device_seconds,
    estimate_run_seconds,
    interpolated_rate,
    probe_throughput,
    throughput_table,
)
from .cli import main
from .plan import (
    TUNE_RULE,
    TUNE_SUFFIX,
    Plan,
    PlanError,
    Run,
    TuneSpec,
    load_plan,
    train_config_fields,
    validate_plan,
)
from .records import (
    PLAN_RECORD_FORMAT,
    RECORD_COLUMNS,
    RECORD_FORMAT,
    SHARPNESS_COLUMNS,
    load_records,
    load_sharpness,
    read_records,
    record_path,
    records_frame,
    sharpness_frame,
)
from .runner import parse_shard, run_plan, shard_runs
from .tuning import choose_lr_factor, final_validation_error, resolve_tuned_run

__all__ = [
    "H100_SLOWDOWN",
    "PILOT_H200_EVAL_S_PER_EXAMPLE",
    "PILOT_H200_IMG_PER_S",
    "PLAN_RECORD_FORMAT",
    "RECORD_COLUMNS",
    "RECORD_FORMAT",
    "SHARPNESS_COLUMNS",
    "TUNE_RULE",
    "TUNE_SUFFIX",
    "Plan",
    "PlanError",
    "Run",
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
    "main",
    "parse_shard",
    "probe_throughput",
    "read_records",
    "record_path",
    "records_frame",
    "resolve_tuned_run",
    "run_plan",
    "sharpness_frame",
    "shard_runs",
    "throughput_table",
    "train_config_fields",
    "validate_plan",
]
