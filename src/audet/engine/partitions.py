"""Derived prepared directories for evaluation protocols beyond the official folds.

A derived directory holds its own ``dataset.json`` and ``list/`` files but no image copies:
``images/`` links to the source's images. Two kinds:

- :func:`random_partition_root`: the same frames as a prepared directory, its subjects re-drawn into
  ``n`` subject-exclusive parts with :func:`audet.data.folds.assign_parts` (seed), folds
  ``rep_train<k>`` -> ``rep_part<k>`` (``audet cv --repeats``);
- :func:`lodo_root`: several prepared directories merged on the AUs they all share, one fold per
  dataset: train on all others, test on that one (``audet cv --lodo``).

Each records what it was made from (``derived`` in ``dataset.json``); an existing directory made
from other inputs is refused, never reused or overwritten. Writes go to a temporary folder that is
renamed into place, so a killed run leaves no half-made directory.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from audet.utils.io import write_json_atomic

__all__ = ["all_frames", "random_partition_root", "lodo_root", "shared_aus_of"]


def all_frames(root) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """Every frame of a prepared directory (the union of its folds' test prefixes, each frame once):
    ``(paths, landmarks (N, 49, 2), labels (N, A), meta)``."""
    from audet.data.listfile import read_list
    from audet.data.meta import read_dataset_meta

    meta = read_dataset_meta(root)
    prefixes = []
    for f in meta.get("folds") or []:
        if f["test"] not in prefixes:
            prefixes.append(f["test"])
    if not prefixes:
        raise ValueError(f"{root}/dataset.json lists no folds; cannot tell which list files hold all its frames")
    paths: list[str] = []
    lms, labs, seen = [], [], set()
    for p in prefixes:
        lf = read_list(root, p, check_images=False)
        keep = [i for i, q in enumerate(lf.paths) if q not in seen]
        seen.update(lf.paths[i] for i in keep)
        paths += [lf.paths[i] for i in keep]
        lms.append(lf.landmarks[keep])
        labs.append(lf.labels[keep])
    return paths, np.concatenate(lms), np.concatenate(labs), meta


def _subject(path: str) -> str:
    from audet.data.listfile import parse_path

    return parse_path(path).subject


def _finish(tmp: Path, dst: Path, meta: dict) -> Path:
    write_json_atomic(tmp / "dataset.json", meta)
    os.replace(tmp, dst)
    return dst


def _check_existing(dst: Path, derived: dict) -> bool:
    """True when ``dst`` is a finished derived directory made from the same inputs."""
    meta_path = dst / "dataset.json"
    if not meta_path.is_file():
        if dst.exists():
            raise FileExistsError(f"{dst} exists but is not a finished derived dataset; remove it")
        return False
    got = json.loads(meta_path.read_text()).get("derived")
    if got != json.loads(json.dumps(derived)):
        raise FileExistsError(f"{dst} was made from other inputs ({got}); use another output folder")
    return True


def _tmp_dir(dst: Path) -> Path:
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "list").mkdir(parents=True)
    return tmp


def random_partition_root(src, dst, *, seed: int, n_parts: int | None = None) -> Path:
    """``dst``: the frames of prepared ``src`` in ``n_parts`` (default: as many as ``src`` has folds)
    random subject-exclusive parts drawn with ``seed``; fold ``k`` tests on part ``k`` and trains on
    the others (``rep_train<k>``, with AU weights)."""
    from audet.data.folds import assign_parts
    from audet.data.listfile import write_list

    src, dst = Path(src).resolve(), Path(dst)
    paths, lms, labs, meta = all_frames(src)
    n = int(n_parts or len(meta.get("folds") or []) or 3)
    subjects = [_subject(p) for p in paths]
    parts = assign_parts(sorted(set(subjects)), n_parts=n, seed=int(seed))
    derived = {"kind": "random_partition", "source": str(src), "seed": int(seed), "parts": parts}
    if _check_existing(dst, derived):
        return dst
    tmp = _tmp_dir(dst)
    subj = np.asarray(subjects)
    folds = []
    for k, part in enumerate(parts):
        test = np.isin(subj, part)
        write_list(tmp, f"rep_part{k + 1}", [p for p, t in zip(paths, test) if t], lms[test], labs[test],
                   write_weights=False)
        write_list(tmp, f"rep_train{k + 1}", [p for p, t in zip(paths, test) if not t], lms[~test], labs[~test])
        folds.append({"train": f"rep_train{k + 1}", "test": f"rep_part{k + 1}"})
    (tmp / "images").symlink_to(src / (meta.get("images") or "images"), target_is_directory=True)
    keep = {k: v for k, v in meta.items() if k not in ("folds", "parts", "counts", "prefixes", "fold_assignment", "fold_notice")}
    return _finish(tmp, dst, {**keep, "folds": folds, "parts": {f"part{k + 1}": p for k, p in enumerate(parts)},
                              "fold_assignment": f"random partition (seed {seed}) of {src}", "derived": derived})


def shared_aus_of(roots: Sequence) -> tuple[list[int], dict[str, list[int]]]:
    """The AUs every prepared directory of ``roots`` labels (in the first one's order), and each one's AUs."""
    from audet.data.meta import data_aus

    have = {str(r): data_aus(r, required=True) for r in roots}
    first = next(iter(have.values()))
    shared = [a for a in first if all(a in v for v in have.values())]
    return shared, have


def lodo_root(roots: Sequence, dst) -> Path:
    """``dst``: the frames of several prepared directories on the AUs they all share; fold ``k``
    trains on every dataset but the ``k``-th and tests on the ``k``-th."""
    from audet.data.listfile import write_list

    roots = [Path(r).resolve() for r in roots]
    if len(roots) < 2:
        raise ValueError("leave-one-dataset-out needs at least two prepared directories")
    if len(set(roots)) < len(roots):
        raise ValueError("leave-one-dataset-out: the same directory is given twice")
    shared, have = shared_aus_of(roots)
    if not shared:
        raise ValueError("the datasets share no AU: " + "; ".join(f"{r}: AUs {a}" for r, a in have.items()))
    data = []
    for r in roots:
        paths, lms, labs, meta = all_frames(r)
        cols = [have[str(r)].index(a) for a in shared]
        data.append((r, paths, lms, labs[:, cols], meta))
    names = [str(m.get("dataset") or r.name) for r, *_, m in data]
    if len(set(names)) < len(names):
        names = [r.name for r in roots]
    top = {}
    for r, paths, *_ in data:
        for t in sorted({p.split("/")[0] for p in paths}):
            if t in top:
                raise ValueError(f"{top[t]} and {r} both keep their images under images/{t}; prepare them as "
                                 "different datasets (e.g. `audet prepare BP4D` and `audet prepare DISFA`)")
            top[t] = r
    subj = [{_subject(p) for p in d[1]} for d in data]
    for i in range(len(data)):
        for j in range(i + 1, len(data)):
            both = subj[i] & subj[j]
            if both:
                raise ValueError(f"{roots[i]} and {roots[j]} share subject names ({', '.join(sorted(both)[:3])}); "
                                 "subjects would be merged")
    derived = {"kind": "leave_one_dataset_out", "sources": [str(r) for r in roots], "aus": shared, "names": names}
    dst = Path(dst)
    if _check_existing(dst, derived):
        return dst
    tmp = _tmp_dir(dst)
    folds = []
    for k, name in enumerate(names):
        _, paths, lms, labs, _ = data[k]
        write_list(tmp, f"lodo_{name}", paths, lms, labs, write_weights=False)
        others = [d for i, d in enumerate(data) if i != k]
        write_list(tmp, f"lodo_without_{name}", [p for d in others for p in d[1]],
                   np.concatenate([d[2] for d in others]), np.concatenate([d[3] for d in others]))
        folds.append({"train": f"lodo_without_{name}", "test": f"lodo_{name}", "held_out": name})
    (tmp / "images").mkdir()
    for t, r in top.items():
        meta = data[roots.index(r)][4]
        (tmp / "images" / t).symlink_to(r / (meta.get("images") or "images") / t, target_is_directory=True)
    meta = {"dataset": "LODO", "aus": shared, "folds": folds, "datasets": dict(zip(names, map(str, roots))),
            "aus_per_dataset": {n: have[str(r)] for n, r in zip(names, roots)}, "images": "images",
            "fold_assignment": "leave one dataset out", "derived": derived}
    return _finish(tmp, dst, meta)
