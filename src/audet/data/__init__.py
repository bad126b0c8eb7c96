"""Data: list files, folds, datasets, transforms, the Lightning DataModule.

Public names are imported lazily so that ``import audet.data.prepare`` (or ``listfile``) does not
pull in torch/Lightning:

- :mod:`audet.data.listfile` -- ``read_list``, ``write_list``, ``ListFiles``,
  ``ListFileError``, ``parse_path``
- :mod:`audet.data.folds` -- ``FOLDS``, ``CONVENTIONS``, ``fold_prefixes``, ``assign_parts``,
  ``split_validation``
- :mod:`audet.data.dataset` -- ``AUDataset``
- :mod:`audet.data.transforms` -- ``TrainTransform``, ``EvalTransform``
- :mod:`audet.data.datamodule` -- ``AUDataModule``
- :mod:`audet.data.meta` -- ``read_dataset_meta``, ``data_aus``, ``read_fold``,
  ``DatasetMetaError`` (the one reader of ``dataset.json``)
- :mod:`audet.data.images` -- ``read_image``, ``ImageReadError``
- :mod:`audet.data.toy` -- ``make_toy_prepared``, ``toy_landmarks`` (a small prepared directory
  for tests and benchmarks)

See docs/data.md.
"""
from __future__ import annotations

from audet.utils.lazy import lazy_exports

_EXPORTS = {
    "ListFiles": "listfile",
    "ListFileError": "listfile",
    "PathInfo": "listfile",
    "parse_path": "listfile",
    "read_list": "listfile",
    "write_list": "listfile",
    "FOLDS": "folds",
    "CONVENTIONS": "folds",
    "fold_prefixes": "folds",
    "assign_parts": "folds",
    "split_validation": "folds",
    "AUDataset": "dataset",
    "TrainTransform": "transforms",
    "EvalTransform": "transforms",
    "AUDataModule": "datamodule",
    "read_dataset_meta": "meta",
    "data_aus": "meta",
    "read_fold": "meta",
    "DatasetMetaError": "meta",
    "read_image": "images",
    "ImageReadError": "images",
    "make_toy_prepared": "toy",
    "toy_landmarks": "toy",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
