"""Generation driver and the BP4D raw-release layout writer.

Layout (what ``audet prepare BP4D`` reads)::

    DIR/BP4D-training/<subject>/<task>/<frame>.jpg      frame numbers zero-padded to 4 digits
    DIR/AUCoding/AU_OCC/<subject>_<task>.csv            header 0,1,2,4,...,26; 0/1, 9 = unknown
    DIR/2DFeatures/<subject>_<task>.mat                 fit: 1 x n struct, pred = (68, 2) 1-based
    DIR/synth_meta.json                                 ground truth for debugging

Each (subject, sequence) is an independent job seeded by ``(seed, subject, sequence)``, so the
output is byte-identical for any number of workers.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import scipy.io

from audet.utils.io import atomic_path

from .episodes import (
    TASK_EMOTIONS,
    BehaviourParams,
    add_missing,
    calibrate,
    labels_from_intensity,
    rasterize,
    simulate_episodes,
)
from .identity import STREAM_SEQUENCE, make_subject, rng_for, subject_names
from .nuisance import CameraNoise, degrade, encode_jpeg, light_map, make_background, sample_nuisance, _smooth_track
from .presets import GENERATOR_VERSION, SYNTH_AUS, SynthConfig
from .render import FaceRenderer

IMAGE_DIR = "BP4D-training"
LABEL_DIR = os.path.join("AUCoding", "AU_OCC")
LANDMARK_DIR = "2DFeatures"
META_NAME = "synth_meta.json"
CSV_HEADER = "0," + ",".join(str(a) for a in SYNTH_AUS)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by audet synth (deterministic header)"


# ----------------------------------------------------------------------------------------------
# file formats
# ----------------------------------------------------------------------------------------------


def csv_text(frame_numbers, labels: np.ndarray) -> str:
    """AU_OCC CSV: header ``0,1,2,4,...`` then ``frame,label,...`` rows."""
    lines = [CSV_HEADER]
    for f, row in zip(frame_numbers, labels):
        lines.append(str(int(f)) + "," + ",".join(str(int(v)) for v in row))
    return "\n".join(lines) + "\n"


def mat_bytes(preds: list[np.ndarray]) -> bytes:
    """``fit``: a 1 x n struct array with field ``pred`` ((68, 2) or empty (0, 2)), as savemat
    writes it, with the time stamp in the header replaced so the bytes are reproducible."""
    fit = np.empty((1, len(preds)), dtype=[("pred", object)])
    for k, pr in enumerate(preds):
        fit[0, k]["pred"] = np.asarray(pr, dtype=np.float64).reshape(-1, 2)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"fit": fit}, do_compression=True, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomic write with ordinary permissions (mkstemp's temporary files are 0600)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, _FILE_MODE)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def frame_name(number: int) -> str:
    return f"{int(number):04d}.jpg"


# ----------------------------------------------------------------------------------------------
# one sequence
# ----------------------------------------------------------------------------------------------


def sequence_streams(seed: int, subject_index: int, seq_index: int) -> dict[str, np.random.Generator]:
    base = rng_for(seed, STREAM_SEQUENCE, subject_index, seq_index)
    names = ("episodes", "nuisance", "background", "frames", "labels", "motion", "landmarks")
    return dict(zip(names, base.spawn(len(names))))


def plan_sequence(cfg: SynthConfig, seed: int, subject_index: int, seq_index: int,
                  params: BehaviourParams) -> dict[str, Any]:
    """Everything about a sequence except the pixels: identity, episodes, labels, nuisances."""
    ident, habits = make_subject(seed, subject_index, cfg)
    name = ident.name
    st = sequence_streams(seed, subject_index, seq_index)
    T = cfg.frames
    episodes = simulate_episodes(st["episodes"], T, habits, seq_index, params, cfg)
    intensity = rasterize(episodes, T, habits)
    labels = labels_from_intensity(intensity, cfg.threshold)
    coded = add_missing(st["labels"], labels, cfg.missing_labels)
    nz = sample_nuisance(st["nuisance"], T, cfg)
    # blinks (3-5 frames of lid closure) and gaze
    mrng = st["motion"]
    blink = np.zeros(T)
    t = int(mrng.exponential(60 * cfg.tempo))
    while t < T:
        prof = np.array([0.45, 1.0, 1.0, 0.5])[: int(mrng.integers(3, 5))]
        blink[t : t + len(prof)] = prof[: max(0, min(len(prof), T - t))]
        t += len(prof) + int(mrng.exponential(70 * cfg.tempo)) + 5
    gaze = np.stack([_smooth_track(mrng, T, 0.6, 50.0), _smooth_track(mrng, T, 0.3, 60.0)], 1)
    first = 1 + int(mrng.integers(0, max(1, min(400, 9999 - T))))
    return dict(name=name, task=f"T{seq_index + 1}", ident=ident, habits=habits, episodes=episodes,
                intensity=intensity, labels=labels, coded=coded, nuisance=nz, blink=blink,
                gaze=gaze, first=first, streams=st)  # fmt: skip


def render_sequence(cfg: SynthConfig, plan: dict[str, Any], frames: list[int] | None = None):
    """Yield ``(k, rgb_image, landmarks68_0based)`` for the frames of a planned sequence."""
    st = plan["streams"]
    S = cfg.size
    nz = plan["nuisance"]
    bg = make_background(st["background"], S, cfg.clutter)
    light = light_map(nz, S)
    renderer = FaceRenderer(plan["ident"], cfg)
    frng = st["frames"]
    noise = CameraNoise(frng, S, nz.noise_std)
    for k in range(cfg.frames) if frames is None else frames:
        img, lm = renderer.render(bg, plan["intensity"][k], nz.pose(k), light, float(plan["blink"][k]),
                                  tuple(plan["gaze"][k]), nz.occluders, k)  # fmt: skip
        img = degrade(img, nz, frng, noise)
        yield k, img, lm


def write_sequence(job: tuple) -> dict[str, Any]:
    """Worker: render and write one (subject, sequence). Returns its meta entry."""
    cfg_dict, seed, si, qi, out, params = job
    cv2.setNumThreads(1)
    cfg = SynthConfig(**cfg_dict)
    plan = plan_sequence(cfg, seed, si, qi, params)
    out = Path(out)
    name, task = plan["name"], plan["task"]
    img_dir = out / IMAGE_DIR / name / task
    img_dir.mkdir(parents=True, exist_ok=True)
    nz = plan["nuisance"]
    lrng = plan["streams"]["landmarks"]
    sigma = cfg.noise_landmarks * cfg.size / 256.0
    preds: list[np.ndarray] = []
    numbers = [plan["first"] + k for k in range(cfg.frames)]
    for k, img, lm in render_sequence(cfg, plan):
        write_bytes(img_dir / frame_name(numbers[k]), encode_jpeg(img, nz.jpeg_quality))
        noise = lrng.normal(0.0, 1.0, lm.shape) * sigma
        if nz.lost is not None and nz.lost[k]:
            preds.append(np.zeros((0, 2)))
        else:
            preds.append(np.round(lm + 1.0 + noise, 4))  # 1-based, MATLAB style
    stem = f"{name}_{task}"
    write_text(out / LABEL_DIR / f"{stem}.csv", csv_text(numbers, plan["coded"]))
    write_bytes(out / LANDMARK_DIR / f"{stem}.mat", mat_bytes(preds))
    coded = plan["coded"]
    known = coded != 9
    return {
        "subject": name,
        "task": task,
        "subject_index": si,
        "sequence_index": qi,
        "frames": cfg.frames,
        "first_frame": plan["first"],
        "task_emotion": TASK_EMOTIONS[qi % len(TASK_EMOTIONS)],
        "positives": {str(a): int(((coded[:, i] == 1)).sum()) for i, a in enumerate(SYNTH_AUS)},
        "known": {str(a): int(known[:, i].sum()) for i, a in enumerate(SYNTH_AUS)},
        "missing_cells": int((~known).sum()),
        "blinks": int((np.diff(np.concatenate([[0.0], plan["blink"]])) > 0.4).sum()),
        "nuisance": nz.summary(),
        "episodes": [e.to_list() for e in plan["episodes"]],
    }


# ----------------------------------------------------------------------------------------------
# the whole data set
# ----------------------------------------------------------------------------------------------


def _prepare_out(out: Path, force: bool) -> None:
    managed = [out / IMAGE_DIR, out / "AUCoding", out / LANDMARK_DIR, out / META_NAME]
    existing = [p for p in managed if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{out} already holds a data set ({', '.join(p.name for p in existing)}); "
            "use --overwrite to replace it"
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate(
    cfg: SynthConfig,
    out: str | os.PathLike,
    seed: int = 0,
    workers: int = 1,
    force: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate the data set described by ``cfg`` into ``out``; returns a summary dict."""
    cfg.validate()
    if seed < 0:
        raise ValueError("seed must be >= 0")
    out = Path(out)
    _prepare_out(out, force)
    t0 = time.perf_counter()
    params = calibrate(cfg, seed)
    t_cal = time.perf_counter() - t0
    jobs = [(cfg.to_dict(), int(seed), si, qi, str(out), params)
            for si in range(cfg.subjects) for qi in range(cfg.sequences)]  # fmt: skip
    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm import tqdm

    bar = tqdm(total=cfg.total_frames, unit="frame", desc="audet synth", disable=not progress,
               smoothing=0.1)  # fmt: skip
    results: list[dict[str, Any]] = []
    t1 = time.perf_counter()
    workers = max(1, int(workers))
    try:
        if workers == 1 or len(jobs) == 1:
            for job in jobs:
                results.append(write_sequence(job))
                bar.update(cfg.frames)
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(min(workers, len(jobs))) as pool:
                for res in pool.imap_unordered(write_sequence, jobs, chunksize=1):
                    results.append(res)
                    bar.update(cfg.frames)
    finally:
        bar.close()
    t_render = time.perf_counter() - t1
    results.sort(key=lambda r: (r["subject_index"], r["sequence_index"]))
    meta = build_meta(cfg, seed, params, results)
    write_text(out / META_NAME, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    summary = {
        "out": str(out),
        "frames": cfg.total_frames,
        "sequences": len(jobs),
        "seconds": round(time.perf_counter() - t0, 3),
        "calibration_seconds": round(t_cal, 3),
        "frames_per_second": round(cfg.total_frames / max(t_render, 1e-9), 1),
        "workers": workers,
        "rates": meta["measured_rates"],
    }
    if log:
        log(f"wrote {summary['frames']} frames ({summary['sequences']} sequences) to {out} in "
            f"{summary['seconds']:.1f} s: {summary['frames_per_second']:.0f} frames/s with "
            f"{workers} worker(s)")  # fmt: skip
    return summary


def build_meta(cfg: SynthConfig, seed: int, params: BehaviourParams,
               results: list[dict[str, Any]]) -> dict[str, Any]:
    names = subject_names(cfg.subjects)
    subjects = {}
    for si, name in enumerate(names):
        ident, habits = make_subject(seed, si, cfg)
        subjects[name] = {"identity": ident.to_dict(), "habits": habits.to_dict()}
    pos = {a: 0 for a in SYNTH_AUS}
    known = {a: 0 for a in SYNTH_AUS}
    for r in results:
        for a in SYNTH_AUS:
            pos[a] += r["positives"][str(a)]
            known[a] += r["known"][str(a)]
    return {
        "generator": "audet synth",
        "version": GENERATOR_VERSION,
        "preset": cfg.preset,
        "seed": int(seed),
        "config": cfg.to_dict(),
        "aus": list(SYNTH_AUS),
        "layout": {
            "images": f"{IMAGE_DIR}/<subject>/<task>/<frame:04d>.jpg",
            "labels": "AUCoding/AU_OCC/<subject>_<task>.csv (header 0,1,2,...; 9 = unknown)",
            "landmarks": f"{LANDMARK_DIR}/<subject>_<task>.mat (fit(1,n).pred: 68x2, 1-based x,y)",
        },
        "label_rule": f"intensity (0..5) >= {cfg.threshold}",
        "target_rates": {str(a): v for a, v in params.target.items()},
        "measured_rates": {str(a): round(pos[a] / max(1, known[a]), 4) for a in SYNTH_AUS},
        "calibration": params.to_dict(),
        "episode_fields": ["au", "start", "apex_start", "apex_end", "end", "peak", "source"],
        "subjects": subjects,
        "sequences": {f"{r['subject']}_{r['task']}": r for r in results},
    }


def load_meta(out: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(out) / META_NAME).read_text())
