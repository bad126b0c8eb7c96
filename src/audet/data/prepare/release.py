"""The release readers of ``audet prepare``: the :class:`Release` base class and their registry.

One module per release subclasses :class:`Release` (see :data:`RELEASES`);
:func:`get_release` imports the module of a dataset name and returns its reader.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Iterator, Sequence

from audet.data.prepare.partition import Partition, three_fold_partition
from audet.data.prepare.types import SYNTH_META, FrameItem, PrepareOptions, SequenceSpec

__all__ = ["Release", "RELEASES", "get_release", "dataset_names"]

#: canonical dataset name -> (module, class)
RELEASES = {
    "BP4D": ("audet.data.prepare.bp4d", "BP4DRelease"),
    "DISFA": ("audet.data.prepare.disfa", "DISFARelease"),
    "GFT": ("audet.data.prepare.gft", "GFTRelease"),
    "BP4D+": ("audet.data.prepare.bp4dplus", "BP4DPlusRelease"),
    "Aff-Wild2": ("audet.data.prepare.affwild2", "AffWild2Release"),
}


class Release:
    """Base class of the per-release readers."""

    #: ``audet.facs.DATASET_AUS`` key and output directory name.
    name: str = ""
    #: One line: what ``--raw`` must contain (used in LayoutError messages and docs).
    layout: str = ""
    #: Whether the release's landmark annotations are 1-based (MATLAB style).
    one_based: bool = False

    def discover(self, root: Path, opts: PrepareOptions) -> list[SequenceSpec]:
        raise NotImplementedError

    def iter_frames(self, spec: SequenceSpec, aus: Sequence[int],
                    opts: PrepareOptions) -> Iterator[FrameItem]:  # fmt: skip
        raise NotImplementedError

    def coded_aus(self, spec: SequenceSpec) -> list[int] | None:
        """The AUs the labels of ``spec`` code (None: the release cannot tell without reading frames)."""
        return None

    def uncoded_aus(self, spec: SequenceSpec, aus: Sequence[int]) -> list[int]:
        """AUs of ``aus`` that the labels of ``spec`` do not code (they would be a column of unknowns)."""
        coded = self.coded_aus(spec)
        return [] if coded is None else [a for a in aus if a not in coded]

    def needs_detector(self, specs: Sequence[SequenceSpec], opts: PrepareOptions) -> bool:
        """True when some frames can only get landmarks from a detector."""
        return False

    def partition(self, subjects: Sequence[str], specs: Sequence[SequenceSpec],
                  opts: PrepareOptions) -> Partition:  # fmt: skip
        """Parts, list prefixes and folds (default: 3 subject-exclusive parts)."""
        synthetic = (Path(opts.root) / SYNTH_META).is_file()
        return three_fold_partition(self.name, subjects, opts.folds, opts.seed, synthetic)

    def source_info(self, opts: PrepareOptions) -> dict:
        return {"layout": self.layout, "landmarks_one_based": self.one_based}


def dataset_names() -> list[str]:
    return list(RELEASES)


def get_release(name: str) -> Release:
    """The reader of dataset ``name`` (case-insensitive; ``bp4dplus``, ``affwild2`` accepted)."""
    from audet.data.folds import canonical_dataset

    ds = canonical_dataset(name)
    if ds not in RELEASES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(RELEASES)}")
    mod, cls = RELEASES[ds]
    return getattr(importlib.import_module(mod), cls)()
