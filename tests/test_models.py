"""Tests for sgdnoise.models: shapes, parameter counts against closed forms and published
figures, normalisation variants, bias-free networks, initialisation and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdnoise import models
from sgdnoise.models import build_model, group_norm_groups, mlp, small_cnn, softmax_regression

torch.set_num_threads(1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------- independent counts


def resnet_count(blocks, widths, *, norm="batch", num_classes=10, in_ch=3) -> int:
    """Closed-form parameter count of a CIFAR ResNet with projection shortcuts."""
    nrm = 0 if norm == "none" else 2  # scale + shift per channel
    cb = 1 if norm == "none" else 0  # convolutions carry a bias only without norm

    def conv(i, o, k):
        return i * o * k * k + cb * o

    total = conv(in_ch, widths[0], 3) + nrm * widths[0]
    prev = widths[0]
    for s, (n, w) in enumerate(zip(blocks, widths, strict=True)):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            total += conv(prev, w, 3) + conv(w, w, 3) + 2 * nrm * w
            if stride != 1 or prev != w:
                total += conv(prev, w, 1) + nrm * w
            prev = w
    return total + prev * num_classes + num_classes


def test_published_resnet_counts():
    # Widely quoted sizes of the CIFAR ResNet-18 / ResNet-34 (BasicBlock, projection
    # shortcuts, batch norm, 10 classes).
    assert n_params(build_model("resnet18")) == 11_173_962
    assert n_params(build_model("resnet34")) == 21_282_122


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize(
    "name,blocks,mults",
    [
        ("resnet20", (3, 3, 3), (1, 2, 4)),
        ("resnet18", (2, 2, 2, 2), (1, 2, 4, 8)),
        ("resnet34", (3, 4, 6, 3), (1, 2, 4, 8)),
    ],
)
def test_resnet_counts_match_formula(name, blocks, mults, norm):
    width = 4
    model = build_model(name, width=width, norm=norm, num_classes=7)
    expected = resnet_count(blocks, [width * m for m in mults], norm=norm, num_classes=7)
    assert n_params(model) == expected


def test_resnet20_standard_count():
    assert n_params(build_model("resnet20")) == resnet_count((3, 3, 3), (16, 32, 64)) == 272_474


def test_small_models_counts():
    assert n_params(build_model("softmax")) == 3072 * 10 + 10
    assert n_params(build_model("softmax", bias=False)) == 3072 * 10
    m = build_model("mlp", hidden=[50, 20], in_shape=(1, 8, 8), num_classes=3)
    assert n_params(m) == (64 * 50 + 50) + (50 * 20 + 20) + (20 * 3 + 3)
    m = build_model("mlp", width=30, depth=3)
    assert n_params(m) == (3072 * 30 + 30) + 2 * (30 * 30 + 30) + (30 * 10 + 10)
    # small CNN: convs 3->w->2w->4w (3x3, with bias), linear 4w -> 10
    w = 16
    expected = (3 * w * 9 + w) + (w * 2 * w * 9 + 2 * w) + (2 * w * 4 * w * 9 + 4 * w)
    expected += 4 * w * 10 + 10
    assert n_params(small_cnn()) == expected == 24_234


# ----------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("name", models.MODEL_NAMES)
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_forward_shapes(name, norm):
    torch.manual_seed(0)
    model = build_model(name, width=4, norm=norm, num_classes=7)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_other_input_shape(name):
    model = build_model(name, width=4, in_shape=(1, 16, 16), num_classes=5, norm="group")
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)


def test_resnet_uses_cifar_stem_and_strides():
    model = build_model("resnet18", width=4)
    first = model.stem[0]
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    feats = model.stages(model.stem(torch.randn(1, 3, 32, 32)))
    assert feats.shape == (1, 32, 4, 4)  # width*8 channels, three stride-2 stages


# ----------------------------------------------------------------- norm variants


def test_norm_modules():
    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.modules())

    bn = build_model("resnet20", width=4, norm="batch")
    gn = build_model("resnet20", width=4, norm="group")
    nn_ = build_model("resnet20", width=4, norm="none")
    # stem + 2 per block (9 blocks) + 2 projection shortcuts
    assert count(bn, nn.BatchNorm2d) == 1 + 18 + 2
    assert count(gn, nn.GroupNorm) == 21 and count(gn, nn.BatchNorm2d) == 0
    assert count(nn_, nn.BatchNorm2d) + count(nn_, nn.GroupNorm) == 0
    for m in gn.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
    cnn = build_model("cnn", width=8, norm="batch")
    assert count(cnn, nn.BatchNorm2d) == 3
    assert all(c.bias is None for c in cnn.modules() if isinstance(c, nn.Conv2d))


@pytest.mark.parametrize(
    "channels,groups", [(1, 1), (2, 1), (3, 1), (16, 8), (24, 12), (64, 32), (512, 32), (96, 32)]
)
def test_group_norm_groups(channels, groups):
    g = group_norm_groups(channels)
    assert g == groups
    assert channels % g == 0 and g <= 32


def test_group_norm_output_independent_of_batch():
    torch.manual_seed(1)
    model = build_model("resnet20", width=4, norm="group").train()
    x = torch.randn(4, 3, 16, 16)
    whole = model(x)
    alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, alone, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- bias-free networks


def test_bias_free_mlp_has_no_biases_and_is_homogeneous():
    torch.manual_seed(2)
    hidden = [12, 9, 7]
    model = mlp(20, hidden, 4, bias=False).double()
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == len(hidden) + 1
    assert all(n.endswith("weight") for n in names)
    x = torch.randn(5, 20, dtype=torch.float64)
    c = 1.7
    out = model(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(c)
    # f(c θ) = c^(L+1) f(θ) for a bias-free ReLU network with L hidden layers
    torch.testing.assert_close(model(x), c ** (len(hidden) + 1) * out)


def test_bias_free_conv_nets():
    for name in ("cnn", "resnet20"):
        model = build_model(name, width=4, norm="none", bias=False)
        assert all(n.endswith("weight") for n, _ in model.named_parameters())
    model = build_model("resnet20", width=4, norm="none", bias=True)
    assert any(n.endswith("bias") for n, _ in model.named_parameters())


def test_tanh_mlp():
    model = build_model("mlp", width=8, activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_mlp_without_hidden_layers_is_softmax_regression():
    torch.manual_seed(3)
    a = mlp(30, [], 4)
    torch.manual_seed(3)
    b = softmax_regression(30, 4)
    x = torch.randn(2, 30)
    torch.testing.assert_close(a(x), b(x))


# ----------------------------------------------------------------- initialisation


def test_seeded_init_is_repeatable():
    torch.manual_seed(5)
    a = build_model("resnet20", width=4)
    torch.manual_seed(5)
    b = build_model("resnet20", width=4)
    torch.manual_seed(6)
    c = build_model("resnet20", width=4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def test_kaiming_init_statistics():
    torch.manual_seed(7)
    model = build_model("resnet18", width=16)
    conv = model.stages[3][1].conv2  # 128 -> 128, 3x3: 147,456 weights
    fan_out = conv.out_channels * 9
    std = conv.weight.std().item()
    # relative standard error of a sample std is about 1 / sqrt(2 n) = 0.18 %
    assert abs(std / math.sqrt(2.0 / fan_out) - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 5 * std / math.sqrt(conv.weight.numel())
    lin = build_model("mlp", hidden=[400], in_shape=(1, 20, 20))[1]  # 400 -> 400, ReLU gain
    assert abs(lin.weight.std().item() / math.sqrt(2.0 / 400) - 1) < 0.02
    assert torch.count_nonzero(lin.bias) == 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="vgg16"), "name"),
        (dict(name="resnet18", norm="layer"), "norm"),
        (dict(name="resnet18", width=0), "width"),
        (dict(name="resnet20", width=-4), "width"),
        (dict(name="cnn", width=2.5), "width"),
        (dict(name="mlp", activation="gelu"), "activation"),
        (dict(name="mlp", depth=-1), "depth"),
        (dict(name="mlp", hidden=[10, 0]), "hidden"),
        (dict(name="resnet18", in_shape=(32, 32)), "in_shape"),
        (dict(name="softmax", in_shape=(3, 0, 32)), "in_shape"),
        (dict(name="resnet18", bias=False), "bias"),
        (dict(name="cnn", num_classes=0), "num_classes"),
    ],
)
def test_build_model_errors(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        build_model(name, **kwargs)


def test_error_message_names_allowed_values():
    with pytest.raises(ValueError) as err:
        build_model("resnet50")
    assert "resnet50" in str(err.value) and "resnet34" in str(err.value)


# --------------------------------------------------------------------------- ghost BatchNorm


def _ghost(channels=3, g=4, **kw):
    layer = models.GhostBatchNorm2d(channels, g, **kw).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, -0.5, 2.0][:channels], dtype=torch.float64))
        layer.bias.copy_(torch.tensor([0.1, 0.2, -0.3][:channels], dtype=torch.float64))
    return layer


def _loop_reference(x, layer, g):
    """Independent reference: F.batch_norm on each group of g examples in turn (the last,
    shorter group on its own), float64."""
    outs = []
    for lo in range(0, x.shape[0], g):
        outs.append(torch.nn.functional.batch_norm(
            x[lo:lo + g], None, None, layer.weight, layer.bias, training=True, eps=layer.eps))
    return torch.cat(outs)


@pytest.mark.parametrize("b", [12, 14])  # 3 full groups of 4; 3 groups + a remainder of 2
@pytest.mark.parametrize("channels_last", [False, True])
def test_ghost_batch_norm_matches_loop_over_groups(b, channels_last):
    x = torch.randn(b, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(b))
    x.requires_grad_(True)
    layer = _ghost()
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    got = layer(xin)
    want = _loop_reference(x, layer, 4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)
    # gradients with respect to the input and the affine parameters agree too
    w = torch.randn_like(want)
    g1 = torch.autograd.grad((got * w).sum(), [x, layer.weight, layer.bias])
    g2 = torch.autograd.grad((want * w).sum(), [x, layer.weight, layer.bias])
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    # the grouping matters: plain BatchNorm over all b examples differs
    plain = torch.nn.functional.batch_norm(x, None, None, layer.weight, layer.bias,
                                           training=True)
    assert (layer(x) - plain).abs().max() > 1e-3


def test_ghost_batch_norm_small_batch_and_eval_are_plain_batch_norm():
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer = _ghost()
    ref = nn.BatchNorm2d(3).double()
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-12, atol=1e-12)  # B = g
    torch.testing.assert_close(layer(x[:3]), ref(x[:3]), rtol=1e-12, atol=1e-12)  # B < g
    layer.eval()
    ref.eval()
    y = torch.randn(9, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(layer(y), ref(y), rtol=1e-12, atol=1e-12)


def test_ghost_batch_norm_running_stats_average_the_groups():
    x = torch.randn(8, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    layer = _ghost(momentum=None)
    layer(x)
    groups = x.view(2, 4, 3, 2, 2)
    mean = groups.mean(dim=(1, 3, 4)).mean(0)
    var = groups.var(dim=(1, 3, 4), unbiased=True).mean(0)
    torch.testing.assert_close(layer.running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_var, var, rtol=1e-12, atol=1e-12)


def test_ghost_batch_norm_is_invariant_to_micro_batching_in_multiples_of_g():
    """Gradients of (1/B) Σ loss over micro-batches of 8 equal the full-batch ones (g = 4)."""
    torch.manual_seed(0)
    net = build_model("cnn", width=4, norm="batch", in_shape=(3, 8, 8), num_classes=3,
                      ghost_batch_size=4).double()
    x = torch.randn(16, 3, 8, 8, dtype=torch.float64)
    y = torch.arange(16) % 3
    grads = []
    for micro in (16, 8):
        net.zero_grad()
        for lo in range(0, 16, micro):
            loss = nn.functional.cross_entropy(net(x[lo:lo + micro]), y[lo:lo + micro],
                                               reduction="sum") / 16
            loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_build_model_ghost_batch_size_replaces_every_batch_norm():
    torch.manual_seed(0)
    plain = build_model("resnet20", width=4, norm="batch")
    torch.manual_seed(0)
    ghost = build_model("resnet20", width=4, norm="batch", ghost_batch_size=32)
    bns = [m for m in ghost.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 21 and all(isinstance(m, models.GhostBatchNorm2d) for m in bns)
    assert all(m.ghost_batch_size == 32 for m in bns)
    a, b = plain.state_dict(), ghost.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="ghost_batch_size"):
        build_model("cnn", ghost_batch_size=0)
