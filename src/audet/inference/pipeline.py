"""``audet.Detector``: photos and videos -> one row per face per frame with per-AU probabilities.

Per frame: decode -> face detection -> 68-point landmarks -> face ids (IoU tracking in videos) ->
protocol alignment + the checkpoint's own evaluation transform -> (batched across frames) the
model's logits-only path -> sigmoid probabilities and presence (probability >= ``threshold``).

Clip models (``preprocess["clip"]``) get, for each face at frame t, the aligned crops of the SAME
face id at frames t + offset for the offsets they were trained with (see
:func:`audet.clip.clip_offsets`), in that order. Where the face was not found at
such a frame, the nearest frame of that face is used instead (as the training data loader does
with frames missing from a sequence), so at the start and end of a track frames repeat. Frames
are therefore emitted ``max(offsets)`` frames after they are read; memory holds only that window.

Streaming keeps memory flat: frames are read one at a time and results are produced in chunks
(:meth:`Detector.iter_chunks`); each chunk says where a resumed run continues, including the
tracker's state, so an interrupted run can go on with identical face ids.
"""
from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from audet.inference.align import FaceAligner
from audet.inference.loading import load_backend
from audet.faces import DetectedFace, make_face_detector, make_landmarker
from audet.inference.follow import FaceFollower, jsonable
from audet.inference.media import MAX_PIXELS, Frame, FrameError, VideoSource, image_frames, prefetch, read_image
from audet.inference.tracking import IoUTracker
from audet.inference.headpose import head_pose
from audet.inference.writers import POSE_COLUMNS, result_columns

__all__ = ["Detector", "Chunk"]

log = logging.getLogger(__name__)

STAGES = ("decode", "detection", "landmarks", "alignment", "model")

#: images with a side shorter than this (pixels) hold no detectable face
MIN_IMAGE_SIDE = 12


@dataclass
class _Face:
    face_id: int
    box: tuple
    score: float
    lm68: np.ndarray | None
    x: torch.Tensor | None = None  # the model input of this face (3, c, c)
    pose: tuple = (float("nan"),) * 3  # yaw, pitch, roll in degrees


@dataclass
class _FrameRec:
    index: int
    timestamp: float
    file: str
    faces: list[_Face]


@dataclass
class Chunk:
    """Rows for a run of frames. All rows of frames < ``next_frame`` have been yielded once this chunk
    is out; ``resume`` is what a resumed run needs (``start`` frame to read from, ``skip_before``
    frame whose rows are already written, ``tracker`` state before ``start``)."""

    rows: pd.DataFrame
    next_frame: int
    resume: dict
    problems: list[str] = field(default_factory=list)
    frames: int = 0  # frames read by this chunk


class Detector:
    """AU detection on photos and videos with an audet checkpoint.

    Args:
        checkpoint: an audet checkpoint (.safetensors with its .json), an ONNX file written by
            ``audet export``, or a loaded model.
        face_detector: ``"mtcnn"`` (default), ``"dlib-hog"`` or an object with ``detect(image)``
            (see :mod:`audet.faces`).
        landmarker: ``"dlib"`` (default), a dlib 68-point .dat path, or an object with
            ``landmarks(image, boxes)``.
        backend: ``"auto"`` (onnxruntime on the CPU where it agrees with PyTorch and is faster,
            see :func:`audet.inference.loading.auto_backend`), ``"torch"`` or ``"onnxruntime"``.
        batch_size: faces per model call (faces of several frames are batched together).
        threshold: presence (``AUxx_c``) is probability >= threshold (0.5 as in protocol F1).
        detect_max_side: images larger than this are downscaled for face DETECTION only
            (landmarks and alignment use the full image).
        max_pixels: larger images/videos are refused (``None``: no limit).
        iou_threshold, max_age: face tracking in videos (:class:`IoUTracker`).
        min_face_size: smallest face side (pixels) MTCNN looks for; larger is faster.
        precision: ``"32"`` (default), ``"bf16"`` or ``"16"`` (CUDA) autocast of the torch backend.
        detect_every: videos: the face detector runs every this many frames, and faces are followed
            by their landmarks in between (:mod:`audet.inference.follow`: it also runs when a face
            is lost or a new one may have entered); 1 detects on every frame.
        threads: compute threads (None: :mod:`audet.utils.threads` chooses).
        prefetch: frames decoded ahead in a reader thread (0: decode in the caller's thread).
    """

    def __init__(self, checkpoint=None, *, face_detector="mtcnn", landmarker="dlib", backend: str = "auto",
                 device: str = "cpu", batch_size: int = 32, threshold: float = 0.5, detect_max_side: int = 1280,
                 max_pixels: int | None = MAX_PIXELS, iou_threshold: float = 0.3, max_age: int = 10,
                 threads: int | None = None, min_face_size: int = 20, precision: str = "32", detect_every: int = 10,
                 prefetch: int = 8):
        from audet.utils.threads import configure

        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.threads = configure(threads)
        self.model = load_backend(checkpoint, backend, device, self.threads, precision)
        self.aus = list(self.model.aus)
        self.preprocess = dict(self.model.preprocess)
        self.offsets, self.centre = list(self.model.offsets), int(self.model.centre)
        self.aligner = FaceAligner(self.preprocess)
        self.face_detector = make_face_detector(face_detector, **({"min_face_size": int(min_face_size)}
                                                                  if face_detector in ("mtcnn", "haar") else {}))
        self.landmarker = make_landmarker(landmarker)
        if batch_size < 1 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"need batch_size >= 1 and 0 <= threshold <= 1, got {batch_size}, {threshold}")
        self.batch_size = int(batch_size)
        self.threshold = float(threshold)
        self.detect_max_side = int(detect_max_side) if detect_max_side else 0
        self.max_pixels = max_pixels
        self.iou_threshold, self.max_age = float(iou_threshold), int(max_age)
        self.detect_every, self.prefetch = int(detect_every), int(prefetch)
        self.columns = result_columns(self.aus)
        self.timings: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        meta = getattr(self.model, "meta", None) or getattr(getattr(self.model, "model", None), "checkpoint_meta", None)
        #: what the checkpoint was trained on (``{"dataset", "synthetic", ...}``; empty if it does not say)
        self.trained_on: dict = dict((meta or {}).get("trained_on") or {})
        self._warned_synthetic = False

    def _warn_synthetic(self) -> None:
        """Log ONCE per detector, in one line, that a model trained on synthetic faces is being run."""
        if self.trained_on.get("synthetic") and not self._warned_synthetic:
            self._warned_synthetic = True
            log.warning("warning: this model was trained on synthetic faces (%s, `audet synth`); its AU "
                        "probabilities on real faces mean nothing: use a model trained on real data "
                        "(e.g. `audet convert` an authors' release)", self.trained_on.get("dataset") or "synthetic data")

    # -- per frame ----------------------------------------------------------------------------
    def _detect(self, image: np.ndarray) -> list[DetectedFace]:
        h, w = image.shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE:  # no detector finds a face in fewer pixels (MTCNN's window is 12)
            return []
        side = max(h, w)
        if self.detect_max_side and side > self.detect_max_side:
            import cv2

            s = self.detect_max_side / side
            small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            faces = self.face_detector.detect(small)
            return [DetectedFace(tuple(v / s for v in f.box), f.score) for f in faces]
        return list(self.face_detector.detect(image))

    def analyse_frame(self, image: np.ndarray, index: int = 0, timestamp: float = float("nan"), file: str = "",
                      tracker: IoUTracker | None = None, follower: FaceFollower | None = None) -> _FrameRec:
        """Detection (or following, see :mod:`audet.inference.follow`), landmarks, ids and model
        inputs of one RGB uint8 frame (no model call)."""
        self._warn_synthetic()
        clock = time.perf_counter
        spent = {"detection": 0.0, "landmarks": 0.0}

        def faces_and_landmarks(detect: bool):
            t0 = clock()
            if detect:
                found = self._detect(image)
                self.counts["detections"] += 1
            else:
                found = [DetectedFace(tuple(b), s) for b, s in follower.followed_boxes()]
            if tracker is None:  # still images: ids by position, left to right
                found.sort(key=lambda f: (f.box[0], f.box[1]))
            t1 = clock()
            boxes = [f.box for f in found]
            lms = self.landmarker.landmarks(image, boxes) if found else []
            spent["detection"] += t1 - t0
            spent["landmarks"] += clock() - t1
            return found, boxes, lms

        reason = follower.due(index, image) if follower is not None else "every frame"
        found, boxes, lms = faces_and_landmarks(bool(reason))
        if follower is not None:
            why = follower.lost(image, lms) if not reason else None
            if why:  # a face lost: the detector looks at this frame
                reason = f"face lost ({why})"
                found, boxes, lms = faces_and_landmarks(True)
            if reason:
                follower.detected(index, image, boxes, [f.score for f in found], lms, reason)
                self.counts[f"detections: {reason}"] += 1
            else:
                follower.followed(lms)
                self.counts["followed_frames"] += 1
        t2 = clock()
        ids = tracker.update(index, boxes) if tracker is not None else list(range(len(found)))
        faces = []
        for f, lm, fid in zip(found, lms, ids):
            x = None
            if lm is not None:
                try:
                    x = self.aligner(image, lm)
                except ValueError as exc:  # degenerate landmarks
                    log.debug("frame %s face %s: alignment failed: %s", index, fid, exc)
                    self.counts["alignment_failed"] += 1
            else:
                self.counts["landmarks_failed"] += 1
            pose = head_pose(lm, image.shape[1], image.shape[0]) if lm is not None else (float("nan"),) * 3
            faces.append(_Face(int(fid), tuple(float(v) for v in f.box), float(f.score), lm, x, pose))
        t3 = time.perf_counter()
        self.timings["detection"] += spent["detection"]
        self.timings["landmarks"] += spent["landmarks"]
        self.timings["alignment"] += t3 - t2
        self.counts["frames"] += 1
        self.counts["faces"] += len(faces)
        self.counts["frames_without_face"] += not faces
        return _FrameRec(int(index), float(timestamp), file, faces)

    # -- model --------------------------------------------------------------------------------
    def _probs(self, inputs: list[torch.Tensor]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, len(self.aus)), np.float32)
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(inputs), self.batch_size):
            out.append(self.model(torch.stack(inputs[i:i + self.batch_size])))
        self.timings["model"] += time.perf_counter() - t0
        return np.concatenate(out).astype(np.float64)

    def _rows(self, recs: list[_FrameRec], probs: np.ndarray, has_x: list[tuple[int, int]]) -> pd.DataFrame:
        n = sum(len(r.faces) for r in recs)
        A = len(self.aus)
        cols: dict[str, np.ndarray] = {}
        file = np.empty(n, dtype=object)
        frame = np.empty(n, np.int64)
        ts = np.empty(n, np.float64)
        fid = np.empty(n, np.int64)
        conf = np.empty(n, np.float64)
        box = np.full((n, 4), np.nan)
        lm = np.full((n, 68, 2), np.nan)
        pose = np.full((n, 3), np.nan)
        p = np.full((n, A), np.nan)
        k = 0
        where = {key: j for j, key in enumerate(has_x)}
        for ri, r in enumerate(recs):
            for fi, f in enumerate(r.faces):
                file[k], frame[k], ts[k], fid[k], conf[k] = r.file, r.index, r.timestamp, f.face_id, f.score
                box[k] = f.box
                if f.lm68 is not None:
                    lm[k] = f.lm68
                pose[k] = f.pose
                j = where.get((ri, fi))
                if j is not None:
                    p[k] = probs[j]
                k += 1
        ok = np.isfinite(p).all(axis=1) if A else np.zeros(n, bool)
        cols.update(file=file, frame=frame, timestamp=ts, face_id=fid, confidence=conf, success=ok.astype(np.int64),
                    box_x1=box[:, 0], box_y1=box[:, 1], box_x2=box[:, 2], box_y2=box[:, 3])
        for i in range(68):
            cols[f"x_{i}"] = lm[:, i, 0]
        for i in range(68):
            cols[f"y_{i}"] = lm[:, i, 1]
        for j, c in enumerate(POSE_COLUMNS):
            cols[c] = pose[:, j]
        for j, a in enumerate(self.aus):
            cols[f"AU{int(a):02d}_p"] = p[:, j]
        for j, a in enumerate(self.aus):
            c = pd.array(np.where(ok, (p[:, j] >= self.threshold).astype(np.int64), 0), dtype="Int8")
            c[~ok] = pd.NA
            cols[f"AU{int(a):02d}_c"] = c
        return pd.DataFrame(cols, columns=self.columns)

    def empty(self) -> pd.DataFrame:
        return self._rows([], np.zeros((0, len(self.aus))), [])

    # -- streaming ----------------------------------------------------------------------------
    def _clip_input(self, hist: dict, keys: list[int], t: int) -> torch.Tensor:
        xs = []
        for o in self.offsets:
            want = t + o
            if want in hist:
                xs.append(hist[want])
                continue
            j = bisect_left(keys, want)
            cands = [keys[i] for i in (j - 1, j) if 0 <= i < len(keys)]
            best = min(cands, key=lambda c: (abs(c - want), abs(c - t)))
            xs.append(hist[best])
        return self.aligner.clip_tensor(xs)

    def iter_chunks(self, frames: Iterable[Frame | FrameError], *, track: bool = True, tracker_state: dict | None = None,
                    skip_before: int = 0) -> Iterator[Chunk]:
        """Results of a stream of frames, chunk by chunk (see the module docstring).

        ``track``: face ids by IoU tracking (videos) or per image (image lists). ``tracker_state``
        and ``skip_before`` continue an interrupted run (``Chunk.resume`` of its last chunk):
        frames before ``skip_before`` are analysed (to warm up the clip window) but give no rows.
        """
        tracker = (IoUTracker.from_state(tracker_state) if tracker_state else
                   IoUTracker(self.iou_threshold, self.max_age)) if track else None
        follower = None
        if track and self.detect_every > 1:
            follower = FaceFollower(self.detect_every)
            follower.load_state((tracker_state or {}).get("follow"))
        lo, hi = min(self.offsets), max(self.offsets)
        warm = max(0, -lo)
        pending: list[_FrameRec] = []
        hist: dict[int, dict[int, torch.Tensor]] = defaultdict(dict)  # face id -> frame -> input
        snaps: dict[int, dict] = {}
        problems: list[str] = []
        last_seen = -1
        n_read = 0
        it = prefetch(frames, self.prefetch)

        first_index: int | None = None  # the first frame this run reads (its resume point)
        done_next = skip_before  # rows of all frames before this one are out

        def resume_info(next_frame: int) -> dict:
            start = max(0, next_frame - warm) if track else next_frame
            if first_index is not None and start <= first_index:  # still inside this run's warm-up
                return {"start": first_index, "skip_before": max(next_frame, skip_before), "tracker": tracker_state}
            state = None
            if tracker is not None and start > 0:
                keys = [k for k in snaps if k <= start - 1]
                state = snaps[max(keys)] if keys else (tracker_state or None)
            return {"start": start, "skip_before": max(next_frame, skip_before), "tracker": jsonable(state)}

        def emit(ready: list[_FrameRec]) -> Chunk:
            nonlocal problems, n_read
            inputs, has_x = [], []
            for ri, r in enumerate(ready):
                for fi, f in enumerate(r.faces):
                    if f.x is None:
                        continue
                    if len(self.offsets) == 1:
                        inputs.append(f.x)
                    else:
                        h = hist[f.face_id]
                        inputs.append(self._clip_input(h, sorted(h), r.index))
                    has_x.append((ri, fi))
            probs = self._probs(inputs)
            rows = self._rows(ready, probs, has_x)
            if skip_before and len(rows) and int(rows["frame"].min()) < skip_before:
                # warm-up frames of a resumed run: analysed (clip window, tracker), not written again
                rows = rows[rows["frame"] >= skip_before].reset_index(drop=True)
            nonlocal done_next
            next_frame = ready[-1].index + 1 if ready else done_next
            done_next = next_frame
            chunk = Chunk(rows, next_frame, resume_info(next_frame), problems, n_read)
            problems, n_read = [], 0
            # forget what no later frame needs
            oldest = pending[0].index if pending else next_frame
            for fid in list(hist):
                for k in [k for k in hist[fid] if k < oldest + lo]:
                    del hist[fid][k]
                if not hist[fid]:
                    del hist[fid]
            for k in [k for k in snaps if k < oldest - warm - 1]:
                del snaps[k]
            return chunk

        ready: list[_FrameRec] = []
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    fr = next(it)
                except StopIteration:
                    break
                self.timings["decode"] += time.perf_counter() - t0
                n_read += 1
                if first_index is None:
                    first_index = fr.index
                if isinstance(fr, FrameError):
                    problems.append(fr.message)
                    self.counts["unreadable"] += 1
                    rec = _FrameRec(fr.index, float("nan"), fr.file, [])  # keeps its place in the order
                else:
                    rec = self._analyse_safely(fr, tracker, follower, track, problems)
                if tracker is not None and not isinstance(fr, FrameError):
                    snaps[fr.index] = {**tracker.state(), "follow": follower.state()} if follower else tracker.state()
                if len(self.offsets) > 1:  # clip models: keep each face's inputs for its neighbours
                    for f in rec.faces:
                        if f.x is not None:
                            hist[f.face_id][rec.index] = f.x
                pending.append(rec)
                last_seen = rec.index
                while pending and pending[0].index + hi <= last_seen:
                    ready.append(pending.pop(0))
                n_faces = sum(len(r.faces) for r in ready)
                if ready and (n_faces >= self.batch_size or len(ready) >= self.batch_size):
                    yield emit(ready)
                    ready = []
        finally:
            it.close()  # the reader thread stops and is joined
        ready.extend(pending)
        pending = []
        if ready or problems or n_read:
            yield emit(ready)

    def _analyse_safely(self, fr: Frame, tracker, follower, track: bool, problems: list[str]) -> _FrameRec:
        try:
            return self.analyse_frame(fr.image, fr.index, fr.timestamp, fr.file, tracker, follower)
        except Exception as exc:  # a detector/landmarker failing on one frame
            what = fr.file if not track else f"frame {fr.index}"
            problems.append(f"{what}: face analysis failed ({type(exc).__name__}: {exc})")
            self.counts["failed_frames"] += 1
            return _FrameRec(fr.index, fr.timestamp, fr.file, [])

    # -- public API ---------------------------------------------------------------------------
    def detect_image(self, image, file: str = "") -> pd.DataFrame:
        """One row per face of a photo (a path or an RGB uint8 array); face ids left to right."""
        if isinstance(image, (str, os.PathLike)):
            file = file or os.fspath(image)
            image = read_image(image, self.max_pixels)
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"detect_image needs an RGB uint8 (H, W, 3) image or a path, got {img.dtype} {img.shape}")
        chunks = list(self.iter_chunks([Frame(0, float("nan"), img, file)], track=False))
        for p in (p for c in chunks for p in c.problems):
            log.warning("%s", p)
        return pd.concat([c.rows for c in chunks], ignore_index=True) if chunks else self.empty()

    def detect_images(self, paths) -> pd.DataFrame:
        """Rows for a list of image files (``frame`` = position in the list); unreadable files are
        logged and skipped."""
        out = []
        for c in self.iter_chunks(image_frames(list(paths), self.max_pixels), track=False):
            for p in c.problems:
                log.warning("%s", p)
            out.append(c.rows)
        return pd.concat(out, ignore_index=True) if out else self.empty()

    def stream(self, video, start: int = 0, progress: bool = False) -> Iterator[pd.DataFrame]:
        """Rows of a video file (or camera index), one DataFrame per chunk, with flat memory."""
        src = VideoSource(video, self.max_pixels)
        chunks = None
        try:
            frames = src.frames(0)
            if progress:
                from tqdm.auto import tqdm

                frames = tqdm(frames, total=src.frame_count, unit="frame", desc=str(src.name), dynamic_ncols=True)
            chunks = self.iter_chunks(frames, track=True, skip_before=start)
            for c in chunks:
                for p in c.problems:
                    log.warning("%s", p)
                yield c.rows
            if src.truncated:
                log.warning("%s: video ended after %d of %d frames (truncated file?)", src.name, src.frames_read,
                            src.frame_count)
        finally:
            if chunks is not None:
                chunks.close()  # the reader thread stops before the video is closed
            src.close()

    def detect_video(self, video, progress: bool = False) -> pd.DataFrame:
        """One row per face per frame of a video (stable ``face_id`` s across frames)."""
        parts = list(self.stream(video, progress=progress))
        return pd.concat(parts, ignore_index=True) if parts else self.empty()

    def timing_report(self) -> dict:
        """Seconds spent per stage so far and frames analysed (for benchmarks)."""
        return {**{s: float(self.timings.get(s, 0.0)) for s in STAGES}, **dict(self.counts)}

    def __repr__(self) -> str:
        return (f"Detector(aus={self.aus}, backend={self.model.name}, face_detector={type(self.face_detector).__name__}, "
                f"landmarker={type(self.landmarker).__name__}, offsets={self.offsets})")

