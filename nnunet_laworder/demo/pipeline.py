"""The demo workflow: nnU-Net's own commands, run as child processes exactly as a user would type them, one step
after another; the ORDER training and LAW's generator training, which need only the preprocessed data and fold 0's
split, run side by side in one step."""
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from tqdm import tqdm

from nnunet_laworder.demo.paths import (BASE_CONFIGURATION, CONFIGURATION, DATASET_ID, DEFAULT_TRAINER, FOLD,
                                        LAW_DATASET_ID, N_TEST, OUTPUTS, SAMPLE, DemoPaths)
from nnunet_laworder.demo.report import write_report
from nnunet_laworder.errors import InputError
from nnunet_laworder.law.data import training_files
from nnunet_laworder.law.splits import real_splits
from nnunet_laworder.nnunet_folders import check_output_folder, read_json
from nnunet_laworder.training.discovery import find_trainer_class
from nnunet_laworder.training.order_trainers import cpu_threads, nnUNetTrainerORDER
from nnunet_laworder.workflow import NNUNET_FOLDERS, Stage, export_lines, nnunet_variables, run_side_by_side

# The LAW stage, sized for a few CPU minutes: a small generator inpainting 48x48 lesion windows (learning rate raised
# for the short run), trained on fold 0's training cases only, writes 16 synthetic cases into a new dataset
LAW_TRAIN_OPTIONS = ["--iterations", "600", "--batch-size", "16", "--image-size", "48", "48", "--features", "16", "32",
                     "64", "--lr", "1e-3", "--warmup-steps", "100", "--save-every", "200"]
LAW_SYNTHETIC_CASES = 16
LAW_SAMPLING_STEPS = 25


def sample_cases(sample: Path = SAMPLE) -> List[str]:
    return sorted(p.stem for p in (sample / "images").glob("*.jpg"))


def held_out_cases(sample: Path = SAMPLE) -> List[str]:
    """The test cases: the last ``N_TEST`` names in sorted order (the names are hashes, so an arbitrary subset)."""
    return sample_cases(sample)[-N_TEST:]


def check_trainer(trainer: str) -> None:
    """``trainer`` trains the demo's ORDER configuration: checked first, as nnUNetv2_train would refuse it only after
    conversion and preprocessing."""
    if not issubclass(find_trainer_class(trainer), nnUNetTrainerORDER):
        raise InputError(f"--trainer {trainer} does not train ORDER, the demo's network; give an ORDER trainer, "
                         f"e.g. {DEFAULT_TRAINER}")


def prepare_output(paths: DemoPaths, overwrite: bool) -> None:
    """Refuse an unwritable folder, and an earlier run's results unless ``overwrite``; then remove only what the
    demo itself writes."""
    check_output_folder(paths.root, "--output")
    found = [name for name in OUTPUTS if (paths.root / name).exists()]
    if found and not overwrite:
        raise InputError(f"{paths.root} already holds demo results ({', '.join(found)}); "
                         f"pass --overwrite to replace them or choose another --output")
    for name in found:
        path = paths.root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in NNUNET_FOLDERS:
        (paths.root / name).mkdir(parents=True)


Step = Tuple[Stage, ...]  # stages run side by side; a step of one stage runs alone


def law_threads() -> int:
    """Torch threads of law train beside the ORDER training on CPU: the cores that training's threads leave, at
    least one."""
    return max(1, (os.cpu_count() or 1) - cpu_threads())


def preparation_steps(paths: DemoPaths) -> List[Step]:
    """Convert the sample, plan and preprocess it, add the ORDER configuration."""
    d = str(DATASET_ID)
    return [
        (Stage("convert", ["nnunet-laworder", "convert", "kvasir-seg", str(SAMPLE), "-d", d,
                           "--test-list", str(paths.test_list)]),),
        # two workers for the fingerprint too: nnU-Net's default of 8 spawned processes, each importing torch,
        # costs more than the 64 small images they read
        (Stage("plan and preprocess", ["nnUNetv2_plan_and_preprocess", "-d", d, "-c", BASE_CONFIGURATION,
                                       "--verify_dataset_integrity", "-np", "2", "-npfp", "2"]),),
        (Stage("add ORDER configuration", ["nnunet-laworder", "plans", "-d", d, "-c", BASE_CONFIGURATION,
                                           "--arch", "order"]),),
    ]


def training_steps(paths: DemoPaths, device: str, trainer: str, law: bool) -> List[Step]:
    """Train ORDER (with ``law``, LAW's generator beside it), predict the held-out images and evaluate them; then,
    with ``law``, the real + synthetic dataset and its layout fidelity."""
    d = str(DATASET_ID)
    # one preprocessing / export worker each: on a few CPU cores more workers only contend
    workers = ["-npp", "1", "-nps", "1"] if device == "cpu" else []
    return [
        (Stage("train", ["nnUNetv2_train", d, CONFIGURATION, str(FOLD), "-tr", trainer, "-device", device]),
         *([law_train_stage(paths, device)] if law else [])),
        (Stage("predict", ["nnUNetv2_predict", "-i", str(paths.raw_dataset / "imagesTs"), "-o", str(paths.predictions),
                           "-d", d, "-c", CONFIGURATION, "-tr", trainer, "-f", str(FOLD), "-device", device,
                           *workers]),),
        (Stage("evaluate", ["nnUNetv2_evaluate_folder", str(paths.raw_dataset / "labelsTs"), str(paths.predictions),
                            "-djfile", str(paths.predictions / "dataset.json"),
                            "-pfile", str(paths.predictions / "plans.json")]),),
        *(law_steps(device, trainer) if law else []),
    ]


def law_train_stage(paths: DemoPaths, device: str) -> Stage:
    """LAW on the same data: train the generator on fold 0's training cases, beside the ORDER training, so into a
    log of its own and, on CPU, on the cores that training leaves."""
    # a user's own OMP_NUM_THREADS wins, as for the demo's other CPU settings (workflow.nnunet_variables)
    threads = {"OMP_NUM_THREADS": str(law_threads())} if device == "cpu" and "OMP_NUM_THREADS" not in os.environ \
        else {}
    return Stage("LAW train", ["nnunet-laworder", "law", "train", "-d", str(DATASET_ID), "-c", BASE_CONFIGURATION,
                               "-f", str(FOLD), *LAW_TRAIN_OPTIONS, "-device", device, "--no-progress"],
                 env=threads, log=paths.law_train_log)


def law_steps(device: str, trainer: str) -> List[Step]:
    """After both trainings: write real + synthetic as a new dataset, and measure layout fidelity with the ORDER
    model just trained (FID needs far more than 16 images)."""
    d, fold = str(DATASET_ID), str(FOLD)
    return [
        (Stage("LAW synthesize", ["nnunet-laworder", "law", "synthesize", "-d", d, "-o", str(LAW_DATASET_ID),
                                  "-f", fold, "--num", str(LAW_SYNTHETIC_CASES), "--steps", str(LAW_SAMPLING_STEPS),
                                  "-device", device, "--no-progress"]),),
        # law evaluate predicts with nnU-Net's predictor, which knows cuda and cpu
        (Stage("LAW evaluate", ["nnunet-laworder", "law", "evaluate", "-d", str(LAW_DATASET_ID), "--no-fid",
                                "--model-dataset", d, "-c", CONFIGURATION, "-tr", trainer, "-f", fold,
                                "-device", "cuda" if device == "cuda" else "cpu", "--no-progress"]),),
    ]


def write_fold_split(paths: DemoPaths) -> None:
    """Write the preprocessed dataset's splits_final.json before the two trainings start, which would otherwise
    both write it (nnUNetv2_train not atomically). It is nnU-Net's own split (5 folds, seed 12345), the one
    nnUNetv2_train writes, so typing the commands one after another gives the same folds."""
    files = training_files(paths.raw_dataset, read_json(paths.raw_dataset / "dataset.json"))
    real_splits(paths.preprocessed_dataset, list(files), write=True)


def run_steps(steps: List[Step], env: dict, log: Path, bar: tqdm) -> Dict[str, float]:
    """Run the steps in order, the stages of each side by side; returns every stage's wall time."""
    timings = {}
    for step in steps:
        bar.set_postfix_str(" + ".join(stage.name for stage in step))
        ended = dict(run_side_by_side(step, env, log, len(step)))
        timings.update((stage.name, ended[stage.name]) for stage in step)  # the plan's order, not the ending order
        bar.update()
    return timings


def run_demo(output: Path, device: str = "cpu", trainer: str = DEFAULT_TRAINER, overwrite: bool = False,
             law: bool = True) -> Path:
    """Run the whole workflow (with the LAW stage unless ``law`` is False) into ``output``; returns the report
    folder."""
    paths = DemoPaths(Path(output).resolve())
    check_trainer(trainer)
    prepare_output(paths, overwrite)
    paths.test_list.write_text("\n".join(held_out_cases()) + "\n")
    variables = nnunet_variables(paths.root, device)
    exports = "\n".join(export_lines(variables))
    tqdm.write(f"{exports}\n# output of each command: {paths.log}, unless it names a log of its own")
    paths.log.write_text(exports + "\n")
    env = dict(os.environ, **variables)
    preparation, trainings = preparation_steps(paths), training_steps(paths, device, trainer, law)
    with tqdm(total=len(preparation) + len(trainings), desc="demo", unit="step", file=sys.stdout) as bar:
        timings = run_steps(preparation, env, paths.log, bar)
        write_fold_split(paths)
        timings.update(run_steps(trainings, env, paths.log, bar))
    commands = [shlex.join(stage.command) for step in preparation + trainings for stage in step]
    return write_report(paths, trainer, device, variables, commands, timings, law)
