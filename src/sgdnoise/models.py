"""Model zoo for the study: softmax regression, MLPs, a small CNN and CIFAR ResNets.

Every constructor returns a plain ``nn.Module`` mapping images ``x: (N, C, H, W)`` (or any
tensor whose trailing dimensions flatten to ``in_features`` for the fully connected models)
to logits ``(N, num_classes)``. Weights are drawn from the global torch generator, so the
caller seeds them with ``torch.manual_seed``.

Initialisation (He / Kaiming): convolution weights ~ N(0, 2 / fan_out); hidden linear
weights ~ N(0, gain² / fan_in) with the gain of the activation (√2 for ReLU, 5/3 for tanh);
the output layer ~ N(0, 1 / fan_in); every bias is zero; normalisation layers start as the
identity (scale 1, shift 0).

ResNets use the CIFAR stem (3x3 convolution, stride 1, no max-pool) and projection shortcuts
(1x1 convolution + norm) wherever the shape changes. ``width`` is the number of channels of
the first stage: ResNet-18/34 have stages ``width * (1, 2, 4, 8)`` (64 is the standard
network, 11,173,962 and 21,282,122 parameters with batch norm and 10 classes); ResNet-20 has
stages ``width * (1, 2, 4)`` (16 is standard).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .validate import check_choice, check_positive_int

__all__ = [
    "MODEL_NAMES",
    "NORMS",
    "ACTIVATIONS",
    "BasicBlock",
    "CifarResNet",
    "GhostBatchNorm2d",
    "batchnorm_layers",
    "build_model",
    "group_norm_groups",
    "make_norm",
    "mlp",
    "resnet18",
    "resnet20",
    "resnet34",
    "set_ghost_batch_size",
    "small_cnn",
    "softmax_regression",
]

MODEL_NAMES = ("softmax", "mlp", "cnn", "resnet20", "resnet18", "resnet34")
NORMS = ("batch", "group", "none")
ACTIVATIONS = ("relu", "tanh")

_DEFAULT_WIDTH = {"mlp": 256, "cnn": 16, "resnet20": 16, "resnet18": 64, "resnet34": 64}


# --------------------------------------------------------------------------- helpers


def group_norm_groups(channels: int) -> int:
    """Number of GroupNorm groups for ``channels`` channels.

    The largest divisor ``g`` of ``channels`` with ``g <= 32`` that leaves at least two
    channels per group (32 groups for 64+ channels that are multiples of 32, 8 groups for 16
    channels); 1 group when ``channels`` is 1 or prime beyond 32's reach.
    """
    channels = check_positive_int("channels", channels)
    for g in range(min(32, channels // 2), 0, -1):
        if channels % g == 0:
            return g
    return 1


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics come from fixed-size groups of examples.

    With ``ghost_batch_size = g`` (None: plain BatchNorm2d) and an input ``x: (B, C, H, W)``
    in training mode with ``B > g``, the first ``k·g`` examples (``k = B // g``) are viewed
    as ``(k, g, C, H, W)`` and every group ``j`` is normalised with its own statistics over
    its ``g·H·W`` values per channel (all groups in one ``batch_norm`` call, the groups
    laid out as channels, see ``_groups``):
    ``μ_jc = mean(x_j[:, c])``, ``σ²_jc = mean((x_j[:, c] − μ_jc)²)`` (biased),
    ``y = γ_c (x − μ_jc) / sqrt(σ²_jc + ε) + β_c``. The remainder ``r = B − k·g`` examples
    (if any) form one smaller last group normalised with its own statistics. ``B <= g`` (and
    eval mode) is plain BatchNorm over the whole input.

    Running statistics (train mode, ``track_running_stats``): one update per call with the
    mean over the full groups of ``μ_j`` and of the unbiased ``σ²_j · gHW/(gHW − 1)``, with
    the layer's ``momentum`` (``None``: cumulative average over calls).

    Micro-batching a batch into chunks that are multiples of ``g`` leaves the groups, hence
    the outputs and gradients, unchanged: the BN batch is ``g`` for every ``B >= g``.
    """

    def __init__(self, num_features: int, ghost_batch_size: int | None = None, **kw) -> None:
        super().__init__(num_features, **kw)
        if ghost_batch_size is not None:
            ghost_batch_size = check_positive_int("ghost_batch_size", ghost_batch_size)
        self.ghost_batch_size = ghost_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.ghost_batch_size
        if g is None or not self.training or x.shape[0] <= g:
            return super().forward(x)
        if x.ndim != 4:
            raise ValueError(f"GhostBatchNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        k = b // g
        full = self._groups(x[: k * g], k, g)
        if b > k * g:  # the remainder: one smaller group with its own statistics
            rest = F.batch_norm(x[k * g:], None, None, self.weight, self.bias, True, 0.0,
                                self.eps)
            return torch.cat([full, rest], dim=0)
        return full

    def _groups(self, x: torch.Tensor, k: int, g: int) -> torch.Tensor:
        """Normalise ``x: (k·g, C, H, W)`` per group in one ``batch_norm`` call: the groups
        become channels, ``(k·g, C, H, W) -> (g, k·C, H, W)`` (one copy in and one out, in
        ``x``'s memory format), so group ``j``, channel ``c`` is channel ``j·C + c``."""
        _, c, h, w = x.shape
        fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
               and not x.is_contiguous() else torch.contiguous_format)
        z = torch.empty((g, k * c, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
        z.view(g, k, c, h, w).copy_(x.unflatten(0, (k, g)).transpose(0, 1))
        track = self.track_running_stats and self.running_mean is not None
        rm = torch.zeros(k * c, dtype=torch.float32 if x.dtype != torch.float64 else x.dtype,
                         device=x.device) if track else None
        rv = torch.ones_like(rm) if track else None
        weight = self.weight.repeat(k) if self.affine else None
        bias = self.bias.repeat(k) if self.affine else None
        # momentum 1: rm, rv receive exactly this call's per-group mean and unbiased variance
        y = F.batch_norm(z, rm, rv, weight, bias, True, 1.0, self.eps)
        if track:
            self._update_running(rm.view(k, c), rv.view(k, c))
        out = torch.empty_like(x)
        out.unflatten(0, (k, g)).transpose(0, 1).copy_(y.view(g, k, c, h, w))
        return out

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, variances: torch.Tensor) -> None:
        """One update with the mean over the ``k`` groups of their means and unbiased
        variances (``means, variances: (k, C)``)."""
        self.num_batches_tracked.add_(1)
        m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
             else self.momentum)
        self.running_mean.mul_(1 - m).add_(means.mean(0).to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(variances.mean(0).to(self.running_var.dtype),
                                          alpha=m)


def set_ghost_batch_size(model: nn.Module, ghost_batch_size: int | None) -> int:
    """Give every BatchNorm2d of ``model`` the ghost batch size ``ghost_batch_size`` (None:
    plain BatchNorm), in place: plain ``nn.BatchNorm2d`` layers are replaced by
    :class:`GhostBatchNorm2d` layers holding the same parameters and buffers. Returns the
    number of layers set (0 for a network without BatchNorm)."""
    if ghost_batch_size is not None:
        ghost_batch_size = check_positive_int("ghost_batch_size", ghost_batch_size)
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, GhostBatchNorm2d):
                child.ghost_batch_size = ghost_batch_size
                n += 1
            elif isinstance(child, nn.BatchNorm2d):
                new = GhostBatchNorm2d(child.num_features, ghost_batch_size, eps=child.eps,
                                       momentum=child.momentum, affine=child.affine,
                                       track_running_stats=child.track_running_stats)
                new = new.to(device=child.weight.device if child.affine else None)
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(parent, name, new)
                n += 1
    return n


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def make_norm(norm: str, channels: int, ghost_batch_size: int | None = None) -> nn.Module:
    """A 2-D normalisation layer over ``channels`` channels: BatchNorm2d, GroupNorm or
    Identity for ``norm`` in {"batch", "group", "none"}. With ``norm="batch"`` and a
    ``ghost_batch_size``, a :class:`GhostBatchNorm2d` (a BatchNorm2d subclass)."""
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        if ghost_batch_size is not None:
            return GhostBatchNorm2d(channels, ghost_batch_size)
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_norm_groups(channels), channels)
    return nn.Identity()


def _activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return nn.ReLU() if name == "relu" else nn.Tanh()


def _check_bias_norm(bias: bool, norm: str) -> None:
    if not isinstance(bias, bool):
        raise ValueError(f"bias must be True or False, got {bias!r}")
    if not bias and norm != "none":
        raise ValueError(
            f"bias=False asks for a network without additive biases, but norm={norm!r} layers "
            "carry a learned shift; use norm='none' with bias=False"
        )


def _check_in_shape(in_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except (TypeError, ValueError):
        msg = f"in_shape must be a sequence of positive integers, got {in_shape!r}"
        raise ValueError(msg) from None
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"in_shape must be a sequence of positive integers, got {in_shape!r}")
    return shape


def _init_linear(layer: nn.Linear, nonlinearity: str) -> None:
    """W ~ N(0, gain² / fan_in), bias 0 (gain 1 for an output layer)."""
    gain = 1.0 if nonlinearity == "linear" else nn.init.calculate_gain(nonlinearity)
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(layer.in_features))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_conv_net(model: nn.Module) -> None:
    """Kaiming (fan_out, ReLU) for convolutions, identity norms, N(0, 1/fan_in) classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            _init_linear(m, "linear")


# --------------------------------------------------------------------------- linear / MLP


def softmax_regression(in_features: int, num_classes: int = 10, *, bias: bool = True) -> nn.Module:
    """Multinomial logistic regression: ``x -> W flatten(x) + b``, W: (num_classes, in_features).

    Parameters: ``num_classes * in_features (+ num_classes)``.
    """
    in_features = check_positive_int("in_features", in_features)
    num_classes = check_positive_int("num_classes", num_classes)
    _check_bias_norm(bias, "none")
    fc = nn.Linear(in_features, num_classes, bias=bias)
    _init_linear(fc, "linear")
    return nn.Sequential(nn.Flatten(), fc)


def mlp(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int = 10,
    bias: bool = True,
    *,
    activation: str = "relu",
) -> nn.Module:
    """Fully connected network ``flatten -> [Linear -> act] * L -> Linear``.

    ``hidden`` lists the L hidden widths (may be empty: then this is softmax regression).
    With ``bias=False`` and ReLU the network is positively homogeneous of degree L + 1 in its
    weights, f(c·θ) = c^(L+1) f(θ), which the Fisher-Rao norm identity relies on.
    """
    in_features = check_positive_int("in_features", in_features)
    num_classes = check_positive_int("num_classes", num_classes)
    if isinstance(hidden, (int, str)) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}")
    hidden = [check_positive_int("hidden width", h) for h in hidden]
    _check_bias_norm(bias, "none")
    check_choice("activation", activation, ACTIVATIONS)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for h in hidden:
        lin = nn.Linear(prev, h, bias=bias)
        _init_linear(lin, activation)
        layers += [lin, _activation(activation)]
        prev = h
    out = nn.Linear(prev, num_classes, bias=bias)
    _init_linear(out, "linear")
    layers.append(out)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- small CNN


def small_cnn(
    in_channels: int = 3,
    num_classes: int = 10,
    width: int = 16,
    norm: str = "none",
    *,
    bias: bool = True,
    depth: int = 3,
) -> nn.Module:
    """A small convolutional network: ``depth`` blocks of 3x3 conv -> norm -> ReLU, the first
    with stride 1 and channels ``width``, each later one with stride 2 and twice the channels,
    then global average pooling and a linear classifier.

    Width 16, depth 3, no norm, 3 input channels and 10 classes: 24,234 parameters. Global
    pooling makes it accept any spatial size of at least 2^(depth-1) pixels.
    """
    in_channels = check_positive_int("in_channels", in_channels)
    num_classes = check_positive_int("num_classes", num_classes)
    width = check_positive_int("width", width)
    depth = check_positive_int("depth", depth)
    check_choice("norm", norm, NORMS)
    _check_bias_norm(bias, norm)
    conv_bias = bias and norm == "none"
    layers: list[nn.Module] = []
    prev = in_channels
    for i in range(depth):
        ch = width * 2**i
        layers += [
            nn.Conv2d(prev, ch, 3, stride=1 if i == 0 else 2, padding=1, bias=conv_bias),
            make_norm(norm, ch),
            nn.ReLU(),
        ]
        prev = ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes, bias=bias)]
    model = nn.Sequential(*layers)
    _init_conv_net(model)
    return model


# --------------------------------------------------------------------------- ResNets


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection:
    ``y = relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``; the shortcut is the identity,
    or a strided 1x1 convolution + norm when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_ch)
        self.relu = nn.ReLU()
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias), make_norm(norm, out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with the CIFAR stem: conv3x3(stride 1) -> norm -> ReLU, then stages of
    BasicBlocks (stage s has ``widths[s]`` channels, ``blocks[s]`` blocks, stride 2 at the
    start of every stage but the first), global average pooling and a linear classifier.

    Shapes: ``x: (N, in_channels, H, W) -> logits (N, num_classes)``.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        norm: str = "batch",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_choice("norm", norm, NORMS)
        _check_bias_norm(bias, norm)
        if len(blocks) != len(widths) or len(blocks) == 0:
            raise ValueError(f"blocks {blocks!r} and widths {widths!r} must be equally long")
        conv_bias = bias and norm == "none"
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=conv_bias),
            make_norm(norm, widths[0]),
            nn.ReLU(),
        )
        stages = []
        prev = widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            layer = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                layer.append(BasicBlock(prev, w, stride, norm, conv_bias))
                prev = w
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes, bias=bias)
        _init_conv_net(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(out), 1))


def _resnet(blocks, mults, width, norm, num_classes, in_channels, bias) -> CifarResNet:
    width = check_positive_int("width", width)
    num_classes = check_positive_int("num_classes", num_classes)
    in_channels = check_positive_int("in_channels", in_channels)
    return CifarResNet(
        blocks,
        [width * m for m in mults],
        in_channels=in_channels,
        num_classes=num_classes,
        norm=norm,
        bias=bias,
    )


def resnet20(
    width: int = 16,
    norm: str = "batch",
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    bias: bool = True,
) -> CifarResNet:
    """ResNet-20: 3 stages of 3 BasicBlocks, widths ``width * (1, 2, 4)`` (16 standard;
    with projection shortcuts this has 272,474 parameters for 10 classes)."""
    return _resnet((3, 3, 3), (1, 2, 4), width, norm, num_classes, in_channels, bias)


def resnet18(
    width: int = 64,
    norm: str = "batch",
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    bias: bool = True,
) -> CifarResNet:
    """ResNet-18 (CIFAR stem): stages of (2, 2, 2, 2) BasicBlocks, widths
    ``width * (1, 2, 4, 8)``; 11,173,962 parameters at width 64 with 10 classes."""
    return _resnet((2, 2, 2, 2), (1, 2, 4, 8), width, norm, num_classes, in_channels, bias)


def resnet34(
    width: int = 64,
    norm: str = "batch",
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    bias: bool = True,
) -> CifarResNet:
    """ResNet-34 (CIFAR stem): stages of (3, 4, 6, 3) BasicBlocks, widths
    ``width * (1, 2, 4, 8)``; 21,282,122 parameters at width 64 with 10 classes."""
    return _resnet((3, 4, 6, 3), (1, 2, 4, 8), width, norm, num_classes, in_channels, bias)


# --------------------------------------------------------------------------- factory


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_shape: Sequence[int] = (3, 32, 32),
    width: int | None = None,
    norm: str = "batch",
    bias: bool = True,
    hidden: Sequence[int] | None = None,
    depth: int | None = None,
    activation: str = "relu",
    ghost_batch_size: int | None = None,
) -> nn.Module:
    """Build a model by name.

    - name: one of ``MODEL_NAMES``: "softmax", "mlp", "cnn", "resnet20", "resnet18", "resnet34".
    - in_shape: shape of one input ``(C, H, W)``; fully connected models use ``prod(in_shape)``
      inputs, convolutional ones ``C`` input channels.
    - width: first-stage channels (conv nets; defaults 16 for cnn / resnet20, 64 for
      resnet18 / resnet34) or the hidden width of an MLP (default 256). Unused by "softmax".
    - norm: "batch" | "group" | "none" for the convolutional models. Fully connected models
      ("softmax", "mlp") have no normalisation layers and ignore it.
    - bias: False gives networks without additive biases (requires norm="none" for conv nets).
    - hidden: explicit MLP hidden widths (overrides width / depth).
    - depth: number of MLP hidden layers (default 2) or of small-CNN conv blocks (default 3).
    - activation: "relu" | "tanh" for the MLP.
    - ghost_batch_size: with ``norm="batch"``, BatchNorm statistics over groups of this many
      examples (:class:`GhostBatchNorm2d`); None: over the whole (micro-)batch.
    """
    if ghost_batch_size is not None:
        ghost_batch_size = check_positive_int("ghost_batch_size", ghost_batch_size)
    model = _build(name, num_classes=num_classes, in_shape=in_shape, width=width, norm=norm,
                   bias=bias, hidden=hidden, depth=depth, activation=activation)
    if ghost_batch_size is not None:
        set_ghost_batch_size(model, ghost_batch_size)
    return model


def _build(name, *, num_classes, in_shape, width, norm, bias, hidden, depth, activation):
    check_choice("name", name, MODEL_NAMES)
    check_choice("norm", norm, NORMS)
    shape = _check_in_shape(in_shape)
    if width is None:
        width = _DEFAULT_WIDTH.get(name)
    elif name != "softmax":
        width = check_positive_int("width", width)
    in_features = math.prod(shape)
    if name == "softmax":
        return softmax_regression(in_features, num_classes, bias=bias)
    if name == "mlp":
        if hidden is None:
            n_hidden = 2 if depth is None else check_positive_int("depth", depth,
                                                                  allow_zero=True)
            hidden = (width,) * n_hidden
        return mlp(in_features, hidden, num_classes, bias, activation=activation)
    if len(shape) != 3:
        raise ValueError(f"in_shape must be (C, H, W) for {name!r}, got {tuple(in_shape)!r}")
    in_channels = shape[0]
    if name == "cnn":
        return small_cnn(
            in_channels, num_classes, width, norm, bias=bias, depth=3 if depth is None else depth
        )
    ctor = {"resnet20": resnet20, "resnet18": resnet18, "resnet34": resnet34}[name]
    return ctor(width, norm, num_classes, in_channels=in_channels, bias=bias)
