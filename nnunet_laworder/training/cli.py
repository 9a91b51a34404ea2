"""``nnunet-laworder env``: the environment lines that let nnU-Net's own commands find our trainers."""
import os
import shlex

from nnunet_laworder.training.discovery import trainer_folder


def export_lines() -> list:
    lines = [f"export nnUNet_extTrainer={shlex.quote(trainer_folder())}"]
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(name)
        lines.append(f"export {name}={shlex.quote(value)}" if value else
                     f"# {name} is not set yet: export {name}=/path/to/{name}")
    return lines


def run(args) -> int:
    print("\n".join(export_lines()))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "env", help="print the export lines nnU-Net needs to find the ORDER / MK-UNet trainers",
        description="Prints shell export lines; use as: eval \"$(nnunet-laworder env)\"")
    parser.set_defaults(func=run)
