"""Claim: ORDER's training epoch and forward pass stay within 2.5x of their quiet time when one other CPU-bound
process shares the machine, at the plugin's thread default (``nnUNet_laworder_cpu_threads`` = 1); nnU-Net's own
choice on CPU (every core) is measured beside it.

    python benchmarks/shared_cpu_load.py -d 501 [-c 2d_order] [-tr nnUNetTrainerORDER_cpu] [--threads 1 2]

For each thread count, in one process: nnU-Net's own ``run_training`` of the trainer for ``--epochs`` epochs of
its schedule's iterations (data loading and augmentation included, a fresh network each time) and ``--forwards``
forward passes of one patch as ``nnUNetv2_predict`` runs them, first on the quiet machine, then with one busy
process (a single-threaded Python loop) running beside it. An epoch's time is nnU-Net's logged epoch time; the
first epoch (warm-up) is left out. Needs ``nnUNet_preprocessed`` with the dataset; models go to a temporary
``nnUNet_results``. Prints a table; ``--json`` writes the figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "while True: pass"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name (preprocessed)")
    parser.add_argument("-c", dest="configuration", default="2d_order")
    parser.add_argument("-tr", dest="trainer", default="nnUNetTrainerORDER_cpu")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                        help="torch threads to measure (default: 1, the plugin's default, and the CPU count, "
                             "nnU-Net's)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement, the first left out")
    parser.add_argument("--forwards", type=int, default=20, help="timed forward passes per measurement")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.forwards < 1 or min(args.threads) < 1:
        parser.error("--epochs must be at least 2, --forwards and --threads at least 1")
    return args


def measure(args, threads: int) -> dict:
    """Epoch and forward times (seconds) of the trainer at ``threads`` torch threads."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_laworder.evaluation.runner import timed
    from nnunet_laworder.training.nnunet_contract import set_nnunet_attributes

    os.environ["nnUNet_laworder_cpu_threads"] = str(threads)  # what the plugin's trainers read
    torch.set_num_threads(threads)  # nnU-Net's default network and the forward passes
    trainer = get_trainer_from_args(args.dataset, args.configuration, 0, args.trainer, args.plans,
                                    device=torch.device("cpu"))
    set_nnunet_attributes(trainer, num_epochs=args.epochs)
    trainer.run_training()
    logged = trainer.logger.get_value
    epochs = [logged("epoch_end_timestamps", e) - logged("epoch_start_timestamps", e) for e in range(1, args.epochs)]
    network = trainer.network
    network.eval()
    trainer.set_deep_supervision_enabled(False)
    image = torch.randn(1, trainer.num_input_channels, *trainer.configuration_manager.patch_size)
    with torch.inference_mode():
        network(image)
        forwards = [timed(trainer.device, lambda: network(image)) for _ in range(args.forwards)]
    return {"torch_threads": torch.get_num_threads(), "epoch_s": epochs, "forward_s": forwards,
            "epoch_s_median": statistics.median(epochs), "forward_ms_median": 1e3 * statistics.median(forwards)}


def main(argv=None) -> int:
    args = parse(argv)
    results = {"dataset": args.dataset, "configuration": args.configuration, "trainer": args.trainer,
               "cpu_count": os.cpu_count(), "busy_process": f"{sys.executable} -c '{BUSY}'", "rows": []}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["nnUNet_results"] = scratch  # read by nnunetv2.paths at import, below
        for threads in args.threads:
            row = {"threads": threads, "quiet": measure(args, threads)}
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                time.sleep(1.0)
                row["busy"] = measure(args, threads)
            finally:
                busy.kill()
                busy.wait()
            row["epoch_ratio"] = row["busy"]["epoch_s_median"] / row["quiet"]["epoch_s_median"]
            row["forward_ratio"] = row["busy"]["forward_ms_median"] / row["quiet"]["forward_ms_median"]
            results["rows"].append(row)
    lines = ["| torch threads | epoch quiet (s) | epoch busy (s) | busy / quiet | forward quiet (ms) | "
             "forward busy (ms) | busy / quiet |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        q, b = row["quiet"], row["busy"]
        lines.append(f"| {row['threads']} | {q['epoch_s_median']:.1f} | {b['epoch_s_median']:.1f} | "
                     f"{row['epoch_ratio']:.2f}x | {q['forward_ms_median']:.1f} | {b['forward_ms_median']:.1f} | "
                     f"{row['forward_ratio']:.2f}x |")
    print(f"{args.trainer} on {args.configuration} of {args.dataset}, {os.cpu_count()} CPUs, one busy process "
          f"beside it in the 'busy' columns (medians; epochs after the first)")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
