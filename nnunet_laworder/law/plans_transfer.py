"""The source dataset's plans, unchanged, for the synthetic dataset: real-only vs real + synthetic then differs in the
training cases only, not in patch size, spacing, network or intensity normalisation (re-planning would fingerprint
the synthetic cases too).

Every plans file of the source's preprocessed folder (``nnUNetPlans.json`` with the plugin's ``2d_order`` /
``2d_mkunet`` configurations, replicate plans, ...) is written as nnU-Net's ``nnUNetv2_move_plans_between_datasets``
writes it, under the same plans identifier: ``dataset_name`` set to the new dataset, ``image_reader_writer`` picked
by nnU-Net's own registry for the new dataset's files (the same file type, so the same reader), nothing else
changed. Unlike nnU-Net's function, the new raw dataset need not be in ``nnUNet_raw`` yet (the assembly transfers the
plans from its staging folder, before the dataset is published) and every file is written atomically (a hidden file
renamed into place). Beside the plans, as nnU-Net's planner leaves its preprocessed folder: ``dataset.json`` copied
from the new raw dataset, and the source's ``dataset_fingerprint.json`` (the one the plans were made from;
``nnUNetv2_train`` copies it next to its models). Then ``nnUNetv2_preprocess`` preprocesses the new dataset and
``nnUNetv2_train`` trains on it.
"""
import os
import shutil
from pathlib import Path
from typing import List, Optional

from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import dataset_id, raw_dataset_folder, read_json, save_json_atomic

FINGERPRINT = "dataset_fingerprint.json"


def transfer_plans(source_preprocessed: Path, target_name: str, raw: Optional[Path] = None,
                   output: Optional[Path] = None) -> List[Path]:
    """Write every plans file of ``source_preprocessed`` (``$nnUNet_preprocessed/DatasetSRC_x``) for the new
    dataset ``target_name`` (``DatasetNEW_y``) into ``output`` (default: its preprocessed folder
    ``$nnUNet_preprocessed/DatasetNEW_y``, made when missing); ``raw``: the new raw dataset's folder (default: the
    one in nnUNet_raw, which must then exist). Returns the written plans files."""
    plan_first = f"run nnUNetv2_plan_and_preprocess -d {dataset_id(source_preprocessed.name)} first"
    plans_names = sorted(path.stem for path in source_preprocessed.glob("*.json") if _is_plans(path))
    if not plans_names:
        raise InputError(f"{source_preprocessed} holds no nnU-Net plans file; {plan_first}")
    fingerprint = source_preprocessed / FINGERPRINT
    if not fingerprint.is_file():
        raise InputError(f"{fingerprint} not found (nnUNetv2_train needs it); {plan_first}")
    raw = Path(raw) if raw is not None else raw_dataset_folder(target_name)
    output = Path(output) if output is not None else source_preprocessed.parent / target_name
    output.mkdir(parents=True, exist_ok=True)
    reader_writer = _reader_writer(raw)
    written = []
    for name in plans_names:
        plans = read_json(source_preprocessed / f"{name}.json")
        # what move_plans_between_datasets changes when the plans identifier stays the same
        plans.update(dataset_name=target_name, image_reader_writer=reader_writer, plans_name=name)
        save_json_atomic(plans, output / f"{name}.json", indent=4)
        written.append(output / f"{name}.json")
    _copy_atomic(raw / "dataset.json", output / "dataset.json")
    _copy_atomic(fingerprint, output / FINGERPRINT)
    return written


def _reader_writer(raw: Path) -> str:
    """The name of nnU-Net's reader/writer class for the images of the raw dataset in ``raw`` (as
    ``move_plans_between_datasets`` picks it: from dataset.json and one training image)."""
    dataset_json = read_json(raw / "dataset.json")
    cases = get_filenames_of_train_images_and_targets(str(raw), dataset_json)
    if not cases:
        raise InputError(f"{raw / 'imagesTr'} holds no training image; cannot pick the image reader for the plans")
    example = next(iter(cases.values()))["images"][0]
    return determine_reader_writer_from_dataset_json(dataset_json, example, allow_nonmatching_filename=True,
                                                     verbose=False).__name__


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _is_plans(path: Path) -> bool:
    content = read_json(path)
    return isinstance(content, dict) and "plans_name" in content and "configurations" in content
