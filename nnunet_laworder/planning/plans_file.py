"""Add an ORDER / MK-UNet configuration to a dataset's nnU-Net plans file (idempotent, atomic)."""
from pathlib import Path
from typing import Optional, Tuple

from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import DEFAULT_PLANS, plans_file, read_json, save_json_atomic
from nnunet_laworder.planning.architecture import architecture_block, conv_dim


def default_configuration_name(base: str, arch: str, variant: Optional[str]) -> str:
    return f"{base}_{arch}" + (f"_{variant}" if variant else "")


def dataset_has_regions(dataset_json: dict) -> bool:
    return any(isinstance(v, (list, tuple)) for v in dataset_json["labels"].values())


def add_configuration(dataset: str, base: str, arch: str, variant: Optional[str] = None,
                      plans_name: str = DEFAULT_PLANS, name: Optional[str] = None) -> Tuple[Path, str, bool]:
    """Add (or refresh) configuration ``name`` inheriting from ``base``; returns (plans file, name, changed)."""
    path = plans_file(dataset, plans_name)
    plans = read_json(path)
    configurations = plans["configurations"]
    if base not in configurations or "architecture" not in configurations[base]:
        available = ", ".join(k for k, v in configurations.items() if "architecture" in v)
        raise InputError(f"{path} has no base configuration '{base}' with an architecture "
                         f"(available: {available})")
    base_arch = configurations[base]["architecture"]["arch_kwargs"]
    dataset_json = read_json(path.parent / "dataset.json")
    name = name or default_configuration_name(base, arch, variant)
    entry = {
        "inherits_from": base,
        "architecture": architecture_block(arch, base_arch["strides"], conv_dim(base_arch["conv_op"]), variant,
                                           multilabel=dataset_has_regions(dataset_json)),
    }
    if configurations.get(name) == entry:
        return path, name, False
    configurations[name] = entry
    save_json_atomic(plans, path, indent=4)  # nnU-Net's own indent
    return path, name, True
