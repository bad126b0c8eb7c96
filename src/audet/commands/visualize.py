"""``audet visualize CHECKPOINT IMAGE...``: average constrained self-attention per AU (AC2D Fig. 5)."""
from __future__ import annotations

import argparse

HELP = "draw each AU's average self-attention over aligned faces (AC2D Fig. 5) to a PNG"
DESCRIPTION = """\
Draw, for every image (rows) and AU (columns), the model's average self-attention A^avg
(AC2D Eq. 6) overlaid on the face, with the predicted probability in each title.

IMAGE files are aligned 200x200 faces, as `audet prepare` writes them (OUT/images/...); they are
centre-cropped to the model's input size. `--channels K` adds K rows per image with individual
attention channels (one query of one head, the same channels for every image), as the paper's
figure does. Works for any model whose output has aux["attention"].

Example:
  audet visualize runs/demo/train/best.safetensors runs/demo/prepared/images/BP4D/F001/T1/0001.jpg --out att.png
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="audet checkpoint (.safetensors with its .json)")
    p.add_argument("images", nargs="+", help="aligned face images (200x200, as written by `audet prepare`)")
    p.add_argument("--out", default="attention.png", help="output PNG (default: %(default)s)")
    p.add_argument("--channels", type=int, default=0, help="extra rows of example attention channels per image")
    p.add_argument("--seed", type=int, default=0, help="seed for choosing the example channels")


def load_aligned(path: str, crop: int, resize: int | None = None):
    """Read an aligned face as RGB uint8, resize it to ``resize`` (the model's ``preprocess["resize"]``,
    if any) and centre-crop it to ``crop``; a clear error if unreadable."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if resize:
        from audet.data.transforms import resize_image

        img = resize_image(img, int(resize))
    h, w = img.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"{path}: image is {w}x{h}, smaller than the model's {crop}x{crop} input")
    top, left = (h - crop) // 2, (w - crop) // 2
    return img[top : top + crop, left : left + crop]


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from audet.engine.checkpoint import load_checkpoint
    from audet.viz import attention_figure

    model = load_checkpoint(args.checkpoint)
    pre = model.preprocess
    crop = int(pre.get("crop_size", 176))
    faces = [load_aligned(p, crop, pre.get("resize")) for p in args.images]
    mean = torch.tensor(pre.get("mean", (0.5,) * 3)).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", (0.5,) * 3)).view(1, 3, 1, 1)
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    want_full = args.channels > 0
    with torch.inference_mode():
        try:
            out = model(x, return_full_attention=want_full) if want_full else model(x)
        except TypeError:
            raise ValueError(f"model {model.model_name!r} cannot return individual attention channels; drop --channels") from None
    if "attention" not in out.aux:
        raise ValueError(f"model {model.model_name!r} has no attention output to visualise")
    att = out.aux["attention"].float().numpy()
    channels = None
    if want_full:
        n, a, h, w = att.shape
        full = out.aux["attention_full"].float().reshape(n, a, -1, h * w)  # (N, A, heads*queries, keys)
        rng = np.random.default_rng(args.seed)
        pick = rng.choice(full.shape[2], size=min(args.channels, full.shape[2]), replace=False)
        channels = full[:, :, pick].reshape(n, a, len(pick), h, w).numpy()
    aus = list(model.aus or range(1, model.num_aus + 1))
    from pathlib import Path

    path = attention_figure(faces, att, aus, args.out, channels=channels, probs=out.probs.numpy(),
                            titles=[Path(p).name for p in args.images])
    print(f"wrote {path}")
    return 0
