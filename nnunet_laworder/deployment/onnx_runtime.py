"""onnxruntime computing a network exported by ``nnunet-laworder export``: a session on the CPU, a stand-in for the
network in nnU-Net's predictor, and forward-pass timing."""
import time
from pathlib import Path
from typing import List, Optional, Sequence

import onnxruntime
import torch
from torch import nn


def onnx_session(onnx_file: Path, threads: Optional[int] = None) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU; ``threads``: intra-op threads (default: onnxruntime's)."""
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


class OnnxNetwork(nn.Module):
    """Stands in for the network in nnU-Net's predictor: float32 numpy through onnxruntime, the logits back as
    a tensor on the input's device. No parameters: the weights are in the graph."""

    def __init__(self, onnx_file: Path, threads: Optional[int] = None):
        super().__init__()
        self.session = onnx_session(onnx_file, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().to("cpu", torch.float32).numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: data})[0]).to(x.device)


def onnx_forward_seconds(onnx_file: Path, input_shape: Sequence[int], repeats: int = 10, warmup: int = 2,
                         threads: Optional[int] = None) -> List[float]:
    """Seconds of each of ``repeats`` onnxruntime forward passes of a random float32 input (after ``warmup``
    untimed ones): the ONNX counterpart of a PyTorch forward latency."""
    network = OnnxNetwork(onnx_file, threads)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    seconds = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        network(x)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds
