"""Recipe variants of ORDER's short schedules: each changes one knob of ``nnUNetTrainerMKUNet``'s recipe (the
class attributes ``learning_rate``, ``training_augmentation``, ``deep_supervision``), so that
``benchmarks/reproduce_order_recipe.py`` can ask, change by change, what helps a 41K-parameter network learn faster
in a short training (issue: a recipe for small networks). Names follow the data variants: schedule, then the change
(``nnUNetTrainerORDER_cpu_lr1e2``); ``_smoke`` twins check the pipeline.
"""
from nnunet_laworder.training.order_trainers import nnUNetTrainerORDER_cpu, nnUNetTrainerORDER_smoke


class nnUNetTrainerORDER_cpu_lr1e2(nnUNetTrainerORDER_cpu):
    learning_rate = 1e-2  # instead of 3e-3


class nnUNetTrainerORDER_cpu_noDA(nnUNetTrainerORDER_cpu):
    training_augmentation = False


class nnUNetTrainerORDER_cpu_noDS(nnUNetTrainerORDER_cpu):
    deep_supervision = False


class nnUNetTrainerORDER_smoke_lr1e2(nnUNetTrainerORDER_smoke):
    learning_rate = 1e-2


class nnUNetTrainerORDER_smoke_noDA(nnUNetTrainerORDER_smoke):
    training_augmentation = False


class nnUNetTrainerORDER_smoke_noDS(nnUNetTrainerORDER_smoke):
    deep_supervision = False
