"""``nnunet-laworder compare``: nnU-Net's own validation (or test) results of several models in one table.

Reads ``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG/fold_X/validation/summary.json`` (what
``nnUNetv2_train`` writes after training a fold). Where no fold has one, a merged
``crossval_results_folds_<folds>/summary.json`` (what ``nnUNetv2_find_best_configuration`` writes) is used for
the statistics over cases; the statistics over folds then stay empty. The test split reads
``fold_X/test/summary.json`` instead (nnU-Net's evaluation of the raw dataset's imagesTs, see
``nnunet_folders.commands_to_test``), with no cross-validation fallback: no merged summary of test cases exists.
Statistics:

* over folds: mean and sample standard deviation of the folds' own means (``summary["mean"]``, nnU-Net's nanmean
  over the fold's cases), so a fold's number is exactly the one nnU-Net printed;
* over cases: mean and sample standard deviation over all validation cases of the available folds, NaN cases
  (empty reference and prediction, which nnU-Net scores NaN) left out, as nnU-Net's own means leave them out.

The foreground mean follows nnU-Net's ``foreground_mean`` (the mean of the label means); its standard deviation
over cases is that of each case's mean over the labels. Requested folds without a summary are listed as
missing (a warning, and ``missing_folds`` in the JSON) and never averaged in silently.
"""
import json
import math
import os
import shlex
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
from nnunetv2.utilities.file_path_utilities import folds_tuple_to_string

from nnunet_laworder.errors import InputError
from nnunet_laworder.evaluation import plots
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.evaluation.models import DEFAULT_CONFIGURATION, ModelIdentity, network_cost, pair_by_position
from nnunet_laworder.nnunet_folders import (DEFAULT_PLANS, SPLITS, check_configuration, commands_to_test,
                                            dataset_id, model_folder, parse_fold, read_json, split_summary)

METRICS = ("Dice", "IoU")  # in the table and per case; the JSON has every metric nnU-Net reports (TP, FP, ...)
FOREGROUND = "foreground mean"


def label_names(dataset_json: dict) -> Dict[str, str]:
    """nnU-Net's summary keys (``"1"``, or ``"(1, 2)"`` for a region) -> the names dataset.json gives them."""
    names = {}
    for name, value in dataset_json["labels"].items():
        if isinstance(value, (list, tuple)):
            names[label_or_region_to_key(tuple(value))] = name
            if len(value) == 1:
                names[label_or_region_to_key(value[0])] = name
        else:
            names[label_or_region_to_key(value)] = name
            names[label_or_region_to_key((value,))] = name
    return names


def finite(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def mean_std(values: Sequence[Optional[float]]) -> dict:
    """Mean and sample standard deviation of the finite values (None where too few)."""
    kept = [v for v in map(finite, values) if v is not None]
    return {"mean": statistics.fmean(kept) if kept else None,
            "std": statistics.stdev(kept) if len(kept) > 1 else None, "n": len(kept)}


def read_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable nnU-Net summary.json ({e})") from None
    if not {"mean", "metric_per_case"} <= set(summary):
        raise InputError(f"{path} is not an nnU-Net summary.json (no 'mean' / 'metric_per_case')")
    return summary


def case_name(entry: dict) -> str:
    return Path(entry.get("reference_file") or entry.get("prediction_file") or "?").name


def how_to_test(folder: Path, identity: ModelIdentity, fold: str) -> str:
    """The two commands that write one fold's test summary.json, for an error message."""
    raw = Path(os.environ.get("nnUNet_raw", "$nnUNet_raw")) / folder.parent.name
    predict, evaluate = commands_to_test(raw, folder, dataset_id(folder.parent.name), identity.configuration,
                                         identity.trainer, identity.plans, fold)
    return f"`{shlex.join(predict)}` then `{shlex.join(evaluate)}`"


def model_results(folder: Path, identity: ModelIdentity, folds: Sequence[str], split: str = "validation") -> dict:
    """The fold summaries of a split found in a model folder, or (validation) the cross-validation summary where no
    fold has one."""
    found, missing = {}, []
    for fold in folds:
        path = split_summary(folder, fold, split)
        if path.is_file():
            found[fold] = read_summary(path)
        else:
            missing.append(fold)
    if found:
        return {"source": "folds", "summaries": found, "missing_folds": missing, "crossval": None}
    expected = ", ".join(str(split_summary(folder, f, split)) for f in folds)
    if split == "test":
        others = f" (fold {folds[0]}; likewise for the others)" if len(folds) > 1 else ""
        raise InputError(f"no test results for {folder.name}: none of {expected} exists; predict and evaluate the "
                         f"raw dataset's imagesTs with {how_to_test(folder, identity, folds[0])}{others}")
    crossval = folder / f"crossval_results_folds_{folds_tuple_to_string(list(folds))}" / "summary.json"
    if crossval.is_file():
        return {"source": "crossval", "summaries": {}, "missing_folds": [], "crossval": read_summary(crossval)}
    raise InputError(f"no results for {folder.name}: none of {expected} exists, nor {crossval} "
                     f"(train with nnUNetv2_train, or check -d / -c / -tr / -p / -f)")


def metric_statistics(results: dict, keys: List[str]) -> Dict[str, dict]:
    """Per label key (and the foreground mean), per metric: per-fold values, over-fold and over-case statistics."""
    summaries = results["summaries"]
    cases = [entry for summary in (summaries.values() if summaries else [results["crossval"]])
             for entry in summary["metric_per_case"]]
    metrics = list(next(iter((summaries or {"crossval": results["crossval"]}).values()))["mean"][keys[0]])
    stats = {}
    for key in keys + [FOREGROUND]:
        stats[key] = {}
        for metric in metrics:
            if key == FOREGROUND:
                per_fold = [s["foreground_mean"][metric] for s in summaries.values()]
                per_case = [mean_std([c["metrics"][k][metric] for k in keys])["mean"] for c in cases]
            else:
                per_fold = [s["mean"][key][metric] for s in summaries.values()]
                per_case = [c["metrics"][key][metric] for c in cases]
            over_cases = mean_std(per_case)
            if key == FOREGROUND:  # nnU-Net's definition: the mean of the label means
                over_cases["mean"] = mean_std([stats[k][metric]["cases"]["mean"] for k in keys])["mean"]
            stats[key][metric] = {"per_fold": dict(zip(summaries, map(finite, per_fold))),
                                  "folds": mean_std(per_fold), "cases": over_cases}
    return stats


def read_benchmark(path: Optional[Path]) -> tuple:
    """``(rows by model identifier, hardware)`` of a ``benchmark --json`` file."""
    if path is None:
        return {}, None
    try:
        report = json.loads(Path(path).read_text())
        return {row["identifier"]: row for row in report["rows"]}, report["settings"]["hardware"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"--benchmark-json {path}: not a JSON written by `nnunet-laworder benchmark` ({e})") \
            from None


def run_compare(dataset: str, configurations: Sequence[str], trainers: Sequence[str],
                plans_names: Optional[Sequence[str]] = None, folds: Sequence[str] = ("0", "1", "2", "3", "4"),
                benchmark_json: Optional[Path] = None, paired: Optional[str] = None, split: str = "validation"
                ) -> dict:
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    folds = [str(parse_fold(str(f))) for f in folds]
    if not folds or len(set(folds)) != len(folds):
        raise InputError(f"-f needs distinct folds, got {' '.join(folds)}")
    latency, hardware = read_benchmark(benchmark_json)
    models, warnings = [], []
    for entry in pair_by_position(configuration=configurations, trainer=trainers, plans=plans_names):
        identity = ModelIdentity(entry["trainer"], entry["plans"] or DEFAULT_PLANS, entry["configuration"])
        folder = model_folder(dataset, identity.trainer, identity.plans, identity.configuration)
        if not folder.is_dir():
            raise InputError(f"no results folder {folder} for {identity.identifier} (train it with nnUNetv2_train "
                             f"{dataset} {identity.configuration} FOLD -tr {identity.trainer}"
                             f"{'' if identity.plans == DEFAULT_PLANS else ' -p ' + identity.plans})")
        if any(m["identifier"] == identity.identifier for m in models):
            raise InputError(f"{identity.identifier} is listed twice")
        results = model_results(folder, identity, folds, split)
        for file in ("plans.json", "dataset.json"):
            if not (folder / file).is_file():
                raise InputError(f"{folder / file} is missing (nnUNetv2_train writes it into the model folder)")
        plans = read_json(folder / "plans.json")
        dataset_json = read_json(folder / "dataset.json")
        check_configuration(plans, identity.configuration, str(folder / "plans.json"))
        summaries = results["summaries"] or {"crossval": results["crossval"]}
        keys = list(next(iter(summaries.values()))["mean"])
        names = label_names(dataset_json)
        cost = network_cost(identity.trainer, plans, dataset_json, identity.configuration)
        bench = latency.get(identity.identifier)
        if results["missing_folds"]:
            why = "training not finished?" if split == "validation" else "test images not predicted and evaluated?"
            warnings.append(f"{identity.identifier}: fold(s) {', '.join(results['missing_folds'])} have no "
                            f"{split}/summary.json ({why}); statistics use fold(s) "
                            f"{', '.join(results['summaries'])} only")
        if results["source"] == "crossval":
            warnings.append(f"{identity.identifier}: no fold summaries, using the merged cross-validation summary; "
                            f"no statistics over folds")
        if latency and bench is None:
            warnings.append(f"{identity.identifier}: not in {benchmark_json}, no latency")
        stats = metric_statistics(results, keys)
        per_case = [{"fold": fold, "case": case_name(entry),
                     **{metric: {names.get(k, k): finite(entry["metrics"][k][metric]) for k in keys}
                        for metric in METRICS}}
                    for fold, summary in summaries.items() for entry in summary["metric_per_case"]]
        models.append({
            "identifier": identity.identifier, "trainer": identity.trainer, "plans": identity.plans,
            "configuration": identity.configuration, "folder": str(folder), "source": results["source"],
            "folds_requested": folds, "folds_found": list(results["summaries"]),
            "missing_folds": results["missing_folds"], "n_cases": len(per_case),
            "labels": {names.get(k, k): stats[k] for k in keys}, "foreground_mean": stats[FOREGROUND],
            "label_keys": {names.get(k, k): k for k in keys}, "per_case": per_case,
            "dim": len(cost["patch_size"]), **cost,
            "forward_ms": bench["forward_ms"] if bench else None,
            "train_step_ms": bench["train_step_ms"] if bench else None,
            "benchmark_hardware": hardware if bench else None})
    reference = next((m["identifier"] for m in models if m["plans"] == DEFAULT_PLANS
                      and m["configuration"] == DEFAULT_CONFIGURATION.get(m["dim"])), None)
    for model in models:
        model["is_reference"] = model["identifier"] == reference
    report = {"dataset": Path(models[0]["folder"]).parent.name, "split": split, "folds_requested": folds,
              "reference": reference, "warnings": warnings, "models": models}
    if paired is not None:
        report["paired_reference"] = find_model(models, paired)["identifier"]
        report["paired"] = paired_comparisons(models, report["paired_reference"])
    return report


def find_model(models: List[dict], name: str) -> dict:
    """The model whose identifier is ``name``, or the only one with that configuration or trainer."""
    for key in ("identifier", "configuration", "trainer"):
        found = [m for m in models if m[key] == name]
        if len(found) == 1:
            return found[0]
    raise InputError(f"--paired {name}: name one of the compared models by its identifier (TRAINER__PLANS__CONFIG) "
                     f"or by a configuration or trainer that only it has; the models are "
                     f"{', '.join(m['identifier'] for m in models)}")


def case_dice(model: dict) -> Dict[str, Optional[float]]:
    """``{case: Dice}`` of a model's cases; with several labels, the mean over the labels (nnU-Net's foreground
    mean), None where no label has a finite Dice. A test case, which every fold's model predicts, gets the mean over
    the folds: the cases, not their predictions, are what a paired comparison counts."""
    per_case: Dict[str, List[Optional[float]]] = {}
    for entry in model["per_case"]:
        per_case.setdefault(entry["case"], []).append(mean_std(list(entry["Dice"].values()))["mean"])
    return {case: mean_std(values)["mean"] for case, values in per_case.items()}


def paired_comparisons(models: List[dict], reference: str) -> Dict[str, dict]:
    """Each model against ``reference`` on the cases both have (:func:`paired_difference`)."""
    ref = next(m for m in models if m["identifier"] == reference)
    return {f"{m['identifier']} vs {reference}": paired_difference(case_dice(ref), case_dice(m))
            for m in models if m is not ref}


def paired_table(report: dict) -> str:
    lines = [f"Paired per-case Dice differences against {report['paired_reference']} (model - reference; 95% "
             f"percentile bootstrap interval of the mean difference over cases).", "",
             "| model vs reference | cases | mean difference | 95% interval | improved | equal | worse |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, stats in report["paired"].items():
        lines.append(f"| {name} | {stats['cases']} | {stats['mean_diff']:+.4f} | "
                     f"[{stats['ci95'][0]:+.4f}, {stats['ci95'][1]:+.4f}] | {stats['improved']} | "
                     f"{stats['equal']} | {stats['worse']} |")
    return "\n".join(lines)


def pm(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat["std"] is not None else "")


def markdown_table(report: dict) -> str:
    lines = [f"nnU-Net {report['split']} results, {report['dataset']}, folds {' '.join(report['folds_requested'])}; "
             f"mean ± sample std over folds (of each fold's nnU-Net mean) and over cases.",
             f"Reference (nnU-Net's default configuration): {report['reference'] or 'not among the models'}.", "",
             "| model | label | folds | cases | Dice, folds | Dice, cases | IoU, folds | IoU, cases | parameters "
             "| GMACs | forward ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in report["models"]:
        name = model["identifier"] + (" **(reference)**" if model["is_reference"] else "")
        found = len(model["folds_found"])
        folds = (f"{found}/{len(model['folds_requested'])}" if model["source"] == "folds" else "crossval") + \
            (f" (missing {','.join(model['missing_folds'])})" if model["missing_folds"] else "")
        rows = list(model["labels"].items())
        if len(rows) > 1:
            rows.append((FOREGROUND, model["foreground_mean"]))
        for label, stats in rows:
            latency = "-" if model["forward_ms"] is None else f"{model['forward_ms']:.1f}"
            lines.append(f"| {name} | {label} | {folds} | {model['n_cases']} | {pm(stats['Dice']['folds'])} | "
                         f"{pm(stats['Dice']['cases'])} | {pm(stats['IoU']['folds'])} | {pm(stats['IoU']['cases'])} "
                         f"| {model['parameters']:,} | {model['gmacs']:.3f} | {latency} |")
    return "\n".join(lines)


def plot_compare(report: dict, path: Path) -> None:
    """Per-case Dice per model (box plot with the cases as dots), and Dice against GMACs (and forward latency
    where a benchmark JSON was given), nnU-Net's baseline marked."""
    models = report["models"]
    labels = plots.short_labels([m["identifier"] for m in models])
    reference = next((i for i, m in enumerate(models) if m["is_reference"]), None)
    has_latency = any(m["forward_ms"] is not None for m in models)
    fig, axes = plots.panels(3 if has_latency else 2, f"{report['dataset']}: {report['split']}, folds "
                                                      f"{' '.join(report['folds_requested'])}")
    label_list = list(models[0]["labels"])
    data, positions, ticks, tick_labels = [], [], [], []
    for i, model in enumerate(models):
        for j, label in enumerate(label_list):
            values = [c["Dice"].get(label) for c in model["per_case"]]
            data.append([v for v in values if v is not None])
            positions.append(i * (len(label_list) + 1) + j)
        ticks.append(i * (len(label_list) + 1) + (len(label_list) - 1) / 2)
        tick_labels.append(labels[i] + (" (baseline)" if i == reference else ""))
    box_ax = axes[0]
    box_ax.boxplot([d if d else [float("nan")] for d in data], positions=positions, widths=0.7, showfliers=False)
    for pos, values in zip(positions, data):
        box_ax.plot([pos] * len(values), values, ".", alpha=0.5, color="tab:blue")
    box_ax.set_xticks(ticks)
    box_ax.set_xticklabels(tick_labels, rotation=20, ha="right", fontsize=7)
    box_ax.set_ylabel(f"Dice per {report['split']} case" + (f" ({', '.join(label_list)} per model)"
                                                            if len(label_list) > 1 else f" ({label_list[0]})"))
    box_ax.set_ylim(-0.02, 1.02)
    dice = [m["foreground_mean"]["Dice"] for m in models]
    y = [d["folds"]["mean"] if d["folds"]["mean"] is not None else d["cases"]["mean"] for d in dice]
    err = [(d["folds"]["std"],) * 2 if d["folds"]["std"] is not None else None for d in dice]
    plots.scatter_models(axes[1], labels, [m["gmacs"] for m in models], y, reference, "GMACs per patch",
                         "foreground Dice (mean over folds, bars: std)", yerr=err)
    if has_latency:
        plots.scatter_models(axes[2], labels, [m["forward_ms"] for m in models], y, reference,
                             "forward ms per patch (benchmark)", "foreground Dice (mean over folds, bars: std)",
                             yerr=err)
    plots.save_figure(fig, path)
    plots.close(fig)
