"""Wall and CPU time of a resnet_tiny training step (batch 16, 176 px, AdamW) under OpenMP thread
counts and wait policies, each in a fresh process (libgomp reads its variables when torch is
imported), interleaved over --repeats rounds so that a changing background load hits all alike.

CPU time per step beside wall time shows the mechanism of issue 19: with torch's default
(spin-waiting) OpenMP threads on a busy machine, the CPU time per step grows far beyond the
one-thread CPU time (threads burning their slice waiting for a descheduled sibling); with
OMP_WAIT_POLICY=PASSIVE it stays close to it.

    PYTHONPATH=src python benchmarks/wait_policy.py --steps 15 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from audet.models import create_model
torch.manual_seed(0)
m = create_model("resnet_tiny", num_aus=12, width=16)
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x, y = torch.randn(16, 3, 176, 176), (torch.rand(16, 12) > 0.5).float()
def step():
    opt.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(m.forward_logits(x), y).backward()
    opt.step()
for _ in range(3):
    step()
n = int(sys.argv[2]); t0, c0 = time.perf_counter(), time.process_time()
for _ in range(n):
    step()
print(json.dumps({"wall": (time.perf_counter() - t0) / n, "cpu": (time.process_time() - c0) / n}))
"""

SETTINGS = {  # name: (threads, environment)
    "1 thread": (1, {}),
    "2 threads, default (spin)": (2, {}),
    "2 threads, PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, GOMP_SPINCOUNT=1000": (2, {"GOMP_SPINCOUNT": "1000"}),
    "2 threads, GOMP_SPINCOUNT=10000": (2, {"GOMP_SPINCOUNT": "10000"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    res: dict[str, list] = {k: [] for k in SETTINGS}
    for r in range(args.repeats):
        for name, (n, extra) in SETTINGS.items():
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.steps)], env={**base, **extra},
                                 capture_output=True, text=True, check=True)
            d = json.loads(out.stdout.strip().splitlines()[-1])
            res[name].append((d["wall"], d["cpu"], load))
            print(f"round {r + 1}: {name:34s} {d['wall']:.3f} s/step wall, {d['cpu']:.3f} s CPU (load {load:.1f})",
                  flush=True)
    print("\n| setting | wall s/step (per round) | CPU s/step (per round) | load |")
    print("|---|---|---|---|")
    for name, v in res.items():
        print(f"| {name} | {' / '.join(f'{w:.2f}' for w, _, _ in v)} | {' / '.join(f'{c:.2f}' for _, c, _ in v)} | "
              f"{min(x[2] for x in v):.1f}-{max(x[2] for x in v):.1f} |")


if __name__ == "__main__":
    main()
