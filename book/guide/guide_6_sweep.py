# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # Running a sweep plan of your own
#
# Chapters 8 and 9 train dozens of networks, each described once in a plan: a YAML file
# with the data, the defaults of every run, the arms (each a list of batch sizes and seeds,
# a configuration and optionally injected noise) and the order in which to run them. The
# command `sgdnoise-sweep` (or `python -m sgdnoise.sweep`) runs a plan within a time budget,
# writes one record per finished run and never reruns a run whose record exists, so a
# killed sweep resumes where it stopped. This page writes a tiny plan, runs it from the
# command line and from Python, and reads the records back.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
n_train = 512
n_test = 256
width = 8
small_batch = 16
large_batch = 64
max_steps = 40
lr = 0.05
tv_image_size = 32

# %% tags=["remove-cell"]
import tempfile
from pathlib import Path

import torch
from IPython.display import Markdown, display

from sgdnoise.params import Param, validate
from sgdnoise.report import Stopwatch, provenance_markdown

POS = Param("int", low=1)
P = validate(dict(profile=profile, dataset=dataset, seed=seed, n_train=n_train, n_test=n_test,
                  width=width, small_batch=small_batch, large_batch=large_batch,
                  max_steps=max_steps, lr=lr, tv_image_size=tv_image_size),
             {"profile": Param("str", choices=["smoke", "default", "full"]),
              "dataset": Param("str", choices=["synthetic", "cifar10"]),
              "seed": Param("int", low=0), "n_train": Param("int", low=16),
              "n_test": Param("int", low=16), "width": POS, "small_batch": POS,
              "large_batch": POS, "max_steps": Param("int", low=2),
              "lr": Param("float", low=0, low_open=True),
              "tv_image_size": Param("int", choices=[8, 16, 32])})
clock = Stopwatch()
torch.manual_seed(P["seed"])
workdir = Path(tempfile.mkdtemp(prefix="sgdnoise-guide-sweep-"))
identity = {"source": P["dataset"], "n_train": P["n_train"]}

# %% [markdown]
# ## The plan
#
# Three arms on the book's small CNN with GroupNorm: a small batch, a large batch, and the
# large batch with sub-sampled noise injected at the scale that imitates the small batch's
# gradient covariance. Every key of `defaults` and of an arm's `config` is a field of
# `sgdnoise.TrainConfig`; an unknown key or a value out of range stops the command before
# any run, naming the key, the value and what is allowed.

# %%
import yaml

plan = {
    "name": "my-plan",
    "data": {"dataset": P["dataset"], "n_train": P["n_train"], "n_test": P["n_test"],
             "data_seed": P["seed"]},
    "defaults": {"model": "cnn", "width": P["width"], "norm": "group", "lr": P["lr"],
                 "max_steps": P["max_steps"], "eval_points": 2, "augment": False,
                 "device": "cpu", "amp": False, "channels_last": False},
    "arms": {
        "small": {"batch_sizes": [P["small_batch"]], "seeds": [P["seed"]]},
        "large": {"batch_sizes": [P["large_batch"]], "seeds": [P["seed"]]},
        "large-noisy": {"batch_sizes": [P["large_batch"]], "seeds": [P["seed"]],
                        "noise": {"kind": "subsampled",
                                  "matched_small_batch": P["small_batch"],
                                  "num_samples": P["small_batch"]}},
    },
}
plan_path = workdir / "my_plan.yaml"
plan_path.write_text(yaml.safe_dump(plan, sort_keys=False, default_flow_style=False))
print(plan_path.read_text())

# %% [markdown]
# ## From the command line
#
# `--dry-run` lists the runs in order without training; the same command without it trains
# them. Here it is started from Python with `subprocess`, as a shell would.

# %%
import subprocess
import sys

out_cli = workdir / "records-cli"
cmd = [sys.executable, "-m", "sgdnoise.sweep", str(plan_path), "--out", str(out_cli)]
dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, check=True)
print(dry.stdout)
done = subprocess.run(cmd, capture_output=True, text=True, check=True)
# the sweep reports on stderr, one "[sweep]" line per run it trains or skips
print("\n".join(line for line in done.stderr.splitlines() if line.startswith("[sweep]")))

# %% [markdown]
# ## From Python
#
# `run_plan` does the same in the current process and returns the records; `load_records`
# reads any folder of records into one table, one row per run and evaluation.

# %%
from sgdnoise import load_records, run_plan

records = run_plan(plan_path, workdir / "records-py")
table = load_records(workdir / "records-py")
final = table.sort_values("step").groupby("run_id").tail(1)
print(final[["arm", "batch_size", "noise_kind", "injection_scale", "step", "train_loss",
             "test_error"]].rename(columns={"batch_size": "B", "injection_scale": "s"})
      .to_string(index=False, float_format="{:.4g}".format))

# %% [markdown]
# ## A model the plan cannot name
#
# A plan names models of the book's zoo (`sgdnoise.models.MODEL_NAMES`). For any other
# network, one run with the same engine and the same noise is a call of `train` with the
# model and the optimizer factory of a `NoiseSpec`, here for a torchvision ResNet-18 with
# GroupNorm on images pooled to a smaller side.

# %%
from functools import partial

import torchvision
from torch import nn

from sgdnoise import NoiseSpec, TrainConfig, load_dataset
from sgdnoise.data import pool_dataset
from sgdnoise.train import train

data = load_dataset(P["dataset"], n_train=P["n_train"], n_test=P["n_test"], seed=P["seed"])
if P["tv_image_size"] != 32:
    data = pool_dataset(data, P["tv_image_size"])
spec = NoiseSpec.matched("subsampled", P["small_batch"], P["large_batch"],
                         num_examples=P["n_train"], num_samples=P["small_batch"])
cfg = TrainConfig(model="resnet18", batch_size=P["large_batch"], lr=P["lr"],
                  max_steps=P["max_steps"], eval_points=2, augment=False, seed=P["seed"],
                  device="cpu", amp=False, channels_last=False)
resnet = torchvision.models.resnet18(num_classes=10, norm_layer=partial(nn.GroupNorm, 8))
result = train(cfg, data, model=resnet, progress=False,
               optimizer_factory=spec.optimizer_factory(lr=P["lr"], seed=P["seed"]))
last = result.history[-1]
print(f"{result.status} after {result.steps} steps: training loss {last['train_loss']:.4f}, "
      f"test error {last['test_error']:.3f},\n"
      f"{result.optimizer.stats.noise_seconds:.2f} s drawing noise")

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
