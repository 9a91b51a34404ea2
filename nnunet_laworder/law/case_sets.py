"""The cases ``law evaluate`` compares, and how they become the 2D images that FID sees.

* :class:`CaseSet`: a raw dataset's training cases (``imagesTr`` / ``labelsTr``, or the ``dataset`` entry of
  dataset.json) with the dataset's own nnU-Net reader.
* Intensities go to [0, 1] the same way for both sets (:func:`intensity_window`): 8-bit natural images
  (png/bmp/tif, ``NaturalImage2DIO``) as ``x / 255``, anything else through the 0.5-99.5 percentile window of the
  *real* images, per channel.
* Three channels are RGB, one channel is repeated to three, other counts give one grey image per channel.
* 3D volumes contribute 2D slices along their first array axis (nnU-Net's z) by :class:`SliceRule`: up to
  ``max_images / cases`` evenly spaced slices per volume. Each set is capped at ``max_images`` (evenly spaced
  cases, deterministic).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.data import training_files
from nnunet_laworder.law.fid import even_subset, to_rgb_images
from nnunet_laworder.law.provenance import Provenance
from nnunet_laworder.nnunet_folders import raw_dataset_folder, read_json

NATURAL_IMAGE_READER = "NaturalImage2DIO"


@dataclass
class CaseSet:
    """Cases of one dataset: ``{case: {"images": [...], "label": ...}}`` plus the dataset's reader."""
    folder: Path
    dataset_json: dict
    files: Dict[str, dict]

    def reader(self):
        first = next(iter(self.files.values()))["images"][0]
        return determine_reader_writer_from_dataset_json(self.dataset_json, first, verbose=False)()


def load_case_set(dataset: str) -> CaseSet:
    """The training cases of the raw dataset ``dataset`` (id or name)."""
    folder = raw_dataset_folder(dataset)
    dataset_json = read_json(folder / "dataset.json")
    return CaseSet(folder, dataset_json, training_files(folder, dataset_json))


def is_natural_image_reader(reader) -> bool:
    return type(reader).__name__ == NATURAL_IMAGE_READER


def read_image(reader, files: List[str], case: str) -> np.ndarray:
    """``(C, Z, Y, X)`` float32 image of a case, or an :class:`InputError` naming its files."""
    try:
        image, _ = reader.read_images(files)
    except Exception as e:  # noqa: BLE001 - any reader failure is an unreadable input
        raise InputError(f"case {case}: cannot read {', '.join(files)}: {e}") from None
    return image.astype(np.float32, copy=False)


def intensity_window(reader, real: CaseSet, cases: List[str], max_cases: int = 20) -> dict:
    """How intensities go to [0, 1] for FID: 0..255 for 8-bit natural images, else the real images' 0.5-99.5
    percentiles per channel (the same window for real and synthetic images)."""
    sample = [read_image(reader, real.files[c]["images"], c) for c in even_subset(cases, max_cases)]
    if is_natural_image_reader(reader) and all(s.min() >= 0 and s.max() <= 255 for s in sample):
        channels = sample[0].shape[0]
        return {"kind": "8-bit (x / 255)", "low": [0.0] * channels, "high": [255.0] * channels}
    rng = np.random.default_rng(0)
    low, high = [], []
    for channel in range(sample[0].shape[0]):
        values = np.concatenate([s[channel].ravel() for s in sample])
        if values.size > 2_000_000:
            values = rng.choice(values, 2_000_000, replace=False)
        lo, hi = np.percentile(values, [0.5, 99.5])
        low.append(float(lo)), high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return {"kind": "real images' 0.5-99.5 percentile window per channel", "low": low, "high": high}


def images_per_slice(channels: int) -> int:
    return 1 if channels in (1, 3) else channels


@dataclass
class SliceRule:
    """How cases become 2D images: a case with a singleton spatial axis (2D images; the one-slice volumes of
    slice-wise generators) is one image; other volumes give slices along ``axis`` (of nnU-Net's (z, y, x) array
    order), only those with foreground when ``foreground_only`` (the sources of slice-wise generators are foreground
    slices, so the real reference is too)."""
    axis: int = 0
    foreground_only: bool = False

    @classmethod
    def from_provenance(cls, provenance: Provenance) -> "SliceRule":
        layout = provenance.layout
        axis = layout.get("slice_axis") if isinstance(layout, dict) else None
        return cls(0, False) if axis is None else cls(int(axis), True)

    def describe(self) -> str:
        return (f"2D images as they are; 3D volumes contribute slices along array axis {self.axis} "
                f"({'only slices with foreground, as the slice-wise generator' if self.foreground_only else 'all'}"
                f", evenly spaced, at most max_images / cases per volume); RGB as is, grey repeated to 3 channels")


def case_planes(image, seg, rule: SliceRule, quota: int) -> list:
    """``(C, Z, Y, X)`` -> up to ``quota`` ``(C, H, W)`` planes by ``rule``; ``seg`` (Z, Y, X) or None."""
    singleton = [axis for axis, n in enumerate(image.shape[1:]) if n == 1]
    if singleton:
        return [np.take(image, 0, axis=1 + singleton[0])]
    moved = np.moveaxis(image, 1 + rule.axis, 1)
    indices = list(range(moved.shape[1]))
    if rule.foreground_only and seg is not None:
        has_fg = np.moveaxis(seg, rule.axis, 0).reshape(moved.shape[1], -1).max(1) > 0
        indices = [i for i in indices if has_fg[i]] or indices
    return [moved[:, i] for i in even_subset(indices, quota)]


def fid_images(reader, case_set: CaseSet, cases: List[str], window: dict, max_images: int, counter: dict,
               rule: SliceRule = SliceRule()):
    """The ``(3, H, W)`` [0, 1] images of ``cases`` for FID (see the module doc), at most ``max_images``;
    ``counter`` gets the numbers of cases and images used."""
    low = np.asarray(window["low"], dtype=np.float32)
    high = np.asarray(window["high"], dtype=np.float32)
    per = images_per_slice(len(low))
    chosen = even_subset(cases, max(1, max_images // per))
    quota = max(1, max_images // (len(chosen) * per))
    counter.update(cases=len(chosen), images=0)
    for case in chosen:
        entry = case_set.files[case]
        image = read_image(reader, entry["images"], case)
        if image.shape[0] != len(low):
            raise InputError(f"case {case} has {image.shape[0]} channels, the real images {len(low)}")
        seg = reader.read_seg(entry["label"])[0][0] if rule.foreground_only else None
        for plane in case_planes(image, seg, rule, quota):
            scaled = np.clip((plane - low.reshape(-1, 1, 1)) / (high - low).reshape(-1, 1, 1), 0, 1)
            for rgb in to_rgb_images(scaled):
                counter["images"] += 1
                yield rgb
