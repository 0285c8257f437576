# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---


# %% [markdown]
# # 5. Over-parameterization and wide valleys
#
# When a network has many more parameters than training examples (P ≫ N), its curvature
# matrices are forced to be degenerate: the empirical Fisher has rank at most N, the
# Gauss-Newton matrix rank at most N(C − 1), and the Hessian, near a point that fits the
# data, is close to the latter. Empirically {cite}`sagun2017eigenvalues,sagun2018empirical`
# the spectrum is a bulk at zero plus a handful of outliers, roughly one per class
# {cite}`papyan2019measurements,papyan2020traces`. This chapter derives the bounds, explains
# the outliers through the class structure of the gradients, measures everything on two
# small over-parameterised networks trained on a CIFAR-10 subset {cite}`krizhevsky2009learning`,
# asks where the mini-batch noise lives relative to the curved directions, and walks a
# finite distance along the flat directions to see whether the minimum sits in a wide
# valley.
#
# The rank and flat-bulk results follow from P ≫ N and are *derivation checks*: the code
# confirms the algebra. Where the noise lives, which matrices the class means organise and
# how wide the valleys are could have come out either way; those are *claims about SGD*,
# decided over several training seeds by a test whose false-positive rate and power are
# measured by simulation and printed beside the verdict.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
image_size = 8
num_classes = 10
mlp_n = 200
mlp_width = 256
mlp_lr = 0.05
cnn_n = 120
cnn_width = 12
cnn_lr = 0.1
batch_size = 32
max_epochs = 150
target_error = 0.0
top_k = 16
lanczos_iters = 30
slq_probes = 2
slq_iters = 30
cnn_init_curvature = False
span_draws = 20
flat_rtol = 0.01
flat_fraction = 0.5
capture_min = 0.5
concentration_min = 2.0
extra_seeds = [1, 2, 3, 4]
valley_directions = 8
valley_min = 0.02
valley_max = 3.0
valley_points = 14
valley_rise = 0.1
valley_ratio_min = 1.25
alpha = 0.05
rate_sims = 4000
capture_effect = 0.1
ratio_effect = 0.25

# %% tags=["remove-cell"]
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from sgdnoise.chapters import ch05_overparam as ch5
from sgdnoise.plotting import color_of, source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, scale_label, show_verdicts, tex_html

P = ch5.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
# one colour per matrix, kept in every figure (colour-blind-safe palette)
MATRIX_COLOURS = {"Hessian": color_of("hessian"), "GGN (= Fisher)": color_of("fisher"),
                  "empirical Fisher": color_of("isotropic"),
                  "covariance D": color_of("covariance")}
MODEL_STYLE = {"mlp": "-", "cnn": "--"}

# %% [markdown]
# ## 5.1 Three rank bounds
#
# Write the per-example gradients as the rows of $G \in \mathbb{R}^{N\times P}$, so that
#
# $$
# \begin{aligned}
# \hat F &= \frac1N \sum_{i=1}^N g_i g_i^\top = \frac1N G^\top G, \\
# D &= \hat F - \bar g \bar g^\top = \frac1N \tilde G^\top \tilde G,
# \qquad \tilde G = G - \mathbf 1 \bar g^\top .
# \end{aligned}
# $$ (eq-ch5-fhat)
#
# **Proposition 1.** $\operatorname{rank}\hat F \le N$ and $\operatorname{rank} D \le N-1$.
# Moreover the non-zero eigenvalues of $\hat F$ are those of the $N\times N$ Gram matrix
# $K = GG^\top/N$.
#
# *Proof.* $\hat F$ is a sum of $N$ rank-one matrices, so its rank is at most $N$. The rows
# of $\tilde G$ sum to zero, so they span a space of dimension at most $N - 1$. For the
# spectra: if $Kw = \lambda w$ with $\lambda \neq 0$, put $u = G^\top w$; then
# $\hat F u = G^\top G G^\top w / N = G^\top K w = \lambda u$ and $u \ne 0$ (since
# $Gu = N\lambda w \neq 0$); the map $w\mapsto G^\top w$ is injective on the eigenspaces of
# non-zero eigenvalues and the same argument runs backwards from $\hat F$ to $K$. ∎
#
# For a softmax classifier with logits $f_i = f(x_i;\theta)\in\mathbb R^C$, Jacobians
# $J_i = \partial f_i/\partial\theta \in \mathbb R^{C\times P}$ and probabilities $p_i$, the
# generalized Gauss-Newton matrix, GGN for short (equal to the true Fisher, chapter 2), is
#
# $$
# \mathrm{GGN} = \frac1N\sum_{i=1}^N J_i^\top \big(\operatorname{diag}p_i - p_ip_i^\top\big) J_i .
# $$ (eq-ch5-ggn)
#
# **Proposition 2.** $\operatorname{rank}\mathrm{GGN} \le N(C-1)$.
#
# *Proof.* $A_i = \operatorname{diag}p_i - p_ip_i^\top$ satisfies
# $A_i\mathbf 1 = p_i - p_i (\mathbf 1^\top p_i) = 0$, so $\operatorname{rank}A_i \le C-1$
# and each term $J_i^\top A_i J_i$ has rank at most $C - 1$; a sum of $N$ of them has rank at
# most $N(C - 1)$. ∎
#
# The Hessian is
# $H = \mathrm{GGN} + \frac1N\sum_i\sum_c (p_{ic} - [y_i = c])\,\nabla^2_\theta f_{ic}$. The
# second term carries the residuals $p_i - e_{y_i}$, which shrink as the network fits the
# training set; at (near) interpolation $H \approx \mathrm{GGN}$, so at least a fraction
# $1 - N(C-1)/P$ of the Hessian's eigenvalues would be (near) zero as well. When $P \gg N$
# the bounds leave most directions flat: moving along them changes neither the outputs on
# the training set to first order ($J_i v = 0$ for all $i$ gives $\mathrm{GGN}\,v = 0$) nor
# the per-example gradients' projections ($Gv = 0$ gives $\hat F v = 0$).
#
# ## 5.2 Why about one outlier per class
#
# Split $\hat F$ over classes. With $\pi_c$ the fraction of examples in class $c$, $N_c$
# their number and $\delta_c$ their mean gradient,
#
# $$
# \begin{aligned}
# \hat F ={}& \underbrace{\sum_{c=1}^C \pi_c\,\delta_c\delta_c^\top}_{\text{between classes}} \\
# &{}+ \underbrace{\sum_{c=1}^C \frac{\pi_c}{N_c}\sum_{i: y_i = c}
#   (g_i-\delta_c)(g_i-\delta_c)^\top}_{\text{within classes}} .
# \end{aligned}
# $$ (eq-ch5-split)
#
# (Expand $g_i = \delta_c + (g_i - \delta_c)$; the cross terms vanish because the deviations
# average to zero within each class.) The per-example logit gradient is $p_i - e_{y_i}$,
# which depends strongly on the label: examples of one class push the logits in a similar
# direction, so the class means $\delta_c$ are large compared with the spread around them
# whenever the network's features are shared within a class. The first term then contributes
# $C$ large eigenvalues along $\operatorname{span}\{\delta_c\}$, the outliers, and the
# within-class term forms the bulk {cite}`papyan2019measurements,papyan2020traces`. For $D$
# the same decomposition holds with $\delta_c - \bar g$ in place of $\delta_c$, and
# $\sum_c \pi_c (\delta_c - \bar g) = 0$: $D$ has at most $C - 1$ between-class outliers.
# So does $\hat F$ at a stationary point ($\bar g = 0$). For the GGN the analogous argument
# is a heuristic rather than a bound: the softmax output matrix $A_i$ annihilates
# $\mathbf 1$ (shifting all logits together changes nothing), so in the $C$-dimensional
# logit space only $C - 1$ directions carry curvature, and the class-averaged Jacobians
# inherit one fewer independent direction. Whether $C$ or $C - 1$ outliers separate from the
# bulk is therefore an empirical question, which we check below with a largest-gap rule
# (the $k$ maximising $\lambda_k/\lambda_{k+1}$ among the top 15, counted only if that ratio
# is at least 1.5, {py:func}`~sgdnoise.spectral.count_outliers`), together
# with a direct test of the mechanism: the fraction of each matrix's top-$C$ eigenspace that
# lies in $\operatorname{span}\{\delta_c\}$.
#
# ## 5.3 Where the noise lives
#
# Mini-batch noise has covariance $D/B$ (chapter 1). For orthonormal directions
# $u_1,\dots,u_k$ the share of the noise energy along them is
#
# $$
# \phi_k = \frac{\sum_{j=1}^k u_j^\top D\,u_j}{\operatorname{tr}D}.
# $$ (eq-ch5-energy)
#
# For a uniformly random $k$-subspace of $\mathbb R^P$, $\mathbb E[\phi_k] = k/P$, because
# $\mathbb E[uu^\top] = I/P$ for a uniform unit vector. That baseline is too easy to beat:
# $D$ lives in $\operatorname{span}\{g_1,\dots,g_N\}$, a space of dimension
# $r = \operatorname{rank} G \le N$, and any subspace that merely lies in that span already
# does better. For $U = QR$ with $Q\in\mathbb R^{P\times r}$ an orthonormal basis of the span
# and $R$ a uniformly random $r\times k$ matrix with orthonormal columns,
# $\mathbb E[UU^\top] = \tfrac kr QQ^\top$ and
#
# $$
# \mathbb E[\phi_k] = \frac kr\,\frac{\operatorname{tr}(Q^\top D Q)}{\operatorname{tr}D}
# = \frac kr ,
# $$ (eq-ch5-span)
#
# larger than $k/P$ by the factor $P/r \ge P/N$. The largest possible value of $\phi_k$ is
# the sum of the $k$ largest eigenvalues of $D$ over its trace (Ky Fan). We evaluate
# {eq}`eq-ch5-energy` with the top Hessian eigenvectors $u_j$ (Lanczos) and products with
# $D$, and compare with both baselines and the optimum: the noise "lives in the curved
# directions" only if $\phi_k$ is well above $k/r$, the share of a random direction the
# gradients can reach.

# %% [markdown]
# ## 5.4 The models and the data
#
# A stratified subset of the training set, average-pooled to a few pixels per side (so
# that per-example gradients and many curvature products stay cheap on a CPU), and two
# float64 networks: a one-hidden-layer MLP and a three-block CNN without normalisation.
# Each is trained by plain SGD until it fits its subset or an epoch budget runs out. We
# analyse each at initialisation and after training.

# %% tags=["remove-input"]
runs = ch5.build_runs(P)
identity = runs["mlp"]["prob"].identity
LABEL = source_label(profile, identity)
SCALE = scale_label(profile, identity)
display(Markdown(
    f"Images pooled to {P.image_size} × {P.image_size} pixels; training stops at a train "
    f"error of {P.target_error:g} or after {P.max_epochs} epochs (batch size "
    f"{P.batch_size}; learning rate {P.mlp_lr:g} for the MLP, {P.cnn_lr:g} for the CNN). "
    "The table gives each network's examples, parameters and their ratio."))
display(pd.DataFrame([{"model": k.upper(), "examples N": v["N"], "parameters P": v["P"],
                       "P/N": v["P"] / v["N"]} for k, v in runs.items()])
        .style.format({"P/N": "{:.1f}", "parameters P": "{:,}"}).hide(axis="index"))

# %% tags=["remove-input"]
studies = ch5.run_studies(P, runs, progress=lambda it: tqdm(it, desc="models"))
display(Markdown("Where training stopped (train loss and error on the whole subset):"))
display(pd.DataFrame([{"model": k.upper(), "epochs": int(v["history"].epoch.iloc[-1]),
                       "final train loss (nats)": v["history"].train_loss.iloc[-1],
                       "final train error": v["history"].train_error.iloc[-1]}
                      for k, v in runs.items()])
        .style.format({"final train loss (nats)": "{:.4f}", "final train error": "{:.3f}"})
        .hide(axis="index"))

# %% [markdown]
# (sec-ch5-rank)=
# ## 5.5 Rank of F̂: the Gram spectrum
#
# The first table lists, for each model and state, $N$, $P$, the numerical ranks of $\hat F$
# and $D$ ({py:func}`~sgdnoise.spectral.numerical_rank`), $\|\bar g\|^2$ and
# $\operatorname{tr} D$; the second the largest-gap outlier count of each matrix, where "not
# computed" marks the Hessian and GGN of the CNN at initialisation when the profile skips
# them.

# %% tags=["remove-input"]
summary = pd.DataFrame([{"model": m.upper(), "state": s, **st.summary()} for (m, s), st in
                        studies.items()])
summary = summary.rename(columns={"‖ḡ‖²": tex_html(r"\lVert\bar g\rVert^2"),
                                  "tr D": tex_html(r"\operatorname{tr} D"),
                                  "rank F̂": "rank " + tex_html(r"\hat F")})
outliers = {c: c.removeprefix("outliers ") for c in summary.columns if c.startswith("outliers")}
display(summary.drop(columns=list(outliers))  # two tables: one would not fit the column
        .style.format({"P/N": "{:.1f}", "P": "{:,}"}, precision=4, na_rep="not computed")
        .hide(axis="index"))
display(summary[["model", "state", *outliers]].rename(columns=outliers)
        .style.format("{:.0f}", subset=list(outliers.values()), na_rep="not computed")
        .set_caption("Outliers above the largest gap of each matrix's spectrum")
        .hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: every curve stops at index N, the rank bound; beyond it the spectrum of $\\hat F$ is exactly zero. The N non-zero eigenvalues of the empirical Fisher $\\hat F$ (eigenvalues of the Gram matrix $GG^\\top/N$) for each model and state. Computed by {py:func}`sgdnoise.covariance.gram_spectrum`.", "name": "fig-ch5-gram"}, "image": {"alt": "Semi-log plot of the non-zero eigenvalues of the empirical Fisher against their index for the MLP and the CNN at initialisation and after training, each curve ending at its number of examples."}}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (m, s), st in studies.items():
    ev = st.gram_fisher.numpy()
    ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-30), label=f"{m.upper()}, {s}",
                color=color_of("train") if s == "trained" else color_of("gd"),
                ls=MODEL_STYLE[m])
ax.set(xlabel="index j", ylabel=r"eigenvalue $\lambda_j$ of $GG^\top/N$",
       title=f"Non-zero spectrum of $\\hat F$\n{LABEL}")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
plt.show()

# %% tags=["remove-input"]
verdicts = {}
verdicts["rank"] = ch5.verdict_rank(
    [ch5.RankRow(f"{m.upper()} {s}", st.n, st.p, st.rank_fisher, st.rank_cov)
     for (m, s), st in studies.items()], scale=SCALE)
display(Markdown(f"**{verdicts['rank'].outcome}**: {verdicts['rank'].sentence}"))

# %% [markdown]
# A numerical rank equal to $N$ (rather than less) says the $N$ per-example gradients are
# linearly independent.
#
# (sec-ch5-density)=
# ## 5.6 Spectral densities of the Hessian and the Fisher
#
# Stochastic Lanczos quadrature (SLQ) {cite}`ubaru2017fast`
# ({py:func}`sgdnoise.spectral.spectral_density`) estimates a spectral density from a few
# Lanczos runs started at random probe vectors, averaged as in Hutchinson's trace estimator
# {cite}`hutchinson1989stochastic`; {cite}`ghorbani2019investigation` and
# {cite}`yao2020pyhessian` apply it to network Hessians. The densities are
# Gaussian-smoothed and drawn on a log scale; the ticks on top mark the top Lanczos
# eigenvalues of the Hessian.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: each density is a tall peak at zero with a thin tail of large eigenvalues. SLQ spectral densities (log scale) of the Hessian, the GGN (equal to the true Fisher here) and the empirical Fisher of each trained network; ticks at the top mark the top Lanczos eigenvalues of the Hessian. Computed by {py:func}`sgdnoise.chapters.ch05_overparam.overparam_study`.", "name": "fig-ch5-density"}, "image": {"alt": "Two panels, MLP and CNN after training: log-scale spectral densities of three curvature matrices against the eigenvalue, each concentrated at zero with a few large eigenvalues marked by ticks."}}
trained = {m: studies[(m, "trained")] for m in runs}
fig, axes = plt.subplots(2, 1, figsize=(6.8, 6.2), sharex=False)
for ax, (m, st) in zip(axes, trained.items(), strict=True):
    for name, d in st.densities.items():
        ax.semilogy(d.grid.numpy(), np.maximum(d.density.numpy(), 1e-8), label=name, lw=1.2,
                    color=MATRIX_COLOURS[name])
    for v in st.hessian_top.numpy():
        ax.axvline(v, ymin=0.95, ymax=1.0, color="k", lw=0.8)
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)", ylim=(1e-6, None),
           title=f"{m.upper()} after training (P = {st.p:,}, N = {st.n})")
axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle(LABEL)
plt.tight_layout()
plt.show()

# %% tags=["remove-input"]
display(Markdown(
    "The most negative curvature SLQ finds in each trained Hessian, as a fraction of its "
    "largest eigenvalue (a lower bound on $\\lvert\\lambda_{\\min}\\rvert/\\lambda_{\\max}$; "
    "chapter 7 uses this ratio): "
    + "; ".join(f"{m.upper()} {st.negative_ratio:.2g}" for m, st in trained.items()) + "."))

# %% [markdown]
# The next table gives the fraction of spectral mass with $|\lambda| \le \mathrm{rtol}\cdot
# \lambda_{\max}$ from the SLQ quadrature weights ("exact" rows use the Gram spectrum of
# $\hat F$). A Gauss rule with $m$ nodes cannot split mass more finely than its node
# spacing: the near-zero eigenvalues show up as one node near 0 whose weight is their share
# and whose position is their centre of mass. The table after it lists that node for each
# matrix (weight, and $|\text{position}|/\lambda_{\max}$); when the position exceeds rtol,
# the rtol window misses the cluster and its fraction understates the flat part.

# %% tags=["remove-input"]
nz = pd.concat([st.near_zero.assign(model=m.upper()) for m, st in trained.items()])
nz_table = nz.pivot_table(index=["model", "matrix"], columns="rtol", values="fraction (SLQ)")
nz_table.columns = ["share with " + tex_html(rf"\lvert\lambda\rvert \le {ch5.tex_number(c)}\,"
                                             r"\lambda_{\max}") for c in nz_table.columns]
POSITION = tex_html(r"\lvert\text{position}\rvert / \lambda_{\max}")
display(nz_table.reset_index().style.format(precision=3).hide(axis="index"))
zc = pd.concat([st.zero_cluster.assign(model=m.upper()) for m, st in trained.items()])
display(zc[["model", "matrix", "weight", "position"]]
        .rename(columns={"weight": "weight of the node nearest 0", "position": POSITION})
        .style.format({"weight of the node nearest 0": "{:.3f}", POSITION: "{:.1e}"})
        .hide(axis="index"))
verdicts["flat"] = ch5.verdict_flat_bulk(ch5.flat_rows(trained, P.flat_rtol),
                                         flat_rtol=P.flat_rtol,
                                         flat_fraction=P.flat_fraction, scale=SCALE)
display(Markdown(f"**{verdicts['flat'].outcome}**: {verdicts['flat'].sentence}"))

# %% [markdown]
# (sec-ch5-outliers)=
# ## 5.7 Outliers and the class structure

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: whether a drop separates the first $C - 1$ or $C$ eigenvalues (gray lines) from the rest. Top eigenvalues $\\lambda_j/\\lambda_1$ of the GGN, the empirical Fisher, the covariance $D$ and the Hessian of each network, at initialisation (dashed) and after training (solid). The CNN's Hessian and GGN at initialisation are drawn only when the profile computes them. Computed by {py:func}`sgdnoise.chapters.ch05_overparam.overparam_study`.", "name": "fig-ch5-outliers"}, "image": {"alt": "Two panels, MLP and CNN: the top sixteen eigenvalues of four curvature matrices divided by the largest, on a log scale, at initialisation and after training, with vertical lines at nine and ten."}}
fig, axes = plt.subplots(2, 1, figsize=(6.8, 6.4))
for ax, m in zip(axes, runs, strict=True):
    for s, ls in (("init", "--"), ("trained", "-")):
        st = studies[(m, s)]
        curves = [("GGN (= Fisher)", st.ggn_top), ("empirical Fisher", st.fisher_top),
                  ("covariance D", st.gram_cov[: P.top_k]), ("Hessian", st.hessian_top)]
        for name, ev in curves:
            if ev.numel():
                ev = ev.numpy()
                ax.semilogy(np.arange(1, len(ev) + 1), ev / ev[0], ls, marker=".",
                            color=MATRIX_COLOURS[name],
                            label=name if (m, s) == ("mlp", "trained") else None)
    ax.axvline(P.num_classes - 1, color="gray", lw=0.6)
    ax.axvline(P.num_classes, color="gray", lw=0.6)
    ax.set(xlabel="index j", ylabel=r"$\lambda_j / \lambda_1$",
           title=f"{m.upper()}: top eigenvalues (dashed: init, solid: trained)")
axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle(LABEL)
plt.tight_layout()
plt.show()

# %% [markdown]
# The first table is the largest-gap outlier count at the first training seed (the $k$
# maximising $\lambda_k/\lambda_{k+1}$ among the top 15, counted only when that ratio is at
# least 1.5; 0 means no such gap); the second is the share of each matrix's top-$C$
# eigenspace that lies in the span of the $C$ class-mean gradients
# ({py:func}`~sgdnoise.spectral.subspace_capture`; a random $C$-subspace would give $C/P$).
# "not computed" marks the CNN's Hessian and GGN at initialisation when the profile skips
# them. The gap count depends on where one spectrum happens to drop; the capture measures
# the class structure directly, so the claim below is decided on it, over all training
# seeds of section 5.9.

# %% tags=["remove-input"]
out, cap = ch5.outlier_evidence(studies)
for frame in (out, cap):
    frame["model"] = frame["model"].str.upper()
display(out.pivot_table(index=["model", "state"], columns="matrix", values="outliers")
        .reset_index().style.format("{:.0f}", na_rep="not computed",
                                    subset=sorted(set(out.matrix))).hide(axis="index"))
display(cap.pivot_table(index=["model", "state"], columns="matrix",
                        values="captured by class-mean span")
        .reset_index().style.format("{:.3f}", na_rep="not computed",
                                    subset=sorted(set(cap.matrix))).hide(axis="index"))

# %% [markdown]
# (sec-ch5-energy)=
# ## 5.8 Noise energy in the top Hessian eigenspace

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: how far the top-k Hessian curve (blue) lies above the random-in-span line (green), and how close it comes to the optimum (orange). Share $\\phi_k$ of the noise energy $\\operatorname{tr} D$ along the top-k Hessian eigenvectors, the best any k-dimensional subspace can do (the top eigenvectors of $D$), a random k-subspace of $\\operatorname{span}\\{g_i\\}$ ($k/\\operatorname{rank} G$) and a random k-subspace of $\\mathbb{R}^P$ ($k/P$), per model and state with a Hessian. Computed by {py:func}`sgdnoise.covariance.noise_energy_fraction`.", "name": "fig-ch5-energy"}, "image": {"alt": "Panels per model and state: the share of the noise energy against k on a log scale for the top Hessian eigenvectors, the optimum, a random subspace of the gradients' span and a random subspace of all parameters."}}
C = P.num_classes
items = [(k, v) for k, v in studies.items() if v.energy is not None]
ENERGY_STYLE = {"top-k Hessian eigenvectors": (color_of("sgd"), ".", "top-k Hessian eigenvectors"),
                "top-k eigenvectors of D (optimum)": (color_of("isotropic"), ".",
                                                      "optimum (top-k of D)"),
                "random k-subspace of span G (k/rank G)": (color_of("anisotropic"), None,
                                                            "random in span G"),
                "random k-subspace (k/P)": (color_of("gd"), None, r"random in $\mathbb{R}^P$")}
ncol = min(3, len(items))
nrow = -(-len(items) // ncol)
height = 3.2 * nrow + 1.0
fig, axes = plt.subplots(nrow, ncol, figsize=(6.4, height), sharey=True, squeeze=False)
for ax, ((m, s), st) in zip(axes.flat, items, strict=False):
    e = st.energy
    for col, (colour, marker, label) in ENERGY_STYLE.items():
        ax.semilogy(e["k"], e[col], marker=marker, color=colour, label=label)
    ax.set(xlabel="k", title=f"{m.upper()}, {s}")
for ax in list(axes.flat)[len(items):]:
    ax.set_visible(False)
for row in axes:
    row[0].set_ylabel("fraction of tr D")
handles, labels = axes.flat[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
fig.suptitle(f"Share of the noise energy along the top-k Hessian eigenvectors\n{LABEL}")
plt.tight_layout(rect=(0, 0.8 / height, 1, 1))
plt.show()

# %% [markdown]
# The table reads each panel at $k = C$: $\phi_k$, the optimum, the two baselines with the
# ratio of $\phi_k$ to each, and the mean of sampled random $k$-subspaces of the span
# (which should match $k/\operatorname{rank}G$, {eq}`eq-ch5-span`).

# %% tags=["remove-input"]
energy, _ = ch5.energy_table(studies, P.num_classes)
energy["model"] = energy["model"].str.upper()
span_cols = ["random k/rank G", "sampled k-subspaces of span G", "ratio to random in span G"]
for cols in ([c for c in energy.columns if c not in span_cols],  # two tables: one is too wide
             ["model", "state", "k", *span_cols]):
    display(energy[cols].style.format(
        {"ratio to random k/P": "{:,.0f}", "ratio to random in span G": "{:.2f}",
         "random k/P": "{:.2g}"}, subset=cols[3:], precision=3)
        .format_index(lambda c: c.replace("φ_k", tex_html(r"\phi_k")), axis="columns")
        .hide(axis="index"))

# %% [markdown]
# (sec-ch5-valley)=
# ## 5.9 Wide valleys, and the claims over training seeds
#
# "Most directions are flat" is a statement about second derivatives at one point. The
# essay's *wide valleys* say more: that the loss stays low at a finite distance along those
# directions. Take the trained parameters $\theta^*$ and a unit direction $v$, and follow
# the training loss along $\theta^* + t\,\|\theta^*\|\,v$. A *flat* direction is drawn at
# random and then projected off the span of the $N$ per-example gradients (the range of
# $\hat F$, so no example's loss changes to first order) and off the top Hessian
# eigenvectors ({py:func}`~sgdnoise.chapters.ch05_overparam.flat_directions`); the control
# is a uniformly random direction, which in $\mathbb R^P$ with $P \gg N$ is itself almost
# orthogonal to those few directions, so the comparison can fail: the flat directions are
# wider only if the few directions removed carry a real share of the curvature, or if the
# higher-order terms differ. The top Hessian eigenvectors give a sharp reference. A
# direction's *width* is the distance $t$ at which the loss has first risen by a fixed
# amount.
#
# The three claims about SGD of this chapter are decided over several training seeds (the
# same data subset, a new initialisation and batch order per seed), each seed repeating the
# training, the top Hessian eigenpairs, the class-mean capture, the noise share and the
# valley walk ({py:func}`~sgdnoise.chapters.ch05_overparam.seed_studies`).

# %% tags=["remove-input"]
records = ch5.seed_studies(P, runs, studies, progress=lambda it: tqdm(it, desc="seeds"))
n_seeds = 1 + len(P.extra_seeds)
display(Markdown(
    f"Here {n_seeds} training seeds per network, {P.valley_directions} directions of each "
    f"kind per walk, distances from {P.valley_min:g} to {P.valley_max:g} times "
    f"$\\lVert\\theta^*\\rVert$ ({P.valley_points} points), and a valley ends where the "
    f"loss has risen by {P.valley_rise:g} nats. The figure shows the first seed's walks."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: how far out the flat directions (solid) stay below the dotted line, compared with the random ones (dashed); the sharp directions rise at once. Training-loss rise along straight lines from the trained parameters, against the distance as a fraction of $\\lVert\\theta^*\\rVert$ (log scale), mean over directions of each kind, first training seed. Computed by {py:func}`sgdnoise.chapters.ch05_overparam.valley_walk`.", "name": "fig-ch5-valley"}, "image": {"alt": "Two panels, MLP and CNN: the rise of the training loss against the relative distance on log axes along flat, random and sharp directions, with a dotted horizontal line at the rise that ends a valley."}}
KIND_STYLE = {"flat": (color_of("anisotropic"), "-"), "random": (color_of("gd"), "--"),
              "sharp": (color_of("hessian"), ":")}
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.6), sharey=True, layout="constrained")
for ax, (m, r) in zip(axes, runs.items(), strict=True):
    vw = r["valley"]
    for kind, (c, ls) in KIND_STYLE.items():
        rise = np.maximum(vw.loss[kind] - vw.base_loss, 1e-6).mean(0)
        ax.loglog(vw.distances, rise, ls, color=c, marker=".", label=f"{kind} directions")
    ax.axhline(P.valley_rise, color="k", lw=0.8, ls=":")
    ax.set(xlabel=r"distance $t$ (fraction of $\Vert\theta^*\Vert$)", title=m.upper(),
           ylim=(1e-4, None))
axes[0].set_ylabel("rise of the training loss (nats)")
fig.suptitle(LABEL)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
plt.show()

# %% tags=["remove-input"]
vals = ch5.claim_values(records)
cap_labels, cap_values = vals["capture"]
conc_labels, conc_values = vals["concentration"]
val_labels, val_values = ch5.valley_values(records, P.valley_rise)
counts = out[out.state == "trained"]
n_c = int(counts.outliers.isin([P.num_classes - 1, P.num_classes]).sum())
verdicts["capture"] = ch5.verdict_capture(
    cap_values, cap_labels, capture_min=P.capture_min, alpha=P.alpha, scale=SCALE,
    counts=(f"At the first seed the largest-gap count is $C - 1$ or $C$ in {n_c} of "
            f"{len(counts)} trained spectra."),
    rates=ch5.seed_rates(cap_values, P.capture_min, effect=P.capture_effect, alpha=P.alpha,
                         n_sim=P.rate_sims, seed=P.seed, unit="of capture"))
verdicts["concentration"] = ch5.verdict_concentration(
    conc_values, conc_labels, concentration_min=P.concentration_min, alpha=P.alpha,
    scale=SCALE, rates=ch5.seed_rates(conc_values, math.log(P.concentration_min),
                                      effect=P.ratio_effect, alpha=P.alpha,
                                      n_sim=P.rate_sims, seed=P.seed, unit="in log ratio"))
verdicts["valley"] = ch5.verdict_valley(
    val_values, val_labels, rise=P.valley_rise, ratio_min=P.valley_ratio_min, alpha=P.alpha,
    scale=SCALE, rates=ch5.seed_rates(val_values, math.log(P.valley_ratio_min),
                                      effect=P.ratio_effect, alpha=P.alpha,
                                      n_sim=P.rate_sims, seed=P.seed, unit="in log ratio"))
display(Markdown(
    f"Thresholds: a top-$C$ eigenspace counts as organised by the classes when more than "
    f"{P.capture_min:.0%} of it lies in the class-mean span; the noise counts as concentrated "
    f"when its share along the top-$C$ Hessian directions is at least "
    f"{P.concentration_min:g} times that of a random $C$-subspace of the gradients' span; a "
    f"valley counts as wider when it reaches at least {P.valley_ratio_min:g} times as far. "
    f"Tests at level {P.alpha:g}; power is measured {P.capture_effect:g} above the capture "
    f"threshold and {P.ratio_effect:g} above the others on the log scale."))
for key in ("capture", "concentration", "valley"):
    display(Markdown(f"**{verdicts[key].outcome}**: {verdicts[key].sentence}"))

# %% [markdown]
# (sec-ch5-verdicts)=
# ## What the numbers say
#
# Each row is one claim of the essay this chapter tests, with the verdict computed from the
# numbers above by the chapter's verdict functions
# ({py:func}`~sgdnoise.chapters.ch05_overparam.verdict_rank`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_flat_bulk`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_capture`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_concentration`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_valley`). For a claim about SGD the
# false-positive rate is how often its rule says "supported" when one item sits exactly at
# its threshold, and the power how often it does when every item lies the stated effect
# above it, both measured by simulating the rule with the seed-to-seed spread measured
# here. The chapter also draws on {cite}`gurari2018gradient`: training itself happens in a
# tiny subspace.

# %% tags=["remove-input"]
show_verdicts("ch05_overparam", list(verdicts.values()))

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
