"""The engine's view of the data: AUDataModule from a config, wrapped for selection and resuming.

:func:`build_datamodule` builds an :class:`audet.data.AUDataModule` with GLOBAL subject ids
(``subjects="global"``: ``batch["subject"]`` indexes one vocabulary over every split).
:class:`FitData` wraps it (or any LightningDataModule with ``train_labels()``) and

- describes the training data as a :class:`audet.models.base.DataInfo` (:meth:`FitData.data_info`:
  AU list, subject vocabulary, training subjects, label statistics, clip) for ``create_model``;

- serves validation dataloader 0 = the validation split (held-out TRAINING subjects) and, with
  ``selection.on_test``, dataloader 1 = the test prefix (the published habit);
- rebuilds the training DataLoader around :class:`EpochShuffleSampler`, whose permutation depends
  only on ``(seed, epoch)``, and :class:`SampleSeeded`, which seeds the random number generators
  (torch, numpy, random) before each sample from ``(seed, epoch, index)``: a sample's augmentation
  does not depend on which worker loads it, on how many workers there are, or on what the worker
  loaded before (persistent workers keep their generators across epochs, so seeding workers once
  is not enough). After an interruption -- mid-epoch or at an epoch boundary -- the resumed run
  sees exactly the batches an uninterrupted run would, with any ``data.num_workers``. The
  sampler's state (seed, epoch) is part of the checkpoint (:meth:`FitData.state_dict`). Under DDP
  the loader keeps ``shuffle=True`` and Lightning installs its (equally seeded) DistributedSampler;
- serves the epoch-end data pass (:meth:`FitData.data_pass_dataloader`: the training set in
  order, with the training transforms), which a ``collect_only`` stage uses as its training loader;
- serves a ``frames`` stage (``FitData.frames``): single training frames, ``batch_size`` x the clip
  length a batch, in the same seeded order, instead of the model's clips;
- serves a ``labels_only`` stage (:meth:`FitData.labels_dataloader`): batches of the training
  labels (``labels``, ``mask``, ``index``) built from :meth:`FitData.training_labels`, without
  building an image dataset or reading a frame, in the same ``(seed, epoch)`` order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from audet.engine.schema import Config, as_config

__all__ = ["LABEL_KEYS", "EpochShuffleSampler", "SampleSeeded", "FitData", "LabelsDataset", "build_datamodule",
           "label_arrays", "label_stats", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index`` in ``epoch`` of a run seeded ``seed``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(index) * 104_729 + 12_345) % (2**31 - 1)


class SampleSeeded(torch.utils.data.Dataset):
    """``dataset`` whose item ``(epoch, index)`` is ``dataset[index]`` drawn with torch, numpy and
    ``random`` seeded by :func:`sample_seed` ``(seed, epoch, index)``.

    In a worker process the generators are simply reseeded; in the main process
    (``num_workers=0``) their state is restored afterwards, so the model's own randomness (dropout)
    does not depend on the data loading either.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        import random

        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        main = torch.utils.data.get_worker_info() is None
        if main:
            saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            return self.dataset[index]
        finally:
            if main:
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])

    def __getattr__(self, name):  # the wrapped dataset's attributes (labels, subjects, ...)
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


#: the keys a ``labels_only`` stage can serve (no image is read)
LABEL_KEYS = ("labels", "mask", "index")


class LabelsDataset(torch.utils.data.Dataset):
    """The training labels as samples ``{"labels": (A,), "mask": (A,), "index": ()}`` (float32 0/1,
    ``index`` = the row), restricted to ``keys``: what a ``labels_only`` stage trains on."""

    def __init__(self, labels: np.ndarray, mask: np.ndarray, keys: Sequence[str] = LABEL_KEYS):
        bad = sorted(set(keys) - set(LABEL_KEYS))
        if bad:
            raise ValueError(f"a labels_only stage serves only {', '.join(LABEL_KEYS)} (no image is read); "
                             f"the model's batch_keys ask for {bad}")
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        self.mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
        self.keys = tuple(keys)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {"labels": self.labels[i], "mask": self.mask[i], "index": torch.tensor(int(i))}
        return {k: item[k] for k in self.keys}


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(n)`` seeded by ``(seed, epoch)``; Lightning calls ``set_epoch``.

    With ``keys=True`` it yields ``(epoch, index)`` pairs, the keys of :class:`SampleSeeded`.
    ``generator`` (reseeded by ``set_epoch``) is handed to the DataLoader so the worker base seed
    is also a function of ``(seed, epoch)``.
    """

    def __init__(self, n: int, seed: int = 0, keys: bool = False):
        self.n, self.seed, self.epoch, self.keys = int(n), int(seed), 0, bool(keys)
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(self._seed() + 1)

    def _seed(self) -> int:
        return (self.seed * 1_000_003 + self.epoch * 7_919) % (2**62)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self._seed())
        order = torch.randperm(self.n, generator=g).tolist()
        if self.keys:
            epoch = self.epoch
            yield from ((epoch, i) for i in order)
        else:
            yield from order


def label_arrays(labels, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, mask)`` float ``(N, A)`` from training labels (``9`` = missing when ``mask`` is None)."""
    y = np.asarray(labels)
    if y.ndim != 2:
        y = y.reshape(-1, y.shape[-1])
    if mask is None:
        m = (y == 0) | (y == 1)
    else:
        m = np.asarray(mask).reshape(y.shape) > 0
    return np.where(m, y == 1, False).astype(np.float32), m.astype(np.float32)


def label_stats(labels: np.ndarray, mask: np.ndarray, frame_subjects: Sequence[str] | None = None) -> dict:
    """``DataInfo.label_stats`` of the training frames."""
    out = {"n_frames": int(labels.shape[0]), "pos": [int(v) for v in (labels * mask).sum(0)],
           "valid": [int(v) for v in mask.sum(0)]}
    if frame_subjects is not None:
        names, counts = np.unique(np.asarray(frame_subjects, dtype=str), return_counts=True)
        out["train_frames_per_subject"] = {str(n): int(c) for n, c in zip(names, counts)}
    return out


def build_datamodule(config: Config | Mapping, *, fold: int | None = None, preprocess: dict | None = None):
    """An :class:`audet.data.AUDataModule` from the ``data`` section (``fold`` overrides ``data.fold``),
    with global subject ids. ``preprocess`` may also be given later (``use_preprocess``)."""
    from audet.data import AUDataModule

    cfg = as_config(config)
    d = cfg.data
    if not d.root:
        raise ValueError("data.root is not set: give the prepared directory, e.g. `audet train CONFIG data.root=DIR`")
    root = Path(d.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory (prepare it with `audet prepare` or `audet synth`)")
    kwargs: dict[str, Any] = dict(aus=d.aus, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                                  num_workers=d.num_workers, val_fraction=d.val_fraction or 0.0, clip=d.clip,
                                  seed=int(cfg.seed or 0), subjects="global", preprocess=preprocess)
    k = fold if fold is not None else d.fold
    if k is not None and not (d.train_prefix and fold is None):
        return AUDataModule.from_fold(root, int(k), **kwargs)
    if not d.train_prefix:
        raise ValueError("set data.fold (a fold of dataset.json) or data.train_prefix/data.test_prefix")
    return AUDataModule(root=root, train_prefix=d.train_prefix, test_prefix=d.test_prefix, **kwargs)


class FitData(L.LightningDataModule):
    """Wraps an AUDataModule: seeded training order, validation (+ test when selecting on test)."""

    def __init__(self, inner, *, seed: int = 0, on_test: bool = False):
        super().__init__()
        self.inner = inner
        self.seed = int(seed)
        self.on_test = bool(on_test)
        self._setup_done: set[str] = set()

    # delegation --------------------------------------------------------------
    def prepare_data(self) -> None:
        if hasattr(self.inner, "prepare_data"):
            self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if stage not in self._setup_done:
            self.inner.setup(stage)
            self._setup_done.add(stage)

    def train_labels(self):
        return self.inner.train_labels()

    def data_info(self, dataset: str | None = None):
        """A :class:`audet.models.base.DataInfo` of the training data.

        From ``inner.describe()`` when the data module has it (:class:`audet.data.AUDataModule`:
        no dataset is built, so the model's preprocessing can still be applied); otherwise from the
        set-up module's ``aus``, ``train_labels()``, ``train/val/test_subjects`` and ``clip``.
        """
        from audet.models.base import DataInfo

        if hasattr(self.inner, "describe"):
            d = self.inner.describe()
            y, m = label_arrays(d["labels"])
            vocab = d.get("subjects") or sorted({*d["train_subjects"], *d["val_subjects"]})
            return DataInfo(aus=d["aus"], subjects=vocab, train_subjects=d["train_subjects"],
                            label_stats=label_stats(y, m, d.get("frame_subjects")), clip=d.get("clip"),
                            dataset=d.get("dataset") or dataset)
        self.setup("fit")
        got = self.inner.train_labels()
        y, m = label_arrays(*got) if isinstance(got, tuple) else label_arrays(got)
        train = self.subjects("train")
        vocab = getattr(self.inner, "subject_vocabulary", None)
        vocab = vocab() if callable(vocab) else None
        if not vocab:
            vocab = sorted({*train, *self.subjects("val"), *self.subjects("test")})
        return DataInfo(aus=self.aus, subjects=vocab, train_subjects=train, label_stats=label_stats(y, m),
                        clip=getattr(self.inner, "clip", None), dataset=dataset)

    def training_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, mask)`` float ``(N, A)`` of the training frames (input of ``loss_context``)."""
        if hasattr(self.inner, "describe"):
            return label_arrays(self.inner.describe()["labels"])
        got = self.inner.train_labels()
        return label_arrays(*got) if isinstance(got, tuple) else label_arrays(got)

    @property
    def aus(self) -> list[int]:
        return list(self.inner.aus)

    @property
    def has_val(self) -> bool:
        """A non-empty validation split (``inner.val_dataset``, as AUDataModule sets it in ``setup``)."""
        ds = getattr(self.inner, "val_dataset", None)
        return ds is not None and len(ds) > 0

    @property
    def val_names(self) -> list[str]:
        names = ["val"] if self.has_val else []
        if self.on_test:
            names.append("test")
        return names

    # loaders -----------------------------------------------------------------
    #: set by the engine for a ``collect_only`` stage: the training loader is the data-pass loader
    collect_only: bool = False
    #: set by the engine when a run resumes: the epoch it resumes at
    resume_epoch: int = 0
    #: set by the engine for a ``labels_only`` stage: the batch keys to serve (None: a normal stage)
    labels_only: tuple[str, ...] | None = None
    #: set by the engine for a ``frames`` stage: single training frames instead of clips
    frames: bool = False

    def labels_dataloader(self, keys: Sequence[str] = LABEL_KEYS) -> DataLoader:
        """Batches of the training labels only (no image dataset is built, no frame is read), in
        the seeded ``(seed, epoch)`` order of :class:`EpochShuffleSampler`."""
        labels, mask = self.training_labels()
        ds = LabelsDataset(labels, mask, keys)
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        bs = int(getattr(self.inner, "batch_size", 0) or 32)
        if world > 1:
            return DataLoader(ds, batch_size=bs, shuffle=True)
        sampler = EpochShuffleSampler(len(ds), self.seed)
        sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)
        return DataLoader(ds, batch_size=bs, sampler=sampler, generator=sampler.generator)

    def train_dataloader(self) -> DataLoader:
        if self.labels_only is not None:
            return self.labels_dataloader(self.labels_only)
        if self.collect_only:
            return self.data_pass_dataloader()
        if self.frames and not hasattr(self.inner, "train_frames_dataloader"):
            raise ValueError(f"a frames stage needs a data module with train_frames_dataloader(); "
                             f"{type(self.inner).__name__} has none")
        base = self.inner.train_frames_dataloader() if self.frames else self.inner.train_dataloader()
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        # Lightning creates the loader's iterator (and DataLoader workers fetch the first indices)
        # before it restores the epoch of a resumed run: start at the epoch the run resumes at
        epoch = max(trainer.current_epoch if trainer is not None else 0, int(self.resume_epoch or 0))
        common = dict(
            batch_size=base.batch_size,
            num_workers=base.num_workers,
            collate_fn=base.collate_fn,
            pin_memory=base.pin_memory,
            drop_last=base.drop_last,
            worker_init_fn=base.worker_init_fn,
            persistent_workers=base.persistent_workers if base.num_workers > 0 else False,
        )
        if world > 1:  # Lightning swaps in a DistributedSampler seeded by the global seed
            return DataLoader(base.dataset, shuffle=True, **common)
        sampler = EpochShuffleSampler(len(base.dataset), self.seed, keys=True)
        sampler.set_epoch(epoch)
        self._sampler = sampler
        return DataLoader(SampleSeeded(base.dataset, self.seed), sampler=sampler, generator=sampler.generator, **common)

    # the sampler's state in Lightning's checkpoint ---------------------------------------------
    def state_dict(self) -> dict:
        """What decides the training batches: the shuffle seed, the epoch and the per-sample seeding
        scheme (saved in ``last.ckpt``; checked on resume)."""
        sampler = getattr(self, "_sampler", None)
        return {"seed": self.seed, "epoch": int(sampler.epoch) if sampler is not None else 0,
                "sample_seeding": "sample_seed(seed, epoch, index)"}

    def load_state_dict(self, state: dict) -> None:
        if state and "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"the checkpoint's data order was seeded {state['seed']}, this run {self.seed}; "
                             "resume with the same seed or start afresh (--overwrite)")

    def val_dataloader(self):
        loaders = []
        if self.has_val:
            loaders.append(self.inner.val_dataloader())
        if self.on_test:
            self.inner.setup("test")
            loaders.append(self.inner.test_dataloader())
        return loaders

    def test_dataloader(self):
        return self.inner.test_dataloader()

    def data_pass_dataloader(self) -> DataLoader:
        """The training set in order, training transforms (the epoch-end data pass)."""
        base = self.inner.train_dataloader()
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(base.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                         shuffle=False)
        return DataLoader(base.dataset, batch_size=base.batch_size, sampler=sampler, shuffle=False,
                          num_workers=base.num_workers, collate_fn=base.collate_fn)

    def subjects(self, split: str) -> list[str]:
        """Subject ids of a split (``train``/``val``/``test``) as the inner module exposes them."""
        v = getattr(self.inner, f"{split}_subjects", None)
        if v is not None:
            return list(v() if callable(v) else v)
        return []


def shared_aus(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """AUs of ``a`` that ``b`` also has, in ``a``'s order."""
    bs = {int(x) for x in b}
    return [int(x) for x in a if int(x) in bs]
