"""Running nnU-Net's and the plugin's commands as child processes, exactly as a user would type them, each one
printed and its output appended to a log (the demo and the reproduction scripts in ``benchmarks/``), with the
variables a user would export first: nnU-Net's three folders under one work folder and the plugin's trainers.
Independent commands (e.g. two trainings) may run side by side, each into a log of its own."""
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

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
    # variables for this command only, printed before it as a user would type them
    env: Dict[str, str] = field(default_factory=dict)
    # a log of its own instead of the workflow's, for a stage run beside another: their outputs would interleave
    log: Optional[Path] = None


def executable(name: str) -> str:
    """A console script by name; beside this Python when its bin folder is not on PATH (a venv not activated)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def run_stage(stage: Stage, env: dict, log: Path) -> float:
    """Print and log the command, run it with its output appended to ``log``, or to the stage's own log (which
    ``log`` then names); returns its wall time."""
    line = " ".join([*(f"{name}={shlex.quote(value)}" for name, value in stage.env.items()),
                     shlex.join(stage.command)])
    header = f"$ {line}" if stage.log is None else f"$ {line}\n# its output: {stage.log}"
    tqdm.write(header)
    if stage.log is not None:
        with log.open("a") as out:
            out.write(f"\n{header}\n")
        log = stage.log
    with log.open("a") as out:
        out.write(f"\n$ {line}\n")
        out.flush()
        start = time.perf_counter()
        code = subprocess.run([executable(stage.command[0]), *stage.command[1:]], env={**env, **stage.env},
                              stdout=out, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
        out.write(f"# exit status {code} after {seconds:.1f} s\n")
    if code != 0:
        raise StageFailed(f"{stage.name} failed (exit status {code}): {line}\n--- last lines of {log} ---\n"
                          + "\n".join(log.read_text().splitlines()[-30:]))
    return seconds


def run_side_by_side(stages: Sequence[Stage], env: dict, log: Path, jobs: int) -> Iterator[Tuple[str, float]]:
    """Run ``stages`` up to ``jobs`` at a time (each as :func:`run_stage`, waited on by a thread); yields each one's
    (name, wall time) as it ends. A failure raises its :class:`StageFailed` only once every stage submitted has
    ended, so no child is left running."""
    with ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_stage, stage, env, log): stage.name for stage in stages}
        for future in as_completed(futures):
            yield futures[future], future.result()
