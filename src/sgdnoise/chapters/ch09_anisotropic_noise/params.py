"""Chapter 9's parameters (:class:`Params`), the labels of its configurations and budgets,
and its step-cost goals."""

from __future__ import annotations

from dataclasses import dataclass

from sgdnoise.noise import NOISE_KINDS
from sgdnoise.params import ChapterParams, param

__all__ = ["EQUAL_EPOCHS", "EQUAL_STEPS", "LARGE", "LARGE_STEPS", "SMALL", "Params",
           "cost_goals"]

SMALL = "small-batch SGD"
LARGE = "large-batch SGD"
LARGE_STEPS = "large-batch SGD (equal steps)"
EQUAL_EPOCHS = "equal epochs"
EQUAL_STEPS = "equal steps"
STEPS_SUFFIX = " (equal steps)"
SECTION = "sec-ch9-gap"  # where the evidence of the gap verdicts is shown


@dataclass(frozen=True)
class Params(ChapterParams):
    """Every parameter of chapter 9 (values: the notebook's parameters cell and
    ``book/params/ch09_anisotropic_noise/<profile>.yaml``)."""

    dataset: str = param(choices=("cifar10", "synthetic"), doc="training data")
    n_train: int = param(low=20, high=50000, doc="training examples N")
    n_test: int = param(low=10, high=10000, doc="test examples")
    model: str = param(choices=("mlp", "cnn", "resnet20", "resnet18", "resnet34"),
                       doc="network")
    width: int = param(low=1, doc="network width")
    norm: str = param(choices=("group", "none"),
                      doc="normalisation (no BatchNorm: per-example quantities)")
    small_batch: int = param(low=1, doc="small batch b")
    large_batch: int = param(low=2, doc="large batch B")
    epochs: int = param(low=1, doc="epochs of every equal-epochs run (and of small-batch SGD)")
    lr: float = param(low=1e-6, high=10.0, doc="learning rate η, the same in every run")
    momentum: float = param(low=0.0, high=0.99, doc="momentum μ")
    seeds: tuple[int, ...] = param(low=0, min_len=2, doc="seeds (one initialisation each)")
    kinds: tuple[str, ...] = param(choices=NOISE_KINDS, doc="noise kinds at equal epochs")
    epoch_matched_kinds: tuple[str, ...] = param(
        choices=NOISE_KINDS, min_len=0, doc="kinds also run at the epoch-matched scale")
    equal_steps: bool = param(doc="run the equal-steps arm (large batch for B/b more epochs)")
    step_matched_kinds: tuple[str, ...] = param(
        choices=NOISE_KINDS, min_len=0, doc="noise kinds in the equal-steps arm")
    num_samples: int = param(low=2, doc="M for subsampled / true_fisher")
    moment_samples: int = param(low=2, doc="M for isotropic / diag_fisher")
    moment_probes: int = param(low=0, high=64,
                               doc="probes estimating diag(D_M) (0: exact per-example)")
    curvature_samples: int = param(low=2, doc="M for hessian / ggn")
    lanczos_steps: int = param(low=1, high=200, doc="Lanczos steps of the curvature kinds")
    sharpness_examples: int = param(low=10, doc="training examples of the sharpness")
    sharpness_iters: int = param(low=2, doc="Lanczos steps of the sharpness")
    cost_repeats: int = param(low=1, doc="timed repeats of each step kind")
    direction_count: int = param(low=1, high=20, doc="top Hessian directions examined")
    direction_draws: int = param(low=8, doc="noise draws per kind along those directions")
    check_examples: int = param(low=4, high=200, doc="examples of the dense covariance check")
    check_draws: int = param(low=100, doc="draws per kind in the covariance check")
    check_z_max: float = param(low=1.0, high=10.0,
                               doc="largest error of a correct sampler, in sampling RMS errors")
    gap_fraction: float = param(
        low=0.05, high=1.0, doc="fraction of the measured large-batch gap a noisy run must "
        "close to count as closing it")
    rate_simulations: int = param(
        low=100, high=100000, doc="simulated data sets per truth for the error rates")
    equivalence_margin: float = param(
        low=1e-4, high=0.5, doc="anisotropic against isotropic noise: the difference in "
        "test error (absolute, as a fraction) below which the two count as equal")
    alpha: float = param(low=0.001, high=0.2,
                         doc="test level: two-sided 1−α intervals, TOST at α")
    cost_goal_subsampled: float = param(low=1.0, doc="goal for a subsampled step / plain step")
    cost_goal_curvature: float = param(low=1.0, doc="goal for a hessian or ggn step / plain")
    augment: bool = param(doc="data augmentation")
    device: str = param(choices=("cpu", "cuda"), doc="device")
    records_dir: str = param(doc="full profile: the GPU sweep's records, read instead of "
                             "training (relative to the notebook)")
    plan: str = param(doc="full profile: the sweep plan that writes those records")
    ch08_records_dirs: tuple[str, ...] = param(
        min_len=0, doc="chapter 8's records, where its gap test locates the large batch")
    ch08_params: str = param(doc="chapter 8's parameter file, whose thresholds that gap test "
                             "uses (relative to the notebook)")

    def check(self) -> None:
        self.require(self.plan.endswith((".yaml", ".yml")), "plan", "must be a YAML file")
        self.require(self.ch08_params.endswith((".yaml", ".yml")), "ch08_params",
                     "must be a YAML file")
        self.require(self.small_batch < self.large_batch, "small_batch",
                     f"must be below large_batch = {self.large_batch}")
        self.require(self.large_batch <= self.n_train, "large_batch",
                     f"must be at most n_train = {self.n_train}")
        self.require(self.large_batch >= 0.2 * self.n_train, "large_batch",
                     f"must be at least 0.2 n_train = {0.2 * self.n_train:.0f} (a large batch)")
        self.require(len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
        self.require(set(self.epoch_matched_kinds) <= set(self.kinds), "epoch_matched_kinds",
                     f"must be a subset of kinds = {list(self.kinds)}")
        self.require(set(self.step_matched_kinds) <= set(self.kinds), "step_matched_kinds",
                     f"must be a subset of kinds = {list(self.kinds)}")
        self.require(self.equal_steps or not self.step_matched_kinds, "step_matched_kinds",
                     "must be empty when equal_steps is false")

    @property
    def confidence(self) -> float:
        """Two-sided confidence ``1 − α`` of every interval on the page."""
        return 1.0 - self.alpha


def cost_goals(subsampled: float, curvature: float) -> dict[str, float]:
    """Step-cost goals relative to a plain large-batch step: kind -> largest acceptable ratio."""
    return {"subsampled": float(subsampled), "hessian": float(curvature),
            "ggn": float(curvature)}
