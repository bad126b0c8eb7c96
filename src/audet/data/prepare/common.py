"""The release-independent part of ``audet prepare``: a parallel, resumable runner.

A release module (``bp4d``, ``disfa``, ...) provides a :class:`Release`: ``discover`` lists the
sequences of a raw release (fast, in the main process; a wrong root raises :class:`LayoutError`
saying what was expected) and ``iter_frames`` yields one :class:`FrameItem` per frame of a
sequence (in a worker process). Everything else happens here:

1. every sequence is processed by :func:`process_sequence` in a ``multiprocessing`` pool (or in
   process for ``workers=1``): frames are checked (labels, landmarks, image), landmarks converted
   to 49 points, faces aligned (protocol section 2), crops written to
   ``OUT/images/<DATASET>/<subject>/<sequence...>/<frame>.<ext>``;
2. after the last frame of a sequence, a small manifest ``OUT/.prepare/<DATASET>/<key>.npz``
   (paths, aligned landmarks, labels, skipped frames with reasons, a settings/input fingerprint)
   is written atomically: it is the commit point of the sequence. A re-run skips sequences whose
   manifest is there and current, so an interrupted run resumes where it stopped; a sequence
   without a manifest is redone and its (possibly partial) crops overwritten;
3. list files, ``dataset.json`` and ``prepare_summary.json`` are assembled from the manifests
   only, in sorted order, so an interrupted-and-resumed run writes the same bytes as an
   uninterrupted one (and the number of workers does not matter).

Bad frames never abort the batch: they are skipped and counted by reason (:data:`SKIP_REASONS`).
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from audet.utils.io import write_bytes_atomic, write_json_atomic

__all__ = [
    "SKIP_REASONS",
    "DETECT",
    "LayoutError",
    "PrepareInterrupted",
    "SequenceSpec",
    "FrameItem",
    "PrepareOptions",
    "Release",
    "run_prepare",
    "process_sequence",
    "list_frames",
    "frame_number",
    "read_image",
    "iter_video_frames",
    "file_signature",
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


class Release:
    """Base class of the per-release readers."""

    #: ``audet.facs.DATASET_AUS`` key and output directory name.
    name: str = ""
    #: One line: what ``--root`` must contain (used in LayoutError messages and docs).
    layout: str = ""
    #: Whether the release's landmark annotations are 1-based (MATLAB style).
    one_based: bool = False

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        raise NotImplementedError

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        raise NotImplementedError

    def needs_detector(self, specs: Sequence[SequenceSpec], opts: PrepareOptions) -> bool:
        """True when some frames can only get landmarks from a detector."""
        return False

    def partition(self, subjects: Sequence[str], specs: Sequence[SequenceSpec],
                  opts: PrepareOptions) -> "Partition":  # fmt: skip
        """Parts, list prefixes and folds (default: 3 subject-exclusive parts)."""
        synthetic = (Path(opts.root) / SYNTH_META).is_file()
        return three_fold_partition(self.name, subjects, opts.folds, opts.seed, synthetic)

    def source_info(self, opts: PrepareOptions) -> dict:
        return {"layout": self.layout, "landmarks_one_based": self.one_based}


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the readers
# ---------------------------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def frame_number(stem: str) -> int | None:
    """The last run of digits in a file stem (``"0721"`` -> 721, ``"LeftVideoSN001_comp_00012"``
    -> 12), or None."""
    runs = _DIGITS.findall(stem)
    return int(runs[-1]) if runs else None


def list_frames(folder: str | os.PathLike,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:  # fmt: skip
    """Image files of ``folder`` sorted by frame number -> ``(frames, duplicates)``.

    Frame numbers are the last digit run of the stem, with or without zero padding; ``.jpg``,
    ``.jpeg``, ``.png`` and ``.bmp`` (any case) are accepted. When two files share a number
    (``12.jpg`` and ``0012.png``), the first in name order is kept and the others returned as
    duplicates.
    """
    found: dict[int, str] = {}
    dups: list[tuple[int, str]] = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return [], []
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions or name.startswith("."):
            continue
        n = frame_number(stem)
        if n is None:
            continue
        path = os.path.join(folder, name)
        if n in found:
            dups.append((n, path))
        else:
            found[n] = path
    return sorted(found.items()), dups


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Read an image as ``(H, W, 3)`` uint8 BGR, or None if it cannot be decoded."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    return decode_image(data)


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def iter_video_frames(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video sequentially: ``(0-based index, BGR frame)``. Raises OSError if unopenable."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open video {path}")
    try:
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame
            i += 1
    finally:
        cap.release()


def file_signature(*paths: str | os.PathLike | None) -> str:
    """``name:size`` of each existing path (directories: number of entries), for fingerprints."""
    parts = []
    for p in paths:
        if not p:
            parts.append("-")
            continue
        try:
            if os.path.isdir(p):
                parts.append(f"{os.path.basename(p)}:dir{len(os.listdir(p))}")
            else:
                parts.append(f"{os.path.basename(p)}:{os.path.getsize(p)}")
        except OSError:
            parts.append(f"{os.path.basename(str(p))}:missing")
    return "|".join(parts)


def find_dir(root: Path, *candidates: str) -> Path | None:
    """The first existing directory among ``root/candidate`` (exact name, then case-insensitive)."""
    for c in candidates:
        p = root / c
        if p.is_dir():
            return p
    try:
        entries = {e.name.lower(): e for e in os.scandir(root) if e.is_dir()}
    except OSError:
        return None
    for c in candidates:
        parts = Path(c).parts
        e = entries.get(parts[0].lower())
        if e is None:
            continue
        p = Path(e.path)
        if len(parts) > 1:
            p = find_dir(p, str(Path(*parts[1:])))
        if p is not None and p.is_dir():
            return p
    return None


def binary_label_row(cells: Sequence[str], columns: Sequence[int | None], n: int) -> np.ndarray:
    """Cells of one label row -> ``(n,)`` int8: 0/1 where ``cells[columns[i]]`` reads as 0 or 1,
    9 (missing) for an absent column, an empty or non-numeric cell, or any other value (e.g. the
    9 of BP4D or the -1 of Aff-Wild2)."""
    row = np.full(n, 9, dtype=np.int8)
    for i, j in enumerate(columns):
        if j is None or j >= len(cells):
            continue
        try:
            v = float(cells[j])
        except ValueError:
            continue
        if v in (0.0, 1.0):
            row[i] = int(v)
    return row


def au_from_header(text: str) -> int | None:
    """``"AU01"``, ``"au12"``, ``"12"``, ``" AU 4 "`` -> AU number; anything else -> None."""
    m = re.fullmatch(r"\s*(?:au)?\s*0*(\d+)\s*", str(text), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Per-sequence processing (runs in the workers)
# ---------------------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init_worker(opts_dict: dict) -> None:
    import cv2

    cv2.setNumThreads(1)
    _STATE.clear()
    _STATE["opts"] = PrepareOptions(**opts_dict)


def _detector(opts: PrepareOptions):
    det = _STATE.get("detector")
    if det is None:
        from audet.data.prepare.landmarks import create_detector

        det = create_detector(opts.detector, **opts.detector_kwargs)
        _STATE["detector"] = det
    return det


def settings_hash(opts: PrepareOptions, aus: Sequence[int]) -> str:
    import hashlib

    s = json.dumps({"v": MANIFEST_VERSION, "dataset": opts.dataset, "aus": list(aus),
                    "fmt": opts.image_format, "q": opts.jpeg_quality, "size": opts.size,
                    "border": opts.border, "detector": opts.detector or "",
                    "detector_kwargs": opts.detector_kwargs}, sort_keys=True)  # fmt: skip
    return hashlib.sha1(s.encode()).hexdigest()[:16]


def manifest_path(out: Path, dataset: str, spec: SequenceSpec) -> Path:
    return out / ".prepare" / dataset / (spec.key + ".npz")


def _encode(img: np.ndarray, opts: PrepareOptions) -> bytes:
    import cv2

    if opts.image_format == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(opts.jpeg_quality)])
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


def _as_bgr(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def _check_frame(item: FrameItem, opts: PrepareOptions):
    """-> (reason, None) or (None, (image, landmarks49, one_based))."""
    from audet.facs import to_49

    if item.skip:
        return item.skip, None
    if item.labels is None:
        return "not_annotated", None
    if not (np.asarray(item.labels) != 9).any():
        return "labels_missing_all", None
    image = item.image
    one_based = item.one_based
    if isinstance(item.landmarks, str) and item.landmarks == DETECT:
        image = image() if callable(image) else image
        if image is None:
            return "unreadable_image", None
        lm = _detector(opts).detect(image)
        if lm is None or np.asarray(lm).size == 0:
            return "no_face_detected", None
        one_based = False
    else:
        lm = item.landmarks
        if lm is None or np.asarray(lm).size == 0:
            return "no_landmarks", None
    lm = np.asarray(lm, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] not in (49, 66, 68):
        return "bad_landmark_count", None
    if not np.isfinite(lm).all():
        return "nan_landmarks", None
    if callable(image):
        image = image()
    if image is None:
        return "unreadable_image", None
    return None, (_as_bgr(np.asarray(image)), to_49(lm), one_based)


def process_sequence(spec: SequenceSpec, release: Release, opts: PrepareOptions,
                     aus: Sequence[int]) -> dict:  # fmt: skip
    """Write the aligned frames of one sequence and its manifest; return a small summary."""
    from audet.geometry import align_face

    out = Path(opts.out)
    ext = "png" if opts.image_format == "png" else "jpg"
    rel_dir = "/".join((release.name, spec.subject, *spec.sequence))
    img_dir = out / "images" / rel_dir
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.glob(".*.tmp"):  # left by a killed run (atomic writes)
        stale.unlink(missing_ok=True)
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)

    paths, lms, labels, numbers = [], [], [], []
    skip_names, skip_reasons = [], []
    seen = set()
    for item in release.iter_frames(spec, aus, opts):
        if delay:
            time.sleep(delay)
        reason, ok = _check_frame(item, opts)
        if reason is None:
            image, lm49, one_based = ok
            try:
                warped, lm_al, _ = align_face(image, lm49, size=opts.size, border=opts.border,
                                              one_based=one_based)  # fmt: skip
            except ValueError:
                reason = "degenerate_landmarks"
        if reason is not None:
            skip_names.append(f"{spec.key}/{item.name}")
            skip_reasons.append(reason)
            continue
        name = f"{item.name}.{ext}"
        if name in seen:  # a reader yielding the same frame twice
            skip_names.append(f"{spec.key}/{item.name}")
            skip_reasons.append("duplicate_frame")
            continue
        seen.add(name)
        # A plain write is enough: the manifest (written atomically after the last frame) is
        # the commit point, and a sequence without one is redone, overwriting partial files.
        (img_dir / name).write_bytes(_encode(warped, opts))
        paths.append(f"{rel_dir}/{name}")
        lms.append(lm_al)
        labels.append(np.asarray(item.labels, dtype=np.int8))
        numbers.append(int(item.number))

    order = np.argsort(np.asarray(numbers, dtype=np.int64), kind="stable")
    n_aus = len(aus)
    buf = io.BytesIO()
    np.savez(
        buf,
        version=np.int64(MANIFEST_VERSION),
        key=np.str_(spec.key),
        settings=np.str_(settings_hash(opts, aus)),
        fingerprint=np.str_(spec.fingerprint),
        paths=np.asarray([paths[i] for i in order], dtype=np.str_).reshape(-1),
        landmarks=(np.stack(lms)[order] if lms else np.zeros((0, 49, 2))).astype(np.float64),
        labels=(np.stack(labels)[order] if labels else np.zeros((0, n_aus))).astype(np.int8),
        frames=np.asarray(numbers, dtype=np.int64)[order],
        skip_names=np.asarray(skip_names, dtype=np.str_).reshape(-1),
        skip_reasons=np.asarray(skip_reasons, dtype=np.str_).reshape(-1),
    )
    write_bytes_atomic(manifest_path(out, release.name, spec), buf.getvalue())
    return {"key": spec.key, "written": len(paths), "skipped": len(skip_names)}


def _worker(job: tuple[str, SequenceSpec, tuple[int, ...]]) -> dict:
    from audet.data.prepare import get_release

    dataset, spec, aus = job
    return process_sequence(spec, get_release(dataset), _STATE["opts"], aus)


def load_manifest(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # corrupt / partial / old: redo the sequence
        return None


def _manifest_current(path: Path, spec: SequenceSpec, shash: str) -> bool:
    if not path.is_file():
        return False
    m = load_manifest(path)
    return (
        m is not None
        and int(m.get("version", -1)) == MANIFEST_VERSION
        and str(m["key"]) == spec.key
        and str(m["settings"]) == shash
        and str(m["fingerprint"]) == spec.fingerprint
    )


# ---------------------------------------------------------------------------------------------
# Parts and folds
# ---------------------------------------------------------------------------------------------


@dataclass
class Partition:
    """``parts``: part name -> subjects; ``prefixes``: list prefix -> (part names, is_train);
    ``folds``: ``[{"train": prefix, "test": prefix}, ...]``; ``assignment``: how parts were made."""

    parts: dict[str, list[str]]
    prefixes: dict[str, tuple[list[str], bool]]
    folds: list[dict]
    assignment: str
    notice: str | None = None
    extra: dict = field(default_factory=dict)


def _official_parts(dataset: str) -> list[list[str]] | None:
    try:
        from audet.data.folds import FOLDS
    except ImportError:  # pragma: no cover - folds module missing
        return None
    entry = FOLDS.get(dataset) if hasattr(FOLDS, "get") else None
    if not entry:
        return None
    if isinstance(entry, dict):
        entry = [entry[k] for k in sorted(entry)]
    return [list(p) for p in entry]


def _assign_parts(subjects: Sequence[str], n_parts: int, seed: int) -> list[list[str]]:
    from audet.data.folds import assign_parts

    parts = assign_parts(list(subjects), n_parts=n_parts, seed=seed)
    if isinstance(parts, dict):
        parts = [parts[k] for k in sorted(parts)]
    return [list(p) for p in parts]


def three_fold_partition(dataset: str, subjects: Sequence[str], mode: str | None, seed: int,
                         synthetic: bool = False) -> Partition:  # fmt: skip
    """Subject-exclusive 3 parts and their list prefixes.

    ``mode`` None (default): the official lists of protocol section 5 when every subject is in
    them, the release is not synthetic (no ``synth_meta.json``) and no official part ends up
    empty; otherwise :func:`audet.data.folds.assign_parts` with a printed notice. ``"official"``
    forces the official lists (error for unlisted subjects); ``"auto"`` forces ``assign_parts``.
    Prefixes: ``<D>_part{i}`` (test), ``<D>_combine_{i}_{j}`` (train), ``<D>_all`` (train).
    """
    subjects = sorted(subjects)
    present = set(subjects)
    official = _official_parts(dataset)
    notice = None
    parts_list = None
    assignment = "official"
    why = "--folds auto"
    if mode == "official":
        if not official:
            raise ValueError(f"--folds official: no official fold lists for {dataset}")
        unknown = sorted(present - set().union(*map(set, official)))
        if unknown:
            raise ValueError(
                f"--folds official: {len(unknown)} subject(s) are not in the official {dataset} "
                f"fold lists (protocol section 5): {' '.join(unknown[:12])}"
                + (" ..." if len(unknown) > 12 else "") + "; use --folds auto"
            )
    if mode is None and official:
        unknown = sorted(present - set().union(*map(set, official)))
        candidate = [sorted(s for s in part if s in present) for part in official]
        if synthetic:
            why = f"synthetic release ({SYNTH_META} in the root)"
        elif unknown:
            why = (f"{len(unknown)} subject(s) are not in the official {dataset} fold lists "
                   f"(e.g. {unknown[0]})")  # fmt: skip
        elif not all(candidate) and len(subjects) >= 3:
            why = "the official lists would leave a part without subjects"
        else:
            mode = "official"
    elif mode is None:
        why = f"no official fold lists for {dataset}"
    if mode == "official":
        parts_list = [sorted(s for s in part if s in present) for part in official]
        missing = sorted(set().union(*map(set, official)) - present)
        if missing:
            notice = (f"note: {len(missing)} subject(s) of the official {dataset} folds are not "
                      f"in the release: {' '.join(missing)}")  # fmt: skip
    else:
        if len(subjects) < 3:
            raise ValueError(f"{len(subjects)} subject(s): 3 subject-exclusive parts need at "
                             f"least 3 subjects ({why})")  # fmt: skip
        parts_list = [sorted(p) for p in _assign_parts(subjects, 3, seed)]
        assignment = "auto"
        notice = (f"notice: {why}: subjects assigned to 3 subject-exclusive parts with "
                  f"audet.data.folds.assign_parts(seed={seed}), not the official folds")  # fmt: skip
    parts = {f"part{i + 1}": p for i, p in enumerate(parts_list)}
    prefixes: dict[str, tuple[list[str], bool]] = {}
    for i in range(1, 4):
        prefixes[f"{dataset}_part{i}"] = ([f"part{i}"], False)
    folds = []
    for i, j, k in ((1, 2, 3), (1, 3, 2), (2, 3, 1)):
        prefixes[f"{dataset}_combine_{i}_{j}"] = ([f"part{i}", f"part{j}"], True)
        folds.append({"train": f"{dataset}_combine_{i}_{j}", "test": f"{dataset}_part{k}"})
    prefixes[f"{dataset}_all"] = (["part1", "part2", "part3"], True)
    return Partition(parts, prefixes, folds, assignment, notice,
                     {"seed": seed} if assignment == "auto" else {})  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


def _resolve_aus(release: Release, aus: Iterable[int] | None) -> tuple[int, ...]:
    from audet.facs import DATASET_AUS

    if not aus:
        return tuple(DATASET_AUS[release.name])
    out = tuple(int(a) for a in aus)
    if len(set(out)) != len(out):
        raise ValueError(f"--aus lists an AU twice: {out}")
    return out


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_prepare(opts: PrepareOptions) -> dict:
    """Prepare one release end to end (resumable). Returns the summary dict."""
    from audet.data.prepare import get_release

    release = get_release(opts.dataset)
    opts.dataset = release.name
    if opts.image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be jpg or png, got {opts.image_format!r}")
    if opts.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {opts.workers}")
    root = Path(opts.root).expanduser().resolve()
    out = Path(opts.out).expanduser().resolve()
    opts.root, opts.out = str(root), str(out)
    if not root.is_dir():
        raise LayoutError(f"--root {root} is not a directory; expected a {release.name} "
                          f"release: {release.layout}")  # fmt: skip
    aus = _resolve_aus(release, opts.aus)
    specs = sorted(release.discover(root, opts), key=lambda s: s.key)
    if not specs:
        raise LayoutError(f"no {release.name} sequences found under {root}; expected: "
                          f"{release.layout}")  # fmt: skip
    if len({s.key for s in specs}) != len(specs):
        raise RuntimeError("release reader produced duplicate sequence keys")  # pragma: no cover
    if release.needs_detector(specs, opts):
        from audet.data.prepare.landmarks import create_detector

        create_detector(opts.detector, **opts.detector_kwargs)  # fail fast with a clear error
    partition = release.partition(sorted({s.subject for s in specs}), specs, opts)
    if partition.notice:
        _log(partition.notice)

    shash = settings_hash(opts, aus)
    pending = [s for s in specs
               if opts.force or not _manifest_current(manifest_path(out, release.name, s), s, shash)]  # fmt: skip
    done_before = len(specs) - len(pending)
    _log(f"prepare {release.name}: {len(specs)} sequences from {root}"
         + (f" ({done_before} already done, resuming)" if done_before else "")
         + f"; {opts.workers} worker(s)")  # fmt: skip

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    written_now = 0
    if pending:
        written_now = _run_jobs(release, pending, aus, opts)
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0

    summary = assemble(release, specs, aus, partition, opts)
    _print_summary(summary)
    if pending:
        rate = written_now / elapsed if elapsed > 0 else float("nan")
        _log(f"processed {len(pending)} sequence(s), {written_now} frames in {elapsed:.1f} s "
             f"({rate:.1f} frames/s; {cpu:.1f} CPU-s)")  # fmt: skip
    _log(f"wrote {out / 'dataset.json'} and {out / 'prepare_summary.json'}")
    return summary


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers)."""
    try:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    except (ImportError, OSError):  # pragma: no cover - not Unix
        return float("nan")


def _run_jobs(release: Release, pending: list[SequenceSpec], aus: tuple[int, ...],
              opts: PrepareOptions) -> int:  # fmt: skip
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), unit="seq", desc=f"prepare {release.name}",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    written = 0
    finished = 0

    def _done(res: dict) -> None:
        nonlocal written, finished
        written += res["written"]
        finished += 1
        bar.update(1)
        bar.set_postfix(frames=written, refresh=False)
        if opts.stop_after is not None and finished >= opts.stop_after:
            raise PrepareInterrupted(f"stopped after {finished} sequence(s) (test hook)")

    try:
        if opts.workers == 1 or len(pending) == 1:
            import cv2

            _STATE["opts"] = opts
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # OpenCV's own threads cost more CPU than they save here
            try:
                for spec in pending:
                    _done(process_sequence(spec, release, opts, aus))
            finally:
                cv2.setNumThreads(threads)
        else:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            jobs = [(release.name, s, aus) for s in pending]
            with ctx.Pool(min(opts.workers, len(pending)), initializer=_init_worker,
                          initargs=(asdict(opts),)) as pool:  # fmt: skip
                for res in pool.imap_unordered(_worker, jobs, chunksize=1):
                    _done(res)
    finally:
        bar.close()
        _STATE.pop("detector", None)
    return written


# ---------------------------------------------------------------------------------------------
# Assembly: list files, dataset.json, prepare_summary.json (from manifests only)
# ---------------------------------------------------------------------------------------------


def assemble(release: Release, specs: Sequence[SequenceSpec], aus: Sequence[int],
             partition: Partition, opts: PrepareOptions) -> dict:  # fmt: skip
    from audet import __version__
    from audet.data.listfile import write_list

    out = Path(opts.out)
    per_subject: dict[str, list[dict]] = {}
    reasons: Counter = Counter()
    examples: dict[str, list[str]] = {}
    subj_counts: dict[str, dict[str, int]] = {}
    empty_sequences = []
    for spec in specs:  # sorted by key
        m = load_manifest(manifest_path(out, release.name, spec))
        if m is None:  # pragma: no cover - all were just written
            raise RuntimeError(f"manifest of {spec.key} missing after processing")
        per_subject.setdefault(spec.subject, []).append(m)
        c = subj_counts.setdefault(spec.subject, {"written": 0, "skipped": 0})
        c["written"] += len(m["paths"])
        c["skipped"] += len(m["skip_reasons"])
        if len(m["paths"]) == 0:
            empty_sequences.append(spec.key)
        for name, r in zip(m["skip_names"].tolist(), m["skip_reasons"].tolist()):
            reasons[r] += 1
            ex = examples.setdefault(r, [])
            if len(ex) < 10:
                ex.append(name)

    def rows_of(subjects: Iterable[str]):
        ms = [m for s in subjects for m in per_subject.get(s, [])]
        if not ms:
            return [], np.zeros((0, 49, 2)), np.zeros((0, len(aus)), np.int8)
        return ([p for m in ms for p in m["paths"].tolist()],
                np.concatenate([m["landmarks"] for m in ms]),
                np.concatenate([m["labels"] for m in ms]))  # fmt: skip

    list_dir = out / "list"
    written_prefixes: dict[str, dict] = {}
    for prefix, (part_names, is_train) in partition.prefixes.items():
        subjects = [s for p in part_names for s in partition.parts.get(p, [])]
        paths, lm, lab = rows_of(subjects)
        if not paths:
            _log(f"warning: {prefix} has no frames; its list files are not written")
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write_list(out, prefix, paths, lm, lab, write_weights=is_train)
        for w in caught:  # e.g. an AU without positives in a small training set
            _log(f"note: {prefix}: {w.message}")
        written_prefixes[prefix] = {"parts": part_names, "frames": len(paths),
                                    "subjects": len(subjects), "train": is_train}  # fmt: skip
    # list files of this dataset left by an earlier run with other parts
    if list_dir.is_dir():
        for f in sorted(list_dir.iterdir()):
            m = re.match(rf"^({re.escape(release.name)}_.+?)_(path|land|AUoccur|weight|p_n_weight)\.txt$", f.name)  # fmt: skip
            if m and m.group(1) not in written_prefixes:
                f.unlink()
    folds = [f for f in partition.folds
             if f.get("test") in written_prefixes
             and (f.get("train") in written_prefixes or f.get("train_dataset"))]  # fmt: skip
    dropped = [f for f in partition.folds if f not in folds]
    for f in dropped:
        _log(f"warning: fold {f} dropped (a prefix has no frames)")

    n_written = sum(c["written"] for c in subj_counts.values())
    n_skipped = sum(reasons.values())
    summary = {
        "dataset": release.name,
        "sequences": len(specs),
        "subjects": len(per_subject),
        "frames_written": n_written,
        "frames_skipped": n_skipped,
        "skipped_by_reason": dict(sorted(reasons.items())),
        "reason_descriptions": {r: SKIP_REASONS.get(r, r) for r in sorted(reasons)},
        "skipped_examples": {r: examples[r] for r in sorted(examples)},
        "sequences_without_frames": empty_sequences,
        "per_subject": dict(sorted(subj_counts.items())),
    }
    info = {
        "dataset": release.name,
        "aus": list(aus),
        "parts": partition.parts,
        "folds": folds,
        "fold_assignment": partition.assignment,
        **({"fold_notice": partition.notice} if partition.notice else {}),
        **partition.extra,
        "prefixes": written_prefixes,
        "images": "images",
        "image_format": opts.image_format,
        **({"jpeg_quality": opts.jpeg_quality} if opts.image_format == "jpg" else {}),
        "image_size": opts.size,
        "border": opts.border,
        "landmarks": "49 points (x, y), 0-based pixels of the aligned image",
        "alignment": "protocol section 2 (audet.geometry.align_face)",
        "source": {"root": opts.root, **release.source_info(opts)},
        "counts": {"subjects": len(per_subject), "sequences": len(specs),
                   "frames": n_written, "skipped": n_skipped},  # fmt: skip
        "summary": "prepare_summary.json",
        "audet_version": __version__,
    }
    write_json_atomic(out / "prepare_summary.json", summary)
    write_json_atomic(out / "dataset.json", info)
    return summary


def _print_summary(summary: dict) -> None:
    _log(f"{summary['dataset']}: {summary['frames_written']} frames written, "
         f"{summary['frames_skipped']} skipped "
         f"({summary['subjects']} subjects, {summary['sequences']} sequences)")  # fmt: skip
    for r, n in summary["skipped_by_reason"].items():
        _log(f"  skipped {n:>8d}  {r}: {SKIP_REASONS.get(r, '')}")
