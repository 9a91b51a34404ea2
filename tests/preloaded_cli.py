"""Console scripts (``nnunet-laworder``, ``nnUNetv2_*``) as a user types them, without paying Python's, torch's and
nnU-Net's start-up for every command.

One child process per xdist worker imports torch, nnU-Net's entry points and trainer, and the plugin's command line
and trainers once, then forks a process per command that runs the console script's ``sys.exit(main())`` with the
command's argv, environment and working folder, stdin from /dev/null and its own process group (a timeout kills it
with its workers); its stdout and stderr are files, read back whole. What the preloaded imports printed on stderr
would have been part of every command's stderr, so each command's stderr starts with it (it is empty: the imports of
a user's command print nothing, ``preloaded_cli`` asserts so). The random modules are reseeded from the OS in each
fork, as a fresh process seeds them. Start-up was most of a short command (about 6 s of 7 for ``nnunet-laworder``;
7 CPU-s for ``nnUNetv2_train``), and the suite runs about seventy of them.

Inside a command, nnU-Net starts worker processes with ``multiprocessing.get_context("spawn")`` (validation export and
metrics after every training, preprocessing, fingerprints), and each spawned worker imported torch and nnU-Net again
(about 3 CPU-s, two or more per command). In a forked command "spawn" is Python's fork server instead, started by the
server before any command with the same modules preloaded; it forks each worker from a process that never ran a
torch operation (what makes "spawn" safe where "fork" is not), and the worker adopts its command's environment,
stdout and stderr as a spawned one inherits them (``adopt_command_process``).

Variables that a module reads when it is imported (nnU-Net's ``nnUNet_def_n_proc``, OpenMP's and MKL's thread
counts when torch loads) are the server's: commands whose environment differs there get a server of their own.
nnU-Net's folders and every other variable are read when a command runs, so they come with each command.

The server's plannings sample fewer foreground voxels for nnU-Net's intensity statistics (``FOREGROUND_SAMPLES``).

A shell script (the README's workflow) reaches the same commands through ``scripts_on_path``: shims named after the
console scripts, first on its PATH, forward each command to the test process through a socket.
"""
import atexit
import contextlib
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from multiprocessing import reduction
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, Optional, Tuple

# what the commands import when they run (each cli.py imports its engine inside the command; nnU-Net's entry points
# import their engines at the top)
ENGINES = ("torch", "nnunetv2.run.run_training", "nnunetv2.inference.predict_from_raw_data",
           "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", "nnunetv2.evaluation.evaluate_predictions",
           "nnunetv2.evaluation.find_best_configuration", "nnunet_laworder.training.order_trainers",
           "nnunet_laworder.training.data_trainers", "nnunet_laworder.training.diffusion_seg_trainers",
           "nnunet_laworder.demo.pipeline", "nnunet_laworder.evaluation.benchmark",
           "nnunet_laworder.evaluation.benchmark_report", "nnunet_laworder.evaluation.compare",
           "nnunet_laworder.evaluation.complexity", "nnunet_laworder.law.training", "nnunet_laworder.law.synthesis",
           "nnunet_laworder.law.evaluation", "nnunet_laworder.deployment.trained_model",
           "nnunet_laworder.deployment.onnx_export", "nnunet_laworder.deployment.onnx_predict",
           "nnunet_laworder.planning.plans_file", "nnunet_laworder.conversion.kvasir",
           "nnunet_laworder.conversion.cvc", "nnunet_laworder.conversion.kits19")
# nnU-Net's fingerprint draws 1e8 foreground voxels (with replacement) for its intensity statistics whatever the
# dataset's size: for a test dataset of a few thousand foreground voxels, ~20 CPU-s and ~1 GB piped from a worker
# per planning. The server's plannings draw 1e6: a hundred times the population still, so the statistics (which feed
# CT normalisation only) come out the same to about 0.1 %, and every test reads the fingerprint its planning wrote.
FOREGROUND_SAMPLES = 1e6
IMPORT_TIME_VARIABLES = ("nnUNet_def_n_proc", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SCRIPTS = frozenset(e.name for e in entry_points(group="console_scripts")
                    if e.name == "nnunet-laworder" or e.name.startswith("nnUNetv2_"))
SERVER = r'''
import importlib, json, multiprocessing, os, random, signal, sys, time, traceback
from importlib.metadata import entry_points
from multiprocessing import context, forkserver, resource_tracker, spawn
import numpy as np
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # a console script does not import from its folder
for module in ENGINES:
    importlib.import_module(module)
scripts = {e.name: e for e in entry_points(group="console_scripts") if e.name in SCRIPTS}
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
fingerprint_init = DatasetFingerprintExtractor.__init__


def init_with_fewer_samples(self, *args, **kwargs):
    fingerprint_init(self, *args, **kwargs)
    self.num_foreground_voxels_for_intensitystats = FOREGROUND_SAMPLES


DatasetFingerprintExtractor.__init__ = init_with_fewer_samples
sys.path.append(TESTS)  # preloaded_cli, in the commands and (Python 3.11's ignores sys.path) the fork server
multiprocessing.set_forkserver_preload([*ENGINES, "preloaded_cli"])
python_path, stdout = os.environ.get("PYTHONPATH"), os.dup(1)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (TESTS, python_path)))
os.dup2(2, 1)  # the fork server's and its workers' stdout until they adopt a command's: never the request pipe
forkserver.ensure_running()
os.dup2(stdout, 1)
os.close(stdout)
os.environ.pop("PYTHONPATH") if python_path is None else os.environ.update(PYTHONPATH=python_path)
prepared = spawn.get_preparation_data
from preloaded_cli import CommandProcess
sys.stderr.flush()
print("ready", flush=True)


def exit_code(value):
    """The exit status of ``sys.exit(value)``."""
    if value is None or isinstance(value, int):
        return value or 0
    print(value, file=sys.stderr)
    return 1


for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        random.seed()
        np.random.seed()
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            os.dup2(os.open(path, flags), fd)
        sys.argv = request["argv"]
        # "spawn" is the server's fork server (which outlives every command, so it is not checked for, nor
        # restarted); its workers adopt this command's environment, stdout and stderr
        context._concrete_contexts["spawn"] = context._concrete_contexts["forkserver"]
        forkserver._forkserver.ensure_running = resource_tracker.ensure_running
        spawn.get_preparation_data = lambda name: dict(prepared(name), command_process=CommandProcess())
        try:
            code = exit_code(scripts[sys.argv[0]].load()())
        except SystemExit as e:
            code = exit_code(e.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + request["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reply = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": False}
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            reply = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": True}
            break
        time.sleep(0.05)
    print(json.dumps(reply), flush=True)
'''


class CommandProcess:
    """Pickled into a fork-server worker's preparation data by the command that starts it, and unpickled there first:
    what a spawned worker would have inherited from that command."""

    def __reduce__(self):
        return adopt_command_process, (dict(os.environ), reduction.DupFd(1), reduction.DupFd(2))


def adopt_command_process(env: dict, stdout, stderr) -> None:
    """In a fork-server worker: its command's environment, stdout and stderr; numpy's random state from the OS, as a
    fresh process seeds it (Python's ``random`` is reseeded at every fork)."""
    import numpy as np

    os.environ.clear()
    os.environ.update(env)
    for fd, duplicate in ((1, stdout), (2, stderr)):
        inherited = duplicate.detach()
        os.dup2(inherited, fd)
        os.close(inherited)
    np.random.seed()


def succeeded(result: subprocess.CompletedProcess, cmd: list) -> subprocess.CompletedProcess:
    """``result`` of ``cmd``; the test fails with the command's output unless it exited with status 0."""
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n" \
                                   f"{result.stderr[-4000:]}"
    return result


def import_time_key(env: dict) -> Tuple[Optional[str], ...]:
    return tuple(env.get(name) for name in IMPORT_TIME_VARIABLES)


class PreloadedCommands:
    """``run(cmd, env)`` -> ``subprocess.CompletedProcess`` of the console script ``cmd`` (one of SCRIPTS) in ``env``,
    whose import-time variables must be those of the ``env`` the server started in."""

    def __init__(self, env: dict):
        self.key = import_time_key(env)
        self.folder = Path(tempfile.mkdtemp(prefix="preloaded_commands_"))
        self.import_stderr = self.folder / "imports.err"
        with open(self.import_stderr, "w") as stderr:
            code = (f"ENGINES = {ENGINES!r}\nSCRIPTS = {set(SCRIPTS)!r}\nTESTS = {str(Path(__file__).parent)!r}\n"
                    f"FOREGROUND_SAMPLES = {FOREGROUND_SAMPLES!r}\n{SERVER}")
            self.server = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.server.stdout.readline().strip() == "ready", self.import_stderr.read_text()

    def run(self, cmd: list, env: dict, timeout: float = 900, cwd: Optional[str] = None
            ) -> subprocess.CompletedProcess:
        assert cmd[0] in SCRIPTS and import_time_key(env) == self.key, cmd
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        request = {"argv": [str(c) for c in cmd], "env": dict(env), "cwd": cwd or str(Path.cwd()),
                   "stdout": str(stdout), "stderr": str(stderr), "timeout": timeout}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        reply = json.loads(self.server.stdout.readline())
        output, errors = stdout.read_text(), self.import_stderr.read_text() + stderr.read_text()
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(cmd, timeout, output, errors)
        return subprocess.CompletedProcess(cmd, reply["returncode"], output, errors)

    def close(self):
        self.server.stdin.close()
        self.server.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_SERVERS: Dict[Tuple[Optional[str], ...], PreloadedCommands] = {}


def preloaded_commands(env: dict) -> PreloadedCommands:
    """This process's server for ``env``'s import-time variables, started on first use, closed at exit."""
    key = import_time_key(env)
    if key not in _SERVERS:
        _SERVERS[key] = PreloadedCommands(env)
        atexit.register(_SERVERS[key].close)
    return _SERVERS[key]


class PreloadedCli:
    """``run(argv)`` -> ``subprocess.CompletedProcess`` of ``nnunet-laworder ARGV`` in ``env``."""

    def __init__(self, env: dict):
        self.env = env
        self.commands = preloaded_commands(env)

    def run(self, argv: list) -> subprocess.CompletedProcess:
        return self.commands.run(["nnunet-laworder", *argv], self.env)

    def check(self, argv: list) -> subprocess.CompletedProcess:
        """``run``, and the test fails with the command's output unless it exited with status 0 (as
        nnunet_helpers.run)."""
        return succeeded(self.run(argv), ["nnunet-laworder", *argv])


@contextlib.contextmanager
def preloaded_cli(env: dict):
    """A ``PreloadedCli`` in ``env`` while the block runs."""
    cli = PreloadedCli(env)
    yield cli
    # the imports a user's command would pay for print nothing on stderr, so each command's stderr is all it printed
    assert cli.commands.import_stderr.read_text().strip() == ""


# A console script a shell runs, forwarded to the preloaded commands of the test process that started the shell.
# Without site (-S) it starts in milliseconds; the command gets the shell's argv, environment (less the two
# variables below) and folder, and its children find the installed console scripts.
SHIM = """#!{python} -S
import json, os, socket, sys
address = os.environ.pop("PRELOADED_COMMANDS_SOCKET")
os.environ["PATH"] = os.environ.pop("PRELOADED_COMMANDS_PATH")
with socket.socket(socket.AF_UNIX) as connection:
    connection.connect(address)
    request = {{"argv": [{name!r}, *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}}
    connection.sendall(json.dumps(request).encode() + b"\\n")
    reply = json.loads(connection.makefile().readline())
sys.stdout.write(reply["stdout"])
sys.stderr.write(reply["stderr"])
sys.exit(reply["returncode"])
"""


class _ForwardedCommand(socketserver.StreamRequestHandler):
    def handle(self):
        request = json.loads(self.rfile.readline())
        env = request["env"]
        try:
            result = preloaded_commands(env).run(request["argv"], env, cwd=request["cwd"])
            reply = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        except subprocess.TimeoutExpired as timeout:
            reply = {"returncode": 124, "stdout": timeout.output or "", "stderr": f"{timeout.stderr or ''}\n{timeout}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


@contextlib.contextmanager
def scripts_on_path(env: dict, folder: Path):
    """``env`` for a shell whose ``nnunet-laworder`` and ``nnUNetv2_*`` are the preloaded commands of this process:
    ``folder`` holds one executable shim per script (SHIM), first on PATH, which forwards the command through a
    socket; a command runs as ``nnunet_helpers.run`` runs it. Commands run one at a time."""
    folder.mkdir()
    for name in SCRIPTS:
        shim = folder / name
        shim.write_text(SHIM.format(python=sys.executable, name=name))
        shim.chmod(0o755)
    installed = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    address = Path(tempfile.mkdtemp(prefix="commands_")) / "socket"  # short: a socket's path has 107 bytes at most
    with socketserver.UnixStreamServer(str(address), _ForwardedCommand) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield dict(env, PATH=f"{folder}{os.pathsep}{installed}", PRELOADED_COMMANDS_PATH=installed,
                   PRELOADED_COMMANDS_SOCKET=str(address))
        server.shutdown()
        thread.join()
    shutil.rmtree(address.parent)
