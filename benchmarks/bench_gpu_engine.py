"""Benchmark: training throughput of today's engine (the step loop of commit 85f2705, frozen
below as the baseline) and of the new one (sgdnoise.train: no per-step host sync, per-epoch
permutation and augmentation drawn on the device, fused SGD), measured in this one run on
this device, as img/s and ratios; plus the preflight's check that 20 steps of the fast path
(bf16 autocast, channels-last, fused SGD) match 20 eager float32 steps within its
tolerances (:mod:`sgdnoise.preflight`).

Run on a GPU as ``python benchmarks/bench_gpu_engine.py`` (ResNet34 width 64, B = 128 and
8192, bf16 autocast, channels_last, micro-batches of 4,096); ``--smoke`` runs a tiny CNN on
the CPU in seconds (to exercise the code, not to measure). ``main()`` returns the numbers as
a dict. Nothing here asserts a timing; the issue's goals (≥ 2.5× at B = 128, ≥ 40k img/s at
large B) are printed beside the measured numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sgdnoise.models import build_model
from sgdnoise.preflight import LOSS_TOLERANCE, PARAM_TOLERANCE
from sgdnoise.sweep import probe_throughput
from sgdnoise.train import (
    TrainConfig,
    lr_multiplier,
    random_crop_flip_params,
    steps_per_epoch,
)
from sgdnoise.train.batches import Batcher
from sgdnoise.train.measure import autocast as _autocast
from sgdnoise.train.measure import upcast

GOAL_RATIO_SMALL_B = 2.5
GOAL_IMG_S_LARGE_B = 40_000


def _model(cfg: TrainConfig, device: torch.device):
    torch.manual_seed(cfg.seed)
    m = build_model(cfg.model, width=cfg.width, norm=cfg.norm,
                    ghost_batch_size=cfg.ghost_batch_size).to(device)
    return m.to(memory_format=torch.channels_last) if cfg.channels_last else m


def baseline_step_seconds(cfg: TrainConfig, data, *, steps: int, warmup: int) -> float:
    """Seconds per step of today's loop (frozen copy): a CPU permutation, augmentation
    parameters drawn on the CPU per step and copied, a host sync per step (the NaN check with
    its default ``divergence_check_every=1``), non-fused SGD."""
    device = torch.device(cfg.device)
    train_x = data.train_x.to(device)
    train_y = data.train_y.to(device=device, dtype=torch.long)
    model = _model(cfg, device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    batcher = Batcher(train_x, torch.float32, cfg.channels_last)
    n = train_x.shape[0]
    spe = steps_per_epoch(n, cfg.batch_size, drop_last=cfg.drop_last)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17)
    aug_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 29)
    micro = cfg.micro_batch_size or cfg.batch_size
    autocast = _autocast(device, cfg.amp and device.type == "cuda")
    model.train()
    perm = torch.randperm(n, generator=shuffle_gen)
    running = torch.zeros((), dtype=torch.float64, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        s = step % spe
        if s == 0 and step > 0:
            perm = torch.randperm(n, generator=shuffle_gen)
        gidx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        bsz = gidx.shape[0]
        aug = random_crop_flip_params(bsz, aug_gen) if cfg.augment else None
        idx = gidx.to(device, non_blocking=True)
        mult = lr_multiplier(cfg, step, spe * cfg.epochs, spe)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * mult
        opt.zero_grad(set_to_none=True)
        xb = batcher.train_batch(train_x, idx, aug)
        yb = train_y[idx]
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        for lo in range(0, xb.shape[0], micro):
            with autocast:
                out = model(xb[lo:lo + micro])
            loss = F.cross_entropy(upcast(out), yb[lo:lo + micro], reduction="sum")
            (loss / bsz).backward()
            loss_sum = loss_sum + loss.detach()
        bad = bad | ~torch.isfinite(loss_sum)
        running += loss_sum.double()
        if bool(bad):  # today's per-step host synchronisation
            raise RuntimeError("baseline diverged")
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def fast_vs_eager_check(cfg: TrainConfig, data, *, steps: int = 20) -> dict[str, float]:
    """The preflight's comparison (:func:`sgdnoise.preflight.compare_paths`): ``steps``
    steps of the fast path (bf16 autocast, channels-last, fused SGD on CUDA) against the
    eager float32 path from the same initialisation and batches; returns the largest
    step-loss difference relative to the first loss, the parameter difference relative to
    the distance travelled, and whether both are within the preflight's tolerances."""
    from sgdnoise.preflight import compare_paths
    from sgdnoise.sweep import Run

    case = compare_paths(Run("bench", cfg.batch_size, cfg.seed, "bench", cfg), data,
                         steps=steps)
    return {"loss_difference": case.loss_difference,
            "relative_difference": case.param_difference, "within_bf16_tolerance": case.ok}


def _data(args, device: torch.device):
    from sgdnoise.data import DataNotFoundError, load_dataset, synthetic_cifar10

    if args.smoke:
        return synthetic_cifar10(256, 64, seed=0)
    try:
        return load_dataset("cifar10", download=False)
    except (DataNotFoundError, FileNotFoundError, ValueError):
        return synthetic_cifar10(50_000, 2_000, seed=0)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (no measurement)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measure")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        base = TrainConfig(model="cnn", width=4, norm="batch", device="cpu", amp=False,
                           channels_last=False, drop_last=True, lr=0.05, eval_batch_size=64)
        sizes, steps, warmup = args.batch_sizes or [16, 64], args.steps or 3, 1
    else:
        base = TrainConfig(model="resnet34", width=64, norm="batch", device=str(device),
                           amp=True, channels_last=True, drop_last=True, lr=0.1,
                           micro_batch_size=4096, eval_batch_size=2500)
        sizes, steps, warmup = args.batch_sizes or [128, 8192], args.steps or 20, 5
    data = _data(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, model {base.model} width {base.width}")
    out: dict[str, float] = {}
    for b in sizes:
        cfg = dataclasses.replace(base, batch_size=b)
        old = baseline_step_seconds(cfg, data, steps=steps, warmup=warmup)
        new = probe_throughput(cfg, data, steps=steps, warmup=warmup)["step_s"]
        ghost = probe_throughput(dataclasses.replace(cfg, ghost_batch_size=min(128, b)), data,
                                 steps=steps, warmup=warmup)["step_s"]
        row = {"baseline_img_s": b / old, "engine_img_s": b / new,
               "engine_ghost128_img_s": b / ghost, "ratio": old / new,
               "ratio_ghost128": old / ghost}
        out.update({f"B{b}_{k}": v for k, v in row.items()})
        print(f"B={b:>6}: today's loop {row['baseline_img_s']:10.0f} img/s | engine "
              f"{row['engine_img_s']:10.0f} img/s ({row['ratio']:.2f}x) | engine + ghost BN 128 "
              f"{row['engine_ghost128_img_s']:10.0f} img/s ({row['ratio_ghost128']:.2f}x)")
    print(f"goals: >= {GOAL_RATIO_SMALL_B}x at B = 128; >= {GOAL_IMG_S_LARGE_B} img/s at "
          "large B")
    chk = fast_vs_eager_check(dataclasses.replace(base, batch_size=sizes[0]), data,
                              steps=3 if args.smoke else 20)
    print(f"fast path vs eager, {3 if args.smoke else 20} steps: step-loss difference "
          f"{chk['loss_difference']:.2e} of the first loss, parameter difference "
          f"{chk['relative_difference']:.2e} of the distance travelled (within the "
          f"preflight's tolerances {LOSS_TOLERANCE:g} / {PARAM_TOLERANCE:g}: "
          f"{chk['within_bf16_tolerance']})")
    out.update(chk)
    return out


if __name__ == "__main__":
    main()
