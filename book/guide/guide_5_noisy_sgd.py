# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # Injecting anisotropic noise into an ordinary PyTorch loop
#
# `NoisySGD` is `torch.optim.SGD` that adds a Gaussian vector to the gradient before each
# step:
#
# $$
# \theta \leftarrow \theta - \eta \left( g_\mathcal{B} + \sqrt{s}\, \xi \right), \qquad
# \xi \sim \mathcal{N}(0, \Sigma),
# $$ (eq-guide-noisy)
#
# where the covariance $\Sigma$ of the chosen kind stands in for the per-example gradient
# covariance $D$ and is estimated on $M$ examples of the current batch. The injection scale
# $s$ is set apart from the learning rate and the batch size: with
# $s = 1/b - 1/B$ (`matched_injection_scale`), a step on a batch of $B$ examples has the
# gradient covariance of a step on a batch of $b$ when $\Sigma = D$. Chapter 9 of the book
# studies what this does; this page shows how to put it into a loop of your own.
#
# The loop changes in one line: after the backward pass, the optimizer is shown the batch
# (`observe_batch`), from which it draws the noise, and then steps. The noise needs
# per-example quantities, so the model must not couple the examples of a batch: BatchNorm
# in training mode is refused with a message; GroupNorm (torchvision's ResNets take it as
# `norm_layer`) or evaluation-mode BatchNorm work.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
n_train = 512
tv_image_size = 32
steps = 10
small_batch = 16
large_batch = 128
num_samples = 32
lr = 0.05
book_width = 8
kinds = ["none", "isotropic", "diag_fisher", "subsampled", "true_fisher"]

# %% tags=["remove-cell"]
import torch
from IPython.display import Markdown, display

from sgdnoise.data import load_dataset, pool_images, to_float
from sgdnoise.noise import KINDS
from sgdnoise.params import Param, validate
from sgdnoise.report import Stopwatch, markdown_table, provenance_markdown

POS = Param("int", low=1)
P = validate(dict(profile=profile, dataset=dataset, seed=seed, n_train=n_train,
                  tv_image_size=tv_image_size, steps=steps, small_batch=small_batch,
                  large_batch=large_batch, num_samples=num_samples, lr=lr,
                  book_width=book_width, kinds=kinds),
             {"profile": Param("str", choices=["smoke", "default", "full"]),
              "dataset": Param("str", choices=["synthetic", "cifar10"]),
              "seed": Param("int", low=0), "n_train": Param("int", low=16),
              "tv_image_size": Param("int", choices=[8, 16, 32]), "steps": POS,
              "small_batch": POS, "large_batch": Param("int", low=2),
              "num_samples": Param("int", low=2), "lr": Param("float", low=0, low_open=True),
              "book_width": POS, "kinds": Param("list[str]", choices=list(KINDS))})
clock = Stopwatch()
torch.manual_seed(P["seed"])
data = load_dataset(P["dataset"], n_train=P["n_train"], n_test=16, seed=P["seed"])
identity = data.identity.to_dict()
images, labels = to_float(data.train_x), data.train_y

# %% [markdown]
# ## A torchvision ResNet-18 with GroupNorm
#
# The loop below is an ordinary one; only the optimizer and the `observe_batch` line are
# new. The noise of the `subsampled` kind is the exact covariance of the per-example
# gradients of $M$ batch examples, drawn with one extra backward pass.

# %%
import textwrap
from functools import partial

import torch.nn.functional as F
import torchvision
from torch import nn

from sgdnoise import NoisySGD, matched_injection_scale

model = torchvision.models.resnet18(num_classes=10, norm_layer=partial(nn.GroupNorm, 8))
s = matched_injection_scale(P["small_batch"], P["large_batch"])
optimizer = NoisySGD(model.parameters(), lr=P["lr"], kind="subsampled", injection_scale=s,
                     model=model, loss_fn=F.cross_entropy, num_samples=P["num_samples"],
                     seed=P["seed"])
x_all = pool_images(images, P["tv_image_size"])
generator = torch.Generator().manual_seed(P["seed"])
log = []
for step in range(P["steps"]):
    idx = torch.randint(0, len(labels), (P["large_batch"],), generator=generator)
    xb, yb = x_all[idx], labels[idx]
    optimizer.zero_grad()
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    optimizer.observe_batch(xb, yb)  # the one new line: the noise is drawn from this batch
    optimizer.step()
    log.append((step, loss.item(), optimizer.stats.last_noise_norm))
print(f"s = 1/{P['small_batch']} - 1/{P['large_batch']} = {s:.5f}")
for step, loss, noise in log[:: max(1, len(log) // 5)]:
    print(f"step {step:3d}: loss {loss:.4f}, injected noise norm {noise:.4f}")
print(f"{optimizer.stats.noise_seconds:.2f} s of {clock.seconds:.2f} s spent drawing noise")

# %% [markdown]
# The same optimizer on the stock ResNet-18, whose BatchNorm layers are in training mode,
# stops at the first step and says why:

# %%
bn_model = torchvision.models.resnet18(num_classes=10).train()
bn_optimizer = NoisySGD(bn_model.parameters(), lr=P["lr"], kind="subsampled",
                        injection_scale=s, model=bn_model, loss_fn=F.cross_entropy)
bn_optimizer.zero_grad()
F.cross_entropy(bn_model(xb), yb).backward()
bn_optimizer.observe_batch(xb, yb)
try:
    bn_optimizer.step()
except ValueError as err:
    print(textwrap.fill(f"ValueError: {err}", 78))

# %% [markdown]
# ## The kinds of noise, on the book's CNN
#
# Each kind draws $\xi$ differently (the API page of `sgdnoise.noise` gives each covariance
# $\Sigma$): isotropic noise of the same trace as $D$, its diagonal, the exact sub-sampled
# covariance, or the true Fisher with labels drawn from the model. Below, a few steps of each
# kind from the same initialisation and the same batches, with the size of the injected
# noise and the time spent drawing it.

# %%
from sgdnoise import build_model


def run(kind):
    torch.manual_seed(P["seed"])
    net = build_model("cnn", width=P["book_width"], norm="group")
    opt = NoisySGD(net.parameters(), lr=P["lr"], kind=kind, injection_scale=s, model=net,
                   loss_fn=F.cross_entropy, num_samples=P["num_samples"], seed=P["seed"])
    gen = torch.Generator().manual_seed(P["seed"])
    norms = []
    for _ in range(P["steps"]):
        idx = torch.randint(0, len(labels), (P["large_batch"],), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        loss.backward()
        opt.observe_batch(images[idx], labels[idx])
        opt.step()
        norms.append(opt.stats.last_noise_norm)
    return {"kind": kind, "final loss": loss.item(), "mean noise norm": sum(norms) / len(norms),
            "noise seconds": opt.stats.noise_seconds}


results = [run(kind) for kind in P["kinds"]]

# %% tags=["remove-input"]
display(Markdown(markdown_table(
    ["kind", "loss after the last step", "mean injected norm", "seconds drawing noise"],
    ([f"`{r['kind']}`", f"{r['final loss']:.4f}", f"{r['mean noise norm']:.4g}",
      f"{r['noise seconds']:.2f}"] for r in results), right=(1, 2, 3))))

# %% [markdown]
# The same optimizer runs under the book's training engine: `sgdnoise.train.train` takes an
# `optimizer_factory`, and `NoiseSpec.optimizer_factory` builds one from a spec like those of
# a sweep plan's `noise` section ({doc}`guide_6_sweep`).

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
