"""``audet complexity MODEL``: parameters, FLOPs and MACs of a registered model (or a checkpoint)."""
from __future__ import annotations

HELP = "count parameters, FLOPs and MACs of a model"
DESCRIPTION = """Count the parameters (all and trainable) and the FLOPs of one forward pass.

MODEL is a registered name (see `audet models`) or an audet checkpoint (.safetensors/.json).
The input size and clip length come from the model's preprocessing unless --size is given.
FLOPs are counted with torch's FlopCounterMode in eval mode under the MATH attention backend
(2 FLOPs per multiply-add; MACs = FLOPs/2, the number papers usually print as "FLOPs").

examples:
  audet complexity ac2d --aus BP4D            # 3,625,196 params, 8.95 GFLOPs = 4.48 GMACs
  audet complexity ac2d_bnet --aus DISFA --json
  audet complexity cisnet_r34 --aus BP4D      # 22,368,908 params, 9.58 GFLOPs with 27 placeholder subjects

Models built from the data's subject ids (registry info needs_subjects, e.g. CISNet's subject
dictionary) get --subjects placeholder subjects (default 27, a BP4D training fold).
"""


def add_arguments(p) -> None:
    from audet.commands._common import add_aus, deprecated_alias, positive_int

    p.add_argument("model", help="registered model name or checkpoint path")
    add_aus(p, "the AUs of the model (default: BP4D's 12 AUs)")
    deprecated_alias(p, "--num-aus", "--aus", "num_aus", type=positive_int, metavar="N")
    p.add_argument("--size", type=positive_int, default=None, metavar="PX",
                   help="input side in pixels (default: the model's crop size)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="batch size of the counted forward (default 1)")
    deprecated_alias(p, "--batch", "--batch-size", "batch_size", type=positive_int)
    p.add_argument("--subjects", type=positive_int, default=27, metavar="N",
                   help="placeholder training subjects for models that need subject ids (default 27)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    import json
    from pathlib import Path

    from audet.commands._common import UsageError, check_checkpoint, parse_aus
    from audet.complexity import complexity_report
    from audet.models import create_model, model_info

    spec = args.model
    if spec.endswith((".safetensors", ".json", ".pth", ".pt", ".ckpt")) or Path(spec).exists():
        from audet.models.checkpoint import load_checkpoint

        check_checkpoint(spec, "MODEL")
        model = load_checkpoint(spec)
    else:
        from audet.models.registry import model_aus

        aus = parse_aus(args.aus)
        old_n = getattr(args, "num_aus", None)  # the hidden --num-aus N of 0.1
        if aus and old_n is not None and old_n != len(aus):
            raise UsageError(f"--num-aus {old_n} but --aus lists {len(aus)} AUs; give --aus only")
        try:  # the one AU fallback (BP4D's first N) when only --num-aus (or nothing) is given
            aus = model_aus(aus, old_n)
        except ValueError as exc:
            raise UsageError(f"--num-aus {old_n}: {exc}") from None
        kw = {}
        if model_info(spec).get("needs_subjects"):
            from audet.models.base import DataInfo

            kw["data"] = DataInfo(aus=aus, subjects=[f"subject_{i:02d}" for i in range(max(1, args.subjects))])
        model = create_model(spec, aus=aus, **kw)
    try:
        r = complexity_report(model, args.size, args.batch_size)
    except RuntimeError as exc:
        if args.size is None:
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--size {args.size}: {spec} cannot run on {args.size}x{args.size} inputs ({first}); "
                         "give a larger --size or leave it out") from None
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"model            {r['model']} ({r['num_aus']} AUs), input {tuple(r['input_shape'])}")
    print(f"parameters       {r['params']:,} ({r['params'] / 1e6:.4f} M)")
    print(f"trainable        {r['trainable_params']:,}")
    print(f"FLOPs            {r['flops']:,} ({r['gflops']:.4f} G)")
    print(f"MACs             {r['macs']:,.0f} ({r['gmacs']:.4f} G)")
    print(f"method           {r['method']}")
    return 0
