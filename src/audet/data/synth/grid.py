"""Picture grid of the generator: every AU at apex next to the same face at neutral, several
identities, and the nuisances. ``audet synth --grid docs/img/synth_grid.png``."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .face_model import Pose
from .identity import make_subject, subject_names
from .nuisance import Occluder, SequenceNuisance, degrade, light_map, make_background
from .presets import SYNTH_AUS, SynthConfig, get_config
from .render import FaceRenderer



def intensity_vector(aus: dict[int, float] | None = None) -> np.ndarray:
    v = np.zeros(len(SYNTH_AUS))
    for au, x in (aus or {}).items():
        v[SYNTH_AUS.index(au)] = x
    return v


def render_still(
    ident,
    cfg: SynthConfig,
    aus: dict[int, float] | None = None,
    size: int = 160,
    scale: float = 0.3,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    background: np.ndarray | None = None,
    light: np.ndarray | None = None,
    occluders=(),
    blink: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One frame of ``ident`` (RGB uint8) with AU intensities ``aus`` and a given pose."""
    S = size
    bg = background if background is not None else np.full((S, S, 3), 150, np.uint8)
    lt = light if light is not None else np.ones((S, S, 3), np.float32)
    pose = Pose(np.radians(yaw), np.radians(pitch), np.radians(roll), scale * S, S / 2, 0.4 * S)
    r = FaceRenderer(ident, cfg)
    return r.render(bg, intensity_vector(aus), pose, lt, blink, (0.0, 0.0), occluders, 0)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 15), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def make_grid(seed: int = 0, size: int = 160) -> np.ndarray:
    cfg = get_config("default")
    names = subject_names(12)
    idents = [make_subject(seed, i, cfg)[0] for i in range(len(names))]
    S = size
    tiles: list[list[np.ndarray]] = []
    # AU rows: neutral | apex (intensity 4.5) for each AU, on alternating identities
    row: list[np.ndarray] = []
    for k, au in enumerate(SYNTH_AUS):
        ident = idents[k % 4]
        aus = {au: 4.5}
        if au == 26:
            aus[25] = 4.5
        neu, _ = render_still(ident, cfg, None, S, scale=0.36)
        ap, _ = render_still(ident, cfg, aus, S, scale=0.36)
        row += [_label(neu, f"{ident.name} neutral"), _label(ap, f"AU{au}" + ("+25" if au == 26 else ""))]
        if len(row) == 10:
            tiles.append(row)
            row = []
    if row:
        while len(row) < 10:
            row.append(np.zeros((S, S, 3), np.uint8))
        tiles.append(row)
    # emotion prototypes on one identity
    ident = idents[5]
    protos = [("happy 6+12", {6: 4, 12: 4.5, 25: 3}), ("sad 1+4+15", {1: 4, 4: 3, 15: 4}),
              ("surprise 1+2+26", {1: 4.5, 2: 4.5, 25: 4.5, 26: 4.5}), ("fear 1+2+4", {1: 4, 2: 4, 4: 4}),
              ("anger 4+7+23", {4: 4.5, 7: 4, 23: 4}), ("anger 17+24", {17: 4.5, 24: 4.5}),
              ("disgust 9+10", {9: 4.5, 10: 4, 25: 2}), ("pain 4+6+7+10", {4: 4, 6: 4, 7: 4, 10: 4}),
              ("smile 12+14", {12: 3.5, 14: 4}), ("neutral", {})]  # fmt: skip
    tiles.append([_label(render_still(ident, cfg, a, S, scale=0.3)[0], t) for t, a in protos])
    # identities
    tiles.append([_label(render_still(idents[i], cfg, None, S, scale=0.27)[0], idents[i].name + " " +
                         idents[i].hair_style) for i in range(10)])  # fmt: skip
    # nuisances, each alone
    rng = np.random.default_rng(seed + 5)
    ident = idents[1]
    nz_row = []
    bg = make_background(rng, S, 1.0)
    dummy = SequenceNuisance(np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1),
                             0.8, 0.6, 0.85, (1.05, 1.0, 0.95), 2.0, 8.0, 40)  # fmt: skip
    light = light_map(dummy, S)
    occ_hand = Occluder("hand", 0, 1, -0.55, 0.9, -0.55, 0.9, 0.4, 0.6, (0, 0, 0))
    occ_bar = Occluder("bar", 0, 1, 0.1, 0.05, 0.1, 0.05, -0.2, 0.5, (40, 90, 160))
    items = [
        ("yaw +25", dict(yaw=25)), ("yaw -18", dict(yaw=-18)), ("pitch +12", dict(pitch=12)),
        ("roll 15", dict(roll=15)), ("scale 0.22", dict(scale=0.22)), ("clutter", dict(background=bg)),
        ("light", dict(light=light)), ("hand", dict(occluders=[occ_hand])), ("bar", dict(occluders=[occ_bar])),
        ("blink", dict(blink=1.0)),
    ]  # fmt: skip
    for t, kw in items:
        kw.setdefault("scale", 0.28)
        img, _ = render_still(ident, cfg, None, S, **kw)
        nz_row.append(_label(img, t))
    tiles.append(nz_row)
    # camera: blur, noise, JPEG
    cam = []
    for t, blur, noise, q in (("blur 2", 2.0, 0, 95), ("noise 8", 0, 8.0, 95), ("JPEG 25", 0, 0, 25),
                              ("all", 1.5, 6.0, 50)):  # fmt: skip
        img, _ = render_still(idents[3], cfg, {12: 3, 6: 3}, S, scale=0.28)
        dummy.blur_sigma, dummy.noise_std = blur, noise
        img = degrade(img, dummy, np.random.default_rng(0))
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        cam.append(_label(img, t))
    for i in range(6):
        g = idents[6 + i % 6]
        img, _ = render_still(g, cfg, {1: 3, 2: 3, 25: 3, 26: 3} if i % 2 else {4: 3, 17: 3, 24: 3}, S, scale=0.28,
                              yaw=(-1) ** i * 12)  # fmt: skip
        cam.append(_label(img, g.name + (" surprise" if i % 2 else " anger")))
    tiles.append(cam)
    return np.concatenate([np.concatenate(r, axis=1) for r in tiles], axis=0)


def save_grid(path: str | os.PathLike, seed: int = 0, size: int = 160) -> Path:
    grid = make_grid(seed, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    return path
