"""The cost / accuracy scatter that ``benchmark`` and ``compare`` both draw, nnU-Net's baseline marked, and the
paired-difference chart of the reproduction scripts."""
from pathlib import Path
from typing import List, Optional, Sequence


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; also safe where no display exists
    import matplotlib.pyplot as plt
    return plt


def scatter_models(ax, labels: Sequence[str], x: Sequence[Optional[float]], y: Sequence[Optional[float]],
                   reference: Optional[int], xlabel: str, ylabel: str, logx: bool = True, logy: bool = False,
                   yerr: Optional[Sequence[Optional[tuple]]] = None) -> None:
    """One labelled point per model; ``reference`` (an index) is drawn as a red star; ``yerr`` holds a
    ``(below, above)`` bar per model or None. Models without a value on either axis are left out (the table still
    lists them)."""
    colours = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, xi, yi) in enumerate(zip(labels, x, y)):
        if xi is None or yi is None:
            continue
        is_reference = i == reference
        err = None if yerr is None or yerr[i] is None else yerr[i]
        ax.errorbar([xi], [yi], yerr=None if err is None else [[err[0]], [err[1]]], fmt="*" if is_reference else "o",
                    color="black" if is_reference else colours[i % len(colours)],
                    markersize=15 if is_reference else 8, capsize=3,
                    label=label + (" (nnU-Net baseline)" if is_reference else ""))
    ax.legend(fontsize=7, loc="best")
    ax.margins(0.15)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def paired_differences(ax, paired: dict, xlabel: str) -> None:
    """One row per pair (``{"A vs B": paired_difference(...)}``): its mean difference in points and its 95%
    interval as a bar, 0 marked."""
    names = list(paired)
    means = [100 * paired[n]["mean_diff"] for n in names]
    errors = [[m - 100 * paired[n]["ci95"][0] for n, m in zip(names, means)],
              [100 * paired[n]["ci95"][1] - m for n, m in zip(names, means)]]
    ax.errorbar(means, range(len(names)), xerr=errors, fmt="o", capsize=4)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel(xlabel)


def save_figure(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def panels(n: int, title: str, width: float = 6.0, height: float = 4.5) -> tuple:
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, list(axes[0])


def close(fig) -> None:
    pyplot().close(fig)


def short_labels(identifiers: List[str]) -> List[str]:
    """``TRAINER__PLANS__CONFIG`` shortened to the parts that differ between the models, so the charts stay legible."""
    parts = [identifier.split("__") for identifier in identifiers]
    if not parts or any(len(p) != 3 for p in parts):
        return list(identifiers)
    keep = [k for k in range(3) if len({p[k] for p in parts}) > 1] or [2]
    return [" / ".join(p[k] for k in keep) for p in parts]
