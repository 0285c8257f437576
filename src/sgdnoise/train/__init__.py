"""The training engine: mini-batch SGD on a data set held as one tensor on the device.

One call of :func:`train` runs ``T`` steps of mini-batch SGD on the cross-entropy loss
(``T = cfg.max_steps``, or ``cfg.epochs`` epochs of steps) and evaluates the model on a
schedule of steps. Design points:

* **Data on the device.** ``train_x: (N, C, H, W)`` images (uint8 pixels, or floats already
  on the network's scale) or ``(N, D)`` float features is moved to ``cfg.device`` once. Each
  step gathers its batch by index, augments images there with one vectorised gather (random
  crop of the 4-pixel zero-padded image and a horizontal flip, see :func:`crop_flip`; feature
  vectors are never augmented), converts uint8 to normalised floats and switches images to
  ``channels_last``. No per-example Python loop, no DataLoader workers.
* **Exact batch semantics.** An epoch is ``ceil(N / B)`` steps over a fresh permutation
  (``floor(N / B)`` with ``drop_last``: every step then has exactly ``B`` examples). The loss
  of a step is the mean cross entropy over its ``B`` examples,
  ``L_B(θ) = (1/B) Σ_{i∈batch} ℓ_i(θ)``, and the step is ``θ ← θ − η_t ∇L_B(θ)`` (plus
  momentum / weight decay when configured). ``epoch = step / steps_per_epoch`` is recorded
  as a (fractional) progress measure.
* **Micro-batches.** With ``micro_batch_size = m < B`` the batch is cut into ``ceil(B / m)``
  chunks; chunk ``k`` contributes ``∇ (1/B) Σ_{i∈chunk k} ℓ_i`` and the gradients add up, so
  the accumulated gradient is exactly ``∇L_B`` for any network whose forward pass treats
  examples independently (``norm="none"`` or ``"group"``). **BatchNorm** normalises with the
  statistics of what it is given: with ``ghost_batch_size = g`` the BatchNorm layers
  (:class:`sgdnoise.models.GhostBatchNorm2d`) normalise fixed groups of ``g`` examples, and
  a micro-batch size that is a multiple of ``g`` (checked) leaves those groups unchanged: the
  BN batch is ``g`` for every ``B >= g`` whatever the micro-batching. Without a ghost size a
  micro-batched BatchNorm network sees micro-batch statistics.
* **Evaluation schedule.** ``eval_points = None``: after every epoch (and at step 0 with
  ``eval_at_start``); ``eval_points = K``: at ``K`` log-spaced steps in ``[1, T]`` (see
  :func:`eval_steps`) plus step 0; ``eval_points = 0``: never (the history stays empty and
  nothing is evaluated; hooks measure what they need). The training loss/error are measured
  on a fixed, clean (un-augmented), class-stratified subset of ``eval_train_n`` examples (all
  when None), the test loss/error on the whole test set (None in the records when the data
  has no test set). With ``bn_recompute`` the BatchNorm running statistics are recomputed
  before every evaluation (reset, then the cumulative average over clean training batches
  in train mode, see :func:`recompute_bn_stats`).
* **Sharpness.** Every ``sharpness_every`` steps (from step 0) and at the end when
  ``sharpness_n > 0``: ``λ_max`` of the Hessian of the mean training loss on ``sharpness_n``
  fixed clean training examples, by Lanczos on Hessian-vector products
  (:func:`sgdnoise.curvature.sharpness`), recorded with ``η_t``, ``2/η_t`` and the
  objective measured: BatchNorm in eval mode after the recompute
  (``sharpness_bn_mode="eval"``), or the training-mode objective with BatchNorm statistics
  of fixed groups of those examples (``"train"``, see :func:`sharpness_chunking`).
* **Engine paths.** ``engine="fast"`` (default) takes the fast implementation where the
  device has one (bf16 autocast, channels-last, fused SGD, device RNG on CUDA);
  ``"eager"`` computes the same run in float32 with contiguous tensors and SGD one tensor
  at a time (:func:`engine_paths`). ``cuda_paths_on_cpu`` makes the CPU take the CUDA
  choices, so that the tests execute every line a GPU run executes.
* **No per-step host synchronisation.** Each step's loss sum stays on the device: it is
  kept for the divergence check (and added to the running loss when evaluations read it).
  The kept losses are checked every ``divergence_check_every`` steps, at every evaluation and
  at the end (a NaN/inf loss stops the run with status ``"diverged"`` and the first bad
  step). With ``device_rng`` (default on CUDA) each epoch's permutation and augmentation
  parameters are drawn on the device in one call; the CPU path (the tested reference)
  draws them from CPU generators, the augmentation per step.
* **Repeatable.** The model is initialised from ``cfg.seed`` (without touching the global
  generator's state afterwards); shuffling and augmentation draw from two explicit
  generators, seeded ``1_000_003·seed + 17`` (shuffle: one ``torch.randperm(N)`` per epoch,
  whose consecutive slices of ``B`` are the epoch's batches) and ``1_000_003·seed + 29``
  (augmentation), on the CPU unless ``device_rng``. Their states, with the current epoch's
  permutation, are part of the checkpoint (written after every evaluation), so the same
  config and seed give the same numbers on CPU, and a resumed run ends with exactly the
  numbers of an uninterrupted one.
* **Hooks.** ``hooks``: objects with ``on_step(state: StepState) -> bool | None`` (after
  every step; a true return stops the run with status ``"stopped"`` after a last
  evaluation, unless ``eval_points = 0``) and/or ``on_eval(record)``. If the optimizer has
  ``observe_batch(inputs, targets)``, it is called with the current (augmented, local)
  batch right before ``optimizer.step()``.
* **Data parallel.** Under ``torch.distributed`` (``torchrun``; gloo on CPU, NCCL on GPU)
  the model is wrapped in ``DistributedDataParallel``; every rank draws the same global
  batch, takes its share (``tensor_split`` into ``world_size = K`` parts) and back-propagates
  ``(K/B) Σ_{i∈its share} ℓ_i``, so DDP's gradient average is ``∇ (1/B) Σ_{i∈batch} ℓ_i``,
  the single-process gradient; micro-batches accumulate under ``no_sync`` with one
  all-reduce per step. Only rank 0 writes checkpoints. The loop sees this through a
  strategy object (:func:`sgdnoise.distributed.strategy`: one process or data parallel,
  same methods), not through branches.

The package: :mod:`~sgdnoise.train.config` (:class:`TrainConfig`, engine paths, schedule
arithmetic), :mod:`~sgdnoise.train.batches` (sampling, augmentation, input conversion),
:mod:`~sgdnoise.train.measure` (evaluation, BatchNorm recompute, sharpness chunking),
:mod:`~sgdnoise.train.checkpoint`, :mod:`~sgdnoise.train.hooks`,
:mod:`~sgdnoise.train.noise_scale` (the noise scale of a model, and a hook recording it),
:mod:`~sgdnoise.train.optim` and :mod:`~sgdnoise.train.trainer` (:class:`Trainer`, whose
:meth:`~sgdnoise.train.Trainer.run` is the driver loop, and :func:`train`).
"""

from sgdnoise.curvature import sharpness

from .batches import crop_flip, random_crop_flip_params
from .checkpoint import CHECKPOINT_FORMAT
from .config import (
    ENGINE_PATHS,
    LIMITS,
    LR_SCALINGS,
    SCHEDULES,
    SHARPNESS_BN_MODES,
    EnginePaths,
    TrainConfig,
    engine_paths,
    eval_steps,
    lr_batch_ratio,
    lr_multiplier,
    scaled_lr,
    steps_per_epoch,
    total_steps,
    warmup_length,
)
from .hooks import StepBudget, StepState, TrainHook
from .measure import evaluate, recompute_bn_stats, sharpness_chunking
from .noise_scale import NoiseScaleTracker, noise_scale_of_model
from .optim import PlainSGD
from .trainer import RunState, Trainer, TrainResult, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "ENGINE_PATHS",
    "LIMITS",
    "LR_SCALINGS",
    "NoiseScaleTracker",
    "SCHEDULES",
    "SHARPNESS_BN_MODES",
    "EnginePaths",
    "PlainSGD",
    "RunState",
    "StepBudget",
    "StepState",
    "TrainConfig",
    "TrainHook",
    "TrainResult",
    "Trainer",
    "crop_flip",
    "engine_paths",
    "eval_steps",
    "evaluate",
    "lr_batch_ratio",
    "lr_multiplier",
    "noise_scale_of_model",
    "random_crop_flip_params",
    "recompute_bn_stats",
    "scaled_lr",
    "sharpness",
    "sharpness_chunking",
    "steps_per_epoch",
    "total_steps",
    "train",
    "warmup_length",
]
