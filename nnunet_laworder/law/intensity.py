"""Intensity normalisation of the LAW generator, following the nnU-Net plans, and its exact inverse.

nnU-Net's schemes, per channel (``normalization_schemes`` of the configuration): ``CTNormalization`` clips to the
dataset's foreground 0.5-99.5 percentiles and z-scores with its foreground mean and std; ``ZScoreNormalization``
z-scores each image with its own statistics, which cannot be inverted for a synthetic image, so the generator
uses the dataset's foreground mean and std instead (the same statistics nnU-Net's fingerprint holds);
``RGBTo0_1Normalization`` maps 0..255 to -1..1. Synthetic images go back through :meth:`inverse` and are
clipped to the range the dataset's foreground had (0..255 for 8-bit natural images).
"""
from dataclasses import asdict, dataclass
from typing import List

import numpy as np


@dataclass
class ChannelNormalisation:
    scheme: str
    mean: float
    std: float
    low: float  # clip range of the written intensities (and of CT inputs)
    high: float

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.scheme == "RGBTo0_1Normalization":
            return x.astype(np.float32) / 127.5 - 1
        if self.scheme == "CTNormalization":
            x = np.clip(x, self.low, self.high)
        return ((x - self.mean) / max(self.std, 1e-8)).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        x = (x + 1) * 127.5 if self.scheme == "RGBTo0_1Normalization" else x * self.std + self.mean
        return np.clip(x, self.low, self.high)


@dataclass
class IntensityNormaliser:
    channels: List[ChannelNormalisation]

    @classmethod
    def from_plans(cls, plans: dict, configuration: str) -> "IntensityNormaliser":
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        schemes = PlansManager(plans).get_configuration(configuration).normalization_schemes
        properties = plans["foreground_intensity_properties_per_channel"]
        # 8-bit natural images (png/bmp/tif through NaturalImage2DIO): the range to write back is the full 0..255,
        # not the foreground's (Kvasir's black borders lie below the polyps' minimum)
        eight_bit = plans.get("image_reader_writer") == "NaturalImage2DIO"
        channels = []
        for i, scheme in enumerate(schemes):
            p = properties[str(i)]
            rgb = scheme == "RGBTo0_1Normalization"
            low, high = (0.0, 255.0) if rgb or eight_bit else (p["percentile_00_5"], p["percentile_99_5"]) \
                if scheme == "CTNormalization" else (p["min"], p["max"])
            channels.append(ChannelNormalisation(scheme, p["mean"], p["std"], low, high))
        return cls(channels)

    @classmethod
    def from_dict(cls, d: dict) -> "IntensityNormaliser":
        return cls([ChannelNormalisation(**c) for c in d["channels"]])

    def to_dict(self) -> dict:
        return {"channels": [asdict(c) for c in self.channels]}

    def forward(self, image: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` raw intensities -> normalised float32."""
        return np.stack([c.forward(image[i]) for i, c in enumerate(self.channels)])

    def normalised_bound(self) -> float:
        """The largest absolute normalised value of any channel's writable range (what sampling may clip to)."""
        return float(max(np.abs(c.forward(np.array([c.low, c.high]))).max() for c in self.channels))

    def inverse(self, image: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` normalised -> intensities in the dataset's range (float; cast when writing)."""
        return np.stack([c.inverse(image[i]) for i, c in enumerate(self.channels)])
