"""audet.data.meta: the one reader of dataset.json (issue 8: it was read in five places with
different tolerances) and the one data_aus."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import audet
from audet.data.meta import DatasetMetaError, data_aus, read_dataset_meta, read_fold

META = {"dataset": "TOY", "aus": [1, 2, 4], "folds": [{"train": "TOY_combine_1_2", "test": "TOY_part3"}]}


def _write(root: Path, content) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def test_reads_the_file_and_from_its_list_folder(tmp_path):
    root = _write(tmp_path / "prep", META)
    assert read_dataset_meta(root) == META
    (root / "list").mkdir()
    assert read_dataset_meta(root / "list") == META  # AUDataset accepts OUT/list as its root
    assert read_fold(root, 0) == {"train": "TOY_combine_1_2", "test": "TOY_part3"}


def test_missing_file_is_a_clear_error_unless_optional(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.json not found.*audet prepare"):
        read_dataset_meta(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        read_dataset_meta(tmp_path / "nope")
    assert read_dataset_meta(tmp_path, required=False) == {}


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"aus": "1,2"}, "'aus' must be a list"),
    ({"aus": [1, "2"]}, "'aus' must be a list"),
    ({"folds": {"train": "a"}}, "'folds' must be a list"),
    ({"folds": [{"train": "a"}]}, "fold 0 must be an object with a 'test'"),
    ({"folds": [{"test": "b"}]}, "fold 0 names no 'train'"),
])  # fmt: skip
def test_corrupt_file_names_file_and_field(tmp_path, content, match):
    _write(tmp_path, content)
    for call in (lambda: read_dataset_meta(tmp_path), lambda: read_dataset_meta(tmp_path, required=False),
                 lambda: data_aus(tmp_path)):  # fmt: skip
        with pytest.raises(DatasetMetaError, match=match) as info:
            call()
        assert str(tmp_path / "dataset.json") in str(info.value)
        assert isinstance(info.value, ValueError)  # the CLI reports ValueErrors in one line


def test_cross_dataset_fold_without_local_train_prefix_is_valid(tmp_path):
    _write(tmp_path, {"folds": [{"train_dataset": "BP4D", "train": None, "test": "BP4D+_all"}]})
    assert read_fold(tmp_path, 0)["test"] == "BP4D+_all"


def test_read_fold_out_of_range(tmp_path):
    _write(tmp_path, META)
    with pytest.raises(ValueError, match=r"1 fold\(s\) \(0..0\); fold 1 does not exist"):
        read_fold(tmp_path, 1)
    _write(tmp_path, {"aus": [1]})
    with pytest.raises(ValueError, match=r"0 fold\(s\) \(none\)"):
        read_fold(tmp_path, 0)


def test_data_aus_contract(tmp_path):
    _write(tmp_path / "a", META)
    assert data_aus(tmp_path / "a") == [1, 2, 4]
    # no 'aus': the dataset name of the file (case-insensitive), checked against the column count
    _write(tmp_path / "b", {"dataset": "disfa"})
    assert data_aus(tmp_path / "b") == [1, 2, 4, 6, 9, 12, 25, 26]
    assert data_aus(tmp_path / "b", num_aus=8) == [1, 2, 4, 6, 9, 12, 25, 26]
    assert data_aus(tmp_path / "b", num_aus=12) is None
    # no file at all: a dataset name given by the caller, else unknown
    assert data_aus(tmp_path / "c", dataset="GFT") == [1, 2, 4, 6, 10, 12, 14, 15, 23, 24]
    assert data_aus(tmp_path / "c") is None
    with pytest.raises(ValueError, match="cannot tell the AU numbers.*aus="):
        data_aus(tmp_path / "c", required=True)


def test_no_other_data_or_commands_module_names_dataset_json():
    """Every data/ and commands/ reader goes through audet.data.meta (engine/: see issue 8)."""
    src = Path(audet.__file__).resolve().parent
    users = []
    for p in [*(src / "data").rglob("*.py"), *(src / "commands").rglob("*.py")]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Constant) and node.value == "dataset.json":
                users.append(str(p.relative_to(src)))
    assert users == ["data/meta.py"]


def test_data_aus_is_one_function():
    import audet.data as data
    import audet.data.dataset as dataset

    assert data.data_aus is data_aus
    assert "data_aus" not in dataset.__all__ and dataset.data_aus is data_aus
