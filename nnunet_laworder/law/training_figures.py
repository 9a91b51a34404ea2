"""What ``law train`` draws beside its checkpoints: ``loss_curves.png`` (total, denoising, delta, Dice vs step),
``weight_maps.png`` (rows: snapshots from step 0 to the end; columns: fixed conditioning masks and their LAW
weight maps) and ``weight_maps.npz`` (``steps``, ``maps`` (S, K, *size), ``masks`` (K, *size), ``items``).

Figures are drawn on :class:`matplotlib.figure.Figure` directly: files only, no pyplot state or display.
"""
from pathlib import Path
from typing import List, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from nnunet_laworder.law.weighting import WeightingConfig

LOSS_KEYS = ("loss", "denoising", "delta", "dice")


def plot_loss_curves(log: List[dict], path: Path, title: str) -> None:
    """Each loss of the per-step ``log`` (raw and smoothed over ~1/50 of the run) against the step."""
    keys = [k for k in LOSS_KEYS if log and k in log[-1]]
    if not keys:
        return
    fig = Figure(figsize=(4 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps = np.array([e["step"] for e in log if key in e])
        values = np.array([e[key] for e in log if key in e])
        ax.plot(steps, values, alpha=0.3, lw=0.8)
        window = max(1, len(values) // 50)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, lw=1.5)
        ax.set_title({"loss": "total"}.get(key, key)), ax.set_xlabel("step")
        if key in ("loss", "denoising") and values.min() > 0:
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _display_slice(array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """2D view of a map: itself, or for 3D the slice (axis 0) with the most foreground."""
    if array.ndim == 2:
        return array
    return array[int(mask.reshape(mask.shape[0], -1).sum(1).argmax())]


def write_weight_maps(folder: Path, steps: Sequence[int], maps: Sequence[np.ndarray], masks: np.ndarray,
                      items: Sequence[str], weighting: WeightingConfig) -> None:
    """``weight_maps.npz`` and ``weight_maps.png`` of the snapshots (``maps[i]``: (K, *size) at ``steps[i]``, in
    any order) of the K boolean ``masks`` of training ``items``."""
    if not steps:
        return
    order = np.argsort(steps)
    steps = np.array(steps)[order]
    maps = np.stack([maps[i] for i in order])  # (S, K, *size)
    np.savez_compressed(Path(folder) / "weight_maps.npz", steps=steps, maps=maps, masks=masks, items=np.array(items))
    k = len(items)
    fig = Figure(figsize=(2.2 * k, 2.2 * (len(steps) + 1)))
    axes = fig.subplots(len(steps) + 1, k, squeeze=False)
    # a log colour scale, from the clamps: background (~0.5-1) and lesion (~2-10) weights both stay visible
    norm = LogNorm(vmin=weighting.w_min, vmax=weighting.w_max)
    for j in range(k):
        axes[0, j].imshow(_display_slice(masks[j], masks[j]), cmap="gray")
        axes[0, j].set_title(items[j][:14], fontsize=7)
        for i in range(len(steps)):
            ax = axes[i + 1, j]
            image = ax.imshow(_display_slice(maps[i, j], masks[j]), cmap="magma", norm=norm)
            ax.contour(_display_slice(masks[j], masks[j]).astype(float), levels=[0.5], colors="cyan",
                       linewidths=0.5)
    for i, step in enumerate(steps):
        axes[i + 1, 0].set_ylabel(f"step {step}", fontsize=8)
    axes[0, 0].set_ylabel("mask", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"LAW weight maps ({weighting.mode}; mean 1 per image, log scale)", fontsize=9)
    fig.tight_layout()
    fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.6, label="weight")
    fig.savefig(Path(folder) / "weight_maps.png", dpi=100)
