"""nnU-Net trainers for MK-UNet and ORDER, and their short-schedule variants.

Recipe (documented in the README): everything is nnU-Net's (data augmentation, Dice + CE with deep supervision
weighted 1/2^k, patch and batch size of the base configuration, poly learning-rate decay, 1000 x 250
iterations), except the optimiser: AdamW (lr 3e-3, weight decay 1e-4) instead of SGD with momentum 0.99.
These networks are ~1000x smaller than nnU-Net's and use batch norm; SGD at nnU-Net's lr 1e-2 learns them
slowly, while AdamW at 3e-3 (the MK-UNet reference trains with AdamW) converges within nnU-Net's schedule.

The network comes from the configuration's ``architecture`` block (``nnunet-laworder plans`` writes it), so
``nnUNetv2_predict`` rebuilds exactly the trained network from the saved plans.
"""
from typing import Optional, Tuple

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_laworder.networks.mkunet import MKUNet
from nnunet_laworder.networks.order import ORDER


class ScheduledTrainer(nnUNetTrainer):
    """nnU-Net's trainer with its schedule as a class attribute, so that a schedule variant is one line."""

    # (epochs, training iterations per epoch, validation iterations per epoch); None keeps nnU-Net's
    schedule: Optional[Tuple[int, int, int]] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.schedule is not None:
            self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = self.schedule
            # checkpoint_latest at least twice per run, so that `--c` can resume an interrupted short run
            self.save_every = max(1, min(self.save_every, self.num_epochs // 2))


class nnUNetTrainerMKUNet(ScheduledTrainer):
    """Trains the configuration's MK-UNet (``nnunet-laworder plans -d ID -c 2d --arch mkunet``)."""

    network_class = MKUNet
    plans_arch = "mkunet"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 3e-3
        self.weight_decay = 1e-4

    @classmethod
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

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerORDER(nnUNetTrainerMKUNet):
    """Trains the configuration's ORDER network (``nnunet-laworder plans -d ID -c 2d --arch order``)."""

    network_class = ORDER
    plans_arch = "order"


# Short schedules: 'smoke' checks the whole pipeline on CPU in about a minute, 'cpu' is the CPU demo / quick
# experiment budget, the epoch variants match nnU-Net's nnUNetTrainer_Xepochs for GPU experiments.
class nnUNetTrainer_cpu(ScheduledTrainer):
    """nnU-Net's default recipe and network on the `_cpu` budget: the baseline beside ORDER_cpu / MKUNet_cpu."""
    schedule = (20, 50, 4)


class nnUNetTrainer_smoke(ScheduledTrainer):
    """nnU-Net's default recipe and network on the `_smoke` budget (pipeline checks)."""
    schedule = (3, 8, 4)


class nnUNetTrainerMKUNet_smoke(nnUNetTrainerMKUNet):
    schedule = (3, 8, 4)


class nnUNetTrainerMKUNet_cpu(nnUNetTrainerMKUNet):
    schedule = (20, 50, 4)


# equal training time with nnU-Net's default on the `_cpu` budget, for networks whose step is 2x / 4x cheaper
class nnUNetTrainerMKUNet_cpu2x(nnUNetTrainerMKUNet):
    schedule = (40, 50, 4)


class nnUNetTrainerMKUNet_cpu4x(nnUNetTrainerMKUNet):
    schedule = (80, 50, 4)


class nnUNetTrainerMKUNet_100epochs(nnUNetTrainerMKUNet):
    schedule = (100, 250, 50)


class nnUNetTrainerMKUNet_250epochs(nnUNetTrainerMKUNet):
    schedule = (250, 250, 50)


class nnUNetTrainerORDER_smoke(nnUNetTrainerORDER):
    schedule = (3, 8, 4)


class nnUNetTrainerORDER_cpu(nnUNetTrainerORDER):
    schedule = (20, 50, 4)


class nnUNetTrainerORDER_cpu2x(nnUNetTrainerORDER):
    schedule = (40, 50, 4)


class nnUNetTrainerORDER_cpu4x(nnUNetTrainerORDER):
    schedule = (80, 50, 4)


class nnUNetTrainerORDER_100epochs(nnUNetTrainerORDER):
    schedule = (100, 250, 50)


class nnUNetTrainerORDER_250epochs(nnUNetTrainerORDER):
    schedule = (250, 250, 50)
