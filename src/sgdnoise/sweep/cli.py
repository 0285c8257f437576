"""The command line, ``sgdnoise-sweep PLAN.yaml --out DIR [--budget S] [--shard i/n]
[--dry-run] [--engine fast|eager]`` (also ``python -m sgdnoise.sweep``), and the dry run's
listing of a plan."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from sgdnoise import distributed
from sgdnoise.noise import NoiseSpec
from sgdnoise.train import lr_multiplier, steps_per_epoch, total_steps

from .budget import H100_SLOWDOWN, block_estimates, device_seconds
from .plan import CIFAR10_TEST_SIZE, Plan, PlanError, Run, load_plan
from .records import record_path
from .runner import parse_shard, run_plan, shard_runs
from .tuning import resolve_tuned_run

__all__ = ["main"]


LINE_WIDTH = 80  # the dry run's listing fits a terminal (and a book page's output box)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
               left: Sequence[int] = ()) -> list[str]:
    """Plain-text table lines: each column as wide as its widest cell, one space apart,
    right-aligned except the column indices in ``left``."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return " ".join(f"{c:<{w}}" if i in left else f"{c:>{w}}"
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _eta_text(run: Run, out: Path) -> tuple[Run, str]:
    """The run with its η resolved where possible, and the η column of the dry run."""
    if run.lr_factor is not None:
        return run, f"x{run.lr_factor:g} tuning"
    if run.tune is None:
        return run, "-"
    resolved = resolve_tuned_run(run, out)
    if resolved is None:
        return run, "to be tuned"
    return resolved, f"x{resolved.lr_choice['factor']:g} chosen"


def _noise_text(n: NoiseSpec | None) -> str:
    if n is None:
        return ""
    return (f"noise {n.kind} s={n.injection_scale:.4g} M={n.num_samples}"
            + (f" k={n.lanczos_steps}" if n.kind == "hessian" else "")
            + (f" r={n.moment_probes}" if n.kind in ("isotropic", "diag_fisher") else ""))


def _print_blocks(plan: Plan, out: Path) -> None:
    print(textwrap.fill(
        "Device time per priority block, runs without a record, estimated from the chapter 8 "
        "pilot's measured throughput on one NVIDIA H200 (sweep.PILOT_H200_IMG_PER_S; an H100 "
        f"takes ~{H100_SLOWDOWN[0]:g}-{H100_SLOWDOWN[1]:g}x as long):", LINE_WIDTH))
    rows = []
    for row in block_estimates(plan, out):
        m = row["seconds"] / 60
        rows.append([str(row["block"]), str(row["runs"]), str(row["left"]), f"{m:.1f}",
                     f"{row['cumulative'] / 60:.1f}",
                     f"{m * H100_SLOWDOWN[0]:.0f}-{m * H100_SLOWDOWN[1]:.0f}", row["label"]])
    lines = text_table(["block", "runs", "left", "H200 min", "cumul.", "H100 min", "what"],
                       [r[:-1] + [""] for r in rows])
    indent = len(lines[0]) - len("what")
    print(lines[0])
    for line, row in zip(lines[1:], rows, strict=True):
        label = textwrap.wrap(row[-1], max(20, LINE_WIDTH - indent)) or [""]
        print(line.rstrip().ljust(indent) + label[0])
        for more in label[1:]:
            print(" " * indent + more)


def _run_row(run: Run, plan: Plan, out: Path) -> tuple[list[str], int]:
    """One row of the dry run and the training images of the run when it has no record."""
    run, eta = _eta_text(run, out)
    n_train = plan.n_train - (run.tune.n_val if run.lr_factor is not None else 0)
    T = total_steps(run.config, n_train)
    spe = steps_per_epoch(n_train, run.batch_size, drop_last=run.config.drop_last)
    flat = dataclasses.replace(run.config, warmup_epochs=0.0, warmup_steps=None,
                               schedule="constant")
    peak = ("" if eta == "to be tuned"
            else f"{run.config.lr * lr_multiplier(flat, 0, T, spe):.4g}")
    done = record_path(out, run.run_id).exists()
    est = device_seconds(run, plan.n_train, plan.data["n_test"] or CIFAR10_TEST_SIZE)
    row = [str(run.block), run.run_id, str(T), f"{T / spe:.1f}", peak, eta, f"{est:.0f}",
           "yes" if done else "-"]
    return row, 0 if done else T * run.batch_size


def _dry_run(plan: Plan, runs: Sequence[Run], out: Path) -> None:
    """Print the runs of this shard in priority order (one line each, its noise on a second
    line), the training images left and the device time per block, in 80 columns."""
    n_tune = sum(r.lr_factor is not None for r in plan.runs)
    print(f"plan {plan.name!r}: {len(plan.runs)} runs ({n_tune} tuning η), {len(runs)} in "
          "this shard")
    rows, total = [], 0
    for r in runs:
        row, images = _run_row(r, plan, out)
        rows.append(row)
        total += images
    lines = text_table(["blk", "run", "steps", "epochs", "peak η", "η factor", "H200 s",
                        "done"], rows, left=(1,))
    print(lines[0])
    for line, r in zip(lines[1:], runs, strict=True):
        print(line)
        if r.noise is not None:
            print("    " + _noise_text(r.noise))
    print(f"training images of the runs without a record: {total:,}\n")
    _print_blocks(plan, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgdnoise-sweep",
        description="Run the unfinished runs of a plan (one JSON record per run).")
    parser.add_argument("plan", help="YAML plan")
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
    parser.add_argument("--engine", choices=("fast", "eager"), default="fast",
                        help="fast (bf16 autocast, channels-last, fused SGD on CUDA) or eager "
                             "(float32): what the preflight chose (python -m "
                             "sgdnoise.preflight PLAN)")
    parser.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    return parser


def _checked_arguments(args: argparse.Namespace) -> tuple[tuple[int, int], Plan]:
    """The shard and the plan; :class:`PlanError` for a bad plan or argument."""
    shard = parse_shard(args.shard)
    if args.keep_checkpoints and args.no_checkpoints:
        raise PlanError("--keep-checkpoints and --no-checkpoints contradict each other: "
                        "give one of them")
    if args.budget is not None and not (args.budget > 0 and math.isfinite(args.budget)):
        raise PlanError(f"--budget must be a number of seconds > 0, got {args.budget!r}")
    return shard, load_plan(args.plan, check_device=not args.dry_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sgdnoise-sweep``; returns the exit code (2 for a bad plan or
    argument, with a one-line message and no traceback)."""
    args = _parser().parse_args(argv)
    try:
        shard, plan = _checked_arguments(args)
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
                        checkpoints=not args.no_checkpoints, engine=args.engine)
    except (ValueError, FileNotFoundError) as err:
        print(f"sgdnoise-sweep: error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    n_runs = len(shard_runs(plan.runs, *shard))
    print(f"[sweep] {len(recs)} of {n_runs} runs of this shard have records in {out.name}/",
          file=sys.stderr)
    return 0
