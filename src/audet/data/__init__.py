"""Data: list files, folds, datasets (frames and clips), joint transforms, the DataModule,
dataset preparation (:mod:`audet.data.prepare`) and the synthetic benchmark (:mod:`audet.data.synth`).

Heavy pieces (torch, Lightning) load on first use, so ``import audet.data.listfile`` stays light.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "AUDataset": "audet.data.dataset",
    "AUDataModule": "audet.data.datamodule",
    "TrainTransform": "audet.data.transforms",
    "EvalTransform": "audet.data.transforms",
    "ListFiles": "audet.data.listfile",
    "ListFileError": "audet.data.listfile",
    "read_list": "audet.data.listfile",
    "write_list": "audet.data.listfile",
    "FOLDS": "audet.data.folds",
    "split_validation": "audet.data.folds",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audet.data' has no attribute {name!r}")
