"""nnU-Net trainers for MK-UNet and ORDER, and their short-schedule variants.

Recipe (documented in the README): everything is nnU-Net's (data augmentation, Dice + CE with deep supervision
weighted 1/2^k, patch and batch size of the base configuration, poly learning-rate decay, 1000 x 250
iterations), except the optimiser: AdamW (lr 3e-3, weight decay 1e-4) instead of SGD with momentum 0.99.
These networks are ~1000x smaller than nnU-Net's and use batch norm; SGD at nnU-Net's lr 1e-2 learns them
slowly, while AdamW at 3e-3 (the MK-UNet reference trains with AdamW) converges within nnU-Net's schedule.

The network comes from the configuration's ``architecture`` block (``nnunet-laworder plans`` writes it), so
``nnUNetv2_predict`` rebuilds exactly the trained network from the saved plans.

Seeds: a schedule's ``seed`` (the short ones: ``SHORT_SCHEDULE_SEED``; nnU-Net-length ones: None, unseeded as in
nnU-Net) seeds Python's, numpy's and torch's generators before the weights are drawn and again when training starts,
and makes nnU-Net augment in the training process. nnU-Net's multi-process augmenter (NonDetMultiThreadedAugmenter)
cannot be made deterministic: its workers share one queue, so batches arrive in whichever order the workers finish.
Its seeded sibling (batchgenerators' MultiThreadedAugmenter) seeds only numpy in its workers, while nnU-Net's
augmentations draw from torch. nnU-Net's deterministic path is its SingleThreadedAugmenter (``nnUNet_n_proc_DA=0``),
which a seeded run takes. ``nnUNet_laworder_seed`` (an integer, or ``none``) overrides the schedule's seed for a run.

Epochs: ``nnUNet_laworder_epochs`` overrides a schedule's number of epochs for one run (the training-budget study
gives each network the epochs that fit a wall-clock budget); train such runs under a plans copy of their own
(``nnUNetPlans_<tag>``), so that the results folder says which.

CPU threads: trainers of small networks (``small_network_threads``: MK-UNet, ORDER, and the diffusion segmenters of
``diffusion_seg_trainers``) train with ``nnUNet_laworder_cpu_threads`` torch threads (default 1) instead of the CPU
count that ``nnUNetv2_train -device cpu`` sets; nnU-Net's default network keeps nnU-Net's threads.
"""
import os
import random
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_laworder.errors import InputError
from nnunet_laworder.networks.mkunet import MKUNet
from nnunet_laworder.networks.order import ORDER
from nnunet_laworder.training.discovery import environment
from nnunet_laworder.training.nnunet_contract import overrides_nnunet, set_nnunet_attributes

SEED_VARIABLE = "nnUNet_laworder_seed"
SHORT_SCHEDULE_SEED = 12345  # nnU-Net's own seed of its fold splits
EPOCHS_VARIABLE = "nnUNet_laworder_epochs"
CPU_THREADS_VARIABLE = "nnUNet_laworder_cpu_threads"
# These networks' operations are tiny: a second thread saves little on a quiet CPU, and on a shared one every
# operation waits for the slowest thread (two threads fighting for two busy cores ran about 10x slower than one).
DEFAULT_CPU_THREADS = 1


def bounded_variable(name: str, parse: Callable[[str], float], minimum, maximum, kind: str):
    """``$name`` parsed by ``parse`` (int, float) and within [minimum, maximum], or a one-line InputError naming it."""
    value = os.environ[name]
    try:
        number = parse(value)
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:  # a float's nan fails the comparison too
        raise InputError(f"{name}={value!r}: expected {kind} from {minimum} to {maximum}")
    return number


def integer_variable(name: str, minimum: int, maximum: int) -> int:
    return bounded_variable(name, int, minimum, maximum, "an integer")


def probability_variable(name: str, default: float) -> float:
    """``$name`` as a probability (0 to 1), or ``default`` where it is unset or empty."""
    if not os.environ.get(name, "").strip():
        return default
    return bounded_variable(name, float, 0, 1, "a probability")


def configured_seed(schedule_seed: Optional[int]) -> Optional[int]:
    """``nnUNet_laworder_seed`` when set (an integer, or ``none`` for an unseeded run), else the schedule's seed."""
    value = os.environ.get(SEED_VARIABLE, "").strip()
    if not value:
        return schedule_seed
    if value.lower() == "none":
        return None
    return integer_variable(SEED_VARIABLE, 0, 2 ** 31 - 1)


def seed_everything(seed: int) -> None:
    """The global generators that weight initialisation, nnU-Net's data loader (numpy) and its augmentation
    (batchgeneratorsv2: torch) draw from; numpy takes seeds below 2**32."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def cpu_threads() -> int:
    """Torch threads of small-network training on CPU: ``nnUNet_laworder_cpu_threads``, default 1."""
    if not os.environ.get(CPU_THREADS_VARIABLE, "").strip():
        return DEFAULT_CPU_THREADS
    return integer_variable(CPU_THREADS_VARIABLE, 1, os.cpu_count() or 1)


class ScheduledTrainer(nnUNetTrainer):
    """nnU-Net's trainer with its schedule and seed as class attributes, so that a schedule variant is a line or two."""

    # (epochs, training iterations per epoch, validation iterations per epoch); None keeps nnU-Net's
    schedule: Optional[Tuple[int, int, int]] = None
    # seed of the run (see the module docstring); None: unseeded, with nnU-Net's multi-process augmentation
    seed: Optional[int] = None
    # train on CPU with nnUNet_laworder_cpu_threads torch threads (see the module docstring), not nnU-Net's count
    small_network_threads: bool = False

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        epochs, iterations, validation_iterations = self.schedule or (
            self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch)
        if os.environ.get(EPOCHS_VARIABLE, "").strip():
            epochs = integer_variable(EPOCHS_VARIABLE, 1, 100000)
        # checkpoint_latest at least twice per run, so that `--c` can resume an interrupted short run
        set_nnunet_attributes(self, num_epochs=epochs, num_iterations_per_epoch=iterations,
                              num_val_iterations_per_epoch=validation_iterations,
                              save_every=max(1, min(self.save_every, epochs // 2)))
        self.print_to_log_file(f"schedule: {epochs} epochs x {iterations} iterations (class attribute schedule, "
                               f"or ${EPOCHS_VARIABLE} for the epochs)")
        self.run_seed = configured_seed(self.seed)
        self.print_to_log_file(f"seed: {self.run_seed} (class attribute seed, or ${SEED_VARIABLE})")

    @overrides_nnunet
    def initialize(self):
        # before the weights are drawn, also where nnU-Net initialises ahead of on_train_start (-pretrained_weights)
        if self.run_seed is not None:
            seed_everything(self.run_seed)
        super().initialize()

    @overrides_nnunet
    def on_train_start(self):
        # here, not in __init__: nnUNetv2_train sets its threads before making the trainer, and the benchmark makes
        # trainers without training them at the threads it was asked for
        if self.small_network_threads and self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
            self.print_to_log_file(f"torch threads: {torch.get_num_threads()} (${CPU_THREADS_VARIABLE}, default "
                                   f"{DEFAULT_CPU_THREADS})")
        if self.run_seed is not None:
            # a run resumed with --c draws new batches rather than replaying the first epoch's
            seed_everything(self.run_seed + self.current_epoch)
            if self.device.type == "cuda":  # nnUNetv2_train turns cuDNN's benchmark on just before this
                torch.backends.cudnn.benchmark = False
                torch.backends.cudnn.deterministic = True
        super().on_train_start()

    @overrides_nnunet
    def get_dataloaders(self):
        if self.run_seed is None:
            return super().get_dataloaders()
        with environment("nnUNet_n_proc_DA", "0"):  # nnU-Net's deterministic augmenter (module docstring)
            return super().get_dataloaders()


class nnUNetTrainerMKUNet(ScheduledTrainer):
    """Trains the configuration's MK-UNet (``nnunet-laworder plans -d ID -c 2d --arch mkunet``).

    The recipe's knobs are class attributes, so that a recipe variant (``recipe_trainers``) changes one line."""

    network_class = MKUNet
    plans_arch = "mkunet"
    small_network_threads = True
    learning_rate = 3e-3  # AdamW's, decayed by nnU-Net's poly schedule
    # False: no training augmentation (nnU-Net's nnUNetTrainerNoDA: the validation transforms), while inference
    # keeps nnU-Net's test-time mirroring, so that only training changes
    training_augmentation = True
    deep_supervision = True  # False: the loss on the full-resolution output only (nnUNetTrainerNoDeepSupervision)

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        set_nnunet_attributes(self, initial_lr=self.learning_rate, weight_decay=1e-4,
                              enable_deep_supervision=self.deep_supervision)

    @overrides_nnunet
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.training_augmentation:  # no rotation or scaling to crop from: the patch itself
            initial_patch_size = tuple(self.configuration_manager.patch_size)
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    @overrides_nnunet
    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        if not self.training_augmentation:
            return self.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels, regions,
                                                  ignore_label)
        return super().get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                               do_dummy_2d_data_aug, use_mask_for_norm, is_cascaded,
                                               foreground_labels, regions, ignore_label)

    @classmethod
    @overrides_nnunet
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        class_name = configuration_manager.network_arch_class_name
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        # ORDER subclasses MKUNet; the MK-UNet trainer must not silently train an ORDER and vice versa
        if type(network) is not cls.network_class:
            raise RuntimeError(
                f"{cls.__name__} trains {cls.network_class.__name__}, but this configuration builds {class_name}. "
                f"Add a configuration with `nnunet-laworder plans -d DATASET -c 2d --arch {cls.plans_arch}` and "
                f"train that one (e.g. 2d_{cls.plans_arch}).")
        return network

    @overrides_nnunet
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerORDER(nnUNetTrainerMKUNet):
    """Trains the configuration's ORDER network (``nnunet-laworder plans -d ID -c 2d --arch order``)."""

    network_class = ORDER
    plans_arch = "order"


# Short schedules: 'smoke' checks the whole pipeline on CPU in about a minute, 'cpu' is the CPU demo / quick
# experiment budget; these are seeded, so that a test or the demo gives the same numbers every time. The epoch
# variants match nnU-Net's nnUNetTrainer_Xepochs for GPU experiments: unseeded, with nnU-Net's augmentation workers.
class nnUNetTrainer_cpu(ScheduledTrainer):
    """nnU-Net's default recipe and network on the `_cpu` budget: the baseline beside ORDER_cpu / MKUNet_cpu."""
    schedule = (20, 50, 4)
    seed = SHORT_SCHEDULE_SEED


# equal training time with nnUNetTrainer_cpu for a network whose step is about 2x dearer (ResEnc M in the ablation)
class nnUNetTrainer_cpuhalf(ScheduledTrainer):
    schedule = (10, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainer_smoke(ScheduledTrainer):
    """nnU-Net's default recipe and network on the `_smoke` budget (pipeline checks)."""
    schedule = (3, 8, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerMKUNet_smoke(nnUNetTrainerMKUNet):
    schedule = (3, 8, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerMKUNet_cpu(nnUNetTrainerMKUNet):
    schedule = (20, 50, 4)
    seed = SHORT_SCHEDULE_SEED


# equal training time with nnU-Net's default on the `_cpu` budget, for networks whose step is 2x / 4x cheaper
class nnUNetTrainerMKUNet_cpu2x(nnUNetTrainerMKUNet):
    schedule = (40, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerMKUNet_cpu4x(nnUNetTrainerMKUNet):
    schedule = (80, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerMKUNet_100epochs(nnUNetTrainerMKUNet):
    schedule = (100, 250, 50)


class nnUNetTrainerMKUNet_250epochs(nnUNetTrainerMKUNet):
    schedule = (250, 250, 50)


class nnUNetTrainerORDER_smoke(nnUNetTrainerORDER):
    schedule = (3, 8, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerORDER_cpu(nnUNetTrainerORDER):
    schedule = (20, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerORDER_cpu2x(nnUNetTrainerORDER):
    schedule = (40, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerORDER_cpu4x(nnUNetTrainerORDER):
    schedule = (80, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerORDER_100epochs(nnUNetTrainerORDER):
    schedule = (100, 250, 50)


class nnUNetTrainerORDER_250epochs(nnUNetTrainerORDER):
    schedule = (250, 250, 50)
