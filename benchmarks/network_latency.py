"""CPU forward latency of ORDER, MK-UNet (T, base) and nnU-Net's default 2D U-Net for the 2D polyp patch.

    python benchmarks/network_latency.py [--patch 256 256] [--repeats N] [--threads T [T ...]] [--warmup W]
                                         [--onnx] [--json OUT]

All networks are built for the same patch with nnU-Net's pooling (3 input channels, 2 classes; nnU-Net plans
640 x 640 for Kvasir-SEG at full resolution, 256 x 256 is the default here) and timed in one run with
interleaved repetitions: every repetition runs each network once, round-robin, so drift in machine load hits
them all alike. Batch 1, eval mode, no deep supervision, ``torch.inference_mode``: as nnU-Net's predictor
runs it. ORDER is timed twice, with its fused inference forward and with the plain modules (``ORDER plain``);
``--onnx`` adds ORDER exported by ``nnunet-laworder export``'s exporter and run by onnxruntime at the same threads
(``ORDER onnxruntime``; the ``onnx`` extra). Prints a markdown table per thread count; ``--json`` also writes every
timing.
"""
import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nnunet_laworder.evaluation.benchmark import cpu_name
from nnunet_laworder.evaluation.complexity import build_network, count_gmacs, count_parameters, planned_topology
from nnunet_laworder.networks.blocks import set_fast_inference

INPUT_CHANNELS, NUM_CLASSES = 3, 2  # RGB endoscopy frames, background / polyp
NETWORKS = (("ORDER", "order", None), ("ORDER plain", "order", None), ("MK-UNet T", "mkunet", "T"),
            ("MK-UNet base", "mkunet", "base"), ("nnU-Net default", "nnunet", None))
ONNX_ROW = "ORDER onnxruntime"
PLAIN = ("ORDER plain",)  # rows run with the fused inference forward off
REFERENCE = "nnU-Net default"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, nargs=2, default=(256, 256), metavar=("Y", "X"))
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions per network")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward passes per network first")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="torch intra-op thread counts, each timed in turn")
    parser.add_argument("--onnx", action="store_true", help="also time ORDER in onnxruntime (the onnx extra)")
    parser.add_argument("--json", metavar="OUT", help="also write the settings and all timings here")
    return parser.parse_args()


def forward_seconds(net: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    net(x)
    return time.perf_counter() - start


def time_interleaved(nets: dict, x: torch.Tensor, warmup: int, repeats: int) -> dict:
    """Seconds per forward pass for every network, repetitions interleaved round-robin after a warm-up."""
    times = {name: [] for name in nets}
    with torch.inference_mode():
        for _ in range(warmup):
            for net in nets.values():
                net(x)
        for _ in range(repeats):
            for name, net in nets.items():
                times[name].append(forward_seconds(net, x))
    return times


def summarize(seconds: list) -> dict:
    q1, median, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    return {"median_ms": 1e3 * median, "iqr_ms": 1e3 * (q3 - q1)}


def markdown_table(rows: dict) -> str:
    ref = rows[REFERENCE]
    lines = ["| network | parameters | GMACs | latency ms (median) | IQR ms | speedup vs nnU-Net | "
             "nnU-Net params / params |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['parameters']:,} | {r['gmacs']:.3f} | {r['median_ms']:.1f} | "
                     f"{r['iqr_ms']:.1f} | {ref['median_ms'] / r['median_ms']:.1f}x | "
                     f"{ref['parameters'] / r['parameters']:.0f}x |")
    return "\n".join(lines)


def export_order(order: torch.nn.Module, patch) -> Path:
    """ORDER as an ONNX file in a new temporary folder, by the exporter of ``nnunet-laworder export``."""
    from nnunet_laworder.deployment.onnx_export import export_network

    path = Path(tempfile.mkdtemp(prefix="order_onnx_")) / "order.onnx"
    export_network(order, torch.randn(2, INPUT_CHANNELS, *patch)).save(path, external_data=False)
    return path


def main():
    args = parse_args()
    _, _, patch = planned_topology(2, args.patch)  # padded as nnU-Net pads it, so its U-Net can run it
    nets = {}
    for name, arch, variant in NETWORKS:
        nets[name] = build_network(arch, 2, INPUT_CHANNELS, NUM_CLASSES, patch, variant).eval()
        nets[name].decoder.deep_supervision = False
        set_fast_inference(nets[name], name not in PLAIN)
    complexity = {name: {"parameters": count_parameters(net), "gmacs": count_gmacs(net, (INPUT_CHANNELS, *patch))}
                  for name, net in nets.items()}
    settings = {"patch_size": list(patch), "input_channels": INPUT_CHANNELS, "num_classes": NUM_CLASSES,
                "batch_size": 1, "threads": args.threads, "device": "cpu", "cpu": cpu_name(),
                "torch": torch.__version__, "warmup": args.warmup, "repeats": args.repeats}
    runs = {}
    onnx_file = export_order(nets["ORDER"], patch) if args.onnx else None
    for threads in args.threads:
        torch.set_num_threads(threads)
        if onnx_file:
            from nnunet_laworder.deployment.onnx_runtime import OnnxNetwork

            nets[ONNX_ROW] = OnnxNetwork(onnx_file, threads)
            complexity[ONNX_ROW] = complexity["ORDER"]
        times = time_interleaved(nets, torch.randn(1, INPUT_CHANNELS, *patch), args.warmup, args.repeats)
        rows = {name: {**complexity[name], **summarize(times[name])} for name in nets}
        runs[threads] = {"results": rows, "times_s": times}
        print(f"CPU forward latency, patch {patch[0]} x {patch[1]}, batch 1, threads {threads}, "
              f"{settings['cpu']}, {args.warmup} warm-up + {args.repeats} interleaved repetitions\n")
        print(markdown_table(rows))
        print(f"\nORDER plain / fused: {rows['ORDER plain']['median_ms'] / rows['ORDER']['median_ms']:.2f}x\n")
    if onnx_file:
        shutil.rmtree(onnx_file.parent)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
