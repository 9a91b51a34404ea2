"""``law evaluate``: how good is a synthetic dataset written by ``law synthesize``?

* **FID** between the real training images and the synthetic images (the ``law_*`` cases that ``provenance.json``
  lists), with the Inception-v3 extractor of :mod:`nnunet_laworder.law.fid`; how cases become [0, 1] RGB images
  is :mod:`nnunet_laworder.law.case_sets`. The real images are the generator's own conditioning (training) cases
  where provenance lists them. ``fid_max_images`` caps each set (evenly spaced cases, deterministic); the report
  records the counts, because FID on few images is biased high.
* **KID** from the same features (no second extraction), :func:`nnunet_laworder.law.fid.kid_from_features`:
  ``KID_SUBSETS`` seeded subsets of ``min(1000, n_real, n_synthetic)`` images per set; ``--no-fid`` skips both.
* **Layout fidelity** (given a trained nnU-Net model): :mod:`nnunet_laworder.law.layout_fidelity`.
* A PNG **grid**: rows mask / real source image / synthetic image, one column per synthetic case (8 by default),
  :mod:`nnunet_laworder.law.grid`.

Writes ``law_evaluation.json`` (NaN as null) and ``law_grid.png`` into ``output`` (default
``$nnUNet_results/DatasetNEW/law_evaluation/``).
"""
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.case_sets import (CaseSet, SliceRule, fid_images, intensity_window, is_natural_image_reader,
                                           load_case_set)
from nnunet_laworder.law.fid import (extract_features, fid_from_features, find_extractor, kid_from_features,
                                     load_poly_mmd)
from nnunet_laworder.law.generator import foreground_labels
from nnunet_laworder.law.grid import write_grid
from nnunet_laworder.law.layout_fidelity import TrainedModel, layout_fidelity
from nnunet_laworder.law.options import EVALUATION_FOLDER
from nnunet_laworder.law.provenance import PROVENANCE_FILE, read_provenance
from nnunet_laworder.nnunet_folders import check_output_folder, resolve_device, results_root, save_json_atomic

REPORT = "law_evaluation.json"
GRID = "law_grid.png"
SMALL_SET_NOTE = ("FID is biased high for small sets (2048-d feature covariances need thousands of images): "
                  "compare FIDs only at equal image counts and with the same extractor.")
KID_SUBSETS, KID_MAX_SUBSET_SIZE, KID_SEED = 100, 1000, 0  # torchmetrics' defaults; the seed makes it reproducible
KID_NOTE = ("unbiased MMD^2 of a degree-3 polynomial kernel (torchmetrics' KID) on the FID section's features: "
            "about 0 (possibly below 0) for independent sets from one distribution, slightly below 0 for a set "
            "against itself; std over the subsets (0 when every subset is a whole set).")


def default_output(dataset_name: str) -> Path:
    """``$nnUNet_results/<dataset>/law_evaluation``."""
    try:
        root = results_root()
    except InputError as e:
        raise InputError(f"{e}, or give -o OUT") from None
    return root / dataset_name / EVALUATION_FOLDER


def compute_fid(real: CaseSet, real_cases: List[str], synthetic: CaseSet, synthetic_cases: List[str], extractor,
                max_images: int, batch_size: int, progress: bool, rule: SliceRule = SliceRule()) -> Tuple[dict, dict]:
    """The report's ``fid`` and ``kid`` sections: FID and KID of the two sets through the real images' intensity
    window, from one feature extraction."""
    load_poly_mmd()  # a missing torchmetrics fails now, not after minutes of feature extraction
    reader = real.reader()
    window = intensity_window(reader, real, real_cases)
    counts, features = {}, {}
    for name, case_set, cases in (("real", real, real_cases), ("synthetic", synthetic, synthetic_cases)):
        counter = {}
        # one image per case for 2D RGB / grey data: the progress bar knows its total
        total = min(len(cases), max_images) if is_natural_image_reader(reader) and \
            len(window["low"]) in (1, 3) else None
        features[name] = extract_features(
            extractor, fid_images(case_set.reader(), case_set, cases, window, max_images, counter, rule),
            batch_size=batch_size, total=total, desc=f"Inception features ({name})", progress=progress)
        counts[name] = counter
    value = fid_from_features(features["real"], features["synthetic"])
    n_real, n_synthetic = counts["real"]["images"], counts["synthetic"]["images"]
    subset_size = min(KID_MAX_SUBSET_SIZE, n_real, n_synthetic)
    kid, kid_std = kid_from_features(features["real"], features["synthetic"], KID_SUBSETS, subset_size, KID_SEED)
    return ({"value": value, "extractor": extractor.describe(), "n_real_images": n_real,
             "n_synthetic_images": n_synthetic, "n_real_cases": counts["real"]["cases"],
             "n_synthetic_cases": counts["synthetic"]["cases"], "max_images_per_set": max_images,
             "intensity_window": window, "images": rule.describe(), "note": SMALL_SET_NOTE},
            {"value": kid, "std": kid_std, "subsets": KID_SUBSETS, "subset_size": subset_size, "seed": KID_SEED,
             "n_real_images": n_real, "n_synthetic_images": n_synthetic, "note": KID_NOTE})


def nan_to_none(x):
    """JSON has no NaN (an undefined Dice): null instead."""
    if isinstance(x, float) and np.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    return x


def evaluate(dataset: str, real_dataset: Optional[str] = None, output: Optional[str] = None,
             inception_weights: Optional[str] = None, fid_max_images: int = 1000, fid_batch_size: int = 16,
             fid: bool = True, model: Optional[TrainedModel] = None, device: Optional[str] = None,
             grid_columns: int = 8, layout_max_cases: Optional[int] = None, progress: bool = True,
             extractor=None) -> dict:
    """Evaluate the synthetic dataset ``dataset``; writes and returns the report.

    ``real_dataset``: take the real images from this dataset (default: the real cases of ``dataset``);
    ``model``: the layout-fidelity judge (its dataset defaults to ``real_dataset``, else provenance's source
    dataset); ``device``: as nnU-Net's ``-device`` (default cuda when available); ``extractor`` overrides the FID
    feature extractor lookup (tests).
    """
    device = resolve_device(device)
    synthetic_set = load_case_set(dataset)
    out = check_output_folder(output or default_output(synthetic_set.folder.name), "-o")
    provenance = read_provenance(synthetic_set.folder)
    synthetic_cases = sorted(provenance.cases)
    unknown = [c for c in synthetic_cases if c not in synthetic_set.files]
    if unknown:
        raise InputError(f"{synthetic_set.folder / PROVENANCE_FILE} lists case(s) that are not in "
                         f"{synthetic_set.folder / 'imagesTr'}: {', '.join(unknown[:5])}")
    if real_dataset is not None:
        real_set = load_case_set(real_dataset)
        real_cases = sorted(real_set.files)
    else:
        real_set = synthetic_set
        real_cases = sorted(c for c in synthetic_set.files if c not in provenance.cases)
    if not real_cases:
        raise InputError(f"no real training cases in {real_set.folder}: give --real-id")
    # FID compares with the generator's own training images (provenance's conditioning cases) where they are known
    conditioning = provenance.conditioning_cases
    fid_real_cases = real_cases
    if real_dataset is None and isinstance(conditioning, list):
        fid_real_cases = [c for c in real_cases if c in set(map(str, conditioning))] or real_cases
    if model is not None and model.dataset is None:
        model = replace(model, dataset=real_dataset or provenance.source_dataset)
        if model.dataset is None:
            raise InputError("give --model-dataset: provenance.json names no source dataset")
    rule = SliceRule.from_provenance(provenance)
    labels = foreground_labels(synthetic_set.dataset_json)
    out.mkdir(parents=True, exist_ok=True)

    report = {
        "dataset": synthetic_set.folder.name, "real_dataset": real_set.folder.name,
        "source_dataset": provenance.source_dataset, "n_synthetic_cases": len(synthetic_cases),
        "n_real_cases": len(real_cases), "labels": [int(v) for v in labels], "device": str(device),
        "fid": None, "kid": None, "layout_fidelity": None,
    }
    window = None
    if fid:
        if extractor is None:
            extractor = find_extractor(inception_weights, device)
        report["fid"], report["kid"] = compute_fid(real_set, fid_real_cases, synthetic_set, synthetic_cases, extractor,
                                                   fid_max_images, fid_batch_size, progress, rule)
        report["fid"]["real_images_from"] = (
            "the generator's conditioning (training) cases listed in provenance.json"
            if fid_real_cases is not real_cases else f"the real training cases of {real_set.folder.name}")
        window = report["fid"]["intensity_window"]
    if window is None:
        window = intensity_window(real_set.reader(), real_set, real_cases)
    if model is not None:
        report["layout_fidelity"] = layout_fidelity(model, synthetic_set, synthetic_cases, real_set, real_cases,
                                                    labels, device, layout_max_cases, progress)
    report["grid"] = write_grid(out / GRID, synthetic_set, synthetic_cases, provenance, [synthetic_set, real_set],
                                labels, window, grid_columns, rule)
    report["output"] = str(out)
    save_json_atomic(nan_to_none(report), out / REPORT)
    return report


def summary_text(report: dict) -> str:
    """What ``law evaluate`` prints: the case counts, FID, KID, layout fidelity and the files written."""
    def fmt(x):
        return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"

    lines = [f"{report['dataset']}: {report['n_synthetic_cases']} synthetic, {report['n_real_cases']} real cases"]
    if report["fid"]:
        f = report["fid"]
        lines.append(f"FID {f['value']:.2f} ({f['n_real_images']} real vs {f['n_synthetic_images']} synthetic "
                     f"images; {f['extractor']['name']})")
    if report["kid"]:
        k = report["kid"]
        lines.append(f"KID x1000 {1000 * k['value']:.2f} +- {1000 * k['std']:.2f} ({k['subsets']} subsets of "
                     f"{k['subset_size']} images per set)")
    if report["layout_fidelity"]:
        lf = report["layout_fidelity"]
        lines.append(f"layout fidelity Dice {fmt(lf['synthetic']['mean'])} on synthetic images, "
                     f"{fmt(lf['real_reference']['mean'])} on real images (reference)")
    lines.append(f"wrote {Path(report['output']) / REPORT} and {Path(report['output']) / GRID}")
    return "\n".join(lines)
