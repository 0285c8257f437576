# ---
# jupyter:
#   jupytext:
#     text_representation: {extension: .py, format_name: percent}
#   kernelspec: {display_name: Python 3, language: python, name: python3}
# ---

# %% [markdown]
# # 8. Large batches: a generalization gap, or too few steps?
#
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
# This chapter decides between them with package code
# ({mod}`sgdnoise.chapters.ch08_resnet_sweep`): on the recorded GPU runs (re-analysed here,
# never retrained) and on a laptop miniature trained in this execution through the same
# sweep code. Every outcome below is computed; the thresholds are parameters.
#
# ## Steps, reach and noise at a fixed epoch budget
#
# One epoch visits a fresh random permutation of the $N$ training examples in batches of
# $B$; with `drop_last` the incomplete last batch is dropped, so every step has exactly $B$
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
# At a fixed $\eta$ the reach shrinks like $1/B$; the scaling rule
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
# * **A, the essay's setting**: plain SGD, $\eta = 0.1$ constant, 30 epochs.
# * **B, equal epochs with the scaling rule** {cite}`goyal2017accurate`: momentum 0.9,
#   weight decay $5\cdot 10^{-4}$, $\eta = 0.1\,B/256$ with a 5-epoch warm-up, decayed to 0,
#   30 epochs.
# * **C, equal steps** {cite}`hoffer2017train`: arm B's recipe, every batch size with the
#   step count of $B = 512$ in 30 epochs (or the largest that fits the lease).
# * **D, can a huge batch converge at all**: $B = 32{,}768$ for at least 250 steps, plain
#   $\eta = 0.1$ (D-plain) against warm-up and momentum at the scaled $\eta$ (D-scaled), with
#   the sharpness $\lambda_{\max}$ every 50 steps.
#
# Every run drops the last incomplete batch and normalises with BatchNorm
# {cite}`ioffe2015batchnorm` over ghost batches
# of one fixed size for every $B$ at or above it, so the BatchNorm noise does not change with
# $B$ where the sweep asks its question (the pilot below did not: its BatchNorm statistics
# came from $\min(B, 4096)$ examples). About 25 evaluations at log-spaced steps measure a fixed
# clean 10,000-image training subset and the full test set, with BatchNorm statistics
# recomputed first.
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
# never across architectures.

# %% tags=["parameters", "remove-cell"]
profile = "default"
records_dirs = ["../../data/results/ch08_pilot", "../../data/results/ch08"]
sharpness_dirs = ["../../data/results/ch08"]
run_miniature = True
plan = "../params/ch08_resnet_sweep/plan_laptop.yaml"
targets = [0.15, 0.10]
targets_laptop = [0.70, 0.65]
loss_tolerance = 0.02
gap_margin = 0.01
curve_margin = 0.02
curve_range_tolerance = 0.01
plateau_evals = 5
plateau_margin = 0.01
eos_low = 0.8
below_fraction = 0.5
out_dir = ""

# %% tags=["remove-cell"]
import tempfile

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from sgdnoise.chapters import ch08_resnet_sweep as ch08
from sgdnoise.plotting import use_style
from sgdnoise.report import Stopwatch, provenance_markdown, show_verdicts, tex_html

P = ch08.Params.from_namespace(globals())
clock = Stopwatch()
use_style()
GPU_SIZES = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


# the tables' column names as the page shows them (counts in words, symbols typeset)
HEADERS = {"n_seeds": "seeds", "n_runs": "runs", "n_reached": "reached",
           "n_outside": "off the curve's range", "final_test_error": "final test error",
           "last_step": "last step", "B0": tex_html("B_0"),
           "reach ηS": "reach " + tex_html(r"\eta S"), "(N-B)/(N-1)": tex_html("(N-B)/(N-1)")}


def show_table(df, formats=None):
    display(df.style.format(formats or {}, precision=3, na_rep="–")
            .format_index(lambda c: HEADERS.get(c, c), axis="columns").hide(axis="index"))


# %% [markdown]
# (tab-ch8-design)=
# The full-scale design at 30 epochs, $N = 50{,}000$, $\eta = 0.1$: steps {eq}`eq-ch8-steps`,
# examples seen, the finite-population factor of {eq}`eq-ch8-cov` and the reach $\eta S$ of
# {eq}`eq-ch8-reach` (computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.protocol_table`).

# %% tags=["remove-input"]
show_table(ch08.protocol_table(50_000, GPU_SIZES, epochs=30, lr=0.1),
           {"examples seen": "{:,}", "reach ηS": "{:.1f}", "(N-B)/(N-1)": "{:.3f}"})

# %% [markdown]
# (sec-ch8-recorded)=
# ## The recorded GPU runs
#
# The records below were written by `sgdnoise-sweep` on GPU machines and are only re-read
# here, each arm under its own name. The 10-epoch pilot of 2026-11-26 appears as arm "pilot"
# (plain SGD, $\eta = 0.1$ constant, 2 seeds, `drop_last` off, BatchNorm over
# $\min(B, 4096)$ examples, one evaluation per epoch); the line below lists what was found.

# %% tags=["remove-cell"]
recorded = ch08.load_recorded(P.records_dirs)
sharp = ch08.load_sharpness_records(P.sharpness_dirs)
rec_scale = ch08.records_scale(recorded)
rec_arms = sorted(set(recorded["arm"])) if len(recorded) else []
rec = ch08.analyse(recorded, sharp, P, scale=rec_scale, section="sec-ch8-recorded",
                   targets=P.targets)

# %% tags=["remove-input"]
display(Markdown(
    f"Records found: {len(ch08.final_points(recorded)) if len(recorded) else 0} runs in arm(s) "
    f"{', '.join(rec_arms) or 'none'} — {rec_scale}."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Recorded GPU runs (device, commit and date in the title): test error against train error. Lines: every evaluation of the smallest batch of each arm (one per seed); markers: the last evaluation of every run, one colour per batch size. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`; the residuals are in the table below ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.matched_fit`).", "name": "fig-ch8-recorded-fit"}}
plt.show(ch08.plot_matched_fit(recorded, rec_arms, rec_scale))

# %% tags=["remove-input"]
for arm in rec_arms:
    if f"matched_fit_{arm}" in rec.tables and len(rec.tables[f"matched_fit_{arm}"]):
        show_table(ch08.intervals_as_text(rec.tables[f"matched_fit_{arm}"],
                                          percent=["residual"]).rename(
            columns={"residual": "residual (points, 95% CI)",
                     "n_outside": "off the curve's range"}))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Recorded GPU runs (device, commit and date in the title): test error against the optimizer step, one line per run, one colour per batch size. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_error_vs_step`.", "name": "fig-ch8-recorded-steps"}}
plt.show(ch08.plot_error_vs_step(recorded, rec_arms, rec_scale))

# %% [markdown]
# Steps to a test-error target {cite}`shallue2019measuring,golmant2018computational`: with
# perfect scaling, doubling $B$ halves the steps (slope $-1$ in log–log); the table gives the
# geometric mean over seeds and how many seeds reached the target
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.steps_to_target`).

# %% tags=["remove-input"]
for name, t in rec.tables.items():
    if name.startswith("steps_") and len(t):
        shown, unreached = ch08.split_unreached(t)
        if unreached:
            display(Markdown(
                f"Arm {name.removeprefix('steps_')}: no run reached a test error of "
                + " or ".join(f"{u:.0%}" for u in unreached)
                + f" ({int(t['n_runs'].max())} run(s) per batch size)."))
        if len(shown):
            show_table(ch08.intervals_as_text(shown).rename(columns={
                "steps": "steps (95% CI)", "target": "target test error"}),
                {"examples": "{:,.0f}", "slope": "{:.2f}"})

# %% [markdown]
# The plateau test fits the test error of the largest batch against $\ln(\text{step})$ over
# its last evaluations; its slope is in points of test error per e-fold of steps
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.plateau_test`), and the
# sharpness test compares $\eta\lambda_{\max}/2(1+\beta)$ with 1
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.sharpness_test`).

# %% tags=["remove-input"]
for name, t in rec.tables.items():
    if (name.startswith("plateau_") or name == "sharpness") and len(t):
        show_table(ch08.intervals_as_text(t, percent=["slope"]).rename(columns={
            "slope": "slope (95% CI)",
            "ratio": tex_html(r"\eta\lambda_{\max}/2(1+\beta)") + " (95% CI)"}),
            {"final_test_error": "{:.3f}"})

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Recorded GPU runs of arm D (device, commit and date in the title): the sharpness times the learning rate over the stability threshold 2(1+β), against the step; solid line: the edge of stability, dashed: the thresholds of the sharpness test. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_sharpness`.", "name": "fig-ch8-recorded-sharpness"}}
rec_momentum = (recorded.groupby("arm")["momentum"].first().fillna(0.0).to_dict()
                if len(recorded) else {})
plt.show(ch08.plot_sharpness(sharp, rec_momentum, rec_scale, eos_low=P.eos_low,
                             below_fraction=P.below_fraction))

# %% [markdown]
# (sec-ch8-miniature)=
# ## The laptop miniature
#
# Arms A–C in miniature, declared in the plan file `plan_laptop.yaml` beside the profiles
# and trained in this execution by the same sweep code as the GPU runs
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.run_miniature`): an MLP
# $3072\text{–}w\text{–}w\text{–}10$ without normalisation (so no BatchNorm caveat), a
# stratified subset of CIFAR-10 (the offline copy after one JPEG round trip), no
# augmentation, `drop_last`. Arm A is plain SGD at a constant $\eta$; arm B uses momentum,
# weight decay, $\eta \propto B$ with warm-up and a cosine decay to 0 over the same number of
# epochs; arm C runs arm B's recipe for as many steps as arm B takes at its reference batch
# size. The batch sizes run up to $N$, where SGD is gradient descent. The table is arm A's
# design ({eq}`eq-ch8-steps`, {eq}`eq-ch8-cov`, {eq}`eq-ch8-reach`).

# %% tags=["remove-cell"]
mini = None
mini_or_empty = recorded.iloc[:0]
mini_sharp = sharp.iloc[:0]
mini_scale = f"laptop run not executed in profile {P.profile} (run_miniature: false)"
if P.run_miniature:
    plan_spec = ch08.read_plan(P.plan)
    mini_dir = P.out_dir or tempfile.mkdtemp(prefix="ch08_mini_")
    mini = ch08.run_miniature(P.plan, mini_dir)
    d = plan_spec["data"]
    mini_scale = (f"laptop run, profile {P.profile}: plan {plan_spec['name']}, "
                  f"{plan_spec['defaults'].get('model')} width "
                  f"{plan_spec['defaults'].get('width')}, N = {d['n_train']} {d['dataset']} "
                  f"images, {d['n_test']} test")
    mini_sharp = ch08.load_sharpness_records([mini_dir])
    lap = ch08.analyse(mini, mini_sharp if len(mini_sharp) else None, P, scale=mini_scale,
                       section="sec-ch8-miniature", targets=P.targets_laptop)
    mini_or_empty = mini

# %% tags=["remove-input"]
if mini is None:
    display(Markdown("The miniature is not run in this profile (`run_miniature: false`)."))
else:
    arm_a = plan_spec["arms"]["A"]
    show_table(ch08.protocol_table(d["n_train"], arm_a["batch_sizes"],
                                   epochs=arm_a["config"]["epochs"], lr=arm_a["config"]["lr"]),
               {"examples seen": "{:,}", "reach ηS": "{:.1f}", "(N-B)/(N-1)": "{:.3f}"})

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop run (profile and data in the title): test error against train error per arm; lines: the smallest batch's trajectory per seed, markers: every run's last evaluation, one colour per batch size. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_matched_fit`.", "name": "fig-ch8-mini-fit"}}
plt.show(ch08.plot_matched_fit(mini_or_empty, ["A", "B", "C"], mini_scale))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop run (profile and data in the title): test error against the optimizer step per arm, one line per run, one colour per batch size. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_error_vs_step`.", "name": "fig-ch8-mini-steps"}}
plt.show(ch08.plot_error_vs_step(mini_or_empty, ["A", "B", "C"], mini_scale))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Laptop run (profile and data in the title): the sharpness of the plan's arm D, when it has one, as $\\eta\\lambda_{\\max} / 2(1+\\beta)$ against the step; solid: the edge of stability. Computed by {py:func}`sgdnoise.chapters.ch08_resnet_sweep.plot_sharpness`.", "name": "fig-ch8-mini-sharpness"}}
plt.show(ch08.plot_sharpness(mini_sharp, {}, mini_scale, eos_low=P.eos_low,
                             below_fraction=P.below_fraction))

# %% [markdown]
# The size of the effect against its interval: for each arm and batch size, the paired
# (by seed) differences from the arm's smallest batch in final train loss and test error,
# with 95% intervals ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.gap_test`), and the
# residuals from the small batch's curve
# ({py:func}`sgdnoise.chapters.ch08_resnet_sweep.matched_fit`).

# %% tags=["remove-input"]
if mini is not None:
    show_table(ch08.intervals_as_text(lap.tables["gap"], percent=["d_test_error"]).rename(
        columns={"d_train_loss": "Δ train loss (nats, 95% CI)",
                 "d_test_error": "Δ test error (points, 95% CI)"}))
    for arm in ("A", "B", "C"):
        t = lap.tables.get(f"matched_fit_{arm}")
        if t is not None and len(t):
            show_table(ch08.intervals_as_text(t, percent=["residual"]).rename(
                columns={"residual": "residual (points, 95% CI)",
                         "n_outside": "off the curve's range"}))
    for name, t in lap.tables.items():
        if name.startswith("steps_") and len(t):
            show_table(ch08.intervals_as_text(t).rename(columns={
                "steps": "steps (95% CI)", "target": "target test error"}),
                {"examples": "{:,.0f}", "slope": "{:.2f}"})

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

# %% tags=["remove-input"]
verdicts = list(rec.verdicts) + (list(lap.verdicts) if mini is not None else [])
show_verdicts("ch08_resnet_sweep", verdicts)

# %% [markdown]
# To add GPU records: `sgdnoise-sweep book/params/ch08_resnet_sweep/plan_full.yaml --out
# data/results/ch08 --budget SECONDS` runs the highest-priority unfinished runs of the plan
# that fit the budget (arm A seed 0, arm B seed 0, arm D and arm C seed 0 first); commit the
# records and rebuild the page with the `full` profile.
#
# ## Provenance

# %% tags=["remove-input"]
display(Markdown(provenance_markdown(P.profile, P.to_dict(), wall_time_s=clock.seconds)))
