# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # The gradient noise scale along training
#
# The simple noise scale
#
# $$
# B_{\rm simple} = \frac{\operatorname{tr} D}{\lVert \bar g \rVert^2},
# \qquad D = \frac1N \sum_{i=1}^N (g_i - \bar g)(g_i - \bar g)^\top,
# $$ (eq-guide-bsimple)
#
# measured on a fixed probe set of $N$ training examples, says how large a batch must be
# before the noise of its gradient is smaller than the gradient itself
# {cite}`mccandlish2018empirical`. It changes during training, so one measures it every few
# steps. This page does that twice: with a hook on the optimizer of an ordinary PyTorch loop
# training a torchvision ResNet-18, and with the hook that the book's own training engine
# takes, on one of the book's small convolutional networks.
#
# `noise_scale_of_model` computes {eq}`eq-guide-bsimple` in chunks of examples, reducing
# each chunk's per-example gradients at once, so its memory does not grow with the probe
# set. It puts the model in evaluation mode while it measures (BatchNorm then uses its
# running statistics, which keeps the examples independent) and restores the mode after.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
n_train = 512
probe_n = 64
seed = 0
tv_image_size = 32
tv_batch_size = 32
tv_steps = 30
tv_lr = 0.05
every = 10
book_width = 8
book_batch_size = 32
book_epochs = 4
book_lr = 0.05

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from sgdnoise.data import load_dataset, pool_images, to_float
from sgdnoise.params import Param, validate
from sgdnoise.plotting import FIGURE_WIDTH_IN, source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown

POS = Param("int", low=1)
P = validate(
    dict(profile=profile, dataset=dataset, n_train=n_train, probe_n=probe_n, seed=seed,
         tv_image_size=tv_image_size, tv_batch_size=tv_batch_size, tv_steps=tv_steps,
         tv_lr=tv_lr, every=every, book_width=book_width, book_batch_size=book_batch_size,
         book_epochs=book_epochs, book_lr=book_lr),
    {"profile": Param("str", choices=["smoke", "default", "full"]),
     "dataset": Param("str", choices=["synthetic", "cifar10"]), "n_train": Param("int", low=16),
     "probe_n": Param("int", low=2), "seed": Param("int", low=0),
     "tv_image_size": Param("int", choices=[8, 16, 32]), "tv_batch_size": POS,
     "tv_steps": POS, "tv_lr": Param("float", low=0, low_open=True), "every": POS,
     "book_width": POS, "book_batch_size": POS, "book_epochs": POS,
     "book_lr": Param("float", low=0, low_open=True)})
clock = Stopwatch()
use_style()
torch.manual_seed(P["seed"])
data = load_dataset(P["dataset"], n_train=P["n_train"], n_test=max(16, P["probe_n"]),
                    seed=P["seed"])
identity = data.identity.to_dict()
LABEL = source_label(profile, identity)

# %% [markdown]
# ## A hook on the optimizer of your own loop
#
# PyTorch optimizers accept a function to call after every step
# (`register_step_post_hook`). The hook below measures the noise scale every few steps on a
# probe set of training images and keeps a row per measurement; the loop itself is the
# usual one and does not know about it. The ResNet-18 trains with its BatchNorm layers in
# training mode; the measurement switches them to their running statistics for its own
# duration.

# %%
import torch.nn.functional as F
import torchvision

from sgdnoise import noise_scale_of_model

images = pool_images(to_float(data.train_x), P["tv_image_size"])
labels = data.train_y
probe_x, probe_y = images[: P["probe_n"]], labels[: P["probe_n"]]

model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=P["tv_lr"])
rows, steps_taken = [], [0]


def measure(opt, args, kwargs):
    """The step hook: counts the steps, measures B_simple on the probe set every few."""
    steps_taken[0] += 1
    if steps_taken[0] % P["every"] == 0:
        rows.append({"step": steps_taken[0], **noise_scale_of_model(model, probe_x, probe_y)})


handle = optimizer.register_step_post_hook(measure)
generator = torch.Generator().manual_seed(P["seed"])
model.train()
for _ in range(P["tv_steps"]):
    idx = torch.randint(0, len(labels), (P["tv_batch_size"],), generator=generator)
    optimizer.zero_grad()
    F.cross_entropy(model(images[idx]), labels[idx]).backward()
    optimizer.step()
handle.remove()
tv_rows = pd.DataFrame(rows).assign(model="torchvision ResNet-18")
print(tv_rows[["step", "b_simple", "trace_D", "grad_norm_sq"]].to_string(index=False))

# %% [markdown]
# ## The hook of the book's training engine
#
# The function `train` of `sgdnoise.train` runs the book's experiments. Its `hooks` take any object with an
# `on_eval` method, called with each evaluation record; `NoiseScaleTracker` is one, which
# measures the same quantity on its probe set after every evaluation. The model must be the
# one being trained, so it is built first and handed to `train`.

# %%
from sgdnoise import NoiseScaleTracker, TrainConfig, build_model
from sgdnoise.train import train

book_model = build_model("cnn", width=P["book_width"], norm="group")
tracker = NoiseScaleTracker(book_model, to_float(data.train_x[: P["probe_n"]]),
                            data.train_y[: P["probe_n"]], label="book cnn")
cfg = TrainConfig(model="cnn", width=P["book_width"], norm="group", device="cpu",
                  batch_size=P["book_batch_size"], epochs=P["book_epochs"], lr=P["book_lr"],
                  seed=P["seed"], augment=False, eval_points=None, amp=False,
                  channels_last=False)
result = train(cfg, data, model=book_model, hooks=[tracker], progress=False)
book_rows = tracker.frame().assign(model="book CNN (GroupNorm)")
print(book_rows[["epoch", "step", "train_loss", "b_simple"]].to_string(index=False))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The simple noise scale measured by a hook along training, for a torchvision ResNet-18 trained by an ordinary loop (left) and the book's small CNN trained by the book's engine (right).", "name": "fig-guide-bsimple"}}
fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH_IN, 2.8))
for ax, frame in zip(axes, (tv_rows, book_rows), strict=True):
    ax.plot(frame["step"], frame["b_simple"], marker="o")
    ax.set(xlabel="step", ylabel=r"$B_{\rm simple}$", yscale="log", title=frame["model"][0])
fig.suptitle(LABEL)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each point is one call of `noise_scale_of_model` on the probe set; the number depends on
# the probe set's size and on how far training has gone, so compare values measured the
# same way. The cost of one measurement is about that of one backward pass per probe
# example: keep the probe small and the interval between measurements long.

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
