"""Where nnU-Net keeps a dataset's files, and the plugin's own files beside them: the one home for this knowledge.

nnU-Net's three roots (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) come from ``nnunetv2.paths``;
dataset ids become names through nnU-Net's ``maybe_convert_to_dataset_name``. Every function raises an
:class:`InputError` that names the missing variable, folder or file and the command that makes it.
Also here: output folders checked before any work, atomic JSON writing (a reader never sees half a file) and
``-device`` resolution as nnU-Net's.
"""
import json
import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnunet_laworder.errors import InputError

DEFAULT_PLANS = "nnUNetPlans"
DEFAULT_CHECKPOINT = "checkpoint_final.pth"  # nnUNetv2_predict's default -chk
DEFAULT_CONFIGURATIONS = ("2d", "3d_fullres")  # nnU-Net's default configuration per dimension, 2D first
# the cases a fold's model is evaluated on: its validation cases (nnUNetv2_train) or the raw dataset's imagesTs
SPLITS = ("validation", "test")


def dataset_name(dataset: Union[str, int], where: str = "nnUNet_raw, nnUNet_preprocessed or nnUNet_results") -> str:
    """``DatasetXXX_Name`` of an id or a name."""
    try:
        return maybe_convert_to_dataset_name(str(dataset))
    except RuntimeError:
        raise InputError(f"dataset {dataset} not found in {where}") from None


def dataset_id(name: str) -> int:
    """The id of ``DatasetXXX_Name``."""
    return int(name[len("Dataset"):len("Dataset") + 3])


def raw_dataset_folder(dataset: Union[str, int]) -> Path:
    """``$nnUNet_raw/DatasetXXX_Name`` holding a dataset.json."""
    if not nnUNet_raw.is_set():
        raise InputError("nnUNet_raw is not set; export it as for nnUNetv2_plan_and_preprocess")
    folder = Path(nnUNet_raw.get()) / dataset_name(dataset, f"nnUNet_raw ({nnUNet_raw.get()})")
    if not (folder / "dataset.json").is_file():
        raise InputError(f"{folder / 'dataset.json'} not found: the raw dataset is incomplete")
    return folder


def preprocessed_dataset_folder(dataset: Union[str, int]) -> Path:
    """``$nnUNet_preprocessed/DatasetXXX_Name``, which nnUNetv2_plan_and_preprocess makes."""
    if not nnUNet_preprocessed.is_set():
        raise InputError("nnUNet_preprocessed is not set; export it as for nnUNetv2_plan_and_preprocess")
    try:
        name = maybe_convert_to_dataset_name(str(dataset))
    except RuntimeError:
        raise InputError(f"dataset {dataset} not found in nnUNet_preprocessed ({nnUNet_preprocessed.get()}) or "
                         f"nnUNet_raw; run nnUNetv2_plan_and_preprocess -d {dataset} first") from None
    folder = Path(nnUNet_preprocessed.get()) / name
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    return folder


def parse_fold(fold: str, option: str = "-f") -> Union[int, str]:
    """A fold as nnUNetv2_predict's -f takes it: a number or ``all``; ``option`` names it in the error."""
    if fold == "all":
        return fold
    try:
        return int(fold)
    except ValueError:
        raise InputError(f"{option} must be a fold number or 'all', got {fold!r}") from None


def plans_file(dataset: Union[str, int], plans: str = DEFAULT_PLANS) -> Path:
    """``$nnUNet_preprocessed/DatasetXXX_Name/PLANS.json``, which must exist."""
    path = preprocessed_dataset_folder(dataset) / f"{plans}.json"
    if not path.is_file():
        raise InputError(f"plans file {path} not found; run nnUNetv2_plan_and_preprocess -d {dataset} "
                         f"(with -pl for other plans) or give the plans identifier with -p")
    return path


def load_plans(dataset: Union[str, int], plans: str = DEFAULT_PLANS) -> dict:
    return read_json(plans_file(dataset, plans))


def check_configuration(plans: dict, configuration: str, where: str) -> None:
    available = plans["configurations"]
    if configuration not in available:
        raise InputError(f"{where} has no configuration '{configuration}' (available: {', '.join(available)}); "
                         f"ORDER / MK-UNet configurations are added with `nnunet-laworder plans`")


def default_configuration(plans: dict) -> str:
    """``2d``, else ``3d_fullres``, else the plans' first configuration."""
    configurations = plans["configurations"]
    for name in DEFAULT_CONFIGURATIONS:
        if name in configurations:
            return name
    return next(iter(configurations))


def results_root() -> Path:
    if not nnUNet_results.is_set():
        raise InputError("nnUNet_results is not set; export it as for nnUNetv2_train")
    return Path(nnUNet_results.get())


def model_folder(dataset: Union[str, int], trainer: str, plans: str, configuration: str) -> Path:
    """``$nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG``, named by nnU-Net's own function (it may not exist)."""
    root = results_root()
    try:
        return Path(get_output_folder(str(dataset), trainer, plans, configuration))
    except RuntimeError:  # the dataset id is in none of nnU-Net's folders
        raise InputError(f"dataset {dataset} not found in nnUNet_raw, nnUNet_preprocessed or nnUNet_results "
                         f"({root})") from None


def split_summary(model: Union[str, Path], fold, split: str = "validation") -> Path:
    """``MODEL/fold_F/<split>/summary.json``, nnU-Net's evaluation of a fold's model on a split (SPLITS):
    ``nnUNetv2_train`` writes the validation one, :func:`commands_to_test` the test one (its predictions in
    ``predictions/`` beside it)."""
    return Path(model) / f"fold_{fold}" / split / "summary.json"


def commands_to_test(raw: Union[str, Path], model: Union[str, Path], dataset: Union[str, int], configuration: str,
                     trainer: str, plans: str, fold, device: Optional[str] = None, single_process: bool = False
                     ) -> Tuple[List[str], List[str]]:
    """``nnUNetv2_predict`` of the raw dataset folder ``raw``'s imagesTs by one fold of a model (its folder
    ``model``), then ``nnUNetv2_evaluate_folder`` of the predictions against ``raw``'s labelsTs into the fold's test
    :func:`split_summary`: the commands as a user types them. ``device``: nnU-Net's default where None;
    ``single_process``: one worker per step, for a machine of a few CPU cores."""
    raw, summary = Path(raw), split_summary(model, fold, "test")
    predictions = summary.parent / "predictions"
    predict = ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(dataset),
               "-c", configuration, "-tr", trainer, "-p", plans, "-f", str(fold),
               *(["-device", device] if device else []), "--disable_progress_bar"]
    # nnUNetv2_predict writes the model's dataset.json and plans.json beside its predictions
    evaluate = ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(predictions), "-djfile",
                str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json"), "-o", str(summary)]
    if single_process:
        predict += ["-npp", "1", "-nps", "1"]
        evaluate += ["-np", "1"]
    return predict, evaluate


def law_run_folder(dataset_name: str, weighting: str, configuration: str, fold=None,
                   results: Optional[Union[str, Path]] = None) -> Path:
    """Where ``law train`` writes a generator: ``$nnUNet_results/DatasetXXX/LAW__<weighting>__<config>[/fold_F]``
    (beside nnU-Net's model folders, so the generator travels with the models trained on its data)."""
    folder = Path(results if results is not None else results_root()) / dataset_name / \
        f"LAW__{weighting}__{configuration}"
    return folder / f"fold_{fold}" if fold is not None else folder


def read_json(path: Union[str, Path]) -> dict:
    """A JSON file, or an :class:`InputError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None


def check_output_folder(path: Union[str, Path], option: str) -> Path:
    """``path``, when it is or can be made a writable folder (the first of it and its parents that exists is a
    writable folder), else the :class:`InputError` naming ``option``. Makes nothing: it runs before any work, so
    that hours of work never end at an output that cannot be written."""
    path = Path(path)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{option}: {existing} is a file, not a folder; choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option}: {existing} is not writable; choose a writable folder")
    return path


def save_json_atomic(obj, path: Union[str, Path], indent: int = 2) -> None:
    """Write ``obj`` to a hidden file beside ``path`` and rename it into place: readers see all of it or nothing."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent, allow_nan=False) + "\n")
    os.replace(tmp, path)


def resolve_device(name: Optional[str]):
    """``-device`` as nnU-Net takes it (``cuda``, ``cuda:N``, ``cpu``, ``mps``); None means cuda when available,
    else cpu. An unavailable backend is an :class:`InputError` before any work."""
    import torch

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"-device must be cpu, cuda or mps, got {name!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"-device must be cpu, cuda or mps, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("-device cuda: no CUDA device is available to torch here; use -device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("-device mps: the MPS backend is not available here; use -device cpu")
    return device
