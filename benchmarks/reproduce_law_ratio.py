"""How much synthetic data helps: ORDER trained on the real dataset plus 25, 50 and 100% as many LAW synthetic
cases as fold 0 has real training cases, each compared case for case with the real-only model on fold 0's real
validation cases (the fold whose cases the generator never saw). The synthetic cases come from the downstream
script's LAW generator, through the same quality gate; every dataset keeps the real dataset's plans.

    python benchmarks/reproduce_law_ratio.py                      # reduced scale, CPU (after reproduce_downstream)
    python benchmarks/reproduce_law_ratio.py --segmenters ORDER "nnU-Net default" --ratios 0.25 0.5

Writes ``WORK/results/law_ratio.{md,json}``.
"""
import json

from reproduction import REAL_ID, ROW_HEADER, Reproduction, downstream_row, law_name, parse_args, row_line

RATIOS = {0.25: 521, 0.5: 522, 1.0: 523}  # synthetic / real training cases -> dataset id


def main(argv=None) -> int:
    import argparse

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--segmenters", nargs="+", default=["ORDER"])
    extra.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), choices=list(RATIOS))
    known, rest = extra.parse_known_args(argv)
    r = Reproduction.from_args(parse_args(__doc__.split("\n")[0], rest), "reproduce_law_ratio")
    r.scale = type(r.scale)(**{**r.scale.__dict__, "folds": r.scale.folds[:1]})  # the clean fold only
    r.run(r.prepare_real())
    r.run(r.train_stages(REAL_ID, sorted(set(known.segmenters) | {"ORDER"})) + r.law_stages("law")[:1])
    splits = json.loads((r.work / "nnUNet_preprocessed" / r.dataset(REAL_ID) / "splits_final.json").read_text())
    n_real = len(splits[r.scale.folds[0]]["train"])
    real = r.compare(REAL_ID, known.segmenters, "law_ratio_real")
    rows, lines = {}, ["| synthetic / real | synthetic cases kept | " + ROW_HEADER[0][2:], "|---:|---:|" + ROW_HEADER[1][1:]]
    for ratio in known.ratios:
        dataset_id = RATIOS[ratio]
        name = f"{law_name('law')}{int(100 * ratio)}"
        r.run([r.synthesize_stage("law", dataset_id, name, max(1, round(ratio * n_real)))])
        r.run(r.preprocess_stages(dataset_id))
        r.run(r.train_stages(dataset_id, known.segmenters))
        mixed = r.compare(dataset_id, known.segmenters, f"law_ratio_{int(100 * ratio)}")
        kept = json.loads((r.work / "nnUNet_raw" / r.dataset(dataset_id) / "provenance.json").read_text())["cases"]
        for segmenter, a, b in zip(known.segmenters, real["models"], mixed["models"]):
            row = dict(downstream_row(a, b), synthetic_cases=len(kept), ratio=ratio)
            rows.setdefault(segmenter, {})[str(ratio)] = row
            lines.append(f"| {ratio:.0%} | {len(kept)} " + row_line(segmenter, row))
    r.write_table("law_ratio", "How much LAW synthetic data: real only vs real + 25 / 50 / 100 % synthetic", lines,
                  {"rows": rows, "real_training_cases": n_real})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
