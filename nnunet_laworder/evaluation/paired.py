"""Paired comparison of two models on the same validation cases: the mean per-case difference, its 95% bootstrap
interval (percentile, scipy's ``bootstrap``) and how many cases improved, stayed equal or got worse.

Pairs are matched by case name; a case that one model lacks, or whose value is NaN for either (nnU-Net's Dice of
an empty reference predicted empty), is left out and counted in ``unpaired``.
"""
import math
from typing import Dict, Optional

import numpy as np
from scipy.stats import bootstrap

from nnunet_laworder.errors import InputError

RESAMPLES = 10_000


def paired_difference(reference: Dict[str, Optional[float]], other: Dict[str, Optional[float]],
                      resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``other - reference`` over the cases both have: ``mean_diff``, ``ci95`` [lo, hi], ``cases``, ``improved``,
    ``equal``, ``worse``, the two means and ``unpaired``."""
    usable = lambda v: v is not None and math.isfinite(v)
    cases = sorted(c for c in reference if c in other and usable(reference[c]) and usable(other[c]))
    if not cases:
        raise InputError("the two models share no validation case with a finite value: compare models validated "
                         "on the same folds of the same dataset")
    diffs = np.array([other[c] - reference[c] for c in cases], dtype=np.float64)
    mean = float(diffs.mean())
    if len(diffs) < 2 or np.ptp(diffs) == 0:  # no spread: the interval is the point
        low = high = mean
    else:
        interval = bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=resamples, method="percentile",
                             rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(interval.low), float(interval.high)
    return {"mean_diff": mean, "ci95": [low, high], "cases": len(cases),
            "improved": int((diffs > 0).sum()), "equal": int((diffs == 0).sum()), "worse": int((diffs < 0).sum()),
            "reference_mean": float(np.mean([reference[c] for c in cases])),
            "mean": float(np.mean([other[c] for c in cases])),
            "unpaired": len(set(reference) | set(other)) - len(cases)}
