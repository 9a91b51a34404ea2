"""Re-exports for nnUNet_extTrainer; the classes live in nnunet_laworder.training.order_trainers."""
from nnunet_laworder.training.order_trainers import (  # noqa: F401
    nnUNetTrainerMKUNet, nnUNetTrainerMKUNet_100epochs, nnUNetTrainerMKUNet_250epochs, nnUNetTrainerMKUNet_cpu,
    nnUNetTrainerMKUNet_cpu2x, nnUNetTrainerMKUNet_cpu4x, nnUNetTrainerMKUNet_smoke, nnUNetTrainerORDER,
    nnUNetTrainerORDER_100epochs, nnUNetTrainerORDER_250epochs, nnUNetTrainerORDER_cpu, nnUNetTrainerORDER_cpu2x,
    nnUNetTrainerORDER_cpu4x, nnUNetTrainerORDER_smoke, nnUNetTrainer_cpu, nnUNetTrainer_cpuhalf, nnUNetTrainer_smoke)
