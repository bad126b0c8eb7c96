"""``audet predict INPUT... --checkpoint CKPT --out OUT``: AUs of every face in photos, folders,
videos and cameras, one table per input."""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

HELP = "detect AUs of every face in images, folders, videos or a camera (one table per input)"
DESCRIPTION = """\
Run a trained checkpoint on your own media, offline: faces are detected (MTCNN), given 68 landmarks
(dlib), aligned as in training (protocol section 2) and preprocessed with the checkpoint's own
transform; faces of several frames go through the model in batches. In videos the face detector runs
every --detect-every frames (and when a face is lost or a new one may have entered); in between,
each face is followed by its own landmarks. Decoding runs ahead in a reader thread.

INPUT is an image, a folder (its images make one table, each video in it its own table), a video
file or a camera index (0, 1, ...). For each input OUT/<name>.csv holds one row per face per frame:
file, frame, timestamp (s), face_id (stable across video frames), confidence (detector score),
success, box_x1..box_y2, x_0..x_67 and y_0..y_67 (68 landmarks, pixels), yaw, pitch, roll (head
pose in degrees, from the landmarks: docs/inference.md), then per AU AUxx_p (the probability) and
AUxx_c (presence, probability >= --threshold; OpenFace's column name).

Long videos stream with flat memory; rows are flushed as they are produced; an interrupted run
(Ctrl-C, a kill, a crash) resumes where it stopped when the same command is run again, and inputs
already finished are skipped. OUT/audet-manifest.json records the checkpoint (SHA-256) and the
options that decide the tables: a run with another checkpoint or other options into the same OUT
is refused before anything is written (--overwrite starts afresh there). A bad input is reported
and skipped; the run ends with a summary (faces, frames, frames/s, frames without a face) and exit
code 1 if any input failed.

Examples:
  audet predict photo.jpg holiday/ talk.mp4 --checkpoint runs/demo/train/best.safetensors --out preds
  audet predict talk.mp4 --checkpoint best.safetensors --annotate --plot --backend onnxruntime
  audet predict 0 --checkpoint best.safetensors          # camera 0; Ctrl-C ends and keeps the table
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from audet.commands._common import (add_batch_size, add_checkpoint, add_device, add_overwrite, add_precision,
                                        add_quiet, nonnegative_float, positive_int)

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder, video file or camera index")
    add_checkpoint(p, "audet checkpoint (.safetensors) or an ONNX file from `audet export`", old_before=None,
                   required=False)
    p.add_argument("--out", "-o", default="predictions", help="output folder (default: %(default)s)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format (parquet needs pyarrow)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="model runtime; auto (default): onnxruntime on the CPU where it is installed, agrees with "
                        "PyTorch and is faster, else PyTorch (onnxruntime exports <checkpoint>.onnx beside the checkpoint)")
    add_device(p)
    p.add_argument("--face-detector", default="mtcnn", choices=("mtcnn", "dlib-hog", "dlib-cnn", "haar"),
                   help="face detector (default: %(default)s; docs/inference.md compares them)")
    p.add_argument("--min-face-size", type=int, default=20, help="smallest face (pixels) MTCNN looks for; larger is faster (default: %(default)s)")
    p.add_argument("--landmarker", default="dlib", help="'dlib' or the path of a dlib 68-point shape predictor .dat")
    add_batch_size(p, 32, "faces per model call")
    add_precision(p, "32 (default) | bf16 autocast (torch backend; faster on CPUs with AVX-512 bf16) | "
                     "16 (fp16 autocast, CUDA only)")
    p.add_argument("--detect-every", type=positive_int, default=10, metavar="K",
                   help="videos: run the face detector every K frames and follow the faces by their landmarks in "
                        "between (it also runs when a face is lost or a new one may have entered); 1: every frame "
                        "(default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="presence threshold on the probability (default: %(default)s)")
    p.add_argument("--max-pixels", type=nonnegative_float, default=100e6,
                   help="refuse larger images/frames (0: no limit; default 100e6)")
    p.add_argument("--annotate", action="store_true", help="also write annotated images (OUT/<name>/) or video (OUT/<name>_annotated.mp4)")
    p.add_argument("--plot", action="store_true", help="also plot each face's AU probabilities over time (videos)")
    add_overwrite(p, "redo inputs whose table already exists; needed to reuse an OUT made with another checkpoint or options")
    add_quiet(p)


def _stat(p) -> str:
    st = os.stat(p)
    return f"{os.path.abspath(p)}:{st.st_size}:{int(st.st_mtime)}"


def _source(item) -> dict:
    """What identifies an input's content (paths, sizes, modification times)."""
    if item.kind == "images":
        h = hashlib.sha1("\n".join(_stat(p) if os.path.exists(p) else p for p in item.source).encode()).hexdigest()
        return {"images": len(item.source), "sha1": h}
    if item.kind == "video":
        return {"video": _stat(item.source)}
    return {"camera": item.source}


def _signature(item, args, detector) -> dict:
    ck = args.checkpoint
    return {"input": _source(item), "checkpoint": _stat(ck) if ck and os.path.exists(ck) else str(ck),
            "aus": detector.aus, "threshold": args.threshold, "face_detector": args.face_detector, "min_face_size": args.min_face_size,
            "landmarker": args.landmarker, "offsets": detector.offsets, "detect_every": detector.detect_every,
            "backend": detector.model.name}


def _folder_inputs(args, detector) -> dict:
    """What decides every table of OUT (recorded in OUT/audet-manifest.json and compared)."""
    from audet.models.checkpoint import checkpoint_paths
    from audet.utils.manifest import file_sha256

    ck = Path(args.checkpoint)
    files = [ck] if ck.suffix == ".onnx" else [q for q in checkpoint_paths(ck) if q.is_file()]
    return {"checkpoint": {"sha256": file_sha256(files[0]),
                           **({"meta_sha256": file_sha256(files[1])} if len(files) > 1 else {})},
            "options": {"aus": detector.aus, "threshold": args.threshold, "face_detector": args.face_detector,
                        "min_face_size": args.min_face_size, "landmarker": args.landmarker, "backend": args.backend,
                        "format": args.format, "max_pixels": args.max_pixels,
                        "precision": getattr(args, "precision", "32")}}


def _process(item, detector, args, out: Path, stats: dict | None = None) -> tuple[list[str], list[str], Path | None]:
    """Run one input; returns (failures, warnings, table path). ``stats`` (frames, faces,
    frames_with_face) is updated as frames are processed."""
    stats = stats if stats is not None else {}
    from audet.inference.media import VideoSource, image_frames
    from audet.inference.writers import TableWriter

    failures: list[str] = []
    warnings: list[str] = []
    writer = TableWriter(out, item.name, _signature(item, args, detector), args.format)
    if writer.done and not args.overwrite and item.kind != "camera":
        print(f"{item.name}: {writer.final} exists, skipped (--overwrite redoes it)", file=sys.stderr)
        return failures, warnings, writer.final
    if item.kind == "camera" and writer.progress_path.exists():
        writer.progress_path.unlink()  # cameras are not resumed: a fresh table
    state = writer.begin()
    if state:
        print(f"{item.name}: resuming at frame {state['skip_before']} ({writer.rows_written} rows kept)", file=sys.stderr)
    start = int(state["start"]) if state else 0
    max_px = int(args.max_pixels) or None
    src = None
    if item.kind == "images":
        frames = image_frames(item.source, max_px, start=start)
        total = len(item.source)
        track = False
    else:
        src = VideoSource(item.source, max_px)  # MediaError: the caller reports it
        frames = src.frames(start)
        total = src.frame_count
        track = True
    if not args.quiet:
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=total, initial=start, unit="frame" if track else "image", desc=item.name,
                      dynamic_ncols=True, file=sys.stderr)
    problems = []
    chunks = detector.iter_chunks(frames, track=track, tracker_state=(state or {}).get("tracker"),
                                  skip_before=int((state or {}).get("skip_before", 0)))
    try:
        for chunk in chunks:
            writer.append(chunk.rows, chunk.resume)
            problems.extend(chunk.problems)
            stats["frames"] = stats.get("frames", 0) + chunk.frames
            stats["faces"] = stats.get("faces", 0) + len(chunk.rows)
            if len(chunk.rows):
                stats["frames_with_face"] = stats.get("frames_with_face", 0) + int(chunk.rows["frame"].nunique())
    except KeyboardInterrupt:
        chunks.close()  # the reader thread stops before the video is closed
        if item.kind == "camera":
            print(f"{item.name}: stopped", file=sys.stderr)
        else:
            if src is not None:
                src.close()
            raise
    finally:
        chunks.close()
        if hasattr(frames, "close") and not args.quiet:
            frames.close()
    if src is not None:
        src.close()
        if src.truncated:
            failures.append(f"{item.source}: video ended after {src.frames_read} of {src.frame_count} frames "
                            f"(truncated or damaged file); rows of the frames read are kept")
        if src.variable_rate:
            warnings.append(f"{item.source}: variable frame rate; timestamps are the container's presentation times")
        if src.frames_read == 0 and not failures:
            failures.append(f"{item.source}: no frame could be decoded (corrupt video or missing codec)")
    failures.extend(problems)
    if item.kind == "images" and len(problems) >= len(item.source) - start and writer.rows_written == 0:
        for q in (writer.part, writer.progress_path):  # not one image could be read: no table
            if q.exists():
                q.unlink()
        return failures, warnings, None
    path = writer.finish()
    n = writer.rows_written
    if n == 0 and item.kind != "camera":
        what = "frames" if track else "images"
        warnings.append(f"{item.name}: no face found in any of the {what} (the table has a header only)")
    return failures, warnings, path


def run(args: argparse.Namespace) -> int:
    import time

    from audet.commands._common import check_device
    from audet.inference.backends import NO_CHECKPOINT, CheckpointProblem
    from audet.faces import FaceModelsMissing
    from audet.inference.media import MediaError, expand_inputs
    from audet.utils.manifest import FRESH_FLAG, OutputMismatch, check_output, read_manifest, write_manifest

    if not args.checkpoint:
        print(f"audet predict: error: {NO_CHECKPOINT}", file=sys.stderr)
        return 2
    from audet.inference.writers import parquet_available

    if args.format == "parquet" and not parquet_available():
        print("audet predict: error: Parquet output needs pyarrow: pip install pyarrow (or use --format csv)", file=sys.stderr)
        return 2
    if args.backend in ("torch", "auto"):  # auto runs PyTorch on any device but the CPU
        check_device(args.device)
    items, problems = expand_inputs(args.inputs)
    failures = list(problems)
    from audet.inference.pipeline import Detector

    try:
        detector = Detector(args.checkpoint, face_detector=args.face_detector, landmarker=args.landmarker,
                            backend=args.backend, device=args.device, batch_size=args.batch_size,
                            precision=args.precision,
                            threshold=args.threshold, max_pixels=int(args.max_pixels) or None,
                            min_face_size=args.min_face_size, detect_every=args.detect_every,
                            threads=getattr(args, "threads", None))
    except (CheckpointProblem, FaceModelsMissing) as exc:
        print(f"audet predict: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    # what made OUT is checked before anything is written there
    inputs = _folder_inputs(args, detector)
    state = check_output(out, inputs, command="predict", fresh=args.overwrite)
    old = (read_manifest(out) or {}).get("paths", {}).get("tables", {}) if state == "same" else {}
    sources = {item.name: _source(item) for item in items if item.kind != "camera"}
    if not args.overwrite:
        for name, src in sources.items():
            if name in old and old[name] != src and (out / f"{name}.{args.format}").is_file():
                raise OutputMismatch(f"--out {out}: {name}.{args.format} was made from another version of this "
                                     f"input (its size or modification time changed); add {FRESH_FLAG} to redo it")
    tables = {**old, **sources}
    write_manifest(out, inputs, command="predict", paths={"checkpoint": os.path.abspath(args.checkpoint),
                                                          "tables": tables})
    warnings: list[str] = []
    done: list[Path] = []
    interrupted = False
    stats: dict = {}
    t0 = time.perf_counter()
    for item in items:
        try:
            f, w, path = _process(item, detector, args, out, stats)
        except MediaError as exc:
            f, w, path = [str(exc)], [], None
            # nothing usable was read: no table for this input
            for suffix in (".csv.part", ".csv.progress.json"):
                q = out / f"{item.name}{suffix}"
                if q.exists():
                    q.unlink()
        except KeyboardInterrupt:
            print(f"\n{item.name}: interrupted; rows so far are kept in {out / (item.name + '.csv.part')}; "
                  "run the same command again to resume", file=sys.stderr)
            interrupted = True
            break
        for msg in f:
            print(f"error: {msg}", file=sys.stderr)
        for msg in w:
            print(f"warning: {msg}", file=sys.stderr)
        failures.extend(f)
        warnings.extend(w)
        if path is not None:
            done.append(path)
            if args.annotate or args.plot:
                _extras(item, path, args, out, detector, warnings)
    elapsed = time.perf_counter() - t0
    n_frames = stats.get("frames", 0)
    print(f"\n{len(done)} table(s) written to {out}/; {len(failures)} problem(s), {len(warnings)} warning(s)")
    print(f"summary: {stats.get('faces', 0)} face(s) in {n_frames} frame(s)/image(s), "
          f"{n_frames - stats.get('frames_with_face', 0)} without a face; {elapsed:.1f} s "
          f"({n_frames / elapsed if elapsed > 0 else 0:.1f} frames/s)")
    if failures:
        print("problems:", file=sys.stderr)
        for msg in failures:
            print(f"  - {msg}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failures else 0


def _extras(item, path: Path, args, out: Path, detector, warnings: list[str]) -> None:
    import pandas as pd

    from audet.inference.annotate import annotate_images, annotate_video, plot_aus_over_time
    from audet.inference.media import image_frames

    if path.suffix != ".csv":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype={"file": str})
    if args.annotate:
        if item.kind == "images":
            annotate_images(table, image_frames(item.source, int(args.max_pixels) or None), out / item.name)
            print(f"annotated images in {out / item.name}/")
        elif item.kind == "video":
            if path.suffix != ".csv":
                csv = out / f".{item.name}.annotate.csv"
                table.to_csv(csv, index=False)
            else:
                csv = path
            p = annotate_video(item.source, csv, out / f"{item.name}_annotated.mp4", int(args.max_pixels) or None)
            if csv != path:
                csv.unlink()
            print(f"annotated video {p}")
    if args.plot and item.kind != "images" and len(table):
        for p in plot_aus_over_time(table, out, item.name):
            print(f"AU plot {p}")
