"""List files of a prepared dataset: reader with validation, deterministic writer.

A prepared split ``<prefix>`` (e.g. ``BP4D_combine_1_2`` or ``BP4D_part3``) is a set of text
files with one line per frame (protocol section 4)::

    <prefix>_path.txt        BP4D/F001/T1/2440.jpg          (relative to the image root)
    <prefix>_land.txt        x1 y1 x2 y2 ... x49 y49         (98 floats, aligned 200x200 pixels)
    <prefix>_AUoccur.txt     0 1 0 9 ...                     (one 0/1 per AU, 9 = missing)

plus two per-AU files (training prefixes; ``A`` values, one per line as ``numpy.savetxt`` writes
a vector, which is what the published code reads back with ``numpy.loadtxt``)::

    <prefix>_weight.txt      w_j = (1/r_j) / sum_k(1/r_k) * J
    <prefix>_p_n_weight.txt  (N_j - P_j) / P_j

(r_j = P_j / N_j over the frames where AU j is known). The values are those of AC2D Eq. 14 from
:func:`audet.losses.au_weights` (``scale="list"``), the single implementation shared with the
training loss, including its guard for an AU without a positive frame (docs/data.md).

Files live in ``OUT/list/`` of a prepared directory ``OUT`` (images under ``OUT/images``) or in a
plain directory of text files (the published code's ``data/list/``), in which case the image
root must be given (or is the sibling ``../images`` folder when that exists).

Mismatched line counts between these files silently corrupted training in the published code, so
:func:`read_list` checks everything and raises :class:`ListFileError` naming the file, the 1-based
line number and the offending token.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from audet.utils.io import write_text_atomic

__all__ = [
    "ListFiles",
    "ListFileError",
    "PathInfo",
    "parse_path",
    "list_dir_and_image_root",
    "read_list",
    "write_list",
    "SUFFIXES",
]

#: File name suffixes of one prefix: required (one line per frame) and optional (one value per AU).
SUFFIXES = {"path": "_path.txt", "land": "_land.txt", "labels": "_AUoccur.txt"}
WEIGHT_SUFFIXES = {"au_weight": "_weight.txt", "pos_weight": "_p_n_weight.txt"}

NUM_POINTS = 49
_LAND_FMT = "%.4f"
_WEIGHT_FMT = "%.6f"
_VALID_LABELS = (0, 1, 9)


class ListFileError(ValueError):
    """A malformed list file; the message names the file, the 1-based line and the token."""


@dataclass(frozen=True)
class PathInfo:
    """Identity of a frame parsed from its relative path ``<dataset>/<subject>/<seq...>/<frame>.<ext>``."""

    dataset: str
    subject: str
    sequence: str  # all parts between dataset and file, joined with "/" (the subject if none)
    frame: int


_FRAME_RE = re.compile(r"(\d+)$")


def parse_path(path: str) -> PathInfo:
    """Parse ``BP4D/F001/T1/2440.jpg`` -> ``PathInfo("BP4D", "F001", "F001/T1", 2440)``.

    The frame number is the integer formed by the trailing digits of the file stem
    (``2440.jpg`` -> 2440, ``frame_0012.png`` -> 12). Raises ValueError when the path has fewer
    than three parts (dataset, subject, file) or its stem does not end in digits.
    """
    parts = [p for p in str(path).replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 3:
        raise ValueError(f"path {path!r} is not <dataset>/<subject>/[<sequence>/]<frame>.<ext>")
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    m = _FRAME_RE.search(stem)
    if m is None:
        raise ValueError(f"path {path!r}: file name {parts[-1]!r} has no frame number (digits at the end of the stem)")
    return PathInfo(parts[0], parts[1], "/".join(parts[1:-1]), int(m.group(1)))


@dataclass
class ListFiles:
    """The validated contents of one prefix.

    Attributes:
        paths: relative image paths, one per frame.
        landmarks: float32 ``(N, 49, 2)`` in aligned-image pixels (x, y).
        labels: int8 ``(N, A)``: 0/1, 9 = missing.
        au_weight, pos_weight: float32 ``(A,)`` from ``_weight.txt`` / ``_p_n_weight.txt`` when present.
        image_root: folder the paths are relative to (None if unknown).
        prefix: the prefix these files were read from.
    """

    paths: list[str]
    landmarks: np.ndarray
    labels: np.ndarray
    au_weight: np.ndarray | None = None
    pos_weight: np.ndarray | None = None
    image_root: Path | None = None
    prefix: str = ""
    _info: list[PathInfo] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_aus(self) -> int:
        return int(self.labels.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """float32 ``(N, A)``: 1 where the label is known (0 or 1), 0 where it is 9."""
        return (self.labels != 9).astype(np.float32)

    @property
    def info(self) -> list[PathInfo]:
        """:class:`PathInfo` of every path (parsed once)."""
        if self._info is None:
            self._info = [parse_path(p) for p in self.paths]
        return self._info

    def image_path(self, i: int) -> Path:
        if self.image_root is None:
            raise ValueError("these list files have no image root; pass image_root=")
        return self.image_root / self.paths[i]


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


def list_dir_and_image_root(root, prefix: str, image_root=None) -> tuple[Path, Path | None]:
    """Where the text files of ``prefix`` are, and the default image root.

    ``root`` is a prepared directory (``root/list/<prefix>_path.txt``, images in ``root/images``)
    or a plain directory holding ``<prefix>_path.txt`` directly (images in ``image_root``, or in
    ``root/../images`` when that folder exists).
    """
    root = Path(root)
    if (root / "list" / f"{prefix}{SUFFIXES['path']}").exists():
        list_dir, default_images = root / "list", root / "images"
    elif (root / f"{prefix}{SUFFIXES['path']}").exists():
        list_dir = root
        default_images = root.parent / "images" if (root.parent / "images").is_dir() else None
    else:
        raise ListFileError(
            f"{prefix}{SUFFIXES['path']}: file not found in {root / 'list'} nor in {root}"
        )
    img = Path(image_root) if image_root is not None else default_images
    return list_dir, img


def _read_lines(path: Path) -> list[str]:
    """Lines of a text file without the final newline(s); tolerates CRLF and a trailing blank line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ListFileError(f"{path.name}: file not found ({path})") from None
    except UnicodeDecodeError as exc:
        raise ListFileError(f"{path.name}: not a text file ({exc})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    return text.split("\n") if text else []


def _fmt_token(tok: str) -> str:
    return tok if len(tok) <= 40 else tok[:37] + "..."


def _parse_floats(name: str, lines: list[str], width: int) -> np.ndarray:
    """Parse lines of exactly ``width`` finite floats into a float64 ``(N, width)`` array."""
    rows = [line.split() for line in lines]
    for i, toks in enumerate(rows):
        if len(toks) != width:
            raise ListFileError(f"{name} line {i + 1}: {len(toks)} values, expected {width}")
    flat = [t for toks in rows for t in toks]
    try:
        arr = np.array(flat, dtype=np.float64).reshape(len(rows), width) if flat else np.zeros((0, width))
    except ValueError:
        arr = None
    if arr is None:  # locate the token that does not parse (slow path, only on error)
        for i, toks in enumerate(rows):
            for tok in toks:
                try:
                    float(tok)
                except ValueError:
                    raise ListFileError(f"{name} line {i + 1}: {_fmt_token(tok)!r} is not a number") from None
        raise ListFileError(f"{name}: could not parse the values")  # pragma: no cover
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ListFileError(f"{name} line {i + 1}: value {j + 1} is {rows[i][j]!r}, not a finite number")
    return arr


def _parse_labels(name: str, lines: list[str], num_aus: int | None) -> np.ndarray:
    rows = [line.split() for line in lines]
    if rows:
        width = len(rows[0]) if num_aus is None else num_aus
        for i, toks in enumerate(rows):
            if len(toks) != width:
                why = f"expected {width} (the number of AUs)" if num_aus is not None else f"line 1 has {width}"
                raise ListFileError(f"{name} line {i + 1}: {len(toks)} labels, {why}")
        if width == 0:
            raise ListFileError(f"{name} line 1: no labels")
    else:
        width = num_aus or 0
    flat = [t for toks in rows for t in toks]
    try:
        vals = np.array(flat, dtype=np.float64).reshape(len(rows), width) if flat else np.zeros((0, width))
        ok = np.isin(vals, _VALID_LABELS)
    except ValueError:
        ok = None
    if ok is None or not ok.all():
        for i, toks in enumerate(rows):
            for tok in toks:
                try:
                    v = float(tok)
                except ValueError:
                    v = None
                if v not in _VALID_LABELS:
                    raise ListFileError(f"{name} line {i + 1}: label {_fmt_token(tok)} is not 0, 1 or 9")
    return vals.astype(np.int8)


def _read_vector(path: Path, num_aus: int) -> np.ndarray:
    """A per-AU weight file: ``num_aus`` finite floats, one per line (or on one line)."""
    lines = _read_lines(path)
    toks = [(i + 1, t) for i, line in enumerate(lines) for t in line.split()]
    if len(toks) != num_aus:
        raise ListFileError(f"{path.name} line {len(lines)}: {len(toks)} values in the file, expected {num_aus} (one per AU)")
    out = np.empty(num_aus, dtype=np.float32)
    for k, (ln, t) in enumerate(toks):
        try:
            v = float(t)
        except ValueError:
            raise ListFileError(f"{path.name} line {ln}: {_fmt_token(t)!r} is not a number") from None
        if not math.isfinite(v):
            raise ListFileError(f"{path.name} line {ln}: weight {t!r} is not finite")
        out[k] = v
    return out


def read_list(
    root,
    prefix: str,
    *,
    image_root=None,
    check_images: bool = True,
    aus: Sequence[int] | None = None,
) -> ListFiles:
    """Read and validate the list files of ``prefix``.

    Args:
        root: a prepared directory (``root/list/<prefix>_*.txt``, images in ``root/images``) or a
            plain directory holding ``<prefix>_*.txt`` (see :func:`list_dir_and_image_root`).
        prefix: e.g. ``"BP4D_combine_1_2"``.
        image_root: folder the relative paths resolve against (overrides the default).
        check_images: check that every image file exists (``os.path.exists``, no decoding).
        aus: if given, every label line must have ``len(aus)`` values.

    Checks: the three per-frame files exist and have equal line counts; each path parses as
    ``<dataset>/<subject>/[<sequence>/]<frame>.<ext>``; each landmark line has exactly 98 finite
    floats; labels are only 0, 1 or 9 with a constant count per line; optional weight files
    have one finite value per AU; images exist (if ``check_images``).

    Raises:
        ListFileError: naming the file, the 1-based line number and the offending token.
    """
    list_dir, img_root = list_dir_and_image_root(root, prefix, image_root)
    files = {k: list_dir / f"{prefix}{s}" for k, s in SUFFIXES.items()}
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise ListFileError(f"{', '.join(missing)}: file not found in {list_dir}")
    lines = {k: _read_lines(p) for k, p in files.items()}

    counts = {files[k].name: len(v) for k, v in lines.items()}
    if len(set(counts.values())) > 1:
        # name the file that disagrees with the others (two agree), else the shortest one
        freq = {c: list(counts.values()).count(c) for c in counts.values()}
        odd = min(counts, key=lambda n: (freq[counts[n]], counts[n]))
        ref = max(c for n, c in counts.items() if n != odd and freq[c] == max(freq.values()))
        detail = ", ".join(f"{n} has {c} lines" for n, c in counts.items())
        if counts[odd] > ref:
            where = f"{odd} line {ref + 1}: extra line"
        else:
            where = f"{odd} line {counts[odd] + 1}: missing"
        raise ListFileError(f"{where} (line counts differ: {detail})")
    if counts[files["path"].name] == 0:
        raise ListFileError(f"{files['path'].name}: empty file (no frames)")

    # paths
    pname = files["path"].name
    paths: list[str] = []
    info: list[PathInfo] = []
    for i, line in enumerate(lines["path"]):
        p = line.strip()
        if not p:
            raise ListFileError(f"{pname} line {i + 1}: empty path")
        if p.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", p):
            raise ListFileError(f"{pname} line {i + 1}: path {p!r} must be relative to the image root")
        try:
            info.append(parse_path(p))
        except ValueError as exc:
            raise ListFileError(f"{pname} line {i + 1}: {exc}") from None
        paths.append(p)

    land = _parse_floats(files["land"].name, lines["land"], 2 * NUM_POINTS)
    landmarks = land.astype(np.float32).reshape(-1, NUM_POINTS, 2)
    labels = _parse_labels(files["labels"].name, lines["labels"], None if aus is None else len(aus))
    num_aus = labels.shape[1]

    weights = {}
    for key, suffix in WEIGHT_SUFFIXES.items():
        p = list_dir / f"{prefix}{suffix}"
        weights[key] = _read_vector(p, num_aus) if p.exists() else None

    if check_images:
        if img_root is None:
            raise ListFileError(
                f"{pname}: cannot check images: no image root (pass image_root= or check_images=False)"
            )
        base = str(img_root)
        for i, p in enumerate(paths):
            if not os.path.exists(os.path.join(base, p)):
                raise ListFileError(f"{pname} line {i + 1}: image {p!r} not found under {img_root}")

    return ListFiles(
        paths=paths,
        landmarks=landmarks,
        labels=labels,
        au_weight=weights["au_weight"],
        pos_weight=weights["pos_weight"],
        image_root=img_root,
        prefix=prefix,
        _info=info,
    )


# ------------------------------------------------------------------------------------------
# Weights and writing
# ------------------------------------------------------------------------------------------


def _check_path_for_writing(i: int, p: str) -> str:
    p = str(p).replace("\\", "/")
    if not p or any(c in p for c in "\n\r") or p != p.strip():
        raise ValueError(f"path {i}: {p!r} is empty or has surrounding whitespace/newlines")
    if p.startswith("/"):
        raise ValueError(f"path {i}: {p!r} must be relative to the image root")
    parse_path(p)
    return p


def write_list(root, prefix: str, paths: Sequence[str], landmarks, labels, write_weights: bool = True) -> dict[str, Path]:
    """Write the list files of ``prefix`` into ``root/list/`` atomically and deterministically.

    Args:
        root: the prepared directory (files go to ``root/list/``; images are expected under
            ``root/images/`` but are not written here).
        paths: N relative image paths.
        landmarks: ``(N, 49, 2)`` or ``(N, 98)`` finite floats, written as ``%.4f``.
        labels: ``(N, A)`` integers in {0, 1, 9}, written as ``%d``.
        write_weights: also write ``_weight.txt`` and ``_p_n_weight.txt`` (``%.6f``, one value per
            line): the published format, ``w_j * J`` and ``v_j`` of AC2D Eq. 14 as computed by
            :func:`audet.losses.au_weights` with ``scale="list"`` (the one implementation; its
            guards for an AU without a positive frame apply, with an ``AUWeightWarning``).

    Returns:
        ``{kind: path}`` of the files written. Inputs are validated before anything is written.
    """
    paths = [_check_path_for_writing(i, p) for i, p in enumerate(paths)]
    n = len(paths)
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape not in ((n, NUM_POINTS, 2), (n, 2 * NUM_POINTS)):
        raise ValueError(f"landmarks must be ({n}, 49, 2) or ({n}, 98), got {lm.shape}")
    lm = lm.reshape(n, 2 * NUM_POINTS)
    if not np.isfinite(lm).all():
        raise ValueError(f"landmarks of frame {int(np.argwhere(~np.isfinite(lm))[0, 0])} are not finite")
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[0] != n or lab.shape[1] == 0:
        raise ValueError(f"labels must be ({n}, A), got {lab.shape}")
    if not np.isin(lab, _VALID_LABELS).all():
        raise ValueError(f"labels must be 0, 1 or 9; found {sorted(set(np.unique(lab).tolist()) - set(_VALID_LABELS))}")
    lab = lab.astype(np.int64)

    list_dir = Path(root) / "list"
    out = {k: list_dir / f"{prefix}{s}" for k, s in SUFFIXES.items()}
    lm = lm + 0.0  # no "-0.0000"
    texts = {
        "path": "".join(p + "\n" for p in paths),
        "land": "".join(" ".join(_LAND_FMT % v for v in row) + "\n" for row in np.round(lm, 4) + 0.0),
        "labels": "".join(" ".join(str(v) for v in row) + "\n" for row in lab.tolist()),
    }
    if write_weights:
        from audet.losses import au_weights  # torch only when weights are written

        w, pos = au_weights(lab, scale="list")
        for k, vec in (("au_weight", w), ("pos_weight", pos)):
            out[k] = list_dir / f"{prefix}{WEIGHT_SUFFIXES[k]}"
            texts[k] = "".join(_WEIGHT_FMT % v + "\n" for v in vec)
    for k, text in texts.items():
        write_text_atomic(out[k], text)
    return out
