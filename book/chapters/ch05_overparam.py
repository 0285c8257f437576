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
# and asks where the mini-batch noise lives relative to the curved directions.

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
outlier_share = 0.5
capture_min = 0.5
concentration_min = 2.0

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from sgdnoise.chapters import ch05_overparam as ch5
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, scale_label, show_verdicts, tex_html

P = ch5.Params.from_namespace(globals())
clock = Stopwatch()
use_style()

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
# Gauss-Newton matrix (equal to the true Fisher, chapter 2) is
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
# A stratified subset of the training set, average-pooled to `image_size`² pixels (so that
# per-example gradients and many curvature products stay cheap on a CPU), and two float64
# networks: a one-hidden-layer MLP and a three-block CNN without normalisation. Each is
# trained by plain SGD until it fits its subset (`target_error`) or `max_epochs` pass. We
# analyse each at initialisation and after training.

# %%
runs = ch5.build_runs(P)
identity = runs["mlp"]["prob"].identity
LABEL = source_label(profile, identity)
SCALE = scale_label(profile, identity)
(pd.DataFrame([{"model": k, "N (examples)": v["N"], "P (parameters)": v["P"],
               "P/N": v["P"] / v["N"]} for k, v in runs.items()])
 .style.format({"P/N": "{:.1f}"}).hide(axis="index"))

# %%
studies = ch5.run_studies(P, runs, progress=lambda it: tqdm(it, desc="models"))
train_table = pd.DataFrame([{"model": k, "epochs": int(v["history"].epoch.iloc[-1]),
                             "final train loss (nats)": v["history"].train_loss.iloc[-1],
                             "final train error (fraction)":
                                 v["history"].train_error.iloc[-1]}
                            for k, v in runs.items()])
train_table.style.format(precision=4).hide(axis="index")

# %% [markdown]
# (sec-ch5-rank)=
# ## 5.5 Rank of F̂: the Gram spectrum
#
# The table lists, for each model and state, $N$, $P$, the numerical ranks of $\hat F$ and
# $D$ ({py:func}`~sgdnoise.spectral.numerical_rank`), $\|\bar g\|^2$,
# $\operatorname{tr} D$ and the largest-gap outlier count of each matrix; "not computed"
# marks the Hessian and GGN of the CNN at initialisation, which this profile skips
# (`cnn_init_curvature`).

# %%
summary = pd.DataFrame([{"model": m, "state": s, **st.summary()} for (m, s), st in
                        studies.items()])
display(summary.style.format(precision=4, na_rep="not computed")
        .format({c: "{:.0f}" for c in summary.columns if c.startswith("outliers")},
                na_rep="not computed")
        .format({"P/N": "{:.1f}"}).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The N non-zero eigenvalues of the empirical Fisher $\\hat F$ (eigenvalues of the Gram matrix $GG^\\top/N$) for each model and state; all other P − N eigenvalues are exactly zero. Laptop run at the profile in the provenance table; computed by {py:func}`sgdnoise.covariance.gram_spectrum`.", "name": "fig-ch5-gram"}}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (m, s), st in studies.items():
    ev = st.gram_fisher.numpy()
    ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-30), label=f"{m}, {s}",
                color="C0" if m == "mlp" else "C1", ls="--" if s == "init" else "-")
ax.set(xlabel="index j", ylabel=r"eigenvalue $\lambda_j$ of $GG^\top/N$",
       title=f"Non-zero spectrum of $\\hat F$\n{LABEL}")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
plt.show()

# %%
verdicts = {}
verdicts["rank"] = ch5.verdict_rank(
    [ch5.RankRow(f"{m}/{s}", st.n, st.p, st.rank_fisher, st.rank_cov)
     for (m, s), st in studies.items()], scale=SCALE)
display(Markdown(verdicts["rank"].sentence))

# %% [markdown]
# The curves end at $j = N$: past that index the spectrum of $\hat F$ is identically zero.
# A numerical rank equal to $N$ (rather than less) says the $N$ per-example gradients are
# linearly independent.
#
# (sec-ch5-density)=
# ## 5.6 Spectral densities of the Hessian and the Fisher
#
# Stochastic Lanczos quadrature {cite}`ubaru2017fast` (`sgdnoise.spectral.spectral_density`):
# Lanczos runs from random probe vectors, averaged as in Hutchinson's trace estimator
# {cite}`hutchinson1989stochastic`, the method that {cite}`ghorbani2019investigation` and
# {cite}`yao2020pyhessian` apply to network Hessians. Gaussian-smoothed,
# on a log scale for the density; the ticks on top mark the top-k Lanczos eigenvalues of the
# Hessian.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "SLQ spectral densities (log scale) of the Hessian, the GGN (= true Fisher) and the empirical Fisher of each trained network; ticks at the top mark the top Lanczos eigenvalues of the Hessian. Laptop run at the profile in the provenance table; computed by {py:func}`sgdnoise.chapters.ch05_overparam.overparam_study`.", "name": "fig-ch5-density"}}
trained = {m: studies[(m, "trained")] for m in runs}
MATRIX_COLOURS = {"Hessian": "C4", "GGN (= Fisher)": "C0", "empirical Fisher": "C1",
                  "covariance D": "C2"}
fig, axes = plt.subplots(2, 1, figsize=(6.8, 6.2), sharex=False)
for ax, (m, st) in zip(axes, trained.items(), strict=True):
    for name, d in st.densities.items():
        ax.semilogy(d.grid.numpy(), np.maximum(d.density.numpy(), 1e-8), label=name, lw=1.2,
                    color=MATRIX_COLOURS[name])
    for v in st.hessian_top.numpy():
        ax.axvline(v, ymin=0.95, ymax=1.0, color="k", lw=0.8)
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)", ylim=(1e-6, None),
           title=f"{m.upper()} after training (P={st.p}, N={st.n})")
axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle(LABEL)
plt.tight_layout()
plt.show()

# %% [markdown]
# The table gives the fraction of spectral mass with $|\lambda| \le \mathrm{rtol}\cdot
# \lambda_{\max}$ from the SLQ quadrature weights ("exact" rows use the Gram spectrum of
# $\hat F$). A Gauss rule with $m$ nodes cannot split mass more finely than its node
# spacing: the near-zero eigenvalues show up as one node near 0 whose weight is their share
# and whose position is their centre of mass. The second table lists that node for each
# matrix (weight, and $|\text{position}|/\lambda_{\max}$); when the position exceeds rtol,
# the rtol window misses the cluster and its fraction understates the flat part.

# %%
nz = pd.concat([st.near_zero.assign(model=m) for m, st in trained.items()])
nz_table = nz.pivot_table(index=["model", "matrix"], columns="rtol", values="fraction (SLQ)")
nz_table.columns = ["share with " + tex_html(rf"\lvert\lambda\rvert \le {ch5.tex_number(c)}\,"
                                             r"\lambda_{\max}") for c in nz_table.columns]
POSITION = tex_html(r"\lvert\text{position}\rvert / \lambda_{\max}")
display(nz_table.reset_index().style.format(precision=3).hide(axis="index"))
zc = pd.concat([st.zero_cluster.assign(model=m) for m, st in trained.items()])
display(zc[["model", "matrix", "weight", "position"]]
        .rename(columns={"weight": "weight of the node nearest 0", "position": POSITION})
        .style.format({"weight of the node nearest 0": "{:.3f}", POSITION: "{:.1e}"})
        .hide(axis="index"))
verdicts["flat"] = ch5.verdict_flat_bulk(ch5.flat_rows(trained, P.flat_rtol),
                                         flat_rtol=P.flat_rtol,
                                         flat_fraction=P.flat_fraction, scale=SCALE)
display(Markdown(verdicts["flat"].sentence))

# %% [markdown]
# (sec-ch5-outliers)=
# ## 5.7 Outliers and the class structure

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Top eigenvalues $\\lambda_j/\\lambda_1$ of the GGN, the empirical Fisher, the covariance $D$ and the Hessian of each network, at initialisation (dashed) and after training (solid); gray lines at $j = C - 1$ and $j = C$. The CNN's Hessian and GGN at initialisation are drawn only when the profile computes them. Laptop run at the profile in the provenance table; computed by {py:func}`sgdnoise.chapters.ch05_overparam.overparam_study`.", "name": "fig-ch5-outliers"}}
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
# The first table is the largest-gap outlier count (0 = no gap of at least 1.5 among the top
# 15); the second is the share of each matrix's top-$C$ eigenspace that lies in the span of
# the $C$ class-mean gradients ({py:func}`~sgdnoise.spectral.subspace_capture`;
# a random $C$-subspace would give $C/P$). "not computed" marks the CNN's Hessian and GGN at
# initialisation when the profile skips them.

# %%
out, cap = ch5.outlier_evidence(studies)
display(out.pivot_table(index=["model", "state"], columns="matrix", values="outliers")
        .reset_index().style.format("{:.0f}", na_rep="not computed",
                                    subset=sorted(set(out.matrix))).hide(axis="index"))
display(cap.pivot_table(index=["model", "state"], columns="matrix",
                        values="captured by class-mean span")
        .reset_index().style.format("{:.3f}", na_rep="not computed",
                                    subset=sorted(set(cap.matrix))).hide(axis="index"))
verdicts["outliers"] = ch5.verdict_outliers(
    out["outliers"].tolist(), cap["captured by class-mean span"].tolist(),
    num_classes=P.num_classes, outlier_share=P.outlier_share, capture_min=P.capture_min,
    random_capture=P.num_classes / runs["cnn"]["P"], scale=SCALE)
display(Markdown(verdicts["outliers"].sentence))

# %% [markdown]
# A gap may be clean at initialisation and for the gradient-based matrices and fade after
# the networks fit their subsets, where the top of the spectrum can decay more gradually;
# the class-mean capture measures the class structure independently of any gap rule
# {cite}`papyan2020traces`.
#
# (sec-ch5-energy)=
# ## 5.8 Noise energy in the top Hessian eigenspace

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Share $\\phi_k$ of the noise energy $\\operatorname{tr} D$ along the top-k Hessian eigenvectors (blue), the best any k-dimensional subspace can do (orange, the top eigenvectors of $D$), a random k-subspace of $\\operatorname{span}\\{g_i\\}$ ($k/\\operatorname{rank} G$, green) and a random k-subspace of $\\mathbb{R}^P$ ($k/P$, gray), per model and state with a Hessian. Laptop run at the profile in the provenance table; computed by {py:func}`sgdnoise.covariance.noise_energy_fraction`.", "name": "fig-ch5-energy"}}
C = P.num_classes
items = [(k, v) for k, v in studies.items() if v.energy is not None]
ENERGY_STYLE = {"top-k Hessian eigenvectors": ("C0", ".", "top-k Hessian eigenvectors"),
                "top-k eigenvectors of D (optimum)": ("C1", ".", "optimum (top-k of D)"),
                "random k-subspace of span G (k/rank G)": ("C2", None, "random in span G"),
                "random k-subspace (k/P)": ("C7", None, r"random in $\mathbb{R}^P$")}
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
# ratio of $\phi_k$ to each, and the mean of `span_draws` sampled random $k$-subspaces of
# the span (which should match $k/\operatorname{rank}G$, {eq}`eq-ch5-span`).

# %%
energy, energy_rows = ch5.energy_table(studies, P.num_classes)
display(energy.style.format(precision=4).format(
    {"ratio to random k/P": "{:.1f}", "ratio to random in span G": "{:.2f}"})
    .format_index(lambda c: c.replace("φ_k", tex_html(r"\phi_k")), axis="columns")
    .hide(axis="index"))
verdicts["energy"] = ch5.verdict_noise_concentration(
    energy_rows, concentration_min=P.concentration_min, scale=SCALE)
display(Markdown(verdicts["energy"].sentence))

# %% [markdown]
# (sec-ch5-verdicts)=
# ## What the numbers say
#
# Each row is one claim of the essay this chapter tests, with the verdict computed from the
# numbers above by the chapter's verdict functions
# ({py:func}`~sgdnoise.chapters.ch05_overparam.verdict_rank`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_flat_bulk`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_outliers`,
# {py:func}`~sgdnoise.chapters.ch05_overparam.verdict_noise_concentration`). Thresholds are
# parameters of the chapter: an eigenvalue counts as near zero within `flat_rtol`$\,\lambda_{\max}$ and
# "most" means at least `flat_fraction` of the spectrum; "about one outlier per class" needs
# a share `outlier_share` of the spectra to show $C - 1$ or $C$ outliers, with a class-mean
# capture of at least `capture_min` as the weaker, mechanism-only outcome; "concentrated"
# means $\phi_C$ at least `concentration_min` times the share $C/\operatorname{rank}G$ of a
# random subspace of the gradients' span. The values used are in the provenance table. The
# chapter also draws on {cite}`gurari2018gradient`: training itself happens in a tiny
# subspace.

# %%
show_verdicts("ch05_overparam", list(verdicts.values()))

# %%
display(Markdown(provenance_markdown(profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
