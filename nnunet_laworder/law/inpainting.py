"""Lesion-focused generation (``law train --mode inpaint``, the default): the generator learns a fixed-size window
around lesions at the source's own resolution and fills a *hole* in it, given the lesion mask and the real
surroundings; ``law synthesize`` writes the window back into the full-resolution real image.

Why: a whole image generated at 128 px and upsampled to the source's size is blurrier than every real image while
its label keeps full-resolution detail, and a small generator spends its capacity on the endoscope's field of view.
Inpainting only the lesion and its neighbourhood keeps most pixels of a synthetic case real and its label exact
(lesion synthesis in CT does the same, e.g. DiffTumor, CVPR 2024).

The denoiser's conditioning is ``concat(one-hot mask, known image, hole)``: the window's normalised image with the
hole zeroed, and the hole as a 0/1 channel. During training the hole is the lesion dilated by a random margin, plus
(half of the time) a random box, so the model also learns to fill background; in synthesis it is the old and the
new lesion of the window, dilated, so a lesion that moves away is painted over with generated background (``--protocol
add``: the added lesion, dilated; :mod:`~nnunet_laworder.law.lesion_paste`).
Everything here is dimension-generic (2D images and slices, 3D windows of small volumes).
"""
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_laworder.law.options import INPAINT
from nnunet_laworder.law.transforms import TransformConfig, random_transform


def condition_channels(mode: str, image_channels: int, mask_channels: int) -> int:
    """Channels of the denoiser's conditioning input."""
    return mask_channels + (image_channels + 1 if mode == INPAINT else 0)


def default_margin(window: Sequence[int]) -> int:
    """Dilation of the lesion that makes the synthesis hole: a few pixels of background around it (4 at 64 px)."""
    return max(2, int(round(0.06 * float(np.mean(window)))))


def context_jitter(window: Sequence[int]) -> int:
    """How far (each way) a training window may move around its lesion (and a synthesis window around the source's)."""
    return max(1, int(min(window)) // 8)


def window_around(segmentation: np.ndarray, size: Sequence[int], rng: Optional[np.random.Generator] = None,
                  jitter: int = 0) -> Tuple[slice, ...]:
    """A box of ``size`` inside ``segmentation.shape``, centred on the foreground's bounding box (the image centre
    when empty), moved by a uniform ``[-jitter, jitter]`` per axis, clamped to the image."""
    foreground = np.argwhere(segmentation > 0)
    centre = (foreground.min(0) + foreground.max(0) + 1) / 2 if len(foreground) else np.array(segmentation.shape) / 2
    box = []
    for axis, (length, target) in enumerate(zip(segmentation.shape, size)):
        shift = int(rng.integers(-jitter, jitter + 1)) if rng is not None and jitter else 0
        start = int(round(centre[axis] - target / 2)) + shift
        start = max(0, min(start, length - target))
        box.append(slice(start, start + target))
    return tuple(box)


def dilate(region: torch.Tensor, margin: int) -> torch.Tensor:
    """``(B, 1, *spatial)`` 0/1 -> dilated by ``margin`` pixels (a square / cube), same shape."""
    if margin <= 0:
        return region
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[region.dim() - 2]
    return pool(region.float(), 2 * margin + 1, stride=1, padding=margin)


def conditioning(onehot: torch.Tensor, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``concat(one-hot mask, image with the hole zeroed, hole)``: what the inpainting denoiser is conditioned on."""
    return torch.cat([onehot, image * (1 - hole), hole], dim=1)


def training_holes(foreground: torch.Tensor, window: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Holes ``(B, 1, *window)`` of one training batch: each item's lesion dilated by a random margin in
    ``[1, 2 x default_margin]``, united (with probability 1/2, always for an item without lesion) with a random box
    of a quarter to a half of the window per side, so background filling is learned too."""
    batch, dim = foreground.shape[0], foreground.dim() - 2
    upper = 2 * default_margin(window)
    margins = torch.randint(1, upper + 1, (batch,), generator=generator).tolist()
    with_box = torch.rand(batch, generator=generator) < 0.5
    sides = torch.rand((batch, dim), generator=generator) * 0.25 + 0.25
    starts = torch.rand((batch, dim), generator=generator)
    holes = torch.zeros_like(foreground)
    for i in range(batch):
        holes[i] = dilate(foreground[i:i + 1], margins[i])[0]
        if with_box[i] or foreground[i].sum() == 0:
            box = []
            for axis in range(dim):
                side = max(1, int(sides[i, axis] * window[axis]))
                start = int(starts[i, axis] * (window[axis] - side))
                box.append(slice(start, start + side))
            holes[(i, 0, *box)] = 1
    return holes


def synthesis_hole(lesions: np.ndarray, margin: int) -> np.ndarray:
    """The region a synthetic window repaints: ``lesions`` (boolean; moving: the source's and the new lesion, adding:
    the added one) dilated by ``margin`` (boolean, the same shape)."""
    return dilate(torch.from_numpy(lesions.astype(np.float32))[None, None], margin)[0, 0].numpy() > 0


def compose(image: np.ndarray, label: np.ndarray, window: Tuple[slice, ...], hole: np.ndarray,
            generated: np.ndarray, new_label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The synthetic case: ``image (C, *spatial)`` and ``label (*spatial)`` of the source with the window's hole
    replaced by ``generated (C, *window)`` and ``new_label (*window)``. Every pixel outside the hole keeps the
    source's value exactly; lesions of the source outside the hole stay in the label."""
    image, label = image.copy(), label.copy()
    region = (slice(None), *window)
    image[region] = np.where(hole[None], generated, image[region])
    label[window] = np.where(hole, new_label, label[window])
    return image, label


def inpaint_case(image: np.ndarray, segmentation: np.ndarray, window_size: Sequence[int], labels: Sequence[int],
                 normaliser, rng: np.random.Generator, transform_config: TransformConfig,
                 generate: Callable[[torch.Tensor], torch.Tensor]) -> Tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic case from a real one: ``image (C, *spatial)`` (raw intensities) and ``segmentation (*spatial)``
    at the source's resolution. A window around the source's lesion (jittered), a random transform of the window's
    mask as the new lesion, the hole of both, and ``generate(conditioning (1, ., *window))`` -> normalised image
    ``(1, C, *window)`` composed into the source (:func:`compose`). Returns (image, label, parameters: the
    transform, the window and the hole's size)."""
    window = window_around(segmentation, window_size, rng, context_jitter(window_size))
    old = segmentation[window]
    new, params = random_transform(old, rng, transform_config)
    hole = synthesis_hole((old > 0) | (new > 0), default_margin(window_size))
    known = normaliser.forward(image[(slice(None), *window)])
    onehot = torch.from_numpy(np.stack([new == v for v in labels]).astype(np.float32))
    condition = conditioning(onehot[None], torch.from_numpy(known)[None],
                             torch.from_numpy(hole.astype(np.float32))[None, None])
    generated = normaliser.inverse(generate(condition)[0].float().cpu().numpy().astype(np.float64))
    composed, label = compose(image.astype(np.float64), segmentation, window, hole, generated, new)
    params.update(window=[[s.start, s.stop] for s in window], hole_pixels=int(hole.sum()))
    return composed, label, params
