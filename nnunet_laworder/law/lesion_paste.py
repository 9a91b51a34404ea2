"""Adding a lesion (``law synthesize --protocol add``): a real training case, the *host*, keeps its image and labels
and gains one lesion of another training case, the *donor*, jittered and pasted with a soft edge where the host has
no lesion; with ``--strength`` t0 > 0 the LAW generator then harmonises it, SDEdit-style.

Why: moving a case's own lesion paints its old place over with generated texture under a background label, which a
small generator gets wrong. Adding keeps every real lesion, and harmonising a pasted one only asks the generator to
fix seams, colour and texture at the lesion's boundary (TumorCP, MICCAI 2021; DiffTumor, CVPR 2024; SDEdit, ICLR
2022).

Each step is a function of parameters recorded in ``provenance.json`` (:func:`lesion_patch` and :func:`paste`
rebuild a copy-paste case from them):

1. **Cut** (:func:`cut_lesion`): one connected lesion of the donor (drawn in proportion to its size) with its labels
   and pixels, under a random layout transform of :mod:`~nnunet_laworder.law.transforms` (flips, rotation,
   scaling, elastic; the pixels linear), scaled down first when it would not fit the generator's window with the hole
   margin on every side.
2. **Place** (:func:`place`): where the lesion and its margin touch no lesion of the host; for label sets with an
   organ (:func:`lesion_and_organ_labels`, e.g. KiTS kidney around tumour) with at least half of the lesion on the
   host's organ when the host has it.
3. **Paste** (:func:`paste`): the lesion's pixels alpha-blended with its blurred mask (a soft edge: Hu et al., CVPR
   2023), nothing changed outside the lesion dilated by the margin (the *hole*); the label is the host's with the
   lesion's labels where the lesion is.
4. **Harmonise** (:func:`harmonise`, t0 > 0): the generator's window around the lesion, the composite noised to t0
   and denoised with the new label, the real surroundings and the hole as condition (as the move protocol
   conditions); only the hole is written back. t0 = 0 is plain copy-paste, t0 = 1 generates the lesion from noise.

Everything is dimension-generic (2D images and slices, 3D volumes).
"""
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, label as connected_components

from nnunet_laworder.law.generator import one_hot
from nnunet_laworder.law.inpainting import compose, conditioning, default_margin, synthesis_hole, window_around
from nnunet_laworder.law.transforms import TransformConfig, apply_transform, random_transform

ORGAN_FRACTION = 0.5  # an added lesion lies on the host's organ with at least this fraction of its pixels
PLACEMENT_TRIES = 100  # random places tried; when none is free, the one that overlaps the host's lesions least


def lesion_and_organ_labels(dataset_labels: dict) -> Tuple[List[int], List[int]]:
    """(lesion labels, organ labels) of a dataset.json ``labels``. A label is an organ when every region that holds
    it holds another label too, and that one lies in more regions (KiTS: kidney [1, 2] and tumour 2 make 1 the organ
    of 2); every other foreground label is a lesion (every label, without regions)."""
    regions = [set(v if isinstance(v, (list, tuple)) else [v]) for k, v in dataset_labels.items() if k != "ignore"]
    values = sorted({v for region in regions for v in region if v > 0})
    holding = {v: frozenset(i for i, region in enumerate(regions) if v in region) for v in values}
    organs = [v for v in values if any(holding[v] < holding[u] for u in values)]
    return [v for v in values if v not in organs], organs


@dataclass
class LesionPatch:
    """A donor's lesion ready to paste: ``image (C, *box)`` (raw intensities) and ``mask (*box)`` (its labels, 0
    elsewhere), the box being the transformed lesion's bounding box grown by the hole margin."""
    image: np.ndarray
    mask: np.ndarray


def _slices(box: Sequence[Sequence[int]]) -> Tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in box)


def _crop(array: np.ndarray, box: Tuple[slice, ...], mode: str) -> np.ndarray:
    """``array[..., box]`` over its last axes, padded (np.pad ``mode``) where the box reaches outside."""
    lead = array.ndim - len(box)
    inside = tuple(slice(max(0, s.start), min(n, s.stop)) for s, n in zip(box, array.shape[lead:]))
    widths = [(0, 0)] * lead + [(i.start - s.start, s.stop - i.stop) for s, i in zip(box, inside)]
    return np.pad(array[(Ellipsis, *inside)], widths, mode=mode)


def _lesion(segmentation: np.ndarray, lesion_labels: Sequence[int], component: int, components=None) -> np.ndarray:
    """The labels of one connected lesion (scipy's numbering, 1..), 0 elsewhere."""
    if components is None:
        components, _ = connected_components(np.isin(segmentation, lesion_labels))
    return np.where(components == component, segmentation, 0)


def lesion_patch(image: np.ndarray, segmentation: np.ndarray, lesion_labels: Sequence[int],
                 params: dict) -> LesionPatch:
    """The donor's lesion as :func:`cut_lesion`'s ``params`` describe it (a pure function of them): its component,
    the box around it in the donor, the transform, the transformed lesion's box."""
    box = _slices(params["donor_box"])
    mask = apply_transform(_crop(_lesion(segmentation, lesion_labels, params["donor_component"]), box, "constant"),
                           params)
    pixels = np.stack([apply_transform(channel, params, order=1) for channel in _crop(image, box, "edge")])
    lesion = _slices(params["lesion_box"])
    return LesionPatch(pixels[(slice(None), *lesion)], mask[lesion])


def cut_lesion(image: np.ndarray, segmentation: np.ndarray, lesion_labels: Sequence[int],
               window_size: Sequence[int], margin: int, rng: np.random.Generator,
               config: TransformConfig) -> Tuple[LesionPatch, dict]:
    """A random lesion of the donor (``image (C, *spatial)``, ``segmentation (*spatial)``, holding one) under a
    random transform, no larger than the window less ``margin`` on every side: (patch, its parameters)."""
    components, count = connected_components(np.isin(segmentation, lesion_labels))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    component = int(rng.choice(count, p=sizes / sizes.sum())) + 1  # a speck of annotation is rarely drawn
    found = np.argwhere(components == component)
    low, high = found.min(0), found.max(0) + 1
    room = np.asarray(window_size) - 2 * margin
    fit = float(min(1.0, np.min(room / (high - low))))
    # the transform turns about the centre of an array that keeps its shape: a box around the lesion that, scaled by
    # the fit, covers the window
    canvas = np.ceil(np.asarray(window_size) / fit).astype(int)
    start = (low + high - canvas) // 2
    donor_box = [[int(a), int(a + c)] for a, c in zip(start, canvas)]
    mask = _crop(_lesion(segmentation, lesion_labels, component, components), _slices(donor_box), "constant")

    def fits(out: np.ndarray) -> bool:  # the margin inside the canvas on every side, the lesion inside the room
        where = np.argwhere(out > 0)
        a, b = where.min(0), where.max(0) + 1
        return bool((a >= margin).all() and (b <= canvas - margin).all() and (b - a <= room).all())

    jitter = replace(config, scale_range=(config.scale_range[0] * fit, config.scale_range[1] * fit))
    transformed, params = random_transform(mask, rng, jitter, accept=fits)
    if params.get("fallback"):  # the identity at the fitting scale fits by construction
        params["scale"] = fit
        transformed = apply_transform(mask, params)
    where = np.argwhere(transformed > 0)
    lesion_box = [[int(max(a - margin, 0)), int(min(b + margin, c))]
                  for a, b, c in zip(where.min(0), where.max(0) + 1, canvas)]
    params.update(donor_component=component, donor_box=donor_box, fit_scale=fit, lesion_box=lesion_box)
    return lesion_patch(image, segmentation, lesion_labels, params), params


def place(segmentation: np.ndarray, mask: np.ndarray, lesion_labels: Sequence[int], organ_labels: Sequence[int],
          margin: int, rng: np.random.Generator) -> Tuple[Tuple[slice, ...], dict]:
    """Where the patch ``mask`` goes in the host ``segmentation``: (its box, what was found there: the host's lesion
    pixels under the hole and the fraction of the lesion on the host's organ, None without one)."""
    shape, size = np.array(segmentation.shape), np.array(mask.shape)
    hole, lesion = synthesis_hole(mask > 0, margin), mask > 0
    host_lesions = np.isin(segmentation, lesion_labels)
    organ = np.isin(segmentation, organ_labels)
    organ_pixels = np.argwhere(organ)
    best = None
    for _ in range(PLACEMENT_TRIES):
        if len(organ_pixels):  # centred on a random pixel of the organ
            start = np.clip(organ_pixels[rng.integers(len(organ_pixels))] - size // 2, 0, shape - size)
        else:
            start = np.array([rng.integers(0, n - s + 1) for n, s in zip(shape, size)])
        box = tuple(slice(int(a), int(a + s)) for a, s in zip(start, size))
        overlap = int((hole & host_lesions[box]).sum())
        on_organ = float((lesion & organ[box]).sum() / lesion.sum()) if len(organ_pixels) else None
        score = (overlap, 0.0 if on_organ is None else max(0.0, ORGAN_FRACTION - on_organ))
        if best is None or score < best[0]:
            best = (score, box, {"patch_box": [[s.start, s.stop] for s in box], "host_lesion_overlap": overlap,
                                 "organ_fraction": on_organ})
        if score == (0, 0.0):
            break
    return best[1], best[2]


def paste(image: np.ndarray, segmentation: np.ndarray, patch: LesionPatch, box: Tuple[slice, ...],
          margin: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy-paste: (image, label, hole) of the host ``image (C, *spatial)`` and ``segmentation (*spatial)`` with
    the patch at ``box``; the image is float64, every pixel outside the hole (the box's shape) is the host's."""
    lesion = patch.mask > 0
    hole = synthesis_hole(lesion, margin)
    # three sigmas of blur inside the margin; zero outside the hole, so that nothing else changes
    alpha = gaussian_filter(lesion.astype(np.float64), margin / 3) * hole
    image, label = image.astype(np.float64), segmentation.copy()
    region = (slice(None), *box)
    image[region] = alpha * patch.image + (1 - alpha) * image[region]
    label[box] = np.where(lesion, patch.mask, label[box])
    return image, label, hole


def harmonise(image: np.ndarray, label: np.ndarray, window: Tuple[slice, ...], hole: np.ndarray,
              labels: Sequence[int], normaliser, generate: Callable) -> np.ndarray:
    """The composite ``image`` with the ``hole`` of ``window`` (the window's shape) regenerated:
    ``generate(conditioning, start)`` -> ``(1, C, *window)`` normalised, from the normalised composite window
    ``start`` (the noise level is the sampler's business)."""
    known = torch.from_numpy(normaliser.forward(image[(slice(None), *window)]))[None]
    condition = conditioning(torch.from_numpy(one_hot(label[window], list(labels)))[None], known,
                             torch.from_numpy(hole.astype(np.float32))[None, None])
    generated = normaliser.inverse(generate(condition, known)[0].float().cpu().numpy().astype(np.float64))
    return compose(image, label, window, hole, generated, label[window])[0]


@dataclass
class AddedLesions:
    """How ``law synthesize --protocol add`` adds lesions: the generator's window and labels, the dataset's lesion
    and organ labels, the jitter and the harmonisation's strength t0."""
    window_size: List[int]
    labels: List[int]
    lesion_labels: List[int]
    organ_labels: List[int]
    transform_config: TransformConfig
    strength: float

    def add(self, host_image: np.ndarray, host_segmentation: np.ndarray, donor_image: np.ndarray,
            donor_segmentation: np.ndarray, normaliser, rng: np.random.Generator,
            generate: Optional[Callable]) -> Tuple[np.ndarray, np.ndarray, dict]:
        """(image, label, parameters) of the host (``(C, *spatial)`` raw intensities, ``(*spatial)``) with one lesion
        of the donor added; ``generate`` as :func:`harmonise` takes it, never called at strength 0."""
        margin = default_margin(self.window_size)
        patch, params = cut_lesion(donor_image, donor_segmentation, self.lesion_labels, self.window_size, margin,
                                   rng, self.transform_config)
        box, placement = place(host_segmentation, patch.mask, self.lesion_labels, self.organ_labels, margin, rng)
        image, label, hole = paste(host_image, host_segmentation, patch, box, margin)
        marker = np.zeros(label.shape, bool)
        marker[box] = True
        window = window_around(marker, self.window_size)
        params.update(placement, margin=margin, window=[[s.start, s.stop] for s in window],
                      hole_pixels=int(hole.sum()))
        if self.strength > 0:
            window_hole = np.zeros(label[window].shape, bool)
            window_hole[tuple(slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, window))] = hole
            image = harmonise(image, label, window, window_hole, self.labels, normaliser, generate)
        return image, label, params
