"""Simulated sweep records under stated truths, with the seed-to-seed spread measured from
real records.

A small batch ``B₀`` follows a :class:`Curve`: its train error and test error are functions
of its train loss, with the train error reaching 0 at ``zero_error_loss`` and the loss
falling on through an interpolating phase to ``end_loss``, while the test − train error
grows from about 0 at the start to ``end_test_error`` at the end. A large batch's run is
described by a :class:`Truth`: where its train loss ends, how much its test error exceeds
the curve there (a generalization gap), or that it diverges. Every run gets its own noise
(nothing is shared between runs of one seed): on the log of its train loss and on its test
error, each a run-level term plus an evaluation-level term, scaled so that the final
values have the standard deviations of a :class:`Spread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .calls import ArmRuns

__all__ = [
    "Curve",
    "Spread",
    "Truth",
    "divergence",
    "fit_curve",
    "gap",
    "matched_gap",
    "measure_spread",
    "no_gap",
    "points",
    "pooled_sd",
    "severe_underfit",
    "simulate_arm",
    "to_records",
    "under_training",
    "zero_train_error",
]


# --------------------------------------------------------------------------- spread


@dataclass(frozen=True)
class Spread:
    """Seed-to-seed standard deviations of a run's final values, pooled over groups of runs
    that differ only in their seed.

    - sd_test_error: of the final test error (error units).
    - sd_log_train_loss: of the natural log of the final train loss (the simulations scale
      the loss noise with the loss, so it applies at any loss level).
    - sd_train_loss: of the final train loss itself (nats), for reference.
    - df: degrees of freedom of the pooled estimates, ``Σ_g (n_g − 1)``; n_groups: groups
      with at least two seeds; source: where it was measured.
    """

    sd_test_error: float
    sd_log_train_loss: float
    sd_train_loss: float
    df: int
    n_groups: int
    source: str

    def describe(self) -> str:
        """``'0.39 points of test error and 0.18 in ln train loss (9 degrees of freedom,
        measured on …)'``."""
        return (f"{self.sd_test_error * 100:.2f} points of test error and "
                f"{self.sd_log_train_loss:.2f} in ln train loss ({self.df} degrees of "
                f"freedom, {self.source})")


def pooled_sd(values: pd.Series, groups: pd.Series) -> tuple[float, int]:
    """The pooled within-group standard deviation of ``values`` and its degrees of freedom
    ``Σ_g (n_g − 1)`` over the groups with at least two values; ``(NaN, 0)`` without one."""
    grouped = values.groupby(groups)
    n = grouped.count()
    var = grouped.var(ddof=1)
    keep = n >= 2
    df = int((n[keep] - 1).sum())
    if df == 0:
        return float("nan"), 0
    return float(np.sqrt(((n[keep] - 1) * var[keep]).sum() / df)), df


def measure_spread(records: pd.DataFrame, source: str) -> Spread:
    """The pooled within-(arm, batch size) standard deviations of the final test error,
    train loss and log train loss over the finished runs of ``records`` (runs that diverged
    or end on a non-finite value are left out):

        s² = Σ_g (n_g − 1) s_g² / Σ_g (n_g − 1)

    over the groups ``g`` with ``n_g ≥ 2`` seeds. NaN (0 degrees of freedom) when no group
    has two seeds."""
    need = ("arm", "batch_size", "seed", "run_id", "step", "train_loss", "test_error",
            "status")
    missing = [c for c in need if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {missing}")
    last = records.sort_values("step").groupby("run_id", sort=False).tail(1)
    ok = last[(last["status"] != "diverged") & np.isfinite(last["train_loss"].astype(float))
              & np.isfinite(last["test_error"].astype(float)) & (last["train_loss"] > 0)]
    groups = ok["arm"].astype(str) + "/" + ok["batch_size"].astype(str)
    sd_e, df = pooled_sd(ok["test_error"].astype(float), groups)
    sd_logl, _ = pooled_sd(np.log(ok["train_loss"].astype(float)), groups)
    sd_l, _ = pooled_sd(ok["train_loss"].astype(float), groups)
    n_groups = int((groups.value_counts() >= 2).sum()) if len(groups) else 0
    return Spread(sd_e, sd_logl, sd_l, df, n_groups, source)


# --------------------------------------------------------------------------- the curve


@dataclass(frozen=True)
class Curve:
    """The small batch's path as functions of its train loss ``ℓ``.

    With ``u(ℓ) = clip(ln(ℓ/ℓ_z) / ln(ℓ_init/ℓ_z), 0, 1)`` (1 at the start, 0 from the
    loss ``ℓ_z`` at which the train error reaches 0):

        train error  e(ℓ) = e_init · u²
        test error   e(ℓ) + (e_end + δ · w(ℓ)) · (1 − u)^q,
        w(ℓ) = clip(ln(ℓ/ℓ_end) / ln(ℓ_z/ℓ_end), 0, 1),

    so the test − train error is about 0 early, rises to ``e_end + δ`` when the training
    set is fitted and falls by ``δ`` through the interpolating phase to ``e_end`` at the
    final loss ``ℓ_end``. A run's ``K`` evaluations sit at fractions ``φ_k = k/(K−1)`` of
    its way (in log loss) from ``ℓ_init`` to its final loss.
    """

    init_loss: float = 2.3
    zero_error_loss: float = 0.05
    end_loss: float = 0.005
    end_test_error: float = 0.07
    interpolating_drop: float = 0.01
    init_error: float = 0.9
    gap_shape: float = 2.0
    n_evals: int = 25

    def __post_init__(self) -> None:
        if not 0 < self.end_loss < self.zero_error_loss < self.init_loss:
            raise ValueError("Curve needs 0 < end_loss < zero_error_loss < init_loss, got "
                             f"{self.end_loss}, {self.zero_error_loss}, {self.init_loss}")
        if self.n_evals < 3:
            raise ValueError(f"Curve.n_evals must be >= 3, got {self.n_evals}")

    def progress(self, loss: np.ndarray) -> np.ndarray:
        """``u(ℓ)``: 1 at the initial loss, 0 once the train error is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.log(loss / self.zero_error_loss) / np.log(self.init_loss
                                                             / self.zero_error_loss)
        return np.clip(u, 0.0, 1.0)

    def train_error(self, loss: np.ndarray) -> np.ndarray:
        return self.init_error * self.progress(loss) ** 2

    def test_error(self, loss: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.clip(np.log(loss / self.end_loss)
                        / np.log(self.zero_error_loss / self.end_loss), 0.0, 1.0)
        grow = (1.0 - self.progress(loss)) ** self.gap_shape
        return self.train_error(loss) + (self.end_test_error
                                         + self.interpolating_drop * w) * grow

    def loss_at_train_error(self, error: float) -> float:
        """The loss at which the curve's train error is ``error`` (in ``(0, e_init]``)."""
        if not 0 < error <= self.init_error:
            raise ValueError(f"error must be in (0, {self.init_error}], got {error!r}")
        u = np.sqrt(error / self.init_error)
        return float(self.zero_error_loss * (self.init_loss / self.zero_error_loss) ** u)

    def fractions(self) -> np.ndarray:
        """``φ_k``, ``(K,)``."""
        return np.linspace(0.0, 1.0, self.n_evals)


def _run_curve_points(run: pd.DataFrame) -> dict[str, float]:
    """The numbers :func:`fit_curve` takes from one small-batch run (evaluations in step
    order)."""
    run = run.sort_values("step")
    loss, train, test = (run[c].to_numpy(float) for c in ("train_loss", "train_error",
                                                          "test_error"))
    fitted = np.nonzero(train <= 0.005)[0]
    k = int(fitted[0]) if fitted.size else len(run) - 1
    return {"init_loss": loss[0], "init_error": train[0], "end_loss": loss[-1],
            "end_gap": test[-1] - train[-1], "zero_error_loss": loss[k],
            "drop": max(test[k] - test[-1], 0.0), "n_evals": len(run)}


def fit_curve(records: pd.DataFrame, arms: Sequence[str]) -> Curve | None:
    """A :class:`Curve` through the smallest batch's runs of ``arms`` in ``records``
    (medians over those runs): the initial loss and train error (first evaluation), the
    final loss and test − train error, the loss at the first evaluation with train error
    ≤ 0.5% (the last evaluation when none reaches it; then the loss at which the curve's
    train error reaches 0 is put just above the final loss), the fall of test error from
    there to the end, and the number of evaluations. None when there is no such run."""
    points = []
    for arm in arms:
        g = records[(records["arm"] == arm) & (records["status"] != "diverged")]
        if len(g) == 0:
            continue
        b0 = g[g["batch_size"] == g["batch_size"].min()]
        points += [_run_curve_points(r) for _, r in b0.groupby("run_id")]
    if not points:
        return None
    med = {k: float(np.median([p[k] for p in points])) for k in points[0]}
    zero = max(med["zero_error_loss"], 1.5 * med["end_loss"])
    return Curve(init_loss=max(med["init_loss"], 1.5 * zero), zero_error_loss=zero,
                 end_loss=med["end_loss"], end_test_error=max(med["end_gap"], 0.0),
                 interpolating_drop=med["drop"], init_error=min(max(med["init_error"], 0.1),
                                                                1.0),
                 n_evals=max(int(med["n_evals"]), 3))


# --------------------------------------------------------------------------- truths


def points(x: float) -> str:
    """An error difference in words: ``0.01 -> '1 point'``, ``0.03 -> '3 points'``."""
    v = x * 100
    return f"{v:g} point" + ("" if abs(v) == 1 else "s")


@dataclass(frozen=True)
class Truth:
    """What a large batch's runs do: where the train loss ends on average (``final_loss``,
    nats), how far the final test error lies above the small batch's curve at that loss
    (``gap``, error units), or that every seed diverges."""

    label: str
    final_loss: float
    gap: float = 0.0
    diverged: bool = False


def no_gap(curve: Curve) -> Truth:
    """Fits as well as the small batch and tests the same."""
    return Truth("no gap", curve.end_loss)


def gap(curve: Curve, size: float) -> Truth:
    """Fits as well and tests ``size`` worse: a generalization gap at equal fit."""
    return Truth(f"gap of {points(size)}", curve.end_loss, size)


def under_training(curve: Curve, train_error: float = 0.15) -> Truth:
    """Stops early on the small batch's curve, at the loss where its train error is
    ``train_error``: pure under-training."""
    return Truth(f"under-training ({train_error:.0%} train error)",
                 curve.loss_at_train_error(train_error))


def matched_gap(curve: Curve, size: float, train_error: float = 0.15) -> Truth:
    """Stops early *and* tests ``size`` worse than the small batch at the same loss."""
    return Truth(f"gap of {points(size)} at {train_error:.0%} train error",
                 curve.loss_at_train_error(train_error), size)


def zero_train_error(curve: Curve, size: float) -> Truth:
    """Ends inside the interpolating phase (train error 0, loss between the curve's
    ``zero_error_loss`` and ``end_loss``, their geometric mean) with test error ``size``
    above the curve there. The rates of :mod:`sgdnoise.decide.rates` do not use it; it is
    kept for a reader who asks how the rules treat runs that interpolate."""
    loss = float(np.sqrt(curve.zero_error_loss * curve.end_loss))
    return Truth(f"0% train error, {points(size)} worse", loss, size)


def severe_underfit(curve: Curve, train_error: float = 0.6) -> Truth:
    """Stops at a train error of 48–78% (the pilot's large batches), on the curve. The rates
    of :mod:`sgdnoise.decide.rates` do not use it; it is kept for a reader who asks how the
    rules treat such runs."""
    return Truth(f"severe under-fit ({train_error:.0%} train error)",
                 curve.loss_at_train_error(train_error))


def divergence() -> Truth:
    """Every seed diverges."""
    return Truth("divergence", float("nan"), diverged=True)


# --------------------------------------------------------------------------- simulation


def _noise(rng: np.random.Generator, shape: tuple[int, ...], k: int, rho: float
           ) -> np.ndarray:
    """Unit-variance noise ``(..., K)``: ``√ρ·a + √(1 − ρ)·b_k`` with a run-level ``a`` and
    evaluation-level ``b_k``."""
    run = rng.standard_normal(shape)[..., None]
    step = rng.standard_normal((*shape, k))
    return np.sqrt(rho) * run + np.sqrt(1.0 - rho) * step


def simulate_arm(curve: Curve, spread: Spread, truths: Sequence[Truth], *,
                 batch_sizes: Sequence[int], n_seeds: int, n_sim: int,
                 rng: np.random.Generator, n_train: int = 50_000, arm: str = "A",
                 rho: float = 0.5) -> ArmRuns:
    """``n_sim`` simulated arms: ``batch_sizes[0]`` follows ``curve`` to its end, and
    ``batch_sizes[j]`` (``j ≥ 1``) the truth ``truths[j − 1]``; ``n_seeds`` seeds each.

    Evaluation ``k`` of a run ending at mean loss ``ℓ_f`` with gap ``g``:

        ln ℓ_k = ln ℓ_init + φ_k (ln ℓ_f − ln ℓ_init + σ_ℓ ε_k),
        train error = e(ℓ_k),   test error = e_test(ℓ_k) + φ_k (g + σ_e η_k),

    with ``ε, η`` independent unit noise of every run (:func:`_noise`: run-level share
    ``ρ``), ``σ_ℓ = spread.sd_log_train_loss`` and ``σ_e = spread.sd_test_error``; errors
    are clipped to ``[0, 1]``. A diverging run has no evaluation after a random third to
    two thirds of its way and is flagged diverged."""
    if len(truths) != len(batch_sizes) - 1:
        raise ValueError(f"need one truth per large batch size: {len(batch_sizes) - 1} "
                         f"batch sizes above B0, got {len(truths)} truths")
    if n_seeds < 1 or n_sim < 1:
        raise ValueError(f"n_seeds and n_sim must be >= 1, got {n_seeds}, {n_sim}")
    all_truths = [no_gap(curve), *truths]
    n_b, k = len(all_truths), curve.n_evals
    shape = (n_sim, n_b, n_seeds)
    phi = curve.fractions()
    final = np.array([np.log(t.final_loss) if not t.diverged else np.log(curve.init_loss)
                      for t in all_truths])[None, :, None, None]
    start = np.log(curve.init_loss)
    log_loss = start + phi * (final - start + spread.sd_log_train_loss
                              * _noise(rng, shape, k, rho))
    loss = np.exp(log_loss)
    g = np.array([t.gap for t in all_truths])[None, :, None, None]
    test = curve.test_error(loss) + phi * (g + spread.sd_test_error * _noise(rng, shape, k,
                                                                            rho))
    train = curve.train_error(loss)
    diverged = np.broadcast_to(np.array([t.diverged for t in all_truths])[None, :, None],
                               shape).copy()
    cut = rng.integers(k // 3, 2 * k // 3 + 1, size=shape)
    gone = diverged[..., None] & (np.arange(k) >= cut[..., None])
    arrays = [np.where(gone, np.nan, a) for a in (loss, np.clip(train, 0, 1),
                                                   np.clip(test, 0, 1))]
    return ArmRuns(arm, int(n_train), np.asarray(batch_sizes, dtype=int),
                   np.arange(n_seeds), *arrays, diverged)


def to_records(runs: ArmRuns, sim: int = 0, *, source: str = "simulated") -> pd.DataFrame:
    """Data set ``sim`` of simulated arms as a record frame (the columns
    :func:`sgdnoise.decide.calls.decide` reads, plus ``epoch`` and ``source``), ``K``
    evaluations evenly spaced over 30 epochs; a diverged run has status ``"diverged"``. The
    harness works on arrays and does not need it; it is kept to feed simulated data to any
    function that reads records (the tests do)."""
    rows = []
    k = runs.loss.shape[-1]
    for i, b in enumerate(runs.batch_sizes):
        per_epoch = max(runs.n_train // int(b), 1)
        steps = np.arange(k) * max(30 * per_epoch // (k - 1), 1)
        for j, s in enumerate(runs.seeds):
            keep = np.isfinite(runs.loss[sim, i, j])
            status = "diverged" if runs.diverged[sim, i, j] else "finished"
            rows.append(pd.DataFrame({
                "arm": runs.arm, "batch_size": int(b), "seed": int(s),
                "run_id": f"{runs.arm}_B{int(b):05d}_s{int(s)}", "step": steps[keep],
                "epoch": steps[keep] / per_epoch,
                "train_loss": runs.loss[sim, i, j][keep],
                "train_error": runs.train_error[sim, i, j][keep],
                "test_error": runs.test_error[sim, i, j][keep], "status": status,
                "n_train": runs.n_train, "source": source}))
    return pd.concat(rows, ignore_index=True)
