"""Random new layouts for LAW synthesis: geometric transforms of a label map, recorded exactly.

A transform is a plain dict of parameters (JSON-serialisable, written into ``provenance.json``)::

    {"flip": [bool per axis], "rot90": k, "rotation_deg": [angle] (2D) or [a0, a1, a2] (3D, scipy "xyz" Euler
     angles over the array axes), "scale": s, "elastic": {"magnitude": m, "sigma": s, "seed": n} or None}

:func:`apply_transform` is a pure function of ``(mask, parameters)``: flips (``np.flip``), then ``k`` quarter turns
in the plane of the first two spatial axes (``np.rot90``, only on square planes so the shape never changes), then one
resampling through ``scipy.ndimage.map_coordinates`` (order 0, nearest neighbour: label values are never mixed) of
the combined rotation (``scipy.spatial.transform.Rotation``) + isotropic scaling about the centre + a smooth elastic
displacement field (uniform noise from ``numpy.random.default_rng(seed)`` smoothed with
``scipy.ndimage.gaussian_filter``, scaled so its largest displacement is ``magnitude`` x the image's mean side).
Outside the image is background.

:func:`random_transform` draws parameters from a :class:`TransformConfig` with a ``numpy.random.Generator`` and
rejects a draw that loses a label present in the mask, empties a non-empty mask, or pushes a structure off the
image (it keeps less than ``min_kept`` of the area the scaling implies); after ``max_attempts`` rejections it
returns the identity (always valid), marked ``"fallback": true``.
"""
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np


@dataclass
class TransformConfig:
    """Ranges of the random layout transforms (defaults per dimension: :meth:`for_dim`)."""
    flip_probability: float = 0.5  # per axis
    rot90: bool = True  # random quarter turns in the first plane (square planes only)
    max_rotation_deg: float = 45.0  # free rotation, uniform in [-max, max] (per Euler angle in 3D)
    scale_range: Tuple[float, float] = (0.8, 1.25)  # log-uniform isotropic scale
    elastic_probability: float = 0.7
    elastic_magnitude: Tuple[float, float] = (0.01, 0.04)  # largest displacement, fraction of the mean side
    elastic_sigma: float = 0.08  # smoothness of the field, fraction of the mean side
    min_kept: float = 0.6  # a label must keep this fraction of the area (volume) the scale implies
    max_attempts: int = 50

    @classmethod
    def for_dim(cls, dim: int) -> "TransformConfig":
        """2D (endoscopy frames, slices): any orientation; 3D volumes: anatomy keeps roughly its orientation."""
        if dim == 2:
            return cls()
        return cls(rot90=False, max_rotation_deg=15.0, scale_range=(0.85, 1.15), elastic_magnitude=(0.01, 0.03))

    def to_dict(self) -> dict:
        return asdict(self)


def identity(dim: int) -> dict:
    return {"flip": [False] * dim, "rot90": 0, "rotation_deg": [0.0] * (1 if dim == 2 else 3), "scale": 1.0,
            "elastic": None}


def _rotation_matrix(angles: Sequence[float], dim: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if dim == 2:
        return Rotation.from_euler("z", angles[0], degrees=True).as_matrix()[:2, :2]
    return Rotation.from_euler("xyz", list(angles), degrees=True).as_matrix()


def elastic_field(shape: Sequence[int], magnitude: float, sigma: float, seed: int) -> np.ndarray:
    """``(dim, *shape)`` smooth displacement (voxels), largest component ``magnitude`` x mean side."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    side = float(np.mean(shape))
    field = np.stack([gaussian_filter(rng.uniform(-1, 1, size=shape), sigma * side, mode="constant")
                      for _ in shape])
    peak = np.abs(field).max()
    return field * (magnitude * side / peak) if peak > 0 else field


def apply_transform(mask: np.ndarray, params: dict, order: int = 0) -> np.ndarray:
    """The label map ``mask`` (2D or 3D integer array) under ``params``; same shape and dtype, nearest neighbour.
    ``order`` 1: one channel of an image under the same transform (linear, the edge extended outwards), as the added
    lesions of :mod:`~nnunet_laworder.law.lesion_paste` move their pixels with their masks."""
    from scipy.ndimage import map_coordinates

    dim = mask.ndim
    if dim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {mask.shape}")
    out = mask
    flips = [a for a, f in enumerate(params.get("flip", [])) if f]
    if flips:
        out = np.flip(out, axis=flips)
    k = int(params.get("rot90", 0)) % 4
    if k:
        if out.shape[0] != out.shape[1] and k % 2:
            raise ValueError(f"an odd number of quarter turns would change the shape {out.shape}")
        out = np.rot90(out, k, axes=(0, 1))
    out = np.ascontiguousarray(out)
    angles = params.get("rotation_deg") or [0.0]
    scale = float(params.get("scale", 1.0))
    elastic = params.get("elastic")
    if not any(angles) and scale == 1.0 and not elastic:
        return out
    # output voxel x samples the input at centre + R^-1 (x - centre) / scale + displacement(x)
    centre = (np.array(out.shape, dtype=np.float64) - 1) / 2
    inverse = _rotation_matrix(angles, dim).T / scale
    grid = np.indices(out.shape, dtype=np.float64).reshape(dim, -1) - centre[:, None]
    coords = inverse @ grid + centre[:, None]
    if elastic:
        coords += elastic_field(out.shape, elastic["magnitude"], elastic["sigma"], elastic["seed"]).reshape(dim, -1)
    sampled = map_coordinates(out, coords, order=order, mode="constant" if order == 0 else "nearest", cval=0,
                              prefilter=False)
    return sampled.reshape(out.shape).astype(mask.dtype, copy=False)


def label_counts(mask: np.ndarray) -> Dict[int, int]:
    values, counts = np.unique(mask, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if v != 0}


def is_valid(before: np.ndarray, after: np.ndarray, scale: float, min_kept: float) -> bool:
    """Every label of ``before`` is still there with at least ``min_kept`` of its expected area (volume); tiny
    structures (< 20 voxels) only need to survive."""
    counts_before, counts_after = label_counts(before), label_counts(after)
    for label, count in counts_before.items():
        kept = counts_after.get(label, 0)
        if kept == 0:
            return False
        if count >= 20 and kept < min_kept * count * scale ** before.ndim:
            return False
    return True


def sample_parameters(shape: Sequence[int], rng: np.random.Generator, config: TransformConfig) -> dict:
    dim = len(shape)
    flip = [bool(rng.random() < config.flip_probability) for _ in range(dim)]
    square = shape[0] == shape[1]
    k = int(rng.integers(0, 4)) if config.rot90 else 0
    if k % 2 and not square:
        k = 2 * int(rng.integers(0, 2))
    n_angles = 1 if dim == 2 else 3
    angles = [float(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)) for _ in range(n_angles)]
    low, high = np.log(config.scale_range[0]), np.log(config.scale_range[1])
    scale = float(np.exp(rng.uniform(low, high)))
    elastic = None
    if rng.random() < config.elastic_probability:
        elastic = {"magnitude": float(rng.uniform(*config.elastic_magnitude)), "sigma": config.elastic_sigma,
                   "seed": int(rng.integers(0, 2 ** 31 - 1))}
    return {"flip": flip, "rot90": k, "rotation_deg": angles, "scale": scale, "elastic": elastic}


def random_transform(mask: np.ndarray, rng: np.random.Generator, config: Optional[TransformConfig] = None,
                     accept: Optional[Callable[[np.ndarray], bool]] = None) -> Tuple[np.ndarray, dict]:
    """(transformed mask, parameters) of the first valid random draw (see the module doc); ``accept`` may add a
    condition on the result (e.g. the lesion must survive resizing to the generator's size)."""
    config = config or TransformConfig.for_dim(mask.ndim)
    for attempt in range(config.max_attempts):
        params = sample_parameters(mask.shape, rng, config)
        out = apply_transform(mask, params)
        if is_valid(mask, out, params["scale"], config.min_kept) and (accept is None or accept(out)):
            params["attempt"] = attempt
            return out, params
    params = dict(identity(mask.ndim), fallback=True, attempt=config.max_attempts)
    return mask.copy(), params
