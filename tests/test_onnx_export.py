"""``nnunet-laworder export`` and ``predict --onnx`` on an ORDER model trained on a real Kvasir-SEG subset, on CPU.

The graph must agree with PyTorch: nnU-Net's whole prediction with onnxruntime computing the network against
nnUNetv2_predict on held-out images, and the raw logits of real preprocessed patches at two spatial sizes; and,
without training, a small ORDER's graph traced at one size must agree at another whose token grids differ.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import KVASIR_ORDER_SMOKE, KVASIR_WORKFLOW_ID, KVASIR_WORKFLOW_TEST
from nnunet_helpers import exported_folders, run
from test_fast_inference import trained_looking
from nnunet_laworder.cli import main
from nnunet_laworder.networks.order import ORDER, SelectiveBidirectionalSkipAttention, token_grid

KVASIR_ID, KVASIR_TEST = KVASIR_WORKFLOW_ID, KVASIR_WORKFLOW_TEST
CONFIGURATION, TRAINER = "2d_order", "nnUNetTrainerORDER_smoke"
pytestmark = pytest.mark.xdist_group(KVASIR_ORDER_SMOKE)


@pytest.fixture(scope="module")
def nnunet_folders(kvasir_order_smoke):
    """conftest's Kvasir-SEG folders, exported for in-process calls while the module runs."""
    yield from exported_folders(kvasir_order_smoke["folders"])


@pytest.fixture(scope="module")
def exported(nnunet_folders, kvasir_order_smoke, tmp_path_factory):
    """(environment, raw dataset folder, ONNX file, export's report): ORDER trained with the smoke schedule
    (conftest.kvasir_order_smoke), fold 0 exported."""
    env = kvasir_order_smoke["env"]
    onnx_file = tmp_path_factory.mktemp("onnx") / "order.onnx"
    report = run(["nnunet-laworder", "export", "-d", str(KVASIR_ID), "-c", CONFIGURATION, "-tr", TRAINER, "-f", "0",
                  "-o", str(onnx_file)], env, timeout=1800)
    return env, kvasir_order_smoke["raw"], onnx_file, json.loads(report.stdout[report.stdout.index("{"):])


def model_args(fold="0", configuration=CONFIGURATION):
    return ["-d", str(KVASIR_ID), "-c", configuration, "-tr", TRAINER, "-f", fold]


@pytest.mark.slow
def test_export_records_its_model(exported):
    _, raw, onnx_file, report = exported
    from nnunet_laworder.deployment.onnx_export import read_metadata

    metadata = read_metadata(onnx_file)
    assert metadata["dataset"] == raw.name and metadata["configuration"] == CONFIGURATION
    assert metadata["trainer"] == TRAINER and metadata["fold"] == "0"
    assert report["max_abs_difference"] < 1e-4, report


@pytest.mark.slow
def test_onnx_prediction_matches_nnunet_predict(exported, tmp_path):
    env, raw, onnx_file, _ = exported
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    common = ["-i", str(raw / "imagesTs"), *model_args(), "-npp", "1", "-nps", "1", "--save_probabilities"]
    run(["nnUNetv2_predict", "-o", str(torch_out), *common, "-device", "cpu"], env)
    run(["nnunet-laworder", "predict", "--onnx", str(onnx_file), "-o", str(onnx_out), *common, "--threads", "1"],
        env)
    images = sorted((raw / "imagesTs").glob("*.png"))
    assert len(images) == KVASIR_TEST
    equal = total = 0
    worst = 0.0
    for image in images:
        case = image.name.replace("_0000", "")
        expected, actual = np.array(Image.open(torch_out / case)), np.array(Image.open(onnx_out / case))
        assert actual.shape == expected.shape
        equal, total = equal + int((actual == expected).sum()), total + expected.size
        stem = case[:-len(".png")]
        probabilities = [np.load(folder / f"{stem}.npz")["probabilities"] for folder in (torch_out, onnx_out)]
        worst = max(worst, float(np.abs(probabilities[0] - probabilities[1]).max()))
    print(f"labels equal: {equal / total:.6%} of {total} pixels; max |probability difference| {worst:.2e}")
    assert equal / total >= 0.999
    assert worst <= 1e-3


def attention_token_grids(network, shape):
    """The token grid of each of ORDER's attention stages for an input of ``shape``."""
    grids, hooks = [], []

    def record(module, args):
        grids.append(token_grid(args[0].shape[2:], module.max_tokens))

    for module in network.modules():
        if isinstance(module, SelectiveBidirectionalSkipAttention):
            hooks.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        network(torch.zeros(shape))
    for hook in hooks:
        hook.remove()
    return grids


def kvasir_batch(kvasir_dir, size, n=2):
    """The first ``n`` Kvasir-SEG images resized to ``size`` (rows, columns), each channel standardised as nnU-Net
    normalises RGB frames."""
    images = [np.asarray(Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR), dtype=np.float32)
              for path in sorted((kvasir_dir / "images").glob("*.jpg"))[:n]]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)


def test_graph_traced_at_one_size_matches_pytorch_at_another(kvasir_dir, tmp_path):
    """ORDER's token grid and its pooling are computed in the graph, not fixed at the traced size."""
    pytest.importorskip("onnxruntime")
    from nnunet_laworder.deployment.onnx_export import export_network
    from nnunet_laworder.deployment.onnx_runtime import OnnxNetwork

    torch.manual_seed(0)
    network = ORDER(3, 2, features_per_stage=(4, 8, 8, 8, 8), max_tokens=64).eval()
    for module in network.modules():  # PyTorch's default init: logits of order 1, which 1e-3 resolves
        if isinstance(module, nn.modules.conv._ConvNd):
            module.reset_parameters()
    trained_looking(network)  # attention strengths away from 0, so the token grid matters
    traced, other = (64, 64), (96, 80)
    assert attention_token_grids(network, (1, 3, *traced)) != attention_token_grids(network, (1, 3, *other))

    onnx_file = tmp_path / "order.onnx"
    export_network(network, kvasir_batch(kvasir_dir, traced)).save(onnx_file, external_data=False)
    x = kvasir_batch(kvasir_dir, other)
    with torch.no_grad():
        expected = network(x)
    difference = float((OnnxNetwork(onnx_file, threads=1)(x) - expected).abs().max())
    print(f"size {other}: max |logit difference| {difference:.2e} (logits up to {float(expected.abs().max()):.2f})")
    assert difference <= 1e-3


@pytest.mark.slow
def test_onnx_logits_match_pytorch_on_real_patches_at_two_sizes(exported, nnunet_folders):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_laworder.deployment.onnx_runtime import OnnxNetwork
    from nnunet_laworder.deployment.trained_model import TrainedFold

    _, raw, onnx_file, _ = exported
    predictor = TrainedFold(str(KVASIR_ID), CONFIGURATION, TRAINER, 0).load_predictor()
    network, patch = predictor.network, list(predictor.configuration_manager.patch_size)
    folder = nnunet_folders["nnUNet_preprocessed"] / raw.name / predictor.configuration_manager.data_identifier
    dataset = infer_dataset_class(str(folder))(str(folder))
    # 2D cases are stored as (C, 1, X, Y)
    cases = [np.asarray(dataset.load_case(identifier)[0])[:, 0] for identifier in sorted(dataset.identifiers)[:2]]

    other = [s + 16 for s in patch]  # another multiple of ORDER's total stride, with other token grids
    assert attention_token_grids(network, (1, cases[0].shape[0], *patch)) != \
        attention_token_grids(network, (1, cases[0].shape[0], *other))
    onnx_network = OnnxNetwork(onnx_file, threads=1)
    for size in (patch, other):
        # a real preprocessed patch of each case (zero-padded where the case is smaller, as nnU-Net pads)
        batch = np.zeros((len(cases), cases[0].shape[0], *size), dtype=np.float32)
        for i, data in enumerate(cases):
            crop = data[:, :size[0], :size[1]]
            batch[i, :, :crop.shape[1], :crop.shape[2]] = crop
        x = torch.from_numpy(batch)
        with torch.no_grad():
            expected = network(x)
        difference = float((onnx_network(x) - expected).abs().max())
        print(f"size {size}: max |logit difference| {difference:.2e} (logits up to {float(expected.abs().max()):.2f})")
        assert difference <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("change,message", [
    (["-f", "3"], "fold 3 not trained"),
    (["--checkpoint", "checkpoint_missing.pth"], "checkpoint_missing.pth not found"),
    (["-c", "2d_mkunet_T"], "has no configuration '2d_mkunet_T'"),  # the workflow module adds 2d_mkunet
    (["-d", "999"], "dataset 999 not found"),
])
def test_export_names_what_is_missing(exported, tmp_path, capsys, change, message):
    args = dict(zip(model_args()[::2], model_args()[1::2]))
    extra = []
    if change[0] in args:
        args[change[0]] = change[1]
    else:
        extra = change
    output = tmp_path / "model.onnx"
    assert main(["export", *[a for pair in args.items() for a in pair], *extra, "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not output.exists()
