"""Inference on photos, videos and cameras: faces, alignment, tracking, media, tables, ONNX.

``audet.Detector`` (:class:`audet.inference.pipeline.Detector`) is the entry point; ``audet
predict`` and ``audet export`` are its command-line faces. See ``docs/inference.md``.
"""
from audet.inference.pipeline import Detector

__all__ = ["Detector"]
