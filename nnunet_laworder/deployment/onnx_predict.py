"""``nnunet-laworder predict --onnx``: nnU-Net's own prediction (preprocessing, sliding window, mirroring, export)
with onnxruntime computing the network."""
from pathlib import Path
from typing import Optional

from nnunet_laworder.deployment.onnx_export import read_metadata
from nnunet_laworder.deployment.onnx_runtime import OnnxNetwork
from nnunet_laworder.deployment.trained_model import TrainedFold
from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import dataset_name


def check_same_model(onnx_file: Path, model: TrainedFold) -> None:
    """The graph must come from the named model: its plans decide the preprocessing and the patch it is fed."""
    metadata = read_metadata(onnx_file)
    expected = {"dataset": dataset_name(model.dataset), "configuration": model.configuration,
                "trainer": model.trainer, "plans": model.plans, "fold": str(model.fold)}
    different = [f"{key} {metadata[key]} (given: {value})" for key, value in expected.items()
                 if metadata[key] != value]
    if different:
        raise InputError(f"{onnx_file} was exported from another model: {', '.join(different)}")


def predict_onnx(onnx_file: Path, input_folder: Path, output_folder: Path, model: TrainedFold,
                 use_mirroring: bool = True, save_probabilities: bool = False, tile_step_size: float = 0.5,
                 threads: Optional[int] = None, processes_preprocessing: int = 3,
                 processes_export: int = 3) -> None:
    onnx_file, input_folder = Path(onnx_file), Path(input_folder)
    if not onnx_file.is_file():
        raise InputError(f"ONNX file {onnx_file} not found; write it with `nnunet-laworder export`")
    if not input_folder.is_dir():
        raise InputError(f"input folder {input_folder} not found")
    model.checkpoint_file()
    check_same_model(onnx_file, model)
    predictor = model.load_predictor(use_mirroring=use_mirroring, tile_step_size=tile_step_size)
    predictor.network = OnnxNetwork(onnx_file, threads)
    # the predictor loads each fold's weights into its network before predicting: the graph holds the only set
    predictor.list_of_parameters = [{}]
    Path(output_folder).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities=save_probabilities,
                                 overwrite=True, num_processes_preprocessing=processes_preprocessing,
                                 num_processes_segmentation_export=processes_export)
