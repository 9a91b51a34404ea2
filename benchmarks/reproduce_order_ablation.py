"""Ablation: does ORDER's selective skip attention earn its place? ORDER, ORDER without attention (its backbone,
otherwise identical), ORDER with the paper's confidence gate (off by default since it measured 6.5 points lower
here), ORDER with wider attention (4x the tokens, twice the
width: the paper's compute budget), MK-UNet base, nnU-Net's default network and nnU-Net's residual-encoder preset M
(its own plans, nnUNetResEncUNetMPlans; below ``--scale paper`` at the default plans' batch size) on the same real
folds, compared case for case (mean paired Dice difference, 95% bootstrap interval, cases improved).

    python benchmarks/reproduce_order_ablation.py                 # cpu scale, fold 0 (see below)
    python benchmarks/reproduce_order_ablation.py --runs 1 --equal-time
    python benchmarks/reproduce_order_ablation.py --scale paper   # five folds, 1 run, GPU

* **Equal iterations**: every network gets the scale's schedule (``_cpu``: 20 x 50 iterations).
* **Equal training time**: every network gets about the iterations nnU-Net's default gets in the same wall clock:
  ``nnunet-laworder benchmark`` measures each training step side by side, and a network whose step is k times
  cheaper trains with the largest schedule variant of at most k times the iterations (``_cpu2x``, ``_cpu4x``); a
  network whose step is about 2x dearer (ResEnc M) trains with half of them (``nnUNetTrainer_cpuhalf``).
* **Runs**: one run of one fold is noisy (its initial weights, batches and augmentation: two runs once differed
  by 7 Dice points). The ``--replicate`` networks (default: ORDER, its backbone and the gated variant) train
  ``--runs`` times at equal iterations, the others once (a 2-core CPU has no time for more). Run k trains with
  seed 12345 + k (``nnUNet_laworder_seed``) under a copy of the plans (``nnUNetPlans_rK``, same preprocessed
  data), so nnU-Net keeps each run's results apart; a case's Dice is the mean over a network's runs, and the
  paired statistics are over cases.

* **Validation and test**: Dice on the fold's validation cases (where ORDER's variant and the schedules were
  chosen) and on the scale's test split (``imagesTs``: pairs no training or choice has seen), each model predicting
  it with ``nnUNetv2_predict`` and scored with ``nnUNetv2_evaluate_folder``.

Writes ``WORK/results/order_ablation.{md,json}`` (``paired``: ``{"A vs B": {"mean_diff", "ci95", "cases", ...}}``,
``rows``: Dice per network, Dice as fractions, on validation; ``test``: the same on the test split; ``by_budget``:
both per budget) and ``order_ablation.png``.
"""
import argparse
import json
from typing import Dict, List, Tuple

import numpy as np

from nnunet_laworder.evaluation import plots
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.nnunet_folders import SPLITS
from reproduction import (CONFIGURATION, REAL_ID, RESENC_M, Reproduction, Stage, averaged_cases, parse_args,
                          plans_of)

# name: (configuration, trainer without its schedule suffix)
NETWORKS = {
    "ORDER": ("2d_order", "nnUNetTrainerORDER"),
    "ORDER without attention": ("2d_order_no-attention", "nnUNetTrainerORDER"),
    "ORDER with confidence gate": ("2d_order_confidence-gate", "nnUNetTrainerORDER"),
    "ORDER wide attention": ("2d_order_wide-attention", "nnUNetTrainerORDER"),
    "MK-UNet base": ("2d_mkunet", "nnUNetTrainerMKUNet"),
    "nnU-Net default": ("2d", "nnUNetTrainer"),
    RESENC_M: ("2d", "nnUNetTrainer"),  # with nnUNetResEncUNetMPlans (reproduction.PRESETS)
}
REFERENCE = "nnU-Net default"
PAIRS = [("ORDER", "ORDER without attention"), ("ORDER with confidence gate", "ORDER"),
         ("ORDER wide attention", "ORDER without attention"), ("ORDER wide attention", "ORDER"),
         ("ORDER", "MK-UNet base"), ("ORDER", "nnU-Net default"), ("ORDER", RESENC_M), (RESENC_M, "nnU-Net default")]
TIME_MULTIPLIERS = {0.5: "half", 1: "", 2: "2x", 4: "4x"}  # the _cpu schedule variants that exist
PAPER = {"ORDER": 81.3, "MK-UNet base": 75.3}


def parse(argv=None):
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--runs", type=int, default=None, help="runs of the --replicate networks (default: 3 at cpu "
                                                               "scale, else 1); the others run once")
    extra.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS), metavar="NAME",
                       help=f"networks to train (default: all of {', '.join(NETWORKS)})")
    extra.add_argument("--replicate", nargs="+", choices=list(NETWORKS),
                       default=["ORDER", "ORDER without attention", "ORDER with confidence gate"], metavar="NAME",
                       help="networks trained --runs times (default: ORDER, its backbone and the gated variant)")
    extra.add_argument("--equal-time", nargs="*", choices=list(NETWORKS), default=["ORDER"], metavar="NAME",
                       help="networks also trained for nnU-Net's default's wall clock (default: ORDER; none: "
                            "only equal iterations)")
    known, rest = extra.parse_known_args(argv)
    return parse_args(__doc__.split("\n")[0], rest), known


def schedule_suffix(r: Reproduction, multiplier: int) -> str:
    if r.scale.name != "cpu" or multiplier == 1:
        return r.scale.trainer_suffix
    return r.scale.trainer_suffix + TIME_MULTIPLIERS[multiplier]


def train_stages(r: Reproduction, networks: Dict[str, int], run: int):
    """nnUNetv2_train of each network (name: iteration multiplier) and fold in run ``run``."""
    return [r.train_stage(REAL_ID, name, NETWORKS[name][0], NETWORKS[name][1] + schedule_suffix(r, multiplier), fold,
                          run) for name, multiplier in networks.items() for fold in r.scale.folds]


def test_stages(r: Reproduction, networks: Dict[str, int], run: int):
    """Prediction and evaluation of the test split by each network's models of run ``run``."""
    return [stage for name, multiplier in networks.items() for fold in r.scale.folds
            for stage in r.test_stages(REAL_ID, name, NETWORKS[name][0],
                                       NETWORKS[name][1] + schedule_suffix(r, multiplier), fold, run)]


def compare_run(r: Reproduction, networks: Dict[str, int], run: int, tag: str, split: str) -> Dict[str, dict]:
    """``nnunet-laworder compare --paired`` (reference: ORDER) of run ``run`` on a split; ``{name: its model
    entry}``."""
    names = list(networks)
    models = [(NETWORKS[n][0], NETWORKS[n][1] + schedule_suffix(r, networks[n]),
               r.replicate_plans(REAL_ID, run, base=plans_of(n))) for n in names]
    return dict(zip(names, r.compare_models(tag, models, split, paired=names.index("ORDER"))))


def time_multipliers(r: Reproduction, names: List[str]) -> Tuple[Dict[str, int], Dict[str, float]]:
    """Iteration multiplier per network for the equal-time budget, from one side-by-side benchmark."""
    out = r.results / "order_ablation_benchmark.json"
    r.run([(Stage("benchmark training steps", [
        "nnunet-laworder", "benchmark", "-d", str(REAL_ID), "-c", *[NETWORKS[n][0] for n in names],
        "-tr", *[NETWORKS[n][1] + r.scale.trainer_suffix for n in names], "-p", *[plans_of(n) for n in names],
        "-device", r.device, "--no-memory",
        "--repeats", "10", "--json", str(out)]), out)])
    rows = {row["identifier"]: row for row in json.loads(out.read_text())["rows"]}
    step = {n: rows[f"{NETWORKS[n][1] + r.scale.trainer_suffix}__{plans_of(n)}__{NETWORKS[n][0]}"]["train_step_ms"]
            for n in names}
    ratios = {n: step[REFERENCE] / step[n] for n in names}
    # the largest variant that is not longer than equal time; the shortest for a network dearer than all of them
    return {n: max((m for m in TIME_MULTIPLIERS if m <= ratios[n]), default=min(TIME_MULTIPLIERS))
            for n in names}, ratios


def summarise(runs: List[Dict[str, dict]], multipliers: Dict[str, int]) -> dict:
    names = [n for n in multipliers if any(n in run for run in runs)]
    cases = {name: averaged_cases([run[name] for run in runs if name in run]) for name in names}
    rows = {}
    for name in names:
        trained = [run[name] for run in runs if name in run]
        rows[name] = {"dice": float(np.mean(list(cases[name].values()))),
                      "dice_per_run": [m["foreground_mean"]["Dice"]["cases"]["mean"] for m in trained],
                      "iteration_multiplier": multipliers[name], "parameters": trained[0]["parameters"],
                      "gmacs": trained[0]["gmacs"]}
    paired = {f"{a} vs {b}": paired_difference(cases[b], cases[a]) for a, b in PAIRS if a in cases and b in cases}
    return {"rows": rows, "paired": paired}


def table(title: str, result: dict) -> List[str]:
    lines = [f"**{title}**", "", "| network | Dice (mean over runs) | Dice per run | iterations | parameters | GMACs |",
             "|---|---:|---|---:|---:|---:|"]
    for name, row in result["rows"].items():
        per_run = ", ".join(f"{100 * d:.1f}" for d in row["dice_per_run"])
        lines.append(f"| {name} | {100 * row['dice']:.1f} | {per_run} | x{row['iteration_multiplier']} | "
                     f"{row['parameters']:,} | {row['gmacs']:.3f} |")
    lines += ["", "| pair | mean difference (points) | 95% interval | cases improved / equal / worse |",
              "|---|---:|---:|---:|"]
    for pair, s in result["paired"].items():
        lines.append(f"| {pair} | {100 * s['mean_diff']:+.2f} | [{100 * s['ci95'][0]:+.2f}, {100 * s['ci95'][1]:+.2f}]"
                     f" | {s['improved']} / {s['equal']} / {s['worse']} of {s['cases']} |")
    return lines + [""]


def plot(results: Dict[str, dict], path) -> None:
    """Paired differences with their intervals, one panel per budget."""
    panels = [(f"{budget}, {split}", result if split == "validation" else result["test"])
              for budget, result in results.items() for split in SPLITS if split == "validation" or result["test"]]
    fig, axes = plots.panels(len(panels), "ORDER ablation: paired per-case Dice differences (points)")
    for ax, (budget, result) in zip(axes, panels):
        plots.paired_differences(ax, result["paired"], f"{budget}: mean difference, 95% bootstrap interval")
    plots.save_figure(fig, path)
    plots.close(fig)


def main(argv=None) -> int:
    args, extra = parse(argv)
    r = Reproduction.from_args(args, "reproduce_order_ablation")
    n_runs = extra.runs or (3 if r.scale.name == "cpu" else 1)
    names = [n for n in NETWORKS if n in extra.networks or n in (REFERENCE, "ORDER")]
    r.run(r.prepare_real() + r.preset_stages(names))
    planned_batch_sizes = r.equal_batch_size(names)
    r.run([(Stage(f"ORDER {variant} configuration", ["nnunet-laworder", "plans", "-d", str(REAL_ID), "-c",
                                                     CONFIGURATION, "--arch", "order", "--variant", variant]), None)
           for variant in ("no-attention", "confidence-gate", "wide-attention")])
    budgets = {"equal iterations": {name: 1 for name in names}}
    ratios = None
    if extra.equal_time and r.scale.name != "paper":  # paper scale: nnU-Net's full schedule for every network
        multipliers, ratios = time_multipliers(r, names)
        budgets["equal training time"] = {n: multipliers[n] for n in names if n in extra.equal_time or n == REFERENCE}
    splits = SPLITS if r.scale.test_cases else ("validation",)  # the paper scale has no test split here
    results = {}
    for budget, networks in budgets.items():
        runs: Dict[str, List[Dict[str, dict]]] = {split: [] for split in splits}
        for run in range(n_runs if budget == "equal iterations" else 1):
            # every network in the first run, the --replicate ones in every run
            trained = {n: m for n, m in networks.items() if run == 0 or n in extra.replicate}
            if run > 0 and set(trained) <= {REFERENCE}:
                break
            # a network whose multiplier is 1 has been trained for equal iterations already: its stage is skipped
            r.run(train_stages(r, trained, run) + (test_stages(r, trained, run) if "test" in splits else []))
            for split in splits:
                runs[split].append(compare_run(r, trained, run, f"order_ablation_{budget.split()[1]}_r{run}", split))
        # validation: the cases the choices (default variant, schedules) were made on; test: cases nothing chose on
        results[budget] = {**summarise(runs["validation"], networks),
                           "test": summarise(runs["test"], networks) if "test" in runs else None}
    replicated = [n for n in extra.replicate if n in names]
    lines = [f"{n_runs} run(s) of {', '.join(replicated) or 'none'}, one of the others; the Dice of a case is its mean "
             f"over a network's runs; differences are A - B over the same cases: the validation cases of the fold "
             f"(where ORDER's variant and the schedules were chosen) and the test split (imagesTs, "
             f"{r.scale.test_cases} pairs that no training or choice has seen).", ""]
    for budget, result in results.items():
        lines += table(f"{budget}, validation", result)
        lines += table(f"{budget}, test split", result["test"]) if result["test"] else []
    if ratios:
        lines += ["Training step of nnU-Net's default / of each network (benchmark, side by side): " +
                  ", ".join(f"{n} {v:.1f}x" for n, v in ratios.items()), ""]
    lines += [f"Paper (full Kvasir-SEG, GPU): ORDER {PAPER['ORDER']}, MK-UNet {PAPER['MK-UNet base']}.", "",
              "![ablation](order_ablation.png)"]
    plot(results, r.results / "order_ablation.png")
    main_result = results["equal iterations"]
    r.write_table("order_ablation", "ORDER ablation: attention, gate, backbone, MK-UNet base, nnU-Net default and "
                  "ResEnc M", lines, {"paired": main_result["paired"], "rows": main_result["rows"],
                                      "test": main_result["test"], "runs": n_runs,
                                      "by_budget": results, "step_ratios": ratios, "paper": PAPER,
                                      "planned_batch_sizes": planned_batch_sizes})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
