"""Wrong input to ``nnunet-laworder``: exit status 2 and one line on stderr that names the problem and the way out,
before any work, never a traceback. Each case runs the command as a user types it, in a child process (forked from
one that imported torch and nnU-Net once: preloaded_cli.py).

Most cases fail before any dataset is read (argparse, option values, a dataset id that nothing holds); the rest
share the small planned Kvasir-SEG dataset of ``law_fixtures`` (id 901), beside which one nnU-Net fold folder holds
no checkpoint (a training that has not finished). Cases that other modules already check in-process are not
repeated: the quality gate's options, a judge never trained and a window larger than the image
(test_law_inpainting.py), the complexity patch of the wrong dimension (test_complexity.py), export's missing fold or
checkpoint of a trained model (test_onnx_export.py).
"""
from pathlib import Path

import pytest

from law_fixtures import law_folders, law_kvasir  # noqa: F401  (module-scoped pytest fixtures)
from nnunet_helpers import files_under, nnunet_env
from preloaded_cli import PreloadedCli, preloaded_cli

UNFINISHED_TRAINER = "nnUNetTrainer_smoke"  # its 2d fold 0 folder exists, its checkpoint does not
COMPLEXITY = ["complexity", "--arch", "order", "--dim", "2", "--input-channels", "3", "--num-classes", "2"]

# (argv, what the one line must say); {file} is a regular file, {missing} a path that does not exist, {tmp} a
# writable folder
BEFORE_ANY_DATASET = [
    pytest.param([], "the following arguments are required: COMMAND", id="no command"),
    pytest.param(["trian"], "argument COMMAND: invalid choice: 'trian'", id="unknown command"),
    pytest.param(["env", "--foo"], "unrecognized arguments: --foo", id="unknown option"),
    pytest.param(["law"], "the following arguments are required: LAW_COMMAND", id="no law command"),
    pytest.param(["plans", "-d", "950"], "the following arguments are required: -c, --arch",
                 id="missing options"),
    pytest.param(["law", "synthesize", "-d", "950", "-o", "abc"], "argument -o: invalid int value: 'abc'",
                 id="option of the wrong type"),
    pytest.param(COMPLEXITY + ["--patch"], "argument --patch: expected at least one argument",
                 id="option without its values"),
    pytest.param(COMPLEXITY + ["--patch", "0", "0"], "the patch needs 2 positive sizes for a 2D network",
                 id="patch size of 0"),
    pytest.param(["compare", "-d", "950", "-c", "2d", "2d_order", "-tr", "A", "B", "C"],
                 "options are paired by position", id="-c and -tr counts differ"),
    pytest.param(["compare", "-d", "950", "-c", "2d", "-tr", "nnUNetTrainer", "-f", "x"],
                 "-f must be a fold number or 'all', got 'x'", id="fold that is no number"),
    pytest.param(["law", "train", "-d", "950", "-f", "-1"], "argument -f: fold must be >= 0, got -1",
                 id="negative fold"),
    pytest.param(["plans", "-d", "950", "-c", "2d", "--arch", "order"], "dataset 950 not found",
                 id="missing dataset"),
    pytest.param(["convert", "kvasir-seg", "{missing}", "-d", "1000"], "dataset id must be 1..999",
                 id="dataset id out of range"),
    pytest.param(["convert", "kvasir-seg", "{missing}", "-d", "950"], "source folder not found",
                 id="missing source folder"),
    pytest.param(["law", "synthesize", "-d", "950", "-o", "951", "--num", "0"], "--num must be at least 1, got 0",
                 id="--num 0"),
    pytest.param(["law", "synthesize", "-d", "950", "-o", "951", "--protocol", "add", "--strength", "1.5"],
                 "--strength must be in [0, 1], got 1.5", id="--strength above 1"),
    pytest.param(["benchmark", "-d", "950", "-c", "2d", "--json", "{file}/benchmark.json"],
                 "--json: {file} is a file, not a folder", id="unwritable --json folder"),
    pytest.param(["demo", "--output", "{file}/demo"], "--output: {file} is a file, not a folder",
                 id="unwritable demo folder"),
    pytest.param(["demo", "--output", "{tmp}/demo", "--trainer", "nnUNetTrainer"],
                 "--trainer nnUNetTrainer does not train ORDER", id="demo trainer that is no ORDER trainer"),
    pytest.param(["predict", "--onnx", "{missing}", "-i", "{tmp}", "-o", "{tmp}/out", "-d", "950", "-c", "2d",
                  "-tr", "nnUNetTrainer", "-f", "0"], "ONNX file {missing} not found", id="missing ONNX file"),
    pytest.param(["law", "evaluate", "-d", "950", "--model-dataset", "950"], "--model-dataset needs -c CONFIG",
                 id="option that needs another"),
]

ON_A_PLANNED_DATASET = [
    pytest.param(["convert", "kvasir-seg", "{missing}", "-d", "901"], "dataset id 901 already exists",
                 id="converting onto an existing id"),
    pytest.param(["plans", "-d", "901", "-c", "3d_fullres", "--arch", "order"],
                 "has no base configuration '3d_fullres' with an architecture (available: 2d",  # other tests' too
                 id="missing configuration"),
    pytest.param(["plans", "-d", "901", "-c", "2d", "--arch", "order", "-p", "nope"], "nope.json not found",
                 id="missing plans"),
    pytest.param(["law", "train", "-d", "901", "--image-size", "0", "-device", "cpu"],
                 "--image-size needs positive sizes, got 0", id="image size of 0"),
    # a single size is that size on every axis: here it shows as the 2 sizes it became
    pytest.param(["law", "train", "-d", "901", "--image-size", "62", "-device", "cpu"],
                 "--image-size 62 62 must be divisible by 4", id="one image size for 2D"),
    pytest.param(["law", "synthesize", "-d", "901", "-o", "901"], "-o 901 is the id of the source dataset",
                 id="output id equal to the input id"),
    pytest.param(["law", "synthesize", "-d", "901", "-o", "951", "-f", "3", "-device", "cpu"],
                 "LAW__law__2d/fold_3/checkpoint_final.pth not found; train the generator first",
                 id="missing generator fold"),
    pytest.param(["law", "synthesize", "-d", "901", "-o", "951", "--judge", "2d", "-tr", UNFINISHED_TRAINER,
                  "-device", "cpu"], "fold_0/checkpoint_final.pth not found: train fold 0 first",
                 id="judge model without checkpoint"),
    pytest.param(["law", "evaluate", "-d", "901", "-o", "{file}/evaluation", "-device", "cpu"],
                 "-o: {file} is a file, not a folder", id="unwritable evaluation folder"),
    pytest.param(["export", "-d", "901", "-c", "2d", "-tr", UNFINISHED_TRAINER, "-f", "0", "-o", "{tmp}/m.onnx"],
                 "checkpoint_final.pth not found (present: none)", id="missing checkpoint"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "a_file").write_text("not a folder\n")
    return {"file": str(tmp / "a_file"), "missing": str(tmp / "missing"), "tmp": str(tmp)}


@pytest.fixture(scope="module")
def unfinished_fold(law_kvasir):  # noqa: F811
    """A fold folder of a training that has not written its checkpoint yet."""
    (law_kvasir.results / f"{UNFINISHED_TRAINER}__nnUNetPlans__2d" / "fold_0").mkdir(parents=True)
    return law_kvasir


@pytest.fixture(scope="module")
def cli(law_folders):  # noqa: F811
    """The command line in the module's nnU-Net folders (both tests' cases see the same ones)."""
    with preloaded_cli(nnunet_env(law_folders)) as preloaded:  # its imports must print nothing on stderr
        yield preloaded


def assert_refused(cli: PreloadedCli, argv: list, expected: str, folders: dict, places: dict) -> None:
    """``nnunet-laworder ARGV`` exits with status 2 and one line naming ``expected``, and writes no file."""
    argv, expected = [a.format(**places) for a in argv], expected.format(**places)
    watched = [*folders.values(), Path(places["tmp"])]
    before = files_under(watched)
    result = cli.run(argv)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("nnunet-laworder") and ": error: " in lines[0] and expected in lines[0], lines[0]
    assert files_under(watched) == before


@pytest.mark.parametrize("argv, expected", BEFORE_ANY_DATASET)
def test_refused_before_any_dataset_is_read(argv, expected, cli, law_folders, places):  # noqa: F811
    assert_refused(cli, argv, expected, law_folders, places)


@pytest.mark.parametrize("argv, expected", ON_A_PLANNED_DATASET)
def test_refused_on_a_planned_dataset(argv, expected, cli, unfinished_fold, places):
    assert_refused(cli, argv, expected, unfinished_fold.folders, places)
