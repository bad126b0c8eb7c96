"""``audet prepare``: raw AU releases -> aligned 200x200 crops, list files, folds.

One module per release reads that release's own layout (see ``docs/datasets.md``):

=============  ===================================================  ==========================
dataset        module                                               list prefixes
=============  ===================================================  ==========================
BP4D           :mod:`audet.data.prepare.bp4d`                       ``BP4D_part{1,2,3}``,
                                                                    ``BP4D_combine_{i}_{j}``,
                                                                    ``BP4D_all``
DISFA          :mod:`audet.data.prepare.disfa`                      as BP4D
GFT            :mod:`audet.data.prepare.gft`                        ``GFT_train``, ``GFT_test``
BP4D+          :mod:`audet.data.prepare.bp4dplus`                   ``BP4D+_all``
Aff-Wild2      :mod:`audet.data.prepare.affwild2`                   ``Aff-Wild2_train``,
                                                                    ``Aff-Wild2_val``
=============  ===================================================  ==========================

:func:`prepare_dataset` is the Python entry point; :mod:`audet.data.prepare.runner` holds the
parallel, resumable runner (with :mod:`~audet.data.prepare.types`,
:mod:`~audet.data.prepare.readers`, :mod:`~audet.data.prepare.worker`,
:mod:`~audet.data.prepare.partition` and :mod:`~audet.data.prepare.assemble`;
:mod:`audet.data.prepare.common` re-exports their names); :mod:`audet.data.prepare.landmarks` the
detector interface for releases without landmarks; :mod:`audet.data.prepare.fake` tiny fake
releases for tests.
"""
from __future__ import annotations

import importlib

__all__ = ["RELEASES", "get_release", "prepare_dataset", "dataset_names"]

#: canonical dataset name -> (module, class)
RELEASES = {
    "BP4D": ("audet.data.prepare.bp4d", "BP4DRelease"),
    "DISFA": ("audet.data.prepare.disfa", "DISFARelease"),
    "GFT": ("audet.data.prepare.gft", "GFTRelease"),
    "BP4D+": ("audet.data.prepare.bp4dplus", "BP4DPlusRelease"),
    "Aff-Wild2": ("audet.data.prepare.affwild2", "AffWild2Release"),
}


def dataset_names() -> list[str]:
    return list(RELEASES)


def get_release(name: str):
    """The reader of dataset ``name`` (case-insensitive; ``bp4dplus``, ``affwild2`` accepted)."""
    from audet.data.folds import canonical_dataset

    ds = canonical_dataset(name)
    if ds not in RELEASES:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(RELEASES)}")
    mod, cls = RELEASES[ds]
    return getattr(importlib.import_module(mod), cls)()


def prepare_dataset(dataset: str, root, out, **kwargs) -> dict:
    """Prepare ``dataset`` from the raw release at ``root`` into ``out``; returns the summary.

    Keyword arguments are the fields of :class:`audet.data.prepare.types.PrepareOptions`
    (``workers``, ``folds``, ``seed``, ``aus``, ``image_format``, ``split_file``, ``detector``,
    ``force``, ``progress``, ...).
    """
    from audet.data.prepare.runner import run_prepare
    from audet.data.prepare.types import PrepareOptions

    return run_prepare(PrepareOptions(dataset=dataset, root=str(root), out=str(out), **kwargs))
