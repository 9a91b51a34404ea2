"""Small real, planned nnU-Net datasets for the LAW tests (planned once per test session, results per module).

Use in a test module::

    from law_fixtures import law_folders, law_kvasir, law_hippocampus  # noqa: F401  (pytest fixtures)

    def test_something(law_kvasir):
        law_kvasir.dataset_id      # 901 -> "-d 901"
        law_kvasir.env             # environment for child processes (nnunet_env of the module's folders)
        law_kvasir.raw             # $nnUNet_raw/Dataset901_KvasirSEG
        law_kvasir.preprocessed    # $nnUNet_preprocessed/Dataset901_KvasirSEG (plans, fingerprint, splits)

* ``law_folders``: nnUNet_raw / nnUNet_preprocessed shared by the session's LAW modules and a fresh nnUNet_results
  of the module, exported in this process (``os.environ``) for the module's lifetime, so in-process calls see them
  too. A module writes new datasets only under ids of its own (910-919 synthesis, 920-923 added lesions, 930-934
  inpainting, 940-941 quality gate, 945 law evaluation). Do not combine with the function-scoped ``nnunet_dirs``
  fixture of conftest.py in the same test (it re-points the variables).
* ``law_kvasir``: 16 real Kvasir-SEG pairs, converted with ``nnunet-laworder convert kvasir-seg --max-size 96``
  (RGB png, 0/1 labels, longer side 96) and planned with ``nnUNetv2_plan_and_preprocess -c 2d -np 1``.
  No test split: all 16 are training cases. (About a minute on a 2-core CPU.)
* ``one_torch_thread`` (autouse once imported), ``synthesize`` (the command in-process), ``dataset_folder``.
* ``make_checkpoint``: a small untrained generator saved as ``law train`` saves it (``mode`` whole or inpaint).
* ``law_hippocampus``: 10 MSD Hippocampus cases (3D MRI, labels 1 and 2, volumes ~35x50x35) planned with
  ``-c 3d_fullres -np 1``.

Results of trainings written by one test stay in ``law_folders["nnUNet_results"]`` for the others of the module.
Plans added to the shared datasets (``nnunet-laworder plans``, idempotent) and nnU-Net's splits_final.json (seeded)
are the same whichever module writes them first.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnunet_helpers import copy_kvasir_subset, exported_folders, nnunet_env, run, write_msd_subset

KVASIR_ID, HIPPO_ID = 901, 902
KVASIR_CASES, HIPPO_CASES = 16, 10
KVASIR_MAX_SIZE = 96
# the xdist group of the modules that read conftest.law_kvasir_order_smoke: one worker trains it once
LAW_KVASIR_MODELS = "law_kvasir_models"


@dataclass
class PlannedDataset:
    dataset_id: int
    name: str  # "Dataset901_KvasirSEG"
    raw: Path
    preprocessed: Path
    folders: dict  # nnUNet_raw / nnUNet_preprocessed / nnUNet_results
    env: dict  # for child processes

    @property
    def results(self) -> Path:
        return self.folders["nnUNet_results"] / self.name

    def training_cases(self) -> list:
        """The case identifiers in labelsTr, sorted."""
        ending = ".png" if any(self.raw.glob("labelsTr/*.png")) else ".nii.gz"
        return sorted(p.name[:-len(ending)] for p in (self.raw / "labelsTr").glob(f"*{ending}"))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two fighting for cores (and
    deterministic). Autouse in every module that imports it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthesize(*argv) -> int:
    """``nnunet-laworder law synthesize ARGV -device cpu --no-progress`` in-process; its exit status."""
    from nnunet_laworder.cli import main

    return main(["law", "synthesize"] + [str(a) for a in argv] + ["-device", "cpu", "--no-progress"])


def dataset_folder(planned, dataset_id: int) -> Path:
    """The one raw dataset folder of ``dataset_id`` beside ``planned``'s."""
    found = list(planned.folders["nnUNet_raw"].glob(f"Dataset{dataset_id:03d}_*"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def law_folders(law_shared_folders, tmp_path_factory):
    # the module's own nnUNet_results: trainings and LAW runs of one module never meet another module's
    results = tmp_path_factory.mktemp("law_results") / "nnUNet_results"
    results.mkdir()
    yield from exported_folders({**law_shared_folders, "nnUNet_results": results})


def _planned(folders: dict, dataset_id: int) -> PlannedDataset:
    raw = next(folders["nnUNet_raw"].glob(f"Dataset{dataset_id:03d}_*"))
    return PlannedDataset(dataset_id, raw.name, raw, folders["nnUNet_preprocessed"] / raw.name, folders,
                          nnunet_env(folders))


def _planning_env(shared: dict, results: Path) -> dict:
    return nnunet_env({**shared, "nnUNet_results": results})


def plan_kvasir(shared: dict, official: Path, results: Path) -> Path:
    """The session's planned Kvasir-SEG subset (see the module docstring) in ``shared``; its raw folder."""
    from conftest import require_data

    copy_kvasir_subset(require_data("kvasir-seg"), official, KVASIR_CASES)
    env = _planning_env(shared, results)
    run(["nnunet-laworder", "convert", "kvasir-seg", str(official), "-d", str(KVASIR_ID),
         "--max-size", str(KVASIR_MAX_SIZE)], env)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(KVASIR_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    return next(shared["nnUNet_raw"].glob(f"Dataset{KVASIR_ID:03d}_*"))


def plan_hippocampus(shared: dict, results: Path) -> Path:
    """The session's planned MSD Hippocampus subset in ``shared``; its raw folder."""
    from conftest import require_data

    src = require_data("msd-hippocampus")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (src / "imagesTr").glob("*.nii.gz"))[:HIPPO_CASES]
    raw = write_msd_subset(src, shared["nnUNet_raw"], HIPPO_ID, "Hippocampus", cases,
                           {"background": 0, "Anterior": 1, "Posterior": 2}, {"0": "MRI"})
    run(["nnUNetv2_plan_and_preprocess", "-d", str(HIPPO_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
        _planning_env(shared, results))
    return raw


# law_kvasir_planned / law_hippocampus_planned: session fixtures of conftest.py (a fixture imported into several
# modules would be made once per module)
@pytest.fixture(scope="module")
def law_kvasir(law_folders, law_kvasir_planned) -> PlannedDataset:
    return _planned(law_folders, KVASIR_ID)


@pytest.fixture(scope="module")
def law_hippocampus(law_folders, law_hippocampus_planned) -> PlannedDataset:
    return _planned(law_folders, HIPPO_ID)


def make_checkpoint(planned, path: Path, configuration: str, image_size, fold=None, slice_axis=None,
                    seed: int = 0, mode: str = "whole") -> Path:
    """A small untrained generator for ``planned`` (output layer randomised so the mask matters), saved as
    ``law train`` saves: layout.extra and the ``data`` entry name the dataset, configuration, fold and cases."""
    import torch

    from nnunet_laworder.law.generator import Layout, LAWGenerator, foreground_labels, save_checkpoint
    from nnunet_laworder.law.intensity import IntensityNormaliser
    from nnunet_laworder.law.weighting import WeightingConfig

    plans = json.loads((planned.preprocessed / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((planned.raw / "dataset.json").read_text())
    cases = planned.training_cases()
    validation = []
    if fold is not None:
        from nnunetv2.utilities.crossval_split import generate_crossval_split
        split = generate_crossval_split(cases, seed=12345, n_splits=5)[fold]
        cases, validation = sorted(map(str, split["train"])), sorted(map(str, split["val"]))  # as law train saves
    data = {"dataset": planned.name, "configuration": configuration, "fold": fold, "cases": cases,
            "validation_cases": validation}
    layout = Layout(2 if slice_axis is not None else len(image_size), list(image_size),
                    foreground_labels(dataset_json), slice_axis, dataset_json["file_ending"], dict(data), mode)
    normaliser = IntensityNormaliser.from_plans(plans, configuration)
    torch.manual_seed(seed)
    generator = LAWGenerator.create(len(normaliser.channels), layout, WeightingConfig("law"), normaliser,
                                    features_per_stage=(8, 16), time_dim=16)
    torch.nn.init.normal_(generator.denoiser.out[-1].weight, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, generator, step=0, data=data)
    return path
