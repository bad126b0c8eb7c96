"""How audet slows down beside other busy programs: a training epoch of the demo config and
`audet predict` on a short video, idle and beside 1 and 2 single-threaded CPU-bound processes and
beside another 2-thread PyTorch process (issue 19).

Everything runs in child processes through the real `audet` command (so the command's own thread
policy, audet.utils.threads, applies): `audet train resnet_tiny_demo` on a toy prepared folder
(audet.data.toy, the demo's batch size and loader; timed from the first to the last training batch
of one epoch of --batches batches) and `audet predict` on a 640x360 video of a moving face (wall
time of the whole command, after one untimed run that caches the ONNX export). The rivals are
started and stopped by this script: `busy` is `while True: pass` in Python; `torch2` trains a small
convolutional network with 2 threads and torch's default (spinning) OpenMP waits.

Policies (--policies, interleaved, so that a changing background load hits all alike):
  audet      the command's defaults (waiting threads sleep; threads from the free CPUs)
  spin       the old behaviour: libgomp's default spin-waiting (GOMP_SPINCOUNT=300000), one thread per CPU
  passive    waiting threads sleep, one thread per CPU (no load-based choice)
  one        one compute thread (AUDET_THREADS=1), waiting threads sleep
  NAME:K=V,K=V   any environment for the child, e.g. "spin1k:GOMP_SPINCOUNT=1000,AUDET_THREADS=2"
--src DIR runs the children with another audet source tree (e.g. /work/main/src: the code before).

    PYTHONPATH=src python benchmarks/contention.py --batches 30 --video-seconds 4 --repeats 3
    PYTHONPATH=src python benchmarks/contention.py --what train --policies audet spin --repeats 3

Prints the load average with every measurement and a markdown table (condition, seconds, ratio to
idle) per policy; the figures are only meaningful when nothing else runs on the machine (the
`idle` row is then truly idle): see docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

CONDITIONS = ("idle", "busy1", "busy2", "torch2")
BUSY = "while True: pass"
TORCH2 = """
import os, sys, torch
torch.set_num_threads(2)
net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                                torch.nn.ReLU()) for _ in range(6)])
opt = torch.optim.SGD(net.parameters(), 0.01)
x = torch.randn(8, 16, 64, 64)
print("ready", flush=True)
while True:
    opt.zero_grad(); net(x).mean().backward(); opt.step()
"""
# the child of `--what train`: the real CLI, with the epoch timed from the first to the last batch
TRAIN_CHILD = """
import sys, time
from lightning.pytorch.callbacks import Callback
import audet.commands._common as common
real = common.epoch_lines
class Timer(Callback):
    t0 = None
    def on_train_batch_start(self, trainer, module, batch, i):
        if self.t0 is None:
            self.t0 = time.perf_counter()
    def on_train_batch_end(self, trainer, module, out, batch, i):
        self.t1 = time.perf_counter()
    def on_train_epoch_end(self, trainer, module):
        print("EPOCH_SECONDS", self.t1 - self.t0, file=sys.stderr, flush=True)
common.epoch_lines = lambda stream=None: Timer()
from audet.cli import main
sys.exit(main(sys.argv[1:]))
"""

POLICIES = {
    "audet": {},
    "spin": {"GOMP_SPINCOUNT": "300000", "AUDET_THREADS": "{cpus}"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "AUDET_THREADS": "{cpus}"},
    "one": {"AUDET_THREADS": "1"},
}
CLEAN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "AUDET_THREADS")


def policy_env(spec: str, src: Path) -> tuple[str, dict]:
    if ":" in spec:
        name, rest = spec.split(":", 1)
        extra = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    elif spec in POLICIES:
        name, extra = spec, POLICIES[spec]
    else:
        raise SystemExit(f"unknown policy {spec!r}: {sorted(POLICIES)} or NAME:K=V,...")
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    cpus = str(len(os.sched_getaffinity(0)))
    env.update({k: v.replace("{cpus}", cpus) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(HERE)])
    env["PYTHONWARNINGS"] = "ignore"
    return name, env


def rivals(condition: str) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    procs = []
    if condition.startswith("busy"):
        for _ in range(int(condition[4:])):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY], env=env))
        time.sleep(0.5)
    elif condition == "torch2":
        p = subprocess.Popen([sys.executable, "-c", TORCH2], env=env, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()  # "ready": torch imported, the loop starts
        procs.append(p)
        time.sleep(0.5)
    elif condition != "idle":
        raise SystemExit(f"unknown condition {condition!r}: {CONDITIONS}")
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def load() -> float:
    return os.getloadavg()[0]


def prepare(work: Path, batches: int, video_seconds: float) -> dict:
    """A toy prepared folder large enough for ``batches`` training batches of 16, a video and a
    resnet_tiny checkpoint."""
    from audet.data.toy import make_toy_prepared
    from inference_speed import checkpoint, make_video

    frames = max(6, int(batches * 16 * 3 / (2 * 0.8 * 9 * 4)) + 2)  # fold 0 trains on 2 of 3 parts, 80%
    meta = make_toy_prepared(work / "prepared", dataset="BP4D", n_subjects=9, n_sequences=4, n_frames=frames,
                             aus=(1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24))
    video = make_video(work / "video.mp4", video_seconds, moving=True)
    ck = checkpoint("resnet_tiny", work)
    return {"root": work / "prepared", "dataset": meta.get("dataset", "BP4D"), "video": video, "checkpoint": ck}


def time_train(env: dict, setup: dict, batches: int, out: Path) -> float:
    cmd = [sys.executable, "-c", TRAIN_CHILD, "train", "resnet_tiny_demo", f"data.root={setup['root']}",
           f"data.dataset={setup['dataset']}", "trainer.max_epochs=1", f"trainer.limit_train_batches={batches}",
           "trainer.limit_val_batches=2", f"output.dir={out}", "--no-resume"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    m = re.search(r"EPOCH_SECONDS ([0-9.eE+-]+)", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"training failed ({r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return float(m.group(1))


def time_predict(env: dict, setup: dict, out: Path) -> float:
    cmd = [sys.executable, "-m", "audet.cli", "predict", str(setup["video"]), "--checkpoint", str(setup["checkpoint"]),
           "--out", str(out), "--overwrite", "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"predict failed ({r.returncode}):\n{r.stderr[-1500:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=60, help="training batches in the timed epoch (the issue's demo epoch: 60)")
    ap.add_argument("--video-seconds", type=float, default=4.0, help="length of the predict video at 25 fps")
    ap.add_argument("--what", nargs="+", default=["train", "predict"], choices=("train", "predict"))
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--policies", nargs="+", default=["audet"], help="see the module docstring")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over all conditions and policies (median reported)")
    ap.add_argument("--src", default=str(SRC), help="audet source tree of the children (default: this one)")
    ap.add_argument("--json", help="also write the raw measurements here")
    args = ap.parse_args()
    sys.path[:0] = [args.src, str(HERE)]
    work = Path(tempfile.mkdtemp(prefix="audet-contention-"))
    setup = prepare(work, args.batches, args.video_seconds)
    policies = [policy_env(p, Path(args.src)) for p in args.policies]
    print(f"{os.cpu_count()} CPUs; {args.batches} training batches; {args.video_seconds:g} s video; load {load():.2f}",
          flush=True)
    if "predict" in args.what:  # untimed: caches the ONNX export beside the checkpoint
        time_predict(policies[0][1], setup, work / "warm")
    raw: list[dict] = []
    for rep in range(args.repeats):
        for cond in args.conditions:
            procs = rivals(cond)
            try:
                for name, env in policies:
                    for what in args.what:
                        ld = load()
                        out = work / f"{what}_{name}_{cond}_{rep}"
                        s = time_train(env, setup, args.batches, out) if what == "train" else time_predict(env, setup, out)
                        raw.append({"what": what, "policy": name, "condition": cond, "repeat": rep, "seconds": s,
                                    "load": ld})
                        print(f"  {what:7s} {name:8s} {cond:7s} round {rep + 1}: {s:7.2f} s (load {ld:.2f})", flush=True)
            finally:
                stop(procs)
    for what in args.what:
        for name, _ in policies:
            sec = {c: statistics.median(r["seconds"] for r in raw if r["what"] == what and r["policy"] == name
                                        and r["condition"] == c) for c in args.conditions}
            lds = [r["load"] for r in raw if r["what"] == what and r["policy"] == name]
            base = sec.get("idle")
            print(f"\n{what}, policy {name} (median of {args.repeats}; load {min(lds):.1f}-{max(lds):.1f}):\n")
            print("| condition | seconds | x idle |")
            print("|---|---|---|")
            for c in args.conditions:
                ratio = f"{sec[c] / base:.2f}" if base else "-"
                print(f"| {c} | {sec[c]:.2f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
