"""Loading a model for inference: a checkpoint (or ONNX file) -> a backend of
:mod:`audet.inference.backends`, exporting to ONNX when the onnxruntime backend is asked for.

It sits above both :mod:`audet.inference.backends` and :mod:`audet.inference.onnx_export`, so those
two do not import each other.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from audet.inference.backends import NO_CHECKPOINT, CheckpointProblem, OnnxBackend, TorchBackend

__all__ = ["load_model", "load_backend", "auto_backend", "AUTO_ATOL"]

log = logging.getLogger(__name__)

#: largest difference of probabilities allowed between onnxruntime and PyTorch when ``auto`` checks them
AUTO_ATOL = 1e-4


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


def _seconds(backend, x: torch.Tensor, repeats: int = 2) -> float:
    backend(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend(x)
        best = min(best, time.perf_counter() - t0)
    return best


def auto_backend(model: torch.nn.Module, checkpoint, threads: int | None = None, atol: float = AUTO_ATOL):
    """The faster of PyTorch and onnxruntime for ``model`` on the CPU.

    onnxruntime is used when it is installed, the model exports (``<checkpoint>.onnx``, cached beside
    the checkpoint), its probabilities agree with PyTorch's within ``atol`` on a random batch,
    and it is faster on that batch; otherwise PyTorch, with a logged warning when the ONNX file
    disagrees or cannot be made."""
    torch_be = TorchBackend(model, "cpu")
    if getattr(model, "onnx_unsupported", None):
        return torch_be
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return torch_be
    from audet.inference.onnx_export import cached_onnx, example_input

    try:
        ort_be = OnnxBackend(cached_onnx(model, checkpoint), threads)
    except Exception as exc:  # noqa: BLE001 - any export/load failure: PyTorch is always there
        log.warning("onnxruntime not used (the model could not be exported or loaded: %s); running PyTorch",
                    " ".join(str(exc).split())[:300])
        return torch_be
    x = example_input(model)  # the export's own check batch (its crop, its clip)
    diff = float(np.abs(ort_be(x) - torch_be(x)).max())
    if not np.isfinite(diff) or diff > atol:
        log.warning("onnxruntime not used: its probabilities differ from PyTorch's by %.3g (> %.0e) on a "
                    "check batch; running PyTorch (re-export with `audet export` to investigate)", diff, atol)
        return torch_be
    t_ort, t_torch = _seconds(ort_be, x), _seconds(torch_be, x)
    chosen = ort_be if t_ort <= t_torch else torch_be
    log.info("model runtime: %s (onnxruntime %.1f ms, PyTorch %.1f ms per check batch; max difference %.1e)",
             chosen.name, 1000 * t_ort, 1000 * t_torch, diff)
    return chosen


def load_backend(checkpoint, backend: str = "torch", device: str = "cpu", threads: int | None = None,
                 precision: str = "32"):
    """A backend for ``checkpoint``: a path (.safetensors checkpoint or .onnx file) or a loaded model.

    ``backend="onnxruntime"`` with a .safetensors checkpoint uses ``<checkpoint>.onnx`` beside it
    when that is current (written by ``audet export``), else exports one into a cache folder.
    ``precision``: ``"32"``, ``"bf16"`` or ``"16"`` autocast of the torch backend (onnxruntime: 32 only).
    ``backend="auto"``: a checkpoint file on the CPU in fp32 gets :func:`auto_backend` (onnxruntime
    where installed, matching and faster); an .onnx file onnxruntime; a loaded model, another
    device or another precision PyTorch.
    """
    if checkpoint is None or checkpoint == "":
        raise CheckpointProblem(NO_CHECKPOINT)
    if backend == "auto":
        if isinstance(checkpoint, torch.nn.Module) or torch.device(device).type != "cpu" or str(precision) != "32":
            backend = "torch"
        elif Path(checkpoint).suffix == ".onnx":
            backend = "onnxruntime"
        elif not Path(checkpoint).is_dir():  # a folder gets the one-line error below
            return auto_backend(load_model(Path(checkpoint)), Path(checkpoint), threads)
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
        raise CheckpointProblem(f"unknown backend {backend!r}: auto, torch or onnxruntime")
    from audet.inference.onnx_export import cached_onnx

    model = load_model(p)
    return OnnxBackend(cached_onnx(model, p), threads)
