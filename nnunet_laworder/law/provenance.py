"""``provenance.json`` of a synthetic dataset: one schema, one writer (``law synthesize``), one reader
(``law evaluate``, the demo report, the trainers that draw synthetic cases with a probability).

The file holds the dataset-level fields (source dataset, generator checkpoint and hash, weighting, configuration,
generator fold, conditioning cases, sampler, steps, seed, layout, transform settings, where the real folds came
from, the split rule, the protocol: ``protocol`` move or add, ``strength``, and for add the dataset's
``lesion_labels`` and ``organ_labels``) and ``cases``: ``{synthetic case: entry}``, each entry with at least ``case``
and ``source_case`` (and ``source_slice``, ``transform``, ``seed``, ... as :func:`case_entry` writes them). In the
add protocol ``source_case`` is the host, whose image and labels the case keeps, and ``donor_case`` (``donor_slice``)
the case whose lesion was added; :func:`real_cases` names both.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.options import MOVE
from nnunet_laworder.nnunet_folders import read_json, save_json_atomic

PROVENANCE_FILE = "provenance.json"
CASE_PREFIX = "law_"
MAX_CASES = 100_000  # case ids law_00000 .. law_99999
SPLIT_RULE = ("real cases keep the real-only folds; synthetic cases are training cases only, and not in fold k's "
              "training side when a real case they were made from (the source, or the donor of an added lesion) is "
              "one of fold k's validation cases")


def case_id(index: int) -> str:
    return f"{CASE_PREFIX}{index:05d}"


def is_synthetic(case: str) -> bool:
    return case.startswith(CASE_PREFIX)


def case_entry(index: int, source_case: str, source_slice: Optional[int], transform: dict, seed: int, *,
               run_seed: int, sampler: str, steps: int, checkpoint: str, checkpoint_hash: str, weighting: str,
               generator_fold, device: str, generated_size: List[int], written_shape: List[int], mode: str,
               draw: int = 0, protocol: str = MOVE, strength: float = 1.0, donor_case: Optional[str] = None,
               donor_slice: Optional[int] = None) -> dict:
    """The entry of synthetic case ``index``: its source mask (and slice), layout transform (with the window, in
    the inpainting ``mode``; with the donor's lesion and where it went, in the add ``protocol``) and noise seed,
    which draw of the case it is, the run that sampled it, and the donor of an added lesion (and its slice)."""
    return {"case": case_id(index), "case_index": index, "source_case": source_case, "source_slice": source_slice,
            "transform": transform, "seed": seed, "run_seed": run_seed, "sampler": sampler, "steps": steps,
            "checkpoint": checkpoint, "checkpoint_hash": checkpoint_hash, "weighting": weighting,
            "generator_fold": generator_fold, "device": device, "generated_size": generated_size,
            "written_shape": written_shape, "mode": mode, "draw": draw, "protocol": protocol, "strength": strength,
            "donor_case": donor_case, "donor_slice": donor_slice}


def real_cases(entry: dict) -> List[str]:
    """The real training cases a synthetic case was made from: its source (host) and the donor of an added lesion."""
    return [entry["source_case"]] + ([entry["donor_case"]] if entry.get("donor_case") else [])


@dataclass
class Provenance:
    """What :func:`read_provenance` gives: the per-case entries and the dataset-level fields."""
    cases: Dict[str, dict]
    fields: dict  # everything but "cases"

    @property
    def source_dataset(self) -> Optional[str]:
        return self.fields.get("source_dataset")

    @property
    def conditioning_cases(self) -> Optional[List[str]]:
        return self.fields.get("conditioning_cases")

    @property
    def layout(self) -> Optional[dict]:
        return self.fields.get("layout")

    def sources(self) -> Dict[str, str]:
        """``{synthetic case: the training case whose mask it was conditioned on}`` (adding: the host)."""
        return {case: entry["source_case"] for case, entry in self.cases.items()}


def write_provenance(folder: Path, cases: Dict[str, dict], **fields) -> Path:
    """Write ``folder/provenance.json`` atomically: ``fields`` then ``cases``."""
    path = Path(folder) / PROVENANCE_FILE
    save_json_atomic({**fields, "num_synthetic": len(cases), "cases": cases}, path)
    return path


def read_provenance(folder: Path) -> Provenance:
    """The provenance of the synthetic dataset in ``folder``, or an :class:`InputError` naming what is wrong."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: expected a synthetic dataset, written by 'law synthesize'")
    provenance = read_json(path)
    cases = provenance.get("cases") if isinstance(provenance, dict) else None
    if not isinstance(cases, dict) or not cases:
        raise InputError(f"{path} lists no synthetic case (expected a 'cases' object, as 'law synthesize' writes)")
    for case, entry in cases.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("source_case"), str):
            raise InputError(f"{path}: synthetic case {case} names no source_case")
        if not isinstance(entry.get("donor_case"), (str, type(None))):
            raise InputError(f"{path}: synthetic case {case} has a donor_case that names no case")
    return Provenance(dict(cases), {k: v for k, v in provenance.items() if k != "cases"})
