"""Pictures of the results: annotated images/videos (boxes, face ids, landmarks, present AUs) and
an AU-over-time plot per face. Both are drawn from a finished result table, in a second pass, so
they work the same after a resumed run and never hold a whole video in memory."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["draw_faces", "layout_labels", "annotate_images", "annotate_video", "plot_aus_over_time"]

log = logging.getLogger(__name__)

_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def _aus(columns) -> list[str]:
    return [c[:-2] for c in columns if re.fullmatch(r"AU\d+_p", c)]


def _label_text(r, aus) -> str:
    on = [a for a in aus if r.get(f"{a}_c") == 1]
    return f"id {int(r['face_id'])}" + (": " + " ".join(on) if on else "")


def _scale_for(text: str, font_scale: float, width: int, thickness: int, pad: int) -> float:
    import cv2

    fs = float(font_scale)
    while cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, thickness)[0][0] + 2 * pad > width and fs > 0.2:
        fs *= 0.8
    return fs


def layout_labels(shape, boxes, texts, font_scale: float, thickness: int = 1, pad: int = 2) -> list[tuple]:
    """Label rectangles ``(x1, y1, x2, y2, scale)`` (x2, y2 exclusive) for ``texts`` of the faces in
    ``boxes`` on an image of ``shape``: each wholly inside the image, none overlapping another.

    A label goes just above its face's box, else just below, else inside its top; failing those it
    slides down (then up) past the labels placed before it, then anywhere free. A label wider
    than the image is drawn in smaller type (``scale``).
    """
    import cv2

    H, W = int(shape[0]), int(shape[1])
    placed: list[tuple] = []

    def hits(r):
        return any(r[0] < q[2] and q[0] < r[2] and r[1] < q[3] and q[1] < r[3] for q in placed)

    out = []
    for (x1, y1, _x2, y2), text in zip(boxes, texts):
        fs = _scale_for(text, font_scale, W, thickness, pad)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, thickness)
        w, h = min(tw + 2 * pad, W), min(th + base + 2 * pad, H)
        left = int(min(max(0, round(x1)), W - w))

        def clamp(top, h=h):
            return int(min(max(0, round(top)), H - h))

        tries = [(left, clamp(t)) for t in (y1 - h, y2, y1)]
        start = clamp(y1 - h)
        tries += [(left, t) for t in [*range(start, H - h + 1), *range(start, -1, -1)]]
        tries += [(lx, t) for t in range(0, H - h + 1, max(1, h // 2)) for lx in range(0, W - w + 1, max(1, w // 4))]
        rect = next(((lx, t, lx + w, t + h) for lx, t in tries if not hits((lx, t, lx + w, t + h))),
                    (left, start, left + w, start + h))  # the image is full of labels: overlap rather than clip
        placed.append(rect)
        out.append((*rect, fs))
    return out


def draw_faces(image: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """A copy of an RGB image with each row's box, face id, landmarks and present AUs drawn; the
    labels sit on a dark band, inside the image and clear of each other (:func:`layout_labels`)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    aus = _aus(rows.columns)
    scale = max(out.shape[:2]) / 640.0
    th = max(1, int(round(2 * scale)))
    fs = 0.45 * max(scale, 0.6)
    tt = max(1, th // 2 + 1)
    rows = [r for _, r in rows.iterrows()]
    boxes, texts, cols = [], [], []
    for r in rows:
        col = _COLOURS[int(r["face_id"]) % len(_COLOURS)]
        x1, y1, x2, y2 = (int(round(r[k])) for k in ("box_x1", "box_y1", "box_x2", "box_y2"))
        cv2.rectangle(out, (x1, y1), (x2, y2), col, th)
        for i in range(68):
            x, y = r.get(f"x_{i}"), r.get(f"y_{i}")
            if x is not None and np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (int(round(x)), int(round(y))), th, col, -1)
        boxes.append((x1, y1, x2, y2))
        texts.append(_label_text(r, aus))
        cols.append(col)
    for (lx1, ly1, lx2, ly2, lfs), text, col in zip(layout_labels(out.shape, boxes, texts, fs, tt), texts, cols):
        cv2.rectangle(out, (lx1, ly1), (lx2 - 1, ly2 - 1), (20, 20, 20), -1)
        base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, lfs, tt)[1]
        cv2.putText(out, text, (lx1 + 2, ly2 - 2 - base), cv2.FONT_HERSHEY_SIMPLEX, lfs, col, tt, cv2.LINE_AA)
    return out


def annotate_images(table: pd.DataFrame, frames, out_dir) -> list[Path]:
    """Write ``<out_dir>/<image stem>.jpg`` for each ``Frame`` with its rows of ``table`` drawn."""
    import cv2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fr in frames:
        if not hasattr(fr, "image"):
            continue
        rows = table[table["frame"] == fr.index]
        path = out_dir / f"{Path(fr.file).stem or fr.index}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(draw_faces(fr.image, rows), cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def annotate_video(video, table_path, out_path, max_pixels=None) -> Path:
    """Re-read ``video`` and write it with the faces of the table at ``table_path`` drawn (mp4v).
    The table is read in chunks alongside the frames (rows are in frame order)."""
    import os

    import cv2

    from audet.inference.media import VideoSource

    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")
    src = VideoSource(video, max_pixels)
    fps = src.fps if src.fps > 0 else 25.0
    reader = pd.read_csv(table_path, chunksize=5000, usecols=lambda c: not c.startswith("file"))
    buf = pd.DataFrame()
    exhausted = False
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (src.width, src.height))
    try:
        for fr in src.frames():
            while not exhausted and (buf.empty or int(buf["frame"].iloc[-1]) <= fr.index):
                try:
                    buf = pd.concat([buf, next(reader)], ignore_index=True)
                except StopIteration:
                    exhausted = True
            rows = buf[buf["frame"] == fr.index] if not buf.empty else buf
            if not buf.empty:
                buf = buf[buf["frame"] > fr.index]
            writer.write(cv2.cvtColor(draw_faces(fr.image, rows), cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, out_path)
    finally:
        writer.release()
        src.close()
        if tmp.exists():
            tmp.unlink()
    return out_path


def plot_aus_over_time(table: pd.DataFrame, out_dir, name: str, min_rows: int = 2) -> list[Path]:
    """One PNG per face id: every AU's probability over time (``timestamp``, else ``frame``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    aus = _aus(table.columns)
    written = []
    for fid, g in table.groupby("face_id"):
        if len(g) < min_rows:
            continue
        timed = bool(g["timestamp"].notna().any())  # photos and cameras without times: frame numbers
        t = g["timestamp"] if timed else g["frame"]
        fig, axes = plt.subplots(len(aus), 1, figsize=(10, 0.9 * len(aus) + 1), sharex=True, squeeze=False)
        for ax, a in zip(axes[:, 0], aus):
            ax.plot(t, g[f"{a}_p"], lw=1)
            ax.axhline(0.5, color="grey", lw=0.5, ls="--")
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel(a, rotation=0, ha="right", va="center")
            ax.set_yticks([0, 1])
        axes[-1, 0].set_xlabel("time (s)" if timed else "frame")
        fig.suptitle(f"{name}: face {int(fid)} ({len(g)} frames)")
        fig.tight_layout()
        path = out_dir / f"{name}_face{int(fid)}_aus.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
