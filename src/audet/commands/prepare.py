"""``audet prepare``: raw release -> aligned crops, list files, folds (docs/datasets.md)."""
from __future__ import annotations

import argparse
import json

HELP = "prepare a raw AU release (BP4D, DISFA, GFT, BP4D+, Aff-Wild2): align, list files, folds"

DESCRIPTION = """\
Read a raw release in its own layout, convert landmarks to 49 points, binarise labels
(DISFA: intensity >= 2), align every frame to 200x200 (protocol section 2) and write

  OUT/images/<DATASET>/<subject>/<sequence>/<frame>.jpg   aligned crops (JPEG quality 95)
  OUT/list/<prefix>_{path,land,AUoccur}.txt                per part / training combination
  OUT/list/<prefix>_{weight,p_n_weight}.txt                training prefixes only
  OUT/dataset.json                                         AUs, parts, folds, counts
  OUT/prepare_summary.json                                 frames written / skipped by reason

Work is split over worker processes by sequence and is resumable: re-running the same
command after an interruption skips finished sequences (OUT/.prepare/ manifests) and
produces the same bytes as an uninterrupted run. Bad frames are skipped and reported.

Expected layouts (--raw):
  BP4D       BP4D-training/<subject>/<task>/<frame>.jpg, AUCoding/AU_OCC/<subject>_<task>.csv,
             2DFeatures/<subject>_<task>.mat
  DISFA      Videos_LeftCamera/LeftVideo<SN>_comp.avi, ActionUnit_Labels/<SN>/<SN>_au<N>.txt,
             Landmark_Points/<SN>/tmp_frame_lm/*.mat
  GFT        images/<subject>/<frame>.jpg (or videos/<subject>.mp4), AU_OCC/<subject>.csv,
             landmarks/<subject>.csv, split file (--split or split.json)   [assumed layout]
  BP4D+      2D+3D/<subject>/<task>/ (or 2D+3D/<subject>.zip), AUCoding/AU_OCC/<subject>_<task>.csv,
             2DFeatures/<subject>_<task>.mat (else --landmarker)
  Aff-Wild2  annotations/AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt,
             cropped_aligned/<video>/<frame>.jpg (or the raw videos); needs --landmarker

examples:
  audet prepare BP4D --raw /data/BP4D --out prepared/bp4d --num-workers 2
  audet prepare DISFA --raw /data/DISFA --out prepared/disfa
  audet prepare GFT --raw /data/GFT --out prepared/gft --split gft_split.json
  audet prepare Aff-Wild2 --raw /data/affwild2 --out prepared/affwild2 --landmarker NAME
      (NAME: dlib, mtcnn or a landmarker registered in audet.data.prepare.landmarks; "fake" is for tests)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET",
                   help="BP4D, DISFA, GFT, BP4D+ or Aff-Wild2 (case-insensitive)")  # fmt: skip
    from audet.commands._common import add_aus, add_num_workers, add_quiet, deprecated_alias

    p.add_argument("--raw", metavar="DIR", help="the raw release folder (required)")
    deprecated_alias(p, "--root", "--raw", "raw", metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created): the prepared directory that --data / data.root take")
    add_num_workers(p, 1, "worker processes")
    p.add_argument("--parts", dest="folds", choices=("official", "auto"), default=None,
                   help="parts: official lists of protocol section 5, or deterministic "
                        "assign_parts(seed). Default: official when every subject is listed "
                        "and the release is not synthetic, else auto (with a notice). "
                        "GFT: auto = seeded split with the official 78/18 proportions")  # fmt: skip
    deprecated_alias(p, "--folds", "--parts", "folds", choices=("official", "auto"))
    p.add_argument("--seed", type=int, default=0, help="seed of --parts auto (default 0)")
    add_aus(p, "AU numbers and label-column order (default: the dataset's AU set)")
    p.add_argument("--image-format", choices=("jpg", "png"), default="jpg",
                   help="aligned crops as JPEG quality 95 (default) or lossless PNG")  # fmt: skip
    p.add_argument("--split", dest="split_file", metavar="FILE",
                   help="GFT train/test subjects: JSON {\"train\": [...], \"test\": [...]} "
                        "or text lines '<train|test> <subject>'")  # fmt: skip
    p.add_argument("--landmarker", dest="detector", metavar="NAME",
                   help="frame landmarker for releases without landmarks (Aff-Wild2; BP4D+ without "
                        "2DFeatures): dlib, mtcnn (the faces extra) or fake (tests); "
                        "see audet.data.prepare.landmarks (formerly --detector)")  # fmt: skip
    deprecated_alias(p, "--detector", "--landmarker", "detector", metavar="NAME")
    p.add_argument("--landmarker-arg", dest="detector_arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the landmarker factory (repeatable; formerly --detector-arg)")
    deprecated_alias(p, "--detector-arg", "--landmarker-arg", "detector_arg", metavar="KEY=VALUE")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "redo every sequence, also in an --out prepared from another release or with other "
                     "options (formerly --force)")
    deprecated_alias(p, "--force", "--overwrite", "overwrite", flag=True)
    add_quiet(p)


def _parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--landmarker-arg expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _check_out(out: str, image_format: str) -> None:
    """Refuse to mix crop formats in one prepared directory (the old crops would stay beside the new)."""
    from audet.commands._common import UsageError
    from audet.data.meta import read_dataset_meta

    try:
        old = read_dataset_meta(out, required=False).get("image_format")
    except ValueError:  # a damaged dataset.json is rewritten by the preparation
        return
    if old and old != image_format:
        raise UsageError(f"--out {out} already holds {old} crops; re-run with --image-format {old}, "
                         f"or give a new --out for {image_format} crops (or delete {out} first)")


def run(args: argparse.Namespace) -> int:
    from audet.commands._common import UsageError, parse_aus
    from audet.data.prepare import prepare_dataset

    if not args.raw:  # not argparse's required=: the deprecated --root alias fills the same field
        raise UsageError("--raw DIR is required: the folder of the raw release (see `audet prepare --help`)")
    aus = parse_aus(args.aus)  # a missing --raw folder is reported by prepare_dataset with its layout
    _check_out(args.out, args.image_format)
    # what made OUT is checked before anything is written there (same inputs: the run resumes)
    import os

    from audet.utils.manifest import check_output, write_manifest

    inputs = {"dataset": args.dataset.upper(), "raw": os.path.abspath(args.raw),
              "options": {"aus": aus, "parts": args.folds, "seed": args.seed, "image_format": args.image_format,
                          "split": os.path.abspath(args.split_file) if args.split_file else None,
                          "landmarker": args.detector, "landmarker_args": sorted(args.detector_arg)}}
    check_output(args.out, inputs, command="prepare", fresh=args.overwrite)
    write_manifest(args.out, inputs, command="prepare")
    prepare_dataset(
        args.dataset,
        args.raw,
        args.out,
        workers=args.num_workers,
        folds=args.folds,
        seed=args.seed,
        aus=tuple(aus) if aus else None,
        image_format=args.image_format,
        split_file=args.split_file,
        detector=args.detector,
        detector_kwargs=_parse_kv(args.detector_arg),
        force=args.overwrite,
        progress=not args.quiet,
    )
    return 0
