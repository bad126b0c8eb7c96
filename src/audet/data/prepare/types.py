"""Types and constants of ``audet prepare``: what a release reader and the runner exchange.

A release module provides a :class:`audet.data.prepare.release.Release`: ``discover`` lists the
:class:`SequenceSpec` of a raw release (a wrong root raises :class:`LayoutError`) and
``iter_frames`` yields one :class:`FrameItem` per frame; :class:`PrepareOptions` are the settings
of a run. Frames that are
not written are counted by reason (:data:`SKIP_REASONS`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MANIFEST_VERSION",
    "SKIP_REASONS",
    "DETECT",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "SYNTH_META",
    "DELAY_ENV",
    "LayoutError",
    "PrepareInterrupted",
    "SequenceSpec",
    "FrameItem",
    "PrepareOptions",
]

#: Manifest format version; bump when the per-sequence result changes meaning.
MANIFEST_VERSION = 1

#: Why a frame was not written. Keys are what ``prepare_summary.json`` counts.
SKIP_REASONS: dict[str, str] = {
    "not_annotated": "image without an AU label row (outside the coded segment)",
    "labels_missing_all": "label missing (9, or -1 in Aff-Wild2) for every selected AU",
    "missing_image": "label row without an image / video frame",
    "unreadable_image": "image or video frame could not be decoded",
    "no_landmarks": "no landmarks for the frame (lost track, empty entry, no landmark file)",
    "no_face_detected": "the landmark detector found no face",
    "nan_landmarks": "landmarks contain NaN or inf",
    "bad_landmark_count": "landmarks are not 49, 66 or 68 points of (x, y)",
    "degenerate_landmarks": "alignment impossible (coincident eye centres or zero-size box)",
    "duplicate_frame": "a second image file with the same frame number (e.g. 12.jpg and 0012.jpg)",
    "label_file_unreadable": "the AU label file of the sequence could not be parsed",
    "landmark_file_unreadable": "the landmark file of the sequence could not be parsed",
    "video_unreadable": "the video of the sequence could not be opened",
    "two_person_video": "a *_left/*_right Aff-Wild2 video read from the raw video (needs cropped frames)",
}

#: Sentinel for ``FrameItem.landmarks``: run the configured landmark detector on the image.
DETECT = "detect"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".wmv", ".mpg", ".mpeg", ".webm")

#: Written by ``audet synth`` at the root of a synthetic release.
SYNTH_META = "synth_meta.json"

#: Test hook: seconds to sleep per frame (lets a test kill a run in the middle). Not for users.
DELAY_ENV = "AUDET_PREPARE_TEST_DELAY"


class LayoutError(ValueError):
    """The root does not look like the release (the message says what was expected)."""


class PrepareInterrupted(RuntimeError):
    """Raised by the ``stop_after`` test hook to simulate an interruption."""


@dataclass(frozen=True)
class SequenceSpec:
    """One unit of work: a sequence (BP4D task, DISFA video, Aff-Wild2 video, ...).

    ``data`` holds the paths (as strings) a reader needs; ``fingerprint`` summarises the inputs
    (file names and sizes) so a changed input invalidates a finished manifest; ``group`` is a
    release-defined split name (Aff-Wild2 ``train``/``validation``) or ``""``.
    """

    subject: str
    sequence: tuple[str, ...] = ()
    data: tuple[tuple[str, str], ...] = ()
    fingerprint: str = ""
    group: str = ""

    @property
    def key(self) -> str:
        return "/".join((self.subject, *self.sequence))

    def get(self, name: str, default: str = "") -> str:
        return dict(self.data).get(name, default)


@dataclass
class FrameItem:
    """One frame as a reader sees it. The runner decides whether it is written.

    ``labels`` is ``(A,)`` int 0/1/9 in the selected AU order (``None`` = no label row);
    ``landmarks`` ``(P, 2)`` in the release's own convention (``one_based``), ``None`` when
    there are none, or :data:`DETECT` to run the detector; ``image`` an array, a zero-argument
    loader returning an array or ``None``, or ``None``. ``skip`` forces a skip reason.
    """

    name: str
    number: int
    labels: np.ndarray | None = None
    landmarks: Any = None
    image: Any = None
    one_based: bool = False
    skip: str | None = None


@dataclass
class PrepareOptions:
    dataset: str
    root: str
    out: str
    workers: int = 1
    folds: str | None = None  # None: official when possible, else auto; "official" | "auto"
    seed: int = 0
    aus: tuple[int, ...] | None = None
    image_format: str = "jpg"
    jpeg_quality: int = 95
    size: int = 200
    border: int = 128
    split_file: str | None = None
    detector: str | None = None
    detector_kwargs: dict = field(default_factory=dict)
    force: bool = False
    progress: bool = True
    stop_after: int | None = None  # test hook: raise PrepareInterrupted after k sequences
