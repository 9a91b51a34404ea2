"""The nnU-Net internals the plugin relies on, as nnunetv2 2.8 has them: a release that renames or changes one fails
here (trainer hooks and attributes also at import or construction, see training/nnunet_contract.py) instead of
silently dropping the plugin's code. Fast: hand-written plans, no dataset."""
import inspect
import re

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_helpers import tiny_2d_plans
from nnunet_laworder.evaluation.complexity import nnunet_default_architecture
from nnunet_laworder.evaluation.models import ModelIdentity
from nnunet_laworder.evaluation.runner import Runner
from nnunet_laworder.training import data_trainers, diffusion_seg_trainers, order_trainers, recipe_trainers
from nnunet_laworder.training.diffusion_seg_trainers import nnUNetTrainerCDAL_smoke, nnUNetTrainerSPAD_smoke
from nnunet_laworder.training.nnunet_contract import OVERRIDE_MARK, overrides_nnunet, set_nnunet_attributes
from nnunet_laworder.training.order_trainers import nnUNetTrainerORDER_smoke
from nnunet_laworder.training.recipe_trainers import (nnUNetTrainerORDER_smoke_lr1e2, nnUNetTrainerORDER_smoke_noDA,
                                                      nnUNetTrainerORDER_smoke_noDS)

PLUGIN_TRAINERS = [cls for module in (order_trainers, diffusion_seg_trainers, data_trainers,
                                           recipe_trainers)
                   for cls in vars(module).values()
                   if inspect.isclass(cls) and issubclass(cls, nnUNetTrainer) and cls is not nnUNetTrainer]
# the trainers build their networks in initialize(), which these tests do not call
UNBUILT = {"network_class_name": "unused", "_kw_requires_import": [], "arch_kwargs": {"strides": [[1, 1], [2, 2]]}}


def tiny_trainer(trainer_class, tmp_path, monkeypatch, architecture=UNBUILT, patch_size=(16, 16)):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))  # the trainer's log folder
    plans, dataset_json = tiny_2d_plans(architecture, patch_size)
    return trainer_class(plans, "2d", 0, dataset_json, torch.device("cpu"))


def test_every_override_of_an_nnunet_trainer_method_is_checked():
    unchecked = [f"{cls.__name__}.{name}" for cls in PLUGIN_TRAINERS for name, attribute in vars(cls).items()
                 if callable(getattr(attribute, "__func__", attribute)) and hasattr(nnUNetTrainer, name)
                 and not getattr(getattr(attribute, "__func__", attribute), OVERRIDE_MARK, False)]
    assert not unchecked, f"decorate these overrides with @overrides_nnunet: {unchecked}"


def test_an_override_of_a_renamed_or_changed_hook_fails_at_import():
    def configure_rotation_dummyDA_mirroring_and_initial_patch_size(self):  # the spelling a release may fix
        return None

    with pytest.raises(RuntimeError, match="which nnU-Net no longer has .* written for nnunetv2 2.8"):
        overrides_nnunet(configure_rotation_dummyDA_mirroring_and_initial_patch_size)

    def train_step(self, batch, step):
        return {}

    with pytest.raises(RuntimeError, match="whose parameters differ"):
        overrides_nnunet(train_step)


def test_the_plugins_settings_land_in_nnunets_attributes(tmp_path, monkeypatch):
    order = tiny_trainer(nnUNetTrainerORDER_smoke, tmp_path, monkeypatch)
    epochs, iterations, validation_iterations = nnUNetTrainerORDER_smoke.schedule
    assert (order.num_epochs, order.num_iterations_per_epoch, order.num_val_iterations_per_epoch) == \
        (epochs, iterations, validation_iterations)
    assert (order.initial_lr, order.weight_decay) == (3e-3, 1e-4)

    spad = tiny_trainer(nnUNetTrainerSPAD_smoke, tmp_path, monkeypatch)
    assert not spad.enable_deep_supervision and spad.grad_scaler is None
    *_, mirror_axes = spad.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes == (0, 1) and spad.inference_allowed_mirroring_axes is None  # augmentation only

    with pytest.raises(RuntimeError, match="nnUNetTrainerSPAD_smoke has no attribute num_epoch "):
        set_nnunet_attributes(spad, num_epoch=1)


def test_each_recipe_variant_changes_one_knob_in_nnunets_attributes(tmp_path, monkeypatch):
    order = tiny_trainer(nnUNetTrainerORDER_smoke, tmp_path, monkeypatch)
    lr = tiny_trainer(nnUNetTrainerORDER_smoke_lr1e2, tmp_path, monkeypatch)
    no_ds = tiny_trainer(nnUNetTrainerORDER_smoke_noDS, tmp_path, monkeypatch)
    no_da = tiny_trainer(nnUNetTrainerORDER_smoke_noDA, tmp_path, monkeypatch)
    assert (lr.initial_lr, order.initial_lr, no_ds.initial_lr, no_da.initial_lr) == (1e-2, 3e-3, 3e-3, 3e-3)
    assert order.enable_deep_supervision and not no_ds.enable_deep_supervision and no_da.enable_deep_supervision

    rotation, dummy_2d, augmented_patch, mirror_axes = \
        order.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    *_, plain_patch, no_da_mirror_axes = no_da.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    # augmentation crops a larger patch to rotate and scale; without it, the patch itself
    assert tuple(plain_patch) == (16, 16) and all(a > p for a, p in zip(augmented_patch, plain_patch))
    # inference mirrors as before: only training changes
    assert no_da_mirror_axes == mirror_axes == (0, 1) and no_da.inference_allowed_mirroring_axes == (0, 1)
    arguments = ((16, 16), rotation, None, mirror_axes, dummy_2d)
    names = [type(t).__name__ for t in order.get_training_transforms(*arguments).transforms]
    plain = [type(t).__name__ for t in no_da.get_training_transforms(*arguments).transforms]
    assert "SpatialTransform" in names and "MirrorTransform" in names
    assert plain == [type(t).__name__ for t in nnUNetTrainer.get_validation_transforms(None).transforms]


def test_cdal_logs_its_gan_losses_through_nnunets_logger(tmp_path, monkeypatch):
    cdal = tiny_trainer(nnUNetTrainerCDAL_smoke, tmp_path, monkeypatch)
    for key in cdal.gan_log_keys:
        cdal.logger.log(f"train_{key}", 0.5, 0)
    logging = cdal.logger.get_checkpoint()  # what nnU-Net saves in every checkpoint
    assert all(logging[f"train_{key}"] == [0.5] for key in cdal.gan_log_keys) and "train_losses" in logging


def test_the_benchmark_builds_a_trainer_as_initialize_does(tmp_path, monkeypatch):
    """evaluation/runner.py repeats nnUNetTrainer.initialize but for the dataset class (it reads no data) and the
    batch size (its own): anything else a new initialize sets must be added there."""
    monkeypatch.setattr(nnunet_trainer_module, "infer_dataset_class", lambda folder: object())
    architecture = nnunet_default_architecture(2, (32, 32))
    reference = tiny_trainer(nnUNetTrainer, tmp_path, monkeypatch, architecture, (32, 32))
    plans, dataset_json = tiny_2d_plans(architecture, (32, 32))
    runner = Runner(ModelIdentity("nnUNetTrainer", "nnUNetPlans", "2d"), plans, dataset_json, torch.device("cpu"),
                    None, tmp_path)

    def set_by(trainer, build) -> set:
        before = dict(vars(trainer))
        build()
        return {name for name, value in vars(trainer).items() if name not in before or value is not before[name]}

    by_initialize = set_by(reference, reference.initialize)
    by_runner = set_by(runner.trainer, lambda: runner.build(count_cost=False))
    assert by_runner <= by_initialize and by_initialize - by_runner == {"dataset_class", "batch_size"}
    for name in by_runner:
        assert type(getattr(runner.trainer, name)) is type(getattr(reference, name)), name


def test_predictor_attributes_the_plugin_replaces_exist():
    # benchmark --predict switches use_mirroring; deployment/onnx_predict.py puts onnxruntime's network in place of
    # network and list_of_parameters
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    set_nnunet_attributes(predictor, use_mirroring=False)
    assert predictor.use_mirroring is False
    assert all(hasattr(predictor, name) for name in ("network", "list_of_parameters"))


def test_seeded_runs_reach_nnunets_single_threaded_augmenter(monkeypatch):
    # a seeded ScheduledTrainer sets nnUNet_n_proc_DA=0 around nnU-Net's get_dataloaders, which must read it there
    assert "get_allowed_n_proc_DA" in nnUNetTrainer.get_dataloaders.__code__.co_names
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert get_allowed_n_proc_DA() == 0


def test_the_data_trainers_step_in_where_nnunet_makes_its_training_pipeline():
    # data_trainers.py: the copy-paste transform is made in get_training_transforms and receives the lesions of the
    # fold's training cases in get_tr_and_val_datasets, so nnU-Net must call the one before the other
    source = inspect.getsource(nnUNetTrainer.get_dataloaders)
    assert source.index("self.get_training_transforms(") < source.index("self.get_tr_and_val_datasets()")
    # HostTracking and SyntheticMix give nnU-Net's data loader the training dataset's identifiers and load_case:
    # all it reads of the dataset
    loader = inspect.getsource(nnUNetDataLoader)
    assert "self.indices = data.identifiers" in loader and set(re.findall(r"self\._data\.(\w+)", loader)) == \
        {"load_case"}
