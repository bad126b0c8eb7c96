"""Face geometry: a 68-point iBUG template with depth, identity morphs, AU displacements, pose.

Face coordinates: x to the image right, y down, z towards the camera, in *face units*: the two
eye centres are 1 apart (so the inner-eye-corner distance r of protocol section 1 is ~0.5).
The origin is the midpoint of the eye centres. Indices are 0-based 68-point iBUG indices
(0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-59 outer lips, 60-67 inner lips); "left"
below means the image-left side (the subject's right).

AU displacements follow AUNet Table I / protocol section 1 (which landmarks each AU moves, and
where): they are written for the image-left half and mirrored with :data:`audet.facs.MIRROR_68`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audet.facs import MIRROR_68

from .identity import Identity
from .presets import SYNTH_AUS

# ----------------------------------------------------------------------------------------------
# Template
# ----------------------------------------------------------------------------------------------

#: Image-left and midline points of the neutral template (x, y), face units.
_LEFT_TEMPLATE = {
    # jaw, from the ear (0) to the chin (8)
    0: (-1.07, 0.02), 1: (-1.05, 0.34), 2: (-1.0, 0.66), 3: (-0.92, 0.97), 4: (-0.8, 1.25),
    5: (-0.64, 1.5), 6: (-0.45, 1.69), 7: (-0.23, 1.81), 8: (0.0, 1.85),
    # brow, outer (17) to inner (21)
    17: (-0.93, -0.27), 18: (-0.78, -0.39), 19: (-0.59, -0.44), 20: (-0.41, -0.42),
    21: (-0.22, -0.36),
    # nose bridge (27-30) and base (31-33)
    27: (0.0, -0.05), 28: (0.0, 0.17), 29: (0.0, 0.38), 30: (0.0, 0.58),
    31: (-0.20, 0.70), 32: (-0.10, 0.74), 33: (0.0, 0.76),
    # eye: outer corner 36, upper lid 37-38, inner corner 39, lower lid 40-41
    36: (-0.75, 0.01), 37: (-0.61, -0.075), 38: (-0.40, -0.08), 39: (-0.25, 0.01),
    40: (-0.40, 0.06), 41: (-0.60, 0.06),
    # outer lips: corner 48, upper 49-51, lower 57-59
    48: (-0.42, 1.12), 49: (-0.27, 1.05), 50: (-0.10, 1.00), 51: (0.0, 1.02),
    57: (0.0, 1.27), 58: (-0.12, 1.26), 59: (-0.28, 1.21),
    # inner lips: corner 60, upper 61-62, lower 66-67
    60: (-0.37, 1.12), 61: (-0.12, 1.108), 62: (0.0, 1.11), 66: (0.0, 1.118), 67: (-0.12, 1.116),
}  # fmt: skip

LEFT_POINTS = np.array(sorted(_LEFT_TEMPLATE), dtype=np.int64)


def _mirror_spec(spec: dict[int, tuple[float, float]]) -> np.ndarray:
    """(68, 2) field from image-left / midline entries, mirrored to the right half (x -> -x)."""
    out = np.zeros((68, 2), dtype=np.float64)
    for i, (dx, dy) in spec.items():
        out[i] = (dx, dy)
        j = int(MIRROR_68[i])
        if j != i:
            out[j] = (-dx, dy)
        else:
            out[i, 0] = 0.0  # midline points do not move sideways
    return out


TEMPLATE68 = _mirror_spec(_LEFT_TEMPLATE)
# midline points keep x = 0 (done by _mirror_spec); restore their y
for _i, (_x, _y) in _LEFT_TEMPLATE.items():
    TEMPLATE68[_i, 1] = _y
TEMPLATE68.setflags(write=False)

#: side of each template point: -1 image-left, +1 image-right, 0 midline
SIDE68 = np.sign(np.round(TEMPLATE68[:, 0], 6)).astype(np.float64)
SIDE68.setflags(write=False)

#: head rotation centre (face units): behind the eyes, between eyes and mouth
ROT_CENTRE = np.array([0.0, 0.45, -0.95])


def depth(x, y):
    """Depth z (towards the camera) of the face surface at (x, y), face units; vectorised."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    t = np.clip(1.0 - (x / 1.2) ** 2, 0.0, 1.0)
    z = np.sqrt(t) - 1.0  # 0 on the midline, -1 at the sides
    # the face narrows towards the chin and the forehead recedes a little
    z = z - 0.18 * np.clip(y - 1.2, 0, None) ** 2 - 0.06 * np.clip(-y - 0.6, 0, None)
    # nose: a ridge growing from the root to the tip, falling at the base
    gy = np.interp(y, [-0.15, 0.0, 0.58, 0.72, 0.85], [0.0, 0.12, 0.42, 0.28, 0.0])
    z = z + gy * np.exp(-((x / (0.11 + 0.12 * np.clip(y, 0, 0.8))) ** 2))
    # lips and chin protrude, eye sockets recede, brow ridge
    z = z + 0.10 * np.exp(-((x / 0.45) ** 2) - ((y - 1.12) / 0.22) ** 2)
    z = z + 0.05 * np.exp(-((x / 0.35) ** 2) - ((y - 1.62) / 0.15) ** 2)
    z = z - 0.07 * np.exp(-(((np.abs(x) - 0.5) / 0.24) ** 2) - (y / 0.13) ** 2)
    z = z + 0.04 * np.exp(-(((np.abs(x) - 0.5) / 0.35) ** 2) - ((y + 0.42) / 0.12) ** 2)
    return z


# ----------------------------------------------------------------------------------------------
# Identity morph
# ----------------------------------------------------------------------------------------------


def neutral_shape(ident: Identity) -> np.ndarray:
    """(68, 2) neutral landmarks of a subject in face units."""
    p = np.array(TEMPLATE68, dtype=np.float64)
    x = p[:, 0]
    jaw = np.arange(0, 17)
    # jaw: width blends from cheekbones (top) to jaw (middle) to chin (bottom)
    k = np.abs(np.arange(17) - 8) / 8.0  # 1 at the ears, 0 at the chin
    wj = ident.face_width * (k * 1.0 + (1 - k) * ident.jaw_width)
    wj = np.where(k < 0.3, wj * (ident.chin_width * (0.3 - k) / 0.3 + 1.0 * k / 0.3), wj)
    x[jaw] *= wj
    # eyes
    for idx, cx in ((np.arange(36, 42), -0.5), (np.arange(42, 48), 0.5)):
        side = np.sign(cx)
        c = np.array([cx + side * ident.eye_spacing, 0.0])
        rel = p[idx] - np.array([cx, 0.0])
        rel[:, 0] *= ident.eye_size
        rel[:, 1] *= ident.eye_size * ident.eye_open
        p[idx] = c + rel
        outer = 36 if side < 0 else 45
        inner = 39 if side < 0 else 42
        p[outer, 1] -= ident.eye_tilt
        p[inner, 1] += 0.3 * ident.eye_tilt
    # brows
    brows = np.arange(17, 27)
    p[brows, 1] -= ident.brow_height
    p[brows, 0] += SIDE68[brows] * ident.eye_spacing * 0.8
    for i, w in ((18, 0.6), (19, 1.0), (20, 0.6), (25, 0.6), (24, 1.0), (23, 0.6)):
        p[i, 1] -= ident.brow_arch * w
    p[[21, 22], 1] -= ident.brow_slant
    p[[17, 26], 1] += ident.brow_slant * 0.5
    # nose
    nose = np.arange(28, 36)
    p[nose, 1] = -0.05 + (p[nose, 1] + 0.05) * ident.nose_length
    p[np.arange(31, 36), 0] *= ident.nose_width
    # mouth
    mouth = np.arange(48, 68)
    p[mouth, 0] *= ident.mouth_width
    st = 1.115
    for i in (49, 50, 51, 52, 53):
        p[i, 1] = st - (st - p[i, 1]) * ident.upper_lip
    for i in (55, 56, 57, 58, 59):
        p[i, 1] = st + (p[i, 1] - st) * ident.lower_lip
    p[mouth, 1] += ident.mouth_height + (ident.nose_length - 1.0) * 0.6
    # longer / shorter face below the eyes
    low = p[:, 1] > 0
    p[low, 1] *= ident.face_length
    if ident.shape_noise:
        p += np.asarray(ident.shape_noise, dtype=np.float64).reshape(68, 2) * (0.5 + ident.asymmetry)
    # lips closed at rest: the inner lower lip touches the inner upper lip
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        p[lo, 1] = p[up, 1] + 0.006
    return p


# ----------------------------------------------------------------------------------------------
# AU displacements at full strength (intensity 5), image-left half + midline, face units
# ----------------------------------------------------------------------------------------------

_AU_SPECS: dict[int | str, dict[int, tuple[float, float]]] = {
    # AU1 inner brow raiser (frontalis, medial): inner brow ends up, 1/2 r above inner brow
    1: {21: (0.015, -0.13), 20: (0.005, -0.095), 19: (0.0, -0.05), 18: (0.0, -0.02),
        37: (0.0, -0.008), 38: (0.0, -0.012)},
    # AU2 outer brow raiser (frontalis, lateral): outer brow up (subtle)
    2: {17: (-0.01, -0.11), 18: (-0.005, -0.105), 19: (0.0, -0.07), 20: (0.0, -0.03),
        36: (0.0, -0.004), 37: (0.0, -0.012)},
    # AU4 brow lowerer (corrugator): brows down and together, upper lids covered a little
    4: {21: (0.05, 0.085), 20: (0.03, 0.08), 19: (0.015, 0.06), 18: (0.005, 0.04),
        17: (0.0, 0.02), 37: (0.0, 0.015), 38: (0.0, 0.02)},
    # AU6 cheek raiser (orbicularis oculi, orbital): lower lid pushed up, cheek raised
    6: {40: (0.0, -0.02), 41: (0.0, -0.024), 36: (0.005, -0.01), 37: (0.0, 0.006),
        38: (0.0, 0.006), 1: (-0.005, -0.015), 2: (-0.01, -0.02), 3: (-0.01, -0.01)},
    # AU7 lid tightener (orbicularis oculi, palpebral): lower lid up and straight (subtle)
    7: {40: (0.0, -0.065), 41: (0.0, -0.06), 37: (0.0, 0.024), 38: (0.0, 0.026),
        39: (0.005, 0.0), 36: (-0.005, 0.0)},
    # AU9 nose wrinkler: nose wings and upper lip up, inner brows pulled down
    9: {31: (-0.03, -0.06), 32: (-0.005, -0.05), 33: (0.0, -0.045), 30: (0.0, -0.015),
        29: (0.0, -0.01), 21: (0.012, 0.045), 20: (0.005, 0.025), 50: (0.0, -0.035),
        51: (0.0, -0.035), 49: (0.0, -0.025), 48: (0.0, -0.01), 61: (0.0, -0.02),
        62: (0.0, -0.02), 40: (0.0, -0.015), 41: (0.0, -0.015)},
    # AU10 upper lip raiser: upper lip centre up (more than the inner lip), nose wings up a bit
    10: {50: (0.0, -0.095), 51: (0.0, -0.085), 49: (-0.005, -0.075), 48: (0.0, -0.02),
         61: (0.0, -0.04), 62: (0.0, -0.04), 60: (0.0, -0.01), 31: (-0.012, -0.035),
         32: (0.0, -0.012), 67: (0.0, -0.015), 66: (0.0, -0.015), 58: (0.0, -0.01),
         57: (0.0, -0.01)},
    # AU12 lip corner puller (zygomaticus major): corners up and out, cheeks widen
    12: {48: (-0.085, -0.08), 60: (-0.075, -0.075), 49: (-0.045, -0.04), 61: (-0.03, -0.03),
         50: (-0.015, -0.012), 59: (-0.05, -0.035), 67: (-0.03, -0.03), 58: (-0.02, -0.01),
         3: (-0.02, -0.02), 4: (-0.02, -0.02), 40: (0.0, -0.012), 41: (0.0, -0.015),
         31: (-0.01, -0.008)},
    # AU14 dimpler (buccinator): corners tightened inwards, a little up
    14: {48: (0.04, -0.015), 60: (0.04, -0.015), 49: (0.015, 0.0), 59: (0.015, 0.0),
         61: (0.01, 0.0), 67: (0.01, 0.0)},
    # AU15 lip corner depressor (triangularis): corners down
    15: {48: (-0.02, 0.08), 60: (-0.02, 0.075), 59: (-0.01, 0.035), 67: (-0.008, 0.03),
         49: (0.0, 0.03), 61: (0.0, 0.025), 58: (0.0, 0.012)},
    # AU17 chin raiser (mentalis): chin boss and lower lip pushed up
    17: {57: (0.0, -0.06), 58: (0.0, -0.055), 59: (0.0, -0.03), 66: (0.0, -0.02),
         67: (0.0, -0.02), 62: (0.0, -0.012), 61: (0.0, -0.01), 51: (0.0, -0.01),
         8: (0.0, -0.035), 7: (0.0, -0.03), 6: (0.0, -0.015)},
    # AU23 lip tightener: red of the lips narrows, mouth a little narrower (subtle)
    23: {48: (0.055, 0.0), 60: (0.05, 0.0), 49: (0.03, 0.03), 50: (0.012, 0.042),
         51: (0.0, 0.042), 59: (0.03, -0.04), 58: (0.012, -0.05), 57: (0.0, -0.05),
         61: (0.01, 0.004), 67: (0.01, -0.004)},
    # AU24 lip presser: lips pressed together, thinner (subtle)
    24: {49: (0.0, 0.025), 50: (0.0, 0.04), 51: (0.0, 0.045), 59: (0.0, -0.03),
         58: (0.0, -0.05), 57: (0.0, -0.055), 48: (0.015, 0.0), 60: (0.01, 0.0),
         61: (0.0, 0.005), 62: (0.0, 0.005), 67: (0.0, -0.004), 66: (0.0, -0.004)},
    # AU25 lips part: inner lips separate
    25: {66: (0.0, 0.095), 67: (0.0, 0.082), 57: (0.0, 0.065), 58: (0.0, 0.058),
         59: (0.0, 0.032), 61: (0.0, -0.018), 62: (0.0, -0.022), 60: (0.003, 0.006),
         48: (0.0, 0.005)},
    # AU26 jaw drop: the jaw and chin go down, the lower lip follows partly
    26: {8: (0.0, 0.22), 7: (0.01, 0.21), 6: (0.02, 0.17), 5: (0.02, 0.12), 4: (0.01, 0.07),
         3: (0.005, 0.035), 2: (0.0, 0.01), 57: (0.0, 0.08), 58: (0.0, 0.075), 59: (0.0, 0.045),
         48: (0.01, 0.04), 60: (0.01, 0.04), 66: (0.0, 0.035), 67: (0.0, 0.032)},
    # the mouth opening that AU26 adds when the lips are parted (AU25 present)
    "26open": {66: (0.0, 0.16), 67: (0.0, 0.14), 57: (0.0, 0.12), 58: (0.0, 0.11),
               59: (0.0, 0.065), 61: (0.0, -0.01), 62: (0.0, -0.012), 60: (0.0, 0.01)},
}  # fmt: skip

#: rows of :data:`AU_DISPLACEMENTS`: the 15 AUs then the AU26 opening component
DISPLACEMENT_ROWS: tuple = tuple(SYNTH_AUS) + ("26open",)
#: overall scale of the table above (tuned so that a linear pixel classifier on 48x48 aligned
#: crops finds every AU, but far from perfectly; see docs/synth.md "Sanity check")
DISPLACEMENT_SCALE = 1.4
#: (16, 68, 2) displacement of every landmark at full strength
AU_DISPLACEMENTS = DISPLACEMENT_SCALE * np.stack([_mirror_spec(_AU_SPECS[k]) for k in DISPLACEMENT_ROWS])
AU_DISPLACEMENTS.setflags(write=False)

#: visual strength of each AU relative to the others: AU2, 7, 23, 24 are subtle (as in real data)
SUBTLE_AUS = (2, 7, 23, 24)
BASE_AU_GAIN = {au: (0.8 if au in SUBTLE_AUS else 1.0) for au in SYNTH_AUS}
BASE_AU_GAIN[7] = 0.9  # AU7 must stay distinguishable from AU6, which also lifts the lower lid


def subject_displacements(ident: Identity, subtle: float = 1.0, au_gain: float = 1.0,
                          au_gains: dict[int, float] | None = None) -> np.ndarray:
    """(16, 68, 2) displacements for one subject: per-AU gain and left/right asymmetry applied."""
    d = np.array(AU_DISPLACEMENTS)
    for r, key in enumerate(DISPLACEMENT_ROWS):
        au = 26 if key == "26open" else int(key)
        g = ident.au_gain.get(au, 1.0) * ident.expressivity * au_gain * BASE_AU_GAIN[au]
        g *= (au_gains or {}).get(au, 1.0)
        if au in SUBTLE_AUS:
            g *= subtle
        a = ident.au_asym.get(au, 0.0)
        side = 1.0 - a * SIDE68  # image-left (-1) gets 1 + a
        d[r] *= (g * side)[:, None]
    return d


def magnitudes(intensity: np.ndarray) -> np.ndarray:
    """(T, 15) intensities 0..5 -> (T, 16) weights of :data:`DISPLACEMENT_ROWS`.

    The response saturates softly (``x (2 - x)`` of x = intensity / 5: a trace, intensity 1, shows
    36% of the full change; the label threshold 2 shows 64%); AU26 opens the mouth only as far as
    the lips are parted.
    """
    it = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 5.0) / 5.0
    it = it * (2.0 - it)
    m = np.empty(it.shape[:-1] + (len(DISPLACEMENT_ROWS),), dtype=np.float64)
    m[..., :-1] = it
    i25 = SYNTH_AUS.index(25)
    i26 = SYNTH_AUS.index(26)
    m[..., -1] = it[..., i26] * np.clip(it[..., i25] / 0.3, 0.0, 1.0)
    return m


def deform(neutral: np.ndarray, disp: np.ndarray, mags: np.ndarray) -> np.ndarray:
    """Landmarks (68, 2) of a face with AU weights ``mags`` (16,) from :func:`magnitudes`."""
    p = neutral + np.tensordot(mags, disp, axes=1)
    # the inner lower lip never goes above the inner upper lip
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        if p[lo, 1] < p[up, 1]:
            mid = 0.5 * (p[lo, 1] + p[up, 1])
            p[lo, 1] = p[up, 1] = mid
    return p


# ----------------------------------------------------------------------------------------------
# Pose and projection (orthographic rotation about ROT_CENTRE, then a 2D similarity)
# ----------------------------------------------------------------------------------------------


@dataclass
class Pose:
    yaw: float = 0.0  # radians; positive turns the face towards the image right
    pitch: float = 0.0  # radians; positive tilts the face down (nose moves down)
    roll: float = 0.0  # radians; in-plane rotation, positive = clockwise in the image
    scale: float = 50.0  # pixels per face unit
    cx: float = 128.0  # image position of the face origin (eye midpoint) before rotation
    cy: float = 110.0

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(2, 3) linear map of (x, y, z - centre) and the 2D offset."""
        cy_, sy_ = np.cos(self.yaw), np.sin(self.yaw)
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        # yaw about the vertical axis, then pitch about the horizontal axis
        ry = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
        rp = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r3 = (rp @ ry)[:2]  # orthographic: keep x, y
        cr, sr = np.cos(self.roll), np.sin(self.roll)
        r2 = np.array([[cr, -sr], [sr, cr]]) * self.scale
        lin = r2 @ r3
        c = ROT_CENTRE
        off = np.array([self.cx, self.cy]) + r2 @ (np.array([c[0], c[1]])) - lin @ c
        return lin, off


class Projector:
    """Maps face-unit points (with depth from :func:`depth` or given) to image pixels."""

    def __init__(self, pose: Pose):
        self.pose = pose
        self.lin, self.off = pose.matrix()

    def __call__(self, xy: np.ndarray, z: np.ndarray | None = None, dz: float = 0.0) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        shape = xy.shape
        xy = xy.reshape(-1, 2)
        if z is None:
            z = depth(xy[:, 0], xy[:, 1])
        z = np.broadcast_to(np.asarray(z, dtype=np.float64), (xy.shape[0],)) + dz
        pts = np.column_stack([xy, z])
        out = pts @ self.lin.T + self.off
        return out.reshape(shape)

    @property
    def scale(self) -> float:
        return self.pose.scale
