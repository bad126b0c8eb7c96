"""Compatibility re-exports: ``audet prepare``'s shared code now lives in separate modules.

=====================================  ===========================================================
:mod:`audet.data.prepare.types`        constants, :class:`LayoutError`, :class:`SequenceSpec`,
                                       :class:`FrameItem`, :class:`PrepareOptions`,
                                       :class:`Release`
:mod:`audet.data.prepare.readers`      small helpers shared by the readers (frames, images,
                                       videos, label rows)
:mod:`audet.data.prepare.worker`       per-sequence processing (runs in the workers), manifests
:mod:`audet.data.prepare.partition`    parts and folds
:mod:`audet.data.prepare.runner`       :func:`run_prepare`, the parallel, resumable runner
:mod:`audet.data.prepare.assemble`     list files, ``dataset.json``, ``prepare_summary.json``
=====================================  ===========================================================

Import from those modules in new code; names imported from here are the same objects.
"""
from __future__ import annotations

from audet.data.prepare import assemble as _assemble
from audet.data.prepare import partition as _partition
from audet.data.prepare import readers as _readers
from audet.data.prepare import runner as _runner
from audet.data.prepare import types as _types
from audet.data.prepare import worker as _worker
from audet.data.prepare.assemble import *  # noqa: F401,F403
from audet.data.prepare.partition import *  # noqa: F401,F403
from audet.data.prepare.readers import *  # noqa: F401,F403
from audet.data.prepare.runner import *  # noqa: F401,F403
from audet.data.prepare.types import *  # noqa: F401,F403
from audet.data.prepare.worker import *  # noqa: F401,F403

__all__ = [
    *_types.__all__, *_readers.__all__, *_worker.__all__, *_partition.__all__, *_runner.__all__, *_assemble.__all__,
]
