"""Per-sequence processing of ``audet prepare`` (runs in the worker processes) and manifests.

:func:`process_sequence` checks, aligns and writes the frames of one sequence, then writes its
manifest ``OUT/.prepare/<DATASET>/<key>.npz`` atomically: the commit point of the sequence.
:func:`_init_worker` and :func:`_worker` are the ``multiprocessing`` pool's initializer and task.
"""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audet.data.prepare.release import Release, get_release
from audet.data.prepare.types import (
    DELAY_ENV,
    DETECT,
    MANIFEST_VERSION,
    FrameItem,
    PrepareOptions,
    SequenceSpec,
)
from audet.utils.io import write_bytes_atomic

__all__ = ["process_sequence", "settings_hash", "manifest_path", "load_manifest"]

_STATE: dict[str, Any] = {}


def _init_worker(opts_dict: dict) -> None:
    """Pool initializer. Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the
    main process alone stops the run (leaving the pool terminates it), so an interrupted
    ``audet prepare`` ends with one line instead of a BrokenPipe traceback per worker."""
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    cv2.setNumThreads(1)
    _STATE.clear()
    _STATE["opts"] = PrepareOptions(**opts_dict)


def _detector(opts: PrepareOptions):
    det = _STATE.get("detector")
    if det is None:
        from audet.data.prepare.landmarks import create_landmarker

        det = create_landmarker(opts.detector, **opts.detector_kwargs)
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
    manifest = manifest_path(out, release.name, spec)
    for stale in manifest.parent.glob(f".{manifest.name}.*.tmp"):  # a manifest write cut by a killed run
        stale.unlink(missing_ok=True)
    write_bytes_atomic(manifest, buf.getvalue())
    return {"key": spec.key, "written": len(paths), "skipped": len(skip_names)}


def _worker(job: tuple[str, SequenceSpec, tuple[int, ...]]) -> dict:
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
