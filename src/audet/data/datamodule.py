"""``AUDataModule``: train / validation / test loaders of one fold of a prepared dataset.

- train: the training prefix minus the validation subjects, :class:`TrainTransform`;
- val: held-out TRAINING subjects (whole subjects, :func:`audet.data.folds.split_validation`),
  :class:`EvalTransform`, so model selection never looks at the test fold (protocol section 6).
  ``val_fraction=0`` disables it; ``val_subjects=[...]`` fixes it;
- test: the test prefix, :class:`EvalTransform`.

Subject ids: with ``subjects="global"`` (or an explicit list) every split's ``batch["subject"]``
indexes ONE vocabulary (:func:`audet.data.dataset.subject_vocabulary`: all subjects of the
prepared dataset), so train, validation and test ids never collide; by default each dataset
indexes its own subjects.

:meth:`AUDataModule.describe` tells what the training data is (AU list, subject vocabulary,
training subjects, training labels) before any dataset is built, and
:meth:`AUDataModule.use_preprocess` sets a model's preprocessing (crop, normalisation, clip)
afterwards -- so a model can be built from the data and the data served as the model wants.

Clips: ``clip`` applies to all three. For runs (``{"length": t}``) the validation and test
datasets always use ``windows="disjoint"`` with padding, so every frame is scored exactly once.

Image decoding errors (a missing or corrupt file) stop the loader with an
:class:`~audet.data.images.ImageReadError` naming the file (raised in the worker and re-raised
by the DataLoader in the main process). The list files are validated when the datasets are built
(:class:`~audet.data.listfile.ListFileError`), including that every image exists, so such an
error during training means a file changed or is corrupt on disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from audet.clip import eval_clip, parse_clip, served_clip
from audet.data.dataset import AUDataset, subject_vocabulary
from audet.data.folds import split_validation
from audet.data.images import collate, worker_init
from audet.data.listfile import read_list
from audet.data.meta import data_aus, read_dataset_meta, read_fold
from audet.data.transforms import EvalTransform, TrainTransform
from audet.facs import resolve_aus

__all__ = ["AUDataModule"]


class AUDataModule(L.LightningDataModule):
    """Loaders of one train/test prefix pair of a prepared directory.

    Args:
        root: prepared directory (``dataset.json``, ``list/``, ``images/``).
        train_prefix, test_prefix: list prefixes (either may be None for test-only / train-only use).
        aus: AU numbers (subset/order of the data's AUs); default all of ``dataset.json``'s.
        batch_size: training batch size; ``eval_batch_size`` (default the same) for val/test.
        num_workers: DataLoader workers (persistent when > 0; one OpenCV/torch thread each).
        clip: clip spec of :class:`AUDataset` (None = frames); with a model's preprocessing
            (:meth:`use_preprocess`) only ``windows``/``pad``, or the model's own values.
        val_fraction: share of training SUBJECTS held out for validation (0 = no validation set).
        val_subjects: explicit validation subjects (overrides ``val_fraction``).
        seed: seeds the validation split and the training shuffle order.
        crop: crop size (overrides ``preprocess["crop_size"]``; default 176).
        preprocess: a model's preprocessing dict (``crop_size``, ``mean``, ``std``).
        augment: extra :class:`TrainTransform` arguments (``flip_p``, ``brightness``, ``contrast``).
        image_root: images folder if not ``root/images``.
        pin_memory, drop_last: passed to the training DataLoader (``pin_memory`` to all).
        subjects: None (each dataset indexes its own subjects), ``"global"`` (the vocabulary of
            :func:`~audet.data.dataset.subject_vocabulary` over the dataset and both prefixes) or an
            explicit sorted list: the names ``batch["subject"]`` indexes in every split.
    """

    def __init__(self, root, train_prefix: str | None = None, test_prefix: str | None = None, *,
                 aus: Sequence[int] | None = None, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 2, clip: dict | None = None, val_fraction: float = 0.15,
                 val_subjects: Sequence[str] | None = None, seed: int = 0, crop: int | None = None,
                 preprocess: dict | None = None, augment: dict | None = None, image_root=None,
                 pin_memory: bool = False, drop_last: bool = False,
                 subjects: Sequence[str] | str | None = None):
        super().__init__()
        self.root = Path(root)
        self.train_prefix, self.test_prefix = train_prefix, test_prefix
        self._aus = None if aus is None else [int(a) for a in aus]
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        #: the clip given to the constructor (``data.clip``): checked against a model's; one with
        #: only ``windows``/``pad`` waits for the model's clip (:meth:`use_preprocess`)
        self._data_clip = dict(clip) if clip else None
        self.clip = parse_clip(clip) if clip and ("length" in clip or "offsets" in clip) else None
        self.val_fraction = float(val_fraction or 0.0)
        self.fixed_val = None if val_subjects is None else sorted(str(s) for s in val_subjects)
        self.seed = int(seed)
        self._crop = crop
        self._augment = dict(augment or {})
        self.use_preprocess(preprocess)
        self.image_root = image_root
        if isinstance(subjects, str) and subjects != "global":
            raise ValueError(f"subjects must be None, 'global' or a list of subject ids; got {subjects!r}")
        self._subjects_spec = subjects if isinstance(subjects, str) or subjects is None else sorted(map(str, subjects))
        self._vocab: list[str] | None = None
        self._train_lists = None
        self.pin_memory = bool(pin_memory)
        self.drop_last = bool(drop_last)
        self.train_dataset: AUDataset | None = None
        self._train_frames: AUDataset | None = None  # single frames of a clip module (frames stage)
        self.val_dataset: AUDataset | None = None
        self.test_dataset: AUDataset | None = None
        self.train_subjects: list[str] = []
        self.val_subjects: list[str] = []

    @classmethod
    def from_fold(cls, root, fold_index: int, **kwargs) -> "AUDataModule":
        """Fold ``fold_index`` (0-based) of ``root/dataset.json``'s ``folds`` list; ``aus`` default
        from ``dataset.json``."""
        f = read_fold(root, fold_index)
        if "train" not in f:
            raise ValueError(f"fold {fold_index} of {root} trains on another dataset ({f.get('train_dataset')}); "
                             "give that dataset's prepared directory and prefixes instead")
        return cls(root, f["train"], f["test"], **kwargs)

    def use_preprocess(self, preprocess: dict | None, *, model: str | None = None) -> None:
        """Serve the data as ``preprocess`` (a model's: crop size, mean/std, clip) wants.

        Must be called before :meth:`setup` builds the datasets. The model owns the clip: a
        ``clip`` given to the constructor may only add ``windows``/``pad`` (how training runs are
        drawn) or repeat the model's values; one that disagrees raises
        :class:`audet.clip.ClipMismatch` naming both (:func:`audet.clip.served_clip`)."""
        if getattr(self, "train_dataset", None) is not None:
            raise RuntimeError("use_preprocess() after setup(): the datasets are already built")
        pre = dict(preprocess or {})
        if self._crop is not None:
            pre["crop_size"] = int(self._crop)
        if preprocess is not None:
            self.clip = served_clip(pre.get("clip"), self._data_clip, model=f"model {model}" if model else "the model")
        self.train_transform = TrainTransform.from_preprocess(pre, **self._augment)
        self.eval_transform = EvalTransform.from_preprocess(pre)

    def subject_vocabulary(self) -> list[str] | None:
        """The names ``batch["subject"]`` indexes in every split (None: per-dataset subjects)."""
        if self._subjects_spec is None:
            return None
        if self._vocab is None:
            if isinstance(self._subjects_spec, list):
                self._vocab = list(self._subjects_spec)
            else:
                self._vocab = subject_vocabulary(self.root, [p for p in (self.train_prefix, self.test_prefix) if p],
                                                 image_root=self.image_root)
        return list(self._vocab)

    def _lists(self):
        if self._train_lists is None:
            if not self.train_prefix:
                raise ValueError("no train_prefix given")
            self._train_lists = read_list(self.root, self.train_prefix, image_root=self.image_root)
        return self._train_lists

    def _split(self, lists) -> tuple[list[str], list[str]]:
        subjects = sorted({p.subject for p in lists.info})
        if self.fixed_val is not None:
            unknown = set(self.fixed_val) - set(subjects)
            if unknown:
                raise ValueError(f"val_subjects {sorted(unknown)} are not training subjects of {self.train_prefix}")
            if set(self.fixed_val) == set(subjects):
                raise ValueError(f"val_subjects would leave no training subject in {self.train_prefix}")
            return [s for s in subjects if s not in self.fixed_val], list(self.fixed_val)
        if self.val_fraction > 0:
            return split_validation(subjects, self.val_fraction, self.seed)
        return subjects, []

    def describe(self) -> dict:
        """What the training data is, before any dataset is built (cheap: the list files only).

        ``{"aus", "subjects" (vocabulary or None), "train_subjects", "val_subjects", "labels"
        ((N, A) int8 of the training frames, 9 = missing), "frame_subjects" ((N,) subject of each
        training frame), "clip", "dataset"}``."""
        lists = self._lists()
        train, val = self._split(lists)
        keep = set(train)
        rows = np.asarray([i for i, p in enumerate(lists.info) if p.subject in keep], dtype=np.int64)
        have = data_aus(self.root, lists.num_aus, lists.info[0].dataset if len(lists) else None)
        aus, cols = resolve_aus(lists.num_aus if have is None else have, self._aus, source=self.train_prefix)
        dataset = read_dataset_meta(self.root, required=False).get("dataset")
        return {
            "aus": list(aus),
            "subjects": self.subject_vocabulary(),
            "train_subjects": list(train),
            "val_subjects": list(val),
            "labels": lists.labels[rows][:, cols],
            "frame_subjects": [lists.info[i].subject for i in rows],
            "clip": self.clip,
            "dataset": dataset,
        }

    @property
    def aus(self) -> list[int]:
        if self._aus is not None:
            return list(self._aus)
        ds = self.train_dataset or self.test_dataset
        if ds is not None:
            return list(ds.aus)
        got = data_aus(self.root)
        if got is None:
            raise ValueError(f"{self.root}: the AU list is unknown before setup(); pass aus=")
        return got

    def _eval_clip(self) -> dict | None:
        return eval_clip(self.clip)

    def setup(self, stage: str | None = None) -> None:
        vocab = self.subject_vocabulary()
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            lists = self._lists()
            train, val = self._split(lists)
            self.train_subjects, self.val_subjects = train, val
            self.train_dataset = AUDataset(self.root, self.train_prefix, aus=self._aus, transform=self.train_transform,
                                           clip=self.clip, subjects=train, lists=lists, subject_vocab=vocab)
            self.val_dataset = (AUDataset(self.root, self.train_prefix, aus=self._aus, transform=self.eval_transform,
                                          clip=self._eval_clip(), subjects=val, lists=lists, subject_vocab=vocab)
                                if val else None)
        if stage in (None, "test", "predict") and self.test_dataset is None and self.test_prefix:
            self.test_dataset = AUDataset(self.root, self.test_prefix, aus=self._aus, transform=self.eval_transform,
                                          clip=self._eval_clip(), image_root=self.image_root, subject_vocab=vocab)

    @property
    def test_subjects(self) -> list[str]:
        if self.test_dataset is None and self.test_prefix:
            self.setup("test")
        return [] if self.test_dataset is None else list(self.test_dataset.subjects)

    def train_labels(self) -> np.ndarray:
        """Labels of the training frames (validation subjects excluded), ``(N, A)`` int8 with
        9 = missing: the input of the AU loss weights (AC2D Eq. 14; mask = labels != 9)."""
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset.labels

    def _loader(self, ds, train: bool, batch_size: int | None = None) -> DataLoader:
        kw = {}
        if train:
            kw["generator"] = torch.Generator().manual_seed(self.seed)
        if batch_size is None:
            batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(ds, batch_size=batch_size, shuffle=train,
                          num_workers=self.num_workers, worker_init_fn=worker_init, collate_fn=collate,
                          persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory,
                          drop_last=self.drop_last if train else False, **kw)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        return self._loader(self.train_dataset, True)

    def train_frames_dataloader(self) -> DataLoader:
        """The training subjects' frames one by one (training transform), ``batch_size`` x the clip
        length of them a batch: as many frames a step as a batch of clips, drawn across sequences
        (a training stage with ``frames: true``). Without clips it is :meth:`train_dataloader`."""
        if self.train_dataset is None:
            self.setup("fit")
        length = int((self.clip or {}).get("length") or 1)
        if length <= 1:
            return self.train_dataloader()
        if self._train_frames is None:
            self._train_frames = AUDataset(self.root, self.train_prefix, aus=self._aus, transform=self.train_transform,
                                           clip=None, subjects=self.train_subjects, lists=self._lists(),
                                           subject_vocab=self.subject_vocabulary())
        return self._loader(self._train_frames, True, batch_size=self.batch_size * length)

    def val_dataloader(self):
        if self.train_dataset is None:
            self.setup("fit")
        return [] if self.val_dataset is None else self._loader(self.val_dataset, False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        if self.test_dataset is None:
            raise ValueError("no test_prefix given")
        return self._loader(self.test_dataset, False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
