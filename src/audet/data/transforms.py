"""Joint augmentation of an image (or every frame of a clip) and its landmarks.

One random draw per sample is applied identically to all of its frames, and landmarks follow
the pixels exactly (protocol section 2, last line; AC2D section 4.1.2):

- random ``crop`` x ``crop`` crop of the aligned 200x200 face (test: centre crop), landmarks
  shifted by the crop offset;
- horizontal flip with probability ``flip_p``: pixels mirrored, landmark x -> crop - 1 - x and the
  49 points permuted with :data:`audet.facs.MIRROR_49` so left stays left (sub-centres recomputed
  from the transformed landmarks then stay on the right muscles);
- colour jitter as torchvision's ``ColorJitter(brightness=.5)`` followed by
  ``ColorJitter(contrast=.5)`` (the authors' order): brightness scales the pixels by
  b ~ U[0.5, 1.5]; contrast blends each frame with the mean of its greyscale version,
  c ~ U[0.5, 1.5]; values clipped to [0, 1] after each step;
- ``ToTensor`` + ``Normalize(mean, std)`` (0.5/0.5 by default: values in [-1, 1]).

Randomness comes from a numpy Generator seeded from torch's global RNG, so seeding torch
(Lightning's ``seed_everything``, the DataLoader's per-worker seeds) makes augmentation
reproducible without extra plumbing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from audet.facs import flip_landmarks

__all__ = ["TrainTransform", "EvalTransform", "to_tensor", "crop_frames"]

_GREY = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def crop_frames(frames: np.ndarray, landmarks: np.ndarray, top: int, left: int, size: int):
    """Crop ``(T, H, W, C)`` frames at (top, left) and shift ``(T, 49, 2)`` landmarks to match."""
    T, H, W = frames.shape[:3]
    if size > H or size > W:
        raise ValueError(f"cannot crop {size}x{size} from {W}x{H} images")
    out = frames[:, top : top + size, left : left + size]
    lm = landmarks - np.asarray([left, top], dtype=landmarks.dtype)
    return out, lm


def to_tensor(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 or float in [0, 1] -> normalised float32 ``(T, 3, H, W)``."""
    x = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class _Base:
    def __init__(self, crop: int | None = 176, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        self.crop = None if crop is None else int(crop)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @classmethod
    def from_preprocess(cls, preprocess: dict, **kwargs):
        """Build from a model's ``preprocess`` dict (crop_size, mean, std)."""
        return cls(crop=preprocess.get("crop_size", 176), mean=preprocess.get("mean", (0.5,) * 3),
                   std=preprocess.get("std", (0.5,) * 3), **kwargs)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class EvalTransform(_Base):
    """Centre crop (torchvision ``CenterCrop`` rounding) + normalisation; deterministic."""

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray):
        """frames ``(T, H, W, 3)`` uint8, landmarks ``(T, 49, 2)`` -> (tensor ``(T,3,c,c)``, landmarks)."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if self.crop is not None:
            H, W = frames.shape[1:3]
            top, left = int(round((H - self.crop) / 2.0)), int(round((W - self.crop) / 2.0))
            frames, lm = crop_frames(frames, lm, top, left, self.crop)
        return to_tensor(frames, self.mean, self.std), lm


class TrainTransform(_Base):
    """Random crop, flip and colour jitter, drawn once per sample and applied to every frame."""

    def __init__(self, crop: int | None = 176, flip_p: float = 0.5, brightness: float = 0.5, contrast: float = 0.5,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__(crop, mean, std)
        self.flip_p = float(flip_p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def draw(self, height: int, width: int, rng: np.random.Generator | None = None) -> dict:
        """The random parameters of one sample (exposed for tests and clip consistency)."""
        rng = rng or _rng()
        p: dict = {"top": 0, "left": 0}
        if self.crop is not None:
            p["top"] = int(rng.integers(0, height - self.crop + 1))
            p["left"] = int(rng.integers(0, width - self.crop + 1))
        p["flip"] = bool(rng.random() < self.flip_p)
        p["brightness"] = float(rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)) if self.brightness else 1.0
        p["contrast"] = float(rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)) if self.contrast else 1.0
        return p

    def apply(self, frames: np.ndarray, landmarks: np.ndarray, p: dict):
        lm = np.asarray(landmarks, dtype=np.float32)
        if self.crop is not None:
            frames, lm = crop_frames(frames, lm, p["top"], p["left"], self.crop)
        if p["flip"]:
            frames = frames[:, :, ::-1]
            lm = flip_landmarks(lm, frames.shape[2]).astype(np.float32)
        x = frames.astype(np.float32) / 255.0
        if p["brightness"] != 1.0:
            x = np.clip(x * p["brightness"], 0.0, 1.0)
        if p["contrast"] != 1.0:
            grey_mean = (x @ _GREY).mean(axis=(1, 2)).reshape(-1, 1, 1, 1)  # per frame
            x = np.clip(grey_mean + p["contrast"] * (x - grey_mean), 0.0, 1.0)
        return to_tensor(x, self.mean, self.std), lm

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray):
        return self.apply(frames, landmarks, self.draw(frames.shape[1], frames.shape[2]))
