"""Per-AU Next Transformer Blocks (ESCDA's LSC branches) evaluated as ONE stacked computation.

ESCDA's LSC runs ``A`` identically shaped branches on the SAME backbone map (one per AU: an
:class:`~audet.models.layers.ntb.NextTransformerBlock` with that AU's mask ``M_i`` of Eq. 3, then
GDConv and ``Linear(c, 1)``). As in :mod:`audet.models.layers.stacked` (AC2D), the branch modules
stay what they are (same parameters, same state_dict names); at call time their weights are
concatenated (``torch.cat`` / ``torch.stack``, so gradients reach the original parameters) and
every layer runs once for all branches. Maps are laid out ``(B, A*C, H, W)`` with branch-major
channels (branch ``i`` owns channels ``[i*C, (i+1)*C)``); tokens ``(A, B, N, C)``:

- the first 1x1 conv of every NTB (PatchEmbed) reads the shared map: one dense conv with ``A*C_s``
  outputs (when PatchEmbed is the identity, the shared map is repeated ``A`` times);
- every later per-branch conv: one grouped conv with ``groups = A * groups`` (1x1 projections
  ``groups = A``; MHCA's 3x3 group conv ``A * C_c / 32``; GDConv, depth-wise, ``A * C``);
- BatchNorm over the ``A*C`` channels is per channel, hence exact: in eval it uses the
  concatenated running statistics; in training it normalises by the batch statistics and updates
  the concatenated running buffers with ``F.batch_norm``, then copies them back into each
  branch's own buffers (and increments each ``num_batches_tracked``), exactly as the loop would;
- E-MHSA's q, k, v, proj ``Linear``: ``torch.baddbmm`` over the branch dimension;
- attention (ESCDA Eq. 4-6): the branch dimension folded into the batch, each branch with its own
  key mask ``M_i``: the fast path scales V by ``M_i`` and calls ``scaled_dot_product_attention``
  (``(A' (x) M) V = A' (M (x) V)``, as :func:`~audet.models.layers.ntb.constrained_self_attention`);
  the explicit path materialises ``A'_i`` (Eq. 4) and ``A_i = A'_i (x) M_i`` (Eq. 5);
- stochastic depth: one draw per (branch, sample), as the loop's per-branch ``DropPath`` makes.

The outputs equal the per-branch loop up to float rounding (tests: atol 1e-5 in fp32, gradients
too, BatchNorm running statistics to 1e-6). Next-ViT's E-MHSA spatial reduction is not part of
:class:`~audet.models.layers.ntb.EMHSA` (``sr_ratio = 1``), so nothing is resampled here either.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from audet.models.layers.ntb import NextTransformerBlock, attention_weights
from audet.models.layers.stacked import stacked_linear

__all__ = ["stacked_batch_norm", "stacked_conv", "stacked_drop_path", "stacked_ntb", "stacked_linear_block",
           "maps_to_tokens", "tokens_to_maps"]


def maps_to_tokens(x: torch.Tensor, A: int) -> torch.Tensor:
    """``(B, A*C, H, W)`` -> ``(A, B, H*W, C)``."""
    B, AC, H, W = x.shape
    return x.reshape(B, A, AC // A, H * W).permute(1, 0, 3, 2)


def tokens_to_maps(t: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(A, B, H*W, C)`` -> ``(B, A*C, H, W)``."""
    A, B, N, C = t.shape
    return t.permute(1, 0, 3, 2).reshape(B, A * C, H, W)


def stacked_conv(x: torch.Tensor, convs: Sequence[nn.Conv2d], shared: bool = False) -> torch.Tensor:
    """Every branch's ``Conv2d``: ``shared`` input ``(B, Cin, H, W)`` -> one conv with ``A*Cout``
    outputs (needs ``groups == 1``); else per-branch input ``(B, A*Cin, H, W)`` -> one grouped conv
    with ``groups = A * conv.groups``. Output ``(B, A*Cout, H', W')``."""
    c = convs[0]
    w = torch.cat([m.weight for m in convs])
    b = torch.cat([m.bias for m in convs]) if c.bias is not None else None
    if c.padding_mode != "zeros":
        raise ValueError("stacked evaluation supports zero-padded convolutions only")
    if shared:
        if c.groups != 1:
            raise ValueError("a convolution of the shared input must be dense (groups=1) to be stacked")
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, 1)
    return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, len(convs) * c.groups)


def stacked_batch_norm(x: torch.Tensor, norms: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """Every branch's ``BatchNorm2d`` on ``x`` ``(B, A*C, H, W)`` (per channel, so exact).

    Follows ``torch.nn.modules.batchnorm._BatchNorm.forward``: in training (with running
    statistics) each ``num_batches_tracked`` is incremented and the concatenated running buffers,
    updated by ``F.batch_norm``, are copied back into each branch's own buffers.
    """
    n0 = norms[0]
    track = n0.track_running_stats and n0.running_mean is not None
    factor = 0.0 if n0.momentum is None else n0.momentum
    if n0.training and track:
        counts = {int(n.num_batches_tracked) for n in norms}
        if n0.momentum is None and len(counts) > 1:
            raise ValueError("stacked BatchNorm with momentum=None needs equal num_batches_tracked in every branch")
        for n in norms:
            n.num_batches_tracked.add_(1)
        if n0.momentum is None:
            factor = 1.0 / float(norms[0].num_batches_tracked)
    use_batch_stats = n0.training or not track
    w = torch.cat([n.weight for n in norms]) if n0.affine else None
    b = torch.cat([n.bias for n in norms]) if n0.affine else None
    if not track:
        return F.batch_norm(x, None, None, w, b, True, factor, n0.eps)
    rm = torch.cat([n.running_mean for n in norms])
    rv = torch.cat([n.running_var for n in norms])
    out = F.batch_norm(x, rm, rv, w, b, use_batch_stats, factor, n0.eps)
    if use_batch_stats:  # write the updated running statistics back, branch by branch
        with torch.no_grad():
            for n, m, v in zip(norms, rm.split(n0.num_features), rv.split(n0.num_features)):
                n.running_mean.copy_(m)
                n.running_var.copy_(v)
    return out


def stacked_drop_path(x: torch.Tensor, A: int, paths: Sequence[nn.Module]) -> torch.Tensor:
    """timm's ``DropPath`` of every branch on ``x`` ``(B, A*C, ...)``: one draw per (branch, sample)."""
    p = paths[0]
    if not isinstance(p, DropPath) or p.drop_prob == 0.0 or not p.training:
        return x
    keep = 1.0 - p.drop_prob
    shape = (x.shape[0], A) + (1,) * (x.ndim - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    if keep > 0.0 and p.scale_by_keep:
        mask.div_(keep)
    return (x.reshape(x.shape[0], A, -1, *x.shape[2:]) * mask).reshape(x.shape)


def _stacked_embed(x: torch.Tensor, embeds: Sequence[nn.Module], shared: bool) -> torch.Tensor:
    """Next-ViT's PatchEmbed / projection (:class:`~audet.models.layers.ntb._Embed`, 1x1 conv + BN)."""
    if isinstance(embeds[0].conv, nn.Identity):
        return x.repeat(1, len(embeds), 1, 1) if shared else x
    return stacked_batch_norm(stacked_conv(x, [e.conv for e in embeds], shared), [e.norm for e in embeds])


def stacked_linear_block(x: torch.Tensor, blocks: Sequence[nn.Module]) -> torch.Tensor:
    """Every branch's :class:`~audet.models.layers.mobileface.LinearBlock` (conv + BN; GDConv) on
    per-branch maps ``(B, A*C, H, W)``."""
    return stacked_batch_norm(stacked_conv(x, [b.conv for b in blocks]), [b.bn for b in blocks])


def _stacked_emhsa(t: torch.Tensor, blocks: Sequence[NextTransformerBlock], masks: torch.Tensor | None,
                   explicit: bool):
    """E-MHSA with the constraint (ESCDA Eq. 4-6) of every branch on tokens ``t`` ``(A, B, N, C)``;
    ``masks`` ``(A, N)`` (M_i over the keys) or None. Returns ``(A, B, N, C)`` and, when
    ``explicit``, ``(A', A)`` each ``(A, B, heads, N, N)``."""
    attns = [b.e_mhsa for b in blocks]
    A, B, N, C = t.shape
    h, d = attns[0].num_heads, attns[0].head_dim
    q, k, v = (stacked_linear(t, [getattr(a, n) for a in attns]).reshape(A, B, N, h, d).transpose(2, 3)
               for n in ("q", "k", "v"))  # (A, B, h, N, d)
    info = None
    if not explicit:
        if masks is not None:
            v = v * masks[:, None, None, :, None]  # M_i (x) V_i: the mask scales the keys' values
        out = F.scaled_dot_product_attention(q.reshape(A * B, h, N, d), k.reshape(A * B, h, N, d),
                                             v.reshape(A * B, h, N, d)).reshape(A, B, h, N, d)
    else:
        a0 = attention_weights(q, k)  # Eq. 4, (A, B, h, N, N)
        a = a0 * masks[:, None, None, None, :] if masks is not None else a0  # Eq. 5
        out = a @ v  # Eq. 6
        info = (a0, a)
    out = out.transpose(2, 3).reshape(A, B, N, C)
    return stacked_linear(out, [a.proj for a in attns]), info


def stacked_ntb(x: torch.Tensor, blocks: Sequence[NextTransformerBlock], masks: torch.Tensor | None = None,
                return_attention: bool = False):
    """Every branch's :class:`~audet.models.layers.ntb.NextTransformerBlock` on the SHARED map ``x``
    ``(B, Cin, H, W)``, branch ``i`` with key mask ``masks[i]`` (``masks`` ``(A, H*W)``, Eq. 3) or
    none (``masks=None``: vanilla NTB).

    Returns the maps ``(B, A*C, H, W)`` (branch-major channels) and, with ``return_attention``,
    ``(A', A)`` each ``(A, B, heads, HW, HW)``. The steps are those of ``NextTransformerBlock.forward``.
    """
    A = len(blocks)
    b0 = blocks[0]
    if masks is not None and masks.shape[0] != A:
        raise ValueError(f"{masks.shape[0]} masks for {A} branches")
    x = _stacked_embed(x, [b.patch_embed for b in blocks], shared=True)  # (B, A*Cs, H, W)
    B, _, H, W = x.shape
    t = maps_to_tokens(stacked_batch_norm(x, [b.norm1 for b in blocks]), A)  # (A, B, N, Cs)
    a, attn = _stacked_emhsa(t, blocks, masks, return_attention)
    x = x + stacked_drop_path(tokens_to_maps(a, H, W), A, [b.mhsa_drop_path for b in blocks])
    y = _stacked_embed(x, [b.projection for b in blocks], shared=False)  # (B, A*Cc, H, W)
    mh = [b.mhca for b in blocks]
    z = stacked_batch_norm(stacked_conv(y, [m.group_conv3x3 for m in mh]), [m.norm for m in mh])
    z = stacked_conv(F.relu(z), [m.projection for m in mh])
    y = y + stacked_drop_path(z, A, [b.mhca_drop_path for b in blocks])
    x = torch.cat([x.reshape(B, A, b0.mhsa_dim, H, W), y.reshape(B, A, b0.mhca_dim, H, W)], dim=2)
    x = x.reshape(B, -1, H, W)  # concat(x, y) within each branch
    mlps = [b.mlp for b in blocks]
    if not (isinstance(mlps[0].norm, nn.Identity) and isinstance(mlps[0].act, nn.ReLU)):
        raise ValueError("stacked NTB expects Next-ViT's MLP: 1x1 conv, ReLU, 1x1 conv (no norm)")
    z = F.relu(stacked_conv(stacked_batch_norm(x, [b.norm2 for b in blocks]), [m.fc1 for m in mlps]))
    z = F.dropout(z, mlps[0].drop.p, mlps[0].drop.training)
    z = stacked_conv(z, [m.fc2 for m in mlps])
    x = x + stacked_drop_path(z, A, [b.mlp_drop_path for b in blocks])
    return (x, attn) if return_attention else x
