"""nnU-Net's predictor of a trained model folder, loaded as ``nnUNetv2_predict`` loads it: the one home for this,
whoever predicts (deployment, ``benchmark --predict``, ``law evaluate`` and its quality gate)."""
import contextlib
import io
from pathlib import Path
from typing import Sequence, Union

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_laworder.errors import InputError
from nnunet_laworder.training.discovery import plugin_trainers


def load_nnunet_predictor(folder: Union[str, Path], folds: Sequence[Union[int, str]], checkpoint: str,
                          device: torch.device, use_mirroring: bool = True,
                          tile_step_size: float = 0.5) -> nnUNetPredictor:
    """The predictor with the weights of ``folds`` (ensembled when several) of the model ``folder``
    (``TRAINER__PLANS__CONFIG``), set up with nnUNetv2_predict's settings; the network is the trainer's, built
    without deep supervision, in eval mode. The caller checks that the checkpoints exist."""
    # nnU-Net prints its settings and its trainer search; stdout may hold the caller's table or JSON
    with plugin_trainers(), contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        try:
            predictor.initialize_from_trained_model_folder(str(folder), use_folds=list(folds),
                                                           checkpoint_name=checkpoint)
        except RuntimeError as e:
            if "Could not find requested nnunet trainer" in str(e):
                raise InputError(f"{e} (eval \"$(nnunet-laworder env)\" exports nnUNet_extTrainer)") from None
            raise
    predictor.network.eval()
    return predictor
