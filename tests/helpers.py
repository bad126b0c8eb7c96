"""Test helpers: a tiny prepared dataset (random JPEGs + list files + dataset.json) and configs.

``make_prepared(root)`` writes the layout of ``audet prepare`` / ``audet synth``::

    root/dataset.json
    root/list/<prefix>_{path,land,AUoccur,weight,p_n_weight}.txt   (via audet.data.listfile.write_list)
    root/images/SYNTH/<subject>/T1/<frame>.jpg

with ``n_parts`` subject-exclusive parts ``SYNTH_part<k>`` and their training combinations
``SYNTH_combine_i_j`` (the published naming), and folds ``[{"train": ..., "test": ...}]``.
Each AU brightens its own horizontal band of the face, so a small CNN can learn something.
"""
from __future__ import annotations

import contextlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np

DATASET = "SYNTH"


def _template49(size: int) -> np.ndarray:
    """A plausible 49-point face in a ``size`` x ``size`` aligned image (brows, nose, eyes, mouth)."""
    s = size / 200.0
    pts = []
    pts += [(60 + 8 * i, 70 - 3 * min(i, 4 - i)) for i in range(5)]  # left brow 0-4
    pts += [(112 + 8 * i, 70 - 3 * min(i, 4 - i)) for i in range(5)]  # right brow 5-9
    pts += [(100, 80 + 8 * i) for i in range(4)]  # nose bridge 10-13
    pts += [(88 + 6 * i, 118 - 2 * (2 - abs(i - 2))) for i in range(5)]  # nose bottom 14-18
    eye = [(-12, 0), (-6, -4), (6, -4), (12, 0), (6, 4), (-6, 4)]
    pts += [(76 + dx, 90 + dy) for dx, dy in eye]  # left eye 19-24
    pts += [(124 + dx, 90 + dy) for dx, dy in eye]  # right eye 25-30
    outer = [(-24, 0), (-16, -6), (-6, -9), (0, -8), (6, -9), (16, -6), (24, 0), (16, 8), (6, 11), (0, 11), (-6, 11), (-16, 8)]
    pts += [(100 + dx, 145 + dy) for dx, dy in outer]  # outer lip 31-42
    inner = [(-10, -2), (0, -3), (10, -2), (10, 2), (0, 3), (-10, 2)]
    pts += [(100 + dx, 145 + dy) for dx, dy in inner]  # inner lip 43-48
    arr = np.asarray(pts, dtype=np.float64) * s
    assert arr.shape == (49, 2)
    return arr


def make_prepared(
    root: str | Path,
    *,
    n_subjects: int = 6,
    frames: int = 6,
    aus: tuple[int, ...] = (1, 2, 4, 6),
    n_parts: int = 3,
    size: int = 200,
    seed: int = 0,
    missing: float = 0.0,
    dataset: str = DATASET,
) -> Path:
    """Write a tiny prepared dataset under ``root``; return ``root``."""
    from PIL import Image

    from audet.data.listfile import write_list

    root = Path(root)
    rng = np.random.default_rng(seed)
    subjects = [f"S{i:03d}" for i in range(n_subjects)]
    parts = {f"part{k + 1}": subjects[k::n_parts] for k in range(n_parts)}
    tmpl = _template49(size)
    rows: dict[str, tuple[list, list, list]] = {}
    A = len(aus)
    for subj in subjects:
        paths, lms, labs = [], [], []
        for f in range(frames):
            lab = (rng.random(A) < 0.4).astype(np.int64)
            lab[f % A] = 1 if f < A else lab[f % A]  # every AU positive somewhere
            if missing > 0:
                lab = np.where(rng.random(A) < missing, 9, lab)
            img = rng.integers(90, 140, size=(size, size, 3)).astype(np.float64)
            band = size // (A + 1)
            for j in range(A):
                if lab[j] == 1:
                    img[j * band:(j + 1) * band, :, j % 3] += 90
            rel = f"{dataset}/{subj}/T1/{f + 1:04d}.jpg"
            out = root / "images" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, quality=90)
            paths.append(rel)
            lms.append(tmpl + rng.normal(0, 1.0, tmpl.shape))
            labs.append(lab)
        rows[subj] = (paths, lms, labs)

    def write(prefix: str, subs: list[str], weights: bool) -> None:
        paths = [p for s in subs for p in rows[s][0]]
        lms = np.asarray([m for s in subs for m in rows[s][1]])
        labs = np.asarray([lab for s in subs for lab in rows[s][2]])
        write_list(root, prefix, paths, lms, labs, write_weights=weights)

    folds = []
    prefixes = {}
    for k in range(n_parts):
        write(f"{dataset}_part{k + 1}", parts[f"part{k + 1}"], False)
        prefixes[f"{dataset}_part{k + 1}"] = {"parts": [f"part{k + 1}"], "train": False}
    for combo in combinations(range(1, n_parts + 1), n_parts - 1):
        prefix = f"{dataset}_combine_{'_'.join(map(str, combo))}"
        write(prefix, [s for c in combo for s in parts[f"part{c}"]], True)
        prefixes[prefix] = {"parts": [f"part{c}" for c in combo], "train": True}
    all_prefix = f"{dataset}_all"
    write(all_prefix, subjects, True)
    for k in range(n_parts):  # fold 0 tests on the last part (published ordering)
        test = n_parts - k
        train = [p for p in range(1, n_parts + 1) if p != test]
        folds.append({"train": f"{dataset}_combine_{'_'.join(map(str, train))}", "test": f"{dataset}_part{test}"})
    info = {
        "dataset": dataset,
        "aus": list(aus),
        "parts": parts,
        "folds": folds,
        "prefixes": prefixes,
        "images": "images",
        "image_format": "jpg",
        "image_size": size,
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    return root


def tiny_config(root: str | Path, out: str | Path, **overrides) -> dict:
    """A resolved config for ``resnet_tiny`` (width 4) on a :func:`make_prepared` directory."""
    from audet.engine.config import resolve_config

    raw = {
        "name": "tiny",
        "seed": 3,
        "model": {"name": "resnet_tiny", "args": {"width": 4}},
        "data": {"root": str(root), "fold": 0, "batch_size": 4, "num_workers": 0, "val_fraction": 0.25},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "trainer": {"max_epochs": 2, "progress_bar": False, "log_every_n_steps": 1, "tensorboard": False,
                    "accelerator": "cpu"},
        "output": {"dir": str(out)},
    }
    return resolve_config(raw, overrides, "tiny_config")


# --------------------------------------------------------------------------------------------
# an in-memory datamodule with the AUDataModule interface the engine uses (engine mechanics
# tests that must not depend on image decoding)
# --------------------------------------------------------------------------------------------
def tensor_datamodule(aus=(1, 2, 4), n_train=48, n_val=16, n_test=16, size=32, seed=0, noise=0.1, num_workers=0):
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    class _DS(Dataset):
        def __init__(self, n, subjects, s):
            g = torch.Generator().manual_seed(s)
            A = len(aus)
            self.y = (torch.rand(n, A, generator=g) < 0.35).float()
            self.y[0] = 1.0
            self.x = torch.randn(n, 3, size, size, generator=g) * 0.5
            for j in range(A):  # AU j brightens channel j % 3 of band j
                band = size // A
                self.x[:, j % 3, j * band:(j + 1) * band] += self.y[:, j, None, None] * 1.5
            self.subjects = list(subjects)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            # random augmentation noise from the global RNG: resuming must reproduce it
            x = self.x[i] + noise * torch.randn(self.x[i].shape)
            A = len(aus)
            sub = torch.tensor([[[0.3, 0.2], [0.7, 0.2]]]).repeat(A, 1, 1) * size  # (A, 2, 2) sub-centres
            sub[:, :, 1] += torch.arange(A)[:, None] * (size * 0.6 / A)
            return {"image": x, "labels": self.y[i], "mask": torch.ones_like(self.y[i]), "subcenters": sub,
                    "subject": torch.tensor(i % len(self.subjects)), "index": torch.tensor(i)}

    class TensorAUData(L.LightningDataModule):
        def __init__(self, batch_size=8):
            super().__init__()
            self.aus = list(aus)
            self.batch_size = batch_size
            self.train_dataset = _DS(n_train, ["S1", "S2", "S3"], seed)
            self.val_dataset = _DS(n_val, ["S4"], seed + 1)
            self.test_dataset = _DS(n_test, ["S5", "S6"], seed + 2)
            self.test_prefix = "test"
            self.train_subjects, self.val_subjects, self.test_subjects = ["S1", "S2", "S3"], ["S4"], ["S5", "S6"]

        def setup(self, stage=None):
            pass

        def train_labels(self):
            return self.train_dataset.y.numpy()

        def train_dataloader(self):
            return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, num_workers=num_workers,
                              persistent_workers=num_workers > 0)  # as AUDataModule

        def val_dataloader(self):
            return DataLoader(self.val_dataset, batch_size=self.batch_size)

        def test_dataloader(self):
            return DataLoader(self.test_dataset, batch_size=self.batch_size)

    return TensorAUData()


def tensor_config(out, **overrides) -> dict:
    """A resolved config for ``resnet_tiny`` (width 4) on :func:`tensor_datamodule`."""
    from audet.engine.config import resolve_config

    raw = {
        "name": "tensor",
        "seed": 5,
        "model": {"name": "resnet_tiny", "args": {"width": 4, "dropout": 0.2}},
        "data": {"batch_size": 8, "num_workers": 0},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "trainer": {"max_epochs": 2, "progress_bar": False, "log_every_n_steps": 1, "tensorboard": False,
                    "accelerator": "cpu"},
        "output": {"dir": str(out)},
    }
    return resolve_config(raw, overrides, "tensor_config")


# ---------------------------------------------------------------------------------------------
# the authors' reference files in ../shared: only parity tests use them, and skip when absent
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "reference" / "golden"
REFERENCE = SHARED / "reference" / "original-checkpoints"


def parity_marks(*needed: Path) -> list:
    """A parity module's ``pytestmark``: marked ``parity``, skipped when a golden file is absent."""
    import pytest

    missing = [str(p) for p in needed if not Path(p).is_file()]
    return [pytest.mark.parity, pytest.mark.skipif(bool(missing), reason=f"golden files not found: {', '.join(missing)}")]


def golden_io(folder: Path) -> dict:
    """A golden case's ``io.safetensors``, cloned: safetensors may hand out memory that is not
    64-byte aligned, which changes the CPU kernel path (golden/README.md)."""
    from safetensors.torch import load_file

    return {k: v.clone() for k, v in load_file(str(Path(folder) / "io.safetensors")).items()}


@contextlib.contextmanager
def one_thread():
    """One torch thread inside the block, as the golden outputs were made."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reference_layout(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, kind)`` per row of an original-checkpoints listing
    (``name<TAB>shape<TAB>numel<TAB>kind``; kind is ``parameter`` or ``buffer``)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("name\t"):
            continue
        name, shape, _numel, kind = line.split("\t")
        rows.append((name, tuple(json.loads(shape)), kind))
    return rows


def randomize(model, seed: int = 0, skip: tuple[str, ...] = ()):
    """Random values like the golden files' (golden/README.md): W ~ N(0, 1/fan_in), bias ~ N(0, 0.1),
    norm weights ~ U(0.5, 1.5), running_var ~ U(0.5, 2.0); buffers named with a ``skip`` prefix
    (e.g. a subject dictionary) and integer buffers are left as they are. Returns ``model``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or name.startswith(skip):
                continue
            if name.endswith("running_var") or (t.ndim == 1 and name.endswith("weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g) * (1.5 if name.endswith("running_var") else 1.0))
            elif t.ndim >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model
