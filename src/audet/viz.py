"""Figures: attention overlays in the manner of AC2D Fig. 5.

:func:`attention_figure` draws, for each image (rows) and each AU (columns), the average
constrained self-attention A^avg (AC2D Eq. 6) upsampled to the image and overlaid on it;
optional extra rows show individual attention channels (one query of one head), chosen once and
shared by all images so that the variation across samples is visible, as in the paper.

Each panel's title gives the predicted probability AND the ground truth when it is known
(``p=0.73 gt=1``, green when the prediction at 0.5 agrees, red when not), and a colour bar says
what the overlay's colours mean, so a reader can tell a model that works from one that predicts
0.5 everywhere. :func:`attention_panels` runs a model on aligned face files and draws the
figure; :func:`labels_for_images` finds the ground truth of faces inside a prepared directory.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


def _to_display(image: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """A CHW normalised tensor/array or an HWC uint8 array -> HWC float in [0, 1]."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    elif img.max() > 1.5:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def upsample_map(att: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a square attention map to ``size`` x ``size``, scaled to [0, 1]."""
    import cv2

    up = cv2.resize(np.asarray(att, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def attention_figure(
    images: Sequence[np.ndarray],
    attention: np.ndarray,
    aus: Sequence[int],
    out: str | Path,
    *,
    channels: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
    probs: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    alpha: float = 0.55,
) -> Path:
    """Write a PNG grid of attention overlays with a colour bar.

    images: N images (CHW normalised or HWC uint8), attention: (N, A, h, w) average maps,
    channels: optional (N, A, K, h, w) example channels drawn as K extra rows per image,
    probs: optional (N, A) predicted probabilities printed in the panel titles,
    truth: optional (N, A) ground truth (1 present, 0 absent, anything else unknown) printed
    beside them; with both, a title is green when ``p >= 0.5`` agrees with the truth, else red.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from audet.utils.io import atomic_path

    attention = np.asarray(attention)
    n, a = attention.shape[:2]
    k = 0 if channels is None else channels.shape[2]
    rows = n * (1 + k)
    fig, axes = plt.subplots(rows, a, figsize=(1.6 * a + 0.9, 1.7 * rows + 0.6), squeeze=False)
    for i in range(n):
        img = _to_display(images[i])
        size = img.shape[0]
        for r in range(1 + k):
            for j in range(a):
                ax = axes[i * (1 + k) + r, j]
                m = attention[i, j] if r == 0 else channels[i, j, r - 1]
                ax.imshow(img)
                ax.imshow(upsample_map(m, size), cmap="jet", alpha=alpha, vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    t, colour = f"AU{aus[j]}", "black"
                    if probs is not None:
                        t += f" p={float(probs[i, j]):.2f}"
                    if truth is not None:
                        gt = truth[i, j]
                        known = gt in (0, 1)
                        t += f" gt={int(gt)}" if known else " gt=?"
                        if known and probs is not None:
                            colour = "green" if (float(probs[i, j]) >= 0.5) == bool(gt) else "red"
                    ax.set_title(t, fontsize=7, color=colour)
            label = (titles[i] if titles else f"image {i}") if r == 0 else f"channel {r}"
            if r == 0 and truth is not None and probs is not None:
                known = np.isin(truth[i], (0, 1))
                agree = int((((np.asarray(probs[i]) >= 0.5) == (truth[i] == 1)) & known).sum())
                label += f"\n{agree}/{int(known.sum())} AUs right"
            axes[i * (1 + k) + r, 0].set_ylabel(label, fontsize=7)
    legend = "p = predicted probability" if probs is not None else ""
    if truth is not None:
        legend += ("; " if legend else "") + "gt = ground truth (1 present, 0 absent, ? unlabelled)"
        if probs is not None:
            legend += "; green: p >= 0.5 agrees with gt, red: it does not"
    elif probs is not None:
        legend += "; no ground truth for these images (not found in a prepared directory)"
    if probs is not None and np.size(probs) > 1:
        lo, hi = float(np.min(probs)), float(np.max(probs))
        if hi - lo < 0.05:
            legend += (f"\nWARNING: every prediction lies in [{lo:.3f}, {hi:.3f}]: the model does not tell AUs or "
                       "faces apart (untrained or collapsed); the attention maps say nothing about AUs")
    top = 1 - (0.03 * (1 + legend.count("\n")) * 7 / max(1.7 * rows + 0.6, 1)) if legend else 1
    fig.tight_layout(rect=(0, 0, 0.9, top))
    if legend:
        fig.suptitle(legend, fontsize=7, y=0.995, va="top", color="darkred" if "WARNING" in legend else "black")
    from matplotlib import cm, colors

    cax = fig.add_axes((0.92, 0.15, 0.018, 0.7))
    bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet"), cax=cax)
    bar.set_label("attention, each map scaled to its own min..max", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# from files: aligned faces, their ground truth, a model's attention
# --------------------------------------------------------------------------------------------
def load_aligned(path: str | Path, crop: int, resize: int | None = None) -> np.ndarray:
    """Read an aligned face as RGB uint8, resize it to ``resize`` (the model's ``preprocess["resize"]``,
    if any) and centre-crop it to ``crop``; a one-line ValueError/FileNotFoundError if it cannot."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file; give aligned faces as `audet prepare` writes them "
                                "(OUT/images/...)")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None  # imdecode: no OpenCV warning line
    if img is None:
        raise ValueError(f"{path}: not a readable image (JPEG/PNG expected)")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if resize:
        from audet.data.transforms import resize_image

        img = resize_image(img, int(resize))
    h, w = img.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"{path}: image is {w}x{h}, smaller than the model's {crop}x{crop} input; give the "
                         "200x200 aligned faces `audet prepare` writes")
    top, left = (h - crop) // 2, (w - crop) // 2
    return img[top : top + crop, left : left + crop]


def _prepared_root(image: Path) -> Path | None:
    for parent in image.resolve().parents:
        if (parent / "dataset.json").is_file() and (parent / "list").is_dir():
            return parent
    return None


def labels_for_images(paths: Sequence[str | Path], aus: Sequence[int]) -> np.ndarray | None:
    """Ground truth ``(N, len(aus))`` (1, 0, or 9 = unknown) of aligned faces inside a prepared
    directory (found by walking up from each image to a ``dataset.json``), mapped by AU number;
    None when no image has a label."""
    import json

    from audet.data.listfile import read_list

    out = np.full((len(paths), len(aus)), 9, np.int64)
    found = False
    tables: dict[Path, dict[str, np.ndarray]] = {}
    for i, p in enumerate(paths):
        root = _prepared_root(Path(p))
        if root is None:
            continue
        if root not in tables:
            table: dict[str, np.ndarray] = {}
            try:
                meta = json.loads((root / "dataset.json").read_text())
                data_aus = [int(a) for a in meta.get("aus") or []]
                prefixes = [k for k, v in (meta.get("prefixes") or {}).items() if not (v or {}).get("train")]
                prefixes = prefixes or sorted(f.name[: -len("_path.txt")] for f in (root / "list").glob("*_path.txt"))
                for prefix in prefixes:
                    lists = read_list(root, prefix, check_images=False)
                    img_root = (lists.image_root or root / "images").resolve()
                    for rel, lab in zip(lists.paths, lists.labels):
                        table[str((img_root / rel).resolve())] = {a: int(v) for a, v in zip(data_aus, lab)}
            except (OSError, ValueError) as exc:  # a damaged directory: draw the figure without truth
                log.warning("no ground truth from %s: %s", root, exc)
            tables[root] = table
        row = tables[root].get(str(Path(p).resolve()))
        if row is None:
            continue
        for j, a in enumerate(aus):
            if int(a) in row:
                out[i, j] = row[int(a)]
                found = True
    return out if found else None


def attention_panels(
    model,
    images: Sequence[str | Path],
    out: str | Path,
    *,
    channels: int = 0,
    seed: int = 0,
    truth: np.ndarray | None | str = "auto",
) -> Path:
    """Run ``model`` on aligned face files and write :func:`attention_figure` to ``out``.

    ``truth``: ``"auto"`` looks the labels up in the prepared directory the images live in
    (:func:`labels_for_images`), an ``(N, A)`` array gives them, None draws without.
    ``channels`` > 0 adds that many rows of individual attention channels per image.
    Raises ValueError when the model has no attention output (or cannot give channels).
    """
    import torch

    pre = getattr(model, "preprocess", {}) or {}
    crop = int(pre.get("crop_size", 176))
    faces = [load_aligned(p, crop, pre.get("resize")) for p in images]
    mean = torch.tensor(pre.get("mean", (0.5,) * 3)).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", (0.5,) * 3)).view(1, 3, 1, 1)
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float().div(255).sub(mean).div(std)
    name = getattr(model, "model_name", type(model).__name__)
    with torch.inference_mode():
        try:
            res = model(x, return_full_attention=True) if channels > 0 else model(x)
        except TypeError:
            raise ValueError(f"model {name!r} cannot return individual attention channels; drop --channels") from None
    if "attention" not in res.aux:
        raise ValueError(f"model {name!r} has no attention output to visualise")
    att = res.aux["attention"].float().numpy()
    chans = None
    if channels > 0:
        n, a, h, w = att.shape
        full = res.aux["attention_full"].float().reshape(n, a, -1, h * w)  # (N, A, heads*queries, keys)
        rng = np.random.default_rng(seed)
        pick = rng.choice(full.shape[2], size=min(channels, full.shape[2]), replace=False)
        chans = full[:, :, pick].reshape(n, a, len(pick), h, w).numpy()
    aus = [int(a) for a in model.aus]
    if isinstance(truth, str):
        truth = labels_for_images(images, aus)
    probs = torch.sigmoid(res.logits.float()).numpy()
    return attention_figure(faces, att, aus, out, channels=chans, probs=probs, truth=truth,
                            titles=[Path(p).name for p in images])


def f1_bars(result: dict, path: str | Path, title: str = "") -> Path:
    """Per-AU F1 (percent) of a model beside the all-present prior, as bars, from the result of
    :func:`audet.engine.evaluate.evaluate` with ``vs_prior``; the legend gives both means and the
    bootstrap CI of their difference. Returns ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from audet.utils.io import atomic_path

    aus = [int(a) for a in result["aus"]]
    model = [100 * float(result["per_au"].get(a, result["per_au"].get(str(a), np.nan))) for a in aus]
    prior = result.get("prior") or {}
    prior_au = [100 * float((prior.get("per_au") or {}).get(a, np.nan)) for a in aus]
    x = np.arange(len(aus))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(aus) + 2), 3.6), dpi=110)
    w = 0.4
    ax.bar(x - w / 2, model, w, label=f"model (mean {np.nanmean(model):.1f})", color="tab:blue")
    if prior:
        ci = f"; difference {prior['diff']:+.1f}, {100 * prior.get('ci', 0.95):.0f}% CI [{prior['low']:.1f}, {prior['high']:.1f}]"
        ax.bar(x + w / 2, prior_au, w, label=f"all-present prior (mean {np.nanmean(prior_au):.1f}){ci}",
               color="tab:gray")
    ax.set_xticks(x, [f"AU{a}" for a in aus])
    ax.set_ylabel("F1-frame (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.set_title(title or "per-AU F1", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
