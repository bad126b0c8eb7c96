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

from audet.data.prepare.assemble import assemble
from audet.data.prepare.partition import Partition, three_fold_partition
from audet.data.prepare.readers import (
    au_from_header,
    binary_label_row,
    decode_image,
    file_signature,
    find_dir,
    frame_number,
    iter_video_frames,
    list_frames,
    read_image,
)
from audet.data.prepare.runner import run_prepare
from audet.data.prepare.types import (
    DELAY_ENV,
    DETECT,
    IMAGE_EXTENSIONS,
    MANIFEST_VERSION,
    SKIP_REASONS,
    SYNTH_META,
    VIDEO_EXTENSIONS,
    FrameItem,
    LayoutError,
    PrepareInterrupted,
    PrepareOptions,
    Release,
    SequenceSpec,
)
from audet.data.prepare.worker import load_manifest, manifest_path, process_sequence, settings_hash

__all__ = [
    # types
    "MANIFEST_VERSION",
    "SKIP_REASONS",
    "DETECT",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "SYNTH_META",
    "DELAY_ENV",
    "LayoutError",
    "PrepareInterrupted",
    "SequenceSpec",
    "FrameItem",
    "PrepareOptions",
    "Release",
    # readers
    "frame_number",
    "list_frames",
    "read_image",
    "decode_image",
    "iter_video_frames",
    "file_signature",
    "find_dir",
    "binary_label_row",
    "au_from_header",
    # worker
    "process_sequence",
    "settings_hash",
    "manifest_path",
    "load_manifest",
    # partition
    "Partition",
    "three_fold_partition",
    # runner
    "run_prepare",
    # assemble
    "assemble",
]
