"""Optimisers and learning-rate schedules (the AC2D recipe, paper section 4.1.2, by default).

- ``optim.name``: ``adamw`` (default; ``betas``, ``eps``), ``adam`` (same arguments; weight decay
  as L2 in the gradient, as torch.optim.Adam) or ``sgd`` (``momentum``, ``nesterov``); only
  parameters with ``requires_grad`` (not frozen, trainable in the stage) are optimised;
- ``lr = optim.lr * global_batch / 256`` where the global batch is the per-process batch
  times the number of processes (and gradient-accumulation steps);
- weight decay 0.05 on weights only: no decay on biases, on every parameter of a normalisation
  layer, on 1-d parameters, on position embeddings (names containing ``pos_embed``/``position``/
  ``cls_token``) and on names the model lists in ``no_weight_decay()`` (the timm convention);
- a per-step schedule: linear warm-up for ``warmup_epochs`` epochs, then cosine decay to
  ``min_lr`` at the last step. It is a :class:`torch.optim.lr_scheduler.LambdaLR` driven by
  :class:`WarmupCosine` (a picklable callable, so Lightning's checkpoint restores it). Two warm-up
  formulas (``optim.warmup_formula``): ``linear`` (default, ``(s + 1) / W``: the first step already
  moves) and ``linspace`` (``s / (W - 1)``: ``numpy.linspace(0, lr, W)``, the first step has lr 0;
  the per-iteration cosine schedulers of the DeiT/ConvNeXt/ResTv2 family do this).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import nn

from audet.engine.schema import DECAY_SCOPES, OPTIMIZERS, SCHEDULES, WARMUP_FORMULAS, Optim, section_from_dict

__all__ = ["param_groups", "scaled_lr", "WarmupCosine", "build_optimizer", "OPTIMIZERS", "SCHEDULES", "WARMUP_FORMULAS"]

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_keywords: Iterable[str] = ("pos_embed", "position", "cls_token"),
    scope: str = "weights",
) -> list[dict]:
    """Two AdamW groups: ``decay`` (weight matrices / conv kernels) and ``no_decay`` (the rest).

    ``scope="all"`` (``optim.weight_decay_scope``) decays every trainable parameter, as a plain
    ``torch.optim.SGD(model.parameters(), weight_decay=...)`` does. Each group carries ``names``
    (the parameter names) so tests and logs can inspect them.
    """
    if scope not in DECAY_SCOPES:
        raise ValueError(f"optim.weight_decay_scope={scope!r}; choose one of {', '.join(DECAY_SCOPES)}")
    keywords = tuple(no_decay_keywords)
    nwd = getattr(model, "no_weight_decay", None)  # AUModel declares it; a plain nn.Module may not
    skip = {str(n) for n in nwd()} if callable(nwd) else set()
    norm_params: set[int] = set()
    for mod in model.modules():
        if _is_norm(mod):
            norm_params.update(id(p) for p in mod.parameters(recurse=False))
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        leaf = name.rsplit(".", 1)[-1]
        if scope == "weights" and (
            p.ndim <= 1
            or leaf == "bias"
            or id(p) in norm_params
            or name in skip
            or leaf in skip
            or any(k in name for k in keywords)
        ):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "names": decay_names, "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names, "group": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def scaled_lr(base_lr: float, batch_size: int, world_size: int = 1, accumulate: int = 1, scale: bool = True) -> float:
    """``base_lr * batch_size * world_size * accumulate / 256`` (the linear scaling rule)."""
    if not scale:
        return float(base_lr)
    return float(base_lr) * int(batch_size) * int(world_size) * int(accumulate) / 256.0


class WarmupCosine:
    """LR multiplier at optimiser step ``s`` (0-based; the lr used BY step ``s``).

    With ``W`` warm-up steps and ``T`` total steps:

    - ``s < W``: ``f0 + (1 - f0) * (s + 1) / W`` (``warmup_formula="linear"``; reaches 1 at the
      last warm-up step), or ``f0 + (1 - f0) * s / (W - 1)`` (``"linspace"``: the values of
      ``numpy.linspace(f0 * lr, lr, W)``; step 0 has ``f0``, 0 by default; with ``W = 1`` it is 1);
    - ``s >= W``: ``m + (1 - m) * 0.5 * (1 + cos(pi * (s - W) / max(1, T - W)))`` with
      ``m = min_lr / lr``; ``s = W`` gives 1, ``s = T`` would give ``m``.

    ``schedule="constant"`` keeps 1 after the warm-up; ``schedule="step"`` multiplies by ``gamma``
    every ``step_size`` steps after the warm-up: ``gamma ** floor((s - W) / step_size)`` (e.g. AAR's
    "x 0.3 every 2 epochs").
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, start_factor: float = 0.0,
                 schedule: str = "cosine", step_size: int = 1, gamma: float = 0.1, warmup_formula: str = "linear"):
        if schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if warmup_formula not in WARMUP_FORMULAS:
            raise ValueError(f"optim.warmup_formula={warmup_formula!r}; choose one of {', '.join(WARMUP_FORMULAS)}")
        self.warmup_formula = warmup_formula
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)
        self.start_factor = float(start_factor)
        self.schedule = schedule
        self.step_size = max(1, int(step_size))
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        W, T = self.warmup_steps, self.total_steps
        if step < W:
            f0 = self.start_factor
            if getattr(self, "warmup_formula", "linear") == "linspace":  # getattr: schedulers pickled before it
                return f0 + (1.0 - f0) * (step / (W - 1) if W > 1 else 1.0)
            return f0 + (1.0 - f0) * (step + 1) / W
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "step":
            return self.gamma ** ((step - W) // self.step_size)
        progress = min(1.0, (step - W) / max(1, T - W))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module,
    optim_cfg: Optim | Mapping,
    *,
    batch_size: int,
    world_size: int,
    accumulate: int,
    steps_per_epoch: float,
    max_epochs: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``optim.name`` over :func:`param_groups` with the scaled lr, and the per-step warm-up +
    cosine (or constant, or step) schedule. ``optim_cfg``: the :class:`~audet.engine.schema.Optim`
    section (a mapping is checked and completed with the defaults)."""
    o = optim_cfg if isinstance(optim_cfg, Optim) else section_from_dict(Optim, optim_cfg, "optim")
    lr = scaled_lr(o.lr, batch_size, world_size, accumulate, o.scale_lr)
    groups = param_groups(model, o.weight_decay, o.no_decay_keywords or (), o.weight_decay_scope)
    if not groups:
        raise ValueError("no trainable parameter: every parameter is frozen (check the stage's trainable/frozen "
                         "patterns, or use collect_only: true for a stage without training)")
    wd = float(o.weight_decay)
    if o.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
        opt = cls(groups, lr=lr, betas=tuple(o.betas), eps=float(o.eps), weight_decay=wd)
    else:  # sgd (the schema allows no other name)
        momentum = float(o.momentum)
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(o.nesterov) and momentum > 0,
                              weight_decay=wd)
    total = max(1, int(round(steps_per_epoch * max_epochs)))
    warmup = int(round(float(o.warmup_epochs) * steps_per_epoch))
    min_ratio = float(o.min_lr) / lr if lr > 0 else 0.0
    step_size = int(round(float(o.step_epochs) * steps_per_epoch))
    fn = WarmupCosine(warmup, total, min_ratio, float(o.warmup_start_factor), o.schedule, step_size,
                      float(o.step_gamma), o.warmup_formula)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    return opt, sched
