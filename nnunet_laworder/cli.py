"""``nnunet-laworder``: the plugin's command line. Each capability registers its own subcommands."""
import argparse
import sys

from nnunet_laworder.errors import InputError


def _registrars():
    from nnunet_laworder.conversion.cli import register as convert
    from nnunet_laworder.demo.cli import register as demo
    from nnunet_laworder.deployment.cli import register as deployment
    from nnunet_laworder.evaluation.cli import register as complexity
    from nnunet_laworder.law.cli import register as law
    from nnunet_laworder.planning.cli import register as plans
    from nnunet_laworder.training.cli import register as env
    return env, plans, convert, complexity, deployment, demo, law


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's usage errors on one line, as an :class:`InputError` prints (argparse's own prints the usage above
    it); every subcommand's parser is of this class too (``add_subparsers`` makes them of their parent's class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """An error message on one line: some wrap a third-party message (nnU-Net's, the OS's) that may hold several."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="nnunet-laworder",
        description="ORDER / MK-UNet architectures and trainers and the LAW synthetic-data stage for nnU-Net v2.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except InputError as e:
        command = " ".join(filter(None, (args.command, getattr(args, "law_command", None))))
        print(f"nnunet-laworder {command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
