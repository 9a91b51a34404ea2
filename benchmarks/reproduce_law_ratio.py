"""How much synthetic data helps: segmenters trained on the real dataset plus 25, 50 and 100% as many LAW synthetic
cases as fold 0 has real training cases, each compared case for case with the real-only model on fold 0's real
validation cases (the fold whose cases the generator never saw). The synthetic cases come from the downstream
script's LAW generator, through the same quality gate; every dataset keeps the real dataset's plans. ``--replicate``
segmenters train in each of the scale's runs (cpu: 3), the others once.

    python benchmarks/reproduce_law_ratio.py                      # reduced scale, CPU (after reproduce_downstream)
    python benchmarks/reproduce_law_ratio.py --segmenters ORDER "nnU-Net default" --ratios 0.25 0.5

Writes ``WORK/results/law_ratio.{md,json}``.
"""
import argparse

from reproduction import LAW_SEGMENTERS, RATIO_IDS, REAL_ID, ROW_HEADER, Reproduction, parse_args, row_line


def main(argv=None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--segmenters", nargs="+", choices=LAW_SEGMENTERS, default=["ORDER"])
    extra.add_argument("--replicate", nargs="*", choices=LAW_SEGMENTERS, default=["ORDER"])
    extra.add_argument("--ratios", nargs="+", type=float, default=list(RATIO_IDS), choices=list(RATIO_IDS))
    known, rest = extra.parse_known_args(argv)
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], rest), "reproduce_law_ratio")
    r.scale = type(r.scale)(**{**r.scale.__dict__, "folds": r.scale.folds[:1]})  # the clean fold only
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, ["ORDER"]) + r.law_stages("law")[:1])  # the gate's judge, the generator
    rows = {}
    lines = ["| synthetic / real | synthetic cases kept | " + ROW_HEADER[0][2:], "|---:|---:|" + ROW_HEADER[1][1:]]
    for ratio in known.ratios:
        by_segmenter, kept = r.real_vs_law(ratio, known.segmenters, known.replicate)
        for segmenter, row in by_segmenter.items():
            rows.setdefault(segmenter, {})[str(ratio)] = row
            lines.append(f"| {ratio:.0%} | {kept} " + row_line(f"{segmenter} ({len(row['runs']['real'])} runs)", row))
    r.write_table("law_ratio", "How much LAW synthetic data: real only vs real + 25 / 50 / 100 % synthetic", lines,
                  {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
