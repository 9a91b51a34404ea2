"""``nnunet-laworder law train``: train the mask-conditioned diffusion generator with LAW (or an ablation).

Writes ``$nnUNet_results/DatasetXXX/LAW__<weighting>__<configuration>/`` (trained on every training case) or its
``fold_F/`` subfolder (``-f F``: only fold F's training cases of nnU-Net's splits_final.json, never its validation
cases):

* ``checkpoint_latest.pth`` (every ``--save-every`` steps and at the end), ``checkpoint_final.pth`` (at the end):
  :func:`save_checkpoint` with the generator (EMA weights, what ``law synthesize`` samples with), and ``step``,
  ``model`` (the raw training weights), ``optimizer``, ``grad_scaler``, ``rng``, ``log`` (per-step losses),
  ``weight_maps``, ``args``, ``data`` (cases, validation cases, items);
* ``training_log.txt``, ``loss_curves.png`` (total, denoising, delta, Dice vs step);
* ``weight_maps.png`` (rows: snapshots from step 0 to the end; columns: a fixed set of conditioning masks and
  their LAW weight maps) and ``weight_maps.npz`` (``steps``, ``maps`` (S, K, *size), ``masks`` (K, *size)).

Randomness (batches, flips, noise, timesteps) is a function of ``(--seed, step, rank)``, so ``--resume``
continues exactly where the run stopped. Data parallel with ``torchrun --nproc_per_node N``: ``--batch-size`` is the
global batch, each rank trains on its share; only rank 0 writes.
"""
import argparse

WEIGHTING_CHOICES = ("law", "prior", "uniform")
OUTPUT_FILES = ("checkpoint_latest.pth", "checkpoint_final.pth", "training_log.txt", "loss_curves.png",
                "weight_maps.png", "weight_maps.npz")
# options that define the model, the data and the randomness: a resumed run keeps the checkpoint's values
RUN_SETTINGS = ("configuration", "fold", "plans", "weighting", "batch_size", "image_size", "layout", "lr",
                "weight_decay", "features", "time_dim", "warmup_steps", "r_max", "w_min", "w_max", "beta",
                "lambda_delta", "lambda_dice", "seed", "ema", "empty_slice_fraction", "grad_clip")


def _fold(value: str):
    if value == "all":
        return value
    try:
        fold = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"fold must be an integer or 'all', got {value!r}") from None
    if fold < 0:
        raise argparse.ArgumentTypeError(f"fold must be >= 0, got {fold}")
    return fold


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset", required=True, help="dataset id or name (planned with "
                        "nnUNetv2_plan_and_preprocess: LAW normalises intensities as the plans say)")
    parser.add_argument("-c", dest="configuration", default=None,
                        help="configuration of the plans whose normalisation is used (default: 2d, or 3d_fullres "
                             "when the plans have no 2d)")
    parser.add_argument("-f", dest="fold", type=_fold, default=None,
                        help="train on this fold's training cases only (nnU-Net's splits_final.json, created as "
                             "nnU-Net does when missing); default: every training case")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--weighting", choices=WEIGHTING_CHOICES, default="law",
                        help="law: prior x learned delta map (default); prior: ratio prior only; uniform: w = 1")
    parser.add_argument("--iterations", type=int, default=20000, help="training steps (default 20000)")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size (default 16)")
    parser.add_argument("--image-size", type=int, nargs="+", default=None, metavar="N",
                        help="generation size: 2 values for 2D / slice-wise layouts (default 128 128), 3 for "
                             "small 3D volumes (default: the median shape rounded up to the denoiser's divisor)")
    parser.add_argument("--layout", choices=("auto", "2d", "3d", "slices"), default="auto",
                        help="auto: 2D images -> 2d, 3D volumes of <= 64^3 voxels (median) -> 3d, larger 3D -> "
                             "slices along the out-of-plane axis")
    parser.add_argument("--empty-slice-fraction", type=float, default=0.1,
                        help="slice-wise layout: fraction of the slices without foreground kept (default 0.1)")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (default 1; 0: off)")
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128], metavar="N",
                        help="denoiser channels per stage (default 32 64 128)")
    parser.add_argument("--time-dim", type=int, default=128, help="timestep embedding width (default 128)")
    parser.add_argument("--warmup-steps", type=int, default=250,
                        help="steps over which the weights go from uniform to prior x delta (default 250)")
    parser.add_argument("--r-max", type=float, default=20.0, help="cap of the prior's background/lesion ratio")
    parser.add_argument("--w-min", type=float, default=0.1, help="lower clamp of the weights (default 0.1)")
    parser.add_argument("--w-max", type=float, default=10.0, help="upper clamp of the weights (default 10)")
    parser.add_argument("--beta", type=float, default=1.0, help="strength of the learned delta map (default 1)")
    parser.add_argument("--lambda-delta", type=float, default=0.1, help="weight of the delta loss (default 0.1)")
    parser.add_argument("--lambda-dice", type=float, default=0.1, help="weight of the Dice loss (default 0.1)")
    parser.add_argument("--ema", type=float, default=0.999,
                        help="EMA decay of the generator's weights that are saved for sampling (default 0.999, "
                             "warmed up as min(decay, (1 + step) / (10 + step)); 0: no EMA)")
    parser.add_argument("-device", "--device", dest="device", default="cuda",
                        help="cuda, cpu or mps, as nnU-Net's -device (default cuda); torchrun uses cuda:LOCAL_RANK")
    parser.add_argument("--seed", type=int, default=0, help="seed of batches, flips, noise and timesteps")
    parser.add_argument("--save-every", type=int, default=1000,
                        help="write checkpoint_latest.pth every this many steps (default 1000)")
    parser.add_argument("--snapshots", type=int, default=5,
                        help="weight-map snapshots from step 0 to the end, evenly spaced (default 5)")
    parser.add_argument("--log-every", type=int, default=None,
                        help="training_log.txt line every this many steps (default: iterations / 100)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run of this -d/-c/-f/--weighting from checkpoint_latest.pth with its "
                            "settings, optimizer state and step (only --iterations, -device and --save-every may "
                            "change); starts fresh when there is no checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace an existing run of the same folder")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")


def run(args) -> int:
    # everything heavy (torch, nnU-Net, matplotlib) is imported inside the functions: argparse stays fast
    return Trainer(args).train()


def run_folder(results: str, dataset_name: str, weighting: str, configuration: str, fold):
    from pathlib import Path

    folder = Path(results) / dataset_name / f"LAW__{weighting}__{configuration}"
    return folder / f"fold_{fold}" if fold is not None else folder


class _TrainingNet:
    """Factory of the module that one training step calls (wrapped in DDP when distributed)."""

    @staticmethod
    def build(denoiser, head, with_head: bool):
        from torch import nn

        class TrainingNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.denoiser = denoiser
                if with_head:
                    self.head = head

            def forward(self, noisy, masks, timesteps):
                eps, features = self.denoiser(noisy, masks, timesteps)
                if not with_head:
                    return eps, None, None
                delta, dice = self.head(features, masks, self.denoiser.embed_time(timesteps))
                return eps, delta, dice

        return TrainingNet()


class Trainer:
    SNAPSHOT_TIMESTEPS = (100, 300, 500, 700, 900)
    SNAPSHOT_MASKS = 4

    def __init__(self, args):
        self.args = args

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _distributed(self):
        import os

        import torch
        import torch.distributed as dist

        from nnunet_laworder.errors import InputError

        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        device = torch.device(self.args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("-device cuda: CUDA is not available here; use -device cpu (or mps)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError("-device mps: MPS is not available here; use -device cpu")
        if self.world_size > 1:
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.device = device
        self.is_main = self.rank == 0

    def _resolve(self):
        """Dataset name, configuration and run folder; on --resume, the checkpoint's settings."""
        import json
        import shutil

        import torch
        from nnunetv2.paths import nnUNet_results

        from nnunet_laworder.errors import InputError
        from nnunet_laworder.law.data import default_configuration
        from nnunet_laworder.planning.plans_file import preprocessed_dataset_folder

        args = self.args
        preprocessed = preprocessed_dataset_folder(str(args.dataset))
        plans_file = preprocessed / f"{args.plans}.json"
        if not plans_file.is_file():
            raise InputError(f"plans file {plans_file} not found; run nnUNetv2_plan_and_preprocess -d {args.dataset}")
        if args.configuration is None:
            args.configuration = default_configuration(json.loads(plans_file.read_text()))
        if not nnUNet_results.is_set():
            raise InputError("nnUNet_results is not set; export it as for nnUNetv2_train")
        self.folder = run_folder(nnUNet_results.get(), preprocessed.name, args.weighting, args.configuration,
                                 args.fold)
        existing = [name for name in OUTPUT_FILES if (self.folder / name).exists()]
        self.resumed = None
        if args.resume:
            latest = self.folder / "checkpoint_latest.pth"
            if latest.is_file():
                self.resumed = torch.load(latest, map_location="cpu", weights_only=False)
                for key in RUN_SETTINGS:
                    if key in self.resumed["args"]:
                        setattr(args, key, self.resumed["args"][key])
            elif self.is_main:
                print(f"law train: --resume: no checkpoint in {self.folder}, starting a new training")
        elif existing:
            if not args.overwrite:
                raise InputError(f"{self.folder} already holds a training ({', '.join(existing)}); "
                                 f"continue it with --resume or replace it with --overwrite")
            if self.is_main:
                for name in existing:
                    path = self.folder / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        self._check_args()

    def _check_args(self):
        from nnunet_laworder.errors import InputError

        a = self.args
        if a.iterations < 1:
            raise InputError(f"--iterations must be at least 1, got {a.iterations}")
        if a.batch_size < self.world_size:
            raise InputError(f"--batch-size {a.batch_size} is the global batch; it must be at least the number of "
                             f"processes ({self.world_size})")
        if len(a.features) < 2 or min(a.features) < 1:
            raise InputError(f"--features needs at least 2 positive widths, got {a.features}")
        if not 0 <= a.empty_slice_fraction <= 1:
            raise InputError(f"--empty-slice-fraction must be in [0, 1], got {a.empty_slice_fraction}")
        if not 0 < a.w_min <= 1 <= a.w_max:
            raise InputError(f"--w-min / --w-max must satisfy 0 < w_min <= 1 <= w_max, got {a.w_min}, {a.w_max}")
        if not 0 <= a.ema < 1:
            raise InputError(f"--ema must be in [0, 1), got {a.ema}")
        if a.save_every < 1 or a.snapshots < 2:
            raise InputError("--save-every must be >= 1 and --snapshots >= 2")

    def _setup(self):
        import copy

        import torch

        from nnunet_laworder.law.data import BatchSampler, load_training_data
        from nnunet_laworder.law.diffusion import training_scheduler
        from nnunet_laworder.law.generator import LAWGenerator
        from nnunet_laworder.law.weighting import WeightingConfig

        a = self.args
        divisor = 2 ** (len(a.features) - 1)
        self.data = load_training_data(a.dataset, a.configuration, a.fold, a.plans, a.image_size, a.layout, divisor,
                                       a.empty_slice_fraction, a.seed, progress=a.progress and self.is_main)
        a.image_size = list(self.data.layout.image_size)  # recorded explicitly: a resumed run gets the same data
        weighting = WeightingConfig(a.weighting, a.r_max, a.w_min, a.w_max, a.warmup_steps, a.beta, a.lambda_delta,
                                    a.lambda_dice)
        torch.manual_seed(a.seed)  # the initial weights
        self.generator = LAWGenerator.create(self.data.image_channels, self.data.layout, weighting,
                                             self.data.normaliser, tuple(a.features), a.time_dim).to(self.device)
        self.params = list(self.generator.modules().parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=a.lr, weight_decay=a.weight_decay)
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scheduler = training_scheduler()
        self.sampler = BatchSampler(self.data, a.batch_size, a.seed)
        self.ema = copy.deepcopy(self.generator.modules()).requires_grad_(False) if a.ema > 0 else None
        self.step, self.log, self.snapshots = 0, [], {"steps": [], "maps": []}
        if self.resumed is not None:
            self._restore(self.resumed)
            self.resumed = None
        net = _TrainingNet.build(self.generator.denoiser, self.generator.head, a.weighting == "law")
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.net = net
        self._choose_snapshot_masks()

    def _restore(self, checkpoint: dict):
        import random

        import numpy as np
        import torch

        from nnunet_laworder.errors import InputError

        layout = checkpoint["generator"]["layout"]
        if layout["image_size"] != self.data.layout.image_size or layout["labels"] != self.data.layout.labels:
            raise InputError(f"{self.folder / 'checkpoint_latest.pth'} was trained with image size "
                             f"{layout['image_size']} and labels {layout['labels']}; the data now gives "
                             f"{self.data.layout.image_size} and {self.data.layout.labels}")
        modules = self.generator.modules()
        modules.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("grad_scaler") and self.amp:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        if self.ema is not None:
            g = checkpoint["generator"]
            self.ema.load_state_dict({**{f"denoiser.{k}": v for k, v in g["denoiser"].items()},
                                      **{f"head.{k}": v for k, v in g["head"].items()}})
        self.step, self.log = int(checkpoint["step"]), list(checkpoint["log"])
        if self.step > self.args.iterations:
            raise InputError(f"{self.folder / 'checkpoint_latest.pth'} is at step {self.step}, beyond --iterations "
                             f"{self.args.iterations}")
        self.snapshots = {"steps": list(checkpoint["weight_maps"]["steps"]),
                          "maps": list(checkpoint["weight_maps"]["maps"])}
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if "python" in rng:
            random.setstate(rng["python"])

    # -- weight maps ----------------------------------------------------------------------------------------------

    def _choose_snapshot_masks(self):
        """A fixed set of training items with foreground (evenly spread over the items) to show weight maps of."""
        import numpy as np

        segs = self.data.segmentations
        with_fg = np.flatnonzero(segs.flatten(1).amax(1).numpy() > 0)
        pool = with_fg if len(with_fg) else np.arange(len(segs))
        k = min(self.SNAPSHOT_MASKS, len(pool))
        self.snapshot_items = [int(pool[i]) for i in np.linspace(0, len(pool) - 1, k).round().astype(int)]

    def weight_maps(self, step: int):
        """Per-pixel weights (K, *size) of the fixed masks at ``step``, averaged over a fixed set of timesteps."""
        import torch

        from nnunet_laworder.law.weighting import loss_weights

        index = torch.tensor(self.snapshot_items)
        images = self.data.images[index].to(self.device)
        onehot, fg = self.sampler.dataset.masks(self.data.segmentations[index])
        onehot, fg = onehot.to(self.device), fg.to(self.device)
        g = torch.Generator(device=self.device).manual_seed(12345)
        total = torch.zeros_like(fg)
        denoiser, head = self.generator.denoiser, self.generator.head
        was_training = denoiser.training
        denoiser.eval(), head.eval()
        with torch.no_grad():
            for t in self.SNAPSHOT_TIMESTEPS:
                timesteps = torch.full((len(index),), t, device=self.device, dtype=torch.long)
                noise = torch.randn(images.shape, generator=g, device=self.device)
                noisy = self.scheduler.add_noise(images, noise, timesteps)
                _, features = denoiser(noisy, onehot, timesteps)
                delta, _ = head(features, onehot, denoiser.embed_time(timesteps))
                total += loss_weights(self.generator.weighting, fg, delta.float(), step)
        denoiser.train(was_training), head.train(was_training)
        return (total / len(self.SNAPSHOT_TIMESTEPS))[:, 0].cpu().numpy()

    def snapshot_steps(self):
        import numpy as np

        n, total = self.args.snapshots, self.args.iterations
        return sorted(set(np.linspace(0, total, n).round().astype(int).tolist()))

    def _maybe_snapshot(self):
        if self.is_main and self.step in self.snapshot_steps() and self.step not in self.snapshots["steps"]:
            self.snapshots["steps"].append(self.step)
            self.snapshots["maps"].append(self.weight_maps(self.step))

    # -- the loop -------------------------------------------------------------------------------------------------

    def train_step(self):
        import torch

        from nnunet_laworder.law.diffusion import noisy_batch
        from nnunet_laworder.law.weighting import law_loss

        a = self.args
        images, masks, fg = self.sampler.batch(self.step, self.rank, self.world_size, self.device)
        g = torch.Generator(device=self.device).manual_seed(
            (a.seed * 1_000_003 + self.step) * 4099 + self.rank)
        noisy, noise, timesteps = noisy_batch(self.scheduler, images, g)
        with torch.autocast(self.device.type, enabled=self.amp):
            eps, delta, dice = self.net(noisy, masks, timesteps)
        loss, parts = law_loss(self.generator.weighting, noise, eps.float(), fg,
                               None if delta is None else delta.float(), None if dice is None else dice.float(),
                               self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if a.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, a.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            decay = min(a.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                for p_ema, p in zip(self.ema.parameters(), self.params):
                    p_ema.lerp_(p.detach(), 1 - decay)
        values = torch.stack([loss.detach(), parts["denoising"],
                              parts.get("delta", torch.zeros((), device=loss.device)),
                              parts.get("dice", torch.zeros((), device=loss.device))]).float()
        if self.world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(values)
            values /= self.world_size
        total, denoising, delta_loss, dice_loss = values.tolist()
        entry = {"step": self.step + 1, "loss": total, "denoising": denoising}
        if a.weighting == "law":
            entry.update(delta=delta_loss, dice=dice_loss)
        self.step += 1
        return entry

    def train(self) -> int:
        import time

        from tqdm import tqdm

        self._distributed()
        self._resolve()
        self._setup()
        a = self.args
        start = self.step
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_log_header(start)
        self._maybe_snapshot()
        log_every = a.log_every or max(1, a.iterations // 100)
        bar = tqdm(total=a.iterations, initial=start, desc="law train", disable=not (a.progress and self.is_main),
                   dynamic_ncols=True)
        t0, steps_timed = time.perf_counter(), 0
        while self.step < a.iterations:
            entry = self.train_step()
            steps_timed += 1
            entry["seconds"] = time.perf_counter() - t0
            self.log.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            self._maybe_snapshot()
            if self.is_main and (self.step % log_every == 0 or self.step == a.iterations):
                self._log_line(entry, steps_timed / max(entry["seconds"], 1e-9))
            if self.step % a.save_every == 0 and self.step < a.iterations:
                self.save("checkpoint_latest.pth")
        bar.close()
        self.save("checkpoint_latest.pth", final=True)
        self.save("checkpoint_final.pth", final=True)
        if self.is_main:
            print(f"law train: {a.iterations} steps done; generator in {self.folder / 'checkpoint_final.pth'}")
        if self.world_size > 1:
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()
        return 0

    # -- writing --------------------------------------------------------------------------------------------------

    def _sampling_generator(self):
        """The generator to save for sampling: the EMA weights when EMA is on."""
        import copy

        if self.ema is None:
            return self.generator
        g = copy.copy(self.generator)
        g.denoiser, g.head = self.ema["denoiser"], self.ema["head"]
        return g

    def save(self, name: str, final: bool = False):
        import random

        import numpy as np
        import torch

        from nnunet_laworder.law.generator import save_checkpoint

        if not self.is_main:
            return
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "scheme": "batches, flips, noise and timesteps are drawn from generators seeded by (seed, step, rank)"}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.folder / name, self._sampling_generator(), step=self.step,
                        model=self.generator.modules().state_dict(), optimizer=self.optimizer.state_dict(),
                        grad_scaler=self.scaler.state_dict() if self.amp else None, rng=rng, log=self.log,
                        weight_maps={"steps": self.snapshots["steps"], "maps": self.snapshots["maps"],
                                     "items": [self.data.items[i] for i in self.snapshot_items],
                                     "timesteps": list(self.SNAPSHOT_TIMESTEPS)},
                        args={k: getattr(self.args, k) for k in RUN_SETTINGS},
                        data={"dataset": self.data.dataset_name, "configuration": self.data.configuration,
                              "fold": self.args.fold, "cases": self.data.cases,
                              "validation_cases": self.data.validation_cases, "items": self.data.items},
                        world_size=self.world_size, final=final)
        self._plot_losses()
        self._write_weight_maps()

    def _write_log_header(self, start: int):
        import datetime

        d = self.data
        lines = [f"{datetime.datetime.now().isoformat(timespec='seconds')} "
                 + (f"resumed at step {start}" if start else "new training"),
                 f"dataset {d.dataset_name}, configuration {d.configuration}, plans {self.args.plans}, fold "
                 f"{self.args.fold if self.args.fold is not None else 'none (all training cases)'}",
                 f"layout {d.layout.extra['layout']} (dim {d.layout.dim}, size {d.layout.image_size}, slice axis "
                 f"{d.layout.slice_axis}), labels {d.layout.labels}, {len(d.cases)} cases -> {len(d)} training "
                 f"images, {len(d.validation_cases)} validation cases excluded",
                 f"weighting {self.args.weighting}: {self.generator.weighting}",
                 f"device {self.device}, processes {self.world_size}, mixed precision {self.amp}",
                 "settings " + ", ".join(f"{k}={getattr(self.args, k)}" for k in RUN_SETTINGS)]
        with open(self.folder / "training_log.txt", "a") as f:
            f.write("\n".join(lines) + "\n")

    def _log_line(self, entry: dict, its: float):
        parts = " ".join(f"{k} {entry[k]:.5f}" for k in ("loss", "denoising", "delta", "dice") if k in entry)
        with open(self.folder / "training_log.txt", "a") as f:
            f.write(f"step {entry['step']}/{self.args.iterations} {parts} ({its:.2f} it/s)\n")

    def _plot_losses(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        keys = [k for k in ("loss", "denoising", "delta", "dice") if self.log and k in self.log[-1]]
        if not keys:
            return
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            steps = np.array([e["step"] for e in self.log if key in e])
            values = np.array([e[key] for e in self.log if key in e])
            ax.plot(steps, values, alpha=0.3, lw=0.8)
            window = max(1, len(values) // 50)
            if window > 1:
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1:], smooth, lw=1.5)
            ax.set_title({"loss": "total"}.get(key, key)), ax.set_xlabel("step")
            if key in ("loss", "denoising") and values.min() > 0:
                ax.set_yscale("log")
        fig.suptitle(f"LAW training ({self.args.weighting}), {self.data.dataset_name}")
        fig.tight_layout()
        fig.savefig(self.folder / "loss_curves.png", dpi=100)
        plt.close(fig)

    def _display_slice(self, array, mask):
        """2D view of a map: itself, or for 3D the slice (axis 0) with the most foreground."""
        if array.ndim == 2:
            return array
        return array[int(mask.reshape(mask.shape[0], -1).sum(1).argmax())]

    def _write_weight_maps(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.colors import LogNorm

        if not self.snapshots["steps"]:
            return
        order = np.argsort(self.snapshots["steps"])
        steps = np.array(self.snapshots["steps"])[order]
        maps = np.stack([self.snapshots["maps"][i] for i in order])  # (S, K, *size)
        masks = (self.data.segmentations[self.snapshot_items] > 0).numpy()
        np.savez_compressed(self.folder / "weight_maps.npz", steps=steps, maps=maps, masks=masks,
                            items=np.array([self.data.items[i] for i in self.snapshot_items]))
        k = len(self.snapshot_items)
        fig, axes = plt.subplots(len(steps) + 1, k, figsize=(2.2 * k, 2.2 * (len(steps) + 1)), squeeze=False)
        # a log colour scale, from the clamps: background (~0.5-1) and lesion (~2-10) weights both stay visible
        norm = LogNorm(vmin=self.generator.weighting.w_min, vmax=self.generator.weighting.w_max)
        for j in range(k):
            axes[0, j].imshow(self._display_slice(masks[j], masks[j]), cmap="gray")
            axes[0, j].set_title(self.data.items[self.snapshot_items[j]][:14], fontsize=7)
            for i, step in enumerate(steps):
                ax = axes[i + 1, j]
                image = ax.imshow(self._display_slice(maps[i, j], masks[j]), cmap="magma", norm=norm)
                ax.contour(self._display_slice(masks[j], masks[j]).astype(float), levels=[0.5], colors="cyan",
                           linewidths=0.5)
        for i, step in enumerate(steps):
            axes[i + 1, 0].set_ylabel(f"step {step}", fontsize=8)
        axes[0, 0].set_ylabel("mask", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(f"LAW weight maps ({self.args.weighting}; mean 1 per image, log scale)", fontsize=9)
        fig.tight_layout()
        fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.6, label="weight")
        fig.savefig(self.folder / "weight_maps.png", dpi=100)
        plt.close(fig)


def main(argv=None) -> int:
    """``python -m nnunet_laworder.law.train ...``: the same command, for ``torchrun -m`` (multi-GPU)."""
    import sys

    from nnunet_laworder.errors import InputError

    parser = argparse.ArgumentParser(prog="nnunet-laworder law train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args) or 0
    except InputError as e:
        print(f"nnunet-laworder law train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys

    sys.exit(main())
