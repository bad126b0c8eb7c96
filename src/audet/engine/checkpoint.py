"""The engine's checkpoint API: the format itself lives in :mod:`audet.models.checkpoint`.

Checkpoints are a property of models (a model module, a converter or an
:class:`audet.models.ensemble.Ensemble` reads and writes them without the training engine), so the
implementation sits under ``audet.models``; the engine, the commands and the benchmarks use these
names from here.
"""
from audet.models.checkpoint import (  # noqa: F401
    FORMAT,
    CheckpointError,
    checkpoint_paths,
    init_from_checkpoint,
    load_checkpoint,
    load_state_strict,
    load_weights,
    map_state_by_au,
    read_checkpoint_meta,
    read_state_dict,
    save_checkpoint,
)

__all__ = [
    "CheckpointError",
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "load_state_strict",
    "read_checkpoint_meta",
    "read_state_dict",
    "checkpoint_paths",
    "map_state_by_au",
    "init_from_checkpoint",
]
