"""One LAW training step, shared by ``law train`` and ``benchmarks/law_benchmark.py`` so that the benchmark times
exactly the trained ops: noise a batch, predict the noise (and, for ``law``, the delta / Dice maps), weigh the
loss, step the optimizer, update the EMA copy. Also the weights the step gives fixed masks (weight-map
snapshots: which items, at which steps), computed through the same denoiser, head and :func:`loss_weights`.
"""
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from nnunet_laworder.law.denoiser import MaskConditionedDenoiser
from nnunet_laworder.law.diffusion import noisy_batch
from nnunet_laworder.law.generator import LAWGenerator
from nnunet_laworder.law.weighting import LAWHead, WeightingConfig, law_loss, loss_weights

SNAPSHOT_TIMESTEPS = (100, 300, 500, 700, 900)
SNAPSHOT_MASKS = 4
SNAPSHOT_SEED = 12345  # the same noise at every snapshot: the maps differ only by what the model learned


class TrainingNet(nn.Module):
    """The denoiser and, for weighting ``law`` only, LAW's head as one module: what DDP wraps. The ablations leave
    the head out, so DDP never waits for gradients that do not come."""

    def __init__(self, denoiser: MaskConditionedDenoiser, head: LAWHead, with_head: bool):
        super().__init__()
        self.denoiser = denoiser
        self.head = head if with_head else None

    def forward(self, noisy: torch.Tensor, condition: torch.Tensor, timesteps: torch.Tensor):
        """(predicted noise, delta logits or None, Dice logits or None)."""
        eps, features = self.denoiser(noisy, condition, timesteps)
        if self.head is None:
            return eps, None, None
        delta, dice = self.head(features, condition, self.denoiser.embed_time(timesteps))
        return eps, delta, dice


def training_step(net: nn.Module, weighting: WeightingConfig, scheduler: DDPMScheduler,
                  optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: List[nn.Parameter],
                  images: torch.Tensor, condition: torch.Tensor, foreground: torch.Tensor, step: int,
                  generator: Optional[torch.Generator] = None, grad_clip: float = 1.0,
                  ema: Optional[nn.Module] = None, ema_decay: float = 0.999) -> Tuple[torch.Tensor, dict]:
    """One optimisation step of ``net`` (a :class:`TrainingNet`, maybe in DDP) on a batch; returns the detached
    (loss, parts) of :func:`law_loss`.

    ``params``: the generator's parameters in the order of ``generator.modules()`` (head included, even where
    ``net`` leaves it out), which the ``ema`` copy shares; ``grad_clip`` 0 is off. Mixed precision follows
    ``scaler.is_enabled()``. The EMA decay is warmed up as ``min(ema_decay, (1 + step) / (10 + step))``.
    """
    noisy, noise, timesteps = noisy_batch(scheduler, images, generator)
    with torch.autocast(images.device.type, enabled=scaler.is_enabled()):
        eps, delta, dice = net(noisy, condition, timesteps)
    loss, parts = law_loss(weighting, noise, eps.float(), foreground, None if delta is None else delta.float(),
                           None if dice is None else dice.float(), step)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if ema is not None:
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), params):
                p_ema.lerp_(p.detach(), 1 - decay)
    return loss.detach(), parts


def weight_maps(generator: LAWGenerator, scheduler: DDPMScheduler, images: torch.Tensor, condition: torch.Tensor,
                foreground: torch.Tensor, step: int, timesteps: Sequence[int] = SNAPSHOT_TIMESTEPS) -> np.ndarray:
    """Per-pixel weights (K, *size) of K fixed items at ``step``, averaged over fixed ``timesteps`` and noise."""
    device = images.device
    g = torch.Generator(device=device).manual_seed(SNAPSHOT_SEED)
    total = torch.zeros_like(foreground)
    denoiser, head = generator.denoiser, generator.head
    was_training = denoiser.training
    denoiser.eval(), head.eval()
    with torch.no_grad():
        for t in timesteps:
            t_batch = torch.full((len(images),), t, device=device, dtype=torch.long)
            noise = torch.randn(images.shape, generator=g, device=device)
            noisy = scheduler.add_noise(images, noise, t_batch)
            _, features = denoiser(noisy, condition, t_batch)
            delta, _ = head(features, condition, denoiser.embed_time(t_batch))
            total += loss_weights(generator.weighting, foreground, delta.float(), step)
    denoiser.train(was_training), head.train(was_training)
    return (total / len(timesteps))[:, 0].cpu().numpy()


def snapshot_items(segmentations: torch.Tensor, count: int = SNAPSHOT_MASKS) -> List[int]:
    """A fixed set of training items with foreground (evenly spread over the items) to show weight maps of."""
    with_fg = np.flatnonzero(segmentations.flatten(1).amax(1).numpy() > 0)
    pool = with_fg if len(with_fg) else np.arange(len(segmentations))
    k = min(count, len(pool))
    return [int(pool[i]) for i in np.linspace(0, len(pool) - 1, k).round().astype(int)]


def snapshot_steps(count: int, iterations: int) -> Set[int]:
    """``count`` steps evenly spaced from 0 to ``iterations``, where the weight maps are snapshot."""
    return set(np.linspace(0, iterations, count).round().astype(int).tolist())
