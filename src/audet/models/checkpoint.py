"""audet checkpoints: safetensors weights + a JSON sidecar, and AU-identity initialisation.

``save_checkpoint(model, "run/best.safetensors", ...)`` writes

- ``run/best.safetensors``: every tensor of ``model.state_dict()`` (parameters AND buffers, e.g.
  AC2D's sample prototypes), with the metadata JSON also embedded in the safetensors header;
- ``run/best.json``: ``{"format", "model", "model_config", "aus", "preprocess", "data_info",
  "pretrained", "epoch", "global_step", "metrics", "audet_version", "config", ...}``.

``aus`` is the model's AU list, stored ONCE (``data_info`` leaves it out when it is the same list);
``model_config`` is the factory's bound arguments (``model.config``, recorded by the registry)
without the AU list. Checkpoints written before also carry ``num_aus`` and the list inside
``model_config`` and ``data_info``; :func:`load_checkpoint` reads both layouts.

``data_info`` is the model's :class:`audet.models.base.DataInfo` (global subject vocabulary etc.),
so a subject-dependent model is rebuilt without the training set. ``pretrained`` records each
:class:`audet.models.base.PretrainedPart` (``status``: ``file PATH`` or ``random ...``, and whether
it is ``stored``): a part with ``store_in_checkpoint=False`` (and real weights) is left out of the
safetensors file and re-read from its file (the recorded model option) by :func:`load_checkpoint`.

Both are written atomically (temporary file + ``os.replace``). :func:`load_checkpoint` rebuilds
the model from the metadata alone (no other argument, never unpickles) and loads the weights
strictly; a checkpoint that does not fit the model raises :class:`CheckpointError` naming the
missing, unexpected and mis-shaped tensors.

:func:`map_state_by_au` initialises a model for one AU set from a checkpoint trained on another
(DISFA from BP4D, protocol section 6): shared (trunk) tensors are copied, per-AU tensors and AU
branches are copied for the AUs both sets contain, AUs without a twin keep their fresh init. A
model declares which tensors are per-AU (``au_module_lists``, ``au_state_keys``) and which are
never carried over (``au_fresh_keys``); see the function.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from audet.models.registry import create_model
from audet.utils.io import to_jsonable, write_bytes_atomic, write_json_atomic
from audet.utils.state import describe_mismatch

__all__ = [
    "CheckpointError",
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "read_state_dict",
    "checkpoint_paths",
    "map_state_by_au",
    "init_from_checkpoint",
    "load_weights",
]

FORMAT = "audet-checkpoint/1"
_META_KEY = "audet"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or does not fit the model."""


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights.safetensors, weights.json)`` for a path given with either suffix or none."""
    p = Path(path)
    if p.suffix in (".ckpt", ".pt", ".pth", ".pkl"):
        raise CheckpointError(
            f"{p}: audet loads .safetensors checkpoints (with their .json); a Lightning .ckpt is only for "
            "resuming training (`audet train ... --resume`), and pickled files are never loaded"
        )
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    config: Mapping | None = None,
    epoch: int | None = None,
    global_step: int | None = None,
    metrics: Mapping | None = None,
    extra: Mapping | None = None,
) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and its .json sidecar atomically; return both paths."""
    from safetensors.torch import save as st_save

    from audet._version import __version__

    weights_path, meta_path = checkpoint_paths(path)
    name = getattr(model, "model_name", "") or ""
    if not name:
        raise CheckpointError("the model has no registry name (build it with audet.models.create_model)")
    aus = [int(a) for a in model.aus]
    from audet.models.base import pretrained_state_keys

    info = getattr(model, "data_info", None)
    data_info = info.to_dict() if info is not None else None
    if data_info is not None and data_info.get("aus") == aus:
        del data_info["aus"]  # the AU list is stored once, at the top; load_checkpoint puts it back
    parts = model.pretrained_parts()
    status = getattr(model, "pretrained_status", {}) or {}
    left_out = pretrained_state_keys(model, stored_only=False)
    pretrained = {n: {"module": p.module, "description": p.description, "option": p.option, "source": p.source,
                      "status": status.get(n, "unknown"), "stored": n not in left_out} for n, p in parts.items()}
    model_config = {k: v for k, v in (getattr(model, "config", {}) or {}).items() if k not in ("aus", "num_aus", "data")}
    meta = {
        "format": FORMAT,
        "model": name,
        "model_config": to_jsonable(model_config),
        "aus": aus,
        "preprocess": to_jsonable(getattr(model, "preprocess", {}) or {}),
        "data_info": data_info,
        "pretrained": to_jsonable(pretrained),
        "epoch": epoch,
        "global_step": global_step,
        "metrics": to_jsonable(metrics or {}),
        "audet_version": __version__,
        "torch_version": torch.__version__,
        "config": to_jsonable(config or {}),
        **to_jsonable(dict(extra or {})),
    }
    # clone: safetensors refuses shared storage (tied weights); contiguous CPU copies are safe
    skip = {k for keys in left_out.values() for k in keys}
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items() if k not in skip}
    blob = st_save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    write_bytes_atomic(weights_path, blob)
    write_json_atomic(meta_path, meta)
    return weights_path, meta_path


_WHAT_TO_DO = ("give the best.safetensors or last.safetensors of an `audet train` run (with its .json), "
               "or import the authors' file with `audet convert`")


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not an audet checkpoint ({why}); {_WHAT_TO_DO}")


def _header_problem(weights_path: Path) -> str | None:
    """Why ``weights_path`` cannot be a safetensors file (None if its header looks sound)."""
    size = weights_path.stat().st_size
    if size == 0:
        return "the file is empty"
    if size < 8:
        return f"the file has only {size} bytes"
    with open(weights_path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = f.read(min(n, 1)) if n + 8 <= size else b""
    if n + 8 > size or head != b"{":
        with open(weights_path, "rb") as f:
            start = f.read(64)
        if start.startswith(b"PK\x03\x04") or start[:1] == b"\x80":
            return "it is a pickled PyTorch file; audet never unpickles"
        try:
            start.decode("utf-8")
            return "it is a text file, not safetensors"
        except UnicodeDecodeError:
            return "not in the safetensors format: damaged, or another kind of file"
    return None


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata: the JSON sidecar, or the copy in the safetensors header.

    A missing, empty, damaged or foreign file raises :class:`CheckpointError` (FileNotFoundError
    when absent) with one line saying what is wrong and what to give instead.
    """
    weights_path, meta_path = checkpoint_paths(path)
    if meta_path.is_file():
        text = meta_path.read_text(errors="replace")
        if not text.strip():
            raise _not_a_checkpoint(meta_path, "the metadata file is empty")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _not_a_checkpoint(meta_path, f"the metadata is not valid JSON: {exc}") from None
    elif weights_path.is_file():
        problem = _header_problem(weights_path)
        if problem:
            raise _not_a_checkpoint(weights_path, problem)
        from safetensors import safe_open

        try:
            with safe_open(str(weights_path), framework="pt") as f:
                header = f.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types
            raise _not_a_checkpoint(weights_path, f"unreadable safetensors header: {exc}") from None
        if _META_KEY not in header:
            raise CheckpointError(
                f"{weights_path}: no {meta_path.name} beside it and no audet metadata in its header "
                f"(a safetensors file from elsewhere?); {_WHAT_TO_DO}"
            )
        try:
            meta = json.loads(header[_META_KEY])
        except json.JSONDecodeError as exc:
            raise _not_a_checkpoint(weights_path, f"its embedded metadata is not valid JSON: {exc}") from None
    else:
        raise FileNotFoundError(f"checkpoint {weights_path} not found; {_WHAT_TO_DO}")
    if not isinstance(meta, dict):
        raise _not_a_checkpoint(meta_path, f"the metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an audet checkpoint (format {meta.get('format')!r}, expected {FORMAT!r}); {_WHAT_TO_DO}"
        )
    if not isinstance(meta.get("model"), str):
        raise _not_a_checkpoint(meta_path, "the metadata names no model")
    return meta


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors; an absent, empty or damaged file raises a one-line error."""
    from safetensors.torch import load_file

    weights_path, _ = checkpoint_paths(path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"checkpoint weights {weights_path} not found (the .json needs its .safetensors "
                                "beside it); copy both files of the checkpoint")
    problem = _header_problem(weights_path)
    if problem:
        raise _not_a_checkpoint(weights_path, problem)
    try:
        return load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise _not_a_checkpoint(weights_path, f"unreadable safetensors data: {exc}") from None


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                      exclude: set[str] | frozenset = frozenset()) -> None:
    """Load ``state`` strictly; keys in ``exclude`` (pretrained parts read from their own file) may
    be absent."""
    own = {k: v for k, v in model.state_dict().items() if k not in exclude or k in state}
    problem = describe_mismatch(own, state)
    if problem:
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(f"{source} does not fit model {name!r}: {problem}")
    model.load_state_dict(state, strict=not exclude)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an audet checkpoint's weights into ``model`` (same architecture) in place; pretrained
    parts the checkpoint does not store keep the model's (file) weights."""
    from audet.models.base import pretrained_state_keys

    exclude = {k for keys in pretrained_state_keys(model, stored_only=False).values() for k in keys}
    device = next(iter(model.state_dict().values())).device if model.state_dict() else "cpu"
    state = {k: v.to(device) for k, v in read_state_dict(path).items()}
    load_state_strict(model, state, str(checkpoint_paths(path)[0]), exclude)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *, model_name: str | None = None):
    """Rebuild the model from a checkpoint's metadata and load its weights (strictly).

    ``model_name`` (optional) asserts the expected model; a different one raises
    :class:`CheckpointError`. The model is returned in eval mode with ``model.checkpoint_meta``
    holding the metadata.
    """
    from audet.models.base import DataInfo, PretrainedWeightsMissing, load_pretrained_parts, pretrained_state_keys

    meta = read_checkpoint_meta(path)
    name = meta["model"]
    if model_name is not None and name != model_name:
        raise CheckpointError(f"{path} holds a {name!r} model, not {model_name!r}")
    kwargs = dict(meta.get("model_config") or {})
    if not kwargs:  # models that do not record their constructor arguments
        kwargs = dict(((meta.get("config") or {}).get("model") or {}).get("args") or {})
    # the AU list: stored once at the top ("aus"); checkpoints written before that also carry
    # "num_aus" and the list in model_config and data_info (and [] when the model had no list)
    old_num, old_aus = kwargs.pop("num_aus", None), kwargs.pop("aus", None)
    kwargs.pop("data", None)
    aus = meta.get("aus") or old_aus or None
    num_aus = None if aus else (meta.get("num_aus") or old_num)
    info = meta.get("data_info")
    if isinstance(info, dict) and "aus" not in info:
        info = {**info, "aus": aus or []}
    data = DataInfo.from_dict(info)
    try:
        model = create_model(name, num_aus, aus=aus, data=data, **kwargs)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0] if exc.args else exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path}: cannot rebuild {name!r} from its recorded config {kwargs}: {exc}") from None
    if isinstance(meta.get("preprocess"), dict):  # recorded preprocessing wins (e.g. an opt-in resize)
        model.preprocess = {**getattr(model, "preprocess", {}), **meta["preprocess"]}
    recorded = meta.get("pretrained") or {}
    stored = {n: r.get("status", "") for n, r in recorded.items() if r.get("stored")}
    try:
        load_pretrained_parts(model, from_checkpoint=stored)
    except PretrainedWeightsMissing as exc:
        raise CheckpointError(f"{path} does not store its pretrained part(s) (store_in_checkpoint=False), so they "
                              f"are re-read from their file: {exc}") from None
    exclude = {k for keys in pretrained_state_keys(model, stored_only=False).values() for k in keys}
    state = read_state_dict(path)
    load_state_strict(model, state, str(checkpoint_paths(path)[0]), exclude)
    model.to(map_location)
    model.eval()
    model.checkpoint_meta = meta
    return model


# --------------------------------------------------------------------------------------------
# initialisation by AU identity (protocol section 6)
# --------------------------------------------------------------------------------------------
def _index_of(aus: Sequence[int]) -> dict[int, int]:
    return {int(a): i for i, a in enumerate(aus)}


def _au_lists(model: nn.Module, state_keys: Sequence[str], n_old: int, n_new: int) -> list[str]:
    """Prefixes ``p`` of per-AU module lists (keys ``p.<i>.rest``)."""
    declared = tuple(model.au_module_lists)
    if declared or model.au_state_keys:  # a model that declares its per-AU tensors declares its lists too
        return list(declared)
    found = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.ModuleList, nn.Sequential)) and len(mod) == n_new and name:
            rx = re.compile(re.escape(name) + r"\.(\d+)\.")
            old_idx = {int(m.group(1)) for k in state_keys if (m := rx.match(k))}
            if len(old_idx) == n_old and n_old != n_new:
                found.append(name)
    return found


def map_state_by_au(
    model,
    old_state: Mapping[str, torch.Tensor],
    old_aus: Sequence[int],
    new_aus: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict for ``model`` (AUs ``new_aus``) from ``old_state`` trained on ``old_aus``.

    Tensors matching ``model.au_fresh_keys`` (fnmatch patterns: statistics of the training data
    such as prototypes or a subject dictionary) are never carried over and keep the model's values
    (reported as ``reset``). Which other tensors are per-AU, in this order:

    1. declared: ``model.au_module_lists`` (names of ModuleLists with one entry per AU, keys
       ``name.<i>.*``) and ``model.au_state_keys`` (``{fnmatch pattern: dim}`` for tensors with an
       AU dimension, e.g. ``{"fc.weight": 0, "fc.bias": 0}``);
    2. otherwise a heuristic: a ModuleList/Sequential of length ``len(new_aus)`` whose keys in the
       old state have ``len(old_aus)`` indices, and tensors whose shapes differ only in one dim of
       size ``len(old_aus)`` (old) vs ``len(new_aus)`` (new). The heuristic cannot tell per-AU
       tensors when both AU sets have the same size: declare them in the model.

    Returns ``(state, report)``: ``state`` is complete for ``model`` (unmapped entries keep the
    model's current values); ``report`` has ``mapped_aus`` ({new AU: old AU}), ``fresh_aus``,
    ``dropped_aus``, ``copied`` (trunk keys), ``per_au`` (per-AU keys), ``kept`` (keys left at
    init), ``reset`` (the ``au_fresh_keys`` tensors) and ``method``.
    """
    new_aus = list(new_aus if new_aus is not None else model.aus)
    old_aus = [int(a) for a in old_aus]
    own = model.state_dict()
    old_idx, new_idx = _index_of(old_aus), _index_of(new_aus)
    shared = [a for a in new_aus if a in old_idx]
    report: dict[str, Any] = {
        "mapped_aus": {int(a): int(a) for a in shared},
        "fresh_aus": [a for a in new_aus if a not in old_idx],
        "dropped_aus": [a for a in old_aus if a not in new_idx],
        "copied": [],
        "per_au": [],
        "kept": [],
        "fresh": [],
        "reset": [],
        "method": "declared" if model.au_state_keys or model.au_module_lists else "heuristic",
    }
    out = {k: v.clone() for k, v in own.items()}
    lists = _au_lists(model, list(old_state), len(old_aus), len(new_aus))
    declared_keys: dict[str, int] = dict(model.au_state_keys)
    # 0. declared fresh tensors (data statistics): never carried over, they keep the model's values
    handled: set[str] = {k for k in own if any(fnmatch.fnmatchcase(k, p) for p in model.au_fresh_keys)}
    report["reset"] = sorted(handled)

    # 1. per-AU module lists: new branch i <- old branch of the same AU
    for prefix in lists:
        rx = re.compile(re.escape(prefix) + r"\.(\d+)\.(.*)$")
        for key in own:
            m = rx.match(key)
            if not m or key in handled:
                continue
            handled.add(key)
            i, rest = int(m.group(1)), m.group(2)
            au = new_aus[i] if i < len(new_aus) else None
            src = f"{prefix}.{old_idx[au]}.{rest}" if au in old_idx else None
            if src is None:
                report["fresh"].append(key)
            elif src in old_state and tuple(old_state[src].shape) == tuple(own[key].shape):
                out[key] = old_state[src].clone().to(own[key].dtype)
                report["per_au"].append(key)
            else:
                report["kept"].append(key)

    # 2. tensors with an AU dimension
    def au_dim(key: str) -> int | None:
        for pat, dim in declared_keys.items():
            if fnmatch.fnmatchcase(key, pat):
                return int(dim)
        if declared_keys or key not in old_state or len(old_aus) == len(new_aus):
            return None
        a, b = old_state[key].shape, own[key].shape
        if len(a) != len(b):
            return None
        diff = [d for d in range(len(a)) if a[d] != b[d]]
        if len(diff) == 1 and a[diff[0]] == len(old_aus) and b[diff[0]] == len(new_aus):
            return diff[0]
        return None

    for key in own:
        if key in handled:
            continue
        d = au_dim(key)
        if d is None:
            continue
        handled.add(key)
        if key not in old_state:
            report["kept"].append(key)
            continue
        src, dst = old_state[key], out[key]
        other = lambda t: tuple(t.shape[:d]) + tuple(t.shape[d + 1:])  # noqa: E731
        if src.ndim != dst.ndim or other(src) != other(dst) or src.shape[d] != len(old_aus):
            report["kept"].append(key)
            continue
        for au in shared:
            dst.select(d, new_idx[au]).copy_(src.select(d, old_idx[au]))
        report["per_au"].append(key)

    # 3. everything else: copy when present with the same shape
    for key in own:
        if key in handled:
            continue
        if key in old_state and tuple(old_state[key].shape) == tuple(own[key].shape):
            out[key] = old_state[key].clone().to(own[key].dtype)
            report["copied"].append(key)
        else:
            report["kept"].append(key)
    report["unused"] = sorted(
        k for k in old_state if k not in own and not any(k.startswith(p + ".") for p in lists)
    )
    return out, report


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, *, strict_trunk: bool = True) -> dict:
    """Initialise ``model`` in place from an audet checkpoint, mapping AUs by identity.

    With ``strict_trunk`` a non-AU tensor of the model that the checkpoint cannot fill (missing or
    mis-shaped: another architecture) is an error. Returns the mapping report (see
    :func:`map_state_by_au`), with ``source`` and the source model name added.
    """
    meta = read_checkpoint_meta(path)
    state = read_state_dict(path)
    new_name = getattr(model, "model_name", "")
    old_aus = meta.get("aus") or []
    if not old_aus:
        raise CheckpointError(f"{path}: the checkpoint records no AU list; cannot map AU branches")
    new_state, report = map_state_by_au(model, state, old_aus)
    if strict_trunk and report.get("kept"):
        problems = list(report["kept"])
        raise CheckpointError(
            f"{path} ({meta['model']!r}) cannot initialise model {new_name!r}: tensors not found or "
            f"mis-shaped in the checkpoint: {', '.join(problems[:6])}"
            + (f", ... ({len(problems)} in all)" if len(problems) > 6 else "")
            + " (set model.init_strict_trunk=false to keep their fresh init)"
        )
    model.load_state_dict(new_state, strict=True)
    report["source"] = str(checkpoint_paths(path)[0])
    report["source_model"] = meta["model"]
    report["source_aus"] = old_aus
    return report

