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
# \partial\theta$ and $\ell_i = -\log p_{i,y_i}$. The output gradient is $\nabla_f \ell_i =
# p_i - e_{y_i}$ and the output Hessian is $\nabla_f^2 \ell_i = \operatorname{diag}(p_i) -
# p_ip_i^\top$, independent of the label. The true Fisher averages over labels drawn from
# the model: $F = \frac1N\sum_i J_i^\top\,\mathbb{E}_{y\sim p_i}[(p_i - e_y)(p_i -
# e_y)^\top]\,J_i$, and $\mathbb{E}_{y\sim p}[(p - e_y)(p - e_y)^\top] = pp^\top - pp^\top -
# pp^\top + \operatorname{diag}(p) = \operatorname{diag}(p) - pp^\top$. Hence
#
# $$
# F = \frac1N\sum_i J_i^\top\big(\operatorname{diag}p_i - p_ip_i^\top\big)J_i = G,
# $$ (eq-ch2-FG)
#
# exactly, at every $\theta$. This is the *canonical link* property: for an exponential
# family in its natural parameters (logits), the Hessian of the negative log-likelihood in
# the outputs does not depend on the observed label, so it equals its own expectation.
#
# **(3) GGN and Hessian.** The chain rule gives
#
# $$
# H = G + \frac1N\sum_i\sum_{c=1}^C \frac{\partial \ell_i}{\partial f_{ic}}\,\nabla^2_\theta f_{ic}.
# $$ (eq-ch2-HG)
#
# The residual vanishes for models linear in $\theta$ (softmax regression:
# $\nabla^2_\theta f = 0$, so $H = G = F$ exactly), and is small when the residuals
# $p_i - e_{y_i}$ are small (the model fits the data) or average out.
#
# **(4) Fisher as the Hessian of the KL divergence.** With $K(\theta') =
# \frac1N\sum_i \mathrm{KL}(p_\theta(\cdot|x_i)\,\|\,p_{\theta'}(\cdot|x_i))$: $K \ge 0$ with
# $K(\theta) = 0$, so its gradient vanishes at $\theta' = \theta$, and differentiating
# twice, $\nabla^2 K = -\frac1N\sum_i\sum_y p_y\nabla^2\log p'_y$; at $\theta' = \theta$,
# using $\sum_y \nabla^2 p_y = 0$, $-\sum_y p_y \nabla^2\log p_y = \sum_y p_y \nabla\log
# p_y\nabla\log p_y^\top$, which is $F$.
#
# **(5) Information equality.** If the labels really are drawn from $p_{\theta}$ (a
# well-specified model at its true parameter), then $\mathbb{E}[\hat F] = F = \mathbb{E}[H]$.
# For real data the labels are not model samples, so $\hat F \neq F$ in general — the gap
# measured below.
#
# **Fisher-Rao norm.** $F$ defines the metric $\langle u, v\rangle_F = u^\top F v$ and the
# Fisher-Rao norm $\|\theta\|_{fr}^2 = \theta^\top F\theta$ {cite}`liang2019fisher`. For a
# bias-free ReLU network with $L$ hidden layers, $f(x; c\theta) = c^{L+1}f(x;\theta)$, so by
# Euler's theorem $J_i\theta = (L+1)f_i$ and
# $\theta^\top F\theta = (L+1)^2\,\frac1N\sum_i\mathbb{E}_{y\sim p_i}\langle p_i - e_y,
# f_i\rangle^2$: the norm is computable from outputs alone.

# %% tags=["parameters"]
profile = "default"
dataset = "cifar10"
n_train = 500
image_size = 4
seed = 0
mlp_width = 16
cnn_width = 4
train_steps = 300
early_step = 10
train_lr = 0.1
train_batch_size = 50
top_k = 10

# %%
import matplotlib.pyplot as plt
import seaborn as sns
import torch
from IPython.display import Markdown, display

from sgdnoise import studies
from sgdnoise.curvature import fisher_rao_identity, kl_hessian, true_fisher
from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown

SPEC = {
    "profile": Param("str", choices=("smoke", "default", "full")),
    "dataset": Param("str", choices=("cifar10", "synthetic")),
    "n_train": Param("int", low=20, high=50000),
    "image_size": Param("int", choices=(1, 2, 4, 8, 16, 32)),
    "seed": Param("int", low=0),
    "mlp_width": Param("int", low=1),
    "cnn_width": Param("int", low=1),
    "train_steps": Param("int", low=2),
    "early_step": Param("int", low=0),
    "train_lr": Param("float", low=1e-6, high=10.0),
    "train_batch_size": Param("int", low=1),
    "top_k": Param("int", low=1),
}
P = validate(
    dict(profile=profile, dataset=dataset, n_train=n_train, image_size=image_size, seed=seed,
         mlp_width=mlp_width, cnn_width=cnn_width, train_steps=train_steps,
         early_step=early_step, train_lr=train_lr, train_batch_size=train_batch_size,
         top_k=top_k),
    SPEC,
)
if P["early_step"] >= P["train_steps"]:
    raise ValueError(f"parameter 'early_step' must be < train_steps={P['train_steps']}, "
                     f"got {P['early_step']}")
clock = Stopwatch()
torch.set_num_threads(2)
use_style()
problem = studies.load_small_problem(P["dataset"], P["n_train"], image_size=P["image_size"],
                                     seed=P["seed"])
identity = problem.identity

# %% [markdown]
# ## Checks of the exact identities
#
# On a small bias-free ReLU MLP: the Hessian of the KL divergence (dense autograd on the KL
# itself) against the true Fisher, and both sides of the Fisher-Rao identity.

# %%
small = studies.build_small_model("mlp", problem.in_shape, width=P["mlp_width"], bias=False,
                                  seed=P["seed"])
xs = problem.x[: min(200, problem.n)]
K = kl_hessian(small, xs)
F_small = true_fisher(small, xs)
kl_err = float(torch.linalg.matrix_norm(K - F_small) / torch.linalg.matrix_norm(F_small))
fr = fisher_rao_identity(small, xs)
fr_emp = fisher_rao_identity(small, xs, problem.y[: xs.shape[0]],
                             loss_fn=torch.nn.functional.cross_entropy, kind="empirical")
display(Markdown(
    f"‖∇²KL − F‖/‖F‖ = **{kl_err:.2e}**. Fisher-Rao norm θᵀFθ = {fr.lhs:.6g}; "
    f"(L+1)² E⟨p − e_y, f⟩² = {fr.rhs:.6g} (relative difference {fr.relative_error:.1e}, "
    f"degree L+1 = {fr.degree}). With data labels (empirical Fisher): {fr_emp.lhs:.6g} vs "
    f"{fr_emp.rhs:.6g} (relative difference {fr_emp.relative_error:.1e})."
))

# %% [markdown]
# ## How close are $D$, $\hat F$, $F$, $G$ and $H$ on real models?
#
# Three models, each trained with SGD; at an early and a late step we form the five dense
# matrices and compare them pairwise: the relative distance $\|A - B\|_F/\|B\|_F$, the
# cosine $\langle A, B\rangle_F/(\|A\|_F\|B\|_F)$ (scale-free: $1$ means "equal up to a
# positive factor"), and the overlap of top-$k$ eigenspaces (`top_eigenspace_overlap`,
# $1$ = same subspace, about $k/P$ for random ones).

# %%
res = studies.fisher_hessian_study(
    problem, [("softmax", 0), ("mlp", P["mlp_width"]), ("cnn", P["cnn_width"])],
    steps=P["train_steps"], early_step=P["early_step"], lr=P["train_lr"],
    batch_size=P["train_batch_size"], k=P["top_k"], seed=P["seed"],
)
display(res["training"])
pairs = res["pairs"]
key = pairs[pairs.apply(lambda r: (r.a, r.b) in {("D", "F_hat"), ("F", "GGN"), ("D", "H"),
                                                 ("GGN", "H"), ("F_hat", "F")}, axis=1)]
display(key.round(3))

# %%
key = key.assign(pair=key.a + " vs " + key.b, where=key.model + " · " + key.stage)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
sns.barplot(data=key, x="pair", y="cosine", hue="where", ax=axes[0])
axes[0].set(ylim=(0, 1.05), title="cosine similarity (1 = proportional)")
sns.barplot(data=key, x="pair", y="overlap", hue="where", ax=axes[1])
axes[1].set(title=f"top-{P['top_k']} eigenspace overlap")
for ax in axes:
    ax.tick_params(axis="x", rotation=20)
axes[1].legend(fontsize=7)
axes[0].legend().remove()
fig.suptitle(source_label(profile, identity), fontsize=9)
plt.show()

# %% [markdown]
# **What to see.** $D$ and $\hat F$ are nearly identical everywhere (the $\bar g\bar g^\top$
# term is small); $F$ and $G$ coincide exactly, as {eq}`eq-ch2-FG` demands. The links that
# carry the "noise ≈ curvature" argument are $\hat F$ vs $F$ (data labels vs model labels)
# and $G$ vs $H$ (the residual term of {eq}`eq-ch2-HG`); their bars show how far the claim
# is from the truth for each model and stage.

# %%
eigs = res["eigs"]
g = sns.relplot(data=eigs, x="rank", y="eigenvalue", hue="matrix", style="matrix",
                col="model", row="stage", kind="line", markers=True, height=2.6, aspect=1.3,
                facet_kws={"sharey": False})
g.set(yscale="symlog")
g.figure.suptitle(f"top-{P['top_k']} eigenvalues · {source_label(profile, identity)}",
                  y=1.02, fontsize=9)
plt.show()

# %% [markdown]
# **What to see.** The top of the spectra: where the curves of $D$ and $H$ lie on top of
# each other the noise covariance really is the curvature; a vertical offset is a scale
# factor; different shapes mean different matrices.

# %%
pl = res["power_law"]
display(pl[["model", "stage", "gamma", "gamma_se", "r2", "n_used", "n_total"]].round(3))
dh = pairs[(pairs.a == "D") & (pairs.b == "H")].set_index(["model", "stage"])
lines = []
for (m, st), r in dh.iterrows():
    verdict = ("holds up to a scale (cosine ≥ 0.9)" if r.cosine >= 0.9 else
               "holds only roughly (0.6 ≤ cosine < 0.9)" if r.cosine >= 0.6 else "fails")
    lines.append(f"- **{m}, {st}**: cos(D, H) = {r.cosine:.3f}, ‖D − H‖/‖H‖ = "
                 f"{r.rel_dist:.2f}, top-{P['top_k']} overlap {r.overlap:.2f}: "
                 f"\"covariance ≈ Hessian\" {verdict}.")
gam = pl.gamma
lines.append(f"- Diagonal power law D_ii ∝ H_ii^γ: γ ranges over [{gam.min():.2f}, "
             f"{gam.max():.2f}] ("
             + ("consistent with" if ((pl.gamma + 2 * pl.gamma_se >= 1)
                                      & (pl.gamma - 2 * pl.gamma_se <= 2)).all()
                else "partly outside")
             + " the range 1 ≤ γ ≤ 2 reported in the literature), with R² between "
             f"{pl.r2.min():.2f} and {pl.r2.max():.2f}.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# - Exact: $D = \hat F - \bar g\bar g^\top$; for softmax cross-entropy $F = G$ at every
#   $\theta$; $F$ is the Hessian of the KL divergence; the Fisher-Rao identity for bias-free
#   ReLU networks (all verified above to rounding error).
# - Approximate: $\hat F \approx F$ needs labels that look like model samples, and $G
#   \approx H$ needs small residuals or a linear model. The table above says, model by model
#   and early vs late, how well "covariance ≈ scaled Hessian" holds on these data.

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
