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

# %% tags=["parameters"]
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

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from sgdnoise import landscape as L
from sgdnoise.grads import num_params
from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown
from sgdnoise.studies import build_small_model, load_small_problem

SPEC = {
    "profile": Param("str", choices=("smoke", "default", "full")),
    "dataset": Param("str", choices=("cifar10", "synthetic")),
    "seed": Param("int", low=0),
    "image_size": Param("int", choices=(4, 8, 16, 32)),
    "num_classes": Param("int", choices=(10,)),
    "mlp_n": Param("int", low=20),
    "mlp_width": Param("int", low=1),
    "mlp_lr": Param("float", low=1e-6),
    "cnn_n": Param("int", low=20),
    "cnn_width": Param("int", low=1),
    "cnn_lr": Param("float", low=1e-6),
    "batch_size": Param("int", low=1),
    "max_epochs": Param("int", low=1),
    "target_error": Param("float", low=0.0, high=1.0),
    "top_k": Param("int", low=11),
    "lanczos_iters": Param("int", low=11),
    "slq_probes": Param("int", low=1),
    "slq_iters": Param("int", low=5),
    "cnn_init_curvature": Param("bool"),
}
P = validate(
    dict(profile=profile, dataset=dataset, seed=seed, image_size=image_size,
         num_classes=num_classes, mlp_n=mlp_n, mlp_width=mlp_width, mlp_lr=mlp_lr, cnn_n=cnn_n,
         cnn_width=cnn_width, cnn_lr=cnn_lr, batch_size=batch_size, max_epochs=max_epochs,
         target_error=target_error, top_k=top_k, lanczos_iters=lanczos_iters,
         slq_probes=slq_probes, slq_iters=slq_iters, cnn_init_curvature=cnn_init_curvature),
    SPEC,
)
if P["batch_size"] > min(P["mlp_n"], P["cnn_n"]):
    raise ValueError(f"parameter 'batch_size' must be <= mlp_n and cnn_n, got {batch_size}")
if P["top_k"] > min(P["mlp_n"], P["cnn_n"]):
    raise ValueError(f"parameter 'top_k' must be <= mlp_n and cnn_n, got {top_k}")
clock = Stopwatch()
use_style()

# %% [markdown]
# ## 5.1 Three rank bounds
#
# Write the per-example gradients as the rows of $G \in \mathbb{R}^{N\times P}$, so that
#
# $$
# \hat F = \frac1N \sum_{i=1}^N g_i g_i^\top = \frac1N G^\top G, \qquad
# D = \hat F - \bar g \bar g^\top = \frac1N \tilde G^\top \tilde G,\quad
# \tilde G = G - \mathbf 1 \bar g^\top .
# $$ (eq-ch5-fhat)
#
# **Proposition 1.** $\operatorname{rank}\hat F \le N$ and $\operatorname{rank} D \le N-1$.
# Moreover the non-zero eigenvalues of $\hat F$ are those of the $N\times N$ Gram matrix
# $K = GG^\top/N$.
#
# *Proof.* $\hat F$ is a sum of N rank-one matrices, so its rank is at most N. The rows of
# $\tilde G$ sum to zero, so they span a space of dimension at most N − 1. For the spectra:
# if $Kw = \lambda w$ with $\lambda \neq 0$, put $u = G^\top w$; then
# $\hat F u = G^\top G G^\top w / N = G^\top K w = \lambda u$ and $u \ne 0$ (since
# $Gu = N\lambda w \neq 0$); the map $w\mapsto G^\top w$ is injective on the eigenspaces of
# non-zero eigenvalues and the same argument runs backwards from $\hat F$ to K. ∎
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
# *Proof.* $A_i = \operatorname{diag}p_i - p_ip_i^\top$ satisfies $A_i\mathbf 1 = p_i - p_i
# (\mathbf 1^\top p_i) = 0$, so $\operatorname{rank}A_i \le C-1$ and each term
# $J_i^\top A_i J_i$ has rank at most C − 1; a sum of N of them has rank at most N(C − 1). ∎
#
# The Hessian is $H = \mathrm{GGN} + \frac1N\sum_i\sum_c (p_{ic} - [y_i = c])\,\nabla^2_\theta
# f_{ic}$. The second term carries the residuals $p_i - e_{y_i}$, which shrink as the network
# fits the training set; at (near) interpolation $H \approx \mathrm{GGN}$, so at least a
# fraction $1 - N(C-1)/P$ of the Hessian's eigenvalues are (near) zero as well. **When P ≫
# N most directions are flat**: moving along them changes neither the outputs on the
# training set to first order ($J_i v = 0$ for all i gives $\mathrm{GGN}\,v = 0$) nor the
# per-example gradients' projections ($Gv = 0$ gives $\hat F v = 0$).
#
# ## 5.2 Why about one outlier per class
#
# Split $\hat F$ over classes. With $\pi_c$ the fraction of examples in class c and
# $\delta_c$ the mean gradient of class c,
#
# $$
# \hat F = \underbrace{\sum_{c=1}^C \pi_c\,\delta_c\delta_c^\top}_{\text{between classes}}
# \;+\; \underbrace{\sum_{c=1}^C \frac{\pi_c}{N_c}\sum_{i: y_i = c}
#   (g_i-\delta_c)(g_i-\delta_c)^\top}_{\text{within classes}} .
# $$ (eq-ch5-split)
#
# (Expand $g_i = \delta_c + (g_i - \delta_c)$; the cross terms vanish because the deviations
# average to zero within each class.) The per-example logit gradient is $p_i - e_{y_i}$,
# which depends strongly on the label: examples of one class push the logits in a similar
# direction, so the class means $\delta_c$ are large compared with the spread around them
# whenever the network's features are shared within a class. The first term then contributes
# C large eigenvalues along span$\{\delta_c\}$, the outliers, and the within-class term forms
# the bulk {cite}`papyan2019measurements,papyan2020traces`. For D the same decomposition
# holds with $\delta_c - \bar g$ in place of $\delta_c$, and
# $\sum_c \pi_c (\delta_c - \bar g) = 0$: **D has at most C − 1 between-class outliers**.
# So does $\hat F$ at a stationary point ($\bar g = 0$). For the GGN the analogous argument
# is a heuristic rather than a bound: the softmax output matrix $A_i$ annihilates
# $\mathbf 1$ (shifting all logits together changes nothing), so in the C-dimensional logit
# space only C − 1 directions carry curvature, and the class-averaged Jacobians inherit one
# fewer independent direction. Whether C or C − 1
# outliers separate from the bulk is therefore an empirical question, which we check below
# with a largest-gap rule (the k maximising $\lambda_k/\lambda_{k+1}$ among the top 15,
# counted only if that ratio is ≥ 1.5), together with a direct test of the mechanism: the
# fraction of each matrix's top-C eigenspace that lies in span$\{\delta_c\}$.
#
# ## 5.3 Where the noise lives
#
# Mini-batch noise has covariance D/B (chapter 1). For orthonormal directions
# $u_1,\dots,u_k$ the share of the noise energy along them is
#
# $$
# \phi_k = \frac{\sum_{j=1}^k u_j^\top D\,u_j}{\operatorname{tr}D},
# \qquad \mathbb E[\phi_k] = \frac kP \ \text{ for a uniformly random k-subspace},
# $$ (eq-ch5-energy)
#
# because $\mathbb E[uu^\top] = I/P$ for a uniform unit vector. The largest possible value is
# the sum of the k largest eigenvalues of D over its trace (Ky Fan). We evaluate
# {eq}`eq-ch5-energy` with the top Hessian eigenvectors $u_j$ (Lanczos) and products
# with D from `CovarianceOperator`: if the noise "lives in the curved directions", $\phi_k$
# should be far above k/P and close to the optimum.

# %% [markdown]
# ## 5.4 The models and the data
#
# A stratified subset of the training set, average-pooled to `image_size`² pixels (so that
# per-example gradients and many curvature products stay cheap on a CPU), and two float64
# networks: a one-hidden-layer MLP and a three-block CNN without normalisation. Each is
# trained by plain SGD until it fits its subset (`target_error`) or `max_epochs` pass. We
# analyse each at initialisation and after training.

# %%
runs = {}
for name, n, width in (("mlp", P["mlp_n"], P["mlp_width"]),
                       ("cnn", P["cnn_n"], P["cnn_width"])):
    prob = load_small_problem(P["dataset"], n, image_size=P["image_size"], seed=P["seed"])
    model = build_small_model(name, prob.in_shape, width=width, seed=P["seed"])
    runs[name] = {"prob": prob, "model": model, "P": num_params(model), "N": n}
identity = runs["mlp"]["prob"].identity
LABEL = source_label(profile, identity)
pd.DataFrame([{"model": k, "N": v["N"], "P": v["P"], "P/N": v["P"] / v["N"]}
              for k, v in runs.items()])

# %%
studies = {}
kw = dict(num_classes=P["num_classes"], top_k=P["top_k"], lanczos_iters=P["lanczos_iters"],
          slq_probes=P["slq_probes"], slq_iters=P["slq_iters"], seed=P["seed"])
for name, r in tqdm(list(runs.items()), desc="models"):
    curv_init = name == "mlp" or P["cnn_init_curvature"]
    studies[(name, "init")] = L.overparam_study(r["model"], r["prob"].x, r["prob"].y,
                                                curvature=curv_init, **kw)
    r["history"] = L.train_to_interpolation(
        r["model"], r["prob"].x, r["prob"].y, lr=P[f"{name}_lr"], batch_size=P["batch_size"],
        max_epochs=P["max_epochs"], target_error=P["target_error"], seed=P["seed"])
    studies[(name, "trained")] = L.overparam_study(r["model"], r["prob"].x, r["prob"].y, **kw)
train_table = pd.DataFrame([{"model": k, "epochs": int(v["history"].epoch.iloc[-1]),
                             "final train loss": v["history"].train_loss.iloc[-1],
                             "final train error": v["history"].train_error.iloc[-1]}
                            for k, v in runs.items()])
train_table

# %% [markdown]
# ## 5.5 Rank of F̂: the Gram spectrum

# %%
summary = pd.DataFrame([{"model": m, "state": s, **st.summary()} for (m, s), st in
                        studies.items()])
display(summary)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (m, s), st in studies.items():
    ev = st.gram_fisher.numpy()
    ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-30), label=f"{m}, {s}")
ax.set(xlabel="index j", ylabel="eigenvalue λ_j of GGᵀ/N",
       title=f"Non-zero spectrum of F̂ (all others are 0)\n{LABEL}")
ax.legend(fontsize=8)
plt.show()
ok_rank = all(st.rank_fisher <= st.n and st.rank_cov <= st.n - 1 for st in studies.values())
display(Markdown(
    f"Every F̂ has numerical rank ≤ N and every D rank ≤ N − 1: **{ok_rank}** "
    f"(ranks {', '.join(f'{m}/{s}: {st.rank_fisher}' for (m, s), st in studies.items())}; "
    f"P is {runs['mlp']['P']} and {runs['cnn']['P']}). So at least "
    f"{100 * (1 - runs['mlp']['N'] / runs['mlp']['P']):.1f}% (MLP) and "
    f"{100 * (1 - runs['cnn']['N'] / runs['cnn']['P']):.1f}% (CNN) of F̂'s eigenvalues are "
    "exactly zero."))

# %% [markdown]
# The curves end at j = N: past that index the spectrum of F̂ is identically zero.
# The full rank N (rather than less) says the N per-example gradients are linearly
# independent, as expected with P ≫ N.
#
# ## 5.6 Spectral densities of the Hessian and the Fisher
#
# Stochastic Lanczos quadrature (`sgdnoise.spectral.spectral_density`), Gaussian-smoothed,
# on a log scale for the density; the ticks on top mark the top-k Lanczos eigenvalues.

# %%
trained = [(m, studies[(m, "trained")]) for m in runs]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, (m, st) in zip(axes, trained, strict=True):
    for name, d in st.densities.items():
        ax.semilogy(d.grid.numpy(), np.maximum(d.density.numpy(), 1e-8), label=name, lw=1.2)
    for v in st.hessian_top.numpy():
        ax.axvline(v, ymin=0.95, ymax=1.0, color="k", lw=0.8)
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)", ylim=(1e-6, None),
           title=f"{m.upper()} after training (P={st.p}, N={st.n})")
    ax.legend(fontsize=8)
fig.suptitle(LABEL, fontsize=9)
plt.tight_layout()
plt.show()
nz = pd.concat([st.near_zero.assign(model=m) for m, st in trained])
display(nz.pivot_table(index=["model", "matrix"], columns="rtol", values="fraction (SLQ)"))

# %% [markdown]
# The density is a tall spike at zero and a thin tail. The first table gives the fraction
# of spectral mass with |λ| ≤ rtol · λ_max from the SLQ quadrature weights ("exact" rows use
# the Gram spectrum of F̂). A Gauss rule with m nodes cannot split mass more finely than its
# node spacing: the near-zero eigenvalues show up as one node near 0 whose weight is their
# share and whose position is their centre of mass. The second table lists that node for
# each matrix (weight, and |position| / λ_max); when the position exceeds rtol, the rtol
# window misses the cluster and its fraction understates the flat part.

# %%
zc = pd.concat([st.zero_cluster.assign(model=m) for m, st in trained])
display(zc.set_index(["model", "matrix"]))
lines = []
for m, st in trained:
    row = st.near_zero[(st.near_zero.rtol == 1e-3)].set_index("matrix")
    row2 = st.near_zero[(st.near_zero.rtol == 1e-2)].set_index("matrix")
    cl = st.zero_cluster.set_index("matrix")
    h_w, h_pos = cl.loc["Hessian", "weight"], cl.loc["Hessian", "position"]
    g_frac = row.loc["GGN (= Fisher)", "fraction (SLQ)"]
    g_bound = row.loc["GGN (= Fisher)", "exact lower bound (rank)"]
    lines.append(
        f"**{m.upper()}**: the SLQ node nearest zero carries a fraction {h_w:.3f} of the "
        f"Hessian's spectral mass and sits at {h_pos:.1e}·λ_max; SLQ puts "
        f"{row.loc['Hessian', 'fraction (SLQ)']:.3f} of the mass within 10⁻³·λ_max and "
        f"{row2.loc['Hessian', 'fraction (SLQ)']:.3f} within 10⁻²·λ_max"
        + (" (the 10⁻³ window is narrower than the cluster's offset, so that number "
           "understates the flat part)" if h_pos > 1e-3 else "")
        + f". For the GGN SLQ finds {g_frac:.3f} within 10⁻³·λ_max against the exact rank "
        f"bound {g_bound:.3f}"
        + (" (consistent)" if g_frac >= g_bound - 0.02 else
           " (below the bound: the quadrature has not resolved the zero cluster, so the SLQ "
           "fractions are too coarse at this profile)")
        + f"; F̂ has exactly {row.loc['empirical Fisher (exact)', 'fraction (SLQ)']:.3f} "
        "of its eigenvalues within 10⁻³·λ_max.")
flat = min(float(st.near_zero.query("matrix == 'Hessian' and rtol == 0.01")["fraction (SLQ)"]
                .iloc[0]) for _, st in trained)
display(Markdown(" ".join(lines) + (
    f" In both networks at least {flat:.0%} of the Hessian's spectrum lies within "
    "10⁻²·λ_max of zero: most directions are flat." if flat >= 0.5 else
    f" Only {flat:.0%} of the Hessian's spectrum lies within 10⁻²·λ_max of zero in one of "
    "the networks, so here the flatness claim holds for the GGN and F̂ (rank bounds) but is "
    "weaker for the Hessian itself.")))

# %% [markdown]
# ## 5.7 Outliers and the class structure

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
for ax, m in zip(axes, runs, strict=True):
    for s, ls in (("init", "--"), ("trained", "-")):
        st = studies[(m, s)]
        curves = [("GGN (= Fisher)", st.ggn_top), ("empirical Fisher", st.fisher_top),
                  ("covariance D", st.gram_cov[: P["top_k"]]), ("Hessian", st.hessian_top)]
        for j, (name, ev) in enumerate(curves):
            if ev.numel():
                ev = ev.numpy()
                ax.semilogy(np.arange(1, len(ev) + 1), ev / ev[0], ls, marker=".",
                            color=f"C{j}", label=f"{name}, {s}")
    ax.axvline(P["num_classes"] - 1, color="gray", lw=0.6)
    ax.axvline(P["num_classes"], color="gray", lw=0.6)
    ax.set(xlabel="index j", ylabel="λ_j / λ_1", title=f"{m.upper()}: top eigenvalues")
    ax.legend(fontsize=6, ncol=2)
fig.suptitle(f"Outliers (gray lines at C−1 and C)\n{LABEL}", fontsize=9)
plt.tight_layout()
plt.show()
out = pd.concat([st.outliers.assign(model=m, state=s) for (m, s), st in studies.items()])
display(out.pivot_table(index=["model", "state"], columns="matrix", values="outliers"))
cap = pd.concat([st.class_capture.assign(model=m, state=s) for (m, s), st in studies.items()])
display(cap.pivot_table(index=["model", "state"], columns="matrix",
                        values="captured by class-mean span"))

# %% [markdown]
# The first table is the largest-gap outlier count (0 = no gap of at least 1.5 among the top
# 15); the second is the share of each matrix's top-C eigenspace that lies in the span of
# the C class-mean gradients (a random C-subspace would give C/P, below 10⁻³ here).

# %%
C = P["num_classes"]
counts = out["outliers"].to_numpy()
n_c = int((counts == C).sum())
n_c1 = int((counts == C - 1).sum())
n_other = len(counts) - n_c - n_c1
cap_min = cap["captured by class-mean span"].min()
cap_max = cap["captured by class-mean span"].max()
display(Markdown(
    f"Of {len(counts)} (model, state, matrix) spectra, {n_c1} show exactly C − 1 = {C - 1} "
    f"outliers, {n_c} show C = {C}, and {n_other} show another count "
    f"({', '.join(sorted({str(int(c)) for c in counts if c not in (C, C - 1)})) or 'none'}). "
    + ("The separated groups have C − 1 members, as the centring and softmax-shift "
       "arguments of §5.2 predict, rather than C. " if n_c1 > n_c else
       "C − 1 is not the dominant count here. ")
    + f"Independently of any gap rule, the class-mean span captures between {cap_min:.2f} "
    f"and {cap_max:.2f} of the top-C eigenspaces, against ≈{C / runs['cnn']['P']:.0e} for "
    "a random subspace: the top of every spectrum is organised by the classes."))

# %% [markdown]
# A clean gap is most visible at initialisation and for the gradient-based matrices; after
# the networks fit their subsets the top of the spectrum decays more gradually (the gap rule
# may then find no gap, or a different count), while the class-mean capture stays far above
# chance. This matches {cite}`papyan2020traces`: the class structure is always present, but
# how sharply it separates from the bulk depends on the state of training.
#
# ## 5.8 Noise energy in the top Hessian eigenspace

# %%
energy_rows = []
items = [(k, v) for k, v in studies.items() if v.energy is not None]
fig, axes = plt.subplots(1, len(items), figsize=(3.6 * len(items), 3.4), sharey=True)
for ax, ((m, s), st) in zip(np.atleast_1d(axes), items, strict=True):
    e = st.energy
    for j, col in enumerate(e.columns[1:]):
        ax.semilogy(e["k"], e[col], marker="." if j < 2 else None, label=col)
    ax.set(xlabel="k", title=f"{m.upper()}, {s}")
    k10 = e[e.k == min(C, len(e))].iloc[0]
    energy_rows.append({"model": m, "state": s, "k": int(k10.k),
                        "φ_k (Hessian)": k10.iloc[1], "optimum": k10.iloc[2],
                        "random k/P": k10.iloc[3], "ratio to random": k10.iloc[1] / k10.iloc[3]})
np.atleast_1d(axes)[0].set_ylabel("fraction of tr D")
np.atleast_1d(axes)[0].legend(fontsize=7)
fig.suptitle(f"Share of the noise energy along the top-k Hessian eigenvectors\n{LABEL}",
             fontsize=9)
plt.tight_layout()
plt.show()
energy = pd.DataFrame(energy_rows)
display(energy)

# %% [markdown]
# Each panel shows, for k = 1, 2, …, the fraction of tr D along the top-k Hessian
# eigenvectors (blue), the best any k-dimensional subspace can do (orange, D's own top
# eigenvectors) and the k/P of a random subspace (green); the vertical distance to the
# green curve, on this log scale, is the concentration factor in the table.

# %%
best = energy.loc[energy["ratio to random"].idxmin()]
display(Markdown(
    f"The top-{int(best.k)} Hessian directions — {int(best.k)} out of P = "
    f"{' and '.join(str(v['P']) for v in runs.values())} — carry "
    f"between {energy['φ_k (Hessian)'].min():.1%} and {energy['φ_k (Hessian)'].max():.1%} "
    f"of the noise energy tr D, at least {energy['ratio to random'].min():.0f}× what a "
    f"random subspace of that size carries, and "
    f"{(energy['φ_k (Hessian)'] / energy['optimum']).min():.0%}–"
    f"{(energy['φ_k (Hessian)'] / energy['optimum']).max():.0%} of the best any "
    f"{int(best.k)}-dimensional subspace could capture. The noise is concentrated in the few "
    "curved directions, although not entirely: the rest is spread over the remaining "
    "non-flat directions (D has rank up to N − 1)."))

# %% [markdown]
# ## 5.9 Summary
#
# - Proposition 1 and 2 bound the ranks of F̂, D and the GGN by N, N − 1 and N(C − 1); the
#   Gram spectra confirm rank F̂ = N ≪ P numerically.
# - The SLQ densities are a spike at zero plus a thin tail and a few outliers; the weight of
#   the zero cluster printed in §5.6 says how much of each spectrum is flat.
# - The outliers are organised by the classes (the class-mean gradients span most of the top
#   eigenspace); the gap counts above say whether C or C − 1 separate cleanly.
# - The mini-batch noise is far from isotropic: its energy sits disproportionately in the top
#   Hessian eigenspace, consistent with the observation that training itself happens in a
#   tiny subspace {cite}`gurari2018gradient`.

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
