"""One call per (arm, batch size): does a large batch generalize worse, or is it
under-trained?

The input is a record frame (one row per run × evaluation, the schema of
:func:`sgdnoise.sweep.load_records`: ``arm, batch_size, seed, run_id, step, train_loss,
train_error, test_error, status`` and ``n_train``) or, for simulations, the same numbers as
arrays (:class:`ArmRuns`). Within each arm every batch size ``B`` is compared with the arm's
smallest batch ``B₀``, paired by seed, at each run's last evaluation:

1. ``diverged``: some seed of ``B`` diverged (status ``"diverged"`` or a non-finite final
   loss or error). Listed with its count, never dropped.
2. The fit: ``Δℓ_s = ℓ(B, s) − ℓ(B₀, s)`` in final train loss (nats; continuous, unlike
   train error, which is 0 all through the interpolating phase). It *fits as well* when the
   one-sided test rejects ``μ_Δℓ ≥ τ`` at level ``α`` (the upper ``1 − α`` bound is below
   ``τ``) and *fits worse* when it rejects ``μ_Δℓ ≤ τ``.
3. Fits as well: the end points are compared, ``Δe_s = e(B, s) − e(B₀, s)`` in test error.
   ``gap`` when ``μ_Δe ≤ m`` is rejected (with Holm over the pre-registered pairs),
   ``no gap`` when ``μ_Δe ≥ m`` is rejected, else ``undetermined``.
4. Fits worse: the run is compared with the small batch *at the same train loss*. Each
   ``B₀`` seed's evaluations give its test and train error as functions of its train loss
   along the run (:func:`matched_reference`: the first evaluation at which its loss fell to
   that value, interpolated linearly in loss; a run ending below ``B₀``'s lowest loss is
   compared with ``B₀``'s end point). If there the small batch's own test − train error is
   below ``m`` (averaged over the paired seeds), test error cannot differ from train error
   by the margin for any model, the comparison cannot fail, and the call is ``not
   informative``. Otherwise the residual ``r_s = e(B, s) − e_ref(B₀, s)`` gives
   ``under-trained`` when ``μ_r ≥ m`` is rejected (on or below the small batch's curve) and
   ``gap`` (at matched fit) when ``μ_r ≤ m`` is rejected (Holm as in 3).
5. Anything else (the fit undetermined, fewer than two paired seeds): ``undetermined``.

The calls are mutually exclusive by construction: the two one-sided tests of one mean have
p-values that sum to 1, so at ``α < 1/2`` at most one side rejects.

**Multiplicity.** The pre-registered pairs are those of the arms in
``Thresholds.decisive_arms`` with ``B / N ≥ Thresholds.onset_fraction`` (the essay's 4,096
of 50,000). A pair's gap p-value is that of an intersection-union test (the fit test and the
error test must both reject: the larger of their p-values, for the route that applies), and
Holm's step-down adjustment over the pre-registered family controls the family-wise error
rate of the ``gap`` calls, so the existential claim "some pre-registered pair has a gap" is
tested at level ``α``. The universal claims ("every pre-registered pair is ``no gap`` or
``under-trained``") are intersection-union tests over the pairs: each pair must reject at
level ``α``, which is valid at level ``α`` without a correction. Pairs outside the family
are called at the unadjusted level, shown as descriptive, and never decide a headline.

The two routes of one pair are disjoint events (fits as well / fits worse); at the boundary
``μ_Δℓ = τ`` their sizes can add, so the size of one pair's gap call is at most ``2α`` there
and about ``α`` elsewhere. :mod:`sgdnoise.decide.harness` measures the rates by simulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .pvalues import OneSided, holm, intersection_union, one_sided

__all__ = [
    "CALLS",
    "HEADLINE_OUTCOMES",
    "ArmRuns",
    "Decision",
    "PairStats",
    "SimDecision",
    "Thresholds",
    "arm_runs",
    "decide",
    "decide_runs",
    "matched_reference",
    "onset",
    "pair_stats",
]

CALLS = ("gap", "no gap", "under-trained", "not informative", "diverged", "undetermined")
GAP, NO_GAP, UNDER, NOT_INFORMATIVE, DIVERGED, UNDETERMINED = range(len(CALLS))
HEADLINE_OUTCOMES = ("supported", "contradicted", "inconclusive")
SUPPORTED, CONTRADICTED, INCONCLUSIVE = range(len(HEADLINE_OUTCOMES))
ESSAY_ONSET = (4096, 50_000)  # the essay's onset batch size and training-set size


@dataclass(frozen=True)
class Thresholds:
    """What the decision needs besides the records.

    - loss_tolerance: ``τ`` (nats): a large batch *fits as well* when its mean excess final
      train loss is below ``τ`` at level ``α``.
    - margin: ``m`` (error units, 0.01 = 1 point): the smallest test-error difference that
      counts as a gap, and the smallest test − train error of the small batch at which a
      matched comparison is informative.
    - alpha: the level of every test (family-wise, with Holm, for the ``gap`` calls).
    - onset_fraction: pairs with ``B / N`` at or above it are pre-registered (the essay's
      4,096 / 50,000 = 0.08192).
    - decisive_arms: the arms whose pairs may be pre-registered.
    """

    loss_tolerance: float = 0.02
    margin: float = 0.01
    alpha: float = 0.05
    onset_fraction: float = ESSAY_ONSET[0] / ESSAY_ONSET[1]
    decisive_arms: tuple[str, ...] = ("A", "B", "C")

    def __post_init__(self) -> None:
        checks = [("loss_tolerance", self.loss_tolerance, 0.0 < self.loss_tolerance,
                   "> 0 (nats)"),
                  ("margin", self.margin, 0.0 < self.margin < 1.0, "in (0, 1)"),
                  ("alpha", self.alpha, 0.0 < self.alpha < 0.5, "in (0, 0.5)"),
                  ("onset_fraction", self.onset_fraction, 0.0 < self.onset_fraction <= 1.0,
                   "in (0, 1]")]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ValueError(f"Thresholds.{name} must be {allowed}, got {value!r}")
        object.__setattr__(self, "decisive_arms", tuple(str(a) for a in self.decisive_arms))


# --------------------------------------------------------------------------- the runs


@dataclass
class ArmRuns:
    """The evaluations of one arm's runs as arrays, for one data set (``n_sim = 1``) or many
    simulated ones.

    - arm: the arm's name; n_train: ``N``.
    - batch_sizes: ``(n_B,)`` increasing; ``batch_sizes[0]`` is the reference ``B₀``.
    - seeds: ``(S,)``.
    - loss, train_error, test_error: ``(n_sim, n_B, S, K)``, evaluation ``k`` of each run
      in step order, NaN after a run's last evaluation (and everywhere for a run not made).
    - diverged: ``(n_sim, n_B, S)`` bool.
    """

    arm: str
    n_train: int
    batch_sizes: np.ndarray
    seeds: np.ndarray
    loss: np.ndarray
    train_error: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray

    def __post_init__(self) -> None:
        shape = self.loss.shape
        if len(shape) != 4 or shape[1:3] != (len(self.batch_sizes), len(self.seeds)):
            raise ValueError(f"ArmRuns {self.arm!r}: loss must be (n_sim, n_B="
                             f"{len(self.batch_sizes)}, S={len(self.seeds)}, K), got {shape}")
        for name in ("train_error", "test_error"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"ArmRuns {self.arm!r}: {name} must have shape {shape}")
        if self.diverged.shape != shape[:3]:
            raise ValueError(f"ArmRuns {self.arm!r}: diverged must have shape {shape[:3]}")
        if np.any(np.diff(self.batch_sizes) <= 0):
            raise ValueError(f"ArmRuns {self.arm!r}: batch_sizes must increase, got "
                             f"{list(self.batch_sizes)}")

    @property
    def n_sim(self) -> int:
        return int(self.loss.shape[0])

    def last_index(self) -> tuple[np.ndarray, np.ndarray]:
        """``(index, has)``: the index of each run's last finite evaluation and whether it
        has one, both ``(n_sim, n_B, S)``."""
        finite = np.isfinite(self.loss) & np.isfinite(self.test_error) & np.isfinite(
            self.train_error)
        k = finite.shape[-1]
        index = k - 1 - np.argmax(finite[..., ::-1], axis=-1)
        return index, finite.any(axis=-1)

    def finals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Final train loss, train error and test error, ``(n_sim, n_B, S)`` each (NaN for a
        run without a finite evaluation)."""
        index, has = self.last_index()

        def last(a: np.ndarray) -> np.ndarray:
            v = np.take_along_axis(a, index[..., None], axis=-1)[..., 0]
            return np.where(has, v, np.nan)

        return last(self.loss), last(self.train_error), last(self.test_error)


def _run_diverged(run: pd.DataFrame) -> bool:
    last = run.iloc[-1]
    finite = all(np.isfinite(float(last[c])) for c in ("train_loss", "train_error",
                                                      "test_error"))
    return bool((run["status"] == "diverged").any() or not finite)


def _n_train(g: pd.DataFrame, arm: str, n_train: int | None) -> int:
    if n_train is not None:
        return int(n_train)
    if "n_train" not in g.columns or g["n_train"].isna().all():
        raise ValueError(f"records of arm {arm!r} lack an n_train column; pass n_train")
    values = sorted({int(v) for v in g["n_train"].dropna()})
    if len(values) != 1:
        raise ValueError(f"records of arm {arm!r} mix training-set sizes {values}")
    return values[0]


def arm_runs(records: pd.DataFrame, arm: str, n_train: int | None = None) -> ArmRuns:
    """The runs of ``arm`` in a record frame as :class:`ArmRuns` (``n_sim = 1``):
    evaluations in step order, those with a non-finite loss or error left out, a run
    *diverged* when its status says so or its last evaluation is not finite. ``n_train``
    defaults to the records' ``n_train`` column."""
    missing = [c for c in ("arm", "batch_size", "seed", "run_id", "step", "train_loss",
                           "train_error", "test_error", "status") if c not in records.columns]
    if missing:
        raise ValueError(f"records lack column(s) {missing}")
    g = records[records["arm"] == arm]
    if len(g) == 0:
        raise ValueError(f"no records of arm {arm!r}; arms present: "
                         f"{sorted(set(records['arm']))}")
    sizes = np.array(sorted({int(b) for b in g["batch_size"]}))
    seeds = np.array(sorted({int(s) for s in g["seed"]}))
    runs = {key: r.sort_values("step") for key, r in g.groupby(["batch_size", "seed"])}
    k = max(len(r) for r in runs.values())
    arrays = {c: np.full((1, len(sizes), len(seeds), k), np.nan)
              for c in ("train_loss", "train_error", "test_error")}
    diverged = np.zeros((1, len(sizes), len(seeds)), dtype=bool)
    for (b, s), r in runs.items():
        i, j = int(np.searchsorted(sizes, int(b))), int(np.searchsorted(seeds, int(s)))
        diverged[0, i, j] = _run_diverged(r)
        vals = r[list(arrays)].to_numpy(float)
        vals = vals[np.isfinite(vals).all(axis=1)]
        for c, col in zip(arrays, vals.T, strict=True):
            arrays[c][0, i, j, :len(col)] = col
    return ArmRuns(str(arm), _n_train(g, arm, n_train), sizes, seeds, arrays["train_loss"],
                   arrays["train_error"], arrays["test_error"], diverged)


# --------------------------------------------------------------------------- pair statistics


def matched_reference(runs: ArmRuns, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference batch's test and train error at given train losses.

    ``query: (n_sim, J, S)`` losses, one per large-batch run. For the ``B₀`` run of the same
    seed with evaluations ``(ℓ_k, e_k)`` in step order, let ``k*`` be the first evaluation
    with ``ℓ_k ≤ q``; the reference is ``e_{k*−1} + w (e_{k*} − e_{k*−1})`` with ``w =
    (ℓ_{k*−1} − q) / (ℓ_{k*−1} − ℓ_{k*})`` (all earlier losses exceed ``q``, so ``w`` is in
    ``(0, 1]``): the error when the small batch *first* reached that train loss. ``k* = 0``
    gives the first evaluation; a loss below every ``ℓ_k`` gives ``B₀``'s end point (never
    an average over the interpolating phase). Returns ``(test, train)``, ``(n_sim, J, S)``
    each."""
    n_sim, _, s, k = runs.loss.shape
    j = query.shape[1]
    shape = (n_sim, j, s, k)

    def ref(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a[:, :1], shape)

    loss = ref(runs.loss)
    with np.errstate(invalid="ignore"):
        hit = loss <= query[..., None]
    any_hit = hit.any(axis=-1)
    first = np.argmax(hit, axis=-1)
    before = np.maximum(first - 1, 0)
    last = np.broadcast_to(runs.last_index()[0][:, :1], (n_sim, j, s))

    def at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx[..., None], axis=-1)[..., 0]

    with np.errstate(invalid="ignore", divide="ignore"):
        lp, lk = at(loss, before), at(loss, first)
        w = np.where(first > 0, (lp - query) / (lp - lk), 1.0)
    out = []
    for a in (ref(runs.test_error), ref(runs.train_error)):
        interp = at(a, before) + w * (at(a, first) - at(a, before))
        out.append(np.where(any_hit, interp, at(a, last)))
    return out[0], out[1]


@dataclass
class PairStats:
    """The tests of one arm's pairs ``(B, B₀)``, arrays ``(n_sim, J)`` for the ``J`` batch
    sizes above ``B₀``.

    - loss: :class:`OneSided` of ``Δℓ`` against ``τ``; end: of ``Δe`` against ``m``;
      matched: of the residual ``r`` against ``m``.
    - ref_gap: the small batch's test − train error at the matched train loss (mean over
      the paired seeds).
    - n_pairs: paired seeds; n_runs: seeds run at ``B``; n_diverged: of those, diverged.
    """

    arm: str
    n_train: int
    b0: int
    batch_sizes: np.ndarray
    loss: OneSided
    end: OneSided
    matched: OneSided
    ref_gap: np.ndarray
    n_pairs: np.ndarray
    n_runs: np.ndarray
    n_diverged: np.ndarray


def _nanmean(a: np.ndarray, axis: int = -1) -> np.ndarray:
    finite = np.isfinite(a)
    n = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def pair_stats(runs: ArmRuns, th: Thresholds) -> PairStats:
    """The paired differences and their one-sided tests for every ``B > B₀`` of one arm
    (see the module docstring for the rule)."""
    loss, _, test = runs.finals()
    ok = np.isfinite(loss) & np.isfinite(test) & ~runs.diverged
    pair = ok[:, :1] & ok[:, 1:]
    big_loss, big_test = loss[:, 1:], test[:, 1:]
    ref_test, ref_train = matched_reference(runs, np.where(pair, big_loss, np.nan))
    dl = np.where(pair, big_loss - loss[:, :1], np.nan)
    de = np.where(pair, big_test - test[:, :1], np.nan)
    r = np.where(pair, big_test - ref_test, np.nan)
    made = np.isfinite(big_loss) | runs.diverged[:, 1:]
    return PairStats(runs.arm, runs.n_train, int(runs.batch_sizes[0]),
                     np.asarray(runs.batch_sizes[1:]), one_sided(dl, th.loss_tolerance),
                     one_sided(de, th.margin), one_sided(r, th.margin),
                     _nanmean(np.where(pair, ref_test - ref_train, np.nan)),
                     pair.sum(axis=-1), made.sum(axis=-1), runs.diverged[:, 1:].sum(axis=-1))


# --------------------------------------------------------------------------- the calls


@dataclass
class SimDecision:
    """The calls of every pair and the two headline outcomes, for ``n_sim`` data sets.

    - pairs: the :class:`PairStats` of each arm, in order; arms, batch_sizes, fractions,
      preregistered: ``(P,)`` over the concatenated pairs.
    - p_gap: ``(n_sim, P)`` the gap p-value of each pair (intersection-union, route that
      applies); p_gap_holm: Holm-adjusted over the pre-registered pairs (unchanged
      elsewhere).
    - calls: ``(n_sim, P)`` codes into :data:`CALLS`; gap, under_training: ``(n_sim,)``
      codes into :data:`HEADLINE_OUTCOMES`.
    """

    pairs: list[PairStats]
    arms: np.ndarray
    batch_sizes: np.ndarray
    fractions: np.ndarray
    preregistered: np.ndarray
    p_gap: np.ndarray
    p_gap_holm: np.ndarray
    informative: np.ndarray
    calls: np.ndarray
    gap: np.ndarray
    under_training: np.ndarray

    def call_labels(self) -> np.ndarray:
        return np.asarray(CALLS, dtype=object)[self.calls]

    def gap_labels(self) -> np.ndarray:
        return np.asarray(HEADLINE_OUTCOMES, dtype=object)[self.gap]

    def under_training_labels(self) -> np.ndarray:
        return np.asarray(HEADLINE_OUTCOMES, dtype=object)[self.under_training]


def _cat(arrays: Sequence[np.ndarray], n_sim: int) -> np.ndarray:
    return np.concatenate(arrays, axis=-1) if arrays else np.zeros((n_sim, 0))


def _codes(st: dict[str, np.ndarray], p_call: np.ndarray, alpha: float) -> np.ndarray:
    """The call codes from the concatenated pair statistics (exclusive; see the module
    docstring)."""
    fits_well = st["p_fit_well"] <= alpha
    fits_worse = st["p_fit_worse"] <= alpha
    code = np.full(p_call.shape, UNDETERMINED, dtype=np.int8)
    code[fits_worse & ~st["informative"]] = NOT_INFORMATIVE
    code[fits_worse & st["informative"] & (st["p_under"] <= alpha)] = UNDER
    code[fits_well & (st["p_no_gap"] <= alpha)] = NO_GAP
    code[p_call <= alpha] = GAP
    code[st["diverged"]] = DIVERGED
    return code


def _headlines(calls: np.ndarray, prereg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Headline codes ``(n_sim,)``: the gap claim is supported when some pre-registered
    pair is ``gap``, contradicted when every one is ``no gap`` or ``under-trained``; the
    under-training claim is supported when every one is ``no gap`` or ``under-trained`` and
    at least one is ``under-trained``, contradicted when the gap claim is supported."""
    n_sim = calls.shape[0]
    gap = np.full(n_sim, INCONCLUSIVE, dtype=np.int8)
    under = np.full(n_sim, INCONCLUSIVE, dtype=np.int8)
    if not prereg.any():
        return gap, under
    c = calls[:, prereg]
    some_gap = (c == GAP).any(axis=1)
    all_fine = np.isin(c, (NO_GAP, UNDER)).all(axis=1)
    gap[all_fine] = CONTRADICTED
    gap[some_gap] = SUPPORTED
    under[all_fine & (c == UNDER).any(axis=1)] = SUPPORTED
    under[some_gap] = CONTRADICTED
    return gap, under


def decide_runs(arms: Sequence[ArmRuns], th: Thresholds) -> SimDecision:
    """The calls and headlines for arms given as arrays (all with the same ``n_sim``);
    arms with a single batch size contribute no pair."""
    n_sims = {a.n_sim for a in arms}
    if len(n_sims) > 1:
        raise ValueError(f"arms must share n_sim, got {sorted(n_sims)}")
    n_sim = n_sims.pop() if n_sims else 1
    pairs = [pair_stats(a, th) for a in arms if len(a.batch_sizes) >= 2]
    m = th.margin
    st = {
        "p_fit_well": _cat([p.loss.p_less for p in pairs], n_sim),
        "p_fit_worse": _cat([p.loss.p_greater for p in pairs], n_sim),
        "p_end_gap": _cat([p.end.p_greater for p in pairs], n_sim),
        "p_no_gap": _cat([p.end.p_less for p in pairs], n_sim),
        "p_matched_gap": _cat([p.matched.p_greater for p in pairs], n_sim),
        "p_under": _cat([p.matched.p_less for p in pairs], n_sim),
        "informative": _cat([p.ref_gap >= m for p in pairs], n_sim).astype(bool),
        "diverged": _cat([p.n_diverged > 0 for p in pairs], n_sim).astype(bool),
    }
    arms_p = np.array([p.arm for p in pairs for _ in p.batch_sizes], dtype=object)
    sizes = np.concatenate([p.batch_sizes for p in pairs]) if pairs else np.zeros(0, int)
    fractions = np.concatenate([p.batch_sizes / p.n_train for p in pairs]) if pairs else \
        np.zeros(0)
    prereg = np.isin(arms_p, th.decisive_arms) & (fractions >= th.onset_fraction - 1e-12)
    p_gap = np.minimum(
        intersection_union(st["p_fit_well"], st["p_end_gap"]),
        np.where(st["informative"],
                 intersection_union(st["p_fit_worse"], st["p_matched_gap"]), 1.0))
    p_gap = np.where(st["diverged"], 1.0, p_gap)
    p_holm = p_gap.copy()
    p_holm[:, prereg] = holm(p_gap[:, prereg])
    calls = _codes(st, p_holm, th.alpha)
    gap, under = _headlines(calls, prereg)
    return SimDecision(pairs, arms_p, sizes, fractions, prereg, p_gap, p_holm,
                       st["informative"], calls, gap, under)


# --------------------------------------------------------------------------- one data set


@dataclass
class Decision:
    """The decision on one record frame.

    - table: one row per (arm, ``B > B₀``): ``arm, B0, B, B/N, pre-registered, seeds,
      diverged, d_train_loss, fit, compared at, difference, small-batch gap, p (gap),
      p (gap, Holm), call``; ``d_train_loss`` and ``difference`` are ``(mean, low, high)``
      with one-sided ``1 − α`` bounds (test-error units for ``difference``).
    - gap, under_training: the headline outcomes (:data:`HEADLINE_OUTCOMES`).
    - onset: the smallest ``B`` whose call is ``gap`` (None without one); onset_fraction:
      its ``B / N``.
    """

    table: pd.DataFrame
    gap: str
    under_training: str
    thresholds: Thresholds
    onset: int | None = None
    onset_fraction: float | None = None
    arms: list[str] = field(default_factory=list)

    def preregistered(self) -> pd.DataFrame:
        """The rows of the pre-registered pairs."""
        return self.table[self.table["pre-registered"].astype(bool).to_numpy()]


def _fit_label(p_well: float, p_worse: float, alpha: float) -> str:
    return "as well" if p_well <= alpha else "worse" if p_worse <= alpha else "undetermined"


def _pair_rows(sim: SimDecision, th: Thresholds) -> list[dict]:
    rows, col = [], 0
    for p in sim.pairs:
        lo_l, hi_l = p.loss.bounds(th.alpha)
        lo_e, hi_e = p.end.bounds(th.alpha)
        lo_r, hi_r = p.matched.bounds(th.alpha)
        for j, b in enumerate(p.batch_sizes):
            fit = _fit_label(p.loss.p_less[0, j], p.loss.p_greater[0, j], th.alpha)
            matched = fit == "worse"
            diff = ((p.matched.mean, lo_r, hi_r) if matched else (p.end.mean, lo_e, hi_e))
            rows.append({
                "arm": p.arm, "B0": p.b0, "B": int(b), "B/N": float(b / p.n_train),
                "pre-registered": bool(sim.preregistered[col]),
                "seeds": int(p.n_pairs[0, j]),
                "diverged": f"{int(p.n_diverged[0, j])} of {int(p.n_runs[0, j])}",
                "d_train_loss": tuple(float(a[0, j]) for a in (p.loss.mean, lo_l, hi_l)),
                "fit": fit,
                "compared at": "matched train loss" if matched else "end points",
                "difference": tuple(float(a[0, j]) for a in diff),
                "small-batch gap": float(p.ref_gap[0, j]) if matched else float("nan"),
                "p (gap)": float(sim.p_gap[0, col]),
                "p (gap, Holm)": (float(sim.p_gap_holm[0, col]) if sim.preregistered[col]
                                  else float("nan")),
                "call": CALLS[int(sim.calls[0, col])],
            })
            col += 1
    return rows


TABLE_COLUMNS = ("arm", "B0", "B", "B/N", "pre-registered", "seeds", "diverged",
                 "d_train_loss", "fit", "compared at", "difference", "small-batch gap",
                 "p (gap)", "p (gap, Holm)", "call")


def decide(records: pd.DataFrame, th: Thresholds | None = None, *,
           n_train: int | None = None) -> Decision:
    """Apply the decision procedure to a record frame: every arm with at least two batch
    sizes is tested against its smallest; see the module docstring. ``n_train`` defaults to
    the records' ``n_train`` column. Records with no arm of two batch sizes give an empty
    table and inconclusive headlines."""
    th = th or Thresholds()
    arms = sorted({str(a) for a in records["arm"]}) if len(records) else []
    runs = [arm_runs(records, a, n_train) for a in arms]
    sim = decide_runs(runs, th)
    table = pd.DataFrame(_pair_rows(sim, th), columns=list(TABLE_COLUMNS))
    b_on, frac = onset(table)
    return Decision(table, HEADLINE_OUTCOMES[int(sim.gap[0])],
                    HEADLINE_OUTCOMES[int(sim.under_training[0])], th, b_on, frac, arms)


def onset(table: pd.DataFrame) -> tuple[int | None, float | None]:
    """The smallest batch size whose call is ``gap`` in a :func:`decide` table (any arm,
    pre-registered or descriptive) and its ``B / N``; ``(None, None)`` without a gap."""
    missing = [c for c in ("B", "call") if c not in table.columns]
    if missing:
        raise ValueError(f"a decision table needs column(s) {missing}")
    gaps = table[table["call"] == "gap"]
    if len(gaps) == 0:
        return None, None
    row = gaps.loc[gaps["B"].idxmin()]
    frac = float(row["B/N"]) if "B/N" in gaps.columns else None
    return int(row["B"]), frac
