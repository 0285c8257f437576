# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---


# %% [markdown]
# # 4. Stochastic stability and sharpness
#
# The source essay states a "micro-theorem": the radius of stability of a strict minimum is
# inversely proportional to the spectral radius of the Hessian. This chapter makes the
# statement precise on toy problems where everything can be computed, derives what SGD with
# Hessian-shaped noise actually does near a minimum (a discrete Lyapunov equation), measures
# the radius by simulation, fits the exponent over the small-step range the statement is
# about, relates it to the linear-stability conditions of {cite}`wu2018sgd`, and ends with
# two landscapes where the shape of the noise decides which minimum SGD leaves: one sharp
# and one flat minimum in one dimension, and a sharp basin in ten dimensions where noise
# aligned with the Hessian competes with isotropic noise of the same size
# {cite}`zhu2019anisotropic`, with two controls that say why one of them leaves more often.
#
# All toy problems here are synthetic: the chapter needs no data set. Every code cell calls
# {py:mod}`sgdnoise.chapters.ch04_stability`. Each verdict is either a *derivation check*
# (the simulation matches algebra derived on the page) or a *claim about SGD* (a statement
# that could have come out either way); a claim about SGD is decided by a test whose
# false-positive rate and power are measured by simulation and printed beside it.

# %% tags=["parameters", "remove-cell"]
profile = "default"
seed = 0
lr = 0.1
lyap_sigma = 0.7
lyap_runs = 20000
lyap_steps = 300
radius_eps = 1.0
radius_delta = 0.1
radius_sigma = 0.7
iso_sigma = 0.7
radius_steps = 300
radius_runs = 2000
sharpness_min = 0.5
sharpness_max = 19.0
num_sharpness = 14
well_depth = 0.1
well_sigma = 0.2
well_runs = 600
well_steps = 300
bisection_iters = 14
radius_fit_max = 1.0
radius_margin = 0.25
n_boot = 300
wme_n = 64
wme_runs = 400
wme_steps = 200
wme_lr_max = 3.0
wme_num_lrs = 30
wme_batch_sizes = [1, 2, 4, 8, 16, 32, 64]
wells_sigma = 1.0
wells_batch_size = 1
wells_runs = 4000
wells_steps = 1000
confidence = 0.95
alpha = 0.05
rate_sims = 4000
count_effect = 0.05
lyap_hessian = [2.0, 0.6, 0.8]
lyap_z_max = 4.0
div_q_min = 1.8
div_q_max = 2.2
div_num = 21
div_steps = 400
div_runs = 200
div_x0 = 1.0
div_threshold = 1000.0
div_margin = 0.01
div_below_max = 0.05
div_above_min = 0.5
spectrum = [1.0, 0.25]
well_wall = 4.0
wme_as_grid = 600
wme_as_batches = 20000
wme_edge_fraction = 0.5
wme_tol_steps = 0.5
wells_n = 100
wells_lam_sharp = 8.0
wells_lam_flat = 1.0
wells_c_sharp = -1.0
wells_c_flat = 1.0
aniso_dim = 10
aniso_top = 10.0
aniso_bulk = 0.5
aniso_depth = 0.1
aniso_wall = 4.0
aniso_traces = [0.25, 0.5, 0.75, 1.0]
aniso_runs = 2000
aniso_radius = 0.3
aniso_steps = 300

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from sgdnoise.chapters import ch04_stability as ch04
from sgdnoise.plotting import color_of, source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, show_verdicts, tex_html

P = ch04.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
identity = {"source": "synthetic (toy landscapes)", "n_train": None}
LABEL = source_label(profile, {"source": "toy landscapes"})
# one colour per quantity, kept in every figure (colour-blind-safe palette)
COLOR = {"GD": color_of("gd"), "isotropic": color_of("isotropic"),
         "noise ∝ H": color_of("sgd"), "well": color_of("hessian"),
         "flat": color_of("anisotropic")}
PAD = [{"selector": "th, td", "props": "padding: 0.15em 0.7em"}]  # table cell spacing
# column names of the studies' tables written with typeset math in the tables shown
MATH_HEADERS = {
    "R_wall (well)": tex_html(r"R_{\text{wall}}") + " (well)",
    "mean-square η_max (eq)": "mean-square " + tex_html(r"\eta_{\max}"),
    "almost-sure η_max": "almost-sure " + tex_html(r"\eta_{\max}"),
    "tr Σ": tex_html(r"\operatorname{tr}\Sigma"),
    "tr(HΣ)": tex_html(r"\operatorname{tr}(H\Sigma)"),
    "E[δᵀHδ]": "stationary " + tex_html(r"\mathrm{E}[\delta^\top H\delta]"),
}


def math_headers(name):
    return MATH_HEADERS.get(name, name)


def interval(est, lo, hi, digits=3):
    """One interval notation for every table: 'estimate [low, high]'."""
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def steps_text(t):
    """A median exit step for a table: the number, or 'not reached' (most runs stayed)."""
    return "not reached" if not np.isfinite(t) else f"{t:.0f}"

# %% [markdown]
# ## 4.1 Definition
#
# Let $\theta^*$ be a strict local minimum of $L$ and let $(\theta_t)$ be the SGD iterates
# $\theta_{t+1} = \theta_t - \eta g_t$. Fix a tolerance $\varepsilon > 0$, a failure
# probability $\delta \in (0, 1)$ and a horizon $T$.
#
# **Definition (stochastic stability).** $\theta^*$ is *stochastically stable with radius
# $r$* for $(\varepsilon, \delta)$ if for every start $\theta_0$ with
# $\|\theta_0 - \theta^*\| < r$,
#
# $$
# \Pr\Big(\max_{1\le t\le T} \|\theta_t-\theta^*\| < \varepsilon\Big) \;\ge\; 1-\delta .
# $$ (eq-ch4-def)
#
# The *radius of stability* $r(\varepsilon, \delta)$ is the largest such $r$ (it is at most
# $\varepsilon$, and it is $0$ when even a start at $\theta^*$ fails). The source leaves $T$
# implicit ("for all $t$"); with noise that does not vanish at $\theta^*$, every run
# eventually leaves any ball, so a finite horizon is needed for {eq}`eq-ch4-def` to be
# non-trivial; section 4.3 states the one used. The tolerance $\varepsilon$ is a distance
# in parameter space, as in the essay's definition; section 4.3 also measures a basin
# whose wall is a level set of the loss.
# %% [markdown]
# (sec-ch4-quadratic)=
# ## 4.2 The quadratic with noise proportional to H
#
# **Noise model.** Near $\theta^*$ write $\delta = \theta - \theta^*$,
# $L(\theta) \approx \tfrac12 \delta^\top H\delta$. We use the Gaussian (CLT) model of
# chapter 3 with the noise covariance proportional to the Hessian, as it is near a minimum
# of a well-specified likelihood (where $D \approx F \approx H$):
#
# $$
# g_t = H\delta_t + \xi_t,\qquad \xi_t \sim \mathcal N\!\big(0,\ C\big),\qquad
# C = \frac{\sigma^2}{B} H .
# $$ (eq-ch4-noise)
#
# For comparison we also use isotropic noise $C = \sigma_{\rm iso}^2 c\, I / B$ of fixed
# size, with $c = \bar\rho\,\operatorname{tr}(H/\rho)/d$: $\bar\rho$ is the geometric
# midpoint of the sharpness grid of section 4.3 and $d$ the dimension, so that at
# $\rho = \bar\rho$ (and $\sigma_{\rm iso} = \sigma$) both models inject the same trace
# $\operatorname{tr} C = \sigma^2\operatorname{tr} H/B$.
#
# **Mean and linear stability.** With $A = I - \eta H$ the iterates obey
# $\delta_{t+1} = A \delta_t - \eta \xi_t$, so $\mathbb E\, \delta_t = A^t \delta_0$. In
# $H$'s eigenbasis $A$ is diagonal with entries $1 - \eta\lambda_i$, and
# $\mathbb E\,\delta_t \to 0$ for every $\delta_0$ iff $|1 - \eta\lambda_i| < 1$ for all
# $i$, i.e.
#
# $$
# \begin{aligned}
# &0 < \eta\lambda_i < 2 \quad\text{for every eigenvalue } \lambda_i \text{ of } H,\\
# &\text{equivalently}\quad \eta\,\lambda_{\max} < 2 .
# \end{aligned}
# $$ (eq-ch4-linear)
#
# If $\eta\lambda_{\max} > 2$ the component along the top eigenvector is multiplied by
# $|1 - \eta\lambda_{\max}| > 1$ at each step and grows geometrically, whatever the noise.
# In neural-network training this boundary is not a curiosity: full-batch GD drives
# $\lambda_{\max}$ up until $\eta\lambda_{\max}$ hovers at 2, the *edge of stability*
# {cite}`cohen2021gradient`, and a learning rate that starts above $2/\lambda_{\max}$ can
# make the loss spike and then settle in a flatter region where
# $\eta\lambda_{\max} < 2$ holds again, the *catapult phase* {cite}`lewkowycz2020large`. On
# the quadratic, whose curvature cannot change, runs above the boundary simply diverge.
#
# **Stationary covariance.** Let $\Sigma_t = \operatorname{Cov} \delta_t$. Since $\xi_t$ is
# independent of $\delta_t$, $\Sigma_{t+1} = A \Sigma_t A^\top + \eta^2 C$, and unrolling
# gives $\Sigma_t = A^t\Sigma_0 (A^t)^\top + \eta^2 \sum_{k<t} A^k C (A^k)^\top$. Under
# {eq}`eq-ch4-linear` the series converges and its limit $\Sigma$ solves the discrete
# Lyapunov equation
#
# $$
# \Sigma = (I-\eta H)\,\Sigma\,(I-\eta H)^\top + \eta^2 C .
# $$ (eq-ch4-lyap)
#
# In the eigenbasis of $H$ ($H = U \operatorname{diag}(\lambda) U^\top$, $C' = U^\top C U$)
# the equation reads $\Sigma'_{ij} = (1 - \eta\lambda_i)(1 - \eta\lambda_j) \Sigma'_{ij} +
# \eta^2 C'_{ij}$, so $\Sigma'_{ij} = \eta^2 C'_{ij} / \big(1 - (1 -
# \eta\lambda_i)(1 - \eta\lambda_j)\big)$. For $C = \sigma^2H/B$ ($C'$ diagonal) this gives
# $\Sigma'_{ii} = \eta^2\sigma^2\lambda_i / \big(B\, \eta\lambda_i (2 - \eta\lambda_i)\big)$:
#
# $$
# \Sigma = \frac{\eta\sigma^2}{B}\,(2I-\eta H)^{-1},\qquad
# s(\lambda) = \sqrt{\frac{\eta\sigma^2}{B\,(2-\eta\lambda)}} ,
# $$ (eq-ch4-std)
#
# where $s(\lambda)$ is the stationary standard deviation along an eigenvector of
# eigenvalue $\lambda$. The factor $(2 - \eta\lambda)^{-1}$ is what the discrete-time
# solution keeps and the small-$\eta$ (SDE) limit drops; exact discrete-time fluctuations of
# this kind are worked out in {cite}`ziyin2022strength`. With isotropic noise the same
# computation gives $s_{\rm iso}(\lambda) = \sqrt{\eta\sigma_{\rm iso}^2 c / (B\lambda(2 -
# \eta\lambda))}$. The striking consequence of {eq}`eq-ch4-std`: **with noise proportional
# to $H$ the stationary spread in parameter space hardly depends on the curvature** (it is
# $\sqrt{\eta\sigma^2/2B}$ for $\eta\lambda \ll 1$ and blows up only as
# $\eta\lambda \to 2$). Sharper directions receive more noise, and the stronger pull back
# cancels it exactly in the small-step limit.

# %% tags=["remove-input"]
h11, h12, h22 = P.lyap_hessian
display(Markdown(
    f"**Check.** {P.lyap_runs:,} independent chains of {P.lyap_steps} steps from "
    f"$\\delta_0 = 0$ on the non-diagonal matrix $H = \\begin{{pmatrix}} {h11:g} & {h12:g} "
    f"\\\\ {h12:g} & {h22:g} \\end{{pmatrix}}$ with noise $C = \\sigma^2 H$, "
    f"$\\sigma = {P.lyap_sigma:g}$, $\\eta = {P.lr:g}$. The table compares the covariance of "
    "their final iterates with the solution of {eq}`eq-ch4-lyap` computed by "
    "{py:func}`sgdnoise.stability.stationary_covariance`, entry by entry; the check passes "
    f"when every entry agrees within {P.lyap_z_max:g} standard errors."))
chk = ch04.lyapunov_study(P)
display(chk.table().rename(columns={"Lyapunov": "Lyapunov equation",
                                    "simulated": "simulation", "std. error": "standard error",
                                    "z": "z-score"})
        .style.format({"z-score": "{:.2f}"}, precision=5).hide(axis="index")
        .set_table_styles(PAD))
v_lyap = ch04.lyapunov_verdict(chk.z, chk.runs, z_max=P.lyap_z_max, scale=P.scale)
display(Markdown(f"**{v_lyap.outcome}**: {v_lyap.sentence}"))

# %% tags=["remove-input"]
display(Markdown(
    f"**Linear-stability limit.** Next, GD and noisy SGD (noise $\\propto$ curvature, "
    f"$\\sigma = {P.radius_sigma:g}$) on a one-dimensional quadratic for $\\eta\\lambda$ "
    f"from {P.div_q_min:g} to {P.div_q_max:g}, {P.div_runs} runs each; a run counts as "
    f"diverged when $\\lvert x_t \\rvert$ exceeds {P.div_threshold:g} within {P.div_steps} "
    f"steps from $x_0 = {P.div_x0:g}$. The boundary {{eq}}`eq-ch4-linear` is confirmed "
    f"when, for both, at most {P.div_below_max:.0%} of the runs diverge at every "
    f"$\\eta\\lambda < {2 - P.div_margin:g}$ and at least {P.div_above_min:.0%} do at every "
    f"$\\eta\\lambda > {2 + P.div_margin:g}$."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: both curves jump from 0 to most runs at $\\eta\\lambda = 2$ (dotted line). Fraction of runs that diverge against $\\eta\\lambda$ for GD and for SGD with noise proportional to the curvature, on a one-dimensional quadratic. Computed by {py:func}`sgdnoise.chapters.ch04_stability.divergence_study`.", "name": "fig-ch4-divergence"}, "image": {"alt": "Line chart: fraction of diverged runs (0 to 1) against eta times lambda from 1.8 to 2.2 for GD and noisy SGD; both are 0 below 2 and near 1 above 2."}}
div = ch04.divergence_study(P)
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(div.q, div.gd, "o-", color=COLOR["GD"], label="GD")
ax.plot(div.q, div.sgd, "s--", color=COLOR["noise ∝ H"],
        label=f"SGD, noise ∝ H (σ = {P.radius_sigma:g})")
ax.axvline(2.0, color="k", lw=1, ls=":", label="ηλ = 2")
ax.set(xlabel="ηλ", ylabel=f"fraction diverged ({P.div_steps} steps)",
       title=f"Linear stability limit · {LABEL}")
ax.legend(loc="upper left")  # inside the axes: the PNG stays 6.5 in wide, its text >= 11 px
plt.show()

# %% tags=["remove-input"]
v_lin = ch04.linear_boundary_verdict(div.q, div.gd, div.sgd, margin=P.div_margin,
                                     below_max=P.div_below_max, above_min=P.div_above_min,
                                     scale=P.scale)
display(Markdown(f"**{v_lin.outcome}**: {v_lin.sentence}"))

# %% [markdown]
# Additive noise enters the recursion only through the term $-\eta\xi_t$, which cannot
# change the multiplier $1 - \eta\lambda$; so the noise cannot move the linear boundary.
# Just above 2 the growth factor $|1 - \eta\lambda|$ is barely above 1, so a noisy run
# whose effective start happens to be small can stay below the divergence threshold for the
# whole horizon.
#
# (sec-ch4-radius)=
# ## 4.3 Measuring the radius of stability
#
# **Exact per-run radius on the quadratic.** Take $H = \rho\operatorname{diag}(1, \tfrac14)$,
# so $\rho(H) = \rho$. Fix a start direction $u$ (unit vector). Because the recursion is
# affine, $\delta_t = r A^t u + n_t$, where $n_t = -\eta \sum_{k<t} A^{t-1-k} \xi_k$ does
# not depend on $r$. For one run (one noise sequence), the event
# "$\|\delta_t\| < \varepsilon$" is $\|r a_t + n_t\| < \varepsilon$ with $a_t = A^t u$,
# which holds on an interval of $r$ (the preimage of a ball under an affine map is convex).
# The intersection over $t$ is again an interval, containing $r = 0$ when the run survives
# from $\theta^*$. Its right end is the run's *critical radius*
#
# $$
# \begin{aligned}
# r_k &= \min_{1\le t\le T} r_t^+,\\
# r_t^+ &= \frac{-a_t\!\cdot n_t
#   + \sqrt{(a_t\!\cdot n_t)^2 - \|a_t\|^2(\|n_t\|^2-\varepsilon^2)}}{\|a_t\|^2},
# \end{aligned}
# $$ (eq-ch4-crit)
#
# the positive root of $\|a_t\|^2r^2 + 2(a_t\cdot n_t)r + \|n_t\|^2 - \varepsilon^2 = 0$
# ($r_k = 0$ if some $\|n_t\| \ge \varepsilon$). From start $r u$ a fraction
# $\#\{k : r_k > r\}/M$ of $M$ runs survives, which is $\ge 1 - \delta$ exactly when $r$
# does not exceed the $\delta$-quantile of $(r_k)$. So the radius in {eq}`eq-ch4-def` is
# the smallest, over start directions, of the $\delta$-quantiles of the critical radii; we
# use the two eigenvectors and the diagonal as start directions. This replaces a bisection
# on $r$ by a closed form (a test checks it against bisection and against direct
# simulation), and makes the bootstrap cheap: resample runs, recompute the quantiles,
# refit.
#
# **Non-quadratic basin.** The Gaussian well
# $L(\delta) = h\big(1 - \exp(-\delta^\top H\delta/2h)\big)$ has Hessian $H$ at the
# minimum, depth $h$, and flattens beyond a few widths $\sqrt{h/\lambda}$. We count a run
# as escaped when $\|\delta_t\| \ge \varepsilon$ *or* it leaves the basin,
# $\delta^\top H\delta \ge w h$ for a wall factor $w$ (along the top eigenvector this is at
# distance $R_{\rm wall} = \sqrt{w h/\rho}$). The noise is {eq}`eq-ch4-noise` with $H$ the
# Hessian at the minimum. Here the critical radii come from a bisection on $r$ run by run
# (vectorised over runs, sharpness values and directions, with the same noise sequence at
# every bisection step).
#
# **What theory predicts.** (i) Quadratic, noise $\propto H$: by {eq}`eq-ch4-std` the noise
# part $n_t$ has a spread that is nearly independent of $\rho$ while $\eta\rho \ll 1$;
# $\rho$ enters only through how fast the chain mixes (more independent excursions within
# the horizon $T$ when $\eta\lambda$ is larger) and through the factor
# $1/(2 - \eta\lambda)$, which makes the spread blow up as $\eta\rho \to 2$ where $r$
# collapses to 0. So the prediction is $\alpha \approx 0$ over most of the range, not
# $\alpha = 1$; the margin $\varepsilon - r$ should scale like $s(\rho)$ times a slowly
# varying extreme-value factor. (ii) Quadratic, isotropic noise:
# $s_{\rm iso} \propto \rho^{-1/2}$, so sharper minima are *more* stable in parameter space
# ($\alpha < 0$). (iii) Gaussian well of fixed depth: $r \le R_{\rm wall} \propto
# \rho^{-1/2}$, and the noise margin, nearly constant in $\rho$, is subtracted from a
# shrinking $R_{\rm wall}$, so the local exponent
# $d \log(1/r)/d \log \rho = R_{\rm wall}/(2r)$ exceeds $\tfrac12$ and grows as $r \to 0$.
#
# **Where the exponent is fitted.** The relation between $\log r$ and $\log\rho$ is curved:
# near $\eta\rho = 2$ the factor $1/(2 - \eta\rho)$ of {eq}`eq-ch4-std` takes over and any
# radius collapses, whatever the small-step behaviour. The micro-theorem is a statement
# about the small-step regime, so the exponent is fitted only over the grid points with
# $\eta\rho$ at most the fit limit stated below, where that factor changes by less than
# a factor two; the points beyond are shown, not fitted. A radius of exactly 0 (the run
# fails from $\theta^*$) or exactly $\varepsilon$ (every start of the ball survives) is
# censored rather than measured, and is left out too.
#
# **Decision.** "Inversely proportional" is read as an exponent within $\pm m$ of 1, with
# $m$ half the distance from 1 to the nearest competing law, $\alpha = \tfrac12$ (the width
# of a basin of fixed depth shrinks like $\rho^{-1/2}$). The bootstrap over runs gives each
# exponent a standard error; two one-sided tests put an exponent inside the band
# $[1 - m, 1 + m]$, a test against each edge puts it outside.

# %% tags=["remove-input"]
rad = ch04.radius_study(P)
display(Markdown(
    f"Here the tolerance is $\\varepsilon = {P.radius_eps:g}$, the failure probability "
    f"$\\delta = {P.radius_delta:g}$ and the horizon $T = {P.radius_steps}$ steps for the "
    f"quadratic ({P.radius_runs:,} runs per sharpness) and $T = {P.well_steps}$ for the well "
    f"({P.well_runs:,} runs, depth $h = {P.well_depth:g}$, wall factor $w = {P.well_wall:g}$, "
    f"$\\sigma = {P.well_sigma:g}$); $H = \\rho\\operatorname{{diag}}"
    f"({', '.join(f'{v:g}' for v in P.spectrum)})$, $\\eta = {P.lr:g}$, "
    f"$\\sigma = {P.radius_sigma:g}$ and $\\sigma_{{\\rm iso}} = {P.iso_sigma:g}$ with "
    f"$c = {rad.iso_scale:.3g}$ ($\\bar\\rho = {rad.rho_mid:.3g}$). The exponent is fitted "
    f"over $\\eta\\rho \\le {P.radius_fit_max:g}$, the band is $1 \\pm {P.radius_margin:g}$ "
    f"and every test has level {P.alpha:g}. The table lists, per sharpness, the radius in "
    "each setting, the stationary standard deviation $s(\\rho)$ of {eq}`eq-ch4-std`, the "
    "margin $(\\varepsilon - r)/s$ in those units, and the wall distance of the well."))
display(rad.table().style.format(precision=3).format_index(math_headers, axis="columns")
        .hide(axis="index").set_table_styles(PAD))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: inside the shaded fit range no setting falls along the dashed line of slope \u22121 that the micro-theorem predicts. Radius of stochastic stability against the sharpness \u03c1(H) in the three settings (log-log; crosses at the bottom: radius 0), with the wall distance of the Gaussian well. Computed by {py:func}`sgdnoise.chapters.ch04_stability.radius_study`.", "name": "fig-ch4-radius"}, "image": {"alt": "Log-log chart of the radius of stability against the sharpness for three settings: the quadratic with Hessian noise stays near epsilon, the quadratic with isotropic noise rises from zero, the Gaussian well falls less steeply than slope minus one; the fit range is shaded."}}
colors = dict(zip(ch04.SETTINGS, (COLOR["noise ∝ H"], COLOR["isotropic"], COLOR["well"]),
                  strict=True))
fig, ax = plt.subplots(figsize=(6.8, 4.0))
ax.axvspan(rad.rho.min(), P.radius_fit_max / P.lr, color="0.92", zorder=0,
           label=f"fit range, ηρ ≤ {P.radius_fit_max:g}")
for k, r in rad.radius.items():
    pos = r > 0
    ax.plot(rad.rho[pos], r[pos], "o-", color=colors[k], label=k)
    if (~pos).any():
        ax.plot(rad.rho[~pos], np.full((~pos).sum(), 0.02), "x", color=colors[k], ms=8)
ax.plot(rad.rho, rad.well.wall_radius(rad.rho), "k:",
        label=r"$R_{\rm wall}$ (well)")
ax.plot(rad.rho, 0.5 * rad.rho[0] / rad.rho, color="0.4", lw=0.9, ls="--",
        label="slope −1 (α = 1)")
ax.set(xscale="log", yscale="log", xlabel="sharpness ρ(H)",
       ylabel=f"radius (ε = {P.radius_eps:g}, δ = {P.radius_delta:g})",
       title=f"Radius of stability vs sharpness · {LABEL}")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
plt.show()

# %% tags=["remove-input"]
display(Markdown("The exponents over the fit range, with their bootstrap standard errors and "
                 f"{1 - 2 * P.alpha:.0%} intervals:"))
display(rad.fit_table(P.alpha).style.hide(axis="index").set_table_styles(PAD))
for k, err in rad.no_fit.items():
    display(Markdown(f"{k}: no fit ({err})."))
v_radius = ch04.radius_verdict(rad.fits, margin=P.radius_margin, alpha=P.alpha,
                               scale=P.scale, rates=ch04.radius_rates(rad, P))
display(Markdown(f"**{v_radius.outcome}**: {v_radius.sentence}"))

# %% [markdown]
# Theory says where to look: on the quadratic with noise $\propto H$ the radius should stay
# nearly flat until $\eta\rho$ approaches 2 (the column $(\varepsilon - r)/s$ gives the
# margin in units of the stationary standard deviation); with isotropic noise flat minima
# should be the unstable ones; only the well, whose width shrinks with sharpness at fixed
# depth, can give a radius that falls with $\rho$, and then like the width,
# $\rho^{-1/2}$, not like $\rho^{-1}$.
# %% [markdown]
# (sec-ch4-wme)=
# ## 4.4 Wu, Ma & E: sharpness and non-uniformity
#
# {cite}`wu2018sgd` study over-parameterised models where every example is fitted exactly,
# so all per-example losses share the minimum and the gradient noise vanishes there. The
# simplest instance is a 1-D finite sum $\ell_i(x) = \tfrac12 a_i x^2$ with $a_i \ge 0$:
# Hessians $H_i = a_i$, sharpness $H = \operatorname{mean} a_i$, non-uniformity
# $s^2 = \operatorname{mean} a_i^2 - H^2$. An SGD step with batch $\mathcal B$ of size $B$
# is $x_{t+1} = (1 - \eta h_{\mathcal B}) x_t$ with
# $h_{\mathcal B} = \operatorname{mean}_{i\in\mathcal B} a_i$, and $h_{\mathcal B}$ is
# independent of $x_t$. Hence
#
# $$
# \begin{aligned}
# \mathbb E\,x_{t+1}^2 &= \mathbb E(1-\eta h_{\mathcal B})^2\,\mathbb E x_t^2
# = \Big[(1-\eta H)^2 + \eta^2\,\mathrm{Var}(h_{\mathcal B})\Big]\mathbb E x_t^2,\\
# \mathrm{Var}(h_{\mathcal B}) &= \frac{s^2}{B}\,\frac{N-B}{N-1}
# \end{aligned}
# $$ (eq-ch4-wme)
#
# (Lemma 1 for scalars, batches drawn without replacement). The second moment stays bounded
# iff the bracket is $\le 1$; in the commuting multi-dimensional case the same computation
# per eigen-direction gives
# $\lambda_{\max}\big((I - \eta H)^2 + \tfrac{\eta^2}{B}\tfrac{N-B}{N-1}(\operatorname{mean}
# H_i^2 - H^2)\big) \le 1$. Expanding, the condition is
# $\eta \le 2H/\big(H^2 + s^2(N-B)/(B(N-1))\big)$: it contains the GD condition
# $\eta H \le 2$ (at $B = N$) and tightens with non-uniformity $s$ and small $B$; for small
# $\eta$ it reads roughly "sharpness $\le 2/\eta$ and $s \le \sqrt{B}/\eta$" up to the
# coupling between the two.
#
# Mean-square stability is not the only notion. A single run satisfies
# $\log|x_T| = \sum_t \log|1 - \eta h_{\mathcal B_t}|$, so by the law of large numbers it
# converges almost surely iff the Lyapunov exponent
# $\mathbb E \log|1 - \eta h_{\mathcal B}| < 0$. By Jensen,
# $2\, \mathbb E \log|1 - \eta h| \le \log \mathbb E(1 - \eta h)^2$, so mean-square
# stability implies almost-sure stability but not conversely: between the two boundaries
# typical runs converge while rare runs blow up and dominate the second moment. The phase
# diagram below draws $a_i$ from an exponential distribution (normalised to $H = 1$, so
# $s \approx 1$; {py:func}`sgdnoise.chapters.ch04_stability.wme_curvatures`) and simulates
# $T$ steps from $x_0 = 1$; a run "diverges" when $|x_T| > 1$. The simulated edge at each
# $B$ is the first $\eta$ of the grid where a given share of the runs diverge, so the true
# edge lies between that grid point and the one before it; a boundary agrees with the
# simulation at that $B$ when it lies within a set number of grid steps of this bracket.
# Which boundary a typical run follows is settled by the law of large numbers above, so
# this is a check of the derivation, not a claim that could go either way.

# %% tags=["remove-input"]
wme = ch04.wme_study(P)
display(Markdown(
    f"Here $N = {P.wme_n}$ examples, $T = {P.wme_steps}$ steps, {P.wme_runs} runs per "
    f"learning rate and batch size, {P.wme_num_lrs} learning rates up to "
    f"{P.wme_lr_max:g}; the edge is where at least {P.wme_edge_fraction:.0%} of the runs "
    f"diverge, and agreement means within {P.wme_tol_steps:g} grid step of the bracket. "
    "The table gives, per batch size, the two boundaries and the simulated edge."))
display(wme.table.rename(columns={"B": "batch size B", "simulated edge η": "simulated edge"})
        .style.format(precision=3).format("{:.2f}", subset=["simulated edge"])
        .format_index(math_headers, axis="columns").hide(axis="index")
        .set_table_styles(PAD))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: where the colour turns from dark to bright, and which of the two lines follows that edge. Stability phase diagram of the interpolating finite sum: colour = fraction of runs with $\\lvert x_T \\rvert > 1$ per learning rate and batch size, with the mean-square (Wu, Ma & E) and almost-sure boundaries. Computed by {py:func}`sgdnoise.chapters.ch04_stability.wme_study`.", "name": "fig-ch4-wme"}, "image": {"alt": "Heat map of the fraction of diverged runs over learning rate (horizontal) and batch size (vertical), with the mean-square boundary (cyan) well to the left of the divergence edge at small batches and the almost-sure boundary (white, dashed) along the edge."}}
Bs = np.array(wme.batch_sizes)
fig, ax = plt.subplots(figsize=(6.8, 4.2))
im = ax.pcolormesh(wme.lrs, np.arange(len(Bs)), wme.div_frac, shading="nearest",
                   cmap="magma", vmin=0, vmax=1)
fig.colorbar(im, ax=ax, label=r"fraction with $|x_T| > 1$")
ax.plot(wme.table["mean-square η_max (eq)"], np.arange(len(Bs)), "c-o",
        label="mean-square boundary (Wu, Ma & E)")
ax.plot(wme.table["almost-sure η_max"], np.arange(len(Bs)), "w--s",
        label=r"almost-sure boundary $\mathrm{E}\,\log|1-\eta h_{\mathcal{B}}| = 0$")
ax.set_yticks(np.arange(len(Bs)), [str(b) for b in Bs])
ax.set(xlabel="learning rate η (sharpness H = 1)", ylabel="batch size B",
       title=f"N = {P.wme_n}, s = {np.sqrt(np.var(wme.a)):.2f} · {LABEL}")
leg = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
leg.get_frame().set_facecolor("0.6")  # the white almost-sure line stays visible
plt.show()

# %% tags=["remove-input"]
v_wme = ch04.wme_verdict(wme.table, wme.grid_step, tol_steps=P.wme_tol_steps, scale=P.scale)
display(Markdown(f"**{v_wme.outcome}**: {v_wme.sentence}"))

# %% [markdown]
# The mean-square boundary of {eq}`eq-ch4-wme` (cyan) moves to smaller $\eta$ as $B$
# shrinks: by that criterion small batches with non-uniform curvatures cannot stay at a
# minimum that GD ($B = N$, boundary $\eta = 2/H$) finds stable. The white line is the
# almost-sure boundary that a single run obeys.
#
# (sec-ch4-wells)=
# ## 4.5 One sharp and one flat minimum
#
# **Construction.** A one-dimensional finite sum of $N$ examples. On the sharp side of a
# ridge $x_r$ the per-example loss is
# $\ell_i(x) = \tfrac12 \lambda_s (x - c_s - u_i^s)^2$, on the flat side
# $\ell_i(x) = \tfrac12 \lambda_f (x - c_f - u_i^f)^2$, with offsets
# $u_i^w = \sigma z_i^w / \sqrt{\lambda_w}$ and standardised data $z^w$ (mean 0, mean square
# 1). Averaging, $L(x) = \tfrac12 \lambda_w (x - c_w)^2 + \sigma^2/2$ on side $w$: the
# minima sit exactly at $c_s$ and $c_f$, with curvatures $\lambda_s$ and $\lambda_f$ and the
# same depth $\sigma^2/2$, and
# $x_r = (\sqrt{\lambda_s}\, c_s + \sqrt{\lambda_f}\, c_f)/(\sqrt{\lambda_s} +
# \sqrt{\lambda_f})$ is where the two parabolas meet (the barrier is the same from both
# sides). The per-example gradients on side $w$ have variance
# $\lambda_w^2 \operatorname{Var}(u^w) = \sigma^2\lambda_w$: SGD's noise is proportional to
# the local Hessian, $\lambda_s/\lambda_f$ times larger in the sharp well.
#
# **Experiment.** Starts uniform in an interval centred at the ridge (so GD splits them
# 50/50), then $T$ steps of GD, GD with isotropic Gaussian noise whose variance matches the
# SGD noise variance averaged over the two minima (the "equal trace" comparison), and SGD
# with batches of size $B$ drawn with replacement. SGD is said to select the flat minimum
# more strongly when a one-sided test of two fractions (Agresti–Caffo: one success and one
# failure added to each, {py:func}`~sgdnoise.chapters.ch04_stability.difference_pvalue`)
# puts its fraction above both others.

# %% tags=["remove-input"]
ws = ch04.wells_study(P)
wells, sel = ws.wells, ws.selection
display(Markdown(
    f"Here $N = {P.wells_n}$, $\\sigma = {P.wells_sigma:g}$, $T = {P.wells_steps}$ steps, "
    f"$B = {P.wells_batch_size}$, {P.wells_runs:,} runs per method. The minima sit at "
    f"{wells.c_sharp:g} ($\\lambda = {wells.lam_sharp:g}$) and {wells.c_flat:g} "
    f"($\\lambda = {wells.lam_flat:g}$); the ridge at {wells.ridge:.3f}; the barrier is "
    f"{wells.barrier:.3f}; $\\eta\\lambda_{{\\rm sharp}} = {P.lr * wells.lam_sharp:.2f} < 2$, "
    f"so GD keeps both minima. The table gives the fraction of runs ending in the flat "
    f"minimum with its {P.confidence:.0%} Wilson interval."))
tab = ws.table()
display(tab.assign(**{"fraction in flat minimum [interval]": [
    interval(f, lo, hi) for f, lo, hi in zip(tab["fraction in flat minimum"], tab["low"],
                                              tab["high"], strict=True)]})
        [["method", "fraction in flat minimum [interval]"]]
        .style.hide(axis="index").set_table_styles(PAD))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: the bar of SGD against the bar of isotropic noise of the same trace; GD stays near one half. Left: the two-well loss (equal depths, curvatures $\\lambda_s$ and $\\lambda_f$). Right: fraction of runs ending in the flat minimum per method, with Wilson intervals. Computed by {py:func}`sgdnoise.chapters.ch04_stability.wells_study`.", "name": "fig-ch4-wells"}, "image": {"alt": "Left: a loss curve with a narrow well on the left and a wide well on the right of equal depth. Right: bar chart of the fraction of runs ending in the flat well for GD (about one half), GD with isotropic noise and SGD (both higher)."}}
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(6.8, 3.6), width_ratios=(1, 1.2),
                               layout="constrained")
xs = np.linspace(wells.c_sharp - 0.8, wells.c_flat + 1.2, 400)
ax0.plot(xs, wells.loss(xs), "k")
ax0.axvline(wells.ridge, color="gray", ls=":")
ax0.set(xlabel="x", ylabel="L(x)", title="sharp (left), flat (right)")
frac = tab["fraction in flat minimum"].to_numpy()
err = np.clip([frac - tab["low"].to_numpy(), tab["high"].to_numpy() - frac], 0, 1)
ax1.bar(["GD", "isotropic", "SGD"], frac, yerr=err, capsize=4,
        color=[COLOR["GD"], COLOR["isotropic"], COLOR["noise ∝ H"]])
ax1.axhline(0.5, color="gray", ls=":")
ax1.set(ylim=(0, 1.05), ylabel="fraction in flat minimum",
        title=f"T = {P.wells_steps}, B = {P.wells_batch_size}")
fig.suptitle(LABEL)
plt.show()

# %% tags=["remove-input"]
v_wells = ch04.basin_verdict(sel, alpha=P.alpha, scale=P.scale,
                             rates=ch04.wells_rates(ws, P))
display(Markdown(f"**{v_wells.outcome}**: {v_wells.sentence}"))

# %% [markdown]
# GD stays where it starts, so about half its runs end on each side. A noisy method that
# leaves the sharp well more easily than the flat one drifts towards the flat minimum.
# SGD's noise is $\lambda_s/\lambda_f$ times stronger (per unit of variance) in the sharp
# well than in the flat one, while isotropic noise of the same average size also kicks
# runs out of the flat well. This is the mechanism behind the claim that SGD's anisotropic
# noise acts as an implicit regulariser towards flat minima {cite}`zhu2019anisotropic`;
# note that it is a statement about escape from basins of comparable depth, not about the
# radius of section 4.3, where noise $\propto H$ made the stationary spread independent of
# sharpness.
# %% [markdown]
# (sec-ch4-aniso)=
# ## 4.6 Anisotropic against isotropic noise of the same trace
#
# In one dimension, section 4.5 compares noise that depends on the position with noise that
# does not; it cannot compare noise *shapes*. {cite}`zhu2019anisotropic` do: near a minimum,
# one step of $-\eta\xi$ with $\operatorname{Cov}\xi = \Sigma$ raises the loss on average by
#
# $$
# \mathbb E\,\Delta L \approx \frac{\eta^2}{2}\,\operatorname{tr}(H\Sigma),
# $$ (eq-ch4-efficiency)
#
# their *escape efficiency*. At a fixed total noise $\operatorname{tr}\Sigma$,
# $\operatorname{tr}(H\Sigma)$ is largest when $\Sigma$ puts its variance along the sharp
# directions: for $\Sigma_H = \operatorname{tr}\Sigma\, H/\operatorname{tr}H$ (aligned with
# $H$, as SGD's noise is near a minimum) it is
# $\operatorname{tr}\Sigma\,\operatorname{tr}(H^2)/\operatorname{tr}H$, for isotropic
# $\Sigma_I = (\operatorname{tr}\Sigma/d) I$ it is
# $\operatorname{tr}\Sigma\,\operatorname{tr}H/d$, smaller unless all eigenvalues are equal.
# Zhu et al. conclude that aligned noise leaves sharp minima faster; a diffusion model with
# Hessian-shaped noise reaches the same preference for flat minima, with escape times that
# depend exponentially on the barrier over the curvature {cite}`xie2021diffusion`.
#
# **One step is not the stationary state.** Equation {eq}`eq-ch4-efficiency` is the rise
# of one kick from the minimum. Over many steps the pull back matters too: by the Lyapunov
# equation of section 4.2 with $\Sigma$ diagonal in $H$'s eigenbasis,
# $\operatorname{Var}\delta_i = \eta\Sigma_{ii}/(\lambda_i(2 - \eta\lambda_i))$, so
#
# $$
# \mathbb E[\delta^\top H\delta] = \sum_i \frac{\eta\,\Sigma_{ii}}{2 - \eta\lambda_i}
# \approx \frac{\eta}{2}\operatorname{tr}\Sigma \qquad (\eta\lambda_i \ll 1),
# $$ (eq-ch4-energy)
#
# the same for every shape of $\Sigma$ of a given trace: a sharp direction receives more
# noise and pulls back harder, in exact balance. So if aligned noise leaves an
# $H$-shaped basin more often, it is not because it raises the loss more on average. What
# differs is the *shape* of the distribution of $\delta^\top H\delta$: aligned noise puts
# most of it on the one sharp direction, where $\delta^\top H\delta \approx \lambda_1
# \delta_1^2$ has the heavy tail of one squared Gaussian, while isotropic noise spreads it
# over $d$ directions, a sum of $d$ squares with the same mean and a much lighter tail. A
# wall at a level of $\delta^\top H\delta$ (a level set of the loss) is reached first by
# the heavier tail. Two controls test this reading:
#
# * **noise along one flat direction**, of the same trace: the smallest
#   $\operatorname{tr}(H\Sigma)$ of the three, the same mean $\mathbb E[\delta^\top H\delta]$
#   and the heavy tail of one squared Gaussian. If the efficiency ordered the escape, it
#   would leave least often; if the tail does, it leaves more often than isotropic noise;
# * **a Euclidean exit**, $\|\delta\| \ge R$ instead of the wall: a distance in parameter
#   space, where the flat directions, weakly pulled back, carry most of $\|\delta\|^2$.
#   Here isotropic noise has the advantage.
#
# **Experiment.** A basin $L(\delta) = h\big(1 - \exp(-\delta^\top H\delta/2h)\big)$ in
# $d$ dimensions with one sharp direction and $d - 1$ flat ones; a run starts at the
# minimum and has escaped when $\delta^\top H\delta \ge w h$ (the Hessian wall), or in the
# control when $\|\delta\| \ge R$. For each total noise $\operatorname{tr}\Sigma$ of a grid,
# runs of GD with Gaussian noise $\Sigma_H$, $\Sigma_I$ and rank-one noise along one flat
# direction ({py:func}`sgdnoise.chapters.ch04_stability.anisotropic_escape`). One kind
# leaves more often than another when a one-sided test of two fractions says so at some
# trace, with Holm's correction over the traces, and at no trace the other way round.

# %% tags=["remove-input"]
an = ch04.anisotropy_study(P)
an_tab = an.table()
display(Markdown(
    f"Here $d = {P.aniso_dim}$, $\\lambda_1 = {P.aniso_top:g}$ and the other eigenvalues "
    f"{P.aniso_bulk:g} ($\\eta\\lambda_1 = {P.lr * P.aniso_top:g}$, so the factor "
    f"$1/(2 - \\eta\\lambda_1)$ of {{eq}}`eq-ch4-energy` raises the aligned kind's value "
    f"above $\\eta\\operatorname{{tr}}\\Sigma/2$), depth $h = {P.aniso_depth:g}$, wall "
    f"factor $w = {P.aniso_wall:g}$, Euclidean radius $R = {P.aniso_radius:g}$, "
    f"{P.aniso_runs:,} runs of $T = {P.aniso_steps}$ steps per kind, trace and exit. The "
    "table gives each kind's efficiency {eq}`eq-ch4-efficiency`, its stationary "
    "$\\mathrm{E}[\\delta^\\top H\\delta]$ {eq}`eq-ch4-energy`, the fraction of runs that "
    f"leave through the Hessian wall (with its {P.confidence:.0%} Wilson interval) and "
    "through the Euclidean ball, and the median exit step through the wall."))
display(an_tab.assign(**{
    "left through the wall [interval]": [interval(e, lo, hi) for e, lo, hi in
                                         zip(an_tab["escaped"], an_tab["low"],
                                             an_tab["high"], strict=True)],
    "median exit step": an_tab["median exit step"].map(steps_text)})
        [["tr Σ", "noise", "tr(HΣ)", "E[δᵀHδ]", "left through the wall [interval]",
          "escaped (Euclidean)", "median exit step"]]
        .rename(columns={"escaped (Euclidean)": "left the Euclidean ball"})
        .style.format({"tr Σ": "{:g}", "tr(HΣ)": "{:.3f}", "E[δᵀHδ]": "{:.4f}",
                       "left the Euclidean ball": "{:.3f}"})
        .format_index(math_headers, axis="columns").hide(axis="index").set_table_styles(PAD))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: through the Hessian wall (left) aligned noise and noise along one flat direction both leave more often than isotropic noise, although the flat direction has the smallest escape efficiency; through the Euclidean ball (right) the order changes. Fraction of runs that leave a sharp basin within T steps against the total noise $\\operatorname{tr}\\Sigma$, three noise shapes of the same trace (Wilson intervals on the left). Computed by {py:func}`sgdnoise.chapters.ch04_stability.anisotropy_study`.", "name": "fig-ch4-aniso"}, "image": {"alt": "Two line charts against the total noise trace: the escaped fraction of aligned, isotropic and one-flat-direction noise through the Hessian wall (left) and through a Euclidean ball (right)."}}
KIND_COLOR = dict(zip(ch04.NOISE_KINDS, (COLOR["noise ∝ H"], COLOR["isotropic"],
                                         COLOR["flat"]), strict=True))
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.6), sharey=True, layout="constrained")
for ax, ex in zip(axes, ch04.EXITS, strict=True):
    for kind, m in zip(ch04.NOISE_KINDS, "os^", strict=True):
        frac = an.escaped(kind, ex) / an.runs
        if ex == ch04.EXITS[0]:
            g = an_tab[an_tab["noise"] == kind]
            err = np.clip([g["escaped"] - g["low"], g["high"] - g["escaped"]], 0, 1)
            ax.errorbar(an.traces, frac, yerr=err, fmt=f"{m}-", color=KIND_COLOR[kind],
                        capsize=3, label=ch04.NOISE_NAMES[kind])
        else:
            ax.plot(an.traces, frac, f"{m}-", color=KIND_COLOR[kind])
    ax.set_xticks(an.traces, [f"{t:g}" for t in an.traces])
    ax.set(xlabel="tr Σ (total noise variance)", ylim=(-0.03, 1.05), title=ex)
axes[0].set_ylabel(f"left within {P.aniso_steps} steps")
fig.suptitle(f"d = {P.aniso_dim}, λ = ({P.aniso_top:g}, {P.aniso_bulk:g}, …) · {LABEL}")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
plt.show()

# %% tags=["remove-input"]
v_aniso = ch04.anisotropy_verdict(an, alpha=P.alpha, scale=P.scale,
                                  rates=ch04.anisotropy_rates(an, P))
v_mech = ch04.mechanism_verdict(an, alpha=P.alpha, scale=P.scale,
                                rates=ch04.anisotropy_rates(an, P, mechanism=True))
display(Markdown(f"**{v_aniso.outcome}**: {v_aniso.sentence}\n\n"
                 f"**{v_mech.outcome}** (mechanism): {v_mech.sentence}"))

# %% [markdown]
# The first line answers Zhu et al.'s question for this basin; the second asks whether
# their quantity explains the answer. By {eq}`eq-ch4-energy` the stationary column differs
# between kinds only through the factors $1/(2 - \eta\lambda_i)$: isotropic noise and the
# flat direction put almost nothing on the sharp direction and have nearly the same value,
# the aligned kind's is raised by the sharp direction's factor. Compare those two rows with
# the escaped fractions: what separates the kinds is how the energy is distributed, not how
# much of it there is. The Euclidean exit shows that "leaves more often" is a statement
# about a wall measured in the Hessian's metric: change the metric and the ranking can
# change.
#
# (sec-ch4-verdicts)=
# ## What the numbers say
#
# Each claim of the essay that this chapter tests, with the verdict computed from the
# numbers above by {py:mod}`sgdnoise.chapters.ch04_stability` (thresholds: the values
# named in each section), and the derivation checks of sections 4.2 and 4.4. For a claim
# about SGD the false-positive rate is how often its rule says "supported" when the claim
# is false at the edge of what it tolerates, and the power how often it does when the
# claim holds with the stated effect, both measured by simulating the rule.

# %% tags=["remove-input"]
show_verdicts("ch04_stability", [v_radius, v_wells, v_aniso, v_mech, v_lyap, v_lin, v_wme])

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
