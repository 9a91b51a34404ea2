"""Layout fidelity (``law evaluate``): did the generator put the lesion where the mask asked?

A trained nnU-Net model (``$nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG``) is the judge: it segments every
synthetic image, and the Dice between its prediction and the case's conditioning mask (its label file) is the
score. The same model on the real training cases is the reference (optimistic where the model trained on them:
the cases of the model's validation fold, when ``splits_final.json`` tells them, are reported apart).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.case_sets import CaseSet
from nnunet_laworder.law.fid import even_subset
from nnunet_laworder.law.generator import foreground_labels
from nnunet_laworder.law.splits import validation_cases
from nnunet_laworder.nnunet_folders import model_folder, preprocessed_dataset_folder
from nnunet_laworder.nnunet_predictor import load_nnunet_predictor


@dataclass
class TrainedModel:
    """A trained nnU-Net model as ``nnUNetv2_predict`` names it (-d, -c, -tr, -p, -f, -chk); several folds are
    ensembled, ``mirroring`` is nnU-Net's test-time augmentation. ``dataset`` None: not known yet (the caller
    fills it in)."""
    dataset: Optional[str]
    configuration: str
    trainer: str = "nnUNetTrainer"
    plans: str = "nnUNetPlans"
    folds: Sequence = ("0",)
    checkpoint: str = "checkpoint_final.pth"
    mirroring: bool = True

    def folder(self) -> Path:
        """The model's folder, which must hold the checkpoint of each of its folds."""
        folder = model_folder(self.dataset, self.trainer, self.plans, self.configuration)
        if not folder.is_dir():
            root = folder.parent
            available = sorted(p.name for p in root.glob("*__*__*") if p.is_dir()) if root.is_dir() else []
            raise InputError(f"no trained model {folder} (available: {', '.join(available) or 'none'}); check "
                             f"--model-dataset, -tr, -p and -c")
        for fold in self.folds:
            checkpoint = folder / f"fold_{fold}" / self.checkpoint
            if not checkpoint.is_file():
                raise InputError(f"{checkpoint} not found: train fold {fold} first (nnUNetv2_train ... {fold})")
        return folder

    def unseen_cases(self, dataset_name: str) -> Optional[List[str]]:
        """The real cases the model never trained on: its validation cases, for a single integer fold whose
        ``splits_final.json`` exists (None when unknown)."""
        if len(self.folds) != 1:
            return None
        try:
            preprocessed = preprocessed_dataset_folder(dataset_name)
        except InputError:  # not preprocessed here: the model's folds are unknown, which is no error
            return None
        return validation_cases(preprocessed, self.folds[0]) or None


def load_predictor(model: TrainedModel, device: torch.device, labels: Sequence[int], role: str = "model"):
    """(nnU-Net's predictor with the model's weights, the model's folder); the model must segment every one of the
    synthetic cases' ``labels`` (an InputError naming it as ``role`` otherwise)."""
    folder = model.folder()
    predictor = load_nnunet_predictor(folder, model.folds, model.checkpoint, device, use_mirroring=model.mirroring)
    missing = sorted(set(int(v) for v in labels) - set(foreground_labels(predictor.dataset_json)))
    if missing:
        raise InputError(f"the {role} {folder} does not segment label(s) {missing} of the synthetic cases")
    return predictor, folder


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> Dict[str, float]:
    """Dice per foreground label; NaN where both are empty (nnU-Net's convention), and the mean over the rest."""
    result = {}
    for label in labels:
        p, r = prediction == label, reference == label
        denominator = p.sum() + r.sum()
        result[str(label)] = float("nan") if denominator == 0 else float(2 * np.logical_and(p, r).sum() / denominator)
    values = [v for v in result.values() if not np.isnan(v)]
    result["mean"] = float(np.mean(values)) if values else float("nan")
    return result


def summarise_dice(per_case: Dict[str, dict], labels: Sequence[int]) -> dict:
    def mean(key, cases):
        values = [per_case[c][key] for c in cases if not np.isnan(per_case[c][key])]
        return float(np.mean(values)) if values else float("nan")

    cases = list(per_case)
    return {"n_cases": len(cases), "mean_per_label": {str(label): mean(str(label), cases) for label in labels},
            "mean": mean("mean", cases), "per_case": per_case}


def predict_dice(predictor, case_set: CaseSet, cases: List[str], labels: Sequence[int], desc: str,
                 progress: bool) -> Dict[str, dict]:
    """``{case: Dice per label}`` of the predictor's segmentation of each case against the case's label file."""
    reader = case_set.reader()
    per_case = {}
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress, leave=False):
        entry = case_set.files[case]
        try:
            image, properties = reader.read_images(entry["images"])
            reference, _ = reader.read_seg(entry["label"])
        except Exception as e:  # noqa: BLE001
            raise InputError(f"case {case}: cannot read its files: {e}") from None
        prediction = predictor.predict_single_npy_array(image.astype(np.float32), {"spacing": properties["spacing"]})
        per_case[case] = dice_per_label(np.asarray(prediction), reference[0], labels)
    return per_case


def layout_fidelity(model: TrainedModel, synthetic: CaseSet, synthetic_cases: List[str], real: CaseSet,
                    real_cases: List[str], labels: Sequence[int], device: torch.device, max_cases: Optional[int],
                    progress: bool) -> dict:
    """The report's ``layout_fidelity`` section; at most ``max_cases`` synthetic and real cases (evenly spaced)."""
    predictor, folder = load_predictor(model, device, labels)
    synthetic_cases, real_cases = even_subset(synthetic_cases, max_cases), even_subset(real_cases, max_cases)
    synthetic_dice = predict_dice(predictor, synthetic, synthetic_cases, labels, "segmenting synthetic", progress)
    real_dice = predict_dice(predictor, real, real_cases, labels, "segmenting real", progress)
    reference = summarise_dice(real_dice, labels)
    unseen = model.unseen_cases(folder.parent.name)
    if unseen is not None:
        unseen = [c for c in real_cases if c in set(unseen)]
        reference["model_validation_cases"] = {k: v for k, v in summarise_dice(
            {c: real_dice[c] for c in unseen}, labels).items() if k != "per_case"}
        reference["model_validation_cases"]["cases"] = unseen
    result = {
        "model": str(folder), "trainer": model.trainer, "plans": model.plans, "configuration": model.configuration,
        "folds": [str(f) for f in model.folds], "checkpoint": model.checkpoint, "mirroring": model.mirroring,
        "labels": [int(v) for v in labels],
        "synthetic": summarise_dice(synthetic_dice, labels),
        "real_reference": reference,
        "note": "Dice between the model's prediction on each image and the case's mask; the real reference is "
                "optimistic for cases the model trained on (model_validation_cases: those it did not)",
    }
    result["dice_ratio_synthetic_to_real"] = (result["synthetic"]["mean"] / reference["mean"]
                                              if reference["mean"] and not np.isnan(reference["mean"]) else None)
    return result
