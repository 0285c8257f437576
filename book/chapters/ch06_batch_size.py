# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 6. Batch size, noise scale and the generalization gap
#
# The batch size sets how much noise SGD carries: the trace of the mini-batch covariance
# falls like $1/B$. Combined with the learning rate it gives the learning-rate/batch ratio
# $\eta/B$, the diffusion coefficient of SGD's stochastic differential equation (called a
# "temperature" by {cite}`smith2018bayesian,jastrzebski2017three`), from which the linear
# and square-root learning-rate scaling rules follow. The gradient noise scale
# $B_{\rm simple} = \operatorname{tr} D/\|\bar g\|^2$ {cite}`mccandlish2018empirical`
# predicts the batch size beyond which larger batches stop saving steps. This chapter
# derives these relations, measures them on a small network trained on a CIFAR-10 subset
# {cite}`krizhevsky2009learning` with the training engine, and compares test error across
# batch sizes and learning rates, at equal epochs and at equal steps, over several seeds
# {cite}`keskar2017large,hoffer2017train`.

# %% tags=["parameters", "remove-cell"]
profile = "default"
dataset = "cifar10"
seed = 0
n_train = 1000
n_test = 1000
n_val = 1000
image_size = 16
model = "mlp"
width = 64
trace_n = 256
trace_batch_sizes = [1, 4, 16, 64, 128]
trace_samples = 200
track_batch_size = 32
track_lr = 0.1
track_epochs = 10
steps_batch_sizes = [8, 16, 32, 64, 128, 256]
steps_base_lr = 0.1
steps_base_batch = 32
steps_lr_multipliers = [1.0, 2.0]
steps_max_epochs = 40
target_error = 0.5
eval_every_examples = 256
gen_batch_sizes = [16, 64, 256]
gen_base_lr = 0.05
gen_base_batch = 16
gen_epochs = 8
grid_batch_sizes = [16, 32, 64]
grid_lrs = [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8]
grid_seeds = [0, 1, 2, 3]
grid_epochs = 30
select_seeds = [100]
fit_error = 0.05
noise_seeds = [0, 1, 2]
n_sim = 2000
trace_z_max = 3.0
noise_scale_factor = 2.0
gap_margin = 0.03
alpha = 0.05
device = "cpu"

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from sgdnoise.chapters import ch06_batch_size as ch6
from sgdnoise.chapters.ch01_lemma1 import trace_vs_batch_study
from sgdnoise.data import to_float
from sgdnoise.grads import num_params, per_example_grads
from sgdnoise.plotting import source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, scale_label, show_verdicts, tex_html
from sgdnoise.stats import loglog_fit
from sgdnoise.train import TrainConfig

P = ch6.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
torch.manual_seed(P.seed)
verdicts = {}
B_SIMPLE_MD = r"$B_{\rm simple}$"

# %% [markdown]
# (sec-ch6-trace)=
# ## 6.1 Noise trace and the learning-rate/batch ratio
#
# With $B$ indices drawn with replacement, $\operatorname{Cov}(g_B) = D/B$ (chapter 1), hence
#
# $$
# \begin{aligned}
# \operatorname{tr}\operatorname{Cov}(g_B) &= \frac{\operatorname{tr}D}{B}
# &&\text{(with replacement)},\\
# \operatorname{tr}\operatorname{Cov}(g_B) &= \frac{\operatorname{tr}D}{B}\,\frac{N-B}{N-1}
# &&\text{(without replacement)} .
# \end{aligned}
# $$ (eq-ch6-trace)
#
# One SGD step $\theta_{k+1} = \theta_k - \eta\bar g(\theta_k) - \eta\xi_k$ with
# $\operatorname{Cov}\xi_k = D/B$ is the Euler step, of length $\eta$ in time $t = k\eta$, of
#
# $$
# d\theta = -\nabla L(\theta)\,dt + \sqrt{\tfrac{\eta}{B}\,D(\theta)}\;dW_t ,
# $$ (eq-ch6-sde)
#
# because the Euler–Maruyama increment of {eq}`eq-ch6-sde` over a time step $\eta$ has mean
# $-\eta\nabla L$ and covariance $\eta\cdot\frac{\eta}{B}D = \eta^2 D/B$, exactly the first
# two moments of the SGD update. The drift does not involve $\eta$ or $B$; the diffusion
# depends on them only through the learning-rate/batch ratio $\eta/B$ (the package's
# {py:func}`~sgdnoise.train.lr_batch_ratio`). Smith & Le
# {cite}`smith2018bayesian` write the noise scale of sampling without replacement as
# $g = \eta(N/B - 1) \approx \eta N/B$ (the finite-population factor of
# {eq}`eq-ch6-trace` times $N$).
#
# **Linear scaling rule.** Keeping $\eta/B$ fixed when $B$ changes keeps {eq}`eq-ch6-sde`
# unchanged, so, as long as the SDE describes SGD ($\eta$ small enough), trajectories in
# time $t$ are statistically the same; an epoch is $N/B$ steps of length $\eta$, i.e. time
# $N\eta/B$, also unchanged. Hence: multiply $\eta$ by $k$ when $B$ is multiplied by $k$
# {cite}`goyal2017accurate`. The SDE is only an approximation: Li, Malladi & Arora
# {cite}`li2021validity` give conditions under which it (and with it linear scaling) holds
# and show it failing when the noise is small relative to the gradient or $\eta$ is large;
# Smith, Dherin, Barrett & De {cite}`smith2021origin` show that at finite $\eta$ SGD
# follows, on average, gradient flow on a modified loss with an implicit regularizer
# $\frac{\eta}{4}\,\mathbb E\|\nabla L_{\rm batch}\|^2$, whose noise-dependent part scales
# like $\eta/B$: a second reason why $\eta/B$ matters, which also holds beyond the SDE limit.
#
# **Square-root scaling rule.** Keeping instead the covariance of one update,
# $\eta^2 D/B$, fixed requires $\eta \propto \sqrt B$ {cite}`krizhevsky2014one,hoffer2017train`.
# It preserves the size of each random kick but not $\eta/B$, which falls like $B^{-1/2}$.

# %%
small, identity, base = ch6.prepare(P)
LABEL = source_label(profile, identity)
SCALE = scale_label(profile, identity)
in_shape = tuple(small["train_x"].shape[1:])
net = ch6.build_net(P, in_shape)
x_all = to_float(small["train_x"])
y_all = small["train_y"]
G = per_example_grads(net, torch.nn.functional.cross_entropy, x_all[: P.trace_n],
                      y_all[: P.trace_n]).double()
tv = trace_vs_batch_study(G, P.trace_batch_sizes, num_samples=P.trace_samples, seed=P.seed)
TR_COV = tex_html(r"\operatorname{tr}\operatorname{Cov}(g_B)")
display(Markdown(f"Monte Carlo traces from {P.trace_samples} mini-batches per batch size, on "
                 f"the gradients of {P.trace_n} examples at initialisation, against the formula:"))
display(tv[["scheme", "batch_size", "mc_trace", "mc_se", "formula", "z"]]
        .rename(columns={"scheme": "sampling", "batch_size": "batch size",
                         "mc_trace": TR_COV + ", Monte Carlo",
                         "mc_se": "standard error", "formula": TR_COV + ", formula",
                         "z": "z-score"})
        .style.format(precision=3).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: the Monte Carlo points sit on the formula lines; without replacement the trace falls below $1/B$ as $B$ approaches $N$. Trace of the mini-batch gradient covariance against $B$ at initialisation: Monte Carlo estimates (dots, ±2 standard errors) and the formula (lines), with and without replacement. Computed by {py:func}`sgdnoise.chapters.ch01_lemma1.trace_vs_batch_study`.", "name": "fig-ch6-trace"}, "image": {"alt": "Log-log chart of the trace of the mini-batch gradient covariance against the batch size: Monte Carlo points with error bars on the formula lines, with and without replacement."}}
fig, ax = plt.subplots(figsize=(6.2, 3.8))
for j, (scheme, grp) in enumerate(tv.groupby("scheme")):
    ax.errorbar(grp.batch_size, grp.mc_trace, yerr=2 * grp.mc_se, fmt="o", color=f"C{j}",
                label=f"Monte Carlo, {scheme}")
    ax.plot(grp.batch_size, grp.formula, "-", color=f"C{j}", label=f"formula, {scheme}")
ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=r"$\mathrm{tr\,Cov}(g_B)$",
       title=f"{P.model} at init, P={num_params(net)}, N={P.trace_n}\n{LABEL}")
ax.legend(loc="lower left")
plt.show()

# %%
fit_w = loglog_fit(*tv[tv.scheme == "with replacement"][["batch_size", "mc_trace"]].T.values)
verdicts["trace"] = ch6.verdict_trace(tv.z.tolist(), fit_w["slope"], fit_w["slope_se"],
                                      z_max=P.trace_z_max, samples=P.trace_samples,
                                      scale=SCALE)
display(Markdown(verdicts["trace"].sentence))

# %% [markdown]
# Without replacement the trace drops below $1/B$ as $B$ approaches $N$.
#
# ## 6.2 The gradient noise scale
#
# Take the local quadratic model $L(\theta - \varepsilon v) \approx L - \varepsilon\,\bar
# g^\top v + \frac{\varepsilon^2}{2} v^\top H v$ and a step along $v = g_B$ with mean
# $\bar g$ and covariance $\Sigma/B$ ($\Sigma = D$). By Lemma 2 (chapter 3),
#
# $$
# \begin{aligned}
# \mathbb E\,[L(\theta) - L(\theta - \varepsilon g_B)] ={}& \varepsilon\|\bar g\|^2 \\
# &{}- \frac{\varepsilon^2}{2}\Big(\bar g^\top H\bar g +
#   \frac{\operatorname{tr}(H\Sigma)}{B}\Big).
# \end{aligned}
# $$ (eq-ch6-decrease)
#
# This concave parabola in $\varepsilon$ is maximised at
#
# $$
# \begin{aligned}
# \varepsilon_{\rm opt}(B) &= \frac{\|\bar g\|^2}{\bar g^\top H\bar g +
#   \operatorname{tr}(H\Sigma)/B} = \frac{\varepsilon_{\max}}{1 + B_{\rm noise}/B},\\
# \varepsilon_{\max} &= \frac{\|\bar g\|^2}{\bar g^\top H \bar g},\\
# B_{\rm noise} &= \frac{\operatorname{tr}(H\Sigma)}{\bar g^\top H\bar g},
# \end{aligned}
# $$ (eq-ch6-epsopt)
#
# with best decrease $\Delta L_{\rm opt}(B) = \Delta L_{\max}/(1 + B_{\rm noise}/B)$,
# $\Delta L_{\max} = \|\bar g\|^4/(2\bar g^\top H\bar g)$. If $H = hI$, the $h$ cancels and
#
# $$
# B_{\rm noise} = B_{\rm simple} = \frac{\operatorname{tr}\Sigma}{\|\bar g\|^2}
# = \frac{\operatorname{tr} D}{\|\bar g\|^2} ,
# $$ (eq-ch6-bsimple)
#
# which needs only gradients. **Steps vs examples.** If every step makes the progress
# $\Delta L_{\rm opt}(B)$ and $B_{\rm noise}$ stays roughly constant, reaching a fixed loss
# takes $S(B) = S_{\min}(1 + B_{\rm noise}/B)$ steps, with $S_{\min}$ the steps at infinite
# batch, and $E = SB = E_{\min}(1 + B/B_{\rm noise})$ examples with
# $E_{\min} = S_{\min}B_{\rm noise}$. Below $B_{\rm noise}$ doubling $B$ nearly halves the
# steps; above it, steps barely fall while the examples double: $B_{\rm noise}$ is the
# *critical batch size* {cite}`mccandlish2018empirical`. (The package checks
# {eq}`eq-ch6-epsopt` against a brute-force search and Monte Carlo in its tests.)
#
# ### $B_{\rm simple}$ along training
#
# For each of a few seeds we train the network once with a constant learning rate and
# measure $B_{\rm simple}$ on the whole training subset after every epoch ($N$
# per-example gradients: exact finite-sum values, no estimator bias); the same seeds then
# run the steps sweep of §6.3, so that each seed yields one ratio
# $B_{\rm noise}/B_{\rm simple}$.

# %%
noise_seeds, tracks, steps_best = ch6.noise_scale_seeds(
    P, small, base, progress=lambda it: tqdm(it, desc="noise-scale seeds"))
track = tracks[tracks.seed == P.noise_seeds[0]]
B_SIMPLE = tex_html(r"B_{\rm simple}")
display(Markdown(f"The tracked run of seed {P.noise_seeds[0]} (batch size "
                 f"{P.track_batch_size}, learning rate {P.track_lr:g}), one row per epoch:"))
display(track[["epoch", "train_loss", "train_error", "trace_D", "grad_norm_sq", "b_simple"]]
        .rename(columns={"epoch": "epoch", "train_loss": "training loss (nats)",
                         "train_error": "training error",
                         "trace_D": tex_html(r"\operatorname{tr} D"),
                         "grad_norm_sq": tex_html(r"\lVert \bar g \rVert^2"),
                         "b_simple": B_SIMPLE})
        .style.format({B_SIMPLE: "{:.0f}", "epoch": "{:.0f}"}, precision=3).hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: how far $B_{\\rm simple}$ moves while the training error falls; the value the verdict uses is the one at the first epoch whose training error reaches the target of §6.3. $B_{\\rm simple} = \\operatorname{tr} D/\\lVert \\bar g \\rVert^2$ on the whole training subset (left axis, log scale) and the training error (right axis) along one constant-learning-rate SGD run. Computed by {py:func}`sgdnoise.train.noise_scale.noise_scale_of_model` via {py:class}`sgdnoise.train.noise_scale.NoiseScaleTracker`.", "name": "fig-ch6-track"}, "image": {"alt": "Line chart against the epoch of one training run: the gradient noise scale B simple on a log axis and the training error on a second axis."}}
fig, ax1 = plt.subplots(figsize=(6.2, 3.8))
l1 = ax1.plot(track.epoch, track.b_simple, "o-", color="C0",
              label=r"$B_{\rm simple} = \mathrm{tr}\,D/\Vert\bar g\Vert^2$")
ax1.set(yscale="log", xlabel="epoch", ylabel=r"$B_{\rm simple}$")
ax2 = ax1.twinx()
l2 = ax2.plot(track.epoch, track.train_error, "s--", color="C1", label="training error")
ax2.axhline(P.target_error, color="C1", lw=0.8, ls=":")
ax2.set_ylabel("training error")
ax2.grid(False)
ax1.legend(l1 + l2, [ln.get_label() for ln in l1 + l2], loc="upper center",
           bbox_to_anchor=(0.5, -0.2), ncol=2)
ax1.set_title(f"B = {P.track_batch_size}, η = {P.track_lr:g}, seed {P.noise_seeds[0]}\n{LABEL}")
plt.show()

# %% [markdown]
# (sec-ch6-steps)=
# ## 6.3 Steps to a target error against batch size
#
# For each batch size and seed we train with the engine (plain SGD, no momentum, constant
# learning rate) until the error on the *whole* training subset first falls to the target
# (the value is in the table below), with learning rates
# $\eta_0\sqrt{B/B_0}\cdot m$ for a few multipliers $m$, keeping the fewest steps per
# $B$, a coarse stand-in for the tuned learning rate the theory assumes. Then we fit
# $S(B) = S_{\min}(1 + B_{\rm noise}/B)$ per seed
# ({py:func}`~sgdnoise.chapters.ch06_batch_size.fit_steps_vs_batch`).

# %%
display(Markdown(f"Per seed: the fit of steps to training error {P.target_error:g} "
                 f"against batch size, and {B_SIMPLE_MD} of the tracked run at the first "
                 "epoch that reached that error."))
display(noise_seeds.assign(ratio=noise_seeds.b_noise / noise_seeds.b_simple)
        [["seed", "b_noise", "s_min", "e_min", "rmse_log", "n", "b_simple", "epoch",
          "ratio"]]
        .rename(columns={"seed": "seed", "b_noise": tex_html(r"B_{\rm noise}"),
                         "s_min": tex_html(r"S_{\min}") + " (steps)",
                         "e_min": tex_html(r"E_{\min}") + " (examples)",
                         "rmse_log": "rms residual of log steps",
                         "n": "batch sizes fitted", "b_simple": B_SIMPLE,
                         "epoch": B_SIMPLE + " measured at epoch",
                         "ratio": tex_html(r"B_{\rm noise}/B_{\rm simple}")})
        .style.format({tex_html(r"B_{\rm noise}"): "{:.0f}", tex_html(r"S_{\min}") + " (steps)":
                       "{:.0f}", tex_html(r"E_{\min}") + " (examples)": "{:,.0f}",
                       B_SIMPLE: "{:.0f}"}, precision=2, na_rep="no fit")
        .hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: below the fitted $B_{\\rm noise}$ (dotted) the steps fall almost like $1/B$ and the examples stay flat; above it the steps level off and the examples grow; the dashed line is $B_{\\rm simple}$. Steps (top) and examples (bottom) to reach the target training error against $B$, at the best learning rate per $B$, for each seed (markers), with the fit of each seed (lines). Computed by {py:func}`sgdnoise.chapters.ch06_batch_size.steps_sweep` and {py:func}`sgdnoise.chapters.ch06_batch_size.fit_steps_vs_batch`.", "name": "fig-ch6-steps"}, "image": {"alt": "Two log-log charts against the batch size, one line per seed: steps to the target training error falling and levelling off, and examples to the target flat then rising, with vertical lines at the fitted critical batch size and at B simple."}}
fig, axes = plt.subplots(2, 1, figsize=(6.2, 6.8), sharex=True)
bb = np.geomspace(min(P.steps_batch_sizes), max(P.steps_batch_sizes), 100)
for j, row in enumerate(noise_seeds.itertuples()):
    pts = steps_best[steps_best.seed == row.seed]
    c = f"C{j}"
    axes[0].loglog(pts.batch_size, pts.steps, "os^v"[j % 4], color=c, label=f"seed {row.seed}")
    axes[1].loglog(pts.batch_size, pts.examples, "os^v"[j % 4], color=c)
    if np.isfinite(row.b_noise):
        axes[0].loglog(bb, row.s_min * (1 + row.b_noise / bb), "-", color=c, lw=1)
        axes[1].loglog(bb, row.e_min * (1 + bb / row.b_noise), "-", color=c, lw=1)
        for ax in axes:
            ax.axvline(row.b_noise, color=c, lw=0.8, ls=":")
            ax.axvline(row.b_simple, color=c, lw=0.8, ls="--")
axes[0].legend(loc="upper right")
axes[0].set(ylabel="steps to target", title=f"Training error ≤ {P.target_error:g}\n{LABEL}")
axes[1].set(xlabel="batch size B", ylabel="examples to target")
plt.tight_layout()
plt.show()

# %%
noise_rates = ch6.boundary_rates(
    lambda b: ch6.alike_rule(b, np.log(P.noise_scale_factor), P.alpha),
    np.log(noise_seeds.b_noise / noise_seeds.b_simple).dropna(),
    margin=float(np.log(P.noise_scale_factor)), n_sim=P.n_sim, seed=P.seed,
    unit="on the log scale")
verdicts["noise_scale"] = ch6.verdict_noise_scale(
    noise_seeds, P.target_error, factor=P.noise_scale_factor, alpha=P.alpha, scale=SCALE,
    rates=noise_rates)
display(Markdown(verdicts["noise_scale"].sentence))

# %% [markdown]
# $B_{\rm simple}$ is the cheap gradient-only estimate of the critical batch size; it
# equals $B_{\rm noise}$ only if $H \propto I$, and it changes along training.
#
# ## 6.4 Three scaling rules at a fixed epoch budget
#
# Every run below trains for the same number of epochs, so larger batches take
# proportionally fewer steps. The learning rate is $\eta_0$ at $B_0$ and is either kept
# constant, scaled linearly, or scaled by $\sqrt{B/B_0}$. This is one seed and a short
# budget, shown as an illustration; §6.6 asks the question over seeds, with tuned learning
# rates and budgets long enough to converge.

# %%
gen_cfg = TrainConfig(**{**base.to_dict(), "lr": P.gen_base_lr,
                         "base_batch_size": P.gen_base_batch, "epochs": P.gen_epochs})
final, hist = ch6.generalization_sweep(gen_cfg, small, P.gen_batch_sizes,
                                       progress=lambda it: tqdm(it, desc="runs"))
RULE_NAMES = {"none": "constant", "linear": "linear", "sqrt": "square root"}
display(Markdown(f"Final errors after {P.gen_epochs} epochs, one row per scaling rule and "
                 "batch size (a run shared by two rules appears under each):"))
display(final.assign(rule=final.rule.map(RULE_NAMES))
        [["rule", "batch_size", "lr", "lr_batch_ratio", "steps", "train_error", "test_error",
          "gap", "loss_gap"]]
        .rename(columns={"rule": "learning-rate scaling", "batch_size": "batch size",
                         "lr": "learning rate", "lr_batch_ratio": "η/B", "steps": "steps",
                         "train_error": "training error", "test_error": "test error",
                         "gap": "test − training error",
                         "loss_gap": "test − training loss (nats)"})
        .style.format({"η/B": "{:.2e}", "learning rate": "{:.3g}"}, precision=3)
        .hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: which scaling rule keeps the test error flat as $B$ grows at this short budget, and how much of the change is a change of the gap. Final test error (top) and test minus training error (bottom) against $B$ for constant, linear and square-root learning-rate scaling, all at the same epoch budget, one seed. Computed by {py:func}`sgdnoise.chapters.ch06_batch_size.generalization_sweep`.", "name": "fig-ch6-rules"}, "image": {"alt": "Two line charts against the batch size, one line per learning-rate scaling rule (constant, linear, square root): final test error and the difference between test and training error."}}
fig, axes = plt.subplots(2, 1, figsize=(6.2, 6.0), sharex=True)
RULE_COLOURS = {"constant": "C0", "linear": "C1", "square root": "C2"}
named = final.assign(rule=final.rule.map(RULE_NAMES))
for ax, col, lab in ((axes[0], "test_error", "test error"),
                     (axes[1], "gap", "test − training error")):
    sns.lineplot(data=named, x="batch_size", y=col, hue="rule", palette=RULE_COLOURS,
                 style="rule", markers=True, dashes=False, ax=ax, legend=ax is axes[0])
    ax.set(xscale="log", ylabel=lab, xlabel="batch size B")
    ax.set_xticks(P.gen_batch_sizes, [str(b) for b in P.gen_batch_sizes])
    ax.set_xticks([], minor=True)
axes[0].legend(title="η scaling", loc="upper left", bbox_to_anchor=(1.01, 1.0))
axes[0].set_title(f"{P.gen_epochs} epochs, η₀ = {P.gen_base_lr:g} at B₀ = {P.gen_base_batch}"
                  f"\n{LABEL}")
plt.tight_layout()
plt.show()

# %%
bmin, bmax, delta = ch6.rule_deltas(final)
display(Markdown(f"Test error change from $B = {bmin}$ to $B = {bmax}$: "
                 + ", ".join(f"{RULE_NAMES[r]} scaling {d:+.3f}" for r, d in delta.items())
                 + "."))

# %% [markdown]
# (sec-ch6-ratio)=
# ## 6.5 Is the ratio η/B all that matters?
#
# The linearly scaled runs share one value of $\eta/B$. If {eq}`eq-ch6-sde` describes
# training, their training-loss curves against *epochs* should coincide (below, one seed),
# and at a converged budget their final test errors should agree. The verdict at the end of
# §6.6 compares, over the evaluation seeds, the largest batch of the grid at the linearly
# scaled learning rate with the smallest batch at $\eta_0$.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: whether the solid lines (one value of $\\eta/B$) lie on top of each other while the dashed lines (other values) spread. Training loss per epoch of every distinct run of §6.4. Computed by {py:func}`sgdnoise.chapters.ch06_batch_size.generalization_sweep`.", "name": "fig-ch6-ratio"}, "image": {"alt": "Line chart of the training loss against the epoch for each distinct run of the scaling-rule sweep; solid lines share the learning-rate to batch ratio of the linear rule, dashed lines do not."}}
lin_ratio = float(final[final.rule == "linear"].lr_batch_ratio.iloc[0])
fig, ax = plt.subplots(figsize=(6.2, 3.8))
for j, ((b, lr), run) in enumerate(hist.groupby(["batch_size", "lr"], sort=True)):
    same = bool(np.isclose(lr / b, lin_ratio))
    ax.plot(run.epoch, run.train_loss, "-" if same else "--", color=f"C{j % 8}",
            label=f"B = {b}, η = {lr:.3g}, η/B = {lr / b:.2g}")
ax.set(xlabel="epoch", ylabel="training loss (nats)",
       title=f"Solid: η/B of the linear rule; dashed: other η/B\n{LABEL}")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
plt.show()

# %% [markdown]
# (sec-ch6-grid)=
# ## 6.6 Batch size and learning rate over seeds, at equal epochs and at equal steps
#
# The one-seed sweeps above cannot separate a real effect from run-to-run noise, they
# scale $\eta$ by a rule rather than tuning it, and their budget is too short to converge.
# Here every run uses plain SGD with a learning rate that decays to zero along a cosine
# over the run, so that each run ends with its noise annealed and its training error near
# its floor. Two budgets: **equal epochs** (the same number of epochs at every $B$, so
# $N/B$ steps per epoch) and **equal steps** (every $B$ gets the steps the smallest batch
# takes at equal epochs, so larger batches see proportionally more examples); the values
# are in the tables below.
#
# The learning rate is *chosen* and then *evaluated* on different seeds
# ({py:func}`~sgdnoise.chapters.ch06_batch_size.best_lr_per_batch`,
# {py:func}`~sgdnoise.chapters.ch06_batch_size.evaluation_jobs`). First a selection grid
# trains every batch size at every learning rate on the selection seeds; the best $\eta$ per
# $B$ and budget is the one with the lowest *validation* error, on examples held out of the
# training split, so the test set plays no part in the choice. The grid reaches past the
# linearly scaled learning rate at the largest batch; when a batch size's best $\eta$ still
# sits at an edge of the grid, the comparison that uses it is not decided. Then the compared
# runs (smallest and largest $B$, each at its best $\eta$, and at $\eta_0$) are repeated on
# the evaluation seeds, and differences in test error are paired by seed.
#
# Two one-sided tests (TOST) decide equivalence: the difference counts as *equivalent*
# when both one-sided $t$-tests, at level $\alpha$, put its mean inside a margin in test
# error that each verdict states, "higher" or "lower" when the two-sided interval excludes
# zero. A comparison whose runs did not reach
# the convergence level of training error is not decided either. Each verdict carries the
# false-positive rate and the power of its rule, measured by simulation with the decision
# harness of chapter 8 ({py:mod}`sgdnoise.decide.harness`) at the seed-to-seed spread
# measured here.

# %%
grid_cfg = ch6.grid_config(base)
selection = ch6.batch_lr_grid(grid_cfg, small, P.grid_batch_sizes, P.grid_lrs,
                              P.select_seeds, epochs=P.grid_epochs,
                              progress=lambda it: tqdm(it, desc="selection grid"))
best = ch6.best_lr_per_batch(selection)
evaluation = ch6.run_grid_jobs(grid_cfg, small, ch6.evaluation_jobs(best, lr_fixed=P.gen_base_lr),
                               P.grid_seeds, epochs=P.grid_epochs,
                               batch_sizes=P.grid_batch_sizes,
                               progress=lambda it: tqdm(it, desc="evaluation runs"))
ev = ch6.grid_evidence(selection, evaluation, P.gen_base_lr)
steps_equal = int(selection[selection.budget == "equal steps"].steps.max())
display(Markdown(
    f"Selection grid: {len(P.grid_batch_sizes)} batch sizes × {len(P.grid_lrs)} learning "
    f"rates on {len(P.select_seeds)} selection seed"
    f"{'s' if len(P.select_seeds) > 1 else ''}; equal epochs = {P.grid_epochs} epochs, "
    f"equal steps = {steps_equal:,} steps. Best learning rate per batch size (chosen on "
    f"{ev['selected_on']}), with the mean errors of the selection seeds at it:"))
display(best.drop(columns=["selected_on", "lrs_tried"])
        .rename(columns={"budget": "budget", "batch_size": "batch size", "best_lr": "best η",
                         "mean": "validation error", "test_error": "test error",
                         "train_error": "training error", "at_edge": "at an edge of the grid"})
        .assign(**{"at an edge of the grid": lambda f: f["at an edge of the grid"]
                   .map({True: "yes", False: "no"})})
        .style.format({"best η": "{:g}"}, precision=3)
        .hide(axis="index"))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: where each batch size's curve has its minimum, whether that minimum moves to larger $\\eta$ as $B$ grows, and whether it is bracketed by the grid. Mean final test error of the selection seeds against the learning rate, one line per batch size, at equal epochs (top) and equal steps (bottom); a diverged run counts as error 1. Computed by {py:func}`sgdnoise.chapters.ch06_batch_size.batch_lr_grid`.", "name": "fig-ch6-grid"}, "image": {"alt": "Two line charts of the test error against the learning rate on a log axis, one line per batch size, for the equal-epochs and the equal-steps budgets."}}
fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
shown = selection.assign(test_error=np.where(selection.status == "finished",
                                             selection.test_error, 1.0))
bpal = dict(zip(sorted(shown.batch_size.unique()),
                sns.color_palette("colorblind", shown.batch_size.nunique()), strict=True))
for ax, bud in zip(axes, ("equal epochs", "equal steps"), strict=True):
    sns.lineplot(data=shown[shown.budget == bud], x="lr", y="test_error", hue="batch_size",
                 palette=bpal, style="batch_size", markers=True, dashes=False,
                 errorbar=None, ax=ax, legend=ax is axes[0])
    ax.set(xscale="log", ylabel="test error", xlabel="learning rate η", title=bud)
    ax.set_xticks(P.grid_lrs, [f"{v:g}" for v in P.grid_lrs])
    ax.set_xticks([], minor=True)
axes[0].legend(title="batch size B", loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.suptitle(LABEL)
plt.tight_layout()
plt.show()

# %%
display(Markdown(f"Evaluation runs on {len(P.grid_seeds)} seeds, mean over seeds (a diverged "
                 "run counts as error 1):"))
display(evaluation.assign(diverged=evaluation.status != "finished")
        .groupby(["budget", "batch_size", "lr"], as_index=False)
        .agg(steps=("steps", "max"), epochs=("epochs", "max"),
             train_error=("train_error", "mean"), test_error=("test_error", "mean"),
             diverged=("diverged", "sum"))
        .rename(columns={"budget": "budget", "batch_size": "batch size", "lr": "η",
                         "steps": "steps", "epochs": "epochs",
                         "train_error": "training error", "test_error": "test error",
                         "diverged": "diverged runs"})
        .style.format({"η": "{:g}", "steps": "{:,.0f}", "epochs": "{:.0f}"}, precision=3)
        .hide(axis="index"))

# %%
small_b, large_b = ev["small"], ev["large"]
rate_kw = dict(margin=P.gap_margin, n_sim=P.n_sim, seed=P.seed)
verdicts["epochs"] = ch6.verdict_epoch_budget(
    ev["fixed"], ev["tuned"], small=small_b, large=large_b, lr_fixed=P.gen_base_lr,
    best_small=ev["best_small"], best_large=ev["best_large"], edges=ev["edges_epochs"],
    train_errors=ev["fit_epochs"], fixed_train_errors=ev["fit_fixed"], fit_error=P.fit_error,
    margin=P.gap_margin, alpha=P.alpha, scale=SCALE,
    rates=ch6.epoch_rates(ev["fixed"], ev["tuned"], alpha=P.alpha, **rate_kw))
verdicts["steps"] = ch6.verdict_equal_steps(
    ev["tuned_steps"], small=small_b, large=large_b, edges=ev["edges_steps"],
    train_errors=ev["fit_steps"], fit_error=P.fit_error, margin=P.gap_margin, alpha=P.alpha,
    scale=SCALE, rates=ch6.boundary_rates(
        lambda b: ch6.no_worse_rule(b, P.gap_margin, P.alpha), ev["tuned_steps"],
        unit="in test error", **rate_kw))
verdicts["ratio"] = ch6.verdict_lr_batch_ratio(
    ev["ratio"], small=small_b, large=large_b, lr_small=P.gen_base_lr, lr_large=ev["lr_ratio"],
    train_errors=ev["fit_ratio"], fit_error=P.fit_error, margin=P.gap_margin, alpha=P.alpha,
    scale=SCALE, rates=ch6.boundary_rates(
        lambda b: ch6.alike_rule(b, P.gap_margin, P.alpha), ev["ratio"],
        unit="in test error", **rate_kw))
slope = (f"is {ev['slope']:.2f} (1 for the linear rule, 0.5 for the square root, 0 for "
         "none)" if np.isfinite(ev["slope"]) else "cannot be estimated: fewer than two best "
         "learning rates lie inside the grid")
display(Markdown(
    f"The slope of the best learning rate against $B$ on log-log axes at equal epochs "
    f"{slope}.\n\n"
    + "\n\n".join(verdicts[k].sentence for k in ("epochs", "steps", "ratio"))))

# %% [markdown]
# (sec-ch6-verdicts)=
# ## What the numbers say
#
# Each row is one claim of the essay this chapter tests, with the verdict computed from the
# numbers above by the chapter's verdict functions
# ({py:func}`~sgdnoise.chapters.ch06_batch_size.verdict_trace`,
# {py:func}`~sgdnoise.chapters.ch06_batch_size.verdict_noise_scale`,
# {py:func}`~sgdnoise.chapters.ch06_batch_size.verdict_epoch_budget`,
# {py:func}`~sgdnoise.chapters.ch06_batch_size.verdict_equal_steps`,
# {py:func}`~sgdnoise.chapters.ch06_batch_size.verdict_lr_batch_ratio`). The trace formula
# is a *derivation check* (the code matches the algebra); the other four are *claims about
# SGD*, each decided over several seeds by a rule whose false-positive rate and power are
# stated with it. The chapter's claims echo the large-batch literature
# {cite}`shallue2019measuring`; how far a tuned learning rate closes the gap at full scale is
# chapter 8's question.

# %%
show_verdicts("ch06_batch_size", list(verdicts.values()))

# %%
display(Markdown(provenance_markdown(profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity, device=P.device)))
