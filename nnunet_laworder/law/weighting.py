"""LAW: learnable adaptive per-pixel loss weighting for diffusion training (reconstruction, SPEC section 4).

``w = p * exp(a * beta * delta)``: ``p`` is a ratio-based prior that gives lesion and background comparable
total weight, ``delta`` a learned map of where the denoiser errs, ``a`` a warm-up factor from 0 to 1 on the delta
term only, so the first steps weigh by the prior alone. Each map is normalised to mean 1 per image, clamped and
renormalised. The ablations ``prior`` (``delta = 0``) and ``uniform`` (``w = 1``) take the same code path.
"""
from dataclasses import dataclass
from typing import Dict, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_laworder.law.options import WEIGHTINGS


@dataclass(frozen=True)
class WeightingConfig:
    mode: str = "law"
    r_max: float = 20.0  # cap of the background / lesion pixel ratio in the prior
    w_min: float = 0.1
    w_max: float = 10.0
    warmup_steps: int = 250  # a (the warm-up factor of beta) rises linearly from 0 to 1 over these steps
    beta: float = 1.0  # strength of the learned delta map once warmed up
    lambda_delta: float = 0.1
    lambda_dice: float = 0.1

    def __post_init__(self):
        if self.mode not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.mode!r}")

    def warmup(self, step: int) -> float:
        return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(dim=2).view(*x.shape[:2], *([1] * (x.dim() - 2)))


def ratio_prior(foreground: torch.Tensor, r_max: float) -> torch.Tensor:
    """``p = 1 + (r - 1) m`` with ``r = clip(N_bg / N_fg, 1, r_max)`` per image (``r = 1`` for an empty mask)."""
    n_fg = foreground.flatten(1).sum(dim=1)
    n_bg = foreground[0].numel() - n_fg
    r = torch.where(n_fg > 0, n_bg / n_fg.clamp(min=1), torch.ones_like(n_fg)).clamp(1.0, r_max)
    return 1 + (r.view(-1, *([1] * (foreground.dim() - 1))) - 1) * foreground


def normalise_and_clamp(w: torch.Tensor, w_min: float, w_max: float, iterations: int = 40) -> torch.Tensor:
    """Mean 1 per image *and* inside ``[w_min, w_max]``: ``clamp(s w, w_min, w_max)`` with the per-image scale
    ``s`` that makes the mean 1.

    (Normalise, clamp, renormalise pushes clamped values past the clamp again: a 1 % lesion with the prior at
    ``r_max`` 20 ends at 10.7 > ``w_max``.) ``mean(clamp(s w))`` rises monotonically with ``s`` from ``w_min`` to
    ``w_max``, so for ``w_min <= 1 <= w_max`` a bisection on ``log s`` finds it (40 halvings: far below float32
    precision).
    """
    w = w / spatial_mean(w)
    if not w_min <= 1 <= w_max:
        return w.clamp(w_min, w_max) / spatial_mean(w.clamp(w_min, w_max))
    flat = w.flatten(1)
    # at s = w_min / max(w) every weight clamps to w_min (mean <= 1), at s = w_max / min(w) to w_max (mean >= 1)
    lo = torch.log(w_min / flat.amax(dim=1))
    hi = torch.log(w_max / flat.amin(dim=1).clamp(min=1e-30))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_low = (flat * mid.exp()[:, None]).clamp(w_min, w_max).mean(dim=1) < 1
        lo, hi = torch.where(too_low, mid, lo), torch.where(too_low, hi, mid)
    scale = ((lo + hi) / 2).exp().view(-1, *([1] * (w.dim() - 1)))
    return (w * scale).clamp(w_min, w_max)


def loss_weights(config: WeightingConfig, foreground: torch.Tensor, delta: torch.Tensor, step: int
                 ) -> torch.Tensor:
    """Per-pixel weights ``(B, 1, *spatial)`` for the denoising loss; ``delta`` is detached here."""
    if config.mode == "uniform":
        return torch.ones_like(foreground)
    log_w = torch.log(ratio_prior(foreground, config.r_max))
    if config.mode == "law":
        log_w = log_w + config.warmup(step) * config.beta * delta.detach().float()
    # the exponent is bounded before exp: the clamp decides the final range anyway
    w = normalise_and_clamp(torch.exp(log_w.clamp(-20, 20)), config.w_min, config.w_max)
    empty = foreground.flatten(1).sum(dim=1) == 0  # no lesion: nothing to emphasise, uniform weights
    return torch.where(empty.view(-1, *([1] * (w.dim() - 1))), torch.ones_like(w), w)


class LAWHead(nn.Module):
    """Delta and Dice heads on the denoiser's late features.

    The delta branch reads the features *detached*, with the conditioning mask and the (detached) timestep
    embedding: ``L_delta`` trains the head only and never pulls the denoiser, which the weighted loss trains. The
    Dice head reads the features alone, undetached: it cannot copy the mask it predicts from its input, so its loss
    keeps the denoiser's features lesion-aware. ``hidden`` 16: the delta branch's two full-resolution 3x3
    convolutions add about 5 % to a training step's FLOPs (32: 12 %)."""

    def __init__(self, conv_op: Type[_ConvNd], feature_channels: int, mask_channels: int, time_dim: int,
                 hidden: int = 16):
        super().__init__()
        self.time = nn.Linear(time_dim, hidden)
        self.trunk = nn.Sequential(conv_op(feature_channels + mask_channels, hidden, 3, padding=1), nn.SiLU())
        self.mix = nn.Sequential(conv_op(hidden, hidden, 3, padding=1), nn.SiLU())
        self.delta = conv_op(hidden, 1, 1)
        self.dice = conv_op(feature_channels, 1, 1)  # predicts the union of the foreground classes
        nn.init.zeros_(self.delta.weight)  # delta starts at 0: weights start as the prior
        nn.init.zeros_(self.delta.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor, t_emb: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([features.detach(), mask], dim=1))
        h = self.mix(h + self.time(t_emb.detach()).view(*t_emb.shape[:1], -1, *([1] * (h.dim() - 2))))
        return self.delta(h), self.dice(features)


def local_error(error: torch.Tensor, kernel: int = 5) -> torch.Tensor:
    """The per-pixel squared error averaged over a ``kernel``-wide neighbourhood (any spatial dimension).

    The squared error of one noise prediction is chi-square noise around the denoiser's expected error; the log
    of it is mostly that noise, which leaves the delta head little to learn. The local mean keeps where the
    denoiser errs and drops most of the noise."""
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[error.dim() - 3]
    return pool(error, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def law_loss(config: WeightingConfig, noise: torch.Tensor, predicted: torch.Tensor, foreground: torch.Tensor,
             delta: torch.Tensor, dice_logits: torch.Tensor, step: int) -> Tuple[torch.Tensor, Dict]:
    """``mean(w (eps - eps_hat)^2) + lambda_delta L_delta + lambda_dice L_dice``; returns (loss, parts incl. w)."""
    error = (noise - predicted).pow(2).mean(dim=1, keepdim=True)  # per pixel, averaged over image channels
    w = loss_weights(config, foreground, delta, step)
    denoising = (w * error).mean()
    parts = {"denoising": denoising.detach(), "weights": w.detach()}
    loss = denoising
    if config.mode == "law":
        e = local_error(error.detach())
        # delta learns where the denoiser errs relative to its mean error on that image: log((e + eps) / mean(e))
        # with eps = 1e-3 mean(e), so an almost error-free region's target stays above log 1e-3 at any error scale
        target = torch.log(e / spatial_mean(e).clamp(min=1e-12) + 1e-3)
        delta_loss = F.mse_loss(delta, target)
        dice = soft_dice_loss(dice_logits, foreground)
        loss = loss + config.lambda_delta * delta_loss + config.lambda_dice * dice
        parts.update(delta=delta_loss.detach(), dice=dice.detach())
    return loss, parts
