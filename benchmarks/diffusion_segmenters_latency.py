"""CPU sampling time per patch of the diffusion segmenters (SPAD, cDAL) next to ORDER's single forward pass.

    python benchmarks/diffusion_segmenters_latency.py [--patch 112 128] [--samples K] [--spad-steps S]
        [--cdal-timesteps T] [--repeats N] [--warmup W] [--threads T] [--json OUT]

Each network is built exactly as its nnU-Net trainer builds it (nnUNetTrainerSPAD / nnUNetTrainerCDAL defaults:
K = 4 samples, SPAD 10 DDIM steps, cDAL T = 4 posterior steps; the options override them) for a 2D RGB patch with
nnU-Net's strides, and timed as ``nnUNetv2_predict`` calls it: eval mode, no grad, one patch, K samples drawn as
one batch. nnU-Net's test-time mirroring multiplies these times by 4 in 2D. Timings are interleaved round-robin
(see network_latency.py). Prints a markdown table; ``--json`` also writes every timing.
"""
import argparse
import json

import torch
from torch import nn

from network_latency import cpu_name, summarize, time_interleaved
from nnunet_laworder.evaluation.complexity import build_network, count_gmacs, count_parameters, planned_topology
from nnunet_laworder.training.diffusion_seg_trainers import nnUNetTrainerCDAL, nnUNetTrainerSPAD

INPUT_CHANNELS, NUM_CLASSES = 3, 2  # RGB endoscopy frames, background / polyp


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, nargs=2, default=(112, 128), metavar=("Y", "X"),
                        help="default: the 2d patch nnU-Net plans for Kvasir-SEG downscaled to 128 px")
    parser.add_argument("--samples", type=int, default=nnUNetTrainerSPAD.num_samples, help="K")
    parser.add_argument("--spad-steps", type=int, default=nnUNetTrainerSPAD.sampling_steps)
    parser.add_argument("--cdal-timesteps", type=int, default=nnUNetTrainerCDAL.num_timesteps)
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per network")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per network first")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--json", metavar="OUT", help="also write the settings and all timings here")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    strides, _, patch = planned_topology(2, args.patch)
    strides = [list(s) for s in strides]
    # built as a trainer variant with these settings would build it (variants are subclasses)
    spad = type("SPADBench", (nnUNetTrainerSPAD,), {"num_samples": args.samples, "sampling_steps": args.spad_steps}
                ).build_network(nn.Conv2d, strides, INPUT_CHANNELS, NUM_CLASSES)
    cdal = type("CDALBench", (nnUNetTrainerCDAL,), {"num_samples": args.samples, "num_timesteps": args.cdal_timesteps}
                ).build_network(nn.Conv2d, strides, INPUT_CHANNELS, NUM_CLASSES)
    nets = {f"SPAD (K={args.samples}, {args.spad_steps} DDIM steps)": spad.eval(),
            f"cDAL (K={args.samples}, T={args.cdal_timesteps})": cdal.eval(),
            "ORDER (one forward)": build_network("order", 2, INPUT_CHANNELS, NUM_CLASSES, patch).eval()}
    calls = {name: (args.spad_steps, args.cdal_timesteps, 1)[i] for i, name in enumerate(nets)}
    times = time_interleaved(nets, torch.randn(1, INPUT_CHANNELS, *patch), args.warmup, args.repeats)
    rows = {name: {"parameters": count_parameters(net), "gmacs": count_gmacs(net, (INPUT_CHANNELS, *patch)),
                   "network_calls": calls[name], **summarize(times[name])} for name, net in nets.items()}
    settings = {"patch_size": list(patch), "input_channels": INPUT_CHANNELS, "num_classes": NUM_CLASSES,
                "samples": args.samples, "spad_steps": args.spad_steps, "cdal_timesteps": args.cdal_timesteps,
                "threads": torch.get_num_threads(), "device": "cpu", "cpu": cpu_name(), "torch": torch.__version__,
                "warmup": args.warmup, "repeats": args.repeats}
    print(f"CPU time per patch {patch[0]} x {patch[1]}, one patch (K samples batched), no mirroring, threads "
          f"{settings['threads']}, {settings['cpu']}, {args.warmup} warm-up + {args.repeats} interleaved "
          "repetitions\n")
    lines = ["| network | parameters | GMACs per patch | network calls | ms per patch (median) | IQR ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['parameters']:,} | {r['gmacs']:.2f} | {r['network_calls']} | "
                     f"{r['median_ms']:.0f} | {r['iqr_ms']:.0f} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "results": rows, "times_s": times}, f, indent=2)


if __name__ == "__main__":
    main()
