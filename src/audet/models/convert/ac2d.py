"""Convert the authors' AC2D checkpoints (github.com/ZhiwenShao/AC2D, ``net_<epoch>.pth``) to audet.

The authors' ``train.py`` saves either a bare ``state_dict`` (epochs before ``inter_epoch``) or
``{'model': state_dict, 'K_data': (A, 64), 'V_data': (A, 64), 'P_data': float}`` where ``K_data``
is the epoch mean of the pooled per-AU features, ``P_data = 1/N`` and ``V_data = P_data * K_data``.
Their forward uses ``V_data`` as is (``xmap(f) + smap(V_data[j])``), i.e. the published code's
confounder scale, so the converted model is built with ``confounder_scale="code"`` and
``prototype="epoch_stale"`` by default and reproduces the authors' outputs.

Names are mapped by rule (:func:`audet_to_authors_name`), not by a list:

==========================================  =====================================
audet                                       authors (``ResTV2_ac2d``)
==========================================  =====================================
``stem.pa.conv.*``                          ``stem.pos.pa_conv.*``
``embed2.*`` (``pa.conv`` as above)         ``patch_2.*``
``stage{1,2}.<i>.attn.up_conv.*``           ``stage{1,2}.<i>.attn.up.0.*``
``branches.<j>.embed.*``                    ``aus_patch_3.<j>.*``
``branches.<j>.blocks.<k>.*`` (k < n3-2)    ``aus_stage3_start.<j>.<k>.*``
``branches.<j>.blocks.<n3-2>.*``            ``aus_stage3_interm.<j>.*``
``branches.<j>.blocks.<n3-1>.*``            ``aus_stage3_end.<j>.*``
``branches.<j>.norm.*``                     ``aus_norm.<j>.*``
``branches.<j>.intervention.w_{q,k,x,z}``   ``aus_data_attention.<j>.{qmap,kmap,xmap,smap}``
``branches.<j>.head.*``                     ``aus_head.<j>.*``
``proto_k`` / ``proto_v`` / ``proto_count``  ``K_data`` / ``V_data`` / ``1 / P_data``
==========================================  =====================================

Loading is done with ``torch.load(weights_only=True)``: the authors' dict holds tensors and a
Python float, which the restricted unpickler accepts. If ``K_data``/``V_data`` were saved as
numpy arrays (or ``P_data`` as a numpy scalar), the restricted unpickler refuses their globals;
we then ask :func:`torch.serialization.get_unsafe_globals_in_checkpoint` which globals the file
needs, and allow them only if every one is a numpy array/dtype/scalar reconstructor from the
short allow-list below (``safe_globals`` context, never a full unpickle). Anything else is an
error naming the offending globals.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from audet.utils.state import describe_mismatch

__all__ = [
    "ConversionError",
    "audet_to_authors_name",
    "authors_name_map",
    "load_authors_checkpoint",
    "convert_state_dict",
    "convert_ac2d",
    "save_converted",
    "to_authors_checkpoint",
]

log = logging.getLogger(__name__)


class ConversionError(ValueError):
    """The source is not a (matching) AC2D checkpoint."""


# numpy globals a numpy array / scalar pickle needs (numpy 1.x and 2.x module paths)
_NUMPY_ALLOWED = {
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
}
_NUMPY_DTYPE_RX = re.compile(r"^numpy\.dtypes\.[A-Za-z0-9]+DType$")


def _resolve(qualname: str):
    mod, _, attr = qualname.rpartition(".")
    return getattr(importlib.import_module(mod), attr)


def _torch_load(path: str | os.PathLike):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError in practice
        first = exc
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint ({first})") from None
    bad = [g for g in needed if g not in _NUMPY_ALLOWED and not _NUMPY_DTYPE_RX.match(g)]
    if bad:
        raise ConversionError(
            f"{path}: refusing to unpickle globals other than numpy arrays/scalars: {', '.join(bad)}"
        )
    allowed = [_resolve(g) for g in needed]
    # numpy dtype instances are rebuilt through their per-dtype classes (numpy.dtypes.Float32DType
    # ...), which the scan above does not list; they are plain data-type descriptors
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# name mapping
_BRANCH_RX = re.compile(r"^branches\.(\d+)\.([a-z_]+)\.(.*)$")
_CAUSAL = {"w_q": "qmap", "w_k": "kmap", "w_x": "xmap", "w_z": "smap"}


def _inner(rest: str) -> str:
    """Names inside a block / embedding: our ``pa.conv`` and ``attn.up_conv``."""
    rest = re.sub(r"(^|\.)pa\.conv\.", r"\1pos.pa_conv.", rest)
    return rest.replace("attn.up_conv.", "attn.up.0.")


def audet_to_authors_name(name: str, depth3: int = 3) -> str | None:
    """Our state-dict name -> the authors' name (None for tensors they do not have)."""
    if name.startswith("proto_") or name.startswith("rich_intervention."):
        return None
    if name.startswith("embed2."):
        return "patch_2." + _inner(name[len("embed2."):])
    if name.startswith(("stem.", "stage1.", "stage2.")):
        return _inner(name)
    m = _BRANCH_RX.match(name)
    if not m:
        raise ConversionError(f"no rule maps {name!r} to the authors' layout")
    j, part, rest = m.groups()
    if part == "embed":
        return f"aus_patch_3.{j}.{_inner(rest)}"
    if part == "blocks":
        k_str, _, tail = rest.partition(".")
        k, ci = int(k_str), max(depth3 - 2, 0)
        tail = _inner(tail)
        if k < ci:
            return f"aus_stage3_start.{j}.{k}.{tail}"
        if k == ci:
            return f"aus_stage3_interm.{j}.{tail}"
        if k == ci + 1:
            return f"aus_stage3_end.{j}.{tail}"
        raise ConversionError(f"stage-3 block {k} of {depth3} has no place in the authors' layout")
    if part == "norm":
        return f"aus_norm.{j}.{rest}"
    if part == "head":
        return f"aus_head.{j}.{rest}"
    if part == "intervention":
        lin, _, tail = rest.partition(".")
        return f"aus_data_attention.{j}.{_CAUSAL[lin]}.{tail}"
    raise ConversionError(f"no rule maps {name!r} to the authors' layout")


def authors_name_map(model) -> dict[str, str]:
    """``{authors' name: our name}`` for every tensor of ``model`` the authors' layout has."""
    depth3 = len(model.branches[0].blocks)
    out: dict[str, str] = {}
    for ours in model.state_dict():
        theirs = audet_to_authors_name(ours, depth3)
        if theirs is None:
            continue
        if theirs in out:
            raise ConversionError(f"name rule is not one-to-one: {ours!r} and {out[theirs]!r} -> {theirs!r}")
        out[theirs] = ours
    return out


# ---------------------------------------------------------------------------------------------
# reading
def load_authors_checkpoint(src) -> dict[str, Any]:
    """``{'model': state_dict, 'K_data', 'V_data', 'P_data'}`` (the last three None for a bare state dict).

    ``src``: a path or an already-loaded object. Strips a ``module.`` prefix (DataParallel).
    """
    obj = _torch_load(src) if isinstance(src, (str, os.PathLike)) else src
    where = str(src) if isinstance(src, (str, os.PathLike)) else "checkpoint"
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: expected a dict or a state_dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):
        sd, K, V, P = obj["model"], obj.get("K_data"), obj.get("V_data"), obj.get("P_data")
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd, K, V, P = obj["state_dict"], None, None, None
    else:
        sd, K, V, P = obj, None, None, None
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConversionError(f"{where}: no tensor state_dict found (keys: {', '.join(list(obj)[:8])})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}

    def tens(x):
        if x is None:
            return None
        t = torch.as_tensor(x)
        return t.to(torch.float32)

    P = None if P is None else float(torch.as_tensor(P).item())
    return {"model": dict(sd), "K_data": tens(K), "V_data": tens(V), "P_data": P, "source": where}


def _count_branches(sd: Mapping[str, torch.Tensor]) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(r"^aus_head\.(\d+)\.weight$", k))}
    return len(idx)


def _few(xs: Sequence[str], n: int = 8) -> str:
    xs = list(xs)
    return ", ".join(xs[:n]) + (f", ... ({len(xs)} in all)" if len(xs) > n else "")


def convert_state_dict(sd: Mapping[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """Map the authors' ``state_dict`` onto ``model``'s names; check every name and shape.

    Raises :class:`ConversionError` listing missing, unexpected and mis-shaped tensors.
    """
    name_map = authors_name_map(model)
    own = model.state_dict()
    problem = describe_mismatch({theirs: own[ours].shape for theirs, ours in name_map.items()}, sd)
    if problem:
        raise ConversionError(
            f"checkpoint does not fit {getattr(model, 'model_name', '') or 'AC2D'} with {model.num_aus} AUs: "
            + problem
        )
    out = {ours: sd[theirs].detach().clone().to(own[ours].dtype) for theirs, ours in name_map.items()}
    for k, v in own.items():  # our own extra buffers (prototypes) keep their values
        out.setdefault(k, v.clone())
    return out


def _resolve_aus(aus, n: int) -> list[int]:
    """The AU list of a checkpoint with ``n`` AU outputs: ``aus`` parsed by
    :func:`audet.facs.parse_aus`; none given = :func:`audet.facs.default_aus` (BP4D's first ``n``)."""
    from audet.facs import default_aus, parse_aus

    try:
        given = parse_aus(aus)
        if given is None:
            if n != 12:
                log.warning("no AU list given for a checkpoint with %d AU outputs: using BP4D's first %d AUs; "
                            "give the AU list (--aus) for another dataset", n, n)
            return default_aus(n)
    except ValueError as exc:
        raise ConversionError(f"AU list: {exc}") from None
    if len(given) != n:
        raise ConversionError(f"the checkpoint has {n} AU branches but {len(given)} AUs were given: {given}")
    return given


def convert_ac2d(
    src,
    aus=None,
    *,
    model_name: str | None = None,
    confounder_scale: str = "code",
    prototype: str = "epoch_stale",
    as_published: bool = False,
    **cfg,
):
    """Build an audet AC2D model from the authors' checkpoint ``src`` (path or loaded object).

    ``aus``: AU numbers, a dataset name (``"BP4D"``) or None (count taken from the checkpoint).
    ``model_name``: registry name; default ``"ac2d"``, or ``"ac2d_av"`` when the checkpoint has
    no ``aus_data_attention`` layers. ``confounder_scale="code"`` keeps ``V_data`` as the authors
    use it; ``"paper"`` sets V = K (Eq. 13), which changes the outputs. Returns the model (eval mode)
    with ``model.conversion_report``. ``as_published`` changes nothing: the authors' test script
    evaluates with the stored prototypes, which is what a converted model does by default.
    """
    from audet.models.registry import create_model

    ck = load_authors_checkpoint(src)
    sd = ck["model"]
    if "stem.proj.0.weight" not in sd or not any(k.startswith("aus_head.") for k in sd):
        raise ConversionError(
            f"{ck['source']}: not an AC2D checkpoint (no stem.proj.0.weight / aus_head.* keys; "
            f"first keys: {_few(list(sd)[:5], 5)})"
        )
    n = _count_branches(sd)
    aus_list = _resolve_aus(aus, n)
    has_causal = any(k.startswith("aus_data_attention.") for k in sd)
    if model_name is None:
        model_name = "ac2d" if has_causal else "ac2d_av"
    model = create_model(
        model_name, num_aus=n, aus=aus_list, confounder_scale=confounder_scale, prototype=prototype, **cfg
    )
    state = convert_state_dict(sd, model)
    model.load_state_dict(state, strict=True)
    report = {"source": ck["source"], "num_aus": n, "tensors": len(sd), "prototypes": False}
    K, V, P = ck["K_data"], ck["V_data"], ck["P_data"]
    if K is not None:
        if not model.has_intervention:
            raise ConversionError(f"{ck['source']}: has K_data but model {model_name!r} has no causal intervention")
        if tuple(K.shape) != tuple(model.proto_k.shape):
            raise ConversionError(f"K_data has shape {tuple(K.shape)}, expected {tuple(model.proto_k.shape)}")
        if V is not None and tuple(V.shape) != tuple(K.shape):
            raise ConversionError(f"V_data has shape {tuple(V.shape)}, K_data {tuple(K.shape)}")
        count = 1.0 / P if P else float("nan")
        if math.isfinite(count) and abs(count - round(count)) < 1e-6 * max(1.0, count):
            count = float(round(count))  # N is a number of samples; undo 1/(1/N) rounding
        if V is not None and P:
            dev = float((V - P * K).abs().max())
            report["V_minus_PK_max_abs"] = dev
        if confounder_scale == "code" and V is not None:
            value = V
        elif confounder_scale == "code":
            if not P:
                raise ConversionError("checkpoint has K_data but neither V_data nor P_data")
            value = K * P
        else:
            value = K
        model.set_prototypes(K, count if math.isfinite(count) else 0.0, value=value)
        report.update(prototypes=True, P_data=P, count=count)
        report["summary"] = (f"sample prototypes: K_data, V_data (P_data = {P}, N = {count:g}), "
                             f"confounder_scale={confounder_scale}")
    elif model.has_intervention:
        report["summary"] = ("no sample prototypes in the checkpoint: the model predicts without causal intervention "
                             "until prototypes are computed")
    report["as_published"] = bool(as_published)
    model.eval()
    model.conversion_report = report
    return model


# ---------------------------------------------------------------------------------------------
# writing
def save_converted(model, out: str | os.PathLike, extra: Mapping | None = None) -> tuple[Path, Path]:
    """Write ``<out>.safetensors`` + ``<out>.json`` with :func:`audet.models.checkpoint.save_checkpoint`
    (the one checkpoint writer), recording the conversion report as ``converted_from``."""
    from audet.models.checkpoint import save_checkpoint

    extra = {"converted_from": getattr(model, "conversion_report", {}), **dict(extra or {})}
    p = Path(out)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return save_checkpoint(model, p.with_name(p.name + ".safetensors"), extra=extra)


def to_authors_checkpoint(model) -> dict[str, Any]:
    """The inverse mapping: an authors'-style dict from an audet AC2D model (for tests and export).

    Returns ``{'model': state_dict}`` plus ``K_data``/``V_data``/``P_data`` when the model holds
    valid prototypes.
    """
    own = model.state_dict()
    sd = {theirs: own[ours].detach().clone() for theirs, ours in authors_name_map(model).items()}
    out: dict[str, Any] = {"model": sd}
    if model.has_intervention and bool(model.proto_valid):
        out["K_data"] = model.proto_k.detach().clone()
        out["V_data"] = model.proto_v.detach().clone()
        c = float(model.proto_count)
        out["P_data"] = 1.0 / c if c > 0 else 0.0
    return out
