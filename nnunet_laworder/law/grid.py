"""The ``law evaluate`` grid (``law_grid.png``): rows mask / real source image / synthetic image, one column per
synthetic case, so that a reader sees at a glance whether the images follow their masks.

Drawn on a bare matplotlib ``Figure`` (no pyplot): no global backend or figure state changes in the process.
"""
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from nnunet_laworder.law.case_sets import CaseSet, SliceRule, read_image
from nnunet_laworder.law.fid import even_subset
from nnunet_laworder.law.provenance import Provenance

ROWS = ("mask", "real source", "synthetic")


def display_plane(image, seg, axis: int = 0, index: Optional[int] = None):
    """(``(C, H, W)`` image, ``(H, W)`` seg or None) to show of a ``(C, Z, Y, X)`` case: the plane of a singleton
    axis; else slice ``index`` along ``axis``, or the slice with most foreground, or the middle one."""
    singleton = [a for a, n in enumerate(image.shape[1:]) if n == 1]
    if singleton:
        a = singleton[0]
        return np.take(image, 0, axis=1 + a), None if seg is None else np.take(seg, 0, axis=a)
    if index is None:
        if seg is not None and seg.any():
            index = int(np.argmax(np.moveaxis(seg, axis, 0).reshape(seg.shape[axis], -1).sum(1)))
        else:
            index = image.shape[1 + axis] // 2
    return np.take(image, index, axis=1 + axis), None if seg is None else np.take(seg, index, axis=axis)


def to_display(image2d: np.ndarray, window: Optional[dict]) -> np.ndarray:
    """``(C, H, W)`` -> an RGB or grey float image in [0, 1] for imshow, through the FID intensity ``window``
    (else the plane's own 0.5-99.5 percentiles)."""
    if window is not None:
        low = np.asarray(window["low"]).reshape(-1, 1, 1)
        high = np.asarray(window["high"]).reshape(-1, 1, 1)
        x = np.clip((image2d - low) / (high - low), 0, 1)
    else:
        lo, hi = np.percentile(image2d, [0.5, 99.5])
        x = np.clip((image2d - lo) / max(hi - lo, 1e-8), 0, 1)
    return x.transpose(1, 2, 0) if x.shape[0] == 3 else x[0]


def write_grid(path: Path, synthetic: CaseSet, cases: List[str], provenance: Provenance, sources: Sequence[CaseSet],
               labels: Sequence[int], window: Optional[dict], columns: int = 8, rule: SliceRule = SliceRule()
               ) -> dict:
    """Rows: the conditioning mask, the real source image (looked up in ``sources``), the synthetic image; one
    column per case, at most ``columns`` (evenly spaced). Returns the report's ``grid`` section."""
    chosen = even_subset(cases, columns)
    reader = synthetic.reader()
    cmap = ListedColormap(["black"] + [colormaps["tab10"](i % 10) for i in range(len(labels))])
    fig = Figure(figsize=(1.8 * len(chosen), 1.8 * 3 + 0.4))
    axes = fig.subplots(3, len(chosen), squeeze=False)
    for column, case in enumerate(chosen):
        entry = synthetic.files[case]
        image = read_image(reader, entry["images"], case)
        plane, seg_plane = display_plane(image, reader.read_seg(entry["label"])[0][0])
        label_map = np.zeros(seg_plane.shape, dtype=np.int32)
        for i, label in enumerate(labels):
            label_map[seg_plane == label] = i + 1
        axes[0, column].imshow(label_map, cmap=cmap, vmin=0, vmax=len(labels), interpolation="nearest")
        axes[0, column].set_title(case, fontsize=7)
        source = provenance.cases.get(case, {}).get("source_case")
        source_slice = provenance.cases.get(case, {}).get("source_slice")
        holder = next((s for s in sources if source in s.files), None) if source else None
        if holder is not None:
            src = holder.files[source]
            src_reader = holder.reader()
            src_image = read_image(src_reader, src["images"], source)
            src_seg = src_reader.read_seg(src["label"])[0][0] if src.get("label") else None
            src_plane, _ = display_plane(src_image, src_seg, rule.axis,
                                         source_slice if isinstance(source_slice, int) else None)
            axes[1, column].imshow(to_display(src_plane, window), cmap="gray")
            axes[1, column].set_title(f"source {source if len(source) <= 22 else source[:20] + '..'}", fontsize=6)
        else:
            axes[1, column].text(0.5, 0.5, "source\nnot found", ha="center", va="center", fontsize=7)
        axes[2, column].imshow(to_display(plane, window), cmap="gray")
        for row in range(3):
            axes[row, column].set_xticks([]), axes[row, column].set_yticks([])
    for row, name in enumerate(ROWS):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")  # readers never see half a PNG
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return {"file": path.name, "cases": chosen, "rows": ["mask", "real source image", "synthetic image"]}
