"""From detected 68-point landmarks to the model's input tensor, exactly as in training.

1. 68 -> 49 points (:func:`audet.facs.landmarks68_to_49`: no jaw, no inner-mouth corners);
2. protocol alignment (protocol section 2, :func:`audet.geometry.align_face`): five points, eye
   line level, ``aligned_size`` x ``aligned_size`` (200) warp with grey 128 border;
3. the checkpoint's own evaluation transform,
   :meth:`audet.data.transforms.EvalTransform.from_preprocess` (optional resize, centre crop,
   mean/std normalisation), i.e. the same code that produced the test-time inputs in training.
"""
from __future__ import annotations

import numpy as np
import torch

from audet.data.transforms import EvalTransform
from audet.facs import landmarks68_to_49
from audet.geometry import align_face

__all__ = ["FaceAligner"]


class FaceAligner:
    """Aligns faces and turns them into normalised tensors with a model's ``preprocess`` dict."""

    def __init__(self, preprocess: dict):
        self.preprocess = dict(preprocess)
        self.size = int(self.preprocess.get("aligned_size", 200))
        self.transform = EvalTransform.from_preprocess(self.preprocess)
        color = str(self.preprocess.get("color", "RGB")).upper()
        if color not in ("RGB", "BGR"):
            raise ValueError(f"checkpoint preprocess color {color!r} is not RGB or BGR")
        self.bgr = color == "BGR"

    def align(self, image: np.ndarray, landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(aligned uint8 (S, S, 3), 49 aligned landmarks)`` for one face of an RGB image."""
        lm49 = landmarks68_to_49(np.asarray(landmarks68, dtype=np.float64))
        warped, pts, _ = align_face(image, lm49, size=self.size)
        return warped, pts

    def to_tensor(self, aligned: np.ndarray, landmarks49: np.ndarray) -> torch.Tensor:
        """Normalised ``(3, c, c)`` float32 tensor of one aligned face (the checkpoint's transform)."""
        face = aligned[..., ::-1] if self.bgr else aligned
        x, _ = self.transform(np.ascontiguousarray(face), np.asarray(landmarks49, dtype=np.float32))
        return x

    def __call__(self, image: np.ndarray, landmarks68: np.ndarray) -> torch.Tensor:
        return self.to_tensor(*self.align(image, landmarks68))
