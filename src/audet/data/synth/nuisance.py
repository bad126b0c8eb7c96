"""Nuisances: head pose, in-plane rotation, scale, position, illumination, blur, noise, JPEG,
background clutter and occluders (a hand or a bar). Each has a knob in :class:`SynthConfig`.

Per sequence a :class:`SequenceNuisance` is drawn; per frame a smooth trajectory gives the pose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .face_model import Pose
from .presets import SynthConfig

LINE = cv2.LINE_AA
SHIFT = 4  # sub-pixel bits for cv2 drawing
ONE = 1 << SHIFT


def to_fixed(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 points for cv2 drawing with ``shift=SHIFT``."""
    return np.round(np.asarray(pts) * ONE).astype(np.int32)


def _smooth_track(rng: np.random.Generator, n: int, amp: float, period: float) -> np.ndarray:
    """Smooth zero-mean trajectory of length n: a sum of three random sinusoids, |x| <~ amp."""
    t = np.arange(n, dtype=np.float64)
    out = np.zeros(n)
    for k in range(3):
        per = period * rng.uniform(0.5, 1.5) / (k + 1)
        out += rng.uniform(0.3, 1.0) / (k + 1) * np.sin(2 * np.pi * t / per + rng.uniform(0, 2 * np.pi))
    return amp * out / 1.6


@dataclass
class Occluder:
    kind: str  # "hand" or "bar"
    start: int
    end: int  # exclusive
    x0: float  # face-unit position of the occluder centre at start and end
    y0: float
    x1: float
    y1: float
    angle: float
    size: float  # face units
    colour: tuple[float, float, float]

    def to_list(self) -> list[Any]:
        return [self.kind, self.start, self.end, round(self.x0, 3), round(self.y0, 3),
                round(self.size, 3)]  # fmt: skip


@dataclass
class SequenceNuisance:
    """Per-sequence nuisance parameters and per-frame trajectories."""

    yaw: np.ndarray  # (T,) radians
    pitch: np.ndarray
    roll: np.ndarray
    scale: np.ndarray  # (T,) pixels per face unit
    cx: np.ndarray
    cy: np.ndarray
    light_dir: float  # radians
    light_strength: float
    brightness: float
    tint: tuple[float, float, float]
    blur_sigma: float
    noise_std: float
    jpeg_quality: int
    occluders: list[Occluder] = field(default_factory=list)
    lost: np.ndarray | None = None  # (T,) bool: landmarks lost

    def pose(self, t: int) -> Pose:
        return Pose(float(self.yaw[t]), float(self.pitch[t]), float(self.roll[t]),
                    float(self.scale[t]), float(self.cx[t]), float(self.cy[t]))  # fmt: skip

    def summary(self) -> dict[str, Any]:
        deg = 180 / np.pi
        return {
            "yaw_deg": [round(float(self.yaw.min() * deg), 2), round(float(self.yaw.max() * deg), 2)],
            "pitch_deg": [round(float(self.pitch.min() * deg), 2), round(float(self.pitch.max() * deg), 2)],
            "roll_deg": [round(float(self.roll.min() * deg), 2), round(float(self.roll.max() * deg), 2)],
            "scale_px": [round(float(self.scale.min()), 2), round(float(self.scale.max()), 2)],
            "light": [round(self.light_dir, 3), round(self.light_strength, 3), round(self.brightness, 3)],
            "blur_sigma": round(self.blur_sigma, 3),
            "noise_std": round(self.noise_std, 3),
            "jpeg_quality": self.jpeg_quality,
            "occluders": [o.to_list() for o in self.occluders],
            "lost_frames": int(self.lost.sum()) if self.lost is not None else 0,
        }  # fmt: skip


def sample_nuisance(rng: np.random.Generator, n: int, cfg: SynthConfig) -> SequenceNuisance:
    S = cfg.size
    rad = np.pi / 180
    period = 90.0 * cfg.tempo
    yaw = np.clip(rng.uniform(-0.6, 0.6) * cfg.yaw + _smooth_track(rng, n, 0.45 * cfg.yaw, period),
                  -cfg.yaw, cfg.yaw) * rad  # fmt: skip
    pitch = np.clip(rng.uniform(-0.5, 0.5) * cfg.pitch + _smooth_track(rng, n, 0.5 * cfg.pitch, period),
                    -cfg.pitch, cfg.pitch) * rad  # fmt: skip
    roll = np.clip(rng.uniform(-0.6, 0.6) * cfg.roll + _smooth_track(rng, n, 0.4 * cfg.roll, period),
                   -cfg.roll, cfg.roll) * rad  # fmt: skip
    base_scale = 0.205 * S * float(np.exp(rng.uniform(-1, 1) * cfg.scale_jitter))
    scale = base_scale * np.exp(_smooth_track(rng, n, 0.25 * cfg.scale_jitter, period))
    cx = S / 2 + rng.uniform(-1, 1) * cfg.shift * S + _smooth_track(rng, n, 0.4 * cfg.shift * S, period)
    cy = 0.43 * S + rng.uniform(-1, 1) * cfg.shift * S + _smooth_track(rng, n, 0.3 * cfg.shift * S, period)
    il = cfg.illumination
    nz = SequenceNuisance(
        yaw=yaw, pitch=pitch, roll=roll, scale=scale, cx=cx, cy=cy,
        light_dir=float(rng.uniform(0, 2 * np.pi)),
        light_strength=float(rng.uniform(0, 1) * il * 0.8),
        brightness=float(np.exp(rng.uniform(-0.35, 0.2) * il)),
        tint=tuple(float(v) for v in 1 + rng.uniform(-0.08, 0.08, 3) * il),
        blur_sigma=float(rng.uniform(0, 1) * cfg.blur * S / 256.0),
        noise_std=float(rng.uniform(0.15, 1) * cfg.noise),
        jpeg_quality=int(rng.integers(cfg.jpeg_min, cfg.jpeg_max + 1)),
    )  # fmt: skip
    # occluders: episodes of 8-30 frames covering on average cfg.occlusion of the frames
    if cfg.occlusion > 0:
        mean_len = 18.0 * cfg.tempo
        k = rng.poisson(cfg.occlusion * n / mean_len)
        for _ in range(int(k)):
            length = int(np.clip(rng.normal(mean_len, mean_len / 3), 4, 3 * mean_len))
            s = int(rng.integers(-length // 2, n))
            # over the mouth, a cheek, an eye or the forehead
            tx, ty = [(0.0, 1.25), (-0.6, 0.7), (0.6, 0.7), (-0.5, 0.0), (0.5, 0.0), (0.0, -0.7),
                      (0.0, 1.7)][int(rng.integers(7))]  # fmt: skip
            kind = "hand" if rng.random() < 0.6 else "bar"
            nz.occluders.append(Occluder(
                kind, s, s + length, tx + rng.normal(0, 0.15), ty + rng.normal(0, 0.15),
                tx + rng.normal(0, 0.3), ty + rng.normal(0, 0.3), float(rng.uniform(-1, 1)),
                float(rng.uniform(0.45, 0.8)),
                tuple(float(c) for c in rng.integers(30, 220, 3))))  # fmt: skip
    lost = np.zeros(n, dtype=bool)
    if cfg.lost_landmarks > 0:
        k = rng.poisson(cfg.lost_landmarks * n / 4.0)
        for _ in range(int(k)):
            s = int(rng.integers(0, n))
            lost[s : s + int(rng.integers(1, 8))] = True
    nz.lost = lost
    return nz


# ----------------------------------------------------------------------------------------------
# Background, light, occluders, camera degradations
# ----------------------------------------------------------------------------------------------


def make_background(rng: np.random.Generator, S: int, clutter: float) -> np.ndarray:
    """(S, S, 3) uint8 RGB background: a wall colour gradient plus random clutter shapes."""
    base = rng.uniform(60, 220, 3)
    other = np.clip(base + rng.normal(0, 30, 3), 0, 255)
    g = np.linspace(0, 1, S, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    img = base[None, None, :] * (1 - ramp[..., None]) + other[None, None, :] * ramp[..., None]
    img = img.astype(np.uint8)
    n = rng.poisson(clutter * 14)
    for _ in range(int(n)):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        p = rng.uniform(-0.1, 1.1, 2) * S
        if kind == 0:  # rectangle (shelf, poster, door)
            w, h = rng.uniform(0.05, 0.5, 2) * S
            cv2.rectangle(img, to_fixed(p - (w / 2, h / 2)), to_fixed(p + (w / 2, h / 2)), col, -1, LINE, SHIFT)
        elif kind == 1:  # circle (lamp, clock)
            cv2.circle(img, to_fixed(p), int(rng.uniform(0.02, 0.15) * S * ONE), col, -1, LINE, SHIFT)
        elif kind == 2:  # lines (cables, edges)
            q = p + rng.normal(0, 0.4, 2) * S
            cv2.line(img, to_fixed(p), to_fixed(q), col, int(rng.integers(1, 5)), LINE, SHIFT)
        else:  # stripes (blinds, books)
            w = rng.uniform(0.1, 0.4) * S
            for k in range(int(rng.integers(3, 9))):
                x = p[0] + k * w / 6
                cv2.rectangle(img, to_fixed((x, p[1])), to_fixed((x + w / 12, p[1] + w)),
                              tuple(int(c) for c in np.clip(np.array(col) + rng.normal(0, 40, 3), 0, 255)),
                              -1, LINE, SHIFT)  # fmt: skip
    if clutter > 0:
        img = cv2.GaussianBlur(img, (0, 0), 0.8 + rng.uniform(0, 1.5))
    return img


def light_map(nz: SequenceNuisance, S: int) -> np.ndarray:
    """(S, S, 3) float32 multiplicative light: gradient along ``light_dir``, brightness, tint."""
    g = (np.arange(S, dtype=np.float32) - S / 2) / (S / 2)
    d = np.cos(nz.light_dir) * g[None, :] + np.sin(nz.light_dir) * g[:, None]
    m = np.clip(1.0 + nz.light_strength * d, 0.25, 2.0) * nz.brightness
    return (m[..., None] * np.asarray(nz.tint, dtype=np.float32)[None, None, :]).astype(np.float32)


def draw_occluder(img: np.ndarray, occ: Occluder, t: int, project, scale: float,
                  skin: tuple[float, float, float]) -> None:
    """Draw the occluder of frame t (if active) over ``img`` (RGB uint8) in place."""
    if not occ.start <= t < occ.end:
        return
    f = (t - occ.start) / max(1, occ.end - occ.start - 1)
    x = occ.x0 + (occ.x1 - occ.x0) * f
    y = occ.y0 + (occ.y1 - occ.y0) * f
    c = project(np.array([[x, y]]), z=np.array([0.6]))[0]
    s = occ.size * scale
    ca, sa = np.cos(occ.angle), np.sin(occ.angle)
    R = np.array([[ca, -sa], [sa, ca]])
    if occ.kind == "bar":
        half = np.array([[-1.6, -0.22], [1.6, -0.22], [1.6, 0.22], [-1.6, 0.22]]) * s
        pts = half @ R.T + c
        cv2.fillPoly(img, [to_fixed(pts)], tuple(int(v) for v in occ.colour), LINE, SHIFT)
        return
    col = np.clip(np.asarray(skin) * 0.92, 0, 255)
    colt = tuple(int(v) for v in col)
    palm = cv2.ellipse2Poly((0, 0), (int(0.5 * s * 16), int(0.62 * s * 16)), 0, 0, 360, 12) / 16.0
    cv2.fillPoly(img, [to_fixed(palm @ R.T + c)], colt, LINE, SHIFT)
    for k in range(4):
        a = -0.45 + 0.3 * k
        base = np.array([0.42 * np.sin(a), -0.45 * np.cos(a)]) * s
        tip = base + np.array([np.sin(a), -np.cos(a)]) * s * (0.55 + 0.1 * (k in (1, 2)))
        cv2.line(img, to_fixed(base @ R.T + c), to_fixed(tip @ R.T + c), colt,
                 max(1, int(0.2 * s)), LINE, SHIFT)  # fmt: skip
    shade = tuple(int(v) for v in col * 0.7)
    for k in range(3):
        a = -0.3 + 0.3 * k
        base = np.array([0.42 * np.sin(a), -0.45 * np.cos(a)]) * s
        tip = base + np.array([np.sin(a), -np.cos(a)]) * s * 0.5
        cv2.line(img, to_fixed(base @ R.T + c), to_fixed(tip @ R.T + c), shade, 1, LINE, SHIFT)


class CameraNoise:
    """Sensor noise from a small per-sequence bank of noise fields, cropped at random offsets
    for each frame (luma plus weaker chroma noise). Much faster than drawing fresh Gaussian
    noise for every pixel of every frame, and deterministic."""

    PAD = 24

    def __init__(self, rng: np.random.Generator, size: int, std: float, n_fields: int = 3):
        self.std = std
        self.size = size
        if std <= 0.05:
            self.bank = None
            return
        P = size + self.PAD
        luma = rng.standard_normal((n_fields, P, P, 1), dtype=np.float32)
        chroma = rng.standard_normal((n_fields, P, P, 3), dtype=np.float32) * 0.35
        self.bank = np.round((luma + chroma) * std).astype(np.int16)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.bank is None:
            return img
        k = int(rng.integers(len(self.bank)))
        dx, dy = (int(v) for v in rng.integers(0, self.PAD, 2))
        S = self.size
        out = img.astype(np.int16)
        out += self.bank[k, dy : dy + S, dx : dx + S]
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)


def degrade(img: np.ndarray, nz: SequenceNuisance, rng: np.random.Generator,
            noise: CameraNoise | None = None) -> np.ndarray:
    """Camera blur and sensor noise (uint8 RGB in, uint8 RGB out)."""
    if nz.blur_sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), nz.blur_sigma)
    if nz.noise_std > 0.05:
        if noise is None:
            noise = CameraNoise(rng, img.shape[0], nz.noise_std, n_fields=1)
        img = noise(img, rng)
    return img


def encode_jpeg(img_rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])  # fmt: skip
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
