"""Lesion-focused generation (``--mode inpaint``, the default): training windows and holes, the window written back
into the full-resolution real image (round trip), resume / sharding, and the one-line errors of bad input.

Generators here are small untrained ones (``make_checkpoint``): their windows are noise, which is all the geometry
needs; Kvasir (2D RGB png) and Hippocampus (3D NIfTI) are real, planned subsets from ``law_fixtures``.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from law_fixtures import (dataset_folder, law_folders, law_hippocampus, law_kvasir, make_checkpoint,  # noqa: F401
                          one_torch_thread, synthesize)
from nnunet_laworder.cli import main
from nnunet_laworder.law.data import BatchSampler, load_training_data
from nnunet_laworder.law.inpainting import INPAINT, default_margin
from nnunet_laworder.law.transforms import apply_transform


@pytest.fixture(scope="module")
def inpaint_checkpoint(law_kvasir, tmp_path_factory) -> Path:
    return make_checkpoint(law_kvasir, tmp_path_factory.mktemp("inpaint") / "checkpoint_final.pth", "2d", (32, 32),
                           mode=INPAINT)


@pytest.fixture(scope="module")
def inpainted(law_kvasir, inpaint_checkpoint) -> Path:
    assert synthesize("-d", 901, "-o", 930, "--checkpoint", inpaint_checkpoint, "--num", 6, "--steps", 3,
                      "--seed", 3) == 0
    return dataset_folder(law_kvasir, 930)


# ---------------------------------------------------------------------------------------------------------------
# training data


def test_training_windows_holes_and_conditioning(law_kvasir):
    data = load_training_data(law_kvasir.dataset_id, image_size=(32, 32), mode=INPAINT)
    assert data.layout.mode == INPAINT and data.layout.image_size == [32, 32]
    assert list(data.images.shape[2:]) == [40, 40]  # the window + its jitter (4 px each way) around the lesion
    assert (data.segmentations.flatten(1).amax(1) > 0).all()  # every Kvasir crop holds its polyp
    sampler = BatchSampler(data, 8, seed=2)
    images, condition, fg = sampler.batch(5)
    assert images.shape == (8, 3, 32, 32) and condition.shape == (8, 1 + 3 + 1, 32, 32)
    onehot, known, hole = condition[:, :1], condition[:, 1:4], condition[:, 4:]
    assert torch.equal(onehot, fg) and set(hole.unique().tolist()) <= {0.0, 1.0}
    assert (hole >= fg).all()  # the lesion is always repainted
    assert torch.equal(known, images * (1 - hole))  # the real surroundings, nothing inside the hole
    assert 0 < hole.mean() < 1
    again = BatchSampler(data, 8, seed=2).batch(5)  # a function of (seed, step)
    assert all(torch.equal(a, b) for a, b in zip(again, (images, condition, fg)))
    assert not torch.equal(sampler.batch(6)[0], images)
    fixed = sampler.fixed([0, 1])
    margin = default_margin([32, 32])
    assert fixed[1][:, 4:].sum() >= fixed[2].sum() + margin  # the snapshot hole: the lesion dilated


def test_3d_windows(law_hippocampus):
    data = load_training_data(law_hippocampus.dataset_id, image_size=(16, 16, 16), mode=INPAINT)
    images, condition, fg = BatchSampler(data, 2, seed=0).batch(0)
    assert images.shape == (2, 1, 16, 16, 16) and condition.shape == (2, 2 + 1 + 1, 16, 16, 16)


# ---------------------------------------------------------------------------------------------------------------
# synthesis: the window written back into the real image


def test_window_round_trip(law_kvasir, inpainted):
    provenance = json.loads((inpainted / "provenance.json").read_text())
    assert provenance["layout"]["mode"] == INPAINT and provenance["gate"] is None
    for case, entry in provenance["cases"].items():
        source = entry["source_case"]
        image = np.array(Image.open(inpainted / "imagesTr" / f"{case}_0000.png")).astype(int)
        real = np.array(Image.open(law_kvasir.raw / "imagesTr" / f"{source}_0000.png")).astype(int)
        label = np.array(Image.open(inpainted / "labelsTr" / f"{case}.png"))
        real_label = np.array(Image.open(law_kvasir.raw / "labelsTr" / f"{source}.png"))
        assert image.shape == real.shape and label.shape == real_label.shape  # the source's full resolution
        window = tuple(slice(a, b) for a, b in entry["transform"]["window"])
        outside = np.ones(label.shape, bool)
        outside[window] = False
        assert np.array_equal(image[outside], real[outside])  # every pixel outside the window is the source's
        assert np.array_equal(label[outside], real_label[outside])  # the source lesions that stay
        expected = apply_transform(real_label[window].astype(np.int16), entry["transform"])
        assert np.array_equal(label[window], expected)  # the transformed mask
        changed = (image != real).any(-1).sum()
        assert 0 < changed <= entry["transform"]["hole_pixels"]
        assert entry["mode"] == INPAINT and entry["draw"] == 0


def test_inpaint_resume_and_sharding_byte_equal(law_kvasir, inpaint_checkpoint, inpainted, capsys):
    common = ["-d", 901, "--checkpoint", inpaint_checkpoint, "--num", 6, "--steps", 3, "--seed", 3]
    assert synthesize(*common, "-o", 931, "--num-parts", 2, "--part-id", 0) == 0
    assert "still being sampled by the other parts" in capsys.readouterr().out
    assert synthesize(*common, "-o", 931, "--num-parts", 2, "--part-id", 1) == 0
    sharded = dataset_folder(law_kvasir, 931)

    def digests(folder):
        return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("law_*")) if p.is_file()}

    assert digests(sharded) == digests(inpainted) and len(digests(inpainted)) == 12


def test_3d_inpainting_keeps_the_volume(law_hippocampus, tmp_path):
    import SimpleITK as sitk

    checkpoint = make_checkpoint(law_hippocampus, tmp_path / "checkpoint_final.pth", "3d_fullres", (16, 16, 16),
                                 mode=INPAINT)
    assert synthesize("-d", 902, "-o", 932, "--checkpoint", checkpoint, "--num", 2, "--steps", 2) == 0
    folder = dataset_folder(law_hippocampus, 932)
    provenance = json.loads((folder / "provenance.json").read_text())
    for case, entry in provenance["cases"].items():
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz")))
        real = sitk.GetArrayFromImage(sitk.ReadImage(
            str(law_hippocampus.raw / "imagesTr" / f"{entry['source_case']}_0000.nii.gz")))
        window = tuple(slice(a, b) for a, b in entry["transform"]["window"])
        outside = np.ones(real.shape, bool)
        outside[window] = False
        assert image.shape == real.shape and np.array_equal(image[outside], real[outside])


def test_slicewise_inpainting_writes_the_source_slice_back(law_hippocampus, tmp_path):
    """KiTS-like slice-wise generators (here Hippocampus slices along axis 0): a one-slice volume, the source
    slice outside the window."""
    import SimpleITK as sitk

    checkpoint = make_checkpoint(law_hippocampus, tmp_path / "slices.pth", "3d_fullres", (16, 16), slice_axis=0,
                                 mode=INPAINT)
    assert synthesize("-d", 902, "-o", 934, "--checkpoint", checkpoint, "--num", 2, "--steps", 2) == 0
    folder = dataset_folder(law_hippocampus, 934)
    for case, entry in json.loads((folder / "provenance.json").read_text())["cases"].items():
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz")))
        real = sitk.GetArrayFromImage(sitk.ReadImage(
            str(law_hippocampus.raw / "imagesTr" / f"{entry['source_case']}_0000.nii.gz")))[entry["source_slice"]]
        assert image.shape == (1, *real.shape)
        outside = np.ones(real.shape, bool)
        outside[tuple(slice(a, b) for a, b in entry["transform"]["window"])] = False
        assert np.array_equal(image[0][outside], real[outside])


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line, before any work


def test_window_larger_than_the_image_is_one_line(law_kvasir, capsys):
    assert main(["law", "train", "-d", "901", "--image-size", "256", "256", "--iterations", "1", "-device", "cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "window 256x256" in err and "larger than its image" in err
    assert ".png" in err  # names the file
    assert not list((law_kvasir.folders["nnUNet_results"] / law_kvasir.name).glob("LAW__law__2d/checkpoint*"))


@pytest.mark.parametrize("argv, message", [
    (["--min-fidelity", "1.5"], "--min-fidelity must be in [0, 1]"),
    (["--min-fidelity", "-0.1"], "--min-fidelity must be in [0, 1]"),
    (["--max-draws", "0"], "--max-draws must be at least 1"),
    (["--judge", "2d_order", "-tr", "nnUNetTrainerNoSuchJudge"], "no trained model"),
])
def test_gate_options_are_checked_before_any_work(law_kvasir, inpaint_checkpoint, capsys, argv, message):
    assert synthesize("-d", 901, "-o", 933, "--checkpoint", inpaint_checkpoint, "--num", 2, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(law_kvasir.folders["nnUNet_raw"].glob("*933*"))  # no dataset, no cache
