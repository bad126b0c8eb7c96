"""Face detection and 68-point landmarks behind one small interface, with weights that ship inside
registry packages (no download at run time).

A base-layer module (numpy; dlib and facenet-pytorch imported when used), so that both inference
(:class:`audet.Detector`, the AU pipeline) and dataset preparation (the ``dlib``/``mtcnn`` frame
landmarkers of :mod:`audet.data.prepare.landmarks`) use it.

The interface (any object with these methods can be plugged into :class:`audet.Detector`):

- a **detector** has ``detect(image) -> list[DetectedFace]``, ``image`` an RGB ``uint8`` ``(H, W, 3)``
  array; each :class:`DetectedFace` holds ``box = (x1, y1, x2, y2)`` in pixels and a ``score``;
- a **landmarker** has ``landmarks(image, boxes) -> list[np.ndarray | None]``, one ``(68, 2)``
  float array of iBUG-layout points ``(x, y)`` (0-based pixels) per box, ``None`` where it fails.

Built in (see ``docs/inference.md`` for the weights' licences):

- :class:`MTCNNFaceDetector` -- MTCNN (P-, R-, O-Net) from ``facenet-pytorch`` 2.5.3, whose weights
  are inside the wheel;
- :class:`DlibHOGFaceDetector` -- dlib's HOG + linear SVM frontal detector (in ``dlib-bin``), faster,
  misses more faces;
- :class:`DlibLandmarker` -- dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``,
  trained on iBUG 300-W) from the ``face-recognition-models`` package.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = [
    "DetectedFace",
    "FaceDetector",
    "Landmarker",
    "FaceModelsMissing",
    "face_models_dir",
    "MTCNNFaceDetector",
    "DlibHOGFaceDetector",
    "DlibCNNFaceDetector",
    "HaarFaceDetector",
    "DlibLandmarker",
    "FACE_DETECTORS",
    "make_face_detector",
    "make_landmarker",
]

log = logging.getLogger(__name__)


class FaceModelsMissing(ImportError):
    """A face detector or landmarker package is not installed; the message says what to install."""


@dataclass
class DetectedFace:
    """One detected face: ``box`` ``(x1, y1, x2, y2)`` pixels and a detector ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces of an RGB uint8 ``(H, W, 3)`` image (any order; empty when none)."""


@runtime_checkable
class Landmarker(Protocol):
    def landmarks(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[np.ndarray | None]:
        """``(68, 2)`` iBUG points per box (``None`` where the landmarker fails)."""


def face_models_dir() -> Path:
    """The ``models`` folder of the ``face-recognition-models`` package.

    Located with ``importlib.util.find_spec`` instead of importing the package: its ``__init__``
    imports ``pkg_resources``, which recent setuptools no longer provide.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissing(
            "the dlib 68-point landmark model is not installed: pip install face-recognition-models dlib-bin "
            "(or pip install 'audet[faces]'), or pass your own landmarker"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise FaceModelsMissing("dlib is not installed: pip install dlib-bin (or pip install 'audet[faces]')") from None
    return dlib


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"face detection needs an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


class MTCNNFaceDetector:
    """MTCNN from ``facenet-pytorch`` (weights shipped in the wheel), all faces of an image.

    Args:
        min_face_size: smallest face side in pixels the image pyramid looks for.
        thresholds: P-, R-, O-Net score thresholds (facenet-pytorch's defaults).
        min_score: faces with a final score below this are dropped. 0.7 (the O-Net threshold, i.e.
            no extra filter) keeps turned faces: three-quarter views score 0.77-0.96 where frontal
            ones score > 0.99, and 0.9 (the default before) lost a third of the faces at 60 degrees
            yaw (benchmarks/face_detectors.py, docs/inference.md).
        device: torch device for the three networks.
    """

    def __init__(self, min_face_size: int = 20, thresholds=(0.6, 0.7, 0.7), min_score: float = 0.7,
                 device: str = "cpu"):
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise FaceModelsMissing(
                "MTCNN needs facenet-pytorch: pip install facenet-pytorch==2.5.3 --no-deps "
                "(2.6 pins an old torch; or pip install 'audet[faces]'), or use --face-detector dlib-hog"
            ) from None
        self.min_score = float(min_score)
        self._net = MTCNN(keep_all=True, min_face_size=int(min_face_size), thresholds=list(thresholds),
                          device=device, post_process=False)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        boxes, probs = self._net.detect(_rgb_uint8(image))
        if boxes is None:  # no face: probs is the object array [None]
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        probs = np.asarray([np.nan if p is None else p for p in np.ravel(probs)], dtype=np.float64)
        out = [DetectedFace(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs)
               if np.isfinite(b).all() and p >= self.min_score]
        return out


class DlibHOGFaceDetector:
    """dlib's frontal HOG detector (in ``dlib-bin``); ``score`` is a logistic squash of the SVM margin.

    ``upsample`` doubles the image that many times first (finds faces under ~80 px).
    """

    def __init__(self, upsample: int = 0):
        self._det = _import_dlib().get_frontal_face_detector()
        self.upsample = int(upsample)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        rects, scores, _ = self._det.run(_rgb_uint8(image), self.upsample, 0.0)
        return [DetectedFace((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)),
                             float(1.0 / (1.0 + np.exp(-s)))) for r, s in zip(rects, scores)]


class DlibLandmarker:
    """dlib's 68-point shape predictor (iBUG 300-W layout), from ``face-recognition-models``.

    ``model_path`` overrides the .dat file (any dlib 68-point shape predictor).
    """

    def __init__(self, model_path: str | os.PathLike | None = None):
        dlib = _import_dlib()
        path = Path(model_path) if model_path else face_models_dir() / "shape_predictor_68_face_landmarks.dat"
        if not path.is_file():
            raise FaceModelsMissing(f"dlib landmark model {path} not found (pip install face-recognition-models)")
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(path))

    def landmarks(self, image: np.ndarray, boxes) -> list[np.ndarray | None]:
        img = _rgb_uint8(image)
        out: list[np.ndarray | None] = []
        for b in boxes:
            x1, y1, x2, y2 = (float(v) for v in b)
            if not (np.isfinite([x1, y1, x2, y2]).all() and x2 - x1 >= 4 and y2 - y1 >= 4):
                out.append(None)
                continue
            rect = self._dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
            shape = self._sp(img, rect)
            pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
            out.append(pts if pts.shape == (68, 2) and np.isfinite(pts).all() else None)
        return out


class DlibCNNFaceDetector:
    """dlib's CNN face detector (max-margin object detection, ``mmod_human_face_detector.dat`` from
    ``face-recognition-models``); ``score`` is a logistic squash of its confidence. Finds turned
    faces that the HOG detector misses; slower on CPU (docs/inference.md). ``upsample`` as for HOG.
    """

    def __init__(self, upsample: int = 0, model_path: str | os.PathLike | None = None):
        dlib = _import_dlib()
        path = Path(model_path) if model_path else face_models_dir() / "mmod_human_face_detector.dat"
        if not path.is_file():
            raise FaceModelsMissing(f"dlib CNN face model {path} not found (pip install face-recognition-models)")
        self._det = dlib.cnn_face_detection_model_v1(str(path))
        self.upsample = int(upsample)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        out = []
        for d in self._det(_rgb_uint8(image), self.upsample):
            r = d.rect
            out.append(DetectedFace((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)),
                                    float(1.0 / (1.0 + np.exp(-d.confidence)))))
        return out


class HaarFaceDetector:
    """OpenCV's Haar cascades (shipped in ``opencv-python``): the frontal cascade plus the profile
    cascade on the image and its mirror (left and right profiles), merged by non-maximum
    suppression. Fast, many false positives on clutter; ``score`` is 1 (the cascades give none)."""

    def __init__(self, min_face_size: int = 20, profile: bool = True):
        import cv2

        d = Path(cv2.data.haarcascades)
        self._cv2 = cv2
        self._cascades = [cv2.CascadeClassifier(str(d / "haarcascade_frontalface_alt2.xml"))]
        if profile:
            self._cascades.append(cv2.CascadeClassifier(str(d / "haarcascade_profileface.xml")))
        if any(c.empty() for c in self._cascades):
            raise FaceModelsMissing(f"OpenCV's Haar cascades are missing from {d}")
        self.min_size = int(min_face_size)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        cv2 = self._cv2
        grey = cv2.equalizeHist(cv2.cvtColor(_rgb_uint8(image), cv2.COLOR_RGB2GRAY))
        W = grey.shape[1]
        boxes = []
        for k, casc in enumerate(self._cascades):
            views = [(grey, False)] + ([(grey[:, ::-1].copy(), True)] if k > 0 else [])
            for img, mirrored in views:
                for x, y, w, h in casc.detectMultiScale(img, 1.1, 4, minSize=(self.min_size, self.min_size)):
                    x1 = W - (x + w) if mirrored else x
                    boxes.append((float(x1), float(y), float(x1 + w), float(y + h)))
        keep: list[tuple] = []
        for b in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):  # larger first
            if all(_iou(b, q) < 0.3 for q in keep):
                keep.append(b)
        return [DetectedFace(b, 1.0) for b in keep]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


#: names accepted by ``--face-detector`` / ``Detector(face_detector=...)``
FACE_DETECTORS = {"mtcnn": MTCNNFaceDetector, "dlib-hog": DlibHOGFaceDetector, "dlib-cnn": DlibCNNFaceDetector,
                  "haar": HaarFaceDetector}


def make_face_detector(spec="mtcnn", **kwargs) -> FaceDetector:
    """A face detector from a name (``"mtcnn"``, ``"dlib-hog"``, ``"dlib-cnn"``, ``"haar"``) or an object with ``detect``."""
    if isinstance(spec, str):
        if spec not in FACE_DETECTORS:
            raise ValueError(f"unknown face detector {spec!r}; choose one of {sorted(FACE_DETECTORS)} or pass an "
                             "object with detect()")
        return FACE_DETECTORS[spec](**kwargs)
    if not callable(getattr(spec, "detect", None)):
        raise ValueError(f"a face detector needs a detect(image) method, got {type(spec).__name__}")
    return spec


def make_landmarker(spec="dlib") -> Landmarker:
    """A landmarker from a name (``"dlib"``), a path to a dlib .dat file, or an object with ``landmarks``."""
    if spec is None or spec == "dlib":
        return DlibLandmarker()
    if isinstance(spec, (str, os.PathLike)):
        return DlibLandmarker(spec)
    if not callable(getattr(spec, "landmarks", None)):
        raise ValueError(f"a landmarker needs a landmarks(image, boxes) method, got {type(spec).__name__}")
    return spec


# the names before 0.2 (one release): "detector" alone now means the AU pipeline, audet.Detector
MTCNNDetector = MTCNNFaceDetector
DlibHOGDetector = DlibHOGFaceDetector
DETECTORS = FACE_DETECTORS
make_detector = make_face_detector
