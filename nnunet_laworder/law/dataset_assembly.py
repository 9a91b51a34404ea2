"""The synthetic dataset put together from the real dataset and the cached synthetic cases, once every case is done.

**The dataset.** ``$nnUNet_raw/DatasetNEW_<name>``: imagesTr/labelsTr (and imagesTs/labelsTs when present) of the
real dataset copied byte for byte, the synthetic cases ``law_00000``, ``law_00001``... in imagesTr/labelsTr (linked
from the cache), ``dataset.json`` (numTraining = real + synthetic), ``provenance.json`` and ``splits_final.json``. In
``$nnUNet_preprocessed/DatasetNEW_<name>``: ``splits_final.json`` and the real dataset's plans, unchanged
(:mod:`~nnunet_laworder.law.plans_transfer`), so ``nnUNetv2_preprocess`` and ``nnUNetv2_train`` follow without
planning: the synthetic dataset is never re-planned.

**The split (honest evaluation).** The real cases keep exactly the folds of the real-only dataset
(:func:`~nnunet_laworder.law.splits.real_splits`), so "real only" and "real + synthetic" compare case for case.
Synthetic cases are only ever training cases, and a synthetic case whose *source mask* is one of fold k's validation
cases is left out of fold k's training side: its layout is a transform of that validation case's mask (the same for
the host and the donor of an added lesion). A generator
trained on every training case (``law train`` without ``-f``) has still *seen fold k's validation images*; the leak
rule removes the layouts, not what the weights learned. For a strictly clean fold F, train the generator with
``law train -f F`` (it sees only fold F's training cases), synthesize from that checkpoint (``-f F``) and evaluate
fold F; the printed commands say which folds are clean.

**Atomic, resumable.** The raw dataset and its preprocessed folder (plans, dataset.json, fingerprint,
splits_final.json; each file written atomically) are each written into a hidden staging folder. The preprocessed
folder is renamed into place first, the raw dataset last, so a ``DatasetNEW_*`` in nnUNet_raw never appears without
its plans and split. A run interrupted before that last rename (Ctrl-C, an error) puts the previous preprocessed
folder back (none, for a new id) and leaves no new ``DatasetNEW_*`` in nnUNet_raw; the cache of finished cases
stays, and the same command again resumes (for a new id: without ``--overwrite``). Only a process killed outright
(SIGKILL, power loss) between the two renames can leave a preprocessed folder out of step with nnUNet_raw (the new
plans beside no raw dataset); it never makes a rerun refuse: the rerun replaces it, and removes the staging folders
interrupted runs left. An existing raw dataset of the id is replaced only with ``--overwrite``; the preprocessed
folder of the new name is replaced as a whole (with it the preprocessed data of a replaced dataset, which
``nnUNetv2_preprocess`` makes again). The cache is deleted once the dataset is in place (a process killed just
before that leaves a complete dataset and a hidden ``.law-cache-*`` folder that may be deleted). Of several parts
that find every case done, an ``O_EXCL`` lock file lets only one assemble.
"""
import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from nnunet_laworder.conversion.common import DatasetTarget, write_dataset_json
from nnunet_laworder.errors import InputError
from nnunet_laworder.law.case_cache import CaseCache
from nnunet_laworder.law.plans_transfer import transfer_plans
from nnunet_laworder.law.provenance import CASE_PREFIX, PROVENANCE_FILE, is_synthetic, real_cases, write_provenance
from nnunet_laworder.law.splits import SPLITS_FILE, Splits, synthetic_splits
from nnunet_laworder.nnunet_folders import read_json, save_json_atomic

# dataset.json fields of the source that the new dataset.json sets itself
OWN_FIELDS = ("channel_names", "labels", "numTraining", "file_ending", "name", "licence", "converted_by",
              "description")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(lock: Path, dataset: str) -> bool:
    """Create ``lock`` (``O_EXCL``: one process wins); False when another live process holds it."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
            except (OSError, json.JSONDecodeError):
                owner = {}
            if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
                lock.unlink(missing_ok=True)  # its process died: a stale lock
                continue
            if owner:
                print(f"law synthesize: {owner.get('host')} (pid {owner.get('pid')}) is assembling "
                      f"{dataset}; if that process died, delete {lock} and rerun")
                return False
            raise InputError(f"{lock} exists; another process is assembling {dataset}")
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
        return True
    return False


def assemble(target: DatasetTarget, cache: CaseCache, num: int, source: Path, dataset_json: dict, num_real: int,
             real_splits: Splits, provenance: dict, source_plans: Path, progress: bool = True) -> None:
    """Write ``target`` from the real dataset in ``source`` and the cached cases ``0 .. num - 1``, and say what to
    run next. ``provenance``: the dataset-level fields of provenance.json. ``source_plans``: the real dataset's plans
    file that synthesis used; every plans file beside it is transferred, and the printed commands name this one."""
    lock = target.raw / f".{target.path.name}.law-assemble.lock"
    if not acquire_lock(lock, target.path.name):
        return
    try:
        if not cache.exists():  # another part assembled meanwhile
            print(f"law synthesize: {target.path.name} was already assembled by another part")
            return
        target.refuse_existing()
        preprocessed = _preprocessed_folder(target)
        _remove_stale_staging(target, preprocessed)  # of interrupted assemblies (we hold the lock)
        entries = cache.entries(num)
        splits = synthetic_splits(real_splits, {case: real_cases(entry) for case, entry in entries.items()})
        transferred = None
        # the raw dataset appears last: plans and splits first (the outer block puts the previous preprocessed
        # folder back when publishing the raw dataset fails or is interrupted)
        with _PreprocessedStaging(preprocessed) as preprocessed_staging, target.staging() as folder:
            _write_dataset(folder, target, cache, source, dataset_json, num_real, entries, splits, provenance,
                           progress)
            if preprocessed_staging is not None:
                written = transfer_plans(source_plans.parent, target.path.name, raw=folder,
                                         output=preprocessed_staging.folder)
                save_json_atomic(splits, preprocessed_staging.folder / SPLITS_FILE)
                preprocessed_staging.put_in_place(folder, target.path)
                transferred = [preprocessed / path.name for path in written]
            # leaving target.staging() renames the raw dataset into place
        cache.remove()
    finally:
        lock.unlink(missing_ok=True)
    print_summary(target, num_real, len(entries), splits, (preprocessed or target.path) / SPLITS_FILE, provenance,
                  source_plans, transferred)


class _PreprocessedStaging:
    """``$nnUNet_preprocessed/DatasetNEW_<name>`` written into a hidden folder beside it (``folder``) and put in place
    as a whole (:meth:`put_in_place`, the previous folder of that name moved aside) just before the raw dataset is.
    When the ``with`` block fails without the raw dataset having appeared, the previous folder is put back;
    otherwise it is deleted. ``with _PreprocessedStaging(None)`` yields None (nnUNet_preprocessed is not set)."""

    def __init__(self, final: Optional[Path]):
        self.final = final
        if final is not None:
            tag = uuid.uuid4().hex[:8]
            self.folder = final.parent / f".{final.name}.partial-{tag}"
            self.aside = final.parent / f".{final.name}.replaced-{tag}"
        self.raw = None  # (the raw dataset's final path, its staging folder's stat) once placed

    def __enter__(self) -> Optional["_PreprocessedStaging"]:
        if self.final is None:
            return None
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.folder.mkdir()
        return self

    def put_in_place(self, raw_staging: Path, raw_final: Path) -> None:
        """Rename ``folder`` into place; ``raw_staging`` is the raw dataset about to be renamed to ``raw_final``."""
        raw = (raw_final, raw_staging.stat())
        if self.final.exists():
            self.final.rename(self.aside)
        try:
            self.folder.rename(self.final)
        except BaseException:
            if self.aside.exists():
                self.aside.rename(self.final)
            raise
        self.raw = raw

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.final is None:
            return
        try:
            if self.raw is not None and (exc_type is None or self._raw_published()):
                shutil.rmtree(self.aside, ignore_errors=True)
            elif self.raw is not None:  # the raw dataset did not appear: no plans without it
                shutil.rmtree(self.final)
                if self.aside.exists():
                    self.aside.rename(self.final)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _raw_published(self) -> bool:
        """Whether the raw staging folder became the raw dataset (an interruption may come after that rename,
        e.g. while a replaced dataset is deleted: its plans must stay then)."""
        final, staging = self.raw
        try:
            now = final.stat()
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (staging.st_dev, staging.st_ino)


def _remove_stale_staging(target: DatasetTarget, preprocessed: Optional[Path]) -> None:
    """The staging folders that interrupted assemblies of ``target`` left behind: ``.DatasetNEW_<name>.partial-*``
    in nnUNet_raw and nnUNet_preprocessed, and a preprocessed folder moved aside by a run killed before it could
    put it back or delete it (``.replaced-*``; the raw dataset decides: a preprocessed folder is rewritten anyway)."""
    stale = list(target.raw.glob(f".{target.path.name}.partial-*"))
    if preprocessed is not None and preprocessed.parent.is_dir():
        stale += preprocessed.parent.glob(f".{preprocessed.name}.partial-*")
        stale += preprocessed.parent.glob(f".{preprocessed.name}.replaced-*")
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)


def _write_dataset(folder: Path, target: DatasetTarget, cache: CaseCache, source: Path, dataset_json: dict,
                   num_real: int, entries: Dict[str, dict], splits: Splits, provenance: dict, progress: bool) -> None:
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        if not (source / sub).is_dir():
            continue
        (folder / sub).mkdir()
        files = sorted(p for p in (source / sub).iterdir() if p.is_file())
        for path in tqdm(files, desc=f"copying real {sub}", unit="file", disable=not progress):
            shutil.copy2(path, folder / sub / path.name)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(exist_ok=True)
    for case in entries:
        for sub in ("imagesTr", "labelsTr"):
            for path in cache.files(case, sub):
                _link_or_copy(path, folder / sub / path.name)
    description = dataset_json.get("description")
    note = f"{source.name} + {len(entries)} LAW synthetic cases ({CASE_PREFIX}*, see {PROVENANCE_FILE})"
    write_dataset_json(folder, num_real + len(entries), channel_names=dict(dataset_json["channel_names"]),
                       labels=dict(dataset_json["labels"]), file_ending=dataset_json["file_ending"],
                       dataset_name=target.path.name[len("DatasetXXX_"):],
                       description=f"{description}; {note}" if description else note,
                       license=dataset_json.get("licence", "see the source dataset"),
                       converted_by="nnunet-laworder law synthesize",
                       **{k: v for k, v in dataset_json.items() if k not in OWN_FIELDS})
    write_provenance(folder, entries, **provenance)
    save_json_atomic(splits, folder / SPLITS_FILE)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _preprocessed_folder(target: DatasetTarget) -> Optional[Path]:
    """``$nnUNet_preprocessed/DatasetNEW_<name>`` (None when nnUNet_preprocessed is not set)."""
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        print("law synthesize: nnUNet_preprocessed is not set; splits_final.json is only in the raw dataset and the "
              "source's plans were not transferred (nnUNetv2_move_plans_between_datasets copies plans)")
        return None
    return Path(root) / target.path.name


def print_summary(target: DatasetTarget, num_real: int, num_synthetic: int, splits: Splits, splits_file: Path,
                  provenance: dict, source_plans: Path, transferred: Optional[List[Path]]) -> None:
    """What was written, fold by fold, and the nnU-Net commands that train on it (which folds are clean).
    ``source_plans``: the plans file the commands name; ``transferred``: the plans files written for the new dataset."""
    print(f"law synthesize: wrote {target.path} ({num_real} real + {num_synthetic} synthetic training cases) and "
          f"{splits_file}")
    if transferred:
        print(f"  plans of {provenance['source_dataset']}, unchanged but for dataset_name: "
              f"{', '.join(str(path) for path in transferred)}")
    for k, fold in enumerate(splits):
        n_fold_syn = sum(is_synthetic(c) for c in fold["train"])
        print(f"  fold {k}: {len(fold['train']) - n_fold_syn} real + {n_fold_syn} synthetic training, "
              f"{len(fold['val'])} real validation cases")
    fold = provenance["generator_fold"]
    if isinstance(fold, int):
        folds, note = str(fold), (f"the generator saw only fold {fold}'s training cases: fold {fold} is the clean "
                                  f"comparison")
    else:
        folds, note = "0 1 2 3 4", ("the generator was trained on every training case, so it has seen each fold's "
                                     "validation images (their layouts are kept out of that fold's training side); "
                                     "for a strictly clean fold F use 'law train -f F' and 'law synthesize -f F'")
    # one-slice volumes: nnU-Net's 3D configurations cannot learn from them, its 2d sees every case slice by slice
    slice_wise = provenance["layout"]["slice_axis"] is not None
    train_config = "2d" if slice_wise else provenance["configuration"]
    # preprocessing train_config makes the data of every configuration with its data_identifier (the plugin's
    # 2d_order, 2d_mkunet... inherit it)
    manager = PlansManager(read_json(source_plans))
    data = manager.get_configuration(train_config).data_identifier
    same_data = [c for c in manager.available_configurations
                 if c != train_config and manager.get_configuration(c).data_identifier == data]
    new_id, name = target.dataset_id, source_plans.stem  # the plans identifier nnU-Net's -p takes
    also = (f"  # the same preprocessed data trains {', '.join(same_data)} too, with the real-only runs' trainers "
            f"(e.g. -tr nnUNetTrainerORDER for *_order)\n" if same_data else "")
    print(f"next ({note}):\n"
          f"  # the plans are {provenance['source_dataset']}'s, unchanged: no nnUNetv2_plan_and_preprocess, no "
          f"`nnunet-laworder plans`\n"
          f"  nnUNetv2_preprocess -d {new_id} -plans_name {name} -c {train_config}\n"
          f"  for f in {folds}; do nnUNetv2_train {new_id} {train_config} $f -tr nnUNetTrainer -p {name}; done\n"
          f"{also}"
          f"  # and the real-only reference: nnUNetv2_train {provenance['source_dataset_id']} {train_config} FOLD "
          f"-tr nnUNetTrainer -p {name}")
