"""Trainer variants that change what nnU-Net's data loader feeds the network: copy-paste of lesions of other training
cases (``copy_paste``, TumorCP) and synthetic cases drawn with a probability (``synthetic_mix``).

Each is a mixin placed before a plugin trainer, nnU-Net's variant style: ``class X(CopyPasteTrainer,
nnUNetTrainerORDER_cpu)``; the variants below cover ORDER, MK-UNet and nnU-Net's default network at the ``_cpu``
and ``_smoke`` budgets, each as ``_copypaste``, ``_synthmix`` and both (``_synthmix_copypaste``). The probability
is a class attribute that ``nnUNet_laworder_copy_paste_p`` / ``nnUNet_laworder_synthetic_p`` override for a run (0
to 1; anything else is an error when the trainer is made, before any training), so that a study sweeps p without new
classes.

Both step in where nnU-Net's get_dataloaders makes the training pipeline: get_training_transforms (the copy-paste
transform goes first) and get_tr_and_val_datasets (the lesions come from the fold's training cases only; the
training dataset is seen through ``HostTracking`` / ``SyntheticMix``). nnU-Net calls the first before the second
(tests/test_nnunet_contracts.py checks).
"""
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

from nnunet_laworder.errors import InputError
from nnunet_laworder.training.copy_paste import CopyPasteTransform, HostTracking, collect_lesions
from nnunet_laworder.training.nnunet_contract import overrides_nnunet
from nnunet_laworder.training.order_trainers import (
    ScheduledTrainer, nnUNetTrainer_cpu, nnUNetTrainer_smoke, nnUNetTrainerMKUNet_cpu, nnUNetTrainerMKUNet_smoke,
    nnUNetTrainerORDER_cpu, nnUNetTrainerORDER_smoke, probability_variable)
from nnunet_laworder.training.synthetic_mix import SyntheticMix, synthetic_cases

COPY_PASTE_VARIABLE = "nnUNet_laworder_copy_paste_p"
SYNTHETIC_VARIABLE = "nnUNet_laworder_synthetic_p"


class CopyPasteTrainer(ScheduledTrainer):
    """Pastes, with probability ``copy_paste_probability`` per training sample, a lesion of another training case of
    the fold into the sample (training/copy_paste.py)."""

    copy_paste_probability = 0.8  # TumorCP's

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.copy_paste_p = probability_variable(COPY_PASTE_VARIABLE, self.copy_paste_probability)
        self.copy_paste = None  # made with the training transforms
        self.print_to_log_file(f"copy-paste probability: {self.copy_paste_p} (class attribute "
                               f"copy_paste_probability, or ${COPY_PASTE_VARIABLE})")

    # an instance method where nnU-Net's is static: nnU-Net calls it on the trainer, and the transform is the trainer's
    @overrides_nnunet
    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None) -> BasicTransform:
        nnunet_transforms = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm, is_cascaded, foreground_labels, regions, ignore_label)
        self.copy_paste = CopyPasteTransform(self.copy_paste_p, patch_size, rotation_for_DA, mirror_axes,
                                             do_dummy_2d_data_aug)
        return ComposeTransforms([self.copy_paste, nnunet_transforms])

    @overrides_nnunet
    def get_tr_and_val_datasets(self):
        training, validation = super().get_tr_and_val_datasets()
        if self.copy_paste is None:
            raise RuntimeError("nnU-Net split the cases before making the training transforms: the lesions of "
                               "copy-paste would have no transform to go to")
        # the highest foreground label: KiTS's tumour (inside the kidney), Kvasir's polyp
        label = max(self.label_manager.foreground_labels)
        bank = collect_lesions(training, label, self.configuration_manager.patch_size, self.lesion_donors(training))
        if not bank.lesions:
            raise InputError(f"copy-paste: fold {self.fold}'s training cases have no lesion of label {label} to paste")
        self.print_to_log_file(f"copy-paste from the training cases: {bank}")
        self.copy_paste.bank = bank
        return HostTracking(training, self.copy_paste), validation

    def lesion_donors(self, training) -> list:
        """The cases whose lesions are pasted: all of the fold's training cases."""
        return list(training.identifiers)


class SyntheticMixTrainer(ScheduledTrainer):
    """Trains on a dataset written by ``law synthesize``: each training sample is one of the fold's synthetic
    training cases with probability ``synthetic_probability``, a real one otherwise (training/synthetic_mix.py)."""

    synthetic_probability = 0.5  # DiffTumor's

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthetic_p = probability_variable(SYNTHETIC_VARIABLE, self.synthetic_probability)
        self.synthetic_cases = synthetic_cases(self.plans_manager.dataset_name)
        self.print_to_log_file(f"synthetic probability: {self.synthetic_p} (class attribute "
                               f"synthetic_probability, or ${SYNTHETIC_VARIABLE}); {len(self.synthetic_cases)} "
                               f"synthetic cases in provenance.json")

    @overrides_nnunet
    def get_tr_and_val_datasets(self):
        training, validation = super().get_tr_and_val_datasets()
        leaked = sorted(set(validation.identifiers) & self.synthetic_cases)
        if leaked and self.fold != "all":  # fold "all" validates on its training cases, as nnU-Net does
            raise InputError(f"fold {self.fold}'s validation cases include synthetic cases ({', '.join(leaked[:3])}): "
                             f"splits_final.json is not the one 'law synthesize' wrote")
        synthetic = [case for case in training.identifiers if case in self.synthetic_cases]
        if self.synthetic_p > 0 and not synthetic:
            raise InputError(f"fold {self.fold}'s training cases include no synthetic case to draw with probability "
                             f"{self.synthetic_p}")
        mix = SyntheticMix(training, synthetic, self.synthetic_p)
        self.print_to_log_file(f"training samples: synthetic ({len(synthetic)} cases) with probability "
                               f"{self.synthetic_p}, real ({len(mix.identifiers)} cases) otherwise")
        return mix, validation


class SyntheticMixCopyPasteTrainer(SyntheticMixTrainer, CopyPasteTrainer):
    """Both: a synthetic case drawn with probability ``synthetic_probability``, then, on whichever case was drawn,
    copy-paste of a real training case's lesion with probability ``copy_paste_probability``. Asks whether the
    generator's cases add anything to what copy-paste alone gives."""

    def lesion_donors(self, training) -> list:
        # synthetic cases hold real lesions again (their host's and an added one): pasting from them would weigh
        # those lesions several times over
        return [case for case in training.identifiers if case not in self.synthetic_cases]


class nnUNetTrainerORDER_cpu_copypaste(CopyPasteTrainer, nnUNetTrainerORDER_cpu):
    pass


class nnUNetTrainerORDER_smoke_copypaste(CopyPasteTrainer, nnUNetTrainerORDER_smoke):
    pass


class nnUNetTrainerMKUNet_cpu_copypaste(CopyPasteTrainer, nnUNetTrainerMKUNet_cpu):
    pass


class nnUNetTrainerMKUNet_smoke_copypaste(CopyPasteTrainer, nnUNetTrainerMKUNet_smoke):
    pass


class nnUNetTrainer_cpu_copypaste(CopyPasteTrainer, nnUNetTrainer_cpu):
    pass


class nnUNetTrainer_smoke_copypaste(CopyPasteTrainer, nnUNetTrainer_smoke):
    pass


class nnUNetTrainerORDER_cpu_synthmix(SyntheticMixTrainer, nnUNetTrainerORDER_cpu):
    pass


class nnUNetTrainerORDER_smoke_synthmix(SyntheticMixTrainer, nnUNetTrainerORDER_smoke):
    pass


class nnUNetTrainerMKUNet_cpu_synthmix(SyntheticMixTrainer, nnUNetTrainerMKUNet_cpu):
    pass


class nnUNetTrainerMKUNet_smoke_synthmix(SyntheticMixTrainer, nnUNetTrainerMKUNet_smoke):
    pass


class nnUNetTrainer_cpu_synthmix(SyntheticMixTrainer, nnUNetTrainer_cpu):
    pass


class nnUNetTrainer_smoke_synthmix(SyntheticMixTrainer, nnUNetTrainer_smoke):
    pass


class nnUNetTrainerORDER_cpu_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainerORDER_cpu):
    pass


class nnUNetTrainerORDER_smoke_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainerORDER_smoke):
    pass


class nnUNetTrainerMKUNet_cpu_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainerMKUNet_cpu):
    pass


class nnUNetTrainerMKUNet_smoke_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainerMKUNet_smoke):
    pass


class nnUNetTrainer_cpu_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainer_cpu):
    pass


class nnUNetTrainer_smoke_synthmix_copypaste(SyntheticMixCopyPasteTrainer, nnUNetTrainer_smoke):
    pass
