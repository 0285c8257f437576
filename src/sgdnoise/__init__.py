"""sgdnoise: the structure of the noise in stochastic gradient descent.

Submodules (import the one you need; nothing heavy is imported here):

- :mod:`sgdnoise.grads`       per-example gradients (torch.func, chunked)
- :mod:`sgdnoise.covariance`  Lemma 1 covariance (dense and matrix-free), noise scale
- :mod:`sgdnoise.curvature`   Hessian / GGN / Fisher products and operators, Fisher-Rao norm
- :mod:`sgdnoise.spectral`    Lanczos, Hutchinson trace, stochastic Lanczos quadrature
- :mod:`sgdnoise.stability`   Lemma 2, SGD on quadratics, stability and saddle simulations
- :mod:`sgdnoise.noise`       noise-injecting optimizer (anisotropic noise decoupled from lr and B)
- :mod:`sgdnoise.models`      softmax regression, MLP, small CNN, CIFAR ResNets
- :mod:`sgdnoise.data`        CIFAR-10 as tensors, with identity records
- :mod:`sgdnoise.train`       the training engine; :mod:`sgdnoise.sweep` the batch-size sweep CLI
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdnoise")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
