"""``nnunet-laworder export``: a trained fold's network as an ONNX graph that onnxruntime runs.

The network is the one nnUNetv2_predict runs (the trainer's, no deep supervision, eval mode), exported by
torch's dynamo exporter (the TorchScript one is deprecated in torch 2.9+) with batch and spatial axes dynamic:
every shape the network derives from its input is computed in the graph, ORDER's token grid
(``networks.order.token_grid``, closed-form on tensors for this) and the pooling to it included, so the graph
traced at the plans' patch size matches PyTorch at every size.
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


def onnx_adaptive_avg_pool(x, output_size):
    """ATen's adaptive average pooling to sizes computed in the graph (ORDER's token grid) as one product with an
    averaging matrix per spatial axis: the exporter has no translation of its own, and PyTorch's decomposition
    branches on the traced sizes."""
    rank = len(x.shape)
    for k, axis in enumerate(range(2, rank)):
        swap = list(range(rank))  # the axis moved last and back: the swap is its own inverse
        swap[axis], swap[-1] = swap[-1], swap[axis]
        size = op.Squeeze(op.Shape(x, start=axis, end=axis + 1))
        bins = op.Gather(output_size, op.Constant(value_int=k))
        x = op.Transpose(op.MatMul(op.Transpose(x, perm=swap), averaging_matrix(x, size, bins)), perm=swap)
    return x


def averaging_matrix(like, size, bins):
    """(size, bins): column i averages positions floor(i size / bins) to ceil((i + 1) size / bins) - 1, the bins of
    adaptive pooling, in the dtype of ``like``."""
    one = op.Constant(value_int=1)
    index = op.Range(op.Constant(value_int=0), bins, one)
    start = op.Div(op.Mul(index, size), bins)
    end = op.Div(op.Sub(op.Add(op.Mul(op.Add(index, one), size), bins), one), bins)
    position = op.Unsqueeze(op.Range(op.Constant(value_int=0), size, one), op.Constant(value_ints=[1]))
    inside = op.And(op.GreaterOrEqual(position, start), op.Less(position, end))
    return op.Div(op.CastLike(inside, like), op.CastLike(op.Sub(end, start), like))


def export_network(network: torch.nn.Module, example: torch.Tensor):
    """torch's ONNX program of ``network`` (eval mode, one output) traced at ``example``, batch and spatial axes
    dynamic. ``example`` needs a batch of at least 2: torch.export fixes an axis it traces at size 1."""
    dynamic = {axis: torch.export.Dim.DYNAMIC for axis in (0, *range(2, example.ndim))}
    return torch.onnx.export(network, (example,), dynamo=True, opset_version=OPSET, input_names=["data"],
                             output_names=["logits"], dynamic_shapes=(dynamic,),
                             custom_translation_table={
                                 builtins.round: onnx_round,
                                 torch.ops.aten._adaptive_avg_pool2d.default: onnx_adaptive_avg_pool,
                                 torch.ops.aten._adaptive_avg_pool3d.default: onnx_adaptive_avg_pool},
                             verbose=False)


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
