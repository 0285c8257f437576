"""Per-example gradients against an independent reference: a Python loop of single-example
backward passes (plain autograd, float64; ``per_example_grads_loop`` from
``tests/references.py``)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from references import per_example_grads_loop
from torch import nn

from sgdnoise.grads import (
    flat_params,
    full_gradient,
    num_params,
    per_example_grads,
    set_flat_params,
    unflatten,
)

torch.set_num_threads(1)


def linear_model() -> nn.Module:
    return nn.Linear(5, 3)


def mlp_model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def conv_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def bn_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 5 * 5, 3),
    )


def make_case(kind: str, n: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = {"linear": linear_model, "mlp": mlp_model, "conv": conv_model, "bn": bn_model}[kind]()
    model = model.double()
    shape = {"linear": (5,), "mlp": (6,), "conv": (2, 6, 6), "bn": (2, 5, 5)}[kind]
    x = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    y = torch.randint(3, (n,), generator=g)
    return model, x, y


@pytest.mark.parametrize("kind", ["linear", "mlp", "conv"])
@pytest.mark.parametrize("chunk_size", [None, 4, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_loop_of_backward_passes(kind, chunk_size, reduction):
    model, x, y = make_case(kind)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    G = per_example_grads(model, loss_fn, x, y, chunk_size=chunk_size)
    ref = per_example_grads_loop(model, loss_fn, x, y)
    assert G.shape == (x.shape[0], num_params(model))
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, ref, rtol=1e-10, atol=1e-12)


def test_regression_loss_and_mean_over_examples():
    """MSE on a linear model: closed form g_i = 2 (W x_i + b − y_i) ⊗ [x_i, 1] / out_dim."""
    torch.manual_seed(1)
    model = nn.Linear(4, 2).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randn(9, 2, dtype=torch.float64)
    G = per_example_grads(model, nn.MSELoss(), x, y, chunk_size=2)
    r = (model(x) - y).detach() * (2.0 / 2)  # d/dout of mean over 2 outputs
    gW = r[:, :, None] * x[:, None, :]
    expected = torch.cat([gW.reshape(9, -1), r], dim=1)
    torch.testing.assert_close(G, expected, rtol=1e-12, atol=1e-12)


def test_frozen_parameters_are_excluded_and_passed_through():
    model, x, y = make_case("mlp")
    model[0].weight.requires_grad_(False)
    loss_fn = nn.CrossEntropyLoss()
    G = per_example_grads(model, loss_fn, x, y)
    assert G.shape[1] == num_params(model) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    ref = per_example_grads_loop(model, loss_fn, x, y)
    torch.testing.assert_close(G, ref, rtol=1e-10, atol=1e-12)


def test_batchnorm_in_train_mode_is_refused_with_advice():
    model, x, y = make_case("bn")
    model.train()
    with pytest.raises(ValueError, match=r"eval\(\).*GroupNorm"):
        per_example_grads(model, nn.CrossEntropyLoss(), x, y)
    with pytest.raises(ValueError, match="BatchNorm"):
        full_gradient(model, nn.CrossEntropyLoss(), x, y)


def test_batchnorm_without_running_stats_is_refused_even_in_eval():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="BatchNorm"):
        per_example_grads(model, nn.MSELoss(), torch.randn(4, 3), torch.randn(4, 4))


def test_batchnorm_in_eval_mode_uses_running_statistics():
    model, x, y = make_case("bn")
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    G = per_example_grads(model, loss_fn, x, y, chunk_size=5)
    ref = per_example_grads_loop(model, loss_fn, x, y)
    torch.testing.assert_close(G, ref, rtol=1e-10, atol=1e-12)
    running = model[1].running_mean.clone()
    assert torch.equal(model[1].running_mean, running)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_full_gradient_is_gradient_of_mean_loss(reduction):
    model, x, y = make_case("conv", n=10)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    g = full_gradient(model, loss_fn, x, y, chunk_size=3)
    mean_loss = nn.CrossEntropyLoss()(model(x), y)
    ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(mean_loss, model.parameters())])
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    G = per_example_grads(model, loss_fn, x, y)
    torch.testing.assert_close(G.mean(0), g, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())


def test_float32_model_gives_float32_gradients():
    torch.manual_seed(0)
    model = mlp_model()
    x, y = torch.randn(6, 6), torch.randint(3, (6,))
    loss_fn = nn.CrossEntropyLoss()
    G = per_example_grads(model, loss_fn, x, y, chunk_size=4)
    assert G.dtype == torch.float32
    ref = per_example_grads_loop(model, loss_fn, x, y)
    torch.testing.assert_close(G, ref, rtol=1e-4, atol=1e-6)


def test_dropout_in_train_mode_runs_per_example():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2)).train()
    G = per_example_grads(model, nn.CrossEntropyLoss(), torch.randn(5, 4), torch.randint(2, (5,)))
    assert G.shape == (5, num_params(model))
    assert torch.isfinite(G).all()


def test_flat_params_round_trip_and_unflatten():
    model, _, _ = make_case("conv")
    theta = flat_params(model)
    assert theta.shape == (num_params(model),)
    named = [(n, p) for n, p in model.named_parameters()]
    parts = unflatten(model, theta)
    assert list(parts) == [n for n, _ in named]
    for n, p in named:
        assert parts[n].shape == p.shape
        torch.testing.assert_close(parts[n], p.detach(), rtol=0, atol=0)
    new = torch.arange(theta.numel(), dtype=torch.float64)
    set_flat_params(model, new)
    torch.testing.assert_close(flat_params(model), new, rtol=0, atol=0)
    theta[0] = 123.0  # flat_params is a copy
    assert flat_params(model)[0] == 0.0


def test_validation_errors_name_the_argument():
    model, x, y = make_case("linear")
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="theta"):
        set_flat_params(model, torch.zeros(num_params(model) + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must have length"):
        unflatten(model, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        per_example_grads(model, loss_fn, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="targets"):
        per_example_grads(model, loss_fn, x, y[:-1])
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        per_example_grads(frozen, nn.MSELoss(), torch.randn(3, 2), torch.randn(3, 2))


@pytest.mark.skipif(importlib.util.find_spec("sgdnoise.models") is None, reason="no models")
def test_project_model_with_group_norm_matches_loop():
    from sgdnoise.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", num_classes=3, in_shape=(3, 8, 8), width=4, norm="group")
    model = model.double().eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(3, (4,))
    loss_fn = nn.CrossEntropyLoss()
    G = per_example_grads(model, loss_fn, x, y, chunk_size=3)
    ref = per_example_grads_loop(model, loss_fn, x, y)
    torch.testing.assert_close(G, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x, y = make_case("conv")
    loss_fn = nn.CrossEntropyLoss()
    G_cpu = per_example_grads(model, loss_fn, x, y)
    G_gpu = per_example_grads(model.cuda(), loss_fn, x.cuda(), y.cuda(), chunk_size=4)
    assert G_gpu.device.type == "cuda"
    torch.testing.assert_close(G_gpu.cpu(), G_cpu, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------- issue 17: inputs checked up front


def _bad_input_cases():
    torch.manual_seed(0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    nan_x = x.clone()
    nan_x[2, 3] = float("nan")
    return [
        ("wrong feature size", torch.randn(6, 7, dtype=torch.float64), y, ["inputs", "(6, 7)"]),
        ("targets (N, 1)", x, y[:, None], ["targets", "(6, 1)", "(N,)"]),
        ("label >= classes", x, torch.tensor([0, 1, 2, 3, 1, 2]), ["targets", "3", "0..2"]),
        ("negative label", x, torch.tensor([0, -1, 2, 0, 1, 2]), ["targets", "-1"]),
        ("dtype mismatch", x.float(), y, ["inputs", "float32", "float64"]),
        ("NaN inputs", nan_x, y, ["inputs", "1 non-finite"]),
    ]


@pytest.mark.parametrize("case", _bad_input_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("fn", [per_example_grads, full_gradient])
def test_bad_inputs_are_refused_with_the_argument_named(case, fn):
    _, x, y, words = case
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    with pytest.raises(ValueError) as err:
        fn(model, nn.functional.cross_entropy, x, y)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_checks_accept_probabilities_as_targets_and_other_losses():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, 3, dtype=torch.float64), dim=1)
    G = per_example_grads(model, nn.functional.cross_entropy, x, probs)
    assert G.shape == (4, 18) and torch.isfinite(G).all()
    reg = per_example_grads(model, nn.functional.mse_loss, x, torch.randn(4, 3).double())
    assert reg.shape == (4, 18)
