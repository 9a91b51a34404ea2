"""``nnunet-laworder law train|synthesize|evaluate``: the LAW synthetic-data stage."""
import importlib

COMMANDS = {
    "train": ("nnunet_laworder.law.train",
              "train the mask-conditioned diffusion generator on a dataset's training cases"),
    "synthesize": ("nnunet_laworder.law.synthesize",
                   "write a new nnU-Net dataset of the real cases + synthetic cases, with honest splits"),
    "evaluate": ("nnunet_laworder.law.evaluate",
                 "FID, layout fidelity and a mask / real / synthetic grid of a synthetic dataset"),
}


def register(subparsers) -> None:
    law = subparsers.add_parser("law", help="LAW: mask-conditioned diffusion with learnable adaptive weighting")
    commands = law.add_subparsers(dest="law_command", required=True, metavar="LAW_COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        # each module declares its options and does its work; importing it here pulls only argparse-level code
        module = importlib.import_module(module_name)
        parser = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
