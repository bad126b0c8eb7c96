"""Face detection on key frames, faces followed by their own landmarks in between.

Face detection (MTCNN: ~28 ms per 640x360 frame) is most of a light model's time per frame; a
face moves little from one frame to the next. :class:`FaceFollower` decides per frame whether the
detector runs, and otherwise gives each followed face a box derived from its landmarks in the
previous frame; the landmarker then runs on that box every frame, so every frame still gets its
own 68 points.

The detector runs

- on a schedule: when ``detect_every`` frames have passed since it last ran (1: every frame);
- when there is nothing to follow (no face at the last detection);
- when a new face may have entered: the frame differs from the frame of the last detection
  away from the followed people (a 1/8-size grey thumbnail differs by more than
  ``motion_threshold`` grey levels in more than ``motion_fraction`` of its pixels outside each
  face's person region -- the face box widened by a face width on each side, 0.75 face heights
  above and 3 below, for hair, neck and body -- now and at the last detection);
- when a followed face is lost, checked after its landmarks are fitted: its appearance (a 16x16
  grey crop of its box, normalised cross-correlation with the crop at its last detection) falls
  below ``min_similarity``, its box jumped (IoU with its box of the previous frame below
  ``min_overlap``) or changed size by more than ``max_scale`` since the detection, it is leaving
  the frame, or the landmarker gave no points. The detector then runs on that same frame, so a
  lost face costs no missing row.

The relation between a face's detector box and the extent of its landmarks is taken at each
detection, so followed boxes keep the detector's box convention (what the landmarker expects).
The whole state is JSON-able (:meth:`FaceFollower.state`), so a resumed run continues identically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["FaceFollower", "Followed", "jsonable"]

THUMB = 8  # motion thumbnail: 1/THUMB of the frame's size
PATCH = 16  # appearance crop side


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def _patch(grey: np.ndarray, box) -> np.ndarray | None:
    h, w = grey.shape
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    return cv2.resize(grey[y1:y2, x1:x2], (PATCH, PATCH), interpolation=cv2.INTER_AREA)


def _ncc(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Normalised cross-correlation of two crops; 0 where either is flat or missing."""
    if a is None or b is None:
        return 0.0
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    a -= a.mean()
    b -= b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 1e-6 else 0.0


def _iou(a, b) -> float:
    lt = np.maximum(a[:2], b[:2])
    rb = np.minimum(a[2:], b[2:])
    inter = float(np.clip(rb - lt, 0, None).prod())
    area = lambda x: max(0.0, x[2] - x[0]) * max(0.0, x[3] - x[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def _extent(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float64)


def _relation(box, lm: np.ndarray) -> list[float]:
    """The detector box in the frame of the landmarks' extent: (dx, dy) of its centre and (sw, sh)
    of its size, relative to the extent's size."""
    e = _extent(lm)
    ew, eh = max(e[2] - e[0], 1e-3), max(e[3] - e[1], 1e-3)
    b = np.asarray(box, np.float64)
    return [((b[0] + b[2]) - (e[0] + e[2])) / 2 / ew, ((b[1] + b[3]) - (e[1] + e[3])) / 2 / eh,
            (b[2] - b[0]) / ew, (b[3] - b[1]) / eh]


def _box_from(lm: np.ndarray, rel) -> list[float]:
    e = _extent(lm)
    ew, eh = max(e[2] - e[0], 1e-3), max(e[3] - e[1], 1e-3)
    cx, cy = (e[0] + e[2]) / 2 + rel[0] * ew, (e[1] + e[3]) / 2 + rel[1] * eh
    w, h = rel[2] * ew, rel[3] * eh
    return [float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)]


@dataclass
class Followed:
    """One followed face: its box for the next frame, the detector box and appearance at its last
    detection, the box/landmark relation and the detector's score."""

    box: list[float]
    det_box: list[float]
    rel: list[float]
    score: float
    patch: np.ndarray | None = field(default=None, repr=False)


class FaceFollower:
    def __init__(self, detect_every: int = 10, min_similarity: float = 0.5, min_overlap: float = 0.3,
                 max_scale: float = 1.5, motion_threshold: float = 20.0, motion_fraction: float = 0.01):
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every = int(detect_every)
        self.min_similarity, self.min_overlap = float(min_similarity), float(min_overlap)
        self.max_scale = float(max_scale)
        self.motion_threshold, self.motion_fraction = float(motion_threshold), float(motion_fraction)
        self.last_detection = -10**9  # frame index of the last detection
        self.faces: list[Followed] = []
        self.thumb: np.ndarray | None = None  # grey thumbnail of the last detection's frame
        self.detections = 0
        self.reasons: dict[str, int] = {}

    # -- when to detect ---------------------------------------------------------------------------
    def due(self, index: int, image: np.ndarray) -> str | None:
        """Why the detector must run on this frame (``None``: follow the faces instead)."""
        if self.detect_every == 1:
            return "every frame"
        if index - self.last_detection >= self.detect_every or index < self.last_detection:
            return "schedule"
        if not self.faces:
            return "no face followed"
        if self._new_motion(image):
            return "motion outside the faces"
        return None

    def _thumbnail(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return cv2.resize(_grey(image), (max(1, w // THUMB), max(1, h // THUMB)), interpolation=cv2.INTER_AREA)

    def _new_motion(self, image: np.ndarray) -> bool:
        if self.thumb is None:
            return True
        t = self._thumbnail(image)
        if t.shape != self.thumb.shape:
            return True
        moved = np.abs(t.astype(np.int16) - self.thumb.astype(np.int16)) > self.motion_threshold
        keep = np.ones_like(moved)
        h, w = moved.shape
        for f in self.faces:  # each person now and at the detection: the face, its hair, neck and body
            for b in (f.box, f.det_box):
                fw, fh = b[2] - b[0], b[3] - b[1]
                x1, y1 = max(0, int((b[0] - fw) / THUMB)), max(0, int((b[1] - 0.75 * fh) / THUMB))
                x2, y2 = min(w, int(np.ceil((b[2] + fw) / THUMB))), min(h, int(np.ceil((b[3] + 3 * fh) / THUMB)))
                keep[y1:y2, x1:x2] = False
        n = int(keep.sum())
        return n > 0 and float((moved & keep).sum()) / n > self.motion_fraction

    def followed_boxes(self) -> list[tuple[list[float], float]]:
        """``(box, score)`` of each followed face for the current frame."""
        return [(list(f.box), f.score) for f in self.faces]

    # -- after landmarks --------------------------------------------------------------------------
    def lost(self, image: np.ndarray, landmarks: list) -> str | None:
        """Why a followed face is lost on this (followed) frame, given its landmarks (``None``: none is)."""
        h, w = image.shape[:2]
        grey = None
        for f, lm in zip(self.faces, landmarks):
            if lm is None or not np.isfinite(lm).all():
                return "no landmarks"
            box = np.asarray(_box_from(lm, f.rel))
            if box[0] < -0.25 * (box[2] - box[0]) or box[2] > w + 0.25 * (box[2] - box[0]) or \
                    box[1] < -0.25 * (box[3] - box[1]) or box[3] > h + 0.25 * (box[3] - box[1]):
                return "leaving the frame"
            if _iou(box, np.asarray(f.box)) < self.min_overlap:
                return "box jumped"  # landmarks far from where the face was a frame ago
            size, det = box[2] - box[0], f.det_box[2] - f.det_box[0]
            if not 1 / self.max_scale <= size / max(det, 1e-3) <= self.max_scale:
                return "box size changed"
            grey = _grey(image) if grey is None else grey
            if _ncc(_patch(grey, box), f.patch) < self.min_similarity:
                return "appearance changed"
        return None

    def detected(self, index: int, image: np.ndarray, boxes, scores, landmarks, reason: str = "") -> None:
        """Start following the faces the detector found on frame ``index`` (with their landmarks)."""
        grey = _grey(image)
        self.faces = []
        for b, s, lm in zip(boxes, scores, landmarks):
            if lm is None or not np.isfinite(lm).all():
                continue  # not followed; the next detection looks again
            rel = _relation(b, lm)
            self.faces.append(Followed(_box_from(lm, rel), [float(v) for v in b], rel, float(s), _patch(grey, b)))
        self.last_detection = int(index)
        self.thumb = self._thumbnail(image)
        self.detections += 1
        if reason:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def followed(self, landmarks) -> None:
        """Move each followed face's box to its landmarks of this frame (for the next frame)."""
        for f, lm in zip(self.faces, landmarks):
            f.box = _box_from(lm, f.rel)

    # -- resume -------------------------------------------------------------------------------------
    def state(self) -> dict:
        """A snapshot (cheap: arrays are shared, never changed in place); :func:`jsonable` makes it
        JSON-able for a progress file."""
        return {"last_detection": self.last_detection, "thumb": self.thumb,
                "faces": [{"box": f.box, "det_box": f.det_box, "rel": f.rel, "score": f.score, "patch": f.patch}
                          for f in self.faces]}

    def load_state(self, state: dict | None) -> None:
        if not state:
            return
        self.last_detection = int(state["last_detection"])
        th = state.get("thumb")
        self.thumb = None if th is None else np.asarray(th, np.uint8)
        self.faces = [Followed([float(v) for v in f["box"]], [float(v) for v in f["det_box"]],
                               [float(v) for v in f["rel"]], float(f["score"]),
                               None if f["patch"] is None else np.asarray(f["patch"], np.uint8))
                      for f in state["faces"]]


def jsonable(obj):
    """``obj`` with numpy arrays turned into (nested) lists, for a JSON progress file."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
