"""Benchmark: vectorised per-example gradients vs a loop of single-example backward passes,
and the matrix-free covariance operator vs a dense (P, P) matrix.

Both sides of each ratio are measured in this one run, on the same machine and device.
Run as ``python benchmarks/bench_grads.py [--n 256] [--device cpu|cuda]``; ``main()`` returns
the numbers as a dict (used by ``benchmarks/run_all.py``). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sgdnoise.curvature import CovarianceOperator
from sgdnoise.grads import num_params, per_example_grads

GOAL_SPEEDUP = 3.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def tf32_note(device: torch.device) -> str:
    """On CUDA, cuDNN convolutions may use TF32: differences near 1e-2 are then rounding."""
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return " (cuDNN TF32 on: the two paths round differently)"
    return ""


def loop_per_example_grads(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor):
    """Baseline: N ordinary forward/backward passes on batches of one, rows written to (N, P)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty((x.shape[0], sum(p.numel() for p in params)), device=x.device)
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]), params)
        out[i] = torch.cat([g.reshape(-1) for g in grads])
    return out


def bench_per_example(n: int, device: torch.device, chunk_size: int | None, repeats: int):
    from sgdnoise.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", norm="group").to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((n, 3, 32, 32), generator=gen).to(device)
    y = torch.randint(10, (n,), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()
    # warm-up (kernels, allocator) on a few examples, and a correctness check
    G_small = per_example_grads(model, loss_fn, x[:8], y[:8], chunk_size=chunk_size)
    ref_small = loop_per_example_grads(model, loss_fn, x[:8], y[:8])
    max_err = float((G_small - ref_small).abs().max() / ref_small.abs().max())
    t_vmap = _best_time(
        lambda: per_example_grads(model, loss_fn, x, y, chunk_size=chunk_size), device, repeats
    )
    t_loop = _best_time(lambda: loop_per_example_grads(model, loss_fn, x, y), device, repeats)
    speedup = t_loop / t_vmap
    print(
        f"per_example_grads (vmap, chunk_size={chunk_size}): {t_vmap:.3f} s; "
        f"loop of {n} backward passes: {t_loop:.3f} s; P = {num_params(model):,}; "
        f"device = {device}; max rel. difference {max_err:.1e}{tf32_note(device)}"
    )
    print(
        f"per_example_grads speedup vs loop (ResNet-20, N={n}): {speedup:.1f}x "
        f"(goal >= {GOAL_SPEEDUP:.0f}x)"
    )
    return {
        "n": n,
        "params": num_params(model),
        "device": str(device),
        "chunk_size": chunk_size,
        "vmap_s": t_vmap,
        "loop_s": t_loop,
        "speedup": speedup,
        "goal": GOAL_SPEEDUP,
        "max_rel_diff": max_err,
    }


def bench_operator(n: int, p: int, device: torch.device, repeats: int):
    gen = torch.Generator().manual_seed(1)
    G = torch.randn((n, p), generator=gen).to(device)
    v = torch.randn(p, generator=gen).to(device)
    op = CovarianceOperator(G, batch_size=32)
    _sync(device)
    t0 = time.perf_counter()
    C = op.to_dense()
    _sync(device)
    t_build = time.perf_counter() - t0
    op.matvec(v), C @ v  # warm-up
    t_op = _best_time(lambda: op.matvec(v), device, repeats)
    t_dense = _best_time(lambda: C @ v, device, repeats)
    rel = float((op.matvec(v) - C @ v).norm() / (C @ v).norm())
    print(
        f"CovarianceOperator.matvec (N={n}, P={p:,}): {t_op * 1e3:.2f} ms; dense (P,P) matvec: "
        f"{t_dense * 1e3:.2f} ms (ratio dense/operator {t_dense / t_op:.1f}x); forming the "
        f"dense matrix: {t_build:.2f} s and {C.numel() * C.element_size() / 2**20:.0f} MiB; "
        f"rel. difference {rel:.1e}"
    )
    return {
        "n": n,
        "p": p,
        "operator_matvec_s": t_op,
        "dense_matvec_s": t_dense,
        "dense_build_s": t_build,
        "ratio_dense_over_operator": t_dense / t_op,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="examples (default 256)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-size", type=int, default=None, help="vmap chunk (None: all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (best is kept)")
    parser.add_argument("--op-n", type=int, default=256)
    parser.add_argument("--op-p", type=int, default=8192)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    chunk = args.chunk_size
    if chunk is None and device.type == "cpu":
        chunk = 64  # bounds activation memory on small machines; does not change results
    return {
        "per_example_grads": bench_per_example(args.n, device, chunk, args.repeats),
        "covariance_operator": bench_operator(args.op_n, args.op_p, device, max(3, args.repeats)),
    }


if __name__ == "__main__":
    main()
