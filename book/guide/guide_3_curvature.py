# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # Top eigenvalues of the Hessian, the Gauss-Newton matrix and the Fisher
#
# A network's curvature matrices are $P \times P$ with $P$ in the millions: they are never
# formed. Each operator of `sgdnoise.curvature` gives products $A V$ of a matrix $A$ with a
# block of vectors $V$, built from the model and a batch of examples, and `eigh(k)` runs
# Lanczos on those products to return the $k$ largest eigenvalues with their eigenvectors.
# For the mean loss $L$ over $N$ examples, with $J_i$ the Jacobian of example $i$'s outputs
# and $H^{\rm out}_i$ the Hessian of its loss in those outputs:
#
# $$
# H = \nabla^2 L, \qquad
# G = \frac1N \sum_i J_i^\top H^{\rm out}_i J_i, \qquad
# \hat F = \frac1N \sum_i g_i g_i^\top .
# $$ (eq-guide-curv)
#
# For cross-entropy the true Fisher equals $G$. A product costs about two backward passes
# over the batch (the Gauss-Newton and Fisher ones a few more), and Lanczos needs one
# product per iteration: the table below states both for every call. Models with BatchNorm
# are measured in evaluation mode, where the batch's loss is a sum of per-example losses.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
num_examples = 32
tv_image_size = 32
top_k = 2
num_iters = 20
book_width = 8

# %% tags=["remove-cell"]
import torch
from IPython.display import Markdown, display

from sgdnoise.data import load_dataset, pool_images, to_float
from sgdnoise.params import Param, validate
from sgdnoise.report import Stopwatch, markdown_table, provenance_markdown

POS = Param("int", low=1)
P = validate(dict(profile=profile, dataset=dataset, seed=seed, num_examples=num_examples,
                  tv_image_size=tv_image_size, top_k=top_k, num_iters=num_iters,
                  book_width=book_width),
             {"profile": Param("str", choices=["smoke", "default", "full"]),
              "dataset": Param("str", choices=["synthetic", "cifar10"]),
              "seed": Param("int", low=0), "num_examples": Param("int", low=2),
              "tv_image_size": Param("int", choices=[8, 16, 32]), "top_k": POS,
              "num_iters": POS, "book_width": POS})
clock = Stopwatch()
torch.manual_seed(P["seed"])
data = load_dataset(P["dataset"], n_train=max(P["num_examples"], 16), n_test=16, seed=P["seed"])
identity = data.identity.to_dict()
x = to_float(data.train_x[: P["num_examples"]])
y = data.train_y[: P["num_examples"]]

# %% [markdown]
# ## The calls
#
# Each operator is built from the model, the loss and the batch, and copies the parameters
# when it is built, so it stays the same matrix if the model trains on. `num_iters` caps
# the products Lanczos may spend; without it, Lanczos iterates until the residual of each
# wanted pair is below its tolerance, which for a large network can take many products.
# The result says whether it converged and how many products it spent.

# %%
import time

import torch.nn.functional as F
import torchvision

from sgdnoise import (
    EmpiricalFisherOperator,
    GGNOperator,
    HessianOperator,
    TrueFisherOperator,
    build_model,
    num_params,
)

OPERATORS = {"Hessian": HessianOperator, "Gauss-Newton": GGNOperator,
             "empirical Fisher": EmpiricalFisherOperator, "true Fisher": TrueFisherOperator}


def top_eigenvalues(name, model, inputs):
    rows = []
    for label, cls in OPERATORS.items():
        op = cls(model, F.cross_entropy, inputs, y)
        start = time.perf_counter()
        res = op.eigh(P["top_k"], num_iters=P["num_iters"])
        rows.append({"model": name, "P": num_params(model), "operator": label,
                     "top eigenvalues": ", ".join(f"{v:.4g}" for v in res.eigenvalues.tolist()),
                     "products": res.num_matvecs, "converged": res.converged,
                     "seconds": round(time.perf_counter() - start, 1)})
    return rows


resnet = torchvision.models.resnet18(num_classes=10).eval()
cnn = build_model("cnn", width=P["book_width"], norm="group")
rows = (top_eigenvalues("torchvision ResNet-18", resnet,
                        pool_images(x, P["tv_image_size"]))
        + top_eigenvalues("book CNN", cnn, x))

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["model", "$P$", "operator", "top eigenvalues", "products", "converged", "seconds"],
    ([r["model"], f"{r['P']:,}", r["operator"], r["top eigenvalues"], r["products"],
      "yes" if r["converged"] else "no", r["seconds"]] for r in rows), right=(1, 4, 6))))

# %% [markdown]
# The Gauss-Newton and true-Fisher rows agree, as they must for cross-entropy; the Hessian's
# top eigenvalue is close to them near a minimum and may differ elsewhere. A row that did not
# converge within the product budget gives a lower bound on the top eigenvalue (Lanczos
# approaches the extreme eigenvalues from inside the spectrum): raise the budget or accept
# the bound. Each operator also gives `matvec`, `trace` (exact, from $P$ products: small
# models only) and a `scipy` view; `sgdnoise.spectral.hutchinson_trace` estimates the trace
# of a large one from a few products.
#
# A model whose layers have no second derivative implemented in PyTorch (the hard-sigmoid of
# torchvision's MobileNet-V3 is one) cannot give Hessian products: the call stops with
# PyTorch's error naming the operation. Its Gauss-Newton and Fisher products need only first
# derivatives of the network.

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
