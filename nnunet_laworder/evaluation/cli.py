"""``nnunet-laworder complexity``: parameters and GMACs of a network for a patch."""
import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "complexity", help="parameters and GMACs of ORDER, MK-UNet or nnU-Net's default U-Net for a patch",
        description="Build the network with nnU-Net's pooling for the patch and count its parameters and its "
                    "multiply-accumulates (convolutions and matmuls, attention included) for one forward pass "
                    "of a batch of one. The patch is padded as nnU-Net's planner pads it.")
    parser.add_argument("--arch", required=True, help="order, mkunet or nnunet (nnU-Net's default PlainConvUNet)")
    parser.add_argument("--variant", help="MK-UNet width: T, S or base (default base)")
    parser.add_argument("--dim", type=int, choices=(2, 3), required=True)
    parser.add_argument("--input-channels", type=int, required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--patch", type=int, nargs="+", required=True, metavar="SIZE",
                        help="patch size, one value per axis (e.g. 256 256)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_complexity)


def run_complexity(args: argparse.Namespace) -> int:
    from nnunet_laworder.evaluation.complexity import network_complexity  # torch and nnU-Net load slowly

    result = network_complexity(args.arch, args.dim, args.input_channels, args.num_classes, args.patch, args.variant)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def format_table(result: dict) -> str:
    name = result["arch"] + (f" ({result['variant']})" if result["variant"] else "")
    rows = [("network", name), ("dim", f"{result['dim']}D"),
            ("input channels", result["input_channels"]), ("classes", result["num_classes"]),
            ("patch", " x ".join(map(str, result["patch_size"]))),
            ("parameters", f"{result['parameters']:,}"), ("GMACs", f"{result['gmacs']:.3f}")]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
