"""Time the paired block bootstrap of the F1 difference (audet.metrics.paired_bootstrap_f1_diff).

    python benchmarks/metrics_speed.py              # 50,000 frames x 12 AUs, 1,000 resamples

Target: well under 10 s on 2 CPU cores (it runs once per comparison in compare_models.py and the
demo's prior comparison). A timing, so it lives here and not in the tests.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from audet.metrics import paired_bootstrap_f1_diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--aus", type=int, default=12)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    y = (rng.random((a.frames, a.aus)) < 0.2).astype(int)
    s1, s2 = rng.random((a.frames, a.aus)), rng.random((a.frames, a.aus))
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        paired_bootstrap_f1_diff(y, s1, s2, n_boot=a.resamples)
        times.append(time.perf_counter() - t)
    print(f"paired bootstrap, {a.frames} frames x {a.aus} AUs, {a.resamples} resamples: "
          f"median {np.median(times):.2f} s over {a.repeats} runs")


if __name__ == "__main__":
    main()
