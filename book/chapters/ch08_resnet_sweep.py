# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 8. Large batches: a generalization gap, or too few steps?

# %% tags=["parameters", "remove-cell"]
profile = "default"
records_dirs = ["../../data/results/ch08"]
pilot_dirs = ["../../data/results/ch08_pilot"]
sharpness_dirs = ["../../data/results/ch08"]
gpu_plan = "../params/ch08_resnet_sweep/plan_full.yaml"
run_miniature = True
plan = "../params/ch08_resnet_sweep/plan_laptop.yaml"
target = 0.15
midscale_dirs = ["../../data/results/ch08_midscale"]
midscale_plan = "../params/ch08_resnet_sweep/plan_midscale.yaml"
target_midscale = 0.55
target_laptop = 0.65
loss_tolerance = 0.02
gap_margin = 0.01
alpha = 0.05
onset_fraction = 0.08192
decisive_arms = ["A", "B", "C"]
gap_effect = 0.03
n_sim = 2000
rates_seed = 0
plateau_arms = ["A", "D-plain"]
plateau_evals = 5
plateau_margin = 0.01
eos_low = 0.8
below_fraction = 0.5
out_dir = ""

# %% tags=["remove-cell"]
import tempfile

from IPython.display import Markdown, display

from sgdnoise.chapters import ch08_resnet_sweep as ch08
from sgdnoise.decide import scenarios as ds
from sgdnoise.plotting import show, use_style
from sgdnoise.report import (
    Stopwatch,
    fmt_number,
    provenance_markdown,
    show_findings,
    show_table,
    show_verdicts,
    tex_html,
)

P = ch08.Params.from_namespace(globals())
TH = ch08.thresholds(P)
clock = Stopwatch()
use_style()
GPU_SIZES = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]

# the tables' column names in words, symbols typeset
HEADERS = {
    "B": tex_html("B"), "B0": tex_html("B_0"), "steps/epoch": "steps per epoch",
    "steps S": "steps " + tex_html("S"), "examples seen": "examples seen",
    "(N-B)/(N-1)": "finite-population factor " + tex_html("(N-B)/(N-1)"),
    "reach ηS": "reach " + tex_html(r"\eta S"),
    "train loss": "train loss (nats)", "train error": "train error", "test error": "test error",
    "Δ train loss": "excess train loss (nats)", "compared at": "compared at",
    "Δ test error": "test-error difference (points)", "p": "p-value (Holm)",
    "ratio": tex_html(r"\eta\lambda_{\max}/2(1+\beta)"), "in window": "runs with a window",
    "slope": "slope (points per e-fold)", "final": "final error", "last step": "last step",
    "steps": "steps", "examples": "examples seen",
    "ln λ slope": "slope of " + tex_html(r"\ln\lambda_{\max}") + " on " + tex_html(r"\ln B"),
    "steps slope": "slope of ln steps on ln " + tex_html("B"),
    "reached": "runs that reached it", "error": "error curve",
    "gap supported": "gap supported", "gap contradicted": "gap contradicted",
    "under-training supported": "under-training supported", "gap (points)": "gap (points)",
}
PERCENT = lambda v: fmt_number(v, 1, scale=100.0, suffix="%")  # noqa: E731 (a formatter)
MINUS = lambda v: str(v).replace("-", "\u2212")  # noqa: E731


def table(df, lead, formats=None):
    show_table(df, lead, formats=formats, headers=HEADERS)


def design_table(n_train, sizes, epochs, lr, lead):
    table(ch08.protocol_table(n_train, sizes, epochs=epochs, lr=lr), lead,
          {"reach ηS": 1, "(N-B)/(N-1)": 3})


def decision_table(an, which):
    if len(an.decision.table):
        table(ch08.decision_display(an.decision.table),
              f"Every pair of {which} with its call: the excess final train loss of the large "
              "batch and its test-error difference from the small batch (or its residual "
              "from the small batch's curve, when compared at the same train loss), each "
              "with its 90% interval; the p-value of the gap call, Holm-adjusted for the "
              f"pre-registered pairs ($B/N \\ge$ {P.onset_fraction:.3f}); then the call. "
              "The batch size's fraction of the training set is in brackets.",
              {"p": lambda v: fmt_number(v, 3) if v >= 0.001 else "< 0.001"})


LEADS = {
    "plateau": "The plateau test, one row per arm, batch size and error curve: the slope of "
               "the error against ln(step) over each run's last evaluations, in points per "
               "e-fold of steps with its 90% interval across seeds, the final error, and the "
               "call.",
    "sharpness_edge": "The edge-of-stability test per arm: the mean ratio "
                      r"$\eta\lambda_{\max}/2(1+\beta)$ inside each run's constant learning "
                      "rate window with its 90% interval across runs, and the call.",
    "sharpness_trend": r"The sharpness trend per arm: the slope of $\ln\lambda_{\max}$ on "
                       r"$\ln B$ across batch sizes with its 90% interval across seeds.",
    "steps": "Steps to the pre-registered test-error target per arm and batch size: the runs "
             "that reached it within the arm's budget, the geometric mean of their steps "
             "with its 95% interval, and the slope of the log steps against the log batch "
             "size from the previous batch size (−1 is perfect scaling).",
}


def analysis_tables(an, target):
    for name, lead in LEADS.items():
        t = an.tables.get(name)
        if t is None or not len(t):
            continue
        shown = ch08.intervals_as_text(t, percent=["slope"] if name == "plateau" else [],
                                       whole=["steps"])
        if name == "sharpness_trend":
            shown = shown.rename(columns={"slope": "ln λ slope"})
        table(shown, lead.replace("the pre-registered test-error target",
                                  f"the pre-registered test error of {target:.0%}"),
              {"final": PERCENT, "examples": "{:,.0f}", "slope": MINUS, "ratio": MINUS,
               "steps": MINUS, "steps slope": 2, "ln λ slope": MINUS})


# %% tags=["remove-input"]
show_findings("ch08_resnet_sweep")

# %% [markdown]
# The essay this book rebuilds {cite}`golmant2018noise` ends with one experiment: ResNet34
# {cite}`he2016deep` on CIFAR-10 {cite}`krizhevsky2009learning` with plain SGD at batch
# sizes from 128 to 32,768 of the 50,000 training images. It reports that "as I increased
# the batch size up to 4096, the generalization gap appeared", and that beyond it training
# and test error both plateau within a few epochs. Two readings predict different
# numbers:
#
# * **a generalization gap**: a large batch fits the training set as well as a small one
#   but has a higher test error {cite}`keskar2017large`;
# * **under-training**: a large batch at a fixed epoch budget takes fewer steps and simply
#   stops earlier on the same path — its test error is what the small batch had when it
#   had fitted the training set equally badly {cite}`hoffer2017train,shallue2019measuring`.
#
# This chapter builds the procedure that tells them apart
# ({mod}`sgdnoise.decide.calls`), measures how often it errs by simulation
# ({mod}`sgdnoise.decide.harness`), and applies it to four sets of records: the full-scale
# ResNet34 plan (its runs accumulate over GPU sessions; the headline verdicts come from them
# alone), the 10-epoch GPU pilot (shown, not decided on), a ResNet-20 at mid scale trained on
# one CPU thread (recorded runs, decided at their own scale with their own claims), and a
# laptop miniature trained in this execution through the same sweep code (with its own
# claims). Every outcome below is computed; the thresholds are parameters fixed before any
# record is read.
#
# ## Steps, reach and noise at a fixed epoch budget
#
# One epoch visits a fresh random permutation of the $N$ training examples in batches of
# $B$; the incomplete last batch of each epoch is dropped, so every step has exactly $B$
# examples and a run of $E$ epochs takes
#
# $$
# S(B) = E \left\lfloor \frac{N}{B} \right\rfloor
# $$ (eq-ch8-steps)
#
# steps: 11,700 for $B = 128$ and 30 for $B = 32{,}768$ at $E = 30$
# ({ref}`the design table <tab-ch8-design>` lists all of them). Plain SGD moves by $\theta_{t+1} - \theta_t = -\eta\, g_{\mathcal B_t}$,
# so if every mini-batch gradient has norm at most $G$, the triangle inequality bounds the
# distance a run can travel:
#
# $$
# \begin{aligned}
# \lVert \theta_{S} - \theta_0 \rVert
# &\le \sum_{t<S} \eta\, \lVert g_{\mathcal B_t} \rVert \\
# &\le \eta\, S(B)\, G .
# \end{aligned}
# $$ (eq-ch8-reach)
#
# At a fixed $\eta$ the {term}`reach <reach ηS>` $\eta S$ shrinks like $1/B$; the scaling rule
# $\eta \propto B$ {cite}`goyal2017accurate` keeps $\eta S$ fixed, and equal-step runs
# {cite}`hoffer2017train` keep $S$ fixed.
#
# Write $g_{\mathcal B} = \bar g + \xi$ with $\bar g = \nabla L(\theta)$. Within an epoch the
# batches are drawn without replacement, so by Lemma 1 (chapter 1) $\mathbb E[\xi] = 0$ and
#
# $$
# \begin{aligned}
# \operatorname{Cov}[\xi] &= \frac{D}{B}\cdot\frac{N-B}{N-1}, \\
# D &= \frac1N \sum_{i=1}^N (g_i - \bar g)(g_i - \bar g)^\top ,
# \end{aligned}
# $$ (eq-ch8-cov)
#
# with $D$ a $P \times P$ matrix for $P$ parameters. The finite-population factor
# $(N-B)/(N-1)$ is 0.34 at $B = 32{,}768$ and 0 at $B = N$ (gradient descent).
#
# ## The protocol
#
# A plan lists runs as (arm, batch size, seed) in priority order; `sgdnoise-sweep` runs as
# many as a GPU lease allows and the records accumulate in `data/results/ch08/`. Its
# engine keeps the whole data set on the device and draws each batch and its augmentation
# there, the design of {cite}`jordan2024airbench`.
#
# * **A, the essay's setting**: plain SGD, $\eta = 0.1$ constant, 30 epochs, BatchNorm
#   statistics over what one forward pass sees (the batch, up to 4,096 examples). A control
#   repeats it with BatchNorm over groups of 128 at $B$ = 4,096 and 8,192, to tell the
#   BatchNorm batch apart from the step count as a cause.
# * **B, equal epochs with the scaling rule** {cite}`goyal2017accurate`: momentum 0.9,
#   weight decay $5\cdot 10^{-4}$, $\eta = f \cdot 0.1\,B/256$ after a 50-step warm-up,
#   decayed to 0 along a cosine, 30 epochs, BatchNorm over groups of 128. The factor $f$ is
#   tuned per batch size among 0.5, 1 and 2 on a held-out validation split, so a gap cannot
#   be a learning rate that suits only the small batch.
# * **C, equal steps** {cite}`hoffer2017train`: arm B's recipe and tuning, every batch size
#   with the step count of $B = 512$ in 30 epochs (2,910 steps).
# * **D, can a huge batch train at all**: $B = 32{,}768$, plain $\eta = 0.1$ for 250 steps
#   (D-plain) against momentum and the scaled $\eta$ after a 50-step warm-up, held constant
#   for 250 steps (D-scaled), with the sharpness $\lambda_{\max}$ every 25 steps.
#
# Six seeds run every pre-registered pair of arms A to C (the seed count comes from the power
# computation below) and they run first; arm D and the control have one.
#
# Every run drops the last incomplete batch and normalises with BatchNorm
# {cite}`ioffe2015batchnorm`; the plan file states over how many examples each arm computes
# the BatchNorm statistics, and each record carries it. About 25 evaluations at log-spaced
# steps measure a fixed clean 10,000-image training subset and the full test set, with
# BatchNorm statistics recomputed first (the pilot below did not recompute them).
#
# **Sharpness.** Gradient descent with heavy-ball momentum $\beta$ is stable on a quadratic of
# curvature $\lambda$ iff $\eta\lambda < 2(1+\beta)$. Full-batch training drives
# $\lambda_{\max}$ up to that edge and hovers there {cite}`cohen2021gradient`; above it a
# large step can catapult the run to a flatter region {cite}`lewkowycz2020large`, and early
# in training the learning rate and batch size set where the curvature settles
# {cite}`jastrzebski2020breakeven`. A plateau with $\eta\lambda_{\max}$ at the edge is an
# instability; one far below it is a flat region or a saddle (chapter 7). Sharpness is not
# invariant under reparametrisations that leave the function unchanged
# {cite}`dinh2017sharp`, and BatchNorm makes the loss invariant to the scale of the weights
# before it, so $\lambda_{\max}$ is compared only within a run and against $2(1+\beta)/\eta$,
# never across architectures. The edge can only be reached where $\eta$ stays put, so the
# sharpness test uses only estimates taken at a run's peak learning rate; a schedule that
# decays $\eta$ all through the late part of a run has no such window. Each sentence says
# whether $\lambda_{\max}$ was taken with BatchNorm in train mode (the objective the
# edge-of-stability argument is about) or in eval mode.
#
# (sec-ch8-procedure)=
# ## One call per batch size
#
# Within an arm, each batch size $B$ is compared with the arm's smallest batch $B_0$, seed by
# seed, at the last evaluation of each run. Write $\ell(B, s)$ for the final train loss (in
# nats; continuous, unlike the train error, which sits at 0 through the whole interpolating
# phase) and $e(B, s)$ for the final test error of seed $s$, and
#
# $$
# \Delta\ell_s = \ell(B, s) - \ell(B_0, s), \qquad \Delta e_s = e(B, s) - e(B_0, s).
# $$ (eq-ch8-paired)
#
# With $n$ paired seeds, mean $\bar d$ and standard deviation $s_d$, the one-sided $t$-test of
# $H_0\colon \mu \le v$ rejects at level $\alpha$ when
# $\bar d - t_{1-\alpha,\,n-1}\, s_d/\sqrt n > v$, and the mirror test of
# $H_0\colon \mu \ge v$ when $\bar d + t_{1-\alpha,\,n-1}\, s_d/\sqrt n < v$. The two
# p-values of one mean add to 1, so at $\alpha < 1/2$ at most one side rejects: every pair
# gets exactly one of the calls below ({py:func}`sgdnoise.decide.calls.decide`).
#
# * **diverged**: some seed of $B$ diverged; the pair is listed with the count.
# * **fits as well** when $\mu_{\Delta\ell} \ge \tau$ is rejected, **fits worse** when
#   $\mu_{\Delta\ell} \le \tau$ is, for a tolerance $\tau$ in nats.
# * Fits as well: the end points are compared. **gap** when $\mu_{\Delta e} \le m$ is
#   rejected, for a margin $m$; **no gap** when $\mu_{\Delta e} \ge m$ is.
# * Fits worse: the run is compared with the small batch *at the same train loss*. For the
#   $B_0$ run of seed $s$ with evaluations $(\ell_k, e_k)$ in step order, let $k^*$ be the
#   first with $\ell_k \le \ell(B, s)$; the reference is
#
#   $$
#   e_{\rm ref} = e_{k^*-1} + w\,(e_{k^*} - e_{k^*-1}), \qquad
#   w = \frac{\ell_{k^*-1} - \ell(B,s)}{\ell_{k^*-1} - \ell_{k^*}},
#   $$ (eq-ch8-reference)
#
#   the small batch's test error when it first reached that loss (its end point when the
#   large batch ends below every loss it visited). The train loss keeps falling through the
#   interpolating phase, so this is never an average over a stretch where the train error
#   is 0. Where the small batch's own test $-$ train error at that loss is below $m$, test
#   error cannot differ from train error by the margin for any model and the comparison
#   cannot fail: **not informative**. Otherwise, with residuals
#   $r_s = e(B, s) - e_{\rm ref}$: **under-trained** when $\mu_r \ge m$ is rejected (on or
#   below the curve), **gap** when $\mu_r \le m$ is.
# * Anything else, including fewer than two paired seeds: **undetermined**.
#
# The batch sizes the essay speaks of are fixed in advance: the pairs of the decisive arms
# with $B/N$ at or above the essay's $4{,}096/50{,}000$. A pair's gap p-value is the larger
# of its fit and error p-values (an intersection-union test {cite}`berger1982multiparameter`:
# both must reject), and Holm's step-down adjustment {cite}`holm1979simple` over the
# pre-registered pairs holds the chance of any false gap call to $\alpha$. Two headline
# claims are decided on the pre-registered pairs only:
#
# 1. *a generalization gap*: supported when some pair is **gap** after Holm; contradicted
#    when every pair is **no gap** or **under-trained** (an intersection-union test, valid at
#    level $\alpha$ without a correction); inconclusive otherwise, naming the pairs that
#    block it;
# 2. *the shortfall is under-training*: supported when every pair is **under-trained** or
#    **no gap** and at least one is **under-trained**; contradicted when claim 1 is supported.
#
# A pair has one call, so the two claims are never both supported. Pairs below the onset
# are shown as descriptive and decide nothing; the smallest batch size with a gap call is
# compared with the essay's 4,096.
#
# **Error rates, measured.** {py:func}`sgdnoise.decide.rates.headline_error_rates` simulates
# families of pre-registered pairs under stated truths (no gap; a gap exactly at the margin;
# pure under-training; one pair with a gap at equal fit or at matched fit; residuals exactly
# at the margin), with the small batch's path and the seed-to-seed spread measured from
# records ({py:func}`sgdnoise.decide.scenarios.measure_spread`: pooled within each arm and
# batch size), runs the procedure on each, and counts how often each claim comes out
# supported, with a Wilson interval {cite}`wilson1927probable`. Beside each headline verdict
# stand its false-positive rate (the largest rate of "supported" over the truths where the
# claim is false) and its power, at the seeds actually recorded.


# %% [markdown]
# (tab-ch8-design)=
# The full-scale design at 30 epochs, $N = 50{,}000$, $\eta = 0.1$: steps {eq}`eq-ch8-steps`,
# examples seen, the finite-population factor of {eq}`eq-ch8-cov` and the reach $\eta S$ of
# {eq}`eq-ch8-reach` (computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.protocol_table`).

# %% tags=["remove-input"]
design_table(50_000, GPU_SIZES, 30, 0.1, "")

# %% [markdown]
# (sec-ch8-pilot)=
# ## The 10-epoch GPU pilot: what it shows, and its spread
#
# On 2026-11-26 a pilot trained ResNet34 (width 64, BatchNorm, CIFAR stem) on all 50,000
# training images of the offline copy with plain SGD ($\eta = 0.1$ constant) for 10 epochs
# at the nine batch sizes, two seeds each, on one H200 GPU. Its code was the repository at
# commit `72641ac` plus the training engine committed right after it; the records carry no
# commit of their own, because the copy sent to the GPU had no git history
# (`data/results/ch08_pilot/PROVENANCE.md`). Unlike the plan, it kept the incomplete last
# batch of each epoch, computed the BatchNorm statistics over at most 4,096 examples and
# left them as training left them, and evaluated once per epoch. Stale BatchNorm statistics
# and a learning rate that never decays make every evaluation noisy, and 10 epochs is a
# third of the essay's budget, so the pilot is shown here as it is and decides nothing. It
# serves one purpose: its seed-to-seed spread is the only measured spread of a ResNet34 run
# so far, and the error rates of the full-scale verdicts below are computed with it.

# %% tags=["remove-cell"]
pilot = ch08.load_recorded(P.pilot_dirs)
pilot_scale = ch08.records_scale(pilot, "10-epoch GPU pilot")
pilot_spread = ds.measure_spread(pilot, "measured on the 10-epoch GPU pilot")
pilot_arm = ["pilot"]

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The 10-epoch GPU pilot, every run on one picture: test error against train loss. The line is every evaluation of $B = 128$ (one per seed); each marker is the last evaluation of one run, coloured by its batch size on the bar at the right. Model, device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`.", "name": "fig-ch8-pilot-fit"}}
if ch08.has_records(pilot, pilot_arm):
    show(ch08.plot_matched_fit(pilot, pilot_arm, pilot_scale))

# %% tags=["remove-input"]
if ch08.has_records(pilot, pilot_arm):
    display(Markdown(
        "**What to see.** Whether the markers sit on the line: a large batch on the line "
        "tests as the small batch did when it had fitted the training set equally well "
        "(it stopped earlier on the same path), one above it tests worse at equal fit (a "
        "generalization gap). "
        + ch08.residual_sentence(ch08.curve_residuals(pilot, "pilot"), pilot_spread)))
    table(ch08.pilot_summary(pilot),
          "The last evaluation of each batch size, mean over its seeds; below it the "
          "seed-to-seed spread "
          "($s$ pooled over the nine batch sizes, "
          "{py:func}`sgdnoise.decide.scenarios.measure_spread`): "
          f"{pilot_spread.describe()}.",
          {"train loss": 2, "train error": PERCENT, "test error": PERCENT})
else:
    display(Markdown("No record of the pilot was found, so there is nothing to show."))

# %% [markdown]
# (sec-ch8-midscale)=
# ## Mid-scale records on one CPU thread
#
# The full plan needs a GPU. Its arms also run at a size one CPU thread can reach
# (`plan_midscale.yaml`, run by `make midscale`): ResNet-20 of width 16 with BatchNorm, on
# 10,000 CIFAR-10 training images average-pooled to 16×16 pixels, without augmentation, at
# batch sizes 26 to 6,656. These are the full plan's 128 to 32,768 at the same fraction
# $B/N$ of the training set, so the same pairs are pre-registered and the same procedure
# and thresholds decide them; the claims name this scale and say nothing about ResNet34.
# The records accumulate in `data/results/ch08_midscale/` a few hours at a time, arm A
# first. Their seed-to-seed spread is the measured spread closest to the full-scale
# experiment, so the full-scale error rates and seed counts below are computed with it.
# A control, arm A-ghost, repeats arm A at the 4,096- and 8,192-equivalents with ghost
# BatchNorm over 26 examples (the small batch's size): beside arm A's run of the same seed
# it shows whether the BatchNorm batch, rather than the steps or the noise, moves the test
# error. One seed each, so it is shown and not decided on.

# %% tags=["remove-cell"]
mid = ch08.load_recorded(P.midscale_dirs)
mid_sharp = ch08.load_sharpness_records(P.midscale_dirs)
mid_scale = ch08.plan_scale(P.midscale_plan, mid, kind="mid-scale CPU records",
                            section="sec-ch8-midscale", target=P.target_midscale)
mid_spread = (ds.measure_spread(mid, "measured on the mid-scale CPU records") if len(mid)
              else None)
mid_res = ch08.analyse(mid, mid_sharp if len(mid_sharp) else None, P, mid_scale,
                       spread=ch08.planning_spread([mid_spread, pilot_spread]))
mid_all_arms = sorted(set(mid["arm"].astype(str))) if len(mid) else []
mid_arms = [a for a in mid_all_arms if a in P.decisive_arms]  # the figures' panels
mid_controls = ch08.control_arms(mid_all_arms, mid_arms)  # e.g. ("A-ghost", "A")

# %% tags=["remove-input"]
n_mid, _, mid_model = ch08.plan_runs(P.midscale_plan)
display(Markdown(
    f"Runs recorded: {len(ch08.final_points(mid)) if len(mid) else 0} of the plan's "
    f"{n_mid}" + (f", in arm{'s' if len(mid_all_arms) > 1 else ''} "
                  f"{', '.join(mid_all_arms)}; {mid_scale.label}" if mid_all_arms else "")
    + (f". Their seed-to-seed spread: {mid_spread.describe()}." if mid_spread is not None
       else ". No figure is drawn until there is one.")))
decision_table(mid_res, "the mid-scale records")

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Mid-scale CPU records (ResNet-20, 10,000 images at 16×16): test error against train loss per arm; the lines are the smallest batch's evaluations (one per seed), each marker one run's last evaluation coloured by its batch size. Device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`.", "name": "fig-ch8-midscale-fit"}}
if ch08.has_records(mid, mid_arms):
    show(ch08.plot_matched_fit(mid, mid_arms, mid_scale.label))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Mid-scale CPU records (ResNet-20, 10,000 images at 16×16): test error against the optimizer step per arm, one line per run coloured by its batch size. Device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_error_vs_step`.", "name": "fig-ch8-midscale-steps"}}
if ch08.has_records(mid, mid_arms):
    show(ch08.plot_error_vs_step(mid, mid_arms, mid_scale.label))

# %% tags=["remove-input"]
if ch08.has_records(mid, mid_arms):
    display(Markdown(
        "**What to see.** In the first figure, whether the large batches' markers sit on "
        "the small batch's line (the same test error at the same train loss) or above it; "
        "in the second, whether their test error was still falling when the 30 epochs "
        "ended. "
        + " ".join(ch08.residual_sentence(ch08.curve_residuals(mid, a), mid_res.spread)
                   for a in mid_arms[:1])))
    if mid_res.rates is not None:
        table(ch08.rates_table(mid_res.rates),
              f"How often the procedure errs at these records' seeds: at "
              f"{mid_res.rates.n_seeds} seeds, {mid_res.rates.conditions()}; "
              f"{mid_res.rates.n_sim:,} simulated data sets per truth.")
    analysis_tables(mid_res, P.target_midscale)
    for line in mid_res.notes:
        display(Markdown(line))
    edges = ch08.tuned_at_edge(P.midscale_dirs)
    if edges:
        display(Markdown(
            "Learning rates tuned to the edge of the grid of factors (0.5, 1, 2 of the "
            "linear rule): " + "; ".join(edges) + ". A factor beyond the grid was not tried, "
            "so these runs may be tuned short of their best; the calls above use them as "
            "recorded."))
    for control, reference in mid_controls:
        pairs = ch08.control_comparison(mid, control, reference)
        names = {"train_error_ref": f"train error, arm {reference}",
                 "train_error_ctl": f"train error, {control}",
                 "test_error_ref": f"test error, arm {reference}",
                 "test_error_ctl": f"test error, {control}",
                 "diff": "test-error difference (points)"}
        if len(pairs):
            table(pairs.rename(columns=names),
                  f"The control {control}: arm {reference} with ghost BatchNorm over the "
                  f"small batch's size, beside arm {reference}'s run of the same batch size "
                  "and seed (final train and test error; the difference is control minus "
                  "reference).",
                  {**{names[c]: PERCENT for c in names if c != "diff"},
                   names["diff"]: lambda v: MINUS(fmt_number(v * 100, 1))})
        display(Markdown(ch08.control_sentence(pairs, mid_res.spread,
                                               what="the BatchNorm batch")))

# %% [markdown]
# (sec-ch8-recorded)=
# ## The full-scale records
#
# The plan's records (`data/results/ch08/`, written by `sgdnoise-sweep` on GPU machines)
# are re-read here, never retrained. The headline verdicts of the chapter come from them
# alone. Where a pre-registered pair has no record yet, the verdicts say so; their error
# rates are then computed at the seeds the plan will run.

# %% tags=["remove-cell"]
recorded = ch08.load_recorded(P.records_dirs)
sharp = ch08.load_sharpness_records(P.sharpness_dirs)
rec_scale = ch08.Scale(ch08.records_scale(recorded), "ResNet34 on CIFAR-10, full scale",
                       "sec-ch8-recorded", P.target, plan=P.gpu_plan)
own = ds.measure_spread(recorded, "measured on these records") if len(recorded) else None
rec_spread = ch08.planning_spread([own, mid_spread, pilot_spread])
rec = ch08.analyse(recorded, sharp, P, rec_scale, spread=rec_spread)
rec_arms = sorted(set(recorded["arm"])) if len(recorded) else []
planned = ch08.plan_family(P.gpu_plan, TH)

# %% tags=["remove-input"]
n_rec = len(ch08.final_points(recorded)) if len(recorded) else 0
n_plan = ch08.plan_runs(P.gpu_plan)[0]
display(Markdown(
    f"Runs recorded: {n_rec} of the plan's {n_plan}"
    + (f", in arms {', '.join(rec_arms)}; {rec_scale.label}" if rec_arms else "")
    + ". " + ("No figure of the full-scale records is drawn until there is one. "
              if not n_rec else "")
    + f"The error rates use the spread {rec_spread.describe()}."))
decision_table(rec, "the full-scale records")

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Full-scale records: test error against train loss per arm; the lines are the smallest batch's evaluations (one per seed), each marker one run's last evaluation coloured by its batch size. Model, device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`.", "name": "fig-ch8-recorded-fit"}}
if ch08.has_records(recorded, rec_arms):
    show(ch08.plot_matched_fit(recorded, rec_arms, rec_scale.label))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Full-scale records: test error against the optimizer step per arm, one line per run coloured by its batch size. Model, device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_error_vs_step`.", "name": "fig-ch8-recorded-steps"}}
if ch08.has_records(recorded, rec_arms):
    show(ch08.plot_error_vs_step(recorded, rec_arms, rec_scale.label))

# %% tags=["remove-input"]
if ch08.has_records(recorded, rec_arms):
    display(Markdown(
        "**What to see.** In the first figure, as for the pilot, whether each arm's markers "
        "sit on its smallest batch's line; in the second, whether the large batches' curves "
        "have flattened by their last step or are still falling when their budget ends. "
        + " ".join(ch08.residual_sentence(ch08.curve_residuals(recorded, a), rec_spread)
                   for a in rec_arms[:1])))

# %% [markdown]
# (sec-ch8-rates)=
# ### How often the procedure errs at the plan's seeds
#
# The first table gives, for each simulated truth, how often each headline claim came out
# supported with the full-scale family of pre-registered pairs and the spread named above
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.rates_table`; 95% Wilson intervals). The
# second table gives the seeds per pair at which the gap call reaches 80% power
# ({py:func}`sgdnoise.decide.power.seeds_for_power`: a one-sided $t$-test at level
# $\alpha/k$, Holm's first step for a single gap among $k$ pairs, times the power of the fit
# test; the small batch's final loss taken as 0.005 nats).

# %% tags=["remove-input"]
if rec.rates is not None:
    table(ch08.rates_table(rec.rates),
          f"At {rec.rates.n_seeds} seeds, {rec.rates.conditions()}; "
          f"{rec.rates.n_sim:,} simulated data sets per truth.")
table(ch08.seeds_table(rec_spread, TH, gaps=[0.02, 0.03, 0.05], family_sizes=[4, 6, 8, 9],
                       end_loss=0.005),
      "Seeds per pair for 80% power, by the size of the gap (rows) and the number of "
      "pre-registered pairs (columns).", {"gap (points)": "{:g}"})

# %% [markdown]
# The plateau test fits each run's train and test error against $\ln(\text{step})$ over its
# last evaluations (one slope per run, so the autocorrelation of successive evaluations
# never counts as evidence) and puts an interval across seeds
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.plateau_test`); the sharpness tests compare
# $\eta\lambda_{\max}/2(1+\beta)$ with 1 inside a constant-$\eta$ window and test whether the
# end-of-run $\lambda_{\max}$ grows with $B$
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.sharpness_edge_test`,
# {py:func}`sgdnoise.chapters.ch08_resnet_sweep.sharpness_trend_test`). Steps to the
# pre-registered test-error target are descriptive
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.steps_to_target`).

# %% tags=["remove-input"]
analysis_tables(rec, P.target)
for line in rec.notes:
    display(Markdown(line))
if ch08.tuned_at_edge(P.records_dirs):
    display(Markdown("Learning rates tuned to the edge of the grid of factors: "
                     + "; ".join(ch08.tuned_at_edge(P.records_dirs))
                     + ". A factor beyond the grid was not tried, so these runs may be "
                     "tuned short of their best."))
if not len(sharp):
    display(Markdown("No sharpness record of the full-scale plan exists yet, so the "
                     "sharpness tests have nothing to read and no sharpness figure is "
                     "drawn."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Full-scale records: the sharpness times the learning rate over the stability threshold $2(1+\\beta)$, against the step, one line per run; solid line: the edge of stability, dashed: the thresholds of the sharpness test. Model, device, commit and date in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_sharpness`.", "name": "fig-ch8-recorded-sharpness"}}
if len(sharp):
    rec_momentum = (recorded.groupby("arm")["momentum"].first().fillna(0.0).to_dict()
                    if len(recorded) else {})
    show(ch08.plot_sharpness(sharp, rec_momentum, rec_scale.label, eos_low=P.eos_low,
                             below_fraction=P.below_fraction))

# %% tags=["remove-input"]
if len(sharp):
    display(Markdown("**What to see.** Whether the lines of the constant learning rate arms "
                     "hover at the solid line (the edge of stability) in the second half of "
                     "each run, or stay below the lower dashed line."))

# %% [markdown]
# (sec-ch8-miniature)=
# ## The laptop miniature
#
# Arms A–C in miniature, declared in the plan file `plan_laptop.yaml` beside the profiles
# and trained in this execution by the same sweep code as the GPU runs
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.run_miniature`): an MLP
# $3072\text{–}w\text{–}w\text{–}10$ without normalisation, a stratified subset of the
# offline CIFAR-10 copy (the real images after one JPEG round trip), no augmentation, the
# incomplete last batch of each epoch dropped. Arm A is plain SGD at a constant $\eta$; arm
# B uses momentum, weight decay, $\eta \propto B$ with warm-up and a cosine decay to 0 over
# the same number of epochs; arm C runs arm B's recipe for as many steps as arm B takes at
# its reference batch size. The batch sizes run up to $N$, where SGD is gradient descent.
# The verdicts of this section are about this MLP on these images, with the same procedure
# and the same pre-registration ($B/N$ at or above 0.082); they do not transfer to ResNet34
# on 50,000 images, which has BatchNorm, a different loss landscape and a different spread.

# %% tags=["remove-cell"]
mini = None
mini_words = ""
if P.run_miniature:
    plan_spec = ch08.read_plan(P.plan)
    mini_dir = P.out_dir or tempfile.mkdtemp(prefix="ch08_mini_")
    mini = ch08.run_miniature(P.plan, mini_dir)
    d = plan_spec["data"]
    data_words = ("images of the offline CIFAR-10 copy" if d["dataset"] == "cifar10"
                  else "synthetic CIFAR-shaped images")
    mini_words = (f"an MLP of width {plan_spec['defaults'].get('width')} on {d['n_train']:,} "
                  f"{data_words}")
    mini_label = (f"laptop run, {P.profile} profile: {mini_words}, {d['n_test']:,} test "
                  "images")
    mini_claims = (f"MLP miniature, {d['n_train']:,} "
                   f"{'CIFAR-10' if d['dataset'] == 'cifar10' else 'synthetic'} images, laptop")
    mini_sharp = ch08.load_sharpness_records([mini_dir])
    mini_spread = ds.measure_spread(mini, "measured on these laptop records")
    lap = ch08.analyse(mini, mini_sharp if len(mini_sharp) else None, P,
                       ch08.Scale(mini_label, mini_claims, "sec-ch8-miniature",
                                  P.target_laptop, plan=P.plan),
                       spread=mini_spread)
mini_arms = ["A", "B", "C"]

# %% tags=["remove-input"]
if mini is None:
    display(Markdown("The miniature is not trained in this profile."))
else:
    arm_a = plan_spec["arms"]["A"]
    design_table(d["n_train"], arm_a["batch_sizes"], arm_a["config"]["epochs"],
                 arm_a["config"]["lr"],
                 f"Arm A's design on {d['n_train']:,} images ({{eq}}`eq-ch8-steps`, "
                 "{eq}`eq-ch8-cov`, {eq}`eq-ch8-reach`).")

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop miniature: test error against train loss per arm; the lines are the smallest batch's evaluations (one per seed), each marker one run's last evaluation coloured by its batch size. Profile and data in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`.", "name": "fig-ch8-mini-fit"}}
if mini is not None and ch08.has_records(mini, mini_arms):
    show(ch08.plot_matched_fit(mini, mini_arms, mini_label))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop miniature: test error against the optimizer step per arm, one line per run coloured by its batch size. Profile and data in the title. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_error_vs_step`.", "name": "fig-ch8-mini-steps"}}
if mini is not None and ch08.has_records(mini, mini_arms):
    show(ch08.plot_error_vs_step(mini, mini_arms, mini_label))

# %% tags=["remove-input"]
if mini is not None and ch08.has_records(mini, mini_arms):
    display(Markdown(
        "**What to see.** In the first figure, whether each arm's markers sit on its "
        "smallest batch's line or above it; in the second, how far along its curve each "
        "batch size gets within its budget. In arm A, "
        + ch08.residual_sentence(ch08.curve_residuals(mini, "A"), mini_spread)[0].lower()
        + ch08.residual_sentence(ch08.curve_residuals(mini, "A"), mini_spread)[1:]))

# %% tags=["remove-input"]
if mini is not None:
    decision_table(lap, "the miniature")
    if lap.rates is not None:
        table(ch08.rates_table(lap.rates),
              f"How often the procedure errs at the miniature's {lap.rates.n_seeds} seeds, "
              f"{lap.rates.conditions()}; {lap.rates.n_sim:,} simulated data sets per "
              "truth, 95% Wilson intervals.")
    analysis_tables(lap, P.target_laptop)
    for line in lap.notes:
        display(Markdown(line))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop miniature: the sharpness of the plan's arm D as $\\eta\\lambda_{\\max} / 2(1+\\beta)$ against the step; solid: the edge of stability, dashed: the thresholds of the sharpness test. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_sharpness`.", "name": "fig-ch8-mini-sharpness"}}
if mini is not None and len(mini_sharp):
    show(ch08.plot_sharpness(mini_sharp, {}, mini_label, eos_low=P.eos_low,
                             below_fraction=P.below_fraction))

# %% tags=["remove-input"]
if mini is not None and len(mini_sharp):
    display(Markdown("**What to see.** Whether the huge batch's line climbs to the solid "
                     "line and stays there."))
elif mini is not None:
    display(Markdown("The miniature's plan has no arm D, so it records no sharpness and no "
                     "sharpness figure is drawn."))

# %% [markdown]
# ## How this relates to the literature
#
# At equal steps with a tuned learning rate, Smith, Elsen and De find that large batches
# still lose test accuracy beyond a critical batch size {cite}`smith2020generalization`,
# while Geiping et al. reach SGD's accuracy with full-batch gradient descent once explicit
# regularisation and enough steps are added {cite}`geiping2022stochastic`; Golmant et al.
# measure, across models and data sets, where extra batch size stops buying fewer steps
# {cite}`golmant2018computational`. Arms B and C are the protocols under which the first two
# disagree; the verdicts below say which of them the records support, where the records
# exist.
#
# (sec-ch8-verdicts)=
# ## What the numbers say
#
# The full-scale verdicts speak about ResNet34; the miniature's speak only about the MLP
# miniature, as their claims say. Each claim about SGD carries the false-positive rate and
# power of its rule at the seeds behind it.

# %% tags=["remove-input"]
verdicts = (ch08.present_verdicts(rec, planned)
            + ch08.present_verdicts(mid_res, ch08.plan_family(P.midscale_plan, TH))
            + (ch08.present_verdicts(lap, ch08.plan_family(P.plan, TH)) if mini is not None
               else []))
show_verdicts("ch08_resnet_sweep", verdicts,
              notes=ch08.record_notes(recorded, pilot, P.gpu_plan, mini, mini_words)
              + [ch08.midscale_note(mid, P.midscale_plan)])

# %% [markdown]
# ## Provenance

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds)))
