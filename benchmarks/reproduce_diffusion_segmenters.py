"""Claim: the diffusion segmenters (SPAD, cDAL) are worth their sampling cost beside ORDER. Trains SPAD and cDAL
on nnU-Net's own ``2d`` configuration of the real dataset, with ORDER and nnU-Net's default network on the same fold
and schedule (reused when the ORDER ablation trained them in the same work folder), and compares nnU-Net's
validation Dice case for case against ORDER (mean difference, 95% bootstrap interval, cases improved), and the
same on the scale's test split (``imagesTs``, pairs no training or choice has seen).

    python benchmarks/reproduce_diffusion_segmenters.py                # reduced scale, CPU, about 40 minutes
    python benchmarks/reproduce_diffusion_segmenters.py --scale paper  # full scale, GPU

Validation samples as ``nnUNetv2_predict`` does (K = 4 samples per patch, test-time mirroring). Writes
``WORK/results/diffusion_segmenters.{md,json}`` and the compare JSON / PNG beside them.
"""
from nnunet_laworder.evaluation.compare import case_dice
from nnunet_laworder.evaluation.paired import paired_difference
from nnunet_laworder.training.order_trainers import SHORT_SCHEDULE_SEED
from reproduction import REAL_ID, Reproduction, parse_args

ROWS = ["SPAD", "cDAL", "ORDER", "nnU-Net default"]
REFERENCE = "ORDER"


def main(argv=None) -> int:
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], argv), "reproduce_diffusion_segmenters")
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, ROWS) + r.segmenter_test_stages(REAL_ID, ROWS))
    splits = ("validation", "test") if r.scale.test_cases else ("validation",)
    rows = {}
    for split in splits:
        report = r.compare(REAL_ID, ROWS, "diffusion_segmenters", split=split)
        cases = {name: case_dice(model) for name, model in zip(ROWS, report["models"])}
        for name, model in zip(ROWS, report["models"]):
            row = rows.setdefault(name, {"parameters": model["parameters"], "trainer": model["trainer"]})
            prefix = "" if split == "validation" else "test_"
            row[prefix + "dice"] = model["foreground_mean"]["Dice"]["cases"]["mean"]
            if name != REFERENCE:
                row[prefix + "vs_order"] = paired_difference(cases[REFERENCE], cases[name])
    lines = ["| segmenter | Dice | vs ORDER, points [95% CI] | cases improved / equal / worse | test split: Dice, vs "
             "ORDER | parameters |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        p, test = row.get("vs_order"), row.get("test_vs_order")
        versus = "-" if p is None else f"{100 * p['mean_diff']:+.1f} [{100 * p['ci95'][0]:+.1f}, " \
                                       f"{100 * p['ci95'][1]:+.1f}]"
        counts = "-" if p is None else f"{p['improved']} / {p['equal']} / {p['worse']}"
        on_test = "-" if "test_dice" not in row else f"{100 * row['test_dice']:.1f}" + (
            "" if test is None else f", {100 * test['mean_diff']:+.1f} [{100 * test['ci95'][0]:+.1f}, "
                                    f"{100 * test['ci95'][1]:+.1f}]")
        lines.append(f"| {name} | {100 * row['dice']:.1f} | {versus} | {counts} | {on_test} | "
                     f"{row['parameters']:,} |")
    lines += ["", "Dice: nnU-Net's validation of the first fold (mean over cases, polyp label), one run each (seed "
              f"{SHORT_SCHEDULE_SEED} of the short schedules; models another reproduction script left in the work "
              "folder are reused as they are); the diffusion segmenters sample K = 4 masks per patch with mirroring.",
              "", "![compare](diffusion_segmenters_compare.png)"]
    r.write_table("diffusion_segmenters", "SPAD and cDAL beside ORDER and nnU-Net's default", lines, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
