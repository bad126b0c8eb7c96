"""The runner of ``audet prepare``: parallel, resumable, release-independent.

A release module (``bp4d``, ``disfa``, ...) provides a :class:`Release`: ``discover`` lists the
sequences of a raw release (fast, in the main process; a wrong root raises :class:`LayoutError`
saying what was expected) and ``iter_frames`` yields one :class:`FrameItem` per frame of a
sequence (in a worker process). The runner (:func:`run_prepare`) does the rest:

1. every sequence is processed by :func:`~audet.data.prepare.worker.process_sequence` in a
   ``multiprocessing`` pool (or in process for ``workers=1``): frames are checked (labels,
   landmarks, image), landmarks converted to 49 points, faces aligned (protocol section 2),
   crops written to ``OUT/images/<DATASET>/<subject>/<sequence...>/<frame>.<ext>``;
2. after the last frame of a sequence, a small manifest ``OUT/.prepare/<DATASET>/<key>.npz``
   (paths, aligned landmarks, labels, skipped frames with reasons, a settings/input fingerprint)
   is written atomically: it is the commit point of the sequence. A re-run skips sequences whose
   manifest is there and current, so an interrupted run resumes where it stopped; a sequence
   without a manifest is redone and its (possibly partial) crops overwritten;
3. list files, ``dataset.json`` and ``prepare_summary.json`` are assembled from the manifests
   only, in sorted order, so an interrupted-and-resumed run writes the same bytes as an
   uninterrupted one (and the number of workers does not matter), by
   :func:`~audet.data.prepare.assemble.assemble`.

Bad frames never abort the batch: they are skipped and counted by reason
(:data:`~audet.data.prepare.types.SKIP_REASONS`).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from audet.data.meta import DATASET_META
from audet.data.prepare.assemble import assemble, summary_lines
from audet.data.prepare.release import Release, get_release
from audet.data.prepare.types import (
    LayoutError,
    PrepareInterrupted,
    PrepareOptions,
    SequenceSpec,
)
from audet.data.prepare.worker import (
    _STATE,
    _init_worker,
    _manifest_current,
    _worker,
    manifest_path,
    process_sequence,
    settings_hash,
)

__all__ = ["run_prepare"]

logger = logging.getLogger(__name__)


def _resolve_aus(release: Release, aus: Iterable[int] | None) -> tuple[int, ...]:
    from audet.facs import DATASET_AUS

    if not aus:
        return tuple(DATASET_AUS[release.name])
    out = tuple(int(a) for a in aus)
    if len(set(out)) != len(out):
        raise ValueError(f"--aus lists an AU twice: {out}")
    return out


def run_prepare(opts: PrepareOptions) -> dict:
    """Prepare one release end to end (resumable). Returns the summary dict."""
    release = get_release(opts.dataset)
    opts.dataset = release.name
    if opts.image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be jpg or png, got {opts.image_format!r}")
    if opts.workers < 1:
        raise ValueError(f"--num-workers must be >= 1, got {opts.workers}")
    root = Path(opts.root).expanduser().resolve()
    out = Path(opts.out).expanduser().resolve()
    opts.root, opts.out = str(root), str(out)
    if not root.is_dir():
        raise LayoutError(f"--raw {root} is not a directory; expected a {release.name} "
                          f"release: {release.layout}")  # fmt: skip
    aus = _resolve_aus(release, opts.aus)
    specs = sorted(release.discover(root, opts), key=lambda s: s.key)
    if not specs:
        raise LayoutError(f"no {release.name} sequences found under {root}; expected: "
                          f"{release.layout}")  # fmt: skip
    if len({s.key for s in specs}) != len(specs):
        raise RuntimeError("release reader produced duplicate sequence keys")  # pragma: no cover
    uncoded = release.uncoded_aus(specs[0], aus)  # one label file read: an AU the release does not code
    if uncoded:
        raise ValueError(f"--aus: {release.name} does not code " + ", ".join(f"AU{a}" for a in uncoded)
                         + f" (the labels of {specs[0].key} have no such column); its AUs are "
                         + ", ".join(f"AU{a}" for a in release.coded_aus(specs[0]) or aus if a not in uncoded))
    if release.needs_detector(specs, opts):
        from audet.data.prepare.landmarks import create_landmarker

        create_landmarker(opts.detector, **opts.detector_kwargs)  # fail fast with a clear error
    partition = release.partition(sorted({s.subject for s in specs}), specs, opts)
    if partition.notice:
        logger.info(partition.notice)

    shash = settings_hash(opts, aus)
    pending = [s for s in specs
               if opts.force or not _manifest_current(manifest_path(out, release.name, s), s, shash)]  # fmt: skip
    done_before = len(specs) - len(pending)
    logger.info(f"prepare {release.name}: {len(specs)} sequences from {root}"
                + (f" ({done_before} already done, resuming)" if done_before else "")
                + f"; {opts.workers} worker(s)")  # fmt: skip

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    written_now = 0
    if pending:
        written_now = _run_jobs(release, pending, aus, opts)
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0

    summary = assemble(release, specs, aus, partition, opts)
    for line in summary_lines(summary):
        logger.info(line)
    if pending:
        rate = written_now / elapsed if elapsed > 0 else float("nan")
        logger.info(f"processed {len(pending)} sequence(s), {written_now} frames in {elapsed:.1f} s "
                    f"({rate:.1f} frames/s; {cpu:.1f} CPU-s)")  # fmt: skip
    logger.info(f"wrote {out / DATASET_META} and {out / 'prepare_summary.json'}")
    return summary


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers)."""
    try:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    except (ImportError, OSError):  # pragma: no cover - not Unix
        return float("nan")


def _run_jobs(release: Release, pending: list[SequenceSpec], aus: tuple[int, ...],
              opts: PrepareOptions) -> int:  # fmt: skip
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), unit="seq", desc=f"prepare {release.name}",
               disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    written = 0
    finished = 0

    def _done(res: dict) -> None:
        nonlocal written, finished
        written += res["written"]
        finished += 1
        bar.update(1)
        bar.set_postfix(frames=written, refresh=False)
        if opts.stop_after is not None and finished >= opts.stop_after:
            raise PrepareInterrupted(f"stopped after {finished} sequence(s) (test hook)")

    try:
        if opts.workers == 1 or len(pending) == 1:
            import cv2

            _STATE["opts"] = opts
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # OpenCV's own threads cost more CPU than they save here
            try:
                for spec in pending:
                    _done(process_sequence(spec, release, opts, aus))
            finally:
                cv2.setNumThreads(threads)
        else:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            jobs = [(release.name, s, aus) for s in pending]
            with ctx.Pool(min(opts.workers, len(pending)), initializer=_init_worker,
                          initargs=(asdict(opts),)) as pool:  # fmt: skip
                for res in pool.imap_unordered(_worker, jobs, chunksize=1):
                    _done(res)
    finally:
        bar.close()
        _STATE.pop("detector", None)
    return written
