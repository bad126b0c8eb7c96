"""Loading a model for inference: a checkpoint (or ONNX file) -> a backend of
:mod:`audet.inference.backends`, exporting to ONNX when the onnxruntime backend is asked for.

It sits above both :mod:`audet.inference.backends` and :mod:`audet.inference.onnx_export`, so those
two do not import each other.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from audet.inference.backends import NO_CHECKPOINT, CheckpointProblem, OnnxBackend, TorchBackend

__all__ = ["load_model", "load_backend"]


def load_model(path) -> torch.nn.Module:
    from audet.models.checkpoint import CheckpointError, load_checkpoint

    p = Path(path)
    try:
        return load_checkpoint(p)
    except FileNotFoundError as exc:
        raise CheckpointProblem(f"checkpoint not found: {exc.filename or exc}; {NO_CHECKPOINT}") from None
    except CheckpointError as exc:
        raise CheckpointProblem(f"{exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, OSError) as exc:
        raise CheckpointProblem(f"{p}: not an audet checkpoint ({type(exc).__name__}: {exc}); {NO_CHECKPOINT}") from None
    except Exception as exc:  # safetensors' own errors on a file that is not one
        if type(exc).__module__.startswith("safetensors") or "safetensor" in type(exc).__name__.lower():
            raise CheckpointProblem(f"{p}: not an audet checkpoint ({exc}); {NO_CHECKPOINT}") from None
        raise


def load_backend(checkpoint, backend: str = "torch", device: str = "cpu", threads: int | None = None,
                 precision: str = "32"):
    """A backend for ``checkpoint``: a path (.safetensors checkpoint or .onnx file) or a loaded model.

    ``backend="onnxruntime"`` with a .safetensors checkpoint uses ``<checkpoint>.onnx`` beside it
    when that is current (written by ``audet export``), else exports one into a cache folder.
    ``precision``: ``"32"``, ``"bf16"`` or ``"16"`` autocast of the torch backend (onnxruntime: 32 only).
    """
    if backend != "torch" and str(precision) != "32":
        raise CheckpointProblem(f"precision {precision} needs the torch backend (onnxruntime runs the fp32 export)")
    if checkpoint is None or checkpoint == "":
        raise CheckpointProblem(NO_CHECKPOINT)
    if isinstance(checkpoint, torch.nn.Module):
        if backend == "torch":
            return TorchBackend(checkpoint, device, precision)
        import tempfile

        from audet.inference.onnx_export import export_onnx

        out = Path(tempfile.mkdtemp(prefix="audet-onnx-")) / "model.onnx"
        export_onnx(checkpoint, out, check=False)
        return OnnxBackend(out, threads)
    p = Path(checkpoint)
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.safetensors"))
        example = "best.safetensors" if "best.safetensors" in inside else (inside[0] if inside else None)
        raise CheckpointProblem(f"checkpoint {p} is a directory; give the checkpoint file "
                                + (f"in it, e.g. {p / example}" if example else "(a training run's best.safetensors)"))
    if p.suffix == ".onnx":
        if backend not in ("onnxruntime", "onnx"):
            raise CheckpointProblem(f"{p} is an ONNX file: use --backend onnxruntime, or give the .safetensors checkpoint")
        if not p.is_file():
            raise CheckpointProblem(f"ONNX file not found: {p}")
        return OnnxBackend(p, threads)
    if backend == "torch":
        return TorchBackend(load_model(p), device, precision)
    if backend not in ("onnxruntime", "onnx"):
        raise CheckpointProblem(f"unknown backend {backend!r}: torch or onnxruntime")
    from audet.inference.onnx_export import cached_onnx

    model = load_model(p)
    return OnnxBackend(cached_onnx(model, p), threads)
