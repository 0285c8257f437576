# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 8. The headline experiment: ResNet34 on CIFAR-10 across batch sizes
#
# The essay this book rebuilds {cite}`golmant2018noise` closes its argument with one
# experiment: ResNet34 {cite}`he2016deep` trained on CIFAR-10 {cite}`krizhevsky2009learning`
# with plain SGD, at batch sizes from 128 up to 32,768 out of the 50,000 training images.
# It reports that a generalization gap appears by $B \approx 4096$ and that beyond that
# point training and test error both plateau within a few epochs, so the network never
# reaches a useful solution. This chapter runs that sweep with the package's training engine
# ({mod}`sgdnoise.train`, driven by {func}`sgdnoise.sweep.run_sweep`), at two scales from the
# same code path: the paper-scale configuration (profile `full`, a GPU) and a laptop-scale
# analogue (profile `default`, two CPU cores) that keeps the ratios $B/N$.
#
# ## What a fixed epoch budget means for each batch size
#
# One epoch visits the $N$ training examples once, in a fresh random order, in batches of
# $B$ (the last batch holds the remainder). A run of $E$ epochs therefore takes
#
# $$
# S(B) = E \left\lceil \frac{N}{B} \right\rceil
# $$ (eq-ch8-steps)
#
# optimizer steps. At $N = 50{,}000$ and $E = 10$ that is 3,910 steps for $B = 128$ and
# 20 steps for $B = 32{,}768$. Plain SGD with a constant learning rate $\eta$ moves the
# parameters by $\theta_{t+1} - \theta_t = -\eta\, g_{\mathcal B_t}$, so by the triangle
# inequality, if every mini-batch gradient has norm at most $G$,
#
# $$
# \lVert \theta_{S} - \theta_0 \rVert \le \sum_{t<S} \eta \lVert g_{\mathcal B_t} \rVert
# \le \eta\, S(B)\, G .
# $$ (eq-ch8-reach)
#
# With the learning rate held fixed (no scaling rule), a large-batch run at a fixed epoch
# budget can travel only a small fraction of the distance that a small-batch run may
# travel: {eq}`eq-ch8-reach` shrinks like $1/B$. Whatever else happens, the largest batches
# are short runs.
#
# ## How much noise each step carries
#
# Write $g_{\mathcal B} = \bar g + \xi$ with $\bar g = \nabla L(\theta)$. An epoch's batches
# are drawn without replacement, so by Lemma 1 (chapter 1) the noise has mean zero and
#
# $$
# \operatorname{Cov}[\xi] = \frac{D}{B}\,\frac{N-B}{N-1},
# \qquad D = \frac1N \sum_i (g_i - \bar g)(g_i - \bar g)^\top .
# $$ (eq-ch8-cov)
#
# Over $k$ consecutive steps during which $\theta$ changes little, the displacement is a sum
# of $k$ such steps: its mean is $-k\eta\bar g$ and (treating successive batches as
# independent) its covariance is $k\eta^2 \operatorname{Cov}[\xi]$. Measuring time by
# $t = k\eta$, the displacement has mean $-t\,\bar g$ and covariance $t\cdot T\,D$ with the
# *temperature*
#
# $$
# T = \eta\,\frac{N-B}{B\,(N-1)} \approx \eta\left(\frac1B - \frac1N\right),
# $$ (eq-ch8-temp)
#
# the diffusion reading of SGD {cite}`smith2018bayesian,jastrzebski2017three`. At a fixed
# $\eta$, growing $B$ lowers the temperature and, by {eq}`eq-ch8-steps`, shortens the total
# time $\eta S(B)$ — both at once. At $B = 32{,}768$ the finite-population factor
# $(N-B)/(N-1) \approx 0.34$ cuts the noise further: the run is close to full-batch gradient
# descent for 20 steps.
#
# **The laptop scale.** The `default` profile trains a width-16 ResNet34 on a stratified
# subset of $n$ CIFAR-10 images with batch sizes $\operatorname{round}(B\,n/50{,}000)$. This
# keeps $B/N$, hence the steps per epoch, the total time $\eta S$ and the finite-population
# factor; it does *not* keep the temperature {eq}`eq-ch8-temp`, which is larger by about
# $50{,}000/n$ because the batches are smaller, nor the network's capacity. It is a
# qualitative analogue, labelled as such on every figure.
#
# **BatchNorm and micro-batches.** Batches too large for memory are accumulated from
# micro-batches. For networks without batch statistics this gives exactly the full-batch
# gradient (tested in `tests/test_train.py`), but BatchNorm {cite}`ioffe2015batchnorm`
# normalises each micro-batch with its own mean and variance: the large-batch runs of the
# `full` profile are "ghost batch norm" runs {cite}`hoffer2017train` with ghost batches of
# `micro_batch_size` examples, not BatchNorm over the whole batch.

# %% tags=["parameters"]
profile = "default"
dataset = "cifar10"
data_dir = ""
n_train = 1024
n_test = 500
data_seed = 0
model = "resnet34"
width = 16
norm = "batch"
batch_sizes = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
scale_batch_sizes = True
epochs = 4
lr = 0.1
momentum = 0.0
weight_decay = 0.0
seed = 0
device = "cpu"
micro_batch_size = 0
eval_batch_size = 1000
augment = True
out_dir = ""
recorded_dir = "../../data/results/ch08_full"

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown
from sgdnoise.sweep import (
    design_table,
    load_records,
    records_provenance,
    run_sweep,
    scaled_batch_sizes,
    summarize,
    sweep_findings,
)

SPEC = {
    "profile": Param("str", choices=("smoke", "default", "full")),
    "dataset": Param("str", choices=("cifar10", "synthetic")),
    "data_dir": Param("str"),
    "n_train": Param("int", low=2, high=50000),
    "n_test": Param("int", low=1, high=10000),
    "data_seed": Param("int", low=0),
    "model": Param("str", choices=("resnet20", "resnet18", "resnet34", "cnn")),
    "width": Param("int", low=1, high=512),
    "norm": Param("str", choices=("batch", "group", "none")),
    "batch_sizes": Param("list[int]", low=1, high=50000, min_len=2),
    "scale_batch_sizes": Param("bool"),
    "epochs": Param("int", low=1, high=1000),
    "lr": Param("float", low=1e-6, high=10.0),
    "momentum": Param("float", low=0.0, high=0.99),
    "weight_decay": Param("float", low=0.0, high=1.0),
    "seed": Param("int", low=0),
    "device": Param("str", choices=("cpu", "cuda", "auto")),
    "micro_batch_size": Param("int", low=0),
    "eval_batch_size": Param("int", low=1),
    "augment": Param("bool"),
    "out_dir": Param("str"),
    "recorded_dir": Param("str"),
}
P = validate(dict(profile=profile, dataset=dataset, data_dir=data_dir, n_train=n_train,
                  n_test=n_test, data_seed=data_seed, model=model, width=width, norm=norm,
                  batch_sizes=batch_sizes, scale_batch_sizes=scale_batch_sizes, epochs=epochs,
                  lr=lr, momentum=momentum, weight_decay=weight_decay, seed=seed, device=device,
                  micro_batch_size=micro_batch_size, eval_batch_size=eval_batch_size,
                  augment=augment, out_dir=out_dir, recorded_dir=recorded_dir), SPEC)
clock = Stopwatch()
use_style()

# %% [markdown]
# ## The sweep we run
#
# The parameters above describe the sweep in full-scale batch sizes; with
# `scale_batch_sizes` they are mapped to the training-set size of this profile. The table
# lists, for every run, the quantities derived above: steps per epoch and in total
# ({eq}`eq-ch8-steps`), the finite-population factor and the temperature
# ({eq}`eq-ch8-cov`, {eq}`eq-ch8-temp`) and the total diffusion time $\eta S$.

# %%
run_sizes = (scaled_batch_sizes(P["batch_sizes"], P["n_train"]) if P["scale_batch_sizes"]
             else list(P["batch_sizes"]))
design = design_table(run_sizes, P["n_train"], lr=P["lr"], epochs=P["epochs"],
                      reference_batch_sizes=P["batch_sizes"])
sweep_config = {
    "name": f"ch08-{P['profile']}",
    "dataset": P["dataset"], "data_dir": P["data_dir"] or None, "data_seed": P["data_seed"],
    "n_train": P["n_train"], "n_test": P["n_test"], "model": P["model"], "width": P["width"],
    "norm": P["norm"], "batch_sizes": run_sizes, "epochs": P["epochs"], "lr": P["lr"],
    "momentum": P["momentum"], "weight_decay": P["weight_decay"], "seed": P["seed"],
    "device": P["device"], "micro_batch_size": P["micro_batch_size"] or None,
    "eval_batch_size": P["eval_batch_size"], "augment": P["augment"],
}
display(design.round(5))

# %% [markdown]
# Every run of the sweep is recorded as one JSON file (configuration, per-epoch metrics,
# status, data identity, device, versions and git commit); `out_dir` empty means a fresh
# temporary folder, so the numbers below come from this execution.

# %%
live_dir = Path(P["out_dir"]) if P["out_dir"] else Path(tempfile.mkdtemp(prefix="ch08_"))
records = run_sweep(sweep_config, live_dir, progress=True)
live = load_records(live_dir)
live_summary = summarize(live)
identity = records[0]["data"]
label = source_label(P["profile"], identity)
scale_note = (f"laptop scale: {P['model']} width {P['width']}, n_train={P['n_train']}, "
              "batch sizes scaled to the same B/N" if P["n_train"] < 50000
              else f"{P['model']} width {P['width']}, all 50,000 training images")
display(live_summary.round(4))

# %% [markdown]
# ## Train and test error per epoch
#
# One curve per batch size; the colour goes from the smallest batch (dark) to the largest
# (light). Epoch 0 is the untrained network.

# %%
def error_curves(df, title, x="epoch"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    palette = sns.color_palette("viridis", n_colors=df["batch_size"].nunique())
    panels = [("train_error", "train error"), ("test_error", "test error")]
    for ax, (col, name) in zip(axes, panels, strict=True):
        sns.lineplot(data=df, x=x, y=col, hue="batch_size", palette=palette, marker="o",
                     markersize=4, ax=ax, legend=(col == "test_error"))
        ax.set_ylabel(name)
        ax.set_title(name)
        if x == "step":
            ax.set_xscale("symlog", linthresh=1)
    axes[1].legend(title="B", fontsize=8, loc="upper right", bbox_to_anchor=(1.32, 1.0))
    fig.suptitle(title, fontsize=10, y=1.05)
    plt.show()


error_curves(live, f"{scale_note}\n{label}")

# %%
f = sweep_findings(live_summary)
degrade = (f"from B = {f['test_degrades_from_b']} on, the final test error is more than "
           f"{f['delta']:.0%} above that of the smallest batch"
           if f["test_degrades_from_b"] is not None
           else f"no batch size ends more than {f['delta']:.0%} above the smallest batch's "
                "test error")
fails = (f"from B = {f['train_fails_from_b']} on, the final *training* error is also more "
         f"than {f['delta']:.0%} above the smallest batch's, i.e. these runs do not fit the "
         "training set"
         if f["train_fails_from_b"] is not None
         else "every run fits the training set about as well as the smallest batch")
degrade_sentence = degrade[0].upper() + degrade[1:]
display(Markdown(
    f"In this run, the smallest batch (B = {f['smallest_b']}) ends at "
    f"{f['train_error_smallest_b']:.1%} train and {f['test_error_smallest_b']:.1%} test "
    f"error after {f['epochs']} epochs; the largest (B = {f['largest_b']}) ends at "
    f"{f['train_error_largest_b']:.1%} train and {f['test_error_largest_b']:.1%} test error. "
    f"The lowest final test error belongs to B = {f['best_b']}. {degrade_sentence}; "
    f"{fails}. The largest batch's train error stops improving (by more than 1 point) "
    f"after epoch {f['largest_b_train_plateau_epoch']}, its test error after epoch "
    f"{f['largest_b_test_plateau_epoch']}. {f['n_diverged']} run(s) diverged."
))

# %% [markdown]
# What to look for: whether the small batches keep improving through the whole budget while
# the largest batches flatten early — the "plateau within a few epochs" of the essay. The
# plateau epochs computed above say where each happened in this run; at a fixed epoch
# budget the largest batches take only a handful of steps ({eq}`eq-ch8-steps`).
#
# ## The generalization gap against the batch size

# %%
def gap_figure(summary, title):
    long = summary.melt(id_vars=["batch_size"],
                        value_vars=["final_train_error", "final_test_error", "final_gap"],
                        var_name="quantity", value_name="value")
    long["quantity"] = long["quantity"].map({"final_train_error": "train error",
                                             "final_test_error": "test error",
                                             "final_gap": "gap = test - train"})
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="batch_size", y="value", hue="quantity", marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size B (log scale)")
    ax.set_ylabel("after the last epoch")
    ax.set_title(title, fontsize=10)
    plt.show()


gap_figure(live_summary, f"final errors vs B — {scale_note}\n{label}")

# %%
display(Markdown(
    f"The gap (test minus train error) at the end of the budget is "
    f"{f['gap_smallest_b']:.1%} at B = {f['smallest_b']} and largest, "
    f"{f['max_gap']:.1%}, at B = {f['max_gap_b']}."
    + (" Beyond that batch size the gap shrinks again, but not because those runs generalize "
       "better: their training error is high as well (they did not fit the training set)."
       if f["train_fails_from_b"] is not None and f["max_gap_b"] < f["largest_b"] else "")
))

# %% [markdown]
# ## Error against the number of steps
#
# The same curves with the number of optimizer steps on the horizontal axis (symmetric log
# scale; step 0 is the initial network).

# %%
error_curves(live, f"errors vs optimizer steps — {scale_note}\n{label}", x="step")

# %% [markdown]
# What to look for: on this axis each run ends at its own step count
# $E\lceil N/B \rceil$, so the large batches stop far to the left of the small ones. Where
# the curves of different batch sizes overlap, a step of a large batch buys about as much as
# a step of a small one and the large-batch deficit at a fixed epoch budget is a deficit of
# steps; where a large-batch curve lies above the others at the same step, each of its
# steps is worth less. Measured in steps, a fixed epoch budget is a much shorter run for a larger
# batch; comparisons at equal steps (rather than epochs) are the subject of
# {cite}`hoffer2017train,shallue2019measuring`.
#
# ## Recorded full-scale results
#
# The `full` profile (ResNet34 width 64, all 50,000 images, the nine batch sizes, on a GPU)
# is too expensive for a laptop. When its records have been committed under
# `data/results/ch08_full/`, they are shown here with their provenance.

# %%
recorded = load_records(P["recorded_dir"]) if Path(P["recorded_dir"]).exists() else None
if recorded is None or len(recorded) == 0:
    display(Markdown(
        f"**No recorded full-scale results were found** under `{P['recorded_dir']}`. "
        "This book therefore shows only the live run above; run "
        "`book/params/ch08_resnet_sweep/gpu_run.sh` on a GPU machine and commit its JSON "
        "records there to add them."
    ))
else:
    rec_summary = summarize(recorded)
    rec_prov = records_provenance(recorded)
    prov_line = "; ".join(
        f"{p['device']}, commit {p['git_commit'][:12]}, torch {p['torch_version']}, "
        f"{p['first_created_utc'][:10]}" for p in rec_prov)
    rec_label = (f"recorded (not re-run): {recorded['model'].iloc[0]} width "
                 f"{int(recorded['width'].iloc[0])}, n_train={int(recorded['n_train'].iloc[0])}"
                 f", data: {recorded['data_source'].iloc[0]}\n{prov_line}")
    display(rec_summary.round(4))
    error_curves(recorded, rec_label)
    gap_figure(rec_summary, rec_label)
    fr = sweep_findings(rec_summary)
    display(Markdown(
        f"Recorded at full scale ({len(rec_summary)} batch sizes, {fr['epochs']} epochs, "
        f"{prov_line}): B = {fr['smallest_b']} ends at {fr['train_error_smallest_b']:.1%} "
        f"train / {fr['test_error_smallest_b']:.1%} test error and B = {fr['largest_b']} at "
        f"{fr['train_error_largest_b']:.1%} / {fr['test_error_largest_b']:.1%}; the test "
        "error first exceeds the smallest batch's by more than "
        f"{fr['delta']:.0%} at B = {fr['test_degrades_from_b']} and the training error at "
        + (f"B = {fr['train_fails_from_b']}" if fr["train_fails_from_b"] is not None
           else "no batch size")
        + f". The largest final gap (test − train) is {fr['max_gap']:.1%}, at "
        f"B = {fr['max_gap_b']}. The essay placed the onset of a generalization gap at "
        "B ≈ 4096; "
        + ("here the large batches end with training and test error close together, i.e. "
           "they fail to fit the training set within the budget rather than generalize "
           "worse from a good fit."
           if fr["max_gap_b"] < 4096 else
           "here too the gap is largest at or beyond that batch size.")
    ))

# %% [markdown]
# ## What this chapter shows, and what it does not
#
# - At a fixed epoch budget and a fixed learning rate, the number of steps falls like
#   $1/B$ ({eq}`eq-ch8-steps`) and so does the reach of the run ({eq}`eq-ch8-reach`); the
#   largest batches of the sweep are runs of a few dozen steps, close to deterministic
#   ({eq}`eq-ch8-cov` with its finite-population factor).
# - Whether the failure of the largest batches is a *sharp-minimum* effect, a *saddle*
#   effect (chapter 7) or simply too few steps cannot be decided from these curves alone;
#   the error-vs-steps view suggests that a large part of it is the step budget.
#   Chapter 6 asks whether scaling the learning rate closes the gap, and chapter 9 whether
#   injected noise with the covariance of small-batch noise does.
# - The BatchNorm runs with micro-batching use ghost batches; a run without batch
#   statistics (`norm: group`) avoids that caveat at some cost in accuracy.

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
