"""Import the AU-Net authors' checkpoints (github.com/jingyang2017/AU-Net) into audet.

- **Predictor files** (``checkpoints/{bp4d,disfa}_split{1,2,3}.pth``, ``cross_model.pth``, the
  training script's ``fc_<epoch>.pth``): a plain state dict of ``AUFAN_TDN_`` (no prefix, no FAN).
  The authors' test.py loads them **by position** (it zips its own ``predictor.state_dict()`` keys
  with the file's entries and ignores the stored names), so we do the same: entry i of the file
  goes to the i-th tensor of our :class:`audet.models.aunet.AUNetPredictor` (same order:
  ``conv1x1``, ``ConvNet_1``, ``ConvNet_diff``, ``ConvNet_2``, ``predictor``, ``conv1x1_diff`` last),
  each shape checked. 103 entries = AU-TDN/AUNet predictor; 83 = the AU-FAN part (103 minus the
  18 entries of ``ConvNet_diff.0`` and the 2 of ``conv1x1_diff``: conv1x1 2 + ConvNet_1 18 +
  ConvNet_2 54 + predictor 9, the BatchNorm1d's 5 with its ``num_batches_tracked``; counted from
  ``original-checkpoints/aunet_tdn_12au.tsv``). The AU count comes from the classifier's last weight.
  The authors' difference is ``cat(F_t - F_{t-T}, F_{t+T} - F_t)``; ours follows the paper,
  ``cat(F_t - F_{t-T}, F_t - F_{t+T})``, so the second half of ``conv1x1_diff.weight`` is negated
  (the outputs are identical).
- **Label VAE** (``vae_<epochs>.pth``, ``VAE(A, k)``): a plain state dict with names ``fc1``,
  ``fc21``, ``fc22``, ``fc3``, ``fc4`` (loaded by name, strictly).
- **FAN** (``2dfan2.pth``): not converted; it is the model's pretrained part (``fan_weights=``),
  read by :func:`audet.models.layers.fan.load_fan_weights`.

The converted model uses the published code's ``fusion=(0.9, 0.1)`` (what the weights were
trained with; override with ``fusion=``) and the paper's evaluation (no flip averaging);
``as_published=True`` evaluates as the authors' test.py does instead (``flip_tta=True``: the mean of
the logits of the frames and their horizontal flip). Files are read with
``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any, Mapping

import torch

__all__ = [
    "ConversionError",
    "read_state_dict",
    "predictor_state_by_position",
    "convert_vae_state",
    "convert_aunet",
    "CODE_FUSION",
]

#: the published code's (alpha, beta), constructor floats not stored in the checkpoints
CODE_FUSION = (0.9, 0.1)
_N_TDN, _N_FAN = 103, 83


class ConversionError(ValueError):
    """The source is not a (matching) AU-Net checkpoint."""


def read_state_dict(src) -> "OrderedDict[str, torch.Tensor]":
    """An ordered ``{name: tensor}`` from a path (``torch.load(weights_only=True)``) or a loaded
    mapping; a ``{'state_dict': ...}`` wrapper and ``module.`` prefixes are removed."""
    where = str(src) if isinstance(src, (str, os.PathLike)) else "checkpoint"
    if isinstance(src, (str, os.PathLike)):
        try:
            obj = torch.load(str(src), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConversionError(f"{where}: cannot be read with torch.load(weights_only=True) ({exc})") from None
    else:
        obj = src
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{where}: expected a plain state dict of tensors")
    items = list(obj.items())
    if all(k.startswith("module.") for k, _ in items):
        items = [(k[len("module."):], v) for k, v in items]
    return OrderedDict(items)


def predictor_state_by_position(sd: Mapping[str, torch.Tensor], predictor, *, source: str = "checkpoint",
                                negate_later_diff: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Map the authors' predictor entries onto ``predictor``'s state dict BY POSITION (as test.py);
    every shape is checked. Returns ``(state, report)``; ``report["renamed"]`` lists entries whose
    stored name differs from ours (allowed: the released files' names may differ)."""
    own = predictor.state_dict()
    theirs = list(sd.items())
    if len(theirs) != len(own):
        raise ConversionError(
            f"{source}: {len(theirs)} entries, but the {'AU-TDN' if predictor.temporal else 'AU-FAN'} predictor "
            f"with {predictor.predictor[-1].out_features} AUs has {len(own)} (an AUFAN_TDN_ file has {_N_TDN}, "
            f"the AU-FAN part {_N_FAN})")
    out, renamed, bad = {}, [], []
    for (name, ref), (tname, t) in zip(own.items(), theirs):
        if tuple(t.shape) != tuple(ref.shape):
            bad.append(f"#{len(out)} {tname} {tuple(t.shape)} -> {name} {tuple(ref.shape)}")
        if tname != name:
            renamed.append((tname, name))
        out[name] = t.detach().clone().to(ref.dtype)
    if bad:
        raise ConversionError(f"{source}: shapes do not match by position: " + "; ".join(bad[:6]))
    if predictor.temporal and negate_later_diff:
        w = out["conv1x1_diff.weight"].clone()
        c = w.shape[1] // 2
        w[:, c:] = -w[:, c:]  # authors: F_{t+T} - F_t; ours (paper): F_t - F_{t+T}
        out["conv1x1_diff.weight"] = w
    return out, {"source": source, "tensors": len(out), "renamed": renamed}


def _predictor_layout(sd: Mapping[str, torch.Tensor], source: str) -> tuple[bool, int]:
    """(temporal, num_aus) of an authors' predictor file from its entry count and shapes."""
    items = list(sd.values())
    if len(items) == _N_TDN:
        temporal, last_w = True, items[-4]
    elif len(items) == _N_FAN:
        temporal, last_w = False, items[-2]
    else:
        raise ConversionError(f"{source}: {len(items)} entries; an AU-Net predictor file has {_N_TDN} "
                              f"(AUFAN_TDN_) or {_N_FAN} (AU-FAN) entries")
    if last_w.dim() != 2 or last_w.shape[1] != 128:
        raise ConversionError(f"{source}: entry #{len(items) - (4 if temporal else 2)} should be the classifier "
                              f"weight (A, 128), got {tuple(last_w.shape)}")
    return temporal, int(last_w.shape[0])


def convert_vae_state(src, vae) -> dict[str, torch.Tensor]:
    """Load the authors' ``vae_<epochs>.pth`` into a :class:`~audet.models.aunet.LabelVAE` (by name, strict)."""
    sd = read_state_dict(src)
    own = vae.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or extra or shapes:
        raise ConversionError(f"{src}: not a VAE({vae.fc1.in_features}, {vae.fc1.out_features}) state dict: "
                              f"missing {missing}, unexpected {extra}, shapes {shapes}")
    state = {k: sd[k].detach().clone().to(v.dtype) for k, v in own.items()}
    vae.load_state_dict(state, strict=True)
    return state


def convert_aunet(src, aus=None, *, model_name: str | None = None, vae=None, fan_weights: str | None = None,
                  fusion=CODE_FUSION, as_published: bool = False, **cfg: Any):
    """An audet AU-Net model from the authors' predictor file ``src`` (path or loaded mapping).

    ``aus``: AU numbers, a dataset name (``"BP4D"``) or None. ``model_name``: default ``aunet``
    (``aunet_tdn`` without ``vae``) for a 103-entry file, ``aunet_fan`` for an 82-entry one.
    ``vae``: the authors' ``vae_<epochs>.pth`` (its latent size sets ``vae_latent``).
    ``fan_weights``: recorded as the model's FAN file (loaded by ``load_pretrained_parts``; not here).
    ``as_published``: the authors' test-script settings (``flip_tta=True``) instead of the paper's.
    Returns the model in eval mode with ``conversion_report``.
    """
    from audet.models.registry import create_model
    from audet.models.convert.ac2d import _resolve_aus

    source = str(src) if isinstance(src, (str, os.PathLike)) else "checkpoint"
    sd = read_state_dict(src)
    temporal, n = _predictor_layout(sd, source)
    aus_list = _resolve_aus(aus, n)
    vae_sd = read_state_dict(vae) if vae is not None else None
    if model_name is None:
        model_name = ("aunet" if vae_sd is not None else "aunet_tdn") if temporal else (
            "aunet_vae" if vae_sd is not None else "aunet_fan")
    if vae_sd is not None:
        if "fc1.weight" not in vae_sd:
            raise ConversionError(f"{vae}: not an AU-Net VAE state dict (no fc1.weight)")
        cfg.setdefault("vae_latent", int(vae_sd["fc1.weight"].shape[0]))
    for k in ("confounder_scale", "prototype"):  # AC2D-only options of `audet convert`
        cfg.pop(k, None)
    if as_published:
        cfg.setdefault("flip_tta", True)
    model = create_model(model_name, num_aus=n, aus=aus_list, fusion=tuple(fusion), fan_weights=fan_weights, **cfg)
    if model.predictor.temporal != temporal:
        raise ConversionError(f"{source}: a {'TDN' if temporal else 'single-frame'} predictor does not fit {model_name!r}")
    state, report = predictor_state_by_position(sd, model.predictor, source=source)
    model.predictor.load_state_dict(state, strict=True)
    if vae_sd is not None:
        if model.vae is None:
            raise ConversionError(f"model {model_name!r} has no label VAE to load {vae} into")
        convert_vae_state(vae_sd, model.vae)
        report["vae"] = str(vae)
    report.update(num_aus=n, temporal=temporal, fusion=list(fusion), as_published=bool(as_published))
    kind = "AUFAN_TDN_ (AU-TDN)" if temporal else "AU-FAN"
    report["summary"] = (f"AU-Net {kind} predictor: {len(sd)} entries by position; fusion {tuple(fusion)}; "
                         f"label VAE {'loaded' if vae_sd is not None else 'none'}; FAN file "
                         f"{fan_weights or 'not given (model.args.fan_weights)'}; evaluation "
                         + ("as the authors' test.py (flip averaging)" if model.flip_tta
                            else "as the paper (no flip averaging; --as-published for test.py's)"))
    model.eval()
    model.conversion_report = report
    return model
