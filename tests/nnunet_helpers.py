"""Helpers for tests that drive nnU-Net's own commands as a user would, in child processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from nnunet_laworder.training.cli import trainer_folder
from preloaded_cli import SCRIPTS, preloaded_commands, succeeded


def nnunet_env(dirs: dict) -> dict:
    """The environment a user gets after `eval "$(nnunet-laworder env)"`, sized for a 2-core CPU machine. (Tests
    also pass nnUNetv2_plan_and_preprocess -npfp 1: its fingerprint extraction starts 8 spawned workers whatever
    nnUNet_def_n_proc says, each importing torch, for a few dozen images.)"""
    env = dict(os.environ, nnUNet_extTrainer=trainer_folder(), nnUNet_n_proc_DA="2", nnUNet_def_n_proc="1")
    env.update({name: str(path) for name, path in dirs.items()})
    return env


def executable(cmd: list) -> list:
    return [shutil.which(cmd[0]) or str(Path(sys.executable).with_name(cmd[0])), *cmd[1:]]


def run(cmd, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a console script (nnUNetv2_*, nnunet-laworder) and fail with its output when it fails: forked from this
    worker's preloaded process (preloaded_cli.py), or as a plain child process for any other command."""
    if cmd[0] in SCRIPTS:
        return succeeded(preloaded_commands(env).run(cmd, env, timeout), cmd)
    return succeeded(subprocess.run(executable(cmd), env=env, capture_output=True, text=True, timeout=timeout), cmd)


# nnU-Net's default trainer and ORDER's smoke trainer cut to one epoch of two iterations: the cheapest real nnU-Net
# result folders, for tests that read a trained model's files but not what it learned
SHORT_TRAINERS = textwrap.dedent('''
    from nnunet_laworder.training.order_trainers import ScheduledTrainer, nnUNetTrainerORDER_smoke


    class nnUNetTrainer_twoIterations(ScheduledTrainer):
        """nnU-Net's default network and recipe, unseeded (no schedule seed), as nnUNetTrainer trains it."""
        schedule = (1, 2, 1)


    class nnUNetTrainerORDER_twoIterations(nnUNetTrainerORDER_smoke):
        schedule = (1, 2, 1)
''')


def short_trainers(root: Path) -> Path:
    """A folder for nnUNet_extTrainer (beside the plugin's) that holds SHORT_TRAINERS."""
    folder = root / "short_trainers"
    folder.mkdir()
    (folder / "short_trainers.py").write_text(SHORT_TRAINERS)
    return folder


def tiny_2d_plans(architecture: dict, patch_size=(16, 16)) -> tuple:
    """``(plans, dataset_json)`` of a hand-written 2d plan (one MRI channel, one foreground label) with the given
    ``architecture`` block, enough for nnU-Net to make a trainer without a dataset."""
    configuration = {"data_identifier": "tiny_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                     "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
                     "spacing": [1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                     "use_mask_for_norm": [False], "batch_dice": True, "architecture": architecture}
    plans = {"dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "configurations": {"2d": configuration},
             "label_manager": "LabelManager", "continue_training": False}
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "target": 1}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    return plans, dataset_json


def files_under(folders) -> dict:
    """Every file under ``folders`` with its modification time: equal before and after, nothing was written."""
    return {path: path.stat().st_mtime_ns for folder in folders for path in folder.rglob("*") if path.is_file()}


def kill_after_first_checkpoint(cmd: list, env: dict, checkpoint: Path, timeout: float = 900) -> list:
    """Start a training, kill it (as a crash would) once ``checkpoint`` loads; return the losses it holds."""
    # its own process group, so that the data-augmentation workers die with it
    process = subprocess.Popen(executable(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, "training ended before it could be interrupted"
            try:
                torch.load(checkpoint, map_location="cpu", weights_only=False)
                break
            except (FileNotFoundError, EOFError, RuntimeError):  # not there yet, or still being written
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]["train_losses"]


def write_msd_subset(src: Path, raw: Path, dataset_id: int, name: str, cases: list, labels: dict,
                     channel_names: dict) -> Path:
    """Copy MSD-layout cases (imagesTr/*.nii.gz, labelsTr/*.nii.gz) into an nnU-Net raw dataset."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    out = raw / f"Dataset{dataset_id:03d}_{name}"
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    for case in cases:
        shutil.copy(src / "imagesTr" / f"{case}.nii.gz", out / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(src / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    generate_dataset_json(str(out), channel_names, labels, len(cases), ".nii.gz", dataset_name=name)
    return out


def train_losses(results: Path, dataset: str, trainer: str, configuration: str, fold: int = 0,
                 plans: str = "nnUNetPlans") -> list:
    checkpoint = results / dataset / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}" / "checkpoint_final.pth"
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]["train_losses"]


def validation_summary(results: Path, dataset: str, trainer: str, configuration: str, fold: int = 0) -> dict:
    folder = results / dataset / f"{trainer}__nnUNetPlans__{configuration}" / f"fold_{fold}" / "validation"
    return json.loads((folder / "summary.json").read_text())


def label_values(path: Path) -> set:
    import SimpleITK as sitk

    return set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())


def module_nnunet_folders(tmp_path_factory, name: str):
    """For a module-scoped fixture (``yield from``): nnU-Net's three folders under a fresh ``name`` folder,
    exported while the fixture lives."""
    root = tmp_path_factory.mktemp(name)
    dirs = {folder: root / folder for folder in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for path in dirs.values():
        path.mkdir()
    yield from exported_folders(dirs)


def exported_folders(dirs: dict):
    """For a module-scoped fixture (``yield from``): ``dirs`` ({nnU-Net variable: folder}) exported in this process
    while the fixture lives; yields ``dirs``."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for folder, path in dirs.items():
            mp.setenv(folder, str(path))
        yield dirs


def copy_kvasir_subset(src: Path, official: Path, n_cases: int, n_test: int = 0) -> Path:
    """The first ``n_cases`` Kvasir-SEG pairs (sorted names) copied into ``official`` in the dataset's own layout;
    the last ``n_test`` of them are listed in ``official/test.txt`` (the converter's --test-list), returned."""
    names = sorted(p.stem for p in (src / "images").glob("*.jpg"))[:n_cases]
    for sub in ("images", "masks"):
        (official / sub).mkdir()
        for name in names:
            shutil.copy(src / sub / f"{name}.jpg", official / sub / f"{name}.jpg")
    test_list = official / "test.txt"
    test_list.write_text("\n".join(names[len(names) - n_test:]) if n_test else "")
    return test_list
