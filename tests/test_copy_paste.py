"""Copy-paste (training/copy_paste.py) and synthetic cases drawn with a probability (training/synthetic_mix.py), and
their trainers (training/data_trainers.py), on small real arrays: Kvasir-SEG pairs (2D, RGB) at 48-64 px and KiTS19
label volumes (3D; the data folder has no CT, so a case's image is its labels plus noise). Fast: no training; the
trainers run nnU-Net's own data loading and augmentation on a tiny preprocessed dataset written here.

* the transform: exact labels and a soft edge on the image, never over a lesion or the data loader's padding, 2D and
  3D, KiTS tumours into the kidney, p = 0 changes nothing (and draws nothing), p = 1 always pastes, seeded runs equal,
  never a case's own lesion;
* the trainers: a validation case's lesion never reaches a training batch (while one put in the bank would show),
  p = 0 gives the batches of the trainer without copy-paste, synthetic cases drawn at about p through nnU-Net's
  loader, a synthetic validation case refused, a bad p or a dataset without provenance.json refused when the
  trainer is made.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
from PIL import Image

from nnunet_helpers import tiny_2d_plans
from nnunet_laworder.conversion.common import Pair, fit_size, load_pair
from nnunet_laworder.errors import InputError
from nnunet_laworder.training.copy_paste import CopyPasteTransform, HostTracking, Paste, collect_lesions
from nnunet_laworder.training.data_trainers import (
    COPY_PASTE_VARIABLE, SYNTHETIC_VARIABLE, nnUNetTrainer_smoke_copypaste, nnUNetTrainer_smoke_synthmix,
    nnUNetTrainer_smoke_synthmix_copypaste, nnUNetTrainerORDER_cpu_copypaste, nnUNetTrainerORDER_cpu_synthmix)
from nnunet_laworder.training.order_trainers import nnUNetTrainer_smoke, seed_everything
from nnunet_laworder.training.synthetic_mix import SyntheticMix

KITS_CASES = ("case_00015", "case_00021", "case_00038", "case_00061")
MARKER = 100.0  # an image value that z-scored real images never reach


class ArrayCases:
    """Cases in memory as nnU-Net's dataset gives them: ``load_case`` -> (data, seg, seg_prev, properties)."""

    def __init__(self, cases: dict):
        self.cases = cases
        self.identifiers = sorted(cases)

    def load_case(self, case):
        data, seg = self.cases[case]
        return data, seg, None, {}


def kvasir_cases(kvasir_dir: Path, count: int, size: int = 64, start: int = 0) -> dict:
    """Real Kvasir-SEG pairs as nnU-Net stores 2D cases: (3, 1, y, x) z-scored image, (1, 1, y, x) 0/1 labels."""
    names = sorted(p.stem for p in (kvasir_dir / "images").glob("*.jpg"))[start:start + count]
    cases = {}
    for name in names:
        image, mask = load_pair(Pair(name, name, kvasir_dir / "images" / f"{name}.jpg",
                                     kvasir_dir / "masks" / f"{name}.jpg"))
        shape = fit_size(image.size, size)
        pixels = np.asarray(image.resize(shape, Image.Resampling.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
        labels = np.asarray(Image.fromarray(mask).resize(shape, Image.Resampling.NEAREST), dtype=np.int16)
        cases[name] = (((pixels - pixels.mean()) / pixels.std())[:, None], labels[None, None])
    return cases


def kits_cases(kits19_labels_dir: Path) -> dict:
    """Real KiTS19 label volumes (0 background, 1 kidney, 2 tumour), every 4th voxel in plane, cropped to the
    kidneys; the image is the labels plus noise (the CT is not in the data folder)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    cases = {}
    for case in KITS_CASES:
        seg = np.asarray(nib.load(kits19_labels_dir / case / "segmentation.nii.gz").dataobj)[:, ::4, ::4]
        box = tuple(slice(max(0, a.min() - 4), a.max() + 5) for a in np.nonzero(seg))
        seg = seg[box].astype(np.int16)
        image = seg.astype(np.float32) + rng.normal(0, 0.3, seg.shape).astype(np.float32)
        cases[case] = (image[None], seg[None])
    return cases


def sample(data: np.ndarray, seg: np.ndarray, border: int, slice_wise: bool = False) -> dict:
    """What nnU-Net's data loader gives a transform: the case in a larger patch, padded with image 0 and label -1."""
    if slice_wise:
        data, seg = data[:, 0], seg[:, 0]
    padding = [(0, 0)] + [(border, border)] * (seg.ndim - 1)
    return {"image": torch.from_numpy(np.pad(data, padding)).float(),
            "segmentation": torch.from_numpy(np.pad(seg, padding, constant_values=-1))}


def transform(bank, probability=1.0, patch_size=(64, 64), rotation=(-np.pi, np.pi)) -> CopyPasteTransform:
    copy_paste = CopyPasteTransform(probability, patch_size, rotation, tuple(range(len(patch_size))), False)
    copy_paste.bank = bank
    return copy_paste


def pasted(copy_paste: CopyPasteTransform, data: dict, host: str = None):
    """The sample after ``copy_paste`` and the paste it drew (None: nothing pasted)."""
    copy_paste.host = host
    params = copy_paste.get_parameters(**data)
    before = {key: value.clone() for key, value in data.items()}
    return copy_paste.apply(before, **params), params["paste"]


@pytest.fixture(scope="module")
def kvasir():
    from conftest import require_data

    return kvasir_cases(require_data("kvasir-seg"), 10)


@pytest.fixture(scope="module")
def kits():
    from conftest import require_data

    return kits_cases(require_data("kits19-labels"))


def test_labels_exact_and_image_edges_soft(kvasir):
    bank = collect_lesions(ArrayCases(kvasir), 1, (64, 64))
    assert bank.lesions and bank.organ_label is None and {lesion.case for lesion in bank.lesions} <= set(kvasir)
    np.random.seed(0)
    copy_paste = transform(bank)
    for host, (data, seg) in kvasir.items():
        before = sample(data, seg, 12, slice_wise=True)
        after, paste = pasted(copy_paste, before, host)
        assert isinstance(paste, Paste)
        # the label: the lesion's exactly where the jittered mask is on, nothing else changed
        changed = after["segmentation"] != before["segmentation"]
        expected = torch.zeros_like(changed)
        expected[0][paste.box] = torch.from_numpy(paste.mask)
        assert torch.equal(changed, expected) and torch.all(after["segmentation"][expected] == 1)
        # the image: the lesion blended in through the blurred mask inside its box, untouched outside it
        box = (slice(None), *paste.box)
        alpha = torch.from_numpy(paste.alpha)
        blend = (1 - alpha) * before["image"][box] + alpha * torch.from_numpy(paste.image)
        assert torch.allclose(after["image"][box], blend, atol=1e-5)
        outside = torch.ones_like(after["image"], dtype=torch.bool)
        outside[box] = False
        assert torch.equal(after["image"][outside], before["image"][outside])
        # soft edge: the lesion's weight falls off across the mask's border, reaching the unlabelled image around it
        mask = torch.from_numpy(paste.mask)
        assert alpha[~mask].max() > 0 and alpha[mask].min() < 1 and alpha[~mask].mean() < 0.5 < alpha[mask].mean()


@pytest.mark.parametrize("dims", [2, 3])
def test_pastes_never_cover_a_lesion_or_padding(dims, kvasir, kits):
    cases, patch = (kvasir, (64, 64)) if dims == 2 else (kits, (32, 48, 48))
    label = 1 if dims == 2 else 2
    bank = collect_lesions(ArrayCases(cases), label, patch)
    assert all(lesion.mask.ndim == dims and lesion.image.ndim == dims + 1 for lesion in bank.lesions)
    np.random.seed(1)
    copy_paste = transform(bank, patch_size=patch, rotation=(-np.pi / 6, np.pi / 6))
    pastes = 0
    for host, (data, seg) in cases.items():
        for _ in range(3):
            before = sample(data, seg, 8, slice_wise=dims == 2)
            after, paste = pasted(copy_paste, before, host)
            lesion, padding = before["segmentation"] == label, before["segmentation"] < 0
            assert torch.equal(after["segmentation"][lesion | padding], before["segmentation"][lesion | padding])
            assert after["image"].shape == before["image"].shape
            pastes += paste is not None
            if paste is not None:
                centre = [s.start + n // 2 for s, n in zip(paste.box, paste.mask.shape)]
                middle = [(n - p) // 2 for n, p in zip(before["segmentation"].shape[1:], patch)]
                assert all(m <= c < m + p for c, m, p in zip(centre, middle, patch))  # in the network's patch
    assert pastes >= 2 * len(cases)


def test_kits_tumours_go_into_the_kidney(kits):
    bank = collect_lesions(ArrayCases(kits), 2, (32, 48, 48))
    assert bank.organ_label == 1  # the kidney borders most tumours
    np.random.seed(2)
    copy_paste = transform(bank, patch_size=(32, 48, 48), rotation=(-np.pi / 6, np.pi / 6))
    for host, (data, seg) in kits.items():
        before = sample(data, seg, 4)
        for _ in range(3):
            after, paste = pasted(copy_paste, before, host)
            centre = tuple(s.start + n // 2 for s, n in zip(paste.box, paste.mask.shape))
            assert before["segmentation"][(0, *centre)] == 1
    # a patch without kidney still gets a tumour, anywhere free
    data, seg = kits[KITS_CASES[0]]
    empty = sample(np.zeros_like(data), np.zeros_like(seg), 4)
    after, paste = pasted(copy_paste, empty, KITS_CASES[0])
    assert paste is not None and (after["segmentation"] == 2).sum() == paste.mask.sum()


def test_slice_by_slice_configurations_jitter_in_plane(kits):
    """Where nnU-Net augments a 3D configuration slice by slice (do_dummy_2d_data_aug), so does the jitter: a lesion
    keeps its slices (up to one a scaling empties), while a 3D rotation spreads it over others."""
    bank = collect_lesions(ArrayCases(kits), 2, (32, 48, 48))
    in_plane = CopyPasteTransform(1.0, (32, 48, 48), (-np.pi, np.pi), (1, 2), True)
    everywhere = CopyPasteTransform(1.0, (32, 48, 48), (-np.pi / 6, np.pi / 6), (1, 2), False)
    np.random.seed(6)
    spread = 0
    for lesion in bank.lesions * 5:
        depth = np.count_nonzero(lesion.mask.any(axis=(1, 2)))
        assert depth - 1 <= np.count_nonzero(in_plane.jitter(lesion)[1].any(axis=(1, 2))) <= depth
        spread += np.count_nonzero(everywhere.jitter(lesion)[1].any(axis=(1, 2))) > depth
    assert spread > 0


def test_2d_patches_of_3d_cases_take_lesions_slice_by_slice(kits):
    data, seg = kits[KITS_CASES[1]]
    bank = collect_lesions(ArrayCases({"case": (data, seg)}), 2, (48, 48))
    tumour_slices = int(np.count_nonzero((seg[0] == 2).any(axis=(1, 2))))
    assert all(lesion.mask.ndim == 2 for lesion in bank.lesions)
    assert 0 < len(bank.lesions) <= 3 * tumour_slices


def test_probability_zero_changes_nothing_one_always_pastes(kvasir):
    bank = collect_lesions(ArrayCases(kvasir), 1, (64, 64))
    np.random.seed(3)
    state = np.random.get_state()[1].copy()
    for host, (data, seg) in kvasir.items():
        before = sample(data, seg, 12, slice_wise=True)
        after, paste = pasted(transform(bank, probability=0.0), before, host)
        assert paste is None and all(torch.equal(after[key], before[key]) for key in before)
    assert np.array_equal(np.random.get_state()[1], state)  # p = 0 draws nothing: the run without copy-paste
    for _ in range(3):
        for host, (data, seg) in kvasir.items():
            before = sample(data, seg, 12, slice_wise=True)
            after, _ = pasted(transform(bank), before, host)
            assert (after["segmentation"] == 1).sum() > (before["segmentation"] == 1).sum(), host


def test_seeded_pastes_are_reproducible(kvasir):
    bank = collect_lesions(ArrayCases(kvasir), 1, (64, 64))
    data, seg = next(iter(kvasir.values()))

    def run(seed):
        np.random.seed(seed)
        torch.manual_seed(seed)
        copy_paste = transform(bank, probability=0.8)
        return [pasted(copy_paste, sample(data, seg, 12, slice_wise=True))[0] for _ in range(6)]

    first, second, other = run(7), run(7), run(8)
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["segmentation"], b["segmentation"])
               for a, b in zip(first, second))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_a_case_never_gets_its_own_lesion(kvasir):
    first, second = sorted(kvasir, key=lambda case: np.count_nonzero(kvasir[case][1] == 1))[:2]  # smallest polyps
    two = {case: kvasir[case] for case in (first, second)}
    marked = {first: two[first], second: (np.full_like(two[second][0], MARKER), two[second][1])}
    bank = collect_lesions(ArrayCases(marked), 1, (64, 64))
    copy_paste = transform(bank)
    tracking = HostTracking(ArrayCases(marked), copy_paste)
    np.random.seed(4)
    for host in (first, second) * 4:
        data, seg, _, _ = tracking.load_case(host)
        after, paste = pasted(copy_paste, sample(data, seg, 12, slice_wise=True), copy_paste.host)
        assert paste is not None and (paste.image.max() > MARKER / 2) == (host == first)


# the trainers, on a tiny preprocessed dataset of real Kvasir-SEG cases (nnU-Net's numpy format)

def write_dataset(nnunet_dirs: dict, cases: dict, splits: list, synthetic=()) -> tuple:
    """``(plans, dataset_json)`` of Dataset999_Tiny (2d, 48 px patch, RGB) whose preprocessed cases are ``cases``
    and whose splits_final.json is ``splits``; ``synthetic``: the cases provenance.json lists (none: no file)."""
    plans, dataset_json = tiny_2d_plans({"network_class_name": "unused", "_kw_requires_import": [],
                                         "arch_kwargs": {"strides": [[1, 1], [2, 2]]}}, (48, 48))
    dataset_json["channel_names"] = {"0": "R", "1": "G", "2": "B"}
    preprocessed = nnunet_dirs["nnUNet_preprocessed"] / plans["dataset_name"]
    (preprocessed / "tiny_2d").mkdir(parents=True)
    for case, (data, seg) in cases.items():
        properties = {"class_locations": {1: np.argwhere(seg == 1)}}
        nnUNetDatasetNumpy.save_case(data, seg, properties, str(preprocessed / "tiny_2d" / case))
    (preprocessed / "splits_final.json").write_text(json.dumps(splits))
    raw = nnunet_dirs["nnUNet_raw"] / plans["dataset_name"]
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    if synthetic:
        (raw / "provenance.json").write_text(json.dumps({"cases": {case: {"case": case, "source_case": "x"}
                                                                   for case in synthetic}}))
    return plans, dataset_json


def training_batches(trainer, count: int) -> list:
    trainer.batch_size = 2  # nnU-Net's initialize() sets it, with the network these tests never build
    training, _ = trainer.get_dataloaders()
    return [next(training)["data"] for _ in range(count)]


@pytest.fixture(scope="module")
def small_kvasir():
    from conftest import require_data

    return kvasir_cases(require_data("kvasir-seg"), 8, size=48, start=20)


def test_no_validation_lesion_reaches_a_training_batch(small_kvasir, nnunet_dirs, monkeypatch):
    names = sorted(small_kvasir)
    validation = names[:2]
    # validation images carry the marker: any of their pixels in a training batch would show
    cases = {case: (np.full_like(data, MARKER) if case in validation else data, seg)
             for case, (data, seg) in small_kvasir.items()}
    plans, dataset_json = write_dataset(nnunet_dirs, cases, [{"train": names[2:], "val": validation}])
    monkeypatch.setenv(COPY_PASTE_VARIABLE, "1")
    trainer = nnUNetTrainer_smoke_copypaste(plans, "2d", 0, dataset_json, torch.device("cpu"))
    batches = training_batches(trainer, 12)
    assert {lesion.case for lesion in trainer.copy_paste.bank.lesions} <= set(names[2:])
    assert max(batch.max().item() for batch in batches) < MARKER / 4
    log = open(trainer.log_file).read()
    assert "copy-paste probability: 1.0" in log and "LesionBank(6 lesions of label 1 from 6 cases" in log
    assert len(str(trainer.copy_paste)) < 1000  # nnU-Net's debug.json prints the training transforms
    # the check has teeth: validation lesions put in the bank do reach the batches
    training, _ = trainer.get_dataloaders()
    _, validation_cases = trainer.get_tr_and_val_datasets()
    trainer.copy_paste.bank = collect_lesions(validation_cases, 1, (48, 48))
    assert max(next(training)["data"].max().item() for _ in range(6)) > MARKER / 4


def test_probability_zero_trains_on_the_batches_of_the_trainer_without_copy_paste(small_kvasir, nnunet_dirs,
                                                                                  monkeypatch):
    names = sorted(small_kvasir)
    plans, dataset_json = write_dataset(nnunet_dirs, small_kvasir, [{"train": names[2:], "val": names[:2]}])
    monkeypatch.setenv(COPY_PASTE_VARIABLE, "0")
    runs = []
    for trainer_class in (nnUNetTrainer_smoke, nnUNetTrainer_smoke_copypaste):
        trainer = trainer_class(copy.deepcopy(plans), "2d", 0, dataset_json, torch.device("cpu"))  # nnU-Net edits plans
        seed_everything(trainer.run_seed)
        runs.append(training_batches(trainer, 4))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_synthetic_cases_are_drawn_with_probability_p(small_kvasir, nnunet_dirs, monkeypatch):
    names = sorted(small_kvasir)
    # two synthetic cases (marked) and six real ones, of which two are validation cases
    synthetic = {f"law_{i:05d}": (np.full_like(small_kvasir[name][0], MARKER), small_kvasir[name][1])
                 for i, name in enumerate(names[:2])}
    cases = {**small_kvasir, **synthetic}
    real_training = names[2:6]
    plans, dataset_json = write_dataset(nnunet_dirs, cases, [{"train": real_training + sorted(synthetic),
                                                              "val": names[6:]}], synthetic=sorted(synthetic))
    monkeypatch.setenv(SYNTHETIC_VARIABLE, "0.25")
    trainer = nnUNetTrainer_smoke_synthmix(plans, "2d", 0, dataset_json, torch.device("cpu"))
    batches = training_batches(trainer, 40)
    fraction = np.mean([sample.mean().item() > MARKER / 4 for batch in batches for sample in batch])
    assert abs(fraction - 0.25) < 0.12, fraction
    # the view the loader draws from: the real training cases; each load is synthetic with probability p
    mix, _ = trainer.get_tr_and_val_datasets()
    assert isinstance(mix, SyntheticMix) and mix.identifiers == real_training

    class Recorder:
        identifiers = real_training + sorted(synthetic)

        def __init__(self):
            self.loaded = []

        def load_case(self, case):
            self.loaded.append(case)

    np.random.seed(5)
    recorder = Recorder()
    view = SyntheticMix(recorder, sorted(synthetic), 0.4)
    for case in np.random.choice(view.identifiers, 4000):
        view.load_case(case)
    drawn = np.mean([case in synthetic for case in recorder.loaded])
    assert abs(drawn - 0.4) < 0.03 and set(recorder.loaded) == set(recorder.identifiers)


def test_synthetic_mix_with_copy_paste_pastes_the_real_cases_lesions(small_kvasir, nnunet_dirs, monkeypatch):
    names = sorted(small_kvasir)
    synthetic = {f"law_{i:05d}": (np.full_like(small_kvasir[name][0], MARKER), small_kvasir[name][1])
                 for i, name in enumerate(names[:2])}
    real_training = names[2:6]
    plans, dataset_json = write_dataset(nnunet_dirs, {**small_kvasir, **synthetic},
                                        [{"train": real_training + sorted(synthetic), "val": names[6:]}],
                                        synthetic=sorted(synthetic))
    monkeypatch.setenv(SYNTHETIC_VARIABLE, "0.5")
    monkeypatch.setenv(COPY_PASTE_VARIABLE, "1")
    trainer = nnUNetTrainer_smoke_synthmix_copypaste(plans, "2d", 0, dataset_json, torch.device("cpu"))
    batches = training_batches(trainer, 30)
    # the lesions come from the real training cases only (the marked synthetic ones would show in the bank)
    assert {lesion.case for lesion in trainer.copy_paste.bank.lesions} == set(real_training)
    fraction = np.mean([sample.mean().item() > MARKER / 4 for batch in batches for sample in batch])
    assert abs(fraction - 0.5) < 0.15, fraction
    log = open(trainer.log_file).read()
    assert "copy-paste probability: 1.0" in log and "synthetic probability: 0.5" in log
    mix, _ = trainer.get_tr_and_val_datasets()
    assert isinstance(mix, SyntheticMix) and isinstance(mix.dataset, HostTracking)
    assert mix.identifiers == real_training and mix.synthetic == sorted(synthetic)


def test_a_synthetic_validation_case_is_refused(small_kvasir, nnunet_dirs):
    names = sorted(small_kvasir)
    cases = {**small_kvasir, "law_00000": small_kvasir[names[0]]}
    plans, dataset_json = write_dataset(nnunet_dirs, cases, [{"train": names[2:], "val": names[:2] + ["law_00000"]}],
                                        synthetic=["law_00000"])
    trainer = nnUNetTrainer_smoke_synthmix(plans, "2d", 0, dataset_json, torch.device("cpu"))
    with pytest.raises(InputError, match="fold 0's validation cases include synthetic cases \\(law_00000\\)"):
        trainer.get_tr_and_val_datasets()


def test_a_dataset_without_provenance_is_refused(small_kvasir, nnunet_dirs):
    names = sorted(small_kvasir)
    plans, dataset_json = write_dataset(nnunet_dirs, small_kvasir, [{"train": names[2:], "val": names[:2]}])
    with pytest.raises(InputError, match=r"Dataset999_Tiny/provenance.json not found: .*'law synthesize'"):
        nnUNetTrainer_smoke_synthmix(plans, "2d", 0, dataset_json, torch.device("cpu"))


@pytest.mark.parametrize("trainer_class,variable", [(nnUNetTrainerORDER_cpu_copypaste, COPY_PASTE_VARIABLE),
                                                    (nnUNetTrainerORDER_cpu_synthmix, SYNTHETIC_VARIABLE)])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "half"])
def test_a_probability_outside_0_1_is_refused(trainer_class, variable, value, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.setenv(variable, value)
    plans, dataset_json = tiny_2d_plans({"network_class_name": "unused", "_kw_requires_import": [],
                                         "arch_kwargs": {"strides": [[1, 1], [2, 2]]}})
    with pytest.raises(InputError, match=f"^{variable}='{value}': expected a probability from 0 to 1$"):
        trainer_class(plans, "2d", 0, dataset_json, torch.device("cpu"))
