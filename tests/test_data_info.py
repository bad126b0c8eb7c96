"""Construction from data: global subject ids across splits, DataInfo from the prepared data (label
statistics by hand), recorded in checkpoints and restored by load_checkpoint."""
import json

import numpy as np
import pytest
import torch

from helpers import make_prepared

from audet.data import AUDataModule
from audet.engine.data import FitData
from audet.models import DataInfo, create_model
from audet.models.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("d") / "synth", n_subjects=6, frames=3, size=40, missing=0.2)


def test_subject_ids_are_global_across_splits(prepared):
    fold = json.loads((prepared / "dataset.json").read_text())["folds"][0]
    dm = AUDataModule(prepared, fold["train"], fold["test"], batch_size=4, num_workers=0, val_fraction=0.34,
                      subjects="global", preprocess={"crop_size": 32})
    dm.setup("fit")
    dm.setup("test")
    vocab = dm.subject_vocabulary()
    assert vocab == [f"S{i:03d}" for i in range(6)]
    seen = {}
    for split, ds in (("train", dm.train_dataset), ("val", dm.val_dataset), ("test", dm.test_dataset)):
        ids = {int(ds[i]["subject"]) for i in range(len(ds))}
        seen[split] = {vocab[i] for i in ids}
        assert seen[split] == set(ds.subjects)  # the index names the frame's own subject
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    # without a vocabulary each dataset indexes its own subjects (old behaviour, ids collide)
    local = AUDataModule(prepared, fold["train"], fold["test"], num_workers=0, val_fraction=0.34,
                         preprocess={"crop_size": 32})
    local.setup("fit")
    assert int(local.val_dataset[0]["subject"]) == 0 and int(local.train_dataset[0]["subject"]) == 0


def test_data_info_from_the_prepared_data(prepared):
    from audet.data.listfile import read_list

    fold = json.loads((prepared / "dataset.json").read_text())["folds"][0]
    dm = AUDataModule(prepared, fold["train"], fold["test"], num_workers=0, val_fraction=0.34, subjects="global")
    info = FitData(dm).data_info()
    assert dm.train_dataset is None  # described without building a dataset
    assert info.aus == [1, 2, 4, 6] and info.subjects == [f"S{i:03d}" for i in range(6)]
    lf = read_list(prepared, fold["train"], check_images=False)
    rows = [i for i, p in enumerate(lf.info) if p.subject in set(info.train_subjects)]
    lab = lf.labels[rows]
    assert info.label_stats["n_frames"] == len(rows) == 3 * len(info.train_subjects)
    assert info.label_stats["pos"] == [int(v) for v in (lab == 1).sum(0)]
    assert info.label_stats["valid"] == [int(v) for v in (lab != 9).sum(0)]
    assert info.label_stats["train_frames_per_subject"] == {s: 3 for s in info.train_subjects}
    # round trip through a checkpoint: the model is rebuilt with the same DataInfo
    m = create_model("resnet_tiny", num_aus=4, aus=info.aus, data=info, width=4)
    assert m.data_info is info


def test_data_info_round_trip(tmp_path):
    info = DataInfo(aus=[1, 2], subjects=["a", "b", "c"], train_subjects=["a", "c"],
                    label_stats={"n_frames": 4, "pos": [1, 2], "valid": [4, 3]}, clip={"length": 3}, dataset="X")
    assert DataInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert info.num_subjects == 3 and info.num_train_subjects == 2 and info.train_subject_indices() == [0, 2]
    with pytest.raises(ValueError, match="not in the subject vocabulary"):
        DataInfo(aus=[1], subjects=["a"], train_subjects=["b"])
    m = create_model("resnet_tiny", num_aus=2, aus=[1, 2], data=info, width=4)
    save_checkpoint(m, tmp_path / "m.safetensors")
    back = load_checkpoint(tmp_path / "m.safetensors")
    assert back.data_info == info
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert np.array_equal(back.eval().forward_logits(x).numpy(), m.eval().forward_logits(x).numpy())
