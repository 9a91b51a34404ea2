"""Claim: adding LAW synthetic data raises downstream segmentation Dice (paper: 78.3 -> 83.2). Trains ORDER and
nnU-Net's default network on the real dataset and on real + LAW synthetic (the dataset ``law synthesize`` writes:
the same real cases in the same folds, synthetic cases on the training side only), and compares nnU-Net's
validation Dice case for case on fold 0, the fold whose validation cases the generator never saw.

    python benchmarks/reproduce_downstream.py                     # reduced scale, CPU, under an hour
    python benchmarks/reproduce_downstream.py --scale paper       # full scale, GPU

Reuses what the other reproduction scripts left in the same work folder. Writes
``WORK/results/downstream.{md,json}``.
"""
from reproduction import LAW_IDS, REAL_ID, ROW_HEADER, Reproduction, downstream_row, parse_args, row_line

PAPER = {"real": 78.3, "real + LAW": 83.2}
ROWS = ["ORDER", "nnU-Net default"]


def main(argv=None) -> int:
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], argv), "reproduce_downstream")
    r.scale = type(r.scale)(**{**r.scale.__dict__, "folds": r.scale.folds[:1]})  # the clean fold only
    synthetic = LAW_IDS["law"]
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, ROWS) + r.law_stages("law"))
    r.run(r.preprocess_stages(synthetic))  # the real dataset's plans, transferred by law synthesize
    r.run(r.train_stages(synthetic, ROWS))
    real, mixed = r.compare(REAL_ID, ROWS, "downstream_real"), r.compare(synthetic, ROWS, "downstream_law")
    rows = {name: downstream_row(a, b) for name, a, b in zip(ROWS, real["models"], mixed["models"])}
    lines = ROW_HEADER + [row_line(name, row) for name, row in rows.items()]
    lines += ["", f"Paper (its segmenter, its data scale): {PAPER['real']} -> {PAPER['real + LAW']}.", "",
              "![real only](downstream_real_compare.png)", "", "![real + LAW](downstream_law_compare.png)"]
    r.write_table("downstream", "Downstream: real only vs real + LAW synthetic", lines, {"rows": rows, "paper": PAPER})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
