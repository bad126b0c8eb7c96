"""Face alignment (JAA-Net / AC2D protocol) and predefined AU attention maps.

Alignment follows protocol section 2 exactly; attention maps follow protocol section 3 with the
equations of AC2D (Eq. 3-5), AAR (Eq. 1-2) and ESCDA's LSC (Eq. 1-3). See ``docs/protocol.md``.

Coordinates are ``(x, y)`` pixels, 0-based (pixel centres at integers), x right, y down.
Attention maps are indexed ``[..., row, column]`` = ``[..., y_cell, x_cell]``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = [
    "FIVE_POINTS_49",
    "alignment_matrix",
    "transform_points",
    "align_face",
    "gaussian_au_maps",
    "ac2d_attention_maps",
    "aar_attention_maps",
    "lsc_attention_maps",
    "five_points",
    "similarity_transform",
    "align_clip_to_frame",
    "AUNET_CROP_RULES",
    "aunet_crop_box",
]

#: 49-point indices used by the alignment: left-eye points, right-eye points, nose tip,
#: left and right mouth corners (protocol section 2, step 2).
LEFT_EYE_49 = tuple(range(19, 25))
RIGHT_EYE_49 = tuple(range(25, 31))
FIVE_POINTS_49 = {"left_eye": LEFT_EYE_49, "right_eye": RIGHT_EYE_49, "nose": 13,
                  "mouth_left": 31, "mouth_right": 37}  # fmt: skip


def _as_numpy_landmarks(landmarks, n_points: int = 49) -> np.ndarray:
    if isinstance(landmarks, torch.Tensor):
        landmarks = landmarks.detach().cpu().numpy()
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-2:] != (n_points, 2):
        raise ValueError(f"landmarks must have shape (..., {n_points}, 2), got {lm.shape}")
    return lm


# ---------------------------------------------------------------------------------------------
# Alignment (protocol section 2)
# ---------------------------------------------------------------------------------------------


def alignment_matrix(landmarks49, size: int = 200, scale_factor: float = 2.9,
                     one_based: bool = False) -> np.ndarray:  # fmt: skip
    """2x3 float64 affine matrix M of the JAA-Net / AC2D face alignment (protocol section 2).

    Steps: (1) if ``one_based``, landmarks -= 1; (2) five points: left-eye mean (49-point
    indices 19..24), right-eye mean (25..30), nose p13, mouth corners p31 and p37; (3) rotate about
    the origin by the eye-line angle so the eye means are level; (4) bounding box of the five
    rotated points, centre (cx, cy), width w, height h; (5) half = 0.5 * scale_factor * max(w, h),
    s = ((size - 1) / 2) / half (99.5 / half for 200); (6) M = [[s, 0, s (half - cx)],
    [0, s, s (half - cy)]] @ R. The bounding-box centre goes to ((size-1)/2, (size-1)/2).

    Args:
        landmarks49: ``(49, 2)`` landmarks (x, y) in the original image.
        size: output side in pixels.
        scale_factor: box enlargement (2.9 in the published code).
        one_based: True for raw 1-based (MATLAB-style) annotations as read by the published
            preparation scripts; our own data is 0-based (default False).

    Raises:
        ValueError: wrong shape, NaN/inf landmarks, coincident eye centres or zero-size box.
    """
    lm = _as_numpy_landmarks(landmarks49)
    if lm.ndim != 2:
        raise ValueError(f"alignment_matrix takes one face (49, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        bad = sorted(set(np.nonzero(~np.isfinite(lm))[0].tolist()))
        raise ValueError(f"landmarks contain NaN/inf at 49-point indices {bad}")
    if size <= 1 or scale_factor <= 0:
        raise ValueError(f"need size > 1 and scale_factor > 0, got {size}, {scale_factor}")
    if one_based:
        lm = lm - 1.0
    left = lm[list(LEFT_EYE_49)].mean(axis=0)
    right = lm[list(RIGHT_EYE_49)].mean(axis=0)
    d = right - left
    dist = math.hypot(d[0], d[1])
    if not dist > 1e-12:
        raise ValueError("degenerate landmarks: left and right eye centres coincide")
    c, s_ = d[0] / dist, d[1] / dist
    rot = np.array([[c, s_], [-s_, c]])  # rotates the eye line onto +x
    five = np.stack([left, right, lm[13], lm[31], lm[37]])
    five_r = five @ rot.T
    lo, hi = five_r.min(axis=0), five_r.max(axis=0)
    cx, cy = (lo + hi) / 2.0
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    if not extent > 1e-12:
        raise ValueError("degenerate landmarks: the five alignment points have a zero-size box")
    half = 0.5 * scale_factor * extent
    scale = (size - 1) / 2.0 / half
    m3 = np.array([[scale, 0.0, scale * (half - cx)],
                   [0.0, scale, scale * (half - cy)],
                   [0.0, 0.0, 1.0]])  # fmt: skip
    r3 = np.eye(3)
    r3[:2, :2] = rot
    return (m3 @ r3)[:2].copy()


def transform_points(pts, M):
    """Apply affine ``M`` to points: ``pts @ M[:, :2].T + M[:, 2]``.

    ``pts`` is ``(..., 2)`` with ``M`` ``(2, 3)``, or ``(..., P, 2)`` with a batch of matrices
    ``(..., 2, 3)`` (one per leading index). numpy or torch; torch in, torch out.
    """
    if isinstance(pts, torch.Tensor):
        Mt = torch.as_tensor(M, dtype=pts.dtype if pts.is_floating_point() else torch.float64,
                             device=pts.device)  # fmt: skip
        p = pts.to(Mt.dtype)
        if Mt.ndim == 2:
            return p @ Mt[:, :2].T + Mt[:, 2]
        return p @ Mt[..., :2].transpose(-1, -2) + Mt[..., None, :, 2]
    Mn = np.asarray(M, dtype=np.float64)
    p = np.asarray(pts, dtype=np.float64)
    if Mn.shape[-2:] != (2, 3):
        raise ValueError(f"M must have shape (..., 2, 3), got {Mn.shape}")
    if p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    if Mn.ndim == 2:
        return p @ Mn[:, :2].T + Mn[:, 2]
    return p @ np.swapaxes(Mn[..., :2], -1, -2) + Mn[..., None, :, 2]


def _warp(image: np.ndarray, M: np.ndarray, size: int, border: int) -> np.ndarray:
    img = np.ascontiguousarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"empty image {img.shape}")
    out = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * 4)  # fmt: skip
    if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing singleton channel
        out = out[:, :, None]
    return out


def align_face(image, landmarks49, size: int = 200, border: int = 128, one_based: bool = False,
               scale_factor: float = 2.9):  # fmt: skip
    """Align a face (protocol section 2) -> ``(warped, landmarks, M)``.

    Single frame: ``image`` ``(H, W, C)`` (or ``(H, W)``), ``landmarks49`` ``(49, 2)`` ->
    warped ``(size, size, C)`` (same dtype as the input, uint8 for uint8 images), landmarks
    ``(49, 2)`` float64 in the aligned image, ``M`` ``(2, 3)`` float64.

    Sequence: ``image`` a list of T frames or a ``(T, H, W, C)`` array and ``landmarks49``
    ``(T, 49, 2)`` -> stacked ``(T, size, size, C)``, ``(T, 49, 2)``, ``(T, 2, 3)``; each frame is
    aligned with its own landmarks (identical to calling this per frame).

    The warp is ``cv2.warpAffine`` with ``INTER_LINEAR`` and a constant border of grey ``border``.
    ``one_based=True`` subtracts 1 from the landmarks first (raw 1-based published annotations);
    the returned landmarks are then 0-based aligned coordinates. Default False (our own data).
    """
    lm = _as_numpy_landmarks(landmarks49)
    if lm.ndim == 2:
        M = alignment_matrix(lm, size=size, scale_factor=scale_factor, one_based=one_based)
        src = lm - 1.0 if one_based else lm
        return _warp(np.asarray(image), M, size, border), transform_points(src, M), M
    if lm.ndim != 3:
        raise ValueError(f"landmarks must be (49, 2) or (T, 49, 2), got {lm.shape}")
    frames = list(image) if not isinstance(image, np.ndarray) else image
    if len(frames) != lm.shape[0]:
        raise ValueError(f"{len(frames)} frames but {lm.shape[0]} landmark sets")
    warped, pts, mats = [], [], []
    for t in range(lm.shape[0]):
        try:
            w, p, M = align_face(frames[t], lm[t], size=size, border=border,
                                 one_based=one_based, scale_factor=scale_factor)  # fmt: skip
        except ValueError as e:
            raise ValueError(f"frame {t}: {e}") from e
        warped.append(w)
        pts.append(p)
        mats.append(M)
    return np.stack(warped), np.stack(pts), np.stack(mats)


# ---------------------------------------------------------------------------------------------
# Predefined attention maps (protocol section 3)
# ---------------------------------------------------------------------------------------------


def gaussian_au_maps(subcenters, map_size: int, image_size: int, sigma: float = 3.0):
    """Gaussian AU maps, max over the two sub-centres (AC2D Eq. 3-4, AAR Eq. 1-2, ESCDA Eq. 1-2).

    Each sub-centre (x, y) in image pixels goes to the cell ``(a0, b0)`` with
    ``b0 = floor(x * map_size / image_size + 0.5)`` (column) and
    ``a0 = floor(y * map_size / image_size + 0.5)`` (row). The map value at row ``a``, column
    ``b`` is ``exp(-((a - a0)^2 + (b - b0)^2) / (2 sigma^2))`` (Eq. 3), and the two sub-centre
    maps are combined by element-wise max (Eq. 4). Values lie in (0, 1]; sub-centres outside the
    map are allowed (only their Gaussian tail falls inside).

    Args:
        subcenters: ``(..., A, 2, 2)`` (sub-centre, (x, y)), numpy or torch.
        map_size: side of the square map in cells.
        image_size: side of the (square) image the sub-centres refer to, in pixels.
        sigma: standard deviation in cells.

    Returns:
        ``(..., A, map_size, map_size)`` indexed ``[..., row=y, column=x]``; same type as the input
        (floating dtype kept, float64 / default float dtype for integer inputs).
    """
    if map_size <= 0 or image_size <= 0 or not sigma > 0:
        raise ValueError(
            f"need map_size > 0, image_size > 0, sigma > 0; got {map_size}, {image_size}, {sigma}"
        )
    shape = tuple(subcenters.shape)
    if len(shape) < 3 or shape[-2:] != (2, 2):
        raise ValueError(f"subcenters must have shape (..., A, 2, 2), got {shape}")
    ratio = map_size / image_size
    two_s2 = 2.0 * float(sigma) ** 2
    if isinstance(subcenters, torch.Tensor):
        sc = subcenters if subcenters.is_floating_point() else subcenters.to(torch.get_default_dtype())
        if not bool(torch.isfinite(sc).all()):
            raise ValueError("subcenters contain NaN/inf")
        cells = torch.floor(sc * ratio + 0.5)
        grid = torch.arange(map_size, dtype=sc.dtype, device=sc.device)
        dx2 = (grid - cells[..., 0, None]) ** 2  # (..., 2, m) over columns
        dy2 = (grid - cells[..., 1, None]) ** 2  # (..., 2, m) over rows
        g = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / two_s2)  # (..., 2, m, m)
        return g.amax(dim=-3)
    sc = np.asarray(subcenters)
    if not np.issubdtype(sc.dtype, np.floating):
        sc = sc.astype(np.float64)
    if not np.isfinite(sc).all():
        raise ValueError("subcenters contain NaN/inf")
    cells = np.floor(sc * ratio + 0.5)
    grid = np.arange(map_size, dtype=sc.dtype)
    dx2 = (grid - cells[..., 0, None]) ** 2
    dy2 = (grid - cells[..., 1, None]) ** 2
    g = np.exp(-(dy2[..., :, None] + dx2[..., None, :]) / sc.dtype.type(two_s2))
    return g.max(axis=-3)


def ac2d_attention_maps(subcenters, image_size: int = 176, sigma: float = 3.0):
    """AC2D predefined attention (Eq. 3-5): Gaussian max maps of side ``image_size // 8``
    (22 for 176), L1-normalised over each map so it sums to 1 (Eq. 5).

    ``subcenters`` ``(..., A, 2, 2)`` in pixels of the ``image_size`` crop ->
    ``(..., A, image_size//8, image_size//8)``. If a map underflows to all zeros (sub-centres some
    40+ cells off the map in float32) the denominator is clamped and the map stays zero.
    """
    m = gaussian_au_maps(subcenters, image_size // 8, image_size, sigma)
    if isinstance(m, torch.Tensor):
        return m / m.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
    return m / np.maximum(m.sum(axis=(-2, -1), keepdims=True), np.finfo(m.dtype).tiny)


def aar_attention_maps(subcenters, image_size: int = 176, sigma: float = 3.0):
    """AAR predefined attention (Eq. 1-2): Gaussian max maps of side ``image_size // 4``
    (44 for 176), NOT normalised (values in (0, 1], regressed with an MSE loss)."""
    return gaussian_au_maps(subcenters, image_size // 4, image_size, sigma)


def lsc_attention_maps(subcenters, eps, image_size: int = 112, map_size: int | None = None,
                       sigma: float = 3.0):  # fmt: skip
    """ESCDA LSC mask (Eq. 1-3): Gaussian max map M~ (Eq. 1-2), then ``(M~ + eps_i) / (1 + eps_i)``
    (Eq. 3) with one ``eps_i >= 0`` per AU.

    Args:
        subcenters: ``(..., A, 2, 2)`` in pixels of the ``image_size`` input.
        eps: scalar or ``(A,)`` (broadcast against the AU axis); a torch tensor keeps the graph,
            so the result is differentiable in eps (the learnable parameter of Eq. 3).
        image_size: input side (112 in ESCDA).
        map_size: map side; default ``image_size // 8`` (the 1/8 feature map of the LSC backbone).

    Returns ``(..., A, map_size, map_size)`` with values in (0, 1]. Raises ValueError if any
    eps < 0 (the model must keep eps non-negative, e.g. by clamping or a softplus).
    """
    if map_size is None:
        map_size = image_size // 8
    g = gaussian_au_maps(subcenters, map_size, image_size, sigma)
    if isinstance(g, torch.Tensor) or isinstance(eps, torch.Tensor):
        if not isinstance(g, torch.Tensor):
            g = torch.as_tensor(g)
        e = torch.as_tensor(eps, device=g.device)
        e = e.to(torch.promote_types(e.dtype, g.dtype) if e.is_floating_point() else g.dtype)
        if bool((e.detach() < 0).any()):
            raise ValueError(f"LSC eps must be >= 0 (Eq. 3), got min {float(e.detach().min())}")
        e = e[..., None, None] if e.ndim > 0 else e
        return (g.to(e.dtype) + e) / (1 + e)
    e = np.asarray(eps, dtype=g.dtype)
    if (e < 0).any():
        raise ValueError(f"LSC eps must be >= 0 (Eq. 3), got min {float(e.min())}")
    e = e[..., None, None] if e.ndim > 0 else e
    return (g + e) / (1 + e)


# ---------------------------------------------------------------------------------------------
# AU-Net: five-point alignment of neighbour frames (AUNet section IV-C) and the face crop rule
# ---------------------------------------------------------------------------------------------


def five_points(landmarks49) -> np.ndarray:
    """The five points (left-eye mean, right-eye mean, nose p13, mouth corners p31, p37) of
    49-point landmarks ``(..., 49, 2)`` -> ``(..., 5, 2)`` float64 (protocol section 2, step 2)."""
    lm = _as_numpy_landmarks(landmarks49)
    f = FIVE_POINTS_49
    return np.stack([lm[..., list(f["left_eye"]), :].mean(-2), lm[..., list(f["right_eye"]), :].mean(-2),
                     lm[..., f["nose"], :], lm[..., f["mouth_left"], :], lm[..., f["mouth_right"], :]], axis=-2)


def similarity_transform(src, dst) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping the
    points ``src`` ``(P, 2)`` onto ``dst`` ``(P, 2)`` (Umeyama 1991) -> 2x3 float64 matrix."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"need two (P, 2) point sets with P >= 2, got {s.shape} and {d.shape}")
    ms, md = s.mean(0), d.mean(0)
    sc, dc = s - ms, d - md
    var = (sc ** 2).sum() / len(s)
    if var <= 0:
        raise ValueError("source points are all identical; no similarity transform")
    cov = dc.T @ sc / len(s)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0
    R = U @ D @ Vt
    scale = float((S * np.diag(D)).sum() / var)
    M = np.zeros((2, 3))
    M[:, :2] = scale * R
    M[:, 2] = md - scale * R @ ms
    return M


def align_clip_to_frame(frames, landmarks49, reference: int, border: int = 128):
    """Warp every frame of a clip onto frame ``reference`` by the similarity between their five
    points (AUNet section IV-C: I_{t-T} and I_{t+T} aligned to I_t by five landmarks).

    ``frames`` ``(T, H, W, C)`` (uint8 or float), ``landmarks49`` ``(T, 49, 2)`` -> aligned frames
    (same shape and dtype; the reference frame is returned unchanged), landmarks ``(T, 49, 2)``
    float64 moved with their frames, and the ``(T, 2, 3)`` matrices (identity for the reference).
    """
    fr = np.asarray(frames)
    lm = _as_numpy_landmarks(landmarks49)
    if fr.ndim != 4 or lm.ndim != 3 or lm.shape[0] != fr.shape[0]:
        raise ValueError(f"need (T, H, W, C) frames and (T, 49, 2) landmarks, got {fr.shape} and {lm.shape}")
    T, H, W = fr.shape[:3]
    if not -T <= reference < T:
        raise ValueError(f"reference frame {reference} is outside the clip of {T} frames")
    reference %= T
    pts5 = five_points(lm)
    out, out_lm, mats = fr.copy(), lm.copy(), np.tile(np.eye(2, 3), (T, 1, 1))
    for t in range(T):
        if t == reference:
            continue
        M = similarity_transform(pts5[t], pts5[reference])
        img = np.ascontiguousarray(fr[t])
        warped = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(border,) * 4)
        out[t] = warped.reshape(out[t].shape)
        out_lm[t] = transform_points(lm[t], M)
        mats[t] = M
    return out, out_lm, mats


#: AU-Net face-crop rules from a detector box: "paper" = the box's square (side max(w, h)) around
#: its centre (section V-C: "cropped ... with the rectangles provided by RetinaFace"); "code" = the
#: published code's side 200 * (w + h) / 260 around the box centre (protocol section 9).
AUNET_CROP_RULES = ("paper", "code")


def aunet_crop_box(box, rule: str = "paper") -> np.ndarray:
    """Square crop ``(x0, y0, x1, y1)`` for AU-Net from a detector box ``(x0, y0, x1, y1)``
    (then resized to 256 x 256); see :data:`AUNET_CROP_RULES`."""
    if rule not in AUNET_CROP_RULES:
        raise ValueError(f"crop rule {rule!r}; choose one of {AUNET_CROP_RULES}")
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        raise ValueError(f"empty detector box {box}")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(w, h) if rule == "paper" else 200.0 * (w + h) / 260.0
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
