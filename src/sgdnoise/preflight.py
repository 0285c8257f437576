"""Preflight: the fast training path checked against the eager float32 path on the device,
before a plan spends its time there.

Command line (``gpu_run.sh`` runs it first)::

    python -m sgdnoise.preflight PLAN.yaml [--steps 20] [--time-limit 60] [--choice-file F]

For a few runs of the plan (:func:`preflight_cases`: the first run in priority order, then
the smallest batch of each other kind — BatchNorm over the micro-batch or over ghost
groups, micro-batched or not, injected noise — at most :data:`MAX_CASES`), each with the
plan's data and config cut to ``steps`` steps without evaluation, the fast path (bf16
autocast, channels-last, fused SGD and device RNG on CUDA; :func:`sgdnoise.train.engine_paths`)
and the eager path (float32, contiguous, SGD one tensor at a time) train from the same
initialisation on the same batches. A case passes when

* every step's loss agrees: ``max_t |ℓ_fast(t) − ℓ_eager(t)| / ℓ_eager(1) <=``
  :data:`LOSS_TOLERANCE` (2%; bf16 keeps 8 significant bits, ~0.4% per rounding), and
* the parameters agree: ``‖θ_fast − θ_eager‖ / ‖θ_eager − θ_0‖ <=`` :data:`PARAM_TOLERANCE`
  (25% of the distance travelled; momentum amplifies rounding differences step by step).

The choice (:class:`PreflightResult`): ``"fast"`` when every case checked passes; ``"eager"``
when a fast run raises or disagrees (the sweep then runs the whole plan on the eager path,
and every record says so in ``engine_path``); ``"fast"`` with a warning when the eager
path itself fails but the fast one ran; None when neither runs (exit code 3). The first case
always runs; a later one starts while less than ``time_limit_s`` seconds have passed (data
loading excluded), the others are reported as not checked. ``--inject error|mismatch``
forces a failure of the fast path (an exception at its first step, or η × 1.5 on the fast
path only), to test the fallback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "INJECTIONS",
    "LOSS_TOLERANCE",
    "MAX_CASES",
    "PARAM_TOLERANCE",
    "CaseResult",
    "PreflightResult",
    "choose_engine",
    "compare_paths",
    "main",
    "preflight_cases",
    "run_preflight",
]

LOSS_TOLERANCE = 0.02
PARAM_TOLERANCE = 0.25
MAX_CASES = 4
INJECTIONS = ("error", "mismatch")


@dataclass
class CaseResult:
    """One case: ``run_id`` and ``what`` it exercises; ``loss_difference`` and
    ``param_difference`` (the two ratios of the module docstring, NaN when not measured);
    ``fast_error`` / ``eager_error`` (the exception's text, None when the path ran);
    ``checked`` (False: not started, time limit); ``seconds``."""

    run_id: str
    what: str
    checked: bool = True
    loss_difference: float = math.nan
    param_difference: float = math.nan
    fast_error: str | None = None
    eager_error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Both paths ran and agree within the tolerances."""
        return (self.checked and self.fast_error is None and self.eager_error is None
                and self.loss_difference <= LOSS_TOLERANCE
                and self.param_difference <= PARAM_TOLERANCE)

    def describe(self) -> str:
        if not self.checked:
            return f"{self.run_id} ({self.what}): not checked (time limit)"
        head = f"{self.run_id} ({self.what}), {self.seconds:.1f} s: "
        if self.eager_error is not None:
            return head + f"eager path failed: {self.eager_error}"
        if self.fast_error is not None:
            return head + f"fast path failed: {self.fast_error}"
        return head + (
            f"max step-loss difference {self.loss_difference:.2e} of the first loss "
            f"(tolerance {LOSS_TOLERANCE:g}), parameter difference "
            f"{self.param_difference:.2e} of the distance travelled (tolerance "
            f"{PARAM_TOLERANCE:g}): {'ok' if self.ok else 'MISMATCH'}")


@dataclass
class PreflightResult:
    """``engine``: ``"fast"``, ``"eager"`` or None (neither path runs); ``reason``: one
    sentence; ``cases``: the :class:`CaseResult` list."""

    engine: str | None
    reason: str
    cases: list[CaseResult] = field(default_factory=list)


def _kind(run: Any) -> tuple:
    cfg = run.config
    micro = cfg.micro_batch_size is not None and cfg.micro_batch_size < cfg.batch_size
    return (cfg.norm, _ghost(cfg), micro,
            run.noise.kind if run.noise is not None else None)


def _ghost(cfg: Any) -> bool:
    """Whether BatchNorm splits the batch into ghost groups."""
    return cfg.ghost_batch_size is not None and cfg.ghost_batch_size < cfg.batch_size


def _what(run: Any) -> str:
    cfg = run.config
    norm = {"batch": "BatchNorm", "group": "GroupNorm", "none": "no normalisation"}[cfg.norm]
    if cfg.norm == "batch":
        norm += (f" over ghost groups of {cfg.ghost_batch_size}" if _ghost(cfg)
                 else " over the micro-batch")
    micro = cfg.micro_batch_size
    parts = [f"B={cfg.batch_size}", norm,
             f"micro-batches of {micro}" if micro is not None and micro < cfg.batch_size
             else "no micro-batches"]
    if run.noise is not None:
        parts.append(f"{run.noise.kind} noise")
    return ", ".join(parts)


def preflight_cases(runs: Sequence[Any], *, max_cases: int = MAX_CASES) -> list[Any]:
    """The runs to check: the first run of ``runs`` (priority order; tuning runs are left
    out, their configs are those of their arm), then for every other kind (normalisation,
    ghost groups or not, micro-batched or not, noise kind) its run with the smallest batch
    size, in order of first appearance; at most ``max_cases``."""
    main = [r for r in runs if r.lr_factor is None] or list(runs)
    if not main:
        return []
    first = main[0]
    others: dict[tuple, Any] = {}
    for r in main[1:]:
        k = _kind(r)
        if k == _kind(first):
            continue
        if k in others:
            others[k] = min(others[k], r, key=lambda run: run.batch_size)
        elif len(others) < max_cases - 1:
            others[k] = r
    return [first, *others.values()]


def _flat(model: torch.nn.Module) -> torch.Tensor:
    from sgdnoise.grads import flat_params

    return flat_params(model).detach().double().clone()


class _Losses:
    """A train hook keeping each step's loss (and raising at step 1 when told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.values: list[float] = []
        self.fail = fail

    def on_step(self, state: Any) -> None:
        if self.fail:
            raise RuntimeError("injected failure of the fast path (preflight --inject error)")
        self.values.append(float(state.loss))


def _one_path(cfg: Any, data: Any, engine: str, factory: Callable | None, *,
              fail: bool, cuda_paths_on_cpu: bool) -> tuple[torch.Tensor, list[float],
                                                            torch.Tensor]:
    """``(θ_0, step losses, θ_T)`` of one path."""
    from sgdnoise.train import train
    from sgdnoise.train.trainer import default_model

    n_cls = int(max(int(data.train_y.max()), int(data.test_y.max()))) + 1
    model = default_model(cfg, tuple(data.train_x.shape[1:]), max(n_cls, 2))
    theta0 = _flat(model)
    losses = _Losses(fail)
    res = train(cfg, {"train_x": data.train_x, "train_y": data.train_y}, model=model,
                optimizer_factory=factory, progress=False, hooks=[losses], engine=engine,
                cuda_paths_on_cpu=cuda_paths_on_cpu)
    if res.status != "finished":
        raise RuntimeError(f"run {res.status} at step {res.diverged_at_step}")
    return theta0, losses.values, _flat(res.model)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def compare_paths(run: Any, data: Any, *, steps: int = 20, inject: str | None = None,
                  cuda_paths_on_cpu: bool = False) -> CaseResult:
    """Train ``run``'s config for ``steps`` steps on the fast and on the eager path (same
    initialisation and batches, no evaluation or sharpness) and compare them (module
    docstring). ``inject``: None, ``"error"`` or ``"mismatch"`` (on the fast path)."""
    from sgdnoise.sweep.runner import optimizer_factory

    t0 = time.perf_counter()
    cfg = dataclasses.replace(run.config, max_steps=steps, eval_points=0, sharpness_n=0,
                              sharpness_every=None)
    fast_cfg = dataclasses.replace(cfg, lr=cfg.lr * 1.5) if inject == "mismatch" else cfg
    case = CaseResult(run.run_id, _what(run))
    kw = {"cuda_paths_on_cpu": cuda_paths_on_cpu}
    try:
        th0, fast_l, fast_t = _one_path(fast_cfg, data, "fast", optimizer_factory(run),
                                        fail=inject == "error", **kw)
    except Exception as err:  # noqa: BLE001 - any failure of the fast path means: eager
        case.fast_error = _error_text(err)
    try:
        th0, eager_l, eager_t = _one_path(cfg, data, "eager", optimizer_factory(run),
                                          fail=False, **kw)
    except Exception as err:  # noqa: BLE001 - reported; the caller decides
        case.eager_error = _error_text(err)
    if case.fast_error is None and case.eager_error is None:
        lf, le = torch.tensor(fast_l, dtype=torch.float64), torch.tensor(eager_l,
                                                                          dtype=torch.float64)
        case.loss_difference = float((lf - le).abs().max() / le[0].abs().clamp_min(1e-12))
        case.param_difference = float((fast_t - eager_t).norm()
                                      / (eager_t - th0).norm().clamp_min(1e-30))
        if not (math.isfinite(case.loss_difference) and math.isfinite(case.param_difference)):
            case.loss_difference = case.param_difference = math.inf
    case.seconds = time.perf_counter() - t0
    return case


def choose_engine(cases: Sequence[CaseResult]) -> tuple[str | None, str]:
    """The engine path and the reason, from the cases (module docstring)."""
    checked = [c for c in cases if c.checked]
    if not checked:
        return "eager", "no case could be checked in the time limit: the eager path is safe"
    fast_bad = [c for c in checked if c.fast_error is not None or (
        c.eager_error is None and not c.ok)]
    eager_bad = [c for c in checked if c.eager_error is not None]
    if eager_bad and any(c.fast_error is not None for c in checked):
        return None, f"neither path runs (e.g. {eager_bad[0].run_id}: {eager_bad[0].eager_error})"
    if eager_bad:
        return "fast", (f"the eager path failed ({eager_bad[0].run_id}: "
                        f"{eager_bad[0].eager_error}); the fast path ran but is UNVERIFIED")
    if fast_bad:
        c = fast_bad[0]
        why = f"failed: {c.fast_error}" if c.fast_error is not None else "disagrees with eager"
        return "eager", (f"the fast path {why} ({c.run_id}); the plan runs on the eager "
                         "float32 path")
    return "fast", f"all {len(checked)} checked cases agree with the eager path"


def run_preflight(plan: Any, data: Any = None, *, steps: int = 20,
                  time_limit_s: float = 60.0, inject: str | None = None,
                  cuda_paths_on_cpu: bool = False,
                  log: Callable[[str], None] | None = None) -> PreflightResult:
    """Check the plan's :func:`preflight_cases` (``plan``: a :class:`sgdnoise.sweep.Plan`
    or a plan file) and choose the engine path; ``data``: the plan's data (loaded when
    None)."""
    from sgdnoise.sweep import load_plan

    from .validate import check_positive, check_positive_int

    steps = check_positive_int("steps", steps)
    time_limit_s = check_positive("time_limit_s", time_limit_s)
    if inject is not None and inject not in INJECTIONS:
        raise ValueError(f"inject must be None or one of {list(INJECTIONS)}, got {inject!r}")
    say = log or (lambda msg: print(msg, flush=True))
    if not hasattr(plan, "runs"):
        plan = load_plan(plan)
    data = data if data is not None else plan.load_data()
    t0 = time.perf_counter()
    cases = []
    for k, run in enumerate(preflight_cases(plan.runs), start=1):
        if k > 1 and time.perf_counter() - t0 > time_limit_s:
            cases.append(CaseResult(run.run_id, _what(run), checked=False))
        else:
            cases.append(compare_paths(run, data, steps=steps, inject=inject,
                                       cuda_paths_on_cpu=cuda_paths_on_cpu))
        say(f"[preflight] case {k}: {cases[-1].describe()}")
    engine, reason = choose_engine(cases)
    say(f"[preflight] engine path: {engine or 'none'} ({reason}); "
        f"{time.perf_counter() - t0:.1f} s")
    return PreflightResult(engine, reason, cases)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sgdnoise.preflight PLAN``: exit 0 with a chosen path (written to
    ``--choice-file``), 3 when neither path runs, 2 for a bad plan or argument."""
    from sgdnoise.sweep import PlanError, load_plan

    parser = argparse.ArgumentParser(
        prog="python -m sgdnoise.preflight",
        description="Check the fast training path against eager float32 on this device.")
    parser.add_argument("plan", help="YAML plan")
    parser.add_argument("--steps", type=int, default=20, help="steps per path and case")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds after which no further case starts")
    parser.add_argument("--choice-file", default=None,
                        help="write the chosen path (fast or eager) to this file")
    parser.add_argument("--inject", choices=INJECTIONS, default=None,
                        help="force a failure of the fast path (tests of the fallback)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1:
            raise PlanError(f"--steps must be an integer >= 1, got {args.steps}")
        if not (args.time_limit > 0 and math.isfinite(args.time_limit)):
            raise PlanError(f"--time-limit must be a number of seconds > 0, got "
                            f"{args.time_limit!r}")
        plan = load_plan(args.plan)
    except PlanError as err:
        print(f"preflight: error: {err}", file=sys.stderr)
        return 2
    result = run_preflight(plan, steps=args.steps, time_limit_s=args.time_limit,
                           inject=args.inject)
    if result.engine is None:
        return 3
    if args.choice_file:
        with open(args.choice_file, "w") as fh:
            fh.write(result.engine + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
