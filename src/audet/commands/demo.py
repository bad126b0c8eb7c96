"""``audet demo``: the main job on the built-in default, end to end on synthetic data."""
from __future__ import annotations

import argparse
import time

HELP = "end-to-end demonstration: synthesise, prepare, train a small model, evaluate against the prior"
DESCRIPTION = """\
Runs the whole pipeline on the built-in synthetic benchmark, with no download and no GPU:

  1. synthesise (as `audet synth --preset quick`)   FACS-like face videos with known AU labels (BP4D layout)
  2. prepare (as `audet prepare BP4D`)             align, 68->49 landmarks, list files, subject-exclusive folds
  3. train (as `audet train resnet_tiny_demo`)     a narrow ResNet on fold 0, selected on held-out training subjects
  4. evaluate (as `audet evaluate --vs-prior`)     per-AU F1-frame on the test fold (Markdown + CSV) and the
                                                   model against predicting every AU present, with a bootstrap CI
  5. visualise (as `audet visualize`)              with --config ac2d_synth_quick (a narrow AC2D, which does not
                                                   beat the prior in this time): each AU's constrained
                                                   self-attention (AC2D Fig. 5) beside the frame's ground truth

Outputs go under --out (default runs/demo): raw/, prepared/, train/, f1.md, f1.csv, f1.png (per-AU
F1 of the model beside the all-present prior), (attention.png). A step whose output already exists
is skipped, so an interrupted demo resumes where it stopped (training itself resumes from its last
epoch). OUT/audet-manifest.json records the preset, seed, config and overrides: a demo with other
ones into the same --out is refused before anything is written (--overwrite starts afresh there).
Takes about 10 minutes on a 2-core CPU.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import add_num_workers

    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--preset", default="quick", help="synthetic preset (default: %(default)s)")
    p.add_argument("--config", default="resnet_tiny_demo",
                   help="training config (default: %(default)s; ac2d_synth_quick trains a narrow AC2D and draws its attention)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the training run")
    add_num_workers(p, 2, "worker processes for synthesis, preparation, loading")
    from audet.commands._common import add_overwrite

    add_overwrite(p, "start afresh: remove raw/, prepared/, train/ and the tables first (needed for an --out made with another preset, seed, config or overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra training config overrides (optional)")


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _pick_frames(lists, n: int = 4) -> list[int]:
    """``n`` test frames with the most active AUs, from different sequences where possible."""
    labels = lists.labels
    order = sorted(range(len(lists)), key=lambda i: (-int((labels[i] == 1).sum()), i))
    picked, seen = [], set()
    for i in order:
        seq = lists.info[i].sequence
        if seq not in seen:
            picked.append(i)
            seen.add(seq)
        if len(picked) == n:
            break
    return picked


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audet.commands._common import epoch_lines
    from audet.data.meta import read_dataset_meta
    from audet.data.synth import generate, get_config
    from audet.engine.config import load_config, parse_overrides

    out = Path(args.out)
    raw, prepared, train = out / "raw", out / "prepared", out / "train"
    t0 = time.perf_counter()
    # every input is checked before the first step: preset, config and overrides
    synth_cfg = get_config(args.preset)
    overrides = {"data.root": str(prepared), "data.fold": 0, "seed": args.seed,
                 "data.num_workers": args.num_workers, "output.dir": str(train),
                 **parse_overrides(args.overrides or [])}
    cfg = load_config(args.config, overrides)
    # what made OUT is checked before anything is written there
    from audet.utils.manifest import check_output, write_manifest

    inputs = {"options": {"preset": args.preset, "seed": args.seed, "config": args.config,
                          "overrides": sorted(args.overrides or [])}}
    if check_output(out, inputs, command="demo", fresh=args.overwrite) == "fresh" or args.overwrite:
        import shutil

        for name in ("raw", "prepared", "train"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in ("f1.md", "f1.csv", "f1.png", "attention.png"):
            if (out / name).exists():
                (out / name).unlink()
    write_manifest(out, inputs, command="demo")

    t = _step("1/5 synthesise")
    if (raw / "synth_meta.json").is_file():
        print(f"{raw} exists; skipped")
    else:
        generate(synth_cfg, raw, seed=args.seed, workers=args.num_workers, log=print)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("2/5 prepare (the BP4D preparation path)")
    from audet.data.prepare import prepare_dataset

    prepare_dataset("BP4D", raw, prepared, workers=args.num_workers, progress=False)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("3/5 train")
    meta = read_dataset_meta(prepared)
    if not (train / "results.json").is_file():
        from audet.engine.fit import fit

        cfg["data"]["dataset"] = meta["dataset"]
        fit(cfg, callbacks=[epoch_lines()])
    else:
        print(f"{train}/results.json exists; skipped")
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("4/5 evaluate on the test fold")
    from audet.engine.evaluate import evaluate
    from audet.metrics import to_markdown

    test_prefix = meta["folds"][0]["test"]
    ckpt = train / "best.safetensors"
    res = evaluate(ckpt, prepared, test_prefix, out=out / "f1", vs_prior=1000)
    print(to_markdown(res["table"]), end="")
    print(f"{res['n']} frames; wrote {out / 'f1.md'} and {out / 'f1.csv'}")
    print(res["prior_text"])  # the model against predicting every AU present, with a bootstrap CI
    from audet.viz import f1_bars

    fig = f1_bars(res, out / "f1.png", title=f"{cfg['name']} on the test fold ({res['n']} frames)")
    print(f"wrote {fig}")
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("5/5 visualise attention")
    from audet.data.listfile import read_list
    from audet.models.checkpoint import load_checkpoint
    from audet.viz import attention_panels

    lists = read_list(prepared, test_prefix)
    images = [str(lists.image_path(i)) for i in _pick_frames(lists)]
    model = load_checkpoint(ckpt)
    try:
        path = attention_panels(model, images, out / "attention.png")
        print(f"wrote {path} ({time.perf_counter() - t:.0f} s)")
    except ValueError as exc:  # a model without attention maps (the default resnet_tiny)
        print(f"skipped: {exc} (`audet demo --config ac2d_synth_quick` draws AC2D's attention)")

    print(f"\n=== done in {(time.perf_counter() - t0) / 60:.1f} min ===")
    print(f"F1 table:        {out / 'f1.md'} (and .csv; with the all-present prior's F1 and the CI)")
    print(f"F1 figure:       {out / 'f1.png'} (per AU, the model beside the all-present prior)")
    if (out / "attention.png").is_file():
        print(f"attention:       {out / 'attention.png'} (ground truth beside each prediction)")
    print(f"training run:    {train} (report.md, logs/, best.safetensors)")
    return 0
