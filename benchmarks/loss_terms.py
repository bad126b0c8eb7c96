"""Per-term gradient diagnostics of a registered model's loss on fixed training frames.

    python benchmarks/loss_terms.py --model ac2d --data PREPARED --prefix PREFIX \\
        [--args '{"img_size": 64}'] [--steps 100] [--lr 3e-3] [--clip 3.0] [--batch 16] [--every 10]
        [--fresh] [--optimizer adamw|sgd] [--weight-decay WD] [--clip-length T]
        [--weights RUN/stages/0_vae/last.safetensors] [--stage detector]

``--fresh``: instead of cycling fixed batches, every step takes a NEW batch of PREFIX (shuffled,
seeded, none seen twice) and every ``--every`` steps prints the MEAN of each term over the last
window, the logits' spread and the steps clipped so far. The loss on a batch the model has not yet
trained on is a generalisation signal: a model that only learns its per-AU biases keeps the
weighted BCE near its starting value (about 1.0 on the synthetic default preset), one that finds
AU evidence sees it fall within a few hundred steps (issue 17: resnet_tiny, ESCDA and CISNet do;
docs/benchmarks.md "Learnability").

Builds the model (``create_model`` with the data's :class:`~audet.models.base.DataInfo`), takes the
first ``--batch`` x ``--batches`` frames of PREFIX with the evaluation transform (no augmentation)
and runs AdamW steps (no weight decay, constant lr) over them in a fixed order, printing every
``--every`` steps: each loss term's value and the norm of its own gradient (``autograd.grad`` of
the term alone over all trainable parameters), the total gradient norm before clipping, how many
steps so far were clipped, and the spread of the logits (std over the batch, averaged over AUs;
mean |logit|). A term whose gradient dwarfs the AU term, a clip that acts on most steps, or logits
that do not spread across images show here within a few dozen steps (issue 13's AC2D finding,
issue 17's learnability). The engine's hooks (data passes, stages) are not run, except that
``--stage NAME`` calls the model's ``on_stage_start(NAME)`` (its loss terms and frozen parts for
that stage) and ``--weights FILE`` starts from a checkpoint of the same model (e.g. AUNet's
detector stage from the run's trained label VAE).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--args", default="{}", help="factory arguments as JSON")
    ap.add_argument("--data", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=3.0, help="gradient norm clip (0 = none)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches cycled through")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="a new batch every step; print window means")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                    help="adamw (default) or sgd with Nesterov momentum 0.9")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip-length", type=int, default=None,
                    help="clips of this many frames (disjoint windows; --batch clips a step); 0: single "
                         "frames; default: the model's own clip")
    ap.add_argument("--weights", default=None, help="start from this checkpoint's weights (same model and AUs)")
    ap.add_argument("--stage", default=None, help="call the model's on_stage_start(STAGE) first")
    args = ap.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader, Subset

    from audet.models.base import load_pretrained_parts

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, ctx, make_dataset = prefix_model(args.data, args.prefix, args.model, json.loads(args.args))
    load_pretrained_parts(model)
    if args.weights:
        from audet.models.checkpoint import load_weights

        load_weights(model, args.weights)
    if args.stage:
        model.on_stage_start(args.stage)
    ds = make_dataset(clip=_clip(model, args.clip_length))
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    model.train()
    head = (f"{args.model} {json.loads(args.args)}: {sum(p.numel() for p in params):,} trainable parameters, "
            f"{args.optimizer} lr {args.lr} wd {args.weight_decay}, clip {args.clip or 'none'}")
    if args.fresh:
        return _fresh(model, ds, ctx, params, opt, args, head)
    n = min(len(ds), args.batch * args.batches)
    batches = list(DataLoader(Subset(ds, range(n)), batch_size=args.batch, shuffle=False))
    clipped = 0
    print(f"{head}, {n} frames in {len(batches)} batches")
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        out = model(batch["image"])
        terms = model.loss_terms(out, batch, ctx)
        report = step % args.every == 0 or step == args.steps - 1
        norms = _term_norms(terms, params) if report else {}
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        total = float(torch.nn.utils.clip_grad_norm_(params, args.clip if args.clip > 0 else float("inf")))
        clipped += int(args.clip > 0 and total > args.clip)
        opt.step()
        if report:
            lg = out.logits.detach().float().reshape(-1, out.logits.shape[-1])
            spread = float(lg.std(0).mean())
            parts = "  ".join(f"{k} {float(v):.4f}" + _norm_text(norms, k) for k, v in terms.items())
            print(f"step {step:4d}  {parts}  total |g| {total:.3g}  clipped {clipped}/{step + 1}  "
                  f"logit std {spread:.4f}  mean |logit| {float(lg.abs().mean()):.3f}", flush=True)
    return 0


def _term_norms(terms: dict, params) -> dict[str, float]:
    """The norm of each loss term's own gradient over ``params`` (``autograd.grad`` of the term
    alone, graph kept); terms that carry no gradient are left out."""
    import torch

    norms = {}
    for name, t in terms.items():
        if t.requires_grad:
            g = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
            norms[name] = float(torch.sqrt(sum((x.float() ** 2).sum() for x in g if x is not None)))
    return norms


def _norm_text(norms: dict, name: str) -> str:
    return f" (|g| {norms[name]:.3g})" if name in norms else ""


def prefix_model(data, prefix: str, name: str, model_args: dict):
    """``(model, loss context, make_dataset)`` for training on ``prefix`` of the prepared ``data``:
    the model ``name`` built with the prefix's :class:`~audet.models.base.DataInfo` (AUs, subjects,
    label statistics), its loss context from the prefix's labels, and ``make_dataset(**kw)`` giving
    the prefix's :class:`~audet.data.AUDataset` with the model's evaluation transform (no
    augmentation). Shared by the benchmarks that train on never-seen batches (``ac2d_readout.py``)."""
    from audet.data import AUDataset
    from audet.data.dataset import subject_vocabulary
    from audet.data.listfile import read_list
    from audet.data.meta import data_aus
    from audet.data.transforms import EvalTransform
    from audet.engine.data import label_arrays, label_stats
    from audet.models import create_model
    from audet.models.base import DataInfo

    aus = data_aus(data, required=True)
    lf = read_list(data, prefix)
    y, m = label_arrays(lf.labels)
    subjects = subject_vocabulary(data, [prefix])
    frame_subjects = [i.subject for i in lf.info]
    info = DataInfo(aus=aus, subjects=subjects, train_subjects=sorted(set(frame_subjects)),
                    label_stats=label_stats(y, m, frame_subjects))
    model = create_model(name, aus=aus, data=info, **model_args)

    def make_dataset(**kw):
        return AUDataset(data, prefix, aus=aus, transform=EvalTransform.from_preprocess(model.preprocess),
                         subject_vocab=subjects, **kw)

    return model, model.loss_context(info, y, m), make_dataset


def _clip(model, length):
    if length is None:
        return model.preprocess.get("clip")
    return {"length": int(length), "windows": "disjoint"} if length > 1 else None


def _fresh(model, ds, ctx, params, opt, args, head) -> int:
    """``--fresh``: one never-seen batch per step; window means of every term (see the docstring)."""
    import time

    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(args.seed))
    if args.steps > len(loader):
        raise SystemExit(f"--fresh: {args.prefix} has {len(loader)} batches of {args.batch}; ask for at most that many --steps")
    print(f"{head}, a new batch of {args.batch} every step (window means over {args.every} steps)")
    sums: dict[str, float] = {}
    spread, clipped, t0 = 0.0, 0, time.time()
    for step, batch in enumerate(loader):
        if step >= args.steps:
            break
        out = model(batch["image"])
        terms = model.loss_terms(out, batch, ctx)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        # each term's own gradient norm on the window's last batch
        norms = _term_norms(terms, params) if (step + 1) % args.every == 0 else {}
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        total = float(torch.nn.utils.clip_grad_norm_(params, args.clip if args.clip > 0 else float("inf")))
        clipped += int(args.clip > 0 and total > args.clip)
        opt.step()
        spread += float(out.logits.detach().float().reshape(-1, out.logits.shape[-1]).std(0).mean())
        if (step + 1) % args.every == 0:
            parts = "  ".join(f"{k} {v / args.every:.4f}" + _norm_text(norms, k) for k, v in sums.items())
            print(f"steps {step + 1 - args.every:4d}-{step + 1:4d}  {parts}  logit std {spread / args.every:.4f}  "
                  f"clipped {clipped}/{step + 1}  {time.time() - t0:.0f} s", flush=True)
            sums, spread = {}, 0.0
    return 0


if __name__ == "__main__":
    sys.exit(main())
