"""``AUDataset``: frames or clips of a prepared dataset, as the batch dict of docs/architecture.md.

One sample (the DataLoader stacks them)::

    image       float32 (3, H, W), or (T, 3, H, W) for clips
    labels      float32 (A,) 0/1 (missing labels are 0 here and masked), (T, A) for runs
    mask        float32 (A,) 1 where the label is known, 0 where the list file says 9
    landmarks   float32 (49, 2) in the returned image's pixels (after crop/flip), (T, 49, 2) for clips
    subcenters  float32 (A, 2, 2) audet.facs.au_subcenters of those landmarks, (T, A, 2, 2) for clips
    subject, sequence, frame, index   int64 (indices into dataset.subjects / dataset.sequences,
                the frame number and the list row of the (centre) frame)

Clip sampling (``clip=``) for the temporal models:

- ``{"offsets": [-T, 0, T]}``: frames t-T, t, t+T of the same sequence, by frame NUMBER (AUNet's
  neighbour frames t-10, t+10). A neighbour missing from the list is replaced by the nearest
  listed frame of the sequence on that side (at the sequence ends, by the end frame). One sample
  per list row; labels, mask, landmarks and sub-centres are those of the offset-0 frame, and
  ``clip_landmarks`` (T, 49, 2) holds every frame's landmarks.
- ``{"length": t, "stride": s, "windows": "sliding"|"disjoint"}``: runs of t consecutive listed
  frames of one sequence (every s-th listed frame). ``sliding`` (default) starts a run at every
  listed frame that has a full run after it; ``disjoint`` tiles each sequence with
  non-overlapping runs (the tail shorter than t is dropped). Labels, mask, landmarks and
  sub-centres are per frame: (T, ...).

A missing or corrupt image raises :class:`audet.data.images.ImageReadError` naming the path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from audet.data.images import read_image
from audet.data.listfile import ListFiles, read_list
from audet.data.transforms import EvalTransform
from audet.facs import DATASET_AUS, au_subcenters

__all__ = ["AUDataset", "data_aus"]


def data_aus(root, num_aus: int | None = None, dataset: str | None = None) -> list[int] | None:
    """The AU numbers of a prepared directory's label columns (``dataset.json`` ``aus``), or of a
    known dataset name; None when unknown."""
    meta_path = Path(root) / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("aus"):
            return [int(a) for a in meta["aus"]]
        dataset = dataset or meta.get("dataset")
    if dataset:
        for key, aus in DATASET_AUS.items():
            if key.lower() == str(dataset).lower() and (num_aus is None or len(aus) == num_aus):
                return list(aus)
    return None


class AUDataset(Dataset):
    """Frames (or clips) of one list-file prefix of a prepared dataset.

    Args:
        root: prepared directory (``root/list``, ``root/images``, ``root/dataset.json``) or a plain
            list directory (then give ``image_root``).
        prefix: list prefix, e.g. ``BP4D_combine_1_2``.
        aus: AU numbers to return, in this order (a subset of the data's AUs, e.g. for
            cross-dataset evaluation); default all columns.
        transform: ``TrainTransform``/``EvalTransform`` (default: ``EvalTransform()``, centre crop 176).
        clip: None (single frames) or a clip spec (see module doc).
        subjects: keep only frames of these subjects (validation / training split).
        check_images: check every image exists when reading the lists (fast; clear error early).
    """

    def __init__(self, root, prefix: str, *, aus: Sequence[int] | None = None, transform=None, clip: dict | None = None,
                 subjects: Sequence[str] | None = None, image_root=None, check_images: bool = True,
                 lists: ListFiles | None = None):
        self.root = Path(root)
        self.prefix = prefix
        lf = lists if lists is not None else read_list(root, prefix, image_root=image_root, check_images=check_images)
        if lf.image_root is None:
            raise ValueError(f"{root}: no image folder found for prefix {prefix!r}; pass image_root=")
        self.image_root = lf.image_root
        have = data_aus(root, lf.num_aus, lf.info[0].dataset if len(lf) else None)
        if have is not None and len(have) != lf.num_aus:
            raise ValueError(f"{root}/dataset.json lists {len(have)} AUs but {prefix} has {lf.num_aus} label columns")
        if aus is None:
            self.aus = have or list(range(1, lf.num_aus + 1))
            cols = list(range(lf.num_aus))
        else:
            aus = [int(a) for a in aus]
            if have is None:
                if len(aus) != lf.num_aus:
                    raise ValueError(f"{prefix} has {lf.num_aus} label columns but {len(aus)} AUs were asked and the "
                                     f"data's AU list is unknown (no dataset.json)")
                have = aus
            missing = [a for a in aus if a not in have]
            if missing:
                raise ValueError(f"{prefix} has no labels for AU{', AU'.join(map(str, missing))} (it has AUs {have})")
            self.aus = aus
            cols = [have.index(a) for a in aus]
        info = lf.info
        rows = np.arange(len(lf))
        if subjects is not None:
            keep = set(subjects)
            rows = np.asarray([i for i in rows if info[i].subject in keep], dtype=np.int64)
        self.rows = rows
        self.paths = [lf.paths[i] for i in rows]
        self.landmarks_all = lf.landmarks[rows]
        self.labels = lf.labels[rows][:, cols]  # int8, 9 = missing
        self._info = [info[i] for i in rows]
        self.subjects = sorted({p.subject for p in self._info})
        self.sequences = sorted({p.sequence for p in self._info})
        sidx = {s: i for i, s in enumerate(self.subjects)}
        qidx = {s: i for i, s in enumerate(self.sequences)}
        self.subject_ids = np.asarray([sidx[p.subject] for p in self._info], dtype=np.int64)
        self.sequence_ids = np.asarray([qidx[p.sequence] for p in self._info], dtype=np.int64)
        self.frames = np.asarray([p.frame for p in self._info], dtype=np.int64)
        self.transform = transform if transform is not None else EvalTransform()
        self.clip = dict(clip) if clip else None
        self.items = self._build_items()

    # ------------------------------------------------------------------ clips
    def _by_sequence(self) -> dict[int, np.ndarray]:
        """Local row indices of each sequence, sorted by frame number."""
        out: dict[int, np.ndarray] = {}
        for q in np.unique(self.sequence_ids):
            idx = np.flatnonzero(self.sequence_ids == q)
            out[int(q)] = idx[np.argsort(self.frames[idx], kind="stable")]
        return out

    def _build_items(self) -> list[np.ndarray]:
        n = len(self.paths)
        if self.clip is None:
            return [np.asarray([i]) for i in range(n)]
        if "offsets" in self.clip:
            offsets = [int(o) for o in self.clip["offsets"]]
            if 0 not in offsets:
                raise ValueError(f"clip offsets {offsets} must include 0 (the labelled frame)")
            self._centre = offsets.index(0)
            items: list[np.ndarray] = [None] * n  # type: ignore[list-item]
            for idx in self._by_sequence().values():
                fr = self.frames[idx]
                for k, i in enumerate(idx):
                    sel = []
                    for o in offsets:
                        target = fr[k] + o
                        j = int(np.searchsorted(fr, target))
                        if j < len(fr) and fr[j] == target:
                            sel.append(idx[j])
                        elif o < 0:  # nearest listed frame at or after the wanted one (towards t)
                            sel.append(idx[min(j, k)])
                        else:  # nearest listed frame before the wanted one (towards t)
                            sel.append(idx[max(j - 1, k)])
                    items[i] = np.asarray(sel)
            return items
        if "length" in self.clip:
            t = int(self.clip["length"])
            s = int(self.clip.get("stride", 1))
            mode = self.clip.get("windows", "sliding")
            if t < 1 or s < 1 or mode not in ("sliding", "disjoint"):
                raise ValueError(f"bad clip spec {self.clip}: length >= 1, stride >= 1, windows sliding|disjoint")
            span = (t - 1) * s + 1
            items = []
            for idx in self._by_sequence().values():
                step = 1 if mode == "sliding" else span
                for start in range(0, len(idx) - span + 1, step):
                    items.append(idx[start : start + span : s])
            self._centre = None
            return items
        raise ValueError(f"clip spec {self.clip} needs 'offsets' or 'length'")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, i: int) -> Path:
        return self.image_root / self.paths[i]

    def __getitem__(self, index: int) -> dict:
        sel = self.items[index]
        frames = np.stack([read_image(self.image_path(int(i))) for i in sel])
        image, lm = self.transform(frames, self.landmarks_all[sel])
        labels = self.labels[sel]
        mask = (labels != 9).astype(np.float32)
        labels = np.where(labels == 1, 1.0, 0.0).astype(np.float32)
        sub = au_subcenters(lm, self.aus).astype(np.float32)
        centre = sel[self._centre] if self.clip is not None and self._centre is not None else sel[len(sel) // 2]
        c = 0 if self.clip is None else (self._centre if self._centre is not None else None)
        sample = {
            "subject": torch.tensor(self.subject_ids[centre]),
            "sequence": torch.tensor(self.sequence_ids[centre]),
            "frame": torch.tensor(self.frames[centre]),
            "index": torch.tensor(int(self.rows[centre])),
        }
        if c is not None:  # single frame, or an offsets clip labelled at its centre
            sample.update(
                image=image[0] if self.clip is None else image,
                labels=torch.from_numpy(labels[c]),
                mask=torch.from_numpy(mask[c]),
                landmarks=torch.from_numpy(lm[c]),
                subcenters=torch.from_numpy(sub[c]),
            )
            if self.clip is not None:
                sample["clip_landmarks"] = torch.from_numpy(lm)
        else:  # runs: per-frame everything
            sample.update(image=image, labels=torch.from_numpy(labels), mask=torch.from_numpy(mask),
                          landmarks=torch.from_numpy(lm), subcenters=torch.from_numpy(sub))
        return sample

    def __repr__(self) -> str:
        kind = "frames" if self.clip is None else f"clips {self.clip}"
        return (f"AUDataset({self.prefix!r}, {len(self)} {kind}, {len(self.subjects)} subjects, "
                f"AUs {self.aus}, transform={self.transform!r})")
