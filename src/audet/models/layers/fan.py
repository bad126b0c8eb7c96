"""The stacked-hourglass face-alignment network FAN (Bulat & Tzimiropoulos, ICCV 2017) and its
multi-scale residual block, as AU-Net uses it (AUNet paper section IV-A, Fig. 4a and Fig. 5).

Layout (state-dict names, shapes and order exactly as ``FAN(num_modules=2)`` of the face-alignment
package and AU-Net's ``models/FAN.py``; ``shared/reference/original-checkpoints/aunet_fan.tsv``:
599 entries, 12,106,504 parameters)::

    conv1 7x7/2 (3 -> 64, bias) -> bn1 -> ReLU -> conv2 ConvBlock(64, 128) -> pool 2
      -> conv3 ConvBlock(128, 128) -> conv4 ConvBlock(128, 256)          = F_l (256 x 64 x 64)
    per stack i = 0, 1:
      m{i} HourGlass(depth 4, 256) -> top_m_{i} ConvBlock -> conv_last{i} 1x1 -> bn_end{i} -> ReLU = ll_i
      l{i} 1x1 (256 -> 68) = heatmaps_i
      i < last: previous += bl{i}(ll_i) + al{i}(heatmaps_i)

:class:`ConvBlock` (Fig. 5) is pre-activation: ``out1 = conv1(relu(bn1(x)))`` (out/2 channels),
``out2 = conv2(relu(bn2(out1)))`` (out/4), ``out3 = conv3(relu(bn3(out2)))`` (out/4), the three
concatenated plus the residual (``downsample`` = BN, ReLU, 1x1 conv without bias when the channel
counts differ). Every 3x3 conv has no bias.

Pooling (``pool=``): AU-Net's FAN uses **max** pooling after ``conv2`` and in each hourglass's lower
branch (default, ``pool="max"``); the face-alignment package (1.5.0) uses **average** pooling
there (``pool="avg"``). The state dicts are identical, the outputs are not (up to 0.05 apart in the
last heatmaps with the same weights), so pick the pooling the weights were trained with:
AU-Net's ``2dfan2.pth`` -> ``max``; a face-alignment 2DFAN checkpoint -> ``avg``.

:meth:`FAN.forward_features` returns AU-Net's basis (section IV-A): ``cat(F_l, F_h1 * M, F_h2 * M)``,
768 channels at a quarter of the input side (64 x 64 for 256 x 256), where ``F_h1 = bl0(ll_0)``,
``F_h2 = ll_1`` and ``M`` = the last stack's 68 heatmaps summed into one plane.

Weights: :func:`load_fan_weights` reads AU-Net's ``2dfan2.pth`` (a plain state dict; also inside a
full ``AU_NET`` state dict under ``feature.fan.``), the face-alignment package's ``2DFAN-<n>.pth.tar``
format (``{"state_dict": {"module.conv1.weight": ...}}``), TorchScript archives of the same network
and ``.safetensors`` files. Pickles are read with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBlock",
    "HourGlass",
    "FAN",
    "FANWeightsError",
    "POOL_MODES",
    "read_fan_state_dict",
    "load_fan_weights",
]

log = logging.getLogger(__name__)

POOL_MODES = ("max", "avg")


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """FAN's multi-scale residual block (AUNet Fig. 5), pre-activation; see the module docstring."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        if out_planes % 4:
            raise ValueError(f"ConvBlock out_planes must be a multiple of 4, got {out_planes}")
        # registration order = the authors' state-dict order: bn1, conv1, bn2, conv2, bn3, conv3, downsample
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, out_planes // 2)
        self.bn2 = nn.BatchNorm2d(out_planes // 2)
        self.conv2 = _conv3x3(out_planes // 2, out_planes // 4)
        self.bn3 = nn.BatchNorm2d(out_planes // 4)
        self.conv3 = _conv3x3(out_planes // 4, out_planes // 4)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes), nn.ReLU(), nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), dim=1) + res


def _pool(x: torch.Tensor, mode: str) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2) if mode == "max" else F.avg_pool2d(x, 2, stride=2)


class HourGlass(nn.Module):
    """One hourglass of ``depth`` levels (names ``b1_L``, ``b2_L``, ``b2_plus_1``, ``b3_L``).

    ``level(L, x) = b1_L(x) + up2(b3_L(inner))``, ``inner = level(L-1, b2_L(pool(x)))`` or
    ``b2_plus_1(b2_1(pool(x)))`` at L = 1; ``up2`` is nearest-neighbour x2.
    """

    def __init__(self, depth: int = 4, features: int = 256, pool: str = "max"):
        super().__init__()
        if pool not in POOL_MODES:
            raise ValueError(f"pool={pool!r}; choose 'max' (AU-Net) or 'avg' (face-alignment)")
        self.depth = int(depth)
        self.pool = pool
        self._build(self.depth, features)

    def _build(self, level: int, features: int) -> None:
        self.add_module(f"b1_{level}", ConvBlock(features, features))
        self.add_module(f"b2_{level}", ConvBlock(features, features))
        if level > 1:
            self._build(level - 1, features)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(features, features))
        self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = getattr(self, f"b1_{level}")(x)
        low = getattr(self, f"b2_{level}")(_pool(x, self.pool))
        low = self._forward(level - 1, low) if level > 1 else getattr(self, f"b2_plus_{level}")(low)
        low = getattr(self, f"b3_{level}")(low)
        return up1 + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, x)


class FAN(nn.Module):
    """``num_modules``-stack FAN (2 for AU-Net's 2DFAN-2); see the module docstring."""

    def __init__(self, num_modules: int = 2, num_landmarks: int = 68, pool: str = "max"):
        super().__init__()
        if pool not in POOL_MODES:
            raise ValueError(f"pool={pool!r}; choose 'max' (AU-Net) or 'avg' (face-alignment)")
        self.num_modules = int(num_modules)
        self.pool = pool
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        for i in range(self.num_modules):
            self.add_module(f"m{i}", HourGlass(4, 256, pool))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, kernel_size=1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, num_landmarks, kernel_size=1))
            if i < self.num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, kernel_size=1))
                self.add_module(f"al{i}", nn.Conv2d(num_landmarks, 256, kernel_size=1))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """F_l: the features before the first hourglass (256 x H/4 x W/4)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = _pool(self.conv2(x), self.pool)
        return self.conv4(self.conv3(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(F_l, [F_h per stack], [heatmaps per stack])`` with ``F_h`` as AU-Net takes them:
        ``bl_i(ll_i)`` for the stacks before the last, ``ll_i`` for the last one."""
        x = self.stem(x)
        previous = x
        feats, heatmaps = [], []
        for i in range(self.num_modules):
            ll = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(previous))
            ll = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(ll)))
            hm = getattr(self, f"l{i}")(ll)
            heatmaps.append(hm)
            if i < self.num_modules - 1:
                ll = getattr(self, f"bl{i}")(ll)
                previous = previous + ll + getattr(self, f"al{i}")(hm)
            feats.append(ll)
        return x, feats, heatmaps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The per-stack landmark heatmaps (as the face-alignment package returns them)."""
        return self.forward_all(x)[2]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """AU-Net's basis ``cat(F_l, F_h1 * M, F_h2 * M)`` (AUNet section IV-A, Fig. 4a):
        ``(B, 256 * (1 + num_modules), H/4, W/4)``, M = the last stack's heatmaps summed."""
        stem, feats, heatmaps = self.forward_all(x)
        mask = heatmaps[-1].sum(dim=1, keepdim=True)
        return torch.cat([stem] + [f * mask for f in feats], dim=1)


# ---------------------------------------------------------------------------------------------
# weights
class FANWeightsError(ValueError):
    """A FAN weight file is missing, unreadable or does not fit the network."""


def _state_from_object(obj, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FANWeightsError(f"{where}: no tensor state dict found (expected a FAN state dict or {{'state_dict': ...}})")
    # the FAN root is the prefix P with P + "conv1.weight" and P + "l0.weight" (a ConvBlock has
    # conv1 but no l0): "" (2dfan2.pth), "module." (face-alignment), "feature.fan." (AU_NET), ...
    roots = sorted(
        (k[: -len("conv1.weight")] for k in obj if k.endswith("conv1.weight") and k[: -len("conv1.weight")] + "l0.weight" in obj),
        key=len,
    )
    if not roots:
        raise FANWeightsError(f"{where}: no FAN tensors (conv1.weight with l0.weight) found; first keys: {', '.join(list(obj)[:5])}")
    p = roots[0]
    return {k[len(p):]: v for k, v in obj.items() if k.startswith(p)}


def read_fan_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a FAN state dict from AU-Net's ``2dfan2.pth``, face-alignment's ``{'state_dict': ...}``
    (``module.`` prefixes), a full AU-Net ``AU_NET`` state dict (``feature.fan.``), a TorchScript
    archive or a ``.safetensors`` file. Never unpickles arbitrary objects."""
    p = Path(path)
    if not p.is_file():
        raise FANWeightsError(f"FAN weight file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _state_from_object(load_file(str(p)), str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        try:  # the face-alignment package (>= 1.0) distributes TorchScript archives
            obj = torch.jit.load(str(p), map_location="cpu").state_dict()
        except Exception:
            raise FANWeightsError(f"{p}: cannot be read as a FAN checkpoint ({exc})") from None
    return _state_from_object(obj, str(p))


def load_fan_weights(fan: FAN, path: str | os.PathLike) -> dict:
    """Load ``path`` (see :func:`read_fan_state_dict`) into ``fan`` strictly; a clear error lists
    missing / unexpected / mis-shaped tensors. Returns a small report."""
    sd = read_fan_state_dict(path)
    own = fan.state_dict()
    stacks = {int(m.group(1)) for k in sd if (m := re.match(r"^m(\d+)\.", k))}
    n_stacks = max(stacks) + 1 if stacks else 0
    if stacks and n_stacks != fan.num_modules:
        raise FANWeightsError(
            f"{path}: a {n_stacks}-stack FAN (2DFAN-{n_stacks}); this network needs {fan.num_modules} "
            f"stacks (2DFAN-{fan.num_modules}, AU-Net's 2dfan2.pth)"
        )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        few = lambda xs: ", ".join(xs[:5]) + (f", ... ({len(xs)})" if len(xs) > 5 else "")  # noqa: E731
        parts = [f"missing {few(missing)}" if missing else "", f"unexpected {few(unexpected)}" if unexpected else "",
                 f"shape {few(shapes)}" if shapes else ""]
        raise FANWeightsError(f"{path}: does not fit FAN({fan.num_modules}): " + "; ".join(x for x in parts if x))
    fan.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)
    log.info("loaded FAN weights from %s (%d tensors, pool=%s)", path, len(own), fan.pool)
    return {"source": str(path), "tensors": len(own)}
