"""What the reproduction scripts (``reproduce_*.py``) share: the two scales, a work folder holding nnU-Net's three
folders, the Kvasir-SEG subset, and the workflow stages as a user would type them.

Every stage names the file it produces and is skipped when that file exists, so a run that was interrupted
continues where it stopped (an nnU-Net training with a ``checkpoint_latest.pth`` continues with ``--c``). The
scripts share one work folder: the downstream script reuses the real-only models and the LAW dataset that the
other two trained. Commands and their output go to ``WORK/logs/``; tables, JSON and charts to ``WORK/results/``.
"""
import argparse
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tqdm import tqdm

import numpy as np

from nnunet_laworder.evaluation.compare import case_dice
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.nnunet_folders import commands_to_test, read_json, save_json_atomic, split_summary
from nnunet_laworder.training.discovery import trainer_folder
from nnunet_laworder.training.order_trainers import SHORT_SCHEDULE_SEED
from nnunet_laworder.workflow import Stage, run_side_by_side, run_stage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("NNUNET_LAWORDER_DATA", REPO.parent / "shared" / "data")) / "kvasir-seg"
REAL_ID = 501
REAL_NAME = "KvasirSEG"
LAW_IDS = {"law": 511, "prior": 512, "uniform": 513}
# synthetic / real training cases -> id of the real + LAW dataset of that size (law generator, through the gate)
RATIO_IDS = {0.25: 521, 0.5: 522, 1.0: 523}
JUDGE = "ORDER"  # the quality gate of law synthesize: the real-only model of this segmenter
CONFIGURATION = "2d"
DEFAULT_PLANS = "nnUNetPlans"
# the segmenters with plans of their own: (nnUNetv2_plan_experiment -pl PLANNER, the plans it writes). nnU-Net's
# residual-encoder preset M is the baseline its maintainers recommend since 2.4 ("nnU-Net revisited", MICCAI 2024);
# it reads the data nnUNetPlans preprocessed. Planned on the real dataset only (the LAW datasets carry nnUNetPlans).
RESENC_M = "nnU-Net ResEnc M"
PRESETS = {RESENC_M: ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans")}
# the segmenters of the comparison: (configuration, trainer without its schedule suffix)
SEGMENTERS = {"nnU-Net default": ("2d", "nnUNetTrainer"), RESENC_M: ("2d", "nnUNetTrainer"),
              "ORDER": ("2d_order", "nnUNetTrainerORDER"), "MK-UNet": ("2d_mkunet", "nnUNetTrainerMKUNet"),
              "SPAD": ("2d", "nnUNetTrainerSPAD"), "cDAL": ("2d", "nnUNetTrainerCDAL")}
LAW_SEGMENTERS = [name for name in SEGMENTERS if name not in PRESETS]  # what trains on a LAW dataset's nnUNetPlans


POLYP = "polyp"  # the label name the Kvasir-SEG converter writes


def plans_of(segmenter: str) -> str:
    """The plans a segmenter (a name of SEGMENTERS or of a script's networks) trains with."""
    return PRESETS[segmenter][1] if segmenter in PRESETS else DEFAULT_PLANS


def averaged_cases(models: List[dict]) -> Dict[str, float]:
    """Per-case Dice of one network over its runs (``compare`` model entries): the mean over the runs of each case."""
    per_case: Dict[str, List[float]] = {}
    for model in models:
        for case, value in case_dice(model).items():
            if value is not None:
                per_case.setdefault(case, []).append(value)
    return {case: float(np.mean(values)) for case, values in per_case.items()}


def downstream_row(real: List[dict], mixed: List[dict]) -> dict:
    """Real only vs real + synthetic for one segmenter, from the ``compare`` model entries of its runs on each
    dataset: the Dice of each (a case's Dice is its mean over the runs), the cases improved, and the paired
    difference on the same real validation cases (95% bootstrap interval)."""
    per_real, per_mixed = averaged_cases(real), averaged_cases(mixed)
    assert set(per_real) == set(per_mixed), "the real validation (or test) cases must be the same in both datasets"
    paired = paired_difference(per_real, per_mixed)
    return {"real": float(np.mean(list(per_real.values()))), "real_law": float(np.mean(list(per_mixed.values()))),
            "improved_cases": paired["improved"], "improved_or_equal": paired["improved"] + paired["equal"],
            "cases": len(per_real), "paired": paired,
            "runs": {"real": [m["foreground_mean"]["Dice"]["cases"]["mean"] for m in real],
                     "real_law": [m["foreground_mean"]["Dice"]["cases"]["mean"] for m in mixed]}}


def row_line(name: str, row: dict) -> str:
    p, test = row["paired"], row.get("test")
    return (f"| {name} | {100 * row['real']:.1f} | {100 * row['real_law']:.1f} | {100 * p['mean_diff']:+.1f} "
            f"[{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] | {row['improved_cases']} / {row['cases']} "
            f"({row['improved_or_equal']} improved or equal) | "
            + (f"{100 * test['real']:.1f} -> {100 * test['real_law']:.1f}, "
               f"{100 * test['paired']['mean_diff']:+.1f} [{100 * test['paired']['ci95'][0]:+.1f}, "
               f"{100 * test['paired']['ci95'][1]:+.1f}] |" if test else "- |"))


ROW_HEADER = ["| segmenter | Dice, real only | Dice, real + LAW | paired change, points [95% CI] | cases improved | "
              "test split: real -> real + LAW, change [95% CI] |", "|---|---:|---:|---:|---:|---:|"]


def law_name(weighting: str) -> str:
    return f"{REAL_NAME}LAW{weighting.capitalize()}"


@dataclass(frozen=True)
class Scale:
    """How big a reproduction runs."""
    name: str
    cases: Optional[int]  # Kvasir-SEG pairs used (None: all), a seeded random subset
    # Kvasir-SEG pairs of the test split (imagesTs / labelsTs; None: none), a seeded random subset of the others
    test_cases: Optional[int]
    max_size: Optional[int]  # the converter's downscaling (None: full resolution)
    folds: Tuple[int, ...]
    trainer_suffix: str  # schedule of every segmenter: nnUNetTrainer_cpu / ORDER_cpu / ... or nnU-Net's full one
    device: str
    law_train: Tuple[str, ...]  # options of `law train`
    synthetic: int  # synthetic cases of each weighting's LAW dataset (the image-quality ablation)
    sampling_steps: int
    downstream_ratio: float  # synthetic / real training cases of the downstream comparison (a key of RATIO_IDS)
    runs: int  # training runs of each replicated segmenter (one run of one fold moves by a few Dice points)
    # False: the presets (PRESETS) train at nnUNetPlans' batch size, as every other segmenter (equal images per
    # iteration), since ResEnc M's planner lifts nnU-Net's 5 %-of-the-dataset cap (at 128 px: 197 instead of 10)
    preset_batch_size: bool

    def trainer(self, base: str) -> str:
        return base + self.trainer_suffix


SCALES = {
    # a 2-core CPU in about an hour per script: 200 pairs at 128 px, fold 0, 20 x 50 iterations per segmenter, a
    # small inpainting generator on 64 x 64 lesion windows at the images' resolution (1500 steps), 100 synthetic
    # cases through the quality gate (100 DDIM steps: at 25 this generator paints saturated, speckled lesions);
    # downstream: a quarter as many synthetic as real training cases (the ratio study), 3 runs of ORDER
    "cpu": Scale("cpu", 200, 200, 128, (0,), "_cpu", "cpu",
                 ("--iterations", "1500", "--batch-size", "16", "--image-size", "64", "64", "--features", "16", "32",
                  "64", "--lr", "1e-3", "--warmup-steps", "250", "--save-every", "250"), 100, 100, 0.25, 3, False),
    # checks that the scripts run end to end, in minutes; its numbers mean nothing
    "smoke": Scale("smoke", 16, 8, 64, (0,), "_smoke", "cpu",
                   ("--iterations", "6", "--batch-size", "4", "--image-size", "32", "32", "--features", "8", "16",
                    "--save-every", "3"), 4, 3, 0.25, 2, False),
    # the papers' setting on a GPU: every pair at full resolution, five folds, nnU-Net's 1000 x 250 schedule,
    # the default generator at 256 x 256
    "paper": Scale("paper", None, None, None, (0, 1, 2, 3, 4), "", "cuda",
                   ("--iterations", "20000", "--batch-size", "16", "--image-size", "256", "256"), 1000, 50, 1.0, 1,
                   True),
}


def parse_args(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                        help="cpu: reduced, under an hour on a 2-core CPU (default); paper: full scale, GPU; "
                             "smoke: minutes, checks the script only")
    parser.add_argument("--work", type=Path, default=Path("reproduction"),
                        help="work folder shared by the reproduction scripts (default ./reproduction)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"Kvasir-SEG as downloaded: images/*.jpg, masks/*.jpg (default {DEFAULT_DATA})")
    parser.add_argument("-device", dest="device", default=None, help="cuda|cpu|mps (default: the scale's)")
    return parser.parse_args(argv)


@dataclass
class Reproduction:
    """One script's run: its scale, work folder, environment, log, and the stages it ran."""
    scale: Scale
    work: Path
    data: Path
    device: str
    script: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, script: str) -> "Reproduction":
        scale = SCALES[args.scale]
        work = args.work.resolve()
        for folder in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "results", "source"):
            (work / folder).mkdir(parents=True, exist_ok=True)
        return cls(scale, work, args.data.resolve(), args.device or scale.device, script)

    @property
    def env(self) -> Dict[str, str]:
        env = dict(os.environ, nnUNet_extTrainer=trainer_folder(),
                   **{name: str(self.work / name) for name in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                 "nnUNet_results")})
        if self.device == "cpu":  # a few CPU cores: more workers than cores only contend
            env.setdefault("nnUNet_n_proc_DA", "2")
            env.setdefault("nnUNet_def_n_proc", "1")
        return env

    @property
    def log(self) -> Path:
        return self.work / "logs" / f"{self.script}.log"

    @property
    def results(self) -> Path:
        return self.work / "results"

    def dataset(self, dataset_id: int) -> str:
        """The folder name of a dataset id in nnUNet_raw (exists once converted / synthesized)."""
        found = sorted((self.work / "nnUNet_raw").glob(f"Dataset{dataset_id:03d}_*"))
        return found[0].name if found else f"Dataset{dataset_id:03d}_{REAL_NAME}"

    def run(self, stages: List[Tuple[Stage, Optional[Path]]]) -> Dict[str, float]:
        """Run the stages whose product does not exist yet (no product: always); returns their wall times.

        Build the stages of a phase only after the previous phase ran: their paths name datasets and models
        that the previous phase creates."""
        timings = {}
        with tqdm(stages, desc=self.script, unit="stage", file=sys.stdout) as bar:
            for stage, product in bar:
                bar.set_postfix_str(stage.name)
                if product is not None and product.exists():
                    tqdm.write(f"# done already: {stage.name} ({product})")
                    continue
                timings[stage.name] = run_stage(stage, self.env, self.log)
        return timings

    def run_parallel(self, stages: List[Tuple[Stage, Optional[Path]]], jobs: int) -> Dict[str, float]:
        """:meth:`run` with up to ``jobs`` stages at a time (independent ones, e.g. trainings at one thread each);
        each stage's output goes to a log of its own, which the script's log names."""
        if jobs <= 1:
            return self.run(stages)
        logs = self.work / "logs" / self.script
        logs.mkdir(exist_ok=True)
        pending = [replace(stage, log=logs / (re.sub(r"[^A-Za-z0-9]+", "_", stage.name).strip("_") + ".log"))
                   for stage, product in stages if product is None or not product.exists()]
        with tqdm(total=len(pending), desc=self.script, unit="stage", file=sys.stdout) as bar:
            timings = {}
            for name, seconds in run_side_by_side(pending, self.env, self.log, jobs):
                timings[name] = seconds
                bar.update()
        return timings

    # -- the stages ------------------------------------------------------------------------------------------

    def kvasir_names(self) -> Tuple[List[str], List[str]]:
        """The scale's (training, test) Kvasir-SEG pair names: a seeded random subset of ``cases`` pairs (drawn as
        before the test split existed, so earlier work folders stay valid) and a seeded random subset of
        ``test_cases`` of the other pairs."""
        names = sorted(p.stem for p in (self.data / "images").glob("*.jpg"))
        training = names if self.scale.cases is None else \
            sorted(random.Random(0).sample(names, min(self.scale.cases, len(names))))
        others = sorted(set(names) - set(training))
        test = [] if self.scale.test_cases is None else \
            sorted(random.Random(1).sample(others, min(self.scale.test_cases, len(others))))
        return training, test

    def kvasir_subset(self, test: bool = False) -> Path:
        """The scale's seeded random subset of Kvasir-SEG (``test``: its test pairs) as symbolic links in the official
        layout."""
        if not (self.data / "images").is_dir() or not (self.data / "masks").is_dir():
            raise SystemExit(f"{self.data}: not Kvasir-SEG as downloaded (images/ and masks/ expected); "
                             f"pass --data")
        source = self.work / "source" / (f"kvasir_{self.scale.name}" + ("_test" if test else ""))
        if source.exists():
            return source
        training, test_names = self.kvasir_names()
        names = test_names if test else training
        staging = source.with_name(source.name + ".partial")
        for sub in ("images", "masks"):
            (staging / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            for sub in ("images", "masks"):
                target = staging / sub / f"{name}.jpg"
                if not target.exists():
                    target.symlink_to(self.data / sub / f"{name}.jpg")
        staging.rename(source)
        return source

    def prepare_real(self) -> List[Tuple[Stage, Optional[Path]]]:
        """Convert the real dataset and add its test split (a work folder converted before the test split was gets
        it then), plan and preprocess it, and add the ORDER and MK-UNet configurations."""
        d, raw = str(REAL_ID), self.work / "nnUNet_raw" / self.dataset(REAL_ID)
        size = ["--max-size", str(self.scale.max_size)] if self.scale.max_size else []
        stages = [(Stage("convert", ["nnunet-laworder", "convert", "kvasir-seg", str(self.kvasir_subset()), "-d", d,
                                     *size]), raw / "dataset.json")]
        if self.scale.test_cases:
            # --overwrite: the stage runs only while labelsTs is missing, so it replaces at most the imagesTs of an
            # interrupted run
            stages.append((Stage("test split", ["nnunet-laworder", "convert", "kvasir-seg",
                                                str(self.kvasir_subset(test=True)), "-d", d, *size, "--test-only",
                                                "--overwrite"]), raw / "labelsTs"))
        return [
            *stages,
            *self.plan_stages(REAL_ID),
            # `plans` leaves a configuration that is there as it is: it always runs
            (Stage("MK-UNet configuration", ["nnunet-laworder", "plans", "-d", d, "-c", CONFIGURATION, "--arch",
                                             "mkunet"]), None),
        ]

    def plan_stages(self, dataset_id: int) -> List[Tuple[Stage, Optional[Path]]]:
        d = str(dataset_id)
        preprocessed = self.work / "nnUNet_preprocessed" / self.dataset(dataset_id)
        return [
            (Stage(f"plan and preprocess {d}", ["nnUNetv2_plan_and_preprocess", "-d", d, "-c", CONFIGURATION,
                                                "--verify_dataset_integrity", "-np", "2"]),
             preprocessed / f"{DEFAULT_PLANS}.json"),
            (Stage(f"ORDER configuration {d}", ["nnunet-laworder", "plans", "-d", d, "-c", CONFIGURATION, "--arch",
                                                "order"]), None),
        ]

    def preset_stages(self, segmenters: List[str]) -> List[Tuple[Stage, Optional[Path]]]:
        """``nnUNetv2_plan_experiment -pl PLANNER`` on the real dataset for each segmenter of PRESETS among
        ``segmenters``; run :meth:`equal_batch_size` after them."""
        preprocessed = self.work / "nnUNet_preprocessed" / self.dataset(REAL_ID)
        return [(Stage(f"plan {name}", ["nnUNetv2_plan_experiment", "-d", str(REAL_ID), "-pl", PRESETS[name][0]]),
                 preprocessed / f"{PRESETS[name][1]}.json") for name in segmenters if name in PRESETS]

    def equal_batch_size(self, segmenters: List[str]) -> Dict[str, int]:
        """Unless the scale keeps the presets' own batch size, give each preset's configuration nnUNetPlans' batch
        size (what a user does by editing the plans file); returns {segmenter: the planner's batch size}."""
        folder = self.work / "nnUNet_preprocessed" / self.dataset(REAL_ID)
        default_batch_size = read_json(folder / f"{DEFAULT_PLANS}.json")["configurations"][CONFIGURATION]["batch_size"]
        planned = {}
        for name in (name for name in segmenters if name in PRESETS):
            path = folder / f"{PRESETS[name][1]}.json"
            plans = read_json(path)
            configuration = plans["configurations"][SEGMENTERS[name][0]]
            planned[name] = configuration.setdefault("planned_batch_size", configuration["batch_size"])
            if not self.scale.preset_batch_size:
                configuration["batch_size"] = default_batch_size
            save_json_atomic(plans, path, indent=4)  # nnU-Net's own indent; never half-written for nnUNetv2_train
        return planned

    def preprocess_stages(self, dataset_id: int) -> List[Tuple[Stage, Optional[Path]]]:
        """Preprocess a synthetic dataset with the real dataset's plans, which ``law synthesize`` put in its
        preprocessed folder: no planning, so real only vs real + LAW differs in the training cases alone."""
        d = str(dataset_id)
        preprocessed = self.work / "nnUNet_preprocessed" / self.dataset(dataset_id)
        plans = json.loads((preprocessed / f"{DEFAULT_PLANS}.json").read_text())
        data = preprocessed / plans["configurations"][CONFIGURATION]["data_identifier"]
        return [(Stage(f"preprocess {d}", ["nnUNetv2_preprocess", "-d", d, "-plans_name", DEFAULT_PLANS, "-c",
                                           CONFIGURATION, "-np", "2"]), data)]

    def replicate_plans(self, dataset_id: int, run: int, tag: str = "", base: str = DEFAULT_PLANS) -> str:
        """Plans identifier of run ``run``: the ``base`` plans themselves for run 0, else a copy under another name
        (the same preprocessed data, a results folder of its own, so nnU-Net keeps each run's models apart); ``tag``
        names a copy for models that differ only in an environment variable."""
        name = base + (f"_{tag}" if tag else "") + (f"_r{run}" if run else "")
        if name == base:
            return name
        folder = self.work / "nnUNet_preprocessed" / self.dataset(dataset_id)
        plans = read_json(folder / f"{base}.json")
        plans["plans_name"] = name
        if not (folder / f"{name}.json").is_file() or read_json(folder / f"{name}.json") != plans:
            save_json_atomic(plans, folder / f"{name}.json", indent=4)  # a training may be reading the old copy
        return name

    def model(self, dataset_id: int, name: str, configuration: str, trainer: str, run: int = 0, tag: str = ""
              ) -> Tuple[str, Path]:
        """``(plans, model folder)`` of one model (segmenter or network ``name``) in run ``run``: the run's copy of
        ``name``'s plans (``tag``: see replicate_plans) and nnU-Net's TRAINER__PLANS__CONFIG folder."""
        plans = self.replicate_plans(dataset_id, run, tag, plans_of(name))
        return plans, self.work / "nnUNet_results" / self.dataset(dataset_id) / f"{trainer}__{plans}__{configuration}"

    def train_stage(self, dataset_id: int, name: str, configuration: str, trainer: str, fold: int, run: int = 0,
                    tag: str = "", env: Optional[Dict[str, str]] = None) -> Tuple[Stage, Path]:
        """nnUNetv2_train of one model (:meth:`model`) and fold in run ``run``: seed 12345 + run (the short schedules
        are seeded, so runs with one seed would be copies) and ``env``'s extra variables; ``--c`` where an
        interrupted run left a checkpoint."""
        plans, model = self.model(dataset_id, name, configuration, trainer, run, tag)
        folder = model / f"fold_{fold}"
        variables = [f"{k}={v}" for k, v in sorted((env or {}).items())]
        command = ["env", f"nnUNet_laworder_seed={SHORT_SCHEDULE_SEED + run}", *variables, "nnUNetv2_train",
                   str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", plans, "-device", self.device]
        if (folder / "checkpoint_latest.pth").exists():
            command.append("--c")
        return (Stage(f"train {name} ({trainer}, {plans}) on {dataset_id}, fold {fold}", command),
                split_summary(model, fold))

    def test_stages(self, dataset_id: int, name: str, configuration: str, trainer: str, fold: int, run: int = 0,
                    tag: str = "") -> List[Tuple[Stage, Path]]:
        """nnUNetv2_predict of the real dataset's test cases (imagesTs) by the model that :meth:`train_stage` trains
        with these arguments, then nnUNetv2_evaluate_folder against labelsTs into ``fold_F/test/summary.json``
        (``compare --split test`` reads it). Every dataset's models predict the real dataset's test cases, so real
        only and real + LAW compare on the same cases."""
        plans, model = self.model(dataset_id, name, configuration, trainer, run, tag)
        predict, evaluate = commands_to_test(self.work / "nnUNet_raw" / self.dataset(REAL_ID), model, dataset_id,
                                             configuration, trainer, plans, fold, self.device,
                                             single_process=self.device == "cpu")
        summary, what = split_summary(model, fold, "test"), f"{name} ({trainer}, {plans}) on {dataset_id}, fold {fold}"
        # both stages until the summary exists: after a failed evaluation, the rerun predicts again
        return [(Stage(f"predict the test cases: {what}", predict), summary),
                (Stage(f"evaluate the test cases: {what}", evaluate), summary)]

    def train_stages(self, dataset_id: int, segmenters: List[str], run: int = 0) -> List[Tuple[Stage, Path]]:
        """nnUNetv2_train for each segmenter (a name of SEGMENTERS) and fold, in run ``run``."""
        return [self.train_stage(dataset_id, name, configuration, trainer, fold, run)
                for name, configuration, trainer, _ in zip(segmenters, *self.models(segmenters))
                for fold in self.scale.folds]

    def segmenter_test_stages(self, dataset_id: int, segmenters: List[str], run: int = 0
                              ) -> List[Tuple[Stage, Path]]:
        """:meth:`test_stages` of each segmenter and fold that :meth:`train_stages` trains; none where the scale has
        no test split."""
        if not self.scale.test_cases:
            return []
        return [stage for name, configuration, trainer, _ in zip(segmenters, *self.models(segmenters))
                for fold in self.scale.folds
                for stage in self.test_stages(dataset_id, name, configuration, trainer, fold, run)]

    def law_stages(self, weighting: str) -> List[Tuple[Stage, Optional[Path]]]:
        """LAW with one weighting: the generator on the first fold's training cases only, then its real +
        synthetic dataset (the first fold is the clean comparison: its validation cases shaped nothing)."""
        d, fold = str(REAL_ID), str(self.scale.folds[0])
        run = (self.work / "nnUNet_results" / self.dataset(REAL_ID) / f"LAW__{weighting}__{CONFIGURATION}" /
               f"fold_{fold}")
        train = ["nnunet-laworder", "law", "train", "-d", d, "-c", CONFIGURATION, "-f", fold, "--weighting", weighting,
                 *self.scale.law_train, "-device", self.device, "--no-progress"]
        if (run / "checkpoint_latest.pth").exists():
            train.append("--resume")
        return [(Stage(f"LAW train ({weighting})", train), run / "checkpoint_final.pth"),
                self.synthesize_stage(weighting, LAW_IDS[weighting], law_name(weighting), self.scale.synthetic)]

    def synthesize_stage(self, weighting: str, output_id: int, name: str, num: int) -> Tuple[Stage, Path]:
        """``law synthesize`` of ``num`` cases from the weighting's generator into dataset ``output_id``, each case
        through the quality gate of the real-only ORDER model of the first fold (train it first)."""
        judge_configuration, judge_trainer = SEGMENTERS[JUDGE][0], self.scale.trainer(SEGMENTERS[JUDGE][1])
        return (Stage(f"LAW synthesize ({weighting}, {num} cases -> {output_id})",
                      ["nnunet-laworder", "law", "synthesize", "-d", str(REAL_ID), "-o", str(output_id), "--name",
                       name, "-f", str(self.scale.folds[0]), "--weighting", weighting, "--num", str(num), "--steps",
                       str(self.scale.sampling_steps), "--judge", judge_configuration, "-tr", judge_trainer,
                       "-device", self.device, "--no-progress"]),
                self.work / "nnUNet_raw" / f"Dataset{output_id:03d}_{name}" / "dataset.json")

    def models(self, segmenters: List[str], dataset_id: int = REAL_ID, run: int = 0
               ) -> Tuple[List[str], List[str], List[str]]:
        """The segmenters' configurations, trainers (with the scale's schedule) and plans (run ``run``'s copies on
        ``dataset_id``), paired by position."""
        return ([SEGMENTERS[name][0] for name in segmenters],
                [self.scale.trainer(SEGMENTERS[name][1]) for name in segmenters],
                [self.replicate_plans(dataset_id, run, base=plans_of(name)) for name in segmenters])

    def compare_report(self, out: Path, models: List[Tuple[str, str, str]], split: str = "validation",
                       dataset_id: int = REAL_ID, folds: Optional[Tuple[int, ...]] = None, paired: Optional[int] = None,
                       png: bool = False, benchmark_json: Optional[Path] = None) -> dict:
        """``nnunet-laworder compare`` of (configuration, trainer, plans) models on a dataset's folds (default: the
        scale's) and a split (test: run :meth:`test_stages` first) into ``out``; its JSON report. ``paired``: the
        index of the paired comparisons' reference; ``png``: its figure beside ``out``."""
        configurations, trainers, plans = map(list, zip(*models))
        command = ["nnunet-laworder", "compare", "-d", str(dataset_id), "-c", *configurations, "-tr", *trainers,
                   "-p", *plans, "-f", *map(str, folds or self.scale.folds), "--split", split, "--json", str(out)]
        if paired is not None:
            command += ["--paired", "__".join((trainers[paired], plans[paired], configurations[paired]))]
        if png:
            command += ["--png", str(out.with_suffix(".png"))]
        if benchmark_json is not None:
            command += ["--benchmark-json", str(benchmark_json)]
        out.parent.mkdir(parents=True, exist_ok=True)
        run_stage(Stage(f"compare {out.stem}", command), self.env, self.log)
        return json.loads(out.read_text())

    def compare(self, dataset_id: int, segmenters: List[str], tag: str,
                benchmark_json: Optional[Path] = None, run: int = 0, split: str = "validation") -> dict:
        """:meth:`compare_report` of the segmenters' run ``run`` on a dataset and split, with its figure."""
        out = self.results / f"{tag}{'' if split == 'validation' else '_' + split}_compare.json"
        return self.compare_report(out, list(zip(*self.models(segmenters, dataset_id, run))), split, dataset_id,
                                   png=True, benchmark_json=benchmark_json)

    def compare_models(self, tag: str, models: List[Tuple[str, str, str]], split: str = "validation",
                       paired: Optional[int] = None) -> List[dict]:
        """:meth:`compare_report` of models on the real dataset; their model entries, in order."""
        return self.compare_report(self.results / f"{tag}_{split}_compare.json", models, split,
                                   paired=paired)["models"]

    def compare_one(self, dataset_id: int, configuration: str, trainer: str, fold: int, tag: str = "",
                    run: int = 0, split: str = "validation") -> dict:
        """:meth:`compare_report` of one model (one fold, run ``run``, plans tag ``tag``) on a split; its model
        entry."""
        plans = self.replicate_plans(dataset_id, run, tag)
        out = (self.results / "compare" / f"{dataset_id}_{trainer}__{plans}__{configuration}_f{fold}"
                                          f"{'' if split == 'validation' else '_' + split}.json")
        (model,) = self.compare_report(out, [(configuration, trainer, plans)], split, dataset_id, (fold,))["models"]
        return model

    def real_vs_law(self, ratio: float, segmenters: List[str], replicate: List[str]) -> Tuple[dict, int]:
        """Real only vs real + LAW synthetic at ``ratio`` synthetic / real training cases of the first fold: the law
        generator's cases through the quality gate into dataset ``RATIO_IDS[ratio]`` (the real dataset's plans),
        each segmenter trained on both datasets (the ``replicate`` ones in every one of the scale's runs, the others
        once); returns ({segmenter: downstream_row}, synthetic cases kept). Needs the real-only judge and the law
        generator (``law_stages("law")[:1]``) trained."""
        splits = json.loads((self.work / "nnUNet_preprocessed" / self.dataset(REAL_ID) / "splits_final.json"
                             ).read_text())
        n_real = len(splits[self.scale.folds[0]]["train"])
        dataset_id = RATIO_IDS[ratio]
        self.run([self.synthesize_stage("law", dataset_id, f"{law_name('law')}{int(100 * ratio)}",
                                        max(1, round(ratio * n_real)))])
        self.run(self.preprocess_stages(dataset_id))
        runs = {name: self.scale.runs if name in replicate else 1 for name in segmenters}
        splits = ("validation", "test") if self.scale.test_cases else ("validation",)
        models = {(name, d, split): [] for name in segmenters for d in (REAL_ID, dataset_id) for split in splits}
        for run in range(max(runs.values())):
            trained = [name for name in segmenters if run < runs[name]]
            for d in (REAL_ID, dataset_id):
                self.run(self.train_stages(d, trained, run) + self.segmenter_test_stages(d, trained, run))
                for split in splits:
                    report = self.compare(d, trained, f"real_vs_law{int(100 * ratio)}_{d}_r{run}", run=run,
                                          split=split)
                    for name, model in zip(trained, report["models"]):
                        models[(name, d, split)].append(model)
        kept = json.loads((self.work / "nnUNet_raw" / self.dataset(dataset_id) / "provenance.json").read_text())
        rows = {name: dict(downstream_row(models[(name, REAL_ID, "validation")],
                                          models[(name, dataset_id, "validation")]),
                           ratio=ratio, synthetic_cases=len(kept["cases"]), real_training_cases=n_real)
                for name in segmenters}
        if "test" in splits:  # the same real test cases for both datasets' models
            for name in segmenters:
                rows[name]["test"] = downstream_row(models[(name, REAL_ID, "test")],
                                                    models[(name, dataset_id, "test")])
        return rows, len(kept["cases"])

    def write_table(self, tag: str, title: str, lines: List[str], data: dict) -> Path:
        """``results/<tag>.md`` (the table and how it was made) and ``results/<tag>.json``."""
        header = [f"# {title}", "",
                  f"Scale `{self.scale.name}` on `{self.device}`: "
                  f"{self.scale.cases or 'all'} Kvasir-SEG pairs"
                  f"{f' downscaled to {self.scale.max_size} px' if self.scale.max_size else ''}, folds "
                  f"{', '.join(map(str, self.scale.folds))}; written {time.strftime('%Y-%m-%d %H:%M')} by "
                  f"`python benchmarks/{self.script}.py --scale {self.scale.name}`.", ""]
        path = self.results / f"{tag}.md"
        path.write_text("\n".join(header + lines) + "\n")
        (self.results / f"{tag}.json").write_text(json.dumps({"scale": self.scale.name, "device": self.device,
                                                              **data}, indent=2) + "\n")
        print(path.read_text())
        return path
