"""KiTS19 (Heller et al., 2019) to an nnU-Net raw dataset: CT volumes and labels copied byte for byte."""
import re
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_laworder.conversion.common import DatasetTarget, raise_if_problems, write_dataset_json, write_report
from nnunet_laworder.errors import InputError

IMAGING, SEGMENTATION = "imaging.nii.gz", "segmentation.nii.gz"
KITS_LABELS = {0, 1, 2}  # background, kidney, tumor
# region training as the KiTS evaluation scores it: kidney+tumor, then tumor
LABELS = {"background": 0, "kidney": [1, 2], "tumor": 2}
REGIONS_CLASS_ORDER = [1, 2]


def find_cases(src: Path) -> list:
    """The ``case_XXXXX`` folders of ``src`` (or of ``src/data``, the layout of the kits19 repository)."""
    if not src.is_dir():
        raise InputError(f"source folder not found: {src}")
    for root in (src, src / "data"):
        cases = sorted(p for p in root.glob("case_*") if p.is_dir() and re.fullmatch(r"case_\d{5}", p.name))
        if cases:
            return cases
    raise InputError(f"{src}: no case_XXXXX folders (expected {src}/case_00000/{IMAGING} + {SEGMENTATION})")


def _load_nifti(path: Path):
    import nibabel as nib
    try:
        return nib.load(path)
    except Exception as e:  # nibabel and gzip raise many types; each means "not a readable NIfTI"
        raise InputError(f"{path}: cannot read as NIfTI ({e})") from e


def check_case(imaging: Path, segmentation: Path) -> None:
    """Headers of both files (shape, affine) and the labels of the segmentation; the CT data is not read."""
    image = _load_nifti(imaging)
    if not segmentation.is_file():
        return
    seg = _load_nifti(segmentation)
    if seg.shape != image.shape:
        raise InputError(f"{segmentation}: shape {seg.shape} differs from {IMAGING} {image.shape}")
    if not np.allclose(seg.affine, image.affine, atol=1e-3):
        raise InputError(f"{segmentation}: affine {seg.affine.round(3).tolist()} differs from {IMAGING}'s "
                         f"{image.affine.round(3).tolist()}")
    try:
        found = set(np.unique(np.asarray(seg.dataobj)).tolist())
    except Exception as e:  # a header can be fine while the compressed data is truncated
        raise InputError(f"{segmentation}: cannot read the data ({e})") from e
    if not found <= KITS_LABELS:
        raise InputError(f"{segmentation}: unexpected label values {sorted(found - KITS_LABELS)} "
                         f"(KiTS19 has 0 background, 1 kidney, 2 tumor)")


def sort_cases(cases: list) -> tuple:
    """(training, test, segmentation-only case names, problems) after checking every case."""
    training, test, missing_imaging, problems = [], [], [], []
    for case in tqdm(cases, desc="checking", unit="case"):
        imaging, segmentation = case / IMAGING, case / SEGMENTATION
        if not imaging.is_file():
            if segmentation.is_file():
                missing_imaging.append(case.name)
            else:
                problems.append(f"{case}: neither {IMAGING} nor {SEGMENTATION}")
            continue
        try:
            check_case(imaging, segmentation)
        except InputError as e:
            problems.append(str(e))
            continue
        (training if segmentation.is_file() else test).append(case)
    return training, test, missing_imaging, problems


def convert_kits19(src: Path, dataset_id: int, name: str = "KiTS19", allow_missing_imaging: bool = False,
                   overwrite: bool = False) -> Path:
    """Convert ``src/case_XXXXX/{imaging,segmentation}.nii.gz``; imaging-only cases become test cases."""
    src = Path(src)
    target = DatasetTarget.resolve(dataset_id, name, overwrite)
    training, test, missing_imaging, problems = sort_cases(find_cases(src))
    if missing_imaging and not allow_missing_imaging:
        problems.append(f"{len(missing_imaging)} case(s) have {SEGMENTATION} but no {IMAGING} "
                        f"(pass --allow-missing-imaging to skip them): {', '.join(missing_imaging)}")
    raise_if_problems(problems, src)
    if not training:
        raise InputError(f"{src}: no case has both {IMAGING} and {SEGMENTATION}; nnU-Net needs training cases")

    with target.staging() as folder:
        for cases, images, labels in ((training, "imagesTr", "labelsTr"), (test, "imagesTs", None)):
            if not cases:
                continue
            (folder / images).mkdir()
            if labels:
                (folder / labels).mkdir()
            for case in tqdm(cases, desc=f"copying {images}", unit="case"):
                shutil.copyfile(case / IMAGING, folder / images / f"{case.name}_0000.nii.gz")
                if labels:
                    shutil.copyfile(case / SEGMENTATION, folder / labels / f"{case.name}.nii.gz")
        write_dataset_json(folder, len(training), channel_names={"0": "CT"}, labels=dict(LABELS),
                           regions_class_order=list(REGIONS_CLASS_ORDER), file_ending=".nii.gz",
                           dataset_name=target.path.name,
                           reference="Heller et al., The KiTS19 Challenge Data, arXiv:1904.00445",
                           license="CC BY-NC-SA 4.0", converted_by="nnunet-laworder convert kits19")
        write_report(folder, {"source": str(src.resolve()), "training_cases": [c.name for c in training],
                              "test_cases": [c.name for c in test],
                              "skipped_cases": {c: f"{SEGMENTATION} without {IMAGING}" for c in missing_imaging}})
    if missing_imaging:
        print(f"skipped {len(missing_imaging)} case(s) without {IMAGING}: {', '.join(missing_imaging)} "
              f"(listed in {target.path / 'conversion_report.json'})")
    print(f"wrote {len(training)} training and {len(test)} test cases to {target.path}")
    return target.path
