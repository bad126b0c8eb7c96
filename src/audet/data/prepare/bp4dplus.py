"""BP4D+ (Zhang et al. 2016): 140 subjects; four tasks (T1, T6, T7, T8) are AU coded with the
BP4D AUs. Cross-dataset protocol (protocol section 5): train on all of BP4D (prefix
``BP4D_all`` of a prepared BP4D), test on all of BP4D+ (prefix ``BP4D+_all``).

Layout read (``RAW`` = ``--raw``; sources and assumptions in ``docs/datasets.md``)::

    RAW/2D+3D/<subject>.zip                       members <subject>/<task>/<frame>.jpg, or
    RAW/2D+3D/<subject>/<task>/<frame>.jpg        unpacked folders
    RAW/AUCoding/AU_OCC/<subject>_<task>.csv      as BP4D (header row, frame column, 0/1/9)
    RAW/2DFeatures/<subject>_<task>.mat           as BP4D (``fit(k).pred``, 1-based) -- optional

Only tasks with an AU_OCC file are read. When a task has no 2DFeatures file, landmarks come from
``--landmarker`` (else its frames are skipped as ``no_landmarks``). That the 2DFeatures files of
BP4D+ follow the BP4D format is an ASSUMPTION.
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

from audet.data.prepare.bp4d import BP4DRelease
from audet.data.prepare.partition import Partition
from audet.data.prepare.readers import decode_image, find_dir, frame_number
from audet.data.prepare.types import IMAGE_EXTENSIONS, PrepareOptions, SequenceSpec

__all__ = ["BP4DPlusRelease"]

logger = logging.getLogger(__name__)


class BP4DPlusRelease(BP4DRelease):
    name = "BP4D+"
    one_based = True
    landmarks_required = False
    image_dirs = ("2D+3D", "2D_3D", "2D3D", "BP4D+-training", "images")
    layout = ("RAW/2D+3D/<subject>.zip (or 2D+3D/<subject>/<task>/<frame>.jpg), "
              "RAW/AUCoding/AU_OCC/<subject>_<task>.csv and optionally "
              "RAW/2DFeatures/<subject>_<task>.mat (else --landmarker)")  # fmt: skip

    def _image_sources(self, root: Path) -> dict[tuple[str, str], str]:
        out = super()._image_sources(root)
        img_root = find_dir(root, *self.image_dirs)
        if img_root is None:
            return out
        for f in sorted(os.listdir(img_root)):
            stem, ext = os.path.splitext(f)
            if ext.lower() != ".zip":
                continue
            try:
                with zipfile.ZipFile(img_root / f) as zf:
                    names = zf.namelist()
            except (OSError, zipfile.BadZipFile):
                continue
            tasks = set()
            for n in names:
                parts = [p for p in n.split("/") if p]
                if len(parts) >= 2 and os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS:
                    tasks.add(parts[-2])
            for task in sorted(tasks):
                out.setdefault((stem, task), f"zip:{img_root / f}")
        return out

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        specs = super().discover(root, opts)
        if not opts.detector and not any(s.get("landmarks") for s in specs):
            logger.warning("note: no 2DFeatures/<subject>_<task>.mat files and no --landmarker: every frame "
                           "will be skipped as no_landmarks")  # fmt: skip
        return specs

    def _frames(self, spec: SequenceSpec):
        src = spec.get("images")
        if not src.startswith("zip:"):
            return super()._frames(spec)
        zpath = src[4:]
        subj, task = spec.subject, spec.sequence[0]
        found: dict[int, str] = {}
        dups = []
        try:
            zf = zipfile.ZipFile(zpath)  # kept open for the loaders; closed when collected
        except (OSError, zipfile.BadZipFile):
            return [], []
        for n in sorted(zf.namelist()):
            parts = [p for p in n.split("/") if p]
            if len(parts) < 2 or parts[-2] != task or (len(parts) >= 3 and parts[-3] != subj):
                continue
            stem, ext = os.path.splitext(parts[-1])
            num = frame_number(stem)
            if ext.lower() not in IMAGE_EXTENSIONS or num is None:
                continue
            if num in found:
                dups.append(num)
            else:
                found[num] = n


        def loader(member: str):
            def _load():
                try:
                    return decode_image(zf.read(member))
                except (OSError, KeyError, zipfile.BadZipFile):
                    return None

            return _load

        return [(num, loader(m)) for num, m in sorted(found.items())], dups

    def partition(self, subjects, specs, opts: PrepareOptions) -> Partition:
        from audet.data.folds import CONVENTIONS

        conv = CONVENTIONS["BP4D+"]
        parts = {"all": sorted(subjects)}
        prefixes = {conv["test"]: (["all"], False)}
        folds = [{"train": conv["train"], "train_dataset": "BP4D", "test": conv["test"]}]
        return Partition(parts, prefixes, folds, "all (cross-dataset: train on all of BP4D)")
