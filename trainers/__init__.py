"""The nnUNet_extTrainer folder: thin modules that only re-export trainers from nnunet_laworder.training."""
