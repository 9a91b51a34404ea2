"""Running nnU-Net's and the plugin's commands as child processes, exactly as a user would type them, each one
printed and its output appended to a log (the demo and the reproduction scripts in ``benchmarks/``), with the
variables a user would export first: nnU-Net's three folders under one work folder and the plugin's trainers."""
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from tqdm import tqdm

from nnunet_laworder.training.discovery import trainer_folder

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# a few CPU cores: more worker processes than cores only add start-up time and contention
CPU_ENV = {"nnUNet_n_proc_DA": "2", "nnUNet_def_n_proc": "1"}


def nnunet_variables(root: Path, device: str) -> Dict[str, str]:
    """What to export for nnU-Net's commands: `nnunet-laworder env`'s variables with nnU-Net's folders under
    ``root``, and on cpu fewer workers (unless the user's environment already sets them)."""
    variables = {name: str(Path(root) / name) for name in NNUNET_FOLDERS}
    variables["nnUNet_extTrainer"] = trainer_folder()
    if device == "cpu":
        variables.update({k: v for k, v in CPU_ENV.items() if k not in os.environ})
    return variables


def export_lines(variables: Dict[str, str]) -> List[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


class StageFailed(Exception):
    """A child command exited with an error (its output is in the log)."""


@dataclass(frozen=True)
class Stage:
    name: str
    command: List[str]


def executable(name: str) -> str:
    """A console script by name; beside this Python when its bin folder is not on PATH (a venv not activated)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def run_stage(stage: Stage, env: dict, log: Path) -> float:
    """Print and log the command, run it with its output appended to ``log``; returns its wall time."""
    line = shlex.join(stage.command)
    tqdm.write(f"$ {line}")
    with log.open("a") as out:
        out.write(f"\n$ {line}\n")
        out.flush()
        start = time.perf_counter()
        code = subprocess.run([executable(stage.command[0]), *stage.command[1:]], env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
        out.write(f"# exit status {code} after {seconds:.1f} s\n")
    if code != 0:
        raise StageFailed(f"{stage.name} failed (exit status {code}): {line}\n--- last lines of {log} ---\n"
                          + "\n".join(log.read_text().splitlines()[-30:]))
    return seconds
