"""Small helpers shared by the release readers: frame files, images, videos, labels."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from audet.data.prepare.types import IMAGE_EXTENSIONS

__all__ = [
    "frame_number",
    "list_frames",
    "read_image",
    "decode_image",
    "iter_video_frames",
    "file_signature",
    "find_dir",
    "binary_label_row",
    "au_from_header",
]

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
