"""Ensembles: several AU models evaluated, counted and exported as ONE model.

:class:`Ensemble` holds ``members`` (an ``nn.ModuleList`` of :class:`~audet.models.base.AUModel`)
and combines their per-AU probabilities:

- ``combine="mean"``: ``p = mean_m sigmoid(z_m)``;
- ``combine="vote"``: ``p = (number of members with sigmoid(z_m) >= 0.5) / M`` (a majority vote at
  the 0.5 threshold; ties count as positive, ``p = 0.5``).

``forward_logits`` returns ``logit(clamp(p, eps, 1 - eps))``, so evaluation (F1 at p >= 0.5),
complexity counting (the sum over members) and ONNX export treat an ensemble as one model.

Members come from checkpoints (:meth:`Ensemble.from_checkpoints`: every member keeps its weights,
DataInfo and preprocessing; the AU lists must agree) or are built from registered names and
trained together (the registered ``ensemble`` factory: ``model.name: ensemble``,
``model.args.members: [{model: resnet_tiny, args: {width: 4}}, ...]``): the loss is the sum of
the members' terms, named ``m<i>/<term>``; every hook is forwarded to the members. A checkpoint
of an ensemble records each member's name and arguments, so :func:`load_checkpoint` rebuilds it.
Registered method variants that are ensembles (e.g. ESCDA) are factories returning an Ensemble.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from torch import nn

from audet.models.base import AUModel, DataInfo, LossContext, ModelOutput, PretrainedPart
from audet.models.registry import create_model, register_model
from audet.utils.io import to_jsonable

__all__ = ["Ensemble", "COMBINE", "ensemble"]

COMBINE = ("mean", "vote")


class Ensemble(AUModel):
    """``members`` combined by ``combine`` (``"mean"`` of probabilities or majority ``"vote"``)."""

    def __init__(self, members: Sequence[AUModel], combine: str = "mean", *, eps: float = 1e-6,
                 data: DataInfo | None = None):
        members = list(members)
        if not members:
            raise ValueError("an Ensemble needs at least one member")
        if combine not in COMBINE:
            raise ValueError(f"combine={combine!r}; choose one of {', '.join(COMBINE)}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            if tuple(m.aus) != tuple(first.aus):
                raise ValueError(f"ensemble member {i} predicts AUs {list(m.aus)}, member 0 {list(first.aus)}; "
                                 "every member must predict the same AUs in the same order")
            for key in ("crop_size", "clip", "mean", "std"):
                if m.preprocess.get(key) != first.preprocess.get(key):
                    raise ValueError(f"ensemble member {i} has preprocess {key}={m.preprocess.get(key)!r} but member 0 "
                                     f"{first.preprocess.get(key)!r}; members must take the same input")
        super().__init__(first.aus, dict(first.preprocess), data if data is not None else first.data_info)
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.eps = float(eps)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoints(cls, paths: Sequence, combine: str = "mean", map_location="cpu") -> "Ensemble":
        """An ensemble of trained checkpoints (each keeps its weights, DataInfo and preprocessing)."""
        from audet.models.checkpoint import load_checkpoint

        members = [load_checkpoint(p, map_location=map_location) for p in paths]
        model = cls(members, combine)
        # what create_model("ensemble", members=[...]) records, so a checkpoint of it rebuilds
        model.model_name = "ensemble"
        model.config = {"members": [{"model": m.model_name, "args": _member_args(m),
                                     "data_info": m.data_info.to_dict() if m.data_info is not None else None}
                                    for m in members],
                        "combine": combine, "eps": model.eps}
        model.eval()
        return model

    # ------------------------------------------------------------------ outputs
    def _combine(self, member_logits: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(member_logits.float())
        if self.combine == "mean":
            p = probs.mean(dim=0)
        else:
            p = (probs >= 0.5).float().mean(dim=0)
        return torch.logit(p.clamp(self.eps, 1.0 - self.eps))

    def forward(self, images: torch.Tensor) -> ModelOutput:
        """Logits of the combined probability; ``aux``: ``member_logits`` ``(M, B, [T,] A)`` and
        every member's aux as ``m<i>/<key>``."""
        outs = [m(images) for m in self.members]
        stacked = torch.stack([o.logits for o in outs])
        aux: dict[str, Any] = {"member_logits": stacked}
        for i, o in enumerate(outs):
            aux.update({f"m{i}/{k}": v for k, v in o.aux.items()})
        return ModelOutput(self._combine(stacked), aux)

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._combine(torch.stack([m.forward_logits(images) for m in self.members]))

    # ------------------------------------------------------------------ losses
    def loss_context(self, data, labels, mask) -> LossContext:
        """Each member's own context, in ``extra["members"]`` (the first one's weights at the top)."""
        ctxs = [m.loss_context(m.data_info or data, labels, mask) for m in self.members]
        return LossContext(ctxs[0].au_weight, ctxs[0].pos_weight, {"members": ctxs})

    def loss_terms(self, output: ModelOutput, batch: dict, ctx: LossContext) -> dict[str, torch.Tensor]:
        """The members' terms (trained together), named ``m<i>/<term>``."""
        ctxs = ctx.extra.get("members") or [ctx] * len(self.members)
        terms = {}
        for i, m in enumerate(self.members):
            out = self._member_output(output, i)
            terms.update({f"m{i}/{k}": v for k, v in m.loss_terms(out, batch, ctxs[i]).items()})
        return terms

    # ------------------------------------------------------------------ hooks, forwarded
    def _member_output(self, output: ModelOutput, i: int) -> ModelOutput:
        aux = {k.split("/", 1)[1]: v for k, v in output.aux.items() if k.startswith(f"m{i}/")}
        return ModelOutput(output.aux["member_logits"][i], aux)

    def on_train_epoch_start(self, epoch: int) -> None:
        for m in self.members:
            m.on_train_epoch_start(epoch)

    def on_train_batch_end(self, output: ModelOutput, batch: dict) -> None:
        for i, m in enumerate(self.members):
            m.on_train_batch_end(self._member_output(output, i), batch)

    def on_train_epoch_end(self, epoch: int) -> None:
        for m in self.members:
            m.on_train_epoch_end(epoch)

    def wants_data_pass(self, epoch: int) -> bool:
        """Any member's wish; only those members take part in the pass (all in a collect-only stage)."""
        self._pass_members = [m.wants_data_pass(epoch) for m in self.members]
        return any(self._pass_members)

    def _in_pass(self) -> list[bool]:
        return getattr(self, "_pass_members", None) or [True] * len(self.members)

    def data_pass_step(self, batch: dict) -> list:
        return [m.data_pass_step(batch) if take else None for m, take in zip(self.members, self._in_pass())]

    def data_pass_end(self, results: list) -> None:
        for i, (m, take) in enumerate(zip(self.members, self._in_pass())):
            if take:
                m.data_pass_end([r[i] for r in results])
        self._pass_members = None

    def on_stage_start(self, stage: str) -> None:
        super().on_stage_start(stage)
        for m in self.members:
            m.on_stage_start(stage)

    def no_weight_decay(self) -> set[str]:
        return {f"members.{i}.{n}" for i, m in enumerate(self.members) for n in m.no_weight_decay()}

    def parameters_without_gradient(self) -> tuple[str, ...]:
        return tuple(f"members.{i}.{n}" for i, m in enumerate(self.members) for n in m.parameters_without_gradient())

    def batch_keys(self, stage: str) -> tuple[str, ...] | None:
        """The union of the members' keys; None when any member needs the full batch."""
        keys = [m.batch_keys(stage) for m in self.members]
        if any(k is None for k in keys):
            return None
        return tuple(dict.fromkeys(k for ks in keys for k in ks))

    @property
    def au_module_lists(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"members.{i}.{n}" for i, m in enumerate(self.members) for n in m.au_module_lists)

    @property
    def au_state_keys(self) -> dict[str, int]:  # type: ignore[override]
        return {f"members.{i}.{k}": d for i, m in enumerate(self.members) for k, d in m.au_state_keys.items()}

    @property
    def au_fresh_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"members.{i}.{k}" for i, m in enumerate(self.members) for k in m.au_fresh_keys)

    @contextlib.contextmanager
    def flop_count_context(self):
        with contextlib.ExitStack() as stack:
            for m in self.members:
                stack.enter_context(m.flop_count_context())
            yield

    def pretrained_parts(self) -> dict[str, PretrainedPart]:
        out = {}
        for i, m in enumerate(self.members):
            for name, part in m.pretrained_parts().items():
                out[f"m{i}/{name}"] = PretrainedPart(
                    module=f"members.{i}.{part.module}", description=part.description, source=part.source,
                    option=part.option, loader=part.loader, frozen=part.frozen,
                    store_in_checkpoint=part.store_in_checkpoint, required=part.required)
        return out


def _member_args(m: AUModel) -> dict:
    return to_jsonable({k: v for k, v in (m.config or {}).items() if k not in ("num_aus", "aus", "data")})


@register_model(
    paper="ensemble",
    description="members built from registered names (+ args), probabilities combined by mean or vote",
    small_config={"members": [{"model": "resnet_tiny", "args": {"width": 4}},
                              {"model": "resnet_tiny", "args": {"width": 4, "layers": [1, 1, 1, 1]}}]},
)
def ensemble(aus: Sequence[int], members: Sequence[dict] = (), combine: str = "mean",
             eps: float = 1e-6, data: DataInfo | None = None) -> Ensemble:
    """``members``: ``[{"model": registered name, "args": {...}, "data_info": optional}, ...]``."""
    if not members:
        raise ValueError("ensemble needs members=[{'model': NAME, 'args': {...}}, ...]")
    built = []
    for i, spec in enumerate(members):
        if not isinstance(spec, dict) or "model" not in spec:
            raise ValueError(f"ensemble member {i} must be {{'model': NAME, 'args': {{...}}}}, got {spec!r}")
        args = dict(spec.get("args") or {})
        own = DataInfo.from_dict(spec.get("data_info")) or data
        built.append(create_model(spec["model"], aus=aus, data=own, **args))
    return Ensemble(built, combine, eps=eps, data=data)
