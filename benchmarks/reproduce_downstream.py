"""Claim: adding LAW synthetic data raises downstream segmentation Dice (paper: 78.3 -> 83.2). Trains ORDER and
nnU-Net's default network on the real dataset and on real + LAW synthetic (the dataset ``law synthesize`` writes:
the same real cases in the same folds, synthetic cases on the training side only), and compares nnU-Net's
validation Dice case for case on fold 0, the fold whose validation cases the generator never saw.

    python benchmarks/reproduce_downstream.py                     # reduced scale, CPU, under an hour
    python benchmarks/reproduce_downstream.py --scale paper       # full scale, GPU

Reuses what the other reproduction scripts left in the same work folder. Writes
``WORK/results/downstream.{md,json}``.
"""
from reproduction import LAW_IDS, REAL_ID, Reproduction, parse_args

PAPER = {"real": 78.3, "real + LAW": 83.2}
ROWS = ["ORDER", "nnU-Net default"]
POLYP = "polyp"  # the label name the Kvasir-SEG converter writes


def main(argv=None) -> int:
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], argv), "reproduce_downstream")
    r.scale = type(r.scale)(**{**r.scale.__dict__, "folds": r.scale.folds[:1]})  # the clean fold only
    synthetic = LAW_IDS["law"]
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, ROWS) + r.law_stages("law"))
    r.run(r.preprocess_stages(synthetic))  # the real dataset's plans, transferred by law synthesize
    r.run(r.train_stages(synthetic, ROWS))
    real, mixed = r.compare(REAL_ID, ROWS, "downstream_real"), r.compare(synthetic, ROWS, "downstream_law")
    lines = ["| segmenter | Dice, real only | Dice, real + LAW | change (points) | cases improved |",
             "|---|---:|---:|---:|---:|"]
    rows = {}
    for name, a, b in zip(ROWS, real["models"], mixed["models"]):
        dice_a, dice_b = a["foreground_mean"]["Dice"]["folds"]["mean"], b["foreground_mean"]["Dice"]["folds"]["mean"]
        per_a = {c["case"]: c["Dice"][POLYP] for c in a["per_case"]}
        per_b = {c["case"]: c["Dice"][POLYP] for c in b["per_case"]}
        assert set(per_a) == set(per_b), "the real validation cases must be the same in both datasets"
        improved = sum(per_b[c] > per_a[c] for c in per_a)
        rows[name] = {"real": dice_a, "real_law": dice_b, "improved_cases": improved, "cases": len(per_a)}
        lines.append(f"| {name} | {100 * dice_a:.1f} | {100 * dice_b:.1f} | {100 * (dice_b - dice_a):+.1f} | "
                     f"{improved} / {len(per_a)} |")
    lines += ["", f"Paper (its segmenter, its data scale): {PAPER['real']} -> {PAPER['real + LAW']}.", "",
              "![real only](downstream_real_compare.png)", "", "![real + LAW](downstream_law_compare.png)"]
    r.write_table("downstream", "Downstream: real only vs real + LAW synthetic", lines, {"rows": rows, "paper": PAPER})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
