"""SPAD and cDAL: the networks and perturbations on real image patches (fast), then the nnU-Net workflow (slow).

Unit tests crop real Kvasir-SEG frames (RGB, polyp masks) and MSD Hippocampus MRI (slices and a small 3D block,
labels 1 and 2). The slow tests train the smoke variants through ``nnUNetv2_train`` in child processes on a
64-pixel Kvasir-SEG subset and on Hippocampus slices (nnU-Net's ``2d`` configuration of the 3D volumes), then
predict with ``nnUNetv2_predict``.
"""
import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from diffusers import DDPMScheduler
from PIL import Image
from scipy import ndimage
from torch import nn

from law_fixtures import law_folders  # noqa: F401  (module-scoped nnU-Net folders, a pytest fixture)
from nnunet_helpers import (copy_kvasir_subset, label_values, nnunet_env, run, tiny_2d_plans, train_losses,
                            validation_summary, write_msd_subset)
from nnunet_laworder.networks.cdal import (CDALDiscriminator, CDALNetwork, attention_weights, r1_penalty,
                                           vp_sde_betas, weighted_mse)
from nnunet_laworder.networks.diffusion_segmentation import mask_state, probabilities_to_logits
from nnunet_laworder.networks.spad import (SPADNetwork, SPADPerturbation, anchor_patches, boundary_band,
                                           progress_weight)

STRIDES_2D = [[1, 1], [2, 2], [2, 2], [2, 2]]
STRIDES_3D = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # anisotropic first pool, as nnU-Net plans thick slices


# ---- real patches ------------------------------------------------------------------------------------------------
def zscore(x: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + 1e-6)


def kvasir_patches(kvasir_dir, n: int = 2, size: int = 48):
    """(images (n, 3, s, s) z-scored, masks (n, s, s) 0/1) from the first frames, downscaled to ``size``."""
    images, masks = [], []
    for path in sorted((kvasir_dir / "images").glob("*.jpg"))[:n]:
        image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        mask = Image.open(kvasir_dir / "masks" / path.name).convert("L").resize((size, size), Image.NEAREST)
        images.append(zscore(np.asarray(image, np.float32).transpose(2, 0, 1)))
        masks.append((np.asarray(mask) > 127).astype(np.int64))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def hippocampus_volume(hippocampus_dir, case: str = "hippocampus_001"):
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_dir / "imagesTr" / f"{case}.nii.gz")))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_dir / "labelsTr" / f"{case}.nii.gz")))
    return image.astype(np.float32), label.astype(np.int64)


def hippocampus_slice(hippocampus_dir, size=(32, 32)):
    """The axial slice with the most hippocampus, cropped around it: (image (1, 1, h, w), labels (1, h, w))."""
    image, label = hippocampus_volume(hippocampus_dir)
    z = int((label > 0).sum(axis=(1, 2)).argmax())
    cy, cx = (int(c.mean()) for c in np.nonzero(label[z]))
    y0 = min(max(cy - size[0] // 2, 0), label.shape[1] - size[0])
    x0 = min(max(cx - size[1] // 2, 0), label.shape[2] - size[1])
    crop = (z, slice(y0, y0 + size[0]), slice(x0, x0 + size[1]))
    return torch.from_numpy(zscore(image[crop][None]))[None], torch.from_numpy(label[crop])[None]


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


def small(cls, input_channels, num_classes, conv_op=nn.Conv2d, strides=STRIDES_2D, **kwargs):
    torch.manual_seed(0)
    return cls(input_channels, num_classes, conv_op, strides, **kwargs).eval()


NETWORKS = [(SPADNetwork, {"sampling_steps": 3, "num_samples": 3}),
            (CDALNetwork, {"num_timesteps": 2, "num_samples": 3})]


# ---- the eval-mode network nnU-Net sees ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kwargs", NETWORKS)
def test_eval_forward_is_seeded_and_averages_k_samples(kvasir_dir, cls, kwargs):
    images, _ = kvasir_patches(kvasir_dir)
    net = small(cls, 3, 2, **kwargs)
    with torch.no_grad():
        logits = net(images)
        assert logits.shape == (2, 2, 48, 48)
        assert torch.equal(logits, net(images))  # the sampler is seeded per call: predictions are reproducible
        samples = net.sample_probabilities(images, generator=net.generator_for(images.device))
        assert samples.shape == (3, 2, 2, 48, 48)
        assert not torch.allclose(samples[0], samples[1])  # the K samples are different draws
        torch.testing.assert_close(logits, probabilities_to_logits(samples.mean(0), regions=False))
        torch.testing.assert_close(torch.softmax(logits, 1), samples.mean(0), atol=2e-4, rtol=0)
        net.sample_seed = 1
        assert not torch.allclose(logits, net(images))


@pytest.mark.parametrize("cls,kwargs", NETWORKS)
def test_region_mode_travels_with_the_weights(kvasir_dir, cls, kwargs):
    images, _ = kvasir_patches(kvasir_dir, n=1)
    net = small(cls, 3, 2, **kwargs)
    net.regions.fill_(True)
    rebuilt = small(cls, 3, 2, **kwargs)
    rebuilt.load_state_dict(net.state_dict())  # what nnUNetv2_predict does with checkpoint weights
    assert rebuilt.region_mode
    with torch.no_grad():
        samples = rebuilt.sample_probabilities(images, generator=rebuilt.generator_for(images.device))
        # sigmoid per region: channels need not sum to one, and sigmoid(logits) gives back the mean probability
        torch.testing.assert_close(torch.sigmoid(rebuilt(images)), samples.mean(0).clamp(1e-4, 1 - 1e-4))


@pytest.mark.parametrize("cls,kwargs", NETWORKS)
def test_hippocampus_slices_and_3d_blocks(hippocampus_dir, cls, kwargs):
    image, label = hippocampus_slice(hippocampus_dir)
    assert set(label.unique().tolist()) == {0, 1, 2}
    with torch.no_grad():
        assert small(cls, 1, 3, **kwargs)(image).shape == (1, 3, 32, 32)
        volume, _ = hippocampus_volume(hippocampus_dir)
        block = torch.from_numpy(zscore(volume[None, 8:24, 8:40, 4:28]))[None]
        assert small(cls, 1, 3, nn.Conv3d, STRIDES_3D, **kwargs)(block).shape == (1, 3, 16, 32, 24)


def test_plan_strides_must_give_a_u_net():
    with pytest.raises(ValueError, match="at least two plan stages"):
        SPADNetwork(3, 2, nn.Conv2d, [[1, 1]])


# ---- SPAD ------------------------------------------------------------------------------------------------------------
def spad_inputs(kvasir_dir, seed=0):
    images, masks = kvasir_patches(kvasir_dir, size=64)
    onehot = one_hot(masks, 2)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(onehot.shape, generator=g)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="sample")
    timesteps = torch.tensor([100, 400])
    return onehot, noise, scheduler, timesteps


def test_spad_perturbation_fades_with_progress_to_plain_diffusion(kvasir_dir):
    onehot, noise, scheduler, timesteps = spad_inputs(kvasir_dir)
    plain = scheduler.add_noise(mask_state(onehot), noise, timesteps)
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    for shape in ("cosine", "linear", "exponential"):
        perturb = SPADPerturbation(schedule=shape)
        strength = [(perturb(onehot, noise, alpha_bar, p, generator=torch.Generator().manual_seed(1))["noisy"] - plain)
                    .abs().mean().item() for p in (0.0, 0.5, 1.0)]
        assert strength[0] > strength[1] > strength[2], (shape, strength)
        assert strength[2] < 1e-6  # at the end of training SPAD trains on exactly what sampling sees
    constant = SPADPerturbation(schedule="constant")
    assert progress_weight(1.0, "constant") == 1.0 and constant.strengths(1.0) == constant.strengths(0.0)
    with pytest.raises(ValueError, match="schedule shape"):
        SPADPerturbation(schedule="step")
    with pytest.raises(ValueError, match="semantic_strength"):
        SPADPerturbation(semantic_strength=1.5)


def test_spad_anchors_are_preserved_and_the_rest_of_the_target_is_fogged(kvasir_dir):
    onehot, noise, scheduler, timesteps = spad_inputs(kvasir_dir)
    x0 = mask_state(onehot)
    plain = scheduler.add_noise(x0, noise, timesteps)
    perturb = SPADPerturbation(anchor_fraction=0.5, semantic_strength=0.8)
    out = perturb(onehot, noise, scheduler.alphas_cumprod[timesteps], 0.0, generator=torch.Generator().manual_seed(3))
    anchors, region, band = out["anchors"].bool(), out["region"].bool(), out["band"].bool()
    assert anchors.any() and not (anchors & ~region).any()  # anchors lie in the target
    anchors2 = anchors.expand_as(x0)
    assert torch.equal(out["noisy"][anchors2], x0[anchors2])  # the clean label is shown at the anchors
    interior = (region & ~anchors & ~band).expand_as(x0)
    assert interior.any()
    torch.testing.assert_close(out["signal"].expand_as(x0)[interior], torch.full_like(x0[interior], 0.2))
    outside = (~region & ~band).expand_as(x0)  # background away from the boundary: plain diffusion
    torch.testing.assert_close(out["noisy"][outside], plain[outside])
    # anchor cells come whole (anchor_size x anchor_size) wherever the target covers the cell
    cells = anchor_patches(torch.ones(1, 1, 16, 16), 0.5, 8, torch.Generator().manual_seed(0))
    assert set(cells.view(2, 8, 2, 8).sum(dim=(1, 3)).flatten().tolist()) <= {0.0, 64.0}


@pytest.mark.parametrize("radius", [1, 2])
def test_spad_boundary_band_is_dilation_minus_erosion(kvasir_dir, hippocampus_dir, radius):
    structure = np.ones((2 * radius + 1,) * 2, bool)

    def scipy_band(mask: np.ndarray) -> np.ndarray:
        # border_value=1: the patch border is no object boundary (a target running out of the patch is cut, not ended)
        return ndimage.binary_dilation(mask, structure) & ~ndimage.binary_erosion(mask, structure, border_value=1)

    _, masks = kvasir_patches(kvasir_dir, size=64)
    band = boundary_band(one_hot(masks, 2), radius)[:, 0].numpy().astype(bool)
    for i, mask in enumerate(masks.numpy().astype(bool)):
        assert band[i].any() and np.array_equal(band[i], scipy_band(mask))
    _, labels = hippocampus_slice(hippocampus_dir)  # three classes: the union of every class's band
    band = boundary_band(one_hot(labels, 3), radius)[0, 0].numpy().astype(bool)
    expected = np.logical_or.reduce([scipy_band(labels[0].numpy() == c) for c in range(3)])
    assert np.array_equal(band, expected)


def test_spad_band_is_blurred_and_attenuated(kvasir_dir):
    onehot, noise, scheduler, timesteps = spad_inputs(kvasir_dir)
    perturb = SPADPerturbation(anchor_fraction=0.0, boundary_strength=0.6)
    out = perturb(onehot, noise, scheduler.alphas_cumprod[timesteps], 0.0)
    band = out["band"].bool().expand_as(onehot)
    assert (out["signal"].expand_as(onehot)[band] <= 0.4 + 1e-6).all()
    x0 = mask_state(onehot)
    assert torch.equal(out["label"][~band], x0[~band])  # the label is blurred on the band only
    assert (out["label"][band].abs() < 1 - 1e-3).float().mean() > 0.5  # edges there become soft


# ---- cDAL ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [2, 3, 4])
def test_cdal_schedule_ends_in_noise(steps):
    alpha_bar = np.cumprod(1 - vp_sde_betas(steps))
    assert alpha_bar[-1] < 1e-3 and np.all(np.diff(alpha_bar) < 0)


def test_cdal_posterior_is_diffusers_ddpm_step_batched(kvasir_dir):
    _, masks = kvasir_patches(kvasir_dir, size=32)
    net = small(CDALNetwork, 3, 2, num_timesteps=4)
    x0 = mask_state(one_hot(masks, 2))
    x_next = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    net.sampler.set_timesteps(4)
    for k in range(4):
        reference = net.sampler.step(x0, k, x_next, generator=torch.Generator().manual_seed(k)).prev_sample
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(k))
        ours = net.posterior_sample(x0, x_next, torch.full((2,), k), noise)
        torch.testing.assert_close(ours, reference)
    # the real pair's x_k is q(x_k | x0) (diffusers add_noise one level down), x0 itself at k = 0
    noise, noise_next = torch.randn_like(x0), torch.randn_like(x0)
    x_k, _ = net.forward_pair(x0, torch.tensor([0, 2]), noise, noise_next)
    torch.testing.assert_close(x_k[0], x0[0])
    torch.testing.assert_close(x_k[1:], net.sampler.add_noise(x0[1:], noise[1:], torch.tensor([1])))


def test_cdal_discriminator_attention_and_r1(kvasir_dir):
    images, masks = kvasir_patches(kvasir_dir, size=48)
    torch.manual_seed(0)
    net = small(CDALNetwork, 3, 2)
    disc = CDALDiscriminator(2, 3, nn.Conv2d, STRIDES_2D)
    x0 = mask_state(one_hot(masks, 2))
    timesteps = torch.tensor([0, 3])
    x_k, x_next = net.forward_pair(x0, timesteps, torch.randn_like(x0), torch.randn_like(x0))
    x_k.requires_grad_(True)
    logits, feats = disc(x_k, x_next, images, timesteps)
    assert logits.shape == (2,)
    attention = disc.attention(feats, images.shape[2:])
    assert attention.shape == (2, 1, 48, 48)  # the image's spatial size
    assert attention.min() >= 0 and attention.max() <= 1 and attention.flatten(1).std(1).min() > 0
    r1 = r1_penalty(logits, x_k)
    assert r1.item() > 0 and r1.requires_grad  # differentiable: the discriminator step minimises it
    r1.backward()
    assert disc.stem.weight.grad.abs().sum() > 0



def test_cdal_attention_weights_by_hand():
    disc = CDALDiscriminator(2, 3, nn.Conv2d, STRIDES_2D, attention_stage=1)
    stage = torch.tensor([[[[0., 4.], [8., 12.]], [[0., 0.], [0., 4.]]]])  # channel mean [[0, 2], [4, 8]]
    attention = disc.attention([torch.zeros(1, 2, 4, 4), stage], (4, 4))
    # bilinear 2 -> 4 (half-pixel centres): each axis samples the 2 values at weights (1, 0), (.75, .25), (.25, .75),
    # (0, 1); min-max normalisation divides by max - min = 8
    upsampled = torch.tensor([[0., 0.5, 1.5, 2.], [1., 1.625, 2.875, 3.5], [3., 3.875, 5.625, 6.5], [4., 5., 7., 8.]])
    torch.testing.assert_close(attention, (upsampled / 8)[None, None])
    torch.testing.assert_close(attention_weights(attention, 0.5), (0.5 + upsampled / 16)[None, None])
    assert attention_weights(attention, 0.0).eq(1).all()  # strength 0: the plain x0 MSE
    flat = disc.attention([stage, torch.full((1, 2, 2, 2), 3.)], (4, 4))  # no contrast: no voxel is salient
    assert flat.eq(0).all() and attention_weights(flat, 0.5).eq(0.5).all()


def test_cdal_weighted_mse_by_hand():
    x0 = torch.tensor([[[[1., -1.]], [[-1., 1.]]]])  # (1, 2 channels, 1, 2 voxels)
    x0_hat = torch.tensor([[[[0., -1.]], [[-1., -1.]]]])  # squared errors summed over channels: 1 and 4
    weights = torch.tensor([[[[0.5, 1.]]]])
    torch.testing.assert_close(weighted_mse(x0_hat, x0, weights, torch.ones(1, 1, 1, 2)),
                               torch.tensor((0.5 * 1 + 1 * 4) / (1.5 * 2)))
    torch.testing.assert_close(weighted_mse(x0_hat, x0, weights, torch.tensor([[[[1., 0.]]]])),  # ignore label
                               torch.tensor(0.5 * 1 / (0.5 * 2)))
    torch.testing.assert_close(weighted_mse(x0_hat, x0, torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2)),
                               nn.functional.mse_loss(x0_hat, x0))


def test_cdal_training_input_is_the_samplers_q():
    """The generator's training input x_{k+1} is q(x_{k+1} | x0) with the sampler's own coefficients, and the
    sampler's posterior step from there, given the true x0, lands on q(x_k | x0): training and sampling walk one
    chain."""
    net = small(CDALNetwork, 3, 2, num_timesteps=2)
    # VP SDE at T = 2 by hand: alpha_bar(s) = exp(-0.1 s - 9.95 s^2) at s = 1/2, 1
    alpha_bar = torch.tensor([math.exp(-0.05 - 9.95 / 4), math.exp(-0.1 - 9.95)])
    torch.testing.assert_close(net.sampler.alphas_cumprod, alpha_bar)
    k = torch.tensor([0, 1])
    x0 = torch.tensor([1., -1.]).view(1, 2, 1, 1).expand(2, 2, 3, 3)
    zero, one = torch.zeros_like(x0), torch.ones_like(x0)

    def per_sample(x):
        return x[:, 0, 0, 0]

    signal = per_sample(net.forward_pair(x0, k, zero, zero)[1])  # x0 channel 0 is 1
    torch.testing.assert_close(signal, alpha_bar.sqrt())
    torch.testing.assert_close(net.forward_pair(x0, k, zero, zero)[1], net.sampler.add_noise(x0, zero, k))
    noise_var = (per_sample(net.forward_pair(zero, k, one, zero)[1]) ** 2
                 + per_sample(net.forward_pair(zero, k, zero, one)[1]) ** 2)  # independent eps and eps'
    torch.testing.assert_close(noise_var, 1 - alpha_bar)
    # x_k of the real pair: x0 at k = 0, otherwise q(x_k | x0) with alpha_bar one level down
    torch.testing.assert_close(per_sample(net.forward_pair(one, k, zero, zero)[0]),
                               torch.tensor([1., alpha_bar[0].sqrt()]))

    coef_x0 = per_sample(net.posterior_sample(one, zero, k, zero))
    coef_xt = per_sample(net.posterior_sample(zero, one, k, zero))
    std = per_sample(net.posterior_sample(zero, zero, k, one))
    previous = torch.tensor([1., alpha_bar[0]])
    torch.testing.assert_close(coef_x0 + coef_xt * alpha_bar.sqrt(), previous.sqrt())
    torch.testing.assert_close(coef_xt ** 2 * (1 - alpha_bar) + std ** 2, 1 - previous)


def cdal_trainer(tmp_path, monkeypatch):
    """A cDAL trainer on a hand-written 16 x 16 2d plan, one input channel and one foreground label, with its
    networks and optimisers built as ``initialize`` builds them (without a preprocessed dataset)."""
    from nnunet_laworder.training.diffusion_seg_trainers import nnUNetTrainerCDAL_smoke

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans, dataset_json = tiny_2d_plans({"network_class_name": "unused", "_kw_requires_import": [],
                                         "arch_kwargs": {"strides": [[1, 1], [2, 2], [2, 2]]}})
    torch.manual_seed(0)
    trainer = nnUNetTrainerCDAL_smoke(plans, "2d", 0, dataset_json, torch.device("cpu"))
    trainer.num_input_channels = 1
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 2)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


def test_cdal_step_trains_the_generator_on_the_plainly_noised_label(hippocampus_dir, tmp_path, monkeypatch):
    trainer = cdal_trainer(tmp_path, monkeypatch)
    net, disc = trainer.segmenter, trainer.discriminator
    image, labels = hippocampus_slice(hippocampus_dir, size=(16, 16))
    image, x0 = image.repeat(2, 1, 1, 1), mask_state(one_hot((labels > 0).long(), 2)).repeat(2, 1, 1, 1)
    seen = {"generator": [], "discriminator": []}
    net.register_forward_hook(lambda module, args, out: seen["generator"].append((args, out.detach())))
    disc.register_forward_hook(lambda module, args, out: seen["discriminator"].append(
        [a.detach() for a in args[:2]] + [out[1][disc.attention_stage].detach()]))
    k, zero, latent = torch.tensor([0, 1]), torch.zeros_like(x0), torch.randn(2, net.latent_dim)
    valid = torch.ones_like(x0[:, :1])
    losses = trainer.gan_step(image, x0, valid, k, zero, zero, zero, latent)

    (_, noisy, timesteps, _), logits = seen["generator"][0]
    alpha_bar = net.sampler.alphas_cumprod
    # no noise drawn: the generator sees sqrt(alpha_bar_k) x0, the label unweighted, as sampling's q(x_{k+1} | x0)
    torch.testing.assert_close(noisy, alpha_bar[k].sqrt().view(2, 1, 1, 1) * x0)
    assert torch.equal(timesteps, k)
    x0_hat = mask_state(torch.softmax(logits, 1))
    (real_k, real_next, feats), (fake_k, fake_next, _), _ = seen["discriminator"]
    torch.testing.assert_close(real_k, torch.stack([x0[0], alpha_bar[0].sqrt() * x0[1]]))
    assert torch.equal(real_next, noisy) and torch.equal(fake_next, noisy)
    torch.testing.assert_close(fake_k[0], x0_hat[0])  # at k = 0 the posterior step returns x0_hat itself
    # the logged loss is the x0 MSE weighted by 1 - s + s A from the discriminator before its update
    attention = disc.attention([feats] * (disc.attention_stage + 1), (16, 16))
    s = trainer.attention_strength
    weights = 1 - s + s * attention
    expected = ((x0_hat - x0) ** 2 * weights).sum() / (weights.sum() * 2)
    torch.testing.assert_close(losses["loss"], expected)
    assert {"loss", "loss_d", "loss_adv", "r1"} == set(losses) and all(v.isfinite() for v in losses.values())


def test_sampling_runs_in_fp32_under_autocast(kvasir_dir):
    """nnU-Net opens autocast around every network call in validation and prediction (on CUDA; on CPU the same
    mechanism with bfloat16 shows it here): the sampler turns it off, so the logits are the fp32 ones."""
    images, _ = kvasir_patches(kvasir_dir, n=1, size=32)
    net = small(CDALNetwork, 3, 2, num_timesteps=2, num_samples=2)
    with torch.no_grad():
        reference = net(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.is_autocast_enabled("cpu")
            logits = net(images)
    assert logits.dtype == torch.float32 and torch.equal(logits, reference)


# ---- the nnU-Net workflow (child processes, CPU) ---------------------------------------------------------------------
KVASIR_ID, HIPPO_ID = 511, 512
KVASIR_TRAIN, KVASIR_TEST, KVASIR_MAX_SIZE = 10, 2, 64
HIPPO_CASES = 5


@pytest.fixture(scope="module")
def kvasir_2d(law_folders, tmp_path_factory):
    """12 Kvasir-SEG pairs at 64 px (2 held out in imagesTs), planned with nnU-Net's default 2d configuration."""
    from conftest import require_data

    src = require_data("kvasir-seg")
    official = tmp_path_factory.mktemp("kvasir_official")
    test_list = copy_kvasir_subset(src, official, KVASIR_TRAIN + KVASIR_TEST, KVASIR_TEST)
    env = nnunet_env(law_folders)
    run(["nnunet-laworder", "convert", "kvasir-seg", str(official), "-d", str(KVASIR_ID), "--max-size",
         str(KVASIR_MAX_SIZE), "--test-list", str(test_list)], env)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(KVASIR_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    return env, next(law_folders["nnUNet_raw"].glob(f"Dataset{KVASIR_ID}_*"))


@pytest.fixture(scope="module")
def hippocampus_2d(law_folders):
    """5 MSD Hippocampus volumes (labels 1, 2) planned with the 2d configuration: nnU-Net trains on their slices."""
    from conftest import require_data

    src = require_data("msd-hippocampus")
    cases = sorted(p.name[:-len(".nii.gz")] for p in (src / "imagesTr").glob("*.nii.gz"))[:HIPPO_CASES]
    raw = write_msd_subset(src, law_folders["nnUNet_raw"], HIPPO_ID, "Hippocampus", cases,
                           {"background": 0, "Anterior": 1, "Posterior": 2}, {"0": "MRI"})
    env = nnunet_env(law_folders)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(HIPPO_ID), "-c", "2d", "-np", "1", "-npfp", "1"], env)
    return env, raw


@pytest.fixture(scope="module")
def cdal_hippocampus(hippocampus_2d, law_folders):
    """cDAL (smoke) trained once on the Hippocampus slices; returns the model folder."""
    env, raw = hippocampus_2d
    run(["nnUNetv2_train", str(HIPPO_ID), "2d", "0", "-tr", "nnUNetTrainerCDAL_smoke", "-device", "cpu"], env)
    return law_folders["nnUNet_results"] / raw.name / "nnUNetTrainerCDAL_smoke__nnUNetPlans__2d"


@pytest.mark.slow
def test_spad_trains_on_kvasir_and_predicts(kvasir_2d, law_folders, tmp_path):
    env, raw = kvasir_2d
    trainer = "nnUNetTrainerSPAD_smoke"
    run(["nnUNetv2_train", str(KVASIR_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], env)
    losses = train_losses(law_folders["nnUNet_results"], raw.name, trainer, "2d")
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    summary = validation_summary(law_folders["nnUNet_results"], raw.name, trainer, "2d")
    assert 0 <= summary["foreground_mean"]["Dice"] <= 1

    out = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(KVASIR_ID), "-c", "2d",
         "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    images = sorted((raw / "imagesTs").glob("*.png"))
    assert len(images) == KVASIR_TEST
    for image in images:
        prediction = np.array(Image.open(out / image.name.replace("_0000", "")))
        assert prediction.shape == Image.open(image).size[::-1]
        assert set(np.unique(prediction).tolist()) <= {0, 1}


@pytest.mark.slow
def test_cdal_trains_on_hippocampus_slices_and_predicts_volumes(hippocampus_2d, cdal_hippocampus, law_folders,
                                                                tmp_path):
    env, raw = hippocampus_2d
    trainer = "nnUNetTrainerCDAL_smoke"
    losses = train_losses(law_folders["nnUNet_results"], raw.name, trainer, "2d")
    assert len(losses) == 3 and losses[-1] < losses[0], losses  # the generator's x0 MSE
    assert set(validation_summary(law_folders["nnUNet_results"], raw.name, trainer, "2d")["mean"]) == {"1", "2"}

    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sorted((raw / "imagesTr").glob("*.nii.gz"))[0]
    shutil.copy(image, inputs / image.name)
    out = tmp_path / "out"
    run(["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(HIPPO_ID), "-c", "2d", "-tr", trainer,
         "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    prediction = out / image.name.replace("_0000", "")
    assert sitk.ReadImage(str(prediction)).GetSize() == sitk.ReadImage(str(image)).GetSize()  # slice by slice
    assert label_values(prediction) <= {0, 1, 2}


@pytest.mark.slow
def test_cdal_checkpoints_carry_the_discriminator(cdal_hippocampus):
    from nnunet_laworder.training.diffusion_seg_trainers import nnUNetTrainerCDAL_smoke

    fold = cdal_hippocampus / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert {"discriminator_weights", "discriminator_optimizer_state"} <= set(checkpoint)
    logging = checkpoint["logging"]
    assert len(logging["train_r1"]) == 3 and min(logging["train_r1"]) > 0 and len(logging["train_loss_d"]) == 3

    # what `nnUNetv2_train ... --c` does: a fresh trainer loads the checkpoint, the discriminator and its optimiser too
    plans = json.loads((cdal_hippocampus / "plans.json").read_text())
    plans["continue_training"] = True
    dataset_json = json.loads((cdal_hippocampus / "dataset.json").read_text())
    trainer = nnUNetTrainerCDAL_smoke(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    trainer.load_checkpoint(str(fold / "checkpoint_final.pth"))
    for name, value in checkpoint["discriminator_weights"].items():
        assert torch.equal(trainer.discriminator.state_dict()[name], value), name
    state = trainer.optimizer_d.state_dict()["state"]
    assert state and all(torch.equal(state[i]["exp_avg"], s["exp_avg"])
                         for i, s in checkpoint["discriminator_optimizer_state"]["state"].items())
    assert trainer.current_epoch == 3 and not trainer.segmenter.region_mode

    # and a checkpoint it writes is complete again (written whole, never without the discriminator)
    trainer.save_checkpoint(str(fold / "checkpoint_roundtrip.pth"))
    again = torch.load(fold / "checkpoint_roundtrip.pth", map_location="cpu", weights_only=False)
    assert not (fold / "checkpoint_roundtrip.pth.partial").exists()
    for key in ("discriminator_weights", "network_weights"):
        assert all(torch.equal(again[key][name], value) for name, value in checkpoint[key].items())
