"""Parameters and GMACs of ORDER, MK-UNet and nnU-Net's default U-Net, each built for the same patch.

All three take their pooling from nnU-Net's planner (``get_pool_and_conv_props``), so a patch means the same
network topology here as in a planned nnU-Net configuration.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dynamic_network_architectures.architectures.unet import PlainConvUNet
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op, get_matching_instancenorm
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_laworder.errors import InputError
from nnunet_laworder.planning.architecture import architecture_block, load_template, resolve_variant

# Settings of nnU-Net's default ExperimentPlanner. They are instance attributes set in its __init__, which needs a
# raw dataset with a fingerprint, so they are mirrored here; tests/test_complexity.py checks them against a real
# planner.
NNUNET_BASE_FEATURES = 32  # UNet_base_num_features
NNUNET_MAX_FEATURES = {2: 512, 3: 320}  # UNet_max_features_2d / _3d
NNUNET_MIN_EDGE_LENGTH = 4  # UNet_featuremap_min_edge_length
NNUNET_CONVS_PER_STAGE = 2  # every entry of UNet_blocks_per_stage_encoder / _decoder
NNUNET_MAX_NUMPOOL = 999999  # the planner does not cap the number of pools

ARCHS = ("order", "mkunet", "nnunet")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flop_counts(net: nn.Module, input_shape: Sequence[int]) -> Dict:
    """FLOPs per aten op of one eval, no-grad forward of a batch of one; ``input_shape`` is ``(C, *spatial)``."""
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *input_shape))
    return counter.get_flop_counts()["Global"]


def part_of(name: str) -> str:
    """The part a module or parameter belongs to: ``attention stage J`` (ORDER's skip attention of decoder stage
    J), ``heads`` (the segmentation heads), else ``backbone``."""
    parts = name.split(".")
    if "skip_attention" in parts[:-1]:
        return f"attention stage {parts[parts.index('skip_attention') + 1]}"
    return "heads" if "seg_layers" in parts else "backbone"


def breakdown(net: nn.Module, input_shape: Sequence[int]) -> Dict[str, dict]:
    """Parameters and GMACs per part (:func:`part_of`) of one forward pass of a batch of one."""
    parts: Dict[str, dict] = {}
    for name, parameter in net.named_parameters():
        parts.setdefault(part_of(name), {"parameters": 0, "gmacs": 0.0})["parameters"] += parameter.numel()
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *input_shape))
    counts = counter.get_flop_counts()
    # the counter keys modules by their path under the root ("ORDER.decoder.seg_layers.0") and counts a module's
    # FLOPs in every enclosing module too: a part gets those of its outermost modules only
    top = type(net).__name__ + "."
    called = {k[len(top):]: sum(v.values()) / 2e9 for k, v in counts.items() if k.startswith(top)}
    attributed = 0.0
    for name, gmacs in called.items():
        part = part_of(name)
        enclosing = [name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)]
        if part == "backbone" or any(e in called and part_of(e) == part for e in enclosing):
            continue
        parts.setdefault(part, {"parameters": 0, "gmacs": 0.0})["gmacs"] += gmacs
        attributed += gmacs
    parts.setdefault("backbone", {"parameters": 0, "gmacs": 0.0})["gmacs"] = \
        sum(counts["Global"].values()) / 2e9 - attributed
    return dict(sorted(parts.items(), key=lambda kv: (kv[0] != "backbone", kv[0])))


def count_gmacs(net: nn.Module, input_shape: Sequence[int]) -> float:
    """Multiply-accumulates (FLOPs / 2) in billions; convolutions and matmuls, so attention is included."""
    return sum(flop_counts(net, input_shape).values()) / 2e9


def planned_topology(dim: int, patch_size: Sequence[int], spacing: Optional[Sequence[float]] = None
                     ) -> Tuple[tuple, tuple, Tuple[int, ...]]:
    """nnU-Net's ``(strides, conv kernel sizes, patch padded to be divisible)`` for a patch (spacing 1 per axis)."""
    if len(patch_size) != dim or min(patch_size) < 1:
        raise InputError(f"the patch needs {dim} positive sizes for a {dim}D network, got {list(patch_size)}")
    spacing = [1.0] * dim if spacing is None else list(spacing)
    _, strides, kernel_sizes, padded, _ = get_pool_and_conv_props(spacing, patch_size, NNUNET_MIN_EDGE_LENGTH,
                                                                  NNUNET_MAX_NUMPOOL)
    if len(strides) < 2:
        raise InputError(f"patch {list(patch_size)} is too small for nnU-Net to pool even once "
                         f"(it needs {2 * NNUNET_MIN_EDGE_LENGTH} voxels along an axis)")
    return strides, kernel_sizes, tuple(int(s) for s in padded)


def nnunet_default_architecture(dim: int, patch_size: Sequence[int],
                                spacing: Optional[Sequence[float]] = None) -> dict:
    """The ``architecture`` block nnU-Net's default planner writes into the plans for this patch and spacing."""
    strides, kernel_sizes, _ = planned_topology(dim, patch_size, spacing)
    n_stages = len(strides)
    conv_op = convert_dim_to_conv_op(dim)
    norm = get_matching_instancenorm(conv_op)
    return {
        "network_class_name": PlainConvUNet.__module__ + "." + PlainConvUNet.__name__,
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": tuple(min(NNUNET_MAX_FEATURES[dim], NNUNET_BASE_FEATURES * 2 ** i)
                                        for i in range(n_stages)),
            "conv_op": conv_op.__module__ + "." + conv_op.__name__,
            "kernel_sizes": kernel_sizes,
            "strides": strides,
            "n_conv_per_stage": (NNUNET_CONVS_PER_STAGE,) * n_stages,
            "n_conv_per_stage_decoder": (NNUNET_CONVS_PER_STAGE,) * (n_stages - 1),
            "conv_bias": True,
            "norm_op": norm.__module__ + "." + norm.__name__,
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ("conv_op", "norm_op", "dropout_op", "nonlin"),
    }


def nnunet_default_network(dim: int, input_channels: int, num_classes: int, patch_size: Sequence[int],
                           spacing: Optional[Sequence[float]] = None) -> nn.Module:
    """The PlainConvUNet nnU-Net's default planner makes for this patch, with deep supervision as nnU-Net trains it."""
    arch = nnunet_default_architecture(dim, patch_size, spacing)
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  input_channels, num_classes, deep_supervision=True)


def build_network(arch: str, dim: int, input_channels: int, num_classes: int, patch_size: Sequence[int],
                  variant: Optional[str] = None) -> nn.Module:
    """ORDER, MK-UNet (``variant`` T, S or base) or nnU-Net's default U-Net, with nnU-Net's strides for the patch.

    ORDER and MK-UNet get the architecture block that ``nnunet-laworder plans`` writes for such a configuration."""
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if variant is not None and arch == "nnunet":
        raise InputError("--variant applies to order and mkunet, not to nnU-Net's default network")
    if arch == "nnunet":
        return nnunet_default_network(dim, input_channels, num_classes, patch_size)
    strides, _, _ = planned_topology(dim, patch_size)
    block = architecture_block(arch, [list(s) for s in strides], dim, variant)
    return get_network_from_plans(block["network_class_name"], block["arch_kwargs"], block["_kw_requires_import"],
                                  input_channels, num_classes, deep_supervision=True)


def network_complexity(arch: str, dim: int, input_channels: int, num_classes: int, patch_size: Sequence[int],
                       variant: Optional[str] = None, with_breakdown: bool = False) -> dict:
    """Parameters and GMACs of :func:`build_network`'s network at the patch nnU-Net would train on (padded so
    that every pooling divides it)."""
    if input_channels < 1 or num_classes < 1:
        raise InputError(f"input channels ({input_channels}) and classes ({num_classes}) must be at least 1")
    _, _, planned_patch = planned_topology(dim, patch_size)
    net = build_network(arch, dim, input_channels, num_classes, patch_size, variant)
    if arch != "nnunet":
        variant = resolve_variant(load_template(arch), variant)
    return {"arch": arch, "variant": variant, "dim": dim, "input_channels": input_channels,
            "num_classes": num_classes, "patch_size": list(planned_patch), "parameters": count_parameters(net),
            "gmacs": count_gmacs(net, (input_channels, *planned_patch)),
            **({"breakdown": breakdown(net, (input_channels, *planned_patch))} if with_breakdown else {})}
