"""``nnunet-laworder demo``: the shipped sample, and the whole workflow (ORDER, then LAW) on CPU (slow: a few
minutes)."""
import json

import numpy as np
import pytest
from PIL import Image

from nnunet_laworder.cli import main
from nnunet_laworder.demo.paths import N_TEST, SAMPLE
from nnunet_laworder.demo.pipeline import LAW_SYNTHETIC_CASES, held_out_cases
from nnunet_laworder.training.order_trainers import SHORT_SCHEDULE_SEED

N_SAMPLE = 64
# The demo is seeded (nnUNetTrainerORDER_cpu, seed 12345): on one 2-core CPU (torch 2.x, oneDNN) two runs gave the same
# held-out mean Dice, 0.5988 both times (validation 0.5257; `nnunet-laworder demo --output X`, twice, 2026-12-01),
# case for case. Another CPU or torch build rounds differently and so trains another path: five unseeded runs
# before the seeding spread 0.44-0.64 (ORDER's batch norm sees batches of 2, 8 held-out cases make a noisy mean).
# The band is the seeded result +- 0.2, which holds that spread; its floor stays above predicting every pixel as
# polyp (0.37 on these cases, asserted below too), and a broken pipeline (empty or misaligned predictions) scores ~0.
SEEDED_MEAN_DICE = 0.599
MEAN_DICE_BAND = (SEEDED_MEAN_DICE - 0.2, SEEDED_MEAN_DICE + 0.2)


def test_shipped_sample_is_intact():
    images = sorted(p.stem for p in (SAMPLE / "images").iterdir())
    masks = sorted(p.stem for p in (SAMPLE / "masks").iterdir())
    assert len(images) == N_SAMPLE and images == masks
    assert all(p.suffix == ".jpg" for p in (SAMPLE / "images").iterdir())
    for name in images:
        image = Image.open(SAMPLE / "images" / f"{name}.jpg")
        mask = Image.open(SAMPLE / "masks" / f"{name}.png")
        assert image.mode == "RGB" and image.size == mask.size and max(image.size) <= 128
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values == {0, 255}, f"{name}: mask values {values}"
    assert len(held_out_cases()) == N_TEST and set(held_out_cases()) <= set(images)


@pytest.mark.slow
def test_demo_trains_evaluates_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out)]) == 0
    report_dir = out / "report"
    assert str(report_dir.resolve()) in capsys.readouterr().out

    report = json.loads((report_dir / "report.json").read_text())
    cases = report["test"]["cases"]
    assert sorted(c["case"] for c in cases) == held_out_cases()
    for case in cases:
        assert 0 <= case["dice"] <= 1 and 0 <= case["iou"] <= case["dice"]
    assert report["test"]["mean_dice"] == pytest.approx(np.mean([c["dice"] for c in cases]))
    assert MEAN_DICE_BAND[0] < report["test"]["mean_dice"] < MEAN_DICE_BAND[1]
    assert 0 < report["test"]["all_polyp_baseline_dice"] < MEAN_DICE_BAND[0]
    assert 0 <= report["validation_dice"] <= 1
    assert report["network"]["class"] == "ORDER" and 30_000 < report["network"]["parameters"] < 60_000
    assert report["training"]["seed"] == SHORT_SCHEDULE_SEED
    commands = [c.split() for c in report["commands"]]
    # law train runs side by side with nnUNetv2_train: the steps flattened
    assert [c[0] for c in commands] == [
        "nnunet-laworder", "nnUNetv2_plan_and_preprocess", "nnunet-laworder", "nnUNetv2_train", "nnunet-laworder",
        "nnUNetv2_predict", "nnUNetv2_evaluate_folder", "nnunet-laworder", "nnunet-laworder"]
    assert [c[1:3] for c in commands[4:5] + commands[7:]] == [["law", "train"], ["law", "synthesize"],
                                                              ["law", "evaluate"]]
    # law train's output goes to a log of its own (the two trainings' outputs would interleave), named in demo.log
    assert "law train" in (out / "law_train.log").read_text() and "law_train.log" in (out / "demo.log").read_text()
    assert {"train", "LAW train"} <= set(report["stage_seconds"])

    law = report["law"]
    assert law["synthetic_cases"] == LAW_SYNTHETIC_CASES and law["real_cases"] == N_SAMPLE - N_TEST
    # synthetic cases train, never validate; fold 0 validates on the real-only dataset's 1/5 of the real cases
    assert law["fold"]["val_synthetic"] == 0 and 0 < law["fold"]["train_synthetic"] <= LAW_SYNTHETIC_CASES
    real_split = json.loads((out / "nnUNet_preprocessed" / "Dataset990_KvasirSEG" / "splits_final.json").read_text())
    assert law["fold"]["val"] == len(real_split[0]["val"])  # the real-only dataset's fold 0, case for case
    assert 0 <= law["layout_fidelity_synthetic"] <= 1 and 0.3 < law["layout_fidelity_real"] <= 1
    ratios = [w["lesion_to_background"] for w in law["weights"]]
    # step 0 is the ratio prior (never below 1 on the lesion; 1 where the lesion fills half the window or more),
    # then the learned map moves the weights
    assert ratios[0] >= 1 - 1e-5 and ratios[-1] != pytest.approx(ratios[0], abs=1e-3)
    for figure, min_height in (("predictions.png", 100 * N_TEST), ("training_curves.png", 200),
                               ("law_weight_maps.png", 400), ("law_grid.png", 200), ("law_loss_curves.png", 200)):
        with Image.open(report_dir / figure) as image:
            image.verify()
        with Image.open(report_dir / figure) as image:
            assert image.width >= 300 and image.height >= min_height
    markdown = (report_dir / "report.md").read_text()
    assert "| **mean** |" in markdown and "![weight maps](law_weight_maps.png)" in markdown

    before = {p.name: p.read_bytes() for p in report_dir.iterdir()}
    assert main(["demo", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in report_dir.iterdir()} == before
