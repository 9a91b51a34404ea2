"""Parameter / GMAC counting, nnU-Net's default network as its planner builds it, and the ``complexity`` CLI."""
import argparse
import json

import pytest
import torch

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.cli import register
from nnunet_laworder.evaluation.complexity import (breakdown, build_network, count_gmacs, count_parameters,
                                                   flop_counts, nnunet_default_architecture, nnunet_default_network)

POLYP_PATCH = (256, 256)


@pytest.mark.parametrize("variant, reference", [("T", 27_384), ("S", 93_050), ("base", 315_566)])
def test_mkunet_matches_published_parameter_counts(variant, reference):
    net = build_network("mkunet", 2, 3, 1, POLYP_PATCH, variant)
    assert count_parameters(net) == pytest.approx(reference, rel=0.01)


@pytest.mark.parametrize("variant", ["default", "wide-attention"])
def test_order_2d_budget(variant):
    net = build_network("order", 2, 3, 2, POLYP_PATCH, variant)
    assert count_parameters(net) <= 42_000
    assert count_gmacs(net, (3, *POLYP_PATCH)) <= 0.56


def test_order_gmacs_include_attention_matmuls():
    counts = flop_counts(build_network("order", 2, 3, 2, POLYP_PATCH), (3, *POLYP_PATCH))
    assert counts.get(torch.ops.aten.bmm, 0) > 0


def planner_architecture(nnunet_dirs, patch_size, spacing) -> dict:
    """The ``architecture`` block nnU-Net's own planner writes for a dataset whose median image is the patch."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    name = "Dataset990_Complexity"
    raw, preprocessed = nnunet_dirs["nnUNet_raw"] / name, nnunet_dirs["nnUNet_preprocessed"] / name
    raw.mkdir()
    preprocessed.mkdir()
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "polyp": 1},
        "numTraining": 0, "file_ending": ".png", "dataset": {}}))
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps({"median_relative_size_after_cropping": 1.0}))
    # a huge memory target so the planner keeps the whole patch instead of shrinking it
    planner = ExperimentPlanner(name, gpu_memory_target_in_gb=10_000)
    plan = planner.get_plans_for_configuration(spacing, patch_size, "complexity", 1e12, {})
    assert tuple(plan["patch_size"]) == tuple(patch_size)
    return plan["architecture"]


@pytest.mark.parametrize("patch_size, spacing", [((256, 256), (1.0, 1.0)), ((320, 320), (1.0, 1.0)),
                                                 ((40, 56, 40), (1.0, 1.0, 1.0)), ((20, 192, 192), (3.0, 1.0, 1.0))])
def test_nnunet_default_architecture_is_the_planners(nnunet_dirs, patch_size, spacing):
    ours = nnunet_default_architecture(len(patch_size), patch_size, spacing)
    theirs = planner_architecture(nnunet_dirs, patch_size, spacing)
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))


def test_nnunet_default_2d_polyp_network():
    net = nnunet_default_network(2, 3, 2, POLYP_PATCH)
    assert len(net.encoder.stages) == 7  # 256 pools six times down to 4, the planner's minimum edge length
    assert count_parameters(net) > 20e6


def test_order_and_mkunet_use_the_first_five_planned_strides():
    order = build_network("order", 2, 3, 2, POLYP_PATCH)
    assert len(order.encoder.blocks) == 5
    small = build_network("mkunet", 2, 3, 2, (32, 32), "T")  # the planner pools 32 three times: four stages
    assert len(small.encoder.blocks) == 4


def complexity_cli(argv) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_complexity_cli_prints_the_same_numbers_as_json(capsys):
    assert complexity_cli(["complexity", "--arch", "order", "--dim", "2", "--input-channels", "3", "--num-classes", "2",
                           "--patch", "256", "256", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    net = build_network("order", 2, 3, 2, POLYP_PATCH)
    assert printed["parameters"] == count_parameters(net)
    assert printed["gmacs"] == pytest.approx(count_gmacs(net, (3, *POLYP_PATCH)))
    assert printed["patch_size"] == list(POLYP_PATCH)


def test_complexity_cli_rejects_a_patch_of_the_wrong_dimension():
    with pytest.raises(InputError, match="3 positive sizes"):
        complexity_cli(["complexity", "--arch", "nnunet", "--dim", "3", "--input-channels", "1", "--num-classes",
                        "2", "--patch", "256", "256"])


def test_breakdown_parts_add_up_to_the_whole_and_isolate_the_attention():
    order = build_network("order", 2, 3, 2, POLYP_PATCH)
    parts = breakdown(order, (3, *POLYP_PATCH))
    assert list(parts) == ["backbone", "attention stage 2", "attention stage 3", "heads"]
    assert sum(p["parameters"] for p in parts.values()) == count_parameters(order)
    assert sum(p["gmacs"] for p in parts.values()) == pytest.approx(count_gmacs(order, (3, *POLYP_PATCH)))
    attention = order.decoder.skip_attention["2"]
    assert parts["attention stage 2"]["parameters"] == count_parameters(attention)
    # the backbone alone (no-attention variant) costs what ORDER's backbone and heads cost
    backbone = build_network("order", 2, 3, 2, POLYP_PATCH, "no-attention")
    alone = breakdown(backbone, (3, *POLYP_PATCH))
    assert list(alone) == ["backbone", "heads"]
    assert alone["backbone"]["parameters"] == parts["backbone"]["parameters"]
    assert alone["backbone"]["gmacs"] == pytest.approx(parts["backbone"]["gmacs"])
    assert alone["heads"] == parts["heads"]  # deep supervision runs every head in both


def test_complexity_cli_breakdown(capsys):
    assert complexity_cli(["complexity", "--arch", "order", "--dim", "2", "--input-channels", "3", "--num-classes", "2",
                           "--patch", "256", "256", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "attention stage 2" in out and "heads" in out and "backbone" in out
