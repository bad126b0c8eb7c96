"""BP4D-Spontaneous (Zhang et al. 2014): 41 subjects x 8 tasks, 12 AUs, 49 tracked landmarks.

Layout read (``RAW`` = ``--raw``; see ``docs/datasets.md`` for sources and assumptions)::

    RAW/BP4D-training/<subject>/<task>/<frame>.jpg   frames, e.g. F001/T1/2440.jpg
    RAW/AUCoding/AU_OCC/<subject>_<task>.csv         header row, then one row per coded frame
    RAW/2DFeatures/<subject>_<task>.mat              variable ``fit``: 1 x n struct, field ``pred``

* Frames: file stem = frame number, with or without zero padding; ``.jpg``/``.jpeg``/``.png``/
  ``.bmp``. Output names are zero-padded to 4 digits (``0721.jpg``), as in the release and the
  published list files.
* AU_OCC: the first column is the frame number (its header is ``0`` or any text), every other
  column header is an AU number (``1``, ``AU01``, ...); values 0/1, 9 = unknown (anything else is
  read as unknown). Images without a row are skipped as ``not_annotated``.
* 2DFeatures: entry k of ``fit`` belongs to the k-th image of the task's frame list sorted by
  frame number; ``pred`` is ``n_points x 2`` (x, y), 1-based pixels; 49 points in the release
  (68 or 66 accepted, converted with :func:`audet.facs.to_49`); an empty ``pred`` means the
  tracker lost the face (frame skipped as ``no_landmarks``).
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from audet.data.prepare.readers import (
    au_from_header,
    binary_label_row,
    file_signature,
    find_dir,
    list_frames,
    read_image,
)
from audet.data.prepare.release import Release
from audet.data.prepare.types import (
    DETECT,
    FrameItem,
    LayoutError,
    PrepareOptions,
    SequenceSpec,
)

__all__ = ["BP4DRelease", "read_au_occ", "read_fit_mat"]

logger = logging.getLogger(__name__)


def read_au_occ(path: str | os.PathLike, aus: Sequence[int]) -> tuple[dict[int, np.ndarray], list[int]]:
    """Read an AU_OCC csv -> ``({frame: (A,) int8 0/1/9}, AUs absent from the file)``.

    Raises ValueError when the file has no header or no frame column.
    """
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{path}: empty AU_OCC file")
    header = rows[0]
    col_of = {}
    for j, h in enumerate(header[1:], start=1):
        au = au_from_header(h)
        if au is not None and au not in col_of:
            col_of[au] = j
    if not col_of:
        raise ValueError(f"{path}: header has no AU columns: {header[:5]}")
    absent = [a for a in aus if a not in col_of]
    cols = [col_of.get(a) for a in aus]
    out: dict[int, np.ndarray] = {}
    for r in rows[1:]:
        try:
            frame = int(float(r[0]))
        except ValueError:
            continue  # a repeated header or a comment line
        out[frame] = binary_label_row(r, cols, len(aus))
    return out, absent


def _pred_array(p) -> np.ndarray | None:
    arr = np.asarray(p)
    if arr.dtype == object:
        if arr.size != 1:
            return None
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size == 0:
        return None
    arr = arr.astype(np.float64)
    if arr.ndim == 2 and arr.shape[1] != 2 and arr.shape[0] == 2:
        arr = arr.T
    return arr


def read_fit_mat(path: str | os.PathLike) -> list[np.ndarray | None]:
    """Read a 2DFeatures ``.mat`` -> one ``(P, 2)`` array (or None for an empty ``pred``) per entry.

    Raises ValueError for a file without a ``fit`` struct array with a ``pred`` field.
    """
    from scipy.io import loadmat

    try:
        m = loadmat(str(path), squeeze_me=False, struct_as_record=True)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: MATLAB v7.3 files are not supported ({exc})") from None
    if "fit" not in m:
        raise ValueError(f"{path}: no variable 'fit' (found {sorted(k for k in m if not k.startswith('__'))})")
    fit = m["fit"]
    if fit.dtype.names is None or "pred" not in fit.dtype.names:
        raise ValueError(f"{path}: 'fit' has no field 'pred'")
    return [_pred_array(p) for p in fit["pred"].reshape(-1)]


class BP4DRelease(Release):
    name = "BP4D"
    one_based = True
    #: Whether a missing 2DFeatures folder (without --landmarker) is a layout error.
    landmarks_required = True
    image_dirs = ("BP4D-training", "BP4D_training", "BP4D-Training")
    layout = ("RAW/BP4D-training/<subject>/<task>/<frame>.jpg, "
              "RAW/AUCoding/AU_OCC/<subject>_<task>.csv and RAW/2DFeatures/<subject>_<task>.mat")  # fmt: skip

    # -- discovery ---------------------------------------------------------------------------

    def _label_dir(self, root: Path) -> Path | None:
        return find_dir(root, "AUCoding/AU_OCC", "AU_OCC", "AUCoding")

    def _image_sources(self, root: Path) -> dict[tuple[str, str], str]:
        img_root = find_dir(root, *self.image_dirs)
        out = {}
        if img_root is None:
            return out
        for subj in sorted(os.listdir(img_root)):
            sdir = img_root / subj
            if not sdir.is_dir() or subj.startswith("."):
                continue
            for task in sorted(os.listdir(sdir)):
                if (sdir / task).is_dir() and not task.startswith("."):
                    out[(subj, task)] = str(sdir / task)
        return out

    def _missing_layout(self, root: Path, what: list[str]) -> LayoutError:
        return LayoutError(
            f"{root} does not look like a {self.name} release (missing: {', '.join(what)}); "
            f"expected {self.layout}"
        )

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        label_dir = self._label_dir(root)
        images = self._image_sources(root)
        lm_dir = find_dir(root, "2DFeatures", "2D_Features")
        missing = []
        if not images:
            missing.append(f"{self.image_dirs[0]}/<subject>/<task>/")
        if label_dir is None:
            missing.append("AUCoding/AU_OCC/")
        if lm_dir is None and not opts.detector and self.landmarks_required:
            missing.append("2DFeatures/ (or pass --landmarker)")
        if missing:
            raise self._missing_layout(root, missing)
        labels = {}
        for f in sorted(os.listdir(label_dir)):
            stem, ext = os.path.splitext(f)
            if ext.lower() == ".csv" and "_" in stem:
                subj, task = stem.split("_", 1)
                labels[(subj, task)] = str(label_dir / f)
        if not labels:
            raise self._missing_layout(root, ["AUCoding/AU_OCC/<subject>_<task>.csv files"])
        ignored = sorted(set(images) - set(labels))
        if ignored:
            logger.warning(f"note: {len(ignored)} image folder(s) without an AU_OCC file are not part of "
                           f"the benchmark and are ignored (e.g. {'/'.join(ignored[0])})")  # fmt: skip
        specs = []
        for (subj, task), csv_path in sorted(labels.items()):
            img = images.get((subj, task), "")
            mat = ""
            if lm_dir is not None:
                for ext in (".mat", ".MAT"):
                    if (lm_dir / f"{subj}_{task}{ext}").is_file():
                        mat = str(lm_dir / f"{subj}_{task}{ext}")
                        break
            data = (("images", img), ("labels", csv_path), ("landmarks", mat))
            specs.append(SequenceSpec(subj, (task,), data, file_signature(img, csv_path, mat)))
        return specs

    def needs_detector(self, specs, opts) -> bool:
        return any(not s.get("landmarks") for s in specs) and bool(opts.detector)

    # -- frames ------------------------------------------------------------------------------

    def _frames(self, spec: SequenceSpec) -> tuple[list[tuple[int, object]], list[int]]:
        """``([(frame number, loader)], duplicate numbers)`` sorted by frame number."""
        frames, dups = list_frames(spec.get("images")) if spec.get("images") else ([], [])
        return [(n, (lambda p=p: read_image(p))) for n, p in frames], [n for n, _ in dups]

    def coded_aus(self, spec: SequenceSpec) -> list[int] | None:
        """The AU columns of the sequence's AU_OCC header (None when it cannot be read)."""
        path = spec.get("labels")
        try:
            with open(path, newline="") as f:
                header = next(csv.reader(f), [])
        except (OSError, TypeError, UnicodeDecodeError):
            return None
        coded = [au_from_header(h) for h in header[1:]]
        return sorted({a for a in coded if a is not None}) or None

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        frames, dups = self._frames(spec)
        name = lambda n: f"{n:04d}"  # noqa: E731
        try:
            labels, _ = read_au_occ(spec.get("labels"), aus)
        except (OSError, ValueError):
            for n, _ in frames:
                yield FrameItem(name(n), n, skip="label_file_unreadable")
            return
        lm_path = spec.get("landmarks")
        lms: list | None = None
        lm_skip = None
        if lm_path:
            try:
                lms = read_fit_mat(lm_path)
            except (OSError, ValueError):
                lm_skip = "landmark_file_unreadable"
        for k, (n, loader) in enumerate(frames):
            lab = labels.get(n)
            if lms is not None:
                lm = lms[k] if k < len(lms) else None
            elif lm_skip is None and opts.detector:
                lm = DETECT
            else:
                lm = None
            yield FrameItem(name(n), n, labels=lab, landmarks=lm, image=loader,
                            one_based=self.one_based,
                            skip=lm_skip if lab is not None else None)  # fmt: skip
        for n in dups:
            yield FrameItem(name(n) + "_dup", n, skip="duplicate_frame")
        have = {n for n, _ in frames}
        for n in sorted(set(labels) - have):
            yield FrameItem(name(n), n, skip="missing_image")
