"""Small dense problems shared by chapters 1-3 (and reused by chapter 5): a stratified,
pooled subset of CIFAR-10 (:func:`load_small_problem`), float64 models small enough for
dense ``(P, P)`` matrices (:func:`build_small_model`), plain SGD on them through the
training engine (:func:`plain_sgd`, a thin call of :func:`sgdnoise.train.train` with hooks;
:func:`train_small` adds snapshots), the five dense curvature matrices at one point
(:func:`curvature_matrices`), top eigenpairs, and seeded mini-batch index draws.

Notation: ``G: (N, P)`` per-example gradients (rows g_i), ``ḡ`` their mean, centred rows
``G̃ = G − 1ḡᵀ``, ``D = G̃ᵀG̃/N``. Dense linear algebra is float64.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from sgdnoise.params import ChapterParams, param
from sgdnoise.train import (
    PlainSGD,
    StepState,
    TrainConfig,
    TrainResult,
    evaluate,
    total_steps,
    train,
)
from sgdnoise.validate import check_choice, check_matrix, check_positive_int

__all__ = [
    "CLAIM_OUTCOMES",
    "DT",
    "ClaimRates",
    "Condition",
    "SmallProblem",
    "SmallProblemParams",
    "TrainTrace",
    "batch_indices",
    "build_small_model",
    "claim_outcomes",
    "claim_rates",
    "condition_pvalues",
    "curvature_matrices",
    "load_small_problem",
    "fixed",
    "interval",
    "load_small_split",
    "loss_and_error",
    "number",
    "plain_sgd",
    "pooled_seed_sd",
    "top_eigenpairs",
    "train_small",
]

DT = torch.float64


@dataclass(frozen=True)
class SmallProblemParams(ChapterParams):
    """The parameters of :func:`load_small_problem` that chapters 1–3 share, declared once:
    their ``Params`` extend it."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="image source")
    n_train: int = param(low=20, high=50000, doc="training examples N")
    image_size: int = param(choices=(1, 2, 4, 8, 16, 32), doc="pooled image side (pixels)")


@dataclass
class SmallProblem:
    """A small classification problem: ``x: (N, 3, s, s)`` float64 (normalised, average
    pooled to s×s), ``y: (N,)`` int64, ``identity``: the data identity record as a dict."""

    x: torch.Tensor
    y: torch.Tensor
    identity: dict[str, Any]
    classes: list[str]

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


def load_small_problem(
    dataset: str,
    n_train: int,
    *,
    image_size: int = 8,
    seed: int = 0,
    data_dir: str | None = None,
) -> SmallProblem:
    """A stratified seeded subset of ``n_train`` training images of ``dataset``
    ("cifar10" | "synthetic"), normalised and average-pooled to ``image_size × image_size``
    pixels so that dense (P, P) matrices stay small. The identity records the pooling."""
    from sgdnoise.data import load_dataset

    n_train = check_positive_int("n_train", n_train)
    image_size = check_positive_int("image_size", image_size)
    kw = {"n_test": 10} if dataset == "synthetic" else {}
    data = load_dataset(dataset, n_train=n_train, seed=seed, data_dir=data_dir, **kw)
    return _pooled(data, image_size)[0]


def load_small_split(
    dataset: str,
    n_train: int,
    n_test: int,
    *,
    image_size: int = 8,
    seed: int = 0,
    data_dir: str | None = None,
) -> tuple[SmallProblem, SmallProblem]:
    """Like :func:`load_small_problem`, but returns ``(train, test)``: stratified seeded
    subsets of ``n_train`` training and ``n_test`` test images, pooled alike."""
    from sgdnoise.data import load_dataset

    n_train = check_positive_int("n_train", n_train)
    n_test = check_positive_int("n_test", n_test)
    image_size = check_positive_int("image_size", image_size)
    data = load_dataset(dataset, n_train=n_train, n_test=n_test, seed=seed, data_dir=data_dir)
    return _pooled(data, image_size)


def _pooled(data: Any, image_size: int) -> tuple[SmallProblem, SmallProblem]:
    """The train and test splits of an ImageData, normalised (:func:`sgdnoise.data.to_float`),
    average-pooled to ``image_size``² pixels (:func:`sgdnoise.data.pool_images`), float64."""
    from sgdnoise.data import pool_images, to_float

    identity = dict(data.identity.to_dict())
    identity["preprocessing"] = f"normalised, average-pooled to {image_size}x{image_size}"
    train, test = (
        SmallProblem(x=pool_images(to_float(x), image_size, name="image_size").to(DT),
                     y=y.clone(), identity=identity, classes=list(data.classes))
        for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y))
    )
    return train, test


def build_small_model(
    name: str,
    in_shape: Sequence[int],
    *,
    width: int = 8,
    num_classes: int = 10,
    bias: bool = True,
    activation: str = "relu",
    seed: int = 0,
) -> nn.Module:
    """A float64 model for dense-matrix studies: "softmax" (softmax regression), "mlp"
    (one hidden layer of ``width`` units, ``activation`` "relu" | "tanh"), "cnn" (3-block
    small CNN, first block ``width`` channels, no normalisation). Seeded."""
    from sgdnoise.models import build_model

    check_choice("name", name, ("softmax", "mlp", "cnn"))
    torch.manual_seed(seed)
    if name == "softmax":
        model = build_model("softmax", num_classes=num_classes, in_shape=in_shape, bias=bias)
    elif name == "mlp":
        model = build_model(
            "mlp", num_classes=num_classes, in_shape=in_shape, hidden=[width], bias=bias,
            activation=activation,
        )
    else:
        model = build_model(
            "cnn", num_classes=num_classes, in_shape=in_shape, width=width, norm="none",
            bias=bias,
        )
    return model.to(DT)


@dataclass
class TrainTrace:
    """Result of :func:`train_small`: ``history`` (step, train_loss, train_error) at each
    checkpoint, ``snapshots`` {step: state_dict copy}, ``status`` of the run ("finished",
    or "diverged" when a training loss was not finite: the steps still all ran)."""

    history: pd.DataFrame
    snapshots: dict[int, dict[str, torch.Tensor]] = field(repr=False)
    status: str = "finished"


def loss_and_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` on all of ``x: (N, ...)``, ``y: (N,)``
    in one forward pass (:func:`sgdnoise.train.evaluate`, no autocast)."""
    return evaluate(model, x, y, batch_size=max(1, x.shape[0]), amp=False,
                    channels_last=False)


def plain_sgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    batch_size: int,
    hooks: Sequence[object] = (),
    seed: int = 0,
    drop_last: bool = True,
    max_steps: int | None = None,
    epochs: int = 1,
    divergence_check_every: int | None = None,
    optimizer: Callable[[nn.Module, float], Any] | None = None,
) -> TrainResult:
    """Plain SGD on mean cross-entropy over ``x: (N, ...)`` (images or ``(N, D)`` features),
    ``y: (N,)``: :func:`sgdnoise.train.train` on the CPU with ``model`` (trained in place,
    its dtype kept), ``max_steps`` steps (else ``epochs`` epochs), constant ``lr``, no
    momentum or weight decay (:class:`sgdnoise.train.PlainSGD`), no augmentation, no
    evaluation (``eval_points=0``: ``hooks`` measure what they need) and no progress bar.

    Each epoch is a fresh permutation of ``range(N)`` from the engine's shuffle generator
    (seeded ``1_000_003·seed + 17``), cut into consecutive batches of ``batch_size``; with
    ``drop_last`` the last ``N mod B`` examples of each permutation are skipped, else the
    last batch of an epoch may be smaller. The update is ``θ ← θ − η ∇L_batch``.
    ``divergence_check_every``: steps between the engine's checks for a non-finite loss
    (default: only at the end, so every step runs and a divergence shows as status
    "diverged"). ``optimizer``: ``(model, lr) -> optimizer`` in place of
    :class:`sgdnoise.train.PlainSGD` (a subclass that observes each batch, say)."""
    cfg = TrainConfig(
        batch_size=batch_size, epochs=epochs, max_steps=max_steps, lr=lr, momentum=0.0,
        weight_decay=0.0, augment=False, seed=seed, device="cpu", channels_last=False,
        amp=False, drop_last=drop_last, eval_points=0,
    ).validate()
    cfg.divergence_check_every = divergence_check_every or total_steps(cfg, x.shape[0])
    return train(cfg, {"train_x": x, "train_y": y}, model=model, hooks=hooks, progress=False,
                 optimizer_factory=lambda m: (PlainSGD(m.parameters(), cfg.lr)
                                              if optimizer is None else optimizer(m, cfg.lr)))


class _Checkpoints:
    """``on_step`` hook of :func:`train_small`: at the steps in ``marks``, the training loss
    and error on all of ``x, y`` and a copy of the parameters."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, marks: Sequence[int]) -> None:
        self.x, self.y, self.marks = x, y, set(marks)
        self.rows: list[dict[str, float]] = []
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def record(self, model: nn.Module, step: int) -> None:
        loss, err = loss_and_error(model, self.x, self.y)
        self.rows.append({"step": step, "train_loss": loss, "train_error": err})
        self.snapshots[step] = copy.deepcopy(model.state_dict())

    def on_step(self, state: StepState) -> None:
        if state.step in self.marks:
            self.record(state.model, state.step)


def train_small(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    checkpoints: Sequence[int] = (),
    seed: int = 0,
) -> TrainTrace:
    """``steps`` updates of :func:`plain_sgd` (batches without replacement, the remainder
    of each permutation dropped); snapshots the parameters at every step in
    ``checkpoints`` (0 = initialisation) and at the end. Modifies ``model`` in place."""
    steps = check_positive_int("steps", steps)
    marks = sorted({int(c) for c in checkpoints if 0 <= int(c) <= steps} | {steps})
    hook = _Checkpoints(x, y, marks)
    if 0 in marks:
        hook.record(model, 0)
    res = plain_sgd(model, x, y, lr=lr, batch_size=batch_size, hooks=[hook], seed=seed,
                    drop_last=True, max_steps=steps)
    return TrainTrace(history=pd.DataFrame(hook.rows), snapshots=hook.snapshots,
                      status=res.status)


def batch_indices(
    n: int, b: int, s: int, replacement: bool, gen: torch.Generator
) -> torch.Tensor:
    """``(s, b)`` int64 indices into ``range(n)``: ``s`` mini-batches of size ``b``, drawn
    with replacement (uniform) or without (a uniform random ``b``-subset per row)."""
    if replacement:
        return torch.randint(n, (s, b), generator=gen)
    return torch.rand((s, n), generator=gen).argsort(dim=1)[:, :b]


def curvature_matrices(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int | None = 250
) -> dict[str, torch.Tensor]:
    """Dense float64 ``(P, P)`` matrices at the model's current parameters, for mean
    cross-entropy: "D" (gradient covariance), "F_hat" (empirical Fisher), "F" (true Fisher),
    "GGN", "H" (Hessian); plus "gbar" (P,) and "G" (N, P) per-example gradients."""
    from sgdnoise.curvature import ggn, hessian, true_fisher
    from sgdnoise.grads import per_example_grads

    loss = nn.functional.cross_entropy
    G = per_example_grads(model, loss, x, y, chunk_size=chunk_size).to(DT)
    n = G.shape[0]
    gbar = G.mean(0)
    F_hat = G.T @ G / n
    D = F_hat - torch.outer(gbar, gbar)
    return {
        "D": 0.5 * (D + D.T),
        "F_hat": F_hat,
        "F": true_fisher(model, x, chunk_size=chunk_size).to(DT),
        "GGN": ggn(model, loss, x, y, chunk_size=chunk_size).to(DT),
        "H": hessian(model, loss, x, y, chunk_size=chunk_size).to(DT),
        "gbar": gbar,
        "G": G,
    }


def top_eigenpairs(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (largest algebraic) eigenpairs of a dense symmetric ``A: (P, P)``:
    ``(evals (k,) descending, evecs (P, k))``."""
    check_matrix("A", A, square=True)
    k = check_positive_int("k", k)
    P = A.shape[0]
    if k > P:
        raise ValueError(f"k must be <= P={P}, got {k}")
    evals, evecs = torch.linalg.eigh(0.5 * (A + A.T))
    return evals.flip(0)[:k], evecs.flip(1)[:, :k]


# --------------------------------------------------------------------------- decisions

#: The outcomes of :func:`claim_outcomes`, in the order of its codes.
CLAIM_OUTCOMES = ("supported", "contradicted", "inconclusive")
SIDES = ("above", "below")


@dataclass(frozen=True)
class Condition:
    """One condition of a claim about SGD: the mean over seeds of item ``item``'s per-seed
    statistic lies ``side`` (``"above"`` or ``"below"``) ``threshold``. A claim is a list of
    conditions that must all hold (a range is two conditions on one item)."""

    item: int
    side: str
    threshold: float

    def __post_init__(self) -> None:
        check_choice("side", self.side, SIDES)
        if self.item < 0:
            raise ValueError(f"Condition.item must be >= 0, got {self.item}")


def _as_batch(x: np.ndarray) -> np.ndarray:
    """``x: (n_items, S)`` or ``(n_sim, n_items, S)`` as the latter."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"x must be (n_items, S) or (n_sim, n_items, S), got shape {x.shape}")
    return x


def condition_pvalues(x: np.ndarray, conditions: Sequence[Condition]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One-sided t-tests of each condition across seeds: ``x: (n_sim, n_items, S)`` per-seed
    statistics (NaN = missing seed). For condition ``j`` with threshold ``t``:
    ``p_hold[:, j]`` is the p-value of H0 "the mean is on the wrong side of ``t``" (small:
    the condition holds) and ``p_fail[:, j]`` that of H0 "the mean is on the claimed side"
    (small: it fails); they add to 1 wherever a test is made. Both ``(n_sim, k)``."""
    from sgdnoise.decide.pvalues import one_sided

    x = _as_batch(x)
    if not conditions:
        raise ValueError("conditions must hold at least one Condition")
    hold, fail = [], []
    for c in conditions:
        if c.item >= x.shape[1]:
            raise ValueError(f"condition on item {c.item}, but x has {x.shape[1]} items")
        t = one_sided(x[:, c.item, :], c.threshold)
        above = c.side == "above"
        hold.append(t.p_greater if above else t.p_less)
        fail.append(t.p_less if above else t.p_greater)
    return np.stack(hold, -1), np.stack(fail, -1)


def claim_outcomes(x: np.ndarray, conditions: Sequence[Condition], alpha: float
                   ) -> np.ndarray:
    """The outcome of a claim from per-seed statistics ``x: (n_items, S)`` or
    ``(n_sim, n_items, S)``: ``"supported"`` when every condition holds at level ``alpha``
    (an intersection-union test: the largest ``p_hold`` is at most ``alpha``),
    ``"contradicted"`` when some condition fails at level ``alpha`` after Holm's adjustment
    over the conditions, ``"inconclusive"`` otherwise. The two cannot both happen at
    ``alpha < 1/2`` (``p_hold + p_fail = 1``). Returns ``(n_sim,)`` labels."""
    from sgdnoise.decide.pvalues import holm

    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    p_hold, p_fail = condition_pvalues(x, conditions)
    supported = p_hold.max(-1) <= alpha
    contradicted = (holm(p_fail) <= alpha).any(-1)
    code = np.where(supported, 0, np.where(contradicted, 1, 2))
    return np.asarray(CLAIM_OUTCOMES, dtype=object)[code]


def pooled_seed_sd(x: np.ndarray) -> tuple[float, int]:
    """The pooled within-item standard deviation of per-seed statistics ``x: (n_items,
    S)`` (NaN = missing) and its degrees of freedom ``Σ_items (n_i − 1)``; ``(NaN, 0)``
    without an item of two seeds."""
    x = np.asarray(x, dtype=float)
    ss, df = 0.0, 0
    for row in x:
        v = row[np.isfinite(row)]
        if v.size >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            df += v.size - 1
    return (float(np.sqrt(ss / df)), df) if df else (float("nan"), 0)


@dataclass(frozen=True)
class ClaimRates:
    """Error rates of :func:`claim_outcomes` measured by simulation
    (:func:`claim_rates`).

    - false_positive: the largest rate of "supported" over the truths where the claim is
      false (one condition exactly at its threshold, the others at the effect; and the
      opposite truth when one is given).
    - power: the rate of "supported" when every item sits at the stated effect.
    - false_contradiction: the rate of "contradicted" at the stated effect.
    - n_seeds, n_sim, sd, df: seeds per item, simulated data sets per truth, the seed-to-seed
      standard deviation used and its degrees of freedom; effect: the effect in words;
      quantity: what the standard deviation is of, in words.
    """

    false_positive: float
    power: float
    false_contradiction: float
    n_seeds: int
    n_sim: int
    sd: float
    df: int
    effect: str
    quantity: str = ""

    def conditions(self) -> str:
        """The phrase :meth:`sgdnoise.report.Verdict.with_error_rates` prints as
        ``rates_at``."""
        of = f" of the {self.quantity}" if self.quantity else ""
        return (f"{self.effect}; seed-to-seed standard deviation{of} {self.sd:.3g}, "
                f"measured with {self.df} degrees of freedom; with the effect present the "
                f"rule says contradicted in {self.false_contradiction:.1%} of the simulated "
                f"data sets")


def claim_rates(conditions: Sequence[Condition], *, effect: Sequence[float],
                sd: float | Sequence[float], n_seeds: int, alpha: float, describe: str,
                opposite: Sequence[float] | None = None, df: int = 0, n_sim: int = 2000,
                seed: int = 0, quantity: str = "") -> ClaimRates:
    """The false-positive rate and power of :func:`claim_outcomes` with ``conditions``, by
    simulation (:func:`sgdnoise.decide.harness.error_rates`): per-seed statistics
    ``x_{item, s} = μ_item + σ_item ε``, ``ε`` standard normal, ``n_seeds`` seeds.

    Truths: ``effect`` (``μ`` per item where the claim holds: the power); for each
    condition, that item at its threshold and the others at ``effect`` (the claim fails
    at the margin: each a false-positive rate, about ``alpha`` for a t-test; conditions on
    items with the same side, threshold, effect and spread are simulated once, since the
    items are exchangeable); ``opposite``
    (``μ`` per item of the alternative the claim is set against, when given).
    ``describe``: the effect in words, for the verdict; ``df``: the degrees of freedom
    behind ``sd``, and ``quantity``: what it is the spread of, both reported."""
    from sgdnoise.decide.harness import Scenario, error_rates, rate_of

    mu = np.asarray(effect, dtype=float)
    sigma = np.broadcast_to(np.asarray(sd, dtype=float), mu.shape)
    if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
        raise ValueError(f"sd must be positive and finite, got {sd!r}")
    n_seeds = check_positive_int("n_seeds", n_seeds)

    def simulate(means: np.ndarray):
        def draw(n: int, rng: np.random.Generator) -> np.ndarray:
            eps = rng.standard_normal((n, mu.size, n_seeds))
            return means[None, :, None] + sigma[None, :, None] * eps
        return draw

    scenarios = [Scenario("effect", describe, simulate(mu))]
    seen = set()
    for j, c in enumerate(conditions):
        key = (c.side, c.threshold, float(mu[c.item]), float(sigma[c.item]))
        if key in seen:  # an exchangeable item: the same truth, simulated once
            continue
        seen.add(key)
        at = mu.copy()
        at[c.item] = c.threshold
        scenarios.append(Scenario(f"boundary {j}", f"item {c.item} at {c.threshold:g}",
                                  simulate(at)))
    if opposite is not None:
        scenarios.append(Scenario("opposite", "the opposite truth",
                                  simulate(np.asarray(opposite, dtype=float))))
    rates = error_rates(lambda x: claim_outcomes(x, conditions, alpha), scenarios,
                        n_sim=n_sim, seed=seed, outcomes=CLAIM_OUTCOMES)
    fp = max(rate_of(rates, s.name, "supported").rate for s in scenarios[1:])
    return ClaimRates(fp, rate_of(rates, "effect", "supported").rate,
                      rate_of(rates, "effect", "contradicted").rate, n_seeds, n_sim,
                      float(np.max(sigma)), int(df), describe, quantity)


# --------------------------------------------------------------------------- table cells


def number(x: float, digits: int = 3) -> str:
    """A table cell: ``x`` with ``digits`` significant digits (``1.23e-05`` style below
    1e-3 and from 1e5), ``'–'`` for NaN or ±inf, never ``'-0'``."""
    x = float(x)
    if not np.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    text = f"{x:.{digits}g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fixed(x: float, decimals: int = 2) -> str:
    """A table cell with ``decimals`` decimals (``'-1.20'``), ``'–'`` for NaN or ±inf, and
    no negative zero (``-0.001`` → ``'0.00'``)."""
    x = float(x)
    if not np.isfinite(x):
        return "–"
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def interval(estimate: float, low: float, high: float, digits: int = 3, unit: str = "") -> str:
    """``'est [low, high] unit'``, the book's one interval notation: the three values with
    the same number of decimals, enough for ``digits`` significant digits of the estimate
    (``'8.79 [8.38, 9.20]'``, ``'-0.0519 [-0.0581, -0.0458]'``); :func:`number` cells for
    an estimate below 1e-3 or from 1e5 in size, or not finite."""
    tail = f" {unit}" if unit else ""
    e = float(estimate)
    if np.isfinite(e) and 1e-3 <= abs(e) < 1e5:
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(e))))
        return f"{fixed(e, decimals)} [{fixed(low, decimals)}, {fixed(high, decimals)}]" + tail
    return (f"{number(estimate, digits)} [{number(low, digits)}, {number(high, digits)}]"
            + tail)
