"""``nnunet-laworder complexity | benchmark | compare``: what the networks cost and what they score."""
import argparse
import json
import sys
from pathlib import Path

from nnunet_laworder.nnunet_folders import SPLITS, check_output_folder


def register(subparsers) -> None:
    register_complexity(subparsers)
    register_benchmark(subparsers)
    register_compare(subparsers)


def register_complexity(subparsers) -> None:
    parser = subparsers.add_parser(
        "complexity", help="parameters and GMACs of ORDER, MK-UNet or nnU-Net's default U-Net for a patch",
        description="Build the network with nnU-Net's pooling for the patch and count its parameters and its "
                    "multiply-accumulates (convolutions and matmuls, attention included) for one forward pass "
                    "of a batch of one. The patch is padded as nnU-Net's planner pads it.")
    parser.add_argument("--arch", required=True, help="order, mkunet or nnunet (nnU-Net's default PlainConvUNet)")
    parser.add_argument("--variant", help="mkunet: width T, S or base (default base); order: default, or the "
                                          "ablations no-attention, confidence-gate, wide-attention")
    parser.add_argument("--dim", type=int, choices=(2, 3), required=True)
    parser.add_argument("--input-channels", type=int, required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--patch", type=int, nargs="+", required=True, metavar="SIZE",
                        help="patch size, one value per axis (e.g. 256 256)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also parameters and GMACs per part: backbone, each attention stage, heads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_complexity)


def run_complexity(args: argparse.Namespace) -> int:
    from nnunet_laworder.evaluation.complexity import network_complexity  # torch and nnU-Net load slowly

    result = network_complexity(arch=args.arch, dim=args.dim, input_channels=args.input_channels,
                                num_classes=args.num_classes, patch_size=args.patch, variant=args.variant,
                                with_breakdown=args.breakdown)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def format_table(result: dict) -> str:
    name = result["arch"] + (f" ({result['variant']})" if result["variant"] else "")
    rows = [("network", name), ("dim", f"{result['dim']}D"),
            ("input channels", result["input_channels"]), ("classes", result["num_classes"]),
            ("patch", " x ".join(map(str, result["patch_size"]))),
            ("parameters", f"{result['parameters']:,}"), ("GMACs", f"{result['gmacs']:.3f}")]
    for part, cost in result.get("breakdown", {}).items():
        rows.append((f"  {part}", f"{cost['parameters']:,} parameters, {cost['gmacs']:.4f} GMACs "
                                  f"({100 * cost['gmacs'] / result['gmacs']:.1f}%)"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)


def register_benchmark(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="parameters, GMACs, forward latency, training-step time and peak memory of each "
                          "configuration's network, side by side, as ratios to nnU-Net's default",
        description="Builds each configuration's network from the dataset's plans with its nnU-Net trainer and "
                    "measures, in one run with interleaved repetitions: parameters, GMACs of one patch, forward "
                    "latency per patch (batch 1, as nnUNetv2_predict runs it), the trainer's own training step "
                    "at the plans' batch size, and peak memory (one child process per network); with --predict, "
                    "also nnUNetv2_predict's seconds per case of each trained model. Every figure is "
                    "also given as a ratio to nnU-Net's default configuration of the same dimension (2d / "
                    "3d_fullres of nnUNetPlans; added when not listed). Options -c, -tr and -p pair by position; "
                    "a single value applies to all. Without -tr, ORDER / MK-UNet configurations get the plugin's "
                    "trainer and all others nnUNetTrainer.")
    add_model_arguments(parser, trainers_required=False)
    parser.add_argument("-device", default=None, choices=("cpu", "cuda", "mps"),
                        help="default: cuda where available, else cpu")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per network (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's). On a busy CPU use 1: waiting on a straggling "
                             "thread at every op slows networks of many small ops (ORDER, MK-UNet) far more")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training-step batch size for all networks (default: each configuration's plans)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--predict", action="store_true",
                        help="also time nnUNetv2_predict end to end (preprocessing, sliding window, mirroring, "
                             "export) per case on the dataset's training images, with mirroring and with "
                             "--disable_tta, for each trained model (its --predict-fold checkpoint_final.pth); "
                             "predictions go to a temporary folder")
    parser.add_argument("--predict-cases", type=int, default=8, metavar="N",
                        help="training cases to predict, evenly spaced over the sorted case names (default 8)")
    parser.add_argument("--predict-fold", default="0", metavar="FOLD",
                        help="the fold whose model predicts, a number or 'all' (default 0)")
    add_output_arguments(parser)
    parser.set_defaults(func=run_benchmark_command)


def run_benchmark_command(args: argparse.Namespace) -> int:
    check_outputs(args.json, args.png)
    # torch and nnU-Net load slowly: only the command that runs imports them
    from nnunet_laworder.evaluation.benchmark import run_benchmark
    from nnunet_laworder.evaluation.benchmark_report import markdown_table, plot_benchmark

    report = run_benchmark(dataset=args.d, configurations=args.c, trainers=args.tr, plans_names=args.p,
                           device=args.device, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                           batch_size=args.batch_size, memory=not args.no_memory, predict=args.predict,
                           predict_cases=args.predict_cases, predict_fold=args.predict_fold)
    print(markdown_table(report))
    write_outputs(report, args.json, args.png, plot_benchmark)
    return 0


def register_compare(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="nnU-Net's validation (or test) Dice / IoU of several trained models in one table, with their "
                           "cost",
        description="Reads each model's fold_X/validation/summary.json (or crossval_results_folds_*/summary.json) "
                    "under nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIG and prints Dice and IoU per label "
                    "(mean and std over folds and over cases), parameters and GMACs of the network built from "
                    "the model's plans, and forward latency from a benchmark JSON. -c, -tr and -p pair by "
                    "position; a single value applies to all. Missing folds are reported, not averaged away. "
                    "--split test reads fold_X/test/summary.json instead: each fold's model evaluated on the raw "
                    "dataset's imagesTs / labelsTs (where one is missing, the error gives the nnUNetv2_predict and "
                    "nnUNetv2_evaluate_folder commands that write it).")
    add_model_arguments(parser, trainers_required=True)
    parser.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], metavar="FOLD",
                        help="folds (default: 0 1 2 3 4)")
    parser.add_argument("--split", choices=SPLITS, default="validation",
                        help="validation: each fold's validation cases (default); test: the raw dataset's test "
                             "cases (imagesTs / labelsTs), predicted by each fold's model")
    parser.add_argument("--benchmark-json", type=Path, metavar="FILE",
                        help="a `nnunet-laworder benchmark --json` file: adds forward latency")
    parser.add_argument("--paired", metavar="REFERENCE", default=None,
                        help="also compare every model with this one case by case: mean paired Dice difference, "
                             "its 95%% bootstrap interval, cases improved / equal / worse (REFERENCE: a model's "
                             "identifier TRAINER__PLANS__CONFIG, or a configuration or trainer only it has)")
    add_output_arguments(parser)
    parser.set_defaults(func=run_compare_command)


def run_compare_command(args: argparse.Namespace) -> int:
    check_outputs(args.json, args.png)
    from nnunet_laworder.evaluation.compare import markdown_table, paired_table, plot_compare, run_compare

    report = run_compare(dataset=args.d, configurations=args.c, trainers=args.tr, plans_names=args.p, folds=args.f,
                         benchmark_json=args.benchmark_json, paired=args.paired, split=args.split)
    for warning in report["warnings"]:
        print(f"nnunet-laworder compare: warning: {warning}", file=sys.stderr)
    print(markdown_table(report))
    if "paired" in report:
        print("\n" + paired_table(report))
    write_outputs(report, args.json, args.png, plot_compare)
    return 0


def add_model_arguments(parser, trainers_required: bool) -> None:
    """-d, and -c / -tr / -p, which pair by position as nnU-Net's TRAINER__PLANS__CONFIG model folders."""
    parser.add_argument("-d", required=True, help="dataset id or name")
    parser.add_argument("-c", nargs="+", required=True, metavar="CONFIG", help="configurations, e.g. 2d 2d_order")
    parser.add_argument("-tr", nargs="+", required=trainers_required, metavar="TRAINER",
                        help="trainer per configuration" + ("" if trainers_required else " (default: see above)"))
    parser.add_argument("-p", nargs="+", metavar="PLANS", help="plans identifier(s) (default: nnUNetPlans)")


def add_output_arguments(parser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number and setting here")
    parser.add_argument("--png", type=Path, metavar="FILE", help="write the charts here")


def check_outputs(json_file, png_file) -> None:
    """The folders of --json and --png can be written, checked before anything is measured or read."""
    for option, file in (("--json", json_file), ("--png", png_file)):
        if file is not None:
            check_output_folder(file.parent, option)


def write_outputs(report: dict, json_file, png_file, plot) -> None:
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(report, indent=2))
    if png_file is not None:
        plot(report, png_file)
