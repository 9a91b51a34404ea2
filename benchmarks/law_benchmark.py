"""Cost of LAW: training step time and peak memory of weighting ``law`` vs ``uniform``, and sampling throughput.

    python benchmarks/law_benchmark.py [--sizes 64 128] [--batch 8] [--steps 4] [--repeats 3] [--device cpu]
        [--sample-sizes 64 256] [--sample-batches 1 4] [--sample-steps 50] [--max-timed-sample-steps 10]
        [--no-memory] [--json OUT]

* Training step: ``law train``'s own step (``law.training_step.training_step`` on its ``TrainingNet``: the
  denoiser, plus LAW's delta / Dice head for ``law`` only; ``law_loss``; backward; gradient clip 1; AdamW 2e-4;
  EMA 0.999, warmed up as in training), the same denoiser (``LAWGenerator.create``, default widths 32 64 128,
  random weights) and the same batch (RGB images, one-hot masks of random ellipses) for both weightings, at a
  step past the weight warm-up (the delta map is on). Both weightings are timed in ONE run with interleaved
  repetitions: each repetition runs ``--steps`` steps of every configuration in turn (order alternating), after
  untimed warm-up steps; the table shows the median over repetitions of the mean step time, and the ratio
  law / uniform (goal: at most 1.15).
* Peak memory: CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps (reset per configuration). CPU:
  one child process per configuration (its ``VmHWM``, the peak RSS of a process that ran only that configuration;
  in-process deltas do not work, the high-water mark never goes down, and ``ru_maxrss`` is no help either: Linux
  carries it over from the forking parent), measured before the timings: its peak RSS, and the
  growth of the peak over the training steps (peak after the steps minus peak after building the model and the
  batch: what the step itself needs).
* Work: FLOPs of one step (forward + backward) from ``torch.utils.flop_counter``, independent of machine load.
* Sampling: DDIM (``law.diffusion.sample``, 50 steps by default) with the denoiser in eval mode, images per
  second at each size and batch. Where ``--max-timed-sample-steps`` is below ``--sample-steps`` (large images on
  CPU) the run times that many steps and scales linearly to the full count (each DDIM step is one denoiser
  forward pass; the table says so).

Prints a markdown table; ``--json`` also writes every timing and the settings.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from nnunet_laworder.evaluation.benchmark import cpu_name
from nnunet_laworder.law.diffusion import sample, sampling_scheduler, training_scheduler
from nnunet_laworder.law.generator import Layout, LAWGenerator
from nnunet_laworder.law.intensity import ChannelNormalisation, IntensityNormaliser
from nnunet_laworder.law.training_step import TrainingNet, training_step
from nnunet_laworder.law.weighting import WeightingConfig

WEIGHTINGS = ("law", "uniform")
IMAGE_CHANNELS = 3
STEP_PAST_WARMUP = 1000  # > the default 250 warm-up steps: the full LAW weights are computed
LR, GRAD_CLIP, EMA = 2e-4, 1.0, 0.999  # law train's defaults


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="training image sizes")
    parser.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration per repetition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration first")
    parser.add_argument("--sample-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--sample-batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--max-timed-sample-steps", type=int, default=None,
                        help="time at most this many DDIM steps at sizes above 64 and scale linearly "
                             "(default: 10 on CPU, all on CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", metavar="OUT", help="also write the settings and all timings here")
    parser.add_argument("--memory-child", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_generator(weighting: str, size: int, device) -> LAWGenerator:
    torch.manual_seed(0)  # the same initial denoiser for both weightings
    normaliser = IntensityNormaliser([ChannelNormalisation("RGBTo0_1Normalization", 0, 1, 0, 255)] * IMAGE_CHANNELS)
    return LAWGenerator.create(IMAGE_CHANNELS, Layout(2, [size, size], [1]), WeightingConfig(weighting),
                               normaliser).to(device)


def make_batch(batch: int, size: int, device, seed: int = 0):
    """RGB images in [-1, 1] and one-hot masks of random ellipses (~15% foreground, as Kvasir-SEG)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, IMAGE_CHANNELS, size, size), generator=g) * 2 - 1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    masks = []
    for _ in range(batch):
        cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
        ry, rx = (0.3 + 0.3 * torch.rand(2, generator=g)).tolist()
        masks.append((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float())
    masks = torch.stack(masks)[:, None]
    return images.to(device), masks.to(device), masks.to(device)  # one label: one-hot == union foreground


class StepRunner:
    """One configuration: ``law train``'s step on a fixed batch."""

    def __init__(self, weighting: str, size: int, batch: int, device):
        self.device = torch.device(device)
        self.generator = make_generator(weighting, size, self.device)
        self.net = TrainingNet(self.generator.denoiser, self.generator.head, weighting == "law")
        self.params = list(self.generator.modules().parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=LR)
        self.ema = copy.deepcopy(self.generator.modules()).requires_grad_(False)
        self.scheduler = training_scheduler()
        self.images, self.masks, self.fg = make_batch(batch, size, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")  # as law train: AMP on CUDA
        self.step_count = 0

    def step(self) -> None:
        g = torch.Generator(device=self.device).manual_seed(self.step_count)
        loss, _ = training_step(self.net, self.generator.weighting, self.scheduler, self.optimizer, self.scaler,
                                self.params, self.images, self.masks, self.fg, STEP_PAST_WARMUP, g, GRAD_CLIP,
                                self.ema, EMA)
        loss.item()  # the trainer logs the loss every step: a synchronisation point on CUDA
        self.step_count += 1

    def timed(self, steps: int) -> float:
        """Mean seconds per step over ``steps`` steps."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - start) / steps


def time_training(args) -> dict:
    """Interleaved: every repetition runs each (size, weighting) in turn, the order alternating."""
    runners = {(size, w): StepRunner(w, size, args.batch, args.device) for size in args.sizes for w in WEIGHTINGS}
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()
    times = {key: [] for key in runners}
    peaks = {}
    for rep in range(args.repeats):
        keys = list(runners) if rep % 2 == 0 else list(reversed(runners))
        for key in keys:
            cuda = runners[key].device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats(runners[key].device)
            times[key].append(runners[key].timed(args.steps))
            if cuda:
                peaks[key] = max(peaks.get(key, 0), torch.cuda.max_memory_allocated(runners[key].device))
    return {"times": times, "cuda_peak_bytes": peaks}


def peak_rss_bytes() -> int:
    """Peak RSS of this process: ``VmHWM`` of /proc/self/status on Linux (per address space, so it starts afresh
    in an exec'd child, unlike ``ru_maxrss``, which Linux carries over from the forking parent), else
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def memory_child(config: dict) -> dict:
    torch.set_num_threads(config["threads"])
    runner = StepRunner(config["weighting"], config["size"], config["batch"], "cpu")
    before = peak_rss_bytes()
    for _ in range(config["steps"]):
        runner.step()
    after = peak_rss_bytes()
    return {"peak_rss_bytes": after, "step_growth_bytes": after - before}


def measure_cpu_memory(args) -> dict:
    """Peak RSS of one child process per configuration (interleaved order, like the timings)."""
    results = {}
    keys = [(size, w) for size in args.sizes for w in WEIGHTINGS]
    for key in keys:
        size, weighting = key
        config = {"weighting": weighting, "size": size, "batch": args.batch, "steps": 3, "threads": args.threads}
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(config)],
                             capture_output=True, text=True, check=True)
        results[key] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def step_gflops(weighting: str, size: int, batch: int) -> float:
    """GFLOPs of one training step's forward + backward (``torch.utils.flop_counter``: convolutions and matmuls;
    2 FLOPs per multiply-add), a load-independent measure of the extra work of LAW's head."""
    from torch.utils.flop_counter import FlopCounterMode

    runner = StepRunner(weighting, size, batch, "cpu")
    with FlopCounterMode(display=False) as counter:
        runner.step()
    return counter.get_total_flops() / 1e9


def time_sampling(args) -> list:
    rows = []
    device = torch.device(args.device)
    limit = args.max_timed_sample_steps
    if limit is None:
        limit = 10 if device.type == "cpu" else args.sample_steps
    for size in args.sample_sizes:
        generator = make_generator("law", size, device)
        generator.denoiser.eval()
        scheduler = sampling_scheduler(training_scheduler(), "ddim")
        for batch in args.sample_batches:
            _, masks, _ = make_batch(batch, size, device, seed=1)
            steps = args.sample_steps if size <= 64 else min(args.sample_steps, limit)
            sample(generator.denoiser, masks, scheduler, steps=2)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            sample(generator.denoiser, masks, scheduler, steps=steps)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            measured = time.perf_counter() - start
            seconds = measured * args.sample_steps / steps
            rows.append({"size": size, "batch": batch, "ddim_steps": args.sample_steps, "timed_steps": steps,
                         "seconds_per_batch": seconds, "images_per_second": batch / seconds,
                         "scaled": steps != args.sample_steps})
    return rows


def mib(x) -> str:
    return f"{x / 2 ** 20:.0f} MiB"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    device = torch.device(args.device)
    started = time.time()
    # memory first: the children are measured while this process is still small
    memory = {} if args.no_memory or device.type == "cuda" else measure_cpu_memory(args)
    flops = {(size, w): step_gflops(w, size, args.batch) for size in args.sizes for w in WEIGHTINGS}
    training = time_training(args)
    sampling = time_sampling(args)

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{cpu_name()}, {args.threads} torch threads"
    lines = [f"LAW cost on {hardware} (torch {torch.__version__}); denoiser widths 32 64 128; batch {args.batch}; "
             f"median of {args.repeats} interleaved repetitions x {args.steps} steps", "",
             "| size | weighting | step time (ms) | law / uniform (time) | GFLOP / step | law / uniform (FLOPs) "
             "| peak memory | peak growth in the step |",
             "|---|---|---|---|---|---|---|---|"]
    report = {"settings": {k: v for k, v in vars(args).items() if k != "memory_child"}, "hardware": hardware,
              "torch": torch.__version__, "training": [], "sampling": sampling}
    for size in args.sizes:
        medians = {w: statistics.median(training["times"][(size, w)]) for w in WEIGHTINGS}
        ratio = medians["law"] / medians["uniform"]
        flop_ratio = flops[(size, "law")] / flops[(size, "uniform")]
        for w in WEIGHTINGS:
            key = (size, w)
            if device.type == "cuda":
                peak, growth = training["cuda_peak_bytes"].get(key), None
                peak_text, growth_text = (mib(peak) + " (CUDA max allocated)") if peak else "-", "-"
            elif key in memory:
                peak, growth = memory[key]["peak_rss_bytes"], memory[key]["step_growth_bytes"]
                peak_text, growth_text = mib(peak) + " (RSS)", mib(growth)
            else:
                peak = growth = None
                peak_text = growth_text = "-"
            lines.append(f"| {size}x{size} | {w} | {medians[w] * 1000:.1f} | "
                         f"{f'{ratio:.3f}' if w == 'law' else '1'} | {flops[key]:.2f} | "
                         f"{f'{flop_ratio:.3f}' if w == 'law' else '1'} | {peak_text} | {growth_text} |")
            report["training"].append({"size": size, "weighting": w, "batch": args.batch,
                                       "step_seconds": training["times"][key], "median_step_seconds": medians[w],
                                       "ratio_law_to_uniform": ratio, "gflops_per_step": flops[key],
                                       "flop_ratio_law_to_uniform": flop_ratio, "peak_memory_bytes": peak,
                                       "peak_growth_bytes": growth,
                                       "memory_kind": "cuda_max_allocated" if device.type == "cuda" else "rss"})
    lines += ["", f"Sampling throughput (DDIM {args.sample_steps} steps, denoiser in eval mode):", "",
              "| size | batch | s / batch | images / s | note |", "|---|---|---|---|---|"]
    for row in sampling:
        note = f"timed {row['timed_steps']} steps, scaled x{row['ddim_steps'] / row['timed_steps']:g}" \
            if row["scaled"] else ""
        lines.append(f"| {row['size']}x{row['size']} | {row['batch']} | {row['seconds_per_batch']:.2f} | "
                     f"{row['images_per_second']:.3f} | {note} |")
    report["wall_seconds"] = time.time() - started
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
