"""The mask-conditioned denoiser of LAW: a small dimension-generic U-Net that predicts the noise (epsilon).

The conditioning mask (one-hot, every foreground class) is concatenated to the noisy image; the timestep enters
every residual block through a sinusoidal embedding. The model knows nothing about noise schedules or samplers
(those come from diffusers, see :mod:`nnunet_laworder.law.diffusion`). It returns its late decoder features too,
which LAW's weighting head reads.
"""
from typing import Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_laworder.networks.layers import TimestepEmbedding, group_norm, interpolation_mode


class ResidualBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with the timestep embedding added in between."""

    def __init__(self, conv_op: Type[_ConvNd], in_channels: int, out_channels: int, time_dim: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_channels), conv_op(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.norm2, self.conv2 = group_norm(out_channels), conv_op(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Identity() if in_channels == out_channels else conv_op(in_channels, out_channels, 1)

    def forward(self, x, t_emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(t_emb).view(*t_emb.shape[:1], -1, *([1] * (x.dim() - 2)))
        return self.shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class MaskConditionedDenoiser(nn.Module):
    """epsilon-prediction U-Net on ``concat(noisy image, one-hot mask)``.

    ``forward`` returns ``(epsilon, features)``; ``features`` are the last decoder stage's activations at full
    resolution (``features_per_stage[0]`` channels), the input of LAW's delta and Dice heads.
    """

    def __init__(self, image_channels: int, mask_channels: int, conv_op: Type[_ConvNd] = nn.Conv2d,
                 features_per_stage: Sequence[int] = (32, 64, 128), time_dim: int = 128):
        super().__init__()
        self.image_channels, self.mask_channels = image_channels, mask_channels
        self.conv_op, self.features_per_stage, self.time_dim = conv_op, tuple(features_per_stage), time_dim
        self.interpolation = interpolation_mode(conv_op)
        self.time_embedding = TimestepEmbedding(time_dim)
        widths = self.features_per_stage
        self.stem = conv_op(image_channels + mask_channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(ResidualBlock(conv_op, widths[max(i - 1, 0)], w, time_dim)
                                     for i, w in enumerate(widths))
        self.downsample = nn.ModuleList(conv_op(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.middle = ResidualBlock(conv_op, widths[-1], widths[-1], time_dim)
        self.decoder = nn.ModuleList(ResidualBlock(conv_op, widths[i + 1] + widths[i], widths[i], time_dim)
                                     for i in reversed(range(len(widths) - 1)))
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU(), conv_op(widths[0], image_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting zero noise, a stable first step
        nn.init.zeros_(self.out[-1].bias)

    @property
    def divisor(self) -> int:
        """Spatial sizes must be divisible by this (one stride-2 conv per stage but the last)."""
        return 2 ** (len(self.features_per_stage) - 1)

    def embed_time(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.time_embedding(timesteps)

    def forward(self, noisy: torch.Tensor, mask: torch.Tensor, timesteps: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        t_emb = self.embed_time(timesteps)
        x = self.stem(torch.cat([noisy, mask], dim=1))
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x, t_emb)
            if i < len(self.downsample):
                skips.append(x)
                x = self.downsample[i](x)
        x = self.middle(x, t_emb)
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode=self.interpolation, align_corners=False)
            x = block(torch.cat([x, skip], dim=1), t_emb)
        return self.out(x), x

    def config(self) -> dict:
        """Constructor arguments, stored in checkpoints so that the model can be rebuilt."""
        return {"image_channels": self.image_channels, "mask_channels": self.mask_channels,
                "conv_op": f"torch.nn.Conv{self.conv_op.__name__[-2]}d",
                "features_per_stage": list(self.features_per_stage), "time_dim": self.time_dim}
