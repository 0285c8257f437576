"""Benchmark: cost of one NoisySGD step of each noise kind relative to a plain large-batch
SGD step (same model, same batch, measured in this one run).

A step is what the training engine does: forward and backward on the whole batch, then
``observe_batch`` and ``step()``. The noise kinds add work on M examples of the batch:
isotropic / diag_fisher per-example gradients, subsampled / true_fisher one weighted backward,
hessian / ggn k Lanczos steps of curvature-vector products; isotropic / diag_fisher estimate
the per-coordinate gradient variance from r sub-sampled probes (one batched backward pass;
``--moment-probes 0`` times the exact per-example-gradient version instead). Goals (from the
study): subsampled <= 1.5x, Hessian / GGN <= 3x.

Run ``python benchmarks/bench_noise.py [--model mlp|cnn] [--batch 512] [--device cuda]``;
``main()`` returns the rows as a list of dicts (used by ``benchmarks/run_all.py``). The
ratio lines are printed as ``RATIO <kind>: <value> (goal ...)``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse

import torch

from sgdnoise.experiments_noise import COST_GOALS, measure_step_costs
from sgdnoise.models import build_model
from sgdnoise.noise import KINDS


def make_batch(n: int, seed: int, device: str):
    """A learnable CIFAR-shaped batch: class-dependent mean images plus noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = means[y] + torch.randn(n, 3, 32, 32, generator=gen)
    return x.to(device), y.to(device)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet18", "resnet34"])
    parser.add_argument("--width", type=int, default=None, help="model width (default: model's)")
    parser.add_argument("--batch", type=int, default=500, help="large batch B")
    parser.add_argument("--num-samples", type=int, default=64, help="M for the gradient kinds")
    parser.add_argument("--curvature-samples", type=int, default=32, help="M for hessian/ggn")
    parser.add_argument("--lanczos-steps", type=int, default=8)
    parser.add_argument("--moment-probes", type=int, default=4,
                        help="probes r for isotropic/diag_fisher (0: exact per-example grads)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    width = args.width if args.width is not None else (128 if args.model == "mlp" else None)
    model = build_model(args.model, width=width, norm="group").to(args.device)
    x, y = make_batch(args.batch, args.seed, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model={args.model} (P={n_params:,}) batch={args.batch} device={args.device} "
          f"M={args.num_samples} (curvature M={args.curvature_samples}, "
          f"k={args.lanczos_steps} Lanczos steps, r={args.moment_probes} moment probes)")
    table = measure_step_costs(
        model, x, y, KINDS, num_samples=args.num_samples,
        curvature_samples=args.curvature_samples, lanczos_steps=args.lanczos_steps,
        repeats=args.repeats, moment_probes=args.moment_probes or None,
    )
    for row in table.itertuples():
        goal = COST_GOALS.get(row.kind)
        verdict = "" if goal is None else (" met" if row.ratio <= goal else " MISSED")
        goal_txt = f"goal <= {goal:g}x{verdict}" if goal is not None else "no goal"
        print(f"RATIO {row.kind}: {row.ratio:.2f}x ({row.seconds * 1e3:.1f} ms/step; "
              f"{goal_txt})")
    return table.to_dict("records")


if __name__ == "__main__":
    main()
