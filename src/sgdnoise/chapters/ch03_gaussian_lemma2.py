"""Chapter 3 (The Gaussian noise model and Lemma 2): how Gaussian projected mini-batch
noise is, and how heavy its tails, at the training batch size over several seeds (with the
error rates of both decisions), Lemma 2 on real mini-batch gradients, the expected loss
after one SGD step on an exactly quadratic problem and on trained networks, Markov's bound
on a loss increase, and the verdicts the chapter draws from them.

Notation: ``G: (N, P)`` per-example gradients, ``ḡ`` their mean, ``D = G̃ᵀG̃/N``, ``H`` the
Hessian, ``ξ = g_B − ḡ``; dense float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from sgdnoise.chapters.small_problems import (
    DT,
    ClaimRates,
    Condition,
    SmallProblem,
    SmallProblemParams,
    batch_indices,
    build_small_model,
    claim_outcomes,
    claim_rates,
    curvature_matrices,
    fixed,
    interval,
    number,
    pooled_seed_sd,
    top_eigenpairs,
    train_small,
)
from sgdnoise.params import param
from sgdnoise.report import Verdict
from sgdnoise.stats import t_interval
from sgdnoise.validate import check_matrix, check_positive, check_positive_int

__all__ = [
    "ACTIVATION_NAMES",
    "VEHICLE_CLASSES",
    "LeastSquares",
    "Params",
    "gaussian_claim_rates",
    "gaussian_claim_verdict",
    "activation_name",
    "gaussian_reading",
    "gaussianity_cells",
    "lemma2_cells",
    "markov_cells",
    "network_cells",
    "quadratic_cells",
    "noise_shape_study",
    "seed_gradients",
    "shape_table",
    "tail_claim_rates",
    "tail_claim_verdict",
    "tail_index",
    "tail_index_interval",
    "tail_index_table",
    "gaussianity_table",
    "least_squares_problem",
    "lemma2_network_check",
    "lemma2_verdict",
    "markov_study",
    "markov_verdict",
    "network_one_step_by_activation",
    "network_one_step_study",
    "network_verdict",
    "noise_directions",
    "one_step_quadratic_study",
    "one_step_verdict",
    "projected_noise",
    "qq_points",
]

VEHICLE_CLASSES = (0, 1, 8, 9)  # airplane, automobile, ship, truck in CIFAR-10 order
SECTION_GAUSS = "sec-ch3-gauss"
SECTION_LEMMA2 = "sec-ch3-lemma2"
SECTION_ONESTEP = "sec-ch3-onestep"
SECTION_MARKOV = "sec-ch3-markov"
SECTION_NETWORK = "sec-ch3-network"
SECTION_TAIL = "sec-ch3-tail"
SECTION_SEEDS = "sec-ch3-seeds"
DERIVATION, CLAIM = "derivation check", "claim about SGD"
#: The models of the decisions across seeds, in the order of their items.
SHAPE_MODELS = ("MLP", "small CNN")
#: The directions of the decisions across seeds (computable for every seed from D alone).
SHAPE_DIRECTIONS = ("top eigenvector of D", "second eigenvector of D", "random direction")
#: The activations' names on the page, for the keys the models use.
ACTIVATION_NAMES = {"relu": "ReLU", "tanh": "tanh"}


@dataclass(frozen=True)
class Params(SmallProblemParams):
    """Parameters of chapter 3 (values: the notebook's parameters cell and
    ``book/params/ch03_gaussian_lemma2/{smoke,default,full}.yaml``)."""

    seed: int = param(low=0, doc="seed of data subset, models, training and sampling")
    width: int = param(low=1, doc="hidden units of the MLP")
    activation: str = param(choices=("relu", "tanh"), doc="activation of the main MLP")
    train_steps: int = param(low=1, doc="SGD steps")
    train_lr: float = param(low=1e-6, high=10.0, doc="SGD learning rate")
    train_batch_size: int = param(low=1, doc="SGD batch size")
    gauss_batch_sizes: tuple[int, ...] = param(low=1, min_len=2,
                                               doc="B of the Gaussianity study")
    gauss_samples: int = param(low=50, doc="sampled batches per B (Gaussianity)")
    lemma2_batch_size: int = param(low=1, doc="B of the Lemma-2 check")
    lemma2_samples: int = param(low=10, doc="sampled batches (Lemma-2 check)")
    quad_lr_fractions: tuple[float, ...] = param(low=1e-6, high=0.999,
                                                 doc="η as fractions of 2/λ_max (quadratic)")
    quad_batch_sizes: tuple[int, ...] = param(low=1, doc="B of the quadratic one-step study")
    quad_samples: int = param(low=10, doc="sampled steps per (η, B) (quadratic)")
    markov_batch_size: int = param(low=1, doc="B of the Markov study")
    markov_lr_fraction: float = param(low=1e-6, high=0.999,
                                      doc="η as a fraction of 2/λ_max (Markov)")
    markov_excess: float = param(low=1e-12, doc="excess loss of the starting point")
    markov_increase_fractions: tuple[float, ...] = param(
        low=1e-9, min_len=2, doc="increases a as multiples of E L_{t+1}")
    markov_samples: int = param(low=100, doc="sampled steps (Markov)")
    net_lr_fractions: tuple[float, ...] = param(low=1e-6, high=1.0,
                                                doc="η as fractions of 1/λ_max(H) (network)")
    net_batch_size: int = param(low=1, doc="B of the network one-step study")
    net_samples: int = param(low=10, doc="sampled steps per η (network)")
    net_activations: tuple[str, ...] = param(choices=("relu", "tanh"), min_len=1,
                                             doc="activations compared (network)")
    cnn_width: int = param(low=1, doc="channels of the small CNN's first block")
    alpha_heavy: float = param(low=0.5, high=2.0,
                               doc="tail index below which noise reads as heavy-tailed")
    kurtosis_tolerance: float = param(low=0.0, high=10.0,
                                      doc="|excess kurtosis| read as Gaussian")
    z_max: float = param(low=1.0, high=10.0,
                         doc="largest |z| (Monte Carlo vs formula) read as sampling noise")
    network_z_max: float = param(low=1.0, high=10.0,
                                 doc="largest |z| of the network check read as sampling noise")
    seeds: int = param(low=2, high=50, doc="training seeds of the decisions on the noise shape")
    tail_boot: int = param(low=20, high=10000, doc="bootstrap draws of each tail-index interval")
    alpha: float = param(low=0.001, high=0.2, doc="level of the tests of claims about SGD")
    rate_sims: int = param(low=100, high=100000,
                           doc="simulated data sets per truth for the error rates")

    def check(self) -> None:
        for name in ("train_batch_size",):
            self.require(getattr(self, name) <= self.n_train, name,
                         f"must be <= n_train={self.n_train}")


def noise_directions(
    D: torch.Tensor, H: torch.Tensor, *, seed: int = 1
) -> tuple[torch.Tensor, list[str]]:
    """Unit directions to project noise on, ``U: (P, 4)``: the top-2 eigenvectors of ``D``,
    the top eigenvector of ``H`` and one seeded random direction; with their labels."""
    _, U_D = top_eigenpairs(D, 2)
    _, U_H = top_eigenpairs(H, 1)
    rand = torch.randn(D.shape[0], 1, dtype=D.dtype,
                       generator=torch.Generator().manual_seed(seed))
    U = torch.cat([U_D, U_H, rand / rand.norm()], 1)
    return U, ["top eigenvector of D", "second eigenvector of D", "top eigenvector of H",
               "random direction"]


def activation_name(key: str) -> str:
    """An activation's name on the page (:data:`ACTIVATION_NAMES`): ``"relu"`` →
    ``"ReLU"``; other keys as they are."""
    return ACTIVATION_NAMES.get(key, key)


def projected_noise(
    G: torch.Tensor,
    U: torch.Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Projections ``(g_B − ḡ)ᵀU: (S, k)`` of mini-batch noise on the columns of
    ``U: (P, k)``; computed as mini-batch means of the rows of ``G̃U: (N, k)`` (cost O(NPk +
    SBk))."""
    check_matrix("G", G)
    check_matrix("U", U)
    if U.shape[0] != G.shape[1]:
        raise ValueError(f"U must have {G.shape[1]} rows, got shape {tuple(U.shape)}")
    b = check_positive_int("batch_size", batch_size)
    s = check_positive_int("num_samples", num_samples)
    n = G.shape[0]
    if not replacement and b > n:
        raise ValueError(f"batch_size must be <= N={n} without replacement, got {b}")
    Z = (G - G.mean(0, keepdim=True)) @ U.to(G.dtype)  # (N, k)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(s, 2**24 // max(b * Z.shape[1], 1)))
    out = torch.empty(s, Z.shape[1], dtype=Z.dtype)
    for start in range(0, s, chunk):
        stop = min(start + chunk, s)
        out[start:stop] = Z[batch_indices(n, b, stop - start, replacement, gen)].mean(1)
    return out


def _std_moments(z: torch.Tensor, var: torch.Tensor | None = None):
    """Skewness and excess kurtosis of the columns of z: (S, k) about mean 0."""
    m2 = (z**2).mean(0) if var is None else var
    return (z**3).mean(0) / m2**1.5, (z**4).mean(0) / m2**2 - 3.0


def gaussianity_table(
    G: torch.Tensor,
    U: torch.Tensor,
    batch_sizes: Sequence[int],
    num_samples: int,
    *,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """How Gaussian is mini-batch noise along the columns of ``U: (P, k)`` (unit vectors)?

    For each B (with replacement) and direction u: variance (MC vs Lemma 1 ``uᵀDu/B``),
    skewness and excess kurtosis (MC vs the exact prediction for a mean of B i.i.d. draws:
    ``skew_1/√B`` and ``kurt_1/B`` from the N per-example projections), the
    Kolmogorov-Smirnov distance to N(0, uᵀDu/B) with its p-value, and the frequency of
    ``|z| > 3σ`` (Gaussian: 0.0027)."""
    from scipy import stats

    s = check_positive_int("num_samples", num_samples)
    Z1 = (G - G.mean(0, keepdim=True)) @ U.to(G.dtype)  # per-example projections (N, k)
    var1 = (Z1**2).mean(0)
    skew1, kurt1 = _std_moments(Z1)
    labels = list(labels) if labels is not None else [f"u{j + 1}" for j in range(U.shape[1])]
    rows = []
    for i, b in enumerate(batch_sizes):
        z = projected_noise(G, U, b, s, replacement=True, seed=seed + 101 * i)
        var_f = var1 / b
        skew, kurt = _std_moments(z)
        for j in range(U.shape[1]):
            sd = math.sqrt(float(var_f[j]))
            zj = z[:, j].numpy()
            ks = stats.kstest(zj, "norm", args=(0.0, sd)) if sd > 0 else None
            rows.append({
                "batch_size": int(b),
                "direction": labels[j],
                "var_mc": float(z[:, j].var()),
                "var_formula": float(var_f[j]),
                "skew_mc": float(skew[j]),
                "skew_pred": float(skew1[j]) / math.sqrt(b),
                "exkurt_mc": float(kurt[j]),
                "exkurt_pred": float(kurt1[j]) / b,
                "ks_stat": float(ks.statistic) if ks else float("nan"),
                "ks_pvalue": float(ks.pvalue) if ks else float("nan"),
                "tail3_mc": float((np.abs(zj) > 3 * sd).mean()) if sd > 0 else float("nan"),
                "tail3_gauss": 2 * float(stats.norm.sf(3.0)),
            })
    return pd.DataFrame(rows)


def qq_points(z: torch.Tensor | np.ndarray, *, max_points: int = 400) -> pd.DataFrame:
    """Normal QQ plot data for a 1-D sample: standardised order statistics (about the
    sample mean and sd) against N(0, 1) quantiles at plotting positions (i − ½)/n, thinned
    evenly to ``max_points`` (always keeping both extremes)."""
    from scipy import stats

    v = np.sort(np.asarray(z, dtype=np.float64).reshape(-1))
    n = v.size
    if n < 3:
        raise ValueError(f"z must hold at least 3 values, got {n}")
    q = stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    sd = v.std()
    keep = np.unique(np.linspace(0, n - 1, min(max_points, n)).round().astype(int))
    return pd.DataFrame({"normal_quantile": q[keep], "sample_quantile": (v[keep] - v.mean()) / sd})


def tail_index(x: torch.Tensor | np.ndarray, *, k1: int | None = None) -> float:
    """Tail index α̂ of a symmetric α-stable law fitted to the centred sample ``x`` (any
    shape, flattened), by the estimator of Mohammadi, Mohammadpour and Ogata (2015) that
    Simsekli, Sagun and Gürbüzbalaban (2019) use for SGD noise: split the K = K₁K₂ values
    into K₂ blocks of K₁ and sum each block, ``Y_i = Σ_j X_{(i−1)K₁+j}``; then

        1/α̂ = (1/log K₁) · ( mean_i log|Y_i| − mean_k log|X_k| ).

    For an α-stable law Y has the scale of X times K₁^{1/α}, hence the estimator; α = 2 is
    Gaussian (any finite variance gives α̂ → 2 as K grows), α < 2 heavy-tailed. ``k1``
    defaults to ⌊√K⌋. Zeros are dropped from the log-means (they carry no tail)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v - v.mean()
    k = v.size
    k1 = int(math.isqrt(k)) if k1 is None else check_positive_int("k1", k1)
    if k1 < 2 or k // k1 < 2:
        raise ValueError(f"need k1 >= 2 and at least 2 blocks, got K={k}, k1={k1}")
    k2 = k // k1
    v = v[: k1 * k2]
    y = v.reshape(k2, k1).sum(1)
    ly = np.log(np.abs(y[y != 0]))
    lx = np.log(np.abs(v[v != 0]))
    inv = (ly.mean() - lx.mean()) / math.log(k1)
    return float(1.0 / inv) if inv > 0 else float("inf")


def tail_index_table(
    G: torch.Tensor,
    U: torch.Tensor,
    batch_sizes: Sequence[int],
    num_samples: int,
    *,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Tail index (:func:`tail_index`) of mini-batch noise: along each column of ``U: (P,
    k)`` for each B (``num_samples`` draws of :func:`projected_noise`, with replacement),
    and over all P coordinates of the per-example noise ``g_i − ḡ`` (B = 1, the exact
    empirical distribution, N·P values; direction "all coordinates"). Columns:
    batch_size, direction, alpha, samples."""
    s = check_positive_int("num_samples", num_samples)
    labels = list(labels) if labels is not None else [f"u{j + 1}" for j in range(U.shape[1])]
    Gc = G - G.mean(0, keepdim=True)
    rows = [{"batch_size": 1, "direction": "all coordinates", "alpha": tail_index(Gc.numpy()),
             "samples": int(Gc.numel())}]
    for i, b in enumerate(batch_sizes):
        z = projected_noise(G, U, int(b), s, replacement=True, seed=seed + 211 * i)
        for j, lab in enumerate(labels):
            rows.append({"batch_size": int(b), "direction": lab,
                         "alpha": tail_index(z[:, j].numpy()), "samples": s})
    return pd.DataFrame(rows)


def lemma2_network_check(
    G: torch.Tensor,
    A: torch.Tensor,
    batch_size: int,
    num_samples: int,
    *,
    replacement: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Monte Carlo check of Lemma 2 on real mini-batch gradients: the average of
    ``g_Bᵀ A g_B`` over S batches vs ``tr(A·Cov g_B) + ḡᵀAḡ`` (Lemma 1 covariance). Returns
    mc, se, formula, z, trace_term, mean_term."""
    from sgdnoise.covariance import minibatch_covariance, sample_minibatch_gradients
    from sgdnoise.stability import expected_quadratic_form

    check_matrix("A", A, square=True)
    gen = torch.Generator().manual_seed(seed)
    X = sample_minibatch_gradients(G, batch_size, num_samples, replacement=replacement,
                                   generator=gen)
    q = ((X @ A) * X).sum(1)
    gbar = G.mean(0)
    C = minibatch_covariance(G, batch_size, replacement=replacement)
    formula = float(expected_quadratic_form(A, gbar, C))
    se = float(q.std() / math.sqrt(num_samples))
    return {
        "mc": float(q.mean()),
        "se": se,
        "formula": formula,
        "z": (float(q.mean()) - formula) / se,
        "trace_term": float((A * C.T).sum()),
        "mean_term": float(gbar @ A @ gbar),
    }


@dataclass
class LeastSquares:
    """Least squares ``L(θ) = ½ mean_i (x_iᵀθ − y_i)²``: ``X: (N, d)``, ``y: (N,)``,
    ``H = XᵀX/N``, minimiser ``theta_star``, ``min_loss`` = L(θ*). Excess loss
    ``L(θ) − L(θ*) = ½(θ − θ*)ᵀH(θ − θ*)`` is the quadratic of chapter 3."""

    X: torch.Tensor
    y: torch.Tensor
    H: torch.Tensor
    theta_star: torch.Tensor
    min_loss: float

    @property
    def stability_limit(self) -> float:
        """The largest stable full-batch learning rate, ``2/λ_max(H)``."""
        from sgdnoise.stability import linear_stability

        return 2.0 / linear_stability(self.H, 1.0).lambda_max

    def per_example_grads(self, theta: torch.Tensor) -> torch.Tensor:
        """``G: (N, d)``, ``g_i = x_i (x_iᵀθ − y_i)``."""
        return self.X * (self.X @ theta - self.y)[:, None]

    def excess_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``½(θ − θ*)ᵀH(θ − θ*)`` for ``θ: (d,)`` or ``(S, d)``."""
        from sgdnoise.stability import quadratic_loss

        return quadratic_loss(self.H, theta, self.theta_star)

    def point_near_minimum(self, excess: float, *, seed: int = 0) -> torch.Tensor:
        """``θ = θ* + r·v`` with ``v`` a seeded random direction and ``r`` chosen so that the
        excess loss ``½ r² vᵀHv`` equals ``excess``."""
        excess = check_positive("excess", excess)
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.theta_star.shape[0], dtype=DT, generator=gen)
        r = math.sqrt(2 * excess / float(v @ self.H @ v))
        return self.theta_star + r * v


def least_squares_problem(problem: SmallProblem) -> LeastSquares:
    """Linear regression of ±1 targets (vehicle vs animal) on the flattened pooled pixels
    plus a constant feature, ``X: (N, d)``; θ* is the (minimum-norm) least-squares
    solution, so ``L(θ) − L(θ*) = ½(θ − θ*)ᵀH(θ − θ*)`` exactly."""
    X = torch.cat([problem.x.reshape(problem.n, -1), torch.ones(problem.n, 1, dtype=DT)], 1)
    vehicle = torch.zeros(problem.n, dtype=torch.bool)
    for c in VEHICLE_CLASSES:
        vehicle |= problem.y == c
    y = torch.where(vehicle, 1.0, -1.0).to(DT)
    n = X.shape[0]
    H = X.T @ X / n
    theta_star = torch.linalg.pinv(X) @ y
    min_loss = float(0.5 * ((X @ theta_star - y) ** 2).mean())
    return LeastSquares(X=X, y=y, H=0.5 * (H + H.T), theta_star=theta_star, min_loss=min_loss)


def one_step_quadratic_study(
    ls: LeastSquares,
    theta: torch.Tensor,
    lrs: Sequence[float],
    batch_sizes: Sequence[int],
    num_samples: int,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Monte Carlo ``E[L(θ − η g_B)]`` (excess loss, batches with replacement) against
    ``L(θ − ηḡ) + (η²/2B) tr(HD)`` (:func:`sgdnoise.stability.sgd_one_step_expected_loss`)
    for each η and B. Columns: lr, batch_size, current, deterministic, noise, formula,
    mc, se, z."""
    from sgdnoise.stability import sgd_one_step_expected_loss

    G = ls.per_example_grads(theta)
    n = G.shape[0]
    Gc = G - G.mean(0, keepdim=True)
    D = Gc.T @ Gc / n
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b in batch_sizes:
        idx = torch.randint(n, (num_samples, int(b)), generator=gen)
        gB = G[idx].mean(1)
        for lr in lrs:
            f = sgd_one_step_expected_loss(ls.H, theta, D, lr, int(b), theta_star=ls.theta_star)
            nxt = ls.excess_loss(theta - lr * gB)
            se = float(nxt.std() / math.sqrt(num_samples))
            rows.append({
                "lr": float(lr), "batch_size": int(b), "current": f.current,
                "deterministic": f.deterministic, "noise": f.noise, "formula": f.expected,
                "mc": float(nxt.mean()), "se": se, "z": (float(nxt.mean()) - f.expected) / se,
            })
    return pd.DataFrame(rows)


def markov_study(
    ls: LeastSquares,
    theta: torch.Tensor,
    lr: float,
    batch_size: int,
    increases: Sequence[float],
    num_samples: int,
    *,
    relative: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Empirical ``P(L_{t+1} − L_t >= a)`` of one SGD step (excess loss, which is >= 0)
    against Markov's bound ``E[L_{t+1}]/(L_t + a)`` with E from Lemma 2. With ``relative``
    the ``increases`` are multiples of ``E[L_{t+1}]``. Columns: increase, frequency,
    frequency_se, bound, expected_next, current."""
    from sgdnoise.stability import markov_loss_increase_bound, sgd_one_step_expected_loss

    G = ls.per_example_grads(theta)
    n = G.shape[0]
    Gc = G - G.mean(0, keepdim=True)
    D = Gc.T @ Gc / n
    f = sgd_one_step_expected_loss(ls.H, theta, D, lr, batch_size, theta_star=ls.theta_star)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num_samples, int(batch_size)), generator=gen)
    change = ls.excess_loss(theta - lr * G[idx].mean(1)) - f.current
    rows = []
    for a in increases:
        a = float(a) * (f.expected if relative else 1.0)
        p = float((change >= a).double().mean())
        rows.append({
            "increase": float(a),
            "frequency": p,
            "frequency_se": math.sqrt(max(p * (1 - p), 1.0 / num_samples) / num_samples),
            "bound": markov_loss_increase_bound(f.expected, f.current, a),
            "expected_next": f.expected,
            "current": f.current,
        })
    return pd.DataFrame(rows)


def _losses_at(
    model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
    thetas: torch.Tensor, chunk: int = 32,
) -> torch.Tensor:
    """Mean loss over (x, y) at each parameter vector in ``thetas: (S, P)``."""
    from torch.func import functional_call, vmap

    from sgdnoise.grads import trainable_named_parameters

    named = trainable_named_parameters(model)
    shapes = [(name, p.shape, p.numel()) for name, p in named]

    def loss_at(theta):
        params, off = {}, 0
        for name, shape, k in shapes:
            params[name] = theta[off : off + k].reshape(shape)
            off += k
        return loss_fn(functional_call(model, params, (x,)), y)

    f = vmap(loss_at)
    with torch.no_grad():
        return torch.cat([f(thetas[i : i + chunk]) for i in range(0, thetas.shape[0], chunk)])


def network_one_step_study(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: Sequence[float],
    batch_size: int,
    num_samples: int,
    *,
    mats: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One SGD step on a real network: the Monte Carlo mean of ``L(θ − η g_B) − L(θ)``
    (full-data mean cross-entropy, batches with replacement) against the second-order
    prediction ``−η‖ḡ‖² + (η²/2)(ḡᵀHḡ + tr(HD)/B)``
    (:func:`sgdnoise.stability.expected_loss_change_second_order`).

    The linear term ``−ηḡᵀ(g_B − ḡ)`` has mean zero and dominates the spread, so it is
    also reported subtracted (an exact control variate: ``mc_cv``, ``se_cv``). Also
    reports the actual full-batch change (``gd_change``) to separate the Taylor error from
    the noise term; ``noise_ratio`` = (Monte Carlo noise part)/(predicted noise term) with
    its standard error ``noise_ratio_se`` and ``noise_z``, and ``gd_ratio`` = actual /
    predicted full-batch change. ``mats`` may pass precomputed {"H", "G"} (from
    :func:`curvature_matrices`)."""
    from sgdnoise.curvature import hessian
    from sgdnoise.grads import flat_params, per_example_grads
    from sgdnoise.stability import expected_loss_change_second_order

    loss = nn.functional.cross_entropy
    if mats is None:
        G = per_example_grads(model, loss, x, y).to(DT)
        H = hessian(model, loss, x, y).to(DT)
    else:
        G, H = mats["G"], mats["H"]
    n = G.shape[0]
    gbar = G.mean(0)
    Gc = G - gbar
    D = Gc.T @ Gc / n
    theta = flat_params(model).detach().to(DT)
    L0 = float(_losses_at(model, loss, x, y, theta[None])[0])
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (num_samples, int(batch_size)), generator=gen)
    xi = Gc[idx].mean(1)  # (S, P) noise samples
    rows = []
    for lr in lrs:
        pred = expected_loss_change_second_order(H, gbar, D, lr, int(batch_size))
        gd = float(_losses_at(model, loss, x, y, (theta - lr * gbar)[None])[0]) - L0
        dL = _losses_at(model, loss, x, y, theta - lr * (gbar + xi)) - L0
        cv = dL + lr * (xi @ gbar)
        rows.append({
            "lr": float(lr),
            "batch_size": int(batch_size),
            "mc": float(dL.mean()),
            "se": float(dL.std() / math.sqrt(num_samples)),
            "mc_cv": float(cv.mean()),
            "se_cv": float(cv.std() / math.sqrt(num_samples)),
            "predicted": pred["expected"],
            "pred_deterministic": pred["deterministic"],
            "pred_noise": pred["noise"],
            "gd_change": gd,
            "mc_noise_part": float(cv.mean()) - gd,
            "noise_ratio": (float(cv.mean()) - gd) / pred["noise"],
            "noise_ratio_se": float(cv.std() / math.sqrt(num_samples)) / pred["noise"],
            "noise_z": (float(cv.mean()) - gd - pred["noise"])
            / float(cv.std() / math.sqrt(num_samples)),
            "gd_ratio": gd / pred["deterministic"],
        })
    return pd.DataFrame(rows)


def network_one_step_by_activation(
    problem: SmallProblem,
    trained: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]],
    activations: Sequence[str],
    *,
    width: int,
    train_steps: int,
    train_lr: float,
    train_batch_size: int,
    lr_fractions: Sequence[float],
    batch_size: int,
    num_samples: int,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`network_one_step_study` for one-hidden-layer MLPs of each activation, with
    steps ``η = f/λ_max(H)`` for ``f`` in ``lr_fractions``. ``trained`` maps an activation
    to an already trained ``(model, curvature_matrices)``; others are built and trained
    here with the given settings. Adds columns activation, eta_lam (η·λ_max), lambda_max."""
    parts = []
    for act in activations:
        if act in trained:
            model, mats = trained[act]
        else:
            model = build_small_model("mlp", problem.in_shape, width=width, activation=act,
                                      seed=seed)
            train_small(model, problem.x, problem.y, steps=train_steps, lr=train_lr,
                        batch_size=train_batch_size, seed=seed)
            mats = curvature_matrices(model, problem.x, problem.y)
        lam = float(top_eigenpairs(mats["H"], 1)[0][0])
        part = network_one_step_study(model, problem.x, problem.y,
                                      [f / lam for f in lr_fractions], batch_size,
                                      num_samples, mats=mats, seed=seed)
        parts.append(part.assign(activation=act, eta_lam=part.lr * lam, lambda_max=lam))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- verdicts


def gaussian_reading(gauss: pd.DataFrame, *, kurtosis_tolerance: float) -> str:
    """What :func:`gaussianity_table` output ``gauss`` shows, in one paragraph: the excess
    kurtosis and the frequency beyond three standard deviations at the smallest and the
    largest B, the Kolmogorov-Smirnov distance at the largest, and the B the heaviest
    direction needs by the cumulant scaling ``kurt_1/B`` before its excess kurtosis drops
    below ``kurtosis_tolerance``. Descriptive: the decision is
    :func:`gaussian_claim_verdict`'s."""
    b_min, b_max = int(gauss.batch_size.min()), int(gauss.batch_size.max())
    small = gauss[gauss.batch_size == b_min]
    big = gauss[gauss.batch_size == b_max]
    heavy = small.sort_values("exkurt_pred", ascending=False).iloc[0]
    per_example = float(heavy.exkurt_pred) * float(heavy.batch_size)
    need_b = max(1.0, per_example / kurtosis_tolerance)
    return (f"At B = {b_min} the excess kurtosis ranges over [{fixed(small.exkurt_mc.min())}, "
            f"{fixed(small.exkurt_mc.max())}] and the frequency beyond three standard "
            f"deviations over [{small.tail3_mc.min():.2%}, {small.tail3_mc.max():.2%}] "
            f"(Gaussian: 0.27%). At B = {b_max}: excess kurtosis in "
            f"[{fixed(big.exkurt_mc.min())}, {fixed(big.exkurt_mc.max())}], "
            f"Kolmogorov-Smirnov distance to the Gaussian of Lemma 1 at most "
            f"{big.ks_stat.max():.3f}. The heaviest direction ({heavy.direction}) has "
            f"per-example excess kurtosis {per_example:.1f}, so by the cumulant scaling it "
            f"needs B ≈ {need_b:.0f} before its excess kurtosis drops below "
            f"{kurtosis_tolerance:g}.")


def lemma2_verdict(chk: dict[str, float], *, z_max: float, batch_size: int, num_samples: int,
                   scale: str) -> Verdict:
    """Lemma 2 on real mini-batch gradients, ``chk`` from :func:`lemma2_network_check`:
    "supported" when ``|z| < z_max``, else "contradicted"."""
    ok = abs(chk["z"]) < z_max
    mc = (chk["mc"], chk["mc"] - 1.96 * chk["se"], chk["mc"] + 1.96 * chk["se"])
    sentence = (f"Monte Carlo mean of $g_{{\\mathcal{{B}}}}^\\top H g_{{\\mathcal{{B}}}}$ over "
                f"{num_samples} batches of {batch_size}: {interval(*mc, 4)} (95% interval); "
                f"Lemma 2: {chk['formula']:.5g} (= $\\operatorname{{tr}}(HD/B)$ "
                f"{chk['trace_term']:.4g} + $\\bar g^\\top H \\bar g$ "
                f"{chk['mean_term']:.4g}); $z = {chk['z']:.2f}$"
                + (f" — agreement within sampling error ($\\lvert z \\rvert < {z_max:g}$)."
                   if ok else
                   f" — disagreement beyond sampling error ($\\lvert z \\rvert \\ge "
                   f"{z_max:g}$)."))
    return Verdict(r"Lemma 2: $\mathbb{E}[x^\top A x] = \operatorname{tr}(A\Sigma) + "
                   r"\mu^\top A \mu$, applied to mini-batch gradients.",
                   "supported" if ok else "contradicted", sentence, scale, SECTION_LEMMA2,
                   kind=DERIVATION)


def one_step_verdict(quad: pd.DataFrame, *, z_max: float, scale: str) -> Verdict:
    """The one-step expected loss on the exact quadratic, ``quad`` from
    :func:`one_step_quadratic_study`: "supported" when every ``|z| < z_max``, else
    "contradicted". The sentence also gives the noise term and the full-batch loss at the
    largest η and smallest B."""
    zmax = float(quad.z.abs().max())
    ok = zmax < z_max
    b_min = int(quad.batch_size.min())
    d = quad[quad.batch_size == b_min]
    sentence = (f"Largest $\\lvert z \\rvert$ over {len(quad)} (η, B) pairs: **{zmax:.2f}**"
                + (f" — Lemma 2 holds within sampling error (threshold {z_max:g})." if ok
                   else f" — larger than sampling error (threshold {z_max:g}).")
                + f" At the largest η and B = {b_min} the noise term is "
                f"{float(d.noise.iloc[-1]):.4g} against a full-batch loss of "
                f"{float(d.deterministic.iloc[-1]):.4g}.")
    return Verdict("The expected loss after one SGD step is the full-batch loss plus "
                   r"$\eta^2 \operatorname{tr}(HD)/(2B)$ (exact on a quadratic, Gaussian or "
                   "not).",
                   "supported" if ok else "contradicted", sentence, scale, SECTION_ONESTEP,
                   kind=DERIVATION)


def markov_verdict(mk: pd.DataFrame, *, current: float, scale: str) -> Verdict:
    """Markov's bound on a loss increase, ``mk`` from :func:`markov_study`; ``current`` the
    excess loss before the step. A violation is an observed frequency above the bound by
    more than 3 standard errors: none gives "supported", any "contradicted"."""
    e_next = float(mk.expected_next.iloc[0])
    viol = int((mk.frequency > mk.bound + 3 * mk.frequency_se).sum())
    pos = mk[mk.frequency > 0]
    sentence = (f"Expected next excess loss {e_next:.3g} vs current {current:.3g}: an average "
                f"step near the minimum "
                + ("*raises*" if e_next > current else "*lowers*")
                + f" the loss by a factor {e_next / current:.1f}. Bound violations beyond 3 "
                f"standard errors: **{viol}** of {len(mk)}. Ratio bound/frequency ranges over "
                f"[{(mk.bound / mk.frequency.clip(lower=1e-12)).min():.2g}, "
                f"{(pos.bound / pos.frequency).max():.2g}] where the frequency is positive.")
    return Verdict("Markov's inequality bounds the probability of a loss increase by "
                   r"$\mathbb{E}[L_{t+1}]/(L_t + a)$.",
                   "supported" if viol == 0 else "contradicted",
                   sentence, scale, SECTION_MARKOV, kind=DERIVATION)


def network_verdict(net: pd.DataFrame, *, z_max: float, scale: str) -> tuple[list[str], Verdict]:
    """The second-order one-step prediction on networks, ``net`` from
    :func:`network_one_step_by_activation`. Per activation, the noise part agrees when every
    ``|noise_z| < z_max``. Returns Markdown lines (one per activation and a comparison) and
    the verdict: "supported" if every activation agrees, "contradicted" if none does, else
    "mixed" (the comparison line then names the one that deviates)."""
    lines = []
    net = net.assign(activation=net.activation.map(activation_name))
    for act, d in net.groupby("activation", sort=False):
        dev = (d.noise_ratio - 1).abs()
        lines.append(
            f"- **{act}**: noise part / Lemma-2 prediction = "
            + ", ".join(f"{r:.3f}" for r in d.noise_ratio)
            + r" at $\eta\lambda_{\max}$ = " + ", ".join(f"{v:.2f}" for v in d.eta_lam)
            + f" ($\\lvert z \\rvert$ up to {d.noise_z.abs().max():.1f}); full-batch change / "
            f"second-order "
            f"prediction between {d.gd_ratio.min():.3f} and {d.gd_ratio.max():.3f}. "
            + (f"The prediction holds within sampling error ($\\lvert z \\rvert < {z_max:g}$) "
               f"at every step size." if d.noise_z.abs().max() < z_max else
               f"Largest mismatch {dev.max():.1%}, "
               + ("growing with η." if dev.iloc[-1] > dev.iloc[0] else "not growing with η."))
        )
    worst = net.assign(dev=(net.noise_ratio - 1).abs()).groupby("activation").dev.max()
    zmax = net.assign(az=net.noise_z.abs()).groupby("activation").az.max()
    n_ok = int((zmax < z_max).sum())
    if len(worst) > 1:
        best_act, worst_act = worst.idxmin(), worst.idxmax()
        head = (f"- Largest relative mismatch: {worst[worst_act]:.1%} for {worst_act} "
                f"($\\lvert z \\rvert$ up to {zmax[worst_act]:.1f}) against "
                f"{worst[best_act]:.1%} for {best_act} ($\\lvert z \\rvert$ up to "
                f"{zmax[best_act]:.1f})")
        if zmax[best_act] < z_max <= zmax[worst_act]:
            tail = (f": the {best_act} check agrees with Lemma 2 plus the second-order "
                    f"expansion within sampling error, the {worst_act} one does not, so the "
                    f"{worst[worst_act]:.0%} residual of the {worst_act} network is a "
                    f"property of its activation, not of the Lemma-2 argument.")
        elif zmax.max() < z_max:
            tail = ": both agree with the prediction within sampling error."
        else:
            tail = (": both deviate beyond sampling error, so the residual is not only an "
                    "activation effect; higher-order terms contribute.")
        lines.append(head + tail)
    sentence = (f"The noise part of the one-step loss change agrees with "
                f"$\\eta^2 \\operatorname{{tr}}(HD)/(2B)$ within sampling error "
                f"($\\lvert z \\rvert < {z_max:g}$) for {n_ok} of {len(zmax)} activations ("
                + ", ".join(f"{a}: $\\lvert z \\rvert$ up to {z:.1f}" for a, z in zmax.items())
                + ").")
    outcome = ("supported" if n_ok == len(zmax) else "contradicted" if n_ok == 0 else "mixed")
    return lines, Verdict("On a trained network, the expected loss change of one SGD step is "
                          r"$-\eta \lVert \bar g \rVert^2 + \frac{\eta^2}{2} (\bar g^\top H "
                          r"\bar g + \operatorname{tr}(HD)/B)$ to second order.", outcome,
                          sentence, scale, SECTION_NETWORK, kind=DERIVATION)


# --------------------------------------------------------------------------- across seeds


def seed_gradients(problem: SmallProblem, seeds: Sequence[int], *, width: int,
                   activation: str, cnn_width: int, steps: int, lr: float,
                   batch_size: int) -> dict[tuple[str, int], torch.Tensor]:
    """Per-example gradients ``G: (N, P)`` (float64) of the MLP (``width``, ``activation``)
    and the small CNN (``cnn_width``) of :data:`SHAPE_MODELS`, each trained with
    :func:`train_small` for ``steps`` steps from initialisation and batch order ``seed``, for
    every seed in ``seeds``. Keys ``(model, seed)``."""
    from sgdnoise.grads import per_example_grads

    specs = {"MLP": ("mlp", width, activation), "small CNN": ("cnn", cnn_width, "relu")}
    out = {}
    for sd in seeds:
        for name, (kind, w, act) in specs.items():
            model = build_small_model(kind, problem.in_shape, width=w, activation=act,
                                      seed=int(sd))
            train_small(model, problem.x, problem.y, steps=steps, lr=lr,
                        batch_size=batch_size, seed=int(sd))
            out[(name, int(sd))] = per_example_grads(
                model, nn.functional.cross_entropy, problem.x, problem.y).to(DT)
    return out


def _tail_index_rows(v: np.ndarray, k1: int) -> np.ndarray:
    """:func:`tail_index` of every row of ``v: (R, K)`` (rows centred here), blocks of
    ``k1``; ``(R,)``."""
    v = v - v.mean(1, keepdims=True)
    k2 = v.shape[1] // k1
    v = v[:, : k1 * k2]
    y = v.reshape(v.shape[0], k2, k1).sum(2)
    with np.errstate(divide="ignore"):
        ly = np.where(y != 0, np.log(np.abs(y)), np.nan)
        lx = np.where(v != 0, np.log(np.abs(v)), np.nan)
    inv = (np.nanmean(ly, 1) - np.nanmean(lx, 1)) / math.log(k1)
    with np.errstate(divide="ignore"):
        return np.where(inv > 0, 1.0 / inv, np.inf)


def tail_index_interval(x: np.ndarray, *, n_boot: int, confidence: float = 0.95,
                        seed: int = 0) -> tuple[float, float, float]:
    """The tail index of the sample ``x: (K,)`` with a percentile bootstrap interval.

    :func:`tail_index` depends on how the values are cut into blocks; the estimate here
    averages that choice out: ``1/α̂`` is the mean of the estimator's ``1/α`` over
    ``n_boot`` random orders of ``x``. The interval is the percentile interval of the same
    estimator over ``n_boot`` bootstrap samples (``K`` values drawn with replacement, in
    random order). Blocks of ``⌊√K⌋``. Returns ``(estimate, low, high)``."""
    v = np.asarray(x, dtype=np.float64).ravel()
    k1 = int(math.isqrt(v.size))
    if k1 < 2 or v.size // k1 < 2:
        raise ValueError(f"need at least 4 values, got {v.size}")
    n_boot = check_positive_int("n_boot", n_boot)
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((n_boot, v.size)), axis=1)
    inv = 1.0 / _tail_index_rows(v[orders], k1)
    estimate = float(1.0 / inv.mean()) if inv.mean() > 0 else float("inf")
    boots = _tail_index_rows(v[rng.integers(0, v.size, (n_boot, v.size))], k1)
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, (1 + confidence) / 2])
    return estimate, float(lo), float(hi)


def _shape_directions(G: torch.Tensor, seed: int) -> torch.Tensor:
    """``(P, 3)``: the top two eigenvectors of ``D`` and a random unit direction (seeded)."""
    Gc = G - G.mean(0, keepdim=True)
    _, U = top_eigenpairs(Gc.T @ Gc / G.shape[0], 2)
    rand = torch.randn(G.shape[1], 1, dtype=G.dtype,
                       generator=torch.Generator().manual_seed(1000 + seed))
    return torch.cat([U, rand / rand.norm()], 1)


def noise_shape_study(grads: dict[tuple[str, int], torch.Tensor], batch_size: int,
                      num_samples: int, *, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """The shape of the mini-batch noise at one batch size ``B`` for every ``(model, seed)``
    of ``grads`` (:func:`seed_gradients`), along the directions of
    :data:`SHAPE_DIRECTIONS`.

    Per direction ``u``: ``exkurt_1``, the excess kurtosis of the ``N`` per-example
    projections ``uᵀ(g_i − ḡ)``, and ``exkurt_B = exkurt_1 / B`` (exact for batches drawn
    with replacement: cumulants of independent sums add); ``alpha``, the tail index of
    ``num_samples`` draws of the projected noise at ``B`` (:func:`projected_noise`),
    averaged over block orders, with its ``alpha_low``, ``alpha_high`` percentile bootstrap
    interval over the draws (:func:`tail_index_interval`, 95%). One row per (model, seed,
    direction)."""
    b = check_positive_int("batch_size", batch_size)
    rows = []
    for i, ((model, sd), G) in enumerate(grads.items()):
        U = _shape_directions(G, sd)
        _, kurt1 = _std_moments((G - G.mean(0, keepdim=True)) @ U)
        z = projected_noise(G, U, b, num_samples, seed=seed + 313 * i).numpy()
        for j, direction in enumerate(SHAPE_DIRECTIONS):
            a, lo, hi = tail_index_interval(z[:, j], n_boot=n_boot, seed=seed + j)
            rows.append({"model": model, "seed": sd, "direction": direction,
                         "batch_size": b, "exkurt_1": float(kurt1[j]),
                         "exkurt_B": float(kurt1[j]) / b, "alpha": a, "alpha_low": lo,
                         "alpha_high": hi})
    return pd.DataFrame(rows)


def shape_table(shape: pd.DataFrame) -> pd.DataFrame:
    """:func:`noise_shape_study` as text cells, one row per (model, seed, direction)."""
    return pd.DataFrame([{
        "model": r.model, "seed": str(int(r.seed)), "direction": r.direction,
        "excess kurtosis, one example": fixed(r.exkurt_1),
        f"excess kurtosis at B = {int(r.batch_size)}": fixed(r.exkurt_B, 3),
        "tail index (95% bootstrap interval)": interval(r.alpha, r.alpha_low, r.alpha_high,
                                                        3),
    } for r in shape.itertuples()])


def _seed_matrix(shape: pd.DataFrame, keys: Sequence[tuple], value: pd.Series
                 ) -> np.ndarray:
    """``(len(keys), S)``: ``value`` per item (``keys`` match ``shape``'s (model,) or
    (model, direction)) and seed, NaN where missing."""
    seeds = sorted(set(shape.seed))
    x = np.full((len(keys), len(seeds)), np.nan)
    cols = ["model", "direction"][: len(keys[0])]
    for key, v in value.groupby([shape[c] for c in cols] + [shape.seed]):
        x[list(keys).index(tuple(key[:-1])), seeds.index(key[-1])] = v.iloc[0]
    return x


def _gaussian_items(shape: pd.DataFrame) -> tuple[list[tuple], np.ndarray]:
    """Items (models) and per-seed statistic: the largest ``|exkurt_B|`` over directions."""
    keys = [(m,) for m in SHAPE_MODELS if m in set(shape.model)]
    worst = shape.assign(a=shape.exkurt_B.abs()).groupby(["model", "seed"]).a.max()
    flat = worst.reset_index()
    return keys, _seed_matrix(flat, keys, flat.a)


def gaussian_claim_rates(shape: pd.DataFrame, *, tolerance: float, alpha: float, n_sim: int,
                         seed: int = 0) -> ClaimRates | None:
    """Error rates of :func:`gaussian_claim_verdict` (:func:`claim_rates`) with the pooled
    seed-to-seed standard deviation of each model's largest ``|excess kurtosis|``: power when
    every model sits at half the tolerance, false positives at the tolerance and at twice
    it. None without spread."""
    keys, x = _gaussian_items(shape)
    sd, df = pooled_seed_sd(x)
    if not (math.isfinite(sd) and sd > 0):
        return None
    conds = [Condition(i, "below", tolerance) for i in range(len(keys))]
    return claim_rates(conds, effect=[tolerance / 2] * len(keys), sd=sd,
                       n_seeds=x.shape[1], alpha=alpha, opposite=[2 * tolerance] * len(keys),
                       df=df, n_sim=n_sim, seed=seed,
                       quantity="largest absolute excess kurtosis",
                       describe=f"every model's largest excess kurtosis at {tolerance / 2:g}, "
                                f"false positives at {tolerance:g} and {2 * tolerance:g}")


def _with_rates(v: Verdict, rates: ClaimRates | None) -> Verdict:
    if rates is None:
        return v
    return v.with_rates(rates)


def gaussian_claim_verdict(shape: pd.DataFrame, *, tolerance: float, alpha: float, scale: str,
                           rates: ClaimRates | None = None) -> Verdict:
    """Claim about SGD, ``shape`` from :func:`noise_shape_study`: at the batch size SGD
    trains with, the noise is Gaussian, its excess kurtosis below ``tolerance`` in absolute
    value along every direction of :data:`SHAPE_DIRECTIONS`, for every model. Per model and
    seed the statistic is the largest ``|exkurt_B|``; :func:`claim_outcomes` decides
    (one-sided t-tests across seeds at level ``alpha``, all models below: "supported";
    some model above after Holm: "contradicted")."""
    keys, x = _gaussian_items(shape)
    outcome = str(claim_outcomes(x, [Condition(i, "below", tolerance)
                                     for i in range(len(keys))], alpha)[0])
    b = int(shape.batch_size.iloc[0])
    parts = []
    for i, (m,) in enumerate(keys):
        ci = t_interval(x[i], 1 - 2 * alpha)
        k1 = shape[shape.model == m].exkurt_1.abs().max()
        parts.append(f"{m} {ci.format(3)} (per-example excess kurtosis up to {k1:.1f}, so "
                     f"below {tolerance:g} from B ≈ {max(1.0, k1 / tolerance):.0f})")
    sentence = (f"Largest absolute excess kurtosis over the directions at B = {b}, "
                f"{1 - 2 * alpha:.0%} interval across {x.shape[1]} seeds: "
                + "; ".join(parts) + f". Rule: one-sided t-tests across seeds at level "
                f"{alpha:g} against {tolerance:g} for every model: "
                + {"supported": "the Gaussian model fits at this batch size.",
                   "contradicted": "the noise is measurably non-Gaussian at this batch size.",
                   "inconclusive": "the seeds cannot tell."}[outcome])
    v = Verdict(f"At the batch size SGD trains with here (B = {b}), mini-batch noise is "
                f"Gaussian, $\\mathcal{{N}}(0, D/B)$ (central limit theorem): along the top "
                f"two eigenvectors of $D$ and a random direction its excess kurtosis is below "
                f"{tolerance:g} in absolute value, for the MLP and the small CNN.",
                outcome, sentence, scale, SECTION_SEEDS, kind=CLAIM)
    return _with_rates(v, rates)


def _tail_items(shape: pd.DataFrame) -> tuple[list[tuple], np.ndarray]:
    keys = [(m, d) for m in SHAPE_MODELS for d in SHAPE_DIRECTIONS
            if ((shape.model == m) & (shape.direction == d)).any()]
    return keys, _seed_matrix(shape, keys, shape.alpha)


def tail_claim_rates(shape: pd.DataFrame, *, alpha_heavy: float, alpha: float, n_sim: int,
                     seed: int = 0, effect: float = 1.4) -> ClaimRates | None:
    """Error rates of :func:`tail_claim_verdict` with the pooled seed-to-seed standard
    deviation of the tail indices: power at a tail index of ``effect`` in every item, false
    positives at ``alpha_heavy`` and at 2 (Gaussian). None without spread."""
    keys, x = _tail_items(shape)
    sd, df = pooled_seed_sd(np.where(np.isfinite(x), x, np.nan))
    if not (math.isfinite(sd) and sd > 0):
        return None
    conds = [Condition(i, "below", alpha_heavy) for i in range(len(keys))]
    return claim_rates(conds, effect=[effect] * len(keys), sd=sd, n_seeds=x.shape[1],
                       alpha=alpha, opposite=[2.0] * len(keys), df=df, n_sim=n_sim,
                       seed=seed, quantity="tail index",
                       describe=f"a tail index of {effect:g} along every direction, false "
                                f"positives at {alpha_heavy:g} and at 2 (Gaussian)")


def tail_claim_verdict(shape: pd.DataFrame, *, alpha_heavy: float, alpha: float, scale: str,
                       rates: ClaimRates | None = None) -> Verdict:
    """Claim about SGD (Simsekli et al. 2019), ``shape`` from :func:`noise_shape_study`:
    at the training batch size the noise is heavy-tailed, its tail index below
    ``alpha_heavy`` along every direction of every model (an α-stable vector has the same
    index in every direction). Items are (model, direction); :func:`claim_outcomes` decides
    on the per-seed estimates (each with a bootstrap interval over its draws in the
    table)."""
    keys, x = _tail_items(shape)
    conds = [Condition(i, "below", alpha_heavy) for i in range(len(keys))]
    outcome = str(claim_outcomes(x, conds, alpha)[0])
    b = int(shape.batch_size.iloc[0])
    listing = "; ".join(f"{m}, {d}: {t_interval(x[i], 1 - 2 * alpha).format(2)}"
                        for i, (m, d) in enumerate(keys))
    sentence = (f"Tail index at B = {b}, {1 - 2 * alpha:.0%} interval across {x.shape[1]} "
                f"seeds: {listing}. Per seed the bootstrap intervals over the draws span "
                f"[{shape.alpha_low.min():.2f}, {shape.alpha_high.max():.2f}]. Rule: "
                f"one-sided t-tests across seeds at level {alpha:g} against {alpha_heavy:g} "
                f"(Gaussian: 2) for every model and direction: "
                + {"supported": "heavy-tailed along every direction.",
                   "contradicted": "not heavy-tailed along at least one direction: its tail "
                                   f"index is above {alpha_heavy:g}.",
                   "inconclusive": "the seeds cannot tell."}[outcome])
    v = Verdict(f"At the batch size SGD trains with here (B = {b}), mini-batch noise is "
                f"heavy-tailed (Simsekli et al. 2019): its tail index along each of the "
                f"directions is below {alpha_heavy:g} (a Gaussian has 2), for the MLP and the "
                f"small CNN.", outcome, sentence, scale, SECTION_SEEDS, kind=CLAIM)
    return _with_rates(v, rates)


# --------------------------------------------------------------------------- tables


def _p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def gaussianity_cells(gauss: pd.DataFrame) -> pd.DataFrame:
    """:func:`gaussianity_table` as text cells with headers in words."""
    return pd.DataFrame([{
        "B": f"{int(r.batch_size):,}", "direction": r.direction,
        "variance, Monte Carlo": number(r.var_mc), "variance, Lemma 1": number(r.var_formula),
        "skewness, Monte Carlo": fixed(r.skew_mc), "skewness, predicted": fixed(r.skew_pred),
        "excess kurtosis, Monte Carlo": fixed(r.exkurt_mc),
        "excess kurtosis, predicted": fixed(r.exkurt_pred),
        "Kolmogorov-Smirnov distance": fixed(r.ks_stat, 3),
        "its p-value": _p_value(r.ks_pvalue),
        "beyond 3 standard deviations": f"{r.tail3_mc:.2%}",
    } for r in gauss.itertuples()])


def lemma2_cells(chk: dict[str, float]) -> pd.DataFrame:
    """:func:`lemma2_network_check` as one row of text cells."""
    half = 1.96 * chk["se"]
    return pd.DataFrame([{
        "Monte Carlo (95% interval)": interval(chk["mc"], chk["mc"] - half, chk["mc"] + half,
                                               4),
        "Lemma 2": number(chk["formula"], 4), "trace term": number(chk["trace_term"], 4),
        "mean term": number(chk["mean_term"], 3), "z": fixed(chk["z"]),
    }])


def quadratic_cells(quad: pd.DataFrame, stability_limit: float) -> pd.DataFrame:
    """:func:`one_step_quadratic_study` as text cells (excess losses)."""
    return pd.DataFrame([{
        "step size / stability limit": fixed(r.lr / stability_limit),
        "B": f"{int(r.batch_size):,}", "before the step": number(r.current, 4),
        "full-batch step": number(r.deterministic, 4), "noise term": number(r.noise, 3),
        "Lemma 2": number(r.formula, 4),
        "Monte Carlo (95% interval)": interval(r.mc, r.mc - 1.96 * r.se, r.mc + 1.96 * r.se,
                                               4),
        "z": fixed(r.z),
    } for r in quad.itertuples()])


def markov_cells(mk: pd.DataFrame) -> pd.DataFrame:
    """:func:`markov_study` as text cells (excess losses; frequencies in percent)."""
    return pd.DataFrame([{
        "increase a": number(r.increase, 3),
        "a / expected next loss": number(r.increase / r.expected_next, 3),
        "observed frequency (95% interval)": (
            f"{r.frequency:.2%} [{max(r.frequency - 1.96 * r.frequency_se, 0):.2%}, "
            f"{min(r.frequency + 1.96 * r.frequency_se, 1):.2%}]"),
        "Markov bound": f"{r.bound:.2%}",
    } for r in mk.itertuples()])


def network_cells(net: pd.DataFrame) -> pd.DataFrame:
    """:func:`network_one_step_by_activation` as text cells: per activation and step size,
    the full-batch change against its second-order prediction and the noise part against
    Lemma 2, as ratios with 95% intervals."""
    return pd.DataFrame([{
        "activation": activation_name(r.activation), "step × largest eigenvalue": fixed(r.eta_lam),
        "full-batch change / second order": fixed(r.gd_ratio, 4),
        "noise part / Lemma 2 (95% interval)": interval(
            r.noise_ratio, r.noise_ratio - 1.96 * r.noise_ratio_se,
            r.noise_ratio + 1.96 * r.noise_ratio_se, 3),
        "z": fixed(r.noise_z),
    } for r in net.itertuples()])
