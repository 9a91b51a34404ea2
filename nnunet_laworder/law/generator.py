"""The LAW generator as one object: denoiser + LAW head + weighting + intensity normalisation + layout, and its
checkpoint format (shared by ``law train``, ``law synthesize`` and ``law evaluate``)."""
import hashlib
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op

from nnunet_laworder.errors import InputError
from nnunet_laworder.law.denoiser import MaskConditionedDenoiser
from nnunet_laworder.law.inpainting import condition_channels
from nnunet_laworder.law.intensity import IntensityNormaliser
from nnunet_laworder.law.options import WHOLE
from nnunet_laworder.law.weighting import LAWHead, WeightingConfig


# the conv ops a checkpoint may name, by the name the denoiser's config records
CONV_OPS = {f"torch.nn.{op.__name__}": op for op in (torch.nn.Conv2d, torch.nn.Conv3d)}


def foreground_labels(dataset_json: dict) -> List[int]:
    """The integer label values > 0 of a dataset (regions are unions of these), minus the ignore label."""
    values = set()
    for name, value in dataset_json["labels"].items():
        if name != "ignore":
            values.update(value if isinstance(value, (list, tuple)) else [value])
    return sorted(v for v in values if v > 0)


def one_hot(segmentation: np.ndarray, labels: List[int]) -> np.ndarray:
    """``(*spatial)`` integer map -> ``(len(labels), *spatial)`` float32 one-hot of the foreground labels."""
    return np.stack([segmentation == v for v in labels]).astype(np.float32)


@dataclass
class Layout:
    """How images are modelled: ``dim`` 2 or 3 of the denoiser, ``slice_axis`` (axis of the 3D volume that is
    sliced, for large 3D data modelled slice-wise), the generation ``image_size`` and the ``mode``: ``whole``
    images brought to that size, or ``inpaint`` windows of that size at the source's resolution
    (:mod:`~nnunet_laworder.law.inpainting`)."""
    dim: int
    image_size: List[int]
    labels: List[int]
    slice_axis: Optional[int] = None
    file_ending: str = ".png"
    extra: dict = field(default_factory=dict)
    mode: str = WHOLE  # checkpoints from before the inpainting mode hold whole-image generators


@dataclass
class LAWGenerator:
    denoiser: MaskConditionedDenoiser
    head: LAWHead
    weighting: WeightingConfig
    normaliser: IntensityNormaliser
    layout: Layout

    @classmethod
    def create(cls, image_channels: int, layout: Layout, weighting: WeightingConfig, normaliser: IntensityNormaliser,
               features_per_stage=(32, 64, 128), time_dim: int = 128) -> "LAWGenerator":
        conv_op = convert_dim_to_conv_op(layout.dim)
        condition = condition_channels(layout.mode, image_channels, len(layout.labels))
        denoiser = MaskConditionedDenoiser(image_channels, condition, conv_op, features_per_stage, time_dim)
        head = LAWHead(conv_op, features_per_stage[0], condition, time_dim)
        return cls(denoiser, head, weighting, normaliser, layout)

    def modules(self) -> torch.nn.ModuleDict:
        return torch.nn.ModuleDict({"denoiser": self.denoiser, "head": self.head})

    def to(self, device) -> "LAWGenerator":
        self.modules().to(device)
        return self

    def state(self) -> dict:
        return {"denoiser_config": self.denoiser.config(), "denoiser": self.denoiser.state_dict(),
                "head": self.head.state_dict(), "weighting": asdict(self.weighting),
                "normaliser": self.normaliser.to_dict(), "layout": asdict(self.layout)}

    @classmethod
    def from_state(cls, state: dict) -> "LAWGenerator":
        config = dict(state["denoiser_config"])
        if config["conv_op"] not in CONV_OPS:  # a name, never a path to import: the file does not choose code
            raise ValueError(f"unsupported conv_op {config['conv_op']!r}")
        config["conv_op"] = CONV_OPS[config["conv_op"]]
        denoiser = MaskConditionedDenoiser(**config)
        layout = Layout(**state["layout"])
        head = LAWHead(config["conv_op"], config["features_per_stage"][0], config["mask_channels"], config["time_dim"])
        denoiser.load_state_dict(state["denoiser"])
        head.load_state_dict(state["head"])
        return cls(denoiser, head, WeightingConfig(**state["weighting"]),
                   IntensityNormaliser.from_dict(state["normaliser"]), layout)


def save_checkpoint(path: Path, generator: LAWGenerator, **extra) -> None:
    """Write atomically (a crash mid-save keeps the previous checkpoint)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"generator": generator.state(), **extra}, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, map_location="cpu") -> dict:
    """A LAW checkpoint's entries, loaded with ``weights_only=True``: it may hold tensors and plain data only, so a
    file that carries code (any other pickled object) is refused before anything in it runs."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path} is not a LAW generator checkpoint: it holds objects other than tensors and plain "
                         f"data, which could run code when loaded; refusing it (checkpoints from law train never "
                         f"do)") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: whatever torch raises for it
        raise InputError(f"{path} is not a LAW generator checkpoint ({type(e).__name__} while reading it)") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("generator"), dict):
        raise InputError(f"{path} is not a LAW generator checkpoint (no 'generator' entry)")
    return checkpoint


def load_checkpoint(path: Path, map_location="cpu") -> Tuple[LAWGenerator, dict]:
    """(generator, the other entries of the checkpoint: step, optimizer state, log, ...)."""
    checkpoint = read_checkpoint(path, map_location)
    try:
        return LAWGenerator.from_state(checkpoint.pop("generator")), checkpoint
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{path} is not a LAW generator checkpoint (its generator entry does not build: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def checkpoint_hash(path: Path) -> str:
    """SHA-256 of a checkpoint file, recorded in the provenance of every synthetic case."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
