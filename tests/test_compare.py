"""``nnunet-laworder compare`` on real nnU-Net result folders from short CPU trainings of a Kvasir-SEG subset.

One module-wide setup (the expensive part): a 10-case subset at 64 px, planned by nnU-Net, with
* nnU-Net's default network on ``2d``, folds 0 and 1, trained for two iterations (nnunet_helpers.SHORT_TRAINERS:
  nnU-Net's own recipe otherwise; its near-initial predictions give Dice values that differ from case to case);
* ORDER on ``2d_order``, fold 0 only, with the smoke recipe cut to two iterations too, so ``-f 0 1`` misses a fold.
The module trains its own models: compare needs both networks, two folds of one, on one dataset, which no session
fixture trains. ``nnunet-laworder`` commands run forked from one preloaded process (preloaded_cli.py).
"""
import json
import os
import shutil

import numpy as np
import pytest

from nnunet_helpers import run
from nnunet_laworder.cli import main
from test_benchmark import planned_kvasir_subset

DATASET_ID = 512
CASES = 10  # nnU-Net's five folds: two validation cases each
BASELINE, ORDER = "nnUNetTrainer_twoIterations", "nnUNetTrainerORDER_twoIterations"
BASELINE_ID = f"{BASELINE}__nnUNetPlans__2d"
ORDER_ID = f"{ORDER}__nnUNetPlans__2d_order"


def test_unknown_dataset_is_an_input_error(nnunet_dirs, capsys):
    assert main(["compare", "-d", "997", "-c", "2d", "-tr", "nnUNetTrainer"]) == 2
    assert "dataset 997 not found" in capsys.readouterr().err


def test_missing_test_summaries_name_the_commands_that_make_them(nnunet_dirs, capsys):
    model = nnunet_dirs["nnUNet_results"] / "Dataset512_KvasirSEG" / "nnUNetTrainer__nnUNetPlans__2d"
    model.mkdir(parents=True)  # a trained model's folder, as far as the test split goes: no fold has test results
    assert main(["compare", "-d", "512", "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0", "1", "--split", "test"]) == 2
    err = capsys.readouterr().err
    raw, fold = nnunet_dirs["nnUNet_raw"] / "Dataset512_KvasirSEG", model / "fold_0" / "test"
    for expected in (model / "fold_0" / "test" / "summary.json", model / "fold_1" / "test" / "summary.json",
                     f"nnUNetv2_predict -i {raw / 'imagesTs'} -o {fold / 'predictions'} -d 512 -c 2d -tr nnUNetTrainer "
                     f"-p nnUNetPlans -f 0",
                     f"nnUNetv2_evaluate_folder {raw / 'labelsTs'} {fold / 'predictions'} -djfile "
                     f"{fold / 'predictions' / 'dataset.json'} -pfile {fold / 'predictions' / 'plans.json'} -o "
                     f"{fold / 'summary.json'}"):
        assert str(expected) in err
    assert "crossval" not in err  # no merged summary of test cases exists to fall back on
    assert main(["compare", "-d", "512", "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0"]) == 2
    err = capsys.readouterr().err
    assert str(model / "fold_0" / "validation" / "summary.json") in err and "crossval_results_folds_0" in err


def test_a_test_case_predicted_by_several_folds_is_paired_once():
    from nnunet_laworder.evaluation.compare import case_dice

    # compare's per-case entries of one model, folds 0 and 1 on the same two test cases
    model = {"per_case": [{"fold": fold, "case": case, "Dice": {"polyp": dice}}
                          for fold, case, dice in (("0", "a.png", 0.5), ("0", "b.png", None), ("1", "a.png", 0.7),
                                                   ("1", "b.png", 0.2))]}
    assert case_dice(model) == {"a.png": pytest.approx(0.6), "b.png": 0.2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    with planned_kvasir_subset(root, DATASET_ID, CASES, archs=("order",)) as (env, dirs, cli):
        # augmentation in the training process: no worker start-up for a few iterations
        train_env = dict(env, nnUNet_n_proc_DA="0")
        for configuration, trainer, fold in (("2d", BASELINE, 0), ("2d", BASELINE, 1), ("2d_order", ORDER, 0)):
            run(["nnUNetv2_train", str(DATASET_ID), configuration, str(fold), "-tr", trainer, "-device", "cpu"],
                train_env)
        yield env, dirs, root, next(dirs["nnUNet_results"].glob(f"Dataset{DATASET_ID}_*")), cli


def summary(model_folder, fold) -> dict:
    return json.loads((model_folder / f"fold_{fold}" / "validation" / "summary.json").read_text())


def nanmean(values):
    return float(np.nanmean(np.array(values, dtype=float)))


@pytest.mark.slow
def test_compare_equals_nnunet_summaries_and_flags_the_missing_fold(trained):
    from nnunet_laworder.evaluation.complexity import network_complexity

    env, dirs, root, results, cli = trained
    out_json, out_png = root / "compare.json", root / "compare.png"
    result = cli.check(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER,
                        "-f", "0", "1", "--json", str(out_json), "--png", str(out_png)])
    report = json.loads(out_json.read_text())
    models = {m["identifier"]: m for m in report["models"]}
    assert list(models) == [BASELINE_ID, ORDER_ID] and report["reference"] == BASELINE_ID
    assert models[BASELINE_ID]["is_reference"] and not models[ORDER_ID]["is_reference"]

    # every number per fold is nnU-Net's, the statistics over folds and cases follow from them
    baseline = models[BASELINE_ID]
    assert baseline["folds_found"] == ["0", "1"] and baseline["missing_folds"] == [] and baseline["n_cases"] == 4
    summaries = {fold: summary(results / BASELINE_ID, fold) for fold in ("0", "1")}
    dice_per_case = [c["metrics"]["1"]["Dice"] for s in summaries.values() for c in s["metric_per_case"]]
    assert len(set(dice_per_case)) > 1  # not a degenerate all-equal result
    polyp = baseline["labels"]["polyp"]
    assert set(polyp) >= {"Dice", "IoU", "TP", "FP", "FN", "TN", "n_ref", "n_pred"}
    for metric, stats in polyp.items():
        per_fold = [summaries[f]["mean"]["1"][metric] for f in ("0", "1")]
        assert stats["per_fold"] == {"0": per_fold[0], "1": per_fold[1]}, metric
        assert stats["folds"]["mean"] == pytest.approx(np.mean(per_fold))
        assert stats["folds"]["std"] == pytest.approx(np.std(per_fold, ddof=1))
        per_case = [c["metrics"]["1"][metric] for s in summaries.values() for c in s["metric_per_case"]]
        assert stats["cases"]["mean"] == pytest.approx(nanmean(per_case)) and stats["cases"]["n"] == 4
        assert stats["cases"]["std"] == pytest.approx(np.nanstd(per_case, ddof=1))
    for metric in ("Dice", "IoU"):
        assert baseline["foreground_mean"][metric]["per_fold"] == {
            f: summaries[f]["foreground_mean"][metric] for f in ("0", "1")}
    assert [c["Dice"]["polyp"] for c in baseline["per_case"]] == dice_per_case

    # ORDER has fold 0 only: flagged, and its numbers are fold 0's alone
    order = models[ORDER_ID]
    assert order["missing_folds"] == ["1"] and order["folds_found"] == ["0"]
    fold0 = summary(results / ORDER_ID, "0")
    assert order["labels"]["polyp"]["Dice"]["folds"] == {"mean": fold0["mean"]["1"]["Dice"], "std": None, "n": 1}
    assert order["n_cases"] == len(fold0["metric_per_case"])
    assert f"{ORDER_ID}: fold(s) 1 have no validation/summary.json" in result.stderr
    assert "1/2 (missing 1)" in result.stdout and f"{BASELINE_ID} **(reference)**" in result.stdout

    # parameters and GMACs of the networks built from each model's plans, as `complexity` counts them
    patch = json.loads((results / BASELINE_ID / "plans.json").read_text())["configurations"]["2d"]["patch_size"]
    for model, arch in ((baseline, "nnunet"), (order, "order")):
        expected = network_complexity(arch, 2, 3, 2, patch)
        assert model["parameters"] == expected["parameters"]
        assert model["gmacs"] == pytest.approx(expected["gmacs"], rel=2e-3)
        assert model["built_by"] == model["trainer"]
    assert out_png.stat().st_size > 10_000


@pytest.mark.slow
def test_statistics_over_cases_equal_nnunet_cross_validation_summary(trained):
    """nnU-Net's own merged evaluation of both folds is the statistics over cases; with only that summary (no fold
    summaries) compare falls back to it."""
    env, dirs, root, results, cli = trained
    run(["nnUNetv2_accumulate_crossval_results", str(DATASET_ID), "-c", "2d", "-tr", BASELINE, "-f", "0", "1"],
        env)
    merged = json.loads((results / BASELINE_ID / "crossval_results_folds_0_1" / "summary.json").read_text())
    from nnunet_laworder.evaluation.compare import run_compare

    baseline = run_compare(str(DATASET_ID), ["2d"], [BASELINE], folds=["0", "1"])["models"][0]
    for metric in ("Dice", "IoU", "TP", "FN"):
        assert baseline["labels"]["polyp"][metric]["cases"]["mean"] == pytest.approx(merged["mean"]["1"][metric])
        assert baseline["foreground_mean"][metric]["cases"]["mean"] == pytest.approx(
            merged["foreground_mean"][metric])

    # the same model folder with its fold summaries gone: the merged summary is read, no statistics over folds
    copy = results / BASELINE_ID.replace(BASELINE, "nnUNetTrainer_noFoldSummaries")
    shutil.copytree(results / BASELINE_ID, copy)
    for fold in ("0", "1"):
        (copy / f"fold_{fold}" / "validation" / "summary.json").unlink()
    fallback = run_compare(str(DATASET_ID), ["2d"], ["nnUNetTrainer_noFoldSummaries"], folds=["0", "1"])
    model = fallback["models"][0]
    assert model["source"] == "crossval" and model["missing_folds"] == [] and model["folds_found"] == []
    dice = model["labels"]["polyp"]["Dice"]
    assert dice["folds"]["mean"] is None and dice["cases"]["mean"] == pytest.approx(merged["mean"]["1"]["Dice"])
    # a trainer class that is not importable here: the network comes from the plans' architecture
    assert model["built_by"].startswith("get_network_from_plans") and model["parameters"] == baseline["parameters"]
    assert any("merged cross-validation summary" in w for w in fallback["warnings"])


@pytest.mark.slow
def test_latency_from_benchmark_json(trained):
    env, dirs, root, results, cli = trained
    bench_json, out_png = root / "bench.json", root / "compare_latency.png"
    cli.check(["benchmark", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER, "-device", "cpu",
               "--repeats", "1", "--warmup", "0", "--no-memory", "--json", str(bench_json)])
    bench = {row["identifier"]: row for row in json.loads(bench_json.read_text())["rows"]}
    result = cli.check(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER, "-f", "0",
                        "--benchmark-json", str(bench_json), "--png", str(out_png)])
    for line, identifier in zip([l for l in result.stdout.splitlines() if l.startswith("| nnUNetTrainer")],
                                (BASELINE_ID, ORDER_ID)):
        assert line.startswith(f"| {identifier}")
        assert line.rstrip(" |").endswith(f"{bench[identifier]['forward_ms']:.1f}")
        assert f"{bench[identifier]['parameters']:,}" in line
    assert "missing" not in result.stdout and "compare: warning" not in result.stderr
    assert out_png.stat().st_size > 10_000


@pytest.mark.slow
def test_models_without_results_are_input_errors(trained, capsys):
    env, dirs, root, results, cli = trained
    assert main(["compare", "-d", str(DATASET_ID), "-c", "2d_order", "-tr", "nnUNetTrainerORDER"]) == 2
    err = capsys.readouterr().err
    assert str(results / "nnUNetTrainerORDER__nnUNetPlans__2d_order") in err and "nnUNetv2_train" in err
    assert main(["compare", "-d", str(DATASET_ID), "-c", "2d_order", "-tr", ORDER, "-f", "3", "4"]) == 2
    err = capsys.readouterr().err
    assert str(results / ORDER_ID / "fold_3" / "validation" / "summary.json") in err
    assert main(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "2d", "-tr", BASELINE, ORDER]) == 2
    assert "paired by position" in capsys.readouterr().err


@pytest.mark.slow
def test_paired_comparison_equals_a_hand_computation_on_the_summaries(trained):
    env, dirs, root, results, cli = trained
    out_json = root / "compare_paired.json"
    result = cli.check(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER, "-f", "0",
                        "--paired", "2d", "--json", str(out_json)])
    report = json.loads(out_json.read_text())
    assert report["paired_reference"] == BASELINE_ID
    stats = report["paired"][f"{ORDER_ID} vs {BASELINE_ID}"]
    reference = {os.path.basename(c["reference_file"]): c["metrics"]["1"]["Dice"]
                 for c in summary(results / BASELINE_ID, "0")["metric_per_case"]}
    order = {os.path.basename(c["reference_file"]): c["metrics"]["1"]["Dice"]
             for c in summary(results / ORDER_ID, "0")["metric_per_case"]}
    diffs = [order[c] - reference[c] for c in sorted(reference) if np.isfinite(order[c] - reference[c])]
    assert stats["cases"] == len(diffs) and stats["mean_diff"] == pytest.approx(np.mean(diffs))
    assert stats["improved"] == sum(d > 0 for d in diffs) and stats["worse"] == sum(d < 0 for d in diffs)
    assert min(diffs) - 1e-12 <= stats["ci95"][0] <= stats["mean_diff"] <= stats["ci95"][1] <= max(diffs) + 1e-12
    assert "Paired per-case Dice differences" in result.stdout
    assert main(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER, "-f", "0",
                 "--paired", "3d_fullres"]) == 2


@pytest.mark.slow
def test_compare_reads_test_summaries(trained, kvasir_dir):
    """--split test: each model's fold_X/test/summary.json, written by the commands of commands_to_test (the trained
    models predict a test split added to their dataset, nnU-Net evaluates them), paired on the test cases."""
    from nnunet_laworder.nnunet_folders import commands_to_test

    env, dirs, root, results, cli = trained
    raw = next(dirs["nnUNet_raw"].glob(f"Dataset{DATASET_ID}_*"))
    official = root / "test_official"
    names = sorted(p.name for p in (kvasir_dir / "images").glob("*.jpg"))[CASES:CASES + 2]  # not training pairs
    for sub in ("images", "masks"):
        (official / sub).mkdir(parents=True)
        for name in names:
            shutil.copy(kvasir_dir / sub / name, official / sub / name)
    cli.check(["convert", "kvasir-seg", str(official), "-d", str(DATASET_ID), "--max-size", "64", "--test-only"])
    for configuration, trainer in (("2d", BASELINE), ("2d_order", ORDER)):
        for command in commands_to_test(raw, results / f"{trainer}__nnUNetPlans__{configuration}", DATASET_ID,
                                        configuration, trainer, "nnUNetPlans", 0, "cpu", single_process=True):
            run(command, env)

    out_json = root / "compare_test.json"
    result = cli.check(["compare", "-d", str(DATASET_ID), "-c", "2d", "2d_order", "-tr", BASELINE, ORDER, "-f", "0",
                        "1", "--split", "test", "--paired", BASELINE, "--json", str(out_json)])
    report = json.loads(out_json.read_text())
    assert report["split"] == "test" and "nnU-Net test results, " in result.stdout
    for model in report["models"]:
        test = json.loads((results / model["identifier"] / "fold_0" / "test" / "summary.json").read_text())
        assert model["folds_found"] == ["0"] and model["missing_folds"] == ["1"]  # fold 1's model was not tested
        assert f"{model['identifier']}: fold(s) 1 have no test/summary.json" in result.stderr
        assert sorted(c["case"] for c in model["per_case"]) == [name.replace(".jpg", ".png") for name in names]
        assert model["labels"]["polyp"]["Dice"]["per_fold"] == {"0": test["mean"]["1"]["Dice"]}
        assert [c["Dice"]["polyp"] for c in model["per_case"]] == [c["metrics"]["1"]["Dice"]
                                                                   for c in test["metric_per_case"]]
    assert report["paired"][f"{ORDER_ID} vs {BASELINE_ID}"]["cases"] == 2
