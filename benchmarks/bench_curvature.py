"""Benchmarks for sgdnoise.curvature and sgdnoise.spectral.

1. Cost of one Hessian-vector product relative to one gradient on the same batch
   (double backward; goal: ratio <= 2.5).
2. Hessian-vector products needed for the top-5 Hessian eigenvalues of a small CNN to
   relative accuracy 1e-3: Lanczos (full reorthogonalisation) against power iteration with
   deflation as PyHessian does it (goal: ratio <= 1/3).

Run ``python benchmarks/bench_curvature.py`` (``--help`` for options). The ratio lines are
printed as ``RATIO <name>: <value> (goal ...)``; ``main()`` also returns them in a dict.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from sgdnoise.curvature import HessianOperator, hvp
from sgdnoise.spectral import lanczos, power_iteration_deflation


def small_cnn(width: int, image_size: int) -> nn.Module:
    """The project's small CNN (no normalisation) when available, else an equivalent."""
    try:
        from sgdnoise.models import build_model

        return build_model("cnn", in_shape=(3, image_size, image_size), width=width, norm="none")
    except ImportError:  # pragma: no cover - models module missing
        layers: list[nn.Module] = []
        prev = 3
        for i in range(3):
            ch = width * 2**i
            layers += [nn.Conv2d(prev, ch, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
            prev = ch
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, 10)]
        return nn.Sequential(*layers)


def make_batch(n: int, image_size: int, seed: int, dtype: torch.dtype):
    """A learnable synthetic batch: class-dependent mean images plus noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 3, image_size, image_size, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = means[y] + torch.randn(n, 3, image_size, image_size, generator=gen)
    return x.to(dtype), y


def _median_times(fn, reps: int) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of ``fn()``; CPU time is robust to other load."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(wall), statistics.median(cpu)


def _hvp_over_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> dict:
    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    v = torch.randn(sum(p.numel() for p in params))

    def gradient():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    def product():
        return hvp(model, loss_fn, x, y, v)

    g_wall, g_cpu = _median_times(gradient, reps)
    h_wall, h_cpu = _median_times(product, reps)
    return {
        "P": len(v), "grad_wall_s": g_wall, "hvp_wall_s": h_wall, "grad_cpu_s": g_cpu,
        "hvp_cpu_s": h_cpu, "ratio_wall": h_wall / g_wall, "ratio_cpu": h_cpu / g_cpu,
    }


def bench_hvp_vs_gradient(args) -> dict:
    torch.manual_seed(args.seed)
    cnn = small_cnn(args.timing_width, args.timing_image_size)
    x, y = make_batch(args.batch, args.timing_image_size, args.seed, torch.float32)
    res = _hvp_over_grad(cnn, x, y, args.reps)
    torch.manual_seed(args.seed)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 256), nn.ReLU(),
                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    res_mlp = _hvp_over_grad(mlp, x, y, args.reps)
    print(f"one HVP vs one gradient, batch {args.batch}, {args.timing_image_size}px, float32, "
          f"{torch.get_num_threads()} thread(s); median of {args.reps}")
    for name, r in (("small CNN", res), ("MLP 256-256", res_mlp)):
        print(f"  {name:11s} P={r['P']:7d}: gradient {1e3 * r['grad_cpu_s']:7.1f} ms CPU "
              f"({1e3 * r['grad_wall_s']:7.1f} wall), HVP {1e3 * r['hvp_cpu_s']:7.1f} ms CPU "
              f"({1e3 * r['hvp_wall_s']:7.1f} wall); ratio CPU {r['ratio_cpu']:.2f}, "
              f"wall {r['ratio_wall']:.2f}")
    print(f"RATIO hvp_time/grad_time (small CNN, CPU time): {res['ratio_cpu']:.2f} (goal <= 2.5)")
    print(f"RATIO hvp_time/grad_time (MLP, CPU time): {res_mlp['ratio_cpu']:.2f}")
    return {"cnn": res, "mlp": res_mlp}


def _first_accurate(history, ref: torch.Tensor, rel: float) -> int | None:
    for nmv, vals in history:
        if vals.shape[0] == ref.shape[0] and bool(((vals - ref).abs() <= rel * ref.abs()).all()):
            return nmv
    return None


def bench_lanczos_vs_power(args) -> dict:
    torch.manual_seed(args.seed)
    model = small_cnn(args.width, args.image_size).double()
    x, y = make_batch(args.n_eig, args.image_size, args.seed + 1, torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    if args.train_steps:  # a little full-batch GD so the spectrum has its outliers
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(args.train_steps):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    op = HessianOperator(model, loss_fn, x, y)
    P = op.shape[0]
    k, rel = 5, 1e-3
    t0 = time.perf_counter()
    ref = lanczos(op.matvec, P, k, tol=1e-10, num_iters=400, seed=123)
    t_ref = time.perf_counter() - t0
    ref_vals = ref.eigenvalues
    print(f"\nsmall CNN Hessian: P={P}, N={args.n_eig}, image {args.image_size}px, float64, "
          f"{args.train_steps} GD steps")
    print(f"  reference top-{k} (Lanczos, tol 1e-10, {ref.num_matvecs} HVPs, "
          f"converged={ref.converged}, {t_ref:.1f} s): "
          + ", ".join(f"{v:.6g}" for v in ref_vals.tolist()))

    # Lanczos with its own stopping rule (residual <= 1e-3 |theta_max|) and its history
    lz = lanczos(op.matvec, P, k, tol=rel, seed=args.seed, record_history=True)
    lz_err = float(((lz.eigenvalues - ref_vals).abs() / ref_vals.abs()).max())
    lz_first = _first_accurate(lz.ritz_history, ref_vals, rel)
    print(f"  Lanczos (tol {rel}): {lz.num_matvecs} HVPs, max rel. error {lz_err:.1e}; "
          f"all within {rel} first after {lz_first} HVPs")

    # PyHessian-style power iteration with deflation: its default stopping rule, then
    # tighter tolerances until every eigenvalue really is within 1e-3
    pw_rows = []
    pw_needed = None
    for tol in (1e-3, 1e-4, 1e-5, 1e-6):
        pw = power_iteration_deflation(op.matvec, P, k, tol=tol, max_iters=1000, seed=args.seed)
        vals = torch.sort(pw.eigenvalues, descending=True).values
        err = float(((vals - ref_vals).abs() / ref_vals.abs()).max())
        pw_rows.append({"tol": tol, "hvps": pw.num_matvecs, "max_rel_err": err})
        print(f"  power iteration (tol {tol:g}): {pw.num_matvecs} HVPs "
              f"({pw.iterations}), max rel. error {err:.1e}")
        if err <= rel:
            pw_needed = pw.num_matvecs
            break
    lz_count = lz.num_matvecs if lz_err <= rel else lz_first
    ratio = lz_count / pw_needed if (lz_count and pw_needed) else float("nan")
    pyhessian_default = pw_rows[0]["hvps"]
    print(f"RATIO lanczos_hvps/power_hvps (both to rel. accuracy {rel}): "
          f"{lz_count}/{pw_needed} = {ratio:.3f} (goal <= 0.333)")
    print(f"RATIO lanczos_hvps/power_hvps_pyhessian_default_tol: "
          f"{lz_count}/{pyhessian_default} = {lz_count / pyhessian_default:.3f}")
    return {
        "P": P,
        "reference": ref_vals.tolist(),
        "lanczos_hvps": lz.num_matvecs,
        "lanczos_first_accurate_hvps": lz_first,
        "lanczos_max_rel_err": lz_err,
        "power": pw_rows,
        "lanczos_over_power": ratio,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="batch for the HVP timing")
    parser.add_argument("--timing-width", type=int, default=16, help="CNN width for timing")
    parser.add_argument("--timing-image-size", type=int, default=32)
    parser.add_argument("--n-eig", type=int, default=128, help="examples for the eigenvalues")
    parser.add_argument("--width", type=int, default=8, help="CNN width for the eigenvalues")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"hvp": bench_hvp_vs_gradient(args), "eig": bench_lanczos_vs_power(args)}
    return out


if __name__ == "__main__":
    main()
