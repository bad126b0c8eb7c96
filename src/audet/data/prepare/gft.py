"""GFT, the Sayette Group Formation Task database (Girard et al. 2017): 96 subjects, 10 AUs,
official split of 78 training and 18 test subjects.

We found no public description of the release's file layout, so this reader assumes a simple
per-subject layout (documented as an ASSUMPTION in ``docs/datasets.md``; adapt the release to it
with symlinks / a small conversion, or extend this module)::

    RAW/images/<subject>/<frame>.jpg     frames (any zero padding, .jpg/.png), or
    RAW/videos/<subject>.<avi|mp4|...>   one video per subject (frame n = video index n - 1)
    RAW/AU_OCC/<subject>.csv             header "frame,<AU>,<AU>,..." (AU01 or 1); 0/1;
                                         9, -1 or empty = unknown
    RAW/landmarks/<subject>.csv          "frame,x1,y1,...,xP,yP" (P = 49, 66 or 68), 0-based
                                         pixels, optional header; empty / NaN = lost track
    RAW/split.json                       {"train": [...], "test": [...]} (or --split FILE)

The official 78/18 subject lists are not shipped with audet (we could not find them in public
code), so a split is required: ``--split FILE`` or ``RAW/split.json``; ``--parts auto`` instead
makes a seeded split with the official proportions (18/96 test subjects).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from audet.data.prepare.bp4d import read_au_occ
from audet.data.prepare.partition import Partition
from audet.data.prepare.readers import (
    file_signature,
    find_dir,
    iter_video_frames,
    list_frames,
    read_image,
)
from audet.data.prepare.release import Release
from audet.data.prepare.types import (
    VIDEO_EXTENSIONS,
    FrameItem,
    LayoutError,
    PrepareOptions,
    SequenceSpec,
)

__all__ = ["GFTRelease", "read_landmark_csv", "read_split_file", "OFFICIAL_TEST_FRACTION"]

#: 18 test subjects out of 96 in the official split.
OFFICIAL_TEST_FRACTION = 18 / 96


def read_landmark_csv(path: str | os.PathLike) -> dict[int, np.ndarray | None]:
    """``frame,x1,y1,...`` rows -> {frame: (P, 2) or None for an empty/lost row}."""
    out: dict[int, np.ndarray | None] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            try:
                frame = int(float(row[0]))
            except ValueError:
                continue  # header
            vals = []
            for c in row[1:]:
                c = c.strip()
                try:
                    vals.append(float(c) if c else np.nan)
                except ValueError:
                    vals.append(np.nan)
            while vals and np.isnan(vals[-1]) and len(vals) % 2:
                vals.pop()  # trailing comma
            if not vals or all(np.isnan(vals)):
                out[frame] = None
            elif len(vals) % 2:
                out[frame] = np.asarray(vals, dtype=np.float64)  # odd count: flagged later
            else:
                out[frame] = np.asarray(vals, dtype=np.float64).reshape(-1, 2)
    return out


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """JSON ``{"train": [...], "test": [...]}`` or text lines ``<train|test> <subject>``."""
    text = Path(path).read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = {"train": [], "test": []}
        for ln, line in enumerate(text.splitlines(), 1):
            toks = line.replace(",", " ").split()
            if not toks or toks[0].startswith("#"):
                continue
            if len(toks) != 2 or toks[0].lower() not in obj:
                raise ValueError(f"{path} line {ln}: expected '<train|test> <subject>', got {line!r}") from None
            obj[toks[0].lower()].append(toks[1])
    if not isinstance(obj, dict) or not {"train", "test"} <= set(obj):
        raise ValueError(f"{path}: expected keys 'train' and 'test'")
    split = {k: sorted(str(s) for s in obj[k]) for k in ("train", "test")}
    both = set(split["train"]) & set(split["test"])
    if both:
        raise ValueError(f"{path}: subjects in both train and test: {sorted(both)}")
    return split


class GFTRelease(Release):
    name = "GFT"
    one_based = False
    layout = ("RAW/images/<subject>/<frame>.jpg (or RAW/videos/<subject>.mp4), "
              "RAW/AU_OCC/<subject>.csv, RAW/landmarks/<subject>.csv and a subject split "
              "(--split FILE or RAW/split.json) [assumed layout, see docs/datasets.md]")  # fmt: skip

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        lab_dir = find_dir(root, "AU_OCC", "AUCoding/AU_OCC", "labels")
        img_dir = find_dir(root, "images", "frames")
        vid_dir = find_dir(root, "videos", "video")
        lm_dir = find_dir(root, "landmarks", "2DFeatures")
        missing = []
        if lab_dir is None:
            missing.append("AU_OCC/")
        if img_dir is None and vid_dir is None:
            missing.append("images/ or videos/")
        if lm_dir is None and not opts.detector:
            missing.append("landmarks/ (or --landmarker)")
        if missing:
            raise LayoutError(f"{root} does not look like a GFT release in the assumed layout "
                              f"(missing: {', '.join(missing)}); expected {self.layout}")  # fmt: skip
        videos = {}
        if vid_dir is not None:
            for f in sorted(os.listdir(vid_dir)):
                stem, ext = os.path.splitext(f)
                if ext.lower() in VIDEO_EXTENSIONS:
                    videos.setdefault(stem, str(vid_dir / f))
        specs = []
        for f in sorted(os.listdir(lab_dir)):
            subj, ext = os.path.splitext(f)
            if ext.lower() != ".csv":
                continue
            frames = str(img_dir / subj) if img_dir is not None and (img_dir / subj).is_dir() else ""
            video = videos.get(subj, "") if not frames else ""
            lm = str(lm_dir / f"{subj}.csv") if lm_dir is not None and (lm_dir / f"{subj}.csv").is_file() else ""
            data = (("labels", str(lab_dir / f)), ("frames", frames), ("video", video),
                    ("landmarks", lm))  # fmt: skip
            specs.append(SequenceSpec(subj, (), data, file_signature(str(lab_dir / f), frames or video, lm)))
        return specs

    def needs_detector(self, specs, opts) -> bool:
        return bool(opts.detector) and any(not s.get("landmarks") for s in specs)

    def partition(self, subjects: Sequence[str], specs, opts: PrepareOptions) -> Partition:
        from audet.data.folds import CONVENTIONS

        conv = CONVENTIONS["GFT"]
        split_path = opts.split_file or (str(Path(opts.root) / "split.json")
                                         if (Path(opts.root) / "split.json").is_file() else None)  # fmt: skip
        notice = None
        if split_path and opts.folds != "auto":
            split = read_split_file(split_path)
            listed = set(split["train"]) | set(split["test"])
            unlisted = sorted(set(subjects) - listed)
            if unlisted:
                notice = (f"notice: {len(unlisted)} subject(s) are in neither list of {split_path} "
                          f"and are left out: {' '.join(unlisted[:12])}")  # fmt: skip
            parts = {"train": [s for s in split["train"] if s in subjects],
                     "test": [s for s in split["test"] if s in subjects]}  # fmt: skip
            assignment = f"split file {split_path}"
        elif opts.folds == "auto":
            subs = sorted(subjects)
            order = [subs[i] for i in np.random.default_rng(opts.seed).permutation(len(subs))]
            n_test = min(max(1, round(len(subs) * OFFICIAL_TEST_FRACTION)), max(len(subs) - 1, 1))
            parts = {"train": sorted(order[n_test:]), "test": sorted(order[:n_test])}
            assignment = "auto"
            notice = (f"notice: --parts auto: GFT subjects split at random (seed {opts.seed}) with "
                      f"the official proportions: {len(parts['train'])} train, "
                      f"{len(parts['test'])} test; this is NOT the official 78/18 split")  # fmt: skip
        else:
            raise ValueError(
                "GFT needs its official train/test subject split (78/18), which audet does not "
                "ship: pass --split FILE (JSON {\"train\": [...], \"test\": [...]} or lines "
                "'<train|test> <subject>'), put split.json in the release root, or use "
                "--parts auto for a seeded split with the same proportions"
            )
        prefixes = {conv["train"]: (["train"], True), conv["test"]: (["test"], False)}
        folds = [{"train": conv["train"], "test": conv["test"]}]
        return Partition(parts, prefixes, folds, assignment, notice,
                         {"seed": opts.seed} if assignment == "auto" else {})  # fmt: skip

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        name = lambda n: f"{n:05d}"  # noqa: E731
        try:
            labels, _ = read_au_occ(spec.get("labels"), aus)
        except (OSError, ValueError):
            labels = None
        lms, lm_err = {}, None
        if spec.get("landmarks"):
            try:
                lms = read_landmark_csv(spec.get("landmarks"))
            except (OSError, ValueError):
                lm_err = "landmark_file_unreadable"
        use_detector = not spec.get("landmarks") and bool(opts.detector)
        if spec.get("frames"):
            frames, _ = list_frames(spec.get("frames"))
            source = ((n, (lambda p=p: read_image(p))) for n, p in frames)
        elif spec.get("video"):
            source = ((i + 1, img) for i, img in iter_video_frames(spec.get("video")))
        else:
            source = iter(())
        seen = set()
        for n, image in source:
            seen.add(n)
            if labels is None:
                yield FrameItem(name(n), n, skip="label_file_unreadable")
                continue
            lm = "detect" if use_detector else lms.get(n)
            yield FrameItem(name(n), n, labels=labels.get(n), landmarks=lm, image=image,
                            one_based=self.one_based, skip=lm_err)  # fmt: skip
        for n in sorted(set(labels or {}) - seen):
            yield FrameItem(name(n), n, skip="missing_image")
