"""The cache of finished synthetic cases: what makes ``law synthesize`` resumable and shardable.

``$nnUNet_raw/.law-cache-DatasetNEW_<name>-<key>/`` is keyed by the checkpoint hash, seed, sampler, steps, the
source dataset, the conditioning cases, the transform settings, the quality gate and the protocol (move or add, and
its strength; ``key.json`` lists them), and holds one folder
per case index, ``cases/law_00000/{imagesTr,labelsTr,provenance.json}`` (the case's provenance entry). A case is
written to a hidden folder of its own process and moved into place only once complete, so a rerun after an
interruption samples only what is missing (the same command line, or a larger ``--num``) and parts sharing
``$nnUNet_raw`` never see half a case. The hidden name is invisible to nnU-Net, which finds datasets by their
``DatasetXXX`` prefix.
"""
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunet_laworder.conversion.common import DatasetTarget
from nnunet_laworder.law.provenance import PROVENANCE_FILE, case_id
from nnunet_laworder.nnunet_folders import read_json, save_json_atomic

CACHE_FORMAT = 4  # 2: DDIM clips its clean-image estimate to the data's range; 3: inpainting mode, quality gate;
# 4: the add protocol


class CaseCache:
    def __init__(self, target: DatasetTarget, key_fields: dict):
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
        self.key_fields = key_fields
        self.folder = target.raw / f".law-cache-{target.path.name}-{key}"
        self.cases = self.folder / "cases"

    @classmethod
    def for_run(cls, target: DatasetTarget, checkpoint_hash: str, seed: int, sampler: str, steps: int, source: str,
                conditioning_cases: Sequence[str], transform_config: dict, gate: Optional[dict] = None,
                protocol: Optional[dict] = None) -> "CaseCache":
        """The cache of everything a case depends on besides its index (``gate``: the judge and its settings;
        ``protocol``: the protocol's fields of provenance.json)."""
        return cls(target, {"format": CACHE_FORMAT, "checkpoint_hash": checkpoint_hash, "seed": seed,
                            "sampler": sampler, "steps": steps, "source": source,
                            "conditioning_cases": list(conditioning_cases), "transform_config": transform_config,
                            "gate": gate, "protocol": protocol})

    def create(self) -> None:
        self.cases.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.is_file():
            save_json_atomic(self.key_fields, key_file)

    def exists(self) -> bool:
        return self.folder.is_dir()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def has(self, index: int) -> bool:
        return (self.cases / case_id(index)).is_dir()

    def missing(self, num: int) -> List[int]:
        return [i for i in range(num) if not self.has(i)]

    def remove_partial(self, index: int) -> None:
        """Leftovers of an interrupted process writing case ``index``."""
        for tmp in self.cases.glob(f".{case_id(index)}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def new_case(self, index: int) -> Path:
        """An empty, not yet existing folder of this process to write case ``index`` into."""
        tmp = self.cases / f".{case_id(index)}.tmp-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        return tmp

    def commit(self, index: int, folder: Path, entry: dict) -> None:
        """Case ``index`` written in ``folder`` (:meth:`new_case`), with its provenance entry, into place."""
        save_json_atomic(entry, folder / PROVENANCE_FILE)
        os.replace(folder, self.cases / case_id(index))  # a case is in the cache complete or not at all

    def all_entries(self, num: int) -> List[dict]:
        """The provenance entries of cases ``0 .. num - 1``, with the records of cases the quality gate rejected
        (``"rejected": true``, no files)."""
        return [read_json(self.cases / case_id(i) / PROVENANCE_FILE) for i in range(num)]

    def entries(self, num: int) -> Dict[str, dict]:
        """``{case: provenance entry}`` of the cases ``0 .. num - 1`` that go into the dataset."""
        return {e["case"]: e for e in self.all_entries(num) if not e.get("rejected")}

    def files(self, case: str, sub: str) -> List[Path]:
        """The files of ``case`` in ``imagesTr`` or ``labelsTr``."""
        return sorted((self.cases / case / sub).iterdir())
