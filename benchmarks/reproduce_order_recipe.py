"""A recipe for small networks: which change to ORDER's training recipe helps a 41K-parameter network learn more
in a short training? Each variant changes one knob (``nnunet_laworder/training/recipe_trainers.py``) and trains on
the same fold, schedule and seeds as ORDER; each is compared case for case with ORDER on the fold's validation
cases (where the choice is made: a change is kept only if its interval lies above 0), then on the test split
(pairs no training or choice has seen: the confirmation).

    python benchmarks/reproduce_order_recipe.py                      # cpu scale: every variant, one run each
    python benchmarks/reproduce_order_recipe.py --variants lr1e2 --runs 3

* **Equal iterations, about equal time**: no variant changes the network or the batch; without augmentation
  or deep supervision an epoch costs somewhat less, which the comparison does not hand back as iterations.
* **Runs**: ORDER trains ``--reference-runs`` times (default: 3 at cpu scale, the ablation's runs, reused where
  they exist), each variant ``--runs`` times (seed 12345 + k); a case's Dice is its mean over a model's runs.

Writes ``WORK/results/order_recipe.{md,json,png}``: ``rows[name]`` (validation and test Dice, per run),
``paired["<variant> vs ORDER"]`` (validation) and ``test_paired`` (test), ``kept``: the variants whose validation
interval lies above 0.
"""
import argparse
from typing import Dict, List

import numpy as np

from nnunet_laworder.evaluation import plots
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.nnunet_folders import SPLITS
from reproduction import REAL_ID, SEGMENTERS, Reproduction, averaged_cases, parse_args

REFERENCE = "ORDER"
# name in the tables: the trainer's suffix after its schedule (nnUNetTrainerORDER_cpu_lr1e2)
VARIANTS = {"lr1e2": "AdamW lr 1e-2 (not 3e-3)", "noDA": "no training augmentation",
            "noDS": "no deep supervision"}


def parse(argv=None):
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                       help=f"recipe changes to train (default: all of {', '.join(VARIANTS)})")
    extra.add_argument("--runs", type=int, default=1, help="runs of each variant (default 1)")
    extra.add_argument("--reference-runs", type=int, default=None,
                       help="runs of ORDER's own recipe (default: the scale's, 3 at cpu scale)")
    known, rest = extra.parse_known_args(argv)
    return parse_args(__doc__.split("\n")[0], rest), known


def summarise(cases: Dict[str, List[dict]]) -> dict:
    """Rows and paired differences against ORDER of one split, from each model's compare entries per run."""
    averaged = {name: averaged_cases(entries) for name, entries in cases.items()}
    rows = {name: {"dice": float(np.mean(list(averaged[name].values()))),
                   "dice_per_run": [m["foreground_mean"]["Dice"]["cases"]["mean"] for m in entries]}
            for name, entries in cases.items()}
    paired = {f"{name} vs {REFERENCE}": paired_difference(averaged[REFERENCE], averaged[name])
              for name in cases if name != REFERENCE}
    return {"rows": rows, "paired": paired}


def main(argv=None) -> int:
    args, extra = parse(argv)
    r = Reproduction.from_args(args, "reproduce_order_recipe")
    configuration, base = SEGMENTERS[REFERENCE]
    trainers = {REFERENCE: r.scale.trainer(base), **{VARIANTS[v]: f"{r.scale.trainer(base)}_{v}"
                                                     for v in extra.variants}}
    runs = {name: (extra.reference_runs or r.scale.runs) if name == REFERENCE else extra.runs
            for name in trainers}
    r.run(r.prepare_real())
    splits = SPLITS if r.scale.test_cases else ("validation",)
    cases: Dict[str, Dict[str, List[dict]]] = {split: {} for split in splits}
    for run in range(max(runs.values())):
        names = [name for name in trainers if run < runs[name]]
        r.run([r.train_stage(REAL_ID, REFERENCE, configuration, trainers[n], fold, run)
               for n in names for fold in r.scale.folds])
        if "test" in splits:
            r.run([stage for n in names for fold in r.scale.folds
                   for stage in r.test_stages(REAL_ID, REFERENCE, configuration, trainers[n], fold, run)])
        models = [(configuration, trainers[n], r.replicate_plans(REAL_ID, run)) for n in names]
        for split in splits:
            for name, entry in zip(names, r.compare_models(f"order_recipe_r{run}", models, split, paired=0)):
                cases[split].setdefault(name, []).append(entry)
    results = {split: summarise(cases[split]) for split in splits}
    validation = results["validation"]
    kept = [name for name in trainers if name != REFERENCE
            and validation["paired"][f"{name} vs {REFERENCE}"]["ci95"][0] > 0]

    lines = [f"ORDER (`{trainers[REFERENCE]}`) {runs[REFERENCE]} run(s), each variant {extra.runs}; one change each, "
             f"same schedule and seeds (12345 + run); a case's Dice is its mean over a model's runs. Validation: "
             f"fold {r.scale.folds[0]}'s cases (the choice); test: the test split (the confirmation).", "",
             "| recipe | trainer | validation Dice | per run | test Dice | per run |", "|---|---|---:|---|---:|---|"]
    for name, trainer in trainers.items():
        cells = []
        for split in splits:
            row = results[split]["rows"][name]
            cells += [f"{100 * row['dice']:.1f}", ", ".join(f"{100 * d:.1f}" for d in row["dice_per_run"])]
        lines.append(f"| {name} | `{trainer}` | " + " | ".join(cells) + " |")
    lines += ["", "| change vs ORDER | split | mean difference (points) [95% CI] | improved / equal / worse |",
              "|---|---|---:|---:|"]
    for split in splits:
        for pair, s in results[split]["paired"].items():
            lines.append(f"| {pair} | {split} | {100 * s['mean_diff']:+.1f} [{100 * s['ci95'][0]:+.1f}, "
                         f"{100 * s['ci95'][1]:+.1f}] | {s['improved']} / {s['equal']} / {s['worse']} of "
                         f"{s['cases']} |")
    lines += ["", f"Kept (validation interval above 0): {', '.join(kept) or 'none'}.", "",
              "![recipe](order_recipe.png)"]
    fig, axes = plots.panels(len(splits), "ORDER recipe changes: paired per-case Dice differences vs ORDER (points)")
    for ax, split in zip(axes, splits):
        plots.paired_differences(ax, results[split]["paired"], f"{split}: mean difference, 95% bootstrap interval")
    plots.save_figure(fig, r.results / "order_recipe.png")
    plots.close(fig)
    r.write_table("order_recipe", "A recipe for small networks: one change at a time to ORDER's training", lines,
                  {"rows": {name: {split: results[split]["rows"][name] for split in splits} for name in trainers},
                   "paired": validation["paired"], "test_paired": results["test"]["paired"] if "test" in splits
                   else None, "kept": kept, "trainers": trainers, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
