# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 2. From covariance to Fisher to Hessian
#
# The source essay argues that the covariance of mini-batch noise is "asymptotically" the
# Hessian: $D$ is close to the empirical Fisher, which approximates the Fisher, which is
# the Hessian of a KL divergence, which near a minimum is the Hessian of the loss. Each link
# holds under its own conditions. This chapter states each link precisely, proves it, and
# measures on softmax regression, an MLP and a small CNN, early and late in training, how
# close the five matrices $D$, $\hat F$, $F$, $G$ (GGN) and $H$ actually are
# {cite}`martens2020new,kunstner2019limitations,thomas2020interplay`.
#
# ## The chain of identities
#
# **(1) Covariance and empirical Fisher.** By {eq}`eq-ch1-D`,
#
# $$
# D = \hat F - \bar g\bar g^\top,\qquad \hat F = \frac1N\sum_i g_i g_i^\top,
# $$ (eq-ch2-DF)
#
# so the two differ by a rank-one term of size $\|\bar g\|^2$, which vanishes at a
# stationary point.
#
# **(2) True Fisher and GGN for softmax cross-entropy.** Let $f_i = f(x_i;\theta) \in
# \mathbb{R}^C$ be the logits, $p_i = \operatorname{softmax}(f_i)$, $J_i = \partial f_i /
# \partial\theta$ ($C\times P$) and $\ell(\theta; x_i, y) = -\log p_{i,y}$, so that $\ell_i
# = \ell(\theta; x_i, y_i)$ with the data label $y_i$. The output gradient is $\nabla_f
# \ell = p_i - e_{y}$ and the output Hessian is $\nabla_f^2 \ell = \operatorname{diag}(p_i) -
# p_ip_i^\top$, independent of the label. The *true* Fisher averages the outer product of
# the gradient over labels drawn from the model, not from the data:
#
# $$
# \begin{aligned}
# F &= \frac1N\sum_i \mathbb{E}_{y\sim p_i}\big[\nabla_\theta\ell(\theta;x_i,y)\,
#     \nabla_\theta\ell(\theta;x_i,y)^\top\big] \\
#   &= \frac1N\sum_i J_i^\top\,\mathbb{E}_{y\sim p_i}\big[(p_i - e_y)(p_i - e_y)^\top\big]\,J_i ,
# \end{aligned}
# $$ (eq-ch2-F)
#
# and $\mathbb{E}_{y\sim p}[(p - e_y)(p - e_y)^\top] = pp^\top - pp^\top - pp^\top +
# \mathbb{E}[e_ye_y^\top] = \operatorname{diag}(p) - pp^\top$ (using $\mathbb{E}[e_y] = p$).
# Hence
#
# $$
# F = \frac1N\sum_i J_i^\top\big(\operatorname{diag}p_i - p_ip_i^\top\big)J_i = G,
# $$ (eq-ch2-FG)
#
# exactly, at every $\theta$, where $G = \frac1N\sum_i J_i^\top\nabla_f^2\ell_i\,J_i$ is the
# generalised Gauss-Newton matrix. This is the *canonical link* property: for an
# exponential family in its natural parameters (here the logits), the Hessian of the
# negative log-likelihood in the outputs does not depend on the observed label, so it
# equals its own expectation, which is the output-space Fisher.
#
# **(3) GGN and Hessian.** Differentiating $\nabla_\theta\ell_i = J_i^\top\nabla_f\ell_i$ once
# more (chain rule),
#
# $$
# H = G + \frac1N\sum_i\sum_{c=1}^C \frac{\partial \ell_i}{\partial f_{ic}}\,\nabla^2_\theta f_{ic}.
# $$ (eq-ch2-HG)
#
# The residual vanishes for models linear in $\theta$ (softmax regression:
# $\nabla^2_\theta f = 0$, so $H = G = F$ exactly), and is small when the residuals
# $p_i - e_{y_i}$ are small (the model fits the data) or average out.
#
# **(4) Fisher as the Hessian of the KL divergence.** Fix $\theta$, write $p_{iy}$ for its
# predictive probabilities and $p'_{iy}$ for those at $\theta'$, and let $K(\theta') =
# \frac1N\sum_i \mathrm{KL}(p_i\,\|\,p'_i) = \frac1N\sum_i\sum_y p_{iy}(\log p_{iy} - \log
# p'_{iy})$. Only the second term depends on $\theta'$, so $\nabla^2 K(\theta') =
# -\frac1N\sum_i\sum_y p_{iy}\nabla^2\log p'_{iy}$. For any positive function $q$,
# $\nabla^2\log q = \nabla^2 q/q - \nabla\log q\,\nabla\log q^\top$. At $\theta' = \theta$
# this gives, per example,
#
# $$
# \begin{aligned}
# -\sum_y p_y\nabla^2\log p_y &= -\sum_y\nabla^2 p_y + \sum_y p_y\,\nabla\log p_y\,
#   \nabla\log p_y^\top \\
#   &= \mathbb{E}_{y\sim p}\big[\nabla\ell(y)\nabla\ell(y)^\top\big],
# \end{aligned}
# $$ (eq-ch2-KL)
#
# because $\sum_y \nabla^2 p_y = \nabla^2\sum_y p_y = \nabla^2 1 = 0$ and $\nabla\log p_y =
# -\nabla\ell(y)$. Averaging over $i$: $\nabla^2K(\theta) = F$. ($K \ge 0$ and $K(\theta) =
# 0$, so $\theta$ is a minimum of $K$ and $F$ is positive semi-definite, as it must be.)
#
# **(5) Information equality.** The left side of {eq}`eq-ch2-KL` is also
# $\mathbb{E}_{y\sim p}[\nabla^2\ell(y)]$, the Hessian of the loss averaged over labels drawn
# from the model. And $\mathbb{E}_{y\sim p}[\nabla\ell(y)] = -\sum_y\nabla p_y = 0$. Now suppose
# the model is *well specified*: the data labels are drawn as $y_i \sim p_{\theta^\ast}(\cdot|
# x_i)$ for some $\theta^\ast$. At $\theta = \theta^\ast$ the per-example terms are then
# independent with
#
# $$
# \begin{aligned}
# &\mathbb{E}[g_i] = 0,\qquad \mathbb{E}[g_ig_i^\top] = \mathbb{E}[\nabla^2\ell_i] = F_i,
# \qquad\text{so} \\
# &\mathbb{E}[\hat F] = \mathbb{E}[H] = F,\qquad
# \mathbb{E}[D] = \big(1 - \tfrac1N\big)F,
# \end{aligned}
# $$ (eq-ch2-infoeq)
#
# where $F_i$ is example $i$'s term in {eq}`eq-ch2-F` and the last identity uses
# $\mathbb{E}[\bar g\bar g^\top] = \frac{1}{N^2}\sum_i F_i = F/N$. Each of $\hat F$, $H$, $D$ is
# an average of $N$ independent terms with mean $F_i$, so by the law of large numbers all
# three approach $F$ with relative error $O(N^{-1/2})$. This — and only this — is the sense in
# which "covariance = Fisher = Hessian" is a theorem. On real data the labels are not model
# samples and $\theta$ is not $\theta^\ast$, so $\hat F \neq F$ and $H \neq F$ in general:
# the gaps measured below.
#
# **Fisher-Rao norm.** $F$ defines the metric $\langle u, v\rangle_F = u^\top F v$ and the
# Fisher-Rao norm $\|\theta\|_{fr}^2 = \theta^\top F\theta$ {cite}`liang2019fisher`. Take a
# bias-free ReLU network with $L$ hidden layers, $f(x;\theta) = W_{L+1}\sigma(W_L\cdots
# \sigma(W_1x))$. Since $\sigma(cz) = c\,\sigma(z)$ for $c > 0$, scaling every weight matrix by
# $c$ scales the output by $c^{L+1}$: $f(x; c\theta) = c^{L+1}f(x;\theta)$. Differentiating in
# $c$ at $c = 1$ (Euler's theorem for homogeneous functions; valid wherever $f$ is
# differentiable, i.e. off the measure-zero set of ReLU kinks) gives $J_i\theta = (L+1)f_i$.
# Then $\theta^\top\nabla\ell(\theta;x_i,y) = \langle J_i\theta, p_i - e_y\rangle = (L+1)\langle
# f_i, p_i - e_y\rangle$, and squaring and averaging as in {eq}`eq-ch2-F`,
#
# $$
# \theta^\top F\theta = (L+1)^2\,\frac1N\sum_i\mathbb{E}_{y\sim p_i}
#   \langle p_i - e_y, f_i\rangle^2 :
# $$ (eq-ch2-fr)
#
# the norm is computable from the outputs alone, without any derivative. The same argument
# with the data labels gives $\theta^\top\hat F\theta = (L+1)^2\frac1N\sum_i\langle p_i -
# e_{y_i}, f_i\rangle^2$.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
n_train = 400
image_size = 4
seed = 0
mlp_width = 12
cnn_width = 2
train_steps = 300
early_step = 10
train_lr = 0.1
train_batch_size = 50
top_k = 10
check_n = 100
identity_tolerance = 1e-8
gap_ratio = 1.5
gap_slope = -0.25
slope_tolerance = 0.25
cosine_holds = 0.9
cosine_fails = 0.6
gamma_low = 1.0
gamma_high = 2.0
fr_n_test = 1000
fr_widths = [4, 12, 32]
fr_batch_sizes = [10, 50, 200]
fr_seeds = 3
fr_confidence = 0.95

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
import torch
from IPython.display import Markdown, display

from sgdnoise.chapters import ch02_fisher_hessian as ch02
from sgdnoise.chapters.small_problems import (
    build_small_model,
    load_small_problem,
    load_small_split,
    train_small,
)
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, scale_label, show_verdicts, tex_html

P = ch02.Params.from_namespace(globals())
clock = Stopwatch()
torch.set_num_threads(2)
use_style()
problem = load_small_problem(P.dataset, P.n_train, image_size=P.image_size, seed=P.seed)
identity = problem.identity
scale = scale_label(P.profile, identity, with_size=True)
MATRIX_COLOURS = dict(zip(("D", "F_hat", "F", "GGN", "H"),
                          [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4, 5)],
                          strict=True))
# The matrices' names as the figures (mathtext) and the tables (MathJax) write them.
MATH = {m: ch02.matrix_math(m) for m in MATRIX_COLOURS}
HTML = {m: tex_html(ch02.MATRIX_TEX[m]) if m in ch02.MATRIX_TEX else m for m in MATRIX_COLOURS}
PALETTE = {MATH[m]: c for m, c in MATRIX_COLOURS.items()}
CASE_COLOURS = sns.color_palette("Paired", 6)  # per model: light = early, dark = late

# %% [markdown]
# (sec-ch2-identities)=
# ## Checks of the exact identities
#
# On a bias-free one-hidden-layer ReLU MLP ($L = 1$, so the degree is $L + 1 = 2$), trained
# with SGD for the same number of steps as the models below, evaluated on the first
# `check_n` examples: the Hessian of the KL divergence (dense autograd on $K$ itself)
# against the true Fisher {eq}`eq-ch2-KL`, and both sides of the Fisher-Rao identity
# {eq}`eq-ch2-fr`. A relative error up to `identity_tolerance` counts as rounding.

# %%
small = build_small_model("mlp", problem.in_shape, width=P.mlp_width, bias=False, seed=P.seed)
train_small(small, problem.x, problem.y, steps=P.train_steps, lr=P.train_lr,
            batch_size=P.train_batch_size, seed=P.seed)
checks = ch02.exact_identities(small, problem.x[: P.check_n], problem.y[: P.check_n])
v_ident = ch02.identities_verdict(checks, tolerance=P.identity_tolerance, scale=scale)
display(Markdown(v_ident.sentence))

# %% [markdown]
# (sec-ch2-infoeq)=
# ## The information equality: model labels vs data labels
#
# {eq}`eq-ch2-infoeq` predicts that if the labels were drawn from the model itself, $\hat
# F$, $D$ and $H$ would all converge to $F$ at the rate $N^{-1/2}$. We test this on the same
# MLP: once with labels resampled from its own predictive distribution (a well-specified
# problem whose true parameter is the current $\theta$), once with the real labels, on
# nested subsets of the training data (up to all $N$ examples).

# %%
sizes = ch02.information_sizes(P.n_train)
ieq = ch02.information_equality_study(small, problem.x, problem.y, sizes, seed=P.seed)
ieq_table = ieq.pivot_table(index="n", columns=["labels", "matrix"], values="rel_dist")
ieq_table.columns = [f"{lab} labels: {HTML[m]}" for lab, m in ieq_table.columns]
display(ieq_table.reset_index().rename(columns={"n": "N"})
        .style.format(precision=3).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Relative Frobenius distance of the empirical Fisher, the covariance D and the Hessian H of a bias-free MLP to its true Fisher F, on nested subsets of N examples, with the real labels (solid) and with labels drawn from the model (dashed); dotted: slope −1/2. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.information_equality_study`.", "name": "fig-ch2-infoeq"}}
fig, ax = plt.subplots(figsize=(4.3, 3.5))
sns.lineplot(data=ieq.assign(labels=ieq.labels.map({"data": "data labels",
                                                    "model": "labels drawn from the model"}),
                             matrix=ieq.matrix.map(MATH)),
             x="n", y="rel_dist", hue="matrix", style="labels", markers=True,
             palette=PALETTE, ax=ax)
n_arr = np.array(sizes, dtype=float)
m0 = float(ieq[(ieq.labels == "model") & (ieq.n == sizes[0])].rel_dist.max())
ax.plot(n_arr, m0 * (n_arr / n_arr[0]) ** -0.5, ":", color="gray", label="slope −1/2")
ax.set(xscale="log", yscale="log", xlabel="number of examples N",
       ylabel=r"$\|M - F\|_F / \|F\|_F$",
       title=f"bias-free MLP, P = {checks['P']}\n{source_label(P.profile, identity)}")
ax.set_xticks(n_arr, [str(int(v)) for v in n_arr])
ax.minorticks_off()
ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
plt.show()

# %% [markdown]
# **What to see.** ($\hat F$ is hidden under $D$ when $\bar g\bar g^\top$ is small.) With
# labels drawn from the model (dashed), the three matrices can differ from $F$ only by
# sampling noise, so their distances should fall roughly along the slope $-1/2$ guide. With
# the real labels (solid), a distance that stops falling is a systematic gap: the data's
# labels are not samples from the model. Whether such a gap is visible at these $N$, and for
# which matrix, is computed below: a gap needs a data/model distance ratio above
# `gap_ratio` at the largest $N$ together with a data-label slope above `gap_slope`. Note
# that $N$ here is comparable to $P$: a rank-$N$ average cannot match a $P\times P$ matrix
# well until $N$ exceeds the effective rank of $F$, so both curves start high. (Training by
# maximum likelihood on these very examples also pulls the model's predictive distribution
# towards their labels, which can hide a gap.)

# %%
v_rate, v_infoeq = ch02.information_equality_verdicts(
    ieq, gap_ratio=P.gap_ratio, gap_slope=P.gap_slope, slope_tolerance=P.slope_tolerance,
    scale=scale)
display(Markdown(v_rate.sentence + " " + v_infoeq.sentence))

# %% [markdown]
# (sec-ch2-compare)=
# ## How close are $D$, $\hat F$, $F$, $G$ and $H$ on trained models?
#
# Three models — softmax regression (linear in $\theta$), a one-hidden-layer ReLU MLP and a
# small three-layer ReLU CNN, all with biases — each trained with SGD. At an early and a late
# step we form the five dense matrices and compare them pairwise: the relative distance
# $\|A - B\|_F/\|B\|_F$, the cosine $\langle A, B\rangle_F/(\|A\|_F\|B\|_F)$ (scale-free: $1$
# means "equal up to a positive factor"; the best rescaling $cA$ leaves the relative
# distance $\sqrt{1 - \cos^2}$), and the overlap of top-$k$ eigenspaces
# ({py:func}`sgdnoise.spectral.top_eigenspace_overlap`, $1$ = same subspace, about $k/P$
# for random ones).

# %%
res = ch02.fisher_hessian_study(
    problem, [("softmax", 0), ("mlp", P.mlp_width), ("cnn", P.cnn_width)],
    steps=P.train_steps, early_step=P.early_step, lr=P.train_lr,
    batch_size=P.train_batch_size, k=P.top_k, seed=P.seed,
)
display(res["training"].rename(columns={"train_loss": "train loss",
                                        "train_error": "train error"})
        .style.format({"train loss": "{:.6f}", "train error": "{:.3f}"}).hide(axis="index"))
pairs = res["pairs"]
key = ch02.key_pairs(pairs)
display(key.assign(pair=key.a.map(HTML) + " vs " + key.b.map(HTML))
        [["model", "stage", "step", "pair", "rel_dist", "cosine", "scaled_dist", "overlap"]]
        .rename(columns={"rel_dist": tex_html(r"\lVert A - B \rVert / \lVert B \rVert"),
                         "scaled_dist": "after rescaling", "overlap": f"top-{P.top_k} overlap"})
        .style.format(precision=3).hide(axis="index"))
key = key.assign(pair=key.a.map(MATH) + " vs " + key.b.map(MATH))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Pairwise comparison of the five matrices for each model and stage (early, late): relative distance, cosine similarity and top-k eigenspace overlap, one colour per model and stage. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.fisher_hessian_study`.", "name": "fig-ch2-pairs"}}
fig, axes = plt.subplots(1, 3, figsize=(7, 3.6), sharex=True)
sns.barplot(data=key, x="pair", y="rel_dist", hue="where", palette=CASE_COLOURS, ax=axes[0])
axes[0].set(title="relative distance", ylabel="‖A − B‖ / ‖B‖")
sns.barplot(data=key, x="pair", y="cosine", hue="where", palette=CASE_COLOURS, ax=axes[1])
axes[1].set(ylim=(0, 1.05), title="cosine")
sns.barplot(data=key, x="pair", y="overlap", hue="where", palette=CASE_COLOURS, ax=axes[2])
axes[2].set(ylim=(0, 1.05), title=f"top-{P.top_k} overlap")
for ax in axes:
    ax.tick_params(axis="x", rotation=90)
    ax.set_xlabel("")
    ax.legend().remove()
handles, lbls = axes[0].get_legend_handles_labels()
fig.tight_layout()
fig.legend(handles, lbls, loc="upper center", ncol=3, frameon=False,
           bbox_to_anchor=(0.5, 0.0))
plt.show()

# %% [markdown]
# **What to see.** Read each panel pair by pair. $D$ vs $\hat F$: close wherever
# $\|\bar g\|^2$ is small next to $\operatorname{tr}\hat F$ ({eq}`eq-ch2-DF`). $F$ vs $G$:
# {eq}`eq-ch2-FG` is exact, so distance $0$ and cosine $1$ are expected for every model and
# stage. $G$ vs $H$: also exact for softmax regression (linear model), not for the
# networks, whose residual term in {eq}`eq-ch2-HG` can be visible. The two links that carry
# the "noise ≈ curvature" argument are $\hat F$ vs $F$ (data labels vs model labels) and
# $G$ vs $H$; the end-to-end comparison is $D$ vs $H$.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Top-k eigenvalues of D, the empirical Fisher, F, the GGN and H, for each model (columns) early and late in training (rows); F lies under the GGN (they are equal). Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.compare_matrices`.", "name": "fig-ch2-eigs"}}
g = sns.relplot(data=res["eigs"].assign(matrix=res["eigs"].matrix.map(MATH)), x="rank",
                y="eigenvalue", hue="matrix", style="matrix", col="model", row="stage",
                kind="line", markers=True, height=2.1, aspect=1.05, palette=PALETTE,
                facet_kws={"sharey": False})
sns.move_legend(g, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=5, frameon=False, title=None)
g.set_titles("{col_name}, {row_name}")
for ax in g.axes.flat:
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
g.figure.suptitle(source_label(P.profile, identity), y=1.02)
plt.show()

# %% [markdown]
# **What to see.** The tops of the spectra. Where the $D$ and $H$ curves lie on top of each
# other the noise covariance really is the curvature; a constant vertical offset would be a
# scale factor; different shapes mean different matrices.

# %% [markdown]
# (sec-ch2-diagonal)=
# ## The diagonals: a power law?

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Diagonal entries $D_{ii}$ against $H_{ii}$ of each trained model (late stage, entries with $H_{ii} > 0$), one point per parameter, with the least-squares power law $D_{ii} \\propto H_{ii}^{\\gamma}$ (black). Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.diagonal_power_law`.", "name": "fig-ch2-diagonal"}}
diag, pl = res["diagonals"], res["power_law"]
late = diag[(diag.stage == "late") & (diag.D_ii > 0) & (diag.H_ii > 0)]
models = list(dict.fromkeys(diag.model))
fig, axes = plt.subplots(1, len(models), figsize=(7, 2.9))
for ax, m in zip(np.atleast_1d(axes), models, strict=True):
    d = late[late.model == m]
    ax.loglog(d.H_ii, d.D_ii, ".", ms=3, alpha=0.5, color=MATRIX_COLOURS["D"])
    fit = pl[(pl.model == m) & (pl.stage == "late")].iloc[0]
    h = np.geomspace(d.H_ii.min(), d.H_ii.max(), 50)
    ax.loglog(h, np.exp(fit.intercept) * h**fit.gamma, "k-", lw=1)
    ax.set(title=f"{m}: γ = {fit.gamma:.2f}", xlabel=r"$H_{ii}$")
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
np.atleast_1d(axes)[0].set_ylabel(r"$D_{ii}$")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to see.** Each point is one parameter. A power law $D_{ii} \propto H_{ii}^\gamma$
# is a straight line of slope $\gamma$; the spread around the line ($R^2$) says how much of
# the per-parameter noise variance the curvature alone predicts. Parameters with $H_{ii}
# \le 0$ (possible for the networks, whose Hessian is indefinite) cannot enter a power law
# and are left out; the table counts them.

# %%
display(pl[["model", "stage", "gamma", "gamma_se", "r2", "n_used", "n_total"]]
        .rename(columns={"gamma": "γ", "gamma_se": "se(γ)", "r2": "R²",
                         "n_used": "entries used", "n_total": "P"})
        .style.format(precision=3).hide(axis="index"))
dh_lines, v_dh = ch02.covariance_hessian_verdict(
    pairs, res["summary"], top_k=P.top_k, cosine_holds=P.cosine_holds,
    cosine_fails=P.cosine_fails, scale=scale)
v_pl = ch02.power_law_verdict(pl, gamma_low=P.gamma_low, gamma_high=P.gamma_high, scale=scale)
display(Markdown("\n".join([*dh_lines, "- " + v_pl.sentence, "- Overall: " + v_dh.sentence])))

# %% [markdown]
# (sec-ch2-fisher-rao)=
# ## Does the Fisher-Rao norm bound generalization?
#
# {cite:t}`liang2019fisher` propose $\|\theta\|_{fr}$ as a capacity measure: a
# generalization bound that grows with it. A bound can only explain generalization if it
# orders models the way their generalization gaps do. We train a family of bias-free ReLU
# MLPs — every width in `fr_widths`, batch size in `fr_batch_sizes` and `fr_seeds` seeds,
# all with the same number of steps and learning rate as above — and compare, across the
# family, $\theta^\top F\theta$ (on the training inputs, {eq}`eq-ch2-fr`) with the measured
# gap, test minus training cross-entropy on `fr_n_test` held-out images. The test statistic
# is Spearman's rank correlation with its `fr_confidence` interval
# ({py:func}`sgdnoise.stats.spearman_ci`): an interval above $0$ supports the claim, below
# $0$ contradicts it, and one containing $0$ cannot decide. The family varies width and
# batch size at a fixed number of steps, so models that fit their training set more
# closely may have both a larger norm and a larger gap: a rank correlation shows that the
# norm orders the gaps, not that it causes or tightly bounds them.

# %%
fr_train, fr_test = load_small_split(P.dataset, P.n_train, P.fr_n_test,
                                     image_size=P.image_size, seed=P.seed)
family = ch02.fisher_rao_generalization_study(
    fr_train, fr_test, widths=P.fr_widths, batch_sizes=P.fr_batch_sizes, seeds=P.fr_seeds,
    steps=P.train_steps, lr=P.train_lr)
rho, rho_err, v_fr = ch02.fisher_rao_verdict(family, confidence=P.fr_confidence, scale=scale)
display(family.rename(columns={"batch_size": "B", "train_loss": "train loss",
                               "test_loss": "test loss", "train_error": "train error",
                               "test_error": "test error", "gap_loss": "loss gap",
                               "gap_error": "error gap",
                               "fr_norm_sq": tex_html(r"\theta^\top F \theta")})
        .style.format(precision=4).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Generalization gap (test minus training cross-entropy) against the squared Fisher-Rao norm for a family of trained bias-free ReLU MLPs: colour = width, marker = batch size, one point per seed. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.fisher_rao_generalization_study`.", "name": "fig-ch2-fisher-rao"}}
fig, ax = plt.subplots(figsize=(4.5, 3.5))
sns.scatterplot(data=family.assign(width=family.width.astype(str),
                                   B=family.batch_size.astype(str)),
                x="fr_norm_sq", y="gap_loss", hue="width", style="B", s=60,
                palette="colorblind", ax=ax)
ax.set(xscale="log", xlabel=r"$\theta^\top F\theta$ (squared Fisher-Rao norm)",
       ylabel="test − train cross-entropy",
       title=f"Spearman ρ = {rho.estimate:.2f} [{rho.low:.2f}, {rho.high:.2f}]\n"
             f"{source_label(P.profile, identity)}")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
plt.show()

# %%
display(Markdown(v_fr.sentence))

# %% [markdown]
# (sec-ch2-verdicts)=
# ## What the numbers say
#
# The derivations above are exact where they say so: $D = \hat F - \bar g\bar g^\top$; for
# softmax cross-entropy $F = G$ at every $\theta$; $F$ is the Hessian of the KL divergence;
# the Fisher-Rao identity for bias-free ReLU networks; and the information equality when the
# labels follow the model at the true parameter. The essay's chain "covariance ≈ Fisher ≈
# Hessian" needs more: labels that look like model samples ($\hat F \approx F$) and small
# residuals or a linear model ($G \approx H$). The claims this chapter tests, each with the
# verdict computed from the numbers above (functions in
# {py:mod}`sgdnoise.chapters.ch02_fisher_hessian`; thresholds `identity_tolerance`,
# `slope_tolerance`, `gap_ratio`, `gap_slope`, `cosine_holds`, `cosine_fails`, `gamma_low`,
# `gamma_high`, `fr_confidence` in the provenance table):

# %%
show_verdicts("ch02_fisher_hessian", [v_ident, v_rate, v_infoeq, v_dh, v_pl, v_fr])

# %%
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
