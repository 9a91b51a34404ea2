"""``nnunet-laworder law synthesize``: a new nnU-Net raw dataset = the real cases + LAW synthetic cases, with the
split nnU-Net will use and the real dataset's plans. Usage::

    nnunet-laworder law synthesize -d 901 -o 911 -f 0 --judge 2d_order -tr nnUNetTrainerORDER   # Dataset911_<name>LAW
    nnunet-laworder law synthesize -d 901 -o 911 -f 0 --num 500 --sampler dpm --steps 25 -device cuda
    nnunet-laworder law synthesize -d 901 -o 911 -f 0 --protocol add --strength 0.3   # added lesions, harmonised
    nnUNetv2_preprocess -d 911 -plans_name nnUNetPlans -c 2d         # the source's plans: no re-planning
    nnUNetv2_train 911 2d_order 0 -tr nnUNetTrainerORDER

**Conditioning.** Only the masks of the generator's *training* cases (the checkpoint records them: every training
case, or fold F's training cases for ``law train -f F``), never a validation or test mask. Synthetic case ``i`` takes
source case ``i mod n`` of a seeded permutation of those ``n`` cases (a new permutation every ``n`` cases) and moves
its mask to a new layout with a random transform of :mod:`nnunet_laworder.law.transforms` (flips, rotations,
scaling, elastic deformation; nearest neighbour; draws that lose a structure are rejected). Everything about case
``i`` is a function of ``(--seed, i, draw)``, the checkpoint, the sampler and the steps; ``provenance.json`` records
it.

**Inpainting generators** (``law train --mode inpaint``, the default; :mod:`~nnunet_laworder.law.inpainting`),
``--protocol move`` (the default): a window of the generator's size around the source's lesion, at the source's
resolution, gets the transformed mask; the old and new lesion (dilated) are repainted given the real surroundings,
and the window goes back into the source image: every pixel outside the hole is the source's, the label is the
source's outside the window and the transformed mask inside. ``--protocol add``
(:mod:`~nnunet_laworder.law.lesion_paste`): the source, the *host*, keeps its image and labels and gains one lesion
of a *donor*, another of the generator's training cases drawn with the case's seed, jittered by a transform as above
and pasted with a soft edge where the host has no lesion (on its organ, for label sets with one); the generator then
harmonises it from noise level ``--strength`` t0 (0: plain copy-paste, no generator call; 1: the lesion generated
from noise in the pasted one's place). **Whole-image generators** (``--mode whole``, the paper's; move only): the
transformed mask is brought to the generator's size as training did (2D: resized; small 3D: padded / cropped to the
box) and the whole image is sampled; 2D cases are resized back to the source's size (the label is the transformed
mask itself), small 3D volumes stay the generator's box. Images go back to the dataset's intensities
(``normaliser.inverse``). **Slice-wise 3D generators** (``law train --layout slices``, e.g. KiTS CT): a source is
one foreground slice of a training volume along ``layout.slice_axis``; the synthetic case is a volume of *one slice*
at the source's in-plane size. nnU-Net's 3D configurations cannot learn from one-slice volumes; train the new
dataset's ``2d`` configuration. File formats and pixel types: :mod:`~nnunet_laworder.law.case_writer`.

**Quality gate** (``--judge CONFIGURATION -tr TRAINER``, :mod:`~nnunet_laworder.law.quality_gate`): a model trained
on the real dataset (fold ``-f``) segments each case as written; the case is kept when the Dice with its label
reaches ``--min-fidelity``, else a new draw is sampled, up to ``--max-draws``; a case whose draws all fail is left
out. Provenance records each case's fidelity and the rejected draws; the command prints the acceptance rate.

**Resumable** (:mod:`~nnunet_laworder.law.case_cache`): finished cases wait in a hidden cache; a rerun samples only
what is missing. **Atomic** (:mod:`~nnunet_laworder.law.dataset_assembly`): the dataset appears in one rename, with
the real folds kept and synthetic cases training-only.

**Sharding** (like ``nnUNetv2_predict -num_parts -part_id``): run the same command with ``--num-parts P --part-id
I`` for I = 0..P-1, on as many GPUs / machines as you like sharing ``$nnUNet_raw``; part I samples the cases
``i`` with ``i % P == I`` into the shared cache. A part that finishes while others are still sampling says so and
exits; the part that finds every case done assembles the dataset (an ``O_EXCL`` lock file makes sure only one does).
``CUDA_VISIBLE_DEVICES=0 nnunet-laworder law synthesize ... --num-parts 2 --part-id 0 &`` /
``CUDA_VISIBLE_DEVICES=1 ... --part-id 1``. The result equals an unsharded run with the same seed on the same kind
of device (the initial noise comes from a generator on the sampling device).
"""
import shutil
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from tqdm import tqdm

from nnunet_laworder.conversion.common import DatasetTarget
from nnunet_laworder.errors import InputError
from nnunet_laworder.law.case_cache import CaseCache
from nnunet_laworder.law.case_writer import CaseWriter
from nnunet_laworder.law.data import fit_to_layout, resize_image, training_files
from nnunet_laworder.law.dataset_assembly import assemble
from nnunet_laworder.law.diffusion import SAMPLERS, denoising_steps, sample, sampling_scheduler, training_scheduler
from nnunet_laworder.law.generator import LAWGenerator, checkpoint_hash, foreground_labels, load_checkpoint, one_hot
from nnunet_laworder.law.inpainting import inpaint_case
from nnunet_laworder.law.layout_fidelity import TrainedModel
from nnunet_laworder.law.lesion_paste import AddedLesions, lesion_and_organ_labels
from nnunet_laworder.law.options import ADD, INPAINT, MAX_DRAWS_DEFAULT, MIN_FIDELITY_DEFAULT, MOVE, PROTOCOLS
from nnunet_laworder.law.provenance import CASE_PREFIX, MAX_CASES, SPLIT_RULE, case_entry, case_id, is_synthetic
from nnunet_laworder.law.quality_gate import Judge, check_min_fidelity, gate_summary, passes
from nnunet_laworder.law.splits import Splits, real_splits
from nnunet_laworder.law.transforms import TransformConfig, random_transform
from nnunet_laworder.law.weighting import WEIGHTINGS
from nnunet_laworder.nnunet_folders import (DEFAULT_PLANS, check_configuration, dataset_id, default_configuration,
                                            law_run_folder, plans_file, raw_dataset_folder, read_json,
                                            resolve_device)


def synthesize(dataset: Union[str, int], output_id: int, name: Optional[str] = None,
               configuration: Optional[str] = None, plans: str = DEFAULT_PLANS, weighting: Optional[str] = None,
               fold: Union[int, str, None] = None, checkpoint: Optional[str] = None, num: Optional[int] = None,
               steps: int = 50, sampler: str = "ddim", seed: int = 0, num_parts: int = 1, part_id: int = 0,
               device: Optional[str] = None, overwrite: bool = False, progress: bool = True,
               judge: Optional[TrainedModel] = None, min_fidelity: float = MIN_FIDELITY_DEFAULT,
               max_draws: int = MAX_DRAWS_DEFAULT, protocol: str = MOVE, strength: float = 1.0) -> int:
    """Sample this part's synthetic cases of ``dataset`` into the cache and, once every part's are there, write
    dataset ``output_id``. ``judge``: the quality gate's model (its dataset defaults to ``dataset``); a case is
    kept when its layout fidelity reaches ``min_fidelity``, drawing up to ``max_draws`` samples per case.
    ``protocol``: move a case's lesion, or add another case's (harmonised from noise level ``strength``).
    Everything is checked before any work (:class:`InputError`). Returns 0."""
    _check_values(num, steps, sampler, weighting, num_parts, part_id)
    _check_protocol(protocol, strength, steps)
    check_min_fidelity(min_fidelity)
    if max_draws < 1:
        raise InputError(f"--max-draws must be at least 1, got {max_draws}")
    source, target = _datasets(dataset, output_id, name, plans, overwrite)
    if judge is not None:
        judge = replace(judge, dataset=judge.dataset or source.name)
        Judge.check(judge)
    path, generator, data, configuration = _load_generator(source, checkpoint, configuration, weighting, fold)
    files, conditioning, writer, splits, splits_source = _check_data(source, path, generator, data)
    if judge is None:
        print("law synthesize: warning: no --judge: nothing checks that the synthetic images show the lesions their "
              "labels say (train a model on the real dataset and pass -c/-tr/-f with --judge)")
    device = resolve_device(device)
    layout = generator.layout
    transform_config = TransformConfig.for_dim(2 if layout.slice_axis is not None else layout.dim)
    adding = None
    if protocol == ADD:
        adding = _added_lesions(source, path, generator, conditioning, transform_config, strength)
    digest = checkpoint_hash(path)
    gate = None if judge is None else {"judge": asdict(judge), "min_fidelity": min_fidelity, "max_draws": max_draws}
    cache = CaseCache.for_run(target, digest, seed, sampler, steps, source.name, conditioning,
                              transform_config.to_dict(), gate, protocol_fields(adding))
    synthesis = Synthesis(
        source=source, target=target, files=files, checkpoint=path, checkpoint_hash=digest, generator=generator,
        configuration=configuration, generator_fold=data.get("fold"), conditioning=conditioning, writer=writer,
        splits=splits, splits_source=splits_source, num=num or len(conditioning), device=device,
        transform_config=transform_config, sampler=sampler, steps=steps, seed=seed, cache=cache, judge_model=judge,
        min_fidelity=min_fidelity, max_draws=max_draws, adding=adding)
    cache.create()
    synthesis.sample_part(num_parts, part_id, progress)
    missing = synthesis.cache.missing(synthesis.num)
    if missing:
        print(f"law synthesize: part {part_id} of {num_parts} done; {len(missing)} of {synthesis.num} synthetic "
              f"cases are still being sampled by the other parts (the last part to finish writes "
              f"{target.path.name})")
        return 0
    gate = synthesis.gate()
    if gate is not None:
        draws = gate["accepted"] + gate["rejected"]
        mean = "-" if gate["accepted_fidelity_mean"] is None else f"{gate['accepted_fidelity_mean']:.3f}"
        print(f"law synthesize: quality gate (judge {gate['judge']['trainer']} {gate['judge']['configuration']}, "
              f"--min-fidelity {gate['min_fidelity']}): {gate['accepted']} of {draws} draws accepted "
              f"({gate['acceptance_rate'] or 0:.0%}), mean fidelity of the accepted {mean}; "
              f"{gate['rejected_cases']} case(s) left out after {synthesis.max_draws} draws")
    assemble(target, synthesis.cache, synthesis.num, source.raw, source.dataset_json, len(files), splits,
             synthesis.provenance(), source.plans_file, progress)
    return 0


@dataclass
class SourceDataset:
    """The real dataset: its raw folder, dataset.json and plans."""
    raw: Path
    dataset_json: dict
    plans: dict
    plans_file: Path

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def id(self) -> int:
        return dataset_id(self.raw.name)

    @property
    def preprocessed(self) -> Path:
        return self.plans_file.parent


@dataclass
class Synthesis:
    """Everything one ``law synthesize`` process needs, checked before any work."""
    source: SourceDataset
    target: DatasetTarget
    files: Dict[str, dict]  # the source's training cases
    checkpoint: Path
    checkpoint_hash: str
    generator: LAWGenerator
    configuration: str
    generator_fold: Union[int, str, None]
    conditioning: List[str]  # the generator's training cases: their masks condition the synthetic cases
    writer: CaseWriter
    splits: Splits  # the real-only dataset's folds
    splits_source: str
    num: int
    device: torch.device
    transform_config: TransformConfig
    sampler: str
    steps: int
    seed: int
    cache: CaseCache
    judge_model: Optional[TrainedModel] = None  # the quality gate's model (None: no gate)
    min_fidelity: float = MIN_FIDELITY_DEFAULT
    max_draws: int = MAX_DRAWS_DEFAULT
    judge: Optional[Judge] = None  # loaded once there is something to sample
    adding: Optional[AddedLesions] = None  # --protocol add (None: move)

    @property
    def weighting(self) -> str:
        return self.generator.weighting.mode

    def provenance(self) -> dict:
        """The dataset-level fields of provenance.json."""
        return {"source_dataset": self.source.name, "source_dataset_id": self.source.id,
                "dataset": self.target.path.name, "checkpoint": str(self.checkpoint),
                "checkpoint_hash": self.checkpoint_hash, "weighting": self.weighting,
                "configuration": self.configuration, "generator_fold": self.generator_fold,
                "conditioning_cases": self.conditioning, "sampler": self.sampler, "steps": self.steps,
                "seed": self.seed, "layout": asdict(self.generator.layout),
                "transform_config": self.transform_config.to_dict(), "real_splits": self.splits_source,
                "split_rule": SPLIT_RULE, "gate": self.gate(), **protocol_fields(self.adding)}

    def gate(self) -> Optional[dict]:
        """The quality gate's settings and outcome over every case in the cache (None without a judge)."""
        if self.judge_model is None:
            return None
        entries = self.cache.all_entries(self.num)
        accepted = [e["gate"]["fidelity"] for e in entries if not e.get("rejected")]
        rejected = sum(len(e["gate"]["rejected_fidelities"]) for e in entries)
        m = self.judge_model
        return {"judge": {"dataset": m.dataset, "configuration": m.configuration, "trainer": m.trainer,
                          "plans": m.plans, "folds": [str(f) for f in m.folds], "checkpoint": m.checkpoint},
                "max_draws": self.max_draws, "rejected_cases": sum(bool(e.get("rejected")) for e in entries),
                **gate_summary(accepted, rejected, self.min_fidelity)}

    def source_of(self, index: int) -> str:
        n = len(self.conditioning)
        permutation = np.random.default_rng([self.seed, 0x5EED, index // n]).permutation(n)
        return self.conditioning[int(permutation[index % n])]

    def sample_part(self, num_parts: int, part_id: int, progress: bool) -> None:
        """Sample the cases ``i % num_parts == part_id`` that are not cached yet."""
        mine = [i for i in range(self.num) if i % num_parts == part_id]
        for i in mine:  # leftovers of an interrupted run of this part
            self.cache.remove_partial(i)
        todo = [i for i in mine if not self.cache.has(i)]
        print(f"law synthesize: {self.num} synthetic cases from {len(self.conditioning)} training masks of "
              f"{self.source.name} ({self.weighting} generator {self.checkpoint}, fold {self.generator_fold}); "
              f"part {part_id}/{num_parts}: {len(mine)} cases, {len(mine) - len(todo)} already cached, "
              f"{len(todo)} to sample ({self.sampler}, {self.steps} steps, {self.device}; {self.protocol_text()})")
        if not todo:
            return
        self.generator.to(self.device)
        self.generator.denoiser.eval()
        if self.judge_model is not None:
            self.judge = Judge.load(self.judge_model, self.device, self.generator.layout.labels)
        # a fresh sampler per draw (they keep state); DDIM clips to the normalised range of the data
        new_scheduler = partial(sampling_scheduler, training_scheduler(), self.sampler,
                                self.generator.normaliser.normalised_bound())
        for i in tqdm(todo, desc="synthesizing", unit="case", disable=not progress):
            self.sample_case(i, new_scheduler)

    def protocol_text(self) -> str:
        if self.adding is None:
            return "moving each case's lesion"
        strength = self.adding.strength
        how = "copy-paste" if strength == 0 else "generated from noise" if strength == 1 else \
            f"harmonised from --strength {strength}: {denoising_steps(self.steps, strength)} denoising steps"
        return f"adding a lesion of another case to each, {how}"

    def sample_case(self, index: int, new_scheduler: Callable) -> None:
        """Case ``index`` into the cache: its first draw, or with a judge the first of up to ``max_draws`` draws
        that passes the gate; when none does, a record of the rejected draws (and no files)."""
        fidelities = []
        for draw in range(self.max_draws if self.judge else 1):
            folder = self.cache.new_case(index)
            entry = self.draw(index, draw, new_scheduler(), folder)
            if self.judge is None:
                self.cache.commit(index, folder, entry)
                return
            fidelity = self.judge_written(folder, entry["case"])
            if passes(fidelity, self.min_fidelity):
                entry["gate"] = {"fidelity": fidelity, "draws": draw + 1, "rejected_fidelities": fidelities}
                self.cache.commit(index, folder, entry)
                return
            fidelities.append(fidelity)
            shutil.rmtree(folder)
        folder = self.cache.new_case(index)
        folder.mkdir()
        self.cache.commit(index, folder, {"case": case_id(index), "case_index": index, "rejected": True,
                                          "gate": {"draws": len(fidelities), "rejected_fidelities": fidelities}})

    def draw(self, index: int, draw: int, scheduler, folder: Path) -> dict:
        """Draw ``draw`` of case ``index`` (a function of ``(seed, index, draw)``) written into ``folder``; returns
        its provenance entry. Draw 0 of every case is what a run without a judge writes."""
        layout = self.generator.layout
        source = self.source_of(index)
        files = self.files[source]
        rng = np.random.default_rng([self.seed, index] if draw == 0 else [self.seed, index, draw])
        noise_seed = int(rng.integers(0, 2 ** 62))
        seg, properties = self.writer.read_seg(files["label"])
        seg = seg[0]  # (1, H, W) for 2D images, (D, H, W) for volumes
        source_slice = None
        if layout.slice_axis is not None:
            source_slice = _random_slice(seg > 0, layout.slice_axis, rng, fallback=True)
        native = self.plane(seg, source_slice).astype(np.int16)
        generator = torch.Generator(device=self.device).manual_seed(noise_seed)
        strength = 1.0 if self.adding is None else self.adding.strength

        def generate(condition: torch.Tensor, start: Optional[torch.Tensor] = None) -> torch.Tensor:
            return sample(self.generator.denoiser, condition.to(self.device), scheduler, self.steps, generator,
                          start=start, strength=strength)

        donor = {}
        if layout.mode == INPAINT:
            image = self.plane(self.writer.io.read_images(files["images"])[0], source_slice, channels=True)
            if self.adding is None:
                image, label, params = inpaint_case(image, native, layout.image_size, layout.labels,
                                                    self.generator.normaliser, rng, self.transform_config, generate)
            else:
                donor_case, donor_slice, donor_image, donor_seg = self.donor(source, rng)
                image, label, params = self.adding.add(image, native, donor_image, donor_seg,
                                                       self.generator.normaliser, rng, generate)
                donor = {"donor_case": donor_case, "donor_slice": donor_slice}
        else:
            image, label, params = self.whole_image(native, rng, generate)
        if layout.slice_axis is not None:  # a volume of one slice
            image = np.expand_dims(image, 1 + layout.slice_axis)
            label = np.expand_dims(label, layout.slice_axis)
        elif layout.dim == 2:
            image, label = image[:, None], label[None]
        # image: (C, *spatial of the written file, with the leading 1 for 2D), label: (*spatial); intensities stay
        # in the normaliser's range (inverse clips; bilinear resizing cannot leave it)
        self.writer.write(folder, case_id(index), image, label, files["images"], properties, source_slice)
        return case_entry(
            index, source, source_slice, params, noise_seed, run_seed=self.seed, sampler=self.sampler,
            steps=self.steps, checkpoint=str(self.checkpoint), checkpoint_hash=self.checkpoint_hash,
            weighting=self.weighting, generator_fold=self.generator_fold, device=self.device.type,
            generated_size=list(layout.image_size), written_shape=list(label.shape), mode=layout.mode, draw=draw,
            protocol=ADD if self.adding else MOVE, strength=strength, **donor)

    def plane(self, array: np.ndarray, index: Optional[int], channels: bool = False) -> np.ndarray:
        """What the generator models of a case's label ``(*spatial)`` or, with ``channels``, image ``(C,
        *spatial)``: slice ``index`` of a volume (slice-wise generators), the 2D image, or the volume."""
        layout = self.generator.layout
        if layout.slice_axis is not None:
            return np.take(array, index, axis=int(channels) + layout.slice_axis)
        if layout.dim == 2:
            return array[:, 0] if channels else array[0]
        return array

    def donor(self, host: str, rng: np.random.Generator):
        """(case, slice, image, label) of the lesion to add to ``host``: the first of the other conditioning cases,
        in a random order, with a lesion (slice-wise: a random slice of it with one)."""
        others = [case for case in self.conditioning if case != host]
        for k in rng.permutation(len(others)):
            files = self.files[others[k]]
            seg = self.writer.read_seg(files["label"])[0][0].astype(np.int16)
            lesion = np.isin(seg, self.adding.lesion_labels)
            if not lesion.any():
                continue
            index = None
            if self.generator.layout.slice_axis is not None:
                index = _random_slice(lesion, self.generator.layout.slice_axis, rng)
            image = self.writer.io.read_images(files["images"])[0]
            return others[k], index, self.plane(image, index, channels=True), self.plane(seg, index)
        raise InputError(f"--protocol add: no conditioning case but {host} has a lesion (labels "
                         f"{self.adding.lesion_labels}) to add")

    def whole_image(self, native: np.ndarray, rng: np.random.Generator, generate: Callable):
        """The paper's whole-image generation: (image, label, transform) for a transformed source mask. 2D images
        go back to the source's size (the label is the transformed mask itself), 3D volumes stay the box."""
        layout = self.generator.layout

        def survives_fitting(mask):  # no structure may vanish on the way to the generator's size
            return set(np.unique(fit_to_layout(None, mask, layout)[1])) >= set(np.unique(mask))

        transformed, params = random_transform(native, rng, self.transform_config, accept=survives_fitting)
        condition = fit_to_layout(None, transformed, layout)[1]
        x = generate(torch.from_numpy(one_hot(condition, list(layout.labels)))[None])
        image = self.generator.normaliser.inverse(x[0].float().cpu().numpy().astype(np.float64))
        if layout.dim == 2:
            return resize_image(image, transformed.shape).astype(np.float64), transformed, params
        return image, condition, params

    def judge_written(self, folder: Path, case: str) -> float:
        """The judge's fidelity on a case as written (read back with the dataset's reader: what nnU-Net trains on)."""
        images = sorted(str(p) for p in (folder / "imagesTr").iterdir())
        image, properties = self.writer.io.read_images(images)
        label, _ = self.writer.read_seg(str(folder / "labelsTr" / f"{case}{self.writer.ending}"))
        return self.judge.fidelity(image, label[0], properties["spacing"])


def _random_slice(foreground: np.ndarray, axis: int, rng: np.random.Generator, fallback: bool = False) -> int:
    """A random slice along ``axis`` with foreground (any slice when there is none and ``fallback``)."""
    candidates = np.flatnonzero(np.moveaxis(foreground, axis, 0).reshape(foreground.shape[axis], -1).any(1))
    if len(candidates) == 0 and fallback:
        candidates = np.arange(foreground.shape[axis])
    return int(candidates[rng.integers(0, len(candidates))])


def protocol_fields(adding: Optional[AddedLesions]) -> dict:
    """The protocol's fields of provenance.json and of the cache's key."""
    if adding is None:
        return {"protocol": MOVE, "strength": 1.0, "lesion_labels": None, "organ_labels": None}
    return {"protocol": ADD, "strength": adding.strength, "lesion_labels": adding.lesion_labels,
            "organ_labels": adding.organ_labels}


# ---------------------------------------------------------------------------------------------------------------
# the checks, in the order a user meets them


def _check_values(num: Optional[int], steps: int, sampler: str, weighting: Optional[str], num_parts: int,
                  part_id: int) -> None:
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if num is not None and num < 1:
        raise InputError(f"--num must be at least 1, got {num}")
    if num_parts < 1:
        raise InputError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise InputError(f"--part-id must be in 0..{num_parts - 1} (--num-parts {num_parts}), got {part_id}")
    if num is not None and num >= MAX_CASES:
        raise InputError(f"--num must be at most {MAX_CASES - 1} (case ids {CASE_PREFIX}00000..), got {num}")
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if weighting is not None and weighting not in WEIGHTINGS:
        raise InputError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")


def _check_protocol(protocol: str, strength: float, steps: int) -> None:
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not 0 <= strength <= 1:
        raise InputError(f"--strength must be in [0, 1], got {strength}")
    if protocol == MOVE and strength != 1:
        raise InputError(f"--strength {strength} needs --protocol add (move generates the moved lesion from noise, "
                         f"strength 1)")
    if 0 < strength < 1 and denoising_steps(steps, strength) == 0:
        raise InputError(f"--strength {strength} at --steps {steps} leaves no denoising step; give 0 for plain "
                         f"copy-paste or at least 1/{steps}")


def _datasets(dataset: Union[str, int], output_id: int, name: Optional[str], plans: str, overwrite: bool):
    """(the source dataset, the new dataset's target)."""
    raw = raw_dataset_folder(dataset)
    if output_id == dataset_id(raw.name):
        raise InputError(f"-o {output_id} is the id of the source dataset {raw.name}; choose a new id")
    path = plans_file(dataset, plans)
    source = SourceDataset(raw, read_json(raw / "dataset.json"), read_json(path), path)
    if "dataset" in source.dataset_json:
        raise InputError(f"{raw / 'dataset.json'} lists its files in a 'dataset' entry; synthesis needs the "
                         f"imagesTr/labelsTr layout")
    target = DatasetTarget.resolve(output_id, name or f"{raw.name[len('DatasetXXX_'):]}LAW", overwrite)
    # nnU-Net looks ids up in raw, preprocessed and results: a second name for the id there breaks it
    for root in (nnUNet_preprocessed.get(), nnUNet_results.get()):
        if not root or not Path(root).is_dir():
            continue
        others = [p for p in Path(root).glob(f"Dataset{output_id:03d}_*") if p.is_dir() and p.name != target.path.name]
        if others:
            raise InputError(f"{others[0]} holds dataset id {output_id:03d} under another name; nnU-Net would "
                             f"not know which is meant. Remove it or pass --name {others[0].name[11:]}")
    return source, target


def _load_generator(source: SourceDataset, checkpoint: Optional[str], configuration: Optional[str],
                    weighting: Optional[str], fold: Union[int, str, None]):
    """(checkpoint path, generator, what it was trained on, its configuration), checked against the request."""
    requested = configuration or default_configuration(source.plans)  # the checkpoint's own wins below
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise InputError(f"checkpoint {path} not found")
    else:
        if not nnUNet_results.is_set():
            raise InputError("nnUNet_results is not set (the default checkpoint is law train's output there); "
                             "export it or give --checkpoint")
        path = law_run_folder(source.name, weighting or "law", requested, fold) / "checkpoint_final.pth"
        if not path.is_file():
            option = f" -f {fold}" if fold is not None else ""
            raise InputError(f"checkpoint {path} not found; train the generator first: nnunet-laworder law train "
                             f"-d {source.id} -c {requested} --weighting {weighting or 'law'}{option} "
                             f"(or give --checkpoint)")
    path = path.resolve()
    generator, extra = load_checkpoint(path, map_location="cpu")  # refuses anything but tensors and plain data
    data = dict(generator.layout.extra or {})
    data.update(extra.get("data") or {})
    if weighting is not None and weighting != generator.weighting.mode:
        raise InputError(f"{path} was trained with --weighting {generator.weighting.mode}, not {weighting}")
    trained_on = data.get("dataset")
    if trained_on is not None and trained_on != source.name:
        raise InputError(f"{path} was trained on {trained_on}, not on {source.name}")
    resolved = data.get("configuration") or requested
    if configuration is not None and configuration != resolved:
        raise InputError(f"{path} was trained with configuration {resolved}, not {configuration}")
    check_configuration(source.plans, resolved, str(source.plans_file))
    return path, generator, data, resolved


def _check_data(source: SourceDataset, checkpoint: Path, generator: LAWGenerator, data: dict):
    """(training files, conditioning cases, case writer, real folds, where they came from) of a source dataset the
    generator fits."""
    layout = generator.layout
    files = training_files(source.raw, source.dataset_json)
    identifiers = sorted(files)
    conditioning = sorted(data["cases"]) if data.get("cases") else identifiers
    unknown = sorted(set(conditioning) - set(identifiers))
    if unknown:
        raise InputError(f"{checkpoint} was trained on cases that are not training cases of {source.name}: "
                         f"{', '.join(unknown[:5])}")
    labels = foreground_labels(source.dataset_json)
    if list(layout.labels) != labels:
        raise InputError(f"{checkpoint} generates labels {layout.labels}, {source.name} has {labels}")
    channels = len(source.dataset_json["channel_names"])
    if generator.denoiser.image_channels != channels:
        raise InputError(f"{checkpoint} generates {generator.denoiser.image_channels} channels, {source.name} has "
                         f"{channels}")
    writer = CaseWriter.for_dataset(source.dataset_json, files[identifiers[0]], source.name, layout.slice_axis)
    real_ids = set(identifiers)
    for sub in ("imagesTs", "labelsTs"):
        if (source.raw / sub).is_dir():
            real_ids |= {p.name.split(".")[0] for p in (source.raw / sub).iterdir()}
    clash = sorted(c for c in real_ids if is_synthetic(c))
    if clash:
        raise InputError(f"{source.name} has cases named like synthetic cases ({', '.join(clash[:3])})")
    splits, splits_source = real_splits(source.preprocessed, identifiers)
    fold = data.get("fold")
    if isinstance(fold, int) and fold < len(splits):
        seen = sorted(set(conditioning) & set(splits[fold]["val"]))
        if seen:
            raise InputError(f"{checkpoint} was trained on fold {fold}, but its training cases include validation "
                             f"cases of fold {fold} in {splits_source} ({', '.join(seen[:3])}); was "
                             f"splits_final.json changed after 'law train'?")
    return files, conditioning, writer, splits, splits_source


def _added_lesions(source: SourceDataset, checkpoint: Path, generator: LAWGenerator, conditioning: List[str],
                   transform_config: TransformConfig, strength: float) -> AddedLesions:
    """``--protocol add``'s settings, for a generator that can harmonise (an inpainting one) and cases to draw from."""
    if generator.layout.mode != INPAINT:
        raise InputError(f"--protocol add needs an inpainting generator (law train --mode inpaint); {checkpoint} "
                         f"generates whole images")
    if len(conditioning) < 2:
        raise InputError(f"--protocol add takes lesions from other training cases; {checkpoint} was trained on "
                         f"{len(conditioning)} case")
    lesions, organs = lesion_and_organ_labels(source.dataset_json["labels"])
    return AddedLesions(list(generator.layout.image_size), list(generator.layout.labels), lesions, organs,
                        transform_config, float(strength))
