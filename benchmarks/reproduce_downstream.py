"""Claim: adding LAW synthetic data raises downstream segmentation Dice (paper: 78.3 -> 83.2). Trains ORDER and
nnU-Net's default network on the real dataset and on real + LAW synthetic (the dataset ``law synthesize`` writes:
the same real cases in the same folds, synthetic cases on the training side only, the real dataset's plans), and
compares nnU-Net's validation Dice case for case on fold 0, the fold whose validation cases the generator never saw.

    python benchmarks/reproduce_downstream.py                     # reduced scale, CPU, about an hour
    python benchmarks/reproduce_downstream.py --scale paper       # full scale, GPU

The synthetic cases: the law generator's, through the quality gate, as many as the scale's ratio of the fold's real
training cases (cpu: a quarter, what the ratio study found to help; paper: one per real case). ``--replicate``
segmenters (default ORDER) train in each of the scale's runs (cpu: 3, seeds 12345 + run) on both datasets, the
others once; a case's Dice is its mean over the runs. Reuses what the other reproduction scripts left in the same
work folder. Writes ``WORK/results/downstream.{md,json}``.
"""
import argparse

from reproduction import REAL_ID, ROW_HEADER, Reproduction, parse_args, row_line

PAPER = {"real": 78.3, "real + LAW": 83.2}
ROWS = ["ORDER", "nnU-Net default"]


def main(argv=None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--replicate", nargs="*", choices=ROWS, default=["ORDER"],
                       help="segmenters trained in every run of the scale (default: ORDER); the others once")
    known, rest = extra.parse_known_args(argv)
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], rest), "reproduce_downstream")
    r.scale = type(r.scale)(**{**r.scale.__dict__, "folds": r.scale.folds[:1]})  # the clean fold only
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, ["ORDER"]) + r.law_stages("law")[:1])  # the gate's judge, the generator
    rows, kept = r.real_vs_law(r.scale.downstream_ratio, ROWS, known.replicate)
    runs = {name: len(row["runs"]["real"]) for name, row in rows.items()}
    real_training_cases = next(iter(rows.values()))['real_training_cases']
    lines = [f"{kept} synthetic cases (law generator, quality gate) beside {real_training_cases}"
             f" real training cases; runs per segmenter: {', '.join(f'{n} {k}' for n, k in runs.items())} (a case's "
             f"Dice is its mean over the runs).", ""]
    lines += ROW_HEADER + [row_line(name, row) for name, row in rows.items()]
    lines += ["", f"Paper (its segmenter, its data scale): {PAPER['real']} -> {PAPER['real + LAW']}."]
    r.write_table("downstream", "Downstream: real only vs real + LAW synthetic", lines, {"rows": rows, "paper": PAPER})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
