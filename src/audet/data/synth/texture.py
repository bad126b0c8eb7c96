"""Drawing primitives in face units and the appearance (texture) side of every AU.

Three layers are drawn per frame:

* ``img``   -- RGB albedo (skin, features, hair), uint8;
* ``soft``  -- grey shading (128 = neutral) that is blurred: bulges, hollows, furrow shadows;
* ``sharp`` -- grey shading (128 = neutral), lightly blurred: wrinkles, lines, creases.

The final colour is ``img * soft/128 * sharp/128 * light``. Every AU's texture function draws
in the region of that AU (AUNet Table I): e.g. AU1 horizontal wrinkles in the centre of the
forehead, AU4 vertical furrows between the brows, AU6 crow's feet, an infraorbital furrow and a
raised cheek, AU9 wrinkles across the nose, AU17 a raised, dimpled chin boss.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from .face_model import depth

LINE = cv2.LINE_AA
SHIFT = 4
ONE = 1 << SHIFT

# ----------------------------------------------------------------------------------------------
# depth lookup (much faster than evaluating face_model.depth for every primitive)
# ----------------------------------------------------------------------------------------------
_GX0, _GX1, _GY0, _GY1, _GSTEP = -2.0, 2.0, -2.2, 3.6, 0.02
_GX = np.arange(_GX0, _GX1 + 1e-9, _GSTEP)
_GY = np.arange(_GY0, _GY1 + 1e-9, _GSTEP)
_DEPTH_GRID = depth(_GX[None, :], _GY[:, None]).astype(np.float64)


_NX, _NY = len(_GX) - 1, len(_GY) - 1


def depth_lookup(xy: np.ndarray) -> np.ndarray:
    """Depth of face-unit points (N, 2) from a 0.02-unit grid of :func:`face_model.depth`."""
    ix = ((xy[:, 0] - (_GX0 - 0.5 * _GSTEP)) * (1.0 / _GSTEP)).astype(np.int64)
    iy = ((xy[:, 1] - (_GY0 - 0.5 * _GSTEP)) * (1.0 / _GSTEP)).astype(np.int64)
    np.minimum(np.maximum(ix, 0, out=ix), _NX, out=ix)
    np.minimum(np.maximum(iy, 0, out=iy), _NY, out=iy)
    return _DEPTH_GRID[iy, ix]


# ----------------------------------------------------------------------------------------------
# smooth curves
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _catmull_basis(n_in: int, per_seg: int, closed: bool) -> np.ndarray:
    """Matrix B with ``B @ pts`` = Catmull-Rom curve through ``pts`` (n_in, 2)."""
    rows = []
    n_seg = n_in if closed else n_in - 1
    for s in range(n_seg):
        idx = [s - 1, s, s + 1, s + 2]
        if closed:
            idx = [i % n_in for i in idx]
        else:
            idx = [min(max(i, 0), n_in - 1) for i in idx]
        for k in range(per_seg):
            t = k / per_seg
            t2, t3 = t * t, t * t * t
            w = 0.5 * np.array([-t3 + 2 * t2 - t, 3 * t3 - 5 * t2 + 2, -3 * t3 + 4 * t2 + t, t3 - t2])
            row = np.zeros(n_in)
            for i, wi in zip(idx, w):
                row[i] += wi
            rows.append(row)
    if not closed:
        row = np.zeros(n_in)
        row[-1] = 1.0
        rows.append(row)
    B = np.array(rows)
    B.setflags(write=False)
    return B


def curve(pts: np.ndarray, per_seg: int = 4, closed: bool = False) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return _catmull_basis(len(pts), per_seg, closed) @ pts


_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], axis=1)  # fmt: skip


def ellipse_pts(centre, axes, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    e = _CIRCLE * np.asarray(axes, dtype=np.float64)
    return e @ np.array([[c, s], [-s, c]]) + np.asarray(centre, dtype=np.float64)


def _fx(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * ONE).astype(np.int32)


class Canvas:
    """The three layers of a frame plus the face-unit -> pixel projection.

    Drawing calls are queued and executed by :meth:`flush` (called before the layers are used),
    which projects the points of all queued primitives with one lookup and one matrix product:
    per-call numpy overhead, not OpenCV, dominated the frame time otherwise.
    """

    def __init__(self, img: np.ndarray, proj, scale: float):
        S = img.shape[0]
        self.img = img
        self.soft = np.full((S, S), 128, dtype=np.uint8)
        self.sharp = np.full((S, S), 128, dtype=np.uint8)
        self.proj = proj
        self.scale = scale
        self.lin, self.off = proj.lin, proj.off
        self._ops: list[tuple] = []

    # immediate projection with the fast depth lookup; ``z`` overrides the surface depth
    def px(self, xy: np.ndarray, z=None, dz: float = 0.0) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        zz = depth_lookup(xy) if z is None else np.broadcast_to(np.asarray(z, np.float64), (len(xy),))
        return xy @ self.lin[:, :2].T + (zz + dz)[:, None] * self.lin[:, 2][None, :] + self.off

    @staticmethod
    def _col(layer: str, value):
        if layer == "img":
            return tuple(int(round(v)) for v in value)
        v = int(round(float(value)))
        return 0 if v < 0 else (255 if v > 255 else v)

    def _queue(self, kind, layer, xy, value, width=0.0, closed=False, z=None, dz=0.0):
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        self._ops.append((kind, layer, xy, self._col(layer, value), width, closed, z, dz))

    def fill(self, layer: str, xy, value, z=None, dz: float = 0.0) -> None:
        self._queue("fill", layer, xy, value, z=z, dz=dz)

    def line(self, layer: str, xy, value, width: float, closed: bool = False, z=None,
             dz: float = 0.0) -> None:
        """Polyline of ``width`` face units (at least one pixel)."""
        self._queue("line", layer, xy, value, width, closed, z, dz)

    def blob(self, layer: str, centre, axes, value, angle: float = 0.0, z=None) -> None:
        self.fill(layer, ellipse_pts(centre, axes, angle), value, z=z)

    def furrow(self, xy, strength: float, width: float = 0.018,
               highlight=(0.0, 0.02), soft: float = 0.0) -> None:
        """A wrinkle: dark line on ``sharp`` (and its shadow on ``soft``), highlight beside it."""
        if strength <= 0.5:
            return
        xy = np.asarray(xy, dtype=np.float64)
        if highlight is not None:
            self.line("sharp", xy + np.asarray(highlight), 128 + 0.45 * strength, width * 1.2)
        self.line("sharp", xy, 128 - strength, width)
        if soft > 0:
            self.line("soft", xy, 128 - soft * strength, width * 4)

    def flush(self) -> None:
        """Project every queued primitive at once and draw them in order."""
        ops = self._ops
        if not ops:
            return
        self._ops = []
        allxy = np.concatenate([o[2] for o in ops])
        z = depth_lookup(allxy)
        bounds = np.cumsum([0] + [len(o[2]) for o in ops])
        for i, o in enumerate(ops):
            if o[6] is not None or o[7]:
                a, b = bounds[i], bounds[i + 1]
                if o[6] is not None:
                    z[a:b] = o[6]
                z[a:b] += o[7]
        pts = allxy @ self.lin[:, :2].T + z[:, None] * self.lin[:, 2][None, :] + self.off
        fx = np.round(pts * ONE).astype(np.int32)
        layers = {"img": self.img, "soft": self.soft, "sharp": self.sharp}
        sc = self.scale
        for i, (kind, layer, _, col, width, closed, _, _) in enumerate(ops):
            p = fx[bounds[i] : bounds[i + 1]]
            if kind == "fill":
                cv2.fillPoly(layers[layer], [p], col, LINE, SHIFT)
            else:
                th = max(1, int(round(width * sc)))
                cv2.polylines(layers[layer], [p], closed, col, th, LINE, SHIFT)


# ----------------------------------------------------------------------------------------------
# neutral shading (every frame)
# ----------------------------------------------------------------------------------------------


def nasolabial(p: np.ndarray, side: int, pull: float = 0.0) -> np.ndarray:
    """Nasolabial fold from the nose wing to beyond the lip corner (side -1 left, +1 right)."""
    wing = p[31] if side < 0 else p[35]
    corner = p[48] if side < 0 else p[54]
    a = wing + np.array([side * 0.06, -0.02])
    c = corner + np.array([side * (0.09 + 0.03 * pull), 0.07 - 0.02 * pull])
    b = 0.5 * (a + c) + np.array([side * (0.08 + 0.06 * pull), -0.02])
    return curve(np.stack([a, b, c]), 5)


def neutral_shading(cv: Canvas, p: np.ndarray, ident, head_outline: np.ndarray) -> None:
    age = ident.age
    # face contour darkening (soft, becomes a gradient after the blur)
    cv.line("soft", head_outline, 100, 0.28, closed=True)
    # eye sockets and the shadow under the brows
    for s, (b0, b1) in ((-1, (17, 21)), (1, (22, 26))):
        ec = 0.5 * (p[37] + p[41]) if s < 0 else 0.5 * (p[44] + p[46])
        cv.blob("soft", ec + (0, -0.09), (0.30, 0.13), 114)
        brow = curve(p[b0 : b1 + 1], 3)
        cv.line("soft", brow + (0, 0.07), 110, 0.05)
        # cheekbone highlight
        cv.blob("soft", (s * 0.58, 0.45), (0.24, 0.15), 140)
        # inner corner shadow next to the nose root
        cv.blob("soft", (s * 0.17, 0.04), (0.06, 0.09), 112)
    # nose: side shadows, tip highlight, shadow under the nose, bridge highlight
    for s in (-1, 1):
        cv.line("soft", np.array([[s * 0.11, 0.02], [s * 0.12, 0.3], [s * 0.15, 0.55]]), 108, 0.07)
    cv.blob("soft", p[30] + (0, 0.02), (0.07, 0.06), 150)
    cv.line("soft", np.array([p[27] + (0, 0.05), p[29]]), 140, 0.03)
    cv.blob("soft", p[33] + (0, 0.07), (0.16, 0.045), 100)
    # philtrum groove
    for s in (-1, 1):
        cv.line("soft", np.array([p[33] + (s * 0.035, 0.03), p[51] + (s * 0.06, -0.02)]), 118, 0.025)
    # under the lower lip, chin highlight, under the jaw (on the neck)
    cv.line("soft", curve(np.stack([p[59], p[57], p[55]]), 4) + (0, 0.07), 110, 0.05)
    cv.blob("soft", 0.5 * (p[8] + p[57]) + (0, 0.05), (0.2, 0.12), 138)
    cv.line("soft", curve(p[3:14], 3) + (0, 0.09), 70, 0.14, z=-0.4)
    # permanent folds with age
    for s in (-1, 1):
        cv.furrow(nasolabial(p, s), 10 + 40 * age * ident.wrinkle_gain, 0.014, (s * -0.015, 0), soft=0.3)
    if age > 0.35:
        yb = 0.5 * (p[21, 1] + p[22, 1])
        for k in range(2):
            y = yb - 0.25 - 0.12 * k
            cv.furrow(np.array([[-0.45, y + 0.02], [0.0, y], [0.45, y + 0.02]]),
                      30 * (age - 0.35) * ident.wrinkle_gain, 0.012)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# AU textures; ``m`` is the visual strength (about 0..1.3), ``w`` the subject's wrinkle gain
# ----------------------------------------------------------------------------------------------


def au1(cv: Canvas, p, m, w):
    """Inner brow raiser: horizontal wrinkles in the centre of the forehead."""
    yb = 0.5 * (p[21, 1] + p[22, 1])
    for k in range(3):
        y = yb - 0.15 - 0.1 * k
        half = 0.2 + 0.06 * k
        pts = np.array([[-half, y + 0.03], [-half * 0.4, y - 0.005], [0, y - 0.012],
                        [half * 0.4, y - 0.005], [half, y + 0.03]])  # fmt: skip
        cv.furrow(curve(pts, 3), 70 * m * w * (1 - 0.22 * k), 0.016, (0, 0.018), soft=0.25)
    # raised inner brow skin: light bulge above the inner brows
    cv.blob("soft", (0.0, yb - 0.12), (0.3, 0.1), 128 + 14 * m)


def au2(cv: Canvas, p, m, w):
    """Outer brow raiser: wrinkles over the lateral forehead, above the outer brows."""
    for _side, idx in ((-1, (17, 18, 19, 20)), (1, (26, 25, 24, 23))):
        b = p[list(idx)]
        for k in range(2):
            pts = b + np.array([0.0, -0.17 - 0.1 * k])
            pts[:, 0] = pts[:, 0] * 0.95
            cv.furrow(curve(pts, 3), 55 * m * w * (1 - 0.25 * k), 0.014, (0, 0.016), soft=0.25)
        cv.blob("soft", b.mean(0) + (0, -0.12), (0.22, 0.08), 128 + 10 * m)


def au4(cv: Canvas, p, m, w):
    """Brow lowerer: vertical furrows between the brows, bulge, darker upper lids."""
    xi = 0.5 * (p[21] + p[22])
    for s in (-1, 1):
        a = np.array([xi[0] + s * 0.06, xi[1] - 0.06])
        b = np.array([xi[0] + s * 0.045, xi[1] + 0.12])
        cv.furrow(np.stack([a, 0.5 * (a + b) + (s * 0.01, 0), b]), 80 * m * w, 0.018, (s * 0.02, 0), soft=0.4)
    if m > 0.35:
        cv.furrow(np.array([[xi[0] - 0.08, p[27, 1] + 0.01], [xi[0] + 0.08, p[27, 1] + 0.01]]),
                  60 * (m - 0.35) * w, 0.014, (0, 0.015))  # fmt: skip
    cv.blob("soft", xi + (0, -0.02), (0.13, 0.08), 128 - 26 * m)
    for _side, i in ((-1, 19), (1, 24)):
        cv.blob("soft", p[i] + (0, -0.06), (0.2, 0.06), 128 + 16 * m)  # brow bulge
        cv.blob("soft", p[i] + (0, 0.13), (0.18, 0.06), 128 - 28 * m)  # shadowed upper lid


def au6(cv: Canvas, p, m, w):
    """Cheek raiser: crow's feet, infraorbital furrow, cheek lifted (one scale below the eye)."""
    for s, outer, low in ((-1, 36, (41, 40)), (1, 45, (46, 47))):
        o = p[outer] + np.array([s * 0.05, 0.0])
        for k, ang in enumerate((-0.45, 0.0, 0.45)):
            d = np.array([s * np.cos(ang), np.sin(ang)]) * (0.12 + 0.03 * (k == 1))
            cv.furrow(np.stack([o, o + 0.5 * d + (0, 0.01), o + d]), 28 * m * w, 0.012, None)
        lid = p[list(low)]
        fur = np.stack([lid[0] + (s * 0.05, 0.1), 0.5 * (lid[0] + lid[1]) + (0, 0.13), lid[1] + (-s * 0.03, 0.1)])
        cv.line("soft", curve(fur, 3), 128 - 22 * m * w, 0.05)  # infraorbital furrow (soft)
        cv.blob("soft", (s * 0.56, 0.42 - 0.08 * m), (0.25, 0.15), 128 + 12 * m)  # raised cheek
        cv.blob("soft", (s * 0.62, 0.78), (0.22, 0.12), 128 - 10 * m)  # shadow below it


def au7(cv: Canvas, p, m, w):
    """Lid tightener: tense, bulging lower lid (subtle)."""
    for low in ((41, 40), (46, 47)):
        lid = p[list(low)]
        pts = np.stack([lid[0] + (0, 0.03), lid[1] + (0, 0.03)])
        cv.furrow(pts, 75 * m * w, 0.016, (0, 0.018), soft=0.5)
        cv.line("sharp", lid, 128 - 70 * m, 0.016)  # tense, straight lower lid margin
        cv.blob("soft", 0.5 * (lid[0] + lid[1]) + (0, 0.025), (0.12, 0.03), 128 + 22 * m)
        cv.blob("soft", 0.5 * (lid[0] + lid[1]) + (0, -0.01), (0.14, 0.05), 128 - 16 * m)


def au9(cv: Canvas, p, m, w):
    """Nose wrinkler: wrinkles across the root and sides of the nose."""
    for k in range(3):
        y = p[27, 1] + 0.12 + 0.08 * k
        cv.furrow(np.array([[-0.1, y], [0.0, y + 0.015], [0.1, y]]), 75 * m * w, 0.014, (0, 0.015))
    for s in (-1, 1):
        a = np.array([s * 0.09, p[29, 1] - 0.06])
        cv.furrow(np.stack([a, a + (s * 0.1, 0.12)]), 60 * m * w, 0.014, (s * 0.015, 0))
        cv.blob("soft", (s * 0.2, 0.45), (0.09, 0.12), 128 - 22 * m)
        cv.furrow(nasolabial(p, s)[:6], 45 * m * w, 0.016, (s * -0.015, 0), soft=0.4)
    cv.blob("soft", p[27] + (0, 0.04), (0.1, 0.06), 128 - 22 * m)


def au10(cv: Canvas, p, m, w):
    """Upper lip raiser: deep upper nasolabial furrow, infraorbital triangle pushed up."""
    for s in (-1, 1):
        cv.furrow(nasolabial(p, s, 0.2)[:8], 80 * m * w, 0.022, (s * -0.022, 0), soft=0.6)
        cv.blob("soft", (s * 0.38, 0.72), (0.14, 0.1), 128 + 20 * m)
    cv.blob("soft", p[51] + (0, -0.07), (0.14, 0.05), 128 - 18 * m)  # philtrum shortened


def au12(cv: Canvas, p, m, w):
    """Lip corner puller: nasolabial fold deepened and pulled out, cheeks bunched."""
    for s in (-1, 1):
        cv.furrow(nasolabial(p, s, 1.0), 65 * m * w, 0.02, (s * -0.022, 0), soft=0.55)
        corner = p[48] if s < 0 else p[54]
        cv.blob("soft", corner + (s * 0.2, -0.22), (0.22, 0.16), 128 + 12 * m)


def au14(cv: Canvas, p, m, w):
    """Dimpler: crescent dimples just lateral to the tightened lip corners."""
    for s, c in ((-1, 48), (1, 54)):
        o = p[c] + np.array([s * 0.065, 0.0])
        pts = np.stack([o + (0, -0.06), o + (s * 0.025, 0.0), o + (0, 0.06)])
        cv.furrow(curve(pts, 3), 95 * m * w, 0.02, (-s * 0.02, 0), soft=0.6)
        cv.blob("sharp", p[c] + (s * 0.012, 0), (0.02, 0.016), 128 - 60 * m)
        cv.blob("soft", p[c] + (s * 0.03, 0), (0.04, 0.05), 128 + 16 * m)


def au15(cv: Canvas, p, m, w):
    """Lip corner depressor: corners pulled down, folds below them."""
    for s, c in ((-1, 48), (1, 54)):
        o = p[c] + np.array([s * 0.015, 0.03])
        cv.furrow(np.stack([o, o + (s * 0.04, 0.1), o + (s * 0.07, 0.2)]), 60 * m * w, 0.016,
                  (-s * 0.018, 0), soft=0.4)  # fmt: skip
        cv.blob("soft", p[c] + (-s * 0.02, 0.1), (0.07, 0.06), 128 + 14 * m)


_CHIN_DOTS = np.random.default_rng(1717).uniform(-1, 1, (10, 2)) * np.array([0.15, 0.07])


def au17(cv: Canvas, p, m, w):
    """Chin raiser: chin boss pushed up and wrinkled, deeper mentolabial furrow."""
    c = np.array([0.0, 0.5 * (p[57, 1] + p[8, 1]) + 0.02])
    cv.blob("soft", c, (0.2, 0.13), 128 + 26 * m)
    lo = curve(np.stack([p[59], p[57], p[55]]), 4) + (0, 0.085)
    cv.furrow(lo, 65 * m * w, 0.02, (0, 0.02), soft=0.6)
    for d in _CHIN_DOTS:
        cv.blob("sharp", c + d, (0.012, 0.009), 128 - 45 * m * w)
    cv.blob("soft", p[57] + (0, -0.02), (0.15, 0.04), 128 + 15 * m)  # lower lip pushed up


def au23(cv: Canvas, p, m, w):
    """Lip tightener: narrowed, rolled lip margins (subtle)."""
    up = curve(p[48:55], 3)
    lo = curve(np.concatenate([p[54:60], p[48:49]]), 3)
    cv.line("sharp", up, 128 - 55 * m, 0.018)
    cv.line("sharp", lo, 128 - 55 * m, 0.018)
    cv.blob("soft", 0.5 * (p[51] + p[57]), (0.24, 0.07), 128 - 16 * m)  # rolled-in, darker lips
    for s in (-1, 1):
        cv.furrow(np.array([[s * 0.12, p[51, 1] - 0.07], [s * 0.1, p[51, 1] - 0.02]]), 35 * m * w, 0.01, None)


def au24(cv: Canvas, p, m, w):
    """Lip presser: bulges above and below the pressed lips, hard lip line (subtle)."""
    cv.blob("soft", p[51] + (0, -0.065), (0.22, 0.045), 128 + 20 * m)
    cv.blob("soft", p[57] + (0, 0.06), (0.2, 0.045), 128 + 20 * m)
    cv.line("sharp", curve(np.stack([p[60], p[61], p[62], p[63], p[64]]), 3), 128 - 55 * m, 0.014)
    for s, c in ((-1, 48), (1, 54)):
        cv.blob("soft", p[c] + (s * 0.03, 0), (0.04, 0.05), 128 - 18 * m)


def au26(cv: Canvas, p, m, w):
    """Jaw drop: cheeks hollow a little, the lower face stretches."""
    for s in (-1, 1):
        cv.blob("soft", (s * 0.62, 1.0), (0.18, 0.22), 128 - 20 * m)


#: AU -> texture function (AU25's look is the open mouth with teeth, drawn by the renderer)
AU_TEXTURES = {1: au1, 2: au2, 4: au4, 6: au6, 7: au7, 9: au9, 10: au10, 12: au12, 14: au14,
               15: au15, 17: au17, 23: au23, 24: au24, 26: au26}  # fmt: skip
