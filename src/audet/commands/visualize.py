"""``audet visualize --checkpoint CKPT IMAGE...``: average constrained self-attention per AU (AC2D Fig. 5)."""
from __future__ import annotations

import argparse

HELP = "draw each AU's average self-attention over aligned faces (AC2D Fig. 5) to a PNG"
DESCRIPTION = """\
Draw, for every image (rows) and AU (columns), the model's average self-attention A^avg
(AC2D Eq. 6) overlaid on the face, with a colour bar, the predicted probability in each title
and, for images inside a prepared directory, the ground truth beside it (green: the prediction
at 0.5 agrees, red: it does not).

IMAGE files are aligned 200x200 faces, as `audet prepare` writes them (OUT/images/...); they are
centre-cropped to the model's input size. `--channels K` adds K rows per image with individual
attention channels (one query of one head, the same channels for every image), as the paper's
figure does. Works for any model whose output has aux["attention"].

Example:
  audet visualize -c runs/demo/train/best.safetensors runs/demo/prepared/images/BP4D/F001/T1/0001.jpg --out att.png
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import add_checkpoint

    add_checkpoint(p, "audet checkpoint (.safetensors with its .json)", old_before=("images",))
    p.add_argument("images", nargs="+", help="aligned face images (200x200, as written by `audet prepare`)")
    p.add_argument("--out", default="attention.png", help="output PNG (default: %(default)s)")
    from audet.commands._common import nonnegative_int

    p.add_argument("--channels", type=nonnegative_int, default=0, metavar="K",
                   help="extra rows of example attention channels per image")
    p.add_argument("--no-truth", action="store_true",
                   help="do not look up the images' ground truth in the prepared directory they are in")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing the example channels")


def run(args: argparse.Namespace) -> int:
    from audet.commands._common import check_checkpoint
    from audet.models.checkpoint import load_checkpoint
    from audet.viz import attention_panels, load_aligned

    check_checkpoint(args.checkpoint)
    for p in args.images:  # every image is checked before the model runs or anything is written
        load_aligned(p, 1)
    model = load_checkpoint(args.checkpoint)
    path = attention_panels(model, args.images, args.out, channels=args.channels, seed=args.seed,
                            truth=None if args.no_truth else "auto")
    print(f"wrote {path}")
    return 0
