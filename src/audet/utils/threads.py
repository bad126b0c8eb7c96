"""How many compute threads audet uses, and how they wait: the one place for that policy.

Why (issue 19, ``benchmarks/contention.py``): PyTorch's CPU kernels run on a GNU OpenMP (libgomp)
pool whose threads, by default, spin for a long time at the end of every parallel operation
waiting for their siblings. When another program holds one of the cores, the sibling is not
running, and the spinning thread burns its own time slice waiting for it, at every small
operation. Measured on the shared 2-core machine (a resnet_tiny training step, 2 threads):
1.0-1.4 s of CPU per step instead of 0.1 s, 10x slower than one thread. With
``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps instead: 0.11-0.13 s of CPU per step.

The policy:

- :func:`prepare_environment` (called by the ``audet`` command before torch is imported, and by
  the benchmark scripts) sets ``OMP_WAIT_POLICY=PASSIVE`` -- or, when the machine is idle as the
  command starts, a short spin (``GOMP_SPINCOUNT=10000``: sleeping waits cost op-heavy models up to
  1.6x on the idle machine) -- unless the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``
  themselves. libgomp reads it once, when torch is imported: a program that imports torch before
  audet keeps its own setting (set the variable yourself there).
- :func:`choose_threads`: an explicit request (``--threads N``, ``AUDET_THREADS=N``) always wins;
  then ``OMP_NUM_THREADS`` if the user set it; else the CPUs this process may run on
  (``os.sched_getaffinity``), less the CPUs other programs keep busy right now (the running-task
  count of ``/proc/loadavg``), at least 1.
- :func:`apply_threads` sets torch's intra-op threads (and OpenCV's) to that number.

DataLoader workers run one thread each (:func:`audet.data.images.worker_init`).
"""
from __future__ import annotations

import logging
import os
import time

__all__ = ["ENV_THREADS", "SHORT_SPIN", "prepare_environment", "available_cpus", "own_running_threads", "busy_cpus",
           "choose_threads", "apply_threads", "configure"]

log = logging.getLogger(__name__)

#: environment variable that fixes audet's compute threads (like ``--threads``)
ENV_THREADS = "AUDET_THREADS"


#: libgomp spin count used on a machine that is idle when the command starts (see prepare_environment)
SHORT_SPIN = "10000"


def prepare_environment(environ=None, *, busy: float | None = None) -> bool:
    """Choose how waiting OpenMP threads wait, unless the user chose (``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` set): on a machine that is idle when the command starts (fewer than 0.5 CPUs
    busy with other programs, :func:`busy_cpus`; ``busy`` overrides the reading) a short spin,
    ``GOMP_SPINCOUNT=SHORT_SPIN``; otherwise (or with one CPU) sleeping waits,
    ``OMP_WAIT_POLICY=PASSIVE``.

    Why both (docs/benchmarks.md "Wait policy on an idle machine"): sleeping waits keep a 2-thread
    process from burning its time slice beside busy programs (issue 19), but on the idle 2-core
    machine waking the sibling at every small operation made AC2D's training step (many small
    operations) 1.6x slower than spinning (0.45 s against 0.27-0.29 s); a 10,000-iteration spin
    gives back nearly all of that (0.30 s). Beside rivals the command chooses one compute thread
    (:func:`choose_threads`), where the wait policy does not matter; a rival that starts later
    costs the short spin 1.2-1.4x of the sleeping waits (never libgomp's default 300,000
    iterations, 4-11x). Must run before torch is imported to take effect; returns whether torch was
    still unimported (i.e. the setting applies to this process)."""
    import sys

    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        idle = available_cpus() > 1 and (busy_cpus(samples=3) if busy is None else busy) < 0.5
        if idle:
            env["GOMP_SPINCOUNT"] = SHORT_SPIN
        else:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    return "torch" not in sys.modules


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def own_running_threads(task_dir: str = "/proc/self/task") -> int:
    """How many threads of this process are running now (state ``R`` in ``/proc/self/task/*/stat``;
    at least 1: the thread asking)."""
    n = 0
    try:
        for tid in os.listdir(task_dir):
            try:
                with open(os.path.join(task_dir, tid, "stat")) as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
    except OSError:
        return 1
    return max(1, n)


def busy_cpus(samples: int = 5, interval: float = 0.01, path: str = "/proc/loadavg",
              own=own_running_threads) -> float:
    """How many CPUs other programs keep busy now: the median over ``samples`` readings of the
    running-task count in ``/proc/loadavg`` (4th field, ``running/total``), less this process's
    own running threads (``own()``: after ``import torch`` more than the one reading; counting
    them as other programs' made an idle 2-core machine look half busy). 0.0 where the file does
    not exist (not Linux)."""
    vals = []
    for i in range(max(1, samples)):
        try:
            with open(path) as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        vals.append(max(0, running - own()))
        if i + 1 < samples:
            time.sleep(interval)
    vals.sort()
    return float(vals[len(vals) // 2])


def _positive_int(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return n


def choose_threads(requested: int | None = None, *, use_load: bool = True, environ=None) -> tuple[int, str]:
    """``(threads, why)``: compute threads for this process (see the module docstring).

    ``requested`` (``--threads``; 0 or None = automatic) wins, then ``AUDET_THREADS``, then a
    user-set ``OMP_NUM_THREADS``; otherwise the automatic choice from the free CPUs
    (``use_load=False``: all CPUs this process may use)."""
    env = os.environ if environ is None else environ
    if requested:
        return _positive_int(requested, "--threads"), "--threads"
    if env.get(ENV_THREADS):
        return _positive_int(env[ENV_THREADS], ENV_THREADS), ENV_THREADS
    if env.get("OMP_NUM_THREADS"):
        try:
            return _positive_int(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
        except ValueError:
            pass
    cpus = available_cpus()
    busy = busy_cpus() if use_load and cpus > 1 else 0.0
    n = max(1, min(cpus, int(cpus - busy + 0.5)))
    return n, f"{cpus} CPU(s) available, {busy:g} busy with other programs"


def apply_threads(n: int) -> None:
    """Use ``n`` intra-op threads in torch (and in OpenCV, when it is installed)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - OpenCV is optional here
        pass


def configure(requested: int | None = None, *, use_load: bool = True) -> int:
    """Choose (:func:`choose_threads`) and apply (:func:`apply_threads`) the compute threads; logs
    the choice at debug level and returns it."""
    n, why = choose_threads(requested, use_load=use_load)
    apply_threads(n)
    log.debug("compute threads: %d (%s; OMP_WAIT_POLICY=%s, GOMP_SPINCOUNT=%s)", n, why,
              os.environ.get("OMP_WAIT_POLICY", "unset"), os.environ.get("GOMP_SPINCOUNT", "unset"))
    return n
