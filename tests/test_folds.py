"""audet.data.folds: official parts (protocol section 5), prefix naming, assign_parts, split_validation."""
import pytest

from audet.data.folds import (
    CONVENTIONS,
    FOLDS,
    PART_FRAMES,
    assign_parts,
    canonical_dataset,
    fold_parts,
    fold_prefixes,
    num_folds,
    split_validation,
    subjects_of_parts,
)

# protocol.md section 5, copied verbatim
PROTOCOL = {
    "BP4D": [
        "F001 F002 F008 F009 F010 F016 F018 F023 M001 M004 M007 M008 M012 M014",
        "F003 F005 F011 F013 F020 F022 M002 M005 M010 M011 M013 M016 M017 M018",
        "F004 F006 F007 F012 F014 F015 F017 F019 F021 M003 M006 M009 M015",
    ],
    "DISFA": [
        "SN001 SN002 SN009 SN010 SN016 SN026 SN027 SN030 SN032",
        "SN006 SN011 SN012 SN013 SN018 SN021 SN024 SN028 SN031",
        "SN003 SN004 SN005 SN007 SN008 SN017 SN023 SN025 SN029",
    ],
}


@pytest.mark.parametrize("ds, n_subjects, frames", [("BP4D", 41, (50601, 50166, 45809)),
                                                     ("DISFA", 27, (43173, 40344, 42627))])
def test_official_parts_match_protocol(ds, n_subjects, frames):
    parts = FOLDS[ds]
    assert len(parts) == 3 and num_folds(ds) == 3
    assert [list(p) for p in parts] == [line.split() for line in PROTOCOL[ds]]
    flat = [s for p in parts for s in p]
    assert len(flat) == len(set(flat)) == n_subjects  # disjoint, complete
    assert PART_FRAMES[ds] == frames
    assert subjects_of_parts(ds, [1, 2]) == sorted(parts[0] + parts[1])
    if ds == "DISFA":  # 27 subjects numbered SN001..SN032 with five gaps
        assert sorted(flat) == [f"SN{i:03d}" for i in range(1, 33) if i not in (14, 15, 19, 20, 22)]


def test_fold_prefixes_follow_published_naming():
    assert fold_prefixes("BP4D", 0) == ("BP4D_combine_1_2", "BP4D_part3")
    assert fold_prefixes("bp4d", 1) == ("BP4D_combine_1_3", "BP4D_part2")
    assert fold_prefixes("BP4D", 2) == ("BP4D_combine_2_3", "BP4D_part1")
    assert fold_prefixes("DISFA", 0) == ("DISFA_combine_1_2", "DISFA_part3")
    assert fold_prefixes("SYNTH", 3, n_parts=4) == ("SYNTH_combine_2_3_4", "SYNTH_part1")
    assert fold_parts(3, 0) == ((1, 2), 3)
    # every fold tests on a different part and never trains on it
    tests = set()
    for k in range(3):
        train, test = fold_parts(3, k)
        assert test not in train and len(train) == 2
        tests.add(test)
    assert tests == {1, 2, 3}
    with pytest.raises(ValueError, match="out of range"):
        fold_prefixes("BP4D", 3)
    with pytest.raises(ValueError, match="n_parts"):
        fold_prefixes("SYNTH", 0)


def test_fixed_split_conventions():
    assert fold_prefixes("GFT", 0) == (CONVENTIONS["GFT"]["train"], CONVENTIONS["GFT"]["test"])
    assert fold_prefixes("affwild2", 0) == ("Aff-Wild2_train", "Aff-Wild2_val")
    assert fold_prefixes("BP4D+", 0) == ("BP4D_all", "BP4D+_all")
    assert num_folds("gft") == 1 and canonical_dataset("bp4dplus") == "BP4D+"
    with pytest.raises(ValueError, match="fold index must be 0"):
        fold_prefixes("GFT", 1)
    with pytest.raises(ValueError, match="no folds known"):
        num_folds("CK+")


SUBJECTS = [f"S{i:02d}" for i in range(11)]


def test_assign_parts_deterministic_balanced_disjoint():
    a = assign_parts(SUBJECTS, 3, seed=7)
    assert a == assign_parts(list(reversed(SUBJECTS)), 3, seed=7)  # input order does not matter
    assert a == assign_parts(SUBJECTS + SUBJECTS[:3], 3, seed=7)  # duplicates do not matter
    assert sorted(len(p) for p in a) == [3, 4, 4]
    flat = [s for p in a for s in p]
    assert sorted(flat) == SUBJECTS and len(set(flat)) == len(flat)
    assert all(p == sorted(p) for p in a)
    seeds = {tuple(map(tuple, assign_parts(SUBJECTS, 3, seed=s))) for s in range(6)}
    assert len(seeds) > 1  # the seed matters
    with pytest.raises(ValueError, match="non-empty"):
        assign_parts(["A", "B"], 3)


def test_assign_parts_balances_frames():
    frames = {s: n for s, n in zip(SUBJECTS, [900, 850, 800, 400, 390, 380, 370, 120, 110, 100, 90])}
    parts = assign_parts(SUBJECTS, 3, seed=1, frames=frames)
    loads = [sum(frames[s] for s in p) for p in parts]
    assert sum(loads) == sum(frames.values())
    assert max(loads) - min(loads) <= 150, loads  # greedy: within the smallest large subject
    assert parts == assign_parts(SUBJECTS, 3, seed=1, frames=frames)
    with pytest.raises(ValueError, match="no count"):
        assign_parts(SUBJECTS, 3, frames={"S00": 1})


def test_split_validation_whole_subjects_deterministic_disjoint():
    per_frame = [s for s in SUBJECTS for _ in range(5)]  # one entry per frame
    train, val = split_validation(per_frame, 0.2, seed=3)
    assert len(val) == 2 and len(train) == 9  # round(0.2 * 11) whole subjects
    assert not set(train) & set(val) and sorted(train + val) == SUBJECTS
    assert train == sorted(train) and val == sorted(val)
    assert (train, val) == split_validation(list(reversed(per_frame)), 0.2, seed=3)
    assert len({tuple(split_validation(SUBJECTS, 0.2, seed=s)[1]) for s in range(8)}) > 1
    assert len(split_validation(SUBJECTS, n=4)[1]) == 4
    assert len(split_validation(SUBJECTS, 3)[1]) == 3  # an int >= 1 is a number of subjects
    assert len(split_validation(["A", "B"], 0.01)[1]) == 1  # at least one subject
    assert len(split_validation(["A", "B"], 0.99)[0]) == 1  # at least one stays for training


def test_split_validation_errors():
    with pytest.raises(ValueError, match="at least 2"):
        split_validation(["F001", "F001", "F001"], 0.2)
    with pytest.raises(ValueError, match="fraction"):
        split_validation(SUBJECTS, 0.0)
    with pytest.raises(ValueError, match="between 1 and 10"):
        split_validation(SUBJECTS, n=11)
