"""The demo's fixed choices (sample, dataset ids, configuration, fold) and every folder and file of one demo run,
shared by the workflow (:mod:`~nnunet_laworder.demo.pipeline`) and the report (:mod:`~nnunet_laworder.demo.report`).

The demo's nnU-Net folders live under its own output folder and are exported to the child processes only, so
names are built here from the demo's root with nnU-Net's and the plugin's naming functions rather than read from
this process's ``nnUNet_*`` variables.
"""
from dataclasses import dataclass
from pathlib import Path

from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunet_laworder.law.options import EVALUATION_FOLDER as LAW_EVALUATION_FOLDER
from nnunet_laworder.nnunet_folders import DEFAULT_PLANS, law_run_folder
from nnunet_laworder.workflow import NNUNET_FOLDERS

SAMPLE = Path(__file__).resolve().parent / "kvasir_sample"
DATASET_ID = 990
DATASET_NAME = "KvasirSEG"
BASE_CONFIGURATION = "2d"
CONFIGURATION = "2d_order"
DEFAULT_TRAINER = "nnUNetTrainerORDER_cpu"  # sized for a few CPU minutes
FOLD = 0
N_TEST = 8
LAW_DATASET_ID = 991
LAW_DATASET_NAME = DATASET_NAME + "LAW"
LAW_WEIGHTING = "law"  # law train's default --weighting, which the demo keeps
LOG = "demo.log"
LAW_TRAIN_LOG = "law_train.log"  # law train runs beside nnUNetv2_train, whose output goes to demo.log
# what the demo writes under its output folder; any of them present means an earlier run's results
OUTPUTS = (*NNUNET_FOLDERS, "predictions", "report", "test_cases.txt", LOG, LAW_TRAIN_LOG)


@dataclass(frozen=True)
class DemoPaths:
    """Every folder and file of one demo run, all under ``root``."""
    root: Path

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def raw_dataset(self) -> Path:
        return self.root / "nnUNet_raw" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"

    @property
    def preprocessed_dataset(self) -> Path:
        return self.root / "nnUNet_preprocessed" / self.raw_dataset.name

    @property
    def law_dataset(self) -> Path:
        return self.root / "nnUNet_raw" / f"Dataset{LAW_DATASET_ID:03d}_{LAW_DATASET_NAME}"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def test_list(self) -> Path:
        return self.root / "test_cases.txt"

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def law_train_log(self) -> Path:
        return self.root / LAW_TRAIN_LOG

    @property
    def law_run(self) -> Path:
        """``law train``'s folder for the demo's generator (fold 0, LAW weighting, plans of the 2d configuration)."""
        return law_run_folder(self.raw_dataset.name, LAW_WEIGHTING, BASE_CONFIGURATION, FOLD, results=self.results)

    @property
    def law_evaluation(self) -> Path:
        """``law evaluate``'s default output folder for the demo's LAW dataset."""
        return self.results / self.law_dataset.name / LAW_EVALUATION_FOLDER

    def model_folder(self, trainer: str) -> Path:
        return self.results / self.raw_dataset.name / convert_trainer_plans_config_to_identifier(
            trainer, DEFAULT_PLANS, CONFIGURATION)

    def fold_folder(self, trainer: str) -> Path:
        return self.model_folder(trainer) / f"fold_{FOLD}"
