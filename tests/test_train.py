"""Tests of the training engine (sgdnoise.train): augmentation, schedule, exact batch
semantics, micro-batch accumulation, repeatability, divergence, checkpoint/resume, hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdnoise.train import (
    TrainConfig,
    crop_flip,
    evaluate,
    lr_multiplier,
    random_crop_flip_params,
    steps_per_epoch,
    train,
)

torch.set_num_threads(1)


def _data(n_train=48, n_test=24, seed=0, classes=3):
    """Tiny uint8 image data with a learnable signal: class k brightens channel k."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(n_train + n_test) % classes
    x = torch.randint(0, 120, (n_train + n_test, 3, 8, 8), generator=g, dtype=torch.int64)
    x[torch.arange(len(ys)), ys] += 100
    x = x.clamp(0, 255).to(torch.uint8)
    return {"train_x": x[:n_train], "train_y": ys[:n_train], "test_x": x[n_train:],
            "test_y": ys[n_train:]}


class TinyNet(nn.Module):
    """conv -> relu -> mean pool -> linear (no normalisation: examples are independent)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _tiny(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return TinyNet().to(dtype)


def _cfg(**kw):
    base = dict(model="cnn", width=4, norm="none", batch_size=8, epochs=2, lr=0.1,
                augment=False, seed=0, eval_batch_size=16)
    base.update(kw)
    return TrainConfig(**base)


def _normalise(x_uint8):
    mean = torch.tensor((0.4914, 0.4822, 0.4465), dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616), dtype=torch.float64).view(1, 3, 1, 1)
    return (x_uint8.double() / 255.0 - mean) / std


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_flip_matches_per_image_reference(channels_last):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (7, 3, 6, 5), generator=g).to(torch.uint8)
    dy, dx, fl = random_crop_flip_params(7, g, padding=2)
    out = crop_flip(x, dy, dx, fl, padding=2, channels_last=channels_last)
    assert out.shape == x.shape
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    for b in range(7):  # independent reference: pad, slice, flip one image at a time
        padded = torch.zeros(3, 10, 9, dtype=torch.uint8)
        padded[:, 2:8, 2:7] = x[b]
        ref = padded[:, int(dy[b]):int(dy[b]) + 6, int(dx[b]):int(dx[b]) + 5]
        if fl[b]:
            ref = ref.flip(-1)
        assert torch.equal(out[b], ref)


def test_crop_params_cover_range_and_are_seeded():
    a = random_crop_flip_params(4000, torch.Generator().manual_seed(0))
    b = random_crop_flip_params(4000, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    dy, dx, fl = a
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9))
    # flip probability 1/2: 4000 draws, 5 standard deviations = 5*sqrt(1000) ~ 158
    assert abs(int(fl.sum()) - 2000) < 160


# --------------------------------------------------------------------------- schedule


def test_lr_multiplier_closed_forms():
    c = TrainConfig(batch_size=512, base_batch_size=128, lr_scaling="linear")
    assert lr_multiplier(c, 0, 100, 10) == pytest.approx(4.0)
    c = TrainConfig(batch_size=512, base_batch_size=128, lr_scaling="sqrt")
    assert lr_multiplier(c, 5, 100, 10) == pytest.approx(2.0)
    c = TrainConfig(batch_size=128, warmup_epochs=2.0)
    assert lr_multiplier(c, 0, 100, 10) == pytest.approx(1 / 20)
    assert lr_multiplier(c, 9, 100, 10) == pytest.approx(10 / 20)
    assert lr_multiplier(c, 40, 100, 10) == pytest.approx(1.0)
    c = TrainConfig(schedule="cosine")
    assert lr_multiplier(c, 25, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_multiplier(c, 100, 100, 10) == pytest.approx(0.0, abs=1e-15)


def test_steps_per_epoch():
    assert steps_per_epoch(50000, 128) == 391
    assert steps_per_epoch(50000, 128, drop_last=True) == 390
    assert steps_per_epoch(50000, 32768) == 2
    assert steps_per_epoch(10, 10) == 1


@pytest.mark.parametrize(
    "field,value",
    [("batch_size", 0), ("lr", -1.0), ("lr_scaling", "cubic"), ("schedule", "step"),
     ("momentum", 1.0), ("micro_batch_size", 0), ("norm", "layer")],
)
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value}).validate()


# --------------------------------------------------------------------------- exact semantics


def test_evaluate_matches_direct_computation():
    d = _data()
    model = _tiny()
    loss, err = evaluate(model, d["test_x"], d["test_y"], batch_size=5)
    with torch.no_grad():
        out = model(_normalise(d["test_x"]))
    assert loss == pytest.approx(float(F.cross_entropy(out, d["test_y"])), rel=1e-12)
    assert err == pytest.approx(float((out.argmax(1) != d["test_y"]).double().mean()))


@pytest.mark.parametrize("micro", [None, 5, 16])
def test_full_batch_step_equals_manual_gradient_descent(micro):
    """B = N: each epoch is one full-batch gradient step, whatever the micro-batching."""
    d = _data(n_train=16)
    lr = 0.3
    ref = _tiny()
    x = _normalise(d["train_x"])
    for _ in range(2):
        ref.zero_grad()
        F.cross_entropy(ref(x), d["train_y"]).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= lr * p.grad
    model = _tiny()
    res = train(_cfg(batch_size=16, epochs=2, lr=lr, micro_batch_size=micro), d, model=model,
                progress=False)
    assert res.steps == 2 and res.status == "finished"
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_micro_batches_equal_full_batch_with_augmentation_and_momentum():
    d = _data(n_train=40)
    runs = []
    for micro in (None, 3):
        model = _tiny()
        train(_cfg(batch_size=12, epochs=2, momentum=0.9, weight_decay=1e-3, augment=True,
                   micro_batch_size=micro), d, model=model, progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-11, atol=1e-11)
    assert not torch.equal(runs[0], torch.cat([p.flatten() for p in _tiny().parameters()]))


# --------------------------------------------------------------------------- behaviour


def _metrics(history):
    return [{k: v for k, v in h.items() if k != "wall_time"} for h in history]


def test_same_seed_same_numbers_other_seed_differs():
    d = _data()
    cfg = _cfg(augment=True, norm="batch", epochs=2)
    a = train(cfg, d, progress=False)
    b = train(cfg, d, progress=False)
    c = train(_cfg(augment=True, norm="batch", epochs=2, seed=1), d, progress=False)
    assert _metrics(a.history) == _metrics(b.history)
    assert _metrics(a.history) != _metrics(c.history)
    assert [h["epoch"] for h in a.history] == [0, 1, 2]
    assert a.steps == 2 * steps_per_epoch(48, 8)


def test_learns_the_easy_task():
    d = _data(n_train=60, n_test=30)
    res = train(_cfg(batch_size=10, epochs=6, lr=0.2), d, model=_tiny(), progress=False)
    assert res.history[-1]["train_error"] < res.history[0]["train_error"]
    assert res.history[-1]["train_error"] < 0.3


def test_divergence_is_detected_and_stops():
    d = _data()
    res = train(_cfg(lr=1e12, epochs=5), d, model=_tiny(), progress=False)
    assert res.status == "diverged"
    assert res.diverged_at_step is not None
    assert res.steps < 5 * steps_per_epoch(48, 8)


def test_observe_batch_hook_sees_each_batch_before_step():
    calls = []

    class Watching(torch.optim.SGD):
        def observe_batch(self, inputs, targets):
            params = [p.detach().clone() for g in self.param_groups for g2 in [g]
                      for p in g2["params"]]
            calls.append((inputs.shape, targets.shape, params))

        def step(self, closure=None):
            calls.append("step")
            return super().step(closure)

    d = _data(n_train=20)
    model = _tiny()
    train(_cfg(batch_size=8, epochs=1), d, model=model, progress=False,
          optimizer_factory=lambda m: Watching(m.parameters(), lr=0.1))
    # 20 examples, B = 8: batches of 8, 8, 4, each observed right before its step
    assert [c for c in calls if c == "step"] == ["step"] * 3
    observed = [c for c in calls if c != "step"]
    assert [c[0][0] for c in observed] == [8, 8, 4]
    assert calls[0::2] == observed and calls[1::2] == ["step"] * 3
    assert observed[0][0][1:] == (3, 8, 8)


def test_custom_optimizer_lr_follows_schedule():
    d = _data(n_train=16)
    seen = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    train(_cfg(batch_size=8, epochs=2, lr=0.1, lr_scaling="linear", base_batch_size=4,
               warmup_epochs=1.0), d, model=_tiny(), progress=False,
          optimizer_factory=lambda m: Recording(m.parameters(), lr=0.1))
    assert seen == pytest.approx([0.1, 0.2, 0.2, 0.2])


def test_resume_from_checkpoint_gives_identical_numbers(tmp_path):
    d = _data()
    cfg = _cfg(augment=True, norm="batch", momentum=0.5, epochs=3)
    full = train(cfg, d, progress=False)
    resumed = _interrupt_and_resume(cfg, d, tmp_path / "run.pt", at_step=12)  # epoch 2
    assert resumed.resumed_from_epoch == 1
    assert _metrics(resumed.history) == _metrics(full.history)
    assert resumed.steps == full.steps
    got, want = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("kind, refresh", [("subsampled", 1), ("hessian", 3)])
def test_noisy_run_resumes_with_the_noise_of_an_uninterrupted_run(tmp_path, kind, refresh):
    import torch.nn.functional as F

    from sgdnoise.noise import NoisySGD

    d = _data()
    cfg = _cfg(epochs=3, momentum=0.5)

    def factory(m):
        return NoisySGD(m.parameters(), 0.1, momentum=0.5, kind=kind, model=m,
                        loss_fn=F.cross_entropy, num_samples=4, injection_scale=0.05,
                        lanczos_steps=3, basis_refresh=refresh, seed=3)

    full = train(cfg, d, optimizer_factory=factory, progress=False)
    resumed = _interrupt_and_resume(cfg, d, tmp_path / "noisy.pt", at_step=12,  # epoch 2
                                    optimizer_factory=factory)
    assert resumed.resumed_from_epoch == 1
    assert _metrics(resumed.history) == _metrics(full.history)
    got, want = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_checkpoint_of_other_config_is_refused(tmp_path):
    d = _data()
    ckpt = tmp_path / "run.pt"
    train(_cfg(epochs=1), d, checkpoint_path=ckpt, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(_cfg(epochs=1, lr=0.2), d, checkpoint_path=ckpt, progress=False)


def test_batch_size_above_n_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        train(_cfg(batch_size=100), _data(), progress=False)


# ------------------------------------------------------------------ schedule of evaluations


def test_eval_steps_closed_forms():
    from sgdnoise.train import eval_steps

    # 1000 = 10^3: log-spaced 1, 10, 100, 1000 with K = 4
    assert eval_steps(1000, 4) == [0, 1, 10, 100, 1000]
    assert eval_steps(1000, 4, at_start=False) == [1, 10, 100, 1000]
    # per epoch: 7 steps per epoch, 20 steps: 7, 14 and the end
    assert eval_steps(20, None, steps_per_ep=7) == [0, 7, 14, 20]
    assert eval_steps(3, 25) == [0, 1, 2, 3]  # rounding collapses repeats
    with pytest.raises(ValueError, match="points"):
        eval_steps(10, 1)


def test_max_steps_overrides_epochs_and_records_have_the_schema():
    d = _data()  # 48 examples, B = 8: 6 steps per epoch
    res = train(_cfg(epochs=1, max_steps=16, eval_points=3, drop_last=True), d,
                model=_tiny(), progress=False)
    assert res.steps == 16 and res.status == "finished"
    assert [h["step"] for h in res.history] == [0, 1, 4, 16]
    keys = {"step", "epoch", "examples_seen", "lr", "train_loss", "train_error", "test_loss",
            "test_error", "param_distance", "running_loss", "wall_time"}
    assert all(set(h) == keys for h in res.history)
    last = res.history[-1]
    assert last["epoch"] == pytest.approx(16 / 6) and last["examples_seen"] == 16 * 8
    assert res.history[0]["param_distance"] == 0.0 and last["param_distance"] > 0
    assert res.history[0]["running_loss"] is None and last["running_loss"] > 0


def test_eval_subset_and_param_distance_are_what_they_say():
    from sgdnoise.data import stratified_indices

    d = _data()
    model = _tiny()
    theta0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    res = train(_cfg(epochs=2, eval_train_n=12, eval_subset_seed=5), d, model=model,
                progress=False)
    idx = stratified_indices(d["train_y"], 12, seed=5)
    loss, err = evaluate(model, d["train_x"][idx], d["train_y"][idx], batch_size=7)
    assert res.history[-1]["train_loss"] == pytest.approx(loss, rel=1e-12)
    assert res.history[-1]["train_error"] == pytest.approx(err)
    full_loss, _ = evaluate(model, d["train_x"], d["train_y"])
    assert full_loss != pytest.approx(loss, rel=1e-6)  # the subset is not the whole set
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert res.history[-1]["param_distance"] == pytest.approx(float((theta - theta0).norm()),
                                                              rel=1e-12)


def test_recompute_bn_stats_is_the_average_over_clean_chunks():
    from sgdnoise.models import build_model
    from sgdnoise.train import recompute_bn_stats

    d = _data()
    torch.manual_seed(0)
    net = build_model("cnn", width=4, norm="batch", in_shape=(3, 8, 8), num_classes=3).double()
    bn = net[1]
    bn.running_mean.fill_(7.0)  # stale statistics must not survive
    bn.momentum = 0.3
    x = _normalise(d["train_x"][:24])
    used = recompute_bn_stats(net, d["train_x"][:24], batch_size=8, channels_last=False)
    assert used == 3 and bn.momentum == 0.3 and net.training
    with torch.no_grad():
        h = net[0](x).view(3, 8, 4, 8, 8)
    mean = h.mean(dim=(1, 3, 4)).mean(0)
    var = h.transpose(1, 2).reshape(3, 4, -1).var(dim=2, unbiased=True).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- sharpness


def test_sharpness_matches_dense_hessian_eigenvalue():
    from references import dense_hessian, nparams

    from sgdnoise.train import sharpness

    d = _data()
    model = _tiny()
    x, y = _normalise(d["train_x"][:12]), d["train_y"][:12]
    want = float(torch.linalg.eigvalsh(dense_hessian(model, F.cross_entropy, x, y))[-1])
    got = sharpness(model, x, y, num_iters=nparams(model))
    assert got == pytest.approx(want, rel=1e-8)


def test_sharpness_schedule_records_lr_and_two_over_lr():
    d = _data()
    res = train(_cfg(max_steps=5, eval_points=2, sharpness_every=2, sharpness_n=8,
                     sharpness_iters=10), d, model=_tiny(), progress=False)
    assert [s["step"] for s in res.sharpness] == [0, 2, 4, 5]
    for s in res.sharpness:
        assert s["lambda_max"] > 0 and s["two_over_lr"] == pytest.approx(2 / s["lr"])
    with pytest.raises(ValueError, match="sharpness_n"):
        _cfg(sharpness_every=2).validate()


# --------------------------------------------------------------------------- hooks, divergence


def test_hooks_stop_early_and_see_every_evaluation():
    class Hook:
        def __init__(self):
            self.steps, self.evals = [], []

        def on_step(self, state):
            self.steps.append((state.step, state.batch_size))
            return state.step == 3

        def on_eval(self, record):
            self.evals.append(record)

    h = Hook()
    res = train(_cfg(epochs=3), _data(), model=_tiny(), progress=False, hooks=[h])
    assert res.status == "stopped" and res.steps == 3
    assert h.steps == [(1, 8), (2, 8), (3, 8)]
    assert [r["step"] for r in res.history] == [0, 3] and h.evals == res.history


def test_step_budget_stops_at_exactly_its_step_with_the_uninterrupted_parameters():
    from sgdnoise.train import StepBudget

    class Snapshot:
        def on_step(self, state):
            if state.step == 5:
                self.theta = torch.cat([p.detach().flatten().clone()
                                        for p in state.model.parameters()])

    snap = Snapshot()
    full = train(_cfg(epochs=3), _data(), model=_tiny(), progress=False, hooks=[snap])
    cut = train(_cfg(epochs=3), _data(), model=_tiny(), progress=False,
                hooks=[StepBudget(5)])
    assert full.status == "finished" and full.steps > 5
    assert cut.status == "stopped" and cut.steps == 5
    theta = torch.cat([p.detach().flatten() for p in cut.model.parameters()])
    assert torch.equal(theta, snap.theta)
    with pytest.raises(ValueError, match="steps"):
        StepBudget(0)


@pytest.mark.parametrize("every", [1, 4])
def test_divergence_reports_the_first_bad_step(every):
    d = _data()
    res = train(_cfg(lr=1e12, epochs=5, divergence_check_every=every), d, model=_tiny(),
                progress=False)
    assert res.status == "diverged"
    first = res.diverged_at_step
    assert first is not None and first < res.steps
    # the flag is read every `every` steps (or at the epoch-end evaluation, step 6)
    assert res.steps - first <= every and (res.steps % every == 0 or res.steps % 6 == 0)


# --------------------------------------------------------------------------- device-side sampling


def test_device_sampler_covers_each_example_once_per_epoch():
    from sgdnoise.train.batches import Sampler as _Sampler

    s = _Sampler(20, 6, 3, seed=1, device=torch.device("cpu"), on_device=True, augment=True)
    s.new_epoch()
    idx = torch.cat([s.batch(k)[0] for k in range(3)])
    assert len(set(idx.tolist())) == 18 and max(idx.tolist()) < 20
    aug = s.batch(1)[1]
    assert all(a.shape == (6,) for a in aug)


def test_device_rng_mode_is_repeatable_and_is_another_stream():
    d = _data()
    a = train(_cfg(augment=True, device_rng=True), d, model=_tiny(), progress=False)
    b = train(_cfg(augment=True, device_rng=True), d, model=_tiny(), progress=False)
    c = train(_cfg(augment=True, device_rng=False), d, model=_tiny(), progress=False)
    assert _metrics(a.history) == _metrics(b.history)
    assert _metrics(a.history) != _metrics(c.history)


class _Stop(Exception):
    pass


def _interrupt_and_resume(cfg, data, ckpt, *, at_step: int, **train_kw):
    """Run ``cfg`` with checkpoints, kill it (an exception) at the evaluation of ``at_step``,
    then resume from the checkpoint to the end; returns the resumed result. ``train_kw``
    go to both calls of :func:`train` (e.g. ``optimizer_factory``)."""

    def stop(rec):
        if rec["step"] == at_step:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, data, checkpoint_path=ckpt, progress=False, on_epoch=stop, **train_kw)
    return train(cfg, data, checkpoint_path=ckpt, progress=False, **train_kw)


@pytest.mark.parametrize("device_rng", [False, True])
def test_resume_mid_epoch_with_log_spaced_evals_is_exact(tmp_path, device_rng):
    d = _data()  # 6 steps per epoch, 18 steps; evaluations at 0, 1, 3, 7, 18
    cfg = _cfg(augment=True, norm="batch", momentum=0.5, epochs=3, eval_points=4,
               bn_recompute=True, eval_train_n=16, device_rng=device_rng,
               sharpness_every=5, sharpness_n=8, sharpness_iters=5)
    full = train(cfg, d, progress=False)
    assert [h["step"] for h in full.history] == [0, 1, 3, 7, 18]

    resumed = _interrupt_and_resume(cfg, d, tmp_path / "run.pt", at_step=7)
    assert resumed.resumed_from_step == 3
    assert _metrics(resumed.history) == _metrics(full.history)
    assert resumed.sharpness == full.sharpness
    got, want = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


# --------------------------------------------------------------------------- ghost batch norm


def test_ghost_batch_norm_training_is_invariant_to_micro_batching():
    d = _data()
    runs = []
    for micro in (None, 4):
        res = train(_cfg(norm="batch", ghost_batch_size=4, micro_batch_size=micro,
                         augment=True, drop_last=True), d, progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in res.model.parameters()]))
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kw,field",
    [({"ghost_batch_size": 4, "micro_batch_size": 6, "norm": "batch"}, "micro_batch_size"),
     ({"ghost_batch_size": 4, "norm": "group"}, "ghost_batch_size"),
     ({"max_steps": 0}, "max_steps"), ({"eval_points": 1}, "eval_points"),
     ({"eval_train_n": 0}, "eval_train_n"), ({"sharpness_n": -1}, "sharpness_n")],
)
def test_new_fields_are_validated(kw, field):
    with pytest.raises(ValueError, match=field):
        _cfg(**kw).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fast_path_resumes_exactly_and_matches_eager(tmp_path):
    """On a GPU: device-side sampling, fused SGD and bf16 autocast; a resumed run repeats
    the uninterrupted one, and fused SGD stays within bf16 tolerance of plain SGD."""
    d = _data()
    cfg = _cfg(model="cnn", width=16, norm="batch", augment=True, momentum=0.9, epochs=3,
               eval_points=4, device="cuda", amp=True, ghost_batch_size=4)

    resumed = _interrupt_and_resume(cfg, d, tmp_path / "run.pt", at_step=7)
    assert resumed.resumed_from_step == 3 and resumed.status == "finished"
    fused = train(cfg, d, progress=False)
    eager = train(cfg, d, progress=False, optimizer_factory=lambda m: torch.optim.SGD(
        m.parameters(), lr=cfg.lr, momentum=cfg.momentum, foreach=False))
    a = torch.cat([p.detach().flatten().float() for p in fused.model.parameters()])
    b = torch.cat([p.detach().flatten().float() for p in eager.model.parameters()])
    assert float((a - b).norm() / b.norm()) < 0.05


def test_scaled_lr_rules_and_lr_batch_ratio():
    from sgdnoise.train import lr_batch_ratio, scaled_lr

    assert scaled_lr(0.1, 256, 64, "linear") == pytest.approx(0.4)
    assert scaled_lr(0.1, 256, 64, "sqrt") == pytest.approx(0.2)
    assert scaled_lr(0.1, 256, 64, "none") == 0.1
    # linear scaling keeps eta/B
    assert lr_batch_ratio(scaled_lr(0.1, 256, 64, "linear"), 256) == pytest.approx(
        lr_batch_ratio(0.1, 64))
    # the engine applies the same rule: lr_multiplier's batch factor without warm-up/schedule
    cfg = _cfg(batch_size=32, base_batch_size=8, lr_scaling="sqrt")
    assert lr_multiplier(cfg, 0, 10, 2) == scaled_lr(1.0, 32, 8, "sqrt") == 2.0
    with pytest.raises(ValueError, match="rule"):
        scaled_lr(0.1, 2, 1, "cubic")


# ------------------------------------------------------------ no evaluation, no test set


def test_eval_points_zero_evaluates_nothing_and_needs_no_test_set(monkeypatch):
    import sgdnoise.train as engine
    from sgdnoise.train import eval_steps, trainer

    def refuse(*args, **kwargs):
        raise AssertionError("evaluate called with eval_points=0")

    d = _data()
    train_only = {"train_x": d["train_x"], "train_y": d["train_y"]}
    ref = train(_cfg(epochs=2), d, model=_tiny(), progress=False)
    monkeypatch.setattr(trainer, "loss_error_sums", refuse)
    seen = []
    res = train(_cfg(epochs=2, eval_points=0), train_only, model=_tiny(), progress=False,
                on_epoch=seen.append)
    assert res.status == "finished" and res.steps == 12 and res.history == [] and seen == []
    # the training itself is the evaluated run's
    for p, q in zip(res.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)
    # a hook's stop does not evaluate either
    cut = train(_cfg(epochs=2, eval_points=0), train_only, model=_tiny(), progress=False,
                hooks=[engine.StepBudget(5)])
    assert cut.status == "stopped" and cut.steps == 5 and cut.history == []
    assert eval_steps(10, 0) == [] and eval_steps(10, 0, at_start=True) == []


def test_flat_features_without_a_test_set_record_no_test_numbers():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.arange(30) % 3
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(torch.float64)
    res = train(_cfg(epochs=3, batch_size=7, eval_points=2), {"train_x": x, "train_y": y},
                model=model, progress=False)
    assert res.status == "finished" and [h["step"] for h in res.history] == [0, 1, 15]
    assert all(h["test_loss"] is None and h["test_error"] is None for h in res.history)
    loss, err = evaluate(model, x, y, batch_size=30)
    assert res.history[-1]["train_loss"] == pytest.approx(loss, rel=1e-12)
    assert res.history[-1]["train_error"] == err


def test_divergence_is_found_across_a_long_check_interval():
    """With one check at the end of 600 steps the per-step losses are kept on the device
    (compacted every 256 steps); the first non-finite one is still the reported step."""

    class Poison:
        def on_step(self, state):
            if state.step == 300:  # the next step, index 300, has a NaN loss
                with torch.no_grad():
                    next(state.model.parameters()).fill_(float("nan"))

    d = {k: v for k, v in _data().items() if k.startswith("train")}
    res = train(_cfg(max_steps=600, eval_points=0, divergence_check_every=1000), d,
                model=_tiny(), progress=False, hooks=[Poison()])
    assert res.status == "diverged" and res.diverged_at_step == 300 and res.steps == 600


@pytest.mark.parametrize(
    "kw,data_keys,match",
    [({"eval_points": -1}, None, "eval_points must be >= 0"),
     ({"eval_points": True}, None, "eval_points"),
     ({}, ("train_x", "train_y", "test_x"), "test_y"),
     ({}, ("train_x", "train_y", "test_y"), "test_x")],
)
def test_no_evaluation_and_test_set_errors(kw, data_keys, match):
    d = _data()
    if data_keys is not None:
        d = {k: d[k] for k in data_keys}
    with pytest.raises(ValueError, match=match):
        train(_cfg(**kw), d, model=_tiny(), progress=False)


def test_checkpoints_need_evaluations(tmp_path):
    with pytest.raises(ValueError, match="eval_points=0"):
        train(_cfg(eval_points=0), _data(), model=_tiny(), progress=False,
              checkpoint_path=tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_plain_sgd_is_torch_sgd_to_the_bit_and_resumes_exactly(tmp_path):
    from sgdnoise.train import PlainSGD

    d = _data()
    cfg = _cfg(epochs=3, drop_last=False, batch_size=10, eval_points=4)  # 5 steps an epoch

    def plain(model):
        return PlainSGD(model.parameters(), cfg.lr)

    ref = train(cfg, d, model=_tiny(), progress=False)
    res = train(cfg, d, model=_tiny(), progress=False, optimizer_factory=plain)
    assert _metrics(res.history) == _metrics(ref.history)
    for p, q in zip(res.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)

    class _Kill(Exception):
        pass

    def kill(rec):  # evaluations at steps 0, 1, 2, 6, 15
        if rec["step"] == 6:
            raise _Kill

    ckpt = tmp_path / "plain.pt"
    with pytest.raises(_Kill):
        train(cfg, d, model=_tiny(), progress=False, optimizer_factory=plain,
              checkpoint_path=ckpt, on_epoch=kill)
    resumed = train(cfg, d, model=_tiny(), progress=False, optimizer_factory=plain,
                    checkpoint_path=ckpt)
    assert resumed.resumed_from_step == 2 and _metrics(resumed.history) == _metrics(ref.history)
    for p, q in zip(resumed.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="lr"):
        PlainSGD(_tiny().parameters(), 0.0)
    with pytest.raises(ValueError, match="params"):
        PlainSGD([], 0.1)


# --------------------------------------------------------------------------- warm-up in steps


def test_warmup_steps_override_warmup_epochs_and_default_keeps_epochs():
    from sgdnoise.train import warmup_length

    epochs = TrainConfig(batch_size=128, warmup_epochs=2.0)
    steps = TrainConfig(batch_size=128, warmup_epochs=2.0, warmup_steps=4)
    assert warmup_length(epochs, 10) == 20 and warmup_length(steps, 10) == 4
    assert lr_multiplier(steps, 0, 100, 10) == pytest.approx(1 / 4)
    assert lr_multiplier(steps, 2, 100, 10) == pytest.approx(3 / 4)
    assert lr_multiplier(steps, 3, 100, 10) == pytest.approx(1.0)
    assert lr_multiplier(epochs, 3, 100, 10) == pytest.approx(4 / 20)
    none = TrainConfig(batch_size=128, warmup_epochs=2.0, warmup_steps=0)
    assert lr_multiplier(none, 0, 100, 10) == pytest.approx(1.0)
    # a run follows it: η of the first steps ramps over 4 steps whatever the epoch length
    seen = []

    class Rate:
        def on_step(self, state):
            seen.append(state.lr)

    train(_cfg(max_steps=6, warmup_steps=4, eval_points=0), _data(), model=_tiny(),
          progress=False, hooks=[Rate()])
    assert seen == pytest.approx([0.1 * k / 4 for k in (1, 2, 3, 4)] + [0.1, 0.1])


@pytest.mark.parametrize("kw, field", [
    ({"warmup_steps": -1}, "warmup_steps"), ({"warmup_steps": 2.5}, "warmup_steps"),
    ({"warmup_steps": True}, "warmup_steps"), ({"sharpness_bn_mode": "both"},
                                               "sharpness_bn_mode")])
def test_late_fields_are_validated(kw, field):
    with pytest.raises(ValueError, match=field):
        _cfg(**kw).validate()


def test_late_fields_at_their_defaults_leave_the_checkpoint_key_unchanged():
    """A checkpoint written before ``warmup_steps`` / ``sharpness_bn_mode`` existed holds
    a config without them; the default config must still match it."""
    from sgdnoise.train.checkpoint import config_key as _cfg_key

    old = _cfg_key(_cfg())
    assert "warmup_steps" not in old and "sharpness_bn_mode" not in old
    assert _cfg_key(_cfg(warmup_steps=3))["warmup_steps"] == 3
    assert _cfg_key(_cfg(sharpness_bn_mode="train"))["sharpness_bn_mode"] == "train"


# --------------------------------------------------------------------------- train-mode sharpness


class BNNet(nn.Module):
    """conv -> BatchNorm -> relu -> mean pool -> linear: examples interact in train mode."""

    def __init__(self, classes=3, ghost=None):
        from sgdnoise.models import GhostBatchNorm2d

        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.bn = GhostBatchNorm2d(2, ghost_batch_size=ghost)
        self.fc = nn.Linear(2, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _bn_net(ghost=None):
    torch.manual_seed(3)
    net = BNNet(ghost=ghost).double()
    net.train()
    with torch.no_grad():  # running statistics away from the initial 0 / 1
        for _ in range(3):
            net(torch.randn(16, 3, 8, 8, dtype=torch.float64) * 2 + 1)
    return net


@pytest.mark.parametrize("ghost, chunk", [(None, 4), (2, 6), (None, None)])
def test_train_mode_sharpness_is_the_top_eigenvalue_of_the_grouped_objective(ghost, chunk):
    """λ_max of L(θ) = (1/n) Σ_c Σ_{i∈c} ℓ_i(θ; BatchNorm statistics of chunk c, or of its
    ghost groups), from a dense Hessian of that function; the running statistics are
    untouched, and the eval-mode value (another objective) differs."""
    from torch.func import functional_call

    from sgdnoise.train import sharpness

    d = _data()
    net = _bn_net(ghost)
    x, y = _normalise(d["train_x"][:12]), d["train_y"][:12]
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    step = chunk or 12

    def loss_of(flat):
        parts, off = {}, 0
        for name, shp in zip(names, shapes, strict=True):
            parts[name] = flat[off:off + math.prod(shp)].view(shp)
            off += math.prod(shp)
        state = {**parts, **{k: v.clone() for k, v in buffers.items()}}
        total = 0.0
        for lo in range(0, 12, step):
            out = functional_call(net, state, (x[lo:lo + step],))
            total = total + F.cross_entropy(out, y[lo:lo + step], reduction="sum")
        return total / 12

    H = torch.autograd.functional.hessian(loss_of, theta)
    want = float(torch.linalg.eigvalsh(H)[-1])
    got = sharpness(net, x, y, num_iters=theta.numel(), chunk_size=chunk, bn_mode="train")
    assert got == pytest.approx(want, rel=1e-7)
    for k, v in net.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert net.training
    ev = sharpness(net, x, y, num_iters=theta.numel(), chunk_size=chunk, bn_mode="eval")
    assert abs(ev - want) > 1e-3 * want


def test_sharpness_chunking_closed_forms():
    from sgdnoise.train import sharpness_chunking

    def c(**kw):
        return sharpness_chunking(TrainConfig(sharpness_n=2048, eval_batch_size=2500, **kw))

    assert c() == (512, None)  # eval mode: chunks bound memory only
    assert c(sharpness_bn_mode="train", norm="none") == (512, None)
    assert c(sharpness_bn_mode="train", batch_size=128) == (128, 128)  # plain BN: B
    assert c(sharpness_bn_mode="train", batch_size=8192, micro_batch_size=4096) == (512, 512)
    assert c(sharpness_bn_mode="train", batch_size=256, micro_batch_size=64) == (64, 64)
    assert c(sharpness_bn_mode="train", batch_size=8192, ghost_batch_size=128) == (512, 128)
    assert c(sharpness_bn_mode="train", batch_size=8192, ghost_batch_size=96) == (480, 96)
    assert sharpness_chunking(TrainConfig(sharpness_n=100, sharpness_bn_mode="train",
                                          batch_size=4096)) == (100, 100)


def test_train_mode_sharpness_is_recorded_with_its_mode_and_skips_the_recompute(monkeypatch):
    import sgdnoise.train.trainer as tr

    calls = []
    real = tr.recompute_bn_stats
    monkeypatch.setattr(tr, "recompute_bn_stats",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    d = _data()
    kw = dict(model="cnn", width=4, norm="batch", ghost_batch_size=4, max_steps=4,
              eval_points=0, sharpness_every=2, sharpness_n=8, sharpness_iters=6,
              bn_recompute=True)
    res = train(_cfg(**kw, sharpness_bn_mode="train"), d, progress=False)
    assert [(s["step"], s["bn_mode"], s["bn_batch"]) for s in res.sharpness] == [
        (0, "train", 4), (2, "train", 4), (4, "train", 4)]
    assert calls == []  # train mode needs no running statistics
    ev = train(_cfg(**kw), d, progress=False)
    assert [(s["bn_mode"], s["bn_batch"]) for s in ev.sharpness] == [("eval", None)] * 3
    assert len(calls) == 3
    assert all(a["lambda_max"] != b["lambda_max"]
               for a, b in zip(res.sharpness, ev.sharpness, strict=True))


# --------------------------------------------------------------------------- CUDA paths on the CPU


class _PathSpy:
    """Records what the CUDA-only branches did: the first conv's input memory format and
    output dtype in training, the optimizer's implementation flags, the step losses."""

    def __init__(self, model):
        self.dtypes, self.cl, self.losses, self.groups = [], [], [], None
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(self._hook)

    def _hook(self, module, args, out):
        if module.training:
            self.dtypes.append(out.dtype)
            self.cl.append(args[0].is_contiguous(memory_format=torch.channels_last)
                           and not args[0].is_contiguous())

    def on_step(self, state):
        self.losses.append(float(state.loss))
        self.groups = dict(state.optimizer.param_groups[0])


def _path_run(cfg, engine, **kw):
    """Train ``cfg`` on ``engine``; returns the result, the spy and θ₀ (flat)."""
    from sgdnoise.grads import flat_params
    from sgdnoise.models import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=3, in_shape=(3, 8, 8), width=cfg.width,
                        norm=cfg.norm, ghost_batch_size=cfg.ghost_batch_size)
    theta0 = flat_params(model).clone()
    spy = _PathSpy(model)
    res = train(cfg, _data(n_train=64, n_test=16), model=model, progress=False,
                engine=engine, hooks=[spy], **kw)
    return res, spy, theta0


@pytest.mark.parametrize("kw", [
    {"norm": "batch", "ghost_batch_size": 4, "micro_batch_size": 8},
    {"norm": "batch"},
    {"norm": "group", "momentum": 0.0, "micro_batch_size": 4}])
def test_cuda_paths_run_on_the_cpu_and_match_eager_float32(kw):
    """bf16 autocast (training, evaluation, BatchNorm recompute), channels-last, fused SGD,
    device RNG, micro-batches with ghost BatchNorm: the branches a GPU run takes, executed
    here, against the eager float32 path from the same initialisation and batches. Step
    losses agree within 2% of the first step's loss (bf16 keeps 8 bits: ~0.4% per
    rounding), parameters within 25% of the distance travelled in 20 steps (momentum
    amplifies rounding differences)."""
    from sgdnoise.grads import flat_params

    cfg = _cfg(**{"model": "cnn", "width": 16, "batch_size": 16, "max_steps": 20,
                  "lr": 0.05, "momentum": 0.9, "augment": True, "eval_points": 2,
                  "eval_batch_size": 16, "drop_last": True, "bn_recompute": True,
                  "eval_train_n": 32, **kw})
    fast, fspy, theta0 = _path_run(cfg, "fast", cuda_paths_on_cpu=True)
    eager, espy, _ = _path_run(cfg, "eager", cuda_paths_on_cpu=True)
    assert fast.extra["engine"] == {"name": "fast", "autocast": True, "channels_last": True,
                                    "optimizer": "fused", "device_rng": True}
    assert eager.extra["engine"]["name"] == "eager" and eager.extra["engine"]["device_rng"]
    assert set(fspy.dtypes) == {torch.bfloat16} and all(fspy.cl)
    assert set(espy.dtypes) == {torch.float32} and not any(espy.cl)
    assert fspy.groups["fused"] is True and espy.groups["foreach"] is False
    lf, le = torch.tensor(fspy.losses), torch.tensor(espy.losses)
    assert float((lf - le).abs().max() / le[0]) < 0.02
    a, b = flat_params(fast.model), flat_params(eager.model)
    assert float((a - b).norm() / (b - theta0).norm()) < 0.25
    for k in ("train_loss", "test_loss"):  # evaluation and recompute under autocast too
        assert fast.history[-1][k] == pytest.approx(eager.history[-1][k], abs=0.02 * float(le[0]))


def test_the_cpu_fast_path_is_the_reference_of_before():
    """Without ``cuda_paths_on_cpu`` the CPU keeps its reference choices: float32, torch's
    default SGD, CPU generators; the eager path differs only in memory format."""
    from sgdnoise.train import engine_paths

    cfg = _cfg(amp=True, channels_last=True)
    assert engine_paths(cfg).to_dict() == {"name": "fast", "autocast": False,
                                           "channels_last": True, "optimizer": "default",
                                           "device_rng": False}
    assert engine_paths(_cfg(device_rng=True), "eager").device_rng
    assert engine_paths(_cfg(amp=False), cuda_paths_on_cpu=True).autocast is False
    with pytest.raises(ValueError, match="engine"):
        engine_paths(cfg, "turbo")
    a = train(_cfg(), _data(), model=_tiny(), progress=False)
    b = train(_cfg(), _data(), model=_tiny(), progress=False, engine="eager")
    assert _metrics(a.history) == _metrics(b.history)  # float64 tiny net: same numbers

# ------------------------------------------------------------------ issue 17: refused inputs


@pytest.mark.parametrize("field, value, bound", [
    ("epochs", 10**15, "<= 100000"),
    ("max_steps", 10**12, "<= 1000000000"),
    ("batch_size", 10**9, "<= 10000000"),
    ("eval_points", 10**6, "<= 100000"),
    ("width", 10**6, "<= 65536"),
    ("seed", 2**64, "<= 4294967295"),
    ("lr", float("inf"), "finite"),
    ("weight_decay", float("nan"), "finite"),
    ("sharpness_iters", 10**7, "<= 10000"),
])
def test_numeric_fields_have_stated_upper_bounds(field, value, bound):
    with pytest.raises(ValueError) as err:
        _cfg(**{field: value}).validate()
    assert str(err.value).startswith(field) and bound in str(err.value), str(err.value)


@pytest.mark.parametrize("change, words", [
    ({"train_y": lambda d: d["train_y"][:-3]}, ["train_y", "45", "train_x", "48"]),
    ({"test_y": lambda d: d["test_y"][:5]}, ["test_y", "5", "test_x", "24"]),
    ({"train_y": lambda d: d["train_y"] - 1}, ["train_y", "-1"]),
])
def test_mismatched_data_is_refused_before_training(change, words):
    d = _data()
    for key, fn in change.items():
        d[key] = fn(d)
    with pytest.raises(ValueError) as err:
        train(_cfg(), d, progress=False)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_non_finite_features_are_refused_before_training():
    x = torch.randn(16, 6)
    x[4, 2] = float("nan")
    with pytest.raises(ValueError, match="train_x holds 1 non-finite"):
        train(_cfg(model="mlp", width=4, batch_size=4, augment=False),
              {"train_x": x, "train_y": torch.arange(16) % 2}, progress=False)


def test_checkpoint_folder_is_probed_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    class NoStep:
        def on_step(self, state):
            raise AssertionError("trained before the checkpoint folder was checked")

    with pytest.raises(ValueError, match="checkpoint_path") as err:
        train(_cfg(), _data(), checkpoint_path=blocker / "run.pt", progress=False,
              hooks=[NoStep()])
    assert str(blocker) in str(err.value)
