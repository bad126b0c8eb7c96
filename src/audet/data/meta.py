"""``dataset.json``: the one reader of a prepared directory's description.

``audet prepare`` (and :func:`audet.data.toy.make_toy_prepared`) write ``OUT/dataset.json`` with,
among others, ``dataset`` (name), ``aus`` (AU numbers of the label columns, in order), ``parts``
and ``folds`` (``[{"train": prefix, "test": prefix}, ...]``; a cross-dataset fold may give
``train_dataset`` instead of a local ``train`` prefix). Every reader in audet goes through
:func:`read_dataset_meta`, so a missing or corrupt file gives the same one-line error everywhere:

- missing: :class:`FileNotFoundError` naming the path and how to make one (``required=False``
  returns ``{}`` instead);
- not JSON, not an object, or ``aus`` / ``folds`` of the wrong shape: :class:`DatasetMetaError`
  (a ``ValueError``) naming the file and the field.

:func:`data_aus` is the AU list of a prepared directory (``aus``, else a known dataset name);
:func:`read_fold` one entry of ``folds``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["DATASET_META", "DatasetMetaError", "dataset_meta_path", "read_dataset_meta", "data_aus", "read_fold",
           "trained_on"]

#: File name of the description at the root of a prepared directory.
DATASET_META = "dataset.json"

_MAKE = "prepare one with `audet prepare` or `audet synth` + `audet prepare`"


class DatasetMetaError(ValueError):
    """``dataset.json`` exists but cannot be used (the message names the file and the field)."""


def dataset_meta_path(root) -> Path:
    """``root/dataset.json``; for ``root`` = ``OUT/list`` (a list directory), ``OUT/dataset.json``."""
    root = Path(root)
    path = root / DATASET_META
    if not path.is_file() and root.name == "list" and (root.parent / DATASET_META).is_file():
        return root.parent / DATASET_META
    return path


def _check(meta, path: Path) -> dict:
    if not isinstance(meta, dict):
        raise DatasetMetaError(f"{path}: expected a JSON object, got {type(meta).__name__}; {_MAKE} again")
    aus = meta.get("aus")
    if aus is not None and (not isinstance(aus, list) or not all(isinstance(a, int) and not isinstance(a, bool)
                                                                  for a in aus)):  # fmt: skip
        raise DatasetMetaError(f"{path}: 'aus' must be a list of AU numbers, got {aus!r}")
    folds = meta.get("folds")
    if folds is not None:
        if not isinstance(folds, list):
            raise DatasetMetaError(f"{path}: 'folds' must be a list of {{'train': ..., 'test': ...}}, got {folds!r}")
        for k, f in enumerate(folds):
            if not isinstance(f, dict) or not isinstance(f.get("test"), str):
                raise DatasetMetaError(f"{path}: fold {k} must be an object with a 'test' prefix, got {f!r}")
            if not isinstance(f.get("train"), str) and not f.get("train_dataset"):
                raise DatasetMetaError(f"{path}: fold {k} names no 'train' prefix (nor 'train_dataset'): {f!r}")
    return meta


def read_dataset_meta(root, *, required: bool = True) -> dict:
    """The content of ``root/dataset.json`` (see the module docstring for the errors).

    Args:
        root: a prepared directory (or its ``list`` folder).
        required: when False, a missing file gives ``{}`` (a corrupt one is still an error).
    """
    path = dataset_meta_path(root)
    if not path.is_file():
        if not required:
            return {}
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root} is not a directory; expected a prepared dataset ({_MAKE})")
        raise FileNotFoundError(f"{path} not found: is {root} a prepared dataset? ({_MAKE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetMetaError(f"{path} is not valid JSON ({exc}); {_MAKE} again") from None
    return _check(meta, path)


def data_aus(root, num_aus: int | None = None, dataset: str | None = None, *,
             required: bool = False) -> list[int] | None:  # fmt: skip
    """The AU numbers of the label columns of a prepared directory.

    ``dataset.json``'s ``aus``; else the AU set of the dataset name (``dataset``, or the file's
    ``dataset``) in :data:`audet.facs.DATASET_AUS` (case-insensitive), if it has ``num_aus`` AUs
    (when given). ``None`` when unknown (no file is fine), or a ``ValueError`` with
    ``required=True``. A corrupt ``dataset.json`` is always an error.
    """
    from audet.facs import dataset_aus

    meta = read_dataset_meta(root, required=False)
    if meta.get("aus"):
        return [int(a) for a in meta["aus"]]
    dataset = dataset or meta.get("dataset")
    if dataset:
        try:
            aus = list(dataset_aus(dataset))
        except ValueError:  # not a dataset audet knows
            aus = []
        if aus and (num_aus is None or len(aus) == num_aus):
            return aus
    if required:
        raise ValueError(f"{root}: cannot tell the AU numbers of its label columns (no 'aus' in "
                         f"{DATASET_META} and no known dataset name); give the AU list (aus= / --aus)")  # fmt: skip
    return None


def read_fold(root, k: int, meta: dict | None = None) -> dict:
    """Fold ``k`` (0-based) of ``root/dataset.json``'s ``folds``: ``{"train": prefix, "test": prefix}``."""
    folds: Sequence[dict] = (meta if meta is not None else read_dataset_meta(root)).get("folds") or []
    if not 0 <= int(k) < len(folds):
        have = f"0..{len(folds) - 1}" if folds else "none"
        raise ValueError(f"{root} has {len(folds)} fold(s) ({have}); fold {k} does not exist")
    return dict(folds[int(k)])


def trained_on(root) -> dict:
    """What a model trained on the prepared directory ``root`` has seen, as checkpoints record it:
    ``{"dataset": name, "synthetic": bool, "root": path}``. ``synthetic`` is dataset.json's flag
    (written by `audet prepare` since it records it) or, for older directories, whether the raw
    release it was prepared from was an `audet synth` one."""
    meta = read_dataset_meta(root, required=False) or {}
    synthetic = meta.get("synthetic")
    if synthetic is None:
        raw = (meta.get("source") or {}).get("root")
        synthetic = bool(raw and (Path(raw) / "synth_meta.json").is_file()) or "synthetic" in str(meta.get("fold_notice", ""))
    return {"dataset": meta.get("dataset"), "synthetic": bool(synthetic), "root": str(root)}
