"""From detected 68-point landmarks to the model's input tensor, exactly as in training.

1. 68 -> 49 points (:func:`audet.facs.landmarks68_to_49`: no jaw, no inner-mouth corners);
2. protocol alignment (protocol section 2, :func:`audet.geometry.align_face`): five points, eye
   line level, ``aligned_size`` x ``aligned_size`` (200) warp with grey 128 border;
3. the checkpoint's own evaluation transform,
   :meth:`audet.data.transforms.EvalTransform.from_preprocess` (optional resize, centre crop,
   mean/std normalisation), i.e. the same code that produced the test-time inputs in training.

A clip model whose preprocess asks for ``align_clip: "five_point"`` (AUNet's TDN, section IV-C)
has its clip frames aligned to the centre frame by five points before that transform, as in
training: :meth:`FaceAligner.__call__` then keeps the aligned face and its landmarks, and
:meth:`FaceAligner.clip_tensor` builds the clip input from the frames of one face.
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
        clip = self.preprocess.get("clip") or {}
        #: clip frames are aligned to the centre frame (five points) before the transform
        self.align_clip = (self.preprocess.get("align_clip") == "five_point"
                           and len(clip.get("offsets") or []) > 1)

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

    def clip_tensor(self, faces: list) -> torch.Tensor:
        """``(T, 3, c, c)`` input of a clip model from ``T`` items of :meth:`__call__` (one face, in
        the clip's frame order): for ``align_clip`` models the aligned faces are first aligned to
        the centre frame by five points (the training transform's ``align_reference``)."""
        if not self.align_clip:
            return torch.stack(list(faces))
        frames = np.stack([f for f, _ in faces])
        lm = np.stack([p for _, p in faces]).astype(np.float32)
        if self.bgr:
            frames = frames[..., ::-1]
        x, _ = self.transform(np.ascontiguousarray(frames), lm)
        return x

    def __call__(self, image: np.ndarray, landmarks68: np.ndarray):
        """The model input of one face: the normalised tensor, or for an ``align_clip`` model the
        aligned face and its 49 landmarks (turned into tensors per clip by :meth:`clip_tensor`)."""
        aligned, lm49 = self.align(image, landmarks68)
        if self.align_clip:
            return aligned, np.asarray(lm49, dtype=np.float32)
        return self.to_tensor(aligned, lm49)
