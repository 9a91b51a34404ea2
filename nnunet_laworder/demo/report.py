"""The demo's report: held-out Dice / IoU from nnU-Net's evaluation, the trained network, figures, and the LAW
stage (weight maps, synthetic samples, layout fidelity, the real + synthetic split)."""
import json
import shutil
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from PIL import Image

from nnunet_laworder.demo.paths import CONFIGURATION, FOLD, LAW_TRAIN_LOG, LOG, DemoPaths
from nnunet_laworder.law.evaluation import GRID as LAW_GRID, REPORT as LAW_EVALUATION_REPORT
from nnunet_laworder.law.provenance import is_synthetic
from nnunet_laworder.law.splits import SPLITS_FILE
from nnunet_laworder.nnunet_folders import read_json
from nnunet_laworder.workflow import export_lines

FOREGROUND = "1"  # the polyp label of the converted dataset


def test_metrics(summary_file: Path) -> List[dict]:
    """Per held-out case Dice and IoU of the polyp label, from nnU-Net's evaluation summary."""
    summary = read_json(summary_file)
    cases = []
    for entry in summary["metric_per_case"]:
        metrics = entry["metrics"][FOREGROUND]
        cases.append({"case": Path(entry["reference_file"]).name[:-len(".png")],
                      "dice": metrics["Dice"], "iou": metrics["IoU"]})
    return sorted(cases, key=lambda c: c["case"])


def all_polyp_dice(labels: Path, cases: List[dict]) -> float:
    """Mean Dice of the trivial prediction "everything is polyp": Kvasir polyps are large, so this is far above 0."""
    shares = [np.mean(np.asarray(Image.open(labels / f"{case['case']}.png")) > 0) for case in cases]
    return float(np.mean([2 * share / (1 + share) for share in shares]))


def validation_dice(fold_folder: Path) -> float:
    """nnU-Net's fold validation (the cases of the fold's split it held out of training): mean foreground Dice."""
    summary = read_json(fold_folder / "validation" / "summary.json")
    return summary["foreground_mean"]["Dice"]


def training_seed(fold_folder: Path) -> Optional[int]:
    """The seed the training ran with: the trainer's ``run_seed`` as nnU-Net's debug.json stores it (its str())."""
    value = read_json(fold_folder / "debug.json").get("run_seed", "None")
    return None if value == "None" else int(value)


def trained_network(model_folder: Path, fold_folder: Path):
    """The trained network, rebuilt from the saved plans and loaded with the final checkpoint's weights."""
    dataset_json = read_json(model_folder / "dataset.json")
    plans = PlansManager(str(model_folder / "plans.json"))
    configuration = plans.get_configuration(CONFIGURATION)
    checkpoint = torch.load(fold_folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    network = get_network_from_plans(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, allow_init=False, deep_supervision=True)
    network.load_state_dict(checkpoint["network_weights"])
    return network, checkpoint


def overlay(ax, image: np.ndarray, mask: np.ndarray, colour: str, title: str) -> None:
    ax.imshow(image)
    if mask is not None:
        ax.imshow(np.ma.masked_equal(mask, 0), cmap=ListedColormap([colour]), alpha=0.45, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_predictions(paths: DemoPaths, cases: List[dict], out: Path) -> None:
    """One row per held-out case: image, ground truth overlay, prediction overlay (with its Dice)."""
    # a Figure without pyplot: no display and no global backend, also safe inside a GUI session
    fig = Figure(figsize=(6, 1.9 * len(cases)))
    axes = fig.subplots(len(cases), 3, squeeze=False)
    for row, case in zip(axes, cases):
        name = case["case"]
        image = np.asarray(Image.open(paths.raw_dataset / "imagesTs" / f"{name}_0000.png").convert("RGB"))
        truth = np.asarray(Image.open(paths.raw_dataset / "labelsTs" / f"{name}.png"))
        prediction = np.asarray(Image.open(paths.predictions / f"{name}.png"))
        overlay(row[0], image, None, "", name[:12])
        overlay(row[1], image, truth, "lime", "ground truth")
        overlay(row[2], image, prediction, "red", f"ORDER, Dice {case['dice']:.2f}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def lesion_weight_ratios(weight_maps: Path) -> List[dict]:
    """Per weight-map snapshot: mean LAW weight on lesion pixels / on background pixels of the fixed masks (the
    ratio prior's at step 0, before the learned map has warmed up)."""
    snapshots = np.load(weight_maps)
    lesion = snapshots["masks"] > 0
    return [{"step": int(step), "lesion_to_background": float(maps[lesion].mean() / maps[~lesion].mean())}
            for step, maps in zip(snapshots["steps"], snapshots["maps"])]


def law_summary(paths: DemoPaths) -> dict:
    """What the LAW stage produced: the new dataset, its fold-0 split, layout fidelity and the weights' focus."""
    evaluation = read_json(paths.law_evaluation / LAW_EVALUATION_REPORT)
    fold = read_json(paths.law_dataset / SPLITS_FILE)[FOLD]
    fidelity = evaluation["layout_fidelity"]
    return {
        "dataset": paths.law_dataset.name,
        "synthetic_cases": evaluation["n_synthetic_cases"],
        "real_cases": evaluation["n_real_cases"],
        "fold": {"train": len(fold["train"]), "train_synthetic": sum(map(is_synthetic, fold["train"])),
                 "val": len(fold["val"]), "val_synthetic": sum(map(is_synthetic, fold["val"]))},
        "layout_fidelity_synthetic": fidelity["synthetic"]["mean"],
        "layout_fidelity_real": fidelity["real_reference"]["mean"],
        "weights": lesion_weight_ratios(paths.law_run / "weight_maps.npz"),
    }


def law_markdown(law: dict) -> List[str]:
    fold = law["fold"]
    weights = ", ".join(f"{w['lesion_to_background']:.2f} at step {w['step']}" for w in law["weights"])
    return [
        "## LAW: synthetic data",
        "",
        f"`law train` fitted the mask-conditioned diffusion generator on fold {FOLD}'s training cases only; "
        f"`law synthesize` wrote `{law['dataset']}`: {law['real_cases']} real + {law['synthetic_cases']} synthetic "
        f"cases. Its fold {FOLD} trains on {fold['train']} cases ({fold['train_synthetic']} synthetic) and validates "
        f"on {fold['val']} real cases ({fold['val_synthetic']} synthetic), the same real cases as the real-only "
        f"dataset.",
        "",
        f"- mean LAW weight on lesion / on background pixels: {weights} (the ratio prior at step 0, then prior x "
        f"the learned map of where the denoiser errs)",
        f"- layout fidelity (Dice between the conditioning mask and the ORDER model's prediction on the image): "
        f"**{law['layout_fidelity_synthetic']:.3f}** on synthetic images, {law['layout_fidelity_real']:.3f} on real "
        f"ones. The demo's generator inpaints 48x48 lesion windows at the images' own resolution and trains for a "
        f"few CPU minutes; `law train`'s defaults (20,000 steps, 128x128 windows) are sized for a GPU.",
        "",
        "![weight maps](law_weight_maps.png)",
        "",
        "![mask / real / synthetic](law_grid.png)",
        "",
        "![LAW training losses](law_loss_curves.png)",
        "",
    ]


def markdown(report: dict) -> str:
    """report.md: the numbers, the per-case table and the figures."""
    test = report["test"]
    lines = [
        "# nnunet-laworder demo: ORDER and LAW on a Kvasir-SEG sample",
        "",
        f"Trainer `{report['trainer']}` on `{report['device']}`, configuration `{CONFIGURATION}`, fold {FOLD}: "
        f"{report['network']['parameters']:,} parameters, {report['training']['epochs']} epochs in "
        f"{report['training']['seconds']:.0f} s (seed {report['training']['seed']}).",
        "",
        f"- held-out test cases ({len(test['cases'])}): mean Dice **{test['mean_dice']:.3f}**, "
        f"mean IoU {test['mean_iou']:.3f} (predicting every pixel as polyp would score a mean Dice of "
        f"{test['all_polyp_baseline_dice']:.3f}: Kvasir polyps are large)",
        f"- nnU-Net fold-{FOLD} validation: mean Dice {report['validation_dice']:.3f}",
        "",
        "| case | Dice | IoU |",
        "|---|---|---|",
        *(f"| {c['case']} | {c['dice']:.3f} | {c['iou']:.3f} |" for c in test["cases"]),
        f"| **mean** | **{test['mean_dice']:.3f}** | **{test['mean_iou']:.3f}** |",
        "",
        "![predictions](predictions.png)",
        "",
        "![training curves](training_curves.png)",
        "",
        *(law_markdown(report["law"]) if report["law"] else []),
        f"Commands run (output in `../{LOG}`" + (f"; law train's, run beside nnUNetv2_train, in `../{LAW_TRAIN_LOG}`"
                                                 if report["law"] else "") + "):",
        "",
        "```",
        *export_lines(report["environment"]),
        *report["commands"],
        "```",
        "",
        "Data: a downscaled sample of Kvasir-SEG (Jha et al., \"Kvasir-SEG: A Segmented Polyp Dataset\", MMM 2020); "
        "research and educational use, cite the paper.",
        "",
    ]
    return "\n".join(lines)


def write_report(paths: DemoPaths, trainer: str, device: str, environment: dict, commands: List[str],
                 timings: dict, law: bool = True) -> Path:
    """Write report.json, report.md, predictions.png and training_curves.png into ``paths.report``, and with the
    LAW stage law_weight_maps.png, law_grid.png and law_loss_curves.png."""
    cases = test_metrics(paths.predictions / "summary.json")
    fold_folder = paths.fold_folder(trainer)
    network, checkpoint = trained_network(paths.model_folder(trainer), fold_folder)
    report = {
        "dataset": paths.raw_dataset.name,
        "trainer": trainer,
        "configuration": CONFIGURATION,
        "fold": FOLD,
        "device": device,
        "test": {"cases": cases, "mean_dice": float(np.mean([c["dice"] for c in cases])),
                 "mean_iou": float(np.mean([c["iou"] for c in cases])),
                 "all_polyp_baseline_dice": all_polyp_dice(paths.raw_dataset / "labelsTs", cases)},
        "validation_dice": validation_dice(fold_folder),
        "network": {"class": type(network).__name__,
                    "parameters": sum(p.numel() for p in network.parameters())},
        "training": {"seconds": timings["train"], "epochs": checkpoint["current_epoch"],
                     "seed": training_seed(fold_folder)},
        "law": law_summary(paths) if law else None,
        "stage_seconds": timings,
        "environment": environment,
        "commands": commands,
    }
    paths.report.mkdir()
    (paths.report / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_predictions(paths, cases, paths.report / "predictions.png")
    shutil.copy(fold_folder / "progress.png", paths.report / "training_curves.png")
    if law:
        shutil.copy(paths.law_run / "weight_maps.png", paths.report / "law_weight_maps.png")
        shutil.copy(paths.law_run / "loss_curves.png", paths.report / "law_loss_curves.png")
        shutil.copy(paths.law_evaluation / LAW_GRID, paths.report / "law_grid.png")
    (paths.report / "report.md").write_text(markdown(report))
    return paths.report
