"""Head pose (yaw, pitch, roll in degrees) from 68 2-D landmarks.

Method: :func:`cv2.solvePnP` (iterative, Levenberg-Marquardt) fits a GENERIC rigid 3-D face -- six
points of the iBUG 68 scheme: nose tip (30), chin (8), outer eye corners (36, 45), mouth corners
(48, 54), with the mean-face coordinates in common use for this purpose (model units ~ 0.1 mm) --
to the detected landmarks under a pinhole camera whose focal length is the image width (in
pixels) and whose principal point is the image centre, without lens distortion. The rotation
``R`` (model -> camera, camera axes x right, y down, z forward) is split as
``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

Signs: yaw > 0 when the face turns towards the image's left (the person's right), pitch > 0 when
the head tilts back (looks up: the chin moves up and away), roll > 0 when the head tilts clockwise
in the image (the eye on the image's right goes down). A frontal, upright face gives about (0, 0, 0).

This is an approximation: one face shape for everybody, a guessed focal length, and 2-D landmarks
that a landmarker fits less well on profile views. Expect a few degrees of error near frontal and
more at large angles; the angles are meant for filtering (e.g. drop |yaw| > 30) and plotting, not
for measurement.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["MODEL_POINTS", "LANDMARKS", "head_pose", "camera_matrix", "rotation_from_angles", "angles_from_rotation"]

#: iBUG-68 indices of the points of the generic face: nose tip, chin, outer eye corners, mouth corners
LANDMARKS = (30, 8, 36, 45, 48, 54)
#: the generic face in camera-style axes (x right, y DOWN, z AWAY from the camera), nose tip at 0
MODEL_POINTS = np.array([
    (0.0, 0.0, 0.0),          # nose tip
    (0.0, 330.0, 65.0),       # chin
    (-225.0, -170.0, 135.0),  # outer corner of the eye on the image's left
    (225.0, -170.0, 135.0),   # outer corner of the eye on the image's right
    (-150.0, 150.0, 125.0),   # mouth corner, image left
    (150.0, 150.0, 125.0),    # mouth corner, image right
], dtype=np.float64)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (degrees), the convention of :func:`head_pose`."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def angles_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of ``rot = Rz(roll) @ Ry(yaw) @ Rx(pitch)``."""
    yaw = math.asin(max(-1.0, min(1.0, -float(rot[2, 0]))))
    pitch = math.atan2(float(rot[2, 1]), float(rot[2, 2]))
    roll = math.atan2(float(rot[1, 0]), float(rot[0, 0]))
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def camera_matrix(width: int, height: int) -> np.ndarray:
    f = float(width)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], dtype=np.float64)


def head_pose(landmarks68: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face with iBUG-68 ``landmarks68`` (68, 2) in an image of
    ``width`` x ``height`` pixels; NaNs when the landmarks are missing or the fit fails."""
    import cv2

    pts = np.asarray(landmarks68, dtype=np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts[list(LANDMARKS)]).all():
        return (math.nan,) * 3
    image_points = pts[list(LANDMARKS)].reshape(-1, 1, 2)
    # start from a face in front of the camera at a plausible distance (solvePnP's iterative fit can
    # otherwise land on the mirror solution behind the camera)
    span = float(np.ptp(image_points[:, 0, 0])) or 1.0
    tvec0 = np.array([[image_points[0, 0, 0] - width / 2], [image_points[0, 0, 1] - height / 2], [0.0]])
    z = width * 450.0 / span
    tvec0 = tvec0 * z / width
    tvec0[2, 0] = z
    rvec0 = np.zeros((3, 1))
    ok, rvec, _ = cv2.solvePnP(MODEL_POINTS, image_points, camera_matrix(width, height), np.zeros(4),
                               rvec0, tvec0, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)[:3]
    if not ok:
        return (math.nan,) * 3
    rot, _ = cv2.Rodrigues(rvec)
    return angles_from_rotation(rot)
