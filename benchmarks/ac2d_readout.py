"""How AC2D's trunk features are read out decides whether it learns (issue 17).

    python benchmarks/ac2d_readout.py --data PREPARED --prefix PREFIX --readout gt --sigma 1.0 \\
        [--args '{"img_size": 104, ...}'] [--steps 300] [--every 50] [--lr 2e-3] [--threads 2]

Builds the ``ac2d`` model of ``--args`` (default: ``ac2d_synth_learn``'s narrow model at 104 px),
keeps its trunk (ConvStem, stage 1, PatchEmbed, stage 2: the shared rich feature, ``l/4`` per
side) and replaces everything after it by a fixed READOUT followed by one linear layer per AU
(zero-initialised), then trains trunk and readout with AdamW (constant lr, clip 3) on a NEW batch
of 16 training frames every step and prints the mean AU loss (AC2D's weighted BCE, Eq. 14) over
windows of ``--every`` steps: the loss on frames not yet trained on (a generalisation signal;
about 1.02 at the start, a model that only learns per-AU biases stays there).

Readouts:

- ``pool``: the mean over all tokens (what AC2D's stage 3 ends with: LayerNorm then mean);
- ``gt``: the tokens weighted by the PREDEFINED attention map of each AU (Eq. 3-5 with
  ``--sigma``, on the ``l/8`` map; the trunk's map average-pooled to it), i.e. what the constrained
  attention pools once L_a has made it equal to its target;
- ``subcentre``: the trunk's map read at each AU's two sub-centres (bilinear) and averaged.

Measured on the synthetic default preset (docs/models/ac2d.md "Learnability: the attention
target's width"): pool and gt with sigma 3 stay flat for 300 steps, gt with sigma 1 and subcentre
fall, so the width of the attention target decides what AC2D can read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

DEFAULT_ARGS = {"img_size": 104, "embed_dim": 16, "num_heads": [1, 1, 2], "depths": [1, 1, 2], "causal_dim": 32,
                "drop_path_rate": 0.0, "intervention": "none", "attention_loss": "none",
                "preprocess": {"resize": 120}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--prefix", required=True, help="a training prefix of the prepared data")
    ap.add_argument("--readout", choices=("pool", "gt", "subcentre"), required=True)
    ap.add_argument("--sigma", type=float, default=3.0, help="--readout gt: Gaussian std in l/8-map cells")
    ap.add_argument("--args", default=json.dumps(DEFAULT_ARGS), help="ac2d factory arguments as JSON")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader

    from audet.geometry import ac2d_attention_maps
    from audet.losses import weighted_bce

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, ctx, make_dataset = _loss_terms().prefix_model(args.data, args.prefix, "ac2d", json.loads(args.args))
    A, C, side = model.num_aus, model.embed_dim, model.img_size

    class Readout(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = model
            self.w = nn.Parameter(torch.zeros(A, C))
            self.b = nn.Parameter(torch.zeros(A))

        def forward(self, images, sub):
            t, H, W = self.trunk.forward_trunk(images)
            fmap = t.transpose(1, 2).reshape(t.shape[0], C, H, W)
            if args.readout == "pool":
                f = t.mean(1)[:, None, :].expand(-1, A, -1)
            elif args.readout == "gt":
                gt = ac2d_attention_maps(sub.float(), image_size=side, sigma=args.sigma)  # (B, A, l/8, l/8)
                f = torch.einsum("bahw,bchw->bac", gt, F.adaptive_avg_pool2d(fmap, gt.shape[-1]))
            else:
                grid = (sub.reshape(sub.shape[0], -1, 1, 2) + 0.5) / side * 2 - 1  # pixel centres -> [-1, 1]
                f = F.grid_sample(fmap, grid, align_corners=False)[..., 0]  # (B, C, A*2)
                f = f.reshape(fmap.shape[0], C, A, 2).mean(-1).transpose(1, 2)
            return (f * self.w).sum(-1) + self.b

    net = Readout()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    loader = DataLoader(make_dataset(), batch_size=16, shuffle=True, drop_last=True, num_workers=1,
                        generator=torch.Generator().manual_seed(args.seed))
    if args.steps > len(loader):
        raise SystemExit(f"{args.prefix} has {len(loader)} batches of 16; ask for at most that many --steps")
    label = f"readout {args.readout}" + (f" sigma {args.sigma}" if args.readout == "gt" else "")
    print(f"{label}: ac2d trunk {json.loads(args.args)}, AdamW lr {args.lr}, a new batch of 16 every step")
    net.train()
    acc, t0 = [], time.time()
    for step, batch in enumerate(loader):
        if step >= args.steps:
            break
        logits = net(batch["image"], batch["subcenters"])
        loss = weighted_bce(logits, batch["labels"], batch["mask"], ctx.au_weight, ctx.pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        acc.append(float(loss.detach()))
        if (step + 1) % args.every == 0:
            print(f"steps {step + 1 - args.every:4d}-{step + 1:4d}  au {sum(acc) / len(acc):.4f}  {time.time() - t0:.0f} s",
                  flush=True)
            acc = []
    return 0


def _loss_terms():
    """benchmarks/loss_terms.py (its ``prefix_model`` builds the model, loss context and data)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("loss_terms", Path(__file__).with_name("loss_terms.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    sys.exit(main())
