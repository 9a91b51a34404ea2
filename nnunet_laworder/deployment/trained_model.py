"""The trained model a deployment command names (``-d -c -tr -p -f --checkpoint``, as nnUNetv2_predict names it):
found, with an :class:`InputError` naming the first thing missing, and loaded through nnU-Net's predictor."""
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import (DEFAULT_CHECKPOINT, DEFAULT_PLANS, check_configuration, load_plans,
                                            model_folder)
from nnunet_laworder.nnunet_predictor import load_nnunet_predictor

@dataclass(frozen=True)
class TrainedFold:
    dataset: str
    configuration: str
    trainer: str
    fold: Union[int, str]
    plans: str = DEFAULT_PLANS
    checkpoint: str = DEFAULT_CHECKPOINT

    def checkpoint_file(self) -> Path:
        """The checkpoint, which must exist: dataset, configuration, model folder, fold and file are checked in
        that order, before any work."""
        folder = model_folder(self.dataset, self.trainer, self.plans, self.configuration)
        if not folder.is_dir():
            try:
                plans = load_plans(self.dataset, self.plans)
            except InputError:  # not preprocessed on this machine: the folder is all there is to name
                plans = None
            if plans is not None:
                check_configuration(plans, self.configuration, f"plans {self.plans} of dataset {self.dataset}")
            trained = sorted(p.name for p in folder.parent.glob("*__*__*") if p.is_dir()) \
                if folder.parent.is_dir() else []
            raise InputError(f"no trained model {folder} (trained: {', '.join(trained) or 'none'}); "
                             f"check -c, -tr and -p")
        fold_folder = folder / f"fold_{self.fold}"
        if not fold_folder.is_dir():
            folds = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
            raise InputError(f"fold {self.fold} not trained: {fold_folder} not found "
                             f"(trained: {', '.join(folds) or 'none'})")
        checkpoint = fold_folder / self.checkpoint
        if not checkpoint.is_file():
            present = sorted(p.name for p in fold_folder.glob("*.pth"))
            raise InputError(f"checkpoint {checkpoint} not found (present: {', '.join(present) or 'none'})")
        return checkpoint

    def load_predictor(self, use_mirroring: bool = True, tile_step_size: float = 0.5) -> nnUNetPredictor:
        """nnU-Net's predictor on the CPU with this fold's weights (deployment exports and runs on the CPU)."""
        return load_nnunet_predictor(self.checkpoint_file().parent.parent, [self.fold], self.checkpoint,
                                     torch.device("cpu"), use_mirroring=use_mirroring, tile_step_size=tile_step_size)
