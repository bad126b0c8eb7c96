"""Figures: attention overlays in the manner of AC2D Fig. 5.

:func:`attention_figure` draws, for each image (rows) and each AU (columns), the average
constrained self-attention A^avg (AC2D Eq. 6) upsampled to the image and overlaid on it;
optional extra rows show individual attention channels (one query of one head), chosen once and
shared by all images so that the variation across samples is visible, as in the paper.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


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
    alpha: float = 0.55,
) -> Path:
    """Write a PNG grid of attention overlays.

    images: N images (CHW normalised or HWC uint8), attention: (N, A, h, w) average maps,
    channels: optional (N, A, K, h, w) example channels drawn as K extra rows per image,
    probs: optional (N, A) predicted probabilities printed in the panel titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from audet.utils.io import atomic_path

    attention = np.asarray(attention)
    n, a = attention.shape[:2]
    k = 0 if channels is None else channels.shape[2]
    rows = n * (1 + k)
    fig, axes = plt.subplots(rows, a, figsize=(1.6 * a, 1.7 * rows), squeeze=False)
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
                    t = f"AU{aus[j]}"
                    if probs is not None:
                        t += f" p={float(probs[i, j]):.2f}"
                    ax.set_title(t, fontsize=7)
            label = (titles[i] if titles else f"image {i}") if r == 0 else f"channel {r}"
            axes[i * (1 + k) + r, 0].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
