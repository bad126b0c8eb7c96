"""Image decoding for the data pipeline and DataLoader worker set-up (reads only; writes nothing).

Frames are decoded with OpenCV (faster than PIL for JPEG here) and returned as RGB ``uint8``
``(H, W, 3)`` arrays; OpenCV applies a JPEG's EXIF orientation tag (tests/test_images.py), so
Pillow is not needed for it (docs/dependencies.md). An unreadable or corrupt file raises
:class:`ImageReadError` naming the path instead of handing a ``None`` to the transforms.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

__all__ = ["ImageReadError", "read_image", "worker_init", "collate"]


class ImageReadError(OSError):
    """An image that does not exist or cannot be decoded; the message names the path."""


def read_image(path) -> np.ndarray:
    """Decode ``path`` to an RGB ``uint8`` array ``(H, W, 3)`` (greyscale files are expanded)."""
    path = os.fspath(path)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        if not os.path.exists(path):
            raise ImageReadError(f"image not found: {path}")
        raise ImageReadError(f"cannot decode image (corrupt or unsupported format): {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def worker_init(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: one thread per worker for OpenCV and torch.

    Random augmentation needs no seeding here: the transforms draw their per-sample seed from
    torch's global RNG, which the DataLoader seeds differently (and reproducibly) in each worker
    (``base_seed + worker_id``).
    """
    cv2.setNumThreads(0)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def collate(samples):
    """DataLoader ``collate_fn``: ``default_collate``, except in the main process (``num_workers=0``),
    where tensors are stacked with numpy.

    ``default_collate`` stacks with ``torch.stack``, which runs on torch's intra-op thread pool. On a
    2-core machine shared with other work, stacking 32 images of 3x176x176 there took 75-250 ms
    instead of 0.5 ms with one thread (threads waiting for a descheduled sibling), i.e. 10x fewer
    frames/s with ``num_workers=0``. Workers run one thread (:func:`worker_init`) and keep
    ``default_collate``, which writes the batch straight into shared memory for the main process.
    """
    import torch
    from torch.utils.data import default_collate, get_worker_info

    if get_worker_info() is not None or not samples or not isinstance(samples[0], dict):
        return default_collate(samples)
    out = {}
    for key, v in samples[0].items():
        if isinstance(v, torch.Tensor):
            out[key] = torch.from_numpy(np.stack([s[key].numpy() for s in samples]))
        else:
            out[key] = default_collate([s[key] for s in samples])
    return out
