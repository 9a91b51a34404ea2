"""The last step of ``law synthesize``, :func:`~nnunet_laworder.law.dataset_assembly.assemble`, on a hand-made
dataset (a few 8x8 png cases, hand-written plans, two cached synthetic cases): no real data, no generator, about a
second. The whole command, on real data, is in test_law_synthesis.py."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnunet_helpers import tiny_2d_plans
from nnunet_laworder.conversion.common import DatasetTarget, write_dataset_json
from nnunet_laworder.errors import InputError
from nnunet_laworder.law.case_cache import CaseCache
from nnunet_laworder.law.dataset_assembly import assemble
from nnunet_laworder.law.provenance import case_id
from nnunet_laworder.nnunet_folders import save_json_atomic

SOURCE, NEW_ID, NEW_NAME = "Dataset951_Tiny", 952, "TinyLAW"
REAL_CASES = [f"case_{i}" for i in range(4)]
REAL_SPLITS = [{"train": REAL_CASES[2:], "val": REAL_CASES[:2]}, {"train": REAL_CASES[:2], "val": REAL_CASES[2:]}]
PROVENANCE = {"source_dataset": SOURCE, "source_dataset_id": 951, "generator_fold": 0, "configuration": "2d",
              "layout": {"slice_axis": None}}


def _write_case(images: Path, labels: Path, case: str, value: int) -> None:
    image = np.full((8, 8), value, np.uint8)
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 1
    Image.fromarray(image).save(images / f"{case}_0000.png")
    Image.fromarray(label).save(labels / f"{case}.png")


@pytest.fixture
def source(nnunet_dirs):
    """``(raw folder, dataset.json, plans file)`` of a planned 4-case png dataset, as nnU-Net leaves them."""
    plans, dataset_json = tiny_2d_plans({"network_class_name": "unused", "_kw_requires_import": [],
                                         "arch_kwargs": {}})
    dataset_json = dict(dataset_json, file_ending=".png", numTraining=len(REAL_CASES))
    raw = nnunet_dirs["nnUNet_raw"] / SOURCE
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for i, case in enumerate(REAL_CASES):
        _write_case(raw / "imagesTr", raw / "labelsTr", case, 40 * i)
    write_dataset_json(raw, len(REAL_CASES), channel_names=dataset_json["channel_names"],
                       labels=dataset_json["labels"], file_ending=".png")
    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / SOURCE
    preprocessed.mkdir()
    save_json_atomic(dict(plans, dataset_name=SOURCE, image_reader_writer="NaturalImage2DIO"),
                     preprocessed / "nnUNetPlans.json")
    save_json_atomic({"spacings": [[1.0, 1.0]] * len(REAL_CASES)}, preprocessed / "dataset_fingerprint.json")
    return raw, json.loads((raw / "dataset.json").read_text()), preprocessed / "nnUNetPlans.json"


def _cache(target: DatasetTarget, num: int, key: int = 0) -> CaseCache:
    """``num`` finished synthetic cases in the cache, as sampling leaves them."""
    cache = CaseCache(target, {"test": key})
    cache.create()
    for i in range(num):
        folder = cache.new_case(i)
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True)
        _write_case(folder / "imagesTr", folder / "labelsTr", case_id(i), 200 + i + key)
        cache.commit(i, folder, {"case": case_id(i), "source_case": REAL_CASES[i % len(REAL_CASES)]})
    return cache


def _assemble(target: DatasetTarget, cache: CaseCache, num: int, source) -> None:
    raw, dataset_json, plans = source
    assemble(target, cache, num, raw, dataset_json, len(REAL_CASES), REAL_SPLITS, PROVENANCE, plans, progress=False)


def _assert_complete(nnunet_dirs, source, num: int) -> None:
    """The new raw dataset holds every case, its preprocessed folder the source's plans (but for dataset_name), the
    fingerprint, dataset.json and the same splits; nothing hidden is left in either root."""
    folder = nnunet_dirs["nnUNet_raw"] / f"Dataset{NEW_ID}_{NEW_NAME}"
    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / folder.name
    cases = REAL_CASES + [case_id(i) for i in range(num)]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{c}.png" for c in cases]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"{c}_0000.png" for c in cases]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == len(cases)
    assert sorted(json.loads((folder / "provenance.json").read_text())["cases"]) == cases[len(REAL_CASES):]
    splits = json.loads((folder / "splits_final.json").read_text())
    assert [{"train": [c for c in fold["train"] if c in REAL_CASES], "val": fold["val"]} for fold in splits] == \
        REAL_SPLITS  # the real folds kept, synthetic cases training-only (the split itself: test_law_synthesis.py)
    source_plans = json.loads(source[2].read_text())
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans == dict(source_plans, dataset_name=folder.name)
    assert json.loads((preprocessed / "splits_final.json").read_text()) == splits
    assert (preprocessed / "dataset.json").read_bytes() == (folder / "dataset.json").read_bytes()
    assert (preprocessed / "dataset_fingerprint.json").read_bytes() == \
        (source[2].parent / "dataset_fingerprint.json").read_bytes()
    for root in (nnunet_dirs["nnUNet_raw"], nnunet_dirs["nnUNet_preprocessed"]):
        assert not list(root.glob(".*")), "a cache, lock, staging or replaced folder was left behind"


def test_interrupted_before_publishing_leaves_no_dataset_and_resumes(nnunet_dirs, source, monkeypatch, tmp_path):
    """Plans and splits are in place before the raw dataset appears; an interruption right then leaves no raw
    DatasetNEW (and puts the preprocessed folder back), and the same call again completes it without --overwrite,
    also when a process killed outright left the new plans and its staging folders behind."""
    target = DatasetTarget.resolve(NEW_ID, NEW_NAME, overwrite=False)
    cache = _cache(target, 2)
    raw_root, preprocessed_root = nnunet_dirs["nnUNet_raw"], nnunet_dirs["nnUNet_preprocessed"]
    killed = tmp_path / "left_by_a_killed_run"

    def interrupted_publish(self, staging):
        preprocessed = preprocessed_root / self.path.name
        assert json.loads((preprocessed / "nnUNetPlans.json").read_text())["dataset_name"] == self.path.name
        assert (preprocessed / "splits_final.json").is_file()
        shutil.copytree(preprocessed, killed)  # what a SIGKILL at this point would leave
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(DatasetTarget, "_publish", interrupted_publish)
        with pytest.raises(KeyboardInterrupt):
            _assemble(target, cache, 2, source)
    assert killed.is_dir()
    assert not list(raw_root.glob(f"Dataset{NEW_ID}_*")), "a raw dataset appeared although the run was interrupted"
    assert not list(preprocessed_root.glob(f"Dataset{NEW_ID}_*"))  # no plans of a dataset that is not there
    assert cache.exists() and not list(raw_root.glob(".*.partial-*")) and not list(raw_root.glob(".*.lock"))

    # as a SIGKILL would have left it: the new plans and both staging folders
    shutil.copytree(killed, preprocessed_root / target.path.name)
    for root in (raw_root, preprocessed_root):
        (root / f".{target.path.name}.partial-deadbeef").mkdir()
    rerun = DatasetTarget.resolve(NEW_ID, NEW_NAME, overwrite=False)  # what the command checks first
    _assemble(rerun, cache, 2, source)
    _assert_complete(nnunet_dirs, source, 2)


def test_overwrite_replaces_raw_and_preprocessed(nnunet_dirs, source):
    target = DatasetTarget.resolve(NEW_ID, NEW_NAME, overwrite=False)
    _assemble(target, _cache(target, 3), 3, source)
    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / target.path.name
    (preprocessed / "tiny_2d").mkdir()  # data nnUNetv2_preprocess made from the replaced dataset
    (preprocessed / "tiny_2d" / "law_00002.b2nd").write_bytes(b"old")
    with pytest.raises(InputError, match="pass --overwrite"):
        DatasetTarget.resolve(NEW_ID, NEW_NAME, overwrite=False)
    target = DatasetTarget.resolve(NEW_ID, NEW_NAME, overwrite=True)
    _assemble(target, _cache(target, 1, key=1), 1, source)
    _assert_complete(nnunet_dirs, source, 1)
    assert not (preprocessed / "tiny_2d").exists()
