"""Where labels are scarce: ORDER trained on 10 %, 25 % or 100 % of fold 0's real training cases, on the real cases
alone, with copy-paste augmentation (lesions of other training cases pasted on the fly, TumorCP), and with LAW
cases (a training case plus one added lesion of another, composed and harmonised by a LAW generator trained on the
budget's cases from noise level t0; t0 = 0 is the same composite without the generator) drawn with probability p.
Every model validates on the same 40 real cases (fold 0's), and each method is paired case for case against real
only (a case's Dice is its mean over the runs); every model also predicts the scale's test split (``imagesTs`` of
the real dataset, pairs no training or choice has seen), reported beside validation (``test`` in each row).

A label budget is a fold of its own in the real dataset's splits_final.json (nnU-Net trains any fold the file
holds): fold 0's validation cases and a seeded share of its training cases, the 10 % inside the 25 %; 100 % is fold
0 itself. t0 and p are fixed before any run (SDEdit-style harmonisation at t0 = 0.3, DiffTumor's p = 0.5), not
chosen on the validation cases; t0 = 0 is the ablation that changes only the generator's part.
``--copy-paste-strengths T0`` adds the LAW protocol of t0 T0 with copy-paste on top (``_synthmix_copypaste``), paired
against copy-paste alone: does the generator add anything to what a team gets without it?
``--methods`` trains and reports only the methods named (real only always: it is every pairing's reference).

    python benchmarks/reproduce_law_low_data.py --fractions 0.25 --jobs 2          # reduced scale, CPU
    python benchmarks/reproduce_law_low_data.py --segmenters ORDER "nnU-Net default" --runs 3 1

``--jobs 2`` trains two models at a time (each at one torch thread, one core each: the plugin's small-network
trainers ran 1.05x slower beside a busy core, benchmarks/results/cpu/shared_cpu_load.json). Not for nnU-Net's
default network, which trains at all cores: two side by side took 373 s per `_cpu` epoch, one alone 81 s (2 cores).
Writes ``WORK/results/law_low_data.{md,json}`` (rows of earlier runs at the same scale kept: a budget run on its own
adds to the table) and ``law_low_data_grid.png``.
"""
import argparse
import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from reproduction import (CONFIGURATION, LAW_SEGMENTERS, REAL_ID, SEGMENTERS, Reproduction, averaged_cases,
                          parse_args)
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.law.splits import SPLITS_FILE, real_splits
from nnunet_laworder.nnunet_folders import read_json, save_json_atomic
from nnunet_laworder.workflow import Stage

# label budget -> its fold in the real dataset's splits_final.json (1.0: fold 0 itself)
BUDGET_FOLDS = {0.1: 5, 0.25: 6, 1.0: 0}
STRENGTHS = (0.0, 0.3, 0.6, 1.0)  # t0 of the LAW datasets; each (budget, t0) has a dataset id of its own
SYNTHETIC_PER_REAL = 4  # synthetic cases per real training case of the budget: a pool that p draws from
LAW_SEED = 0  # law synthesize --seed: every t0 of a budget adds the same lesions to the same hosts
RESULTS_TAG = "law_low_data"
COPY_PASTE_SUFFIX = "+copy-paste"  # a LAW protocol with on-the-fly copy-paste on top (the _synthmix_copypaste trainers)


def law_dataset_id(fraction: float, strength: float) -> int:
    return 530 + 10 * list(BUDGET_FOLDS).index(fraction) + STRENGTHS.index(strength)


def protocol_name(strength: float, p: float, copy_paste: bool = False) -> str:
    return f"law-t0{strength:g}-p{p:g}".replace("t00", "t0") + (COPY_PASTE_SUFFIX if copy_paste else "")


def protocol_probability(method: str) -> float:
    """p of a LAW method name (protocol_name)."""
    return float(method.removesuffix(COPY_PASTE_SUFFIX).split("-p")[-1])


def write_budget_folds(r: Reproduction) -> Dict[float, Tuple[List[str], List[str]]]:
    """Append each budget's fold to the real dataset's splits_final.json (nnU-Net's five folds first, as its
    trainer would write them); returns {fraction: (training cases, validation cases)}. An existing file must hold
    the same folds."""
    preprocessed = r.work / "nnUNet_preprocessed" / r.dataset(REAL_ID)
    identifiers = sorted(p.name[:-len(".png")] for p in
                         (r.work / "nnUNet_raw" / r.dataset(REAL_ID) / "labelsTr").glob("*.png"))
    splits, _ = real_splits(preprocessed, identifiers, write=True)
    train, val = splits[0]["train"], splits[0]["val"]
    order = sorted(train)
    random.Random(0).shuffle(order)  # nested budgets: the 10 % are the first tenth of the same order as the 25 %
    wanted = {BUDGET_FOLDS[f]: {"train": sorted(order[:max(2, round(f * len(order)))]), "val": list(val)}
              for f in BUDGET_FOLDS if BUDGET_FOLDS[f] != 0}
    file = preprocessed / SPLITS_FILE
    folds = read_json(file)
    for index in sorted(wanted):
        if index < len(folds):
            assert folds[index] == wanted[index], f"{file}: fold {index} is not this script's label budget"
        else:
            assert index == len(folds), f"{file}: folds must be appended in order"
            folds.append(wanted[index])
    save_json_atomic(folds, file, indent=4)
    return {f: (folds[BUDGET_FOLDS[f]]["train"], folds[BUDGET_FOLDS[f]]["val"]) for f in BUDGET_FOLDS}


def law_stages(r: Reproduction, fraction: float, strengths: List[float], n_real: int
               ) -> List[Tuple[Stage, Optional[Path]]]:
    """The budget's LAW generator (its fold's training cases only) and one dataset per t0: real cases plus
    SYNTHETIC_PER_REAL x n_real added-lesion cases, preprocessed with the real dataset's plans."""
    fold = str(BUDGET_FOLDS[fraction])
    run = r.work / "nnUNet_results" / r.dataset(REAL_ID) / f"LAW__law__{CONFIGURATION}" / f"fold_{fold}"
    train = ["env", "OMP_NUM_THREADS=1", "nnunet-laworder", "law", "train", "-d", str(REAL_ID), "-c", CONFIGURATION,
             "-f", fold, *r.scale.law_train, "-device", r.device, "--no-progress"]
    if (run / "checkpoint_latest.pth").exists():
        train.append("--resume")
    stages = [(Stage(f"LAW train (fold {fold}, {fraction:.0%} labels)", train), run / "checkpoint_final.pth")]
    for strength in strengths:
        dataset_id = law_dataset_id(fraction, strength)
        name = f"KvasirSEGLAWadd{int(100 * fraction)}t{int(100 * strength)}"
        stages.append((Stage(f"LAW synthesize (fold {fold}, t0 {strength:g} -> {dataset_id})",
                             ["env", "OMP_NUM_THREADS=1", "nnunet-laworder", "law", "synthesize", "-d", str(REAL_ID),
                              "-o", str(dataset_id), "--name", name, "-f", fold, "--protocol", "add", "--strength",
                              str(strength), "--num", str(SYNTHETIC_PER_REAL * n_real), "--steps",
                              str(r.scale.sampling_steps), "--seed", str(LAW_SEED), "-device", r.device,
                              "--no-progress"]),
                       r.work / "nnUNet_raw" / f"Dataset{dataset_id:03d}_{name}" / "dataset.json"))
    return stages


def method_models(r: Reproduction, segmenter: str, fraction: float, strengths: List[float], probabilities:
                  List[float], copy_paste_strengths: List[float] = ()) -> Dict[str, Tuple[int, str, Dict[str, str]]]:
    """{method: (dataset id, trainer, extra environment)} of one segmenter at one budget; the LAW protocols of
    ``copy_paste_strengths`` also with copy-paste on top."""
    trainer = r.scale.trainer(SEGMENTERS[segmenter][1])
    methods = {"real": (REAL_ID, trainer, {}), "copy-paste": (REAL_ID, trainer + "_copypaste", {})}
    for strength in strengths:
        for p in probabilities:
            for copy_paste in (False, True) if strength in copy_paste_strengths else (False,):
                methods[protocol_name(strength, p, copy_paste)] = (
                    law_dataset_id(fraction, strength), trainer + "_synthmix" + ("_copypaste" if copy_paste else ""),
                    {"nnUNet_laworder_synthetic_p": str(p)})
    return methods


def plans_tag(method: str) -> str:
    """Plans identifiers keep models of one trainer apart that differ only in an environment variable (p)."""
    return f"p{protocol_probability(method):g}".replace(".", "") if method.startswith("law-") else ""


def paired_entry(reference: Dict[str, float], other: Dict[str, float]) -> dict:
    p = paired_difference(reference, other)
    return {k: p[k] for k in ("mean_diff", "ci95", "improved", "equal", "worse")}


def method_entries(models: Dict[str, List[dict]], training_cases: int) -> Dict[str, dict]:
    """Dice of each method's runs (``compare`` model entries, on one split) and its pairings: against real only,
    LAW's against copy-paste and against its composites without the generator."""
    reference = averaged_cases(models["real"])
    entries = {}
    for method, trained in models.items():
        cases = averaged_cases(trained)
        entry = entries[method] = {"dice": float(np.mean(list(cases.values()))),
                                   "runs": [m["foreground_mean"]["Dice"]["cases"]["mean"] for m in trained],
                                   "training_cases": training_cases}
        if method != "real":
            entry["paired"] = paired_entry(reference, cases)
        if method.startswith("law-") and "copy-paste" in models:  # what the generator adds over copy-paste
            entry["paired_vs_copy_paste"] = paired_entry(averaged_cases(models["copy-paste"]), cases)
        if method.startswith("law-"):  # and over its composites
            composites = protocol_name(0.0, protocol_probability(method), method.endswith(COPY_PASTE_SUFFIX))
            if method != composites and composites in models:
                entry["paired_vs_" + composites] = paired_entry(averaged_cases(models[composites]), cases)
    return entries


def paired_cells(p: dict) -> str:
    return (f"{100 * p['mean_diff']:+.1f} [{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] | "
            f"{p['improved']} / {p['equal']} / {p['worse']} |")


def main(argv=None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--segmenters", nargs="+", choices=LAW_SEGMENTERS, default=["ORDER"])
    extra.add_argument("--runs", nargs="+", type=int, default=None,
                       help="runs per segmenter, paired with --segmenters (default: the scale's for each)")
    extra.add_argument("--fractions", nargs="+", type=float, default=list(BUDGET_FOLDS), choices=list(BUDGET_FOLDS))
    extra.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.3], choices=list(STRENGTHS))
    extra.add_argument("--probabilities", nargs="+", type=float, default=[0.5])
    extra.add_argument("--jobs", type=int, default=1, help="trainings at a time (default 1)")
    extra.add_argument("--copy-paste-strengths", nargs="*", type=float, default=[],
                       help="t0 of --strengths whose LAW protocols also run with copy-paste on top "
                            "(methods law-...+copy-paste)")
    extra.add_argument("--methods", nargs="+", default=None,
                       help="only these methods (names as in the table, e.g. copy-paste law-t0.3-p0.5+copy-paste); "
                            "real only always runs; the table keeps earlier runs' rows")
    known, rest = extra.parse_known_args(argv)
    if not all(0 <= p <= 1 for p in known.probabilities):
        raise SystemExit(f"--probabilities must be in [0, 1], got {known.probabilities}")
    if not set(known.copy_paste_strengths) <= set(known.strengths):
        raise SystemExit(f"--copy-paste-strengths must be among --strengths {known.strengths}")
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], rest), "reproduce_law_low_data")
    runs = known.runs or [r.scale.runs] * len(known.segmenters)
    if len(runs) != len(known.segmenters):
        raise SystemExit("--runs pairs with --segmenters by position")
    # every model of the study: (segmenter, fraction, method, run) -> its training stage
    plan = {}
    for fraction in known.fractions:
        fold = BUDGET_FOLDS[fraction]
        for segmenter, n_runs in zip(known.segmenters, runs):
            configuration = SEGMENTERS[segmenter][0]
            for method, (dataset_id, trainer, env) in method_models(r, segmenter, fraction, known.strengths,
                                                                    known.probabilities,
                                                                    known.copy_paste_strengths).items():
                for run in range(n_runs):
                    plan[(segmenter, fraction, method, run)] = (dataset_id, configuration, trainer, fold,
                                                               plans_tag(method), env)
    offered = {key[2] for key in plan}
    if set(known.methods or ()) - offered:
        raise SystemExit(f"--methods: {sorted(set(known.methods) - offered)} not among {sorted(offered)}")
    if known.methods:  # real only always: every pairing's reference
        plan = {key: value for key, value in plan.items() if key[2] in known.methods + ["real"]}
    r.run(r.prepare_real())
    budgets = write_budget_folds(r)
    # the generator and datasets of the LAW methods left in the plan only
    used = {value[0] for key, value in plan.items() if key[2].startswith("law-")}
    law_pending = []
    for fraction in known.fractions:
        strengths = [t0 for t0 in known.strengths if law_dataset_id(fraction, t0) in used]
        if strengths:
            law_pending += law_stages(r, fraction, strengths, len(budgets[fraction][0]))

    def stage(key):
        dataset_id, configuration, trainer, fold, tag, env = plan[key]
        return r.train_stage(dataset_id, key[0], configuration, trainer, fold, key[3], tag=tag, env=env)

    # the generators train beside the real-only and copy-paste models; the LAW models need their datasets
    law_models = [k for k in plan if k[2].startswith("law-")]
    r.run_parallel(law_pending[:1] + [stage(k) for k in plan if k not in law_models] + law_pending[1:], known.jobs)
    for dataset_id in sorted({plan[k][0] for k in law_models}):
        r.run(r.preprocess_stages(dataset_id))
    r.run_parallel([stage(k) for k in law_models], known.jobs)

    splits = ("validation", "test") if r.scale.test_cases else ("validation",)
    if "test" in splits:  # every model predicts the real dataset's test split
        r.run([stage for (segmenter, _, _, run), (dataset_id, configuration, trainer, fold, tag, _) in plan.items()
               for stage in r.test_stages(dataset_id, segmenter, configuration, trainer, fold, run, tag)])
    rows: Dict[str, Dict[str, Dict[str, dict]]] = {}
    for segmenter in known.segmenters:
        for fraction in known.fractions:
            entry = rows.setdefault(segmenter, {}).setdefault(str(fraction), {})
            for split in splits:
                models = {}
                for (s, f, method, run), (dataset_id, configuration, trainer, fold, tag, _) in plan.items():
                    if (s, f) == (segmenter, fraction):
                        models.setdefault(method, []).append(
                            r.compare_one(dataset_id, configuration, trainer, fold, tag, run, split))
                for method, measured in method_entries(models, len(budgets[fraction][0])).items():
                    if split == "validation":
                        entry[method] = measured
                    else:
                        entry[method]["test"] = measured
    rows = merged_rows(r.results / f"{RESULTS_TAG}.json", r.scale.name, rows)
    r.write_table(RESULTS_TAG, "Where labels are scarce: real only vs copy-paste vs LAW added lesions", table(rows),
                  {"rows": rows, "budget_folds": {str(f): BUDGET_FOLDS[f] for f in BUDGET_FOLDS},
                   "protocols": {"synthetic_per_real": SYNTHETIC_PER_REAL, "law_seed": LAW_SEED,
                                 "chosen": "t0 and p fixed before any run (not on validation); copy-paste on top of "
                                           "LAW added after the first 25 % results, on the same validation cases"}})
    grid = law_grid(r, known.fractions[0], known.strengths)
    if grid:
        print(f"grid: {grid}")
    return 0


def merged_rows(file: Path, scale: str, rows: dict) -> dict:
    """This run's rows over those of the earlier runs in ``file`` (same scale): a budget or method run on its own
    (``--fractions 0.1``) adds to the table rather than replacing it."""
    earlier = read_json(file)["rows"] if file.exists() and read_json(file).get("scale") == scale else {}
    for segmenter, fractions in rows.items():
        for fraction, methods in fractions.items():
            earlier.setdefault(segmenter, {}).setdefault(fraction, {}).update(methods)
    return {s: {f: earlier[s][f] for f in sorted(earlier[s], key=float)} for s in earlier}


def table(rows: dict) -> List[str]:
    lines = ["| segmenter | labels | method | Dice (runs) | paired vs real, points [95% CI] | improved / equal / "
             "worse | vs copy-paste | test split: Dice, vs real |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for segmenter, fractions in rows.items():
        for fraction, methods in fractions.items():
            for method, entry in methods.items():
                test = entry.get("test")
                lines.append(
                    f"| {segmenter} | {float(fraction):.0%} ({entry['training_cases']}) | {method} | "
                    f"{100 * entry['dice']:.1f} ({', '.join(f'{100 * d:.1f}' for d in entry['runs'])}) | "
                    + (paired_cells(entry["paired"]) if "paired" in entry else "reference | |")
                    + (f" {paired_cells(entry['paired_vs_copy_paste']).split(' |')[0]} |"
                       if "paired_vs_copy_paste" in entry else " |")
                    + (f" {100 * test['dice']:.1f}" + (f", {paired_cells(test['paired']).split(' |')[0]}"
                                                      if "paired" in test else "") + " |" if test else " |"))
    return lines


def law_grid(r: Reproduction, fraction: float, strengths: List[float], n: int = 6) -> Optional[Path]:
    """A PNG of ``n`` synthetic cases: the host, the copy-paste composite (t0 = 0) and each harmonised version, with
    the added lesion's outline (the label of each case is the host's plus the added lesion)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from skimage.segmentation import find_boundaries

    folders = {s: next((r.work / "nnUNet_raw").glob(f"Dataset{law_dataset_id(fraction, s):03d}_*"), None)
               for s in strengths}
    if any(folder is None for folder in folders.values()):
        return None
    provenance = read_json(next(iter(folders.values())) / "provenance.json")["cases"]
    cases = sorted(provenance)[:n]
    real = r.work / "nnUNet_raw" / r.dataset(REAL_ID)
    columns = ["real host"] + [f"t0 = {s:g}" + (" (copy-paste)" if s == 0 else "") for s in strengths]
    figure, axes = plt.subplots(len(cases), len(columns), figsize=(2.2 * len(columns), 2.2 * len(cases)))
    for row, case in zip(np.atleast_2d(axes), cases):
        host = provenance[case]["source_case"]
        label = np.asarray(Image.open(next(iter(folders.values())) / "labelsTr" / f"{case}.png"))
        host_label = np.asarray(Image.open(real / "labelsTr" / f"{host}.png"))
        outline = find_boundaries(label > host_label)
        images = [np.asarray(Image.open(real / "imagesTr" / f"{host}_0000.png"))]
        images += [np.asarray(Image.open(folders[s] / "imagesTr" / f"{case}_0000.png")) for s in strengths]
        for ax, image, title in zip(row, images, columns):
            shown = image.copy()
            if title != "real host":
                shown[outline] = (0, 255, 0)
            ax.imshow(shown)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    figure.tight_layout()
    path = r.results / "law_low_data_grid.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
