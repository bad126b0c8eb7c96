"""Decoded-and-augmented frames per second through the training DataLoader.

Builds a toy prepared directory of 200x200 JPEG faces (``audet.data.toy.make_toy_prepared``,
in a temporary folder) or reads ``--root``, then iterates ``AUDataset`` + ``TrainTransform``
(random crop 176, flip, colour jitter, normalisation, sub-centres) through a shuffled
``torch.utils.data.DataLoader`` (batch 32, default collate) with 0, 1 and 2 workers, for single
frames and for 3-frame offset clips, with torch's ``default_collate`` and with
``audet.data.images.collate`` (numpy stacking in the main process). After one warm-up epoch (worker start-up, page cache) it
times whole epochs until ``--seconds`` have passed and prints a table; ``frames/s`` counts every
decoded frame (3 per clip sample). A per-stage breakdown of one sample (single process) follows.

    python benchmarks/data_throughput.py                       # 320 toy frames, workers 0 1 2
    python benchmarks/data_throughput.py --root DIR --prefix BP4D_combine_1_2 --workers 0 2
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def build_toy(root: Path, frames: int, seed: int = 0) -> tuple[Path, str]:
    from audet.data.toy import make_toy_prepared

    n_subjects, n_sequences = 8, 4
    per_seq = max(3, -(-frames // (n_subjects * n_sequences)))
    meta = make_toy_prepared(root, n_subjects=n_subjects, n_sequences=n_sequences, n_frames=per_seq, n_parts=1,
                             seed=seed)
    return root, f"{meta['dataset']}_part1"


def default_prefix(root: Path) -> str:
    from audet.data.meta import read_dataset_meta

    meta = read_dataset_meta(root)
    if meta.get("folds"):
        return meta["folds"][0]["train"]
    raise SystemExit(f"{root}/dataset.json has no folds: pass --prefix")


def measure(root: Path, prefix: str, workers: int, clip: dict | None, batch_size: int, seconds: float,
            seed: int = 0, collate: str = "default") -> dict:
    import torch
    from torch.utils.data import DataLoader

    from audet.data.dataset import AUDataset
    from audet.data.images import collate as audet_collate
    from audet.data.images import worker_init
    from audet.data.transforms import TrainTransform

    collate_fn = {"default": None, "audet": audet_collate}[collate]
    torch.manual_seed(seed)
    ds = AUDataset(root, prefix, transform=TrainTransform(), clip=clip)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, worker_init_fn=worker_init,
                        persistent_workers=workers > 0, drop_last=False, collate_fn=collate_fn)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    for _ in it:  # rest of the warm-up epoch
        pass
    samples = frames = batches = 0
    t0 = time.perf_counter()
    while True:
        for batch in loader:
            n = batch["image"].shape[0]
            samples += n
            frames += n * (batch["image"].shape[1] if batch["image"].ndim == 5 else 1)
            batches += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    del loader
    return {
        "mode": "frames" if clip is None else f"clip {clip}",
        "workers": workers,
        "collate": collate,
        "samples_per_s": samples / elapsed,
        "frames_per_s": frames / elapsed,
        "ms_per_batch": 1000 * elapsed / batches,
        "first_batch_s": t_first,
        "dataset_len": len(ds),
        "batch_shape": tuple(first["image"].shape),
    }


def stage_breakdown(root: Path, prefix: str, n: int = 200) -> dict:
    """Mean milliseconds per single-frame sample of each stage, in this process (1 thread)."""
    import cv2
    import numpy as np
    import torch

    from audet.data.dataset import AUDataset
    from audet.data.images import read_image
    from audet.data.transforms import TrainTransform
    from audet.facs import au_subcenters

    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    ds = AUDataset(root, prefix, transform=TrainTransform())
    idx = [i % len(ds) for i in range(n)]
    t = ds.transform
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    imgs = [read_image(ds.image_path(i))[None] for i in idx]
    out["decode (cv2.imread + BGR->RGB)"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    res = [t(img, ds.landmarks_all[i][None]) for img, i in zip(imgs, idx)]
    out["crop + flip + jitter + normalise"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _, lm in res:
        au_subcenters(np.asarray(lm), ds.aus)
    out["sub-centres"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in idx:
        ds[i]
    out["whole __getitem__"] = (time.perf_counter() - t0) / n
    batch = [ds[i] for i in idx[:32]]
    t0 = time.perf_counter()
    for _ in range(10):
        torch.utils.data.default_collate(batch)
    out["collate (per sample)"] = (time.perf_counter() - t0) / (10 * 32)
    return {k: 1000 * v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="prepared directory (default: build a toy one in a temp folder)")
    ap.add_argument("--prefix", help="list prefix (default: the toy list, or fold 0's training prefix)")
    ap.add_argument("--frames", type=int, default=320, help="toy frames to build (default 320)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--offsets", type=int, nargs="+", default=[-2, 0, 2], help="clip offsets (default -2 0 2)")
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum timed seconds per row (default 4)")
    ap.add_argument("--no-clips", action="store_true")
    ap.add_argument("--collate", nargs="+", choices=["default", "audet"], default=["default", "audet"],
                    help="collate_fn: torch's default_collate and/or audet.data.images.collate (numpy stacking "
                         "in the main process); 'audet' rows are run for 0 workers only (in workers it IS "
                         "default_collate)")
    ap.add_argument("--main-threads", type=int,
                    help="torch.set_num_threads in the main process (it collates when workers=0; default: torch's)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()

    import torch

    if args.main_threads:
        torch.set_num_threads(args.main_threads)

    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            t0 = time.perf_counter()
            root, prefix = build_toy(Path(tmp) / "toy", args.frames)
            print(f"built {root} in {time.perf_counter() - t0:.1f} s")
        else:
            root, prefix = args.root, args.prefix or default_prefix(args.root)
        prefix = args.prefix or prefix
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
              f"batch {args.batch_size}, TrainTransform (crop 176, flip, jitter), prefix {prefix}, "
              f"load average {os.getloadavg()[0]:.2f}")
        modes = [None] if args.no_clips else [None, {"offsets": list(args.offsets)}]
        rows = []
        print("| input | workers | collate | samples/s | frames/s | ms/batch | first batch (s) |")
        print("|---|---|---|---|---|---|---|")
        for clip in modes:
            for w in args.workers:
                for col in args.collate:
                    if col == "audet" and w > 0 and "default" in args.collate:
                        continue
                    r = measure(root, prefix, w, clip, args.batch_size, args.seconds, collate=col)
                    rows.append(r)
                    label = ("single frames" if clip is None
                             else f"{len(clip['offsets'])}-frame clips {clip['offsets']}")
                    print(f"| {label} | {w} | {col} | {r['samples_per_s']:.0f} | {r['frames_per_s']:.0f} | "
                          f"{r['ms_per_batch']:.1f} | {r['first_batch_s']:.2f} |", flush=True)
        print(f"\n{rows[0]['dataset_len']} samples per epoch, batch {rows[0]['batch_shape']}, "
              f"load average now {os.getloadavg()[0]:.2f}")
        print("\nper single-frame sample, main process, 1 thread:")
        for k, v in stage_breakdown(root, prefix).items():
            print(f"  {k:36s} {v:6.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
