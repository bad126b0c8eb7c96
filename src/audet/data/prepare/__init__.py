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

:func:`prepare_dataset` is the Python entry point. The modules, each importing only those above it
(no import cycles):

=====================================  ===========================================================
:mod:`audet.data.prepare.types`        constants, :class:`LayoutError`, :class:`SequenceSpec`,
                                       :class:`FrameItem`, :class:`PrepareOptions`
:mod:`audet.data.prepare.partition`    parts and folds
:mod:`audet.data.prepare.release`      the :class:`Release` base class, :data:`RELEASES`,
                                       :func:`get_release`
:mod:`audet.data.prepare.readers`      small helpers shared by the readers (frames, images,
                                       videos, label rows)
:mod:`audet.data.prepare.worker`       per-sequence processing (runs in the workers), manifests
:mod:`audet.data.prepare.assemble`     list files, ``dataset.json``, ``prepare_summary.json``
:mod:`audet.data.prepare.runner`       :func:`run_prepare`, the parallel, resumable runner
:mod:`audet.data.prepare.landmarks`    the detector interface for releases without landmarks
:mod:`audet.data.prepare.fake`         tiny fake releases for tests
=====================================  ===========================================================

Progress and notes go to the ``logging`` logger ``audet.data.prepare`` (``audet prepare`` shows
them on the console).
"""
from __future__ import annotations

from audet.data.prepare.release import RELEASES, dataset_names, get_release

__all__ = ["RELEASES", "get_release", "prepare_dataset", "dataset_names"]


def prepare_dataset(dataset: str, root, out, **kwargs) -> dict:
    """Prepare ``dataset`` from the raw release at ``root`` into ``out``; returns the summary.

    Keyword arguments are the fields of :class:`audet.data.prepare.types.PrepareOptions`
    (``workers``, ``folds``, ``seed``, ``aus``, ``image_format``, ``split_file``, ``detector``,
    ``force``, ``progress``, ...).
    """
    from audet.data.prepare.runner import run_prepare
    from audet.data.prepare.types import PrepareOptions

    return run_prepare(PrepareOptions(dataset=dataset, root=str(root), out=str(out), **kwargs))
