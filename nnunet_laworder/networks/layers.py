"""Small dimension-generic layers shared by the segmenters and LAW's denoiser (they import nothing above them)."""
import math
from typing import Type

import torch
from diffusers.models.embeddings import get_timestep_embedding
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from torch import nn
from torch.nn.modules.conv import _ConvNd

MAX_GROUPS = 8


def interpolation_mode(conv_op: Type[_ConvNd]) -> str:
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[convert_conv_op_to_dim(conv_op)]


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels`` (12 channels: 4 groups), so every width works."""
    return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels, affine=affine)


class TimestepEmbedding(nn.Module):
    """Sinusoidal timestep features -> MLP, as in DDPM."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.mlp(get_timestep_embedding(timesteps, self.dim, flip_sin_to_cos=True, downscale_freq_shift=0))
