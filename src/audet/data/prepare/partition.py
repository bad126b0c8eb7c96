"""Parts and folds of ``audet prepare``: official fold lists or a seeded subject assignment."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from audet.data.prepare.types import SYNTH_META

__all__ = ["Partition", "three_fold_partition"]


@dataclass
class Partition:
    """``parts``: part name -> subjects; ``prefixes``: list prefix -> (part names, is_train);
    ``folds``: ``[{"train": prefix, "test": prefix}, ...]``; ``assignment``: how parts were made."""

    parts: dict[str, list[str]]
    prefixes: dict[str, tuple[list[str], bool]]
    folds: list[dict]
    assignment: str
    notice: str | None = None
    extra: dict = field(default_factory=dict)


def _official_parts(dataset: str) -> list[list[str]] | None:
    try:
        from audet.data.folds import FOLDS
    except ImportError:  # pragma: no cover - folds module missing
        return None
    entry = FOLDS.get(dataset) if hasattr(FOLDS, "get") else None
    if not entry:
        return None
    if isinstance(entry, dict):
        entry = [entry[k] for k in sorted(entry)]
    return [list(p) for p in entry]


def _assign_parts(subjects: Sequence[str], n_parts: int, seed: int) -> list[list[str]]:
    from audet.data.folds import assign_parts

    parts = assign_parts(list(subjects), n_parts=n_parts, seed=seed)
    if isinstance(parts, dict):
        parts = [parts[k] for k in sorted(parts)]
    return [list(p) for p in parts]


def three_fold_partition(dataset: str, subjects: Sequence[str], mode: str | None, seed: int,
                         synthetic: bool = False) -> Partition:  # fmt: skip
    """Subject-exclusive 3 parts and their list prefixes.

    ``mode`` None (default): the official lists of protocol section 5 when every subject is in
    them, the release is not synthetic (no ``synth_meta.json``) and no official part ends up
    empty; otherwise :func:`audet.data.folds.assign_parts` with a printed notice. ``"official"``
    forces the official lists (error for unlisted subjects); ``"auto"`` forces ``assign_parts``.
    Prefixes: ``<D>_part{i}`` (test), ``<D>_combine_{i}_{j}`` (train), ``<D>_all`` (train).
    """
    subjects = sorted(subjects)
    present = set(subjects)
    official = _official_parts(dataset)
    notice = None
    parts_list = None
    assignment = "official"
    why = "--parts auto"
    if mode == "official":
        if not official:
            raise ValueError(f"--parts official: no official fold lists for {dataset}")
        unknown = sorted(present - set().union(*map(set, official)))
        if unknown:
            raise ValueError(
                f"--parts official: {len(unknown)} subject(s) are not in the official {dataset} "
                f"fold lists (protocol section 5): {' '.join(unknown[:12])}"
                + (" ..." if len(unknown) > 12 else "") + "; use --parts auto"
            )
    if mode is None and official:
        unknown = sorted(present - set().union(*map(set, official)))
        candidate = [sorted(s for s in part if s in present) for part in official]
        if synthetic:
            why = f"synthetic release ({SYNTH_META} in the root)"
        elif unknown:
            why = (f"{len(unknown)} subject(s) are not in the official {dataset} fold lists "
                   f"(e.g. {unknown[0]})")  # fmt: skip
        elif not all(candidate) and len(subjects) >= 3:
            why = "the official lists would leave a part without subjects"
        else:
            mode = "official"
    elif mode is None:
        why = f"no official fold lists for {dataset}"
    if mode == "official":
        parts_list = [sorted(s for s in part if s in present) for part in official]
        missing = sorted(set().union(*map(set, official)) - present)
        if missing:
            notice = (f"note: {len(missing)} subject(s) of the official {dataset} folds are not "
                      f"in the release: {' '.join(missing)}")  # fmt: skip
    else:
        if len(subjects) < 3:
            raise ValueError(f"{len(subjects)} subject(s): 3 subject-exclusive parts need at "
                             f"least 3 subjects ({why})")  # fmt: skip
        parts_list = [sorted(p) for p in _assign_parts(subjects, 3, seed)]
        assignment = "auto"
        notice = (f"notice: {why}: subjects assigned to 3 subject-exclusive parts with "
                  f"audet.data.folds.assign_parts(seed={seed}), not the official folds")  # fmt: skip
    parts = {f"part{i + 1}": p for i, p in enumerate(parts_list)}
    prefixes: dict[str, tuple[list[str], bool]] = {}
    for i in range(1, 4):
        prefixes[f"{dataset}_part{i}"] = ([f"part{i}"], False)
    folds = []
    for i, j, k in ((1, 2, 3), (1, 3, 2), (2, 3, 1)):
        prefixes[f"{dataset}_combine_{i}_{j}"] = ([f"part{i}", f"part{j}"], True)
        folds.append({"train": f"{dataset}_combine_{i}_{j}", "test": f"{dataset}_part{k}"})
    prefixes[f"{dataset}_all"] = (["part1", "part2", "part3"], True)
    return Partition(parts, prefixes, folds, assignment, notice,
                     {"seed": seed} if assignment == "auto" else {})  # fmt: skip
