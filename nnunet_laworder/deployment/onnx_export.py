"""``nnunet-laworder export``: a trained fold's network as an ONNX graph that onnxruntime runs.

The network is the one nnUNetv2_predict runs (the trainer's, no deep supervision, eval mode), exported by
torch's dynamo exporter (the TorchScript one is deprecated in torch 2.9+) with batch and spatial axes dynamic:
every shape the network derives from its input is computed in the graph. One exception: ORDER's token grid
(``networks.order.token_grid``) halves its axes in a Python loop that the exporter unrolls at the traced size, the
plans' patch size. The graph is exact there, which is all nnU-Net's sliding window feeds it, and at every size
whose attention stages halve their token grids the same way; elsewhere its token grid differs from PyTorch's.
"""
import builtins
import json
from pathlib import Path

import numpy as np
import torch
from onnxscript import INT64
from onnxscript import opset18 as op

from nnunet_laworder.deployment.onnx_runtime import onnx_session
from nnunet_laworder.deployment.trained_model import TrainedFold
from nnunet_laworder.errors import InputError

OPSET = 18  # the dynamo exporter's own opset; onnxruntime >= 1.14 runs it
METADATA_KEY = "nnunet_laworder"  # the model the graph came from, which predict checks


def onnx_round(x, ndigits=None):
    """``round(rho * n_tokens)`` (ORDER's top-k count) on a symbolic size: Python's round on a float and ONNX
    Round both round half to even. The exporter has no translation of its own for ``builtins.round``."""
    return op.Cast(op.Round(x), to=INT64.dtype)


def export_network(network: torch.nn.Module, example: torch.Tensor):
    """torch's ONNX program of ``network`` (eval mode, one output) traced at ``example``, batch and spatial axes
    dynamic. ``example`` needs a batch of at least 2: torch.export fixes an axis it traces at size 1."""
    dynamic = {axis: torch.export.Dim.DYNAMIC for axis in (0, *range(2, example.ndim))}
    return torch.onnx.export(network, (example,), dynamo=True, opset_version=OPSET, input_names=["data"],
                             output_names=["logits"], dynamic_shapes=(dynamic,),
                             custom_translation_table={builtins.round: onnx_round}, verbose=False)


def export_onnx(model: TrainedFold, output: Path) -> dict:
    """Write ``output`` and return its metadata, with the largest |onnxruntime - PyTorch| logit difference on a
    random patch (``max_abs_difference``)."""
    model.checkpoint_file()
    output = Path(output)
    if not output.parent.is_dir():
        raise InputError(f"folder {output.parent} of -o does not exist")
    predictor = model.load_predictor()
    network = predictor.network
    patch = [int(s) for s in predictor.configuration_manager.patch_size]
    channels = len(predictor.dataset_json["channel_names"])
    example = torch.randn(2, channels, *patch, generator=torch.Generator().manual_seed(0))
    program = export_network(network, example)
    metadata = {"dataset": predictor.plans_manager.dataset_name, "configuration": model.configuration,
                "trainer": model.trainer, "plans": model.plans, "fold": str(model.fold),
                "checkpoint": model.checkpoint, "traced_patch_size": patch, "opset": OPSET}
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(output, external_data=False)  # ORDER's weights are small: one self-contained file

    with torch.no_grad():
        expected = network(example[:1]).numpy()
    actual = onnx_session(output).run(None, {"data": example[:1].numpy()})[0]
    return {**metadata, "max_abs_difference": float(np.abs(actual - expected).max())}


def read_metadata(onnx_file: Path) -> dict:
    """What :func:`export_onnx` recorded in the file."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise InputError(f"{onnx_file} was not written by `nnunet-laworder export` (no {METADATA_KEY} metadata)")
    return json.loads(props[METADATA_KEY])
