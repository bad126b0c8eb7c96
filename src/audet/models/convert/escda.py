"""Map a published MFN (mixed-feature MobileFaceNet) state dict onto the ESCDA backbone.

The ESCDA paper initialises both backbones from MS-Celeb-1M face-recognition training. Such a file
is not shipped with audet; a user who has one (their own pretraining, or a published MFN state dict
such as DDAMFN's ``MFN_msceleb.pth``) passes it as ``model.args.backbone_weights=PATH``. Names:

======================================  ====================================
published MFN                           audet :class:`MixFaceNet`
======================================  ====================================
``conv_3.model.<i>.*`` (residual stacks)  ``conv_3.<i>.*``
``<block>.CA.conv2.*`` / ``CA.conv3.*``    ``<block>.CA.conv_h.*`` / ``CA.conv_w.*``
everything else in ``conv1`` ... ``conv_6_sep``   the same name
``conv_6_dw``, ``linear``, ``bn`` (the recognition head), ``conv_dw.bn/prelu`` (defined, unused)   ignored
======================================  ====================================

Prefixes ``module.``, ``features.``, ``backbone.`` and wrappers ``{"state_dict": ...}`` /
``{"model": ...}`` / ``{"net": ...}`` are removed first. A wrapper that stores the features as
``features.<k>`` with numeric children indices (``nn.Sequential(*children)``) is mapped by position.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

__all__ = ["mfn_to_backbone", "MFN_CHILDREN"]

#: the order of the MFN's children (used for ``features.<k>.`` numbering)
MFN_CHILDREN = ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5", "conv_6_sep")


def _unwrap(state) -> dict:
    while isinstance(state, Mapping) and len(state) <= 4:
        for key in ("state_dict", "model", "net"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
        else:
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"backbone weights: expected a state dict, got {type(state).__name__}")
    return dict(state)


def _rename(key: str) -> str:
    for prefix in ("module.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    m = re.match(r"^features\.(\d+)\.(.*)$", key)
    if m and int(m.group(1)) < len(MFN_CHILDREN):
        key = f"{MFN_CHILDREN[int(m.group(1))]}.{m.group(2)}"
    elif key.startswith("features."):
        key = key[len("features."):]
    key = re.sub(r"^(conv_[345])\.model\.", r"\1.", key)
    key = key.replace(".CA.conv2.", ".CA.conv_h.").replace(".CA.conv3.", ".CA.conv_w.")
    return key


def mfn_to_backbone(state, own: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(mapped, ignored)``: the tensors of ``state`` renamed to the keys of ``own`` (the backbone's
    state dict), and the source keys that have no place in it."""
    mapped, ignored = {}, []
    for key, value in _unwrap(state).items():
        if not isinstance(value, torch.Tensor):
            ignored.append(key)
            continue
        new = _rename(key)
        if new in own:
            mapped[new] = value
        else:
            ignored.append(key)
    return mapped, ignored
