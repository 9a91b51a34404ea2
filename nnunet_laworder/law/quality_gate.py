"""Quality gate for synthetic cases: keep a case only when a trained nnU-Net model (the judge) finds in its image
the layout its mask asked for.

The judge segments the image as it is written to disk (raw intensities, the layout of nnU-Net's reader), so it
sees what nnU-Net will train on; a case's fidelity is the mean Dice over foreground labels between that
segmentation and the case's mask (``layout_fidelity.dice_per_label``). A case is kept when its fidelity is at
least ``--min-fidelity``.
"""
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.layout_fidelity import TrainedModel, dice_per_label, load_predictor


def check_min_fidelity(value: float) -> float:
    """``value`` when it is a fidelity threshold (in [0, 1]), else the InputError naming it."""
    if not 0 <= value <= 1:  # NaN fails too
        raise InputError(f"--min-fidelity must be in [0, 1], got {value}")
    return value


def passes(fidelity: float, min_fidelity: float) -> bool:
    """The gate's rule: a case at the threshold is kept."""
    return fidelity >= min_fidelity


def case_fidelity(prediction: np.ndarray, label: np.ndarray, labels: Sequence[int]) -> float:
    """Mean Dice over ``labels``; 1.0 when prediction and label are both empty (an empty request met is a pass,
    where ``dice_per_label`` says NaN)."""
    mean = dice_per_label(prediction, label, labels)["mean"]
    return 1.0 if np.isnan(mean) else mean


class Judge:
    """nnU-Net's predictor of one trained model, loaded once, and the foreground labels the cases may hold."""

    def __init__(self, predictor, folder: Path, labels: Sequence[int]):
        self.predictor = predictor
        self.folder = folder
        self.labels = [int(v) for v in labels]

    @staticmethod
    def check(model: TrainedModel) -> Path:
        """The model's folder, or the InputError naming what is missing; loads no weights (call it before any
        work that a missing judge would waste)."""
        return model.folder()

    @classmethod
    def load(cls, model: TrainedModel, device: torch.device, labels: Sequence[int]) -> "Judge":
        """The judge of ``model`` on ``device``, which must segment every one of ``labels``."""
        predictor, folder = load_predictor(model, device, labels, role="judge")
        return cls(predictor, folder, labels)

    def fidelity(self, image: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> float:
        """Fidelity of one case: ``image (C, *spatial)`` in raw intensities as nnU-Net's reader returns it,
        ``label (*spatial)``, ``spacing`` from the reader's properties."""
        if label.shape != image.shape[1:]:
            raise ValueError(f"label shape {label.shape} is not the image's spatial shape {image.shape[1:]}")
        prediction = self.predictor.predict_single_npy_array(image.astype(np.float32), {"spacing": spacing})
        return case_fidelity(np.asarray(prediction), label, self.labels)


def gate_summary(fidelities: List[float], rejected: int, min_fidelity: float) -> dict:
    """Provenance of the gate: ``fidelities`` of the accepted cases, ``rejected`` the number of cases (sampling
    attempts) it turned away. JSON-safe: None where there is nothing to average."""
    below = [f for f in fidelities if not passes(f, min_fidelity)]
    if below:
        raise ValueError(f"{len(below)} accepted fidelities are below --min-fidelity {min_fidelity}: pass the "
                         f"accepted cases' fidelities only")
    accepted = len(fidelities)
    judged = accepted + rejected
    return {
        "min_fidelity": float(min_fidelity),
        "accepted": accepted,
        "rejected": int(rejected),
        "acceptance_rate": accepted / judged if judged else None,
        "accepted_fidelity_mean": float(np.mean(fidelities)) if accepted else None,
        "accepted_fidelity_min": float(np.min(fidelities)) if accepted else None,
    }
