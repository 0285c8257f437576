# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # The covariance of a mini-batch gradient
#
# A mini-batch of $B$ examples drawn uniformly from $N$ gives the gradient
# $g_\mathcal{B} = \frac1B \sum_{i \in \mathcal{B}} g_i$, an unbiased estimate of the full
# gradient $\bar g$ with covariance (Lemma 1 of {cite}`chaudhari2018sgd`)
#
# $$
# \operatorname{Cov}(g_\mathcal{B}) = c\, D, \qquad
# c = \begin{cases} 1/B & \text{with replacement,} \\
#                    \dfrac{N - B}{B (N - 1)} & \text{without,} \end{cases}
# $$ (eq-guide-lemma1)
#
# with $D$ the covariance of the per-example gradients over the $N$ examples. This page
# computes it for a batch of your model. For a network with millions of parameters the
# $P \times P$ matrix is never formed: `CovarianceOperator` keeps the $N \times P$
# per-example gradients and gives products, the exact trace, and the top eigenpairs through
# the $N \times N$ Gram matrix, whose non-zero eigenvalues are those of the covariance. For a
# model small enough, `minibatch_covariance` gives the dense matrix, and a Monte Carlo draw
# of mini-batches checks it.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
num_examples = 64
tv_image_size = 32
batch_sizes = [1, 4, 16, 64]
top_k = 3
softmax_image_size = 4
mc_samples = 4000

# %% tags=["remove-cell"]
import torch
from IPython.display import Markdown, display

from sgdnoise.data import load_dataset, pool_images, to_float
from sgdnoise.params import Param, validate
from sgdnoise.report import Stopwatch, markdown_table, provenance_markdown

P = validate(dict(profile=profile, dataset=dataset, seed=seed, num_examples=num_examples,
                  tv_image_size=tv_image_size, batch_sizes=batch_sizes, top_k=top_k,
                  softmax_image_size=softmax_image_size, mc_samples=mc_samples),
             {"profile": Param("str", choices=["smoke", "default", "full"]),
              "dataset": Param("str", choices=["synthetic", "cifar10"]),
              "seed": Param("int", low=0), "num_examples": Param("int", low=2),
              "tv_image_size": Param("int", choices=[8, 16, 32]),
              "batch_sizes": Param("list[int]", low=1), "top_k": Param("int", low=1),
              "softmax_image_size": Param("int", choices=[1, 2, 4, 8]),
              "mc_samples": Param("int", low=2)})
if max(P["batch_sizes"]) > P["num_examples"]:
    raise ValueError(f"batch_sizes must be <= num_examples ({P['num_examples']}), got "
                     f"{P['batch_sizes']}")
clock = Stopwatch()
torch.manual_seed(P["seed"])
data = load_dataset(P["dataset"], n_train=max(P["num_examples"], 16), n_test=16,
                    seed=P["seed"])
identity = data.identity.to_dict()
x = to_float(data.train_x[: P["num_examples"]])
y = data.train_y[: P["num_examples"]]

# %% [markdown]
# ## A torchvision ResNet-18, matrix-free
#
# The per-example gradients $G$ of the batch come first (the model in evaluation mode); the
# operator then answers for each batch size. Its trace is
# $c \operatorname{tr} D$, the total variance of the mini-batch gradient, in $O(NP)$.

# %%
import torch.nn.functional as F
import torchvision

from sgdnoise import CovarianceOperator, per_example_grads

resnet = torchvision.models.resnet18(num_classes=10).eval()
G = per_example_grads(resnet, F.cross_entropy, pool_images(x, P["tv_image_size"]), y)
rows = []
for B in P["batch_sizes"]:
    for replacement in (True, False):
        cov = CovarianceOperator(G, batch_size=B, replacement=replacement)
        # exact top-k through the N × N Gram matrix (no Krylov iteration), vectors (P, k)
        top = cov.eigh(P["top_k"])[0].tolist()
        rows.append({"B": B, "replacement": replacement, "c": cov.factor,
                     "trace": cov.trace(), "top": top})

# %% tags=["remove-input"]
table = markdown_table(
    ["$B$", "drawn", "$c$", "$\\operatorname{tr}\\operatorname{Cov}(g_\\mathcal{B})$",
     "top eigenvalues"],
    ([r["B"], f"{'with' if r['replacement'] else 'without'} replacement", f"{r['c']:.4g}",
      f"{r['trace']:.4g}", ", ".join(f"{v:.4g}" for v in r["top"])] for r in rows),
    right=(0, 2, 3))
display(Markdown(f"$N = {G.shape[0]}$ examples, $P = {G.shape[1]:,}$ parameters.\n\n"
                 + table))

# %% [markdown]
# The trace falls as $1/B$ with replacement; without replacement it reaches zero at
# $B = N$, where the batch is the whole population and its gradient is not random.
#
# ## A small model, dense, checked by Monte Carlo
#
# The book's softmax regression on images pooled to a few pixels has few enough parameters
# for the dense $P \times P$ matrix. `sample_minibatch_gradients` draws mini-batch gradients
# from the same $G$; their sample covariance approaches $c\,D$ with an error that shrinks
# like one over the square root of the number of draws.

# %%
from sgdnoise import build_model, minibatch_covariance
from sgdnoise.covariance import sample_covariance, sample_minibatch_gradients

small_x = pool_images(x, P["softmax_image_size"])
softmax = build_model("softmax", in_shape=tuple(small_x.shape[1:])).double()
G_small = per_example_grads(softmax, F.cross_entropy, small_x.double(), y)
B = P["batch_sizes"][1] if len(P["batch_sizes"]) > 1 else P["batch_sizes"][0]
lemma1 = minibatch_covariance(G_small, B, replacement=False)
draws = sample_minibatch_gradients(G_small, B, P["mc_samples"], replacement=False,
                                   generator=torch.Generator().manual_seed(P["seed"]))
error = float(torch.linalg.norm(sample_covariance(draws) - lemma1) / torch.linalg.norm(lemma1))
print(f"P = {G_small.shape[1]}, B = {B} without replacement, {P['mc_samples']} draws:\n"
      f"relative Frobenius error of the Monte Carlo covariance = {error:.3f}")

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
