"""``nnunet-laworder ARGV`` as a user types it, without paying Python's and torch's start-up for every command.

One child process imports torch, nnU-Net and the plugin's command line once, then forks a process per command
that runs the console script's ``sys.exit(main())`` with the command's argv; the fork's stdout and stderr are its
own files, read back whole, so what a user would see on the terminal is what a test sees. What the preloaded
imports print on stderr would have been part of every command's stderr: the runner keeps it for the test to check.
Start-up cost was most of each case (about 6 s of 7), and test_bad_input runs thirty commands.
"""
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from nnunet_helpers import succeeded

# what the subcommands import when they run (each cli.py imports its engine inside the command)
ENGINES = ("torch", "nnunetv2.inference.predict_from_raw_data", "nnunet_laworder.demo.pipeline",
           "nnunet_laworder.evaluation.benchmark", "nnunet_laworder.evaluation.benchmark_report",
           "nnunet_laworder.evaluation.compare", "nnunet_laworder.evaluation.complexity",
           "nnunet_laworder.law.training", "nnunet_laworder.law.synthesis", "nnunet_laworder.law.evaluation",
           "nnunet_laworder.deployment.trained_model", "nnunet_laworder.deployment.onnx_export",
           "nnunet_laworder.deployment.onnx_predict", "nnunet_laworder.planning.plans_file",
           "nnunet_laworder.conversion.kvasir", "nnunet_laworder.conversion.cvc", "nnunet_laworder.conversion.kits19")
SERVER = r'''
import json, os, sys, traceback
import importlib
for module in ENGINES:
    importlib.import_module(module)
from nnunet_laworder.cli import main
sys.stderr.flush()
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.argv = ["nnunet-laworder", *request["argv"]]
        try:
            code = main()
        except SystemExit as e:  # argparse exits
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class PreloadedCli:
    """``run(argv)`` -> ``subprocess.CompletedProcess`` of ``nnunet-laworder ARGV`` in ``env``."""

    def __init__(self, env: dict):
        self.folder = Path(tempfile.mkdtemp(prefix="preloaded_cli_"))
        self.import_stderr = self.folder / "imports.err"
        with open(self.import_stderr, "w") as stderr:
            code = f"ENGINES = {ENGINES!r}\n{SERVER}"
            self.server = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.server.stdout.readline().strip() == "ready", self.import_stderr.read_text()

    def run(self, argv: list) -> subprocess.CompletedProcess:
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        self.server.stdin.write(json.dumps({"argv": argv, "stdout": str(stdout), "stderr": str(stderr)}) + "\n")
        self.server.stdin.flush()
        reply = json.loads(self.server.stdout.readline())
        return subprocess.CompletedProcess(["nnunet-laworder", *argv], reply["returncode"], stdout.read_text(),
                                           stderr.read_text())

    def check(self, argv: list) -> subprocess.CompletedProcess:
        """``run``, and the test fails with the command's output unless it exited with status 0 (as
        nnunet_helpers.run)."""
        return succeeded(self.run(argv), ["nnunet-laworder", *argv])

    def close(self):
        self.server.stdin.close()
        self.server.wait(timeout=60)


@contextlib.contextmanager
def preloaded_cli(env: dict):
    """A ``PreloadedCli`` in ``env`` while the block runs; closed after it."""
    cli = PreloadedCli(env)
    try:
        yield cli
    finally:
        cli.close()
    # the imports a user's command would pay for print nothing on stderr, so each command's stderr is all it printed
    assert cli.import_stderr.read_text().strip() == ""
