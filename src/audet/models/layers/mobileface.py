"""MobileFaceNet enhanced with MixConv and coordinate attention (the ESCDA backbone, section 3.1.1).

ESCDA (escda.md, section 3.1.1): a convolution for preliminary features, a depthwise convolution and
an *enhanced depth-separable convolution* for shallow features, then three levels of non-residual
(downsampling) and residual enhanced depth-separable convolutions that bring the shallow map to
1/2, 1/4 and 1/8 of its size while widening the channels; the output has ``c = 512`` channels and
side ``h = 7`` for a 112 x 112 input (section 4.1.2). This is the layout of the mixed-feature
MobileFaceNet ("MFN") the authors' group pretrains on MS-Celeb-1M; its module names
(``conv1``, ``conv2_dw``, ``conv_23``, ``conv_3``, ``conv_34``, ``conv_4``, ``conv_45``,
``conv_5``, ``conv_6_sep``) are kept so a published MFN state dict maps by name
(:mod:`audet.models.convert.escda`). At 112 x 112::

    conv1      3x3 s2 conv + BN + PReLU, 64                  -> 64 x 56 x 56
    conv2_dw   3x3 depthwise conv + BN + PReLU               -> 64 x 56 x 56
    conv_23    enhanced block, s2, expand 128, k 3/5/7 (64/32/32)      -> 64 x 28 x 28   (1/2)
    conv_3     9 residual enhanced blocks, expand 128, k 3/5 (96/32)
    conv_34    enhanced block, s2, expand 256, k 3/5/7 (128/64/64)     -> 128 x 14 x 14  (1/4)
    conv_4     16 residual blocks, expand 256, k 3/5 (192/64)
    conv_45    enhanced block, s2, expand 1024, k 3/5/7/9 (4 x 256)    -> 256 x 7 x 7    (1/8)
    conv_5     6 residual blocks, expand 512, k 3/5/7 (172/170/170)
    conv_6_sep 1x1 conv + BN + PReLU                          -> 512 x 7 x 7

Enhanced depth-separable block (:class:`MixDepthwiseBlock`): 1x1 conv + BN + PReLU (expand) ->
MixConv (mixed depthwise kernels on channel groups, Tan & Le) -> coordinate attention (Hou et al.,
timm's :class:`timm.layers.CoordAttn` with ``max(8, C/32)`` bottleneck channels, biases and
hard-swish, as the original) -> 1x1 conv + BN (linear projection) [+ identity when residual].

The MixConv splits channels unevenly (e.g. 64/32/32), which timm's ``MixedConv2d`` (equal splits)
cannot express, hence :class:`MixedDepthwiseConv`. The published MFN defines a BatchNorm + PReLU
after its MixConv but never applies it; ``mixconv_norm=True`` applies one (not the default).
"""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers.coord_attn import CoordAttn
from torch import nn

__all__ = [
    "ConvBlock",
    "LinearBlock",
    "MixedDepthwiseConv",
    "MixDepthwiseBlock",
    "MixFaceNet",
    "MFN_LEVELS",
    "scaled_split",
]


class ConvBlock(nn.Module):
    """Conv2d (no bias) + BatchNorm + PReLU (MobileFaceNet's ``Conv_block``)."""

    def __init__(self, in_c: int, out_c: int, kernel: int | tuple = 1, stride: int = 1, padding: int | tuple = 0,
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """Conv2d (no bias) + BatchNorm, no activation (``Linear_block``; with ``groups = channels`` and
    a kernel the size of the map it is the global depthwise convolution, GDConv)."""

    def __init__(self, in_c: int, out_c: int, kernel: int | tuple = 1, stride: int = 1, padding: int | tuple = 0,
                 groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def scaled_split(split: Sequence[int], total: int) -> tuple[int, ...]:
    """Rescale a channel split to sum to ``total`` (proportional, each part >= 1, the last absorbs rounding)."""
    split = [int(s) for s in split]
    if total < len(split):
        raise ValueError(f"cannot split {total} channels into {len(split)} kernel groups")
    s = sum(split)
    out = [max(1, round(p * total / s)) for p in split[:-1]]
    last = total - sum(out)
    while last < 1:  # take from the largest part
        i = max(range(len(out)), key=out.__getitem__)
        out[i] -= 1
        last += 1
    return tuple(out + [last])


class MixedDepthwiseConv(nn.Module):
    """MixConv: channel groups of sizes ``split`` each get a depthwise conv with its own kernel size
    (``kernels``), padding ``k // 2``, no bias; the outputs are concatenated in order."""

    def __init__(self, channels: int, kernels: Sequence[int], split: Sequence[int], stride: int = 1,
                 norm: bool = False):
        super().__init__()
        kernels, split = tuple(int(k) for k in kernels), tuple(int(s) for s in split)
        if len(kernels) != len(split) or sum(split) != channels:
            raise ValueError(f"MixConv split {split} must have one entry per kernel {kernels} and sum to {channels}")
        self.split = split
        self.mixed_depthwise_conv = nn.ModuleList(
            nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False) for c, k in zip(split, kernels)
        )
        self.bn = nn.BatchNorm2d(channels) if norm else None
        self.prelu = nn.PReLU(channels) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.split) == 1:
            y = self.mixed_depthwise_conv[0](x)
        else:
            parts = torch.split(x, self.split, dim=1)
            y = torch.cat([conv(p) for conv, p in zip(self.mixed_depthwise_conv, parts)], dim=1)
        if self.bn is not None:
            y = self.prelu(self.bn(y))
        return y


class MixDepthwiseBlock(nn.Module):
    """Enhanced depth-separable convolution: expand (1x1) -> MixConv -> coordinate attention -> project."""

    def __init__(self, in_c: int, out_c: int, expand: int, kernels: Sequence[int], split: Sequence[int],
                 stride: int = 1, residual: bool = False, mixconv_norm: bool = False):
        super().__init__()
        if residual and (in_c != out_c or stride != 1):
            raise ValueError(f"a residual block needs in_c == out_c and stride 1; got {in_c}->{out_c}, stride {stride}")
        self.residual = residual
        self.conv = ConvBlock(in_c, expand, 1)
        self.conv_dw = MixedDepthwiseConv(expand, kernels, split, stride, norm=mixconv_norm)
        self.CA = CoordAttn(expand, rd_channels=max(8, expand // 32), bias=True, act_layer=nn.Hardswish)
        self.project = LinearBlock(expand, out_c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.CA(self.conv_dw(self.conv(x))))
        return x + y if self.residual else y


#: The three levels (section 3.1.1): (name of the downsampling block, name of the residual stack,
#: out channels, down expand, down kernels, down split, residual blocks, residual expand,
#: residual kernels, residual split).
MFN_LEVELS = (
    ("conv_23", "conv_3", 64, 128, (3, 5, 7), (64, 32, 32), 9, 128, (3, 5), (96, 32)),
    ("conv_34", "conv_4", 128, 256, (3, 5, 7), (128, 64, 64), 16, 256, (3, 5), (192, 64)),
    ("conv_45", "conv_5", 256, 1024, (3, 5, 7, 9), (256, 256, 256, 256), 6, 512, (3, 5, 7), (172, 170, 170)),
)


class MixFaceNet(nn.Module):
    """The ESCDA backbone; ``forward(x)`` -> ``(B, out_channels, H/16, W/16)`` (512 x 7 x 7 at 112).

    Args:
        width: multiplies every channel count (1.0 = the paper's; e.g. 0.125 for quick tests).
        depths: residual blocks per level (default ``(9, 16, 6)``).
        out_channels: channels of ``conv_6_sep`` (``c`` = 512; scaled by ``width`` when None).
        mixconv_norm: BatchNorm + PReLU after each MixConv (the published MFN defines but skips it).
    """

    def __init__(self, width: float = 1.0, depths: Sequence[int] | None = None, out_channels: int | None = None,
                 in_chans: int = 3, mixconv_norm: bool = False):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        depths = tuple(int(d) for d in (depths if depths is not None else [lv[6] for lv in MFN_LEVELS]))
        if len(depths) != 3 or min(depths) < 0:
            raise ValueError(f"depths must be 3 non-negative block counts, got {depths}")

        def ch(c: int) -> int:
            return max(8, int(round(c * width)))

        stem = ch(64)
        self.conv1 = ConvBlock(in_chans, stem, 3, 2, 1)
        self.conv2_dw = ConvBlock(stem, stem, 3, 1, 1, groups=stem)
        c = stem
        for (down, res, out, dexp, dk, dsplit, _n, rexp, rk, rsplit), n in zip(MFN_LEVELS, depths):
            o, de, re_ = ch(out), ch(dexp), ch(rexp)
            setattr(self, down, MixDepthwiseBlock(c, o, de, dk, scaled_split(dsplit, de), 2, False, mixconv_norm))
            setattr(self, res, nn.Sequential(*[
                MixDepthwiseBlock(o, o, re_, rk, scaled_split(rsplit, re_), 1, True, mixconv_norm) for _ in range(n)
            ]))
            c = o
        self.out_channels = int(out_channels) if out_channels is not None else ch(512)
        self.conv_6_sep = ConvBlock(c, self.out_channels, 1)
        self.stride = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        for down, res, *_ in MFN_LEVELS:
            x = getattr(self, res)(getattr(self, down)(x))
        return self.conv_6_sep(x)
