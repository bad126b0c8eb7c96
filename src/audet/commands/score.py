"""``audet score PREDICTIONS --data DIR [--fold K]``: score per-frame predictions (audet's or another
tool's) against a prepared split, under the protocol of ``audet evaluate``."""
from __future__ import annotations

import argparse

HELP = "score another tool's (or audet's) per-frame AU predictions against a prepared split's labels"
DESCRIPTION = """Match the rows of PREDICTIONS (CSV files or a folder of them) to the labelled
frames of a prepared split by sequence and frame number and print the per-AU F1-frame table of
`audet evaluate` (plus F1-micro, ROC-AUC and average precision where the tool gives scores).

Formats (told apart by their columns):
  audet     AUnn_p: `audet evaluate --save-predictions FILE` or `audet predict` tables
  OpenFace  2.x FeatureExtraction CSV: AUnn_c (presence), or AUnn_r >= --threshold (intensity)
  py-feat   its CSV: AUnn probabilities (with input, frame)

AUs the tool does not predict are reported as missing (not as zero); rows that match no labelled
frame and labelled frames without a row are counted; frames where the tool found no face
(success 0) are left out (--missing-frames absent scores them, and frames without a row, as no AU).

  audet evaluate -c runs/x/best.safetensors --data data/bp4d --save-predictions preds.csv
  audet score preds.csv --data data/bp4d            # the same F1 as evaluate printed
  audet score openface/ --data data/disfa --fold 1 --threshold 1.0"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import nonnegative_int

    p.add_argument("predictions", nargs="+", metavar="PREDICTIONS", help="prediction CSV file(s) or a folder of them")
    p.add_argument("--data", required=True, metavar="DIR", help="prepared directory (dataset.json, list/)")
    p.add_argument("--fold", type=nonnegative_int, default=None, metavar="K",
                   help="score on the test prefix of fold K of dataset.json (default: fold 0)")
    p.add_argument("--prefix", help="score on this list prefix instead of a fold's test prefix")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="OpenFace intensities: AU present when AUnn_r >= T (used instead of AUnn_c)")
    p.add_argument("--frame-offset", type=int, default=0, metavar="N",
                   help="add N to the tool's frame numbers before matching (e.g. 1-based vs 0-based)")
    p.add_argument("--missing-frames", choices=("skip", "absent"), default="skip",
                   help="labelled frames without a row or without a face: leave out (default) or score as no AU")
    p.add_argument("--out", help="output path stem for .md and .csv (default: next to the first predictions file)")


def run(args) -> int:
    from pathlib import Path

    from audet.commands._common import UsageError, check_prepared
    from audet.engine.reports import write_table
    from audet.engine.predictions import read_predictions, score_predictions, split_frames
    from audet.metrics import to_markdown

    meta = check_prepared(args.data, "--data")
    if args.prefix and args.fold is not None:
        raise UsageError("give --fold or --prefix, not both")
    if args.prefix:
        prefix = args.prefix
    else:
        from audet.data.meta import read_fold

        prefix = read_fold(args.data, args.fold or 0, meta)["test"]
    if not (Path(args.data) / "list" / f"{prefix}_path.txt").is_file():
        raise UsageError(f"{args.data}/list has no {prefix}_path.txt")
    data = split_frames(args.data, prefix)
    pred = read_predictions(args.predictions, sorted(data["sequence"].unique()), threshold=args.threshold,
                            frame_offset=args.frame_offset)
    name = Path(args.predictions[0]).name + (f" (+{len(args.predictions) - 1})" if len(args.predictions) > 1 else "")
    res = score_predictions(pred, data, missing=args.missing_frames, name=name,
                            data_name=f"{args.data}:{prefix}")
    print(to_markdown(res["table"]), end="")
    lines = [f"{res['n_scored']} of {res['n_data']} labelled frames of {Path(args.data).name}/{prefix} scored "
             f"({pred.kind} format); {res['unmatched_rows']} prediction rows match no labelled frame; "
             f"{res['data_without_row']} labelled frames have no row; {res['no_face']} rows without a face"
             + (" (scored as no AU)" if args.missing_frames == "absent" else " (left out)")]
    if res["missing_aus"]:
        lines.append("missing (the tool does not predict them; not scored, not zero): "
                     + " ".join(f"AU{a}" for a in res["missing_aus"])
                     + f"; Avg is over the {len(res['aus'])} AUs it predicts")
    lines.append(f"F1-micro {100 * res['f1_micro']:.1f}")
    if res.get("auc"):
        import numpy as np

        lines.append(f"mean ROC-AUC {100 * np.nanmean(list(res['auc'].values())):.1f}, mean AP "
                     f"{100 * np.nanmean(list(res['ap'].values())):.1f} (over the AUs with scores)")
    lines += res["notes"]
    for line in lines:
        print(line)
    first = Path(args.predictions[0])
    out = args.out or str((first if first.is_dir() else first.with_suffix("")).parent /
                          f"{first.with_suffix('').name}_score_{Path(args.data).name}_{prefix}")
    write_table(res["table"], out, title=f"{name} scored on {prefix}", notes=lines)
    print(f"wrote {out}.md and {out}.csv")
    return 0
