"""audet.data.datamodule.AUDataModule on a tiny prepared directory (tests/helpers.make_prepared):
validation subjects, from_fold, train_labels, DataLoader batches with 0 and 2 workers."""
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import make_prepared

from audet.data.datamodule import AUDataModule
from audet.data.images import collate
from audet.data.listfile import read_list

AUS = (1, 2, 4, 6)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # 9 subjects in 3 parts: each training prefix has 6 subjects of 3 frames
    return make_prepared(tmp_path_factory.mktemp("dm") / "prep", n_subjects=9, frames=3, aus=AUS, missing=0.1)


def _dm(root, **kw):
    kw = {"batch_size": 4, "num_workers": 0, "val_fraction": 0.34, "seed": 0, **kw}
    return AUDataModule.from_fold(root, 0, **kw)


def test_validation_subjects_are_training_subjects_disjoint_from_train_and_test(root):
    dm = _dm(root)
    dm.setup("fit")
    train_subjects = sorted({p.subject for p in read_list(root, dm.train_prefix).info})
    test_subjects = sorted({p.subject for p in read_list(root, dm.test_prefix).info})
    assert len(train_subjects) == 6 and len(test_subjects) == 3
    train, val = set(dm.train_subjects), set(dm.val_subjects)
    assert len(val) == 2 and not train & val and sorted(train | val) == train_subjects
    assert not val & set(dm.test_subjects) and not train & set(dm.test_subjects)
    assert sorted(dm.test_subjects) == test_subjects
    # the datasets hold exactly those subjects
    assert dm.train_dataset.subjects == sorted(train) and dm.val_dataset.subjects == sorted(val)
    assert len(dm.train_dataset) == 3 * 4 and len(dm.val_dataset) == 3 * 2


def test_validation_split_is_deterministic_for_a_seed(root):
    a, b = _dm(root, seed=5), _dm(root, seed=5)
    a.setup("fit")
    b.setup("fit")
    assert a.val_subjects == b.val_subjects and a.train_subjects == b.train_subjects
    splits = set()
    for seed in range(6):
        dm = _dm(root, seed=seed)
        dm.setup("fit")
        splits.add(tuple(dm.val_subjects))
    assert len(splits) > 1  # the seed matters
    fixed = _dm(root, val_subjects=[a.train_subjects[0]])
    fixed.setup("fit")
    assert fixed.val_subjects == [a.train_subjects[0]] and a.train_subjects[0] not in fixed.train_subjects
    none = _dm(root, val_fraction=0)
    none.setup("fit")
    assert none.val_dataset is None and none.val_subjects == [] and none.val_dataloader() == []


def test_from_fold_reads_dataset_json(root, tmp_path):
    folds = json.loads((root / "dataset.json").read_text())["folds"]
    for k in range(3):
        dm = AUDataModule.from_fold(root, k, num_workers=0)
        assert (dm.train_prefix, dm.test_prefix) == (folds[k]["train"], folds[k]["test"])
    assert (folds[0]["train"], folds[0]["test"]) == ("SYNTH_combine_1_2", "SYNTH_part3")
    # a copy whose dataset.json lists other folds: from_fold follows the file, not a naming rule
    other = tmp_path / "other"
    shutil.copytree(root, other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["folds"] = [{"train": "SYNTH_all", "test": "SYNTH_part2"}]
    (other / "dataset.json").write_text(json.dumps(meta))
    dm = AUDataModule.from_fold(other, 0, num_workers=0, val_fraction=0.2)
    assert (dm.train_prefix, dm.test_prefix) == ("SYNTH_all", "SYNTH_part2")
    dm.setup()
    assert len(dm.train_subjects) + len(dm.val_subjects) == 9 and dm.aus == list(AUS)
    with pytest.raises(ValueError, match="fold 1 does not exist"):
        AUDataModule.from_fold(other, 1)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        AUDataModule.from_fold(tmp_path, 0)


def test_train_labels_are_the_training_frames_labels(root):
    dm = _dm(root)
    labels = dm.train_labels()
    assert labels.shape == (len(dm.train_subjects) * 3, len(AUS)) == (12, 4)
    assert labels.dtype == np.int8 and set(np.unique(labels)) <= {0, 1, 9}
    lf = read_list(root, dm.train_prefix)
    keep = [i for i, p in enumerate(lf.info) if p.subject in set(dm.train_subjects)]
    np.testing.assert_array_equal(labels, lf.labels[keep])
    sub = _dm(root, aus=[6, 1])
    np.testing.assert_array_equal(sub.train_labels(), lf.labels[keep][:, [3, 0]])
    assert sub.aus == [6, 1]


def test_dataloader_batch_with_no_workers(root):
    dm = _dm(root)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 176, 176) and batch["image"].dtype == torch.float32
    assert batch["labels"].shape == (4, 4) and batch["mask"].shape == (4, 4)
    assert batch["landmarks"].shape == (4, 49, 2) and batch["subcenters"].shape == (4, 4, 2, 2)
    for key in ("subject", "sequence", "frame", "index"):
        assert batch[key].shape == (4,) and batch[key].dtype == torch.int64
    # training subjects only
    names = [dm.train_dataset.subjects[int(s)] for s in batch["subject"]]
    assert set(names) <= set(dm.train_subjects)
    test = next(iter(dm.test_dataloader()))
    assert test["image"].shape[1:] == (3, 176, 176)


def _epoch_order(dm) -> list[int]:
    return [i for batch in dm.train_dataloader() for i in batch["index"].tolist()]


def test_training_order_is_shuffled_and_follows_the_seed(root):
    dm = _dm(root, seed=2)
    dm.setup("fit")
    listed = dm.train_dataset.rows.tolist()  # the list order, what an unshuffled loader gives
    order = _epoch_order(dm)
    assert sorted(order) == sorted(listed) and len(listed) >= 8  # every training frame once
    assert order != listed  # shuffled (a fixed order is 1 of 8! or more)
    assert _epoch_order(_dm(root, seed=2)) == order  # the same seed, the same order
    assert _epoch_order(_dm(root, seed=3)) != order  # another seed, another order
    # evaluation is not shuffled
    test = [i for b in dm.test_dataloader() for i in b["index"].tolist()]
    assert test == dm.test_dataset.rows.tolist()


def test_dataloader_clips_stack(root):
    dm = _dm(root, clip={"offsets": [-1, 0, 1]})
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 3, 176, 176) and batch["labels"].shape == (4, 3, 4)


@pytest.mark.parametrize("clip", [None, {"offsets": [-1, 0, 1]}])
def test_collate_equals_default_collate(root, clip):
    dm = _dm(root, clip=clip)
    dm.setup("fit")
    samples = [dm.val_dataset[i] for i in range(3)]
    want = torch.utils.data.default_collate(samples)
    got = collate(samples)
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


@pytest.mark.slow
def test_two_workers_give_the_same_samples(root):
    ref = _dm(root, eval_batch_size=5)
    par = _dm(root, eval_batch_size=5, num_workers=2)
    a = list(ref.test_dataloader())
    b = list(par.test_dataloader())
    c = list(torch.utils.data.DataLoader(par.test_dataset, batch_size=5, num_workers=2, collate_fn=collate))
    assert len(a) == len(b) == len(c) == 2  # 9 test frames in batches of 5
    for x, y in [*zip(a, b), *zip(a, c)]:
        assert torch.equal(x["index"], y["index"])
        assert torch.equal(x["labels"], y["labels"]) and torch.equal(x["mask"], y["mask"])
        assert torch.equal(x["image"], y["image"])  # eval transform: deterministic
