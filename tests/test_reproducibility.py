"""Seeds and CPU threads of the plugin's trainers: the short schedules are seeded (``nnUNet_laworder_seed``
overrides), the small networks (MK-UNet, ORDER, SPAD, cDAL) train with ``nnUNet_laworder_cpu_threads`` torch threads
and nnU-Net's default network with nnU-Net's, and two trainings of
``nnUNetTrainerORDER_smoke`` on the same real Kvasir-SEG sample end identical (marked slow)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from law_fixtures import LAW_KVASIR_MODELS, law_folders, law_kvasir  # noqa: F401  (pytest fixtures)
from nnunet_helpers import run, validation_summary
from nnunet_laworder.errors import InputError
from nnunet_laworder.planning.architecture import architecture_block
from nnunet_laworder.training.diffusion_seg_trainers import (
    nnUNetTrainerCDAL, nnUNetTrainerCDAL_100epochs, nnUNetTrainerCDAL_cpu, nnUNetTrainerCDAL_smoke,
    nnUNetTrainerSPAD_250epochs, nnUNetTrainerSPAD_cpu, nnUNetTrainerSPAD_smoke)
from nnunet_laworder.training.order_trainers import (
    SHORT_SCHEDULE_SEED, nnUNetTrainer_cpu, nnUNetTrainer_cpuhalf, nnUNetTrainer_smoke, nnUNetTrainerMKUNet_cpu2x,
    nnUNetTrainerMKUNet_cpu4x, nnUNetTrainerORDER, nnUNetTrainerORDER_100epochs, nnUNetTrainerORDER_250epochs,
    nnUNetTrainerORDER_cpu, nnUNetTrainerORDER_smoke)

TRAINER = "nnUNetTrainerORDER_smoke"
pytestmark = pytest.mark.xdist_group(LAW_KVASIR_MODELS)


def make_trainer(trainer_class, tmp_path, monkeypatch):
    """A trainer on CPU for a hand-written 2d_order configuration: enough for its constructor and hooks."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = {"dataset_name": "Dataset999_Seeds", "plans_name": "nnUNetPlans", "continue_training": False,
             "configurations": {"2d_order": {"data_identifier": "nnUNetPlans_2d", "batch_size": 2,
                                             "patch_size": [64, 64],
                                             "architecture": architecture_block("order", [[1, 1]] + [[2, 2]] * 4, 2)}}}
    dataset_json = {"labels": {"background": 0, "polyp": 1}, "channel_names": {"0": "R", "1": "G", "2": "B"}}
    return trainer_class(plans, "2d_order", 0, dataset_json, torch.device("cpu"))


def test_short_schedules_are_seeded_full_length_ones_are_not():
    for trainer in (nnUNetTrainerORDER_smoke, nnUNetTrainerORDER_cpu, nnUNetTrainerMKUNet_cpu2x,
                    nnUNetTrainerMKUNet_cpu4x, nnUNetTrainer_cpu, nnUNetTrainer_cpuhalf, nnUNetTrainer_smoke,
                    nnUNetTrainerSPAD_smoke, nnUNetTrainerSPAD_cpu, nnUNetTrainerCDAL_smoke, nnUNetTrainerCDAL_cpu):
        assert trainer.seed == SHORT_SCHEDULE_SEED, trainer.__name__
    for trainer in (nnUNetTrainerORDER, nnUNetTrainerORDER_100epochs, nnUNetTrainerORDER_250epochs,
                    nnUNetTrainerCDAL, nnUNetTrainerCDAL_100epochs, nnUNetTrainerSPAD_250epochs):
        assert trainer.seed is None, trainer.__name__


@pytest.mark.parametrize("value,expected", [(None, SHORT_SCHEDULE_SEED), ("", SHORT_SCHEDULE_SEED), ("7", 7),
                                            (" none ", None)])
def test_seed_variable_overrides_the_schedule(value, expected, tmp_path, monkeypatch):
    if value is None:
        monkeypatch.delenv("nnUNet_laworder_seed", raising=False)
    else:
        monkeypatch.setenv("nnUNet_laworder_seed", value)
    trainer = make_trainer(nnUNetTrainerORDER_smoke, tmp_path, monkeypatch)
    assert trainer.run_seed == expected
    assert f"seed: {expected}" in open(trainer.log_file).read()


def test_bad_seed_variable_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_laworder_seed", "-1")
    with pytest.raises(InputError, match="nnUNet_laworder_seed='-1'"):
        make_trainer(nnUNetTrainerORDER_smoke, tmp_path, monkeypatch)


@pytest.mark.parametrize("trainer_class,value,expected", [(nnUNetTrainerORDER_cpu, None, 20),
                                                           (nnUNetTrainerORDER_cpu, "7", 7),
                                                           (nnUNetTrainer_cpuhalf, None, 10),
                                                           (nnUNetTrainerORDER, "3", 3)])
def test_epochs_variable_overrides_the_schedule_epochs_only(trainer_class, value, expected, tmp_path, monkeypatch):
    if value is None:
        monkeypatch.delenv("nnUNet_laworder_epochs", raising=False)
    else:
        monkeypatch.setenv("nnUNet_laworder_epochs", value)
    trainer = make_trainer(trainer_class, tmp_path, monkeypatch)
    iterations = 250 if trainer_class is nnUNetTrainerORDER else 50  # nnU-Net's own, or the schedule's
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (expected, iterations)
    assert trainer.save_every == max(1, min(50, expected // 2))
    assert f"schedule: {expected} epochs x {iterations} iterations" in open(trainer.log_file).read()


def test_bad_epochs_variable_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_laworder_epochs", "0")
    with pytest.raises(InputError, match="nnUNet_laworder_epochs='0'"):
        make_trainer(nnUNetTrainerORDER_cpu, tmp_path, monkeypatch)


@pytest.fixture
def torch_threads():
    """Restores the process's torch threads after a test that lets a trainer set them."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerORDER_smoke, nnUNetTrainerSPAD_smoke, nnUNetTrainerCDAL_cpu,
                                           nnUNetTrainer_smoke])
@pytest.mark.parametrize("value", [None, "2"])
def test_small_network_trainers_set_cpu_threads_when_training_starts(trainer_class, value, tmp_path, monkeypatch,
                                                                     torch_threads):
    if value is None:
        monkeypatch.delenv("nnUNet_laworder_cpu_threads", raising=False)
    else:
        monkeypatch.setenv("nnUNet_laworder_cpu_threads", value)
    trainer = make_trainer(trainer_class, tmp_path, monkeypatch)
    # nnUNetv2_train -device cpu sets the CPU count before it makes the trainer; making it changes nothing yet
    torch.set_num_threads(3)
    assert torch.get_num_threads() == 3
    # nnU-Net's own on_train_start needs preprocessed data: only the plugin's part of the hook runs here
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    trainer.on_train_start()
    # nnU-Net's default network keeps the threads nnUNetv2_train gave it
    expected = int(value or 1) if trainer_class.small_network_threads else 3
    assert torch.get_num_threads() == expected
    log = open(trainer.log_file).read()
    assert (f"torch threads: {expected} ($nnUNet_laworder_cpu_threads, default 1)" in log) == \
        trainer_class.small_network_threads


@pytest.mark.parametrize("value", ["0", "two", "100000"])
def test_bad_cpu_threads_variable_is_an_input_error(value, tmp_path, monkeypatch, torch_threads):
    monkeypatch.setenv("nnUNet_laworder_cpu_threads", value)
    trainer = make_trainer(nnUNetTrainerORDER_smoke, tmp_path, monkeypatch)
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", lambda self: None)
    with pytest.raises(InputError, match="nnUNet_laworder_cpu_threads"):
        trainer.on_train_start()


@pytest.mark.slow
def test_seeded_smoke_training_is_reproducible(law_kvasir, law_kvasir_order_smoke):
    """Twice the same training (once in this test, once for the session), with nnU-Net's usual 2 augmentation
    workers requested (nnunet_env): the seeded
    schedule augments in the training process, so both runs end with the same weights, losses and validation Dice.
    (After 3 x 8 iterations ORDER still predicts no polyp here, Dice 0: the weights and losses carry the test.)"""
    env = law_kvasir.env
    assert "nnUNet_laworder_seed" not in env and env["nnUNet_n_proc_DA"] == "2"
    run(["nnunet-laworder", "plans", "-d", str(law_kvasir.dataset_id), "-c", "2d", "--arch", "order"], env)
    model = law_kvasir.results / f"{TRAINER}__nnUNetPlans__2d_order"
    assert model.name == law_kvasir_order_smoke.name
    runs = []
    for i in range(2):
        if i == 0:  # the session's run of the same command in the same environment (conftest.py)
            shutil.copytree(law_kvasir_order_smoke, model)
        else:
            run(["nnUNetv2_train", str(law_kvasir.dataset_id), "2d_order", "0", "-tr", TRAINER, "-device", "cpu"],
                env)
        fold = model / "fold_0"
        checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        assert "seed: 12345" in log and "torch threads: 1 " in log
        assert "SingleThreadedAugmenter" in json.loads((fold / "debug.json").read_text())["dataloader_train"]
        dice = validation_summary(law_kvasir.folders["nnUNet_results"], law_kvasir.name, TRAINER, "2d_order")
        # every case's metrics and file names (the session's run validated into another nnUNet_results folder)
        cases = [dict(c, **{f: Path(c[f]).name for f in ("prediction_file", "reference_file")})
                 for c in dice["metric_per_case"]]
        runs.append((checkpoint, dice["foreground_mean"]["Dice"], json.dumps(cases)))
        model.rename(model.with_name(f"{model.name}_run{i}"))  # the second run starts from nothing
    (first, first_dice, first_cases), (second, second_dice, second_cases) = runs
    assert first_dice == second_dice and first_cases == second_cases
    for curve in ("train_losses", "val_losses"):
        assert first["logging"][curve] == second["logging"][curve]
    weights = first["network_weights"]
    assert weights.keys() == second["network_weights"].keys()
    assert all(torch.equal(weights[k], second["network_weights"][k]) for k in weights)
