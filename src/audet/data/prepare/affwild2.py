"""Aff-Wild2 (Kollias and Zafeiriou 2019, ABAW AU challenge): in-the-wild YouTube videos, 12 AUs;
train on the training set, test on the validation set (protocol section 5).

Layout read (``RAW`` = ``--raw``; sources and assumptions in ``docs/datasets.md``)::

    RAW/annotations/AU_Detection_Challenge/Train_Set/<video>.txt       (also Validation_Set)
    RAW/cropped_aligned/<video>/<frame:05d>.jpg                        organisers' face crops, or
    RAW/{videos,raw_videos,batch1,batch2,batch3,...}/<video>.<mp4|avi>  the raw videos

* Annotation files: first line ``AU1,AU2,AU4,...`` (the AU order of the columns), then one line
  per video frame: line i (1-based, after the header) is frame i; 0/1, -1 = not annotated
  (read as 9). Older releases named the folder ``AU_Set`` with ``Training_Set``.
* Frames: ``cropped_aligned/<video>/00001.jpg`` is frame 1 (the number in the file name). Frames
  the organisers could not crop are absent: their labelled rows are reported as ``missing_image``.
  Without cropped frames, the raw video is decoded (frame i = video index i - 1); a
  ``*_left``/``*_right`` video (two people in one video) needs the cropped frames and is otherwise
  skipped as ``two_person_video``.
* Landmarks: the release has none; they come from a :class:`FrameLandmarker` (``--landmarker``),
  see :mod:`audet.data.prepare.landmarks`. Output names are ``<video>/<frame:05d>.jpg``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from audet.data.prepare.partition import Partition
from audet.data.prepare.readers import (
    au_from_header,
    binary_label_row,
    file_signature,
    find_dir,
    iter_video_frames,
    list_frames,
    read_image,
)
from audet.data.prepare.release import Release
from audet.data.prepare.types import (
    DETECT,
    VIDEO_EXTENSIONS,
    FrameItem,
    LayoutError,
    PrepareOptions,
    SequenceSpec,
)

__all__ = ["AffWild2Release", "read_annotation"]

SETS = {"train": ("Train_Set", "Training_Set", "train"),
        "val": ("Validation_Set", "Val_Set", "validation", "val")}  # fmt: skip
VIDEO_DIRS = ("videos", "raw_videos", "videos_raw", "batch1", "batch2", "batch3", "new_vids",
              "Videos")  # fmt: skip
_TWO_PERSON = re.compile(r"_(left|right)$")


def read_annotation(path: str | os.PathLike, aus: Sequence[int]) -> list[np.ndarray]:
    """An AU annotation file -> one ``(A,)`` int8 row (0/1/9) per frame; row 0 is frame 1."""
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty annotation file")
    header = [au_from_header(h) for h in lines[0].split(",")]
    if not any(h is not None for h in header):
        raise ValueError(f"{path}: first line is not an AU header: {lines[0][:60]!r}")
    col = {au: j for j, au in enumerate(header) if au is not None}
    idx = [col.get(a) for a in aus]
    rows = []
    for ln in lines[1:]:
        rows.append(binary_label_row(ln.split(","), idx, len(aus)))
    return rows


class AffWild2Release(Release):
    name = "Aff-Wild2"
    one_based = False
    layout = ("RAW/annotations/AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt and "
              "RAW/cropped_aligned/<video>/<frame>.jpg (or raw videos in RAW/videos/); "
              "landmarks from --landmarker")  # fmt: skip

    def _annotation_root(self, root: Path) -> Path | None:
        return find_dir(root, "annotations/AU_Detection_Challenge", "Annotations/AU_Detection_Challenge",
                        "annotations/annotations/AU_Detection_Challenge", "AU_Detection_Challenge",
                        "annotations/AU_Set", "annotations/annotations/AU_Set", "AU_Set")  # fmt: skip

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        ann = self._annotation_root(root)
        crops = find_dir(root, "cropped_aligned", "cropped-aligned", "cropped")
        vid_dirs = [d for d in (find_dir(root, v) for v in VIDEO_DIRS) if d is not None]
        missing = []
        if ann is None:
            missing.append("annotations/AU_Detection_Challenge/")
        if crops is None and not vid_dirs:
            missing.append("cropped_aligned/ or videos/")
        if missing:
            raise LayoutError(f"{root} does not look like an Aff-Wild2 release (missing: "
                              f"{', '.join(missing)}); expected {self.layout}")  # fmt: skip
        videos: dict[str, str] = {}
        for d in vid_dirs:
            for f in sorted(os.listdir(d)):
                stem, ext = os.path.splitext(f)
                if ext.lower() in VIDEO_EXTENSIONS:
                    videos.setdefault(stem, str(d / f))
        specs = []
        for group, names in SETS.items():
            set_dir = find_dir(ann, *names)
            if set_dir is None:
                continue
            for f in sorted(os.listdir(set_dir)):
                video, ext = os.path.splitext(f)
                if ext.lower() != ".txt":
                    continue
                frames = str(crops / video) if crops is not None and (crops / video).is_dir() else ""
                raw = "" if frames else videos.get(_TWO_PERSON.sub("", video), "")
                data = (("labels", str(set_dir / f)), ("frames", frames), ("video", raw))
                specs.append(SequenceSpec(video, (), data,
                                          file_signature(str(set_dir / f), frames or raw), group))  # fmt: skip
        if not specs:
            raise LayoutError(f"no <video>.txt annotation files in Train_Set/Validation_Set under "
                              f"{ann}; expected {self.layout}")  # fmt: skip
        seen: dict[str, str] = {}
        for s in specs:
            if s.subject in seen:
                raise LayoutError(f"video {s.subject} is annotated in both {seen[s.subject]} and "
                                  f"{s.group}")  # fmt: skip
            seen[s.subject] = s.group
        return specs

    def needs_detector(self, specs, opts) -> bool:
        return True

    def partition(self, subjects, specs, opts: PrepareOptions) -> Partition:
        from audet.data.folds import CONVENTIONS

        conv = CONVENTIONS["Aff-Wild2"]
        parts = {g: sorted(s.subject for s in specs if s.group == g) for g in SETS}
        prefixes = {conv["train"]: (["train"], True), conv["test"]: (["val"], False)}
        folds = [{"train": conv["train"], "test": conv["test"]}]
        return Partition(parts, prefixes, folds, "official (training set / validation set)")

    def source_info(self, opts: PrepareOptions) -> dict:
        return {"layout": self.layout, "landmarks": f"detector {opts.detector!r}"}

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        name = lambda n: f"{n:05d}"  # noqa: E731
        try:
            rows = read_annotation(spec.get("labels"), aus)
        except (OSError, ValueError):
            rows = None
        frames_dir, video = spec.get("frames"), spec.get("video")
        if rows is None:
            for n, _ in (list_frames(frames_dir)[0] if frames_dir else []):
                yield FrameItem(name(n), n, skip="label_file_unreadable")
            return
        n_rows = len(rows)
        seen = set()
        if frames_dir:
            frames, _ = list_frames(frames_dir)
            for n, p in frames:
                seen.add(n)
                lab = rows[n - 1] if 1 <= n <= n_rows else None
                yield FrameItem(name(n), n, labels=lab, landmarks=DETECT,
                                image=(lambda p=p: read_image(p)))  # fmt: skip
        elif video and _TWO_PERSON.search(spec.subject):
            for n in range(1, n_rows + 1):
                seen.add(n)
                yield FrameItem(name(n), n, skip="two_person_video")
        elif video:
            try:
                for i, img in iter_video_frames(video):
                    n = i + 1
                    seen.add(n)
                    lab = rows[n - 1] if n <= n_rows else None
                    yield FrameItem(name(n), n, labels=lab, landmarks=DETECT, image=img)
            except OSError:
                for n in range(1, n_rows + 1):
                    if n not in seen:
                        seen.add(n)
                        yield FrameItem(name(n), n, skip="video_unreadable")
        for n in range(1, n_rows + 1):  # annotated rows without a frame
            if n not in seen:
                known = (rows[n - 1] != 9).any()
                yield FrameItem(name(n), n, skip="missing_image" if known else "labels_missing_all")
