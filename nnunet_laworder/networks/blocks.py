"""MK-UNet building blocks, dimension-generic through an injected ``conv_op`` (Conv2d or Conv3d).

Read from the public MK-UNet description (Rahman & Marculescu, 2025): multi-kernel depthwise convs inside an
inverted residual block, CBAM-style channel and spatial attention, and a grouped attention gate on the skips.
Norms and activations are injected the way dynamic-network-architectures does it, so the same classes build
2D and 3D networks from an nnU-Net plans ``architecture`` block.
"""
from itertools import chain
from math import gcd
from typing import Callable, Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, *spatial = x.shape
    return x.view(b, groups, c // groups, *spatial).transpose(1, 2).reshape(b, c, *spatial)


class FastInference:
    """Mixin for modules with a fused forward for prediction: eval mode under ``torch.inference_mode`` (as nnU-Net's
    predictor runs), with the same outputs up to float rounding. Plain eval (``torch.no_grad``: validation, the
    flop counter, which should count the architecture as defined) and training run the modules as written;
    ``fast_inference = False`` turns the fused forward off."""

    fast_inference = True

    def use_fast_path(self) -> bool:
        return self.fast_inference and not self.training and torch.is_inference_mode_enabled()

    def inference_cache(self, compute: Callable):
        """``compute()``, kept until a parameter or buffer of the module changes (in place or reassigned), so the
        folded weights are built once per checkpoint rather than once per forward. A compiled graph folds them
        itself (and cannot trace the check)."""
        if torch.compiler.is_compiling():
            return compute()
        key = tuple((t._version, t.data_ptr()) for t in chain(self.parameters(), self.buffers()))
        cached = self.__dict__.get("_inference_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_inference_cache"] = (key, compute())
        return cached[1]


def set_fast_inference(network: nn.Module, enabled: bool) -> None:
    for module in network.modules():
        if isinstance(module, FastInference):
            module.fast_inference = enabled


def same_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor = None) -> torch.Tensor:
    """Stride-1 convolution padded to keep the size, with the groups its weight implies. On CPU it calls oneDNN
    directly: PyTorch sends channels-last 1x1 convs to an unfused path whose per-row bias copy makes ORDER's
    full-resolution 1x1 convs (3-8 channels) 3-4x slower."""
    padding = [k // 2 for k in weight.shape[2:]]
    groups = x.shape[1] // weight.shape[1]
    if x.device.type == "cpu" and torch.backends.mkldnn.is_available():
        ones = [1] * len(padding)
        return torch.mkldnn_convolution(x, weight, bias, padding, ones, ones, groups)
    return getattr(F, f"conv{len(padding)}d")(x, weight, bias, 1, padding, 1, groups)


def adaptive_pool_op(conv_op: Type[_ConvNd], kind: str) -> Type[nn.Module]:
    """AdaptiveAvgPool{2,3}d / AdaptiveMaxPool{2,3}d matching ``conv_op``."""
    dim = convert_conv_op_to_dim(conv_op)
    return getattr(nn, f"Adaptive{kind.capitalize()}Pool{dim}d")


class ChannelScale(nn.Module):
    """A depthwise 1x1 convolution computed as a per-channel multiply: the same ``weight`` (C, 1, 1[, 1]) and result
    as ``conv_op(C, C, 1, groups=C, bias=False)``, without the per-channel loop PyTorch's CPU convolution runs for
    it in channels-last (with both, ORDER's forward at 640x640 on one CPU thread takes ~0.8x the time). The flop
    counter sees an elementwise product, not a convolution."""

    def __init__(self, conv_op, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, *[1] * convert_conv_op_to_dim(conv_op)))

    def forward(self, x):
        return self._conv_forward(x, self.weight, None)

    def _conv_forward(self, x, weight, bias):
        """``nn.ConvNd``'s hook with explicit weight and bias, so :class:`ConvNormAct` folds a norm into either."""
        per_channel = weight.transpose(0, 1)
        return x * per_channel if bias is None else torch.addcmul(bias.view_as(per_channel), x, per_channel)


def folds_into_conv(norm: nn.Module) -> bool:
    """Whether ``norm`` is, in eval mode, a per-channel affine map (a batch norm with running statistics)."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None


def fold_norm(conv: nn.Module, norm: nn.Module):
    """``(weight, bias)`` of one conv computing ``norm(conv(x))`` in eval mode, for a norm that
    :func:`folds_into_conv`."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    weight = conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1))
    return weight, shift if getattr(conv, "bias", None) is None else torch.addcmul(shift, conv.bias, scale)


class ConvNormAct(FastInference, nn.Sequential):
    """conv -> norm -> activation (activation optional). In eval mode a batch norm is folded into the conv: one
    pass over the activations instead of two (ORDER's CPU forward at 640x640: 10-25% faster); the fused inference
    forward folds it once per checkpoint and runs the conv through :func:`same_conv`."""

    def __init__(self, conv_op, norm_op, norm_op_kwargs, in_channels, out_channels, kernel_size=1, groups=1,
                 nonlin: Type[nn.Module] = None):
        depthwise_1x1 = kernel_size == 1 and groups == in_channels == out_channels
        conv = ChannelScale(conv_op, in_channels) if depthwise_1x1 else \
            conv_op(in_channels, out_channels, kernel_size, 1, kernel_size // 2, groups=groups, bias=False)
        layers = [conv, norm_op(out_channels, **(norm_op_kwargs or {}))]
        if nonlin is not None:
            layers.append(nonlin(inplace=True))
        super().__init__(*layers)

    def forward(self, x):
        if self.training or not folds_into_conv(self[1]):
            return super().forward(x)
        fast = self.use_fast_path()
        weight, bias = self.inference_cache(self.folded) if fast else self.folded()
        x = same_conv(x, weight, bias) if fast and isinstance(self[0], _ConvNd) else \
            self[0]._conv_forward(x, weight, bias)
        return self[2](x) if len(self) > 2 else x

    def folded(self):
        """``(weight, bias)`` of the conv with the eval batch norm folded in."""
        return fold_norm(self[0], self[1])


class MultiKernelDepthwiseConv(FastInference, nn.Module):
    """Parallel depthwise convs with several kernel sizes on the same input; their outputs are summed."""

    def __init__(self, conv_op, norm_op, norm_op_kwargs, channels: int, kernel_sizes: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.dwconvs = nn.ModuleList(
            ConvNormAct(conv_op, norm_op, norm_op_kwargs, channels, channels, k, groups=channels, nonlin=nn.ReLU6)
            for k in kernel_sizes)

    def forward(self, x):
        if not self.use_fast_path():
            return sum(conv(x) for conv in self.dwconvs)
        # accumulated in place: no ``0 + first`` pass, no new tensor per branch
        out = self.dwconvs[0](x)
        for conv in self.dwconvs[1:]:
            out += conv(x)
        return out


class MKIRBlock(FastInference, nn.Module):
    """Multi-kernel inverted residual block: 1x1 expand -> MKDC -> channel shuffle -> 1x1 project (+ residual)."""

    def __init__(self, conv_op, norm_op, norm_op_kwargs, in_channels: int, out_channels: int,
                 expansion_factor: int = 2, kernel_sizes: Sequence[int] = (1, 3, 5)):
        super().__init__()
        expanded = in_channels * expansion_factor
        self.expand = ConvNormAct(conv_op, norm_op, norm_op_kwargs, in_channels, expanded, 1, nonlin=nn.ReLU6)
        self.mkdc = MultiKernelDepthwiseConv(conv_op, norm_op, norm_op_kwargs, expanded, kernel_sizes)
        self.shuffle_groups = gcd(expanded, out_channels)
        self.project = ConvNormAct(conv_op, norm_op, norm_op_kwargs, expanded, out_channels, 1)
        # the reference projects the shortcut with a bare 1x1 conv (no norm) when widths differ
        self.shortcut = nn.Identity() if in_channels == out_channels else \
            conv_op(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        if self.use_fast_path() and folds_into_conv(self.project[1]):
            return self.fast_forward(x)
        out = channel_shuffle(self.mkdc(self.expand(x)), self.shuffle_groups)
        return self.shortcut(x) + self.project(out)

    def fast_forward(self, x):
        """The shuffle is folded into the projection's input channels."""
        weight, bias = self.inference_cache(self.shuffled_projection)
        out = same_conv(self.mkdc(self.expand(x)), weight, bias)
        out += x if isinstance(self.shortcut, nn.Identity) else same_conv(x, self.shortcut.weight)
        return out

    def shuffled_projection(self):
        weight, bias = self.project.folded()
        channels = weight.shape[1]
        # channel_shuffle puts input channel order[k] at position k
        order = channel_shuffle(torch.arange(channels).view(1, channels, *[1] * (weight.dim() - 2)),
                                self.shuffle_groups).flatten()
        shuffled = torch.empty_like(weight)
        shuffled[:, order] = weight
        return shuffled, bias


class ChannelAttention(nn.Module):
    """CBAM channel attention: a shared bottleneck MLP over global average and max pooling; returns the gate."""

    def __init__(self, conv_op, channels: int, ratio: int = 16):
        super().__init__()
        reduced = channels // min(ratio, channels)
        self.avg_pool = adaptive_pool_op(conv_op, "avg")(1)
        self.max_pool = adaptive_pool_op(conv_op, "max")(1)
        self.mlp = nn.Sequential(conv_op(channels, reduced, 1, bias=False), nn.ReLU(inplace=True),
                                 conv_op(reduced, channels, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the channel mean and max; returns the gate."""

    def __init__(self, conv_op, kernel_size: int = 7):
        super().__init__()
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class GroupedAttentionGate(FastInference, nn.Module):
    """GAG(g, x) = x * sigmoid(norm(1x1(ReLU(norm(gconv(g)) + norm(gconv(x)))))): gates skip ``x`` by decoder ``g``."""

    def __init__(self, conv_op, norm_op, norm_op_kwargs, channels: int, kernel_size: int = 3):
        super().__init__()
        inter = max(channels // 2, 1)
        groups = inter if kernel_size > 1 else 1

        def branch():
            return nn.Sequential(conv_op(channels, inter, kernel_size, padding=kernel_size // 2, groups=groups),
                                 norm_op(inter, **(norm_op_kwargs or {})))

        self.w_g, self.w_x = branch(), branch()
        self.psi = nn.Sequential(conv_op(inter, 1, 1), norm_op(1, **(norm_op_kwargs or {})), nn.Sigmoid())

    def forward(self, g, x):
        if self.use_fast_path() and all(folds_into_conv(b[1]) for b in (self.w_g, self.w_x, self.psi)):
            return self.fast_forward(g, x)
        return x * self.psi(torch.relu(self.w_g(g) + self.w_x(x)))

    def fast_forward(self, g, x):
        """The three norms folded into their convs, both biases into one."""
        (w_g, bias), w_x, (w_psi, b_psi) = self.inference_cache(self.folded)
        gated = same_conv(g, w_g, bias)
        gated += same_conv(x, w_x)
        return x * torch.sigmoid_(same_conv(gated.relu_(), w_psi, b_psi))

    def folded(self):
        (w_g, b_g), (w_x, b_x), psi = (fold_norm(*branch[:2]) for branch in (self.w_g, self.w_x, self.psi))
        return (w_g, b_g + b_x), w_x, psi


def init_reference_weights(module: nn.Module) -> None:
    """MK-UNet's 'normal' scheme: conv weights N(0, 0.02) (channel scales too: they are depthwise 1x1 convs),
    biases 0, norms identity."""
    if isinstance(module, (_ConvNd, ChannelScale)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)) and \
            module.weight is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
