"""sgdnoise: the structure of the noise in stochastic gradient descent.

The stable public API is importable from here (``from sgdnoise import per_example_grads``;
:data:`STABLE_API` lists it with each name's submodule); nothing heavy is imported until a
name is used. The library, by concept
(one home for each formula; nothing here imports :mod:`sgdnoise.chapters`):

- :mod:`sgdnoise.grads`: per-example gradients (torch.func, chunked), products ``G V``
  without forming G, flat parameter vectors.
- :mod:`sgdnoise.covariance`: Lemma 1 (the factor ``finite_population_factor``, dense
  ``c · D``, its trace, the noise scale ``B_simple`` and its tracker along training, the
  Monte Carlo check, mini-batch means), Gram spectra and noise-energy shares.
- :mod:`sgdnoise.curvature`: one family of matrix-free curvature operators (gradient
  covariance, empirical / true Fisher, GGN, Hessian) and their dense references.
- :mod:`sgdnoise.spectral`: one Lanczos (eigenvalues, SLQ densities, ``f(A) Z``), power
  iteration, Hutchinson traces, and readers of a spectrum (rank, outliers, near-zero mass,
  subspace capture).
- :mod:`sgdnoise.stability`: Lemma 2, SGD on quadratics, stability bounds.
- :mod:`sgdnoise.noise`: the noise-injecting optimizer ``NoisySGD`` (covariance kinds,
  injection scale decoupled from the learning rate and the batch size).
- :mod:`sgdnoise.stats`: intervals, paired differences, equivalence tests, fits.
- :mod:`sgdnoise.models`, :mod:`sgdnoise.data`: the model zoo (softmax regression to
  ResNets) and CIFAR-10 / a synthetic stand-in with identity records and pooling.
- :mod:`sgdnoise.train`: the one training loop (``train``, with ``hooks=`` for early stops
  and logging), learning-rate scaling rules; :mod:`sgdnoise.distributed` its data-parallel
  path.
- :mod:`sgdnoise.sweep`: plans of training runs (YAML), the budgeted, sharded sweep that
  runs them (command ``sgdnoise-sweep``) and their records.
- :mod:`sgdnoise.params`, :mod:`sgdnoise.report`, :mod:`sgdnoise.provenance`,
  :mod:`sgdnoise.plotting`, :mod:`sgdnoise.validate`: chapter parameters, verdicts and
  provenance tables, figure style, argument checks.

:mod:`sgdnoise.chapters` holds the book's experiments, one module per chapter notebook
(``chapters.chNN_<name>``: its ``Params``, studies and verdict functions), plus
``chapters.small_problems`` shared by chapters 1–3 and 5.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("sgdnoise")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

#: The stable public API (see CHANGELOG.md and the version policy in README.md): each name
#: maps to the submodule it lives in. ``sgdnoise.<name>`` imports that submodule on first use
#: (PEP 562), so ``import sgdnoise`` stays light. Within a major version these names keep
#: their signatures and meaning; everything else (other submodule names, anything with a
#: leading underscore, :mod:`sgdnoise.chapters`) may change in any release.
STABLE_API: dict[str, str] = {
    # per-example gradients
    "per_example_grads": "sgdnoise.grads",
    "full_gradient": "sgdnoise.grads",
    "per_example_grad_products": "sgdnoise.grads",
    "flat_params": "sgdnoise.grads",
    "set_flat_params": "sgdnoise.grads",
    "num_params": "sgdnoise.grads",
    "grads_nbytes": "sgdnoise.grads",
    # Lemma 1 and the noise scale
    "finite_population_factor": "sgdnoise.covariance",
    "gradient_covariance": "sgdnoise.covariance",
    "minibatch_covariance": "sgdnoise.covariance",
    "minibatch_trace": "sgdnoise.covariance",
    "noise_scale": "sgdnoise.covariance",
    "noise_scale_of_model": "sgdnoise.train.noise_scale",
    "NoiseScaleTracker": "sgdnoise.train.noise_scale",
    # curvature operators
    "CurvatureOperator": "sgdnoise.curvature",
    "HessianOperator": "sgdnoise.curvature",
    "GGNOperator": "sgdnoise.curvature",
    "EmpiricalFisherOperator": "sgdnoise.curvature",
    "TrueFisherOperator": "sgdnoise.curvature",
    "CovarianceOperator": "sgdnoise.curvature",
    "sharpness": "sgdnoise.curvature",
    "lanczos": "sgdnoise.spectral",
    "LanczosResult": "sgdnoise.spectral",
    "hutchinson_trace": "sgdnoise.spectral",
    # noise injection
    "NoisySGD": "sgdnoise.noise",
    "NoiseSpec": "sgdnoise.noise",
    "matched_injection_scale": "sgdnoise.noise",
    # training, sweeps, data, models
    "TrainConfig": "sgdnoise.train",  # the training function: sgdnoise.train.train
    "load_plan": "sgdnoise.sweep",
    "run_plan": "sgdnoise.sweep",
    "load_records": "sgdnoise.sweep",
    "load_dataset": "sgdnoise.data",
    "build_model": "sgdnoise.models",
}

__all__ = ["__version__", *STABLE_API]


def __getattr__(name: str) -> Any:
    """``sgdnoise.<name>`` for a name of :data:`STABLE_API`, imported on first use."""
    module = STABLE_API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
