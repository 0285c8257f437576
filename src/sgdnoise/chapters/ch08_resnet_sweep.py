"""Chapter 8: does a large batch generalize worse, or is it under-trained?

The chapter's decisions are pure functions of two record frames (the schema of
:func:`sgdnoise.sweep.load_records` and :func:`sgdnoise.sweep.load_sharpness`):

* ``records``: one row per run × evaluation with at least the columns of
  :data:`RECORD_COLUMNS` (``arm, batch_size, seed, run_id, step, epoch, train_loss,
  train_error, test_error, status, lr, momentum, device, git_commit, created_utc, source``);
* ``sharpness``: one row per run × Lanczos estimate with :data:`SHARPNESS_COLUMNS`
  (``run_id, arm, batch_size, seed, step, lambda_max, lr``).

Each decision returns a table of numbers and a :class:`sgdnoise.report.Verdict` whose
sentence is generated from those numbers and the thresholds (parameters of the chapter).
Missing arms or records give the outcome ``"inconclusive"`` with a sentence naming what is
missing; an interval that cannot be formed (one seed) cannot support a claim.

The five decisions:

* :func:`gap_test` (a generalization gap): at the end of arm B or C, a large batch reaches
  a train loss no higher than the small batch's (within ``loss_tolerance`` nats, the upper
  end of the paired interval) but a higher test error (paired by seed, the 95% interval of
  the difference above 0).
* :func:`matched_fit` (under-training): the residual of each large-batch run's final test
  error against the small batch's own test-vs-train-error trajectory (same seed); "on the
  curve" needs a TOST equivalence within ``margin``.
* :func:`steps_to_target`: the first step at which the test error falls to each target
  (Shallue et al. 2019; Golmant et al. 2018, arXiv 1811.12941), interpolated in log steps.
* :func:`plateau_test`: the slope of test error against ``ln(step)`` over the last
  evaluations: still falling (interval below 0) or flat (TOST within ``margin``).
* :func:`sharpness_test`: ``λ_max`` at the end against the stability threshold
  ``2(1 + β)/η`` of (heavy-ball) gradient descent (Cohen et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sgdnoise.params import ChapterParams, param
from sgdnoise.report import Verdict
from sgdnoise.stats import Interval, t_interval, tost

__all__ = [
    "RECORD_COLUMNS",
    "SHARPNESS_COLUMNS",
    "Analysis",
    "Params",
    "analyse",
    "batch_colors",
    "final_points",
    "from_legacy_records",
    "gap_batch_size",
    "gap_test",
    "intervals_as_text",
    "load_recorded",
    "load_sharpness_records",
    "matched_fit",
    "matched_fit_curves",
    "plateau_test",
    "plot_error_vs_step",
    "plot_matched_fit",
    "plot_sharpness",
    "protocol_table",
    "read_plan",
    "records_scale",
    "run_miniature",
    "sharpness_test",
    "steps_to_target",
]

RECORD_COLUMNS = ("arm", "batch_size", "seed", "run_id", "step", "epoch", "train_loss",
                  "train_error", "test_error", "status")
SHARPNESS_COLUMNS = ("run_id", "arm", "batch_size", "seed", "step", "lambda_max", "lr")

SEC_GAP = "sec-ch8-gap"
SEC_STEPS = "sec-ch8-steps-to-target"
SEC_PLATEAU = "sec-ch8-plateau"
SEC_SHARPNESS = "sec-ch8-sharpness"


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 8 (values live in the notebook's parameters cell and in
    ``book/params/ch08_resnet_sweep/{smoke,default,full}.yaml``)."""

    records_dirs: tuple[str, ...] = param(min_len=0, doc="folders of recorded runs to "
                                          "re-analyse (GPU pilot and plan records)")
    sharpness_dirs: tuple[str, ...] = param(min_len=0, doc="folders holding sharpness records")
    run_miniature: bool = param(doc="train the laptop miniature in this execution")
    plan: str = param(doc="the miniature's plan file (arms, batch sizes, seeds, recipes)")
    targets: tuple[float, ...] = param(low=0.0, high=1.0, min_len=1,
                                       doc="test-error targets for steps-to-target (GPU)")
    targets_laptop: tuple[float, ...] = param(low=0.0, high=1.0, min_len=1,
                                              doc="test-error targets for the miniature")
    loss_tolerance: float = param(low=0.0, doc="gap test: 'no higher train loss' within "
                                  "this many nats")
    gap_margin: float = param(low=1e-6, high=1.0, doc="test-error difference below which "
                              "there is no gap (TOST margin)")
    curve_margin: float = param(low=1e-6, high=1.0, doc="matched fit: 'on the curve' margin")
    curve_range_tolerance: float = param(low=0.0, high=1.0, doc="matched fit: how far (in "
                                         "train error) outside the small batch's range a "
                                         "run may end and still be compared")
    plateau_evals: int = param(low=3, doc="plateau test: the last evaluations used")
    plateau_margin: float = param(low=1e-6, high=1.0, doc="plateau: |slope| per e-fold of "
                                  "steps below which the curve is flat")
    eos_low: float = param(low=0.0, high=1.0, doc="η λ_max / 2(1+β) at or above this: edge "
                           "of stability")
    below_fraction: float = param(low=0.0, high=1.0, doc="η λ_max / 2(1+β) below this: far "
                                  "below the edge")
    out_dir: str = param(doc="miniature records ('' = a fresh temporary folder)")

    def check(self) -> None:
        self.require(self.below_fraction < self.eos_low, "below_fraction",
                     f"must be below eos_low={self.eos_low}")
        self.require(self.plan.endswith((".yaml", ".yml")), "plan", "must be a YAML file")


# --------------------------------------------------------------------------- design


def protocol_table(n_train: int, batch_sizes: Sequence[int], epochs: int, lr: float
                   ) -> pd.DataFrame:
    """What an equal-epoch run does at each batch size, before training (``drop_last``).

    One row per ``B``: steps per epoch ``⌊N/B⌋``, total steps ``S = E ⌊N/B⌋``, examples
    seen ``S·B``, the finite-population factor ``(N − B)/(N − 1)`` of Lemma 1 and the reach
    ``η S`` (the bound ``‖θ_S − θ_0‖ ≤ η S G`` divided by the gradient bound ``G``)."""
    if n_train < 2:
        raise ValueError(f"n_train must be >= 2, got {n_train!r}")
    rows = []
    for b in batch_sizes:
        if not 1 <= b <= n_train:
            raise ValueError(f"batch size must be in [1, n_train={n_train}], got {b!r}")
        spe = n_train // b
        rows.append({"B": int(b), "steps/epoch": spe, "steps S": epochs * spe,
                     "examples seen": epochs * spe * b,
                     "(N-B)/(N-1)": (n_train - b) / (n_train - 1),
                     "reach ηS": lr * epochs * spe})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- records


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {sorted(df.columns)}")


def from_legacy_records(old: pd.DataFrame, *, arm: str = "pilot", source: str = "pilot"
                        ) -> pd.DataFrame:
    """Map a frame of the per-epoch record format (``sgdnoise.sweep.run/1``: columns
    ``batch_size, seed, epoch, step, lr, train_loss, train_error, test_loss, test_error,
    status, device, git_commit, created_utc, n_train``) onto :data:`RECORD_COLUMNS`, with the
    given ``arm`` and ``source``; quantities that format did not record (``param_distance``,
    ``momentum``) are NaN."""
    _require_columns(old, ("batch_size", "seed", "epoch", "step", "train_loss", "train_error",
                           "test_error", "status"), "legacy records")
    df = old.copy()
    df["arm"] = arm
    df["source"] = source
    df["run_id"] = [f"{arm}-B{int(b)}-s{int(s)}" for b, s in zip(df["batch_size"], df["seed"],
                                                                  strict=True)]
    if "n_train" in df.columns:
        df["examples_seen"] = df["epoch"] * df["n_train"]
    for col in ("param_distance", "momentum", "ghost_batch_size", "max_steps"):
        if col not in df.columns:
            df[col] = np.nan
    df["lr0"] = df.groupby("run_id")["lr"].transform("first") if "lr" in df else np.nan
    return df.sort_values(["arm", "batch_size", "seed", "step"]).reset_index(drop=True)


def records_scale(df: pd.DataFrame, kind: str = "recorded GPU runs") -> str:
    """``'recorded GPU runs (NVIDIA H200; commit unknown; 2026-11-26; source pilot)'``: the
    devices, commits, dates and sources behind a record frame (distinct values, sorted)."""
    if len(df) == 0:
        return f"{kind} (none)"

    def distinct(col: str, f: Any = str) -> str:
        if col not in df.columns:
            return "?"
        vals = sorted({f(v) for v in df[col].dropna()})
        return ", ".join(vals) if vals else "?"

    dev = distinct("device", lambda d: str(d).removeprefix("cuda: "))
    commit = distinct("git_commit", lambda c: str(c)[:10])
    dates = distinct("created_utc", lambda c: str(c)[:10])
    src = distinct("source")
    return f"{kind} ({dev}; commit {commit}; {dates}; source {src})"


def final_points(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run: one row per ``run_id`` (``arm, batch_size, seed,
    step, train_loss, train_error, test_error, status``)."""
    _require_columns(df, RECORD_COLUMNS, "records")
    last = df.sort_values("step").groupby("run_id", sort=False).tail(1)
    return last.sort_values(["arm", "batch_size", "seed"]).reset_index(drop=True)


def _fmt_pct(i: Interval) -> str:
    return i.format(1, 100) + " points"


def _arm_missing(df: pd.DataFrame, arms: Sequence[str]) -> list[str]:
    present = set(df["arm"].unique()) if len(df) else set()
    return [a for a in arms if a not in present]


# --------------------------------------------------------------------------- (a) gap


def gap_test(
    records: pd.DataFrame,
    *,
    arms: Sequence[str] = ("B", "C"),
    loss_tolerance: float = 0.02,
    margin: float = 0.01,
    confidence: float = 0.95,
    scale: str | None = None,
    section: str = SEC_GAP,
) -> tuple[pd.DataFrame, Verdict]:
    """The generalization-gap test, paired by seed within each arm.

    For every arm and every batch size ``B`` above the arm's smallest ``B₀``, over the seeds
    run at both: ``Δloss_s = L_train(B, s) − L_train(B₀, s)`` and
    ``Δerr_s = err_test(B, s) − err_test(B₀, s)`` at each run's last evaluation, with
    ``confidence`` t-intervals of their means. A pair

    * ``fits`` when the upper end of the Δloss interval is ≤ ``loss_tolerance`` (nats),
      ``under-fits`` when its lower end is above it, else ``undetermined``;
    * shows ``no gap`` when it fits and the Δerr interval lies below ``margin`` (a
      difference, if any, smaller than the margin); a ``gap`` when it fits and the Δerr
      interval lies above 0 and reaches ``margin``.

    Returns the table (one row per arm × B: ``n_seeds``, the two intervals, ``fit``,
    ``call``) and the verdict: supported if any pair shows a gap; contradicted if some pair
    fits, none shows a gap, and every fitted pair shows ``no gap``; else inconclusive."""
    claim = ("With the scaling rule (arm B, equal epochs) or at equal steps (arm C), a large "
             "batch that fits the training set as well as the small batch has higher test "
             "error: a generalization gap.")
    scale = scale if scale is not None else records_scale(records)
    cols = ["arm", "B0", "B", "n_seeds", "d_train_loss", "d_test_error", "fit", "call"]
    missing = _arm_missing(records, arms)
    if len(missing) == len(arms):
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No records of arm(s) {', '.join(missing)}: "
                        "the gap test needs arm B or arm C.", scale, section))
    fin = final_points(records[records["arm"].isin(arms)])
    fin = fin[fin["status"] != "diverged"]
    rows = []
    for arm, g in fin.groupby("arm", sort=True):
        sizes = sorted(g["batch_size"].unique())
        b0 = sizes[0]
        ref = g[g["batch_size"] == b0].set_index("seed")
        for b in sizes[1:]:
            big = g[g["batch_size"] == b].set_index("seed")
            seeds = sorted(set(ref.index) & set(big.index))
            dl = t_interval(big.loc[seeds, "train_loss"].to_numpy()
                            - ref.loc[seeds, "train_loss"].to_numpy(), confidence)
            de = t_interval(big.loc[seeds, "test_error"].to_numpy()
                            - ref.loc[seeds, "test_error"].to_numpy(), confidence)
            if not dl.defined:
                fit = "undetermined"
            elif dl.high <= loss_tolerance:
                fit = "fits"
            elif dl.low > loss_tolerance:
                fit = "under-fits"
            else:
                fit = "undetermined"
            call = "-"
            if fit == "fits":
                call = ("no gap" if de.below(margin) else "gap" if de.above(0.0)
                        else "undetermined")
            rows.append({"arm": arm, "B0": int(b0), "B": int(b), "n_seeds": len(seeds),
                         "d_train_loss": dl, "d_test_error": de, "fit": fit, "call": call})
    table = pd.DataFrame(rows, columns=cols)
    note = (f" (no records of arm {', '.join(missing)})" if missing else "")
    thresholds = (f"'fits' means the upper end of the {confidence:.0%} paired interval of the "
                  f"train-loss difference is at most {loss_tolerance:g} nats; 'no gap' means "
                  f"the test-error difference interval lies below {margin:.1%}")
    gaps = table[table["call"] == "gap"]
    fitted = table[table["fit"] == "fits"]
    if len(gaps):
        r = gaps.iloc[0]
        sentence = (f"A gap: in arm {r['arm']}, B = {r['B']} fits as well as B = {r['B0']} "
                    f"(train-loss difference {r['d_train_loss'].format(3)} nats) but its test "
                    f"error is higher by {_fmt_pct(r['d_test_error'])} ({r['n_seeds']} seeds; "
                    f"{len(gaps)} of {len(table)} arm × batch-size pairs show a gap){note}; "
                    f"{thresholds}.")
        return table, Verdict(claim, "supported", sentence, scale, section)
    if len(fitted) and (fitted["call"] == "no gap").all():
        worst = max(fitted["d_test_error"], key=lambda i: i.high)
        sentence = (f"No gap: {len(fitted)} large-batch run group(s) fit the training set "
                    f"as well as the small batch and none has a higher test error (largest "
                    f"upper end: {worst.high * 100:.1f} points); {len(table) - len(fitted)} "
                    f"other pair(s) do not fit or cannot be called{note}; {thresholds}.")
        return table, Verdict(claim, "contradicted", sentence, scale, section)
    counts = table["fit"].value_counts().to_dict()
    fitted_txt = "; ".join(
        f"arm {r['arm']}, B = {r['B']:,}: test error {_fmt_pct(r['d_test_error'])} ({r['call']})"
        for _, r in fitted.iterrows())
    sentence = (f"Cannot decide: of {len(table)} arm × batch-size pairs, "
                f"{counts.get('fits', 0)} fit, {counts.get('under-fits', 0)} under-fit and "
                f"{counts.get('undetermined', 0)} cannot be told apart on train loss (an "
                f"interval straddles the tolerance, or a single seed gives none)"
                + (f"; the fitted pairs differ from the small batch by — {fitted_txt}"
                   if len(fitted) else "")
                + f"{note}; {thresholds}.")
    return table, Verdict(claim, "inconclusive", sentence, scale, section)


def gap_batch_size(table: pd.DataFrame) -> int | None:
    """Where a gap appears: the smallest batch size ``B`` of a :func:`gap_test` table whose
    call is ``"gap"`` (in any arm), i.e. the smallest batch size at which the gap verdict is
    supported; None when no pair shows a gap (the verdict is not "supported")."""
    _require_columns(table, ("B", "call"), "gap-test table")
    gaps = table[table["call"] == "gap"]
    return int(gaps["B"].min()) if len(gaps) else None


# --------------------------------------------------------------------------- (b) matched fit


def _curve(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A trajectory's test error as a function of its train error: points sorted by train
    error, duplicates averaged. Returns ``(x, y)`` increasing in ``x``."""
    order = np.argsort(train, kind="stable")
    x, y = train[order], test[order]
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    return ux, uy


def matched_fit_curves(records: pd.DataFrame, arm: str) -> dict[int, tuple[np.ndarray,
                                                                           np.ndarray]]:
    """The small batch's test-vs-train-error curve of ``arm``, per seed: ``seed -> (x, y)``
    (see :func:`matched_fit`); empty when the arm has no records."""
    g = records[(records["arm"] == arm) & np.isfinite(records["train_error"])
                & np.isfinite(records["test_error"])]
    if len(g) == 0:
        return {}
    b0 = g["batch_size"].min()
    ref = g[g["batch_size"] == b0]
    return {int(s): _curve(r["train_error"].to_numpy(float), r["test_error"].to_numpy(float))
            for s, r in ref.groupby("seed")}


def matched_fit(
    records: pd.DataFrame,
    *,
    arm: str,
    margin: float = 0.02,
    range_tolerance: float = 0.01,
    confidence: float = 0.95,
    scale: str | None = None,
    section: str = SEC_GAP,
) -> tuple[pd.DataFrame, Verdict]:
    """Under-training test: do the large batches end on the small batch's curve?

    Let ``f_s(x)`` be the test error of the smallest batch ``B₀`` of ``arm`` (seed ``s``) as
    a piecewise-linear function of its train error ``x`` along its trajectory. For a run
    ``(B, s)`` ending at train error ``x`` and test error ``y`` the residual is
    ``r = y − f_s(x)`` (``f`` of the mean curve over seeds when ``B₀`` lacks seed ``s``;
    NaN when ``x`` lies more than ``range_tolerance`` outside the range of train errors
    ``B₀`` visited: no extrapolation; within it, ``x`` is clamped to the range, so a run at
    0% train error is compared with the small batch's end point at 0.3%). Per ``B``, over
    seeds: a ``confidence`` t-interval of the mean residual and a TOST at ``margin``:

    * ``on the curve``: equivalent (the 90% interval inside ``±margin``);
    * ``above the curve``: the interval lies above 0 (worse test error at equal train error);
    * ``below the curve``: below 0; else ``undetermined``.

    Verdict (claim: the large batches' shortfall is under-training): supported when every
    batch size is on (or below) the curve; contradicted when some are above it and none on
    or below; mixed when both occur; inconclusive otherwise (some undetermined, none
    above)."""
    claim = (f"Arm {arm}: the large batches are under-trained, not worse at generalizing: "
             "their final points lie on the small batch's test-vs-train-error curve.")
    scale = scale if scale is not None else records_scale(records)
    cols = ["arm", "B", "n_seeds", "residual", "n_outside", "call"]
    curves = matched_fit_curves(records, arm)
    if not curves:
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No records of arm {arm}.", scale, section))
    fin = final_points(records[records["arm"] == arm])
    fin = fin[fin["status"] != "diverged"]
    b0 = int(fin["batch_size"].min())
    grid_lo = max(float(c[0][0]) for c in curves.values())
    grid_hi = min(float(c[0][-1]) for c in curves.values())
    grid = np.linspace(grid_lo, grid_hi, 200) if grid_hi > grid_lo else None
    mean_curve = (None if grid is None else
                  (grid, np.mean([np.interp(grid, *c) for c in curves.values()], axis=0)))
    rows = []
    for b, g in fin[fin["batch_size"] > b0].groupby("batch_size", sort=True):
        res, outside = [], 0
        for _, r in g.iterrows():
            c = curves.get(int(r["seed"]), mean_curve)
            x = float(r["train_error"])
            if c is None or not (c[0][0] - range_tolerance <= x <= c[0][-1] + range_tolerance):
                outside += 1
                continue
            x = min(max(x, float(c[0][0])), float(c[0][-1]))
            res.append(float(r["test_error"]) - float(np.interp(x, *c)))
        ci = t_interval(res, confidence)
        eq = tost(res, margin, alpha=(1 - confidence)) if len(res) >= 2 else None
        if eq is not None and eq.equivalent:
            call = "on the curve"
        elif ci.above(0.0):
            call = "above the curve"
        elif ci.below(0.0):
            call = "below the curve"
        else:
            call = "undetermined"
        rows.append({"arm": arm, "B": int(b), "n_seeds": len(res), "residual": ci,
                     "n_outside": outside, "call": call})
    table = pd.DataFrame(rows, columns=cols)
    rule = (f"residual = test error minus the B = {b0} curve at the same train error (runs "
            f"up to {range_tolerance:.1%} outside its range compared at its end); 'on the "
            f"curve' = TOST equivalence within ±{margin:.1%}, 'above' = the {confidence:.0%} "
            "interval above 0")
    if len(table) == 0:
        return table, Verdict(claim, "inconclusive", f"Arm {arm} has no batch size above "
                              f"B = {b0}.", scale, section)

    def sizes(call: str, what: str) -> list[str]:
        bs = [f"{int(b):,}" for b in table.loc[table["call"] == call, "B"]]
        return [f"{what} at B = {', '.join(bs)}"] if bs else []

    n_on = int(table["call"].isin(["on the curve", "below the curve"]).sum())
    n_above = int((table["call"] == "above the curve").sum())
    if n_above and n_on:
        outcome = "mixed"
    elif n_above:
        outcome = "contradicted"
    elif n_on == len(table):
        outcome = "supported"
    else:
        outcome = "inconclusive"
    listing = "; ".join(
        f"B = {r['B']:,}: {r['residual'].format(1, 100)} points"
        + (f", {r['n_outside']} run(s) outside the curve's range" if r["n_outside"] else "")
        for _, r in table.iterrows())
    parts = (sizes("on the curve", "on the curve") + sizes("above the curve", "above it")
             + sizes("below the curve", "below it") + sizes("undetermined", "undetermined"))
    joined = "; ".join(parts)
    sentence = f"{joined[:1].upper()}{joined[1:]} ({listing}); {rule}."
    return table, Verdict(claim, outcome, sentence, scale, section)


# --------------------------------------------------------------------------- (c) steps


def _first_step_below(steps: np.ndarray, errors: np.ndarray, target: float) -> float:
    """First step with ``error ≤ target``, interpolated linearly in ``ln(step)`` between the
    two evaluations that bracket the crossing; NaN if never reached."""
    order = np.argsort(steps)
    s, e = steps[order].astype(float), errors[order].astype(float)
    hit = np.nonzero(e <= target)[0]
    if hit.size == 0:
        return float("nan")
    k = int(hit[0])
    if k == 0 or s[k - 1] <= 0 or e[k - 1] == e[k]:
        return float(s[k])
    frac = (e[k - 1] - target) / (e[k - 1] - e[k])
    return float(math.exp(math.log(s[k - 1]) + frac * (math.log(s[k]) - math.log(s[k - 1]))))


def steps_to_target(
    records: pd.DataFrame,
    *,
    arm: str = "B",
    targets: Sequence[float] = (0.15, 0.10),
    confidence: float = 0.95,
    scale: str | None = None,
    section: str = SEC_STEPS,
) -> tuple[pd.DataFrame, Verdict]:
    """Steps (and examples) needed to reach each test-error target, per batch size.

    Per run: the first step with test error ≤ target (:func:`_first_step_below`). Per
    ``(B, target)``: the number of seeds that reached it of those run, and a ``confidence``
    t-interval of the mean of ``ln(steps)`` (reported back on the step scale: a geometric
    mean). Perfect scaling halves the steps when ``B`` doubles (slope −1 in log–log;
    Shallue et al. 2019); the ``slope`` column is the least-squares slope of ``ln(steps)``
    on ``ln(B)`` between consecutive batch sizes.

    Verdict (claim: the largest batch never reaches a useful test error) for the strictest
    target that the smallest ``B`` reaches in every seed (the strictest overall when it
    reaches none): supported when the smallest ``B`` reaches it in every
    seed and the largest in none; contradicted when every ``B`` reaches it in every seed;
    mixed when some but not all do; inconclusive when the smallest ``B`` does not reach it."""
    claim = (f"Arm {arm}: beyond some batch size training never reaches a useful test error "
             "(the essay's failure to converge).")
    scale = scale if scale is not None else records_scale(records)
    cols = ["arm", "target", "B", "n_runs", "n_reached", "steps", "examples", "slope"]
    g = records[records["arm"] == arm]
    if len(g) == 0:
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No records of arm {arm}.", scale, section))
    rows = []
    for target in targets:
        prev = None
        for b, gb in g.groupby("batch_size", sort=True):
            hits = [_first_step_below(r["step"].to_numpy(), r["test_error"].to_numpy(), target)
                    for _, r in gb.groupby("run_id")]
            logs = [math.log(h) for h in hits if np.isfinite(h) and h > 0]
            ci = t_interval(logs, confidence)
            steps = Interval(math.exp(ci.estimate), math.exp(ci.low), math.exp(ci.high), ci.n,
                             confidence) if logs else Interval(math.nan, math.nan, math.nan,
                                                               0, confidence)
            slope = math.nan
            if prev is not None and logs and np.isfinite(prev[1]):
                slope = (ci.estimate - prev[1]) / (math.log(b) - math.log(prev[0]))
            rows.append({"arm": arm, "target": float(target), "B": int(b),
                         "n_runs": len(hits), "n_reached": len(logs), "steps": steps,
                         "examples": steps.estimate * b if logs else math.nan,
                         "slope": slope})
            prev = (b, ci.estimate if logs else math.nan)
    table = pd.DataFrame(rows, columns=cols)
    b_min = table["B"].min()
    ok = table[(table["B"] == b_min) & (table["n_reached"] == table["n_runs"])
               & (table["n_runs"] > 0)]
    strict = float(ok["target"].min()) if len(ok) else float(min(targets))
    t = table[table["target"] == strict].sort_values("B")
    first, last = t.iloc[0], t.iloc[-1]
    reached = "; ".join(f"B = {r['B']}: {r['n_reached']}/{r['n_runs']}" + (
        f" at {r['steps'].estimate:,.0f} steps" if r["n_reached"] else "")
        for _, r in t.iterrows())
    base = f"test error ≤ {strict:.0%} reached (runs) — {reached}"
    if first["n_reached"] < first["n_runs"] or first["n_runs"] == 0:
        return table, Verdict(claim, "inconclusive", f"The smallest batch does not reach the "
                              f"target in every seed, so the target cannot rank the batch "
                              f"sizes: {base}.", scale, section)
    all_reach = (t["n_reached"] == t["n_runs"]).all()
    if all_reach:
        outcome = "contradicted"
    elif last["n_reached"] == 0:
        outcome = "supported"
    else:
        outcome = "mixed"
    return table, Verdict(claim, outcome, base + ".", scale, section)


# --------------------------------------------------------------------------- (d) plateau


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """OLS slope of ``y`` on ``x``, its standard error and degrees of freedom."""
    n = x.size
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if n < 3 or sxx == 0:
        return (float("nan"), float("nan"), 0)
    b = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - b * xc
    return b, math.sqrt(float(resid @ resid) / (n - 2) / sxx), n - 2


def plateau_test(
    records: pd.DataFrame,
    *,
    arm: str,
    batch_size: int | None = None,
    n_evals: int = 5,
    margin: float = 0.01,
    confidence: float = 0.95,
    scale: str | None = None,
    section: str = SEC_PLATEAU,
) -> tuple[pd.DataFrame, Verdict]:
    """Is the test error of the largest batch (or ``batch_size``) of ``arm`` still falling?

    Per run: the least-squares slope ``b`` of test error on ``ln(step)`` over its last
    ``n_evals`` evaluations with ``step > 0`` (error change per e-fold of steps). Over
    seeds: a ``confidence`` t-interval of the mean slope; with one seed, the OLS interval of
    that run (``b ± t·se``, ``n_evals − 2`` degrees of freedom). ``falling``: the interval
    lies below 0; ``flat``: it lies inside ``±margin``; else ``undetermined``.

    Verdict (claim: the large-batch test error has plateaued): supported when flat,
    contradicted when falling, inconclusive otherwise or without records."""
    claim = (f"Arm {arm}: at the largest batch the test error plateaus — it is no longer "
             "falling at the end of the run.")
    scale = scale if scale is not None else records_scale(records)
    cols = ["arm", "B", "n_seeds", "slope", "final_test_error", "last_step", "call"]
    g = records[(records["arm"] == arm) & (records["step"] > 0)]
    if len(g) == 0:
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No records of arm {arm}.", scale, section))
    b = int(batch_size) if batch_size is not None else int(g["batch_size"].max())
    gb = g[g["batch_size"] == b]
    if len(gb) == 0:
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No records of arm {arm} at B = {b}.",
                        scale, section))
    slopes, fits, finals, last_steps = [], [], [], []
    for _, r in gb.groupby("run_id"):
        r = r.sort_values("step").tail(n_evals)
        sl = _slope(np.log(r["step"].to_numpy(float)), r["test_error"].to_numpy(float))
        if np.isfinite(sl[0]):
            slopes.append(sl[0])
            fits.append(sl)
        finals.append(float(r["test_error"].iloc[-1]))
        last_steps.append(int(r["step"].iloc[-1]))
    if len(slopes) >= 2:
        ci = t_interval(slopes, confidence)
    elif len(slopes) == 1:
        from scipy import stats as sps

        b1, se, dof = fits[0]
        h = float(sps.t.ppf(0.5 + confidence / 2, dof)) * se
        ci = Interval(b1, b1 - h, b1 + h, 1, confidence)
    else:
        ci = Interval(math.nan, math.nan, math.nan, 0, confidence)
    if ci.below(0.0):
        call = "falling"
    elif ci.defined and ci.low > -margin and ci.high < margin:
        call = "flat"
    else:
        call = "undetermined"
    table = pd.DataFrame([{"arm": arm, "B": b, "n_seeds": len(slopes), "slope": ci,
                           "final_test_error": float(np.mean(finals)),
                           "last_step": int(max(last_steps)), "call": call}], columns=cols)
    sentence = (f"At B = {b} the slope of test error against ln(step) over the last {n_evals} "
                f"evaluations is {ci.format(1, 100)} points per e-fold of steps "
                f"({len(slopes)} run(s), ending at {np.mean(finals):.1%} test error, step "
                f"{max(last_steps):,}): {call}; 'flat' needs the {confidence:.0%} interval "
                f"inside ±{margin * 100:.1f} points, 'falling' needs it below 0.")
    outcome = {"flat": "supported", "falling": "contradicted"}.get(call, "inconclusive")
    return table, Verdict(claim, outcome, sentence, scale, section)


# --------------------------------------------------------------------------- (e) sharpness


def sharpness_test(
    sharpness: pd.DataFrame,
    *,
    arms: Sequence[str] = ("D-plain", "D-scaled"),
    momentum: dict[str, float] | None = None,
    last_fraction: float = 0.5,
    eos_low: float = 0.8,
    below_fraction: float = 0.5,
    confidence: float = 0.95,
    scale: str | None = None,
    section: str = SEC_SHARPNESS,
) -> tuple[pd.DataFrame, Verdict]:
    """Edge of stability or a plateau far below it?

    Gradient descent with heavy-ball momentum ``β`` on a quadratic of curvature ``λ`` is
    stable iff ``η λ < 2(1 + β)`` (``β = 0``: ``λ < 2/η``; Cohen et al. 2021 find the
    sharpness of full-batch training rising to and hovering at this edge). Per arm, over the
    estimates in the last ``last_fraction`` of each run's steps, the ratio
    ``ρ = η λ_max / (2(1 + β))`` (``momentum[arm]``, default 0) and a ``confidence``
    t-interval of its mean over runs (each run's late mean is one value; with one run, the
    late estimates themselves). ``edge``: the interval lies above ``eos_low``; ``far
    below``: it lies below ``below_fraction``; else ``between``.

    Verdict (claim: the huge-batch plateau is an edge-of-stability effect): supported when
    every arm with records is at the edge, contradicted when every one is far below,
    mixed when they differ, inconclusive when none can be called or there are no records."""
    b_txt = (f"B = {int(sharpness['batch_size'].max()):,}" if len(sharpness)
             and "batch_size" in sharpness.columns else "the largest batch")
    claim = (f"At {b_txt} the plateau is an edge-of-stability effect "
             r"($\eta\lambda_{\max}$ hovers at $2(1 + \beta)$), not a region of low curvature "
             "such as a saddle.")
    if not 0 < last_fraction <= 1:
        raise ValueError(f"last_fraction must be in (0, 1], got {last_fraction!r}")
    scale = scale if scale is not None else records_scale(sharpness)
    cols = ["arm", "n_runs", "ratio", "call"]
    if len(sharpness) == 0:
        return (pd.DataFrame(columns=cols),
                Verdict(claim, "inconclusive", f"No sharpness records (arms "
                        f"{', '.join(arms)}).", scale, section))
    _require_columns(sharpness, SHARPNESS_COLUMNS, "sharpness records")
    momentum = momentum or {}
    rows = []
    for arm in arms:
        g = sharpness[sharpness["arm"] == arm]
        if len(g) == 0:
            continue
        beta = float(momentum.get(arm, 0.0))
        per_run, pooled = [], []
        for _, r in g.groupby("run_id"):
            smax = float(r["step"].max())
            late = r[r["step"] >= (1 - last_fraction) * smax]
            ratio = late["lr"].to_numpy(float) * late["lambda_max"].to_numpy(float) / (
                2 * (1 + beta))
            per_run.append(float(np.mean(ratio)))
            pooled.extend(ratio.tolist())
        ci = t_interval(per_run if len(per_run) >= 2 else pooled, confidence)
        call = ("edge" if ci.above(eos_low) else "far below" if ci.below(below_fraction)
                else "between")
        rows.append({"arm": arm, "n_runs": len(per_run), "ratio": ci, "call": call})
    table = pd.DataFrame(rows, columns=cols)
    rule = (f"$\\rho = \\eta\\lambda_{{\\max}} / 2(1+\\beta)$ over the last "
            f"{last_fraction:.0%} of the steps; 'edge' "
            f"when its {confidence:.0%} interval lies above {eos_low:g}, 'far below' when it "
            f"lies below {below_fraction:g}")
    missing = [a for a in arms if a not in set(table["arm"])]
    note = f" (no records of arm {', '.join(missing)})" if missing else ""
    if len(table) == 0:
        return table, Verdict(claim, "inconclusive", f"No sharpness records of arm(s) "
                              f"{', '.join(arms)}.", scale, section)
    listing = "; ".join(f"arm {r['arm']}: ρ = {r['ratio'].format(2)} ({r['call']})"
                        for _, r in table.iterrows())
    calls = set(table["call"])
    if calls == {"edge"}:
        outcome = "supported"
    elif calls == {"far below"}:
        outcome = "contradicted"
    elif {"edge", "far below"} <= calls:
        outcome = "mixed"
    else:
        outcome = "inconclusive"
    return table, Verdict(claim, outcome, f"{listing}{note}; {rule}.", scale, section)


# --------------------------------------------------------------------------- reading records


def load_recorded(dirs: Sequence[str]) -> pd.DataFrame:
    """Every record under ``dirs`` (folders that do not exist are skipped) as one frame of
    the :data:`RECORD_COLUMNS` schema. Records of the per-epoch format of the 10-epoch GPU
    pilot are mapped by :func:`from_legacy_records` (arm and source ``"pilot"``)."""
    from pathlib import Path

    from sgdnoise import sweep

    frames = []
    for d in dirs:
        if not Path(d).exists():
            continue
        df = sweep.load_records(d)
        if len(df) == 0:
            continue
        frames.append(df if "arm" in df.columns else from_legacy_records(df))
    if not frames:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def load_sharpness_records(dirs: Sequence[str]) -> pd.DataFrame:
    """Sharpness estimates under ``dirs`` (:data:`SHARPNESS_COLUMNS`), through
    ``sgdnoise.sweep.load_sharpness`` where the engine provides it; else an empty frame."""
    from pathlib import Path

    from sgdnoise import sweep

    loader = getattr(sweep, "load_sharpness", None)
    existing = [d for d in dirs if Path(d).exists()]
    if loader is None or not existing:
        return pd.DataFrame(columns=list(SHARPNESS_COLUMNS))
    return loader(existing)


def intervals_as_text(table: pd.DataFrame, *, percent: Sequence[str] = (),
                      digits: int = 1) -> pd.DataFrame:
    """A copy of ``table`` whose :class:`Interval` cells are strings ``'est [low, high]'``
    (columns in ``percent`` times 100, i.e. in points); other cells unchanged."""
    out = table.copy()
    for col in out.columns:
        if len(out) and isinstance(out[col].iloc[0], Interval):
            scale = 100.0 if col in percent else 1.0
            out[col] = [i.format(digits if col in percent else 3, scale) for i in out[col]]
    return out


def split_unreached(table: pd.DataFrame) -> tuple[pd.DataFrame, list[float]]:
    """Split a :func:`steps_to_target` table into the rows of the targets that at least one
    run reached and the list of targets that no run reached (shown as one sentence instead
    of rows with nothing in them)."""
    _require_columns(table, ("target", "n_reached"), "steps-to-target table")
    reached = table.groupby("target")["n_reached"].transform("sum") > 0
    unreached = sorted({float(t) for t in table.loc[~reached, "target"]}, reverse=True)
    return table[reached].reset_index(drop=True), unreached


# --------------------------------------------------------------------------- laptop miniature


def read_plan(path: str) -> dict[str, Any]:
    """The plan file as a mapping (``name, data, defaults, arms[, priority]``; the format of
    ``sgdnoise-sweep``). Raises ValueError naming the file when it lacks a section."""
    import yaml

    with open(path) as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict) or not {"data", "arms"} <= set(raw):
        raise ValueError(f"plan {path!r} must be a mapping with 'data' and 'arms' sections")
    return raw


def run_miniature(plan_path: str, out_dir: str, *, progress: bool = False) -> pd.DataFrame:
    """Train (or resume) every run of the plan into ``out_dir`` with
    :func:`sgdnoise.sweep.run_plan` — exactly what ``sgdnoise-sweep PLAN --out DIR`` does on
    a GPU — and return the records in the :data:`RECORD_COLUMNS` schema."""
    from sgdnoise import sweep

    sweep.run_plan(plan_path, out_dir, progress=progress, log=lambda msg: None)
    return load_recorded([out_dir])


# --------------------------------------------------------------------------- figures


def batch_colors(batch_sizes: Iterable[int]) -> dict[int, Any]:
    """One colour per batch size (viridis, smallest dark), the same in every panel."""
    import seaborn as sns

    sizes = sorted({int(b) for b in batch_sizes})
    return dict(zip(sizes, sns.color_palette("viridis", n_colors=max(len(sizes), 1)),
                    strict=False))


def _figsize(n_panels: int, height: float) -> tuple[float, float]:
    """At most 7 in wide (the text column), one panel 5.2 in."""
    return (min(2.6 * max(n_panels, 1) + 2.6, 7.0), height)


def _batch_legend(fig: Any, axes: Sequence[Any]) -> None:
    """One legend for all panels, outside the data, batch sizes in increasing order."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(lab, h)
    labels = sorted(entries, key=lambda lab: int(lab.replace(",", "")))
    fig.legend([entries[lab] for lab in labels], labels, title="B", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)


def _empty_figure(title: str, message: str) -> Any:
    """A small figure that says there is nothing to plot (a figure cell always has one)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=plt.rcParams["font.size"])
    return fig


def _arm_panels(records: pd.DataFrame, arms: Sequence[str], title: str, *,
                height: float) -> Any:
    """One panel per arm present in ``records`` (shared y axis) and one colour per batch
    size: ``(fig, axes, colors, arms)``; a "no records" figure when no arm is present."""
    import matplotlib.pyplot as plt

    arms = [a for a in arms if a in set(records["arm"])]
    if not arms:
        return _empty_figure(title, "no records")
    fig, axes = plt.subplots(1, len(arms), figsize=_figsize(len(arms), height),
                             squeeze=False, sharey=True)
    return fig, axes, batch_colors(records["batch_size"]), arms


def plot_matched_fit(records: pd.DataFrame, arms: Sequence[str], title: str) -> Any:
    """Test error against train error, one panel per arm: every evaluation of the smallest
    batch as a line (its trajectory, one per seed), every other run's last evaluation as a
    marker. A point on the line is a run that generalizes like the small batch at the same
    fit (:func:`matched_fit` turns the vertical distance into an interval). Returns the
    figure."""
    import matplotlib.pyplot as plt

    panels = _arm_panels(records, arms, title, height=3.6)
    if not isinstance(panels, tuple):
        return panels
    fig, axes, colors, arms = panels
    for ax, arm in zip(axes[0], arms, strict=True):
        g = records[records["arm"] == arm]
        b0 = int(g["batch_size"].min())
        for _, r in g[g["batch_size"] == b0].groupby("seed"):
            r = r.sort_values("step")
            ax.plot(r["train_error"], r["test_error"], color=colors[b0], lw=1.2, alpha=0.8)
        fin = final_points(g)
        for b, fb in fin.groupby("batch_size"):
            ax.scatter(fb["train_error"], fb["test_error"], color=colors[int(b)], s=28,
                       edgecolor="black", linewidth=0.4, label=f"{int(b):,}", zorder=3)
        ax.set_title(f"arm {arm}")
        ax.set_xlabel("train error")
    axes[0][0].set_ylabel("test error")
    _batch_legend(fig, axes[0])
    fig.suptitle(title, fontsize=plt.rcParams["font.size"])
    fig.tight_layout()
    return fig


def plot_error_vs_step(records: pd.DataFrame, arms: Sequence[str], title: str,
                       column: str = "test_error") -> Any:
    """``column`` against the optimizer step (log axis), one panel per arm, one line per
    run coloured by batch size. Returns the figure."""
    import matplotlib.pyplot as plt

    panels = _arm_panels(records, arms, title, height=3.4)
    if not isinstance(panels, tuple):
        return panels
    fig, axes, colors, arms = panels
    for ax, arm in zip(axes[0], arms, strict=True):
        g = records[(records["arm"] == arm) & (records["step"] > 0)]
        seen: set[int] = set()
        for (b, _), r in g.groupby(["batch_size", "seed"]):
            r = r.sort_values("step")
            ax.plot(r["step"], r[column], color=colors[int(b)], lw=1.1, alpha=0.85,
                    label=f"{int(b):,}" if int(b) not in seen else None)
            seen.add(int(b))
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"arm {arm}")
    axes[0][0].set_ylabel(column.replace("_", " "))
    _batch_legend(fig, axes[0])
    fig.suptitle(title, fontsize=plt.rcParams["font.size"])
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the chapter


@dataclass
class Analysis:
    """Every decision of one scale: the tables (by name) and the verdicts, in page order."""

    tables: dict[str, pd.DataFrame]
    verdicts: list[Verdict]


def analyse(records: pd.DataFrame, sharpness: pd.DataFrame | None, p: Params, *, scale: str,
            section: str, targets: Sequence[float]) -> Analysis:
    """Apply the five decisions to one scale's records (recorded GPU runs or the laptop
    miniature) with the chapter's thresholds. Arms without records give inconclusive
    verdicts that name them; the matched fit is run for every arm present (arm A, B, C and
    the pilot), the plateau test at the largest batch of arm A, D-plain and the pilot;
    ``sharpness=None`` skips the sharpness test (a scale that does not measure it); the
    momentum of each arm's threshold ``2(1 + β)/η`` is read from the records."""
    tables: dict[str, pd.DataFrame] = {}
    verdicts: list[Verdict] = []
    arms = sorted(set(records["arm"])) if len(records) else []
    t, v = gap_test(records, loss_tolerance=p.loss_tolerance, margin=p.gap_margin,
                    scale=scale, section=section)
    tables["gap"] = t
    verdicts.append(v)
    for arm in [a for a in ("pilot", "A", "B", "C") if a in arms] or ["B"]:
        t, v = matched_fit(records, arm=arm, margin=p.curve_margin,
                           range_tolerance=p.curve_range_tolerance, scale=scale,
                           section=section)
        tables[f"matched_fit_{arm}"] = t
        verdicts.append(v)
    for arm in [a for a in ("B", "A", "pilot") if a in arms] or ["B"]:
        t, v = steps_to_target(records, arm=arm, targets=targets, scale=scale,
                               section=section)
        tables[f"steps_{arm}"] = t
        verdicts.append(v)
    for arm in [a for a in ("A", "D-plain", "pilot") if a in arms] or ["A"]:
        t, v = plateau_test(records, arm=arm, n_evals=p.plateau_evals,
                            margin=p.plateau_margin, scale=scale, section=section)
        tables[f"plateau_{arm}"] = t
        verdicts.append(v)
    if sharpness is None:
        return Analysis(tables, verdicts)
    momentum: dict[str, float] = {}
    if "momentum" in records.columns and len(records):
        m = records.assign(m=pd.to_numeric(records["momentum"], errors="coerce"))
        momentum = {str(a): float(v) for a, v in m.groupby("arm")["m"].first().items()
                    if np.isfinite(v)}
    t, v = sharpness_test(sharpness, momentum=momentum, eos_low=p.eos_low,
                          below_fraction=p.below_fraction, scale=scale, section=section)
    tables["sharpness"] = t
    verdicts.append(v)
    return Analysis(tables, verdicts)


def plot_sharpness(sharpness: pd.DataFrame, momentum: dict[str, float], title: str, *,
                   eos_low: float = 0.8, below_fraction: float = 0.5) -> Any:
    """``η λ_max / 2(1 + β)`` against the step, one line per run, one colour per arm; the
    stability edge at 1 (solid) and the thresholds ``eos_low`` and ``below_fraction``
    (dashed) of :func:`sharpness_test`. Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if len(sharpness) == 0:
        return _empty_figure(title, "no sharpness records")
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    arms = sorted(set(sharpness["arm"]))
    colors = dict(zip(arms, sns.color_palette("colorblind", n_colors=max(len(arms), 1)),
                      strict=False))
    for (arm, _), r in sharpness.groupby(["arm", "run_id"]):
        r = r.sort_values("step")
        ratio = r["lr"] * r["lambda_max"] / (2 * (1 + momentum.get(arm, 0.0)))
        ax.plot(r["step"], ratio, marker="o", ms=3, color=colors[arm], label=arm)
    ax.axhline(1.0, color="black", lw=1)
    for y in (eos_low, below_fraction):
        ax.axhline(y, color="grey", lw=1, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\eta\,\lambda_{\max}\,/\,2(1+\beta)$")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    fig.legend(list(uniq.values()), list(uniq), title="arm", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title, fontsize=plt.rcParams["font.size"])
    fig.tight_layout()
    return fig
