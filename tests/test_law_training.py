"""``nnunet-laworder law train`` and its data: LAW weights, a short real training, resume, folds, 3D layout.

Real data only (Kvasir-SEG and MSD Hippocampus subsets planned by nnU-Net, see law_fixtures.py), on CPU, at small
sizes (64x64 images, features 16 32 64, batch 4).
"""
import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from law_fixtures import law_folders, law_hippocampus, law_kvasir, one_torch_thread  # noqa: F401  (pytest fixtures)
from nnunet_laworder.errors import InputError
from nnunet_laworder.law.cli import add_train_arguments, train_entrypoint
from nnunet_laworder.law.data import BatchSampler, load_training_data
from nnunet_laworder.law.splits import fold_split
from nnunet_laworder.law.weighting import WeightingConfig, law_loss, loss_weights, normalise_and_clamp, ratio_prior

SMALL = ["-device", "cpu", "--image-size", "64", "64", "--features", "16", "32", "64", "--batch-size", "4",
         "--no-progress"]
TINY = ["-device", "cpu", "--image-size", "32", "32", "--features", "8", "16", "--batch-size", "2",
        "--no-progress"]


def law(*argv) -> int:
    """``nnunet-laworder law train ARGV`` in-process (InputError propagates to the test)."""
    parser = argparse.ArgumentParser(prog="nnunet-laworder law train")
    add_train_arguments(parser)
    return train_entrypoint(parser.parse_args([str(a) for a in argv]))


def run_dir(dataset, weighting="law", configuration="2d", fold=None):
    folder = dataset.results / f"LAW__{weighting}__{configuration}"
    return folder / f"fold_{fold}" if fold is not None else folder


def checkpoint(folder, name="checkpoint_final.pth"):
    return torch.load(folder / name, map_location="cpu", weights_only=True)  # plain data and tensors only


# ---------------------------------------------------------------------------------------------------------------
# weights (weighting.py) on real Kvasir masks


@pytest.fixture(scope="module")
def kvasir_masks(law_kvasir):
    data = load_training_data(law_kvasir.dataset_id, image_size=(64, 64))
    fg = (data.segmentations > 0).float()[:, None]
    assert 0 < fg.mean() < 0.5 and (fg.flatten(1).sum(1) > 0).all()
    return fg


@pytest.mark.parametrize("mode", ["law", "prior", "uniform"])
def test_weights_at_step_0_are_the_prior(kvasir_masks, mode):
    """Only beta warms up (SPEC section 4): at step 0 ``law`` weighs as ``prior``, whatever delta is."""
    config = WeightingConfig(mode, warmup_steps=100)
    delta = torch.randn_like(kvasir_masks) * 3
    w = loss_weights(config, kvasir_masks, delta, step=0)
    if mode == "uniform":
        assert torch.equal(w, torch.ones_like(w))
    else:
        prior = normalise_and_clamp(ratio_prior(kvasir_masks, config.r_max), config.w_min, config.w_max)
        assert torch.allclose(w, prior, atol=1e-5) and not torch.allclose(w, torch.ones_like(w))
        # half-way through the warm-up, law is prior x exp(beta delta / 2) (up to normalisation and clamps)
        if mode == "law":
            halfway = loss_weights(config, kvasir_masks, delta, step=50)
            expected = normalise_and_clamp(ratio_prior(kvasir_masks, config.r_max) * torch.exp(delta / 2),
                                           config.w_min, config.w_max)
            assert torch.allclose(halfway, expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["law", "prior"])
def test_weights_have_mean_1_inside_the_clamps(kvasir_masks, mode):
    config = WeightingConfig(mode, w_min=0.1, w_max=10.0, warmup_steps=100)
    delta = torch.randn_like(kvasir_masks) * 3  # wild delta maps: the clamps must hold
    for step in (30, 100, 1000):
        w = loss_weights(config, kvasir_masks, delta, step)
        assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.ones(len(w)), atol=1e-4)
        assert w.min() >= 0.1 - 1e-6 and w.max() <= 10.0 + 1e-5
    assert w.max() > 9.9  # the clamp is reached: it is a real constraint here
    # the normalisation on its own: mean 1 and inside the clamps for any positive map
    raw = torch.exp(torch.randn(5, 1, 64, 64) * 4)
    projected = normalise_and_clamp(raw, 0.1, 10.0)
    assert torch.allclose(projected.mean(dim=(1, 2, 3)), torch.ones(5), atol=1e-4)
    assert projected.min() >= 0.1 - 1e-6 and projected.max() <= 10 + 1e-5


def test_uniform_weights_are_exactly_1(kvasir_masks):
    w = loss_weights(WeightingConfig("uniform", warmup_steps=0), kvasir_masks, torch.randn_like(kvasir_masks), 500)
    assert torch.equal(w, torch.ones_like(w))


def test_prior_weighs_lesion_above_background(kvasir_masks):
    config = WeightingConfig("prior", warmup_steps=0)
    w = loss_weights(config, kvasir_masks, torch.zeros_like(kvasir_masks), step=10)
    for wi, fg in zip(w, kvasir_masks.bool()):
        lesion, background = wi[fg], wi[~fg]
        assert lesion.mean() > background.mean()
        assert torch.allclose(lesion, lesion[0].expand_as(lesion))  # the prior is flat on each region
        # lesion and background carry comparable total weight (exactly equal below the r_max cap, unclamped)
        r = (~fg).sum() / fg.sum()
        if r < config.r_max and lesion[0] < config.w_max:
            assert torch.isclose(lesion.sum(), background.sum(), rtol=1e-3)
    # the prior map itself: 1 on background, r on the lesion
    p = ratio_prior(kvasir_masks, 20.0)
    assert torch.all(p[kvasir_masks == 0] == 1) and torch.all(p[kvasir_masks == 1] > 1)


def test_empty_mask_gives_uniform_weights(kvasir_masks):
    masks = torch.cat([kvasir_masks[:2], torch.zeros_like(kvasir_masks[:1])])
    for mode in ("law", "prior"):
        w = loss_weights(WeightingConfig(mode, warmup_steps=0), masks, torch.randn_like(masks), step=50)
        assert torch.equal(w[2], torch.ones_like(w[2]))
        assert not torch.allclose(w[0], torch.ones_like(w[0]))


def test_law_loss_parts(kvasir_masks):
    fg = kvasir_masks[:4]
    noise, predicted = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    delta, dice = torch.zeros_like(fg, requires_grad=True), torch.zeros_like(fg, requires_grad=True)
    loss, parts = law_loss(WeightingConfig("law", warmup_steps=0), noise, predicted, fg, delta, dice, step=5)
    assert set(parts) == {"denoising", "weights", "delta", "dice"}
    loss.backward()
    assert delta.grad.abs().sum() > 0 and dice.grad.abs().sum() > 0
    _, parts = law_loss(WeightingConfig("uniform"), noise, predicted, fg, None, None, step=5)
    assert set(parts) == {"denoising", "weights"}  # the ablations run without the head


def test_learned_delta_moves_weights_to_lesion_boundaries(kvasir_masks):
    """The delta head, trained on its own loss term only, learns where the denoiser errs: here on a boundary band
    of real lesion masks, which the prior cannot tell from the lesion interior."""
    from scipy import ndimage

    from nnunet_laworder.law.weighting import LAWHead

    fg = kvasir_masks[kvasir_masks.mean(dim=(1, 2, 3)).argsort(descending=True)[:4]]  # lesions with an interior
    m = fg[:, 0].numpy().astype(bool)
    dilated = np.stack([ndimage.binary_dilation(x, iterations=2) for x in m])
    eroded = np.stack([ndimage.binary_erosion(x, iterations=2) for x in m])
    band, interior = torch.from_numpy(dilated & ~eroded)[:, None], torch.from_numpy(eroded)[:, None]
    inner_band, outer_band, far = band & fg.bool(), band & ~fg.bool(), torch.from_numpy(~dilated)[:, None]
    assert interior.sum() > 500 and inner_band.sum() > 500

    torch.manual_seed(0)
    config = WeightingConfig("law", warmup_steps=0)
    head = LAWHead(torch.nn.Conv2d, feature_channels=4, mask_channels=1, time_dim=8)
    features, t_emb = torch.randn(len(fg), 4, 64, 64), torch.randn(len(fg), 8)  # fixed, uninformative
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    error_scale = torch.where(band, 2.0, 0.5)  # the "denoiser" errs 16x more (squared) on the band
    for step in range(200):
        noise = torch.randn(len(fg), 3, 64, 64)
        predicted = noise + error_scale * torch.randn_like(noise)
        delta, dice = head(features, fg, t_emb)
        # neither predicted nor the (detached) weights carry gradients: the delta branch learns from L_delta alone
        loss, _ = law_loss(config, noise, predicted, fg, delta, dice, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        delta, _ = head(features, fg, t_emb)
    w = loss_weights(config, fg, delta, step=1000)
    prior = loss_weights(WeightingConfig("prior", warmup_steps=0), fg, delta, step=1000)
    for p, inner, inside, outer, outside in zip(prior, inner_band, interior, outer_band, far):
        # the prior: one value on the whole lesion, one on the whole background
        assert torch.allclose(p[inner], p[inside][0]) and torch.allclose(p[outer], p[outside][0])
    ratio = (w[inner_band].mean() / w[interior].mean()).item()
    assert ratio > 1.5, ratio  # law: the lesion's boundary above its interior
    assert w[outer_band].mean() > 1.5 * w[far].mean()  # and the background next to the lesion above the rest


# ---------------------------------------------------------------------------------------------------------------
# data


def test_fold_uses_only_its_training_cases(law_kvasir):
    splits_file = law_kvasir.preprocessed / "splits_final.json"
    splits_file.unlink(missing_ok=True)
    data = load_training_data(law_kvasir.dataset_id, fold=0, image_size=(64, 64))
    # created as nnUNetTrainer.do_split does, so that nnU-Net later trains on the same folds
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    expected = generate_crossval_split(law_kvasir.training_cases(), seed=12345, n_splits=5)
    splits = json.loads(splits_file.read_text())
    assert splits == [{k: [str(c) for c in v] for k, v in s.items()} for s in expected]
    assert data.cases == sorted(splits[0]["train"]) and data.validation_cases == sorted(splits[0]["val"])
    assert set(data.items) == set(data.cases) and not set(data.items) & set(splits[0]["val"])
    assert len(data.validation_cases) >= 3 and len(data) == 16 - len(data.validation_cases)
    # an existing split file is used as it is
    splits[0] = {"train": splits[0]["train"][:5], "val": splits[0]["val"]}
    splits_file.write_text(json.dumps(splits))
    assert fold_split(law_kvasir.preprocessed, law_kvasir.training_cases(), 0)[0] == splits[0]["train"]
    splits_file.unlink()

    # through the command: its folder and checkpoint record the fold's cases, none of its validation cases
    assert law("-d", law_kvasir.dataset_id, "-f", 0, "--iterations", 2, *TINY) == 0
    ckpt = checkpoint(run_dir(law_kvasir, fold=0))
    assert ckpt["data"]["fold"] == 0
    assert ckpt["data"]["cases"] == sorted(expected[0]["train"])
    assert not set(ckpt["data"]["items"]) & set(expected[0]["val"])


def test_layouts_2d_and_3d_and_slices(law_kvasir, law_hippocampus):
    kvasir = load_training_data(law_kvasir.dataset_id, image_size=(64, 64))
    assert kvasir.layout.dim == 2 and kvasir.layout.image_size == [64, 64] and kvasir.layout.labels == [1]
    assert kvasir.images.shape == (16, 3, 64, 64) and kvasir.segmentations.shape == (16, 64, 64)
    assert set(kvasir.segmentations.unique().tolist()) == {0, 1}

    hippo = load_training_data(law_hippocampus.dataset_id, divisor=4)
    assert hippo.layout.dim == 3 and hippo.layout.extra["layout"] == "3d"
    assert all(s % 4 == 0 for s in hippo.layout.image_size) and hippo.images.shape[:2] == (10, 1)
    assert set(hippo.segmentations.unique().tolist()) == {0, 1, 2}
    # the median shape rounded up: most of the foreground survives the pad / crop around it
    assert (hippo.segmentations > 0).sum() > 0.95 * _raw_foreground(law_hippocampus)

    slices = load_training_data(law_hippocampus.dataset_id, layout="slices", image_size=(64, 64),
                                empty_slice_fraction=0.0)
    assert slices.layout.dim == 2 and slices.layout.slice_axis == 0 and slices.images.shape[1:] == (1, 64, 64)
    assert (slices.segmentations.flatten(1).amax(1) > 0).all()  # only slices with foreground
    more = load_training_data(law_hippocampus.dataset_id, layout="slices", image_size=(64, 64),
                              empty_slice_fraction=1.0)
    assert len(more) > len(slices)

    images, onehot, fg = BatchSampler(hippo, 3, seed=1).batch(7)
    assert images.shape == (3, 1, *hippo.layout.image_size) and onehot.shape == (3, 2, *hippo.layout.image_size)
    assert torch.equal(fg, onehot.amax(1, keepdim=True))
    # a pure function of (seed, step); ranks share the global batch
    assert torch.equal(BatchSampler(hippo, 3, seed=1).batch(7)[0], images)
    assert torch.equal(BatchSampler(hippo, 3, seed=1).batch(7, rank=1, world_size=2)[0], images[1::2])


def _raw_foreground(dataset) -> int:
    import SimpleITK as sitk
    return sum(int((sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0).sum())
               for p in (dataset.raw / "labelsTr").glob("*.nii.gz"))


@pytest.fixture
def kvasir_copy(law_kvasir):
    """A copy of the Kvasir dataset under another id, to break files in."""
    name = "Dataset903_Broken"
    raw = law_kvasir.folders["nnUNet_raw"] / name
    pre = law_kvasir.folders["nnUNet_preprocessed"] / name
    shutil.copytree(law_kvasir.raw, raw)
    shutil.copytree(law_kvasir.preprocessed, pre, ignore=shutil.ignore_patterns("nnUNetPlans_*", "gt_*"))
    yield raw
    shutil.rmtree(raw), shutil.rmtree(pre)


def test_unreadable_and_mismatched_cases_are_named(kvasir_copy):
    from PIL import Image

    with pytest.raises(InputError, match="divisible"):
        law("-d", 903, "--iterations", 1, "-device", "cpu", "--image-size", "30", "30", "--no-progress")
    images = sorted((kvasir_copy / "imagesTr").glob("*.png"))
    images[3].write_bytes(b"not a png")
    with pytest.raises(InputError, match=images[3].name):
        load_training_data(903)
    shutil.copy(images[4], images[3])  # readable again, but now the wrong size for its label
    label = kvasir_copy / "labelsTr" / images[3].name.replace("_0000", "")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(label)
    with pytest.raises(InputError, match="shape"):
        load_training_data(903)
    Image.fromarray(np.full(Image.open(images[3]).size[::-1], 3, np.uint8)).save(label)
    with pytest.raises(InputError, match="values"):
        load_training_data(903)
    label.unlink()
    with pytest.raises(InputError, match=label.name):
        load_training_data(903)


def test_bad_options_are_input_errors(law_kvasir):
    with pytest.raises(InputError, match="no configuration"):
        load_training_data(law_kvasir.dataset_id, configuration="3d_fullres")
    with pytest.raises(InputError, match="not found"):
        law("-d", 999, "--iterations", 1, "-device", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            law("-d", law_kvasir.dataset_id, "--iterations", 1)  # -device defaults to cuda, as in nnU-Net


def test_resume_refuses_a_checkpoint_that_carries_code(law_kvasir, tmp_path):
    class CodeCarryingPickle:
        def __reduce__(self):
            return open, (str(tmp_path / "code_ran"), "w")

    folder = run_dir(law_kvasir, "uniform", fold=4)
    folder.mkdir(parents=True)
    torch.save({"generator": CodeCarryingPickle(), "step": 1}, folder / "checkpoint_latest.pth")
    try:
        with pytest.raises(InputError, match="holds objects other than tensors and plain data"):
            law("-d", law_kvasir.dataset_id, "-f", 4, "--weighting", "uniform", "--iterations", 2, "--resume", *TINY)
        assert not (tmp_path / "code_ran").exists()
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------------------------
# a short LAW training on real Kvasir images

LAW_STEPS, WARMUP = 150, 40


@pytest.fixture(scope="module")
def kvasir_law_run(law_kvasir):
    assert law("-d", law_kvasir.dataset_id, "--iterations", LAW_STEPS, "--warmup-steps", WARMUP, "--lr", "1e-3",
               "--snapshots", 4, "--save-every", 100, *SMALL) == 0
    return run_dir(law_kvasir)


def test_training_writes_its_outputs(kvasir_law_run, law_kvasir):
    from nnunet_laworder.law.generator import load_checkpoint

    names = {p.name for p in kvasir_law_run.iterdir()}
    assert {"checkpoint_latest.pth", "checkpoint_final.pth", "training_log.txt", "loss_curves.png",
            "weight_maps.png", "weight_maps.npz"} <= names
    generator, extra = load_checkpoint(kvasir_law_run / "checkpoint_final.pth")
    assert extra["step"] == LAW_STEPS and len(extra["log"]) == LAW_STEPS
    assert generator.layout.dim == 2 and generator.layout.image_size == [64, 64]
    assert generator.weighting.mode == "law" and generator.denoiser.features_per_stage == (16, 32, 64)
    assert generator.layout.extra["dataset"] == law_kvasir.name
    assert {"delta", "dice", "denoising", "loss"} <= set(extra["log"][-1])
    log = (kvasir_law_run / "training_log.txt").read_text()
    assert "layout 2d" in log and f"step {LAW_STEPS}/{LAW_STEPS}" in log
    with pytest.raises(InputError, match="--resume"):  # a fresh run never overwrites a run folder
        law("-d", law_kvasir.dataset_id, "--iterations", 1, *SMALL)


def test_training_loss_falls(kvasir_law_run):
    log = checkpoint(kvasir_law_run)["log"]
    denoising = np.array([e["denoising"] for e in log])
    dice = np.array([e["dice"] for e in log])
    assert denoising[-30:].mean() < 0.6 * denoising[:30].mean()
    assert dice[-30:].mean() < 0.6 * dice[:30].mean()  # the Dice head learns the conditioning masks


def test_weight_maps_move_from_the_prior_to_prior_x_delta(kvasir_law_run):
    maps = np.load(kvasir_law_run / "weight_maps.npz")
    steps, weights, masks = maps["steps"], maps["maps"], maps["masks"].astype(bool)
    assert steps.tolist() == [0, 50, 100, 150] and weights.shape == (4, 4, 64, 64)
    prior = normalise_and_clamp(ratio_prior(torch.from_numpy(masks).float()[:, None], 20.0), 0.1, 10.0)[:, 0]
    assert np.allclose(weights[0], prior.numpy(), atol=1e-5)  # the prior at step 0 (beta warms up from 0)
    assert np.allclose(weights.mean(axis=(2, 3)), 1, atol=1e-3)
    final = weights[-1]
    assert np.abs(final - weights[0]).mean() > 0.04  # the learned delta map changed the first maps
    up_weighted = 0
    for w, p, m in zip(final, prior.numpy(), masks):
        # the prior is flat on lesion and background; the learned delta varies inside each
        assert w[m].std() > 0.02 * w[m].mean() and w[~m].std() > 0.02 * w[~m].mean()
        # the lesion still weighs more than the background where the prior clearly says so (a lesion of half the
        # image has a prior of about 1: there the delta map alone decides)
        if p[m].mean() > 1.5 * p[~m].mean():
            assert w[m].mean() > w[~m].mean()
            up_weighted += 1
    assert up_weighted >= 2
    # the raw weight maps are in the checkpoint too, for later analysis
    assert checkpoint(kvasir_law_run)["weight_maps"]["steps"] == steps.tolist()


# ---------------------------------------------------------------------------------------------------------------
# resume


def test_resume_continues_exactly(law_kvasir):
    common = ["-d", law_kvasir.dataset_id, "--weighting", "prior", "--warmup-steps", 4, *TINY]
    # the reference: 12 steps in one go (-f all trains on every case, as no -f does, in its own folder)
    assert law(*common, "-f", "all", "--iterations", 12) == 0
    reference = checkpoint(run_dir(law_kvasir, "prior", fold="all"))
    # 6 steps, then --resume to 12
    assert law(*common, "--iterations", 6, "--save-every", 3) == 0
    folder = run_dir(law_kvasir, "prior")
    first = checkpoint(folder, "checkpoint_latest.pth")
    assert first["step"] == 6 and first["optimizer"]["state"][0]["step"] == 6
    with pytest.raises(InputError, match="already holds"):
        law(*common, "--iterations", 12)
    assert law(*common, "--iterations", 12, "--resume", "--lr", 0.5) == 0  # settings come from the checkpoint
    resumed = checkpoint(folder)
    assert resumed["step"] == 12 and resumed["optimizer"]["state"][0]["step"] == 12
    assert [e["step"] for e in resumed["log"]] == list(range(1, 13))
    assert resumed["log"][:6] == first["log"]
    # step 7 starts where step 6 ended: the same losses and weights as the uninterrupted run
    for a, b in zip(resumed["log"], reference["log"]):
        assert a["denoising"] == pytest.approx(b["denoising"], rel=1e-5)
    for key, value in reference["model"].items():
        assert torch.allclose(resumed["model"][key], value, atol=1e-6), key
    assert resumed["optimizer"]["param_groups"][0]["lr"] == reference["optimizer"]["param_groups"][0]["lr"]
    assert "resumed at step 6" in (folder / "training_log.txt").read_text()
    # --overwrite starts again
    assert law(*common, "--iterations", 2, "--overwrite") == 0
    assert checkpoint(folder)["step"] == 2


# ---------------------------------------------------------------------------------------------------------------
# 3D: Hippocampus


def test_hippocampus_trains_in_3d_and_samples(law_hippocampus):
    from nnunet_laworder.law.diffusion import sample, sampling_scheduler, training_scheduler
    from nnunet_laworder.law.generator import load_checkpoint

    # the paper's whole-image mode (the inpainting default is covered by test_law_inpainting.py and the runs above)
    assert law("-d", law_hippocampus.dataset_id, "-c", "3d_fullres", "--mode", "whole", "--iterations", 3,
               "--features", 8, 16, "--batch-size", 2, "-device", "cpu", "--no-progress", "--snapshots", 2) == 0
    folder = run_dir(law_hippocampus, configuration="3d_fullres")
    generator, extra = load_checkpoint(folder / "checkpoint_final.pth")
    layout = generator.layout
    assert layout.dim == 3 and layout.labels == [1, 2] and layout.file_ending == ".nii.gz"
    assert all(s % 2 == 0 for s in layout.image_size) and len(layout.image_size) == 3
    assert extra["step"] == 3 and np.load(folder / "weight_maps.npz")["maps"].shape[2:] == tuple(layout.image_size)
    masks = torch.zeros(1, 2, *layout.image_size)
    masks[:, 0, 10:20, 15:30, 10:20] = 1
    images = sample(generator.denoiser.eval(), masks, sampling_scheduler(training_scheduler(), "ddim"), steps=2,
                    generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, *layout.image_size) and torch.isfinite(images).all()
    assert generator.normaliser.inverse(images[0].numpy()).shape == (1, *layout.image_size)
    # DDIM with the data's normalised range: a 3-step generator's samples stay inside it, unclipped ones do not
    bound = generator.normaliser.normalised_bound()
    assert 1 < bound < 20
    clipped = sample(generator.denoiser, masks, sampling_scheduler(training_scheduler(), "ddim", bound), steps=2,
                     generator=torch.Generator().manual_seed(0))
    assert clipped.abs().max() <= bound + 1e-4 < images.abs().max()


# ---------------------------------------------------------------------------------------------------------------
# denoiser widths


def test_widths_not_divisible_by_8_train(law_kvasir):
    """``--features 12 24 48`` used to crash (``num_channels (12) must be divisible by num_groups (8)``): the
    denoiser's GroupNorms take gcd(8, channels) groups."""
    from nnunet_laworder.law.generator import load_checkpoint

    assert law("-d", law_kvasir.dataset_id, "-f", "all", "--iterations", 2, "--features", 12, 24, 48,
               "--image-size", 32, 32, "--batch-size", 2, "-device", "cpu", "--no-progress", "--snapshots", 2) == 0
    folder = run_dir(law_kvasir, fold="all")
    generator, extra = load_checkpoint(folder / "checkpoint_final.pth")
    assert extra["step"] == 2 and generator.denoiser.features_per_stage == (12, 24, 48)
    norms = [m for m in generator.denoiser.modules() if isinstance(m, torch.nn.GroupNorm) and m.num_channels == 12]
    assert norms and all(m.num_groups == 4 for m in norms)


# ---------------------------------------------------------------------------------------------------------------
# data parallel (torchrun, gloo on CPU)


@pytest.mark.slow
def test_torchrun_data_parallel_on_cpu(law_kvasir):
    import sys

    from nnunet_helpers import run

    env = dict(law_kvasir.env, OMP_NUM_THREADS="1")
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "nnunet_laworder.cli", "law", "train", "-d", str(law_kvasir.dataset_id), "--weighting", "uniform",
         "--iterations", "4", "--save-every", "2", *TINY], env, timeout=600)
    folder = run_dir(law_kvasir, "uniform")
    ckpt = checkpoint(folder)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4 and [e["step"] for e in ckpt["log"]] == [1, 2, 3, 4]
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "nnunet_laworder.cli", "law", "train", "-d", str(law_kvasir.dataset_id), "--weighting", "uniform",
         "--iterations", "6", "--resume", *TINY], env, timeout=600)
    ckpt = checkpoint(folder)
    assert ckpt["step"] == 6 and ckpt["optimizer"]["state"][0]["step"] == 6
