"""Model complexity: parameters and FLOPs, counted the same way for every model.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add) on
one forward pass in eval mode under ``torch.no_grad()`` and
``sdpa_kernel(SDPBackend.MATH)``: on CPU the fused ``scaled_dot_product_attention`` kernel has no
FLOP formula and would count as 0, the MATH backend decomposes it into counted matmuls. Only
matmul/convolution-type ops are counted (``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``convolution``,
attention kernels); element-wise ops, norms and softmax are not. ``MACs = FLOPs / 2`` is what
fvcore/thop and most papers print as "FLOPs" (the AC2D paper's 9.6G; the authors' own model
counted this way gives 8.95 GFLOPs = 4.48 GMACs).

The counted pass is ``model.forward_logits`` (the inference/export path) inside the model's
``flop_count_context()`` (a context manager declared on :class:`audet.models.base.AUModel`; AC2D:
the inference path with the causal intervention, as the authors' figure). An ensemble counts as
one model (the sum over its members).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "count_flops", "count_training_flops", "model_input_shape", "complexity_report",
           "METHOD"]

METHOD = (
    "torch.utils.flop_counter.FlopCounterMode, eval mode, no_grad, sdpa_kernel(SDPBackend.MATH); "
    "2 FLOPs per multiply-add, MACs = FLOPs/2; matmul and convolution ops only"
)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """``sum(p.numel())`` over the parameters (buffers are not counted); shared tensors once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_input_shape(model: nn.Module, input_size: int | Sequence[int] | None = None, batch: int = 1) -> tuple[int, ...]:
    """Input shape from the model's ``preprocess`` (crop size, clip length) or ``input_size``.

    ``input_size``: an int (square side), ``(H, W)``, or a full shape (returned as is).
    """
    pre = getattr(model, "preprocess", {}) or {}
    if input_size is None:
        input_size = pre.get("crop_size", 224)
    if isinstance(input_size, int):
        hw = (input_size, input_size)
    else:
        input_size = tuple(int(s) for s in input_size)
        if len(input_size) > 2:
            return input_size
        hw = input_size
    chans = int(getattr(model, "config", {}).get("in_chans", 3) or 3)
    if pre.get("clip"):
        from audet.clip import clip_offsets

        return (batch, len(clip_offsets(pre["clip"])[0]), chans, *hw)
    return (batch, chans, *hw)


def _random_inputs(model: nn.Module, input_size, batch: int) -> torch.Tensor:
    """A random input of :func:`model_input_shape` on the model's device."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    return torch.randn(model_input_shape(model, input_size, batch), device=device)


def count_flops(
    model: nn.Module,
    input_size: int | Sequence[int] | None = None,
    batch: int = 1,
    *,
    inputs: torch.Tensor | None = None,
    **forward_kwargs,
) -> dict:
    """FLOPs of one forward pass.

    Returns ``{"flops": int, "macs": float, "gflops", "gmacs", "by_op": {op: flops},
    "input_shape": [...], "method": METHOD}``. The model's train/eval mode is restored.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    if inputs is None:
        inputs = _random_inputs(model, input_size, batch)
    was_training = model.training
    model.eval()
    from audet.models.base import AUModel

    is_au = isinstance(model, AUModel)
    ctx = model.flop_count_context() if is_au else contextlib.nullcontext()
    run = model.forward_logits if is_au and not forward_kwargs else model
    counter = FlopCounterMode(display=False)
    try:
        with ctx, torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            run(inputs, **forward_kwargs)
    finally:
        model.train(was_training)
    total = int(counter.get_total_flops())
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {
        "flops": total,
        "macs": total / 2,
        "gflops": total / 1e9,
        "gmacs": total / 2e9,
        "by_op": by_op,
        "input_shape": list(inputs.shape),
        "method": METHOD,
    }


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.convolution_backward``: the input gradient and the weight gradient (those
    asked for in ``output_mask``) each cost the forward's ``2 x outputs x (C_in / groups) x k x k``
    (for a transposed convolution the forward's input plays the output's part)."""
    import math

    fwd = 2 * math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_training_flops(model: nn.Module, input_size: int | Sequence[int] | None = None, batch: int = 1,
                         loss_fn=None, *, inputs: torch.Tensor | None = None) -> int:
    """FLOPs of one training forward + backward (train mode), counted by ``FlopCounterMode``.

    Unlike "3 x forward", this counts what autograd really runs: frozen parts (no
    ``requires_grad``) before the first trainable layer get no backward, and the first layer's
    input gradient is not formed. ``loss_fn(output) -> scalar`` (default: the sum of the logits,
    ``output.logits`` for an :class:`~audet.models.base.AUModel`). The parameters' ``.grad`` are
    left as the backward wrote them; the model's train/eval mode is restored.

    torch's own formula for ``convolution_backward`` (2.14) ignores ``groups`` and counts a
    depth-wise convolution's backward as a dense one (C times too much for C channels); here each
    gradient of a convolution costs what its forward costs, groups included.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    if inputs is None:
        inputs = _random_inputs(model, input_size, batch)
    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})
    try:
        with sdpa_kernel(SDPBackend.MATH), counter:
            out = model(inputs)
            loss = loss_fn(out) if loss_fn is not None else getattr(out, "logits", out).float().sum()
            loss.backward()
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def complexity_report(model: nn.Module, input_size=None, batch: int = 1) -> dict:
    """Parameters (all, trainable) and FLOPs/MACs of ``model`` in one dict."""
    fl = count_flops(model, input_size, batch)
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        "num_aus": getattr(model, "num_aus", None),
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        **fl,
    }
