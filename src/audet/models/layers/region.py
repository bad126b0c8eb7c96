"""JAA-Net's hierarchical multi-scale region layer (R^hm), used twice by AAR (Fig. 3(a)).

Structure (facts from ``shared/reference/original-checkpoints/jaanet_region_layers.tsv``; parameter
names and shapes are those of the authors' ``HierarchicalMultiScaleRegionLayer`` /
``HMRegionLearning``, so their ``region_learning_<epoch>.pth`` loads with a key prefix at most)::

    x  = conv(input)                           Conv2d(C_in, C, 3, 1, 1), no BN/ReLU after it
    b1 = local_conv_branch1(x)                 8x8 patch grid:  per patch BN(C)   -> ReLU -> Conv3x3(C   -> C/2)
    b2 = local_conv_branch2(b1)                4x4 patch grid:  per patch BN(C/2) -> ReLU -> Conv3x3(C/2 -> C/4)
    b3 = local_conv_branch3(b2)                2x2 patch grid:  per patch BN(C/4) -> ReLU -> Conv3x3(C/4 -> C/4)
    out = ReLU(bn(x + cat(b1, b2, b3)))

Each patch has its OWN BatchNorm and convolution (``bns.<p>``, ``convs.<p>``, p = row * cols + col,
row-major), zero-padded at the patch border: no information crosses patch borders inside a branch.
The branches are hierarchical (b2 reads b1, b3 reads b2). ``RegionLearning`` stacks
``[R^hm(3 -> 4u), MaxPool2d(2), R^hm(4u -> 8u), MaxPool2d(2)]`` as ``multiscale_feat`` (u = 8:
3 x 176 x 176 -> 64 x 44 x 44; 1,615,392 parameters, 0.562 GMAC at 176).

Computation: the per-patch BatchNorms and convolutions are evaluated together (patches moved into
the channel axis, one grouped convolution with ``groups = patches``, one batch norm over
``patches x channels``), which is exactly the per-patch computation of the reference
(:meth:`LocalConvReLU.forward_loop`, kept for tests) but far fewer kernel launches. In training
mode the batch statistics are per patch and channel and every patch's running statistics are
updated as ``nn.BatchNorm2d`` would.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocalConvReLU", "HierarchicalRegionLayer", "RegionLearning", "JAANET_GRIDS"]

#: the patch grids of the three hierarchical branches in JAA-Net and AAR
JAANET_GRIDS = ((8, 8), (4, 4), (2, 2))


def _to_patches(x: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, gh*gw*C, H/gh, W/gw)``; channel ``p*C + c`` is channel c of patch p."""
    N, C, H, W = x.shape
    ph, pw = H // gh, W // gw
    return x.reshape(N, C, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(N, gh * gw * C, ph, pw)


def _from_patches(y: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """Inverse of :func:`_to_patches`: ``(N, gh*gw*C, ph, pw)`` -> ``(N, C, gh*ph, gw*pw)``."""
    N, PC, ph, pw = y.shape
    C = PC // (gh * gw)
    return y.reshape(N, gh, gw, C, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(N, C, gh * ph, gw * pw)


class LocalConvReLU(nn.Module):
    """A ``rows x cols`` grid of independent BN -> ReLU -> Conv3x3 units, one per patch.

    JAA-Net's ``LocalConv2dReLU`` (ReLU activation). The input's height and width must be
    divisible by ``rows`` and ``cols``.
    """

    def __init__(self, rows: int, cols: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1, bias: bool = True):
        super().__init__()
        self.rows, self.cols = int(rows), int(cols)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.padding = int(padding)
        n = self.rows * self.cols
        self.bns = nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in range(n))
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding, bias=bias) for _ in range(n)
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"LocalConvReLU expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % self.rows or W % self.cols:
            raise ValueError(f"region layer: a {H}x{W} map does not split into a {self.rows}x{self.cols} patch grid; "
                             f"use an input side divisible by 16 (e.g. crop 176)")

    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch BatchNorm2d of the patch-stacked tensor (identical statistics and updates)."""
        bns = self.bns
        weight = torch.cat([bn.weight for bn in bns])
        bias = torch.cat([bn.bias for bn in bns])
        bn0 = bns[0]
        if bn0.training:
            rm = torch.cat([bn.running_mean for bn in bns])
            rv = torch.cat([bn.running_var for bn in bns])
            y = F.batch_norm(x, rm, rv, weight, bias, True, bn0.momentum, bn0.eps)
            with torch.no_grad():
                C = self.in_channels
                for i, bn in enumerate(bns):
                    bn.running_mean.copy_(rm[i * C:(i + 1) * C])
                    bn.running_var.copy_(rv[i * C:(i + 1) * C])
                    bn.num_batches_tracked.add_(1)
            return y
        rm = torch.cat([bn.running_mean for bn in bns])
        rv = torch.cat([bn.running_var for bn in bns])
        return F.batch_norm(x, rm, rv, weight, bias, False, 0.0, bn0.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.bns[0].momentum is None:  # cumulative averaging: defer to the literal loop
            return self.forward_loop(x)
        p = _to_patches(x, self.rows, self.cols)
        p = F.relu(self._batch_norm(p))
        weight = torch.cat([c.weight for c in self.convs])
        bias = torch.cat([c.bias for c in self.convs]) if self.convs[0].bias is not None else None
        y = F.conv2d(p, weight, bias, 1, self.padding, 1, len(self.convs))
        return _from_patches(y, self.rows, self.cols)

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        """The literal per-patch loop (reference semantics of the authors' layer; slow)."""
        self._check(x)
        H, W = x.shape[-2:]
        ph, pw = H // self.rows, W // self.cols
        rows = []
        for r in range(self.rows):
            cols = []
            for c in range(self.cols):
                k = r * self.cols + c
                patch = x[:, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw].contiguous()
                cols.append(self.convs[k](F.relu(self.bns[k](patch))))
            rows.append(torch.cat(cols, dim=3))
        return torch.cat(rows, dim=2)


class HierarchicalRegionLayer(nn.Module):
    """R^hm(C_in -> C): conv, three hierarchical patch branches (C/2, C/4, C/4), residual, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, grids: Sequence[Sequence[int]] = JAANET_GRIDS):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"region layer: out_channels must be divisible by 4, got {out_channels}")
        (r1, c1), (r2, c2), (r3, c3) = grids
        C = int(out_channels)
        self.conv = nn.Conv2d(in_channels, C, 3, 1, 1, bias=True)
        self.local_conv_branch1 = LocalConvReLU(r1, c1, C, C // 2)
        self.local_conv_branch2 = LocalConvReLU(r2, c2, C // 2, C // 4)
        self.local_conv_branch3 = LocalConvReLU(r3, c3, C // 4, C // 4)
        self.bn = nn.BatchNorm2d(C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b1 = self.local_conv_branch1(x)
        b2 = self.local_conv_branch2(b1)
        b3 = self.local_conv_branch3(b2)
        return F.relu(self.bn(x + torch.cat((b1, b2, b3), dim=1)))


class RegionLearning(nn.Module):
    """Two R^hm layers, each followed by 2x2 max pooling (JAA-Net ``HMRegionLearning``, AAR Fig. 2).

    ``(N, in_channels, l, l)`` -> ``(N, 8 * unit_dim, l/4, l/4)``; ``l`` must be divisible by 16.
    """

    def __init__(self, in_channels: int = 3, unit_dim: int = 8, grids: Sequence[Sequence[int]] = JAANET_GRIDS):
        super().__init__()
        self.out_channels = 8 * int(unit_dim)
        self.multiscale_feat = nn.Sequential(
            HierarchicalRegionLayer(in_channels, 4 * unit_dim, grids),
            nn.MaxPool2d(2, 2),
            HierarchicalRegionLayer(4 * unit_dim, 8 * unit_dim, grids),
            nn.MaxPool2d(2, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"RegionLearning expects (N, C, H, W) with H and W divisible by 16, got {tuple(x.shape)}")
        return self.multiscale_feat(x)
