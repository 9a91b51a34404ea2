"""Copy-paste augmentation (TumorCP, Yang et al., MICCAI 2021): a lesion of another training case pasted into a
training sample inside nnU-Net's data loading, so that the augmentation workers carry the cost.

:func:`collect_lesions` cuts every lesion (a connected component of the lesion label, by default the highest
foreground label: KiTS's tumour, Kvasir's polyp) out of the cases it is given; the trainer gives it nnU-Net's
training dataset of the fold, so no validation case's lesion can reach a training batch. :class:`CopyPasteTransform`,
the first of nnU-Net's training transforms (it sees the patch as the data loader cropped it, before nnU-Net's own
augmentation), pastes with probability p per sample one lesion of another case (:class:`HostTracking` names the
case the sample comes from):

* jittered as TumorCP does, each jitter with TumorCP's probability 0.5: gamma 0.7-1.5 and a Gaussian blur on its
  intensities, scaling 0.85-1.25 and a rotation (nnU-Net's rotation range of the configuration; both in plane where
  nnU-Net augments a 3D configuration slice by slice), and mirroring along nnU-Net's mirror axes;
* where the patch shows image (not the data loader's padding) and no lesion, with the lesion's centre inside the
  network's patch (the middle of the data loader's larger patch, what nnU-Net's spatial transform keeps when it
  neither rotates nor scales), and on the organ when the dataset's lesions lie in one (KiTS: the kidney, which
  borders most tumours) and the patch shows it; uniformly among such places;
* with a soft edge on the image (alpha-blended through the mask blurred by a Gaussian of one voxel, as Hu et al.
  (CVPR 2023) blur synthetic tumours' edges), while the label stays exact: the lesion label wherever the jittered
  mask is on. Segmentations hold integer labels at this point (nnU-Net makes regions later), so region datasets
  (KiTS: kidney = 1 + 2, tumour = 2) take the pasted label as they take any other.

Random numbers come from numpy's and torch's global generators, which nnU-Net's data loader and transforms draw
from too: a seeded run (nnU-Net's single-threaded augmenter, see order_trainers) is reproducible, and each of
nnU-Net's augmentation workers reseeds numpy.
"""
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar, sample_scalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.spatial.spatial import create_affine_matrix_2d, create_affine_matrix_3d
from scipy import ndimage
from scipy.signal import fftconvolve

JITTER_PROBABILITY = 0.5  # TumorCP's p_trans, for each jitter of a pasted lesion
SCALE = (0.85, 1.25)  # TumorCP's
GAMMA = (0.7, 1.5)  # TumorCP's
BLUR_SIGMA = (0.5, 1.0)  # voxels: nnU-Net's own blur range
EDGE_SIGMA = 1.0  # voxels: the Gaussian that softens a pasted lesion's edge on the image
MARGIN = 4  # voxels of a lesion's surroundings kept around it: as far as its soft edge reaches (4 EDGE_SIGMA)
MIN_LESION_VOXELS = 10  # smaller specks (annotation noise, a lesion's last slice) are not worth pasting
DONOR_ATTEMPTS = 4  # lesions drawn for one paste, each smaller than the last, while none fits the patch
PLACEMENT_DRAWS = 8  # random places tried before the map of every free place is computed (costly in 3D)


@dataclass(frozen=True)
class Lesion:
    case: str
    image: np.ndarray  # (channels, *size) float32: the lesion's bounding box and MARGIN voxels around it
    mask: np.ndarray  # (*size) bool: the lesion's voxels

    @property
    def size(self) -> int:
        return self.mask.size  # of its box: what must fit into the patch


@dataclass(frozen=True, repr=False)
class LesionBank:
    lesions: List[Lesion]
    label: int  # the lesions' label, which a pasted one gets
    organ_label: Optional[int]  # the label the lesions lie in (KiTS: kidney), None when they lie in no one label

    def __repr__(self) -> str:
        # nnU-Net's debug.json prints the training transforms: a summary, not every lesion's voxels
        return (f"LesionBank({len(self.lesions)} lesions of label {self.label} from "
                f"{len({lesion.case for lesion in self.lesions})} cases, organ label {self.organ_label})")


@dataclass(frozen=True)
class Paste:
    box: Tuple[slice, ...]  # where in the patch
    image: np.ndarray  # (channels, *box size)
    mask: np.ndarray  # (*box size) bool: where the label is set
    alpha: np.ndarray  # (*box size): the blurred mask, the lesion's weight on the image


def collect_lesions(dataset, label: int, patch_size: Sequence[int], cases: Optional[Sequence[str]] = None
                    ) -> LesionBank:
    """The lesions of ``dataset``'s cases (nnU-Net's dataset: ``identifiers``, ``load_case``; ``cases``: some of
    its identifiers, default all): every connected
    component of ``label`` of at least MIN_LESION_VOXELS voxels that fits the network's ``patch_size`` (2D patches
    of 3D cases: slice by slice), and the organ they lie in: the foreground label bordering most of them, if it
    borders at least half. The lesions are held in memory (a few voxels each), which nnU-Net's forked augmentation
    workers share."""
    slice_wise = len(patch_size) == 2  # a 2D configuration crops slices: of 3D cases, or of 2D ones (1, x, y)
    structure = ndimage.generate_binary_structure(3, 1)
    if slice_wise:
        structure[[0, 2]] = False  # no neighbours across slices
    margins = (0, MARGIN, MARGIN) if slice_wise else (MARGIN,) * 3
    lesions, bordering = [], Counter()
    for case in dataset.identifiers if cases is None else cases:
        data, seg, _, _ = dataset.load_case(case)
        seg = np.asarray(seg[0])  # nnU-Net's blosc2 arrays decompress on reading
        components, _ = ndimage.label(seg == label, structure)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            size = [s.stop - s.start for s in box][-len(patch_size):]
            if np.count_nonzero(components[box] == index) < MIN_LESION_VOXELS or \
                    any(n > p for n, p in zip(size, patch_size)):
                continue
            grown = tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, n, m in zip(box, seg.shape, margins))
            # a lesion at the image's border keeps its full margin: its outermost voxels repeated
            padding = [(m - (s.start - g.start), m - (g.stop - s.stop)) for s, g, m in zip(box, grown, margins)]
            image = np.pad(np.asarray(data[(slice(None), *grown)], dtype=np.float32), [(0, 0)] + padding,
                           mode="edge")
            mask = np.pad(components[grown] == index, padding)
            labels = np.pad(seg[grown], padding, constant_values=-1)
            if slice_wise:
                image, mask, labels = image[:, 0], mask[0], labels[0]
            ring = labels[ndimage.binary_dilation(mask) & ~mask]
            # -1: outside the image, or outside nnU-Net's nonzero mask (use_mask_for_norm)
            bordering.update(set(np.unique(ring).tolist()) - {0, label, -1})
            lesions.append(Lesion(case, image, mask))
    organ = [organ for organ, count in bordering.most_common(1) if 2 * count >= len(lesions)]
    return LesionBank(lesions, label, organ[0] if organ else None)


class HostTracking:
    """nnU-Net's training dataset as its data loader uses it (``identifiers``, ``load_case``), telling the copy-paste
    transform which case the loader crops its next sample from, so that a case never gets its own lesion."""

    def __init__(self, dataset, transform: "CopyPasteTransform"):
        self.dataset = dataset
        self.identifiers = dataset.identifiers
        self.transform = transform

    def load_case(self, identifier: str):
        self.transform.host = identifier
        return self.dataset.load_case(identifier)


class CopyPasteTransform(BasicTransform):
    """Pastes one lesion of ``bank`` into a sample with probability ``probability`` (module docstring)."""

    def __init__(self, probability: float, patch_size: Sequence[int], rotation: RandomScalar,
                 mirror_axes: Optional[Sequence[int]], in_plane_only: bool):
        super().__init__()
        self.probability = probability
        self.patch_size = tuple(patch_size)  # the network's patch, in the middle of the data loader's larger one
        self.rotation = rotation  # nnU-Net's rotation range (radians) of the configuration
        self.mirror_axes = tuple(mirror_axes or ())
        self.in_plane_only = in_plane_only  # nnU-Net augments this 3D configuration slice by slice
        self.gamma = GammaTransform(GAMMA, p_invert_image=0, synchronize_channels=False, p_per_channel=1,
                                    p_retain_stats=1)
        self.bank: Optional[LesionBank] = None  # set once nnU-Net has split the cases into training and validation
        self.host: Optional[str] = None  # the case the sample comes from (HostTracking)

    def get_parameters(self, **data_dict) -> dict:
        # p = 0 draws no random number, so that the run is the one without copy-paste, batch for batch
        if self.probability == 0 or np.random.uniform() >= self.probability:
            return {"paste": None}
        assert self.bank is not None, "no lesions to paste: nnU-Net made the data loader before splitting the cases"
        host = data_dict["segmentation"][0].numpy()
        donors = [lesion for lesion in self.bank.lesions if lesion.case != self.host]
        for _ in range(DONOR_ATTEMPTS):
            if not donors:
                break
            donor = donors[np.random.randint(len(donors))]
            image, mask = self.jitter(donor)
            corner = self.place(mask, host) if mask.any() else None
            if corner is not None:
                box = tuple(slice(c, c + n) for c, n in zip(corner, mask.shape))
                alpha = ndimage.gaussian_filter(mask.astype(np.float32), self.sigmas(EDGE_SIGMA, mask.ndim),
                                                mode="constant")
                return {"paste": Paste(box, image, mask, alpha)}
            # a patch full of lesion or padding may still hold a smaller one
            donors = [lesion for lesion in donors if lesion.size < donor.size]
        return {"paste": None}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        paste: Optional[Paste] = params["paste"]
        if paste is not None:
            alpha = torch.from_numpy(paste.alpha)
            img[(slice(None), *paste.box)].mul_(1 - alpha).add_(alpha * torch.from_numpy(paste.image))
        return img

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        paste: Optional[Paste] = params["paste"]
        if paste is not None:  # channel 0: the labels (a cascade's channel 1, the previous stage, has no lesion)
            segmentation[0][paste.box][torch.from_numpy(paste.mask)] = self.bank.label
        return segmentation

    def sigmas(self, sigma: float, ndim: int) -> List[float]:
        """A Gaussian's sigma per spatial axis: none across slices where nnU-Net augments slice by slice."""
        return [0.0] + [sigma] * (ndim - 1) if self.in_plane_only else [sigma] * ndim

    def jitter(self, lesion: Lesion) -> Tuple[np.ndarray, np.ndarray]:
        """The lesion's image and mask, jittered (module docstring) and cropped to the mask and MARGIN voxels."""
        image, mask = lesion.image.copy(), lesion.mask
        ndim = mask.ndim
        if np.random.uniform() < JITTER_PROBABILITY:
            image = self.gamma(image=torch.from_numpy(image))["image"].numpy()
        if np.random.uniform() < JITTER_PROBABILITY:
            image = ndimage.gaussian_filter(image, [0.0] + self.sigmas(np.random.uniform(*BLUR_SIGMA), ndim))
        scale = np.random.uniform(*SCALE) if np.random.uniform() < JITTER_PROBABILITY else 1.0
        scales = [1.0, scale, scale] if self.in_plane_only else [scale] * ndim
        angles = [0.0] * 3
        if np.random.uniform() < JITTER_PROBABILITY:
            # create_affine_matrix_3d's first angle turns within the slice (axes 1 and 2)
            axes = 1 if ndim == 2 or self.in_plane_only else 3
            angles[:axes] = [sample_scalar(self.rotation) for _ in range(axes)]
        matrix = create_affine_matrix_2d(angles[0], scales) if ndim == 2 else create_affine_matrix_3d(angles, scales)
        if not np.allclose(matrix, np.eye(ndim)):
            image, mask = warp(image, mask, matrix)
        flips = [axis + 1 for axis in self.mirror_axes if np.random.uniform() < 0.5]
        image, mask = np.flip(image, flips), np.flip(mask, [axis - 1 for axis in flips])
        if not mask.any():  # scaled down to nothing
            return image, mask
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        grown = tuple(slice(max(0, s.start - MARGIN), s.stop + MARGIN) for s in box)
        return np.ascontiguousarray(image[(slice(None), *grown)]), np.ascontiguousarray(mask[grown])

    def place(self, mask: np.ndarray, host: np.ndarray) -> Optional[Tuple[int, ...]]:
        """The first corner of the lesion's box in the patch: uniformly among the places where the box lies in the
        patch, the mask touches no lesion and no padding, and its centre lies in the network's patch (and on the
        organ, where any such place is); None where there is no such place."""
        blocked = (host == self.bank.label) | (host < 0)
        size, shape = np.array(mask.shape), np.array(host.shape)
        middle, network_patch = size // 2, np.array(self.patch_size[-host.ndim:])
        low = np.maximum((shape - network_patch) // 2 - middle, 0)
        high = np.minimum((shape + network_patch) // 2 - middle, shape - size + 1)  # exclusive
        if np.any(high <= low):
            return None
        centres = tuple(slice(lo + m, hi + m) for lo, hi, m in zip(low, high, middle))  # of the corners' boxes
        free = ~blocked[centres]
        choices = [free]
        if self.bank.organ_label is not None:
            on_organ = free & (host[centres] == self.bank.organ_label)
            if on_organ.any():
                choices.insert(0, on_organ)
        for candidates in choices:
            corner = self.fitting_corner(candidates, low, high, mask, blocked)
            if corner is not None:
                return corner
        return None

    @staticmethod
    def fitting_corner(candidates: np.ndarray, low: np.ndarray, high: np.ndarray, mask: np.ndarray,
                       blocked: np.ndarray) -> Optional[Tuple[int, ...]]:
        """A corner drawn uniformly among the ``candidates`` (corners ``low`` .. ``high``) where ``mask`` touches
        nothing ``blocked``: random candidates are tried first, and where none fits, every place is computed at once
        (a correlation of the blocked voxels with the mask). Both pick uniformly among the fitting candidates."""
        flat = np.flatnonzero(candidates)
        if flat.size == 0:
            return None
        for index in np.random.randint(flat.size, size=PLACEMENT_DRAWS):
            corner = low + np.unravel_index(flat[index], candidates.shape)
            if not blocked[tuple(slice(c, c + n) for c, n in zip(corner, mask.shape))][mask].any():
                return tuple(corner.tolist())
        region = blocked[tuple(slice(lo, hi + n - 1) for lo, hi, n in zip(low, high, mask.shape))]
        overlap = fftconvolve(region.astype(np.float32), mask[(slice(None, None, -1),) * mask.ndim].astype(np.float32),
                              mode="valid")
        fitting = np.flatnonzero(candidates & (overlap < 0.5))  # counts of overlapping voxels, up to rounding
        if fitting.size == 0:
            return None
        return tuple((low + np.unravel_index(fitting[np.random.randint(fitting.size)], candidates.shape)).tolist())


def warp(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` (channels, *shape) and ``mask`` mapped by ``matrix`` about their centre into the box that holds all
    of the result (linear interpolation; the mask thresholded at one half; the image's border values extended)."""
    shape = np.array(mask.shape)
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape]))) - (shape - 1) / 2
    out_shape = tuple(np.ceil(2 * np.abs(corners @ matrix.T).max(0) + 1).astype(int))
    inverse = np.linalg.inv(matrix)
    offset = (shape - 1) / 2 - inverse @ ((np.array(out_shape) - 1) / 2)

    def resample(array: np.ndarray, mode: str) -> np.ndarray:
        return ndimage.affine_transform(array, inverse, offset, out_shape, order=1, mode=mode)

    warped = np.stack([resample(channel, "nearest") for channel in image])
    return warped, resample(mask.astype(np.float32), "constant") > 0.5
