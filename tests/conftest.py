"""Shared test fixtures: the real data folder and the nnU-Net folders of a test.

The data lives in one folder given by ``NNUNET_LAWORDER_DATA`` (default: ``../shared/data`` beside the
repository). Where it is absent the data tests skip with the reason, unless ``NNUNET_LAWORDER_REQUIRE_DATA=1``
(set by CI) turns such a skip into a failure.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NNUNET_LAWORDER_DATA", REPO.parent / "shared" / "data"))


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
