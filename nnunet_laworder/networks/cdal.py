"""cDAL: conditional diffusion with spatial attention and latent embedding (Hejrati et al., MICCAI 2024).

Reconstructed from the published description (SPEC section 7); the authors' code is non-commercial and was not
used. A denoising-diffusion-GAN in very few steps on the mask state:

- :class:`CDALNetwork`: the generator predicts the clean mask x0 from ``(x_{k+1}, k, image, z)``
  (:class:`~.diffusion_segmentation.ConditionalMaskDenoiser` with its separate image encoder added to the stem and a
  latent ``z`` mapped by an MLP to the adaptive group norm of every residual block); sampling walks the posterior
  ``q(x_k | x0_hat, x_{k+1})`` (diffusers' DDPM step) with a fresh ``z`` each step.
- The noise schedule is the variance-preserving SDE discretised in ``T`` steps, as denoising diffusion GANs use:
  even at ``T = 2`` the last state is (almost) pure noise, which a 2-4 step linear DDPM schedule would not give.
- :class:`CDALDiscriminator`: a time-conditioned CNN on ``(x_k, x_{k+1})`` pairs (and the image, so that it judges
  whether a mask fits *this* image) whose intermediate features, averaged over channels and upsampled, give the
  spatial attention map. SPEC section 7 multiplies the clean label by it before noising; here it weights the
  generator's per-voxel x0 loss instead (:func:`attention_weights`, :func:`weighted_mse`), because the sampler has
  no label to weight: the generator is trained on exactly the ``q(x_{k+1} | x0)`` that sampling walks.
"""
from typing import List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_laworder.networks.diffusion_segmentation import (ConditionalMaskDenoiser, DiffusionSegmenter,
                                                             downsample_strides)
from nnunet_laworder.networks.layers import TimestepEmbedding, interpolation_mode


def vp_sde_betas(num_timesteps: int, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    """Betas of the VP SDE ``beta(s) = beta_min + s (beta_max - beta_min)`` discretised at ``s = k / T``."""
    s = np.linspace(0, 1, num_timesteps + 1)
    alpha_bar = np.exp(-beta_min * s - 0.5 * (beta_max - beta_min) * s ** 2)
    return 1 - alpha_bar[1:] / alpha_bar[:-1]


def expand_as(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


class CDALNetwork(DiffusionSegmenter):
    """The cDAL generator with its few-step posterior sampler.

    Timestep convention (diffusers'): ``k`` in ``0..T-1`` indexes the noisy state ``x_{k+1}`` with
    ``alpha_bar[k]``; the generator sees ``x_{k+1}`` and ``k``; ``x_0`` is the clean mask.
    """

    def __init__(self, input_channels: int, num_classes: int, conv_op: Type[_ConvNd] = nn.Conv2d,
                 strides: Sequence = ((1, 1), (2, 2), (2, 2), (2, 2)),
                 features_per_stage: Sequence[int] = (8, 16, 32, 64), time_dim: int = 64, latent_dim: int = 100,
                 style_dim: int = 128, num_timesteps: int = 4, num_samples: int = 4,
                 sample_seed: Optional[int] = 0):
        if not 1 <= num_timesteps <= 16:
            raise ValueError(f"cDAL is a few-step model: num_timesteps must lie in [1, 16], got {num_timesteps}")
        denoiser = ConditionalMaskDenoiser(input_channels, num_classes, conv_op, strides, features_per_stage,
                                           time_dim, latent_dim=latent_dim, style_dim=style_dim)
        super().__init__(denoiser, num_samples, sample_seed)
        self.latent_dim = latent_dim
        # one scheduler for training coefficients and sampling: ancestral posterior steps over all T timesteps
        self.sampler = DDPMScheduler(num_train_timesteps=num_timesteps, trained_betas=vp_sde_betas(num_timesteps),
                                     prediction_type="sample", clip_sample=True, variance_type="fixed_small")
        self.sampling_steps = num_timesteps

    @property
    def num_timesteps(self) -> int:
        return self.sampler.config.num_train_timesteps

    def _schedule(self, timesteps: torch.Tensor):
        """Per sample: alpha-bar of ``x_{k+1}``, alpha-bar of ``x_k`` (1 at ``k = 0``) and the beta of step k -> k+1."""
        alpha_bar = self.sampler.alphas_cumprod.to(timesteps.device)
        a_t = alpha_bar[timesteps]
        a_prev = torch.where(timesteps > 0, alpha_bar[(timesteps - 1).clamp(min=0)], torch.ones_like(a_t))
        return a_t, a_prev, self.sampler.betas.to(timesteps.device)[timesteps]

    def predict_x0(self, noisy: torch.Tensor, image: torch.Tensor, timesteps: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """x0 logits for ``x_{k+1}``; a fresh latent z ~ N(0, I) per call (so per sampling step)."""
        latent = self.noise_like((noisy.shape[0], self.latent_dim), noisy, generator)
        return self.denoiser(noisy, image, timesteps, latent)

    def forward_pair(self, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                     noise_next: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A real pair ``(x_k, x_{k+1})`` for per-sample ``k``: ``x_k ~ q(x_k | x0)`` (``x0`` itself at ``k = 0``),
        then one forward step ``x_{k+1} = sqrt(1 - beta) x_k + sqrt(beta) eps'``."""
        _, previous, beta = self._schedule(timesteps)
        x_k = expand_as(previous.sqrt(), x0) * x0 + expand_as((1 - previous).sqrt(), x0) * noise
        beta = expand_as(beta, x0)
        return x_k, (1 - beta).sqrt() * x_k + beta.sqrt() * noise_next

    def posterior_sample(self, x0: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor,
                         noise: torch.Tensor) -> torch.Tensor:
        """``x_k ~ q(x_k | x0, x_{k+1})`` for per-sample ``k`` (differentiable in ``x0``); no noise at ``k = 0``.

        The same posterior as diffusers' ``DDPMScheduler.step`` (fixed_small variance), batched over timesteps."""
        a_t, a_prev, beta = self._schedule(timesteps)
        coef_x0 = a_prev.sqrt() * beta / (1 - a_t)
        coef_xt = (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
        std = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20).sqrt() * (timesteps > 0)
        return expand_as(coef_x0, x0) * x0.clamp(-1, 1) + expand_as(coef_xt, x0) * noisy + expand_as(std, x0) * noise


def attention_weights(attention: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-voxel weights ``1 - s + s A`` of the generator's x0 loss from an attention map ``A`` in [0, 1]: every
    voxel keeps at least weight ``1 - s``, the discriminator's most salient ones get 1."""
    return 1 - strength + strength * attention


def weighted_mse(x0_hat: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over channels and voxels with per-voxel weights ``weights * valid`` ((B, 1, ...) each;
    ``valid`` is 0 on the ignore label), normalised by the total weight so that the scale does not follow ``A``."""
    w = weights * valid
    return ((x0_hat - x0) ** 2 * w).sum() / (w.sum() * x0.shape[1]).clamp(min=1e-6)


def r1_penalty(d_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient norm of the discriminator's real logits w.r.t. its real input (kept differentiable)."""
    grad, = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class CDALDiscriminator(nn.Module):
    """Time-conditioned CNN discriminator on ``(x_k, x_{k+1}, image)``; returns one logit per sample.

    Strided conv stages follow the plan's strides (LeakyReLU 0.2, timestep embedding added per stage), then global
    average pooling and a linear head. :meth:`attention` turns the features of stage ``attention_stage`` into the
    spatial attention map: channel mean, upsampled to the input size, min-max normalised to [0, 1] per sample.
    """

    def __init__(self, mask_channels: int, image_channels: int, conv_op: Type[_ConvNd] = nn.Conv2d,
                 strides: Sequence = ((1, 1), (2, 2), (2, 2), (2, 2)), features_per_stage: Sequence[int] = (16, 32, 64),
                 time_dim: int = 64, attention_stage: int = 1):
        super().__init__()
        widths = tuple(features_per_stage)
        strides = downsample_strides(conv_op, strides, len(widths) + 1)[1:]
        widths = widths[:len(strides)]
        if not 0 <= attention_stage < len(widths):
            raise ValueError(f"attention_stage must index one of the {len(widths)} stages, got {attention_stage}")
        self.attention_stage = attention_stage
        self.interpolation = interpolation_mode(conv_op)
        self.time_embedding = TimestepEmbedding(time_dim)
        self.stem = conv_op(2 * mask_channels + image_channels, widths[0], 3, padding=1)
        in_widths = (widths[0],) + widths[:-1]
        self.stages = nn.ModuleList(
            conv_op(i, o, 3, stride=s, padding=1) for i, o, s in zip(in_widths, widths, strides))
        self.times = nn.ModuleList(nn.Linear(time_dim, w) for w in widths)
        self.head = nn.Linear(widths[-1], 1)

    def features(self, x_k: torch.Tensor, x_next: torch.Tensor, image: torch.Tensor,
                 timesteps: torch.Tensor) -> List[torch.Tensor]:
        t_emb = self.time_embedding(timesteps)
        h = F.leaky_relu(self.stem(torch.cat([x_k, x_next, image], dim=1)), 0.2)
        out = []
        for conv, time in zip(self.stages, self.times):
            h = conv(h) + time(t_emb).view(*t_emb.shape[:1], -1, *([1] * (h.dim() - 2)))
            h = F.leaky_relu(h, 0.2)
            out.append(h)
        return out

    def forward(self, x_k, x_next, image, timesteps) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        feats = self.features(x_k, x_next, image, timesteps)
        return self.head(feats[-1].flatten(2).mean(2)).squeeze(1), feats

    def attention(self, feats: List[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """(B, 1, *size) map in [0, 1] from the channel mean of one stage's features."""
        a = F.interpolate(feats[self.attention_stage].mean(dim=1, keepdim=True), size=tuple(size),
                          mode=self.interpolation, align_corners=False)
        flat = a.flatten(1)
        low, high = flat.amin(1), flat.amax(1)
        return (a - expand_as(low, a)) / expand_as((high - low).clamp(min=1e-6), a)
