"""The ``benchmark`` report: its markdown table and its charts, read from the report dict (or its ``--json``)."""
from pathlib import Path
from typing import Optional

from nnunet_laworder.evaluation import plots

MIB = 2 ** 20


def ratio_text(ratio: Optional[float]) -> str:
    return "" if ratio is None else f" ({ratio:.3g}x)"


def mib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def markdown_table(report: dict) -> str:
    s = report["settings"]
    refs = ", ".join(report["references"].values()) or "none"
    lines = [f"nnU-Net network cost on {s['hardware']} ({s['device']}, torch {s['torch']}), dataset {s['dataset']}; "
             f"{s['warmup']} warm-up + {s['repeats']} interleaved repetitions.",
             f"(x) = ratio to nnU-Net's default configuration of the same dimension (the reference row, 1x): {refs}.",
             "Forward: one patch, batch 1, as nnUNetv2_predict runs it. Train step: nnU-Net's train_step at the "
             "batch size shown. Memory: " + (s["memory"] or "not measured") + ".", "",
             "| model | patch x batch | parameters | GMACs | forward ms, median [IQR] | train step ms, median [IQR] "
             "| peak memory, train MiB | peak memory, forward MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        r = row["ratios"]
        name = row["identifier"] + (" **(reference)**" if row["is_reference"] else "")
        f, t = row["forward_timing"], row["train_step_timing"]
        lines.append(
            f"| {name} | {'x'.join(map(str, row['patch_size']))} x {row['batch_size']} | "
            f"{row['parameters']:,}{ratio_text(r['parameters'])} | {row['gmacs']:.3f}{ratio_text(r['gmacs'])} | "
            f"{f['median']:.1f} [{f['iqr']:.1f}]{ratio_text(r['forward_ms'])} | "
            f"{t['median']:.1f} [{t['iqr']:.1f}]{ratio_text(r['train_step_ms'])} | "
            f"{mib(row['train_peak_bytes'])}{ratio_text(r['train_peak_bytes'])} | "
            f"{mib(row['forward_peak_bytes'])}{ratio_text(r['forward_peak_bytes'])} |")
    lines += [""] + [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines).rstrip()


def plot_benchmark(report: dict, path: Path) -> None:
    """GMACs and forward latency against parameters, one point per model, nnU-Net's default marked."""
    rows = report["rows"]
    labels = plots.short_labels([row["identifier"] for row in rows])
    reference = next((i for i, row in enumerate(rows) if row["is_reference"]), None)
    params = [row["parameters"] for row in rows]
    fig, axes = plots.panels(3, f"dataset {report['settings']['dataset']}, {report['settings']['hardware']}")
    plots.scatter_models(axes[0], labels, params, [row["gmacs"] for row in rows], reference, "parameters",
                         "GMACs per patch", logy=True)
    plots.scatter_models(axes[1], labels, params, [row["forward_ms"] for row in rows], reference, "parameters",
                         "forward ms per patch (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["forward_timing"]) for row in rows])
    plots.scatter_models(axes[2], labels, params, [row["train_step_ms"] for row in rows], reference, "parameters",
                         "training step ms (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["train_step_timing"]) for row in rows])
    plots.save_figure(fig, path)
    plots.close(fig)


def quartile_bars(timing: dict) -> tuple:
    return timing["median"] - timing["q1"], timing["q3"] - timing["median"]
