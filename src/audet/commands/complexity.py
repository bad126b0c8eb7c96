"""``audet complexity MODEL``: parameters, FLOPs and MACs of a registered model (or a checkpoint)."""
from __future__ import annotations

HELP = "count parameters, FLOPs and MACs of a model"
DESCRIPTION = """Count the parameters (all and trainable) and the FLOPs of one forward pass.

MODEL is a registered name (see `audet models`) or an audet checkpoint (.safetensors/.json).
The input size and clip length come from the model's preprocessing unless --size is given.
FLOPs are counted with torch's FlopCounterMode in eval mode under the MATH attention backend
(2 FLOPs per multiply-add; MACs = FLOPs/2, the number papers usually print as "FLOPs").

examples:
  audet complexity ac2d --num-aus 12          # 3,625,196 params, 8.95 GFLOPs = 4.48 GMACs
  audet complexity ac2d_bnet --num-aus 8 --json
  audet complexity cisnet_r34 --aus BP4D      # 22,368,908 params, 9.58 GFLOPs with 27 placeholder subjects

Models built from the data's subject ids (registry info needs_subjects, e.g. CISNet's subject
dictionary) get --subjects placeholder subjects (default 27, a BP4D training fold).
"""


def add_arguments(p) -> None:
    p.add_argument("model", help="registered model name or checkpoint path")
    p.add_argument("--num-aus", type=int, default=None, help="number of AUs (default 12, or --aus)")
    p.add_argument("--aus", default=None, help="dataset name (BP4D, DISFA, ...) or AU numbers '1,2,4'")
    p.add_argument("--size", type=int, default=None, help="input side in pixels (default: the model's crop size)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the counted forward (default 1)")
    p.add_argument("--subjects", type=int, default=27,
                   help="placeholder training subjects for models that need subject ids (default 27)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _aus(spec):
    if spec is None:
        return None
    if all(part.strip().isdigit() for part in spec.split(",")):
        return [int(a) for a in spec.split(",")]
    from audet.facs import dataset_aus

    return list(dataset_aus(spec))


def run(args) -> int:
    import json
    from pathlib import Path

    from audet.complexity import complexity_report
    from audet.models import create_model, model_info

    spec = args.model
    if spec.endswith((".safetensors", ".json")) or Path(spec).exists():
        from audet.engine.checkpoint import load_checkpoint

        model = load_checkpoint(spec)
    else:
        aus = _aus(args.aus)
        num_aus = args.num_aus if args.num_aus is not None else (len(aus) if aus else 12)
        kw = {"aus": aus} if aus else {}
        if model_info(spec).get("needs_subjects"):
            from audet.models.base import DataInfo

            kw["data"] = DataInfo(aus=aus or list(range(num_aus)),
                                  subjects=[f"subject_{i:02d}" for i in range(max(1, args.subjects))])
        model = create_model(spec, num_aus=num_aus, **kw)
    r = complexity_report(model, args.size, args.batch)
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
