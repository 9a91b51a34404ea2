"""Paired statistics of two models' per-case Dice, read from nnU-Net summary.json files, against a hand
computation."""
import json

import numpy as np
import pytest

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.compare import case_name, read_summary
from nnunet_laworder.evaluation.paired import paired_difference

REFERENCE = {"case_a": 0.80, "case_b": 0.50, "case_c": 0.90, "case_d": 0.30, "case_e": 0.60}
OTHER = {"case_a": 0.85, "case_b": 0.70, "case_c": 0.90, "case_d": 0.25, "case_e": 0.75}


def write_summary(path, dice: dict) -> None:
    """A summary.json as nnUNetv2_evaluate_folder writes it (one label, "1")."""
    per_case = [{"metrics": {"1": {"Dice": d, "IoU": d / (2 - d)}}, "prediction_file": f"/p/{c}.png",
                 "reference_file": f"/gt/{c}.png"} for c, d in dice.items()]
    mean = {"1": {"Dice": float(np.mean(list(dice.values())))}}
    path.write_text(json.dumps({"foreground_mean": mean["1"], "mean": mean, "metric_per_case": per_case}))


def per_case_dice(path) -> dict:
    return {case_name(e).removesuffix(".png"): e["metrics"]["1"]["Dice"] for e in read_summary(path)["metric_per_case"]}


def test_paired_difference_equals_a_hand_computation_on_summary_files(tmp_path):
    write_summary(tmp_path / "reference.json", REFERENCE)
    write_summary(tmp_path / "other.json", dict(OTHER, case_only_here=1.0))
    stats = paired_difference(per_case_dice(tmp_path / "reference.json"), per_case_dice(tmp_path / "other.json"))
    diffs = np.array([OTHER[c] - REFERENCE[c] for c in sorted(REFERENCE)])  # 0.05 0.2 0 -0.05 0.15
    assert stats["mean_diff"] == pytest.approx(0.07)
    assert (stats["cases"], stats["improved"], stats["equal"], stats["worse"], stats["unpaired"]) == (5, 3, 1, 1, 1)
    assert stats["reference_mean"] == pytest.approx(0.62) and stats["mean"] == pytest.approx(0.69)
    # the percentile bootstrap by hand: means of 20,000 resamples with replacement
    rng = np.random.default_rng(1)
    means = diffs[rng.integers(0, len(diffs), (20_000, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    assert stats["ci95"][0] == pytest.approx(low, abs=0.01) and stats["ci95"][1] == pytest.approx(high, abs=0.01)
    assert stats["ci95"][0] < stats["mean_diff"] < stats["ci95"][1]


def test_paired_difference_edge_cases():
    same = paired_difference({"a": 0.5, "b": 0.7}, {"a": 0.6, "b": 0.8})
    assert same["ci95"] == pytest.approx([0.1, 0.1]) and same["improved"] == 2  # no spread: the point
    nan_left_out = paired_difference({"a": 0.5, "b": float("nan")}, {"a": 0.4, "b": 0.9})
    assert (nan_left_out["cases"], nan_left_out["worse"], nan_left_out["unpaired"]) == (1, 1, 1)
    with pytest.raises(InputError, match="share no validation case"):
        paired_difference({"a": 0.5}, {"b": 0.5})
