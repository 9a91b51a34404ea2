"""Folds: the real cases keep exactly nnU-Net's folds; synthetic cases only ever join the training side.

nnU-Net's reference is ``nnUNetTrainer.do_split``: ``splits_final.json`` in the preprocessed folder, else
``generate_crossval_split`` (5 folds, seed 12345) of the sorted case ids, and for a fold beyond the file a seeded
random 80:20 split. Everything here follows it, so "real only" and "real + synthetic" compare case for case.
"""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_laworder.errors import InputError
from nnunet_laworder.nnunet_folders import read_json, save_json_atomic

SPLITS_FILE = "splits_final.json"
GENERATED = "generated as nnU-Net does (generate_crossval_split, seed 12345, 5 folds)"

Splits = List[Dict[str, List[str]]]


def real_splits(preprocessed_folder: Path, identifiers: Sequence[str], write: bool = False) -> Tuple[Splits, str]:
    """(the real-only dataset's folds, where they came from): its ``splits_final.json``, else nnU-Net's own
    5-fold split, written there when ``write`` (as nnU-Net's trainer would on its first run)."""
    file = Path(preprocessed_folder) / SPLITS_FILE
    if file.is_file():
        splits = read_json(file)
        unknown = sorted({str(c) for fold in splits for c in (*fold["train"], *fold["val"])} - set(identifiers))
        if unknown:
            raise InputError(f"{file} lists cases that are not training cases of the dataset: "
                             f"{', '.join(unknown[:5])}")
        source = str(file)
    else:
        splits = generate_crossval_split(list(np.sort(list(identifiers))), seed=12345, n_splits=5)
        source = GENERATED
        if write:
            save_json_atomic(splits, file, indent=4)
    return [{"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in splits], source


def fold_cases(splits: Splits, identifiers: Sequence[str], fold: Union[int, str]) -> Tuple[List[str], List[str]]:
    """(training cases, validation cases) of ``fold``, as ``nnUNetTrainer.do_split``; ``"all"`` trains on every
    case."""
    if str(fold) == "all":
        return sorted(identifiers), sorted(identifiers)
    fold = int(fold)
    if fold < len(splits):
        return list(splits[fold]["train"]), list(splits[fold]["val"])
    rnd = np.random.RandomState(seed=12345 + fold)  # nnU-Net's fallback for a fold the file does not hold
    keys = np.sort(list(identifiers))
    idx_tr = rnd.choice(len(keys), int(len(keys) * 0.8), replace=False)
    return [str(keys[i]) for i in idx_tr], [str(keys[i]) for i in range(len(keys)) if i not in idx_tr]


def fold_split(preprocessed_folder: Path, identifiers: Sequence[str], fold: Union[int, str]
               ) -> Tuple[List[str], List[str]]:
    """(training cases, validation cases) of ``fold`` of a real dataset; ``splits_final.json`` is created as
    nnU-Net would when it is missing, so nnU-Net later trains on the same folds."""
    identifiers = sorted(identifiers)
    splits, _ = real_splits(preprocessed_folder, identifiers, write=str(fold) != "all")
    return fold_cases(splits, identifiers, fold)


def validation_cases(preprocessed_folder: Path, fold: Union[int, str]) -> List[str]:
    """Fold ``fold``'s validation cases from an existing ``splits_final.json`` (empty when there is none)."""
    file = Path(preprocessed_folder) / SPLITS_FILE
    if str(fold) == "all" or not file.is_file():
        return []
    splits = read_json(file)
    return [str(c) for c in splits[int(fold)]["val"]] if int(fold) < len(splits) else []


def synthetic_splits(splits: Splits, sources: Dict[str, Sequence[str]]) -> Splits:
    """Real folds unchanged; every synthetic case (``{case: the real cases it was made from}``) joins the training
    side of each fold whose validation cases hold none of them; no synthetic case is ever a validation case."""
    out = []
    for fold in splits:
        val = set(fold["val"])
        out.append({"train": list(fold["train"]) + [c for c in sorted(sources) if not val & set(sources[c])],
                    "val": list(fold["val"])})
    return out
