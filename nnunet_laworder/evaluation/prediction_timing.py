"""``benchmark --predict``: what ``nnUNetv2_predict`` spends per case on each trained model, side by side.

Each model is nnU-Net's own predictor (``nnUNetPredictor``, set up from the model folder with the command's
defaults by :func:`~nnunet_laworder.nnunet_predictor.load_nnunet_predictor`: step 0.5, Gaussian weighting,
everything on the device on CUDA), and each case is one call of the path
``nnUNetv2_predict -npp 0 -nps 0`` takes (``predict_from_files_sequential``): preprocessing, sliding window,
mirroring, export, one after the other in this process. Not the default worker processes: they are started anew
at every call, and on a busy 2-core machine their start-up took some 13 s of a one-case call whose forward pass
took 40 ms, so every model would have timed alike. A case's time is thus its latency once the model is loaded. The
cases are the dataset's own training images, evenly spaced over their sorted identifiers; models and
mirroring on / off (``--disable_tta``) are interleaved case by case, the model order alternating, so drift in
machine load hits them alike. One untimed call per model and setting comes first. Predictions go to the caller's
scratch folder.
"""
import contextlib
import io
from pathlib import Path
from typing import Dict, List, Sequence, Union

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.models import ModelIdentity
from nnunet_laworder.evaluation.runner import timed
from nnunet_laworder.nnunet_folders import DEFAULT_CHECKPOINT as CHECKPOINT
from nnunet_laworder.nnunet_folders import model_folder, raw_dataset_folder, read_json
from nnunet_laworder.training.nnunet_contract import set_nnunet_attributes

MIRRORING = {"tta": True, "no_tta": False}  # the two settings timed: nnU-Net's default and --disable_tta


def select_cases(dataset: str, count: int) -> Dict[str, List[str]]:
    """``{case: its image files}``: ``count`` training cases of the raw dataset, evenly spaced over the sorted
    identifiers (all of them when it has no more)."""
    folder = raw_dataset_folder(dataset)
    files = get_filenames_of_train_images_and_targets(str(folder), read_json(folder / "dataset.json"))
    identifiers = sorted(files)
    if not identifiers:
        raise InputError(f"{folder} has no training images to predict")
    if count < len(identifiers):
        identifiers = [identifiers[i * len(identifiers) // count] for i in range(count)]
    return {case: files[case]["images"] for case in identifiers}


def checkpoint_file(dataset: str, model: ModelIdentity, fold: Union[int, str]) -> Path:
    return model_folder(dataset, model.trainer, model.plans, model.configuration) / f"fold_{fold}" / CHECKPOINT


def time_predictions(predictors: Dict[str, nnUNetPredictor], cases: Dict[str, List[str]], device,
                     scratch: Path) -> Dict[str, Dict[str, List[float]]]:
    """``{model: {"tta" | "no_tta": seconds per case, in the order of cases}}`` (see the module docstring)."""
    for identifier in predictors:
        (scratch / identifier).mkdir()  # the sequential path writes into an existing folder only

    def predict(identifier: str, case: str, images: Sequence[str], mirroring: bool) -> None:
        predictor = predictors[identifier]
        set_nnunet_attributes(predictor, use_mirroring=mirroring)  # what --disable_tta sets; read at every prediction
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates every case
            predictor.predict_from_files_sequential([list(images)], [str(scratch / identifier / case)])

    first_case, first_images = next(iter(cases.items()))
    for identifier in predictors:
        for mirroring in MIRRORING.values():
            predict(identifier, first_case, first_images, mirroring)  # warm-up, untimed
    order = list(predictors)
    times = {identifier: {setting: [] for setting in MIRRORING} for identifier in order}
    for k, (case, images) in enumerate(cases.items()):
        for setting, mirroring in MIRRORING.items():
            for identifier in (order if k % 2 == 0 else order[::-1]):
                times[identifier][setting].append(
                    timed(device, lambda: predict(identifier, case, images, mirroring)))
    return times
