"""``nnunet-laworder convert``: Kvasir-SEG, CVC-ClinicDB and KiTS19 to nnU-Net raw datasets, on small real subsets."""
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from nnunet_laworder.cli import main

KITS_TRAIN = ("case_00061", "case_00038")  # the two smallest volumes (29 and 32 slices of 512x512)
KITS_TEST = "case_00110"  # given imaging only: an official test case


def run_cli(capsys, *argv):
    """``nnunet-laworder`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def kvasir_subset(kvasir_dir, dest, n, skip=0):
    """``n`` real Kvasir-SEG pairs (sorted names, after the first ``skip``) copied into ``dest`` in the official
    layout; returns their stems."""
    names = sorted(p.name for p in (kvasir_dir / "images").glob("*.jpg"))[skip:skip + n]
    for folder in ("images", "masks"):
        (dest / folder).mkdir(parents=True)
        for name in names:
            shutil.copyfile(kvasir_dir / folder / name, dest / folder / name)
    return [name[:-4] for name in names]


def thresholded(mask_path):
    return (np.asarray(Image.open(mask_path).convert("L")) > 127).astype(np.uint8)


def verify_integrity(folder):
    """What ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs; raises when the dataset is bad."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(folder), num_processes=1)


def nothing_written(nnunet_dirs):
    """nnUNet_raw holds nothing at all, hidden staging folders included."""
    return list(nnunet_dirs["nnUNet_raw"].iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Kvasir-SEG


def test_kvasir_converts_to_a_valid_nnunet_dataset(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    stems = kvasir_subset(kvasir_dir, tmp_path / "kvasir", 8)
    test_list = tmp_path / "test.txt"
    test_list.write_text(f"# held out\n{stems[1]}\n\n{stems[5]}\n")

    code, out, _ = run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 101,
                           "--test-list", test_list, "--max-size", 96)
    assert code == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset101_KvasirSEG"
    assert str(folder) in out
    assert [p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()] == [folder.name]  # no staging left over

    training = sorted(set(stems) - {stems[1], stems[5]})
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"{s}_0000.png" for s in training]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{s}.png" for s in training]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"{stems[1]}_0000.png", f"{stems[5]}_0000.png"]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"{stems[1]}.png", f"{stems[5]}.png"]

    for split in ("Tr", "Ts"):
        for label_path in (folder / f"labels{split}").iterdir():
            image = Image.open(folder / f"images{split}" / f"{label_path.stem}_0000.png")
            label = Image.open(label_path)
            source = Image.open(kvasir_dir / "images" / f"{label_path.stem}.jpg")
            assert image.mode == "RGB" and label.mode == "L"
            assert image.size == label.size and max(image.size) == 96
            # the aspect ratio survives the downscaling (to the rounding of one pixel)
            assert abs(image.size[0] / image.size[1] - source.size[0] / source.size[1]) < 0.02
            values = np.asarray(label)
            assert set(np.unique(values).tolist()) == {0, 1}
            # the polyp keeps its share of the picture
            source_share = thresholded(kvasir_dir / "masks" / f"{label_path.stem}.jpg").mean()
            assert abs(values.mean() - source_share) < 0.02

    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert dataset["labels"] == {"background": 0, "polyp": 1}
    assert dataset["file_ending"] == ".png" and dataset["numTraining"] == 6
    report = json.loads((folder / "conversion_report.json").read_text())
    assert report["test_cases"] == [stems[1], stems[5]] and report["skipped_cases"] == {}
    verify_integrity(folder)


def test_test_split_is_added_to_an_existing_dataset(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    from nnunet_helpers import files_under

    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 3)
    test_stems = kvasir_subset(kvasir_dir, tmp_path / "test", 2, skip=3)
    assert run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 102, "--max-size", 64)[0] == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset102_KvasirSEG"
    training = files_under([folder / "imagesTr", folder / "labelsTr"])
    dataset_json = (folder / "dataset.json").read_bytes()
    add_test = ["convert", "kvasir-seg", tmp_path / "test", "-d", 102, "--max-size", 64, "--test-only"]

    code, out, _ = run_cli(capsys, *add_test)
    assert code == 0 and str(folder / "labelsTs") in out
    assert files_under([folder / "imagesTr", folder / "labelsTr"]) == training
    assert (folder / "dataset.json").read_bytes() == dataset_json
    assert sorted(p.name for p in folder.iterdir()) == ["conversion_report.json", "dataset.json", "imagesTr",
                                                        "imagesTs", "labelsTr", "labelsTs"]  # no staging left over
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"{s}_0000.png" for s in test_stems]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"{s}.png" for s in test_stems]
    for stem in test_stems:
        image = Image.open(folder / "imagesTs" / f"{stem}_0000.png")
        label = Image.open(folder / "labelsTs" / f"{stem}.png")
        assert image.mode == "RGB" and label.mode == "L" and image.size == label.size and max(image.size) == 64
        assert set(np.unique(np.asarray(label)).tolist()) == {0, 1}
    report = json.loads((folder / "conversion_report.json").read_text())
    assert report["test_cases"] == test_stems and len(report["training_cases"]) == 3

    # the split is replaced only on request, never by training cases, and only at the training cases' scale
    test_split = files_under([folder / "imagesTs", folder / "labelsTs"])
    code, _, err = run_cli(capsys, *add_test)
    assert code == 2 and "already has imagesTs and labelsTs" in err and "--overwrite" in err
    code, _, err = run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 102, "--max-size", 64,
                           "--test-only", "--overwrite")
    assert code == 2 and "3 test case(s) are training cases of Dataset102_KvasirSEG" in err
    code, _, err = run_cli(capsys, *add_test[:-2], 96, "--test-only", "--overwrite")
    assert code == 2 and "--max-size 64" in err
    code, _, err = run_cli(capsys, *add_test[:4], 104, *add_test[5:])
    assert code == 2 and "dataset 104 not found" in err
    assert files_under([folder / "imagesTs", folder / "labelsTs"]) == test_split
    for sub in ("images", "masks"):
        (tmp_path / "test" / sub / f"{test_stems[1]}.jpg").unlink()
    assert run_cli(capsys, *add_test, "--overwrite")[0] == 0
    assert [p.name for p in (folder / "labelsTs").iterdir()] == [f"{test_stems[0]}.png"]
    assert files_under([folder / "imagesTr", folder / "labelsTr"]) == training


def interrupt_after_one_case(monkeypatch) -> list:
    """Ctrl-C in the middle of writing: the converter's second case raises KeyboardInterrupt; returns the list of
    the cases written before it."""
    from nnunet_laworder.conversion import common
    written, write_pair = [], common.write_pair

    def write_then_interrupt(*args):
        if written:
            raise KeyboardInterrupt
        written.append(write_pair(*args))
    monkeypatch.setattr(common, "write_pair", write_then_interrupt)
    return written


def test_interrupted_test_split_leaves_none(kvasir_dir, nnunet_dirs, tmp_path, capsys, monkeypatch):
    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 1)
    kvasir_subset(kvasir_dir, tmp_path / "test", 2, skip=1)
    assert run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 103, "--max-size", 48)[0] == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset103_KvasirSEG"
    before = sorted(p.name for p in folder.iterdir())
    written = interrupt_after_one_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        main(["convert", "kvasir-seg", str(tmp_path / "test"), "-d", "103", "--max-size", "48", "--test-only"])
    assert written and sorted(p.name for p in folder.iterdir()) == before


def test_kvasir_full_size_is_lossless(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    (stem,) = kvasir_subset(kvasir_dir, tmp_path / "kvasir", 1)
    assert run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 7, "--name", "Polyps")[0] == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset007_Polyps"
    image = np.asarray(Image.open(folder / "imagesTr" / f"{stem}_0000.png"))
    source = np.asarray(Image.open(kvasir_dir / "images" / f"{stem}.jpg").convert("RGB"))
    assert np.array_equal(image, source)  # png keeps the decoded jpeg exactly
    label = np.asarray(Image.open(folder / "labelsTr" / f"{stem}.png"))
    assert np.array_equal(label, thresholded(kvasir_dir / "masks" / f"{stem}.jpg"))


def test_png_masks_are_accepted(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    stems = kvasir_subset(kvasir_dir, tmp_path / "kvasir", 2)
    for stem in stems:  # 0/1 png label maps, as some re-distributions ship them
        mask = tmp_path / "kvasir" / "masks" / f"{stem}.jpg"
        Image.fromarray(thresholded(mask)).save(mask.with_suffix(".png"))
        mask.unlink()
    assert run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 8, "--max-size", 64)[0] == 0
    for stem in stems:
        label = np.asarray(Image.open(nnunet_dirs["nnUNet_raw"] / "Dataset008_KvasirSEG" / "labelsTr" / f"{stem}.png"))
        assert set(np.unique(label).tolist()) == {0, 1}


# ---------------------------------------------------------------------------------------------------------------
# CVC-ClinicDB


def cvc_from_kvasir(kvasir_dir, dest, images, masks, suffix, n=3):
    """Real Kvasir pairs written as CVC-style numbered frames ``1<suffix>``... into ``dest/images``, ``dest/masks``."""
    (dest / images).mkdir(parents=True)
    (dest / masks).mkdir(parents=True)
    names = sorted(p.name for p in (kvasir_dir / "images").glob("*.jpg"))[:n]
    for number, name in enumerate(names, start=1):
        Image.open(kvasir_dir / "images" / name).save(dest / images / f"{number}{suffix}")
        Image.open(kvasir_dir / "masks" / name).save(dest / masks / f"{number}{suffix}")
    return names


def test_cvc_official_tif_layout(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    names = cvc_from_kvasir(kvasir_dir, tmp_path / "cvc", "Original", "Ground Truth", ".tif")
    test_list = tmp_path / "test.txt"
    test_list.write_text("3\n")  # the file stem, as for Kvasir
    code, out, _ = run_cli(capsys, "convert", "cvc-clinicdb", tmp_path / "cvc", "-d", 102, "--max-size", 80,
                           "--test-list", test_list)
    assert code == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset102_CVCClinicDB"
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["cvc_0001.png", "cvc_0002.png"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["cvc_0003_0000.png"]
    label = Image.open(folder / "labelsTr" / "cvc_0001.png")
    image = Image.open(folder / "imagesTr" / "cvc_0001_0000.png")
    assert image.mode == "RGB" and image.size == label.size and max(label.size) == 80
    assert set(np.unique(np.asarray(label)).tolist()) == {0, 1}
    source_share = thresholded(kvasir_dir / "masks" / names[0]).mean()
    assert abs(np.asarray(label).mean() - source_share) < 0.02
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 2


def test_cvc_png_images_masks_variant(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    cvc_from_kvasir(kvasir_dir, tmp_path / "cvc", "images", "masks", ".png", n=2)
    assert run_cli(capsys, "convert", "cvc-clinicdb", tmp_path / "cvc", "-d", 103, "--max-size", 64)[0] == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset103_CVCClinicDB"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["cvc_0001_0000.png", "cvc_0002_0000.png"]
    assert not (folder / "imagesTs").exists()


# ---------------------------------------------------------------------------------------------------------------
# KiTS19


@pytest.fixture(scope="module")
def ct_volumes(tmp_path_factory):
    """A stand-in ``imaging.nii.gz`` per real segmentation (the CT is not in the data): same shape and header."""
    folder = tmp_path_factory.mktemp("ct")
    made = {}

    def imaging_for(segmentation):
        if segmentation not in made:
            seg = nib.load(segmentation)
            ct = np.random.default_rng(0).integers(-1024, 1500, seg.shape, dtype=np.int16)
            image = nib.Nifti1Image(ct, seg.affine, seg.header.copy())
            image.set_data_dtype(np.int16)
            made[segmentation] = folder / f"{segmentation.parent.name}_imaging.nii.gz"
            nib.save(image, made[segmentation])
        return made[segmentation]
    return imaging_for


@pytest.fixture
def kits_src(kits19_labels_dir, ct_volumes, tmp_path):
    """Official layout: two training cases (real segmentations) and one test case with imaging only."""
    src = tmp_path / "kits19"
    for case in KITS_TRAIN + (KITS_TEST,):
        (src / case).mkdir(parents=True)
        segmentation = kits19_labels_dir / case / "segmentation.nii.gz"
        (src / case / "imaging.nii.gz").symlink_to(ct_volumes(segmentation))
        if case != KITS_TEST:
            (src / case / "segmentation.nii.gz").symlink_to(segmentation)
    return src


def test_kits19_converts_to_a_valid_region_dataset(kits_src, kits19_labels_dir, nnunet_dirs, capsys):
    code, out, _ = run_cli(capsys, "convert", "kits19", kits_src, "-d", 64)
    assert code == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset064_KiTS19"
    assert str(folder) in out
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in KITS_TRAIN)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"{KITS_TEST}_0000.nii.gz"]
    assert not (folder / "labelsTs").exists()
    for case in KITS_TRAIN:  # byte for byte: no re-encoding, the geometry cannot change
        assert (folder / "labelsTr" / f"{case}.nii.gz").read_bytes() == \
            (kits19_labels_dir / case / "segmentation.nii.gz").read_bytes()
        assert (folder / "imagesTr" / f"{case}_0000.nii.gz").read_bytes() == \
            (kits_src / case / "imaging.nii.gz").read_bytes()

    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}
    assert dataset["labels"] == {"background": 0, "kidney": [1, 2], "tumor": 2}
    assert dataset["regions_class_order"] == [1, 2]
    assert dataset["file_ending"] == ".nii.gz" and dataset["numTraining"] == 2
    verify_integrity(folder)


def test_kits19_segmentation_without_imaging(kits_src, kits19_labels_dir, nnunet_dirs, capsys):
    orphan = "case_00021"
    (kits_src / orphan).mkdir()
    (kits_src / orphan / "segmentation.nii.gz").symlink_to(kits19_labels_dir / orphan / "segmentation.nii.gz")

    code, _, err = run_cli(capsys, "convert", "kits19", kits_src, "-d", 64)
    assert code == 2 and orphan in err and "--allow-missing-imaging" in err
    assert nothing_written(nnunet_dirs)

    code, out, _ = run_cli(capsys, "convert", "kits19", kits_src, "-d", 64, "--allow-missing-imaging")
    assert code == 0 and orphan in out  # never silently dropped
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset064_KiTS19"
    report = json.loads((folder / "conversion_report.json").read_text())
    assert list(report["skipped_cases"]) == [orphan]
    assert sorted(report["training_cases"]) == sorted(KITS_TRAIN) and report["test_cases"] == [KITS_TEST]
    assert not (folder / "labelsTr" / f"{orphan}.nii.gz").exists()


def small_volume(path, data, affine=np.eye(4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


def test_kits19_repository_layout(nnunet_dirs, tmp_path, capsys):
    """The kits19 git repository keeps its cases under ``data/``."""
    seg = np.zeros((4, 8, 8), np.uint8)
    seg[1, 2:4, 2:4] = 1
    small_volume(tmp_path / "kits19" / "data" / "case_00001" / "segmentation.nii.gz", seg)
    small_volume(tmp_path / "kits19" / "data" / "case_00001" / "imaging.nii.gz", np.zeros((4, 8, 8), np.int16))
    assert run_cli(capsys, "convert", "kits19", tmp_path / "kits19", "-d", 66)[0] == 0
    assert (nnunet_dirs["nnUNet_raw"] / "Dataset066_KiTS19" / "labelsTr" / "case_00001.nii.gz").is_file()


@pytest.mark.parametrize("problem, expected", [
    ("shape", "shape"),
    ("affine", "affine"),
    ("labels", "unexpected label values [3]"),
])
def test_kits19_geometry_and_labels_are_checked(problem, expected, nnunet_dirs, tmp_path, capsys):
    case = tmp_path / "kits19" / "case_00001"
    seg = np.zeros((4, 8, 8), np.uint8)
    seg[1, 2:4, 2:4] = 3 if problem == "labels" else 2
    small_volume(case / "segmentation.nii.gz", seg)
    shape = (4, 8, 9) if problem == "shape" else (4, 8, 8)
    affine = np.diag([2.0, 1, 1, 1]) if problem == "affine" else np.eye(4)
    small_volume(case / "imaging.nii.gz", np.zeros(shape, np.int16), affine)

    code, _, err = run_cli(capsys, "convert", "kits19", tmp_path / "kits19", "-d", 65)
    assert code == 2 and str(case / "segmentation.nii.gz") in err and expected in err
    assert nothing_written(nnunet_dirs)


# ---------------------------------------------------------------------------------------------------------------
# bad input: a clear error naming the file, and nothing written


def _remove_masks(src, stems):
    shutil.rmtree(src / "masks")
    return "masks"


def _image_without_mask(src, stems):
    (src / "masks" / f"{stems[1]}.jpg").unlink()
    return f"{stems[1]}.jpg"


def _mask_without_image(src, stems):
    (src / "images" / f"{stems[2]}.jpg").unlink()
    return f"{stems[2]}.jpg"


def _size_mismatch(src, stems):
    mask = src / "masks" / f"{stems[0]}.jpg"
    Image.open(mask).resize((50, 40)).save(mask)
    return f"{stems[0]}.jpg"


def _garbage_bytes(src, stems):
    (src / "images" / f"{stems[1]}.jpg").write_bytes(b"\x00not an image at all" * 50)
    return f"{stems[1]}.jpg"


def _truncated_jpeg(src, stems):
    image = src / "images" / f"{stems[2]}.jpg"
    image.write_bytes(image.read_bytes()[:3000])
    return f"{stems[2]}.jpg"


def _photo_as_mask(src, stems):
    shutil.copyfile(src / "images" / f"{stems[0]}.jpg", src / "masks" / f"{stems[0]}.jpg")
    return "not a binary mask"


def _unknown_test_case(src, stems):
    (src / "test.txt").write_text(f"{stems[0]}\nno_such_case\n")
    return "no_such_case"


@pytest.mark.parametrize("spoil", [_remove_masks, _image_without_mask, _mask_without_image, _size_mismatch,
                                   _garbage_bytes, _truncated_jpeg, _photo_as_mask, _unknown_test_case])
def test_bad_input_is_refused_and_nothing_written(spoil, kvasir_dir, nnunet_dirs, tmp_path, capsys):
    src = tmp_path / "kvasir"
    stems = kvasir_subset(kvasir_dir, src, 3)
    expected = spoil(src, stems)
    options = ["--test-list", src / "test.txt"] if (src / "test.txt").exists() else []
    code, _, err = run_cli(capsys, "convert", "kvasir-seg", src, "-d", 200, "--max-size", 64, *options)
    assert code == 2
    assert expected in err
    if spoil is _photo_as_mask:
        assert f"{stems[0]}.jpg" in err
    assert nothing_written(nnunet_dirs)


def test_existing_dataset_id_needs_overwrite(kvasir_dir, nnunet_dirs, tmp_path, capsys):
    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 2)
    old = nnunet_dirs["nnUNet_raw"] / "Dataset300_Other"  # same id, other name: nnU-Net would not tell them apart
    old.mkdir()
    (old / "keep.txt").write_text("old")

    code, _, err = run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 300, "--max-size", 64)
    assert code == 2 and "Dataset300_Other" in err and "--overwrite" in err
    assert (old / "keep.txt").read_text() == "old"
    assert [p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()] == ["Dataset300_Other"]

    code, _, _ = run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 300, "--max-size", 64,
                         "--overwrite")
    assert code == 0
    assert [p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()] == ["Dataset300_KvasirSEG"]
    assert len(list((nnunet_dirs["nnUNet_raw"] / "Dataset300_KvasirSEG" / "labelsTr").iterdir())) == 2


def test_unset_nnunet_raw_is_a_clear_error(kvasir_dir, nnunet_dirs, tmp_path, capsys, monkeypatch):
    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 1)
    monkeypatch.delenv("nnUNet_raw")
    code, _, err = run_cli(capsys, "convert", "kvasir-seg", tmp_path / "kvasir", "-d", 1)
    assert code == 2 and "nnUNet_raw" in err


def test_interrupted_run_leaves_no_dataset(kvasir_dir, nnunet_dirs, tmp_path, capsys, monkeypatch):
    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 3)
    written = interrupt_after_one_case(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        main(["convert", "kvasir-seg", str(tmp_path / "kvasir"), "-d", "9", "--max-size", "64"])
    assert written and nothing_written(nnunet_dirs)


def test_console_script(kvasir_dir, nnunet_dirs, tmp_path):
    script = shutil.which("nnunet-laworder")
    if script is None:
        pytest.skip("the nnunet-laworder console script is not installed")
    kvasir_subset(kvasir_dir, tmp_path / "kvasir", 2)
    done = subprocess.run([script, "convert", "kvasir-seg", str(tmp_path / "kvasir"), "-d", "5", "--max-size", "48"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (nnunet_dirs["nnUNet_raw"] / "Dataset005_KvasirSEG" / "dataset.json").is_file()
    done = subprocess.run([script, "convert", "kvasir-seg", str(tmp_path / "kvasir"), "-d", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "already exists" in done.stderr
