"""Landmark detectors for releases that ship no landmark annotations (Aff-Wild2, optionally BP4D+).

A detector is anything with a ``detect(image) -> landmarks | None`` method:

* ``image``: a ``(H, W, 3)`` uint8 BGR frame (as read by OpenCV);
* returns ``(P, 2)`` float ``(x, y)`` pixel coordinates, 0-based, with ``P`` in 49, 66 or 68
  (converted to 49 with :func:`audet.facs.to_49`), or ``None`` when no face is found.

Detectors are looked up by name in a small registry, so ``audet prepare --detector NAME`` can use
one that another module registers (the inference issue plugs dlib / MTCNN in with
:func:`register_detector`). Preparation builds the detector inside each worker process (detector
objects such as dlib models are not picklable), so what is registered is a *factory*:
``factory(**kwargs) -> detector``.

``"fake"`` is a deterministic stand-in for tests and demos: it returns a fixed 68-point face
template scaled to the frame, and ``None`` for (nearly) uniform frames. It is not a face detector.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "LandmarkDetector",
    "register_detector",
    "create_detector",
    "list_detectors",
    "FakeDetector",
    "face_template_68",
    "NoDetectorError",
]

#: Modules imported (if they exist) before a name is declared unknown: they register real
#: detectors when imported. Missing modules are ignored.
PLUGIN_MODULES = ("audet.inference.detectors", "audet.inference")


@runtime_checkable
class LandmarkDetector(Protocol):
    """What preparation needs from a landmark detector."""

    def detect(self, image: np.ndarray) -> np.ndarray | None:  # pragma: no cover - protocol
        """``(H, W, 3)`` uint8 BGR -> ``(P, 2)`` 0-based (x, y), P in {49, 66, 68}, or None."""
        ...


class NoDetectorError(ValueError):
    """No landmark detector configured, or an unknown detector name."""


_REGISTRY: dict[str, Callable[..., LandmarkDetector]] = {}


def register_detector(name: str, factory: Callable[..., LandmarkDetector] | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator). Re-registering replaces."""

    def _add(f):
        _REGISTRY[name.lower()] = f
        return f

    return _add(factory) if factory is not None else _add


def _load_plugins() -> None:
    for mod in PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not mod.startswith(exc.name):
                raise


def list_detectors() -> list[str]:
    """Registered detector names (after importing the plugin modules that exist)."""
    _load_plugins()
    return sorted(_REGISTRY)


def create_detector(name: str | None, **kwargs) -> LandmarkDetector:
    """Build the detector registered as ``name``; a clear error when none is configured."""
    if not name:
        raise NoDetectorError(
            "this release has no landmark annotations: pass --detector NAME "
            f"(registered: {', '.join(list_detectors()) or 'none'})"
        )
    key = name.lower()
    if key not in _REGISTRY:
        _load_plugins()
    if key not in _REGISTRY:
        raise NoDetectorError(
            f"unknown landmark detector {name!r} (registered: {', '.join(list_detectors())})"
        )
    det = _REGISTRY[key](**kwargs)
    if not callable(getattr(det, "detect", None)):
        raise NoDetectorError(f"detector {name!r} has no detect(image) method")
    return det


# ---------------------------------------------------------------------------------------------
# A 68-point face template (iBUG point order), drawn procedurally. Unit box: x, y in [0, 1].
# Used by the fake detector and by the tiny fake releases in audet.data.prepare.fake.
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


class FakeDetector:
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


register_detector("fake", FakeDetector)
