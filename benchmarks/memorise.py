"""Memorisation check: can each registered model fit a handful of labelled training frames?

    python benchmarks/memorise.py --models PATTERN [--frames N] [--steps S] [--lr LR] [--keep DIR]

Makes its own small synthetic release (``audet synth --preset test --frames 24``: 4 subjects x 2
sequences x 24 frames, prepared as BP4D), takes N frames (contiguous runs of every sequence) as
BOTH the training and the scored set, and trains each model matching PATTERN (fnmatch over
``audet models``) through the engine (``audet.engine.fit``: the model's loss terms, hooks, frozen
parts and its family's stage structure, e.g. AUNet's VAE stage then the detector, CISNet's
collect-only epoch) for about S optimiser steps. The scored F1 uses the evaluation transform
(centre crop, eval mode), so a train-mode / eval-mode mismatch (BatchNorm statistics) shows.

Every model is built with its family's synthetic config's model arguments (the loss weights and
initialisation that config documents) overridden by its registry ``small_config`` (the scale),
the 200 px aligned face resized to the model's crop size (``preprocess.resize``), so a 64 px model sees the whole face, not a window. The optimiser is the same for every
model: AdamW (``--lr``, no weight decay, constant lr, no warm-up), clipping as the family's
synthetic config sets it. No augmentation (no flip, no colour jitter, no random crop): the
question is whether the model and its loss can fit fixed inputs, not whether it generalises.

One line per model: name, parameters, AUs scored, steps, seconds, final training loss, and its
training F1 (mean F1-frame over the AUs that have at least one positive among the N frames).
Exit status 1 when any model stays below ``--target`` (95).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: the packaged synthetic config whose stage structure (and clipping) a model family trains with
FAMILY_CONFIGS = (("ac2d", "ac2d_synth_quick"), ("aar", "aar_synth_quick"), ("aunet", "aunet_synth_quick"),
                  ("cisnet", "cisnet_synth_quick"), ("escda", "escda_synth_quick"))
PREFIX = "MEMORISE"
_AUS = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]


def family_config(name: str) -> str:
    for fam, cfg in FAMILY_CONFIGS:
        if name.startswith(fam):
            return cfg
    return "resnet_tiny_synth"


def make_release(root: Path, frames: int, seed: int = 0) -> Path:
    """A synthetic release prepared as BP4D under ``root``, plus the list prefix ``MEMORISE`` of
    ``frames`` frames: equal contiguous runs from the start of every sequence."""
    import contextlib
    import io
    import warnings

    from audet.cli import main as audet
    from audet.data.listfile import read_list, write_list

    raw, prep = root / "raw", root / "prepared"
    if not (prep / "dataset.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = audet(["synth", "--preset", "test", "--frames", "24", "--out", str(raw), "--seed", str(seed)])
            rc = rc or audet(["prepare", "BP4D", "--raw", str(raw), "--out", str(prep)])
        if rc:
            raise SystemExit(f"making the synthetic release in {root} failed (exit status {rc})")
    lf = read_list(prep, "BP4D_all")
    seqs: dict[tuple, list[int]] = {}
    for i, info in enumerate(lf.info):
        seqs.setdefault((info.subject, info.sequence), []).append(i)
    per = max(1, math.ceil(frames / len(seqs)))
    if per > min(len(v) for v in seqs.values()):
        raise SystemExit(f"--frames {frames}: at most {len(seqs) * min(len(v) for v in seqs.values())} frames here")
    idx = [i for k in sorted(seqs) for i in seqs[k][:per]][:frames]
    with warnings.catch_warnings():  # an AU without a positive among the N frames is expected here
        warnings.simplefilter("ignore")
        write_list(prep, PREFIX, [lf.paths[i] for i in idx], lf.landmarks[idx], lf.labels[idx])
    return prep


def model_args(name: str) -> tuple[dict, dict]:
    """The family's synthetic config's model arguments (e.g. AC2D's lambda_a and intervention
    start, AUNet's random FAN), overridden by the registry's small config, with ``preprocess.resize`` = the crop: the whole aligned face,
    shrunk to the model's input, is the input in training and scoring alike (no random crop).
    Returns ``(factory arguments, the model's preprocessing)``."""
    from audet.models import create_model, model_info
    from audet.models.registry import _REGISTRY, _accepts

    from audet.engine.config import load_config

    factory = _REGISTRY[name]
    family = dict(load_config(family_config(name))["model"].get("args") or {})
    family.pop("preprocess", None)
    # only the family config's arguments this factory takes (resnet18 has no width, ...)
    family = {k: v for k, v in family.items() if _accepts(factory, k)}
    args = {**family, **dict(model_info(name).get("small_config") or {})}
    pre = create_model(_probe_name(name), aus=_AUS, **args).preprocess
    resize = int(pre.get("crop_size", 176))
    if _accepts(factory, "preprocess"):
        args = _resized(args, resize)
        pre = create_model(_probe_name(name), aus=_AUS, **args).preprocess
    elif args.get("members"):  # an ensemble takes its preprocessing from its members: resize each
        args["members"] = [{**mm, "args": _resized(dict(mm.get("args") or {}), resize)} for mm in args["members"]]
        pre = create_model(_probe_name(name), aus=_AUS, **args).preprocess
    return args, dict(pre)


def _resized(args: dict, resize: int) -> dict:
    """``args`` with ``preprocess.resize`` set (the whole face shrunk to the crop)."""
    return {**args, "preprocess": {**dict(args.get("preprocess") or {}), "resize": resize}}


def _probe_name(name: str) -> str:
    """The registered name to build for a look at ``name``'s parameters and preprocessing (a model
    that needs training subjects is probed through its ``_base`` twin)."""
    from audet.models import model_info

    return name if not model_info(name).get("needs_subjects") else f"{name}_base"


def _stages_for(stages, name: str, args: dict):
    """The family config's stages, or None where one of their ``trainable``/``frozen`` patterns
    matches no parameter of ``name`` (a variant without that part, e.g. AUNet's ``aunet_fan`` and
    ``aunet_tdn`` have no VAE: they train in one stage, as ``stages=null`` does for them)."""
    from fnmatch import fnmatch

    from audet.models import create_model

    if not stages:
        return stages
    names = [n for n, _ in create_model(_probe_name(name), aus=_AUS, **args).named_parameters()]
    patterns = [p for s in stages for key in ("trainable", "frozen") for p in (s.get(key) or [])]
    if all(any(fnmatch(n, p) for n in names) for p in patterns):
        return stages
    return None


def train_one(name: str, prep: Path, out: Path, *, steps: int, lr: float, batch: int, frames: int, seed: int,
              eval_clip: int | None = None) -> dict:
    from audet.engine.config import load_config
    from audet.engine.evaluate import evaluate
    from audet.engine.fit import fit
    from audet.models import model_info

    base = family_config(name)
    args, pre = model_args(name)
    from audet.data import AUDataModule

    dm = AUDataModule(prep, PREFIX, PREFIX, batch_size=batch, num_workers=0, val_fraction=0.0, seed=seed,
                      subjects="global", augment={"flip_p": 0.0, "brightness": 0.0, "contrast": 0.0})
    dm.use_preprocess(pre)  # what fit() does for the data modules it builds itself
    dm.setup("fit")
    n_items = len(dm.train_dataset)  # frames, or clips for a clip model
    bs = min(batch, n_items)
    dm.batch_size = bs
    per_epoch = math.ceil(n_items / bs)
    cfg = load_config(base, [f"model.name={name}", f"data.root={prep}", "data.fold=null",
                             f"data.train_prefix={PREFIX}", f"data.test_prefix={PREFIX}", "data.val_fraction=0",
                             f"data.batch_size={bs}", "data.num_workers=0", "data.clip=null", f"seed={seed}",
                             "optim.name=adamw", f"optim.lr={lr}", "optim.scale_lr=false", "optim.weight_decay=0",
                             "optim.warmup_epochs=0", "optim.schedule=constant", "trainer.limit_train_batches=null",
                             "trainer.limit_val_batches=null", "trainer.limit_test_batches=null",
                             "trainer.tensorboard=false", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
                             "selection.test_after_fit=false"])
    cfg["model"]["args"] = args
    cfg["output"]["dir"] = str(out / name)
    cfg["output"]["resume"] = False
    stages = _stages_for(cfg.get("stages"), name, args)
    cfg["stages"] = stages
    epochs = max(1, math.ceil(steps / per_epoch))
    if stages:
        train_stages = [s for s in stages if not s.get("collect_only")]
        for s in stages:
            s["optim"] = {}
            if not s.get("collect_only"):
                s["epochs"] = max(1, math.ceil(epochs / len(train_stages)))
        cfg["trainer"]["max_epochs"] = sum(int(s["epochs"]) for s in stages)
    else:
        cfg["trainer"]["max_epochs"] = epochs
    t = time.perf_counter()
    fit(cfg, datamodule=dm, verbose=False)
    seconds = time.perf_counter() - t
    res = evaluate(out / name / "last.safetensors", prep, PREFIX,
                   clip={"length": int(eval_clip)} if eval_clip else None)
    per_au = res["per_au"]
    y = _labels(prep, res["aus"])
    scored = [a for j, a in enumerate(res["aus"]) if (y[:, j] == 1).any()]
    f1 = 100.0 * float(np.mean([per_au[a] for a in scored])) if scored else float("nan")
    loss = _last_loss(out / name)
    n_steps = (sum(int(s["epochs"]) for s in stages if not s.get("collect_only")) if stages
               else cfg["trainer"]["max_epochs"]) * per_epoch
    return {"model": name, "params": _n_params(out / name / "last.safetensors"), "aus": len(scored),
            "steps": n_steps, "seconds": seconds, "loss": loss, "f1": f1, "family": base,
            "random_parts": [k for k, v in res.get("pretrained", {}).items() if str(v).startswith("random")],
            "info": model_info(name).get("description", "")}


def _labels(prep: Path, aus) -> np.ndarray:
    from audet.data.listfile import read_list

    return np.asarray(read_list(prep, PREFIX).labels)


def _n_params(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))  # noqa: SIM118 (safe_open is not iterable)


def _last_loss(run: Path) -> float:
    import pandas as pd

    files = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return float("nan")
    d = pd.read_csv(files[-1])
    col = "train/loss_step" if "train/loss_step" in d else "train/loss"
    v = d[col].dropna() if col in d else []
    return float(v.iloc[-5:].mean()) if len(v) else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="*", help="fnmatch pattern(s) over registered names, comma-separated")
    ap.add_argument("--frames", type=int, default=64, help="labelled training frames (default 64)")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps, about (default 300)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--target", type=float, default=95.0, help="training F1 below this fails (default 95)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="work folder to keep (release + runs); default a temporary one")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--eval-clip", type=int, default=None,
                    help="score clip models in disjoint windows of this many frames instead of their own clip "
                         "(1: frame by frame; e.g. for a model whose output is a clip mean, T^avg)")
    args = ap.parse_args(argv)

    import logging

    import torch

    from audet.models import list_models

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    names = sorted({n for pat in args.models.split(",") for n in list_models(pat.strip())})
    if not names:
        raise SystemExit(f"no registered model matches {args.models!r} (see `audet models`)")
    tmp = None
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="audet_memorise_")
        work = Path(tmp.name)
    prep = make_release(work / "data", args.frames, args.seed)
    failed = []
    print(f"memorise: {args.frames} frames, ~{args.steps} steps of AdamW lr {args.lr}, target F1 >= {args.target}")
    for name in names:
        try:
            r = train_one(name, prep, work / "runs", steps=args.steps, lr=args.lr, batch=args.batch,
                          frames=args.frames, seed=args.seed, eval_clip=args.eval_clip)
        except Exception as exc:  # noqa: BLE001 - one line per model, whatever went wrong
            print(f"{name:18s} ERROR {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", flush=True)
            failed.append(name)
            continue
        ok = r["f1"] >= args.target
        note = f" (random {', '.join(r['random_parts'])})" if r["random_parts"] else ""
        print(f"{name:18s} {r['params']:>10,d} params  {r['aus']:2d} AUs  {r['seconds']:6.1f} s  "
              f"loss {r['loss']:.3f}{note}  {'ok  ' if ok else 'FAIL'}  train F1 {r['f1']:5.1f}  steps {r['steps']}"
              + (f"  (scored in windows of {args.eval_clip})" if args.eval_clip else ""),
              flush=True)
        if not ok:
            failed.append(name)
    if tmp is not None:
        tmp.cleanup()
    if failed:
        print(f"below {args.target}: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
