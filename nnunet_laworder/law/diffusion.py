"""Noise schedules and samplers for the LAW generator, from diffusers: a 1000-step DDPM training schedule and
DDIM (default 50 steps) or DPM-Solver++ sampling, from noise or (SDEdit) from a partly noised image. The denoiser
itself knows nothing of them."""
from typing import Optional

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm import tqdm

from nnunet_laworder.law.options import SAMPLER_NAMES

SAMPLERS = dict(zip(SAMPLER_NAMES, (DDIMScheduler, DPMSolverMultistepScheduler)))


def training_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         prediction_type="epsilon", clip_sample=False)


def sampling_scheduler(train_scheduler: DDPMScheduler, sampler: str = "ddim", clip_range: Optional[float] = None):
    """The sampler on the training schedule. ``clip_range``: DDIM clips its predicted clean image to
    ``[-clip_range, clip_range]`` at every step (the normalised range of the data); without it a short-trained
    model's errors compound into saturated colours. DPM-Solver++ has no such clip in diffusers (its thresholding
    rescales to [-1, 1], which z-scored data are not)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ddim" and clip_range is not None:
        return DDIMScheduler.from_config(train_scheduler.config, clip_sample=True, clip_sample_range=clip_range)
    return SAMPLERS[sampler].from_config(train_scheduler.config)


def noisy_batch(scheduler: DDPMScheduler, images: torch.Tensor, generator: Optional[torch.Generator] = None):
    """(noisy images, noise, timesteps) for one training step: uniform timesteps, Gaussian noise."""
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],), generator=generator,
                              device=images.device)
    return scheduler.add_noise(images, noise, timesteps), noise, timesteps


def denoising_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` sampling steps an SDEdit start at ``strength`` runs (diffusers' img2img pipelines:
    ``int(steps * strength)``)."""
    return min(int(steps * strength), steps)


@torch.no_grad()
def sample(model, masks: torch.Tensor, scheduler, steps: int = 50, generator: Optional[torch.Generator] = None,
           progress: bool = False, start: Optional[torch.Tensor] = None, strength: float = 1.0) -> torch.Tensor:
    """Images for one-hot ``masks`` (B, M, *spatial), in the model's normalised intensity space: from pure noise, or
    (``strength`` < 1, SDEdit) from ``start`` (B, C, *spatial) noised to the timestep ``strength`` of the way up the
    sampler's schedule and denoised from there, as diffusers' img2img pipelines do (``get_timesteps``)."""
    shape = (masks.shape[0], model.image_channels, *masks.shape[2:])
    noise = torch.randn(shape, generator=generator, device=masks.device)
    scheduler.set_timesteps(steps, device=masks.device)
    timesteps = scheduler.timesteps
    if strength < 1:
        first = (steps - denoising_steps(steps, strength)) * scheduler.order
        timesteps = timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):  # multistep solvers find their place in the schedule by it
            scheduler.set_begin_index(first)
        x = scheduler.add_noise(start.to(masks.device), noise, timesteps[:1].expand(shape[0]))
    else:
        x = noise * scheduler.init_noise_sigma
    for t in tqdm(timesteps, desc="sampling", disable=not progress, leave=False):
        eps, _ = model(scheduler.scale_model_input(x, t), masks, t.expand(shape[0]))
        x = scheduler.step(eps, t, x).prev_sample
    return x
