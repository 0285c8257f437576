# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 9. Anisotropic noise, decoupled from learning rate and batch size
#
# The source essay ends with a proposal: instead of buying back SGD's helpful noise by
# raising the learning rate when the batch grows, train with a large batch and *inject*
# noise whose covariance imitates mini-batch noise, with its own knob. This chapter builds
# that optimizer, proves what covariance each of six noise kinds has, checks every claim by
# Monte Carlo against dense matrices, and then runs the experiment: at a large batch, does
# any kind of injected noise recover the test error of small-batch SGD at the same number of
# epochs, and what does a step cost? Related work injects Hessian- or Fisher-shaped noise
# {cite}`zhu2019anisotropic`, multiplicative noise {cite}`wu2020multiplicative`, and
# covariance-structured noise for large batches {cite}`wen2020empirical`.
#
# ## The update
#
# Write $g_\mathcal{B}$ for the mean gradient of a batch of $B$ examples and
# $D(\theta) = \frac1N\sum_i (g_i-\bar g)(g_i-\bar g)^\top$ for the per-example gradient
# covariance. A noisy large-batch step is
#
# $$
# \theta_{t+1} = \theta_t - \eta\,\bigl(g_\mathcal{B} + \sqrt{T}\,\xi\bigr), \qquad
# \xi \sim \mathcal N(0, \Sigma_\text{kind}),
# $$ (eq-ch9-update)
#
# where $\Sigma_\text{kind}$ is a stand-in for $D$ computed from $M$ examples of the current
# batch and $\xi$ has mean zero given the batch (it is a fresh Gaussian, or a Gaussian times a
# batch-dependent scale). The temperature $T \ge 0$ is the knob; it is not tied to $\eta$ or
# $B$.

# %% tags=["parameters"]
profile = "default"
dataset = "cifar10"
n_train = 2000
n_test = 2000
model = "mlp"
width = 64
norm = "none"
small_batch = 50
large_batch = 500
epochs = 20
lr = 0.05
momentum = 0.0
seeds = [0, 1, 2]
kinds = ["isotropic", "diag_fisher", "subsampled", "true_fisher", "hessian", "ggn"]
epoch_matched_kinds = ["subsampled"]
num_samples = 64
moment_samples = 64
moment_probes = 4
curvature_samples = 32
lanczos_steps = 8
sharpness_examples = 500
sharpness_iters = 15
cost_repeats = 5
direction_count = 5
direction_draws = 64
check_examples = 24
check_draws = 1000
augment = False
device = "cpu"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from sgdnoise import experiments_noise as EN
from sgdnoise.data import load_dataset
from sgdnoise.grads import num_params
from sgdnoise.models import build_model
from sgdnoise.noise import KINDS, matched_temperature
from sgdnoise.params import Param, validate
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown

NOISE_KINDS = KINDS[1:]
SPEC = {
    "profile": Param("str", choices=("smoke", "default", "full")),
    "dataset": Param("str", choices=("cifar10", "synthetic")),
    "n_train": Param("int", low=20, high=50000),
    "n_test": Param("int", low=10, high=10000),
    "model": Param("str", choices=("mlp", "cnn", "resnet20", "resnet18", "resnet34")),
    "width": Param("int", low=1),
    "norm": Param("str", choices=("group", "none")),
    "small_batch": Param("int", low=1),
    "large_batch": Param("int", low=2),
    "epochs": Param("int", low=1),
    "lr": Param("float", low=1e-6, high=10.0),
    "momentum": Param("float", low=0.0, high=0.99),
    "seeds": Param("list[int]", low=0, min_len=2),
    "kinds": Param("list[str]", choices=NOISE_KINDS),
    "epoch_matched_kinds": Param("list[str]", choices=NOISE_KINDS, min_len=0),
    "num_samples": Param("int", low=2),
    "moment_samples": Param("int", low=2),
    "moment_probes": Param("int", low=0, high=64),
    "curvature_samples": Param("int", low=2),
    "lanczos_steps": Param("int", low=1, high=200),
    "sharpness_examples": Param("int", low=10),
    "sharpness_iters": Param("int", low=2),
    "cost_repeats": Param("int", low=1),
    "direction_count": Param("int", low=1, high=20),
    "direction_draws": Param("int", low=8),
    "check_examples": Param("int", low=4, high=200),
    "check_draws": Param("int", low=100),
    "augment": Param("bool"),
    "device": Param("str", choices=("cpu", "cuda")),
}
P = validate(
    dict(
        profile=profile, dataset=dataset, n_train=n_train, n_test=n_test, model=model,
        width=width, norm=norm, small_batch=small_batch, large_batch=large_batch,
        epochs=epochs, lr=lr, momentum=momentum, seeds=seeds, kinds=kinds,
        epoch_matched_kinds=epoch_matched_kinds, num_samples=num_samples,
        moment_samples=moment_samples, moment_probes=moment_probes,
        curvature_samples=curvature_samples,
        lanczos_steps=lanczos_steps, sharpness_examples=sharpness_examples,
        sharpness_iters=sharpness_iters, cost_repeats=cost_repeats,
        direction_count=direction_count, direction_draws=direction_draws,
        check_examples=check_examples, check_draws=check_draws, augment=augment,
        device=device,
    ),
    SPEC,
)
if not P["small_batch"] < P["large_batch"] <= P["n_train"]:
    raise ValueError(
        f"parameters 'small_batch' < 'large_batch' <= n_train={P['n_train']} are required, "
        f"got small_batch={P['small_batch']}, large_batch={P['large_batch']}"
    )
if P["large_batch"] < 0.2 * P["n_train"]:
    raise ValueError(f"parameter 'large_batch' must be at least 0.2 n_train = "
                     f"{0.2 * P['n_train']:.0f} (a large batch), got {P['large_batch']}")
clock = Stopwatch()
torch.set_num_threads(1)  # one thread: measured faster than two when the cores are shared
use_style()

# %% [markdown]
# ## Which temperature imitates a small batch
#
# Condition on $\theta_t$. The batch gradient has covariance $D/B$ when the batch is drawn
# with replacement (Lemma 1, chapter 1). The noise depends on the batch only through
# $\Sigma_\text{kind}$ and has mean zero given the batch, so
# $\mathbb E[(g_\mathcal{B}-\bar g)\xi^\top] = \mathbb E[(g_\mathcal{B}-\bar g)\,
# \mathbb E[\xi\mid\mathcal B]^\top] = 0$: the two are uncorrelated, and the step direction
# $g_\mathcal{B} + \sqrt T\xi$ has mean $\bar g$ and covariance
#
# $$
# \operatorname{Cov}\bigl(g_\mathcal{B} + \sqrt T\,\xi\bigr) = \frac DB
#   + T\,\mathbb E_\mathcal{B}\bigl[\Sigma_\text{kind}\bigr].
# $$ (eq-ch9-cov)
#
# A small batch of size $b$ has direction covariance $D/b$. If
# $\mathbb E_\mathcal{B}[\Sigma_\text{kind}] = D$, the two agree exactly when
#
# $$
# T_\text{step} = \frac1b - \frac1B ,
# $$ (eq-ch9-tstep)
#
# so $T$ plays the role of $1/B_\text{eff} - 1/B$: the noise one would have at an effective
# batch $B_\text{eff} = b$, minus what the large batch already has. (For the sub-sampled
# kind below, $\mathbb E[D_M] = \frac{M-1}{M}D$ for $M$ independently drawn examples, a
# bias of under 2% at $M = 64$ that we leave uncorrected.) Without replacement the
# batch covariances carry the finite-population factor of chapter 1,
# $\operatorname{Cov}(g_\mathcal{B}) = \frac{N-B}{B(N-1)}D$, and the matching condition
# becomes $\frac{N-B}{B(N-1)} + T = \frac{N-b}{b(N-1)}$; since
# $\frac{N-b}{b} - \frac{N-B}{B} = N\bigl(\frac1b - \frac1B\bigr)$ its solution is
# $T = \bigl(\frac1b - \frac1B\bigr)\frac{N}{N-1}$. The training engine draws batches
# without replacement, so the experiment uses this form.
#
# Matching one step is not the same as matching an epoch. At equal learning rate an epoch of
# small-batch SGD takes $N/b$ steps of noise covariance $\eta^2 D/b$, a total of
# $\eta^2 N D/b^2$; an epoch at batch $B$ takes $N/B$ steps of covariance
# $\eta^2(1/B + T)D$. The totals agree for
#
# $$
# T_\text{epoch} = \frac{B}{b^2} - \frac1B ,
# $$ (eq-ch9-tepoch)
#
# about $B/b$ times larger than {eq}`eq-ch9-tstep`. The experiment runs every kind at
# $T_\text{step}$ (the matched default) and the kinds in `epoch_matched_kinds` also at
# $T_\text{epoch}$.

# %%
T_step = matched_temperature(P["small_batch"], P["large_batch"], num_examples=P["n_train"])
T_epoch = EN.epoch_matched_temperature(P["small_batch"], P["large_batch"])
display(pd.DataFrame({
    "quantity": ["b", "B", "B / N", "T_step = (1/b - 1/B) N/(N-1)", "T_epoch = B/b² - 1/B"],
    "value": [P["small_batch"], P["large_batch"], P["large_batch"] / P["n_train"], T_step,
              T_epoch],
}))

# %% [markdown]
# ## Six noise covariances
#
# Let the $M$ examples drawn from the batch have per-example gradients $g_1, \dots, g_M$,
# mean $\bar g_M$ and covariance $D_M = \frac1M\sum_j (g_j - \bar g_M)(g_j-\bar g_M)^\top$;
# $z$ is a standard Gaussian vector (of length $P$ or $M$).
#
# 1. **none**: $\xi = 0$ (plain large-batch SGD).
# 2. **isotropic**: $\xi = \sigma z$, $\sigma^2 = \operatorname{tr}(D_M)/P$. Then
#    $\operatorname{Cov}\xi = \sigma^2 I$, whose trace equals $\operatorname{tr} D_M$: the same
#    total noise, spread evenly over all $P$ directions.
# 3. **diag_fisher**: $\xi = z \odot \sqrt{d}$ with $d = \operatorname{diag}(D_M)$, the
#    per-coordinate variance of the per-example gradients (the diagonal of the centred
#    empirical Fisher); $\operatorname{Cov}\xi = \operatorname{diag}(d)$ because the $z_a$ are
#    independent with unit variance.
# 4. **subsampled**: $\xi = \frac{1}{\sqrt M}\sum_j z_j (g_j - \bar g_M)$. With
#    $\mathbb E[z_jz_k] = \delta_{jk}$,
#    $\mathbb E[\xi\xi^\top] = \frac1M \sum_{j,k}\delta_{jk}(g_j-\bar g_M)(g_k-\bar g_M)^\top
#    = D_M$: exactly the covariance of the sample, at rank at most $M-1$. No per-example
#    gradient is needed: since $\sum_j z_j \bar g_M = \bar z \sum_k g_k$,
#
#    $$
#    \xi = \frac{1}{\sqrt M}\sum_j (z_j - \bar z)\,g_j
#        = \nabla_\theta \Bigl[\tfrac{1}{\sqrt M}\textstyle\sum_j (z_j - \bar z)\,
#          \ell_j(\theta)\Bigr],
#    $$ (eq-ch9-weighted)
#
#    one backward pass through a weighted loss on $M$ examples.
# 5. **true_fisher**: draw labels from the model, $\tilde y_j \sim p(\cdot\mid x_j,\theta)$,
#    let $\tilde g_j = -\nabla\log p(\tilde y_j\mid x_j,\theta)$ and
#    $\xi = \frac1{\sqrt M}\sum_j z_j \tilde g_j$. The score has mean zero,
#    $\mathbb E_{\tilde y}[\nabla \log p] = \sum_y p\,\nabla\log p = \nabla\sum_y p = 0$, so no
#    centring is needed, and with $z$ independent of the labels
#    $\mathbb E[\xi\xi^\top] = \frac1M\sum_j \mathbb E_{\tilde y}[\tilde g_j\tilde g_j^\top] = F_M$,
#    the true Fisher on the $M$ inputs. It is again one weighted backward pass.
# 6. **hessian / ggn**: $\xi = f(A)z$ with $f(\lambda) = \sqrt{\max(\lambda,0)}$ and $A$ the
#    Hessian $H$ (or the generalised Gauss-Newton matrix $G$) of the mean loss on the $M$
#    examples. Writing $A = U\Lambda U^\top$, $\operatorname{Cov}\xi = U f(\Lambda)^2U^\top =
#    A_+$, the positive part: negative curvature is clipped to zero, and $G_+ = G$ because the
#    GGN is positive semi-definite. For softmax cross-entropy $G$ equals the true Fisher
#    {cite}`martens2020new`, so **ggn** and **true_fisher** share a covariance but differ in
#    how they draw.
#
# **Isotropic and diagonal noise without per-example gradients.** Kinds 2 and 3 need only
# $d = \operatorname{diag}(D_M)$. Computing it exactly needs all $M$ per-example gradients,
# which in a first version made a step about 20 times as expensive as a plain one. Instead
# take $r$ (`moment_probes`) independent sub-sampled vectors $\zeta_1, \dots, \zeta_r$ as in
# {eq}`eq-ch9-weighted`, computed together in one batched backward pass. Each has covariance
# $D_M$, so $\mathbb E[\zeta_{i,a}^2] = d_a$ and $\hat d = \frac1r\sum_i \zeta_i\odot\zeta_i$ is
# unbiased. With a fresh $z \sim \mathcal N(0, I_P)$ independent of $\hat d$, put
# $\xi = z\odot\sqrt{\hat d}$ (diagonal) or $\xi = z\sqrt{\textstyle\sum_a \hat d_a/P}$ (isotropic).
# Then
#
# $$
# \mathbb E[\xi_a\xi_b] = \mathbb E[z_az_b]\;\mathbb E\bigl[\sqrt{\hat d_a\hat d_b}\bigr]
#   = \delta_{ab}\,\mathbb E[\hat d_a] = \delta_{ab}\, d_a ,
# $$ (eq-ch9-probes)
#
# so the covariance is exactly $\operatorname{diag}(D_M)$ (and $\operatorname{tr}(D_M)/P\cdot I$
# for the isotropic kind). The draw is a Gaussian scale mixture rather than a Gaussian: its
# per-coordinate scale fluctuates from step to step ($\hat d_a = d_a\chi^2_r/r$), but
# {eq}`eq-ch9-cov` involves only the covariance. Setting `moment_probes = 0` uses exact
# per-example gradients instead.
#
# **Computing $f(A)z$ with only matrix-vector products.** $k$ steps of Lanczos started at
# $q_1 = z/\lVert z\rVert$ give an orthonormal basis $V_k$ of the Krylov space
# $\mathcal K_k = \operatorname{span}\{z, Az, \dots, A^{k-1}z\}$ and the tridiagonal
# $T_k = V_k^\top A V_k$ with $AV_k = V_kT_k + \beta_k q_{k+1}e_k^\top$. Apply that relation
# repeatedly to $V_k e_1 = q_1$: as long as the power is below $k$, the residual term is never
# reached (the $j$-th power of a tridiagonal matrix applied to $e_1$ has zeros beyond entry
# $j+1$), so $A^jq_1 = V_kT_k^je_1$ for $j<k$ and by linearity
# $p(A)z = \lVert z\rVert V_k\,p(T_k)e_1$ for every polynomial of degree below $k$. The
# approximation
#
# $$
# f(A)z \approx \lVert z\rVert\, V_k\, f(T_k)\, e_1
# $$ (eq-ch9-lanczos)
#
# is therefore as accurate as the best polynomial approximation of $f$ on the spectrum
# {cite}`saad1992analysis,higham2008functions`, and exact once $\mathcal K_k$ is invariant
# (at the latest $k = P$). Using it to draw Gaussians with covariance $A$ is the method of
# {cite}`chow2014preconditioned`. Each step is one Hessian-vector product
# {cite}`pearlmutter1994fast` (or a GGN product {cite}`schraudolph2002fast`).
#
# **Check.** On a tiny tanh MLP (float64; each image reduced to its three channel means,
# one hidden layer of two units, $P = 38$ parameters, $k = P$ Lanczos steps) every
# kind is drawn `check_draws` times and the empirical covariance $\hat C$ compared with the
# target built densely by other package code (per-example gradients for $D$, dense
# autograd Hessian / GGN / true Fisher from `sgdnoise.curvature`). A correct sampler has
# root-mean-square error $\sqrt{\sum_{ab}\operatorname{Var}(\xi_a\xi_b)/S}$, estimated from
# the draws; the column `z` divides the observed error by it.

# %%
data = load_dataset(P["dataset"], n_train=P["n_train"], n_test=P["n_test"], seed=0)
identity = data.identity.to_dict()
label = source_label(profile, identity)
x_check = EN.pooled_inputs(data.train_x[: P["check_examples"]], 1)
y_check = data.train_y[: P["check_examples"]]
torch.manual_seed(0)
check_model = build_model("mlp", in_shape=(3, 1, 1), hidden=[2], activation="tanh").double()
check = EN.covariance_check(check_model, x_check, y_check, NOISE_KINDS, draws=P["check_draws"],
                            moment_probes=P["moment_probes"] or None)
display(check.round(4))

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
sns.barplot(data=check, x="kind", y="rel_error", color="C0", ax=ax, label="observed")
ax.scatter(range(len(check)), 2 * check["expected"], color="C3", marker="_", s=600, zorder=3,
           label="2 × sampling RMS error")
ax.set_ylabel(r"$\|\hat C - \Sigma\|_F / \|\Sigma\|_F$")
ax.set_title(f"Empirical vs target covariance, {P['check_draws']} draws\n{label}")
ax.legend()
plt.show()

# %% [markdown]
# Each bar should sit below its red mark (twice the error a correct sampler makes by chance).

# %%
display(Markdown(
    f"Largest error / sampling RMS error: **{check['z'].max():.2f}** "
    f"(kind `{check.loc[check['z'].idxmax(), 'kind']}`). "
    + ("All six samplers match their target covariances to within sampling error."
       if check["z"].max() < 3 else
       "At least one sampler misses its target by more than three sampling errors.")
))

# %% [markdown]
# ## The experiment
#
# A network is trained from the same initialisation (per seed) with the training engine
# for `epochs` epochs in every configuration: small-batch SGD at batch $b$, large-batch SGD
# at batch $B$, and large-batch SGD plus each noise kind at $T_\text{step}$ (and at
# $T_\text{epoch}$ for `epoch_matched_kinds`), all with the same learning rate and no
# learning-rate scaling. Per-example quantities need examples that do not interact, so the
# network has GroupNorm or no normalisation at all (BatchNorm in training mode couples the
# batch, and the optimizer refuses it). After training we record train and test error on
# the whole splits and the sharpness $\lambda_\max(H)$ of the final point on a fixed set of
# `sharpness_examples` training examples (Lanczos, chapter 5).

# %%
configs = EN.build_configs(
    P["small_batch"], P["large_batch"], P["kinds"], num_samples=P["num_samples"],
    moment_samples=P["moment_samples"], curvature_samples=P["curvature_samples"],
    lanczos_steps=P["lanczos_steps"], num_examples=P["n_train"],
    epoch_matched_kinds=P["epoch_matched_kinds"], moment_probes=P["moment_probes"] or None,
)
display(pd.DataFrame([dict(label=c.label, kind=c.kind, batch=c.batch_size,
                           temperature=c.temperature, M=c.num_samples) for c in configs]))
n_params = num_params(build_model(P["model"], width=P["width"], norm=P["norm"]))
display(Markdown(
    f"**Scale of this run** (profile `{profile}`): {P['n_train']} training and {P['n_test']} "
    f"test images ({P['dataset']}, {identity['source']}), model `{P['model']}` of width "
    f"{P['width']} ({n_params:,} parameters, norm `{P['norm']}`), {P['epochs']} epochs at "
    f"learning rate {P['lr']} = {P['epochs'] * -(-P['n_train'] // P['small_batch'])} "
    f"small-batch steps or {P['epochs'] * -(-P['n_train'] // P['large_batch'])} large-batch "
    f"steps, B/N = {P['large_batch'] / P['n_train']:.2f}, {len(P['seeds'])} seeds, "
    f"M = {P['num_samples']} (gradient kinds), {P['curvature_samples']} (curvature kinds, "
    f"{P['lanczos_steps']} Lanczos steps)."
))
experiment = EN.run_noise_experiment(
    data, configs, seeds=P["seeds"], model=P["model"], width=P["width"], norm=P["norm"],
    epochs=P["epochs"], lr=P["lr"], momentum=P["momentum"], augment=P["augment"],
    device=P["device"], sharpness_examples=P["sharpness_examples"],
    sharpness_iters=P["sharpness_iters"], keep_models=[(EN.LARGE, P["seeds"][0])],
)
records = experiment.records
summary = EN.summarize(records)
display(summary.round(4))

# %%
order = [c.label for c in configs]
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=False)
for ax, metric, name in zip(axes, ["test_error", "train_error", "sharpness"],
                            ["test error", "train error", r"sharpness $\lambda_{\max}(H)$"],
                            strict=True):
    sns.pointplot(data=records, y="label", x=metric, order=order, errorbar=("ci", 95),
                  linestyle="none", ax=ax, color="C0")
    sns.stripplot(data=records, y="label", x=metric, order=order, ax=ax, color="C1",
                  alpha=0.5, size=4)
    ax.set_xlabel(name)
    ax.set_ylabel("")
for ax in axes[1:]:
    ax.set_yticklabels([])
fig.suptitle(f"Final point after {P['epochs']} epochs, {len(P['seeds'])} seeds "
             f"(b={P['small_batch']}, B={P['large_batch']})\n{label}")
plt.tight_layout()
plt.show()

# %% [markdown]
# Blue dots are seed means with 95% intervals, orange dots single seeds. Compare each noisy
# configuration with the two references at the top: closing the gap means moving the test
# error from the large-batch value towards the small-batch value.

# %%
curves = experiment.curves
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, metric in zip(axes, ["train_error", "test_error"], strict=True):
    sns.lineplot(data=curves, x="epoch", y=metric, hue="label", hue_order=order,
                 errorbar=None, ax=ax)
    ax.set_ylabel(metric.replace("_", " "))
axes[0].get_legend().remove()
axes[1].legend(fontsize=8, loc="upper right")
fig.suptitle(f"Learning curves (mean over seeds)\n{label}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The curves show whether a configuration is still descending when the epoch budget ends:
# a large batch takes $B/b$ times fewer steps per epoch, so part of its gap can be slower
# optimisation rather than worse generalisation.
#
# ## Where the noise goes
#
# The injected noise matters most along the sharpest directions of the loss. At the final
# large-batch point (first seed) we compute the top Hessian eigenvectors $u_i$ on
# `sharpness_examples` training examples and compare, along each, the variance of every
# kind's noise $u_i^\top\Sigma_\text{kind}u_i$ (from `direction_draws` draws on all those
# examples, with the training's `lanczos_steps` for the curvature kinds) with SGD's own
# $u_i^\top D u_i$ on the same examples. A ratio of 1 means the kind puts as much noise in
# that direction as mini-batch sampling does.

# %%
lb_model = experiment.models[(EN.LARGE, P["seeds"][0])]
x_dir = EN.pooled_inputs(data.train_x[: P["sharpness_examples"]], 32).float()
y_dir = data.train_y[: P["sharpness_examples"]]
directions = EN.directional_variance(
    lb_model, x_dir, y_dir, P["kinds"], num_directions=P["direction_count"],
    draws=P["direction_draws"], num_samples=None, lanczos_steps=P["lanczos_steps"],
)
fig, ax = plt.subplots(figsize=(7, 3.6))
sns.lineplot(data=directions, x="direction", y="ratio", hue="kind", marker="o", ax=ax)
ax.axhline(1.0, color="k", lw=0.8, ls="--")
ax.set_yscale("log")
ax.set_xticks(range(1, P["direction_count"] + 1))
ax.legend(fontsize=8, ncol=3, loc="center")
ax.set_xlabel("Hessian eigenvector (1 = sharpest)")
ax.set_ylabel(r"$u^\top\Sigma_{kind}u \;/\; u^\top D u$")
ax.set_title(f"Noise along the sharpest directions, large-batch final point\n{label}")
plt.show()
display(directions.pivot_table(index="kind", columns="direction", values="ratio").round(3))

# %% [markdown]
# Kinds near the dashed line reproduce SGD's noise along the sharp directions. Isotropic noise
# of matched trace is expected to sit below it when $D$ concentrates its variance in a few
# directions, since it spreads the same total over all $P$.

# %%
top = directions[directions["direction"] == 1].set_index("kind")["ratio"]
display(Markdown(
    "Along the sharpest direction the noise variance relative to SGD's is "
    + ", ".join(f"`{k}` {v:.3g}" for k, v in top.items())
    + f"; the kind closest to SGD there (ratio nearest 1 on a log scale) is "
    f"`{(top.apply(lambda r: abs(np.log(r)))).idxmin()}`. For Gaussian noise each ratio "
    f"carries a Monte Carlo relative error of about sqrt(2/S) = "
    f"{np.sqrt(2 / P['direction_draws']):.2f} with S = {P['direction_draws']} draws."
))

# %% [markdown]
# ## Cost of a step
#
# One step of each kind is timed on the same network and one batch of $B$ training images
# (forward and backward on the batch, then the noise and the update), interleaved and
# repeated; the ratio is the median time over that of a plain large-batch step.

# %%
torch.manual_seed(0)
cost_model = build_model(P["model"], width=P["width"], norm=P["norm"]).to(P["device"])
x_cost = EN.pooled_inputs(data.train_x[: P["large_batch"]], 32).float().to(P["device"])
y_cost = data.train_y[: P["large_batch"]].to(P["device"])
costs = EN.measure_step_costs(
    cost_model, x_cost, y_cost, ["none", *P["kinds"]], num_samples=P["num_samples"],
    curvature_samples=P["curvature_samples"], lanczos_steps=P["lanczos_steps"],
    repeats=P["cost_repeats"], moment_samples=P["moment_samples"],
    moment_probes=P["moment_probes"] or None,
)
display(costs.round(3))
fig, ax = plt.subplots(figsize=(7, 3.2))
sns.barplot(data=costs, x="kind", y="ratio", color="C0", ax=ax)
for i, goal in enumerate(costs["goal"]):
    if pd.notna(goal):
        ax.plot([i - 0.4, i + 0.4], [goal, goal], color="C3", lw=2)
ax.axhline(1.0, color="k", lw=0.8, ls="--")
ax.set_ylabel("time / plain large-batch step")
ax.set_title(f"Cost per step (red: goal), B={P['large_batch']}, device={P['device']}\n{label}")
plt.show()

# %% [markdown]
# The sub-sampled and true-Fisher kinds cost one extra forward and backward pass on $M$
# examples; isotropic and diagonal noise one forward and a batched backward of
# `moment_probes` probes on $M$ examples {eq}`eq-ch9-probes`; the curvature kinds
# `lanczos_steps` curvature-vector products on `curvature_samples` examples plus the
# Lanczos bookkeeping on $P$-vectors. The same settings were used in training.

# %% [markdown]
# ## Verdict
#
# The verdicts come from paired differences over seeds (same initialisation and batch
# order): a kind *closes the gap* if its test error is significantly below large-batch SGD
# and not significantly above small-batch SGD (95% t-intervals).

# %%
gaps = EN.classify_gap(EN.gap_analysis(records))
display(gaps.round(4))
table = EN.verdict_table(summary, gaps, costs)
display(table.round(3))
ref = gaps.set_index("label")
tab = table.set_index("label")
gap_size = ref.loc[EN.LARGE, "mean"] - ref.loc[EN.SMALL, "mean"]
gap_ci = ref.loc[EN.LARGE, "diff_small_ci"]
gap_significant = bool(pd.notna(gap_ci) and abs(gap_size) > gap_ci)
noisy = table[~table["label"].isin([EN.SMALL, EN.LARGE])]
closers = noisy[noisy["verdict"] == "closes the gap"]["label"].tolist()
narrowers = noisy[noisy["verdict"] == "narrows the gap"]["label"].tolist()
better = noisy[noisy["verdict"] == "better than large-batch SGD (no gap)"]["label"].tolist()
worse = noisy[noisy["verdict"] == "worse than large-batch SGD"]["label"].tolist()
slower = noisy[noisy["train_error"] > tab.loc[EN.LARGE, "train_error"]
               + noisy["train_error_ci"].fillna(0)]["label"].tolist()
best = noisy.loc[noisy["test_error"].idxmin()]
lines = [
    f"- Large-batch SGD alone ends at test error {tab.loc[EN.LARGE, 'test_error']:.3f} against "
    f"{tab.loc[EN.SMALL, 'test_error']:.3f} for small-batch SGD: a gap of {gap_size:+.3f} "
    f"(paired 95% interval ±{gap_ci:.3f}; "
    f"{'significant' if gap_significant else 'not significant at this scale'}), with train "
    f"errors {tab.loc[EN.LARGE, 'train_error']:.3f} and {tab.loc[EN.SMALL, 'train_error']:.3f}.",
    (f"- Kinds that close the gap: {', '.join(closers) if closers else 'none'}; that narrow "
     f"it: {', '.join(narrowers) if narrowers else 'none'}."
     if gap_significant else
     f"- There is no gap to close at this scale; kinds significantly better than large-batch "
     f"SGD alone: {', '.join(better) if better else 'none'}."),
    f"- Significantly worse than large-batch SGD alone: {', '.join(worse) if worse else 'none'}."
    f" Noisy runs whose mean train error exceeds large-batch SGD's by more than their own "
    f"interval (slower optimisation): {', '.join(slower) if slower else 'none'}.",
    f"- Best noisy configuration: {best['label']} at test error "
    f"{best['test_error']:.3f} ± {best['test_error_ci']:.3f} (verdict: {best['verdict']}"
    + (f"; closes {100 * best['closed']:.0f}% of the gap" if gap_significant else "")
    + f"; step cost {best['step_cost']:.2f}x a plain large-batch step).",
    f"- Sharpness: small batch {tab.loc[EN.SMALL, 'sharpness']:.1f}, large batch "
    f"{tab.loc[EN.LARGE, 'sharpness']:.1f}, noisy runs from {noisy['sharpness'].min():.1f} "
    f"({noisy.loc[noisy['sharpness'].idxmin(), 'label']}) to {noisy['sharpness'].max():.1f} "
    f"({noisy.loc[noisy['sharpness'].idxmax(), 'label']}).",
]
cost_of = dict(zip(costs["kind"], costs["ratio"], strict=True))
for kind, goal in EN.COST_GOALS.items():
    if kind in cost_of:
        lines.append(f"- Cost of `{kind}`: {cost_of[kind]:.2f}x a plain step (goal <= {goal}x, "
                     f"{'met' if cost_of[kind] <= goal else 'missed'}).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# - The update {eq}`eq-ch9-update` separates the noise level (temperature $T$) from the
#   learning rate and the batch size; $T = 1/b - 1/B$ reproduces the small-batch direction
#   covariance per step {eq}`eq-ch9-tstep`, $T = B/b^2 - 1/B$ the noise accumulated per
#   epoch {eq}`eq-ch9-tepoch`.
# - Six noise kinds have the covariances derived above, verified against dense matrices.
#   Sub-sampled and true-Fisher noise cost one weighted backward pass
#   {eq}`eq-ch9-weighted`; isotropic and diagonal noise a batched backward of a few probes
#   with the exact target covariance {eq}`eq-ch9-probes`; Hessian and GGN square roots come
#   from Lanczos {eq}`eq-ch9-lanczos`.
# - Whether injected noise buys back small-batch generalisation at equal epochs is answered
#   by the verdict table above, computed from this run; at equal learning rate a large batch
#   also takes $B/b$ times fewer steps, and noise cannot replace the missing steps.

# %%
display(Markdown(provenance_markdown(profile, P, wall_time_s=clock.seconds,
                                     data_identity=identity)))
