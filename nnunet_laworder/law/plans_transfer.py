"""The source dataset's plans, unchanged, for the synthetic dataset: real-only vs real + synthetic then differs in the
training cases only, not in patch size, spacing, network or intensity normalisation (re-planning would fingerprint
the synthetic cases too).

Every plans file of the source's preprocessed folder (``nnUNetPlans.json`` with the plugin's ``2d_order`` /
``2d_mkunet`` configurations, replicate plans, ...) is written by nnU-Net's own
``nnUNetv2_move_plans_between_datasets`` function under the same plans identifier: it sets ``dataset_name`` and
picks ``image_reader_writer`` for the target's files (the same file type, so the same reader). Beside them, as
nnU-Net's planner leaves its preprocessed folder: ``dataset.json`` copied from the new raw dataset, and the source's
``dataset_fingerprint.json`` (the one the plans were made from; ``nnUNetv2_train`` copies it next to its models).
Then ``nnUNetv2_preprocess`` preprocesses the new dataset and ``nnUNetv2_train`` trains on it.
"""
import shutil
from pathlib import Path
from typing import List

from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import \
    move_plans_between_datasets

from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import dataset_id, raw_dataset_folder, read_json

FINGERPRINT = "dataset_fingerprint.json"


def transfer_plans(source_preprocessed: Path, target_name: str) -> List[Path]:
    """Write every plans file of ``source_preprocessed`` (``$nnUNet_preprocessed/DatasetSRC_x``) into the
    preprocessed folder of the raw dataset ``target_name`` (``DatasetNEW_y``, which must exist in nnUNet_raw);
    returns the written plans files."""
    plan_first = f"run nnUNetv2_plan_and_preprocess -d {dataset_id(source_preprocessed.name)} first"
    plans_names = sorted(path.stem for path in source_preprocessed.glob("*.json") if _is_plans(path))
    if not plans_names:
        raise InputError(f"{source_preprocessed} holds no nnU-Net plans file; {plan_first}")
    fingerprint = source_preprocessed / FINGERPRINT
    if not fingerprint.is_file():
        raise InputError(f"{fingerprint} not found (nnUNetv2_train needs it); {plan_first}")
    raw = raw_dataset_folder(target_name)
    target = source_preprocessed.parent / target_name  # nnUNet_preprocessed, where nnU-Net's function writes
    target.mkdir(parents=True, exist_ok=True)
    for name in plans_names:
        move_plans_between_datasets(source_preprocessed.name, target_name, name)
    shutil.copyfile(raw / "dataset.json", target / "dataset.json")
    shutil.copyfile(fingerprint, target / FINGERPRINT)
    return [target / f"{name}.json" for name in plans_names]


def _is_plans(path: Path) -> bool:
    content = read_json(path)
    return isinstance(content, dict) and "plans_name" in content and "configurations" in content
