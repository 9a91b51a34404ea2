"""The ``benchmark`` report: its markdown table and its charts, read from the report dict (or its ``--json``)."""
from pathlib import Path
from typing import Optional

from nnunet_laworder.evaluation import plots
from nnunet_laworder.evaluation.benchmark import PREDICT_FIGURES

MIB = 2 ** 20


def ratio_text(ratio: Optional[float]) -> str:
    return "" if ratio is None else f" ({ratio:.3g}x)"


def mib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def predict_cell(row: dict, setting: str) -> str:
    """Seconds per case, median, with its ratio, and in total."""
    timing = row["predict_timing"]
    if timing is None:
        return "-"
    ratio = ratio_text(row["ratios"][PREDICT_FIGURES[setting]])
    return f"{timing[setting]['median']:.3g}{ratio}, total {timing[setting]['total']:.3g}"


def markdown_table(report: dict) -> str:
    s = report["settings"]
    predict = s.get("predict")
    refs = ", ".join(report["references"].values()) or "none"
    lines = [f"nnU-Net network cost on {s['hardware']} ({s['device']}, torch {s['torch']}), dataset {s['dataset']}; "
             f"{s['warmup']} warm-up + {s['repeats']} interleaved repetitions.",
             f"(x) = ratio to nnU-Net's default configuration of the same dimension (the reference row, 1x): {refs}.",
             "Forward: one patch, batch 1, as nnUNetv2_predict runs it. Train step: nnU-Net's train_step at the "
             "batch size shown. Memory: " + (s["memory"] or "not measured") + "."]
    if predict:
        lines.append(f"Predict: nnUNetv2_predict end to end, seconds per case (median) and in total over "
                     f"{len(predict['cases'])} training cases, fold {predict['fold']}, one call per case "
                     f"(-npp {predict['num_processes_preprocessing']} -nps "
                     f"{predict['num_processes_segmentation_export']}); TTA: mirroring, nnU-Net's default.")
    lines += ["", "| model | patch x batch | parameters | GMACs | forward ms, median [IQR] | train step ms, median "
                  "[IQR] | peak memory, train MiB | peak memory, forward MiB |"
              + (" predict s/case, TTA | predict s/case, no TTA |" if predict else ""),
              "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if predict else "")]
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
            f"{mib(row['forward_peak_bytes'])}{ratio_text(r['forward_peak_bytes'])} |"
            + (f" {predict_cell(row, 'tta')} | {predict_cell(row, 'no_tta')} |" if predict else ""))
    lines += [""] + [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines).rstrip()


def plot_benchmark(report: dict, path: Path) -> None:
    """GMACs, forward latency, training step (and with --predict, nnUNetv2_predict per case with and without
    mirroring) against parameters, one point per model, nnU-Net's default marked."""
    rows = report["rows"]
    labels = plots.short_labels([row["identifier"] for row in rows])
    reference = next((i for i, row in enumerate(rows) if row["is_reference"]), None)
    params = [row["parameters"] for row in rows]
    predict = "predict" in report["settings"]
    fig, axes = plots.panels(5 if predict else 3,
                             f"dataset {report['settings']['dataset']}, {report['settings']['hardware']}")
    plots.scatter_models(axes[0], labels, params, [row["gmacs"] for row in rows], reference, "parameters",
                         "GMACs per patch", logy=True)
    plots.scatter_models(axes[1], labels, params, [row["forward_ms"] for row in rows], reference, "parameters",
                         "forward ms per patch (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["forward_timing"]) for row in rows])
    plots.scatter_models(axes[2], labels, params, [row["train_step_ms"] for row in rows], reference, "parameters",
                         "training step ms (median, bars: quartiles)", logy=True,
                         yerr=[quartile_bars(row["train_step_timing"]) for row in rows])
    if predict:
        for ax, (setting, title) in zip(axes[3:], (("tta", "TTA"), ("no_tta", "no TTA"))):
            timings = [row["predict_timing"][setting] if row["predict_timing"] else None for row in rows]
            plots.scatter_models(ax, labels, params, [t and t["median"] for t in timings], reference, "parameters",
                                 f"predict s per case, {title} (median, quartiles)", logy=True,
                                 yerr=[t and quartile_bars(t) for t in timings])
            ax.set_title(f"nnUNetv2_predict{'' if setting == 'tta' else ' --disable_tta'}", fontsize=9)
    plots.save_figure(fig, path)
    plots.close(fig)


def quartile_bars(timing: dict) -> tuple:
    return timing["median"] - timing["q1"], timing["q3"] - timing["median"]
