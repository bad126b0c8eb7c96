"""ONNX export of the logits-only path with a dynamic batch, checked against PyTorch.

The exported graph is ``forward_logits(x)`` (contract section 2) of the model in eval mode: input
``image`` ``(batch, 3, c, c)`` (clips ``(batch, T, 3, c, c)``), output ``logits``. The checkpoint's
metadata (model name, AUs, preprocessing) is stored in the ONNX file's ``metadata_props`` under
``"audet"``, so ``audet predict --backend onnxruntime`` needs nothing else. After writing, the
file is run with onnxruntime on random inputs of two batch sizes and compared with PyTorch.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audet.clip import clip_offsets
from audet.inference.backends import ONNX_META_KEY
from audet.models.base import LogitsOnly

__all__ = ["ExportError", "export_onnx", "check_onnx", "example_input", "cached_onnx"]

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """A model cannot be exported, or the export does not match PyTorch."""


def example_input(model: nn.Module, batch: int = 2, seed: int = 0) -> torch.Tensor:
    pre = getattr(model, "preprocess", {}) or {}
    c = int(pre.get("crop_size") or pre.get("aligned_size") or 176)
    offs, _ = clip_offsets(pre.get("clip"))
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 3, c, c) if not pre.get("clip") else (batch, len(offs), 3, c, c)
    return torch.randn(*shape, generator=g)


def _meta(model: nn.Module) -> dict:
    meta = dict(getattr(model, "checkpoint_meta", {}) or {})
    keep = {k: meta[k] for k in ("model", "model_config", "epoch", "metrics", "audet_version", "trained_on") if k in meta}
    keep.update(model=getattr(model, "model_name", "") or keep.get("model", ""), aus=[int(a) for a in model.aus],
                preprocess=dict(getattr(model, "preprocess", {}) or {}))
    return json.loads(json.dumps(keep, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def check_onnx(model: nn.Module, path, batches=(1, 3), atol: float = 1e-4, rtol: float = 1e-3) -> dict:
    """Run ``path`` with onnxruntime and the model with PyTorch on random inputs; raise
    :class:`ExportError` when they differ by more than ``atol + rtol * |torch|``.

    Returns ``{"max_abs_diff": float, "batches": [...]}``.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    model.eval()
    for i, b in enumerate(batches):
        x = example_input(model, b, seed=100 + i)
        with torch.inference_mode():
            ref = model.forward_logits(x).float().numpy()
        got = sess.run(None, {name: x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} at batch {b}")
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(got, ref, atol=atol, rtol=rtol):
            raise ExportError(f"ONNX and PyTorch logits differ by up to {diff:.3g} at batch {b} (atol {atol}, rtol {rtol})")
    return {"max_abs_diff": worst, "batches": list(batches)}


#: the ONNX opsets audet exports: from 13 (the oldest it checks) to 23 (the newest torch.onnx writes)
MIN_OPSET, MAX_OPSET = 13, 23


def check_opset(opset) -> int:
    """``opset`` as an int if audet exports it, else a one-line ValueError naming the range."""
    try:
        o = int(opset)
    except (TypeError, ValueError):
        raise ValueError(f"--opset {opset!r} is not a whole number; give {MIN_OPSET}..{MAX_OPSET}") from None
    if not MIN_OPSET <= o <= MAX_OPSET:
        raise ValueError(f"--opset {o} is not supported; give an ONNX opset from {MIN_OPSET} to {MAX_OPSET} "
                         "(default 18)")
    return o


def file_opset(path) -> int:
    """The default-domain opset recorded in an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return int(next((i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")), 0))


def export_onnx(model: nn.Module, path, *, opset: int = 18, exporter: str = "auto", check: bool = True,
                atol: float = 1e-4) -> dict:
    """Export ``model.forward_logits`` to ``path`` (one file) with a dynamic batch axis.

    ``exporter``: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``: traces the model, so a
    Python branch on a buffer is fixed at its value at export time; fast), ``"dynamo"``
    (``torch.export``-based; refuses data-dependent branches, e.g. AC2D's intervention flag), or
    ``"auto"`` (torchscript, then dynamo if that fails or is gone from PyTorch). With ``check`` the
    file is compared with PyTorch (:func:`check_onnx`). Returns a report (path, exporter, opset --
    read back from the written file -- and max_abs_diff). ``opset`` outside
    :data:`MIN_OPSET`..:data:`MAX_OPSET` is refused before any work.
    """
    opset = check_opset(opset)
    if exporter == "auto":
        try:
            return export_onnx(model, path, opset=opset, exporter="torchscript", check=check, atol=atol)
        except ExportError as first:
            log.info("torchscript export failed (%s); trying the dynamo exporter", first)
            try:
                return export_onnx(model, path, opset=opset, exporter="dynamo", check=check, atol=atol)
            except ExportError as second:
                raise ExportError(f"{first}; and {second}") from second
    import onnx

    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"unknown exporter {exporter!r}: auto, torchscript or dynamo")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    wrapper = LogitsOnly(model).eval()
    x = example_input(model, 2)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                torch.onnx.export(wrapper, (x,), str(tmp), input_names=["image"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                                  dynamo=True, external_data=False, verbose=False)
            elif exporter == "torchscript":
                torch.onnx.export(wrapper, (x,), str(tmp), input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                                  opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_META_KEY, json.dumps(_meta(model), sort_keys=True)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        name = getattr(model, "model_name", type(model).__name__)
        raise ExportError(f"model {name!r} cannot be exported to ONNX with the {exporter} exporter: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
        model.train(was_training)
    written = file_opset(path)
    if written != opset:  # an exporter may silently write another opset: never report one the file lacks
        path.unlink()
        raise ExportError(f"the {exporter} exporter wrote opset {written}, not the {opset} asked for")
    report = {"path": str(path), "exporter": exporter, "opset": written}
    if check:
        model.eval()
        try:
            report.update(check_onnx(model, path, atol=atol))
        except ExportError:
            path.unlink()  # never leave a file that disagrees with PyTorch
            raise
        finally:
            model.train(was_training)
    return report


def cached_onnx(model: nn.Module, checkpoint) -> Path:
    """``<checkpoint>.onnx`` beside the checkpoint if it is newer than the weights, else export it
    there (or, if that folder is read-only, into a temporary folder) and return its path."""
    from audet.models.checkpoint import checkpoint_paths

    weights, _ = checkpoint_paths(checkpoint)
    target = weights.with_suffix(".onnx")
    if target.is_file() and target.stat().st_mtime >= weights.stat().st_mtime:
        return target
    if not os.access(target.parent, os.W_OK):
        import tempfile

        target = Path(tempfile.mkdtemp(prefix="audet-onnx-")) / target.name
    log.info("exporting %s to %s for onnxruntime", weights, target)
    export_onnx(model, target, check=True)
    return target
