"""Peak memory of one model's forward pass and training step, measured in a child process of its own.

On CUDA ``torch.cuda.max_memory_allocated``; on CPU (Linux) the peak RSS (``VmHWM``, reset after the child's
imports) above the RSS at that point, so the interpreter, torch and nnU-Net do not count; ``ru_maxrss`` would not
do, it cannot be reset and Linux carries it over from the forking parent.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op

from nnunet_laworder.evaluation.models import ModelIdentity
from nnunet_laworder.evaluation.runner import Runner, synchronize
from nnunet_laworder.nnunet_folders import read_json

MEMORY_STEPS = 3  # training steps per memory child: the optimiser state exists from the first, the peak by the second


def proc_status_bytes(field: str) -> Optional[int]:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS and return that (the baseline of a memory child).

    The imports peak above the RSS they leave behind; without the reset a small network would never raise the
    high-water mark. Linux resets it on writing 5 to /proc/self/clear_refs."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        raise RuntimeError("peak RSS cannot be reset here (no writable /proc/self/clear_refs); run with "
                           "--no-memory") from None
    return proc_status_bytes("VmRSS")


def load_kernels(device, dim: int) -> None:
    """A tiny convolution forward and backward, so that the libraries' one-off memory (oneDNN, cuDNN handles)
    falls into the baseline rather than onto the first network measured."""
    conv = convert_dim_to_conv_op(dim)(1, 1, 3).to(device)
    conv(torch.zeros(1, 1, *[8] * dim, device=device)).sum().backward()


def memory_child(config: dict) -> dict:
    """Runs in a fresh interpreter for one model: peak memory of forward passes, then of training steps."""
    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train sets it
    model = ModelIdentity(config["trainer"], config["plans"], config["configuration"])
    plans = read_json(config["plans_file"])
    dataset_json = read_json(config["dataset_json"])
    with tempfile.TemporaryDirectory() as scratch:
        runner = Runner(model, plans, dataset_json, device, config["batch_size"], Path(scratch))
        load_kernels(runner.device, len(runner.patch_size))
        baseline = reset_peak_rss() if device.type == "cpu" else None
        runner.build(count_cost=False)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(2):
            runner.forward()
        synchronize(runner.device)
        forward_peak = torch.cuda.max_memory_allocated(runner.device) if device.type == "cuda" else \
            proc_status_bytes("VmHWM")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(runner.device)
        for _ in range(MEMORY_STEPS):
            runner.train_step()
        synchronize(runner.device)
        train_peak = torch.cuda.max_memory_allocated(runner.device) if device.type == "cuda" else \
            proc_status_bytes("VmHWM")
    if device.type == "cpu":
        return {"kind": "cpu_peak_rss_above_baseline", "baseline_rss_bytes": baseline, "peak_rss_bytes": train_peak,
                "forward_peak_bytes": forward_peak - baseline, "train_peak_bytes": train_peak - baseline}
    return {"kind": "cuda_max_allocated", "forward_peak_bytes": forward_peak, "train_peak_bytes": train_peak}


def measure_memory(model: ModelIdentity, plans_file: Path, dataset_json_file: Path, device, threads: int,
                   batch_size: Optional[int]) -> dict:
    """:func:`memory_child` in a fresh interpreter (its peak is then this model's alone)."""
    config = {"trainer": model.trainer, "plans": model.plans, "configuration": model.configuration,
              "plans_file": str(plans_file), "dataset_json": str(dataset_json_file), "device": str(device),
              "threads": threads, "batch_size": batch_size}
    code = ("import json, sys; from nnunet_laworder.evaluation.memory import memory_child; "
            "print(json.dumps(memory_child(json.loads(sys.stdin.read()))))")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(config), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the memory measurement of {model.identifier} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
