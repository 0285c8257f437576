# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---


# %% [markdown]
# # 7. Saddle points
#
# Gradient descent does not converge to strict saddles from almost every start, but it can
# linger near them, and started exactly on a saddle's stable manifold it never leaves.
# Noise fixes this only through its component along the negative-curvature direction
# {cite}`ge2015escaping,jin2017escape`; mini-batch noise has such a component when the
# per-example gradients do ("correlated negative curvature", {cite}`daneshmand2018escaping`).
# This chapter derives the escape time law for isotropic noise, checks it, shows how SGD
# escapes with its own noise and slows down as the batch size $B$ grows to $N$, starts
# runs a distance $\delta$ off the stable manifold, and then asks the essay's question with
# a clock: within the number of steps that chapter 8's plan gives each batch size, and with
# the negative curvature much weaker than the positive one (as chapter 5 measures in
# trained networks), do very large batches get *stuck*, and is it their smaller noise that
# keeps them there? The problem is a synthetic toy landscape: the chapter needs no data
# set. Every code cell calls {py:mod}`sgdnoise.chapters.ch07_saddles`. Sections 7.2 to 7.4
# check derivations (each verdict there is a *derivation check*); section 7.5 decides two
# *claims about SGD*, each with the false-positive rate and power of its rule measured by
# simulation.

# %% tags=["parameters", "remove-cell"]
profile = "default"
seed = 0
lr = 0.1
gamma = 1.0
x0 = 1.0
iso_sigmas = [1e-08, 1e-07, 1e-06, 1e-05, 0.0001, 0.001, 0.01]
iso_runs = 2000
max_steps = 1500
n_data = 64
s_x = 0.3
s_y = 0.1
batch_sizes = [1, 2, 4, 8, 16, 32, 48, 56, 60, 62, 63, 64]
sgd_runs = 1000
noise_samples = 20000
n_boot = 300
escape_frac = 0.5
confidence = 0.95
gd_runs = 10
noise_z_max = 4.0
median_tol = 3.0
offsets = [0.0, 1e-06, 0.0001, 0.01]
offset_batch_sizes = [1, 8, 32, 60, 63, 64]
offset_runs = 1000
slope_tol = 0.05
budget_epochs = 30
budget_n = 50000
budget_batch_sizes = [128, 4096, 8192, 16384, 32768]
budget_lr = 1.0
budget_kappas = [1.0, 0.1, 0.01, 0.001]
budget_kappa = 0.01
budget_s_y = 0.0001
budget_runs = 1000
alpha = 0.05
rate_sims = 4000
count_effect = 0.05
noise_margin = 0.05

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from sgdnoise.chapters import ch07_saddles as ch07
from sgdnoise.chapters.ch05_overparam import tex_number
from sgdnoise.plotting import color_of, source_label, use_style
from sgdnoise.report import Stopwatch, provenance_markdown, show_verdicts, tex_html

P = ch07.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
identity = {"source": "synthetic (toy saddle)", "n_train": P.n_data}
LABEL = source_label(profile, {"source": "toy saddle", "n_train": P.n_data})
# one colour per quantity, kept in every figure (colour-blind-safe palette)
COLOR = {"measured": color_of("measured"), "prediction": "k",
         "isotropic": color_of("isotropic"), "SGD": color_of("sgd"),
         "small noise": color_of("anisotropic")}
PAD = [{"selector": "th, td", "props": "padding: 0.15em 0.7em"}]  # table cell spacing


def steps_text(t, digits=1):
    """A step count for a table: the number, or 'not reached' (infinite: most runs stayed)."""
    return "not reached" if not np.isfinite(t) else f"{t:.{digits}f}"

# %% [markdown]
# ## 7.1 The saddle and its stable manifold
#
# Take
#
# $$
# L(x,y) = \tfrac12 x^2 - \tfrac{\gamma}{2} y^2 + \tfrac14 y^4 ,
# $$ (eq-ch7-L)
#
# with $\nabla L = (x, -\gamma y + y^3)$. The origin is a critical point with Hessian
# $\operatorname{diag}(1, -\gamma)$: a strict saddle with $\lambda_{\min} = -\gamma$ and
# negative-curvature direction $e_{\min} = e_y$; the minima are $(0, \pm\sqrt{\gamma})$. GD
# from $(x_0, 0)$ gives $y_{t+1} = y_t - \eta(-\gamma y_t + y_t^3) = 0$ for every $t$, by
# induction: the line $y = 0$ is the stable manifold and GD started on it converges to the
# saddle, never leaving it. Any escape must create a $y$-component, and only noise can.
#
# (sec-ch7-law)=
# ## 7.2 Isotropic noise: the escape time law
#
# Add noise, $g_t = \nabla L(\theta_t) + \xi_t$ with $\xi_t \sim \mathcal N(0, \sigma^2 I)$.
# While $|y|$ is small the cubic term is negligible and, with $a = 1 + \eta\gamma$,
#
# $$
# \begin{aligned}
# y_{t+1} &= a\,y_t - \eta\,\xi_{t,y}
# \;\Longrightarrow\;
# y_t = a^t\Big(-\eta\sum_{k<t} a^{-k-1}\xi_{k,y}\Big) \;\to\; a^t\,Y,\\
# Y &\sim\mathcal N\Big(0,\ \frac{\eta^2\sigma^2}{a^2-1}\Big),
# \end{aligned}
# $$ (eq-ch7-lin)
#
# since $\sum_k a^{-2(k+1)} = 1/(a^2 - 1)$. The sum converges after a few e-folds, so the
# growth is geometric from a random "effective start" $Y$. Escape
# ($|y| \ge y_{\rm esc}$, with $y_{\rm esc}$ a fixed fraction of $\sqrt{\gamma}$, here half-way
# to the minimum) therefore happens at
#
# $$
# \begin{aligned}
# t_{\rm esc} \approx{}&
# \frac{\log\big(y_{\rm esc}\sqrt{a^2-1}/(\eta\sigma|Z|)\big)}{\log(1+\eta\gamma)}\\
# &{}+ \frac{\log\big(\gamma/(\gamma-y_{\rm esc}^2)\big)}{2\log(1+\eta\gamma)},
# \qquad Z\sim\mathcal N(0,1),
# \end{aligned}
# $$ (eq-ch7-law)
#
# **Check.** For each $\sigma$ of a log-spaced grid, runs of GD with isotropic noise from
# the stable manifold; the mean escape step against $\log(1/\sigma)$ gives a slope, with a
# bootstrap interval, to compare with $1/\log(1 + \eta\gamma)$. The law is a linearisation,
# so agreement means the interval lies inside a stated band around the prediction. A run
# that has not escaped within the horizon counts as stuck.

# %% tags=["remove-input"]
iso = ch07.isotropic_study(P)
display(Markdown(
    f"Here $\\eta = {P.lr:g}$, $\\gamma = {P.gamma:g}$, escape at "
    f"$y_{{\\rm esc}} = {P.escape_frac:g}\\sqrt{{\\gamma}}$, {P.iso_runs:,} runs per "
    f"$\\sigma$ from ${tex_number(min(P.iso_sigmas))}$ to ${tex_number(max(P.iso_sigmas))}$, a horizon "
    f"of {P.max_steps:,} steps, {P.confidence:.0%} bootstrap intervals and a band of "
    f"±{P.slope_tol:.0%} around the predicted slope. The table gives the mean escape step "
    "per $\\sigma$ with its standard error and the prediction {eq}`eq-ch7-law`."))
display(iso.table().rename(columns={"predicted (eq)": "predicted", "std. error":
                                    "standard error"})
        .style.format({"σ": "{:.0e}", "mean escape step": steps_text,
                       "standard error": "{:.2f}", "predicted": "{:.1f}"})
        .hide(axis="index").set_table_styles(PAD))
v_law = ch07.escape_law_verdict(iso, confidence=P.confidence, slope_tol=P.slope_tol,
                                scale=P.scale)
display(Markdown(f"**{v_law.outcome}**: {v_law.sentence} Isotropic runs not escaped: "
                 f"{iso.censored:.1%}; the continuous-time slope $1/(\\eta\\gamma)$ would be "
                 f"{1 / (P.lr * P.gamma):.2f}."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: the points lie on the dashed line, a straight line in $\\log(1/\\sigma)$. Mean escape step of GD with isotropic noise from the stable manifold against $\\log(1/\\sigma)$ (\u00b1 2 standard errors), with the linearised escape-time law. Computed by {py:func}`sgdnoise.chapters.ch07_saddles.isotropic_study`.", "name": "fig-ch7-law"}, "image": {"alt": "Scatter of mean escape step against log of one over sigma, rising linearly, with the predicted straight line through the points."}}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
tab = iso.table()
ax.errorbar(np.log(1 / iso.sigmas), tab["mean escape step"], yerr=2 * tab["std. error"],
            fmt="o", color=COLOR["measured"], label="simulated mean ± 2 s.e.")
ax.plot(np.log(1 / iso.sigmas), iso.predicted, "--", color=COLOR["prediction"],
        label="prediction (linearised law)")
ax.set(xlabel="log(1/σ)", ylabel="escape step",
       title=f"GD + isotropic noise at a strict saddle · {LABEL}")
ax.legend(loc="upper left")
plt.show()


# %% [markdown]
# If the law holds, the points lie on a straight line in $\log(1/\sigma)$: the noise only
# sets the effective start $Y$, and the unstable direction then amplifies it by
# $a = 1 + \eta\gamma$ per step, so smaller noise costs time only logarithmically. GD
# ($\sigma = 0$) is the limit of this line: from the stable manifold it never escapes.
#
# (sec-ch7-sgd)=
# ## 7.3 SGD on a finite sum: the noise along $e_{\min}$
#
# **Construction.** Per-example losses $\ell_i(x, y) = L(x, y) + b_i x + a_i y$ with
# centred data ($\sum_i a_i = \sum_i b_i = 0$), $\operatorname{mean} a_i^2 = s_y^2$,
# $\operatorname{mean} b_i^2 = s_x^2$. The mean loss is exactly {eq}`eq-ch7-L` and the
# per-example gradient is $\nabla L + (b_i, a_i)$. At the saddle
# $\mathbb E_i[(e_{\min}^\top \nabla\ell_i)^2] = s_y^2 > 0$: this is the correlated negative
# curvature condition of {cite}`daneshmand2018escaping` with constant $s_y^2$. By Lemma 1
# (chapter 1), a batch drawn without replacement has
#
# $$
# \begin{aligned}
# \mathbb E\big[(e_{\min}^\top(g_{\mathcal B}-\bar g))^2\big]
# &= \frac{s_y^2}{B}\,\frac{N-B}{N-1}\\
# &= s_y^2\,\frac{N}{N-1}\Big(\frac1B-\frac1N\Big),
# \end{aligned}
# $$ (eq-ch7-emin)
#
# which vanishes at $B = N$. Because the perturbation is linear in $\theta$, the same holds
# at every point, so {eq}`eq-ch7-law` applies to SGD with $\sigma$ replaced by $\sigma_B$,
# the square root of {eq}`eq-ch7-emin` (the batch noise is not Gaussian, but $Y$ in
# {eq}`eq-ch7-lin` is a weighted sum of many independent batch means, close to Gaussian).
# As $B \to N$, $\sigma_B \to 0$ like $\sqrt{N - B}$ and the escape time grows like
# $\log(1/\sigma_B) \to \infty$; at $B = N$ SGD is GD and stays on the stable manifold
# forever.
#
# For comparison at each $B$: GD with isotropic Gaussian noise of the same total variance
# (trace) as the mini-batch noise,
# $\sigma_{\rm iso}^2 = (s_x^2 + s_y^2)(N - B)/(2B(N - 1))$ per coordinate. With
# $s_x > s_y$ most of the SGD noise points along the positive-curvature direction $x$,
# where it does nothing for the escape.

# %% tags=["remove-input"]
sgd = ch07.sgd_study(P)
display(Markdown(
    f"Here $N = {P.n_data}$, $s_x = {P.s_x:g}$, $s_y = {P.s_y:g}$, {P.sgd_runs:,} runs per "
    f"batch size and {P.noise_samples:,} mini-batches per Monte Carlo estimate. The noise "
    "along $e_{\\min}$ agrees with {eq}`eq-ch7-emin` when every deviation is below "
    f"{P.noise_z_max:g} standard errors; the escape law holds for SGD when every median "
    f"escape step is within {P.median_tol:g} steps of the prediction. The table lists, per "
    "$B$, the noise along $e_{\\min}$, the median escape steps of SGD and of isotropic noise "
    "of the same trace, the prediction, and the fraction of SGD runs not escaped within "
    f"{P.max_steps:,} steps."))
NOISE = "noise along " + tex_html(r"e_{\min}") + ", Monte Carlo"
SHORT = {"E[(e_min·(g_B−ḡ))²] MC": NOISE, "± s.e.": "standard error",
         "formula (eq)": "Lemma 1", "SGD median escape": "SGD median step",
         "predicted median": "predicted", "SGD not escaped": "SGD runs not escaped",
         "isotropic (matched trace) median": "isotropic median step"}
display(sgd.table.rename(columns=SHORT).style.format({
    NOISE: "{:.6f}", "standard error": "{:.1e}", "Lemma 1": "{:.6f}",
    "SGD median step": steps_text, "predicted": steps_text,
    "SGD runs not escaped": "{:.1%}", "isotropic median step": steps_text})
    .hide(axis="index").set_table_styles(PAD))
z_noise = sgd.noise_z()
at_n = sgd.table.loc[sgd.table["formula (eq)"] == 0, "E[(e_min·(g_B−ḡ))²] MC"]
v_sgd = ch07.sgd_escape_verdict(sgd.table, z_noise, z_max=P.noise_z_max,
                                median_tol=P.median_tol, scale=P.scale)
display(Markdown(f"**{v_sgd.outcome}**: {v_sgd.sentence}"
                 + (f" At $B = N$ the Monte Carlo value is ${tex_number(at_n.max())}$." if len(at_n)
                    else "")))


# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: the Monte Carlo points on the Lemma 1 line (left), and the SGD escape step rising slowly as $N - B$ shrinks, while isotropic noise of the same trace escapes no later (right). Left: mini-batch noise variance along the negative-curvature direction against B, Monte Carlo (\u00b1 2 s.e.) and Lemma 1. Right: median escape step against N \u2212 B (the batch grows to the right) for SGD, the prediction with $\\sigma_B$, and isotropic noise of matched trace. Computed by {py:func}`sgdnoise.chapters.ch07_saddles.sgd_study`.", "name": "fig-ch7-sgd"}, "image": {"alt": "Left: log-log plot of the mini-batch noise variance along the negative-curvature direction against the batch size, points on the formula line. Right: median escape step against N minus B for SGD, its prediction and isotropic noise."}}
t = sgd.table
Bs = t["B"].to_numpy()
ok = (t["formula (eq)"] > 0).to_numpy()
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7, 3.8), layout="constrained")
ax0.errorbar(Bs[ok], t["E[(e_min·(g_B−ḡ))²] MC"][ok], yerr=2 * t["± s.e."][ok], fmt="o",
             color=COLOR["measured"], label="Monte Carlo")
ax0.plot(Bs[ok], t["formula (eq)"][ok], "--", color=COLOR["prediction"], label="Lemma 1")
ax0.set(xscale="log", yscale="log", xlabel="batch size B",
        ylabel=r"$\mathrm{E}[(e_{\min}^\top(g_B - \bar g))^2]$",
        title=r"noise along $e_{\min}$")
ax0.legend(loc="lower left")
gap_n = P.n_data - Bs
lt = gap_n > 0
fin = np.isfinite(t["SGD median escape"]).to_numpy() & lt
ax1.plot(gap_n[fin], t["SGD median escape"][fin], "o-", color=COLOR["SGD"],
         label="SGD (median)")
ax1.plot(gap_n[lt], t["predicted median"][lt], "--", color=COLOR["prediction"],
         label=r"prediction with $\sigma_B$")
fin_i = np.isfinite(t["isotropic (matched trace) median"]).to_numpy() & lt
ax1.plot(gap_n[fin_i], t["isotropic (matched trace) median"][fin_i], "s:",
         color=COLOR["isotropic"], label="isotropic, matched trace")
ax1.set(xscale="log", xlabel="N − B", ylabel="escape step", title="escape vs batch size")
ax1.invert_xaxis()
fig.suptitle(LABEL)
fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=2)
plt.show()


# %% tags=["remove-input"]
stuck = [int(b) for b, f in zip(Bs, t["SGD not escaped"], strict=True) if f == 1.0]
iso_faster = ch07.matched_isotropic_faster(t)
display(Markdown(
    f"Batch sizes where no SGD run escaped within {P.max_steps:,} steps from the stable "
    f"manifold: {', '.join(map(str, stuck)) or 'none'}. GD with isotropic noise of the same "
    "trace escaped "
    + ("no later than SGD at every $B$ where both escaped" if iso_faster
       else "later than SGD at some $B$")
    + f" ($s_x = {P.s_x:g}$, $s_y = {P.s_y:g}$)."))


# %% [markdown]
# Left: the mini-batch noise along the negative-curvature direction, against
# {eq}`eq-ch7-emin`, which falls faster than $1/B$ as $B$ approaches $N$. Right (horizontal
# axis $N - B$, so the batch grows to the right): SGD's median escape step against the
# prediction {eq}`eq-ch7-law` with $\sigma = \sigma_B$ (no fitted constants). Isotropic
# noise with the same trace spreads its variance equally over $x$ and $y$, while SGD puts
# the fraction $s_y^2/(s_x^2 + s_y^2)$ along $e_{\min}$; for escaping, only the component
# along $e_{\min}$ counts, not the total size.
#
# (sec-ch7-offset)=
# ## 7.4 Starting off the stable manifold
#
# Every run so far started exactly on the stable manifold $y = 0$, a set of measure zero;
# that is the only reason GD and SGD at $B = N$ never leave. Start instead at
# $(x_0, \delta)$. The linear phase of {eq}`eq-ch7-lin` becomes $y_t = a^t(\delta + Y)$
# with the same $Y$, so the escape step is
#
# $$
# \begin{aligned}
# t_{\rm esc} \approx{}& \frac{\log\big(y_{\rm esc}/|\delta + Y|\big)}{\log(1+\eta\gamma)}\\
# &{}+ \frac{\log\big(\gamma/(\gamma-y_{\rm esc}^2)\big)}{2\log(1+\eta\gamma)} ,
# \end{aligned}
# $$ (eq-ch7-offset)
#
# and its median uses the median $m$ of $|\delta + Y|$, solved from
# $\Phi\big((m - \delta)/s\big) - \Phi\big((-m - \delta)/s\big) = \tfrac12$ with
# $s^2 = \eta^2\sigma_B^2/(a^2 - 1)$
# ({py:func}`sgdnoise.chapters.ch07_saddles.predicted_offset_escape_time`). Without noise
# ($B = N$) $m = \delta$ and the escape takes $\log(y_{\rm esc}/\delta)/\log(1 + \eta\gamma)$
# steps plus the cubic term: finite for every $\delta > 0$. Whichever of $\delta$ and
# $\sigma_B$ is larger sets the time. The law {eq}`eq-ch7-offset` holds when every
# measured median escape step is within a set number of steps of its prediction.

# %% tags=["remove-input"]
off = ch07.offset_study(P)
off_tab = off.table()
display(Markdown(
    f"Here {P.offset_runs:,} SGD runs for each offset $\\delta$ in "
    f"{', '.join(f'${tex_number(d)}$' for d in P.offsets)} and each batch size in "
    f"{', '.join(map(str, P.offset_batch_sizes))}, and as many runs of GD with isotropic "
    "noise for each $\\sigma$ of section 7.2; agreement means within "
    f"{P.median_tol:g} steps. The tables give the median escape step, its prediction and "
    f"the fraction of runs that escaped within {P.max_steps:,} steps, for SGD and for "
    "isotropic noise."))
display(off_tab.style.format({"δ": "{:.0e}", "σ_B": "{:.2e}",
                              "median escape step": steps_text,
                              "predicted median": steps_text, "escaped": "{:.1%}"})
        .format_index(lambda c: tex_html(r"\sigma_B") if c == "σ_B" else c, axis="columns")
        .hide(axis="index").set_table_styles(PAD))

# %% tags=["remove-input"]
display(off.iso_table().style.format({"δ": "{:.0e}", "σ": "{:.0e}",
                                      "median escape step": steps_text,
                                      "predicted median": steps_text, "escaped": "{:.1%}"})
        .hide(axis="index").set_table_styles(PAD))


# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: every curve falls once $\\delta$ exceeds the noise's effective start, and the batch sizes meet there. Median escape step against the start offset \u03b4 off the stable manifold (points: simulated, dashed: prediction) for SGD, one colour per batch size (left), and for GD + isotropic noise, one colour per \u03c3 (right; at most eight values, spread evenly over those run); \u03b4 = 0 sits at the tick labelled 0 (a log axis has no zero), and B = N never escapes from \u03b4 = 0 (not drawn). Computed by {py:func}`sgdnoise.chapters.ch07_saddles.offset_study`.", "name": "fig-ch7-offset"}, "image": {"alt": "Two panels of median escape step against the start offset on a log axis: SGD at several batch sizes (left) and isotropic noise at several sigma (right), points with dashed predictions, all falling to the same curve at large offsets."}}
pos = off.offsets > 0
x_zero = off.offsets[pos].min() / 10 if pos.any() else 1e-8
xs = np.where(pos, off.offsets, x_zero)
fig, axes = plt.subplots(1, 2, figsize=(7, 4.2), sharey=True, layout="constrained")
panels = [(axes[0], off.times, off.predicted, [f"B = {b}" for b in off.batch_sizes],
           "SGD", "viridis"),
          (axes[1], off.iso_times, off.iso_predicted, [f"σ = {s:.0e}" for s in off.sigmas],
           "GD + isotropic noise", "plasma")]
for ax, times, pred, labels, title, cm in panels:
    cmap = plt.get_cmap(cm)
    # at most eight series per panel, spread evenly over the values run
    shown = np.unique(np.linspace(0, len(labels) - 1, min(8, len(labels))).round().astype(int))
    for n_drawn, j in enumerate(shown):
        lab = labels[j]
        c = cmap(0.9 * n_drawn / max(len(shown) - 1, 1))
        med = np.median(times[:, j], axis=1)
        fin = np.isfinite(med)
        ax.plot(xs[fin], med[fin], "o", color=c, label=lab)
        pf = np.isfinite(pred[:, j])
        ax.plot(xs[pf], pred[pf, j], "--", color=c, lw=1)
    ax.set_xscale("log")
    ticks = np.unique(xs)
    ax.set_xticks(ticks, ["0" if t == x_zero else f"{t:.0e}" for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="start offset δ", title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
axes[0].set_ylabel("median escape step (dashed: prediction)")
fig.suptitle(LABEL)
plt.show()


# %% tags=["remove-input"]
v_offset = ch07.offset_law_verdict(
    np.concatenate([np.median(off.times, -1).ravel(), np.median(off.iso_times, -1).ravel()]),
    np.concatenate([off.predicted.ravel(), off.iso_predicted.ravel()]),
    median_tol=P.median_tol, scale=P.scale)
display(Markdown(f"**{v_offset.outcome}**: {v_offset.sentence}"))

# %% [markdown]
# Large batches reduce $\sigma_B$, and with it the escape speed, only while the noise is
# what lifts the iterate off the stable manifold; any offset $\delta$ larger than the
# effective noise start $|Y|$ takes over, and then every batch size escapes at the same
# time.


# %% [markdown]
# (sec-ch7-budget)=
# ## 7.5 Stuck against a training budget
#
# "Stuck" only means something against a clock. Sections 7.2 to 7.4 used a saddle whose
# negative curvature is as strong as its positive one, $|\lambda_{\min}| = \lambda_{\max}$,
# and a horizon of their own; there every run that is not exactly on the stable manifold
# escapes in a few hundred steps at most. Two things change in training. First, the
# learning rate is set by the *largest* curvature ($\eta\lambda_{\max}$ below 2, often near
# it), while the escape rate per step is $\log(1 + \eta|\lambda_{\min}|) \approx
# \eta\lambda_{\max}\,\kappa$ with the conditioning $\kappa = |\lambda_{\min}|/\lambda_{\max}$,
# which is small in trained networks: the negative part of the Hessian spectra of chapter 5
# (section 5.6) is a small fraction of its largest eigenvalue. Second, the number of steps
# is set by the budget: chapter 8's plan trains the essay's setting for 30 epochs of
# $N = 50{,}000$ examples with the last partial batch dropped, so $B$ gets
# $30\lfloor N/B\rfloor$ steps, from 11,700 at $B = 128$ to 30 at $B = 32{,}768$.
#
# By {eq}`eq-ch7-law` a run started on the stable manifold needs about
#
# $$
# t \approx \frac{\log\big(y_{\rm esc}\sqrt{a^2 - 1}/(\eta\sigma_B|Z|)\big)}{\log a},
# \qquad a = 1 + \eta\lambda_{\max}\kappa ,
# $$ (eq-ch7-budget)
#
# steps, where the batch size enters only through $\log(1/\sigma_B)$, and $\sigma_B$ falls
# by a factor $\sqrt{(N - B)/(B(N - 1))}$: from $B = 128$ to $B = 32{,}768$ that is a factor
# of about 27, some 3.3 e-folds of extra growth, while the budget falls by a factor of 390.
# So a large batch can fail to escape for two different reasons: its noise is smaller, or
# it simply has fewer steps. The simulation separates them by running each large batch
# twice within its own budget, once with its own noise and once with the small batch's.
#
# **Experiment.** The unstable coordinate of the saddle with $\gamma = \kappa\lambda_{\max}$
# (the stable one decouples), Gaussian noise of the mini-batch variance $\sigma_B^2$
# (section 7.3 checks that batch means behave so), runs started on the stable manifold (the
# case most favourable to the claim: only noise can lift them) for each conditioning
# $\kappa$ of a grid and each batch size of chapter 8's plan
# ({py:func}`sgdnoise.chapters.ch07_saddles.budget_study`). A run is *stuck* when it has not
# reached $y_{\rm esc}$ within its budget.

# %% tags=["remove-input"]
bud = ch07.budget_study(P)
display(Markdown(
    f"Here $\\eta\\lambda_{{\\max}} = {P.budget_lr:g}$, $\\kappa$ in "
    f"{', '.join(f'{k:g}' for k in P.budget_kappas)}, $N$ = {P.budget_n:,}, "
    f"{P.budget_epochs} epochs, per-example noise along $e_{{\\min}}$ of RMS "
    f"$s_y = {tex_number(P.budget_s_y)}$, escape at $y_{{\\rm esc}} = {P.escape_frac:g}\\sqrt{{\\gamma}}$ "
    f"and {P.budget_runs:,} runs per conditioning, batch size and noise. The verdicts are "
    f"read at $\\kappa = {P.budget_kappa:g}$, tests at level {P.alpha:g}; the noise "
    f"\"matters\" when it moves the escaped fraction by more than {P.noise_margin * 100:g} "
    "points. The table gives each batch size's budget and noise, the median step "
    "{eq}`eq-ch7-budget` predicts, and the fractions that escaped within the budget."))
bt = bud.table()
display(bt.rename(columns={"σ_B": tex_html(r"\sigma_B"), "κ": tex_html(r"\kappa"),
                           "predicted median steps": "predicted median step"})
        .style.format({tex_html(r"\kappa"): "{:g}", tex_html(r"\sigma_B"): "{:.2e}",
                       "predicted median step": "{:.0f}", "escaped": "{:.1%}",
                       "escaped with the small batch's noise": "{:.1%}",
                       "budget (steps)": "{:,}", "B": "{:,}"})
        .hide(axis="index").set_table_styles(PAD))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "What to see: at each conditioning, whether the large batches' solid and dashed curves (own noise, small batch's noise) separate, or fall together where the budget runs out. Fraction of runs that escaped the saddle within chapter 8's budget against the batch size, one colour per conditioning $\\kappa = \\lvert\\lambda_{\\min}\\rvert/\\lambda_{\\max}$; solid: the batch's own noise, dashed: the small batch's noise with the same steps. Computed by {py:func}`sgdnoise.chapters.ch07_saddles.budget_study`.", "name": "fig-ch7-budget"}, "image": {"alt": "Line chart of the escaped fraction within the budget against batch size from 128 to 32768 on a log axis, one colour per conditioning, solid for the own noise and dashed for the small batch's noise; the curves drop to zero at smaller batch sizes as the conditioning gets weaker."}}
cmap = plt.get_cmap("viridis")
fig, ax = plt.subplots(figsize=(6.2, 3.8))  # with the legend beside it: text >= 11 px
for i, k in enumerate(bud.kappas):
    c = cmap(0.85 * i / max(len(bud.kappas) - 1, 1))
    ax.plot(bud.batch_sizes, bud.own[i] / bud.runs, "o-", color=c, label=f"κ = {k:g}")
    ax.plot(bud.batch_sizes, bud.small[i] / bud.runs, "s--", color=c, mfc="none")
ax.set_xscale("log")
ax.set_xticks(bud.batch_sizes, [f"{b:,}" for b in bud.batch_sizes])
ax.minorticks_off()
ax.set(xlabel="batch size B (budget: 30 epochs of 50,000 examples)",
       ylabel="escaped within the budget", ylim=(-0.03, 1.05),
       title=f"Saddle escape within chapter 8's budget\n{LABEL}")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="solid: own noise\ndashed: "
          "small batch's")
plt.show()

# %% tags=["remove-input"]
v_stuck = ch07.stuck_verdict(bud, kappa=P.budget_kappa, alpha=P.alpha, scale=P.scale,
                             rates=ch07.stuck_rates(bud, P))
v_noise = ch07.noise_verdict(bud, kappa=P.budget_kappa, margin=P.noise_margin,
                             alpha=P.alpha, scale=P.scale, rates=ch07.noise_rates(bud, P))
display(Markdown(f"**{v_stuck.outcome}** (stuck): {v_stuck.sentence}\n\n"
                 f"**{v_noise.outcome}** (because of the noise): {v_noise.sentence}"))

# %% [markdown]
# The first verdict is the essay's observation read against a clock; the second asks for
# its cause. Where a large batch's dashed curve sits on its solid one, giving it the small
# batch's noise changes nothing: what it lacks is steps, and equal-step comparisons
# (chapter 8's arm C, its group of runs at equal steps) are the ones that can tell a saddle from a short budget. The toy
# cannot say how often real large-batch training meets strict saddles, or how far from
# their stable manifolds it passes; it says what "stuck" would have to mean for the claim
# to be about noise.
#
# (sec-ch7-verdicts)=
# ## What the numbers say
#
# Each claim of the essay that this chapter tests, with the verdict computed from the
# numbers above by {py:mod}`sgdnoise.chapters.ch07_saddles` (thresholds: the values named
# in each section). For a claim about SGD the false-positive rate is how often its rule
# says "supported" when the claim is false at the edge of what it tolerates, and the power
# how often it does when the claim holds with the stated effect, both measured by
# simulating the rule.

# %% tags=["remove-input"]
show_verdicts("ch07_saddles", [v_stuck, v_noise, v_law, v_sgd, v_offset])

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(profile, P.to_dict(), wall_time_s=clock.seconds,
                                     data_identity=identity)))
