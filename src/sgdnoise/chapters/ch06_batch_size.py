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
- B_simple of a network along training: :func:`sgdnoise.train.noise_scale.noise_scale_of_model`
  and :class:`sgdnoise.train.noise_scale.NoiseScaleTracker` (library).
- :func:`steps_to_target`, :func:`steps_sweep`, :func:`fit_steps_vs_batch`: steps to reach a
  target training error with the training engine, and the fit S(B) = S_min (1 + B_noise/B).
- :func:`generalization_sweep`, :func:`lr_batch_ratio_groups`: final train/test error at a
  fixed epoch budget under constant, linear and square-root learning-rate scaling.
- :func:`batch_lr_grid`, :func:`best_lr_per_batch`, :func:`evaluation_jobs`,
  :func:`run_grid_jobs`, :func:`grid_evidence`: a selection grid of batch sizes × learning
  rates at equal epochs and at equal steps (the steps the smallest batch takes), each batch
  size's best learning rate chosen on validation error, and the compared runs repeated on
  other seeds, paired by seed.
- ``verdict_*``: the chapter's conclusions, computed from the numbers with explicit
  thresholds (:class:`sgdnoise.report.Verdict`); the rules (:func:`epoch_rule`,
  :func:`no_worse_rule`, :func:`alike_rule`) work on arrays of simulated seeds so that
  :func:`rule_rates` measures their false-positive rate and power with
  :mod:`sgdnoise.decide.harness`.

:func:`steps_to_target` stops a run at its target with the training engine's ``on_step``
hook. The noisy-quadratic model
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

from sgdnoise.chapters.ch05_overparam import SeedRates
from sgdnoise.params import ChapterParams, param
from sgdnoise.report import KINDS, Verdict
from sgdnoise.stats import Interval, t_interval
from sgdnoise.train import LR_SCALINGS, scaled_lr
from sgdnoise.validate import check_choice, check_matrix, check_positive, check_positive_int

__all__ = [
    "Params",
    "BUDGETS",
    "batch_gap",
    "batch_lr_grid",
    "best_lr_per_batch",
    "best_lr_slope",
    "train_for_budget",
    "grid_config",
    "run_grid_jobs",
    "equal_steps_budget",
    "evaluation_jobs",
    "grid_evidence",
    "noise_scale_seeds",
    "verdict_epoch_budget",
    "verdict_equal_steps",
    "verdict_lr_batch_ratio",
    "verdict_noise_scale",
    "verdict_trace",
    "classify_difference",
    "difference_codes",
    "band_codes",
    "epoch_rule",
    "no_worse_rule",
    "alike_rule",
    "rule_rates",
    "epoch_rates",
    "boundary_rates",
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
    """B_simple of a tracked run (rows of
    :class:`sgdnoise.train.noise_scale.NoiseScaleTracker`) at the first record whose train
    error is ≤ ``target_error``, or at the last record if none is.  Returns {"b_simple",
    "epoch", "reached" (bool), "train_error"} of that record."""
    target_error = check_positive("target_error", target_error, allow_zero=True)
    if len(track) == 0:
        raise ValueError("track must hold at least one record, got an empty frame")
    hit = track[track["train_error"] <= target_error]
    row = hit.iloc[0] if len(hit) else track.iloc[-1]
    return {"b_simple": float(row["b_simple"]), "epoch": int(row["epoch"]),
            "reached": bool(len(hit)), "train_error": float(row["train_error"])}


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

BUDGETS = ("equal epochs", "equal steps")


def grid_config(cfg: Any) -> Any:
    """The grid's training recipe from the chapter's base config: plain SGD with a cosine
    decay of η to zero over the run (so that each run ends with its noise annealed and its
    training error near its floor) and no evaluation during the run."""
    return replace(cfg, schedule="cosine", eval_points=0, eval_at_start=False)


def train_for_budget(cfg: Any, data: Any, *, steps: int | None = None) -> dict[str, Any]:
    """One run of the training engine, for ``cfg.epochs`` epochs (``steps=None``) or for
    exactly ``steps`` optimizer steps (the engine's ``max_steps``: a schedule runs over those
    steps). The final train/test loss and error are evaluated on the whole sets after the
    last step, and on the validation set when ``data`` has one (``val_x``, ``val_y``).
    Returns {"steps", "epochs" (examples seen / N), "status" ("finished" | "diverged"),
    "train_error", "test_error", "train_loss", "test_loss"} plus "val_error", "val_loss"
    with a validation set."""
    from sgdnoise.train import evaluate, train

    n = int(data["train_x"].shape[0])
    budget = None if steps is None else check_positive_int("steps", steps)
    res = train(replace(cfg, max_steps=budget, eval_points=0), data, progress=False)
    status = "diverged" if res.status == "diverged" else "finished"
    kw = dict(batch_size=cfg.eval_batch_size, amp=False, channels_last=False)
    train_loss, train_err = evaluate(res.model, data["train_x"], data["train_y"], **kw)
    test_loss, test_err = evaluate(res.model, data["test_x"], data["test_y"], **kw)
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
        status = "diverged"
    out = {"steps": res.steps, "epochs": res.steps * cfg.batch_size / n,
           "status": status, "train_error": train_err, "test_error": test_err,
           "train_loss": train_loss, "test_loss": test_loss}
    if data.get("val_x") is not None:
        out["val_loss"], out["val_error"] = evaluate(res.model, data["val_x"], data["val_y"],
                                                     **kw)
    return out


def equal_steps_budget(n: int, batch_sizes: Sequence[int], epochs: int) -> int:
    """The equal-steps budget: the steps the smallest batch takes in ``epochs`` epochs,
    ``epochs · ⌈N / B_min⌉``, so that every batch size gets as many updates as the smallest
    one needs to converge (larger batches then see proportionally more examples)."""
    from sgdnoise.train import steps_per_epoch

    return check_positive_int("epochs", epochs) * steps_per_epoch(n, min(batch_sizes))


def run_grid_jobs(
    cfg: Any, data: Any, jobs: Sequence[tuple[str, int, float]], seeds: Sequence[int], *,
    epochs: int, batch_sizes: Sequence[int] | None = None, progress: Any = None,
) -> pd.DataFrame:
    """Train every (budget, B, η) of ``jobs`` at every seed, with the recipe ``cfg`` (see
    :func:`grid_config`; no scaling rule: each job's η is used as given).

    "equal epochs" runs ``epochs`` epochs; "equal steps" runs
    :func:`equal_steps_budget` steps (of ``batch_sizes``, default the jobs' batch sizes).
    A run shared by both budgets (the smallest B, whose equal-steps run *is* its
    equal-epochs run) is trained once. Seeds set the initialisation and the batch order.
    One row per (job, seed): budget, batch_size, lr, lr_batch_ratio (η/B), seed, steps,
    epochs, status, final train/test (and validation) error and loss, gap (test − train
    error)."""
    from sgdnoise.train import steps_per_epoch

    check_positive_int("epochs", epochs)
    n = int(data["train_x"].shape[0])
    sizes = batch_sizes if batch_sizes is not None else [b for _, b, _ in jobs]
    s_equal = equal_steps_budget(n, sizes, epochs)
    todo = [(bud, int(b), float(lr), int(sd)) for bud, b, lr in jobs for sd in seeds]
    cache: dict[tuple[int, float, int, int], dict[str, Any]] = {}
    rows = []
    for bud, b, lr, sd in progress(todo) if progress is not None else todo:
        steps = epochs * steps_per_epoch(n, b) if bud == BUDGETS[0] else s_equal
        key = (b, round(lr, 12), sd, steps)
        if key not in cache:
            c = replace(cfg, batch_size=b, lr=lr, lr_scaling="none", seed=sd, epochs=epochs)
            cache[key] = train_for_budget(c, data, steps=steps)
        r = cache[key]
        rows.append({"budget": bud, "batch_size": b, "lr": lr, "lr_batch_ratio": lr / b,
                     "seed": sd, **r, "gap": r["test_error"] - r["train_error"]})
    return pd.DataFrame(rows)


def batch_lr_grid(
    cfg: Any, data: Any, batch_sizes: Sequence[int], lrs: Sequence[float],
    seeds: Sequence[int], *, epochs: int, progress: Any = None,
) -> pd.DataFrame:
    """Every (budget, B, η, seed) of a grid (:func:`run_grid_jobs` on the full product of
    :data:`BUDGETS`, ``batch_sizes`` and ``lrs``)."""
    jobs = [(bud, int(b), float(lr)) for bud in BUDGETS for b in batch_sizes for lr in lrs]
    return run_grid_jobs(cfg, data, jobs, seeds, epochs=epochs, batch_sizes=batch_sizes,
                         progress=progress)


def best_lr_per_batch(grid: pd.DataFrame, *, metric: str | None = None) -> pd.DataFrame:
    """For each (budget, B): the learning rate with the lowest mean ``metric`` over seeds
    (diverged runs count as error 1 / loss ∞), that mean, the mean test and train error at
    that η, and whether the best η sits at an edge of the grid (then the grid does not
    bracket that B's best η and a wider grid could do better).

    ``metric`` None chooses on "val_error" when the grid has a validation column (the test
    set then plays no part in the choice) and on "test_error" otherwise. Columns: budget,
    batch_size, best_lr, selected_on (the metric), mean (of it at best_lr), test_error,
    train_error (means at best_lr), at_edge, lrs_tried."""
    if metric is None:
        metric = "val_error" if "val_error" in grid.columns else "test_error"
    if metric not in grid.columns:
        raise ValueError(f"metric must be a column of grid {sorted(grid.columns)}, got {metric!r}")
    g = grid.copy()
    bad = g["status"] != "finished"
    cols = list(dict.fromkeys(c for c in (metric, "test_error", "train_error")
                              if c in g.columns))
    for col in cols:
        g.loc[bad, col] = 1.0 if "error" in col else math.inf
    rows = []
    for (bud, b), sub in g.groupby(["budget", "batch_size"], sort=True):
        means = sub.groupby("lr")[cols].mean().sort_index()
        best = float(means[metric].idxmin())
        lrs = list(means.index)
        rows.append({"budget": bud, "batch_size": int(b), "best_lr": best,
                     "selected_on": metric, "mean": float(means[metric].min()),
                     "test_error": float(means.loc[best, "test_error"]),
                     "train_error": float(means.loc[best, "train_error"])
                     if "train_error" in cols else math.nan,
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


def evaluation_jobs(best: pd.DataFrame, *, lr_fixed: float) -> list[tuple[str, int, float]]:
    """The runs the verdicts compare, for the smallest and the largest B of ``best``
    (:func:`best_lr_per_batch` of the selection grid): in each budget both at their best η;
    at equal epochs both at ``lr_fixed``, and the largest at the linearly scaled
    ``lr_fixed · B_max/B_min`` (the same η/B as the smallest at ``lr_fixed``). No
    duplicates, in a fixed order."""
    small, large = int(best.batch_size.min()), int(best.batch_size.max())
    jobs: list[tuple[str, int, float]] = []
    for bud in BUDGETS:
        for b in (small, large):
            row = best[(best.budget == bud) & (best.batch_size == b)]
            jobs.append((bud, b, float(row["best_lr"].iloc[0])))
    jobs += [(BUDGETS[0], small, lr_fixed), (BUDGETS[0], large, lr_fixed),
             (BUDGETS[0], large, lr_fixed * large / small)]
    out: list[tuple[str, int, float]] = []
    for job in jobs:
        if not any(j[:2] == job[:2] and math.isclose(j[2], job[2]) for j in out):
            out.append(job)
    return out


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
    select_seeds: tuple[int, ...] = param(low=0, min_len=1, doc="seeds of the selection "
                                          "grid, on whose validation error each B's best η "
                                          "is chosen")
    grid_seeds: tuple[int, ...] = param(low=0, min_len=2, doc="evaluation seeds, disjoint "
                                        "from the selection seeds, on which the verdicts "
                                        "compare batch sizes")
    grid_epochs: int = param(low=1, doc="budget of the equal-epochs arm; the equal-steps arm "
                             "runs the steps the smallest B takes in it")
    fit_error: float = param(low=0.0, high=1.0, doc="a run has converged when its final "
                             "training error is at most this (mean over seeds)")
    noise_seeds: tuple[int, ...] = param(low=0, min_len=1, doc="seeds of the critical-batch "
                                         "comparison (tracked run and steps sweep per seed)")
    n_sim: int = param(low=100, doc="simulated data sets per scenario for the error rates")
    trace_z_max: float = param(low=0.0, doc="largest |z| of Monte Carlo against formula "
                               "still counted as agreement")
    noise_scale_factor: float = param(low=1.0, doc="B_noise and B_simple 'agree' within "
                                      "this factor")
    gap_margin: float = param(low=1e-4, high=1.0, doc="equivalence margin of a test-error "
                              "difference (TOST)")
    alpha: float = param(low=1e-4, high=0.25, doc="level of the TOST and difference tests")
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
        self.require(not set(self.select_seeds) & set(self.grid_seeds), "select_seeds",
                     f"must not share a seed with grid_seeds = {list(self.grid_seeds)} (the "
                     "learning rate is chosen on other seeds than those evaluated)")
        linear = self.gen_base_lr * max(self.grid_batch_sizes) / min(self.grid_batch_sizes)
        self.require(any(math.isclose(linear, v) for v in self.grid_lrs)
                     and max(self.grid_lrs) > linear * (1 + 1e-9), "grid_lrs",
                     f"must contain the linearly scaled {linear:g} (gen_base_lr at the "
                     "largest grid batch size) and a larger value")
        if self.profile != "smoke":
            self.require(len(self.grid_seeds) >= 3, "grid_seeds",
                         "needs >= 3 seeds outside the smoke profile (intervals)")
            self.require(len(self.noise_seeds) >= 3, "noise_seeds",
                         "needs >= 3 seeds outside the smoke profile (intervals)")
            self.require(len(self.grid_batch_sizes) >= 3, "grid_batch_sizes",
                         "needs >= 3 batch sizes outside the smoke profile")
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
    above, inconclusive if none is finite. A derivation check."""
    claim = (r"The trace of the mini-batch gradient covariance is $\operatorname{tr} D/B$ "
             r"(times $(N - B)/(N - 1)$ without replacement).")
    zf = np.asarray([v for v in z if np.isfinite(v)], dtype=float)
    sentence = (f"With replacement the Monte Carlo traces follow a power law of slope "
                f"{slope:.2f} ± {slope_se:.2f} (theory −1); ")
    kind = KINDS[1]
    if zf.size == 0:
        return Verdict(claim, "inconclusive", sentence + "no z-score could be computed.",
                       scale, SECTION_TRACE, kind=kind)
    zmax = float(np.abs(zf).max())
    sentence += (f"the largest z-score in absolute value against the trace formula over "
                 f"both schemes is {zmax:.2f} (with {samples} samples; agreement means at "
                 f"most {z_max:g}).")
    return Verdict(claim, "supported" if zmax <= z_max else "contradicted", sentence, scale,
                   SECTION_TRACE, kind=kind)


B_SIMPLE = r"$B_{\rm simple}$"
B_NOISE = r"$B_{\rm noise}$"
B_SIMPLE_DEF = r"$B_{\rm simple} = \operatorname{tr} D / \lVert \bar g \rVert^2$"

DIFF_LABELS = ("equivalent", "higher", "lower", "undecided")


def difference_codes(d: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """Classify paired differences ``d: (..., n)`` (NaN: missing) into codes of
    :data:`DIFF_LABELS`: 0 "equivalent" (two one-sided tests at level α put the mean inside
    ±``margin``, i.e. TOST), else 1 "higher" / 2 "lower" (the one-sided test against 0 at
    α/2 rejects on that side, i.e. the (1 − α) interval excludes 0), else 3 "undecided".
    Returns ``(...)`` integers."""
    from sgdnoise.decide.pvalues import one_sided

    d = np.asarray(d, dtype=float)
    inside = ((one_sided(d, -margin).p_greater <= alpha)
              & (one_sided(d, margin).p_less <= alpha))
    zero = one_sided(d, 0.0)
    return np.where(inside, 0, np.where(zero.p_greater <= alpha / 2, 1,
                                        np.where(zero.p_less <= alpha / 2, 2, 3)))


def classify_difference(diffs: Sequence[float], margin: float, alpha: float) -> str:
    """One set of paired differences classified by :func:`difference_codes`."""
    return DIFF_LABELS[int(difference_codes(np.asarray(diffs, dtype=float), margin, alpha))]


def band_codes(d: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """``d: (..., n)``: 0 when TOST puts the mean inside ±``margin`` at level α, 1 when a
    one-sided test at α/2 puts it outside (above +margin or below −margin), 3 otherwise."""
    from sgdnoise.decide.pvalues import one_sided

    d = np.asarray(d, dtype=float)
    inside = ((one_sided(d, -margin).p_greater <= alpha)
              & (one_sided(d, margin).p_less <= alpha))
    outside = ((one_sided(d, margin).p_greater <= alpha / 2)
               | (one_sided(d, -margin).p_less <= alpha / 2))
    return np.where(inside, 0, np.where(outside, 1, 3))


def _label(codes: np.ndarray, table: dict[int, str]) -> np.ndarray:
    out = np.full(np.shape(codes), "inconclusive", dtype=object)
    for code, label in table.items():
        out[np.asarray(codes) == code] = label
    return out


def epoch_rule(batch: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """The equal-epochs rule on ``batch: (..., 2, n)`` (fixed-η and tuned-η differences):
    supported when the fixed-η difference is higher and the tuned one equivalent or lower;
    mixed when both are higher; contradicted when the fixed-η one is equivalent or lower;
    inconclusive otherwise."""
    b = np.asarray(batch, dtype=float)
    cf = difference_codes(b[..., 0, :], margin, alpha)
    ct = difference_codes(b[..., 1, :], margin, alpha)
    code = np.where((cf == 1) & ((ct == 0) | (ct == 2)), 0,
                    np.where((cf == 1) & (ct == 1), 2, np.where((cf == 0) | (cf == 2), 1, 3)))
    return _label(code, {0: "supported", 1: "contradicted", 2: "mixed"})


def no_worse_rule(batch: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """``batch: (..., 1, n)``: supported when equivalent or lower, contradicted when
    higher (:func:`difference_codes`)."""
    c = difference_codes(np.asarray(batch, dtype=float)[..., 0, :], margin, alpha)
    return _label(c, {0: "supported", 2: "supported", 1: "contradicted"})


def alike_rule(batch: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """``batch: (..., 1, n)``: supported when equivalent within ±``margin``, contradicted
    when a one-sided test puts the mean outside the band (:func:`band_codes`)."""
    c = band_codes(np.asarray(batch, dtype=float)[..., 0, :], margin, alpha)
    return _label(c, {0: "supported", 1: "contradicted"})


def _spread(values: np.ndarray, floor: float) -> float:
    """Sample standard deviation of the finite ``values``, at least ``floor`` (``floor``
    with fewer than two)."""
    v = values[np.isfinite(values)]
    return max(float(v.std(ddof=1)), floor) if v.size > 1 else floor


def rule_rates(
    rule: Any, observed: Sequence[Sequence[float]], *, false_means: Sequence[Sequence[float]],
    true_means: Sequence[float], sd_floor: float, n_sim: int, seed: int, conditions: str,
) -> SeedRates:
    """Error rates of a rule on ``(..., C, n)`` batches, measured with
    :func:`sgdnoise.decide.harness.error_rates`: each component's ``n`` seeds are drawn
    ``N(μ_c, s_c²)`` with ``s_c`` the sample standard deviation of ``observed[c]`` (at least
    ``sd_floor``). The false-positive rate is the largest rate of "supported" over the
    scenarios ``false_means`` (truths where the claim is false, at its boundary); the power
    the rate of "supported" under ``true_means``."""
    from sgdnoise.decide.harness import Scenario, error_rates, rate_of

    obs = [np.asarray(o, dtype=float) for o in observed]
    n = obs[0].size
    sd = np.array([_spread(o, sd_floor) for o in obs])

    def draws(mu: Sequence[float]) -> Any:
        m = np.asarray(mu, dtype=float)

        def simulate(k: int, rng: np.random.Generator) -> np.ndarray:
            return m[:, None] + sd[:, None] * rng.standard_normal((k, m.size, n))
        return simulate

    scen = [Scenario(f"false {i}", "", draws(m)) for i, m in enumerate(false_means)]
    scen.append(Scenario("true", "", draws(true_means)))
    rates = error_rates(rule, scen, n_sim=n_sim, seed=seed)
    fp = max(rate_of(rates, s.name, "supported").rate for s in scen[:-1])
    cond = (f"seed-to-seed standard deviations {', '.join(f'{s:.3f}' for s in sd)}; "
            + conditions)
    return SeedRates(fp, rate_of(rates, "true", "supported").rate, n, n_sim, cond)


def _interval(diffs: Sequence[float], alpha: float, digits: int = 3) -> str:
    iv: Interval = t_interval(diffs, 1 - alpha)
    if not iv.defined:
        return f"{iv.estimate:.{digits}f} (one seed, no interval)"
    return f"{iv.estimate:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def _gate(edges: Sequence[str], train_errors: dict[str, float], fit_error: float) -> str:
    """Why a comparison cannot be decided (empty when it can): a best η at the grid's edge,
    or a run whose mean final training error is above ``fit_error``."""
    reasons = []
    if edges:
        reasons.append("the best learning rate of " + " and ".join(edges) + " sits at an "
                       "edge of the grid, so a wider grid might do better there")
    slow = [k for k, v in train_errors.items() if not v <= fit_error]
    if slow:
        reasons.append(" and ".join(slow) + f" did not reach a training error of "
                       f"{fit_error:g} (not converged)")
    return "; ".join(reasons)


def _fit_text(train_errors: dict[str, float]) -> str:
    return ("Training error reached (mean over seeds): "
            + "; ".join(f"{k}: {v:.3f}" for k, v in train_errors.items()) + ".")


def _attach(v: Verdict, rates: SeedRates | None) -> Verdict:
    return rates.attach(v) if rates is not None else v


EPOCH_CLAIM = ("At a fixed epoch budget larger batches end with higher test error unless the "
               "learning rate is scaled with $B$.")


def verdict_epoch_budget(
    fixed: Sequence[float], tuned: Sequence[float], *, small: int, large: int,
    lr_fixed: float, best_small: float, best_large: float, edges: Sequence[str],
    train_errors: dict[str, float], fit_error: float, margin: float, alpha: float,
    scale: str, fixed_train_errors: dict[str, float] | None = None,
    rates: SeedRates | None = None,
) -> Verdict:
    """:func:`epoch_rule` on the per-seed test-error differences (large − small B) at the
    same η (``fixed``) and at each B's best η chosen on validation seeds (``tuned``).
    Inconclusive before any test when a best η sits at the grid's edge (``edges`` names
    those batch sizes) or a run at the best η has not converged (``train_errors`` above
    ``fit_error``: the generalization gap is measured at the tuned η). The runs at the same
    η are not gated: at equal epochs the large batch takes fewer steps, and how far it
    got is part of the claim; their training errors (``fixed_train_errors``) are stated.
    A claim about SGD."""
    sentence = (
        f"Test error of $B = {large}$ minus $B = {small}$, mean over seeds with its "
        f"{1 - alpha:.0%} interval: at the same $\\eta = {lr_fixed:g}$, "
        f"{_interval(fixed, alpha)}, {classify_difference(fixed, margin, alpha)}; at each "
        f"batch size's best $\\eta$ ({best_small:g} and {best_large:g}), "
        f"{_interval(tuned, alpha)}, {classify_difference(tuned, margin, alpha)} "
        f"(equivalent: within ±{margin:g} by two one-sided tests). "
        + _fit_text({**(fixed_train_errors or {}), **train_errors}))
    why = _gate(edges, train_errors, fit_error)
    if why:
        return _attach(Verdict(EPOCH_CLAIM, "inconclusive", sentence + f" Not decided: {why}.",
                               scale, SECTION_GRID), rates)
    outcome = str(epoch_rule(np.stack([fixed, tuned])[None], margin, alpha)[0])
    return _attach(Verdict(EPOCH_CLAIM, outcome, sentence, scale, SECTION_GRID), rates)


STEPS_CLAIM = ("Given the same number of steps and a tuned learning rate, larger batches are "
               "no worse: the deficit at equal epochs is one of steps.")


def verdict_equal_steps(
    tuned_steps: Sequence[float], *, small: int, large: int, edges: Sequence[str],
    train_errors: dict[str, float], fit_error: float, margin: float, alpha: float,
    scale: str, rates: SeedRates | None = None,
) -> Verdict:
    """:func:`no_worse_rule` on the per-seed test-error differences (large − small B) at
    equal steps and each B's best η, behind the same edge and convergence gates as
    :func:`verdict_epoch_budget`. A claim about SGD."""
    sentence = (f"At equal steps, test error of $B = {large}$ minus $B = {small}$ at each "
                f"one's best $\\eta$: {_interval(tuned_steps, alpha)}, "
                f"{classify_difference(tuned_steps, margin, alpha)} (margin ±{margin:g}). "
                + _fit_text(train_errors))
    why = _gate(edges, train_errors, fit_error)
    if why:
        return _attach(Verdict(STEPS_CLAIM, "inconclusive", sentence + f" Not decided: {why}.",
                               scale, SECTION_GRID), rates)
    outcome = str(no_worse_rule(np.asarray(tuned_steps, dtype=float)[None, None], margin,
                                alpha)[0])
    return _attach(Verdict(STEPS_CLAIM, outcome, sentence, scale, SECTION_GRID), rates)


RATIO_CLAIM = ("Runs that share the learning-rate/batch ratio $\\eta/B$ end alike at a fixed "
               "epoch budget: $\\eta/B$ is what matters, as the SDE says.")


def verdict_lr_batch_ratio(
    diffs: Sequence[float], *, small: int, large: int, lr_small: float, lr_large: float,
    train_errors: dict[str, float], fit_error: float, margin: float, alpha: float,
    scale: str, rates: SeedRates | None = None,
) -> Verdict:
    """:func:`alike_rule` on the per-seed test-error differences between the largest B at
    the linearly scaled η and the smallest B at η (the same η/B), at equal epochs;
    inconclusive when a run has not converged. A diverged run counts as error 1, so a
    linearly scaled η that diverges contradicts the claim. A claim about SGD."""
    sentence = (f"Test error of $B = {large}$ at $\\eta = {lr_large:g}$ minus $B = {small}$ "
                f"at $\\eta = {lr_small:g}$ (the same $\\eta/B$), mean over seeds with its "
                f"{1 - alpha:.0%} interval: {_interval(diffs, alpha)} (alike: within "
                f"±{margin:g} by two one-sided tests; different: outside it). "
                + _fit_text(train_errors))
    why = _gate([], train_errors, fit_error)
    if why:
        return _attach(Verdict(RATIO_CLAIM, "inconclusive", sentence + f" Not decided: {why}.",
                               scale, SECTION_RATIO), rates)
    outcome = str(alike_rule(np.asarray(diffs, dtype=float)[None, None], margin, alpha)[0])
    return _attach(Verdict(RATIO_CLAIM, outcome, sentence, scale, SECTION_RATIO), rates)


NOISE_CLAIM = (f"The gradient noise scale {B_SIMPLE_DEF} predicts the critical batch size "
               f"{B_NOISE} beyond which larger batches stop saving steps.")


def verdict_noise_scale(
    seeds: pd.DataFrame, target_error: float, *, factor: float, alpha: float, scale: str,
    rates: SeedRates | None = None,
) -> Verdict:
    """:func:`alike_rule` on ``ln(B_noise/B_simple)`` over seeds (rows of
    :func:`noise_scale_seeds`) with the band ±ln ``factor``: supported when the ratio lies
    within a factor ``factor`` of 1, contradicted when outside it. Inconclusive when fewer
    than two seeds have a fit, or a tracked run never reached ``target_error`` (its
    :math:`B_{\\rm simple}` would describe another stage of training). A claim about SGD."""
    ok = seeds[np.isfinite(seeds["b_noise"])]
    if len(ok) < 2:
        few = "No seed" if ok.empty else "Only one seed"
        return _attach(Verdict(NOISE_CLAIM, "inconclusive", f"{few} gave a fit of steps "
                               "against batch size; an interval needs two.", scale,
                               SECTION_NOISE_SCALE), rates)
    log_ratio = np.log(ok["b_noise"] / ok["b_simple"]).to_numpy()
    iv = t_interval(log_ratio, 1 - alpha)
    sentence = (f"Over {len(ok)} seeds, $B_{{\\rm noise}}$ from the fit of steps to training "
                f"error {target_error:g} is {ok['b_noise'].mean():.0f} on average and "
                f"{B_SIMPLE_DEF} at that training error is {ok['b_simple'].mean():.0f}; their "
                f"ratio is {math.exp(iv.estimate):.2f} ({1 - alpha:.0%} interval "
                f"{math.exp(iv.low):.2f} to {math.exp(iv.high):.2f}; agreement: within a "
                f"factor {factor:g}, by two one-sided tests on the logarithm).")
    if not bool(ok["reached"].all()):
        return _attach(Verdict(NOISE_CLAIM, "inconclusive", sentence + " A tracked run never "
                               f"reached training error {target_error:g}, so its "
                               f"{B_SIMPLE} describes another stage of training.", scale,
                               SECTION_NOISE_SCALE), rates)
    outcome = str(alike_rule(log_ratio[None, None], math.log(factor), alpha)[0])
    return _attach(Verdict(NOISE_CLAIM, outcome, sentence, scale, SECTION_NOISE_SCALE), rates)


# --------------------------------------------------------------------------- error rates


def epoch_rates(fixed: Sequence[float], tuned: Sequence[float], *, margin: float,
                alpha: float, n_sim: int, seed: int) -> SeedRates:
    """Error rates of :func:`epoch_rule` at the measured spread: false positives under "no
    deficit at the same η" (both differences 0) and under "tuning leaves the deficit"
    (tuned difference at +margin); power with a fixed-η deficit (the measured mean, at
    least twice the margin) that tuning removes (tuned difference 0)."""
    deficit = max(float(np.nanmean(fixed)), 2 * margin)
    return rule_rates(lambda b: epoch_rule(b, margin, alpha), [fixed, tuned],
                      false_means=[(0.0, 0.0), (deficit, margin)],
                      true_means=(deficit, 0.0), sd_floor=margin / 10, n_sim=n_sim,
                      seed=seed, conditions=(
                          f"false positive: no deficit at the same learning rate, or a deficit of "
                          f"{deficit:.3f} that tuning leaves at the margin; power: a deficit "
                          f"of {deficit:.3f} that tuning removes"))


def boundary_rates(rule: Any, diffs: Sequence[float], *, margin: float, n_sim: int,
                   seed: int, unit: str) -> SeedRates:
    """Error rates of a one-component rule (:func:`no_worse_rule`, :func:`alike_rule`):
    false positive with the true mean at +``margin`` (the claim's boundary), power with
    the true mean 0."""
    return rule_rates(rule, [diffs], false_means=[(margin,)], true_means=(0.0,),
                      sd_floor=margin / 10, n_sim=n_sim, seed=seed, conditions=(
                          f"false positive: a true difference of {margin:.3g} {unit}; power: "
                          f"no difference"))


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


def build_net(P: Params, in_shape: tuple[int, ...], seed: int | None = None) -> nn.Module:
    """The chapter's network, initialised after ``torch.manual_seed(seed)`` (default
    ``P.seed``)."""
    from sgdnoise.models import build_model

    torch.manual_seed(P.seed if seed is None else seed)
    return build_model(P.model, in_shape=in_shape, width=P.width,
                       norm="group" if P.model == "cnn" else "none")


def noise_scale_seeds(P: Params, data: dict[str, Any], base: Any, *,
                      progress: Any = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per seed of ``P.noise_seeds``: one tracked run (:class:`~sgdnoise.train.noise_scale.
    NoiseScaleTracker`, B_simple on the whole training set each epoch) and one steps sweep
    (:func:`steps_sweep`, square-root-scaled η with multipliers) fitted by
    :func:`fit_steps_vs_batch`. Returns (per seed: seed, b_simple and its epoch,
    train_error and reached of :func:`b_simple_at_target`, b_noise, s_min, e_min, rmse_log,
    batch sizes fitted (NaN fit with fewer than 3); the tracked records; the best run per
    (seed, B) of the sweeps)."""
    from sgdnoise.data import to_float
    from sgdnoise.train import train
    from sgdnoise.train.noise_scale import NoiseScaleTracker

    x, y = to_float(data["train_x"]), data["train_y"]
    in_shape = tuple(data["train_x"].shape[1:])
    rows, tracks, bests = [], [], []
    for sd in progress(P.noise_seeds) if progress is not None else P.noise_seeds:
        net = build_net(P, in_shape, seed=sd)
        tracker = NoiseScaleTracker(net, x, y, label=f"seed {sd}")
        tcfg = replace(base, batch_size=P.track_batch_size, lr=P.track_lr,
                       epochs=P.track_epochs, seed=sd)
        train(tcfg, data, model=net, on_epoch=tracker, progress=False)
        track = tracker.frame().assign(seed=sd)
        at = b_simple_at_target(track, P.target_error)
        scfg = replace(base, lr=P.steps_base_lr, lr_scaling="sqrt",
                       base_batch_size=P.steps_base_batch, epochs=P.steps_max_epochs, seed=sd)
        sweep = steps_sweep(scfg, data, P.steps_batch_sizes, P.target_error,
                            lr_multipliers=P.steps_lr_multipliers,
                            eval_every_examples=P.eval_every_examples)
        best = sweep[sweep.best].sort_values("batch_size").assign(seed=sd)
        fit = (fit_steps_vs_batch(best.batch_size, best.steps) if len(best) >= 3 else
               dict.fromkeys(("s_min", "b_noise", "e_min", "rmse_log"), math.nan) | {"n": 0})
        rows.append({"seed": sd, **at, **fit})
        tracks.append(track)
        bests.append(best)
    return pd.DataFrame(rows), pd.concat(tracks), pd.concat(bests)


def rule_deltas(final: pd.DataFrame) -> tuple[int, int, dict[str, float]]:
    """Test-error change from the smallest to the largest B of :func:`generalization_sweep`,
    per scaling rule: (B_min, B_max, {rule: Δ})."""
    piv = final.pivot_table(index="batch_size", columns="rule", values="test_error")
    bmin, bmax = int(piv.index.min()), int(piv.index.max())
    return bmin, bmax, {r: float(piv.loc[bmax, r] - piv.loc[bmin, r]) for r in piv.columns}


def mean_train_error(runs: pd.DataFrame, budget: str, batch_size: int, lr: float) -> float:
    """Mean final training error over seeds of one (budget, B, η) of a grid frame (a
    diverged run counts as 1)."""
    sub = runs[(runs.budget == budget) & (runs.batch_size == batch_size)
               & np.isclose(runs.lr, lr)]
    if sub.empty:
        raise ValueError(f"no run at budget {budget!r}, B={batch_size}, lr={lr}")
    return float(np.where(sub.status == "finished", sub.train_error, 1.0).mean())


def grid_evidence(selection: pd.DataFrame, evaluation: pd.DataFrame,
                  lr_fixed: float) -> dict[str, Any]:
    """What the verdicts read: each B's best η from the ``selection`` grid (validation
    error on the selection seeds, :func:`best_lr_per_batch`), and from the ``evaluation``
    runs (:func:`evaluation_jobs` on other seeds) the per-seed differences (large − small
    B) at ``lr_fixed`` ("fixed"), at the best η ("tuned", "tuned_steps") and at the same
    η/B ("ratio"); the mean training error each compared run reached ("fit_fixed",
    "fit_epochs", "fit_steps", "fit_ratio": {run in words: error}); the batch sizes whose
    best η sits at the grid's edge per budget ("edges_epochs", "edges_steps", in words);
    the slope of the best η against B and ``selected_on`` (the selection metric, in words)."""
    best = best_lr_per_batch(selection)
    small, large = int(best.batch_size.min()), int(best.batch_size.max())
    ep, st = BUDGETS

    def lr(bud: str, b: int) -> float:
        return float(best[(best.budget == bud) & (best.batch_size == b)]["best_lr"].iloc[0])

    def fit(bud: str, pairs: Sequence[tuple[int, float]]) -> dict[str, float]:
        return {f"$B = {b}$ at $\\eta = {v:g}$": mean_train_error(evaluation, bud, b, v)
                for b, v in pairs}

    def edges(bud: str) -> list[str]:
        e = best[(best.budget == bud) & best.at_edge & best.batch_size.isin([small, large])]
        return [f"$B = {int(b)}$" for b in e.batch_size]

    lr_ratio = lr_fixed * large / small
    ee = best[best.budget == ep]
    return {
        "small": small, "large": large, "best": best, "lr_ratio": lr_ratio,
        "selected_on": ("validation error" if best["selected_on"].iloc[0] == "val_error"
                        else "test error"),
        "best_small": lr(ep, small), "best_large": lr(ep, large),
        "fixed": batch_gap(evaluation, ep, small, large, lr_fixed, lr_fixed),
        "tuned": batch_gap(evaluation, ep, small, large, lr(ep, small), lr(ep, large)),
        "tuned_steps": batch_gap(evaluation, st, small, large, lr(st, small), lr(st, large)),
        "ratio": batch_gap(evaluation, ep, small, large, lr_fixed, lr_ratio),
        "fit_fixed": fit(ep, [(small, lr_fixed), (large, lr_fixed)]),
        "fit_epochs": fit(ep, [(small, lr(ep, small)), (large, lr(ep, large))]),
        "fit_steps": fit(st, [(small, lr(st, small)), (large, lr(st, large))]),
        "fit_ratio": fit(ep, [(small, lr_fixed), (large, lr_ratio)]),
        "edges_epochs": edges(ep), "edges_steps": edges(st),
        "slope": best_lr_slope(ee)["slope"],
    }
