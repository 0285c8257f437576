# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # Using sgdnoise in your own code
#
# The chapters use `sgdnoise` to check claims about SGD's noise. This part of the book is for
# the reader who wants the same measurements on their own model and in their own training
# loop. Each page is executed when the book is built, on a torchvision network and on one of
# the book's small models, so every number on it was computed by the code it shows (open the
# folded cells to read that code).
#
# - {doc}`guide_2_noise_scale`: the gradient noise scale of a model along training, from a
#   hook.
# - {doc}`guide_3_curvature`: the top eigenvalues of the Hessian, the Gauss-Newton matrix and
#   the Fisher of a model, with their cost.
# - {doc}`guide_4_covariance`: the covariance of a mini-batch gradient (Lemma 1).
# - {doc}`guide_5_noisy_sgd`: anisotropic noise injected by `NoisySGD` into an ordinary
#   PyTorch loop.
# - {doc}`guide_6_sweep`: a plan of training runs of your own, from the command line and
#   from Python.
#
# ## Installing
#
# From a clone of the repository, `pip install .` installs the package with its
# dependencies (PyTorch and torchvision among them); `pip install -e '.[dev]'` adds the test
# tools. The package needs Python 3.10 or later.
#
# ## The first example
#
# The per-example gradients of a batch are the raw material of everything else: the matrix
# $G$ whose row $i$ is the gradient $g_i$ of example $i$'s loss. Their spread against their
# mean gives the simple noise scale $B_{\rm simple} = \operatorname{tr} D / \lVert \bar g
# \rVert^2$, the batch size at which the noise of a mini-batch gradient is as large as the
# gradient itself {cite}`mccandlish2018empirical`. Here for a torchvision ResNet-18 on four
# random 16 × 16 images. Its BatchNorm layers must use their running statistics
# (`model.eval()`): in training mode they couple the examples of a batch, and the call
# refuses.

# %% tags=["parameters", "remove-cell"]
profile = "default"
seed = 0

# %% tags=["remove-cell"]
from IPython.display import Markdown, display

from sgdnoise.params import Param, validate
from sgdnoise.report import Stopwatch, markdown_table, provenance_markdown

P = validate(dict(profile=profile, seed=seed),
             {"profile": Param("str", choices=["smoke", "default", "full"]),
              "seed": Param("int", low=0)})
clock = Stopwatch()
identity = {"source": "random tensors (no data set)", "n_train": None}

# %% tags=["first-example"]
import textwrap

import torch
import torch.nn.functional as F
import torchvision

from sgdnoise import grads_nbytes, noise_scale, per_example_grads

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).eval()  # BatchNorm: running statistics
x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
G = per_example_grads(model, F.cross_entropy, x, y)  # (N, P)
print(f"G: {tuple(G.shape)}, {grads_nbytes(model, 4) / 2**20:.0f} MiB")
print(f"B_simple = {noise_scale(G):.3f}")

# %% [markdown]
# `grads_nbytes` states what $G$ costs before it is computed: $N \times P$ numbers. A call
# whose $G$ would take more than half the free memory is refused before any gradient, with
# a message that says how many examples fit in one piece (the fraction is the argument
# `max_memory_fraction`; here set absurdly low to show the message):

# %%
try:
    per_example_grads(model, F.cross_entropy, x, y, max_memory_fraction=1e-6)
except MemoryError as err:
    print(textwrap.fill(str(err), 78))

# %% [markdown]
# ## What works where
#
# - **Models that are not `nn.Sequential`.** Residual blocks, branches and custom `forward`
#   methods work everywhere: the model is called as a function of its parameters.
# - **BatchNorm.** In training mode it mixes the examples of a batch, so an example's
#   gradient is not defined: per-example gradients, the curvature operators and the noise of
#   `NoisySGD` refuse such a model, naming the layer. In evaluation mode BatchNorm uses its
#   running statistics and everything is exact. GroupNorm and LayerNorm work in both modes
#   (torchvision's ResNets take them as `norm_layer`).
# - **Precision.** float64 and float32 models work throughout. bfloat16 models give
#   per-example gradients in bfloat16 (about two significant digits; reduce them in float64)
#   and curvature products in bfloat16, whose top eigenvalues need Lanczos in float32
#   (`eigh(k, dtype=torch.float32)`). Inputs must have the model's dtype.
# - **GPUs.** Every computation stays on the device of the model's parameters; inputs and
#   targets must be there too, and the memory guard reads the device's free memory.
#
# The call below shows the refusal for the ResNet-18 of the example, put back in training
# mode:

# %%
model.train()
try:
    per_example_grads(model, F.cross_entropy, x, y)
except ValueError as err:
    print(textwrap.fill(str(err), 78))
_ = model.eval()

# %% [markdown]
# ## The stable API
#
# The names below are importable from `sgdnoise` itself and are the stable API: within a
# major version they keep their signatures and meaning (the version policy is in the
# repository's README, the changes in its CHANGELOG). Each is documented on its module's
# page of the {doc}`API reference <../api>`, and the main ones carry an example that the
# test suite runs.
# Everything else, and the chapters' own modules above all, may change in any release.

# %% tags=["remove-input"]
import inspect

import sgdnoise

names = sgdnoise.__all__[1:]  # the first is __version__
table = markdown_table(
    ["name", "kind", "module"],
    ([f"`{name}`", "class" if inspect.isclass(getattr(sgdnoise, name)) else "function",
      f"`{sgdnoise.STABLE_API[name]}`"] for name in names))
display(Markdown(f"`sgdnoise` {sgdnoise.__version__}: {len(names)} public names.\n\n"
                 + table))

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
