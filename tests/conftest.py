"""One compute thread per test process unless the caller says otherwise.

CI runs ``pytest -n 2`` on 2 cores: with torch's default (one intra-op thread per core) each
xdist worker runs 2 threads, 4 in all on 2 cores, and torch's OpenMP threads spin-wait for each
other; small models then run 10-40x slower (the resume test: 1.3 s with one thread, 50 s with two on
a loaded 2-core machine). Subprocesses started by tests inherit the environment variables.
"""
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402  (after the variables, so that its OpenMP pool reads them)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
