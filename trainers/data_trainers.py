"""Re-exports for nnUNet_extTrainer; the classes live in nnunet_laworder.training.data_trainers."""
from nnunet_laworder.training.data_trainers import (  # noqa: F401
    nnUNetTrainerMKUNet_cpu_copypaste, nnUNetTrainerMKUNet_cpu_synthmix, nnUNetTrainerMKUNet_cpu_synthmix_copypaste,
    nnUNetTrainerMKUNet_smoke_copypaste, nnUNetTrainerMKUNet_smoke_synthmix,
    nnUNetTrainerMKUNet_smoke_synthmix_copypaste, nnUNetTrainerORDER_cpu_copypaste, nnUNetTrainerORDER_cpu_synthmix,
    nnUNetTrainerORDER_cpu_synthmix_copypaste, nnUNetTrainerORDER_smoke_copypaste, nnUNetTrainerORDER_smoke_synthmix,
    nnUNetTrainerORDER_smoke_synthmix_copypaste, nnUNetTrainer_cpu_copypaste, nnUNetTrainer_cpu_synthmix,
    nnUNetTrainer_cpu_synthmix_copypaste, nnUNetTrainer_smoke_copypaste, nnUNetTrainer_smoke_synthmix,
    nnUNetTrainer_smoke_synthmix_copypaste)
