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

# %% tags=["parameters", "remove-cell"]
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
z_max = 4.0
bias_ratio_max = 2.0
slope_tolerance = 0.1
error_ratio_tolerance = 0.3

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from IPython.display import Markdown, display

from sgdnoise.chapters import ch01_lemma1 as ch01
from sgdnoise.chapters.small_problems import build_small_model, load_small_problem, train_small
from sgdnoise.covariance import minibatch_trace, noise_scale
from sgdnoise.grads import num_params, per_example_grads
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, scale_label, show_verdicts
from sgdnoise.stats import loglog_fit

P = ch01.Params.from_namespace(globals())
clock = Stopwatch()
torch.set_num_threads(2)
use_style()
SCHEME_COLOURS = dict(zip(("with replacement", "without replacement"),
                          sns.color_palette("colorblind", 2), strict=True))

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
# \begin{aligned}
# B^2 \operatorname{Cov}(\xi) &= \sum_i \operatorname{Var}(I_i)\,\eta_i\eta_i^\top \\
#   &\quad {}+ \sum_{i\neq j}\operatorname{Cov}(I_i, I_j)\,\eta_i\eta_j^\top .
# \end{aligned}
# $$
#
# Because $\sum_i\eta_i = 0$, the off-diagonal sum collapses:
#
# $$
# \sum_{i\ne j}\eta_i\eta_j^\top
#   = \Big(\sum_i\eta_i\Big)\Big(\sum_j\eta_j\Big)^\top - \sum_i \eta_i\eta_i^\top = -ND .
# $$
#
# Substituting,
#
# $$
# B^2\operatorname{Cov}(\xi) = \frac{B(N-B)}{N}D + \frac{B(N-B)}{N(N-1)}D
#   = \frac{B(N-B)}{N-1} D,
# $$
#
# that is
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
# ({py:func}`sgdnoise.chapters.ch01_lemma1.predicted_covariance_error`; the sample-mean
# estimator we actually use differs only at order $1/S$).

# %% [markdown]
# ## The model and its per-example gradients
#
# Softmax regression on images average-pooled to a few pixels keeps $P$ small enough that
# every $P\times P$ matrix is formed densely in float64. We train it briefly with SGD, then
# freeze $\theta$ and compute all $N$ per-example gradients exactly with `torch.func`.

# %%
problem = load_small_problem(P.dataset, P.n_train, image_size=P.image_size, seed=P.seed)
identity = problem.identity
scale = scale_label(P.profile, identity, with_size=True)
model = build_small_model("softmax", problem.in_shape, seed=P.seed)
trace = train_small(model, problem.x, problem.y, steps=P.train_steps, lr=P.train_lr,
                    batch_size=P.train_batch_size, checkpoints=[0], seed=P.seed)
G = per_example_grads(model, torch.nn.functional.cross_entropy, problem.x, problem.y)
N, num_p = G.shape
display(trace.history.style.format({"train_loss": "{:.6f}", "train_error": "{:.3f}"})
        .hide(axis="index"))
print(f"N = {N} examples, P = {num_params(model)} parameters, tr D = "
      f"{minibatch_trace(G, 1):.4g}, |g_bar|^2 = {float(G.mean(0) @ G.mean(0)):.4g}, "
      f"noise scale tr D/|g_bar|^2 = {noise_scale(G):.3g}")

# %% [markdown]
# (sec-ch1-trace)=
# ## Check 1: unbiasedness and the trace of the covariance for every batch size
#
# For each $B$ and both schemes we draw mini-batches, record $\|g_\mathcal{B} - \bar g\|^2$
# (whose mean is $\operatorname{tr}\operatorname{Cov}(g_\mathcal{B})$) and the average
# $g_\mathcal{B}$. The column $z$ is (Monte Carlo − formula)/standard error; the bias ratio
# is $S\|\overline{g_\mathcal{B}} - \bar g\|^2 / \operatorname{tr} C$, which has expectation
# $1$ exactly when $g_\mathcal{B}$ is unbiased (a biased estimate would make it grow like $S$).
# The checks read $|z| <$ `z_max` as sampling noise and a mean bias ratio $\le$
# `bias_ratio_max` as unbiased; both thresholds are in the provenance table.

# %%
tv = ch01.trace_vs_batch_study(G, P.trace_batch_sizes, num_samples=P.trace_samples,
                               seed=P.seed)
display(tv.rename(columns={"batch_size": "B", "mc_trace": "MC trace", "mc_se": "MC se",
                           "formula": "Lemma 1 trace", "fpc": "(N−B)/(N−1)",
                           "bias_ratio": "bias ratio", "ratio_to_iid": "MC / (tr D/B)"})
        .style.format(precision=5).hide(axis="index"))
with_rows = tv[tv.scheme == "with replacement"]
slope = loglog_fit(with_rows.batch_size, with_rows.mc_trace)

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Left: the trace of the mini-batch covariance against the batch size B, Monte Carlo (points, ±2 standard errors) and Lemma 1 (lines), one colour per sampling scheme. Right: the Monte Carlo trace divided by tr D / B, against the finite-population correction (N − B)/(N − 1) (black). Softmax regression at the laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch01_lemma1.trace_vs_batch_study`.", "name": "fig-ch1-trace"}}
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
ax = axes[0]
for scheme, marker in (("with replacement", "o"), ("without replacement", "s")):
    d = tv[(tv.scheme == scheme) & (tv.formula > 0)]
    c = SCHEME_COLOURS[scheme]
    ax.errorbar(d.batch_size, d.mc_trace, yerr=2 * d.mc_se, fmt=marker, ms=4, capsize=2,
                color=c, label=f"{scheme}: Monte Carlo")
    ax.plot(d.batch_size, d.formula, "-", lw=1, color=c, label=f"{scheme}: Lemma 1")
ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=r"tr Cov$(g_B)$",
       title="trace of the covariance")
ax = axes[1]
wo = tv[tv.scheme == "without replacement"]
grid = np.linspace(1, N, 200)
ax.plot(grid, (N - grid) / (N - 1), "k-", lw=1, label=r"$(N-B)/(N-1)$")
for scheme, marker in (("with replacement", "o"), ("without replacement", "s")):
    d = tv[tv.scheme == scheme]
    ax.plot(d.batch_size, d.ratio_to_iid, marker, ms=4, color=SCHEME_COLOURS[scheme])
ax.set(xlabel="batch size B", ylabel=r"tr Cov$(g_B)$ / (tr D / B)",
       title="finite-population correction")
handles, labels = axes[0].get_legend_handles_labels()
handles += axes[1].get_legend_handles_labels()[0]
labels += axes[1].get_legend_handles_labels()[1]
fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
           frameon=False)
fig.suptitle(f"softmax regression, P = {num_p}\n{source_label(P.profile, identity)}")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to see.** Left: Lemma 1 puts the Monte Carlo traces (points) on its lines, and
# with replacement on a line of slope $-1$. Right: dividing by $\operatorname{tr}D/B$ should
# leave $1$ for sampling with replacement and the correction $\frac{N-B}{N-1}$ without,
# which falls linearly to exactly $0$ at $B = N$ (that point cannot appear on the log-log
# panel). Whether the numbers bear this out is computed below.

# %%
v_trace = ch01.trace_verdict(tv, slope, z_max=P.z_max, slope_tolerance=P.slope_tolerance,
                             scale=scale)
v_bias = ch01.unbiasedness_verdict(tv, bias_ratio_max=P.bias_ratio_max, scale=scale)
display(Markdown(v_trace.sentence + " " + v_bias.sentence))

# %% [markdown]
# (sec-ch1-matrix)=
# ## Check 2: the full covariance matrix, and how fast Monte Carlo converges to it
#
# At a fixed batch size we estimate the whole $P\times P$ covariance from $S$ sampled
# batches (nested sample sizes, several independent repeats) and measure
# $\|\hat C_S - C\|_F / \|C\|_F$ against {eq}`eq-ch1-with` and {eq}`eq-ch1-without`. If the
# closed forms are right, the error is pure sampling error: it should shrink like
# $S^{-1/2}$ and, with replacement, match the prediction from {eq}`eq-ch1-fourth`. If a
# closed form were wrong, the error would stall at a floor. The check allows the fitted
# slopes to differ from $-1/2$ by `slope_tolerance` and the measured/predicted error ratio
# to differ from $1$ by `error_ratio_tolerance`.

# %%
err = ch01.lemma1_error_study(G, P.mc_batch_size, P.sample_counts,
                              num_repeats=P.num_repeats, seed=P.seed)
summary = ch01.error_summary(err)
display(summary.drop(columns="ratio")
        .rename(columns={"samples": "S", "mean_rel_error": "mean relative error",
                         "predicted": "predicted (with replacement)"})
        .style.format(precision=4, na_rep="–").hide(axis="index"))
fits = {s: loglog_fit(d.samples, d.rel_error) for s, d in err.groupby("scheme")}

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Relative Frobenius error of the Monte Carlo covariance of the mini-batch gradient against Lemma 1, for S sampled batches at a fixed B: mean over repeats (lines) with the 5-95% band, one colour per sampling scheme; dashed: the prediction from the fourth moment of the per-example gradients (with replacement); dotted: slope −1/2. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch01_lemma1.lemma1_error_study`.", "name": "fig-ch1-convergence"}}
fig, ax = plt.subplots(figsize=(4.1, 3.5))
sns.lineplot(data=err, x="samples", y="rel_error", hue="scheme", style="scheme",
             markers=True, dashes=False, errorbar=("pi", 90), palette=SCHEME_COLOURS, ax=ax)
w = summary[summary.scheme == "with replacement"]
ax.plot(w.samples, w.predicted, "--", color=SCHEME_COLOURS["with replacement"], lw=1,
        label="with replacement: predicted")
s0 = float(summary.samples.min())
e0 = float(summary.mean_rel_error.max())
ref = np.array(sorted(summary.samples.unique()), dtype=float)
ax.plot(ref, 1.3 * e0 * (ref / s0) ** -0.5, ":", color="gray", label="slope −1/2")
ax.set(xscale="log", yscale="log", xlabel="Monte Carlo samples S",
       ylabel=r"$\|\hat C_S - C\|_F / \|C\|_F$",
       title=f"B = {P.mc_batch_size}, band: 5-95% over {P.num_repeats} repeats\n"
             f"{source_label(P.profile, identity)}")
ax.set_xticks(ref, [str(int(v)) for v in ref])
ax.minorticks_off()
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
plt.show()

# %% [markdown]
# **What to see.** If the closed forms are right, both schemes' errors run parallel to the
# slope $-1/2$ guide with no floor, the dashed prediction from the fourth moment of the
# per-example gradients passes through the with-replacement curve, and the shaded band
# (5–95% of repeats) narrows in the same proportion. The computed reading:

# %%
v_conv = ch01.convergence_verdict(fits, w.ratio, slope_tolerance=P.slope_tolerance,
                                  error_ratio_tolerance=P.error_ratio_tolerance, scale=scale)
display(Markdown(v_conv.sentence))

# %% [markdown]
# (sec-ch1-verdicts)=
# ## What the numbers say
#
# The claims of the essay this chapter tests, each with the verdict computed from the
# numbers above (functions in {py:mod}`sgdnoise.chapters.ch01_lemma1`; thresholds are the
# parameters `z_max`, `bias_ratio_max`, `slope_tolerance` and `error_ratio_tolerance`
# listed in the provenance table). The derivations of unbiasedness and of Lemma 1 above are
# exact; the verdicts say whether real per-example gradients agree with them at this scale.
# The next chapter asks what $D$ itself looks like: how it relates to the Fisher
# information and the Hessian.

# %%
show_verdicts("ch01_lemma1", [v_bias, v_trace, v_conv])

# %%
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
