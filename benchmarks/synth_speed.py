"""Frames per second of the synthetic generator (``audet synth``), per preset.

Default: a sample of each preset (a few of its sequences, single process, rendering + camera
effects + JPEG encoding, no disk) -> frames/s per core. ``--full`` generates whole presets into a
temporary folder with ``--workers`` processes (end to end, files written) instead.

    python benchmarks/synth_speed.py                      # sample of every preset, 1 core
    python benchmarks/synth_speed.py --full --presets quick --workers 2
"""
from __future__ import annotations

import argparse
import tempfile
import time

import cv2


def sample_fps(preset: str, max_frames: int, seed: int = 0) -> tuple[int, float, float]:
    from audet.data.synth import get_config
    from audet.data.synth.episodes import calibrate
    from audet.data.synth.nuisance import encode_jpeg
    from audet.data.synth.writer import plan_sequence, render_sequence

    cfg = get_config(preset)
    t0 = time.perf_counter()
    params = calibrate(cfg, seed)
    t_cal = time.perf_counter() - t0
    done = 0
    t_render = 0.0
    n_seq = cfg.subjects * cfg.sequences
    for j in range(n_seq):
        # spread the sample over subjects (different identities, hair, glasses, nuisances)
        si, qi = (j * 7) % cfg.subjects, (j * 3) % cfg.sequences
        plan = plan_sequence(cfg, seed, si, qi, params)
        frames = list(range(min(cfg.frames, max_frames - done)))
        t1 = time.perf_counter()
        for _, img, _ in render_sequence(cfg, plan, frames):
            encode_jpeg(img, plan["nuisance"].jpeg_quality)
        t_render += time.perf_counter() - t1
        done += len(frames)
        if done >= max_frames:
            break
    return done, done / t_render, t_cal


def full_fps(preset: str, workers: int, seed: int = 0) -> tuple[int, float, float]:
    from audet.data.synth import generate, get_config

    cfg = get_config(preset)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = generate(cfg, tmp, seed=seed, workers=workers, progress=False)
        total = time.perf_counter() - t0
    return cfg.total_frames, summary["frames_per_second"], total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["test", "quick", "default", "large"])
    ap.add_argument("--frames", type=int, default=480, help="sample size per preset [480]")
    ap.add_argument("--full", action="store_true", help="generate whole presets to a temp dir")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from audet.data.synth import get_config

    if args.full:
        print("| preset | frames | size | workers | frames/s (rendering) | wall time (s) |")
        print("|---|---|---|---|---|---|")
        for p in args.presets:
            n, fps, wall = full_fps(p, args.workers)
            print(f"| {p} | {n} | {get_config(p).size} | {args.workers} | {fps:.0f} | {wall:.1f} |", flush=True)
        return
    print("| preset | subjects x sequences x frames | size | sampled frames | frames/s per core | "
          "calibration (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for p in args.presets:
        cfg = get_config(p)
        n, fps, t_cal = sample_fps(p, args.frames)
        est = cfg.total_frames / fps
        print(f"| {p} | {cfg.subjects} x {cfg.sequences} x {cfg.frames} = {cfg.total_frames} | {cfg.size} | "
              f"{n} | {fps:.0f} (whole preset ~{est:.0f} s on 1 core) | {t_cal:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
