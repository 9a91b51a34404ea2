"""README.md's polyp workflow run as a user types it, so that a README whose commands do not work fails CI.

The ```bash block under "## Polyps, 2D" runs in bash, command after command, in fresh nnU-Net folders, after the
substitutions of ``SUBSTITUTIONS`` (each says why: the data at hand, no GPU, time on 2 CPU cores). Every
substitution must find its text, so a README change that one of them no longer fits fails here too: the test and
the README change together. The shell's ``nnunet-laworder`` and ``nnUNetv2_*`` are this worker's preloaded commands
(``preloaded_cli.scripts_on_path``: the installed entry points with the shell's arguments, environment and folder,
without importing torch and nnU-Net for each of them); the demo's test runs the installed console scripts as
child processes. The chain (12 commands, three trainings) took 2.5 minutes on 2 CPU cores as child processes; the
README's five folds would take five times as long.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, require_data
from nnunet_helpers import copy_kvasir_subset, nnunet_env
from preloaded_cli import scripts_on_path

SECTION = "## Polyps, 2D"
N_TRAIN, N_TEST = 5, 2  # nnU-Net splits the training cases into five folds: five is the fewest it takes
DATASET = "Dataset101_KvasirSEG"

# (README text as a regular expression, its replacement, why); applied in this order to the block's command lines
SUBSTITUTIONS = [
    (r"/data/Kvasir-SEG -d 101 --test-list /data/kvasir_test_cases.txt",
     r"{subset} -d 101 --max-size 64 --test-list {subset}/test.txt",
     "a small real subset at 64 px, its own held-out list (the predict and evaluate lines read imagesTs / labelsTs)"),
    (r"^nnunet-laworder convert cvc-clinicdb .*\n", "",
     "no CVC-ClinicDB in the test data (test_conversion.py covers its converter)"),
    (r"--verify_dataset_integrity", r"\g<0> -np 1 -npfp 1",
     "nnU-Net's default of 8 worker processes took 2.5 minutes on 2 busy cores, one took 20 s"),
    (r"for f in 0 1 2 3 4;", "for f in 0;", "one fold: the same commands for every fold, five take five times longer"),
    (r"-f 0 1 2 3 4", "-f 0", "the one trained fold"),
    (r"^(nnUNetv2_find_best_configuration .*)$", r"\1 -f 0", "the one trained fold (its default is all five)"),
    (r"\b(nnUNetTrainer(?:ORDER|MKUNet)?)(?=\s|__|$)", r"\1_smoke",
     "the same recipes on 3 x 8 iterations instead of 1000 x 250"),
    (r"^([ \t]*nnUNetv2_train 101 2d \$f)$", r"\1 -tr nnUNetTrainer_smoke", "nnU-Net's default trainer, short"),
    (r"^([ \t]*nnUNetv2_(?:train|predict) .*)$", r"\1 -device cpu", "no GPU"),
    (r"^(nnUNetv2_predict .*)$", r"\1 -npp 0 -nps 0",
     "nnU-Net's sequential prediction: starting its worker processes takes longer than predicting two small images"),
]


def readme_block(heading: str) -> str:
    """The first ```bash block of the README.md section whose heading starts with ``heading``."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n" + heading) + 1:].split("\n## ")[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"no bash block under {heading!r} in README.md"
    return match.group(1)


def command_lines(block: str) -> str:
    """The block's commands, one per line: continuation lines joined, comments dropped."""
    lines = (re.sub(r"\s+#.*$", "", line).rstrip() for line in block.replace("\\\n", " ").splitlines())
    return "".join(f"{line}\n" for line in lines if line.strip() and not line.lstrip().startswith("#"))


def substituted(script: str, subset: Path) -> str:
    for pattern, replacement, why in SUBSTITUTIONS:
        script, count = re.subn(pattern, replacement.replace("{subset}", str(subset)), script, flags=re.M)
        assert count, f"README.md's {SECTION!r} block no longer has {pattern!r} (substituted because: {why})"
    return script


@pytest.mark.slow
def test_polyp_workflow_commands_run_as_written(nnunet_dirs, tmp_path):
    subset = tmp_path / "Kvasir-SEG"
    subset.mkdir()
    copy_kvasir_subset(require_data("kvasir-seg"), subset, N_TRAIN + N_TEST, N_TEST)
    script = tmp_path / "polyps.sh"
    # bash -x traces every command, with the seconds since the start, on stderr
    header = "set -euxo pipefail\nPS4='+ [${SECONDS} s] '\n"
    script.write_text(header + substituted(command_lines(readme_block(SECTION)), subset))
    work = tmp_path / "work"  # where the README's relative output folder (pred_order) goes
    work.mkdir()
    with scripts_on_path(nnunet_env(nnunet_dirs), tmp_path / "commands") as env:
        result = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True,
                                timeout=1800)
    # the last command traced is the one that failed
    assert result.returncode == 0, f"{script.read_text()}\nfailed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"

    results = nnunet_dirs["nnUNet_results"] / DATASET
    for trainer, configuration in (("nnUNetTrainerORDER_smoke", "2d_order"), ("nnUNetTrainerMKUNet_smoke", "2d_mkunet"),
                                   ("nnUNetTrainer_smoke", "2d")):
        model = results / f"{trainer}__nnUNetPlans__{configuration}"
        assert (model / "fold_0" / "checkpoint_final.pth").is_file(), model
    assert "nnUNetTrainerORDER_smoke" in (results / "inference_information.json").read_text()
    tests = sorted((nnunet_dirs["nnUNet_raw"] / DATASET / "labelsTs").glob("*.png"))
    assert len(tests) == N_TEST
    assert sorted(p.name for p in (work / "pred_order").glob("*.png")) == [p.name for p in tests]
    summary = json.loads((work / "pred_order" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == N_TEST and 0 <= summary["foreground_mean"]["Dice"] <= 1
