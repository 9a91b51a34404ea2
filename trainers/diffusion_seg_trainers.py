"""Re-exports for nnUNet_extTrainer; the classes live in nnunet_laworder.training.diffusion_seg_trainers."""
from nnunet_laworder.training.diffusion_seg_trainers import (  # noqa: F401
    nnUNetTrainerCDAL, nnUNetTrainerCDAL_100epochs, nnUNetTrainerCDAL_250epochs, nnUNetTrainerCDAL_cpu,
    nnUNetTrainerCDAL_smoke, nnUNetTrainerSPAD, nnUNetTrainerSPAD_100epochs, nnUNetTrainerSPAD_250epochs,
    nnUNetTrainerSPAD_cpu, nnUNetTrainerSPAD_smoke)
