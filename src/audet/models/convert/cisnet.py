"""Convert the authors' CISNet checkpoints (github.com/chen-yingjie/CIS, ``net.CISNet.Model``) to audet.

The authors' training script (``processor/train-image-causal.py``) writes, every epoch,
``final_model.pt = {'model': state_dict, 'K_subject': (S, 512), 'V_subject': (S, 512),
'P_subject': (S,)}`` (S = training subjects; ``V = P[:, None] * K``), and every 5 epochs a bare
``epoch{5,10,15}_model.pt`` state_dict (no subject dictionary). Facts from
``shared/reference/original-checkpoints/README.md`` and ``cis_resnet34_12au.tsv``.

Names are mapped by rule:

======================================  ===========================================
audet (:class:`audet.models.cisnet.CISNet`)  authors (``net.CISNet.Model``)
======================================  ===========================================
``encoder.*`` (torchvision children)      ``encoder.*`` (the same: conv1 -> 0, bn1 -> 1, layerN -> N+3)
``projector.*``                           ``projector.*``
``cis.intervention.w_q/w_k/w_x/w_z.*``    ``subject_attention.qmap/kmap/xmap/smap.*``
``classifier.0.*`` / ``classifier.2.*``   ``final.0.*`` / ``final.2.*`` (``final.3`` is the Sigmoid)
``cis.dict_keys/dict_values/dict_priors`` ``K_subject`` / ``V_subject`` / ``P_subject``
======================================  ===========================================

The backbone is read from the encoder keys (ResNet-18: 2 blocks in ``encoder.4``; -34: 3 blocks;
-50: bottlenecks with ``conv3``). A head-only file (no ``encoder.*``, like the golden reference)
needs ``backbone=`` and loads the head only (``conversion_report["missing_encoder"]``).

Input: the authors feed BGR / 255 with no mean/std. The converted model is built with
``input_convention="bgr_unit"``: audet's RGB, mean = std = 0.5 input is mapped to that inside the
model, so it runs in audet's data pipeline unchanged (exact, no re-training).

Subject ids: the file holds no subject names; the dictionary rows get the names ``subjects=``
(in row order) or placeholders ``subject_00 ..``. The authors' row order is the order of first
appearance in their shuffled loader, which does not matter (the attention is order-invariant).
A bare epoch file has no dictionary: the model then runs without CIS (the authors' test-phase
path) until a data pass fills it.

Safety: files are read with ``torch.load(weights_only=True)`` only; anything the restricted
unpickler refuses is an error, never an unrestricted unpickle.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import torch

from audet.models.convert.ac2d import ConversionError, _resolve_aus, save_converted  # noqa: F401 (re-export)
from audet.utils.state import describe_mismatch

__all__ = [
    "ConversionError",
    "audet_to_authors_name",
    "authors_name_map",
    "load_cis_checkpoint",
    "detect_backbone",
    "convert_cisnet",
    "to_authors_checkpoint",
    "save_converted",
]

_CIS = {"w_q": "qmap", "w_k": "kmap", "w_x": "xmap", "w_z": "smap"}
_HEAD = ("projector.", "subject_attention.", "final.")


def audet_to_authors_name(name: str) -> str | None:
    """Our state-dict name -> the authors' name (None for tensors they do not have: the
    dictionary buffers, which live outside their state_dict)."""
    if name.startswith(("encoder.", "projector.")):
        return name
    m = re.match(r"^cis\.intervention\.(w_[qkxz])\.(.*)$", name)
    if m:
        return f"subject_attention.{_CIS[m.group(1)]}.{m.group(2)}"
    if name.startswith("cis."):
        return None
    if name.startswith("classifier."):
        return "final." + name[len("classifier."):]
    raise ConversionError(f"no rule maps {name!r} to the authors' CISNet layout")


def authors_name_map(model) -> dict[str, str]:
    """``{authors' name: our name}`` for every tensor of ``model`` the authors' layout has."""
    out: dict[str, str] = {}
    for ours in model.state_dict():
        theirs = audet_to_authors_name(ours)
        if theirs is not None:
            out[theirs] = ours
    return out


def _load(path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for disallowed globals, OSError, ...
        raise ConversionError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); audet never unpickles arbitrary objects -- "
            "re-save the file with plain tensors"
        ) from None


def load_cis_checkpoint(src) -> dict[str, Any]:
    """``{'model': state_dict, 'K_subject', 'V_subject', 'P_subject', 'source'}`` (the dictionary
    entries None for a bare epoch state_dict). ``src``: a path or a loaded object; a
    ``module.`` prefix (DataParallel) is stripped."""
    obj = _load(src) if isinstance(src, (str, os.PathLike)) else src
    where = str(src) if isinstance(src, (str, os.PathLike)) else "checkpoint"
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: expected a dict or a state_dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
        K, V, P = obj.get("K_subject"), obj.get("V_subject"), obj.get("P_subject")
    else:
        sd, K, V, P = obj, None, None, None
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConversionError(f"{where}: no tensor state_dict found (keys: {', '.join(map(str, list(obj)[:8]))})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}

    def tens(x):
        return None if x is None else torch.as_tensor(x).detach().to("cpu", torch.float32)

    return {"model": dict(sd), "K_subject": tens(K), "V_subject": tens(V), "P_subject": tens(P), "source": where}


#: backbones a converted CISNet can have (the authors' code also offers alexnet and vgg16)
SUPPORTED_BACKBONES = ("resnet18", "resnet34", "resnet50")


def detect_backbone(sd: Mapping[str, torch.Tensor]) -> str | None:
    """``resnet18``/``resnet34``/``resnet50`` from the encoder keys (None for a head-only file).

    Raises :class:`ConversionError` for an encoder that is not a torchvision ResNet (the authors'
    ``alexnet``/``vgg16`` options: ``features`` children, keys ``encoder.0.<i>.weight``)."""
    if not any(k.startswith("encoder.") for k in sd):
        return None
    conv1 = sd.get("encoder.0.weight")
    if conv1 is None or tuple(conv1.shape) != (64, 3, 7, 7):
        first = sd.get("encoder.0.0.weight")
        name = ("an AlexNet" if first is not None and tuple(first.shape[-2:]) == (11, 11) else
                "a VGG-16" if first is not None and tuple(first.shape[-2:]) == (3, 3) else "not a ResNet")
        raise ConversionError(
            f"the checkpoint's encoder is {name} (first encoder key "
            f"{next(k for k in sd if k.startswith('encoder.'))}); audet converts CISNet with "
            f"{', '.join(SUPPORTED_BACKBONES)} encoders only")
    if "encoder.4.0.conv3.weight" in sd:
        return "resnet50"
    return "resnet34" if "encoder.4.2.conv1.weight" in sd else "resnet18"


def convert_cisnet(
    src,
    aus=None,
    *,
    subjects: Sequence[str] | None = None,
    backbone: str | None = None,
    model_name: str | None = None,
    input_convention: str = "bgr_unit",
    as_published: bool = False,
    **cfg,
):
    """Build an audet CISNet from the authors' ``final_model.pt`` or ``epoch*_model.pt``.

    ``aus``: AU numbers, a dataset name (``"BP4D"``) or None (count from ``final.2``).
    ``subjects``: names of the dictionary rows (default placeholders). ``backbone``: needed only
    for a head-only file. ``as_published``: the authors' stand-alone test settings
    (``eval_intervention=False``: evaluated without the subject dictionary, as their test phase)
    instead of the paper's (with it). Returns the model in eval mode with ``model.conversion_report``.
    """
    from audet.models.registry import create_model
    from audet.models.base import DataInfo

    ck = load_cis_checkpoint(src)
    sd = ck["model"]
    if "final.2.weight" not in sd or "projector.weight" not in sd:
        raise ConversionError(
            f"{ck['source']}: not a CISNet checkpoint (no projector.weight / final.2.weight; first keys: "
            f"{', '.join(list(sd)[:5])})"
        )
    try:
        found = detect_backbone(sd)
    except ConversionError as exc:
        raise ConversionError(f"{ck['source']}: {exc}") from None
    if as_published:
        cfg.setdefault("eval_intervention", False)
    if found and backbone and found != backbone:
        raise ConversionError(f"{ck['source']}: the encoder is a {found}, not the requested {backbone}")
    backbone = found or backbone
    if backbone is None:
        raise ConversionError(f"{ck['source']}: head-only checkpoint (no encoder.* keys): pass backbone='resnet18'|'resnet34'|'resnet50'")
    n = int(sd["final.2.weight"].shape[0])
    aus_list = _resolve_aus(aus, n)
    has_cis = any(k.startswith("subject_attention.") for k in sd)
    K, V, P = ck["K_subject"], ck["V_subject"], ck["P_subject"]
    if K is not None and not has_cis:
        raise ConversionError(f"{ck['source']}: has K_subject but no subject_attention layers")
    data = None
    if has_cis:
        S = int(K.shape[0]) if K is not None else (len(subjects) if subjects else 0)
        if S == 0:
            raise ConversionError(
                f"{ck['source']}: a bare epoch file has no subject dictionary; pass subjects=[...] (the training "
                "subjects; CLI: --subjects FILE or a comma list) so the model can be built, then fill the dictionary with a data pass"
            )
        names = [str(s) for s in subjects] if subjects else [f"subject_{i:02d}" for i in range(S)]
        if len(names) != S:
            raise ConversionError(f"the dictionary has {S} subjects but {len(names)} names were given")
        data = DataInfo(aus=aus_list, subjects=sorted(names), train_subjects=names)
    if model_name is None:
        short = backbone.replace("resnet", "r")
        model_name = f"cisnet_{short}" if has_cis else f"cisnet_{short}_base"
    model = create_model(model_name, num_aus=n, aus=aus_list, data=data, input_convention=input_convention, **cfg)

    name_map = authors_name_map(model)
    own = model.state_dict()
    head_only = found is None
    expected = {t: own[o].shape for t, o in name_map.items() if not (head_only and t.startswith("encoder."))}
    problem = describe_mismatch(expected, sd)
    if problem:
        raise ConversionError(f"{ck['source']} does not fit {model_name} with {n} AUs: {problem}")
    state = {k: v.clone() for k, v in own.items()}
    for theirs, ours in name_map.items():
        if theirs in sd:
            state[ours] = sd[theirs].detach().clone().to(own[ours].dtype)
    model.load_state_dict(state, strict=True)
    report = {"source": ck["source"], "backbone": backbone, "num_aus": n, "tensors": len(sd), "dictionary": False,
              "missing_encoder": head_only, "input_convention": input_convention,
              "as_published": bool(as_published)}
    evaluation = ("without the subject dictionary (the authors' stand-alone test; --as-published)"
                  if not model.eval_intervention else "with the subject dictionary (the paper; --as-published: without)")
    if K is not None:
        if P is None:
            raise ConversionError(f"{ck['source']}: K_subject without P_subject")
        # dictionary rows follow the file; our rows follow the sorted names -> permute
        order = [names.index(s) for s in model.dictionary_subjects]
        Kp, Pp = K[order], P.reshape(-1)[order]
        Vp = V[order] if V is not None else None
        model.cis.set_dictionary(Kp, Pp, values=Vp)
        if V is not None:
            report["V_minus_PK_max_abs"] = float((V - P.reshape(-1, 1) * K).abs().max())
        report.update(dictionary=True, subjects=len(names))
        report["summary"] = (f"subject dictionary: {len(names)} subjects (K_subject, V_subject, P_subject); rows named "
                             f"{names[0]} ... {names[-1]}; input {input_convention}; evaluated {evaluation}")
    elif has_cis:
        report["summary"] = (f"no subject dictionary in the checkpoint (a bare epoch file; {len(names)} training subjects "
                             f"{names[0]} ... {names[-1]}): the model runs without CIS until a data pass fills it")
    else:
        report["summary"] = f"CISNet without CIS ({backbone}); input {input_convention}"
    model.eval()
    model.conversion_report = report
    return model


def to_authors_checkpoint(model) -> dict[str, Any]:
    """The inverse mapping: an authors'-style ``final_model.pt`` dict from an audet CISNet (rows in
    ``model.dictionary_subjects`` order); a bare ``{'model': ...}`` when the dictionary is empty."""
    own = model.state_dict()
    out: dict[str, Any] = {"model": {t: own[o].detach().clone() for t, o in authors_name_map(model).items()}}
    if model.cis is not None and model.cis.valid:
        out["K_subject"] = model.cis.dict_keys.detach().clone()
        out["V_subject"] = model.cis.dict_values.detach().clone()
        out["P_subject"] = model.cis.dict_priors.detach().clone()
    return out
