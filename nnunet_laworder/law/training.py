"""``law train``: train the mask-conditioned diffusion generator with LAW (or an ablation).

Writes ``$nnUNet_results/DatasetXXX/LAW__<weighting>__<configuration>/`` (trained on every training case) or its
``fold_F/`` subfolder (``-f F``: only fold F's training cases of nnU-Net's splits_final.json, never its validation
cases):

* ``checkpoint_latest.pth`` (every ``--save-every`` steps and at the end), ``checkpoint_final.pth`` (at the end):
  :func:`save_checkpoint` with the generator (EMA weights, what ``law synthesize`` samples with), and ``step``,
  ``model`` (the raw training weights), ``optimizer``, ``grad_scaler``, ``rng``, ``log`` (per-step losses),
  ``weight_maps``, ``args`` (the :class:`RunSettings`), ``data`` (cases, validation cases, items);
* ``training_log.txt``, and the figures of :mod:`~nnunet_laworder.law.training_figures` (``loss_curves.png``,
  ``weight_maps.png``, ``weight_maps.npz``).

Randomness (batches, flips, noise, timesteps) is a function of ``(seed, step, rank)``, so ``resume`` continues
exactly where the run stopped. Data parallel with ``torchrun --nproc_per_node N -m nnunet_laworder.cli law train``:
``batch_size`` is the global batch, each rank trains on its share; only rank 0 writes.
"""
import copy
import datetime
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.data import BatchSampler, load_training_data
from nnunet_laworder.law.diffusion import training_scheduler
from nnunet_laworder.law.generator import LAWGenerator, read_checkpoint, save_checkpoint
from nnunet_laworder.law.options import INPAINT, WHOLE
from nnunet_laworder.law.training_figures import plot_loss_curves, write_weight_maps
from nnunet_laworder.law.training_step import (SNAPSHOT_TIMESTEPS, TrainingNet, snapshot_items, snapshot_steps,
                                               training_step, weight_maps)
from nnunet_laworder.law.weighting import WeightingConfig
from nnunet_laworder.nnunet_folders import (DEFAULT_PLANS, default_configuration, law_run_folder, load_plans,
                                            preprocessed_dataset_folder, resolve_device)

OUTPUT_FILES = ("checkpoint_latest.pth", "checkpoint_final.pth", "training_log.txt", "loss_curves.png",
                "weight_maps.png", "weight_maps.npz")


@dataclass(frozen=True)
class RunSettings:
    """What defines the model, the data and the randomness of a run: a resumed run keeps the checkpoint's."""
    configuration: str
    fold: Union[int, str, None]
    plans: str
    weighting: str
    batch_size: int
    image_size: Optional[Tuple[int, ...]]  # None: the layout's default (recorded once the data is read)
    layout: str
    mode: str  # inpaint (lesion windows at the source's resolution) or whole (images resized to image_size)
    lr: float
    weight_decay: float
    features: Tuple[int, ...]
    time_dim: int
    warmup_steps: int
    r_max: float
    w_min: float
    w_max: float
    beta: float
    lambda_delta: float
    lambda_dice: float
    seed: int
    ema: float
    empty_slice_fraction: float
    grad_clip: float

    def record(self) -> dict:
        """As the checkpoint's ``args`` and the log store them (sequences as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def resumed(self, recorded: dict) -> "RunSettings":
        """New settings: these, with the values a checkpoint recorded in their place."""
        names = {f.name for f in fields(self)}
        return replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()
                                if k in names})


def check_settings(s: RunSettings, iterations: int, save_every: int, snapshots: int, world_size: int) -> None:
    if iterations < 1:
        raise InputError(f"--iterations must be at least 1, got {iterations}")
    if s.batch_size < world_size:
        raise InputError(f"--batch-size {s.batch_size} is the global batch; it must be at least the number of "
                         f"processes ({world_size})")
    if s.image_size is not None and min(s.image_size) < 1:
        raise InputError(f"--image-size needs positive sizes, got {' '.join(map(str, s.image_size))}")
    if len(s.features) < 2 or min(s.features) < 1:
        raise InputError(f"--features needs at least 2 positive widths, got {list(s.features)}")
    if not 0 <= s.empty_slice_fraction <= 1:
        raise InputError(f"--empty-slice-fraction must be in [0, 1], got {s.empty_slice_fraction}")
    if not 0 < s.w_min <= 1 <= s.w_max:
        raise InputError(f"--w-min / --w-max must satisfy 0 < w_min <= 1 <= w_max, got {s.w_min}, {s.w_max}")
    if not 0 <= s.ema < 1:
        raise InputError(f"--ema must be in [0, 1), got {s.ema}")
    if save_every < 1 or snapshots < 2:
        raise InputError("--save-every must be >= 1 and --snapshots >= 2")


def train_generator(dataset: Union[str, int], configuration: Optional[str] = None,
                    fold: Union[int, str, None] = None, plans: str = DEFAULT_PLANS, weighting: str = "law",
                    iterations: int = 20000, batch_size: int = 16, image_size: Optional[Sequence[int]] = None,
                    layout: str = "auto", mode: str = INPAINT, empty_slice_fraction: float = 0.1, lr: float = 2e-4,
                    weight_decay: float = 0.0, grad_clip: float = 1.0, features: Sequence[int] = (32, 64, 128),
                    time_dim: int = 128, warmup_steps: int = 250, r_max: float = 20.0, w_min: float = 0.1,
                    w_max: float = 10.0, beta: float = 1.0, lambda_delta: float = 0.1, lambda_dice: float = 0.1,
                    ema: float = 0.999, device: Optional[str] = "cuda", seed: int = 0, save_every: int = 1000,
                    snapshots: int = 5, log_every: Optional[int] = None, resume: bool = False,
                    overwrite: bool = False, progress: bool = True) -> int:
    """Train a LAW generator on ``dataset``'s training cases (``fold``'s, given one) into its run folder (see the
    module doc); the options are those of ``nnunet-laworder law train --help``. ``resume`` continues the folder's
    ``checkpoint_latest.pth`` with its settings (only ``iterations``, ``device`` and ``save_every`` may change);
    ``overwrite`` replaces an existing run. Under torchrun, each process trains its share (``device`` cuda: its
    ``cuda:LOCAL_RANK``)."""
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    is_main = rank == 0
    torch_device = resolve_device(device)
    if world_size > 1:
        if torch_device.type == "cuda":
            torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(torch_device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")

    dataset_name = preprocessed_dataset_folder(dataset).name
    plans_dict = load_plans(dataset, plans)
    if configuration is None:
        configuration = default_configuration(plans_dict)
    folder = law_run_folder(dataset_name, weighting, configuration, fold)
    settings = RunSettings(
        configuration=configuration, fold=fold, plans=plans, weighting=weighting, batch_size=batch_size,
        image_size=None if image_size is None else tuple(image_size), layout=layout, mode=mode, lr=lr,
        weight_decay=weight_decay, features=tuple(features), time_dim=time_dim, warmup_steps=warmup_steps,
        r_max=r_max, w_min=w_min, w_max=w_max, beta=beta, lambda_delta=lambda_delta, lambda_dice=lambda_dice,
        seed=seed, ema=ema, empty_slice_fraction=empty_slice_fraction, grad_clip=grad_clip)

    checkpoint = None
    existing = [name for name in OUTPUT_FILES if (folder / name).exists()]
    if resume:
        latest = folder / "checkpoint_latest.pth"
        if latest.is_file():
            checkpoint = read_checkpoint(latest)
            settings = settings.resumed(checkpoint["args"])
        elif is_main:
            print(f"law train: --resume: no checkpoint in {folder}, starting a new training")
    elif existing and not overwrite:
        raise InputError(f"{folder} already holds a training ({', '.join(existing)}); "
                         f"continue it with --resume or replace it with --overwrite")
    check_settings(settings, iterations, save_every, snapshots, world_size)
    # the data and the generator first: a run that --overwrite replaces is removed only once every check passed
    trainer = Trainer(dataset, settings, folder, torch_device, iterations, save_every, snapshots, log_every,
                      progress, world_size, rank)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    if overwrite and existing and is_main:
        for name in existing:
            path = folder / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return trainer.train()


class Trainer:
    """One process of a run: its data, generator, optimizer and EMA copy, the loop, and (rank 0) its files."""

    def __init__(self, dataset: Union[str, int], settings: RunSettings, folder: Path, device: torch.device,
                 iterations: int, save_every: int, snapshots: int, log_every: Optional[int], progress: bool,
                 world_size: int = 1, rank: int = 0):
        self.folder, self.device, self.iterations, self.save_every = folder, device, iterations, save_every
        self.snapshot_count, self.progress = snapshots, progress
        self.log_every = log_every or max(1, iterations // 100)
        self.world_size, self.rank, self.is_main = world_size, rank, rank == 0
        s = settings
        divisor = 2 ** (len(s.features) - 1)
        self.data = load_training_data(dataset, s.configuration, s.fold, s.plans, s.image_size, s.layout, divisor,
                                       s.empty_slice_fraction, s.seed, progress=progress and self.is_main,
                                       mode=s.mode)
        # recorded explicitly: a resumed run gets the same data
        self.settings = s = replace(s, image_size=tuple(self.data.layout.image_size))
        weighting = WeightingConfig(s.weighting, s.r_max, s.w_min, s.w_max, s.warmup_steps, s.beta, s.lambda_delta,
                                    s.lambda_dice)
        torch.manual_seed(s.seed)  # the initial weights
        self.generator = LAWGenerator.create(self.data.image_channels, self.data.layout, weighting,
                                             self.data.normaliser, s.features, s.time_dim).to(device)
        self.params = list(self.generator.modules().parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=s.lr, weight_decay=s.weight_decay)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scheduler = training_scheduler()
        self.sampler = BatchSampler(self.data, s.batch_size, s.seed)
        self.ema = copy.deepcopy(self.generator.modules()).requires_grad_(False) if s.ema > 0 else None
        self.step, self.log, self.snapshots = 0, [], {"steps": [], "maps": []}
        net = TrainingNet(self.generator.denoiser, self.generator.head, s.weighting == "law")
        if world_size > 1:
            net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = net
        self.snapshot_items = snapshot_items(self.data.segmentations)

    def restore(self, checkpoint: dict) -> None:
        """Continue from ``checkpoint_latest.pth``: weights, optimizer, EMA, step, log, snapshots, RNG states."""
        layout, now = checkpoint["generator"]["layout"], self.data.layout
        before = (layout.get("mode", WHOLE), layout["image_size"], layout["labels"])
        if before != (now.mode, now.image_size, now.labels):
            raise InputError(f"{self.folder / 'checkpoint_latest.pth'} was trained in mode {before[0]} with image "
                             f"size {before[1]} and labels {before[2]}; the data now gives mode {now.mode}, "
                             f"{now.image_size} and {now.labels}")
        self.generator.modules().load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("grad_scaler") and self.amp:
            self.scaler.load_state_dict(checkpoint["grad_scaler"])
        if self.ema is not None:
            g = checkpoint["generator"]
            self.ema.load_state_dict({**{f"denoiser.{k}": v for k, v in g["denoiser"].items()},
                                      **{f"head.{k}": v for k, v in g["head"].items()}})
        self.step, self.log = int(checkpoint["step"]), list(checkpoint["log"])
        if self.step > self.iterations:
            raise InputError(f"{self.folder / 'checkpoint_latest.pth'} is at step {self.step}, beyond --iterations "
                             f"{self.iterations}")
        self.snapshots = {"steps": list(checkpoint["weight_maps"]["steps"]),
                          "maps": [m.numpy() for m in checkpoint["weight_maps"]["maps"]]}
        rng = checkpoint.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "numpy" in rng:
            algorithm, keys, position, has_gauss, cached = rng["numpy"]
            np.random.set_state((algorithm, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        if "python" in rng:
            random.setstate(rng["python"])

    # -- weight-map snapshots -------------------------------------------------------------------------------------

    def _maybe_snapshot(self):
        due = self.step in snapshot_steps(self.snapshot_count, self.iterations)
        if self.is_main and due and self.step not in self.snapshots["steps"]:
            images, condition, fg = self.sampler.fixed(self.snapshot_items, self.device)
            self.snapshots["steps"].append(self.step)
            self.snapshots["maps"].append(weight_maps(self.generator, self.scheduler, images, condition, fg,
                                                      self.step))

    # -- the loop -------------------------------------------------------------------------------------------------

    def _train_step(self) -> dict:
        s = self.settings
        images, condition, fg = self.sampler.batch(self.step, self.rank, self.world_size, self.device)
        g = torch.Generator(device=self.device).manual_seed((s.seed * 1_000_003 + self.step) * 4099 + self.rank)
        loss, parts = training_step(self.net, self.generator.weighting, self.scheduler, self.optimizer, self.scaler,
                                    self.params, images, condition, fg, self.step, g, s.grad_clip, self.ema, s.ema)
        zero = torch.zeros((), device=loss.device)
        values = torch.stack([loss, parts["denoising"], parts.get("delta", zero), parts.get("dice", zero)]).float()
        if self.world_size > 1:
            dist.all_reduce(values)
            values /= self.world_size
        total, denoising, delta_loss, dice_loss = values.tolist()
        entry = {"step": self.step + 1, "loss": total, "denoising": denoising}
        if s.weighting == "law":
            entry.update(delta=delta_loss, dice=dice_loss)
        self.step += 1
        return entry

    def train(self) -> int:
        start = self.step
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_log_header(start)
        self._maybe_snapshot()
        bar = tqdm(total=self.iterations, initial=start, desc="law train",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True)
        t0, steps_timed = time.perf_counter(), 0
        while self.step < self.iterations:
            entry = self._train_step()
            steps_timed += 1
            entry["seconds"] = time.perf_counter() - t0
            self.log.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            self._maybe_snapshot()
            if self.is_main and (self.step % self.log_every == 0 or self.step == self.iterations):
                self._log_line(entry, steps_timed / max(entry["seconds"], 1e-9))
            if self.step % self.save_every == 0 and self.step < self.iterations:
                self.save("checkpoint_latest.pth")
        bar.close()
        self.save("checkpoint_latest.pth", final=True)
        self.save("checkpoint_final.pth", final=True)
        if self.is_main:
            print(f"law train: {self.iterations} steps done; generator in {self.folder / 'checkpoint_final.pth'}")
        if self.world_size > 1:
            dist.barrier()
            dist.destroy_process_group()
        return 0

    # -- writing --------------------------------------------------------------------------------------------------

    def _sampling_generator(self) -> LAWGenerator:
        """The generator to save for sampling: the EMA weights when EMA is on."""
        if self.ema is None:
            return self.generator
        g = copy.copy(self.generator)
        g.denoiser, g.head = self.ema["denoiser"], self.ema["head"]
        return g

    def save(self, name: str, final: bool = False) -> None:
        if not self.is_main:
            return
        # plain data and tensors only, so that the checkpoint loads with weights_only=True
        algorithm, keys, position, has_gauss, cached = np.random.get_state()
        rng = {"torch": torch.get_rng_state(), "numpy": [algorithm, torch.from_numpy(keys.astype(np.int64)),
                                                         position, has_gauss, cached], "python": random.getstate(),
               "scheme": "batches, flips, noise and timesteps are drawn from generators seeded by (seed, step, rank)"}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        items = [self.data.items[i] for i in self.snapshot_items]
        save_checkpoint(self.folder / name, self._sampling_generator(), step=self.step,
                        model=self.generator.modules().state_dict(), optimizer=self.optimizer.state_dict(),
                        grad_scaler=self.scaler.state_dict() if self.amp else None, rng=rng, log=self.log,
                        weight_maps={"steps": self.snapshots["steps"],
                                     "maps": [torch.from_numpy(m) for m in self.snapshots["maps"]],
                                     "items": items, "timesteps": list(SNAPSHOT_TIMESTEPS)},
                        args=self.settings.record(),
                        data={"dataset": self.data.dataset_name, "configuration": self.data.configuration,
                              "fold": self.settings.fold, "cases": self.data.cases,
                              "validation_cases": self.data.validation_cases, "items": self.data.items},
                        world_size=self.world_size, final=final)
        plot_loss_curves(self.log, self.folder / "loss_curves.png",
                         f"LAW training ({self.settings.weighting}), {self.data.dataset_name}")
        write_weight_maps(self.folder, self.snapshots["steps"], self.snapshots["maps"],
                          self.sampler.fixed(self.snapshot_items)[2][:, 0].numpy() > 0, items,
                          self.generator.weighting)

    def _write_log_header(self, start: int) -> None:
        d, s = self.data, self.settings
        lines = [f"{datetime.datetime.now().isoformat(timespec='seconds')} "
                 + (f"resumed at step {start}" if start else "new training"),
                 f"dataset {d.dataset_name}, configuration {d.configuration}, plans {s.plans}, fold "
                 f"{s.fold if s.fold is not None else 'none (all training cases)'}",
                 f"layout {d.layout.extra['layout']}, mode {d.layout.mode} (dim {d.layout.dim}, size "
                 f"{d.layout.image_size}, slice axis "
                 f"{d.layout.slice_axis}), labels {d.layout.labels}, {len(d.cases)} cases -> {len(d)} training "
                 f"images, {len(d.validation_cases)} validation cases excluded",
                 f"weighting {s.weighting}: {self.generator.weighting}",
                 f"device {self.device}, processes {self.world_size}, mixed precision {self.amp}",
                 "settings " + ", ".join(f"{k}={v}" for k, v in s.record().items())]
        with open(self.folder / "training_log.txt", "a") as f:
            f.write("\n".join(lines) + "\n")

    def _log_line(self, entry: dict, its: float) -> None:
        parts = " ".join(f"{k} {entry[k]:.5f}" for k in ("loss", "denoising", "delta", "dice") if k in entry)
        with open(self.folder / "training_log.txt", "a") as f:
            f.write(f"step {entry['step']}/{self.iterations} {parts} ({its:.2f} it/s)\n")
