"""``audet evaluate --checkpoint CKPT --data ROOT --prefix PREFIX``: per-AU F1-frame table."""
from __future__ import annotations

import argparse

HELP = "per-AU F1-frame of a checkpoint on a prepared split (cross-dataset: shared AUs)"
DESCRIPTION = """Evaluate an audet checkpoint (.safetensors + .json) on a prepared directory.

Writes a Markdown and a CSV table in the papers' layout (F1 in percent, AU columns + Avg).
When the checkpoint and the data have different AU sets (e.g. a BP4D model on GFT), the AUs
both have are evaluated and the output says which were left out.

  audet evaluate -c runs/ac2d_bp4d/fold0/best.safetensors --data data/bp4d --prefix BP4D_part3
  audet evaluate -c runs/ac2d_bp4d/fold0/best.safetensors --data data/gft --prefix GFT_test --out gft

Beside F1-frame at 0.5 (the headline) it reports F1-micro, ROC-AUC and average precision per AU
and, when the checkpoint holds per-AU thresholds chosen on its run's validation split, F1 at those
thresholds as a second row (never instead of the 0.5 row)."""



def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import (add_aus, add_batch_size, add_checkpoint, add_num_workers, add_precision,
                                        positive_int)

    add_checkpoint(p, "an audet .safetensors checkpoint (with its .json)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="prepared directory (dataset.json, list/, images/), as `audet prepare` writes it")
    p.add_argument("--prefix", help="list-file prefix (default: the test prefix of fold 0 in dataset.json)")
    add_aus(p, "evaluate only these AUs (they must be in both the checkpoint and the data)")
    p.add_argument("--out", help="output path stem for .md and .csv (default: next to the checkpoint)")
    add_batch_size(p, 64, "frames per forward pass")
    add_num_workers(p, 0, "data-loading worker processes")
    p.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu or cuda:0 (default: %(default)s)")
    add_precision(p)
    p.add_argument("--f1-convention", default="paper", choices=["paper", "aunet", "cis"],
                   help="paper (default: >= 0.5, every audet table) | aunet | cis: the published codes' F1 "
                        "(smoothing; strict > 0.5 and -1 for AUs without positives), docs/metrics.md")
    p.add_argument("--save-predictions", metavar="FILE",
                   help="also write the scored table (sequence, frame, AUnn_p per frame) to this CSV; "
                        "`audet score FILE --data DIR` scores it again")
    p.add_argument("--vs-prior", nargs="?", type=positive_int, const=1000, default=0, metavar="N",
                   help="also compare with the all-present prior: paired bootstrap CI over sequences "
                        "(N resamples; 1000 when N is left out)")


def _test_prefix(meta: dict, data: str) -> str:
    folds = meta.get("folds") or []
    if folds and isinstance(folds[0], dict) and (folds[0].get("test") or folds[0].get("test_prefix")):
        return folds[0].get("test") or folds[0]["test_prefix"]
    from audet.commands._common import UsageError

    raise UsageError(f"--prefix not given and {data}/dataset.json names no test prefix; "
                     "pass --prefix (a name from DIR/list/<prefix>_path.txt)")


def _check_prefix(data: str, prefix: str) -> None:
    from pathlib import Path

    from audet.commands._common import UsageError

    if not (Path(data) / "list" / f"{prefix}_path.txt").is_file():
        known = sorted(p.name[: -len("_path.txt")] for p in (Path(data) / "list").glob("*_path.txt"))
        raise UsageError(f"--prefix {prefix}: {data}/list has no {prefix}_path.txt; prefixes there: "
                         + (", ".join(known) or "none (prepare the directory again)"))


def run(args) -> int:
    from pathlib import Path

    from audet.commands._common import check_checkpoint, check_device, check_prepared, parse_aus
    from audet.engine.evaluate import evaluate
    from audet.metrics import to_markdown

    aus = parse_aus(args.aus)
    check_device(args.device)
    check_checkpoint(args.checkpoint)
    meta = check_prepared(args.data, "--data")
    prefix = args.prefix
    if not prefix:
        prefix = _test_prefix(meta, args.data)
        print(f"--prefix not given: using the test prefix of fold 0, {prefix}")
    _check_prefix(args.data, prefix)
    ckpt = Path(args.checkpoint)
    out = args.out or str(ckpt.with_suffix("").with_name(f"{ckpt.with_suffix('').name}_eval_{Path(args.data).name}_{prefix}"))
    res = evaluate(ckpt, args.data, prefix, aus=aus, batch_size=args.batch_size,
                   num_workers=args.num_workers, device=args.device, out=out, precision=args.precision,
                   vs_prior=args.vs_prior, f1_convention=args.f1_convention,
                   save_predictions=args.save_predictions)
    print(to_markdown(res["table"]), end="")
    print(f"{res['n']} frames; AUs evaluated: {' '.join(f'AU{a}' for a in res['aus'])}")
    if aus:  # the skipped lists then also hold the AUs --aus left out: say so instead of blaming the data
        left = sorted(set(res["skipped_checkpoint_aus"]) | set(res["skipped_data_aus"]))
        if left:
            print("not evaluated (left out by --aus or not in both): " + " ".join(f"AU{a}" for a in left))
    else:
        if res["skipped_checkpoint_aus"]:
            print("checkpoint AUs not in the data: " + " ".join(f"AU{a}" for a in res["skipped_checkpoint_aus"]))
        if res["skipped_data_aus"]:
            print("data AUs the checkpoint does not predict: " + " ".join(f"AU{a}" for a in res["skipped_data_aus"]))
    from audet.engine.reports import metric_notes

    for line in metric_notes({"this checkpoint": res}):
        print(line)
    if res.get("prior_text"):
        print(res["prior_text"])
    if args.save_predictions:
        print(f"wrote the scored predictions to {args.save_predictions}")
    print(f"wrote {out}.md and {out}.csv")
    return 0
