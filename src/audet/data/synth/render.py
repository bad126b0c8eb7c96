"""Rendering one frame: head, hair, features, AU texture, light, occluders, camera effects.

Everything is drawn with OpenCV polygons/polylines (anti-aliased, sub-pixel) on numpy arrays;
there is no per-pixel Python loop. :class:`FaceRenderer` holds what is fixed for a subject.
"""
from __future__ import annotations

import cv2
import numpy as np

from .face_model import (
    BASE_AU_GAIN,
    SUBTLE_AUS,
    Projector,
    Pose,
    deform,
    magnitudes,
    neutral_shape,
    subject_displacements,
)
from .identity import Identity
from .presets import SYNTH_AUS, SynthConfig
from .texture import AU_TEXTURES, Canvas, curve, depth_lookup, ellipse_pts, neutral_shading

_I = {au: i for i, au in enumerate(SYNTH_AUS)}


def _c(rgb, f: float = 1.0):
    return tuple(float(np.clip(v * f, 0, 255)) for v in rgb)


class FaceRenderer:
    """Renders frames of one subject."""

    def __init__(self, ident: Identity, cfg: SynthConfig):
        self.ident = ident
        self.cfg = cfg
        self.neutral = neutral_shape(ident)
        self.au_gains = cfg.au_gain_map()
        self.disp = subject_displacements(ident, cfg.subtle, cfg.au_gain, self.au_gains)
        self.skin = np.asarray(ident.skin, dtype=np.float64)
        self.hair = np.asarray(ident.hair, dtype=np.float64)
        self.lip = np.asarray(ident.lip, dtype=np.float64)
        # hairline / fringe jitter fixed per identity (derived from its shape noise)
        sn = np.asarray(ident.shape_noise or [0.0] * 136)
        self._fringe = sn[:24].reshape(12, 2) * 4.0
        self._curls = 0.5 + 0.5 * np.tanh(sn[24:60] * 60)
        self.texture_gain = ident.wrinkle_gain

    # ------------------------------------------------------------------------------------------
    def shape(self, intensity: np.ndarray, blink: float = 0.0) -> np.ndarray:
        """(68, 2) face-unit landmarks for AU intensities (15,) and eyelid closure 0..1."""
        p = deform(self.neutral, self.disp, magnitudes(intensity[None])[0])
        if blink > 0:
            for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
                p[up] = p[up] + blink * 0.92 * (p[lo] - p[up])
        return p

    def head_outline(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closed head outline (jaw landmarks + skull arc) and the depth of each point."""
        a_l, a_r = -p[0, 0], p[16, 0]
        b = 1.62 * self.ident.face_length ** 0.5 + 0.1 * self.ident.face_width
        th = np.linspace(2 * np.pi, np.pi, 15)[1:-1]
        ax = np.where(np.cos(th) > 0, a_r, a_l) * 1.02
        arc = np.stack([ax * np.cos(th), b * np.sin(th) + 0.02 * np.cos(th) ** 2], axis=1)
        jaw = p[0:17]
        zj = depth_lookup(jaw)
        za = -0.95 + (zj[0] + 0.95) * np.cos(th) ** 2
        return np.concatenate([jaw, arc]), np.concatenate([zj, za])

    # ------------------------------------------------------------------------------------------
    def render(
        self,
        background: np.ndarray,
        intensity: np.ndarray,
        pose: Pose,
        light: np.ndarray,
        blink: float = 0.0,
        gaze: tuple[float, float] = (0.0, 0.0),
        occluders=(),
        t: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 frame (before camera noise/JPEG) and the (68, 2) 0-based pixel landmarks."""
        ident = self.ident
        proj = Projector(pose)
        cv = Canvas(background.copy(), proj, pose.scale)
        p = self.shape(intensity, blink)
        mags = magnitudes(intensity[None])[0]
        skin = self.skin
        outline, zo = self.head_outline(p)

        self._hair_back(cv, p)
        self._neck(cv, p)
        self._ears(cv, p)
        cv.fill("img", outline, _c(skin), z=zo)
        for x, y, r in ident.moles:
            cv.blob("img", (x, y), (r, r), _c(skin, 0.55))
        if ident.beard > 0:
            beard = np.concatenate([p[2:15], curve(np.stack([p[54] + (0.12, -0.05), p[33] + (0, 0.05),
                                                              p[48] + (-0.12, -0.05)]), 3)])  # fmt: skip
            cv.fill("soft", beard, 128 * (1 - 0.3 * ident.beard))
        neutral_shading(cv, p, ident, outline)

        # AU textures (strength: intensity-derived magnitude times the subject's gains)
        w = self.texture_gain
        g_all = ident.expressivity * self.cfg.au_gain
        for au, fn in AU_TEXTURES.items():
            m = mags[_I[au]]
            if m <= 0.02:
                continue
            g = g_all * ident.au_gain.get(au, 1.0) * self.au_gains[au]
            if au in SUBTLE_AUS:
                g *= BASE_AU_GAIN[au] * self.cfg.subtle
            fn(cv, p, m * g, w)

        self._brows(cv, p)
        self._eyes(cv, p, gaze)
        self._nose(cv, p)
        self._mouth(cv, p, mags)
        self._hair_front(cv, p)
        if ident.glasses:
            self._glasses(cv, p)

        cv.flush()
        # shading: soft layer blurred, sharp layer lightly blurred, then light
        sig = max(0.8, 0.045 * pose.scale)
        soft = cv2.GaussianBlur(cv.soft, (0, 0), sig)
        sharp = cv2.GaussianBlur(cv.sharp, (3, 3), 0.6)
        shade = cv2.multiply(soft, sharp, dtype=cv2.CV_32F, scale=1.0 / 16384.0)
        img = cv.img.astype(np.float32)
        img *= shade[..., None]
        img *= light
        np.clip(img, 0, 255, out=img)
        img = img.astype(np.uint8)
        for occ in occluders:
            if occ.start <= t < occ.end:
                from .nuisance import draw_occluder

                cx, cy = int(np.clip(pose.cx, 0, img.shape[1] - 1)), int(np.clip(pose.cy, 0, img.shape[0] - 1))
                lit = np.asarray(ident.skin) * float(light[cy, cx].mean())
                draw_occluder(img, occ, t, lambda xy, z=None: cv.px(xy, z), pose.scale, tuple(lit))
        lm = cv.px(p, depth_lookup(p))
        return img, lm

    # ------------------------------------------------------------------------------------------
    def _hair_back(self, cv: Canvas, p):
        st = self.ident.hair_style
        if st not in ("long", "bun", "curly", "bald"):
            return
        v = self.ident.hair_volume
        a = max(-p[0, 0], p[16, 0]) + 0.12 * v
        if st == "long":
            pts = np.array([[-a, 0.0], [-a - 0.1 * v, 1.0], [-a - 0.05, 2.3], [-0.6, 2.5], [0.6, 2.5],
                            [a + 0.05, 2.3], [a + 0.1 * v, 1.0], [a, 0.0], [a * 0.7, -1.3],
                            [0, -1.7 - 0.1 * v], [-a * 0.7, -1.3]])  # fmt: skip
            cv.fill("img", curve(pts, 3, closed=True), _c(self.hair), z=-1.1)
        elif st == "bun":
            cv.blob("img", (0.0, -1.75), (0.45, 0.3), _c(self.hair), z=-1.1)
        elif st == "bald":  # a rim of short hair at the sides and back, below the crown
            b = 1.62 * self.ident.face_length ** 0.5 + 0.1 * self.ident.face_width
            a0 = max(-p[0, 0], p[16, 0]) * 1.02
            for s in (-1, 1):
                th = np.linspace(0.0, 0.5, 6) if s > 0 else np.linspace(np.pi, np.pi - 0.5, 6)
                outer = np.stack([(a0 + 0.04) * np.cos(th), -b * np.sin(np.abs(th - (0 if s > 0 else np.pi)))
                                  + 0.25 * (th == th[0])], 1)  # fmt: skip
                inner = outer[::-1] * np.array([0.85, 1.0])
                cv.fill("img", np.concatenate([outer, inner]), _c(self.hair), z=-1.1)
        else:
            cv.blob("img", (0.0, -0.3), (a + 0.2 * v, 1.45 + 0.2 * v), _c(self.hair), z=-1.1)

    def _neck(self, cv: Canvas, p):
        jw = self.ident.jaw_width * self.ident.face_width
        neck = np.array([[-0.55 * jw, 1.0], [-0.58 * jw, 2.6], [0.58 * jw, 2.6], [0.55 * jw, 1.0]])
        cv.fill("img", neck, _c(self.skin, 0.9), z=-0.7)
        shirt = np.array([[-2.6, 3.4], [-2.4, 2.75], [-0.6 * jw, 2.35], [0.0, 2.6], [0.6 * jw, 2.35],
                          [2.4, 2.75], [2.6, 3.4]])  # fmt: skip
        cv.fill("img", curve(shirt, 3), _c(self.ident.shirt), z=-0.8)

    def _ears(self, cv: Canvas, p):
        for s, i in ((-1, 0), (1, 16)):
            c = np.array([p[i, 0] + s * 0.06, 0.3])
            cv.fill("img", ellipse_pts(c, (0.12, 0.3), 0.1 * s), _c(self.skin, 0.95), z=-0.95)
            cv.line("sharp", curve(np.stack([c + (s * 0.05, 0.2), c + (s * 0.06, -0.12), c + (0, -0.18)]), 3),
                    95, 0.02, z=-0.95)  # fmt: skip

    def _brows(self, cv: Canvas, p):
        bt = self.ident.brow_thickness
        col = _c(self.ident.brow)
        for idx in ((17, 18, 19, 20, 21), (26, 25, 24, 23, 22)):
            c = curve(p[list(idx)], 3)  # outer -> inner
            n = len(c)
            tt = np.linspace(0, 1, n)[:, None]
            up = 0.025 + 0.03 * tt
            lo = 0.015 + 0.025 * tt
            upper = c - np.concatenate([np.zeros_like(up), up * bt], axis=1)
            lower = c + np.concatenate([np.zeros_like(lo), lo * bt], axis=1)
            cv.fill("img", np.concatenate([upper, lower[::-1]]), col)
            # a few hair strokes for texture
            cv.line("sharp", c[:: max(1, n // 4)] + (0, -0.005), 110, 0.012)

    def _eyes(self, cv: Canvas, p, gaze):
        ident = self.ident
        skin = _c(self.skin)
        lash = _c(self.hair, 0.35)
        for idx, _side in (((36, 37, 38, 39, 40, 41), -1), ((42, 43, 44, 45, 46, 47), 1)):
            e = p[list(idx)]
            # both eyes: e[0..3] is the upper lid from corner to corner, e[3], e[4], e[5], e[0] the lower
            upper = curve(e[[0, 1, 2, 3]], 4)
            lower = curve(e[[3, 4, 5, 0]], 4)
            opening = np.concatenate([upper, lower[1:-1]])
            cv.fill("img", opening, (236, 230, 222))
            aperture = float(np.mean(e[[4, 5], 1]) - np.mean(e[[1, 2], 1]))
            if aperture > 0.012:
                ctr = e.mean(0) + np.array([gaze[0], gaze[1]]) * 0.05
                r = 0.1 * ident.eye_size
                cv.blob("img", ctr, (r, r), _c(ident.iris))
                cv.blob("img", ctr, (0.42 * r, 0.42 * r), (20, 16, 16))
                cv.blob("img", ctr + (-0.3 * r, -0.35 * r), (0.15 * r, 0.15 * r), (240, 240, 240))
                # cover the iris outside the lids with lid skin
                lid_up = np.concatenate([upper, (upper + (0, -0.16))[::-1]])
                lid_lo = np.concatenate([lower, (lower + (0, 0.16))[::-1]])
                cv.fill("img", lid_up, skin)
                cv.fill("img", lid_lo, skin)
            cv.line("img", upper, lash, 0.026)
            cv.line("sharp", lower, 100, 0.012)
            cv.line("sharp", upper[2:-2] + (0, -0.055), 104, 0.013)  # lid crease
            cv.blob("soft", e.mean(0), (0.2, 0.06), 118)

    def _nose(self, cv: Canvas, p):
        dark = _c(self.skin, 0.35)
        for s, (w, n) in ((-1, (31, 32)), (1, (35, 34))):
            cv.blob("img", p[n] + (s * 0.015, -0.018), (0.045, 0.02), dark, angle=-s * 0.2)
            wing = np.stack([p[w] + (-s * 0.01, -0.13), p[w] + (s * 0.03, -0.05), p[w] + (s * 0.015, 0.02),
                             p[n] + (0, 0.0)])  # fmt: skip
            cv.line("sharp", curve(wing, 3), 96, 0.016)

    def _mouth(self, cv: Canvas, p, mags):
        lip = self.lip
        upper_in = curve(p[[60, 61, 62, 63, 64]], 4)  # left -> right
        lower_in = curve(p[[64, 65, 66, 67, 60]], 4)  # right -> left
        gap = float(np.max(p[[67, 66, 65], 1] - p[[61, 62, 63], 1]))
        if gap > 0.02:
            cv.fill("img", np.concatenate([upper_in, lower_in[1:-1]]), (70, 24, 30))
            lo_r = lower_in[::-1]  # left -> right, same sampling as upper_in
            n = len(upper_in)
            k0, k1 = int(n * 0.12), int(np.ceil(n * 0.88))
            top = upper_in[k0:k1] + (0, -0.01)
            bottom = np.minimum(upper_in[k0:k1, 1] + 0.085, lo_r[k0:k1, 1])
            teeth = np.concatenate([top, np.stack([top[:, 0], bottom], 1)[::-1]])
            cv.fill("img", teeth, (232, 226, 210))
            xs = top[:, 0]
            for xk in (-0.14, -0.05, 0.05, 0.14):
                if xs.min() < xk < xs.max():
                    y0 = np.interp(xk, xs, top[:, 1])
                    y1 = np.interp(xk, xs, bottom)
                    if y1 - y0 > 0.02:
                        cv.line("sharp", np.array([[xk, y0 + 0.01], [xk, y1]]), 95, 0.01)
            if gap > 0.16:  # lower teeth in a wide-open mouth
                ltop = np.maximum(lo_r[k0:k1, 1] - 0.05, upper_in[k0:k1, 1])
                lteeth = np.concatenate([np.stack([lo_r[k0:k1, 0], ltop], 1), (lo_r[k0:k1] + (0, 0.01))[::-1]])
                cv.fill("img", lteeth, (215, 208, 192))
            cv.blob("soft", p[62] + (0, 0.02), (0.25, 0.04), 110)
        up_out = curve(p[48:55], 4)
        lo_out = curve(np.concatenate([p[54:60], p[48:49]]), 4)
        cv.fill("img", np.concatenate([up_out, upper_in[::-1][1:-1]]), _c(lip, 0.88))
        cv.fill("img", np.concatenate([lo_out, lower_in[::-1][1:-1]]), _c(lip))
        cv.line("sharp", upper_in, 70 if gap <= 0.02 else 100, 0.016)
        cv.line("sharp", up_out, 112, 0.012)
        cv.blob("soft", p[57] + (0, -0.045), (0.12, 0.03), 146)  # lower-lip highlight

    def _hair_front(self, cv: Canvas, p):
        ident = self.ident
        st = ident.hair_style
        v = ident.hair_volume
        a = max(-p[0, 0], p[16, 0])
        col = _c(self.hair)
        hl = -0.98 - ident.hairline
        if st == "bald":
            return
        top = -1.67 * ident.face_length ** 0.5 - 0.12 * v
        th = np.linspace(np.pi + 0.35, 2 * np.pi - 0.35, 13)
        outer = np.stack([(a + 0.07 * v) * np.cos(th), -top * np.sin(th)], 1)
        outer[:, 1] = np.minimum(outer[:, 1], -0.35)
        if st == "bangs":
            xs = np.linspace(a * 0.98, -a * 0.98, 12)
            ys = hl + 0.3 + 0.25 * (np.abs(xs) / a) ** 2 * 0.5 + self._fringe[:, 1] * 0.6
            inner = np.stack([xs, np.minimum(ys, -0.62 + 0.3 * (np.abs(xs) / a) ** 3)], 1)
        else:
            xs = np.linspace(a * 0.99, -a * 0.99, 9)
            ys = hl + 0.55 * (np.abs(xs) / a) ** 2.2
            inner = np.stack([xs, ys], 1)
            inner[[0, -1], 1] = -0.3
        poly = np.concatenate([outer, curve(inner, 3)])
        zpoly = np.concatenate([np.full(len(outer), -0.9), depth_lookup(curve(inner, 3)) - 0.02])
        cv.fill("img", poly, col, z=zpoly)
        if st == "curly":
            for k, t in enumerate(th):
                r = 0.12 + 0.06 * self._curls[k]
                c = np.array([(a + 0.04) * np.cos(t), -top * np.sin(t)])
                cv.blob("img", c, (r, r), col, z=-0.9)
        # a few strands and a shadow under the hairline
        cv.line("soft", curve(inner, 3), 100, 0.06)
        for k in range(0, len(th) - 2, 2):
            a0 = np.array([outer[k, 0] * 0.8, outer[k, 1] * 0.8])
            cv.line("sharp", np.stack([a0, 0.5 * (a0 + inner[min(k, len(inner) - 1)])]), 105, 0.012, z=-0.5)

    def _glasses(self, cv: Canvas, p):
        col = (30, 28, 30)
        for idx in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
            c = p[list(idx)].mean(0) + np.array([0.0, 0.01])
            if self.ident.glasses_shape == "round":
                ring = ellipse_pts(c, (0.22, 0.18))
            else:
                ring = curve(np.array([[c[0] - 0.24, c[1] - 0.15], [c[0] + 0.24, c[1] - 0.15],
                                       [c[0] + 0.23, c[1] + 0.13], [c[0] - 0.23, c[1] + 0.13]]), 3, closed=True)  # fmt: skip
            cv.line("img", ring, col, 0.028, closed=True, z=0.08)
        cv.line("img", np.array([[-0.27, -0.04], [0.0, -0.07], [0.27, -0.04]]), col, 0.025, z=0.12)
        for s in (-1, 1):
            cv.line("img", np.array([[s * 0.72, -0.04], [s * (abs(p[0, 0]) + 0.02), 0.0]]), col, 0.025, z=-0.4)
