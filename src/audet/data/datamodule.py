"""``AUDataModule``: train / validation / test loaders of one fold of a prepared dataset.

The validation split is carved from the TRAINING subjects (whole subjects,
:func:`audet.data.folds.split_validation`), so model selection never looks at the test fold
(protocol section 6). ``val_fraction=0`` disables it; ``val_subjects=[...]`` fixes it.

Image decoding errors (a missing or corrupt file) stop the loader with an
:class:`~audet.data.images.ImageReadError` naming the file: prepared datasets are validated when
they are written, so such an error means the folder changed since.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from audet.data.dataset import AUDataset
from audet.data.folds import split_validation
from audet.data.images import worker_init
from audet.data.listfile import read_list
from audet.data.transforms import EvalTransform, TrainTransform

__all__ = ["AUDataModule"]


class AUDataModule(L.LightningDataModule):
    def __init__(self, root, train_prefix: str | None = None, test_prefix: str | None = None, *,
                 aus: Sequence[int] | None = None, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 2, clip: dict | None = None, val_fraction: float = 0.15,
                 val_subjects: Sequence[str] | None = None, seed: int = 0, preprocess: dict | None = None,
                 augment: dict | None = None, image_root=None):
        super().__init__()
        self.root = Path(root)
        self.train_prefix, self.test_prefix = train_prefix, test_prefix
        self._aus = None if aus is None else [int(a) for a in aus]
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.clip = clip
        self.val_fraction = float(val_fraction or 0.0)
        self.fixed_val = None if val_subjects is None else sorted(val_subjects)
        self.seed = int(seed)
        pre = preprocess or {}
        self.train_transform = TrainTransform.from_preprocess(pre, **(augment or {}))
        self.eval_transform = EvalTransform.from_preprocess(pre)
        self.image_root = image_root
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self.train_subjects: list[str] = []
        self.val_subjects: list[str] = []

    @classmethod
    def from_fold(cls, root, fold: int, **kwargs) -> "AUDataModule":
        """Fold ``fold`` (0-based) of ``root/dataset.json``'s ``folds`` list."""
        meta_path = Path(root) / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: is {root} a prepared dataset (`audet prepare`)?")
        folds = json.loads(meta_path.read_text()).get("folds") or []
        if not 0 <= fold < len(folds):
            raise ValueError(f"{root} has {len(folds)} fold(s) (0..{len(folds) - 1}); fold {fold} does not exist")
        return cls(root, folds[fold]["train"], folds[fold]["test"], **kwargs)

    @property
    def aus(self) -> list[int]:
        if self._aus is None:
            ds = self.train_dataset or self.test_dataset
            if ds is None:
                from audet.data.dataset import data_aus

                got = data_aus(self.root)
                if got is None:
                    raise ValueError(f"{self.root}: the AU list is unknown before setup(); pass aus=")
                return got
            return list(ds.aus)
        return list(self._aus)

    def _dataset(self, prefix, transform, subjects=None, lists=None) -> AUDataset:
        return AUDataset(self.root, prefix, aus=self._aus, transform=transform, clip=self.clip, subjects=subjects,
                         image_root=self.image_root, lists=lists)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            if not self.train_prefix:
                raise ValueError("no train_prefix given")
            lists = read_list(self.root, self.train_prefix, image_root=self.image_root)
            subjects = sorted({p.subject for p in lists.info})
            if self.fixed_val is not None:
                unknown = set(self.fixed_val) - set(subjects)
                if unknown:
                    raise ValueError(f"val_subjects {sorted(unknown)} are not training subjects of {self.train_prefix}")
                train, val = [s for s in subjects if s not in self.fixed_val], list(self.fixed_val)
            elif self.val_fraction > 0:
                train, val = split_validation(subjects, self.val_fraction, self.seed)
            else:
                train, val = subjects, []
            self.train_subjects, self.val_subjects = train, val
            self.train_dataset = self._dataset(self.train_prefix, self.train_transform, train, lists)
            self.val_dataset = self._dataset(self.train_prefix, self.eval_transform, val, lists) if val else None
        if stage in (None, "test", "predict") and self.test_dataset is None and self.test_prefix:
            self.test_dataset = self._dataset(self.test_prefix, self.eval_transform)

    @property
    def test_subjects(self) -> list[str]:
        if self.test_dataset is None and self.test_prefix:
            self.setup("test")
        return [] if self.test_dataset is None else list(self.test_dataset.subjects)

    def train_labels(self) -> np.ndarray:
        """Training labels (N, A) int8 with 9 = missing, for the loss weights (AC2D Eq. 14)."""
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset.labels

    def _loader(self, ds, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          worker_init_fn=worker_init, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return self._loader(self.train_dataset, True, self.batch_size)

    def val_dataloader(self):
        if self.train_dataset is None:
            self.setup("fit")
        return [] if self.val_dataset is None else self._loader(self.val_dataset, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        if self.test_dataset is None:
            raise ValueError("no test_prefix given")
        return self._loader(self.test_dataset, False, self.eval_batch_size)
