"""Claim: ORDER beats MK-UNet on Kvasir-SEG (paper: Dice 81.3 vs 75.3) with 42K parameters, ~730x fewer than
nnU-Net's default network. Trains ORDER, MK-UNet (base), nnU-Net's default 2D U-Net and nnU-Net's residual-encoder
preset M (``nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM``; below ``--scale paper`` at the default plans' batch
size, see reproduction.Scale) on the same real folds with the same schedule, then benchmarks the networks side by
side and compares nnU-Net's validation Dice, and Dice on the scale's test split (``imagesTs``: pairs no training or
choice has seen; none at ``--scale paper``).

    python benchmarks/reproduce_order_kvasir.py                   # reduced scale, CPU, under an hour
    python benchmarks/reproduce_order_kvasir.py --scale paper     # all pairs, five folds, 1000 epochs, GPU

Writes ``WORK/results/order_kvasir.{md,json}`` plus the benchmark and compare JSON / PNG beside them.
"""
from reproduction import REAL_ID, RESENC_M, Reproduction, Stage, parse_args

PAPER = {"ORDER": {"dice": 81.3, "iou": 81.7, "parameters": 42_000, "gmacs": 0.56},
         "MK-UNet": {"dice": 75.3}, "nnU-Net default": {"parameters": 42_000 * 730}}
ORDER_OF_ROWS = ["ORDER", "MK-UNet", "nnU-Net default", RESENC_M]


def main(argv=None) -> int:
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], argv), "reproduce_order_kvasir")
    r.run(r.prepare_real() + r.preset_stages(ORDER_OF_ROWS))
    planned_batch_sizes = r.equal_batch_size(ORDER_OF_ROWS)
    r.run(r.train_stages(REAL_ID, ORDER_OF_ROWS) + r.segmenter_test_stages(REAL_ID, ORDER_OF_ROWS))
    benchmark = r.results / "order_benchmark.json"
    # the trainers that trained the models, so that `compare` finds each model's latency under its identifier
    configurations, trainers, plans = r.models(ORDER_OF_ROWS)
    r.run([(Stage("benchmark", ["nnunet-laworder", "benchmark", "-d", str(REAL_ID), "-c", *configurations,
                                "-tr", *trainers, "-p", *plans, "-device", r.device, "--json", str(benchmark),
                                "--png", str(benchmark.with_suffix(".png"))]), benchmark)])
    report = r.compare(REAL_ID, ORDER_OF_ROWS, "order", benchmark)
    test = r.compare(REAL_ID, ORDER_OF_ROWS, "order", split="test")["models"] if r.scale.test_cases else None
    rows = {}
    lines = ["| network | Dice (ours) | IoU (ours) | Dice, test split | Dice (paper) | parameters | GMACs | "
             "latency (ms) | parameters vs nnU-Net | latency vs nnU-Net |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, (name, model) in enumerate(zip(ORDER_OF_ROWS, report["models"])):
        polyp = model["foreground_mean"]
        rows[name] = {"dice": polyp["Dice"]["folds"]["mean"], "iou": polyp["IoU"]["folds"]["mean"],
                      "test_dice": test[i]["foreground_mean"]["Dice"]["cases"]["mean"] if test else None,
                      "parameters": model["parameters"], "gmacs": model["gmacs"],
                      "latency_ms": model["forward_ms"],
                      "missing_folds": model["missing_folds"]}
    reference = rows["nnU-Net default"]
    for name, row in rows.items():
        paper = PAPER.get(name, {}).get("dice")
        lines.append(
            f"| {name} | {100 * row['dice']:.1f} | {100 * row['iou']:.1f} | "
            f"{fmt(row['test_dice'] and 100 * row['test_dice'])} | {paper if paper else '-'} | "
            f"{row['parameters']:,} | {row['gmacs']:.3f} | {fmt(row['latency_ms'])} | "
            f"{ratio(reference['parameters'], row['parameters'])} | "
            f"{ratio(reference['latency_ms'], row['latency_ms'])} |")
    lines += ["", "Dice and IoU: nnU-Net's validation of the listed folds (mean over folds of the per-fold mean over "
              "cases, polyp label); test split: the mean over its cases (of the folds' mean); latency: forward "
              "pass of one patch, batch 1, from the benchmark; the last two columns say how many times nnU-Net's "
              "default network's parameters / latency each network's are.",
              "", "![compare](order_compare.png)", "", "![benchmark](order_benchmark.png)"]
    r.write_table("order_kvasir", "ORDER vs MK-UNet vs nnU-Net's default on Kvasir-SEG", lines,
                  {"rows": rows, "paper": PAPER, "planned_batch_sizes": planned_batch_sizes})
    return 0


def fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def ratio(reference, value) -> str:
    return "-" if not reference or not value else f"{reference / value:.1f}x"


if __name__ == "__main__":
    raise SystemExit(main())
