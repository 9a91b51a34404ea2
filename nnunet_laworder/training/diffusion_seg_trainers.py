"""nnU-Net trainers for the diffusion segmenters SPAD and cDAL, and their short-schedule variants.

They train on nnU-Net's default configurations (``2d``; ``3d_fullres`` works the same way, slowly on CPU) with
nnU-Net's data loading, augmentation, splits, validation and inference; what changes is the network and the
``train_step``. Each trainer builds its own small network from the configuration's patch dimensionality and
``strides`` (:meth:`nnUNetTrainerDiffusionSeg.build_network_architecture`, the same call ``nnUNetv2_predict`` makes),
and trains it on (image patch, mask) pairs with the mask as a diffusion state (one-hot classes or nnU-Net regions
from the label manager; the ignore label is left out of every loss). There is no deep supervision: as in nnU-Net's
Primus trainers, ``set_deep_supervision_enabled`` is a no-op and ``_get_deep_supervision_scales`` returns None, so
targets come at full resolution only and nnU-Net's loss is unwrapped.

In eval mode the network samples: the logits nnU-Net sees (online validation, final validation, prediction) are
those of the mean of ``num_samples`` (K) sampled masks. The online pseudo Dice of each epoch uses
``validation_samples`` (default 1) to keep epochs short; the final validation and ``nnUNetv2_predict`` use K.

Training runs in fp32 on every device (no autocast): the networks are small, and cDAL's R1 penalty (a double
backward) with two optimisers does not go through one GradScaler cleanly. Sampling (validation, prediction) runs in
fp32 too: :class:`~nnunet_laworder.networks.diffusion_segmentation.DiffusionSegmenter` turns off the CUDA autocast
that nnU-Net's validation step and predictor open around every network call. ``torch.compile`` is off: the samplers
are Python loops over diffusers schedulers.
"""
import os
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from nnunet_laworder.networks.cdal import (CDALDiscriminator, CDALNetwork, attention_weights, r1_penalty,
                                           weighted_mse)
from nnunet_laworder.networks.diffusion_segmentation import DiffusionSegmenter, mask_state
from nnunet_laworder.networks.spad import SPADNetwork, SPADPerturbation
from nnunet_laworder.training.nnunet_contract import overrides_nnunet, set_nnunet_attributes
from nnunet_laworder.training.order_trainers import SHORT_SCHEDULE_SEED, ScheduledTrainer


def bare_module(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel and torch.compile wrappers."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        module = module.module
    return module._orig_mod if isinstance(module, OptimizedModule) else module


class nnUNetTrainerDiffusionSeg(ScheduledTrainer):
    """Base of the diffusion-segmentation trainers: network from the plans, one-hot targets, sampling eval.

    Subclasses implement :meth:`build_network` and :meth:`diffusion_step` (one optimisation step on a batch).
    """

    small_network_threads = True  # nnUNet_laworder_cpu_threads on CPU, as for ORDER
    num_samples = 4  # K: samples averaged per patch by the final validation and nnUNetv2_predict
    validation_samples = 1  # K of the online pseudo Dice at the end of every epoch
    # nnU-Net's test-time mirroring (validation and prediction); every mirror costs K more samples
    test_time_mirroring = True
    features_per_stage: Sequence[int] = (8, 16, 32, 64)  # denoiser widths; stages follow the plan's strides
    lr = 1e-3
    betas = (0.9, 0.999)

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        set_nnunet_attributes(self, enable_deep_supervision=False, initial_lr=self.lr, weight_decay=1e-4,
                              grad_scaler=None)

    # ---- network -------------------------------------------------------------------------------------------------
    @classmethod
    @overrides_nnunet
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        dim = len(configuration_manager.patch_size)
        if dim not in (2, 3):
            raise RuntimeError(f"{cls.__name__} builds 2D or 3D networks; this configuration has a {dim}D patch")
        return cls.build_network(convert_dim_to_conv_op(dim), configuration_manager.pool_op_kernel_sizes,
                                 num_input_channels, num_output_channels)

    @classmethod
    def build_network(cls, conv_op, strides, num_input_channels: int, num_output_channels: int) -> DiffusionSegmenter:
        raise NotImplementedError

    @property
    def segmenter(self) -> DiffusionSegmenter:
        return bare_module(self.network)

    @overrides_nnunet
    def initialize(self):
        super().initialize()
        # build_network_architecture cannot see dataset.json; the buffer travels with the weights to inference
        self.segmenter.regions.fill_(self.label_manager.has_regions)

    @overrides_nnunet
    def _do_i_compile(self):
        return False

    @overrides_nnunet
    def set_deep_supervision_enabled(self, enabled: bool):
        pass

    @overrides_nnunet
    def _get_deep_supervision_scales(self):
        return None

    @overrides_nnunet
    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        settings = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.test_time_mirroring:  # mirroring stays an augmentation; only inference stops mirroring
            set_nnunet_attributes(self, inference_allowed_mirroring_axes=None)
        return settings

    @overrides_nnunet
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, betas=self.betas,
                                      weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # ---- targets ---------------------------------------------------------------------------------------------------
    def onehot_target(self, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, heads, ...) 0/1 mask per segmentation head and the (B, 1, ...) valid map (0 on the ignore label)."""
        lm = self.label_manager
        if lm.has_regions:
            if lm.has_ignore_label:  # nnU-Net appends the ignore label as the last region channel
                return target[:, :-1].float(), 1 - target[:, -1:].float()
            return target.float(), torch.ones_like(target[:, :1], dtype=torch.float32)
        labels = target[:, 0].long()
        valid = torch.ones_like(labels, dtype=torch.bool) if not lm.has_ignore_label else labels != lm.ignore_label
        onehot = F.one_hot(labels.where(valid, 0), lm.num_segmentation_heads).movedim(-1, 1).float()
        valid = valid[:, None].float()
        return onehot * valid, valid

    @property
    def progress(self) -> float:
        """Training progress p = epoch / num_epochs in [0, 1)."""
        return self.current_epoch / self.num_epochs

    # ---- training and validation -------------------------------------------------------------------------------
    @overrides_nnunet
    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        onehot, valid = self.onehot_target(target)
        losses = self.diffusion_step(data, target, onehot, valid)
        return {name: value.detach().cpu().numpy() for name, value in losses.items()}

    def diffusion_step(self, data: torch.Tensor, target: torch.Tensor, onehot: torch.Tensor,
                       valid: torch.Tensor) -> dict:
        """One optimisation step; returns named scalar losses ('loss' is the one nnU-Net logs)."""
        raise NotImplementedError

    @overrides_nnunet
    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.segmenter.num_samples = self.validation_samples

    @overrides_nnunet
    def on_validation_epoch_end(self, val_outputs):
        self.segmenter.num_samples = self.num_samples
        super().on_validation_epoch_end(val_outputs)


class nnUNetTrainerSPAD(nnUNetTrainerDiffusionSeg):
    """SPAD: image-conditioned mask diffusion with progress-aware structured perturbations (SPEC section 6).

    The denoiser predicts the clean mask as class logits from the perturbed noisy mask (:class:`SPADPerturbation`
    at progress ``epoch / num_epochs``), trained with nnU-Net's own Dice + CE (Dice + BCE for regions) loss.
    Sampling: ``sampling_steps`` DDIM steps of the ``num_train_timesteps`` DDPM schedule, K = ``num_samples``.
    """

    num_train_timesteps = 1000
    sampling_steps = 10
    perturbation = SPADPerturbation()

    @classmethod
    def build_network(cls, conv_op, strides, num_input_channels, num_output_channels):
        return SPADNetwork(num_input_channels, num_output_channels, conv_op, strides, cls.features_per_stage,
                           num_train_timesteps=cls.num_train_timesteps, sampling_steps=cls.sampling_steps,
                           num_samples=cls.num_samples)

    def diffusion_step(self, data, target, onehot, valid):
        net = self.segmenter
        timesteps = torch.randint(0, net.num_train_timesteps, (data.shape[0],), device=self.device)
        perturbed = self.perturbation(onehot, torch.randn_like(onehot), net.alpha_bar(timesteps), self.progress,
                                      self.label_manager.has_regions)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.network(data, perturbed["noisy"], timesteps), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {"loss": loss}


class nnUNetTrainerCDAL(nnUNetTrainerDiffusionSeg):
    """cDAL: few-step denoising-diffusion GAN segmentation with discriminator spatial attention (SPEC section 7).

    Per step (``k`` uniform in ``0..T-1``): the clean label is noised into the real pair ``(x_k, x_{k+1})``, with
    ``x_{k+1} ~ q(x_{k+1} | x0)``, the very distribution the sampler's chain walks; the generator predicts ``x0_hat``
    from ``(x_{k+1}, k, image, z)``; the fake ``x_k`` is the sampler's posterior step ``q(x_k | x0_hat, x_{k+1})``.
    Discriminator: softplus GAN loss + R1 (``r1_gamma / 2 * |grad D(real x_k)|^2``); its features on the real pair
    (before its update) give the attention map ``A``. Generator: ``mse_weight * MSE(x0_hat, x0)``, per voxel
    weighted by ``1 - s + s A`` (``s = attention_strength``), ``+ adversarial_weight * softplus(-D(fake))``. SPEC
    section 7 weights the label before noising instead; the sampler cannot, so that would train the generator on
    inputs it never sees (README, "Diffusion segmenters"). The logged training loss is the weighted x0 MSE; the GAN
    terms are logged as ``train_loss_d``, ``train_loss_adv`` and ``train_r1``. Sampling: ancestral posterior sampling
    over all T steps, K samples.
    """

    num_timesteps = 4  # T
    latent_dim = 100
    discriminator_features: Sequence[int] = (16, 32, 64)
    r1_gamma = 1.0
    mse_weight = 1.0
    adversarial_weight = 0.05
    attention_strength = 0.5
    discriminator_lr = 1e-3
    betas = (0.5, 0.9)  # Adam betas of GAN training, for both networks
    gan_log_keys = ("loss_d", "loss_adv", "r1")

    @overrides_nnunet
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.discriminator = self.optimizer_d = self.lr_scheduler_d = None
        # one value per epoch, saved with nnU-Net's logging in every checkpoint; nnU-Net's logger logs only the keys
        # it holds, and its checkpoint methods are the public way to add some
        logging = self.logger.get_checkpoint()
        self.logger.load_checkpoint({**logging, **{f"train_{key}": [] for key in self.gan_log_keys}})

    @classmethod
    def build_network(cls, conv_op, strides, num_input_channels, num_output_channels):
        return CDALNetwork(num_input_channels, num_output_channels, conv_op, strides, cls.features_per_stage,
                           latent_dim=cls.latent_dim, num_timesteps=cls.num_timesteps, num_samples=cls.num_samples)

    @overrides_nnunet
    def configure_optimizers(self):
        """The generator's optimiser and schedule (nnU-Net's contract); the discriminator, which exists for training
        only and is no part of ``self.network``, is built here with its own, so that every caller of this hook
        (``initialize``, the plugin's benchmark) gets a trainer that can take a step."""
        if self.is_ddp:
            raise RuntimeError(f"{self.__class__.__name__} trains on one device: the R1 penalty's double backward "
                               "does not go through DistributedDataParallel")
        conv_op = convert_dim_to_conv_op(len(self.configuration_manager.patch_size))
        self.discriminator = CDALDiscriminator(
            self.label_manager.num_segmentation_heads, self.num_input_channels, conv_op,
            self.configuration_manager.pool_op_kernel_sizes, self.discriminator_features).to(self.device)
        self.optimizer_d = torch.optim.AdamW(self.discriminator.parameters(), lr=self.discriminator_lr,
                                             betas=self.betas, weight_decay=self.weight_decay)
        self.lr_scheduler_d = PolyLRScheduler(self.optimizer_d, self.discriminator_lr, self.num_epochs)
        return super().configure_optimizers()

    @overrides_nnunet
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.discriminator.train()
        self.lr_scheduler_d.step(self.current_epoch)

    def diffusion_step(self, data, target, onehot, valid):
        net = self.segmenter
        x0 = mask_state(onehot)
        timesteps = torch.randint(0, net.num_timesteps, (data.shape[0],), device=self.device)
        noise, noise_next, noise_post = (torch.randn_like(x0) for _ in range(3))
        latent = torch.randn(data.shape[0], net.latent_dim, device=self.device)
        return self.gan_step(data, x0, valid, timesteps, noise, noise_next, noise_post, latent)

    def gan_step(self, data: torch.Tensor, x0: torch.Tensor, valid: torch.Tensor, timesteps: torch.Tensor,
                 noise: torch.Tensor, noise_next: torch.Tensor, noise_post: torch.Tensor, latent: torch.Tensor) -> dict:
        """One discriminator and one generator update from given noise (:meth:`diffusion_step` draws it)."""
        net, disc = self.segmenter, self.discriminator
        x_k, x_next = net.forward_pair(x0, timesteps, noise, noise_next)
        x0_hat = mask_state(net.probabilities(self.network(data, x_next, timesteps, latent)))
        fake_k = net.posterior_sample(x0_hat, x_next, timesteps, noise_post)

        # discriminator: softplus GAN loss on real / fake pairs + R1 on the real x_k
        self.optimizer_d.zero_grad(set_to_none=True)
        x_k.requires_grad_(True)
        d_real, feats = disc(x_k, x_next, data, timesteps)
        weights = attention_weights(disc.attention(feats, x0.shape[2:]).detach(), self.attention_strength)
        r1 = r1_penalty(d_real, x_k)
        d_fake, _ = disc(fake_k.detach(), x_next, data, timesteps)
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean() + 0.5 * self.r1_gamma * r1
        loss_d.backward()
        self.optimizer_d.step()

        # generator: attention-weighted x0 MSE (ignore label excluded) + non-saturating adversarial loss through the
        # fixed discriminator
        self.optimizer.zero_grad(set_to_none=True)
        disc.requires_grad_(False)
        d_fake_g, _ = disc(fake_k, x_next, data, timesteps)
        disc.requires_grad_(True)
        loss_adv = F.softplus(-d_fake_g).mean()
        mse = weighted_mse(x0_hat, x0, weights, valid)
        (self.mse_weight * mse + self.adversarial_weight * loss_adv).backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {"loss": mse, "loss_d": loss_d, "loss_adv": loss_adv, "r1": r1}

    @overrides_nnunet
    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for key in self.gan_log_keys:
            self.logger.log(f"train_{key}", float(np.mean(outputs[key])), self.current_epoch)

    # ---- checkpoints: nnU-Net's, plus the discriminator and its optimiser -----------------------------------------
    @overrides_nnunet
    def save_checkpoint(self, filename: str) -> None:
        partial = filename + ".partial"
        super().save_checkpoint(partial)
        if not os.path.isfile(partial):  # not rank 0, or checkpointing disabled
            return
        checkpoint = torch.load(partial, map_location="cpu", weights_only=False)
        checkpoint.update({"discriminator_weights": self.discriminator.state_dict(),
                           "discriminator_optimizer_state": self.optimizer_d.state_dict()})
        torch.save(checkpoint, partial)
        os.replace(partial, filename)  # the file appears complete, never with nnU-Net's part only

    @overrides_nnunet
    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False)
        if "discriminator_weights" not in checkpoint:
            raise RuntimeError(f"{self.__class__.__name__}: the checkpoint holds no discriminator; it was not "
                               "written by a cDAL trainer")
        self.discriminator.load_state_dict(checkpoint["discriminator_weights"])
        self.optimizer_d.load_state_dict(checkpoint["discriminator_optimizer_state"])


# Short schedules, as for ORDER: 'smoke' checks the pipeline on CPU in about a minute (and samples cheaply: K = 2,
# fewest steps, no test-time mirroring), 'cpu' is the CPU experiment budget (ORDER_cpu's 20 x 50); both seeded.
# The epoch variants are for GPU experiments, unseeded.
class nnUNetTrainerSPAD_smoke(nnUNetTrainerSPAD):
    schedule = (3, 8, 2)
    seed = SHORT_SCHEDULE_SEED
    num_samples, sampling_steps, test_time_mirroring = 2, 3, False


class nnUNetTrainerSPAD_cpu(nnUNetTrainerSPAD):
    schedule = (20, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerSPAD_100epochs(nnUNetTrainerSPAD):
    schedule = (100, 250, 50)


class nnUNetTrainerSPAD_250epochs(nnUNetTrainerSPAD):
    schedule = (250, 250, 50)


class nnUNetTrainerCDAL_smoke(nnUNetTrainerCDAL):
    schedule = (3, 8, 2)
    seed = SHORT_SCHEDULE_SEED
    num_samples, num_timesteps, test_time_mirroring = 2, 2, False


class nnUNetTrainerCDAL_cpu(nnUNetTrainerCDAL):
    schedule = (20, 50, 4)
    seed = SHORT_SCHEDULE_SEED


class nnUNetTrainerCDAL_100epochs(nnUNetTrainerCDAL):
    schedule = (100, 250, 50)


class nnUNetTrainerCDAL_250epochs(nnUNetTrainerCDAL):
    schedule = (250, 250, 50)
