"""``audet export --checkpoint CKPT [--out FILE.onnx]``: the logits-only path as an ONNX file, checked against PyTorch."""
from __future__ import annotations

import argparse
import sys

HELP = "export a checkpoint to ONNX (dynamic batch), numerically checked against PyTorch"
DESCRIPTION = """\
Write the model's logits-only path (forward_logits) as ONNX with a dynamic batch axis, the
checkpoint's AUs and preprocessing stored in the file's metadata, then run it with onnxruntime on
random inputs at two batch sizes and compare with PyTorch (fails if they differ by more than
--atol). The file can be used by `audet predict --backend onnxruntime --checkpoint FILE.onnx` or by
any ONNX runtime (input "image": B x 3 x c x c normalised as in the metadata; output "logits").

Example:
  audet export -c runs/demo/train/best.safetensors            # writes runs/demo/train/best.onnx
"""


class _OnnxAlias(argparse.Action):
    """``--onnx`` (no value: nothing to do, ONNX is the only format) or ``--onnx FILE`` (= ``--out FILE``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is not None:
            namespace.out = values


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import add_checkpoint

    add_checkpoint(p, "audet checkpoint (.safetensors with its .json)")
    p.add_argument("--out", metavar="FILE.onnx",
                   help="the ONNX file to write (ONNX is the only format; default: the checkpoint's path with .onnx)")
    p.add_argument("--onnx", nargs="?", metavar="FILE.onnx", action=_OnnxAlias, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # 0.1's required format flag: accepted (optionally with the path)
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 13..23 (default: %(default)s)")
    p.add_argument("--exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="torch.onnx exporter: auto (torchscript, then dynamo), torchscript (tracing) or dynamo (torch.export)")
    p.add_argument("--atol", type=float, default=1e-4, help="allowed |ONNX - PyTorch| of the logits (default: %(default)s)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    from audet.models.checkpoint import checkpoint_paths
    from audet.inference.loading import load_model
    from audet.inference.onnx_export import ExportError, check_opset, export_onnx

    check_opset(args.opset)  # before any work

    model = load_model(args.checkpoint)
    out = args.out or checkpoint_paths(args.checkpoint)[0].with_suffix(".onnx")
    try:
        rep = export_onnx(model, out, opset=args.opset, exporter=args.exporter, check=not args.no_check, atol=args.atol)
    except ExportError as exc:
        print(f"audet export: error: {exc}", file=sys.stderr)
        return 1
    msg = f"wrote {rep['path']} ({model.model_name}, opset {rep['opset']}, {rep['exporter']} exporter, dynamic batch)"
    if "max_abs_diff" in rep:
        msg += f"; onnxruntime vs PyTorch max |diff| {rep['max_abs_diff']:.2e} at batches {rep['batches']}"
    print(msg)
    return 0
