"""Shared conversion logic: the nnU-Net raw folder and its atomic output, input checks, the 2D image/mask pipeline."""
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from nnunet_laworder.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# nnU-Net's NaturalImage2DIO reads one png holding all three channels; channel_names still lists each one.
RGB_CHANNELS = {"0": "R", "1": "G", "2": "B"}
MAX_LISTED_PROBLEMS = 20
GREY_FRACTION_LIMIT = 0.02  # share of pixels strictly between 31 and 224 beyond which a mask is not binary
TRAINING_FOLDERS, TEST_FOLDERS = ("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")  # nnU-Net's raw layout


# ---------------------------------------------------------------------------------------------------------------
# errors


def raise_if_problems(problems: Sequence[str], source: Path) -> None:
    """Raise one InputError that lists every problem found in ``source`` (the first few when there are many)."""
    if not problems:
        return
    shown = list(problems[:MAX_LISTED_PROBLEMS])
    if len(problems) > len(shown):
        shown.append(f"... and {len(problems) - len(shown)} more")
    raise InputError(f"{len(problems)} problem(s) in {source}, nothing was written: " + "; ".join(shown))


# ---------------------------------------------------------------------------------------------------------------
# the output dataset


def raw_folder() -> Path:
    """The ``nnUNet_raw`` folder, read at call time (nnunetv2.paths freezes it at import)."""
    value = os.environ.get("nnUNet_raw")
    if not value:
        raise InputError("the environment variable nnUNet_raw is not set; point it at your nnU-Net raw data folder")
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"nnUNet_raw={value} is not a folder; create it or fix the variable")
    return path


@dataclass(frozen=True)
class DatasetTarget:
    """Where a converted dataset goes: ``$nnUNet_raw/DatasetXXX_Name``."""
    raw: Path
    path: Path
    dataset_id: int
    overwrite: bool

    @classmethod
    def resolve(cls, dataset_id: int, name: str, overwrite: bool) -> "DatasetTarget":
        """Check id, name and nnUNet_raw; refuse an existing dataset id unless ``overwrite``."""
        if not 1 <= dataset_id <= 999:
            raise InputError(f"dataset id must be 1..999 (nnU-Net uses 3 digits), got {dataset_id}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise InputError(f"dataset name {name!r} may only hold letters, digits, '_' and '-'")
        raw = raw_folder()
        target = cls(raw, raw / f"Dataset{dataset_id:03d}_{name}", dataset_id, overwrite)
        target.refuse_existing()
        return target

    def existing(self) -> list:
        """Every dataset folder with this id (nnU-Net finds datasets by id, so any name clashes)."""
        return sorted(p for p in self.raw.glob(f"Dataset{self.dataset_id:03d}_*") if p.is_dir())

    def refuse_existing(self) -> None:
        found = self.existing()
        if found and not self.overwrite:
            names = ", ".join(str(p) for p in found)
            raise InputError(f"dataset id {self.dataset_id:03d} already exists: {names}; "
                             f"pass --overwrite to replace it")

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """Yield a hidden folder inside nnUNet_raw to fill; on success it replaces the dataset in one rename.

        A failure (or Ctrl-C) removes the staging folder, so no half-written ``DatasetXXX_*`` is ever visible;
        hidden names are also invisible to nnU-Net, which looks datasets up by the ``DatasetXXX`` prefix.
        """
        # mkdir rather than mkdtemp: the dataset keeps the umask's permissions, not mkdtemp's owner-only ones
        staging = self.raw / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            self._publish(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish(self, staging: Path) -> None:
        self.refuse_existing()  # again: another run may have created the id meanwhile
        moved = []
        for old in self.existing():
            aside = self.raw / f".{old.name}.replaced-{uuid.uuid4().hex[:8]}"
            old.rename(aside)
            moved.append((aside, old))
        try:
            staging.rename(self.path)
        except BaseException:
            for aside, old in moved:
                aside.rename(old)
            raise
        for aside, _ in moved:
            shutil.rmtree(aside)


def write_dataset_json(folder: Path, num_training: int, **fields) -> None:
    """dataset.json through nnU-Net's own writer (fields: its keyword arguments)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    generate_dataset_json(str(folder), num_training_cases=num_training, **fields)


def write_report(folder: Path, report: dict) -> None:
    """``conversion_report.json``: where the data came from, which cases went where, which were skipped."""
    (folder / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# 2D images and masks (Kvasir-SEG, CVC-ClinicDB)


@dataclass(frozen=True)
class Pair:
    """One image and its mask; ``case`` is the nnU-Net identifier, ``stem`` the source file name without suffix."""
    case: str
    stem: str
    image: Path
    mask: Path


def safe_case_id(stem: str) -> str:
    """A case identifier nnU-Net and every file system accept."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def find_layout(src: Path, layouts: Sequence[tuple]) -> tuple:
    """The first ``(images, masks)`` folder pair of ``layouts`` (paths relative to ``src``) that exists."""
    if not src.is_dir():
        raise InputError(f"source folder not found: {src}")
    for images, masks in layouts:
        if (src / images).is_dir() and (src / masks).is_dir():
            return src / images, src / masks
    expected = " or ".join(f"'{images}/' + '{masks}/'" for images, masks in layouts)
    images, masks = layouts[0]
    missing = ", ".join(str(src / p) for p in (images, masks) if not (src / p).is_dir())
    raise InputError(f"{src}: expected image and mask folders {expected}; missing: {missing}")


def _index_images(folder: Path, problems: list) -> dict:
    """stem -> image file in ``folder``; hidden and non-image files are not data and are left out."""
    index = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in index:
            problems.append(f"{path}: same name as {index[path.stem].name}; which one is meant?")
            continue
        index[path.stem] = path
    if not index:
        problems.append(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return index


def pair_files(images_dir: Path, masks_dir: Path, case_id: Callable[[str], str] = safe_case_id) -> list:
    """Pair images and masks by file stem; every unpaired or clashing file is an error."""
    problems = []
    images = _index_images(images_dir, problems)
    masks = _index_images(masks_dir, problems)
    problems += [f"{images[s]}: image has no mask in {masks_dir}" for s in sorted(images.keys() - masks.keys())]
    problems += [f"{masks[s]}: mask has no image in {images_dir}" for s in sorted(masks.keys() - images.keys())]
    pairs, owner = [], {}
    for stem in sorted(images.keys() & masks.keys()):
        case = case_id(stem)
        if case in owner:
            problems.append(f"{images[stem]}: case name {case} clashes with {images[owner[case]].name}")
            continue
        owner[case] = stem
        pairs.append(Pair(case, stem, images[stem], masks[stem]))
    raise_if_problems(problems, images_dir.parent)
    return pairs


def split_test_cases(pairs: list, test_list: Optional[Path]) -> tuple:
    """(training, test) pairs; ``test_list`` names test cases by file stem (or case id), one per line."""
    if test_list is None:
        return pairs, []
    try:
        lines = Path(test_list).read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read the test list {test_list}: {e.strerror}") from e
    wanted = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    known = {p.stem for p in pairs} | {p.case for p in pairs}
    unknown = sorted(wanted - known)
    if unknown:
        raise InputError(f"{test_list}: unknown case(s) {', '.join(unknown)} (not among the source images)")
    test = [p for p in pairs if p.stem in wanted or p.case in wanted]
    training = [p for p in pairs if p not in test]
    if not training:
        raise InputError(f"{test_list}: every case is a test case; nnU-Net needs training cases")
    return training, test


def read_image(path: Path) -> Image.Image:
    """Decode an image fully: a lazy open would not notice a truncated file. PIL reads the TIFF flavours
    (LZW, deflate, JPEG, tiled, planar, 16-bit) that the CVC-ClinicDB distributions use."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except Exception as e:  # decoders raise many types; each means "this file is not a readable image"
        raise InputError(f"{path}: cannot read the image ({e})") from e


def binarize(mask: Image.Image, path: Path) -> np.ndarray:
    """0/1 labels from a greyscale mask; lossy (JPEG) 0/255 masks are thresholded at 127, anything else refused."""
    # a palette mask stores labels as indices; its colours (whatever they are) say nothing about the labels
    values = np.asarray(mask) if mask.mode == "P" else np.asarray(mask.convert("L"))
    if values.max() <= 1:
        return values.astype(np.uint8)
    grey = np.count_nonzero((values > 31) & (values < 224)) / values.size
    if grey > GREY_FRACTION_LIMIT:
        raise InputError(f"{path}: not a binary mask ({grey:.0%} of its pixels are neither near 0 nor near 255)")
    return (values > 127).astype(np.uint8)


def load_pair(pair: Pair) -> tuple:
    """The RGB image and the 0/1 mask of a pair, checked; InputError naming the file otherwise."""
    image = read_image(pair.image).convert("RGB")
    mask = read_image(pair.mask)
    if mask.size != image.size:
        raise InputError(f"{pair.mask}: mask is {mask.size[0]}x{mask.size[1]} px but its image "
                         f"{pair.image.name} is {image.size[0]}x{image.size[1]} px")
    return image, binarize(mask, pair.mask)


def fit_size(size: tuple, max_size: Optional[int]) -> tuple:
    """``size`` scaled down so its longer side is at most ``max_size`` (never scaled up)."""
    width, height = size
    if max_size is None or max(width, height) <= max_size:
        return size
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def write_pair(pair: Pair, images_dir: Path, labels_dir: Path, max_size: Optional[int]) -> None:
    """``CASE_0000.png`` (RGB) and ``CASE.png`` (0/1), downscaled to ``max_size`` when given."""
    image, mask = load_pair(pair)
    size = fit_size(image.size, max_size)
    image = image.resize(size, Image.Resampling.LANCZOS)
    # nearest on the 0/1 labels equals nearest-then-threshold: no new values can appear
    label = Image.fromarray(mask).resize(size, Image.Resampling.NEAREST)
    image.save(images_dir / f"{pair.case}_0000.png")
    label.save(labels_dir / f"{pair.case}.png")


def check_max_size(max_size: Optional[int]) -> None:
    if max_size is not None and max_size < 1:
        raise InputError(f"--max-size must be a positive number of pixels, got {max_size}")


def check_pairs(pairs: list, source: Path) -> None:
    """Load every pair once, so that all bad files are listed together before anything is written."""
    problems = []
    for pair in tqdm(pairs, desc="checking", unit="case"):
        try:
            load_pair(pair)
        except InputError as e:
            problems.append(str(e))
    raise_if_problems(problems, source)


def write_split(cases: list, folder: Path, images: str, labels: str, max_size: Optional[int]) -> None:
    """``folder/images`` and ``folder/labels`` (e.g. imagesTr, labelsTr) holding ``cases`` (:func:`write_pair`)."""
    (folder / images).mkdir()
    (folder / labels).mkdir()
    for pair in tqdm(cases, desc=f"writing {images}", unit="case"):
        write_pair(pair, folder / images, folder / labels, max_size)


def convert_pairs(pairs: list, target: DatasetTarget, *, source: Path, test_list: Optional[Path],
                  max_size: Optional[int], labels: dict, **dataset_fields) -> Path:
    """Check every pair, then write the RGB png dataset with 0/1 png labels into ``target``."""
    check_max_size(max_size)
    training, test = split_test_cases(pairs, test_list)
    check_pairs(pairs, source)

    with target.staging() as folder:
        for cases, (images, labels_dir) in ((training, TRAINING_FOLDERS), (test, TEST_FOLDERS)):
            if cases:
                write_split(cases, folder, images, labels_dir, max_size)
        write_dataset_json(folder, len(training), channel_names=dict(RGB_CHANNELS), labels=labels,
                           file_ending=".png", **dataset_fields)
        write_report(folder, {"source": str(source.resolve()), "max_size": max_size,
                              "training_cases": [p.case for p in training], "test_cases": [p.case for p in test],
                              "skipped_cases": {}})
    print(f"wrote {len(training)} training and {len(test)} test cases to {target.path}")
    return target.path


def add_test_split(pairs: list, dataset: Path, max_size: Optional[int], *, source: Path,
                   overwrite: bool = False) -> Path:
    """Write ``pairs`` as the test split (imagesTs/ + labelsTs/, as ``--test-list`` writes it) of the existing raw
    dataset folder ``dataset``, whose training cases stay as they are; returns its labelsTs folder.

    Both folders are filled in a hidden staging folder inside ``dataset`` and renamed into place, labelsTs last: a
    labelsTs folder means a complete split, and an interrupted run leaves at most an imagesTs that ``overwrite``
    replaces (as it replaces an earlier split)."""
    check_max_size(max_size)
    dataset = Path(dataset)
    existing = [name for name in TEST_FOLDERS if (dataset / name).exists()]
    if existing and not overwrite:
        raise InputError(f"{dataset} already has {' and '.join(existing)}; pass --overwrite to replace them")
    report_path = dataset / "conversion_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    # the network sees test images at the training images' scale only if both were downscaled alike
    if report is not None and report.get("max_size") != max_size:
        raise InputError(f"{dataset.name}'s training cases were converted with --max-size {report.get('max_size')}, "
                         f"got {max_size}; give the same, so that test and training images have one scale")
    training = {p.stem for p in (dataset / TRAINING_FOLDERS[1]).glob("*.png")}
    overlap = sorted(training & {p.case for p in pairs})
    if overlap:
        raise InputError(f"{len(overlap)} test case(s) are training cases of {dataset.name}: "
                         f"{', '.join(overlap[:MAX_LISTED_PROBLEMS])}; a model must not be tested on what it learned")
    check_pairs(pairs, source)

    staging = dataset / f".test-split.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_split(pairs, staging, *TEST_FOLDERS, max_size)
        for name in existing:
            (dataset / name).rename(staging / f"{name}.replaced")
        (staging / TEST_FOLDERS[0]).rename(dataset / TEST_FOLDERS[0])
        if report is not None:
            write_report(dataset, {**report, "test_cases": [p.case for p in pairs],
                                   "test_source": str(Path(source).resolve())})
        (staging / TEST_FOLDERS[1]).rename(dataset / TEST_FOLDERS[1])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(pairs)} test cases to {dataset / TEST_FOLDERS[0]} and {dataset / TEST_FOLDERS[1]}")
    return dataset / TEST_FOLDERS[1]
