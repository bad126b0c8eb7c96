"""What produced an output folder: a small manifest, checked before anything is written.

Every command that writes a folder (``predict --out``, ``demo --out``, ``train``/``cv``/``finetune``
run directories, ``prepare --out``, ``synth --out``) records in ``OUT/audet-manifest.json`` what
produced it: the command, the audet version, the checkpoint's SHA-256, the options and the config
that decide the results. A re-run into the same folder compares its own inputs with the recorded
ones BEFORE it writes anything:

- the same inputs: the folder is continued (an interrupted run resumes) or reused (finished work is
  skipped);
- other inputs: a one-line error names what changed (``options.seed: 0 -> 1``) and the flag that
  starts afresh, :data:`FRESH_FLAG`; with that flag the new inputs are recorded and the command
  redoes its work;
- a non-empty folder without a manifest (not written by audet, or by an older audet) is refused the
  same way.

The audet version and paths are recorded for the reader but not compared (an upgrade or a moved
checkpoint with the same bytes is the same input).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from audet.utils.io import to_jsonable, write_json_atomic

__all__ = ["MANIFEST", "FRESH_FLAG", "OutputMismatch", "file_sha256", "describe_changes", "check_output",
           "read_manifest", "write_manifest"]

#: the manifest's file name inside an output folder
MANIFEST = "audet-manifest.json"
#: the one flag, on every command that writes a folder, that starts afresh in a folder made by other inputs
FRESH_FLAG = "--overwrite"
#: manifest keys that are recorded but never compared
_INFO_ONLY = ("audet_version", "paths", "status")


class OutputMismatch(ValueError):
    """The output folder was made by other inputs (one line: what changed and how to start afresh)."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        if not obj and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: obj}


def _short(v: Any, width: int = 24) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else v
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):  # a hash
        return text[:12]
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_changes(old: Mapping, new: Mapping, limit: int = 4) -> str:
    """``"options.seed: 0 -> 1, checkpoint.sha256: 3fa1... -> 9c2e..."`` (compared keys only)."""
    a = {k: v for k, v in _flat(to_jsonable(old)).items() if k.split(".")[0] not in _INFO_ONLY}
    b = {k: v for k, v in _flat(to_jsonable(new)).items() if k.split(".")[0] not in _INFO_ONLY}
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    parts = [f"{k}: {_short(a.get(k, '<unset>'))} -> {_short(b.get(k, '<unset>'))}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"... ({len(keys)} in all)")
    return ", ".join(parts)


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The recorded manifest of ``folder``, or None when there is none (or it cannot be read)."""
    p = Path(folder) / MANIFEST
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_manifest(folder: str | os.PathLike, inputs: Mapping, *, command: str, paths: Mapping | None = None,
                   status: str = "started") -> Path:
    """Record ``inputs`` (compared by later runs) and ``paths`` (information only), atomically."""
    from audet import __version__

    p = Path(folder) / MANIFEST
    write_json_atomic(p, {"command": command, "audet_version": __version__, "status": status,
                          **to_jsonable(dict(inputs)), "paths": to_jsonable(dict(paths or {}))})
    return p


def check_output(folder: str | os.PathLike, inputs: Mapping, *, command: str, fresh: bool = False,
                 ignore: Iterable[str] = (MANIFEST,), what: str = "--out") -> str:
    """Decide, before anything is written, whether ``folder`` may be used for ``inputs``.

    Returns ``"new"`` (absent or empty folder), ``"same"`` (made by the same inputs: continue or
    reuse) or ``"fresh"`` (other inputs or a foreign folder, and ``fresh`` asks to start afresh).
    Raises :class:`OutputMismatch` (one line, naming what changed and :data:`FRESH_FLAG`) when the
    folder was made by other inputs and ``fresh`` is False. ``ignore``: names of entries that do not
    make a folder "non-empty".
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file; give a folder")
    skip = set(ignore) | {MANIFEST}
    if not folder.is_dir() or not any(p.name not in skip for p in folder.iterdir()):
        return "new"  # nothing there that other inputs made
    old = read_manifest(folder)
    new = {"command": command, **to_jsonable(dict(inputs))}
    if old is not None:
        recorded = {k: v for k, v in old.items() if k not in _INFO_ONLY}
        changes = describe_changes(recorded, new)
        if not changes:
            return "same"
        if fresh:
            return "fresh"
        raise OutputMismatch(f"{what} {folder} was made by other inputs ({changes}); give another {what}, "
                             f"or add {FRESH_FLAG} to start afresh there")
    if fresh:
        return "fresh"
    raise OutputMismatch(f"{what} {folder} already holds files that audet {command} did not record making "
                         f"(no {MANIFEST}); give another {what}, or add {FRESH_FLAG} to start afresh there")
