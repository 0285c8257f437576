"""The training loop: a :class:`Trainer` holds one run's explicit state (:class:`RunState`)
and its parts (model, optimizer, sampler, data, strategy); :meth:`Trainer.run` is the
driver loop. :func:`train` builds one, restores its checkpoint and runs it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.curvature import sharpness
from sgdnoise.distributed import SingleProcess, strategy
from sgdnoise.grads import flat_params
from sgdnoise.models import build_model, set_ghost_batch_size
from sgdnoise.validate import check_output_dir

from .batches import Batcher, Sampler, TrainData, param_dtype
from .checkpoint import config_key, load_checkpoint, save_checkpoint
from .config import (
    TrainConfig,
    engine_paths,
    eval_steps,
    lr_multiplier,
    steps_per_epoch,
    total_steps,
    warmup_length,
)
from .hooks import StepState
from .measure import (
    bn_recompute_chunk,
    fast_autocast,
    loss_error_sums,
    recompute_bn_stats,
    sharpness_chunking,
    upcast,
)
from .optim import PlainSGD, default_optimizer

__all__ = ["RunState", "TrainResult", "Trainer", "default_model", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    - history: one dict per evaluation with ``step, epoch`` (= step / steps_per_epoch),
      ``examples_seen`` (= step · B), ``lr`` (η of the last step taken), ``train_loss,
      train_error`` (clean training subset), ``test_loss, test_error`` (None without a test
      set), ``param_distance`` (‖θ_t − θ_0‖₂ over the trainable parameters),
      ``running_loss`` (mean mini-batch loss on augmented data since the previous
      evaluation; None at step 0) and ``wall_time`` (seconds since the run started, summed
      over resumed segments).
    - sharpness: one dict per sharpness measurement: ``step, lr, lambda_max, two_over_lr``,
      ``bn_mode`` and ``bn_batch`` (the objective measured, see
      :func:`sgdnoise.train.sharpness_chunking`).
    - status: "finished", "diverged" or "stopped" (a hook asked to stop).
    - extra: ``step_seconds`` (time in training steps, this segment), ``eval_seconds``,
      ``sharpness_seconds``, ``examples_trained`` (this segment), ``engine`` (the
      :class:`sgdnoise.train.EnginePaths` taken, as a dict) and on CUDA ``peak_memory_gib``.
    - optimizer: the optimizer that trained the model (e.g. a
      :class:`sgdnoise.noise.NoisySGD`, whose ``stats`` say how long its noise took).
    """

    history: list[dict[str, Any]]
    status: str
    steps: int
    wall_time_s: float
    model: nn.Module
    diverged_at_step: int | None = None
    resumed_from_epoch: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sharpness: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int | None = None
    optimizer: Any = None


@dataclass
class RunState:
    """Everything about a run that changes as it trains (and what a checkpoint restores):
    the steps taken, η of the last step, the evaluation and sharpness records, ``θ₀``, the
    wall seconds of earlier segments (``elapsed``), the step a resumed run started from,
    and how the run ended (``status``, ``diverged_at``)."""

    step: int
    lr_now: float
    theta0: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    sharpness: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    resumed_from: int | None = None
    status: str = "finished"
    diverged_at: int | None = None
    examples_trained: int = 0


class DivergenceWatch:
    """The loss sums of the steps since the last divergence check, kept on the device
    (keeping one launches no kernel and does not synchronise with the host);
    :meth:`first_bad` reads them at a check. Every 256 kept losses are concatenated into
    one tensor, so a long interval between checks holds one number per step."""

    def __init__(self, step: int) -> None:
        self.start = step  # the step index of the first kept loss
        self.chunks: list[torch.Tensor] = []
        self.recent: list[torch.Tensor] = []

    def add(self, loss_sum: torch.Tensor) -> None:
        self.recent.append(loss_sum.reshape(1))
        if len(self.recent) == 256:
            self.chunks.append(torch.cat(self.recent))
            self.recent = []

    def first_bad(self) -> int | None:
        """The first step index (0-based) since the last check whose loss is not finite,
        or None; forgets the kept losses."""
        kept = self.chunks + self.recent
        if not kept:
            return None
        losses = torch.cat(kept)
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        first = self.start + int(bad[0]) if bad.numel() else None
        self.start += losses.numel()
        self.chunks, self.recent = [], []
        return first


class RunningLoss:
    """The sum of the step losses (float64, on the device) and of the examples since the
    last evaluation: the evaluation record's ``running_loss``. Only kept when the run
    evaluates (``enabled``)."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.n = 0
        self.enabled = enabled

    def add(self, loss_sum: torch.Tensor, examples: int) -> None:
        if self.enabled:
            self.total += loss_sum.double()
            self.n += examples

    def take(self) -> float:
        """The mean loss since the last call (one host synchronisation), then reset."""
        mean = float(self.total) / max(self.n, 1)
        self.total.zero_()
        self.n = 0
        return mean


def default_model(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``build_model(cfg.model, width=cfg.width, norm=cfg.norm, ghost_batch_size=...)``
    initialised from ``cfg.seed`` without touching the global generator's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model, num_classes=num_classes, in_shape=in_shape,
                           width=cfg.width, norm=cfg.norm,
                           ghost_batch_size=cfg.ghost_batch_size)


def _channels_last_ok(model: nn.Module, device: torch.device) -> bool:
    """Whether to run ``model`` in channels_last: always on CUDA; on CPU only when every
    convolution has at least 16 output channels. (With torch 2.14.1 on CPU, channels_last
    ResNets with 2-8 channels per stage corrupted the heap for some batch sizes, e.g. 5 or
    7; contiguous tensors are used for such narrow networks instead.)"""
    if device.type != "cpu":
        return True
    return all(m.out_channels >= 16 for m in model.modules() if isinstance(m, nn.Conv2d))


def _device_of(cfg: TrainConfig) -> torch.device:
    """``cfg.device``, with CUDA checked available and prepared (cuDNN autotuning, peak
    memory counter reset)."""
    device = torch.device(cfg.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but CUDA is not available")
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    return device


def _checkpoint_target(cfg: TrainConfig, path: str | Path | None, dist: SingleProcess
                       ) -> Path | None:
    """The checkpoint path (None: no checkpoints), refused before any work when the run has
    no evaluations (a checkpoint is written after each) or its folder cannot be written."""
    if path is None:
        return None
    if cfg.eval_points == 0:
        raise ValueError(f"checkpoint_path={str(path)!r} needs evaluations (a checkpoint is "
                         "written after each), got eval_points=0")
    if dist.is_main:
        check_output_dir("checkpoint_path's folder", Path(path).parent)
    return Path(path)


def _check_sizes(cfg: TrainConfig, n: int, dist: SingleProcess) -> None:
    """Refuse a batch or sharpness set larger than the ``n`` training examples and a batch
    smaller than the number of processes."""
    if cfg.batch_size > n:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {n} training examples")
    if cfg.batch_size < dist.world_size:
        raise ValueError(f"batch_size={cfg.batch_size} is smaller than "
                         f"world_size={dist.world_size}")
    if cfg.sharpness_n > n:
        raise ValueError(f"sharpness_n={cfg.sharpness_n} exceeds the {n} training examples")


class Trainer:
    """One training run of ``cfg`` on ``data`` (see :func:`train` for the arguments), with
    its state explicit: the parts built once (``model``, ``optimizer``, ``sampler``, the
    data on the device, the ``dist`` strategy, the evaluation and sharpness schedules) and
    the :class:`RunState` that training changes. :meth:`restore`, :meth:`step`,
    :meth:`evaluate`, :meth:`measure_sharpness` and :meth:`checkpoint` are the run's
    actions; :meth:`run` is the driver loop."""

    def __init__(self, cfg: TrainConfig, data: Any, *, model: nn.Module | None = None,
                 optimizer_factory: Callable[[nn.Module], Any] | None = None,
                 checkpoint_path: str | Path | None = None, hooks: Sequence[Any] = (),
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 engine: str = "fast", cuda_paths_on_cpu: bool = False) -> None:
        self.cfg = cfg.validate()
        self.paths = engine_paths(cfg, engine, cuda_paths_on_cpu=cuda_paths_on_cpu)
        self.device = _device_of(cfg)
        self.dist = strategy()
        self.ckpt = _checkpoint_target(cfg, checkpoint_path, self.dist)
        self.data = TrainData(data, self.device)
        _check_sizes(cfg, self.data.n, self.dist)
        self.spe = steps_per_epoch(self.data.n, cfg.batch_size, drop_last=cfg.drop_last)
        self.T = total_steps(cfg, self.data.n)
        self.evaluating = cfg.eval_points != 0
        self.eval_set = set(eval_steps(self.T, cfg.eval_points, steps_per_ep=self.spe,
                                       at_start=cfg.eval_at_start))
        self.sharp_set: set[int] = set()
        if cfg.sharpness_n > 0:
            self.sharp_set = {self.T, *(range(0, self.T + 1, cfg.sharpness_every)
                                        if cfg.sharpness_every is not None else ())}
        self._build_model(model, optimizer_factory)
        self._build_inputs()
        self.sampler = Sampler(self.data.n, cfg.batch_size, self.spe, cfg.seed, self.device,
                               on_device=self.paths.device_rng, augment=cfg.augment)
        self.state = RunState(step=0, lr_now=cfg.lr * lr_multiplier(cfg, 0, self.T, self.spe),
                              theta0=flat_params(self.model).clone())
        self.on_eval = [h.on_eval for h in hooks if hasattr(h, "on_eval")]
        self.on_eval += [on_epoch] if on_epoch is not None else []
        self.on_step = [h.on_step for h in hooks if hasattr(h, "on_step")]
        self.timers = {"step_seconds": 0.0, "eval_seconds": 0.0, "sharpness_seconds": 0.0}
        self.t0 = time.perf_counter()

    # ---------------------------------------------------------------- construction

    def _build_model(self, model: nn.Module | None, factory: Callable | None) -> None:
        """The model on the device (the default network initialised from the seed, or the
        caller's with its ghost BatchNorm size set), its optimizer (with each group's
        ``initial_lr``) and ``net``, what the training forward runs (the model, or its DDP
        wrapper, which broadcasts rank 0's parameters and buffers)."""
        cfg, device = self.cfg, self.device
        if model is None:
            model = default_model(cfg, tuple(self.data.train_x.shape[1:]),
                                  self.data.num_classes())
        elif cfg.ghost_batch_size is not None:
            set_ghost_batch_size(model, cfg.ghost_batch_size)
        model = model.to(device)
        self.channels_last = (self.paths.channels_last and self.data.train_x.ndim == 4
                              and _channels_last_ok(model, device))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = (factory or default_optimizer(cfg, self.paths.optimizer))(model)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.net = self.dist.wrap(model, device)
        self.observe = getattr(self.optimizer, "observe_batch", None)

    def _build_inputs(self) -> None:
        """The input conversions, the clean training subset of the evaluations and the
        fixed examples of the sharpness (as network inputs)."""
        cfg, data = self.cfg, self.data
        dtype = param_dtype(self.model)
        self.batcher = Batcher(data.train_x, dtype, self.channels_last)
        self.test_batcher = (Batcher(data.test_x, dtype, self.channels_last)
                             if data.has_test else None)
        self.eval_x, self.eval_y = data.subset(cfg.eval_train_n, cfg.eval_subset_seed)
        self.sharp_x = self.sharp_y = None
        if cfg.sharpness_n > 0:
            x, self.sharp_y = data.subset(cfg.sharpness_n, cfg.eval_subset_seed + 1)
            self.sharp_x = self.batcher.convert(x)
        # without warm-up or decay the multiplier is the same at every step: computed once
        self.const_mult = (lr_multiplier(cfg, 0, self.T, self.spe)
                           if cfg.schedule == "constant" and warmup_length(cfg, self.spe) == 0
                           else None)

    # ---------------------------------------------------------------- the run's actions

    def restore(self) -> bool:
        """Continue from the checkpoint when one exists (its config must match): model,
        optimizer and sampler states, records, step, η and ``θ₀``. Returns whether it did."""
        if self.ckpt is None or not self.ckpt.exists():
            return False
        saved = load_checkpoint(self.ckpt, self.cfg)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.sampler.load_state_dict(saved["sampler"])
        s = self.state
        s.history, s.sharpness = list(saved["history"]), list(saved["sharpness"])
        s.step, s.elapsed, s.lr_now = saved["step"], saved["wall_time_s"], saved["lr_now"]
        s.theta0 = saved["theta0"].to(self.device)
        s.resumed_from = s.step
        return True

    def step(self) -> tuple[torch.Tensor, int]:
        """One optimizer step on the next batch: ``(Σ_{i∈batch} ℓ_i`` as a 0-dim tensor on the
        device, ``B)``. The learning rate of every group is set for this step, the batch's
        micro-batches are back-propagated as ``(K/B) Σ ℓ_i`` each (``K`` processes), the
        optimizer sees the batch (``observe_batch``) and steps."""
        cfg, s = self.cfg, self.state
        pos = s.step % self.spe
        if pos == 0 or self.sampler.perm is None:
            self.sampler.new_epoch()
        gidx, aug = self.sampler.batch(pos)
        bsz = gidx.shape[0]
        gidx, aug = self.dist.shard_batch(gidx, aug)
        idx = gidx.to(self.device, non_blocking=True)
        mult = (self.const_mult if self.const_mult is not None
                else lr_multiplier(cfg, s.step, self.T, self.spe))
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * mult
        s.lr_now = cfg.lr * mult
        self.optimizer.zero_grad(set_to_none=True)
        xb = self.batcher.train_batch(self.data.train_x, idx, aug)
        yb = self.data.train_y[idx]
        loss_sum = self.dist.all_reduce_sum(self._backward(xb, yb, bsz))
        if self.observe is not None:
            self.observe(xb, yb)
        self.optimizer.step()
        s.step += 1
        s.examples_trained += bsz
        return loss_sum, bsz

    def _backward(self, xb: torch.Tensor, yb: torch.Tensor, bsz: int) -> torch.Tensor:
        """Accumulate the gradient of ``(K/B) Σ ℓ_i`` over micro-batches of this process's
        share ``xb``; return its loss sum (detached)."""
        micro = self.cfg.micro_batch_size or self.cfg.batch_size
        scale = self.dist.grad_scale / bsz
        autocast = fast_autocast(self.device, self.paths.autocast)
        starts = range(0, xb.shape[0], micro)
        loss_sum = None
        for lo in starts:
            with self.dist.accumulating(self.net, lo == starts[-1]), autocast:
                out = self.net(xb[lo:lo + micro])
            loss = F.cross_entropy(upcast(out), yb[lo:lo + micro], reduction="sum")
            (loss * scale).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        return loss_sum

    def _recompute_bn(self) -> None:
        if self.cfg.bn_recompute:
            recompute_bn_stats(self.model, self.eval_x, batch_size=bn_recompute_chunk(self.cfg),
                               batcher=self.batcher, use_autocast=self.paths.autocast)

    def _loss_error(self, x: torch.Tensor, y: torch.Tensor, batcher: Batcher
                    ) -> tuple[float, float]:
        """Mean loss and error over ``x, y``, this process's shard summed over processes."""
        lo, hi = self.dist.shard_range(x.shape[0])
        sums = loss_error_sums(self.model, batcher, x, y, batch_size=self.cfg.eval_batch_size,
                               use_autocast=self.paths.autocast, lo=lo, hi=hi)
        sums = self.dist.all_reduce_sum(sums)
        return float(sums[0]) / x.shape[0], float(sums[1]) / x.shape[0]

    def evaluate(self, running: float | None) -> dict[str, Any]:
        """The evaluation record at the current step (BatchNorm statistics recomputed
        first when configured, else taken from rank 0): loss and error on the clean
        training subset and the test set, ``‖θ − θ₀‖``, ``running`` (the mean step loss
        since the previous evaluation) and the wall time."""
        s, data = self.state, self.data
        start = time.perf_counter()
        self._recompute_bn()
        if not self.cfg.bn_recompute:
            self.dist.broadcast_buffers(self.model)
        tr_loss, tr_err = self._loss_error(self.eval_x, self.eval_y, self.batcher)
        te_loss = te_err = None
        if data.has_test:
            te_loss, te_err = self._loss_error(data.test_x, data.test_y, self.test_batcher)
        self.timers["eval_seconds"] += time.perf_counter() - start
        d = flat_params(self.model).double() - s.theta0.double()
        return {"step": s.step, "epoch": s.step / self.spe,
                "examples_seen": s.step * self.cfg.batch_size, "lr": s.lr_now,
                "train_loss": tr_loss, "train_error": tr_err, "test_loss": te_loss,
                "test_error": te_err, "param_distance": float(torch.linalg.vector_norm(d)),
                "running_loss": running, "wall_time": self.wall_time()}

    def measure_sharpness(self) -> None:
        """Append λ_max of the configured objective at the current step to the sharpness
        records (:func:`sgdnoise.curvature.sharpness` on the fixed examples; eval mode
        recomputes BatchNorm statistics first unless this step's evaluation just did)."""
        cfg, s = self.cfg, self.state
        start = time.perf_counter()
        mode = cfg.sharpness_bn_mode
        if mode == "eval" and not (s.history and s.history[-1]["step"] == s.step
                                   and cfg.bn_recompute):
            self._recompute_bn()
        chunk, bn_batch = sharpness_chunking(cfg)
        lam = sharpness(self.model, self.sharp_x, self.sharp_y, num_iters=cfg.sharpness_iters,
                        chunk_size=chunk, seed=cfg.seed, bn_mode=mode)
        s.sharpness.append({"step": s.step, "lr": s.lr_now, "lambda_max": lam,
                            "two_over_lr": 2.0 / s.lr_now if s.lr_now > 0 else math.inf,
                            "bn_mode": mode, "bn_batch": bn_batch})
        self.timers["sharpness_seconds"] += time.perf_counter() - start

    def checkpoint(self) -> None:
        """Write the checkpoint (rank 0 only, atomically; every process waits for it)."""
        if self.ckpt is None:
            return
        s = self.state
        if self.dist.is_main:
            save_checkpoint({
                "config": config_key(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "history": s.history,
                "sharpness": s.sharpness, "step": s.step, "lr_now": s.lr_now,
                "theta0": s.theta0, "wall_time_s": self.wall_time()}, self.ckpt)
        self.dist.barrier()

    def wall_time(self) -> float:
        """Seconds since the run started, over every segment."""
        return self.state.elapsed + (time.perf_counter() - self.t0)

    # ---------------------------------------------------------------- the driver loop

    def run(self, *, progress: bool = True, desc: str | None = None) -> TrainResult:
        """Train to step ``T`` (or until a hook stops the run or the loss diverges):
        evaluate, measure and checkpoint at the scheduled steps; return the result."""
        s, cfg = self.state, self.cfg
        self.t0 = time.perf_counter()
        bar = self._progress_bar(progress, desc)
        if s.step == 0 and not s.history:
            self._at_start()
        self.model.train()
        running = RunningLoss(self.device, self.evaluating)
        watch = DivergenceWatch(s.step)
        t_seg = time.perf_counter()
        while s.step < self.T:
            loss_sum, bsz = self.step()
            watch.add(loss_sum)
            running.add(loss_sum, bsz)
            bar.update(1)
            stop = self._call_step_hooks(loss_sum, bsz)
            boundary = (s.step in self.eval_set or s.step in self.sharp_set or stop
                        or s.step == self.T)
            if boundary or s.step % cfg.divergence_check_every == 0:
                self._check_divergence(watch)  # the one host synchronisation, every k steps
            if not (boundary or s.status == "diverged"):
                continue
            self.timers["step_seconds"] += self._synchronised(t_seg)
            if s.status == "diverged" or not self._at_boundary(running, stop, bar):
                break
            if stop:
                s.status = "stopped"
                break
            t_seg = time.perf_counter()
        bar.close()
        return self.result()

    def _at_start(self) -> None:
        if 0 in self.eval_set:
            self._emit(self.evaluate(None))
        if 0 in self.sharp_set:
            self.measure_sharpness()

    def _at_boundary(self, running: RunningLoss, stop: bool, bar: Any) -> bool:
        """The work of a scheduled step (or a stop): evaluation, sharpness, checkpoint.
        Returns False when the evaluation found a non-finite loss (the run diverged)."""
        s = self.state
        evaluated = s.step in self.eval_set or (stop and self.evaluating)
        if evaluated:
            rec = self.evaluate(running.take())
            bar.set_postfix({f"{k}_err": f"{rec[f'{k}_error']:.3f}"
                             for k in ("train", "test") if rec[f"{k}_error"] is not None})
            if not all(math.isfinite(rec[k]) for k in ("train_loss", "test_loss")
                       if rec[k] is not None):
                s.status, s.diverged_at = "diverged", s.step
            self._emit(rec)
            if s.status == "diverged":
                return False
        if s.step in self.sharp_set:
            self.measure_sharpness()
        self.model.train()
        if evaluated:
            self.checkpoint()
        return True

    def _call_step_hooks(self, loss_sum: torch.Tensor, bsz: int) -> bool:
        """Call every ``on_step`` hook; True when one asks to stop."""
        if not self.on_step:
            return False
        s = self.state
        st = StepState(step=s.step, epoch=s.step / self.spe, lr=s.lr_now, batch_size=bsz,
                       loss=loss_sum / bsz, model=self.model, optimizer=self.optimizer)
        stop = False
        for fn in self.on_step:
            stop = bool(fn(st)) or stop
        return stop

    def _check_divergence(self, watch: DivergenceWatch) -> None:
        bad = watch.first_bad()
        if bad is not None:
            self.state.status, self.state.diverged_at = "diverged", bad

    def _synchronised(self, since: float) -> float:
        """Seconds since ``since`` once the device has finished its queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - since

    def _emit(self, rec: dict[str, Any]) -> None:
        self.state.history.append(rec)
        if self.dist.is_main:
            for fn in self.on_eval:
                fn(rec)

    def _progress_bar(self, progress: bool, desc: str | None) -> Any:
        show = progress and self.dist.is_main
        if show:
            from tqdm.auto import tqdm
        else:  # a disabled bar; tqdm.auto would probe (and warn about) notebook widgets
            from tqdm import tqdm
        return tqdm(total=self.T, initial=self.state.step, leave=False, disable=not show,
                    desc=desc or f"B={self.cfg.batch_size}")

    def result(self) -> TrainResult:
        s = self.state
        extra: dict[str, Any] = {**self.timers, "examples_trained": s.examples_trained,
                                 "engine": self.paths.to_dict()}
        if self.device.type == "cuda":
            extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return TrainResult(
            history=s.history, status=s.status, steps=s.step, wall_time_s=self.wall_time(),
            model=self.model, diverged_at_step=s.diverged_at,
            resumed_from_epoch=None if s.resumed_from is None else s.resumed_from / self.spe,
            extra=extra, sharpness=s.sharpness, resumed_from_step=s.resumed_from,
            optimizer=self.optimizer)


def train(
    cfg: TrainConfig,
    data: Any,
    *,
    model: nn.Module | None = None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer | PlainSGD] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    hooks: Sequence[Any] = (),
    desc: str | None = None,
    engine: str = "fast",
    cuda_paths_on_cpu: bool = False,
) -> TrainResult:
    """Train with mini-batch SGD as configured by ``cfg`` (see :mod:`sgdnoise.train`):
    build a :class:`Trainer`, resume its checkpoint when there is one, run it.

    - data: anything with ``train_x`` (images ``(N, C, H, W)`` or features ``(N, D)``),
      ``train_y (N,)`` and optionally ``test_x``, ``test_y`` (attributes or dict keys; both
      absent or None: no test set, the records' test fields are None), e.g.
      :class:`sgdnoise.data.ImageData`.
    - model: a model to train in place (its initialisation is the caller's; with
      ``cfg.ghost_batch_size`` its BatchNorm layers are made ghost layers); default
      ``build_model(cfg.model, width=cfg.width, norm=cfg.norm)`` initialised from
      ``cfg.seed``.
    - optimizer_factory: ``model -> Optimizer`` (a ``torch.optim`` optimizer, or one with the
      same ``param_groups``, ``zero_grad``, ``step`` and state dicts, e.g.
      :class:`sgdnoise.train.PlainSGD`); default SGD (fused on CUDA). The engine owns the
      learning rate: at every step each parameter group's ``lr`` is set to its initial
      value times :func:`sgdnoise.train.lr_multiplier`. The optimizer is returned in the
      result.
    - checkpoint_path: where to save a checkpoint after every evaluation (atomically). If the
      file exists, training resumes from it (the config must match); it is read with
      ``torch.load(..., weights_only=True)``, so a file holding anything but tensors and
      plain containers is refused. Its folder is created and probed writable before any
      work. Needs evaluations (``cfg.eval_points != 0``).
    - on_epoch: called with each new evaluation record (same as a hook's ``on_eval``).
    - hooks: :class:`sgdnoise.train.TrainHook` objects (``on_step`` / ``on_eval``, both
      optional).
    - engine / cuda_paths_on_cpu: the implementation, ``"fast"`` or ``"eager"``, and whether
      the CPU takes the CUDA path's choices (see :func:`sgdnoise.train.engine_paths`;
      recorded in ``extra["engine"]``).
    """
    trainer = Trainer(cfg, data, model=model, optimizer_factory=optimizer_factory,
                      checkpoint_path=checkpoint_path, hooks=hooks, on_epoch=on_epoch,
                      engine=engine, cuda_paths_on_cpu=cuda_paths_on_cpu)
    trainer.restore()
    return trainer.run(progress=progress, desc=desc)
