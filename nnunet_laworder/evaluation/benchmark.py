"""``nnunet-laworder benchmark``: the cost of each configuration's network, measured side by side.

Every network is built and run as nnU-Net builds and runs it (:mod:`~nnunet_laworder.evaluation.runner`): a
training step is the trainer's own ``train_step``, a forward pass that of ``nnUNetv2_predict`` for one patch.
Parameters and GMACs are counted as ``nnunet-laworder complexity`` counts them.

All networks live in one process and are timed with interleaved repetitions (each repetition runs every model
once, the order alternating), so drift in machine load hits them alike. Peak memory is measured beforehand in
one child process per model (:mod:`~nnunet_laworder.evaluation.memory`). With ``predict``, each trained model's
``nnUNetv2_predict`` is also timed end to end per case, with and without mirroring
(:mod:`~nnunet_laworder.evaluation.prediction_timing`). Every figure is also a ratio to nnU-Net's default
configuration of the same dimension.
"""
import platform
import statistics
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation.memory import MEMORY_STEPS, measure_memory
from nnunet_laworder.evaluation.models import ModelIdentity, resolve_models
from nnunet_laworder.evaluation.prediction_timing import (CHECKPOINT, MIRRORING, checkpoint_file, select_cases,
                                                           time_predictions)
from nnunet_laworder.evaluation.runner import Runner, timed
from nnunet_laworder.nnunet_folders import (parse_fold, plans_file, preprocessed_dataset_folder, read_json,
                                            resolve_device)
from nnunet_laworder.nnunet_predictor import load_nnunet_predictor

FIGURES = ("parameters", "gmacs", "forward_ms", "train_step_ms", "train_peak_bytes", "forward_peak_bytes")
# with --predict, per mirroring setting: nnUNetv2_predict's seconds per case (median) and in total
PREDICT_FIGURES = {"tta": "predict_s_per_case", "no_tta": "predict_s_per_case_no_tta"}
PREDICT_TOTALS = {"tta": "predict_s_total", "no_tta": "predict_s_total_no_tta"}


def spread(seconds: List[float], scale: float = 1e3) -> dict:
    """Median and spread of ``scale`` x the values, milliseconds by default (quartiles need two samples; with one
    they equal the median)."""
    values = [scale * s for s in seconds]
    q1, q3 = (statistics.quantiles(values, n=4, method="inclusive")[::2] if len(values) > 1 else
              (values[0], values[0]))
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "iqr": q3 - q1, "min": min(values),
            "max": max(values), "samples": values}


def time_interleaved(runners: List[Runner], warmup: int, repeats: int) -> Dict[str, dict]:
    """Every repetition runs each model's forward pass and training step once, the model order alternating."""
    for _ in range(warmup):
        for runner in runners:
            runner.train_step()  # also creates the optimiser state, before anything is timed
            runner.forward()
    times = {r.model.identifier: {"forward": [], "train_step": []} for r in runners}
    for rep in range(repeats):
        for runner in (runners if rep % 2 == 0 else runners[::-1]):
            times[runner.model.identifier]["forward"].append(timed(runner.device, runner.forward))
            times[runner.model.identifier]["train_step"].append(timed(runner.device, runner.train_step))
    return times


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware(device, threads: int) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"{cpu_name()}, {threads} torch threads"


def measured_row(runner: Runner, times: Dict[str, List[float]], mem: dict) -> dict:
    forward, step = spread(times["forward"]), spread(times["train_step"])
    return {**runner.describe(), **runner.cost, "forward_ms": forward["median"], "train_step_ms": step["median"],
            "forward_timing": forward, "train_step_timing": step, "forward_peak_bytes": mem.get("forward_peak_bytes"),
            "train_peak_bytes": mem.get("train_peak_bytes"), "memory": mem or None}


def add_ratios(rows: List[dict], references: Dict[int, str], figures: Sequence[str]) -> None:
    by_id = {row["identifier"]: row for row in rows}
    for row in rows:
        reference = by_id.get(references.get(row["dim"]))
        row["reference"] = reference["identifier"] if reference else None
        row["is_reference"] = reference is row
        row["ratios"] = {}
        for figure in figures:
            value, ref = row.get(figure), reference.get(figure) if reference else None
            row["ratios"][figure] = value / ref if value is not None and ref else None


def run_benchmark(dataset: str, configurations: Sequence[str], trainers: Optional[Sequence[str]] = None,
                  plans_names: Optional[Sequence[str]] = None, device: Optional[str] = None,
                  threads: Optional[int] = None, repeats: int = 10, warmup: int = 2,
                  batch_size: Optional[int] = None, memory: bool = True, predict: bool = False,
                  predict_cases: int = 8, predict_fold: str = "0") -> dict:
    """Measures the models (see the module docstring); returns the report that --json writes."""
    if repeats < 1 or warmup < 0 or (threads is not None and threads < 1) or (batch_size is not None
                                                                             and batch_size < 1):
        raise InputError("--repeats, --threads and --batch-size must be at least 1, --warmup at least 0")
    if predict_cases < 1:
        raise InputError(f"--predict-cases must be at least 1, got {predict_cases}")
    fold = parse_fold(predict_fold, "--predict-fold")
    torch_device = resolve_device(device)
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    folder = preprocessed_dataset_folder(dataset)
    models, plans_by_model, added, references, notes = resolve_models(dataset, configurations, trainers,
                                                                      plans_names)
    if predict:
        cases = select_cases(dataset, predict_cases)
        if len(cases) < predict_cases:
            notes.append(f"--predict-cases {predict_cases}: the dataset has {len(cases)} training cases, all timed")
        predicted = trained_models(dataset, models, added, fold, notes)
    dataset_json_file = folder / "dataset.json"
    dataset_json = read_json(dataset_json_file)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        # built first, so that a wrong trainer or configuration fails before anything is measured
        runners = [Runner(m, plans_by_model[m.identifier], dataset_json, torch_device, batch_size,
                          Path(scratch)).build() for m in models]
        if memory and torch_device.type == "mps":
            memory = False
            notes.append("peak memory is not measured on mps (torch reports no peak there)")
        if memory and torch_device.type == "cpu" and not Path("/proc/self/clear_refs").exists():
            memory = False
            notes.append("peak memory is not measured: the CPU peak RSS needs Linux's /proc/self/clear_refs")
        memory_results = {m.identifier: measure_memory(m, plans_file(dataset, m.plans), dataset_json_file,
                                                       torch_device, threads, batch_size)
                          for m in models} if memory else {}
        times = time_interleaved(runners, warmup, repeats)
        rows = [measured_row(r, times[r.model.identifier], memory_results.get(r.model.identifier, {}))
                for r in runners]
        if predict:
            del runners  # the training state out of the way of the predictors
            predictors = {m.identifier: load_nnunet_predictor(checkpoint_file(dataset, m, fold).parent.parent, [fold],
                                                              CHECKPOINT, torch_device) for m in predicted}
            add_predict_figures(rows, predictors, time_predictions(predictors, cases, torch_device, Path(scratch)))
    add_ratios(rows, references, FIGURES + (tuple(PREDICT_FIGURES.values()) if predict else ()))
    settings = {"dataset": dataset, "device": str(torch_device), "hardware": hardware(torch_device, threads),
                "threads": threads, "torch": torch.__version__, "nnunetv2": package_version("nnunetv2"),
                "warmup": warmup, "repeats": repeats, "batch_size_override": batch_size,
                "timing": "one process, interleaved repetitions (model order alternating), device synchronised "
                          "around each timed call; forward: batch 1, eval, deep supervision off, inference_mode, "
                          "autocast on CUDA; training step: the trainer's own train_step on random data at the "
                          "batch size",
                "memory": None if not memory_results else (
                    "CUDA max_memory_allocated in one child process per model" if torch_device.type == "cuda" else
                    "peak RSS (VmHWM) of one child process per model above its RSS after the imports"),
                "memory_steps": MEMORY_STEPS, "wall_seconds": time.time() - started}
    if predict:
        settings["predict"] = {
            "cases": list(cases), "fold": fold, "checkpoint": CHECKPOINT, "warmup": 1,
            "num_processes_preprocessing": 0, "num_processes_segmentation_export": 0,
            "timing": "nnUNetv2_predict end to end (nnU-Net's predictor, the command's defaults otherwise): one "
                      "predict_from_files_sequential call per case (-npp 0 -nps 0: preprocessing, sliding window, "
                      "export in this process, no worker start-up), models and mirroring on / off interleaved case "
                      "by case; one untimed call per model and setting first; torch threads as above "
                      "(nnUNetv2_predict itself takes every core on CPU, one on CUDA); seconds"}
    return {"settings": settings, "references": {f"{d}d": r for d, r in references.items()}, "notes": notes,
            "rows": rows}


def trained_models(dataset: str, models: List[ModelIdentity], added: List[ModelIdentity], fold, notes: List[str]):
    """The models whose ``fold`` has nnUNetv2_predict's checkpoint: every requested one must (an InputError before
    anything is measured), an added reference without one is left out of the prediction timing."""
    trained = []
    for model in models:
        checkpoint = checkpoint_file(dataset, model, fold)
        if checkpoint.is_file():
            trained.append(model)
        elif model in added:
            notes.append(f"{model.identifier} is not trained ({checkpoint} not found): no prediction times, and no "
                         f"prediction ratios for its dimension")
        else:
            raise InputError(f"--predict: {checkpoint} not found; train it first (nnUNetv2_train {dataset} "
                             f"{model.configuration} {fold} -tr {model.trainer} -p {model.plans}) or use "
                             f"--predict-fold")
    return trained


def add_predict_figures(rows: List[dict], predictors: dict, times: Dict[str, Dict[str, List[float]]]) -> None:
    """Seconds per case (median) and in total, with and without mirroring; None for a model not timed."""
    for row in rows:
        seconds = times.get(row["identifier"])
        timing = {setting: {**spread(seconds[setting], scale=1), "total": sum(seconds[setting])}
                  for setting in MIRRORING} if seconds else None
        for setting in MIRRORING:
            row[PREDICT_FIGURES[setting]] = timing[setting]["median"] if timing else None
            row[PREDICT_TOTALS[setting]] = timing[setting]["total"] if timing else None
        predictor = predictors.get(row["identifier"])
        row["predict_timing"] = timing
        row["predict_mirror_axes"] = list(predictor.allowed_mirroring_axes or ()) if predictor else None


def package_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
