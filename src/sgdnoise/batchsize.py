"""Chapter-6 computations: batch size, noise temperature and the gradient noise scale.

Notation: N examples, per-example gradients g_i with mean ḡ and covariance
D = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ; a mini-batch of size B has Cov(g_B) = D/B (with
replacement). Learning rate η.

- :func:`scaled_lr`, :func:`noise_temperature`: the linear / square-root scaling rules and
  the SDE temperature η/B (Smith & Le's g = η(N/B − 1) ≈ ηN/B).
- :func:`quadratic_step_model`: the optimal step of a noisy quadratic model (McCandlish et
  al. 2018): ε_opt(B) = ε_max / (1 + B_noise/B), B_noise = tr(HΣ)/ḡᵀHḡ,
  B_simple = tr Σ / ‖ḡ‖².
- :func:`noise_scale_of_model`: B_simple of a network on a data set, chunked (no N × P
  matrix kept), and :class:`NoiseScaleTracker` to record it along training.
- :func:`steps_to_target`, :func:`steps_sweep`, :func:`fit_steps_vs_batch`: steps to reach a
  target training error with the training engine, and the fit S(B) = S_min (1 + B_noise/B).
- :func:`generalization_sweep`, :func:`temperature_groups`: final train/test error at a fixed
  epoch budget under constant, linear and square-root learning-rate scaling.
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

from sgdnoise._validate import check_choice, check_matrix, check_positive, check_positive_int

__all__ = [
    "NoiseScaleTracker",
    "b_simple_at_target",
    "QuadraticStep",
    "StepsResult",
    "expected_quadratic_decrease",
    "fit_steps_vs_batch",
    "generalization_sweep",
    "noise_scale_of_model",
    "noise_temperature",
    "pooled_image_data",
    "quadratic_step_model",
    "scaled_lr",
    "steps_sweep",
    "steps_to_target",
    "temperature_groups",
]

DT = torch.float64
RULES = ("none", "linear", "sqrt")


# --------------------------------------------------------------------------- scaling rules


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """η(B) = η₀ · s, s = 1 ("none"), B/B₀ ("linear": keeps η/B, the SDE temperature), or
    √(B/B₀) ("sqrt": keeps η²/B, the covariance η²D/B of one update)."""
    base_lr = check_positive("base_lr", base_lr)
    b = check_positive_int("batch_size", batch_size)
    b0 = check_positive_int("base_batch_size", base_batch_size)
    rule = check_choice("rule", rule, RULES)
    if rule == "linear":
        return base_lr * b / b0
    if rule == "sqrt":
        return base_lr * math.sqrt(b / b0)
    return base_lr


def noise_temperature(lr: float, batch_size: int, n: int | None = None) -> float:
    """η/B, or with ``n`` the Smith & Le noise scale g = η(N/B − 1) (sampling without
    replacement; ≈ ηN/B for B ≪ N)."""
    lr = check_positive("lr", lr)
    b = check_positive_int("batch_size", batch_size)
    if n is None:
        return lr / b
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


def noise_scale_of_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    chunk_size: int = 256,
) -> dict[str, float]:
    """B_simple = tr D / ‖ḡ‖² of ``model`` on (x, y) for the cross-entropy loss, in chunks.

    Per-example gradients G_c: (n_c, P) of each chunk are reduced at once to Σ‖g_i‖² and
    Σ g_i (float64), so memory is O(chunk_size · P): tr D = (1/N) Σ‖g_i‖² − ‖ḡ‖².
    Returns {"b_simple", "trace_D", "grad_norm_sq", "n"}."""
    from sgdnoise.grads import per_example_grads

    chunk = check_positive_int("chunk_size", chunk_size)
    n = int(x.shape[0])
    sq = 0.0
    total = None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, chunk):
            Gc = per_example_grads(model, nn.functional.cross_entropy, x[start:start + chunk],
                                   y[start:start + chunk]).to(DT)
            sq += float((Gc * Gc).sum())
            s = Gc.sum(0)
            total = s if total is None else total + s
    finally:
        model.train(was_training)
    gbar = total / n
    g2 = float(gbar @ gbar)
    tr = max(sq / n - g2, 0.0)
    return {"b_simple": tr / g2 if g2 > 0 else math.inf, "trace_D": tr, "grad_norm_sq": g2,
            "n": n}


class NoiseScaleTracker:
    """An ``on_epoch`` callback for :func:`sgdnoise.train.train` that records B_simple of
    ``model`` (the very module being trained: pass it to ``train(..., model=model)``) on the
    probe set (x: float inputs, y) after each evaluation, every ``every`` epochs.

    ``rows``: list of dicts (epoch, step, train_error, test_error, train_loss, b_simple,
    trace_D, grad_norm_sq); ``frame()`` gives them as a DataFrame."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, every: int = 1,
                 chunk_size: int = 256, label: str = "") -> None:
        self.model, self.x, self.y = model, x, y
        self.every = check_positive_int("every", every)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.label = label
        self.rows: list[dict[str, Any]] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        if int(rec["epoch"]) % self.every:
            return
        x = self.x.to(next(self.model.parameters()).dtype)
        ns = noise_scale_of_model(self.model, x, self.y, chunk_size=self.chunk_size)
        row = {k: rec[k] for k in ("epoch", "step", "train_loss", "train_error", "test_error")}
        row.update({k: ns[k] for k in ("b_simple", "trace_D", "grad_norm_sq")})
        row["run"] = self.label
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def b_simple_at_target(track: pd.DataFrame, target_error: float) -> dict[str, Any]:
    """B_simple of a tracked run (rows of :class:`NoiseScaleTracker`) at the first record
    whose train error is ≤ ``target_error``, or at the last record if none is.

    Returns {"b_simple", "epoch", "reached" (bool), "train_error"} of that record."""
    target_error = check_positive("target_error", target_error, allow_zero=True)
    if len(track) == 0:
        raise ValueError("track must hold at least one record, got an empty frame")
    hit = track[track["train_error"] <= target_error]
    row = hit.iloc[0] if len(hit) else track.iloc[-1]
    return {"b_simple": float(row["b_simple"]), "epoch": int(row["epoch"]),
            "reached": bool(len(hit)), "train_error": float(row["train_error"])}


# --------------------------------------------------------------------------- data


def pooled_image_data(data: Any, image_size: int) -> dict[str, Any]:
    """Average-pool the uint8 images of an ImageData to image_size² pixels (rounded back to
    uint8), so that small models train fast on CPU. Returns a dict the engine accepts
    (train_x, train_y, test_x, test_y) plus "identity" (a dict noting the pooling)."""
    image_size = check_positive_int("image_size", image_size)
    side = int(data.train_x.shape[-1])
    if side % image_size:
        raise ValueError(f"image_size must divide {side}, got {image_size}")

    def pool(x: Tensor) -> Tensor:
        if image_size == side:
            return x.clone()
        f = nn.functional.avg_pool2d(x.to(torch.float32), side // image_size)
        return f.round().clamp(0, 255).to(torch.uint8)

    identity = dict(data.identity.to_dict())
    identity["preprocessing"] = f"average-pooled to {image_size}x{image_size}"
    return {"train_x": pool(data.train_x), "train_y": data.train_y.clone(),
            "test_x": pool(data.test_x), "test_y": data.test_y.clone(), "identity": identity}


def _float_inputs(x_uint8: Tensor) -> Tensor:
    from sgdnoise.data import to_float

    return to_float(x_uint8)


# --------------------------------------------------------------------------- steps to target


class _TargetReached(Exception):
    pass


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
    a thin SGD subclass (passed as ``optimizer_factory``), which stops the run once the
    target is reached by raising a private exception out of ``train`` (the engine has no
    early-stop hook). The engine's progress bar is therefore always disabled here, so the
    interrupted run leaves no half-drawn bar behind; the model is left in train mode."""
    from sgdnoise.train import evaluate, train

    target_error = check_positive("target_error", target_error, allow_zero=True)
    every = max(1, math.ceil(check_positive_int("eval_every_examples", eval_every_examples)
                             / cfg.batch_size))
    train_x, train_y = data["train_x"], data["train_y"]
    state = {"steps": 0, "hit": None, "evals": 0}

    class _Watcher(torch.optim.SGD):
        def __init__(self, model: nn.Module) -> None:
            super().__init__(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay)
            self._model = model

        def step(self, closure=None):  # noqa: ANN001
            out = super().step(closure)
            state["steps"] += 1
            if state["steps"] % every == 0:
                _, err = evaluate(self._model, train_x, train_y, batch_size=4096, amp=False)
                state["evals"] += 1
                self._model.train()
                if err <= target_error:
                    state["hit"] = state["steps"]
                    raise _TargetReached
            return out

    diverged = False
    try:
        res = train(replace(cfg, eval_at_start=False), data, optimizer_factory=_Watcher,
                    progress=False)
        diverged = res.status == "diverged"
    except _TargetReached:
        pass
    lr_used = cfg.lr * (scaled_lr(1.0, cfg.batch_size, cfg.base_batch_size, cfg.lr_scaling))
    steps = float(state["hit"]) if state["hit"] is not None else math.nan
    return StepsResult(batch_size=cfg.batch_size, lr=lr_used, steps=steps,
                       reached=state["hit"] is not None, diverged=diverged,
                       examples=steps * cfg.batch_size, evaluated=state["evals"])


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
    Returns (final, history): final has one row per (rule, B): lr, eta_over_B, steps,
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
                hist.append({"batch_size": b, "lr": lr, "eta_over_B": lr / b, **rec})
        res = cache[key]
        last = res.history[-1]
        final.append({
            "rule": rule, "batch_size": b, "lr": lr, "eta_over_B": lr / b, "steps": res.steps,
            "status": res.status, "train_error": last["train_error"],
            "test_error": last["test_error"], "train_loss": last["train_loss"],
            "test_loss": last["test_loss"], "gap": last["test_error"] - last["train_error"],
            "loss_gap": last["test_loss"] - last["train_loss"],
        })
    return pd.DataFrame(final), pd.DataFrame(hist)


def temperature_groups(final: pd.DataFrame, *, rtol: float = 1e-6) -> pd.DataFrame:
    """Group distinct runs of :func:`generalization_sweep` by η/B (equal within ``rtol``).

    Returns one row per η/B value: eta_over_B, runs (how many distinct (η, B) pairs),
    batch sizes, test-error range (max − min), and train-loss range, so a constant-η/B
    family can be compared with the spread across families."""
    runs = final.drop_duplicates(subset=["batch_size", "lr"]).copy()
    runs = runs.sort_values("eta_over_B")
    groups: list[list[int]] = []
    last = None
    for idx, v in runs["eta_over_B"].items():
        if last is None or abs(v - last) > rtol * max(abs(last), 1e-300):
            groups.append([])
        groups[-1].append(idx)
        last = v if len(groups[-1]) == 1 else last
    rows = []
    for g in groups:
        sub = runs.loc[g]
        rows.append({
            "eta_over_B": float(sub["eta_over_B"].iloc[0]),
            "runs": len(sub),
            "batch_sizes": ", ".join(str(int(b)) for b in sub["batch_size"]),
            "test_error_range": float(sub["test_error"].max() - sub["test_error"].min()),
            "train_loss_range": float(sub["train_loss"].max() - sub["train_loss"].min()),
            "mean_test_error": float(sub["test_error"].mean()),
        })
    return pd.DataFrame(rows)
