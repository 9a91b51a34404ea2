"""Training data of the LAW generator: a dataset's *training* cases from nnU-Net raw, normalised as the plans say.

* Cases: ``$nnUNet_raw/DatasetXXX/imagesTr`` + ``labelsTr`` (or the ``dataset`` entry of dataset.json), read with
  the dataset's own nnU-Net reader. With a fold, only that fold's training cases of
  ``$nnUNet_preprocessed/DatasetXXX/splits_final.json`` (:func:`~nnunet_laworder.law.splits.fold_split`: created
  as ``nnUNetTrainer.do_split`` does when it is missing, so nnU-Net later trains on the same folds and LAW never
  sees a validation case).
* Intensities: :class:`IntensityNormaliser` from the plans and configuration.
* Layout (:func:`choose_layout`):

  - ``2d``: 2D data (the reader gives ``(C, 1, H, W)``): images resized to ``image_size`` (bilinear, antialiased;
    masks nearest).
  - ``3d``: small 3D volumes (the plans' median shape has at most 64**3 voxels, e.g. Hippocampus): whole volumes,
    padded / cropped (around the foreground) to ``image_size`` (default: the median shape rounded up to the
    denoiser's divisor).
  - ``slices``: large 3D volumes (e.g. KiTS CT): 2D slices along the plans' out-of-plane axis
    (``transpose_forward[0]``), resized to ``image_size``; every slice with foreground is kept plus a seeded
    fraction of the empty ones.

  That is the ``whole`` mode (the paper's). In the ``inpaint`` mode (:mod:`~nnunet_laworder.law.inpainting`)
  nothing is resized: ``image_size`` is a window at the source's resolution, and each item (2D image, slice or
  volume) is a crop a little larger than the window around its lesion.

:class:`BatchSampler` draws random batches with random flips; everything it draws is a function of
``(seed, step)`` so that a resumed training continues exactly and data-parallel ranks agree on the global batch.
"""
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.generator import Layout, foreground_labels
from nnunet_laworder.law.inpainting import (conditioning, context_jitter, default_margin, dilate, training_holes,
                                            window_around)
from nnunet_laworder.law.intensity import IntensityNormaliser
from nnunet_laworder.law.options import INPAINT, MODES, WHOLE
from nnunet_laworder.law.splits import fold_split
from nnunet_laworder.nnunet_folders import (DEFAULT_PLANS, check_configuration, default_configuration, plans_file,
                                            preprocessed_dataset_folder, raw_dataset_folder, read_json)

SMALL_3D_VOXELS = 64 ** 3
LAYOUTS = ("auto", "2d", "3d", "slices")


# ---------------------------------------------------------------------------------------------------------------
# cases


def training_files(raw_folder: Path, dataset_json: dict) -> Dict[str, dict]:
    """``{case id: {"images": [...], "label": ...}}`` of the training cases, as nnU-Net's preprocessing lists them."""
    if "dataset" not in dataset_json and not (raw_folder / "imagesTr").is_dir():
        raise InputError(f"{raw_folder / 'imagesTr'} not found")
    files = get_filenames_of_train_images_and_targets(str(raw_folder), dict(dataset_json))
    if not files:
        raise InputError(f"no training cases in {raw_folder / 'imagesTr'} (file ending "
                         f"{dataset_json.get('file_ending')})")
    for case, entry in files.items():  # (one RGB png holds 3 channels: channel counts are checked once read)
        missing = [f for f in (*entry["images"], entry["label"]) if not os.path.isfile(f)]
        if missing:
            raise InputError(f"training case {case}: file not found: {missing[0]}")
    return files


# ---------------------------------------------------------------------------------------------------------------
# layout


def round_up(value: float, divisor: int) -> int:
    return int(max(divisor, int(np.ceil(value / divisor)) * divisor))


def choose_layout(plans: dict, configuration: str, requested: str = "auto") -> Tuple[str, Optional[int]]:
    """``("2d" | "3d" | "slices", slice axis or None)`` for a dataset, from its plans (see the module doc)."""
    if requested not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}, got {requested!r}")
    median = [float(v) for v in plans.get("original_median_shape_after_transp") or
              plans["configurations"][configuration]["median_image_size_in_voxels"]]
    is_2d_data = len(median) == 2 or median[0] <= 1
    if requested == "auto":
        requested = "2d" if is_2d_data else "3d" if np.prod(median) <= SMALL_3D_VOXELS else "slices"
    if is_2d_data and requested != "2d":
        raise InputError(f"the dataset holds 2D images; layout {requested!r} needs 3D volumes")
    axis = int(plans.get("transpose_forward", [0, 1, 2])[0]) if requested == "slices" else None
    return requested, axis


# ---------------------------------------------------------------------------------------------------------------
# resizing, padding


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(C, *spatial)`` float -> ``(C, *size)``, (bi/tri)linear, antialiased when shrinking 2D images."""
    if tuple(image.shape[1:]) == tuple(size):
        return image.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    x = F.interpolate(x, size=tuple(size), mode=mode, align_corners=False, antialias=len(size) == 2)
    return x[0].numpy()


def resize_segmentation(seg: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(*spatial)`` integer labels -> ``(*size)``, nearest neighbour."""
    if tuple(seg.shape) == tuple(size):
        return seg
    x = torch.from_numpy(np.ascontiguousarray(seg).astype(np.float32))[None, None]
    return F.interpolate(x, size=tuple(size), mode="nearest-exact")[0, 0].numpy().round().astype(seg.dtype)


def _window(length: int, target: int, centre: float) -> Tuple[int, int]:
    """Start of a crop of ``target`` in ``length`` centred on ``centre`` (clamped to the volume)."""
    start = int(round(centre - target / 2))
    return max(0, min(start, length - target)), target


def pad_or_crop(image: Optional[np.ndarray], seg: np.ndarray, size: Sequence[int]
                ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """Crop (around the foreground's centre) or pad (centred; images with their per-channel minimum, masks with
    background) ``seg (*spatial)`` and ``image (C, *spatial)`` to ``size``."""
    fg = np.argwhere(seg > 0)
    centre = (fg.min(0) + fg.max(0) + 1) / 2 if len(fg) else np.array(seg.shape) / 2
    crop = []
    for axis, (length, target) in enumerate(zip(seg.shape, size)):
        start = _window(length, target, centre[axis])[0] if length > target else 0
        crop.append(slice(start, start + min(length, target)))
    seg = seg[tuple(crop)]
    if image is not None:
        image = image[(slice(None), *crop)]
    pads = [((t - s) // 2, t - s - (t - s) // 2) for s, t in zip(seg.shape, size)]
    if any(p != (0, 0) for p in pads):
        seg = np.pad(seg, pads)
        if image is not None:
            image = np.stack([np.pad(c, pads, constant_values=c.min()) for c in image])
    return image, seg


def fit_to_layout(image: Optional[np.ndarray], seg: np.ndarray, layout: Layout
                  ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """One 2D image / slice ``(C, H, W)`` + ``(H, W)`` or one volume ``(C, D, H, W)`` + ``(D, H, W)`` brought to
    ``layout.image_size`` as the training data is (resize for 2D layouts, pad / crop for 3D); ``image`` may be
    None (conditioning masks only)."""
    size = list(layout.image_size)
    if layout.dim == 2:
        return (None if image is None else resize_image(image, size)), resize_segmentation(seg, size)
    return pad_or_crop(image, seg, size)


def _planes(raw_cases: list, kind: str, slice_axis: Optional[int], empty_slice_fraction: float,
            rng: np.random.Generator) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """``(item, image (C, *spatial), segmentation (*spatial))`` at the source's resolution: 2D images, volumes, or
    the slices of a slice-wise layout (every slice with foreground plus a seeded fraction of the empty ones)."""
    for case, image, seg, _ in raw_cases:
        if kind == "2d":
            yield case, image[:, 0], seg[0]
        elif kind == "3d":
            yield case, image, seg
        else:
            image, seg = np.moveaxis(image, 1 + slice_axis, 1), np.moveaxis(seg, slice_axis, 0)
            has_fg = seg.reshape(seg.shape[0], -1).max(1) > 0
            empty = np.flatnonzero(~has_fg)
            keep = set(np.flatnonzero(has_fg).tolist())
            keep |= set(rng.choice(empty, int(round(empty_slice_fraction * len(empty))), replace=False).tolist())
            for i in sorted(keep):
                yield f"{case}@{i}", image[:, i], seg[i]


def _plane_shape(seg: np.ndarray, kind: str, slice_axis: Optional[int]) -> Tuple[int, ...]:
    if kind == "2d":
        return tuple(seg.shape[1:])
    return tuple(seg.shape) if kind == "3d" else tuple(np.delete(seg.shape, slice_axis))


def _per_axis(image_size: Optional[Sequence[int]], kind: str) -> Optional[List[int]]:
    """``--image-size`` with one value per axis of the layout ``kind`` (3 for ``3d``, else 2); a single value is
    that size on every axis. Checked before any case is read."""
    if image_size is None:
        return None
    axes = 3 if kind == "3d" else 2
    if len(image_size) == 1:
        return [int(image_size[0])] * axes
    if len(image_size) != axes:
        raise InputError(f"the {kind} layout needs --image-size with 1 or {axes} values, got "
                         f"{' '.join(map(str, image_size))}")
    return [int(v) for v in image_size]


def _check_divisible(size: Sequence[int], divisor: int) -> None:
    if any(s % divisor for s in size):
        raise InputError(f"--image-size {' '.join(map(str, size))} must be divisible by {divisor} (the denoiser "
                         f"halves the size {int(np.log2(divisor))} times)")


def _window_sizes(raw_cases: list, kind: str, slice_axis: Optional[int], image_size: Optional[Sequence[int]],
                  divisor: int, files: Dict[str, dict]) -> Tuple[List[int], List[int]]:
    """(window, context crop) of the inpainting mode. The window is ``image_size`` (default: 128 per axis for 2D,
    64 for 3D, at most the smallest image rounded down to ``divisor``); a window larger than an image is an error
    naming it. Training items are crops of the window plus :func:`context_jitter` each way around their lesion
    (less where the images are smaller), so every step sees the lesion at a new place in the window."""
    shapes = {case: _plane_shape(seg, kind, slice_axis) for case, _, seg, _ in raw_cases}
    smallest = np.min(np.array(list(shapes.values())), axis=0)
    if image_size is None:
        cap = 64 if kind == "3d" else 128
        window = [max(divisor, min(cap, int(s) // divisor * divisor)) for s in smallest]
    else:
        window = list(image_size)
    for case, shape in shapes.items():
        if any(w > s for w, s in zip(window, shape)):
            raise InputError(f"training case {case}: the inpainting window {'x'.join(map(str, window))} (--image-size) "
                             f"is larger than its image {'x'.join(map(str, shape))} ({files[case]['images'][0]}); "
                             f"choose a smaller --image-size")
    jitter = context_jitter(window)
    return window, [int(min(w + 2 * jitter, s)) for w, s in zip(window, smallest)]


def _context_crop(image: np.ndarray, seg: np.ndarray, size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    box = window_around(seg, size)
    return image[(slice(None), *box)], seg[box]


def _resized(image: np.ndarray, seg: np.ndarray, size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    return resize_image(image, size), resize_segmentation(seg, size)


# ---------------------------------------------------------------------------------------------------------------
# loading


@dataclass
class TrainingData:
    images: torch.Tensor  # (N, C, *size) float32, normalised
    segmentations: torch.Tensor  # (N, *size) int16 label values
    items: List[str]  # per item: case id, or "case@slice" for slice-wise layouts
    cases: List[str]  # the training cases used (a fold's training cases when a fold was given)
    validation_cases: List[str]  # the cases excluded as the fold's validation cases
    layout: Layout
    normaliser: IntensityNormaliser
    dataset_name: str
    configuration: str
    extra: dict = field(default_factory=dict)

    @property
    def image_channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.items)


def _read(reader, entry: dict, case: str) -> Tuple[np.ndarray, np.ndarray, dict]:
    try:
        image, properties = reader.read_images(entry["images"])
    except Exception as e:  # noqa: BLE001 - any failure of the reader is an unreadable input file
        raise InputError(f"training case {case}: cannot read {', '.join(entry['images'])}: {e}") from None
    try:
        seg, _ = reader.read_seg(entry["label"])
    except Exception as e:  # noqa: BLE001
        raise InputError(f"training case {case}: cannot read {entry['label']}: {e}") from None
    if tuple(image.shape[1:]) != tuple(seg.shape[1:]):
        raise InputError(f"training case {case}: image {entry['images'][0]} has shape {tuple(image.shape[1:])} but "
                         f"label {entry['label']} has shape {tuple(seg.shape[1:])}")
    return image, seg[0], properties


def load_training_data(dataset: str, configuration: Optional[str] = None, fold: Union[int, str, None] = None,
                       plans_name: str = DEFAULT_PLANS, image_size: Optional[Sequence[int]] = None,
                       layout: str = "auto", divisor: int = 4, empty_slice_fraction: float = 0.1, seed: int = 0,
                       progress: bool = False, mode: str = WHOLE) -> TrainingData:
    """Read, check and normalise a dataset's training cases (all of them, or a fold's) for LAW training.

    Every case is read and checked before anything is trained: unreadable files, image / label shape mismatches,
    channel counts and label values outside dataset.json end here with an :class:`InputError` naming the file.
    ``mode`` ``inpaint``: ``image_size`` is the window at the source's resolution and the items are context crops
    around the lesions (see :func:`_window_sizes`); ``whole``: the images brought to ``image_size`` (module doc).
    """
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    preprocessed = preprocessed_dataset_folder(dataset)
    raw = raw_dataset_folder(dataset)
    plans_path = plans_file(dataset, plans_name)
    plans = read_json(plans_path)
    configuration = configuration or default_configuration(plans)
    check_configuration(plans, configuration, str(plans_path))
    dataset_json = read_json(raw / "dataset.json")
    labels = foreground_labels(dataset_json)
    if not labels:
        raise InputError(f"{raw / 'dataset.json'} declares no foreground label")
    normaliser = IntensityNormaliser.from_plans(plans, configuration)
    kind, slice_axis = choose_layout(plans, configuration, layout)
    image_size = _per_axis(image_size, kind)
    if image_size is not None:
        _check_divisible(image_size, divisor)

    files = training_files(raw, dataset_json)
    if fold is None:
        cases, validation = sorted(files), []
    else:
        cases, validation = fold_split(preprocessed, list(files), fold)
    cases, validation = sorted(map(str, cases)), sorted(map(str, validation))
    first = files[cases[0]]
    reader = determine_reader_writer_from_dataset_json(dataset_json, first["images"][0], verbose=False)()
    allowed = {0, *labels, *([dataset_json["labels"]["ignore"]] if "ignore" in dataset_json["labels"] else [])}

    raw_cases = []
    for case in tqdm(cases, desc="reading cases", disable=not progress, leave=False):
        entry = files[case]
        image, seg, properties = _read(reader, entry, case)
        if image.shape[0] != len(normaliser.channels):
            raise InputError(f"training case {case}: {len(entry['images'])} image file(s) give {image.shape[0]} "
                             f"channels, the plans normalise {len(normaliser.channels)}")
        values = set(np.unique(seg).astype(int).tolist())
        if not values <= allowed:
            raise InputError(f"training case {case}: label {entry['label']} holds values "
                             f"{sorted(values - allowed)} that dataset.json does not declare")
        if kind == "2d" and image.shape[1] != 1:
            raise InputError(f"training case {case}: {entry['images'][0]} is a volume {tuple(image.shape[1:])} in a "
                             f"2D dataset")
        raw_cases.append((case, normaliser.forward(image.astype(np.float32)), seg.astype(np.int16),
                          properties.get("spacing")))

    rng = np.random.default_rng(seed)
    if mode == INPAINT:
        size, context = _window_sizes(raw_cases, kind, slice_axis, image_size, divisor, files)
        fit = partial(_context_crop, size=context)
    elif kind == "3d":
        shapes = np.array([seg.shape for _, _, seg, _ in raw_cases])
        size = list(image_size or [round_up(v, divisor) for v in np.median(shapes, axis=0)])
        fit = partial(pad_or_crop, size=size)
    else:
        size = list(image_size or (128, 128))
        fit = partial(_resized, size=size)
    _check_divisible(size, divisor)  # also a default size, which the data gave
    items, images, segs = [], [], []
    for item, image, seg in _planes(raw_cases, kind, slice_axis, empty_slice_fraction, rng):
        image, seg = fit(image, seg)
        items.append(item), images.append(image), segs.append(seg)
    if not items:
        raise InputError(f"no training images left for dataset {dataset}")
    spacings = [s for *_, s in raw_cases if s is not None]
    extra = {"dataset": raw.name, "configuration": configuration, "plans": plans_name, "fold": fold,
             "layout": kind, "cases": cases,
             "median_spacing": np.median(np.array(spacings), 0).tolist() if spacings else None}
    layout_obj = Layout(2 if kind != "3d" else 3, [int(s) for s in size], labels, slice_axis,
                        dataset_json["file_ending"], extra, mode)
    return TrainingData(torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(segs)), items, cases,
                        validation, layout_obj, normaliser, raw.name, configuration)


# ---------------------------------------------------------------------------------------------------------------
# batches


class BatchSampler:
    """Random batches with random flips along every spatial axis, a pure function of ``(seed, step)``.

    Each batch is ``(normalised images, conditioning, union foreground (B, 1, *size))``: the conditioning is the
    one-hot mask (``whole`` mode) or :func:`~nnunet_laworder.law.inpainting.conditioning` of a random window of the
    item's context crop and a random hole (``inpaint`` mode). With data parallelism every rank draws the same
    global batch and keeps its share (``rank::world_size``).
    """

    def __init__(self, data: TrainingData, batch_size: int, seed: int = 0, flips: bool = True):
        if batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        self.data = data
        self.batch_size, self.seed, self.flips = batch_size, seed, flips
        self.labels = torch.tensor(data.layout.labels, dtype=data.segmentations.dtype)
        self.window = list(data.layout.image_size)

    def masks(self, segmentations: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(B, *size)`` labels -> (one-hot ``(B, M, *size)``, union foreground ``(B, 1, *size)``), float32."""
        onehot = (segmentations[:, None] == self.labels.view(1, -1, *([1] * (segmentations.dim() - 1)))).float()
        return onehot, onehot.amax(dim=1, keepdim=True)

    def indices(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        n = len(self.data)
        # an epoch-like draw: without replacement when the batch fits, so small datasets are used evenly
        return torch.randperm(n, generator=g)[:self.batch_size] if self.batch_size <= n else \
            torch.randint(0, n, (self.batch_size,), generator=g)

    def batch(self, step: int, rank: int = 0, world_size: int = 1, device=None):
        """(images, conditioning, union foreground) of training step ``step`` for ``rank``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 7_777_777)
        index = self.indices(step)
        images, segs = self._windows(index, g)
        if self.flips:
            spatial = images.dim() - 2
            flip = torch.rand((len(index), spatial), generator=g) < 0.5
            images, segs = images.clone(), segs.clone()
            for i in range(len(index)):
                axes = [a for a in range(spatial) if flip[i, a]]
                if axes:
                    images[i] = images[i].flip([1 + a for a in axes])
                    segs[i] = segs[i].flip(axes)
        onehot, fg = self.masks(segs)
        holes = training_holes(fg, self.window, g) if self.data.layout.mode == INPAINT else None
        share = slice(rank, None, world_size)
        return self._conditioned(images[share], onehot[share], fg[share], None if holes is None else holes[share],
                                 device)

    def fixed(self, index: Sequence[int], device=None):
        """(images, conditioning, union foreground) of fixed items (weight-map snapshots): the centre window and, for
        inpainting, the lesion dilated by the synthesis margin."""
        images, segs = self._windows(torch.as_tensor(index), None)
        onehot, fg = self.masks(segs)
        holes = dilate(fg, default_margin(self.window)) if self.data.layout.mode == INPAINT else None
        return self._conditioned(images, onehot, fg, holes, device)

    def _windows(self, index: torch.Tensor, generator: Optional[torch.Generator]):
        """Images and labels of the items, cut to the window from their context crops (at random offsets, or
        centred without a generator)."""
        images, segs = self.data.images[index], self.data.segmentations[index]
        context = list(segs.shape[1:])
        if context == self.window:
            return images, segs
        spare = [c - w for c, w in zip(context, self.window)]
        if generator is None:
            offsets = torch.tensor([[s // 2 for s in spare]] * len(index))
        else:
            offsets = (torch.rand((len(index), len(spare)), generator=generator) *
                       (torch.tensor(spare) + 1)).long()
        boxes = [tuple(slice(int(o), int(o) + w) for o, w in zip(row, self.window)) for row in offsets]
        return (torch.stack([images[i][(slice(None), *box)] for i, box in enumerate(boxes)]),
                torch.stack([segs[i][box] for i, box in enumerate(boxes)]))

    @staticmethod
    def _conditioned(images, onehot, fg, holes, device):
        condition = onehot if holes is None else conditioning(onehot, images, holes)
        if device is not None:
            images, condition, fg = images.to(device), condition.to(device), fg.to(device)
        return images, condition, fg
