"""The user's workflow with nnU-Net's own commands, on real data subsets, on CPU.

Kvasir-SEG (2D, RGB): convert -> nnUNetv2_plan_and_preprocess --verify_dataset_integrity -> plans -> nnUNetv2_train
(ORDER and MK-UNet, short trainers; ORDER's is conftest.kvasir_order_smoke, which test_onnx_export.py exports) ->
nnUNetv2_predict. MSD Hippocampus (3D, anisotropic strides, 2 foreground
labels): the same with 3d_fullres_order, plus the plans command's contract. KiTS19 (real label volumes, nnU-Net
regions kidney+tumour and tumour): convert -> plan -> gated ORDER -> train -> predict -> nnUNetv2_evaluate_folder.
"""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from nnunet_helpers import (kill_after_first_checkpoint, label_values, module_nnunet_folders, short_trainers,
                            nnunet_env, run, train_losses, validation_summary, write_msd_subset)
from conftest import KVASIR_ORDER_SMOKE, KVASIR_WORKFLOW_ID, KVASIR_WORKFLOW_TEST
from nnunet_laworder.cli import main

KVASIR_ID, HIPPO_ID, KITS_ID = KVASIR_WORKFLOW_ID, 502, 503
KVASIR_TEST = KVASIR_WORKFLOW_TEST
pytestmark = pytest.mark.xdist_group(KVASIR_ORDER_SMOKE)


@pytest.fixture(scope="module")
def nnunet_folders(tmp_path_factory):
    yield from module_nnunet_folders(tmp_path_factory, "nnunet")


@pytest.fixture(scope="module")
def kvasir_planned(kvasir_order_smoke):
    """(environment, raw dataset): conftest's planned Kvasir-SEG subset, on which ORDER is trained already."""
    return kvasir_order_smoke["env"], kvasir_order_smoke["raw"]


@pytest.fixture(scope="module")
def hippocampus_planned(nnunet_folders):
    from conftest import require_data

    src = require_data("msd-hippocampus")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (src / "imagesTr").glob("*.nii.gz"))[:14]
    raw = write_msd_subset(src, nnunet_folders["nnUNet_raw"], HIPPO_ID, "Hippocampus", cases,
                           {"background": 0, "Anterior": 1, "Posterior": 2}, {"0": "MRI"})
    env = nnunet_env(nnunet_folders)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(HIPPO_ID), "-c", "3d_fullres", "-np", "2", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    return env, raw


def plans_of(folders, dataset_id):
    return next(folders["nnUNet_preprocessed"].glob(f"Dataset{dataset_id}_*")) / "nnUNetPlans.json"


def test_plans_command_adds_inheriting_configuration_idempotently(hippocampus_planned, nnunet_folders, capsys):
    plans_file = plans_of(nnunet_folders, HIPPO_ID)
    assert main(["plans", "-d", str(HIPPO_ID), "-c", "3d_fullres", "--arch", "order"]) == 0
    plans = json.loads(plans_file.read_text())
    config, base = plans["configurations"]["3d_fullres_order"], plans["configurations"]["3d_fullres"]
    assert config["inherits_from"] == "3d_fullres"
    arch = config["architecture"]["arch_kwargs"]
    n = min(5, len(base["architecture"]["arch_kwargs"]["strides"]))
    assert arch["strides"] == base["architecture"]["arch_kwargs"]["strides"][:n] and arch["n_stages"] == n
    assert arch["conv_op"] == "torch.nn.modules.conv.Conv3d" and arch["multilabel"] is False
    before = plans_file.read_bytes()
    assert main(["plans", "-d", str(HIPPO_ID), "-c", "3d_fullres", "--arch", "order"]) == 0
    assert plans_file.read_bytes() == before
    assert "already up to date" in capsys.readouterr().out

    assert main(["plans", "-d", str(HIPPO_ID), "-c", "3d_lowres", "--arch", "order"]) == 2
    assert "no base configuration '3d_lowres'" in capsys.readouterr().err
    assert main(["plans", "-d", "999", "-c", "2d", "--arch", "order"]) == 2
    assert "dataset 999 not found" in capsys.readouterr().err
    assert plans_file.read_bytes() == before


def test_mkunet_variant_configuration_name(hippocampus_planned, nnunet_folders):
    assert main(["plans", "-d", str(HIPPO_ID), "-c", "3d_fullres", "--arch", "mkunet", "--variant", "T"]) == 0
    plans = json.loads(plans_of(nnunet_folders, HIPPO_ID).read_text())
    arch = plans["configurations"]["3d_fullres_mkunet_T"]["architecture"]
    assert arch["network_class_name"] == "nnunet_laworder.networks.mkunet.MKUNet"
    assert arch["arch_kwargs"]["features_per_stage"] == [4, 8, 16, 24, 32][:arch["arch_kwargs"]["n_stages"]]


@pytest.mark.slow
def test_hippocampus_3d_order_trains_and_predicts(hippocampus_planned, nnunet_folders, tmp_path):
    env, raw = hippocampus_planned
    run(["nnunet-laworder", "plans", "-d", str(HIPPO_ID), "-c", "3d_fullres", "--arch", "order"], env)
    trainer = "nnUNetTrainerORDER_smoke"
    dataset = raw.name
    fold = nnunet_folders["nnUNet_results"] / dataset / f"{trainer}__nnUNetPlans__3d_fullres_order" / "fold_0"
    train = ["nnUNetv2_train", str(HIPPO_ID), "3d_fullres_order", "0", "-tr", trainer, "-device", "cpu"]
    # interrupted as soon as the first checkpoint_latest is on disk, then continued with nnU-Net's --c
    done_before = kill_after_first_checkpoint(train, env, fold / "checkpoint_latest.pth")
    assert not (fold / "checkpoint_final.pth").exists()
    run(train + ["--c"], env)
    losses = train_losses(nnunet_folders["nnUNet_results"], dataset, trainer, "3d_fullres_order")
    assert len(losses) == 3 and losses[:len(done_before)] == done_before
    assert losses[-1] < losses[0]
    summary = validation_summary(nnunet_folders["nnUNet_results"], dataset, trainer, "3d_fullres_order")
    assert set(summary["mean"]) == {"1", "2"}

    inputs = tmp_path / "in"
    inputs.mkdir()
    for image in sorted((raw / "imagesTr").glob("*.nii.gz"))[:2]:
        shutil.copy(image, inputs / image.name)
    out = tmp_path / "out"
    run(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(HIPPO_ID), "-c", "3d_fullres_order",
         "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    import SimpleITK as sitk
    for image in inputs.glob("*.nii.gz"):
        prediction = out / image.name.replace("_0000", "")
        assert sitk.ReadImage(str(prediction)).GetSize() == sitk.ReadImage(str(image)).GetSize()
        assert label_values(prediction) <= {0, 1, 2}


# nnU-Net's residual-encoder preset M (nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM)
RESENC_M_PLANS = "nnUNetResEncUNetMPlans"


@pytest.mark.slow
@pytest.mark.parametrize("arch,trainer,plans", [("order", "nnUNetTrainerORDER_smoke", "nnUNetPlans"),
                                                ("mkunet", "nnUNetTrainerMKUNet_smoke", "nnUNetPlans"),
                                                # the preset's batch (21 at 160 px): one epoch of two steps
                                                ("order", "nnUNetTrainerORDER_twoIterations", RESENC_M_PLANS)])
def test_kvasir_2d_trains_and_predicts(kvasir_order_smoke, tmp_path, arch, trainer, plans):
    env, raw = dict(kvasir_order_smoke["env"]), kvasir_order_smoke["raw"]
    results = kvasir_order_smoke["folders"]["nnUNet_results"]
    preprocessed = kvasir_order_smoke["folders"]["nnUNet_preprocessed"] / raw.name
    configuration, d = f"2d_{arch}", str(KVASIR_ID)
    if plans == RESENC_M_PLANS:  # planned beside nnUNetPlans, as nnU-Net's documentation has it: no new preprocessing
        env["nnUNet_extTrainer"] += os.pathsep + str(short_trainers(tmp_path))
        run(["nnUNetv2_plan_experiment", "-d", d, "-pl", "nnUNetPlannerResEncM"], env)
    if (arch, plans) != ("order", "nnUNetPlans"):  # ORDER on nnUNetPlans: trained by the session fixture
        run(["nnunet-laworder", "plans", "-d", d, "-c", "2d", "--arch", arch, "-p", plans], env)
        run(["nnUNetv2_train", d, configuration, "0", "-tr", trainer, "-p", plans, "-device", "cpu"], env)
    losses = train_losses(results, raw.name, trainer, configuration, plans=plans)
    assert losses[-1] < losses[0] if plans != RESENC_M_PLANS else len(losses) == 1
    model = results / raw.name / f"{trainer}__{plans}__{configuration}"
    if plans == RESENC_M_PLANS:  # ORDER inherits the preset's batch and patch, and reads the data nnUNetPlans wrote
        planned = json.loads((preprocessed / f"{plans}.json").read_text())["configurations"]
        used = json.loads((model / "plans.json").read_text())["configurations"]
        assert used[configuration]["inherits_from"] == "2d" and used["2d"] == planned["2d"]
        assert planned["2d"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
        assert planned["2d"]["data_identifier"] == "nnUNetPlans_2d"
        assert sorted(p.name for p in preprocessed.iterdir() if p.is_dir()) == ["gt_segmentations", "nnUNetPlans_2d"]

    out = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", d, "-c", configuration,
         "-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    images = sorted((raw / "imagesTs").glob("*.png"))
    assert len(images) == KVASIR_TEST
    for image in images:
        prediction = np.array(Image.open(out / image.name.replace("_0000", "")))
        assert prediction.shape == Image.open(image).size[::-1]
        assert set(np.unique(prediction).tolist()) <= {0, 1}

    # nnU-Net's evaluation and model selection read our results folders as their own
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(out), "-djfile", str(model / "dataset.json"),
         "-pfile", str(model / "plans.json"), "-np", "1"], env)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == KVASIR_TEST and 0 <= summary["foreground_mean"]["Dice"] <= 1
    run(["nnUNetv2_find_best_configuration", d, "-c", configuration, "-tr", trainer, "-p", plans, "-f", "0",
         "-np", "1", "--disable_ensembling"], env)
    best = json.loads((results / raw.name / "inference_information.json").read_text())
    assert best["best_model_or_ensemble"]["selected_model_or_models"][0]["plans_identifier"] == plans
    assert best["best_model_or_ensemble"]["selected_model_or_models"][0]["trainer"] == trainer


@pytest.mark.slow
def test_wrong_trainer_for_configuration_is_a_clear_error(kvasir_planned):
    env, _ = kvasir_planned
    with pytest.raises(AssertionError, match="nnUNetTrainerORDER_smoke trains ORDER, but this configuration builds"):
        run(["nnUNetv2_train", str(KVASIR_ID), "2d", "0", "-tr", "nnUNetTrainerORDER_smoke", "-device", "cpu"], env)


# ---------------------------------------------------------------------------------------------------------------
# KiTS19: nnU-Net regions

KITS_TEST = ("case_00110", "case_00152")  # given imaging only (official test cases): predicted, then evaluated
KITS_STEP, KITS_MARGIN = 4, 8  # every 4th row and column of a box 8 pixels beyond the kidneys: ~40 x 80 slices


def write_kits_subset(labels_dir, official, reference) -> None:
    """The real KiTS19 segmentations cropped around the kidneys (and every KITS_STEP-th row and column: nibabel's
    slicer keeps the affine right) in the official layout, each with a CT stand-in of the same geometry whose
    intensities follow the labels (the CT volumes are not in the test data). The test cases get imaging only;
    their cropped segmentations go to ``reference``."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    reference.mkdir()
    for source in sorted(labels_dir.glob("case_*/segmentation.nii.gz")):
        segmentation = nib.load(source)
        labels = np.asarray(segmentation.dataobj)
        box = []
        for axis, margin in enumerate((1, KITS_MARGIN, KITS_MARGIN)):
            present = np.flatnonzero(labels.any(axis=tuple(a for a in range(3) if a != axis)))
            box.append(slice(max(present[0] - margin, 0), present[-1] + margin + 1, 1 if axis == 0 else KITS_STEP))
        cropped = segmentation.slicer[tuple(box)]
        seg = np.asarray(cropped.dataobj)
        ct = (rng.normal(-100, 40, seg.shape) + np.choose(seg, [0, 250, 150])).astype(np.int16)  # body, kidney, tumour
        imaging = nib.Nifti1Image(ct, cropped.affine, cropped.header)
        imaging.set_data_dtype(np.int16)
        case = source.parent.name
        (official / case).mkdir(parents=True)
        nib.save(imaging, official / case / "imaging.nii.gz")
        nib.save(cropped, (reference / f"{case}.nii.gz") if case in KITS_TEST else (official / case / source.name))


def region_decoding(probabilities: np.ndarray, regions_class_order=(1, 2)) -> np.ndarray:
    """nnU-Net's label map of region probabilities: each region's label where its sigmoid exceeds 0.5, in order."""
    segmentation = np.zeros(probabilities.shape[1:], np.uint8)
    for channel, label in enumerate(regions_class_order):
        segmentation[probabilities[channel] > 0.5] = label
    return segmentation


def uncertainty_calls(model, monkeypatch) -> tuple:
    """(the trained network as nnUNetv2_predict builds it, the (multilabel, channels) of each uncertainty its
    attention computed in one forward pass)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    import nnunet_laworder.networks.order as order
    from nnunet_laworder.training.discovery import plugin_trainers

    calls, computed = [], order.prediction_uncertainty

    def recorded(logits, multilabel):
        calls.append((multilabel, logits.shape[1]))
        return computed(logits, multilabel)

    monkeypatch.setattr(order, "prediction_uncertainty", recorded)
    predictor = nnUNetPredictor(device=torch.device("cpu"))
    with plugin_trainers():
        predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,))
    network = predictor.network.eval()
    with torch.no_grad():
        network(torch.randn(1, 1, *predictor.configuration_manager.patch_size))
    return network, calls


@pytest.mark.slow
def test_kits19_regions_train_predict_evaluate(nnunet_folders, tmp_path, monkeypatch):
    """Region training end to end with ORDER's confidence gate, which must read sigmoid (per-region) uncertainty."""
    import SimpleITK as sitk
    from conftest import require_data

    official, reference = tmp_path / "kits19", tmp_path / "reference"
    write_kits_subset(require_data("kits19-labels"), official, reference)
    env = nnunet_env(nnunet_folders)
    assert main(["convert", "kits19", str(official), "-d", str(KITS_ID)]) == 0
    run(["nnUNetv2_plan_and_preprocess", "-d", str(KITS_ID), "-c", "2d", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    # the plans' default ORDER has no gate: the paper's gated variant is the one whose gate reads the uncertainty
    assert main(["plans", "-d", str(KITS_ID), "-c", "2d", "--arch", "order", "--variant", "confidence-gate"]) == 0
    configuration, trainer = "2d_order_confidence-gate", "nnUNetTrainerORDER_smoke"
    run(["nnUNetv2_train", str(KITS_ID), configuration, "0", "-tr", trainer, "-device", "cpu"], env)

    raw = next(nnunet_folders["nnUNet_raw"].glob(f"Dataset{KITS_ID}_*"))
    model = nnunet_folders["nnUNet_results"] / raw.name / f"{trainer}__nnUNetPlans__{configuration}"
    network, calls = uncertainty_calls(model, monkeypatch)
    attention = list(network.decoder.skip_attention.values())
    assert attention and all(stage.confidence_gate for stage in attention)
    assert calls == [(True, 2)] * len(attention)  # sigmoid uncertainty of the two regions at every gated stage

    out = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(KITS_ID), "-c", configuration,
         "-tr", trainer, "-f", "0", "-device", "cpu", "--save_probabilities", "-npp", "0", "-nps", "0"], env)
    for case in KITS_TEST:
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        probabilities = np.load(out / f"{case}.npz")["probabilities"]
        assert probabilities.shape == (2, *prediction.shape)  # one sigmoid per region, no background channel
        # the label map is the regions' decoding: tumour (2) inside kidney+tumour (1 or 2)
        assert np.array_equal(prediction, region_decoding(probabilities))

    run(["nnUNetv2_evaluate_folder", str(reference), str(out), "-djfile", str(model / "dataset.json"),
         "-pfile", str(model / "plans.json"), "-np", "1"], env)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean"]) == {"(1, 2)", "2"}  # scored per region, as the KiTS evaluation does
    assert len(summary["metric_per_case"]) == len(KITS_TEST)
    for case in summary["metric_per_case"]:
        kidney_and_tumour, tumour = case["metrics"]["(1, 2)"], case["metrics"]["2"]
        for count in ("n_ref", "n_pred", "TP"):
            assert kidney_and_tumour[count] >= tumour[count], count
        assert kidney_and_tumour["n_ref"] > 0 and 0 <= kidney_and_tumour["Dice"] <= 1
