# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 1. Mini-batch gradients and Lemma 1
#
# SGD replaces the gradient of the training loss by the average gradient of a random
# mini-batch. This chapter derives the first two moments of that estimate — it is unbiased,
# and its covariance is the per-example gradient covariance divided by the batch size
# (Lemma 1 of {cite}`chaudhari2018sgd`), times a finite-population correction when the
# batch is drawn without replacement {cite}`cochran1977sampling` — and then checks both
# formulas by Monte Carlo on a softmax-regression model trained briefly on a subset of
# CIFAR-10 {cite}`krizhevsky2009learning`, using exact per-example gradients.
#
# ## Setting
#
# There are $N$ training examples, parameters $\theta \in \mathbb{R}^P$, per-example losses
# $\ell_i(\theta)$ and the training loss $L(\theta) = \frac1N\sum_i \ell_i(\theta)$. Write
# $g_i = \nabla \ell_i(\theta)$ for the per-example gradients, $\bar g = \frac1N\sum_i g_i =
# \nabla L(\theta)$ for the full gradient and
#
# $$
# D(\theta) = \frac1N \sum_{i=1}^N (g_i - \bar g)(g_i - \bar g)^\top
#           = \frac1N \sum_{i=1}^N g_i g_i^\top - \bar g \bar g^\top
# $$ (eq-ch1-D)
#
# for their covariance over the data set (the second form follows by expanding the product
# and using $\frac1N\sum_i g_i = \bar g$). A mini-batch is a list of $B$ indices
# $i_1, \dots, i_B$ and its gradient is $g_\mathcal{B} = \frac1B\sum_{j=1}^B g_{i_j}$.
# Everything below holds at a fixed $\theta$: the randomness is only in the choice of
# indices.

# %% tags=["parameters"]
profile = "default"
dataset = "cifar10"
n_train = 1000
image_size = 4
seed = 0
train_steps = 100
train_lr = 0.1
train_batch_size = 100
mc_batch_size = 32
sample_counts = [32, 64, 128, 256, 512, 1024, 2048]
num_repeats = 8
trace_batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
trace_samples = 400

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from IPython.display import Markdown, display

from sgdnoise import studies
from sgdnoise.covariance import minibatch_trace, noise_scale
from sgdnoise.grads import num_params, per_example_grads
from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown

SPEC = {
    "profile": Param("str", choices=("smoke", "default", "full")),
    "dataset": Param("str", choices=("cifar10", "synthetic")),
    "n_train": Param("int", low=20, high=50000),
    "image_size": Param("int", choices=(1, 2, 4, 8, 16, 32)),
    "seed": Param("int", low=0),
    "train_steps": Param("int", low=1),
    "train_lr": Param("float", low=1e-6, high=10.0),
    "train_batch_size": Param("int", low=1),
    "mc_batch_size": Param("int", low=1),
    "sample_counts": Param("list[int]", low=2, min_len=3),
    "num_repeats": Param("int", low=2),
    "trace_batch_sizes": Param("list[int]", low=1, min_len=3),
    "trace_samples": Param("int", low=10),
}
P = validate(
    dict(
        profile=profile, dataset=dataset, n_train=n_train, image_size=image_size, seed=seed,
        train_steps=train_steps, train_lr=train_lr, train_batch_size=train_batch_size,
        mc_batch_size=mc_batch_size, sample_counts=sample_counts, num_repeats=num_repeats,
        trace_batch_sizes=trace_batch_sizes, trace_samples=trace_samples,
    ),
    SPEC,
)
for name in ("train_batch_size", "mc_batch_size"):
    if P[name] > P["n_train"]:
        raise ValueError(f"parameter {name!r} must be <= n_train={P['n_train']}, got {P[name]}")
if max(P["trace_batch_sizes"]) > P["n_train"]:
    raise ValueError(f"parameter 'trace_batch_sizes' must be <= n_train={P['n_train']}, "
                     f"got {P['trace_batch_sizes']}")
clock = Stopwatch()
torch.set_num_threads(2)
use_style()

# %% [markdown]
# ## Unbiasedness
#
# **With replacement.** Each index $i_j$ is uniform on $\{1,\dots,N\}$, so
# $\mathbb{E}[g_{i_j}] = \frac1N\sum_i g_i = \bar g$ and, by linearity,
# $\mathbb{E}[g_\mathcal{B}] = \frac1B\sum_j \mathbb{E}[g_{i_j}] = \bar g$.
#
# **Without replacement.** The batch is a uniformly random subset of size $B$. Let
# $I_i \in \{0, 1\}$ indicate whether example $i$ is in it, so
# $g_\mathcal{B} = \frac1B\sum_{i=1}^N I_i g_i$. By symmetry every example is equally likely
# to be chosen and $\sum_i I_i = B$, hence $\mathbb{E}[I_i] = B/N$ and again
# $\mathbb{E}[g_\mathcal{B}] = \frac1B \sum_i \frac BN g_i = \bar g$.
#
# ## Lemma 1: the covariance
#
# Write $\eta_i = g_i - \bar g$ (so $\sum_i \eta_i = 0$ and $\frac1N\sum_i \eta_i\eta_i^\top
# = D$) and $\xi = g_\mathcal{B} - \bar g$, the mini-batch noise.
#
# **With replacement.** $\xi = \frac1B\sum_j \eta_{i_j}$ is an average of $B$ independent
# draws, each with mean $0$ and covariance $\frac1N\sum_i\eta_i\eta_i^\top = D$. Covariances
# of independent terms add, so
#
# $$
# \operatorname{Cov}(g_\mathcal{B}) = \frac{1}{B^2}\cdot B\,D = \frac{D}{B}.
# $$ (eq-ch1-with)
#
# **Without replacement.** Now $\xi = \frac1B\sum_i I_i \eta_i$ and the indicators are
# dependent. Their moments: $\operatorname{Var}(I_i) = \frac BN(1 - \frac BN)$ and, for
# $i \neq j$, $\mathbb{E}[I_iI_j] = \frac{B(B-1)}{N(N-1)}$ (both in the batch), so
# $\operatorname{Cov}(I_i, I_j) = \frac{B(B-1)}{N(N-1)} - \frac{B^2}{N^2}
# = -\frac{B(N-B)}{N^2(N-1)}$. Then
#
# $$
# B^2 \operatorname{Cov}(\xi) = \sum_i \operatorname{Var}(I_i)\,\eta_i\eta_i^\top
#   + \sum_{i\neq j}\operatorname{Cov}(I_i, I_j)\,\eta_i\eta_j^\top .
# $$
#
# Because $\sum_i\eta_i = 0$, $\sum_{i\ne j}\eta_i\eta_j^\top = (\sum_i\eta_i)(\sum_j\eta_j)^\top
# - \sum_i \eta_i\eta_i^\top = -ND$. Substituting,
# $B^2\operatorname{Cov}(\xi) = \frac{B(N-B)}{N}D + \frac{B(N-B)}{N(N-1)}D
# = \frac{B(N-B)}{N-1} D$, that is
#
# $$
# \operatorname{Cov}(g_\mathcal{B}) = \frac{D}{B}\cdot\frac{N-B}{N-1}.
# $$ (eq-ch1-without)
#
# The factor $\frac{N-B}{N-1}$ is the finite-population correction: it is $1$ at $B = 1$
# (one draw is one draw, with or without replacement), close to $1$ while $B \ll N$, and
# exactly $0$ at $B = N$, where the "mini-batch" is the whole data set and $g_\mathcal{B} =
# \bar g$. Taking traces, $\operatorname{tr}\operatorname{Cov}(g_\mathcal{B}) =
# \operatorname{tr}(D)/B$ with replacement: on log-log axes a line of slope $-1$ in $B$.
#
# ## How fast should a Monte Carlo check converge?
#
# We will estimate $C = \operatorname{Cov}(g_\mathcal{B})$ from $S$ sampled mini-batches
# $\xi_1, \dots, \xi_S$ and compare with {eq}`eq-ch1-with` / {eq}`eq-ch1-without` in relative
# Frobenius norm. For the known-mean estimator $\hat C = \frac1S\sum_s \xi_s\xi_s^\top$ the
# terms are independent with mean $C$, so
# $\mathbb{E}\|\hat C - C\|_F^2 = \frac1S\,\mathbb{E}\|\xi\xi^\top - C\|_F^2
# = \frac1S(\mathbb{E}\|\xi\|^4 - \|C\|_F^2)$: the error shrinks like $S^{-1/2}$. With
# replacement the fourth moment is available in closed form: expanding
# $\|\sum_j \eta_{i_j}\|^4$ over independent draws, only terms in which indices pair up
# survive, giving
#
# $$
# \mathbb{E}\|\xi\|^4 = \frac{1}{B^3}\Big(\tfrac1N\textstyle\sum_i\|\eta_i\|^4
#  + (B-1)\big[(\operatorname{tr} D)^2 + 2\|D\|_F^2\big]\Big),
# $$ (eq-ch1-fourth)
#
# so the expected relative error is predicted *before* sampling anything
# (`sgdnoise.studies.predicted_covariance_error`; the sample-mean estimator we actually use
# differs only at order $1/S$).

# %% [markdown]
# ## The model and its per-example gradients
#
# Softmax regression on images average-pooled to a few pixels keeps $P$ small enough that
# every $P\times P$ matrix is formed densely in float64. We train it briefly with SGD, then
# freeze $\theta$ and compute all $N$ per-example gradients exactly with `torch.func`.

# %%
problem = studies.load_small_problem(P["dataset"], P["n_train"], image_size=P["image_size"],
                                     seed=P["seed"])
identity = problem.identity
model = studies.build_small_model("softmax", problem.in_shape, seed=P["seed"])
trace = studies.train_small(model, problem.x, problem.y, steps=P["train_steps"],
                            lr=P["train_lr"], batch_size=P["train_batch_size"],
                            checkpoints=[0], seed=P["seed"])
G = per_example_grads(model, torch.nn.functional.cross_entropy, problem.x, problem.y)
N, num_p = G.shape
display(trace.history)
print(f"N = {N} examples, P = {num_params(model)} parameters, tr D = "
      f"{minibatch_trace(G, 1):.4g}, |g_bar|^2 = {float(G.mean(0) @ G.mean(0)):.4g}, "
      f"noise scale tr D/|g_bar|^2 = {noise_scale(G):.3g}")

# %% [markdown]
# ## Check 1: unbiasedness and the trace of the covariance for every batch size
#
# For each $B$ and both schemes we draw mini-batches, record $\|g_\mathcal{B} - \bar g\|^2$
# (whose mean is $\operatorname{tr}\operatorname{Cov}(g_\mathcal{B})$) and the average
# $g_\mathcal{B}$. The column `z` is (Monte Carlo − formula)/standard error; `bias_ratio`
# is $S\|\overline{g_\mathcal{B}} - \bar g\|^2 / \operatorname{tr} C$, which has expectation
# $1$ exactly when $g_\mathcal{B}$ is unbiased (a biased estimate would make it grow like $S$).

# %%
tv = studies.trace_vs_batch_study(G, P["trace_batch_sizes"], num_samples=P["trace_samples"],
                                  seed=P["seed"])
display(tv.round(5))
with_rows = tv[tv.scheme == "with replacement"]
slope = studies.loglog_fit(with_rows.batch_size, with_rows.mc_trace)
max_z = float(tv.z.abs().max())
mean_bias = float(tv.bias_ratio.mean())
at_N = tv[(tv.scheme == "without replacement") & (tv.batch_size == N)]

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
for scheme, marker in (("with replacement", "o"), ("without replacement", "s")):
    d = tv[(tv.scheme == scheme) & (tv.formula > 0)]
    ax.errorbar(d.batch_size, d.mc_trace, yerr=2 * d.mc_se, fmt=marker, ms=5, capsize=2,
                label=f"Monte Carlo, {scheme} (±2 se)")
    f = tv[(tv.scheme == scheme) & (tv.formula > 0)]
    ax.plot(f.batch_size, f.formula, "-", lw=1, label=f"Lemma 1, {scheme}")
ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=r"tr Cov$(g_B)$",
       title="trace of the mini-batch covariance")
ax.legend(fontsize=7)
ax = axes[1]
wo = tv[tv.scheme == "without replacement"]
grid = np.linspace(1, N, 200)
ax.plot(grid, (N - grid) / (N - 1), "k-", lw=1, label=r"$(N-B)/(N-1)$")
ax.plot(wo.batch_size, wo.ratio_to_iid, "s", label="Monte Carlo, without replacement")
ax.plot(with_rows.batch_size, with_rows.ratio_to_iid, "o", label="Monte Carlo, with replacement")
ax.set(xlabel="batch size B", ylabel=r"tr Cov$(g_B)$ / (tr D / B)",
       title="finite-population correction")
ax.legend(fontsize=8)
fig.suptitle(f"Softmax regression, P={num_p} · {source_label(profile, identity)}", fontsize=9)
plt.show()

# %% [markdown]
# **What to see.** Left: Monte Carlo traces (points) sit on the Lemma 1 lines, and with
# replacement they fall on a line of slope $-1$. Right: dividing by $\operatorname{tr}D/B$
# leaves $1$ for sampling with replacement and the correction $\frac{N-B}{N-1}$ without,
# which falls linearly to exactly $0$ at $B = N$ (that point cannot appear on the log-log
# panel).

# %%
zero_at_N = float(at_N.mc_trace.iloc[0]) if len(at_N) else float("nan")
display(Markdown(
    f"Fitted log-log slope of the Monte Carlo trace (with replacement): "
    f"**{slope['slope']:.3f} ± {slope['slope_se']:.3f}** (Lemma 1: −1). Largest |z| over "
    f"{len(tv)} batch sizes and schemes: **{max_z:.2f}** "
    f"({'consistent with sampling noise' if max_z < 4 else 'larger than sampling noise explains'}"
    f"). Mean bias ratio: **{mean_bias:.2f}** (expectation 1 for an unbiased estimate). "
    + (f"At B = N without replacement the Monte Carlo trace is {zero_at_N:.1e}: the noise "
       f"vanishes, as the correction predicts." if len(at_N) else "")
))

# %% [markdown]
# ## Check 2: the full covariance matrix, and how fast Monte Carlo converges to it
#
# At a fixed batch size we estimate the whole $P\times P$ covariance from $S$ sampled
# batches (nested sample sizes, several independent repeats) and measure
# $\|\hat C_S - C\|_F / \|C\|_F$ against {eq}`eq-ch1-with` and {eq}`eq-ch1-without`. If the
# closed forms are right, the error is pure sampling error: it should shrink like
# $S^{-1/2}$ and, with replacement, match the prediction from {eq}`eq-ch1-fourth`. If a
# closed form were wrong, the error would stall at a floor.

# %%
err = studies.lemma1_error_study(G, P["mc_batch_size"], P["sample_counts"],
                                 num_repeats=P["num_repeats"], seed=P["seed"])
summary = (err.groupby(["scheme", "samples"])
           .agg(mean_rel_error=("rel_error", "mean"), predicted=("predicted", "first"))
           .reset_index())
display(summary.round(4))
fits = {s: studies.loglog_fit(d.samples, d.rel_error) for s, d in err.groupby("scheme")}

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
sns.lineplot(data=err, x="samples", y="rel_error", hue="scheme", style="scheme",
             markers=True, dashes=False, errorbar=("pi", 90), ax=ax)
w = summary[summary.scheme == "with replacement"]
ax.plot(w.samples, w.predicted, "k--", lw=1, label="predicted from the fourth moment, with repl.")
s0 = float(summary.samples.min())
e0 = float(summary.mean_rel_error.max())
ref = np.array(sorted(summary.samples.unique()), dtype=float)
ax.plot(ref, 1.3 * e0 * (ref / s0) ** -0.5, ":", color="gray", label="slope −1/2")
ax.set(xscale="log", yscale="log", xlabel="Monte Carlo samples S",
       ylabel=r"$\|\hat C_S - C\|_F / \|C\|_F$",
       title=f"B = {P['mc_batch_size']}, band: 5-95% over {P['num_repeats']} repeats\n"
             f"{source_label(profile, identity)}")
ax.set_xticks(ref, [str(int(v)) for v in ref])
ax.minorticks_off()
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to see.** Both schemes' errors run parallel to the slope $-1/2$ guide with no
# floor, and the dashed prediction from the fourth moment of the per-example gradients
# passes through the with-replacement curve. The shaded band (5–95% of repeats) narrows in
# the same proportion.

# %%
w_fit, wo_fit = fits["with replacement"], fits["without replacement"]
ratio = (w.mean_rel_error / w.predicted).to_numpy()
display(Markdown(
    f"Fitted slopes of log error vs log S: **{w_fit['slope']:.3f} ± {w_fit['slope_se']:.3f}** "
    f"(with replacement), **{wo_fit['slope']:.3f} ± {wo_fit['slope_se']:.3f}** (without); "
    f"theory −0.5. Mean error / predicted error (with replacement) ranges over "
    f"[{ratio.min():.2f}, {ratio.max():.2f}]"
    + (" — the closed forms agree with Monte Carlo to within sampling error."
       if abs(w_fit["slope"] + 0.5) < 0.1 and abs(wo_fit["slope"] + 0.5) < 0.1
       and 0.7 < ratio.min() and ratio.max() < 1.3
       else " — the errors do not follow pure sampling noise; see the table above.")
))

# %% [markdown]
# ## Summary
#
# - $g_\mathcal{B}$ is an unbiased estimate of $\bar g$ under both sampling schemes.
# - Its covariance is $D/B$ with replacement and $\frac DB\frac{N-B}{N-1}$ without; the
#   trace falls like $1/B$, and the correction removes all noise at $B = N$.
# - Checked on real per-example gradients: Monte Carlo estimates converge to the closed forms
#   at the $S^{-1/2}$ rate that pure sampling error predicts, with the predicted constant.
#
# The next chapter asks what $D$ itself looks like: how it relates to the Fisher information
# and the Hessian.

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
