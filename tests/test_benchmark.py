"""``nnunet-laworder benchmark`` on the plans of a real Kvasir-SEG subset (nnU-Net's own planning, on CPU)."""
import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

from nnunet_helpers import files_under, nnunet_env, run, short_trainers
from nnunet_laworder.cli import main
from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.benchmark import FIGURES
from nnunet_laworder.evaluation.models import pair_by_position
from preloaded_cli import preloaded_cli

DATASET_ID = 511
CASES = 8
TRAINED = "nnUNetTrainer_twoIterations"  # nnU-Net's default network on 2d (nnunet_helpers.SHORT_TRAINERS)


def test_options_pair_by_position_and_broadcast_a_single_value():
    assert pair_by_position(configuration=["2d", "2d_order"], trainer=["A", "B"], plans=None) == [
        {"configuration": "2d", "trainer": "A", "plans": None},
        {"configuration": "2d_order", "trainer": "B", "plans": None}]
    assert [m["trainer"] for m in pair_by_position(configuration=["2d_order"], trainer=["A", "B"])] == ["A", "B"]
    with pytest.raises(InputError, match="paired by position"):
        pair_by_position(configuration=["2d", "2d_order", "2d_mkunet"], trainer=["A", "B"])


def test_unknown_dataset_is_an_input_error(nnunet_dirs, capsys):
    assert main(["benchmark", "-d", "998", "-c", "2d", "-device", "cpu"]) == 2
    assert "dataset 998 not found" in capsys.readouterr().err


@pytest.mark.parametrize("option,value", [("--predict-cases", "0"), ("--predict-fold", "first")])
def test_bad_predict_options_are_refused_before_any_work(nnunet_dirs, capsys, option, value):
    # dataset 998 does not exist: the refusal comes before the dataset is even looked up
    assert main(["benchmark", "-d", "998", "-c", "2d", "-device", "cpu", "--predict", option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert option in err and "998" not in err and "\n" not in err


@contextlib.contextmanager
def planned_kvasir_subset(root: Path, dataset_id: int, cases: int, archs=("order", "mkunet")):
    """The first ``cases`` Kvasir-SEG pairs at 64 px (a ~64 x 56 patch, so nnU-Net's default network stays small
    for a 2-core machine), converted, planned and preprocessed (2d) by nnU-Net, plus ``2d_<arch>`` configurations.
    Yields ``(env, dirs, cli)`` while the block runs: the environment of child processes (SHORT_TRAINERS on
    nnUNet_extTrainer), nnU-Net's folders (exported here too, with nnUNet_extTrainer) and a PreloadedCli in env."""
    from conftest import require_data

    src = require_data("kvasir-seg")
    dirs = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    official = root / "official"
    for path in [*dirs.values(), official / "images", official / "masks"]:
        path.mkdir(parents=True)
    for image in sorted((src / "images").glob("*.jpg"))[:cases]:
        shutil.copy(image, official / "images" / image.name)
        shutil.copy(src / "masks" / image.name, official / "masks" / image.name)
    env = nnunet_env(dirs)
    env["nnUNet_extTrainer"] += os.pathsep + str(short_trainers(root))
    with preloaded_cli(env) as cli, pytest.MonkeyPatch.context() as mp:
        cli.check(["convert", "kvasir-seg", str(official), "-d", str(dataset_id), "--max-size", "64"])
        run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "-np", "1", "-npfp", "1"], env)
        for name in (*dirs, "nnUNet_extTrainer"):
            mp.setenv(name, env[name])
        for arch in archs:
            assert main(["plans", "-d", str(dataset_id), "-c", "2d", "--arch", arch]) == 0
        yield env, dirs, cli


@pytest.fixture(scope="module")
def kvasir_plans(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    with planned_kvasir_subset(root, DATASET_ID, CASES) as (env, dirs, cli):
        yield env, dirs, root, cli


@pytest.mark.slow
def test_benchmark_rows_ratios_and_gmacs(kvasir_plans):
    from nnunet_laworder.evaluation.complexity import network_complexity

    env, dirs, root, cli = kvasir_plans
    out_json, out_png = root / "bench.json", root / "bench.png"
    # -c without 2d: nnU-Net's default configuration is added as the reference
    result = cli.check(["benchmark", "-d", str(DATASET_ID), "-c", "2d_order", "2d_mkunet", "-device", "cpu",
                        "--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out_json),
                        "--png", str(out_png)])
    report = json.loads(out_json.read_text())
    rows = {row["configuration"]: row for row in report["rows"]}
    assert set(rows) == {"2d", "2d_order", "2d_mkunet"}
    assert rows["2d_order"]["trainer"] == "nnUNetTrainerORDER" and rows["2d_mkunet"]["trainer"] == \
        "nnUNetTrainerMKUNet" and rows["2d"]["trainer"] == "nnUNetTrainer"
    reference = rows["2d"]
    assert report["references"] == {"2d": reference["identifier"]} and reference["is_reference"]
    assert not rows["2d_order"]["is_reference"] and not rows["2d_mkunet"]["is_reference"]
    for row in rows.values():
        for figure in FIGURES:
            assert row[figure] is not None and row[figure] > 0, (row["identifier"], figure)
            assert row["ratios"][figure] == pytest.approx(row[figure] / reference[figure], rel=1e-12)
    assert all(ratio == 1 for ratio in reference["ratios"].values())
    assert rows["2d_order"]["parameters"] < rows["2d_mkunet"]["parameters"] < reference["parameters"]

    # the same network counts as `nnunet-laworder complexity` counts it for this patch (3 RGB channels, 2 classes)
    plans = json.loads(next(dirs["nnUNet_preprocessed"].glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json")).read_text())
    patch = plans["configurations"]["2d"]["patch_size"]
    for configuration, arch in (("2d", "nnunet"), ("2d_order", "order"), ("2d_mkunet", "mkunet")):
        row = rows[configuration]
        assert row["patch_size"] == patch and row["batch_size"] == plans["configurations"]["2d"]["batch_size"]
        expected = network_complexity(arch, 2, 3, 2, patch)
        assert row["parameters"] == expected["parameters"]
        assert row["gmacs"] == pytest.approx(expected["gmacs"], rel=1e-9)
        assert row["forward_timing"]["median"] == row["forward_ms"] and len(row["forward_timing"]["samples"]) == 2
        assert row["memory"]["kind"] == "cpu_peak_rss_above_baseline"
        assert row["train_peak_bytes"] >= row["forward_peak_bytes"]

    settings = report["settings"]
    assert settings["device"] == "cpu" and settings["threads"] == 1 and settings["warmup"] == 1
    assert settings["repeats"] == 2 and settings["torch"]
    table = result.stdout
    assert table.count("| nnUNetTrainer") == 3 and f"{reference['identifier']} **(reference)**" in table
    assert out_png.stat().st_size > 10_000


@pytest.mark.slow
def test_wrong_trainer_for_a_configuration_is_an_input_error(kvasir_plans, capsys):
    assert main(["benchmark", "-d", str(DATASET_ID), "-c", "2d", "-tr", "nnUNetTrainerORDER", "-device", "cpu",
                 "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "nnUNetTrainerORDER__nnUNetPlans__2d" in err and "nnunet-laworder plans" in err
    assert main(["benchmark", "-d", str(DATASET_ID), "-c", "3d_fullres", "-device", "cpu"]) == 2
    assert "no configuration '3d_fullres'" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_needs_the_trained_model_before_anything_is_measured(kvasir_plans, capsys):
    assert main(["benchmark", "-d", str(DATASET_ID), "-c", "2d_order", "-device", "cpu", "--no-memory",
                 "--predict", "--predict-fold", "3"]) == 2
    err = capsys.readouterr().err
    assert "nnUNetTrainerORDER__nnUNetPlans__2d_order/fold_3/checkpoint_final.pth not found" in err
    assert "nnUNetv2_train" in err


@pytest.fixture(scope="module")
def trained_model(kvasir_plans):
    env, dirs, root, cli = kvasir_plans
    # augmentation in the training process: no worker start-up for a few iterations
    run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINED, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0"))
    return kvasir_plans


@pytest.mark.slow
def test_benchmark_predict_times_nnunet_predict_per_case_with_and_without_mirroring(trained_model):
    env, dirs, root, cli = trained_model
    out_json, out_png = root / "predict.json", root / "predict.png"
    before = files_under(dirs.values())
    result = cli.check(["benchmark", "-d", str(DATASET_ID), "-c", "2d", "-tr", TRAINED, "-device", "cpu",
                        "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory", "--predict",
                        "--predict-cases", "3", "--json", str(out_json), "--png", str(out_png)])
    assert files_under(dirs.values()) == before  # predictions went to a temporary folder only

    report = json.loads(out_json.read_text())
    (row,) = report["rows"]
    assert row["is_reference"]  # 2d of nnUNetPlans, whatever its trainer: the ratios are 1
    images = sorted(next(dirs["nnUNet_raw"].glob(f"Dataset{DATASET_ID}_*")).glob("imagesTr/*_0000.png"))
    identifiers = [path.name[:-len("_0000.png")] for path in images]
    predict = report["settings"]["predict"]
    # 3 of the 8 cases, evenly spaced over the sorted names, and each of them timed once per setting
    assert predict["cases"] == [identifiers[0], identifiers[2], identifiers[5]]
    assert predict["fold"] == 0 and predict["warmup"] == 1
    for setting, suffix in (("tta", ""), ("no_tta", "_no_tta")):
        timing = row["predict_timing"][setting]
        assert len(timing["samples"]) == 3 and min(timing["samples"]) > 0
        assert row[f"predict_s_per_case{suffix}"] == timing["median"]
        assert row[f"predict_s_total{suffix}"] == pytest.approx(sum(timing["samples"])) == timing["total"]
        assert row["ratios"][f"predict_s_per_case{suffix}"] == 1
    assert row["predict_mirror_axes"] == [0, 1]  # with TTA, nnU-Net mirrors both axes of the 2d model
    # four mirrored forward passes per tile against one: a wide margin that machine load does not cross
    assert row["predict_s_total_no_tta"] <= 1.5 * row["predict_s_total"]
    assert "predict s/case, TTA | predict s/case, no TTA |" in result.stdout
    assert f"{row['identifier']} **(reference)**" in result.stdout
    assert out_png.stat().st_size > 10_000
