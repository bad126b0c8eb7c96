"""A toy prepared directory for tests and benchmarks: valid files, drawn faces, random labels.

:func:`make_toy_prepared` writes what ``audet prepare`` writes (JPEG crops, list files with
weights for the training prefixes, ``dataset.json`` with folds) in a fraction of a second; it is
not ``audet synth`` (no AU appearance, labels are random). :func:`toy_landmarks` is its frontal
49-point template.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["toy_landmarks", "make_toy_prepared"]


# A frontal 49-point face in aligned 200x200 coordinates, image-left half only (x < 99.5);
# the image-right half is its mirror image about x = 99.5. Indices follow the 49-point layout
# (68-point iBUG without the jaw and the two inner-mouth corners).
_HALF = {
    # brow on the image left (68-pt 17..21) and its mirror (22..26)
    0: (52, 64), 1: (61, 58), 2: (71, 56), 3: (81, 57), 4: (90, 60),
    # nose bridge (27..30), on the midline
    10: (99.5, 80), 11: (99.5, 92), 12: (99.5, 104), 13: (99.5, 115),
    # nose base (31..35): 31, 32 left, 33 midline
    14: (86, 122), 15: (93, 125), 16: (99.5, 127),
    # eye on the image left (36..41): outer corner 36, inner corner 39
    19: (62, 85), 20: (70, 80), 21: (80, 80), 22: (88, 86), 23: (80, 89), 24: (70, 89),
    # outer lips (48..59): 48 corner, 51 top midline, 57 bottom midline
    31: (76, 150), 32: (84, 144), 33: (93, 141), 34: (99.5, 143),
    40: (99.5, 161), 41: (93, 160), 42: (84, 157),
    # inner lips (61..63, 65..67)
    43: (90, 148), 44: (99.5, 149), 48: (90, 152), 47: (99.5, 153),
}


def toy_landmarks() -> np.ndarray:
    """A symmetric frontal 49-point face template ``(49, 2)`` float32 in aligned 200x200 pixels."""
    from audet.facs import MIRROR_49

    pts = np.full((49, 2), np.nan)
    for i, xy in _HALF.items():
        pts[i] = xy
    for i in range(49):
        j = int(MIRROR_49[i])
        if np.isnan(pts[i, 0]) and not np.isnan(pts[j, 0]):
            pts[i] = (199.0 - pts[j, 0], pts[j, 1])
    assert np.isfinite(pts).all(), np.argwhere(~np.isfinite(pts))
    return pts.astype(np.float32)


def _draw_face(rng: np.random.Generator, lm: np.ndarray, size: int, tint: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 128 + 40 * np.sin(xx / (11 + 7 * rng.random())) * np.cos(yy / (13 + 5 * rng.random()))
    img = np.repeat(base[..., None], 3, axis=2)
    img = cv2.ellipse(img, (100, 105), (62, 82), 0, 0, 360, tuple(float(c) for c in tint), -1)
    pts = np.round(lm).astype(np.int32)
    for group in ((0, 5), (5, 10), (19, 25), (25, 31), (31, 43), (10, 14), (14, 19)):
        cv2.polylines(img, [pts[group[0]:group[1]]], group[0] >= 19, (40.0, 30.0, 30.0), 2)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_toy_prepared(
    root,
    *,
    dataset: str = "SYNTH",
    aus: Sequence[int] = (1, 2, 4, 6, 12, 25),
    n_subjects: int = 6,
    n_sequences: int = 2,
    n_frames: int = 6,
    n_parts: int = 3,
    missing_rate: float = 0.05,
    image_size: int = 200,
    seed: int = 0,
    jpeg_quality: int = 90,
    subject_prefix: str = "S",
) -> dict:
    """Write a small but valid prepared directory (for tests and benchmarks; NOT ``audet synth``).

    Layout: ``root/images/<dataset>/S<k>/T<j>/<frame>.jpg`` (frame numbers start at a random
    offset and step by 1), ``<dataset>_part<p>`` lists for ``n_parts`` subject-exclusive parts
    (:func:`audet.data.folds.assign_parts`), the fold training lists
    ``<dataset>_combine_<a>_<b>`` (with weights) and ``root/dataset.json`` with ``folds`` in the
    order of :func:`audet.data.folds.fold_prefixes`. Landmarks are a jittered template,
    labels random with ``missing_rate`` of 9s. Subjects are ``<subject_prefix><k>`` (``S001``, ...).

    Returns the ``dataset.json`` content.
    """
    from audet.data.folds import assign_parts, fold_parts
    from audet.data.listfile import write_list
    from audet.data.meta import DATASET_META
    from audet.utils.io import write_bytes_atomic, write_json_atomic

    root = Path(root)
    rng = np.random.default_rng(seed)
    template = toy_landmarks() * (image_size / 200.0)
    subjects = [f"{subject_prefix}{k + 1:03d}" for k in range(n_subjects)]
    rows: dict[str, list] = {s: [] for s in subjects}
    A = len(aus)
    for s in subjects:
        tint = rng.uniform(120, 220, 3)
        shift = rng.normal(0, 2, 2)
        for j in range(n_sequences):
            start = int(rng.integers(1, 500))
            for f in range(start, start + n_frames):
                lm = template + shift + rng.normal(0, 0.7, template.shape)
                rel = f"{dataset}/{s}/T{j + 1}/{f}.jpg"
                img = _draw_face(rng, lm, image_size, tint)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                assert ok
                write_bytes_atomic(root / "images" / rel, buf.tobytes())
                lab = (rng.random(A) < 0.35).astype(np.int8)
                lab[rng.random(A) < missing_rate] = 9
                rows[s].append((rel, lm, lab))
        # every subject gets a known positive of every AU (finite weights for any subject subset)
        labs = np.stack([r[2] for r in rows[s]])
        for a in np.nonzero(~(labs == 1).any(axis=0))[0]:
            rows[s][0][2][a] = 1
    parts = assign_parts(subjects, n_parts, seed=seed) if n_parts > 1 else [sorted(subjects)]

    def _write(prefix: str, subs: Sequence[str], weights: bool) -> None:
        sel = [r for s in subs for r in rows[s]]
        labs = np.stack([r[2] for r in sel])
        write_list(root, prefix, [r[0] for r in sel], np.stack([r[1] for r in sel]), labs, write_weights=weights)

    for p, subs in enumerate(parts, start=1):
        _write(f"{dataset}_part{p}", subs, weights=False)
    folds = []
    if n_parts > 1:
        for k in range(n_parts):
            train, test = fold_parts(n_parts, k)
            prefix = f"{dataset}_combine_{'_'.join(map(str, train))}"
            _write(prefix, [s for p in train for s in parts[p - 1]], weights=True)
            folds.append({"train": prefix, "test": f"{dataset}_part{test}"})
    meta = {
        "dataset": dataset,
        "aus": [int(a) for a in aus],
        "parts": {f"part{p}": subs for p, subs in enumerate(parts, start=1)},
        "folds": folds,
        "image_size": image_size,
        "toy": True,
    }
    write_json_atomic(root / DATASET_META, meta)
    return meta
