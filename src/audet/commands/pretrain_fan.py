"""``audet pretrain-fan``: train AU-Net's 2-stack FAN on a prepared data set's landmarks."""
from __future__ import annotations

HELP = "pretrain the 2-stack FAN (AUNet's face-alignment part) on a prepared data set's landmarks"
DESCRIPTION = """Train the 2-stack hourglass FAN (audet.models.layers.fan) by heatmap regression on the
landmarks of a prepared data set, as face-alignment networks are trained, and save it in the
.safetensors format AUNet reads (model.args.fan_weights=OUT). No download.

Only the TRAINING prefix of --fold is used (the test subjects never reach the FAN); the landmark
error is then reported on the fold's test prefix: NME = mean point-to-point error over the 49
points divided by the inter-ocular distance (outer eye corners), in percent.

Inputs are exactly what AUNet's FAN sees at model.args.img_size=--size (the model's own
preprocessing: aligned face resized, cropped, RGB in [0, 1]); training adds AUNet's random crop
and flip and a colour jitter of its own (brightness and contrast 0.5, which AUNet does not use),
with the landmarks following the pixels. Targets: one Gaussian
(--sigma heatmap pixels) per landmark on the size/4 heatmaps of both stacks (intermediate
supervision), mean squared error. The prepared data carry the 49 inner points; the 19 other
channels of the 68-point layout (jaw, inner mouth corners) are trained towards zero, so AUNet's
mask M (the heatmaps summed) covers the brows, eyes, nose and mouth.

examples:
  audet pretrain-fan --data runs/synth/prepared --fold 0 --size 64 --steps 1500 --out runs/fan64.safetensors
  audet train aunet_synth_quick data.root=runs/synth/prepared model.args.fan_weights=runs/fan64.safetensors \\
      model.args.allow_random_pretrained=false
"""


def add_arguments(p) -> None:
    from audet.commands._common import add_batch_size, add_num_workers, add_overwrite, deprecated_alias, positive_int

    p.add_argument("--data", required=True, help="prepared directory (audet prepare / audet synth + prepare)")
    p.add_argument("--fold", type=int, default=0, help="fold of dataset.json: train on its training prefix (default 0)")
    p.add_argument("--out", required=True, help="output .safetensors (a .json with the training record beside it)")
    p.add_argument("--size", type=positive_int, default=64, help="AUNet's img_size the FAN will serve (multiple of 64; default 64)")
    p.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps (default 1500)")
    add_batch_size(p, 16, "images per optimiser step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr, cosine to 0 (default 1e-3)")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian std in heatmap pixels (default 1.0)")
    p.add_argument("--pool", choices=("max", "avg"), default="max", help="the FAN's pooling (AUNet: max)")
    p.add_argument("--eval-frames", type=positive_int, default=2000, help="test frames scored for the NME (default 2000)")
    add_num_workers(p, 1, "DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batch order (default 0)")
    add_overwrite(p, "replace --out if it exists (formerly --force)")
    deprecated_alias(p, "--force", "--overwrite", "overwrite", flag=True)


def run(args) -> int:
    import time
    from pathlib import Path

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out {out}: must end in .safetensors (the format AUNet's fan_weights reads)")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out} exists; add --overwrite to replace it")
    if args.size % 64:
        raise ValueError(f"--size {args.size}: must be a multiple of 64 (AUNet's img_size)")

    import torch

    from audet.data.meta import read_fold
    from audet.models.fan_pretrain import evaluate_nme, train_fan
    from audet.utils.io import atomic_path, write_json_atomic

    fold = read_fold(args.data, args.fold)
    t = time.perf_counter()
    fan, record = train_fan(args.data, fold["train"], size=args.size, steps=args.steps, batch_size=args.batch_size,
                            lr=args.lr, sigma=args.sigma, pool=args.pool, seed=args.seed,
                            num_workers=args.num_workers, log_every=max(1, args.steps // 10))
    minutes = (time.perf_counter() - t) / 60
    nme = evaluate_nme(fan, args.data, fold["test"], size=args.size, max_frames=args.eval_frames)
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in fan.state_dict().items()}, str(tmp))
    info = {"data": str(args.data), "fold": args.fold, "train_prefix": fold["train"], "test_prefix": fold["test"],
            "size": args.size, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "sigma": args.sigma,
            "pool": args.pool, "seed": args.seed, "train_minutes": round(minutes, 2), "threads": torch.get_num_threads(),
            "test_nme_percent": nme["nme"], "test_frames": nme["n"], "final_loss": record["loss"][-1] if record["loss"] else None,
            "loss_curve": record["loss"]}
    write_json_atomic(out.with_suffix(".json"), info)
    print(f"FAN ({args.pool} pool, {args.size} px input) trained {args.steps} steps in {minutes:.1f} min on "
          f"{fold['train']}; test {fold['test']}: NME {nme['nme']:.2f}% of the inter-ocular distance "
          f"({nme['n']} frames; {nme['nme_mean_shape']:.2f}% for the test frames' own mean shape)")
    print(f"wrote {out} (use model.args.fan_weights={out} model.args.fan_pool={args.pool})")
    return 0
