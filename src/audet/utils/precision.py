"""Reduced-precision inference: one autocast context for evaluation (``audet evaluate``) and
inference (:class:`audet.Detector`, ``audet predict --precision``)."""
from __future__ import annotations

import torch

__all__ = ["EVAL_PRECISIONS", "inference_precision"]

#: evaluation/inference precisions: fp32 (default), bf16 autocast (opt-in; fast on CPUs with
#: AVX-512 bf16 and on GPUs; check its F1 drift), fp16 autocast (CUDA only)
EVAL_PRECISIONS = ("32", "bf16", "16")


def inference_precision(precision: str = "32", device="cpu"):
    """Context manager for inference at ``precision`` (one of :data:`EVAL_PRECISIONS`).

    ``"32"``: nothing (fp32). ``"bf16"``: ``torch.autocast(dtype=torch.bfloat16)`` on the device
    (logs a warning on a CPU without native bf16, where it is emulated and slow). ``"16"``:
    fp16 autocast, CUDA only. Cast the logits back with ``.float()``.
    """
    import contextlib
    import logging

    p = {"32-true": "32", "bf16-mixed": "bf16", "16-mixed": "16"}.get(str(precision), str(precision))
    if p not in EVAL_PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {', '.join(EVAL_PRECISIONS)}")
    dev = torch.device(device)
    if p == "32":
        return contextlib.nullcontext()
    if p == "16":
        if dev.type != "cuda":
            raise ValueError("precision='16' (fp16 autocast) needs a CUDA device; on a CPU use precision='bf16'")
        return torch.autocast("cuda", dtype=torch.float16)
    if dev.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        logging.getLogger(__name__).warning("precision='bf16': this CPU has no native bf16; it will be slow")
    return torch.autocast(dev.type, dtype=torch.bfloat16)
