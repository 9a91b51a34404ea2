"""``nnunet-laworder law synthesize``: a new nnU-Net raw dataset = the real cases + LAW synthetic cases, with the
split nnU-Net will use. Usage::

    nnunet-laworder law synthesize -d 901 -o 911                      # Dataset911_<source name>LAW
    nnunet-laworder law synthesize -d 901 -o 911 -f 0 --num 500 --sampler dpm --steps 25 -device cuda
    nnUNetv2_plan_and_preprocess -d 911 -c 2d                          # then train as the real-only dataset
    nnUNetv2_train 911 2d 0

**Conditioning.** Only the masks of the generator's *training* cases (the checkpoint records them: every training
case, or fold F's training cases for ``law train -f F``), never a validation or test mask. Synthetic case ``i`` takes
source mask ``i mod n`` of a seeded permutation of those ``n`` cases (a new permutation every ``n`` cases), moves it
to a new layout with a random transform of :mod:`nnunet_laworder.law.transforms` (flips, rotations, scaling,
elastic deformation; nearest neighbour; draws that lose a structure are rejected) at the source's own size, then
brings it to the generator's size as training did (2D: resized to ``layout.image_size``; small 3D: padded / cropped
to the box) and samples the image (DDIM, 50 steps by default) from a noise seed of its own. Everything about case
``i`` is a function of ``(--seed, i)``, the checkpoint, the sampler and the steps; ``provenance.json`` records it.

**Writing.** Images go back to the dataset's intensities (``normaliser.inverse``) and its file format and pixel type:
2D png/bmp through PIL (RGB / grey, the source image's bit depth) *at the source case's size* (the generated image
is resized back, bilinear; the label is the transformed source mask itself); NIfTI / nrrd / mha through SimpleITK
with the source case's spacing, origin and direction. Labels are written with the dataset's nnU-Net reader/writer
(``write_seg``), as real labels are read. Small 3D volumes are written as the generator's box. **Slice-wise 3D
generators** (``law train --layout slices``, e.g. KiTS CT): a source is one foreground slice of a training volume
along ``layout.slice_axis``; the synthetic case is a volume of *one slice* at the source's in-plane size, with the
source's spacing and direction and the origin of that slice. nnU-Net's 3D configurations cannot learn from
one-slice volumes; train the new dataset's ``2d`` configuration (which sees every case slice by slice).

**The dataset.** ``$nnUNet_raw/DatasetNEW_<name>``: imagesTr/labelsTr (and imagesTs/labelsTs when present) of the
real dataset copied byte for byte, the synthetic cases ``law_00000``, ``law_00001``... in imagesTr/labelsTr,
``dataset.json`` (numTraining = real + synthetic), ``provenance.json`` and ``splits_final.json`` (nnU-Net's planner
copies a raw ``splits_final.json`` into the preprocessed folder; we also write it there directly).

**The split (honest evaluation).** The real cases keep exactly the folds of the real-only dataset
(``$nnUNet_preprocessed/DatasetID/splits_final.json``, or nnU-Net's own 5-fold split of the sorted case ids with
seed 12345 when it does not exist yet), so "real only" and "real + synthetic" compare case for case. Synthetic
cases are only ever training cases, and a synthetic case whose *source mask* is one of fold k's validation cases
is left out of fold k's training side: its layout is a transform of that validation case's mask. A generator
trained on every training case (``law train`` without ``-f``) has still *seen fold k's validation images*; the leak
rule removes the layouts, not what the weights learned. For a strictly clean fold F, train the generator with
``law train -f F`` (it sees only fold F's training cases), synthesize from that checkpoint (``-f F``) and evaluate
fold F; the printed commands say which folds are clean.

**Atomic and resumable.** Finished synthetic cases go to a hidden cache ``$nnUNet_raw/.law-cache-DatasetNEW_
<name>-<key>/`` keyed by the checkpoint hash, seed, sampler, steps and the conditioning cases, one folder per case
index, moved into place only once complete: a rerun after an interruption samples only what is missing (the same
command line, or a larger ``--num``). The dataset is assembled in a hidden staging folder and renamed into place at
the end (the machinery of the converters): an interrupted run leaves no ``DatasetNEW_*``; an existing id is replaced
only with ``--overwrite``. The cache is deleted once the dataset is in place.

**Sharding** (like ``nnUNetv2_predict -num_parts -part_id``): run the same command with ``--num-parts P --part-id
I`` for I = 0..P-1, on as many GPUs / machines as you like sharing ``$nnUNet_raw``; part I samples the cases
``i`` with ``i % P == I`` into the shared cache. A part that finishes while others are still sampling says so and
exits; the part that finds every case done assembles the dataset (an ``O_EXCL`` lock file makes sure only one does).
``CUDA_VISIBLE_DEVICES=0 nnunet-laworder law synthesize ... --num-parts 2 --part-id 0 &`` /
``CUDA_VISIBLE_DEVICES=1 ... --part-id 1``. The result equals an unsharded run with the same seed on the same kind
of device (the initial noise comes from a generator on the sampling device).
"""
import argparse
import json
import os
import socket
import sys
from pathlib import Path

SAMPLER_CHOICES = ("ddim", "dpm")
WEIGHTING_CHOICES = ("law", "prior", "uniform")
CASE_PREFIX = "law_"
CACHE_FORMAT = 2  # 2: DDIM clips its clean-image estimate to the data's range
PROVENANCE = "provenance.json"
SPLITS = "splits_final.json"
PIL_ENDINGS = (".png", ".bmp")
SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd")


def _fold(value: str):
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must be an integer or 'all', got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="the real dataset (id or name), planned")
    parser.add_argument("-o", dest="output_id", type=int, required=True,
                        help="id of the new dataset (real + synthetic cases); must differ from -d")
    parser.add_argument("--name", default=None, help="name of the new dataset (default: <source name>LAW)")
    parser.add_argument("-c", dest="configuration", default=None,
                        help="configuration the generator was trained with (default: the checkpoint's, else 2d, "
                             "or 3d_fullres when the plans have no 2d)")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--weighting", choices=WEIGHTING_CHOICES, default=None,
                        help="which 'law train' run to use (default law; with --checkpoint: the checkpoint's)")
    parser.add_argument("-f", dest="fold", type=_fold, default=None,
                        help="use the generator of 'law train -f FOLD' (default: the one trained on every "
                             "training case)")
    parser.add_argument("--checkpoint", default=None,
                        help="generator checkpoint (default: $nnUNet_results/DatasetID/LAW__<weighting>__<config>"
                             "[/fold_F]/checkpoint_final.pth)")
    parser.add_argument("--num", type=int, default=None,
                        help="number of synthetic cases (default: the number of real training cases the generator "
                             "was trained on, one new layout per mask)")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    parser.add_argument("--sampler", choices=SAMPLER_CHOICES, default="ddim",
                        help="ddim (default) or dpm (DPM-Solver++ multistep)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sources, transforms and noise (default 0)")
    parser.add_argument("--num-parts", type=int, default=1,
                        help="shard the sampling into this many parts (run one process per part)")
    parser.add_argument("--part-id", type=int, default=0, help="which part this process samples (0..parts-1)")
    parser.add_argument("-device", "--device", dest="device", default=None,
                        help="cuda, cpu or mps, as nnU-Net's -device (default: cuda when available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the new id")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def run(args) -> int:
    synthesis = Synthesis.prepare(args)
    synthesis.sample_part()
    if not synthesis.complete():
        missing = synthesis.missing()
        print(f"law synthesize: part {args.part_id} of {args.num_parts} done; {len(missing)} of {synthesis.num} "
              f"synthetic cases are still being sampled by the other parts (the last part to finish writes "
              f"{synthesis.target.path.name})")
        return 0
    return synthesis.assemble()


def main(argv=None) -> int:
    """``python -m nnunet_laworder.law.synthesize ...`` (the same as ``nnunet-laworder law synthesize``)."""
    from nnunet_laworder.errors import InputError

    parser = argparse.ArgumentParser(prog="nnunet-laworder law synthesize", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args) or 0
    except InputError as e:
        print(f"nnunet-laworder law synthesize: error: {e}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------------------------
# helpers


def case_id(index: int) -> str:
    return f"{CASE_PREFIX}{index:05d}"


def _json_atomic(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def real_splits(preprocessed_source: Path, identifiers) -> tuple:
    """(folds of the real-only dataset, where they came from): its splits_final.json, else nnU-Net's own 5-fold
    split (``nnUNetTrainer.do_split``: ``generate_crossval_split`` of the sorted ids, seed 12345)."""
    import numpy as np
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    from nnunet_laworder.errors import InputError

    file = Path(preprocessed_source) / SPLITS
    if file.is_file():
        try:
            splits = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{file} is not valid JSON: {e}") from None
        known = set(identifiers)
        unknown = sorted({c for fold in splits for c in (*fold["train"], *fold["val"])} - known)
        if unknown:
            raise InputError(f"{file} lists cases that are not training cases of the dataset: "
                             f"{', '.join(unknown[:5])}")
        return [{"train": list(f["train"]), "val": list(f["val"])} for f in splits], str(file)
    splits = generate_crossval_split(list(np.sort(list(identifiers))), seed=12345, n_splits=5)
    return [{"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in splits], \
        "generated as nnU-Net does (generate_crossval_split, seed 12345, 5 folds)"


def synthetic_splits(splits: list, sources: dict) -> list:
    """Real folds unchanged; every synthetic case (``{case: source case}``) joins the training side of each fold
    whose validation cases do not hold its source; no synthetic case is ever a validation case."""
    out = []
    for fold in splits:
        val = set(fold["val"])
        out.append({"train": list(fold["train"]) + [c for c in sorted(sources) if sources[c] not in val],
                    "val": list(fold["val"])})
    return out


def _image_dtype(path: str, ending: str):
    """The pixel type of a source image file (synthetic images are written with the same)."""
    import numpy as np

    if ending in PIL_ENDINGS:
        from PIL import Image

        with Image.open(path) as image:
            return np.dtype(np.uint16) if image.mode.startswith("I;16") else \
                np.dtype(np.int32) if image.mode == "I" else np.dtype(np.uint8)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    if reader.GetNumberOfComponents() != 1:
        from nnunet_laworder.errors import InputError
        raise InputError(f"{path}: {reader.GetNumberOfComponents()}-component pixels are not supported for "
                         f"synthesis (nnU-Net expects one channel per file)")
    return sitk.GetArrayFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype


def _cast(image, dtype):
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def _slice_origin(sitk_stuff: dict, slice_axis: int, index: int) -> list:
    """Physical position of voxel ``index`` along numpy axis ``slice_axis`` (sitk axes are reversed)."""
    import numpy as np

    dim = len(sitk_stuff["spacing"])
    voxel = np.zeros(dim)
    voxel[dim - 1 - slice_axis] = index
    direction = np.array(sitk_stuff["direction"], dtype=np.float64).reshape(dim, dim)
    origin = np.array(sitk_stuff["origin"]) + direction @ (voxel * np.array(sitk_stuff["spacing"]))
    return [float(v) for v in origin]


# ---------------------------------------------------------------------------------------------------------------
# the synthesis


class Synthesis:
    """Everything one ``law synthesize`` process needs, checked before any work (:meth:`prepare`)."""

    # -- checks -------------------------------------------------------------------------------------------------

    @classmethod
    def prepare(cls, args) -> "Synthesis":
        self = cls()
        self.args = args
        self._check_numbers()
        self._resolve_datasets()
        self._load_checkpoint()
        self._check_data()
        self._resolve_device()
        self._setup_cache()
        return self

    def _check_numbers(self):
        from nnunet_laworder.errors import InputError

        a = self.args
        if a.steps < 1:
            raise InputError(f"--steps must be at least 1, got {a.steps}")
        if a.num is not None and a.num < 1:
            raise InputError(f"--num must be at least 1, got {a.num}")
        if a.num_parts < 1 or not 0 <= a.part_id < a.num_parts:
            raise InputError(f"--part-id must be in 0..{a.num_parts - 1} (--num-parts {a.num_parts}), got {a.part_id}")
        if a.num is not None and a.num > 99999:
            raise InputError(f"--num must be at most 99999 (case ids {CASE_PREFIX}00000..), got {a.num}")

    def _resolve_datasets(self):
        from nnunet_laworder.conversion.common import DatasetTarget
        from nnunet_laworder.errors import InputError
        from nnunet_laworder.law.data import raw_dataset_folder
        from nnunet_laworder.planning.plans_file import preprocessed_dataset_folder

        a = self.args
        self.raw = raw_dataset_folder(str(a.dataset))
        self.source_name = self.raw.name
        self.source_id = int(self.source_name[len("Dataset"):len("Dataset") + 3])
        if a.output_id == self.source_id:
            raise InputError(f"-o {a.output_id} is the id of the source dataset {self.source_name}; choose a new id")
        self.preprocessed = preprocessed_dataset_folder(str(a.dataset))
        self.plans_file = self.preprocessed / f"{a.plans}.json"
        if not self.plans_file.is_file():
            raise InputError(f"plans file {self.plans_file} not found; run nnUNetv2_plan_and_preprocess -d "
                             f"{self.source_id} (and 'law train') first")
        self.plans = json.loads(self.plans_file.read_text())
        self.dataset_json = json.loads((self.raw / "dataset.json").read_text())
        if "dataset" in self.dataset_json:
            raise InputError(f"{self.raw / 'dataset.json'} lists its files in a 'dataset' entry; synthesis needs the "
                             f"imagesTr/labelsTr layout")
        name = a.name or f"{self.source_name[len('DatasetXXX_'):]}LAW"
        self.target = DatasetTarget.resolve(a.output_id, name, a.overwrite)
        # nnU-Net looks ids up in raw, preprocessed and results: a second name for the id there breaks it
        for variable in ("nnUNet_preprocessed", "nnUNet_results"):
            root = os.environ.get(variable)
            if not root or not Path(root).is_dir():
                continue
            others = [p for p in Path(root).glob(f"Dataset{a.output_id:03d}_*")
                      if p.is_dir() and p.name != self.target.path.name]
            if others:
                raise InputError(f"{others[0]} holds dataset id {a.output_id:03d} under another name; nnU-Net would "
                                 f"not know which is meant. Remove it or pass --name {others[0].name[11:]}")

    def _load_checkpoint(self):
        from nnunet_laworder.errors import InputError
        from nnunet_laworder.law.data import default_configuration
        from nnunet_laworder.law.generator import checkpoint_hash, load_checkpoint
        from nnunet_laworder.law.train import run_folder

        a = self.args
        if a.checkpoint is not None:
            path = Path(a.checkpoint)
            if not path.is_file():
                raise InputError(f"checkpoint {path} not found")
        else:
            results = os.environ.get("nnUNet_results")
            if not results:
                raise InputError("nnUNet_results is not set (the default checkpoint is law train's output there); "
                                 "export it or give --checkpoint")
            configuration = a.configuration or default_configuration(self.plans)
            path = run_folder(results, self.source_name, a.weighting or "law", configuration, a.fold) / \
                "checkpoint_final.pth"
            if not path.is_file():
                fold = f" -f {a.fold}" if a.fold is not None else ""
                raise InputError(f"checkpoint {path} not found; train the generator first: nnunet-laworder law train "
                                 f"-d {self.source_id} -c {configuration} --weighting {a.weighting or 'law'}{fold} "
                                 f"(or give --checkpoint)")
        self.checkpoint = path.resolve()
        try:
            self.generator, extra = load_checkpoint(self.checkpoint, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - whatever torch.load / the state raise: not a LAW checkpoint
            raise InputError(f"{self.checkpoint} is not a LAW generator checkpoint ({type(e).__name__}: {e})") from None
        layout = self.generator.layout
        data = dict(layout.extra or {})
        data.update(extra.get("data") or {})
        self.generator_data = data
        self.weighting = self.generator.weighting.mode
        if a.weighting is not None and a.weighting != self.weighting:
            raise InputError(f"{self.checkpoint} was trained with --weighting {self.weighting}, not {a.weighting}")
        trained_on = data.get("dataset")
        if trained_on is not None and trained_on != self.source_name:
            raise InputError(f"{self.checkpoint} was trained on {trained_on}, not on {self.source_name}")
        self.configuration = data.get("configuration") or a.configuration or default_configuration(self.plans)
        if a.configuration is not None and a.configuration != self.configuration:
            raise InputError(f"{self.checkpoint} was trained with configuration {self.configuration}, not "
                             f"{a.configuration}")
        if self.configuration not in self.plans["configurations"]:
            raise InputError(f"{self.plans_file} has no configuration {self.configuration!r}")
        self.generator_fold = data.get("fold")
        self.checkpoint_hash = checkpoint_hash(self.checkpoint)

    def _check_data(self):
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        from nnunet_laworder.errors import InputError
        from nnunet_laworder.law.data import training_files
        from nnunet_laworder.law.generator import foreground_labels

        layout = self.generator.layout
        self.files = training_files(self.raw, self.dataset_json)
        identifiers = sorted(self.files)
        cases = self.generator_data.get("cases")
        self.conditioning = sorted(cases) if cases else identifiers
        unknown = sorted(set(self.conditioning) - set(identifiers))
        if unknown:
            raise InputError(f"{self.checkpoint} was trained on cases that are not training cases of "
                             f"{self.source_name}: {', '.join(unknown[:5])}")
        labels = foreground_labels(self.dataset_json)
        if list(layout.labels) != labels:
            raise InputError(f"{self.checkpoint} generates labels {layout.labels}, {self.source_name} has {labels}")
        channels = len(self.dataset_json["channel_names"])
        if self.generator.denoiser.image_channels != channels:
            raise InputError(f"{self.checkpoint} generates {self.generator.denoiser.image_channels} channels, "
                             f"{self.source_name} has {channels}")
        self.ending = self.dataset_json["file_ending"]
        if self.ending not in PIL_ENDINGS + SITK_ENDINGS:
            raise InputError(f"file ending {self.ending} is not supported for synthesis (supported: "
                             f"{', '.join(PIL_ENDINGS + SITK_ENDINGS)})")
        first = self.files[identifiers[0]]
        self.rw_class = determine_reader_writer_from_dataset_json(self.dataset_json, first["images"][0],
                                                                  verbose=False)
        expected = "NaturalImage2DIO" if self.ending in PIL_ENDINGS else "SimpleITKIO"
        if self.rw_class.__name__ != expected:
            raise InputError(f"{self.source_name} is read with {self.rw_class.__name__}; synthesis writes "
                             f"{self.ending} files as {expected} reads them")
        self.files_per_case = len(first["images"])
        if channels % self.files_per_case or (self.ending in SITK_ENDINGS and self.files_per_case != channels):
            raise InputError(f"{self.source_name}: {self.files_per_case} image files per case for {channels} channels")
        real_ids = set(identifiers)
        for sub in ("imagesTs", "labelsTs"):
            if (self.raw / sub).is_dir():
                real_ids |= {p.name.split(".")[0] for p in (self.raw / sub).iterdir()}
        clash = sorted(c for c in real_ids if c.startswith(CASE_PREFIX))
        if clash:
            raise InputError(f"{self.source_name} has cases named like synthetic cases ({', '.join(clash[:3])})")
        self.splits, self.splits_source = real_splits(self.preprocessed, identifiers)
        fold = self.generator_fold
        if isinstance(fold, int) and fold < len(self.splits):
            seen = sorted(set(self.conditioning) & set(self.splits[fold]["val"]))
            if seen:
                raise InputError(f"{self.checkpoint} was trained on fold {fold}, but its training cases include "
                                 f"validation cases of fold {fold} in {self.splits_source} ({', '.join(seen[:3])}); "
                                 f"was splits_final.json changed after 'law train'?")
        self.num = self.args.num or len(self.conditioning)

    def _resolve_device(self):
        import torch

        from nnunet_laworder.errors import InputError

        name = self.args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
            raise InputError(f"-device must be cpu, cuda or mps, got {name!r}")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("-device cuda: no CUDA device available; use -device cpu")
        if name == "mps" and not torch.backends.mps.is_available():
            raise InputError("-device mps: MPS is not available; use -device cpu")
        self.device = torch.device(name)

    def _setup_cache(self):
        import hashlib

        from nnunet_laworder.law.transforms import TransformConfig

        layout = self.generator.layout
        self.transform_config = TransformConfig.for_dim(2 if layout.slice_axis is not None else layout.dim)
        self.key_fields = {"format": CACHE_FORMAT, "checkpoint_hash": self.checkpoint_hash, "seed": self.args.seed,
                           "sampler": self.args.sampler, "steps": self.args.steps, "source": self.source_name,
                           "conditioning_cases": self.conditioning,
                           "transform_config": self.transform_config.to_dict()}
        key = hashlib.sha256(json.dumps(self.key_fields, sort_keys=True).encode()).hexdigest()[:16]
        self.cache = self.target.raw / f".law-cache-{self.target.path.name}-{key}"
        self.cases_dir = self.cache / "cases"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.cache / "key.json"
        if not key_file.is_file():
            _json_atomic(self.key_fields, key_file)
        self.lock = self.target.raw / f".{self.target.path.name}.law-assemble.lock"

    # -- sampling -----------------------------------------------------------------------------------------------

    def missing(self) -> list:
        return [i for i in range(self.num) if not (self.cases_dir / case_id(i)).is_dir()]

    def complete(self) -> bool:
        return not self.missing()

    def _source_of(self, index: int) -> str:
        import numpy as np

        n = len(self.conditioning)
        permutation = np.random.default_rng([self.args.seed, 0x5EED, index // n]).permutation(n)
        return self.conditioning[int(permutation[index % n])]

    def sample_part(self) -> None:
        from tqdm import tqdm

        a = self.args
        mine = [i for i in range(self.num) if i % a.num_parts == a.part_id]
        for i in mine:  # leftovers of an interrupted run of this part
            for tmp in self.cases_dir.glob(f".{case_id(i)}.tmp-*"):
                _rmtree(tmp)
        todo = [i for i in mine if not (self.cases_dir / case_id(i)).is_dir()]
        print(f"law synthesize: {self.num} synthetic cases from {len(self.conditioning)} training masks of "
              f"{self.source_name} ({self.weighting} generator {self.checkpoint}, fold {self.generator_fold}); "
              f"part {a.part_id}/{a.num_parts}: {len(mine)} cases, {len(mine) - len(todo)} already cached, "
              f"{len(todo)} to sample ({a.sampler}, {a.steps} steps, {self.device})")
        if not todo:
            return
        self._setup_model()
        for i in tqdm(todo, desc="synthesizing", unit="case", disable=not a.progress):
            self._synthesize_case(i)

    def _setup_model(self):
        from nnunet_laworder.law.diffusion import sampling_scheduler, training_scheduler

        self.generator.to(self.device)
        self.generator.denoiser.eval()
        self.train_schedule = training_scheduler()
        clip_range = self.generator.normaliser.normalised_bound()
        self.sampling_scheduler = lambda: sampling_scheduler(self.train_schedule, self.args.sampler, clip_range)
        self.rw = self.rw_class()

    def _synthesize_case(self, index: int) -> None:
        import numpy as np
        import torch

        from nnunet_laworder.law.data import fit_to_layout, resize_image
        from nnunet_laworder.law.diffusion import sample
        from nnunet_laworder.law.generator import one_hot
        from nnunet_laworder.law.transforms import random_transform

        layout = self.generator.layout
        source = self._source_of(index)
        files = self.files[source]
        rng = np.random.default_rng([self.args.seed, index])
        noise_seed = int(rng.integers(0, 2 ** 62))
        seg, properties = self.rw.read_seg(files["label"])
        seg = seg[0]  # (1, H, W) for 2D images, (D, H, W) for volumes
        source_slice = None
        if layout.slice_axis is not None:
            axis = layout.slice_axis
            per_slice = np.moveaxis(seg, axis, 0).reshape(seg.shape[axis], -1).max(1)
            candidates = np.flatnonzero(per_slice > 0)
            if len(candidates) == 0:
                candidates = np.arange(seg.shape[axis])
            source_slice = int(candidates[rng.integers(0, len(candidates))])
            native = np.take(seg, source_slice, axis=axis)
        elif layout.dim == 2:
            native = seg[0]
        else:
            native = seg
        native = native.astype(np.int16)
        size = list(layout.image_size)

        def survives_fitting(mask):  # no structure may vanish on the way to the generator's size
            return set(np.unique(fit_to_layout(None, mask, layout)[1])) >= set(np.unique(mask))

        transformed, params = random_transform(native, rng, self.transform_config, accept=survives_fitting)
        condition = fit_to_layout(None, transformed, layout)[1]
        masks = torch.from_numpy(one_hot(condition, list(layout.labels)))[None].to(self.device)
        generator = torch.Generator(device=self.device).manual_seed(noise_seed)
        x = sample(self.generator.denoiser, masks, self.sampling_scheduler(), self.args.steps, generator)
        image = self.generator.normaliser.inverse(x[0].float().cpu().numpy().astype(np.float64))
        if layout.dim == 2:  # back to the source's size; the label is the transformed source mask itself
            image = resize_image(image, transformed.shape).astype(np.float64)
            label = transformed
        else:
            label = condition
        if layout.slice_axis is not None:  # a volume of one slice
            image = np.expand_dims(image, 1 + layout.slice_axis)
            label = np.expand_dims(label, layout.slice_axis)
        elif layout.dim == 2:
            image, label = image[:, None], label[None]
        # image: (C, *spatial of the written file, with the leading 1 for 2D), label: (*spatial); intensities stay
        # in the normaliser's range (inverse clips; bilinear resizing cannot leave it)
        case = case_id(index)
        tmp = self.cases_dir / f".{case}.tmp-{socket.gethostname()}-{os.getpid()}"
        _rmtree(tmp)
        (tmp / "imagesTr").mkdir(parents=True)
        (tmp / "labelsTr").mkdir()
        self._write_images(image, files, properties, source_slice, tmp / "imagesTr", case)
        self.rw.write_seg(label.astype(np.uint8 if label.max() < 255 else np.uint16),
                          str(tmp / "labelsTr" / f"{case}{self.ending}"),
                          self._label_properties(properties, source_slice))
        entry = {"case": case, "case_index": index, "source_case": source, "source_slice": source_slice,
                 "transform": params, "seed": noise_seed, "run_seed": self.args.seed, "sampler": self.args.sampler,
                 "steps": self.args.steps, "checkpoint": str(self.checkpoint),
                 "checkpoint_hash": self.checkpoint_hash, "weighting": self.weighting,
                 "generator_fold": self.generator_fold, "device": self.device.type,
                 "generated_size": size, "written_shape": list(label.shape)}
        _json_atomic(entry, tmp / PROVENANCE)
        os.replace(tmp, self.cases_dir / case)  # a case is in the cache complete or not at all

    def _label_properties(self, properties: dict, source_slice):
        if source_slice is None or "sitk_stuff" not in properties:
            return properties
        properties = dict(properties, sitk_stuff=dict(properties["sitk_stuff"]))
        properties["sitk_stuff"]["origin"] = _slice_origin(properties["sitk_stuff"], self.generator.layout.slice_axis,
                                                           source_slice)
        return properties

    def _write_images(self, image, files: dict, properties: dict, source_slice, folder: Path, case: str) -> None:
        """``image (C, *spatial)`` into the files the source case has (``CASE_0000`` ...), in its pixel type."""
        import numpy as np

        per_file = image.shape[0] // self.files_per_case
        for k, source_file in enumerate(files["images"]):
            dtype = _image_dtype(source_file, self.ending)
            channels = _cast(image[k * per_file:(k + 1) * per_file], dtype)
            path = folder / f"{case}_{k:04d}{self.ending}"
            if self.ending in PIL_ENDINGS:
                from PIL import Image

                pixels = channels[:, 0]  # (c, H, W)
                pixels = pixels[0] if per_file == 1 else np.moveaxis(pixels, 0, -1)
                Image.fromarray(np.ascontiguousarray(pixels)).save(path)
            else:
                import SimpleITK as sitk

                stuff = self._label_properties(properties, source_slice)["sitk_stuff"]
                volume = channels[0]
                if len(stuff["spacing"]) == 2:
                    volume = volume[0]
                itk = sitk.GetImageFromArray(volume)
                itk.SetSpacing(stuff["spacing"])
                itk.SetOrigin(stuff["origin"])
                itk.SetDirection(stuff["direction"])
                sitk.WriteImage(itk, str(path), True)

    # -- the dataset --------------------------------------------------------------------------------------------

    def _acquire_lock(self) -> bool:
        from nnunet_laworder.errors import InputError

        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(self.lock.read_text())
                except (OSError, json.JSONDecodeError):
                    owner = {}
                if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
                    self.lock.unlink(missing_ok=True)  # its process died: a stale lock
                    continue
                if owner:
                    print(f"law synthesize: {owner.get('host')} (pid {owner.get('pid')}) is assembling "
                          f"{self.target.path.name}; if that process died, delete {self.lock} and rerun")
                    return False
                raise InputError(f"{self.lock} exists; another process is assembling {self.target.path.name}")
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
            return True
        return False

    def assemble(self) -> int:
        if not self._acquire_lock():
            return 0
        try:
            if not self.cache.is_dir():  # another part assembled meanwhile
                print(f"law synthesize: {self.target.path.name} was already assembled by another part")
                return 0
            self.target.refuse_existing()
            for stale in self.target.raw.glob(f".{self.target.path.name}.partial-*"):
                _rmtree(stale)  # staging folders of interrupted assemblies (we hold the lock)
            entries = {case_id(i): json.loads((self.cases_dir / case_id(i) / PROVENANCE).read_text())
                       for i in range(self.num)}
            sources = {case: entry["source_case"] for case, entry in entries.items()}
            splits = synthetic_splits(self.splits, sources)
            with self.target.staging() as folder:
                self._write_dataset(folder, entries, splits)
            self._write_preprocessed_splits(splits)
            _rmtree(self.cache)
        finally:
            self.lock.unlink(missing_ok=True)
        self._print_summary(entries, splits)
        return 0

    def _write_dataset(self, folder: Path, entries: dict, splits: list) -> None:
        import shutil

        from tqdm import tqdm

        from nnunet_laworder.conversion.common import write_dataset_json

        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            if not (self.raw / sub).is_dir():
                continue
            (folder / sub).mkdir()
            files = sorted(p for p in (self.raw / sub).iterdir() if p.is_file())
            for path in tqdm(files, desc=f"copying real {sub}", unit="file", disable=not self.args.progress):
                shutil.copy2(path, folder / sub / path.name)
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(exist_ok=True)
        for case in entries:
            for sub in ("imagesTr", "labelsTr"):
                for path in sorted((self.cases_dir / case / sub).iterdir()):
                    _link_or_copy(path, folder / sub / path.name)
        fields = {k: v for k, v in self.dataset_json.items()
                  if k not in ("channel_names", "labels", "numTraining", "file_ending", "name", "licence",
                               "converted_by", "description")}
        description = self.dataset_json.get("description")
        note = (f"{self.source_name} + {len(entries)} LAW synthetic cases ({CASE_PREFIX}*, see {PROVENANCE})")
        write_dataset_json(folder, len(self.files) + len(entries),
                           channel_names=dict(self.dataset_json["channel_names"]),
                           labels=dict(self.dataset_json["labels"]), file_ending=self.ending,
                           dataset_name=self.target.path.name[len("DatasetXXX_"):],
                           description=f"{description}; {note}" if description else note,
                           license=self.dataset_json.get("licence", "see the source dataset"),
                           converted_by="nnunet-laworder law synthesize", **fields)
        _json_atomic(self._provenance(entries), folder / PROVENANCE)
        _json_atomic(splits, folder / SPLITS)

    def _provenance(self, entries: dict) -> dict:
        from dataclasses import asdict

        return {"source_dataset": self.source_name, "source_dataset_id": self.source_id,
                "dataset": self.target.path.name, "checkpoint": str(self.checkpoint),
                "checkpoint_hash": self.checkpoint_hash, "weighting": self.weighting,
                "configuration": self.configuration, "generator_fold": self.generator_fold,
                "conditioning_cases": self.conditioning, "sampler": self.args.sampler, "steps": self.args.steps,
                "seed": self.args.seed, "num_synthetic": len(entries), "layout": asdict(self.generator.layout),
                "transform_config": self.transform_config.to_dict(), "real_splits": self.splits_source,
                "split_rule": "real cases keep the real-only folds; synthetic cases are training cases only, and not "
                              "in fold k's training side when their source mask is one of fold k's validation cases",
                "cases": entries}

    def _write_preprocessed_splits(self, splits: list) -> None:
        root = os.environ.get("nnUNet_preprocessed")
        if not root:
            print("law synthesize: nnUNet_preprocessed is not set; splits_final.json is only in the raw dataset "
                  "(nnUNetv2_plan_and_preprocess copies it)")
            return
        folder = Path(root) / self.target.path.name
        folder.mkdir(parents=True, exist_ok=True)
        _json_atomic(splits, folder / SPLITS)
        self.preprocessed_splits = folder / SPLITS

    def _print_summary(self, entries: dict, splits: list) -> None:
        new_id, config = self.target.dataset_id, self.configuration
        n_syn = len(entries)
        print(f"law synthesize: wrote {self.target.path} ({len(self.files)} real + {n_syn} synthetic training "
              f"cases) and {getattr(self, 'preprocessed_splits', self.target.path / SPLITS)}")
        for k, fold in enumerate(splits):
            n_fold_syn = sum(c.startswith(CASE_PREFIX) for c in fold["train"])
            print(f"  fold {k}: {len(fold['train']) - n_fold_syn} real + {n_fold_syn} synthetic training, "
                  f"{len(fold['val'])} real validation cases")
        fold = self.generator_fold
        if isinstance(fold, int):
            folds, note = str(fold), (f"the generator saw only fold {fold}'s training cases: fold {fold} is the clean "
                                      f"comparison")
        else:
            folds, note = "0 1 2 3 4", ("the generator was trained on every training case, so it has seen each "
                                         "fold's validation images (their layouts are kept out of that fold's "
                                         "training side); for a strictly clean fold F use 'law train -f F' and "
                                         "'law synthesize -f F'")
        train_config = "2d" if self.generator.layout.slice_axis is not None else config
        print(f"next ({note}):\n"
              f"  nnUNetv2_plan_and_preprocess -d {new_id} -c {train_config}\n"
              f"  # add the same architecture configurations as for the real-only dataset, e.g.\n"
              f"  #   nnunet-laworder plans -d {new_id} -c {train_config} --arch order\n"
              f"  for f in {folds}; do nnUNetv2_train {new_id} {train_config} $f; done\n"
              f"  # and the real-only reference: nnUNetv2_train {self.source_id} {train_config} FOLD")


if __name__ == "__main__":
    sys.exit(main())
