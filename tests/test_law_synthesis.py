"""``law synthesize``: the synthetic nnU-Net dataset, its honest split, atomicity, resuming, sharding, provenance,
and the layout transforms.

The generators here are small untrained ones (``LAWGenerator.create`` + ``save_checkpoint``): they sample noise
images, which is all the dataset writing needs. Kvasir (2D RGB png) and Hippocampus (3D NIfTI) come from
``law_fixtures`` (real, planned subsets).
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from law_fixtures import (dataset_folder, law_folders, law_hippocampus, law_kvasir, make_checkpoint,  # noqa: F401
                          one_torch_thread, synthesize)
from nnunet_helpers import run
from nnunet_laworder.cli import main
from nnunet_laworder.law.transforms import (TransformConfig, apply_transform, identity, is_valid, label_counts,
                                            random_transform)

SYNTH = [sys.executable, "-m", "nnunet_laworder.cli", "law", "synthesize"]


# ---------------------------------------------------------------------------------------------------------------
# helpers


def synthetic_ids(folder: Path) -> list:
    return sorted(json.loads((folder / "provenance.json").read_text())["cases"])


def check_splits(splits: list, real_splits: list, provenance: dict) -> None:
    """Real folds exactly as the real-only dataset's, synthetic cases training-only and leak-free."""
    sources = {case: entry["source_case"] for case, entry in provenance["cases"].items()}
    assert len(splits) == len(real_splits)
    for fold, real in zip(splits, real_splits):
        assert fold["val"] == real["val"]
        assert [c for c in fold["train"] if c not in sources] == real["train"]
        assert not set(fold["val"]) & set(sources)
        synthetic = {c for c in fold["train"] if c in sources}
        assert synthetic == {c for c, s in sources.items() if s not in real["val"]}


def nnunet_real_splits(planned) -> list:
    from nnunetv2.utilities.crossval_split import generate_crossval_split
    return generate_crossval_split(planned.training_cases(), seed=12345, n_splits=5)


@pytest.fixture(scope="module")
def kvasir_checkpoint(law_kvasir):
    from nnunet_laworder.nnunet_folders import law_run_folder

    # where 'law train -d 901' puts it, so that synthesize finds it without --checkpoint
    path = law_run_folder(law_kvasir.name, "law", "2d", results=law_kvasir.folders["nnUNet_results"]) / \
        "checkpoint_final.pth"
    return make_checkpoint(law_kvasir, path, "2d", (32, 32))


@pytest.fixture(scope="module")
def kvasir_law(law_kvasir, kvasir_checkpoint):
    """Dataset910_KvasirSEGLAW (6 synthetic cases) and what synthesize printed, from a source whose plans hold the
    ORDER configuration and a second plans file (a replicate copy, as the ORDER ablation makes)."""
    assert main(["plans", "-d", "901", "-c", "2d", "--arch", "order"]) == 0
    plans = json.loads((law_kvasir.preprocessed / "nnUNetPlans.json").read_text())
    (law_kvasir.preprocessed / "nnUNetPlans_r1.json").write_text(json.dumps(dict(plans, plans_name="nnUNetPlans_r1")))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert synthesize("-d", 901, "-o", 910, "--num", 6, "--steps", 3, "--seed", 1) == 0
    return dataset_folder(law_kvasir, 910), out.getvalue()


def plans_files(folder: Path) -> dict:
    """``{identifier: plans}`` of every nnU-Net plans file in a preprocessed folder."""
    found = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    return {name: plans for name, plans in found.items()
            if isinstance(plans, dict) and "plans_name" in plans and "configurations" in plans}


# ---------------------------------------------------------------------------------------------------------------
# transforms


def _two_label_mask(shape, corner=False):
    mask = np.zeros(shape, np.int16)
    if corner:
        mask[tuple(slice(0, s // 5) for s in shape)] = 1
    else:
        mask[tuple(slice(s // 4, s // 2) for s in shape)] = 1
        mask[tuple(slice(s // 2, 3 * s // 4) for s in shape)] = 2
    return mask


@pytest.mark.parametrize("shape", [(64, 64), (48, 72), (24, 32, 28)])
def test_transform_keeps_labels_and_is_reproducible(shape):
    for corner in (False, True):
        mask = _two_label_mask(shape, corner)
        for seed in range(6):
            out, params = random_transform(mask, np.random.default_rng(seed))
            assert out.shape == mask.shape and out.dtype == mask.dtype
            assert set(label_counts(out)) == set(label_counts(mask))  # keeps every label, non-empty
            assert is_valid(mask, out, params["scale"], TransformConfig().min_kept)
            # the recorded parameters (through JSON, as in provenance.json) give the same mask again
            assert np.array_equal(apply_transform(mask, json.loads(json.dumps(params))), out)
            assert random_transform(mask, np.random.default_rng(seed))[1] == params
    assert np.array_equal(apply_transform(mask, identity(mask.ndim)), mask)


def test_transform_rejects_lost_lesions():
    mask = _two_label_mask((64, 64), corner=True)
    shrunk = apply_transform(mask, dict(identity(2), scale=0.05))  # the lesion all but disappears
    assert not is_valid(mask, shrunk, 1.0, 0.6)
    rotated = apply_transform(mask, dict(identity(2), rotation_deg=[45.0]))  # the corner turns off the image
    assert label_counts(rotated).get(1, 0) < 0.6 * label_counts(mask)[1]
    assert not is_valid(mask, rotated, 1.0, 0.6)
    assert not is_valid(mask, np.zeros_like(mask), 1.0, 0.6)
    out, params = random_transform(mask, np.random.default_rng(0), accept=lambda m: False)
    assert params["fallback"] and np.array_equal(out, mask)
    flips = apply_transform(mask, dict(identity(2), flip=[True, True], rot90=1))
    assert np.array_equal(flips, np.rot90(mask[::-1, ::-1], 1))


# ---------------------------------------------------------------------------------------------------------------
# the dataset


def test_kvasir_dataset_split_and_provenance(law_kvasir, kvasir_checkpoint, kvasir_law):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from PIL import Image

    from nnunet_laworder.law.generator import checkpoint_hash

    folder, out = kvasir_law
    assert folder.name == "Dataset910_KvasirSEGLAW"
    # the next commands preprocess with the source's plans, never re-plan
    assert "nnUNetv2_preprocess -d 910 -plans_name nnUNetPlans -c 2d\n" in out
    assert "nnUNetv2_train 910 2d $f -tr nnUNetTrainer -p nnUNetPlans" in out
    assert "the same preprocessed data trains 2d_order too" in out
    assert "nnUNetv2_plan_and_preprocess -d" not in out and "nnunet-laworder plans -d" not in out
    verify_dataset_integrity(str(folder), num_processes=1)

    real = law_kvasir.training_cases()
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["numTraining"] == len(real) + 6
    assert dataset_json["channel_names"] == json.loads((law_kvasir.raw / "dataset.json").read_text())["channel_names"]
    for sub in ("imagesTr", "labelsTr"):  # real cases byte for byte
        for path in (law_kvasir.raw / sub).iterdir():
            assert (folder / sub / path.name).read_bytes() == path.read_bytes()

    provenance = json.loads((folder / "provenance.json").read_text())
    cases = provenance["cases"]
    assert sorted(cases) == [f"law_{i:05d}" for i in range(6)] == synthetic_ids(folder)
    digest = hashlib.sha256(kvasir_checkpoint.read_bytes()).hexdigest()
    assert provenance["checkpoint_hash"] == digest == checkpoint_hash(kvasir_checkpoint)
    for case, entry in cases.items():
        for key in ("source_case", "transform", "seed", "sampler", "steps", "checkpoint", "checkpoint_hash",
                    "weighting", "case_index", "run_seed"):
            assert entry[key] is not None, (case, key)
        assert entry["checkpoint_hash"] == digest and entry["checkpoint"] == str(kvasir_checkpoint.resolve())
        assert (entry["sampler"], entry["steps"], entry["weighting"], entry["run_seed"]) == ("ddim", 3, "law", 1)
        assert entry["source_case"] in real
        source = Image.open(law_kvasir.raw / "labelsTr" / f"{entry['source_case']}.png")
        image = Image.open(folder / "imagesTr" / f"{case}_0000.png")
        label = np.array(Image.open(folder / "labelsTr" / f"{case}.png"))
        assert image.mode == "RGB" and image.size == source.size  # written at the source case's size
        assert set(np.unique(label)) == {0, 1}  # Kvasir masks are never empty; neither are their layouts
        # the label is the recorded transform of the source mask
        assert np.array_equal(label, apply_transform(np.array(source).astype(np.int16), entry["transform"]))

    splits = json.loads((folder / "splits_final.json").read_text())
    preprocessed = law_kvasir.folders["nnUNet_preprocessed"] / folder.name / "splits_final.json"
    assert json.loads(preprocessed.read_text()) == splits
    check_splits(splits, nnunet_real_splits(law_kvasir), provenance)
    # every training mask is a source once (default --num = the number of training cases; here 6 of 16)
    assert len({e["source_case"] for e in cases.values()}) == 6
    assert not list(law_kvasir.folders["nnUNet_raw"].glob(".*"))  # no cache, lock or staging left behind


def test_the_new_dataset_has_the_source_plans(law_kvasir, kvasir_law):
    """Every plans file of the source, the plugin's configuration included, is the new dataset's but for
    dataset_name; dataset.json and the fingerprint are where nnUNetv2_preprocess / nnUNetv2_train read them."""
    folder, _ = kvasir_law
    preprocessed = law_kvasir.folders["nnUNet_preprocessed"] / folder.name
    source, new = plans_files(law_kvasir.preprocessed), plans_files(preprocessed)
    assert sorted(new) == sorted(source) == ["nnUNetPlans", "nnUNetPlans_r1"]
    assert "2d_order" in new["nnUNetPlans"]["configurations"]
    for name, plans in new.items():
        assert plans["dataset_name"] == folder.name
        assert dict(plans, dataset_name=source[name]["dataset_name"]) == source[name], name
    assert json.loads((preprocessed / "dataset.json").read_text()) == json.loads((folder / "dataset.json").read_text())
    fingerprint = "dataset_fingerprint.json"
    assert (preprocessed / fingerprint).read_bytes() == (law_kvasir.preprocessed / fingerprint).read_bytes()


def test_a_source_without_plans_is_an_input_error(tmp_path):
    from nnunet_laworder.errors import InputError
    from nnunet_laworder.law.plans_transfer import transfer_plans

    source = tmp_path / "Dataset930_Unplanned"
    source.mkdir()
    (source / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(InputError, match="holds no nnU-Net plans file; run nnUNetv2_plan_and_preprocess -d 930"):
        transfer_plans(source, "Dataset931_New")


def test_existing_real_split_and_fold_generator(law_kvasir, tmp_path, capsys):
    """A real-only splits_final.json is kept exactly; a fold-0 generator conditions on fold 0's training masks."""
    checkpoint = make_checkpoint(law_kvasir, tmp_path / "fold0.pth", "2d", (32, 32), fold=0)
    cases = law_kvasir.training_cases()
    custom = [{"train": cases[:10], "val": cases[10:]}, {"train": cases[6:], "val": cases[:6]},
              {"train": cases[:3] + cases[8:], "val": cases[3:8]}]
    split_file = law_kvasir.preprocessed / "splits_final.json"
    # shared with the session's other LAW modules: a training there may have written nnU-Net's seeded split
    shared = split_file.read_bytes() if split_file.exists() else None
    assert shared is None or json.loads(shared) == nnunet_real_splits(law_kvasir)
    split_file.write_text(json.dumps(custom))
    try:
        # this custom file disagrees with the checkpoint's fold 0: refused before any work
        assert synthesize("-d", 901, "-o", 911, "--checkpoint", checkpoint, "--num", 4, "--steps", 2) == 2
        assert "validation cases of fold 0" in capsys.readouterr().err
        fold0 = json.loads(json.dumps(nnunet_real_splits(law_kvasir)[0]))
        custom[0] = {"train": fold0["train"], "val": fold0["val"]}
        split_file.write_text(json.dumps(custom))
        assert synthesize("-d", 901, "-o", 911, "--checkpoint", checkpoint, "--num", 20, "--steps", 2) == 0
    finally:
        split_file.write_bytes(shared) if shared is not None else split_file.unlink()
    folder = dataset_folder(law_kvasir, 911)
    provenance = json.loads((folder / "provenance.json").read_text())
    splits = json.loads((folder / "splits_final.json").read_text())
    check_splits(splits, custom, provenance)
    assert provenance["generator_fold"] == 0 and provenance["conditioning_cases"] == sorted(custom[0]["train"])
    sources = [e["source_case"] for e in provenance["cases"].values()]
    assert set(sources) == set(custom[0]["train"])  # 20 > 13 masks: all of them, never a validation mask
    assert sum(c.startswith("law_") for c in splits[0]["train"]) == 20  # fold 0: all synthetic cases
    assert "fold 0 is the clean comparison" in capsys.readouterr().out


def test_hippocampus_3d_dataset(law_hippocampus, tmp_path):
    import SimpleITK as sitk
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    checkpoint = make_checkpoint(law_hippocampus, tmp_path / "hippo.pth", "3d_fullres", (40, 56, 40))
    assert synthesize("-d", 902, "-o", 912, "--checkpoint", checkpoint, "--num", 3, "--steps", 2) == 0
    folder = dataset_folder(law_hippocampus, 912)
    verify_dataset_integrity(str(folder), num_processes=1)
    provenance = json.loads((folder / "provenance.json").read_text())
    check_splits(json.loads((folder / "splits_final.json").read_text()), nnunet_real_splits(law_hippocampus),
                 provenance)
    for case, entry in provenance["cases"].items():
        source = sitk.ReadImage(str(law_hippocampus.raw / "imagesTr" / f"{entry['source_case']}_0000.nii.gz"))
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        assert image.GetSize() == label.GetSize() == (40, 56, 40)[::-1]  # the generator's box (sitk order)
        assert image.GetSpacing() == source.GetSpacing() and image.GetDirection() == source.GetDirection()
        assert image.GetPixelID() == source.GetPixelID()
        assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1, 2}


def test_slicewise_generator_writes_one_slice_volumes(law_hippocampus, tmp_path):
    """KiTS-like slice-wise generators (here on Hippocampus volumes, slices along axis 0)."""
    import SimpleITK as sitk
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    checkpoint = make_checkpoint(law_hippocampus, tmp_path / "slices.pth", "3d_fullres", (32, 32), slice_axis=0)
    assert synthesize("-d", 902, "-o", 913, "--checkpoint", checkpoint, "--num", 3, "--steps", 3,
                      "--sampler", "dpm") == 0
    folder = dataset_folder(law_hippocampus, 913)
    verify_dataset_integrity(str(folder), num_processes=1)
    provenance = json.loads((folder / "provenance.json").read_text())
    for case, entry in provenance["cases"].items():
        assert entry["sampler"] == "dpm" and entry["source_slice"] is not None
        source = sitk.ReadImage(str(law_hippocampus.raw / "labelsTr" / f"{entry['source_case']}.nii.gz"))
        label = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        assert label.GetSize() == (*source.GetSize()[:2], 1)  # one slice, the source's in-plane size
        assert label.GetSpacing() == source.GetSpacing()
        k = entry["source_slice"]
        assert np.allclose(label.GetOrigin(), source.TransformIndexToPhysicalPoint((0, 0, k)))
        assert sitk.GetArrayFromImage(source)[k].any()  # a slice with foreground was the source


# ---------------------------------------------------------------------------------------------------------------
# errors, overwrite, interruption, sharding


def test_command_line_wiring():
    """``nnunet-laworder law synthesize`` parses through the law command group (imports stay light)."""
    import argparse

    from nnunet_laworder.law.cli import register, synthesize_entrypoint

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["law", "synthesize", "-d", "901", "-o", "910", "--num-parts", "2", "--part-id", "1",
                              "-device", "cpu", "--sampler", "dpm"])
    assert args.func is synthesize_entrypoint
    assert (args.dataset, args.output_id, args.num_parts, args.part_id, args.device, args.sampler, args.steps) == \
        ("901", 910, 2, 1, "cpu", "dpm", 50)


def test_input_errors_before_any_work(law_kvasir, kvasir_checkpoint, capsys):
    raw = law_kvasir.folders["nnUNet_raw"]
    before = sorted(p.name for p in raw.iterdir())
    cases = [(["-d", 901, "-o", 901], "is the id of the source dataset"),
             (["-d", 999, "-o", 914], "dataset 999 not found"),
             (["-d", 901, "-o", 914, "--checkpoint", "/nonexistent.pth"], "checkpoint /nonexistent.pth not found"),
             (["-d", 901, "-o", 914, "--weighting", "prior"], "train the generator first"),
             (["-d", 901, "-o", 914, "--num-parts", 2, "--part-id", 2], "--part-id must be in 0..1"),
             (["-d", 901, "-o", 914, "--checkpoint", law_kvasir.raw / "dataset.json"], "not a LAW generator")]
    for argv, message in cases:
        assert synthesize(*argv) == 2, argv
        assert message in capsys.readouterr().err
    # a dataset that was never planned
    shutil.copytree(law_kvasir.raw, raw / "Dataset919_Unplanned")
    try:
        assert synthesize("-d", 919, "-o", 914, "--checkpoint", kvasir_checkpoint) == 2
        assert "nnUNetv2_plan_and_preprocess" in capsys.readouterr().err
    finally:
        shutil.rmtree(raw / "Dataset919_Unplanned")
    assert sorted(p.name for p in raw.iterdir()) == before


class CodeCarryingPickle:
    """What a crafted checkpoint can hold: unpickling it calls ``open(marker, "w")`` (it could be any call)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_that_carries_code_is_refused_and_runs_nothing(law_kvasir, kvasir_checkpoint, tmp_path,
                                                                     capsys):
    import torch

    marker, crafted = tmp_path / "code_ran", tmp_path / "crafted.pth"
    torch.save({"generator": CodeCarryingPickle(marker), "step": 0}, crafted)
    assert synthesize("-d", 901, "-o", 914, "--checkpoint", crafted) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "holds objects other than tensors and plain data" in err and len(err.strip().splitlines()) == 1
    # plain data that names code to import instead of a convolution is refused too
    state = torch.load(kvasir_checkpoint, weights_only=True)
    state["generator"]["denoiser_config"]["conv_op"] = "os.system"
    torch.save(state, tmp_path / "foreign_op.pth")
    assert synthesize("-d", 901, "-o", 914, "--checkpoint", tmp_path / "foreign_op.pth") == 2
    assert "unsupported conv_op 'os.system'" in capsys.readouterr().err


def test_overwrite_guard(law_kvasir, kvasir_checkpoint, capsys):
    assert synthesize("-d", 901, "-o", 915, "--num", 2, "--steps", 2) == 0
    folder = dataset_folder(law_kvasir, 915)
    snapshot = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert synthesize("-d", 901, "-o", 915, "--num", 3, "--steps", 2) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot
    assert synthesize("-d", 901, "-o", 915, "--num", 3, "--steps", 2, "--overwrite") == 0
    assert synthetic_ids(dataset_folder(law_kvasir, 915)) == ["law_00000", "law_00001", "law_00002"]


def dataset_snapshot(planned, dataset_id: int) -> dict:
    """``{path: bytes}`` of every file of dataset ``dataset_id`` in nnUNet_raw and nnUNet_preprocessed."""
    snapshot = {}
    for root in (planned.folders["nnUNet_raw"], planned.folders["nnUNet_preprocessed"]):
        for folder in root.glob(f"Dataset{dataset_id:03d}_*"):
            snapshot.update({p.relative_to(root.parent): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    return snapshot


def kill_once_cached(argv: list, env: dict, raw: Path, dataset_id: int) -> list:
    """Start ``law synthesize ARGV`` in a child process and SIGKILL it once a case is in the cache; until then no
    ``DatasetXXX_*`` of ``dataset_id`` may appear under ``raw``. Returns the cached cases' names."""
    process = subprocess.Popen(SYNTH + argv + ["-device", "cpu", "--no-progress"],
                               env=dict(env, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    cache_cases, visible = f".law-cache-Dataset{dataset_id:03d}_*/cases/law_*", f"Dataset{dataset_id:03d}_*"
    cached = []
    try:
        deadline = time.monotonic() + 300
        while not cached and time.monotonic() < deadline:
            assert process.poll() is None, "synthesis ended before it could be interrupted"
            assert not list(raw.glob(visible)), "a dataset appeared while its cases were being sampled"
            cached = list(raw.glob(cache_cases))
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert cached, "no synthetic case appeared in the cache"
    return sorted(p.name for p in raw.glob(cache_cases))


def test_interrupted_synthesis_resumes_to_the_uninterrupted_dataset(law_kvasir, kvasir_checkpoint, capsys):
    """A run killed once its first cases are cached shows no dataset, then or after; the same command again samples
    only the missing cases and writes, byte for byte, what one uninterrupted run writes."""
    num = 8
    argv = ["-d", "901", "-o", "916", "--num", str(num), "--steps", "50", "--seed", "3"]
    assert synthesize(*argv) == 0
    uninterrupted = dataset_snapshot(law_kvasir, 916)
    for root in (law_kvasir.folders["nnUNet_raw"], law_kvasir.folders["nnUNet_preprocessed"]):
        for folder in root.glob("Dataset916_*"):  # the id is free again, as before the first run
            shutil.rmtree(folder)
    capsys.readouterr()

    kept = kill_once_cached(argv, law_kvasir.env, law_kvasir.folders["nnUNet_raw"], 916)
    assert 0 < len(kept) < num
    assert not dataset_snapshot(law_kvasir, 916)  # nothing in nnUNet_raw or nnUNet_preprocessed after the kill

    assert synthesize(*argv) == 0
    assert f"{len(kept)} already cached, {num - len(kept)} to sample" in capsys.readouterr().out
    resumed = dataset_snapshot(law_kvasir, 916)
    assert sorted(resumed) == sorted(uninterrupted)
    assert [path for path in resumed if resumed[path] != uninterrupted[path]] == []
    assert not list(law_kvasir.folders["nnUNet_raw"].glob(".*"))  # cache, lock and the killed run's leftovers


def test_sharded_parts_equal_one_run(law_kvasir, kvasir_checkpoint, capsys):
    common = ["-d", 901, "--num", 5, "--steps", 3, "--seed", 7]
    assert synthesize(*common, "-o", 917, "--num-parts", 2, "--part-id", 1) == 0
    assert "still being sampled by the other parts" in capsys.readouterr().out
    assert not list(law_kvasir.folders["nnUNet_raw"].glob("Dataset917_*"))
    assert synthesize(*common, "-o", 917, "--num-parts", 2, "--part-id", 0) == 0
    assert synthesize(*common, "-o", 918) == 0
    sharded, single = dataset_folder(law_kvasir, 917), dataset_folder(law_kvasir, 918)
    files = sorted(p.relative_to(single) for p in single.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(sharded) for p in sharded.rglob("*") if p.is_file())
    for path in files:
        if path.name not in ("provenance.json", "dataset.json"):
            assert (sharded / path).read_bytes() == (single / path).read_bytes(), path
    provenance = [json.loads((f / "provenance.json").read_text()) for f in (sharded, single)]
    assert provenance[0]["cases"] == provenance[1]["cases"]


# ---------------------------------------------------------------------------------------------------------------
# nnU-Net trains on it with the written split


@pytest.mark.slow
def test_nnunet_preprocesses_and_trains_without_planning(law_kvasir, kvasir_law):
    """The printed workflow: nnUNetv2_preprocess with the transferred plans, then nnUNetv2_train of the plugin's
    configuration, with no nnUNetv2_plan_and_preprocess and no `nnunet-laworder plans` for the new dataset."""
    folder, _ = kvasir_law
    splits = json.loads((folder / "splits_final.json").read_text())
    env = law_kvasir.env
    preprocessed = law_kvasir.folders["nnUNet_preprocessed"] / folder.name
    plans = (preprocessed / "nnUNetPlans.json").read_text()
    run(["nnUNetv2_preprocess", "-d", "910", "-c", "2d", "-np", "1"], env)
    assert (preprocessed / "nnUNetPlans.json").read_text() == plans
    assert json.loads((preprocessed / "splits_final.json").read_text()) == splits
    trainer = "nnUNetTrainerORDER_smoke"
    # no augmentation worker processes to start (nnU-Net's single-threaded augmenter): faster on 2 cores
    run(["nnUNetv2_train", "910", "2d_order", "0", "-tr", trainer, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0"))
    fold = law_kvasir.folders["nnUNet_results"] / folder.name / f"{trainer}__nnUNetPlans__2d_order" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "Using splits from existing split file" in log
    assert (f"This split has {len(splits[0]['train'])} training and {len(splits[0]['val'])} validation cases"
            in log)
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
