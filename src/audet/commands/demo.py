"""``audet demo``: the main job on the built-in default, end to end on synthetic data."""
from __future__ import annotations

import argparse
import time

HELP = "end-to-end demonstration: synthesise, prepare, train a small AC2D, evaluate, visualise"
DESCRIPTION = """\
Runs the whole pipeline on the built-in synthetic benchmark, with no download and no GPU:

  1. audet synth --preset quick           FACS-like face videos with known AU labels (BP4D layout)
  2. audet prepare BP4D                   align, 68->49 landmarks, list files, subject-exclusive folds
  3. audet train ac2d_synth_quick         a narrow AC2D on fold 0, selected on held-out training subjects
  4. audet evaluate                       per-AU F1-frame on the test fold (Markdown + CSV)
  5. audet visualize                      average constrained self-attention of each AU (AC2D Fig. 5)

Outputs go under --out (default runs/demo): raw/, prepared/, train/, f1.md, f1.csv, attention.png.
A step whose output already exists is skipped, so an interrupted demo resumes where it stopped
(training itself resumes from its last epoch). Takes about 10 minutes on a 2-core CPU.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--preset", default="quick", help="synthetic preset (default: %(default)s)")
    p.add_argument("--config", default="ac2d_synth_quick", help="training config (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the training run")
    p.add_argument("--workers", type=int, default=2, help="worker processes for synthesis, preparation, loading")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra training config overrides")


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audet.cli import main
    from audet.data.meta import read_dataset_meta

    out = Path(args.out)
    raw, prepared, train = out / "raw", out / "prepared", out / "train"
    t0 = time.perf_counter()

    t = _step("1/5 synthesise")
    if (raw / "synth_meta.json").is_file():
        print(f"{raw} exists; skipped")
    elif main(["synth", "--preset", args.preset, "--out", str(raw), "--seed", str(args.seed),
               "--workers", str(args.workers)]):
        return 1
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("2/5 prepare (the BP4D preparation path)")
    if main(["prepare", "BP4D", "--root", str(raw), "--out", str(prepared), "--workers", str(args.workers),
             "--no-progress"]):
        return 1
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("3/5 train")
    meta = read_dataset_meta(prepared)
    overrides = [f"data.root={prepared}", f"data.dataset={meta['dataset']}", "data.fold=0", f"seed={args.seed}",
                 f"data.num_workers={args.workers}", *args.overrides]
    if not (train / "results.json").is_file():
        if main(["train", args.config, *overrides, "--out", str(train)]):
            return 1
    else:
        print(f"{train}/results.json exists; skipped")
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("4/5 evaluate on the test fold")
    test_prefix = meta["folds"][0]["test"]
    ckpt = train / "best.safetensors"
    if main(["evaluate", str(ckpt), "--data", str(prepared), "--prefix", test_prefix, "--out", str(out / "f1")]):
        return 1
    print(f"({time.perf_counter() - t:.0f} s)")

    t = _step("5/5 visualise attention")
    from audet.data.listfile import read_list

    lists = read_list(prepared, test_prefix)
    labels = lists.labels
    # four test frames with several active AUs, from different sequences where possible
    order = sorted(range(len(lists)), key=lambda i: (-int((labels[i] == 1).sum()), i))
    picked, seen = [], set()
    for i in order:
        seq = lists.info[i].sequence
        if seq not in seen:
            picked.append(i)
            seen.add(seq)
        if len(picked) == 4:
            break
    images = [str(lists.image_path(i)) for i in picked]
    if main(["visualize", str(ckpt), *images, "--out", str(out / "attention.png")]):
        return 1

    print(f"\n=== done in {(time.perf_counter() - t0) / 60:.1f} min ===")
    print(f"F1 table:        {out / 'f1.md'} (and .csv)")
    print(f"attention:       {out / 'attention.png'}")
    print(f"training run:    {train} (report.md, logs/, best.safetensors)")
    return 0
