"""Shared test fixtures: the real data folder and the nnU-Net folders of a test.

The data lives in one folder given by ``NNUNET_LAWORDER_DATA`` (default: ``../shared/data`` beside the
repository). Where it is absent the data tests skip with the reason, unless ``NNUNET_LAWORDER_REQUIRE_DATA=1``
(set by CI) turns such a skip into a failure.
"""
import os
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` on a 2-core machine: one core per worker. Tests of tiny networks ran ~10x slower with two
    # threads fighting over cores busy with the other worker (the plugin's trainers train at one thread for this).
    import torch

    torch.set_num_threads(1)
DATA = Path(os.environ.get("NNUNET_LAWORDER_DATA", REPO.parent / "shared" / "data"))


# the longest groups (the demo ~400 s, the README workflow ~160 s beside it), started first
LONGEST_FIRST = ("test_demo", "test_readme_workflow", "test_law_quality_gate")


def xdist_group(item) -> str:
    marker = item.get_closest_marker("xdist_group")
    return marker.args[0] if marker.args else marker.kwargs["name"]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """``pytest -n 2`` (setup.cfg): each test file is one xdist group unless it names a group of its own (files that
    share a session model), so its module fixtures are made once, on one worker. xdist hands out the groups in the
    order of the items (``--no-loadscope-reorder``): the longest first, then the others with the most tests first,
    so that the two workers end together. Started as the 28th group of 30 (xdist's order by number of tests), the
    demo ran from 556 s to 974 s while the other worker had nothing left after 739 s. (When trainings ran at
    nnU-Net's thread count, the demo started first took 850 s instead of 460.) The quality gate's module trains its
    judge (136-178 s) before its few tests: handed out last by size, it ran from 923 s to 1120 s on one worker
    while the other had been idle since 939 s."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    sizes = Counter(xdist_group(item) for item in items)
    rank = {group: (LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST), -size)
            for group, size in sizes.items()}
    position = {item: n for n, item in enumerate(items)}
    items.sort(key=lambda item: (rank[xdist_group(item)], position[item]))


def require_data(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        message = f"real test data not found at {path} (set NNUNET_LAWORDER_DATA)"
        if os.environ.get("NNUNET_LAWORDER_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def kvasir_dir() -> Path:
    return require_data("kvasir-seg")


@pytest.fixture
def hippocampus_dir() -> Path:
    return require_data("msd-hippocampus")


@pytest.fixture
def kits19_labels_dir() -> Path:
    return require_data("kits19-labels")


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """Fresh nnUNet_raw / nnUNet_preprocessed / nnUNet_results folders, exported for in-process and child calls."""
    dirs = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return dirs


# The LAW modules' planned datasets (law_fixtures.py), made once per test session; each module gets its own
# nnUNet_results through law_fixtures.law_folders.
@pytest.fixture(scope="session")
def law_shared_folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("law_shared")
    folders = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed")}
    for path in folders.values():
        path.mkdir()
    return folders


@pytest.fixture(scope="session")
def law_kvasir_planned(law_shared_folders, tmp_path_factory) -> Path:
    from law_fixtures import plan_kvasir

    return plan_kvasir(law_shared_folders, tmp_path_factory.mktemp("law_kvasir_official"),
                       tmp_path_factory.mktemp("law_planning_results"))


@pytest.fixture(scope="session")
def law_hippocampus_planned(law_shared_folders, tmp_path_factory) -> Path:
    from law_fixtures import plan_hippocampus

    return plan_hippocampus(law_shared_folders, tmp_path_factory.mktemp("law_planning_results"))


@pytest.fixture(scope="session")
def law_kvasir_order_smoke(law_kvasir_planned, law_shared_folders, tmp_path_factory) -> Path:
    """ORDER trained once with nnUNetTrainerORDER_smoke (2d_order, fold 0) on the LAW Kvasir-SEG subset, as
    ``nnUNetv2_train`` does in a user's environment (nnunet_env); the model folder, to be copied into a module's
    nnUNet_results. Modules that use it share an xdist group (LAW_KVASIR_MODELS), so it is trained once."""
    from law_fixtures import KVASIR_ID
    from nnunet_helpers import nnunet_env, run

    results = tmp_path_factory.mktemp("law_models") / "nnUNet_results"
    results.mkdir()
    env = nnunet_env({**law_shared_folders, "nnUNet_results": results})
    run(["nnunet-laworder", "plans", "-d", str(KVASIR_ID), "-c", "2d", "--arch", "order"], env)
    run(["nnUNetv2_train", str(KVASIR_ID), "2d_order", "0", "-tr", "nnUNetTrainerORDER_smoke", "-device", "cpu"], env)
    return results / law_kvasir_planned.name / "nnUNetTrainerORDER_smoke__nnUNetPlans__2d_order"


# A Kvasir-SEG subset as a user plans it (24 training + 4 held-out pairs at 160 px, --verify_dataset_integrity, an
# ORDER configuration) with ORDER trained on it by nnUNetTrainerORDER_smoke (2d_order, fold 0): the nnU-Net
# workflow's and the ONNX export's model, made once (their modules share the xdist group KVASIR_ORDER_SMOKE).
KVASIR_ORDER_SMOKE = "kvasir_order_smoke"
KVASIR_WORKFLOW_ID, KVASIR_WORKFLOW_TRAIN, KVASIR_WORKFLOW_TEST = 501, 24, 4


@pytest.fixture(scope="session")
def kvasir_order_smoke(tmp_path_factory) -> dict:
    """{"env": for child processes, "raw": the raw dataset folder, "folders": nnU-Net's three folders}."""
    from nnunet_helpers import copy_kvasir_subset, nnunet_env, run

    src = require_data("kvasir-seg")
    root = tmp_path_factory.mktemp("kvasir_order_smoke")
    folders = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    official = root / "official"
    for path in [*folders.values(), official]:
        path.mkdir()
    test_list = copy_kvasir_subset(src, official, KVASIR_WORKFLOW_TRAIN + KVASIR_WORKFLOW_TEST, KVASIR_WORKFLOW_TEST)
    env = nnunet_env(folders)
    d = str(KVASIR_WORKFLOW_ID)
    run(["nnunet-laworder", "convert", "kvasir-seg", str(official), "-d", d, "--max-size", "160",
         "--test-list", str(test_list)], env)
    run(["nnUNetv2_plan_and_preprocess", "-d", d, "-c", "2d", "-np", "2", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    run(["nnunet-laworder", "plans", "-d", d, "-c", "2d", "--arch", "order"], env)
    run(["nnUNetv2_train", d, "2d_order", "0", "-tr", "nnUNetTrainerORDER_smoke", "-device", "cpu"], env)
    return {"env": env, "raw": next(folders["nnUNet_raw"].glob(f"Dataset{d}_*")), "folders": folders}
