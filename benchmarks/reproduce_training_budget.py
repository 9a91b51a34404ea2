"""Dice per training minute: ORDER, MK-UNet base, nnU-Net's default network and its residual-encoder preset M, each
trained for equal wall-clock budgets of this machine and scored on the test split (pairs no training or choice has
seen), beside their validation Dice.

    python benchmarks/reproduce_training_budget.py                  # cpu scale: 10, 20, 40, 80 minutes
    python benchmarks/reproduce_training_budget.py --budgets 40 --networks ORDER "nnU-Net default"

* **Minutes to epochs**: each network first trains the scale's schedule once (``_cpu``: 20 x 50 iterations, run 0:
  the same model as the ablation's equal-iterations one, reused where it exists); nnU-Net's ``Epoch time`` lines of
  its training log give its seconds per epoch on this machine (the median), data loading and the epoch's validation
  iterations included. A budget of B minutes is ``round(60 B / seconds per epoch)`` epochs (at least one) of the
  same schedule, through ``nnUNet_laworder_epochs``, under a plans copy ``<plans>_b<B>`` (run k: ``_rk``), so
  nnU-Net keeps each budget's models apart; the poly learning rate decays over the budget's epochs.
* **Minutes trained**: the sum of a run's epoch times, from its own log: what the budget bought, reported beside it
  (a busy machine shows up here). The final validation and the test predictions are not training time.
* **Runs**: the ``--replicate`` networks (default: ORDER and nnU-Net's default) train ``--runs`` times per budget
  (seed 12345 + k), the others once; a case's Dice is its mean over a network's runs, and the paired statistics
  (each network against nnU-Net's default, per budget) are over the test cases.

Writes ``WORK/results/training_budget.{md,json,png}``: ``rows[network][minutes]`` with ``test_dice`` (mean over
cases of the run-averaged case Dice), ``test_dice_per_run``, ``validation_dice``, ``epochs``, ``minutes_trained``
(per run), ``runs`` and ``paired`` (against nnU-Net's default on the test cases: ``mean_diff``, ``ci95``,
``improved``, ``equal``, ``worse``). A study too long for one sitting runs budget by budget: each invocation keeps
the rows of the budgets that earlier ones wrote there (and their run counts) and adds or replaces its own.
"""
import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Dict, List

import numpy as np

from nnunet_laworder.evaluation import plots
from nnunet_laworder.evaluation.paired import paired_difference
from reproduction import REAL_ID, RESENC_M, SEGMENTERS, Reproduction, averaged_cases, parse_args

NETWORKS = {"ORDER": "ORDER", "MK-UNet base": "MK-UNet", "nnU-Net default": "nnU-Net default", RESENC_M: RESENC_M}
REFERENCE = "nnU-Net default"
EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def epoch_seconds(model_folder: Path, fold: int) -> List[float]:
    """nnU-Net's ``Epoch time`` of every epoch in a fold's training logs (a resumed run has several logs)."""
    logs = sorted((model_folder / f"fold_{fold}").glob("training_log_*.txt"))
    return [float(m.group(1)) for log in logs for m in EPOCH_TIME.finditer(log.read_text())]


def parse(argv=None):
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--budgets", nargs="+", type=float, default=[10, 20, 40, 80], metavar="MINUTES",
                       help="training budgets in minutes of this machine (default: 10 20 40 80)")
    extra.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS), metavar="NAME",
                       help=f"networks (default: all of {', '.join(NETWORKS)}; {REFERENCE} is always among them)")
    extra.add_argument("--replicate", nargs="*", choices=list(NETWORKS), default=["ORDER", REFERENCE],
                       metavar="NAME", help="networks trained --runs times per budget (default: ORDER and "
                                            f"{REFERENCE}); the others once")
    extra.add_argument("--runs", type=int, default=None, help="runs of the --replicate networks (default: the "
                                                              "scale's, 3 at cpu scale)")
    known, rest = extra.parse_known_args(argv)
    return parse_args(__doc__.split("\n")[0], rest), known


def budget_key(minutes: float) -> str:
    """A budget's key in ``rows[network]`` (JSON keys are strings): 10.0 -> "10"."""
    return f"{minutes:g}"


def budget_tag(minutes: float) -> str:
    return f"b{budget_key(minutes)}".replace(".", "p")


class BudgetStudy:
    """The trainings of one network at one budget: their stages, and what they measured."""

    def __init__(self, r: Reproduction, name: str, seconds_per_epoch: float, minutes: float, runs: int):
        self.r, self.name, self.minutes, self.runs = r, name, minutes, runs
        self.configuration, base = SEGMENTERS[NETWORKS[name]]
        self.trainer = r.scale.trainer(base)
        self.epochs = max(1, round(60 * minutes / seconds_per_epoch))
        self.tag = budget_tag(minutes)

    def stages(self, run: int):
        env = {"nnUNet_laworder_epochs": str(self.epochs)}
        fold = self.r.scale.folds[0]
        return [self.r.train_stage(REAL_ID, NETWORKS[self.name], self.configuration, self.trainer, fold, run,
                                   self.tag, env),
                *self.r.test_stages(REAL_ID, NETWORKS[self.name], self.configuration, self.trainer, fold, run,
                                    self.tag)]

    def model(self, run: int):
        """(configuration, trainer, plans) of run ``run``, as ``compare`` takes them."""
        plans, _ = self.r.model(REAL_ID, NETWORKS[self.name], self.configuration, self.trainer, run, self.tag)
        return self.configuration, self.trainer, plans

    def minutes_trained(self, run: int) -> float:
        _, folder = self.r.model(REAL_ID, NETWORKS[self.name], self.configuration, self.trainer, run, self.tag)
        return sum(epoch_seconds(folder, self.r.scale.folds[0])) / 60


def calibrate(r: Reproduction, names: List[str]) -> Dict[str, float]:
    """Seconds per epoch of each network's schedule on this machine, from its run-0 training at the scale's
    schedule (trained here unless it exists)."""
    fold = r.scale.folds[0]
    r.run([r.train_stage(REAL_ID, NETWORKS[n], SEGMENTERS[NETWORKS[n]][0], r.scale.trainer(SEGMENTERS[NETWORKS[n]][1]),
                         fold) for n in names])
    seconds = {}
    for n in names:
        configuration, base = SEGMENTERS[NETWORKS[n]]
        _, folder = r.model(REAL_ID, NETWORKS[n], configuration, r.scale.trainer(base))
        # the first epoch also builds the network and warms up its allocator
        times = epoch_seconds(folder, fold)[1:]
        if not times:
            raise SystemExit(f"{folder}/fold_{fold}: no 'Epoch time' in its training log; retrain it")
        seconds[n] = statistics.median(times)
    return seconds


def earlier_rows(path: Path, budgets: List[float]) -> Dict[str, Dict[str, dict]]:
    """The rows of ``training_budget.json`` for the budgets this invocation does not train."""
    if not path.is_file():
        return {}
    ours = {budget_key(m) for m in budgets}
    return {name: {minutes: row for minutes, row in by_budget.items() if minutes not in ours}
            for name, by_budget in json.loads(path.read_text())["rows"].items()}


def plot(rows: Dict[str, Dict[str, dict]], path: Path) -> None:
    """Test Dice against minutes trained: one line per network through its budgets' means, its runs as points."""
    fig, (ax,) = plots.panels(1, "Dice per training minute (test split)", width=7.0)
    for name, by_budget in rows.items():
        budgets = sorted(by_budget.values(), key=lambda row: row["budget_minutes"])
        line, = ax.plot([np.mean(row["minutes_trained"]) for row in budgets],
                        [100 * row["test_dice"] for row in budgets], "-o", label=name)
        for row in budgets:
            ax.plot(row["minutes_trained"], [100 * d for d in row["test_dice_per_run"]], ".", alpha=0.5,
                    color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("minutes of training on this machine (log scale)")
    ax.set_ylabel("Dice on the test split (points)")
    ax.legend(fontsize=8)
    plots.save_figure(fig, path)
    plots.close(fig)


def table(rows: Dict[str, Dict[str, dict]]) -> List[str]:
    lines = ["| network | budget (min) | minutes trained | epochs | runs | test Dice | per run | validation Dice | "
             f"vs {REFERENCE}, test, points [95% CI] | improved / equal / worse |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, by_budget in rows.items():
        for minutes, row in by_budget.items():
            p = row["paired"]
            versus = (f"{100 * p['mean_diff']:+.1f} [{100 * p['ci95'][0]:+.1f}, {100 * p['ci95'][1]:+.1f}] | "
                      f"{p['improved']} / {p['equal']} / {p['worse']}" if p else " | ")
            lines.append(f"| {name} | {minutes} | {np.mean(row['minutes_trained']):.1f} | {row['epochs']} | "
                         f"{row['runs']} | {100 * row['test_dice']:.1f} | "
                         f"{', '.join(f'{100 * d:.1f}' for d in row['test_dice_per_run'])} | "
                         f"{100 * row['validation_dice']:.1f} | {versus} |")
    return lines + [""]


def main(argv=None) -> int:
    args, extra = parse(argv)
    r = Reproduction.from_args(args, "reproduce_training_budget")
    if not r.scale.test_cases:
        raise SystemExit(f"scale {r.scale.name} has no test split; use --scale cpu or smoke")
    n_runs = extra.runs or r.scale.runs
    names = [n for n in NETWORKS if n in extra.networks or n == REFERENCE]
    r.run(r.prepare_real() + r.preset_stages([NETWORKS[n] for n in names]))
    r.equal_batch_size([NETWORKS[n] for n in names])
    seconds = calibrate(r, names)
    studies = {(n, m): BudgetStudy(r, n, seconds[n], m, n_runs if n in extra.replicate else 1)
               for m in extra.budgets for n in names}
    rows = {n: {} for n in names}
    for name, by_budget in earlier_rows(r.results / "training_budget.json", extra.budgets).items():
        rows.setdefault(name, {}).update(by_budget)
    for minutes in extra.budgets:  # the shortest budget first: a complete curve early, longer budgets after
        trained = [s for (n, m), s in studies.items() if m == minutes]
        cases = {}
        for run in range(max(s.runs for s in trained)):
            in_run = [s for s in trained if run < s.runs]
            r.run([stage for s in in_run for stage in s.stages(run)])
            for split in ("validation", "test"):
                entries = r.compare_models(f"training_budget_{budget_tag(minutes)}_r{run}",
                                           [s.model(run) for s in in_run], split)
                for s, entry in zip(in_run, entries):
                    cases.setdefault((s.name, split), []).append(entry)
        reference = averaged_cases(cases[(REFERENCE, "test")])
        for s in trained:
            test = averaged_cases(cases[(s.name, "test")])
            rows[s.name][budget_key(minutes)] = {
                "budget_minutes": minutes, "epochs": s.epochs, "seconds_per_epoch": seconds[s.name],
                "runs": s.runs, "minutes_trained": [s.minutes_trained(run) for run in range(s.runs)],
                "test_dice": float(np.mean(list(test.values()))),
                "test_dice_per_run": [m["foreground_mean"]["Dice"]["cases"]["mean"]
                                      for m in cases[(s.name, "test")]],
                "validation_dice": float(np.mean(list(averaged_cases(cases[(s.name, "validation")]).values()))),
                "paired": None if s.name == REFERENCE else paired_difference(reference, test)}
        plot(rows, r.results / "training_budget.png")  # after every budget: the curve so far
    rows = {n: dict(sorted(b.items(), key=lambda item: float(item[0]))) for n, b in rows.items()}  # table order
    lines = [f"Budgets in minutes of this machine's training (epoch time of each network's `{r.scale.trainer_suffix}`"
             f" schedule: " + ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items()) + "); test Dice on "
             f"{r.scale.test_cases} held-out pairs, a case's Dice the mean over a network's runs; paired differences "
             f"against {REFERENCE} over the test cases.", "", *table(rows), "![budget](training_budget.png)"]
    r.write_table("training_budget", "Dice per training minute: ORDER, MK-UNet base, nnU-Net default, ResEnc M",
                  lines, {"rows": rows, "seconds_per_epoch": seconds,
                          "budgets": sorted({row["budget_minutes"] for b in rows.values() for row in b.values()}),
                          "replicated": extra.replicate})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
