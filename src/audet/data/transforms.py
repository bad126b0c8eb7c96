"""Joint augmentation of an image (or every frame of a clip) and its landmarks.

One random draw per sample is applied identically to all of its frames, and landmarks follow
the pixels exactly (protocol section 2, last line; AC2D section 4.1.2):

- optional clip alignment (``align_reference``; a model's ``preprocess["align_clip"] =
  "five_point"`` with clip offsets sets it to the centre frame): every other frame of the clip is
  warped onto the reference frame by the similarity between their five points (AUNet section
  IV-C), landmarks moved with it, before any augmentation;
- optional ``resize`` (not in any paper; default off): the aligned face is first resized to
  ``resize`` x ``resize`` (OpenCV ``INTER_AREA``) and the landmarks scaled with it, pixel
  centres kept (x' = (x + 0.5) s - 0.5), for cheaper runs at a smaller input (e.g. 120 -> crop 104);
- random ``crop`` x ``crop`` crop of the aligned 200x200 face (test: centre crop), landmarks
  shifted by the crop offset (x -= left, y -= top);
- horizontal flip with probability ``flip_p``: pixels mirrored, landmark x -> crop - 1 - x and the
  49 points permuted with :data:`audet.facs.MIRROR_49` so that index i keeps its anatomical
  meaning (the dataset recomputes sub-centres from the transformed landmarks, so they stay on
  the right muscles);
- colour jitter as torchvision's ``ColorJitter(brightness=.5)`` followed by
  ``ColorJitter(contrast=.5)`` (the authors' order): brightness scales the pixels by
  b ~ U[0.5, 1.5]; contrast blends each frame with the mean of its greyscale version,
  c ~ U[0.5, 1.5]; values clipped to [0, 1] after each step. The factors b and c are shared by
  all frames of a clip; the greyscale mean is per frame (as torchvision computes it per image).
  Arithmetic is float32 throughout (torchvision's tensor path), so results differ from its PIL
  path (which rounds to uint8 after each step) by at most 1/255 per step;
- ``ToTensor`` + ``Normalize(mean, std)`` (0.5/0.5 by default: values in [-1, 1]).

Randomness: each call draws a fresh numpy Generator seeded from torch's global RNG. DataLoader
workers get distinct, reproducible torch seeds (``base_seed + worker_id``, with the base seed
drawn from the loader's generator), and in the main process ``torch.manual_seed`` /
Lightning's ``seed_everything`` decides, so augmentation is reproducible without extra plumbing.
The training engine goes further and seeds the generators before every sample from
``(seed, epoch, index)`` (:class:`audet.engine.data.SampleSeeded`): the same augmentation with any
number of workers and after a resume.
Pass ``rng=`` to fix the draw explicitly (tests).

Input: ``frames`` uint8 ``(T, H, W, 3)`` RGB and ``landmarks`` ``(T, 49, 2)``; output: a float32
tensor ``(T, 3, c, c)`` and float32 landmarks ``(T, 49, 2)``. A single ``(H, W, 3)`` image with
``(49, 2)`` landmarks is accepted too and gives ``(3, c, c)`` and ``(49, 2)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from audet.facs import MIRROR_49

__all__ = ["TrainTransform", "EvalTransform", "to_tensor", "crop_frames", "flip_frames", "resize_frames",
           "resize_image"]

#: ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_GREY = np.asarray([0.2989, 0.587, 0.114], dtype=np.float32)


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def crop_frames(frames: np.ndarray, landmarks: np.ndarray, top: int, left: int, size: int):
    """Crop ``(T, H, W, C)`` frames at (top, left) and shift ``(T, 49, 2)`` landmarks to match."""
    H, W = frames.shape[1:3]
    if size > H or size > W:
        raise ValueError(f"cannot crop {size}x{size} from {W}x{H} images")
    if not (0 <= top <= H - size and 0 <= left <= W - size):
        raise ValueError(f"crop at (top={top}, left={left}) of size {size} leaves the {W}x{H} image")
    out = frames[:, top : top + size, left : left + size]
    lm = landmarks - np.asarray([left, top], dtype=landmarks.dtype)
    return out, lm


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize one ``(H, W, C)`` image to ``size`` x ``size``: OpenCV ``INTER_AREA`` when shrinking,
    linear when enlarging (uint8 and float32 kept, other dtypes become float32)."""
    import cv2

    interp = cv2.INTER_AREA if size < min(img.shape[:2]) else cv2.INTER_LINEAR
    src = img if img.dtype in (np.uint8, np.float32) else img.astype(np.float32)
    return cv2.resize(np.ascontiguousarray(src), (size, size), interpolation=interp)


def resize_frames(frames: np.ndarray, landmarks: np.ndarray, size: int):
    """Resize ``(T, H, W, C)`` frames with :func:`resize_image` and scale ``(T, 49, 2)`` landmarks
    so that they stay on the same pixels."""
    T, H, W = frames.shape[:3]
    if (H, W) == (size, size):
        return frames, landmarks
    out = np.stack([resize_image(f, size) for f in frames])
    scale = np.asarray([size / W, size / H], dtype=landmarks.dtype)
    return out, (landmarks + 0.5) * scale - 0.5


def flip_frames(frames: np.ndarray, landmarks: np.ndarray):
    """Mirror ``(T, H, W, C)`` frames left-right; landmarks x -> W - 1 - x, permuted by MIRROR_49."""
    W = frames.shape[2]
    lm = landmarks[..., MIRROR_49, :].copy()
    lm[..., 0] = (W - 1) - lm[..., 0]
    return frames[:, :, ::-1], lm


def to_tensor(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 or float in [0, 1] -> normalised float32 ``(T, 3, H, W)``."""
    x = frames.astype(np.float32) * np.float32(1 / 255.0) if frames.dtype == np.uint8 else frames.astype(np.float32, copy=False)
    x = (x - np.asarray(mean, np.float32)) * (1.0 / np.asarray(std, np.float32))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _as_clip(frames, landmarks):
    frames = np.asarray(frames)
    lm = np.asarray(landmarks, dtype=np.float32)
    single = frames.ndim == 3
    if single:
        frames, lm = frames[None], lm[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) or (H, W, 3), got {frames.shape}")
    if lm.shape != (frames.shape[0], 49, 2):
        raise ValueError(f"landmarks must be ({frames.shape[0]}, 49, 2) for {frames.shape[0]} frame(s), got {lm.shape}")
    return frames, lm, single


class _Base:
    def __init__(self, crop: int | None = 176, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize: int | None = None,
                 align_reference: int | None = None):
        #: clip frame every other frame is aligned to by five points before anything else (AUNet
        #: section IV-C; :func:`audet.geometry.align_clip_to_frame`); None = no alignment
        self.align_reference = None if align_reference is None else int(align_reference)
        self.crop = None if crop is None else int(crop)
        self.resize = None if resize is None else int(resize)
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be a positive side length, got {resize}")
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than resize {self.resize}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @classmethod
    def from_preprocess(cls, preprocess: dict, **kwargs):
        """Build from a model's ``preprocess`` dict (``crop_size``, ``mean``, ``std``, ``resize``)."""
        kw = dict(crop=preprocess.get("crop_size", 176), mean=preprocess.get("mean", (0.5,) * 3),
                  std=preprocess.get("std", (0.5,) * 3), resize=preprocess.get("resize"))
        clip = preprocess.get("clip") or {}
        if preprocess.get("align_clip") == "five_point" and "offsets" in clip:
            kw["align_reference"] = [int(o) for o in clip["offsets"]].index(0)
        kw.update(kwargs)
        return cls(**kw)

    def _resized(self, frames: np.ndarray, lm: np.ndarray):
        if self.align_reference is not None and frames.shape[0] > 1:
            from audet.geometry import align_clip_to_frame

            frames, lm, _ = align_clip_to_frame(frames, lm, self.align_reference)
            lm = lm.astype(np.float32)
        return (frames, lm) if self.resize is None else resize_frames(frames, lm, self.resize)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class EvalTransform(_Base):
    """Centre crop (torchvision ``CenterCrop`` rounding: 12 px from 200 to 176) + normalisation.

    ``crop=None`` keeps the full image.
    """

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray):
        frames, lm, single = _as_clip(frames, landmarks)
        frames, lm = self._resized(frames, lm)
        if self.crop is not None:
            H, W = frames.shape[1:3]
            top, left = int(round((H - self.crop) / 2.0)), int(round((W - self.crop) / 2.0))
            frames, lm = crop_frames(frames, lm, top, left, self.crop)
        x = to_tensor(frames, self.mean, self.std)
        return (x[0], lm[0]) if single else (x, lm)


class TrainTransform(_Base):
    """Random crop, horizontal flip and colour jitter, drawn once per sample, applied to every frame.

    :meth:`from_preprocess` also reads the model's declared training augmentation,
    ``preprocess["augment"]`` (keys ``flip_p``, ``brightness``, ``contrast``; e.g. AUNet's paper
    lists no colour jitter, so it declares ``{"brightness": 0.0, "contrast": 0.0}``); explicit
    keyword arguments override it.
    """

    #: the keys a model's ``preprocess["augment"]`` may set
    AUGMENT_KEYS = ("flip_p", "brightness", "contrast")

    @classmethod
    def from_preprocess(cls, preprocess: dict, **kwargs):
        declared = dict(preprocess.get("augment") or {})
        bad = sorted(set(declared) - set(cls.AUGMENT_KEYS))
        if bad:
            raise ValueError(f"preprocess['augment'] has unknown key(s) {bad}; choose from {list(cls.AUGMENT_KEYS)}")
        return super().from_preprocess(preprocess, **{**declared, **kwargs})

    def __init__(self, crop: int | None = 176, flip_p: float = 0.5, brightness: float = 0.5, contrast: float = 0.5,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize: int | None = None,
                 align_reference: int | None = None):
        super().__init__(crop, mean, std, resize, align_reference)
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if brightness < 0 or contrast < 0:
            raise ValueError("brightness and contrast must be >= 0")
        self.flip_p = float(flip_p)
        self.brightness = float(brightness)
        self.contrast = float(contrast)

    def draw(self, height: int, width: int, rng: np.random.Generator | None = None) -> dict:
        """The random parameters of one sample: ``top``, ``left``, ``flip``, ``brightness``, ``contrast``."""
        rng = rng if rng is not None else _rng()
        p: dict = {"top": 0, "left": 0}
        if self.crop is not None:
            if self.crop > height or self.crop > width:
                raise ValueError(f"cannot crop {self.crop}x{self.crop} from {width}x{height} images")
            p["top"] = int(rng.integers(0, height - self.crop + 1))
            p["left"] = int(rng.integers(0, width - self.crop + 1))
        p["flip"] = bool(rng.random() < self.flip_p)
        b, c = self.brightness, self.contrast
        p["brightness"] = float(rng.uniform(max(0.0, 1 - b), 1 + b)) if b else 1.0
        p["contrast"] = float(rng.uniform(max(0.0, 1 - c), 1 + c)) if c else 1.0
        return p

    def apply(self, frames: np.ndarray, landmarks: np.ndarray, p: dict):
        """Apply drawn parameters ``p`` to ``(T, H, W, 3)`` frames and ``(T, 49, 2)`` landmarks
        (``p`` is drawn for the resized size when ``resize`` is set)."""
        frames, lm, single = _as_clip(frames, landmarks)
        frames, lm = self._resized(frames, lm)
        if self.crop is not None:
            frames, lm = crop_frames(frames, lm, p["top"], p["left"], self.crop)
        if p["flip"]:
            frames, lm = flip_frames(frames, lm)
        if p["brightness"] == 1.0 and p["contrast"] == 1.0:
            x = to_tensor(frames, self.mean, self.std)
        else:
            x = frames.astype(np.float32)
            x *= np.float32(p["brightness"] / 255.0)
            if p["brightness"] > 1.0:
                np.minimum(x, 1.0, out=x)
            if p["contrast"] != 1.0:
                c = np.float32(p["contrast"])
                grey_mean = (x @ _GREY).mean(axis=(1, 2)).reshape(-1, 1, 1, 1)  # per frame
                x *= c
                x += (1 - c) * grey_mean
                np.clip(x, 0.0, 1.0, out=x)
            x = to_tensor(x, self.mean, self.std)
        return (x[0], lm[0]) if single else (x, lm)

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator | None = None):
        f = np.asarray(frames)
        h, w = (f.shape[0], f.shape[1]) if f.ndim == 3 else (f.shape[1], f.shape[2])
        if self.resize is not None:
            h = w = self.resize
        return self.apply(frames, landmarks, self.draw(h, w, rng))
