"""The AU model behind the inference pipeline: a PyTorch checkpoint or an exported ONNX file.

Both backends call the logits-only path (contract section 2: ``model.forward_logits(x)``; for a
model that predates it, ``model(x).logits``) and return per-AU probabilities (sigmoid of the
logits) as a numpy array; for clip models (``preprocess["clip"]``) the input is ``B x T x 3 x H x W``
(the frames :func:`audet.clip.clip_offsets` names) and the output of the centre frame is returned.
The AU ids are the model's own list (``model.aus``; in an ONNX file, its recorded ``aus``).
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from audet.clip import clip_offsets
from audet.utils.precision import inference_precision

__all__ = ["NO_CHECKPOINT", "CheckpointProblem", "TorchBackend", "OnnxBackend", "ONNX_META_KEY"]

log = logging.getLogger(__name__)

ONNX_META_KEY = "audet"

NO_CHECKPOINT = (
    "a trained checkpoint is needed (--checkpoint PATH.safetensors): convert an authors' release with "
    "`audet convert` or train one with `audet train CONFIG` (e.g. `audet demo` trains a small one on synthetic data)"
)


class CheckpointProblem(ValueError):
    """The checkpoint given for inference is missing or is not an audet checkpoint."""


def _offsets(preprocess: dict, source) -> tuple[list[int], int]:
    try:
        return clip_offsets(preprocess.get("clip"))
    except ValueError as exc:
        raise CheckpointProblem(f"{source}: {exc}") from None


def _centre(logits: np.ndarray, ndim_in: int, centre: int) -> np.ndarray:
    if ndim_in == 5 and logits.ndim == 3:  # B x T x A: the centre frame's output
        return logits[:, centre]
    return logits


class TorchBackend:
    """Eager PyTorch inference of a loaded model (eval mode, inference_mode)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", precision: str = "32"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.precision = str(precision)
        inference_precision(self.precision, self.device)  # an unknown or impossible precision fails here
        self._autocast = lambda: inference_precision(self.precision, self.device)
        self.aus = [int(a) for a in model.aus]
        self.preprocess = dict(getattr(model, "preprocess", {}) or {})
        self.offsets, self.centre = _offsets(self.preprocess, getattr(model, "model_name", "") or "the model")

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            logits = self.model.forward_logits(x.to(self.device)).float().cpu().numpy()
        return 1.0 / (1.0 + np.exp(-_centre(logits, x.ndim, self.centre)))


class OnnxBackend:
    """onnxruntime inference of a file written by ``audet export`` (metadata inside)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointProblem("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                                    "(or pip install 'audet[onnx]')") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        # waiting threads sleep instead of spinning, as torch's (audet.utils.threads: a spinning
        # thread beside other busy programs burns the time slice its sibling needs)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointProblem(f"{path}: not a loadable ONNX model ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        if not meta:
            raise CheckpointProblem(f"{path}: ONNX file without audet metadata; write it with `audet export --checkpoint CKPT`")
        meta = json.loads(meta)
        self.meta = meta
        self.aus = [int(a) for a in meta["aus"]]
        self.preprocess = dict(meta.get("preprocess") or {})
        self.offsets, self.centre = _offsets(self.preprocess, path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return 1.0 / (1.0 + np.exp(-_centre(np.asarray(logits), x.ndim, self.centre)))
