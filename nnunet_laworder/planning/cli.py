"""``nnunet-laworder plans``: add an ORDER / MK-UNet configuration to a dataset's plans."""


def run(args) -> int:
    from nnunet_laworder.planning.plans_file import add_configuration  # nnU-Net loads slowly: only when run

    plans_file, name, changed = add_configuration(dataset=args.d, base=args.c, arch=args.arch, variant=args.variant,
                                                  plans_name=args.p, name=args.name)
    state = "added" if changed else "already up to date"
    print(f"configuration '{name}' ({args.arch}, inherits from '{args.c}') {state} in {plans_file}")
    trainer = "nnUNetTrainerORDER" if args.arch == "order" else "nnUNetTrainerMKUNet"
    print(f"train it with: nnUNetv2_train {args.d} {name} FOLD -tr {trainer}"
          + (f" -p {args.p}" if args.p != "nnUNetPlans" else ""))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plans", help="add an ORDER / MK-UNet configuration (e.g. 2d_order) to a dataset's nnU-Net plans",
        description="Adds a configuration that inherits from an existing one (patch, spacing, preprocessed data) "
                    "and carries a complete ORDER / MK-UNet architecture block following its strides. Idempotent.")
    parser.add_argument("-d", required=True, help="dataset id or name (as for nnUNetv2_train)")
    parser.add_argument("-c", required=True, help="base configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("--arch", required=True, choices=("order", "mkunet"))
    parser.add_argument("--variant", default=None,
                        help="architecture variant (mkunet: T, S, base [default]; order: default, and the ablations "
                             "no-attention, confidence-gate, wide-attention); named in the configuration")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--name", default=None, help="configuration name (default: <base>_<arch>[_<variant>])")
    parser.set_defaults(func=run)
