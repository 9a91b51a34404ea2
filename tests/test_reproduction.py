"""benchmarks/reproduction.py: a scale's Kvasir-SEG test split, and the stages that add it to a work folder and test
a model on it, run as the reproduction scripts run them (in process here: they are ``nnunet-laworder`` commands)."""
import json
import random

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from nnunet_helpers import files_under
from nnunet_laworder.cli import main
from nnunet_laworder.workflow import NNUNET_FOLDERS


@pytest.fixture
def reproduction(monkeypatch):
    """The module, which the reproduction scripts import from their own folder."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import reproduction

    return reproduction


def smoke_run(reproduction, work, data):
    return reproduction.Reproduction.from_args(
        reproduction.parse_args("test", ["--scale", "smoke", "--work", str(work), "--data", str(data)]), "test")


def test_test_split_is_seeded_disjoint_and_added_to_an_earlier_work_folder(reproduction, kvasir_dir, tmp_path,
                                                                           monkeypatch):
    r = smoke_run(reproduction, tmp_path / "work", kvasir_dir)
    training, test = r.kvasir_names()
    names = sorted(p.stem for p in (kvasir_dir / "images").glob("*.jpg"))
    assert training == sorted(random.Random(0).sample(names, 16))  # the subset of work folders made before
    assert len(test) == r.scale.test_cases == 8 and set(test) <= set(names) and not set(test) & set(training)
    assert smoke_run(reproduction, tmp_path / "other", kvasir_dir).kvasir_names() == (training, test)

    for name in NNUNET_FOLDERS:
        monkeypatch.setenv(name, r.env[name])
    stages = {stage.name: (stage, product) for stage, product in r.prepare_real()}
    (convert, _), (add_test, labels) = stages["convert"], stages["test split"]
    assert main(convert.command[1:]) == 0  # a work folder converted before the test split existed
    raw = labels.parent
    trained_on = files_under([raw / "imagesTr", raw / "labelsTr"])
    assert labels == raw / "labelsTs" and not labels.exists()
    assert main(add_test.command[1:]) == 0
    for source, cases in (("kvasir_smoke", training), ("kvasir_smoke_test", test)):
        assert sorted(p.stem for p in (r.work / "source" / source / "images").iterdir()) == cases
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [f"{case}_0000.png" for case in test]
    assert sorted(p.name for p in labels.iterdir()) == [f"{case}.png" for case in test]
    for path in labels.iterdir():
        label = Image.open(path)
        assert max(label.size) <= r.scale.max_size and set(np.unique(np.asarray(label)).tolist()) <= {0, 1}
    assert files_under([raw / "imagesTr", raw / "labelsTr"]) == trained_on

    # a LAW dataset's model is tested on the real dataset's test split too, into its own fold's test folder
    model = r.work / "nnUNet_results" / "Dataset511_KvasirSEG" / "nnUNetTrainerORDER_smoke__nnUNetPlans__2d_order"
    (predict, predicted), (evaluate, evaluated) = r.test_stages(511, "ORDER", "2d_order", "nnUNetTrainerORDER_smoke", 0)
    assert predicted == evaluated == model / "fold_0" / "test" / "summary.json"
    assert predict.command[:5] == ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o",
                                   str(model / "fold_0" / "test" / "predictions")]
    assert evaluate.command[:3] == ["nnUNetv2_evaluate_folder", str(labels), predict.command[4]]
    assert evaluate.command[-4:] == ["-o", str(predicted), "-np", "1"]  # one process each on a few CPU cores


def test_training_budget_study_keeps_the_budgets_of_earlier_invocations(reproduction, tmp_path):
    """A budget study runs budget by budget; each invocation replaces its own budgets' rows and keeps the others."""
    import reproduce_training_budget as budget

    path = tmp_path / "training_budget.json"
    assert budget.earlier_rows(path, [10]) == {}
    row = {"budget_minutes": 10, "runs": 3}
    earlier = {"ORDER": {"10": row, "20": {"runs": 1}}, "MK-UNet base": {"20": {"runs": 1}}}
    path.write_text(json.dumps({"rows": earlier}))
    assert budget.earlier_rows(path, [20]) == {"ORDER": {"10": row}, "MK-UNet base": {}}
    assert budget.earlier_rows(path, [10, 20]) == {"ORDER": {}, "MK-UNet base": {}}
    assert budget.budget_tag(2.5) == "b2p5"
