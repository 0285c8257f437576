"""Benchmark: cost of one NoisySGD step of each noise kind relative to a plain large-batch
SGD step (same model, same batch, measured in this one run).

A step is what the training engine does: forward and backward on the whole batch, then
``observe_batch`` and ``step()``. The noise kinds add work on M examples of the batch:
isotropic / diag_fisher per-example gradients, subsampled / true_fisher one weighted backward,
hessian k Lanczos steps of Hessian-vector products (or, with ``basis_refresh=r``, a Krylov
factor computed every r steps and reused), ggn one batched backward (an exact factor of G);
isotropic / diag_fisher estimate the per-coordinate gradient variance from r sub-sampled
probes (one batched backward pass; ``--moment-probes 0`` times the exact per-example-gradient
version instead). Goals (from the study): subsampled <= 1.5x, Hessian / GGN <= 3x.

The hessian cost is set by k, the number of Lanczos steps per draw (k Hessian-vector
products on M examples plus the reorthogonalisation); ggn draws its exact factor, no
Lanczos. The trade-off table measures, for each k in ``--steps-grid`` (default 2..10), the
cost ratio of a hessian step on the benchmark model, and the accuracy of k-step draws
ξ_k = f_k(A) z (f = √·₊) on a small MLP where A₊^{1/2} is exact by a dense eigh: the mean
per-draw error ‖ξ_k − A₊^{1/2}z‖ / ‖A₊^{1/2}z‖ and the covariance error
‖Ĉ_k − Ĉ_*‖_F / ‖Ĉ_*‖_F of the same S draws (Ĉ = (1/S) Σ ξξᵀ: the Lanczos bias of the
injected covariance, separated from Monte Carlo noise), averaged over ``--accuracy-seeds``
small problems. The floor line splits a hessian step into what no Lanczos implementation
can avoid: the plain step, the Gaussian start z ∈ R^P, the Hessian's graph on the M
examples and k products, i.e. ratio >= 1 + (t_z + t_graph + k t_HVP) / t_step; the rest
of the measured ratio is the Lanczos bookkeeping (the reorthogonalisation reads the whole
basis twice per step: memory traffic, not arithmetic) and the optimizer adding the noise.

Run ``python benchmarks/bench_noise.py [--model mlp|cnn] [--batch 512] [--device cuda]``;
``main()`` returns the rows as a list of dicts (used by ``benchmarks/run_all.py``). The
ratio lines are printed as ``RATIO <kind>: <value> (goal ...)``. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.chapters.ch09_anisotropic_noise import (
    cost_bound_call,
    cost_bound_sentence,
    cost_goals,
    hessian_cost_parts,
    measure_step_costs,
    median_times,
)
from sgdnoise.curvature import HessianOperator
from sgdnoise.models import build_model
from sgdnoise.noise import (
    DEFAULT_LANCZOS_STEPS,
    KINDS,
    NoisySGD,
    hessian_noise_factor,
    sample_noise,
)
from sgdnoise.spectral import lanczos_matrix_function, sqrt_psd

# The step-cost goals of issue 11: sub-sampled noise <= 1.5x, curvature square roots <= 3x.
COST_GOALS = cost_goals(subsampled=1.5, curvature=3.0)


def make_batch(n: int, seed: int, device: str):
    """A learnable CIFAR-shaped batch: class-dependent mean images plus noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = means[y] + torch.randn(n, 3, 32, 32, generator=gen)
    return x.to(device), y.to(device)


def _gram_fro_diff(X: torch.Tensor, Y: torch.Tensor) -> float:
    """‖XᵀX − YᵀY‖_F for X, Y: (S, P), through S × S Gram matrices."""
    a, b, c = X @ X.T, X @ Y.T, Y @ Y.T
    return float(((a * a).sum() - 2 * (b * b).sum() + (c * c).sum()).clamp_min(0).sqrt())


def _small_problem(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 24), nn.Tanh(), nn.Linear(24, 24),
                          nn.Tanh(), nn.Linear(24, 10)).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, 4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=gen)
    return model, x, y


def lanczos_accuracy(steps: list[int], draws: int, seed: int, seeds: int = 1) -> list[dict]:
    """Per-draw and covariance error of k-step Lanczos draws of √H₊ z against a dense
    float64 reference, for the Hessian H of a small MLP on 32 examples (P ≈ 2000), each
    the mean over ``seeds`` problems (seeds ``seed, seed+1, ...``: the error is not
    monotone in k, odd k often beating k + 1, and by how much depends on the problem)."""
    per: dict[int, list[tuple[float, float]]] = {k: [] for k in steps}
    P = 0
    for problem in range(seed, seed + seeds):
        model, x, y = _small_problem(problem)
        gen = torch.Generator().manual_seed(problem + 1)
        op = HessianOperator(model, F.cross_entropy, x, y, keep_graph=True)
        lam, U = torch.linalg.eigh(op.to_dense())
        P = lam.shape[0]
        Z = torch.randn(P, draws, generator=gen, dtype=torch.float64)
        exact = (U * sqrt_psd(lam)) @ (U.T @ Z)  # (P, S)
        for k in steps:
            got = torch.cat([lanczos_matrix_function(op.matmat, Z[:, j : j + 1], k)
                             for j in range(draws)], dim=1)
            per_draw = ((got - exact).norm(dim=0) / exact.norm(dim=0)).mean()
            cov = _gram_fro_diff(got.T, exact.T) / float(((exact.T @ exact) ** 2).sum().sqrt())
            per[k].append((float(per_draw), cov))
    return [dict(kind="hessian", k=k, P=P, draw_error=sum(e[0] for e in per[k]) / len(per[k]),
                 cov_error=sum(e[1] for e in per[k]) / len(per[k])) for k in steps]


def factor_accuracy(steps: list[int], seed: int, starts: int = 4) -> dict[int, float]:
    """‖R Rᵀ − H₊‖_F / ‖H₊‖_F of the reusable Krylov factor (exact, no Monte Carlo), mean
    over ``starts`` random starts, on the small MLP (R Rᵀ has rank <= k: it keeps the top
    of H₊'s spectrum only, so this error stays near 1 for k ≪ P)."""
    model, x, y = _small_problem(seed)
    lam, U = torch.linalg.eigh(HessianOperator(model, F.cross_entropy, x, y).to_dense())
    Hp = (U * lam.clamp_min(0)) @ U.T
    out = {}
    for k in steps:
        errs = []
        for s in range(starts):
            R = hessian_noise_factor(model, F.cross_entropy, x, y, lanczos_steps=k,
                                     generator=torch.Generator().manual_seed(s))
            errs.append(float((R @ R.T - Hp).norm() / Hp.norm()))
        out[k] = sum(errs) / len(errs)
    return out


def floor_seconds(model, x, y, samples: dict[str, int], args) -> dict[str, float]:
    """Median seconds, all timed in one shuffled interleaved loop (so that load on the
    machine moves them together): a plain step (``"none"``), each kind's draw alone
    (``"<kind> draw"``: ``sample_noise(kind, ...)`` on the batch with the settings of its
    step, no forward or backward of the batch, no optimizer) and each kind's whole
    ``NoisySGD`` step (``"<kind> step"``)."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    opts = {"none": NoisySGD(model.parameters(), 1e-12)}
    opts.update({k: NoisySGD(model.parameters(), 1e-12, kind=k, model=model,
                             loss_fn=F.cross_entropy, num_samples=m,
                             lanczos_steps=args.lanczos_steps,
                             moment_probes=args.moment_probes or None, seed=0,
                             injection_scale=1e-3) for k, m in samples.items()})

    def step(kind: str) -> None:
        opt = opts[kind]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.observe_batch(x, y)
        opt.step()

    def draw(kind: str) -> None:
        sample_noise(kind, model, F.cross_entropy, x, y, num_samples=samples[kind],
                     generator=gen, lanczos_steps=args.lanczos_steps,
                     moment_probes=args.moment_probes or None)

    arms = {"none": functools.partial(step, "none")}
    for k in samples:
        arms[f"{k} draw"] = functools.partial(draw, k)
        arms[f"{k} step"] = functools.partial(step, k)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    return median_times(arms, args.repeats, 2, sync, shuffle=np.random.default_rng(1))


def print_floors(model, x, y, table, args) -> list[dict]:
    """Each kind's floor, the plain step plus the draw itself: ``1 + t_draw / t_plain``,
    and its step's ratio ``t_step / t_plain`` over that floor (what the optimizer adds
    beyond the draw; goal <= 1.15), all three times from one loop of
    :func:`floor_seconds`. (The RATIO lines come from another loop; a ratio over a floor
    timed in a different loop mixes the machine's load at two moments.)"""
    samples = {row.kind: int(row.num_samples) for row in table.itertuples()
               if row.kind != "none"}
    sec = floor_seconds(model, x, y, samples, args)
    rows = []
    for kind in samples:
        floor = 1 + sec[f"{kind} draw"] / sec["none"]
        ratio = sec[f"{kind} step"] / sec["none"]
        over = ratio / floor
        rows.append(dict(kind=kind, ratio=ratio, floor=floor, over_floor=over))
        print(f"FLOOR {kind}: {floor:.2f}x (plain step + draw); its step {ratio:.2f}x in the "
              f"same loop = {over:.2f} of the floor "
              f"(goal <= 1.15: {'met' if over <= 1.15 else 'MISSED'})")
    return rows


def refresh_costs(model, x, y, steps: list[int], refreshes: list[int], samples: int,
                  repeats: int) -> dict[tuple[int, int], float]:
    """Mean seconds per step of NoisySGD(kind="hessian", basis_refresh=r, lanczos_steps=k)
    over whole refresh cycles, divided by that of plain SGD timed in the same loop."""
    import time

    arms = {(0, 0): NoisySGD(model.parameters(), 1e-12)}
    for k in steps:
        for r in refreshes:
            arms[(k, r)] = NoisySGD(model.parameters(), 1e-12, kind="hessian",
                                    injection_scale=1e-3, model=model,
                                    loss_fn=F.cross_entropy, num_samples=samples,
                                    lanczos_steps=k, basis_refresh=r)
    times: dict[tuple[int, int], list[float]] = {a: [] for a in arms}
    cycle = max(refreshes)
    for rep in range(repeats + 1):
        for arm, opt in arms.items():
            start = time.perf_counter()
            for _ in range(cycle):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.observe_batch(x, y)
                opt.step()
            if rep:  # the first round warms up
                times[arm].append((time.perf_counter() - start) / cycle)
    base = sorted(times[(0, 0)])[len(times[(0, 0)]) // 2]
    return {a: sorted(t)[len(t) // 2] / base for a, t in times.items() if a != (0, 0)}


def print_bound(model, x, y, args) -> dict:
    """The BOUND line: what a hessian step of k Lanczos steps cannot cost less than here
    (:func:`hessian_cost_parts`: the floor, and the floor plus a bare recurrence's
    bookkeeping) and whether the <= 3x goal is within reach (:func:`cost_bound_call`)."""
    k = args.lanczos_steps
    parts = hessian_cost_parts(model, x, y, curvature_samples=args.curvature_samples,
                               lanczos_steps=k, repeats=max(args.repeats, 9))
    goal = COST_GOALS["hessian"]
    call = cost_bound_call(parts, goal)
    print(f"BOUND hessian: >= {parts.floor:.2f}x for the plain step, z, the graph and {k} "
          f"products; >= {parts.bound:.2f}x with a bare Lanczos recurrence "
          f"(goal <= {goal:g}x: {call})")
    return dict(bound_row=True, kind="hessian", k=k, floor=parts.floor, bound=parts.bound,
                call=call, sentence=cost_bound_sentence(parts, goal))


def steps_tradeoff(model, x, y, args) -> list[dict]:
    """Cost ratio of hessian steps against k, next to the accuracy of k-step draws and the
    floor and bound of :func:`hessian_cost_parts` at each k."""
    acc = {(r["kind"], r["k"]): r for r in lanczos_accuracy(
        args.steps_grid, args.accuracy_draws, args.seed, args.accuracy_seeds)}
    parts = {k: hessian_cost_parts(model, x, y, curvature_samples=args.curvature_samples,
                                   lanczos_steps=k, repeats=max(args.repeats, 9))
             for k in args.steps_grid}
    first = parts[args.steps_grid[0]]
    print(f"\nfloor of a hessian step (M={args.curvature_samples}): plain step "
          f"{first.step * 1e3:.2f} ms, z ~ N(0, I_P) {first.z * 1e3:.2f} ms, Hessian "
          f"graph {first.graph * 1e3:.2f} ms, one Hessian-vector product "
          f"{first.product * 1e3:.2f} ms: ratio >= 1 + (z + graph + k HVP) / step; bound: "
          "the floor plus a bare three-term Lanczos recurrence's bookkeeping")
    rows = []
    print("Lanczos steps k: cost of a step (this model), its floor, and accuracy of the "
          f"injected noise (small MLP, P={next(iter(acc.values()))['P']}, "
          f"{args.accuracy_draws} draws, mean of {args.accuracy_seeds} problems)")
    print("  kind     k  cost ratio  floor  bound  per-draw error  covariance error")
    for k in args.steps_grid:
        table = measure_step_costs(model, x, y, ["hessian"], goals=COST_GOALS,
                                   curvature_samples=args.curvature_samples, lanczos_steps=k,
                                   repeats=args.repeats)
        for row in table.itertuples():
            if row.kind == "none":
                continue
            a = acc[(row.kind, k)]
            floor, bound = parts[k].floor, parts[k].bound
            rows.append(dict(kind=row.kind, k=k, ratio=row.ratio, floor=floor, bound=bound,
                             draw_error=a["draw_error"], cov_error=a["cov_error"]))
            print(f"  {row.kind:7s} {k:2d}  {row.ratio:9.2f}x  {floor:4.2f}x  {bound:4.2f}x  "
                  f"{a['draw_error']:14.3f}  {a['cov_error']:16.3f}")
    if args.refresh and args.refresh_steps:
        fac = factor_accuracy(args.refresh_steps, args.seed)
        cost = refresh_costs(model, x, y, args.refresh_steps, args.refresh,
                             args.curvature_samples, max(2, args.repeats // 3))
        print("\nHessian noise from a Krylov factor reused for r steps (basis_refresh=r): "
              "cost ratio per step (mean over a cycle) and covariance error ‖RRᵀ − H₊‖/‖H₊‖ "
              "(exact, small MLP; r = 1: per-draw Lanczos, as above)")
        for (k, r), ratio in sorted(cost.items()):
            # r = 1 draws f(H)z afresh every step (the table above), r > 1 reuses R
            err = acc[("hessian", k)]["cov_error"] if r == 1 and ("hessian", k) in acc \
                else fac[k] if r > 1 else float("nan")
            rows.append(dict(kind="hessian", k=k, basis_refresh=r, ratio=ratio,
                             cov_error=err))
            print(f"  hessian  k={k:2d} r={r:2d}  {ratio:6.2f}x  covariance error {err:.3f}")
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet18", "resnet34"])
    parser.add_argument("--width", type=int, default=None, help="model width (default: model's)")
    parser.add_argument("--batch", type=int, default=500, help="large batch B")
    parser.add_argument("--num-samples", type=int, default=64, help="M for the gradient kinds")
    parser.add_argument("--curvature-samples", type=int, default=32, help="M for hessian/ggn")
    parser.add_argument("--lanczos-steps", type=int, default=DEFAULT_LANCZOS_STEPS,
                        help="k of the hessian kind in the ratio lines (default: the "
                             "library's and chapter 9's choice)")
    parser.add_argument("--steps-grid", type=int, nargs="*", default=list(range(2, 11)),
                        help="k values of the trade-off table (none: skip it)")
    parser.add_argument("--accuracy-draws", type=int, default=32)
    parser.add_argument("--accuracy-seeds", type=int, default=3,
                        help="small problems the accuracy columns average over")
    parser.add_argument("--refresh", type=int, nargs="*", default=[1, 4, 10],
                        help="basis_refresh values r for the Krylov-reuse table")
    parser.add_argument("--refresh-steps", type=int, nargs="*",
                        default=[DEFAULT_LANCZOS_STEPS],
                        help="k values of the Krylov-reuse table (none: skip it)")
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
        model, x, y, KINDS, goals=COST_GOALS, num_samples=args.num_samples,
        curvature_samples=args.curvature_samples, lanczos_steps=args.lanczos_steps,
        repeats=args.repeats, moment_probes=args.moment_probes or None,
    )
    for row in table.itertuples():
        goal = COST_GOALS.get(row.kind)
        verdict = "" if goal is None else (" met" if row.ratio <= goal else " MISSED")
        goal_txt = f"goal <= {goal:g}x{verdict}" if goal is not None else "no goal"
        steps = f"k={args.lanczos_steps} Lanczos steps; " if row.kind == "hessian" else ""
        print(f"RATIO {row.kind}: {row.ratio:.2f}x ({row.seconds * 1e3:.1f} ms/step; "
              f"{steps}{goal_txt})")
    rows = table.to_dict("records")
    rows += [dict(floor_row=True, **r) for r in print_floors(model, x, y, table, args)]
    rows.append(print_bound(model, x, y, args))
    if args.steps_grid:
        rows += [dict(tradeoff=True, **r) for r in steps_tradeoff(model, x, y, args)]
    return rows


if __name__ == "__main__":
    main()
