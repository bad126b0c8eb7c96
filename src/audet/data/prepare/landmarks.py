"""Frame landmarkers for releases that ship no landmark annotations (Aff-Wild2, optionally BP4D+).

A frame landmarker is anything with a ``detect(image) -> landmarks | None`` method:

* ``image``: a ``(H, W, 3)`` uint8 BGR frame (as read by OpenCV);
* returns ``(P, 2)`` float ``(x, y)`` pixel coordinates, 0-based, with ``P`` in 49, 66 or 68
  (converted to 49 with :func:`audet.facs.to_49`), or ``None`` when no face is found.

They are looked up by name in a small registry (``audet prepare --landmarker NAME``). Preparation
builds the landmarker inside each worker process (dlib models are not picklable), so what is
registered is a *factory*: ``factory(**kwargs) -> landmarker``. Registered here:

* ``dlib``: dlib's HOG face detector + 68-point shape predictor (:mod:`audet.faces`; the
  ``faces`` extra), the largest-scoring face of the frame;
* ``mtcnn``: MTCNN face boxes + the dlib 68-point shape predictor;
* ``fake``: a deterministic stand-in for tests and demos: a fixed 68-point face template scaled
  to the frame, ``None`` for (nearly) uniform frames. It is not a face detector.

Another module may add its own with :func:`register_landmarker` (it registers when imported).
The names before 0.2 (``LandmarkDetector``, ``register_detector``, ``create_detector``,
``list_detectors``, ``FakeDetector``, ``NoDetectorError``) remain as aliases for one release.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FrameLandmarker",
    "register_landmarker",
    "create_landmarker",
    "list_landmarkers",
    "FaceLandmarker",
    "FakeLandmarker",
    "face_template_68",
    "NoLandmarkerError",
]


@runtime_checkable
class FrameLandmarker(Protocol):
    """What preparation needs from a landmarker: the landmarks of the face in a frame."""

    def detect(self, image: np.ndarray) -> np.ndarray | None:  # pragma: no cover - protocol
        """``(H, W, 3)`` uint8 BGR -> ``(P, 2)`` 0-based (x, y), P in {49, 66, 68}, or None."""
        ...


class NoLandmarkerError(ValueError):
    """No frame landmarker configured, or an unknown landmarker name."""


_REGISTRY: dict[str, Callable[..., FrameLandmarker]] = {}


def register_landmarker(name: str, factory: Callable[..., FrameLandmarker] | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator). Re-registering replaces."""

    def _add(f):
        _REGISTRY[name.lower()] = f
        return f

    return _add(factory) if factory is not None else _add


def list_landmarkers() -> list[str]:
    """Registered landmarker names."""
    return sorted(_REGISTRY)


def create_landmarker(name: str | None, **kwargs) -> FrameLandmarker:
    """Build the landmarker registered as ``name``; a clear error when none is configured."""
    if not name:
        raise NoLandmarkerError(
            "this release has no landmark annotations: pass --landmarker NAME "
            f"(registered: {', '.join(list_landmarkers()) or 'none'})"
        )
    key = name.lower()
    if key not in _REGISTRY:
        raise NoLandmarkerError(f"unknown landmarker {name!r} (registered: {', '.join(list_landmarkers())})")
    det = _REGISTRY[key](**kwargs)
    if not callable(getattr(det, "detect", None)):
        raise NoLandmarkerError(f"landmarker {name!r} has no detect(image) method")
    return det


class FaceLandmarker:
    """A face detector of :mod:`audet.faces` + its 68-point landmarker: the landmarks of the
    highest-scoring face of a BGR frame, or None when no face is found.

    Args:
        face_detector: ``"dlib-hog"`` or ``"mtcnn"`` (:data:`audet.faces.FACE_DETECTORS`).
        landmarker: ``"dlib"`` or the path of a dlib 68-point shape predictor.
        **kwargs: arguments of the face detector (e.g. ``upsample=1`` for dlib-hog).
    """

    def __init__(self, face_detector: str = "dlib-hog", landmarker: str = "dlib", **kwargs):
        from audet.faces import make_face_detector, make_landmarker

        self.face_detector = make_face_detector(face_detector, **kwargs)
        self.landmarker = make_landmarker(landmarker)

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        rgb = np.ascontiguousarray(np.asarray(image)[..., ::-1])
        faces = self.face_detector.detect(rgb)
        if not faces:
            return None
        best = max(faces, key=lambda f: f.score)
        return self.landmarker.landmarks(rgb, [best.box])[0]


# ---------------------------------------------------------------------------------------------
# A 68-point face template (iBUG point order), drawn procedurally. Unit box: x, y in [0, 1].
# Used by the fake landmarker and by the tiny fake releases in audet.data.prepare.fake.
# ---------------------------------------------------------------------------------------------


def face_template_68() -> np.ndarray:
    """A frontal 68-point face in iBUG order inside the unit square, ``(68, 2)`` float64."""
    pts = []
    # jaw 0-16: lower half-ellipse from the left temple to the right temple
    for t in np.linspace(np.pi, 0.0, 17):
        pts.append((0.5 + 0.42 * np.cos(t), 0.45 + 0.50 * np.sin(t)))
    # eyebrows 17-21 (left in the image), 22-26
    for x0 in (0.17, 0.57):
        for i in range(5):
            x = x0 + 0.065 * i
            pts.append((x, 0.33 - 0.04 * np.sin(np.pi * i / 4)))
    # nose bridge 27-30, nose base 31-35
    for i in range(4):
        pts.append((0.5, 0.42 + 0.05 * i))
    for i in range(5):
        pts.append((0.42 + 0.04 * i, 0.64 + 0.015 * (1 - abs(i - 2) / 2)))
    # eyes 36-41 (image left: outer corner first), 42-47 (image right: inner corner first);
    # each: left corner, two top points, right corner, two bottom points
    for cx in (0.32, 0.68):
        w, h = 0.09, 0.035
        xs = [-w, -w / 3, w / 3, w, w / 3, -w / 3]
        ys = [0.0, -h, -h, 0.0, h, h]
        for x, y in zip(xs, ys):
            pts.append((cx + x, 0.43 + y))
    # outer lips 48-59, inner lips 60-67
    for i in range(12):
        t = np.pi - 2 * np.pi * i / 12
        pts.append((0.5 + 0.16 * np.cos(t), 0.78 - 0.06 * np.sin(t)))
    for i in range(8):
        t = np.pi - 2 * np.pi * i / 8
        pts.append((0.5 + 0.11 * np.cos(t), 0.78 - 0.025 * np.sin(t)))
    out = np.asarray(pts, dtype=np.float64)
    assert out.shape == (68, 2)
    return out


class FakeLandmarker:
    """Deterministic stand-in: the 68-point template fitted to the central square of the frame.

    Returns None for frames whose grey-level standard deviation is below ``min_std`` (a blank
    frame stands for "no face"). For tests and demos only.
    """

    def __init__(self, margin: float = 0.1, min_std: float = 2.0):
        self.margin = float(margin)
        self.min_std = float(min_std)
        self._template = face_template_68()

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        img = np.asarray(image)
        if img.ndim < 2 or img.size == 0 or float(img.std()) < self.min_std:
            return None
        return self.fit(*img.shape[:2])

    def fit(self, height: int, width: int) -> np.ndarray:
        """The 68 points this detector returns for any (non-blank) ``height x width`` frame."""
        side = min(height, width) * (1 - 2 * self.margin)
        x0, y0 = (width - side) / 2.0, (height - side) / 2.0
        return self._template * side + np.array([x0, y0])


register_landmarker("fake", FakeLandmarker)
register_landmarker("dlib", FaceLandmarker)


@register_landmarker("mtcnn")
def _mtcnn_landmarker(**kwargs) -> FaceLandmarker:
    return FaceLandmarker(face_detector="mtcnn", **kwargs)


# the names before 0.2 (one release)
LandmarkDetector = FrameLandmarker
NoDetectorError = NoLandmarkerError
FakeDetector = FakeLandmarker
register_detector = register_landmarker
create_detector = create_landmarker
list_detectors = list_landmarkers
