"""Architecture blocks for nnU-Net plans, built from the templates in ``plans/`` and a base configuration.

nnU-Net 2.8 finds planners only inside nnunetv2, so our networks enter through the plans file: a configuration
that ``inherits_from`` the base one (patch, spacing, batch size, preprocessed data) and carries a complete
``architecture`` block whose ``strides`` follow the base configuration's, truncated to the network's depth.
"""
import json
from copy import deepcopy
from importlib import resources
from typing import List, Optional

from nnunet_laworder.errors import InputError

ARCHITECTURES = ("order", "mkunet")


def load_template(arch: str) -> dict:
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{arch}', expected one of {', '.join(ARCHITECTURES)}")
    return json.loads(resources.files("nnunet_laworder_plans").joinpath(f"{arch}.json").read_text())


def resolve_variant(template: dict, variant: Optional[str]) -> str:
    variant = variant or template["default_variant"]
    if variant not in template["variants"]:
        raise InputError(f"unknown variant '{variant}' for {template['network_class_name']}, "
                         f"expected one of {', '.join(template['variants'])}")
    return variant


def conv_dim(conv_op: str) -> int:
    for dim in (2, 3):
        if conv_op.endswith(f"Conv{dim}d"):
            return dim
    raise InputError(f"base configuration uses conv_op '{conv_op}'; only 2D and 3D convolutions are supported")


def architecture_block(arch: str, base_strides: List, dim: int, variant: Optional[str] = None,
                       multilabel: bool = False) -> dict:
    """The ``architecture`` dict of a plans configuration for ``arch`` following ``base_strides``."""
    template = load_template(arch)
    variant = resolve_variant(template, variant)
    n_stages = min(template["max_stages"], len(base_strides))
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": template["variants"][variant]["features_per_stage"][:n_stages],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "strides": deepcopy(list(base_strides[:n_stages])),
        "norm_op": f"torch.nn.modules.batchnorm.BatchNorm{dim}d",
        **deepcopy(template["arch_kwargs"]),
        # an ablation variant changes one setting of the architecture (e.g. ORDER without attention)
        **deepcopy(template["variants"][variant].get("arch_kwargs", {})),
    }
    if arch == "order":
        # the confidence gate reads sigmoid outputs for nnU-Net region training (e.g. KiTS kidney+tumor, tumor)
        arch_kwargs["multilabel"] = multilabel
    return {
        "network_class_name": template["network_class_name"],
        "arch_kwargs": arch_kwargs,
        "_kw_requires_import": ["conv_op", "norm_op"],
    }
