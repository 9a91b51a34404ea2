"""Add an ORDER / MK-UNet configuration to a dataset's nnU-Net plans file (idempotent, atomic)."""
import json
import os
from pathlib import Path
from typing import Optional, Tuple

from nnunet_laworder.errors import InputError
from nnunet_laworder.planning.architecture import architecture_block, conv_dim


def preprocessed_dataset_folder(dataset: str) -> Path:
    """``$nnUNet_preprocessed/DatasetXXX_Name`` for a dataset id or name, with a clear error when it is absent."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_preprocessed.is_set():
        raise InputError("nnUNet_preprocessed is not set; export it as for nnUNetv2_plan_and_preprocess")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError:
        raise InputError(f"dataset {dataset} not found in nnUNet_preprocessed ({nnUNet_preprocessed.get()}) or "
                         f"nnUNet_raw; run nnUNetv2_plan_and_preprocess -d {dataset} first") from None
    folder = Path(nnUNet_preprocessed.get()) / name
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    return folder


def default_configuration_name(base: str, arch: str, variant: Optional[str]) -> str:
    return f"{base}_{arch}" + (f"_{variant}" if variant else "")


def dataset_has_regions(dataset_json: dict) -> bool:
    return any(isinstance(v, (list, tuple)) for v in dataset_json["labels"].values())


def add_configuration(dataset: str, base: str, arch: str, variant: Optional[str] = None,
                      plans_name: str = "nnUNetPlans", name: Optional[str] = None) -> Tuple[Path, str, bool]:
    """Add (or refresh) configuration ``name`` inheriting from ``base``; returns (plans file, name, changed)."""
    folder = preprocessed_dataset_folder(dataset)
    plans_file = folder / f"{plans_name}.json"
    if not plans_file.is_file():
        raise InputError(f"plans file {plans_file} not found; run nnUNetv2_plan_and_preprocess (or give -p)")
    plans = json.loads(plans_file.read_text())
    configurations = plans["configurations"]
    if base not in configurations or "architecture" not in configurations[base]:
        available = ", ".join(k for k, v in configurations.items() if "architecture" in v)
        raise InputError(f"{plans_file} has no base configuration '{base}' with an architecture "
                         f"(available: {available})")
    base_arch = configurations[base]["architecture"]["arch_kwargs"]
    dataset_json = json.loads((folder / "dataset.json").read_text())
    name = name or default_configuration_name(base, arch, variant)
    entry = {
        "inherits_from": base,
        "architecture": architecture_block(arch, base_arch["strides"], conv_dim(base_arch["conv_op"]), variant,
                                           multilabel=dataset_has_regions(dataset_json)),
    }
    if configurations.get(name) == entry:
        return plans_file, name, False
    configurations[name] = entry
    tmp = plans_file.with_name(f".{plans_file.name}.tmp")
    tmp.write_text(json.dumps(plans, indent=4))
    os.replace(tmp, plans_file)
    return plans_file, name, True
