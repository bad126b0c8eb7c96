"""Stable face ids across video frames: greedy IoU matching of boxes to recent tracks.

Each frame's boxes are matched to the live tracks (a track stays live while it has missed at most
``max_age`` consecutive frames) in order of decreasing IoU; a pair matches when its IoU is at
least ``iou_threshold``. Unmatched boxes start new tracks with the next id (0, 1, 2, ...); ids are never
reused, so a face that leaves and comes back after ``max_age`` frames gets a new id. The whole
state is a small JSON-able dict (:meth:`IoUTracker.state` / :meth:`IoUTracker.from_state`), so a
resumed run continues with the same ids.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["iou_matrix", "IoUTracker"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)`` (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class IoUTracker:
    def __init__(self, iou_threshold: float = 0.3, max_age: int = 10):
        if not 0.0 < iou_threshold <= 1.0 or max_age < 0:
            raise ValueError(f"need 0 < iou_threshold <= 1 and max_age >= 0, got {iou_threshold}, {max_age}")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.next_id = 0
        self.tracks: dict[int, dict] = {}  # id -> {"box": [4], "last": frame}

    def update(self, frame: int, boxes: Sequence[Sequence[float]]) -> list[int]:
        """Ids for this frame's ``boxes`` (same order); call once per frame, frames increasing."""
        self.tracks = {i: t for i, t in self.tracks.items() if frame - t["last"] <= self.max_age + 1}
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes)
        live = sorted(self.tracks)
        if live and len(boxes):
            iou = iou_matrix(boxes, np.asarray([self.tracks[i]["box"] for i in live]))
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape))[0]
            used_b, used_t = set(), set()
            for bi, ti in order:
                if iou[bi, ti] < self.iou_threshold:
                    break
                if bi in used_b or ti in used_t:
                    continue
                ids[bi] = live[ti]
                used_b.add(bi)
                used_t.add(ti)
        for k, box in enumerate(boxes):
            if ids[k] < 0:
                ids[k] = self.next_id
                self.next_id += 1
            self.tracks[ids[k]] = {"box": [float(v) for v in box], "last": int(frame)}
        return ids

    def state(self) -> dict:
        return {"iou_threshold": self.iou_threshold, "max_age": self.max_age, "next_id": self.next_id,
                "tracks": {str(i): dict(t) for i, t in self.tracks.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "IoUTracker":
        t = cls(state["iou_threshold"], state["max_age"])
        t.next_id = int(state["next_id"])
        t.tracks = {int(i): {"box": list(v["box"]), "last": int(v["last"])} for i, v in state["tracks"].items()}
        return t
