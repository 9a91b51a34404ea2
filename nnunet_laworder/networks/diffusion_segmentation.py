"""Shared core of the diffusion segmenters (cDAL, SPAD): the mask state, a conditional x0-denoiser and the
eval-mode wrapper that turns a sampler into an nnU-Net network.

The diffusion runs on the *mask state*: one channel per nnU-Net segmentation head, scaled to [-1, 1] (one-hot
classes including background for label training, one channel per region for region training). The denoiser
predicts the clean mask as class logits, so its output can be trained with nnU-Net's own losses and turned into
a state by ``2 p - 1`` (softmax over classes, sigmoid per region).

:class:`DiffusionSegmenter` is what nnU-Net sees: ``forward(image)`` runs the method's sampler ``num_samples``
times from a seeded generator and returns logits of the averaged probabilities, so ``nnUNetv2_predict`` (sliding
window, mirroring, fold ensembling) and nnU-Net's validation work unchanged. The denoiser itself knows nothing
of noise schedules or samplers; the subclasses (:mod:`.spad`, :mod:`.cdal`) hold those, from diffusers.
"""
from contextlib import nullcontext
from typing import Optional, Sequence, Type

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from torch import nn
from torch.amp import is_autocast_available
from torch.nn.modules.conv import _ConvNd

from nnunet_laworder.networks.layers import TimestepEmbedding, group_norm, interpolation_mode

# probabilities are clamped to [EPS, 1 - EPS] before logits are taken, so an all-agreeing average stays finite
EPS = 1e-4


def class_probabilities(logits: torch.Tensor, regions: bool) -> torch.Tensor:
    """Softmax over classes (label training) or a sigmoid per region channel (region training)."""
    return torch.sigmoid(logits) if regions else torch.softmax(logits, dim=1)


def probabilities_to_logits(probabilities: torch.Tensor, regions: bool) -> torch.Tensor:
    """Logits nnU-Net's inference turns back into exactly these probabilities (softmax of log p, sigmoid of logit p)."""
    p = probabilities.clamp(EPS, 1 - EPS)
    return torch.logit(p) if regions else torch.log(p)


def mask_state(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-channel probabilities (or a one-hot mask) -> the diffusion state in [-1, 1]."""
    return 2 * probabilities - 1


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm whose scale and shift come from a style vector (``(1 + gamma(w)) * GN(x) + beta(w)``).

    With ``style_dim == 0`` it is a plain GroupNorm with learned affine parameters."""

    def __init__(self, channels: int, style_dim: int = 0):
        super().__init__()
        self.norm = group_norm(channels, affine=style_dim == 0)
        self.style = nn.Linear(style_dim, 2 * channels) if style_dim else None
        if self.style is not None:
            # identity at initialisation: the latent starts as a no-op and is learned in
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, style: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm(x)
        if self.style is None:
            return x
        gamma, beta = self.style(style).view(*style.shape[:1], 2, -1, *([1] * (x.dim() - 2))).unbind(1)
        return (1 + gamma) * x + beta


class ConditionedResidualBlock(nn.Module):
    """(Adaptive) GroupNorm -> SiLU -> conv, twice, with the timestep embedding added in between."""

    def __init__(self, conv_op: Type[_ConvNd], in_channels: int, out_channels: int, time_dim: int, style_dim: int = 0):
        super().__init__()
        self.norm1 = AdaptiveGroupNorm(in_channels, style_dim)
        self.conv1 = conv_op(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.norm2 = AdaptiveGroupNorm(out_channels, style_dim)
        self.conv2 = conv_op(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Identity() if in_channels == out_channels else conv_op(in_channels, out_channels, 1)

    def forward(self, x, t_emb, style=None):
        h = self.conv1(F.silu(self.norm1(x, style)))
        h = h + self.time(t_emb).view(*t_emb.shape[:1], -1, *([1] * (x.dim() - 2)))
        return self.shortcut(x) + self.conv2(F.silu(self.norm2(h, style)))


def downsample_strides(conv_op: Type[_ConvNd], strides: Sequence, n_stages: int) -> list:
    """The first ``n_stages`` plan strides, as lists; stage ``i > 0`` is entered through ``strides[i]``.

    Following the plan's strides keeps every intermediate size an integer (the plan's patch is divisible by their
    product) and anisotropic 3D patches pooled the way nnU-Net pools them."""
    strides = [maybe_convert_scalar_to_list(conv_op, s) for s in strides][:n_stages]
    if len(strides) < 2:
        raise ValueError(f"need at least two plan stages to build a U-Net, got strides {strides}")
    return strides


class ConditionalMaskDenoiser(nn.Module):
    """Predicts the clean mask (class logits) from a noisy mask state, the image and the timestep.

    The image enters through a separate encoder whose output is added to the stem of the noisy mask (so the whole
    U-Net sees image and mask features together); ``latent_dim > 0`` adds a latent vector ``z``, mapped by an MLP
    to a style that drives the adaptive group norm of every residual block (cDAL). Dimension-generic through
    ``conv_op``; resolutions follow the plan's ``strides``.
    """

    def __init__(self, image_channels: int, mask_channels: int, conv_op: Type[_ConvNd], strides: Sequence,
                 features_per_stage: Sequence[int] = (8, 16, 32, 64), time_dim: int = 64, latent_dim: int = 0,
                 style_dim: int = 128):
        super().__init__()
        widths = tuple(features_per_stage)
        self.strides = downsample_strides(conv_op, strides, len(widths))
        widths = widths[:len(self.strides)]
        self.mask_channels, self.latent_dim = mask_channels, latent_dim
        self.interpolation = interpolation_mode(conv_op)
        self.time_embedding = TimestepEmbedding(time_dim)
        style = style_dim if latent_dim else 0
        # the latent mapping network: z -> style, shared by all blocks
        self.mapping = nn.Sequential(nn.Linear(latent_dim, style_dim), nn.SiLU(), nn.Linear(style_dim, style_dim),
                                     nn.SiLU(), nn.Linear(style_dim, style_dim)) if latent_dim else None
        self.stem = conv_op(mask_channels, widths[0], 3, padding=1)
        self.image_encoder = nn.Sequential(
            conv_op(image_channels, widths[0], 3, padding=1), group_norm(widths[0]), nn.SiLU(),
            conv_op(widths[0], widths[0], 3, padding=1))
        self.encoder = nn.ModuleList(ConditionedResidualBlock(conv_op, widths[max(i - 1, 0)], w, time_dim, style)
                                     for i, w in enumerate(widths))
        self.downsample = nn.ModuleList(conv_op(widths[i - 1], widths[i - 1], 3, stride=self.strides[i], padding=1)
                                        for i in range(1, len(widths)))
        self.middle = ConditionedResidualBlock(conv_op, widths[-1], widths[-1], time_dim, style)
        self.decoder = nn.ModuleList(ConditionedResidualBlock(conv_op, widths[i + 1] + widths[i], widths[i], time_dim,
                                                              style) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Sequential(group_norm(widths[0]), nn.SiLU(), conv_op(widths[0], mask_channels, 1))

    def forward(self, noisy_mask: torch.Tensor, image: torch.Tensor, timesteps: torch.Tensor,
                latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        t_emb = self.time_embedding(timesteps)
        style = self.mapping(latent) if self.mapping is not None else None
        x = self.stem(noisy_mask) + self.image_encoder(image)
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                skips.append(x)
                x = self.downsample[i - 1](x)
            x = block(x, t_emb, style)
        x = self.middle(x, t_emb, style)
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode=self.interpolation, align_corners=False)
            x = block(torch.cat([x, skip], dim=1), t_emb, style)
        return self.out(x)


class DiffusionSegmenter(nn.Module):
    """An nnU-Net network backed by a diffusion sampler: ``forward(image)`` -> logits of the K-sample mean.

    Subclasses set ``sampler`` (a diffusers scheduler) and ``sampling_steps`` and implement :meth:`predict_x0`;
    :meth:`sample` draws one stochastic mask per image, as per-channel probabilities. ``forward``
    draws ``num_samples`` of them per image from a generator seeded with ``sample_seed`` on every call, so a
    prediction is reproducible (every sliding-window tile uses the same noise draw); ``sample_seed=None`` draws from
    torch's global generator instead. The ``regions`` buffer (set by the trainer from nnU-Net's label manager and
    saved with the weights) picks sigmoid-per-region over softmax probabilities.
    """

    def __init__(self, denoiser: nn.Module, num_samples: int = 4, sample_seed: Optional[int] = 0):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.denoiser = denoiser
        self.num_samples, self.sample_seed = num_samples, sample_seed
        self.register_buffer("regions", torch.tensor(False))

    @property
    def region_mode(self) -> bool:
        return bool(self.regions)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return class_probabilities(logits, self.region_mode)

    def noise_like(self, shape, reference: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=reference.device, dtype=reference.dtype)

    def predict_x0(self, noisy: torch.Tensor, image: torch.Tensor, timesteps: torch.Tensor,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
        """Clean-mask logits for one sampling step (the subclass's denoiser call)."""
        raise NotImplementedError

    def sample(self, image: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """One sampled mask per image, as per-channel probabilities of shape (B, mask_channels, *spatial).

        Walks ``self.sampler`` (a diffusers scheduler with x0 ("sample") prediction) over ``self.sampling_steps``
        from pure noise; the result is the last step's predicted clean mask."""
        shape = (image.shape[0], self.denoiser.mask_channels, *image.shape[2:])
        x = self.noise_like(shape, image, generator)
        self.sampler.set_timesteps(self.sampling_steps, device=image.device)
        probabilities = None
        for t in self.sampler.timesteps:
            probabilities = self.probabilities(self.predict_x0(x, image, t.expand(shape[0]), generator))
            x = self.sampler.step(mask_state(probabilities), t, x, generator=generator).prev_sample
        return probabilities

    def generator_for(self, device: torch.device) -> Optional[torch.Generator]:
        if self.sample_seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.sample_seed)

    def sample_probabilities(self, image: torch.Tensor, num_samples: Optional[int] = None,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(K, B, C, *spatial) probabilities of K samples per image, drawn as one batch of K * B."""
        k = num_samples or self.num_samples
        repeated = image.repeat(k, *([1] * (image.dim() - 1)))
        return self.sample(repeated, generator).view(k, *image.shape[:1], -1, *image.shape[2:])

    def forward(self, image: torch.Tensor, noisy: Optional[torch.Tensor] = None,
                timesteps: Optional[torch.Tensor] = None, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``forward(image)``: logits of the K-sample mean (what nnU-Net calls). ``forward(image, noisy, timesteps[,
        latent])``: one denoiser call (x0 logits), the training path, routed through ``forward`` so that a
        DistributedDataParallel wrapper sees it."""
        if noisy is not None:
            return self.denoiser(noisy, image, timesteps, latent)
        # nnU-Net's validation and nnUNetv2_predict call networks under CUDA autocast; a sampler's chain of steps
        # stays in fp32 (what the networks were trained in), so autocast is off for the device the image is on
        # (where torch has autocast for that device at all: asking for one it lacks is an error)
        device = image.device.type
        with torch.autocast(device, enabled=False) if is_autocast_available(device) else nullcontext():
            probabilities = self.sample_probabilities(image.float(), generator=self.generator_for(image.device))
            return probabilities_to_logits(probabilities.mean(0), self.region_mode)
