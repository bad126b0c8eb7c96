"""End-to-end inference speed of `audet predict` on a generated 640x360 video, split by stage, and
peak memory against video length.

Speed: for each model (random weights at full size; the speed does not depend on the weights) and
each backend (eager PyTorch, onnxruntime), the video goes through audet.Detector and the time spent
in decode, face detection (MTCNN), landmarks (dlib 68 points), alignment (+ the checkpoint's
transform) and the model is reported per frame, with end-to-end frames per second.

Video at frame rate (--video-seconds): a 640x360 video of one face moving and scaling (its place
known in every frame, :func:`face_box`) goes through audet.Detector with the detector on every
frame (--detect-every 1) and on key frames with the face followed in between (--detect-every K),
per model and backend; the table gives end-to-end fps (wall; decoding included), CPU time per
frame, detector runs, missed faces, false faces and id switches.

Memory: `audet predict` runs in a child process on videos of each length in --memory-minutes and
the child's peak resident memory (ru_maxrss from wait4) is reported; streaming means the peak
should not grow with length.

    PYTHONPATH=src python benchmarks/inference_speed.py --seconds 8 --models resnet_tiny ac2d \\
        --memory-minutes 1 10 --memory-fps 5
    PYTHONPATH=src python benchmarks/inference_speed.py --seconds 0 --memory-minutes --video-seconds 8

Prints a markdown table (docs/inference.md keeps the measured figures).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def face_box(t: int, moving: bool = False) -> tuple[int, int, int, int]:
    """Where the face patch is in frame ``t`` (x1, y1, x2, y2): the speed video moves it across the
    scene; ``moving`` (the tracking video) also scales it (0.8-1.2x) and moves it faster, up and down."""
    if not moving:
        x = 40 + int(200 + 180 * np.sin(t / 40.0))
        return x, 80, x + 150, 270
    s = 1.0 + 0.2 * np.sin(t / 23.0)
    w, h = int(150 * s), int(190 * s)
    cx = 320 + 200 * np.sin(t / 30.0)
    cy = 180 + 40 * np.sin(t / 17.0)
    x1, y1 = int(cx - w / 2), int(max(0, min(360 - h, cy - h / 2)))
    return x1, y1, x1 + w, y1 + h


def make_video(path: Path, seconds: float, fps: float = 25.0, size=(640, 360), moving: bool = False) -> Path:
    """A face (skimage's astronaut) moving across a 640x360 grey scene (:func:`face_box` says where)."""
    from skimage.data import astronaut

    crop = astronaut()[20:300, 120:340]
    W, H = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    n = int(round(seconds * fps))
    for t in range(n):
        img = np.full((H, W, 3), 90, np.uint8)
        x1, y1, x2, y2 = face_box(t, moving)
        img[y1:y2, x1:x2] = cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
        vw.write(img[..., ::-1])
    vw.release()
    return path


def track_quality(rows, n_frames: int, moving: bool) -> dict:
    """Missed faces (frames whose true face has no row), false faces (rows that are not the true
    face) and id switches (the true face's id changing between frames). A row is the true face
    when its box centre lies inside the pasted head-and-shoulders patch (:func:`face_box`)."""
    missed = false = switches = 0
    last_id = None
    by_frame = {f: g for f, g in rows.groupby("frame")} if len(rows) else {}
    for t in range(n_frames):
        g = by_frame.get(t)
        if g is None or not len(g):
            missed += 1
            continue
        x1, y1, x2, y2 = face_box(t, moving)
        cx = (g["box_x1"].to_numpy() + g["box_x2"].to_numpy()) / 2
        cy = (g["box_y1"].to_numpy() + g["box_y2"].to_numpy()) / 2
        hit = np.flatnonzero((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2))
        false += len(g) - len(hit)
        if not len(hit):
            missed += 1
            continue
        fid = int(g["face_id"].to_numpy()[hit[0]])
        if last_id is not None and fid != last_id:
            switches += 1
        last_id = fid
    return {"missed": missed, "false": false, "switches": switches}


def video_run(video: Path, ckpt: Path, backend: str, detect_every: int, n_frames: int, detector: str = "mtcnn",
              batch: int = 32) -> dict:
    """End-to-end fps (wall and CPU) of audet.Detector on ``video`` and its tracking quality."""
    import pandas as pd

    import audet

    det = audet.Detector(checkpoint=ckpt, backend=backend, batch_size=batch, face_detector=detector,
                         detect_every=detect_every)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = pd.concat(list(det.stream(video)), ignore_index=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rep = det.timing_report()
    return {"fps": n_frames / wall, "cpu_ms": 1000 * cpu / n_frames, "detections": rep.get("detections", 0),
            "backend": det.model.name, **track_quality(rows, n_frames, True)}


def video_table(models, backends, seconds: float, every: int, work: Path, detector: str = "mtcnn") -> None:
    """The tracking table: every-frame vs followed detection, per model and backend."""
    video = make_video(work / "moving.mp4", seconds, moving=True)
    n = int(round(seconds * 25))
    print(f"\nvideo at frame rate: 640x360, {n} frames, one face moving and scaling; detector {detector}\n")
    print("| model | backend | detection | fps (wall) | CPU ms/frame | detector runs | missed faces | false faces | id switches |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in models:
        ck = checkpoint(name, work)
        for backend in backends:
            if backend == "onnxruntime":
                from audet.inference.loading import load_model
                from audet.inference.onnx_export import cached_onnx

                cached_onnx(load_model(ck), ck)
            for k in (1, every):
                r = video_run(video, ck, backend, k, n, detector)
                what = "every frame" if k == 1 else f"every {k}th + followed"
                print(f"| {name} | {r['backend']} | {what} | {r['fps']:.1f} | {r['cpu_ms']:.1f} | {r['detections']} | "
                      f"{r['missed']} | {r['false']} | {r['switches']} |", flush=True)


def checkpoint(name: str, folder: Path) -> Path:
    import torch

    from audet.models.checkpoint import save_checkpoint
    from audet.models import create_model

    from audet.models.base import DataInfo

    torch.manual_seed(0)
    aus = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
    subjects = [f"S{i:03d}" for i in range(27)]  # placeholder subjects (BP4D has 41; CISNet trains on ~27)
    data = DataInfo(aus=aus, subjects=subjects, train_subjects=subjects)
    model = create_model(name, num_aus=12, aus=aus, data=data).eval()
    path = folder / f"{name}.safetensors"
    save_checkpoint(model, path)
    return path


def speed(video: Path, ckpt: Path, backend: str, batch: int, detector: str) -> dict:
    import audet
    from audet.inference.media import VideoSource

    det = audet.Detector(checkpoint=ckpt, backend=backend, batch_size=batch, face_detector=detector, detect_every=1)
    src = VideoSource(video)
    t0 = time.perf_counter()
    n_rows = 0
    for chunk in det.iter_chunks(src.frames()):
        n_rows += len(chunk.rows)
    wall = time.perf_counter() - t0
    src.close()
    rep = det.timing_report()
    n = rep["frames"]
    return {"frames": n, "faces": rep["faces"], "fps": n / wall,
            **{k: 1000 * rep[k] / n for k in ("decode", "detection", "landmarks", "alignment", "model")}}


def peak_memory(video: Path, ckpt: Path, detector: str, out: Path, min_face: int = 20) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of `audet predict` on ``video`` in a child process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "audet.cli", "predict", str(video), "--checkpoint", str(ckpt), "--out", str(out),
           "--face-detector", detector, "--no-progress", "--overwrite", "--min-face-size", str(min_face)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"audet predict failed: {proc.stderr.read().decode()[-800:]}")
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the speed video at 25 fps")
    ap.add_argument("--models", nargs="+", default=["resnet_tiny", "ac2d"], help="registered model names")
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--detector", default="mtcnn", help="face detector for the speed runs")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--video-seconds", type=float, default=8.0,
                    help="length of the tracking video (0: no tracking table)")
    ap.add_argument("--detect-every", type=int, default=10, help="K of the followed runs of the tracking table")
    ap.add_argument("--memory-minutes", nargs="*", type=float, default=[1.0, 10.0])
    ap.add_argument("--memory-fps", type=float, default=25.0, help="frame rate of the memory videos")
    ap.add_argument("--memory-detector", default="mtcnn")
    ap.add_argument("--memory-model", default="resnet_tiny")
    ap.add_argument("--memory-min-face", type=int, default=20, help="MTCNN min face size of the memory runs")
    args = ap.parse_args()
    from audet.utils.threads import prepare_environment

    prepare_environment()  # as the audet command does, before torch is imported
    import torch

    if args.threads:
        os.environ["AUDET_THREADS"] = str(args.threads)  # what audet.Detector then uses
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="audet-infer-bench-"))
    video = make_video(work / "speed.mp4", max(args.seconds, 0.04))
    print(f"video: 640x360, {args.seconds:g} s at 25 fps; torch threads {torch.get_num_threads()}; detector {args.detector}\n")
    print("| model | backend | frames | end-to-end fps | decode | detection | landmarks | alignment | model (ms/frame) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models if args.seconds > 0 else []:
        ck = checkpoint(name, work)
        for backend in args.backends:
            if backend == "onnxruntime":  # export outside the timed run
                from audet.inference.loading import load_model
                from audet.inference.onnx_export import cached_onnx

                cached_onnx(load_model(ck), ck)
            r = speed(video, ck, backend, args.batch_size, args.detector)
            print(f"| {name} | {backend} | {r['frames']} | {r['fps']:.1f} | {r['decode']:.1f} | {r['detection']:.1f} | "
                  f"{r['landmarks']:.1f} | {r['alignment']:.1f} | {r['model']:.1f} |", flush=True)
    if args.video_seconds > 0:
        video_table(args.models, args.backends, args.video_seconds, args.detect_every, work, args.detector)
    if args.memory_minutes:
        print(f"\npeak memory of `audet predict` ({args.memory_model}, {args.memory_detector}, "
              f"{args.memory_fps:g} fps videos):\n")
        print("| video length | frames | peak RSS (MiB) | wall (s) |")
        print("|---|---|---|---|")
        ck = checkpoint(args.memory_model, work)
        peaks = []
        for minutes in args.memory_minutes:
            v = work / f"mem_{minutes:g}min.mp4"
            fps = args.memory_fps
            make_video(v, minutes * 60, fps=fps)
            peak, wall = peak_memory(v, ck, args.memory_detector, work / "mem_out", args.memory_min_face)
            peaks.append(peak)
            print(f"| {minutes:g} min | {int(round(minutes * 60 * fps))} | {peak:.0f} | {wall:.0f} |", flush=True)
        if len(peaks) > 1:
            print(f"\nlongest vs shortest: {100 * (peaks[-1] / peaks[0] - 1):+.1f}% peak memory")


if __name__ == "__main__":
    main()
