"""MK-UNet (Rahman & Marculescu, 2025) as an nnU-Net architecture, 2D and 3D.

The topology follows the public reference: every encoder stage is an MKIR block followed by a max-pool, the
skips are the pooled encoder outputs, and each decoder stage runs channel attention -> (shared) spatial
attention -> MKIR -> upsample -> + grouped-attention-gated skip. Segmentation heads sit at every resolution
from the input down to 1/8 (for the default five stages), which is exactly what nnU-Net's deep supervision
expects from a plans ``strides`` list of length ``n_stages``: one output per entry but the last, highest
resolution first.

Strides follow the plans (anisotropic 3D patches work): stage ``i`` is pooled by ``strides[i + 1]`` and the
deepest stage by ``strides[-1]`` again, so the reference's five 2x pools are ``strides = [1, 2, 2, 2, 2]``.
"""
from typing import List, Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.building_blocks.helper import (convert_conv_op_to_dim, get_matching_pool_op,
                                                                  maybe_convert_scalar_to_list)

from nnunet_laworder.networks.blocks import (ChannelAttention, FastInference, GroupedAttentionGate, MKIRBlock,
                                             SpatialAttention, init_reference_weights, same_conv)
from nnunet_laworder.networks.layers import interpolation_mode

# published MK-UNet widths (5 stages)
MKUNET_VARIANTS = {
    "T": (4, 8, 16, 24, 32),
    "S": (8, 16, 32, 48, 80),
    "base": (16, 32, 64, 96, 160),
}


class MKUNetEncoder(nn.Module):
    """MKIR block then max-pool per stage; returns the pooled output of every stage (the last is the bottleneck)."""

    def __init__(self, input_channels: int, features_per_stage: Sequence[int], conv_op: Type[_ConvNd],
                 strides: Sequence, norm_op, norm_op_kwargs, expansion_factor: int, dw_kernel_sizes: Sequence[int]):
        super().__init__()
        n_stages = len(features_per_stage)
        strides = [maybe_convert_scalar_to_list(conv_op, s) for s in strides]
        pool_strides = list(strides[1:]) + [strides[-1]]
        pool_op = get_matching_pool_op(conv_op, pool_type="max")
        in_channels = [input_channels] + list(features_per_stage[:-1])
        self.blocks = nn.ModuleList(
            MKIRBlock(conv_op, norm_op, norm_op_kwargs, in_channels[i], features_per_stage[i], expansion_factor,
                      dw_kernel_sizes) for i in range(n_stages))
        # the extra bottleneck pool need not divide the patch: it floors (ceil_mode is ~7x slower on CPU) and
        # the decoder upsamples to exact sizes; nnU-Net plans keep >= 4 voxels per pooled axis, so nothing vanishes
        self.pools = nn.ModuleList(
            pool_op(kernel_size=s, stride=s) if any(x > 1 for x in s) else nn.Identity() for s in pool_strides)
        self.output_channels = list(features_per_stage)

    def forward(self, x) -> List[torch.Tensor]:
        skips = []
        for block, pool in zip(self.blocks, self.pools):
            x = pool(block(x))
            skips.append(x)
        return skips


class MKUNetDecoder(FastInference, nn.Module):
    """Decoder stages from the bottleneck up to the input resolution.

    Stage ``j`` (0 = deepest) ends at resolution level ``n - 1 - j``; every stage but the first has a
    segmentation head (``seg_layers``, deepest first, as in nnU-Net's UNetDecoder). Subclasses change how the
    skip is merged by overriding :meth:`fuse`.
    """

    def __init__(self, encoder: MKUNetEncoder, num_classes: int, conv_op: Type[_ConvNd], norm_op, norm_op_kwargs,
                 expansion_factor: int, dw_kernel_sizes: Sequence[int], gag_kernel_size: int,
                 deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.interpolation = interpolation_mode(conv_op)
        widths = encoder.output_channels
        n = len(widths)
        # stage j reads width widths[n-1-j] and writes the width of the skip it meets (the first width at the top)
        in_widths = [widths[n - 1 - j] for j in range(n)]
        out_widths = [widths[max(n - 2 - j, 0)] for j in range(n)]
        # reference channel-attention ratios: 16 for the deep stages, 8 and 4 for the two shallowest widths
        ratios = [{0: 4, 1: 8}.get(n - 1 - j, 16) for j in range(n)]
        self.channel_attention = nn.ModuleList(ChannelAttention(conv_op, in_widths[j], ratios[j]) for j in range(n))
        self.spatial_attention = SpatialAttention(conv_op)  # one module shared by all stages, as in the reference
        self.blocks = nn.ModuleList(
            MKIRBlock(conv_op, norm_op, norm_op_kwargs, in_widths[j], out_widths[j], expansion_factor,
                      dw_kernel_sizes) for j in range(n))
        self.gates = nn.ModuleList(
            GroupedAttentionGate(conv_op, norm_op, norm_op_kwargs, out_widths[j], gag_kernel_size)
            for j in range(n - 1))
        self.seg_layers = nn.ModuleList(conv_op(out_widths[j], num_classes, 1, bias=True) for j in range(1, n))
        self.out_widths = out_widths

    def head_needed(self, stage: int) -> bool:
        return self.deep_supervision or stage == len(self.blocks) - 1

    def head(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.seg_layers[stage - 1]
        return same_conv(x, layer.weight, layer.bias) if self.use_fast_path() else layer(x)

    def fuse(self, stage: int, x: torch.Tensor, skip: torch.Tensor, logits: Union[torch.Tensor, None]):
        """Merge the skip into the upsampled decoder features (MK-UNet: add the gated skip)."""
        return x + self.gates[stage](x, skip)

    def forward(self, skips: List[torch.Tensor], input_size: Sequence[int]):
        n = len(self.blocks)
        x = skips[-1]
        outputs = []
        for j in range(n):
            x = self.channel_attention[j](x) * x
            x = self.spatial_attention(x) * x
            level = n - 1 - j
            size = skips[level - 1].shape[2:] if level > 0 else input_size
            x = F.relu(F.interpolate(self.blocks[j](x), size=size, mode=self.interpolation, align_corners=False))
            logits = self.head(j, x) if j > 0 and self.head_needed(j) else None
            if logits is not None:
                outputs.append(logits)
            if level > 0:
                x = self.fuse(j, x, skips[level - 1], logits)
        if not self.deep_supervision:
            return outputs[-1]
        return outputs[::-1]  # highest resolution first, as nnU-Net's deep supervision expects


class MKUNet(nn.Module):
    """MK-UNet with nnU-Net's architecture interface (``input_channels``, ``num_classes``, plans ``strides``)."""

    decoder_class = MKUNetDecoder

    def __init__(self, input_channels: int, num_classes: int, n_stages: int = 5,
                 features_per_stage: Sequence[int] = MKUNET_VARIANTS["base"],
                 conv_op: Type[_ConvNd] = nn.Conv2d, strides: Sequence = (1, 2, 2, 2, 2),
                 norm_op: Type[nn.Module] = None, norm_op_kwargs: dict = None, expansion_factor: int = 2,
                 dw_kernel_sizes: Sequence[int] = (1, 3, 5), gag_kernel_size: int = 3,
                 deep_supervision: bool = False, **decoder_kwargs):
        super().__init__()
        if len(features_per_stage) != n_stages or len(strides) != n_stages:
            raise ValueError(f"features_per_stage ({len(features_per_stage)}) and strides ({len(strides)}) must "
                             f"both have n_stages = {n_stages} entries")
        if norm_op is None:
            norm_op = getattr(nn, f"BatchNorm{convert_conv_op_to_dim(conv_op)}d")
        self.encoder = MKUNetEncoder(input_channels, features_per_stage, conv_op, strides, norm_op, norm_op_kwargs,
                                     expansion_factor, dw_kernel_sizes)
        self.decoder = self.decoder_class(self.encoder, num_classes, conv_op, norm_op, norm_op_kwargs,
                                          expansion_factor, dw_kernel_sizes, gag_kernel_size, deep_supervision,
                                          **decoder_kwargs)
        self.memory_format = torch.channels_last if convert_conv_op_to_dim(conv_op) == 2 else torch.channels_last_3d
        self.apply(init_reference_weights)

    def forward(self, x):
        # channels-last inside: oneDNN's depthwise convs on few channels and large patches are up to ~10x faster
        # in it on CPU; the outputs leave in the caller's usual layout
        x = x.contiguous(memory_format=self.memory_format)
        outputs = self.decoder(self.encoder(x), x.shape[2:])
        if isinstance(outputs, list):
            return [o.contiguous() for o in outputs]
        return outputs.contiguous()
