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
# the Hessian of a Kullback-Leibler (KL) divergence, which near a minimum is the Hessian of
# the loss. Each link holds under its own conditions. This chapter states each link
# precisely, proves it, and measures on softmax regression, a multi-layer perceptron (MLP)
# and a small convolutional network (CNN), both with ReLU activations ($\sigma(z) =
# \max(z, 0)$, the rectified linear unit), early and late in training, how close the five
# matrices $D$, $\hat F$, $F$, $G$ (the generalised Gauss-Newton matrix,
# defined below) and $H$ actually are
# {cite}`martens2020new,kunstner2019limitations,thomas2020interplay`. The essay's claims are
# about the end of training, near a minimum; they are decided there, over several trained
# models, each with the error rates of its rule.
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
# **(2) True Fisher and Gauss-Newton matrix for softmax cross-entropy.** Let $f_i = f(x_i;\theta) \in
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
# **(3) Gauss-Newton matrix and Hessian.** Differentiating $\nabla_\theta\ell_i = J_i^\top\nabla_f\ell_i$ once
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
slope_tolerance = 0.25
cosine_holds = 0.9
gamma_low = 1.0
gamma_high = 2.0
fr_n_test = 1000
fr_widths = [4, 12, 32]
fr_batch_sizes = [10, 50, 200]
fr_seeds = 3
fr_confidence = 0.95
fr_boot = 1000
seeds = 3
null_draws = 30
alpha = 0.05
rate_sims = 2000
shuffled_model = "mlp"
shuffled_seeds = 3

# %% tags=["remove-cell"]
import itertools
import warnings

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
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

# a deprecation notice of a library, not of this chapter
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
P = ch02.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
problem = load_small_problem(P.dataset, P.n_train, image_size=P.image_size, seed=P.seed)
identity = problem.identity
scale = scale_label(P.profile, identity, with_size=True)
MATRIX_COLOURS = dict(zip(("D", "F_hat", "F", "GGN", "H"),
                          [sns.color_palette("colorblind")[i] for i in (0, 1, 2, 4, 5)],
                          strict=True))
# The matrices' names as the figures (mathtext) and the tables (MathJax) write them.
MATH = {m: ch02.matrix_math(m) for m in MATRIX_COLOURS}
HTML = {m: tex_html(ch02.MATRIX_TEX[m]) for m in MATRIX_COLOURS}
PALETTE = {MATH[m]: c for m, c in MATRIX_COLOURS.items()}
MODELS = [("softmax", 0), ("mlp", P.mlp_width), ("cnn", P.cnn_width)]
# per model one colour-blind-safe hue, lighter early, full late
_BASE = sns.color_palette("colorblind", len(MODELS))
CASE_COLOURS = [c for b in _BASE for c in (tuple(0.55 * np.array(b) + 0.45), b)]

# %% [markdown]
# (sec-ch2-identities)=
# ## Checks of the exact identities
#
# On a bias-free one-hidden-layer ReLU MLP ($L = 1$, so the degree is $L + 1 = 2$), trained
# with SGD for the same number of steps as the models below and evaluated on its first
# training examples: the Hessian of the KL divergence (dense autograd on $K$ itself)
# against the true Fisher {eq}`eq-ch2-KL`, and both sides of the Fisher-Rao identity
# {eq}`eq-ch2-fr`. The tolerance for rounding is stated with the result.

# %%
small = build_small_model("mlp", problem.in_shape, width=P.mlp_width, bias=False, seed=P.seed)
train_small(small, problem.x, problem.y, steps=P.train_steps, lr=P.train_lr,
            batch_size=P.train_batch_size, seed=P.seed)
checks = ch02.exact_identities(small, problem.x[: P.check_n], problem.y[: P.check_n])
v_ident = ch02.identities_verdict(checks, tolerance=P.identity_tolerance, scale=scale)
display(Markdown(f"On the first {P.check_n} examples: " + v_ident.sentence))

# %% [markdown]
# (sec-ch2-infoeq)=
# ## The information equality: model labels vs data labels
#
# {eq}`eq-ch2-infoeq` predicts that if the labels were drawn from the model itself, $\hat
# F$, $D$ and $H$ would all converge to $F$ at the rate $N^{-1/2}$. We test this on the same
# MLP, trained from several seeds: once with labels resampled from its own predictive
# distribution (a well-specified problem whose true parameter is the current $\theta$),
# once with the real labels, on nested subsets of the training data (up to all $N$
# examples). The table gives the relative distance $\lVert M - F\rVert_F / \lVert
# F\rVert_F$, averaged over the seeds.

# %%
ieq = ch02.information_equality_seeds(problem, range(P.seeds), width=P.mlp_width,
                                      steps=P.train_steps, lr=P.train_lr,
                                      batch_size=P.train_batch_size, trained={P.seed: small})
sizes = sorted(set(ieq.n))
ieq_table = ieq.pivot_table(index="n", columns=["labels", "matrix"], values="rel_dist")
ieq_table.columns = [f"{lab} labels: {HTML[m]}" for lab, m in ieq_table.columns]
display(ieq_table.reset_index().rename(columns={"n": "N"})
        .style.format(precision=3).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Relative Frobenius distance of the empirical Fisher, the covariance D and the Hessian H of a bias-free MLP to its true Fisher F, on nested subsets of N examples, with the real labels (solid) and with labels drawn from the model (dashed), mean over seeds with a 95% band; dotted: slope −1/2. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.information_equality_study`.", "name": "fig-ch2-infoeq"}, "image": {"alt": "Log-log plot of the relative distance of the empirical Fisher, the covariance D and the Hessian H to the true Fisher against the number of examples, with the real labels (solid lines) and with labels drawn from the model (dashed lines), and a dotted guide of slope minus one half."}}
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
# the real labels (solid), a distance that stays above the dashed one is a systematic gap:
# the data's labels are not samples from the model. Note that $N$ here is comparable to
# $P$: a rank-$N$ average cannot match a $P\times P$ matrix well until $N$ exceeds the
# effective rank of $F$, so both curves start high, and an equality "up to sampling" is a
# weak statement while the sampling error itself is large. (Training by maximum likelihood
# on these very examples also pulls the model's predictive distribution towards their
# labels, which can hide a gap.) The computed readings:

# %%
v_rate = ch02.information_rate_verdict(ieq, slope_tolerance=P.slope_tolerance, scale=scale)
ieq_rates = ch02.information_equality_rates(ieq, gap_ratio=P.gap_ratio, alpha=P.alpha,
                                            n_sim=P.rate_sims, seed=P.seed)
v_infoeq = ch02.information_equality_verdict(ieq, gap_ratio=P.gap_ratio, alpha=P.alpha,
                                             scale=scale, rates=ieq_rates)
display(Markdown(v_rate.sentence + "\n\n" + v_infoeq.sentence))

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
# for random ones). The first table gives each model's training loss and error at the two
# steps, the second the pairs the argument uses.

# %%
res = ch02.fisher_hessian_study(
    problem, MODELS, steps=P.train_steps, early_step=P.early_step, lr=P.train_lr,
    batch_size=P.train_batch_size, k=P.top_k, seed=P.seed,
)
display(res["training"].assign(model=res["training"].model.map(ch02.model_name))
        .rename(columns={"step": "SGD step", "train_loss": "train loss (nats)",
                                        "train_error": "train error", "P": "parameters"})
        [["model", "parameters", "SGD step", "train loss (nats)", "train error"]]
        .style.format({"train loss (nats)": "{:.4f}", "train error": "{:.1%}"})
        .hide(axis="index"))
pairs = res["pairs"]
key = ch02.key_pairs(pairs)
display(key.assign(pair=key.a.map(HTML) + " vs " + key.b.map(HTML),
                  model=key.model.map(ch02.model_name))
        [["model", "stage", "step", "pair", "rel_dist", "cosine", "scaled_dist", "overlap"]]
        .rename(columns={"step": "SGD step",
                         "rel_dist": tex_html(r"\lVert A - B \rVert / \lVert B \rVert"),
                         "scaled_dist": "after rescaling", "overlap": f"top-{P.top_k} overlap"})
        .style.format(precision=3).hide(axis="index"))
key = key.assign(pair=key.a.map(MATH) + " vs " + key.b.map(MATH),
                where=key.model.map(ch02.model_name) + ", " + key.stage)

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Pairwise comparison of the five matrices for each model and stage: relative distance, cosine similarity and top-k eigenspace overlap, one colour per model, lighter early and full late in training. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.fisher_hessian_study`.", "name": "fig-ch2-pairs"}, "image": {"alt": "Three bar charts (relative distance, cosine, top-k eigenspace overlap) over five pairs of matrices, six bars per pair: softmax regression, the MLP and the CNN, each early (light) and late (dark) in training. The Fisher and the Gauss-Newton matrix coincide in every case (distance zero, cosine one), as the identity says."}}
fig, axes = plt.subplots(1, 3, figsize=(6.8, 3.6), sharex=True)
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

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Largest eigenvalues of the covariance D, the empirical Fisher, the Fisher F, the generalised Gauss-Newton matrix G and the Hessian H, for each model (columns) early and late in training (rows); F lies under G (they are equal). Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.compare_matrices`.", "name": "fig-ch2-eigs"}, "image": {"alt": "Six small panels, one per model and stage, of the largest eigenvalues of the five matrices against their rank; the Fisher and the Gauss-Newton curves coincide."}}
eigs = res["eigs"]
stages = list(dict.fromkeys(eigs.stage))
fig, axes = plt.subplots(len(stages), len(MODELS), figsize=(6.8, 1.9 * len(stages) + 0.6),
                         squeeze=False)
for (row, stage), (col, (m, _)) in itertools.product(enumerate(stages), enumerate(MODELS)):
    ax = axes[row, col]
    for (mat, colour), marker in zip(MATRIX_COLOURS.items(), "osv^D", strict=True):
        d = eigs[(eigs.model == m) & (eigs.stage == stage) & (eigs.matrix == mat)]
        ax.plot(d["rank"], d.eigenvalue, marker=marker, ms=3, lw=1, color=colour,
                label=MATH[mat])
    ax.set_title(f"{ch02.model_name(m)}, {stage}")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("rank" if row == len(stages) - 1 else "")
    ax.set_ylabel("eigenvalue" if col == 0 else "")
fig.tight_layout()
fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center",
           bbox_to_anchor=(0.5, 0.0), ncol=len(MATRIX_COLOURS), frameon=False)
fig.suptitle(source_label(P.profile, identity), y=1.02)
plt.show()

# %% [markdown]
# **What to see.** The tops of the spectra. Where the $D$ and $H$ curves lie on top of each
# other the noise covariance really is the curvature; a constant vertical offset would be a
# scale factor; different shapes mean different matrices. Case by case:

# %%
st = res["stationarity"].set_index(["model", "stage"]).ratio
display(Markdown("\n".join(
    ch02.covariance_hessian_lines(pairs, res["summary"], top_k=P.top_k,
                                  cosine_holds=P.cosine_holds)
    + ["- Squared mean gradient over $\\operatorname{tr} D$: "
       + ", ".join(f"{ch02.model_name(m)} {st[(m, 'early')]:.2g} early, "
                   f"{st[(m, 'late')]:.2g} late"
                   for m, _ in MODELS) + "."])))

# %% [markdown]
# (sec-ch2-late)=
# ## Near a minimum, over several seeds
#
# The essay's claim is about the end of training: "when $\theta$ approaches a local minimum,
# the covariance approaches a scaled version of the Hessian". Early in training it claims
# nothing, so the decision uses the late step only, and asks three things of every model.
#
# *Is it near a minimum?* At a stationary point $\bar g = 0$. What matters for SGD is the
# size of the mean gradient next to the noise: a mini-batch gradient of size $B$ has noise
# of squared size $\operatorname{tr}D/B$, so we call the end of training *near a minimum*
# when $\|\bar g\|^2 < \operatorname{tr}D/B$ at the training batch size (the gradient noise
# scale of chapter 6 exceeds $B$).
#
# *Is the cosine more than a shared top direction?* Both $D$ and $H$ are positive
# semi-definite with a few large eigenvalues. Two such matrices that share only their top
# eigenvector already have a sizeable cosine. As baselines we draw random positive
# semi-definite matrices with exactly the spectrum of $D$: with all eigenvectors random (the chance level), and with
# $D$'s own top eigenvector kept and the rest random (what one shared direction gives,
# {py:func}`sgdnoise.chapters.ch02_fisher_hessian.cosine_null`). A cosine threshold is
# informative only where the second baseline stays below it.
#
# *Does it hold across seeds?* Each model is trained from several seeds (initialisation
# and batch order), and the claim is decided by one-sided t-tests across seeds, with the
# rule's error rates measured by simulation: its *false-positive rate* (how often it says
# "supported" when the cosine sits at the threshold or further below) and its *power* (how
# often when the cosine lies halfway between the threshold and $1$). The table lists every
# model and seed.

# %%
late = dict(res["late"])
late.update(ch02.late_matrices(problem, MODELS, range(1, P.seeds), steps=P.train_steps,
                               lr=P.train_lr, batch_size=P.train_batch_size))
cases, layer_fits = ch02.late_seed_study(late, batch_size=P.train_batch_size,
                                         draws=P.null_draws, seed=P.seed)
display(ch02.cases_table(cases, P.train_batch_size).style.hide(axis="index"))
dh_rates = ch02.covariance_hessian_rates(cases, cosine_holds=P.cosine_holds, alpha=P.alpha,
                                         n_sim=P.rate_sims, seed=P.seed)
v_dh = ch02.covariance_hessian_verdict(cases, cosine_holds=P.cosine_holds,
                                       batch_size=P.train_batch_size, alpha=P.alpha,
                                       scale=scale, rates=dh_rates)
display(Markdown(v_dh.sentence))

# %% [markdown]
# *Is the alignment a property of learning the labels?* The essay's argument treats every
# minimum of the cross-entropy alike, and the information equality behind it
# ({eq}`eq-ch2-infoeq`) needs labels that look like samples from the model, not labels
# the model has learned. If the labels carry no information about the inputs and the
# model predicts each class with its frequency, the labels are such samples, and $D$,
# $\hat F$ and $H$ all approach $F$. A model partway to memorising random labels predicts
# neither the frequencies nor the labels: its large residuals $p_i - e_{y_i}$ need not
# average out of the residual term of {eq}`eq-ch2-HG`, and the alignment may differ. As a
# baseline we train one of the models again (named in the table) from the first seeds
# (same initialisation, batch order, steps, learning rate and batch size) on the same
# images with their labels randomly permuted (each class keeps its count), and measure the
# same cosine and $\lVert \bar g \rVert^2 / \operatorname{tr} D$ at the end of training
# ({py:func}`sgdnoise.chapters.ch02_fisher_hessian.shuffled_label_baseline`). The table
# compares the true-label and the shuffled-label models over the same seeds, with the
# difference of their cosines paired by seed (true minus shuffled).

# %%
shuffled = ch02.shuffled_label_baseline(
    problem, (P.shuffled_model, dict(MODELS)[P.shuffled_model]), range(P.shuffled_seeds),
    steps=P.train_steps, lr=P.train_lr, batch_size=P.train_batch_size, draws=P.null_draws,
    seed=P.seed)
display(ch02.shuffled_table(cases, shuffled, alpha=P.alpha).style.hide(axis="index"))
v_dh = ch02.with_shuffled_baseline(v_dh, cases, shuffled, cosine_holds=P.cosine_holds,
                                   alpha=P.alpha)
display(Markdown(ch02.shuffled_reading(cases, shuffled, cosine_holds=P.cosine_holds,
                                       alpha=P.alpha)))

# %% [markdown]
# (sec-ch2-diagonal)=
# ## The diagonals: a power law?
#
# {cite:t}`zhang2026superlinear` argue that the noise covariance is not proportional to the
# Hessian but superlinear in it, and report that within each fully connected layer the
# diagonals follow $D_{ii} \propto H_{ii}^{\gamma}$ with $1 \le \gamma \le 2$. We fit the
# exponent by least squares on the logarithms within each weight layer (one intercept per
# layer), at the end of training, for every seed. The points of one fit are not independent
# (parameters of one layer share their inputs), so the fit's own standard error is not
# used: the spread of the exponent across seeds is.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Diagonal entries $D_{ii}$ against $H_{ii}$ of each trained model (late stage, first seed, entries with $H_{ii} > 0$), one point per parameter, with the least-squares power law $D_{ii} \\propto H_{ii}^{\\gamma}$ over all of the model's parameters (black). Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.diagonal_power_law`.", "name": "fig-ch2-diagonal"}, "image": {"alt": "Three log-log scatter plots, one per model, of each parameter's noise variance against its Hessian diagonal entry, with the fitted power law as a black line; each panel's title gives its exponent."}}
diag, pl = res["diagonals"], res["power_law"]
late_diag = diag[(diag.stage == "late") & (diag.D_ii > 0) & (diag.H_ii > 0)]
models = list(dict.fromkeys(diag.model))
fig, axes = plt.subplots(1, len(models), figsize=(6.8, 2.9))
for ax, m in zip(np.atleast_1d(axes), models, strict=True):
    d = late_diag[late_diag.model == m]
    ax.loglog(d.H_ii, d.D_ii, ".", ms=3, alpha=0.5, color=MATRIX_COLOURS["D"])
    fit = pl[(pl.model == m) & (pl.stage == "late")].iloc[0]
    h = np.geomspace(d.H_ii.min(), d.H_ii.max(), 50)
    ax.loglog(h, np.exp(fit.intercept) * h**fit.gamma, "k-", lw=1)
    ax.set(title=f"{ch02.model_name(m)}: γ = {fit.gamma:.2f}", xlabel=r"$H_{ii}$")
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())
np.atleast_1d(axes)[0].set_ylabel(r"$D_{ii}$")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to see.** Each point is one parameter. A power law $D_{ii} \propto H_{ii}^\gamma$
# is a straight line of slope $\gamma$; the spread around the line says how much of the
# per-parameter noise variance the curvature alone predicts. Parameters with $H_{ii} \le 0$
# (possible for the networks, whose Hessian is indefinite) cannot enter a power law and are
# left out. The table gives the per-layer fits for every seed (entries used out of the
# layer's size), and the decision follows it.

# %%
display(layer_fits.assign(model=layer_fits.model.map(ch02.model_name),
                          gamma=layer_fits.gamma.map(lambda v: f"{v:.2f}"),
                          r2=layer_fits.r2.map(lambda v: f"{v:.2f}"),
                          used=[f"{u} of {t}" for u, t in zip(layer_fits.n_used,
                                                               layer_fits.n_total,
                                                               strict=True)])
        [["model", "seed", "layer", "gamma", "r2", "used"]]
        .rename(columns={"layer": "weight layer", "gamma": "exponent γ",
                         "r2": tex_html("R^2"), "used": "entries used"})
        .style.hide(axis="index"))
pl_rates = ch02.power_law_rates(layer_fits, gamma_low=P.gamma_low, gamma_high=P.gamma_high,
                                alpha=P.alpha, n_sim=P.rate_sims, seed=P.seed)
v_pl = ch02.power_law_verdict(layer_fits, gamma_low=P.gamma_low, gamma_high=P.gamma_high,
                              alpha=P.alpha, scale=scale, rates=pl_rates)
display(Markdown(v_pl.sentence))

# %% [markdown]
# (sec-ch2-fisher-rao)=
# ## Does the Fisher-Rao norm bound generalization?
#
# {cite:t}`liang2019fisher` propose $\|\theta\|_{fr}$ as a capacity measure: a
# generalization bound that grows with it. A bound can only explain generalization if it
# orders models the way their generalization gaps do. We train a family of bias-free ReLU
# MLPs — several widths and batch sizes (the *configurations*), several seeds each, all
# with the same number of steps and learning rate as above — and compare, across the
# family, $\theta^\top F\theta$ (on the training inputs, {eq}`eq-ch2-fr`) with the measured
# gap, test minus training cross-entropy on held-out images. The test statistic is
# Spearman's rank correlation. The seeds of one configuration are not independent evidence
# about the ordering, so its interval comes from a bootstrap that resamples whole
# configurations ({py:func}`sgdnoise.chapters.ch02_fisher_hessian.cluster_spearman`): an
# interval above $0$ supports the claim, below $0$ contradicts it, and one containing $0$
# cannot decide. Its error rates are measured on simulated families with the same
# configurations, seeds and spreads. The family varies width and batch size at a fixed
# number of steps, so models that fit their training set more closely may have both a
# larger norm and a larger gap: a rank correlation shows that the norm orders the gaps,
# not that it causes or tightly bounds them. The table lists the family.

# %%
fr_train, fr_test = load_small_split(P.dataset, P.n_train, P.fr_n_test,
                                     image_size=P.image_size, seed=P.seed)
family = ch02.fisher_rao_generalization_study(
    fr_train, fr_test, widths=P.fr_widths, batch_sizes=P.fr_batch_sizes, seeds=P.fr_seeds,
    steps=P.train_steps, lr=P.train_lr)
fr_rates = ch02.fisher_rao_rates(family, confidence=P.fr_confidence,
                                 n_boot=max(P.fr_boot // 4, 50), n_sim=max(P.rate_sims // 4,
                                                                          100),
                                 seed=P.seed)
rho, rho_err, v_fr = ch02.fisher_rao_verdict(family, confidence=P.fr_confidence,
                                             n_boot=P.fr_boot, scale=scale, seed=P.seed,
                                             rates=fr_rates)
display(family.rename(columns={"width": "width", "batch_size": "batch size", "P": "parameters",
                               "train_loss": "train loss (nats)",
                               "test_loss": "test loss (nats)", "train_error": "train error",
                               "test_error": "test error", "gap_loss": "loss gap (nats)",
                               "gap_error": "error gap",
                               "fr_norm_sq": tex_html(r"\theta^\top F \theta")})
        .style.format({"train error": "{:.1%}", "test error": "{:.1%}", "error gap": "{:+.1%}",
                       tex_html(r"\theta^\top F \theta"): "{:.3g}"}, precision=3)
        .hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Generalization gap (test minus training cross-entropy) against the squared Fisher-Rao norm for a family of trained bias-free ReLU MLPs: colour = width, marker = batch size, one point per seed. Laptop scale of this profile; computed by {py:func}`sgdnoise.chapters.ch02_fisher_hessian.fisher_rao_generalization_study`.", "name": "fig-ch2-fisher-rao"}, "image": {"alt": "Scatter plot of the generalization gap against the squared Fisher-Rao norm on a log axis, one point per trained MLP, colour for the width and marker for the batch size; the title gives Spearman's rank correlation with its interval."}}
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

# %% [markdown]
# **What to see.** If the norm orders the gaps, the points rise from left to right; the
# colours show how much of that ordering comes from the width alone. The computed reading:

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
# {py:mod}`sgdnoise.chapters.ch02_fisher_hessian`, thresholds stated in each sentence). The
# first two are *derivation checks* (the code matches the algebra); the others are
# *claims about SGD's trained models*, decided over seeds with the false-positive rate and
# power of their rules.

# %%
show_verdicts("ch02_fisher_hessian", [v_ident, v_rate, v_infoeq, v_dh, v_pl, v_fr])

# %%
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
