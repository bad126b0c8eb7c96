"""``audet evaluate CHECKPOINT --data ROOT --prefix PREFIX``: per-AU F1-frame table."""
from __future__ import annotations

import argparse

HELP = "per-AU F1-frame of a checkpoint on a prepared split (cross-dataset: shared AUs)"
DESCRIPTION = """Evaluate an audet checkpoint (.safetensors + .json) on a prepared directory.

Writes a Markdown and a CSV table in the papers' layout (F1 in percent, AU columns + Avg).
When the checkpoint and the data have different AU sets (e.g. a BP4D model on GFT), the AUs
both have are evaluated and the output says which were left out.

  audet evaluate runs/ac2d_bp4d/fold0/best.safetensors --data data/bp4d --prefix BP4D_part3
  audet evaluate runs/ac2d_bp4d/fold0/best.safetensors --data data/gft --prefix GFT_test --out gft"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an audet .safetensors checkpoint")
    p.add_argument("--data", required=True, help="prepared directory (dataset.json, list/, images/)")
    p.add_argument("--prefix", help="list-file prefix (default: the test prefix of fold 0 in dataset.json)")
    p.add_argument("--aus", type=int, nargs="+", help="evaluate only these AUs (must be in both)")
    p.add_argument("--out", help="output path stem for .md and .csv (default: next to the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--vs-prior", nargs="?", type=int, const=1000, default=0, metavar="N",
                   help="compare with the all-present prior: paired bootstrap CI over sequences (N resamples, default 1000)")
    p.add_argument("--precision", default="32", choices=["32", "bf16", "16"],
                   help="32 (default) | bf16 autocast (opt-in: faster on CPUs with AVX-512 bf16) | 16 (CUDA)")


def run(args) -> int:
    from pathlib import Path

    from audet.engine.evaluate import evaluate
    from audet.metrics import to_markdown

    prefix = args.prefix
    if not prefix:
        from audet.engine.data import dataset_meta

        meta = dataset_meta(args.data)
        folds = meta.get("folds") or []
        if folds and isinstance(folds[0], dict) and (folds[0].get("test") or folds[0].get("test_prefix")):
            prefix = folds[0].get("test") or folds[0]["test_prefix"]
            print(f"--prefix not given: using the test prefix of fold 0, {prefix}")
        else:
            raise ValueError("--prefix is required (dataset.json names no test prefix)")
    ckpt = Path(args.checkpoint)
    out = args.out or str(ckpt.with_suffix("").with_name(f"{ckpt.with_suffix('').name}_eval_{Path(args.data).name}_{prefix}"))
    res = evaluate(ckpt, args.data, prefix, aus=args.aus, batch_size=args.batch_size,
                   num_workers=args.num_workers, device=args.device, out=out, precision=args.precision,
                   vs_prior=args.vs_prior)
    print(to_markdown(res["table"]), end="")
    print(f"{res['n']} frames; AUs evaluated: {' '.join(f'AU{a}' for a in res['aus'])}")
    if res["skipped_checkpoint_aus"]:
        print("checkpoint AUs not in the data: " + " ".join(f"AU{a}" for a in res["skipped_checkpoint_aus"]))
    if res["skipped_data_aus"]:
        print("data AUs the checkpoint does not predict: " + " ".join(f"AU{a}" for a in res["skipped_data_aus"]))
    if res.get("prior_text"):
        print(res["prior_text"])
    print(f"wrote {out}.md and {out}.csv")
    return 0
