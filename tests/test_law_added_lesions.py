"""``law synthesize --protocol add --strength T0``: a real training case (the host) keeps its image and labels and
gains one lesion of another training case (the donor), pasted with a soft edge and harmonised by the generator from
noise level T0 (:mod:`nnunet_laworder.law.lesion_paste`).

Checked here: T0 = 0 is plain copy-paste, rebuilt from provenance.json alone, without a generator call; T0 in (0, 1)
changes only the added lesion's hole; the host's own lesions and labels stay; donors come from the generator's
training cases (never a validation case of its fold, never the host); the split keeps a case out of a fold whose
validation holds its host or donor; sharding gives the same bytes; bad input is one line before any work. The
geometry (organ labels, 3D placement) and the SDEdit sampler are checked on small arrays. The generator is a small
untrained one (``make_checkpoint``); Kvasir is the real, planned subset of ``law_fixtures``.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from law_fixtures import (dataset_folder, law_folders, law_kvasir, make_checkpoint, one_torch_thread,  # noqa: F401
                          synthesize)
from nnunet_laworder.law.case_writer import cast
from nnunet_laworder.law.diffusion import denoising_steps, sample, sampling_scheduler, training_scheduler
from nnunet_laworder.law.lesion_paste import AddedLesions, lesion_and_organ_labels, lesion_patch, paste
from nnunet_laworder.law.options import INPAINT
from nnunet_laworder.law.transforms import TransformConfig

ADD = ["--protocol", "add", "--num", 6, "--steps", 4, "--seed", 5]


@pytest.fixture(scope="module")
def fold0_checkpoint(law_kvasir, tmp_path_factory) -> Path:
    """An inpainting generator of fold 0's training cases: its donors must never be fold 0's validation cases."""
    return make_checkpoint(law_kvasir, tmp_path_factory.mktemp("added") / "checkpoint_final.pth", "2d", (32, 32),
                           fold=0, mode=INPAINT)


@pytest.fixture(scope="module")
def copy_pasted(law_kvasir, fold0_checkpoint) -> Path:
    """Strength 0, with sampling replaced by a failure: the generator must never be called."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nnunet_laworder.law.synthesis.sample", _never_called)
        assert synthesize("-d", 901, "-o", 920, "--checkpoint", fold0_checkpoint, *ADD, "--strength", 0) == 0
    return dataset_folder(law_kvasir, 920)


@pytest.fixture(scope="module")
def harmonised(law_kvasir, fold0_checkpoint) -> Path:
    assert synthesize("-d", 901, "-o", 921, "--checkpoint", fold0_checkpoint, *ADD, "--strength", 0.5) == 0
    return dataset_folder(law_kvasir, 921)


def _never_called(*args, **kwargs):
    raise AssertionError("the generator was called at --strength 0")


def read_case(folder: Path, case: str):
    """(image (C, H, W) int, label (H, W)) of a 2D png case."""
    image = np.array(Image.open(folder / "imagesTr" / f"{case}_0000.png")).astype(int)
    return np.moveaxis(image, -1, 0), np.array(Image.open(folder / "labelsTr" / f"{case}.png"))


def provenance(folder: Path) -> dict:
    return json.loads((folder / "provenance.json").read_text())


def box(pairs) -> tuple:
    return tuple(slice(a, b) for a, b in pairs)


def fold0(law_kvasir):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    return [{"train": list(map(str, f["train"])), "val": list(map(str, f["val"]))}
            for f in generate_crossval_split(law_kvasir.training_cases(), seed=12345, n_splits=5)]


# ---------------------------------------------------------------------------------------------------------------
# copy-paste and harmonisation on real Kvasir cases


def test_strength_0_is_copy_paste_rebuilt_from_provenance(law_kvasir, copy_pasted):
    """Each image is, byte for byte, the host with the donor's lesion pasted as provenance.json describes it; the
    label is the host's plus the added lesion; the host's lesions keep every pixel."""
    for case, entry in provenance(copy_pasted)["cases"].items():
        host_image, host_label = read_case(law_kvasir.raw, entry["source_case"])
        donor_image, donor_label = read_case(law_kvasir.raw, entry["donor_case"])
        params = entry["transform"]
        patch = lesion_patch(donor_image.astype(np.float32), donor_label.astype(np.int16), [1], params)
        expected, expected_label, _ = paste(host_image, host_label.astype(np.int16), patch, box(params["patch_box"]),
                                           params["margin"])
        image, label = read_case(copy_pasted, case)
        assert np.array_equal(image, cast(expected, np.dtype(np.uint8)))
        assert np.array_equal(label, expected_label)
        added = label.astype(bool) & ~host_label.astype(bool)
        assert added.sum() > 0 and np.array_equal(label, np.where(added, 1, host_label))
        assert params["host_lesion_overlap"] == 0  # placed away from the host's polyp (and its margin)
        assert np.array_equal(image[:, host_label > 0], host_image[:, host_label > 0])
        changed = (image != host_image).any(0)
        assert 0 < changed.sum() <= params["hole_pixels"] and changed[box(params["patch_box"])].sum() == changed.sum()


def test_harmonisation_changes_only_the_added_lesions_hole(law_kvasir, copy_pasted, harmonised):
    """Same seed, strength 0.5: the same donor, transform and place; the generator repaints the hole (the added
    lesion and its margin) and nothing else; the label is the copy-paste one."""
    pasted, harmonised_cases = provenance(copy_pasted)["cases"], provenance(harmonised)["cases"]
    repainted = 0
    for case, entry in harmonised_cases.items():
        same = pasted[case]
        assert (entry["source_case"], entry["donor_case"], entry["transform"]) == \
            (same["source_case"], same["donor_case"], same["transform"])
        image, label = read_case(harmonised, case)
        pasted_image, pasted_label = read_case(copy_pasted, case)
        host_image, host_label = read_case(law_kvasir.raw, entry["source_case"])
        assert np.array_equal(label, pasted_label)
        patch_box = box(entry["transform"]["patch_box"])
        outside = np.ones(label.shape, bool)
        outside[patch_box] = False
        assert np.array_equal(image[:, outside], host_image[:, outside])  # every pixel beyond the added lesion
        assert np.array_equal(label[outside], host_label[outside])
        assert np.array_equal(image[:, host_label > 0], host_image[:, host_label > 0])  # the host's own polyp
        repainted += int((image != pasted_image).any(0).sum())
    assert repainted > 0


def test_donors_hosts_provenance_and_split(law_kvasir, fold0_checkpoint, harmonised):
    splits = fold0(law_kvasir)
    record = provenance(harmonised)
    assert (record["protocol"], record["strength"], record["lesion_labels"], record["organ_labels"]) == \
        ("add", 0.5, [1], [])
    assert record["conditioning_cases"] == sorted(splits[0]["train"]) and record["generator_fold"] == 0
    for case, entry in record["cases"].items():
        assert (entry["protocol"], entry["strength"], entry["run_seed"], entry["steps"]) == ("add", 0.5, 5, 4)
        assert isinstance(entry["seed"], int) and entry["donor_slice"] is None
        assert entry["donor_case"] != entry["source_case"]
        for real in (entry["source_case"], entry["donor_case"]):
            assert real in splits[0]["train"] and real not in splits[0]["val"]  # never fold 0's validation
        for key in ("flip", "rot90", "rotation_deg", "scale", "elastic", "fit_scale", "donor_component", "donor_box",
                    "lesion_box", "patch_box", "window", "margin", "hole_pixels"):
            assert key in entry["transform"], key
    written = json.loads((harmonised / "splits_final.json").read_text())
    for fold, real in zip(written, splits):
        made_from = {c: {e["source_case"], e["donor_case"]} for c, e in record["cases"].items()}
        assert fold["val"] == real["val"]
        # out of a fold whose validation holds the host or the donor
        assert {c for c in fold["train"] if c in made_from} == {c for c, r in made_from.items()
                                                                  if not r & set(real["val"])}
    assert sum(c in record["cases"] for c in written[0]["train"]) == 6  # fold 0, the generator's: all of them


def test_sharded_add_equals_one_run(law_kvasir, fold0_checkpoint, harmonised, capsys):
    common = ["-d", 901, "-o", 922, "--checkpoint", fold0_checkpoint, *ADD, "--strength", 0.5]
    assert synthesize(*common, "--num-parts", 2, "--part-id", 1) == 0
    assert "adding a lesion of another case to each, harmonised from --strength 0.5: 2 denoising steps" in \
        capsys.readouterr().out
    assert synthesize(*common, "--num-parts", 2, "--part-id", 0) == 0
    sharded = dataset_folder(law_kvasir, 922)
    files = sorted(p.relative_to(harmonised) for p in harmonised.rglob("law_*") if p.is_file())
    assert len(files) == 12
    assert all((sharded / f).read_bytes() == (harmonised / f).read_bytes() for f in files)
    assert provenance(sharded)["cases"] == provenance(harmonised)["cases"]


@pytest.mark.parametrize("argv, message", [
    (["--protocol", "add", "--strength", "1.5"], "--strength must be in [0, 1], got 1.5"),
    (["--protocol", "add", "--strength", "-0.2"], "--strength must be in [0, 1], got -0.2"),
    (["--protocol", "add", "--strength", "nan"], "--strength must be in [0, 1], got nan"),
    (["--strength", "0.3"], "--strength 0.3 needs --protocol add"),
    (["--protocol", "add", "--strength", "0.1", "--steps", "5"], "leaves no denoising step"),
    (["--protocol", "add", "--whole"], "--protocol add needs an inpainting generator"),
])
def test_bad_protocol_input_is_one_line_before_any_work(law_kvasir, fold0_checkpoint, tmp_path, capsys, argv,
                                                        message):
    checkpoint = fold0_checkpoint
    if "--whole" in argv:
        argv = [a for a in argv if a != "--whole"]
        checkpoint = make_checkpoint(law_kvasir, tmp_path / "whole.pth", "2d", (32, 32), fold=0)
    assert synthesize("-d", 901, "-o", 923, "--checkpoint", checkpoint, "--num", 2, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(law_kvasir.folders["nnUNet_raw"].glob("*923*"))  # no dataset, no cache


# ---------------------------------------------------------------------------------------------------------------
# the parts, on small arrays


def test_lesion_and_organ_labels():
    assert lesion_and_organ_labels({"background": 0, "polyp": 1}) == ([1], [])
    assert lesion_and_organ_labels({"background": 0, "kidney": [1, 2], "tumor": 2}) == ([2], [1])  # KiTS19
    assert lesion_and_organ_labels({"background": 0, "Anterior": 1, "Posterior": 2}) == ([1, 2], [])
    assert lesion_and_organ_labels({"background": 0, "a": 1, "ignore": 3}) == ([1], [])


def test_3d_tumour_goes_into_the_organ_beside_the_hosts_tumour():
    """KiTS-like labels in 3D: the donor's tumour (2) lands on the host's kidney (1), away from its own tumour;
    the kidney under it becomes tumour, everything else stays."""
    rng = np.random.default_rng(0)
    host, donor = np.zeros((40, 40, 40), np.int16), np.zeros((40, 40, 40), np.int16)
    host[4:36, 4:36, 4:36] = 1
    host[6:14, 6:14, 6:14] = 2
    donor[10:30, 10:30, 10:30] = 1
    donor[15:24, 16:25, 14:22] = 2
    host_image, donor_image = rng.uniform(0, 1, (1, 40, 40, 40)), rng.uniform(2, 3, (1, 40, 40, 40))
    adding = AddedLesions([16, 16, 16], [1, 2], [2], [1], TransformConfig.for_dim(3), 0.0)
    image, label, params = adding.add(host_image, host, donor_image, donor, None, np.random.default_rng(1), None)
    added = label != host
    assert added.any() and set(np.unique(label[added])) == {2} and set(np.unique(host[added])) <= {0, 1}
    assert params["host_lesion_overlap"] == 0 and params["organ_fraction"] >= 0.5
    assert np.array_equal(label[host == 2], host[host == 2]) and np.array_equal(image[:, host == 2],
                                                                                host_image[:, host == 2])
    outside = np.ones(host.shape, bool)
    outside[box(params["patch_box"])] = False
    assert np.array_equal(image[:, outside], host_image[:, outside]) and np.array_equal(label[outside], host[outside])
    assert (image[0][added] > 1).mean() > 0.5  # the donor's pixels came with its tumour


class Counting(torch.nn.Module):
    """A stand-in denoiser that predicts zero noise and counts its calls."""
    image_channels = 1

    def __init__(self):
        super().__init__()
        self.timesteps = []

    def forward(self, x, masks, t):
        self.timesteps.append(int(t[0]))
        return torch.zeros_like(x), None


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_sdedit_starts_partway_down_the_schedule(sampler):
    steps, masks, start = 10, torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5)
    full = sampling_scheduler(training_scheduler(), sampler)
    full.set_timesteps(steps)
    for strength in (0.3, 0.75):
        model = Counting()
        sample(model, masks, sampling_scheduler(training_scheduler(), sampler), steps,
               torch.Generator().manual_seed(0), start=start, strength=strength)
        assert len(model.timesteps) == denoising_steps(steps, strength) == int(steps * strength)
        assert model.timesteps == full.timesteps[steps - len(model.timesteps):].tolist()
    # strength 1 is the pure-noise path, unchanged: every step, the same noise
    model, generator = Counting(), torch.Generator().manual_seed(0)
    from_noise = sample(model, masks, sampling_scheduler(training_scheduler(), sampler), steps, generator,
                        start=start, strength=1.0)
    again = sample(Counting(), masks, sampling_scheduler(training_scheduler(), sampler), steps,
                   torch.Generator().manual_seed(0))
    assert len(model.timesteps) == steps and torch.equal(from_noise, again)
