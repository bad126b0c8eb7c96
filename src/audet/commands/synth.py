"""``audet synth``: synthetic face videos with known AU labels, in BP4D's raw release layout."""
from __future__ import annotations

import argparse

HELP = "generate a synthetic FACS benchmark (face videos with known AU labels, BP4D layout)"
DESCRIPTION = """\
Generate synthetic face videos with known AU labels (AUs 1,2,4,6,7,9,10,12,14,15,17,23,24,25,26)
in BP4D's raw release layout, which `audet prepare BP4D` reads (--layout DISFA: DISFA's layout for
`audet prepare DISFA`, docs/synth.md):

  DIR/BP4D-training/<subject>/<task>/<frame>.jpg   (e.g. F001/T1/0001.jpg; not aligned)
  DIR/AUCoding/AU_OCC/<subject>_<task>.csv         (header 0,1,2,4,...,26; 1/0, 9 = unknown)
  DIR/2DFeatures/<subject>_<task>.mat              (fit: 1 x n struct, pred = 68x2, 1-based)
  DIR/synth_meta.json                              (identities, habits, episodes, rates)

Presets (subjects x sequences x frames, image size):
  test     4 x 2 x 12 @128      (seconds; unit tests)
  quick   10 x 4 x 120 @256     (4,800 frames)
  default 24 x 6 x 120 @256     (17,280 frames; calibration and experiments)
  large   48 x 8 x 120 @256     (46,080 frames)
Any option below overrides the preset. The same --seed gives byte-identical files for any
--num-workers. See docs/synth.md for what each AU and knob looks like.

examples:
  audet synth --preset quick --out data/synth_quick --seed 0 --num-workers 2
  audet synth --preset test --out /tmp/s --subjects 6 --sequences 2 --frames 50 --size 256 \\
      --noise-landmarks 0.5
  audet synth --grid docs/img/synth_grid.png
"""

# option name -> (type, help); defaults come from the preset
_KNOBS = [
    ("subjects", int, "number of subjects (named F001, M001, F002, ...)"),
    ("sequences", int, "sequences (tasks T1, T2, ...) per subject; Tk has BP4D task k's emotion"),
    ("frames", int, "frames per sequence"),
    ("size", int, "image side in pixels (square JPEGs; the face is not aligned)"),
    ("rates", str, "target AU occurrence rates: BP4D (AAR Table I), DISFA, or '1=0.2,12=0.5'"),
    ("threshold", float, "label = intensity (0..5) >= threshold (DISFA uses >= 2) [2]"),
    ("tempo", float, "multiplies episode durations (onset/apex/offset) [1]"),
    ("expression", float, "fraction of frames inside emotion-prototype events [0.7]"),
    ("habits", float, "scale of subject habits: extra AUs with an emotion (confounder) [1]"),
    ("au_gain", float, "visual strength of every AU, displacement and texture (difficulty) [1]"),
    ("au_gains", str, "per-AU visual strength, e.g. '6=0.8,23=1.3' (calibration) [all 1]"),
    ("subtle", float, "extra visual strength of the subtle AUs 2, 7, 23, 24 [1]"),
    ("missing_labels", float, "fraction of label cells written as 9 (unknown), in runs [0.005]"),
    ("yaw", float, "max |yaw| in degrees, 2D foreshortening with per-point depth [18]"),
    ("pitch", float, "max |pitch| in degrees [10]"),
    ("roll", float, "max |in-plane rotation| in degrees [12]"),
    ("scale_jitter", float, "spread of face size between sequences (log scale) [0.12]"),
    ("shift", float, "max face-centre offset as a fraction of the image side [0.06]"),
    ("illumination", float, "strength of light gradient and brightness changes [0.5]"),
    ("blur", float, "max Gaussian blur sigma, pixels at 256 px [1]"),
    ("noise", float, "max sensor noise std, 0..255 units [4]"),
    ("jpeg_min", int, "lowest JPEG quality drawn per sequence [70]"),
    ("jpeg_max", int, "highest JPEG quality drawn per sequence [95]"),
    ("clutter", float, "background clutter density, 0 = plain wall [0.5]"),
    ("occlusion", float, "fraction of frames with a hand or bar over part of the face [0.04]"),
    ("glasses", float, "probability that a subject wears glasses [0.15]"),
    ("noise_landmarks", float, "std of landmark annotation noise, pixels at 256 px [0.5]"),
    ("lost_landmarks", float, "fraction of frames whose landmarks are lost (empty pred) [0.005]"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.data.synth.presets import PRESETS

    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="named size/settings preset [default]")  # fmt: skip
    p.add_argument("--out", help="output folder (required unless --grid)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same bytes [0]")
    from audet.commands._common import add_num_workers

    add_num_workers(p, 1, "parallel processes")
    from audet.commands._common import add_overwrite, add_quiet, deprecated_alias
    p.add_argument("--layout", choices=("BP4D", "DISFA"), default="BP4D",
                   help="raw release layout to write: BP4D (default) or DISFA (one video per subject, "
                        "intensity files, 66-point landmarks; read by `audet prepare DISFA`)")

    add_overwrite(p, "replace a data set already in --out (formerly --force)")
    deprecated_alias(p, "--force", "--overwrite", "overwrite", flag=True)
    add_quiet(p, "no progress bar or summary")
    p.add_argument("--grid", metavar="PNG",
                   help="instead of a data set, write a picture grid of AUs at apex vs neutral "
                        "and of identities/nuisances")  # fmt: skip
    g = p.add_argument_group("overrides of the preset")
    for name, typ, help_ in _KNOBS:
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)


def run(args: argparse.Namespace) -> int:
    from audet.data.synth import generate, get_config

    overrides = {name: getattr(args, name) for name, _, _ in _KNOBS}
    cfg = get_config(args.preset, **overrides)
    if args.grid:
        from audet.data.synth.grid import save_grid

        path = save_grid(args.grid, seed=args.seed, size=overrides.get("size") or 160)
        if not args.quiet:
            print(f"wrote {path}")
        return 0
    if not args.out:
        raise ValueError("--out is required (or use --grid PNG)")
    log = None if args.quiet else print
    # what made OUT is checked before anything is written there: the same preset, seed, settings and
    # layout reuse a finished data set; others are refused unless --overwrite
    import dataclasses
    from pathlib import Path

    from audet.utils.manifest import check_output, write_manifest

    inputs = {"options": {"preset": args.preset, "seed": args.seed, "settings": dataclasses.asdict(cfg),
                          "layout": args.layout}}
    state = check_output(args.out, inputs, command="synth", fresh=args.overwrite)
    out = args.out
    if args.layout == "DISFA":  # generated in BP4D's layout below OUT, then rewritten in DISFA's
        out = str(Path(out) / ".bp4d_layout")
        finished = state == "same" and not Path(out).exists() and any(Path(args.out).glob("*/SN*"))
    else:
        finished = state == "same" and (Path(args.out) / "synth_meta.json").is_file()
    if finished and not args.overwrite:
        if not args.quiet:
            print(f"{args.out} already holds this data set (same preset, seed, settings and layout); reused")
        return 0
    write_manifest(args.out, inputs, command="synth")
    try:
        generate(cfg, out, seed=args.seed, workers=args.num_workers, force=state != "new",
                 progress=None if not args.quiet else False, log=log)  # fmt: skip
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    if args.layout == "DISFA":
        import shutil

        from audet.data.synth.disfa_layout import to_disfa_layout

        got = to_disfa_layout(out, args.out)
        shutil.rmtree(out)
        if log:
            log(f"rewrote in DISFA's layout: {len(got['subjects'])} subjects (SN001..), {got['frames']} frames, "
                f"{got['dropped']} without landmarks or with an unknown label")
    return 0
