"""``AUDataset``: frames or clips of a prepared dataset, as the batch dict of docs/architecture.md.

One sample (the DataLoader stacks them)::

    image       float32 (3, H, W); (T, 3, H, W) for clips
    labels      float32 (A,) 0/1 (missing labels are 0 here and masked); (T, A) for clips
    mask        float32 (A,) 1 where the label is known, 0 where the list file says 9; (T, A)
    landmarks   float32 (49, 2) in the returned image's pixels (after crop/flip); (T, 49, 2)
    subcenters  float32 (A, 2, 2) = audet.facs.au_subcenters(landmarks, aus); (T, A, 2, 2)
    subject, sequence   int64 indices into dataset.subject_vocab / dataset.sequences (subject_vocab is
                        the GLOBAL vocabulary when one is given, ``subject_vocab=``, else the
                        dataset's own sorted subjects)
    frame, index        int64 frame number and list-file row of the (centre) frame
    clips only: frames, indices  int64 (T,) frame numbers and list rows of every clip frame;
                centre           int64 position of the centre frame in the clip

Clip sampling (``clip=``, parsed by :func:`audet.clip.parse_clip`) for temporal models; every frame of a clip comes from ONE sequence and
gets the SAME crop/flip/jitter:

- ``{"offsets": [-T, 0, T]}`` -- frames t-T, t, t+T by frame NUMBER (AUNet's neighbours t-10,
  t+10). One sample per list row t (``len(dataset) == number of frames``). A neighbour that is not
  in the list (sequence ends, gaps) is replaced by the listed frame of that sequence whose number
  is nearest to the wanted one (ties: the one closer to t); at the ends this clamps to the first /
  last frame. The offsets must include 0 (the centre). Per-frame labels etc. are returned,
  ``(T, ...)``; with ``"targets": "centre"`` labels, mask, landmarks and sub-centres are those of
  the centre frame only (``(A,)`` ...), and ``clip_landmarks`` ``(T, 49, 2)`` holds all frames'.
- ``{"length": t, "stride": s, "windows": "sliding" | "disjoint"}`` -- runs of t listed frames of
  one sequence taken every s-th listed frame (s = 1: consecutive frames of the list, ordered by
  frame number; gaps in the numbering are not filled). ``sliding`` (default): a run starts at
  every listed frame, runs overlap, and runs that would pass the sequence end are dropped.
  ``disjoint`` (alias ``non-overlapping``): the runs tile each sequence so that every listed frame
  is in exactly one run (with s > 1 the runs interleave: s runs per block of t*s frames). With
  ``"pad": True`` (default) a sequence end that leaves a run short (any sequence shorter than a
  run; the tail in ``disjoint`` mode) still yields a run, padded by repeating its last real frame
  with ``mask`` 0 at the padded positions, so every frame is seen and losses/F1 ignore the
  repeats. ``"pad": False`` drops such runs.

A missing or corrupt image raises :class:`audet.data.images.ImageReadError` naming the path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from audet.clip import parse_clip, run_centre
from audet.data.images import read_image
from audet.data.listfile import ListFiles, read_list
from audet.data.meta import data_aus, read_dataset_meta
from audet.data.transforms import EvalTransform
from audet.facs import au_subcenters, resolve_aus

__all__ = ["AUDataset", "subject_vocabulary"]


def subject_vocabulary(root, prefixes: Sequence[str] = (), *, image_root=None) -> list[str]:
    """The GLOBAL subject vocabulary of a prepared directory: sorted ids of every subject of the
    dataset (``dataset.json``'s ``parts``) plus those of the list ``prefixes`` given (read without
    checking images). ``batch["subject"]`` indexes it identically in every split."""
    subjects: set[str] = set()
    parts = read_dataset_meta(root, required=False).get("parts") or {}
    if isinstance(parts, dict):
        for members in parts.values():
            subjects.update(str(s) for s in members or [])
    for prefix in prefixes:
        if prefix:
            lf = read_list(root, prefix, image_root=image_root, check_images=False)
            subjects.update(p.subject for p in lf.info)
    return sorted(subjects)


class AUDataset(Dataset):
    """Frames (or clips) of one list-file prefix of a prepared dataset.

    Args:
        root: prepared directory (``root/list``, ``root/images``, ``root/dataset.json``) or a plain
            list directory (then give ``image_root``).
        prefix: list prefix, e.g. ``BP4D_combine_1_2``.
        aus: AU numbers to return, in this order. When the data's AU list is known (``dataset.json``
            or a dataset name of ``DATASET_AUS`` with the right count) this may be a subset or a
            reordering (cross-dataset evaluation); otherwise it must name every label column.
        transform: ``TrainTransform``/``EvalTransform`` or any callable
            ``(frames (T,H,W,3) uint8, landmarks (T,49,2)) -> (tensor (T,3,h,w), landmarks)``;
            default ``EvalTransform()`` (centre crop 176, normalised 0.5/0.5).
        clip: None (single frames) or a clip spec (module docstring).
        subjects: keep only frames of these subjects (e.g. the validation split).
        image_root: folder the list paths are relative to (default ``root/images``).
        check_images: check that every image exists when reading the lists.
        lists: already-read :class:`ListFiles` of ``prefix`` (skips reading; the DataModule
            reads a training prefix once for its train and validation datasets).
        subject_vocab: the GLOBAL subject vocabulary (:func:`subject_vocabulary`); when given,
            ``sample["subject"]`` indexes it (identical ids across splits), else ``subjects``.

    Attributes:
        aus, subjects (the subjects present, sorted), subject_vocab (the names ``sample["subject"]``
        indexes), sequences (the names ``sample["sequence"]`` indexes), labels (``(N, A)`` int8,
        9 = missing, of the kept frames, for loss weights), rows (list-file row of each kept frame),
        frames (frame numbers), paths.
    """

    def __init__(self, root, prefix: str, *, aus: Sequence[int] | None = None, transform=None, clip: dict | None = None,
                 subjects: Sequence[str] | None = None, image_root=None, check_images: bool = True,
                 lists: ListFiles | None = None, subject_vocab: Sequence[str] | None = None):
        self.root = Path(root)
        self.prefix = prefix
        lf = lists if lists is not None else read_list(root, prefix, image_root=image_root, check_images=check_images)
        if image_root is not None:
            lf.image_root = Path(image_root)
        if lf.image_root is None:
            raise ValueError(f"{root}: no image folder found for prefix {prefix!r}; pass image_root=")
        self.image_root = Path(lf.image_root)
        info = lf.info
        self.aus, cols = self._resolve_aus(root, aus, lf, info[0].dataset if len(lf) else None)

        rows = np.arange(len(lf), dtype=np.int64)
        if subjects is not None:
            keep = {str(s) for s in subjects}
            unknown = keep - {p.subject for p in info}
            if unknown:
                raise ValueError(f"{prefix} has no frames of subjects {sorted(unknown)}")
            rows = np.asarray([i for i in rows if info[i].subject in keep], dtype=np.int64)
        self.rows = rows
        # numpy string arrays, not lists of Python objects: DataLoader workers share them without
        # copy-on-write page duplication
        self.paths = np.asarray([lf.paths[i] for i in rows], dtype=str)
        self.landmarks_all = np.ascontiguousarray(lf.landmarks[rows], dtype=np.float32)
        self.labels = np.ascontiguousarray(lf.labels[rows][:, cols])  # int8, 9 = missing
        kept = [info[i] for i in rows]
        self.subjects = sorted({p.subject for p in kept})
        self.sequences = sorted({p.sequence for p in kept})
        self.subject_vocab = list(self.subjects) if subject_vocab is None else [str(s) for s in subject_vocab]
        sidx = {s: i for i, s in enumerate(self.subject_vocab)}
        outside = sorted(set(self.subjects) - set(sidx))
        if outside:
            raise ValueError(f"{prefix}: subjects {outside[:5]} are not in the subject vocabulary given "
                             f"({len(sidx)} subjects); build it with audet.data.dataset.subject_vocabulary")
        qidx = {s: i for i, s in enumerate(self.sequences)}
        self.subject_ids = np.asarray([sidx[p.subject] for p in kept], dtype=np.int64)
        self.sequence_ids = np.asarray([qidx[p.sequence] for p in kept], dtype=np.int64)
        self.frames = np.asarray([p.frame for p in kept], dtype=np.int64)
        self.transform = transform if transform is not None else EvalTransform()
        self.clip = parse_clip(clip)
        self.items, self.valid, self.centre = self._build_items()

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_aus(root, aus, lf: ListFiles, dataset: str | None) -> tuple[list[int], list[int]]:
        have = data_aus(root, lf.num_aus, dataset)
        if have is not None and len(have) != lf.num_aus:
            raise ValueError(f"dataset.json lists {len(have)} AUs but {lf.prefix} has {lf.num_aus} label columns")
        return resolve_aus(lf.num_aus if have is None else have, aus, source=lf.prefix)

    def _by_sequence(self) -> list[np.ndarray]:
        """Local row indices of each sequence, sorted by frame number (duplicates are an error)."""
        out = []
        order = np.lexsort((self.frames, self.sequence_ids))
        bounds = np.flatnonzero(np.diff(self.sequence_ids[order])) + 1
        for idx in np.split(order, bounds):
            if len(idx) == 0:
                continue
            fr = self.frames[idx]
            dup = np.flatnonzero(np.diff(fr) == 0)
            if dup.size:
                a, b = idx[dup[0]], idx[dup[0] + 1]
                raise ValueError(f"{self.prefix}: frame number {fr[dup[0]]} appears twice in sequence "
                                 f"{self.sequences[self.sequence_ids[a]]!r}: {self.paths[a]} and {self.paths[b]}")
            out.append(idx)
        return out

    def _build_items(self):
        n = len(self.paths)
        c = self.clip
        if c is None:
            return np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1), bool), 0
        if "offsets" in c:
            offs = np.asarray(c["offsets"], dtype=np.int64)
            items = np.empty((n, len(offs)), dtype=np.int64)
            for idx in self._by_sequence():
                fr = self.frames[idx]
                target = fr[:, None] + offs[None, :]  # (n_seq, T)
                j = np.searchsorted(fr, target)  # first listed frame >= target
                lo = idx[np.clip(j - 1, 0, len(fr) - 1)]
                hi = idx[np.clip(j, 0, len(fr) - 1)]
                d_lo = np.abs(self.frames[lo] - target)
                d_hi = np.abs(self.frames[hi] - target)
                # nearest; on a tie the one closer to the centre frame t
                pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (offs[None, :] < 0))
                items[idx] = np.where(pick_hi, hi, lo)
            return items, np.ones(items.shape, bool), int(c["offsets"].index(0))
        t, s, pad = c["length"], c["stride"], c["pad"]
        span = (t - 1) * s + 1
        runs, valid = [], []

        def add(seq_idx: np.ndarray, positions: np.ndarray) -> None:
            ok = positions < len(seq_idx)
            if not ok.all() and not pad:
                return
            last = positions[ok][-1]
            runs.append(seq_idx[np.where(ok, positions, last)])
            valid.append(ok)

        for idx in self._by_sequence():
            L = len(idx)
            if c["windows"] == "sliding":
                starts = range(0, max(L - span + 1, 1))
                for a in starts:
                    add(idx, a + s * np.arange(t))
            else:
                block = t * s
                for b in range(0, L, block):
                    for phase in range(s):
                        pos = b + phase + s * np.arange(t)
                        if pos[0] < L:
                            add(idx, pos)
        if not runs:
            return np.zeros((0, t), np.int64), np.zeros((0, t), bool), run_centre(t)
        return np.stack(runs).astype(np.int64), np.stack(valid), run_centre(t)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_aus(self) -> int:
        return len(self.aus)

    def image_path(self, i: int) -> Path:
        """Absolute path of local row ``i``."""
        return self.image_root / str(self.paths[i])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        sel = self.items[index]
        frames = np.stack([read_image(self.image_path(int(i))) for i in sel])
        image, lm = self.transform(frames, self.landmarks_all[sel])
        lm = np.asarray(lm, dtype=np.float32)
        raw = self.labels[sel]
        mask = (raw != 9) & self.valid[index][:, None]
        labels = (raw == 1).astype(np.float32)
        mask = mask.astype(np.float32)
        sub = au_subcenters(lm, self.aus).astype(np.float32)
        k = self.centre
        centre = sel[k]
        sample = {
            "subject": torch.tensor(self.subject_ids[centre]),
            "sequence": torch.tensor(self.sequence_ids[centre]),
            "frame": torch.tensor(self.frames[centre]),
            "index": torch.tensor(self.rows[centre]),
        }
        if self.clip is None:
            sample.update(image=image[0], labels=torch.from_numpy(labels[0]), mask=torch.from_numpy(mask[0]),
                          landmarks=torch.from_numpy(lm[0]), subcenters=torch.from_numpy(sub[0]))
            return sample
        sample.update(frames=torch.from_numpy(self.frames[sel]), indices=torch.from_numpy(self.rows[sel]),
                      centre=torch.tensor(k, dtype=torch.int64), image=image)
        if self.clip.get("targets") == "centre":
            sample.update(labels=torch.from_numpy(labels[k]), mask=torch.from_numpy(mask[k]),
                          landmarks=torch.from_numpy(lm[k]), subcenters=torch.from_numpy(sub[k]),
                          clip_landmarks=torch.from_numpy(lm))
        else:
            sample.update(labels=torch.from_numpy(labels), mask=torch.from_numpy(mask),
                          landmarks=torch.from_numpy(lm), subcenters=torch.from_numpy(sub))
        return sample

    def __repr__(self) -> str:
        kind = "frames" if self.clip is None else f"clips {self.clip}"
        return (f"AUDataset({self.prefix!r}, {len(self)} {kind}, {len(self.subjects)} subjects, "
                f"AUs {self.aus}, transform={self.transform!r})")
