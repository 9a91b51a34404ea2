"""Re-exports for nnUNet_extTrainer; the classes live in nnunet_laworder.training.recipe_trainers."""
from nnunet_laworder.training.recipe_trainers import (  # noqa: F401
    nnUNetTrainerORDER_cpu_lr1e2, nnUNetTrainerORDER_cpu_noDA, nnUNetTrainerORDER_cpu_noDS,
    nnUNetTrainerORDER_smoke_lr1e2, nnUNetTrainerORDER_smoke_noDA, nnUNetTrainerORDER_smoke_noDS)
