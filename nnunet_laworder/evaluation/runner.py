"""One model ready to run as nnU-Net runs it: its trainer object, network, optimiser and loss, fixed random inputs.

The trainer class (``-tr``, or the one that trains that architecture) is instantiated on the dataset's plans and
its own ``build_network_architecture``, ``configure_optimizers``, ``_build_loss`` and ``train_step`` are used, so a
training step is exactly nnU-Net's (its loss with deep supervision, gradient clipping, AMP and grad scaler on CUDA,
torch.compile where nnU-Net would compile). A forward pass is that of ``nnUNetv2_predict`` for one patch: eval
mode, deep supervision off, ``torch.inference_mode``, autocast on CUDA. Inputs and targets are random tensors of
the planned shapes (a step costs the same whatever the values), so no preprocessed data is read.
"""
import contextlib
import io
import time
from copy import deepcopy
from pathlib import Path
from typing import Optional

import torch

from nnunet_laworder.evaluation.models import ModelIdentity, build_network, cost_of
from nnunet_laworder.training.discovery import environment, find_trainer_class


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(device, step) -> float:
    """Seconds of one call, the device synchronised around it."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


class Runner:
    """One model: nnU-Net's trainer object with its network, optimiser and loss, plus fixed random inputs."""

    def __init__(self, model: ModelIdentity, plans: dict, dataset_json: dict, device, batch_size: Optional[int],
                 scratch: Path):
        """The trainer object only; :meth:`build` makes the network (two steps, so that a memory child can take
        its baseline after every import and before any of the network's memory)."""
        self.model = model
        self.dataset_json = dataset_json
        trainer_class = find_trainer_class(model.trainer)
        # the trainer writes a log folder under nnUNet_results: a scratch folder, not the user's results
        with environment("nnUNet_results", str(scratch)), contextlib.redirect_stdout(io.StringIO()):
            self.trainer = trainer_class(plans=dict(deepcopy(plans), continue_training=False),
                                         configuration=model.configuration, fold=0, dataset_json=dataset_json,
                                         device=device)
        self.device = self.trainer.device
        self.patch_size = list(self.trainer.configuration_manager.patch_size)
        self.batch_size = batch_size or self.trainer.configuration_manager.batch_size
        self.cost, self.compiled, self.image, self._batch = {}, False, None, None

    def build(self, count_cost: bool = True) -> "Runner":
        """What nnUNetTrainer.initialize does, less the dataset class (a benchmark reads no preprocessed data)."""
        trainer = self.trainer
        network, channels = build_network(type(trainer), trainer.plans_manager, trainer.configuration_manager,
                                          self.dataset_json, self.model.identifier, trainer.enable_deep_supervision)
        trainer.num_input_channels = channels
        if count_cost:
            self.cost = cost_of(network, channels, self.patch_size)
        trainer.network = network.to(self.device)
        self.compiled = bool(trainer._do_i_compile())
        if self.compiled:
            trainer.network = torch.compile(trainer.network)
        trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
        trainer.loss = trainer._build_loss()
        trainer.was_initialized = True
        self.image = torch.randn(1, channels, *self.patch_size, device=self.device)
        return self

    def describe(self) -> dict:
        t = self.trainer
        return {"identifier": self.model.identifier, "trainer": self.model.trainer, "plans": self.model.plans,
                "configuration": self.model.configuration,
                "network_class": t.configuration_manager.network_arch_class_name, "dim": len(self.patch_size),
                "patch_size": self.patch_size, "batch_size": self.batch_size, "input_channels": t.num_input_channels,
                "outputs": t.label_manager.num_segmentation_heads, "regions": bool(t.label_manager.has_regions),
                "deep_supervision_outputs": len(t._get_deep_supervision_scales() or [None]),
                "optimizer": type(t.optimizer).__name__, "loss": type(t.loss).__name__, "compiled": self.compiled,
                "autocast": self.device.type == "cuda"}

    def batch(self) -> dict:
        """Random images and targets at every deep-supervision scale, shaped as nnU-Net's data loader makes them."""
        if self._batch is None:
            t = self.trainer
            g = torch.Generator().manual_seed(0)
            data = torch.randn(self.batch_size, t.num_input_channels, *self.patch_size, generator=g)
            label_manager = t.label_manager
            scales = t._get_deep_supervision_scales()
            targets = []
            for scale in scales or [[1.0] * len(self.patch_size)]:
                shape = [round(p * s) for p, s in zip(self.patch_size, scale)]
                if label_manager.has_regions:  # one binary map per region, as nnU-Net's region transform makes
                    target = torch.randint(0, 2, (self.batch_size, label_manager.num_segmentation_heads, *shape),
                                           generator=g)
                else:
                    target = torch.randint(0, label_manager.num_segmentation_heads, (self.batch_size, 1, *shape),
                                           generator=g)
                targets.append(target.float().to(self.device))
            self._batch = {"data": data.to(self.device), "target": targets if scales else targets[0]}
        # made at the first training step, so that the forward-pass memory does not include it
        return self._batch

    def forward(self) -> None:
        """One patch as nnUNetv2_predict runs it."""
        network = self.trainer.network
        network.eval()
        self.trainer.set_deep_supervision_enabled(False)
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            network(self.image)

    def train_step(self) -> None:
        """nnU-Net's own training step (it ends with ``loss.cpu()``, a synchronisation point, as in training)."""
        self.trainer.network.train()
        self.trainer.set_deep_supervision_enabled(self.trainer.enable_deep_supervision)
        self.trainer.train_step(self.batch())
