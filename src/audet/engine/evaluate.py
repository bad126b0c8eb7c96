"""``evaluate(checkpoint, root, prefix)``: per-AU F1-frame of a checkpoint on a prepared split.

Cross-dataset evaluation (paper section 4.3.3) scores the AUs the checkpoint and the data share:
a BP4D model (12 AUs) on GFT (10 AUs) is scored on the 10 common AUs; the result says which AUs
were evaluated and which of the checkpoint's / data's AUs were left out.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from audet.engine.checkpoint import load_checkpoint
from audet.engine.data import dataset_meta, shared_aus

__all__ = ["evaluate", "data_aus", "predict"]


def data_aus(root: str | Path, prefix: str | None = None) -> list[int]:
    """The AU numbers of a prepared directory (``dataset.json``)."""
    meta = dataset_meta(root)
    aus = meta.get("aus")
    if aus:
        return [int(a) for a in aus]
    if meta.get("dataset"):
        from audet.facs import DATASET_AUS

        ds = meta["dataset"]
        if ds in DATASET_AUS:
            return [int(a) for a in DATASET_AUS[ds]]
    raise ValueError(f"{root}: cannot tell its AUs (no 'aus' in dataset.json); pass --aus")


def _eval_dataset(root, prefix: str, aus: Sequence[int], preprocess: dict, clip=None):
    from audet.data import AUDataset

    try:
        from audet.data.transforms import EvalTransform
    except ImportError:  # pragma: no cover
        EvalTransform = None
    transform = None
    if EvalTransform is not None:
        transform = _make_eval_transform(EvalTransform, preprocess)
    kwargs = {"aus": list(aus), "transform": transform}
    if clip is not None:
        kwargs["clip"] = clip
    return AUDataset(root, prefix, **kwargs)


def _make_eval_transform(cls, preprocess: dict):
    """Build ``EvalTransform`` from a model's preprocess dict (crop size, mean, std)."""
    if hasattr(cls, "from_preprocess"):
        return cls.from_preprocess(preprocess)
    import inspect

    params = inspect.signature(cls).parameters
    kw = {}
    for key, names in {"crop_size": ("crop_size", "size", "crop"), "mean": ("mean",), "std": ("std",)}.items():
        for n in names:
            if n in params and preprocess.get(key) is not None:
                kw[n] = preprocess[key]
                break
    if "preprocess" in params:
        kw = {"preprocess": preprocess}
    return cls(**kw)


@torch.inference_mode()
def predict(model, loader, columns: Sequence[int], device="cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, labels, mask)`` over a loader, keeping the model's output ``columns``."""
    probs, labels, masks = [], [], []
    cols = torch.as_tensor(list(columns), dtype=torch.long)
    for batch in loader:
        out = model(batch["image"].to(device))
        p = torch.sigmoid(out.logits.float()).cpu().index_select(-1, cols)
        y, m = batch["labels"].float(), batch["mask"].float()
        if p.ndim == 3:
            p, y, m = (t.reshape(-1, t.shape[-1]) for t in (p, y, m))
        probs.append(p.numpy())
        labels.append(y.numpy())
        masks.append(m.numpy())
    A = len(cols)
    if not probs:
        return np.zeros((0, A)), np.zeros((0, A)), np.zeros((0, A))
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(masks)


def evaluate(
    checkpoint: str | Path,
    root: str | Path,
    prefix: str,
    *,
    aus: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    title: str | None = None,
) -> dict:
    """Evaluate ``checkpoint`` on ``root``/``prefix``; returns a dict with the per-AU table.

    Keys: ``table`` (DataFrame, F1 in percent, columns ``AU<n>`` and ``Avg``), ``aus`` (evaluated),
    ``skipped_checkpoint_aus``, ``skipped_data_aus``, ``n`` (frames), ``checkpoint``, ``data``.
    With ``out`` (a path stem), writes ``out.md`` and ``out.csv``.
    """
    from torch.utils.data import DataLoader

    from audet.metrics import au_report

    model = load_checkpoint(checkpoint, map_location=device)
    model_aus = [int(a) for a in (model.aus or [])]
    if not model_aus:
        raise ValueError(f"{checkpoint}: the checkpoint has no AU list")
    have = data_aus(root, prefix)
    common = shared_aus(model_aus, have)
    if aus:
        wanted = [int(a) for a in aus]
        missing = [a for a in wanted if a not in common]
        if missing:
            raise ValueError(
                f"AU(s) {missing} are not in both the checkpoint ({model_aus}) and the data ({have})"
            )
        common = [a for a in model_aus if a in wanted]
    if not common:
        raise ValueError(f"the checkpoint's AUs {model_aus} and the data's AUs {have} have nothing in common")
    columns = [model_aus.index(a) for a in common]
    ds = _eval_dataset(root, prefix, common, model.preprocess, model.preprocess.get("clip"))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    probs, labels, mask = predict(model, loader, columns, device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="f1_frame")
        table = au_report(labels, probs, common, mask=mask)
    table.index = [f"{model.model_name} -> {Path(str(root)).name}/{prefix}"]
    table.index.name = "F1"
    result = {
        "table": table,
        "aus": common,
        "skipped_checkpoint_aus": [a for a in model_aus if a not in common],
        "skipped_data_aus": [a for a in have if a not in common],
        "n": int(probs.shape[0]),
        "checkpoint": str(checkpoint),
        "data": f"{root}:{prefix}",
        "model": model.model_name,
        "selection": (getattr(model, "checkpoint_meta", {}) or {}).get("selection"),
    }
    if out is not None:
        from audet.engine.reports import write_table

        notes = [f"{result['n']} frames; AUs evaluated: {', '.join(f'AU{a}' for a in common)}"]
        if result["skipped_checkpoint_aus"]:
            notes.append("checkpoint AUs not in the data (not scored): "
                         + ", ".join(f"AU{a}" for a in result["skipped_checkpoint_aus"]))
        if result["skipped_data_aus"]:
            notes.append("data AUs the checkpoint does not predict: "
                         + ", ".join(f"AU{a}" for a in result["skipped_data_aus"]))
        sel = result.get("selection") or {}
        if sel:
            notes.append(f"checkpoint selected on: {sel.get('on')}")
        write_table(table, out, title=title or f"{Path(str(checkpoint)).name} on {prefix}", notes=notes)
    return result
