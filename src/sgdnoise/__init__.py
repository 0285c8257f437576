"""sgdnoise: the structure of the noise in stochastic gradient descent.

Import the submodule you need; nothing heavy is imported here. The library, by concept
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

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdnoise")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
