"""``nnunet-laworder demo``: the whole nnU-Net workflow with ORDER on a shipped Kvasir-SEG sample."""
import sys
from pathlib import Path

from nnunet_laworder.demo.paths import DEFAULT_TRAINER
from nnunet_laworder.workflow import StageFailed

DEFAULT_OUTPUT = Path("nnunet_laworder_demo")


def run(args) -> int:
    from nnunet_laworder.demo.pipeline import run_demo  # torch and nnU-Net load slowly: only when run

    try:
        report = run_demo(output=args.output, device=args.device, trainer=args.trainer, overwrite=args.overwrite,
                          law=args.law)
    except StageFailed as e:
        print(f"nnunet-laworder demo: {e}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="ORDER and LAW on a shipped Kvasir-SEG sample (a few CPU minutes)",
        description="Runs, as child processes and printed as you would type them: convert the shipped Kvasir-SEG "
                    "sample (64 downscaled pairs, 8 held out), nnUNetv2_plan_and_preprocess, "
                    "nnunet-laworder plans; writes fold 0's split (nnU-Net's own); nnUNetv2_train and, side by "
                    "side with it, the LAW stage's law train on fold 0's training cases (on CPU on the cores the "
                    "ORDER training leaves, its output in OUTPUT/law_train.log); nnUNetv2_predict on the held-out "
                    "images and nnUNetv2_evaluate_folder; then law synthesize into a real + synthetic dataset and "
                    "law evaluate; then writes a report (Dice table, figures, LAW weight maps and synthetic "
                    "samples) into OUTPUT/report.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"demo folder: nnU-Net's folders, predictions, log, report (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu",
                        help="device for nnUNetv2_train and nnUNetv2_predict (default: cpu)")
    parser.add_argument("--trainer", default=DEFAULT_TRAINER,
                        help=f"an ORDER trainer (default: {DEFAULT_TRAINER}, sized for a few CPU minutes)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo in OUTPUT")
    parser.add_argument("--no-law", dest="law", action="store_false",
                        help="skip the LAW stage (generator training, synthetic dataset, layout fidelity)")
    parser.set_defaults(func=run)
