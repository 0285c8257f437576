"""Behaviour a user of sgdnoise meets outside the book's models (issue 20): BatchNorm in
train and eval mode, a model that is not nn.Sequential, float32 and bfloat16, CUDA when
present, and the memory guard of per_example_grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgdnoise.grads as grads_module
from sgdnoise.curvature import EmpiricalFisherOperator, GGNOperator, HessianOperator
from sgdnoise.grads import (
    DEFAULT_MEMORY_FRACTION,
    available_memory_bytes,
    grads_nbytes,
    per_example_grads,
)
from sgdnoise.noise import NoisySGD


class ResidualNet(nn.Module):
    """A small ResNet-style network with a custom forward (not nn.Sequential)."""

    def __init__(self, norm: str = "group") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if norm == "batch" else nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.conv2(torch.relu(self.norm(self.conv1(h)))))
        return self.head(h.mean(dim=(2, 3)))


def data(n: int = 5, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 6, 6, generator=gen, dtype=dtype), torch.arange(n) % 3


def model_of(norm: str = "group", dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return ResidualNet(norm).to(dtype)


def loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row i: autograd's gradient of example i's loss, computed alone (the reference)."""
    rows = []
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(rows)


def test_a_model_that_is_not_sequential_gives_exact_rows():
    model, (x, y) = model_of(), data()
    G = per_example_grads(model, F.cross_entropy, x, y, chunk_size=2)
    torch.testing.assert_close(G, loop_gradients(model, x, y), rtol=1e-10, atol=1e-12)


def test_batchnorm_in_train_mode_is_refused_naming_the_layer():
    model, (x, y) = model_of("batch").train(), data()
    before = model.norm.running_mean.clone()
    with pytest.raises(ValueError, match=r"BatchNorm layer 'norm' computing batch statistics"
                                         r".*model\.eval\(\)"):
        per_example_grads(model, F.cross_entropy, x, y)
    torch.testing.assert_close(model.norm.running_mean, before)  # nothing was computed


def test_batchnorm_in_eval_mode_uses_running_statistics_exactly():
    model, (x, y) = model_of("batch"), data()
    model.train()
    with torch.no_grad():
        model(x)  # running statistics away from their initial values
    model.eval()
    G = per_example_grads(model, F.cross_entropy, x, y)
    torch.testing.assert_close(G, loop_gradients(model, x, y), rtol=1e-10, atol=1e-12)
    assert not model.training


@pytest.mark.parametrize("operator", [HessianOperator, GGNOperator, EmpiricalFisherOperator])
def test_curvature_operators_refuse_batchnorm_in_train_mode(operator):
    model, (x, y) = model_of("batch").train(), data()
    with pytest.raises(ValueError, match="BatchNorm layer 'norm'"):
        operator(model, F.cross_entropy, x, y).matvec(torch.ones(sum(
            p.numel() for p in model.parameters()), dtype=torch.float64))


def test_noisy_sgd_refuses_batchnorm_in_train_mode():
    model, (x, y) = model_of("batch").train(), data()
    opt = NoisySGD(model.parameters(), lr=0.1, kind="subsampled", injection_scale=1.0,
                   model=model, loss_fn=F.cross_entropy, num_samples=2)
    F.cross_entropy(model(x), y).backward()
    opt.observe_batch(x, y)
    with pytest.raises(ValueError, match="BatchNorm layer 'norm'"):
        opt.step()


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
def test_low_precision_gradients_keep_the_parameters_dtype(dtype, rtol):
    x, y = data()
    reference = per_example_grads(model_of(), F.cross_entropy, x, y)
    G = per_example_grads(model_of(dtype=dtype), F.cross_entropy, x.to(dtype), y)
    assert G.dtype == dtype
    error = torch.linalg.norm(G.double() - reference) / torch.linalg.norm(reference)
    assert error < rtol, float(error)


def test_inputs_of_another_dtype_are_refused_naming_the_conversion():
    x, y = data()
    with pytest.raises(ValueError, match=r"inputs must have the model's parameter dtype "
                                         r"torch.bfloat16, got torch.float64"):
        per_example_grads(model_of(dtype=torch.bfloat16), F.cross_entropy, x, y)


def test_bfloat16_hessian_eigenvalue_with_a_float32_lanczos():
    x, y = data()
    exact = HessianOperator(model_of(), F.cross_entropy, x, y).eigh(1).eigenvalues
    op = HessianOperator(model_of(dtype=torch.bfloat16), F.cross_entropy,
                         x.to(torch.bfloat16), y)
    low = op.eigh(1, dtype=torch.float32, num_iters=30).eigenvalues
    assert low.dtype == torch.float32
    assert abs(float(low[0]) - float(exact[0])) < 0.15 * abs(float(exact[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gradients_match_the_cpu_and_the_guard_reads_device_memory():
    x, y = data()
    cpu = per_example_grads(model_of(), F.cross_entropy, x, y)
    model = model_of().cuda()
    G = per_example_grads(model, F.cross_entropy, x.cuda(), y.cuda())
    assert G.device.type == "cuda"
    torch.testing.assert_close(G.cpu(), cpu, rtol=1e-8, atol=1e-10)
    assert available_memory_bytes("cuda") == torch.cuda.mem_get_info()[0]


# ------------------------------------------------------------------ the memory guard


def test_grads_nbytes_is_n_times_p_times_itemsize():
    model = model_of(dtype=torch.float32)
    p = sum(q.numel() for q in model.parameters())
    assert grads_nbytes(model, 7) == 7 * p * 4
    assert grads_nbytes(model, 7, torch.float64) == 7 * p * 8


def test_free_memory_is_known_on_the_cpu():
    free = available_memory_bytes("cpu")
    assert isinstance(free, int) and free > 0


def test_meminfo_fallback_reads_memavailable():
    assert grads_module._meminfo_available() is None or grads_module._meminfo_available() > 0


def test_guard_refuses_a_g_above_the_fraction_and_says_how_to_chunk(monkeypatch):
    model, (x, y) = model_of(), data(6)
    need = grads_nbytes(model, 6)
    monkeypatch.setattr(grads_module, "available_memory_bytes", lambda device: need)
    # G takes all the free memory: above the default fraction, refused before any gradient
    with pytest.raises(MemoryError) as err:
        per_example_grads(model, F.cross_entropy, x, y)
    message = str(err.value)
    rows = int(6 * DEFAULT_MEMORY_FRACTION)
    assert "(6, " in message and f"max_memory_fraction={DEFAULT_MEMORY_FRACTION}" in message
    assert f"pieces of at most {rows} examples" in message and "None" in message
    # the same call passes with a larger fraction, or without the check
    assert per_example_grads(model, F.cross_entropy, x, y, max_memory_fraction=1.0).shape[0] == 6
    assert per_example_grads(model, F.cross_entropy, x, y,
                             max_memory_fraction=None).shape[0] == 6
    # the advised piece fits
    assert per_example_grads(model, F.cross_entropy, x[:rows], y[:rows]).shape[0] == rows


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1, True, "half"])
def test_guard_refuses_a_bad_fraction(fraction):
    x, y = data()
    with pytest.raises(ValueError, match="max_memory_fraction must be a number in"):
        per_example_grads(model_of(), F.cross_entropy, x, y, max_memory_fraction=fraction)
