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
centre-cropped to the model's input size. Any other photo is first aligned as `audet predict`
aligns faces (MTCNN, 68 dlib landmarks, protocol alignment of its largest face), and the command
says so; a photo without a face is refused. `--channels K` adds K rows per image with individual
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
    import tempfile

    with tempfile.TemporaryDirectory(prefix="audet-visualize-") as tmp:
        images = [_aligned_path(p, model, tmp, i) for i, p in enumerate(args.images)]
        path = attention_panels(model, images, args.out, channels=args.channels, seed=args.seed,
                                truth=None if args.no_truth else "auto")
    print(f"wrote {path}")
    return 0


def is_aligned(path, size: int = 200, crop: int = 0) -> bool:
    """An aligned face: inside a prepared directory, or a ``size`` x ``size`` image (an image
    smaller than ``crop`` counts too: :func:`audet.viz.load_aligned` refuses it with its size)."""
    from pathlib import Path

    import cv2

    from audet.viz import _prepared_root

    if _prepared_root(Path(path)) is not None:
        return True
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return img is not None and (img.shape[0] == img.shape[1] == size or min(img.shape[:2]) < crop)


def _aligned_path(path: str, model, tmp: str, i: int) -> str:
    """``path`` if it is an aligned face, else its largest face aligned as `audet predict` does (a file in ``tmp``)."""
    import os

    import cv2

    from audet.commands._common import UsageError

    pre = getattr(model, "preprocess", {}) or {}
    size = int(pre.get("aligned_size", 200))
    if is_aligned(path, size, int(pre.get("crop_size", 176))):
        return path
    from audet.inference.align import FaceAligner
    from audet.faces import FaceModelsMissing, make_landmarker
    from audet.faces import make_face_detector as make_detector
    from audet.inference.media import read_image

    image = read_image(path)
    try:
        faces = make_detector("mtcnn").detect(image)
        if not faces:
            raise UsageError(f"{path}: not an aligned face and no face was found in it; give a photo with a face "
                             "or the aligned faces `audet prepare` writes")
        box = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).box
        lm = make_landmarker("dlib").landmarks(image, [box])[0]
    except FaceModelsMissing as exc:
        raise UsageError(f"{path}: not an aligned face, and aligning it needs the face models ({exc})") from None
    if lm is None:
        raise UsageError(f"{path}: not an aligned face and its landmarks could not be found")
    aligned, _ = FaceAligner(getattr(model, "preprocess", {}) or {}).align(image, lm)
    out = os.path.join(tmp, f"{i:03d}_{os.path.basename(path)}.png")
    cv2.imwrite(out, cv2.cvtColor(aligned, cv2.COLOR_RGB2BGR))
    print(f"{path}: not an aligned face; aligned by its landmarks as `audet predict` does (largest face)")
    return out
