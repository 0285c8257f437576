"""Chapter 6, *Batch size, noise scale and the generalization gap*: parameters, studies and
verdicts.

Notation: N examples, per-example gradients g_i with mean ḡ and covariance
D = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ; a mini-batch of size B has Cov(g_B) = D/B (with
replacement). Learning rate η. Three noise-scale quantities keep distinct names across the
package: the learning-rate/batch ratio η/B (:func:`lr_batch_ratio`, the diffusion
coefficient of the SDE, called "temperature" by Smith & Le and Jastrzębski et al.;
:func:`sgdnoise.train.lr_batch_ratio`), the
per-step noise ratio η(N − B)/(B(N − 1)) of sampling without replacement
(``step_noise_ratio``, in :mod:`sgdnoise.sweep`), and the injected-noise scale of
chapter 9 (``injection_scale``).

- :class:`Params`: the chapter's parameters (the notebook's parameters cell and
  ``book/params/ch06_batch_size/*.yaml``), with their checks.
- :func:`smith_le_noise_scale`: Smith & Le's g = η(N/B − 1). The linear / square-root
  scaling rules are :func:`sgdnoise.train.scaled_lr` (the rule the engine applies).
- :func:`quadratic_step_model`: the optimal step of a noisy quadratic model (McCandlish et
  al. 2018): ε_opt(B) = ε_max / (1 + B_noise/B), B_noise = tr(HΣ)/ḡᵀHḡ,
  B_simple = tr Σ / ‖ḡ‖².
- B_simple of a network along training: :func:`sgdnoise.covariance.noise_scale_of_model`
  and :class:`sgdnoise.covariance.NoiseScaleTracker` (library).
- :func:`steps_to_target`, :func:`steps_sweep`, :func:`fit_steps_vs_batch`: steps to reach a
  target training error with the training engine, and the fit S(B) = S_min (1 + B_noise/B).
- :func:`generalization_sweep`, :func:`lr_batch_ratio_groups`: final train/test error at a
  fixed epoch budget under constant, linear and square-root learning-rate scaling.
- :func:`batch_lr_grid`, :func:`best_lr_per_batch`, :func:`batch_gap`: the seeded grid of
  batch sizes × learning rates at equal epochs and at equal steps, each batch size's best
  learning rate, and paired differences between batch sizes.
- ``verdict_*``: the chapter's conclusions, computed from the numbers with explicit
  thresholds (:class:`sgdnoise.report.Verdict`).

:func:`steps_to_target` and the equal-steps arm of :func:`batch_lr_grid` stop a run early
with the training engine's ``on_step`` hook. The noisy-quadratic model
(:func:`quadratic_step_model`, :func:`expected_quadratic_decrease`) stays here: only this
chapter uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.stats import Interval, t_interval, tost
from sgdnoise.train import LR_SCALINGS, scaled_lr
from sgdnoise.validate import check_choice, check_matrix, check_positive, check_positive_int

__all__ = [
    "Params",
    "batch_gap",
    "batch_lr_grid",
    "best_lr_per_batch",
    "best_lr_slope",
    "train_for_budget",
    "verdict_epoch_budget",
    "verdict_equal_steps",
    "verdict_lr_batch_ratio",
    "verdict_noise_scale",
    "verdict_trace",
    "b_simple_at_target",
    "QuadraticStep",
    "StepsResult",
    "expected_quadratic_decrease",
    "fit_steps_vs_batch",
    "generalization_sweep",
    "quadratic_step_model",
    "steps_sweep",
    "steps_to_target",
    "lr_batch_ratio_groups",
    "smith_le_noise_scale",
]

DT = torch.float64
RULES = LR_SCALINGS  # the learning-rate scaling rules of sgdnoise.train


# --------------------------------------------------------------------------- scaling rules


def smith_le_noise_scale(lr: float, batch_size: int, n: int) -> float:
    """Smith & Le's noise scale g = η(N/B − 1) for sampling without replacement (≈ ηN/B for
    B ≪ N); equal to (N − 1) times the step noise ratio η(N − B)/(B(N − 1))."""
    lr = check_positive("lr", lr)
    b = check_positive_int("batch_size", batch_size)
    n = check_positive_int("n", n)
    if b > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {b}")
    return lr * (n / b - 1)


# --------------------------------------------------------------------------- quadratic model


@dataclass
class QuadraticStep:
    """Noisy-quadratic step model: eps_max = ‖ḡ‖²/ḡᵀHḡ, b_noise = tr(HΣ)/ḡᵀHḡ,
    b_simple = tr Σ/‖ḡ‖², dl_max = ‖ḡ‖⁴/(2ḡᵀHḡ) (best decrease with exact gradients)."""

    eps_max: float
    b_noise: float
    b_simple: float
    dl_max: float

    def eps_opt(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """ε_opt(B) = ε_max / (1 + B_noise / B)."""
        return self.eps_max / (1 + self.b_noise / np.asarray(batch_size, dtype=float))

    def dl_opt(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Best expected decrease with batch B: ΔL_max / (1 + B_noise / B)."""
        return self.dl_max / (1 + self.b_noise / np.asarray(batch_size, dtype=float))


def quadratic_step_model(gbar: Tensor, H: Tensor, Sigma: Tensor) -> QuadraticStep:
    """The noise scales of the local quadratic model L(θ − εg) with g ~ (ḡ, Σ/B).

    gbar: (P,), H: (P, P) symmetric, Sigma: (P, P) per-example covariance. Requires
    ḡᵀHḡ > 0."""
    check_matrix("H", H, square=True)
    check_matrix("Sigma", Sigma, square=True)
    g = gbar.to(DT)
    H, S = H.to(DT), Sigma.to(DT)
    curv = float(g @ H @ g)
    if curv <= 0:
        raise ValueError(f"ḡᵀHḡ must be > 0 for an optimal step to exist, got {curv}")
    g2 = float(g @ g)
    return QuadraticStep(
        eps_max=g2 / curv,
        b_noise=float(torch.trace(H @ S)) / curv,
        b_simple=float(torch.trace(S)) / g2,
        dl_max=g2 * g2 / (2 * curv),
    )


def expected_quadratic_decrease(
    gbar: Tensor, H: Tensor, Sigma: Tensor, eps: float, batch_size: int
) -> float:
    """E[L(θ) − L(θ − ε g_B)] = ε‖ḡ‖² − (ε²/2)(ḡᵀHḡ + tr(HΣ)/B) for a quadratic L and
    g_B with mean ḡ and covariance Σ/B (Lemma 2)."""
    g = gbar.to(DT)
    H, S = H.to(DT), Sigma.to(DT)
    b = check_positive_int("batch_size", batch_size)
    return float(eps * (g @ g) - 0.5 * eps**2 * (g @ H @ g + torch.trace(H @ S) / b))


# --------------------------------------------------------------------------- noise scale


def b_simple_at_target(track: pd.DataFrame, target_error: float) -> dict[str, Any]:
    """B_simple of a tracked run (rows of :class:`sgdnoise.covariance.NoiseScaleTracker`) at
    the first record whose train error is ≤ ``target_error``, or at the last record if none
    is.  Returns {"b_simple", "epoch", "reached" (bool), "train_error"} of that record."""
    target_error = check_positive("target_error", target_error, allow_zero=True)
    if len(track) == 0:
        raise ValueError("track must hold at least one record, got an empty frame")
    hit = track[track["train_error"] <= target_error]
    row = hit.iloc[0] if len(hit) else track.iloc[-1]
    return {"b_simple": float(row["b_simple"]), "epoch": int(row["epoch"]),
            "reached": bool(len(hit)), "train_error": float(row["train_error"])}


# --------------------------------------------------------------------------- data


def _float_inputs(x_uint8: Tensor) -> Tensor:
    from sgdnoise.data import to_float

    return to_float(x_uint8)


# --------------------------------------------------------------------------- steps to target


@dataclass
class StepsResult:
    """One steps-to-target run: batch_size, lr, steps (first step count at which the full
    training-set error was ≤ target; NaN if never within the budget), reached, diverged,
    examples = steps · B, evaluated (number of train-set evaluations)."""

    batch_size: int
    lr: float
    steps: float
    reached: bool
    diverged: bool
    examples: float
    evaluated: int


def steps_to_target(
    cfg: Any,
    data: Any,
    target_error: float,
    *,
    eval_every_examples: int = 256,
) -> StepsResult:
    """Train with :func:`sgdnoise.train.train` (plain SGD as ``cfg`` says, ``cfg.epochs``
    the budget) and return the first step at which the *full* training-set error is at most
    ``target_error``. The train error is evaluated every ⌈eval_every_examples / B⌉ steps by
    an ``on_step`` hook of the engine, which stops the run once the target is reached. The
    engine's progress bar is disabled here; the model is left in train mode."""
    from sgdnoise.train import StepState, evaluate, train

    target_error = check_positive("target_error", target_error, allow_zero=True)
    every = max(1, math.ceil(check_positive_int("eval_every_examples", eval_every_examples)
                             / cfg.batch_size))
    train_x, train_y = data["train_x"], data["train_y"]

    class _Watcher:
        """Evaluates the full training error every ``every`` steps; stops at the target."""

        hit: int | None = None
        evals = 0

        def on_step(self, state: StepState) -> bool:
            if state.step % every:
                return False
            _, err = evaluate(state.model, train_x, train_y, batch_size=4096, amp=False)
            self.evals += 1
            state.model.train()
            if err <= target_error:
                self.hit = state.step
                return True
            return False

    watcher = _Watcher()
    res = train(replace(cfg, eval_at_start=False), data, hooks=[watcher], progress=False)
    # a run stopped at the target counts as reached, even if the engine flags a non-finite
    # loss at that very step
    diverged = res.status == "diverged" and watcher.hit is None
    lr_used = cfg.lr * (scaled_lr(1.0, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling))
    steps = float(watcher.hit) if watcher.hit is not None else math.nan
    return StepsResult(batch_size=cfg.batch_size, lr=lr_used, steps=steps,
                       reached=watcher.hit is not None, diverged=diverged,
                       examples=steps * cfg.batch_size, evaluated=watcher.evals)


def steps_sweep(
    cfg: Any,
    data: Any,
    batch_sizes: Sequence[int],
    target_error: float,
    *,
    lr_multipliers: Sequence[float] = (1.0,),
    eval_every_examples: int = 256,
    progress: Any = None,
) -> pd.DataFrame:
    """Steps to ``target_error`` for each B in ``batch_sizes`` and each learning rate
    cfg.lr · s(B) · m (s from ``cfg.lr_scaling``, m in ``lr_multipliers``). Returns one row
    per run (batch_size, lr, multiplier, steps, reached, diverged, examples) plus a
    column ``best`` marking the fewest steps per B. ``progress``: optional tqdm-like
    wrapper for the run list."""
    runs = [(int(b), float(m)) for b in batch_sizes for m in lr_multipliers]
    it = progress(runs) if progress is not None else runs
    rows = []
    for b, m in it:
        c = replace(cfg, batch_size=b, lr=cfg.lr * m)
        r = steps_to_target(c, data, target_error, eval_every_examples=eval_every_examples)
        rows.append({"batch_size": b, "lr": r.lr, "multiplier": m, "steps": r.steps,
                     "reached": r.reached, "diverged": r.diverged, "examples": r.examples})
    df = pd.DataFrame(rows)
    df["best"] = False
    for _, grp in df[df["reached"]].groupby("batch_size"):
        df.loc[grp["steps"].idxmin(), "best"] = True
    return df


def fit_steps_vs_batch(batch_sizes: Sequence[float], steps: Sequence[float]) -> dict[str, float]:
    """Fit S(B) = S_min (1 + B_noise / B) by least squares on log S (relative errors).

    Returns s_min, b_noise, e_min = S_min · B_noise (examples needed as B → 0 per the
    model), rmse_log and n (points used; NaN steps are dropped). Needs >= 3 points. The
    starting point comes from the linear fit S = a + b/B (a = S_min, b = S_min B_noise)."""
    from scipy.optimize import least_squares

    B = np.asarray(batch_sizes, dtype=float)
    S = np.asarray(steps, dtype=float)
    ok = np.isfinite(B) & np.isfinite(S) & (B > 0) & (S > 0)
    B, S = B[ok], S[ok]
    if B.size < 3:
        raise ValueError(f"need >= 3 finite positive (B, S) points, got {B.size}")
    A = np.stack([np.ones_like(B), 1 / B], 1)
    a, b = np.linalg.lstsq(A / S[:, None], np.ones_like(S), rcond=None)[0]
    s0 = a if a > 0 else S.min()
    bn0 = b / s0 if b > 0 else float(np.median(B))

    def resid(z: np.ndarray) -> np.ndarray:
        return z[0] + np.log1p(np.exp(z[1]) / B) - np.log(S)

    sol = least_squares(resid, x0=[math.log(s0), math.log(bn0)])
    s_min, b_noise = math.exp(sol.x[0]), math.exp(sol.x[1])
    r = resid(sol.x)
    return {"s_min": s_min, "b_noise": b_noise, "e_min": s_min * b_noise,
            "rmse_log": float(np.sqrt(np.mean(r**2))), "n": int(B.size)}


# --------------------------------------------------------------------------- generalisation


def generalization_sweep(
    cfg: Any,
    data: Any,
    batch_sizes: Sequence[int],
    rules: Sequence[str] = RULES,
    *,
    progress: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train at every B and lr scaling rule for ``cfg.epochs`` epochs (the same epoch
    budget, so B·steps is fixed) with base lr ``cfg.lr`` at ``cfg.base_batch_size``.

    Runs whose learning rate coincides (B = B₀ under every rule) are trained once.
    Returns (final, history): final has one row per (rule, B): lr, lr_batch_ratio, steps,
    status, final train/test error and loss, gap = test − train error, loss_gap; history
    has the engine's per-epoch records for each run (columns run_lr, batch_size, ...)."""
    from sgdnoise.train import train

    for r in rules:
        check_choice("rules[]", r, RULES)
    cache: dict[tuple[int, float], Any] = {}
    jobs = [(r, int(b)) for r in rules for b in batch_sizes]
    it = progress(jobs) if progress is not None else jobs
    final, hist = [], []
    for rule, b in it:
        lr = scaled_lr(cfg.lr, b, cfg.base_batch_size, rule)
        key = (b, round(lr, 12))
        if key not in cache:
            c = replace(cfg, batch_size=b, lr=lr, lr_scaling="none")
            cache[key] = train(c, data, progress=False)
            for rec in cache[key].history:
                hist.append({"batch_size": b, "lr": lr, "lr_batch_ratio": lr / b, **rec})
        res = cache[key]
        last = res.history[-1]
        final.append({
            "rule": rule, "batch_size": b, "lr": lr, "lr_batch_ratio": lr / b, "steps": res.steps,
            "status": res.status, "train_error": last["train_error"],
            "test_error": last["test_error"], "train_loss": last["train_loss"],
            "test_loss": last["test_loss"], "gap": last["test_error"] - last["train_error"],
            "loss_gap": last["test_loss"] - last["train_loss"],
        })
    return pd.DataFrame(final), pd.DataFrame(hist)


def lr_batch_ratio_groups(final: pd.DataFrame, *, rtol: float = 1e-6) -> pd.DataFrame:
    """Group distinct runs of :func:`generalization_sweep` by η/B (equal within ``rtol``).

    Returns one row per η/B value: lr_batch_ratio, runs (how many distinct (η, B) pairs),
    batch sizes, test-error range (max − min), and train-loss range, so a constant-η/B
    family can be compared with the spread across families."""
    runs = final.drop_duplicates(subset=["batch_size", "lr"]).copy()
    runs = runs.sort_values("lr_batch_ratio")
    groups: list[list[int]] = []
    last = None
    for idx, v in runs["lr_batch_ratio"].items():
        if last is None or abs(v - last) > rtol * max(abs(last), 1e-300):
            groups.append([])
        groups[-1].append(idx)
        last = v if len(groups[-1]) == 1 else last
    rows = []
    for g in groups:
        sub = runs.loc[g]
        rows.append({
            "lr_batch_ratio": float(sub["lr_batch_ratio"].iloc[0]),
            "runs": len(sub),
            "batch_sizes": ", ".join(str(int(b)) for b in sub["batch_size"]),
            "test_error_range": float(sub["test_error"].max() - sub["test_error"].min()),
            "train_loss_range": float(sub["train_loss"].max() - sub["train_loss"].min()),
            "mean_test_error": float(sub["test_error"].mean()),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- batch × lr grid


def train_for_budget(cfg: Any, data: Any, *, steps: int | None = None) -> dict[str, Any]:
    """One run of the training engine, for ``cfg.epochs`` epochs (``steps=None``) or for
    exactly ``steps`` optimizer steps (the engine runs ⌈steps / steps-per-epoch⌉ epochs and
    an ``on_step`` hook stops it at ``steps``). The final train/test loss and error are
    evaluated on the whole sets after the last step, and on the validation set when ``data``
    has one (``val_x``, ``val_y``). Returns {"steps", "epochs" (examples seen / N), "status"
    ("finished" | "diverged"), "train_error", "test_error", "train_loss", "test_loss"} plus
    "val_error", "val_loss" with a validation set."""
    from sgdnoise.train import StepBudget, evaluate, steps_per_epoch, train

    n = int(data["train_x"].shape[0])
    spe = steps_per_epoch(n, cfg.batch_size)
    budget = None if steps is None else check_positive_int("steps", steps)
    run_cfg = cfg if budget is None else replace(cfg, epochs=math.ceil(budget / spe))
    hooks = [] if budget is None else [StepBudget(budget)]
    res = train(replace(run_cfg, eval_at_start=False), data, hooks=hooks, progress=False)
    status = "diverged" if res.status == "diverged" else "finished"
    model = res.model
    kw = dict(batch_size=cfg.eval_batch_size, amp=False, channels_last=False)
    train_loss, train_err = evaluate(model, data["train_x"], data["train_y"], **kw)
    test_loss, test_err = evaluate(model, data["test_x"], data["test_y"], **kw)
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
        status = "diverged"
    out = {"steps": res.steps, "epochs": res.steps * cfg.batch_size / n,
           "status": status, "train_error": train_err, "test_error": test_err,
           "train_loss": train_loss, "test_loss": test_loss}
    if data.get("val_x") is not None:
        out["val_loss"], out["val_error"] = evaluate(model, data["val_x"], data["val_y"], **kw)
    return out


def batch_lr_grid(
    cfg: Any,
    data: Any,
    batch_sizes: Sequence[int],
    lrs: Sequence[float],
    seeds: Sequence[int],
    *,
    epochs: int,
    steps: int,
    progress: Any = None,
) -> pd.DataFrame:
    """Every (budget, B, η, seed) of a grid, plain SGD with a constant learning rate η (no
    scaling rule: the grid itself spans the scaled values).

    Two budgets: "equal epochs" (``epochs`` epochs at every B, so N·epochs/B steps) and
    "equal steps" (``steps`` steps at every B, so steps·B/N epochs). Seeds set the
    initialisation and the batch order. One row per run: budget, batch_size, lr,
    lr_batch_ratio (η/B), seed, steps, epochs, status, final train/test error and loss (and
    validation error and loss when ``data`` has a validation set), gap (test − train
    error)."""
    check_positive_int("epochs", epochs)
    check_positive_int("steps", steps)
    jobs = [(bud, int(b), float(lr), int(sd)) for bud in ("equal epochs", "equal steps")
            for b in batch_sizes for lr in lrs for sd in seeds]
    it = progress(jobs) if progress is not None else jobs
    rows = []
    for bud, b, lr, sd in it:
        c = replace(cfg, batch_size=b, lr=lr, lr_scaling="none", seed=sd, epochs=epochs)
        r = train_for_budget(c, data, steps=steps if bud == "equal steps" else None)
        rows.append({"budget": bud, "batch_size": b, "lr": lr, "lr_batch_ratio": lr / b,
                     "seed": sd, **r, "gap": r["test_error"] - r["train_error"]})
    return pd.DataFrame(rows)


def best_lr_per_batch(grid: pd.DataFrame, *, metric: str | None = None) -> pd.DataFrame:
    """For each (budget, B): the learning rate with the lowest mean ``metric`` over seeds
    (diverged runs count as error 1 / loss ∞), that mean, the mean test error at that η, and
    whether the best η sits at an edge of the grid (then the grid does not bracket that B's
    best η and a wider grid could do better).

    ``metric`` None chooses on "val_error" when the grid has a validation column (the test
    set then plays no part in the choice) and on "test_error" otherwise. Columns: budget,
    batch_size, best_lr, selected_on (the metric), mean (of it at best_lr), test_error (mean
    at best_lr), at_edge, lrs_tried."""
    if metric is None:
        metric = "val_error" if "val_error" in grid.columns else "test_error"
    if metric not in grid.columns:
        raise ValueError(f"metric must be a column of grid {sorted(grid.columns)}, got {metric!r}")
    g = grid.copy()
    bad = g["status"] != "finished"
    for col in {metric, "test_error"}:
        g.loc[bad, col] = 1.0 if "error" in col else math.inf
    rows = []
    for (bud, b), sub in g.groupby(["budget", "batch_size"], sort=True):
        means = sub.groupby("lr")[metric].mean().sort_index()
        best = float(means.idxmin())
        lrs = list(means.index)
        rows.append({"budget": bud, "batch_size": int(b), "best_lr": best,
                     "selected_on": metric, "mean": float(means.min()),
                     "test_error": float(sub.groupby("lr")["test_error"].mean()[best]),
                     "at_edge": bool(len(lrs) > 1 and best in (lrs[0], lrs[-1])),
                     "lrs_tried": len(lrs)})
    return pd.DataFrame(rows)


def batch_gap(
    grid: pd.DataFrame, budget: str, small: int, large: int, lr_small: float,
    lr_large: float, *, metric: str = "test_error",
) -> np.ndarray:
    """Per-seed differences ``metric(large B, lr_large) − metric(small B, lr_small)`` in one
    budget arm, paired by seed: (n_seeds,). Diverged runs count as error 1."""
    g = grid[grid["budget"] == budget].copy()
    g.loc[g["status"] != "finished", metric] = 1.0
    a = g[(g.batch_size == large) & np.isclose(g.lr, lr_large)].set_index("seed")[metric]
    b = g[(g.batch_size == small) & np.isclose(g.lr, lr_small)].set_index("seed")[metric]
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        raise ValueError(f"no seed has both B={small} at lr={lr_small} and B={large} at "
                         f"lr={lr_large} in budget {budget!r}")
    return (a.loc[seeds] - b.loc[seeds]).to_numpy(dtype=float)


def best_lr_slope(best: pd.DataFrame) -> dict[str, float]:
    """Least-squares slope of log best η against log B over the batch sizes whose best η is
    inside the grid (``at_edge`` False): 1 is linear scaling, 1/2 square-root scaling, 0 no
    scaling. Returns {"slope", "n" (points used)}; slope NaN with fewer than 2 points."""
    ok = best[~best["at_edge"]]
    if len(ok) < 2 or ok["batch_size"].nunique() < 2:
        return {"slope": math.nan, "n": len(ok)}
    slope = np.polyfit(np.log(ok["batch_size"]), np.log(ok["best_lr"]), 1)[0]
    return {"slope": float(slope), "n": len(ok)}


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 6's parameters; values live in the notebook's parameters cell and in
    ``book/params/ch06_batch_size/{smoke,default,full}.yaml``."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="image data set")
    seed: int = param(low=0, doc="seed of the subset and of the single-seed studies")
    n_train: int = param(low=50, doc="training examples N")
    n_test: int = param(low=10, doc="test examples")
    n_val: int = param(low=10, doc="validation examples held out of the training split, on "
                       "which each batch size's best η of the grid is chosen")
    image_size: int = param(choices=(4, 8, 16, 32), doc="images average-pooled to this side")
    model: str = param(choices=("mlp", "cnn"), doc="network")
    width: int = param(low=1, doc="hidden units (MLP) or first-block channels (CNN)")
    trace_n: int = param(low=8, doc="examples whose gradients enter the trace check")
    trace_batch_sizes: tuple[int, ...] = param(low=1, min_len=3, doc="B of the trace check")
    trace_samples: int = param(low=10, doc="Monte Carlo mini-batches per B")
    track_batch_size: int = param(low=1, doc="B of the run along which B_simple is tracked")
    track_lr: float = param(low=1e-6, doc="η of the tracked run")
    track_epochs: int = param(low=1, doc="epochs of the tracked run")
    steps_batch_sizes: tuple[int, ...] = param(low=1, min_len=3, doc="B of the steps sweep")
    steps_base_lr: float = param(low=1e-6, doc="η₀ of the steps sweep (sqrt-scaled)")
    steps_base_batch: int = param(low=1, doc="B₀ of the steps sweep")
    steps_lr_multipliers: tuple[float, ...] = param(low=1e-3, doc="η multipliers tried per B")
    steps_max_epochs: int = param(low=1, doc="epoch budget of each steps-to-target run")
    target_error: float = param(low=0.0, high=1.0, doc="train error the steps sweep targets")
    eval_every_examples: int = param(low=1, doc="train error checked every this many examples")
    gen_batch_sizes: tuple[int, ...] = param(low=1, min_len=2, doc="B of the scaling-rule sweep")
    gen_base_lr: float = param(low=1e-6, doc="η₀ of the scaling-rule sweep")
    gen_base_batch: int = param(low=1, doc="B₀ of the scaling-rule sweep")
    gen_epochs: int = param(low=1, doc="epochs of the scaling-rule sweep")
    grid_batch_sizes: tuple[int, ...] = param(low=1, min_len=2, doc="B of the seeded grid")
    grid_lrs: tuple[float, ...] = param(low=1e-6, min_len=2, doc="η values of the grid")
    grid_seeds: tuple[int, ...] = param(low=0, min_len=2, doc="seeds of the grid")
    grid_epochs: int = param(low=1, doc="budget of the equal-epochs arm")
    grid_steps: int = param(low=1, doc="budget of the equal-steps arm")
    trace_z_max: float = param(low=0.0, doc="largest |z| of Monte Carlo against formula "
                               "still counted as agreement")
    noise_scale_factor: float = param(low=1.0, doc="B_noise and B_simple 'agree' within "
                                      "this factor")
    gap_margin: float = param(low=1e-4, high=1.0, doc="equivalence margin of a test-error "
                              "difference (TOST)")
    alpha: float = param(low=1e-4, high=0.25, doc="level of the TOST and difference tests")
    ratio_spread: float = param(low=0.0, high=1.0, doc="a constant-η/B family counts as "
                                "tighter if its spread is below this fraction of the "
                                "spread over all runs")
    device: str = param(choices=("cpu", "cuda"), doc="where the networks train")

    def check(self) -> None:
        self.require(max(self.trace_batch_sizes) <= self.trace_n, "trace_batch_sizes",
                     f"must be <= trace_n = {self.trace_n}")
        self.require(self.trace_n <= self.n_train, "trace_n",
                     f"must be <= n_train = {self.n_train}")
        if self.dataset == "cifar10":  # the validation set comes from the training split
            self.require(self.n_train + self.n_val <= 50_000, "n_val",
                         f"must be <= 50000 - n_train = {50_000 - self.n_train} (CIFAR-10's "
                         "training split holds the training and the validation examples)")
        for name in ("steps_batch_sizes", "gen_batch_sizes", "grid_batch_sizes"):
            self.require(max(getattr(self, name)) <= self.n_train, name,
                         f"must be <= n_train = {self.n_train}")
        self.require(self.gen_base_batch in self.gen_batch_sizes, "gen_base_batch",
                     f"must be one of gen_batch_sizes = {list(self.gen_batch_sizes)}")
        self.require(any(math.isclose(self.gen_base_lr, v) for v in self.grid_lrs),
                     "gen_base_lr", f"must be one of grid_lrs = {list(self.grid_lrs)} (the "
                     "grid's unscaled arm uses it at every B)")
        self.require(len(set(self.grid_seeds)) == len(self.grid_seeds), "grid_seeds",
                     "must not repeat a seed")
        if self.profile != "smoke":
            self.require(len(self.grid_seeds) >= 3, "grid_seeds",
                         "needs >= 3 seeds outside the smoke profile (intervals)")
            self.require(len(self.grid_batch_sizes) >= 5, "grid_batch_sizes",
                         "needs >= 5 batch sizes outside the smoke profile")
            self.require(len(self.grid_lrs) >= 4, "grid_lrs",
                         "needs >= 4 learning rates outside the smoke profile")


# --------------------------------------------------------------------------- verdicts

SECTION_TRACE = "sec-ch6-trace"
SECTION_NOISE_SCALE = "sec-ch6-steps"
SECTION_GRID = "sec-ch6-grid"
SECTION_RATIO = "sec-ch6-ratio"


def verdict_trace(
    z: Sequence[float], slope: float, slope_se: float, *, z_max: float, samples: int,
    scale: str,
) -> Verdict:
    """tr Cov(g_B) = tr D/B (× (N − B)/(N − 1) without replacement) against Monte Carlo:
    supported if every finite ``|z| = |mc − formula|/se`` ≤ ``z_max``, contradicted if one is
    above, inconclusive if none is finite."""
    claim = (r"The trace of the mini-batch gradient covariance is $\operatorname{tr} D/B$ "
             r"(times $(N - B)/(N - 1)$ without replacement).")
    zf = np.asarray([v for v in z if np.isfinite(v)], dtype=float)
    sentence = (f"With replacement the Monte Carlo traces follow a power law of slope "
                f"{slope:.3f} ± {slope_se:.3f} (theory −1); ")
    if zf.size == 0:
        return Verdict(claim, "inconclusive", sentence + "no z-score could be computed.",
                       scale, SECTION_TRACE)
    zmax = float(np.abs(zf).max())
    sentence += (f"the largest z-score in absolute value against the trace formula over "
                 f"both schemes is {zmax:.2f} (with {samples} samples; agreement means at "
                 f"most {z_max:g}).")
    return Verdict(claim, "supported" if zmax <= z_max else "contradicted", sentence, scale,
                   SECTION_TRACE)


B_SIMPLE = r"$B_{\rm simple}$"
B_NOISE = r"$B_{\rm noise}$"
B_SIMPLE_DEF = r"$B_{\rm simple} = \operatorname{tr} D / \lVert \bar g \rVert^2$"


def verdict_noise_scale(
    fit: dict[str, float] | None, at_target: dict[str, Any], target_error: float, *,
    factor: float, scale: str,
) -> Verdict:
    """B_simple (tracked run, at the first record with train error ≤ ``target_error``)
    against B_noise (fit of steps to that target, :func:`fit_steps_vs_batch`): supported if
    1/``factor`` ≤ B_noise/B_simple ≤ ``factor``, contradicted otherwise; inconclusive
    without a fit or when the tracked run never reached the target (B_simple then describes
    another stage of training)."""
    claim = (f"The gradient noise scale {B_SIMPLE_DEF} predicts the critical batch size "
             f"{B_NOISE} beyond which larger batches stop saving steps.")
    if fit is None:
        return Verdict(claim, "inconclusive", "Too few batch sizes reached the target for "
                       "a fit.", scale, SECTION_NOISE_SCALE)
    b_simple = float(at_target["b_simple"])
    ratio = fit["b_noise"] / b_simple
    when = (f"when it first reached train error ≤ {target_error} (epoch "
            f"{at_target['epoch']})" if at_target["reached"] else
            f"at its last epoch ({at_target['epoch']}, train error "
            f"{at_target['train_error']:.2f}; it never reached the target)")
    sentence = (
        f"The fit of {fit['n']} batch sizes gives $B_{{\\rm noise}} = {fit['b_noise']:.0f}$ "
        f"($S_{{\\min}} = {fit['s_min']:.0f}$ steps, $E_{{\\min}} = {fit['e_min']:.0f}$ "
        f"examples, rms log-residual {fit['rmse_log']:.2f}); {B_SIMPLE_DEF} measured on the "
        f"tracked run {when} is {b_simple:.0f}, a ratio "
        f"$B_{{\\rm noise}}/B_{{\\rm simple}} = {ratio:.2f}$ (agreement: within a factor "
        f"{factor:g}).")
    if not at_target["reached"]:
        return Verdict(claim, "inconclusive", sentence + f" {B_SIMPLE} was not measured at "
                       "the stage of training the fit describes.", scale, SECTION_NOISE_SCALE)
    ok = 1 / factor <= ratio <= factor
    return Verdict(claim, "supported" if ok else "contradicted", sentence, scale,
                   SECTION_NOISE_SCALE)


def classify_difference(diffs: Sequence[float], margin: float, alpha: float) -> str:
    """"higher" / "lower" (the (1 − α) t-interval of the mean difference excludes 0 on
    that side), "equivalent" (TOST at level α within ±``margin``), else "undecided"."""
    eq = tost(diffs, margin, alpha)
    if eq.equivalent:
        return "equivalent"
    outer = t_interval(diffs, 1 - alpha)
    if outer.above(0.0):
        return "higher"
    if outer.below(0.0):
        return "lower"
    return "undecided"


def _fmt(diffs: Sequence[float], alpha: float) -> str:
    iv: Interval = t_interval(diffs, 1 - alpha)
    return f"{iv.format(3)} (n = {iv.n})"


def verdict_epoch_budget(
    fixed: Sequence[float], tuned: Sequence[float], *, small: int, large: int,
    lr_fixed: float, best_small: float, best_large: float, slope: float, edges: int,
    margin: float, alpha: float, scale: str, selected_on: str = "test error",
) -> Verdict:
    """'At a fixed epoch budget larger batches end with higher test error unless the
    learning rate is scaled', from per-seed test-error differences (large − small B) at the
    same η (``fixed``) and at each B's best η of the grid (``tuned``, chosen on
    ``selected_on``, named in the sentence).

    Each difference is classified by :func:`classify_difference` (margin, α). Supported: the
    fixed-η difference is higher and the tuned one equivalent or lower; mixed: both higher
    (tuning the learning rate does not remove the deficit); contradicted: the fixed-η
    difference is equivalent or lower (no deficit to remove); inconclusive otherwise."""
    claim = ("At a fixed epoch budget larger batches end with higher test error unless the "
             "learning rate is scaled with B.")
    cf, ct = classify_difference(fixed, margin, alpha), classify_difference(tuned, margin,
                                                                            alpha)
    sentence = (
        f"Test error of B = {large} minus B = {small} over seeds, {1 - alpha:.0%} interval: "
        f"at the same η = {lr_fixed:g}, {_fmt(fixed, alpha)}, {cf}; at each batch size's "
        f"best η of the grid, chosen on {selected_on} ({best_small:g} and "
        f"{best_large:g}), {_fmt(tuned, alpha)}, "
        f"{ct} (equivalence margin ±{margin:g}). The log-log slope of the best η against B "
        + (f"is {slope:.2f} (1: linear scaling, 0.5: square-root, 0: none)"
           if np.isfinite(slope) else "cannot be estimated (fewer than two best η inside "
           "the grid)")
        + f"; {edges} batch size(s) have their best η at an edge of the grid.")
    if cf == "higher" and ct in ("equivalent", "lower"):
        outcome = "supported"
    elif cf == "higher" and ct == "higher":
        outcome = "mixed"
    elif cf in ("equivalent", "lower"):
        outcome = "contradicted"
    else:
        outcome = "inconclusive"
    return Verdict(claim, outcome, sentence, scale, SECTION_GRID)


def verdict_equal_steps(
    tuned_steps: Sequence[float], *, small: int, large: int, margin: float, alpha: float,
    scale: str,
) -> Verdict:
    """'The large-batch deficit is one of steps': at equal steps and each B's best η, the
    per-seed test-error difference (large − small B) is classified by
    :func:`classify_difference`. Supported if equivalent or lower, contradicted if higher,
    inconclusive if undecided."""
    claim = ("Given the same number of steps (and a tuned learning rate), larger batches are "
             "no worse: the deficit at equal epochs is one of steps.")
    c = classify_difference(tuned_steps, margin, alpha)
    sentence = (f"At equal steps, test error of B = {large} minus B = {small} at each one's "
                f"best η: {_fmt(tuned_steps, alpha)}, {c} (margin ±{margin:g}).")
    outcome = {"equivalent": "supported", "lower": "supported", "higher": "contradicted"}.get(
        c, "inconclusive")
    return Verdict(claim, outcome, sentence, scale, SECTION_GRID)


def verdict_lr_batch_ratio(
    spread_same: float, spread_all: float, runs: int, *, ratio_spread: float, margin: float,
    scale: str,
) -> Verdict:
    """'η/B is what matters' from one sweep: supported if the test-error spread within the
    constant-η/B family is below ``ratio_spread`` × the spread over all ``runs`` distinct
    runs, contradicted if not; inconclusive when no family has two runs or the overall
    spread is within ``margin`` (nothing to explain)."""
    claim = ("Runs that share the learning-rate/batch ratio η/B end alike: η/B is what "
             "matters, as the SDE says.")
    sentence = (f"Within the constant-η/B family the final test errors span {spread_same:.3f}; "
                f"across all {runs} distinct runs they span {spread_all:.3f} (tighter means "
                f"below {ratio_spread:g} of that; spreads below the margin {margin:g} cannot "
                f"decide).")
    if not np.isfinite(spread_same) or spread_all <= margin:
        return Verdict(claim, "inconclusive", sentence, scale, SECTION_RATIO)
    outcome = "supported" if spread_same < ratio_spread * spread_all else "contradicted"
    return Verdict(claim, outcome, sentence, scale, SECTION_RATIO)


# --------------------------------------------------------------------------- notebook helpers


def prepare(P: Params) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The chapter's data (pooled, see :func:`sgdnoise.data.pool_image_data`), its identity
    record and the base :class:`sgdnoise.train.TrainConfig` (plain SGD, no augmentation,
    float32)."""
    from sgdnoise.data import load_dataset, pool_image_data
    from sgdnoise.train import TrainConfig

    data = load_dataset(P.dataset, n_train=P.n_train, n_test=P.n_test, seed=P.seed,
                        n_val=P.n_val)
    small = pool_image_data(data, P.image_size)
    identity = small.pop("identity")
    base = TrainConfig(model=P.model, width=P.width,
                       norm="group" if P.model == "cnn" else "none", augment=False,
                       channels_last=False, amp=False, device=P.device, seed=P.seed,
                       eval_batch_size=2000)
    return small, identity, base


def build_net(P: Params, in_shape: tuple[int, ...]) -> nn.Module:
    """The chapter's network, initialised after ``torch.manual_seed(P.seed)``."""
    from sgdnoise.models import build_model

    torch.manual_seed(P.seed)
    return build_model(P.model, in_shape=in_shape, width=P.width,
                       norm="group" if P.model == "cnn" else "none")


def rule_deltas(final: pd.DataFrame) -> tuple[int, int, dict[str, float]]:
    """Test-error change from the smallest to the largest B of :func:`generalization_sweep`,
    per scaling rule: (B_min, B_max, {rule: Δ})."""
    piv = final.pivot_table(index="batch_size", columns="rule", values="test_error")
    bmin, bmax = int(piv.index.min()), int(piv.index.max())
    return bmin, bmax, {r: float(piv.loc[bmax, r] - piv.loc[bmin, r]) for r in piv.columns}


def ratio_spreads(final: pd.DataFrame) -> tuple[float, float, int]:
    """(test-error spread within constant-η/B families with ≥ 2 runs (largest), spread over
    all distinct runs, number of distinct runs) of :func:`generalization_sweep`."""
    groups = lr_batch_ratio_groups(final)
    same = groups[groups.runs > 1]
    spread_same = float(same.test_error_range.max()) if len(same) else math.nan
    distinct = final.drop_duplicates(subset=["batch_size", "lr"])
    return (spread_same, float(distinct.test_error.max() - distinct.test_error.min()),
            len(distinct))


def grid_evidence(grid: pd.DataFrame, lr_fixed: float) -> dict[str, Any]:
    """What the verdicts read from :func:`batch_lr_grid`: the smallest and largest B, the
    per-seed differences (large − small) at ``lr_fixed`` (equal epochs) and at each B's best
    η (equal epochs, equal steps; chosen on the validation error when the grid has one, see
    :func:`best_lr_per_batch`), the best η per B and its slope, and ``selected_on`` (the
    metric the best η was chosen on, in words). ``lr_fixed`` must be in the grid."""
    best = best_lr_per_batch(grid)
    small, large = int(grid.batch_size.min()), int(grid.batch_size.max())

    def best_lr(budget: str, b: int) -> float:
        row = best[(best.budget == budget) & (best.batch_size == b)]
        return float(row["best_lr"].iloc[0])

    ev = {"small": small, "large": large, "best": best,
          "selected_on": ("validation error" if best["selected_on"].iloc[0] == "val_error"
                          else "test error")}
    ev["fixed"] = batch_gap(grid, "equal epochs", small, large, lr_fixed, lr_fixed)
    for bud, key in (("equal epochs", "tuned"), ("equal steps", "tuned_steps")):
        ev[key] = batch_gap(grid, bud, small, large, best_lr(bud, small), best_lr(bud, large))
    ev["best_small"] = best_lr("equal epochs", small)
    ev["best_large"] = best_lr("equal epochs", large)
    ee = best[best.budget == "equal epochs"]
    ev["slope"] = best_lr_slope(ee)["slope"]
    ev["edges"] = int(ee["at_edge"].sum())
    return ev
