# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 1. Mini-batch gradients and Lemma 1
#
# Stochastic gradient descent (SGD) replaces the gradient of the training loss by the
# average gradient of a random mini-batch. This chapter derives the first two moments of
# that estimate — it is unbiased, and its covariance is the per-example gradient
# covariance divided by the batch size (Lemma 1 of {cite}`chaudhari2018sgd`), times a
# finite-population correction when the batch is drawn without replacement
# {cite}`cochran1977sampling` — and then checks both formulas by Monte Carlo on a
# softmax-regression model trained briefly on a subset of CIFAR-10
# {cite}`krizhevsky2009learning`, using exact per-example gradients. Two points go beyond
# the essay: its form of the correction, $(1/B - 1/N)\,D$, is exact only for a differently
# normalised $D$; and when SGD reshuffles the data once per epoch, the noises of the
# batches of one epoch are not independent but negatively correlated, which the
# continuous-time picture of chapter 6 leaves out.
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
# indices, except in the last section, which follows SGD as it moves.

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
exact_n = 8
exact_batch_size = 3
epoch_batch_sizes = [20, 100, 250]
epoch_samples = 200
traj_seeds = 4
traj_epochs = 30
alpha = 0.05
rate_sims = 2000

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
# = D$) and $\xi = g_\mathcal{B} - \bar g$, the *mini-batch noise*.
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
# $$ (eq-ch1-offdiag)
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
# ## The essay's factor
#
# The essay, after {cite:t}`chaudhari2018sgd`, writes the covariance as
# $(\frac1B - \frac1N)\,D$ and attributes it to sampling with replacement. With replacement
# the exact factor is $\frac1B$ ({eq}`eq-ch1-with`), with no $-\frac1N$ term. Without
# replacement,
#
# $$
# \begin{aligned}
# \frac{N-B}{B(N-1)} &= \Big(\frac1B - \frac1N\Big)\frac{N}{N-1}, \\
# \operatorname{Cov}(g_\mathcal{B}) &= \Big(\frac1B - \frac1N\Big) D', \\
# D' &= \frac{N}{N-1} D = \frac{1}{N-1}\sum_i \eta_i\eta_i^\top :
# \end{aligned}
# $$ (eq-ch1-essay)
#
# the essay's form is exact for sampling without replacement when $D$ is the sample
# covariance with divisor $N - 1$; with the divisor $N$ of {eq}`eq-ch1-D` it is too small by
# the factor $(N-1)/N$, a relative $1/(N-1)$ at every batch size. That is negligible for
# $N$ in the tens of thousands, but it is a different formula, and for a small data set it
# is not negligible; the check below settles it by enumerating every batch.
#
# ## One epoch of reshuffling
#
# SGD as usually run does not draw each batch afresh: once per *epoch* (one pass over the
# data) it draws a random permutation of the $N$ examples and cuts it into
# $K = \lfloor N/B\rfloor$ consecutive batches. Each batch is then a uniform subset, so
# {eq}`eq-ch1-without` gives the covariance of each batch's noise $\xi_k$, but the batches
# of one epoch are disjoint and therefore dependent. For two distinct batches $k \ne j$ of
# one permutation, every pair of positions holds two distinct examples, uniform over the
# $N(N-1)$ ordered pairs, so by {eq}`eq-ch1-offdiag`
#
# $$
# \mathbb{E}[\xi_k\xi_j^\top] = \frac{1}{B^2}\cdot B^2\cdot\frac{1}{N(N-1)}
#   \sum_{a\ne b}\eta_a\eta_b^\top = -\frac{D}{N-1} .
# $$ (eq-ch1-cross)
#
# Along any direction $u$ the correlation of two batch noises of one epoch is therefore
# $-\frac{u^\top D u/(N-1)}{u^\top D u\,(N-B)/(B(N-1))} = -\frac{B}{N-B}$, the same for
# every direction and every pair, and the sum of the first $m$ noises of an epoch has
#
# $$
# \mathbb{E}\Big\|\sum_{k\le m}\xi_k\Big\|^2
#   = m\,\frac{\operatorname{tr}D}{B}\,\frac{N-B}{N-1} - m(m-1)\frac{\operatorname{tr}D}{N-1}
#   = m\,\frac{\operatorname{tr}D}{B}\,\frac{N - mB}{N-1},
# $$ (eq-ch1-partial)
#
# against $m\frac{\operatorname{tr}D}{B}\frac{N-B}{N-1}$ for $m$ independently drawn
# batches. When $B$ divides $N$ the noise summed over a whole epoch is exactly zero: every
# example enters once, and $\sum_i \eta_i = 0$. The stochastic differential equation behind
# chapter 6's noise temperature $\eta/B$ treats successive noises as independent
# increments, whose variances add; under reshuffling they partly cancel instead, by a
# factor that falls linearly from $1$ to $0$ over the epoch. Both statements are exact at a
# fixed $\theta$; whether the anti-correlation survives while SGD moves $\theta$ is an
# empirical question, tested at the end of the chapter.
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
# freeze $\theta$ and compute all $N$ per-example gradients exactly with `torch.func`. The
# table gives the training loss (mean cross-entropy, in nats) and error before and after.

# %%
problem = load_small_problem(P.dataset, P.n_train, image_size=P.image_size, seed=P.seed)
identity = problem.identity
scale = scale_label(P.profile, identity, with_size=True)
model = build_small_model("softmax", problem.in_shape, seed=P.seed)
trace = train_small(model, problem.x, problem.y, steps=P.train_steps, lr=P.train_lr,
                    batch_size=P.train_batch_size, checkpoints=[0], seed=P.seed)
G = per_example_grads(model, torch.nn.functional.cross_entropy, problem.x, problem.y)
N, num_p = G.shape
display(trace.history.rename(columns={"step": "SGD step", "train_loss": "train loss (nats)",
                                      "train_error": "train error"})
        .style.format({"train loss (nats)": "{:.4f}", "train error": "{:.1%}"})
        .hide(axis="index"))
gbar_sq = float(G.mean(0) @ G.mean(0))
display(Markdown(
    f"$N$ = {N:,} examples, $P$ = {num_params(model):,} parameters; at the frozen "
    f"$\\theta$, $\\operatorname{{tr}} D$ = {minibatch_trace(G, 1):.4g} and "
    f"$\\lVert \\bar g \\rVert^2$ = {gbar_sq:.3g}, so the noise of a single example is "
    f"{noise_scale(G):,.0f} times the squared full gradient."))

# %% [markdown]
# (sec-ch1-trace)=
# ## Check 1: unbiasedness and the trace of the covariance for every batch size
#
# For each $B$ and both schemes we draw mini-batches, record $\|g_\mathcal{B} - \bar g\|^2$
# (whose mean is $\operatorname{tr}\operatorname{Cov}(g_\mathcal{B})$) and the average
# $g_\mathcal{B}$. In the table, $z$ is (Monte Carlo − formula) / standard error, and the
# *bias ratio* is $S\|\overline{g_\mathcal{B}} - \bar g\|^2 / \operatorname{tr} C$ over
# the $S$ sampled batches, which has expectation $1$ exactly when $g_\mathcal{B}$ is
# unbiased (a biased estimate would make it grow like $S$). The thresholds for reading both
# as sampling noise are stated with the verdicts below.

# %%
tv = ch01.trace_vs_batch_study(G, P.trace_batch_sizes, num_samples=P.trace_samples,
                               seed=P.seed)
display(ch01.trace_table(tv).style.hide(axis="index"))
with_rows = tv[tv.scheme == "with replacement"]
slope = loglog_fit(with_rows.batch_size, with_rows.mc_trace)

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Left: the trace of the mini-batch covariance against the batch size B, Monte Carlo (points, ±2 standard errors) and Lemma 1 (lines), one colour per sampling scheme. Right: the Monte Carlo trace divided by tr D / B, against the finite-population correction (N − B)/(N − 1) (black). Softmax regression at the laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch01_lemma1.trace_vs_batch_study`.", "name": "fig-ch1-trace"}, "image": {"alt": "Two panels. Left: trace of the mini-batch gradient covariance falling along a straight line of slope minus one against batch size on log-log axes, Monte Carlo points on the Lemma 1 lines for sampling with and without replacement. Right: the same traces divided by tr D over B, flat at one with replacement and falling linearly to zero at B equal to N without replacement."}}
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.4))
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
# closed form were wrong, the error would stall at a floor. The table gives the mean
# relative error over the repeats.

# %%
err = ch01.lemma1_error_study(G, P.mc_batch_size, P.sample_counts,
                              num_repeats=P.num_repeats, seed=P.seed)
summary = ch01.error_summary(err)
display(ch01.error_table(summary).style.hide(axis="index"))
fits = {s: loglog_fit(d.samples, d.rel_error) for s, d in err.groupby("scheme")}

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Relative Frobenius error of the Monte Carlo covariance of the mini-batch gradient against Lemma 1, for S sampled batches at a fixed B: mean over repeats (lines) with the 5-95% band, one colour per sampling scheme; dashed: the prediction from the fourth moment of the per-example gradients (with replacement); dotted: slope −1/2. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch01_lemma1.lemma1_error_study`.", "name": "fig-ch1-convergence"}, "image": {"alt": "Log-log plot of the relative error of the Monte Carlo covariance against the number of sampled batches: both sampling schemes fall parallel to a slope of minus one half with no floor, and the dashed fourth-moment prediction runs through the with-replacement curve."}}
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
# (sec-ch1-essay)=
# ## Check 3: the essay's factor, by enumerating every batch
#
# A difference of $1/(N-1)$ is far below what Monte Carlo resolves at this $N$, so we
# compute the covariance of $g_\mathcal{B}$ without replacement *exactly*, by averaging over
# every batch of a few examples of the same data (their own mean and $D$), and compare it
# with {eq}`eq-ch1-without` and with the essay's form, for both normalisations of $D$
# ({eq}`eq-ch1-essay`).

# %%
essay = ch01.essay_factor_check(G, P.exact_n, P.exact_batch_size)
rel_se = (tv.mc_se / tv.mc_trace)[tv.formula > 0]
v_essay = ch01.essay_factor_verdict(essay, n_train=N, mc_rel_se=rel_se, scale=scale)
display(Markdown(v_essay.sentence))

# %% [markdown]
# (sec-ch1-epoch)=
# ## Check 4: the batches of one epoch
#
# At the frozen $\theta$ we run many epochs of reshuffling, each a fresh random permutation
# cut into batches of $B$, and measure the correlation of the noises of successive batches,
# $\mathbb{E}[\xi_k^\top\xi_{k+1}] / \mathbb{E}\|\xi_k\|^2$ (the exact variance of
# {eq}`eq-ch1-without` in the denominator), against $-B/(N-B)$, and the noise summed over
# the first $m$ batches against {eq}`eq-ch1-partial`. The table lists the correlations.

# %%
corr, cumulative = ch01.epoch_noise_study(G, P.epoch_batch_sizes, P.epoch_samples,
                                          seed=P.seed)
display(ch01.epoch_table(corr).style.hide(axis="index"))
v_epoch = ch01.epoch_verdict(corr, cumulative, z_max=P.z_max, scale=scale)

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Mini-batch noise within one epoch of reshuffling, at a fixed θ. Left: correlation of the noises of successive batches against the batch size B (points, ±2 standard errors, Monte Carlo over reshuffled epochs) and the closed form −B/(N − B) (line). Right: the squared norm of the noise summed over the first m batches, divided by what m independently drawn batches give, against the fraction of the epoch mB/N, one colour per B (points), the closed form (N − mB)/(N − B) (lines) and independent batches (grey, 1). Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch01_lemma1.epoch_noise_study`.", "name": "fig-ch1-epoch"}, "image": {"alt": "Two panels. Left: the correlation of successive batch noises is negative and grows in size with the batch size, Monte Carlo points on the curve minus B over N minus B. Right: the summed noise of the first batches of an epoch, relative to independent batches, falls linearly from one to zero over the epoch for every batch size, while independent batches would stay at one."}}
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.3))
ax = axes[0]
b_grid = np.geomspace(corr.batch_size.min() / 1.5, corr.batch_size.max() * 1.5, 100)
ax.plot(b_grid, -b_grid / (N - b_grid), "k-", lw=1, label=r"$-B/(N-B)$")
ax.errorbar(corr.batch_size, corr.mc, yerr=2 * corr.se, fmt="o", ms=4, capsize=2,
            color=SCHEME_COLOURS["without replacement"], label="Monte Carlo")
ax.set(xscale="log", xlabel="batch size B", ylabel="correlation of successive noises",
       title="successive batches")
ax.legend(loc="lower left", frameon=False)
ax = axes[1]
epoch_colours = sns.color_palette("colorblind", len(P.epoch_batch_sizes))
ax.axhline(1.0, color="gray", lw=1, label="independent batches")
for c, (b, d) in zip(epoch_colours, cumulative.groupby("batch_size"), strict=True):
    ax.plot(d.fraction, d.mc / d.independent, "o", ms=3, color=c, label=f"B = {b}")
    ax.plot(d.fraction, d.predicted / d.independent, "-", lw=1, color=c)
ax.set(xlabel="fraction of the epoch mB/N", ylabel="summed noise / independent",
       ylim=(-0.05, 1.1), title="noise summed over the epoch")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
fig.suptitle(source_label(P.profile, identity))
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to see.** Left: {eq}`eq-ch1-cross` puts every point on the curve; the correlation
# is small for $B \ll N$ and strong when a batch is a sizeable part of the data. Right:
# independent batches would add their variances (grey line at $1$); reshuffled batches
# cancel, and by the end of an epoch the summed noise is gone whenever $B$ divides $N$.
# The computed reading:

# %%
display(Markdown(v_epoch.sentence))

# %% [markdown]
# ### Along SGD runs
#
# At a fixed $\theta$ the anti-correlation is a theorem. SGD, however, evaluates each
# batch at a new $\theta$: the per-example gradients change between steps, and nothing
# forces the noises of different steps to cancel. We therefore train the same model from
# scratch several times (one run per seed, each with its own initialisation and batch
# order) with the training settings above and epoch-wise reshuffling, record at every step
# $\xi_k = g_{\mathcal{B}_k}(\theta_k) - \bar g(\theta_k)$, and measure per run the
# correlation of successive noises inside an epoch (and, as a control, across the boundary
# between two epochs, where the permutations are independent). The claim is decided
# across runs, with the error rates of its rule measured by simulation: how often the rule
# says "supported" when the correlation is only half the fixed-$\theta$ value or zero (its
# *false-positive rate*), and how often when it equals that value (its *power*). The table
# lists the runs.

# %%
traj = ch01.trajectory_noise_study(problem, seeds=P.traj_seeds, epochs=P.traj_epochs,
                                   lr=P.train_lr, batch_size=P.train_batch_size)
display(ch01.trajectory_table(traj).style.hide(axis="index"))
traj_rates = ch01.reshuffling_rates(traj, batch_size=P.train_batch_size, n_train=N,
                                    alpha=P.alpha, n_sim=P.rate_sims, seed=P.seed)
v_traj = ch01.reshuffling_verdict(traj, batch_size=P.train_batch_size, n_train=N,
                                  alpha=P.alpha, scale=scale, rates=traj_rates)
display(Markdown(v_traj.sentence))

# %% [markdown]
# (sec-ch1-verdicts)=
# ## What the numbers say
#
# The claims this chapter tests, each with the verdict computed from the numbers above
# (functions in {py:mod}`sgdnoise.chapters.ch01_lemma1`). The first five are *derivation
# checks*: the exact results derived above, checked against Monte Carlo or enumeration, so
# that the code is seen to match the algebra. The last is a *claim about SGD* that could
# have come out either way; it carries the false-positive rate and power of its rule. The
# next chapter asks what $D$ itself looks like: how it relates to the Fisher information
# and the Hessian.

# %%
show_verdicts("ch01_lemma1", [v_bias, v_trace, v_conv, v_essay, v_epoch, v_traj])

# %%
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
