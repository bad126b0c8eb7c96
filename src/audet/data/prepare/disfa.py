"""DISFA (Mavadati et al. 2013): 27 subjects, one stereo video pair each (4,845 frames), AU
intensities 0-5 for 12 AUs, 66 tracked landmarks. Benchmark: LEFT camera, 8 AUs, occurrence =
intensity >= 2 (protocol section 5).

Layout read (``RAW`` = ``--raw``; sources and assumptions in ``docs/datasets.md``)::

    RAW/Videos_LeftCamera/LeftVideoSN001_comp.avi            left camera (the one used)
    RAW/ActionUnit_Labels/SN001/SN001_au1.txt                 "frame,intensity" per line, frame 1-based
    RAW/Landmark_Points/SN001/tmp_frame_lm/SN001_0000_lm.mat  variable ``pts`` 66 x 2, 1-based pixels

* Left video: any directory named like ``Video(s)_LeftCamera`` holding ``LeftVideo<SN>_comp.avi``
  (any case, any video extension), or already extracted frames in
  ``Video(s)_LeftCamera_frames/LeftVideo<SN>_comp/*.jpg`` (sorted by the number in the name; the
  k-th file is video frame k). The right camera is never read.
* Labels: a missing AU file makes that AU unknown (9); intensity >= 2 -> 1, 0-1 -> 0.
* Landmarks: the number in the file name (``SN001_0000_lm.mat`` or ``l0NNNN_lm.mat``) is the
  0-based video frame index; label frame n (1-based) is video frame n - 1. 66 points are reduced
  to 49 with :func:`audet.facs.to_49` (66-point indices 17..65).
* Output frame names are the 0-based video frame index (``DISFA/SN001/0.jpg``), as in the
  published list files.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from audet.data.prepare.readers import (
    file_signature,
    find_dir,
    frame_number,
    iter_video_frames,
    list_frames,
    read_image,
)
from audet.data.prepare.release import Release
from audet.data.prepare.types import (
    VIDEO_EXTENSIONS,
    FrameItem,
    LayoutError,
    PrepareOptions,
    SequenceSpec,
)

__all__ = ["DISFARelease", "read_intensities", "read_pts_mat", "binarise"]

logger = logging.getLogger(__name__)

#: Occurrence threshold on DISFA intensities (protocol section 5).
OCCURRENCE_THRESHOLD = 2


def binarise(intensity: np.ndarray, threshold: int = OCCURRENCE_THRESHOLD) -> np.ndarray:
    """Intensity 0-5 -> occurrence 0/1 (``>= threshold``); values outside 0-5 -> 9 (unknown)."""
    x = np.asarray(intensity)
    valid = (x >= 0) & (x <= 5)
    return np.where(valid, (x >= threshold).astype(np.int8), np.int8(9)).astype(np.int8)


def read_intensities(path: str | os.PathLike) -> dict[int, int]:
    """``SNxxx_auN.txt`` -> {frame (1-based): intensity}. Malformed lines are ignored."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = re.split(r"[,\s]+", line.strip())
            if len(parts) < 2:
                continue
            try:
                out[int(float(parts[0]))] = int(float(parts[1]))
            except ValueError:
                continue
    return out


def read_pts_mat(path: str | os.PathLike) -> np.ndarray | None:
    """A DISFA landmark ``.mat`` -> ``(P, 2)`` (variable ``pts``, else the only 2-D array)."""
    from scipy.io import loadmat

    m = loadmat(str(path))
    arr = m.get("pts")
    if arr is None:
        cands = [v for k, v in m.items() if not k.startswith("__") and isinstance(v, np.ndarray)
                 and v.ndim == 2 and 2 in v.shape]  # fmt: skip
        if len(cands) != 1:
            raise ValueError(f"{path}: no 'pts' variable")
        arr = cands[0]
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        return None
    if arr.shape[1] != 2 and arr.shape[0] == 2:
        arr = arr.T
    return arr


_SN = re.compile(r"(SN\d+)", re.IGNORECASE)


def _sn(name: str) -> str | None:
    m = _SN.search(name)
    return m.group(1).upper() if m else None


class DISFARelease(Release):
    name = "DISFA"
    one_based = True
    layout = ("RAW/Videos_LeftCamera/LeftVideo<SN>_comp.avi (or Videos_LeftCamera_frames/"
              "LeftVideo<SN>_comp/*.jpg), RAW/ActionUnit_Labels/<SN>/<SN>_au<N>.txt and "
              "RAW/Landmark_Points/<SN>/[tmp_frame_lm/]*.mat")  # fmt: skip

    def _left_sources(self, root: Path) -> dict[str, tuple[str, str]]:
        """SN -> ("video"|"frames", path) for the LEFT camera."""
        out: dict[str, tuple[str, str]] = {}
        try:
            top = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            return out
        for d in top:
            lname = d.name.lower()
            if not d.is_dir() or "left" not in lname or "right" in lname:
                continue
            for e in sorted(os.scandir(d.path), key=lambda e: e.name):
                ename = e.name.lower()
                if not ename.startswith("leftvideo"):
                    continue
                sn = _sn(e.name)
                if sn is None:
                    continue
                if e.is_dir():
                    out.setdefault(sn, ("frames", e.path))
                elif e.is_file() and os.path.splitext(ename)[1] in VIDEO_EXTENSIONS:
                    out[sn] = ("video", e.path)  # a video wins over extracted frames
        return out

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        lab_root = find_dir(root, "ActionUnit_Labels", "ActionUnits_Labels", "AU_Labels")
        left = self._left_sources(root)
        lm_root = find_dir(root, "Landmark_Points", "Landmarks", "Landmark_points")
        missing = []
        if lab_root is None:
            missing.append("ActionUnit_Labels/")
        if not left:
            missing.append("Videos_LeftCamera/LeftVideo<SN>_comp.avi")
        if lm_root is None:
            missing.append("Landmark_Points/")
        if missing:
            raise LayoutError(f"{root} does not look like a DISFA release (missing: "
                              f"{', '.join(missing)}); expected {self.layout}")  # fmt: skip
        specs = []
        for d in sorted(os.listdir(lab_root)):
            sn = _sn(d)
            if sn is None or not (lab_root / d).is_dir():
                continue
            kind, src = left.get(sn, ("", ""))
            lm_dir = ""
            for cand in (lm_root / d / "tmp_frame_lm", lm_root / d, lm_root / sn):
                if cand.is_dir() and any(f.lower().endswith(".mat") for f in os.listdir(cand)):
                    lm_dir = str(cand)
                    break
            data = (("labels", str(lab_root / d)), ("source", src), ("kind", kind),
                    ("landmarks", lm_dir))  # fmt: skip
            sig = file_signature(src, lm_dir, *sorted(str(p) for p in (lab_root / d).glob("*.txt")))
            specs.append(SequenceSpec(sn, (), data, sig))
        if not specs:
            raise LayoutError(f"no ActionUnit_Labels/SNxxx folders under {lab_root}; expected "
                              f"{self.layout}")  # fmt: skip
        no_video = [s.subject for s in specs if not s.get("source")]
        if no_video:
            logger.warning(f"note: no left-camera video for {' '.join(no_video)}: their labelled frames "
                           "are reported as missing_image")  # fmt: skip
        return specs

    # -- frames ------------------------------------------------------------------------------

    def _labels(self, lab_dir: str, aus: Sequence[int]) -> dict[int, np.ndarray]:
        per_au: dict[int, dict[int, int]] = {}
        for f in os.listdir(lab_dir):
            m = re.search(r"_au(\d+)\.txt$", f, flags=re.IGNORECASE)
            if m:
                per_au[int(m.group(1))] = read_intensities(os.path.join(lab_dir, f))
        frames = sorted(set().union(*(set(d) for d in per_au.values()))) if per_au else []
        out = {}
        for n in frames:
            row = np.full(len(aus), 9, dtype=np.int8)
            for i, au in enumerate(aus):
                v = per_au.get(au, {}).get(n)
                if v is not None:
                    row[i] = binarise(np.array([v]))[0]
            out[n] = row
        return out

    def _landmark_files(self, lm_dir: str) -> dict[int, str]:
        out: dict[int, str] = {}
        if not lm_dir:
            return out
        for f in sorted(os.listdir(lm_dir), key=lambda s: (not s.upper().startswith("SN"), s)):
            stem, ext = os.path.splitext(f)
            if ext.lower() != ".mat":
                continue
            n = frame_number(re.sub(r"_lm$", "", stem, flags=re.IGNORECASE))
            if n is not None:
                out.setdefault(n, os.path.join(lm_dir, f))  # SNxxx_NNNN_lm.mat wins over l0NNNN
        return out

    def _images(self, spec: SequenceSpec) -> Iterator[tuple[int, object]]:
        kind, src = spec.get("kind"), spec.get("source")
        if kind == "video":
            yield from iter_video_frames(src)
        elif kind == "frames":
            frames, _ = list_frames(src)
            for k, (_, p) in enumerate(frames):
                yield k, (lambda p=p: read_image(p))

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        labels = self._labels(spec.get("labels"), aus)
        lm_files = self._landmark_files(spec.get("landmarks"))
        seen = set()

        def landmarks(idx: int):
            p = lm_files.get(idx)
            if p is None:
                return None, None
            try:
                return read_pts_mat(p), None
            except Exception:
                return None, "landmark_file_unreadable"

        try:
            for idx, image in self._images(spec):
                seen.add(idx)
                lab = labels.get(idx + 1)
                if lab is None:
                    yield FrameItem(str(idx), idx, labels=None, image=None)
                    continue
                lm, err = landmarks(idx)
                yield FrameItem(str(idx), idx, labels=lab, landmarks=lm, image=image,
                                one_based=self.one_based, skip=err)  # fmt: skip
        except OSError:
            for n in sorted(labels):
                if n - 1 not in seen:
                    seen.add(n - 1)
                    yield FrameItem(str(n - 1), n - 1, skip="video_unreadable")
        for n in sorted(labels):
            if n - 1 not in seen and n >= 1:
                yield FrameItem(str(n - 1), n - 1, skip="missing_image")
